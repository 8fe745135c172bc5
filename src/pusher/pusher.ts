import { ClosedError, InvalidArgumentError, asError } from '../errors.ts';
import type { Producer } from '../producer/producer.ts';
import { abortable } from '../lifecycle.ts';
import { checkChunk, chunkEnd, describeChunk, type Chunk } from './chunk.ts';
import { encodeChunkRecord } from './chunk-metadata.ts';
import { ProgressTracker, type SourceProgress } from './source-progress.ts';

/** A chunk that became durable and was acknowledged. */
export interface ChunkAck {
  chunk: Chunk;
  /** Sequence of the batch holding the chunk's entries. */
  sequence: number;
  /** Whether the chunk completed its source (its last chunk and everything before it acknowledged). */
  sourceDone: boolean;
}

/** Options shared by {@link SyncPusher} and {@link AsyncPusher}. */
export interface PusherOptions {
  /** Where chunks go: each chunk is one `produce()` call. The pusher does not close it. */
  producer: Producer;
  /**
   * The ingestion job the chunks belong to, kept with each chunk's entries
   * (with its source and byte range) so that a restart can tell from the
   * queue what became durable. 1-100 characters `[A-Za-z0-9._-]`.
   * @default "default"
   */
  job?: string;
  /** Called once for each chunk acknowledged, in the order the acks happen. Must not throw. */
  onAck?: (ack: ChunkAck) => void;
}

/** Options of {@link AsyncPusher}. */
export interface AsyncPusherOptions extends PusherOptions {
  /**
   * Bytes of entries pushed and not yet acknowledged before `push()` waits.
   * A single chunk larger than this is let through when nothing else is in
   * flight. @default 67108864 (64 MiB)
   */
  maxInFlightBytes?: number;
}

/** Defaults of the pushers' options. */
export const PUSHER_DEFAULTS = Object.freeze({
  job: 'default',
  maxInFlightBytes: 64 * 1024 * 1024,
});

/** Memory an entry costs besides its bytes, counted against `maxInFlightBytes`. */
const ENTRY_OVERHEAD_BYTES = 96;

interface Pushed {
  /** The chunk; its entries are let go once it settles (it may wait in `order` a while). */
  chunk: Chunk;
  bytes: number;
  state: 'flight' | 'durable' | 'acked' | 'failed';
  sequence?: number;
}

/**
 * Moves chunks of sources into a queue and keeps per-source progress: a
 * source is done only when every chunk of it is acknowledged, and a chunk is
 * acknowledged (by the pusher, through {@link ack}) once its entries are
 * durable. See {@link SyncPusher} and {@link AsyncPusher}.
 */
export abstract class Pusher {
  /** The job written with each chunk. */
  readonly job: string;
  protected readonly producer: Producer;
  protected readonly tracker = new ProgressTracker();
  private readonly onAck: ((ack: ChunkAck) => void) | undefined;
  /** Chunks in push order, until they and every chunk before them are acknowledged. */
  private readonly order: Pushed[] = [];
  private readonly byKey = new Map<string, Pushed>();
  private prefixSequence: number | undefined;
  protected inFlightBytes = 0;
  protected failure: Error | undefined;
  /** Whether a failed chunk stops the pusher (the asynchronous one: nobody awaits its chunks). */
  protected abstract readonly stopsOnFailure: boolean;
  protected closed = false;
  private closing: Promise<void> | undefined;
  private readonly settled: (() => void)[] = [];

  protected constructor(options: PusherOptions, role: string) {
    if (typeof options !== 'object' || options === null || !options.producer) {
      throw new InvalidArgumentError(`${role}: expected options with a producer`);
    }
    const job = options.job ?? PUSHER_DEFAULTS.job;
    if (typeof job !== 'string' || !/^[A-Za-z0-9._-]{1,100}$/.test(job)) {
      throw new InvalidArgumentError(
        `${role}: job must be 1-100 characters of [A-Za-z0-9._-], got ${JSON.stringify(job)}`,
      );
    }
    this.job = job;
    this.producer = options.producer;
    this.onAck = options.onAck;
  }

  /** Pushes a chunk; see the subclasses for when it resolves. */
  abstract push(chunk: Chunk, options?: { signal?: AbortSignal }): Promise<void>;

  /**
   * Acknowledges a durable chunk and returns whether its source is now done.
   * The pusher calls this itself as each chunk becomes durable (and reports
   * it through `onAck`); calling it again for the same chunk is an error.
   *
   * @throws {InvalidArgumentError} for a chunk already acknowledged, never
   * pushed, or not durable yet.
   */
  ack(chunk: Chunk): boolean {
    const p = this.byKey.get(keyOf(chunk));
    if (p && p.state === 'flight') {
      throw new InvalidArgumentError(
        `ack: ${describeChunk(chunk)} is not durable yet; the pusher acknowledges chunks itself once they are`,
      );
    }
    const done = this.tracker.acked(chunk);
    if (p) {
      p.state = 'acked';
      this.byKey.delete(keyOf(chunk));
      this.inFlightBytes -= p.bytes;
      const acked = p.chunk;
      p.chunk = withoutItems(acked);
      this.advancePrefix();
      this.onAck?.({ chunk: acked, sequence: p.sequence as number, sourceDone: done });
      this.wake();
    }
    return done;
  }

  /**
   * Moves `acknowledgedThroughSequence` past the acknowledged chunks at the
   * head of the push order. A failed chunk stops it: its append may have
   * landed (an outcome lost) at a sequence below later ones, so the
   * sequence of a later chunk does not bound it. It stops being in the way
   * once its bytes are acknowledged (pushed again): whether or not the
   * failed attempt landed, what it held is then reflected.
   */
  private advancePrefix(): void {
    for (;;) {
      const head = this.order[0];
      if (head === undefined) return;
      if (head.state === 'acked') {
        this.prefixSequence = head.sequence;
      } else if (head.state !== 'failed' || !this.tracker.covers(head.chunk)) {
        return;
      }
      this.order.shift();
    }
  }

  /** Every source's progress: bytes acknowledged, chunks in flight, done. */
  progress(): SourceProgress[] {
    return this.tracker.all();
  }

  /** One source's progress, if it is known. */
  sourceProgress(source: string): SourceProgress | undefined {
    return this.tracker.get(source);
  }

  /**
   * Starts a source from what an earlier run made durable (see
   * `IngestProgress`): its chunks must then start past those bytes.
   */
  resume(
    p: Pick<
      SourceProgress,
      'source' | 'path' | 'ackedOffset' | 'ackedBeyond' | 'done' | 'sizeBytes'
    >,
  ): void {
    this.tracker.resume(p);
  }

  /**
   * The sequence of the newest batch such that every chunk pushed up to it
   * is acknowledged: a chunk not yet acknowledged will land at this sequence
   * or later. Undefined before the first acknowledgement.
   */
  get acknowledgedThroughSequence(): number | undefined {
    return this.prefixSequence;
  }

  /**
   * Whether every chunk pushed so far is acknowledged: none in flight, and
   * none that failed whose bytes were not acknowledged since (pushed again).
   * A failed chunk counts as not acknowledged because its entries may have
   * landed anyway (a lost response); a job's last checkpoint keeps the hold
   * until then (see `IngestProgress.finish`).
   */
  get allAcknowledged(): boolean {
    return this.order.length === 0;
  }

  /** Bytes of entries pushed and not yet acknowledged. */
  get bytesInFlight(): number {
    return this.inFlightBytes;
  }

  /**
   * Waits until every chunk pushed so far is acknowledged.
   *
   * @throws the first failure of a chunk.
   */
  async flush(options: { signal?: AbortSignal } = {}): Promise<void> {
    while (this.byKey.size > 0 && !this.failure) {
      await abortable(this.nextSettle(), options.signal);
    }
    if (this.failure) throw this.failure;
  }

  /**
   * Waits for the chunks in flight (they become durable or fail) and stops
   * taking chunks. Idempotent; the producer stays open.
   *
   * @throws the first failure of a chunk.
   */
  close(): Promise<void> {
    this.closed = true;
    this.closing ??= (async () => {
      while (this.byKey.size > 0) await this.nextSettle();
      this.wake();
    })();
    return this.closing.then(() => {
      if (this.failure) throw this.failure;
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Checks a chunk and that the pusher may take it. */
  protected admit(method: string, chunk: Chunk): void {
    if (this.closed) throw new ClosedError('pusher');
    if (this.stopsOnFailure && this.failure) throw this.failure;
    checkChunk(method, chunk);
  }

  /**
   * Hands a chunk to the producer (one `produce()` call with the chunk's
   * record as metadata). Resolves once the producer has taken it, with the
   * promise of its acknowledgement (wrapped: a promise cannot resolve to one).
   */
  protected async send(
    chunk: Chunk,
    signal: AbortSignal | undefined,
  ): Promise<{ acked: Promise<void> }> {
    const bytes = chunkBytes(chunk);
    this.tracker.pushed(chunk);
    const pushed: Pushed = { chunk, bytes, state: 'flight' };
    this.byKey.set(keyOf(chunk), pushed);
    this.order.push(pushed);
    this.inFlightBytes += bytes;
    let handle;
    try {
      handle = await this.producer.produce(chunk.items, {
        metadata: encodeChunkRecord({
          job: this.job,
          source: chunk.source,
          ...(chunk.path !== undefined ? { path: chunk.path } : {}),
          offset: chunk.offset,
          end: chunkEnd(chunk),
          last: chunk.last,
        }),
        ...(signal ? { signal } : {}),
      });
    } catch (e) {
      // Not taken: the chunk may be pushed again.
      this.forget(pushed);
      throw e;
    }
    const acked = handle.durable.then(
      (r) => {
        pushed.sequence = r.sequence;
        pushed.state = 'durable';
        this.ack(chunk);
      },
      (e: unknown) => {
        pushed.state = 'failed';
        pushed.chunk = withoutItems(chunk);
        if (this.stopsOnFailure) this.failure ??= asError(e);
        this.byKey.delete(keyOf(chunk));
        this.inFlightBytes -= bytes;
        this.tracker.failed(chunk);
        this.wake();
        throw e;
      },
    );
    return { acked };
  }

  private forget(p: Pushed): void {
    this.byKey.delete(keyOf(p.chunk));
    const i = this.order.indexOf(p);
    if (i >= 0) this.order.splice(i, 1);
    this.inFlightBytes -= p.bytes;
    this.tracker.failed(p.chunk);
    this.wake();
  }

  /** Resolves at the next acknowledgement or failure. */
  protected nextSettle(): Promise<void> {
    return new Promise((r) => this.settled.push(r));
  }

  private wake(): void {
    for (const r of this.settled.splice(0)) r();
  }
}

/**
 * A pusher for snapshots: each `push()` resolves once its chunk is durable
 * and acknowledged (rejecting with the producer's error otherwise).
 *
 * @example
 * const pusher = new SyncPusher({ producer, job: 'nightly-export' });
 * await pusher.push({ source: 'export.ndjson', items, offset: 0, size: 4096, last: true });
 */
export class SyncPusher extends Pusher {
  protected readonly stopsOnFailure = false;
  constructor(options: PusherOptions) {
    super(options, 'SyncPusher');
  }

  /**
   * Pushes a chunk and waits until it is durable and acknowledged.
   *
   * @throws {InvalidArgumentError} for a malformed chunk, or one overlapping
   * bytes in flight or acknowledged.
   * @throws {ClosedError} after `close()`.
   */
  async push(chunk: Chunk, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.admit('push', chunk);
    const { acked } = await this.send(chunk, options.signal);
    await acked;
  }
}

/**
 * A pusher for continuous replication: `push()` resolves once the chunk is
 * taken, waiting first while `maxInFlightBytes` are pushed and not yet
 * acknowledged; chunks are acknowledged as they become durable, in any
 * order. The first chunk that fails stops the pusher: later pushes,
 * `flush()` and `close()` reject with its error.
 */
export class AsyncPusher extends Pusher {
  /** Bytes of entries in flight before `push()` waits. */
  readonly maxInFlightBytes: number;
  protected readonly stopsOnFailure = true;

  constructor(options: AsyncPusherOptions) {
    super(options, 'AsyncPusher');
    const max = options.maxInFlightBytes ?? PUSHER_DEFAULTS.maxInFlightBytes;
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new InvalidArgumentError(
        `AsyncPusher: maxInFlightBytes must be a positive integer, got ${String(max)}`,
      );
    }
    this.maxInFlightBytes = max;
  }

  /**
   * Pushes a chunk: waits while the bytes in flight would pass
   * `maxInFlightBytes`, then hands it over and resolves.
   *
   * @throws {InvalidArgumentError} for a malformed chunk, or one overlapping
   * bytes in flight or acknowledged.
   * @throws {ClosedError} after `close()`.
   * @throws the first failure of an earlier chunk.
   */
  async push(chunk: Chunk, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.admit('push', chunk);
    const bytes = chunkBytes(chunk);
    while (this.inFlightBytes > 0 && this.inFlightBytes + bytes > this.maxInFlightBytes) {
      await abortable(this.nextSettle(), options.signal);
      if (this.failure) throw this.failure;
      if (this.closed) throw new ClosedError('pusher');
    }
    const { acked } = await this.send(chunk, options.signal);
    // Failures reach the caller through the next push, flush() and close().
    acked.catch(() => undefined);
  }
}

/** The chunk without its entries, for what is kept after it settled. */
function withoutItems(chunk: Chunk): Chunk {
  return { ...chunk, items: [] };
}

function keyOf(chunk: Chunk): string {
  return `${chunk.source}\u0000${chunk.offset}`;
}

/** Bytes a chunk counts in flight: its entries plus their per-entry overhead. */
function chunkBytes(chunk: Chunk): number {
  let n = 0;
  for (const i of chunk.items) n += i.byteLength + ENTRY_OVERHEAD_BYTES;
  return n;
}

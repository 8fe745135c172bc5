import { randomUUID } from 'node:crypto';
import { systemClock, type Clock, type ClockTimer } from '../clock.ts';
import {
  asError,
  ClosedError,
  InvalidArgumentError,
  OutcomeUnknownError,
  TimeoutError,
} from '../errors.ts';
import { DEFAULT_MAX_BATCH_BYTES, encodeBatch, RECORD_OVERHEAD_BYTES } from '../format/batch.ts';
import type { Compression } from '../format/compression.ts';
import { crc32c } from '../format/crc32c.ts';
import { encodeTrailer } from '../format/trailer.ts';
import { UlidGenerator } from '../format/ulid.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { noopMetrics, type Metrics } from '../metrics.ts';
import { checkCallOptions, resolveOptions, type OptionSpecs } from '../options.ts';
import { INLINE_BYTES_PER_COMMIT, type AppendBatch, type LogQueue } from '../queue/log-queue.ts';
import type { ManifestQueue } from '../queue/manifest-queue.ts';
import { Queue, QUEUE_SELECTOR_SPECS, type QueueSelector } from '../queue/queue.ts';
import { abortable, closeWithin } from '../lifecycle.ts';
import { describeValue } from '../store/keys.ts';
import type { ObjectStore } from '../store/object-store.ts';

/** Options of {@link Producer}. Name the queue with `queue`, or with `store` and the paths. */
export interface ProducerOptions extends QueueSelector {
  /**
   * Milliseconds from the first unflushed entry to the flush. 0 is group
   * commit: flush as soon as the previous batch has been uploaded, so a lone
   * write costs about one round trip and batches grow under load.
   * @default 100
   */
  flushIntervalMs?: number;
  /**
   * Buffered bytes that start a flush at once. Bytes of a call are its entry
   * and metadata bytes plus 512 per call and 96 per entry (what the call and
   * entry objects cost in memory). @default 67108864 (64 MiB)
   */
  flushSizeBytes?: number;
  /** `produce()` calls held until durable before `produce()` waits for room. @default 100000 */
  maxBufferedInputs?: number;
  /**
   * Bytes (counted as for `flushSizeBytes`) held until durable before
   * `produce()` waits for room. A batch is sealed early once it holds a
   * `maxConcurrentUploads`-th of this (or of `maxBufferedInputs`), so several
   * uploads share the budget. @default 268435456 (256 MiB)
   */
  maxBufferedBytes?: number;
  /** Compression of batch objects. @default "none" */
  compression?: Compression;
  /** This producer's id, written in each manifest entry's trailer. @default a random UUID */
  instanceId?: string;
  /** Batch uploads in flight at once (manifest appends stay in order). @default 4 */
  maxConcurrentUploads?: number;
  /**
   * Largest batch, in bytes, counted as its record block (each entry as u32
   * length + bytes, before compression) plus 96 bytes per entry (what a
   * decoded entry's view costs): a batch is sealed before it would grow past
   * this, and a single `produce()` call larger than this is refused.
   * Readers refuse larger batches (see `ConsumerOptions.maxBatchBytes`), so
   * keep it at or below theirs. At most 1 GiB. @default 268435456 (256 MiB)
   */
  maxBatchBytes?: number;
  /**
   * Log layout: a batch object of at most this many bytes travels inside its
   * commit instead of as an object of its own, so a small durable append
   * costs one store write instead of two in a row; 0 turns it off. Its
   * location is then `{root}/log/{commit}#{index}`. @default 65536, or the
   * store's `hints.inlineMaxBytes` (the LMDB store: 4 MiB)
   */
  inlineMaxBytes?: number;
  /** Where metrics go. @default no metrics */
  metrics?: Metrics;
  /** Where lost races and failures are reported. @default silent */
  logger?: Logger;
  /** Time source and timers. @default the system clock */
  clock?: Clock;
}

/** The producer's settings once its options are resolved. */
type ProducerSettings = Required<
  Pick<
    ProducerOptions,
    | 'flushIntervalMs'
    | 'flushSizeBytes'
    | 'maxBufferedInputs'
    | 'maxBufferedBytes'
    | 'compression'
    | 'maxConcurrentUploads'
    | 'maxBatchBytes'
    | 'inlineMaxBytes'
  >
>;

/** Defaults of {@link ProducerOptions}. */
export const PRODUCER_DEFAULTS: Readonly<ProducerSettings> = Object.freeze({
  flushIntervalMs: 100,
  flushSizeBytes: 64 * 1024 * 1024,
  maxBufferedInputs: 100_000,
  maxBufferedBytes: 256 * 1024 * 1024,
  compression: 'none',
  maxConcurrentUploads: 4,
  maxBatchBytes: DEFAULT_MAX_BATCH_BYTES,
  inlineMaxBytes: 64 * 1024,
});

const PRODUCER_SPECS: OptionSpecs<ProducerOptions> = {
  ...QUEUE_SELECTOR_SPECS,
  flushIntervalMs: { kind: 'int', min: 0, max: 2_147_483_647 },
  flushSizeBytes: { kind: 'int', min: 1 },
  maxBufferedInputs: { kind: 'int', min: 1 },
  maxBufferedBytes: { kind: 'int', min: 1 },
  compression: { kind: 'enum', values: ['none', 'zstd'] },
  instanceId: {
    kind: 'string',
    pattern: /^[\x20-\x7e]{1,200}$/,
    expected: 'printable ASCII, 1-200 characters',
  },
  maxConcurrentUploads: { kind: 'int', min: 1 },
  maxBatchBytes: { kind: 'int', min: 1, max: 1024 ** 3 },
  inlineMaxBytes: { kind: 'int', min: 0, max: 16 * 1024 * 1024 },
  metrics: { kind: 'any' },
  logger: { kind: 'any' },
  clock: { kind: 'any' },
};

/**
 * Memory a `produce()` call costs besides its bytes (call record, entries
 * array, the caller's handle), as measured when each call had its own
 * promise: the calls of a batch now share one, so this errs on the safe side.
 */
const CALL_OVERHEAD_BYTES = 512;
/** Memory an entry costs besides its bytes (its Uint8Array object). */
const ENTRY_OVERHEAD_BYTES = 96;
const NO_METADATA = new Uint8Array(0);
/** Marks a promise's rejection as handled (one function for every call, not a closure each). */
const ignoreRejection = (): void => undefined;

/** Where a produce() call's entries landed; shared (and frozen) by every call of the batch. */
export interface DurableResult {
  /** Manifest sequence of the batch holding the entries. */
  readonly sequence: number;
  /** Key of the batch object (log, inline: `{root}/log/{commit}#{index}`). */
  readonly location: string;
}

/** What {@link Producer.produce} returns once the entries are buffered. */
export interface ProduceHandle {
  /**
   * Resolves once the entries' batch object and its manifest entry are both
   * stored; rejects with the cause otherwise (and with the error given to
   * {@link Producer.destroy}, or a {@link TimeoutError} from a `close()` that
   * ran out of time).
   */
  readonly durable: Promise<DurableResult>;
}

/** Options of one {@link Producer.produce} call. */
export interface ProduceOptions {
  /** Opaque bytes kept with the call's entries (one metadata item). */
  metadata?: Uint8Array;
  /**
   * Aborts the wait for buffer room; the call then rejects with the
   * signal's reason. Once the entries are buffered, it has no effect.
   */
  signal?: AbortSignal;
}

interface Call {
  entries: Uint8Array[];
  metadata: Uint8Array;
  /** Bytes the call counts against the budget (data plus overhead). */
  bytes: number;
  /** Bytes its entries add to a batch, as maxBatchBytes counts them (4 + length + 96 each). */
  blockBytes: number;
  /** Bytes of its entries and metadata. */
  dataBytes: number;
  ingestionTimeMs: number;
  /** The outcome of the batch the call joined, set when it joins one. */
  durable?: Settlement;
}

/** One promise and its settling functions, shared by every call of a batch. */
interface Settlement {
  promise: Promise<DurableResult>;
  resolve: (r: DurableResult) => void;
  reject: (e: unknown) => void;
}

function settlement(): Settlement {
  let resolve!: (r: DurableResult) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<DurableResult>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A caller may never look at `durable`; a failure still reaches flush() and close().
  promise.catch(ignoreRejection);
  return { promise, resolve, reject };
}

interface Batch {
  calls: Call[];
  /** What every call of the batch is told. */
  durable: Settlement;
  /** Entries in the batch (the calls let go of them once encoded). */
  entries: number;
  bytes: number;
  sealedAt: number;
  location: string;
  upload: Promise<void>;
  /** Set once the batch object is stored (or, inline, encoded): what its append carries. */
  uploaded?: AppendBatch;
  failed?: unknown;
  settled: boolean;
}

/** Appends uploaded batches to the queue, in one write, in the queue's layout. */
interface Appender {
  /** Whether small batches may travel inside the append (the log layout). */
  inline: boolean;
  /** Bytes up to which a batch travels inside the append now (default: `inlineMaxBytes`). */
  inlineMaxBytes?: () => number;
  append(
    batches: readonly AppendBatch[],
    signal: AbortSignal,
  ): Promise<{ sequence: number; location: string }[]>;
}

interface Waiter {
  call: Call;
  admit: () => void;
  reject: (e: unknown) => void;
}

/**
 * Batches entries into objects and appends them to the queue manifest.
 *
 * Entries keep the order of the `produce()` calls. A flush writes one object
 * `{dataPathPrefix}/{ULID}.batch` and appends one manifest entry with one
 * metadata item per contributing call. Several uploads run at once; appends
 * stay in order, and every batch uploaded when an append starts goes into that
 * one conditional manifest write.
 *
 * Storage failures are retried by the store (its retry policy); the
 * producer itself retries nothing, so a failed upload or append rejects the
 * `durable` of the calls in that batch.
 *
 * Lifecycle: {@link close} is graceful (everything buffered becomes durable)
 * and may be bounded with `timeoutMs`; {@link destroy} stops at once and
 * rejects everything pending. Neither leaves a timer or a request behind.
 *
 * @example
 * const producer = new Producer({ store: 'file:./queue', flushIntervalMs: 0 });
 * const handle = await producer.produce([new TextEncoder().encode('hello')]);
 * await handle.durable;
 * await producer.close();
 */
export class Producer {
  readonly instanceId: string;
  /** The queue written to. */
  readonly queue: Queue;
  private readonly ownsQueue: boolean;
  private readonly store: ObjectStore;
  private readonly manifest: ManifestQueue;
  private readonly options: ProducerSettings & { dataPathPrefix: string };
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly ulids = new UlidGenerator();
  /** Aborts every store call in flight: destroy(). */
  private readonly inFlight = new AbortController();
  private open: Call[] = [];
  private openBytes = 0;
  private openBlockBytes = 0;
  private timer: ClockTimer | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private timerDue = false;
  private readonly pipeline: Batch[] = [];
  private uploadsInFlight = 0;
  private appending = false;
  private bufferedInputs = 0;
  private bufferedBytes = 0;
  private readonly waiters: Waiter[] = [];
  private readonly idle: (() => void)[] = [];
  private closing: Promise<void> | undefined;
  private destroyed: Error | undefined;
  /**
   * Batches out of the pipeline, not yet settled: those in the append in
   * flight, and the failed uploads taken out with them.
   */
  private appendingBatches: Batch[] = [];
  /** How batches are appended, once the layout is known. */
  private appending$: Promise<Appender> | undefined;
  /** The log, when the queue has the log layout (its head hint is waited for at close). */
  private log: LogQueue | undefined;
  private failure: unknown;
  /** The outcome of the open batch, shared by its calls; made when the first call joins. */
  private openDurable: Settlement | undefined;

  /** @throws {InvalidArgumentError} for bad options, naming the option. */
  constructor(options: ProducerOptions) {
    const o = resolveOptions('Producer', PRODUCER_SPECS, PRODUCER_DEFAULTS, options);
    const { queue, owned } = Queue.select('Producer', o);
    this.queue = queue;
    this.ownsQueue = owned;
    this.store = queue.store;
    this.options = { ...(o as ProducerSettings), dataPathPrefix: queue.dataPathPrefix };
    // Unless asked for, the inline size is the store's suggestion (a local engine takes more).
    if (options.inlineMaxBytes === undefined && this.store.hints?.inlineMaxBytes !== undefined) {
      this.options.inlineMaxBytes = Math.min(this.store.hints.inlineMaxBytes, 16 * 1024 * 1024);
    }
    this.metrics = o.metrics ?? noopMetrics;
    this.logger = o.logger ?? silentLogger;
    this.clock = o.clock ?? systemClock;
    this.instanceId = o.instanceId ?? randomUUID();
    this.manifest = queue.manifestQueue({
      metrics: this.metrics,
      logger: this.logger,
      clock: this.clock,
    });
  }

  /**
   * Buffers one call's entries (kept together, in order, in one batch) with
   * optional metadata bytes. Resolves once they are buffered, waiting for
   * room while `maxBufferedInputs` or `maxBufferedBytes` would be exceeded;
   * the handle's `durable` tells when they are stored. Do not modify the
   * entries' bytes until `durable` settles.
   *
   * @param options the call's metadata bytes (or, as before, the metadata
   * itself) and a signal that aborts the wait for room
   * @throws {InvalidArgumentError} for entries that are not byte arrays, or a
   * call that can never fit (`maxBufferedBytes`, `maxBatchBytes`).
   * @throws {ClosedError} after `close()` or `destroy()`.
   */
  async produce(
    entries: readonly Uint8Array[],
    options?: Uint8Array | ProduceOptions,
  ): Promise<ProduceHandle> {
    if (this.closing || this.destroyed) throw new ClosedError('producer');
    if (!(options instanceof Uint8Array))
      checkCallOptions('produce', options, ['metadata', 'signal']);
    const { metadata, signal } =
      options instanceof Uint8Array ? { metadata: options, signal: undefined } : (options ?? {});
    signal?.throwIfAborted();
    if (!Array.isArray(entries))
      throw new InvalidArgumentError(
        `produce() expects an array of Uint8Array entries, got ${describeValue(entries)}`,
      );
    if (metadata !== undefined && !(metadata instanceof Uint8Array)) {
      throw new InvalidArgumentError(
        `produce(): metadata must be a Uint8Array, got ${describeValue(metadata)}`,
      );
    }
    // Bytes of the call in memory: its entries and metadata, plus what the call itself
    // costs (objects, promises), so the byte budget bounds memory for small entries too.
    let bytes = CALL_OVERHEAD_BYTES + (metadata?.byteLength ?? 0);
    let dataBytes = metadata?.byteLength ?? 0;
    let blockBytes = 0;
    for (let i = 0; i < entries.length; i++) {
      const e: unknown = entries[i];
      if (!(e instanceof Uint8Array))
        throw new InvalidArgumentError(
          `produce(): entry ${i} must be a Uint8Array, got ${describeValue(e)}`,
        );
      bytes += ENTRY_OVERHEAD_BYTES + e.byteLength;
      dataBytes += e.byteLength;
      blockBytes += 4 + e.byteLength + RECORD_OVERHEAD_BYTES;
    }
    if (blockBytes > this.options.maxBatchBytes) {
      throw new InvalidArgumentError(
        `produce(): this call's entries count ${blockBytes} bytes of a batch (4 + length + ${RECORD_OVERHEAD_BYTES} each) but maxBatchBytes is ${this.options.maxBatchBytes}; split the call (a call's entries always go into one batch)`,
      );
    }
    if (bytes > this.options.maxBufferedBytes) {
      throw new InvalidArgumentError(
        `produce(): this call needs ${bytes} bytes of buffer but maxBufferedBytes is ${this.options.maxBufferedBytes}; it can never fit`,
      );
    }
    const call: Call = {
      // A copy: the caller may reuse its array. (Array.isArray() above widened its type to any[].)
      entries:
        entries.length === 1
          ? [entries[0] as Uint8Array]
          : (entries as readonly Uint8Array[]).slice(),
      metadata: metadata ?? NO_METADATA,
      bytes,
      blockBytes,
      dataBytes,
      ingestionTimeMs: 0,
    };
    if (this.waiters.length > 0 || !this.hasRoom(bytes)) {
      // Admission enqueues the call itself, in arrival order: a call that comes
      // later and finds room must not overtake one admitted a moment before.
      await this.waitForRoom(call, signal);
    } else {
      this.bufferedInputs++;
      this.bufferedBytes += bytes;
      this.enqueue(call);
    }
    // The batch the call joined settles it, with every other call of that batch.
    return { durable: (call.durable as Settlement).promise };
  }

  /** Adds an admitted call to the open batch, in order. */
  private enqueue(call: Call): void {
    // A batch never grows past maxBatchBytes: seal the open one first, even
    // beyond the upload concurrency (memory is still bounded by the budget).
    if (this.openBlockBytes + call.blockBytes > this.options.maxBatchBytes) this.seal(true);
    call.ingestionTimeMs = this.clock.now();
    call.durable = this.openDurable ??= settlement();
    this.open.push(call);
    this.openBytes += call.bytes;
    this.openBlockBytes += call.blockBytes;
    this.schedule();
  }

  /**
   * Flushes what is buffered now and resolves once everything produced
   * before the call is durable; rejects with the first failure among it.
   * The signal aborts the wait, not the flush.
   */
  async flush(options: { signal?: AbortSignal } = {}): Promise<void> {
    checkCallOptions('flush', options, ['signal']);
    if (this.destroyed) throw new ClosedError('producer');
    this.seal(true);
    // The batches being appended count too: a call made just before may be in one of them.
    const batches = [...this.appendingBatches, ...this.pipeline];
    const done = (async () => {
      await Promise.all(batches.map((b) => b.upload));
      await this.drained();
    })();
    await abortable(done, options.signal);
    const failed = batches.find((b) => b.failed !== undefined);
    if (failed) throw asError(failed.failed);
    // Read again: destroy() may have run while this call waited.
    const destroyed = this.destroyedBy();
    if (destroyed) throw destroyed;
  }

  private destroyedBy(): Error | undefined {
    return this.destroyed;
  }

  /** Whether a call is waiting, open, uploading or being appended. */
  private busy(): boolean {
    return (
      this.waiters.length > 0 || this.open.length > 0 || this.pipeline.length > 0 || this.appending
    );
  }

  /**
   * Flushes everything and resolves once all is durable; rejects with the
   * first failure. Idempotent. With `timeoutMs`, a close that has not
   * finished by then destroys the producer with a {@link TimeoutError}
   * (every `durable` still pending rejects with it) and rejects with it.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    checkCallOptions('close', options, ['timeoutMs']);
    this.closing ??= (async () => {
      // An append in flight counts: the pipeline is empty while its batches are appended.
      while (this.busy()) {
        if (this.destroyed) break;
        await new Promise<void>((r) => {
          this.idle.push(r);
          this.seal(true);
          if (!this.busy()) r();
        });
      }
      if (this.destroyed) throw this.destroyed;
      this.clearTimers();
      await this.log?.settle();
      if (this.ownsQueue) await this.queue.close();
      if (this.failure !== undefined) throw asError(this.failure);
    })();
    this.closing.catch(() => undefined);
    const { timeoutMs } = options;
    return closeWithin(
      this.closing,
      timeoutMs,
      this.clock,
      () =>
        new TimeoutError(
          `producer: close() did not finish in ${timeoutMs} ms; ${this.bufferedInputs} produce() calls were not made durable`,
        ),
      (e) => this.destroy(e),
    );
  }

  /**
   * Stops at once: every `produce()` waiting for room and every `durable`
   * not yet settled rejects with `error` (a {@link ClosedError} by default),
   * requests in flight are aborted, timers cleared, and a store the producer
   * opened is closed. Entries not yet durable are not stored (a batch object
   * already uploaded becomes an orphan for the collector). Idempotent.
   */
  async destroy(error?: Error): Promise<void> {
    if (this.destroyed) return;
    const reason = error ?? new ClosedError('producer (destroyed)');
    this.destroyed = reason;
    this.clearTimers();
    this.inFlight.abort(reason);
    // A call still waiting for room has no `durable` yet: its produce() rejects.
    for (const w of this.waiters.splice(0)) w.reject(reason);
    this.open.splice(0);
    this.openDurable?.reject(reason);
    this.openDurable = undefined;
    for (const batch of this.pipeline) {
      batch.failed ??= reason;
      batch.durable.reject(reason);
    }
    // An append in flight may land or not: say so, rather than claim either.
    for (const batch of this.appendingBatches) {
      if (batch.uploaded === undefined) {
        // Its upload failed: it left the pipeline with the appended ones but is not in the append.
        batch.failed ??= reason;
        batch.durable.reject(reason);
        continue;
      }
      const unknown = new OutcomeUnknownError(
        batch.location,
        `producer destroyed while the append of ${batch.location} was in flight: it may have landed (then it is delivered) or not`,
        reason,
      );
      batch.failed ??= unknown;
      batch.durable.reject(unknown);
    }
    this.closing ??= Promise.reject(reason);
    this.closing.catch(() => undefined);
    // Wake a graceful close waiting on the pipeline: it sees `destroyed` and ends.
    for (const r of this.idle.splice(0)) r();
    if (this.ownsQueue) await this.queue.close().catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private clearTimers(): void {
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    if (this.immediate !== undefined) clearImmediate(this.immediate);
    this.immediate = undefined;
  }

  private hasRoom(bytes: number): boolean {
    return (
      this.bufferedInputs + 1 <= this.options.maxBufferedInputs &&
      this.bufferedBytes + bytes <= this.options.maxBufferedBytes
    );
  }

  private async waitForRoom(call: Call, signal: AbortSignal | undefined): Promise<void> {
    // admitWaiters() reserves our room and enqueues the call before it lets us go.
    let waiter!: Waiter;
    const admitted = new Promise<void>((admit, reject) => {
      waiter = { call, admit, reject };
      this.waiters.push(waiter);
    });
    const onAbort = (): void => {
      const i = this.waiters.indexOf(waiter);
      if (i >= 0) {
        this.waiters.splice(i, 1);
        waiter.reject(signal?.reason);
        // Someone behind us may fit now.
        this.admitWaiters();
      }
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    // The buffer is full: flush now rather than wait for the timer.
    this.seal(false);
    try {
      await admitted;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  private admitWaiters(): void {
    while (this.waiters.length > 0 && this.hasRoom((this.waiters[0] as Waiter).call.bytes)) {
      const w = this.waiters.shift() as Waiter;
      this.bufferedInputs++;
      this.bufferedBytes += w.call.bytes;
      this.enqueue(w.call);
      w.admit();
    }
  }

  /**
   * Whether the open batch holds its share of the buffer budget (a
   * `maxConcurrentUploads`-th of the inputs or bytes): sealing it then keeps
   * several batches in flight instead of one batch that fills the whole budget.
   */
  private fillsItsShare(): boolean {
    const shares = this.options.maxConcurrentUploads;
    return (
      this.open.length * shares >= this.options.maxBufferedInputs ||
      this.openBytes * shares >= this.options.maxBufferedBytes
    );
  }

  private schedule(): void {
    if (this.openBytes >= this.options.flushSizeBytes || this.fillsItsShare()) {
      this.seal(false);
      return;
    }
    if (this.options.flushIntervalMs === 0) {
      // Group commit: seal on the next turn, so calls made together share the batch.
      if (this.uploadsInFlight === 0 && this.immediate === undefined) {
        this.immediate = setImmediate(() => {
          this.immediate = undefined;
          this.seal(false);
        });
      }
      return;
    }
    if (this.timer === undefined && !this.timerDue) {
      // Kept alive (ref): buffered entries wait for this flush, and someone may await them.
      this.timer = this.clock.setTimeout(
        () => {
          this.timer = undefined;
          this.timerDue = true;
          this.seal(false);
        },
        this.options.flushIntervalMs,
        { ref: true },
      );
    }
  }

  /** Seals the open batch and starts its upload, if allowed now (or `force`d). */
  private seal(force: boolean): void {
    if (this.destroyed) return;
    if (this.open.length === 0) {
      this.timerDue = false;
      this.notifyIdle();
      return;
    }
    const groupCommit = this.options.flushIntervalMs === 0;
    const due =
      force ||
      this.timerDue ||
      groupCommit ||
      this.openBytes >= this.options.flushSizeBytes ||
      this.waiters.length > 0 ||
      this.fillsItsShare();
    if (!due) return;
    if (!force && this.uploadsInFlight >= (groupCommit ? 1 : this.options.maxConcurrentUploads))
      return;
    this.clearTimers();
    this.timerDue = false;
    const calls = this.open;
    const bytes = this.openBytes;
    const durable = this.openDurable ?? settlement();
    this.openDurable = undefined;
    this.open = [];
    this.openBytes = 0;
    this.openBlockBytes = 0;
    const location = `${this.options.dataPathPrefix}/${this.ulids.next(this.clock.now())}.batch`;
    const batch: Batch = {
      calls,
      durable,
      entries: 0,
      bytes,
      sealedAt: performance.now(),
      location,
      upload: Promise.resolve(),
      settled: false,
    };
    this.uploadsInFlight++;
    batch.upload = this.upload(batch).finally(() => {
      this.uploadsInFlight--;
      batch.settled = true;
      void this.pump();
      // The next batch may start now: group commit, or one that waited for an upload slot.
      if (this.open.length > 0) this.seal(false);
    });
    this.pipeline.push(batch);
  }

  /**
   * How this producer appends, found once: the queue's layout decides. For
   * v1, the data prefix must belong to the manifest (its marker, claimed on
   * first use); for the log, the queue is created if it is new. A failure is
   * not kept: the next batch asks again (a transient failure heals; a
   * mismatch repeats).
   */
  private appender(): Promise<Appender> {
    this.appending$ ??= (async (): Promise<Appender> => {
      const signal = this.inFlight.signal;
      const layout = await this.queue.layout({ signal });
      if (layout === 'v1') {
        await this.queue.checkOwnership({ claim: true, signal });
        return {
          inline: false,
          append: async (batches, s) => {
            const entries = batches.map((b) => ({
              location: b.location as string,
              metadata: b.metadata,
              extension: b.extension,
            }));
            const sequences = await this.manifest.append(entries, s);
            return sequences.map((sequence, i) => ({
              sequence,
              location: (entries[i] as { location: string }).location,
            }));
          },
        };
      }
      const log = this.queue.logQueue({
        metrics: this.metrics,
        logger: this.logger,
        clock: this.clock,
        writer: this.instanceId,
      });
      await this.queue.ensureLog(log, signal);
      this.log = log;
      return {
        inline: this.options.inlineMaxBytes > 0,
        // Reserving on a shared log, bigger batches travel in their slot (one write).
        inlineMaxBytes: () => Math.max(this.options.inlineMaxBytes, log.slotInlineMaxBytes()),
        append: (batches, s) => log.append(batches, s),
      };
    })();
    this.appending$.catch(() => (this.appending$ = undefined));
    return this.appending$;
  }

  private async upload(batch: Batch): Promise<void> {
    try {
      const records: Uint8Array[] = [];
      const metadata = [];
      for (const call of batch.calls) {
        metadata.push({
          startIndex: records.length,
          ingestionTimeMs: call.ingestionTimeMs,
          payload: call.metadata,
        });
        for (const e of call.entries) records.push(e);
      }
      const body = await encodeBatch(records, this.options.compression, {
        maxBatchBytes: this.options.maxBatchBytes,
      });
      // The body holds the bytes now; let go of the entries so a stalled upload keeps one copy.
      batch.entries = records.length;
      records.length = 0;
      for (const call of batch.calls) call.entries = [];
      const appender = await this.appender();
      // A small batch travels inside its commit (log layout): one write, not two in a row.
      const inline =
        appender.inline &&
        body.byteLength <= (appender.inlineMaxBytes?.() ?? this.options.inlineMaxBytes);
      if (!inline) {
        // Create-only under a unique key. The store retries and settles a lost
        // response by reading back; what it still cannot settle fails this batch.
        await this.store.put(batch.location, body, {
          mode: 'create',
          signal: this.inFlight.signal,
        });
        this.metrics.increment('buffer.bytes_written', body.byteLength, { role: 'producer' });
      }
      const extension = encodeTrailer({
        batchSizeBytes: body.byteLength,
        crc32c: crc32c(body),
        instanceId: this.instanceId,
      });
      batch.uploaded = {
        metadata,
        extension,
        sizeBytes: body.byteLength,
        records: batch.entries,
        ...(inline ? { inline: body } : { location: batch.location }),
      };
    } catch (e) {
      batch.failed = e;
    }
  }

  /** Appends uploaded batches in order, all that are ready in one manifest write. */
  private async pump(): Promise<void> {
    if (this.appending) return;
    this.appending = true;
    try {
      while (this.pipeline.length > 0 && (this.pipeline[0] as Batch).settled) {
        if (this.destroyed) {
          this.pipeline.length = 0;
          break;
        }
        const ready: Batch[] = [];
        // Inline batches travel in the commit: a commit carries at most a bounded
        // amount of them, so readers never fetch huge commits (the rest go next).
        let inlineBytes = 0;
        while (this.pipeline.length > 0 && (this.pipeline[0] as Batch).settled) {
          const size = (this.pipeline[0] as Batch).uploaded?.inline?.byteLength ?? 0;
          if (ready.length > 0 && inlineBytes + size > INLINE_BYTES_PER_COMMIT) break;
          inlineBytes += size;
          ready.push(this.pipeline.shift() as Batch);
        }
        const ok = ready.filter((b) => b.uploaded !== undefined);
        // All of them, the failed uploads too: destroy() must settle every one of them.
        this.appendingBatches = ready;
        if (ok.length > 0) {
          try {
            const appender = await this.appender();
            const results = await appender.append(
              ok.map((b) => b.uploaded as AppendBatch),
              this.inFlight.signal,
            );
            ok.forEach((b, i) => {
              const r = results[i] as { sequence: number; location: string };
              this.succeed(b, r.sequence, r.location);
            });
          } catch (e) {
            for (const b of ok) b.failed = e;
          }
        }
        this.appendingBatches = [];
        for (const b of ready) {
          if (b.failed !== undefined) this.fail(b, b.failed);
          this.bufferedInputs -= b.calls.length;
          this.bufferedBytes -= b.bytes;
        }
        this.admitWaiters();
      }
    } finally {
      this.appending = false;
      this.notifyIdle();
    }
  }

  private succeed(batch: Batch, sequence: number, location: string): void {
    // Every call of the batch has the same answer: one frozen object for all of them.
    batch.durable.resolve(Object.freeze({ sequence, location }));
    this.metrics.increment('buffer.batches_flushed');
    this.metrics.increment('buffer.entries_flushed', batch.entries);
    // Entry bytes, as the reference counts them (the budget's per-call overhead is not data).
    let dataBytes = 0;
    for (const call of batch.calls) dataBytes += call.dataBytes;
    this.metrics.increment('buffer.bytes_flushed', dataBytes);
    this.metrics.observe(
      'buffer.flush_duration_seconds',
      (performance.now() - batch.sealedAt) / 1000,
    );
  }

  private fail(batch: Batch, error: unknown): void {
    if (this.destroyed) return;
    this.failure ??= error;
    this.logger.warn(
      { queue: this.queue.description, location: batch.location, error: String(error) },
      'producer: a batch did not become durable',
    );
    batch.durable.reject(error);
  }

  private drained(): Promise<void> {
    if ((this.pipeline.length === 0 && !this.appending) || this.destroyed) return Promise.resolve();
    return new Promise<void>((r) => this.idle.push(r)).then(() => this.drained());
  }

  private notifyIdle(): void {
    if (this.pipeline.length > 0 || this.appending) return;
    const waiting = this.idle.splice(0);
    for (const r of waiting) r();
  }
}

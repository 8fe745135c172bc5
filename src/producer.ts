import { randomUUID } from 'node:crypto';
import { systemClock, type Clock } from './clock.ts';
import {
  asError,
  ClosedError,
  InvalidArgumentError,
  NotFoundError,
  OutcomeUnknownError,
  PreconditionFailedError,
  StorageError,
} from './errors.ts';
import { backoffMs, delay } from './store/retry.ts';
import { DEFAULT_MAX_BATCH_BYTES, encodeBatch } from './format/batch.ts';
import type { Compression } from './format/compression.ts';
import { crc32c } from './format/crc32c.ts';
import { encodeTrailer } from './format/trailer.ts';
import { UlidGenerator } from './format/ulid.ts';
import { noopMetrics, type Metrics } from './metrics.ts';
import { ManifestQueue, type NewEntry } from './queue/manifest-queue.ts';
import type { ObjectStore } from './store/object-store.ts';
import { resolveStore } from './store/open-store.ts';
import { describeValue } from './store/keys.ts';

/** Options of {@link Producer}. */
export interface ProducerOptions {
  /** The store, as a URL or an {@link ObjectStore}. */
  store: string | ObjectStore;
  /** Folder of the batch objects. @default "ingest" */
  dataPathPrefix?: string;
  /** Key of the queue manifest. @default "ingest/manifest" */
  manifestPath?: string;
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
  /** `produce()` calls held until durable before `produce()` waits for room. @default 10000 */
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
   * Largest record block of one batch (its entries as u32 length + bytes,
   * before compression), in bytes: a batch is sealed before it would grow
   * past this, and a single `produce()` call larger than this is refused.
   * Readers refuse larger batches (see {@link ConsumerOptions.maxBatchBytes}),
   * so keep it at or below theirs. At most 1 GiB. @default 268435456 (256 MiB)
   */
  maxBatchBytes?: number;
  /** Where metrics go. @default no metrics */
  metrics?: Metrics;
  /** Time source. @default the system clock */
  clock?: Clock;
}

/** Defaults of {@link ProducerOptions}. */
export const PRODUCER_DEFAULTS = Object.freeze({
  dataPathPrefix: 'ingest',
  manifestPath: 'ingest/manifest',
  flushIntervalMs: 100,
  flushSizeBytes: 64 * 1024 * 1024,
  maxBufferedInputs: 10_000,
  maxBufferedBytes: 256 * 1024 * 1024,
  compression: 'none',
  maxConcurrentUploads: 4,
  maxBatchBytes: DEFAULT_MAX_BATCH_BYTES,
});

/** Memory a `produce()` call costs besides its bytes (call record, promises, closures), as measured. */
const CALL_OVERHEAD_BYTES = 512;
/** Memory an entry costs besides its bytes (its Uint8Array object). */
const ENTRY_OVERHEAD_BYTES = 96;
const NO_METADATA = new Uint8Array(0);

/** Where a produce() call's entries landed. */
export interface DurableResult {
  /** Manifest sequence of the batch holding the entries. */
  sequence: number;
  /** Key of the batch object. */
  location: string;
}

/** What {@link Producer.produce} returns once the entries are buffered. */
export interface ProduceHandle {
  /**
   * Resolves once the entries' batch object and its manifest entry are both
   * stored; rejects with the cause otherwise.
   */
  readonly durable: Promise<DurableResult>;
}

interface Call {
  entries: Uint8Array[];
  metadata: Uint8Array;
  /** Bytes the call counts against the budget (data plus overhead). */
  bytes: number;
  /** Bytes its entries add to a batch's record block (4 + length each). */
  blockBytes: number;
  /** Bytes of its entries and metadata. */
  dataBytes: number;
  ingestionTimeMs: number;
  resolve: (r: DurableResult) => void;
  reject: (e: unknown) => void;
}

interface Batch {
  calls: Call[];
  /** Entries in the batch (the calls let go of them once encoded). */
  entries: number;
  bytes: number;
  sealedAt: number;
  location: string;
  upload: Promise<void>;
  uploaded?: { entry: NewEntry; objectBytes: number };
  failed?: unknown;
  settled: boolean;
}

interface Waiter {
  bytes: number;
  admit: () => void;
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
 * @example
 * const producer = new Producer({ store: 'file:./queue', flushIntervalMs: 0 });
 * const handle = await producer.produce([new TextEncoder().encode('hello')]);
 * await handle.durable;
 * await producer.close();
 */
export class Producer {
  readonly instanceId: string;
  private readonly store: ObjectStore;
  private readonly ownsStore: boolean;
  private readonly queue: ManifestQueue;
  private readonly options: Required<
    Omit<ProducerOptions, 'store' | 'instanceId' | 'metrics' | 'clock'>
  >;
  private readonly metrics: Metrics;
  private readonly clock: Clock;
  private readonly ulids = new UlidGenerator();
  private open: Call[] = [];
  private openBytes = 0;
  private openBlockBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private timerDue = false;
  private readonly pipeline: Batch[] = [];
  private uploadsInFlight = 0;
  private appending = false;
  private bufferedInputs = 0;
  private bufferedBytes = 0;
  private readonly waiters: Waiter[] = [];
  private readonly idle: (() => void)[] = [];
  private closing: Promise<void> | undefined;
  private failure: unknown;

  constructor(options: ProducerOptions) {
    const o = { ...PRODUCER_DEFAULTS, ...stripUndefined(options) };
    positiveInt(o.flushIntervalMs, 'flushIntervalMs', true);
    positiveInt(o.flushSizeBytes, 'flushSizeBytes');
    positiveInt(o.maxBufferedInputs, 'maxBufferedInputs');
    positiveInt(o.maxBufferedBytes, 'maxBufferedBytes');
    positiveInt(o.maxConcurrentUploads, 'maxConcurrentUploads');
    positiveInt(o.maxBatchBytes, 'maxBatchBytes');
    if (o.maxBatchBytes > 1024 ** 3) {
      throw new InvalidArgumentError(
        `maxBatchBytes must be at most 1073741824 (1 GiB), got ${o.maxBatchBytes}`,
      );
    }
    if (o.compression !== 'none' && o.compression !== 'zstd') {
      throw new InvalidArgumentError(
        `compression must be "none" or "zstd", got ${describeValue(o.compression)}`,
      );
    }
    if (
      typeof o.dataPathPrefix !== 'string' ||
      o.dataPathPrefix === '' ||
      o.dataPathPrefix.endsWith('/')
    ) {
      throw new InvalidArgumentError(
        `dataPathPrefix must be a non-empty key prefix without a trailing "/", got ${describeValue(o.dataPathPrefix)}`,
      );
    }
    this.options = o;
    this.store = resolveStore(options.store);
    this.ownsStore = typeof options.store === 'string';
    this.metrics = options.metrics ?? noopMetrics;
    this.clock = options.clock ?? systemClock;
    this.instanceId = options.instanceId ?? randomUUID();
    this.queue = new ManifestQueue({
      store: this.store,
      manifestPath: o.manifestPath,
      metrics: this.metrics,
    });
  }

  /**
   * Buffers one call's entries (kept together, in order) with optional
   * metadata bytes. Resolves once they are buffered, waiting for room while
   * `maxBufferedInputs` or `maxBufferedBytes` would be exceeded; the handle's
   * `durable` tells when they are stored. Do not modify the entries' bytes
   * until `durable` settles.
   *
   * @throws {InvalidArgumentError} for entries that are not byte arrays, or a
   * call larger than `maxBufferedBytes` (it could never fit).
   * @throws {ClosedError} after `close()`.
   */
  async produce(entries: readonly Uint8Array[], metadata?: Uint8Array): Promise<ProduceHandle> {
    if (this.closing) throw new ClosedError('producer');
    if (!Array.isArray(entries))
      throw new InvalidArgumentError(
        `produce() expects an array of Uint8Array entries, got ${describeValue(entries)}`,
      );
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
      blockBytes += 4 + e.byteLength;
    }
    if (metadata !== undefined && !(metadata instanceof Uint8Array)) {
      throw new InvalidArgumentError(
        `produce(): metadata must be a Uint8Array, got ${describeValue(metadata)}`,
      );
    }
    if (blockBytes > this.options.maxBatchBytes) {
      throw new InvalidArgumentError(
        `produce(): this call's entries need a record block of ${blockBytes} bytes but maxBatchBytes is ${this.options.maxBatchBytes}; split the call (a call's entries always go into one batch)`,
      );
    }
    if (bytes > this.options.maxBufferedBytes) {
      throw new InvalidArgumentError(
        `produce(): this call needs ${bytes} bytes of buffer but maxBufferedBytes is ${this.options.maxBufferedBytes}; it can never fit`,
      );
    }
    if (this.waiters.length > 0 || !this.hasRoom(bytes)) {
      // admitWaiters() reserves our room before it lets us in, in arrival order.
      const admitted = new Promise<void>((admit) => this.waiters.push({ bytes, admit }));
      // The buffer is full: flush now rather than wait for the timer.
      this.seal(false);
      await admitted;
    } else {
      this.bufferedInputs++;
      this.bufferedBytes += bytes;
    }
    let resolve!: (r: DurableResult) => void;
    let reject!: (e: unknown) => void;
    const durable = new Promise<DurableResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // The caller may never look at `durable`; a failure still reaches flush() and close().
    durable.catch(() => undefined);
    // A batch never grows past maxBatchBytes: seal the open one first, even
    // beyond the upload concurrency (memory is still bounded by the budget).
    if (this.openBlockBytes + blockBytes > this.options.maxBatchBytes) this.seal(true);
    this.open.push({
      entries: Array.from(entries as readonly Uint8Array[]),
      metadata: metadata ?? NO_METADATA,
      bytes,
      blockBytes,
      dataBytes,
      ingestionTimeMs: this.clock.now(),
      resolve,
      reject,
    });
    this.openBytes += bytes;
    this.openBlockBytes += blockBytes;
    this.schedule();
    return { durable };
  }

  /**
   * Flushes what is buffered now and resolves once everything produced
   * before the call is durable; rejects with the first failure among it.
   */
  async flush(): Promise<void> {
    this.seal(true);
    const batches = [...this.pipeline];
    await Promise.all(batches.map((b) => b.upload));
    await this.drained();
    const failed = batches.find((b) => b.failed !== undefined);
    if (failed) throw asError(failed.failed);
  }

  /** Flushes everything and resolves once all is durable. Idempotent; rejects with the first failure. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      while (this.waiters.length > 0 || this.open.length > 0 || this.pipeline.length > 0) {
        await new Promise<void>((r) => {
          this.idle.push(r);
          this.seal(true);
          if (this.waiters.length === 0 && this.open.length === 0 && this.pipeline.length === 0)
            r();
        });
      }
      clearTimeout(this.timer);
      if (this.ownsStore) await this.store.close();
      if (this.failure !== undefined) throw asError(this.failure);
    })();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private hasRoom(bytes: number): boolean {
    return (
      this.bufferedInputs + 1 <= this.options.maxBufferedInputs &&
      this.bufferedBytes + bytes <= this.options.maxBufferedBytes
    );
  }

  private admitWaiters(): void {
    while (this.waiters.length > 0 && this.hasRoom((this.waiters[0] as Waiter).bytes)) {
      const w = this.waiters.shift() as Waiter;
      this.bufferedInputs++;
      this.bufferedBytes += w.bytes;
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
      if (this.uploadsInFlight === 0 && this.timer === undefined) {
        this.timer = setImmediate(() => {
          this.timer = undefined;
          this.seal(false);
        }) as unknown as NodeJS.Timeout;
      }
      return;
    }
    if (this.timer === undefined && !this.timerDue) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.timerDue = true;
        this.seal(false);
      }, this.options.flushIntervalMs);
      // Not unref'd: buffered entries are waiting for this flush, and someone may await them.
    }
  }

  /** Seals the open batch and starts its upload, if allowed now (or `force`d). */
  private seal(force: boolean): void {
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
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      clearImmediate(this.timer as unknown as NodeJS.Immediate);
      this.timer = undefined;
    }
    this.timerDue = false;
    const calls = this.open;
    const bytes = this.openBytes;
    this.open = [];
    this.openBytes = 0;
    this.openBlockBytes = 0;
    const location = `${this.options.dataPathPrefix}/${this.ulids.next(this.clock.now())}.batch`;
    const batch: Batch = {
      calls,
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
      await this.putBatch(batch.location, body);
      const extension = encodeTrailer({
        batchSizeBytes: body.byteLength,
        crc32c: crc32c(body),
        instanceId: this.instanceId,
      });
      batch.uploaded = {
        entry: { location: batch.location, metadata, extension },
        objectBytes: body.byteLength,
      };
      this.metrics.increment('buffer.bytes_written', body.byteLength, { role: 'producer' });
    } catch (e) {
      batch.failed = e;
    }
  }

  /**
   * Writes a batch object create-only under its unique key. An unknown
   * outcome, or a conflict after one, is settled by reading the key back; no
   * one else writes this key. Transient failures are retried.
   */
  private async putBatch(location: string, body: Uint8Array): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.store.put(location, body, { mode: 'create' });
        return;
      } catch (e) {
        const settle =
          e instanceof OutcomeUnknownError || (e instanceof PreconditionFailedError && attempt > 1);
        if (settle) {
          let stored: { body: Uint8Array } | undefined;
          try {
            stored = await this.store.get(location);
          } catch (g) {
            // Still unknown after a failed read: the next attempt settles it (a create
            // that finds our object is a conflict, read back again).
            if (!(g instanceof NotFoundError) && !(g instanceof StorageError && g.retriable))
              throw g;
            if (!(g instanceof NotFoundError) && attempt >= 5) throw e;
          }
          if (stored && Buffer.from(stored.body).equals(body)) return;
          if (stored) throw e;
        } else if (!(e instanceof StorageError && e.retriable) || attempt >= 5) {
          throw e;
        }
        if (attempt >= 5) throw e;
        await delay(backoffMs(attempt, { maxAttempts: 5, baseDelayMs: 20, maxDelayMs: 1000 }));
      }
    }
  }

  /** Appends uploaded batches in order, all that are ready in one manifest write. */
  private async pump(): Promise<void> {
    if (this.appending) return;
    this.appending = true;
    try {
      while (this.pipeline.length > 0 && (this.pipeline[0] as Batch).settled) {
        const ready: Batch[] = [];
        while (this.pipeline.length > 0 && (this.pipeline[0] as Batch).settled)
          ready.push(this.pipeline.shift() as Batch);
        const ok = ready.filter((b) => b.uploaded !== undefined);
        if (ok.length > 0) {
          try {
            const sequences = await this.queue.append(
              ok.map((b) => (b.uploaded as { entry: NewEntry }).entry),
            );
            ok.forEach((b, i) => this.succeed(b, sequences[i] as number));
          } catch (e) {
            for (const b of ok) b.failed = e;
          }
        }
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

  private succeed(batch: Batch, sequence: number): void {
    for (const call of batch.calls) call.resolve({ sequence, location: batch.location });
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
    this.failure ??= error;
    for (const call of batch.calls) call.reject(error);
  }

  private drained(): Promise<void> {
    if (this.pipeline.length === 0 && !this.appending) return Promise.resolve();
    return new Promise<void>((r) => this.idle.push(r)).then(() => this.drained());
  }

  private notifyIdle(): void {
    if (this.pipeline.length > 0 || this.appending) return;
    const waiting = this.idle.splice(0);
    for (const r of waiting) r();
  }
}

function positiveInt(v: unknown, name: string, zeroOk = false): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < (zeroOk ? 0 : 1)) {
    throw new InvalidArgumentError(
      `${name} must be an integer ${zeroOk ? '>= 0' : '>= 1'}, got ${describeValue(v)}`,
    );
  }
}

/** Drops keys whose value is undefined, so they do not override defaults. */
export function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

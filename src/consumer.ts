import { systemClock, type Clock } from './clock.ts';
import { ClosedError, FencedError, InvalidArgumentError } from './errors.ts';
import type { MetadataItem } from './format/manifest.ts';
import {
  describeEntry,
  fetchBatch,
  fetchBatchObject,
  type BatchDescriptor,
} from './queue/batch-fetch.ts';
import { declaredBlockBytes, decodeBatch, DEFAULT_MAX_BATCH_BYTES } from './format/batch.ts';
import { GarbageCollector, type CollectionResult } from './gc.ts';
import { noopMetrics, type Metrics } from './metrics.ts';
import { fenced, ManifestQueue } from './queue/manifest-queue.ts';
import type { ObjectStore } from './store/object-store.ts';
import { resolveStore } from './store/open-store.ts';
import { delay } from './store/retry.ts';
import { describeValue } from './store/keys.ts';
import { asError } from './errors.ts';
import { stripUndefined } from './producer.ts';

export type { BatchDescriptor } from './queue/batch-fetch.ts';

/** Options of {@link Consumer.open}. */
export interface ConsumerOptions {
  /** The store, as a URL or an {@link ObjectStore}. */
  store: string | ObjectStore;
  /** Folder of the batch objects. @default "ingest" */
  dataPathPrefix?: string;
  /** Key of the queue manifest. @default "ingest/manifest" */
  manifestPath?: string;
  /** Resume after this sequence: batches at or below it count as acknowledged. */
  lastAckedSequence?: number;
  /** Acks that trigger one manifest dequeue. @default 100 */
  ackBatchSize?: number;
  /** Longest time an ack waits before it is applied, in ms. @default 1000 */
  ackIntervalMs?: number;
  /** Interval of the background garbage collection, in ms; 0 turns it off. @default 300000 (5 minutes) */
  gcIntervalMs?: number;
  /** See {@link GarbageCollectorOptions.gcGracePeriodMs}. @default 600000 (10 minutes) */
  gcGracePeriodMs?: number;
  /** Batches fetched ahead of `next()`. @default 8 */
  readAheadBatches?: number;
  /**
   * Bytes fetched ahead of `next()` (at least one batch is). A batch counts
   * its object's size until it is fetched, then its decoded size as its
   * headers declare it (or `maxBatchBytes` when they do not), and batches are
   * decoded ahead only while their decoded sizes fit. @default 67108864 (64 MiB)
   */
  readAheadBytes?: number;
  /**
   * Largest record block of a batch this consumer decodes, in bytes: a
   * batch that is (or decompresses to) more is a {@link CorruptDataError},
   * so a small object cannot cost gigabytes of memory. At least the
   * producers' `maxBatchBytes`; at most 1 GiB. @default 268435456 (256 MiB)
   */
  maxBatchBytes?: number;
  metrics?: Metrics;
  clock?: Clock;
}

/** Defaults of {@link ConsumerOptions}. */
export const CONSUMER_DEFAULTS = Object.freeze({
  dataPathPrefix: 'ingest',
  manifestPath: 'ingest/manifest',
  ackBatchSize: 100,
  ackIntervalMs: 1000,
  gcIntervalMs: 5 * 60 * 1000,
  gcGracePeriodMs: 10 * 60 * 1000,
  readAheadBatches: 8,
  readAheadBytes: 64 * 1024 * 1024,
  maxBatchBytes: DEFAULT_MAX_BATCH_BYTES,
});

/** A fetched batch. */
export interface Batch {
  sequence: number;
  location: string;
  entries: Uint8Array[];
  /** One item per `produce()` call: its entries start at `startIndex`. */
  metadata: MetadataItem[];
}

/**
 * Reads batches in order and acknowledges them. Opening a consumer raises the
 * manifest's epoch, which fences every earlier consumer: their reads, acks and
 * flushes fail with {@link FencedError} from then on.
 *
 * @example
 * const consumer = await Consumer.open({ store: 'file:./queue' });
 * for await (const batch of consumer.batches({ signal })) {
 *   handle(batch.entries);
 *   await consumer.ack(batch.sequence);
 * }
 * await consumer.close();
 */
export class Consumer {
  /** The epoch this consumer holds. */
  readonly epoch: number;
  private readonly store: ObjectStore;
  private readonly ownsStore: boolean;
  private readonly queue: ManifestQueue;
  private readonly gc: GarbageCollector;
  private readonly o: typeof CONSUMER_DEFAULTS;
  private readonly metrics: Metrics;
  private readonly clock: Clock;
  /** Highest sequence read from the manifest, and highest handed out by next() or nextDescriptors(). */
  private cursor: number;
  private handedOut: number;
  /** Highest sequence acknowledged, and highest dequeued from the manifest. */
  private acked: number;
  private applied: number;
  private readonly unacked: number[] = [];
  private pendingAcks = 0;
  /** Descriptors known from the last manifest read, not yet being fetched. */
  private known: BatchDescriptor[] = [];
  private readonly ahead: Ahead[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private ackTimer: NodeJS.Timeout | undefined;
  private gcTimer: NodeJS.Timeout | undefined;
  private gcRun: Promise<unknown> = Promise.resolve();
  private backgroundError: unknown;
  private fencedError: FencedError | undefined;
  private closing: Promise<void> | undefined;
  private readonly entryCounts = new Map<number, number>();

  private constructor(
    options: ConsumerOptions,
    epoch: number,
    store: ObjectStore,
    queue: ManifestQueue,
  ) {
    this.o = { ...CONSUMER_DEFAULTS, ...stripUndefined(options) } as typeof CONSUMER_DEFAULTS;
    this.epoch = epoch;
    this.store = store;
    this.ownsStore = typeof options.store === 'string';
    this.queue = queue;
    this.metrics = options.metrics ?? noopMetrics;
    this.clock = options.clock ?? systemClock;
    const start = options.lastAckedSequence ?? -1;
    this.cursor = start;
    this.handedOut = start;
    this.acked = start;
    this.applied = -1;
    this.gc = new GarbageCollector({ ...this.o, store, metrics: this.metrics, clock: this.clock });
    if (this.o.gcIntervalMs > 0) {
      this.gcTimer = setInterval(() => void this.backgroundCollect(), this.o.gcIntervalMs);
      this.gcTimer.unref();
    }
  }

  /**
   * Opens a consumer: raises the manifest's epoch (fencing earlier consumers)
   * and, if `lastAckedSequence` is given, resumes after it.
   *
   * @throws {InvalidArgumentError} for bad options.
   */
  static async open(options: ConsumerOptions): Promise<Consumer> {
    validateConsumerOptions(options);
    const store = resolveStore(options.store);
    const metrics = options.metrics ?? noopMetrics;
    const queue = new ManifestQueue({
      store,
      manifestPath: options.manifestPath ?? CONSUMER_DEFAULTS.manifestPath,
      metrics,
    });
    const epoch = await queue.fence();
    return new Consumer(options, epoch, store, queue);
  }

  /** The highest sequence acknowledged so far (-1 if none); pass it as `lastAckedSequence` to resume. */
  get lastAckedSequence(): number {
    return this.acked;
  }

  /**
   * The next batch in order, or `undefined` when caught up.
   *
   * @throws {FencedError} once a newer consumer opened.
   * @throws {CorruptDataError} naming the object when a batch is missing or
   * does not match its manifest entry; the consumer does not advance past it.
   */
  async next(): Promise<Batch | undefined> {
    this.check();
    if (this.ahead.length === 0) await this.fill(1);
    const head = this.ahead[0];
    if (!head) return undefined;
    let batch: Batch;
    try {
      batch = await this.decodeAhead(head);
    } catch (e) {
      // Stay on this batch: the next call fetches it again (a transient failure heals, corruption repeats).
      this.ahead[0] = this.startFetch(head.d);
      throw e;
    }
    this.ahead.shift();
    this.handedOut = batch.sequence;
    this.unacked.push(batch.sequence);
    this.entryCounts.set(batch.sequence, batch.entries.length);
    const first = batch.metadata[0];
    if (first)
      this.metrics.gauge(
        'buffer.consumer_lag_seconds',
        Math.max(0, this.clock.now() - first.ingestionTimeMs) / 1000,
      );
    this.readAhead();
    return batch;
  }

  /**
   * Up to `max` descriptors following the cursor, from at most one manifest
   * read, without fetching them; fetch them with {@link fetch} (concurrently
   * if you like) and acknowledge with {@link ackThrough}.
   */
  async nextDescriptors(max: number): Promise<BatchDescriptor[]> {
    this.check();
    if (!Number.isSafeInteger(max) || max < 1)
      throw new InvalidArgumentError(
        `nextDescriptors(max): max must be an integer >= 1, got ${String(max)}`,
      );
    const out: BatchDescriptor[] = [];
    // Batches already fetched ahead come first, in order.
    while (out.length < max && this.ahead.length > 0) out.push((this.ahead.shift() as Ahead).d);
    if (out.length < max && this.known.length === 0) await this.readManifest();
    while (out.length < max && this.known.length > 0)
      out.push(this.known.shift() as BatchDescriptor);
    for (const d of out) this.unacked.push(d.sequence);
    const last = out.at(-1);
    if (last) this.handedOut = last.sequence;
    return out;
  }

  /**
   * Fetches and verifies one batch. Safe to call concurrently.
   *
   * @throws {CorruptDataError} naming the location when the object is missing,
   * has another size or checksum than its manifest entry records, or does not decode.
   */
  async fetch(descriptor: BatchDescriptor): Promise<Batch> {
    this.check();
    const started = performance.now();
    const { records } = await fetchBatch(this.store, descriptor, undefined, {
      maxBatchBytes: this.o.maxBatchBytes,
    });
    this.metrics.observe('buffer.fetch_duration_seconds', (performance.now() - started) / 1000);
    return {
      sequence: descriptor.sequence,
      location: descriptor.location,
      entries: records,
      metadata: descriptor.metadata,
    };
  }

  /**
   * Acknowledges the oldest unacknowledged batch handed out. Acks are applied
   * as one manifest dequeue every `ackBatchSize` acks or `ackIntervalMs`.
   *
   * @throws {InvalidArgumentError} when `sequence` is not the oldest unacknowledged batch.
   */
  async ack(sequence: number): Promise<void> {
    this.check();
    const expected = this.unacked[0];
    if (sequence !== expected) {
      throw new InvalidArgumentError(
        `ack(${String(sequence)}): acks must be in order; expected ${expected === undefined ? 'none (no batch handed out awaits an ack)' : expected}`,
      );
    }
    this.unacked.shift();
    this.acked = sequence;
    this.pendingAcks++;
    this.metrics.increment('buffer.acks');
    if (this.pendingAcks >= this.o.ackBatchSize) {
      await this.flush();
    } else if (this.ackTimer === undefined) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = undefined;
        this.applyAcks().catch((e: unknown) => (this.backgroundError ??= e));
      }, this.o.ackIntervalMs);
      this.ackTimer.unref();
    }
  }

  /** Acknowledges every batch handed out up to `sequence`, and applies it at once in one manifest write. */
  async ackThrough(sequence: number): Promise<void> {
    this.check();
    if (!Number.isSafeInteger(sequence) || sequence > this.handedOut || sequence <= this.acked) {
      throw new InvalidArgumentError(
        `ackThrough(${String(sequence)}): expected a sequence above the last ack (${this.acked}) and at most the last handed out (${this.handedOut})`,
      );
    }
    while (this.unacked.length > 0 && (this.unacked[0] as number) <= sequence) this.unacked.shift();
    this.acked = sequence;
    this.pendingAcks++;
    this.metrics.increment('buffer.acks');
    await this.flush();
  }

  /** Applies pending acks now (one manifest write). */
  async flush(): Promise<void> {
    this.check();
    await this.applyAcks();
  }

  /** Dequeues through the acked frontier; flushes run one after another. */
  private async applyAcks(): Promise<void> {
    const run = this.flushing.then(async () => {
      if (this.ackTimer !== undefined) {
        clearTimeout(this.ackTimer);
        this.ackTimer = undefined;
      }
      const through = this.acked;
      if (through <= this.applied) return;
      try {
        const m = await this.queue.dequeue(through, this.epoch);
        this.metrics.gauge('buffer.queue_length', m.entries.length);
      } catch (e) {
        if (e instanceof FencedError) this.fencedError = e;
        throw e;
      }
      let entries = 0;
      for (const [seq, n] of this.entryCounts) {
        if (seq <= through) {
          entries += n;
          this.entryCounts.delete(seq);
        }
      }
      if (entries > 0) this.metrics.increment('buffer.entries_collected', entries);
      this.applied = through;
      this.pendingAcks = 0;
    });
    this.flushing = run.catch(() => undefined);
    await run;
  }

  /**
   * Yields batches as they arrive, polling every `pollIntervalMs` (default
   * 1000) when caught up, until `signal` aborts.
   */
  async *batches(
    options: { signal?: AbortSignal; pollIntervalMs?: number } = {},
  ): AsyncIterable<Batch> {
    const { signal, pollIntervalMs = 1000 } = options;
    while (!signal?.aborted) {
      const batch = await this.next();
      if (batch) {
        yield batch;
        continue;
      }
      try {
        await delay(pollIntervalMs, signal);
      } catch {
        return;
      }
    }
  }

  /** Runs one garbage collection now. */
  async collectGarbage(options: { dryRun?: boolean } = {}): Promise<CollectionResult> {
    this.check();
    const run = this.gcRun.then(() => this.gc.run(options));
    this.gcRun = run.catch(() => undefined);
    return run;
  }

  /** Applies pending acks and stops. Idempotent; a fenced consumer closes without writing. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.gcTimer);
      clearTimeout(this.ackTimer);
      const errors: unknown[] = [];
      if (!this.fencedError && this.acked > this.applied) {
        await this.applyAcks().catch((e: unknown) => errors.push(e));
      }
      await this.gcRun;
      for (const a of this.ahead) {
        a.raw.catch(() => undefined);
        a.decoded?.catch(() => undefined);
      }
      if (this.ownsStore) await this.store.close().catch((e: unknown) => errors.push(e));
      if (errors.length > 0) throw errors[0];
    })();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private check(): void {
    if (this.closing) throw new ClosedError('consumer');
    if (this.fencedError) throw this.fencedError;
    if (this.backgroundError !== undefined) {
      const e = this.backgroundError;
      this.backgroundError = undefined;
      throw asError(e);
    }
  }

  /** Reads the manifest and records the descriptors after the cursor. */
  private async readManifest(): Promise<void> {
    const { manifest } = await this.queue.read();
    if (manifest.epoch !== this.epoch) {
      this.fencedError = fenced(this.queue.manifestPath, this.epoch, manifest.epoch);
      throw this.fencedError;
    }
    this.metrics.gauge('buffer.queue_length', manifest.entries.length);
    const after = Math.max(this.cursor, this.known.at(-1)?.sequence ?? -1);
    for (const e of manifest.entries) if (e.sequence > after) this.known.push(describeEntry(e));
    const last = this.known.at(-1);
    if (last) this.cursor = last.sequence;
  }

  /** Starts fetches until the read-ahead window is full; reads the manifest if nothing is known. */
  private async fill(min: number): Promise<void> {
    if (this.known.length === 0) await this.readManifest();
    this.readAhead(min);
  }

  /**
   * Starts fetches while the read-ahead window has room. The window counts
   * each batch's object size until it is fetched and its declared decoded
   * size after, so compressed batches cannot blow the byte budget.
   */
  private readAhead(min = 0): void {
    let bytes = 0;
    for (const a of this.ahead) bytes += a.bytes;
    while (this.known.length > 0) {
      const d = this.known[0] as BatchDescriptor;
      const full =
        this.ahead.length >= this.o.readAheadBatches ||
        bytes + (d.sizeBytes ?? 0) > this.o.readAheadBytes;
      if (full && this.ahead.length >= min) break;
      this.known.shift();
      const a = this.startFetch(d);
      bytes += a.bytes;
      this.ahead.push(a);
    }
  }

  /** Fetches and checks a batch object; decoding waits for {@link decodeReady}. */
  private startFetch(d: BatchDescriptor): Ahead {
    const a: Ahead = { d, bytes: d.sizeBytes ?? 0, raw: Promise.resolve(new Uint8Array()) };
    const started = performance.now();
    a.raw = fetchBatchObject(this.store, d).then((body) => {
      this.metrics.observe('buffer.fetch_duration_seconds', (performance.now() - started) / 1000);
      a.body = body;
      a.bytes = declaredBlockBytes(body) ?? this.o.maxBatchBytes;
      this.decodeReady();
      return body;
    });
    a.raw.catch(() => undefined);
    return a;
  }

  /**
   * Starts decoding fetched batches in order while their decoded sizes fit
   * in `readAheadBytes`; the first batch always may, so one large batch
   * still goes through.
   */
  private decodeReady(): void {
    let used = 0;
    for (let i = 0; i < this.ahead.length; i++) {
      const a = this.ahead[i] as Ahead;
      if (a.decoded === undefined) {
        if (a.body === undefined) return;
        if (i > 0 && used + a.bytes > this.o.readAheadBytes) return;
        this.decodeAhead(a).catch(() => undefined);
      }
      used += a.bytes;
    }
  }

  /** The decoded batch of a read-ahead slot, decoding it now if it has not started. */
  private decodeAhead(a: Ahead): Promise<Batch> {
    a.decoded ??= a.raw.then(async (body) => {
      const { records } = await decodeBatch(body, a.d.location, {
        maxBatchBytes: this.o.maxBatchBytes,
      });
      return {
        sequence: a.d.sequence,
        location: a.d.location,
        entries: records,
        metadata: a.d.metadata,
      };
    });
    return a.decoded;
  }

  private async backgroundCollect(): Promise<void> {
    if (this.closing || this.fencedError) return;
    await this.collectGarbage().catch(() => undefined);
  }
}

/** A batch fetched (or being fetched) ahead of `next()`. */
interface Ahead {
  d: BatchDescriptor;
  /** Bytes it counts in the read-ahead window: object size, then declared decoded size. */
  bytes: number;
  /** The checked object bytes. */
  raw: Promise<Uint8Array>;
  /** Set once `raw` resolved. */
  body?: Uint8Array;
  /** Set once decoding started. */
  decoded?: Promise<Batch>;
}

function validateConsumerOptions(o: ConsumerOptions): void {
  const ints: [keyof ConsumerOptions, number][] = [
    ['ackBatchSize', 1],
    ['ackIntervalMs', 0],
    ['gcIntervalMs', 0],
    ['gcGracePeriodMs', 0],
    ['readAheadBatches', 1],
    ['readAheadBytes', 1],
    ['maxBatchBytes', 1],
    ['lastAckedSequence', -1],
  ];
  for (const [name, min] of ints) {
    const v = o[name];
    if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)) {
      throw new InvalidArgumentError(
        `${name} must be an integer >= ${min}, got ${describeValue(v)}`,
      );
    }
  }
}

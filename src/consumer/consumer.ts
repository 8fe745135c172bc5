import { randomUUID } from 'node:crypto';
import { sleep, systemClock, type Clock, type ClockTimer } from '../clock.ts';
import {
  asError,
  ClosedError,
  DataLossError,
  FencedError,
  InvalidArgumentError,
  NotFoundError,
  TimeoutError,
} from '../errors.ts';
import { declaredBlockBytes, decodeBatch, DEFAULT_MAX_BATCH_BYTES } from '../format/batch.ts';
import { CLOCK_PROBE_PREFIX, GarbageCollector, type CollectionResult } from '../gc.ts';
import { abortable, closeWithin } from '../lifecycle.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { noopMetrics, type Metrics } from '../metrics.ts';
import { checkCallOptions, resolveOptions, type OptionSpecs } from '../options.ts';
import type { BatchDescriptor } from '../queue/batch-fetch.ts';
import { DEFAULT_SUBSCRIPTION, type LogQueue, type StartAt } from '../queue/log-queue.ts';
import { Queue, QUEUE_SELECTOR_SPECS, type Batch, type QueueSelector } from '../queue/queue.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { LogReader, ManifestReader, type LayoutReader } from './layout-reader.ts';
import {
  EntryProcessor,
  type ProcessHandler,
  type ProcessHost,
  type ProcessOptions,
  type ProcessResult,
} from './process.ts';
import type { Producer } from '../producer/producer.ts';

export type { BatchDescriptor } from '../queue/batch-fetch.ts';
export type { Batch } from '../queue/queue.ts';
export type {
  Delivery,
  ProcessEndReason,
  ProcessEntry,
  ProcessHandler,
  ProcessOptions,
  ProcessOutcome,
  ProcessResult,
} from './process.ts';

/** Options of {@link Consumer.open}. Name the queue with `queue`, or with `store` and the paths. */
export interface ConsumerOptions extends QueueSelector {
  /**
   * The subscription to read (log layout): each has its own cursor and its
   * own epoch, and opening it fences its previous holder only. A new
   * subscription is created at `startAt`. A v1 queue has one consumer: any
   * name but the default is an `InvalidArgumentError`. @default "default"
   */
  subscription?: string;
  /**
   * Where a subscription created by this call starts: `'oldest'` (everything
   * retained), `'latest'` (what is appended after), `{ sequence }` or
   * `{ timeMs }` (the first batch appended at or after that time). An
   * existing subscription keeps its cursor. Log layout only. @default 'oldest'
   */
  startAt?: StartAt;
  /** This consumer's id, written in its subscription's cursor. @default a random UUID */
  instanceId?: string;
  /**
   * Read the subscription without taking it over (log layout only): nobody
   * is fenced, several shared readers may read it at once, each records its
   * own progress in the cursor, and the subscription's position is the
   * lowest progress of its readers, so it never passes an entry one of them
   * has not finished. Each reader reads every entry from that position: the
   * style for at-least-once processing (`process({ delivery:
   * 'at-least-once' })`), where duplicates are accepted. A reader that
   * records nothing for `sharedReaderTimeoutMs` no longer holds the position
   * back. A consumer that takes the subscription over (not shared) fences
   * every shared reader. @default false
   */
  shared?: boolean;
  /** See `shared`: how long a silent shared reader holds the position back, in ms. @default 600000 (10 minutes) */
  sharedReaderTimeoutMs?: number;
  /** Resume after this sequence: batches at or below it count as acknowledged. */
  lastAckedSequence?: number;
  /** Acks that trigger one manifest dequeue. @default 100 */
  ackBatchSize?: number;
  /** Longest time an ack waits before it is applied, in ms. @default 1000 */
  ackIntervalMs?: number;
  /** Interval of the background garbage collection, in ms; 0 turns it off. @default 300000 (5 minutes) */
  gcIntervalMs?: number;
  /** See `GarbageCollectorOptions.gcGracePeriodMs`. @default 600000 (10 minutes) */
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
   * Largest batch this consumer decodes, in bytes, counted as for the
   * producer (record block plus 96 bytes per record): a batch that is (or
   * decompresses to, or claims records for) more is a `CorruptDataError`,
   * so a small object cannot cost gigabytes of memory. At least the producers'
   * `maxBatchBytes`; at most 1 GiB. @default 268435456 (256 MiB)
   */
  maxBatchBytes?: number;
  /** Where metrics go. @default no metrics */
  metrics?: Metrics;
  /** Where background failures and lost races are reported. @default silent */
  logger?: Logger;
  /** Time source and timers. @default the system clock */
  clock?: Clock;
  /** Aborts `Consumer.open()` (the fencing write). */
  signal?: AbortSignal;
}

/** The consumer's settings once its options are resolved. */
type ConsumerSettings = Required<
  Pick<
    ConsumerOptions,
    | 'ackBatchSize'
    | 'ackIntervalMs'
    | 'gcIntervalMs'
    | 'gcGracePeriodMs'
    | 'readAheadBatches'
    | 'readAheadBytes'
    | 'maxBatchBytes'
  >
>;

/** Defaults of {@link ConsumerOptions}. */
export const CONSUMER_DEFAULTS: Readonly<ConsumerSettings> = Object.freeze({
  ackBatchSize: 100,
  ackIntervalMs: 1000,
  gcIntervalMs: 5 * 60 * 1000,
  gcGracePeriodMs: 10 * 60 * 1000,
  readAheadBatches: 8,
  readAheadBytes: 64 * 1024 * 1024,
  maxBatchBytes: DEFAULT_MAX_BATCH_BYTES,
});

const CONSUMER_SPECS: OptionSpecs<ConsumerOptions> = {
  ...QUEUE_SELECTOR_SPECS,
  subscription: {
    kind: 'string',
    pattern: /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$/,
    expected: '1-100 letters, digits, ".", "_" or "-", not starting with "."',
  },
  startAt: { kind: 'any' },
  shared: { kind: 'boolean' },
  sharedReaderTimeoutMs: { kind: 'int', min: 1000, max: 2_147_483_647 },
  instanceId: {
    kind: 'string',
    pattern: /^[\x20-\x7e]{1,200}$/,
    expected: 'printable ASCII, 1-200 characters',
  },
  lastAckedSequence: { kind: 'int', min: -1 },
  ackBatchSize: { kind: 'int', min: 1 },
  ackIntervalMs: { kind: 'int', min: 0, max: 2_147_483_647 },
  gcIntervalMs: { kind: 'int', min: 0, max: 2_147_483_647 },
  gcGracePeriodMs: { kind: 'int', min: 0 },
  readAheadBatches: { kind: 'int', min: 1 },
  readAheadBytes: { kind: 'int', min: 1 },
  maxBatchBytes: { kind: 'int', min: 1, max: 1024 ** 3 },
  metrics: { kind: 'any' },
  logger: { kind: 'any' },
  clock: { kind: 'any' },
  signal: { kind: 'any' },
};

/** Options of the calls that wait on the store. */
export interface CallOptions {
  /** Aborts the wait (and the requests it made); the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Reads batches in order and acknowledges them. Opening a consumer raises the
 * manifest's epoch, which fences every earlier consumer: their reads, acks and
 * flushes fail with {@link FencedError} from then on.
 *
 * Lifecycle: {@link close} applies pending acks (bounded by `timeoutMs` if
 * given); {@link destroy} stops at once without applying them. Timers go
 * through the `clock` and never keep the process alive.
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
  /** How this consumer reads and acknowledges, in the queue's layout. */
  private readonly reader: LayoutReader;
  /** The queue read. */
  readonly queue: Queue;
  private readonly ownsQueue: boolean;
  private readonly store: ObjectStore;
  private readonly gc: GarbageCollector;
  private readonly o: ConsumerSettings;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly clock: Clock;
  /** Aborts every store call in flight: destroy(). */
  private readonly inFlight = new AbortController();
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
  /** A descriptor read started ahead of need (see `prefetchDescriptors`); never rejects. */
  private prefetching: Promise<void> | undefined;
  /** What that read failed with, for the next `readManifest` to throw. */
  private prefetchFailure: { error: unknown } | undefined;
  private readonly ahead: Ahead[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private ackTimer: ClockTimer | undefined;
  private gcTimer: ClockTimer | undefined;
  private gcRun: Promise<unknown> = Promise.resolve();
  private backgroundError: unknown;
  private fencedError: FencedError | undefined;
  private closing: Promise<void> | undefined;
  private destroyed: Error | undefined;
  private readonly entryCounts = new Map<number, number>();
  /** The position inside the first batch where reading resumes, until that batch is handed out. */
  private resumeAt: { sequence: number; index: number } | undefined;
  /** The first entry not finished by process(), once it has run (else the batch after the last ack). */
  private processedTo: { sequence: number; index: number } | undefined;
  /** The position process() last recorded in the store (where a next holder starts). */
  private recordedTo: { sequence: number; index: number };
  private processor: EntryProcessor | undefined;
  /** Which way this consumer hands out data, once it has (see useStyle). */
  private style: 'batches' | 'entries' | undefined;
  /** The subscription read (the default one on a v1 queue). */
  private readonly subscription: string;
  /** Whether this consumer reads its subscription as a shared reader. */
  private readonly shared: boolean;

  private constructor(
    o: ConsumerOptions & ConsumerSettings,
    reader: LayoutReader,
    queue: Queue,
    owned: boolean,
  ) {
    this.o = o;
    this.subscription = o.subscription ?? DEFAULT_SUBSCRIPTION;
    this.shared = o.shared === true;
    this.reader = reader;
    this.queue = queue;
    this.ownsQueue = owned;
    this.store = queue.store;
    this.metrics = o.metrics ?? noopMetrics;
    this.logger = o.logger ?? silentLogger;
    this.clock = o.clock ?? systemClock;
    // The log reader starts at its subscription's cursor; v1 at lastAckedSequence.
    const start =
      reader instanceof LogReader
        ? Math.max(reader.nextSequence - 1, o.lastAckedSequence ?? -1)
        : (o.lastAckedSequence ?? -1);
    this.cursor = start;
    this.handedOut = start;
    this.acked = start;
    this.applied = -1;
    if (reader.startIndex > 0) this.resumeAt = { sequence: start + 1, index: reader.startIndex };
    this.recordedTo = this.resumeAt ?? { sequence: start + 1, index: 0 };
    this.gc = new GarbageCollector({
      queue,
      gcGracePeriodMs: o.gcGracePeriodMs,
      metrics: this.metrics,
      logger: this.logger,
      clock: this.clock,
    });
    this.scheduleCollection();
  }

  /**
   * Opens a consumer: raises the manifest's epoch (fencing earlier consumers)
   * and, if `lastAckedSequence` is given, resumes after it.
   *
   * @throws {InvalidArgumentError} for bad options.
   */
  static async open(options: ConsumerOptions): Promise<Consumer> {
    const o = resolveOptions(
      'Consumer',
      CONSUMER_SPECS,
      CONSUMER_DEFAULTS,
      options,
    ) as ConsumerOptions & ConsumerSettings;
    const { queue, owned } = Queue.select('Consumer', o);
    try {
      const layout = await queue.layout({ signal: o.signal });
      const metrics = o.metrics ?? noopMetrics;
      const logger = o.logger ?? silentLogger;
      const clock = o.clock ?? systemClock;
      const instanceId = o.instanceId ?? randomUUID();
      if (layout === 'v1' && o.shared) {
        throw new InvalidArgumentError(
          `the queue at "${queue.manifestPath}" has the v1 layout, which has exactly one consumer: shared readers need the log layout`,
        );
      }
      const reader: LayoutReader =
        layout === 'v1'
          ? await ManifestReader.open(
              queue,
              queue.manifestQueue({ metrics, logger, clock }),
              o.subscription,
              o.signal,
            )
          : await LogReader.open(
              await ensured(
                queue,
                queue.logQueue({ metrics, logger, clock, writer: instanceId }),
                o.signal,
              ),
              {
                subscription: o.subscription ?? DEFAULT_SUBSCRIPTION,
                startAt: o.startAt ?? 'oldest',
                ...(o.lastAckedSequence !== undefined
                  ? { lastAckedSequence: o.lastAckedSequence }
                  : {}),
                holder: instanceId,
                clock,
                metrics,
                logger,
                fenceCheckMs: o.ackIntervalMs,
                ...(o.shared ? { shared: true } : {}),
                ...(o.sharedReaderTimeoutMs !== undefined
                  ? { sharedReaderTimeoutMs: o.sharedReaderTimeoutMs }
                  : {}),
              },
              o.signal,
            );
      return new Consumer(o, reader, queue, owned);
    } catch (e) {
      if (owned) await queue.close().catch(() => undefined);
      throw e;
    }
  }

  /** The highest sequence acknowledged so far (-1 if none); pass it as `lastAckedSequence` to resume. */
  get lastAckedSequence(): number {
    return this.acked;
  }

  /** The epoch this consumer holds: the manifest's (v1) or its subscription's (log). */
  get epoch(): number {
    return this.reader.epoch;
  }

  /**
   * The next batch in order, or `undefined` when caught up.
   *
   * @throws {FencedError} once a newer consumer opened.
   * @throws {CorruptDataError} naming the object when a batch is missing or
   * does not match its manifest entry; the consumer does not advance past it.
   */
  async next(options: CallOptions = {}): Promise<Batch | undefined> {
    checkCallOptions('next', options, ['signal']);
    this.check();
    this.useStyle('batches', 'next()');
    return abortable(this.nextBatch(options.signal), options.signal);
  }

  /**
   * One consumer hands out batches (`next()`, `ack()`) or entries
   * (`process()`), not both: acknowledging a batch would pass entries
   * `process()` has not finished, and `process()` would acknowledge batches
   * handed out by `next()`.
   */
  private useStyle(style: 'batches' | 'entries', call: string): void {
    if (this.style !== undefined && this.style !== style) {
      throw new InvalidArgumentError(
        `${call}: this consumer ${this.style === 'entries' ? 'processes entries with process()' : 'hands out batches with next()/nextDescriptors()'}; mixing both would acknowledge what the other has not finished: use one per Consumer (open another for the other style)`,
      );
    }
    this.style = style;
  }

  private async nextBatch(signal: AbortSignal | undefined): Promise<Batch | undefined> {
    if (this.ahead.length === 0) await this.fill(1, signal);
    const head = this.ahead[0];
    if (!head) return undefined;
    let batch: Batch;
    try {
      batch = await this.decodeAhead(head);
    } catch (e) {
      // Expired by retention after it was read ahead: recorded, reported once, moved past.
      if (e instanceof DataLossError) await this.reportLoss(e, signal);
      // Otherwise stay on this batch: the next call fetches it again (a transient
      // failure heals, corruption repeats).
      else if (this.ahead[0] === head) this.ahead[0] = this.startFetch(head.d);
      throw e;
    }
    // A caller that gave up (aborted) must not have the batch count as handed out:
    // it stays at the head for the next call.
    signal?.throwIfAborted();
    this.check();
    // A concurrent next() handed this one out meanwhile: take the following one.
    if (this.ahead[0] !== head) return this.nextBatch(signal);
    this.ahead.shift();
    batch = this.trimResumed(batch);
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
    this.prefetchDescriptors();
    return batch;
  }

  /**
   * Up to `max` descriptors following the cursor, from at most one manifest
   * read, without fetching them; fetch them with {@link fetch} (concurrently
   * if you like) and acknowledge with {@link ackThrough}.
   */
  async nextDescriptors(max: number, options: CallOptions = {}): Promise<BatchDescriptor[]> {
    checkCallOptions('nextDescriptors', options, ['signal']);
    this.check();
    this.useStyle('batches', 'nextDescriptors()');
    if (!Number.isSafeInteger(max) || max < 1)
      throw new InvalidArgumentError(
        `nextDescriptors(max): max must be an integer >= 1, got ${String(max)}`,
      );
    // Read first, take after: a read that fails or is aborted must leave every batch
    // where it was (in the read-ahead window or known), or they would be skipped.
    if (this.ahead.length + this.known.length < max) {
      await abortable(this.readManifest(options.signal), options.signal);
      this.check();
    }
    const out: BatchDescriptor[] = [];
    // Batches already fetched ahead come first, in order.
    while (out.length < max && this.ahead.length > 0) out.push((this.ahead.shift() as Ahead).d);
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
  async fetch(descriptor: BatchDescriptor, options: CallOptions = {}): Promise<Batch> {
    checkCallOptions('fetch', options, ['signal']);
    this.check();
    const started = performance.now();
    let body: Uint8Array;
    try {
      body = await this.reader.fetchObject(descriptor, this.callSignal(options.signal));
    } catch (e) {
      if (e instanceof DataLossError) await this.reportLoss(e, options.signal);
      throw e;
    }
    const { records } = await decodeBatch(body, descriptor.location, {
      maxBatchBytes: this.o.maxBatchBytes,
    });
    this.metrics.observe('buffer.fetch_duration_seconds', (performance.now() - started) / 1000);
    return this.trimResumed({
      sequence: descriptor.sequence,
      location: descriptor.location,
      entries: records,
      metadata: descriptor.metadata,
    });
  }

  /**
   * The batch without the entries before the subscription's position, when
   * that position is inside it (committed by `process()` before a restart).
   */
  private trimResumed(batch: Batch): Batch {
    const r = this.resumeAt;
    if (!r || batch.sequence !== r.sequence) return batch;
    return { ...batch, entries: batch.entries.slice(r.index), firstIndex: r.index };
  }

  /**
   * The first entry this consumer has not finished: where it continues.
   * `{ sequence, index }`. What a next holder of the subscription would
   * start at is {@link recordedPosition}.
   */
  get position(): { sequence: number; index: number } {
    if (this.processedTo) return { ...this.processedTo };
    if (this.resumeAt && this.acked < this.resumeAt.sequence) return { ...this.resumeAt };
    return { sequence: this.acked + 1, index: 0 };
  }

  /**
   * The position recorded in the store by `process()` (or found there at
   * open): where the next holder of the subscription starts. Behind
   * {@link position} by what is not recorded yet: at-least-once between
   * records, and on a v1 queue the finished entries of a batch in hand
   * (v1 records whole batches).
   */
  get recordedPosition(): { sequence: number; index: number } {
    return { ...this.recordedTo };
  }

  /**
   * Processes entries one by one with `handler`, which resolves to
   * `'commit'` (done), `'retry'` (the same entry again, after the retry
   * policy's wait; a thrown error is the same), `'skip'` (passed over,
   * counted and logged) or `'stop'` (return now). Entries whose attempts run
   * out are handled by `onExhausted` (stop, skip, or a durable write to a
   * dead-letter queue before moving on). Returns counts and why it returned;
   * what it handed out and did not finish comes first in the next call.
   *
   * Positions are entries: in the exactly-once styles (the default) the
   * subscription's cursor records each finished entry before the next is
   * handed out, so after a crash the next holder resumes at the first entry
   * not finished. On a v1 queue only whole batches are recorded: a crash
   * inside a batch delivers that batch's finished entries again. Use either
   * `process()` or `next()`/`ack()` on one consumer, not both.
   *
   * @throws {InvalidArgumentError} for bad options or a handler outcome that is none of the four.
   * @throws {FencedError} once a newer consumer took the subscription over.
   */
  async process(handler: ProcessHandler, options: ProcessOptions = {}): Promise<ProcessResult> {
    this.check();
    this.useStyle('entries', 'process()');
    this.processor ??= new EntryProcessor(this.processHost());
    return this.processor.run(handler, options);
  }

  /** What the entry processor needs of this consumer. */
  private processHost(): ProcessHost {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    const subscription = this.subscription;
    return {
      next: (signal) => {
        this.check();
        return abortable(this.nextBatch(signal), signal);
      },
      commit: (sequence, index, length, durable) =>
        this.commitEntries(sequence, index, length, durable),
      get position() {
        return self.position;
      },
      get recordedPosition() {
        return self.recordedPosition;
      },
      clock: this.clock,
      metrics: this.metrics,
      logger: this.logger,
      queueDescription: this.queue.description,
      subscription,
      onDefaultSubscription: subscription === DEFAULT_SUBSCRIPTION,
      shared: this.shared,
      sameQueue: (producer: Producer) => this.sameQueueAs(producer),
      stopped: this.inFlight.signal,
      doneBefore: this.reader.doneBefore,
    };
  }

  /**
   * Records that the entries before `index` of batch `sequence` (of `length`)
   * are finished: batches wholly finished are acknowledged in order; when
   * `durable`, the position is written before this returns (inside a batch:
   * the log's cursor; v1 records whole batches only).
   */
  private async commitEntries(
    sequence: number,
    index: number,
    length: number,
    durable: boolean,
  ): Promise<void> {
    // A call that close() drains still records what it finished.
    if (this.destroyed) throw this.destroyed;
    if (this.fencedError) throw this.fencedError;
    const whole = index >= length;
    const through = whole ? sequence : sequence - 1;
    let acked = 0;
    while (this.unacked.length > 0 && (this.unacked[0] as number) <= through) {
      this.unacked.shift();
      acked++;
    }
    if (through > this.acked) {
      this.acked = through;
      this.pendingAcks += acked;
      this.metrics.increment('buffer.acks', acked);
    }
    const position = whole ? { sequence: sequence + 1, index: 0 } : { sequence, index };
    if (!durable) {
      if (this.pendingAcks >= this.o.ackBatchSize) {
        await this.applyAcks();
        this.recordedTo = { sequence: through + 1, index: 0 };
      }
      this.processedTo = position;
      return;
    }
    if (whole || index === 0 || !this.reader.commitPosition) {
      await this.applyAcks();
      this.processedTo = position;
      // v1 records whole batches: a position inside one is recorded as its batch's start.
      this.recordedTo = { sequence: through + 1, index: 0 };
      return;
    }
    const commitPosition = this.reader.commitPosition.bind(this.reader);
    const run = this.flushing.then(async () => {
      if (this.destroyed) throw this.destroyed;
      try {
        await commitPosition(sequence, index, this.inFlight.signal);
      } catch (e) {
        if (e instanceof FencedError) this.fencedError = e;
        throw e;
      }
      // The position covers every batch before it.
      if (this.acked > this.applied) this.applied = this.acked;
      this.pendingAcks = 0;
    });
    this.flushing = run.catch(() => undefined);
    await run;
    this.processedTo = position;
    this.recordedTo = position;
  }

  /**
   * Whether `producer` writes to this consumer's queue: the same paths, and
   * a probe object written through this consumer's store is seen through
   * the producer's (so wrapped stores and two URLs of one bucket count as
   * the same). The probe is named like the collector's clock probes, which
   * collections remove if it is left behind.
   */
  private async sameQueueAs(producer: Producer): Promise<boolean> {
    const other = producer.queue;
    if (
      other.manifestPath !== this.queue.manifestPath ||
      other.dataPathPrefix !== this.queue.dataPathPrefix
    ) {
      return false;
    }
    if (other.store === this.store) return true;
    const key = `${this.queue.dataPathPrefix}/${CLOCK_PROBE_PREFIX}${randomUUID()}`;
    const signal = this.inFlight.signal;
    await this.store.put(key, new Uint8Array(), { mode: 'create', signal });
    try {
      await other.store.head(key, { signal });
      return true;
    } catch (e) {
      if (e instanceof NotFoundError) return false;
      throw e;
    } finally {
      await this.store.delete(key, { signal }).catch(() => undefined);
    }
  }

  /**
   * Acknowledges the oldest unacknowledged batch handed out. Acks are applied
   * as one manifest dequeue every `ackBatchSize` acks or `ackIntervalMs`.
   *
   * @throws {InvalidArgumentError} when `sequence` is not the oldest unacknowledged batch.
   */
  async ack(sequence: number, options: CallOptions = {}): Promise<void> {
    checkCallOptions('ack', options, ['signal']);
    this.check();
    this.useStyle('batches', 'ack()');
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
      await this.flush(options);
    } else if (this.ackTimer === undefined) {
      this.ackTimer = this.clock.setTimeout(() => {
        this.ackTimer = undefined;
        this.applyAcks().catch((e: unknown) => {
          this.backgroundError ??= e;
          this.logger.warn(
            { queue: this.queue.description, error: String(e) },
            'consumer: applying acknowledgements in the background failed',
          );
        });
      }, this.o.ackIntervalMs);
    }
  }

  /** Acknowledges every batch handed out up to `sequence`, and applies it at once in one manifest write. */
  async ackThrough(sequence: number, options: CallOptions = {}): Promise<void> {
    checkCallOptions('ackThrough', options, ['signal']);
    this.check();
    this.useStyle('batches', 'ackThrough()');
    if (!Number.isSafeInteger(sequence) || sequence > this.handedOut || sequence <= this.acked) {
      throw new InvalidArgumentError(
        `ackThrough(${String(sequence)}): expected a sequence above the last ack (${this.acked}) and at most the last handed out (${this.handedOut})`,
      );
    }
    while (this.unacked.length > 0 && (this.unacked[0] as number) <= sequence) this.unacked.shift();
    this.acked = sequence;
    this.pendingAcks++;
    this.metrics.increment('buffer.acks');
    await this.flush(options);
  }

  /** Applies pending acks now (one manifest write). */
  async flush(options: CallOptions = {}): Promise<void> {
    checkCallOptions('flush', options, ['signal']);
    this.check();
    await abortable(this.applyAcks(), options.signal);
  }

  /** Dequeues through the acked frontier; flushes run one after another. */
  private async applyAcks(): Promise<void> {
    const run = this.flushing.then(async () => {
      this.clock.clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
      const through = this.acked;
      if (through <= this.applied || this.destroyed) return;
      try {
        const pending = await this.reader.acknowledge(through, this.inFlight.signal);
        if (pending !== undefined) this.metrics.gauge('buffer.queue_length', pending);
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
   * 1000, by the consumer's clock) when caught up, until `signal` aborts.
   */
  async *batches(
    options: { signal?: AbortSignal; pollIntervalMs?: number } = {},
  ): AsyncIterable<Batch> {
    checkCallOptions('batches', options, ['signal', 'pollIntervalMs']);
    const { signal, pollIntervalMs = 1000 } = options;
    while (!signal?.aborted) {
      let batch: Batch | undefined;
      try {
        batch = await this.next({ signal });
      } catch (e) {
        if (signal?.aborted) return;
        throw e;
      }
      if (batch) {
        yield batch;
        continue;
      }
      try {
        await sleep(pollIntervalMs, { signal, clock: this.clock });
      } catch {
        return;
      }
    }
  }

  /** Runs one garbage collection now. */
  async collectGarbage(
    options: { dryRun?: boolean; signal?: AbortSignal } = {},
  ): Promise<CollectionResult> {
    checkCallOptions('collectGarbage', options, ['dryRun', 'signal']);
    this.check();
    const signal = this.callSignal(options.signal);
    const run = this.gcRun.then(() => this.gc.run({ dryRun: options.dryRun, signal }));
    this.gcRun = run.catch(() => undefined);
    return run;
  }

  /**
   * Applies pending acks and stops. Idempotent; a fenced consumer closes
   * without writing. With `timeoutMs`, a close that has not finished by then
   * destroys the consumer (the pending acks are not applied: their batches
   * will be delivered again) and rejects with a {@link TimeoutError}.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    checkCallOptions('close', options, ['timeoutMs']);
    this.closing ??= (async () => {
      this.stopTimers();
      const errors: unknown[] = [];
      // A process() call stops handing out, lets its entries finish and records them.
      await this.processor?.drain();
      if (!this.fencedError && this.acked > this.applied && !this.destroyed) {
        await this.applyAcks().catch((e: unknown) => errors.push(e));
      }
      await this.gcRun;
      // A descriptor read started ahead finishes first (it never rejects): nothing reads
      // the queue after it is closed, and the reader is left by one call at a time.
      await this.prefetching;
      if (this.destroyed) return;
      // A shared reader leaves its subscription, so that it no longer holds it back.
      if (!this.fencedError && errors.length === 0 && this.reader.release) {
        await this.reader.release(this.inFlight.signal).catch((e: unknown) => errors.push(e));
      }
      this.releaseAhead();
      await this.gc.close();
      if (this.ownsQueue) await this.queue.close().catch((e: unknown) => errors.push(e));
      if (errors.length > 0) throw asError(errors[0]);
    })();
    this.closing.catch(() => undefined);
    const { timeoutMs } = options;
    return closeWithin(
      this.closing,
      timeoutMs,
      this.clock,
      () =>
        new TimeoutError(
          `consumer: close() did not finish in ${timeoutMs} ms; acknowledgements through sequence ${this.acked} were not applied (those batches will be delivered again)`,
        ),
      (e) => this.destroy(e),
    );
  }

  /**
   * Stops at once: no pending ack is applied (those batches will be
   * delivered again to the next consumer), requests in flight are aborted,
   * timers cleared, and a store the consumer opened is closed; later calls
   * reject with `error` (a {@link ClosedError} by default). Idempotent.
   */
  async destroy(error?: Error): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = error ?? new ClosedError('consumer (destroyed)');
    this.stopTimers();
    this.reader.stop?.();
    this.inFlight.abort(this.destroyed);
    this.releaseAhead();
    this.closing ??= Promise.resolve();
    await this.gc.close().catch(() => undefined);
    if (this.ownsQueue) await this.queue.close().catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private stopTimers(): void {
    this.clock.clearTimeout(this.gcTimer);
    this.clock.clearTimeout(this.ackTimer);
    this.gcTimer = undefined;
    this.ackTimer = undefined;
  }

  private releaseAhead(): void {
    for (const a of this.ahead) {
      a.raw.catch(() => undefined);
      a.decoded?.catch(() => undefined);
    }
  }

  private check(): void {
    if (this.destroyed) throw this.destroyed;
    if (this.closing) throw new ClosedError('consumer');
    if (this.fencedError) throw this.fencedError;
    if (this.backgroundError !== undefined) {
      const e = this.backgroundError;
      this.backgroundError = undefined;
      throw asError(e);
    }
  }

  /** A signal that aborts at the caller's signal or at destroy(). */
  private callSignal(signal: AbortSignal | undefined): AbortSignal {
    return signal ? AbortSignal.any([signal, this.inFlight.signal]) : this.inFlight.signal;
  }

  /**
   * Reads the manifest and records the descriptors after the cursor. One read
   * at a time: a read ahead in flight (see {@link prefetchDescriptors}) is
   * waited for first, and its failure is this call's.
   */
  private async readManifest(signal: AbortSignal | undefined): Promise<void> {
    const prefetch = this.prefetching;
    // Never rejects; an abort of the caller leaves it in place, so reads stay one at a time.
    if (prefetch) await abortable(prefetch, signal);
    const failure = this.prefetchFailure;
    if (failure) {
      this.prefetchFailure = undefined;
      throw failure.error;
    }
    // What it found may be all the caller needs.
    if (prefetch && this.known.length > 0) return;
    await this.readDescriptors(signal);
  }

  private async readDescriptors(signal: AbortSignal | undefined): Promise<void> {
    const after = Math.max(this.cursor, this.known.at(-1)?.sequence ?? -1);
    let found: BatchDescriptor[];
    try {
      found = await this.reader.read(after, this.callSignal(signal));
    } catch (e) {
      if (e instanceof FencedError) this.fencedError = e;
      if (e instanceof DataLossError) {
        // The lost batches will never come: move past them (the cursor already did).
        this.skipThrough(e.lastSequence);
      }
      throw e;
    }
    // A loss skipped while this read was in flight moved the cursor past some of it.
    const floor = Math.max(after, this.cursor, this.known.at(-1)?.sequence ?? -1);
    for (const d of found) if (d.sequence > floor) this.known.push(d);
    const last = this.known.at(-1);
    if (last) this.cursor = last.sequence;
  }

  /**
   * Reads the next descriptors in the background while the read-ahead window
   * still has batches to hand out, so a backlog streams without a pause for
   * each manifest read. Only when nothing is known, no read is in flight and
   * the window holds batches (a backlog; an idle queue is polled by callers,
   * not here). Its failure surfaces in the next {@link readManifest}.
   */
  private prefetchDescriptors(): void {
    if (this.prefetching || this.prefetchFailure || this.closing || this.destroyed) return;
    if (this.known.length > 0 || this.ahead.length === 0) return;
    const p: Promise<void> = this.readDescriptors(undefined)
      .then(
        () => {
          if (!this.closing && !this.destroyed) this.readAhead();
        },
        (error: unknown) => {
          this.prefetchFailure = { error };
        },
      )
      .finally(() => {
        if (this.prefetching === p) this.prefetching = undefined;
      });
    this.prefetching = p;
  }

  /** Records a loss a fetch found (see `LayoutReader.recordLoss`), then moves past it. */
  private async reportLoss(e: DataLossError, signal: AbortSignal | undefined): Promise<void> {
    await this.reader.recordLoss?.(e, this.callSignal(signal));
    this.skipThrough(e.lastSequence);
  }

  /**
   * Moves reading past a loss through `sequence`: what was read ahead or known
   * up to it is gone. Batches handed out and not acknowledged stay so (the
   * application acknowledges them, or they come again after a restart, if
   * they still exist); acknowledging past the loss covers it.
   */
  private skipThrough(sequence: number): void {
    this.cursor = Math.max(this.cursor, sequence);
    this.handedOut = Math.max(this.handedOut, sequence);
    this.known = this.known.filter((d) => d.sequence > sequence);
    while (this.ahead.length > 0 && (this.ahead[0] as Ahead).d.sequence <= sequence) {
      const a = this.ahead.shift() as Ahead;
      a.raw.catch(() => undefined);
      a.decoded?.catch(() => undefined);
    }
  }

  /** Starts fetches until the read-ahead window is full; reads the manifest if nothing is known. */
  private async fill(min: number, signal: AbortSignal | undefined): Promise<void> {
    if (this.known.length === 0) await this.readManifest(signal);
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
    a.raw = this.reader.fetchObject(d, this.inFlight.signal).then((body) => {
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

  /** Arms the next background collection; each re-arms after it ran. */
  private scheduleCollection(): void {
    if (this.o.gcIntervalMs <= 0 || this.closing || this.destroyed) return;
    this.gcTimer = this.clock.setTimeout(() => {
      this.gcTimer = undefined;
      if (this.closing || this.destroyed || this.fencedError) return;
      void this.collectGarbage()
        .catch((e: unknown) =>
          this.logger.warn(
            { queue: this.queue.description, error: String(e) },
            'consumer: background collection failed',
          ),
        )
        .finally(() => this.scheduleCollection());
    }, this.o.gcIntervalMs);
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

/** `log`, once the queue made sure it exists (see `Queue.ensureLog`). */
async function ensured(queue: Queue, log: LogQueue, signal?: AbortSignal): Promise<LogQueue> {
  await queue.ensureLog(log, signal);
  return log;
}

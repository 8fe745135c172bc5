/**
 * Durable mode's journal: every insert is appended to a Spillway queue (one
 * `produce()` call, awaited until durable) and read back through the
 * queue's consumer, which hands each batch to the keyed buffer. A batch is
 * acknowledged once each of its values was flushed (by a successful
 * `onFlush` or `onError`), in order, so the consumer's position never passes
 * a value not yet flushed. The consumer is the only source of values, so
 * values appended by anyone else (a fenced process whose appends landed
 * late, or the run before a crash) are flushed too.
 */
import { systemClock, sleep, type Clock, type ClockTimer } from '../clock.ts';
import { asError, ClosedError, FencedError, hasCode } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { Consumer } from '../consumer/consumer.ts';
import { Producer } from '../producer/producer.ts';
import { Queue, type Batch, type Layout } from '../queue/queue.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { decodeEntry, type Key } from './key.ts';

/**
 * Options of the queue a durable keyed buffer keeps its inserts in (the
 * `queue` field of {@link DurableKeyedBufferOptions}); they mean what they
 * mean for the queue, producer and consumer, so `maxBufferedBytes` here is
 * the producer's, not the keyed buffer's.
 */
export interface KeyedQueueOptions {
  /** See `QueueOptions.manifestPath`. @default "ingest/manifest" */
  manifestPath?: string;
  /** See `QueueOptions.dataPathPrefix`. @default "ingest" */
  dataPathPrefix?: string;
  /** See `QueueOptions.layout`; a new queue gets the log layout. */
  layout?: Layout;
  /** The log subscription the buffer reads as; opening it fences its previous holder. @default "keyed" */
  subscription?: string;
  /** The producer's and consumer's instance id. @default a random UUID */
  instanceId?: string;
  /** The producer's `flushIntervalMs`: 0 is group commit. @default 0 */
  flushIntervalMs?: number;
  /** The producer's `maxBufferedBytes` (bytes not yet durable). @default 268435456 (256 MiB) */
  maxBufferedBytes?: number;
  /** The consumer's `ackIntervalMs`: longest wait before flushed values are acknowledged in the store. @default 1000 */
  ackIntervalMs?: number;
  /** The consumer's `ackBatchSize`. @default 100 */
  ackBatchSize?: number;
  /** The consumer's `gcIntervalMs`; 0 turns background collection off. @default 300000 */
  gcIntervalMs?: number;
  /**
   * While no insert reads the queue, it is read every this many ms: values
   * appended by others are picked up, and a takeover (fencing) is noticed.
   * 0 turns it off. @default 1000
   */
  pollIntervalMs?: number;
}

/** One value read back from the queue. */
export interface JournalValue {
  key: Key;
  value: Uint8Array;
  /** The batch sequence holding it. */
  sequence: number;
}

/** What the journal tells the keyed buffer. */
export interface JournalSink {
  /** Values read from the queue, in queue order. */
  values(values: JournalValue[]): void;
  /** A failure of background work (a fenced consumer, an entry that does not decode). */
  failed(error: Error): void;
}

/** Settings the keyed buffer passes down. */
export interface JournalOptions extends KeyedQueueOptions {
  store: string | ObjectStore;
  clock?: Clock;
  metrics: Metrics;
  logger: Logger;
  sink: JournalSink;
}

/** Wait before reading again when a read found nothing yet (in ms, by the clock). */
const EMPTY_READ_DELAY_MS = 5;

/** The queue behind a durable keyed buffer. */
export class KeyedJournal {
  private handedOut = -1;
  /** Batches handed out and not yet acknowledged, oldest first, with their values not yet flushed. */
  private readonly open: { sequence: number; remaining: number }[] = [];
  private readonly remaining = new Map<number, { sequence: number; remaining: number }>();
  private reading: Promise<void> | undefined;
  private pollTimer: ClockTimer | undefined;
  private stopped = false;
  private fenced: Error | undefined;
  private readonly clock: Clock;

  private constructor(
    private readonly o: JournalOptions,
    private readonly queue: Queue,
    private readonly consumer: Consumer,
    private readonly producer: Producer,
  ) {
    this.clock = o.clock ?? systemClock;
  }

  /**
   * Opens the queue, takes its subscription over (fencing the previous
   * holder) and reads back everything not yet acknowledged.
   */
  static async open(o: JournalOptions): Promise<KeyedJournal> {
    const queue = Queue.open({
      store: o.store,
      ...(o.manifestPath !== undefined ? { manifestPath: o.manifestPath } : {}),
      ...(o.dataPathPrefix !== undefined ? { dataPathPrefix: o.dataPathPrefix } : {}),
      ...(o.layout !== undefined ? { layout: o.layout } : {}),
    });
    const common = {
      queue,
      metrics: o.metrics,
      logger: o.logger,
      ...(o.clock ? { clock: o.clock } : {}),
      ...(o.instanceId !== undefined ? { instanceId: o.instanceId } : {}),
    };
    let consumer: Consumer | undefined;
    try {
      const layout = await queue.layout();
      consumer = await Consumer.open({
        ...common,
        ...(layout === 'log' ? { subscription: o.subscription ?? 'keyed' } : {}),
        ...(o.ackIntervalMs !== undefined ? { ackIntervalMs: o.ackIntervalMs } : {}),
        ...(o.ackBatchSize !== undefined ? { ackBatchSize: o.ackBatchSize } : {}),
        ...(o.gcIntervalMs !== undefined ? { gcIntervalMs: o.gcIntervalMs } : {}),
      });
      const producer = new Producer({
        ...common,
        flushIntervalMs: o.flushIntervalMs ?? 0,
        ...(o.maxBufferedBytes !== undefined ? { maxBufferedBytes: o.maxBufferedBytes } : {}),
      });
      const journal = new KeyedJournal(o, queue, consumer, producer);
      await journal.catchUp();
      journal.schedulePoll();
      return journal;
    } catch (e) {
      await consumer?.destroy().catch(() => undefined);
      await queue.close().catch(() => undefined);
      throw e;
    }
  }

  /**
   * Appends one entry and resolves once it is durable and read back (handed
   * to the sink), with its batch sequence.
   *
   * @throws {FencedError} when another process took the buffer over; the
   * entry may be in the queue then, and that process flushes it.
   */
  async append(entry: Uint8Array, signal?: AbortSignal): Promise<number> {
    const handle = await this.producer.produce([entry], signal ? { signal } : undefined);
    const { sequence } = await handle.durable;
    await this.reach(sequence);
    return sequence;
  }

  /** Reads until the batch `sequence` was handed to the sink. */
  private async reach(sequence: number): Promise<void> {
    let empty = 0;
    while (this.handedOut < sequence) {
      if (this.stopped) throw this.fenced ?? new ClosedError('keyed buffer');
      const got = await this.readOnce();
      // Durable means stored: an empty read is a store that has not shown it yet.
      if (got) empty = 0;
      else if (++empty > 2) await sleep(EMPTY_READ_DELAY_MS, { clock: this.clock });
    }
  }

  /** Reads until caught up. */
  async catchUp(): Promise<void> {
    while (await this.readOnce());
  }

  /** One `next()`, shared by concurrent callers; true when it handed out a batch. */
  private readOnce(): Promise<boolean> {
    const before = this.handedOut;
    this.reading ??= (async () => {
      try {
        const batch = await this.consumer.next();
        if (batch) this.deliver(batch);
      } catch (e) {
        if (e instanceof FencedError) this.fail(e);
        throw e;
      } finally {
        this.reading = undefined;
      }
    })();
    return this.reading.then(() => this.handedOut > before);
  }

  private deliver(batch: Batch): void {
    this.handedOut = batch.sequence;
    const values: JournalValue[] = [];
    for (const entry of batch.entries) {
      try {
        values.push({ ...decodeEntry(entry, batch.location), sequence: batch.sequence });
      } catch (e) {
        // Not ours (another writer on this queue): reported, not flushed, passed over.
        this.o.sink.failed(asError(e));
      }
    }
    const open = { sequence: batch.sequence, remaining: values.length };
    this.open.push(open);
    this.remaining.set(batch.sequence, open);
    if (values.length > 0) this.o.sink.values(values);
    else this.ackReady();
  }

  /** `count` values of batch `sequence` were flushed: acknowledges the batches now wholly flushed, in order. */
  done(sequence: number, count: number): void {
    const open = this.remaining.get(sequence);
    if (!open) return;
    open.remaining -= count;
    this.ackReady();
  }

  private ackReady(): void {
    while (this.open.length > 0 && (this.open[0] as { remaining: number }).remaining <= 0) {
      const head = this.open.shift() as { sequence: number };
      this.remaining.delete(head.sequence);
      if (this.stopped) continue;
      // ack() checks its order synchronously, so calls in a loop stay in order.
      this.consumer.ack(head.sequence).catch((e: unknown) => this.fail(asError(e)));
    }
  }

  private fail(error: Error): void {
    if (this.stopped) return;
    if (error instanceof FencedError || hasCode(error, 'FENCED')) {
      this.fenced = error;
      this.stop();
    }
    this.o.sink.failed(error);
  }

  private schedulePoll(): void {
    const every = this.o.pollIntervalMs ?? 1000;
    if (every === 0 || this.stopped) return;
    this.pollTimer = this.clock.setTimeout(() => {
      this.pollTimer = undefined;
      this.catchUp()
        .catch((e: unknown) => {
          if (!(e instanceof FencedError)) {
            this.o.logger.warn({ error: String(e) }, 'keyed buffer: reading the queue failed');
          }
        })
        .finally(() => this.schedulePoll());
    }, every);
  }

  private stop(): void {
    this.stopped = true;
    this.clock.clearTimeout(this.pollTimer);
    this.pollTimer = undefined;
  }

  /**
   * Makes every append durable, applies the acknowledgements and closes
   * the queue; runs every step even when one fails, and throws the first
   * failure.
   */
  async close(): Promise<void> {
    this.stop();
    const errors: unknown[] = [];
    await this.producer.close().catch((e: unknown) => errors.push(e));
    await this.reading?.catch(() => undefined);
    await this.consumer.close().catch((e: unknown) => errors.push(e));
    await this.queue.close().catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw asError(errors[0]);
  }

  /** Stops at once: appends not yet durable and acknowledgements not yet applied are given up. */
  async destroy(error?: Error): Promise<void> {
    this.stop();
    await this.producer.destroy(error).catch(() => undefined);
    await this.consumer.destroy(error).catch(() => undefined);
    await this.queue.close().catch(() => undefined);
  }
}

/**
 * How a consumer reads and acknowledges, one implementation per layout:
 * the v1 manifest (one consumer, fenced by the manifest's epoch,
 * acknowledgement by dequeue) and the log (named subscriptions, each a cursor
 * object with its own epoch).
 */
import { sleep, type Clock } from '../clock.ts';
import {
  CorruptDataError,
  DataLossError,
  FencedError,
  InvalidArgumentError,
  OutcomeUnknownError,
  PreconditionFailedError,
} from '../errors.ts';
import { commitEnd, parseInlineLocation } from '../format/log-commit.ts';
import type { Cursor } from '../format/log-objects.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { describeEntry, fetchBatchObject, type BatchDescriptor } from '../queue/batch-fetch.ts';
import {
  DEFAULT_SUBSCRIPTION,
  type LogQueue,
  type StartAt,
  type Versioned,
} from '../queue/log-queue.ts';
import { fenced, type ManifestQueue } from '../queue/manifest-queue.ts';
import type { Queue } from '../queue/queue.ts';
import { backoffMs } from '../retry.ts';

/** What the consumer needs of a layout. */
export interface LayoutReader {
  /** The epoch this consumer holds (of the manifest, or of its subscription). */
  readonly epoch: number;
  /**
   * Descriptors of the batches after sequence `after`, from one read (some,
   * in order; none when caught up).
   *
   * @throws {FencedError} once a newer consumer took over.
   * @throws {DataLossError} once, when retention took batches not yet acknowledged.
   */
  read(after: number, signal: AbortSignal): Promise<BatchDescriptor[]>;
  /** The checked bytes of a batch object. */
  fetchObject(d: BatchDescriptor, signal: AbortSignal): Promise<Uint8Array>;
  /**
   * Records that every batch through `through` is acknowledged, as this
   * consumer; returns the batches still pending when known.
   *
   * @throws {FencedError} when a newer consumer took over.
   */
  acknowledge(through: number, signal: AbortSignal): Promise<number | undefined>;
}

/** The v1 layout: one manifest, one consumer at a time. */
export class ManifestReader implements LayoutReader {
  private constructor(
    readonly epoch: number,
    private readonly queue: Queue,
    private readonly manifest: ManifestQueue,
  ) {}

  /** Raises the manifest's epoch, fencing every earlier consumer. */
  static async open(
    queue: Queue,
    manifest: ManifestQueue,
    subscription: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<ManifestReader> {
    if (subscription !== undefined && subscription !== DEFAULT_SUBSCRIPTION) {
      throw new InvalidArgumentError(
        `the queue at "${queue.manifestPath}" has the v1 layout, which has exactly one consumer: subscription "${subscription}" needs the log layout (a new queue gets it; v1 stays for sharing a queue with the Rust implementation)`,
      );
    }
    // Refuse a data prefix that belongs to another manifest before writing anything.
    await queue.checkOwnership({ signal });
    return new ManifestReader(await manifest.fence(signal), queue, manifest);
  }

  async read(after: number, signal: AbortSignal): Promise<BatchDescriptor[]> {
    const { manifest } = await this.manifest.read(signal);
    if (manifest.epoch !== this.epoch) {
      throw fenced(this.queue.manifestPath, this.epoch, manifest.epoch);
    }
    return manifest.entries.filter((e) => e.sequence > after).map(describeEntry);
  }

  fetchObject(d: BatchDescriptor, signal: AbortSignal): Promise<Uint8Array> {
    return fetchBatchObject(this.queue.store, d, signal);
  }

  async acknowledge(through: number, signal: AbortSignal): Promise<number> {
    return (await this.manifest.dequeue(through, this.epoch, signal)).entries.length;
  }
}

/** Options of {@link LogReader.open}. */
export interface LogReaderOptions {
  subscription: string;
  startAt: StartAt;
  /** Batches at or below it count as acknowledged (resume after it). */
  lastAckedSequence?: number;
  /** Written into the cursor. */
  holder: string;
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
  /** Longest time between checks of the cursor's epoch while reading, in ms. */
  fenceCheckMs: number;
}

/** Commits read ahead per `read`, at most. */
const COMMITS_PER_READ = 16;

/** The log layout: a named subscription, read commit by commit. */
export class LogReader implements LayoutReader {
  private cursor: Versioned<Cursor>;
  /** The next commit to read. */
  private commit: number;
  /** The commit of each batch handed out and not yet acknowledged, by sequence. */
  private readonly commitOf = new Map<number, number>();
  private checkedAt = performance.now();

  private constructor(
    private readonly log: LogQueue,
    cursor: Versioned<Cursor>,
    private readonly o: LogReaderOptions,
  ) {
    this.cursor = cursor;
    this.commit = cursor.value.commit;
  }

  get epoch(): number {
    return this.cursor.value.epoch;
  }

  /** The subscription's position: the first sequence not acknowledged. */
  get nextSequence(): number {
    return this.cursor.value.next.sequence;
  }

  /**
   * Opens a subscription (creating the queue and the subscription if new)
   * and takes it over: its epoch goes up by one, fencing its previous holder
   * and nobody else.
   */
  static async open(
    log: LogQueue,
    o: LogReaderOptions,
    signal: AbortSignal | undefined,
  ): Promise<LogReader> {
    await log.ensureCreated(signal);
    let current = await log.createCursor(o.subscription, o.startAt, signal);
    for (let attempt = 1; ; attempt++) {
      const c = current.value;
      const resume =
        o.lastAckedSequence !== undefined && o.lastAckedSequence + 1 > c.next.sequence
          ? { sequence: o.lastAckedSequence + 1, index: 0 }
          : c.next;
      const next: Cursor = {
        ...c,
        epoch: c.epoch + 1,
        next: resume,
        updatedAtMs: o.clock.now(),
        holder: o.holder,
      };
      try {
        const version = await log.writeCursor(next, current.version, signal);
        return new LogReader(log, { value: next, version }, o);
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
        // Another consumer took it over at the same moment (or our write's answer was
        // lost): read again and raise above what is there.
        const again = await log.readCursor(o.subscription, signal);
        if (!again) current = await log.createCursor(o.subscription, o.startAt, signal);
        else current = again;
        await sleep(backoffMs(Math.min(attempt, 8), { baseDelayMs: 5, maxDelayMs: 50 }), {
          signal,
          clock: o.clock,
        });
      }
    }
  }

  async read(after: number, signal: AbortSignal): Promise<BatchDescriptor[]> {
    if (performance.now() - this.checkedAt >= this.o.fenceCheckMs) await this.checkHolder(signal);
    const out: BatchDescriptor[] = [];
    const from = Math.max(after + 1, this.cursor.value.next.sequence);
    for (let i = 0; i < COMMITS_PER_READ; i++) {
      const c = await this.log.readCommit(this.commit, signal);
      if (!c) {
        if (out.length > 0) break;
        const skipped = await this.overBoundary(from, signal);
        if (skipped) continue;
        break;
      }
      for (const b of c.batches) {
        if (b.entry.sequence < from) continue;
        out.push(describeEntry(b.entry));
        this.commitOf.set(b.entry.sequence, c.commit);
      }
      this.commit = c.commit + 1;
      if (commitEnd(c) <= from) continue;
      if (out.length > 0 && i >= 1) break;
    }
    return out;
  }

  /**
   * A missing commit is the end of the log, or below the boundary: collected.
   * Below the boundary, the read jumps to the boundary; if retention took
   * batches this subscription had not acknowledged, that is recorded in the
   * cursor and reported once, as a {@link DataLossError}.
   */
  private async overBoundary(from: number, signal: AbortSignal): Promise<boolean> {
    const { value: b } = await this.log.readBoundary(signal);
    if (this.commit >= b.firstCommit) return false;
    this.commit = b.firstCommit;
    const lastLost = Math.min(b.firstSequence, b.expiredBelow) - 1;
    if (from > lastLost) return true; // collected after every subscription had it: nothing lost
    const loss = { firstSequence: from, lastSequence: lastLost, reportedAtMs: this.o.clock.now() };
    await this.writeCursor(
      {
        next: { sequence: b.firstSequence, index: 0 },
        commit: b.firstCommit,
        lastLoss: loss,
      },
      signal,
    );
    this.o.metrics.increment(
      'buffer.retention_lost_batches',
      loss.lastSequence - loss.firstSequence + 1,
      { subscription: this.o.subscription },
    );
    throw new DataLossError(
      loss.firstSequence,
      loss.lastSequence,
      `subscription "${this.o.subscription}": retention deleted sequences ${loss.firstSequence} to ${loss.lastSequence} before they were acknowledged; reading continues at ${b.firstSequence}`,
    );
  }

  async fetchObject(d: BatchDescriptor, signal: AbortSignal): Promise<Uint8Array> {
    const inline = parseInlineLocation(this.log.root, d.location);
    if (!inline) return fetchBatchObject(this.log.store, d, signal);
    const c = await this.log.readCommit(inline.commit, signal);
    const bytes = c?.batches[inline.index]?.inline;
    if (!bytes) {
      throw new CorruptDataError(
        `inline batch "${d.location}" of sequence ${d.sequence} is missing (its commit was collected, or holds no such batch)`,
        d.location,
      );
    }
    return bytes;
  }

  async acknowledge(through: number, signal: AbortSignal): Promise<undefined> {
    const next = { sequence: through + 1, index: 0 };
    const commit = this.commitOf.get(through) ?? this.cursor.value.commit;
    if (through + 1 <= this.cursor.value.next.sequence) return undefined;
    await this.writeCursor({ next, commit }, signal);
    for (const seq of this.commitOf.keys()) if (seq <= through) this.commitOf.delete(seq);
    return undefined;
  }

  /** Writes the cursor as its holder; a newer epoch (or a deleted subscription) fences. */
  private async writeCursor(change: Partial<Cursor>, signal: AbortSignal): Promise<void> {
    for (;;) {
      const next: Cursor = { ...this.cursor.value, ...change, updatedAtMs: this.o.clock.now() };
      try {
        const version = await this.log.writeCursor(next, this.cursor.version, signal);
        this.cursor = { value: next, version };
        this.checkedAt = performance.now();
        return;
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
        const stored = await this.checkHolder(signal);
        // Still ours (our earlier write's answer was lost): write over what is there.
        this.cursor = stored;
      }
    }
  }

  /** Reads the cursor; throws FencedError when another consumer took the subscription over. */
  private async checkHolder(signal: AbortSignal): Promise<Versioned<Cursor>> {
    const stored = await this.log.readCursor(this.o.subscription, signal);
    this.checkedAt = performance.now();
    if (!stored) {
      throw new FencedError(
        `subscription "${this.o.subscription}" was deleted; this consumer can no longer read or acknowledge`,
      );
    }
    if (stored.value.epoch !== this.epoch) {
      throw new FencedError(
        `subscription "${this.o.subscription}": this consumer holds epoch ${this.epoch} but the cursor is at epoch ${stored.value.epoch}: a newer consumer took over (or it was reset); open a new Consumer to continue`,
      );
    }
    return stored;
  }
}

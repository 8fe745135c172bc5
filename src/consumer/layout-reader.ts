/**
 * How a consumer reads and acknowledges, one implementation per layout:
 * the v1 manifest (one consumer, fenced by the manifest's epoch,
 * acknowledgement by dequeue) and the log (named subscriptions, each a cursor
 * object with its own epoch).
 */
import { randomUUID } from 'node:crypto';
import { monotonicNow, sleep, type Clock, type ClockTimer } from '../clock.ts';
import {
  CorruptDataError,
  DataLossError,
  FencedError,
  InvalidArgumentError,
  OutcomeUnknownError,
  PreconditionFailedError,
} from '../errors.ts';
import {
  commitEnd,
  parseInlineLocation,
  slotStart,
  type Commit,
  type CommitBatch,
} from '../format/log-commit.ts';
import {
  MAX_SHARED_READERS,
  readerMap,
  type Cursor,
  type Position,
} from '../format/log-objects.ts';
import { isVoid, parseSlotLocation, slotKey } from '../format/log-slot.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import {
  checkBatchBytes,
  describeEntry,
  fetchBatchObject,
  fetchSlotBatch,
  type BatchDescriptor,
} from '../queue/batch-fetch.ts';
import {
  DEFAULT_SUBSCRIPTION,
  type LogQueue,
  type StartAt,
  type Versioned,
} from '../queue/log-queue.ts';
import { readReservation, SlotWaits, voidSlot } from '../queue/log-slots.ts';
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
  /**
   * Where reading resumes inside the first batch: the index of its first
   * entry not yet committed (0 but after a commit inside a batch, log only).
   */
  readonly startIndex: number;
  /**
   * Records, durably, that every entry before `index` of batch `sequence`
   * (and every batch before it) is done; the layouts that record whole
   * batches only (v1) do not have it.
   *
   * @throws {FencedError} when a newer consumer took over.
   */
  commitPosition?(sequence: number, index: number, signal: AbortSignal): Promise<void>;
  /**
   * Entries before this position were finished by some reader of the
   * subscription before this one opened (shared readers): handing them out
   * again is a redelivery. Equal to where this reader starts otherwise.
   */
  readonly doneBefore: Position;
  /** Ends this reader's part in its subscription (a shared reader leaves the cursor). */
  release?(signal: AbortSignal): Promise<void>;
  /** Stops the reader's timers without writing anything (destroy()). */
  stop?(): void;
  /**
   * Records, when the layout keeps such records, that a loss found by a fetch
   * is being reported to the application (so that it is not reported again).
   */
  recordLoss?(e: DataLossError, signal: AbortSignal): Promise<void>;
}

/** The v1 layout: one manifest, one consumer at a time. */
export class ManifestReader implements LayoutReader {
  /** v1 records whole batches: reading always starts at a batch's first entry. */
  readonly startIndex = 0;
  get doneBefore(): Position {
    return { sequence: 0, index: 0 };
  }
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
    // Refuse a data prefix that belongs to another manifest before writing anything; on a
    // new queue, claim it, so that a mistyped path shows at once to the first producer.
    await queue.checkOwnership({ signal, claim: true });
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
  /** Read without taking the subscription over (see `ConsumerOptions.shared`). */
  shared?: boolean;
  /** How long a silent shared reader holds the position back, in ms. */
  sharedReaderTimeoutMs?: number;
}

/** Commits read at once after one that holds batches to read (a backlog). */
const COMMITS_AHEAD = 4;

/**
 * Most bytes of slot batches handed out and not yet acknowledged that a
 * reader keeps for their fetches; past it the oldest are dropped, and their
 * fetch reads the slot again.
 */
const SLOT_BATCH_CACHE_BYTES = 16 * 1024 * 1024;

/**
 * How soon a reader looks again for a slot that holds back later commits, in
 * ms: first after this, then twice as long each time, up to
 * {@link SLOT_POLL_MAX_MS}.
 */
const SLOT_POLL_MS = 10;
const SLOT_POLL_MAX_MS = 100;

/** Most slot batches one read takes from one reservation (a reservation may hold thousands). */
const SLOT_BATCHES_PER_READ = 256;

/** The log layout: a named subscription, read commit by commit. */
export class LogReader implements LayoutReader {
  private cursor: Versioned<Cursor>;
  /**
   * The next commit to read; while {@link reservation} is set, the commit
   * whose reservation is being read (its own batches are taken).
   */
  private commit: number;
  /**
   * The reservation of commit {@link commit} that reading stands in, and its
   * next slot (docs/log-layout.md §7.4): set when a commit that reserves
   * sequences is taken, cleared once every slot of it is read (filled or
   * voided). A missing slot stops reading there: the producer may still
   * write it, so nothing after it (no later commit) is handed out before.
   */
  private reservation: { commit: Commit; nextSlot: number } | undefined;
  /** When this reader first found each missing slot (its own monotonic clock). */
  private readonly slotWaits: SlotWaits;
  /**
   * Inline bytes of slot batches handed out and not yet acknowledged, by
   * location, so that their fetches do not read the slot again for each
   * batch; at most {@link SLOT_BATCH_CACHE_BYTES} (oldest dropped first).
   */
  private readonly slotBatches = new Map<string, { sequence: number; bytes: Uint8Array }>();
  private slotBatchBytes = 0;
  /** The commit of each batch handed out and not yet acknowledged, by sequence. */
  private readonly commitOf = new Map<number, number>();
  /**
   * Commits read that hold inline batches not yet acknowledged: their batches
   * are fetched from here, not by reading the commit again for each.
   */
  private readonly inlineCommits = new Map<number, Commit>();
  /** Losses found by fetches are recorded one after another. */
  private losses: Promise<void> = Promise.resolve();
  /** When an idle read last looked at the boundary (monotonic ms). */
  private boundaryCheckedAt = -Infinity;
  startIndex: number;
  /** A shared reader's own position (the first entry it has not finished); the cursor's next otherwise. */
  private mine: Position;
  readonly doneBefore: Position;

  private constructor(
    private readonly log: LogQueue,
    cursor: Versioned<Cursor>,
    private readonly o: LogReaderOptions,
  ) {
    this.cursor = cursor;
    this.commit = cursor.value.commit;
    this.slotWaits = new SlotWaits(() => monotonicNow(o.clock));
    this.mine = (o.shared && cursor.value.readers?.[o.holder]?.next) || cursor.value.next;
    this.startIndex = this.mine.index;
    // Entries below the furthest progress any reader recorded were finished before.
    let done = this.mine;
    for (const r of Object.values(cursor.value.readers ?? {})) done = later(done, r.next);
    this.doneBefore = done;
  }

  get epoch(): number {
    return this.cursor.value.epoch;
  }

  /** Where this reader is: the first sequence it has not acknowledged. */
  get nextSequence(): number {
    return this.mine.sequence;
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
    if (o.shared) return LogReader.join(log, o, current, signal);
    for (let attempt = 1; ; attempt++) {
      const c = current.value;
      const ahead = o.lastAckedSequence !== undefined && o.lastAckedSequence + 1 > c.next.sequence;
      const resume = ahead ? { sequence: (o.lastAckedSequence as number) + 1, index: 0 } : c.next;
      // Resuming further on than the cursor: find the commit that holds it (by bisection).
      const commit = ahead ? await resumeCommit(log, resume.sequence, c.commit, signal) : c.commit;
      const next: Cursor = {
        ...c,
        epoch: c.epoch + 1,
        next: resume,
        commit,
        updatedAtMs: o.clock.now(),
        holder: o.holder,
        // Taking the subscription over fences its shared readers too: they leave it.
        readers: undefined,
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
    const out: BatchDescriptor[] = [];
    const from = Math.max(after + 1, this.mine.sequence);
    // Every read checks that the subscription is still this consumer's (a fenced
    // consumer reads nothing), alongside its first commit (or slot) read. A void is
    // written only once the check passed (see readSlots).
    const holder = this.checkHolder(signal);
    let c: Commit | undefined;
    let slotsDone: boolean | undefined;
    if (this.reservation) {
      // The holder check first: reading slots moves the reader's position, which must
      // not happen in a read that then fails (its batches would be passed over).
      await holder;
      slotsDone = await this.readSlots(from, out, signal, holder);
    } else {
      [c] = await Promise.all([this.log.readCommit(this.commit, signal), holder]);
    }
    for (;;) {
      if (slotsDone !== undefined) {
        const done = slotsDone;
        slotsDone = undefined;
        if (!done) {
          // A slot not written yet: nothing after it now. Unless its reservation was
          // collected (the boundary tells, as for a missing commit): then read on there.
          if (out.length > 0 || !(await this.overBoundary(from, signal))) break;
        } else if (out.length > 0) break;
        c = await this.log.readCommit(this.commit, signal);
        continue;
      }
      if (!c) {
        // The end of the log, or collected under a lagging cursor: the boundary tells
        // (looked at once per fenceCheckMs while idle; an empty read is only "not now").
        if (out.length > 0 || !(await this.overBoundary(from, signal))) break;
        c = await this.log.readCommit(this.commit, signal);
        continue;
      }
      this.take(c, from, out);
      c = undefined;
      if (this.reservation) {
        slotsDone = await this.readSlots(from, out, signal, holder);
        continue;
      }
      if (out.length > 0) break;
      // Commits wholly before `from` are passed over, however many there are.
      c = await this.log.readCommit(this.commit, signal);
    }
    if (out.length === 0 || this.reservation) return out;
    // A backlog? The next commit tells; if so, the following ones are read a few at once.
    // These reads are extra: one that fails ends this read early, and the next read
    // meets (and reports) whatever is wrong with that commit. A reservation read ahead
    // is read to its first missing slot, and reading stops there (never past it).
    const ahead = (n: number): Promise<Commit | undefined> =>
      this.log.readCommit(n, signal).catch(() => undefined);
    const next = await ahead(this.commit);
    if (!next || !(await this.takeAhead(next, from, out, signal, holder))) return out;
    const first = this.commit;
    const more = await Promise.all(
      Array.from({ length: COMMITS_AHEAD }, (_, i) => ahead(first + i)),
    );
    for (const m of more) {
      if (!m || m.commit !== this.commit) break;
      if (!(await this.takeAhead(m, from, out, signal, holder))) break;
    }
    signal.throwIfAborted();
    return out;
  }

  /**
   * Takes a commit read ahead and reads its reservation, if any; false when
   * reading must stop there (a slot missing, or a slot read failed: the next
   * read resumes at that slot).
   */
  private async takeAhead(
    c: Commit,
    from: number,
    out: BatchDescriptor[],
    signal: AbortSignal,
    holder: Promise<unknown>,
  ): Promise<boolean> {
    this.take(c, from, out);
    if (!this.reservation) return true;
    return this.readSlots(from, out, signal, holder).catch(() => false);
  }

  /** Adds a commit's batches from `from` on, and moves past it (or into its reservation). */
  private take(c: Commit, from: number, out: BatchDescriptor[]): void {
    let inline = false;
    for (const b of c.batches) {
      if (b.entry.sequence < from) continue;
      out.push(describeEntry(b.entry));
      this.commitOf.set(b.entry.sequence, c.commit);
      inline ||= b.inline !== undefined;
    }
    if (inline) this.inlineCommits.set(c.commit, c);
    // A reservation wholly before `from` holds nothing this reader wants: its slots are
    // not read (they may even be missing for good, with nobody left to void them).
    if ((c.reserved ?? 0) > 0 && commitEnd(c) > from) {
      this.commit = c.commit;
      this.reservation = { commit: c, nextSlot: slotStart(c) };
    } else {
      this.commit = c.commit + 1;
      this.reservation = undefined;
    }
  }

  /**
   * Reads the slots of the reservation reading stands in, in order from its
   * next slot, adding their batches from `from` on; true once the
   * reservation is read to its end (then reading moves to the next commit),
   * false at a slot missing now (reading resumes there). A slot this reader
   * has found missing for longer than `VOID_AFTER_MS` by its own clock is
   * voided, as this subscription's holder, once `holder` (the holder check
   * of this read) passed, and unless the reservation's commit is below the
   * boundary (collected: the caller's boundary read reports it).
   */
  private async readSlots(
    from: number,
    out: BatchDescriptor[],
    signal: AbortSignal,
    holder: Promise<unknown>,
  ): Promise<boolean> {
    try {
      return await this.walkSlots(from, out, signal, holder);
    } catch (e) {
      // What was taken (this read's commits, slots before the failure) is handed out, and
      // the pointer stays at the slot that failed: throwing now would lose those batches
      // (their commit and slots are past the pointer). The next read meets the error.
      if (out.length > 0) return false;
      throw e;
    }
  }

  private async walkSlots(
    from: number,
    out: BatchDescriptor[],
    signal: AbortSignal,
    holder: Promise<unknown>,
  ): Promise<boolean> {
    const r = this.reservation;
    if (!r) return true;
    const c = r.commit;
    // While waiting for a slot: whether a later commit was seen, and the next pause.
    let later = false;
    let pollMs = SLOT_POLL_MS;
    // Acknowledged, or reported lost, past its end meanwhile: nothing in it is wanted.
    if (from >= commitEnd(c)) return this.leaveReservation(c);
    for (;;) {
      // Read without voiding: a void is decided below, after the checks.
      const got = await readReservation(
        this.log.store,
        this.log.root,
        c,
        r.nextSlot,
        from,
        this.slotWaits,
        { signal, maxBatches: SLOT_BATCHES_PER_READ },
      );
      this.takeSlotBatches(c, got.batches, out);
      r.nextSlot = got.nextSlot;
      if (got.complete) return this.leaveReservation(c);
      // Stopped at the limit (it is checked before each slot read): the rest next time.
      if (got.batches.length >= SLOT_BATCHES_PER_READ) return false;
      const missing = got.nextSlot;
      if (!this.slotWaits.overdue(c.commit, missing)) {
        // Appends that resolved lie behind the gap when a later commit exists (its
        // producer is slow, stalled or dead): wait for the slot here, up to VOID_AFTER_MS,
        // rather than answer "nothing now" while they cannot be read. At the head, a gap
        // is only an append in progress: nothing now.
        if (got.batches.length > 0 || out.length > 0) return false;
        if (!later && !(await this.log.readCommit(c.commit + 1, signal))) return false;
        later = true;
        await sleep(pollMs, { signal, clock: this.o.clock });
        pollMs = Math.min(2 * pollMs, SLOT_POLL_MAX_MS);
        continue;
      }
      await holder;
      // A reservation collected under a lagging reader has its slots deleted: a void
      // there would be an object no collection deletes, and hide a loss.
      const { value: b } = await this.log.readBoundary(signal);
      if (c.commit < b.firstCommit) {
        this.boundaryCheckedAt = -Infinity;
        return false;
      }
      const slot = await voidSlot(this.log.store, this.log.root, c, missing, this.o.holder, signal);
      this.slotWaits.forget(c.commit, missing);
      // A collection may have passed the reservation between that boundary read and the
      // void (deleting a slot whose append had resolved): then the void stands where the
      // log has moved on, and passing it would hide that loss. As for a create that
      // lands late (§7.2, step 5): the boundary read after it tells.
      const after = (await this.log.readBoundary(signal)).value;
      if (c.commit < after.firstCommit) {
        if (isVoid(slot))
          await this.log.store.delete(slotKey(this.log.root, missing)).catch(() => undefined);
        this.boundaryCheckedAt = -Infinity;
        return false;
      }
      if (isVoid(slot)) {
        this.o.logger.warn(
          {
            subscription: this.o.subscription,
            commit: c.commit,
            firstSequence: slot.firstSequence,
            endSequence: slot.endSequence,
            writer: slot.writer,
          },
          'reservation voided: its producer did not write a slot in time',
        );
        return this.leaveReservation(c);
      }
      // Its producer's create won the race: its batches are there. Read on after them.
      this.takeSlotBatches(
        c,
        slot.batches.filter((x) => x.entry.sequence >= from),
        out,
      );
      r.nextSlot = slot.firstSequence + slot.batches.length;
      if (r.nextSlot >= commitEnd(c)) return this.leaveReservation(c);
    }
  }

  /** Reading moves past a reservation read to its end. */
  private leaveReservation(c: Commit): true {
    this.reservation = undefined;
    this.commit = c.commit + 1;
    return true;
  }

  /** Adds slot batches of commit `c`'s reservation, keeping their bytes for their fetches. */
  private takeSlotBatches(c: Commit, batches: CommitBatch[], out: BatchDescriptor[]): void {
    for (const b of batches) {
      out.push(describeEntry(b.entry));
      this.commitOf.set(b.entry.sequence, c.commit);
      if (!b.inline || this.slotBatches.has(b.entry.location)) continue;
      this.slotBatches.set(b.entry.location, { sequence: b.entry.sequence, bytes: b.inline });
      this.slotBatchBytes += b.inline.byteLength;
    }
    for (const [location, kept] of this.slotBatches) {
      if (this.slotBatchBytes <= SLOT_BATCH_CACHE_BYTES) break;
      this.slotBatches.delete(location);
      this.slotBatchBytes -= kept.bytes.byteLength;
    }
  }

  /** Drops the kept bytes of slot batches below `sequence`. */
  private dropSlotBatches(sequence: number): void {
    for (const [location, kept] of this.slotBatches) {
      if (kept.sequence >= sequence) continue;
      this.slotBatches.delete(location);
      this.slotBatchBytes -= kept.bytes.byteLength;
    }
  }

  /**
   * A missing commit is the end of the log, or below the boundary: collected.
   * Below the boundary, the read jumps to the boundary; batches from `from`
   * on that this subscription never had (retention took them, or a start or
   * reset raced a collection) are a loss: recorded with the cursor and
   * reported once, as a {@link DataLossError}.
   */
  private async overBoundary(from: number, signal: AbortSignal): Promise<boolean> {
    const now = monotonicNow(this.o.clock);
    if (now - this.boundaryCheckedAt < Math.min(this.o.fenceCheckMs, 1000)) return false;
    this.boundaryCheckedAt = now;
    const { value: b } = await this.log.readBoundary(signal);
    if (this.commit >= b.firstCommit) return false;
    this.commit = b.firstCommit;
    this.reservation = undefined; // collected with its commit
    if (from >= b.firstSequence) return true; // collected after this subscription had it
    const loss = this.unreported(from, b.firstSequence - 1);
    if (!loss) return true; // reported before (and recorded), by this holder or an earlier one
    const error = lossError(this.o.subscription, loss.first, loss.last, b.firstSequence);
    await this.recordLoss(error, signal);
    throw error;
  }

  /** The part of [first, last] not yet recorded as lost in the cursor (its tail is, if any). */
  private unreported(first: number, last: number): { first: number; last: number } | undefined {
    const recorded = this.cursor.value.lastLoss;
    if (!recorded || recorded.lastSequence < last || recorded.firstSequence > last) {
      return { first, last };
    }
    if (recorded.firstSequence <= first) return undefined;
    return { first, last: recorded.firstSequence - 1 };
  }

  /**
   * Records a loss being reported to the application in the cursor (without
   * moving it: batches handed out and not acknowledged stay where they are),
   * so that it is not reported again after a restart; counts it.
   */
  async recordLoss(e: DataLossError, signal: AbortSignal): Promise<void> {
    const turn = this.losses.then(() => undefined);
    let done: () => void = () => undefined;
    this.losses = new Promise<void>((r) => (done = r));
    await turn;
    try {
      const fresh = this.unreported(e.firstSequence, e.lastSequence);
      if (!fresh) return;
      const recorded = this.cursor.value.lastLoss;
      // One range is kept: the new one, joined to the one before when they touch.
      const joined =
        recorded && recorded.lastSequence + 1 >= fresh.first && recorded.firstSequence <= fresh.last
          ? Math.min(recorded.firstSequence, fresh.first)
          : fresh.first;
      await this.writeCursor(
        {
          lastLoss: {
            firstSequence: joined,
            lastSequence: Math.max(e.lastSequence, recorded?.lastSequence ?? -1),
            reportedAtMs: this.o.clock.now(),
          },
        },
        signal,
      );
      this.o.metrics.increment('buffer.retention_lost_batches', fresh.last - fresh.first + 1, {
        subscription: this.o.subscription,
      });
    } finally {
      done();
    }
  }

  async fetchObject(d: BatchDescriptor, signal: AbortSignal): Promise<Uint8Array> {
    try {
      if (parseSlotLocation(this.log.root, d.location)) {
        const kept = this.slotBatches.get(d.location);
        if (kept && kept.sequence === d.sequence) return checkBatchBytes(d, kept.bytes);
        return await fetchSlotBatch(this.log.store, this.log.root, d, signal);
      }
      const inline = parseInlineLocation(this.log.root, d.location);
      if (!inline) return await fetchBatchObject(this.log.store, d, signal);
      const c =
        this.inlineCommits.get(inline.commit) ?? (await this.log.readCommit(inline.commit, signal));
      const bytes = c?.batches[inline.index]?.inline;
      if (!bytes) {
        throw new CorruptDataError(
          `inline batch "${d.location}" of sequence ${d.sequence} is missing (its commit was collected, or holds no such batch)`,
          d.location,
        );
      }
      return bytes;
    } catch (e) {
      if (!(e instanceof CorruptDataError)) throw e;
      // Read ahead (or handed out) and then expired by retention: a loss, not corruption.
      // It is recorded when the consumer hands the error to the application.
      const { value: b } = await this.log.readBoundary(signal);
      if (d.sequence >= b.firstSequence) throw e;
      if (this.commit < b.firstCommit) {
        this.commit = b.firstCommit;
        this.reservation = undefined; // collected with its commit
      }
      throw lossError(this.o.subscription, d.sequence, b.firstSequence - 1, b.firstSequence);
    }
  }

  async acknowledge(through: number, signal: AbortSignal): Promise<undefined> {
    const next = { sequence: through + 1, index: 0 };
    const commit = this.commitOf.get(through) ?? this.cursor.value.commit;
    if (through + 1 <= this.mine.sequence) return undefined;
    // (a position inside batch `through` is below `through + 1`: the ack moves past it)
    await this.writeCursor({ next, commit }, signal);
    for (const seq of this.commitOf.keys()) if (seq <= through) this.commitOf.delete(seq);
    for (const [n, c] of this.inlineCommits) {
      if (c.firstSequence + c.batches.length - 1 <= through) this.inlineCommits.delete(n);
    }
    this.dropSlotBatches(through + 1);
    return undefined;
  }

  async commitPosition(sequence: number, index: number, signal: AbortSignal): Promise<void> {
    const commit = this.commitOf.get(sequence) ?? this.cursor.value.commit;
    await this.writeCursor({ next: { sequence, index }, commit }, signal);
    for (const seq of this.commitOf.keys()) if (seq < sequence) this.commitOf.delete(seq);
    this.dropSlotBatches(sequence);
  }

  /**
   * Joins a subscription as a shared reader: adds this reader (with a fresh
   * session) to the cursor's readers at the subscription's position, its
   * own recorded one if it rejoins under its id, or `lastAckedSequence` + 1
   * when further on. It names itself the holder, which fences a consumer that
   * held the subscription; the epoch stays.
   */
  private static async join(
    log: LogQueue,
    o: LogReaderOptions,
    current: Versioned<Cursor>,
    signal: AbortSignal | undefined,
  ): Promise<LogReader> {
    const c = current.value;
    const from = c.readers?.[o.holder]?.next ?? c.next;
    const ahead = o.lastAckedSequence !== undefined && o.lastAckedSequence + 1 > from.sequence;
    const start = ahead ? { sequence: (o.lastAckedSequence as number) + 1, index: 0 } : from;
    if (ahead) await resumeCommit(log, start.sequence, c.commit, signal);
    const reader = new LogReader(log, current, o);
    reader.mine = start;
    reader.startIndex = start.index;
    await reader.writeShared(start, signal ?? new AbortController().signal, { joining: true });
    reader.heartbeat();
    return reader;
  }

  /** This shared reader's session: set when it joins. */
  private session = '';
  /** For each other shared reader: its entry as last seen, and since when (monotonic ms) unchanged. */
  private readonly seen = new Map<
    string,
    { updatedAtMs: number; session: string; since: number }
  >();
  /** Shared writes run one after another (acknowledgements, heartbeats, leaving). */
  private sharedWrites: Promise<unknown> = Promise.resolve();
  private heartbeatTimer: ClockTimer | undefined;
  /** Aborts a heartbeat write in flight when the reader stops. */
  private readonly heartbeats = new AbortController();
  private stopped = false;

  /**
   * A shared reader's write: its own position (never moving back), or its
   * leaving (`undefined`), merged into the cursor as stored; readers whose
   * entries this reader has seen unchanged for longer than the timeout (by
   * its own monotonic clock, so skewed clocks between hosts do not matter)
   * are dropped; the cursor's `next` becomes the lowest position of the
   * readers left (never moving back).
   */
  private writeShared(
    mine: Position | undefined,
    signal: AbortSignal,
    change: Partial<Cursor> & { joining?: boolean } = {},
  ): Promise<void> {
    const run = this.sharedWrites.then(() => this.writeSharedNow(mine, signal, change));
    this.sharedWrites = run.catch(() => undefined);
    return run;
  }

  private async writeSharedNow(
    mine: Position | undefined,
    signal: AbortSignal,
    change: Partial<Cursor> & { joining?: boolean },
  ): Promise<void> {
    const { joining, ...extra } = change;
    const timeoutMs = this.o.sharedReaderTimeoutMs ?? 600_000;
    const session = joining ? randomUUID() : this.session;
    for (let attempt = 1; ; attempt++) {
      signal.throwIfAborted();
      const stored = this.cursor.value;
      const at = monotonicNow(this.o.clock);
      const readers = readerMap();
      for (const [id, r] of Object.entries(stored.readers ?? {})) {
        if (id === this.o.holder) continue;
        const last = this.seen.get(id);
        if (!last || last.updatedAtMs !== r.updatedAtMs || last.session !== r.session) {
          this.seen.set(id, { updatedAtMs: r.updatedAtMs, session: r.session, since: at });
        } else if (at - last.since > timeoutMs) {
          continue; // silent for longer than the timeout, as this reader measured it
        }
        readers[id] = r;
      }
      for (const id of this.seen.keys()) if (!(id in readers)) this.seen.delete(id);
      const own = stored.readers?.[this.o.holder];
      if (mine) {
        this.mine = own && own.session === session ? later(own.next, mine) : mine;
        // A change on every write, so that the others see this reader alive.
        const updatedAtMs = Math.max(this.o.clock.now(), (own?.updatedAtMs ?? 0) + 1);
        readers[this.o.holder] = { next: this.mine, updatedAtMs, session };
      }
      if (Object.keys(readers).length > MAX_SHARED_READERS) {
        throw new InvalidArgumentError(
          `subscription "${this.o.subscription}": more than ${MAX_SHARED_READERS} shared readers at once; readers that stopped without closing count until the others have seen them silent for sharedReaderTimeoutMs (${timeoutMs} ms)`,
        );
      }
      let low: Position | undefined;
      for (const r of Object.values(readers)) low = low ? earlier(low, r.next) : r.next;
      const next = later(stored.next, low ?? this.mine);
      const commit =
        next.sequence === this.mine.sequence
          ? (this.commitOf.get(next.sequence) ?? stored.commit)
          : stored.commit;
      // A joining reader names itself the holder, which fences a consumer that held
      // the subscription (it checks the holder; shared readers do not).
      const value: Cursor = {
        ...stored,
        ...extra,
        ...(joining ? { holder: this.o.holder } : {}),
        next,
        commit,
        readers,
        updatedAtMs: this.o.clock.now(),
      };
      try {
        const version = await this.log.writeCursor(value, this.cursor.version, signal);
        this.cursor = { value, version };
        this.session = session;
        return;
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
        // Another reader wrote meanwhile (or our answer was lost): merge into what is there.
        const again = await this.log.readCursor(this.o.subscription, signal);
        if (joining) {
          if (!again) throw deletedError(this.o.subscription);
          if (again.value.createdAtMs !== stored.createdAtMs) {
            throw recreatedError(this.o.subscription, again.value.holder);
          }
          // Our join landed (its answer was lost): it is ours now.
          if (again.value.readers?.[this.o.holder]?.session === session) {
            this.cursor = again;
            this.session = session;
            return;
          }
          this.cursor = again;
        } else {
          this.cursor = await this.checkHolder(signal);
        }
        // What is stored was just read: merge at once; back off only when races repeat.
        if (attempt > 2) {
          await sleep(backoffMs(Math.min(attempt, 6), { baseDelayMs: 2, maxDelayMs: 50 }), {
            signal,
            clock: this.o.clock,
          });
        }
      }
    }
  }

  /** Keeps a shared reader's entry fresh while it is open, however long its handlers take. */
  private heartbeat(): void {
    if (this.stopped) return;
    const everyMs = Math.max(1, Math.floor((this.o.sharedReaderTimeoutMs ?? 600_000) / 3));
    this.heartbeatTimer = this.o.clock.setTimeout(() => {
      this.heartbeatTimer = undefined;
      if (this.stopped) return;
      this.writeShared(this.mine, this.heartbeats.signal)
        .catch((e: unknown) => {
          // Fenced: the next read or acknowledgement says so; nothing to keep fresh.
          if (e instanceof FencedError) this.stop();
          else {
            this.o.logger.warn(
              { subscription: this.o.subscription, error: String(e) },
              'shared reader: keeping its entry fresh failed',
            );
          }
        })
        .finally(() => this.heartbeat());
    }, everyMs);
  }

  async release(signal: AbortSignal): Promise<void> {
    this.stop();
    if (!this.o.shared) return;
    try {
      await this.writeShared(undefined, signal);
    } catch (e) {
      // A fenced reader is no longer in the cursor: nothing to leave.
      if (!(e instanceof FencedError)) throw e;
    }
  }

  /** Stops timers (a destroyed consumer leaves its entry: it times out). */
  stop(): void {
    this.stopped = true;
    this.heartbeats.abort();
    this.o.clock.clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  /** Writes the cursor as its holder; a newer epoch (or a deleted subscription) fences. */
  private async writeCursor(change: Partial<Cursor>, signal: AbortSignal): Promise<void> {
    if (this.o.shared) {
      const { next, ...rest } = change;
      delete rest.commit;
      return this.writeShared(next ?? this.mine, signal, rest);
    }
    for (;;) {
      const next: Cursor = { ...this.cursor.value, ...change, updatedAtMs: this.o.clock.now() };
      // A holder's writes only ever move the cursor forward (acks and losses may race).
      const was = this.cursor.value.next;
      if (
        next.next.sequence < was.sequence ||
        (next.next.sequence === was.sequence && next.next.index < was.index)
      ) {
        next.next = this.cursor.value.next;
        next.commit = this.cursor.value.commit;
      }
      try {
        const version = await this.log.writeCursor(next, this.cursor.version, signal);
        this.cursor = { value: next, version };
        this.mine = next.next;
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
    if (!stored) throw deletedError(this.o.subscription);
    const mine = this.cursor.value;
    if (stored.value.createdAtMs !== mine.createdAtMs) {
      // Deleted and created again (its epochs start over): another subscription now.
      throw recreatedError(this.o.subscription, stored.value.holder);
    }
    if (!this.o.shared && stored.value.holder !== mine.holder) {
      throw new FencedError(
        `subscription "${this.o.subscription}": taken over by "${stored.value.holder}" (epoch ${stored.value.epoch}; this consumer held epoch ${this.epoch}); open a new Consumer to continue`,
      );
    }
    const entry = stored.value.readers?.[this.o.holder];
    if (this.o.shared && entry && entry.session !== this.session) {
      throw new FencedError(
        `subscription "${this.o.subscription}": another shared reader joined under this reader's instance id "${this.o.holder}" and took its place; open a new Consumer (with another instanceId) to continue`,
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

/**
 * The commit to resume reading at for `sequence` (ahead of the cursor): the
 * first commit holding a batch at or after it, found by bisection.
 */
async function resumeCommit(
  log: LogQueue,
  sequence: number,
  from: number,
  signal: AbortSignal | undefined,
): Promise<number> {
  const [{ value: b }, head] = await Promise.all([
    log.readBoundary(signal),
    log.discoverHead(signal),
  ]);
  if (sequence > head.endSequence) {
    throw new InvalidArgumentError(
      `lastAckedSequence ${sequence - 1} is past the end of the log (its last sequence is ${head.endSequence - 1}): resuming there would skip what is appended next`,
    );
  }
  const found = await log.searchCommits(
    Math.max(from, b.firstCommit),
    head.commit,
    (c) => commitEnd(c) > sequence,
    signal,
  );
  return found?.commit ?? head.commit + 1;
}

function lossError(subscription: string, first: number, last: number, next: number): DataLossError {
  return new DataLossError(
    first,
    last,
    `subscription "${subscription}": sequences ${first} to ${last} were deleted before this subscription read them (retention expired them, or a collection ran while the subscription was created or reset); reading continues at ${next}`,
  );
}

/** The later of two positions. */
function later(a: Position, b: Position): Position {
  return a.sequence > b.sequence || (a.sequence === b.sequence && a.index >= b.index) ? a : b;
}

/** The earlier of two positions. */
function earlier(a: Position, b: Position): Position {
  return later(a, b) === a && (a.sequence !== b.sequence || a.index !== b.index) ? b : a;
}

function deletedError(subscription: string): FencedError {
  return new FencedError(
    `subscription "${subscription}" was deleted; this consumer can no longer read or acknowledge`,
  );
}

function recreatedError(subscription: string, holder: string): FencedError {
  return new FencedError(
    `subscription "${subscription}" was deleted and created again (now held by "${holder}"); this consumer can no longer read or acknowledge`,
  );
}

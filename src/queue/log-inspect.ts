/**
 * Reading a log queue without changing it: its subscriptions with their lag,
 * and its batches from a position (the non-fencing reader).
 */
import { sleep, type Clock } from '../clock.ts';
import { InvalidArgumentError, NotFoundError } from '../errors.ts';
import { decodeBatch } from '../format/batch.ts';
import { commitEnd, slotStart, type Commit, type CommitBatch } from '../format/log-commit.ts';
import type { Cursor } from '../format/log-objects.ts';
import { decodeSlot, isVoid, slotKey, slotSequenceOf, type Slot } from '../format/log-slot.ts';
import { decodeTrailer } from '../format/trailer.ts';
import { describeEntry, fetchBatchObject } from './batch-fetch.ts';
import { readShared } from './fetch-cache.ts';
import type { Head, LogQueue } from './log-queue.ts';
import { readReservation, SlotWaits } from './log-slots.ts';
import type { Batch } from './queue.ts';

/** One subscription of a log queue, as {@link Queue.subscriptions} reports it. */
export interface SubscriptionInfo {
  name: string;
  /** The first position not acknowledged. */
  nextSequence: number;
  nextIndex: number;
  /** Raised by each consumer that took it over. */
  epoch: number;
  /** The consumer that wrote its cursor last. */
  holder: string;
  /**
   * Batches, entries and bytes appended and not yet acknowledged, slot
   * batches included. `lagBatches` counts sequences: the empty ones of a
   * reservation (voided, or not written yet) are left out in the reservation
   * holding the position and in the head's, not in those between.
   */
  lagBatches: number;
  lagEntries: number;
  lagBytes: number;
  /** Age of the oldest entry not acknowledged (by its ingestion time), or null when caught up. */
  oldestUnackedAgeMs: number | null;
  createdAtMs: number;
  updatedAtMs: number;
  /** The last range retention took from under it, once reported. */
  lastLoss: Cursor['lastLoss'] | null;
  /** Shared readers recorded in the cursor (see `ConsumerOptions.shared`), by instance id: each one's position and last write. */
  sharedReaders: NonNullable<Cursor['readers']>;
}

/** Bytes and records of the log before a commit: its running totals less its own batches. */
export function totalsBefore(c: Commit): { bytes: number; records: number } {
  let bytes = 0;
  let records = 0;
  for (const b of c.batches) {
    bytes += decodeTrailer(b.entry.extension)?.batchSizeBytes ?? b.inline?.byteLength ?? 0;
    records += b.records;
  }
  return { bytes: c.totalBytes - bytes, records: c.totalRecords - records };
}

/** The commit holding `sequence`, searching from `from` (at or before it); undefined past the head. */
export async function commitHolding(
  log: LogQueue,
  sequence: number,
  from: number,
  head: Head,
  signal?: AbortSignal,
): Promise<Commit | undefined> {
  if (sequence >= head.endSequence) return undefined;
  const { value: b } = await log.readBoundary(signal);
  const start = Math.max(from, b.firstCommit);
  const first = await log.readCommit(start, signal);
  if (first && first.firstSequence <= sequence && sequence < commitEnd(first)) return first;
  return log.searchCommits(start, head.commit, (c) => commitEnd(c) > sequence, signal);
}

/**
 * The batch at `sequence` of commit `c`: one of its own, or one in a slot of
 * its reservation (read in order from the reservation's start, never
 * voiding); undefined when the sequence holds no batch now (an empty
 * sequence after a void, a slot not written yet, or outside the commit).
 *
 * @throws {CorruptDataError} when a slot does not decode or is another reservation's.
 */
export async function batchAt(
  log: LogQueue,
  c: Commit,
  sequence: number,
  signal?: AbortSignal,
): Promise<CommitBatch | undefined> {
  if (sequence < c.firstSequence || sequence >= commitEnd(c)) return undefined;
  if (sequence < slotStart(c)) return c.batches[sequence - c.firstSequence];
  const read = await readReservation(
    log.store,
    log.root,
    c,
    slotStart(c),
    sequence,
    new SlotWaits(() => 0),
    { ...(signal ? { signal } : {}), maxBatches: 1 },
  );
  const first = read.batches[0];
  return first?.entry.sequence === sequence ? first : undefined;
}

/**
 * Most slot objects one lag computation ({@link subscriptionInfos}) reads.
 * Slots are listed with their sizes (one listing of `{root}/slots/`); the
 * first ones from each subscription's position are read for exact bytes
 * (trailer sizes) and entries, and past this many reads a slot counts by its
 * object's size (a little more than its batches: its header and entries)
 * and adds no entries. Reads are shared between the subscriptions of a call.
 */
const LAG_SLOT_READS = 256;

/** The slots of a log as listed once, with the reads of them shared within one computation. */
class SlotBook {
  private readonly reads = new Map<number, Promise<Slot | undefined>>();

  private constructor(
    private readonly log: LogQueue,
    /** Listed slot sequences, ascending, with their objects' sizes. */
    readonly listed: { sequence: number; sizeBytes: number }[],
    private readonly signal: AbortSignal | undefined,
  ) {}

  static async list(log: LogQueue, signal?: AbortSignal): Promise<SlotBook> {
    const listed: { sequence: number; sizeBytes: number }[] = [];
    for await (const m of log.store.list(`${log.root}/slots/`, signal ? { signal } : {})) {
      const sequence = slotSequenceOf(log.root, m.key);
      if (sequence !== undefined) listed.push({ sequence, sizeBytes: m.size });
    }
    listed.sort((a, b) => a.sequence - b.sequence);
    return new SlotBook(log, listed, signal);
  }

  /** Whether the listing holds a slot at `sequence`. */
  has(sequence: number): boolean {
    return this.listed[this.index(sequence)]?.sequence === sequence;
  }

  /** Position of the first listed slot at or after `sequence`. */
  index(sequence: number): number {
    let lo = 0;
    let hi = this.listed.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.listed[mid]?.sequence ?? Infinity) < sequence) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * The slot at `sequence` (undefined when gone since the listing), or
   * `'unread'` once the computation used up its reads.
   */
  read(sequence: number): Promise<Slot | undefined> | 'unread' {
    const known = this.reads.get(sequence);
    if (known) return known;
    if (this.reads.size >= LAG_SLOT_READS) return 'unread';
    const key = slotKey(this.log.root, sequence);
    const read = readShared(this.log.store, key, this.signal).then(
      (bytes) => withoutBytes(decodeSlot(bytes, key, sequence, this.log.root)),
      (e: unknown) => {
        if (e instanceof NotFoundError) return undefined;
        throw e;
      },
    );
    this.reads.set(sequence, read);
    return read;
  }

  /**
   * Where the filled slots of `c`'s reservation end (the first slot missing
   * or void), walking the listing and the reads; undefined when unknown
   * (reads used up) or the commit reserves nothing.
   */
  async filledEnd(c: Commit): Promise<number | undefined> {
    const end = commitEnd(c);
    let s = slotStart(c);
    if (s >= end) return undefined;
    while (s < end) {
      if (!this.has(s)) return s;
      const read = this.read(s);
      if (read === 'unread') return undefined;
      const slot = await read;
      if (!slot || isVoid(slot)) return s;
      s = slot.firstSequence + slot.batches.length;
    }
    return end;
  }
}

/**
 * A slot without its batches' bytes: what lag needs (entries, trailers,
 * records) in a few dozen bytes a batch, so that the reads kept stay small.
 */
function withoutBytes(slot: Slot): Slot {
  return {
    ...slot,
    // (A batch without Spillway's trailer then counts 0 bytes, as in retention, §4.1.)
    batches: slot.batches.map((b) => ({ entry: b.entry, records: b.records })),
  };
}

/**
 * What the slot batches from `next` on add to a subscription's lag: bytes
 * and entries of the listed slots at or after it (and of the slot that holds
 * it, when that one starts below it), below `endSequence`; and the batch at
 * `next` when a slot holds it.
 */
async function slotLag(
  book: SlotBook,
  holding: Commit | undefined,
  next: number,
  endSequence: number,
): Promise<{ bytes: number; records: number; first?: CommitBatch }> {
  let bytes = 0;
  let records = 0;
  let first: CommitBatch | undefined;
  let i = book.index(next);
  // The slot holding `next` may start below it, in the reservation of the commit holding it.
  const below = book.listed[i - 1];
  if (holding && below && below.sequence >= slotStart(holding)) i--;
  for (; i < book.listed.length; i++) {
    const listed = book.listed[i] as { sequence: number; sizeBytes: number };
    if (listed.sequence >= endSequence) break;
    const read = book.read(listed.sequence);
    if (read === 'unread') {
      if (listed.sequence >= next) bytes += listed.sizeBytes;
      continue;
    }
    const slot = await read;
    for (const b of slot?.batches ?? []) {
      if (b.entry.sequence < next) continue;
      if (b.entry.sequence === next) first = b;
      bytes += decodeTrailer(b.entry.extension)?.batchSizeBytes ?? b.inline?.byteLength ?? 0;
      records += b.records;
    }
  }
  return { bytes, records, ...(first ? { first } : {}) };
}

/** Every subscription with its lag. */
export async function subscriptionInfos(
  log: LogQueue,
  nowMs: number,
  signal?: AbortSignal,
): Promise<SubscriptionInfo[]> {
  const head = await log.discoverHead(signal);
  // Commit totals leave slot batches out: those come from the slots themselves.
  const [headCommit, book] = await Promise.all([
    head.commit >= 0 ? log.readCommit(head.commit, signal) : undefined,
    SlotBook.list(log, signal),
  ]);
  const out: SubscriptionInfo[] = [];
  for (const name of await log.subscriptions(signal)) {
    const cursor = (await log.readCursor(name, signal))?.value;
    if (!cursor) continue;
    const next = cursor.next.sequence;
    const info: SubscriptionInfo = {
      name,
      nextSequence: next,
      nextIndex: cursor.next.index,
      epoch: cursor.epoch,
      holder: cursor.holder,
      lagBatches: Math.max(0, head.endSequence - next),
      lagEntries: 0,
      lagBytes: 0,
      oldestUnackedAgeMs: null,
      createdAtMs: cursor.createdAtMs,
      updatedAtMs: cursor.updatedAtMs,
      lastLoss: cursor.lastLoss ?? null,
      sharedReaders: cursor.readers ?? {},
    };
    const holding = await commitHolding(log, next, cursor.commit, head, signal);
    if (holding) {
      const before = totalsBefore(holding);
      let bytes = before.bytes;
      let records = before.records;
      for (const b of holding.batches) {
        if (b.entry.sequence >= next) break;
        bytes += decodeTrailer(b.entry.extension)?.batchSizeBytes ?? 0;
        records += b.records;
      }
      const slots = await slotLag(book, holding, next, head.endSequence);
      info.lagBytes = Math.max(0, head.totalBytes - bytes + slots.bytes);
      info.lagEntries = Math.max(
        0,
        head.totalRecords - records + slots.records - cursor.next.index,
      );
      // Empty sequences (after a void, or not written yet) of the reservations at both ends.
      const ends = new Map<number, Commit>([[holding.commit, holding]]);
      if (headCommit) ends.set(headCommit.commit, headCommit);
      for (const c of ends.values()) {
        const filled = await book.filledEnd(c);
        if (filled === undefined) continue;
        info.lagBatches -= Math.max(0, commitEnd(c) - Math.max(next, filled, slotStart(c)));
      }
      info.lagBatches = Math.max(0, info.lagBatches);
      const batch = holding.batches[next - holding.firstSequence] ?? slots.first;
      const item = batch?.entry.metadata.filter((m) => m.startIndex <= cursor.next.index).at(-1);
      if (item) info.oldestUnackedAgeMs = Math.max(0, nowMs - item.ingestionTimeMs);
    }
    out.push(info);
  }
  return out;
}

/** Most slot batches the peek reads from a reservation at once. */
const PEEK_SLOT_BATCHES = 64;

/** Options of {@link peekLog}. */
export interface LogPeekOptions {
  fromSequence?: number;
  follow: boolean;
  pollIntervalMs: number;
  maxBatchBytes: number;
  clock: Clock;
  signal?: AbortSignal;
}

/**
 * Batches in order from `fromSequence` (default: the oldest retained),
 * without cursors: nothing is acknowledged and no subscription is fenced.
 *
 * @throws {InvalidArgumentError} when `fromSequence` is past the end of the log.
 */
export async function* peekLog(log: LogQueue, o: LogPeekOptions): AsyncIterable<Batch> {
  const { signal } = o;
  const head = await log.discoverHead(signal);
  if (o.fromSequence !== undefined && o.fromSequence > head.endSequence) {
    throw new InvalidArgumentError(
      `fromSequence ${o.fromSequence} is past the end of the queue (its next sequence is ${head.endSequence}); expected at most ${head.endSequence}`,
    );
  }
  const { value: b } = await log.readBoundary(signal);
  let next = Math.max(o.fromSequence ?? 0, b.firstSequence);
  let commit =
    (await commitHolding(log, next, b.firstCommit, head, signal))?.commit ?? head.commit + 1;
  // The reservation being read (its commit's own batches given), and its next slot. A
  // missing slot stops the peek there, as a missing commit does: it never voids.
  let reservation: { c: Commit; nextSlot: number } | undefined;
  const waits = new SlotWaits(() => 0);
  const decoded = async (cb: CommitBatch): Promise<Batch> => {
    const d = describeEntry(cb.entry);
    const body = cb.inline ?? (await fetchBatchObject(log.store, d, signal));
    const { records } = await decodeBatch(body, d.location, { maxBatchBytes: o.maxBatchBytes });
    return { sequence: d.sequence, location: d.location, entries: records, metadata: d.metadata };
  };
  /** Waits for more, or false when not following. */
  const idle = async (): Promise<boolean> => {
    if (!o.follow) return false;
    try {
      await sleep(o.pollIntervalMs, { signal, clock: o.clock });
      return true;
    } catch {
      return false;
    }
  };
  while (!signal?.aborted) {
    if (reservation) {
      const { c } = reservation;
      if (next >= commitEnd(c)) {
        reservation = undefined;
        commit = c.commit + 1;
        continue;
      }
      const read = await readReservation(
        log.store,
        log.root,
        c,
        reservation.nextSlot,
        next,
        waits,
        {
          ...(signal ? { signal } : {}),
          maxBatches: PEEK_SLOT_BATCHES,
        },
      );
      for (const cb of read.batches) {
        if (signal?.aborted) return;
        yield await decoded(cb);
        next = cb.entry.sequence + 1;
      }
      reservation.nextSlot = read.nextSlot;
      if (read.complete) {
        reservation = undefined;
        commit = c.commit + 1;
        continue;
      }
      if (read.batches.length >= PEEK_SLOT_BATCHES) continue;
      // A slot missing: not written yet, or collected with its commit.
      const { value: now } = await log.readBoundary(signal);
      if (c.commit < now.firstCommit) {
        reservation = undefined;
        commit = now.firstCommit;
        next = Math.max(next, now.firstSequence);
        continue;
      }
      if (!(await idle())) return;
      continue;
    }
    const c = await log.readCommit(commit, signal);
    if (!c) {
      const { value: now } = await log.readBoundary(signal);
      if (commit < now.firstCommit) {
        // Collected while we read: go on from what is kept.
        commit = now.firstCommit;
        next = Math.max(next, now.firstSequence);
        continue;
      }
      if (!(await idle())) return;
      continue;
    }
    for (const cb of c.batches) {
      if (cb.entry.sequence < next) continue;
      if (signal?.aborted) return;
      yield await decoded(cb);
      next = cb.entry.sequence + 1;
    }
    if ((c.reserved ?? 0) > 0 && commitEnd(c) > next) {
      reservation = { c, nextSlot: slotStart(c) };
    } else {
      commit = c.commit + 1;
    }
  }
}

/**
 * A log subscription read over HTTP without a lease: every read starts at
 * the subscription's position (its cursor's `next`, the first entry not
 * acknowledged) and changes nothing, and an acknowledgement moves that
 * position forward. Clients sharing a subscription share its position: they
 * read the same entries until one acknowledges them.
 *
 * Why not the library's readers: a `Consumer` keeps what it handed out in
 * memory and takes the subscription over (its open fences the previous
 * holder; a shared reader names itself holder, which fences a consumer
 * that held it), so two GETs would get different entries and a library
 * consumer of the same subscription would be fenced. `Queue.peek` reads
 * without fencing but by whole batches from a sequence, and finds its start
 * with several reads. Here a read is the cursor (one GET) and the commits
 * from the cursor's commit on, as the non-fencing peek of docs/log-layout.md
 * §7.4 reads them, starting inside a batch when the position is; an
 * acknowledgement is the same conditional cursor write as a holder's
 * position commit (§7.6), made over the version read and raising `next`
 * only, with the epoch and the holder unchanged, so it fences nobody.
 */
import type { Clock } from '../clock.ts';
import { CorruptDataError, OutcomeUnknownError, PreconditionFailedError } from '../errors.ts';
import { decodeBatch, DEFAULT_MAX_BATCH_BYTES } from '../format/batch.ts';
import { commitEnd, slotStart, type Commit, type CommitBatch } from '../format/log-commit.ts';
import { comparePositions, type Cursor, type Position } from '../format/log-objects.ts';
import { isVoid, slotKey } from '../format/log-slot.ts';
import { describeEntry, fetchBatchObject } from '../queue/batch-fetch.ts';
import { batchAt, commitHolding } from '../queue/log-inspect.ts';
import type { LogQueue, Versioned } from '../queue/log-queue.ts';
import { readReservation, SlotWaits, voidSlot } from '../queue/log-slots.ts';
import { HttpError } from './http-error.ts';

/** One entry as read, with its position. */
export interface PositionedEntry {
  position: Position;
  data: Uint8Array;
  /** When its `produce()` call was buffered, by the producer's clock (ms since the Unix epoch). */
  ingestionTimeMs: number;
}

/** Where a read stands: the first position not read, and a commit at or before it. */
export interface ReadPoint {
  next: Position;
  commit: number;
}

/**
 * Voiding by an HTTP reader (docs/log-layout.md §7.4): a slot its reads
 * have found missing for longer than `VOID_AFTER_MS` by `waits` (one per
 * queue, kept across reads, on the server's monotonic clock) is voided as
 * `voidAs`. Without it, reads wait for a missing slot for as long as it is
 * missing (a library consumer of the queue voids it in time).
 */
export interface SlotVoiding {
  waits: SlotWaits;
  voidAs: string;
}

/** What {@link readEntries} returns. */
export interface ReadResult {
  entries: PositionedEntry[];
  /** Where the next read goes on. */
  point: ReadPoint;
  /** Sequences deleted (retention) before this read reached them, passed over. */
  lost?: { firstSequence: number; lastSequence: number };
}

/**
 * Up to `max` entries from `point` on, in order, reading commits from
 * `point.commit` (commits wholly before `point.next` are passed over). A
 * missing commit is the end of the log, unless the boundary is above it:
 * then reading jumps to the boundary, and sequences before it that were
 * not read are reported as `lost`. Stops at the end of the log, at `max`
 * entries (possibly inside a batch), or after the first commit that gave
 * entries once at least one was found and `max` is reached.
 *
 * @throws {CorruptDataError} for a batch that is missing while it should be
 * there, or does not match its commit.
 */
export async function readEntries(
  log: LogQueue,
  point: ReadPoint,
  max: number,
  signal?: AbortSignal,
  voiding?: SlotVoiding,
): Promise<ReadResult> {
  const entries: PositionedEntry[] = [];
  let next = point.next;
  let commit = point.commit;
  let lost: ReadResult['lost'];
  const loss = (
    firstSequence: number,
    boundary: { firstSequence: number; firstCommit: number },
  ) => {
    lost = {
      firstSequence: lost?.firstSequence ?? firstSequence,
      lastSequence: boundary.firstSequence - 1,
    };
    next = { sequence: boundary.firstSequence, index: 0 };
    commit = Math.max(commit, boundary.firstCommit);
  };
  while (entries.length < max) {
    const c = await log.readCommit(commit, signal);
    if (!c) {
      const { value: b } = await log.readBoundary(signal);
      if (commit >= b.firstCommit) break; // the end of the log: nothing now
      // Collected: what is kept starts at the boundary.
      if (next.sequence < b.firstSequence) loss(next.sequence, b);
      else commit = b.firstCommit;
      continue;
    }
    const stopped = await takeCommit(log, c, next, max, entries, signal, voiding).catch(
      async (e: unknown) => {
        // A batch deleted under the read (retention) is a loss, not corruption.
        if (!(e instanceof CorruptDataError)) throw e;
        const { value: b } = await log.readBoundary(signal);
        if (next.sequence >= b.firstSequence) throw e;
        loss(next.sequence, b);
        return 'lost' as const;
      },
    );
    if (stopped === 'lost') continue;
    if (stopped && 'missingSlot' in stopped) {
      // A slot of its reservation not written yet: nothing after it now (the next read
      // starts in this commit again). Unless it was collected with its commit.
      next = stopped.next;
      if (entries.length > 0) break;
      const { value: b } = await log.readBoundary(signal);
      if (c.commit >= b.firstCommit) break;
      if (next.sequence < b.firstSequence) loss(next.sequence, b);
      else commit = b.firstCommit;
      continue;
    }
    if (stopped) {
      // Full inside this commit: the next read starts in it again.
      next = stopped;
      break;
    }
    // Read to its end, reservation included (a void ends it: the rest holds no batch).
    const end = { sequence: commitEnd(c), index: 0 };
    if (comparePositions(end, next) > 0) next = end;
    commit = c.commit + 1;
  }
  return { entries, point: { next, commit }, ...(lost ? { lost } : {}) };
}

/**
 * Adds the entries of commit `c` from `from` on to `out`, up to `max` in
 * all, then those of the slots of its reservation, in order; returns the
 * position where it stopped when full, `{ missingSlot, next }` at a slot of
 * the reservation that is missing now (with the position after what was
 * taken), or undefined when it took all of it.
 */
async function takeCommit(
  log: LogQueue,
  c: Commit,
  from: Position,
  max: number,
  out: PositionedEntry[],
  signal: AbortSignal | undefined,
  voiding: SlotVoiding | undefined,
): Promise<Position | { missingSlot: number; next: Position } | undefined> {
  let at = from;
  for (const b of c.batches) {
    const stopped = await takeBatch(log, b, at, max, out, signal);
    if (stopped) return stopped;
    if (b.entry.sequence >= at.sequence) at = { sequence: b.entry.sequence + 1, index: 0 };
  }
  const end = commitEnd(c);
  if (end === slotStart(c) || at.sequence >= end) return undefined;
  // Slot by slot (one read holds one slot's batches), never past one that is missing.
  const waits = voiding?.waits ?? new SlotWaits(() => 0);
  let slot = slotStart(c);
  while (slot < end) {
    const read = await readReservation(log.store, log.root, c, slot, at.sequence, waits, {
      ...(signal ? { signal } : {}),
      maxBatches: 1,
    });
    for (const b of read.batches) {
      const stopped = await takeBatch(log, b, at, max, out, signal);
      if (stopped) return stopped;
      at = { sequence: b.entry.sequence + 1, index: 0 };
    }
    if (read.complete) return undefined;
    if (read.batches.length > 0) {
      slot = read.nextSlot;
      continue;
    }
    const missing = read.nextSlot;
    if (!voiding || !waits.overdue(c.commit, missing)) return { missingSlot: missing, next: at };
    // Overdue: void it, unless it was collected with its commit (a void there would be
    // an object no collection deletes; the caller's boundary read reports the loss).
    const { value: b } = await log.readBoundary(signal);
    if (c.commit < b.firstCommit) return { missingSlot: missing, next: at };
    const made = await voidSlot(log.store, log.root, c, missing, voiding.voidAs, signal);
    waits.forget(c.commit, missing);
    // A collection that passed the reservation meanwhile: the void stands where the log
    // moved on; the caller's boundary read reports the loss (docs/log-layout.md §7.4).
    const { value: after } = await log.readBoundary(signal);
    if (c.commit < after.firstCommit) {
      if (isVoid(made)) await log.store.delete(slotKey(log.root, missing)).catch(() => undefined);
      return { missingSlot: missing, next: at };
    }
    if (isVoid(made)) return undefined;
    slot = missing; // its producer's create won: read it
  }
  return undefined;
}

/**
 * Adds the entries of batch `b` from `from` on to `out`, up to `max` in
 * all; returns the position where it stopped, or undefined when it took
 * all of it (or it lies before `from`).
 */
async function takeBatch(
  log: LogQueue,
  b: CommitBatch,
  from: Position,
  max: number,
  out: PositionedEntry[],
  signal: AbortSignal | undefined,
): Promise<Position | undefined> {
  const sequence = b.entry.sequence;
  if (sequence < from.sequence) return undefined;
  const start = sequence === from.sequence ? from.index : 0;
  if (start >= b.records) return undefined;
  if (out.length >= max) return { sequence, index: start };
  const d = describeEntry(b.entry);
  const body = b.inline ?? (await fetchBatchObject(log.store, d, signal));
  const { records } = await decodeBatch(body, d.location, {
    maxBatchBytes: DEFAULT_MAX_BATCH_BYTES,
  });
  // Metadata items are in order of their start index: one walk along them.
  let item = 0;
  let index = start;
  for (; index < records.length && out.length < max; index++) {
    while ((d.metadata[item + 1]?.startIndex ?? Infinity) <= index) item++;
    out.push({
      position: { sequence, index },
      data: records[index] as Uint8Array,
      ingestionTimeMs: d.metadata[item]?.ingestionTimeMs ?? 0,
    });
  }
  if (index < records.length) return { sequence, index };
  return undefined;
}

/**
 * Acknowledges the entry at `position` and everything before it: raises
 * the subscription's position to the entry after it (the next batch's
 * first when it is the last of its batch), unless the subscription is
 * there already. A conditional write over the cursor as read, with the
 * epoch, the holder and the shared readers unchanged; after a lost race or
 * an unknown outcome it reads the cursor again and decides again, so a
 * retry, a concurrent acknowledgement and a lost answer all end in the
 * same place, and the position never moves back.
 *
 * @returns the subscription's position after the call.
 * @throws {HttpError} 404 when the subscription does not exist; 400 when
 * no entry exists at `position`.
 */
export async function acknowledge(
  log: LogQueue,
  subscription: string,
  position: Position,
  clock: Clock,
  signal?: AbortSignal,
): Promise<Position> {
  const stored = await log.readCursor(subscription, signal);
  if (!stored) throw noSubscription(subscription);
  if (comparePositions(position, stored.value.next) < 0) return stored.value.next;
  const head = await log.discoverHead(signal);
  if (position.sequence >= head.endSequence) {
    throw new HttpError(
      400,
      'BAD_REQUEST',
      `no entry at position ${position.sequence}:${position.index}: the queue's next sequence is ${head.endSequence}`,
    );
  }
  const holding = await commitHolding(log, position.sequence, stored.value.commit, head, signal);
  if (!holding) {
    // Collected meanwhile (retention): nothing there to check; acknowledging past it is harmless.
    return raise(
      log,
      stored,
      { sequence: position.sequence + 1, index: 0 },
      undefined,
      clock,
      signal,
    );
  }
  // In a slot of the commit's reservation, or one of its own batches.
  const batch = await batchAt(log, holding, position.sequence, signal);
  if (!batch) {
    throw new HttpError(
      400,
      'BAD_REQUEST',
      `no entry at position ${position.sequence}:${position.index}: sequence ${position.sequence} holds no batch (reserved by commit ${holding.commit}, and voided or not written yet)`,
    );
  }
  if (position.index >= batch.records) {
    throw new HttpError(
      400,
      'BAD_REQUEST',
      `no entry at position ${position.sequence}:${position.index}: batch ${position.sequence} holds ${batch.records} entries`,
    );
  }
  const target =
    position.index + 1 >= batch.records
      ? { sequence: position.sequence + 1, index: 0 }
      : { sequence: position.sequence, index: position.index + 1 };
  return raise(log, stored, target, holding.commit, clock, signal);
}

async function raise(
  log: LogQueue,
  read: Versioned<Cursor>,
  target: Position,
  commit: number | undefined,
  clock: Clock,
  signal: AbortSignal | undefined,
): Promise<Position> {
  let stored = read;
  for (;;) {
    if (comparePositions(target, stored.value.next) <= 0) return stored.value.next;
    const value: Cursor = {
      ...stored.value,
      next: target,
      commit: commit ?? stored.value.commit,
      updatedAtMs: clock.now(),
    };
    try {
      await log.writeCursor(value, stored.version, signal);
      return target;
    } catch (e) {
      if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
      const again = await log.readCursor(stored.value.subscription, signal);
      if (!again) throw noSubscription(stored.value.subscription);
      stored = again;
    }
  }
}

function noSubscription(name: string): HttpError {
  return new HttpError(404, 'NOT_FOUND', `no subscription "${name}"`);
}

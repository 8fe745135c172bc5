/**
 * Slots of the log layout (docs/log-layout.md §4.7, §7.2 "Reservations",
 * §7.4): reading a reservation's slots in order, and voiding one that a
 * reader waited for too long. Shared by the readers, the peek, the
 * collector's accounting and the command line.
 */
import {
  CorruptDataError,
  NotFoundError,
  OutcomeUnknownError,
  PreconditionFailedError,
} from '../errors.ts';
import { commitEnd, slotStart, type Commit, type CommitBatch } from '../format/log-commit.ts';
import {
  decodeSlot,
  encodeSlot,
  isVoid,
  slotKey,
  slotSequenceOf,
  slotToken,
  type Slot,
} from '../format/log-slot.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { readShared } from './fetch-cache.ts';

/**
 * A producer begins no slot create later than this, in ms, after the create
 * of the commit that reserved the slot began (by its monotonic clock); it
 * voids the rest of the reservation instead. Readers wait
 * {@link VOID_AFTER_MS} before they void: the difference is the producer's
 * margin for the create's own round trip.
 */
export const SLOT_WRITE_MS = 2_000;

/**
 * A reader voids a slot that it has found missing for this long, in ms, by
 * its own monotonic clock: the producer that reserved it crashed, stalled or
 * lost its way. Its create of that slot then fails, and its group goes into
 * a later commit.
 */
export const VOID_AFTER_MS = 3_000;

/**
 * Reads the slot at `sequence` of the reservation of commit `reserving`;
 * undefined when it does not exist (yet, or any more). `fresh` asks the
 * store itself rather than a read shared with others of the process.
 *
 * @throws {CorruptDataError} when the slot does not decode, or belongs to
 * another reservation than the commit's.
 */
export async function readSlot(
  store: ObjectStore,
  root: string,
  reserving: Commit,
  sequence: number,
  signal?: AbortSignal,
  fresh = false,
): Promise<Slot | undefined> {
  const key = slotKey(root, sequence);
  let bytes: Uint8Array;
  try {
    bytes = fresh ? (await store.get(key, { signal })).body : await readShared(store, key, signal);
  } catch (e) {
    if (e instanceof NotFoundError) return undefined;
    throw e;
  }
  return checkSlot(decodeSlot(bytes, key, sequence, root), reserving, key);
}

/** Checks that `slot` lies in the reservation of `reserving`. */
function checkSlot(slot: Slot, reserving: Commit, key: string): Slot {
  const start = slotStart(reserving);
  const end = commitEnd(reserving);
  if (slot.commit !== reserving.commit || slot.endSequence !== end) {
    throw new CorruptDataError(
      `${key}: a slot of commit ${slot.commit}'s reservation ending at ${slot.endSequence}, expected commit ${reserving.commit}'s, ending at ${end}`,
      key,
    );
  }
  if (slot.firstSequence < start) {
    throw new CorruptDataError(
      `${key}: slot ${slot.firstSequence} lies before commit ${reserving.commit}'s reservation (${start} to ${end - 1})`,
      key,
    );
  }
  return slot;
}

/**
 * Creates a void at `sequence` of the reservation of `reserving`: no batch
 * from there to the reservation's end. When the slot exists already (its
 * producer's batches, or another reader's void), returns what is there.
 *
 * @throws {OutcomeUnknownError} when neither the create nor a read back
 * settles what the slot holds.
 */
export async function voidSlot(
  store: ObjectStore,
  root: string,
  reserving: Commit,
  sequence: number,
  writer: string,
  signal?: AbortSignal,
): Promise<Slot> {
  const slot: Slot = {
    commit: reserving.commit,
    firstSequence: sequence,
    endSequence: commitEnd(reserving),
    writer,
    token: slotToken(),
    batches: [],
  };
  try {
    await store.put(slotKey(root, sequence), encodeSlot(slot, root), { mode: 'create', signal });
    return slot;
  } catch (e) {
    if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
    const there = await readSlot(store, root, reserving, sequence, signal, true);
    if (there) return there;
    throw e instanceof OutcomeUnknownError
      ? e
      : new OutcomeUnknownError(
          slotKey(root, sequence),
          `${slotKey(root, sequence)}: the void's create was refused, yet the slot is missing (collected meanwhile?)`,
        );
  }
}

/** What {@link readReservation} found. */
export interface ReservationRead {
  /** The batches of the slots read, in order (only those at or after `from`). */
  batches: CommitBatch[];
  /** The slot to read next: the reservation's end once every slot is read. */
  nextSlot: number;
  /** Whether the reservation is read to its end (every slot filled or voided). */
  complete: boolean;
}

/**
 * Reads the slots of commit `reserving`'s reservation in order, from the
 * slot at `fromSlot` (a slot's first sequence, or `slotStart`), up to the
 * first one missing or the reservation's end; keeps batches whose sequence
 * is at least `from`. A slot missing for longer than {@link VOID_AFTER_MS}
 * by `waits` is voided when `voidAs` names the writer to record (readers
 * that may not write pass none and keep waiting).
 */
export async function readReservation(
  store: ObjectStore,
  root: string,
  reserving: Commit,
  fromSlot: number,
  from: number,
  waits: SlotWaits,
  options: { voidAs?: string; signal?: AbortSignal; maxBatches?: number } = {},
): Promise<ReservationRead> {
  const end = commitEnd(reserving);
  const batches: CommitBatch[] = [];
  let s = Math.max(fromSlot, slotStart(reserving));
  while (s < end) {
    if (options.maxBatches !== undefined && batches.length >= options.maxBatches) break;
    let slot = await readSlot(store, root, reserving, s, options.signal);
    if (!slot) {
      if (options.voidAs === undefined || !waits.overdue(reserving.commit, s)) {
        return { batches, nextSlot: s, complete: false };
      }
      slot = await voidSlot(store, root, reserving, s, options.voidAs, options.signal);
    }
    waits.forget(reserving.commit, s);
    if (isVoid(slot)) {
      s = end;
      break;
    }
    for (const b of slot.batches) if (b.entry.sequence >= from) batches.push(b);
    s = slot.firstSequence + slot.batches.length;
  }
  return { batches, nextSlot: s, complete: s >= end };
}

/**
 * When a reader first found each slot missing, by its monotonic clock, so
 * that it voids one only after waiting {@link VOID_AFTER_MS} for it.
 */
export class SlotWaits {
  private readonly firstMissed = new Map<string, number>();

  constructor(
    private readonly now: () => number,
    private readonly voidAfterMs = VOID_AFTER_MS,
  ) {}

  /** Notes a miss of slot `sequence` of commit `commit`'s reservation; true once it is overdue. */
  overdue(commit: number, sequence: number): boolean {
    const key = `${commit}:${sequence}`;
    const now = this.now();
    const first = this.firstMissed.get(key);
    if (first === undefined) {
      // Bounded: a reader waits on one slot at a time per reservation.
      if (this.firstMissed.size >= 1024) this.firstMissed.clear();
      this.firstMissed.set(key, now);
      return false;
    }
    return now - first >= this.voidAfterMs;
  }

  /** Forgets a slot that was found. */
  forget(commit: number, sequence: number): void {
    this.firstMissed.delete(`${commit}:${sequence}`);
  }
}

/**
 * The first slot of commit `reserving`'s reservation that does not exist
 * yet, reading its slots in order from the start without voiding anything;
 * the reservation's end when every slot is written or voided (or it reserves
 * none). Where a subscription created at `'latest'` starts when the head
 * holds a reservation (docs/log-layout.md §7.5): slots written after it are
 * appended after the subscription.
 *
 * @throws {CorruptDataError} when a slot does not decode or is another reservation's.
 */
export async function firstUnwrittenSlot(
  store: ObjectStore,
  root: string,
  reserving: Commit,
  signal?: AbortSignal,
): Promise<number> {
  const end = commitEnd(reserving);
  if (end === slotStart(reserving)) return end;
  // `from` at the end: no batch is kept, only the walk's stopping point.
  const read = await readReservation(
    store,
    root,
    reserving,
    slotStart(reserving),
    end,
    new SlotWaits(() => 0),
    { ...(signal ? { signal } : {}) },
  );
  return read.nextSlot;
}

/**
 * The end of the written part of commit `reserving`'s reservation: the
 * sequence of its first slot not written yet, or the reservation's end when
 * it is complete (read to its end or voided). Slots are written in order, so
 * the written ones are one run from the start and the last key listed is its
 * tail: one listing under the narrowest key prefix that covers the
 * reservation and one read of that tail; where that prefix would cover more
 * than 16 times the reservation (it straddles a large power of ten), a walk
 * of its slots instead.
 *
 * @throws {CorruptDataError} when the tail does not decode or belongs to
 * another reservation.
 */
export async function reservationTail(
  store: ObjectStore,
  root: string,
  reserving: Commit,
  signal?: AbortSignal,
): Promise<number> {
  const start = slotStart(reserving);
  const end = commitEnd(reserving);
  if (end <= start) return end;
  const first = slotKey(root, start);
  const last = slotKey(root, end - 1);
  let common = 0;
  while (common < first.length && first[common] === last[common]) common++;
  // A reservation across a multiple of a large power of ten shares a short prefix with
  // every slot below it: walk its slots instead (one GET per slot written, at most 256).
  const covered = 10 ** (first.length - common);
  if (covered > 16 * (end - start)) return firstUnwrittenSlot(store, root, reserving, signal);
  let tail: string | undefined;
  for await (const meta of store.list(first.slice(0, common), { signal })) {
    if (meta.key >= first && meta.key <= last) tail = meta.key;
    if (meta.key > last) break;
  }
  if (tail === undefined) return start;
  const sequence = slotSequenceOf(root, tail) as number;
  const slot = await readSlot(store, root, reserving, sequence, signal, true);
  if (!slot || isVoid(slot)) return slot ? end : sequence;
  return slot.firstSequence + slot.batches.length;
}

/**
 * Completes commit `reserving`'s reservation as of now: voids its first slot
 * not written, so that no slot can be written there any more. Returns the
 * first sequence of the slots its producer wrote while this ran (its create
 * won the race with the void), or undefined when there were none. Where a
 * subscription created at `'latest'` starts (docs/log-layout.md §7.5).
 */
export async function closeReservation(
  store: ObjectStore,
  root: string,
  reserving: Commit,
  writer: string,
  signal?: AbortSignal,
): Promise<number | undefined> {
  const end = commitEnd(reserving);
  let written: number | undefined;
  for (let s = await reservationTail(store, root, reserving, signal); s < end;) {
    const slot = await voidSlot(store, root, reserving, s, writer, signal);
    if (isVoid(slot)) break;
    written ??= s;
    s = slot.firstSequence + slot.batches.length;
  }
  return written;
}

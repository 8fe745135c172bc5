/**
 * A producer's reservations on a shared log (docs/log-layout.md §7.2,
 * "Reservations"): when several producers append to one log at speed, a
 * producer's commit also reserves the sequences after its batches, and its
 * later groups are each written create-only to the slot of their first
 * sequence: one write and no read per group, and no race with the other
 * producers until the reservation is used up.
 */
import { monotonicNow, type Clock } from '../clock.ts';
import { OutcomeUnknownError, PreconditionFailedError, type SpillwayError } from '../errors.ts';
import { commitEnd, slotStart, type Commit } from '../format/log-commit.ts';
import {
  encodeSlot,
  isVoid,
  slotKey,
  slotLocation,
  slotToken,
  type Slot,
} from '../format/log-slot.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { readSlot, SLOT_WRITE_MS, voidSlot } from './log-slots.ts';
import type { AppendBatch } from './log-queue.ts';

/** How long, in ms, a reservation should last at the producer's append rate. */
export const RESERVE_SPAN_MS = 1_000;
/** Fewest sequences worth reserving: below this, a producer commits each group. */
export const MIN_RESERVED = 4;
/** Most sequences a producer reserves at once. */
export const MAX_RESERVED = 256;
/** Most inline bytes one slot carries (as a commit, §7.2). */
export const SLOT_MAX_BYTES = 1024 * 1024;
/** Least time, in ms, a producer keeps unused slots open while no append comes. */
const CLOSE_IDLE_MIN_MS = 100;

/** What the reservations use of their log handle. */
export interface ReservationHost {
  store: ObjectStore;
  root: string;
  writer: string;
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
  /** The boundary's first commit, read fresh. */
  boundaryFirstCommit(signal: AbortSignal | undefined): Promise<number>;
  /** `TRUSTED_VIEW_MS` of the log. */
  trustedViewMs: number;
}

/** A reservation held: the commit that made it and the next slot to write. */
interface Held {
  commit: Commit;
  /** The next slot: the first sequence not written. */
  next: number;
  end: number;
  /** When the reserving commit's create was sent (monotonic ms). */
  sentAt: number;
}

/** The reservations of one producer on one log. */
export class Reservations {
  private held: Held | undefined;
  /** The next reservation, made ahead while {@link held} is being used. */
  private ahead: Held | undefined;
  /** A void of the held reservation's rest being written; the next append waits for it. */
  private closing: Promise<void> = Promise.resolve();
  private idleTimer: ReturnType<Clock['setTimeout']> | undefined;
  /**
   * Smoothed time from the end of one append to the start of the next (ms):
   * how long the producer had nothing to append. With the time a create
   * takes, the gap between appends when each is one create, whatever the
   * appends cost now (an append that waits on others says nothing of the
   * rate its producer could reach).
   */
  private idleMs: number | undefined;
  /** Smoothed time a create takes (ms): commits and slots of this handle. */
  private createMs: number | undefined;
  private lastEndedAt: number | undefined;
  private closed = false;
  /** Whether an append is in progress (between {@link starting} and {@link ended}). */
  private appending = false;

  constructor(private readonly host: ReservationHost) {}

  /**
   * Notes that an append starts, and waits for a void of the previous
   * reservation's rest that is still being written.
   */
  async starting(): Promise<void> {
    const now = monotonicNow(this.host.clock);
    if (this.lastEndedAt !== undefined) {
      // Down at once, up slowly: a burst after a pause reserves from its second append,
      // and one pause does not end reserving (too many sequences cost one void).
      const idle = now - this.lastEndedAt;
      this.idleMs =
        this.idleMs === undefined || idle < this.idleMs ? idle : smooth(this.idleMs, idle);
    }
    this.appending = true;
    if (this.idleTimer !== undefined) {
      this.host.clock.clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    }
    await this.closing;
  }

  /**
   * Whether appends of inline batches would go into slots now: a reservation
   * is held, or the rate asks for one (the log being shared is the caller's
   * to check).
   */
  active(): boolean {
    return this.held !== undefined || this.ahead !== undefined || this.count() > 0;
  }

  /** Notes that an append ended (landed or failed). */
  ended(): void {
    this.lastEndedAt = monotonicNow(this.host.clock);
    this.appending = false;
    // A burst may end with this append: close what is held if no append follows.
    if (this.held || this.ahead) this.armIdleClose();
  }

  /** Notes how long a create of this handle took, landed or refused (ms). */
  measuredCreate(ms: number): void {
    this.createMs = smooth(this.createMs, ms);
  }

  /** The expected time between appends that each cost one create (ms), once measured. */
  private gapMs(): number | undefined {
    if (this.idleMs === undefined || this.createMs === undefined) return undefined;
    return this.idleMs + this.createMs;
  }

  /**
   * Sequences worth reserving: the appends of {@link RESERVE_SPAN_MS} if
   * each came as soon as its producer had one (after its idle time, not
   * after a create: creates slowed by contention are what reserving
   * removes); 0 below {@link MIN_RESERVED}. Reserving too many costs little
   * (one void closes the rest); too few sends appends back into the race.
   */
  private count(): number {
    if (this.closed || this.idleMs === undefined) return 0;
    const count = Math.round(RESERVE_SPAN_MS / Math.max(this.idleMs, 1));
    return count < MIN_RESERVED ? 0 : Math.min(count, MAX_RESERVED);
  }

  /**
   * How many sequences a commit of an append of `batches` should reserve on a
   * log that others append to: about {@link RESERVE_SPAN_MS} of appends at
   * the current rate, 0 when that is below {@link MIN_RESERVED} (or the
   * batches cannot go into slots).
   */
  wanted(batches: readonly AppendBatch[]): number {
    return fitsSlot(batches) ? this.count() : 0;
  }

  /** Holds the reservation of a commit of ours that landed (its create sent at `sentAt`). */
  hold(commit: Commit, sentAt: number): void {
    const end = commitEnd(commit);
    const start = slotStart(commit);
    if (end <= start) return;
    // Keep what the slots' checks need, not the commit's batches (their bytes).
    const reserving: Commit = {
      ...commit,
      firstSequence: start,
      batches: [],
      reserved: end - start,
    };
    const made = { commit: reserving, next: start, end, sentAt };
    if (this.held && this.held.next < this.held.end) this.ahead = made;
    else this.held = made;
    // Made in the background while the producer is idle: close it if no append comes.
    // (During an append, its end arms the timer: never while a slot create is in flight.)
    if (!this.appending) this.armIdleClose();
  }

  /**
   * How many sequences to reserve ahead, in a commit of no batches made in
   * the background, so that the next reservation is there when the held one
   * runs out or grows too old: once half of it is used, half of
   * `SLOT_WRITE_MS` has passed or the rate asks for twice its size, none is
   * ahead yet, and the rate still asks for one; else 0.
   */
  aheadWanted(): number {
    const held = this.held;
    if (!held || this.ahead || this.closed) return 0;
    const size = held.end - slotStart(held.commit);
    const halfLeft = held.end - held.next > size / 2;
    const young = monotonicNow(this.host.clock) - held.sentAt < SLOT_WRITE_MS / 2;
    const count = this.count();
    // A reservation sized at a slower rate (the first after a pause) runs out long before
    // the next could be made at the race it may take: make it now.
    const undersized = count >= 2 * size;
    if (halfLeft && young && !undersized) return 0;
    return count;
  }

  /**
   * Our batches landed in commit `n`: a reservation of an earlier commit
   * must not take later groups (they would come before these), so any left
   * is closed.
   */
  superseded(n: number): void {
    for (const h of [this.held, this.ahead]) {
      if (h && h.commit.commit < n) void this.closeOne(h, undefined);
    }
  }

  /** The reservation to write in: the held one, else the one made ahead. */
  private current(): Held | undefined {
    if (!this.held || this.held.next >= this.held.end) {
      this.held = this.ahead;
      this.ahead = undefined;
    }
    return this.held;
  }

  /**
   * Writes `batches` to the next slot of the held reservation, when one is
   * held, young enough and large enough. Returns their sequences and
   * locations, or undefined when the append must go into a commit instead
   * (no usable reservation, or a reader voided the slot).
   *
   * @throws {OutcomeUnknownError} when the slot's create may have landed
   * but cannot be confirmed, or landed below the boundary.
   */
  async write(
    batches: readonly AppendBatch[],
    signal: AbortSignal | undefined,
  ): Promise<{ sequence: number; location: string }[] | undefined> {
    if (!fitsSlot(batches)) return undefined;
    for (;;) {
      const held = this.current();
      if (!held) return undefined;
      const now = monotonicNow(this.host.clock);
      if (now - held.sentAt >= SLOT_WRITE_MS || held.end - held.next < batches.length) {
        // Too old to write in (readers may void it soon), or too small: close it, and
        // try the one made ahead.
        await this.closeOne(held, signal);
        continue;
      }
      const written = await this.writeIn(held, batches, signal);
      if (written) return written;
      // A reader voided the slot: that reservation is over; the one ahead may serve.
    }
  }

  /** Writes `batches` to the next slot of `held`; undefined when a reader voided it. */
  private async writeIn(
    held: Held,
    batches: readonly AppendBatch[],
    signal: AbortSignal | undefined,
  ): Promise<{ sequence: number; location: string }[] | undefined> {
    const first = held.next;
    const slot: Slot = {
      commit: held.commit.commit,
      firstSequence: first,
      endSequence: held.end,
      writer: this.host.writer,
      token: slotToken(),
      batches: batches.map((b, i) => ({
        entry: {
          sequence: first + i,
          location: slotLocation(this.host.root, first, i),
          metadata: b.metadata,
          extension: b.extension,
        },
        records: b.records,
        inline: b.inline as Uint8Array,
      })),
    };
    const body = encodeSlot(slot, this.host.root);
    const key = slotKey(this.host.root, first);
    try {
      return await this.create(held, slot, body, key, signal);
    } catch (e) {
      // Failed, or its outcome is unknown: the reservations end here. Whatever our
      // create did, a void at this slot settles it (refused if our create landed).
      void this.closeRest(undefined);
      throw e;
    }
  }

  /** Creates a slot of the held reservation, settling refusals and lost responses. */
  private async create(
    held: Held,
    slot: Slot,
    body: Uint8Array,
    key: string,
    signal: AbortSignal | undefined,
  ): Promise<{ sequence: number; location: string }[] | undefined> {
    const first = slot.firstSequence;
    const count = slot.batches.length;
    for (;;) {
      let failure: unknown;
      const putAt = monotonicNow(this.host.clock);
      try {
        await this.host.store.put(key, body, { mode: 'create', signal });
        this.measuredCreate(monotonicNow(this.host.clock) - putAt);
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) {
          throw e;
        }
        failure = e;
      }
      if (failure !== undefined) {
        let stored: Slot | undefined;
        try {
          stored = await readSlot(
            this.host.store,
            this.host.root,
            held.commit,
            first,
            signal,
            true,
          );
        } catch (e) {
          throw unknown(
            key,
            `the slot could not be read back to tell (${(e as Error).message})`,
            e,
          );
        }
        if (stored && stored.token !== slot.token) {
          // A reader voided it (or it is another's): our create never landed, and the
          // reservation is over. The group goes into a commit.
          this.drop(held);
          this.host.metrics.increment('buffer.slots_voided_under_writer', 1);
          this.host.logger.debug({ key, void: isVoid(stored) }, 'slot taken before our create');
          return undefined;
        }
        if (!stored) {
          if ((await this.host.boundaryFirstCommit(signal)) > held.commit.commit) {
            this.drop(held);
            if (failure instanceof OutcomeUnknownError) {
              throw unknown(key, 'the reservation was collected before the create was confirmed');
            }
            return undefined;
          }
          if (monotonicNow(this.host.clock) - held.sentAt < SLOT_WRITE_MS) {
            // Not there: the create did not land. Try the same bytes again.
            continue;
          }
          // Too late to start creates of this reservation: settle the slot with a void
          // of our own (refused if our create landed meanwhile), so that no create of
          // ours can land there later; the group then goes into a commit.
          const settled = await voidSlot(
            this.host.store,
            this.host.root,
            held.commit,
            first,
            this.host.writer,
            signal,
          );
          if (settled.token !== slot.token) {
            this.drop(held);
            return undefined;
          }
        }
      }
      // Landed (ours is there).
      await this.checkLanded(held, key, signal);
      held.next = first + count;
      this.host.metrics.increment('buffer.slots_written', 1);
      this.host.metrics.increment('buffer.bytes_written', body.byteLength, { role: 'producer' });
      if (held.next >= held.end) this.drop(held);
      return slot.batches.map((b) => ({
        sequence: b.entry.sequence,
        location: b.entry.location,
      }));
    }
  }

  /**
   * A slot create that lands `trustedViewMs` or more after its reservation's
   * create was sent may have re-created a slot of a reservation already
   * collected: the boundary tells.
   */
  private async checkLanded(
    held: Held,
    key: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const ageMs = monotonicNow(this.host.clock) - held.sentAt;
    if (ageMs < this.host.trustedViewMs) return;
    let first: number;
    try {
      first = await this.host.boundaryFirstCommit(signal);
    } catch (e) {
      throw unknown(
        key,
        `landed ${Math.round(ageMs)} ms after its reservation, and the boundary could not be read`,
        e,
      );
    }
    if (held.commit.commit < first) {
      this.drop(held);
      await this.host.store.delete(key, { signal }).catch(() => undefined);
      throw unknown(
        key,
        `landed below the log's boundary (commit ${first}): its reservation was collected`,
      );
    }
  }

  /** After an append: close what is held when no append comes for a while. */
  private armIdleClose(): void {
    if (this.idleTimer !== undefined) this.host.clock.clearTimeout(this.idleTimer);
    const waitMs = Math.min(
      SLOT_WRITE_MS / 2,
      Math.max(CLOSE_IDLE_MIN_MS, 4 * (this.gapMs() ?? CLOSE_IDLE_MIN_MS)),
    );
    this.idleTimer = this.host.clock.setTimeout(() => {
      this.idleTimer = undefined;
      void this.closeRest(undefined).catch(() => undefined);
    }, waitMs);
  }

  /** Forgets reservation `h` (used up, or no longer ours to write). */
  private drop(h: Held): void {
    if (this.held === h) this.held = undefined;
    if (this.ahead === h) this.ahead = undefined;
  }

  /**
   * Voids the unused rest of every reservation held (and of the one made
   * ahead), so that readers need not wait for them. Best effort: a reader
   * voids them anyway after waiting.
   */
  async closeRest(signal: AbortSignal | undefined): Promise<void> {
    for (const h of [this.held, this.ahead]) if (h) void this.closeOne(h, signal);
    await this.closing;
  }

  /** Voids the unused rest of reservation `held` (queued after any void in progress). */
  private closeOne(held: Held, signal: AbortSignal | undefined): Promise<void> {
    this.drop(held);
    if (held.next >= held.end) return this.closing;
    const done = this.closing.then(async () => {
      try {
        // A slot of ours that lands first (a create still in flight) refuses the void:
        // void after it, until a void lands or the reservation ends.
        for (let s = held.next; s < held.end;) {
          const there = await voidSlot(
            this.host.store,
            this.host.root,
            held.commit,
            s,
            this.host.writer,
            signal,
          );
          if (isVoid(there)) break;
          s = there.firstSequence + there.batches.length;
        }
        this.host.metrics.increment('buffer.slots_closed', 1);
      } catch (e) {
        this.host.logger.debug(
          { key: slotKey(this.host.root, held.next), error: String(e) },
          'unused slots not closed; readers will void them',
        );
      }
    });
    this.closing = done;
    return done;
  }

  /** Closes the rest of any reservation and stops reserving. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.idleTimer !== undefined) this.host.clock.clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    await this.closeRest(undefined);
  }
}

/** Whether `batches` can go into a slot: all inline, within a slot's bytes. */
function fitsSlot(batches: readonly AppendBatch[]): boolean {
  if (batches.length === 0) return false;
  let bytes = 0;
  for (const b of batches) {
    if (!b.inline) return false;
    bytes += b.inline.byteLength;
  }
  return bytes <= SLOT_MAX_BYTES;
}

/** An exponentially smoothed value: the new sample weighs 0.2. */
function smooth(old: number | undefined, sample: number): number {
  return old === undefined ? sample : old * 0.8 + sample * 0.2;
}

function unknown(key: string, why: string, cause?: unknown): SpillwayError {
  return new OutcomeUnknownError(key, `${key}: a slot's create: ${why}`, cause);
}

/**
 * Riders: how several producers flat out on one log share commits
 * (docs/log-layout.md §7.2, "Riders"). Commits form a chain, so a log takes
 * about one commit per create round trip whoever writes it; a producer that
 * loses a race therefore stops racing for a while and publishes each group of
 * batches as a **rider**, `{root}/riders/{group}`, for the producer that is
 * committing (the one in direct mode) to carry in its next commit. The owner
 * of a rider follows the chain until a commit holds its group, and commits it
 * itself when nobody does (a **stall**).
 *
 * The one rule that keeps a group out of two commits: a builder of commit `n`
 * includes group `G` only after checking every commit in `(after, n − 1]`
 * (`after` is written in the rider: no commit at or below it holds `G`) and
 * finding `G` in none. Commit `n` is created on `n − 1`, create-only, so if
 * `m < n` both held `G`, the builder of `n` read `m`.
 *
 * This file keeps what a queue handle knows about riders and recent commits
 * (caches; riders are immutable), the background scan of `riders/`, the
 * eligibility rule, and the owner's wait. The create itself is
 * {@link LogQueue}'s, unchanged.
 */
import { monotonicNow, sleep, type Clock } from '../clock.ts';
import {
  asError,
  CorruptDataError,
  NotFoundError,
  OutcomeUnknownError,
  StorageError,
} from '../errors.ts';
import { commitEnd, type Commit, type CommitBatch } from '../format/log-commit.ts';
import { decodeRider, riderGroupOf, riderKey, type Rider } from '../format/log-rider.ts';
import { decodeTrailer, withGroup } from '../format/trailer.ts';
import { UlidGenerator, ulidTimeMs } from '../format/ulid.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { TRUSTED_VIEW_MS, type AppendBatch, type Head } from './log-queue.ts';

/** How long, in ms, after a lost race a producer publishes its groups as riders instead of racing. */
export const RIDER_MODE_MS = 1_000;
/**
 * How long, in ms, after it last lost a race or listed a rider a producer
 * lists riders beside every create. Past it, a producer lists beside a
 * create only once per {@link RIDER_LIST_IDLE_MS}: a lone producer makes
 * about one request per append.
 */
export const RIDER_SCAN_MS = 5_000;
/**
 * Longest time, in ms, between two listings of a producer that creates
 * commits: a rider published to a committer that saw no other producer
 * lately is listed within it. Its owner's stall commit cannot be relied on
 * to announce it: a committer that creates back to back takes every number
 * before the owner, which has to read the number missing first.
 */
export const RIDER_LIST_IDLE_MS = 1_000;
/**
 * Most commits a producer creates between two listings (with
 * {@link RIDER_LIST_IDLE_MS}): on a fast store a second is hundreds of
 * commits, and a rider is carried only within {@link RIDER_RANGE_MAX}
 * commits of its `after`.
 */
export const RIDER_LIST_IDLE_COMMITS = 32;
/**
 * Largest rider object, in bytes, a scan reads: a commit carries at most
 * `INLINE_BYTES_PER_COMMIT` (1 MiB) inline bytes, so a bigger rider can never
 * be carried (its owner commits it on a stall).
 */
export const RIDER_MAX_BYTES = 2 * 1024 * 1024;
/** Most bytes of riders a handle holds read and not yet carried (listed sizes). */
export const RIDER_PENDING_MAX_BYTES = 16 * 1024 * 1024;
/**
 * How long, in ms, after it last read another producer's reserving commit a
 * producer appends in commits of its own rather than as a rider, and the
 * owner of a rider commits it at once: producers that reserve commit only to
 * renew (about every `SLOT_WRITE_MS` / 2), so nobody would carry a rider
 * before it stalls.
 */
export const OTHERS_RESERVING_MS = 2_000;
/** Shortest stall, in ms: an owner that sees no new commit for this long commits its rider itself. */
export const RIDER_STALL_MIN_MS = 20;
/** The stall bound in rider PUT latencies (the larger of this many and {@link RIDER_STALL_MIN_MS}). */
export const RIDER_STALL_LATENCIES = 8;
/** An owner commits its rider itself once this many commits appeared after it without it. */
export const RIDER_STALL_COMMITS = 3;
/** Bounds, in ms, of the owner's wait between reads of a commit that does not exist yet. */
export const RIDER_POLL_MIN_MS = 1;
export const RIDER_POLL_MAX_MS = 50;
/** A committer checks riders whose `after` lies at most this many commits below the number it builds. */
export const RIDER_RANGE_MAX = 256;
/**
 * A committer carries only riders its own listing showed within this many
 * ms: one deleted since (by the collector, a grace period old) is not
 * carried long after, when its batch objects may be gone too.
 */
export const RIDER_LISTED_MS = 2_000;
/**
 * How long, in ms, a producer counts its log as shared after it last saw
 * another producer's commit or rider, or lost a race: while it does, a view
 * of the head older than {@link freshViewMs} is caught up (the next numbers
 * read) before a create, and a create lost on such a view counts as a stale
 * view, not a race.
 */
export const LOG_SHARED_MS = 30_000;
/**
 * A shared log is busy while commits follow each other (as the head advances
 * between a producer's reads) within this many commit creates: someone
 * commits back to back and will carry a rider at once. A lost create puts
 * a producer in rider mode on a busy log, on a race before it measured the
 * log, or at the append's second loss; on a quieter log nobody would carry
 * its rider before it stalls, and racing again costs less (§7.2).
 */
export const RIDER_BUSY_CREATES = 2;
/**
 * On a shared log, a view of the head older than this share of the time
 * between commits (as the head advances in the producer's views) is more
 * likely behind than not: the next number is read before a create.
 */
export const STALE_VIEW_GAPS = 0.7;
/** Shortest age, in ms, of a view of the head that counts as stale on a shared log. */
export const STALE_VIEW_MIN_MS = 5;
/** Most commits an owner that is behind the log reads at once (§7.2). */
export const FOLLOW_READ_AHEAD = 4;
/** Commits whose groups a queue handle remembers. */
const MARKS_KEPT = 2_048;
/** Group ids known to be committed that a handle remembers (so listings do not read them again). */
const DONE_KEPT = 8_192;
/** Riders and commits read at once by a scan. */
const SCAN_CONCURRENCY = 8;

/** What a commit says about groups: the group ids and the producers (trailer instance ids) of its batches. */
export interface CommitMarks {
  groups: Set<string>;
  writers: Set<string>;
}

/** The groups and writers of a commit's batches. */
export function marksOf(c: Commit): CommitMarks {
  const groups = new Set<string>();
  const writers = new Set<string>();
  for (const b of c.batches) {
    const t = decodeTrailer(b.entry.extension);
    if (!t) continue;
    writers.add(t.instanceId);
    if (t.group !== undefined) groups.add(t.group);
  }
  return { groups, writers };
}

/** Which of a commit's batches belong to `group`, in order: the append's results, or undefined if none. */
export function groupResults(
  c: Commit,
  group: string,
  count: number,
  what: string,
): { sequence: number; location: string }[] | undefined {
  const out = c.batches
    .filter((b) => decodeTrailer(b.entry.extension)?.group === group)
    .map((b) => ({ sequence: b.entry.sequence, location: b.entry.location }));
  if (out.length === 0) return undefined;
  if (out.length !== count) {
    // A group travels whole or not at all; anything else is not ours to resolve with.
    throw new OutcomeUnknownError(
      what,
      `${what}: holds ${out.length} batches of group ${group}, which has ${count}: not resolving the append`,
      new CorruptDataError(`${what}: group ${group} split`, what),
    );
  }
  return out;
}

/** A rider read from the store. */
interface ReadRider {
  rider: Rider;
  key: string;
  /** The producer of its batches (their trailers' instance id). */
  writer: string;
  inlineBytes: number;
  /** The rider object's size. */
  sizeBytes: number;
  /** When a listing of this handle last showed it (monotonic ms). */
  listedAt: number;
}

/** What {@link Riders} needs from its queue handle. */
export interface RiderHost {
  readonly store: ObjectStore;
  readonly root: string;
  readonly writer: string;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly clock: Clock;
  /**
   * The append deadline (ms): an owner gives up by then, so a committer does
   * not carry a rider older than this by its group's time (see {@link Riders.select}).
   */
  readonly deadlineMs: number;
  readCommit(n: number, signal?: AbortSignal, fresh?: boolean): Promise<Commit | undefined>;
  commitKey(n: number): string;
  readBoundary(signal?: AbortSignal): Promise<{ value: { firstCommit: number } }>;
  /** The newest commit the handle knows, if any. */
  knownHead(): number | undefined;
}

/** Eligible riders for one commit number: the batches to add and their groups. */
export interface Selection {
  parts: AppendBatch[];
  groups: string[];
  keys: string[];
}

/**
 * What one queue handle knows about riders and recent commits, and the
 * rider-mode state of its producer. Safe to share within a handle; every
 * cache only ever holds immutable facts (a rider's bytes, a commit's groups).
 */
export class Riders {
  private readonly ulids = new UlidGenerator();
  /** Rider mode until this monotonic time. */
  private contendedUntil = Number.NEGATIVE_INFINITY;
  /** Monotonic time until which creates list riders beside them ({@link RIDER_SCAN_MS}). */
  private scanUntil = Number.NEGATIVE_INFINITY;
  /** Monotonic time until which the log counts as shared ({@link LOG_SHARED_MS}). */
  private sharedUntil = Number.NEGATIVE_INFINITY;
  /** Monotonic time until which another producer counts as reserving ({@link OTHERS_RESERVING_MS}). */
  private othersReservingUntil = Number.NEGATIVE_INFINITY;
  /**
   * Whether a commit that reserves sequences was read as the log's: its
   * producer created `{root}/reserving` before it, so the marker exists.
   */
  reservingSeen = false;
  /** Commit create latency, ms, smoothed (undefined until one was measured). */
  private createMs: number | undefined;
  /**
   * Time between commits as the head advances between this handle's reads
   * (its own commits landing are not measured), ms, smoothed; undefined
   * until measured.
   */
  private headGapMs: number | undefined;
  /** Monotonic time the last rider listing began. */
  private lastListedAt = Number.NEGATIVE_INFINITY;
  /** Commits this handle created since its last listing began. */
  private commitsSinceListing = 0;
  /** Rider PUT latency, ms, smoothed. */
  private putMs = 2;
  /** Time between new commits as an owner sees them appear, ms, smoothed. */
  private commitGapMs = 2;
  /** Groups and writers of recent commits, by number: only commits read as the log's own (see {@link note}). */
  private readonly marks = new Map<number, CommitMarks>();
  /** Commits below this number may be collected, or are not known to be the log's: riders reaching below are not checked. */
  private collectedBelow = 0;
  /** Riders read and not known to be committed, by group. */
  private readonly pending = new Map<string, ReadRider>();
  /** Groups known to be committed (or unreadable): never read again. */
  private readonly done = new Set<string>();
  /** Groups this handle wrote. */
  private readonly own = new Set<string>();
  private scanning: Promise<void> | undefined;
  private readonly deletions: string[] = [];
  private deleting: Promise<void> | undefined;
  /** The commit that resolved this handle's last append, if known. */
  lastOwnCommit = -1;

  constructor(private readonly host: RiderHost) {}

  get riderPrefix(): string {
    return `${this.host.root}/riders/`;
  }

  /** A new group id (a ULID, in creation order within this handle). */
  newGroup(): string {
    const g = this.ulids.next(this.host.clock.now());
    this.own.add(g);
    return g;
  }

  /**
   * Whether batches can travel as a rider: each carries Spillway's trailer
   * with this handle's writer id, so its group can be marked in it.
   */
  rideable(batches: readonly AppendBatch[]): boolean {
    return batches.every((b) => decodeTrailer(b.extension)?.instanceId === this.host.writer);
  }

  /** Whether this producer lost a race recently (publish riders rather than race). */
  inRiderMode(): boolean {
    return monotonicNow(this.host.clock) < this.contendedUntil;
  }

  /**
   * Whether another producer reserved sequences lately: it writes slots, and
   * its commits come about twice a second, so a rider would wait for a
   * stall rather than be carried (§7.2, "Reservations").
   */
  othersReserving(): boolean {
    return monotonicNow(this.host.clock) < this.othersReservingUntil;
  }

  /**
   * A ride ended in another producer's commit: the log still has a
   * committer, so rider mode goes on for {@link RIDER_MODE_MS} from now.
   */
  carried(): void {
    this.contendedUntil = monotonicNow(this.host.clock) + RIDER_MODE_MS;
  }

  /** A race was lost: rider mode for {@link RIDER_MODE_MS}. */
  lostRace(): void {
    const now = monotonicNow(this.host.clock);
    this.contendedUntil = now + RIDER_MODE_MS;
    this.sawOthers(now);
  }

  /** Another producer was seen at monotonic time `at`: list riders beside creates for {@link RIDER_SCAN_MS}. */
  sawOthers(at = monotonicNow(this.host.clock)): void {
    this.scanUntil = Math.max(this.scanUntil, at + RIDER_SCAN_MS);
    this.sawWriter(at);
  }

  /** A commit of another producer was seen at monotonic time `at`: the log is shared ({@link LOG_SHARED_MS}). */
  sawWriter(at = monotonicNow(this.host.clock)): void {
    this.sharedUntil = Math.max(this.sharedUntil, at + LOG_SHARED_MS);
  }

  /** The head advanced by `commits` in `ms` between two of this handle's views. */
  measuredHeadAdvance(commits: number, ms: number): void {
    if (commits <= 0 || ms < 0) return;
    const gap = ms / commits;
    this.headGapMs = this.headGapMs === undefined ? gap : this.headGapMs * 0.7 + gap * 0.3;
  }

  /**
   * Whether the log is busy enough for riding: commits follow each other
   * within {@link RIDER_BUSY_CREATES} commit creates; undefined until this
   * handle has seen the head advance.
   */
  busy(): boolean | undefined {
    // A measure taken while the log was shared goes stale with it.
    if (this.headGapMs === undefined || !this.shared()) return undefined;
    return this.headGapMs <= RIDER_BUSY_CREATES * (this.createMs ?? this.putMs);
  }

  /** Records a commit create's latency (ms). */
  measuredCreate(ms: number): void {
    this.createMs = this.createMs === undefined ? ms : this.createMs * 0.8 + ms * 0.2;
  }

  /** Whether another producer's commit or rider was seen, or a race lost, within {@link LOG_SHARED_MS}. */
  shared(): boolean {
    return monotonicNow(this.host.clock) < this.sharedUntil;
  }

  /**
   * The age, in ms, past which a view of the head counts as stale: another
   * producer has more likely than not committed since (the view is older
   * than {@link STALE_VIEW_GAPS} of the time between commits, and
   * {@link STALE_VIEW_MIN_MS}). On a shared log, such a view is caught up (the
   * next number read) before a create, which costs one read where a lost
   * create costs a create and a read; and a create lost on it says nothing
   * about a race. A lone producer's view is never stale: it makes every
   * commit.
   */
  get staleViewMs(): number {
    return Math.max(STALE_VIEW_MIN_MS, STALE_VIEW_GAPS * (this.headGapMs ?? 0));
  }

  /**
   * Whether a create should list riders beside it: another producer was seen
   * lately ({@link RIDER_SCAN_MS}), or this handle has not listed for
   * {@link RIDER_LIST_IDLE_MS} or {@link RIDER_LIST_IDLE_COMMITS} of its
   * commits (never, at its first create).
   */
  othersSeen(): boolean {
    const now = monotonicNow(this.host.clock);
    return (
      now < this.scanUntil ||
      now - this.lastListedAt >= RIDER_LIST_IDLE_MS ||
      this.commitsSinceListing >= RIDER_LIST_IDLE_COMMITS
    );
  }

  /** A commit of this handle's landed after a stall: it is the committer now (direct mode). */
  committing(): void {
    this.contendedUntil = Number.NEGATIVE_INFINITY;
  }

  /** Records a rider PUT's latency (ms). */
  measuredPut(ms: number): void {
    this.putMs = this.putMs * 0.8 + ms * 0.2;
  }

  /** Records the time between two commits appearing (ms), as an owner saw them. */
  measuredCommitGap(ms: number): void {
    this.commitGapMs = this.commitGapMs * 0.8 + ms * 0.2;
  }

  /**
   * How long an owner waits before reading a commit that did not exist yet
   * again: half a rider PUT, or a third of the time between commits when that
   * is longer (each read costs the store a request and the owner CPU).
   */
  get pollMs(): number {
    const ms = Math.max(this.putMs, this.commitGapMs / 2);
    return Math.min(RIDER_POLL_MAX_MS, Math.max(RIDER_POLL_MIN_MS, ms));
  }

  /** How long without a new commit counts as a stall. */
  get stallMs(): number {
    return Math.max(RIDER_STALL_MIN_MS, RIDER_STALL_LATENCIES * this.putMs);
  }

  /**
   * Remembers what commit `c` holds. Only commits known to be the log's (not
   * a stale writer's re-creation below the boundary) may be noted: the
   * handle's own, one read at the number its trusted view was about to
   * create, or one read while the reader's view was trusted (§7.2).
   */
  note(c: Commit): CommitMarks {
    const m = marksOf(c);
    if (c.writer !== this.host.writer) this.sawWriter();
    if ((c.reserved ?? 0) > 0) {
      this.reservingSeen = true;
      if (c.writer !== this.host.writer) {
        this.othersReservingUntil = monotonicNow(this.host.clock) + OTHERS_RESERVING_MS;
      }
    }
    if (c.commit >= this.collectedBelow) {
      this.marks.set(c.commit, m);
      if (this.marks.size > MARKS_KEPT) {
        const lowest = Math.min(...this.marks.keys());
        this.marks.delete(lowest);
        this.collectedBelow = Math.max(this.collectedBelow, lowest + 1);
      }
    }
    for (const g of m.groups) this.finished(g);
    return m;
  }

  /**
   * An append of this handle's that rode has settled: its group need not be
   * remembered as its own any more (bounded: it joins the groups done, so
   * listings do not read it while it is remembered there; read later, it is
   * this handle's and never carried by it).
   */
  settledOwn(group: string): void {
    this.own.delete(group);
    this.finished(group);
  }

  private finished(group: string): void {
    this.pending.delete(group);
    this.done.add(group);
    if (this.done.size > DONE_KEPT) {
      const first = this.done.values().next().value as string;
      this.done.delete(first);
    }
  }

  /**
   * Whether commits `(after, through]` are all known here and none holds
   * `group` or (with `writer`) another batch of that producer: `ok`; `never`
   * when the range can never be checked here any more (too long, partly
   * forgotten) or a known commit in it holds the group or another batch of
   * the producer (numbers at or below that commit are taken, so a builder of
   * any number to come finds it too); else `unknown` (a commit not read yet).
   */
  checked(
    after: number,
    through: number,
    group: string,
    writer?: string,
  ): 'ok' | 'unknown' | 'never' {
    if (after + 1 < this.collectedBelow) return 'never';
    if (through - after > RIDER_RANGE_MAX) return 'never';
    let unknown = false;
    for (let m = after + 1; m <= through; m++) {
      const marks = this.marks.get(m);
      if (!marks) unknown = true;
      else if (marks.groups.has(group)) return 'never';
      else if (writer !== undefined && marks.writers.has(writer)) return 'never';
    }
    return unknown ? 'unknown' : 'ok';
  }

  /**
   * Riders to carry in commit `n`, after the builder's own batches, within
   * `budget` inline bytes, in group (creation) order. A rider is eligible
   * when `after < n` and commits `(after, n − 1]` are known here and hold
   * neither its group nor another batch of its producer (a later append of a
   * producer means the rider was given up; including it would break the
   * producer's order). At most one rider of a producer goes in a commit: a
   * producer has one append at a time, so two riders of one producer mean
   * that at least one was given up, or left by an earlier process under the
   * same instance id, and ULID order does not tell which is older across
   * processes (clocks); once one landed, the commit makes the others
   * ineligible for good. Once a rider of a producer is left out for a reason
   * that may pass (not listed lately, no room, commits not known yet), its
   * later ones are left out too; one that can never be carried (too old, or
   * a commit in its range holds its group or another batch of its producer)
   * does not hold the producer's later riders back.
   */
  select(n: number, budget: number): Selection {
    const out: Selection = { parts: [], groups: [], keys: [] };
    const skipped = new Set<string>();
    const now = monotonicNow(this.host.clock);
    const wallNow = this.host.clock.now();
    const riders = [...this.pending.values()].sort((a, b) =>
      a.rider.group < b.rider.group ? -1 : 1,
    );
    for (const r of riders) {
      if (r.writer === this.host.writer || skipped.has(r.writer)) continue;
      // Its owner gives up by its deadline; a rider older than that belongs to an owner
      // that gave up or died, and one left a grace period may have lost its batch objects
      // to a collection (A2): carrying it serves nobody. Refusing is always safe (an
      // owner still waiting commits its group itself), so a producer clock behind costs
      // only stalls; one ahead by more than the grace less the deadline defeats it.
      if (wallNow - ulidTimeMs(r.rider.group) >= this.host.deadlineMs) continue;
      // A rider whose `after` lies far beyond this number was not written by an owner
      // whose view this builder could share (a builder that far behind loses its create):
      // it never goes in this commit, and holds none of its producer's riders back.
      if (r.rider.after >= n + RIDER_RANGE_MAX) continue;
      const range =
        r.rider.after < n ? this.checked(r.rider.after, n - 1, r.rider.group, r.writer) : 'unknown';
      if (range === 'never') continue;
      const ok = now - r.listedAt < RIDER_LISTED_MS && r.inlineBytes <= budget && range === 'ok';
      // Carried or left out, no later rider of this producer goes in this commit.
      skipped.add(r.writer);
      if (!ok) continue;
      budget -= r.inlineBytes;
      out.groups.push(r.rider.group);
      out.keys.push(r.key);
      for (const b of r.rider.batches) out.parts.push(partOf(b));
    }
    return out;
  }

  /** A commit of this handle landed carrying `selection`: note it, count and delete its riders. */
  committed(c: Commit, selection: Selection | undefined): void {
    this.note(c);
    this.commitsSinceListing++;
    this.lastOwnCommit = c.commit;
    if (!selection || selection.groups.length === 0) return;
    this.host.metrics.increment('buffer.riders_included', selection.groups.length);
    this.deleteLater(selection.keys);
  }

  /** Deletes riders in the background, batched, best effort (the collector takes what is left). */
  deleteLater(keys: readonly string[]): void {
    this.deletions.push(...keys);
    if (this.deleting) return;
    this.deleting = (async () => {
      while (this.deletions.length > 0) {
        const chunk = this.deletions.splice(0, 1000);
        await this.host.store.deleteMany(chunk).catch((e: unknown) => {
          this.host.logger.debug({ error: String(e) }, 'riders not deleted (the collector will)');
        });
      }
      this.deleting = undefined;
    })();
  }

  /**
   * Starts a scan of `riders/` unless one runs: lists it, reads the riders
   * not read yet, and reads commits that riders' eligibility needs. Never
   * fails (a failure is logged; the next scan tries again).
   */
  scan(signal?: AbortSignal, until?: Promise<unknown>): void {
    if (this.scanning) return;
    let settled = until === undefined;
    void until?.finally(() => (settled = true)).catch(() => undefined);
    this.scanning = (async () => {
      // Scan again while the create it runs beside is in flight: the next commit then
      // carries riders written until the moment it is built.
      let scans = 0;
      do await this.scanOnce(signal);
      while (!settled && !signal?.aborted && ++scans < 2);
    })()
      .catch((e: unknown) => {
        this.host.logger.debug({ error: String(e) }, 'rider scan failed');
      })
      .finally(() => (this.scanning = undefined));
  }

  private async scanOnce(signal?: AbortSignal): Promise<void> {
    const listed = new Set<string>();
    const fresh: string[] = [];
    const listedAt = monotonicNow(this.host.clock);
    this.lastListedAt = listedAt;
    this.commitsSinceListing = 0;
    let pendingBytes = 0;
    for (const r of this.pending.values()) pendingBytes += r.sizeBytes;
    for await (const meta of this.host.store.list(this.riderPrefix, { signal })) {
      const group = riderGroupOf(this.host.root, meta.key);
      if (group === undefined) continue;
      listed.add(group);
      const known = this.pending.get(group);
      if (known) known.listedAt = listedAt;
      if (!this.pending.has(group) && !this.done.has(group) && !this.own.has(group)) {
        // Too big to be carried ever: not read. Beyond the pending budget: read by a
        // later scan, once carried riders made room (memory stays bounded).
        if (meta.size > RIDER_MAX_BYTES) this.done.add(group);
        else if (pendingBytes + meta.size <= RIDER_PENDING_MAX_BYTES) {
          pendingBytes += meta.size;
          fresh.push(meta.key);
        }
      }
    }
    if (listed.size > 0) this.sawOthers(listedAt);
    // A rider no longer listed was committed (and deleted by its committer) or collected.
    for (const g of [...this.pending.keys()]) if (!listed.has(g)) this.pending.delete(g);
    await eachLimited(fresh, SCAN_CONCURRENCY, async (key) => {
      const group = riderGroupOf(this.host.root, key) as string;
      let body: Uint8Array;
      try {
        body = (await this.host.store.get(key, { signal })).body;
      } catch (e) {
        if (e instanceof NotFoundError) return;
        throw e;
      }
      let transient: unknown;
      try {
        const rider = decodeRider(body, key, group);
        for (const b of rider.batches) {
          if (!b.inline && !isBatchKeyOf(this.host.root, b.entry.location)) {
            throw new CorruptDataError(
              `${key}: batch at "${b.entry.location}", outside this queue's batches`,
              key,
            );
          }
        }
        const writer = decodeTrailer((rider.batches[0] as CommitBatch).entry.extension)
          ?.instanceId as string;
        if (rider.batches.some((b) => decodeTrailer(b.entry.extension)?.instanceId !== writer)) {
          throw new CorruptDataError(`${key}: batches of several producers`, key);
        }
        // Its batch objects must be there, at their size: a rider of a dead producer may
        // outlive them (a collection, a clock far ahead), and a commit naming a missing
        // object would stop every reader at it.
        for (const b of rider.batches) {
          if (b.inline) continue;
          const size = decodeTrailer(b.entry.extension)?.batchSizeBytes;
          const meta = await this.host.store
            .head(b.entry.location, { signal })
            .catch((e: unknown) => {
              if (e instanceof NotFoundError) return undefined;
              // Not judged: a later scan reads the rider again.
              transient = e;
              throw e;
            });
          if (meta === undefined || meta.size !== size) {
            throw new CorruptDataError(
              `${key}: batch object "${b.entry.location}" ${meta === undefined ? 'is missing' : `has ${meta.size} bytes, not ${size}`}`,
              key,
            );
          }
        }
        let inlineBytes = 0;
        for (const b of rider.batches) inlineBytes += b.inline?.byteLength ?? 0;
        if (!this.done.has(group)) {
          this.pending.set(group, {
            rider,
            key,
            writer,
            inlineBytes,
            sizeBytes: body.byteLength,
            listedAt,
          });
        }
      } catch (e) {
        if (transient !== undefined) throw asError(transient);
        this.host.logger.warn({ key, error: String(e) }, 'a rider that does not decode is ignored');
        this.done.add(group);
      }
    });
    await this.fillGaps(signal);
  }

  /**
   * Reads the commits that pending riders' eligibility needs and this handle
   * does not know, then the boundary: a commit read at or above the boundary
   * read after it is the log's own (a stale writer's re-creation lands
   * below), so only those are noted.
   */
  private async fillGaps(signal?: AbortSignal): Promise<void> {
    const head = this.host.knownHead();
    if (head === undefined) return;
    const wanted = new Set<number>();
    for (const r of this.pending.values()) {
      if (r.writer === this.host.writer) continue;
      const from = Math.max(r.rider.after + 1, this.collectedBelow, head - RIDER_RANGE_MAX);
      for (let m = from; m <= head && wanted.size < 64; m++) {
        if (!this.marks.has(m)) wanted.add(m);
      }
    }
    if (wanted.size === 0) return;
    const read = new Map<number, Commit>();
    let missing = -1;
    await eachLimited([...wanted], SCAN_CONCURRENCY, async (m) => {
      const c = await this.host.readCommit(m, signal);
      // Below a commit known to exist, a missing one was collected.
      if (c) read.set(m, c);
      else missing = Math.max(missing, m);
    });
    const { value: b } = await this.host.readBoundary(signal);
    this.collectedBelow = Math.max(this.collectedBelow, b.firstCommit, missing + 1);
    for (const m of [...this.marks.keys()]) if (m < this.collectedBelow) this.marks.delete(m);
    for (const c of read.values()) if (c.commit >= this.collectedBelow) this.note(c);
  }

  /** Waits for background work: a scan and rider deletions. */
  async settle(): Promise<void> {
    await this.scanning;
    await this.deleting;
  }

  /** The batches of an append as a rider's: version-2 trailers naming `group`, sequence 0, no inline name. */
  static riderBatches(batches: readonly AppendBatch[], group: string): CommitBatch[] {
    return batches.map((b) => ({
      entry: {
        sequence: 0,
        location: b.inline ? '' : (b.location as string),
        metadata: b.metadata,
        extension: withGroup(b.extension, group) as Uint8Array,
      },
      records: b.records,
      ...(b.inline ? { inline: b.inline } : {}),
    }));
  }
}

/** A rider's batch as one to append (the committer names inline ones). */
export function partOf(b: CommitBatch): AppendBatch {
  return {
    ...(b.inline ? { inline: b.inline } : { location: b.entry.location }),
    sizeBytes: decodeTrailer(b.entry.extension)?.batchSizeBytes ?? b.inline?.byteLength ?? 0,
    records: b.records,
    metadata: b.entry.metadata,
    extension: b.entry.extension,
  };
}

function isBatchKeyOf(root: string, key: string): boolean {
  if (!key.startsWith(`${root}/`) || !key.endsWith('.batch')) return false;
  const name = key.slice(root.length + 1, -'.batch'.length);
  return name.length > 0 && !name.includes('/');
}

/** Runs `work` on each item, at most `limit` at once; the first failure rejects (after the rest settle). */
async function eachLimited<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  const queue = [...items];
  let failure: unknown;
  await Promise.all(
    Array.from({ length: Math.min(limit, queue.length) }, async () => {
      for (let x = queue.shift(); x !== undefined; x = queue.shift()) {
        try {
          await work(x);
        } catch (e) {
          failure ??= e;
        }
      }
    }),
  );
  if (failure !== undefined) throw failure as Error;
}

/** What the owner's wait needs from the queue handle: reads and the create of §7.2. */
export interface OwnerHost extends RiderHost {
  /** Records a head seen by reads that started at `since` (monotonic ms): commit `head.commit + 1` was missing then. */
  observe(head: Head, since: number): void;
  /**
   * The create of §7.2 (steps 1, 4 and 5) for `own` batches plus eligible
   * riders, on `view`, building no number above `maxNumber`; stops at the
   * first lost race.
   */
  commitOnce(
    own: readonly AppendBatch[],
    view: Head & { observedAt: number },
    maxNumber: number,
    started: number,
    signal: AbortSignal | undefined,
  ): Promise<
    | { results: { sequence: number; location: string }[]; commit: Commit }
    | { lost: Commit; checkedAt: number }
    | { moved: true }
  >;
  /** A direct append of `own` (§7.2 steps 1–6, racing on until it lands), from a fresh head. */
  appendDirect(
    own: readonly AppendBatch[],
    started: number,
    signal: AbortSignal | undefined,
  ): Promise<{ sequence: number; location: string }[]>;
}

/** An append published as a rider, waiting for the commit that holds it. */
export interface Ride {
  group: string;
  after: number;
  /** The append's batches, tagged with the group. */
  own: AppendBatch[];
  /** The head at `after`, when known (the owner's view). */
  afterHead: Head | undefined;
  /** Monotonic time of the view `after` comes from: commits above `after` were created after it. */
  viewAt: number;
  /** Clock time the append started (for its deadline). */
  started: number;
}

/**
 * The owner's side of a rider: reads commits from `after + 1` on as they
 * appear and resolves with its batches' places in the one that holds its
 * group; commits the group itself (with other eligible riders) when no new
 * commit appears for a stall bound or {@link RIDER_STALL_COMMITS} commits go
 * by without it.
 *
 * @throws {OutcomeUnknownError} when it cannot tell any more whether its
 * group was committed (commits after `after` collected unread, the deadline,
 * a failed read), since a committer may already hold its rider.
 */
export async function awaitRide(
  host: OwnerHost,
  riders: Riders,
  ride: Ride,
  signal: AbortSignal | undefined,
): Promise<{ sequence: number; location: string }[]> {
  const key = riderKey(host.root, ride.group);
  try {
    return await follow(host, riders, ride, signal);
  } catch (e) {
    // Given up: a committer may still carry the rider (hence OutcomeUnknownError), but
    // there is no point in leaving it a grace period, where it keeps this producer's
    // later riders from being carried (Riders.select) and lengthens every listing.
    riders.deleteLater([key]);
    if (e instanceof OutcomeUnknownError) throw e;
    // Aborted too: the rider may be stored, and a committer may carry it after this.
    throw new OutcomeUnknownError(
      key,
      `${key}: an append published as a rider may have been committed by another producer; it could no longer be followed (${signal?.aborted ? 'aborted: ' : ''}${(e as Error).message})`,
      e,
    );
  } finally {
    riders.settledOwn(ride.group);
  }
}

async function follow(
  host: OwnerHost,
  riders: Riders,
  ride: Ride,
  signal: AbortSignal | undefined,
): Promise<{ sequence: number; location: string }[]> {
  const key = riderKey(host.root, ride.group);
  const now = (): number => monotonicNow(host.clock);
  let c = ride.after + 1;
  /** What commit c − 1 says, when known. */
  let base: Head | undefined = ride.afterHead;
  let lastProgress = now();
  /** When the owner last found a commit that had been missing before (monotonic ms). */
  let appearedAt: number | undefined;
  let live = false;
  let missed = 0;
  /** Reads of the commits after `c` already sent, with the time each began. */
  const ahead = new Map<number, { at: number; read: Promise<Commit | undefined> }>();
  /** Commits found in a row by the last reads. */
  let found = 0;
  /**
   * Commit `c`, read as the log's: the places of the group's batches if it
   * holds them; else it becomes the base and the owner moves on to `c + 1`.
   */
  const passed = (read: Commit): { sequence: number; location: string }[] | undefined => {
    riders.note(read);
    const results = groupResults(read, ride.group, ride.own.length, host.commitKey(c));
    if (results) {
      riders.lastOwnCommit = c;
      if (read.writer !== host.writer) riders.carried();
      return results;
    }
    base = headOfCommit(read);
    c++;
    lastProgress = now();
    return undefined;
  };
  for (;;) {
    signal?.throwIfAborted();
    if (host.clock.now() - ride.started >= host.deadlineMs) {
      throw new OutcomeUnknownError(
        key,
        `${key}: no commit held this rider within the append deadline (${host.deadlineMs} ms), and it may still be committed`,
      );
    }
    if (c > ride.after + RIDER_RANGE_MAX + 1) {
      // Read through every commit a builder may carry the rider in (n − 1 − after ≤
      // RIDER_RANGE_MAX) without finding the group, and never found the log stalled
      // (commits kept coming faster than reads): nobody can carry it any more, so the
      // owner appends its batches itself, as a direct append.
      host.metrics.increment('buffer.rider_stalls');
      riders.deleteLater([key]);
      const results = await host.appendDirect(ride.own, ride.started, signal);
      riders.committing();
      return results;
    }
    // Fresh reads: one shared with a read that began earlier could miss a commit created
    // before readAt, and the view taken from a miss must hold from readAt. An owner behind
    // the log (its last two reads or more found commits) reads the next ones at once
    // (2, then 4), so that it catches up with a committer that creates back to back.
    const width = found < 2 ? 1 : Math.min(FOLLOW_READ_AHEAD, 2 ** (found - 1));
    for (let k = c; k < c + width; k++) {
      if (ahead.has(k)) continue;
      const at = now();
      const read = host.readCommit(k, signal, true);
      read.catch(() => undefined);
      ahead.set(k, { at, read });
    }
    const next = ahead.get(c) as { at: number; read: Promise<Commit | undefined> };
    ahead.delete(c);
    const readAt = next.at;
    const commit = await next.read;
    if (commit) found++;
    else {
      // Reads ahead of a missing commit are dropped: each is read again, after it.
      found = 0;
      ahead.clear();
    }
    // Within TRUSTED_VIEW_MS of the view, commits above `after` cannot have been collected
    // (they were created after the view and are kept LOG_MIN_COMMIT_AGE_MS), so what is read
    // is the log's own and a missing one is not there yet. Later, the boundary tells.
    const trusted = readAt - ride.viewAt < TRUSTED_VIEW_MS;
    if (!trusted) {
      const { value: b } = await host.readBoundary(signal);
      if (b.firstCommit > c) {
        throw new OutcomeUnknownError(
          key,
          `${key}: commits from ${c} on were collected before this rider's owner read them (the boundary is at ${b.firstCommit}); one may have held it`,
        );
      }
    }
    if (commit) {
      const results = passed(commit);
      if (results) return results;
      if (live) {
        missed++;
        if (appearedAt !== undefined) riders.measuredCommitGap(lastProgress - appearedAt);
        appearedAt = lastProgress;
      }
    } else {
      live = true;
      base ??= await headAt(host, c - 1, signal);
      host.observe(base, readAt);
      // Producers that reserve commit only to renew: none of them carries the rider soon.
      const stalled =
        missed >= RIDER_STALL_COMMITS ||
        now() - lastProgress >= riders.stallMs ||
        riders.othersReserving();
      if (!stalled) {
        await sleep(riders.pollMs, { signal, clock: host.clock });
        continue;
      }
      // Nobody carried it: commit it ourselves, with the riders we can, on c − 1 as just
      // seen (c was missing at readAt, and not collected).
      host.metrics.increment('buffer.rider_stalls');
      const out = await host.commitOnce(
        ride.own,
        { ...base, observedAt: readAt },
        c,
        ride.started,
        signal,
      );
      if ('results' in out) {
        riders.committing();
        riders.deleteLater([key]);
        return out.results;
      }
      if ('lost' in out) {
        const won = out.lost;
        riders.lostRace();
        // c was missing (and not collected) at readAt, so what was read at c within
        // TRUSTED_VIEW_MS of it is the log's own. Later (a create held in flight), c may
        // have been created, collected and re-created by a stale writer: the boundary,
        // read after the winner, tells, as for any read of the owner's.
        if (out.checkedAt - readAt >= TRUSTED_VIEW_MS) {
          const { value: b } = await host.readBoundary(signal);
          if (b.firstCommit > c) {
            throw new OutcomeUnknownError(
              key,
              `${key}: commit ${c}, which this rider's owner lost a race for, was collected before it could be read as the log's (the boundary is at ${b.firstCommit}); it may have held the rider`,
            );
          }
        }
        const results = passed(won);
        if (results) return results;
        missed = 0;
      }
    }
  }
}

async function headAt(host: OwnerHost, n: number, signal: AbortSignal | undefined): Promise<Head> {
  const c = await host.readCommit(n, signal);
  if (!c) {
    throw new StorageError(`${host.commitKey(n)}: a commit seen before is gone (collected)`, {
      retriable: true,
    });
  }
  return headOfCommit(c);
}

function headOfCommit(c: Commit): Head {
  return {
    commit: c.commit,
    endSequence: commitEnd(c),
    appendTimeMs: c.appendTimeMs,
    totalBytes: c.totalBytes,
    totalRecords: c.totalRecords,
  };
}

/**
 * The log layout's shared state and the protocol that changes it (see
 * docs/log-layout.md): numbered, immutable commit objects created
 * create-only (the create is the compare-and-swap), a boundary that only
 * moves up, a head hint, a descriptor, and one cursor object per
 * subscription changed with `ifMatch`.
 *
 * Every change follows the manifest queue's shape: it is a function of what
 * is stored, so a lost race, a lost response and a retry all end in the same
 * place. An append whose outcome is unknown is settled by reading the commit
 * it tried to create and comparing bytes; nothing is ever appended twice.
 */
import { monotonicNow, sleep, systemClock, type Clock } from '../clock.ts';
import {
  CorruptDataError,
  InvalidArgumentError,
  NotFoundError,
  OutcomeUnknownError,
  PreconditionFailedError,
  StorageError,
} from '../errors.ts';
import { abortable } from '../lifecycle.ts';
import {
  commitEnd,
  commitKey,
  decodeCommit,
  encodeCommit,
  inlineLocation,
  type Commit,
} from '../format/log-commit.ts';
import {
  decodeBoundary,
  decodeCursor,
  decodeHeadHint,
  decodeQueueDescriptor,
  encodeBoundary,
  encodeCursor,
  encodeHeadHint,
  encodeQueueDescriptor,
  type Boundary,
  type Cursor,
  type Position,
  type QueueDescriptor,
  type Retention,
} from '../format/log-objects.ts';
import { encodeRider, riderKey } from '../format/log-rider.ts';
import type { MetadataItem } from '../format/manifest.ts';
import { withGroup } from '../format/trailer.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { noopMetrics, type Metrics } from '../metrics.ts';
import { backoffMs, RETRY_DEFAULTS } from '../retry.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { readShared } from './fetch-cache.ts';
import { Reservations, SLOT_MAX_BYTES } from './log-reservations.ts';
import { closeReservation } from './log-slots.ts';
import { awaitRide, Riders, type OwnerHost, type Selection } from './log-riders.ts';

/** The subscription every log queue has from its creation. */
export const DEFAULT_SUBSCRIPTION = 'default';

/** Where a subscription starts when it is created. */
export type StartAt =
  /** Everything still retained. */
  | 'oldest'
  /** Only what is appended after the subscription is created. */
  | 'latest'
  /** That batch and what follows. */
  | { sequence: number }
  /** The first batch appended at or after that time (ms since the Unix epoch). */
  | { timeMs: number };

/** A batch to append: its object's key, or its bytes to carry inline. */
export interface AppendBatch {
  /** Key of the uploaded batch object; absent for an inline batch. */
  location?: string;
  /** The batch object's bytes, carried inside the commit. */
  inline?: Uint8Array;
  /** Bytes of the batch object (for retention by bytes). */
  sizeBytes: number;
  /** Records (entries) in the batch. */
  records: number;
  metadata: MetadataItem[];
  /** The entry's extension slot (Spillway's integrity trailer). */
  extension: Uint8Array;
}

/** What the newest commit says. */
export interface Head {
  /** Its number; -1 when the log has no commit yet. */
  commit: number;
  /** Sequence the next batch gets. */
  endSequence: number;
  appendTimeMs: number;
  totalBytes: number;
  totalRecords: number;
}

/** A stored object with the version a conditional write must name. */
export interface Versioned<T> {
  value: T;
  version: string;
}

/** Options of {@link LogQueue}. */
export interface LogQueueOptions {
  store: ObjectStore;
  /** The queue's folder: everything of the queue lives under `{root}/`. */
  root: string;
  /** Written into each commit and cursor. */
  writer?: string;
  metrics?: Metrics;
  logger?: Logger;
  clock?: Clock;
  /** Time limit of one append with its re-reads after lost races, in ms. @default 120000 */
  deadlineMs?: number;
  /**
   * Whether appends on a shared log may reserve sequences for slots (§7.2,
   * "Reservations"); false keeps every append in a commit of its own or a
   * rider (for tests of those paths). @default true
   */
  reserveSlots?: boolean;
}

/**
 * Most inline batch bytes one commit carries (the producer's own batches
 * and the riders' together, §7.2), so readers never fetch huge commits.
 */
export const INLINE_BYTES_PER_COMMIT = 1024 * 1024;

/**
 * Most commits a writer reads at once past a stale view of the head (1, 2,
 * … doubling up to this many while all are found) before it probes for the
 * head instead.
 */
const CATCH_UP_READS = 4;
/**
 * Races in a row after which a producer that reserves (§7.2) reads on from
 * the winner instead of trying the next number at once: a few producers
 * taking their first reservations together each win within a few steps; one
 * that keeps losing is behind a committer that creates back to back.
 */
const RESERVER_STEPS = 4;

/**
 * Commits whose reservations a subscription created at `'latest'` (or a
 * time) closes (§7.5). A producer starts no slot create, and retries none,
 * `SLOT_WRITE_MS` (1 s) after its reservation (then it voids the slot
 * itself), so only a create held up in flight while others make this many
 * commits can land in an older one.
 */
const LATEST_LOOKBACK_COMMITS = 256;
/** Commits {@link LogQueue.resolveStart} reads at once while it looks back. */
const LOOKBACK_READS = 16;

/** Commits between head hints: the creator of a commit whose number is a multiple writes one. */
const HINT_EVERY_COMMITS = 64;

/**
 * How old, in ms, a writer's view of the head may be when its create lands
 * for the writer to trust, without looking, that the commit it created had
 * not already been created and collected. Older views are checked against the
 * boundary after the create. Must stay well below {@link LOG_MIN_COMMIT_AGE_MS}.
 */
export const TRUSTED_VIEW_MS = 5_000;

/**
 * The collector never deletes a commit younger than this by the store's
 * clock, whatever its grace period: it is what makes a writer's view of the
 * head trustworthy for {@link TRUSTED_VIEW_MS}.
 */
export const LOG_MIN_COMMIT_AGE_MS = 10_000;

/**
 * One log queue under a root prefix. Safe to share within a process; every
 * method reads what it needs from the store.
 */
export class LogQueue {
  readonly store: ObjectStore;
  readonly root: string;
  readonly writer: string;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly deadlineMs: number;
  private readonly reserveSlots: boolean;
  /**
   * The newest commit this process knows, and when (monotonic ms) the reads
   * that showed it started.
   */
  private head: (Head & { observedAt: number }) | undefined;
  /**
   * When the head was last confirmed (monotonic ms): a read that found the
   * next number missing began, or this handle's create of it landed. Not a
   * safety fact (that is the view's `observedAt`), only how stale the view
   * may be on a shared log.
   */
  private headConfirmedAt = Number.NEGATIVE_INFINITY;
  private hintWrite: Promise<void> = Promise.resolve();
  /** What this handle knows of riders and recent commits, and its rider mode (§7.2). */
  private readonly riders: Riders;
  /** What the owner's side of a rider uses of this handle. */
  private readonly ownerHost: OwnerHost;
  /** This handle's reservations on a shared log (§7.2, "Reservations"). */
  private readonly reservations: Reservations;
  /** A write of `{root}/reserving` in flight, if any. */
  private marking: Promise<void> | undefined;
  /** Whether this handle saw `{root}/reserving` stored (§7.2). */
  private markedReserving = false;
  /** A reservation being made ahead in the background, if any. */
  private reservingAhead: Promise<void> | undefined;

  constructor(options: LogQueueOptions) {
    this.store = options.store;
    this.root = options.root;
    this.writer = options.writer ?? '';
    this.metrics = options.metrics ?? noopMetrics;
    this.logger = options.logger ?? silentLogger;
    this.clock = options.clock ?? systemClock;
    this.deadlineMs = options.deadlineMs ?? RETRY_DEFAULTS.deadlineMs;
    this.reserveSlots = options.reserveSlots ?? true;
    this.ownerHost = {
      store: this.store,
      root: this.root,
      writer: this.writer,
      metrics: this.metrics,
      logger: this.logger,
      clock: this.clock,
      deadlineMs: this.deadlineMs,
      readCommit: (n, signal, fresh) => this.readCommit(n, signal, fresh),
      commitKey: (n) => this.commitKey(n),
      readBoundary: (signal) => this.readBoundary(signal),
      knownHead: () => this.head?.commit,
      observe: (head, since) => void this.observe(head, since),
      commitOnce: async (own, view, maxNumber, started, signal) => {
        // A stall create reserves as a direct append would: the producer is at speed.
        const reserve = this.reserveFor(own);
        if (reserve > 0) await abortable(this.markReserving(), signal);
        return this.commitLoop(own, view, {
          started,
          signal,
          stopOnLoss: true,
          scan: true,
          maxNumber,
          reserve,
        });
      },
      appendDirect: async (own, started, signal) => {
        const out = await this.commitLoop(own, await this.freshHead(signal), {
          started,
          signal,
          stopOnLoss: false,
          scan: true,
        });
        if ('results' in out) return out.results;
        throw new Error('unreachable: a direct append neither stops on a loss nor has a limit');
      },
    };
    this.riders = new Riders(this.ownerHost);
    this.reservations = new Reservations({
      store: this.store,
      root: this.root,
      writer: this.writer,
      clock: this.clock,
      metrics: this.metrics,
      logger: this.logger,
      trustedViewMs: TRUSTED_VIEW_MS,
      boundaryFirstCommit: async (signal) => (await this.readBoundary(signal)).value.firstCommit,
    });
  }

  /** `{root}/riders/`: the prefix of riders (§3). */
  get ridersPrefix(): string {
    return `${this.root}/riders/`;
  }

  /**
   * `{root}/reserving`: created (empty, create-only) by a producer before
   * its first commit that reserves sequences; its absence tells a start
   * position that no reservation can be filling (§7.2, §7.5).
   */
  get reservingKey(): string {
    return `${this.root}/reserving`;
  }

  /** Whether any producer ever reserved sequences on this log (the marker exists). */
  private async everReserved(signal: AbortSignal | undefined): Promise<boolean> {
    try {
      await this.store.head(this.reservingKey, { signal });
      return true;
    } catch (e) {
      if (e instanceof NotFoundError) return false;
      throw e;
    }
  }

  /**
   * Makes sure `{root}/reserving` is stored before this handle's first
   * commit that reserves sequences: start positions look for reservations
   * only where it exists (§7.2, §7.5). A reserving commit read as the log's
   * was preceded by its own writer's marker, so it is not written again then.
   * Callers share one write in flight (a caller's signal ends only its wait).
   */
  private markReserving(): Promise<void> {
    if (this.riders.reservingSeen) this.markedReserving = true;
    if (this.markedReserving) return Promise.resolve();
    this.marking ??= this.writeMarker().finally(() => {
      this.marking = undefined;
    });
    return this.marking;
  }

  private async writeMarker(): Promise<void> {
    try {
      await this.store.put(this.reservingKey, new Uint8Array(0), { mode: 'create' });
    } catch (e) {
      if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
      if (!(await this.everReserved(undefined))) {
        // Nothing was appended: a failure to retry, not an unknown outcome.
        throw new StorageError(
          `${this.reservingKey}: the marker of a log with reservations could not be written (${e.message})`,
          { retriable: true, cause: e },
        );
      }
    }
    this.markedReserving = true;
  }

  /**
   * Sequences an append of `batches` should reserve in its commit: on a
   * shared log, the appends of about a second at this producer's rate
   * (§7.2, "Reservations"); 0 otherwise.
   */
  private reserveFor(batches: readonly AppendBatch[]): number {
    return this.reserveSlots && this.riders.shared() ? this.reservations.wanted(batches) : 0;
  }

  /** `{root}/queue`: the descriptor that says a log queue lives here. */
  get descriptorKey(): string {
    return `${this.root}/queue`;
  }

  get boundaryKey(): string {
    return `${this.root}/boundary`;
  }

  get headKey(): string {
    return `${this.root}/head`;
  }

  /** Prefix of the subscriptions' cursors. */
  get subscriptionsPrefix(): string {
    return `${this.root}/subscriptions/`;
  }

  cursorKey(subscription: string): string {
    return `${this.subscriptionsPrefix}${subscription}`;
  }

  commitKey(n: number): string {
    return commitKey(this.root, n);
  }

  /** The descriptor, or undefined when no log queue lives here. */
  async readDescriptor(signal?: AbortSignal): Promise<Versioned<QueueDescriptor> | undefined> {
    const got = await getOrUndefined(this.store, this.descriptorKey, signal);
    if (!got) return undefined;
    return { value: decodeQueueDescriptor(got.body, this.descriptorKey), version: got.version };
  }

  /**
   * Creates the queue if it does not exist: its descriptor and its default
   * subscription, starting at the oldest batch, so that data nobody has read
   * yet is always needed by a subscription. Idempotent.
   */
  async ensureCreated(signal?: AbortSignal): Promise<QueueDescriptor> {
    const existing = await this.readDescriptor(signal);
    if (existing) return existing.value;
    // The default subscription first: a descriptor without it would let a collector run
    // before anything holds the data back.
    try {
      await this.createCursor(DEFAULT_SUBSCRIPTION, 'oldest', signal);
    } catch (e) {
      // Refused, and gone when read back: another process created the queue meanwhile and
      // deleted its default subscription since (as a consumer group does). That process
      // wrote the descriptor before it opened a subscription of the queue.
      if (!(e instanceof PreconditionFailedError)) throw e;
      const now = await this.readDescriptor(signal);
      if (!now) throw e;
      return now.value;
    }
    const descriptor: QueueDescriptor = { createdAtMs: this.clock.now(), retention: {} };
    try {
      await this.store.put(this.descriptorKey, encodeQueueDescriptor(descriptor), {
        mode: 'create',
        signal,
      });
      return descriptor;
    } catch (e) {
      if (!(e instanceof PreconditionFailedError)) throw e;
      const now = await this.readDescriptor(signal);
      if (!now) throw e;
      return now.value;
    }
  }

  /** Sets the queue's retention (an `ifMatch` change of the descriptor). */
  async setRetention(retention: Retention, signal?: AbortSignal): Promise<QueueDescriptor> {
    for (;;) {
      const current = await this.readDescriptor(signal);
      if (!current) throw new InvalidArgumentError(`${this.root}: no log queue here`);
      const next = { ...current.value, retention };
      try {
        await this.store.put(this.descriptorKey, encodeQueueDescriptor(next), {
          mode: { ifMatch: current.version },
          signal,
        });
        return next;
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
      }
    }
  }

  /** The boundary; absent, everything from commit 0 is kept. */
  async readBoundary(
    signal?: AbortSignal,
  ): Promise<Versioned<Boundary> | { value: Boundary; version: undefined }> {
    const got = await getOrUndefined(this.store, this.boundaryKey, signal);
    if (!got) {
      return {
        value: { firstCommit: 0, firstSequence: 0, expiredBelow: 0, updatedAtMs: 0 },
        version: undefined,
      };
    }
    return { value: decodeBoundary(got.body, this.boundaryKey), version: got.version };
  }

  /**
   * Moves the boundary up to `to` (never down), with `ifMatch`; returns the
   * boundary as stored after the call.
   */
  async raiseBoundary(to: Omit<Boundary, 'updatedAtMs'>, signal?: AbortSignal): Promise<Boundary> {
    for (;;) {
      const current = await this.readBoundary(signal);
      const b = current.value;
      if (to.firstCommit <= b.firstCommit && to.expiredBelow <= b.expiredBelow) return b;
      const next: Boundary = {
        firstCommit: Math.max(b.firstCommit, to.firstCommit),
        firstSequence: to.firstCommit > b.firstCommit ? to.firstSequence : b.firstSequence,
        expiredBelow: Math.max(b.expiredBelow, to.expiredBelow),
        updatedAtMs: this.clock.now(),
      };
      try {
        await this.store.put(this.boundaryKey, encodeBoundary(next), {
          mode: current.version === undefined ? 'create' : { ifMatch: current.version },
          signal,
        });
        return next;
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
      }
    }
  }

  /**
   * A commit, or undefined when it does not exist (not yet, or collected).
   * Reads are shared in the process unless `fresh` asks the store itself.
   */
  async readCommit(n: number, signal?: AbortSignal, fresh = false): Promise<Commit | undefined> {
    const bytes = await this.readCommitBytes(n, signal, fresh);
    if (!bytes) return undefined;
    const key = this.commitKey(n);
    const commit = decodeCommit(bytes, key, n);
    // Every batch lies in this queue: an inline one named by this commit and its place,
    // an object directly under the root (nothing a collector may delete elsewhere).
    commit.batches.forEach((b, i) => {
      const own = b.inline ? b.entry.location === `${key}#${i}` : this.isBatchKey(b.entry.location);
      if (!own) {
        throw new CorruptDataError(
          `${key}: batch ${i} is at "${b.entry.location}", outside this queue's batches (expected ${b.inline ? `"${key}#${i}"` : `"${this.root}/{name}.batch"`})`,
          key,
        );
      }
    });
    return commit;
  }

  /** Whether `key` can be one of this queue's batch objects: `{root}/{name}.batch`. */
  isBatchKey(key: string): boolean {
    if (!key.startsWith(`${this.root}/`) || !key.endsWith('.batch')) return false;
    const name = key.slice(this.root.length + 1, -'.batch'.length);
    return name.length > 0 && !name.includes('/');
  }

  /**
   * A commit's bytes; `fresh` asks the store itself, not a read shared with
   * others that may have started before the caller's own write.
   */
  private async readCommitBytes(
    n: number,
    signal?: AbortSignal,
    fresh = false,
  ): Promise<Uint8Array | undefined> {
    try {
      if (fresh) return (await this.store.get(this.commitKey(n), { signal })).body;
      return await readShared(this.store, this.commitKey(n), signal);
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  private async commitExists(n: number, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.store.head(this.commitKey(n), { signal });
      return true;
    } catch (e) {
      if (e instanceof NotFoundError) return false;
      throw e;
    }
  }

  /**
   * Finds the newest commit: from the boundary and the head hint, then
   * probing forward by doubling steps and bisecting back to the first commit
   * that does not exist. Commits exist as one unbroken run from the
   * boundary's first commit to the head (a commit is created only by a writer
   * that saw the one before, and only commits below the boundary are
   * deleted), so the probe needs O(log distance) requests.
   */
  async discoverHead(signal?: AbortSignal): Promise<Head> {
    for (;;) {
      const [{ value: b }, hint] = await Promise.all([
        this.readBoundary(signal),
        getOrUndefined(this.store, this.headKey, signal),
      ]);
      let known = b.firstCommit - 1;
      const h = hint && this.hintOf(hint.body);
      if (h && h.commit > known && (await this.commitExists(h.commit, signal))) known = h.commit;
      const found = await this.headFrom(known, signal, undefined, known < b.firstCommit);
      if (found === 'raced') continue;
      if (found !== 'none') return found;
      // Nothing at or above a boundary that did not move: a new log.
      return {
        commit: b.firstCommit - 1,
        endSequence: b.firstSequence,
        appendTimeMs: 0,
        totalBytes: 0,
        totalRecords: 0,
      };
    }
  }

  /** The head hint, or undefined when it does not decode (it is only advice). */
  private hintOf(body: Uint8Array): { commit: number } | undefined {
    try {
      return decodeHeadHint(body, this.headKey);
    } catch (e) {
      this.logger.warn(
        { key: this.headKey, error: String(e) },
        'head hint ignored: it does not decode',
      );
      return undefined;
    }
  }

  /**
   * The head, probing forward from `known` (a commit seen to exist, or the
   * one just below the boundary's first commit). A probe that finds commit
   * n + 1 missing proves that n is the head only if n + 1 was not collected;
   * the boundary read after the probe tells, since a collector raises it
   * before it deletes. `knownHead`, when given, is what commit `known` says
   * (spares reading it again). `'raced'`: the probe raced a collection, look
   * again; `'none'`: the probe started just below the boundary
   * (`belowBoundary`), found no commit, and no collection ran meanwhile.
   */
  private async headFrom(
    known: number,
    signal?: AbortSignal,
    knownHead?: Head,
    belowBoundary = false,
  ): Promise<Head | 'raced' | 'none'> {
    const last = await this.lastExisting(known, signal);
    let head: Head | undefined;
    if (last === known && knownHead) head = knownHead;
    else if (last > known || !belowBoundary) {
      const c = await this.readCommit(last, signal);
      head = c && headOf(c);
    }
    const { value: after } = await this.readBoundary(signal);
    if (after.firstCommit > last + 1) return 'raced';
    if (head) return head;
    // Nothing at or above a boundary that did not move: a new log. A commit seen to
    // exist that is gone now was collected: look again.
    return belowBoundary && last === known ? 'none' : 'raced';
  }

  /**
   * The last commit of the unbroken run that `known` (a commit seen to exist,
   * or one below the first) belongs to: probe forward by doubling steps, then
   * bisect back to the first commit that does not exist.
   */
  private async lastExisting(known: number, signal?: AbortSignal): Promise<number> {
    let step = 1;
    let missing = known + 1;
    while (await this.commitExists(missing, signal)) {
      known = missing;
      missing = known + step;
      step *= 2;
    }
    while (missing - known > 1) {
      const mid = known + Math.floor((missing - known) / 2);
      if (await this.commitExists(mid, signal)) known = mid;
      else missing = mid;
    }
    return known;
  }

  /** The head as this process last saw it, checked again when older than {@link TRUSTED_VIEW_MS}. */
  private async freshHead(signal?: AbortSignal): Promise<Head & { observedAt: number }> {
    if (!this.head) {
      const since = monotonicNow(this.clock);
      return this.observe(await this.discoverHead(signal), since);
    }
    return this.trusted(this.head, signal);
  }

  /**
   * `view` if it is younger than {@link TRUSTED_VIEW_MS}; else the head as
   * found from it now: a probe past it and the boundary after the probe (two
   * requests when nothing changed), which proves the next number absent now.
   */
  private async trusted(
    view: Head & { observedAt: number },
    signal?: AbortSignal,
  ): Promise<Head & { observedAt: number }> {
    if (monotonicNow(this.clock) - view.observedAt < TRUSTED_VIEW_MS) return view;
    return this.refresh(view, signal);
  }

  /**
   * The head as found from `known` (a commit seen to exist) now: a probe
   * past it and the boundary after the probe (two requests when nothing
   * changed), which proves the next number absent now.
   */
  private async refresh(known: Head, signal?: AbortSignal): Promise<Head & { observedAt: number }> {
    const since = monotonicNow(this.clock);
    const found = await this.headFrom(known.commit, signal, known);
    return this.observe(typeof found === 'string' ? await this.discoverHead(signal) : found, since);
  }

  /**
   * Records a head seen by reads that started at `since` (monotonic ms), or
   * (`read` false) this handle's own commit landing, which says nothing about
   * how often others commit.
   */
  private observe(head: Head, since: number, read = true): Head & { observedAt: number } {
    const seen = { ...head, observedAt: since };
    if (read && this.head && seen.commit > this.head.commit) {
      // Only another writer moves the head between this handle's reads: the log is shared.
      this.riders.sawWriter(since);
      this.riders.measuredHeadAdvance(
        seen.commit - this.head.commit,
        since - Math.max(this.head.observedAt, this.headConfirmedAt),
      );
    }
    if (!this.head || seen.commit > this.head.commit) this.headConfirmedAt = since;
    else if (seen.commit === this.head.commit) {
      this.headConfirmedAt = Math.max(this.headConfirmedAt, since);
    }
    if (!this.head || seen.commit >= this.head.commit) this.head = seen;
    return seen;
  }

  /** How long ago (ms, at monotonic `at`) `view` was last known to be the head. */
  private viewAgeMs(view: Head & { observedAt: number }, at: number): number {
    const confirmed =
      this.head?.commit === view.commit
        ? Math.max(view.observedAt, this.headConfirmedAt)
        : view.observedAt;
    return at - confirmed;
  }

  /**
   * `view` caught up: the commits after it read, in order, until a number
   * is missing (at most {@link CATCH_UP_READS}; further behind, the head is
   * found by probing). A commit read within {@link TRUSTED_VIEW_MS} of the
   * view was created after it and cannot have been collected: it is the
   * log's own, and a missing number is not there yet.
   */
  private async catchUp(
    view: Head & { observedAt: number },
    signal?: AbortSignal,
  ): Promise<Head & { observedAt: number }> {
    let head: Head = view;
    for (let width = 1; width <= CATCH_UP_READS; width *= 2) {
      const readAt = monotonicNow(this.clock);
      if (readAt - view.observedAt >= TRUSTED_VIEW_MS) break;
      // Fresh reads of the next numbers, all at once: the found ones in a row from
      // head + 1, then the first missing one (absent when its read began, at readAt).
      const reads = Array.from({ length: width }, (_, i) =>
        this.readCommit(head.commit + 1 + i, signal, true),
      );
      const results = await Promise.allSettled(reads);
      for (const r of results) {
        if (r.status === 'rejected') {
          if (head.commit === view.commit) throw r.reason;
          // What follows is unknown: find the head from the last commit read.
          return this.refresh(head, signal);
        }
        const c = r.value;
        if (!c) return this.observe(head, readAt);
        this.riders.note(c);
        head = headOf(c);
      }
    }
    return this.refresh(head, signal);
  }

  /**
   * Appends batches as one new commit, in order, once, and returns each
   * batch's sequence and location.
   *
   * In **direct mode** it creates commit head + 1 holding the batches, and
   * after them the batches of other producers' riders that are eligible
   * (§7.2); a lost response is settled by reading the commit back and
   * comparing bytes. A lost race puts the producer in **rider mode** for
   * `RIDER_MODE_MS` (1 s): the batches (and those of its next appends) are
   * published as a rider, `{root}/riders/{group}`, and the append resolves
   * once a commit holds that group, whoever created it (the owner commits it
   * itself when nobody does). Batches without Spillway's trailer naming this
   * writer cannot ride: they race as before (a lost race reads the winner's
   * commit and tries the next number).
   *
   * @throws {OutcomeUnknownError} when a create whose outcome was lost can no
   * longer be checked (its commit was collected meanwhile), or when a rider
   * can no longer be followed (another producer may have committed it).
   * @throws {StorageError} (retriable) when lost races outlast the deadline.
   */
  async append(
    batches: readonly AppendBatch[],
    signal?: AbortSignal,
  ): Promise<{ sequence: number; location: string }[]> {
    try {
      return await this.appendOnce(batches, signal);
    } finally {
      this.reservations.ended();
    }
  }

  private async appendOnce(
    batches: readonly AppendBatch[],
    signal?: AbortSignal,
  ): Promise<{ sequence: number; location: string }[]> {
    const started = this.clock.now();
    for (const b of batches) {
      if (!b.inline && (b.location === undefined || !this.isBatchKey(b.location))) {
        throw new InvalidArgumentError(
          `${this.root}: a batch to append must be inline or an object "${this.root}/{name}.batch", got ${JSON.stringify(b.location)}`,
        );
      }
    }
    await this.reservations.starting();
    // Holding a reservation (§7.2, "Reservations"): one create of the next slot.
    let slotted = await this.reservations.write(batches, signal);
    if (!slotted && this.reservingAhead) {
      // The next reservation is on its way: wait for it rather than commit.
      await this.reservingAhead;
      slotted = await this.reservations.write(batches, signal);
    }
    if (slotted) {
      this.reserveAhead();
      return slotted;
    }
    // Anything still held goes unused before a commit follows it.
    await this.reservations.closeRest(signal);
    const reserve = this.reserveFor(batches);
    // Riders wait for others' commits: producers that reserve make few (§7.2).
    const rideable =
      reserve === 0 &&
      batches.length > 0 &&
      this.riders.rideable(batches) &&
      !this.riders.othersReserving();
    if (rideable && this.riders.inRiderMode())
      return this.ride(batches, started, undefined, signal);
    // The marker goes before the commit that reserves; written while the head is read.
    const marking = reserve > 0 ? this.markReserving() : undefined;
    marking?.catch(() => undefined);
    let view = await this.freshHead(signal);
    // On a shared log, an old view is most likely behind: read on rather than lose a create.
    if (
      this.riders.shared() &&
      this.viewAgeMs(view, monotonicNow(this.clock)) >= this.riders.staleViewMs
    ) {
      view = await this.catchUp(view, signal);
    }
    if (marking) await abortable(marking, signal);
    const out = await this.commitLoop(batches, view, {
      started,
      signal,
      stopOnLoss: rideable,
      scan: rideable && this.riders.othersSeen(),
      reserve,
    });
    if ('results' in out) return out.results;
    if ('moved' in out) throw new Error('unreachable: a direct append has no number limit');
    // Lost a race: another producer is committing. Ride on its commits rather than race it.
    this.riders.lostRace();
    return this.ride(batches, started, out.view, signal);
  }

  /**
   * Publishes an append as a rider and waits for the commit that holds it
   * (§7.2, rider mode). `view`: the head to take `after` from (after a lost
   * race, the winner, with the time of the view that built the lost number).
   */
  private async ride(
    batches: readonly AppendBatch[],
    started: number,
    view: (Head & { observedAt: number }) | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ sequence: number; location: string }[]> {
    view ??= await this.freshHead(signal);
    const group = this.riders.newGroup();
    const own = batches.map((b) => ({
      ...b,
      extension: withGroup(b.extension, group) as Uint8Array,
    }));
    // No commit at or below `after` holds the group (it is new), and the producer's
    // previous append is at or below it (so its batches do not make the rider look given up).
    const after = Math.max(view.commit, this.riders.lastOwnCommit);
    const key = riderKey(this.root, group);
    const body = encodeRider({
      writer: this.writer,
      after,
      group,
      batches: Riders.riderBatches(batches, group),
    });
    const putAt = monotonicNow(this.clock);
    try {
      await this.store.put(key, body, { mode: 'create', signal });
      this.metrics.increment('buffer.riders_written');
      this.metrics.increment('buffer.bytes_written', body.byteLength, { role: 'producer' });
    } catch (e) {
      // Aborted: the store layer says whether an attempt may have landed (OutcomeUnknownError).
      if (signal?.aborted) {
        this.riders.settledOwn(group);
        throw e;
      }
      // Written or not, the owner holds the batches: it follows the log and commits the
      // group itself if nobody does, under the same rule as any committer.
      this.logger.debug({ key, error: String(e) }, 'rider write failed; following the log');
    }
    this.riders.measuredPut(monotonicNow(this.clock) - putAt);
    return awaitRide(
      this.ownerHost,
      this.riders,
      {
        group,
        after,
        own,
        afterHead: after === view.commit ? view : undefined,
        viewAt: view.observedAt,
        started,
      },
      signal,
    );
  }

  /**
   * The create of §7.2 for `own` batches plus the riders eligible for each
   * number tried: builds commit head + 1 (once per number), creates it,
   * settles a lost response by reading back. Returns the own batches'
   * results once a create landed; with `stopOnLoss`, the winner of the first
   * lost race (and the view it gives), else it goes on above the winner;
   * `moved` when the number to build would pass `maxNumber`.
   */
  private async commitLoop(
    own: readonly AppendBatch[],
    view: Head & { observedAt: number },
    options: {
      started: number;
      signal: AbortSignal | undefined;
      stopOnLoss: boolean;
      scan: boolean;
      maxNumber?: number;
      /** Sequences to reserve after the batches for this writer's slots (§7.2). */
      reserve?: number;
    },
  ): Promise<
    | { results: { sequence: number; location: string }[]; commit: Commit }
    | { lost: Commit; checkedAt: number; view: Head & { observedAt: number } }
    | { moved: true }
  > {
    const { started, signal } = options;
    let head = view;
    let ownInline = 0;
    for (const b of own) ownInline += b.inline?.byteLength ?? 0;
    // The bytes tried for a number are kept for every retry of that number: a create
    // that lands late is then recognised as ours, never taken for another writer's.
    let tried:
      { commit: Commit; body: Uint8Array; selection: Selection; firstPutAt?: number } | undefined;
    let lost = 0;
    let reserve = options.reserve ?? 0;
    let marking: Promise<void> | undefined;
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      head = await this.trusted(head, signal);
      if (marking) await abortable(marking, signal);
      const n = head.commit + 1;
      if (options.maxNumber !== undefined && n > options.maxNumber) return { moved: true };
      if (tried?.commit.commit !== n) tried = undefined;
      const selection =
        tried?.selection ?? this.riders.select(n, Math.max(0, INLINE_BYTES_PER_COMMIT - ownInline));
      const parts = selection.parts.length > 0 ? [...own, ...selection.parts] : own;
      let bytes = 0;
      let records = 0;
      for (const b of parts) {
        bytes += b.sizeBytes;
        records += b.records;
      }
      const commit: Commit = tried?.commit ?? {
        commit: n,
        firstSequence: head.endSequence,
        appendTimeMs: Math.max(this.clock.now(), head.appendTimeMs),
        totalBytes: head.totalBytes + bytes,
        totalRecords: head.totalRecords + records,
        writer: this.writer,
        batches: parts.map((b, i) => ({
          entry: {
            sequence: head.endSequence + i,
            location: b.inline ? inlineLocation(this.root, n, i) : (b.location as string),
            metadata: b.metadata,
            extension: b.extension,
          },
          records: b.records,
          ...(b.inline ? { inline: b.inline } : {}),
        })),
        ...(reserve > 0 ? { reserved: reserve } : {}),
      };
      const body = tried?.body ?? encodeCommit(commit);
      tried = { commit, body, selection, ...(tried ? { firstPutAt: tried.firstPutAt } : {}) };
      let failure: unknown;
      const putAt = monotonicNow(this.clock);
      // The first create of these bytes: a later attempt may find an earlier one landed.
      tried.firstPutAt ??= putAt;
      const viewAgeMs = this.viewAgeMs(head, putAt);
      let landed = false;
      try {
        const put = this.store.put(this.commitKey(n), body, { mode: 'create', signal });
        // While the create is in flight, look for riders to carry in the next commit.
        if (options.scan) this.riders.scan(signal, put);
        await put;
        landed = true;
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
        failure = e;
      }
      const firstPutAt = tried.firstPutAt;
      const land = () =>
        this.landed(commit, body, own.length, selection, head, putAt, signal, firstPutAt);
      if (landed) return land();
      // Lost a race, or lost the response: the commit as stored says which.
      let stored: Uint8Array | undefined;
      const checkedAt = monotonicNow(this.clock);
      this.riders.measuredCreate(checkedAt - putAt);
      this.reservations.measuredCreate(checkedAt - putAt);
      try {
        stored = await this.readCommitBytes(n, signal, true);
      } catch (e) {
        if (failure instanceof OutcomeUnknownError) {
          throw new OutcomeUnknownError(
            this.commitKey(n),
            `${this.commitKey(n)}: an append's outcome is unknown and the commit could not be read back to tell (${(e as Error).message})`,
            e,
          );
        }
        throw e;
      }
      if (stored && Buffer.from(stored).equals(body)) return land();
      if (stored) {
        this.metrics.increment('buffer.manifest_conflicts', 1, { role: 'producer' });
        const winner = decodeCommit(stored, this.commitKey(n), n);
        // Read at the number a trusted view was about to create: the log's own commit
        // (a stale writer's re-creation lands only on a number collected, which n was not).
        if (checkedAt - head.observedAt < TRUSTED_VIEW_MS) this.riders.note(winner);
        // The view keeps the time of the one it replaces: n was absent then, so n + 1 was
        // created (if at all) after it, and cannot have been collected within the trusted
        // window since.
        const next = { ...headOf(winner), observedAt: head.observedAt };
        const raced = viewAgeMs < this.riders.staleViewMs;
        lost++;
        this.riders.sawWriter(checkedAt);
        // Lost while others commit back to back (a stale loss too: a committer is there to
        // carry the group), a race lost before the handle could tell, or a second loss in
        // one append: ride on the winner's commits (racing a committer that knows the head
        // at once starves). An owner's stall create (a number limit) stops at any loss: the
        // winner may hold its group.
        const busy = this.riders.busy();
        const stop =
          options.maxNumber !== undefined ||
          lost > 1 ||
          busy === true ||
          (raced && busy === undefined);
        // A producer at speed that finds the log shared reserves rather than ride: its
        // winner may not list riders for a while, and a reservation ends its races (§7.2).
        const reserveNow =
          options.maxNumber === undefined && reserve === 0 ? this.reserveFor(own) : 0;
        if (reserveNow > 0) {
          reserve = reserveNow;
          // Stored before the commit that reserves; written while the head is read on.
          marking = this.markReserving();
          marking.catch(() => undefined);
        } else if (options.stopOnLoss && stop && !(reserve > 0 && lost <= RESERVER_STEPS)) {
          // (A reserving racer steps on instead, for up to RESERVER_STEPS losses in a row.)
          // A rider's `after` comes from this view: from a stale one, catch up first, so
          // that it lies near the head (within RIDER_RANGE_MAX of the commit carrying it).
          const view =
            raced || options.maxNumber !== undefined ? next : await this.catchUp(next, signal);
          return { lost: winner, checkedAt, view };
        }
        if ((raced && lost === 1) || (reserve > 0 && lost <= RESERVER_STEPS)) {
          // Another writer took n: try n + 1 on it at once, as the winner does. Producers
          // that reserve race each other only for their next reservation: step on.
          head = next;
        } else {
          // Lost on an old view (another producer committed since: no race), or lost
          // again: others are further ahead. Read on from the winner rather than try
          // one number at a time (a writer that steps while others append never
          // catches up).
          head = await this.catchUp(next, signal);
        }
      } else {
        const { value: b } = await this.readBoundary(signal);
        if (n < b.firstCommit) {
          if (failure instanceof OutcomeUnknownError) {
            throw new OutcomeUnknownError(
              this.commitKey(n),
              `${this.commitKey(n)}: an append of ${own.length} batches may have landed and already been collected; not appending again, to avoid delivering it twice`,
              failure,
            );
          }
          // Collected under a stale writer: look for the head again.
          head = this.observe(await this.discoverHead(signal), checkedAt);
        } else {
          // The create did not land: try the same number again, with a view as of the read.
          head = { ...head, observedAt: checkedAt };
        }
      }
      // A little jitter after repeated losses breaks writers out of lockstep; no real
      // backoff: a writer that lost a race knows where the head is now.
      const wait =
        attempt > 2 ? backoffMs(Math.min(attempt, 6), { baseDelayMs: 1, maxDelayMs: 5 }) : 0;
      if (this.clock.now() + wait - started >= this.deadlineMs) {
        if (failure instanceof OutcomeUnknownError && !stored) {
          throw new OutcomeUnknownError(
            this.commitKey(n),
            `${this.commitKey(n)}: an append's outcome is unknown and the deadline passed`,
            failure,
          );
        }
        throw new StorageError(
          `${this.root}: an append did not land in ${this.deadlineMs} ms (${attempt} attempts); the log is too contended or the store too slow`,
          { retriable: true, cause: failure },
        );
      }
      this.logger.debug(
        { root: this.root, commit: n, attempt },
        'log append lost a race; trying the next commit',
      );
      await sleep(wait, { signal, clock: this.clock });
    }
  }

  /** A create of ours landed: the checks of step 5, then the own batches' results. */
  private async landed(
    commit: Commit,
    body: Uint8Array,
    ownCount: number,
    selection: Selection,
    head: Head & { observedAt: number },
    putAt: number,
    signal: AbortSignal | undefined,
    firstPutAt = putAt,
  ): Promise<{ results: { sequence: number; location: string }[]; commit: Commit }> {
    const all = await this.appended(commit, body.byteLength, head.observedAt, putAt, signal);
    this.riders.committed(commit, selection);
    // Our batches are in this commit: no earlier reservation may take later groups.
    if (ownCount > 0) this.reservations.superseded(commit.commit);
    // A commit of ours reserving slots: the next appends write them (sent at putAt).
    // (Its first create's time: an earlier attempt of the same bytes may be what landed.)
    if ((commit.reserved ?? 0) > 0) this.reservations.hold(commit, firstPutAt);
    return { results: all.slice(0, ownCount), commit };
  }

  /**
   * Completes an append whose commit is stored. A create that lands long
   * after the writer looked at the head may have re-created a commit the
   * collector had already deleted; the boundary tells, and such a commit is
   * deleted again and the append fails: nobody reads below the boundary.
   */
  private async appended(
    commit: Commit,
    bytes: number,
    viewedAt: number,
    putAt: number,
    signal: AbortSignal | undefined,
  ): Promise<{ sequence: number; location: string }[]> {
    const viewAgeMs = monotonicNow(this.clock) - viewedAt;
    if (viewAgeMs >= TRUSTED_VIEW_MS) {
      // The create took so long that the number may have been created and collected
      // meanwhile: the boundary tells. Whatever goes wrong from here, the commit is
      // stored, so the outcome is unknown rather than failed.
      const key = this.commitKey(commit.commit);
      let b: Boundary;
      try {
        b = (await this.readBoundary(signal)).value;
      } catch (e) {
        throw new OutcomeUnknownError(
          key,
          `${key}: an append landed ${Math.round(viewAgeMs)} ms after its writer saw the head, and the boundary could not be read to tell whether it landed below it (${(e as Error).message})`,
          e,
        );
      }
      if (commit.commit < b.firstCommit) {
        this.head = undefined;
        await this.store.delete(key, { signal }).catch(() => undefined);
        throw new OutcomeUnknownError(
          key,
          `${key}: an append of ${commit.batches.length} batches landed below the log's boundary (commit ${b.firstCommit}): the number was created and collected during the ${Math.round(viewAgeMs)} ms its create took; no subscription reads it, unless one lagging below the boundary did before it was deleted`,
        );
      }
    }
    // When the create landed, the commit was the newest: no writer creates n + 1 before n exists.
    const head = headOf(commit);
    this.observe(head, putAt, false);
    const landedAt = monotonicNow(this.clock);
    this.riders.measuredCreate(landedAt - putAt);
    this.reservations.measuredCreate(landedAt - putAt);
    if (this.head?.commit === head.commit) this.headConfirmedAt = landedAt;

    this.metrics.increment('buffer.manifest_writes', 1, { role: 'producer' });
    this.metrics.increment('buffer.bytes_written', bytes, { role: 'producer' });
    if (commit.commit % HINT_EVERY_COMMITS === 0) {
      // Advisory, and never in the way of the append: failures are logged only.
      this.hintWrite = this.hintWrite.then(() =>
        this.store
          .put(this.headKey, encodeHeadHint({ commit: head.commit, endSequence: head.endSequence }))
          .then(
            () => undefined,
            (e: unknown) => this.logger.debug({ error: String(e) }, 'head hint not written'),
          ),
      );
    }
    return commit.batches.map((b) => ({ sequence: b.entry.sequence, location: b.entry.location }));
  }

  /**
   * Bytes up to which a batch is better carried inline by the next append:
   * a slot's limit (1 MiB) while this producer reserves on a shared log,
   * where an inline batch costs one create and an external one two (its
   * object, then a commit or a rider); else 0 (the producer's own limit
   * holds).
   */
  slotInlineMaxBytes(): number {
    if (!this.reserveSlots || !this.riders.shared() || !this.reservations.active()) return 0;
    return SLOT_MAX_BYTES;
  }

  /**
   * Once half of the held reservation is used, makes the next one in the
   * background (a commit of no batches that only reserves), so that appends
   * do not wait for a contended create when it runs out (§7.2). One at a
   * time; the appends that need a commit wait for it first.
   */
  private reserveAhead(): void {
    const count = this.reservations.aheadWanted();
    if (count === 0 || this.reservingAhead) return;
    const started = this.clock.now();
    this.reservingAhead = (async () => {
      try {
        let view = await this.freshHead(undefined);
        if (this.viewAgeMs(view, monotonicNow(this.clock)) >= this.riders.staleViewMs) {
          view = await this.catchUp(view, undefined);
        }
        await this.commitLoop([], view, {
          started,
          signal: undefined,
          stopOnLoss: false,
          scan: false,
          reserve: count,
        });
      } catch (e) {
        // Nothing of a caller's rides on it: the next append reserves in its own commit.
        this.logger.debug({ root: this.root, error: String(e) }, 'reservation ahead failed');
      } finally {
        this.reservingAhead = undefined;
      }
    })();
  }

  /** Waits for background writes: a head hint, a rider scan, rider deletions. */
  async settle(): Promise<void> {
    await this.marking?.catch(() => undefined);
    await this.reservingAhead;
    await this.reservations.close();
    await this.hintWrite;
    await this.riders.settle();
  }

  /** A subscription's cursor, or undefined when it does not exist. */
  async readCursor(
    subscription: string,
    signal?: AbortSignal,
  ): Promise<Versioned<Cursor> | undefined> {
    const key = this.cursorKey(subscription);
    const got = await getOrUndefined(this.store, key, signal);
    if (!got) return undefined;
    const cursor = decodeCursor(got.body, key);
    if (cursor.subscription !== subscription) {
      throw new CorruptDataError(`${key}: holds the cursor of "${cursor.subscription}"`, key);
    }
    return { value: cursor, version: got.version };
  }

  /**
   * Creates a subscription's cursor at `startAt`, create-only; an existing
   * subscription keeps its cursor (returned as it is).
   */
  async createCursor(
    subscription: string,
    startAt: StartAt,
    signal?: AbortSignal,
  ): Promise<Versioned<Cursor>> {
    const existing = await this.readCursor(subscription, signal);
    if (existing) return existing;
    const { next, commit } = await this.resolveStart(startAt, signal);
    const now = this.clock.now();
    const cursor: Cursor = {
      subscription,
      epoch: 0,
      next,
      commit,
      createdAtMs: now,
      updatedAtMs: now,
      holder: this.writer,
    };
    try {
      const { version } = await this.store.put(this.cursorKey(subscription), encodeCursor(cursor), {
        mode: 'create',
        signal,
      });
      if (startAt === 'oldest') return await this.keepUp({ value: cursor, version }, signal);
      return { value: cursor, version };
    } catch (e) {
      if (!(e instanceof PreconditionFailedError)) throw e;
      const now2 = await this.readCursor(subscription, signal);
      if (!now2) throw e;
      return now2;
    }
  }

  /**
   * A cursor just created at the oldest batch may already be below the
   * boundary, if a collection ran meanwhile: "oldest" means what is retained,
   * so it moves up to the boundary rather than report a loss it never had.
   */
  private async keepUp(
    created: Versioned<Cursor>,
    signal?: AbortSignal,
  ): Promise<Versioned<Cursor>> {
    let current = created;
    for (;;) {
      const { value: b } = await this.readBoundary(signal);
      if (current.value.next.sequence >= b.firstSequence) return current;
      const moved: Cursor = {
        ...current.value,
        next: { sequence: b.firstSequence, index: 0 },
        commit: b.firstCommit,
      };
      try {
        return { value: moved, version: await this.writeCursor(moved, current.version, signal) };
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
        const again = await this.readCursor(current.value.subscription, signal);
        // Somebody else holds it now (or deleted it): theirs to keep up.
        if (!again) throw e;
        if (again.value.createdAtMs !== current.value.createdAtMs) return again;
        current = again;
      }
    }
  }

  /** Writes a cursor over the version read; throws PreconditionFailedError when it changed. */
  async writeCursor(cursor: Cursor, version: string, signal?: AbortSignal): Promise<string> {
    const { version: next } = await this.store.put(
      this.cursorKey(cursor.subscription),
      encodeCursor(cursor),
      {
        mode: { ifMatch: version },
        signal,
      },
    );
    return next;
  }

  /** Names of the subscriptions, in byte order. */
  async subscriptions(signal?: AbortSignal): Promise<string[]> {
    const names: string[] = [];
    for await (const meta of this.store.list(this.subscriptionsPrefix, { signal })) {
      const name = meta.key.slice(this.subscriptionsPrefix.length);
      if (isSubscriptionName(name)) names.push(name);
    }
    return names;
  }

  /**
   * Every cursor object under the subscriptions' prefix, whatever its name.
   *
   * @throws {CorruptDataError} for one that does not decode.
   */
  async allCursors(signal?: AbortSignal): Promise<Cursor[]> {
    const out: Cursor[] = [];
    for await (const meta of this.store.list(this.subscriptionsPrefix, { signal })) {
      const got = await getOrUndefined(this.store, meta.key, signal);
      if (got) out.push(decodeCursor(got.body, meta.key));
    }
    return out;
  }

  /** Deletes a subscription: it no longer holds data back, and its holder is fenced. */
  async deleteSubscription(subscription: string, signal?: AbortSignal): Promise<void> {
    await this.store.delete(this.cursorKey(subscription), { signal });
  }

  /**
   * The position and the commit to start reading from for `startAt`.
   *
   * @throws {InvalidArgumentError} for a sequence already collected or past
   * the end of the log.
   */
  async resolveStart(
    startAt: StartAt,
    signal?: AbortSignal,
  ): Promise<{ next: Position; commit: number }> {
    const { value: b } = await this.readBoundary(signal);
    if (startAt === 'oldest') {
      return { next: { sequence: b.firstSequence, index: 0 }, commit: b.firstCommit };
    }
    const head = await this.discoverHead(signal);
    const end = { next: { sequence: head.endSequence, index: 0 }, commit: head.commit + 1 };
    if (startAt === 'latest') return this.closeRecentReservations(b, head, end, signal);
    if ('sequence' in startAt) {
      const s = startAt.sequence;
      if (s < b.firstSequence) {
        throw new InvalidArgumentError(
          `${this.root}: sequence ${s} was already collected; the oldest retained is ${b.firstSequence}`,
        );
      }
      if (s > head.endSequence) {
        throw new InvalidArgumentError(
          `${this.root}: sequence ${s} is past the end of the log (its next sequence is ${head.endSequence})`,
        );
      }
      if (s === head.endSequence) return end;
      // The first commit whose end (reserved sequences included) is above `s`: the one
      // holding it, or reserving it; its reader walks the slots from the reservation's
      // start and passes over the batches below `s`.
      const c = await this.searchCommits(
        b.firstCommit,
        head.commit,
        (x) => commitEnd(x) > s,
        signal,
      );
      return { next: { sequence: s, index: 0 }, commit: c?.commit ?? head.commit + 1 };
    }
    const t = startAt.timeMs;
    const c = await this.searchCommits(
      b.firstCommit,
      head.commit,
      (x) => x.appendTimeMs >= t,
      signal,
    );
    // Slots written into earlier reservations from now on are appended after t too.
    const late = await this.closeRecentReservations(b, head, end, signal);
    if (!c || late.next.sequence < c.firstSequence) return late;
    return { next: { sequence: c.firstSequence, index: 0 }, commit: c.commit };
  }

  /**
   * Where a subscription starts that must not miss what is appended from now
   * on (§7.5): the head's end, once the reservations of the last
   * {@link LATEST_LOOKBACK_COMMITS} commits are closed (their first slot not
   * written voided, so that nothing can be written below the head any
   * more); or, when a producer's slot won the race with such a void (it was
   * written just now), that slot.
   */
  private async closeRecentReservations(
    b: Boundary,
    head: Head,
    end: { next: Position; commit: number },
    signal: AbortSignal | undefined,
  ): Promise<{ next: Position; commit: number }> {
    let start = end;
    // Read after the head: absent now, no producer had reserved when the head was read.
    if (!(await this.everReserved(signal))) return start;
    const lowest = Math.max(b.firstCommit, head.commit - LATEST_LOOKBACK_COMMITS + 1);
    for (let hi = head.commit; hi >= lowest; hi -= LOOKBACK_READS) {
      const numbers = Array.from(
        { length: Math.min(LOOKBACK_READS, hi - lowest + 1) },
        (_, i) => hi - i,
      );
      const commits = await Promise.all(numbers.map((n) => this.readCommit(n, signal)));
      for (const c of commits) {
        if (!c) return start; // collected meanwhile: nothing older can be written
        if ((c.reserved ?? 0) === 0) continue;
        const s = await closeReservation(this.store, this.root, c, this.writer, signal);
        if (s !== undefined) start = { next: { sequence: s, index: 0 }, commit: c.commit };
      }
    }
    return start;
  }

  /**
   * The first commit in [lo, hi] for which `ok` holds, by bisection (`ok`
   * must be false then true along the log); undefined when none does.
   */
  async searchCommits(
    lo: number,
    hi: number,
    ok: (c: Commit) => boolean,
    signal?: AbortSignal,
  ): Promise<Commit | undefined> {
    let found: Commit | undefined;
    while (lo <= hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      const c = await this.readCommit(mid, signal);
      if (!c) {
        // Collected meanwhile: everything below is gone too.
        lo = mid + 1;
        continue;
      }
      if (ok(c)) {
        found = c;
        hi = mid - 1;
      } else {
        lo = mid + 1;
      }
    }
    return found;
  }
}

/** What a commit says about the head when it is the newest. */
export function headOf(c: Commit): Head {
  return {
    commit: c.commit,
    endSequence: commitEnd(c),
    appendTimeMs: c.appendTimeMs,
    totalBytes: c.totalBytes,
    totalRecords: c.totalRecords,
  };
}

/** Subscription names: 1-100 letters, digits, `.`, `_` and `-`, not starting with `.`. */
export function isSubscriptionName(name: string): boolean {
  return /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$/.test(name);
}

async function getOrUndefined(
  store: ObjectStore,
  key: string,
  signal?: AbortSignal,
): Promise<{ body: Uint8Array; version: string } | undefined> {
  try {
    const { body, version } = await store.get(key, { signal });
    return { body, version };
  } catch (e) {
    if (e instanceof NotFoundError) return undefined;
    throw e;
  }
}

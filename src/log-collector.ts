/**
 * The collector of the log layout: what no subscription still needs, and
 * what retention expired, is deleted, the boundary first. See
 * docs/log-layout.md for the argument.
 */
import { isUlid, ulidTimeMs } from './format/ulid.ts';
import { commitEnd, commitNumberOf, type Commit } from './format/log-commit.ts';
import { riderGroupOf } from './format/log-rider.ts';
import { slotSequenceOf } from './format/log-slot.ts';
import { decodeTrailer } from './format/trailer.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import { LOG_MIN_COMMIT_AGE_MS, type LogQueue } from './queue/log-queue.ts';
import { listSlots } from './queue/slot-listing.ts';
import type { ObjectMeta, StoreCallOptions } from './store/object-store.ts';
import { NotFoundError, QueueNotFoundError } from './errors.ts';

/** What a log collection did (or, dry, would do). */
export interface LogCollection {
  /** Commit, batch, slot, rider and probe objects deleted (or that would be). */
  deleted: string[];
  bytesDeleted: number;
  /** Batch objects kept. */
  kept: number;
  /** The first commit kept after the collection. */
  firstCommit: number;
  /**
   * Batches deleted by retention that some subscription had not acknowledged,
   * counted as sequences: the empty sequences of voided reservations count too.
   */
  expiredBatches: number;
}

/** What a log collection needs. */
export interface LogCollectionContext {
  log: LogQueue;
  /** The store's now, probed before anything was read. */
  storeNowMs: number;
  /** The collector's own clock's now. */
  nowMs: number;
  gracePeriodMs: number;
  dryRun: boolean;
  metrics: Metrics;
  logger: Logger;
  /** Keys of collectors' clock probes: never counted; deleted once older than the grace period. */
  isProbe: (key: string) => boolean;
  /** This collection's own probe, never deleted here. */
  probeKey?: string;
}

/** Keys deleted per request. */
const CHUNK = 1000;

/**
 * One collection of a log queue. Its cost is a few bisections of the log,
 * one read per subscription, reads of the newest commits it deletes (at
 * most 2000), and listings of what it deletes, of the slots and of the
 * batch objects.
 *
 * 1. The floor: the lowest cursor of every subscription (or the end of the
 *    log when there is none), raised to what retention keeps (`maxAgeMs` by
 *    the commits' store times, `maxBytes` by the commits' running totals
 *    plus the sizes of the slot objects, which those totals do not count).
 * 2. The cut: the first commit that holds a batch or a reserved sequence at
 *    or above the floor; no commit younger than the grace period (nor than
 *    {@link LOG_MIN_COMMIT_AGE_MS}) and never the newest commit is deleted.
 * 3. The boundary moves up to the cut (with `ifMatch`, only up), recording
 *    how far retention expired batches.
 * 4. Commits below the boundary are deleted, the batch objects of the
 *    newest of them (up to 2000) with them; then every slot object below
 *    the boundary's first sequence: the slots of the commits deleted (now or
 *    by an earlier collection that stopped half-way), and any that a stale
 *    producer or reader created again since.
 * 5. Riders a grace period old (by both clocks) are deleted: what is left of
 *    producers that died waiting, or of committers' best-effort deletes.
 * 6. Batch objects are deleted once older than the grace period by both
 *    clocks and uploaded more than a grace period before the first commit
 *    kept: a batch appended by a kept commit was uploaded at most a grace
 *    period before it. This takes the batches of deleted commits (a grace
 *    period later) and the orphans of producers that died before their
 *    commit alike.
 *
 * @throws {QueueNotFoundError} when no log queue lives at the root.
 */
export async function collectLog(
  c: LogCollectionContext,
  options: StoreCallOptions,
): Promise<LogCollection> {
  const { log } = c;
  const signal = options.signal;
  const descriptor = await log.readDescriptor(signal);
  if (!descriptor) {
    throw new QueueNotFoundError(
      log.descriptorKey,
      `${log.store.description}: no log queue at "${log.root}" (no "${log.descriptorKey}"); refusing to collect`,
    );
  }
  const { value: boundary } = await log.readBoundary(signal);
  const head = await log.discoverHead(signal);
  const result: LogCollection = {
    deleted: [],
    bytesDeleted: 0,
    kept: 0,
    firstCommit: boundary.firstCommit,
    expiredBatches: 0,
  };

  let firstKept = boundary.firstCommit;
  // The first sequence of commit `firstKept`: every slot below it lies in the reservation
  // of a commit below the boundary (reservations follow their commits' batches, and each
  // commit starts where the one before it ends, reserved sequences included).
  let firstKeptSequence = boundary.firstSequence;
  let firstKeptTimeMs: number | undefined;
  let skipOrphans = false;
  if (head.commit >= boundary.firstCommit) {
    // 1. The floor.
    let cursorFloor = head.endSequence;
    // Every cursor object counts, whatever its name; one that does not decode stops the
    // collection (CorruptDataError) rather than let its data go.
    for (const cursor of await log.allCursors(signal)) {
      cursorFloor = Math.min(cursorFloor, cursor.next.sequence);
    }
    const retention = descriptor.value.retention;
    let expiredFloor = 0;
    if (retention.maxAgeMs !== undefined) {
      const cutoff = c.storeNowMs - retention.maxAgeMs;
      const young = await firstCommitWhere(
        c,
        boundary.firstCommit,
        head.commit,
        (t) => t >= cutoff,
        signal,
      );
      expiredFloor = Math.max(
        expiredFloor,
        young === undefined ? head.endSequence : await firstSequenceOf(c, young, signal),
      );
    }
    if (retention.maxBytes !== undefined) {
      const maxBytes = retention.maxBytes;
      // Commit totals do not count slot batches. The slots of the commits from x on are
      // exactly the slot objects at or after x's first sequence (a commit's reservation
      // follows its batches, and the next commit starts at its end), so one listing of
      // `slots/` up to the head's end gives every candidate's retained slot bytes without
      // reading a slot. Its cost, every collection of a queue with `maxBytes`: one listing
      // request per 1000 slot objects the log keeps (one request when it keeps none), and
      // two numbers in memory per slot kept. A slot's size includes its header and
      // entries, a few dozen bytes per batch more than its batches' own; a slot written
      // after the listing is counted by the next collection.
      const listed = await listSlots(
        log.store,
        log.root,
        { from: boundary.firstSequence, until: head.endSequence },
        signal,
      );
      const kept = await log.searchCommits(
        boundary.firstCommit,
        head.commit,
        (x) => head.totalBytes - bytesBefore(x) + listed.bytesFrom(x.firstSequence) <= maxBytes,
        signal,
      );
      expiredFloor = Math.max(expiredFloor, kept?.firstSequence ?? head.endSequence);
    }
    const floor = Math.max(cursorFloor, expiredFloor);

    // 2. The cut: the first commit holding a batch (or reserving a sequence) at or above
    // the floor...
    const holding = await log.searchCommits(
      boundary.firstCommit,
      head.commit,
      (x) => commitEnd(x) > floor,
      signal,
    );
    let cut = holding?.commit ?? head.commit + 1;
    // ...but no commit younger than the grace period (and never than the protocol's
    // minimum, which writers' views of the head rely on), and never the newest.
    const minAgeMs = Math.max(c.gracePeriodMs, LOG_MIN_COMMIT_AGE_MS);
    const young = await firstCommitWhere(
      c,
      boundary.firstCommit,
      head.commit,
      (t) => c.storeNowMs - t < minAgeMs,
      signal,
    );
    if (young !== undefined) cut = Math.min(cut, young);
    cut = Math.min(cut, head.commit);

    // 3. The boundary.
    if (cut > boundary.firstCommit) {
      const first = await log.readCommit(cut, signal);
      if (first) {
        const expiredBelow =
          expiredFloor > cursorFloor
            ? Math.min(expiredFloor, first.firstSequence)
            : boundary.expiredBelow;
        if (expiredBelow > cursorFloor) {
          result.expiredBatches = Math.max(
            0,
            expiredBelow - Math.max(cursorFloor, boundary.expiredBelow),
          );
        }
        if (!c.dryRun) {
          const moved = await log.raiseBoundary(
            { firstCommit: cut, firstSequence: first.firstSequence, expiredBelow },
            signal,
          );
          firstKept = moved.firstCommit;
          firstKeptSequence = moved.firstSequence;
        } else {
          firstKept = cut;
          firstKeptSequence = first.firstSequence;
        }
      }
    }
    result.firstCommit = firstKept;
    firstKeptTimeMs = await commitTimeMs(c, firstKept, signal);
    if (firstKeptTimeMs === undefined) {
      // Another collection moved the boundary further and deleted it meanwhile: the
      // boundary's first commit is kept now, and its time is what the orphan rule needs.
      const { value: now } = await log.readBoundary(signal);
      firstKept = Math.max(firstKept, now.firstCommit);
      firstKeptSequence = Math.max(firstKeptSequence, now.firstSequence);
      firstKeptTimeMs = await commitTimeMs(c, now.firstCommit, signal);
    }
    // Still unknown: no orphan is judged this time (judged against no commit, every
    // old batch object would look like one).
    if (firstKeptTimeMs === undefined) skipOrphans = true;
  }

  // 4. Commits below the boundary. The newest of them (those right below it) are read
  // for their batch objects, which go at once; older ones are deleted unread, their
  // batch objects left to the time rule of step 5, so that a collection's reads stay
  // bounded however far it moves.
  const commitKeys: string[] = [];
  for await (const meta of log.store.list(`${log.root}/log/`, { signal })) {
    const n = commitNumberOf(log.root, meta.key);
    if (n === undefined) continue;
    if (n >= firstKept) break;
    commitKeys.push(meta.key);
    result.bytesDeleted += meta.size;
    if (commitKeys.length >= 2 * CHUNK) {
      await deleteKeys(c, commitKeys.splice(0, CHUNK), result, signal);
    }
  }
  const batchKeys = await batchesOf(c, commitKeys, signal);
  await deleteKeys(c, batchKeys, result, signal);
  await deleteKeys(c, commitKeys, result, signal);
  // The slots of those commits: every slot object below the boundary's first sequence,
  // found by listing `slots/` up to it rather than by naming every sequence the commits
  // reserved. The deletes are then only of slots that exist (a reservation voided early
  // leaves most of its sequences without one), the listing costs one request per 1000
  // of them (plus one), and it also takes the slots of the commits deleted unread above,
  // of commits an earlier collection deleted before it stopped, and any that a stale
  // producer or reader created again below the boundary. All are below the boundary as
  // stored, in reservations of commits below it: no reader goes there. After the
  // commits, so that a reader finds a commit missing (and learns of the collection from
  // the boundary) rather than a commit whose slots are gone.
  const slotKeys: string[] = [];
  for await (const meta of log.store.list(`${log.root}/slots/`, { signal })) {
    const s = slotSequenceOf(log.root, meta.key);
    if (s === undefined) continue;
    if (s >= firstKeptSequence) break;
    slotKeys.push(meta.key);
    result.bytesDeleted += meta.size;
    if (slotKeys.length >= 2 * CHUNK) {
      await deleteKeys(c, slotKeys.splice(0, CHUNK), result, signal);
    }
  }
  for (let i = 0; i < slotKeys.length; i += CHUNK) {
    await deleteKeys(c, slotKeys.slice(i, i + CHUNK), result, signal);
  }

  // 5. Riders a grace period old (a committer carries none older than the append
  // deadline, below the grace, so none whose batch objects step 6 may delete): an owner commits its rider within its append's
  // deadline or gives up, so an old one belongs to a producer that died (its append was
  // never acknowledged) or was left behind by a committer's best-effort delete.
  const riders: string[] = [];
  for await (const meta of log.store.list(log.ridersPrefix, { signal })) {
    const group = riderGroupOf(log.root, meta.key);
    if (group === undefined) continue;
    if (
      c.nowMs - ulidTimeMs(group) >= c.gracePeriodMs &&
      c.storeNowMs - meta.lastModified.getTime() >= c.gracePeriodMs
    ) {
      riders.push(meta.key);
      result.bytesDeleted += meta.size;
    }
  }
  for (let i = 0; i < riders.length; i += CHUNK) {
    await deleteKeys(c, riders.slice(i, i + CHUNK), result, signal);
  }
  // 6. Batch objects no kept commit can hold, and probes of collectors that died
  // before deleting theirs. Batch objects and probes sort before "log/" (a ULID
  // starts with a digit), so the listing stops there.
  const batches: ObjectMeta[] = [];
  const staleProbes: string[] = [];
  const end = `${log.root}/log/`;
  for await (const meta of log.store.list(`${log.root}/`, { signal })) {
    if (meta.key >= end) break;
    const rest = meta.key.slice(log.root.length + 1);
    if (rest.includes('/')) continue;
    if (c.isProbe(meta.key)) {
      if (
        meta.key !== c.probeKey &&
        c.storeNowMs - meta.lastModified.getTime() >= c.gracePeriodMs
      ) {
        staleProbes.push(meta.key);
      }
      continue;
    }
    if (!rest.endsWith('.batch')) continue;
    const ulid = rest.slice(0, -'.batch'.length);
    if (!isUlid(ulid)) continue;
    if (skipOrphans) {
      result.kept++;
      continue;
    }
    const uploaded = meta.lastModified.getTime();
    const old =
      c.nowMs - ulidTimeMs(ulid) >= c.gracePeriodMs &&
      c.storeNowMs - uploaded >= c.gracePeriodMs &&
      (firstKeptTimeMs === undefined || uploaded < firstKeptTimeMs - c.gracePeriodMs);
    if (old) batches.push(meta);
    else result.kept++;
  }
  for (let i = 0; i < batches.length; i += CHUNK) {
    const chunk = batches.slice(i, i + CHUNK);
    for (const m of chunk) result.bytesDeleted += m.size;
    await deleteKeys(
      c,
      chunk.map((m) => m.key),
      result,
      signal,
    );
  }
  if (!c.dryRun && staleProbes.length > 0) {
    await log.store.deleteMany(staleProbes, { signal }).catch(() => undefined);
  }
  if (result.expiredBatches > 0 && !c.dryRun) {
    c.metrics.increment('buffer.retention_expired_batches', result.expiredBatches);
  }
  return result;
}

/** The batch objects (not inline) of commits about to be deleted, read a few at a time. */
async function batchesOf(
  c: LogCollectionContext,
  commitKeys: readonly string[],
  signal: AbortSignal | undefined,
): Promise<string[]> {
  const out: string[] = [];
  const queue = [...commitKeys];
  const worker = async (): Promise<void> => {
    for (let key = queue.shift(); key !== undefined; key = queue.shift()) {
      let commit: Commit | undefined;
      try {
        commit = await c.log.readCommit(commitNumberOf(c.log.root, key) as number, signal);
      } catch (e) {
        // Below the boundary nobody reads it: it goes even if it does not decode.
        c.logger.warn(
          { key, error: String(e) },
          'collection: an unreadable commit below the boundary',
        );
      }
      for (const b of commit?.batches ?? []) {
        // readCommit refuses a commit naming objects elsewhere; this is the second lock.
        if (!b.inline && c.log.isBatchKey(b.entry.location)) out.push(b.entry.location);
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return out;
}

/** Deletes keys (unless dry), recording them. */
async function deleteKeys(
  c: LogCollectionContext,
  keys: string[],
  result: LogCollection,
  signal: AbortSignal | undefined,
): Promise<void> {
  if (keys.length === 0) return;
  if (!c.dryRun) await c.log.store.deleteMany(keys, { signal });
  result.deleted.push(...keys);
}

/** Bytes of the log before a commit: its running total less its own batches. */
function bytesBefore(x: Commit): number {
  let own = 0;
  for (const b of x.batches) own += decodeTrailer(b.entry.extension)?.batchSizeBytes ?? 0;
  return x.totalBytes - own;
}

/** The store time of a commit (its last-modified), or undefined when it is gone. */
async function commitTimeMs(
  c: LogCollectionContext,
  n: number,
  signal: AbortSignal | undefined,
): Promise<number | undefined> {
  try {
    return (await c.log.store.head(c.log.commitKey(n), { signal })).lastModified.getTime();
  } catch (e) {
    if (e instanceof NotFoundError) return undefined;
    throw e;
  }
}

/**
 * The first commit in [lo, hi] whose store time satisfies `ok` (false then
 * true along the log: commits are created in order), by bisection on their
 * last-modified times.
 */
async function firstCommitWhere(
  c: LogCollectionContext,
  lo: number,
  hi: number,
  ok: (timeMs: number) => boolean,
  signal: AbortSignal | undefined,
): Promise<number | undefined> {
  let found: number | undefined;
  while (lo <= hi) {
    const mid = lo + Math.floor((hi - lo) / 2);
    const t = await commitTimeMs(c, mid, signal);
    if (t === undefined) {
      lo = mid + 1;
      continue;
    }
    if (ok(t)) {
      found = mid;
      hi = mid - 1;
    } else {
      lo = mid + 1;
    }
  }
  return found;
}

async function firstSequenceOf(
  c: LogCollectionContext,
  n: number,
  signal: AbortSignal | undefined,
): Promise<number> {
  const commit = await c.log.readCommit(n, signal);
  return commit?.firstSequence ?? 0;
}

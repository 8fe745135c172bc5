/**
 * The collector of the log layout: what no subscription still needs, and
 * what retention expired, is deleted, the boundary first. See
 * docs/log-layout.md for the argument.
 */
import { isUlid, ulidTimeMs } from './format/ulid.ts';
import { commitEnd, commitNumberOf, type Commit } from './format/log-commit.ts';
import { decodeTrailer } from './format/trailer.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import type { LogQueue } from './queue/log-queue.ts';
import type { ObjectMeta, StoreCallOptions } from './store/object-store.ts';
import { NotFoundError, QueueNotFoundError } from './errors.ts';

/** What a log collection did (or, dry, would do). */
export interface LogCollection {
  /** Commit objects and batch objects deleted (or that would be). */
  deleted: string[];
  bytesDeleted: number;
  /** Batch objects kept. */
  kept: number;
  /** The first commit kept after the collection. */
  firstCommit: number;
  /** Batches deleted by retention that some subscription had not acknowledged. */
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
  /** Keys a collection's own probes use: never counted. */
  isProbe: (key: string) => boolean;
}

/** Keys deleted per request, and commits read per chunk. */
const CHUNK = 1000;

/**
 * One collection of a log queue.
 *
 * 1. The floor: the lowest cursor of every subscription (or the end of the
 *    log when there is none), raised to what retention keeps (`maxAgeMs` by
 *    the commits' store times, `maxBytes` by the commits' running totals).
 * 2. The cut: the first commit that holds a batch at or above the floor; no
 *    commit younger than the grace period and never the newest commit are
 *    deleted.
 * 3. The boundary moves up to the cut (with `ifMatch`, only up), recording
 *    how far retention expired batches, so that a cursor below it reports
 *    its loss once.
 * 4. Commits below the boundary are read for their batch objects, and both
 *    are deleted.
 * 5. Orphans (batch objects of producers that died before their commit) are
 *    deleted once older than the grace period by both clocks and uploaded
 *    more than a grace period before the first commit kept: a batch appended
 *    by a kept commit was uploaded at most a grace period before it.
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
  let firstKeptTimeMs: number | undefined;
  if (head.commit >= boundary.firstCommit) {
    // 1. The floor.
    let cursorFloor = head.endSequence;
    for (const name of await log.subscriptions(signal)) {
      const cursor = await log.readCursor(name, signal);
      if (cursor) cursorFloor = Math.min(cursorFloor, cursor.value.next.sequence);
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
      const kept = await log.searchCommits(
        boundary.firstCommit,
        head.commit,
        (x) => head.totalBytes - bytesBefore(x) <= maxBytes,
        signal,
      );
      expiredFloor = Math.max(expiredFloor, kept?.firstSequence ?? head.endSequence);
    }
    const floor = Math.max(cursorFloor, expiredFloor);

    // 2. The cut: the first commit holding a batch at or above the floor...
    const holding = await log.searchCommits(
      boundary.firstCommit,
      head.commit,
      (x) => commitEnd(x) > floor,
      signal,
    );
    let cut = holding?.commit ?? head.commit + 1;
    // ...but no commit younger than the grace period, and never the newest.
    const young = await firstCommitWhere(
      c,
      boundary.firstCommit,
      head.commit,
      (t) => c.storeNowMs - t < c.gracePeriodMs,
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
        } else {
          firstKept = cut;
        }
      }
    }
    result.firstCommit = firstKept;
    firstKeptTimeMs = await commitTimeMs(c, firstKept, signal);
  }

  // 4. Commits below the boundary, and their batch objects.
  const commitKeys: string[] = [];
  for await (const meta of log.store.list(`${log.root}/log/`, { signal })) {
    const n = commitNumberOf(log.root, meta.key);
    if (n === undefined) continue;
    if (n >= firstKept) break;
    commitKeys.push(meta.key);
    result.bytesDeleted += meta.size;
    if (commitKeys.length >= CHUNK) await deleteCommits(c, commitKeys.splice(0), result, signal);
  }
  await deleteCommits(c, commitKeys, result, signal);

  // 5. Orphans.
  const orphans: ObjectMeta[] = [];
  for await (const meta of log.store.list(`${log.root}/`, { signal })) {
    const rest = meta.key.slice(log.root.length + 1);
    if (rest.includes('/') || !rest.endsWith('.batch')) continue;
    const ulid = rest.slice(0, -'.batch'.length);
    if (!isUlid(ulid) || c.isProbe(meta.key)) continue;
    const uploaded = meta.lastModified.getTime();
    const old =
      c.nowMs - ulidTimeMs(ulid) >= c.gracePeriodMs &&
      c.storeNowMs - uploaded >= c.gracePeriodMs &&
      (firstKeptTimeMs === undefined || uploaded < firstKeptTimeMs - c.gracePeriodMs);
    if (old) orphans.push(meta);
    else result.kept++;
  }
  for (let i = 0; i < orphans.length; i += CHUNK) {
    const keys = orphans.slice(i, i + CHUNK).map((m) => m.key);
    if (!c.dryRun) await log.store.deleteMany(keys, { signal });
    result.deleted.push(...keys);
    for (const m of orphans.slice(i, i + CHUNK)) result.bytesDeleted += m.size;
  }
  if (result.expiredBatches > 0) {
    c.metrics.increment('buffer.retention_expired_batches', result.expiredBatches);
  }
  return result;
}

/** Reads commits to delete for their batch objects, then deletes both (batches first). */
async function deleteCommits(
  c: LogCollectionContext,
  commitKeys: string[],
  result: LogCollection,
  signal: AbortSignal | undefined,
): Promise<void> {
  if (commitKeys.length === 0) return;
  const batchKeys: string[] = [];
  for (const key of commitKeys) {
    const n = commitNumberOf(c.log.root, key) as number;
    let commit: Commit | undefined;
    try {
      commit = await c.log.readCommit(n, signal);
    } catch (e) {
      // A commit that does not decode still goes: it is below the boundary, nobody reads it.
      if (e instanceof NotFoundError) continue;
      c.logger.warn(
        { key, error: String(e) },
        'collection: an unreadable commit below the boundary',
      );
    }
    for (const b of commit?.batches ?? []) if (!b.inline) batchKeys.push(b.entry.location);
  }
  if (!c.dryRun) {
    if (batchKeys.length > 0) await c.log.store.deleteMany(batchKeys, { signal });
    await c.log.store.deleteMany(commitKeys, { signal });
  }
  result.deleted.push(...batchKeys, ...commitKeys);
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

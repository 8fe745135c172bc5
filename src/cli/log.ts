/**
 * Reading a log queue for the commands that show it: its commits in order,
 * the commit holding a batch, and its subscriptions in the commands' JSON
 * shape. Reads only.
 */
import { CorruptDataError } from '../errors.ts';
import {
  isUlid,
  parseInlineLocation,
  ulidTimeMs,
  type Commit,
  type CommitBatch,
  type LogQueue,
} from '../internal.ts';
import type { SubscriptionInfo } from '../queue/log-inspect.ts';

/** Commits read at once while walking the log. */
const READ_AHEAD_COMMITS = 8;

/**
 * The log's commits in order, from `from` (default: the boundary's first
 * commit) through `to` (default: the head found when the walk starts). A
 * commit collected while the walk runs is skipped, as the collector moved
 * the boundary past it; a commit missing above the boundary is corrupt data.
 */
export async function* logCommits(
  log: LogQueue,
  range: { from?: number; to?: number } = {},
): AsyncIterable<Commit> {
  const { value: boundary } = await log.readBoundary();
  const to = range.to ?? (await log.discoverHead()).commit;
  let n = Math.max(range.from ?? boundary.firstCommit, boundary.firstCommit);
  const ahead = new Map<number, Promise<Commit | undefined>>();
  const read = (k: number): Promise<Commit | undefined> => {
    let p = ahead.get(k);
    if (!p) {
      p = log.readCommit(k);
      // Settled by the walk; a read ahead that the walk never reaches must not go unhandled.
      p.catch(() => undefined);
      ahead.set(k, p);
    }
    return p;
  };
  while (n <= to) {
    for (let k = n; k <= Math.min(to, n + READ_AHEAD_COMMITS - 1); k++) void read(k);
    const c = await read(n);
    ahead.delete(n);
    if (c) {
      yield c;
      n++;
      continue;
    }
    const { value: now } = await log.readBoundary();
    if (n >= now.firstCommit) {
      throw new CorruptDataError(
        `${log.commitKey(n)}: missing, but the boundary keeps commits from ${now.firstCommit} and the head is at least ${to}`,
        log.commitKey(n),
      );
    }
    // Collected meanwhile: go on from what is kept.
    for (const k of ahead.keys()) if (k < now.firstCommit) ahead.delete(k);
    n = now.firstCommit;
  }
}

/** A batch of the log found by its location, with the commit that holds it. */
export interface LogBatch {
  commit: Commit;
  batch: CommitBatch;
}

/** How long after its upload (its ULID time) a batch may still be appended, in ms, searched past. */
const APPEND_SLACK_MS = 30 * 60 * 1000;

/**
 * The commit and batch of a location in the log, or undefined when the log
 * does not hold it (collected, orphaned, or not a batch of this queue). An
 * inline location names its commit; a batch object's ULID name bounds the
 * search to the commits appended around its upload (a batch is appended
 * after it is uploaded, by the same producer's clock); other names are
 * searched for in every commit.
 */
export async function findLogBatch(log: LogQueue, location: string): Promise<LogBatch | undefined> {
  const inline = parseInlineLocation(log.root, location);
  if (inline) {
    const commit = await log.readCommit(inline.commit);
    const batch = commit?.batches[inline.index];
    return commit && batch ? { commit, batch } : undefined;
  }
  const name = location.slice(location.lastIndexOf('/') + 1).replace(/\.batch$/, '');
  let from: number | undefined;
  let until = Infinity;
  if (isUlid(name)) {
    const uploaded = ulidTimeMs(name);
    const head = await log.discoverHead();
    const { value: b } = await log.readBoundary();
    // Clocks of producers differ: start a little before, and stop well after.
    const first = await log.searchCommits(
      b.firstCommit,
      head.commit,
      (c) => c.appendTimeMs >= uploaded - APPEND_SLACK_MS,
    );
    if (!first) return undefined;
    from = first.commit;
    until = uploaded + APPEND_SLACK_MS;
  }
  for await (const commit of logCommits(log, from === undefined ? {} : { from })) {
    const batch = commit.batches.find((x) => x.entry.location === location);
    if (batch) return { commit, batch };
    if (commit.appendTimeMs > until) return undefined;
  }
  return undefined;
}

/** A subscription in the commands' JSON shape (snake_case). */
export interface SubscriptionJson {
  name: string;
  next_sequence: number;
  next_index: number;
  epoch: number;
  holder: string;
  lag_batches: number;
  lag_entries: number;
  lag_bytes: number;
  oldest_unacked_age_ms: number | null;
  created_at_ms: number;
  updated_at_ms: number;
  last_loss: { first_sequence: number; last_sequence: number; reported_at_ms: number } | null;
}

/** {@link SubscriptionInfo} in the commands' JSON shape. */
export function subscriptionJson(s: SubscriptionInfo): SubscriptionJson {
  return {
    name: s.name,
    next_sequence: s.nextSequence,
    next_index: s.nextIndex,
    epoch: s.epoch,
    holder: s.holder,
    lag_batches: s.lagBatches,
    lag_entries: s.lagEntries,
    lag_bytes: s.lagBytes,
    oldest_unacked_age_ms: s.oldestUnackedAgeMs,
    created_at_ms: s.createdAtMs,
    updated_at_ms: s.updatedAtMs,
    last_loss: s.lastLoss
      ? {
          first_sequence: s.lastLoss.firstSequence,
          last_sequence: s.lastLoss.lastSequence,
          reported_at_ms: s.lastLoss.reportedAtMs,
        }
      : null,
  };
}

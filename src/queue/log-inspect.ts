/**
 * Reading a log queue without changing it: its subscriptions with their lag,
 * and its batches from a position (the non-fencing reader).
 */
import { sleep, type Clock } from '../clock.ts';
import { InvalidArgumentError } from '../errors.ts';
import { decodeBatch } from '../format/batch.ts';
import { commitEnd, type Commit } from '../format/log-commit.ts';
import type { Cursor } from '../format/log-objects.ts';
import { decodeTrailer } from '../format/trailer.ts';
import { describeEntry, fetchBatchObject } from './batch-fetch.ts';
import type { Head, LogQueue } from './log-queue.ts';
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
  /** Batches, entries and bytes appended and not yet acknowledged. */
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

/** Every subscription with its lag. */
export async function subscriptionInfos(
  log: LogQueue,
  nowMs: number,
  signal?: AbortSignal,
): Promise<SubscriptionInfo[]> {
  const head = await log.discoverHead(signal);
  const out: SubscriptionInfo[] = [];
  for (const name of await log.subscriptions(signal)) {
    const cursor = (await log.readCursor(name, signal))?.value;
    if (!cursor) continue;
    const info: SubscriptionInfo = {
      name,
      nextSequence: cursor.next.sequence,
      nextIndex: cursor.next.index,
      epoch: cursor.epoch,
      holder: cursor.holder,
      lagBatches: Math.max(0, head.endSequence - cursor.next.sequence),
      lagEntries: 0,
      lagBytes: 0,
      oldestUnackedAgeMs: null,
      createdAtMs: cursor.createdAtMs,
      updatedAtMs: cursor.updatedAtMs,
      lastLoss: cursor.lastLoss ?? null,
      sharedReaders: cursor.readers ?? {},
    };
    const holding = await commitHolding(log, cursor.next.sequence, cursor.commit, head, signal);
    if (holding) {
      const before = totalsBefore(holding);
      let bytes = before.bytes;
      let records = before.records;
      for (const b of holding.batches) {
        if (b.entry.sequence >= cursor.next.sequence) break;
        bytes += decodeTrailer(b.entry.extension)?.batchSizeBytes ?? 0;
        records += b.records;
      }
      info.lagBytes = Math.max(0, head.totalBytes - bytes);
      info.lagEntries = Math.max(0, head.totalRecords - records - cursor.next.index);
      const batch = holding.batches[cursor.next.sequence - holding.firstSequence];
      const item = batch?.entry.metadata.filter((m) => m.startIndex <= cursor.next.index).at(-1);
      if (item) info.oldestUnackedAgeMs = Math.max(0, nowMs - item.ingestionTimeMs);
    }
    out.push(info);
  }
  return out;
}

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
  while (!signal?.aborted) {
    const c = await log.readCommit(commit, signal);
    if (!c) {
      const { value: now } = await log.readBoundary(signal);
      if (commit < now.firstCommit) {
        // Collected while we read: go on from what is kept.
        commit = now.firstCommit;
        next = Math.max(next, now.firstSequence);
        continue;
      }
      if (!o.follow) return;
      try {
        await sleep(o.pollIntervalMs, { signal, clock: o.clock });
      } catch {
        return;
      }
      continue;
    }
    for (const [i, cb] of c.batches.entries()) {
      if (cb.entry.sequence < next) continue;
      if (signal?.aborted) return;
      const d = describeEntry(cb.entry);
      const body = cb.inline ?? (await fetchBatchObject(log.store, d, signal));
      const { records } = await decodeBatch(body, d.location, { maxBatchBytes: o.maxBatchBytes });
      yield {
        sequence: c.firstSequence + i,
        location: d.location,
        entries: records,
        metadata: d.metadata,
      };
      next = cb.entry.sequence + 1;
    }
    commit = c.commit + 1;
  }
}

/**
 * Logs with reservations built by hand, for the tests of the collector and
 * the command line: version-2 commits of inline batches, each followed by
 * its slots (batches or a void), all written create-only.
 */
import { Queue, type ObjectStore } from '../../src/index.ts';
import { encodeBatch } from '../../src/format/batch.ts';
import { crc32c } from '../../src/format/crc32c.ts';
import {
  commitEnd,
  commitKey,
  encodeCommit,
  inlineLocation,
  slotStart,
  type Commit,
  type CommitBatch,
} from '../../src/format/log-commit.ts';
import { encodeSlot, slotKey, slotLocation, slotToken } from '../../src/format/log-slot.ts';
import { encodeTrailer } from '../../src/format/trailer.ts';
import { LogQueue } from '../../src/queue/log-queue.ts';

const enc = new TextEncoder();

/** The queue's root in these logs. */
export const ROOT = 'ingest';

/** One commit to build: its own batches, the sequences it reserves, and its slots in order. */
export interface CommitPlan {
  batches?: string[];
  reserved?: number;
  /** Slots from the reservation's start, in order: the batches of each, or a void. */
  slots?: (string[] | 'void')[];
}

/** What {@link buildLog} wrote. */
export interface Built {
  commits: Commit[];
  /** Keys of the slots written, by commit. */
  slotKeys: string[][];
}

/** An inline batch of one record. */
export async function batchOf(
  text: string,
  sequence: number,
  location: string,
): Promise<CommitBatch> {
  const inline = await encodeBatch([enc.encode(text)]);
  return {
    entry: {
      sequence,
      location,
      metadata: [],
      extension: encodeTrailer({
        batchSizeBytes: inline.byteLength,
        crc32c: crc32c(inline),
        instanceId: 'hand',
      }),
    },
    records: 1,
    inline,
  };
}

/** A slot's bytes: the batches given (sequences from `sequence`), or a void when none. */
export function slotBytes(
  reserving: Commit,
  sequence: number,
  batches: CommitBatch[],
  writer = 'hand',
): Uint8Array {
  return encodeSlot(
    {
      commit: reserving.commit,
      firstSequence: sequence,
      endSequence: commitEnd(reserving),
      writer,
      token: slotToken(),
      batches,
    },
    ROOT,
  );
}

/**
 * Writes a log queue of the commits planned (from commit 0), each followed by
 * its slots, with no subscription.
 */
export async function buildLog(store: ObjectStore, plans: CommitPlan[]): Promise<Built> {
  await new LogQueue({ store, root: ROOT }).ensureCreated();
  // The tests place the subscriptions that hold data back themselves.
  await Queue.open({ store }).deleteSubscription('default');
  const built: Built = { commits: [], slotKeys: [] };
  let sequence = 0;
  let totalBytes = 0;
  let totalRecords = 0;
  for (const [n, plan] of plans.entries()) {
    const batches: CommitBatch[] = [];
    for (const [i, text] of (plan.batches ?? []).entries()) {
      const b = await batchOf(text, sequence + i, inlineLocation(ROOT, n, i));
      batches.push(b);
      totalBytes += b.inline!.byteLength;
      totalRecords += b.records;
    }
    const commit: Commit = {
      commit: n,
      firstSequence: sequence,
      appendTimeMs: 1_700_000_000_000 + n,
      totalBytes,
      totalRecords,
      writer: 'hand',
      batches,
      ...(plan.reserved ? { reserved: plan.reserved } : {}),
    };
    await store.put(commitKey(ROOT, n), encodeCommit(commit), { mode: 'create' });
    const keys: string[] = [];
    let s = slotStart(commit);
    for (const slot of plan.slots ?? []) {
      const slotBatches: CommitBatch[] = [];
      if (slot !== 'void') {
        for (const [i, text] of slot.entries()) {
          slotBatches.push(await batchOf(text, s + i, slotLocation(ROOT, s, i)));
        }
      }
      await store.put(slotKey(ROOT, s), slotBytes(commit, s, slotBatches), { mode: 'create' });
      keys.push(slotKey(ROOT, s));
      s = slot === 'void' ? commitEnd(commit) : s + slot.length;
    }
    built.commits.push(commit);
    built.slotKeys.push(keys);
    sequence = commitEnd(commit);
  }
  return built;
}

/**
 * Commit 0: batch 0, reserves 1-4: slot 1 (batches 1, 2), a void at 3 (3, 4).
 * Commit 1: no batch, reserves 5-7: slot 5 (one batch), slot 6 (two).
 * Commit 2: batch 8, reserves 9-10: slot 9 (one batch), 10 not written.
 * Commit 3: batch 11, the head.
 */
export const PLAN: CommitPlan[] = [
  { batches: ['a'], reserved: 4, slots: [['b', 'c'], 'void'] },
  { reserved: 3, slots: [['d'], ['e', 'f']] },
  { batches: ['g'], reserved: 2, slots: [['h']] },
  { batches: ['i'] },
];

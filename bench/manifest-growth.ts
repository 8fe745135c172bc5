/**
 * Case (e): the cost of one durable append as the backlog grows, in both
 * layouts. The backlog is seeded synthetically (a v1 manifest of `pending`
 * entries, or log commits holding `pending` batches, all pending for the
 * default subscription); the appends measured are real `Producer` appends of
 * one 1 KiB entry each, awaited one after another, against that queue.
 */
import { Producer, Queue, type Layout, type ObjectStore } from '../src/index.ts';
import {
  commitKey,
  encodeCommit,
  encodeManifest,
  encodeTrailer,
  type CommitBatch,
  type ManifestEntry,
} from '../src/internal.ts';
import { RequestCount, type RequestTally } from './request-count.ts';
import { entryPool } from './stats.ts';

/** Batches per seeded log commit: 1M pending entries are 100 commits of about 1.4 MB. */
export const SEED_BATCHES_PER_COMMIT = 10_000;
/** Appends measured on the log: 64 commits hold exactly one head hint (written every 64th commit). */
export const LOG_APPENDS = 64;

/** The cost of one append with `pending` entries queued. */
export interface AppendCost {
  /** Mean milliseconds from `produce()` to `durable`, over the measured appends. */
  msPerAppend: number;
  /** Requests and bytes written per measured append. */
  perAppend: RequestTally;
  /** The first append (not measured): it finds the layout, and on the log the head. */
  firstAppendMs: number;
  firstAppendRequests: number;
  /** Objects the backlog was seeded as (the manifest, or the commits). */
  seedObjects: number;
  seedBytes: number;
}

/** Seeds `pending` entries in `layout`, then measures `appends` Producer appends. */
export async function appendCost(
  inner: ObjectStore,
  layout: Layout,
  pending: number,
  appends: number,
): Promise<AppendCost> {
  const count = new RequestCount(inner);
  const seeded =
    layout === 'v1' ? await seedManifest(inner, pending) : await seedLog(inner, pending);
  const producer = new Producer({ store: count.store, layout, flushIntervalMs: 0 });
  const entry = entryPool(1024, 1)[0] as Uint8Array;
  try {
    let mark = count.mark();
    const t0 = performance.now();
    await (
      await producer.produce([entry])
    ).durable;
    const firstAppendMs = performance.now() - t0;
    const first = count.since(mark);
    mark = count.mark();
    let ms = 0;
    for (let i = 0; i < appends; i++) {
      const s = performance.now();
      await (
        await producer.produce([entry])
      ).durable;
      ms += performance.now() - s;
    }
    // A head hint is started as its commit lands; let it reach the store before counting.
    await new Promise((resolve) => setImmediate(resolve));
    return {
      msPerAppend: ms / appends,
      perAppend: count.since(mark, appends),
      firstAppendMs,
      firstAppendRequests: first.requests,
      seedObjects: seeded.objects,
      seedBytes: seeded.bytes,
    };
  } finally {
    await producer.close();
  }
}

const extension = encodeTrailer({
  batchSizeBytes: 1 << 20,
  crc32c: 0x12345678,
  instanceId: 'bench-producer-0000000000000000000',
});

/** Pending entries naming 1 MiB batch objects of 1,000 records (never read), all ingested at one time. */
function entryMaker(timeMs: number): (sequence: number) => ManifestEntry {
  const metadata = [{ startIndex: 0, ingestionTimeMs: timeMs, payload: new Uint8Array() }];
  return (sequence) => ({
    sequence,
    location: `ingest/01JBENCH${String(sequence).padStart(18, '0')}.batch`,
    metadata,
    extension,
  });
}

/** A v1 manifest of `pending` entries, at the default path. */
async function seedManifest(
  store: ObjectStore,
  pending: number,
): Promise<{ objects: number; bytes: number }> {
  const entry = entryMaker(Date.now());
  const entries = Array.from({ length: pending }, (_, i) => entry(i));
  const body = encodeManifest({ epoch: 1, nextSequence: pending, entries });
  await store.put('ingest/manifest', body);
  return { objects: 1, bytes: body.byteLength };
}

/**
 * A log queue (descriptor, default subscription at the oldest batch) and
 * commits 0.. holding `pending` batches, {@link SEED_BATCHES_PER_COMMIT} to a
 * commit, with running totals as a producer would have written them.
 */
async function seedLog(
  store: ObjectStore,
  pending: number,
): Promise<{ objects: number; bytes: number }> {
  const queue = Queue.open({ store, layout: 'log' });
  const log = queue.logQueue();
  await log.ensureCreated();
  const now = Date.now();
  const entry = entryMaker(now);
  let objects = 0;
  let bytes = 0;
  for (let first = 0; first < pending; first += SEED_BATCHES_PER_COMMIT) {
    const n = Math.min(SEED_BATCHES_PER_COMMIT, pending - first);
    const batches: CommitBatch[] = Array.from({ length: n }, (_, i) => ({
      entry: entry(first + i),
      records: 1000,
    }));
    const body = encodeCommit({
      commit: objects,
      firstSequence: first,
      appendTimeMs: now,
      totalBytes: (first + n) * (1 << 20),
      totalRecords: (first + n) * 1000,
      writer: 'bench-seed',
      batches,
    });
    await store.put(commitKey(log.root, objects), body, { mode: 'create' });
    objects++;
    bytes += body.byteLength;
  }
  await queue.close();
  return { objects, bytes };
}

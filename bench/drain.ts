/** Case (d): a consumer drains a prepared backlog with read-ahead 1, 8 or 32. */
import { Consumer, Producer, type ObjectStore } from '../src/index.ts';
import { entryPool } from './stats.ts';

/** Fills the queue with `batches` batches of `entriesPerBatch` 1 KiB entries; returns their keys. */
export async function fillBacklog(
  store: ObjectStore,
  batches: number,
  entriesPerBatch: number,
): Promise<string[]> {
  const pool = entryPool(1024);
  const producer = new Producer({ store, flushIntervalMs: 60_000, maxConcurrentUploads: 8 });
  const locations: Promise<{ location: string }>[] = [];
  for (let b = 0; b < batches; b++) {
    const { durable } = await producer.produce(
      Array.from({ length: entriesPerBatch }, (_, i) => pool[i % pool.length] as Uint8Array),
    );
    locations.push(durable);
    await producer.flush();
  }
  await producer.close();
  // An inline batch's location names its commit and its place there: read the commit object.
  const keys = (await Promise.all(locations)).map((r) => r.location.replace(/#\d+$/, ''));
  return [...new Set(keys)];
}

/** Drains the whole queue; MB/s of batch objects read and entries/s. */
export async function drain(
  store: ObjectStore,
  readAheadBatches: number,
  subscription = 'default',
): Promise<{ mbPerSecond: number; entriesPerSecond: number }> {
  const consumer = await Consumer.open({
    store,
    subscription,
    startAt: 'oldest',
    readAheadBatches,
    readAheadBytes: 1024 * 1024 * 1024,
    gcIntervalMs: 0,
  });
  let entries = 0;
  let bytes = 0;
  const t0 = performance.now();
  for (;;) {
    const batch = await consumer.next();
    if (!batch) break;
    entries += batch.entries.length;
    for (const e of batch.entries) bytes += e.byteLength + 4;
    await consumer.ack(batch.sequence);
  }
  await consumer.flush();
  const seconds = (performance.now() - t0) / 1000;
  await consumer.close();
  return { mbPerSecond: bytes / 1e6 / seconds, entriesPerSecond: entries / seconds };
}

/** Case (a): produce as fast as backpressure allows, one entry per call, await all at the end. */
import { Producer, type Compression, type ObjectStore } from '../src/index.ts';
import { entryPool } from './stats.ts';

/** Entries per second and MB/s of entry bytes made durable. */
export interface OpenLoopResult {
  entries: number;
  entriesPerSecond: number;
  mbPerSecond: number;
}

/** Produces entries of `entryBytes` until `totalBytes` have been produced. */
export async function openLoop(
  store: ObjectStore,
  entryBytes: number,
  compression: Compression,
  totalBytes: number,
): Promise<OpenLoopResult> {
  const pool = entryPool(entryBytes);
  const count = Math.max(1, Math.floor(totalBytes / entryBytes));
  const producer = new Producer({ store, compression });
  const t0 = performance.now();
  let last: Promise<unknown> = Promise.resolve();
  for (let i = 0; i < count; i++) {
    last = (await producer.produce([pool[i % pool.length] as Uint8Array])).durable;
  }
  // The last batch is flushed at once, as close() would, not after flushIntervalMs.
  await producer.flush();
  await last;
  await producer.close();
  const seconds = (performance.now() - t0) / 1000;
  return {
    entries: count,
    entriesPerSecond: count / seconds,
    mbPerSecond: (count * entryBytes) / 1e6 / seconds,
  };
}

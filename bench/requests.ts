/** Case (g): store requests per GB ingested at default settings, produce to collection. */
import { Consumer, GarbageCollector, Producer, type ObjectStore } from '../src/index.ts';
import { FaultInjectingStore } from '../src/testing.ts';
import { entryPool } from './stats.ts';

/** Requests by kind per GB of entry bytes. */
export interface RequestsPerGb {
  put: number;
  get: number;
  head: number;
  list: number;
  delete: number;
}

/**
 * One producer (defaults) writes `totalBytes` of 1 KiB entries open loop while a
 * consumer (defaults) drains and acknowledges; then one collection. Counts
 * every request that reached the store.
 */
export async function requestsPerGb(
  inner: ObjectStore,
  totalBytes: number,
): Promise<RequestsPerGb> {
  const store = new FaultInjectingStore(inner);
  const pool = entryPool(1024);
  const producer = new Producer({ store });
  const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
  const count = Math.floor(totalBytes / 1024);
  let done = false;
  const draining = (async () => {
    for (;;) {
      // Only a read that began after the producer finished may end the drain.
      const finished = done;
      const batch = await consumer.next();
      if (batch) {
        await consumer.ack(batch.sequence);
        continue;
      }
      if (finished) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  let last: Promise<unknown> = Promise.resolve();
  for (let i = 0; i < count; i++)
    last = (await producer.produce([pool[i % pool.length] as Uint8Array])).durable;
  await last;
  await producer.close();
  done = true;
  await draining;
  await consumer.close();
  await new GarbageCollector({ store, gcGracePeriodMs: 0 }).run();
  const gb = (count * 1024) / 1e9;
  const c = store.stats.calls;
  return {
    put: c.put / gb,
    get: c.get / gb,
    head: c.head / gb,
    list: c.list / gb,
    delete: (c.delete + c.deleteMany) / gb,
  };
}

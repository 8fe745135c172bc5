/**
 * Case (j): `Consumer.process()` over a backlog of 1 KiB entries in batches
 * of 100, in each delivery style: entries processed per second and store
 * requests per entry (what recording positions costs), with a handler that
 * does no work, and with one that waits `handlerMs` (as a call downstream
 * would) at concurrency 1 and 8.
 */
import { setTimeout as wait } from 'node:timers/promises';
import { Consumer, Producer, type Delivery, type ObjectStore } from '../src/index.ts';
import { RequestCount } from './request-count.ts';
import { entryPool } from './stats.ts';

/** What one run measured. */
export interface ProcessCost {
  entriesPerSecond: number;
  requestsPerEntry: number;
  putsPerEntry: number;
  getsPerEntry: number;
}

/** Writes `entries` 1 KiB entries in batches of 100. */
export async function processBacklog(store: ObjectStore, entries: number): Promise<void> {
  const pool = entryPool(1024);
  const producer = new Producer({ store, flushIntervalMs: 0, maxConcurrentUploads: 8 });
  const handles: Promise<unknown>[] = [];
  for (let i = 0; i < entries; i += 100) {
    const batch = Array.from(
      { length: Math.min(100, entries - i) },
      (_, j) => pool[(i + j) % pool.length] as Uint8Array,
    );
    handles.push((await producer.produce(batch)).durable);
    await producer.flush();
  }
  await Promise.all(handles);
  await producer.close();
}

/** Processes the whole backlog of subscription `subscription` in `delivery` style. */
export async function processCost(
  store: ObjectStore,
  subscription: string,
  delivery: Delivery,
  concurrency: number,
  handlerMs: number,
): Promise<ProcessCost> {
  const counted = new RequestCount(store);
  const consumer = await Consumer.open({
    store: counted.store,
    subscription,
    gcIntervalMs: 0,
    ...(delivery === 'at-least-once' ? { shared: true } : {}),
  });
  const mark = counted.mark();
  const t0 = performance.now();
  const r = await consumer.process(
    handlerMs > 0 ? async () => wait(handlerMs, 'commit' as const) : () => 'commit',
    { delivery, concurrency },
  );
  const seconds = (performance.now() - t0) / 1000;
  const used = counted.since(mark, Math.max(1, r.committed));
  await consumer.close();
  return {
    entriesPerSecond: r.committed / seconds,
    requestsPerEntry: used.requests,
    putsPerEntry: used.put,
    getsPerEntry: used.get,
  };
}

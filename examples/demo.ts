/**
 * The main job until the `spillway` CLI lands: three producers write to a
 * local directory store while one consumer drains it; prints what happened.
 *
 *   npm run demo [-- file:./somewhere]
 */
import { Consumer, GarbageCollector, openStore, Producer } from '../src/index.ts';

const url = process.argv[2] ?? 'file:./.spillway-demo';
const store = openStore(url);
const PRODUCERS = 3;
const CALLS = 20_000;
const total = PRODUCERS * CALLS;
const started = performance.now();
const enc = new TextEncoder();

const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
const controller = new AbortController();
let received = 0;
const draining = (async () => {
  for await (const batch of consumer.batches({ signal: controller.signal, pollIntervalMs: 20 })) {
    received += batch.entries.length;
    await consumer.ack(batch.sequence);
    if (received >= total) controller.abort();
  }
})();

const latencies: number[] = [];
await Promise.all(
  Array.from({ length: PRODUCERS }, async (_, p) => {
    const producer = new Producer({ store, flushIntervalMs: 10, instanceId: `demo-producer-${p}` });
    const pending: Promise<unknown>[] = [];
    for (let n = 0; n < CALLS; n++) {
      const t0 = performance.now();
      const handle = await producer.produce([enc.encode(`{"producer":${p},"n":${n}}`)]);
      pending.push(handle.durable.then(() => latencies.push(performance.now() - t0)));
    }
    await Promise.all(pending);
    await producer.close();
  }),
);
const durableAt = performance.now();
await draining;
await consumer.close();
const gc = await new GarbageCollector({ store, gcGracePeriodMs: 0 }).run();
await store.close();

latencies.sort((a, b) => a - b);
const pct = (q: number) => (latencies[Math.floor(q * (latencies.length - 1))] ?? 0).toFixed(1);
const seconds = (durableAt - started) / 1000;
console.log(`store:       ${store.description}`);
console.log(
  `produced:    ${total} entries from ${PRODUCERS} producers, all durable in ${seconds.toFixed(2)} s (${Math.round(total / seconds)} entries/s)`,
);
console.log(`durable:     p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms after produce()`);
console.log(
  `consumed:    ${received} entries, acknowledged; ${gc.deleted.length} batch objects collected`,
);
if (received !== total) process.exit(1);

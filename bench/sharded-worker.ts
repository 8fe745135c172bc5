/**
 * Case (o), one producer process of a sharded queue: forked by vnodes.ts
 * with its arguments, it waits for `go` on its IPC channel, runs
 * `callers` closed-loop callers of 1 KiB entries keyed over 1,000 keys
 * through a ShardedProducer (flushIntervalMs 0) for `durationMs`, and sends
 * back how many entries became durable, the CPU time it used, and what it
 * did meanwhile (store requests by operation, appends, races lost, riders
 * written, stalls).
 */
import { CountingStore, InMemoryMetrics, openStore } from '../src/index.ts';
import { ShardedProducer } from '../src/shard/sharded-producer.ts';
import { vnodeOf } from '../src/shard/routing.ts';
import { withAddedLatency } from './latency.ts';
import { entryPool } from './stats.ts';

const [url, vnodes, callers, durationMs] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
];
const metrics = new InMemoryMetrics();
const store = new CountingStore(withAddedLatency(openStore(url)), { metrics });
const producer = await ShardedProducer.open({
  store,
  vnodeCapacity: Number(vnodes),
  flushIntervalMs: 0,
  metrics,
});
const opNames = ['get', 'head', 'put', 'list', 'delete'];
const counters = (): number[] => [
  ...opNames.map((op) => metrics.counter('store.requests', { op })),
  metrics.counter('buffer.manifest_writes', { role: 'producer' }),
  metrics.counter('buffer.manifest_conflicts', { role: 'producer' }),
  metrics.counter('buffer.riders_written'),
  metrics.counter('buffer.rider_stalls'),
];
const pool = entryPool(1024);
// Warm up: one entry into each vnode, so queue creation and head discovery are not measured.
const V = Number(vnodes);
const warm = new Map<number, string>();
for (let i = 0; warm.size < V; i++) {
  const key = `warm-${i}`;
  warm.set(vnodeOf(key, V), key);
}
await Promise.all(
  [...warm.values()].map(
    async (key) => (await producer.produce(key, [pool[0] as Uint8Array])).durable,
  ),
);
process.send?.({ type: 'ready' });
process.once('message', (m: { startAtMs: number }) => {
  void (async () => {
    const wait = m.startAtMs - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const end = performance.now() + Number(durationMs);
    const before = counters();
    const cpu = process.cpuUsage();
    let ops = 0;
    await Promise.all(
      Array.from({ length: Number(callers) }, async (_, c) => {
        for (let i = c; performance.now() < end; i += Number(callers)) {
          const key = `key-${(i * 7919) % 1000}`;
          await (
            await producer.produce(key, [pool[i % pool.length] as Uint8Array])
          ).durable;
          ops++;
        }
      }),
    );
    const finishedAtMs = Date.now();
    const used = process.cpuUsage(cpu);
    const after = counters();
    const delta = after.map((n, i) => n - (before[i] as number));
    const names = [...opNames, 'appends', 'conflicts', 'ridersWritten', 'riderStalls'];
    const counts = Object.fromEntries(names.map((n, i) => [n, delta[i] as number]));
    await producer.close();
    await store.close();
    process.send?.(
      { type: 'result', ops, finishedAtMs, cpuMs: (used.user + used.system) / 1000, counts },
      () => process.exit(0),
    );
  })();
});

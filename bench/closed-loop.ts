/** Case (b): concurrent callers each await `durable` before their next 1 KiB entry. */
import { InMemoryMetrics, Producer, type ObjectStore } from '../src/index.ts';
import { latencySummary, type LatencySummary } from './stats.ts';
import { entryPool } from './stats.ts';

/** Throughput, latency and manifest writes of a closed loop. */
export interface ClosedLoopResult extends LatencySummary {
  entriesPerSecond: number;
  manifestWritesPerSecond: number;
}

/** Runs `producers` closed-loop callers over one Producer for `durationMs`. */
export async function closedLoop(
  store: ObjectStore,
  producers: number,
  flushIntervalMs: number,
  durationMs: number,
): Promise<ClosedLoopResult> {
  const metrics = new InMemoryMetrics();
  const producer = new Producer({ store, flushIntervalMs, metrics });
  const pool = entryPool(1024);
  const latencies: number[] = [];
  let ops = 0;
  const end = performance.now() + durationMs;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: producers }, async (_, p) => {
      for (let i = p; performance.now() < end; i++) {
        const s = performance.now();
        await (
          await producer.produce([pool[i % pool.length] as Uint8Array])
        ).durable;
        latencies.push(performance.now() - s);
        ops++;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await producer.close();
  return {
    entriesPerSecond: ops / seconds,
    manifestWritesPerSecond:
      metrics.counter('buffer.manifest_writes', { role: 'producer' }) / seconds,
    ...latencySummary(latencies),
  };
}

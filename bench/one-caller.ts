/**
 * Case (i): one caller, closed loop, 1 KiB entries, flushIntervalMs 0, on the
 * log layout with inline batches: each durable `produce()` should cost one
 * create of a small object, so its rate is compared with raw creates of
 * 1 KiB objects by one client on the same store (limits.ts `rawPut`, in
 * create mode). The two alternate in short slices (raw then log, log then
 * raw, ...), so load from other processes on the machine falls on both alike.
 */
import { Producer, type ObjectStore } from '../src/index.ts';
import { RequestCount, type RequestTally } from './request-count.ts';
import { entryPool, latencySummary, round, type LatencySummary } from './stats.ts';

/** Throughput, latency, and what each durable entry cost in requests, with the raw limit. */
export interface OneCallerResult extends LatencySummary {
  entriesPerSecond: number;
  /** Requests and bytes written per durable entry, after the first. */
  perEntry: RequestTally;
  /** Raw 1 KiB creates per second by one client, in the slices between. */
  rawCreatesPerSecond: number;
  rawP50Ms: number;
}

/** Slices of each kind: enough to interleave, long enough to matter. */
const SLICE_MS = 250;

/** One caller awaits `durable` before each next 1 KiB entry, for `durationMs` in all, alternating with raw creates. */
export async function oneCaller(inner: ObjectStore, durationMs: number): Promise<OneCallerResult> {
  const count = new RequestCount(inner);
  const producer = new Producer({ store: count.store, layout: 'log', flushIntervalMs: 0 });
  const pool = entryPool(1024);
  const raw = new Uint8Array(1024).fill(0x63);
  const slices = Math.max(2, Math.round(durationMs / SLICE_MS));
  const sliceMs = durationMs / slices;
  try {
    // The first append finds the layout and creates the queue: not measured.
    await (
      await producer.produce([pool[0] as Uint8Array])
    ).durable;
    const mark = count.mark();
    const latencies: number[] = [];
    const rawLatencies: number[] = [];
    let logMs = 0;
    let rawMs = 0;
    let i = 1;
    const logSlice = async (): Promise<void> => {
      const t0 = performance.now();
      for (const end = t0 + sliceMs; performance.now() < end; i++) {
        const s = performance.now();
        await (
          await producer.produce([pool[i % pool.length] as Uint8Array])
        ).durable;
        latencies.push(performance.now() - s);
      }
      logMs += performance.now() - t0;
    };
    const rawSlice = async (): Promise<void> => {
      const t0 = performance.now();
      for (const end = t0 + sliceMs; performance.now() < end;) {
        const s = performance.now();
        await inner.put(`raw-create/${rawLatencies.length}`, raw, { mode: 'create' });
        rawLatencies.push(performance.now() - s);
      }
      rawMs += performance.now() - t0;
    };
    for (let k = 0; k < slices; k++) {
      if (k % 2 === 0) {
        await rawSlice();
        await logSlice();
      } else {
        await logSlice();
        await rawSlice();
      }
    }
    // A head hint is started as its commit lands; let it reach the store before counting.
    await new Promise((resolve) => setImmediate(resolve));
    const perEntry = count.since(mark, latencies.length);
    // The raw creates went to the inner store directly: not counted.
    return {
      entriesPerSecond: latencies.length / (logMs / 1000),
      perEntry,
      rawCreatesPerSecond: rawLatencies.length / (rawMs / 1000),
      rawP50Ms: round(latencySummary(rawLatencies).p50Ms, 2),
      ...latencySummary(latencies),
    };
  } finally {
    await producer.close();
  }
}

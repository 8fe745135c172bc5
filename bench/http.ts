/**
 * Case (n): entries per second over HTTP, NDJSON POSTs of 1 KiB entries
 * answered once durable, from N concurrent clients (Node's fetch, keep-alive)
 * against `spillway serve`'s server in this process, next to the library in
 * process: one Producer with the same number of callers, each awaiting
 * `durable` for the same number of entries per call. Both on a fresh store
 * of the same kind, in the same run.
 */
import { Producer, type ObjectStore } from '../src/index.ts';
import { startServer } from '../src/server/server.ts';
import { entryPool, latencySummary, type LatencySummary } from './stats.ts';

/** Throughput and latency of one closed loop. */
export interface IngestRate extends LatencySummary {
  entriesPerSecond: number;
}

const TOKEN = 'bench-http-token-0123456789';

/** 1 KiB NDJSON lines: JSON strings of 1,021 characters (with the quotes and the line feed, 1,024 bytes). */
function ndjsonBody(entriesPerPost: number, offset: number): string {
  const pool = entryPool(1021);
  const dec = new TextDecoder();
  let body = '';
  for (let i = 0; i < entriesPerPost; i++) {
    body += `${JSON.stringify(dec.decode(pool[(offset + i) % pool.length]))}\n`;
  }
  return body;
}

/** `clients` closed-loop HTTP clients, each POSTing `entriesPerPost` entries and awaiting the durable answer. */
export async function httpIngest(
  store: ObjectStore,
  clients: number,
  entriesPerPost: number,
  durationMs: number,
): Promise<IngestRate> {
  const server = await startServer({ store, port: 0, tokens: [TOKEN], createQueues: true });
  try {
    const url = `${server.url}/v1/queues/bench/entries`;
    const headers = { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/x-ndjson' };
    const bodies = Array.from({ length: 8 }, (_, i) => ndjsonBody(entriesPerPost, i));
    // The queue is created by a first write, before the clock starts.
    await (await fetch(url, { method: 'POST', headers, body: bodies[0] })).text();
    const latencies: number[] = [];
    let entries = 0;
    const t0 = performance.now();
    const end = t0 + durationMs;
    await Promise.all(
      Array.from({ length: clients }, async (_, c) => {
        for (let i = c; performance.now() < end; i++) {
          const s = performance.now();
          const res = await fetch(url, {
            method: 'POST',
            headers,
            body: bodies[i % bodies.length],
          });
          const text = await res.text();
          if (res.status !== 201) throw new Error(`POST answered ${res.status}: ${text}`);
          latencies.push(performance.now() - s);
          entries += entriesPerPost;
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    return { entriesPerSecond: entries / seconds, ...latencySummary(latencies) };
  } finally {
    await server.close();
  }
}

/** The same load through the library: `callers` callers of one Producer, each awaiting `durable`. */
export async function libraryIngest(
  store: ObjectStore,
  callers: number,
  entriesPerCall: number,
  durationMs: number,
): Promise<IngestRate> {
  const producer = new Producer({ store, flushIntervalMs: 0 });
  const pool = entryPool(1024);
  const latencies: number[] = [];
  let entries = 0;
  try {
    const t0 = performance.now();
    const end = t0 + durationMs;
    await Promise.all(
      Array.from({ length: callers }, async (_, c) => {
        for (let i = c; performance.now() < end; i++) {
          const batch = Array.from(
            { length: entriesPerCall },
            (_, j) => pool[(i + j) % pool.length] as Uint8Array,
          );
          const s = performance.now();
          await (
            await producer.produce(batch)
          ).durable;
          latencies.push(performance.now() - s);
          entries += entriesPerCall;
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    return { entriesPerSecond: entries / seconds, ...latencySummary(latencies) };
  } finally {
    await producer.close();
  }
}

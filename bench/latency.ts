/**
 * A model of a remote store, for cases h and o: `--added-latency-ms N` adds
 * N ms before every request the producer processes make to their store
 * (RGW or a folder), so that a case shows what round trips cost a protocol
 * when the machine's CPU is not the limit. The parent passes it to the
 * processes it forks in {@link ADDED_LATENCY_ENV}.
 */
import type { ObjectStore } from '../src/index.ts';
import { FaultInjectingStore, type StoreOperation } from '../src/testing.ts';

/** The environment variable that carries the added latency, in ms, to forked processes. */
export const ADDED_LATENCY_ENV = 'SPILLWAY_BENCH_ADDED_LATENCY_MS';

const OPERATIONS: StoreOperation[] = ['get', 'head', 'put', 'list', 'delete', 'deleteMany'];

/** The added latency this process was given, in ms (0 when none). */
export function addedLatencyMs(): number {
  const ms = Number(process.env[ADDED_LATENCY_ENV] ?? 0);
  return Number.isFinite(ms) && ms > 0 ? ms : 0;
}

/** `store` itself, or `store` with {@link addedLatencyMs} before every request. */
export function withAddedLatency(store: ObjectStore): ObjectStore {
  const ms = addedLatencyMs();
  if (ms === 0) return store;
  const slow = new FaultInjectingStore(store);
  for (const op of OPERATIONS) slow.setLatency(op, ms);
  return slow;
}

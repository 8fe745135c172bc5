/**
 * Case (k): the keyed buffer. Inserts per second by 64 concurrent callers
 * (100-byte values over 10,000 keys), in memory and durable (each insert
 * stored in the queue and read back before it resolves), with the requests
 * durable mode costs per insert; and flush calls per second for 10,000 keys
 * (one value each, a no-op handler, `flushAll()`), in memory.
 */
import { KeyedBuffer, type ObjectStore } from '../src/index.ts';
import { RequestCount } from './request-count.ts';

/** Inserts per second, and (durable) what one insert cost in requests. */
export interface KeyedInsertResult {
  insertsPerSecond: number;
  /** Durable: requests, puts and gets per insert. */
  requestsPerInsert?: number;
  putsPerInsert?: number;
  getsPerInsert?: number;
}

const KEYS = 10_000;
const CALLERS = 64;

/** Inserts by {@link CALLERS} closed-loop callers for `durationMs`; durable on `store` when given. */
export async function keyedInserts(
  store: ObjectStore | undefined,
  durationMs: number,
): Promise<KeyedInsertResult> {
  const count = store ? new RequestCount(store) : undefined;
  const onFlush = (): void => undefined;
  const buffer = count
    ? await KeyedBuffer.open({
        store: count.store,
        durable: true,
        flushIntervalMs: 1000,
        onFlush,
        queue: { gcIntervalMs: 0, layout: 'log' },
      })
    : new KeyedBuffer({ flushIntervalMs: 1000, onFlush });
  const value = new Uint8Array(100).fill(0x6b);
  try {
    // The first insert creates the queue (durable): not measured.
    await buffer.insert('warm-up', value);
    const mark = count?.mark();
    let inserts = 0;
    const t0 = performance.now();
    const end = t0 + durationMs;
    await Promise.all(
      Array.from({ length: CALLERS }, async (_, lane) => {
        for (let i = lane; performance.now() < end; i += CALLERS) {
          await buffer.insert(`key-${i % KEYS}`, value);
          inserts++;
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    const result: KeyedInsertResult = { insertsPerSecond: inserts / seconds };
    if (count && mark) {
      const per = count.since(mark, inserts);
      result.requestsPerInsert = per.requests;
      result.putsPerInsert = per.put;
      result.getsPerInsert = per.get;
    }
    return result;
  } finally {
    await buffer.close();
  }
}

/** Flush calls per second: `rounds` times, one value into each of 10,000 keys, then `flushAll()` timed. */
export async function keyedFlushes(rounds: number): Promise<{ flushesPerSecond: number }> {
  let flushes = 0;
  const buffer = new KeyedBuffer({
    flushIntervalMs: 3_600_000,
    maxConcurrentFlushes: 64,
    onFlush: () => void flushes++,
  });
  const value = new Uint8Array(100);
  let ms = 0;
  try {
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < KEYS; k++) await buffer.insert(`key-${k}`, value);
      const t0 = performance.now();
      await buffer.flushAll();
      ms += performance.now() - t0;
    }
  } finally {
    await buffer.close();
  }
  return { flushesPerSecond: flushes / (ms / 1000) };
}

/**
 * The physical limits Spillway's figures are divided by, measured in the same
 * run: group-commit appends to one file, sequential write bandwidth, and raw
 * PUT / GET throughput of a store.
 */
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ObjectStore } from '../src/index.ts';
import { latencySummary, type LatencySummary } from './stats.ts';

/** Throughput and latency of a closed-loop measurement. */
export interface LoopResult extends LatencySummary {
  opsPerSecond: number;
}

/**
 * `writers` concurrent clients each append a `recordBytes` record to one file
 * and wait until it is on disk; one fdatasync covers every record written
 * since the last (group commit), as a write-ahead log does.
 */
export async function rawGroupCommit(
  dir: string,
  writers: number,
  durationMs: number,
  recordBytes = 1024,
): Promise<LoopResult> {
  const path = join(dir, 'raw-group-commit.log');
  const fh = await open(path, 'a');
  const record = Buffer.alloc(recordBytes, 0x61);
  let pending: { resolve: () => void }[] = [];
  let syncing = false;
  const leader = async (): Promise<void> => {
    if (syncing) return;
    syncing = true;
    while (pending.length > 0) {
      const group = pending;
      pending = [];
      await fh.writev(group.map(() => record));
      await fh.datasync();
      for (const w of group) w.resolve();
    }
    syncing = false;
  };
  const latencies: number[] = [];
  let ops = 0;
  const end = performance.now() + durationMs;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: writers }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        await new Promise<void>((resolve) => {
          pending.push({ resolve });
          void leader();
        });
        latencies.push(performance.now() - t0);
        ops++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await fh.close();
  await rm(path, { force: true });
  return { opsPerSecond: ops / seconds, ...latencySummary(latencies) };
}

/** Sequential write bandwidth: `totalBytes` in 8 MiB writes to one file, then fsync. MB/s. */
export async function sequentialWriteMBps(dir: string, totalBytes: number): Promise<number> {
  const path = join(dir, 'raw-sequential.bin');
  const chunk = Buffer.alloc(8 * 1024 * 1024, 0x62);
  const fh = await open(path, 'w');
  const t0 = performance.now();
  for (let written = 0; written < totalBytes; written += chunk.length) await fh.write(chunk);
  await fh.sync();
  const seconds = (performance.now() - t0) / 1000;
  await fh.close();
  await rm(path, { force: true });
  return totalBytes / 1e6 / seconds;
}

/** `concurrency` clients each PUT `objectBytes` objects under fresh keys, awaiting each. */
export async function rawPut(
  store: ObjectStore,
  concurrency: number,
  objectBytes: number,
  durationMs: number,
): Promise<LoopResult & { mbPerSecond: number }> {
  const body = new Uint8Array(objectBytes).fill(0x63);
  const latencies: number[] = [];
  let ops = 0;
  const end = performance.now() + durationMs;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, c) => {
      for (let i = 0; performance.now() < end; i++) {
        const t0 = performance.now();
        await store.put(`raw-put/${c}/${i}`, body, { mode: 'create' });
        latencies.push(performance.now() - t0);
        ops++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const keys: string[] = [];
  for await (const m of store.list('raw-put/')) keys.push(m.key);
  for (let i = 0; i < keys.length; i += 1000) await store.deleteMany(keys.slice(i, i + 1000));
  return {
    opsPerSecond: ops / seconds,
    mbPerSecond: (ops * objectBytes) / 1e6 / seconds,
    ...latencySummary(latencies),
  };
}

/** GETs every key once with `concurrency` readers. MB/s. */
export async function rawGetMBps(
  store: ObjectStore,
  keys: readonly string[],
  concurrency: number,
): Promise<number> {
  let next = 0;
  let bytes = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < keys.length) {
        const key = keys[next++] as string;
        bytes += (await store.get(key)).body.byteLength;
      }
    }),
  );
  return bytes / 1e6 / ((performance.now() - t0) / 1000);
}

/**
 * Milliseconds of the three dependent requests behind every durable
 * `produce()` in this design: create a batch object, read the manifest,
 * write it back conditionally. Their sum bounds a closed loop of one producer.
 */
export async function designFloor(
  store: ObjectStore,
  rounds: number,
): Promise<{
  msPerRoundTrip: number;
  createMs: number;
  readMs: number;
  conditionalWriteMs: number;
}> {
  const body = new Uint8Array(1024).fill(0x64);
  let version = (await store.put('floor/manifest', new Uint8Array(256))).version;
  let create = 0;
  let read = 0;
  let write = 0;
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    await store.put(`floor/${i}.batch`, body, { mode: 'create' });
    const t1 = performance.now();
    const got = await store.get('floor/manifest');
    const t2 = performance.now();
    version = (await store.put('floor/manifest', got.body, { mode: { ifMatch: version } })).version;
    const t3 = performance.now();
    create += t1 - t0;
    read += t2 - t1;
    write += t3 - t2;
  }
  const r = (n: number): number => Math.round((n / rounds) * 100) / 100;
  return {
    msPerRoundTrip: (create + read + write) / rounds,
    createMs: r(create),
    readMs: r(read),
    conditionalWriteMs: r(write),
  };
}

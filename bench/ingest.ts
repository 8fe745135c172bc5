/**
 * Case (m): file ingestion. Throughput of the pipeline `spillway ingest`
 * runs (reader, AsyncPusher, Producer, IngestProgress checkpoints) against
 * the raw read bandwidth of the same input, and the memory held while the
 * store is stalled.
 */
import { spawnSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { AsyncPusher, IngestProgress, Producer, Queue, type ObjectStore } from '../src/index.ts';
import { readFileChunks } from '../src/pusher/file-chunks.ts';

/** Writes a file of `bytes` (rounded to 1 MiB) of 200-byte numbered lines. */
export async function writeLinesFile(path: string, bytes: number): Promise<number> {
  const line = (i: number): string => `${String(i).padStart(12, '0')} ${'x'.repeat(186)}\n`;
  const block = Buffer.from(Array.from({ length: 5243 }, (_, i) => line(i)).join('')).subarray(
    0,
    1024 * 1024,
  );
  // Cut at the last line end so every block holds whole lines.
  const whole = block.subarray(0, block.lastIndexOf(0x0a) + 1);
  const h = await open(path, 'w');
  let written = 0;
  try {
    while (written < bytes) {
      await h.write(whole);
      written += whole.byteLength;
    }
    await h.sync();
  } finally {
    await h.close();
  }
  return written;
}

/** Reads the file through once, as fast as a stream goes: bytes per second. */
export async function rawReadBytesPerSecond(path: string): Promise<number> {
  const start = performance.now();
  let n = 0;
  for await (const b of createReadStream(path, { highWaterMark: 1024 * 1024 }))
    n += (b as Buffer).byteLength;
  return n / ((performance.now() - start) / 1000);
}

/** Ingests the file as `spillway ingest` does: bytes of the file per second, durable. */
export async function ingestBytesPerSecond(store: ObjectStore, path: string): Promise<number> {
  const queue = Queue.open({ store });
  const progress = await IngestProgress.open({ queue, job: 'bench' });
  const producer = new Producer({
    queue,
    flushIntervalMs: 0,
    maxBufferedBytes: 128 * 1024 * 1024,
    maxBufferedInputs: 1_000_000,
  });
  const pusher = new AsyncPusher({ producer, job: 'bench' });
  const start = performance.now();
  const timer = setInterval(() => void progress.checkpoint(pusher).catch(() => undefined), 2000);
  let bytes = 0;
  try {
    for await (const c of readFileChunks(path, {
      format: 'lines',
      chunkBytes: 1024 * 1024,
      maxEntryBytes: 16 * 1024 * 1024,
    })) {
      await pusher.push({ source: 'input', path, ...c });
      bytes = c.offset + c.size;
    }
    await pusher.flush();
  } finally {
    clearInterval(timer);
  }
  const elapsed = (performance.now() - start) / 1000;
  await progress.finish(pusher);
  await pusher.close();
  await producer.close();
  await queue.close();
  return bytes / elapsed;
}

/** Memory figures of the stalled ingestion, in bytes. */
export interface StalledIngest {
  baselineRss: number;
  peakRss: number;
  readBytes: number;
  bytesInFlight: number;
}

/** Runs the stalled-store child on `file` (see ingest-stalled-child.ts). */
export function stalledIngest(
  file: string,
  dir: string,
  maxInFlightBytes: number,
  durationMs: number,
): StalledIngest {
  const child = new URL('./ingest-stalled-child.ts', import.meta.url).pathname;
  const r = spawnSync(
    process.execPath,
    [
      '--expose-gc',
      '--import',
      'tsx',
      child,
      file,
      dir,
      String(maxInFlightBytes),
      String(durationMs),
    ],
    { encoding: 'utf8', cwd: new URL('..', import.meta.url).pathname },
  );
  if (r.status !== 0) throw new Error(`stalled ingest child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as StalledIngest;
}

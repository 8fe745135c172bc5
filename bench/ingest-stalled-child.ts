/**
 * Case (m), memory: ingests a large file into a file:// queue whose store
 * stalls every write once the job is open, and reports the peak RSS over the
 * process's baseline. Run by ingest.ts with --expose-gc; prints one JSON line.
 *
 * Arguments: the input file, the queue folder, maxInFlightBytes, duration in ms.
 */
import { AsyncPusher, FileStore, IngestProgress, Producer, Queue } from '../src/index.ts';
import { readFileChunks } from '../src/pusher/file-chunks.ts';
import { FaultInjectingStore } from '../src/testing.ts';

const [file, dir, maxArg, durationArg] = process.argv.slice(2) as [string, string, string, string];
const maxInFlightBytes = Number(maxArg);
const durationMs = Number(durationArg);
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);

const store = new FaultInjectingStore(new FileStore(dir));
const queue = Queue.open({ store });
const progress = await IngestProgress.open({ queue, job: 'bench' });
void progress;
gc();
const baselineRss = process.memoryUsage().rss;
// From here on, every write hangs: nothing becomes durable.
store.before('put', () => new Promise<void>(() => undefined));
const producer = new Producer({
  queue,
  flushIntervalMs: 0,
  maxBufferedBytes: Math.max(maxInFlightBytes * 2, 8 * 1024 * 1024),
  maxBufferedInputs: 1_000_000,
});
const pusher = new AsyncPusher({ producer, job: 'bench', maxInFlightBytes });
let readBytes = 0;
void (async () => {
  for await (const c of readFileChunks(file, {
    format: 'lines',
    chunkBytes: 1024 * 1024,
    maxEntryBytes: 16 * 1024 * 1024,
  })) {
    await pusher.push({ source: 'input', path: file, ...c });
    readBytes = c.offset + c.size;
  }
})();
let peakRss = 0;
const end = performance.now() + durationMs;
while (performance.now() < end) {
  await new Promise((r) => setTimeout(r, 25));
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}
process.stdout.write(
  `${JSON.stringify({ baselineRss, peakRss, readBytes, bytesInFlight: pusher.bytesInFlight })}\n`,
);
process.exit(0);

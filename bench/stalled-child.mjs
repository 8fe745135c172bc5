// Case (f), in a process of its own so its RSS is its own: producers keep
// pushing 1 KiB entries while every batch upload hangs. Runs on the built
// package (dist/), without a TypeScript loader. Prints one JSON line.
import { MemoryStore, Producer } from '../dist/index.js';
import { FaultInjectingStore } from '../dist/testing.js';

const budget = Number(process.argv[2] ?? 64 * 1024 * 1024);
const durationMs = Number(process.argv[3] ?? 3000);
const store = new FaultInjectingStore(new MemoryStore('stalled'));
store.before('put', (call) =>
  call.key.endsWith('.batch') ? new Promise(() => undefined) : undefined,
);

globalThis.gc?.();
const baseline = process.memoryUsage().rss;
let peak = baseline;
let peakArrayBuffers = 0;
const sampler = setInterval(() => {
  const m = process.memoryUsage();
  peak = Math.max(peak, m.rss);
  peakArrayBuffers = Math.max(peakArrayBuffers, m.arrayBuffers);
}, 20);
const producer = new Producer({ store, maxBufferedBytes: budget, maxBufferedInputs: 1_000_000 });
let produced = 0;
const end = performance.now() + durationMs;
const deadline = new Promise((r) => setTimeout(() => r(false), durationMs));
const lanes = Array.from({ length: 4 }, async (_, lane) => {
  while (performance.now() < end) {
    const entry = new Uint8Array(1024).fill(lane);
    // Once the budget is full produce() waits; stop waiting at the deadline.
    const done = await Promise.race([producer.produce([entry]).then(() => true), deadline]);
    if (!done) break;
    produced++;
  }
});
await Promise.all(lanes);
peak = Math.max(peak, process.memoryUsage().rss);
clearInterval(sampler);
// What the producer really holds once garbage is collected (the stalled uploads still pending).
globalThis.gc?.();
const live = process.memoryUsage();
console.log(
  JSON.stringify({
    baselineRss: baseline,
    peakRss: peak,
    peakArrayBuffers,
    liveArrayBuffersAfterGc: live.arrayBuffers,
    liveRssAfterGc: live.rss,
    liveHeapUsedAfterGc: live.heapUsed,
    liveHeapTotalAfterGc: live.heapTotal,
    produced,
    budget,
  }),
);
process.exit(0);

// Case (f), in a process of its own so its RSS is its own: producers keep
// pushing 1 KiB entries while every batch upload hangs. Runs on the built
// package (dist/), without a TypeScript loader. Prints one JSON line.
import { FaultInjectingStore, MemoryStore, Producer } from '../dist/index.js';

const budget = Number(process.argv[2] ?? 64 * 1024 * 1024);
const durationMs = Number(process.argv[3] ?? 3000);
const store = new FaultInjectingStore(new MemoryStore('stalled'));
store.before('put', (call) =>
  call.key.endsWith('.batch') ? new Promise(() => undefined) : undefined,
);

globalThis.gc?.();
const baseline = process.memoryUsage().rss;
let peak = baseline;
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
const producer = new Producer({ store, maxBufferedBytes: budget, maxBufferedInputs: 1_000_000 });
let produced = 0;
const end = performance.now() + durationMs;
const lanes = Array.from({ length: 4 }, async (_, lane) => {
  while (performance.now() < end) {
    const entry = new Uint8Array(1024).fill(lane);
    const wait = producer.produce([entry]);
    // Once the budget is full produce() waits; stop waiting at the deadline.
    const done = await Promise.race([
      wait.then(() => true),
      new Promise((r) => setTimeout(() => r(false), Math.max(0, end - performance.now()))),
    ]);
    if (!done) break;
    produced++;
  }
});
await Promise.all(lanes);
peak = Math.max(peak, process.memoryUsage().rss);
clearInterval(sampler);
console.log(JSON.stringify({ baselineRss: baseline, peakRss: peak, produced, budget }));
process.exit(0);

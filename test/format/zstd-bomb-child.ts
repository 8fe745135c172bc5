// A child process of the zstd bomb tests: decodes one 1 GiB bomb with a small
// maxBatchBytes and prints how much its peak memory grew while doing so, which
// only a fresh process can measure (the peak RSS never goes down).
import { decodeBatch } from '../../src/format/batch.ts';
import {
  markedZerosFrame,
  MiB,
  recordBlock,
  repeat,
  rleBombFrame,
  sizedFrame,
  text,
  withoutContentSize,
  zerosFrame,
  zstdBatch,
} from './zstd-bombs.ts';

const [kind, max] = [process.argv[2] as string, Number(process.argv[3])];

// The bombs, and a small valid batch taking the same path, built before the
// baseline so that loading the decoders counts against neither.
const wideWindowLog = 27;
const small = recordBlock([text(64 * 1024)]);
let bomb: Uint8Array;
let warmUp: Uint8Array;
if (kind === 'sized') {
  bomb = repeat(await zerosFrame(), 1024);
  warmUp = await sizedFrame(small);
} else if (kind === 'rle') {
  bomb = rleBombFrame(1024 * MiB);
  warmUp = withoutContentSize(await sizedFrame(small));
} else if (kind === 'compressed') {
  bomb = repeat(await markedZerosFrame(), 1024);
  warmUp = withoutContentSize(await sizedFrame(small));
} else if (kind === 'compressed-wide-window') {
  bomb = repeat(await markedZerosFrame(wideWindowLog), 1024);
  warmUp = withoutContentSize(await sizedFrame(small), wideWindowLog);
} else {
  throw new Error(`unknown bomb ${kind}`);
}
await decodeBatch(zstdBatch(warmUp), 'warm-up', { maxBatchBytes: max });

const before = process.resourceUsage().maxRSS * 1024;
const started = performance.now();
let message = 'decoded';
try {
  await decodeBatch(zstdBatch(bomb), `ingest/${kind}.batch`, { maxBatchBytes: max });
} catch (e) {
  message = `${(e as Error).name}: ${(e as Error).message}`;
}
const ms = performance.now() - started;
const growthBytes = process.resourceUsage().maxRSS * 1024 - before;
process.stdout.write(JSON.stringify({ message, growthBytes, ms, bombBytes: bomb.byteLength }));

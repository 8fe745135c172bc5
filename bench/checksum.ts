/**
 * Case (l): CRC32C throughput on 1 MiB buffers, native (`@node-rs/crc32`)
 * and the JS slice-by-8 fallback, in GiB/s, and which one `crc32c()` uses.
 * Every batch object is checksummed once when written and once when read.
 */
import { randomFillSync } from 'node:crypto';
import { crc32cImplementation, crc32cJs, crc32cNative } from '../src/format/crc32c.ts';

/** GiB/s of each implementation; `nativeGiBps` is null when the native module did not load. */
export interface ChecksumResult {
  nativeGiBps: number | null;
  jsGiBps: number;
  /** What `crc32c()` uses in this process. */
  implementation: 'native' | 'js';
}

const BUFFER_BYTES = 1024 * 1024;

/** GiB/s of `crc` over one `bytes` buffer, called in a loop for about `durationMs`. */
function throughput(
  crc: (bytes: Uint8Array) => number,
  bytes: Uint8Array,
  durationMs: number,
): number {
  let sink = 0;
  for (let i = 0; i < 3; i++) sink ^= crc(bytes);
  let calls = 0;
  const started = performance.now();
  let now = started;
  while (now - started < durationMs) {
    sink ^= crc(bytes);
    calls++;
    now = performance.now();
  }
  // Keeps the results alive, so no call can be optimised away.
  if (sink === -1) console.error(sink);
  return (calls * bytes.byteLength) / 1024 ** 3 / ((now - started) / 1000);
}

/** Both implementations over the same random 1 MiB buffer, `durationMs` each. */
export function checksumThroughput(durationMs: number): ChecksumResult {
  const bytes = randomFillSync(new Uint8Array(BUFFER_BYTES));
  const native = crc32cNative;
  return {
    nativeGiBps: native ? throughput((b) => native(b), bytes, durationMs) : null,
    jsGiBps: throughput((b) => crc32cJs(b), bytes, durationMs),
    implementation: crc32cImplementation,
  };
}

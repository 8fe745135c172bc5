/**
 * CRC32C (Castagnoli), the checksum of the integrity trailer and of log
 * commits. Native through the optional dependency `@node-rs/crc32` (prebuilt
 * binaries, no install script) when it loads, with a slice-by-8 in plain JS
 * as the fallback; both give the same numbers.
 *
 * Set the environment variable `SPILLWAY_CRC32C=js` (read once, when this
 * module loads) to skip the native module and use the JS implementation.
 */
import { createRequire } from 'node:module';

const TABLES: Uint32Array[] = (() => {
  const tables = Array.from({ length: 8 }, () => new Uint32Array(256));
  const t0 = tables[0] as Uint32Array;
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t0[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = t0[n] as number;
    for (let k = 1; k < 8; k++) {
      c = (t0[c & 0xff] as number) ^ (c >>> 8);
      (tables[k] as Uint32Array)[n] = c >>> 0;
    }
  }
  return tables;
})();

/**
 * CRC32C of `bytes` in plain JS (slice-by-8), continuing from `previous` (0
 * to start): `crc32cJs(b, crc32cJs(a))` is the CRC32C of `a` then `b`. About
 * 0.75 GiB/s on x64, against about 5.5 for the native one, which
 * {@link crc32c} picks when it can.
 */
export function crc32cJs(bytes: Uint8Array, previous = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES as [
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
  ];
  let crc = ~previous >>> 0;
  let i = 0;
  const n = bytes.byteLength;
  const fast = n - (n % 8);
  while (i < fast) {
    const a =
      (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24)) ^ crc;
    crc =
      t7[a & 0xff]! ^
      t6[(a >>> 8) & 0xff]! ^
      t5[(a >>> 16) & 0xff]! ^
      t4[a >>> 24]! ^
      t3[bytes[i + 4]!]! ^
      t2[bytes[i + 5]!]! ^
      t1[bytes[i + 6]!]! ^
      t0[bytes[i + 7]!]!;
    i += 8;
  }
  while (i < n) crc = t0[(crc ^ bytes[i++]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

/** The one function of `@node-rs/crc32` used here; it reads a Uint8Array view in place. */
type NativeCrc32c = (input: Uint8Array, initialState?: number) => number;

const CHECK_INPUT = new TextEncoder().encode('123456789');
const CHECK_CRC = 0xe3069283;

function loadNative(): NativeCrc32c | undefined {
  if (process.env.SPILLWAY_CRC32C?.trim().toLowerCase() === 'js') return undefined;
  try {
    const binding = createRequire(import.meta.url)('@node-rs/crc32') as { crc32c?: unknown };
    if (typeof binding.crc32c !== 'function') return undefined;
    const native = binding.crc32c as NativeCrc32c;
    // A binding that loads but disagrees with the standard check value, or continues from a
    // previous CRC differently, would reject every stored object: never trust it.
    const head = CHECK_INPUT.subarray(0, 4);
    const tail = CHECK_INPUT.subarray(4);
    if (native(CHECK_INPUT) !== CHECK_CRC || native(tail, native(head)) !== CHECK_CRC) {
      return undefined;
    }
    return native;
  } catch {
    // Not installed (an optional dependency), or no prebuilt binary for this platform.
    return undefined;
  }
}

const native = loadNative();

/**
 * Below this many bytes the JS implementation is faster than a call into the
 * native module, which costs about 100 ns whatever the length (measured on
 * x64 with Node 20: the two break even between 64 and 96 bytes).
 */
const NATIVE_MIN_BYTES = 96;

/**
 * CRC32C of `bytes` through `@node-rs/crc32`, whatever the length, continuing
 * from `previous` like {@link crc32cJs}; `undefined` when the native module
 * is not installed, did not load on this platform, failed its self-check, or
 * `SPILLWAY_CRC32C=js` is set. For tests and benchmarks: use {@link crc32c}.
 */
export const crc32cNative: ((bytes: Uint8Array, previous?: number) => number) | undefined =
  native === undefined
    ? undefined
    : // `>>> 0` gives the native u32 argument what `~previous` gives the JS one.
      (bytes, previous = 0) => native(bytes, previous >>> 0);

/**
 * Which implementation {@link crc32c} uses: `'native'` (`@node-rs/crc32`,
 * for inputs of 96 bytes and more) or `'js'` (the slice-by-8 fallback). Fixed
 * when this module loads; `SPILLWAY_CRC32C=js` forces `'js'`.
 */
export const crc32cImplementation: 'native' | 'js' = native === undefined ? 'js' : 'native';

/**
 * CRC32C of `bytes`, continuing from `previous` (0 to start):
 * `crc32c(b, crc32c(a))` is the CRC32C of `a` then `b`. Native when
 * `@node-rs/crc32` loads (see {@link crc32cImplementation}), JS otherwise;
 * the result is the same. Reads a view (`subarray`) in place, without copying.
 *
 * @example
 * crc32c(new TextEncoder().encode('123456789')); // 0xe3069283
 */
export const crc32c: (bytes: Uint8Array, previous?: number) => number =
  native === undefined
    ? crc32cJs
    : (bytes, previous = 0) =>
        bytes.byteLength < NATIVE_MIN_BYTES
          ? crc32cJs(bytes, previous)
          : native(bytes, previous >>> 0);

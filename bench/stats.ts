/** Small statistics helpers for the benchmarks. */

/** Latency percentiles in milliseconds. */
export interface LatencySummary {
  p50Ms: number;
  p99Ms: number;
}

/** p50 and p99 of a list of latencies in ms. */
export function latencySummary(latencies: number[]): LatencySummary {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q: number): number =>
    sorted.length === 0
      ? 0
      : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0);
  return { p50Ms: round(at(0.5), 2), p99Ms: round(at(0.99), 2) };
}

/** Rounds to `digits` decimals. */
export function round(n: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/**
 * Entries of `bytes` bytes that compress about as well as typical JSON logs
 * (zstd at level 3 gets roughly 3:1), cycling through a pool.
 */
export function entryPool(bytes: number, count = 64): Uint8Array[] {
  const words = [
    '"level":"info"',
    '"service":"checkout"',
    '"latency_ms":',
    '"user":"u-',
    '"status":200',
    '"path":"/api/v1/orders/',
  ];
  let seed = 12345;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 4294967296;
  };
  return Array.from({ length: count }, () => {
    let s = '{';
    while (s.length < bytes) {
      s += words[Math.floor(rand() * words.length)] as string;
      s += String(Math.floor(rand() * 1e6));
      s += ',';
    }
    return new TextEncoder().encode(s.slice(0, bytes));
  });
}

/** The median of a list (the mean of the middle two for an even count; 0 for none). */
export function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

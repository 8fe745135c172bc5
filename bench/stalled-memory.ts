/** Case (f): peak RSS while the store is stalled and producers keep pushing. */
import { spawnSync } from 'node:child_process';

/** Memory figures of the stalled-store child, in bytes. */
export interface StalledResult {
  baselineRss: number;
  peakRss: number;
  peakArrayBuffers: number;
  liveArrayBuffersAfterGc: number;
  liveRssAfterGc: number;
  produced: number;
}

/** Runs the stalled-store child and returns its baseline and peak RSS in bytes. */
export function stalledMemory(budgetBytes: number, durationMs: number): StalledResult {
  const child = new URL('./stalled-child.mjs', import.meta.url).pathname;
  const r = spawnSync(
    process.execPath,
    ['--expose-gc', child, String(budgetBytes), String(durationMs)],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`stalled-store child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as StalledResult;
}

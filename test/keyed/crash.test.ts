import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { mulberry32 } from '../../src/testing.ts';
import type { KeyedCrashChildConfig } from './crash-child.ts';

const child = join(import.meta.dirname, 'crash-child.ts');

/**
 * Runs the child; with `killAfter`, SIGKILLs it once it reported that many
 * resolved inserts. Resolves with the values it reported, by key.
 */
function runChild(
  cfg: KeyedCrashChildConfig,
  killAfter?: number,
): Promise<{ resolved: [string, string][]; code: number | null; signal: string | null }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', child, JSON.stringify(cfg)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const resolved: [string, string][] = [];
    let rest = '';
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (chunk: string) => {
      const lines = (rest + chunk).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) {
        const [kind, key, value] = line.split(' ');
        if (kind !== 'R' || key === undefined || value === undefined) continue;
        resolved.push([key, value]);
        if (killAfter !== undefined && resolved.length === killAfter) p.kill('SIGKILL');
      }
    });
    p.on('error', reject);
    p.on('exit', (code, signal) => resolve({ resolved, code, signal }));
  });
}

/** `round:n` in insert order. */
function order(value: string): [number, number] {
  const [r, n] = value.split(':').map(Number);
  return [r as number, n as number];
}

describe('KeyedBuffer durable mode under SIGKILL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'spillway-keyed-crash-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('every resolved insert is flushed at least once, in order per key, across repeated SIGKILLs on file://', async (t) => {
    const url = `file://${join(dir, 'queue')}`;
    const flushLogPath = join(dir, 'flushes.jsonl');
    const random = mulberry32(14);
    const resolved: [string, string][] = [];
    const rounds = 6;
    for (let round = 0; round < rounds; round++) {
      const killAfter = 20 + Math.floor(random() * 200);
      const run = await runChild({ url, round, flushLogPath, clean: false }, killAfter);
      assert.equal(run.signal, 'SIGKILL', `round ${round} was killed`);
      resolved.push(...run.resolved);
    }
    const last = await runChild({ url, round: rounds, flushLogPath, clean: true });
    assert.equal(last.code, 0);

    const flushed = new Map<string, string[]>();
    let flushCalls = 0;
    for (const line of readFileSync(flushLogPath, 'utf8').split('\n')) {
      if (line === '') continue;
      const { key, values } = JSON.parse(line) as { key: string; values: string[] };
      flushCalls++;
      flushed.set(key, [...(flushed.get(key) ?? []), ...values]);
    }
    let duplicates = 0;
    let total = 0;
    let distinct = 0;
    for (const [key, values] of flushed) {
      total += values.length;
      // Order per key: first appearances are in insert order; later ones are redeliveries.
      const seen = new Set<string>();
      let prev: [number, number] = [-1, -1];
      for (const v of values) {
        if (seen.has(v)) {
          duplicates++;
          continue;
        }
        seen.add(v);
        distinct++;
        const cur = order(v);
        assert.ok(
          cur[0] > prev[0] || (cur[0] === prev[0] && cur[1] > prev[1]),
          `key ${key}: ${v} flushed first after ${prev.join(':')}`,
        );
        prev = cur;
      }
    }
    const missing = resolved.filter(([k, v]) => !(flushed.get(k) ?? []).includes(v));
    assert.deepEqual(missing, [], 'every resolved insert was flushed');
    assert.ok(resolved.length >= rounds * 20);
    t.diagnostic(
      `${rounds} SIGKILLs: ${resolved.length} inserts resolved, ${distinct} distinct values flushed (${total} in ${flushCalls} flush calls): ${duplicates} duplicates`,
    );
  });
});

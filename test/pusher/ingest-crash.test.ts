import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, describe, test } from 'node:test';
import { FileStore, Queue } from '../../src/index.ts';
import { mulberry32 } from '../../src/testing.ts';
import { bin } from '../support/cli.ts';

/** Runs `spillway ingest`; with `killAfterMs`, SIGKILLs it then. */
function ingest(
  args: string[],
  killAfterMs?: number,
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [bin, 'ingest', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // The kill is the fault injected, at a random moment: not a wait for anything.
    const timer =
      killAfterMs === undefined ? undefined : setTimeout(() => p.kill('SIGKILL'), killAfterMs);
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

async function linesInQueue(dir: string): Promise<string[]> {
  const queue = Queue.open({ store: new FileStore(dir) });
  const out: string[] = [];
  for await (const b of queue.peek({ fromSequence: 0 })) {
    for (const e of b.entries) out.push(Buffer.from(e).toString());
  }
  await queue.close();
  return out;
}

describe('spillway ingest under SIGKILL', () => {
  const root = mkdtempSync(join(tmpdir(), 'spillway-ingest-crash-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  for (const kind of ['plain', 'gzip'] as const) {
    test(`${kind}: killed at random moments and rerun until done, every line is in the queue exactly once`, async (t) => {
      const dir = join(root, `${kind}-queue`);
      const input = join(root, `${kind}-input`);
      const n = 150_000;
      const text =
        Array.from(
          { length: n },
          (_, i) => `line-${String(i).padStart(6, '0')} ${'x'.repeat(i % 50)}`,
        ).join('\n') + '\n';
      const file = join(input, kind === 'gzip' ? 'numbers.txt.gz' : 'numbers.txt');
      rmSync(input, { recursive: true, force: true });
      (await import('node:fs')).mkdirSync(input, { recursive: true });
      writeFileSync(file, kind === 'gzip' ? gzipSync(text) : text);
      // A second, small file: a folder is ingested in a stable order.
      writeFileSync(join(input, 'a-small.txt'), 'small-1\nsmall-2\n');

      const rng = mulberry32(kind === 'gzip' ? 7 : 3);
      const args = [
        `file://${dir}`,
        input,
        '--chunk-bytes',
        '8192',
        '--max-in-flight-bytes',
        '65536',
        '--checkpoint-interval-ms',
        '20',
        '--json',
      ];
      let kills = 0;
      let finished = false;
      for (let round = 0; round < 12 && !finished; round++) {
        const r = await ingest(args, 120 + Math.floor(rng() * 600));
        if (r.signal === 'SIGKILL') kills++;
        else {
          assert.equal(r.code, 0, r.stderr);
          finished = true;
        }
      }
      if (!finished) {
        const r = await ingest(args);
        assert.equal(r.code, 0, r.stderr);
      }
      assert.ok(kills >= 1, 'at least one run was killed mid-way');
      t.diagnostic(`${kills} runs killed`);

      const got = await linesInQueue(dir);
      const expected = [...text.trimEnd().split('\n'), 'small-1', 'small-2'];
      const seen = new Map<string, number>();
      for (const l of got) seen.set(l, (seen.get(l) ?? 0) + 1);
      const missing = expected.filter((l) => !seen.has(l));
      const twice = [...seen].filter(([, c]) => c > 1).map(([l]) => l);
      assert.deepEqual(missing.slice(0, 5), [], `${missing.length} lines missing`);
      assert.deepEqual(twice.slice(0, 5), [], `${twice.length} lines written twice`);
      assert.equal(got.length, expected.length);

      // A rerun after completion does nothing and says so.
      const again = await ingest([`file://${dir}`, input]);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /nothing to do: all 2 files were already ingested/);
      assert.equal((await linesInQueue(dir)).length, expected.length);
    });
  }
});

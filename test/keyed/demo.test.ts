import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

const main = new URL('../../src/cli/main.ts', import.meta.url).pathname;

describe('spillway demo --keyed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'spillway-keyed-demo-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('inserts durably over many keys, flushes everything at the end and reports it', () => {
    const args = ['--import', 'tsx', main, 'demo', '--keyed', '--store', `file://${dir}`];
    const r = spawnSync(
      process.execPath,
      [...args, '--duration-s', '1', '--keys', '50', '--key-flush-interval-ms', '100', '--json'],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as Record<string, number>;
    assert.ok((summary.values_inserted as number) > 0);
    assert.equal(summary.values_from_earlier_runs, 0);
    assert.ok((summary.values_flushed as number) >= (summary.values_inserted as number));
    assert.ok((summary.flushes as number) > 50, 'keys flushed on their interval, more than once');
  });
});

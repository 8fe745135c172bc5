/**
 * The sharded side of the command line: produce --vnode-capacity --key-field,
 * consume --group (until Ctrl-C, then leaving), group status. Runs the built
 * command (`npm run build` first).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, test } from 'node:test';
import { bin, json, ok, spillway } from '../support/cli.ts';
import { vnodeOf } from '../../src/shard/routing.ts';

describe('spillway produce / consume --group / group status', () => {
  let dir = '';
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('routes NDJSON by a field, refuses another vnode capacity, and a group member prints vnode and key, then leaves on Ctrl-C', async () => {
    dir = await mkdtemp(join(tmpdir(), 'spillway-shard-cli-'));
    const url = `file://${dir}`;
    const lines = Array.from({ length: 30 }, (_, i) => JSON.stringify({ user: `u${i % 5}`, n: i }));
    ok(
      await spillway(
        ['produce', url, '--format', 'ndjson', '--vnode-capacity', '8', '--key-field', 'user'],
        `${lines.join('\n')}\n`,
      ),
    );
    const refused = await spillway(
      ['produce', url, '--format', 'ndjson', '--vnode-capacity', '16'],
      '{"a":1}\n',
    );
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /has 8 vnodes, not 16/);
    assert.equal(
      (await spillway(['consume', url, '--group', 'g'])).code,
      2,
      '--group needs --instance-id',
    );

    const child = spawn(process.execPath, [
      bin,
      'consume',
      url,
      '--group',
      'g',
      '--instance-id',
      'cli-1',
      '--format',
      'ndjson',
    ]);
    const got: { vnode: number; key: string; sequence: number; index: number; data: string }[] = [];
    let enough!: () => void;
    const all = new Promise<void>((r) => (enough = r));
    createInterface({ input: child.stdout }).on('line', (l) => {
      got.push(JSON.parse(l) as (typeof got)[number]);
      if (got.length === 30) enough();
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await all;
    const status = json<{ members: { instance_id: string; vnodes: number[]; live: boolean }[] }>(
      await spillway(['group', 'status', url, '--group', 'g', '--json']),
    );
    assert.equal(status.members.length, 1);
    assert.equal(status.members[0]?.instance_id, 'cli-1');
    assert.deepEqual(status.members[0]?.vnodes, [0, 1, 2, 3, 4, 5, 6, 7]);
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    child.kill('SIGINT');
    assert.equal(await exited, 0, stderr);

    for (const e of got) {
      const data = JSON.parse(e.data) as { user: string };
      assert.equal(e.key, data.user);
      assert.equal(e.vnode, vnodeOf(data.user, 8));
    }
    // Per key, in production order.
    for (let u = 0; u < 5; u++) {
      const ns = got
        .filter((e) => e.key === `u${u}`)
        .map((e) => (JSON.parse(e.data) as { n: number }).n);
      assert.deepEqual(
        ns,
        [...ns].sort((a, b) => a - b),
      );
      assert.equal(ns.length, 6);
    }
    // Left cleanly: leases free, everything acknowledged.
    const after = json<{
      members: unknown[];
      vnodes: { owner: string | null; lag_batches: number }[];
    }>(await spillway(['group', 'status', url, '--group', 'g', '--json']));
    assert.deepEqual(after.members, []);
    assert.ok(after.vnodes.every((v) => v.owner === null && v.lag_batches === 0));
    const text = ok(await spillway(['group', 'status', url, '--group', 'g'])).stdout;
    assert.match(text, /group {5}g on file:/);
    assert.match(text, /\(free\)/);
  });
});

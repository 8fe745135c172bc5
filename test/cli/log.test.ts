/**
 * The `spillway` command on the log layout: named subscriptions, start
 * positions, retention, the dump of commits, inline batches, fencing one
 * subscription; and a v1 queue refusing what it cannot do, with exit 1.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bin, json, ok, spillway, type Run } from '../support/cli.ts';
import type { SubscriptionJson } from '../../src/cli/log.ts';

const dirs: string[] = [];
async function freshUrl(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'spillway-cli-log-'));
  dirs.push(dir);
  return `file://${dir}`;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

type Sub = SubscriptionJson;

interface LogDump {
  layout: 'log';
  version: number;
  next_sequence: number;
  retention: { max_age_ms: number | null; max_bytes: number | null };
  head: {
    commit: number;
    end_sequence: number;
    append_time_ms: number;
    total_bytes: number;
    total_records: number;
  };
  boundary: { first_commit: number; first_sequence: number; expired_below: number };
  subscriptions: { name: string; epoch: number; next_sequence: number; commit: number }[];
  commits: {
    commit: number;
    key: string;
    first_sequence: number;
    batches: number;
    append_time_ms: number;
    writer: string;
  }[];
  entries: {
    commit: number;
    sequence: number;
    location: string;
    records: number;
    inline_bytes?: number;
    metadata: { start_index: number; ingestion_time_ms: number; payload_base64: string }[];
    trailer?: { batch_size_bytes: number; crc32c: number; instance_id: string };
  }[];
}

async function subs(url: string): Promise<Sub[]> {
  return json<{ subscriptions: Sub[] }>(await spillway(['subscription', 'list', url, '--json']))
    .subscriptions;
}

async function sub(url: string, name: string): Promise<Sub | undefined> {
  return (await subs(url)).find((s) => s.name === name);
}

/** A log queue of three batches (commits 0, 1, 2): "a1 a2", "b1", "c1 c2 c3". */
async function threeBatches(): Promise<string> {
  const url = await freshUrl();
  ok(await spillway(['produce', url], 'a1\na2\n'));
  ok(await spillway(['produce', url], 'b1\n'));
  ok(await spillway(['produce', url], 'c1\nc2\nc3\n'));
  return url;
}

// Commits younger than the protocol's minimum age (10 s) are never collected: the queue
// the collection test takes is made before every other test, and that test runs last,
// waiting out only what is left.
let gcUrl: string;
let readyAt = 0;
before(async () => {
  gcUrl = await threeBatches();
  ok(await spillway(['consume', gcUrl]));
  readyAt = Date.now() + 10_500;
});

function assertRefused(r: Run, code: number, pattern: RegExp, what: string): void {
  assert.equal(r.code, code, `${what}: exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, pattern, what);
  assert.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line`);
}

describe('spillway subscription', () => {
  test('list shows every subscription with its position, epoch and lag (text and JSON)', async () => {
    const url = await threeBatches();
    const [d] = await subs(url);
    assert.deepEqual(Object.keys(d!).sort(), [
      'created_at_ms',
      'epoch',
      'holder',
      'lag_batches',
      'lag_bytes',
      'lag_entries',
      'last_loss',
      'name',
      'next_index',
      'next_sequence',
      'oldest_unacked_age_ms',
      'updated_at_ms',
    ]);
    assert.equal(d!.name, 'default');
    assert.equal(d!.next_sequence, 0);
    assert.equal(d!.epoch, 0);
    assert.equal(d!.lag_batches, 3);
    assert.equal(d!.lag_entries, 6);
    assert.ok(d!.lag_bytes > 0);
    assert.ok(d!.oldest_unacked_age_ms !== null && d!.oldest_unacked_age_ms >= 0);
    assert.equal(d!.last_loss, null);
    const text = ok(await spillway(['subscription', 'list', url])).stdout;
    assert.match(
      text,
      /^name\s+next sequence\s+epoch\s+lag batches\s+lag entries\s+lag bytes\s+oldest unacked\s+holder$/m,
    );
    assert.match(text, /^default\s+0\s+0\s+3\s+6\s+\d+ B\s+\S+/m);
  });

  test('create takes --start-at oldest, latest, seq:N, time:ms and time:ISO; an existing one keeps its cursor', async () => {
    const url = await threeBatches();
    const dump = json<LogDump>(await spillway(['manifest', 'dump', url]));
    const [, second, third] = dump.commits;
    const cases: [string, string | undefined, number][] = [
      ['plain', undefined, 0],
      ['old', 'oldest', 0],
      ['new', 'latest', 3],
      ['seq2', 'seq:2', 2],
      ['seq3', 'seq:3', 3],
      ['ms', `time:${second!.append_time_ms}`, 1],
      ['iso', `time:${new Date(third!.append_time_ms).toISOString()}`, 2],
      ['date', 'time:2000-01-01', 0],
      ['offset', 'time:2000-01-01T12:00:00+02:00', 0],
      ['future', 'time:2999-12-31T23:59:59.999Z', 3],
    ];
    for (const [name, startAt, expected] of cases) {
      const r = json<{
        name: string;
        created: boolean;
        start_at: string;
        next_sequence: number;
        epoch: number;
      }>(
        await spillway([
          'subscription',
          'create',
          url,
          name,
          ...(startAt ? ['--start-at', startAt] : []),
          '--json',
        ]),
      );
      assert.equal(r.name, name);
      assert.equal(r.created, true, name);
      assert.equal(r.next_sequence, expected, `${name} (${startAt})`);
      assert.equal(r.epoch, 0);
      assert.equal((await sub(url, name))?.next_sequence, expected);
    }
    const again = ok(
      await spillway(['subscription', 'create', url, 'seq2', '--start-at', 'oldest']),
    );
    assert.match(again.stdout, /exists already, at sequence 2: left unchanged/);
    assert.equal((await sub(url, 'seq2'))?.next_sequence, 2);
    const text = ok(await spillway(['subscription', 'create', url, 'txt', '--start-at', 'seq:1']));
    assert.equal(
      text.stdout,
      'created subscription "txt" at sequence 1 (--start-at seq:1); it holds back what it has not acknowledged from there\n',
    );
  });

  test('a bad --start-at or subscription name is a usage error (exit 2) naming the value, and creates nothing', async () => {
    const url = await threeBatches();
    const bad = [
      '',
      'Oldest',
      'first',
      'newest',
      'seq:',
      'seq:-1',
      'seq:1e3',
      'seq:0x10',
      'seq:1.5',
      'seq: 1',
      'sequence:1',
      'time:',
      'time:yesterday',
      'time:-5',
      'time:1e12',
      'time:2024-02-30',
      'time:2024-13-01',
      'time:2024-05-01T12:00',
      'time:2024-05-01T12:00:00',
      'time:2024-05-01 12:00:00Z',
    ];
    for (const [i, value] of bad.entries()) {
      // Every value through one command, and some through each (one parser serves all).
      const commands = [
        ['subscription', 'create', url, 'x', '--start-at', value],
        ['subscription', 'reset', url, 'default', '--start-at', value],
        ['consume', url, '--subscription', 'x', '--start-at', value],
        ['consume', url, '--peek', '--start-at', value],
      ];
      for (const args of i % 4 === 0 ? commands : commands.slice(0, 1)) {
        const r = await spillway(args);
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.ok(r.stderr.includes('--start-at'), r.stderr);
        assert.ok(r.stderr.includes(JSON.stringify(value)), r.stderr);
        assert.equal(r.stdout, '');
      }
    }
    for (const name of ['.hidden', 'a/b', 'a b', '', 'x'.repeat(101), 'ünï']) {
      for (const args of [
        ['subscription', 'create', url, name],
        ['subscription', 'delete', url, name],
        ['consume', url, '--subscription', name],
        ['consumer', 'fence', url, '--subscription', name],
      ]) {
        const r = await spillway(args);
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.ok(r.stderr.includes(JSON.stringify(name)), r.stderr);
      }
    }
    const past = await spillway(['subscription', 'create', url, 'x', '--start-at', 'seq:4']);
    assertRefused(
      past,
      2,
      /sequence 4 is past the end of the log \(its next sequence is 3\)/,
      'seq:4',
    );
    const both = await spillway(['consume', url, '--start-at', 'oldest', '--from-sequence', '1']);
    assertRefused(both, 2, /--from-sequence and --start-at/, 'both');
    const missing = await spillway(['subscription', 'reset', url, 'default']);
    assertRefused(missing, 2, /--start-at/, 'reset without --start-at');
    assert.deepEqual(
      (await subs(url)).map((s) => s.name),
      ['default'],
    );
  });

  test('delete removes a subscription; deleting one that is not there is exit 1', async () => {
    const url = await threeBatches();
    ok(await spillway(['subscription', 'create', url, 'gone', '--start-at', 'seq:1']));
    const r = json<{ name: string; deleted: boolean; next_sequence: number; lag_batches: number }>(
      await spillway(['subscription', 'delete', url, 'gone', '--json']),
    );
    assert.deepEqual(r, { name: 'gone', deleted: true, next_sequence: 1, lag_batches: 2 });
    assert.equal(await sub(url, 'gone'), undefined);
    const again = await spillway(['subscription', 'delete', url, 'gone']);
    assertRefused(again, 1, /^spillway: no subscription "gone" on the queue at "ingest"/, 'again');
  });

  test('reset moves a subscription and raises its epoch; a subscription that is not there is exit 1', async () => {
    const url = await threeBatches();
    assert.equal(ok(await spillway(['consume', url])).stdout, 'a1\na2\nb1\nc1\nc2\nc3\n');
    const before = (await sub(url, 'default'))!;
    assert.equal(before.next_sequence, 3);
    const r = json<Record<string, unknown>>(
      await spillway(['subscription', 'reset', url, 'default', '--start-at', 'seq:1', '--json']),
    );
    assert.deepEqual(r, {
      name: 'default',
      start_at: 'seq:1',
      previous_next_sequence: 3,
      previous_epoch: before.epoch,
      next_sequence: 1,
      epoch: before.epoch + 1,
    });
    assert.equal(ok(await spillway(['consume', url])).stdout, 'b1\nc1\nc2\nc3\n');
    const text = ok(
      await spillway(['subscription', 'reset', url, 'default', '--start-at', 'latest']),
    );
    assert.match(
      text.stdout,
      /^subscription "default" moved from sequence 3 to 3 \(--start-at latest\); epoch raised from \d+ to \d+: its consumer is fenced$/m,
    );
    const missing = await spillway(['subscription', 'reset', url, 'nope', '--start-at', 'oldest']);
    assertRefused(missing, 1, /no subscription "nope"/, 'missing');
    assert.equal(await sub(url, 'nope'), undefined, 'a reset creates nothing');
  });

  test('the subscription commands on a queue that is not there are exit 1, naming where they looked, and create nothing', async () => {
    const url = await freshUrl();
    for (const args of [
      ['subscription', 'list', url],
      ['subscription', 'create', url, 'a'],
      ['subscription', 'delete', url, 'a'],
      ['subscription', 'reset', url, 'a', '--start-at', 'oldest'],
      ['queue', 'config', url],
      ['queue', 'config', url, '--retention-max-bytes', '5'],
      ['consumer', 'fence', url],
    ]) {
      const r = await spillway(args);
      assertRefused(
        r,
        1,
        /^spillway: no queue in file:.*no manifest at "ingest\/manifest" \(v1 layout\) and no log at "ingest\/queue"/,
        args.join(' '),
      );
    }
    const stats = await spillway(['queue', 'stats', url]);
    assert.equal(stats.code, 1, 'still no queue');
  });
});

describe('consume with subscriptions', () => {
  test('each subscription reads everything on its own; acknowledging one leaves the others behind', async () => {
    const url = await threeBatches();
    const all = 'a1\na2\nb1\nc1\nc2\nc3\n';
    assert.equal(ok(await spillway(['consume', url, '--subscription', 'one'])).stdout, all);
    assert.equal(
      ok(await spillway(['consume', url, '--subscription', 'two', '--start-at', 'seq:2'])).stdout,
      'c1\nc2\nc3\n',
    );
    assert.equal(ok(await spillway(['consume', url, '--subscription', 'one'])).stdout, '');
    const byName = new Map((await subs(url)).map((s) => [s.name, s]));
    assert.equal(byName.get('one')?.lag_batches, 0);
    assert.equal(byName.get('two')?.lag_batches, 0);
    assert.equal(byName.get('default')?.lag_batches, 3, 'the default subscription still waits');
    assert.match(byName.get('one')!.holder, /^spillway consume on .* pid \d+$/);
    ok(await spillway(['produce', url], 'd1\n'));
    assert.equal(ok(await spillway(['consume', url, '--subscription', 'two'])).stdout, 'd1\n');
    const later = await spillway(['consume', url, '--subscription', 'two', '--start-at', 'oldest']);
    assert.equal(ok(later).stdout, '');
    assert.match(
      later.stderr,
      /subscription "two" exists already, at sequence 4: --start-at oldest is ignored/,
    );
    const s = json<{ subscriptions: Sub[]; batches_pending: number; entries_pending: number }>(
      await spillway(['queue', 'stats', url, '--json']),
    );
    assert.deepEqual(
      s.subscriptions.map((x) => [x.name, x.lag_batches]),
      [
        ['default', 4],
        ['one', 1],
        ['two', 0],
      ],
    );
    assert.equal(s.batches_pending, 4, 'pending counts the subscription furthest behind');
    assert.equal(s.entries_pending, 7);
  });

  test('--peek starts where the subscription stands, or at --start-at, and moves nothing', async () => {
    const url = await threeBatches();
    ok(await spillway(['consume', url, '--subscription', 'x', '--start-at', 'seq:2']));
    ok(await spillway(['produce', url], 'd1\n'));
    const peek = (...args: string[]): Promise<string> =>
      spillway(['consume', url, '--peek', ...args]).then((r) => ok(r).stdout);
    assert.equal(await peek(), 'a1\na2\nb1\nc1\nc2\nc3\nd1\n', 'default: nothing acknowledged');
    assert.equal(await peek('--subscription', 'x'), 'd1\n');
    assert.equal(await peek('--subscription', 'new'), 'a1\na2\nb1\nc1\nc2\nc3\nd1\n');
    assert.equal(
      await peek('--subscription', 'x', '--start-at', 'oldest'),
      'a1\na2\nb1\nc1\nc2\nc3\nd1\n',
    );
    assert.equal(await peek('--start-at', 'seq:1'), 'b1\nc1\nc2\nc3\nd1\n');
    assert.equal(await peek('--start-at', 'latest'), '');
    assert.equal(await peek('--from-sequence', '3'), 'd1\n');
    assert.equal((await sub(url, 'x'))?.next_sequence, 3);
    assert.equal(await sub(url, 'new'), undefined, 'peeking creates no subscription');
  });

  test('consumer fence --subscription raises that epoch only and keeps its cursor; a running consumer of it is fenced', async () => {
    const url = await threeBatches();
    ok(await spillway(['consume', url, '--subscription', 'a', '--start-at', 'seq:1']));
    ok(await spillway(['subscription', 'create', url, 'b']));
    const before = new Map((await subs(url)).map((s) => [s.name, s]));
    const r = json<Record<string, unknown>>(
      await spillway(['consumer', 'fence', url, '--subscription', 'a', '--json']),
    );
    assert.deepEqual(r, {
      layout: 'log',
      subscription: 'a',
      previous_epoch: before.get('a')!.epoch,
      epoch: before.get('a')!.epoch + 1,
    });
    const now = new Map((await subs(url)).map((s) => [s.name, s]));
    assert.equal(now.get('a')!.next_sequence, 3, 'the cursor did not move');
    assert.equal(now.get('b')!.epoch, before.get('b')!.epoch, 'another subscription is untouched');
    assert.equal(now.get('default')!.epoch, before.get('default')!.epoch);
    const missing = await spillway(['consumer', 'fence', url, '--subscription', 'nope']);
    assertRefused(missing, 1, /no subscription "nope".*nothing to fence/, 'missing');

    // A follower of "b" is fenced by a reset, and says so: exit 1, FencedError.
    const child = spawn(process.execPath, [
      bin,
      'consume',
      url,
      '--subscription',
      'b',
      '--follow',
      '--poll-interval-ms',
      '50',
    ]);
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    await new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (stdout.endsWith('c3\n')) resolve();
      }),
    );
    // Wait until the follower acknowledged what it printed, so the reset is what fences it.
    for (let i = 0; i < 100 && (await sub(url, 'b'))?.next_sequence !== 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    ok(await spillway(['subscription', 'reset', url, 'b', '--start-at', 'seq:2']));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await closed;
    clearTimeout(timer);
    assert.equal(code, 1, stderr);
    assert.match(stderr, /FencedError: subscription "b"/);
    assert.equal((await sub(url, 'b'))?.next_sequence, 2, 'the fenced follower moved nothing');
  });
});

describe('spillway queue config', () => {
  test('prints the retention, sets and clears each limit, and queue stats shows it', async () => {
    const url = await threeBatches();
    type Config = {
      layout: string;
      queue: string;
      created_at_ms: number;
      retention: { max_age_ms: number | null; max_bytes: number | null };
      previous_retention?: { max_age_ms: number | null; max_bytes: number | null };
    };
    const first = json<Config>(await spillway(['queue', 'config', url, '--json']));
    assert.equal(first.layout, 'log');
    assert.equal(first.queue, 'ingest/queue');
    assert.deepEqual(first.retention, { max_age_ms: null, max_bytes: null });
    assert.equal(first.previous_retention, undefined, 'no change, no previous');
    assert.match(
      ok(await spillway(['queue', 'config', url])).stdout,
      /^retention\s+none: batches are kept until every subscription acknowledged them$/m,
    );
    const set = json<Config>(
      await spillway(['queue', 'config', url, '--retention-max-age-ms', '86400000', '--json']),
    );
    assert.deepEqual(set.retention, { max_age_ms: 86_400_000, max_bytes: null });
    assert.deepEqual(set.previous_retention, { max_age_ms: null, max_bytes: null });
    const both = json<Config>(
      await spillway(['queue', 'config', url, '--retention-max-bytes', '1048576', '--json']),
    );
    assert.deepEqual(
      both.retention,
      { max_age_ms: 86_400_000, max_bytes: 1_048_576 },
      'the other limit stays',
    );
    const text = ok(await spillway(['queue', 'config', url])).stdout;
    assert.match(
      text,
      /^retention\s+max age 24h00m \(86400000 ms\), max 1\.00 MiB \(1048576 bytes\)/m,
    );
    const stats = json<{ retention: unknown }>(await spillway(['queue', 'stats', url, '--json']));
    assert.deepEqual(stats.retention, { max_age_ms: 86_400_000, max_bytes: 1_048_576 });
    assert.match(
      ok(await spillway(['queue', 'stats', url])).stdout,
      /^retention\s+max age 24h00m/m,
    );
    const cleared = json<Config>(
      await spillway(['queue', 'config', url, '--retention-max-age-ms', 'none', '--json']),
    );
    assert.deepEqual(cleared.retention, { max_age_ms: null, max_bytes: 1_048_576 });
    const off = json<Config>(
      await spillway([
        'queue',
        'config',
        url,
        '--retention-max-bytes',
        'none',
        '--retention-max-age-ms',
        'none',
        '--json',
      ]),
    );
    assert.deepEqual(off.retention, { max_age_ms: null, max_bytes: null });
    const d = json<LogDump>(await spillway(['manifest', 'dump', url]));
    assert.deepEqual(d.retention, { max_age_ms: null, max_bytes: null });
  });
});

describe('a v1 queue', () => {
  test('refuses named subscriptions and retention with exit 1, saying v1 cannot; what it can do still works', async () => {
    const url = await freshUrl();
    ok(await spillway(['produce', url, '--layout', 'v1'], 'a\nb\n'));
    for (const args of [
      ['subscription', 'list', url],
      ['subscription', 'list', url, '--json'],
      ['subscription', 'create', url, 'x'],
      ['subscription', 'create', url, 'x', '--start-at', 'latest'],
      ['subscription', 'delete', url, 'default'],
      ['subscription', 'reset', url, 'default', '--start-at', 'oldest'],
      ['queue', 'config', url, '--retention-max-age-ms', '1000'],
      ['queue', 'config', url, '--retention-max-bytes', 'none'],
      ['consume', url, '--subscription', 'x'],
      ['consume', url, '--peek', '--subscription', 'x'],
      ['consume', url, '--start-at', 'oldest'],
      ['consumer', 'fence', url, '--subscription', 'x'],
    ]) {
      const r = await spillway(args);
      assertRefused(
        r,
        1,
        /^spillway: the queue at "ingest\/manifest" in file:.* has the v1 layout, which cannot (have named subscriptions|keep a retention|start a subscription at a position)/,
        args.join(' '),
      );
      assert.equal(r.stdout, '');
    }
    const config = json<Record<string, unknown>>(
      await spillway(['queue', 'config', url, '--json']),
    );
    assert.deepEqual(config, {
      url: config.url,
      layout: 'v1',
      manifest_path: 'ingest/manifest',
      retention: null,
    });
    const fence = json<Record<string, unknown>>(
      await spillway(['consumer', 'fence', url, '--subscription', 'default', '--json']),
    );
    assert.deepEqual(fence, { layout: 'v1', previous_epoch: 0, epoch: 1 });
    assert.equal(
      ok(await spillway(['consume', url, '--subscription', 'default'])).stdout,
      'a\nb\n',
    );
    const s = json<{ layout: string; subscriptions: unknown[]; epoch: number }>(
      await spillway(['queue', 'stats', url, '--json']),
    );
    assert.equal(s.layout, 'v1');
    assert.deepEqual(s.subscriptions, []);
  });

  test('--layout names the layout of a new queue; naming the other for an existing queue is exit 2 before any input is read', async () => {
    const v1 = await freshUrl();
    ok(await spillway(['produce', v1, '--layout', 'v1'], 'a\n'));
    ok(await spillway(['produce', v1, '--layout', 'v1'], 'b\n'));
    const wrong = await spillway(['produce', v1, '--layout', 'log'], 'c\n');
    assertRefused(
      wrong,
      2,
      /^spillway: UsageError: --layout log: the queue in file:.* has the v1 layout already \(a manifest at "ingest\/manifest"\).*give --layout v1/,
      'produce --layout log on v1',
    );
    assert.equal(wrong.stdout, '', 'no summary: nothing was read');
    const log = await freshUrl();
    ok(await spillway(['produce', log], 'a\n'));
    for (const args of [
      ['produce', log, '--layout', 'v1'],
      ['consume', log, '--layout', 'v1'],
    ]) {
      assertRefused(await spillway(args, 'x\n'), 2, /has the log layout already/, args.join(' '));
    }
    const bogus = await spillway(['produce', log, '--layout', 'v2'], 'x\n');
    assert.equal(bogus.code, 2);
    assert.match(bogus.stderr, /'v2' is invalid.*log, v1/);
    assert.equal(ok(await spillway(['consume', v1])).stdout, 'a\nb\n');
    assert.equal(ok(await spillway(['consume', log])).stdout, 'a\n');
  });
});

describe('manifest dump and batch inspect on the log', () => {
  test('the dump lists commits, head, boundary and cursors, and every batch in the v1 entry shape with its commit', async () => {
    const url = await threeBatches();
    const big = 'y'.repeat(70_000); // more than an inline batch may hold
    ok(await spillway(['produce', url], `${big}\n`));
    const d = json<LogDump>(await spillway(['manifest', 'dump', url]));
    assert.equal(d.layout, 'log');
    assert.equal(d.version, 1);
    assert.equal(d.next_sequence, 4);
    assert.deepEqual(
      { commit: d.head.commit, end: d.head.end_sequence, records: d.head.total_records },
      { commit: 3, end: 4, records: 7 },
    );
    assert.deepEqual(d.boundary, {
      first_commit: 0,
      first_sequence: 0,
      expired_below: 0,
      updated_at_ms: 0,
    });
    assert.deepEqual(
      d.commits.map((c) => [c.commit, c.key, c.first_sequence, c.batches]),
      [0, 1, 2, 3].map((n) => [n, `ingest/log/${String(n).padStart(20, '0')}`, n, 1]),
    );
    assert.deepEqual(
      d.subscriptions.map((s) => [s.name, s.epoch, s.next_sequence]),
      [['default', 0, 0]],
    );
    assert.deepEqual(
      d.entries.map((e) => [e.commit, e.sequence, e.records]),
      [
        [0, 0, 2],
        [1, 1, 1],
        [2, 2, 3],
        [3, 3, 1],
      ],
    );
    const [inline, , , object] = d.entries;
    assert.equal(inline!.location, `ingest/log/${'0'.repeat(20)}#0`);
    assert.equal(inline!.inline_bytes, inline!.trailer!.batch_size_bytes);
    assert.match(object!.location, /^ingest\/[0-9A-HJKMNP-TV-Z]{26}\.batch$/);
    assert.equal(object!.inline_bytes, undefined);
    assert.deepEqual(Object.keys(object!).sort(), [
      'commit',
      'location',
      'metadata',
      'records',
      'sequence',
      'trailer',
    ]);
    assert.equal(object!.metadata[0]!.start_index, 0);
  });

  test('batch inspect reads an inline batch from its commit and a batch object, checking both against their commit', async () => {
    const url = await threeBatches();
    ok(await spillway(['produce', url], `${'y'.repeat(70_000)}\nsecond\n`));
    const d = json<LogDump>(await spillway(['manifest', 'dump', url]));
    type Inspect = {
      location: string;
      layout: string;
      sequence: number | null;
      commit: number | null;
      inline: boolean;
      records: number;
      checksum: string;
      first_records: { text?: string }[];
    };
    const inline = json<Inspect>(
      await spillway(['batch', 'inspect', url, d.entries[2]!.location, '--json']),
    );
    assert.equal(inline.layout, 'log');
    assert.equal(inline.inline, true);
    assert.equal(inline.sequence, 2);
    assert.equal(inline.commit, 2);
    assert.equal(inline.records, 3);
    assert.match(inline.checksum, /^ok \(CRC32C 0x[0-9a-f]{8}, \d+ bytes\)$/);
    assert.deepEqual(
      inline.first_records.map((r) => r.text),
      ['c1', 'c2', 'c3'],
    );
    const text = ok(await spillway(['batch', 'inspect', url, d.entries[2]!.location])).stdout;
    assert.match(text, /^batch\s+ingest\/log\/0{19}2#0 \(sequence 2, commit 2\)$/m);
    assert.match(text, /^object\s+\d+ B \(inline, inside its commit\)$/m);
    const object = json<Inspect>(
      await spillway(['batch', 'inspect', url, d.entries[3]!.location, '--json', '-n', '0']),
    );
    assert.equal(object.inline, false);
    assert.equal(object.sequence, 3);
    assert.equal(object.commit, 3);
    assert.equal(object.records, 2);
    assert.match(object.checksum, /^ok /);
    for (const bad of [`ingest/log/${'0'.repeat(20)}#7`, `ingest/log/${'0'.repeat(19)}9#0`]) {
      const r = await spillway(['batch', 'inspect', url, bad]);
      assertRefused(r, 1, /^spillway: no inline batch "ingest\/log\/\d{20}#\d" in file:/, bad);
    }
    // A batch object the log does not hold (say, an orphan) is shown, with nothing to check against.
    const { openStore } = await import('../../src/index.ts');
    const store = openStore(url);
    const body = (await store.get(d.entries[3]!.location)).body;
    await store.put('ingest/01ARZ3NDEKTSV4RRFFQ69G5FAV.batch', body);
    await store.close();
    const orphan = json<Inspect>(
      await spillway([
        'batch',
        'inspect',
        url,
        'ingest/01ARZ3NDEKTSV4RRFFQ69G5FAV.batch',
        '--json',
      ]),
    );
    assert.equal(orphan.sequence, null);
    assert.equal(orphan.commit, null);
    assert.match(orphan.checksum, /^not in the log \(collected, orphaned, or foreign\)/);
  });
});

describe('spillway gc on the log', () => {
  test('deletes the commits every subscription acknowledged, below the head, with their inline batches', async () => {
    ok(await spillway(['subscription', 'create', gcUrl, 'slow', '--start-at', 'seq:2']));
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, readyAt - Date.now())));
    const dry = ok(await spillway(['gc', gcUrl, '--dry-run', '--grace-period-ms', '0']));
    const keys = [`ingest/log/${'0'.repeat(20)}`, `ingest/log/${'0'.repeat(19)}1`];
    assert.match(
      dry.stdout,
      new RegExp(
        `^would delete ${keys[0]}\\nwould delete ${keys[1]}\\ndry run: would delete 2 objects \\(\\d+ B\\), kept 0\\n$`,
      ),
      'the subscription "slow" holds commit 2 back',
    );
    const gc = json<{ dry_run: boolean; deleted: string[]; bytes_deleted: number; kept: number }>(
      await spillway(['gc', gcUrl, '--grace-period-ms', '0', '--json']),
    );
    assert.equal(gc.dry_run, false);
    assert.deepEqual(gc.deleted, keys);
    assert.ok(gc.bytes_deleted > 0);
    const d = json<LogDump>(await spillway(['manifest', 'dump', gcUrl]));
    assert.deepEqual(
      { first_commit: d.boundary.first_commit, first_sequence: d.boundary.first_sequence },
      { first_commit: 2, first_sequence: 2 },
    );
    assert.deepEqual(
      d.entries.map((e) => e.sequence),
      [2],
    );
    assert.equal(
      ok(await spillway(['consume', gcUrl, '--peek', '--start-at', 'oldest'])).stdout,
      'c1\nc2\nc3\n',
    );
    const gone = await spillway(['batch', 'inspect', gcUrl, `ingest/log/${'0'.repeat(20)}#0`]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /commit 0 was collected/);
  });
});

test('secrets in a URL are never printed by the new commands', async () => {
  const url = 's3://AKIAEXAMPLE:hunter2secret@bucket/p?endpoint=http://127.0.0.1:9&token=s3cret';
  for (const args of [
    ['subscription', 'list', url],
    ['subscription', 'create', url, 'a'],
    ['queue', 'config', url, '--verbose'],
    ['consumer', 'fence', url, '--subscription', 'a'],
  ]) {
    const r = await spillway(args);
    assert.notEqual(r.code, 0);
    assert.doesNotMatch(r.stdout + r.stderr, /hunter2secret|s3cret/, args.join(' '));
  }
});

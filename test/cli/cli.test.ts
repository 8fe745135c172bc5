/**
 * The built `spillway` command, spawned as a user would run it, against
 * file:// and Ceph RGW: outputs, exit codes, and bad input.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  createTestBucket,
  deleteTestBucket,
  reportMissingServer,
  s3Endpoint,
} from '../support/servers.ts';
import { bin, json, ok, spillway } from '../support/cli.ts';

/** `manifest dump` of either layout: the v1 manifest, or the log with its commits. */
interface Dump {
  layout?: 'log';
  version: number;
  epoch?: number;
  next_sequence: number;
  head?: { commit: number; end_sequence: number };
  boundary?: { first_commit: number; first_sequence: number };
  subscriptions?: { name: string; epoch: number; next_sequence: number }[];
  commits?: { commit: number; first_sequence: number; batches: number }[];
  entries: {
    commit?: number;
    sequence: number;
    location: string;
    metadata: { start_index: number; ingestion_time_ms: number; payload_base64: string }[];
    trailer?: { batch_size_bytes: number; crc32c: number; instance_id: string };
  }[];
}

type Layout = 'v1' | 'log';

/** The epoch of the queue's consumer: the manifest's (v1) or the default subscription's (log). */
function consumerEpoch(d: Dump): number | undefined {
  return d.layout === 'log' ? d.subscriptions?.find((x) => x.name === 'default')?.epoch : d.epoch;
}

/** The first sequence not acknowledged by the queue's consumer. */
function firstPending(d: Dump): number | undefined {
  return d.layout === 'log'
    ? d.subscriptions?.find((x) => x.name === 'default')?.next_sequence
    : d.entries[0]?.sequence;
}

test('the CLI is built (npm test builds it first)', () => {
  assert.ok(existsSync(bin), `${bin} is missing: run npm run build`);
});

/**
 * The whole operator workflow against one store URL, on a queue of the
 * layout given: `v1` is asked for by the first `produce`, `log` is the default.
 */
function describeWorkflow(name: string, layout: Layout, newUrl: () => Promise<string>): void {
  const log = layout === 'log';
  const create = log ? [] : ['--layout', 'v1'];
  describe(`spillway on ${name}, ${layout} layout`, () => {
    let url: string;
    const lines = Array.from({ length: 2500 }, (_, i) => `line ${i} ${'x'.repeat(i % 50)}`);
    before(async () => {
      url = await newUrl();
    });

    test('produce reads lines from stdin, ends when all are durable, and prints counts', async () => {
      const first = ok(
        await spillway(
          ['produce', url, ...create, '--entries-per-call', '500'],
          lines.slice(0, 1000).join('\n') + '\n',
        ),
      );
      assert.match(first.stdout, /^produced 1,?000 of 1,?000 entries .* all durable/m);
      const second = json<{ entries: number; all_durable: boolean; batches: number }>(
        await spillway(
          ['produce', url, '--json', '--flush-interval-ms', '0', '--entries-per-call', '300'],
          lines.slice(1000).join('\n'),
        ),
      );
      assert.equal(second.entries, 1500);
      assert.equal(second.all_durable, true);
      assert.ok(second.batches >= 1);
    });

    test('queue stats shows the layout, pending batches, bytes, age, epoch and stored objects', async () => {
      const s = json<Record<string, unknown>>(await spillway(['queue', 'stats', url, '--json']));
      assert.equal(s.layout, layout);
      assert.ok((s.batches_pending as number) >= 2);
      assert.equal(s.produce_calls_pending, log ? null : 2 + 5);
      assert.equal(s.entries_pending, log ? lines.length : null);
      assert.ok((s.bytes_pending as number) > 0);
      assert.equal(s.epoch, 0);
      assert.equal(s.next_sequence, s.batches_pending);
      if (log) {
        // Small batches travel inside their commits: no batch object of their own.
        assert.ok((s.batch_objects as number) <= (s.batches_pending as number));
        const subs = s.subscriptions as {
          name: string;
          lag_batches: number;
          lag_entries: number;
        }[];
        assert.deepEqual(
          subs.map((x) => [x.name, x.lag_batches, x.lag_entries]),
          [['default', s.batches_pending, lines.length]],
        );
        assert.deepEqual(s.retention, { max_age_ms: null, max_bytes: null });
      } else {
        assert.equal(s.batch_objects, s.batches_pending);
        assert.deepEqual(s.subscriptions, []);
        assert.equal(s.retention, null);
      }
      assert.equal(s.orphans, 0);
      assert.ok(typeof s.oldest_entry_age_ms === 'number' && s.oldest_entry_age_ms >= 0);
      const text = ok(await spillway(['queue', 'stats', url])).stdout;
      assert.match(text, new RegExp(`^layout\\s+${layout}`, 'm'));
      if (log) {
        assert.match(text, /^pending\s+\d+ batches, 2,500 entries/m);
        assert.match(text, /^ {2}default\s+0\s+0\s+\d+\s+2,500 /m);
      } else {
        assert.match(text, /^pending\s+\d+ batches, 7 produce calls/m);
        assert.match(text, /^epoch\s+0$/m);
      }
      assert.doesNotMatch(text, /secret/i);
    });

    test('manifest dump prints each batch in the reference JSON shape with trailers', async () => {
      const d = json<Dump>(await spillway(['manifest', 'dump', url]));
      assert.equal(d.version, 1);
      assert.equal(consumerEpoch(d), 0);
      assert.equal(d.next_sequence, d.entries.length);
      const e = d.entries[0]!;
      assert.equal(e.sequence, 0);
      if (log) {
        assert.equal(d.layout, 'log');
        assert.equal(e.commit, 0);
        assert.match(e.location, /^ingest\/log\/0{20}#0$/, 'a small batch is inline');
        assert.equal(d.head!.end_sequence, d.next_sequence);
        assert.equal(d.boundary!.first_commit, 0);
        assert.equal(
          d.commits!.reduce((n, c) => n + c.batches, 0),
          d.entries.length,
        );
      } else {
        assert.equal(d.layout, undefined, 'v1 keeps the reference shape');
        assert.match(e.location, /^ingest\/[0-9A-HJKMNP-TV-Z]{26}\.batch$/);
      }
      assert.deepEqual(Object.keys(e.metadata[0]!).sort(), [
        'ingestion_time_ms',
        'payload_base64',
        'start_index',
      ]);
      assert.equal(e.metadata[1]!.start_index, 500);
      assert.ok(
        e.trailer && e.trailer.batch_size_bytes > 0 && typeof e.trailer.instance_id === 'string',
      );
    });

    test('batch inspect shows compression, counts, sizes, checksum status and the first records', async () => {
      const d = json<Dump>(await spillway(['manifest', 'dump', url]));
      const location = d.entries[0]!.location;
      const text = ok(await spillway(['batch', 'inspect', url, location, '-n', '2'])).stdout;
      assert.match(text, /^compression\s+none$/m);
      assert.match(text, /^records\s+1,?000 /m);
      assert.match(text, /^checksum\s+ok \(CRC32C 0x[0-9a-f]{8}/m);
      assert.match(text, /\[0\] "line 0 "/);
      assert.match(text, /\[1\] "line 1 x"/);
      const j = json<{ records: number; first_records: { hex?: string }[]; object_bytes: number }>(
        await spillway(['batch', 'inspect', url, location, '--json', '--hex', '-n', '1']),
      );
      assert.equal(j.records, 1000);
      assert.equal(j.object_bytes, d.entries[0]!.trailer!.batch_size_bytes);
      assert.equal(j.first_records[0]!.hex, Buffer.from('line 0 ').toString('hex'));
      const missing = await spillway(['batch', 'inspect', url, 'ingest/nope.batch']);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /^spillway: no batch object "ingest\/nope.batch"/);
    });

    test('consume --peek prints every entry without acknowledging or fencing', async () => {
      const r = ok(await spillway(['consume', url, '--peek']));
      const j = ok(await spillway(['consume', url, '--peek', '--json']));
      assert.equal(j.stdout.trim().split('\n').length, lines.length);
      assert.equal(
        (JSON.parse(j.stdout.split('\n')[0] as string) as { data: string }).data,
        lines[0],
      );
      assert.deepEqual(r.stdout.split('\n').slice(0, -1), lines);
      const from = ok(await spillway(['consume', url, '--peek', '--from-sequence', '1']));
      assert.deepEqual(from.stdout.split('\n').slice(0, -1), lines.slice(1000));
      const d = json<Dump>(await spillway(['manifest', 'dump', url]));
      assert.equal(consumerEpoch(d), 0, 'peeking does not fence');
      assert.equal(firstPending(d), 0, 'peeking does not acknowledge');
    });

    test('consume writes NDJSON and acknowledges; the queue is then empty', async () => {
      const r = ok(await spillway(['consume', url, '--format', 'ndjson']));
      const got = r.stdout
        .trim()
        .split('\n')
        .map(
          (l) =>
            JSON.parse(l) as {
              sequence: number;
              index: number;
              data: string;
              ingestion_time_ms: number;
            },
        );
      assert.deepEqual(
        got.map((g) => g.data),
        lines,
      );
      assert.equal(got[1000]!.sequence, 1);
      assert.equal(got[1000]!.index, 0);
      assert.ok(got[0]!.ingestion_time_ms > 1_600_000_000_000);
      const s = json<Record<string, number>>(await spillway(['queue', 'stats', url, '--json']));
      assert.equal(s.batches_pending, 0);
      assert.equal(s.epoch, 1);
      assert.equal(ok(await spillway(['consume', url])).stdout, '', 'nothing is delivered twice');
    });

    test('gc --dry-run lists what it would delete, gc deletes it', async () => {
      if (log) {
        // Commits younger than the protocol's minimum age stay whatever the grace period
        // (test/cli/log.test.ts waits them out): here, that dry run and run agree and say
        // what they take in the log's words.
        const dry = ok(await spillway(['gc', url, '--dry-run', '--grace-period-ms', '0']));
        const listed = dry.stdout
          .split('\n')
          .filter((l) => l.startsWith('would delete ingest/'))
          .map((l) => l.slice('would delete '.length));
        for (const key of listed) assert.match(key, /^ingest\/(log\/\d{20}|[0-9A-Z]{26}\.batch)$/);
        assert.match(
          dry.stdout,
          new RegExp(`^dry run: would delete ${listed.length} objects? `, 'm'),
        );
        const gc = json<{ deleted: string[]; dry_run: boolean; kept: number }>(
          await spillway(['gc', url, '--grace-period-ms', '0', '--json']),
        );
        assert.equal(gc.dry_run, false);
        // Everything the dry run listed goes; a commit that reached the protocol's
        // minimum age between the two runs (a busy machine, store times kept to the
        // second) may go too.
        for (const key of listed)
          assert.ok(gc.deleted.includes(key), `${key} was listed, not deleted`);
        for (const key of gc.deleted)
          assert.match(key, /^ingest\/(log\/\d{20}|[0-9A-Z]{26}\.batch)$/);
        const after = json<Record<string, number>>(
          await spillway(['queue', 'stats', url, '--json']),
        );
        assert.equal(after.batch_objects, 0);
        assert.equal(after.batches_pending, 0);
        return;
      }
      const stats = json<{ orphans: number }>(await spillway(['queue', 'stats', url, '--json']));
      assert.ok(stats.orphans > 0, 'acknowledged batch objects await collection');
      const kept = ok(await spillway(['gc', url]));
      assert.match(kept.stdout, /deleted 0 batch objects .* kept \d+/);
      const dry = ok(await spillway(['gc', url, '--dry-run', '--grace-period-ms', '0']));
      assert.match(dry.stdout, /^would delete ingest\/.*\.batch$/m);
      assert.match(dry.stdout, new RegExp(`dry run: would delete ${stats.orphans} batch object`));
      const gc = json<{ deleted: string[]; dry_run: boolean }>(
        await spillway(['gc', url, '--grace-period-ms', '0', '--json']),
      );
      assert.equal(gc.dry_run, false);
      assert.equal(gc.deleted.length, stats.orphans);
      const after = json<Record<string, number>>(await spillway(['queue', 'stats', url, '--json']));
      assert.equal(after.batch_objects, 0);
    });

    test('consume --follow waits for new batches until Ctrl-C; --manifest-path and --data-prefix pick another queue', async () => {
      const paths = ['--manifest-path', 'other/queue.manifest', '--data-prefix', 'other/batches'];
      const before = json<Dump>(await spillway(['manifest', 'dump', url]));
      const child = spawn(process.execPath, [
        bin,
        'consume',
        url,
        ...paths,
        ...create,
        '--follow',
        '--poll-interval-ms',
        '50',
      ]);
      let stdout = '';
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const seen = new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (stdout.includes('late 2\n')) resolve();
        });
        // A follower that ends first says why, rather than leave the test pending.
        child.on('close', (code, sig) =>
          reject(new Error(`consume --follow ended (${code ?? sig}) early: ${stdout}${stderr}`)),
        );
      });
      // The layout asked for by both: the follower may not have created the queue yet.
      ok(await spillway(['produce', url, ...paths, ...create], 'late 1\nlate 2\n'));
      await seen;
      child.kill('SIGINT');
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.equal(code, 0, stderr);
      assert.equal(stdout, 'late 1\nlate 2\n');
      const other = json<{
        layout: string;
        manifest_path: string;
        batches_pending: number;
        batch_objects: number;
      }>(await spillway(['queue', 'stats', url, ...paths, '--json']));
      assert.equal(other.layout, layout, 'the follower created the queue in the layout asked for');
      assert.equal(other.manifest_path, log ? 'other/batches/queue' : 'other/queue.manifest');
      assert.equal(other.batches_pending, 0, 'the follower acknowledged what it printed');
      assert.equal(other.batch_objects, log ? 0 : 1);
      const after = json<Dump>(await spillway(['manifest', 'dump', url]));
      assert.deepEqual(after, before, 'the default queue was not touched');
    });

    test('consumer fence raises the epoch', async () => {
      const before = json<Dump>(await spillway(['manifest', 'dump', url]));
      const r = json<{ previous_epoch: number; epoch: number; layout: string }>(
        await spillway(['consumer', 'fence', url, '--json']),
      );
      assert.equal(r.layout, layout);
      assert.equal(r.epoch, r.previous_epoch + 1);
      assert.equal(r.previous_epoch, consumerEpoch(before));
      assert.match(
        ok(await spillway(['consumer', 'fence', url])).stdout,
        /epoch raised from \d+ to \d+/,
      );
      const after = json<Dump>(await spillway(['manifest', 'dump', url]));
      assert.equal(consumerEpoch(after), r.epoch + 1);
      assert.equal(firstPending(after), firstPending(before), 'fencing does not move the cursor');
    });

    test('produce takes NDJSON and length-prefixed frames, and stops at a bad line having made the lines before it durable', async () => {
      ok(await spillway(['produce', url, '--format', 'ndjson'], '{"a":1}\n\n[2]\n'));
      const frames = Buffer.concat(
        ['one', '', 'three'].map((s) => {
          const b = Buffer.alloc(4 + s.length);
          b.writeUInt32LE(s.length, 0);
          b.write(s, 4);
          return b;
        }),
      );
      ok(await spillway(['produce', url, '--format', 'frames'], frames));
      const bad = await spillway(
        ['produce', url, '--format', 'ndjson'],
        '{"ok":true}\n{nope\n{"late":1}\n',
      );
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /^spillway: stdin line 2 is not valid JSON/m);
      assert.match(bad.stdout, /produced 1 of 1 entries/);
      const torn = await spillway(
        ['produce', url, '--format', 'frames'],
        Buffer.from([5, 0, 0, 0, 1]),
      );
      assert.equal(torn.code, 1);
      assert.match(torn.stderr, /ends inside frame/);
      const r = ok(await spillway(['consume', url, '--format', 'ndjson']));
      assert.deepEqual(
        r.stdout
          .trim()
          .split('\n')
          .map((l) => (JSON.parse(l) as { data: string }).data),
        ['{"a":1}', '[2]', 'one', '', 'three', '{"ok":true}'],
      );
    });

    test('a corrupt manifest or commit is a one-line error naming it, exit 1; --verbose adds the stack', async () => {
      // Written through the CLI's own store: overwrite the manifest (v1) or the head commit
      // (log) with garbage.
      const d = json<Dump>(await spillway(['manifest', 'dump', url]));
      const key = log
        ? `ingest/log/${String(d.head!.commit).padStart(20, '0')}`
        : 'ingest/manifest';
      const { openStore } = await import('../../src/index.ts');
      const store = openStore(url);
      await store.put(key, new TextEncoder().encode('this is not a manifest at all'));
      await store.close();
      for (const args of [
        ['manifest', 'dump', url],
        ['queue', 'stats', url],
        ['consume', url],
      ]) {
        const r = await spillway(args);
        assert.equal(r.code, 1, args.join(' '));
        assert.ok(
          r.stderr.startsWith(`spillway: CorruptDataError: ${key}: `),
          `${args.join(' ')}: ${r.stderr}`,
        );
        assert.equal(r.stderr.trim().split('\n').length, 1);
      }
      const verbose = await spillway(['manifest', 'dump', url, '--verbose']);
      assert.match(verbose.stderr, /\n\s+at /);
      const produce = await spillway(['produce', url], 'x\n');
      assert.equal(produce.code, 1);
      assert.match(produce.stderr, /CorruptDataError/);
    });
  });
}

describe('file://', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  for (const layout of ['log', 'v1'] as const) {
    describeWorkflow('file://', layout, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'spillway-cli-'));
      dirs.push(dir);
      return `file://${dir}`;
    });
  }

  test('demo runs producers and a consumer on a directory and drains everything', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spillway-cli-demo-'));
    dirs.push(dir);
    const r = ok(
      await spillway(['demo', '--store', `file://${dir}`, '--duration-s', '1', '--json']),
    );
    const s = JSON.parse(r.stdout) as {
      layout: string;
      entries_durable: number;
      entries_consumed: number;
      producers: number;
    };
    assert.ok(s.entries_durable > 0);
    assert.equal(s.entries_consumed, s.entries_durable);
    assert.equal(s.producers, 3);
    assert.equal(s.layout, 'log');
    // Not a terminal: plain progress lines on stderr, no cursor codes.
    assert.ok(!r.stderr.includes('\u001b['), 'no terminal escape codes');
    const text = ok(
      await spillway(['demo', '--store', `file://${dir}`, '--duration-s', '1', '--producers', '2']),
    ).stdout;
    assert.match(text, /^demo finished: 2 producers and 1 consumer .*\(log layout\)/m);
    assert.match(text, /all acknowledged; the queue is empty/);
    const refused = await spillway(['demo', '--store', `file://${dir}`, '--layout', 'v1']);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /--layout v1: the queue in file:.* has the log layout already/);
  });

  test('demo --layout v1 runs on a v1 manifest', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spillway-cli-demo-'));
    dirs.push(dir);
    const s = json<{ layout: string; entries_durable: number; entries_consumed: number }>(
      await spillway([
        'demo',
        '--store',
        `file://${dir}`,
        '--layout',
        'v1',
        '--duration-s',
        '1',
        '--json',
      ]),
    );
    assert.equal(s.layout, 'v1');
    assert.ok(s.entries_durable > 0);
    assert.equal(s.entries_consumed, s.entries_durable);
    assert.ok(existsSync(join(dir, 'ingest', 'manifest')));
  });

  test('Ctrl-C stops the demo cleanly: everything durable is drained, exit 0', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spillway-cli-demo-'));
    dirs.push(dir);
    const child = spawn(process.execPath, [
      bin,
      'demo',
      '--store',
      `file://${dir}`,
      '--duration-s',
      '0',
      '--json',
    ]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    // The first plain progress line says it is producing; interrupt then.
    await new Promise<void>((resolve) =>
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('durable')) resolve();
      }),
    );
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 0, stderr);
    const s = JSON.parse(stdout) as { entries_durable: number; entries_consumed: number };
    assert.ok(s.entries_durable > 0);
    assert.equal(s.entries_consumed, s.entries_durable);
  });

  test('usage errors exit 2 with one line; runtime errors exit 1; --help exits 0 everywhere', async () => {
    const unknown = await spillway(['bogus']);
    assert.equal(unknown.code, 2);
    assert.equal(unknown.stderr, "spillway: unknown command 'bogus'\n");
    const badUrl = await spillway(['queue', 'stats', 'ftp://x/y']);
    assert.equal(badUrl.code, 2);
    assert.match(
      badUrl.stderr,
      /^spillway: InvalidArgumentError: unknown store URL scheme "ftp:".*expected/,
    );
    const noArg = await spillway(['manifest', 'dump']);
    assert.equal(noArg.code, 2);
    assert.match(noArg.stderr, /missing required argument 'url'/);
    const badOption = await spillway(['consume', 'file:///tmp/x', '--from-sequence', '-3']);
    assert.equal(badOption.code, 2);
    const dir = await mkdtemp(join(tmpdir(), 'spillway-cli-empty-'));
    dirs.push(dir);
    const missing = await spillway(['manifest', 'dump', `file://${dir}`]);
    assert.equal(missing.code, 1);
    assert.match(
      missing.stderr,
      /^spillway: no queue in file:\/\/.*: no manifest at "ingest\/manifest" \(v1 layout\) and no log at "ingest\/queue" \(log layout\).*--manifest-path \/ --data-prefix/,
    );
    assert.equal(missing.stderr.trim().split('\n').length, 1);
    for (const args of [
      [],
      ['manifest', 'dump'],
      ['queue', 'stats'],
      ['batch', 'inspect'],
      ['produce'],
      ['consume'],
      ['gc'],
      ['consumer', 'fence'],
      ['subscription'],
      ['subscription', 'list'],
      ['subscription', 'create'],
      ['subscription', 'delete'],
      ['subscription', 'reset'],
      ['queue', 'config'],
      ['demo'],
    ]) {
      const r = await spillway([...args, '--help']);
      assert.equal(r.code, 0, `${args.join(' ')} --help`);
      assert.match(r.stdout, /^Usage: spillway/);
    }
  });

  test('credentials in a URL are never printed', async () => {
    const r = await spillway([
      'queue',
      'stats',
      's3://AKIAEXAMPLE:hunter2secret@bucket/p?endpoint=http://127.0.0.1:9',
    ]);
    assert.notEqual(r.code, 0);
    assert.doesNotMatch(r.stdout + r.stderr, /hunter2secret/);
  });

  test('a closed stdout pipe ends consume --peek quietly', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spillway-cli-pipe-'));
    dirs.push(dir);
    ok(
      await spillway(
        ['produce', `file://${dir}`],
        Array.from({ length: 50_000 }, (_, i) => `e${i}`).join('\n'),
      ),
    );
    const child = spawn(process.execPath, [bin, 'consume', `file://${dir}`, '--peek']);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 0, stderr);
    assert.equal(stderr, '');
  });
});

const endpoint = s3Endpoint();
if (!endpoint) {
  reportMissingServer('CLI on s3', 's3', 'Run `npm test`, which starts Ceph RGW.');
} else {
  const buckets: string[] = [];
  after(async () => {
    for (const b of buckets) await deleteTestBucket(endpoint, b);
  });
  for (const layout of ['log', 'v1'] as const) {
    describeWorkflow('s3 (Ceph RGW)', layout, async () => {
      const bucket = await createTestBucket(endpoint, 'cli');
      buckets.push(bucket);
      return `s3://${bucket}/q?endpoint=${encodeURIComponent(endpoint)}`;
    });
  }
}

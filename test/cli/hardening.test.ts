/**
 * The `spillway` command under hostile input and a faulty environment: typos
 * that must not delete data, bytes that must survive unchanged, a reader
 * that goes away, signals, oversized claims and secrets in URLs.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { bin, json, ok, spillway } from '../support/cli.ts';

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'spillway-hard-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

interface Stats {
  batches_pending: number;
  batch_objects: number;
  next_sequence: number;
  epoch: number;
}

const numbered = (from: number, to: number): string =>
  Array.from({ length: to - from + 1 }, (_, i) => `${from + i}\n`).join('');

/** Frames: u32 little-endian length, then the bytes. */
function frames(entries: Buffer[]): Buffer {
  return Buffer.concat(
    entries.flatMap((e) => {
      const h = Buffer.alloc(4);
      h.writeUInt32LE(e.length);
      return [h, e];
    }),
  );
}

function parseFrames(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length;) {
    const n = bytes.readUInt32LE(at);
    out.push(bytes.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  return out;
}

describe('spillway command hardening', () => {
  test('gc with a mistyped --manifest-path (v1) or --data-prefix (log) refuses, naming the path, and deletes nothing', async () => {
    for (const [layout, typo, named] of [
      ['v1', ['--manifest-path', 'ingest/manifset'], /no manifest at "ingest\/manifset"/],
      ['log', ['--data-prefix', 'ingset'], /no log at "ingset\/queue"/],
    ] as const) {
      const url = `file://${await freshDir()}`;
      ok(await spillway(['produce', url, '--layout', layout], numbered(1, 10)));
      ok(await spillway(['produce', url], numbered(11, 20)));
      for (const grace of ['0', '600000']) {
        const r = await spillway(['gc', url, ...typo, '--grace-period-ms', grace]);
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, named);
      }
      const s = json<Stats>(await spillway(['queue', 'stats', url, '--json']));
      assert.equal(s.next_sequence, 2);
      if (layout === 'v1') assert.equal(s.batch_objects, 2);
      assert.equal(ok(await spillway(['consume', url])).stdout, numbered(1, 20));
    }
  });

  test('numeric options take decimal digits only: empty, 1e3, 0x10, -1 and 1.5 are usage errors naming the option', async () => {
    const url = `file://${await freshDir()}`;
    ok(await spillway(['produce', url], 'x\n'));
    const cases: [string[], string][] = [];
    for (const value of ['', '1e3', '0x10', '-1', '1.5', ' 7', '7 ']) {
      cases.push([['gc', url, '--grace-period-ms', value], '--grace-period-ms']);
      cases.push([['produce', url, '--flush-interval-ms', value], '--flush-interval-ms']);
      cases.push([['consume', url, '--peek', '--from-sequence', value], '--from-sequence']);
      cases.push([['queue', 'stats', url, '--grace-period-ms', value], '--grace-period-ms']);
      for (const option of ['--retention-max-age-ms', '--retention-max-bytes']) {
        cases.push([['queue', 'config', url, option, value], option]);
      }
    }
    for (const option of ['--retention-max-age-ms', '--retention-max-bytes']) {
      cases.push([['queue', 'config', url, option, '0'], option]);
      cases.push([['queue', 'config', url, option, 'None'], option]);
    }
    for (const [args, option] of cases) {
      const r = await spillway(args, 'y\n');
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.ok(r.stderr.includes(option), r.stderr);
      assert.ok(r.stderr.includes(JSON.stringify(args.at(-1))), r.stderr);
    }
    const s = json<Stats & { retention: unknown }>(
      await spillway(['queue', 'stats', url, '--json']),
    );
    assert.equal(s.next_sequence, 1, 'no refused command produced anything');
    assert.equal(s.batches_pending, 1, 'no refused command collected anything');
    assert.deepEqual(
      s.retention,
      { max_age_ms: null, max_bytes: null },
      'nor changed the retention',
    );
  });

  test('--format lines stores bytes unchanged: invalid UTF-8 survives, one \\r before \\n is dropped, a lone \\r is kept', async () => {
    const url = `file://${await freshDir()}`;
    const input = Buffer.concat([
      Buffer.from('a'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('b\nwindows\r\nbare\rcr\n\nlast-without-newline'),
    ]);
    ok(await spillway(['produce', url], input));
    const r = ok(await spillway(['consume', url, '--peek', '--format', 'frames']));
    assert.deepEqual(parseFrames(r.stdoutBytes), [
      Buffer.concat([Buffer.from('a'), Buffer.from([0xff, 0xfe]), Buffer.from('b')]),
      Buffer.from('windows'),
      Buffer.from('bare\rcr'),
      Buffer.from(''),
      Buffer.from('last-without-newline'),
    ]);
    const lines = ok(await spillway(['consume', url, '--format', 'lines']));
    assert.deepEqual(
      lines.stdoutBytes,
      Buffer.concat([
        Buffer.from('a'),
        Buffer.from([0xff, 0xfe]),
        Buffer.from('b\nwindows\nbare\rcr\n\nlast-without-newline\n'),
      ]),
      'consume --format lines writes the bytes unchanged',
    );
  });

  test('an entry holding a line break is refused by consume --format lines before anything is written or acknowledged; frames round-trips it', async () => {
    const url = `file://${await freshDir()}`;
    const entries = [Buffer.from('one'), Buffer.from('two\nlines'), Buffer.from([0, 1, 2, 255])];
    ok(await spillway(['produce', url, '--format', 'frames'], frames(entries)));
    const refused = await spillway(['consume', url, '--format', 'lines']);
    assert.equal(refused.code, 1);
    assert.equal(refused.stdout, '', 'nothing of the batch was written');
    assert.match(refused.stderr, /line break.*--format ndjson or --format frames/);
    const s = json<Stats>(await spillway(['queue', 'stats', url, '--json']));
    assert.equal(s.batches_pending, 1, 'the refused batch was not acknowledged');
    const r = ok(await spillway(['consume', url, '--format', 'frames']));
    assert.deepEqual(parseFrames(r.stdoutBytes), entries);
  });

  test('consume | head -2 acknowledges nothing the reader did not take', async () => {
    const dir = await freshDir();
    const url = `file://${dir}`;
    ok(await spillway(['produce', url], numbered(1, 5000)));
    const shown = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const sh = spawn('sh', ['-c', `"${process.execPath}" "${bin}" consume "${url}" | head -2`]);
      let out = '';
      sh.stdout.on('data', (d: Buffer) => (out += d.toString()));
      sh.on('error', reject);
      sh.on('close', (code) => resolve({ code, out }));
    });
    assert.equal(shown.out, '1\n2\n');
    const s = json<Stats>(await spillway(['queue', 'stats', url, '--json']));
    assert.equal(s.batches_pending, 1, 'the batch head read two lines of is still pending');
    assert.equal(ok(await spillway(['consume', url])).stdout, numbered(1, 5000));
  });

  test('--from-sequence past the end of the queue is a usage error, and fences nothing', async () => {
    const url = `file://${await freshDir()}`;
    ok(await spillway(['produce', url], 'a\n'));
    const before = json<Stats>(await spillway(['queue', 'stats', url, '--json']));
    for (const extra of [[], ['--peek'], ['--follow']]) {
      const r = await spillway(['consume', url, '--from-sequence', '100', ...extra]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr,
        /--from-sequence 100 is past the end of the queue.*next sequence is 1/,
      );
    }
    const at = ok(await spillway(['consume', url, '--peek', '--from-sequence', '1']));
    assert.equal(at.stdout, '', 'the next sequence itself is allowed');
    const afterStats = json<Stats>(await spillway(['queue', 'stats', url, '--json']));
    assert.equal(afterStats.epoch, before.epoch);
    assert.equal(afterStats.batches_pending, 1);
  });

  test('Ctrl-C on produce makes every line read durable, prints the summary and exits 0', async () => {
    const dir = await freshDir();
    const url = `file://${dir}`;
    const child = spawn(process.execPath, [bin, 'produce', url, '--json']);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    // One write of 1,500 short lines arrives in one read: the first 1,000 become a
    // produce() call and durable; the other 500 wait, read, for the next 1,000.
    child.stdin.write(numbered(1, 1500));
    for (;;) {
      const s = await spillway(['queue', 'stats', url, '--json']);
      if (s.code === 0 && (JSON.parse(s.stdout) as Stats).batches_pending > 0) break;
      await sleep(20);
    }
    child.kill('SIGINT');
    const code = await closed;
    assert.equal(code, 0, stderr);
    const summary = JSON.parse(stdout) as Record<string, unknown>;
    assert.equal(summary.entries, 1500);
    assert.equal(summary.entries_read, 1500);
    assert.equal(summary.all_durable, true);
    assert.equal(summary.stopped_by, 'SIGINT');
    assert.match(stderr, /stopping/);
    assert.equal(ok(await spillway(['consume', url])).stdout, numbered(1, 1500));
    child.stdin.destroy();
  });

  test('produce --format frames refuses a frame claiming more than an entry may hold, at once', async () => {
    const url = `file://${await freshDir()}`;
    const header = Buffer.alloc(4);
    header.writeUInt32LE(0xffff_fff0);
    const started = performance.now();
    const r = await spillway(
      ['produce', url, '--format', 'frames'],
      Buffer.concat([frames([Buffer.from('fine')]), header, Buffer.alloc(1024)]),
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /frame 2 claims 4294967280 bytes, more than/);
    assert.ok(performance.now() - started < 20_000);
    assert.equal(
      ok(await spillway(['consume', url])).stdout,
      'fine\n',
      'the frame before it is durable',
    );
    const truncated = await spillway(['produce', url, '--format', 'frames'], header.subarray(0, 3));
    assert.equal(truncated.code, 1);
    assert.match(truncated.stderr, /ends inside frame 1/);
  });

  test('a large frame is read in linear time and stored whole', async () => {
    const url = `file://${await freshDir()}`;
    const big = Buffer.alloc(48 * 1024 * 1024, 7);
    big[0] = 1;
    big[big.length - 1] = 9;
    ok(await spillway(['produce', url, '--format', 'frames'], frames([big, Buffer.from('after')])));
    const r = ok(await spillway(['consume', url, '--format', 'frames']));
    const out = parseFrames(r.stdoutBytes);
    assert.equal(out.length, 2);
    assert.ok((out[0] as Buffer).equals(big));
  });

  test('credentials in URLs are never printed, with or without --verbose', async () => {
    const secrets = ['hunter2', 's3cret', 'p@ss#word'];
    const urls = [
      'file://user:pa/hunter2@/tmp/x',
      's3://bkt/q?endpoint=http://u:p/s3cret@h',
      's3://AKIA:se?s3cret@bucket/q',
      's3://AKIA:se#s3cret@bucket/q',
      's3://bucket/q?forcePathStyle=s3cret',
      's3://bucket/q?endpoint=notaurl-s3cret',
      'memory://u:pa/hunter2@name',
      'file://admin:hunter2@/srv/q',
      'file:///srv/q?token=s3cret',
      `s3://bucket/q?endpoint=${encodeURIComponent('http://u:s3cret@127.0.0.1:9')}`,
      `s3://bucket/q?endpoint=http://u:s3cret@127.0.0.1:9`,
      `s3://user:${encodeURIComponent('p@ss#word')}@bucket/q`,
      'az://container/q?sig=s3cret',
      'memory://name?token=s3cret',
      'ftp://u:hunter2@host/x',
      'file:./%zz?token=s3cret',
    ];
    for (const url of urls) {
      for (const extra of [[], ['--verbose']]) {
        for (const cmd of [['queue', 'stats'], ['produce'], ['gc']]) {
          const r = await spillway([...cmd, url, ...extra], 'x\n');
          assert.notEqual(r.code, 0, `${cmd.join(' ')} ${url}`);
          for (const secret of secrets) {
            assert.ok(
              !(r.stdout + r.stderr).includes(secret) &&
                !(r.stdout + r.stderr).includes(encodeURIComponent(secret)),
              `${cmd.join(' ')} ${url} ${extra.join(' ')} printed a secret: ${r.stderr}`,
            );
          }
        }
      }
    }
  });

  test('an unknown command with a URL in it is scrubbed too', async () => {
    const r = await spillway(['queue', 's3://AKIA:hunter2@bucket/q']);
    assert.equal(r.code, 2);
    assert.ok(!r.stderr.includes('hunter2'), r.stderr);
  });

  test('a consumer or a collection with a mistyped manifest path is refused by the data prefix marker; the backlog stays', async () => {
    const url = `file://${await freshDir()}`;
    ok(await spillway(['produce', url, '--layout', 'v1'], 'a\nb\n'));
    const typo = ['--manifest-path', 'ingest/manifset'];
    const consumer = await spillway(['consume', url, ...typo]);
    assert.equal(consumer.code, 2, consumer.stderr);
    assert.match(
      consumer.stderr,
      /the data prefix "ingest" belongs to the queue whose manifest is "ingest\/manifest", not "ingest\/manifset"/,
    );
    const gc = await spillway(['gc', url, ...typo, '--grace-period-ms', '0']);
    assert.equal(gc.code, 1, gc.stderr);
    assert.match(gc.stderr, /no manifest at "ingest\/manifset"/);
    assert.equal(ok(await spillway(['consume', url])).stdout, 'a\nb\n');
  });

  test('a collection whose data prefix belongs to another queue is refused; that queue keeps its backlog', async () => {
    const url = `file://${await freshDir()}`;
    ok(await spillway(['produce', url, '--layout', 'v1'], 'a\n'));
    const events = ['--manifest-path', 'events/manifest', '--data-prefix', 'events'];
    ok(await spillway(['produce', url, ...events, '--layout', 'v1'], 'b\n'));
    const r = await spillway([
      'gc',
      url,
      '--manifest-path',
      'events/manifest',
      '--grace-period-ms',
      '0',
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(ok(await spillway(['consume', url])).stdout, 'a\n');
  });

  test('timer options past what a timer can wait are usage errors, not a wrap to 1 ms', async () => {
    const url = `file://${await freshDir()}`;
    for (const args of [
      ['consume', url, '--follow', '--poll-interval-ms', '2147483648'],
      ['produce', url, '--flush-interval-ms', '4294967296'],
      ['demo', '--duration-s', '2147484'],
    ]) {
      const r = await spillway(args, '');
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /from \d+ to \d+/);
    }
  });

  test('a folder or FIFO where the manifest should be ends produce and consume with an error, not a loop', async () => {
    const dir = await freshDir();
    const url = `file://${dir}`;
    ok(await spillway(['produce', url, '--layout', 'v1'], '1\n'));
    await rm(join(dir, 'ingest', 'manifest'));
    await mkdir(join(dir, 'ingest', 'manifest', 'inner'), { recursive: true });
    await writeFile(join(dir, 'ingest', 'manifest', 'inner', 'x'), 'x');
    const relaid = await spillway(['produce', url], '2\n');
    assert.equal(relaid.code, 2, relaid.stderr);
    assert.match(relaid.stderr, /belongs to a v1 queue .* a log queue is not started inside it/);
    const produced = await spillway(['produce', url, '--layout', 'v1'], '2\n');
    assert.equal(produced.code, 2, produced.stderr);
    assert.match(produced.stderr, /names a folder of other keys/);
  });

  test('consume --peek and gc --dry-run on a mistyped folder fail and create nothing', async () => {
    const cwd = await freshDir();
    for (const args of [
      ['consume', 'file:./typo', '--peek'],
      ['gc', 'file:./typo', '--dry-run'],
    ]) {
      const r = await spillway(args, undefined, { cwd });
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /no manifest at "ingest\/manifest"/);
    }
    assert.deepEqual(await readdir(cwd), []);
  });

  test('a batch refused by --format lines leaves the batches written before it acknowledged', async () => {
    const url = `file://${await freshDir()}`;
    ok(await spillway(['produce', url], 'a\n'));
    ok(await spillway(['produce', url, '--format', 'frames'], frames([Buffer.from('x\ny')])));
    for (let i = 0; i < 2; i++) {
      const r = await spillway(['consume', url]);
      assert.equal(r.code, 1);
      assert.equal(r.stdout, i === 0 ? 'a\n' : '', 'the first batch is not written again');
    }
  });

  test(
    'consume | head -2 run by an ordinary user acknowledges nothing head did not take',
    { skip: process.getuid?.() !== 0 ? 'needs root to run a child as nobody' : false },
    async () => {
      const dir = await freshDir();
      await chmod(dir, 0o777);
      const url = `file://${dir}/q`;
      const asNobody = (command: string): Promise<{ code: number | null; out: string }> =>
        new Promise((resolve, reject) => {
          const sh = spawn('setpriv', [
            '--reuid=65534',
            '--regid=65534',
            '--clear-groups',
            'sh',
            '-c',
            command,
          ]);
          let out = '';
          sh.stdout.on('data', (d: Buffer) => (out += d.toString()));
          sh.on('error', reject);
          sh.on('close', (code) => resolve({ code, out }));
        });
      const cli = `"${process.execPath}" "${bin}"`;
      const produced = await asNobody(`seq 1 5 | ${cli} produce "${url}"`);
      assert.equal(produced.code, 0, produced.out);
      const shown = await asNobody(`${cli} consume "${url}" | head -2`);
      assert.equal(shown.out, '1\n2\n');
      const rest = await asNobody(`${cli} consume "${url}" --peek`);
      assert.equal(rest.out, numbered(1, 5), 'the batch head read two lines of is still pending');
    },
  );

  test('malformed percent-encoding is a usage error naming the URL; read-only commands on a typo create nothing', async () => {
    const cwd = await freshDir();
    const bad = await spillway(['queue', 'stats', 'file:./%zz'], undefined, { cwd });
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /file:\.\/%zz.*percent-encoding/);
    for (const args of [
      ['queue', 'stats', 'file:./typo'],
      ['manifest', 'dump', 'file:./typo'],
      ['consume', 'file:./typo', '--peek'],
    ]) {
      await spillway(args, undefined, { cwd });
    }
    assert.deepEqual(await readdir(cwd), [], 'no folder was created');
  });

  test('a symlink inside the queue folder is refused: nothing is written or deleted outside it', async () => {
    const root = await freshDir();
    const outside = await freshDir();
    await writeFile(join(outside, '01ARZ3NDEKTSV4RRFFQ69G5FAV.batch'), 'not yours');
    await mkdir(join(root, 'q'));
    await symlink(outside, join(root, 'q', 'ingest'));
    const url = `file://${join(root, 'q')}`;
    const produced = await spillway(['produce', url], 'a\n');
    assert.equal(produced.code, 1);
    assert.match(produced.stderr, /symbolic link/);
    const gc = await spillway(['gc', url, '--grace-period-ms', '0']);
    assert.notEqual(gc.code, 0);
    assert.deepEqual(await readdir(outside), ['01ARZ3NDEKTSV4RRFFQ69G5FAV.batch']);
    assert.ok(!existsSync(join(outside, 'manifest')));
  });

  test('queue stats counts in words that agree with the number; a failed produce does not claim success', async () => {
    for (const [layout, pending] of [
      ['v1', /pending\s+1 batch, 1 produce call,/],
      ['log', /pending\s+1 batch, 1 entry,/],
    ] as const) {
      const url = `file://${await freshDir()}`;
      ok(await spillway(['produce', url, '--layout', layout], 'x\n'));
      const text = ok(await spillway(['queue', 'stats', url])).stdout;
      assert.match(text, pending);
      const bad = await spillway(['produce', url, '--format', 'ndjson'], '{"a":1}\nnot json\n');
      assert.equal(bad.code, 1);
      assert.match(bad.stdout, /^stopped at an input error/);
      assert.match(bad.stderr, /line 2 is not valid JSON/);
    }
  });
});

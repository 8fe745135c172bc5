/**
 * `spillway ingest`, spawned as a user would run it against file://: bad
 * CSV rows, the JSON summary, reruns, refusals, and --follow with a rotation.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FileStore, Producer, Queue } from '../../src/index.ts';
import { bin, json, spillway } from '../support/cli.ts';

async function entries(dir: string): Promise<string[]> {
  const queue = Queue.open({ store: new FileStore(dir) });
  const out: string[] = [];
  for await (const b of queue.peek({ fromSequence: 0 })) {
    for (const e of b.entries) out.push(Buffer.from(e).toString());
  }
  await queue.close();
  return out;
}

/** Resolves once `ok()` holds for the queue's entries, checking after each poll of the store. */
async function until(dir: string, ok: (e: string[]) => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const got = await entries(dir).catch(() => []);
    if (ok(got)) return;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; have ${JSON.stringify(got)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('spillway ingest', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'spillway-ingest-cli-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('a bad CSV row stops its file with the file and line; what came before stays durable; other files go on; exit 1', async () => {
    const input = join(root, 'csv-in');
    mkdirSync(input);
    writeFileSync(join(input, 'a.csv'), 'id,name\n1,"Ann"\n2,"Bob, Jr."\n3,Cy,extra\n4,Di\n');
    writeFileSync(join(input, 'b.csv'), 'id,name\n5,Eve\n');
    const q = join(root, 'csv-q');
    const r = await spillway(['ingest', `file://${q}`, input, '--format', 'csv', '--json']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /a\.csv line 4: 3 fields, the header has 2/);
    const summary = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(summary.files_failed, 1);
    assert.equal(summary.files_done, 1);
    assert.deepEqual(await entries(q), [
      '{"id":"1","name":"Ann"}',
      '{"id":"2","name":"Bob, Jr."}',
      '{"id":"5","name":"Eve"}',
    ]);
  });

  test('the JSON summary; a rerun after completion does nothing and says so', async () => {
    const input = join(root, 'json-in');
    mkdirSync(join(input, 'sub'), { recursive: true });
    writeFileSync(join(input, 'one.ndjson'), '{"a":1}\n\n{"a":2}\n');
    writeFileSync(join(input, 'sub', 'two.ndjson'), '{"b":1}\n');
    const q = join(root, 'json-q');
    const s = json<Record<string, unknown>>(
      await spillway(['ingest', `file://${q}`, input, '--format', 'ndjson', '--json']),
    );
    assert.equal(s.files, 2);
    assert.equal(s.files_done, 2);
    assert.equal(s.entries, 3);
    assert.equal(s.job, 'default');
    const again = await spillway(['ingest', `file://${q}`, input, '--format', 'ndjson']);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /nothing to do: all 2 files were already ingested by job "default"/);
    // Another job ingests the same files again, on purpose.
    const other = json<Record<string, unknown>>(
      await spillway([
        'ingest',
        `file://${q}`,
        input,
        '--format',
        'ndjson',
        '--job',
        'replay',
        '--json',
      ]),
    );
    assert.equal(other.entries, 3);
    assert.equal((await entries(q)).length, 6);
    // The finished jobs hold nothing back: no hold subscription is left.
    const subs = json<{ subscriptions: { name: string }[] }>(
      await spillway(['subscription', 'list', `file://${q}`, '--json']),
    );
    assert.deepEqual(
      subs.subscriptions.map((x) => x.name),
      ['default'],
    );
  });

  test('a file that grew after it was done: only the new lines are ingested', async () => {
    const input = join(root, 'grow-in');
    mkdirSync(input);
    const f = join(input, 'log.txt');
    writeFileSync(f, 'a\nb\n');
    const q = join(root, 'grow-q');
    assert.equal((await spillway(['ingest', `file://${q}`, f])).code, 0);
    appendFileSync(f, 'c\n');
    const r = await spillway(['ingest', `file://${q}`, f, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await entries(q), ['a', 'b', 'c']);
  });

  test('a done file whose last line had no line end, then grew: the rest of that line is an entry of its own', async () => {
    const input = join(root, 'grow2-in');
    mkdirSync(input);
    const f = join(input, 'log.txt');
    writeFileSync(f, 'one\nab');
    const q = join(root, 'grow2-q');
    assert.equal((await spillway(['ingest', `file://${q}`, f])).code, 0);
    appendFileSync(f, 'cd\ntwo\n');
    const r = await spillway(['ingest', `file://${q}`, f]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await entries(q), ['one', 'ab', 'cd', 'two']);
  });

  test('a line longer than --max-entry-bytes stops its file with an error, bounded', async () => {
    const f = join(root, 'long.txt');
    writeFileSync(f, `short\n${'x'.repeat(5000)}\nafter\n`);
    const q = join(root, 'long-q');
    const r = await spillway(['ingest', `file://${q}`, f, '--max-entry-bytes', '1000']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /long\.txt line 2/);
    assert.deepEqual(await entries(q), ['short']);
  });

  test('refusals: a v1 queue, a path that does not exist, a bad job name (exit 2, nothing written)', async () => {
    const q = join(root, 'v1-q');
    const p = new Producer({ store: new FileStore(q), layout: 'v1', flushIntervalMs: 0 });
    await (
      await p.produce([Buffer.from('x')])
    ).durable;
    await p.close();
    const f = join(root, 'one.txt');
    writeFileSync(f, 'x\n');
    const v1 = await spillway(['ingest', `file://${q}`, f]);
    assert.equal(v1.code, 2, v1.stderr);
    assert.match(v1.stderr, /v1 layout/);
    const missing = await spillway([
      'ingest',
      `file://${join(root, 'none-q')}`,
      join(root, 'no-such-file.txt'),
    ]);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /no-such-file\.txt/);
    const job = await spillway(['ingest', `file://${join(root, 'none-q')}`, f, '--job', '../x']);
    assert.equal(job.code, 2, job.stderr);
  });

  test('--follow tails a growing file across a rotation by rename; Ctrl-C stops it; every line once', async () => {
    const input = join(root, 'follow-in');
    mkdirSync(input);
    const f = join(input, 'app.log');
    writeFileSync(f, 'l1\nl2\n');
    const q = join(root, 'follow-q');
    const child = spawn(
      process.execPath,
      [
        bin,
        'ingest',
        `file://${q}`,
        f,
        '--follow',
        '--poll-interval-ms',
        '20',
        '--checkpoint-interval-ms',
        '50',
        '--json',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await until(q, (e) => e.length === 2, 'the first two lines');
    appendFileSync(f, 'l3\npartial');
    await until(q, (e) => e.includes('l3'), 'l3');
    appendFileSync(f, '-done\n');
    await until(q, (e) => e.includes('partial-done'), 'the completed partial line');
    renameSync(f, `${f}.1`);
    appendFileSync(`${f}.1`, 'l5-late\n');
    writeFileSync(f, 'n1\n');
    await until(q, (e) => e.includes('n1'), 'the new file');
    child.kill('SIGINT');
    assert.equal(await exited, 0, stderr);
    const got = await entries(q);
    assert.deepEqual(
      got.filter((x) => x !== 'l5-late'),
      ['l1', 'l2', 'l3', 'partial-done', 'n1'],
    );
    assert.equal(new Set(got).size, got.length, 'no line twice');
    const summary = JSON.parse(stdout) as Record<string, unknown>;
    assert.equal(summary.stopped_by, 'SIGINT');
  });
});

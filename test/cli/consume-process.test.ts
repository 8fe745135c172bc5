/**
 * `spillway consume` entry by entry: `--limit`, `--exec` and
 * `--at-least-once`, spawned as a user would run them on file:// queues.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { bin, json, ok, spillway, type Run } from '../support/cli.ts';

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'spillway-process-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

interface Sub {
  name: string;
  next_sequence: number;
  next_index: number;
  epoch: number;
  lag_entries: number;
}

async function sub(url: string, name = 'default'): Promise<Sub> {
  const { subscriptions } = json<{ subscriptions: Sub[] }>(
    await spillway(['subscription', 'list', url, '--json']),
  );
  const found = subscriptions.find((s) => s.name === name);
  assert.ok(found, `subscription ${name}`);
  return found;
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

/** A log queue holding `lines` as one batch per array. */
async function queueOf(...batches: string[][]): Promise<string> {
  const url = `file://${await freshDir()}`;
  for (const lines of batches) ok(await spillway(['produce', url], `${lines.join('\n')}\n`));
  return url;
}

function exited(r: Run, code: number, what: string): Run {
  assert.equal(r.code, code, `${what}: exit ${r.code}: ${r.stderr}`);
  return r;
}

/**
 * A command for --exec: prints "<entry> <sequence>:<index> #<attempt>" and
 * exits by the entry's first word: ok 0, fail 1, flaky 75 on its first
 * attempt then 0, tempfail 75 always.
 */
async function handlerScript(): Promise<string> {
  const path = join(await freshDir(), 'handle.sh');
  await writeFile(
    path,
    [
      'read -r line',
      'echo "$line $SPILLWAY_SEQUENCE:$SPILLWAY_INDEX #$SPILLWAY_ATTEMPT"',
      'case "$line" in',
      '  fail*) exit 1 ;;',
      '  flaky*) [ "$SPILLWAY_ATTEMPT" -ge 2 ] || exit 75 ;;',
      '  tempfail*) exit 75 ;;',
      'esac',
      'exit 0',
      '',
    ].join('\n'),
  );
  return `sh ${path}`;
}

describe('consume --limit', () => {
  test('stops after N entries inside a batch; the next consume starts at the entry after them, with no duplicate and no gap', async () => {
    const url = await queueOf(['a1', 'a2', 'a3', 'a4', 'a5'], ['b1', 'b2', 'b3']);
    const first = ok(await spillway(['consume', url, '--limit', '2']));
    assert.equal(first.stdout, 'a1\na2\n');
    const at = await sub(url);
    assert.deepEqual([at.next_sequence, at.next_index], [0, 2], 'the position is inside batch 0');
    assert.equal(at.lag_entries, 6);

    // Across the end of a batch, in NDJSON: positions are the entries' own.
    const second = ok(await spillway(['consume', url, '--limit', '4', '--format', 'ndjson']));
    const shown = second.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { sequence: number; index: number; data: string });
    assert.deepEqual(
      shown.map((e) => [e.sequence, e.index, e.data]),
      [
        [0, 2, 'a3'],
        [0, 3, 'a4'],
        [0, 4, 'a5'],
        [1, 0, 'b1'],
      ],
    );
    const moved = await sub(url);
    assert.deepEqual([moved.next_sequence, moved.next_index], [1, 1]);

    // The batch-by-batch consume resumes there too, numbering entries from the position.
    const rest = ok(await spillway(['consume', url, '--format', 'ndjson']));
    const resumed = rest.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { index: number; data: string });
    assert.deepEqual(
      resumed.map((e) => [e.index, e.data]),
      [
        [1, 'b2'],
        [2, 'b3'],
      ],
    );
    assert.equal((await sub(url)).lag_entries, 0);
    assert.equal(
      ok(await spillway(['consume', url, '--limit', '3'])).stdout,
      '',
      'caught up: exit 0',
    );
  });

  test('with --follow, waits for entries until N are finished, then exits 0 by itself', async () => {
    const url = await queueOf(['x1', 'x2']);
    const child = spawn(process.execPath, [
      bin,
      'consume',
      url,
      '--follow',
      '--limit',
      '3',
      '--poll-interval-ms',
      '20',
    ]);
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    await new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (stdout === 'x1\nx2\n') resolve();
      }),
    );
    ok(await spillway(['produce', url], 'y1\ny2\n'));
    assert.equal(await closed, 0, stderr);
    assert.equal(stdout, 'x1\nx2\ny1\n');
    const at = await sub(url);
    assert.deepEqual([at.next_sequence, at.next_index], [1, 1]);
  });

  test('--format lines refuses an entry holding a line break before writing it: the entries before it are committed, it is not', async () => {
    const url = `file://${await freshDir()}`;
    const entries = [Buffer.from('one'), Buffer.from('two\nlines'), Buffer.from('three')];
    ok(await spillway(['produce', url, '--format', 'frames'], frames(entries)));
    const refused = exited(await spillway(['consume', url, '--limit', '3']), 1, 'refused');
    assert.equal(refused.stdout, 'one\n');
    assert.match(refused.stderr, /entry 1 of batch 0 contains a line break.*--format frames/);
    const at = await sub(url);
    assert.deepEqual([at.next_sequence, at.next_index], [0, 1]);
    const rest = ok(await spillway(['consume', url, '--limit', '2', '--format', 'frames']));
    assert.deepEqual(rest.stdoutBytes, frames(entries.slice(1)));
  });

  test('consume --limit | head -2 commits nothing head did not take; what follows resumes with no gap', async () => {
    const url = await queueOf(numbered(1, 3000).trim().split('\n'));
    const shown = await new Promise<string>((resolve, reject) => {
      const sh = spawn('sh', [
        '-c',
        `"${process.execPath}" "${bin}" consume "${url}" --limit 2500 | head -2`,
      ]);
      let out = '';
      sh.stdout.on('data', (d: Buffer) => (out += d.toString()));
      sh.on('error', reject);
      sh.on('close', () => resolve(out));
    });
    assert.equal(shown, '1\n2\n');
    const at = await sub(url);
    assert.equal(at.next_sequence, 0);
    assert.ok(at.next_index <= 2, `committed ${at.next_index} entries; head took 2`);
    assert.equal(ok(await spillway(['consume', url])).stdout, numbered(at.next_index + 1, 3000));
  });

  test('--peek --limit N prints N entries and moves nothing', async () => {
    const url = await queueOf(['p1', 'p2'], ['p3', 'p4']);
    assert.equal(
      ok(await spillway(['consume', url, '--peek', '--limit', '3'])).stdout,
      'p1\np2\np3\n',
    );
    const at = await sub(url);
    assert.deepEqual([at.next_sequence, at.next_index, at.epoch], [0, 0, 0]);
  });

  test('on a v1 queue, whole batches are recorded: a limit inside a batch says its entries come again', async () => {
    const url = `file://${await freshDir()}`;
    ok(await spillway(['produce', url, '--layout', 'v1'], 'v1\nv2\nv3\n'));
    ok(await spillway(['produce', url], 'w1\n'));
    const first = ok(await spillway(['consume', url, '--limit', '2']));
    assert.equal(first.stdout, 'v1\nv2\n');
    assert.match(first.stderr, /v1 layout records whole batches only.*first 2 entries of batch 0/);
    const whole = ok(await spillway(['consume', url, '--limit', '4']));
    assert.equal(whole.stdout, 'v1\nv2\nv3\nw1\n');
    assert.equal(whole.stderr, '');
    assert.equal(ok(await spillway(['consume', url])).stdout, '');
  });
});

describe('consume --exec', () => {
  test('exit 0 commits, 75 tries again, another status skips with a warning; the summary counts each', async () => {
    const url = await queueOf(['ok a', 'fail b', 'flaky c'], ['ok d', 'fail e']);
    const script = await handlerScript();
    const r = ok(await spillway(['consume', url, '--exec', script, '--retry-delay-ms', '0']));
    assert.equal(
      r.stdout,
      [
        'ok a 0:0 #1',
        'fail b 0:1 #1',
        'flaky c 0:2 #1',
        'flaky c 0:2 #2',
        'ok d 1:0 #1',
        'fail e 1:1 #1',
        '',
      ].join('\n'),
      "the commands' stdout is spillway's, in order",
    );
    assert.match(r.stderr, /^spillway: entry 0:1 skipped: the command exited with status 1$/m);
    assert.match(r.stderr, /^spillway: entry 1:1 skipped: the command exited with status 1$/m);
    assert.match(r.stderr, /entry 0:2: the command exited with status 75 .* attempt 1 of 3/);
    assert.match(
      r.stderr,
      /^consumed 5 entries \(3 committed, 2 skipped, 0 dead-lettered; 1 attempt retried\), caught up; next: sequence 2, entry 0$/m,
    );
    assert.equal((await sub(url)).lag_entries, 0);
    // Nothing comes again.
    const again = ok(await spillway(['consume', url, '--exec', script]));
    assert.equal(again.stdout, '');
    assert.match(again.stderr, /^consumed 0 entries/m);
  });

  test('with --limit, finishes N entries (a skip counts) and the next run starts after them', async () => {
    const url = await queueOf(['ok a', 'fail b', 'ok c', 'ok d']);
    const script = await handlerScript();
    const r = ok(await spillway(['consume', url, '--exec', script, '--limit', '2']));
    assert.equal(r.stdout, 'ok a 0:0 #1\nfail b 0:1 #1\n');
    assert.match(r.stderr, /consumed 2 entries \(1 committed, 1 skipped.*--limit 2 reached/);
    const next = ok(await spillway(['consume', url, '--exec', script, '--limit', '1']));
    assert.equal(next.stdout, 'ok c 0:2 #1\n');
  });

  test('a command that cannot run (127, 126) or is killed by a signal stops consume with exit 1 and commits nothing', async () => {
    const dir = await freshDir();
    const notExecutable = join(dir, 'not-executable');
    await writeFile(notExecutable, 'exit 0\n');
    await chmod(notExecutable, 0o644);
    for (const [command, pattern] of [
      ['spillway-no-such-command-zz', /entry 0:0: the command cannot run: exit status 127/],
      [notExecutable, /entry 0:0: the command cannot run: exit status 126/],
      ['kill -KILL $$', /entry 0:0: the command was killed by SIGKILL/],
      [
        'exit 137',
        /status 137, which is how a shell reports a command killed by signal 9 \(SIGKILL\)/,
      ],
    ] as const) {
      const url = await queueOf(['e1', 'e2'], ['e3']);
      const r = exited(await spillway(['consume', url, '--exec', command]), 1, command);
      assert.match(r.stderr, pattern);
      assert.match(r.stderr, /it was not committed, and consume stopped there/);
      assert.match(r.stderr, /^consumed 0 entries .*stopped at an error/m);
      const at = await sub(url);
      assert.deepEqual([at.next_sequence, at.next_index, at.lag_entries], [0, 0, 3], command);
    }
    // Only the first entry was tried: the shell said "not found" once.
    const url = await queueOf(['e1', 'e2']);
    const r = exited(
      await spillway(['consume', url, '--exec', 'spillway-no-such-command-zz']),
      1,
      '127',
    );
    assert.equal(r.stderr.match(/not found/g)?.length, 2, r.stderr); // the shell's line and ours
  });

  test('an entry that runs out of attempts stops consume (exit 1) unless --on-exhausted skip; the entries before it stay committed', async () => {
    const script = await handlerScript();
    const url = await queueOf(['ok a', 'tempfail b', 'ok c']);
    const stopped = exited(
      await spillway([
        'consume',
        url,
        '--exec',
        script,
        '--retry-delay-ms',
        '0',
        '--max-attempts',
        '2',
      ]),
      1,
      'exhausted',
    );
    assert.equal(stopped.stdout, 'ok a 0:0 #1\ntempfail b 0:1 #1\ntempfail b 0:1 #2\n');
    assert.match(
      stopped.stderr,
      /entry 0:1: the command exited with status 75 \(EX_TEMPFAIL\) on attempt 2 of 2, the last; it was not committed.*--on-exhausted skip/,
    );
    assert.match(
      stopped.stderr,
      /^consumed 1 entry \(1 committed, 0 skipped, 0 dead-lettered; 1 attempt retried\), stopped: entry 0:1 ran out of attempts/m,
    );
    const at = await sub(url);
    assert.deepEqual([at.next_sequence, at.next_index], [0, 1]);

    const skipped = ok(
      await spillway([
        'consume',
        url,
        '--exec',
        script,
        '--retry-delay-ms',
        '0',
        '--max-attempts',
        '1',
        '--on-exhausted',
        'skip',
      ]),
    );
    assert.equal(skipped.stdout, 'tempfail b 0:1 #1\nok c 0:2 #1\n');
    assert.match(skipped.stderr, /entry 0:1: .* attempt 1 of 1, the last; skipped/);
    assert.match(
      skipped.stderr,
      /consumed 2 entries \(1 committed, 1 skipped, 0 dead-lettered; 0 attempts retried\)/,
    );
  });

  test('--dead-letter writes exhausted entries to another queue, durably, and moves on; the same queue is refused', async () => {
    const script = await handlerScript();
    const url = await queueOf(['tempfail a', 'ok b']);
    const deadUrl = `file://${await freshDir()}`;
    const same = exited(
      await spillway(['consume', url, '--exec', script, '--dead-letter', url]),
      2,
      'same queue',
    );
    assert.match(same.stderr, /--dead-letter .* names the queue being consumed/);
    assert.equal((await sub(url)).epoch, 0, 'refused before taking the subscription over');

    const r = ok(
      await spillway([
        'consume',
        url,
        '--exec',
        script,
        '--retry-delay-ms',
        '0',
        '--max-attempts',
        '2',
        '--dead-letter',
        deadUrl,
      ]),
    );
    assert.match(
      r.stderr,
      /entry 0:0: .* attempt 2 of 2, the last; written to the dead-letter queue/,
    );
    assert.match(
      r.stderr,
      /consumed 2 entries \(1 committed, 0 skipped, 1 dead-lettered; 1 attempt retried\)/,
    );
    assert.equal(ok(await spillway(['consume', deadUrl, '--peek'])).stdout, 'tempfail a\n');
    const dump = json<{ entries: { metadata: { payload_base64: string }[] }[] }>(
      await spillway(['manifest', 'dump', deadUrl]),
    );
    const letter = JSON.parse(
      Buffer.from(dump.entries[0]!.metadata[0]!.payload_base64, 'base64').toString(),
    ) as Record<string, unknown>;
    assert.equal(letter.sequence, 0);
    assert.equal(letter.index, 0);
    assert.equal(letter.attempts, 2);
    assert.match(String(letter.error), /status 75/);
  });

  test('Ctrl-C lets the running command finish and commits its entry, starting no other; a second Ctrl-C terminates it, exit 130, entry not committed', async () => {
    const dir = await freshDir();
    const fifo = join(dir, 'go');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    // Each command says it started, then waits for a line on the FIFO.
    const command = `cat >/dev/null; echo "started $SPILLWAY_INDEX"; read -r answer < "${fifo}"; exit 0`;
    const url = await queueOf(['c1', 'c2', 'c3']);
    const run = (): {
      closed: Promise<number | null>;
      started: Promise<void>;
      stopping: Promise<void>;
      stdout: () => string;
      stderr: () => string;
      child: ReturnType<typeof spawn>;
    } => {
      const child = spawn(process.execPath, [bin, 'consume', url, '--exec', command]);
      let stdout = '';
      let stderr = '';
      const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
      const started = new Promise<void>((resolve) =>
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (stdout.includes('started')) resolve();
        }),
      );
      const stopping = new Promise<void>((resolve) =>
        child.stderr.on('data', (d: Buffer) => {
          stderr += d.toString();
          if (stderr.includes('spillway: stopping')) resolve();
        }),
      );
      return { closed, started, stopping, child, stdout: () => stdout, stderr: () => stderr };
    };

    const first = run();
    await first.started;
    first.child.kill('SIGINT');
    await first.stopping;
    await writeFile(fifo, 'go\n');
    assert.equal(await first.closed, 0, first.stderr());
    assert.equal(first.stdout(), 'started 0\n', 'no other command was started');
    assert.match(first.stderr(), /^consumed 1 entry \(1 committed.*stopped by SIGINT/m);
    let at = await sub(url);
    assert.deepEqual([at.next_sequence, at.next_index], [0, 1]);

    const second = run();
    await second.started;
    second.child.kill('SIGINT');
    await second.stopping;
    second.child.kill('SIGINT');
    assert.equal(await second.closed, 130);
    assert.equal(second.stdout(), 'started 1\n');
    at = await sub(url);
    assert.deepEqual([at.next_sequence, at.next_index], [0, 1], 'the entry was not committed');
  });
});

describe('consume --at-least-once', () => {
  test('on a log queue reads as a shared reader: nobody is fenced, the position is recorded, --limit resumes inside a batch', async () => {
    const url = await queueOf(numbered(1, 10).trim().split('\n'), ['11', '12']);
    const before = await sub(url);
    const first = ok(
      await spillway(['consume', url, '--at-least-once', '--limit', '4', '--commit-every', '3']),
    );
    assert.equal(first.stdout, numbered(1, 4));
    let at = await sub(url);
    assert.deepEqual([at.next_sequence, at.next_index], [0, 4], 'the end is recorded on exit');
    assert.equal(at.epoch, before.epoch, 'a shared reader fences nobody');
    const rest = ok(
      await spillway(['consume', url, '--at-least-once', '--commit-interval-ms', '0']),
    );
    assert.equal(rest.stdout, numbered(5, 12));
    at = await sub(url);
    assert.deepEqual([at.next_sequence, at.next_index, at.lag_entries], [2, 0, 0]);
    assert.equal(at.epoch, before.epoch);
  });

  test('with --exec, and on a v1 queue (which has one consumer: it is taken over, as without)', async () => {
    const url = `file://${await freshDir()}`;
    ok(await spillway(['produce', url, '--layout', 'v1'], 'ok a\nfail b\nok c\n'));
    const script = await handlerScript();
    const r = ok(await spillway(['consume', url, '--at-least-once', '--exec', script]));
    assert.equal(r.stdout, 'ok a 0:0 #1\nfail b 0:1 #1\nok c 0:2 #1\n');
    assert.match(r.stderr, /consumed 3 entries \(2 committed, 1 skipped/);
    const stats = json<{ batches_pending: number; epoch: number }>(
      await spillway(['queue', 'stats', url, '--json']),
    );
    assert.equal(stats.batches_pending, 0);
    assert.equal(stats.epoch, 1);
  });
});

test('usage errors exit 2 with one line naming the option, before the queue is touched', async () => {
  const url = await queueOf(['u1', 'u2']);
  const dead = `file://${await freshDir()}`;
  const cases: [string[], RegExp][] = [];
  for (const value of ['', '0', '1e3', '0x10', '-1', '1.5', ' 7']) {
    cases.push([['--limit', value], /--limit expects an integer >= 1/]);
    cases.push([['--exec', 'true', '--max-attempts', value], /--max-attempts expects/]);
    cases.push([['--at-least-once', '--commit-every', value], /--commit-every expects/]);
  }
  for (const value of ['', '1e3', '-1', '2147483648']) {
    cases.push([['--exec', 'true', '--retry-delay-ms', value], /--retry-delay-ms expects/]);
    cases.push([
      ['--at-least-once', '--commit-interval-ms', value],
      /--commit-interval-ms expects/,
    ]);
  }
  cases.push(
    [['--commit-every', '5'], /--commit-every applies only with --at-least-once/],
    [['--commit-interval-ms', '5'], /--commit-interval-ms applies only with --at-least-once/],
    [['--max-attempts', '5'], /--max-attempts applies only with --exec/],
    [['--retry-delay-ms', '5'], /--retry-delay-ms applies only with --exec/],
    [['--on-exhausted', 'skip'], /--on-exhausted applies only with --exec/],
    [['--dead-letter', dead], /--dead-letter applies only with --exec/],
    [['--exec', ''], /--exec expects a shell command/],
    [['--exec', 'true', '--format', 'ndjson'], /--format and --exec/],
    [['--exec', 'true', '--json'], /--json and --exec/],
    [['--exec', 'true', '--peek'], /--peek and --exec/],
    [['--at-least-once', '--peek'], /--peek and --at-least-once/],
    [['--exec', 'true', '--on-exhausted', 'dead-letter'], /needs --dead-letter URL/],
    [['--exec', 'true', '--on-exhausted', 'never'], /--on-exhausted/],
    [
      ['--exec', 'true', '--on-exhausted', 'skip', '--dead-letter', dead],
      /--dead-letter and --on-exhausted skip/,
    ],
    [['--exec', 'true', '--dead-letter', 'file:./%zz'], /file:\.\/%zz/],
  );
  for (const [args, pattern] of cases) {
    const r = await spillway(['consume', url, ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`);
    assert.equal(r.stdout, '');
  }
  const at = await sub(url);
  assert.deepEqual(
    [at.next_sequence, at.next_index, at.epoch],
    [0, 0, 0],
    'nothing consumed or fenced',
  );
});

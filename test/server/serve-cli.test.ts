/**
 * `spillway serve` as an operator runs it: it prints the URL it listens on,
 * serves with the token from a file or the environment, and on SIGTERM
 * makes everything accepted durable and exits 0. Bad options are usage
 * errors (exit 2) that never show a token.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Queue } from '../../src/index.ts';

const entry = new URL('../../dist/cli/main.js', import.meta.url).pathname;
const TOKEN = 'cli-serve-token-0123456789';

interface Running {
  child: ChildProcess;
  url: Promise<string>;
  exit: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function serve(args: string[], env: NodeJS.ProcessEnv = {}): Running {
  const child = spawn(process.execPath, [entry, 'serve', ...args], {
    env: { ...process.env, ...env },
  });
  let stdout = '';
  let stderr = '';
  let found: (url: string) => void = () => undefined;
  const url = new Promise<string>((resolve) => (found = resolve));
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
    const m = / on (http:\/\/\S+) /.exec(stdout);
    if (m) found(m[1] as string);
  });
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  void exit.then(() => found(''));
  return { child, url, exit };
}

describe('spillway serve', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spillway-serve-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('prints its URL, serves with the token file, and on SIGTERM makes what it accepted durable and exits 0', async () => {
    const tokenFile = join(dir, 'tokens');
    await writeFile(tokenFile, `# the operator's tokens\n\n${TOKEN}\n`);
    const store = `file://${join(dir, 'store')}`;
    const run = serve([store, '--port', '0', '--token-file', tokenFile, '--create-queues']);
    const base = await run.url;
    if (!base) assert.fail(`serve exited early: ${(await run.exit).stderr}`);
    assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
    const unauthorized = await fetch(`${base}/v1/queues`);
    assert.equal(unauthorized.status, 401);
    const posted = await fetch(`${base}/v1/queues/events/entries?wait=false`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/x-ndjson' },
      body: '{"e":1}\n{"e":2}\n',
    });
    assert.equal(posted.status, 202);
    run.child.kill('SIGTERM');
    const { code, stdout, stderr } = await run.exit;
    assert.equal(code, 0, stderr);
    assert.ok(!stdout.includes(TOKEN) && !stderr.includes(TOKEN), 'the token is never printed');
    assert.match(stderr, /stopped; everything accepted is durable/);
    const queue = Queue.open({ store, dataPathPrefix: 'events', manifestPath: 'events/manifest' });
    const seen: string[] = [];
    for await (const b of queue.peek())
      seen.push(...b.entries.map((e) => new TextDecoder().decode(e)));
    await queue.close();
    assert.deepEqual(seen, ['{"e":1}', '{"e":2}']);
  });

  test('usage errors exit 2 without showing a token; no token beyond loopback is refused', async () => {
    const store = `file://${join(dir, 'store2')}`;
    const weak = await serve([store, '--port', '0'], { SPILLWAY_TOKEN: 'short-secret' }).exit;
    assert.equal(weak.code, 2);
    assert.match(weak.stderr, /SPILLWAY_TOKEN\) must be 16-4096/);
    assert.ok(!weak.stderr.includes('short-secret'));
    const open = await serve([store, '--port', '0', '--host', '0.0.0.0']).exit;
    assert.equal(open.code, 2);
    assert.match(open.stderr, /refusing to listen on 0\.0\.0\.0 without a token/);
    const missing = await serve([store, '--token-file', join(dir, 'nope')]).exit;
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot be read: ENOENT/);
    const badPort = await serve([store, '--port', '99999']).exit;
    assert.equal(badPort.code, 2);
  });
});

/**
 * The reference a user with one machine would otherwise pick: Redis Streams
 * with `appendfsync always` (every write fsynced before its reply), driven by
 * `redis-benchmark` with the same number of clients, each waiting for its
 * reply (XADD of one 1 KiB field). Skipped when redis-server is not installed.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One measured figure of the reference. */
export interface RedisResult {
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

/** Whether `redis-server` and `redis-benchmark` are on the PATH. */
export function redisInstalled(): boolean {
  return ['redis-server', 'redis-benchmark'].every(
    (cmd) => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0,
  );
}

/**
 * Starts a Redis server with an append-only file fsynced on every write in a
 * fresh folder under `parentDir`, measures each of `clients`, and stops it.
 * Each measurement runs about `durationMs`: a short calibration decides its
 * request count.
 */
export async function redisAppendfsyncAlways(
  parentDir: string,
  clients: readonly number[],
  durationMs: number,
): Promise<Map<number, RedisResult>> {
  const dir = await mkdtemp(join(parentDir || tmpdir(), 'spillway-redis-'));
  const port = await freePort();
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes'].concat([
      '--appendfsync',
      'always',
      '--save',
      '',
      '--daemonize',
      'no',
      '--loglevel',
      'warning',
    ]),
    { stdio: 'ignore' },
  );
  const results = new Map<number, RedisResult>();
  try {
    await waitForPing(port);
    const field = 'x'.repeat(1024);
    for (const c of clients) {
      const probe = run(port, c, c * 50, field);
      const requests = Math.max(c * 10, Math.round((probe.opsPerSecond * durationMs) / 1000));
      results.set(c, run(port, c, requests, field));
    }
  } finally {
    server.kill('SIGKILL');
    await new Promise((r) => server.once('exit', r));
    await rm(dir, { recursive: true, force: true });
  }
  return results;
}

function run(port: number, clients: number, requests: number, field: string): RedisResult {
  const out = spawnSync(
    'redis-benchmark',
    ['-p', String(port), '-c', String(clients), '-n', String(requests), '--csv'].concat([
      'XADD',
      'spillway-bench',
      '*',
      'f',
      field,
    ]),
    { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 },
  );
  if (out.status !== 0) throw new Error(`redis-benchmark failed: ${out.stderr}`);
  const line = out.stdout.trim().split('\n').at(-1) ?? '';
  // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  const fields = [...line.matchAll(/"([^"]*)"/g)].map((m) => m[1] as string);
  const [rps, , , p50, , p99] = fields.slice(1).map(Number);
  if (!Number.isFinite(rps)) throw new Error(`redis-benchmark: cannot read "${line.slice(0, 80)}"`);
  return { opsPerSecond: rps as number, p50Ms: p50 as number, p99Ms: p99 as number };
}

async function waitForPing(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const r = spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' });
    if (r.stdout?.trim() === 'PONG') return;
    await new Promise((res) => setTimeout(res, 25));
  }
  throw new Error('redis-server did not answer PING within 5 s');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * The server over real HTTP: `startServer` on port 0 against a `file://`
 * folder (and Ceph RGW when the test runner started it), driven with
 * Node's fetch.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Consumer } from '../../src/index.ts';
import { startServer, type SpillwayServer } from '../../src/server/server.ts';
import { createTestBucket, deleteTestBucket, s3Endpoint } from '../support/servers.ts';

const TOKEN = 'http-test-token-0123456789';
const auth = { Authorization: `Bearer ${TOKEN}` };

interface Target {
  name: string;
  open: () => Promise<{ url: string; cleanup: () => Promise<void> }>;
}

const targets: Target[] = [
  {
    name: 'file://',
    open: async () => {
      const dir = await mkdtemp(join(tmpdir(), 'spillway-http-'));
      return { url: `file://${dir}`, cleanup: () => rm(dir, { recursive: true, force: true }) };
    },
  },
];
const endpoint = s3Endpoint();
if (endpoint) {
  targets.push({
    name: 's3 (Ceph RGW)',
    open: async () => {
      const bucket = await createTestBucket(endpoint, 'http');
      return {
        url: `s3://${bucket}/q?endpoint=${encodeURIComponent(endpoint)}`,
        cleanup: () => deleteTestBucket(endpoint, bucket),
      };
    },
  });
}

for (const target of targets) {
  describe(`HTTP server on ${target.name}`, () => {
    test('ingest, long poll, ack mid-batch, stream, metrics and a graceful close over real HTTP', async () => {
      const { url: storeUrl, cleanup } = await target.open();
      let server: SpillwayServer | undefined;
      try {
        server = await startServer({
          store: storeUrl,
          port: 0,
          tokens: [TOKEN],
          createQueues: true,
          maxBodyBytes: 4096,
        });
        const base = server.url;
        assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
        assert.equal((await fetch(`${base}/healthz`)).status, 200);
        assert.equal((await fetch(`${base}/v1/queues`)).status, 401);

        const post = (body: string, query = ''): Promise<Response> =>
          fetch(`${base}/v1/queues/orders/entries${query}`, {
            method: 'POST',
            headers: { ...auth, 'Content-Type': 'application/x-ndjson' },
            body,
          });
        const first = await post('{"n":1}\n{"n":2}\n{"n":3}\n');
        assert.equal(first.status, 201);
        assert.deepEqual(await first.json(), { sequence: 0, entries: 3 });

        // A long poll waiting for an entry that another request brings.
        await fetch(`${base}/v1/queues/orders/subscriptions/live?startAt=latest`, {
          method: 'PUT',
          headers: auth,
        });
        const poll = fetch(`${base}/v1/queues/orders/subscriptions/live/entries?waitMs=30000`, {
          headers: auth,
        });
        assert.equal((await post('{"n":4}\n')).status, 201);
        const polled = await (await poll).text();
        assert.deepEqual(
          polled
            .trim()
            .split('\n')
            .map((l) => (JSON.parse(l) as { data: unknown }).data),
          [{ n: 4 }],
        );

        // Read, ack inside the first batch, read again.
        const read = async (): Promise<
          { position: { sequence: number; index: number }; data: unknown }[]
        > => {
          const res = await fetch(`${base}/v1/queues/orders/subscriptions/web/entries?max=100`, {
            headers: auth,
          });
          assert.equal(res.status, 200);
          return (await res.text())
            .split('\n')
            .filter(Boolean)
            .map(
              (l) =>
                JSON.parse(l) as { position: { sequence: number; index: number }; data: unknown },
            );
        };
        assert.equal((await read()).length, 4);
        const acked = await fetch(`${base}/v1/queues/orders/subscriptions/web/ack`, {
          method: 'POST',
          headers: { ...auth, 'Content-Type': 'application/json' },
          body: JSON.stringify({ position: { sequence: 0, index: 1 } }),
        });
        assert.deepEqual(await acked.json(), { next: { sequence: 0, index: 2 } });
        assert.deepEqual(
          (await read()).map((e) => e.data),
          [{ n: 3 }, { n: 4 }],
        );

        // The event stream over a real connection, with the session cookie of a browser.
        const login = await fetch(`${base}/v1/queues?token=${TOKEN}`, { redirect: 'manual' });
        assert.equal(login.status, 303);
        const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] as string;
        const controller = new AbortController();
        const stream = await fetch(`${base}/v1/queues/orders/subscriptions/web/stream`, {
          headers: { Cookie: cookie },
          signal: controller.signal,
        });
        assert.equal(stream.status, 200);
        const ids = await eventIds(stream, 2);
        controller.abort();
        assert.deepEqual(ids, ['0:2', '1:0']);

        // 413 over a real connection: the server answers without reading it all.
        const big = await post(`${JSON.stringify('x'.repeat(5000))}\n`);
        assert.equal(big.status, 413);

        // The library reads what the server stored.
        const consumer = await Consumer.open({
          store: storeUrl,
          dataPathPrefix: 'orders',
          manifestPath: 'orders/manifest',
          subscription: 'check',
          gcIntervalMs: 0,
        });
        const seen: string[] = [];
        for (;;) {
          const b = await consumer.next();
          if (!b) break;
          seen.push(...b.entries.map((e) => new TextDecoder().decode(e)));
          await consumer.ack(b.sequence);
        }
        await consumer.close();
        assert.deepEqual(seen, ['{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}']);

        const metrics = await (await fetch(`${base}/metrics`, { headers: auth })).text();
        assert.match(
          metrics,
          /^spillway_http_requests_total\{method="POST",route="\/v1\/queues\/:queue\/entries",status="201"\} [1-9]/m,
        );
        assert.match(metrics, /^spillway_buffer_entries_flushed_total\{queue="orders"\} 4$/m);

        // A graceful close while a write is in flight answers it, and then stops listening.
        const inFlight = post('{"n":5}\n', '?wait=false');
        const accepted = await inFlight;
        assert.equal(accepted.status, 202);
        await server.close({ timeoutMs: 30_000 });
        await assert.rejects(fetch(`${base}/healthz`));
        const check = await Consumer.open({
          store: storeUrl,
          dataPathPrefix: 'orders',
          manifestPath: 'orders/manifest',
          subscription: 'check',
          gcIntervalMs: 0,
        });
        const last = await check.next();
        await check.close();
        assert.deepEqual(
          last?.entries.map((e) => new TextDecoder().decode(e)),
          ['{"n":5}'],
        );
      } finally {
        await server?.close();
        await cleanup();
      }
    });
  });
}

describe('startServer', () => {
  test('refuses to listen beyond loopback without a token, unless told it is insecure', async () => {
    await assert.rejects(
      startServer({ store: 'memory://refuse', host: '0.0.0.0', port: 0 }),
      /refusing to listen on 0\.0\.0\.0 without a token/,
    );
    const server = await startServer({
      store: 'memory://insecure',
      host: '0.0.0.0',
      port: 0,
      insecureNoAuth: true,
    });
    try {
      assert.match(server.url, /^http:\/\/0\.0\.0\.0:\d+$/);
    } finally {
      await server.close();
    }
  });

  test('a port in use is an error, and nothing is left open', async () => {
    const server = await startServer({ store: 'memory://busy-port', port: 0 });
    try {
      await assert.rejects(
        startServer({ store: 'memory://busy-port-2', port: server.port }),
        /EADDRINUSE/,
      );
    } finally {
      await server.close();
    }
  });

  test('a connection sending a body slowly is answered 413 as soon as the limit is passed', async () => {
    const server = await startServer({
      store: 'memory://slow',
      port: 0,
      createQueues: true,
      maxBodyBytes: 100,
    });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpRequest(
          `${server.url}/v1/queues/q/entries`,
          { method: 'POST', headers: { 'Content-Type': 'application/x-ndjson' } },
          (res) => {
            resolve(res.statusCode ?? 0);
            res.resume();
            req.destroy();
          },
        );
        req.on('error', (e) => reject(e));
        // Chunked, never ended: the server must answer once it has seen more than 100 bytes.
        req.write(`${JSON.stringify('y'.repeat(150))}\n`);
      });
      assert.equal(status, 413);
    } finally {
      await server.close();
    }
  });
});

/** The ids of the first `count` events of a stream. */
async function eventIds(res: Response, count: number): Promise<string[]> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = '';
  const ids: string[] = [];
  while (ids.length < count) {
    const { done, value } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    let m: RegExpExecArray | null;
    const re = /^id: (.+)$/gm;
    ids.length = 0;
    while ((m = re.exec(text))) ids.push(m[1] as string);
  }
  await reader.cancel().catch(() => undefined);
  return ids.slice(0, count);
}

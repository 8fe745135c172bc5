/**
 * Regression tests from a hostile review of the HTTP server: each one
 * failed before its fix (see the commit that added it).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ObjectStore } from '../../src/index.ts';
import { createApp } from '../../src/server/app.ts';
import { ShardedQueue } from '../../src/shard/sharded-queue.ts';
import { errorCode, freshStore, ndjson, postNdjson, readEventsUntil, testApp } from './helpers.ts';

const TOKEN = 'test-token-0123456789abcdef';
const SECRET = 'AKIA-supersecret-password';

function form(api: ReturnType<typeof testApp>, body: string): Promise<Response> {
  return Promise.resolve(
    api.app.request('/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body,
    }),
  );
}

/** A store whose every call fails with a message that holds credentials. */
function leakyStore(): { store: ObjectStore; drop: () => void } {
  const { store, drop } = freshStore();
  const fail = async (): Promise<never> => {
    throw new Error(`connect ECONNREFUSED https://user:${SECRET}@s3.example.com/b?sig=${SECRET}`);
  };
  async function* failList(): AsyncGenerator<never> {
    yield* [];
    await fail();
  }
  const proxy = new Proxy(store, {
    get(target, p, receiver) {
      if (p === 'head' || p === 'get') return fail;
      if (p === 'list') return failList;
      return Reflect.get(target, p, receiver) as unknown;
    },
  });
  return { store: proxy, drop };
}

describe('review: redirects', () => {
  test('the login form never redirects to another host, whatever next holds', async () => {
    const api = testApp({ tokens: [TOKEN] });
    try {
      // Browsers drop tabs and line breaks from URLs: "/\t/evil" is "//evil".
      for (const next of ['/\t/evil.example', '/\n/evil.example', '/\r/evil.example', '/ /x']) {
        const res = await form(api, new URLSearchParams({ token: TOKEN, next }).toString());
        assert.equal(res.status, 303, JSON.stringify(next));
        assert.equal(res.headers.get('location'), '/', JSON.stringify(next));
      }
      const page = await api.app.request(`/login?next=${encodeURIComponent('/\t/evil.example')}`);
      assert.match(await page.text(), /name="next" value="\/"/);
    } finally {
      await api.dispose();
    }
  });

  test('?token= on a path starting with // redirects to a path of this server', async () => {
    const api = testApp({ tokens: [TOKEN] });
    try {
      const res = await api.app.request(`http://localhost//evil.example/x?token=${TOKEN}`);
      assert.equal(res.status, 303);
      const location = res.headers.get('location') ?? '';
      assert.ok(!location.startsWith('//'), location);
      assert.equal(new URL(location, 'http://localhost').host, 'localhost');
    } finally {
      await api.dispose();
    }
  });
});

describe('review: secrets', () => {
  test('/readyz does not return credentials from a store error', async () => {
    const { store, drop } = leakyStore();
    const api = createApp({ store, tokens: [TOKEN] });
    try {
      const res = await api.app.request('/readyz', {
        headers: { Authorization: `Bearer ${TOKEN}` },
      });
      assert.equal(res.status, 503);
      const text = await res.text();
      assert.ok(!text.includes(SECRET), text);
    } finally {
      await api.close();
      drop();
    }
  });

  test('the dashboard does not show credentials from a store error', async () => {
    const { store, drop } = leakyStore();
    const api = createApp({
      store,
      dashboard: { queues: ['orders'], sampleIntervalMs: 10, statsIntervalMs: 100 },
    });
    try {
      api.context.dashboard.snapshot();
      const deadline = Date.now() + 5000;
      let text = '';
      while (Date.now() < deadline) {
        text = await (await api.app.request('/v1/dashboard/data')).text();
        if (text.includes('"error"')) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.match(text, /"error"/);
      assert.ok(!text.includes(SECRET), text);
    } finally {
      await api.close();
      drop();
    }
  });

  test("an event stream's error event does not carry credentials", async () => {
    const { store, drop } = freshStore();
    let failing = false;
    const proxy = new Proxy(store, {
      get(target, p, receiver) {
        const v = Reflect.get(target, p, receiver) as unknown;
        if (typeof v !== 'function') return v;
        return (...args: unknown[]) => {
          if (failing && p === 'get') {
            return Promise.reject(new Error(`GET https://user:${SECRET}@s3.example.com/b failed`));
          }
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const api = createApp({ store: proxy, createQueues: true, pollIntervalMs: 10 });
    try {
      assert.equal((await postNdjson(api, 'q', ndjson(1))).status, 201);
      assert.equal(
        (await api.app.request('/v1/queues/q/subscriptions/s', { method: 'PUT' })).status,
        201,
      );
      const res = await api.app.request('/v1/queues/q/subscriptions/s/stream');
      failing = true;
      const events = await readEventsUntil(res, (e) => e.event === 'error');
      const error = events.find((e) => e.event === 'error');
      assert.ok(error, 'an error event');
      assert.ok(!error.data.includes(SECRET), error.data);
    } finally {
      failing = false;
      await api.close();
      drop();
    }
  });
});

describe('review: cross-site requests without a token', () => {
  test('a write from another origin is refused without tokens too', async () => {
    const api = testApp();
    try {
      assert.equal((await postNdjson(api, 'q', ndjson(1))).status, 201);
      assert.equal(
        (await api.app.request('/v1/queues/q/subscriptions/s', { method: 'PUT' })).status,
        201,
      );
      // A form or no-cors fetch from any web page: text/plain needs no preflight.
      const res = await api.app.request('/v1/queues/q/subscriptions/s/ack', {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain', Origin: 'https://evil.example' },
        body: JSON.stringify({ position: { sequence: 0, index: 0 } }),
      });
      assert.equal(res.status, 403);
      assert.equal(await errorCode(res), 'FORBIDDEN');
      // A cross-site image creates no subscription.
      const img = await api.app.request('/v1/queues/q/subscriptions/spy/entries', {
        headers: { 'Sec-Fetch-Site': 'cross-site', 'Sec-Fetch-Mode': 'no-cors' },
      });
      assert.equal(img.status, 403);
      const list = (await (await api.app.request('/v1/queues/q/subscriptions')).json()) as {
        subscriptions: { name: string; nextSequence: number }[];
      };
      assert.ok(!list.subscriptions.some((s) => s.name === 'spy'));
      // The ack was refused: the position did not move.
      assert.equal(list.subscriptions.find((s) => s.name === 's')?.nextSequence, 0);
      // Same origin, and clients that send no Origin (curl), still write.
      const same = await postNdjson(api, 'q', ndjson(2), {
        headers: { Origin: 'http://localhost' },
      });
      assert.equal(same.status, 201);
    } finally {
      await api.dispose();
    }
  });

  test('without tokens, a host name that is not loopback is refused (DNS rebinding)', async () => {
    const api = testApp();
    try {
      const res = await api.app.request('http://rebind.evil.example:8080/v1/queues');
      assert.equal(res.status, 403);
      for (const host of ['localhost', '127.0.0.1:8080', '[::1]:8080', 'app.localhost']) {
        const ok = await api.app.request(`http://${host}/v1/queues`);
        assert.equal(ok.status, 200, host);
      }
      assert.equal((await api.app.request('http://rebind.evil.example/healthz')).status, 200);
    } finally {
      await api.dispose();
    }
    // With a token, the token protects: any host name.
    const authed = testApp({ tokens: [TOKEN] });
    try {
      const ok = await authed.app.request('http://spillway.example.com/v1/queues', {
        headers: { Authorization: `Bearer ${TOKEN}` },
      });
      assert.equal(ok.status, 200);
    } finally {
      await authed.dispose();
    }
  });

  test('behind a TLS proxy, a cookie-authenticated write from the https page is let in', async () => {
    const api = testApp({ tokens: [TOKEN] });
    try {
      const login = await api.app.request(`http://spillway.example.com/?token=${TOKEN}`, {
        headers: { 'X-Forwarded-Proto': 'https' },
      });
      const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] as string;
      const res = await api.app.request('http://spillway.example.com/v1/queues/q/entries', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/x-ndjson',
          Cookie: cookie,
          Origin: 'https://spillway.example.com',
          'X-Forwarded-Proto': 'https',
        },
        body: ndjson(1),
      });
      assert.equal(res.status, 201);
    } finally {
      await api.dispose();
    }
  });
});

describe('review: memory and leaks', () => {
  test('a body of more tiny entries than one batch can hold is refused before it is split', async () => {
    // 100 bytes of a batch per entry at least: 1,000 entries at most here.
    const api = testApp({ producer: { maxBatchBytes: 100_000 } });
    try {
      const res = await api.app.request('/v1/queues/q/entries', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-ndjson' },
        body: '1\n'.repeat(1001),
      });
      assert.equal(res.status, 413);
      assert.match(
        ((await res.json()) as { error: { message: string } }).error.message,
        /1000 entries/,
      );
      const framesRes = await api.app.request('/v1/queues/q/entries', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-spillway-frames' },
        body: new Uint8Array(4 * 1001),
      });
      assert.equal(framesRes.status, 413);
      assert.match(
        ((await framesRes.json()) as { error: { message: string } }).error.message,
        /1000 entries/,
      );
      const fits = await api.app.request('/v1/queues/q/entries', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-ndjson' },
        body: '1\n'.repeat(900),
      });
      assert.equal(fits.status, 201);
    } finally {
      await api.dispose();
    }
  });

  test('reads leave nothing attached to the server-wide closing signal', async () => {
    const api = testApp();
    try {
      assert.equal((await postNdjson(api, 'q', ndjson(1))).status, 201);
      for (let i = 0; i < 50; i++) {
        const res = await api.app.request('/v1/queues/q/subscriptions/s/entries?max=1');
        assert.equal(res.status, 200);
        await res.arrayBuffer();
      }
      // Node 20's AbortSignal.any keeps every signal made from a long-lived one.
      const closing = api.context.closing as unknown as Record<symbol, unknown>;
      const dependants = Object.getOwnPropertySymbols(closing)
        .filter((s) => s.description === 'kDependantSignals')
        .map((s) => closing[s] as Set<unknown> | undefined);
      for (const d of dependants) assert.equal(d?.size ?? 0, 0);
    } finally {
      await api.dispose();
    }
  });
});

describe('review: writes', () => {
  test('an Idempotency-Key replayed with the same bytes as another media type is 422', async () => {
    const api = testApp();
    try {
      const headers = { 'Idempotency-Key': 'k-1' };
      const first = await postNdjson(api, 'q', '1\n2\n', { headers });
      assert.equal(first.status, 201);
      const other = await api.app.request('/v1/queues/q/entries', {
        method: 'POST',
        headers: { ...headers, 'Content-Type': 'application/octet-stream' },
        body: '1\n2\n',
      });
      assert.equal(other.status, 422);
      assert.equal(await errorCode(other), 'IDEMPOTENCY_KEY_REUSED');
    } finally {
      await api.dispose();
    }
  });

  test("a client that goes away while its queue is created does not fail another's write", async () => {
    const { store, drop } = freshStore();
    // Every store call takes a little while and honours its signal.
    const slow = new Proxy(store, {
      get(target, p, receiver) {
        const v = Reflect.get(target, p, receiver) as unknown;
        if (typeof v !== 'function' || p === 'list') return v;
        return async (...args: unknown[]) => {
          await new Promise((r) => setTimeout(r, 20));
          const options = args.find(
            (a): a is { signal?: AbortSignal } =>
              typeof a === 'object' && a !== null && 'signal' in a,
          );
          options?.signal?.throwIfAborted();
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const api = createApp({ store: slow, createQueues: true });
    try {
      const gone = new AbortController();
      const first = Promise.resolve(
        api.app.request('/v1/queues/q/entries', {
          method: 'POST',
          headers: { 'Content-Type': 'application/x-ndjson' },
          body: ndjson(1),
          signal: gone.signal,
        }),
      );
      await new Promise((r) => setTimeout(r, 5));
      const second = postNdjson(api, 'q', ndjson(2));
      await new Promise((r) => setTimeout(r, 5));
      gone.abort();
      await first.catch(() => undefined);
      const res = await second;
      assert.equal(res.status, 201, await res.clone().text());
    } finally {
      await api.close();
      drop();
    }
  });

  test("a write to a sharded queue's prefix does not start a plain queue inside it", async () => {
    const { store, drop } = freshStore();
    const sharded = await ShardedQueue.open({ store, dataPathPrefix: 'orders', vnodeCapacity: 4 });
    const api = createApp({ store, createQueues: true });
    try {
      const res = await postNdjson(api, 'orders', ndjson(1));
      assert.equal(res.status, 409, await res.clone().text());
      await assert.rejects(store.head('orders/queue'));
    } finally {
      await api.close();
      await sharded.close();
      drop();
    }
  });
});

describe('review: event stream', () => {
  test(
    'a Last-Event-ID past the end of the log does not skip what is appended later',
    { timeout: 5000 },
    async () => {
      const api = testApp({ pollIntervalMs: 10 });
      try {
        assert.equal((await postNdjson(api, 'q', ndjson('a'))).status, 201);
        assert.equal(
          (await api.app.request('/v1/queues/q/subscriptions/s', { method: 'PUT' })).status,
          201,
        );
        // An id from before the queue was deleted and made again, say.
        const res = await api.app.request('/v1/queues/q/subscriptions/s/stream', {
          headers: { 'Last-Event-ID': '500:0' },
        });
        const events = await readEventsUntil(res, (e) => e.event === 'entry');
        assert.equal(events.find((e) => e.event === 'entry')?.id, '0:0');
      } finally {
        await api.dispose();
      }
    },
  );
});

/**
 * The subscription and queue routes, in process: reads without a lease,
 * acknowledgements inside a batch, the long poll, the event stream,
 * subscription and retention management, stats, the v1 refusal.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Consumer, Producer } from '../../src/index.ts';
import { deferred } from '../support/deferred.ts';
import {
  ack,
  entryLines,
  errorCode,
  freshStore,
  getEntries,
  ndjson,
  postNdjson,
  testApp,
} from './helpers.ts';

describe('subscription reads and acknowledgements', () => {
  test('a GET creates the subscription at oldest and returns entries with positions, without a lease', async () => {
    const api = testApp();
    try {
      await postNdjson(api, 'q', ndjson({ n: 1 }, { n: 2 }, { n: 3 }));
      await postNdjson(api, 'q', ndjson({ n: 4 }));
      const res = await getEntries(api, 'q', 'web', '?max=10');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'application/x-ndjson');
      const lines = await entryLines(res);
      assert.deepEqual(
        lines.map((l) => [l.position.sequence, l.position.index, l.data]),
        [
          [0, 0, { n: 1 }],
          [0, 1, { n: 2 }],
          [0, 2, { n: 3 }],
          [1, 0, { n: 4 }],
        ],
      );
      assert.ok(lines.every((l) => typeof l.ingestionTimeMs === 'number'));
      // No lease: a second reader (or the same one again) gets the same entries.
      const again = await entryLines(await getEntries(api, 'q', 'web', '?max=2'));
      assert.deepEqual(
        again.map((l) => l.data),
        [{ n: 1 }, { n: 2 }],
      );
      const subs = (await (await api.app.request('/v1/queues/q/subscriptions')).json()) as {
        subscriptions: { name: string }[];
      };
      assert.deepEqual(subs.subscriptions.map((s) => s.name).sort(), ['default', 'web']);
    } finally {
      await api.dispose();
    }
  });

  test('an ack in the middle of a batch makes the next GET start right after it', async () => {
    const api = testApp();
    try {
      await postNdjson(api, 'q', ndjson('a', 'b', 'c', 'd'));
      await postNdjson(api, 'q', ndjson('e'));
      const first = await entryLines(await getEntries(api, 'q', 's', '?max=2'));
      assert.deepEqual(
        first.map((l) => l.data),
        ['a', 'b'],
      );
      const acked = await ack(
        api,
        'q',
        's',
        (first[1] as { position: { sequence: number; index: number } }).position,
      );
      assert.equal(acked.status, 200);
      assert.deepEqual(await acked.json(), { next: { sequence: 0, index: 2 } });
      const next = await entryLines(await getEntries(api, 'q', 's', '?max=10'));
      assert.deepEqual(
        next.map((l) => l.data),
        ['c', 'd', 'e'],
      );
      // The last entry of a batch: the position moves to the next batch.
      const end = await ack(api, 'q', 's', { sequence: 0, index: 3 });
      assert.deepEqual(await end.json(), { next: { sequence: 1, index: 0 } });
      // Acknowledging what is already acknowledged changes nothing (never moves back).
      const old = await ack(api, 'q', 's', { sequence: 0, index: 0 });
      assert.deepEqual(await old.json(), { next: { sequence: 1, index: 0 } });
      const rest = await entryLines(await getEntries(api, 'q', 's'));
      assert.deepEqual(
        rest.map((l) => l.data),
        ['e'],
      );
      // The queue's stats see the subscription's position.
      const stats = (await (await api.app.request('/v1/queues/q')).json()) as {
        subscriptions: { name: string; nextSequence: number; nextIndex: number }[];
      };
      const s = stats.subscriptions.find((x) => x.name === 's');
      assert.deepEqual([s?.nextSequence, s?.nextIndex], [1, 0]);
    } finally {
      await api.dispose();
    }
  });

  test('acks are checked: no such entry is 400, no such subscription 404, a bad body 400', async () => {
    const api = testApp();
    try {
      await postNdjson(api, 'q', ndjson('a', 'b'));
      await getEntries(api, 'q', 's');
      const past = await ack(api, 'q', 's', { sequence: 5, index: 0 });
      assert.equal(past.status, 400);
      const index = await ack(api, 'q', 's', { sequence: 0, index: 2 });
      assert.equal(index.status, 400);
      assert.match(
        ((await index.json()) as { error: { message: string } }).error.message,
        /holds 2 entries/,
      );
      const missing = await ack(api, 'q', 'nobody', { sequence: 0, index: 0 });
      assert.equal(missing.status, 404);
      const bad = await api.app.request('/v1/queues/q/subscriptions/s/ack', {
        method: 'POST',
        body: '{"position": {"sequence": -1, "index": 0}}',
      });
      assert.equal(bad.status, 400);
      const notJson = await api.app.request('/v1/queues/q/subscriptions/s/ack', {
        method: 'POST',
        body: 'nope',
      });
      assert.equal(notJson.status, 400);
    } finally {
      await api.dispose();
    }
  });

  test('an HTTP ack does not fence the library consumer holding the subscription', async () => {
    const api = testApp();
    try {
      await postNdjson(api, 'q', ndjson('a', 'b'));
      await postNdjson(api, 'q', ndjson('c'));
      const consumer = await Consumer.open({
        store: api.store,
        dataPathPrefix: 'q',
        manifestPath: 'q/manifest',
        subscription: 'shared',
        gcIntervalMs: 0,
        ackBatchSize: 1,
      });
      await ack(api, 'q', 'shared', { sequence: 0, index: 1 });
      const batch = await consumer.next();
      assert.equal(batch?.sequence, 0);
      await consumer.ack(0);
      await consumer.close();
      const rest = await entryLines(await getEntries(api, 'q', 'shared'));
      assert.deepEqual(
        rest.map((l) => l.data),
        ['c'],
      );
    } finally {
      await api.dispose();
    }
  });

  test('entries that are not UTF-8 JSON come as base64', async () => {
    const api = testApp();
    try {
      await api.app.request('/v1/queues/b/entries', {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: new Uint8Array([0xff, 0x00, 0x41]),
      });
      await api.app.request('/v1/queues/b/entries', {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: '{\n  "pretty": [1,\r\n 2]\n}',
      });
      const lines = await entryLines(await getEntries(api, 'b', 's'));
      assert.deepEqual(lines[0]?.encoding, 'base64');
      assert.deepEqual([...Buffer.from(lines[0]?.data as string, 'base64')], [0xff, 0x00, 0x41]);
      // JSON over several lines is still one line of the answer, its value unchanged.
      assert.deepEqual(lines[1]?.data, { pretty: [1, 2] });
      assert.equal(lines[1]?.encoding, undefined);
    } finally {
      await api.dispose();
    }
  });

  test('startAt=latest creates a subscription that sees only what comes after it', async () => {
    const api = testApp();
    try {
      await postNdjson(api, 'q', ndjson('old'));
      assert.deepEqual(await entryLines(await getEntries(api, 'q', 'live', '?startAt=latest')), []);
      await postNdjson(api, 'q', ndjson('new'));
      const lines = await entryLines(await getEntries(api, 'q', 'live', '?startAt=oldest'));
      assert.deepEqual(
        lines.map((l) => l.data),
        ['new'],
      );
      const bad = await getEntries(api, 'q', 'x', '?startAt=yesterday');
      assert.equal(bad.status, 400);
    } finally {
      await api.dispose();
    }
  });

  test('a long poll answers as soon as an entry arrives', async () => {
    const api = testApp({ pollIntervalMs: 60_000 });
    try {
      await postNdjson(api, 'q', ndjson('before'));
      // The subscription exists and is caught up.
      await getEntries(api, 'q', 's', '?startAt=latest');
      const poll = getEntries(api, 'q', 's', '?waitMs=60000');
      const posted = await postNdjson(api, 'q', ndjson('arrived'));
      assert.equal(posted.status, 201);
      const lines = await entryLines(await poll);
      assert.deepEqual(
        lines.map((l) => l.data),
        ['arrived'],
      );
    } finally {
      await api.dispose();
    }
  });

  test('a long poll also sees entries another process appended (read again every pollIntervalMs)', async () => {
    const api = testApp({ pollIntervalMs: 5 });
    try {
      await postNdjson(api, 'q', ndjson('x'));
      await getEntries(api, 'q', 's', '?startAt=latest');
      const poll = getEntries(api, 'q', 's', '?waitMs=60000');
      const producer = new Producer({
        store: api.store,
        dataPathPrefix: 'q',
        manifestPath: 'q/manifest',
      });
      await (
        await producer.produce([new TextEncoder().encode('"elsewhere"')])
      ).durable;
      await producer.close();
      const lines = await entryLines(await poll);
      assert.deepEqual(
        lines.map((l) => l.data),
        ['elsewhere'],
      );
    } finally {
      await api.dispose();
    }
  });

  test('a long poll with nothing to read answers empty after waitMs; max and waitMs are checked', async () => {
    const api = testApp({ maxWaitMs: 1000 });
    try {
      await postNdjson(api, 'q', ndjson('x'));
      await getEntries(api, 'q', 's', '?startAt=latest');
      const res = await getEntries(api, 'q', 's', '?waitMs=10');
      assert.equal(res.status, 200);
      assert.equal(await res.text(), '');
      assert.equal((await getEntries(api, 'q', 's', '?waitMs=1001')).status, 400);
      assert.equal((await getEntries(api, 'q', 's', '?max=0')).status, 400);
      assert.equal((await getEntries(api, 'q', 's', '?max=1e3')).status, 400);
    } finally {
      await api.dispose();
    }
  });

  test('the event stream sends entries with their positions as ids, and resumes after Last-Event-ID', async () => {
    const api = testApp();
    try {
      await postNdjson(api, 'q', ndjson('a', 'b'));
      await postNdjson(api, 'q', ndjson('c'));
      const res = await api.app.request('/v1/queues/q/subscriptions/tail/stream');
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
      const events = await readEvents(res, 3);
      assert.deepEqual(
        events.map((e) => [e.id, e.event, (JSON.parse(e.data) as { data: unknown }).data]),
        [
          ['0:0', 'entry', 'a'],
          ['0:1', 'entry', 'b'],
          ['1:0', 'entry', 'c'],
        ],
      );
      // A reconnect after 0:0 gets what followed it.
      const resumed = await api.app.request('/v1/queues/q/subscriptions/tail/stream', {
        headers: { 'Last-Event-ID': '0:0' },
      });
      const more = await readEvents(resumed, 2);
      assert.deepEqual(
        more.map((e) => e.id),
        ['0:1', '1:0'],
      );
      // Live: an entry posted while the stream waits is sent.
      const live = await api.app.request('/v1/queues/q/subscriptions/tail/stream', {
        headers: { 'Last-Event-ID': '1:0' },
      });
      const next = readEvents(live, 1);
      await postNdjson(api, 'q', ndjson('d'));
      assert.deepEqual(
        (await next).map((e) => e.id),
        ['2:0'],
      );
      const bad = await api.app.request('/v1/queues/q/subscriptions/tail/stream', {
        headers: { 'Last-Event-ID': 'yesterday' },
      });
      assert.equal(bad.status, 400);
    } finally {
      await api.dispose();
    }
  });

  test('closing the app ends a waiting long poll and an open stream', async () => {
    const api = testApp({ pollIntervalMs: 60_000 });
    await postNdjson(api, 'q', ndjson('x'));
    await getEntries(api, 'q', 's', '?startAt=latest');
    const poll = getEntries(api, 'q', 's', '?waitMs=60000');
    const stream = await api.app.request('/v1/queues/q/subscriptions/s/stream');
    const reader = (stream.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // the opening comment
    const ended = deferred<boolean>();
    void (async () => {
      for (;;) {
        const { done } = await reader.read();
        if (done) return ended.resolve(true);
      }
    })();
    await api.dispose();
    assert.equal((await poll).status, 200);
    assert.equal(await ended.promise, true);
  });
});

describe('subscription and queue management', () => {
  test('PUT creates a subscription at startAt (200 when it exists), DELETE removes it', async () => {
    const api = testApp();
    try {
      await postNdjson(api, 'q', ndjson('a'));
      await postNdjson(api, 'q', ndjson('b'));
      const created = await api.app.request('/v1/queues/q/subscriptions/audit?startAt=seq:1', {
        method: 'PUT',
      });
      assert.equal(created.status, 201);
      assert.deepEqual(((await created.json()) as { next: unknown }).next, {
        sequence: 1,
        index: 0,
      });
      const again = await api.app.request('/v1/queues/q/subscriptions/audit', {
        method: 'PUT',
        body: JSON.stringify({ startAt: 'oldest' }),
      });
      assert.equal(again.status, 200);
      assert.equal(((await again.json()) as { created: boolean }).created, false);
      const lines = await entryLines(await getEntries(api, 'q', 'audit'));
      assert.deepEqual(
        lines.map((l) => l.data),
        ['b'],
      );
      const deleted = await api.app.request('/v1/queues/q/subscriptions/audit', {
        method: 'DELETE',
      });
      assert.equal(deleted.status, 204);
      const gone = await api.app.request('/v1/queues/q/subscriptions/audit', { method: 'DELETE' });
      assert.equal(gone.status, 404);
      const badName = await api.app.request('/v1/queues/q/subscriptions/.dot', { method: 'PUT' });
      assert.equal(badName.status, 400);
    } finally {
      await api.dispose();
    }
  });

  test('retention is read and replaced; stats and the queue list show the queue; unknown queues are 404', async () => {
    const api = testApp();
    try {
      await postNdjson(api, 'q', ndjson('a'));
      await postNdjson(api, 'r', ndjson('a'));
      const empty = await api.app.request('/v1/queues/q/retention');
      assert.deepEqual(await empty.json(), { retention: {} });
      const set = await api.app.request('/v1/queues/q/retention', {
        method: 'PUT',
        body: JSON.stringify({ maxAgeMs: 3_600_000, maxBytes: null }),
      });
      assert.equal(set.status, 200);
      assert.deepEqual(await set.json(), { retention: { maxAgeMs: 3_600_000 } });
      assert.deepEqual(await (await api.app.request('/v1/queues/q/retention')).json(), {
        retention: { maxAgeMs: 3_600_000 },
      });
      const bad = await api.app.request('/v1/queues/q/retention', {
        method: 'PUT',
        body: JSON.stringify({ maxAgeMs: 0 }),
      });
      assert.equal(bad.status, 400);
      const stats = (await (await api.app.request('/v1/queues/q')).json()) as {
        queue: string;
        layout: string;
        nextSequence: number;
      };
      assert.deepEqual([stats.queue, stats.layout, stats.nextSequence], ['q', 'log', 1]);
      assert.deepEqual(await (await api.app.request('/v1/queues')).json(), { queues: ['q', 'r'] });
      for (const path of [
        '/v1/queues/none',
        '/v1/queues/none/retention',
        '/v1/queues/none/subscriptions',
        '/v1/queues/none/subscriptions/s/entries',
      ]) {
        const res = await api.app.request(path);
        assert.equal(res.status, 404, path);
        assert.equal(await errorCode(res), 'QUEUE_NOT_FOUND');
      }
    } finally {
      await api.dispose();
    }
  });

  test('a v1 queue answers 409 V1_LAYOUT on subscription and retention routes, and serves stats', async () => {
    const { store, drop } = freshStore();
    const api = testApp({ store });
    try {
      const producer = new Producer({
        store,
        dataPathPrefix: 'v',
        manifestPath: 'v/manifest',
        layout: 'v1',
      });
      await (
        await producer.produce([new TextEncoder().encode('1')])
      ).durable;
      await producer.close();
      for (const [method, path] of [
        ['GET', '/v1/queues/v/subscriptions'],
        ['GET', '/v1/queues/v/subscriptions/default/entries'],
        ['POST', '/v1/queues/v/subscriptions/default/ack'],
        ['PUT', '/v1/queues/v/subscriptions/x'],
        ['GET', '/v1/queues/v/retention'],
      ] as const) {
        const res = await api.app.request(path, {
          method,
          ...(method === 'GET' ? {} : { body: '{}' }),
        });
        assert.equal(res.status, 409, `${method} ${path}`);
        assert.equal(await errorCode(res), 'V1_LAYOUT');
      }
      assert.equal((await api.app.request('/v1/queues/v')).status, 200);
      assert.deepEqual(await (await api.app.request('/v1/queues')).json(), { queues: ['v'] });
    } finally {
      await api.dispose();
      drop();
    }
  });

  test('health, readiness, unknown routes', async () => {
    const api = testApp();
    try {
      assert.deepEqual(await (await api.app.request('/healthz')).json(), { status: 'ok' });
      assert.deepEqual(await (await api.app.request('/readyz')).json(), { status: 'ready' });
      const none = await api.app.request('/v2/anything');
      assert.equal(none.status, 404);
      assert.equal(await errorCode(none), 'NOT_FOUND');
    } finally {
      await api.dispose();
    }
  });
});

interface Event {
  id?: string;
  event?: string;
  data: string;
}

/** Reads events from a stream until `count` events (comments skipped) came, then cancels it. */
async function readEvents(res: Response, count: number): Promise<Event[]> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const out: Event[] = [];
  while (out.length < count) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const e: Event = { data: '' };
      let hasData = false;
      for (const line of block.split('\n')) {
        if (line.startsWith('id: ')) e.id = line.slice(4);
        else if (line.startsWith('event: ')) e.event = line.slice(7);
        else if (line.startsWith('data: ')) {
          e.data += (hasData ? '\n' : '') + line.slice(6);
          hasData = true;
        }
      }
      if (hasData) out.push(e);
    }
  }
  await reader.cancel();
  return out;
}

/**
 * POST /v1/queues/{queue}/entries, in process: the three body formats,
 * durable answers read back by a Consumer, ?wait=false, Idempotency-Key,
 * limits, bad input, queue names, unknown queues, a full buffer.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Consumer, Producer, Queue, type MemoryStore } from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { deferred } from '../support/deferred.ts';
import { errorCode, frames, freshStore, ndjson, postNdjson, testApp } from './helpers.ts';

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** Every entry of queue `name` in `store`, in order, read by a Consumer of a fresh subscription. */
async function readAll(store: MemoryStore | FaultInjectingStore, name: string): Promise<string[]> {
  const queue = Queue.open({ store, dataPathPrefix: name, manifestPath: `${name}/manifest` });
  const consumer = await Consumer.open({
    queue,
    subscription: `check-${Math.random().toString(36).slice(2)}`,
    gcIntervalMs: 0,
  });
  const out: string[] = [];
  for (;;) {
    const batch = await consumer.next();
    if (!batch) break;
    out.push(...batch.entries.map(text));
    await consumer.ack(batch.sequence);
  }
  await consumer.close();
  await queue.close();
  return out;
}

describe('POST entries', () => {
  test('an NDJSON body is answered 201 once durable, and a Consumer reads its lines as entries', async () => {
    const api = testApp();
    try {
      const res = await postNdjson(api, 'orders', '{"id":1}\r\n\n  \n{"id": 2}\n"three"');
      assert.equal(res.status, 201);
      assert.deepEqual(await res.json(), { sequence: 0, entries: 3 });
      const again = await postNdjson(api, 'orders', ndjson({ id: 4 }));
      assert.deepEqual(await again.json(), { sequence: 1, entries: 1 });
      assert.deepEqual(await readAll(api.store as MemoryStore, 'orders'), [
        '{"id":1}',
        '{"id": 2}',
        '"three"',
        '{"id":4}',
      ]);
    } finally {
      await api.dispose();
    }
  });

  test('an octet-stream body is one entry, any bytes', async () => {
    const api = testApp();
    try {
      const bytes = new Uint8Array([0, 0xff, 10, 13, 0x80]);
      const res = await api.app.request('/v1/queues/bin/entries', {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: bytes,
      });
      assert.equal(res.status, 201);
      assert.deepEqual(await res.json(), { sequence: 0, entries: 1 });
      const queue = Queue.open({
        store: api.store,
        dataPathPrefix: 'bin',
        manifestPath: 'bin/manifest',
      });
      const batches = [];
      for await (const b of queue.peek()) batches.push(b);
      assert.deepEqual([...(batches[0]?.entries[0] ?? [])], [...bytes]);
    } finally {
      await api.dispose();
    }
  });

  test('a frames body is split by its u32 little-endian lengths, empty frames included', async () => {
    const api = testApp();
    try {
      const enc = new TextEncoder();
      const body = frames(enc.encode('a\nb'), new Uint8Array(0), enc.encode('c'));
      const res = await api.app.request('/v1/queues/f/entries', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-spillway-frames' },
        body,
      });
      assert.equal(res.status, 201);
      assert.deepEqual(await res.json(), { sequence: 0, entries: 3 });
      assert.deepEqual(await readAll(api.store as MemoryStore, 'f'), ['a\nb', '', 'c']);
    } finally {
      await api.dispose();
    }
  });

  test('bad bodies are 400 with a JSON error naming the problem, and nothing is appended', async () => {
    const api = testApp();
    try {
      const cases: [string, string | Uint8Array, RegExp][] = [
        ['application/x-ndjson', '{"ok":1}\n{not json}\n', /line 2 is not one JSON value/],
        ['application/x-ndjson', new Uint8Array([0x22, 0xff, 0x22]), /line 1 is not UTF-8/],
        ['application/x-ndjson', '\n \n', /no entry/],
        ['application/x-spillway-frames', new Uint8Array([5, 0, 0, 0, 1]), /declares 5 bytes/],
        ['application/x-spillway-frames', new Uint8Array([1, 0]), /length is cut off/],
        ['application/x-spillway-frames', new Uint8Array(0), /no entry/],
      ];
      for (const [type, body, message] of cases) {
        const res = await api.app.request('/v1/queues/bad/entries', {
          method: 'POST',
          headers: { 'Content-Type': type },
          body,
        });
        assert.equal(res.status, 400, `${type} ${String(body)}`);
        const json = (await res.json()) as { error: { code: string; message: string } };
        assert.equal(json.error.code, 'BAD_REQUEST');
        assert.match(json.error.message, message);
      }
      const wrongType = await api.app.request('/v1/queues/bad/entries', {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain' },
        body: 'x',
      });
      assert.equal(wrongType.status, 415);
      assert.equal(await errorCode(wrongType), 'UNSUPPORTED_MEDIA_TYPE');
      const badWait = await postNdjson(api, 'bad', '1\n', { query: '?wait=maybe' });
      assert.equal(badWait.status, 400);
      assert.deepEqual(await (await api.app.request('/v1/queues')).json(), { queues: [] });
    } finally {
      await api.dispose();
    }
  });

  test('a body over maxBodyBytes is 413, by Content-Length and while streaming without one', async () => {
    const api = testApp({ maxBodyBytes: 64 });
    try {
      const declared = await postNdjson(api, 'big', ndjson('x'.repeat(100)));
      assert.equal(declared.status, 413);
      assert.equal(await errorCode(declared), 'PAYLOAD_TOO_LARGE');
      // A body without a length: chunks of 16 bytes, refused at the chunk that crosses 64.
      let pulled = 0;
      const stream = new ReadableStream<Uint8Array>({
        pull(controller) {
          pulled++;
          if (pulled > 100) controller.close();
          else controller.enqueue(new TextEncoder().encode('"0123456789abc"\n'));
        },
      });
      const streamed = await api.app.request('/v1/queues/big/entries', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-ndjson' },
        body: stream,
        duplex: 'half',
      });
      assert.equal(streamed.status, 413);
      assert.ok(pulled <= 6, `read ${pulled} chunks of 16 bytes for a limit of 64`);
      const fits = await postNdjson(api, 'big', ndjson('small'));
      assert.equal(fits.status, 201);
    } finally {
      await api.dispose();
    }
  });

  test('queue names are checked: 400 for path tricks and bad characters', async () => {
    const api = testApp();
    try {
      for (const name of [
        'a..b',
        '..',
        '.hidden',
        '-x',
        'a%2Fb',
        '%2E%2E',
        'a%20b',
        'x'.repeat(101),
      ]) {
        const res = await postNdjson(api, name, '1\n');
        assert.ok(res.status === 400 || res.status === 404, `${name}: ${res.status}`);
        if (res.status === 400) assert.equal(await errorCode(res), 'INVALID_QUEUE_NAME');
      }
      // Every one of them is refused before the store is touched.
      assert.deepEqual(await (await api.app.request('/v1/queues')).json(), { queues: [] });
      const ok = await postNdjson(api, 'A-z_0.9', '1\n');
      assert.equal(ok.status, 201);
    } finally {
      await api.dispose();
    }
  });

  test('without createQueues, writing to an unknown queue is 404 and creates nothing; an existing one is served', async () => {
    const { store, drop } = freshStore();
    const api = testApp({ store, createQueues: false });
    try {
      const res = await postNdjson(api, 'nope', '1\n');
      assert.equal(res.status, 404);
      assert.equal(await errorCode(res), 'QUEUE_NOT_FOUND');
      assert.deepEqual(await (await api.app.request('/v1/queues')).json(), { queues: [] });
      // A queue made by the library is there to write to.
      const producer = new Producer({
        store,
        dataPathPrefix: 'made',
        manifestPath: 'made/manifest',
      });
      await (
        await producer.produce([new TextEncoder().encode('first')])
      ).durable;
      await producer.close();
      const ok = await postNdjson(api, 'made', '"second"\n');
      assert.equal(ok.status, 201);
      assert.deepEqual(await readAll(store, 'made'), ['first', '"second"']);
    } finally {
      await api.dispose();
      drop();
    }
  });

  test('a v1 queue is served for ingest', async () => {
    const { store, drop } = freshStore();
    const api = testApp({ store, createQueues: false });
    try {
      const producer = new Producer({
        store,
        dataPathPrefix: 'old',
        manifestPath: 'old/manifest',
        layout: 'v1',
      });
      await (
        await producer.produce([new TextEncoder().encode('v1')])
      ).durable;
      await producer.close();
      const res = await postNdjson(api, 'old', '"http"\n');
      assert.equal(res.status, 201);
      assert.deepEqual(await res.json(), { sequence: 1, entries: 1 });
      const stats = (await (await api.app.request('/v1/queues/old')).json()) as { layout: string };
      assert.equal(stats.layout, 'v1');
    } finally {
      await api.dispose();
      drop();
    }
  });

  test('?wait=false answers 202 once accepted; the entries become durable', async () => {
    const { store, drop } = freshStore();
    const faulty = new FaultInjectingStore(store);
    const api = testApp({ store: faulty });
    try {
      await postNdjson(api, 'q', '"first"\n');
      // Hold every write: the 202 must come before anything is stored.
      const release = deferred();
      const remove = faulty.before('put', () => release.promise);
      const res = await postNdjson(api, 'q', '"held"\n', { query: '?wait=false' });
      assert.equal(res.status, 202);
      assert.deepEqual(await res.json(), { accepted: true, entries: 1 });
      remove();
      release.resolve();
      await api.close();
      assert.deepEqual(await readAll(store, 'q'), ['"first"', '"held"']);
    } finally {
      await api.dispose();
      drop();
    }
  });

  test('the same Idempotency-Key twice appends once and answers the first result', async () => {
    const api = testApp();
    try {
      const headers = { 'Idempotency-Key': 'order-42-attempt' };
      const first = await postNdjson(api, 'q', ndjson({ order: 42 }), { headers });
      assert.equal(first.status, 201);
      const firstBody = await first.json();
      const retry = await postNdjson(api, 'q', ndjson({ order: 42 }), { headers });
      assert.equal(retry.status, 200);
      assert.equal(retry.headers.get('idempotent-replayed'), 'true');
      assert.deepEqual(await retry.json(), firstBody);
      // Another queue does not share the key.
      const other = await postNdjson(api, 'q2', ndjson({ order: 42 }), { headers });
      assert.equal(other.status, 201);
      // The same key with another body is refused.
      const reused = await postNdjson(api, 'q', ndjson({ order: 43 }), { headers });
      assert.equal(reused.status, 422);
      assert.equal(await errorCode(reused), 'IDEMPOTENCY_KEY_REUSED');
      assert.deepEqual(await readAll(api.store as MemoryStore, 'q'), ['{"order":42}']);
    } finally {
      await api.dispose();
    }
  });

  test('a retry while the first request is still in flight waits for it and appends nothing', async () => {
    const { store, drop } = freshStore();
    const faulty = new FaultInjectingStore(store);
    const api = testApp({ store: faulty });
    try {
      await postNdjson(api, 'q', '"setup"\n');
      const held = deferred();
      const reached = deferred();
      const remove = faulty.before('put', () => {
        reached.resolve();
        return held.promise;
      });
      const headers = { 'Idempotency-Key': 'k1' };
      const first = postNdjson(api, 'q', '"once"\n', { headers });
      await reached.promise;
      const retry = postNdjson(api, 'q', '"once"\n', { headers });
      remove();
      held.resolve();
      const [a, b] = await Promise.all([first, retry]);
      assert.equal(a.status, 201);
      assert.equal(b.status, 200);
      assert.deepEqual(await b.json(), await a.json());
      assert.deepEqual(await readAll(store, 'q'), ['"setup"', '"once"']);
    } finally {
      await api.dispose();
      drop();
    }
  });

  test('a full producer buffer is 503 BUSY with Retry-After, not an unbounded wait', async () => {
    const { store, drop } = freshStore();
    const faulty = new FaultInjectingStore(store);
    const api = testApp({
      store: faulty,
      admissionWaitMs: 20,
      producer: { maxBufferedBytes: 2048, flushIntervalMs: 0 },
    });
    try {
      assert.equal((await postNdjson(api, 'q', '"warm"\n')).status, 201);
      const held = deferred();
      const remove = faulty.before('put', () => held.promise);
      const filler = ndjson('x'.repeat(1200));
      const accepted = await postNdjson(api, 'q', filler, { query: '?wait=false' });
      assert.equal(accepted.status, 202);
      const busy = await postNdjson(api, 'q', filler);
      assert.equal(busy.status, 503);
      assert.equal(busy.headers.get('retry-after'), '1');
      const body = (await busy.json()) as { error: { code: string; retriable: boolean } };
      assert.deepEqual([body.error.code, body.error.retriable], ['BUSY', true]);
      remove();
      held.resolve();
      assert.equal((await postNdjson(api, 'q', filler)).status, 201);
    } finally {
      await api.dispose();
      drop();
    }
  });

  test('entries that can never fit the producer buffer are 413', async () => {
    const api = testApp({ producer: { maxBufferedBytes: 1024 } });
    try {
      const res = await postNdjson(api, 'q', ndjson('y'.repeat(2000)));
      assert.equal(res.status, 413);
      assert.equal(await errorCode(res), 'PAYLOAD_TOO_LARGE');
    } finally {
      await api.dispose();
    }
  });

  test('bad server options are refused when the app is built, naming the option', () => {
    assert.throws(() => testApp({ maxBodyBytes: 0 }), /maxBodyBytes/);
    assert.throws(() => testApp({ producer: { flushIntervalMS: 5 } as never }), /flushIntervalMS/);
    assert.throws(() => testApp({ tokens: ['short'] }), /token 1 must be/);
  });
});

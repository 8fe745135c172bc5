/**
 * A graceful close loses nothing that was accepted: every request answered
 * 2xx has its entries in the queue, every refused one has none, and
 * requests that come after the close began are refused.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Queue } from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { deferred } from '../support/deferred.ts';
import { errorCode, freshStore, ndjson, postNdjson, testApp } from './helpers.ts';

test('close() while writes are held makes every accepted entry durable and answers its request', async () => {
  const { store, drop } = freshStore();
  const faulty = new FaultInjectingStore(store);
  const api = testApp({ store: faulty });
  try {
    assert.equal((await postNdjson(api, 'q', ndjson('setup'))).status, 201);
    const held = deferred();
    const reached = deferred();
    faulty.before('put', () => {
      reached.resolve();
      return held.promise;
    });
    // Durable answers waiting on the store, and answers given at acceptance.
    const waiting = Array.from({ length: 10 }, (_, i) =>
      postNdjson(api, 'q', ndjson(`w${i}`, `w${i}b`)),
    );
    const accepted = [];
    for (let i = 0; i < 10; i++) {
      const res = await postNdjson(api, 'q', ndjson(`a${i}`), { query: '?wait=false' });
      assert.equal(res.status, 202);
      accepted.push(`a${i}`);
    }
    await reached.promise;
    const closing = api.close();
    // From now on nothing is accepted.
    const late = await postNdjson(api, 'q', ndjson('late'));
    assert.equal(late.status, 503);
    assert.equal(await errorCode(late), 'SHUTTING_DOWN');
    held.resolve();
    await closing;
    const answered = await Promise.all(waiting);
    const durable: string[] = [...accepted];
    for (const [i, res] of answered.entries()) {
      if (res.status === 201) durable.push(`w${i}`, `w${i}b`);
      else assert.equal(res.status, 503, `request ${i}: ${res.status}`);
    }
    assert.ok(
      answered.filter((r) => r.status === 201).length > 0,
      'some waiting requests were accepted',
    );
    // Read back everything stored.
    const queue = Queue.open({ store, dataPathPrefix: 'q', manifestPath: 'q/manifest' });
    const stored: string[] = [];
    for await (const b of queue.peek()) {
      for (const e of b.entries) stored.push(JSON.parse(new TextDecoder().decode(e)) as string);
    }
    await queue.close();
    assert.deepEqual([...stored].sort(), ['setup', ...durable].sort());
    // close() is idempotent.
    await api.close();
  } finally {
    await api.dispose();
    drop();
  }
});

test('a request still sending its body when the close begins is refused, and does not hold the close up', async () => {
  const api = testApp();
  try {
    const sent = deferred();
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('"part'));
        sent.resolve();
        // ...and never more: a client that stalls.
      },
    });
    const pending = api.app.request('/v1/queues/q/entries', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-ndjson' },
      body,
      duplex: 'half',
    });
    await sent.promise;
    await api.close();
    const res = await pending;
    assert.equal(res.status, 503);
    assert.equal(await errorCode(res), 'SHUTTING_DOWN');
  } finally {
    await api.dispose();
  }
});

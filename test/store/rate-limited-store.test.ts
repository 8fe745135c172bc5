import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClosedError, InvalidArgumentError, MemoryStore } from '../../src/index.ts';
import { PrometheusMetrics } from '../../src/metrics/prometheus.ts';
import { RateLimitedStore, TokenBucket } from '../../src/store/rate-limited-store.ts';
import { ManualClock } from '../../src/testing.ts';
import { uniqueName } from '../support/servers.ts';
import { describeStoreConformance } from './conformance.ts';

describeStoreConformance({
  name: 'rate limited over memory',
  exactConflicts: true,
  open: async () => {
    const name = uniqueName('limited');
    return {
      store: new RateLimitedStore(new MemoryStore(name), { requestsPerSecond: 1_000_000 }),
      cleanup: async () => MemoryStore.drop(name),
    };
  },
});

const body = new Uint8Array([1]);

/** Starts `n` puts and reports how many have finished so far. */
function startPuts(store: RateLimitedStore, n: number, signal?: AbortSignal) {
  let done = 0;
  const all = Array.from({ length: n }, (_, i) =>
    store.put(`k${i}`, body, signal ? { signal } : {}).then(() => void done++),
  );
  return { done: () => done, all: Promise.allSettled(all) };
}

test('the burst goes at once, then requests are let through at requestsPerSecond', async () => {
  const clock = new ManualClock();
  const store = new RateLimitedStore(new MemoryStore(), {
    requestsPerSecond: 10,
    burst: 5,
    clock,
  });
  const puts = startPuts(store, 25);
  await clock.advance(0);
  assert.equal(puts.done(), 5, 'the burst');
  // 10 a second: one every 100 ms.
  await clock.advance(100);
  assert.equal(puts.done(), 6);
  await clock.advance(900);
  assert.equal(puts.done(), 15);
  await clock.advance(1000);
  assert.equal(puts.done(), 25);
  assert.equal(store.bucket.waiting, 0);
  assert.equal(clock.pendingTimers, 0, 'no timer left once nobody waits');
  await puts.all;
});

test('a quiet spell refills the bucket up to the burst, never beyond', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket(2, 3, clock);
  for (let i = 0; i < 3; i++) assert.equal(await bucket.take(), false);
  await clock.advance(60_000);
  const waited: boolean[] = [];
  for (let i = 0; i < 3; i++) waited.push(await bucket.take());
  assert.deepEqual(waited, [false, false, false]);
  let fourth = false;
  void bucket.take().then(() => (fourth = true));
  await clock.advance(499);
  assert.equal(fourth, false, 'the fourth waits for a new token (500 ms at 2/s)');
  await clock.advance(1);
  assert.equal(fourth, true);
});

test('waiters are served in arrival order', async () => {
  const clock = new ManualClock();
  const bucket = new TokenBucket(1, 1, clock);
  await bucket.take();
  const order: number[] = [];
  const all = [1, 2, 3].map((n) => bucket.take().then(() => order.push(n)));
  await clock.advance(3000);
  await Promise.all(all);
  assert.deepEqual(order, [1, 2, 3]);
});

test('aborting a waiting call rejects it with the reason and gives its place to the next', async () => {
  const clock = new ManualClock();
  const inner = new MemoryStore();
  const store = new RateLimitedStore(inner, { requestsPerSecond: 1, burst: 1, clock });
  await store.put('first', body);
  const controller = new AbortController();
  const aborted = store.put('aborted', body, { signal: controller.signal });
  const next = store.put('next', body);
  let nextDone = false;
  void next.then(() => (nextDone = true));
  const reason = new Error('caller gave up');
  controller.abort(reason);
  await assert.rejects(aborted, (e) => e === reason);
  await clock.advance(1000);
  assert.equal(nextDone, true, 'the token went to the next caller after one interval');
  await assert.rejects(
    inner.head('aborted'),
    { code: 'NOT_FOUND' },
    'the aborted put was never made',
  );
  // An already aborted signal never queues.
  await assert.rejects(
    store.get('first', { signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
  assert.equal(store.bucket.waiting, 0);
});

test('close rejects the calls waiting for a token and every later call', async () => {
  const clock = new ManualClock();
  const store = new RateLimitedStore(new MemoryStore(), { requestsPerSecond: 1, burst: 1, clock });
  await store.put('a', body);
  const waiting = store.put('b', body);
  await store.close();
  await assert.rejects(waiting, ClosedError);
  await assert.rejects(store.get('a'), ClosedError);
  assert.equal(clock.pendingTimers, 0);
});

test('a listing is charged one request per 1,000 objects, a batch delete one per 1,000 keys', async () => {
  const clock = new ManualClock();
  const inner = new MemoryStore();
  for (let i = 0; i < 2500; i++) await inner.put(`k/${String(i).padStart(5, '0')}`, body);
  const store = new RateLimitedStore(inner, { requestsPerSecond: 1, burst: 1, clock });
  let listed = 0;
  const listing = (async () => {
    for await (const _ of store.list('k/')) listed++;
  })();
  await clock.advance(0);
  assert.equal(listed, 1000, 'the first page');
  await clock.advance(1000);
  assert.equal(listed, 2000);
  await clock.advance(1000);
  await listing;
  assert.equal(listed, 2500);
  const keys = Array.from({ length: 2500 }, (_, i) => `k/${String(i).padStart(5, '0')}`);
  let deleted = false;
  const deleting = store.deleteMany(keys).then(() => (deleted = true));
  await clock.advance(2999);
  assert.equal(deleted, false, 'three requests: two more tokens at 1/s');
  await clock.advance(1);
  await deleting;
});

test('waits are counted in the metrics', async () => {
  const clock = new ManualClock();
  const metrics = new PrometheusMetrics({ processMetrics: false });
  const store = new RateLimitedStore(new MemoryStore(), {
    requestsPerSecond: 4,
    burst: 1,
    metrics,
    clock,
  });
  const puts = startPuts(store, 3);
  await clock.advance(500);
  await puts.all;
  const text = metrics.exposition();
  assert.match(text, /^spillway_store_throttle_wait_seconds_count 2$/m, 'two calls waited');
  assert.match(text, /^spillway_store_throttle_wait_seconds_sum 0\.75$/m, '250 ms and 500 ms');
});

test('bad options are refused with what was expected', () => {
  const inner = new MemoryStore();
  assert.throws(
    () => new RateLimitedStore(inner, { requestsPerSecond: 0 }),
    (e) =>
      e instanceof InvalidArgumentError && /requestsPerSecond must be a number > 0/.test(e.message),
  );
  assert.throws(
    () => new RateLimitedStore(inner, { requestsPerSecond: 5, burst: 0.5 }),
    /burst must be an integer >= 1/,
  );
  assert.throws(
    () => new RateLimitedStore(inner, { requestsPerSecond: 5, bursts: 2 } as never),
    /unknown option "bursts"/,
  );
});

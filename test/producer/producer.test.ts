import assert from 'node:assert/strict';
import { v1Store } from '../support/queue.ts';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';
import {
  ClosedError,
  Consumer,
  CorruptDataError,
  InMemoryMetrics,
  InvalidArgumentError,
  MemoryStore,
  Producer,
  TimeoutError,
  type Batch,
} from '../../src/index.ts';
import { FaultInjectingStore, ManualClock, RetryingStore } from '../../src/testing.ts';
import { decodeManifest } from '../../src/internal.ts';
import { deferred, settlesWithin } from '../support/deferred.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const text = (b: Batch) => b.entries.map((e) => dec.decode(e));

async function readManifest(store: MemoryStore) {
  return decodeManifest((await store.get('ingest/manifest')).body);
}

/** A store on which every call hangs forever, ignoring its signal. */
function stalledStore(): FaultInjectingStore {
  const store = new FaultInjectingStore(new MemoryStore());
  for (const op of ['get', 'head', 'put', 'list', 'delete', 'deleteMany'] as const)
    store.before(op, () => new Promise<void>(() => undefined));
  return store;
}

describe('producer', () => {
  test('entries become durable, then arrive in order with one metadata item per produce() call', async () => {
    const store = await v1Store();
    const producer = new Producer({ store, flushIntervalMs: 60_000 });
    const a = await producer.produce([enc.encode('a1'), enc.encode('a2')], enc.encode('meta-a'));
    const b = await producer.produce([enc.encode('b1')]);
    await producer.flush();
    const [ra, rb] = await Promise.all([a.durable, b.durable]);
    assert.equal(ra.sequence, rb.sequence);
    assert.match(ra.location, /^ingest\/[0-9A-HJKMNP-TV-Z]{26}\.batch$/);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    const batch = (await consumer.next()) as Batch;
    assert.deepEqual(text(batch), ['a1', 'a2', 'b1']);
    assert.deepEqual(
      batch.metadata.map((m) => [m.startIndex, dec.decode(m.payload)]),
      [
        [0, 'meta-a'],
        [2, ''],
      ],
    );
    assert.equal(await consumer.next(), undefined);
    await consumer.ack(batch.sequence);
    await consumer.close();
    assert.equal((await readManifest(store)).entries.length, 0);
    await producer.close();
  });

  test('metrics count flushed entries and their bytes (entries and metadata, no overhead)', async () => {
    const metrics = new InMemoryMetrics();
    const producer = new Producer({ store: await v1Store(), flushIntervalMs: 0, metrics });
    await (
      await producer.produce([enc.encode('abc'), enc.encode('de')], enc.encode('m'))
    ).durable;
    await (
      await producer.produce([new Uint8Array(10)])
    ).durable;
    await producer.close();
    assert.equal(metrics.counter('buffer.entries_flushed'), 3);
    assert.equal(metrics.counter('buffer.bytes_flushed'), 3 + 2 + 1 + 10);
    assert.equal(metrics.counter('buffer.batches_flushed'), 2);
  });

  test('a flush starts when flushSizeBytes is reached, with no timer and no flush()', async () => {
    const store = await v1Store();
    // A manual clock never fires the 60 s timer by itself: only the size trigger can flush.
    const clock = new ManualClock();
    const producer = new Producer({ store, clock, flushIntervalMs: 60_000, flushSizeBytes: 1000 });
    const small = await producer.produce([new Uint8Array(10)]);
    assert.equal(await settlesWithin(small.durable), false, 'below the size, nothing flushes');
    const big = await producer.produce([new Uint8Array(2000)]);
    assert.equal(await settlesWithin(big.durable), true, 'the size trigger flushed');
    assert.equal((await small.durable).sequence, (await big.durable).sequence);
    await producer.close();
  });

  test('the flush timer runs on the injected clock: nothing flushes before flushIntervalMs', async () => {
    const store = await v1Store();
    const clock = new ManualClock();
    const producer = new Producer({ store, clock, flushIntervalMs: 500 });
    const h = await producer.produce([enc.encode('x')]);
    await clock.advance(499);
    assert.equal(await settlesWithin(h.durable), false);
    await clock.advance(1);
    assert.equal(await settlesWithin(h.durable), true);
    await producer.close();
  });

  test('group commit (flushIntervalMs 0) flushes at once and grows batches while a flush runs', async () => {
    const inner = await v1Store();
    const store = new FaultInjectingStore(inner).setLatency('put', 5);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const handles = [];
    for (let i = 0; i < 50; i++)
      handles.push((await producer.produce([enc.encode(String(i))])).durable);
    const results = await Promise.all(handles);
    const batches = new Set(results.map((r) => r.sequence)).size;
    assert.ok(batches < 50, `expected batching under load, got ${batches} batches for 50 calls`);
    await producer.close();
  });

  test('uploaded batches are coalesced into one conditional manifest write', async () => {
    const inner = await v1Store();
    const store = new FaultInjectingStore(inner);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let held = false;
    store.before('put', async (call) => {
      if (call.key === 'ingest/manifest' && !held) {
        held = true;
        await gate;
      }
    });
    const metrics = new InMemoryMetrics();
    const producer = new Producer({ store, flushIntervalMs: 60_000, metrics });
    const first = await producer.produce([enc.encode('first')]);
    const flushed = producer.flush();
    while (!held) await new Promise((r) => setImmediate(r));
    // While the first append is held, three more batches are uploaded.
    const more = [];
    for (let i = 0; i < 3; i++) {
      more.push((await producer.produce([enc.encode(`m${i}`)])).durable);
      void producer.flush();
    }
    while (store.stats.calls.put < 5) await new Promise((r) => setImmediate(r));
    release();
    await flushed;
    await first.durable;
    const seqs = await Promise.all(more);
    assert.deepEqual(
      seqs.map((s) => s.sequence),
      [1, 2, 3],
    );
    assert.equal(metrics.counter('buffer.manifest_writes', { role: 'producer' }), 2);
    await producer.close();
  });

  test('a batch upload and a manifest write both applied but reported lost are settled by the store: durable, one entry', async () => {
    const inner = await v1Store();
    const faulty = new FaultInjectingStore(inner);
    // The injector stands for the network below a store's retries: the store settles.
    const store = new RetryingStore(faulty);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    faulty.applyThenFailNext('put', 2); // the batch upload, then the manifest write
    const r = await (await producer.produce([enc.encode('once')])).durable;
    assert.equal(faulty.stats.appliedThenFailed, 2);
    const m = await readManifest(inner);
    assert.deepEqual(
      m.entries.map((e) => e.location),
      [r.location],
    );
    await producer.close();
  });

  test('a manifest write applied but reported lost is not appended twice', async () => {
    const inner = await v1Store();
    const store = new FaultInjectingStore(inner);
    store.before('put', (call) => {
      if (call.key === 'ingest/manifest' && store.stats.appliedThenFailed === 0)
        store.applyThenFailNext('put');
    });
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const r = await (await producer.produce([enc.encode('x')])).durable;
    assert.equal(store.stats.appliedThenFailed, 1);
    const m = await readManifest(inner);
    assert.deepEqual(
      m.entries.map((e) => e.location),
      [r.location],
    );
    await producer.close();
  });

  test('durable rejects with the cause when the batch upload fails, and later produce() calls still work', async () => {
    const store = new FaultInjectingStore(await v1Store());
    const producer = new Producer({ store, flushIntervalMs: 0 });
    store.failNext('put', 1, () => new Error('disk on fire'));
    const bad = await producer.produce([enc.encode('lost')]);
    await assert.rejects(bad.durable, /disk on fire/);
    const good = await producer.produce([enc.encode('kept')]);
    await good.durable;
    await assert.rejects(producer.close(), /disk on fire/);
  });

  test('produce() waits for room under maxBufferedInputs while the store stalls, and refuses a call that can never fit', async () => {
    const store = new FaultInjectingStore(await v1Store());
    let release!: () => void;
    const stall = new Promise<void>((r) => (release = r));
    store.before('put', () => stall);
    const producer = new Producer({
      store,
      flushIntervalMs: 0,
      maxBufferedInputs: 2,
      maxBufferedBytes: 10_000,
    });
    await producer.produce([enc.encode('1')]);
    await producer.produce([enc.encode('2')]);
    let third = false;
    const waiting = producer.produce([enc.encode('3')]).then((h) => {
      third = true;
      return h;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(third, false, 'the third call must wait for room');
    await assert.rejects(producer.produce([new Uint8Array(20_000)]), InvalidArgumentError);
    release();
    await (
      await waiting
    ).durable;
    assert.equal(third, true);
    await producer.close();
  });

  test('a call admitted from the wait for room keeps its place: a later call that finds room does not overtake it', async () => {
    const inner = await v1Store();
    const store = new FaultInjectingStore(inner);
    const stall = deferred();
    store.before('put', () => stall.promise);
    const producer = new Producer({
      store,
      flushIntervalMs: 60_000,
      maxBufferedBytes: 10_000,
      maxConcurrentUploads: 1,
    });
    const first = await producer.produce([new Uint8Array(5000)]);
    void producer.flush().catch(() => undefined); // its batch is held by the stall
    const a = producer.produce([enc.encode('A'.repeat(5000))]); // no room until the first is durable
    // Called the moment the first batch is durable, which is when A is admitted: B is small
    // and finds room at once, before A's caller has even resumed.
    const b = first.durable.then(() => producer.produce([enc.encode('B')]));
    stall.resolve();
    await Promise.all([a, b]);
    await producer.close();
    const consumer = await Consumer.open({ store: inner, gcIntervalMs: 0 });
    const order: string[] = [];
    for (let batch = await consumer.next(); batch; batch = await consumer.next())
      order.push(...text(batch).map((t) => t.slice(0, 1)));
    await consumer.close();
    assert.deepEqual(order, ['\u0000', 'A', 'B']);
  });

  test('close() is idempotent, flushes everything, and produce() after it is refused', async () => {
    const store = await v1Store();
    const producer = new Producer({ store, flushIntervalMs: 60_000 });
    const h = await producer.produce([enc.encode('x')]);
    await Promise.all([producer.close(), producer.close()]);
    await h.durable;
    await assert.rejects(producer.produce([enc.encode('y')]), ClosedError);
    assert.throws(() => new Producer({ store, flushIntervalMs: -1 }), InvalidArgumentError);
    await assert.rejects(producer.produce('nope' as unknown as Uint8Array[]), ClosedError);
  });

  test('the producer refuses to append to a manifest it cannot parse and never overwrites it', async () => {
    const store = await v1Store();
    const garbage = enc.encode('this is not a manifest at all');
    await store.put('ingest/manifest', garbage);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const h = await producer.produce([enc.encode('x')]);
    await assert.rejects(h.durable, CorruptDataError);
    assert.deepEqual((await store.get('ingest/manifest')).body, garbage);
    await producer.close().catch(() => undefined);
  });
});

describe('producer lifecycle', () => {
  test('produce() takes { metadata, signal }; an aborted wait for room rejects with the reason and frees its place', async () => {
    const store = new FaultInjectingStore(await v1Store());
    const stall = deferred();
    store.before('put', () => stall.promise);
    const producer = new Producer({ store, flushIntervalMs: 0, maxBufferedInputs: 1 });
    const first = await producer.produce([enc.encode('1')], { metadata: enc.encode('m') });
    const controller = new AbortController();
    const waiting = producer.produce([enc.encode('2')], { signal: controller.signal });
    controller.abort(new Error('gave up'));
    await assert.rejects(waiting, /gave up/);
    stall.resolve();
    assert.equal((await first.durable).sequence, 0);
    const third = await producer.produce([enc.encode('3')]);
    await third.durable;
    await producer.close();
  });

  test('close({ timeoutMs }) on a stalled store rejects with TimeoutError, and so does every pending durable', async () => {
    const clock = new ManualClock();
    const producer = new Producer({ store: stalledStore(), clock, flushIntervalMs: 0 });
    const h = await producer.produce([enc.encode('never')]);
    const closing = producer.close({ timeoutMs: 5000 });
    closing.catch(() => undefined);
    assert.equal(await settlesWithin(closing), false, 'close waits for the stalled upload');
    await clock.advance(5000);
    await assert.rejects(closing, TimeoutError);
    await assert.rejects(h.durable, TimeoutError);
    await assert.rejects(producer.produce([enc.encode('late')]), ClosedError);
  });

  test('destroy() on a stalled store returns at once and rejects everything pending with its error', async () => {
    const producer = new Producer({
      store: stalledStore(),
      flushIntervalMs: 0,
      maxBufferedInputs: 1,
    });
    const h = await producer.produce([enc.encode('a')]);
    const waiting = producer.produce([enc.encode('b')]);
    waiting.catch(() => undefined);
    const boom = new Error('shutting down');
    assert.equal(await settlesWithin(producer.destroy(boom)), true);
    await assert.rejects(h.durable, /shutting down/);
    await assert.rejects(waiting, /shutting down/);
    await producer.destroy();
    await assert.rejects(producer.close(), /shutting down/);
  });

  test('nothing keeps the process alive after destroy() or a timed-out close() on a stalled store', async () => {
    for (const how of ['destroy', 'close']) {
      const script = `
        import { MemoryStore, Producer } from './src/index.ts';
        import { FaultInjectingStore } from './src/testing.ts';
        const store = new FaultInjectingStore(new MemoryStore());
        for (const op of ['get', 'head', 'put', 'list', 'delete', 'deleteMany'])
          store.before(op, (call) => new Promise((_, reject) => call.signal?.addEventListener('abort', () => reject(call.signal.reason))));
        const producer = new Producer({ store, flushIntervalMs: 60000 });
        const h = await producer.produce([new Uint8Array(8)]);
        h.durable.catch(() => {});
        if ('${how}' === 'destroy') await producer.destroy();
        else await producer.close({ timeoutMs: 50 }).catch(() => {});
        console.log('done');
      `;
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script],
        {
          cwd: new URL('../..', import.meta.url).pathname,
        },
      );
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      assert.equal(code, 0, how);
      assert.equal(out.trim(), 'done', how);
    }
  });
});

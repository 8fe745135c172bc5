import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ClosedError,
  Consumer,
  CorruptDataError,
  FaultInjectingStore,
  FencedError,
  GarbageCollector,
  InMemoryMetrics,
  InvalidArgumentError,
  ManualClock,
  MemoryStore,
  Producer,
  type Batch,
} from '../src/index.ts';
import { decodeManifest, encodeManifest } from '../src/format/manifest.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const text = (b: Batch) => b.entries.map((e) => dec.decode(e));

async function readManifest(store: MemoryStore) {
  return decodeManifest((await store.get('ingest/manifest')).body);
}

describe('producer and consumer', () => {
  test('entries become durable, then arrive in order with one metadata item per produce() call', async () => {
    const store = new MemoryStore();
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
    const producer = new Producer({ store: new MemoryStore(), flushIntervalMs: 0, metrics });
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

  test('a flush starts when flushSizeBytes is reached', async () => {
    const store = new MemoryStore();
    const producer = new Producer({ store, flushIntervalMs: 60_000, flushSizeBytes: 100 });
    const h = await producer.produce([new Uint8Array(200)]);
    await h.durable; // no timer or flush() needed
    await producer.close();
  });

  test('group commit (flushIntervalMs 0) flushes at once and grows batches while a flush runs', async () => {
    const inner = new MemoryStore();
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
    const inner = new MemoryStore();
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

  test('a batch upload and a manifest write both applied but reported lost are settled: durable, one entry', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    store.applyThenFailNext('put', 2); // the batch upload, then the manifest write
    const r = await (await producer.produce([enc.encode('once')])).durable;
    assert.equal(store.stats.appliedThenFailed, 2);
    const m = await readManifest(inner);
    assert.deepEqual(
      m.entries.map((e) => e.location),
      [r.location],
    );
    await producer.close();
  });

  test('a manifest write applied but reported lost is not appended twice', async () => {
    const inner = new MemoryStore();
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
    const store = new FaultInjectingStore(new MemoryStore());
    const producer = new Producer({ store, flushIntervalMs: 0 });
    store.failNext('put', 1, () => new Error('disk on fire'));
    const bad = await producer.produce([enc.encode('lost')]);
    await assert.rejects(bad.durable, /disk on fire/);
    const good = await producer.produce([enc.encode('kept')]);
    await good.durable;
    await assert.rejects(producer.close(), /disk on fire/);
  });

  test('produce() waits for room under maxBufferedInputs while the store stalls, and refuses a call that can never fit', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
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

  test('close() is idempotent, flushes everything, and produce() after it is refused', async () => {
    const store = new MemoryStore();
    const producer = new Producer({ store, flushIntervalMs: 60_000 });
    const h = await producer.produce([enc.encode('x')]);
    await Promise.all([producer.close(), producer.close()]);
    await h.durable;
    await assert.rejects(producer.produce([enc.encode('y')]), ClosedError);
    assert.throws(() => new Producer({ store, flushIntervalMs: -1 }), InvalidArgumentError);
    await assert.rejects(producer.produce('nope' as unknown as Uint8Array[]), ClosedError);
  });

  test('the producer refuses to append to a manifest it cannot parse and never overwrites it', async () => {
    const store = new MemoryStore();
    const garbage = enc.encode('this is not a manifest at all');
    await store.put('ingest/manifest', garbage);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const h = await producer.produce([enc.encode('x')]);
    await assert.rejects(h.durable, CorruptDataError);
    assert.deepEqual((await store.get('ingest/manifest')).body, garbage);
    await producer.close().catch(() => undefined);
  });
});

describe('consumer', () => {
  async function queueWith(store: MemoryStore, n: number) {
    const producer = new Producer({ store, flushIntervalMs: 0 });
    for (let i = 0; i < n; i++) await (await producer.produce([enc.encode(`e${i}`)])).durable;
    await producer.close();
  }

  test('acks must be in order', async () => {
    const store = new MemoryStore();
    await queueWith(store, 3);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    const b0 = (await consumer.next()) as Batch;
    const b1 = (await consumer.next()) as Batch;
    await assert.rejects(consumer.ack(b1.sequence), InvalidArgumentError);
    await consumer.ack(b0.sequence);
    await consumer.ack(b1.sequence);
    await assert.rejects(consumer.ack(99), InvalidArgumentError);
    await Promise.all([consumer.close(), consumer.close()]);
    await assert.rejects(consumer.next(), ClosedError);
    await assert.rejects(consumer.flush(), ClosedError);
    assert.deepEqual(
      (await readManifest(store)).entries.map((e) => e.sequence),
      [2],
      'close applied the pending acks',
    );
  });

  test('acks are applied every ackBatchSize acks as one dequeue, and flush() applies them now', async () => {
    const store = new MemoryStore();
    await queueWith(store, 5);
    const metrics = new InMemoryMetrics();
    const consumer = await Consumer.open({
      store,
      gcIntervalMs: 0,
      ackBatchSize: 2,
      ackIntervalMs: 60_000,
      metrics,
    });
    for (let i = 0; i < 3; i++) await consumer.ack(((await consumer.next()) as Batch).sequence);
    assert.equal((await readManifest(store)).entries.length, 3, 'two acks applied, one pending');
    await consumer.flush();
    assert.equal((await readManifest(store)).entries.length, 2);
    assert.equal(metrics.counter('buffer.manifest_writes', { role: 'consumer' }), 3); // fence + 2 dequeues
    await consumer.close();
  });

  test('a newer consumer fences the older: its reads, acks and flushes fail, and the newer resumes', async () => {
    const store = new MemoryStore();
    await queueWith(store, 3);
    const first = await Consumer.open({ store, gcIntervalMs: 0, ackIntervalMs: 60_000 });
    const b0 = (await first.next()) as Batch;
    await first.ack(b0.sequence);
    await first.flush();
    const b1 = (await first.next()) as Batch;
    const second = await Consumer.open({
      store,
      gcIntervalMs: 0,
      lastAckedSequence: first.lastAckedSequence,
    });
    await assert.rejects(
      first.ack(b1.sequence).then(() => first.flush()),
      FencedError,
    );
    await assert.rejects(first.next(), FencedError);
    await assert.rejects(first.flush(), FencedError);
    const again = (await second.next()) as Batch;
    assert.equal(
      again.sequence,
      b1.sequence,
      'the un-acked batch is delivered again to the new consumer',
    );
    await second.ack(again.sequence);
    await second.close();
    await first.close();
    assert.equal((await readManifest(store)).epoch, 2);
  });

  test('lastAckedSequence skips what was already processed', async () => {
    const store = new MemoryStore();
    await queueWith(store, 4);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0, lastAckedSequence: 1 });
    assert.equal(((await consumer.next()) as Batch).sequence, 2);
    await consumer.close();
    assert.deepEqual(
      (await readManifest(store)).entries.map((e) => e.sequence),
      [2, 3],
    );
  });

  test('nextDescriptors, concurrent fetch and ackThrough advance in one write', async () => {
    const store = new MemoryStore();
    await queueWith(store, 6);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    const ds = await consumer.nextDescriptors(4);
    assert.deepEqual(
      ds.map((d) => d.sequence),
      [0, 1, 2, 3],
    );
    assert.ok(ds.every((d) => typeof d.sizeBytes === 'number' && typeof d.crc32c === 'number'));
    const batches = await Promise.all(ds.map((d) => consumer.fetch(d)));
    assert.deepEqual(
      batches.map((b) => text(b)[0]),
      ['e0', 'e1', 'e2', 'e3'],
    );
    await consumer.ackThrough(3);
    assert.deepEqual(
      (await readManifest(store)).entries.map((e) => e.sequence),
      [4, 5],
    );
    await assert.rejects(consumer.ackThrough(5), InvalidArgumentError);
    await consumer.close();
  });

  test('a missing batch object is an error naming its location, and the consumer does not advance', async () => {
    const store = new MemoryStore();
    await queueWith(store, 2);
    const m = await readManifest(store);
    const missing = m.entries[0]!.location;
    await store.delete(missing);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    for (let i = 0; i < 2; i++) {
      await assert.rejects(
        consumer.next(),
        (e: unknown) => e instanceof CorruptDataError && e.message.includes(missing),
      );
    }
    await consumer.close();
    assert.equal((await readManifest(store)).entries.length, 2);
  });

  test('a batch whose checksum does not match its manifest entry is refused', async () => {
    const store = new MemoryStore();
    await queueWith(store, 1);
    const loc = (await readManifest(store)).entries[0]!.location;
    const body = (await store.get(loc)).body;
    body[0] = (body[0] as number) ^ 0xff;
    await store.put(loc, body);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    await assert.rejects(
      consumer.next(),
      (e: unknown) =>
        e instanceof CorruptDataError && /CRC32C/.test(e.message) && e.location === loc,
    );
    await consumer.close();
  });

  test('entries without a trailer (other writers) are accepted', async () => {
    const store = new MemoryStore();
    await queueWith(store, 1);
    const m = await readManifest(store);
    m.entries[0]!.extension = new Uint8Array();
    await store.put('ingest/manifest', encodeManifest(m));
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    assert.deepEqual(text((await consumer.next()) as Batch), ['e0']);
    await consumer.close();
  });

  test('batches() waits for new data until aborted', async () => {
    const store = new MemoryStore();
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    const controller = new AbortController();
    const seen: string[] = [];
    const reading = (async () => {
      for await (const b of consumer.batches({ signal: controller.signal, pollIntervalMs: 5 })) {
        seen.push(...text(b));
        await consumer.ack(b.sequence);
        if (seen.length === 2) controller.abort();
      }
    })();
    await queueWith(store, 2);
    await reading;
    assert.deepEqual(seen, ['e0', 'e1']);
    await consumer.close();
  });
});

describe('garbage collector', () => {
  test('deletes only unreferenced batches older than the oldest entry and the grace period; dry run deletes nothing', async () => {
    const clock = new ManualClock(Date.now());
    const store = new MemoryStore(undefined, { clock });
    const producer = new Producer({ store, flushIntervalMs: 0, clock });
    await (
      await producer.produce([enc.encode('consumed')])
    ).durable;
    clock.advance(1000);
    await (
      await producer.produce([enc.encode('pending')])
    ).durable;
    await producer.close();
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    await consumer.ack(((await consumer.next()) as Batch).sequence);
    await consumer.close();
    await store.put('ingest/not-a-batch.txt', enc.encode('keep me'));
    const objects = async () => {
      const keys = [];
      for await (const o of store.list('ingest/')) keys.push(o.key);
      return keys;
    };
    assert.equal((await objects()).length, 4);
    const early = await new GarbageCollector({ store, gcGracePeriodMs: 60_000, clock }).run();
    assert.deepEqual(early.deleted, [], 'inside the grace period');
    // The collection wrote its clock probe next to the batches.
    assert.equal((await objects()).length, 5);
    await store.delete('ingest/collector.clock');
    clock.advance(120_000);
    const dry = await new GarbageCollector({ store, gcGracePeriodMs: 60_000, clock }).run({
      dryRun: true,
    });
    assert.equal(dry.deleted.length, 1);
    assert.equal((await objects()).length, 5, 'nothing deleted; the probe was written');
    const real = await new GarbageCollector({ store, gcGracePeriodMs: 60_000, clock }).run();
    assert.deepEqual(real.deleted, dry.deleted);
    assert.equal(
      (await objects()).length,
      4,
      'the pending batch, the manifest, the foreign file and the probe remain',
    );
  });

  test('the hazard: a grace period shorter than the upload-to-append gap deletes a batch that is then appended', async () => {
    const clock = new ManualClock(Date.now());
    const inner = new MemoryStore(undefined, { clock });
    const store = new FaultInjectingStore(inner);
    // Hold the manifest append after the batch is uploaded, as a slow producer would.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let uploaded!: () => void;
    const atGate = new Promise<void>((r) => (uploaded = r));
    store.before('get', async (call) => {
      if (call.key === 'ingest/manifest' && store.stats.calls.put === 1) {
        uploaded();
        await gate;
      }
    });
    // The queue exists (a collector refuses to run without its manifest).
    await (await Consumer.open({ store: inner, gcIntervalMs: 0 })).close();
    const producer = new Producer({ store, flushIntervalMs: 0, clock });
    const h = await producer.produce([enc.encode('late')]);
    await atGate;
    clock.advance(5_000);
    const safe = await new GarbageCollector({ store: inner, gcGracePeriodMs: 60_000, clock }).run();
    assert.deepEqual(safe.deleted, [], 'a grace period longer than the gap protects the batch');
    const unsafe = await new GarbageCollector({ store: inner, gcGracePeriodMs: 0, clock }).run();
    assert.equal(unsafe.deleted.length, 1, 'grace 0 deletes the unreferenced batch');
    release();
    await h.durable;
    await producer.close();
    const consumer = await Consumer.open({ store: inner, gcIntervalMs: 0 });
    await assert.rejects(consumer.next(), CorruptDataError);
    await consumer.close();
  });
});

/**
 * The garbage collector's safety rules: it refuses to run without the
 * manifest that references the batches, and clock skew between producer,
 * collector and store hosts never lets it delete a batch between its upload
 * and its append.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  ClosedError,
  Consumer,
  CorruptDataError,
  GarbageCollector,
  openStore,
  Producer,
  QueueNotFoundError,
  systemClock,
  type Batch,
  type ObjectStore,
} from '../src/index.ts';
import { FaultInjectingStore, ManualClock, skewedClock } from '../src/testing.ts';
import { holdAppend, makeV1, queueWith, v1Store } from './support/queue.ts';

const enc = new TextEncoder();
const MINUTE = 60_000;

async function batchKeys(store: ObjectStore): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list('ingest/')) if (o.key.endsWith('.batch')) keys.push(o.key);
  return keys;
}

describe('garbage collector', () => {
  test('refuses to run when the manifest is missing (a typo in its path), deleting nothing', async () => {
    const store = await v1Store();
    const producer = new Producer({ store, flushIntervalMs: 0 });
    await (
      await producer.produce([enc.encode('a')])
    ).durable;
    await (
      await producer.produce([enc.encode('b')])
    ).durable;
    await producer.close();
    const before = await batchKeys(store);
    assert.equal(before.length, 2);
    for (const dryRun of [true, false]) {
      const gc = new GarbageCollector({
        store,
        manifestPath: 'ingest/manifset',
        gcGracePeriodMs: 0,
      });
      await assert.rejects(gc.run({ dryRun }), (e: unknown) => {
        assert.ok(e instanceof QueueNotFoundError);
        assert.equal(e.code, 'QUEUE_NOT_FOUND');
        assert.match(e.message, /"ingest\/manifset"/);
        return true;
      });
    }
    assert.deepEqual(await batchKeys(store), before, 'no batch object was deleted');
  });

  test('a producer clock 15 minutes behind does not get its in-flight batch deleted (default grace)', async () => {
    const inner = await v1Store();
    const behind = skewedClock(-15 * MINUTE);
    const { durable, release, producer } = await holdAppend(inner, { clock: behind });
    const gc = new GarbageCollector({ store: inner });
    // An empty queue exists once a consumer opened it; give the collector its manifest.
    await (await Consumer.open({ store: inner, gcIntervalMs: 0 })).close();
    const result = await gc.run();
    assert.deepEqual(result.deleted, [], 'the batch is unreferenced but was uploaded just now');
    release();
    await durable;
    await producer.close();
    const consumer = await Consumer.open({ store: inner, gcIntervalMs: 0 });
    const batch = await consumer.next();
    assert.equal(new TextDecoder().decode(batch?.entries[0]), 'in flight');
    await consumer.close();
  });

  test('a collector clock 15 minutes ahead does not delete an in-flight batch either', async () => {
    const inner = await v1Store();
    await (await Consumer.open({ store: inner, gcIntervalMs: 0 })).close();
    const { durable, release, producer } = await holdAppend(inner, { clock: systemClock });
    const ahead = skewedClock(15 * MINUTE);
    const result = await new GarbageCollector({ store: inner, clock: ahead }).run();
    assert.deepEqual(result.deleted, []);
    release();
    await durable;
    await producer.close();
    assert.equal((await batchKeys(inner)).length, 1);
  });

  test("the store's clock is read before the manifest, so time passing during the collection does not count", async () => {
    const clock = new ManualClock(Date.now());
    const inner = await v1Store({ clock });
    await (await Consumer.open({ store: inner, gcIntervalMs: 0 })).close();
    const { durable, release, producer } = await holdAppend(inner, { clock: clock });
    // The collector reads the manifest (no entry for the held batch yet); then a
    // long pause: if the collector took the store's time only now, the batch
    // would look 11 minutes old by both clocks.
    const gcStore = new FaultInjectingStore(inner);
    gcStore.after('get', async (call) => {
      if (call.key === 'ingest/manifest') await clock.advance(11 * MINUTE);
    });
    const result = await new GarbageCollector({ store: gcStore, clock }).run();
    assert.deepEqual(result.deleted, []);
    release();
    await durable;
    await producer.close();
    assert.equal((await batchKeys(inner)).length, 1);
  });

  test('orphans are still collected once old by both clocks', async () => {
    const clock = new ManualClock(Date.now());
    const store = await v1Store({ clock });
    await queueWith(store, 1);
    await store.put('ingest/01ARZ3NDEKTSV4RRFFQ69G5FAV.batch', enc.encode('orphan'));
    const young = await new GarbageCollector({ store, clock }).run();
    assert.deepEqual(young.deleted, [], 'the object is fresh by the store clock');
    await clock.advance(11 * MINUTE);
    const old = await new GarbageCollector({ store, clock }).run();
    assert.deepEqual(old.deleted, ['ingest/01ARZ3NDEKTSV4RRFFQ69G5FAV.batch']);
  });

  test("an object stamped in the future (a host that once ran fast) does not move the store's clock for later collections", async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'spillway-gc-future-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const store = openStore(`file://${dir}`);
    t.after(() => store.close());
    await makeV1(store);
    await queueWith(store, 1);
    // What an earlier collection on a fast host left behind: a probe dated a day ahead.
    const tomorrow = new Date(Date.now() + 24 * 60 * MINUTE);
    for (const name of [
      'collector.clock',
      'collector.clock.00000000-0000-0000-0000-000000000000',
    ]) {
      const stale = join(dir, 'ingest', name);
      await writeFile(stale, 'old');
      await utimes(stale, tomorrow, tomorrow);
    }
    const { durable, release, producer } = await holdAppend(store, {
      clock: skewedClock(-60 * MINUTE),
      entry: 'late',
    });
    const result = await new GarbageCollector({ store }).run();
    assert.deepEqual(result.deleted, []);
    release();
    await durable;
    await producer.close();
    assert.equal((await batchKeys(store)).length, 2);
  });

  test('a skewed producer, four lanes, a draining consumer and a collection every 20 ms on file://: nothing lost', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'spillway-gc-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const store = openStore(`file://${dir}`);
    await makeV1(store);
    const behind = skewedClock(-15 * MINUTE);
    const producer = new Producer({ store, flushIntervalMs: 0, clock: behind });
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    const ahead = skewedClock(15 * MINUTE);
    const gc = new GarbageCollector({ store, clock: ahead });
    let producing = true;
    let collections = 0;
    const collector = (async () => {
      while (producing) {
        await gc.run();
        collections++;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const lanes = Array.from({ length: 4 }, async (_, lane) => {
      for (let i = 0; i < 250; i++) {
        await (
          await producer.produce([enc.encode(`${lane}:${i}`)])
        ).durable;
      }
    });
    const received: string[] = [];
    const drain = (async () => {
      while (producing || received.length < 1000) {
        const batch = await consumer.next();
        if (!batch) {
          await new Promise((r) => setImmediate(r));
          continue;
        }
        for (const e of batch.entries) received.push(new TextDecoder().decode(e));
        // Dequeue at once, so the manifest is often empty, as with a consumer that keeps up.
        await consumer.ackThrough(batch.sequence);
      }
    })();
    await Promise.all(lanes);
    producing = false;
    await collector;
    await drain;
    await producer.close();
    await consumer.close();
    await store.close();
    assert.ok(collections > 0);
    assert.equal(received.length, 1000);
    for (let lane = 0; lane < 4; lane++) {
      const mine = received.filter((r) => r.startsWith(`${lane}:`)).map((r) => Number(r.slice(2)));
      assert.deepEqual(
        mine,
        Array.from({ length: 250 }, (_, i) => i),
        `lane ${lane} in order`,
      );
    }
  });
  test('deletes only unreferenced batches older than the oldest entry and the grace period; dry run deletes nothing', async () => {
    const clock = new ManualClock(Date.now());
    const store = await v1Store({ clock });
    const producer = new Producer({ store, flushIntervalMs: 0, clock });
    await (
      await producer.produce([enc.encode('consumed')])
    ).durable;
    await clock.advance(1000);
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
    assert.equal((await objects()).length, 5);
    const early = await new GarbageCollector({ store, gcGracePeriodMs: 60_000, clock }).run();
    assert.deepEqual(early.deleted, [], 'inside the grace period');
    // The producer's marker naming the manifest sits next to the batches; the
    // collection's clock probe came and went.
    assert.deepEqual(
      (await objects()).filter((k) => !k.endsWith('.batch')),
      ['ingest/manifest', 'ingest/not-a-batch.txt', 'ingest/queue.manifest'],
    );
    await clock.advance(120_000);
    const dry = await new GarbageCollector({ store, gcGracePeriodMs: 60_000, clock }).run({
      dryRun: true,
    });
    assert.equal(dry.deleted.length, 1);
    assert.equal((await objects()).length, 5, 'nothing deleted');
    const real = await new GarbageCollector({ store, gcGracePeriodMs: 60_000, clock }).run();
    assert.deepEqual(real.deleted, dry.deleted);
    assert.equal(
      (await objects()).length,
      4,
      'the pending batch, the manifest, the foreign file and the marker remain',
    );
  });

  test('the hazard: a grace period shorter than the upload-to-append gap deletes a batch that is then appended', async () => {
    const clock = new ManualClock(Date.now());
    const inner = await v1Store({ clock });
    const store = new FaultInjectingStore(inner);
    // Hold the manifest append after the batch is uploaded, as a slow producer would.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let uploaded!: () => void;
    const atGate = new Promise<void>((r) => (uploaded = r));
    let batchUploaded = false;
    store.after('put', (call) => {
      if (call.key.endsWith('.batch')) batchUploaded = true;
    });
    store.before('get', async (call) => {
      if (call.key === 'ingest/manifest' && batchUploaded) {
        batchUploaded = false;
        uploaded();
        await gate;
      }
    });
    // The queue exists and has had an entry, consumed since (a collector refuses to run
    // without its manifest, and collects nothing for one that never had an entry).
    await queueWith(inner, 1);
    const first = await Consumer.open({ store: inner, gcIntervalMs: 0 });
    await first.ackThrough(((await first.next()) as Batch).sequence);
    await first.close();
    const producer = new Producer({ store, flushIntervalMs: 0, clock });
    const h = await producer.produce([enc.encode('late')]);
    await atGate;
    await clock.advance(5_000);
    const safe = await new GarbageCollector({ store: inner, gcGracePeriodMs: 60_000, clock }).run();
    assert.deepEqual(safe.deleted, [], 'a grace period longer than the gap protects the batch');
    const unsafe = await new GarbageCollector({ store: inner, gcGracePeriodMs: 0, clock }).run();
    assert.equal(
      unsafe.deleted.length,
      2,
      'grace 0 deletes the consumed batch and the one in flight',
    );
    release();
    await h.durable;
    await producer.close();
    const consumer = await Consumer.open({ store: inner, gcIntervalMs: 0 });
    await assert.rejects(consumer.next(), CorruptDataError);
    await consumer.close();
  });

  test('close() releases a store the collector opened from a URL, and run() after it is refused', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spillway-gc-close-'));
    try {
      const gc = new GarbageCollector({ store: `file://${dir}` });
      await gc.close();
      await gc.close();
      await assert.rejects(gc.run(), ClosedError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/**
 * The garbage collector's safety rules: it refuses to run without the
 * manifest that references the batches, and clock skew between producer,
 * collector and store hosts never lets it delete a batch between its upload
 * and its append.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  Consumer,
  FaultInjectingStore,
  GarbageCollector,
  ManualClock,
  MemoryStore,
  openStore,
  Producer,
  QueueNotFoundError,
  type Clock,
} from '../src/index.ts';

const enc = new TextEncoder();
const MINUTE = 60_000;

async function batchKeys(store: MemoryStore): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list('ingest/')) if (o.key.endsWith('.batch')) keys.push(o.key);
  return keys;
}

/**
 * Uploads one batch with `producerClock` and holds its manifest append until
 * `release` is called; resolves once the batch object is stored.
 */
async function heldAppend(
  inner: MemoryStore,
  producerClock: Clock,
): Promise<{ durable: Promise<unknown>; release: () => void; producer: Producer }> {
  const store = new FaultInjectingStore(inner);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let uploaded!: () => void;
  const atGate = new Promise<void>((r) => (uploaded = r));
  store.before('get', async (call) => {
    if (call.key === 'ingest/manifest') {
      uploaded();
      await gate;
    }
  });
  const producer = new Producer({ store, flushIntervalMs: 0, clock: producerClock });
  const { durable } = await producer.produce([enc.encode('in flight')]);
  await atGate;
  return { durable, release, producer };
}

describe('garbage collector', () => {
  test('refuses to run when the manifest is missing (a typo in its path), deleting nothing', async () => {
    const store = new MemoryStore();
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
        assert.match(e.message, /no manifest at "ingest\/manifset"/);
        return true;
      });
    }
    assert.deepEqual(await batchKeys(store), before, 'no batch object was deleted');
  });

  test('a producer clock 15 minutes behind does not get its in-flight batch deleted (default grace)', async () => {
    const inner = new MemoryStore();
    const behind: Clock = { now: () => Date.now() - 15 * MINUTE };
    const { durable, release, producer } = await heldAppend(inner, behind);
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
    const inner = new MemoryStore();
    await (await Consumer.open({ store: inner, gcIntervalMs: 0 })).close();
    const { durable, release, producer } = await heldAppend(inner, { now: () => Date.now() });
    const ahead: Clock = { now: () => Date.now() + 15 * MINUTE };
    const result = await new GarbageCollector({ store: inner, clock: ahead }).run();
    assert.deepEqual(result.deleted, []);
    release();
    await durable;
    await producer.close();
    assert.equal((await batchKeys(inner)).length, 1);
  });

  test("the store's clock is read before the manifest, so time passing during the collection does not count", async () => {
    const clock = new ManualClock(Date.now());
    const inner = new MemoryStore(undefined, { clock });
    await (await Consumer.open({ store: inner, gcIntervalMs: 0 })).close();
    const { durable, release, producer } = await heldAppend(inner, clock);
    // The collector reads the manifest (no entry for the held batch yet); then a
    // long pause: if the collector took the store's time only now, the batch
    // would look 11 minutes old by both clocks.
    const gcStore = new FaultInjectingStore(inner);
    gcStore.after('get', (call) => {
      if (call.key === 'ingest/manifest') clock.advance(11 * MINUTE);
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
    const store = new MemoryStore(undefined, { clock });
    await (await Consumer.open({ store, gcIntervalMs: 0 })).close();
    await store.put('ingest/01ARZ3NDEKTSV4RRFFQ69G5FAV.batch', enc.encode('orphan'));
    const young = await new GarbageCollector({ store, clock }).run();
    assert.deepEqual(young.deleted, [], 'the object is fresh by the store clock');
    clock.advance(11 * MINUTE);
    const old = await new GarbageCollector({ store, clock }).run();
    assert.deepEqual(old.deleted, ['ingest/01ARZ3NDEKTSV4RRFFQ69G5FAV.batch']);
  });

  test('a skewed producer, four lanes, a draining consumer and a collection every 20 ms on file://: nothing lost', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'spillway-gc-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const store = openStore(`file://${dir}`);
    const behind: Clock = { now: () => Date.now() - 15 * MINUTE };
    const producer = new Producer({ store, flushIntervalMs: 0, clock: behind });
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    const ahead: Clock = { now: () => Date.now() + 15 * MINUTE };
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
});

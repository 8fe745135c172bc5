/**
 * The collector of the log layout: the floor, the boundary first, retention
 * and its DataLossError (once), orphans, clocks, and several collectors.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  DataLossError,
  GarbageCollector,
  InMemoryMetrics,
  MemoryStore,
  Producer,
  Queue,
  QueueNotFoundError,
  type ObjectStore,
} from '../src/index.ts';
import { LOG_MIN_COMMIT_AGE_MS, LogQueue } from '../src/internal.ts';
import { FaultInjectingStore, ManualClock, skewedClock } from '../src/testing.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const GRACE_MS = 60_000;

/** Produces one batch per entry, external (not inline) unless asked. */
async function produce(
  store: ObjectStore,
  clock: ManualClock,
  entries: string[],
  inline = false,
): Promise<void> {
  const producer = new Producer({
    store,
    clock,
    flushIntervalMs: 0,
    ...(inline ? {} : { inlineMaxBytes: 0 }),
  });
  for (const e of entries) await (await producer.produce([enc.encode(e)])).durable;
  await producer.close();
}

async function keys(store: ObjectStore, prefix = 'ingest/'): Promise<string[]> {
  const out: string[] = [];
  for await (const m of store.list(prefix)) out.push(m.key);
  return out;
}

async function drain(consumer: Consumer): Promise<string[]> {
  const got: string[] = [];
  for (;;) {
    const b = await consumer.next();
    if (!b) return got;
    got.push(...b.entries.map((e) => dec.decode(e)));
    await consumer.ackThrough(b.sequence);
  }
}

function collector(store: ObjectStore, clock: ManualClock, metrics?: InMemoryMetrics) {
  return new GarbageCollector({
    store,
    clock,
    gcGracePeriodMs: GRACE_MS,
    ...(metrics ? { metrics } : {}),
  });
}

/** A store whose objects age with `clock`. */
function setup(): { clock: ManualClock; store: MemoryStore } {
  const clock = new ManualClock(1_700_000_000_000);
  return { clock, store: new MemoryStore(undefined, { clock }) };
}

describe('log collector', () => {
  test('refuses a path where no log queue lives, writing nothing', async () => {
    const { clock, store } = setup();
    await assert.rejects(collector(store, clock).run(), QueueNotFoundError);
    assert.deepEqual(await keys(store, ''), []);
  });

  test('deletes what every subscription acknowledged, the boundary first; never the newest commit', async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a', 'b', 'c', 'd']);
    const one = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    const two = await Consumer.open({ store, clock, gcIntervalMs: 0, subscription: 'two' });
    assert.deepEqual(await drain(one), ['a', 'b', 'c', 'd']);
    const b = await two.next();
    await two.ackThrough(b!.sequence); // "two" has read one batch
    await clock.advance(GRACE_MS);
    const watched = new FaultInjectingStore(store);
    let boundaryWhenDeleting: string | undefined;
    watched.before('deleteMany', async () => {
      boundaryWhenDeleting ??= dec.decode((await store.get('ingest/boundary')).body);
    });
    const r = await collector(watched, clock).run();
    assert.match(
      boundaryWhenDeleting ?? '',
      /"firstCommit":1/,
      'the boundary moved before deleting',
    );
    assert.equal(r.deleted.filter((k) => k.endsWith('.batch')).length, 1);
    assert.equal(r.deleted.filter((k) => k.includes('/log/')).length, 1);
    assert.deepEqual(await drain(two), ['b', 'c', 'd'], 'nothing a subscription needs is gone');
    await clock.advance(GRACE_MS);
    await collector(store, clock).run();
    const left = await keys(store, 'ingest/log/');
    assert.deepEqual(left, ['ingest/log/00000000000000000003'], 'the newest commit stays');
    await one.close();
    await two.close();
  });

  test('commits younger than the grace period (and the protocol minimum) stay', async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a', 'b', 'c']);
    const c = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    await drain(c);
    await c.close();
    const tight = new GarbageCollector({ store, clock, gcGracePeriodMs: 0 });
    await tight.run();
    assert.equal(
      (await keys(store, 'ingest/log/')).length,
      3,
      `younger than ${LOG_MIN_COMMIT_AGE_MS} ms`,
    );
    await clock.advance(LOG_MIN_COMMIT_AGE_MS);
    await tight.run();
    assert.equal((await keys(store, 'ingest/log/')).length, 1);
  });

  test("a collector whose clock is hours ahead deletes nothing young: age is the store's", async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a', 'b']);
    const c = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    await drain(c);
    await c.close();
    const ahead = new GarbageCollector({
      store,
      clock: skewedClock(10 * 3_600_000, clock),
      gcGracePeriodMs: GRACE_MS,
    });
    const r = await ahead.run();
    assert.deepEqual(r.deleted, []);
  });

  test('retention by age expires what a lagging subscription did not read: DataLossError once, then the oldest retained', async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a', 'b', 'c']);
    await clock.advance(120_000);
    await produce(store, clock, ['d']);
    const queue = Queue.open({ store });
    await queue.setRetention({ maxAgeMs: 60_000 });
    assert.deepEqual(await queue.retention(), { maxAgeMs: 60_000 });
    await clock.advance(30_000);
    const gcMetrics = new InMemoryMetrics();
    await collector(store, clock, gcMetrics).run();
    assert.equal(gcMetrics.counter('buffer.retention_expired_batches'), 3);
    const metrics = new InMemoryMetrics();
    const c = await Consumer.open({ store, clock, gcIntervalMs: 0, metrics });
    await assert.rejects(c.next(), (e: unknown) => {
      assert.ok(e instanceof DataLossError);
      assert.equal(e.code, 'DATA_LOSS');
      assert.equal(e.firstSequence, 0);
      assert.equal(e.lastSequence, 2);
      return true;
    });
    assert.equal(metrics.counter('buffer.retention_lost_batches', { subscription: 'default' }), 3);
    assert.deepEqual(await drain(c), ['d']);
    await c.close();
    // Recorded with the cursor: not reported again after a restart.
    const again = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    assert.equal(await again.next(), undefined);
    await again.close();
    const [info] = await queue.subscriptions();
    assert.deepEqual(
      info?.lastLoss && [info.lastLoss.firstSequence, info.lastLoss.lastSequence],
      [0, 2],
    );
  });

  test('retention by bytes keeps the newest maxBytes', async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a', 'b', 'c', 'd', 'e']);
    const sizes: number[] = [];
    for await (const m of store.list('ingest/')) if (m.key.endsWith('.batch')) sizes.push(m.size);
    await Queue.open({ store }).setRetention({ maxBytes: 2 * Math.max(...sizes) });
    await clock.advance(GRACE_MS);
    await collector(store, clock).run();
    const c = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    await assert.rejects(c.next(), DataLossError);
    assert.deepEqual(await drain(c), ['d', 'e']);
    await c.close();
  });

  test('batches read ahead and then expired are a DataLossError, not corruption', async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a', 'b', 'c']);
    await clock.advance(120_000);
    await produce(store, clock, ['d']);
    const c = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    const descriptors = await c.nextDescriptors(3);
    assert.equal(descriptors.length, 3);
    await Queue.open({ store }).setRetention({ maxAgeMs: 60_000 });
    await collector(store, clock).run();
    await assert.rejects(c.fetch(descriptors[1]!), (e: unknown) => {
      assert.ok(e instanceof DataLossError);
      assert.deepEqual([e.firstSequence, e.lastSequence], [1, 2]);
      return true;
    });
    assert.deepEqual(await drain(c), ['d']);
    await c.close();
  });

  test('a loss found by a read-ahead fetch never moves the cursor past batches not handed out', async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a', 'b', 'c']);
    await clock.advance(120_000);
    await produce(store, clock, ['d']);
    const c = await Consumer.open({ store, clock, gcIntervalMs: 0, readAheadBatches: 8 });
    const first = await c.next(); // a, with b and c read ahead
    await c.ackThrough(first!.sequence);
    await Queue.open({ store }).setRetention({ maxAgeMs: 60_000 });
    await collector(store, clock).run();
    await c.close(); // without reading on: b and c were never handed out
    const again = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    await assert.rejects(again.next(), (e: unknown) => {
      assert.ok(e instanceof DataLossError);
      assert.deepEqual([e.firstSequence, e.lastSequence], [1, 2]);
      return true;
    });
    assert.deepEqual(await drain(again), ['d']);
    await again.close();
  });

  test("a commit below the boundary that names another queue's object never gets it deleted", async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a', 'b']);
    await store.put('billing/01HF7TWYC00000000000000000.batch', enc.encode('not yours'));
    // A hostile commit 0 naming it (as if written by something else).
    const log = new LogQueue({ store, root: 'ingest' });
    const c0 = (await log.readCommit(0))!;
    const { encodeCommit } = await import('../src/internal.ts');
    c0.batches[0]!.entry.location = 'billing/01HF7TWYC00000000000000000.batch';
    delete c0.batches[0]!.inline;
    await store.put(log.commitKey(0), encodeCommit(c0));
    const consumer = await Consumer.open({
      store,
      clock,
      gcIntervalMs: 0,
      subscription: 'x',
      startAt: 'latest',
    });
    await consumer.close();
    await Queue.open({ store }).deleteSubscription('default');
    await clock.advance(GRACE_MS);
    await collector(store, clock).run();
    assert.deepEqual(
      (await store.get('billing/01HF7TWYC00000000000000000.batch')).body,
      enc.encode('not yours'),
    );
  });

  test('a deleted subscription no longer holds data back', async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a', 'b']);
    const queue = Queue.open({ store });
    await queue.createSubscription('slow');
    const c = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    await drain(c);
    await c.close();
    await clock.advance(GRACE_MS);
    assert.equal((await collector(store, clock).run()).deleted.length, 0, '"slow" holds both');
    await queue.deleteSubscription('slow');
    assert.equal(
      (await collector(store, clock).run()).deleted.filter((k) => k.endsWith('.batch')).length,
      1,
      'a is collected; b stays with the newest commit',
    );
  });

  test('orphans: batch objects of producers that died before their commit go after the grace period', async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a']);
    // A producer uploaded a batch and died before appending it.
    const orphan = 'ingest/01HF7TWYC00000000000000000.batch';
    await store.put(orphan, enc.encode('orphan'));
    await clock.advance(GRACE_MS);
    assert.deepEqual(
      (await collector(store, clock).run()).deleted,
      [],
      'as old as the first kept commit: it could be a batch appended late',
    );
    await clock.advance(GRACE_MS);
    await produce(store, clock, ['b']);
    const c = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    assert.deepEqual(await drain(c), ['a', 'b']);
    await c.close();
    // Its ULID time and its store age are past the grace period, and it was uploaded
    // more than a grace period before the first commit kept.
    const r = await collector(store, clock).run();
    assert.ok(r.deleted.includes(orphan), r.deleted.join());
    assert.deepEqual(await drain(await Consumer.open({ store, clock, gcIntervalMs: 0 })), []);
  });

  test('two collectors at once: one moves on while the other still works on an older view; nothing retained is lost', async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a', 'b', 'c', 'd', 'e', 'f']);
    await clock.advance(20 * 60_000);
    const c = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    const first = await c.next();
    await c.ackThrough(first!.sequence);
    // Collector X reads the floor (1), then waits; meanwhile the subscription reads on
    // and collector Y collects further.
    const slow = new FaultInjectingStore(store);
    let paused = false;
    let resume: () => void = () => undefined;
    const resumed = new Promise<void>((r) => (resume = r));
    let reachedPause: () => void = () => undefined;
    const atPause = new Promise<void>((r) => (reachedPause = r));
    slow.before('put', async (call) => {
      if (call.key === 'ingest/boundary' && !paused) {
        paused = true;
        reachedPause();
        await resumed;
      }
    });
    const x = collector(slow, clock).run();
    await atPause;
    for (let i = 0; i < 3; i++) await c.ackThrough((await c.next())!.sequence);
    await collector(store, clock).run();
    resume();
    await x;
    assert.deepEqual(await drain(c), ['e', 'f'], 'the retained batches are all there');
    await c.close();
  });

  test('a cursor under any name holds its data; one that does not decode stops the collection', async () => {
    const { clock, store } = setup();
    await produce(store, clock, ['a']);
    const c = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    await drain(c);
    await c.close();
    const log = new LogQueue({ store, root: 'ingest' });
    const cursor = (await log.readCursor('default'))!.value;
    await store.put(
      'ingest/subscriptions/.odd name',
      enc.encode(
        JSON.stringify({
          ...JSON.parse(dec.decode((await store.get('ingest/subscriptions/default')).body)),
          subscription: '.odd name',
          next: { sequence: 0, index: 0 },
        }),
      ),
    );
    await clock.advance(GRACE_MS);
    assert.equal(cursor.next.sequence, 1);
    assert.deepEqual((await collector(store, clock).run()).deleted, []);
    await store.put('ingest/subscriptions/broken', enc.encode('{'));
    await assert.rejects(collector(store, clock).run(), /broken/);
  });
});

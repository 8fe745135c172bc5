/**
 * The queue handle: one value naming a queue, shared by the roles; its
 * statistics and its non-fencing reader.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  GarbageCollector,
  InvalidArgumentError,
  MemoryStore,
  Producer,
  Queue,
  QueueNotFoundError,
  type Batch,
} from '../../src/index.ts';
import { emptyManifest, encodeManifest } from '../../src/internal.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { until } from '../support/deferred.ts';
import { queueWith, v1Store } from '../support/queue.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();

describe('queue handle', () => {
  test('roles share one handle; paths come from it; a handle given is not closed by the roles', async () => {
    const store = await v1Store();
    const queue = Queue.open({ store, manifestPath: 'orders/manifest', dataPathPrefix: 'orders' });
    const producer = new Producer({ queue, flushIntervalMs: 0 });
    const r = await (await producer.produce([enc.encode('o1')])).durable;
    assert.match(r.location, /^orders\/(log\/[0-9]{20}#0|[0-9A-Z]{26}\.batch)$/);
    await producer.close();
    const consumer = await Consumer.open({ queue, gcIntervalMs: 0 });
    const batch = (await consumer.next()) as Batch;
    assert.equal(dec.decode(batch.entries[0]), 'o1');
    await consumer.close();
    await new GarbageCollector({ queue }).close();
    // Still usable: the roles did not close the store they were handed.
    assert.equal((await queue.stats()).manifestPath, 'orders/queue', 'a log queue: its descriptor');
    await queue.close();
  });

  test("a log queue never starts inside a v1 queue's data prefix (a mistyped manifest path)", async () => {
    const store = await v1Store();
    await queueWith(store, 1);
    const typo = { store, manifestPath: 'ingest/manfest' };
    await assert.rejects(Consumer.open({ ...typo, gcIntervalMs: 0 }), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.match(
        e.message,
        /belongs to the queue whose manifest is "ingest\/manifest", not "ingest\/manfest"/,
      );
      return true;
    });
    const producer = new Producer({ ...typo, flushIntervalMs: 0 });
    await assert.rejects(
      (async () => (await producer.produce([enc.encode('x')])).durable)(),
      InvalidArgumentError,
    );
    await producer.destroy();
    const keys: string[] = [];
    for await (const m of store.list('ingest/')) keys.push(m.key);
    assert.ok(!keys.includes('ingest/queue'), 'no log queue was created');
  });

  test('a store URL as the queue opens (and the role closes) its store; the paths are validated', async () => {
    assert.equal(Queue.open('memory://q-url').dataPathPrefix, 'ingest');
    assert.throws(
      () => Queue.open({ store: new MemoryStore(), manifestPath: '/abs' }),
      InvalidArgumentError,
    );
    assert.throws(() => Queue.open({ store: 'ftp://x' }), InvalidArgumentError);
  });

  test('stats count pending, stored and collectable objects by the collector rule', async () => {
    const clock = new ManualClock(Date.now());
    const store = await v1Store({ clock });
    // Batches a millisecond apart by their ULIDs, so the oldest pending one is strictly newer.
    const producer = new Producer({ store, clock, flushIntervalMs: 0 });
    for (let i = 0; i < 3; i++) {
      await (
        await producer.produce([enc.encode(`e${i}`)])
      ).durable;
      await clock.advance(1);
    }
    await producer.close();
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    await consumer.ackThrough(((await consumer.next()) as Batch).sequence);
    await consumer.close();
    const queue = Queue.open({ store });
    const young = await queue.stats({ clock });
    assert.equal(young.batchesPending, 2);
    assert.equal(young.produceCallsPending, 2);
    assert.equal(young.firstPendingSequence, 1);
    assert.equal(young.nextSequence, 3);
    assert.equal(young.batchObjects, 3);
    assert.equal(young.unreferenced, 1);
    assert.equal(young.collectable, 0, 'inside the grace period');
    await clock.set(clock.now() + 11 * 60_000);
    await store.put('ingest/unrelated', enc.encode('moves the store clock'));
    const old = await queue.stats({ clock });
    assert.equal(old.collectable, 1);
    await assert.rejects(
      Queue.open({ store, manifestPath: 'typo' }).stats(),
      (e: unknown) => e instanceof QueueNotFoundError && /"typo"/.test(e.message),
    );
  });

  test('peek reads without acknowledging or fencing; fromSequence past the end is refused', async () => {
    const store = await v1Store();
    await queueWith(store, 3);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    const queue = Queue.open({ store });
    const seen: number[] = [];
    for await (const b of queue.peek({ fromSequence: 1 })) seen.push(b.sequence);
    assert.deepEqual(seen, [1, 2]);
    // The consumer was not fenced by the peek.
    assert.equal(((await consumer.next()) as Batch).sequence, 0);
    await consumer.close();
    await assert.rejects(
      async () => {
        for await (const _ of queue.peek({ fromSequence: 4 })) void _;
      },
      (e: unknown) =>
        e instanceof InvalidArgumentError && /past the end of the queue/.test(e.message),
    );
  });

  test('peek with follow waits on the clock for new batches until aborted', async () => {
    const store = await v1Store();
    const clock = new ManualClock();
    await queueWith(store, 1);
    const queue = Queue.open({ store });
    const controller = new AbortController();
    const seen: string[] = [];
    const reading = (async () => {
      for await (const b of queue.peek({
        follow: true,
        pollIntervalMs: 500,
        signal: controller.signal,
        clock,
      })) {
        seen.push(dec.decode(b.entries[0]));
        if (seen.length === 2) controller.abort();
      }
    })();
    await until(() => seen.length === 1 && clock.pendingTimers === 1);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    await (
      await producer.produce([enc.encode('later')])
    ).durable;
    await producer.close();
    await clock.advance(500);
    await reading;
    assert.deepEqual(seen, ['e0', 'later']);
  });
});

describe('a v1 queue being created', () => {
  test('a role that finds the marker before the manifest waits for the manifest and takes the queue as v1', async () => {
    const memory = new MemoryStore();
    // The creator has written the marker; its manifest lands while the role looks.
    await Queue.open({ store: memory, layout: 'v1' }).checkOwnership({ claim: true });
    const store = new FaultInjectingStore(memory);
    let looked = 0;
    store.before('head', async (call) => {
      if (call.key === 'ingest/manifest' && ++looked === 2) {
        await memory.put('ingest/manifest', encodeManifest(emptyManifest()), { mode: 'create' });
      }
    });
    const queue = Queue.open({ store });
    assert.equal(await queue.layout(), 'v1');
    const producer = new Producer({ queue, flushIntervalMs: 0 });
    const r = await (await producer.produce([enc.encode('a')])).durable;
    assert.equal(r.sequence, 0);
    await producer.close();
    await queue.close();
  });

  test("a v1 queue whose manifest path is the data prefix's log descriptor key works, and a log is refused there", async () => {
    const memory = new MemoryStore();
    const at = { manifestPath: 'orders/queue', dataPathPrefix: 'orders' };
    const producer = new Producer({
      queue: Queue.open({ store: memory, ...at, layout: 'v1' }),
      flushIntervalMs: 0,
    });
    for (const e of ['x', 'y']) await (await producer.produce([enc.encode(e)])).durable;
    await producer.close();
    const queue = Queue.open({ store: memory, ...at });
    assert.equal(await queue.layout(), 'v1');
    const consumer = await Consumer.open({ queue });
    const got: string[] = [];
    for (let b; (b = await consumer.next());) {
      got.push(...b.entries.map((e) => new TextDecoder().decode(e)));
      await consumer.ack(b.sequence);
    }
    assert.deepEqual(got, ['x', 'y']);
    await consumer.close();
    await assert.rejects(
      Queue.open({ store: memory, ...at, layout: 'log' }).layout(),
      (e: unknown) =>
        e instanceof InvalidArgumentError && /only a v1 queue can live here/.test(e.message),
    );
  });

  test('a v1 queue and a log queue started on one prefix at the same moment: the second to check is refused', async () => {
    for (const second of ['v1', 'log'] as const) {
      const memory = new MemoryStore();
      const store = new FaultInjectingStore(memory);
      const v1 = new Producer({ store, layout: 'v1', flushIntervalMs: 0 });
      const log = new Producer({ store, layout: 'log', flushIntervalMs: 0 });
      // Both have looked and found no queue; the first one then runs to the end before the
      // second writes its claim (v1: the data prefix's marker; log: its descriptor).
      const first = second === 'v1' ? log : v1;
      const claim = second === 'v1' ? 'ingest/queue.manifest' : 'ingest/queue';
      let firstDone: Promise<unknown> | undefined;
      const off = store.before('put', async (call) => {
        if (call.key !== claim || firstDone) return;
        firstDone = (async () => (await first.produce([enc.encode('first')])).durable)();
        await firstDone;
      });
      const late = (async () =>
        (await (second === 'v1' ? v1 : log).produce([enc.encode('second')])).durable)();
      await assert.rejects(late, (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, String(e));
        assert.match(e.message, /both a v1 manifest \("ingest\/manifest"\) and a log queue/);
        return true;
      });
      assert.ok(
        firstDone,
        `(${second}) the ${second === 'v1' ? 'log' : 'v1'} producer ran in between`,
      );
      await firstDone;
      off();
      // Refused for good, not only once: its claim stays behind, and its next call (which
      // finds its own descriptor or marker) is refused too, while the first goes on.
      await assert.rejects(
        (async () => (await (second === 'v1' ? v1 : log).produce([enc.encode('again')])).durable)(),
        /both a v1 manifest/,
      );
      await (
        await first.produce([enc.encode('first again')])
      ).durable;
      await Promise.all([v1.destroy(), log.destroy()]);
      if (second === 'v1') {
        // Refused before it wrote a manifest: the prefix holds the log (and a stray marker).
        assert.equal(await Queue.open({ store: memory }).layout(), 'log');
      } else {
        // Both stand: every role refuses the prefix from now on, rather than pick one.
        await assert.rejects(Queue.open({ store: memory }).layout(), /both a v1 manifest/);
      }
    }
  });
});

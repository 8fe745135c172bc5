/**
 * Named subscriptions of the log layout: fan-out, fencing per subscription,
 * start positions, resets, deletion, and one fetch per process.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  DataLossError,
  FencedError,
  GarbageCollector,
  InvalidArgumentError,
  MemoryStore,
  Producer,
  Queue,
  type Batch,
  type ObjectStore,
} from '../../src/index.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { v1Store } from '../support/queue.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();

async function produce(store: ObjectStore, entries: string[], clock?: ManualClock): Promise<void> {
  const producer = new Producer({ store, flushIntervalMs: 0, ...(clock ? { clock } : {}) });
  for (const e of entries) await (await producer.produce([enc.encode(e)])).durable;
  await producer.close();
}

/** Reads every batch there is and acknowledges them; returns their entries. */
async function drain(consumer: Consumer): Promise<string[]> {
  const got: string[] = [];
  for (;;) {
    const b = await consumer.next();
    if (!b) break;
    got.push(...b.entries.map((e) => dec.decode(e)));
    await consumer.ackThrough(b.sequence);
  }
  return got;
}

function open(
  store: ObjectStore,
  subscription?: string,
  more: Partial<Parameters<typeof Consumer.open>[0]> = {},
): Promise<Consumer> {
  return Consumer.open({
    store,
    gcIntervalMs: 0,
    ...(subscription ? { subscription } : {}),
    ...more,
  });
}

describe('subscriptions', () => {
  test('fan-out: each subscription gets every entry once, with its own cursor', async () => {
    const store = new MemoryStore();
    await produce(store, ['a', 'b', 'c']);
    const one = await open(store);
    const two = await open(store, 'audit');
    assert.deepEqual(await drain(one), ['a', 'b', 'c']);
    await produce(store, ['d']);
    assert.deepEqual(await drain(one), ['d']);
    assert.deepEqual(await drain(two), ['a', 'b', 'c', 'd']);
    await one.close();
    await two.close();
    // Reopened, each resumes after its own acknowledgements.
    await produce(store, ['e']);
    const again = await open(store, 'audit');
    assert.deepEqual(await drain(again), ['e']);
    await again.close();
    const subs = await Queue.open({ store }).subscriptions();
    assert.deepEqual(
      subs.map((s) => [s.name, s.nextSequence]),
      [
        ['audit', 5],
        ['default', 4],
      ],
    );
  });

  test('opening a subscription fences its previous holder only', async () => {
    const store = new MemoryStore();
    await produce(store, ['a', 'b']);
    const first = await open(store, 'billing', { ackIntervalMs: 60_000 });
    const other = await open(store, 'audit');
    const b = (await first.next()) as Batch;
    const second = await open(store, 'billing');
    await assert.rejects(first.ackThrough(b.sequence), FencedError);
    assert.deepEqual(await drain(second), ['a', 'b'], 'the unacknowledged batch is redelivered');
    assert.deepEqual(await drain(other), ['a', 'b'], 'another subscription is untouched');
    await first.destroy();
    await second.close();
    await other.close();
  });

  test('a v1 queue has one consumer: a named subscription is an InvalidArgumentError', async () => {
    const store = await v1Store();
    await assert.rejects(open(store, 'audit'), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.match(e.message, /v1/);
      return true;
    });
    await assert.rejects(Queue.open({ store }).subscriptions(), InvalidArgumentError);
    await assert.rejects(Queue.open({ store }).setRetention({ maxAgeMs: 1000 }), /v1 layout/);
  });

  test('the default subscription exists from the first produce: unread data is never "needed by nobody"', async () => {
    const store = new MemoryStore();
    await produce(store, ['a']);
    assert.deepEqual(
      (await Queue.open({ store }).subscriptions()).map((s) => [s.name, s.lagBatches]),
      [['default', 1]],
    );
  });

  test("start positions: 'latest', a sequence, a time; an existing subscription keeps its cursor", async () => {
    const clock = new ManualClock(1_700_000_000_000);
    const store = new MemoryStore(undefined, { clock });
    await produce(store, ['a', 'b'], clock);
    await clock.advance(10_000);
    const t = clock.now();
    await produce(store, ['c', 'd'], clock);
    const latest = await open(store, 'latest', { startAt: 'latest', clock });
    const fromSeq = await open(store, 'seq', { startAt: { sequence: 1 }, clock });
    const fromTime = await open(store, 'time', { startAt: { timeMs: t }, clock });
    await produce(store, ['e'], clock);
    assert.deepEqual(await drain(latest), ['e']);
    assert.deepEqual(await drain(fromSeq), ['b', 'c', 'd', 'e']);
    assert.deepEqual(await drain(fromTime), ['c', 'd', 'e']);
    for (const c of [latest, fromSeq, fromTime]) await c.close();
    const reopened = await open(store, 'seq', { startAt: 'oldest', clock });
    assert.deepEqual(await drain(reopened), [], 'startAt applies only when created');
    await reopened.close();
    await assert.rejects(
      open(store, 'far', { startAt: { sequence: 99 } }),
      /past the end of the log/,
    );
  });

  test('lastAckedSequence resumes after it', async () => {
    const store = new MemoryStore();
    await produce(store, ['a', 'b', 'c']);
    const c = await open(store, undefined, { lastAckedSequence: 1 });
    assert.deepEqual(await drain(c), ['c']);
    await c.close();
  });

  test('reset moves a subscription and fences its holder; delete fences and stops holding data back', async () => {
    const store = new MemoryStore();
    await produce(store, ['a', 'b', 'c']);
    const queue = Queue.open({ store });
    const holder = await open(store, 'replay');
    assert.deepEqual(await drain(holder), ['a', 'b', 'c']);
    await queue.resetSubscription('replay', { sequence: 1 });
    await assert.rejects(holder.next(), FencedError);
    await holder.destroy();
    const replay = await open(store, 'replay');
    assert.deepEqual(await drain(replay), ['b', 'c']);
    await queue.deleteSubscription('replay');
    await assert.rejects(replay.next(), FencedError);
    await replay.destroy();
    assert.deepEqual(
      (await queue.subscriptions()).map((s) => s.name),
      ['default'],
    );
    await assert.rejects(queue.deleteSubscription('replay'), /no subscription "replay"/);
    await assert.rejects(queue.createSubscription('../x'), InvalidArgumentError);
  });

  test('a subscription deleted and created again is another one: its old holder is fenced', async () => {
    const store = new MemoryStore();
    await produce(store, ['a', 'b', 'c', 'd']);
    const old = await open(store, 's');
    const first = (await old.next())!;
    await old.ackThrough(first.sequence);
    const second = (await old.next())!;
    await Queue.open({ store }).deleteSubscription('s');
    const renewed = await open(store, 's');
    assert.deepEqual(await drain(renewed), ['a', 'b', 'c', 'd']);
    await renewed.close();
    // Same epoch number as the old holder's, but not its subscription any more.
    await assert.rejects(old.ackThrough(second.sequence), FencedError);
    const [info] = (await Queue.open({ store }).subscriptions()).filter((x) => x.name === 's');
    assert.equal(info?.nextSequence, 4, 'the old holder wrote nothing');
    await old.destroy();
  });

  test('a start that a collection overtook while the subscription was created is reported as a loss', async () => {
    const clock = new ManualClock(1_700_000_000_000);
    const inner = new MemoryStore(undefined, { clock });
    await produce(inner, ['a', 'b', 'c', 'd', 'e'], clock);
    const reader = await open(inner, undefined, { clock });
    await drain(reader);
    await reader.close();
    await clock.advance(3_600_000);
    const store = new FaultInjectingStore(inner);
    let collected = false;
    store.before('put', async (call) => {
      if (collected || call.key !== 'ingest/subscriptions/late') return;
      collected = true;
      await new GarbageCollector({ store: inner, clock }).run();
    });
    await Queue.open({ store }).createSubscription('late', { sequence: 1 });
    assert.ok(collected);
    const late = await open(store, 'late', { clock });
    await assert.rejects(late.next(), (e: unknown) => {
      assert.ok(e instanceof DataLossError);
      assert.deepEqual([e.firstSequence, e.lastSequence], [1, 3]);
      return true;
    });
    assert.deepEqual(await drain(late), ['e']);
    await late.close();
  });

  test('lastAckedSequence past the end of the log is refused (it would skip what comes next)', async () => {
    const store = new MemoryStore();
    await produce(store, ['a', 'b']);
    await assert.rejects(
      open(store, undefined, { lastAckedSequence: 1000 }),
      /past the end of the log/,
    );
    const c = await open(store, undefined, { lastAckedSequence: 1 });
    assert.equal(await c.next(), undefined);
    await c.close();
  });

  test('inline batches of one commit are read with one read of it', async () => {
    const inner = new MemoryStore();
    const producer = new Producer({ store: inner, flushIntervalMs: 60_000 });
    const pending = [];
    for (let i = 0; i < 20; i++)
      pending.push((await producer.produce([enc.encode(`e${i}`)])).durable);
    await producer.flush();
    await producer.close();
    const store = new FaultInjectingStore(inner);
    let commitGets = 0;
    store.before('get', (call) => {
      if (call.key === 'ingest/log/00000000000000000000') commitGets++;
    });
    const c = await open(store);
    assert.equal((await drain(c)).length, 20);
    await c.close();
    assert.equal(commitGets, 1);
  });

  test('one batch object is fetched once per process when several subscriptions need it at once', async () => {
    const inner = new MemoryStore();
    const producer = new Producer({ store: inner, flushIntervalMs: 0, inlineMaxBytes: 0 });
    await (
      await producer.produce([enc.encode('shared')])
    ).durable;
    await producer.close();
    const store = new FaultInjectingStore(inner);
    const consumers = await Promise.all(['s1', 's2', 's3'].map((s) => open(store, s)));
    let batchGets = 0;
    store.before('get', (call) => {
      if (call.key.endsWith('.batch')) batchGets++;
    });
    const got = await Promise.all(consumers.map((c) => c.next()));
    assert.deepEqual(
      got.map((b) => dec.decode(b?.entries[0])),
      ['shared', 'shared', 'shared'],
    );
    assert.equal(batchGets, 1);
    for (const c of consumers) await c.close();
  });

  test('a small batch travels inline: its location names its commit, and every reader finds it', async () => {
    const store = new MemoryStore();
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const r = await (await producer.produce([enc.encode('small')])).durable;
    await producer.close();
    assert.match(r.location, /^ingest\/log\/00000000000000000000#0$/);
    const listed: string[] = [];
    for await (const m of store.list('ingest/')) listed.push(m.key);
    assert.ok(!listed.some((k) => k.endsWith('.batch')), 'no batch object of its own');
    const peeked: string[] = [];
    for await (const b of Queue.open({ store }).peek()) peeked.push(b.location);
    assert.deepEqual(peeked, [r.location]);
    const c = await open(store);
    const [d] = await c.nextDescriptors(1);
    assert.equal(d?.location, r.location);
    assert.equal(dec.decode((await c.fetch(d)).entries[0]), 'small');
    await c.close();
  });
});

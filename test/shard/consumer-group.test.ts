/**
 * Consumer groups on the memory store with manual clocks: leases expire by
 * time observed in the taking process, a takeover fences the old owner, two
 * processes with one instance id never both own a vnode, and leaving
 * releases at once.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FencedError, MemoryStore, type ObjectStore } from '../../src/index.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { ConsumerGroup } from '../../src/shard/consumer-group.ts';
import { decodeLease, leaseKey } from '../../src/shard/group-objects.ts';
import { ShardedProducer } from '../../src/shard/sharded-producer.ts';
import { ShardedQueue } from '../../src/shard/sharded-queue.ts';

const TTL = 3000;
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);
const quiet = { gcIntervalMs: 0, ackIntervalMs: 3_600_000 };

/** A sharded queue of `v` vnodes with `perKey` entries for each of `keys` keys. */
async function filled(v: number, keys: number, perKey: number): Promise<ObjectStore> {
  const store = new MemoryStore();
  const producer = await ShardedProducer.open({ store, vnodeCapacity: v, flushIntervalMs: 0 });
  const all: Promise<unknown>[] = [];
  for (let n = 0; n < perKey; n++) {
    for (let k = 0; k < keys; k++)
      all.push((await producer.produce(`key-${k}`, [enc(`key-${k}:${n}`)])).durable);
  }
  await Promise.all(all);
  await producer.close();
  return store;
}

function join(
  store: ObjectStore,
  clock: ManualClock,
  instanceId: string,
  extra: Partial<Parameters<typeof ConsumerGroup.join>[0]> = {},
): Promise<ConsumerGroup> {
  return ConsumerGroup.join({
    store,
    group: 'g',
    instanceId,
    leaseTtlMs: TTL,
    clock,
    consumer: quiet,
    ...extra,
  });
}

async function lease(store: ObjectStore, v: number): Promise<ReturnType<typeof decodeLease>> {
  const key = leaseKey('ingest', 'g', v);
  return decodeLease((await store.get(key)).body, key);
}

/** Reads and acknowledges everything the member gets now; returns the entries. */
async function consumeAll(group: ConsumerGroup): Promise<string[]> {
  const out: string[] = [];
  for (let item; (item = await group.next());) {
    out.push(...item.batch.entries.map(dec));
    await group.ackThrough(item.vnode, item.batch.sequence);
  }
  return out;
}

describe('consumer groups', () => {
  test('two members share the vnodes, each owned once, and between them read everything once', async () => {
    const store = await filled(8, 16, 5);
    const [ca, cb] = [new ManualClock(), new ManualClock()];
    const a = await join(store, ca, 'a');
    assert.equal(a.vnodes.length, 8, 'alone, it takes every vnode');
    const b = await join(store, cb, 'b');
    assert.equal(b.vnodes.length, 0, 'the vnodes are leased to a');
    await a.rebalance(); // a sees b, and hands over b's share (nothing is handed out)
    await b.rebalance();
    assert.equal(a.vnodes.length, 4);
    assert.equal(b.vnodes.length, 4);
    assert.deepEqual(
      [...a.vnodes, ...b.vnodes].sort((x, y) => x - y),
      [0, 1, 2, 3, 4, 5, 6, 7],
    );
    const got = [...(await consumeAll(a)), ...(await consumeAll(b))];
    assert.equal(got.length, 80);
    assert.equal(new Set(got).size, 80);
    await a.close();
    await b.close();
  });

  test("a vnode's unused default subscription does not hold its batches back once a group reads it", async () => {
    const store = await filled(2, 4, 3);
    const clock = new ManualClock();
    const a = await join(store, clock, 'a');
    assert.equal((await consumeAll(a)).length, 12);
    await a.close();
    const q = await ShardedQueue.open({ store });
    for (const v of [0, 1]) {
      const subs = await q.vnodeQueue(v).subscriptions();
      assert.deepEqual(
        subs.map((x) => x.name),
        ['g'],
        `vnode ${v}: only the group's subscription is left`,
      );
      assert.equal(subs[0]?.lagBatches, 0);
    }
  });

  test("a dead member's lease is taken only after the taker has seen it unchanged for the TTL on its own clock", async () => {
    const store = await filled(4, 8, 2);
    // The dead member's clock is far ahead: its timestamps must not matter.
    const dead = await join(store, new ManualClock(9_000_000_000_000), 'dead', {
      vnodes: [0, 1, 2, 3],
    });
    assert.deepEqual(dead.vnodes, [0, 1, 2, 3]);
    await dead.destroy(); // a crash: no release
    const clock = new ManualClock();
    const taker = await join(store, clock, 'taker', { vnodes: [0, 1, 2, 3] });
    assert.deepEqual(taker.vnodes, [], 'first sight: not expired');
    await clock.advance(TTL - 1);
    await taker.rebalance();
    assert.deepEqual(taker.vnodes, [], 'seen unchanged for less than the TTL');
    await clock.advance(1);
    await taker.rebalance();
    assert.deepEqual(taker.vnodes, [0, 1, 2, 3]);
    const l = await lease(store, 0);
    assert.equal(l.owner, 'taker');
    assert.equal(l.epoch, 2, 'the epoch is raised per acquisition');
    assert.equal(
      (await consumeAll(taker)).length,
      16,
      'nothing was acknowledged by the dead member',
    );
    await taker.close();
  });

  test('two processes with the same instance id never both own a vnode', async () => {
    const store = await filled(2, 4, 1);
    const [c1, c2] = [new ManualClock(), new ManualClock()];
    const first = await join(store, c1, 'same', { vnodes: [0, 1] });
    const second = await join(store, c2, 'same', { vnodes: [0, 1] });
    assert.deepEqual(first.vnodes, [0, 1]);
    assert.deepEqual(second.vnodes, [], 'the same id in another session is another owner');
    for (let i = 0; i < 5; i++) {
      await c1.advance(TTL / 3);
      await c2.advance(TTL / 3);
      await first.rebalance();
      await second.rebalance();
      assert.deepEqual(second.vnodes, [], 'renewed leases never expire');
    }
    assert.notEqual((await lease(store, 0)).session, second.session);
    await first.close();
    await second.rebalance();
    assert.deepEqual(second.vnodes, [0, 1], 'released leases are taken at once');
    await second.close();
  });

  test('a paused owner whose lease was taken over is fenced: its acknowledgement is refused and does not count', async () => {
    const store = await filled(1, 1, 3); // one vnode, three batches
    const zombieClock = new ManualClock();
    const zombie = await join(store, zombieClock, 'zombie', { vnodes: [0] });
    const held = await zombie.next();
    assert.ok(held);
    assert.equal(held.batch.sequence, 0);
    // The zombie pauses (its clock and timers stand still: no renewal). The other waits out the TTL.
    const clock = new ManualClock();
    const fresh = await join(store, clock, 'fresh', { vnodes: [0] });
    await clock.advance(TTL);
    await fresh.rebalance();
    assert.deepEqual(fresh.vnodes, [0]);
    // By its own clock the zombie's lease is still valid; the fence is in the cursor write.
    await assert.rejects(zombie.ackThrough(0, held.batch.sequence), FencedError);
    await assert.rejects(zombie.ack(0, held.batch.sequence), FencedError);
    assert.deepEqual(zombie.vnodes, [], 'the zombie gave the vnode up');
    const again = await fresh.next();
    assert.equal(
      again?.batch.sequence,
      0,
      'the batch the zombie acknowledged after losing the lease comes again',
    );
    assert.deepEqual(again.batch.entries.map(dec), held.batch.entries.map(dec));
    await fresh.ackThrough(0, again.batch.sequence);
    const rest = await consumeAll(fresh);
    assert.equal(
      again.batch.entries.length + rest.length,
      3,
      'every entry, once, to the new owner',
    );
    await zombie.close(); // writes nothing for vnode 0
    assert.equal((await lease(store, 0)).owner, 'fresh');
    await fresh.close();
    const q = await ShardedQueue.open({ store });
    const cursor = await q.vnodeQueue(0).logQueue().readCursor('g');
    const head = await q.vnodeQueue(0).logQueue().discoverHead();
    assert.equal(cursor?.value.next.sequence, head.endSequence);
    assert.equal(cursor?.value.holder, 'fresh');
  });

  test('a renewal refused (412) loses the vnode at once, without acknowledging more', async () => {
    const store = await filled(1, 1, 2);
    const clock = new ManualClock();
    const a = await join(store, clock, 'a', { vnodes: [0] });
    const item = await a.next();
    assert.ok(item);
    // Someone rewrites the lease under it (an operator, a member that judged it expired).
    const key = leaseKey('ingest', 'g', 0);
    const l = await lease(store, 0);
    await store.put(
      key,
      enc(
        JSON.stringify({
          format: 'spillway-lease',
          version: 1,
          ...l,
          owner: 'other',
          session: 'x',
          epoch: l.epoch + 1,
        }) + '\n',
      ),
    );
    await clock.advance(TTL / 3);
    await a.rebalance();
    assert.deepEqual(a.vnodes, []);
    await assert.rejects(a.ack(0, item.batch.sequence), FencedError);
    await a.close();
  });

  for (const calls of [1, 2]) {
    test(`${calls === 1 ? 'a batch that arrives' : 'batches that arrive for two next() calls in flight'} while a renewal is in flight past the lease validity ${calls === 1 ? 'is' : 'are'} handed out once the renewal lands, in order, not dropped`, async () => {
      // One batch per durable produce() call: `calls` batches, plus one read after.
      const mem = new MemoryStore();
      const producer = await ShardedProducer.open({
        store: mem,
        vnodeCapacity: 1,
        flushIntervalMs: 0,
      });
      for (let n = 0; n <= calls; n++) await (await producer.produce('k', [enc(`k:${n}`)])).durable;
      await producer.close();
      const store = new FaultInjectingStore(mem);
      const clock = new ManualClock();
      const a = await join(store, clock, 'a', { vnodes: [0] });
      const gate = (): { reached: Promise<void>; open: () => void; hook: () => Promise<void> } => {
        let reached!: () => void;
        let open!: () => void;
        const reachedP = new Promise<void>((r) => (reached = r));
        const opened = new Promise<void>((r) => (open = r));
        return { reached: reachedP, open, hook: () => (reached(), opened) };
      };
      // The read of the vnode's commit waits...
      const commitRead = gate();
      const offGet = store.before('get', (c) =>
        /\/log\/\d+$/.test(c.key) ? commitRead.hook() : undefined,
      );
      const reading = Array.from({ length: calls }, () => a.next());
      await commitRead.reached;
      offGet();
      // ...while a renewal, sent in time, is slow to land (under load, say)...
      const renewal = gate();
      const leaseKey0 = leaseKey('ingest', 'g', 0);
      const offPut = store.before('put', (c) => (c.key === leaseKey0 ? renewal.hook() : undefined));
      await clock.advance(TTL / 3);
      await renewal.reached;
      offPut();
      // ...and the lease's validity (as last written) runs out before it lands.
      await clock.advance(TTL - TTL / 3 + 1);
      commitRead.open();
      // The lease is not surely ours now: nothing handed out (no batch may be lost).
      for (const r of reading) assert.equal(await r, undefined);
      renewal.open();
      await a.rebalance(); // the renewal landed: the lease is ours again
      const got: string[] = [];
      for (let item; (item = await a.next());) {
        got.push(...item.batch.entries.map(dec));
        await a.ack(item.vnode, item.batch.sequence); // in order, or this throws
      }
      assert.deepEqual(
        got,
        Array.from({ length: calls + 1 }, (_, n) => `k:${n}`),
        'every batch read while the lease was in doubt is handed out once it is held again, in order',
      );
      await a.close();
    });
  }

  test('leaving acknowledges what was acknowledged, releases the leases and removes the heartbeat', async () => {
    const store = await filled(2, 4, 2);
    const clock = new ManualClock();
    const a = await join(store, clock, 'a');
    const first = await a.next();
    assert.ok(first);
    await a.ack(first.vnode, first.batch.sequence); // recorded, not yet applied (ackIntervalMs is long)
    const second = await a.next(); // handed out, never acknowledged
    assert.ok(second);
    await a.close();
    for (const v of [0, 1]) assert.equal((await lease(store, v)).owner, null);
    const members = [];
    for await (const m of store.list('ingest/groups/g/members/')) members.push(m.key);
    assert.deepEqual(members, []);
    const b = await join(store, new ManualClock(), 'b');
    assert.deepEqual(b.vnodes, [0, 1], 'taken at once, no TTL to wait');
    const rest = await consumeAll(b);
    assert.equal(
      rest.length,
      8 - first.batch.entries.length,
      'the acknowledged batch is not delivered again; the other one is',
    );
    await b.close();
  });

  test('a vnode moves to a member that joins once what was handed out of it is acknowledged', async () => {
    const store = await filled(4, 8, 3);
    const [ca, cb] = [new ManualClock(), new ManualClock()];
    const a = await join(store, ca, 'a');
    const held = await a.next();
    assert.ok(held);
    const b = await join(store, cb, 'b');
    await a.rebalance();
    const moving = [0, 1, 2, 3].filter((v) => !a.vnodes.includes(v));
    assert.ok(a.vnodes.includes(held.vnode) || moving.length === 2);
    await a.ackThrough(held.vnode, held.batch.sequence);
    await a.rebalance();
    await b.rebalance();
    assert.equal(a.vnodes.length + b.vnodes.length, 4);
    assert.equal(b.vnodes.length, 2);
    const got = [
      ...held.batch.entries.map(dec),
      ...(await consumeAll(a)),
      ...(await consumeAll(b)),
    ];
    assert.equal(got.length, 24);
    assert.equal(new Set(got).size, 24, 'nothing delivered twice');
    await Promise.all([a.close(), b.close()]);
  });
});

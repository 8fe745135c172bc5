import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  InvalidArgumentError,
  MemoryStore,
  QueueNotFoundError,
  type Batch,
} from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { ShardedProducer } from '../../src/shard/sharded-producer.ts';
import { ShardedQueue } from '../../src/shard/sharded-queue.ts';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

async function drain(queue: ShardedQueue, vnode: number): Promise<string[]> {
  const c = await Consumer.open({
    queue: queue.vnodeQueue(vnode),
    subscription: 'check',
    gcIntervalMs: 0,
  });
  const out: string[] = [];
  for (let b: Batch | undefined; (b = await c.next());) out.push(...b.entries.map(dec));
  await c.destroy();
  return out;
}

describe('ShardedProducer', () => {
  test('routes by key, keeps per-key order, and records the vnode capacity', async () => {
    const store = new MemoryStore();
    const producer = await ShardedProducer.open({
      store,
      vnodeCapacity: 8,
      flushIntervalMs: 0,
      instanceId: 'p-1',
    });
    const durables: Promise<unknown>[] = [];
    for (let n = 0; n < 50; n++) {
      for (const key of ['k1', 'k2', 'k3', 'k4']) {
        const h = await producer.produce(key, [enc(`${key}:${n}`)]);
        assert.equal(h.vnode, producer.queue.vnodeOf(key));
        durables.push(h.durable);
      }
    }
    const results = (await Promise.all(durables)) as { vnode: number }[];
    assert.ok(results.every((r) => typeof r.vnode === 'number'));
    await producer.close();
    const queue = await ShardedQueue.open({ store });
    assert.equal(queue.vnodeCapacity, 8);
    for (const key of ['k1', 'k2', 'k3', 'k4']) {
      const got = (await drain(queue, queue.vnodeOf(key))).filter((e) => e.startsWith(`${key}:`));
      assert.deepEqual(
        got,
        Array.from({ length: 50 }, (_, n) => `${key}:${n}`),
        key,
      );
    }
    // The writer's id is in the trailers of what it committed.
    const c = await Consumer.open({
      queue: queue.vnodeQueue(queue.vnodeOf('k1')),
      subscription: 'ids',
      gcIntervalMs: 0,
    });
    const [d] = await c.nextDescriptors(1);
    assert.equal(d?.instanceId, 'p-1');
    const log = queue.vnodeQueue(queue.vnodeOf('k1')).logQueue();
    assert.equal((await log.readCommit(0))?.writer, 'p-1', 'and the writer of its commits');
    await c.destroy();
  });

  test('another vnode capacity than the stored one is refused; opening without one needs the queue', async () => {
    const store = new MemoryStore();
    await assert.rejects(ShardedQueue.open({ store }), QueueNotFoundError);
    await (await ShardedQueue.open({ store, vnodeCapacity: 32 })).close();
    await assert.rejects(
      ShardedProducer.open({ store, vnodeCapacity: 16 }),
      (e: unknown) =>
        e instanceof InvalidArgumentError &&
        /has 32 vnodes, not 16.*resharding is not supported/.test(e.message),
    );
    const p = await ShardedProducer.open({ store });
    assert.equal(p.vnodeCapacity, 32);
    await p.close();
  });

  test('the vnode producers share one byte budget: a call waits while other vnodes hold it', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner);
    const producer = await ShardedProducer.open({
      store,
      vnodeCapacity: 8,
      flushIntervalMs: 0,
      maxBufferedBytes: 4096,
    });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    store.before('put', async (call) => {
      if (call.key.includes('/log/')) await gate;
    });
    const a = await producer.produce('user-1', [new Uint8Array(3000)]);
    assert.ok(producer.bufferedBytes >= 3000);
    let admitted = false;
    const b = producer.produce('user-2', [new Uint8Array(3000)]).then((h) => {
      admitted = true;
      return h;
    });
    assert.notEqual(producer.queue.vnodeOf('user-1'), producer.queue.vnodeOf('user-2'));
    await new Promise((r) => setImmediate(r));
    assert.equal(admitted, false, 'the second vnode waits for the first call to be durable');
    release();
    await a.durable;
    await (
      await b
    ).durable;
    assert.equal(admitted, true);
    assert.equal(producer.bufferedBytes, 0);
    await assert.rejects(producer.produce('x', [new Uint8Array(5000)]), /maxBufferedBytes is 4096/);
    await producer.close();
  });
});

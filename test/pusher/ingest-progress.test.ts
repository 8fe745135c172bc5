import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  DataLossError,
  FencedError,
  GarbageCollector,
  IngestProgress,
  InvalidArgumentError,
  MemoryStore,
  Producer,
  Queue,
  StorageError,
  SyncPusher,
  AsyncPusher,
  type Chunk,
} from '../../src/index.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { LOG_MIN_COMMIT_AGE_MS } from '../../src/queue/log-queue.ts';

const enc = new TextEncoder();

/** Chunk `i` of source `s`: `n` lines of 10 bytes from line i*n. */
function chunk(s: string, i: number, n: number, last = false): Chunk {
  const items = Array.from({ length: n }, (_, k) => enc.encode(`${s}${i * n + k}`.padEnd(9, '.')));
  return { source: s, path: `/in/${s}`, items, offset: i * n * 10, size: n * 10, last };
}

async function open(store: MemoryStore | FaultInjectingStore, job = 'j', clock?: ManualClock) {
  const queue = Queue.open({ store });
  const progress = await IngestProgress.open({ queue, job, ...(clock ? { clock } : {}) });
  return { queue, progress };
}

async function holdOf(queue: Queue, job = 'j') {
  return (await queue.subscriptions()).find((s) => s.name === `ingest.${job}`);
}

describe('IngestProgress', () => {
  test('a crash with no checkpoint: the queue itself tells what became durable', async () => {
    const store = new MemoryStore();
    const { queue, progress } = await open(store);
    assert.deepEqual(progress.sources(), []);
    assert.ok(await holdOf(queue), 'the hold subscription exists while the job runs');
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const pusher = new SyncPusher({ producer, job: 'j' });
    for (let i = 0; i < 3; i++) await pusher.push(chunk('a', i, 2));
    await pusher.push(chunk('b', 0, 1, true));
    await producer.destroy(); // crash: no checkpoint was written

    const again = await open(store);
    const a = again.progress.get('a');
    assert.equal(a?.ackedOffset, 60);
    assert.equal(a?.done, false);
    assert.equal(again.progress.get('b')?.done, true);
    assert.equal(again.progress.get('b')?.sizeBytes, 10);
    await queue.close();
    await again.queue.close();
  });

  test('a checkpoint then more chunks then a crash: both are found; a finished job holds nothing back', async () => {
    const store = new MemoryStore();
    const { queue, progress } = await open(store);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const pusher = new AsyncPusher({ producer, job: 'j' });
    await pusher.push(chunk('a', 0, 2));
    await pusher.flush();
    await progress.checkpoint(pusher);
    await pusher.push(chunk('a', 1, 2));
    await pusher.flush();
    await producer.destroy();

    const second = await open(store);
    assert.equal(second.progress.get('a')?.ackedOffset, 40);
    // Resume and finish the source, then finish the job.
    const producer2 = new Producer({ store, flushIntervalMs: 0 });
    const pusher2 = new SyncPusher({ producer: producer2, job: 'j' });
    pusher2.resume(second.progress.get('a') as NonNullable<ReturnType<IngestProgress['get']>>);
    await assert.rejects(pusher2.push(chunk('a', 1, 2)), /already acknowledged/);
    await pusher2.push(chunk('a', 2, 2, true));
    await second.progress.finish(pusher2);
    assert.equal(await holdOf(second.queue), undefined, 'the hold is gone once the job finished');
    await producer2.close();

    const third = await open(store);
    assert.equal(third.progress.get('a')?.done, true);
    assert.equal(third.progress.get('a')?.sizeBytes, 60);
    await queue.close();
    await second.queue.close();
    await third.queue.close();
  });

  test('a gap (a chunk that failed while a later one landed) is remembered, not papered over', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const { queue } = await open(store);
    const producer = new Producer({ store, flushIntervalMs: 0, inlineMaxBytes: 0 });
    const pusher = new SyncPusher({ producer, job: 'j' });
    await pusher.push(chunk('a', 0, 1));
    store.failNext('put', 1, () => new StorageError('lost', { retriable: false }));
    await assert.rejects(pusher.push(chunk('a', 1, 1)));
    await pusher.push(chunk('a', 2, 1, true));
    await producer.destroy();
    const again = await open(store);
    const a = again.progress.get('a');
    assert.equal(a?.ackedOffset, 10);
    assert.deepEqual(a?.ackedBeyond, [[20, 30]]);
    assert.equal(a?.done, false);
    await queue.close();
    await again.queue.close();
  });

  test('the hold keeps what proves progress from the collector, after every subscription acked it', async () => {
    const clock = new ManualClock(1_700_000_000_000);
    const store = new MemoryStore(undefined, { clock });
    const { queue } = await open(store, 'j', clock);
    const producer = new Producer({ store, flushIntervalMs: 0, clock });
    const pusher = new SyncPusher({ producer, job: 'j' });
    for (let i = 0; i < 4; i++) await pusher.push(chunk('a', i, 1));
    await producer.destroy();
    const consumer = await Consumer.open({ store, clock, gcIntervalMs: 0 });
    for (;;) {
      const b = await consumer.next();
      if (!b) break;
      await consumer.ackThrough(b.sequence);
    }
    await consumer.close();
    await clock.advance(LOG_MIN_COMMIT_AGE_MS + 1000);
    await new GarbageCollector({ store, clock, gcGracePeriodMs: 0 }).run();
    const again = await open(store, 'j', clock);
    assert.equal(again.progress.get('a')?.ackedOffset, 40);
    await queue.close();
    await again.queue.close();
  });

  test('a second run of the job fences the first at its next checkpoint', async () => {
    const store = new MemoryStore();
    const first = await open(store);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const pusher = new SyncPusher({ producer, job: 'j' });
    await pusher.push(chunk('a', 0, 1));
    const second = await open(store);
    assert.equal(second.progress.get('a')?.ackedOffset, 10);
    await assert.rejects(first.progress.checkpoint(pusher), FencedError);
    await producer.close();
    await first.queue.close();
    await second.queue.close();
  });

  test('a v1 queue and a bad job name are refused', async () => {
    const store = new MemoryStore();
    const producer = new Producer({ store, layout: 'v1', flushIntervalMs: 0 });
    await (
      await producer.produce([enc.encode('x')])
    ).durable;
    await producer.close();
    const queue = Queue.open({ store });
    await assert.rejects(
      IngestProgress.open({ queue, job: 'j' }),
      (e: unknown) => e instanceof InvalidArgumentError && /v1 layout/.test(e.message),
    );
    await assert.rejects(
      IngestProgress.open({ queue: Queue.open({ store: new MemoryStore() }), job: '../x' }),
      InvalidArgumentError,
    );
    await queue.close();
  });

  test('progress that rests on batches retention deleted is a DataLossError, not a guess', async () => {
    const clock = new ManualClock(1_700_000_000_000);
    const store = new MemoryStore(undefined, { clock });
    const { queue } = await open(store, 'j', clock);
    const producer = new Producer({ store, flushIntervalMs: 0, clock });
    const pusher = new SyncPusher({ producer, job: 'j' });
    for (let i = 0; i < 3; i++) await pusher.push(chunk('a', i, 1));
    await producer.destroy();
    await queue.setRetention({ maxAgeMs: 1000 });
    await clock.advance(LOG_MIN_COMMIT_AGE_MS + 1000);
    // A newer batch, so that the expired ones are not the newest commit.
    const p2 = new Producer({ store, flushIntervalMs: 0, clock });
    await (
      await p2.produce([enc.encode('later')])
    ).durable;
    await p2.close();
    await new GarbageCollector({ store, clock, gcGracePeriodMs: 0 }).run();
    await assert.rejects(open(store, 'j', clock), DataLossError);
    await queue.close();
  });
});

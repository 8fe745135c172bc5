import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  DataLossError,
  FencedError,
  GarbageCollector,
  IngestProgress,
  CorruptDataError,
  InvalidArgumentError,
  MemoryStore,
  OutcomeUnknownError,
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

  test('a hold a user deleted mid-run, then a crash: the chunks past the checkpoint are still found', async () => {
    const store = new MemoryStore();
    const { queue, progress } = await open(store);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const pusher = new SyncPusher({ producer, job: 'j' });
    await pusher.push(chunk('a', 0, 1));
    await progress.checkpoint(pusher);
    await pusher.push(chunk('a', 1, 1));
    await queue.deleteSubscription('ingest.j');
    await producer.destroy(); // crash before the next checkpoint re-creates the hold

    const again = await open(store);
    assert.equal(
      again.progress.get('a')?.ackedOffset,
      20,
      'the chunk past the checkpoint is known',
    );
    await queue.close();
    await again.queue.close();
  });

  test('a chunk whose append outcome was lost keeps the hold at the end of the run: if it landed, the rerun finds it', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const { queue, progress } = await open(store);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const pusher = new AsyncPusher({ producer, job: 'j' });
    await pusher.push(chunk('a', 0, 1));
    await pusher.flush();
    let armed = true;
    store.after('put', (call) => {
      if (!armed || !/\/log\/\d+$/.test(call.key)) return;
      armed = false;
      // The commit landed; its response and the read that would tell are lost.
      store.failNext('get', 100, () => new StorageError('unreachable', { retriable: false }));
      throw new OutcomeUnknownError(call.key, 'injected: the response was lost');
    });
    await pusher.push(chunk('a', 1, 1));
    await assert.rejects(pusher.flush(), OutcomeUnknownError);
    store.reset();
    await pusher.close().catch(() => undefined);
    await producer.close().catch(() => undefined);
    await progress.finish(pusher);
    assert.ok(
      await holdOf(queue),
      'the hold stays: the run did not end with everything acknowledged',
    );

    const again = await open(store);
    assert.equal(again.progress.get('a')?.ackedOffset, 20, 'the chunk that landed is found');
    await queue.close();
    await again.queue.close();
  });

  test('a checkpoint whose sources are malformed is a CorruptDataError naming the object', async () => {
    const store = new MemoryStore();
    const { queue, progress } = await open(store);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const pusher = new SyncPusher({ producer, job: 'j' });
    await pusher.push(chunk('a', 0, 1, true));
    await progress.finish(pusher);
    await producer.close();
    const key = `${queue.logQueue().root}/pusher/j.progress`;
    const stored = JSON.parse(Buffer.from((await store.get(key)).body).toString()) as {
      sources: Record<string, Record<string, unknown>>;
    };
    for (const bad of [
      { ackedOffset: '10' },
      { ackedBeyond: undefined },
      { ackedBeyond: [[5]] },
      { done: 1 },
    ]) {
      const s = structuredClone(stored);
      Object.assign(s.sources.a as object, bad);
      await store.put(key, Buffer.from(JSON.stringify(s)));
      await assert.rejects(
        open(store),
        (e: unknown) => e instanceof CorruptDataError && e.message.includes(key),
        JSON.stringify(bad),
      );
    }
    await queue.close();
  });

  test('a source named "__proto__" keeps its progress in the checkpoint', async () => {
    const store = new MemoryStore();
    const { queue, progress } = await open(store);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const pusher = new SyncPusher({ producer, job: 'j' });
    await pusher.push(chunk('__proto__', 0, 1, true));
    await progress.finish(pusher);
    await producer.close();
    const again = await open(store);
    assert.equal(again.progress.get('__proto__')?.done, true);
    await queue.close();
    await again.queue.close();
  });

  test('checkpoints asked for while the store is slow are coalesced, not queued one per call', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const { queue, progress } = await open(store);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const pusher = new SyncPusher({ producer, job: 'j' });
    await pusher.push(chunk('a', 0, 1));
    let writes = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let started!: () => void;
    const writing = new Promise<void>((r) => (started = r));
    store.before('put', async (call) => {
      if (!call.key.endsWith('/pusher/j.progress')) return;
      writes++;
      if (writes === 1) {
        started();
        await gate;
      }
    });
    const first = progress.checkpoint(pusher);
    await writing;
    // The interval fires again and again while the first write hangs.
    const calls = Array.from({ length: 50 }, () => progress.checkpoint(pusher));
    await pusher.push(chunk('a', 1, 1));
    release();
    await Promise.all([first, ...calls]);
    assert.equal(writes, 2, 'the one being written, and one for every call made meanwhile');
    await producer.destroy();
    const again = await open(store);
    assert.equal(again.progress.get('a')?.ackedOffset, 20);
    await queue.close();
    await again.queue.close();
  });
});

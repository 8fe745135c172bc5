/**
 * The manifest queue's protocol, deterministically: every interleaving is
 * forced with the fault injector's hooks, never by timing.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  CorruptDataError,
  FencedError,
  MemoryStore,
  noopMetrics,
  OutcomeUnknownError,
  StorageError,
} from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { ManifestQueue, type NewEntry } from '../../src/internal.ts';

const entry = (name: string): NewEntry => ({
  location: `ingest/${name}.batch`,
  metadata: [{ startIndex: 0, ingestionTimeMs: 1, payload: new Uint8Array() }],
  extension: new Uint8Array(),
});

function queueOn(store: MemoryStore | FaultInjectingStore, deadlineMs?: number): ManifestQueue {
  return new ManifestQueue({
    store,
    manifestPath: 'ingest/manifest',
    metrics: noopMetrics,
    ...(deadlineMs !== undefined ? { deadlineMs } : {}),
  });
}

async function locations(q: ManifestQueue): Promise<string[]> {
  return (await q.read()).manifest.entries.map((e) => `${e.sequence}:${e.location}`);
}

describe('manifest queue', () => {
  test('append creates the manifest, assigns contiguous sequences, and is idempotent', async () => {
    const store = new MemoryStore();
    const q = queueOn(store);
    assert.deepEqual(await q.append([entry('a'), entry('b')]), [0, 1]);
    assert.deepEqual(await q.append([entry('c')]), [2]);
    // The same locations again: already there, so nothing is appended.
    assert.deepEqual(await q.append([entry('a'), entry('b')]), [0, 1]);
    assert.deepEqual(await locations(q), [
      '0:ingest/a.batch',
      '1:ingest/b.batch',
      '2:ingest/c.batch',
    ]);
  });

  test('a lost race re-reads and appends after the winner, once', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner);
    const q = queueOn(store);
    await q.append([entry('first')]);
    let raced = false;
    store.before('put', async () => {
      if (raced) return;
      raced = true;
      await queueOn(inner).append([entry('winner')]);
    });
    assert.deepEqual(await q.append([entry('loser')]), [2]);
    assert.deepEqual(await locations(q), [
      '0:ingest/first.batch',
      '1:ingest/winner.batch',
      '2:ingest/loser.batch',
    ]);
  });

  test('a write that landed but whose response was lost is found on the re-read, not appended twice', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner);
    const q = queueOn(store);
    store.applyThenFailNext('put');
    assert.deepEqual(await q.append([entry('once')]), [0]);
    assert.deepEqual(await locations(q), ['0:ingest/once.batch']);
    assert.equal(store.stats.appliedThenFailed, 1);
  });

  test('the guard: an append that may have landed and was already dequeued is refused, not appended again', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner);
    const q = queueOn(store);
    const consumerEpoch = await queueOn(inner).fence();
    store.applyThenFailNext('put');
    // Between the lost response and the producer's re-read, a fast consumer dequeues the entry.
    let reads = 0;
    store.before('get', async () => {
      if (++reads === 2) await queueOn(inner).dequeue(0, consumerEpoch);
    });
    await assert.rejects(q.append([entry('maybe')]), (e: unknown) => {
      assert.ok(e instanceof OutcomeUnknownError);
      assert.match(
        e.message,
        /may have landed and already been dequeued \(sequences 0\.\.0 are gone\)/,
      );
      return true;
    });
    const m = (await queueOn(inner).read()).manifest;
    assert.equal(m.nextSequence, 1, 'the entry was appended exactly once');
    assert.deepEqual(m.entries, [], 'and not appended again after the dequeue');
  });

  test('the guard does not fire when others hold the sequences: our write did not land, we append after them', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner);
    const q = queueOn(store);
    await q.append([entry('zero')]);
    // Our write fails without landing, and meanwhile another producer takes sequence 1.
    let failed = false;
    store.before('put', async () => {
      if (failed) return;
      failed = true;
      await queueOn(inner).append([entry('other')]);
      throw new OutcomeUnknownError('ingest/manifest', 'lost (not applied)');
    });
    assert.deepEqual(await q.append([entry('mine')]), [2]);
    assert.deepEqual(await locations(q), [
      '0:ingest/zero.batch',
      '1:ingest/other.batch',
      '2:ingest/mine.batch',
    ]);
  });

  test('the guard does not fire when nothing changed: the write did not land, it is made again', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const q = queueOn(store);
    await q.append([entry('zero')]);
    store.failNext(
      'put',
      1,
      () => new OutcomeUnknownError('ingest/manifest', 'lost (not applied)'),
    );
    assert.deepEqual(await q.append([entry('one')]), [1]);
  });

  test('only some of one append present means the manifest was edited: refused', async () => {
    const store = new MemoryStore();
    const q = queueOn(store);
    await q.append([entry('a')]);
    await assert.rejects(q.append([entry('a'), entry('b')]), CorruptDataError);
  });

  test('fence raises the epoch each time; a dequeue with an older epoch is fenced; dequeue is idempotent', async () => {
    const store = new MemoryStore();
    const q = queueOn(store);
    await q.append([entry('a'), entry('b'), entry('c')]);
    const e1 = await q.fence();
    const e2 = await q.fence();
    assert.equal(e2, e1 + 1);
    await assert.rejects(q.dequeue(0, e1), FencedError);
    await q.dequeue(1, e2);
    await q.dequeue(1, e2);
    assert.deepEqual(await locations(q), ['2:ingest/c.batch']);
  });

  test('conflicts past the deadline end the change with a retriable StorageError', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner);
    const q = queueOn(store, 0);
    await q.append([entry('a')]);
    store.before('put', async () => {
      // Someone else rewrites the manifest just before each of our writes: always a conflict.
      const { body } = await inner.get('ingest/manifest');
      await inner.put('ingest/manifest', body);
    });
    await assert.rejects(q.append([entry('b')]), (e: unknown) => {
      assert.ok(e instanceof StorageError && e.retriable);
      assert.match(e.message, /did not land in 0 ms/);
      return true;
    });
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  AsyncPusher,
  ClosedError,
  InvalidArgumentError,
  MemoryStore,
  Producer,
  Queue,
  StorageError,
  SyncPusher,
  decodeChunkRecord,
  type Chunk,
  type ChunkAck,
} from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';

const enc = new TextEncoder();

/** Chunk `i` of a source of 10-byte lines, `lines` per chunk. */
function chunk(source: string, i: number, lines: number, last = false): Chunk {
  const items = Array.from({ length: lines }, (_, k) =>
    enc.encode(`${source}-${i * lines + k}`.padEnd(9, '.')),
  );
  return { source, path: `/data/${source}`, items, offset: i * lines * 10, size: lines * 10, last };
}

async function entriesOf(store: MemoryStore | FaultInjectingStore): Promise<string[]> {
  const queue = Queue.open({ store });
  const out: string[] = [];
  for await (const b of queue.peek({ fromSequence: 0 })) {
    for (const e of b.entries) out.push(new TextDecoder().decode(e));
  }
  await queue.close();
  return out;
}

describe('SyncPusher', () => {
  test('push resolves once durable; acks are reported; the last chunk completes the source', async () => {
    const store = new MemoryStore();
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const acks: ChunkAck[] = [];
    const pusher = new SyncPusher({ producer, job: 'j', onAck: (a) => acks.push(a) });
    await pusher.push(chunk('a', 0, 3));
    assert.equal(acks.length, 1);
    assert.equal(acks[0]?.sourceDone, false);
    assert.deepEqual(pusher.sourceProgress('a')?.ackedOffset, 30);
    await pusher.push({ ...chunk('a', 1, 2, true), offset: 30, size: 20 });
    assert.equal(acks[1]?.sourceDone, true);
    const p = pusher.sourceProgress('a');
    assert.equal(p?.done, true);
    assert.equal(p?.sizeBytes, 50);
    assert.equal(p?.inFlight, 0);
    assert.equal((await entriesOf(store)).length, 5);

    // The metadata of each chunk names job, source and range.
    const queue = Queue.open({ store });
    const records = [];
    for await (const b of queue.peek({ fromSequence: 0 })) {
      for (const m of b.metadata) records.push(decodeChunkRecord(m.payload));
    }
    assert.deepEqual(
      records.map((r) => [r?.job, r?.source, r?.offset, r?.end, r?.last]),
      [
        ['j', 'a', 0, 30, false],
        ['j', 'a', 30, 50, true],
      ],
    );
    await pusher.close();
    await producer.close();
    await queue.close();
  });

  test('a second ack of a chunk, an ack of a chunk never pushed, and overlapping pushes are errors', async () => {
    const producer = new Producer({ store: new MemoryStore(), flushIntervalMs: 0 });
    const pusher = new SyncPusher({ producer });
    const c = chunk('a', 0, 2);
    await pusher.push(c);
    assert.throws(
      () => pusher.ack(c),
      (e: unknown) => e instanceof InvalidArgumentError && /already acknowledged/.test(e.message),
    );
    assert.throws(() => pusher.ack(chunk('a', 5, 2)), /never pushed/);
    await assert.rejects(pusher.push({ ...chunk('a', 0, 1), offset: 10 }), /already acknowledged/);
    await assert.rejects(pusher.push({ ...c, size: -1 }), InvalidArgumentError);
    await pusher.close();
    await assert.rejects(pusher.push(chunk('a', 1, 1)), ClosedError);
    await producer.close();
  });

  test('a chunk that does not become durable rejects its push and can be pushed again', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const producer = new Producer({ store, flushIntervalMs: 0, inlineMaxBytes: 0 });
    const pusher = new SyncPusher({ producer });
    await pusher.push(chunk('a', 0, 1));
    store.failNext('put', 1, () => new StorageError('disk on fire', { retriable: false }));
    await assert.rejects(pusher.push(chunk('a', 1, 1)), /disk on fire/);
    assert.equal(pusher.sourceProgress('a')?.ackedOffset, 10);
    assert.equal(pusher.sourceProgress('a')?.inFlight, 0);
    await producer.close().catch(() => undefined);
  });

  test('a failed chunk holds acknowledgedThroughSequence back until its bytes are acknowledged, pushed again', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const producer = new Producer({ store, flushIntervalMs: 0, inlineMaxBytes: 0 });
    const sequences: number[] = [];
    const pusher = new SyncPusher({ producer, onAck: (a) => sequences.push(a.sequence) });
    await pusher.push(chunk('a', 0, 1));
    assert.equal(pusher.acknowledgedThroughSequence, sequences[0]);
    store.failNext('put', 1, () => new StorageError('disk on fire', { retriable: false }));
    await assert.rejects(pusher.push(chunk('a', 1, 1)), /disk on fire/);
    await pusher.push(chunk('a', 2, 1));
    // The failed chunk might have landed (a lost response) below this sequence: not past it.
    assert.equal(pusher.acknowledgedThroughSequence, sequences[0]);
    assert.equal(pusher.allAcknowledged, false);
    await pusher.push(chunk('a', 1, 1));
    assert.equal(pusher.acknowledgedThroughSequence, sequences[2]);
    assert.equal(pusher.allAcknowledged, true);
    await pusher.close();
    await producer.close().catch(() => undefined);
  });

  test('a failed chunk keeps no entries alive while it holds the sequence back', async () => {
    const { setFlagsFromString } = await import('node:v8');
    const { runInNewContext } = await import('node:vm');
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const store = new FaultInjectingStore(new MemoryStore());
    const producer = new Producer({ store, flushIntervalMs: 0, inlineMaxBytes: 0 });
    const pusher = new SyncPusher({ producer });
    await pusher.push(chunk('a', 0, 1));
    store.failNext('put', 1, () => new StorageError('disk on fire', { retriable: false }));
    const entry = await (async () => {
      const c = chunk('a', 1, 1);
      c.items = [new Uint8Array(1024 * 1024)];
      await assert.rejects(pusher.push(c));
      return new WeakRef(c.items[0] as Uint8Array);
    })();
    for (let i = 2; i < 5; i++) await pusher.push(chunk('a', i, 1));
    await new Promise((r) => setImmediate(r));
    gc();
    assert.equal(entry.deref(), undefined, 'the entries of the failed chunk were let go');
    await pusher.close();
    await producer.close().catch(() => undefined);
  });
});

describe('AsyncPusher', () => {
  test('bytes in flight never pass maxInFlightBytes while the store is slow', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    let release!: () => void;
    let gate = new Promise<void>((r) => (release = r));
    let reached!: () => void;
    const stalled = new Promise<void>((r) => (reached = r));
    store.before('put', () => {
      reached();
      return gate;
    });
    const producer = new Producer({ store, flushIntervalMs: 0, inlineMaxBytes: 0 });
    const perChunk = chunk('a', 0, 4).items.reduce((n, i) => n + i.byteLength + 96, 0);
    const pusher = new AsyncPusher({ producer, maxInFlightBytes: perChunk * 3 });
    let peak = 0;
    let pushed = 0;
    const pushing = (async () => {
      for (let i = 0; i < 20; i++) {
        await pusher.push(chunk('a', i, 4, i === 19));
        pushed++;
        peak = Math.max(peak, pusher.bytesInFlight);
      }
    })();
    // With the store stalled, at most three chunks are taken.
    await stalled;
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    assert.equal(pushed, 3);
    assert.equal(pusher.bytesInFlight, perChunk * 3);
    // Let the store go: everything arrives, the bound held throughout.
    release();
    gate = Promise.resolve();
    await pushing;
    await pusher.flush();
    assert.ok(peak <= perChunk * 3, `peak ${peak}`);
    assert.equal(pusher.sourceProgress('a')?.done, true);
    assert.equal((await entriesOf(store)).length, 80);
    await pusher.close();
    await producer.close();
  });

  test('push resolves before the chunk is durable; acks come later, in order for one producer', async () => {
    const store = new MemoryStore();
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const acked: number[] = [];
    const pusher = new AsyncPusher({ producer, onAck: (a) => acked.push(a.chunk.offset) });
    for (let i = 0; i < 5; i++) await pusher.push(chunk('b', i, 2, i === 4));
    assert.ok(acked.length < 5);
    assert.throws(() => {
      // Some chunk is still in flight right after the pushes: not durable yet.
      const inFlight = [0, 1, 2, 3, 4]
        .map((i) => chunk('b', i, 2, i === 4))
        .find((c) => !acked.includes(c.offset));
      if (inFlight) pusher.ack(inFlight);
      else throw new InvalidArgumentError('not durable yet (all acked already)');
    }, /not durable yet/);
    await pusher.flush();
    assert.deepEqual(acked, [0, 20, 40, 60, 80]);
    assert.equal(pusher.sourceProgress('b')?.done, true);
    await pusher.close();
    await producer.close();
  });

  test('the first failure stops the pusher: later pushes, flush and close reject with it', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const producer = new Producer({ store, flushIntervalMs: 0, inlineMaxBytes: 0 });
    const pusher = new AsyncPusher({ producer });
    store.failNext('put', 1, () => new StorageError('bucket gone', { retriable: false }));
    await pusher.push(chunk('c', 0, 1));
    await assert.rejects(pusher.flush(), /bucket gone/);
    await assert.rejects(pusher.push(chunk('c', 1, 1)), /bucket gone/);
    await assert.rejects(pusher.close(), /bucket gone/);
    await producer.close().catch(() => undefined);
  });

  test('acks in any order: a source is done only when its last chunk and every chunk before it are acknowledged', async () => {
    const { ProgressTracker } = await import('../../src/pusher/source-progress.ts');
    const t = new ProgressTracker();
    const cs = [0, 1, 2].map((i) => chunk('d', i, 1, i === 2));
    for (const c of cs) t.pushed(c);
    assert.equal(t.acked(cs[2] as Chunk), false);
    assert.deepEqual(t.get('d')?.ackedBeyond, [[20, 30]]);
    assert.equal(t.acked(cs[0] as Chunk), false);
    assert.equal(t.get('d')?.ackedOffset, 10);
    assert.equal(t.acked(cs[1] as Chunk), true);
    assert.equal(t.get('d')?.ackedOffset, 30);
    assert.deepEqual(t.get('d')?.ackedBeyond, []);
    assert.equal(t.get('d')?.done, true);
  });
});

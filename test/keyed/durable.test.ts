import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  FencedError,
  InvalidArgumentError,
  jsonCodec,
  KeyedBuffer,
  MemoryStore,
  type Key,
} from '../../src/index.ts';
import { ManualClock } from '../../src/testing.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A durable buffer on `store` that records its flushes as `key=v1,v2`. */
async function openRecorded(store: MemoryStore, flushes: string[], fail = false) {
  return KeyedBuffer.open({
    store,
    durable: true,
    flushIntervalMs: 60_000,
    retryMax: 0,
    retryDelayMs: 0,
    queue: { pollIntervalMs: 0, gcIntervalMs: 0 },
    onFlush: (key: Key, values: Uint8Array[]) => {
      if (fail) throw new Error('down');
      flushes.push(`${String(key)}=${values.map((v) => dec.decode(v)).join(',')}`);
    },
  });
}

describe('KeyedBuffer durable mode', () => {
  test('values whose insert resolved survive a crash and are flushed after reopening', async () => {
    const store = new MemoryStore();
    const first: string[] = [];
    const a = await openRecorded(store, first);
    for (const v of ['a1', 'a2']) await a.insert('a', enc.encode(v));
    await a.insert('b', enc.encode('b1'));
    assert.equal(a.count('a'), 2);
    await a.destroy(); // a crash: nothing flushed, nothing acknowledged

    const second: string[] = [];
    const b = await openRecorded(store, second);
    assert.equal(b.count('a'), 2, 'read back at open');
    await b.insert('a', enc.encode('a3'));
    await b.close();
    assert.deepEqual(first, []);
    assert.deepEqual(second.sort(), ['a=a1,a2,a3', 'b=b1']);

    // Flushed and acknowledged: nothing comes back.
    const third: string[] = [];
    const c = await openRecorded(store, third);
    assert.equal(c.count('a'), undefined);
    await c.close();
    assert.deepEqual(third, []);
  });

  test('values flushed but not yet acknowledged come back (the duplicates at-least-once allows)', async () => {
    const store = new MemoryStore();
    const first: string[] = [];
    const a = await openRecorded(store, first);
    await a.insert('a', enc.encode('a1'));
    await a.insert('b', enc.encode('b1'));
    await a.flush('a'); // flushed; its batch ack is pending (ackIntervalMs)
    await a.destroy();
    const second: string[] = [];
    const b = await openRecorded(store, second);
    await b.close();
    assert.deepEqual(first, ['a=a1']);
    assert.deepEqual(second.sort(), ['a=a1', 'b=b1']);
  });

  test('values kept after a failed flush stay in the queue across close and reopen', async () => {
    const store = new MemoryStore();
    const a = await openRecorded(store, [], true);
    await a.insert('a', enc.encode('a1'));
    await assert.rejects(a.close(), /down/);
    const second: string[] = [];
    const b = await openRecorded(store, second);
    await b.close();
    assert.deepEqual(second, ['a=a1']);
  });

  test('a second process opening the buffer fences the first: its inserts and flushes fail with FencedError, nothing is lost', async () => {
    const store = new MemoryStore();
    const first: string[] = [];
    const a = await openRecorded(store, first);
    await a.insert('x', enc.encode('x1'));

    const second: string[] = [];
    const b = await openRecorded(store, second);
    assert.equal(b.count('x'), 1, 'the newer holder has the older one’s values');
    // The fenced buffer's append lands in the queue, but the insert fails: it can no longer read it back.
    await assert.rejects(a.insert('x', enc.encode('x2')), FencedError);
    await assert.rejects(a.flush('x'), FencedError);
    await assert.rejects(a.insert('y', enc.encode('y1')), FencedError);
    await assert.rejects(a.close(), FencedError);
    await b.close();
    assert.deepEqual(first, []);
    // x2 was appended by the fenced buffer before its insert failed: the new holder flushes it.
    assert.deepEqual(second, ['x=x1,x2']);
  });

  test('an idle fenced buffer notices the takeover at its next poll and stops flushing', async () => {
    const store = new MemoryStore();
    const clock = new ManualClock();
    const first: string[] = [];
    const a = await KeyedBuffer.open({
      store,
      durable: true,
      clock,
      flushIntervalMs: 5000,
      queue: { pollIntervalMs: 1000, gcIntervalMs: 0 },
      onFlush: (key: Key, values: Uint8Array[]) => {
        first.push(`${String(key)}=${values.map((v) => dec.decode(v)).join(',')}`);
      },
    });
    await a.insert('x', enc.encode('x1'));
    const second: string[] = [];
    const b = await openRecorded(store, second);
    await clock.advance(1000); // a's poll reads the queue and finds its subscription taken over
    await assert.rejects(a.flush('x'), FencedError);
    await clock.advance(10_000); // its interval passes: no flush
    assert.deepEqual(first, []);
    await b.close();
    assert.deepEqual(second, ['x=x1']);
    await assert.rejects(a.close(), FencedError);
  });

  test('values with a codec are stored encoded and handed back decoded, keys of both kinds', async () => {
    const store = new MemoryStore();
    const seen: [Key, unknown[]][] = [];
    const open = () =>
      KeyedBuffer.open<unknown>({
        store,
        durable: true,
        codec: jsonCodec,
        flushIntervalMs: 60_000,
        queue: { pollIntervalMs: 0, gcIntervalMs: 0 },
        onFlush: (key, values) => void seen.push([key, values]),
      });
    const a = await open();
    await a.insert('s', { n: 1 });
    await a.insert(Uint8Array.of(1, 2), ['x']);
    await a.destroy();
    const b = await open();
    await b.close();
    assert.deepEqual(
      seen.sort(
        (x, y) => (typeof x[0] === 'string' ? -1 : 1) - (typeof y[0] === 'string' ? -1 : 1),
      ),
      [
        ['s', [{ n: 1 }]],
        [Uint8Array.of(1, 2), [['x']]],
      ],
    );
  });

  test('queue options are checked: unknown names and bad values are refused', async () => {
    const store = new MemoryStore();
    const onFlush = () => undefined;
    await assert.rejects(
      KeyedBuffer.open({ store, durable: true, onFlush, queue: { maxBufferedByte: 1 } as never }),
      /unknown option "maxBufferedByte"/,
    );
    await assert.rejects(
      KeyedBuffer.open({ store, durable: true, onFlush, queue: { pollIntervalMs: -1 } }),
      InvalidArgumentError,
    );
    assert.throws(() => new KeyedBuffer({ onFlush, durable: true } as never), /KeyedBuffer.open/);
  });
});

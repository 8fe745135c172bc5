/**
 * Shared readers of a subscription (at-least-once): nobody is fenced, each
 * reader records its own progress, the subscription's position is the
 * lowest of them, a silent reader stops holding it back after a timeout,
 * and a consumer that takes the subscription over fences them all.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  CorruptDataError,
  FencedError,
  InvalidArgumentError,
  MemoryStore,
  Queue,
  type ObjectStore,
  type ProcessEntry,
} from '../../src/index.ts';
import { decodeCursor, encodeCursor } from '../../src/internal.ts';
import { ManualClock, skewedClock } from '../../src/testing.ts';
import { produceBatches, v1Store } from '../support/queue.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();

function shared(store: ObjectStore, more: Partial<Parameters<typeof Consumer.open>[0]> = {}) {
  return Consumer.open({ store, gcIntervalMs: 0, shared: true, subscription: 'etl', ...more });
}

/** The stored cursor of subscription "etl". */
async function cursorOf(store: ObjectStore) {
  const queue = Queue.open({ store });
  const subs = await queue.subscriptions();
  await queue.close();
  const etl = subs.find((s) => s.name === 'etl');
  return (
    etl && {
      next: { sequence: etl.nextSequence, index: etl.nextIndex },
      readers: etl.sharedReaders,
    }
  );
}

/** Processes up to `limit` entries at-least-once, recording each; returns their texts. */
async function take(consumer: Consumer, limit?: number): Promise<string[]> {
  const seen: string[] = [];
  await consumer.process(
    (e: ProcessEntry) => {
      seen.push(dec.decode(e.data));
      return 'commit';
    },
    { delivery: 'at-least-once', commitEveryEntries: 1, ...(limit ? { limit } : {}) },
  );
  return seen;
}

describe('shared readers', () => {
  test('two readers read at once, nobody is fenced, and the position is the lower of the two', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [
      ['a', 'b', 'c'],
      ['d', 'e', 'f'],
    ]);
    const one = await shared(store);
    const two = await shared(store);
    assert.deepEqual(await take(one), ['a', 'b', 'c', 'd', 'e', 'f']);
    assert.deepEqual(await take(two, 2), ['a', 'b']);
    assert.deepEqual((await cursorOf(store))?.next, { sequence: 0, index: 2 });
    // The reader behind leaves: the position moves up to the other's.
    await two.close();
    assert.deepEqual((await cursorOf(store))?.next, { sequence: 2, index: 0 });
    // Both kept going: neither was fenced.
    await one.close();
    assert.deepEqual((await cursorOf(store))?.next, { sequence: 2, index: 0 });
  });

  test('a reader that joins counts what another had finished as redelivered', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b', 'c', 'd']]);
    const one = await shared(store);
    const two = await shared(store);
    await take(one, 3);
    // A third reader joins at the position (two holds it at the start) and knows one's progress.
    const three = await shared(store);
    const seen: string[] = [];
    const result = await three.process(
      (e) => {
        seen.push(dec.decode(e.data));
        return 'commit';
      },
      { delivery: 'at-least-once' },
    );
    assert.deepEqual(seen, ['a', 'b', 'c', 'd']);
    assert.equal(result.redelivered, 3);
    await Promise.all([one.close(), two.close(), three.close()]);
  });

  test('a silent reader holds the position back until sharedReaderTimeoutMs, then no longer', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b', 'c', 'd']]);
    const clock = new ManualClock();
    const crashed = await shared(store, { clock, sharedReaderTimeoutMs: 60_000 });
    await take(crashed, 1);
    await crashed.destroy();
    // A reader joins at the subscription's position, which the crashed one holds.
    const alive = await shared(store, { clock, sharedReaderTimeoutMs: 60_000 });
    assert.deepEqual(await take(alive, 2), ['b', 'c']);
    assert.deepEqual((await cursorOf(store))?.next, { sequence: 0, index: 1 });
    await clock.advance(60_000);
    assert.deepEqual(await take(alive, 1), ['d']);
    assert.deepEqual(
      (await cursorOf(store))?.next,
      { sequence: 0, index: 1 },
      'not yet silent long enough',
    );
    await clock.advance(1);
    await produceBatches(store, [['e']]);
    assert.deepEqual(await take(alive, 1), ['e']);
    const after = await cursorOf(store);
    assert.deepEqual(after?.next, { sequence: 2, index: 0 });
    assert.equal(Object.keys(after?.readers ?? {}).length, 1, 'the silent reader was dropped');
    await alive.close();
  });

  test('a consumer that takes the subscription over fences every shared reader', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b'], ['c']]);
    const reader = await shared(store);
    await take(reader, 1);
    const owner = await Consumer.open({ store, gcIntervalMs: 0, subscription: 'etl' });
    await assert.rejects(take(reader), FencedError);
    const seen: string[] = [];
    await owner.process((e) => {
      seen.push(dec.decode(e.data));
      return 'commit';
    });
    assert.deepEqual(seen, ['b', 'c']);
    await owner.close();
    await reader.destroy();
  });

  test('a second reader joining under the same instance id takes its place; the first is fenced', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b', 'c']]);
    const first = await shared(store, { instanceId: 'worker-1' });
    assert.deepEqual(await take(first, 1), ['a']);
    const second = await shared(store, { instanceId: 'worker-1' });
    // It resumes at the position its id recorded.
    assert.deepEqual(await take(second), ['b', 'c']);
    await assert.rejects(take(first), FencedError);
    await second.close();
    await first.destroy();
  });

  test('an instance id "__proto__" is an entry like any other and holds the position', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b', 'c']]);
    const odd = await shared(store, { instanceId: '__proto__' });
    const other = await shared(store, { instanceId: 'plain' });
    await take(odd, 1);
    await take(other);
    const c = await cursorOf(store);
    assert.deepEqual(Object.keys(c?.readers ?? {}).sort(), ['__proto__', 'plain']);
    assert.deepEqual(c?.next, { sequence: 0, index: 1 });
    await odd.close();
    await other.close();
  });

  test('the first shared reader fences a consumer holding the subscription', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b']]);
    const owner = await Consumer.open({ store, gcIntervalMs: 0, subscription: 'etl' });
    const reader = await shared(store);
    await assert.rejects(
      owner.process(() => 'commit'),
      FencedError,
    );
    assert.deepEqual(await take(reader), ['a', 'b']);
    await reader.close();
    await owner.destroy();
  });

  test('a reset removes shared readers: a reader rejoining under its id starts where the reset put it', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b']]);
    const reader = await shared(store, { instanceId: 'r' });
    await take(reader);
    await reader.destroy();
    const queue = Queue.open({ store });
    await queue.resetSubscription('etl', 'oldest');
    await queue.close();
    assert.deepEqual((await cursorOf(store))?.readers, {});
    const again = await shared(store, { instanceId: 'r' });
    assert.deepEqual(await take(again), ['a', 'b']);
    await again.close();
  });

  test('silence is measured by each reader on its own clock: a reader an hour ahead drops nobody at once', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b', 'c']]);
    const base = new ManualClock();
    const slow = await shared(store, { clock: base, instanceId: 'slow' });
    const ahead = await shared(store, {
      clock: skewedClock(3_600_000, base),
      instanceId: 'ahead',
    });
    await take(slow, 1);
    await slow.destroy();
    await take(ahead, 1);
    assert.deepEqual(Object.keys((await cursorOf(store))?.readers ?? {}).sort(), ['ahead', 'slow']);
    // Only after the fast reader has itself seen the other silent for the timeout.
    await base.advance(600_001);
    await take(ahead, 1);
    assert.deepEqual(Object.keys((await cursorOf(store))?.readers ?? {}), ['ahead']);
    await ahead.close();
  });

  test('an idle reader keeps its entry fresh: the others do not drop it', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a']]);
    const clock = new ManualClock();
    const idle = await shared(store, { clock, instanceId: 'idle', sharedReaderTimeoutMs: 60_000 });
    const busy = await shared(store, { clock, instanceId: 'busy', sharedReaderTimeoutMs: 60_000 });
    await take(busy);
    for (let i = 0; i < 10; i++) {
      await clock.advance(20_000);
      for (let j = 0; j < 20; j++) await new Promise((r) => setImmediate(r));
      await produceBatches(store, [[`n${i}`]]);
      await take(busy);
    }
    const c = await cursorOf(store);
    assert.deepEqual(Object.keys(c?.readers ?? {}).sort(), ['busy', 'idle']);
    assert.deepEqual(c?.next, { sequence: 0, index: 0 }, 'idle still holds the position');
    await idle.close();
    await busy.close();
  });

  test('exactly-once on a shared reader, and shared on a v1 queue, are InvalidArgumentErrors', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a']]);
    const reader = await shared(store);
    await assert.rejects(
      reader.process(() => 'commit'),
      (e: unknown) =>
        e instanceof InvalidArgumentError && /opened with shared: true/.test(e.message),
    );
    await reader.close();
    const v1 = await v1Store();
    await produceBatches(v1, [['a']]);
    await assert.rejects(
      Consumer.open({ store: v1, shared: true }),
      (e: unknown) =>
        e instanceof InvalidArgumentError && /shared readers need the log/.test(e.message),
    );
  });

  test('a cursor with an invalid or excessive readers field is corrupt; "__proto__" is a plain id', () => {
    const base = {
      subscription: 'etl',
      epoch: 1,
      next: { sequence: 0, index: 0 },
      commit: 0,
      createdAtMs: 1,
      updatedAtMs: 1,
      holder: 'h',
    };
    const withReaders = (readers: unknown): Uint8Array => {
      const o = JSON.parse(dec.decode(encodeCursor(base))) as Record<string, unknown>;
      o.readers = readers;
      return enc.encode(JSON.stringify(o));
    };
    const reader = { next: { sequence: 1, index: 2 }, updatedAtMs: 5, session: 's' };
    const decoded = decodeCursor(enc.encode(`${dec.decode(withReaders({}))}`), 'c');
    assert.deepEqual(Object.keys(decoded.readers ?? { x: 1 }), []);
    const proto = decodeCursor(
      enc.encode(
        dec
          .decode(withReaders({}))
          .replace('"readers":{}', `"readers":{"__proto__":${JSON.stringify(reader)}}`),
      ),
      'c',
    );
    assert.deepEqual(Object.keys(proto.readers ?? {}), ['__proto__']);
    assert.equal(Object.getPrototypeOf(proto.readers), null);
    assert.deepEqual(proto.readers?.['__proto__'], reader);
    const many = Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`r${i}`, reader]));
    assert.throws(() => decodeCursor(withReaders(many), 'c'), CorruptDataError);
    assert.throws(() => decodeCursor(withReaders({ '': reader }), 'c'), CorruptDataError);
    assert.throws(
      () =>
        decodeCursor(
          withReaders({ r: { next: { sequence: -1, index: 0 }, updatedAtMs: 1, session: 's' } }),
          'c',
        ),
      CorruptDataError,
    );
  });
});

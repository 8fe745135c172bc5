/**
 * Processing entry by entry: commit, retry, skip and stop; the retry policy
 * and what happens when attempts run out (stop, skip, dead letter); positions
 * inside a batch that survive a crash; the three delivery styles; waiting
 * for new entries.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  FencedError,
  InvalidArgumentError,
  MemoryStore,
  Producer,
  Queue,
  StorageError,
  type ObjectStore,
  type ProcessEntry,
  type ProcessOutcome,
} from '../../src/index.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { produceBatches, v1Store } from '../support/queue.ts';

const dec = new TextDecoder();

/** Writes one batch per group, each group's entries in one produce() call with its metadata. */
function open(store: ObjectStore, more: Partial<Parameters<typeof Consumer.open>[0]> = {}) {
  return Consumer.open({ store, gcIntervalMs: 0, ...more });
}

/** A handler that records each entry's text and answers with `decide` (commit by default). */
function recorder(decide: (e: ProcessEntry, text: string) => ProcessOutcome = () => 'commit') {
  const seen: string[] = [];
  const handler = (e: ProcessEntry): ProcessOutcome => {
    const text = dec.decode(e.data);
    seen.push(text);
    return decide(e, text);
  };
  return { seen, handler };
}

describe('process()', () => {
  test('hands out every entry once, in order, with its position, metadata and attempt', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b'], ['c'], ['d', 'e', 'f']]);
    const consumer = await open(store);
    const entries: ProcessEntry[] = [];
    const result = await consumer.process((e) => {
      entries.push(e);
      return 'commit';
    });
    assert.deepEqual(
      entries.map((e) => [
        dec.decode(e.data),
        e.sequence,
        e.index,
        dec.decode(e.metadata),
        e.attempt,
      ]),
      [
        ['a', 0, 0, 'm0', 1],
        ['b', 0, 1, 'm0', 1],
        ['c', 1, 0, 'm1', 1],
        ['d', 2, 0, 'm2', 1],
        ['e', 2, 1, 'm2', 1],
        ['f', 2, 2, 'm2', 1],
      ],
    );
    assert.ok(entries.every((e) => e.ingestionTimeMs > 0));
    assert.deepEqual(result, {
      committed: 6,
      skipped: 0,
      retried: 0,
      deadLettered: 0,
      redelivered: 0,
      reason: 'end',
      position: { sequence: 3, index: 0 },
      recorded: { sequence: 3, index: 0 },
    });
    await consumer.close();
    // Everything is recorded: the next holder has nothing to do.
    const again = await open(store);
    assert.equal(await again.next(), undefined);
    await again.close();
  });

  test('a crash inside a batch resumes at the first entry not committed; committed ones never come again', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b', 'c', 'd', 'e'], ['f']]);
    const first = await open(store);
    const { seen, handler } = recorder();
    const crashed = first.process((e) => {
      if (e.index === 3) {
        // The process dies while handling d: nothing more is recorded.
        void first.destroy(new Error('crash'));
        return new Promise<ProcessOutcome>(() => undefined);
      }
      return handler(e);
    });
    await assert.rejects(crashed, /crash/);
    assert.deepEqual(seen, ['a', 'b', 'c']);

    const second = await open(store);
    assert.deepEqual(second.position, { sequence: 0, index: 3 });
    // The batch API hands out the rest of the batch only, saying where it starts.
    const batch = await second.next();
    assert.equal(batch?.firstIndex, 3);
    assert.deepEqual(
      batch?.entries.map((e) => dec.decode(e)),
      ['d', 'e'],
    );
    await second.destroy();

    const third = await open(store);
    const rest = recorder();
    const result = await third.process(rest.handler);
    assert.deepEqual(rest.seen, ['d', 'e', 'f']);
    assert.equal(result.committed, 3);
    await third.close();
  });

  test("'retry' and thrown errors try the same entry again after the policy's wait, counting attempts", async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b']]);
    const clock = new ManualClock();
    const consumer = await open(store, { clock });
    const attempts: string[] = [];
    const running = consumer.process(
      (e) => {
        attempts.push(`${dec.decode(e.data)}${e.attempt}`);
        if (e.index === 0 && e.attempt === 1) return 'retry';
        if (e.index === 0 && e.attempt === 2) throw new Error('downstream is down');
        return 'commit';
      },
      { retry: { delayMs: 100, maxAttempts: 3, backoff: 'exponential' } },
    );
    await until(() => clock.pendingTimers > 0);
    assert.deepEqual(attempts, ['a1']);
    await clock.advance(99);
    assert.deepEqual(attempts, ['a1'], 'the first retry waits delayMs');
    await clock.advance(1);
    await until(() => attempts.length === 2);
    await clock.advance(199);
    assert.deepEqual(attempts, ['a1', 'a2'], 'the second waits twice as long');
    await clock.advance(1);
    const result = await running;
    assert.deepEqual(attempts, ['a1', 'a2', 'a3', 'b1']);
    assert.equal(result.retried, 2);
    assert.equal(result.committed, 2);
    await consumer.close();
  });

  test('a handler that throws every time: its entry goes to the dead-letter queue, durably, and nothing is lost', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'poison', 'c']]);
    const dlq = new Producer({
      queue: Queue.open({ store, manifestPath: 'dead/manifest', dataPathPrefix: 'dead' }),
      flushIntervalMs: 0,
    });
    const consumer = await open(store);
    const { seen, handler } = recorder((_, text) => {
      if (text === 'poison') throw new Error('cannot parse "poison"');
      return 'commit';
    });
    const result = await consumer.process(handler, {
      retry: { delayMs: 0, maxAttempts: 4 },
      onExhausted: 'dead-letter',
      deadLetter: dlq,
    });
    assert.deepEqual(seen, ['a', 'poison', 'poison', 'poison', 'poison', 'c']);
    assert.deepEqual(
      { ...result, position: undefined, recorded: undefined },
      {
        committed: 2,
        skipped: 0,
        retried: 3,
        deadLettered: 1,
        redelivered: 0,
        reason: 'end',
        position: undefined,
        recorded: undefined,
      },
    );
    await dlq.close();
    await consumer.close();

    const dead = await Consumer.open({
      queue: Queue.open({ store, manifestPath: 'dead/manifest', dataPathPrefix: 'dead' }),
      gcIntervalMs: 0,
    });
    const letters = await dead.next();
    assert.deepEqual(
      letters?.entries.map((e) => dec.decode(e)),
      ['poison'],
    );
    const record = JSON.parse(dec.decode(letters?.metadata[0]?.payload)) as Record<string, unknown>;
    assert.equal(record.sequence, 0);
    assert.equal(record.index, 1);
    assert.equal(record.attempts, 4);
    assert.equal(record.subscription, 'default');
    assert.equal(Buffer.from(record.metadata as string, 'base64').toString(), 'm0');
    assert.match(record.error as string, /cannot parse "poison"/);
    await dead.close();
  });

  test("onExhausted 'stop' returns at the entry and leaves the position before it; 'skip' moves past it", async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'bad', 'c']]);
    const consumer = await open(store);
    const stop = recorder((_, t) => (t === 'bad' ? 'retry' : 'commit'));
    const stopped = await consumer.process(stop.handler, { retry: { delayMs: 0, maxAttempts: 2 } });
    assert.equal(stopped.reason, 'exhausted');
    assert.deepEqual(stopped.position, { sequence: 0, index: 1 });
    assert.deepEqual(stop.seen, ['a', 'bad', 'bad']);

    // The next call starts at the same entry, with fresh attempts.
    const skip = recorder((_, t) => (t === 'bad' ? 'retry' : 'commit'));
    const skipped = await consumer.process(skip.handler, {
      retry: { delayMs: 0, maxAttempts: 2 },
      onExhausted: 'skip',
    });
    assert.deepEqual(skip.seen, ['bad', 'bad', 'c']);
    assert.equal(skipped.skipped, 1);
    assert.equal(skipped.committed, 1);
    assert.deepEqual(skipped.position, { sequence: 1, index: 0 });
    await consumer.close();
  });

  test("'skip' and 'stop' from the handler; 'stop' hands the same entry out first in the next call", async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b', 'c', 'd']]);
    const consumer = await open(store);
    const first = recorder((_, t) => (t === 'b' ? 'skip' : t === 'c' ? 'stop' : 'commit'));
    const r1 = await consumer.process(first.handler);
    assert.deepEqual(first.seen, ['a', 'b', 'c']);
    assert.deepEqual(
      { committed: r1.committed, skipped: r1.skipped, reason: r1.reason },
      { committed: 1, skipped: 1, reason: 'stopped' },
    );
    assert.deepEqual(r1.position, { sequence: 0, index: 2 });
    const second = recorder();
    const r2 = await consumer.process(second.handler);
    assert.deepEqual(second.seen, ['c', 'd']);
    assert.equal(r2.reason, 'end');
    await consumer.close();
  });

  test('limit returns after that many entries; concurrency runs entries at once and records them in order', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [
      ['a', 'b', 'c'],
      ['d', 'e', 'f'],
    ]);
    const consumer = await open(store);
    const limited = recorder();
    const r1 = await consumer.process(limited.handler, { limit: 2 });
    assert.deepEqual(limited.seen, ['a', 'b']);
    assert.equal(r1.reason, 'limit');
    assert.deepEqual(r1.position, { sequence: 0, index: 2 });

    let running = 0;
    let most = 0;
    const seen: string[] = [];
    const r2 = await consumer.process(
      async (e) => {
        running++;
        most = Math.max(most, running);
        seen.push(dec.decode(e.data));
        // Let the others start before this one finishes.
        await new Promise((r) => setImmediate(r));
        running--;
        return 'commit' as const;
      },
      { concurrency: 3 },
    );
    assert.deepEqual(seen, ['c', 'd', 'e', 'f']);
    assert.ok(most > 1, `entries ran at once (at most ${most})`);
    assert.equal(r2.committed, 4);
    assert.deepEqual(r2.position, { sequence: 2, index: 0 });
    await consumer.close();
  });

  test('wait: true waits for new entries until the signal aborts', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a']]);
    const clock = new ManualClock();
    const consumer = await open(store, { clock });
    const controller = new AbortController();
    const seen: string[] = [];
    const running = consumer.process(
      (e) => {
        seen.push(dec.decode(e.data));
        if (seen.length === 2) controller.abort();
        return 'commit';
      },
      { wait: true, pollIntervalMs: 500, signal: controller.signal },
    );
    await until(() => seen.length === 1 && clock.pendingTimers > 0);
    await produceBatches(store, [['b']]);
    await clock.advance(500);
    const result = await running;
    assert.deepEqual(seen, ['a', 'b']);
    assert.equal(result.reason, 'aborted');
    assert.equal(result.committed, 2);
    await consumer.close();
  });

  test('at-least-once records the position every commitEveryEntries entries: a crash repeats at most that many', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b', 'c', 'd', 'e', 'f', 'g']]);
    const first = await open(store);
    const seen: string[] = [];
    await assert.rejects(
      first.process(
        (e) => {
          seen.push(dec.decode(e.data));
          if (e.index === 5) {
            void first.destroy(new Error('crash'));
            return new Promise<ProcessOutcome>(() => undefined);
          }
          return 'commit';
        },
        { delivery: 'at-least-once', commitEveryEntries: 3, commitIntervalMs: 60_000 },
      ),
      /crash/,
    );
    assert.deepEqual(seen, ['a', 'b', 'c', 'd', 'e', 'f']);
    const second = await open(store);
    // a-c were recorded; d and e were finished but not recorded: they come again.
    assert.deepEqual(second.position, { sequence: 0, index: 3 });
    const again = recorder();
    await second.process(again.handler, { delivery: 'at-least-once' });
    assert.deepEqual(again.seen, ['d', 'e', 'f', 'g']);
    await second.close();
  });

  test('a fenced consumer stops processing with FencedError; the new holder resumes where it was recorded', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b', 'c']]);
    const old = await open(store);
    let newer: Consumer | undefined;
    const seen: string[] = [];
    await assert.rejects(
      old.process(async (e) => {
        seen.push(dec.decode(e.data));
        if (e.index === 1) newer = await open(store);
        return 'commit' as const;
      }),
      (e: unknown) => e instanceof FencedError && /taken over by "/.test(e.message),
    );
    assert.deepEqual(seen, ['a', 'b']);
    const rest = recorder();
    await (newer as Consumer).process(rest.handler);
    // a was recorded before b was handed out; b's commit was refused: it comes again.
    assert.deepEqual(rest.seen, ['b', 'c']);
    await (newer as Consumer).close();
    await old.destroy();
  });

  test('on a v1 queue positions are whole batches: a crash inside a batch repeats its finished entries', async () => {
    const store = await v1Store();
    await produceBatches(store, [['a', 'b', 'c'], ['d']]);
    const first = await open(store);
    await assert.rejects(
      first.process((e) => {
        if (e.index === 2) {
          void first.destroy(new Error('crash'));
          return new Promise<ProcessOutcome>(() => undefined);
        }
        return 'commit';
      }),
      /crash/,
    );
    const second = await open(store);
    const again = recorder();
    await second.process(again.handler);
    assert.deepEqual(again.seen, ['a', 'b', 'c', 'd']);
    await second.close();
  });

  test('an entry finished behind one that stopped is not handed out again by this consumer', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b', 'c']]);
    const consumer = await open(store);
    let bDone: () => void = () => undefined;
    const bFinished = new Promise<void>((r) => (bDone = r));
    const first = await consumer.process(
      async (e) => {
        if (e.index === 1) {
          bDone();
          return 'commit';
        }
        await bFinished;
        return 'stop';
      },
      { concurrency: 2 },
    );
    assert.equal(first.reason, 'stopped');
    assert.deepEqual(first.position, { sequence: 0, index: 0 });
    const again = recorder();
    const second = await consumer.process(again.handler);
    // a comes again (it stopped); b, finished behind it, does not; then c.
    assert.deepEqual(again.seen, ['a', 'c']);
    assert.deepEqual(second.position, { sequence: 1, index: 0 });
    await consumer.close();
    const next = await open(store);
    assert.equal(await next.next(), undefined);
    await next.close();
  });

  test('a position whose write failed is written before anything new is handed out', async () => {
    const memory = new MemoryStore();
    await produceBatches(memory, [['a', 'b', 'c']]);
    const store = new FaultInjectingStore(memory);
    const consumer = await open(store);
    let fail = false;
    store.before('put', (call) => {
      if (fail && call.key.includes('subscriptions/')) {
        fail = false;
        throw new StorageError('injected: the cursor write failed', { retriable: false });
      }
    });
    await assert.rejects(
      consumer.process((e) => {
        fail = e.index === 0;
        return 'commit';
      }),
      /the cursor write failed/,
    );
    // The next call records a first; b is handed out only then. A crash while b runs
    // must not bring a back.
    let crash: () => void = () => undefined;
    const crashed = new Promise<void>((r) => (crash = r));
    const second = consumer.process(async (e) => {
      assert.equal(dec.decode(e.data), 'b');
      crash();
      return new Promise<ProcessOutcome>(() => undefined);
    });
    await crashed;
    await consumer.destroy(new Error('crash'));
    await assert.rejects(second, /crash/);
    const next = await open(memory);
    const rest = recorder();
    await next.process(rest.handler);
    assert.deepEqual(rest.seen, ['b', 'c']);
    await next.close();
  });

  test('next() and process() on one consumer: the second style is refused', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a'], ['b']]);
    const batches = await open(store);
    assert.ok(await batches.next());
    await assert.rejects(
      batches.process(() => 'commit'),
      /mixing both would acknowledge/,
    );
    await batches.close();
    const entries = await open(store);
    await entries.process(() => 'commit', { limit: 1 });
    await assert.rejects(entries.next(), /mixing both would acknowledge/);
    await assert.rejects(entries.ack(0), InvalidArgumentError);
    await entries.close();
  });

  test('at-least-once: entries finished and not recorded stay within commitEveryEntries + concurrency', async () => {
    const store = new MemoryStore();
    await produceBatches(
      store,
      Array.from({ length: 5 }, (_, b) => Array.from({ length: 20 }, (_, i) => `${b}-${i}`)),
    );
    const consumer = await open(store);
    let finished = 0;
    const running = consumer.process(
      async (e) => {
        // The first entry hangs (a slow downstream); the other slot races on.
        if (e.sequence === 0 && e.index === 0) return new Promise<ProcessOutcome>(() => undefined);
        finished++;
        return 'commit';
      },
      { delivery: 'at-least-once', concurrency: 2, commitEveryEntries: 10, commitIntervalMs: 0 },
    );
    await until(() => finished >= 11);
    for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r));
    assert.equal(
      finished,
      11,
      'no more than commitEveryEntries + concurrency - 1 finish behind it',
    );
    await consumer.destroy(new Error('crash'));
    await assert.rejects(running, /crash/);
  });

  test('destroy() during a retry wait calls the handler no more; close() lets the entry in flight finish and records it', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a', 'b']]);
    const clock = new ManualClock();
    const retrying = await open(store, { clock });
    let calls = 0;
    const running = retrying.process(
      () => {
        calls++;
        return 'retry';
      },
      { retry: { delayMs: 300, maxAttempts: 3 } },
    );
    await until(() => clock.pendingTimers > 0);
    await retrying.destroy(new Error('gone'));
    await assert.rejects(running, /gone/);
    await clock.advance(10_000);
    assert.equal(calls, 1);

    const closing = await open(store);
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    let started = false;
    const processing = closing.process(async () => {
      started = true;
      await gate;
      return 'commit' as const;
    });
    await until(() => started);
    const closed = closing.close();
    release();
    await closed;
    const result = await processing;
    assert.equal(result.reason, 'aborted');
    assert.equal(result.committed, 1);
    const next = await open(store);
    const rest = recorder();
    await next.process(rest.handler);
    assert.deepEqual(rest.seen, ['b'], 'a was recorded by the close');
    await next.close();
  });

  test('dead letters through another handle or a wrapper of the same store are refused', async () => {
    const memory = new MemoryStore();
    await produceBatches(memory, [['a']]);
    const consumer = await open(memory);
    const wrapped = new Producer({ store: new FaultInjectingStore(memory), flushIntervalMs: 0 });
    await assert.rejects(
      consumer.process(() => 'retry', {
        retry: { delayMs: 0, maxAttempts: 1 },
        onExhausted: 'dead-letter',
        deadLetter: wrapped,
      }),
      /dead letters must go to another queue/,
    );
    // Nothing was handed out or recorded.
    assert.deepEqual(consumer.position, { sequence: 0, index: 0 });
    await wrapped.close();
    await consumer.close();
  });

  test('many process() calls leave no listeners behind', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [Array.from({ length: 20 }, (_, i) => `e${i}`)]);
    const consumer = await open(store);
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      for (let i = 0; i < 20; i++) await consumer.process(() => 'commit', { limit: 1 });
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(warnings, []);
    } finally {
      process.off('warning', onWarning);
    }
    await consumer.close();
  });

  test('a signal that aborts ends the call, hands nothing more out and leaves no unhandled rejection', async () => {
    const memory = new MemoryStore();
    await produceBatches(memory, [['a'], ['b']]);
    const store = new FaultInjectingStore(memory);
    const controller = new AbortController();
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      // The signal aborts while the first entry's position is being written.
      let armed = false;
      store.before('put', (call) => {
        if (armed && call.key.includes('subscriptions/') && !controller.signal.aborted) {
          controller.abort();
        }
      });
      const consumer = await open(store, { readAheadBatches: 1 });
      armed = true;
      const seen: string[] = [];
      const result = await consumer.process(
        (e) => {
          seen.push(dec.decode(e.data));
          return 'commit';
        },
        { signal: controller.signal },
      );
      assert.equal(result.reason, 'aborted');
      assert.deepEqual(seen, ['a']);
      await assert.rejects(
        (await open(memory, { subscription: 'other' })).next({ signal: AbortSignal.abort() }),
        { name: 'AbortError' },
      );
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      assert.deepEqual(unhandled, []);
      await consumer.close();
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  test('on a v1 queue a call that ends inside a batch has recorded only the batch start', async () => {
    const store = await v1Store();
    await produceBatches(store, [['a', 'b', 'c'], ['d']]);
    const consumer = await open(store);
    const r = await consumer.process(() => 'commit', { limit: 1 });
    assert.deepEqual(r.position, { sequence: 0, index: 1 });
    assert.deepEqual(r.recorded, { sequence: 0, index: 0 });
    const all = await consumer.process(() => 'commit');
    assert.deepEqual(all.recorded, { sequence: 2, index: 0 });
    await consumer.close();
  });

  test('bad options and outcomes are InvalidArgumentErrors saying what was expected', async () => {
    const store = new MemoryStore();
    await produceBatches(store, [['a']]);
    const consumer = await open(store, { subscription: 'named' });
    const same = new Producer({ store });
    const cases: [Parameters<Consumer['process']>[1], RegExp][] = [
      [{ concurrency: 0 }, /concurrency must be an integer from 1/],
      [{ retry: { maxAttempts: 0 } }, /retry.maxAttempts must be an integer from 1/],
      [{ onExhausted: 'dead-letter' }, /needs deadLetter, the Producer of another queue/],
      [{ onExhausted: 'dead-letter', deadLetter: same }, /dead letters must go to another queue/],
      [{ deadLetter: same }, /set onExhausted: 'dead-letter'/],
      [{ delivery: 'global-exactly-once' }, /reads subscription "named"/],
      [{ delivery: 'twice' as never }, /delivery must be 'exactly-once'/],
      [{ limt: 1 } as never, /unknown option "limt"/],
      [{ signal: {} as never }, /signal must be an AbortSignal/],
      [{ retry: 5 as never }, /retry must be an object/],
    ];
    for (const [options, message] of cases) {
      await assert.rejects(
        consumer.process(() => 'commit', options),
        (e: unknown) => {
          assert.ok(e instanceof InvalidArgumentError);
          assert.match(e.message, message);
          return true;
        },
      );
    }
    await assert.rejects(
      consumer.process(() => 'done' as never),
      /must resolve to 'commit', 'retry', 'skip' or 'stop', got "done" for entry 0:0/,
    );
    // Nothing was committed by the refused calls.
    assert.deepEqual(consumer.position, { sequence: 0, index: 0 });
    await same.close();
    await consumer.close();
  });
});

/** Waits (by turns of the event loop, never by time) until `condition` holds. */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    if (condition()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error('condition never held');
}

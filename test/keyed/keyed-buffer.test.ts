import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ClosedError,
  InMemoryMetrics,
  InvalidArgumentError,
  jsonCodec,
  KeyedBuffer,
  type FlushInfo,
  type Key,
  type KeyedBufferOptions,
} from '../../src/index.ts';
import { ManualClock, MemoryLogger, mulberry32 } from '../../src/testing.ts';
import { deferred, settlesWithin, until, type Deferred } from '../support/deferred.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const b = (s: string): Uint8Array => enc.encode(s);

interface Call {
  key: Key;
  values: string[];
  info: FlushInfo;
  atMs: number;
}

/** A buffer on a manual clock whose flushes are recorded (and optionally held or failed). */
function recorded(
  options: Partial<KeyedBufferOptions> & {
    handler?: (key: Key, values: string[], info: FlushInfo) => unknown;
  } = {},
) {
  const clock = new ManualClock(0);
  const calls: Call[] = [];
  const { handler, ...rest } = options;
  const buffer = new KeyedBuffer({
    clock,
    onFlush: (key, values, info) => {
      const text = values.map((v) => dec.decode(v));
      calls.push({ key, values: text, info, atMs: clock.now() });
      return handler?.(key, text, info);
    },
    ...rest,
  });
  return { clock, calls, buffer };
}

describe('KeyedBuffer: schedule', () => {
  test('every flush falls in [interval, interval + jitter] after the insert of the key’s first value', async () => {
    const draws = mulberry32(7);
    const { clock, calls, buffer } = recorded({
      flushIntervalMs: 1000,
      jitterMs: 300,
      random: draws,
    });
    const firstInsert = new Map<string, number>();
    // 20 keys, inserted at scattered times over 3 rounds; each key's first insert of a round starts its interval.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 20; i++) {
        const key = `k${i}`;
        if (!firstInsert.has(`${round}/${key}`)) firstInsert.set(`${round}/${key}`, clock.now());
        await buffer.insert(key, b(`${round}-${i}`));
        await clock.advance(37);
      }
      await clock.advance(2000);
    }
    assert.equal(calls.length, 60, 'one flush per key and round');
    const delays = calls.map((c) => {
      const round = Number(c.values[0]?.split('-')[0]);
      const start = firstInsert.get(`${round}/${String(c.key)}`) as number;
      assert.equal(c.info.firstInsertMs, start);
      assert.equal(c.info.reason, 'interval');
      return c.atMs - start;
    });
    for (const d of delays) assert.ok(d >= 1000 && d <= 1300, `flush ${d} ms after first insert`);
    // The jitter is drawn: the delays are not all equal.
    assert.ok(new Set(delays).size > 10);
    await buffer.close();
  });

  test('nothing is flushed before the interval; after a flush the next insert starts a new interval', async () => {
    const { clock, calls, buffer } = recorded({ flushIntervalMs: 1000 });
    await buffer.insert('a', b('1'));
    await clock.advance(600);
    await buffer.insert('a', b('2')); // same interval: started by '1'
    await clock.advance(399);
    assert.equal(calls.length, 0);
    await clock.advance(1);
    assert.deepEqual(
      calls.map((c) => [c.atMs, c.values]),
      [[1000, ['1', '2']]],
    );
    await clock.advance(500);
    await buffer.insert('a', b('3')); // new interval from 1500
    await clock.advance(999);
    assert.equal(calls.length, 1);
    await clock.advance(1);
    assert.deepEqual(calls[1]?.values, ['3']);
    assert.equal(calls[1]?.atMs, 2500);
    await buffer.close();
  });

  test('a key reaching maxValuesPerKey is flushed early, with at most that many values', async () => {
    const { calls, buffer } = recorded({ flushIntervalMs: 60_000, maxValuesPerKey: 3 });
    for (const v of ['1', '2', '3', '4']) await buffer.insert('a', b(v));
    await until(() => calls.length === 1);
    assert.deepEqual(calls[0]?.values, ['1', '2', '3']);
    assert.equal(calls[0]?.info.reason, 'size');
    assert.equal(buffer.count('a'), 1);
    await buffer.close();
    assert.deepEqual(calls[1]?.values, ['4']);
  });

  test('idleTimeoutMs: a key with no insert for that long is flushed, then forgotten', async () => {
    const { clock, calls, buffer } = recorded({ flushIntervalMs: 10_000, idleTimeoutMs: 3000 });
    assert.equal(buffer.count('a'), undefined);
    await buffer.insert('a', b('1'));
    await clock.advance(2000);
    await buffer.insert('a', b('2')); // resets the idle time
    await clock.advance(2999);
    assert.equal(calls.length, 0);
    await clock.advance(1);
    assert.deepEqual(
      calls.map((c) => [c.info.reason, c.values]),
      [['idle', ['1', '2']]],
    );
    assert.equal(buffer.count('a'), undefined, 'forgotten once flushed');

    // A key flushed by its interval counts 0 until it has been idle that long.
    const other = recorded({ flushIntervalMs: 1000, idleTimeoutMs: 5000 });
    await other.buffer.insert('k', b('x'));
    await other.clock.advance(1000);
    assert.equal(other.calls.length, 1);
    assert.equal(other.buffer.count('k'), 0);
    await other.clock.advance(3999);
    assert.equal(other.buffer.count('k'), 0);
    await other.clock.advance(1);
    assert.equal(other.buffer.count('k'), undefined);
    await buffer.close();
    await other.buffer.close();
  });
});

describe('KeyedBuffer: order and concurrency', () => {
  test('values arrive in insert order; values inserted during a flush go to the next one', async () => {
    const gate = deferred();
    let inFlight = 0;
    let maxInFlight = 0;
    const { clock, calls, buffer } = recorded({
      flushIntervalMs: 100,
      handler: async () => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        if (calls.length === 1) await gate.promise;
        inFlight--;
      },
    });
    for (let i = 0; i < 5; i++) await buffer.insert('a', b(`v${i}`));
    await clock.advance(100); // flush 1 starts and is held
    for (let i = 5; i < 8; i++) await buffer.insert('a', b(`v${i}`));
    const explicit = buffer.flush('a'); // asks for the next flush while one runs
    await clock.advance(500);
    assert.equal(calls.length, 1, 'no second flush of a key while one runs');
    assert.equal(buffer.count('a'), 8);
    gate.resolve();
    await explicit;
    assert.deepEqual(
      calls.map((c) => c.values),
      [
        ['v0', 'v1', 'v2', 'v3', 'v4'],
        ['v5', 'v6', 'v7'],
      ],
    );
    assert.equal(maxInFlight, 1);
    assert.equal(buffer.count('a'), 0);
    await buffer.close();
  });

  test('a key whose handler hangs does not delay the others (partitions, concurrency)', async () => {
    const { clock, calls, buffer } = recorded({
      flushIntervalMs: 100,
      partitions: 4,
      maxConcurrentFlushes: 4,
      handler: (key) => (key === 'stuck' ? new Promise(() => undefined) : undefined),
    });
    await buffer.insert('stuck', b('s'));
    for (let i = 0; i < 3; i++) await buffer.insert(`k${i}`, b(`${i}`));
    await clock.advance(100);
    assert.equal(calls.length, 4);
    // Later rounds of the other keys keep their schedule while 'stuck' still hangs.
    for (let i = 0; i < 3; i++) await buffer.insert(`k${i}`, b(`${i}'`));
    await clock.advance(100);
    assert.equal(calls.length, 7);
    assert.ok(calls.every((c) => c.atMs - c.info.firstInsertMs === 100));
    assert.deepEqual(
      new Set(calls.map((c) => c.info.partition)).size > 1,
      true,
      'keys are spread over partitions',
    );
    assert.equal(buffer.count('stuck'), 1);
    await buffer.destroy();
  });

  test('at most maxConcurrentFlushes run at once; the rest wait for a slot', async () => {
    const gates = new Map<string, Deferred>();
    const { clock, calls, buffer } = recorded({
      flushIntervalMs: 10,
      maxConcurrentFlushes: 2,
      handler: (key) => {
        const g = deferred();
        gates.set(String(key), g);
        return g.promise;
      },
    });
    for (const k of ['a', 'b', 'c']) await buffer.insert(k, b(k));
    await clock.advance(10);
    assert.deepEqual(
      calls.map((c) => c.key),
      ['a', 'b'],
    );
    gates.get('a')?.resolve();
    await until(() => calls.length === 3);
    assert.equal(calls[2]?.key, 'c');
    gates.get('b')?.resolve();
    gates.get('c')?.resolve();
    await buffer.close();
  });

  test('string keys and byte keys are distinct; byte keys compare by content', async () => {
    const { calls, buffer } = recorded({ flushIntervalMs: 10 });
    await buffer.insert('ab', b('1'));
    await buffer.insert(b('ab'), b('2'));
    await buffer.insert(Uint8Array.from([0x61, 0x62]), b('3'));
    assert.equal(buffer.count('ab'), 1);
    assert.equal(buffer.count(b('ab')), 2);
    await buffer.close();
    assert.equal(calls.length, 2);
    const bytesCall = calls.find((c) => c.key instanceof Uint8Array);
    assert.deepEqual(bytesCall?.values, ['2', '3']);
  });
});

describe('KeyedBuffer: retries and errors', () => {
  test('a failing handler is retried retryMax times after retryDelayMs (+ jitter), then onError gets the values', async () => {
    const clock = new ManualClock(0);
    const metrics = new InMemoryMetrics();
    const attempts: number[] = [];
    const errors: [Key, string[], unknown, number][] = [];
    const buffer = new KeyedBuffer({
      clock,
      metrics,
      flushIntervalMs: 100,
      retryDelayMs: 1000,
      jitterMs: 50,
      random: () => 0.5,
      retryMax: 2,
      onFlush: () => {
        attempts.push(clock.now());
        throw new Error(`boom ${attempts.length}`);
      },
      onError: (key, values, error, info) => {
        errors.push([key, values.map((v) => dec.decode(v)), error, info.attempt]);
      },
    });
    await buffer.insert('a', b('1'));
    await buffer.insert('a', b('2'));
    await clock.advance(100 + 25); // the interval's jitter: floor(0.5 * 51) = 25
    assert.deepEqual(attempts, [125]);
    await clock.advance(1024);
    assert.deepEqual(attempts, [125]);
    await clock.advance(1);
    assert.deepEqual(attempts, [125, 1150]);
    await clock.advance(1025);
    assert.deepEqual(attempts, [125, 1150, 2175], 'retryMax 2: three attempts in all');
    assert.equal(errors.length, 1);
    assert.deepEqual(errors[0]?.slice(0, 2), ['a', ['1', '2']]);
    assert.equal((errors[0]?.[2] as Error).message, 'boom 3');
    assert.equal(errors[0]?.[3], 3);
    assert.equal(buffer.count('a'), 0, 'handled by onError');
    assert.equal(metrics.counter('keyed.retries'), 2);
    assert.equal(metrics.counter('keyed.errors'), 1);
    assert.equal(metrics.counter('keyed.flushes'), 0);
    await buffer.close();
  });

  test('without onError the values are kept, in front and in order, reported, and flushed at the next interval', async () => {
    let fail = true;
    const reported: unknown[] = [];
    const { clock, calls, buffer } = recorded({
      flushIntervalMs: 100,
      retryDelayMs: 10,
      retryMax: 1,
      handler: () => {
        if (fail) throw new Error('down');
      },
    });
    buffer.on('error', (e: unknown) => reported.push(e));
    await buffer.insert('a', b('1'));
    const flushed = buffer.flush('a');
    flushed.catch(() => undefined);
    await until(() => calls.length === 1);
    await clock.advance(10); // the retry
    await assert.rejects(flushed, /down/);
    assert.equal(calls.length, 2);
    assert.equal(reported.length, 1);
    await buffer.insert('a', b('2'));
    assert.equal(buffer.count('a'), 2);
    fail = false;
    await clock.advance(99);
    assert.equal(calls.length, 2, 'not before the next interval');
    await clock.advance(1);
    assert.deepEqual(calls.at(-1)?.values, ['1', '2']);
    assert.equal(buffer.count('a'), 0);
    await buffer.close();
  });

  test('a failure with no error listener is logged, not thrown as an unhandled event', async () => {
    const logger = new MemoryLogger();
    const { buffer } = recorded({
      flushIntervalMs: 100,
      retryMax: 0,
      logger,
      handler: () => {
        throw new Error('down');
      },
    });
    await buffer.insert('a', b('1'));
    await assert.rejects(buffer.flush('a'), /down/);
    assert.equal(buffer.listenerCount('error'), 0);
    assert.ok(logger.lines.some((l) => l.level === 'error' && l.fields.error === 'down'));
    assert.equal(buffer.count('a'), 1);
    await buffer.destroy();
  });

  test('an onError that throws keeps the values too; close() rejects and says so', async () => {
    const reported: unknown[] = [];
    const { buffer } = recorded({
      flushIntervalMs: 100,
      retryDelayMs: 0,
      retryMax: 0,
      handler: () => Promise.reject(new Error('handler')),
      onError: () => {
        throw new Error('onError too');
      },
    });
    buffer.on('error', (e: unknown) => reported.push(e));
    await buffer.insert('a', b('1'));
    await assert.rejects(buffer.close(), /onError too/);
    assert.equal(buffer.count('a'), 1, 'kept, not dropped');
    assert.equal(reported.length, 1);
    await assert.rejects(buffer.close(), /onError too/, 'idempotent');
  });
});

describe('KeyedBuffer: backpressure and lifecycle', () => {
  test('insert waits for room under a handler that never returns; it never drops', async () => {
    const { clock, calls, buffer } = recorded({
      flushIntervalMs: 100,
      maxBufferedValues: 3,
      handler: () => new Promise(() => undefined),
    });
    for (let i = 0; i < 3; i++) await buffer.insert(`k${i}`, b(`${i}`));
    const waiting = buffer.insert('k9', b('9'));
    assert.equal(await settlesWithin(waiting), false);
    // Waiting made the buffer flush what it holds, to make room: the handler hangs.
    assert.equal(calls.length, 3);
    await clock.advance(10_000);
    assert.equal(await settlesWithin(waiting), false);
    assert.equal(buffer.count('k9'), undefined);
    const aborted = new AbortController();
    const abortable = buffer.insert('k8', b('8'), { signal: aborted.signal });
    aborted.abort(new Error('gave up'));
    await assert.rejects(abortable, /gave up/);
    await buffer.destroy();
    await assert.rejects(waiting, ClosedError);
  });

  test('a waiting insert is admitted once a flush makes room (bytes)', async () => {
    const gate = deferred();
    const { calls, buffer } = recorded({
      flushIntervalMs: 60_000,
      maxBufferedBytes: 12, // each value's bytes and its key's count
      handler: () => gate.promise,
    });
    await buffer.insert('a', b('12345'));
    await buffer.insert('b', b('12345'));
    const waiting = buffer.insert('c', b('1'));
    assert.equal(await settlesWithin(waiting), false);
    assert.equal(calls.length, 2, 'pressure flushes');
    assert.deepEqual(
      calls.map((c) => c.info.reason),
      ['pressure', 'pressure'],
    );
    gate.resolve();
    await waiting;
    assert.equal(buffer.count('c'), 1);
    await assert.rejects(buffer.insert('d', b('123456789012')), InvalidArgumentError);
    await buffer.close();
  });

  test('close() flushes everything, is idempotent, and later inserts are refused', async () => {
    const { calls, buffer } = recorded({ flushIntervalMs: 60_000 });
    await buffer.insert('a', b('1'));
    await buffer.insert('b', b('2'));
    await Promise.all([buffer.close(), buffer.close()]);
    assert.deepEqual(calls.map((c) => [c.key, c.info.reason]).sort(), [
      ['a', 'close'],
      ['b', 'close'],
    ]);
    await assert.rejects(buffer.insert('a', b('3')), ClosedError);
    await buffer.close();
  });

  test('flushAll() flushes every key now and resolves when their handlers finished', async () => {
    const { calls, buffer } = recorded({ flushIntervalMs: 60_000 });
    for (const k of ['a', 'b', 'c']) await buffer.insert(k, b(k));
    await buffer.flushAll();
    assert.equal(calls.length, 3);
    assert.deepEqual(buffer.stats(), {
      keys: 3,
      keysBuffered: 0,
      values: 0,
      bytes: 0,
      flushesRunning: 0,
      oldestValueAgeMs: 0,
    });
    await buffer.close();
  });

  test('JSON values with the built-in codec; options are checked', async () => {
    const clock = new ManualClock(0);
    const seen: unknown[][] = [];
    const buffer = new KeyedBuffer<unknown>({
      clock,
      codec: jsonCodec,
      onFlush: (_key, values) => void seen.push(values),
    });
    await buffer.insert('a', { n: 1 });
    await buffer.insert('a', [2]);
    await assert.rejects(buffer.insert('a', undefined), InvalidArgumentError);
    await buffer.close();
    assert.deepEqual(seen, [[{ n: 1 }, [2]]]);
    assert.throws(
      () => new KeyedBuffer({ onFlush: () => undefined, flushIntervalMS: 1 } as never),
      /unknown option "flushIntervalMS"/,
    );
    assert.throws(() => new KeyedBuffer({ onFlush: () => undefined, retryMax: -1 }), /retryMax/);
    await assert.rejects(
      buffer.insert(42 as never, b('x')),
      (e: unknown) => e instanceof ClosedError,
    );
  });

  test('metrics: flushes, values, duration, keys buffered and oldest age', async () => {
    const metrics = new InMemoryMetrics();
    const { clock, buffer } = recorded({ flushIntervalMs: 100, metrics });
    await buffer.insert('a', b('1'));
    await buffer.insert('b', b('2'));
    await clock.advance(50);
    await buffer.insert('b', b('3'));
    assert.equal(buffer.stats().oldestValueAgeMs, 50);
    await clock.advance(50);
    assert.equal(metrics.counter('keyed.flushes'), 2);
    assert.equal(metrics.counter('keyed.values_flushed'), 3);
    assert.equal(metrics.histograms.get('keyed.flush_duration_seconds')?.length, 2);
    assert.ok(metrics.gauges.has('keyed.keys_buffered'));
    assert.ok(metrics.gauges.has('keyed.oldest_value_age_seconds'));
    await buffer.close();
  });
});

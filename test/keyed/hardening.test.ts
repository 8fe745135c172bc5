/**
 * Regression tests for the findings of a hostile review of the keyed buffer:
 * each test failed before its fix.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  CorruptDataError,
  InMemoryMetrics,
  InvalidArgumentError,
  KeyedBuffer,
  MemoryStore,
  type Codec,
  type FlushReason,
  type Key,
  type KeyedBufferOptions,
} from '../../src/index.ts';
import { ManualClock, MemoryLogger } from '../../src/testing.ts';
import { settlesWithin, until } from '../support/deferred.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const b = (s: string): Uint8Array => enc.encode(s);
const QUEUE = { pollIntervalMs: 0, gcIntervalMs: 0 };

/** JSON objects; when `strict.on`, decode refuses objects without `n` (a schema change). */
function schemaCodec(strict: { on: boolean }): Codec<Record<string, unknown>> {
  return {
    encode: (v) => enc.encode(JSON.stringify(v)),
    decode: (bytes) => {
      const v = JSON.parse(dec.decode(bytes)) as Record<string, unknown>;
      if (strict.on && v.n === undefined) throw new Error('v2 decoder: missing n');
      return v;
    },
  };
}

describe('KeyedBuffer hardening: values the codec cannot decode (durable)', () => {
  test('insert() rejects a value whose encoded bytes do not decode, before storing it', async () => {
    const store = new MemoryStore();
    const strict = { on: true };
    const flushed: unknown[] = [];
    const open = () =>
      KeyedBuffer.open<Record<string, unknown>>({
        store,
        durable: true,
        codec: schemaCodec(strict),
        flushIntervalMs: 60_000,
        queue: QUEUE,
        onFlush: (_k, values) => void flushed.push(...values),
      });
    const a = await open();
    await a.insert('k', { n: 1 });
    const error = await a.insert('k', { m: 2 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(error instanceof InvalidArgumentError, String(error));
    assert.match(error.message, /decode\(\) cannot read back/);
    assert.equal((error.cause as Error).message, 'v2 decoder: missing n');
    assert.equal(a.count('k'), 1);
    await a.close();
    strict.on = false;
    const again = await open();
    assert.equal(again.count('k'), undefined, 'nothing undecodable was stored');
    await again.close();
    assert.deepEqual(flushed, [{ n: 1 }]);
  });

  test('a stored value that no longer decodes is reported, not acknowledged, and flushed by a fixed codec after reopening', async () => {
    const store = new MemoryStore();
    const strict = { on: false };
    const flushed: unknown[] = [];
    const metrics = new InMemoryMetrics();
    const logger = new MemoryLogger();
    const open = () =>
      KeyedBuffer.open<Record<string, unknown>>({
        store,
        durable: true,
        codec: schemaCodec(strict),
        flushIntervalMs: 60_000,
        metrics,
        logger,
        queue: QUEUE,
        onFlush: (_k, values) => void flushed.push(...values),
        onError: () => undefined,
      });
    const first = await open();
    await first.insert('k', { m: 1 });
    await first.insert('k', { n: 2 });
    await first.destroy(); // a crash: both stay in the queue

    strict.on = true; // the next version's codec refuses the first value
    const events: unknown[] = [];
    const second = await open();
    second.on('error', (e: unknown) => events.push(e));
    await until(() => events.length === 1); // emitted on the turn after open() returned
    assert.ok(events[0] instanceof CorruptDataError);
    assert.equal(metrics.counter('keyed.undecodable_values'), 1);
    assert.ok(logger.lines.some((r) => r.level === 'error' && /does not decode/.test(r.message)));
    assert.equal(second.count('k'), 1, 'only the decodable value is buffered');
    await assert.rejects(second.close(), CorruptDataError);
    assert.deepEqual(flushed, [{ n: 2 }]);

    strict.on = false; // fixed: the value is still in the queue
    const third = await open();
    assert.equal(third.count('k'), 2, 'not acknowledged: it holds its batch (and the next) back');
    await third.close();
    assert.deepEqual(flushed, [{ n: 2 }, { m: 1 }, { n: 2 }]);
    assert.equal(events.length, 1);
  });
});

describe('KeyedBuffer hardening: backpressure', () => {
  for (const durable of [false, true]) {
    test(`concurrent inserts under backpressure trigger a pressure flush (${durable ? 'durable' : 'memory'})`, async () => {
      const clock = new ManualClock(0);
      const reasons: FlushReason[] = [];
      const options: KeyedBufferOptions = {
        clock,
        flushIntervalMs: 60_000,
        maxBufferedValues: 1,
        onFlush: (_k, _v, info) => void reasons.push(info.reason),
      };
      const buffer = durable
        ? await KeyedBuffer.open({
            ...options,
            store: new MemoryStore(),
            durable: true,
            queue: QUEUE,
          })
        : new KeyedBuffer(options);
      const both = Promise.all([buffer.insert('a', b('1')), buffer.insert('b', b('2'))]);
      assert.equal(
        await settlesWithin(both),
        true,
        'the second insert got room without the clock moving',
      );
      assert.deepEqual(reasons, ['pressure']);
      await buffer.close();
      assert.deepEqual(reasons, ['pressure', 'close'], 'every resolved insert flushed by close()');
    });
  }

  test('inserts waiting for room reject when close() fails', async () => {
    const clock = new ManualClock(0);
    const buffer = new KeyedBuffer({
      clock,
      maxBufferedValues: 2,
      retryMax: 0,
      flushIntervalMs: 60_000,
      onFlush: () => {
        throw new Error('sink down');
      },
    });
    buffer.on('error', () => undefined);
    await buffer.insert('k', b('1'));
    await buffer.insert('k', b('2'));
    const waiting = buffer.insert('j', b('3'));
    assert.equal(await settlesWithin(waiting), false);
    await assert.rejects(buffer.close(), /sink down/);
    assert.equal(await settlesWithin(waiting), true, 'settled with the close');
    await assert.rejects(waiting, /sink down/);
  });
});

describe('KeyedBuffer hardening: kept values and maxValuesPerKey', () => {
  test('a full key whose flush failed waits for a new interval, not a size flush at once', async () => {
    const clock = new ManualClock(0);
    const at: number[] = [];
    const buffer = new KeyedBuffer({
      clock,
      maxValuesPerKey: 2,
      retryMax: 1,
      retryDelayMs: 1000,
      flushIntervalMs: 60_000,
      idleTimeoutMs: 600_000,
      onFlush: () => {
        at.push(clock.now());
        throw new Error('down');
      },
    });
    buffer.on('error', () => undefined);
    await buffer.insert('k', b('1'));
    await buffer.insert('k', b('2'));
    await buffer.insert('k', b('3')); // full and failed: no size flush either
    for (let i = 0; i < 100; i++) await clock.advance(100);
    assert.deepEqual(at, [0, 1000], 'the attempt and its one retry');
    await clock.advance(52_000); // the new interval started at the failure (1000)
    assert.deepEqual(at, [0, 1000, 61_000, 62_000]);
    await buffer.destroy();
  });
});

describe('KeyedBuffer hardening: keys', () => {
  test('string keys that are not well-formed UTF-16 are refused in both modes', async () => {
    const memory = new KeyedBuffer({ onFlush: () => undefined });
    const durable = await KeyedBuffer.open({
      store: new MemoryStore(),
      durable: true,
      queue: QUEUE,
      onFlush: () => undefined,
    });
    for (const buffer of [memory, durable]) {
      for (const key of ['\ud800', 'a\udc00b', '\udc00\ud800']) {
        await assert.rejects(buffer.insert(key, b('x')), InvalidArgumentError);
        assert.throws(() => buffer.count(key), /well-formed UTF-16/);
      }
      await buffer.insert('😀', b('ok')); // a surrogate pair is fine
      assert.equal(buffer.count('😀'), 1);
      await buffer.close();
    }
  });

  test('in memory mode a key’s bytes count against maxBufferedBytes', async () => {
    const buffer = new KeyedBuffer({ maxBufferedBytes: 100, onFlush: () => undefined });
    await buffer.insert('k'.repeat(40), b('12345'));
    assert.equal(buffer.stats().bytes, 45);
    await assert.rejects(buffer.insert('k'.repeat(96), b('12345')), /can never fit/);
    await buffer.close();
  });
});

describe('KeyedBuffer hardening: inserts from inside a handler', () => {
  test('an insert from onFlush that would wait for room is refused instead of deadlocking', async () => {
    const clock = new ManualClock(0);
    const outcomes: string[] = [];
    const buffer: KeyedBuffer = new KeyedBuffer({
      clock,
      maxBufferedValues: 2,
      flushIntervalMs: 10,
      onFlush: async (key: Key): Promise<void> => {
        if (key !== 'a') return;
        try {
          await buffer.insert('audit', b('x'));
          outcomes.push('inserted');
        } catch (e) {
          outcomes.push(e instanceof InvalidArgumentError ? 'refused' : String(e));
        }
      },
    });
    await buffer.insert('a', b('1'));
    await clock.advance(10); // room: the reentrant insert goes through
    await until(() => outcomes.length === 1);
    await clock.advance(10); // 'audit' flushed
    assert.equal(buffer.stats().values, 0);
    await buffer.insert('a', b('2'));
    await buffer.insert('a', b('3')); // full: a's flush is the only way to make room
    await clock.advance(10);
    await until(() => outcomes.length === 2);
    assert.deepEqual(outcomes, ['inserted', 'refused']);
    await buffer.close();
  });
});

describe('KeyedBuffer hardening: bad input', () => {
  test('close({ timeoutMs }) must be an integer >= 0; a refused close destroys nothing', async () => {
    const flushed: string[] = [];
    const buffer = new KeyedBuffer({
      clock: new ManualClock(0),
      flushIntervalMs: 60_000,
      onFlush: (_k, values) => void flushed.push(...values.map((v) => dec.decode(v))),
    });
    await buffer.insert('k', b('1'));
    for (const timeoutMs of [Number.NaN, -1, '5000', 1.5]) {
      await assert.rejects(buffer.close({ timeoutMs: timeoutMs as number }), InvalidArgumentError);
    }
    await buffer.insert('k', b('2'));
    await buffer.close();
    assert.deepEqual(flushed, ['1', '2']);
  });

  test('bad options are refused at construction or open', async () => {
    const base = { onFlush: () => undefined };
    for (const bad of [
      { random: 5 },
      { clock: {} },
      { metrics: 5 },
      { logger: 'x' },
      { codec: 5 },
    ]) {
      assert.throws(
        () => new KeyedBuffer({ ...base, ...bad } as never),
        InvalidArgumentError,
        JSON.stringify(bad),
      );
    }
    await assert.rejects(
      KeyedBuffer.open({ ...base, durable: 'yes', store: new MemoryStore() } as never),
      /durable must be true or false/,
    );
    await assert.rejects(
      KeyedBuffer.open({ ...base, durable: false, store: new MemoryStore() } as never),
      /store and queue are for durable mode/,
    );
  });

  test('codec throws, Error or not, become InvalidArgumentError with the cause', async () => {
    for (const thrown of ['boom-string', new TypeError('cannot')]) {
      const buffer = new KeyedBuffer<number>({
        onFlush: () => undefined,
        codec: {
          encode: () => {
            // eslint-disable-next-line @typescript-eslint/only-throw-error -- a non-Error throw is the case under test
            throw thrown;
          },
          decode: () => 0,
        },
      });
      const error = await buffer.insert('k', 1).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(error instanceof InvalidArgumentError, String(error));
      assert.equal(error.cause, thrown);
      await buffer.close();
    }
  });

  test('a random() that returns no number in [0, 1) is reported and adds no jitter', async () => {
    const clock = new ManualClock(0);
    const at: number[] = [];
    const errors: unknown[] = [];
    const buffer = new KeyedBuffer({
      clock,
      flushIntervalMs: 1000,
      jitterMs: 300,
      random: () => Number.NaN,
      onFlush: () => void at.push(clock.now()),
    });
    buffer.on('error', (e: unknown) => errors.push(e));
    await buffer.insert('k', b('1'));
    await clock.advance(2000);
    assert.deepEqual(at, [1000]);
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof InvalidArgumentError);
    await buffer.close();
  });
});

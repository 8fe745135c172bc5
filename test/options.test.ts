import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GarbageCollector, InvalidArgumentError, MemoryStore, Producer } from '../src/index.ts';

test('every role resolves its options the same way: bad values and unknown names are refused, naming them', () => {
  const store = new MemoryStore();
  const cases: [() => unknown, RegExp][] = [
    [
      () => new Producer({ store, flushIntervalMs: -1 }),
      /Producer: flushIntervalMs must be an integer from 0 to 2147483647, got number -1/,
    ],
    [
      () => new Producer({ store, compression: 'gzip' as never }),
      /Producer: compression must be one of "none", "zstd", got "gzip"/,
    ],
    [
      () => new Producer({ store, flushIntervalMS: 5 } as never),
      /Producer: unknown option "flushIntervalMS"/,
    ],
    [
      () => new Producer({ store, maxBatchBytes: 2 ** 31 }),
      /maxBatchBytes must be an integer from 1 to 1073741824/,
    ],
    [() => new Producer({}), /Producer: expected a queue .* or a store, got neither/],
    [() => new Producer({ store, queue: 'memory://x' }), /give either queue or store/],
    [
      () => new Producer({ store, dataPathPrefix: 'trailing/' }),
      /Queue: dataPathPrefix must be a non-empty key prefix/,
    ],
    [
      () => new GarbageCollector({ store, gcGracePeriodMs: 1.5 }),
      /GarbageCollector: gcGracePeriodMs must be an integer >= 0/,
    ],
  ];
  for (const [make, message] of cases)
    assert.throws(
      make,
      (e: unknown) => e instanceof InvalidArgumentError && message.test(e.message),
    );
  // undefined keeps the default
  assert.doesNotThrow(() => new Producer({ store, flushIntervalMs: undefined }));
});

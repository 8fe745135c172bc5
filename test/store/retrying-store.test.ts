/**
 * RetryingStore: the retry policy and the settling of uncertain writes, for
 * any store; the contract suite runs through it over a flaky store.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  MemoryStore,
  OutcomeUnknownError,
  PreconditionFailedError,
  RetryingStore,
  StorageError,
} from '../../src/index.ts';
import { FaultInjectingStore, MemoryLogger } from '../../src/testing.ts';
import { uniqueName } from '../support/servers.ts';
import { describeStoreConformance } from './conformance.ts';

const enc = new TextEncoder();
const fast = { baseDelayMs: 1, maxDelayMs: 2 };

describeStoreConformance({
  // Failed puts are lost responses only: a put that fails without a word about whether
  // it was sent can only be settled as unknown when the key holds other bytes.
  name: 'retrying(faulty(memory)): transient errors on reads and deletes, lost responses on writes',
  exactConflicts: false,
  open: async () => {
    const name = uniqueName('retry');
    const faulty = new FaultInjectingStore(new MemoryStore(name), {
      random: {
        seed: 99,
        errorRate: 0.1,
        applyThenFailRate: 0.1,
        operations: ['get', 'head', 'list', 'delete', 'deleteMany'],
      },
    });
    const lossy = new FaultInjectingStore(faulty, {
      random: { seed: 7, applyThenFailRate: 0.1, operations: ['put'] },
    });
    return {
      store: new RetryingStore(lossy, { retry: { ...fast, maxAttempts: 12 } }),
      cleanup: async () => MemoryStore.drop(name),
    };
  },
});

describe('retrying store', () => {
  test('a transient failure is retried within maxAttempts and logged at debug; the last one surfaces', async () => {
    const logger = new MemoryLogger();
    const faulty = new FaultInjectingStore(new MemoryStore()).failNext('get', 2);
    const store = new RetryingStore(faulty, { retry: { ...fast, maxAttempts: 3 }, logger });
    await store.put('k', enc.encode('v'));
    assert.equal(new TextDecoder().decode((await store.get('k')).body), 'v');
    assert.equal(faulty.stats.calls.get, 3);
    assert.equal(logger.lines.filter((l) => l.level === 'debug').length, 2);
    faulty.failNext('get', 3);
    await assert.rejects(store.get('k'), (e: unknown) => e instanceof StorageError && e.retriable);
  });

  test('a create whose response was lost is settled by reading back: applied, no false conflict', async () => {
    const faulty = new FaultInjectingStore(new MemoryStore()).applyThenFailNext('put');
    const store = new RetryingStore(faulty, { retry: fast });
    const { version } = await store.put('k', enc.encode('mine'), { mode: 'create' });
    assert.equal((await store.head('k')).version, version);
  });

  test("a lost create whose key now holds someone else's bytes is an unknown outcome, never a success", async () => {
    const inner = new MemoryStore();
    const faulty = new FaultInjectingStore(inner);
    faulty.failNext('put', 1, () => new OutcomeUnknownError('k', 'lost'));
    faulty.after('put', async () => undefined);
    await inner.put('k', enc.encode('theirs'));
    const store = new RetryingStore(faulty, { retry: fast });
    await assert.rejects(
      store.put('k', enc.encode('mine'), { mode: 'create' }),
      OutcomeUnknownError,
    );
  });

  test('a real conflict is a PreconditionFailedError at once', async () => {
    const inner = new MemoryStore();
    await inner.put('k', enc.encode('x'));
    const faulty = new FaultInjectingStore(inner);
    const store = new RetryingStore(faulty, { retry: fast });
    await assert.rejects(
      store.put('k', enc.encode('y'), { mode: 'create' }),
      PreconditionFailedError,
    );
    assert.equal(faulty.stats.calls.put, 1);
  });

  test('no attempt starts after the deadline', async () => {
    const faulty = new FaultInjectingStore(new MemoryStore()).failNext('head', 100);
    const store = new RetryingStore(faulty, {
      retry: { baseDelayMs: 20, maxDelayMs: 20, maxAttempts: 100, deadlineMs: 0 },
    });
    await assert.rejects(store.head('k'), StorageError);
    assert.equal(faulty.stats.calls.head, 1);
  });
});

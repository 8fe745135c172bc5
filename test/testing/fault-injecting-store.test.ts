import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryStore, OutcomeUnknownError, StorageError } from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { uniqueName } from '../support/servers.ts';
import { describeStoreConformance } from '../store/conformance.ts';

describeStoreConformance({
  name: 'fault injector (no faults) over memory',
  exactConflicts: true,
  open: async () => {
    const name = uniqueName('faulty');
    return {
      store: new FaultInjectingStore(new MemoryStore(name)),
      cleanup: async () => MemoryStore.drop(name),
    };
  },
});

describe('fault injection', () => {
  const bytes = new Uint8Array([1]);

  test('failNext fails exactly the next N calls of one operation, before they reach the store', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner).failNext('put', 2);
    await assert.rejects(
      store.put('a', bytes),
      (e: unknown) => e instanceof StorageError && e.retriable && e.code === 'INJECTED',
    );
    await assert.rejects(store.put('a', bytes), StorageError);
    await assert.rejects(inner.get('a'), { code: 'NOT_FOUND' });
    await store.put('a', bytes);
    await store.get('a');
    assert.equal(store.stats.errors, 2);
    assert.equal(store.stats.calls.put, 3);
  });

  test('applyThenFailNext applies the write and reports an unknown outcome', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner).applyThenFailNext('put');
    await assert.rejects(store.put('a', bytes, { mode: 'create' }), OutcomeUnknownError);
    assert.deepEqual([...(await inner.get('a')).body], [1]);
    assert.equal(store.stats.appliedThenFailed, 1);
  });

  test('a custom error can be injected', async () => {
    const store = new FaultInjectingStore(new MemoryStore()).failNext(
      'get',
      1,
      () => new Error('boom'),
    );
    await assert.rejects(store.get('x'), /boom/);
  });

  test('hooks interleave racing writers deterministically', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const v0 = (await store.put('k', new Uint8Array([0]))).version;
    // Writer A is held just before its write reaches the store while writer B commits.
    let releaseA!: () => void;
    const aHeld = new Promise<void>((resolve) => (releaseA = resolve));
    let aArrived!: () => void;
    const aAtGate = new Promise<void>((resolve) => (aArrived = resolve));
    const remove = store.before('put', async (call) => {
      if (call.body?.[0] === 0xa) {
        aArrived();
        await aHeld;
      }
    });
    const a = store.put('k', new Uint8Array([0xa]), { mode: { ifMatch: v0 } });
    await aAtGate;
    await store.put('k', new Uint8Array([0xb]), { mode: { ifMatch: v0 } });
    releaseA();
    await assert.rejects(a, { code: 'PRECONDITION_FAILED' });
    remove();
    assert.deepEqual([...(await store.get('k')).body], [0xb]);
  });

  test('latency delays calls and aborts cut the delay short', async () => {
    const store = new FaultInjectingStore(new MemoryStore()).setLatency('get', 60_000);
    const controller = new AbortController();
    const pending = store.get('x', { signal: controller.signal });
    controller.abort();
    await assert.rejects(pending, { name: 'AbortError' });
    assert.equal(store.stats.delays, 1);
  });

  test('random faults are reproducible from their seed', async () => {
    const run = async (seed: number) => {
      const store = new FaultInjectingStore(new MemoryStore(), {
        random: { seed, errorRate: 0.3, applyThenFailRate: 0.2 },
      });
      const outcomes: string[] = [];
      for (let i = 0; i < 200; i++) {
        try {
          await store.put(`k${i}`, bytes);
          outcomes.push('ok');
        } catch (e) {
          outcomes.push((e as StorageError).code);
        }
      }
      return outcomes;
    };
    const first = await run(42);
    assert.deepEqual(await run(42), first);
    assert.notDeepEqual(await run(43), first);
    assert.ok(
      first.includes('INJECTED') && first.includes('OUTCOME_UNKNOWN') && first.includes('ok'),
    );
  });
});

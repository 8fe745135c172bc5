/**
 * The calls of one batch share one `durable` promise and one frozen result:
 * every call is told the batch that holds its entries, every call settles
 * (whatever state the producer is in when it stops), and nothing leaks an
 * unhandled rejection.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  ClosedError,
  Consumer,
  OutcomeUnknownError,
  Producer,
  type DurableResult,
  type ProduceHandle,
  type ObjectStore,
} from '../../src/index.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { deferred, settlesWithin, until } from '../support/deferred.ts';
import { v1Store } from '../support/queue.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const ignore = (): void => undefined;
const MANIFEST = 'ingest/manifest';

setFlagsFromString('--expose-gc');
/** A full garbage collection, on demand. */
const gc = runInNewContext('gc') as () => void;

/** Every batch of the queue, by sequence: its location and its entries as text. */
async function batchesOf(
  store: ObjectStore,
): Promise<Map<number, { location: string; entries: string[] }>> {
  const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
  const out = new Map<number, { location: string; entries: string[] }>();
  for (let b = await consumer.next(); b; b = await consumer.next())
    out.set(b.sequence, { location: b.location, entries: b.entries.map((e) => dec.decode(e)) });
  await consumer.close();
  return out;
}

/** Asserts that each call's result names the batch (sequence and location) that holds its entries. */
async function assertToldTheTruth(
  store: ObjectStore,
  calls: { entries: string[]; result: DurableResult }[],
): Promise<void> {
  const batches = await batchesOf(store);
  for (const { entries, result } of calls) {
    const batch = batches.get(result.sequence);
    assert.ok(batch, `no batch at sequence ${result.sequence}`);
    assert.equal(batch.location, result.location, `location of ${entries.join(',')}`);
    for (const e of entries)
      assert.ok(batch.entries.includes(e), `${e} is not in ${batch.location}`);
  }
}

describe('producer: the calls of a batch share one durable', () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
  beforeEach(() => {
    unhandled.length = 0;
    process.on('unhandledRejection', onUnhandled);
  });
  afterEach(() => {
    process.off('unhandledRejection', onUnhandled);
  });

  test('a call that would overflow maxBatchBytes starts the next batch, and each call is told its own batch', async () => {
    const store = await v1Store();
    // 100-byte entries count 200 bytes of a batch: two fit in 450, a third seals the batch.
    const producer = new Producer({
      store,
      clock: new ManualClock(),
      flushIntervalMs: 60_000,
      maxBatchBytes: 450,
    });
    const names = ['a', 'b', 'c', 'd', 'e'];
    const handles = [];
    for (const n of names) handles.push(await producer.produce([enc.encode(n.repeat(100))]));
    await producer.flush();
    const results = await Promise.all(handles.map((h) => h.durable));
    const [ra, rb, rc, rd, re] = results as [
      DurableResult,
      DurableResult,
      DurableResult,
      DurableResult,
      DurableResult,
    ];
    assert.equal(ra, rb, 'a and b share one result object');
    assert.equal(rc, rd, 'c and d share one result object');
    assert.notEqual(rb, rc);
    assert.notEqual(rd, re);
    assert.deepEqual(
      [ra.sequence, rc.sequence, re.sequence],
      [ra.sequence, ra.sequence + 1, ra.sequence + 2],
    );
    await assertToldTheTruth(
      store,
      names.map((n, i) => ({ entries: [n.repeat(100)], result: results[i] as DurableResult })),
    );
    await producer.close();
  });

  test('the shared result is frozen: a caller cannot change what the other calls of its batch see', async () => {
    const producer = new Producer({ store: await v1Store(), flushIntervalMs: 0 });
    const [a, b] = await Promise.all([
      producer.produce([enc.encode('a')]),
      producer.produce([enc.encode('b')]),
    ]);
    const ra = await a.durable;
    assert.equal(Object.isFrozen(ra), true);
    assert.throws(() => {
      (ra as { sequence: number }).sequence = 99;
    }, TypeError);
    assert.equal((await b.durable).sequence, 0);
    assert.deepEqual({ ...ra }, { sequence: 0, location: ra.location });
    await producer.close();
  });

  test('calls admitted from the wait for room are told the batch that holds their entries', async () => {
    const inner = await v1Store();
    const store = new FaultInjectingStore(inner);
    const stall = deferred();
    let batchPuts = 0;
    store.before('put', async (call) => {
      if (call.key.endsWith('.batch') && ++batchPuts === 1) await stall.promise;
    });
    const producer = new Producer({
      store,
      clock: new ManualClock(),
      flushIntervalMs: 60_000,
      maxBufferedInputs: 2,
      maxConcurrentUploads: 1,
    });
    const names = ['c1', 'c2', 'c3', 'c4', 'c5'];
    // c1 and c2 fill the budget (and seal their batch, held by the stall); the rest wait for room.
    const produced = names.map((n) => producer.produce([enc.encode(n)]));
    const aborted = new AbortController();
    const gaveUp = producer.produce([enc.encode('gave up')], { signal: aborted.signal });
    aborted.abort(new Error('no longer needed'));
    await assert.rejects(gaveUp, /no longer needed/);
    await until(() => batchPuts === 1);
    stall.resolve();
    const handles = await Promise.all(produced);
    await producer.flush();
    const results = await Promise.all(handles.map((h) => h.durable));
    await assertToldTheTruth(
      store,
      names.map((n, i) => ({ entries: [n], result: results[i] as DurableResult })),
    );
    const all = [...(await batchesOf(inner)).values()].flatMap((b) => b.entries);
    assert.deepEqual(all, names, 'in order, and the aborted call is nowhere');
    await producer.close();
  });

  test('destroy() settles every call: open, waiting for room, uploading and appending', async () => {
    const store = new FaultInjectingStore(await v1Store());
    const never = deferred();
    let appendHeld = false;
    let batchPuts = 0;
    store.before('put', async (call) => {
      if (call.key === MANIFEST) {
        appendHeld = true;
        await never.promise;
      } else if (call.key.endsWith('.batch') && ++batchPuts === 2) {
        await never.promise;
      }
    });
    const producer = new Producer({
      store,
      clock: new ManualClock(),
      flushIntervalMs: 60_000,
      maxBufferedInputs: 3,
      maxConcurrentUploads: 1,
    });
    const appending = await producer.produce([enc.encode('appending')]);
    producer.flush().catch(ignore);
    await until(() => appendHeld);
    const uploading = await producer.produce([enc.encode('uploading')]);
    producer.flush().catch(ignore);
    await until(() => batchPuts === 2);
    const open = await producer.produce([enc.encode('open')]);
    const waiting = producer.produce([enc.encode('waiting')]);
    waiting.catch(ignore);
    assert.equal(await settlesWithin(waiting, 5), false, 'the fourth call waits for room');
    const boom = new Error('stopping now');
    assert.equal(await settlesWithin(producer.destroy(boom)), true);
    for (const [name, p] of [
      ['appending', appending.durable],
      ['uploading', uploading.durable],
      ['open', open.durable],
      ['waiting', waiting],
    ] as const)
      assert.equal(await settlesWithin(p), true, `the ${name} call settles`);
    await assert.rejects(appending.durable, OutcomeUnknownError);
    await assert.rejects(uploading.durable, /stopping now/);
    await assert.rejects(open.durable, /stopping now/);
    await assert.rejects(waiting, /stopping now/);
    await assert.rejects(producer.produce([enc.encode('late')]), ClosedError);
    assert.deepEqual(unhandled, []);
    never.resolve();
  });

  test('destroy() during an append also settles a batch whose upload failed behind it', async () => {
    const store = new FaultInjectingStore(await v1Store());
    const firstUpload = deferred();
    const never = deferred();
    let appendHeld = false;
    let batchPuts = 0;
    store.before('put', async (call) => {
      if (call.key === MANIFEST) {
        appendHeld = true;
        await never.promise; // a store that ignores the abort
      } else if (call.key.endsWith('.batch')) {
        const n = ++batchPuts;
        if (n === 1) await firstUpload.promise;
        if (n === 2) throw new Error('upload of the second batch failed');
      }
    });
    const producer = new Producer({ store, clock: new ManualClock(), flushIntervalMs: 60_000 });
    const first = await producer.produce([enc.encode('first')]);
    producer.flush().catch(ignore);
    await until(() => batchPuts === 1);
    const second = await producer.produce([enc.encode('second')]);
    producer.flush().catch(ignore);
    // The second batch fails while the first is still uploading: it waits, in order, behind it.
    await until(() => batchPuts === 2);
    assert.equal(await settlesWithin(second.durable, 5), false);
    // Both leave the pipeline together; only the first is appended, and the append is held.
    firstUpload.resolve();
    await until(() => appendHeld);
    assert.equal(await settlesWithin(producer.destroy(new Error('stopping now'))), true);
    await assert.rejects(first.durable, OutcomeUnknownError);
    assert.equal(await settlesWithin(second.durable), true, 'the failed batch settles too');
    await assert.rejects(second.durable, /stopping now/);
    assert.deepEqual(unhandled, []);
    never.resolve();
  });

  test('close() called while the last append is in flight waits for it, and rejects when it fails', async () => {
    const store = new FaultInjectingStore(await v1Store());
    const gate = deferred();
    let appendHeld = false;
    store.before('put', async (call) => {
      if (call.key === MANIFEST) {
        appendHeld = true;
        await gate.promise;
        throw new Error('manifest write failed');
      }
    });
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const h = await producer.produce([enc.encode('x')]);
    await until(() => appendHeld);
    const closing = producer.close();
    closing.catch(ignore);
    assert.equal(await settlesWithin(closing, 20), false, 'close() waits for the append');
    gate.resolve();
    await assert.rejects(h.durable, /manifest write failed/);
    await assert.rejects(closing, /manifest write failed/);
  });

  test('flush() called while an append is in flight rejects when that append fails', async () => {
    const store = new FaultInjectingStore(await v1Store());
    const gate = deferred();
    let appendHeld = false;
    store.before('put', async (call) => {
      if (call.key === MANIFEST && !appendHeld) {
        appendHeld = true;
        await gate.promise;
        throw new Error('manifest write failed');
      }
    });
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const h = await producer.produce([enc.encode('x')]);
    await until(() => appendHeld);
    const flushed = producer.flush();
    flushed.catch(ignore);
    gate.resolve();
    await assert.rejects(h.durable, /manifest write failed/);
    await assert.rejects(flushed, /manifest write failed/);
    await assert.rejects(producer.close(), /manifest write failed/);
  });

  test('a failed batch nobody awaits raises no unhandled rejection, and later calls get a new promise', async () => {
    const store = new FaultInjectingStore(await v1Store());
    const producer = new Producer({ store, flushIntervalMs: 0 });
    store.failNext('put', 1, () => new Error('disk on fire'));
    const lost = await producer.produce([enc.encode('lost')]);
    await assert.rejects(producer.flush(), /disk on fire/);
    const kept = await producer.produce([enc.encode('kept')]);
    assert.notEqual(kept.durable, lost.durable);
    await kept.durable;
    await producer.destroy();
    // Rejections are reported as unhandled after the microtask queue drains: give it turns.
    await settlesWithin(new Promise(() => undefined), 5);
    assert.deepEqual(unhandled, []);
  });

  test('a handle kept after its batch is durable keeps neither its entries nor the other calls alive', async () => {
    const producer = new Producer({ store: await v1Store(), flushIntervalMs: 0 });
    // Made in a function of their own, so that no variable of the test still holds them.
    const start = async (): Promise<{ kept: ProduceHandle; entries: WeakRef<Uint8Array>[] }> => {
      const all = [new Uint8Array(1 << 20), new Uint8Array(1 << 20)];
      const [kept] = await Promise.all(all.map((e) => producer.produce([e])));
      await (kept as ProduceHandle).durable;
      return { kept: kept as ProduceHandle, entries: all.map((e) => new WeakRef(e)) };
    };
    const { kept, entries } = await start();
    assert.equal((await kept.durable).sequence, 0);
    await producer.flush();
    // A new turn: a WeakRef keeps its target alive until the end of the turn that made it.
    await new Promise((r) => setImmediate(r));
    gc();
    assert.deepEqual(
      entries.map((r) => r.deref() === undefined),
      [true, true],
      'the entries were let go',
    );
    await producer.close();
  });
});

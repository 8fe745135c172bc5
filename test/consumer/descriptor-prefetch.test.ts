/**
 * The consumer reads the next descriptors in the background while it still
 * has batches to hand out (log layout): a backlog streams without a pause
 * per manifest read, and nothing is lost, repeated or reordered when that
 * read fails or a caller gives up while it is in flight.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Consumer, MemoryStore, StorageError, type Batch } from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { deferred, settlesWithin, until } from '../support/deferred.ts';
import { queueWith } from '../support/queue.ts';

const dec = new TextDecoder();
const isCommit = (key: string) => key.includes('/log/') && !key.includes('.batch');

/** The entries `queueWith` produces, in order: `e0` to `e{count - 1}`. */
const entriesUpTo = (count: number) => Array.from({ length: count }, (_, i) => `e${i}`);

/** A log queue of `count` one-entry batches, each in a commit of its own. */
async function backlog(count: number): Promise<FaultInjectingStore> {
  const store = new FaultInjectingStore(new MemoryStore());
  await queueWith(store, count);
  return store;
}

describe('descriptor read-ahead (log)', () => {
  test('while the window is handed out, the commits after it are read in the background', async () => {
    const store = await backlog(30);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0, readAheadBatches: 4 });
    const seen: string[] = [];
    const take = (b: Batch | undefined) => seen.push(dec.decode((b as Batch).entries[0]));
    take(await consumer.next());
    // From now on commit reads are held until released.
    const gate = deferred();
    let held = 0;
    store.before('get', async (call) => {
      if (!isCommit(call.key)) return;
      held++;
      await gate.promise;
    });
    // Hand out batches until a commit read starts (and is held)...
    while (held === 0) take(await consumer.next());
    // ...and the window still hands out the next one while that read waits: it was read ahead.
    take(await consumer.next());
    assert.ok(held > 0);
    gate.resolve();
    for (;;) {
      const b = await consumer.next();
      if (!b) break;
      take(b);
    }
    assert.deepEqual(seen, entriesUpTo(30));
    await consumer.close();
  });

  test('a read ahead that fails is reported by the next call that needs it, and reading then goes on in order', async () => {
    const store = await backlog(20);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0, readAheadBatches: 2 });
    const seen: string[] = [];
    const b0 = (await consumer.next()) as Batch;
    seen.push(dec.decode(b0.entries[0]));
    // The read ahead starts now; make its first commit read fail.
    let failed = 0;
    const remove = store.before('get', (call) => {
      if (isCommit(call.key) && failed === 0) {
        failed++;
        throw new StorageError('injected: commit read failed');
      }
    });
    let errors = 0;
    for (;;) {
      let b: Batch | undefined;
      try {
        b = await consumer.next();
      } catch (e) {
        assert.ok(e instanceof StorageError, String(e));
        errors++;
        continue;
      }
      if (!b) break;
      seen.push(dec.decode(b.entries[0]));
    }
    remove();
    assert.equal(failed, 1);
    assert.ok(errors <= 1, `${errors} errors`);
    assert.deepEqual(seen, entriesUpTo(20));
    await consumer.close();
  });

  test('a caller that gives up while the read ahead is in flight loses, repeats and reorders nothing', async () => {
    const store = await backlog(24);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0, readAheadBatches: 2 });
    let gate = deferred();
    let holding = false;
    let held = 0;
    store.before('get', async (call) => {
      if (!holding || !isCommit(call.key)) return;
      held++;
      await gate.promise;
    });
    const seen: string[] = [];
    for (let round = 0; seen.length < 24 && round < 500; round++) {
      // Every third call holds the commit reads and gives up while one is held.
      holding = round % 3 === 0;
      held = 0;
      const controller = new AbortController();
      const call = consumer.next({ signal: controller.signal }).then(
        (b) => ({ b }),
        (e: unknown) => ({ e }),
      );
      if (holding) {
        await Promise.race([until(() => held > 0), call]);
        controller.abort(new Error('gave up'));
      }
      holding = false;
      gate.resolve();
      gate = deferred();
      const r = await call;
      if ('e' in r || !r.b) continue;
      seen.push(dec.decode(r.b.entries[0]));
    }
    assert.deepEqual(seen, entriesUpTo(24));
    await consumer.close();
  });

  test('close() waits for a read ahead in flight before it closes the queue', async () => {
    const store = await backlog(30);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0, readAheadBatches: 4 });
    await consumer.next();
    const gate = deferred();
    let held = 0;
    store.before('get', async (call) => {
      if (!isCommit(call.key)) return;
      held++;
      await gate.promise;
    });
    while (held === 0) await consumer.next();
    const closed = consumer.close();
    assert.equal(await settlesWithin(closed), false, 'close() waits for the held read');
    gate.resolve();
    await closed;
    await assert.rejects(consumer.next(), { code: 'CLOSED' });
  });
});

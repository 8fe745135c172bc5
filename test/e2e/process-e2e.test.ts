/**
 * `Consumer.process()` on every store (memory, `file://`, Ceph RGW,
 * Azurite): positions inside a batch survive a crash, retries end in a
 * dead-letter queue with nothing lost, and shared readers hold the position
 * at the slower one. The logic is tested in depth on memory
 * (test/consumer/); this proves the cursor writes behind it on real stores.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  Producer,
  Queue,
  type ObjectStore,
  type ProcessOutcome,
} from '../../src/index.ts';
import { backends, onFreshStore } from '../support/backends.ts';
import { produceBatches } from '../support/queue.ts';

const dec = new TextDecoder();

/** One batch per group (each group one produce() call). */
function open(store: ObjectStore, more: Partial<Parameters<typeof Consumer.open>[0]> = {}) {
  return Consumer.open({ store, gcIntervalMs: 0, ...more });
}

for (const backend of backends('process() end to end')) {
  describe(`process() on ${backend.name}`, () => {
    test('a crash inside a batch resumes at the first entry not committed, on the store', async () => {
      await onFreshStore(backend, async ({ store }) => {
        await produceBatches(store, [
          ['a', 'b', 'c', 'd'],
          ['e', 'f'],
        ]);
        const first = await open(store);
        const seen: string[] = [];
        const crashed = first.process((e) => {
          if (e.index === 2) {
            void first.destroy(new Error('crash'));
            return new Promise<ProcessOutcome>(() => undefined);
          }
          seen.push(dec.decode(e.data));
          return 'commit';
        });
        await assert.rejects(crashed, /crash/);
        assert.deepEqual(seen, ['a', 'b']);
        const second = await open(store);
        assert.deepEqual(second.position, { sequence: 0, index: 2 });
        const rest: string[] = [];
        const r = await second.process(
          (e) => {
            rest.push(dec.decode(e.data));
            return 'commit';
          },
          { concurrency: 3 },
        );
        assert.deepEqual(rest, ['c', 'd', 'e', 'f']);
        assert.deepEqual(r.position, { sequence: 2, index: 0 });
        await second.close();
      });
    });

    test('an entry that fails every time goes to the dead-letter queue; every other is committed', async () => {
      await onFreshStore(backend, async ({ store }) => {
        await produceBatches(store, [['ok1', 'bad', 'ok2']]);
        const dead = Queue.open({ store, manifestPath: 'dead/manifest', dataPathPrefix: 'dead' });
        const dlq = new Producer({ queue: dead, flushIntervalMs: 0 });
        const consumer = await open(store);
        const committed: string[] = [];
        const r = await consumer.process(
          (e) => {
            const t = dec.decode(e.data);
            if (t === 'bad') throw new Error('downstream refuses it');
            committed.push(t);
            return 'commit';
          },
          { retry: { delayMs: 1, maxAttempts: 2 }, onExhausted: 'dead-letter', deadLetter: dlq },
        );
        assert.deepEqual(committed, ['ok1', 'ok2']);
        assert.equal(r.deadLettered, 1);
        await consumer.close();
        await dlq.close();
        const letters = await Consumer.open({ queue: dead, gcIntervalMs: 0 });
        const b = await letters.next();
        assert.deepEqual(
          b?.entries.map((x) => dec.decode(x)),
          ['bad'],
        );
        const meta = JSON.parse(dec.decode(b?.metadata[0]?.payload)) as { index: number };
        assert.equal(meta.index, 1);
        await letters.close();
        await dead.close();
      });
    });

    test('two shared readers: nobody is fenced, the position is the slower one, then the other once it leaves', async () => {
      await onFreshStore(backend, async ({ store }) => {
        await produceBatches(store, [['a', 'b', 'c']]);
        const options = { shared: true, subscription: 'etl' };
        const fast = await open(store, options);
        const slow = await open(store, options);
        const alo = { delivery: 'at-least-once' as const, commitEveryEntries: 1 };
        await fast.process(() => 'commit', alo);
        await slow.process(() => 'commit', { ...alo, limit: 1 });
        const queue = Queue.open({ store });
        const at = async () => {
          const s = (await queue.subscriptions()).find((x) => x.name === 'etl');
          return [s?.nextSequence, s?.nextIndex];
        };
        assert.deepEqual(await at(), [0, 1]);
        await slow.close();
        assert.deepEqual(await at(), [1, 0]);
        await fast.close();
        await queue.close();
      });
    });
  });
}

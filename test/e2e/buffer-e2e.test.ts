/**
 * End to end on every adapter and in both layouts: 3 producers make 10,000
 * produce() calls each, concurrently, while one consumer drains. Every entry
 * arrives exactly once, each producer's order is kept, nothing is pending
 * after the acks, and a grace-0 collection after the producers finish leaves
 * no batch object that no kept commit holds (v1: none at all).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  GarbageCollector,
  Producer,
  Queue,
  type Layout,
  type ObjectStore,
} from '../../src/index.ts';
import { LogQueue } from '../../src/internal.ts';
import { decodeManifest } from '../../src/format/manifest.ts';
import { backends } from '../support/backends.ts';

const PRODUCERS = 3;
const CALLS = 10_000;

/** Batch objects left after a collection that no commit still stored holds (log layout). */
async function unheldBatches(store: ObjectStore): Promise<string[]> {
  const log = new LogQueue({ store, root: 'ingest' });
  const held = new Set<string>();
  const { value: b } = await log.readBoundary();
  for (let n = b.firstCommit; ; n++) {
    const c = await log.readCommit(n);
    if (!c) break;
    for (const x of c.batches) held.add(x.entry.location);
  }
  const out: string[] = [];
  for await (const o of store.list('ingest/'))
    if (o.key.endsWith('.batch') && !held.has(o.key)) out.push(o.key);
  return out;
}

for (const target of backends('end-to-end')) {
  for (const layout of ['v1', 'log'] as Layout[])
    describe(`end to end: ${target.name}, ${layout} layout`, () => {
      test(`${PRODUCERS} producers × ${CALLS} produce() calls and one consumer: every entry once, in order, nothing left`, async () => {
        const { store, cleanup } = await target.open();
        try {
          const consumer = await Consumer.open({
            store,
            layout,
            gcIntervalMs: 0,
            ackIntervalMs: 50,
          });
          const total = PRODUCERS * CALLS;
          const seen = new Map<number, number>(); // producer -> last n
          let delivered = 0;
          let duplicates = 0;
          const unique = new Set<string>();
          const controller = new AbortController();
          const draining = (async () => {
            for await (const batch of consumer.batches({
              signal: controller.signal,
              pollIntervalMs: 10,
            })) {
              for (const e of batch.entries) {
                const s = new TextDecoder().decode(e);
                if (unique.has(s)) duplicates++;
                unique.add(s);
                const [p, n] = s.split(':').map(Number) as [number, number];
                assert.ok(
                  n > (seen.get(p) ?? -1),
                  `producer ${p}: entry ${n} arrived after ${seen.get(p)}`,
                );
                seen.set(p, n);
                delivered++;
              }
              await consumer.ack(batch.sequence);
              if (unique.size >= total) controller.abort();
            }
          })();
          await Promise.all(
            Array.from({ length: PRODUCERS }, async (_, p) => {
              const producer = new Producer({
                store,
                layout,
                flushIntervalMs: 20,
                instanceId: `producer-${p}`,
              });
              const durable = [];
              for (let n = 0; n < CALLS; n++)
                durable.push(
                  (await producer.produce([new TextEncoder().encode(`${p}:${n}`)])).durable,
                );
              await Promise.all(durable);
              await producer.close();
            }),
          );
          await draining;
          await consumer.close();
          assert.equal(duplicates, 0);
          assert.equal(unique.size, total, `lost ${total - unique.size}`);
          assert.equal(delivered, total);
          const gc = await new GarbageCollector({ store, gcGracePeriodMs: 0 }).run();
          if (layout === 'v1') {
            const manifest = decodeManifest((await store.get('ingest/manifest')).body);
            assert.equal(manifest.entries.length, 0, 'the manifest is empty after the acks');
            const left: string[] = [];
            for await (const o of store.list('ingest/')) left.push(o.key);
            assert.deepEqual(
              left,
              ['ingest/manifest', 'ingest/queue.manifest'],
              'only the manifest and the marker naming it are left',
            );
          } else {
            const [sub] = await Queue.open({ store }).subscriptions();
            assert.equal(sub?.lagBatches, 0, 'nothing pending after the acks');
            // Commits younger than the protocol's minimum age stay, with their batches.
            assert.deepEqual(await unheldBatches(store), []);
          }
          console.log(
            `# e2e ${target.name}: produced ${total}, delivered ${delivered}, duplicates ${duplicates}, lost ${total - unique.size}, batches collected ${gc.deleted.length}`,
          );
        } finally {
          await store.close();
          await cleanup();
        }
      });
    });
}

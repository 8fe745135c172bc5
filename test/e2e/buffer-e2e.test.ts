/**
 * End to end on every adapter: 3 producers make 10,000 produce() calls each,
 * concurrently, while one consumer drains. Every entry arrives exactly once,
 * each producer's order is kept, the manifest is empty after the acks, and a
 * grace-0 collection after the producers finish leaves no batch object.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  Consumer,
  GarbageCollector,
  MemoryStore,
  openStore,
  Producer,
  type ObjectStore,
} from '../../src/index.ts';
import { decodeManifest } from '../../src/format/manifest.ts';
import {
  createTestBucket,
  createTestContainer,
  deleteTestBucket,
  deleteTestContainer,
  azureConnectionString,
  reportMissingServer,
  s3Endpoint,
  uniqueName,
} from '../support/servers.ts';

const PRODUCERS = 3;
const CALLS = 10_000;

interface Target {
  name: string;
  server?: 's3' | 'azure';
  available: () => boolean;
  open: () => Promise<{ store: ObjectStore; cleanup: () => Promise<void> }>;
}

const targets: Target[] = [
  {
    name: 'memory',
    available: () => true,
    open: async () => {
      const name = uniqueName('e2e');
      return { store: new MemoryStore(name), cleanup: async () => MemoryStore.drop(name) };
    },
  },
  {
    name: 'file',
    available: () => true,
    open: async () => {
      const dir = await mkdtemp(join(tmpdir(), 'spillway-e2e-'));
      return {
        store: openStore(`file://${dir}`),
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
  },
  {
    name: 's3 (Ceph RGW)',
    server: 's3',
    available: () => s3Endpoint() !== undefined,
    open: async () => {
      const endpoint = s3Endpoint() as string;
      const bucket = await createTestBucket(endpoint, 'e2e');
      return {
        store: openStore(`s3://${bucket}/q?endpoint=${encodeURIComponent(endpoint)}`),
        cleanup: () => deleteTestBucket(endpoint, bucket),
      };
    },
  },
  {
    name: 'az (Azurite)',
    server: 'azure',
    available: () => azureConnectionString() !== undefined,
    open: async () => {
      const connection = azureConnectionString() as string;
      const container = await createTestContainer(connection, 'e2e');
      return {
        store: openStore(`az://${container}/q`),
        cleanup: () => deleteTestContainer(connection, container),
      };
    },
  },
];

for (const target of targets) {
  if (!target.available()) {
    reportMissingServer(`end-to-end on ${target.name}`, target.server as string, 'Run `npm test`.');
    continue;
  }
  describe(`end to end: ${target.name}`, () => {
    test(`${PRODUCERS} producers × ${CALLS} produce() calls and one consumer: every entry once, in order, nothing left`, async () => {
      const { store, cleanup } = await target.open();
      try {
        const consumer = await Consumer.open({ store, gcIntervalMs: 0, ackIntervalMs: 50 });
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
        const manifest = decodeManifest((await store.get('ingest/manifest')).body);
        assert.equal(manifest.entries.length, 0, 'the manifest is empty after the acks');
        const gc = await new GarbageCollector({ store, gcGracePeriodMs: 0 }).run();
        const left: string[] = [];
        for await (const o of store.list('ingest/')) left.push(o.key);
        assert.deepEqual(
          left,
          ['ingest/manifest', 'ingest/queue.manifest'],
          'only the manifest and the marker naming it are left',
        );
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

/**
 * The log layout under zombie consumers and corrupt input, on every store:
 * a fenced holder of a subscription changes nothing any more (and other
 * subscriptions are untouched); a damaged commit, cursor, boundary or
 * descriptor, or a missing batch object, stops every role with a typed error
 * naming it, and nothing is written over it or deleted.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  CorruptDataError,
  FencedError,
  GarbageCollector,
  Producer,
  Queue,
  type Batch,
  type ObjectStore,
} from '../../src/index.ts';
import { crc32c, decodeCommit } from '../../src/internal.ts';
import { backends, onFreshStore } from '../support/backends.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const quiet = { gcIntervalMs: 0, ackIntervalMs: 3_600_000 };

async function produce(store: ObjectStore, entries: string[], inlineMaxBytes?: number) {
  const producer = new Producer({
    store,
    layout: 'log',
    flushIntervalMs: 0,
    ...(inlineMaxBytes !== undefined ? { inlineMaxBytes } : {}),
  });
  for (const e of entries) await (await producer.produce([enc.encode(e)])).durable;
  await producer.close();
}

async function snapshot(store: ObjectStore): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const m of store.list('ingest/')) out.set(m.key, m.version);
  return out;
}

async function drain(consumer: Consumer): Promise<string[]> {
  const got: string[] = [];
  for (;;) {
    const b = await consumer.next();
    if (!b) return got;
    got.push(...b.entries.map((e) => dec.decode(e)));
    await consumer.ackThrough(b.sequence);
  }
}

for (const backend of backends('log layout faults')) {
  describe(`zombie consumers on the log layout: ${backend.name}`, () => {
    test('a holder fenced mid-batch can no longer ack, flush or read; the batch goes to the newer one; other subscriptions go on', async () => {
      await onFreshStore(backend, async ({ store }) => {
        await produce(store, ['a', 'b', 'c']);
        const zombie = await Consumer.open({ store, ...quiet });
        const other = await Consumer.open({ store, ...quiet, subscription: 'audit' });
        const held = (await zombie.next()) as Batch;
        const fresh = await Consumer.open({ store, ...quiet });
        assert.ok(fresh.epoch > zombie.epoch);
        await zombie.ack(held.sequence); // recorded locally; its write is refused
        await assert.rejects(zombie.flush(), FencedError);
        await assert.rejects(zombie.next(), FencedError);
        await assert.rejects(zombie.ackThrough(held.sequence), FencedError);
        assert.deepEqual(await drain(fresh), ['a', 'b', 'c']);
        assert.deepEqual(await drain(other), ['a', 'b', 'c'], 'another subscription is untouched');
        await zombie.destroy();
        await fresh.close();
        await other.close();
        const subs = await Queue.open({ store }).subscriptions();
        assert.deepEqual(
          subs.map((s) => [s.name, s.nextSequence]),
          [
            ['audit', 3],
            ['default', 3],
          ],
        );
      });
    });

    test("a zombie's background ack flush is refused, and its next call reports it", async () => {
      await onFreshStore(backend, async ({ store }) => {
        await produce(store, ['a', 'b']);
        const zombie = await Consumer.open({ store, gcIntervalMs: 0, ackIntervalMs: 1 });
        const b = (await zombie.next()) as Batch;
        const fresh = await Consumer.open({ store, ...quiet });
        await zombie.ack(b.sequence);
        await assert.rejects(
          (async () => {
            for (let i = 0; i < 500; i++) {
              await new Promise((r) => setImmediate(r));
              await zombie.next();
            }
          })(),
          FencedError,
        );
        assert.deepEqual(await drain(fresh), ['a', 'b']);
        await zombie.destroy();
        await fresh.close();
      });
    });
  });

  describe(`corrupt input on the log layout: ${backend.name}`, () => {
    test('a damaged commit: the consumer and the collector stop naming it, again and again; nothing is written or deleted', async () => {
      await onFreshStore(backend, async ({ store }) => {
        await produce(store, ['a', 'b', 'c']);
        const key = 'ingest/log/00000000000000000001';
        const body = (await store.get(key)).body;
        body[body.length - 10] = (body[body.length - 10] as number) ^ 0xff;
        await store.put(key, body);
        const consumer = await Consumer.open({ store, ...quiet });
        assert.deepEqual(dec.decode((await consumer.next())?.entries[0]), 'a');
        await consumer.ackThrough(0);
        const before = await snapshot(store);
        for (let i = 0; i < 2; i++) {
          await assert.rejects(consumer.next(), (e: unknown) => {
            assert.ok(e instanceof CorruptDataError, String(e));
            assert.match(e.message, /ingest\/log\/00000000000000000001/);
            return true;
          });
        }
        await consumer.close();
        await assert.rejects(
          new GarbageCollector({ store, gcGracePeriodMs: 0 }).run(),
          CorruptDataError,
        );
        const after = await snapshot(store);
        after.delete('ingest/subscriptions/default'); // the consumer's own cursor
        before.delete('ingest/subscriptions/default');
        assert.deepEqual(after, before);
      });
    });

    test('a damaged cursor, boundary or descriptor stops every role naming it', async () => {
      await onFreshStore(backend, async ({ store }) => {
        await produce(store, ['a']);
        await Queue.open({ store }).createSubscription('audit');
        for (const key of ['ingest/subscriptions/audit', 'ingest/boundary', 'ingest/queue']) {
          const good = await store.get(key).then(
            (g) => g.body,
            () => undefined,
          );
          await store.put(key, enc.encode('{"format":"spillway-'));
          const before = await snapshot(store);
          const named = (e: unknown): boolean =>
            e instanceof CorruptDataError && e.message.includes(key);
          await assert.rejects(
            new GarbageCollector({ store, gcGracePeriodMs: 0 }).run(),
            named,
            `collector on ${key}`,
          );
          if (key !== 'ingest/subscriptions/audit') {
            // Producers read the descriptor and the boundary (not the cursors).
            const producer = new Producer({ store, flushIntervalMs: 0 });
            await assert.rejects(
              (async () => (await producer.produce([enc.encode('x')])).durable)(),
              named,
              `producer on ${key}`,
            );
            await producer.destroy();
          }
          if (key !== 'ingest/boundary') {
            // A consumer reads the boundary only when a commit it wants is missing.
            await assert.rejects(
              Consumer.open({ store, ...quiet, subscription: 'audit' }),
              named,
              `consumer on ${key}`,
            );
          }
          assert.deepEqual(await snapshot(store), before, `nothing changed around ${key}`);
          if (good) await store.put(key, good);
          else await store.delete(key);
        }
      });
    });

    test('a missing batch object is an error naming it; the consumer does not advance', async () => {
      await onFreshStore(backend, async ({ store }) => {
        await produce(store, ['a', 'b'], 0);
        let location = '';
        for await (const b of Queue.open({ store }).peek()) {
          location = b.location;
          break;
        }
        await store.delete(location);
        const consumer = await Consumer.open({ store, ...quiet });
        for (let i = 0; i < 2; i++) {
          await assert.rejects(
            consumer.next(),
            (e: unknown) => e instanceof CorruptDataError && e.message.includes(location),
          );
        }
        await consumer.close();
        const [info] = await Queue.open({ store }).subscriptions();
        assert.equal(info?.nextSequence, 0);
      });
    });

    test('a commit claiming more inline bytes than it holds (checksum intact) is refused without allocating them', async () => {
      await onFreshStore(backend, async ({ store }) => {
        await produce(store, ['a']);
        const key = 'ingest/log/00000000000000000000';
        const body = (await store.get(key)).body;
        const inline = decodeCommit(body, key).batches[0]?.inline as Uint8Array;
        // [.. u64 inline length][inline bytes][u32 CRC32C]: claim 2^40 bytes, reseal.
        const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
        view.setBigUint64(body.length - 4 - inline.length - 8, 1n << 40n, true);
        view.setUint32(body.length - 4, crc32c(body.subarray(0, body.length - 4)), true);
        await store.put(key, body);
        const heapBefore = process.memoryUsage().arrayBuffers;
        const consumer = await Consumer.open({ store, ...quiet });
        await assert.rejects(consumer.next(), (e: unknown) => {
          assert.ok(e instanceof CorruptDataError, String(e));
          assert.match(e.message, /inline/);
          return true;
        });
        await consumer.close();
        assert.ok(process.memoryUsage().arrayBuffers - heapBefore < 64 * 1024 * 1024);
      });
    });
  });
}

/**
 * Corrupt and hostile input: a damaged manifest or batch object is a typed
 * error naming the object; the consumer does not advance past it, the
 * collector deletes nothing, and the producer never overwrites a manifest it
 * cannot read. file:// keys that try to leave the root are refused.
 */
import assert from 'node:assert/strict';
import { v1Store } from '../support/queue.ts';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { MemoryStore } from '../../src/index.ts';
import {
  Consumer,
  CorruptDataError,
  GarbageCollector,
  InvalidArgumentError,
  openStore,
  Producer,
  type Batch,
  type ObjectStore,
} from '../../src/index.ts';
import { decodeManifest } from '../../src/format/manifest.ts';

const MANIFEST = 'ingest/manifest';
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

async function queueWith(store: ObjectStore, count: number): Promise<string[]> {
  const producer = new Producer({ store, flushIntervalMs: 0 });
  for (let i = 0; i < count; i++) await (await producer.produce([enc(`e${i}`)])).durable;
  await producer.close();
  return decodeManifest((await store.get(MANIFEST)).body).entries.map((e) => e.location);
}

/** Every key and its bytes, to prove nothing changed. */
async function snapshot(store: ObjectStore): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const m of store.list(''))
    out.set(m.key, Buffer.from((await store.get(m.key)).body).toString('hex'));
  return out;
}

const damagedManifests: [string, (b: Uint8Array) => Uint8Array][] = [
  ['truncated', (b) => b.subarray(0, b.byteLength - 7)],
  ['cut to a few bytes', (b) => b.subarray(0, 5)],
  [
    'garbled',
    (b) => {
      const c = Uint8Array.from(b);
      for (let i = 0; i < 8; i++) c[i] = 0xff;
      return c;
    },
  ],
  [
    'from a future format version',
    (b) => {
      const c = Uint8Array.from(b);
      new DataView(c.buffer).setUint16(c.byteLength - 2, 2, true); // the footer's last field
      return c;
    },
  ],
  ['empty', () => new Uint8Array()],
];

describe('a manifest that cannot be read', () => {
  for (const [name, damage] of damagedManifests) {
    test(`${name}: consumer, producer and collector stop with CorruptDataError naming it, and nothing is written or deleted`, async () => {
      const store = await v1Store();
      await queueWith(store, 3);
      const good = (await store.get(MANIFEST)).body;
      await store.put(MANIFEST, damage(good));
      const before = await snapshot(store);

      const names = (e: unknown): boolean =>
        e instanceof CorruptDataError && e.message.includes(MANIFEST) && e.location === MANIFEST;
      await assert.rejects(Consumer.open({ store, gcIntervalMs: 0 }), names);

      const producer = new Producer({ store, flushIntervalMs: 0 });
      const { durable } = await producer.produce([enc('late')]);
      await assert.rejects(durable, names);
      await assert.rejects(producer.close(), names);

      await assert.rejects(new GarbageCollector({ store, gcGracePeriodMs: 0 }).run(), names);

      const after = await snapshot(store);
      assert.equal(after.get(MANIFEST), before.get(MANIFEST), 'the manifest bytes are untouched');
      for (const [k, v] of before) assert.equal(after.get(k), v, `${k} is untouched`);
      // The producer's batch object is an orphan, left for a later collection, and the
      // collector wrote its clock probe before reading the manifest: nothing else is new.
      assert.ok(
        [...after.keys()].every(
          (k) => before.has(k) || k.endsWith('.batch') || k === 'ingest/collector.clock',
        ),
      );
    });
  }
});

const damagedBatches: [string, (store: MemoryStore, location: string) => Promise<void>, RegExp][] =
  [
    [
      'truncated',
      async (s, l) => void (await s.put(l, (await s.get(l)).body.subarray(0, 9))),
      /bytes, but its manifest entry records/,
    ],
    [
      'with a flipped byte (checksum mismatch)',
      async (s, l) => {
        const b = Uint8Array.from((await s.get(l)).body);
        b[b.byteLength - 1]! ^= 0x40;
        await s.put(l, b);
      },
      /CRC32C/,
    ],
    ['missing', async (s, l) => s.delete(l), /missing/],
  ];

describe('a batch object that is damaged or gone', () => {
  for (const [name, damage, message] of damagedBatches) {
    test(`${name}: next() fails naming it, again and again, the consumer does not advance and nothing is deleted`, async () => {
      const store = await v1Store();
      const locations = await queueWith(store, 3);
      const bad = locations[1] as string;
      await damage(store, bad);
      const before = await snapshot(store);

      const consumer = await Consumer.open({ store, gcIntervalMs: 0, gcGracePeriodMs: 0 });
      const first = (await consumer.next()) as Batch;
      await consumer.ack(first.sequence);
      for (let i = 0; i < 3; i++) {
        await assert.rejects(
          consumer.next(),
          (e: unknown) =>
            e instanceof CorruptDataError &&
            e.location === bad &&
            message.test(e.message) &&
            e.message.includes(bad),
        );
      }
      assert.equal(consumer.lastAckedSequence, first.sequence);
      const gc = await consumer.collectGarbage();
      assert.deepEqual(
        gc.deleted.filter((k) => k !== locations[0]),
        [],
        'only the acked batch may go',
      );
      await consumer.close();
      const m = decodeManifest((await store.get(MANIFEST)).body);
      assert.deepEqual(
        m.entries.map((e) => e.location),
        locations.slice(1),
        'the damaged batch stays queued',
      );
      if (before.has(bad)) assert.equal((await snapshot(store)).get(bad), before.get(bad));
    });
  }

  test('a batch object that is not a batch at all (no trailer to check it against) fails to decode, naming it', async () => {
    const store = await v1Store();
    const location = 'ingest/01ARZ3NDEKTSV4RRFFQ69G5FAV.batch';
    const { encodeManifest } = await import('../../src/format/manifest.ts');
    await store.put(location, enc('this is not a batch'));
    await store.put(
      MANIFEST,
      encodeManifest({
        epoch: 0,
        nextSequence: 1,
        entries: [{ sequence: 0, location, metadata: [], extension: new Uint8Array() }],
      }),
    );
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    await assert.rejects(
      consumer.next(),
      (e: unknown) => e instanceof CorruptDataError && e.location === location,
    );
    await consumer.close();
    assert.equal(decodeManifest((await store.get(MANIFEST)).body).entries.length, 1);
  });
});

describe('hostile keys on file://', () => {
  test('keys that try to leave the root are refused and nothing is written outside it', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'spillway-hostile-'));
    const root = join(parent, 'root');
    const store = openStore(`file://${root}`);
    try {
      for (const key of [
        '../outside',
        'a/../../outside',
        '/etc/passwd',
        'a/./b',
        'a//b',
        '.spillway/locks/x',
        'a/..',
        '',
        'nul\0byte',
      ]) {
        await assert.rejects(
          store.put(key, enc('x')),
          InvalidArgumentError,
          `put ${JSON.stringify(key)}`,
        );
        await assert.rejects(store.get(key), InvalidArgumentError, `get ${JSON.stringify(key)}`);
        await assert.rejects(
          store.delete(key),
          InvalidArgumentError,
          `delete ${JSON.stringify(key)}`,
        );
      }
      const producer = new Producer({ store, dataPathPrefix: '../outside', flushIntervalMs: 0 });
      const { durable } = await producer.produce([enc('x')]);
      await assert.rejects(durable, InvalidArgumentError);
      await producer.close().catch(() => undefined);
      assert.deepEqual(
        (await readdir(parent)).filter((n) => n !== 'root'),
        [],
        'nothing was written beside the root',
      );
    } finally {
      await store.close();
      await rm(parent, { recursive: true, force: true });
    }
  });
});

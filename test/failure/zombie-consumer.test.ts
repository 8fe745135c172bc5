/**
 * Zombie consumers: a consumer that a newer one has fenced must not change
 * the queue any more. Its acks never reach the manifest (the write that would
 * apply them fails with FencedError, and every call after that fails too), no
 * batch is dequeued twice, and the newer consumer resumes where the last
 * stored ack left off, or after `lastAckedSequence`.
 */
import assert from 'node:assert/strict';
import { v1Store } from '../support/queue.ts';
import { describe, test } from 'node:test';
import { Consumer, FencedError, Producer, type Batch, type ObjectStore } from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { decodeManifest } from '../../src/format/manifest.ts';

const MANIFEST = 'ingest/manifest';

/** A store with `count` batches of one entry each, and a log of every manifest version written. */
async function queueWith(
  count: number,
): Promise<{ store: FaultInjectingStore; versions: { epoch: number; sequences: number[] }[] }> {
  const store = new FaultInjectingStore(await v1Store());
  const producer = new Producer({ store, flushIntervalMs: 0 });
  for (let i = 0; i < count; i++)
    await (
      await producer.produce([new TextEncoder().encode(`e${i}`)])
    ).durable;
  await producer.close();
  const versions: { epoch: number; sequences: number[] }[] = [];
  store.after('put', (call) => {
    if (call.key === MANIFEST && call.body) {
      const m = decodeManifest(call.body);
      versions.push({ epoch: m.epoch, sequences: m.entries.map((e) => e.sequence) });
    }
  });
  return { store, versions };
}

async function stored(store: ObjectStore): Promise<{ epoch: number; sequences: number[] }> {
  const m = decodeManifest((await store.get(MANIFEST)).body);
  return { epoch: m.epoch, sequences: m.entries.map((e) => e.sequence) };
}

const quiet = { gcIntervalMs: 0, ackIntervalMs: 3_600_000 };

describe('zombie consumers', () => {
  test('a consumer fenced mid-batch can no longer ack, flush or read, and the batch goes to the newer one', async () => {
    const { store, versions } = await queueWith(4);
    const zombie = await Consumer.open({ store, ...quiet });
    const held = (await zombie.next()) as Batch;
    const fresh = await Consumer.open({ store, ...quiet });
    assert.ok(fresh.epoch > zombie.epoch);

    // The ack is recorded locally, and the write that would apply it is refused.
    await zombie.ack(held.sequence);
    await assert.rejects(
      zombie.flush(),
      (e: unknown) => e instanceof FencedError && /epoch/.test(e.message),
    );
    await assert.rejects(zombie.ack(held.sequence + 1), FencedError);
    await assert.rejects(zombie.ackThrough(held.sequence), FencedError);
    await assert.rejects(zombie.next(), FencedError);
    await assert.rejects(zombie.collectGarbage(), FencedError);
    await zombie.close(); // writes nothing
    assert.deepEqual((await stored(store)).sequences, [0, 1, 2, 3], 'the zombie dequeued nothing');

    const again = (await fresh.next()) as Batch;
    assert.equal(
      again.sequence,
      held.sequence,
      'the batch the zombie held comes to the newer consumer',
    );
    await fresh.ack(again.sequence);
    await fresh.close();
    assert.deepEqual((await stored(store)).sequences, [1, 2, 3]);
    // Every manifest version after the fence carries the newer epoch: the zombie never wrote.
    const fence = versions.findIndex((v) => v.epoch === fresh.epoch);
    assert.ok(versions.slice(fence).every((v) => v.epoch === fresh.epoch));
  });

  test("a flush racing the newer consumer's fence either lands before it or is refused, never both", async () => {
    for (const fenceFirst of [true, false]) {
      const { store, versions } = await queueWith(3);
      const zombie = await Consumer.open({ store, ...quiet });
      const b = (await zombie.next()) as Batch;
      await zombie.ack(b.sequence);
      let fresh: Consumer | undefined;
      const remove = store.before('put', async () => {
        remove();
        // The newer consumer opens while the zombie's dequeue write is on its way.
        if (fenceFirst) fresh = await Consumer.open({ store, ...quiet });
      });
      const flushed = zombie.flush().then(
        () => 'landed',
        (e: unknown) => (e instanceof FencedError ? 'fenced' : String(e)),
      );
      const outcome = await flushed;
      fresh ??= await Consumer.open({ store, ...quiet });
      const next = (await fresh.next()) as Batch;
      if (outcome === 'landed') {
        assert.equal(fenceFirst, false);
        assert.equal(next.sequence, b.sequence + 1, 'an ack that landed is not delivered again');
      } else {
        assert.equal(outcome, 'fenced');
        assert.equal(
          next.sequence,
          b.sequence,
          'a refused ack leaves the batch for the newer consumer',
        );
      }
      await fresh.ack(next.sequence);
      await fresh.close();
      await zombie.close().catch(() => undefined);
      // Each sequence leaves the manifest exactly once.
      const removals = new Map<number, number>();
      for (let i = 1; i < versions.length; i++) {
        const now = new Set(versions[i]!.sequences);
        for (const s of versions[i - 1]!.sequences)
          if (!now.has(s)) removals.set(s, (removals.get(s) ?? 0) + 1);
      }
      assert.ok(
        [...removals.values()].every((n) => n === 1),
        `a sequence was dequeued twice: ${JSON.stringify([...removals])}`,
      );
    }
  });

  test("with ackBatchSize 1 the zombie's ack itself fails with FencedError", async () => {
    const { store } = await queueWith(2);
    const zombie = await Consumer.open({ store, ...quiet, ackBatchSize: 1 });
    const b = (await zombie.next()) as Batch;
    const fresh = await Consumer.open({ store, ...quiet });
    await assert.rejects(zombie.ack(b.sequence), FencedError);
    assert.deepEqual((await stored(store)).sequences, [0, 1]);
    await fresh.close();
    await zombie.close();
  });

  test("a zombie's background ack flush is refused and the next call reports it", async () => {
    const { store } = await queueWith(2);
    const zombie = await Consumer.open({ store, gcIntervalMs: 0, ackIntervalMs: 1 });
    const b = (await zombie.next()) as Batch;
    const fresh = await Consumer.open({ store, ...quiet });
    // The consumer's ack timer is unref'd; this keeps the process alive until it fires.
    const alive = setTimeout(() => undefined, 60_000);
    const readByTimer = new Promise<void>((resolve) => {
      const remove = store.after('get', (call) => {
        if (call.key === MANIFEST) {
          remove();
          resolve();
        }
      });
    });
    await zombie.ack(b.sequence); // the 1 ms timer applies it in the background
    await readByTimer;
    clearTimeout(alive);
    await new Promise((r) => setImmediate(r));
    await assert.rejects(zombie.next(), FencedError);
    assert.deepEqual((await stored(store)).sequences, [0, 1]);
    await fresh.close();
    await zombie.close();
  });

  test('resuming with lastAckedSequence skips what the last consumer processed, stored or not', async () => {
    const { store } = await queueWith(6);
    const first = await Consumer.open({ store, ...quiet });
    for (let i = 0; i < 2; i++) await first.ack(((await first.next()) as Batch).sequence);
    await first.flush(); // 0 and 1 stored
    for (let i = 0; i < 2; i++) await first.ack(((await first.next()) as Batch).sequence);
    const processed = first.lastAckedSequence; // 3, with 2 and 3 not yet stored: then it dies
    assert.equal(processed, 3);
    assert.deepEqual((await stored(store)).sequences, [2, 3, 4, 5]);

    const resumed = await Consumer.open({ store, ...quiet, lastAckedSequence: processed });
    assert.equal(((await resumed.next()) as Batch).sequence, 4);
    await assert.rejects(first.flush(), FencedError);
    await resumed.close();
    assert.deepEqual(
      (await stored(store)).sequences,
      [4, 5],
      'closing stores the resumed position',
    );
  });
});

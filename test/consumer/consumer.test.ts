import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MemoryStore } from '../../src/index.ts';
import {
  ClosedError,
  Consumer,
  CorruptDataError,
  FencedError,
  InMemoryMetrics,
  InvalidArgumentError,
  TimeoutError,
  type Batch,
} from '../../src/index.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { decodeManifest, encodeManifest } from '../../src/internal.ts';
import { settlesWithin, until } from '../support/deferred.ts';
import { queueWith, v1Store } from '../support/queue.ts';

const dec = new TextDecoder();
const text = (b: Batch) => b.entries.map((e) => dec.decode(e));

async function readManifest(store: MemoryStore) {
  return decodeManifest((await store.get('ingest/manifest')).body);
}

describe('consumer', () => {
  test('acks must be in order', async () => {
    const store = await v1Store();
    await queueWith(store, 3);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    const b0 = (await consumer.next()) as Batch;
    const b1 = (await consumer.next()) as Batch;
    await assert.rejects(consumer.ack(b1.sequence), InvalidArgumentError);
    await consumer.ack(b0.sequence);
    await consumer.ack(b1.sequence);
    await assert.rejects(consumer.ack(99), InvalidArgumentError);
    await Promise.all([consumer.close(), consumer.close()]);
    await assert.rejects(consumer.next(), ClosedError);
    await assert.rejects(consumer.flush(), ClosedError);
    assert.deepEqual(
      (await readManifest(store)).entries.map((e) => e.sequence),
      [2],
      'close applied the pending acks',
    );
  });

  test('acks are applied every ackBatchSize acks as one dequeue, and flush() applies them now', async () => {
    const store = await v1Store();
    await queueWith(store, 5);
    const metrics = new InMemoryMetrics();
    const consumer = await Consumer.open({
      store,
      gcIntervalMs: 0,
      ackBatchSize: 2,
      ackIntervalMs: 60_000,
      metrics,
    });
    for (let i = 0; i < 3; i++) await consumer.ack(((await consumer.next()) as Batch).sequence);
    assert.equal((await readManifest(store)).entries.length, 3, 'two acks applied, one pending');
    await consumer.flush();
    assert.equal((await readManifest(store)).entries.length, 2);
    assert.equal(metrics.counter('buffer.manifest_writes', { role: 'consumer' }), 3); // fence + 2 dequeues
    await consumer.close();
  });

  test('a newer consumer fences the older: its reads, acks and flushes fail, and the newer resumes', async () => {
    const store = await v1Store();
    await queueWith(store, 3);
    const first = await Consumer.open({ store, gcIntervalMs: 0, ackIntervalMs: 60_000 });
    const b0 = (await first.next()) as Batch;
    await first.ack(b0.sequence);
    await first.flush();
    const b1 = (await first.next()) as Batch;
    const second = await Consumer.open({
      store,
      gcIntervalMs: 0,
      lastAckedSequence: first.lastAckedSequence,
    });
    await assert.rejects(
      first.ack(b1.sequence).then(() => first.flush()),
      FencedError,
    );
    await assert.rejects(first.next(), FencedError);
    await assert.rejects(first.flush(), FencedError);
    const again = (await second.next()) as Batch;
    assert.equal(
      again.sequence,
      b1.sequence,
      'the un-acked batch is delivered again to the new consumer',
    );
    await second.ack(again.sequence);
    await second.close();
    await first.close();
    assert.equal((await readManifest(store)).epoch, 2);
  });

  test('lastAckedSequence skips what was already processed', async () => {
    const store = await v1Store();
    await queueWith(store, 4);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0, lastAckedSequence: 1 });
    assert.equal(((await consumer.next()) as Batch).sequence, 2);
    await consumer.close();
    assert.deepEqual(
      (await readManifest(store)).entries.map((e) => e.sequence),
      [2, 3],
    );
  });

  test('nextDescriptors, concurrent fetch and ackThrough advance in one write', async () => {
    const store = await v1Store();
    await queueWith(store, 6);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    const ds = await consumer.nextDescriptors(4);
    assert.deepEqual(
      ds.map((d) => d.sequence),
      [0, 1, 2, 3],
    );
    assert.ok(ds.every((d) => typeof d.sizeBytes === 'number' && typeof d.crc32c === 'number'));
    const batches = await Promise.all(ds.map((d) => consumer.fetch(d)));
    assert.deepEqual(
      batches.map((b) => text(b)[0]),
      ['e0', 'e1', 'e2', 'e3'],
    );
    await consumer.ackThrough(3);
    assert.deepEqual(
      (await readManifest(store)).entries.map((e) => e.sequence),
      [4, 5],
    );
    await assert.rejects(consumer.ackThrough(5), InvalidArgumentError);
    await consumer.close();
  });

  test('a missing batch object is an error naming its location, and the consumer does not advance', async () => {
    const store = await v1Store();
    await queueWith(store, 2);
    const m = await readManifest(store);
    const missing = m.entries[0]!.location;
    await store.delete(missing);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    for (let i = 0; i < 2; i++) {
      await assert.rejects(
        consumer.next(),
        (e: unknown) => e instanceof CorruptDataError && e.message.includes(missing),
      );
    }
    await consumer.close();
    assert.equal((await readManifest(store)).entries.length, 2);
  });

  test('a batch whose checksum does not match its manifest entry is refused', async () => {
    const store = await v1Store();
    await queueWith(store, 1);
    const loc = (await readManifest(store)).entries[0]!.location;
    const body = (await store.get(loc)).body;
    body[0] = (body[0] as number) ^ 0xff;
    await store.put(loc, body);
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    await assert.rejects(
      consumer.next(),
      (e: unknown) =>
        e instanceof CorruptDataError && /CRC32C/.test(e.message) && e.location === loc,
    );
    await consumer.close();
  });

  test('entries without a trailer (other writers) are accepted', async () => {
    const store = await v1Store();
    await queueWith(store, 1);
    const m = await readManifest(store);
    m.entries[0]!.extension = new Uint8Array();
    await store.put('ingest/manifest', encodeManifest(m));
    const consumer = await Consumer.open({ store, gcIntervalMs: 0 });
    assert.deepEqual(text((await consumer.next()) as Batch), ['e0']);
    await consumer.close();
  });

  test('batches() polls on the injected clock while caught up, until aborted', async () => {
    const store = await v1Store();
    const clock = new ManualClock();
    const consumer = await Consumer.open({ store, gcIntervalMs: 0, clock });
    const controller = new AbortController();
    const seen: string[] = [];
    const reading = (async () => {
      for await (const b of consumer.batches({ signal: controller.signal, pollIntervalMs: 1000 })) {
        seen.push(...text(b));
        await consumer.ack(b.sequence);
        if (seen.length === 2) controller.abort();
      }
    })();
    await until(() => clock.pendingTimers > 0); // caught up, waiting for the poll
    await queueWith(store, 2);
    assert.deepEqual(seen, [], 'nothing read before the poll interval passed');
    await clock.advance(1000);
    await reading;
    assert.deepEqual(seen, ['e0', 'e1']);
    await consumer.close();
  });

  test('a pending ack is applied after ackIntervalMs on the injected clock', async () => {
    const store = await v1Store();
    await queueWith(store, 2);
    const clock = new ManualClock();
    const consumer = await Consumer.open({
      store,
      gcIntervalMs: 0,
      ackIntervalMs: 1000,
      ackBatchSize: 100,
      clock,
    });
    await consumer.ack(((await consumer.next()) as Batch).sequence);
    await clock.advance(999);
    assert.equal((await readManifest(store)).entries.length, 2, 'not yet');
    await clock.advance(1);
    await until(() => clock.pendingTimers === 0);
    await consumer.flush(); // waits for the timer's dequeue, which is already running
    assert.equal((await readManifest(store)).entries.length, 1);
    await consumer.close();
  });

  test('background collections run every gcIntervalMs on the injected clock', async () => {
    const clock = new ManualClock(Date.now());
    const store = await v1Store({ clock });
    await queueWith(store, 1);
    const consumer = await Consumer.open({
      store,
      clock,
      gcIntervalMs: 60_000,
      gcGracePeriodMs: 1000,
    });
    await consumer.ackThrough(((await consumer.next()) as Batch).sequence);
    const batches = async () => {
      let n = 0;
      for await (const o of store.list('ingest/')) if (o.key.endsWith('.batch')) n++;
      return n;
    };
    assert.equal(await batches(), 1);
    await clock.advance(60_000);
    await until(() => clock.pendingTimers === 1); // the collection ran and re-armed
    assert.equal(await batches(), 0);
    await consumer.close();
    assert.equal(clock.pendingTimers, 0, 'close cleared the timers');
  });
});

describe('consumer lifecycle', () => {
  /** A consumer over a queue of `n` batches whose store stalls (every call hangs) once `stall()` is called. */
  async function stallable(n: number, clock?: ManualClock) {
    const inner = await v1Store();
    await queueWith(inner, n);
    const store = new FaultInjectingStore(inner);
    let stalled = false;
    for (const op of ['get', 'head', 'put', 'list', 'delete', 'deleteMany'] as const)
      store.before(op, () => (stalled ? new Promise<void>(() => undefined) : undefined));
    const consumer = await Consumer.open({
      store,
      gcIntervalMs: 0,
      ackIntervalMs: 60_000,
      readAheadBatches: 1,
      ...(clock ? { clock } : {}),
    });
    return { consumer, inner, stall: () => (stalled = true) };
  }

  test('calls take a signal: next() on a stalled store rejects with the reason when aborted', async () => {
    const { consumer, stall } = await stallable(2);
    stall();
    const controller = new AbortController();
    const next = consumer.next({ signal: controller.signal });
    assert.equal(await settlesWithin(next), false);
    controller.abort(new Error('enough'));
    await assert.rejects(next, /enough/);
    await consumer.destroy();
  });

  test('close({ timeoutMs }) on a stalled store rejects with TimeoutError; the unapplied ack is redelivered', async () => {
    const clock = new ManualClock();
    const { consumer, inner, stall } = await stallable(2, clock);
    const b = (await consumer.next()) as Batch;
    await consumer.ack(b.sequence);
    stall();
    const closing = consumer.close({ timeoutMs: 10_000 });
    closing.catch(() => undefined);
    assert.equal(await settlesWithin(closing), false);
    await clock.advance(10_000);
    await assert.rejects(closing, TimeoutError);
    await assert.rejects(consumer.next(), TimeoutError);
    const next = await Consumer.open({ store: inner, gcIntervalMs: 0 });
    assert.equal(((await next.next()) as Batch).sequence, b.sequence, 'delivered again');
    await next.close();
  });

  test('destroy() returns at once on a stalled store, applies nothing, and later calls reject', async () => {
    const { consumer, inner, stall } = await stallable(1);
    const b = (await consumer.next()) as Batch;
    await consumer.ack(b.sequence);
    stall();
    const pending = consumer.next();
    pending.catch(() => undefined);
    assert.equal(await settlesWithin(consumer.destroy()), true);
    await assert.rejects(consumer.next(), ClosedError);
    await consumer.close();
    assert.equal((await readManifest(inner)).entries.length, 1, 'the ack was not applied');
  });

  test('unknown options are refused, naming them', async () => {
    await assert.rejects(
      Consumer.open({ store: await v1Store(), ackIntervalMS: 5 } as never),
      (e: unknown) =>
        e instanceof InvalidArgumentError && /unknown option "ackIntervalMS"/.test(e.message),
    );
  });
});

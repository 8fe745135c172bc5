/**
 * Readers of reservations and slots (docs/log-layout.md §7.4, "Reservations
 * and slots"): consumers, read-ahead, voids, fetches, acknowledgements,
 * start positions, the peek, lag, the HTTP reader and ingest progress. The
 * log is written by hand (commits and slots encoded here), so each test
 * says exactly which slot exists when.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  CorruptDataError,
  DataLossError,
  MemoryStore,
  PreconditionFailedError,
  Queue,
  type Batch,
  type ObjectStore,
} from '../../src/index.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { encodeBatch } from '../../src/format/batch.ts';
import { crc32c } from '../../src/format/crc32c.ts';
import {
  commitEnd,
  commitKey,
  encodeCommit,
  inlineLocation,
  type Commit,
  type CommitBatch,
} from '../../src/format/log-commit.ts';
import {
  decodeSlot,
  encodeSlot,
  isVoid,
  slotKey,
  slotLocation,
  slotToken,
} from '../../src/format/log-slot.ts';
import { encodeTrailer } from '../../src/format/trailer.ts';
import { describeEntry, fetchSlotBatch } from '../../src/queue/batch-fetch.ts';
import { LogQueue } from '../../src/queue/log-queue.ts';
import { readSlot, VOID_AFTER_MS } from '../../src/queue/log-slots.ts';
import { encodeChunkRecord } from '../../src/pusher/chunk-metadata.ts';
import { IngestProgress } from '../../src/pusher/ingest-progress.ts';
import { acknowledge, readEntries } from '../../src/server/subscription-position.ts';
import { HttpError } from '../../src/server/http-error.ts';

const ROOT = 'ingest';
const enc = new TextEncoder();
const dec = new TextDecoder();

/** An inline batch holding one entry, `text`, at `sequence`; `badCrc` spoils its trailer's CRC32C. */
async function inlineBatch(
  location: string,
  sequence: number,
  text: string,
  badCrc = false,
): Promise<CommitBatch> {
  const inline = await encodeBatch([enc.encode(text)]);
  return {
    entry: {
      sequence,
      location,
      metadata: [{ startIndex: 0, ingestionTimeMs: 1_000, payload: payloadOf(text) }],
      extension: encodeTrailer({
        batchSizeBytes: inline.byteLength,
        crc32c: (crc32c(inline) ^ (badCrc ? 1 : 0)) >>> 0,
        instanceId: 'producer',
      }),
    },
    records: 1,
    inline,
  };
}

/**
 * The metadata payload of an entry: a pusher's chunk record for texts
 * `chunk:{source}:{offset}:{end}`, else none.
 */
function payloadOf(text: string): Uint8Array {
  const m = /^chunk:(\w+):(\d+):(\d+)$/.exec(text);
  if (!m) return new Uint8Array();
  return encodeChunkRecord({
    job: 'j',
    source: m[1]!,
    offset: Number(m[2]),
    end: Number(m[3]),
    last: false,
  });
}

/** A log written by hand: commits (each optionally reserving sequences) and slots. */
class HandLog {
  private next = 0;
  private sequence = 0;
  private totalBytes = 0;
  private totalRecords = 0;

  constructor(
    readonly store: ObjectStore,
    private readonly clock: ManualClock,
  ) {}

  /** Creates the queue (descriptor and default subscription at 'oldest'). */
  async create(): Promise<this> {
    await new LogQueue({ store: this.store, root: ROOT, clock: this.clock }).ensureCreated();
    return this;
  }

  /** Creates the next commit: its own batches holding `own`, then `reserved` sequences. */
  async commit(own: string[], reserved = 0): Promise<Commit> {
    const n = this.next++;
    const first = this.sequence;
    const batches = await Promise.all(
      own.map((t, i) => inlineBatch(inlineLocation(ROOT, n, i), first + i, t)),
    );
    for (const b of batches) {
      this.totalBytes += b.inline?.byteLength ?? 0;
      this.totalRecords += b.records;
    }
    const c: Commit = {
      commit: n,
      firstSequence: first,
      appendTimeMs: this.clock.now(),
      totalBytes: this.totalBytes,
      totalRecords: this.totalRecords,
      writer: 'producer',
      batches,
      ...(reserved > 0 ? { reserved } : {}),
    };
    // A producer marks the log before its first reserving commit (§7.2).
    if (reserved > 0) await this.store.put(`${ROOT}/reserving`, new Uint8Array(0));
    await this.store.put(commitKey(ROOT, n), encodeCommit(c), { mode: 'create' });
    this.sequence = commitEnd(c);
    return c;
  }

  /** Creates the slot at `sequence` of `c`'s reservation, holding one batch per text. */
  async slot(c: Commit, sequence: number, texts: string[], badCrc = false): Promise<void> {
    await this.store.put(
      slotKey(ROOT, sequence),
      await this.slotBytes(c, sequence, texts, badCrc),
      {
        mode: 'create',
      },
    );
  }

  async slotBytes(
    c: Commit,
    sequence: number,
    texts: string[],
    badCrc = false,
  ): Promise<Uint8Array> {
    const batches = await Promise.all(
      texts.map((t, i) => inlineBatch(slotLocation(ROOT, sequence, i), sequence + i, t, badCrc)),
    );
    return encodeSlot(
      {
        commit: c.commit,
        firstSequence: sequence,
        endSequence: commitEnd(c),
        writer: 'producer',
        token: slotToken(),
        batches,
      },
      ROOT,
    );
  }
}

function setup(): { clock: ManualClock; store: MemoryStore; log: HandLog } {
  const clock = new ManualClock(1_700_000_000_000);
  const store = new MemoryStore(undefined, { clock });
  return { clock, store, log: new HandLog(store, clock) };
}

function open(
  store: ObjectStore,
  clock: ManualClock,
  more: Partial<Parameters<typeof Consumer.open>[0]> = {},
): Promise<Consumer> {
  return Consumer.open({ store, clock, gcIntervalMs: 0, instanceId: 'reader-1', ...more });
}

/** Every batch there is now, acknowledged; their entries with their sequences. */
async function drain(consumer: Consumer): Promise<string[]> {
  const got: string[] = [];
  for (;;) {
    const b = await consumer.next();
    if (!b) return got;
    got.push(`${b.sequence}:${b.entries.map((e) => dec.decode(e)).join(',')}`);
    await consumer.ackThrough(b.sequence);
  }
}

/**
 * Awaits `work` while moving `clock` 10 ms at a time, at most `limitMs`: a
 * reader waiting for a slot that holds later commits back polls by the clock.
 * Returns what `work` gave, and how much time it took.
 */
async function advancing<T>(
  clock: ManualClock,
  work: Promise<T>,
  limitMs: number,
): Promise<{ value: T; elapsedMs: number }> {
  let settled = false;
  const done = work.finally(() => (settled = true));
  done.catch(() => undefined);
  let elapsedMs = 0;
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  while (!settled && elapsedMs < limitMs) {
    await clock.advance(10);
    elapsedMs += 10;
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  }
  assert.ok(settled, `still waiting after ${limitMs} ms of manual time`);
  return { value: await done, elapsedMs };
}

async function exists(store: ObjectStore, key: string): Promise<boolean> {
  try {
    await store.head(key);
    return true;
  } catch {
    return false;
  }
}

describe('reservations: consumers', () => {
  test("a consumer gets a commit's batches, then its slots' in order, then the next commit's", async () => {
    const { clock, store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a', 'b'], 5); // 0, 1; reserves 2..6
    await log.slot(c0, 2, ['c', 'd']);
    await log.slot(c0, 4, ['e']);
    await log.slot(c0, 5, ['f', 'g']);
    await log.commit(['h']); // 7
    const consumer = await open(store, clock);
    const first = (await consumer.next()) as Batch;
    assert.equal(first.sequence, 0);
    await consumer.ackThrough(0);
    const second = (await consumer.next()) as Batch;
    await consumer.ackThrough(1);
    const slotted = (await consumer.next()) as Batch;
    assert.equal(second.sequence, 1);
    assert.equal(slotted.location, slotLocation(ROOT, 2, 0));
    assert.deepEqual(await drain(consumer), ['3:d', '4:e', '5:f', '6:g', '7:h']);
    await consumer.close();
  });

  test('a missing slot holds back every later commit (read-ahead included) until it is written', async () => {
    const { clock, store, log } = setup();
    await log.create();
    await log.commit(['a']); // 0
    const c1 = await log.commit(['b'], 3); // 1; reserves 2..4
    await log.slot(c1, 2, ['c']);
    await log.commit(['z']); // 5
    const consumer = await open(store, clock);
    const got: string[] = [];
    const draining = (async () => {
      for (;;) {
        const b = await consumer.next();
        if (!b) return;
        got.push(`${b.sequence}:${b.entries.map((e) => dec.decode(e)).join(',')}`);
        await consumer.ackThrough(b.sequence);
      }
    })();
    // Later commits are there: the reader waits at the missing slot 3, by its clock.
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    await clock.advance(VOID_AFTER_MS / 2);
    assert.deepEqual(got, ['0:a', '1:b', '2:c'], 'stops at the missing slot 3');
    await log.slot(c1, 3, ['d', 'e']);
    await advancing(clock, draining, VOID_AFTER_MS);
    assert.deepEqual(got, ['0:a', '1:b', '2:c', '3:d', '4:e', '5:z']);
    assert.equal(await exists(store, slotKey(ROOT, 5)), false, 'nothing voided');
    await consumer.close();
  });

  test("an overdue slot is voided after VOID_AFTER_MS by the reader's clock; its tail is never delivered", async () => {
    const { clock, store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 4); // 0; reserves 1..4
    await log.slot(c0, 1, ['b']);
    await log.commit(['z']); // 5
    const consumer = await open(store, clock, { ackIntervalMs: 10 });
    // A later commit is there: the drain waits at slot 2 until it is overdue, then voids it.
    const { value, elapsedMs } = await advancing(clock, drain(consumer), 2 * VOID_AFTER_MS);
    assert.deepEqual(value, ['0:a', '1:b', '5:z'], 'voided: reading goes on after it');
    assert.ok(elapsedMs >= VOID_AFTER_MS, `not before VOID_AFTER_MS (${elapsedMs} ms)`);
    const voided = decodeSlot((await store.get(slotKey(ROOT, 2))).body, 'void', 2, ROOT);
    assert.ok(isVoid(voided));
    assert.equal(voided.writer, 'reader-1');
    // The producer comes back too late: its create is refused, and nothing of it is read.
    await assert.rejects(log.slot(c0, 2, ['late']), PreconditionFailedError);
    await consumer.close();
    const again = await open(store, clock, { subscription: 'other' });
    assert.deepEqual(await drain(again), ['0:a', '1:b', '5:z']);
    await again.close();
  });

  test("a slot its producer creates just before the reader's void wins: the void returns it", async () => {
    const { clock, store: inner, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 2); // 0; reserves 1..2
    await log.commit(['z']); // 3
    const store = new FaultInjectingStore(inner);
    const late = await log.slotBytes(c0, 1, ['b', 'c']);
    let raced = false;
    store.before('put', async (call) => {
      if (call.key === slotKey(ROOT, 1) && !raced) {
        raced = true;
        await inner.put(slotKey(ROOT, 1), late, { mode: 'create' });
      }
    });
    const consumer = await open(store, clock);
    const { value } = await advancing(clock, drain(consumer), 2 * VOID_AFTER_MS);
    assert.deepEqual(value, ['0:a', '1:b', '2:c', '3:z']);
    assert.ok(raced, 'the reader tried to void');
    assert.deepEqual((await inner.get(slotKey(ROOT, 1))).body, late);
    await consumer.close();
  });

  test('acknowledgements inside a reservation survive a restart: no batch twice, none skipped', async () => {
    const { clock, store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 3); // 0; reserves 1..3
    await log.slot(c0, 1, ['b']);
    await log.slot(c0, 2, ['c', 'd']);
    await log.commit(['e']); // 4
    const one = await open(store, clock);
    for (const expected of [0, 1, 2]) {
      const b = (await one.next()) as Batch;
      assert.equal(b.sequence, expected);
      await one.ackThrough(b.sequence);
    }
    await one.close();
    const cursor = (await new LogQueue({ store, root: ROOT }).readCursor('default'))!.value;
    assert.deepEqual(cursor.next, { sequence: 3, index: 0 });
    assert.equal(cursor.commit, 0, 'the reserving commit');
    // Resumes inside the slot at 2, which holds 2 and 3.
    const two = await open(store, clock, { instanceId: 'reader-2' });
    assert.deepEqual(await drain(two), ['3:d', '4:e']);
    await two.close();
  });

  test('a consumer that acknowledged up to a void resumes after the reservation', async () => {
    const { clock, store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 3); // 0; reserves 1..3
    await log.slot(c0, 1, ['b']);
    const one = await open(store, clock);
    assert.deepEqual(await drain(one), ['0:a', '1:b']);
    await clock.advance(VOID_AFTER_MS);
    assert.deepEqual(await drain(one), []);
    assert.ok(await exists(store, slotKey(ROOT, 2)), 'voided');
    await one.close();
    await log.commit(['z']); // 4
    const two = await open(store, clock, { instanceId: 'reader-2' });
    assert.deepEqual(await drain(two), ['4:z']);
    await two.close();
  });

  test('a slot batch is fetched and checked against its trailer: a bad CRC32C is corruption', async () => {
    const { clock, store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 1); // 0; reserves 1
    await log.slot(c0, 1, ['b'], true);
    const consumer = await open(store, clock);
    assert.deepEqual((await consumer.next())?.sequence, 0);
    await consumer.ackThrough(0);
    await assert.rejects(consumer.next(), (e: unknown) => {
      assert.ok(e instanceof CorruptDataError, String(e));
      assert.match(e.message, /CRC32C/);
      return true;
    });
    await consumer.destroy();
  });

  test('a damaged slot object is refused as corrupt, by the read and by a fetch', async () => {
    const { clock, store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 1);
    const bytes = await log.slotBytes(c0, 1, ['b']);
    const d = describeEntry(decodeSlot(bytes, 'slot', 1, ROOT).batches[0]!.entry);
    assert.deepEqual(
      dec.decode((await decodeBatchOf(await fetchAfterPut(store, bytes, d)))[0]),
      'b',
    );
    const damaged = Uint8Array.from(bytes);
    damaged[damaged.byteLength - 10]! ^= 0xff;
    await store.put(slotKey(ROOT, 1), damaged); // overwrite, as a bit flip would
    await assert.rejects(fetchSlotBatch(store, ROOT, d), CorruptDataError);
    const consumer = await open(store, clock);
    assert.equal((await consumer.next())?.sequence, 0);
    await consumer.ackThrough(0);
    await assert.rejects(consumer.next(), CorruptDataError);
    await consumer.destroy();
  });

  test('a reservation collected under a waiting reader is a loss, never a void', async () => {
    const { clock, store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 3); // 0; reserves 1..3
    await log.slot(c0, 1, ['b']);
    await log.commit(['z']); // 4
    const consumer = await open(store, clock, { ackIntervalMs: 10 });
    assert.equal((await consumer.next())?.sequence, 0);
    await consumer.ackThrough(0);
    assert.equal((await consumer.next())?.sequence, 1); // handed out, not acknowledged
    const waiting = consumer.next(); // waits for slot 2: commit 1 lies behind it
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    // Retention collects commit 0 with its slots.
    const q = new LogQueue({ store, root: ROOT });
    await q.raiseBoundary({ firstCommit: 1, firstSequence: 4, expiredBelow: 4 });
    await store.delete(commitKey(ROOT, 0));
    await store.delete(slotKey(ROOT, 1));
    const settled = advancing(
      clock,
      waiting.then(
        () => undefined,
        (e: unknown) => e,
      ),
      2 * VOID_AFTER_MS,
    );
    const { value: failure } = await settled;
    assert.ok(
      ((e: unknown) => {
        assert.ok(e instanceof DataLossError, String(e));
        assert.deepEqual([e.firstSequence, e.lastSequence], [2, 3]);
        return true;
      })(failure),
    );
    assert.equal(await exists(store, slotKey(ROOT, 2)), false, 'no void written');
    assert.deepEqual(await drain(consumer), ['4:z']);
    await consumer.close();
  });
});

/** Writes a slot and fetches one of its batches. */
async function fetchAfterPut(
  store: ObjectStore,
  bytes: Uint8Array,
  d: ReturnType<typeof describeEntry>,
): Promise<Uint8Array> {
  await store.put(slotKey(ROOT, 1), bytes, { mode: 'create' });
  return fetchSlotBatch(store, ROOT, d);
}

async function decodeBatchOf(body: Uint8Array): Promise<Uint8Array[]> {
  const { decodeBatch } = await import('../../src/format/batch.ts');
  return (await decodeBatch(body, 'batch')).records;
}

describe('reservations: start positions', () => {
  test("'latest' closes a half-written reservation: nothing can be written below its start", async () => {
    const { clock, store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 4); // 0; reserves 1..4
    await log.slot(c0, 1, ['b']);
    const q = new LogQueue({ store, root: ROOT, writer: 'starter' });
    assert.deepEqual(await q.resolveStart('latest'), {
      next: { sequence: 5, index: 0 },
      commit: 1,
    });
    const voided = await readSlot(store, ROOT, c0, 2);
    assert.ok(voided && isVoid(voided), 'the first slot not written is voided');
    assert.equal(voided.writer, 'starter');
    // The producer's create of slot 2 now fails: its group goes into a later commit.
    await assert.rejects(log.slot(c0, 2, ['c']), PreconditionFailedError);
    const consumer = await open(store, clock, { subscription: 'late', startAt: 'latest' });
    assert.deepEqual(await drain(consumer), []);
    await log.commit(['c']); // 5: the group that met the void
    assert.deepEqual(await drain(consumer), ['5:c']);
    await consumer.close();
  });

  test("'latest' starts at a slot its producer wrote while the reservation was being closed", async () => {
    const { store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 4); // 0; reserves 1..4
    await log.slot(c0, 1, ['b']);
    const faults = new FaultInjectingStore(store);
    // The producer's create of slot 2 lands just before the void.
    let raced = false;
    faults.before('put', async (call) => {
      if (raced || !call.key.endsWith('/slots/00000000000000000002')) return;
      raced = true;
      await log.slot(c0, 2, ['c']);
    });
    const q = new LogQueue({ store: faults, root: ROOT });
    assert.deepEqual(await q.resolveStart('latest'), {
      next: { sequence: 2, index: 0 },
      commit: 0,
    });
    const closed = await readSlot(store, ROOT, c0, 3);
    assert.ok(closed && isVoid(closed), 'the walk went on after it and closed the rest');
  });

  test('a log on which nobody reserved: latest reads no commit back', async () => {
    const { store, log } = setup();
    await log.create();
    for (let i = 0; i < 20; i++) await log.commit([`x${i}`]);
    const counting = new FaultInjectingStore(store);
    const commitReads: string[] = [];
    counting.before('get', (call) => {
      if (call.key.includes('/log/')) commitReads.push(call.key);
    });
    const q = new LogQueue({ store: counting, root: ROOT });
    assert.deepEqual(await q.resolveStart('latest'), {
      next: { sequence: 20, index: 0 },
      commit: 20,
    });
    assert.ok(commitReads.length <= 2, `head discovery only (${commitReads.length} commit reads)`);
  });

  test('a start by sequence inside a reservation walks its slots and skips what is below', async () => {
    const { clock, store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 4); // 0; reserves 1..4
    await log.slot(c0, 1, ['b', 'c']);
    await log.slot(c0, 3, ['d']);
    await log.slot(c0, 4, ['e']);
    await log.commit(['f']); // 5
    const q = new LogQueue({ store, root: ROOT });
    assert.equal((await q.resolveStart({ sequence: 2 })).commit, 0);
    const two = await open(store, clock, { subscription: 's2', startAt: { sequence: 2 } });
    assert.deepEqual(await drain(two), ['2:c', '3:d', '4:e', '5:f']);
    await two.close();
    const four = await open(store, clock, { subscription: 's4', startAt: { sequence: 4 } });
    assert.deepEqual(await drain(four), ['4:e', '5:f']);
    await four.close();
  });
});

describe('reservations: inspection', () => {
  test('the peek reads slots in order, stops at a missing one, and never voids', async () => {
    const { clock, log } = setup();
    const store = new FaultInjectingStore(log.store);
    const puts: string[] = [];
    store.before('put', (call) => {
      puts.push(call.key);
    });
    await log.create();
    const c0 = await log.commit(['a'], 3); // 0; reserves 1..3
    await log.slot(c0, 1, ['b']);
    await log.commit(['z']); // 4
    const peek = async (): Promise<number[]> => {
      const got: number[] = [];
      for await (const b of Queue.open({ store }).peek({ clock })) got.push(b.sequence);
      return got;
    };
    assert.deepEqual(await peek(), [0, 1]);
    await clock.advance(10 * VOID_AFTER_MS);
    assert.deepEqual(await peek(), [0, 1]);
    assert.deepEqual(
      puts.filter((k) => k.includes('/slots/')),
      [],
      'the peek wrote nothing',
    );
    await log.slot(c0, 2, ['c', 'd']);
    assert.deepEqual(await peek(), [0, 1, 2, 3, 4]);
  });

  test('lag counts slot batches, and not the sequences of a reservation still empty', async () => {
    const { store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 4); // 0; reserves 1..4
    await log.slot(c0, 1, ['b', 'c']);
    const [info] = await Queue.open({ store }).subscriptions();
    const sizes = [
      ...c0.batches,
      ...decodeSlot((await store.get(slotKey(ROOT, 1))).body, 's', 1, ROOT).batches,
    ].map((b) => b.inline!.byteLength);
    assert.equal(info?.name, 'default');
    assert.equal(info?.lagEntries, 3);
    assert.equal(info?.lagBatches, 3, 'sequences 3 and 4 hold no batch yet');
    assert.equal(
      info?.lagBytes,
      sizes.reduce((a, b) => a + b, 0),
    );
  });

  test('the HTTP reader reads slots, stops at a missing one, and acknowledges inside a slot', async () => {
    const { clock, store, log } = setup();
    await log.create();
    const c0 = await log.commit(['a'], 3); // 0; reserves 1..3
    await log.slot(c0, 1, ['b']);
    await log.commit(['z']); // 4
    const q = new LogQueue({ store, root: ROOT });
    const r = await readEntries(q, { next: { sequence: 0, index: 0 }, commit: 0 }, 10);
    assert.deepEqual(
      r.entries.map((e) => dec.decode(e.data)),
      ['a', 'b'],
    );
    assert.deepEqual(r.point, { next: { sequence: 2, index: 0 }, commit: 0 });
    assert.deepEqual((await readEntries(q, r.point, 10)).entries, []);
    await acknowledge(q, 'default', { sequence: 1, index: 0 }, clock);
    await assert.rejects(
      acknowledge(q, 'default', { sequence: 2, index: 0 }, clock),
      (e: unknown) => e instanceof HttpError && e.status === 400,
    );
    await log.slot(c0, 2, ['c', 'd']);
    const more = await readEntries(q, r.point, 10);
    assert.deepEqual(
      more.entries.map((e) => `${e.position.sequence}:${dec.decode(e.data)}`),
      ['2:c', '3:d', '4:z'],
    );
    assert.deepEqual(more.point.next, { sequence: 5, index: 0 });
    assert.equal(await exists(store, slotKey(ROOT, 1)), true);
  });

  test("ingest progress finds a job's chunks in slots, and keeps its hold at a missing slot", async () => {
    const { store, log } = setup();
    await log.create();
    // A run crashed without a checkpoint: its hold is where it started.
    await new LogQueue({ store, root: ROOT }).createCursor('ingest.j', 'oldest');
    const c0 = await log.commit(['chunk:s:0:10'], 3); // 0; reserves 1..3
    await log.slot(c0, 1, ['chunk:s:10:20']);
    // Slot 2 is missing (its producer may still write it); a later commit holds more.
    await log.commit(['chunk:t:0:5']); // 4
    const progress = await IngestProgress.open({ queue: Queue.open({ store }), job: 'j' });
    assert.equal(progress.get('s')?.ackedOffset, 20, 'the chunk in slot 1 is found');
    assert.equal(progress.get('t')?.ackedOffset, 5, 'commits after the gap are scanned too');
    const hold = await new LogQueue({ store, root: ROOT }).readCursor('ingest.j');
    assert.equal(hold?.value.next.sequence, 2, 'the next open scans from the missing slot again');
  });
});

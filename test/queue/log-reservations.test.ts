/**
 * Reservations (docs/log-layout.md §7.2): on a shared log, a producer's
 * commit reserves sequences and its later appends each create one slot. What
 * must hold: every append is found once, at the sequence and location it
 * resolved with, in each producer's order; a slot a reader voided, a lost
 * response, an expired reservation and a stale create never lose or repeat
 * a batch.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryStore, OutcomeUnknownError, type ObjectStore } from '../../src/index.ts';
import { LogQueue, TRUSTED_VIEW_MS, type AppendBatch } from '../../src/internal.ts';
import { encodeBatch } from '../../src/format/batch.ts';
import {
  commitEnd,
  decodeCommit,
  encodeCommit,
  slotStart,
  type Commit,
} from '../../src/format/log-commit.ts';
import { isVoid, slotKey } from '../../src/format/log-slot.ts';
import { readSlot, SLOT_WRITE_MS, voidSlot } from '../../src/queue/log-slots.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { OTHERS_RESERVING_MS } from '../../src/queue/log-riders.ts';
import { advanceUntil, labelledBatch, rideOnA, track } from '../support/riders.ts';

async function inline(text: string): Promise<AppendBatch> {
  const bytes = await encodeBatch([Buffer.from(text)]);
  return {
    inline: bytes,
    sizeBytes: bytes.byteLength,
    records: 1,
    metadata: [],
    extension: new Uint8Array(0),
  };
}

function log(store: ObjectStore, writer: string, clock: ManualClock): LogQueue {
  return new LogQueue({ store, root: 'q', writer, clock });
}

/** Every batch of the log in order, through commits and their slots: sequence → location. */
async function readAll(
  q: LogQueue,
  store: ObjectStore,
  open = false,
): Promise<{ batches: Map<number, string>; commits: Commit[]; voids: number }> {
  const batches = new Map<number, string>();
  const commits: Commit[] = [];
  let voids = 0;
  let expected = 0;
  for (let n = 0; ; n++) {
    const c = await q.readCommit(n);
    if (!c) break;
    assert.equal(c.firstSequence, expected, `commit ${n} starts where the one before ends`);
    commits.push(c);
    for (const b of c.batches) batches.set(b.entry.sequence, b.entry.location);
    let s = slotStart(c);
    while (s < commitEnd(c)) {
      const slot = await readSlot(store, 'q', c, s);
      // A reservation still held may have slots not written yet: the log ends there for now.
      if (!slot && open) return { batches, commits, voids };
      assert.ok(slot, `slot ${s} of commit ${n} is written or voided`);
      if (isVoid(slot)) {
        voids++;
        break;
      }
      for (const b of slot.batches) batches.set(b.entry.sequence, b.entry.location);
      s += slot.batches.length;
    }
    expected = commitEnd(c);
  }
  return { batches, commits, voids };
}

/** Two producers on one log, `b` having lost a race to `a`: `b` now sees the log as shared. */
async function sharedPair(
  store: ObjectStore,
  clock: ManualClock,
): Promise<{ a: LogQueue; b: LogQueue }> {
  const a = log(store, 'a', clock);
  const b = log(store, 'b', clock);
  await b.append([await inline('b-first')]);
  await a.append([await inline('a-first')]);
  // b's view is its own commit 0: its create of 1 loses to a's, and it tries 2.
  await b.append([await inline('b-second')]);
  return { a, b };
}

describe('log reservations', () => {
  test('a producer on a shared log reserves sequences and writes its appends to slots', async () => {
    const store = new MemoryStore();
    const clock = new ManualClock();
    const { a, b } = await sharedPair(store, clock);
    const results: { sequence: number; location: string }[] = [];
    for (let i = 0; i < 20; i++) results.push(...(await b.append([await inline(`b${i}`)])));
    const inSlots = results.filter((r) => /\/slots\/[0-9]{20}#0$/.test(r.location));
    assert.ok(inSlots.length >= 15, `most appends went to slots (${inSlots.length} of 20)`);
    for (let i = 1; i < results.length; i++) {
      assert.ok(results[i]!.sequence > results[i - 1]!.sequence, 'each producer keeps its order');
    }
    // The other producer appends after the reservation: above its end.
    const [after] = await a.append([await inline('a-after')]);
    await Promise.all([a.settle(), b.settle()]);
    const all = await readAll(b, store);
    for (const r of [...results, after!]) assert.equal(all.batches.get(r.sequence), r.location);
    assert.ok(all.commits.some((c) => (c.reserved ?? 0) > 0 && c.writer === 'b'));
    assert.ok(after!.sequence > Math.max(...results.map((r) => r.sequence)));
  });

  test('the next reservation is made ahead, in a commit of no batches: appends go on in slots, in order', async () => {
    const store = new MemoryStore();
    const clock = new ManualClock();
    const { b } = await sharedPair(store, clock);
    const results: { sequence: number; location: string }[] = [];
    for (let i = 0; i < 600; i++) results.push(...(await b.append([await inline(`b${i}`)])));
    await b.settle();
    const all = await readAll(b, store);
    const ahead = all.commits.filter((c) => c.batches.length === 0 && (c.reserved ?? 0) > 0);
    assert.ok(ahead.length >= 1, 'a reservation was made ahead');
    const inCommits = results.filter((r) => r.location.includes('/log/'));
    assert.ok(inCommits.length <= 2, `appends waited for no commit (${inCommits.length} did)`);
    for (let i = 1; i < results.length; i++) {
      assert.ok(results[i]!.sequence > results[i - 1]!.sequence, 'in order');
    }
    for (const r of results) assert.equal(all.batches.get(r.sequence), r.location);
  });

  test('a slot a reader voided sends the append into a commit, after the void', async () => {
    const store = new MemoryStore();
    const clock = new ManualClock();
    const { b } = await sharedPair(store, clock);
    const first = await b.append([await inline('x')]);
    const second = await b.append([await inline('y')]);
    assert.match(second[0]!.location, /\/slots\//);
    const all = await readAll(b, store, true);
    const reserving = all.commits.find((c) => (c.reserved ?? 0) > 0)!;
    const voided = await voidSlot(store, 'q', reserving, second[0]!.sequence + 1, 'reader');
    assert.ok(isVoid(voided));
    const third = await b.append([await inline('z')]);
    assert.match(third[0]!.location, /\/log\/[0-9]{20}#0$/, 'the append went into a commit');
    assert.ok(third[0]!.sequence >= commitEnd(reserving));
    await b.settle();
    const again = await readAll(b, store);
    for (const r of [...first, ...second, ...third]) {
      assert.equal(again.batches.get(r.sequence), r.location);
    }
  });

  test('a lost response on a slot create resolves once, at that slot', async () => {
    const faults = new FaultInjectingStore(new MemoryStore());
    const clock = new ManualClock();
    const { b } = await sharedPair(faults, clock);
    await b.append([await inline('x')]);
    const before = await b.append([await inline('y')]);
    assert.match(before[0]!.location, /\/slots\//);
    faults.applyThenFailNext('put');
    const lost = await b.append([await inline('lost-response')]);
    assert.equal(lost[0]!.sequence, before[0]!.sequence + 1);
    const next = await b.append([await inline('next')]);
    assert.equal(next[0]!.sequence, lost[0]!.sequence + 1);
    await b.settle();
    const all = await readAll(b, faults);
    assert.equal(all.batches.get(lost[0]!.sequence), lost[0]!.location);
    const locations = [...all.batches.values()];
    assert.equal(new Set(locations).size, locations.length, 'no batch twice');
  });

  test('a reservation older than SLOT_WRITE_MS is closed with a void; the append goes into a commit', async () => {
    const store = new MemoryStore();
    const clock = new ManualClock();
    const { b } = await sharedPair(store, clock);
    await b.append([await inline('x')]);
    const inSlot = await b.append([await inline('y')]);
    assert.match(inSlot[0]!.location, /\/slots\//);
    await clock.advance(SLOT_WRITE_MS);
    const late = await b.append([await inline('late')]);
    assert.match(late[0]!.location, /\/log\//);
    const all = await readAll(b, store);
    assert.equal(all.voids, 1, 'the unused rest was voided by its producer');
    const voided = await readSlot(
      store,
      'q',
      all.commits.find((c) => (c.reserved ?? 0) > 0)!,
      inSlot[0]!.sequence + 1,
    );
    assert.equal(voided?.writer, 'b');
    assert.equal(all.batches.get(late[0]!.sequence), late[0]!.location);
  });

  test('an idle producer closes its reservation, and settle() closes it at once', async () => {
    const store = new MemoryStore();
    const clock = new ManualClock();
    const { b } = await sharedPair(store, clock);
    await b.append([await inline('x')]);
    const inSlot = await b.append([await inline('y')]);
    assert.match(inSlot[0]!.location, /\/slots\//);
    await clock.advance(SLOT_WRITE_MS / 2);
    await b.settle();
    const all = await readAll(b, store);
    assert.equal(all.voids, 1);
    assert.ok(await store.head(slotKey('q', inSlot[0]!.sequence + 1)));
  });

  test('a slot create that lands after its reservation was collected fails as unknown and is deleted', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const clock = new ManualClock();
    const { b } = await sharedPair(store, clock);
    await b.append([await inline('x')]);
    const inSlot = await b.append([await inline('y')]);
    const reserving = (await readAll(b, store, true)).commits.find((c) => (c.reserved ?? 0) > 0)!;
    const next = slotKey('q', inSlot[0]!.sequence + 1);
    const remove = store.before('put', async (call) => {
      if (call.key !== next) return;
      // The create is held up in flight while a collection passes the reservation.
      await clock.advance(TRUSTED_VIEW_MS);
      await b.raiseBoundary({
        firstCommit: reserving.commit + 1,
        firstSequence: commitEnd(reserving),
        expiredBelow: 0,
      });
    });
    await assert.rejects(b.append([await inline('stale')]), OutcomeUnknownError);
    remove();
    await assert.rejects(store.head(next), /not found|NotFound|missing/i);
  });

  test('a producer that read another producer reserving loses a race without a rider: it commits itself, and writes no marker', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const clock = new ManualClock();
    const { a, b } = await sharedPair(store, clock);
    // b reserves (its rate asks for it) and writes a slot.
    await b.append([await inline('b-x')]);
    assert.match((await b.append([await inline('b-y')]))[0]!.location, /\/slots\//);
    const reserving = (await readAll(b, store, true)).commits.find((c) => (c.reserved ?? 0) > 0)!;
    assert.equal(reserving.writer, 'b');

    const c = log(store, 'C', clock);
    await c.append([labelledBatch('C', 'c0')]);
    // C has read b's reserving commit as the log's (as its catch-up or a lost race reads it).
    const riders = (
      c as unknown as { riders: { note(x: Commit): void; othersReserving(): boolean } }
    ).riders;
    riders.note(reserving);
    assert.ok(riders.othersReserving());
    // C's next create loses to a's commit at the same number.
    const requests: string[] = [];
    const offAll = store.before('put', (call) => void requests.push(`put ${call.key}`));
    const offHead = store.before('head', (call) => void requests.push(`head ${call.key}`));
    let raced = false;
    const offRace = store.before('put', async (call) => {
      if (raced || !call.key.startsWith('q/log/') || !call.body) return;
      const n = Number(call.key.slice('q/log/'.length));
      if (decodeCommit(call.body, call.key, n).writer !== 'C') return;
      raced = true;
      await a.append([await inline('a-wins')]);
    });
    const [landed] = await c.append([labelledBatch('C', 'c1')]);
    offRace();
    assert.ok(raced, "C's create was raced");
    assert.match(landed!.location, /^q\/log\//, 'C committed its batch itself');
    assert.deepEqual(
      requests.filter((r) => r.includes('/riders/')),
      [],
      'no rider was written: producers that reserve commit about twice a second',
    );
    // C's next append reserves (no idle time between appends): the marker is known to exist.
    const [next] = await c.append([labelledBatch('C', 'c2')]);
    offAll();
    offHead();
    assert.deepEqual(
      requests.filter((r) => r.endsWith('q/reserving')),
      [],
      "a reserving commit read as the log's means its marker exists",
    );
    await c.append([labelledBatch('C', 'c3')]);
    await Promise.all([a.settle(), b.settle(), c.settle()]);
    const all = await readAll(c, store);
    assert.equal(all.batches.get(landed!.sequence), landed!.location);
    assert.equal(all.batches.get(next!.sequence), next!.location);
    assert.ok(
      all.commits.some((x) => x.writer === 'C' && (x.reserved ?? 0) > 0),
      'C reserved',
    );
    // Past OTHERS_RESERVING_MS without another reserving commit read, riding is allowed again.
    await clock.advance(OTHERS_RESERVING_MS);
    assert.equal(riders.othersReserving(), false);
  });

  for (const losses of [1, 3]) {
    test(`a producer at speed that loses ${losses === 1 ? 'a race' : `${losses} races in a row`} on a log it took for its own reserves, and writes no rider`, async () => {
      const store = new FaultInjectingStore(new MemoryStore());
      const clock = new ManualClock();
      const a = log(store, 'A', clock);
      const c = log(store, 'C', clock);
      // C appends back to back (no idle time): its rate asks for a reservation, but it has
      // seen no other producer, so it commits each append.
      await c.append([labelledBatch('C', 'c0')]);
      await c.append([labelledBatch('C', 'c1')]);
      const puts: string[] = [];
      const offPuts = store.before('put', (call) => void puts.push(call.key));
      // A takes the number of each of C's next `losses` creates just before it lands.
      let raced = 0;
      const offRace = store.before('put', async (call) => {
        const n = /^q\/log\/([0-9]{20})$/.exec(call.key);
        if (raced >= losses || !n || !call.body) return;
        if (decodeCommit(call.body, call.key, Number(n[1])).writer !== 'C') return;
        raced++;
        await a.append([labelledBatch('A', `a${raced}`)]);
      });
      const append = track(c.append([labelledBatch('C', 'c2')]));
      // It settles within a few ms of manual time (the jitter after a second loss), far
      // below any stall bound: it never waits for a committer to carry it.
      await advanceUntil(clock, append.settled, 20);
      offRace();
      assert.equal(raced, losses, "C's creates were raced");
      assert.deepEqual(
        puts.filter((k) => k.startsWith('q/riders/')),
        [],
        'C wrote no rider: it steps on to the next number, reserving',
      );
      const [landed] = await append.promise;
      const at = 2 + losses;
      assert.equal(landed!.location.slice(0, 26), `q/log/${String(at).padStart(20, '0')}`);
      const commit = (await c.readCommit(at))!;
      assert.equal(commit.writer, 'C');
      assert.ok((commit.reserved ?? 0) > 0, 'the commit reserves sequences');
      assert.ok(
        puts.indexOf('q/reserving') < puts.indexOf(`q/log/${String(at).padStart(20, '0')}`),
      );
      // Its next append goes into the reservation.
      const [next] = await c.append([labelledBatch('C', 'c3')]);
      offPuts();
      assert.match(next!.location, /\/slots\//);
      await Promise.all([a.settle(), c.settle()]);
      const all = await readAll(c, store);
      assert.equal(all.batches.get(landed!.sequence), landed!.location);
      assert.equal(all.batches.get(next!.sequence), next!.location);
    });
  }

  test("a rider's owner that reads another producer's reserving commit commits its rider at once", async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const clock = new ManualClock();
    const a = log(store, 'A', clock);
    const b = log(store, 'B', clock);
    const ride = await rideOnA(store, a, b);
    // Z reserves at commit 2, the first B reads after its rider's `after` (1).
    const one = (await a.readCommit(1))!;
    const reserving: Commit = {
      commit: 2,
      firstSequence: commitEnd(one),
      appendTimeMs: one.appendTimeMs,
      totalBytes: one.totalBytes,
      totalRecords: one.totalRecords,
      writer: 'Z',
      batches: [],
      reserved: 4,
    };
    await store.put('q/reserving', new Uint8Array(0), { mode: 'create' });
    await store.put('q/log/00000000000000000002', encodeCommit(reserving), { mode: 'create' });
    await voidSlot(store, 'q', reserving, reserving.firstSequence, 'Z');
    // B waits for no stall bound, only for its next read: Z commits only to renew.
    const stallMs = (b as unknown as { riders: { stallMs: number } }).riders.stallMs;
    const from = clock.now();
    await advanceUntil(clock, ride.settled, stallMs);
    assert.ok(clock.now() - from < stallMs, `B committed its rider before a stall (${stallMs} ms)`);
    const [placed] = await ride.promise;
    assert.match(placed!.location, /^q\/log\/00000000000000000003/);
    assert.equal((await a.readCommit(3))!.writer, 'B');
    await Promise.all([a.settle(), b.settle()]);
  });

  test('a reservation made at a slower rate than the next appends ask for is followed at once by one made ahead', async () => {
    const store = new MemoryStore();
    const clock = new ManualClock();
    const a = log(store, 'a', clock);
    const b = log(store, 'b', clock);
    await b.append([await inline('b-first')]);
    await a.append([await inline('a-first')]);
    // After a pause of 150 ms, b loses a race (to a's commit 1) and reserves for that rate.
    await clock.advance(150);
    await b.append([await inline('b-second')]);
    const first = (await b.readCommit(2))!;
    assert.equal(first.writer, 'b');
    const size = first.reserved ?? 0;
    assert.ok(size >= 4 && size <= 10, `reserved about a second at 150 ms a time (${size})`);
    // Back to back now: the first slot's append already makes the next reservation.
    assert.match((await b.append([await inline('b-x')]))[0]!.location, /\/slots\//);
    await (b as unknown as { reservingAhead?: Promise<void> }).reservingAhead;
    const ahead = (await b.readCommit(3))!;
    assert.ok(ahead, 'a reservation was made ahead after one slot of the first');
    assert.equal(ahead.writer, 'b');
    assert.deepEqual(ahead.batches, []);
    assert.ok(
      (ahead.reserved ?? 0) >= 2 * size,
      `it reserves for the new rate (${ahead.reserved})`,
    );
    const results: { sequence: number; location: string }[] = [];
    for (let i = 0; i < 40; i++) results.push(...(await b.append([await inline(`b${i}`)])));
    assert.ok(
      results.every((r) => r.location.includes('/slots/')),
      'every append went into a slot',
    );
    await b.settle();
    const all = await readAll(b, store);
    for (const r of results) assert.equal(all.batches.get(r.sequence), r.location);
  });
});

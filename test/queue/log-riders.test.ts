/**
 * Riders (docs/log-layout.md §7.2): producers that lost a race publish their
 * groups, the committing producer carries them, owners follow the log and
 * commit on a stall. Every group lands in exactly one commit, in each
 * producer's order, whatever the interleaving, lost response or collection.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  GarbageCollector,
  InMemoryMetrics,
  MemoryStore,
  OutcomeUnknownError,
  type ObjectStore,
} from '../../src/index.ts';
import { LogQueue } from '../../src/internal.ts';
import { decodeCommit } from '../../src/format/log-commit.ts';
import { decodeRider, encodeRider, riderKey } from '../../src/format/log-rider.ts';
import { decodeTrailer, withGroup } from '../../src/format/trailer.ts';
import { UlidGenerator } from '../../src/format/ulid.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { RIDER_LIST_IDLE_MS, RIDER_SCAN_MS } from '../../src/queue/log-riders.ts';
import {
  advanceUntil,
  labelledBatch as batch,
  readLabelledLog as readLog,
  rideOnA,
  track,
} from '../support/riders.ts';

const enc = new TextEncoder();

function queue(store: ObjectStore, writer: string, clock?: ManualClock, metrics?: InMemoryMetrics) {
  return new LogQueue({
    reserveSlots: false,
    store,
    root: 'q',
    writer,
    ...(clock ? { clock } : {}),
    ...(metrics ? { metrics } : {}),
  });
}

/**
 * A (committer) has made commit 0; B builds commit 1 too and loses it to A's
 * second append (held by a hook), so B is in rider mode with a rider whose
 * `after` is 1, waiting on the manual clock. `committerScans`: A then lists
 * riders beside its creates, as a committer does once it saw another
 * producer (by default).
 */
async function riderOfB(store: FaultInjectingStore, clock: ManualClock, committerScans = true) {
  const metricsA = new InMemoryMetrics();
  const metricsB = new InMemoryMetrics();
  const a = queue(store, 'A', clock, metricsA);
  const b = queue(store, 'B', clock, metricsB);
  // B loses commit 1, writes its rider, then waits for commit 2 (on the manual clock).
  const ride = await rideOnA(store, a, b);
  if (committerScans) sawOthers(a);
  return { a, b, ride, metricsA, metricsB };
}

/** Makes `q` list riders beside its creates, as a committer does after seeing another producer. */
function sawOthers(q: LogQueue): void {
  (q as unknown as { riders: { sawOthers(): void } }).riders.sawOthers();
}

describe('log riders', () => {
  test('a producer that lost a race rides on the committer: its group lands once, after the committer saw it', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const { a, ride, metricsA } = await riderOfB(store, clock);
    const riders = await keys(store, 'q/riders/');
    assert.equal(riders.length, 1);
    const rider = decodeRider((await store.get(riders[0] as string)).body, riders[0] as string);
    assert.equal(rider.after, 1, 'after: the commit B lost to');
    // A's next create scans riders/; the one after carries B's group.
    await a.append([batch('A', 'a2')]);
    await a.settle();
    await a.append([batch('A', 'a3')]);
    assert.equal(metricsA.counter('buffer.riders_included'), 1);
    await advanceUntil(clock, ride.settled);
    const result = await ride.promise;
    const log = await readLog(a);
    assert.deepEqual(
      log.map((x) => x.label),
      ['a0', 'a1', 'a2', 'a3', 'b0'],
    );
    assert.deepEqual(result, [{ sequence: 4, location: 'q/log/00000000000000000003#1' }]);
    const c3 = await a.readCommit(3);
    assert.equal(decodeTrailer(c3!.batches[1]!.entry.extension)?.group, rider.group);
    assert.equal(
      decodeTrailer(c3!.batches[0]!.entry.extension)?.group,
      undefined,
      'own batches stay version 1',
    );
    await a.settle();
    assert.deepEqual(
      await keys(store, 'q/riders/'),
      [],
      'the committer deleted the rider it carried',
    );
  });

  for (const first of ['committer', 'owner'] as const) {
    test(`an owner that stalls builds the same number as a committer carrying its rider (${first} first): the group lands once`, async () => {
      const clock = new ManualClock();
      const store = new FaultInjectingStore(new MemoryStore());
      const { a, ride, metricsB } = await riderOfB(store, clock);
      // A reads the rider while creating commit 2 (which cannot carry it yet).
      await a.append([batch('A', 'a2')]);
      await a.settle();
      // B reads commit 2, then waits for 3. Both now build commit 3 with B's group.
      const key3 = 'q/log/00000000000000000003';
      const waiting: { writer: string; go: () => void }[] = [];
      let released = false;
      const off = store.before('put', async (call) => {
        if (call.key !== key3 || released) return;
        const writer = decodeCommit(call.body!, key3, 3).writer;
        await new Promise<void>((go) => {
          waiting.push({ writer, go });
          if (waiting.length === 2) {
            released = true;
            const order = first === 'committer' ? ['A', 'B'] : ['B', 'A'];
            const w0 = waiting.find((w) => w.writer === order[0])!;
            const w1 = waiting.find((w) => w.writer === order[1])!;
            w0.go();
            // The second goes once the first is stored.
            const offAfter = store.after('put', (done) => {
              if (done.key === key3) {
                offAfter();
                w1.go();
              }
            });
          }
        });
      });
      const committer = track(a.append([batch('A', 'a3')]));
      await advanceUntil(clock, () => waiting.length === 2 || released, 200);
      await advanceUntil(
        clock,
        () => ride.settled() && (committer.settled() || first === 'owner'),
        500,
      );
      off();
      assert.ok(
        metricsB.counter('buffer.rider_stalls') >= 1,
        'B stalled and built commit 3 itself',
      );
      const [own] = await ride.promise;
      if (first === 'owner') {
        // A lost commit 3 and rides now; nobody else commits: it stalls and commits itself.
        await advanceUntil(clock, committer.settled, 500);
      }
      await committer.promise;
      const log = await readLog(a);
      assert.deepEqual(log.map((x) => x.label).sort(), ['a0', 'a1', 'a2', 'a3', 'b0']);
      assert.equal(log.filter((x) => x.label === 'b0').length, 1, "B's group once");
      assert.equal(log.find((x) => x.label === 'b0')!.sequence, own!.sequence);
    });
  }

  test('a lost response of the rider PUT: the owner follows as if written, and its group lands once', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const off = store.before('put', (call) => {
      if (call.key.startsWith('q/riders/')) store.applyThenFailNext('put');
    });
    const { a, ride } = await riderOfB(store, clock);
    off();
    await a.append([batch('A', 'a2')]);
    await a.settle();
    await a.append([batch('A', 'a3')]);
    await advanceUntil(clock, ride.settled);
    await ride.promise;
    const labels = (await readLog(a)).map((x) => x.label);
    assert.deepEqual(labels, ['a0', 'a1', 'a2', 'a3', 'b0']);
  });

  test('a lost response of a commit carrying a rider: settled by reading back, each group once', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const { a, ride, metricsA } = await riderOfB(store, clock);
    await a.append([batch('A', 'a2')]);
    await a.settle();
    const off = store.before('put', (call) => {
      if (call.key === 'q/log/00000000000000000003') store.applyThenFailNext('put');
    });
    await a.append([batch('A', 'a3')]);
    off();
    assert.equal(metricsA.counter('buffer.riders_included'), 1);
    await advanceUntil(clock, ride.settled);
    await ride.promise;
    assert.deepEqual(
      (await readLog(a)).map((x) => x.label),
      ['a0', 'a1', 'a2', 'a3', 'b0'],
    );
  });

  test('an owner whose rider was deleted (a collection) commits its group itself', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const { a, ride, metricsB } = await riderOfB(store, clock);
    for (const k of await keys(store, 'q/riders/')) await store.delete(k);
    await a.append([batch('A', 'a2')]);
    await a.settle();
    await a.append([batch('A', 'a3')]);
    await advanceUntil(clock, ride.settled);
    const [own] = await ride.promise;
    assert.equal(metricsB.counter('buffer.rider_stalls'), 1);
    const log = await readLog(a);
    assert.deepEqual(
      log.map((x) => x.label),
      ['a0', 'a1', 'a2', 'a3', 'b0'],
    );
    assert.equal(own!.location, 'q/log/00000000000000000004#0');
  });

  test('a rider reaching below the boundary is not carried, and its owner (held up past the trusted window) fails with OutcomeUnknownError', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const { a, ride } = await riderOfB(store, clock);
    // Hold the owner's next read of commit 2, as a paused process would.
    let held: (() => void) | undefined;
    let holding = false;
    const off = store.before('get', async (call) => {
      if (holding || call.key !== 'q/log/00000000000000000002') return;
      holding = true;
      await new Promise<void>((r) => (held = r));
    });
    await advanceUntil(clock, () => held !== undefined, 100);
    // Meanwhile: 11 s pass, commits 2-5 by a writer whose batches cannot ride (it never
    // scans, so it carries no rider), and a collection of 2-4.
    await clock.advance(11_000);
    const other = queue(store, 'C', clock);
    for (let i = 2; i <= 5; i++) {
      await other.append([{ ...batch('C', `c${i}`), extension: new Uint8Array(0) }]);
    }
    await other.raiseBoundary({ firstCommit: 5, firstSequence: 5, expiredBelow: 0 });
    for (let n = 2; n <= 4; n++) await store.delete(a.commitKey(n));
    // A committer that reads the rider finds (after, n] partly collected: not eligible.
    await a.discoverHead();
    await a.append([batch('A', 'a6')]);
    await a.settle();
    await a.append([batch('A', 'a7')]);
    assert.ok(!(await readLog(a)).some((x) => x.label === 'b0'));
    held!();
    off();
    await advanceUntil(clock, ride.settled);
    await assert.rejects(ride.promise, OutcomeUnknownError);
    assert.ok(!(await readLog(a)).some((x) => x.label === 'b0'));
    assert.equal(await a.readCommit(2), undefined, 'nothing re-created below the boundary');
  });

  test("three producers racing flat out: every group exactly once, in each producer's order, and results match the log", async () => {
    const store = new MemoryStore();
    const writers = ['P', 'Q', 'R'];
    const metrics = new InMemoryMetrics();
    const queues = writers.map((w) => queue(store, w, undefined, metrics));
    const results = new Map<string, { sequence: number; location: string }>();
    await Promise.all(
      queues.map(async (q, i) => {
        const w = writers[i] as string;
        for (let k = 0; k < 40; k++) {
          const label = `${w}${k}`;
          const [r] = await q.append([batch(w, label)]);
          results.set(label, r!);
        }
      }),
    );
    await Promise.all(queues.map((q) => q.settle()));
    const log = await readLog(queues[0]!);
    assert.equal(log.length, 120);
    assert.equal(new Set(log.map((x) => x.label)).size, 120, 'no group twice');
    for (const w of writers) {
      const mine = log.filter((x) => x.label.startsWith(w)).map((x) => Number(x.label.slice(1)));
      assert.deepEqual(
        mine,
        [...mine].sort((x, y) => x - y),
        `${w} in order`,
      );
    }
    for (const x of log)
      assert.deepEqual(results.get(x.label), { sequence: x.sequence, location: x.location });
    assert.ok(metrics.counter('buffer.riders_written') > 0, 'races sent producers to rider mode');
  });

  test('the collector deletes riders a grace period old and keeps younger ones', async () => {
    const clock = new ManualClock(1_700_000_000_000);
    const store = new MemoryStore(undefined, { clock });
    const q = new LogQueue({ reserveSlots: false, store, root: 'ingest', writer: 'A', clock });
    await q.ensureCreated();
    await q.append([batch('A', 'x')]);
    const ulids = new UlidGenerator();
    const rider = (group: string) =>
      encodeRider({
        writer: 'B',
        after: 0,
        group,
        batches: [
          {
            entry: {
              sequence: 0,
              location: '',
              metadata: [],
              extension: withGroup(batch('B', 'y').extension, group)!,
            },
            records: 1,
            inline: enc.encode('batch:y'),
          },
        ],
      });
    const old = ulids.next(clock.now());
    await store.put(riderKey('ingest', old), rider(old), { mode: 'create' });
    await clock.advance(120_000);
    const young = ulids.next(clock.now());
    await store.put(riderKey('ingest', young), rider(young), { mode: 'create' });
    const gc = new GarbageCollector({ store, clock, gcGracePeriodMs: 60_000 });
    const r = await gc.run();
    assert.ok(r.deleted.includes(riderKey('ingest', old)));
    assert.deepEqual(await keys(store, 'ingest/riders/'), [riderKey('ingest', young)]);
    assert.ok(await q.readCommit(0), 'commits untouched');
  });
  test('a lone producer lists riders beside its first create, then once a second: about one request per append', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const a = queue(store, 'A', clock);
    const calls = { put: 0, list: 0 };
    store.after('put', () => void calls.put++);
    store.after('list', () => void calls.list++);
    await a.append([batch('A', 'a0')]);
    await a.settle();
    const firstLists = calls.list;
    assert.ok(firstLists >= 1, 'the first create lists riders/ (others may be there)');
    calls.put = 0;
    for (let k = 1; k <= 20; k++) await a.append([batch('A', `a${k}`)]);
    await a.settle();
    assert.equal(
      calls.list,
      firstLists,
      'no listing within a second while no other producer was seen',
    );
    assert.equal(calls.put, 20, 'one PUT per append (head hints aside)');
    await clock.advance(RIDER_LIST_IDLE_MS);
    await a.append([batch('A', 'a21')]);
    await a.settle();
    await a.append([batch('A', 'a22')]);
    await a.settle();
    assert.ok(calls.list > firstLists, 'a second later, a create lists again');
    assert.ok(
      calls.list <= firstLists + 2,
      'once (twice while the create is in flight), not per create',
    );
  });

  test('an owner whose stall creates keep losing to a committer appending back to back is carried within a listing interval', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const metricsA = new InMemoryMetrics();
    const deadlineMs = 10_000;
    const a = new LogQueue({
      reserveSlots: false,
      store,
      root: 'q',
      writer: 'A',
      clock,
      metrics: metricsA,
      deadlineMs,
    });
    const b = new LogQueue({
      reserveSlots: false,
      store,
      root: 'q',
      writer: 'B',
      clock,
      deadlineMs,
    });
    await a.append([batch('A', 'a0')]);
    await a.settle();
    // A has been alone for longer than the contended window: it lists at most once a second.
    await clock.advance(RIDER_SCAN_MS + 1_000);
    await a.append([batch('A', 'a-warm')]);
    await a.settle();
    await b.discoverHead();
    // A appends back to back: whenever B creates a commit, A's create of that number
    // goes first (B's direct append and every stall commit of B's lose).
    let k = 1;
    const off = store.before('put', async (call) => {
      if (!call.key.startsWith('q/log/') || !call.body) return;
      const n = Number(call.key.slice(-20));
      if (decodeCommit(call.body, call.key, n).writer !== 'B') return;
      await a.append([batch('A', `a${k++}`)]);
    });
    const started = clock.now();
    const ride = track(b.append([batch('B', 'b0')]));
    for (let i = 0; i < deadlineMs && !ride.settled(); i++) await clock.advance(1);
    off();
    const [placed] = await ride.promise;
    assert.ok(
      clock.now() - started <= RIDER_LIST_IDLE_MS + 200,
      `carried after ${clock.now() - started} ms`,
    );
    assert.ok(metricsA.counter('buffer.riders_included') >= 1, "A carried B's rider");
    const labels = (await readLog(a)).map((x) => x.label);
    assert.equal(labels.filter((l) => l === 'b0').length, 1);
    assert.equal(labels.indexOf('b0'), placed!.sequence);
  });

  test("a rider published to a committer that saw no other producer lands by its owner's stall; the producers then carry each other's riders", async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const { a, b, ride } = await riderOfB(store, clock, false);
    // A lists nothing: B's group waits for B's stall bound, then B commits it itself.
    await a.append([batch('A', 'a2')]);
    await a.settle();
    await advanceUntil(clock, ride.settled, 500);
    const [placed] = await ride.promise;
    const writerOf = async (sequence: number): Promise<string> => {
      const { value: bound } = await a.readBoundary();
      for (let n = bound.firstCommit; ; n++) {
        const c = await a.readCommit(n);
        assert.ok(c, `no commit holds sequence ${sequence}`);
        if (sequence < c.firstSequence + c.batches.length) return c.writer;
      }
    };
    assert.equal(await writerOf(placed!.sequence), 'B', "B's stall commit holds b0");
    // A's next creates lose to B's commits (up to twice): A rides now (its commits came
    // back to back, or it lost twice), and B (which lost a race before) lists riders
    // beside its creates and carries A's group.
    let losses = 0;
    let insideB = false;
    const offRace = store.before('put', async (call) => {
      if (insideB || losses >= 2 || !call.key.startsWith('q/log/') || !call.body) return;
      losses++;
      insideB = true;
      try {
        await b.append([batch('B', `b-race${losses}`)]);
      } finally {
        insideB = false;
      }
    });
    const next = track(a.append([batch('A', 'a3')]));
    for (let i = 0; i < 200 && !next.settled(); i++) {
      if ((await keys(store, 'q/riders/')).length > 0) break;
      await new Promise((r) => setImmediate(r));
    }
    offRace();
    assert.ok(losses >= 1, "A's creates lost");
    assert.equal((await keys(store, 'q/riders/')).length, 1, 'A published a3 as a rider');
    await b.append([batch('B', 'b1')]);
    await b.settle();
    await b.append([batch('B', 'b2')]);
    await advanceUntil(clock, next.settled, 500);
    const [a3] = await next.promise;
    assert.equal(await writerOf(a3!.sequence), 'B', "B carried A's rider");
    const labels = (await readLog(a)).map((x) => x.label);
    const raced = Array.from({ length: losses }, (_, i) => `b-race${i + 1}`);
    for (const l of ['a0', 'a1', 'a2', 'b0', ...raced, 'a3', 'b1', 'b2']) {
      assert.equal(labels.filter((x) => x === l).length, 1, `${l} once in ${labels.join(',')}`);
    }
  });
});

async function keys(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const m of store.list(prefix)) out.push(m.key);
  return out;
}

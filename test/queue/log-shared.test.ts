/**
 * A log shared by producers that each append now and then (many vnodes, few
 * entries each; docs/log-layout.md §7.2): a producer whose view of the head
 * is old reads on before its create instead of losing it, a create lost on
 * an old view is no race, and one race lost while the log is quiet is raced
 * again at the next number rather than ridden. Riding stays for a producer
 * that loses twice in one append or while commits come back to back (the
 * riders tests). An owner reading ahead that is aborted leaves no unhandled
 * rejection, and random faults and aborts lose, duplicate or reorder nothing.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InMemoryMetrics, MemoryStore, OutcomeUnknownError } from '../../src/index.ts';
import { LogQueue } from '../../src/internal.ts';
import { FaultInjectingStore, ManualClock, mulberry32 } from '../../src/testing.ts';
import {
  advanceUntil,
  assertAppendsKept,
  labelledBatch as batch,
  readLabelledLog as readLog,
  rideOnA,
  track,
} from '../support/riders.ts';

const unhandled: unknown[] = [];
process.on('unhandledRejection', (e) => unhandled.push(e));

const COMMITS = 'q/log/';

function producer(store: FaultInjectingStore, writer: string, clock: ManualClock) {
  const metrics = new InMemoryMetrics();
  const q = new LogQueue({ store, root: 'q', writer, clock, metrics, reserveSlots: false });
  return {
    q,
    conflicts: () => metrics.counter('buffer.manifest_conflicts', { role: 'producer' }),
    riders: () => metrics.counter('buffer.riders_written'),
    stalls: () => metrics.counter('buffer.rider_stalls'),
  };
}

/** The store calls on commit keys, in order, as `get 3` / `put 4`. */
function commitCalls(store: FaultInjectingStore): string[] {
  const calls: string[] = [];
  for (const op of ['get', 'put'] as const) {
    store.before(op, (call) => {
      if (call.key.startsWith(COMMITS))
        calls.push(`${op} ${Number(call.key.slice(COMMITS.length))}`);
    });
  }
  return calls;
}

describe('log shared by producers that append now and then', () => {
  test('a create lost on an old view is no race: the producer reads on and appends directly, and later reads on before it creates', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const a = producer(store, 'A', clock);
    const b = producer(store, 'B', clock);
    // Each producer alone first, 100 ms between its commits: a quiet log, as each sees it.
    for (const label of ['a0', 'a1', 'a2']) {
      await a.q.append([batch('A', label)]); // commits 0, 1, 2
      await clock.advance(100);
    }
    for (const label of ['b0', 'b0x']) {
      await b.q.append([batch('B', label)]); // commits 3, 4
      await clock.advance(100);
    }
    // A's view (commit 2) is 300 ms old, and A has seen no other producer: it creates 3,
    // loses it, and reads on (4, then 5 and 6 at once) to create 5 rather than ride.
    await a.q.append([batch('A', 'a3')]);
    assert.equal(a.conflicts(), 1);
    assert.equal(a.riders(), 0, 'no rider for a create lost on an old view');
    await clock.advance(100);
    await b.q.append([batch('B', 'b1')]); // B loses 5 the same way, then creates 6
    assert.equal(b.conflicts(), 1);
    assert.equal(b.riders(), 0);
    await clock.advance(100);
    // A knows now that the log is shared: it reads 6 (B's), then 7 and 8 at once, finds 7
    // missing and creates it, and loses nothing.
    const calls = commitCalls(store);
    await a.q.append([batch('A', 'a4')]);
    assert.equal(a.conflicts(), 1, 'no create lost');
    assert.deepEqual(calls, ['get 6', 'get 7', 'get 8', 'put 7']);
    const log = await readLog(a.q);
    assert.deepEqual(
      log.map((x) => `${x.label}@${x.commit}`),
      ['a0@0', 'a1@1', 'a2@2', 'b0@3', 'b0x@4', 'a3@5', 'b1@6', 'a4@7'],
    );
    assert.equal(a.riders() + b.riders(), 0);
  });

  test('one race lost while the log is quiet is raced again at the next number; a second loss in the same append rides', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const a = producer(store, 'A', clock);
    const b = producer(store, 'B', clock);
    // A quiet shared log: commits 100 ms apart, each producer alone first (so that each
    // knows the log is quiet before it meets the other), then both, seen by each other.
    for (const label of ['a-alone0', 'a-alone1', 'a-alone2']) {
      await a.q.append([batch('A', label)]);
      await clock.advance(100);
    }
    for (const label of ['b-alone0', 'b-alone1']) {
      await b.q.append([batch('B', label)]);
      await clock.advance(100);
    }
    for (let k = 0; k < 4; k++) {
      await a.q.append([batch('A', `a${k}`)]);
      await clock.advance(100);
      await b.q.append([batch('B', `b${k}`)]);
      await clock.advance(100);
    }
    const ridersBefore = a.riders();
    // B commits while A's create is in flight, once: A loses a race on a fresh view.
    let races = 1;
    let raced = 0;
    let insideB = false;
    const off = store.before('put', async (call) => {
      if (insideB || races === 0 || !call.key.startsWith(COMMITS) || !call.body) return;
      races--;
      insideB = true;
      try {
        await b.q.append([batch('B', `b-race${++raced}`)]);
      } finally {
        insideB = false;
      }
    });
    const conflicts = a.conflicts();
    const [placed] = await a.q.append([batch('A', 'a-quiet')]);
    assert.equal(a.conflicts(), conflicts + 1, 'A lost one race');
    assert.equal(a.riders(), ridersBefore, 'and took the next number itself');
    const log = await readLog(a.q);
    const mine = log.find((x) => x.label === 'a-quiet');
    assert.equal(mine?.sequence, placed?.sequence);
    assert.equal(mine?.writer, 'A');
    assert.equal(log.at(-2)?.label, 'b-race1');

    // Twice in one append: A rides on B's commits (B then carries it or A stalls).
    await clock.advance(100);
    races = 2;
    const second = a.q.append([batch('A', 'a-twice')]);
    for (let i = 0; i < 200 && a.riders() === ridersBefore; i++) {
      await new Promise((r) => setImmediate(r));
    }
    off();
    assert.equal(a.riders(), ridersBefore + 1, 'A published a rider after its second loss');
    const settled = { done: false };
    void second.finally(() => (settled.done = true)).catch(() => undefined);
    for (let i = 0; i < 2_000 && !settled.done; i++) await clock.advance(1);
    await second;
    const labels = (await readLog(a.q)).map((x) => x.label);
    for (const l of ['a-quiet', 'b-race1', 'b-race2', 'b-race3', 'a-twice']) {
      assert.equal(labels.filter((x) => x === l).length, 1, `${l} once in ${labels.join(',')}`);
    }
  });
  test('a create lost on a stale view is no race (§7.2): the producer catches up and creates again directly, even before it measured the log', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const a = producer(store, 'A', clock);
    const b = producer(store, 'B', clock);
    await a.q.append([batch('A', 'a0')]); // commit 0; A's view: 0
    await clock.advance(300);
    await b.q.append([batch('B', 'b0')]); // commit 1
    await clock.advance(300);
    // A's view (commit 0) is 600 ms old: its create of 1 loses to a commit made 300 ms ago.
    const next = track(a.q.append([batch('A', 'a1')]));
    for (let i = 0; i < 200 && !next.settled() && a.riders() === 0; i++) {
      await new Promise((r) => setImmediate(r));
    }
    const rode = a.riders();
    await advanceUntil(clock, next.settled, 2_000);
    await next.promise;
    assert.equal(a.conflicts(), 1);
    assert.equal(rode, 0, 'A published a rider for a create lost on a 600 ms old view');
  });

  test('a producer that lost a race counts its log as shared (LOG_SHARED_MS, §7.2)', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const a = producer(store, 'A', clock);
    const b = producer(store, 'B', clock);
    // A alone, 100 ms between commits: it knows the log as quiet.
    for (const l of ['a0', 'a1', 'a2']) {
      await clock.advance(100);
      await a.q.append([batch('A', l)]);
    }
    await b.q.discoverHead();
    // A reads the head once after B's first commit: it has now seen another producer's
    // commits arrive 100 ms apart (its own landings tell it nothing about others).
    await b.q.append([batch('B', 'b-early')]);
    await clock.advance(100);
    await a.q.discoverHead();
    // B commits while A's create is in flight: A loses a race on a fresh view, once.
    let once = true;
    const off = store.before('put', async (call) => {
      if (!once || !call.key.startsWith('q/log/') || !call.body) return;
      once = false;
      await b.q.append([batch('B', 'b-race')]);
    });
    await a.q.append([batch('A', 'a-race')]);
    off();
    assert.equal(a.conflicts(), 1, 'A lost one race');
    assert.equal(a.riders(), 0, 'and raced again');
    const shared = (a.q as unknown as { riders: { shared(): boolean } }).riders.shared();
    // B commits now and then; A, which lost a create to B 200 ms before, should read on
    // before its next create on a stale view (the log is shared) rather than lose it.
    await clock.advance(100);
    const b1 = track(b.q.append([batch('B', 'b1')]));
    await advanceUntil(clock, b1.settled, 2_000);
    await b1.promise;
    await clock.advance(100);
    const calls: string[] = [];
    store.before(
      'put',
      (call) =>
        void (call.key.startsWith('q/log/') && calls.push(`put ${Number(call.key.slice(6))}`)),
    );
    store.before(
      'get',
      (call) =>
        void (call.key.startsWith('q/log/') && calls.push(`get ${Number(call.key.slice(6))}`)),
    );
    const nextA = track(a.q.append([batch('A', 'a-next')]));
    await advanceUntil(clock, nextA.settled, 2_000);
    await nextA.promise;
    assert.equal(
      a.conflicts(),
      1,
      `A lost a create on its stale view (shared() was ${shared}; ${calls.join(', ')})`,
    );
  });

  test('a producer that measured the log busy long ago and loses on an old view never rides far behind the head', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    // Every commit create takes 10 ms: commits back to back are 10 ms apart.
    store.before('put', async (call) => {
      if (call.key.startsWith(COMMITS)) await clock.advance(10);
    });
    const a = producer(store, 'A', clock);
    const b = producer(store, 'B', clock);
    const c = producer(store, 'C', clock);
    await a.q.append([batch('A', 'a0')]); // commit 0
    for (let i = 0; i < 510; i++) await b.q.append([batch('B', `b${String(i).padStart(4, '0')}`)]);
    // A's view is 5.1 s old: checked by a probe, which measures the log busy.
    await a.q.append([batch('A', 'a1')]);
    // C commits back to back for 3 s; A's view is then 3 s and 300 commits old.
    for (let i = 0; i < 300; i++) await c.q.append([batch('C', `c${String(i).padStart(4, '0')}`)]);
    const gets = store.stats.calls.get;
    const stalls = a.stalls();
    const [placed] = await a.q.append([batch('A', 'a2')]);
    const readsByA = store.stats.calls.get - gets;
    // A rider with `after` 300 below the head could never be carried (RIDER_RANGE_MAX):
    // its owner would read 257 commits, stall and race on. A catches up instead.
    assert.equal(a.stalls(), stalls, 'no rider stall');
    assert.ok(readsByA < 30, `A read ${readsByA} commits for one append`);
    const log = await readLog(a.q);
    assertAppendsKept(log, ['A', 'B', 'C'], new Map([['a2', placed!]]), new Set());
  });

  test('an owner reading ahead, aborted while its reads ahead are in flight: OutcomeUnknownError, no unhandled rejection', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const a = new LogQueue({ store, root: 'q', writer: 'A', clock, reserveSlots: false });
    const b = new LogQueue({ store, root: 'q', writer: 'B', clock, reserveSlots: false });
    // Commits 2.. are made (by A, plain: never carries) only once B rode; hold B's read of 6.
    const ac = new AbortController();
    let releaseRead: (() => void) | undefined;
    const gets: string[] = [];
    const offGet = store.before('get', async (call) => {
      if (!call.key.startsWith('q/log/')) return;
      gets.push(call.key.slice(-2));
      if (call.key !== 'q/log/00000000000000000006' || !call.signal) return;
      await new Promise<void>((r) => (releaseRead = r));
      throw new Error('read of 6 failed after the owner gave up');
    });
    const ride = await rideOnA(store, a, b, ac.signal);
    const plain = (l: string) => ({ ...batch('x', l), extension: new Uint8Array(0) });
    for (let i = 2; i <= 8; i++) await a.append([plain(`c${i}`)]);
    for (let i = 0; i < 200 && !releaseRead; i++) await clock.advance(1);
    assert.ok(releaseRead, `B read 6 ahead (gets ${gets.join(',')})`);
    ac.abort(new Error('caller gave up'));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    releaseRead();
    await advanceUntil(clock, ride.settled, 200);
    await assert.rejects(ride.promise, OutcomeUnknownError);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    offGet();
    assert.deepEqual(unhandled, []);
  });
});

describe('log shared by producers under faults', () => {
  for (const [seed, flatOut] of [
    [11, false],
    [12, false],
    [13, true],
    [14, true],
  ] as const) {
    const pace = flatOut ? 'flat out (reservations and slots)' : 'now and then';
    test(`four producers appending ${pace}, with store errors, writes applied then failed, latency and aborted appends (seed ${seed}): no group twice, each in order, resolved ones where they said, failed ones absent`, async () => {
      const store = new FaultInjectingStore(new MemoryStore(), {
        random: {
          seed,
          errorRate: 0.02,
          applyThenFailRate: 0.05,
          latencyRate: 0.4,
          maxLatencyMs: 6,
        },
      });
      const r = mulberry32(seed);
      const writers = ['P', 'Q', 'R', 'S'];
      const metrics = new InMemoryMetrics();
      const queues = writers.map(
        (w) => new LogQueue({ store, root: 'q', writer: w, metrics, deadlineMs: 2_000 }),
      );
      const resolved = new Map<string, { sequence: number; location: string }>();
      const failed = new Set<string>();
      await Promise.all(
        queues.map(async (q, i) => {
          const w = writers[i] as string;
          for (let k = 0; k < 40; k++) {
            const label = `${w}${String(k).padStart(2, '0')}`;
            const pause = flatOut || r() < 0.5 ? 0 : Math.floor(r() * 25);
            if (pause) await new Promise((res) => setTimeout(res, pause));
            const ac = new AbortController();
            if (r() < 0.08) setTimeout(() => ac.abort(new Error('gave up')), Math.floor(r() * 8));
            try {
              const [x] = await q.append([batch(w, label)], ac.signal);
              resolved.set(label, x!);
            } catch (e) {
              if (!(e instanceof OutcomeUnknownError)) failed.add(label);
            }
          }
        }),
      );
      store.setRandomFaults(undefined);
      await Promise.all(queues.map((q) => q.settle()));
      await new Promise((res) => setTimeout(res, 50));
      assertAppendsKept(await readLog(queues[0]!), writers, resolved, failed);
      assert.deepEqual(unhandled, []);
      if (flatOut) {
        const slots = metrics.counter('buffer.slots_written');
        assert.ok(slots >= 20, `producers flat out wrote slots (${slots})`);
      }
    });
  }
});

/**
 * Hostile review of riders (docs/log-layout.md §7.2): interleavings that the
 * first tests did not try. Each test states the promise it checks.
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
import { LogQueue, type AppendBatch } from '../../src/internal.ts';
import { decodeCommit } from '../../src/format/log-commit.ts';
import { encodeTrailer, withGroup } from '../../src/format/trailer.ts';
import { encodeRider, riderKey } from '../../src/format/log-rider.ts';
import { UlidGenerator } from '../../src/format/ulid.ts';
import { crc32c } from '../../src/format/crc32c.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import {
  advanceUntil,
  assertAppendsKept,
  labelledBatch as batch,
  readLabelledLog as readLog,
  rideOnA,
  track,
} from '../support/riders.ts';

const enc = new TextEncoder();

/** A batch that cannot ride (no trailer): its writer never scans riders/ nor carries any. */
function plain(label: string): AppendBatch {
  return { ...batch('x', label), extension: new Uint8Array(0) };
}

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

async function ticks(done: () => boolean, n = 200): Promise<void> {
  for (let i = 0; i < n && !done(); i++) await new Promise((r) => setImmediate(r));
  assert.ok(done(), 'not done after the ticks');
}

/** As in log-riders.test.ts: B rides with after = 1, waiting for commit 2 on the manual clock. */
async function riderOfB(store: FaultInjectingStore, clock: ManualClock, signal?: AbortSignal) {
  const metricsB = new InMemoryMetrics();
  const a = queue(store, 'A', clock);
  const b = queue(store, 'B', clock, metricsB);
  const ride = await rideOnA(store, a, b, signal);
  // A committer in a contended period (it lists riders beside its creates).
  (a as unknown as { riders: { sawOthers(): void } }).riders.sawOthers();
  return { a, b, ride, metricsB };
}

/** Holds puts of commit `key` by `writer` until released. */
function holdCommitPut(store: FaultInjectingStore, key: string, writer: string) {
  let release: (() => void) | undefined;
  let held = false;
  const off = store.before('put', async (call) => {
    if (call.key !== key || !call.body || held) return;
    if (decodeCommit(call.body, key, Number(key.slice(-20))).writer !== writer) return;
    held = true;
    await new Promise<void>((r) => (release = r));
  });
  return {
    held: () => release !== undefined,
    release: () => {
      off();
      release?.();
    },
  };
}

describe('log riders: review', () => {
  test('an owner whose stall create lands late must not resolve on a stale re-creation of its number (nothing resolved is lost)', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const { a, ride } = await riderOfB(store, clock);
    const key3 = 'q/log/00000000000000000003';
    // A reads B's rider while creating commit 2.
    await a.append([batch('A', 'a2')]);
    await a.settle();
    // A builds commit 3 carrying B's group; its create is held in flight (a stale writer to be).
    const holdA = holdCommitPut(store, key3, 'A');
    const staleA = track(a.append([batch('A', 'a3')]));
    await ticks(holdA.held);
    // B finds 3 missing, stalls, builds 3 itself; its create is held in flight too.
    const holdB = holdCommitPut(store, key3, 'B');
    await advanceUntil(clock, holdB.held, 500);
    // Meanwhile C (which carries no rider) creates the log's real commits 3, 4 and 5;
    // 11 s pass and a collection moves the boundary to 5 and deletes 3 and 4.
    const c = queue(store, 'C', clock);
    for (let i = 3; i <= 5; i++) await c.append([plain(`c${i}`)]);
    await clock.advance(11_000);
    await c.raiseBoundary({ firstCommit: 5, firstSequence: 5, expiredBelow: 0 });
    await store.delete('q/log/00000000000000000003');
    await store.delete('q/log/00000000000000000004');
    // A's create lands now: it re-creates 3 (with B's group); A finds it below the
    // boundary and deletes it again, and B's create meets it before that delete.
    let releaseDelete: (() => void) | undefined;
    const offDelete = store.before('delete', async (call) => {
      if (call.key !== key3) return;
      await new Promise<void>((r) => (releaseDelete = r));
    });
    holdA.release();
    await ticks(() => releaseDelete !== undefined);
    holdB.release();
    await advanceUntil(clock, ride.settled, 500);
    offDelete();
    releaseDelete!();
    await assert.rejects(staleA.promise, OutcomeUnknownError);
    const log = await readLog(a);
    let resolved: { sequence: number; location: string }[] | undefined;
    try {
      resolved = await ride.promise;
    } catch (e) {
      assert.ok(
        e instanceof OutcomeUnknownError,
        `B fails only with OutcomeUnknownError: ${String(e)}`,
      );
    }
    if (resolved) {
      const mine = log.find((x) => x.label === 'b0');
      assert.ok(
        mine,
        `B's append resolved at ${JSON.stringify(resolved)} but b0 is not in the log`,
      );
      assert.deepEqual(resolved, [{ sequence: mine.sequence, location: mine.location }]);
    }
  });

  test('an append in rider mode aborted by its signal fails with OutcomeUnknownError: its rider may still be carried', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const ac = new AbortController();
    const { a, ride } = await riderOfB(store, clock, ac.signal);
    await a.append([batch('A', 'a2')]);
    await a.settle();
    ac.abort(new Error('caller gave up'));
    await advanceUntil(clock, ride.settled, 50);
    let error: unknown;
    await ride.promise.catch((e: unknown) => (error = e));
    // A carries the rider it read, as it may: the append that "failed" lands.
    await a.append([batch('A', 'a3')]);
    const landed = (await readLog(a)).some((x) => x.label === 'b0');
    assert.ok(landed, 'the rider was carried after the abort');
    assert.ok(
      error instanceof OutcomeUnknownError,
      `an append that then landed failed with ${String(error)}, not OutcomeUnknownError`,
    );
  });

  test('a producer in rider mode does not remember every group it ever wrote (bounded memory)', async () => {
    const clock = new ManualClock();
    const store = new FaultInjectingStore(new MemoryStore());
    const { a, b, ride } = await riderOfB(store, clock);
    // B keeps losing: every append of B rides, A commits them.
    const appends = [ride];
    let riderPuts = 0;
    store.after('put', (call) => {
      if (call.key.startsWith('q/riders/')) riderPuts++;
    });
    for (let k = 1; k <= 20; k++) {
      await a.append([batch('A', `a${k + 1}`)]);
      await a.settle();
      await a.append([batch('A', `a${k + 1}x`)]);
      await advanceUntil(clock, appends.at(-1)!.settled, 500);
      await appends.at(-1)!.promise;
      (b as unknown as { riders: { lostRace(): void } }).riders.lostRace();
      const next = track(b.append([batch('B', `b${k}`)]));
      appends.push(next);
      await ticks(() => riderPuts >= k || next.settled());
    }
    await a.append([batch('A', 'last')]);
    await a.settle();
    await a.append([batch('A', 'last2')]);
    await advanceUntil(clock, appends.at(-1)!.settled, 500);
    await appends.at(-1)!.promise;
    const labels = (await readLog(a)).map((x) => x.label).filter((l) => l.startsWith('b'));
    assert.deepEqual(
      labels,
      Array.from({ length: 21 }, (_, k) => `b${k}`),
    );
    const own = (b as unknown as { riders: { own: Set<string> } }).riders.own.size;
    assert.ok(own <= 1, `B still remembers ${own} groups it wrote, all committed`);
  });

  test("a rider older than its owner's deadline is not carried: its external batch objects may be collected (a dead producer's rider)", async () => {
    const grace = 180_000; // above the append deadline (120 s), as A2 asks
    const clock = new ManualClock(1_700_000_000_000);
    const store = new MemoryStore(undefined, { clock });
    const a = new LogQueue({ reserveSlots: false, store, root: 'ingest', writer: 'A', clock });
    await a.ensureCreated();
    // D uploads an external batch, publishes it as a rider (the log is new: after -1) and dies.
    const ulids = new UlidGenerator();
    const name = ulids.next(clock.now());
    const location = `ingest/${name}.batch`;
    const body = enc.encode('batch:d0');
    await store.put(location, body, { mode: 'create' });
    const group = ulids.next(clock.now());
    const ext = withGroup(
      encodeTrailer({ batchSizeBytes: body.byteLength, crc32c: crc32c(body), instanceId: 'D' }),
      group,
    )!;
    await store.put(
      riderKey('ingest', group),
      encodeRider({
        writer: 'D',
        after: -1,
        group,
        batches: [{ entry: { sequence: 0, location, metadata: [], extension: ext }, records: 1 }],
      }),
      { mode: 'create' },
    );
    // A grace period later A commits (and lists the rider beside its create); a collection
    // deletes the rider and D's batch object; A's next commit follows within 2 s.
    await clock.advance(grace + 1_000);
    await a.append([batch('A', 'a0')]);
    await a.settle();
    await clock.advance(500);
    const gc = new GarbageCollector({ store, clock, gcGracePeriodMs: grace });
    const r = await gc.run();
    assert.ok(r.deleted.includes(location), 'the collection deleted the batch object');
    await clock.advance(500);
    await a.append([batch('A', 'a1')]);
    for (let n = 0; ; n++) {
      const c = await a.readCommit(n);
      if (!c) break;
      for (const x of c.batches) {
        if (x.inline) continue;
        await assert.doesNotReject(
          store.head(x.entry.location),
          `commit ${n} names ${x.entry.location}, which the collector deleted`,
        );
      }
    }
  });

  for (const seed of [1, 2, 3, 4, 5, 6]) {
    test(`five producers under random faults (seed ${seed}): no group twice, each producer in order, resolved appends in the log where they said, failed ones (not OutcomeUnknownError) absent`, async () => {
      const store = new FaultInjectingStore(new MemoryStore(), {
        random: {
          seed,
          errorRate: 0.03,
          applyThenFailRate: 0.05,
          latencyRate: 0.3,
          maxLatencyMs: 4,
        },
      });
      const writers = ['P', 'Q', 'R', 'S', 'T'];
      const metrics = new InMemoryMetrics();
      const queues = writers.map((w) => queue(store, w, undefined, metrics));
      const resolved = new Map<string, { sequence: number; location: string }>();
      const failed = new Set<string>();
      const unknown = new Set<string>();
      await Promise.all(
        queues.map(async (q, i) => {
          const w = writers[i] as string;
          for (let k = 0; k < 30; k++) {
            const label = `${w}${String(k).padStart(2, '0')}`;
            try {
              const [r] = await q.append([batch(w, label)]);
              resolved.set(label, r!);
            } catch (e) {
              if (e instanceof OutcomeUnknownError) unknown.add(label);
              else failed.add(label);
            }
          }
        }),
      );
      store.setRandomFaults(undefined);
      assert.ok(metrics.counter('buffer.riders_written') > 0, 'producers rode');
      await Promise.all(queues.map((q) => q.settle()));
      assertAppendsKept(await readLog(queues[0]!), writers, resolved, failed);
    });
  }
});

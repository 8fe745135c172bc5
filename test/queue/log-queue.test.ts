/**
 * The log layout's append protocol: numbered create-only commits, lost races
 * and lost responses, stale writers, head discovery and start positions.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  InvalidArgumentError,
  MemoryStore,
  OutcomeUnknownError,
  PreconditionFailedError,
  StorageError,
  type ObjectStore,
} from '../../src/index.ts';
import {
  collectLog,
  LOG_MIN_COMMIT_AGE_MS,
  LogQueue,
  TRUSTED_VIEW_MS,
  type AppendBatch,
} from '../../src/internal.ts';
import { noopMetrics, silentLogger } from '../../src/index.ts';
import { FaultInjectingStore, ManualClock, skewedClock } from '../../src/testing.ts';

function batch(name: string, sizeBytes = 100): AppendBatch {
  return {
    location: `q/${name}.batch`,
    sizeBytes,
    records: 1,
    metadata: [],
    extension: new Uint8Array(0),
  };
}

function log(store: ObjectStore, options: { clock?: ManualClock; writer?: string } = {}): LogQueue {
  return new LogQueue({ store, root: 'q', ...options });
}

/** Every batch of the log, in commit order: its sequence and location. */
async function readAll(q: LogQueue): Promise<{ sequence: number; location: string }[]> {
  const out: { sequence: number; location: string }[] = [];
  const { value: b } = await q.readBoundary();
  for (let n = b.firstCommit; ; n++) {
    const c = await q.readCommit(n);
    if (!c) break;
    assert.equal(c.firstSequence, out.length > 0 ? out.at(-1)!.sequence + 1 : b.firstSequence);
    for (const x of c.batches) out.push({ sequence: x.entry.sequence, location: x.entry.location });
  }
  return out;
}

describe('log queue: appends', () => {
  test('sequences are contiguous across appends; commits are numbered internally', async () => {
    const q = log(new MemoryStore());
    assert.deepEqual(await q.append([batch('a'), batch('b')]), [
      { sequence: 0, location: 'q/a.batch' },
      { sequence: 1, location: 'q/b.batch' },
    ]);
    assert.deepEqual(await q.append([batch('c')]), [{ sequence: 2, location: 'q/c.batch' }]);
    const head = await q.discoverHead();
    assert.equal(head.commit, 1);
    assert.equal(head.endSequence, 3);
    assert.equal(head.totalBytes, 300);
    assert.equal(head.totalRecords, 3);
  });

  test('an inline batch travels inside its commit and has a location that names it', async () => {
    const q = log(new MemoryStore());
    await q.append([batch('a')]);
    const [r] = await q.append([
      { ...batch('x'), location: undefined, inline: Uint8Array.of(1, 2, 3) },
    ]);
    assert.equal(r?.location, 'q/log/00000000000000000001#0');
    const c = await q.readCommit(1);
    assert.deepEqual([...(c?.batches[0]?.inline ?? [])], [1, 2, 3]);
  });

  test('writers racing on one log: every batch once, in one unbroken run of commits', async () => {
    const store = new MemoryStore();
    const writers = Array.from({ length: 4 }, (_, w) => ({
      w,
      q: log(store, { writer: `w${w}` }),
    }));
    const results = await Promise.all(
      writers.map(async ({ w, q }) => {
        const got: { sequence: number; location: string }[] = [];
        for (let i = 0; i < 40; i++) got.push(...(await q.append([batch(`w${w}-${i}`)])));
        return got;
      }),
    );
    const all = await readAll(log(store));
    assert.equal(all.length, 160);
    assert.deepEqual(
      all.map((x) => x.sequence),
      all.map((_, i) => i),
    );
    assert.equal(new Set(all.map((x) => x.location)).size, 160, 'no batch twice');
    for (const got of results) {
      // Each writer's own batches keep its order, at the sequences it was told.
      const seqs = got.map((x) => x.sequence);
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => a - b),
      );
      for (const x of got) assert.equal(all[x.sequence]?.location, x.location);
    }
  });

  test('a lost response is settled by reading the commit back: appended once', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const q = log(store);
    await q.append([batch('a')]);
    store.applyThenFailNext('put');
    assert.deepEqual(await q.append([batch('b')]), [{ sequence: 1, location: 'q/b.batch' }]);
    assert.deepEqual(
      (await readAll(q)).map((x) => x.location),
      ['q/a.batch', 'q/b.batch'],
    );
  });

  test('a create refused without landing (S3 may answer 409 as well as 412) is tried again', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const q = log(store);
    store.failNext('put', 2, () => new PreconditionFailedError('q/log/…', 'conflict (409)'));
    assert.deepEqual(await q.append([batch('a')]), [{ sequence: 0, location: 'q/a.batch' }]);
    assert.equal((await readAll(q)).length, 1);
  });

  test('a lost response whose commit was collected meanwhile is an OutcomeUnknownError, never a second append', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner);
    const q = log(store);
    await q.append([batch('a')]);
    store.applyThenFailNext('put');
    // Before the writer reads its commit back, the log moves on and a collection takes it.
    let once = true;
    store.before('get', async (call) => {
      if (!once || call.key !== q.commitKey(1)) return;
      once = false;
      const other = log(inner);
      await other.append([batch('b2')]);
      await other.raiseBoundary({ firstCommit: 2, firstSequence: 2, expiredBelow: 0 });
      await inner.deleteMany([q.commitKey(0), q.commitKey(1)]);
    });
    await assert.rejects(q.append([batch('b')]), OutcomeUnknownError);
    assert.deepEqual(
      (await readAll(log(inner))).map((x) => x.location),
      ['q/b2.batch'],
      'not appended again',
    );
  });

  test('a writer whose view of the head is fresh appends with exactly one request', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const q = log(store);
    await q.append([batch('a')]);
    const before = { ...store.stats.calls };
    await q.append([batch('b')]);
    const calls = Object.entries(store.stats.calls)
      .map(([op, n]) => [op, n - (before[op as keyof typeof before] ?? 0)] as const)
      .filter(([, n]) => n > 0);
    assert.deepEqual(calls, [['put', 1]]);
  });

  test('a writer idle past the trusted window looks again (two requests) and never re-creates a collected commit', async () => {
    const clock = new ManualClock();
    const inner = new MemoryStore(undefined, { clock });
    const store = new FaultInjectingStore(inner);
    const idle = log(store, { clock, writer: 'idle' });
    await idle.append([batch('a')]); // sees commit 0 as the head
    const other = log(inner, { clock, writer: 'other' });
    for (const name of ['b', 'c', 'd']) await other.append([batch(name)]);
    await clock.advance(LOG_MIN_COMMIT_AGE_MS);
    await other.raiseBoundary({ firstCommit: 3, firstSequence: 3, expiredBelow: 0 });
    await inner.deleteMany([0, 1, 2].map((n) => other.commitKey(n)));
    await clock.advance(TRUSTED_VIEW_MS);
    assert.deepEqual(await idle.append([batch('e')]), [{ sequence: 4, location: 'q/e.batch' }]);
    assert.equal(await other.readCommit(1), undefined, 'commit 1 was not created again');
    assert.deepEqual(
      (await readAll(other)).map((x) => x.location),
      ['q/d.batch', 'q/e.batch'],
    );
    // Idle again, with nothing new: the check is one HEAD and one GET, then the create.
    await clock.advance(TRUSTED_VIEW_MS);
    const before = { ...store.stats.calls };
    await idle.append([batch('f')]);
    const calls = Object.entries(store.stats.calls)
      .map(([op, n]) => [op, n - (before[op as keyof typeof before] ?? 0)] as const)
      .filter(([, n]) => n > 0);
    assert.deepEqual(calls, [
      ['get', 1],
      ['head', 1],
      ['put', 1],
    ]);
  });

  test('a create in flight so long that its number was created and collected meanwhile is found below the boundary: outcome unknown, stray deleted', async () => {
    const clock = new ManualClock();
    const inner = new MemoryStore(undefined, { clock });
    const store = new FaultInjectingStore(inner);
    const slow = log(store, { clock, writer: 'slow' });
    await slow.append([batch('a')]);
    const other = log(inner, { clock, writer: 'other' });
    let stalled = false;
    store.before('put', async (call) => {
      if (stalled || call.key !== slow.commitKey(1)) return;
      stalled = true;
      // While the create is in flight: others append, time passes, a collection runs.
      for (const name of ['b', 'c', 'd']) await other.append([batch(name)]);
      await clock.advance(LOG_MIN_COMMIT_AGE_MS);
      await other.raiseBoundary({ firstCommit: 3, firstSequence: 3, expiredBelow: 0 });
      await inner.deleteMany([0, 1, 2].map((n) => other.commitKey(n)));
    });
    await assert.rejects(slow.append([batch('late')]), (e: unknown) => {
      assert.ok(e instanceof OutcomeUnknownError, String(e));
      assert.match(e.message, /landed below the log's boundary \(commit 3\)/);
      return true;
    });
    assert.equal(await other.readCommit(1), undefined, 'the stray commit is deleted again');
    assert.deepEqual(await slow.append([batch('e')]), [{ sequence: 4, location: 'q/e.batch' }]);
  });

  test('an append that landed is never reported as a retriable failure', async () => {
    const clock = new ManualClock();
    const inner = new MemoryStore(undefined, { clock });
    const store = new FaultInjectingStore(inner);
    const q = log(store, { clock });
    await q.append([batch('a')]);
    store.before('put', async (call) => {
      if (call.key === q.commitKey(1)) await clock.advance(TRUSTED_VIEW_MS);
    });
    store.failNext('get', 0);
    let armed = false;
    store.after('put', (call) => {
      if (call.key === q.commitKey(1)) armed = true;
    });
    store.before('get', (call) => {
      if (armed && call.key === 'q/boundary')
        throw new StorageError('boundary unreadable', { retriable: true });
    });
    await assert.rejects(q.append([batch('b')]), OutcomeUnknownError);
    assert.deepEqual(
      (await readAll(log(inner))).map((x) => x.location),
      ['q/a.batch', 'q/b.batch'],
      'it is in the log',
    );
  });

  test("append times never decrease along the log, whatever the writers' clocks say", async () => {
    const clock = new ManualClock();
    const store = new MemoryStore();
    await log(store, { clock }).append([batch('a')]);
    const behind = new LogQueue({ store, root: 'q', clock: skewedClock(-3_600_000, clock) });
    await behind.append([batch('b')]);
    const [c0, c1] = [await behind.readCommit(0), await behind.readCommit(1)];
    assert.equal(c1?.appendTimeMs, c0?.appendTimeMs);
  });
  test('a create that lands late, after its retry began, is recognised as the same append', async () => {
    const inner = new MemoryStore();
    const store = new FaultInjectingStore(inner);
    const clock = new ManualClock();
    const q = log(store, { clock });
    await q.append([batch('a')]);
    let puts = 0;
    let delayed: Uint8Array | undefined;
    store.before('put', async (call) => {
      if (call.key !== q.commitKey(1)) return;
      puts++;
      if (puts === 1) {
        delayed = call.body; // in flight: it lands later
        await clock.advance(7);
        throw new OutcomeUnknownError(call.key, 'timed out');
      }
      if (puts === 2 && delayed) await inner.put(call.key, delayed, { mode: 'create' });
    });
    assert.deepEqual(await q.append([batch('once')]), [{ sequence: 1, location: 'q/once.batch' }]);
    assert.deepEqual(
      (await readAll(q)).map((x) => x.location),
      ['q/a.batch', 'q/once.batch'],
    );
  });

  test('creating a queue that another process created, and whose default subscription it deleted since, finds the queue', async () => {
    const store = new FaultInjectingStore(new MemoryStore(`created-${Math.random()}`));
    const first = log(store);
    const second = log(store);
    let created = false;
    let armed = false;
    let deleted = false;
    const defaultKey = (key: string): boolean => key.endsWith('/subscriptions/default');
    // Between the second's descriptor read and its create of the default subscription,
    // the first creates the queue: the second's create is refused.
    store.before('put', async (call) => {
      if (created || !defaultKey(call.key)) return;
      created = true;
      await first.ensureCreated();
      armed = true;
    });
    // Before the second reads the refused subscription back, a consumer group deletes it.
    store.before('get', async (call) => {
      if (!armed || deleted || !defaultKey(call.key)) return;
      deleted = true;
      await first.deleteSubscription('default');
    });
    const descriptor = await second.ensureCreated();
    assert.ok(created && deleted);
    assert.deepEqual(descriptor, (await first.readDescriptor())!.value);
    assert.equal(await first.readCursor('default'), undefined);
  });

  test('head discovery that races a collection never takes the log for new', async () => {
    const clock = new ManualClock();
    const name = `race-${Math.random()}`;
    const store = new MemoryStore(name, { clock });
    const q = log(store, { clock });
    await q.ensureCreated();
    for (let i = 0; i < 10; i++) await q.append([batch(`b${i}`)]);
    const c = (await q.readCursor('default'))!;
    await q.writeCursor({ ...c.value, next: { sequence: 6, index: 0 }, commit: 6 }, c.version);
    await clock.advance(3_600_000);
    const watched = new FaultInjectingStore(new MemoryStore(name, { clock }));
    let fired = false;
    watched.before('head', async (call) => {
      if (fired || call.key !== q.commitKey(0)) return;
      fired = true;
      // Between the producer's boundary read and its probe, a collection runs.
      await collectLog(
        {
          log: log(new MemoryStore(name, { clock })),
          storeNowMs: clock.now(),
          nowMs: clock.now(),
          gracePeriodMs: 600_000,
          dryRun: false,
          metrics: noopMetrics,
          logger: silentLogger,
          isProbe: () => false,
        },
        {},
      );
    });
    const late = log(watched, { clock, writer: 'late' });
    assert.deepEqual(await late.append([batch('late')]), [
      { sequence: 10, location: 'q/late.batch' },
    ]);
    assert.ok(fired);
    assert.equal(await q.readCommit(0), undefined, 'commit 0 was not created again');
    assert.deepEqual((await readAll(q)).at(-1), { sequence: 10, location: 'q/late.batch' });
  });
});

describe('log queue: the head and start positions', () => {
  test('a cold start finds the head in a few requests, with or without the hint', async () => {
    const store = new FaultInjectingStore(new MemoryStore());
    const q = log(store);
    for (let i = 0; i < 300; i++) await q.append([batch(`b${i}`)]);
    await q.settle();
    const count = async (): Promise<number> => {
      const before = store.stats.calls.head + store.stats.calls.get;
      const head = await log(store).discoverHead();
      assert.equal(head.commit, 299);
      assert.equal(head.endSequence, 300);
      return store.stats.calls.head + store.stats.calls.get - before;
    };
    const hinted = await count();
    // The hint is at most 63 commits behind: about 2 log2(64) probes past it.
    assert.ok(hinted <= 17, `with the hint (commit 256): ${hinted} requests`);
    await store.delete(q.headKey);
    const unhinted = await count();
    assert.ok(unhinted <= 2 * Math.ceil(Math.log2(300)) + 4, `without it: ${unhinted} requests`);
  });

  test('a head hint that does not decode is ignored (it is only advice)', async () => {
    const store = new MemoryStore();
    const q = log(store);
    for (let i = 0; i < 3; i++) await q.append([batch(`b${i}`)]);
    await store.put(q.headKey, new TextEncoder().encode('{"format":"spillway-head","version":2}'));
    assert.equal((await log(store).discoverHead()).commit, 2);
  });

  test('a commit naming an object outside the queue is refused; so is such an append', async () => {
    const store = new MemoryStore();
    const q = log(store);
    await assert.rejects(
      q.append([{ ...batch('x'), location: 'billing/01HF7TWYC00000000000000000.batch' }]),
      InvalidArgumentError,
    );
    await assert.rejects(q.append([{ ...batch('x'), location: 'q/queue' }]), InvalidArgumentError);
    // Written by someone else, bypassing the checks:
    const { encodeCommit } = await import('../../src/internal.ts');
    await store.put(
      q.commitKey(0),
      encodeCommit({
        commit: 0,
        firstSequence: 0,
        appendTimeMs: 0,
        totalBytes: 1,
        totalRecords: 1,
        writer: 'hostile',
        batches: [
          {
            entry: {
              sequence: 0,
              location: 'q/subscriptions/default',
              metadata: [],
              extension: new Uint8Array(0),
            },
            records: 1,
          },
        ],
      }),
    );
    await assert.rejects(q.readCommit(0), /outside this queue's batches/);
  });

  test('start positions: oldest, latest, a sequence, a time (by bisection)', async () => {
    const clock = new ManualClock(1_000_000);
    const store = new FaultInjectingStore(new MemoryStore());
    const q = log(store, { clock });
    for (let i = 0; i < 100; i++) {
      await q.append([batch(`b${2 * i}`), batch(`b${2 * i + 1}`)]);
      await clock.advance(1000);
    }
    assert.deepEqual(await q.resolveStart('oldest'), {
      next: { sequence: 0, index: 0 },
      commit: 0,
    });
    assert.deepEqual(await q.resolveStart('latest'), {
      next: { sequence: 200, index: 0 },
      commit: 100,
    });
    assert.deepEqual(await q.resolveStart({ sequence: 51 }), {
      next: { sequence: 51, index: 0 },
      commit: 25,
    });
    assert.deepEqual(await q.resolveStart({ sequence: 200 }), {
      next: { sequence: 200, index: 0 },
      commit: 100,
    });
    const gets = store.stats.calls.get;
    assert.deepEqual(await q.resolveStart({ timeMs: 1_000_000 + 40_500 }), {
      next: { sequence: 82, index: 0 },
      commit: 41,
    });
    assert.ok(store.stats.calls.get - gets <= 12, 'bisection, not a scan');
    assert.deepEqual((await q.resolveStart({ timeMs: 5_000_000 })).next, {
      sequence: 200,
      index: 0,
    });
    await assert.rejects(q.resolveStart({ sequence: 201 }), InvalidArgumentError);
    await q.raiseBoundary({ firstCommit: 10, firstSequence: 20, expiredBelow: 0 });
    await assert.rejects(
      q.resolveStart({ sequence: 19 }),
      /already collected; the oldest retained is 20/,
    );
    assert.deepEqual((await q.resolveStart('oldest')).next, { sequence: 20, index: 0 });
  });

  test('the boundary only moves up', async () => {
    const q = log(new MemoryStore());
    await q.raiseBoundary({ firstCommit: 5, firstSequence: 9, expiredBelow: 3 });
    const b = await q.raiseBoundary({ firstCommit: 2, firstSequence: 4, expiredBelow: 1 });
    assert.equal(b.firstCommit, 5);
    assert.equal(b.firstSequence, 9);
    assert.equal(b.expiredBelow, 3);
  });

  test('a new queue has its default subscription from the start', async () => {
    const q = log(new MemoryStore());
    await q.ensureCreated();
    assert.deepEqual(await q.subscriptions(), ['default']);
    assert.deepEqual((await q.readCursor('default'))?.value.next, { sequence: 0, index: 0 });
  });
});

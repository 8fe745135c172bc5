/**
 * The collector of the log layout and reservations: slot objects go with
 * their commit (after the boundary, never before), strays below the boundary
 * are swept, and retention by bytes counts slot bytes, which commit totals
 * do not. Logs are built by hand: version-2 commits and slots, create-only.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GarbageCollector, MemoryStore, Queue, type ObjectStore } from '../src/index.ts';
import { commitKey } from '../src/format/log-commit.ts';
import { slotKey, slotLocation } from '../src/format/log-slot.ts';
import { LogQueue } from '../src/queue/log-queue.ts';
import { listSlots } from '../src/queue/slot-listing.ts';
import { FaultInjectingStore, ManualClock } from '../src/testing.ts';
import { batchOf, buildLog, PLAN, ROOT, slotBytes, type CommitPlan } from './support/slot-log.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const GRACE_MS = 60_000;

async function keys(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const m of store.list(prefix)) out.push(m.key);
  return out;
}

function setup(): { clock: ManualClock; store: MemoryStore } {
  const clock = new ManualClock(1_700_000_000_000);
  return { clock, store: new MemoryStore(undefined, { clock }) };
}

function collector(store: ObjectStore, clock: ManualClock): GarbageCollector {
  return new GarbageCollector({ store, clock, gcGracePeriodMs: GRACE_MS });
}

describe('log collector and slots', () => {
  test('slots go with their commit once the boundary passed it, never before, and never those of commits kept', async () => {
    const { clock, store } = setup();
    const built = await buildLog(store, PLAN);
    assert.deepEqual(built.slotKeys, [
      [slotKey(ROOT, 1), slotKey(ROOT, 3)],
      [slotKey(ROOT, 5), slotKey(ROOT, 6)],
      [slotKey(ROOT, 9)],
      [],
    ]);
    const all = built.slotKeys.flat();
    // "slow" stands inside commit 1's reservation: commit 0 may go, commit 1 holds.
    const queue = Queue.open({ store });
    await queue.createSubscription('slow', { sequence: 6 });

    const young = await collector(store, clock).run();
    assert.deepEqual(young.deleted, [], 'younger than the grace period: nothing goes');
    assert.deepEqual(await keys(store, `${ROOT}/slots/`), all);

    await clock.advance(GRACE_MS);
    const dry = await collector(store, clock).run({ dryRun: true });
    assert.deepEqual(
      dry.deleted.filter((k) => k.includes('/slots/')),
      built.slotKeys[0],
      'a dry run names the slots it would delete',
    );
    assert.deepEqual(await keys(store, `${ROOT}/slots/`), all, 'and deletes none');

    const watched = new FaultInjectingStore(store);
    const deletes: { keys: readonly string[]; boundary: string; commit0: boolean }[] = [];
    watched.before('deleteMany', async (call) => {
      deletes.push({
        keys: call.keys ?? [],
        boundary: dec.decode((await store.get(`${ROOT}/boundary`)).body),
        commit0: (await keys(store, commitKey(ROOT, 0))).length === 1,
      });
    });
    const r = await collector(watched, clock).run();
    assert.ok(r.deleted.includes(commitKey(ROOT, 0)));
    for (const k of built.slotKeys[0]!) assert.ok(r.deleted.includes(k), k);
    const slotDelete = deletes.find((d) => d.keys.some((k) => k.includes('/slots/')));
    assert.ok(slotDelete, 'the slots were deleted');
    assert.deepEqual(slotDelete.keys, built.slotKeys[0]);
    assert.match(slotDelete.boundary, /"firstCommit":1,"firstSequence":5,/, 'the boundary first');
    assert.equal(slotDelete.commit0, false, 'after their commit');
    assert.deepEqual(
      await keys(store, `${ROOT}/slots/`),
      [...built.slotKeys[1]!, ...built.slotKeys[2]!],
      'the slots of commits kept stay',
    );

    // Once "slow" reads on, commits 1 and 2 go with their slots (the open slot 10 was
    // never written: nothing to delete there); the head stays.
    // (Past the head: 'latest' would start in commit 2's reservation, still open at 10.)
    await queue.resetSubscription('slow', { timeMs: 8_000_000_000_000 }, { clock });
    await clock.advance(GRACE_MS);
    const next = await collector(store, clock).run();
    for (const k of [...built.slotKeys[1]!, ...built.slotKeys[2]!]) {
      assert.ok(next.deleted.includes(k), k);
    }
    assert.deepEqual(await keys(store, `${ROOT}/slots/`), []);
    assert.deepEqual(await keys(store, `${ROOT}/log/`), [commitKey(ROOT, 3)]);
  });

  test('slots below the boundary that a stopped collection left, or a stale writer created again, are swept', async () => {
    const { clock, store } = setup();
    const built = await buildLog(store, PLAN);
    const queue = Queue.open({ store });
    await queue.createSubscription('slow', { sequence: 6 });
    await clock.advance(GRACE_MS);
    await collector(store, clock).run();
    assert.deepEqual(
      await keys(store, `${ROOT}/log/`),
      [1, 2, 3].map((n) => commitKey(ROOT, n)),
    );

    // A reader that waited on slot 3 voids it again after the collection, and a collection
    // that stopped after deleting commit 0 left slot 1 (written here again as it was).
    const c0 = built.commits[0]!;
    await store.put(slotKey(ROOT, 3), slotBytes(c0, 3, [], 'stale'), { mode: 'create' });
    await store.put(
      slotKey(ROOT, 1),
      slotBytes(c0, 1, [await batchOf('b', 1, slotLocation(ROOT, 1, 0))], 'stale'),
      { mode: 'create' },
    );
    // Not a slot key: never touched.
    await store.put(`${ROOT}/slots/notes.txt`, enc.encode('not a slot'));

    const r = await collector(store, clock).run();
    assert.deepEqual(
      r.deleted,
      [slotKey(ROOT, 1), slotKey(ROOT, 3)],
      'the boundary did not move: only the strays below it go',
    );
    assert.deepEqual(await keys(store, `${ROOT}/slots/`), [
      ...built.slotKeys[1]!,
      ...built.slotKeys[2]!,
      `${ROOT}/slots/notes.txt`,
    ]);
    assert.equal(r.kept, 0);
  });

  test('retention by bytes counts slot bytes: small commits with big slots are collected down to maxBytes', async () => {
    const { clock, store } = setup();
    const big = (c: string): string => c.repeat(10_000);
    // Commits 0-5 hold no batch of their own and reserve one sequence each, filled by a
    // slot of 10 000 bytes; commit 6 (the head) holds one small batch.
    const plans: CommitPlan[] = [];
    for (const c of 'abcdef') plans.push({ reserved: 1, slots: [[big(c)]] });
    plans.push({ batches: ['z'] });
    const built = await buildLog(store, plans);
    assert.equal(built.commits[6]!.totalBytes < 100, true, 'commit totals count no slot');
    const sizes = new Map<string, number>();
    for await (const m of store.list(`${ROOT}/slots/`)) sizes.set(m.key, m.size);
    const slotBytes = sizes.get(slotKey(ROOT, 0))!;
    assert.ok(slotBytes > 10_000);

    const queue = Queue.open({ store });
    await queue.createSubscription('lagging', 'oldest');
    // Room for the head and two slots, not three.
    const maxBytes = 2 * slotBytes + 1_000;
    await queue.setRetention({ maxBytes });
    await clock.advance(GRACE_MS);
    const r = await collector(store, clock).run();

    const { value: boundary } = await new LogQueue({ store, root: ROOT }).readBoundary();
    assert.deepEqual(
      [boundary.firstCommit, boundary.firstSequence, boundary.expiredBelow],
      [4, 4, 4],
      'commits 0-3 expired: keeping commit 3 would keep three slots',
    );
    assert.deepEqual(await keys(store, `${ROOT}/slots/`), [slotKey(ROOT, 4), slotKey(ROOT, 5)]);
    let kept = built.commits[6]!.totalBytes;
    for await (const m of store.list(`${ROOT}/slots/`)) kept += m.size;
    assert.ok(kept <= maxBytes, `${kept} bytes kept, at most ${maxBytes}`);
    assert.ok(kept + slotBytes > maxBytes, 'and no more was deleted than needed');
    for (const n of [0, 1, 2, 3]) {
      assert.ok(r.deleted.includes(commitKey(ROOT, n)), `commit ${n}`);
      assert.ok(r.deleted.includes(slotKey(ROOT, n)), `slot ${n}`);
    }
    assert.equal(r.bytesDeleted > 4 * slotBytes, true, 'the bytes deleted count the slots');
  });

  test('retention by bytes on a log without slots keeps its rule', async () => {
    const { clock, store } = setup();
    const built = await buildLog(
      store,
      ['a', 'b', 'c', 'd', 'e'].map((t) => ({ batches: [t.repeat(1_000)] })),
    );
    const one = built.commits[0]!.totalBytes;
    const queue = Queue.open({ store });
    await queue.createSubscription('lagging', 'oldest');
    await queue.setRetention({ maxBytes: 2 * one });
    await clock.advance(GRACE_MS);
    await collector(store, clock).run();
    assert.deepEqual(
      await keys(store, `${ROOT}/log/`),
      [3, 4].map((n) => commitKey(ROOT, n)),
    );
  });

  test('a listing of slots sums the bytes from a sequence on, within its range, passing over other keys', async () => {
    const { store } = setup();
    for (const [s, bytes] of [
      [2, 10],
      [5, 20],
      [7, 40],
      [9, 80],
    ] as const) {
      await store.put(slotKey(ROOT, s), new Uint8Array(bytes));
    }
    await store.put(`${ROOT}/slots/5`, new Uint8Array(1000));
    await store.put(`${ROOT}/slots/000000000000000000070`, new Uint8Array(1000));
    const listing = await listSlots(store, ROOT, { from: 3, until: 9 });
    assert.equal(listing.count, 2);
    assert.equal(listing.totalBytes, 60);
    assert.deepEqual(
      [0, 5, 6, 7, 8, 100].map((s) => listing.bytesFrom(s)),
      [60, 60, 40, 40, 0, 0],
    );
  });
});

/**
 * A log shared by producers that each append now and then (many vnodes, few
 * entries each; docs/log-layout.md §7.2): a producer whose view of the head
 * is old reads on before its create instead of losing it, a create lost on
 * an old view is no race, and one race lost while the log is quiet is raced
 * again at the next number rather than ridden. Riding stays for a producer
 * that loses twice in one append or while commits come back to back (the
 * riders tests).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InMemoryMetrics, MemoryStore } from '../../src/index.ts';
import { LogQueue } from '../../src/internal.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { labelledBatch as batch, readLabelledLog as readLog } from '../support/riders.ts';

const COMMITS = 'q/log/';

function producer(store: FaultInjectingStore, writer: string, clock: ManualClock) {
  const metrics = new InMemoryMetrics();
  const q = new LogQueue({ store, root: 'q', writer, clock, metrics });
  return {
    q,
    conflicts: () => metrics.counter('buffer.manifest_conflicts', { role: 'producer' }),
    riders: () => metrics.counter('buffer.riders_written'),
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
});

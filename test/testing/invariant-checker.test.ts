/** The invariant checker catches each kind of violation it exists for. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkInvariants, VIOLATIONS, type ConsumerEvent, type RunLog } from '../../src/testing.ts';

const calls: RunLog['calls'] = [
  { producer: 'a', first: 0, count: 2, outcome: 'resolved' },
  { producer: 'a', first: 2, count: 1, outcome: 'resolved' },
  { producer: 'b', first: 0, count: 1, outcome: 'unknown' },
];
const deliver = (sequence: number, location: string, entries: string[]): ConsumerEvent => ({
  kind: 'delivered',
  consumer: 'c',
  sequence,
  location,
  entries,
});
const clean: RunLog = {
  calls,
  events: [
    deliver(0, 'x/0', ['a:0', 'a:1']),
    deliver(0, 'x/0', ['a:0', 'a:1']), // redelivered before any ack: allowed
    { kind: 'acked', consumer: 'c', through: 0 },
    deliver(1, 'x/1', ['b:0', 'a:2']),
  ],
  manifests: [['x/0'], ['x/0', 'x/1'], ['x/1']],
  deletions: [{ keys: ['x/0'], referenced: ['x/1'], manifestIndex: 3 }],
};

describe('invariant checker', () => {
  test('a clean run has no violations and counts redeliveries', () => {
    const r = checkInvariants(clean);
    for (const k of VIOLATIONS) assert.deepEqual(r[k], [], k);
    assert.equal(r.redeliveredBatches, 1);
    assert.equal(r.redeliveredEntries, 2);
    assert.equal(r.deliveredEntries, 4);
    assert.equal(r.deliveredWithoutResolve, 1);
    assert.equal(r.resolvedEntries, 3);
  });

  test('several subscriptions are judged each on its own: one missing an entry, or taking a batch again after its ack, is caught', () => {
    const on = (subscription: string, ev: ConsumerEvent): ConsumerEvent => ({
      ...ev,
      subscription,
    });
    const both: RunLog = {
      ...clean,
      events: [...clean.events, ...clean.events.map((e) => on('audit', e))],
    };
    const ok = checkInvariants(both);
    for (const k of VIOLATIONS) assert.deepEqual(ok[k], [], k);
    const missing = checkInvariants({
      ...clean,
      events: [...clean.events, ...clean.events.slice(0, 3).map((e) => on('audit', e))],
    });
    assert.deepEqual(missing.lost, ['[audit] a:2']);
    const again = checkInvariants({
      ...clean,
      events: [
        ...clean.events,
        ...clean.events.map((e) => on('audit', e)),
        on('audit', deliver(0, 'x/0', ['a:0', 'a:1'])),
      ],
    });
    assert.equal(again.duplicated.length, 1);
    assert.match(again.duplicated[0] as string, /^\[audit\] batch 0/);
  });

  test('a loss reported to a consumer is a violation unless retention was meant to cause it', () => {
    const lost = (expected: boolean): ConsumerEvent => ({
      kind: 'lost',
      consumer: 'c',
      first: 1,
      last: 1,
      expected,
    });
    const unexpected = checkInvariants({
      ...clean,
      events: [...clean.events.slice(0, 3), lost(false)],
    });
    assert.ok(unexpected.lost.some((l) => /sequences 1 to 1 reported lost/.test(l)));
    const expected = checkInvariants({
      ...clean,
      events: [...clean.events.slice(0, 3), lost(true)],
    });
    assert.deepEqual(expected.lost, []);
  });

  test('a resolved entry never delivered is lost', () => {
    const r = checkInvariants({ ...clean, events: clean.events.slice(0, 3) });
    assert.deepEqual(r.lost, ['a:2']);
  });

  test('a batch delivered after its ack, or an entry in two batches, is duplicated', () => {
    const after = checkInvariants({
      ...clean,
      events: [...clean.events, deliver(0, 'x/0', ['a:0', 'a:1'])],
    });
    assert.equal(after.duplicated.length, 1);
    const twice = checkInvariants({
      ...clean,
      events: [...clean.events, deliver(2, 'x/2', ['a:2'])],
    });
    assert.equal(twice.duplicated.length, 1);
  });

  test('entries of one producer out of order, and entries never produced, are caught', () => {
    const r = checkInvariants({
      ...clean,
      events: [deliver(0, 'x/0', ['a:2', 'a:0', 'a:1', 'z:9'])],
    });
    assert.equal(r.outOfOrder.length, 1);
    assert.deepEqual(r.phantom.length, 1);
  });

  test('a manifest holding a location twice, or one location at two sequences, is caught', () => {
    assert.equal(
      checkInvariants({ ...clean, manifests: [['x/0', 'x/0']] }).manifestDuplicates.length,
      1,
    );
    const r = checkInvariants({ ...clean, events: [...clean.events, deliver(5, 'x/1', [])] });
    assert.equal(r.manifestDuplicates.length, 1);
  });

  describe('entries processed one by one (process())', () => {
    // Batch 0 holds a:0 a:1 a:2, batch 1 holds a:3 (a:4 is never produced).
    const entryCalls: RunLog['calls'] = [
      { producer: 'a', first: 0, count: 3, outcome: 'resolved' },
      { producer: 'a', first: 3, count: 1, outcome: 'resolved' },
    ];
    const at = (n: number): [number, number] => (n < 3 ? [0, n] : [1, n - 3]);
    const handed = (consumer: string, n: number, attempt = 1): ConsumerEvent => {
      const [sequence, index] = at(n);
      return { kind: 'handed-out', consumer, sequence, index, entry: `a:${n}`, attempt };
    };
    const committed = (
      consumer: string,
      n: number,
      promise: 'entry' | 'batch' | 'none' = 'entry',
    ): ConsumerEvent => {
      const [sequence, index] = at(n);
      return { kind: 'committed', consumer, sequence, index, entry: `a:${n}`, promise };
    };
    const run = (events: ConsumerEvent[]) =>
      checkInvariants({ calls: entryCalls, events, manifests: [], deletions: [] });
    const assertClean = (r: ReturnType<typeof run>): void => {
      for (const k of VIOLATIONS) assert.deepEqual(r[k], [], k);
    };
    // c1 commits a:0 and a:1, hands out a:2 and is killed before committing it (or before
    // its commit was recorded); c2 resumes at a:2. A retry of a:3 is no new hand-out.
    const crashed: ConsumerEvent[] = [
      handed('c1', 0),
      committed('c1', 0),
      handed('c1', 1),
      committed('c1', 1),
      handed('c1', 2),
      committed('c1', 2),
      handed('c2', 2),
      committed('c2', 2),
      handed('c2', 3),
      handed('c2', 3, 2),
      committed('c2', 3),
    ];

    test('a clean run with a kill: the entry in flight comes again, counted, and nothing is violated', () => {
      const r = run(crashed);
      assertClean(r);
      assert.equal(r.handedOutAgain, 1);
      assert.equal(r.handedOutEntries, 4);
      assert.equal(r.committedEntries, 4);
    });

    test('an entry handed out again after its commit was followed by a later hand-out is duplicated', () => {
      // c1 committed a:1 and then handed out a:2: a:1's commit was recorded.
      const r = run([...crashed.slice(0, 5), handed('c2', 1), ...crashed.slice(6)]);
      assert.equal(r.duplicated.length, 1);
      assert.match(
        r.duplicated[0] as string,
        /entry 0:1 to c2 \(a:1\): handed out again after c1 committed it/,
      );
      // Without the later hand-out, the commit may not have been recorded: allowed.
      const open = run([
        ...crashed.slice(0, 4),
        handed('c2', 1),
        committed('c2', 1),
        ...crashed.slice(6),
      ]);
      assert.deepEqual(open.duplicated, []);
    });

    test("whole-batch commits ('batch', v1) are proven by a hand-out in a later batch after every entry of the batch finished; 'none' never", () => {
      const v1 = (promise: 'batch' | 'none', again: number): ConsumerEvent[] => [
        handed('c1', 0),
        committed('c1', 0, promise),
        handed('c1', 1),
        committed('c1', 1, promise),
        handed('c1', 2),
        committed('c1', 2, promise),
        handed('c1', 3),
        handed('c2', again),
        committed('c2', again, promise),
      ];
      // Inside batch 0, a commit followed by a hand-out in the same batch proves nothing.
      const inside = run([
        handed('c1', 0),
        committed('c1', 0, 'batch'),
        handed('c1', 1),
        handed('c2', 0),
        committed('c2', 0, 'batch'),
        handed('c2', 1),
        committed('c2', 1, 'batch'),
        handed('c2', 2),
        committed('c2', 2, 'batch'),
        handed('c2', 3),
        committed('c2', 3, 'batch'),
      ]);
      assertClean(inside);
      assert.equal(inside.handedOutAgain, 2);
      const after = run(v1('batch', 0));
      assert.equal(after.duplicated.length, 1);
      assert.match(after.duplicated[0] as string, /entry 0:0 to c2 \(a:0\)/);
      const atLeastOnce = run([...v1('none', 0), handed('c2', 1), committed('c2', 1, 'none')]);
      assert.deepEqual(atLeastOnce.duplicated, []);
      assert.equal(atLeastOnce.handedOutAgain, 2);
    });

    test('a resolved entry handed out but never committed is lost, as is one never handed out', () => {
      const r = run(crashed.slice(0, 10));
      assert.deepEqual(r.lost, ['a:3 (handed out, never committed)']);
      const never = run(crashed.slice(0, 8));
      assert.deepEqual(never.lost, ['a:3']);
      // Each subscription must commit every entry.
      const audit = run([
        ...crashed,
        ...crashed.slice(0, 5).map((e) => ({ ...e, subscription: 'audit' })),
      ]);
      assert.deepEqual(audit.lost, ['[audit] a:2 (handed out, never committed)', '[audit] a:3']);
    });

    test("hand-outs out of position order in one session, or against a producer's order, are caught", () => {
      const backwards = run([
        handed('c1', 0),
        handed('c1', 2),
        handed('c1', 1),
        committed('c1', 0),
        committed('c1', 1),
        committed('c1', 2),
        handed('c1', 3),
        committed('c1', 3),
      ]);
      assert.equal(backwards.outOfOrder.length, 1);
      assert.match(
        backwards.outOfOrder[0] as string,
        /entry 0:1 to c1 \(a:1\): handed out after 0:2/,
      );
      // a:1 at position 0:0 and a:0 at 0:1: the producer's order is broken.
      const swapped = run([
        { kind: 'handed-out', consumer: 'c1', sequence: 0, index: 0, entry: 'a:1' },
        { kind: 'handed-out', consumer: 'c1', sequence: 0, index: 1, entry: 'a:0' },
      ]);
      assert.deepEqual(swapped.outOfOrder, ['a:0 arrived after a:1']);
    });

    test('one position holding two entries, a commit or retry never handed out, and a batch trimmed by a commit', () => {
      const moved = run([...crashed, handed('c3', 4)]);
      assert.ok(moved.phantom.some((p) => /a:4 in entry 1:1 to c3 was never produced/.test(p)));
      const two = run([
        ...crashed,
        { kind: 'handed-out', consumer: 'c3', sequence: 0, index: 2, entry: 'a:3' },
      ]);
      assert.ok(two.duplicated.some((d) => /holds a:3, but a:2 was handed out there/.test(d)));
      const never = run([...crashed, committed('c3', 3), handed('c3', 1, 2)]);
      assert.equal(never.phantom.length, 2);
      // A batch handed out whole after a commit inside it holds the rest only: in order,
      // as long as the event says where its entries start.
      const trimmed = (firstIndex?: number) =>
        run([
          ...crashed.slice(0, 4),
          {
            kind: 'delivered',
            consumer: 'c2',
            sequence: 0,
            location: 'x/0',
            entries: ['a:2'],
            ...(firstIndex === undefined ? {} : { firstIndex }),
          },
          deliver(1, 'x/1', ['a:3']),
        ]);
      assertClean(trimmed(2));
      assert.deepEqual(trimmed().outOfOrder, ['a:1 arrived after a:2']);
    });

    test('an entry handed out after its batch was acknowledged, or committed twice by one consumer, is duplicated', () => {
      const acked = run([
        ...crashed.slice(0, 4),
        { kind: 'acked', consumer: 'c1', through: 0 },
        handed('c2', 2),
        committed('c2', 2),
        handed('c2', 3),
        committed('c2', 3),
      ]);
      assert.equal(acked.duplicated.length, 1);
      assert.match(
        acked.duplicated[0] as string,
        /entry 0:2 to c2 \(a:2\): handed out after its batch was acknowledged/,
      );
      const twice = run([...crashed, committed('c2', 3)]);
      assert.equal(twice.duplicated.length, 1);
      assert.match(twice.duplicated[0] as string, /a:3 committed twice by that consumer/);
    });
  });

  test('GC deleting a referenced batch, or one a later manifest references, is caught', () => {
    const r = checkInvariants({
      ...clean,
      deletions: [
        { keys: ['x/1'], referenced: ['x/1'], manifestIndex: 3 },
        { keys: ['x/0'], referenced: [], manifestIndex: 0 },
      ],
    });
    assert.equal(r.gcViolations.length, 1 + 2);
  });
});

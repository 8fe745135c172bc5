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

/**
 * Helpers of the riders tests (docs/log-layout.md §7.2): inline batches
 * labelled and tagged with a producer, the log read back batch by batch, and
 * promises whose state a test can poll on a manual clock.
 */
import assert from 'node:assert/strict';
import { crc32c } from '../../src/format/crc32c.ts';
import { commitEnd, slotStart, type CommitBatch } from '../../src/format/log-commit.ts';
import { isVoid } from '../../src/format/log-slot.ts';
import { readSlot, voidSlot } from '../../src/queue/log-slots.ts';
import { encodeTrailer } from '../../src/format/trailer.ts';
import type { AppendBatch, LogQueue } from '../../src/internal.ts';
import type { FaultInjectingStore, ManualClock } from '../../src/testing.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * An inline batch of `writer` (its trailer's instance id) holding
 * `batch:{label}`, or `bytes` bytes when given (the label is then lost).
 */
export function labelledBatch(writer: string, label: string, bytes = 0): AppendBatch {
  const inline = bytes > 0 ? new Uint8Array(bytes).fill(7) : enc.encode(`batch:${label}`);
  return {
    inline,
    sizeBytes: inline.byteLength,
    records: 1,
    metadata: [],
    extension: encodeTrailer({
      batchSizeBytes: inline.byteLength,
      crc32c: crc32c(inline),
      instanceId: writer,
    }),
  };
}

/** One batch of the log as {@link readLabelledLog} returns it. */
export interface LoggedBatch {
  /** The label of a {@link labelledBatch}. */
  label: string;
  sequence: number;
  location: string;
  /** The commit that holds it, and that commit's writer. */
  commit: number;
  writer: string;
}

/**
 * Every batch of the log, commit by commit from the boundary, with the slots
 * of each reservation (§7.2), checking on the way that each commit's first
 * sequence follows the one before (I3). A slot still missing is voided, as a
 * reader does once it waited long enough: call this after the producers
 * settled.
 */
export async function readLabelledLog(q: LogQueue): Promise<LoggedBatch[]> {
  const out: LoggedBatch[] = [];
  const { value: b } = await q.readBoundary();
  let expected = b.firstSequence;
  const push = (x: CommitBatch, n: number, writer: string): void => {
    out.push({
      label: dec.decode(x.inline ?? new Uint8Array()).slice('batch:'.length),
      sequence: x.entry.sequence,
      location: x.entry.location,
      commit: n,
      writer,
    });
  };
  for (let n = b.firstCommit; ; n++) {
    const c = await q.readCommit(n);
    if (!c) return out;
    assert.equal(c.firstSequence, expected, `commit ${n} starts where the one before ends`);
    for (const x of c.batches) push(x, n, c.writer);
    let s = slotStart(c);
    while (s < commitEnd(c)) {
      const slot =
        (await readSlot(q.store, q.root, c, s)) ??
        (await voidSlot(q.store, q.root, c, s, 'test-reader'));
      if (isVoid(slot)) break;
      for (const x of slot.batches) push(x, n, slot.writer);
      s += slot.batches.length;
    }
    expected = commitEnd(c);
  }
}

/** Moves `clock` 1 ms at a time until `done()`; fails after `limitMs`. */
export async function advanceUntil(
  clock: ManualClock,
  done: () => boolean,
  limitMs = 2_000,
): Promise<void> {
  for (let i = 0; i < limitMs && !done(); i++) await clock.advance(1);
  assert.ok(done(), `not done after ${limitMs} ms of manual time`);
}

/** A promise with its state visible. */
export function track<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { promise: p, settled: () => settled };
}

/**
 * B rides on A: A has made commit 0, B builds commit 1 too and loses it to
 * A's second append (`a1`, made by a hook while B's create is in flight), so
 * B publishes a rider with `after` = 1 and waits for a commit to carry it.
 * Returns B's append (`b0`), tracked, once its rider is stored.
 */
export async function rideOnA(
  store: FaultInjectingStore,
  a: LogQueue,
  b: LogQueue,
  signal?: AbortSignal,
): Promise<{ promise: Promise<{ sequence: number; location: string }[]>; settled: () => boolean }> {
  await a.append([labelledBatch('A', 'a0')]);
  await b.discoverHead();
  let raced = false;
  const off = store.before('put', async (call) => {
    if (raced || call.key !== 'q/log/00000000000000000001' || !call.body) return;
    raced = true;
    await a.append([labelledBatch('A', 'a1')]);
  });
  let riderPut = false;
  const offPut = store.after('put', (call) => {
    if (call.key.startsWith('q/riders/')) riderPut = true;
  });
  const ride = track(b.append([labelledBatch('B', 'b0')], signal));
  for (let i = 0; i < 200 && !riderPut; i++) await new Promise((r) => setImmediate(r));
  off();
  offPut();
  assert.ok(riderPut, 'B published a rider');
  return ride;
}

/**
 * What producers' appends promise, checked on the log read back: no batch
 * twice, each writer's batches (labelled in order, their labels starting
 * with the writer) in order, every resolved append where it said, and no
 * failed one (other than `OutcomeUnknownError`) in the log.
 */
export function assertAppendsKept(
  log: LoggedBatch[],
  writers: readonly string[],
  resolved: ReadonlyMap<string, { sequence: number; location: string }>,
  failed: ReadonlySet<string>,
): void {
  const labels = log.map((x) => x.label);
  assert.equal(new Set(labels).size, labels.length, `a group twice: ${labels.join(',')}`);
  for (const w of writers) {
    const mine = labels.filter((l) => l.startsWith(w));
    assert.deepEqual(mine, [...mine].sort(), `${w} in order: ${mine.join(',')}`);
  }
  for (const [label, placed] of resolved) {
    const x = log.find((y) => y.label === label);
    assert.ok(x, `${label} resolved at ${JSON.stringify(placed)} and is not in the log`);
    assert.deepEqual(placed, { sequence: x.sequence, location: x.location }, label);
  }
  for (const label of failed) assert.ok(!labels.includes(label), `${label} failed and landed`);
}

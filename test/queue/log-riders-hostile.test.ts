/**
 * Riders (docs/log-layout.md §7.2) against a committer that creates commits
 * faster than an owner reads them, and against rider objects planted in the
 * store: found by the third hostile review.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InMemoryMetrics, MemoryStore } from '../../src/index.ts';
import { LogQueue } from '../../src/internal.ts';
import { crc32c } from '../../src/format/crc32c.ts';
import { encodeRider, riderKey } from '../../src/format/log-rider.ts';
import { encodeTrailer, withGroup } from '../../src/format/trailer.ts';
import { UlidGenerator } from '../../src/format/ulid.ts';
import { RIDER_MAX_BYTES, RIDER_RANGE_MAX } from '../../src/queue/log-riders.ts';
import { FaultInjectingStore, ManualClock } from '../../src/testing.ts';
import { labelledBatch as batch, readLabelledLog as readLog } from '../support/riders.ts';

const ROOT = 'q';
const enc = new TextEncoder();

/** Plants a well-formed rider of `writer` (as a hostile or buggy writer could). */
async function plantRider(
  store: MemoryStore,
  writer: string,
  after: number,
  group: string,
  inline: Uint8Array,
  location?: string,
): Promise<void> {
  const extension = withGroup(
    encodeTrailer({
      batchSizeBytes: inline.byteLength,
      crc32c: crc32c(inline),
      instanceId: writer,
    }),
    group,
  ) as Uint8Array;
  const body = encodeRider({
    writer,
    after,
    group,
    batches: [
      location === undefined
        ? { entry: { sequence: 0, location: '', metadata: [], extension }, records: 1, inline }
        : { entry: { sequence: 0, location, metadata: [], extension }, records: 1 },
    ],
  });
  await store.put(riderKey(ROOT, group), body, { mode: 'create' });
}

/**
 * B loses its first create to A and publishes b0 as a rider; returns B's
 * pending append. `storeA` and `storeB` share one memory store.
 */
async function riderOfB(
  storeA: FaultInjectingStore,
  storeB: FaultInjectingStore,
  clock: ManualClock,
  metricsA: InMemoryMetrics,
) {
  const a = new LogQueue({
    reserveSlots: false,
    store: storeA,
    root: ROOT,
    writer: 'A',
    clock,
    metrics: metricsA,
  });
  const b = new LogQueue({ reserveSlots: false, store: storeB, root: ROOT, writer: 'B', clock });
  await a.append([batch('A', 'a0')]);
  await a.settle();
  await b.discoverHead();
  let raced = false;
  const off = storeB.before('put', async (call) => {
    if (raced || !call.key.startsWith(`${ROOT}/log/`)) return;
    raced = true;
    await a.append([batch('A', 'a-race')]);
  });
  let published = false;
  const offRider = storeB.after('put', (call) => {
    if (call.key.startsWith(`${ROOT}/riders/`)) published = true;
  });
  let settled = false;
  const ride = b.append([batch('B', 'b0')]);
  ride.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 100 && !published; i++) await new Promise((r) => setImmediate(r));
  off();
  offRider();
  assert.ok(published, 'B published a rider');
  return { a, b, ride, settled: () => settled };
}

describe('log riders: fast committers and planted riders', () => {
  test('a committer creating commits back to back on a fast store lists riders every few dozen commits and carries a waiting one', async () => {
    const clock = new ManualClock();
    const mem = new MemoryStore();
    const metricsA = new InMemoryMetrics();
    const { a, ride, settled } = await riderOfB(
      new FaultInjectingStore(mem),
      new FaultInjectingStore(mem),
      clock,
      metricsA,
    );
    // No time passes: A lists beside a create because of its commit count alone.
    for (let k = 0; k < 2 * RIDER_RANGE_MAX; k++) {
      await a.append([batch('A', `a${k}`)]);
      await a.settle();
    }
    for (let i = 0; i < 2_000 && !settled(); i++) await clock.advance(1);
    await ride;
    assert.ok(metricsA.counter('buffer.riders_included') >= 1, "A carried B's rider");
    const log = await readLog(a);
    const mine = log.filter((x) => x.label === 'b0');
    assert.equal(mine.length, 1, 'b0 once');
    assert.ok(mine[0]!.commit <= 2 + 2 * 32 + 2, `carried at commit ${mine[0]!.commit}`);
  });

  for (const [seed, maxLatencyMs] of [
    [1, 3],
    [3, 1],
    [4, 10],
  ] as const) {
    test(`two producers appending back to back with store latency up to ${maxLatencyMs} ms (seed ${seed}): neither starves`, async () => {
      const store = new FaultInjectingStore(new MemoryStore(), {
        random: { seed, latencyRate: 1, maxLatencyMs },
      });
      const queues = ['A', 'B'].map(
        (w) => new LogQueue({ reserveSlots: false, store, root: ROOT, writer: w }),
      );
      await queues[0]!.append([batch('A', 'a-init')]);
      const end = performance.now() + 1_500;
      const counts = [0, 0];
      await Promise.all(
        queues.map(async (q, i) => {
          for (let k = 0; performance.now() < end; k++) {
            await q.append([batch(i === 0 ? 'A' : 'B', `${i}-${k}`)]);
            counts[i]!++;
          }
        }),
      );
      await Promise.all(queues.map((q) => q.settle()));
      assert.ok(Math.min(...counts) > 5, `appends in 1.5 s: ${counts.join(' / ')}`);
      const labels = (await readLog(queues[0]!)).map((x) => x.label);
      assert.equal(new Set(labels).size, labels.length, 'no batch twice');
    });
  }

  test("a rider forged under a live producer's id with `after` far ahead does not hold that producer's riders back", async () => {
    const clock = new ManualClock();
    const mem = new MemoryStore();
    const metricsA = new InMemoryMetrics();
    const storeA = new FaultInjectingStore(mem);
    const storeB = new FaultInjectingStore(mem);
    // Planted first: its ULID sorts before B's group.
    await plantRider(mem, 'B', 2 ** 40, new UlidGenerator().next(clock.now() - 1), enc.encode('x'));
    const { a, ride, settled } = await riderOfB(storeA, storeB, clock, metricsA);
    for (let k = 0; k < 4; k++) {
      await a.append([batch('A', `a${k}`)]);
      await a.settle();
    }
    assert.ok(metricsA.counter('buffer.riders_included') >= 1, "A carried B's real rider");
    for (let i = 0; i < 2_000 && !settled(); i++) await clock.advance(1);
    await ride;
    assert.equal((await readLog(a)).filter((x) => x.label === 'b0').length, 1);
  });

  test('riders too big to ever be carried are not read, and riders held in memory stay within a budget', async () => {
    const clock = new ManualClock();
    const mem = new MemoryStore();
    const store = new FaultInjectingStore(mem);
    const ulids = new UlidGenerator();
    for (let i = 0; i < 4; i++) {
      await plantRider(mem, `M${i}`, 0, ulids.next(clock.now()), new Uint8Array(RIDER_MAX_BYTES));
    }
    for (let i = 0; i < 40; i++) {
      await plantRider(mem, `S${i}`, 0, ulids.next(clock.now()), new Uint8Array(900 * 1024));
    }
    const riderGets: string[] = [];
    store.after('get', (call) => {
      if (call.key.startsWith(`${ROOT}/riders/`)) riderGets.push(call.key);
    });
    const a = new LogQueue({ reserveSlots: false, store, root: ROOT, writer: 'A', clock });
    await a.append([batch('A', 'a0')]);
    await a.settle();
    const pending = (a as unknown as { riders: { pending: Map<string, { sizeBytes: number }> } })
      .riders.pending;
    let held = 0;
    for (const r of pending.values()) held += r.sizeBytes;
    assert.ok(held <= 16 * 1024 * 1024, `${held} bytes of riders held`);
    assert.ok(pending.size > 0, 'riders within the budget are read');
    assert.ok(riderGets.length <= 18, `${riderGets.length} riders read at once`);
    // The 2 MiB ones are never read, in this scan or the next.
    (a as unknown as { riders: { sawOthers(): void } }).riders.sawOthers();
    await a.append([batch('A', 'a1', 10)]);
    await a.settle();
    const big: string[] = [];
    for await (const m of mem.list(`${ROOT}/riders/`))
      if (m.size > RIDER_MAX_BYTES) big.push(m.key);
    assert.equal(big.length, 4);
    for (const key of big) assert.ok(!riderGets.includes(key), `${key} read`);
  });
  test('a rider naming a batch object that is missing, or of another size, is not carried: the log never names a missing object', async () => {
    const clock = new ManualClock();
    const mem = new MemoryStore();
    const ulids = new UlidGenerator();
    const metrics = new InMemoryMetrics();
    const a = new LogQueue({
      reserveSlots: false,
      store: mem,
      root: ROOT,
      writer: 'A',
      clock,
      metrics,
    });
    await a.append([batch('A', 'a0')]);
    const ghost = `${ROOT}/${ulids.next(clock.now())}.batch`;
    await plantRider(mem, 'M', 0, ulids.next(clock.now()), enc.encode('ghost'), ghost);
    const other = `${ROOT}/${ulids.next(clock.now())}.batch`;
    await mem.put(other, enc.encode('a different object'), { mode: 'create' });
    await plantRider(mem, 'N', 0, ulids.next(clock.now()), enc.encode('short'), other);
    const real = `${ROOT}/${ulids.next(clock.now())}.batch`;
    await mem.put(real, enc.encode('carried'), { mode: 'create' });
    await plantRider(mem, 'P', 0, ulids.next(clock.now()), enc.encode('carried'), real);
    (a as unknown as { riders: { sawOthers(): void } }).riders.sawOthers();
    for (let k = 1; k <= 3; k++) {
      await a.append([batch('A', `a${k}`)]);
      await a.settle();
    }
    const named: string[] = [];
    const { value: b } = await a.readBoundary();
    for (let n = b.firstCommit; ; n++) {
      const c = await a.readCommit(n);
      if (!c) break;
      for (const x of c.batches) if (!x.inline) named.push(x.entry.location);
    }
    assert.deepEqual(named, [real], 'only the rider whose object is there, at its size');
    assert.equal(metrics.counter('buffer.riders_included'), 1);
  });
});

/**
 * Second review of riders (docs/log-layout.md §7.2): producers that crash
 * (their in-memory state gone, their store calls never answered) and come
 * back under the same instance id, with collections and a consumer running
 * meanwhile. Each test states the promise it checks.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Consumer,
  DataLossError,
  GarbageCollector,
  InMemoryMetrics,
  MemoryStore,
  OutcomeUnknownError,
  type ObjectStore,
} from '../../src/index.ts';
import { LogQueue, type AppendBatch } from '../../src/internal.ts';
import { encodeBatch } from '../../src/format/batch.ts';
import { crc32c } from '../../src/format/crc32c.ts';
import { encodeRider, riderKey } from '../../src/format/log-rider.ts';
import { encodeTrailer, withGroup } from '../../src/format/trailer.ts';
import { UlidGenerator } from '../../src/format/ulid.ts';
import type {
  GetOptions,
  GetResult,
  ObjectMeta,
  PutOptions,
  PutResult,
  StoreCallOptions,
} from '../../src/store/object-store.ts';
import { FaultInjectingStore, ManualClock, skewedClock } from '../../src/testing.ts';
import { mulberry32 } from '../../src/testing/fault-injecting-store.ts';
import { advanceUntil, track } from '../support/riders.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const ROOT = 'ingest';
/** The randomized test's append deadline and collector grace (A2: the grace exceeds the deadline). */
const DEADLINE_MS = 15_000;
const GRACE_MS = 20_000;

const never = <T>(): Promise<T> => new Promise<T>(() => undefined);

/**
 * One producer process's view of the store. `crash()` kills the process: no
 * call of it reaches the store any more, and no answer reaches it (a call in
 * flight may have landed: its caller never learns it).
 */
class ProcessStore implements ObjectStore {
  readonly description: string;
  crashed = false;
  constructor(private readonly inner: ObjectStore) {
    this.description = inner.description;
  }
  crash(): void {
    this.crashed = true;
  }
  private async guard<T>(call: () => Promise<T>): Promise<T> {
    if (this.crashed) return never();
    let out: T;
    try {
      out = await call();
    } catch (e) {
      if (this.crashed) return never();
      throw e;
    }
    if (this.crashed) return never();
    return out;
  }
  get(key: string, options?: GetOptions): Promise<GetResult> {
    return this.guard(() => this.inner.get(key, options));
  }
  head(key: string, options?: StoreCallOptions): Promise<ObjectMeta> {
    return this.guard(() => this.inner.head(key, options));
  }
  put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult> {
    return this.guard(() => this.inner.put(key, body, options));
  }
  list(prefix: string, options?: StoreCallOptions): AsyncIterable<ObjectMeta> {
    const listing = async function* (p: ProcessStore): AsyncIterable<ObjectMeta> {
      if (p.crashed) await never();
      const all: ObjectMeta[] = [];
      for await (const m of p.inner.list(prefix, options)) all.push(m);
      if (p.crashed) await never();
      yield* all;
    };
    return listing(this);
  }
  delete(key: string, options?: StoreCallOptions): Promise<void> {
    return this.guard(() => this.inner.delete(key, options));
  }
  deleteMany(keys: readonly string[], options?: StoreCallOptions): Promise<void> {
    return this.guard(() => this.inner.deleteMany(keys, options));
  }
  async close(): Promise<void> {}
}

/** A valid v1 batch object of one record, `label`, with the writer's trailer. */
async function batchOf(
  writer: string,
  label: string,
  external?: { store: ObjectStore; clock: ManualClock; ulids: UlidGenerator },
): Promise<AppendBatch> {
  const body = await encodeBatch([enc.encode(label)]);
  const extension = encodeTrailer({
    batchSizeBytes: body.byteLength,
    crc32c: crc32c(body),
    instanceId: writer,
  });
  const common = { sizeBytes: body.byteLength, records: 1, metadata: [], extension };
  if (!external) return { ...common, inline: body };
  const location = `${ROOT}/${external.ulids.next(external.clock.now())}.batch`;
  await external.store.put(location, body, { mode: 'create' });
  return { ...common, location };
}

function queue(store: ObjectStore, writer: string, clock: { now(): number } & object) {
  return new LogQueue({
    reserveSlots: false,
    store,
    root: ROOT,
    writer,
    clock: clock as ManualClock,
  });
}

/** Labels in the log, commit by commit from the boundary, with their places and committers. */
async function readLog(
  q: LogQueue,
): Promise<{ label: string; sequence: number; commit: number; writer: string }[]> {
  const out: { label: string; sequence: number; commit: number; writer: string }[] = [];
  const { value: b } = await q.readBoundary();
  for (let n = b.firstCommit; ; n++) {
    const c = await q.readCommit(n);
    if (!c) break;
    for (const x of c.batches) {
      const label = x.inline ? dec.decode(x.inline.subarray(4, -7)) : '(external)';
      out.push({ label, sequence: x.entry.sequence, commit: n, writer: c.writer });
    }
  }
  return out;
}

async function riderKeys(store: ObjectStore): Promise<string[]> {
  const out: string[] = [];
  for await (const m of store.list(`${ROOT}/riders/`)) out.push(m.key);
  return out;
}

function lostRace(q: LogQueue): void {
  (q as unknown as { riders: { lostRace(): void } }).riders.lostRace();
}

/** A rider of `writer`, as a producer that published it and died would leave it. */
async function deadRider(
  store: ObjectStore,
  writer: string,
  after: number,
  label: string,
  timeMs: number,
): Promise<string> {
  const group = new UlidGenerator().next(timeMs);
  const b = await batchOf(writer, label);
  await store.put(
    riderKey(ROOT, group),
    encodeRider({
      writer,
      after,
      group,
      batches: [
        {
          entry: {
            sequence: 0,
            location: '',
            metadata: [],
            extension: withGroup(b.extension, group)!,
          },
          records: 1,
          inline: b.inline!,
        },
      ],
    }),
    { mode: 'create' },
  );
  return group;
}

describe('log riders: crashes and restarts', () => {
  test("a restarted producer (same instance id) gets its riders carried although its dead incarnation's rider is still listed", async () => {
    const clock = new ManualClock();
    const mem = new MemoryStore(undefined, { clock });
    const a = queue(mem, 'A', clock);
    await a.append([await batchOf('A', 'a0')]);
    // P's first incarnation published a rider (after 0) and died before anyone carried it.
    await deadRider(mem, 'P', 0, 'p-old', clock.now() - 1_000);
    // P restarts under the same id: a direct append (commit 1), then a lost race puts it
    // in rider mode, and its next append rides (after 1).
    const p2 = queue(mem, 'P', clock);
    await p2.append([await batchOf('P', 'p-new0')]);
    lostRace(p2);
    const ride = track(p2.append([await batchOf('P', 'p-new1')]));
    for (let i = 0; i < 50 && (await riderKeys(mem)).length < 2; i++) {
      await new Promise((r) => setImmediate(r));
    }
    assert.equal((await riderKeys(mem)).length, 2, 'both riders stored');
    // C, a committer that discovers the head, commits twice (the first lists riders/
    // beside its create, the second carries).
    const c = queue(mem, 'C', clock);
    await c.append([await batchOf('C', 'c1')]);
    await c.settle();
    await c.append([await batchOf('C', 'c2')]);
    await c.settle();
    await advanceUntil(clock, ride.settled, 2_000);
    const [r] = await ride.promise;
    const log = await readLog(a);
    const mine = log.find((x) => x.label === 'p-new1');
    assert.ok(mine);
    assert.equal(r!.sequence, mine.sequence);
    assert.equal(
      mine.writer,
      'C',
      `p-new1 was committed by ${mine.writer} (a stall) at ${mine.commit}: C did not carry it, kept back by the dead incarnation's rider`,
    );
    assert.ok(
      !log.some((x) => x.label === 'p-old'),
      "the dead incarnation's rider is not carried after P's later batches",
    );
  });

  test("a dead incarnation's rider is never carried after a batch the restarted one appended (clocks skewed so its group sorts after the new one's)", async () => {
    const clock = new ManualClock();
    const mem = new MemoryStore(undefined, { clock });
    const a = queue(mem, 'A', clock);
    await a.append([await batchOf('A', 'a0')]);
    // P's first incarnation (its clock 1 s ahead) published a rider with after 0 and died.
    await deadRider(mem, 'P', 0, 'p-old', clock.now() + 1_000);
    // P restarts on a host whose clock is right; its first append loses a race and rides.
    const p2 = queue(mem, 'P', skewedClock(0, clock));
    lostRace(p2);
    const ride = track(p2.append([await batchOf('P', 'p-new0')]));
    for (let i = 0; i < 50 && (await riderKeys(mem)).length < 2; i++) {
      await new Promise((r) => setImmediate(r));
    }
    assert.equal((await riderKeys(mem)).length, 2, 'both riders stored');
    // C, a committer that discovers the head, commits twice (the first lists riders/
    // beside its create, the second carries).
    const c = queue(mem, 'C', clock);
    await c.append([await batchOf('C', 'c1')]);
    await c.settle();
    await c.append([await batchOf('C', 'c2')]);
    await c.settle();
    await advanceUntil(clock, ride.settled, 2_000);
    await ride.promise;
    const labels = (await readLog(a)).map((x) => x.label).filter((l) => l.startsWith('p-'));
    const iNew = labels.indexOf('p-new0');
    const iOld = labels.indexOf('p-old');
    assert.ok(iNew >= 0);
    assert.ok(
      iOld < 0 || iOld < iNew,
      `P's log: ${labels.join(', ')}: a batch of the dead incarnation after one the restarted producer appended (and was acknowledged)`,
    );
  });

  for (const seed of Array.from({ length: Number(process.env.SEEDS ?? 8) }, (_, i) => 11 + i)) {
    test(`producers crashing and restarting under their ids, collections and a consumer (seed ${seed}): resolved appends in the log once, where they said, in each producer's order; nothing after a later incarnation's batches`, async () => {
      const rng = mulberry32(seed);
      const manual = new ManualClock(1_700_000_000_000);
      // Whole milliseconds, as Date.now() gives (timers may fall due in between).
      const clock = {
        now: () => Math.floor(manual.now()),
        monotonicNow: () => manual.monotonicNow(),
        setTimeout: manual.setTimeout.bind(manual),
        clearTimeout: manual.clearTimeout.bind(manual),
      } as unknown as ManualClock;
      const mem = new MemoryStore(undefined, { clock });
      const faults = new FaultInjectingStore(mem, {
        random: {
          seed,
          errorRate: 0.02,
          applyThenFailRate: 0.03,
          latencyRate: 0.2,
          maxLatencyMs: 2,
        },
      });
      const setup = queue(mem, 'setup', clock);
      await setup.ensureCreated();
      const metrics = new InMemoryMetrics();
      const writers = ['P', 'Q', 'R'];
      /** label → where its append said it landed. */
      const resolved = new Map<string, { sequence: number; location: string }>();
      const failed = new Set<string>();
      const unknown = new Set<string>();
      const crashedInFlight = new Set<string>();
      let crashes = 0;
      let gcDeleted = 0;
      let done = false;
      const ulids = new UlidGenerator();

      const runProducer = async (w: string): Promise<void> => {
        for (let inc = 0; inc < 3; inc++) {
          const ps = new ProcessStore(faults);
          const q = new LogQueue({
            reserveSlots: false,
            store: ps,
            root: ROOT,
            writer: w,
            // Each process's wall clock is off by up to a second either way.
            clock: {
              ...clock,
              now: (
                (skew) => () =>
                  clock.now() + skew
              )(Math.round((rng() - 0.5) * 2_000)),
            } as ManualClock,
            metrics,
            deadlineMs: DEADLINE_MS,
          });
          let crashAt = inc < 2 ? 2 + Math.floor(rng() * 8) : Number.POSITIVE_INFINITY;
          for (let k = 0; k < 10; k++) {
            // Labels sort in each producer's order: incarnation, then append.
            const label = `${w}${inc}-${String(k).padStart(2, '0')}`;
            if (rng() < 0.3) lostRace(q);
            const external = rng() < 0.3;
            let b: AppendBatch;
            try {
              b = await batchOf(w, label, external ? { store: faults, clock, ulids } : undefined);
            } catch {
              continue; // the upload failed: nothing appended
            }
            const append = track(q.append([b]));
            if (k >= crashAt) {
              // Die somewhere in this append: after a few turns of the event loop.
              const turns = Math.floor(rng() * 30);
              for (let i = 0; i < turns && !append.settled(); i++) {
                await new Promise((r) => setImmediate(r));
              }
              if (!append.settled()) {
                ps.crash();
                crashes++;
                crashedInFlight.add(label);
                break;
              }
              crashAt = k + 1; // it settled first: die in the next one
            }
            try {
              const [r] = await append.promise;
              resolved.set(label, r!);
            } catch (e) {
              if (e instanceof OutcomeUnknownError) unknown.add(label);
              else failed.add(label);
            }
          }
        }
      };

      // Time: 1 ms per turn, now and then a jump (views go stale), and a collection.
      const gc = new GarbageCollector({ store: faults, clock, gcGracePeriodMs: GRACE_MS });
      const consumer = await Consumer.open({ store: mem, clock, gcIntervalMs: 0 });
      const delivered: { sequence: number; label: string }[] = [];
      const losses: unknown[] = [];
      const consume = async (): Promise<void> => {
        for (;;) {
          let b;
          try {
            b = await consumer.next();
          } catch (e) {
            if (e instanceof DataLossError) {
              losses.push(e);
              continue;
            }
            throw e;
          }
          if (!b) {
            if (done) return;
            await new Promise((r) => setImmediate(r));
            continue;
          }
          for (const e of b.entries) delivered.push({ sequence: b.sequence, label: dec.decode(e) });
          await consumer.ackThrough(b.sequence);
          await consumer.flush();
        }
      };
      const driver = (async () => {
        for (let turn = 0; !done; turn++) {
          await new Promise((r) => setImmediate(r));
          const x = rng();
          await manual.advance(x < 0.01 ? 11_000 : x < 0.02 ? 5_500 : 1);
          if (turn % 200 === 199) {
            await gc.run().then(
              (r) => (gcDeleted += r.deleted.length),
              () => undefined,
            );
          }
        }
      })();
      const consuming = consume();
      await Promise.all(writers.map(runProducer));
      faults.setRandomFaults(undefined);
      // Let the dead incarnations' riders be carried or aged out, then drain.
      const last = queue(mem, 'Z', clock);
      for (let i = 0; i < 3; i++) {
        await last.append([await batchOf('Z', `Z-${i}`)]);
        await last.settle();
      }
      await manual.advance(1_000);
      await new Promise((r) => setTimeout(r, 20));
      done = true;
      await driver;
      await consuming;
      await consumer.close();

      console.log(
        JSON.stringify({
          seed,
          crashes,
          resolved: resolved.size,
          failed: failed.size,
          unknown: unknown.size,
          crashedInFlight: [...crashedInFlight],
          riders: metrics.counter('buffer.riders_written'),
          included: metrics.counter('buffer.riders_included'),
          stalls: metrics.counter('buffer.rider_stalls'),
          delivered: delivered.length,
          boundary: (await setup.readBoundary()).value,
          ms: clock.now() - 1_700_000_000_000,
          gcDeleted,
        }),
      );
      assert.ok(crashes > 0, 'some producer crashed mid-append');
      assert.ok(metrics.counter('buffer.riders_written') > 0, 'producers rode');
      assert.deepEqual(losses, [], 'the consumer lost nothing (no retention)');
      // Sequences delivered once each (one consumer, never restarted), contiguous.
      const bySeq = new Map<number, string>();
      for (const d of delivered) {
        assert.ok(!bySeq.has(d.sequence), `sequence ${d.sequence} delivered twice`);
        bySeq.set(d.sequence, d.label);
      }
      const labels = [...bySeq.entries()].sort((x, y) => x[0] - y[0]).map((x) => x[1]);
      assert.equal(
        new Set(labels).size,
        labels.length,
        `a batch twice in the log: ${labels.join(',')}`,
      );
      for (const [label, r] of resolved) {
        assert.equal(
          bySeq.get(r.sequence),
          label,
          `${label} resolved at sequence ${r.sequence}, which holds ${bySeq.get(r.sequence)}`,
        );
      }
      for (const label of failed) assert.ok(!labels.includes(label), `${label} failed and landed`);
      for (const w of writers) {
        const mine = labels.filter((l) => l.startsWith(w));
        assert.deepEqual(mine, [...mine].sort(), `${w}'s batches out of order: ${mine.join(',')}`);
      }
    });
  }
});

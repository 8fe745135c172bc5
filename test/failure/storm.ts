/**
 * A seeded fault storm: several producers and a consumer over a store that
 * fails, delays, races and loses responses at random, with consumer restarts
 * and garbage collection along the way; then a clean drain and the invariant
 * checker. Used by the test suite (fixed seeds) and by `npm run soak`.
 */
import {
  Consumer,
  DataLossError,
  FencedError,
  GarbageCollector,
  InMemoryMetrics,
  Producer,
  Queue,
  type Batch,
  type ObjectStore,
} from '../../src/index.ts';
import { FaultInjectingStore, RetryingStore, type RandomFaults } from '../../src/testing.ts';
import {
  checkInvariants,
  entryBytes,
  entryId,
  type ConsumerEvent,
  type InvariantReport,
  type ProducedCall,
} from '../../src/testing.ts';
import { mulberry32 } from '../../src/testing.ts';
import { recordingStore } from './recording-store.ts';

/** Options of {@link runStorm}. */
export interface StormOptions {
  /** The store under test; the storm writes under the default paths. */
  store: ObjectStore;
  seed: number;
  /** `produce()` calls in all, over every producer. @default 10000 */
  calls?: number;
  /** @default 3 */
  producers?: number;
  /** Fault rates, the seed aside. */
  faults?: Omit<RandomFaults, 'seed'>;
  /**
   * The queue's layout. On the log, two subscriptions (`default` and
   * `audit`) each drain everything, through their own restarting consumers.
   * @default 'v1'
   */
  layout?: 'v1' | 'log';
  /**
   * Grace period of the collections run during the storm. It must exceed the
   * longest seal-to-durable time of any batch (reported as `maxFlushMs`), or a
   * collection may take a batch before its append: the documented hazard.
   * @default 15000
   */
  gcGracePeriodMs?: number;
}

/** The default fault mix: every kind on every operation. */
export const STORM_FAULTS: Omit<RandomFaults, 'seed'> = Object.freeze({
  errorRate: 0.04,
  applyThenFailRate: 0.04,
  conflictRate: 0.05,
  latencyRate: 0.05,
  maxLatencyMs: 15,
});

/** What a storm did and what the checker found. */
export interface StormResult {
  seed: number;
  report: InvariantReport;
  /** Store calls made through the fault injector, by operation. */
  operations: number;
  faults: { errors: number; appliedThenFailed: number; conflicts: number; delays: number };
  /** Rejected `durable` promises, by error code. */
  rejections: Record<string, number>;
  consumerSessions: number;
  /** Consumer calls that failed and were retried or led to a reopen. */
  consumerErrors: number;
  manifestWrites: number;
  batchesCollected: number;
  /** Batch objects left after the final grace-0 collection (must be 0). */
  objectsLeft: number;
  /** Longest time from sealing a batch to its append, in ms. */
  maxFlushMs: number;
  elapsedMs: number;
}

/** Runs one storm and returns the invariant report; it does not assert. */
export async function runStorm(options: StormOptions): Promise<StormResult> {
  const started = performance.now();
  const { seed, calls = 10_000, producers = 3, gcGracePeriodMs = 15_000 } = options;
  const layout = options.layout ?? 'v1';
  const subscriptions = layout === 'log' ? ['default', 'audit'] : ['default'];
  const rng = mulberry32(seed ^ 0x5eed);
  const recorder = recordingStore(options.store, 'ingest/manifest');
  const faulty = new FaultInjectingStore(recorder.store, {
    random: { seed, ...(options.faults ?? STORM_FAULTS) },
  });
  // The injector stands for the network; the roles see it through the retry policy, as
  // they see a real adapter's, so a transient fault costs a retry, not a rejection.
  const store = new RetryingStore(faulty, { retry: { baseDelayMs: 5, maxDelayMs: 100 } });
  const log: ProducedCall[] = [];
  const events: ConsumerEvent[] = [];
  const rejections = new Map<string, number>();
  const metrics = new InMemoryMetrics();
  if (layout === 'log') {
    // Both subscriptions exist before the first entry, so each must receive everything.
    const queue = Queue.open({ store, layout: 'log' });
    await queue.logQueue().ensureCreated();
    await queue.createSubscription('audit', 'oldest');
  }

  let producing = producers;
  const producerRuns = Array.from({ length: producers }, (_, p) =>
    produceAll(
      store,
      layout,
      `s${seed}p${p}`,
      Math.ceil(calls / producers),
      rng,
      log,
      rejections,
      metrics,
    ).finally(() => producing--),
  );

  // A consumer per subscription drains while the producers run, restarting now and then
  // (a crash: no close, no flush) and collecting garbage. They take turns.
  let sessions = 0;
  let consumerErrors = 0;
  let collected = 0;
  const consumers = new Map<string, Consumer | undefined>();
  const open = async (subscription: string): Promise<Consumer> => {
    for (;;) {
      try {
        sessions++;
        return await Consumer.open({
          store,
          layout,
          ...(layout === 'log' ? { subscription } : {}),
          ackBatchSize: 1 + Math.floor(rng() * 8),
          ackIntervalMs: 60_000,
          gcIntervalMs: 0,
          gcGracePeriodMs,
          readAheadBatches: 1 + Math.floor(rng() * 8),
        });
      } catch {
        consumerErrors++;
      }
    }
  };
  const sessionOf = new Map<Consumer, string>();
  const consumerOf = async (subscription: string): Promise<Consumer> => {
    let c = consumers.get(subscription);
    if (!c) {
      c = await open(subscription);
      consumers.set(subscription, c);
      sessionOf.set(c, `c${sessions}`);
    }
    return c;
  };
  let turn = 0;
  while (producing > 0) {
    const subscription = subscriptions[turn++ % subscriptions.length] as string;
    const c = await consumerOf(subscription);
    const name = sessionOf.get(c) as string;
    try {
      const batch = await c.next();
      if (!batch) {
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      deliver(events, name, subscription, batch);
      const r = rng();
      if (r < 0.02) {
        consumers.set(subscription, undefined); // crash between fetch and ack: the batch comes again
        continue;
      }
      await c.ack(batch.sequence);
      if (r < 0.2) {
        await c.flush();
        events.push({ kind: 'acked', consumer: name, subscription, through: batch.sequence });
      }
      if (r > 0.97) collected += (await c.collectGarbage()).deleted.length;
    } catch (e) {
      consumerErrors++;
      if (e instanceof DataLossError) {
        events.push({
          kind: 'lost',
          consumer: name,
          subscription,
          first: e.firstSequence,
          last: e.lastSequence,
          expected: false,
        });
      }
      if (e instanceof FencedError) consumers.set(subscription, undefined);
      else if (rng() < 0.1) consumers.set(subscription, undefined);
    }
  }
  await Promise.all(producerRuns);

  // Clean drain: faults off, one consumer per subscription, everything acknowledged, then a
  // grace-0 collection.
  faulty.setRandomFaults(undefined);
  for (const subscription of subscriptions) {
    const final = await open(subscription);
    const name = `c${sessions}`;
    for (;;) {
      const batch = await final.next().catch((e: unknown) => {
        const flushes = metrics.histograms.get('buffer.flush_duration_seconds') ?? [];
        throw new Error(
          `seed ${seed}: the final drain of ${subscription} failed (longest seal-to-append ${Math.round(1000 * Math.max(0, ...flushes))} ms, grace ${gcGracePeriodMs} ms): ${String(e)}`,
          { cause: e },
        );
      });
      if (!batch) break;
      deliver(events, name, subscription, batch);
      await final.ack(batch.sequence);
    }
    await final.flush();
    events.push({ kind: 'acked', consumer: name, subscription, through: final.lastAckedSequence });
    await final.close();
  }
  collected += (await new GarbageCollector({ store, layout, gcGracePeriodMs: 0 }).run()).deleted
    .length;
  // What is left: nothing on v1; on the log, only what the commits still stored hold (the
  // newest, and those younger than the protocol's minimum commit age, are never collected).
  const kept = new Set<string>();
  if (layout === 'log') {
    const log = Queue.open({ store }).logQueue();
    const { value: b } = await log.readBoundary();
    for (let n = b.firstCommit; ; n++) {
      const c = await log.readCommit(n);
      if (!c) break;
      for (const x of c.batches) kept.add(x.entry.location);
    }
  }
  let objectsLeft = 0;
  for await (const m of faulty.list('ingest/'))
    if (m.key.endsWith('.batch') && !kept.has(m.key)) objectsLeft++;

  const report = checkInvariants({
    calls: log,
    events,
    manifests: recorder.manifests,
    deletions: recorder.deletions,
  });
  const s = faulty.stats;
  return {
    seed,
    report,
    operations: Object.values(s.calls).reduce((a, b) => a + b, 0),
    faults: {
      errors: s.errors,
      appliedThenFailed: s.appliedThenFailed,
      conflicts: s.conflicts,
      delays: s.delays,
    },
    rejections: Object.fromEntries(rejections),
    consumerSessions: sessions,
    consumerErrors,
    manifestWrites: recorder.manifests.length,
    batchesCollected: collected,
    objectsLeft,
    maxFlushMs: Math.round(
      1000 * Math.max(0, ...(metrics.histograms.get('buffer.flush_duration_seconds') ?? [])),
    ),
    elapsedMs: Math.round(performance.now() - started),
  };
}

function deliver(
  events: ConsumerEvent[],
  consumer: string,
  subscription: string,
  batch: Batch,
): void {
  events.push({
    kind: 'delivered',
    consumer,
    subscription,
    sequence: batch.sequence,
    location: batch.location,
    entries: batch.entries.map(entryId),
  });
}

/**
 * One producer's share, from 1-8 lanes that each await durability before their
 * next call (many small batches), with some open-loop bursts in between.
 */
async function produceAll(
  store: ObjectStore,
  layout: 'v1' | 'log',
  id: string,
  calls: number,
  rng: () => number,
  log: ProducedCall[],
  rejections: Map<string, number>,
  metrics: InMemoryMetrics,
): Promise<void> {
  const producer = new Producer({
    store,
    layout,
    metrics,
    instanceId: id,
    flushIntervalMs: rng() < 0.5 ? 0 : 1 + Math.floor(rng() * 3),
    maxBufferedInputs: 20 + Math.floor(rng() * 200),
    maxConcurrentUploads: 1 + Math.floor(rng() * 4),
  });
  let n = 0;
  let issued = 0;
  const one = async (): Promise<{ settled: Promise<void> }> => {
    const count = 1 + Math.floor(rng() * 3);
    const call: ProducedCall = { producer: id, first: n, count, outcome: 'unknown' };
    const entries = Array.from({ length: count }, (_, k) => entryBytes(id, n + k));
    n += count;
    issued++;
    log.push(call);
    const { durable } = await producer.produce(entries);
    const settled = durable.then(
      () => void (call.outcome = 'resolved'),
      (e: unknown) => {
        call.outcome = 'rejected';
        const code = (e as { code?: string }).code ?? 'UNKNOWN';
        rejections.set(code, (rejections.get(code) ?? 0) + 1);
      },
    );
    return { settled };
  };
  const lanes = 1 + Math.floor(rng() * 8);
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (issued < calls) {
        if (rng() < 0.02) {
          // An open-loop burst.
          const burst: Promise<void>[] = [];
          for (let k = 0; k < 10 && issued < calls; k++) burst.push((await one()).settled);
          await Promise.all(burst);
        } else {
          await (
            await one()
          ).settled;
        }
      }
    }),
  );
  await producer.close().catch(() => undefined);
}

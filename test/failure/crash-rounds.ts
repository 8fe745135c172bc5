/**
 * Rounds of real processes killed with SIGKILL: in each round several
 * producer processes and one consumer process (on the log layout also a
 * collector process) run against the same store and each is killed, at a
 * random moment or at a chosen point of its work. The next round's consumer
 * resumes where the last left off (on the log, rounds alternate between two
 * subscriptions), and after every round the checker runs on the logs so far
 * (everything but "nothing lost", which needs the queue drained). At the end
 * a consumer in this process drains the queue (every subscription), the
 * invariant checker reads every log, and garbage collection must keep the
 * orphans (batch objects of killed producers that never reached the queue)
 * until the grace period has passed, then take them all.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Consumer,
  GarbageCollector,
  Producer,
  Queue,
  type Layout,
  type ObjectStore,
} from '../../src/index.ts';
import { LOG_MIN_COMMIT_AGE_MS } from '../../src/internal.ts';
import type { CollectorChildConfig } from './crash-collector-child.ts';
import { mulberry32 } from '../../src/testing.ts';
import type { ConsumerChildConfig } from './crash-consumer-child.ts';
import type { ProducerChildConfig } from './crash-producer-child.ts';
import {
  checkInvariants,
  entryBytes,
  entryId,
  VIOLATIONS,
  type ConsumerEvent,
  type InvariantReport,
  type ProducedCall,
} from '../../src/testing.ts';

const here = new URL('.', import.meta.url).pathname;
const PRODUCER_CRASHES: ProducerChildConfig['crashAt'][] = [
  'timer',
  'after-batch-upload',
  'before-manifest-write',
  'after-manifest-write',
];
const CONSUMER_CRASHES: ConsumerChildConfig['crashAt'][] = [
  'timer',
  'after-fetch',
  'before-ack-write',
  'after-ack-write',
];
const COLLECTOR_CRASHES: CollectorChildConfig['crashAt'][] = [
  'after-boundary-write',
  'mid-delete',
  'timer',
];
/** The log layout's subscriptions, read in turn by the rounds' consumers. */
const SUBSCRIPTIONS = ['default', 'audit'];

/** Options of {@link runCrashRounds}. */
export interface CrashRoundsOptions {
  /** URL of the store, for the child processes. */
  url: string;
  /** The same store, opened in this process. */
  store: ObjectStore;
  rounds: number;
  producersPerRound: number;
  seed: number;
  layout: Layout;
}

/** What the rounds did and what the checker found. */
export interface CrashRoundsResult {
  report: InvariantReport;
  producerKills: number;
  consumerKills: number;
  /** Kills by crash point, producers and consumers together. */
  killsBy: Record<string, number>;
  /** Collector kills at their crash point (log layout), by point. */
  collectorHits: Record<string, number>;
  /** Collections that failed in the collector processes. */
  collectorErrors: string[];
  /** Children that exited on their own (none should). */
  unexpectedExits: string[];
  /** Rounds after which the invariants other than "nothing lost" were checked. */
  roundsChecked: number;
  /** Violations found by those checks (must be empty). */
  roundViolations: string[];
  /** Manifest versions written with a location held twice, as the children saw them. */
  manifestDuplicates: string[];
  /** Batch objects left after the drain that no consumer ever received. */
  orphans: number;
  /** Batch objects a collection at the grace period's edge kept, and one past it deleted. */
  keptWithinGrace: number;
  deletedAfterGrace: number;
  objectsLeft: number;
  elapsedMs: number;
}

interface Child {
  kind: 'producer' | 'consumer' | 'collector';
  id: string;
  subscription?: string;
  crashAt: string;
  logPath: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill: () => void;
  /** A collector: settles once it finished a collection (or exited). */
  ran: Promise<void>;
}

function spawnChild(
  kind: 'producer' | 'consumer' | 'collector',
  config: ProducerChildConfig | ConsumerChildConfig | CollectorChildConfig,
  rng: () => number,
): Child {
  const script = join(here, `crash-${kind}-child.ts`);
  const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(config)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let ranOnce: () => void = () => undefined;
  const ran = new Promise<void>((resolve) => (ranOnce = resolve));
  child.stdout.on('data', (d: Buffer) => {
    if (d.toString().includes('RAN')) ranOnce();
  });
  child.on('exit', () => ranOnce());
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    // A child that never reaches its crash point is killed at a deadline.
    const deadline = setTimeout(() => child.kill('SIGKILL'), 8000);
    let timer: NodeJS.Timeout | undefined;
    child.stdout.on('data', (d: Buffer) => {
      if (config.crashAt === 'timer' && timer === undefined && d.toString().includes('READY')) {
        timer = setTimeout(() => child.kill('SIGKILL'), 30 + Math.floor(rng() * 400));
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(deadline);
      clearTimeout(timer);
      if (signal !== 'SIGKILL')
        console.error(`crash child ${kind} exited ${code} (signal ${signal}): ${stderr}`);
      resolve({ code, signal });
    });
  });
  const id = 'id' in config ? config.id : config.logPath;
  // Only the log layout has subscriptions to tell apart.
  const subscription =
    'subscription' in config && config.layout === 'log' ? config.subscription : undefined;
  return {
    kind,
    id,
    crashAt: config.crashAt,
    logPath: config.logPath,
    exit,
    ran,
    kill: () => void child.kill('SIGKILL'),
    ...(subscription ? { subscription } : {}),
  };
}

/** What the children's logs say, gathered round after round. */
interface Logs {
  calls: ProducedCall[];
  events: ConsumerEvent[];
  manifestDuplicates: string[];
  collectorHits: Record<string, number>;
  collectorErrors: string[];
}

/** Adds the logs of one round's children (the consumer's events in order). */
async function readLogs(children: readonly Child[], logs: Logs): Promise<void> {
  const { calls, events, manifestDuplicates } = logs;
  for (const child of children) {
    const text = await readFile(child.logPath, 'utf8').catch(() => '');
    const lines = text.split('\n').filter((l) => l.length > 0);
    if (child.kind === 'collector') {
      for (const line of lines) {
        const [tag, point] = line.split(' ');
        if (tag === 'HIT')
          logs.collectorHits[point as string] = (logs.collectorHits[point as string] ?? 0) + 1;
        else if (tag === 'E') logs.collectorErrors.push(line);
      }
    } else if (child.kind === 'producer') {
      const id = child.id;
      const byFirst = new Map<number, ProducedCall>();
      for (const line of lines) {
        const [tag, a, b] = line.split(' ');
        if (tag === 'S') {
          const call: ProducedCall = {
            producer: id,
            first: Number(a),
            count: Number(b),
            outcome: 'unknown',
          };
          byFirst.set(call.first, call);
          calls.push(call);
        } else if (tag === 'D' || tag === 'X') {
          const call = byFirst.get(Number(a));
          if (call) call.outcome = tag === 'D' ? 'resolved' : 'rejected';
        } else if (tag === 'MDUP') {
          manifestDuplicates.push(`${id} wrote a manifest holding ${a} twice`);
        }
      }
    } else {
      const name = child.id;
      for (const line of lines) {
        const [tag, a, b, c] = line.split(' ');
        if (tag === 'R') {
          events.push({
            kind: 'delivered',
            consumer: name,
            sequence: Number(a),
            location: b as string,
            entries: c ? c.split(',') : [],
            ...(child.subscription ? { subscription: child.subscription } : {}),
          });
        } else if (tag === 'A') {
          events.push({
            kind: 'acked',
            consumer: name,
            through: Number(a),
            ...(child.subscription ? { subscription: child.subscription } : {}),
          });
        }
      }
    }
  }
}

/** Batches in the log before the rounds: every round's collector finds old commits to take. */
const SEED_BATCHES = 200;

/**
 * Seeds a log queue with both subscriptions and {@link SEED_BATCHES}
 * one-entry batches, and lets them age past the protocol's minimum commit age
 * (by the store's clock: waited out), so that the rounds' consumers move the
 * floor over commits their collectors may take.
 */
async function seedLog(store: ObjectStore, calls: ProducedCall[]): Promise<void> {
  const producer = new Producer({ store, layout: 'log', flushIntervalMs: 0, instanceId: 'seed' });
  for (let n = 0; n < SEED_BATCHES; n++) {
    const call: ProducedCall = { producer: 'seed', first: n, count: 1, outcome: 'unknown' };
    calls.push(call);
    await (
      await producer.produce([entryBytes('seed', n)])
    ).durable;
    call.outcome = 'resolved';
    // The first produce creates the queue; "audit" then starts at the oldest batch.
    if (n === 0) await Queue.open({ store }).createSubscription('audit', 'oldest');
  }
  await producer.close();
  await new Promise((r) => setTimeout(r, LOG_MIN_COMMIT_AGE_MS + 1000));
}

/** Reads (and acknowledges) up to `max` batches of a subscription, recording them. */
async function drainSome(
  store: ObjectStore,
  subscription: string,
  name: string,
  events: ConsumerEvent[],
  max: number,
): Promise<void> {
  const consumer = await Consumer.open({ store, subscription, gcIntervalMs: 0 });
  for (let i = 0; i < max; i++) {
    const batch = await consumer.next();
    if (!batch) break;
    events.push({
      kind: 'delivered',
      consumer: name,
      sequence: batch.sequence,
      location: batch.location,
      entries: batch.entries.map(entryId),
      subscription,
    });
    await consumer.ack(batch.sequence);
  }
  await consumer.flush();
  events.push({ kind: 'acked', consumer: name, through: consumer.lastAckedSequence, subscription });
  await consumer.close();
}

/** Runs the rounds, drains, collects, and checks. It does not assert. */
export async function runCrashRounds(options: CrashRoundsOptions): Promise<CrashRoundsResult> {
  const started = performance.now();
  const rng = mulberry32(options.seed);
  const dir = await mkdtemp(join(tmpdir(), 'spillway-crash-logs-'));
  const logs: Logs = {
    calls: [],
    events: [],
    manifestDuplicates: [],
    collectorHits: {},
    collectorErrors: [],
  };
  const log = options.layout === 'log';
  const roundViolations: string[] = [];
  let roundsChecked = 0;
  const killsBy: Record<string, number> = {};
  const unexpectedExits: string[] = [];
  let producerKills = 0;
  let consumerKills = 0;
  try {
    if (log) await seedLog(options.store, logs.calls);
    for (let r = 0; r < options.rounds; r++) {
      const round: Child[] = [];
      for (let p = 0; p < options.producersPerRound; p++) {
        const crashAt = PRODUCER_CRASHES[(r + p) % PRODUCER_CRASHES.length] as string;
        round.push(
          spawnChild(
            'producer',
            {
              url: options.url,
              id: `r${r}p${p}`,
              logPath: join(dir, `r${r}p${p}.log`),
              crashAt: crashAt as ProducerChildConfig['crashAt'],
              crashAfter: 1 + Math.floor(rng() * 6),
              flushIntervalMs: rng() < 0.5 ? 0 : 2,
              layout: options.layout,
              // Half the log producers (and all killed after an upload) make every batch
              // an object of its own; the others carry them inline.
              inlineMaxBytes: p % 2 === 0 || crashAt === 'after-batch-upload' ? 0 : 65_536,
            },
            rng,
          ),
        );
      }
      round.push(
        spawnChild(
          'consumer',
          {
            url: options.url,
            logPath: join(dir, `r${r}c.log`),
            crashAt: CONSUMER_CRASHES[
              r % CONSUMER_CRASHES.length
            ] as ConsumerChildConfig['crashAt'],
            crashAfter: 1 + Math.floor(rng() * 4),
            flushEvery: 1 + Math.floor(rng() * 3),
            layout: options.layout,
            subscription: log ? (SUBSCRIPTIONS[r % SUBSCRIPTIONS.length] as string) : 'default',
          },
          rng,
        ),
      );
      if (log) {
        round.push(
          spawnChild(
            'collector',
            {
              url: options.url,
              logPath: join(dir, `r${r}g.log`),
              crashAt: COLLECTOR_CRASHES[
                r % COLLECTOR_CRASHES.length
              ] as CollectorChildConfig['crashAt'],
              crashAfter: 1 + Math.floor(rng() * 2),
              gracePeriodMs: 2000,
            },
            rng,
          ),
        );
      }
      // The round lasts as long as its producers and its consumer; a collector still
      // running then is killed with them (its own crash point may not have come).
      const others = round.filter((c) => c.kind !== 'collector');
      await Promise.all(others.map((c) => c.exit));
      const collectors = round.filter((c) => c.kind === 'collector');
      // ...once it has had the chance to collect at least once.
      await Promise.all(collectors.map((c) => c.ran));
      for (const c of collectors) c.kill();
      for (const child of round) {
        const { signal, code } = await child.exit;
        if (child.kind === 'collector') {
          if (signal !== 'SIGKILL')
            unexpectedExits.push(`collector ${child.logPath} exited ${code}`);
          continue;
        }
        if (signal === 'SIGKILL') {
          killsBy[child.crashAt] = (killsBy[child.crashAt] ?? 0) + 1;
          if (child.kind === 'producer') producerKills++;
          else if (child.kind === 'consumer') consumerKills++;
        } else {
          unexpectedExits.push(`${child.kind} ${child.logPath} exited ${code} (signal ${signal})`);
        }
      }
      // After every round of kills: everything but "lost" must already hold (what is
      // still queued is delivered by a later round or the final drain).
      await readLogs(round, logs);
      // On the log, a consumer here also reads some of each subscription between rounds,
      // so that the floor moves and the next round's collector has commits to take.
      if (log) {
        for (const subscription of SUBSCRIPTIONS) {
          await drainSome(options.store, subscription, `between${r}`, logs.events, 300);
        }
      }
      const partial = checkInvariants({ ...logs, manifests: [], deletions: [] });
      for (const k of VIOLATIONS) {
        if (k !== 'lost') roundViolations.push(...partial[k].map((v) => `round ${r}: ${v}`));
      }
      roundsChecked++;
    }
    const { calls, events, manifestDuplicates } = logs;

    // A consumer here resumes after every kill and drains what is left (of every subscription).
    for (const subscription of log ? SUBSCRIPTIONS : [undefined]) {
      const final = await Consumer.open({
        store: options.store,
        layout: options.layout,
        gcIntervalMs: 0,
        ...(subscription ? { subscription } : {}),
      });
      const tag = subscription ? { subscription } : {};
      for (;;) {
        const batch = await final.next();
        if (!batch) break;
        events.push({
          kind: 'delivered',
          consumer: 'final',
          sequence: batch.sequence,
          location: batch.location,
          entries: batch.entries.map(entryId),
          ...tag,
        });
        await final.ack(batch.sequence);
      }
      await final.flush();
      events.push({ kind: 'acked', consumer: 'final', through: final.lastAckedSequence, ...tag });
      await final.close();
    }

    // Orphans: batch objects nobody received. GC keeps them within the grace period.
    const received = new Set(events.flatMap((e) => (e.kind === 'delivered' ? [e.location] : [])));
    let orphans = 0;
    for await (const m of options.store.list('ingest/'))
      if (m.key.endsWith('.batch') && !received.has(m.key)) orphans++;
    const withinGrace = await new GarbageCollector({ store: options.store }).run();
    if (log) {
      // A last commit after every orphan, then the protocol's minimum commit age (the
      // store's own clock, so it is waited out): then a grace-0 collection can tell
      // every orphan and every collected commit's batch from what the log still holds.
      const last = new Producer({ store: options.store, flushIntervalMs: 0 });
      await (
        await last.produce([new TextEncoder().encode('last')])
      ).durable;
      await last.close();
      for (const subscription of SUBSCRIPTIONS) {
        const c = await Consumer.open({ store: options.store, subscription, gcIntervalMs: 0 });
        const b = await c.next();
        if (b) await c.ackThrough(b.sequence);
        await c.close();
      }
      await new Promise((r) => setTimeout(r, LOG_MIN_COMMIT_AGE_MS + 1000));
    }
    // Every producer is gone now, so no upload can be waiting for its append: grace 0 is safe.
    const afterGrace = await new GarbageCollector({
      store: options.store,
      gcGracePeriodMs: 0,
    }).run();
    let objectsLeft = 0;
    for await (const m of options.store.list('ingest/'))
      if (m.key.endsWith('.batch')) objectsLeft++;

    return {
      report: checkInvariants({ calls, events, manifests: [], deletions: [] }),
      producerKills,
      consumerKills,
      killsBy,
      collectorHits: logs.collectorHits,
      collectorErrors: logs.collectorErrors,
      unexpectedExits,
      roundsChecked,
      roundViolations,
      manifestDuplicates,
      orphans,
      keptWithinGrace: withinGrace.kept,
      deletedAfterGrace: afterGrace.deleted.length,
      objectsLeft,
      elapsedMs: Math.round(performance.now() - started),
    };
  } finally {
    // To study a failure: the children's logs are kept, and their folder printed.
    if (process.env['SPILLWAY_KEEP_CRASH_LOGS']) console.error(`crash logs kept in ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

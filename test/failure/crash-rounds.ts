/**
 * Rounds of real processes killed with SIGKILL: in each round several
 * producer processes and one consumer process run against the same store and
 * each is killed, at a random moment or at a chosen point of its work. The
 * next round's consumer resumes where the last left off, and after every
 * round the checker runs on the logs so far (everything but "nothing lost",
 * which needs the queue drained). At the end a
 * consumer in this process drains the queue, the invariant checker reads
 * every log, and garbage collection must keep the orphans (batch objects of
 * killed producers that never reached the manifest) until the grace period
 * has passed, then take them all.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Consumer, GarbageCollector, type ObjectStore } from '../../src/index.ts';
import { mulberry32 } from '../../src/testing.ts';
import type { ConsumerChildConfig } from './crash-consumer-child.ts';
import type { ProducerChildConfig } from './crash-producer-child.ts';
import {
  checkInvariants,
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

/** Options of {@link runCrashRounds}. */
export interface CrashRoundsOptions {
  /** URL of the store, for the child processes. */
  url: string;
  /** The same store, opened in this process. */
  store: ObjectStore;
  rounds: number;
  producersPerRound: number;
  seed: number;
}

/** What the rounds did and what the checker found. */
export interface CrashRoundsResult {
  report: InvariantReport;
  producerKills: number;
  consumerKills: number;
  /** Kills by crash point, producers and consumers together. */
  killsBy: Record<string, number>;
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
  kind: 'producer' | 'consumer';
  id: string;
  crashAt: string;
  logPath: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnChild(
  kind: 'producer' | 'consumer',
  config: ProducerChildConfig | ConsumerChildConfig,
  rng: () => number,
): Child {
  const script = join(here, `crash-${kind}-child.ts`);
  const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(config)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
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
      if (signal !== 'SIGKILL') console.error(`crash child ${kind} exited ${code}: ${stderr}`);
      resolve({ code, signal });
    });
  });
  const id = 'id' in config ? config.id : config.logPath;
  return { kind, id, crashAt: config.crashAt, logPath: config.logPath, exit };
}

/** What the children's logs say, gathered round after round. */
interface Logs {
  calls: ProducedCall[];
  events: ConsumerEvent[];
  manifestDuplicates: string[];
}

/** Adds the logs of one round's children (the consumer's events in order). */
async function readLogs(children: readonly Child[], logs: Logs): Promise<void> {
  const { calls, events, manifestDuplicates } = logs;
  for (const child of children) {
    const text = await readFile(child.logPath, 'utf8').catch(() => '');
    const lines = text.split('\n').filter((l) => l.length > 0);
    if (child.kind === 'producer') {
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
          });
        } else if (tag === 'A') {
          events.push({ kind: 'acked', consumer: name, through: Number(a) });
        }
      }
    }
  }
}

/** Runs the rounds, drains, collects, and checks. It does not assert. */
export async function runCrashRounds(options: CrashRoundsOptions): Promise<CrashRoundsResult> {
  const started = performance.now();
  const rng = mulberry32(options.seed);
  const dir = await mkdtemp(join(tmpdir(), 'spillway-crash-logs-'));
  const logs: Logs = { calls: [], events: [], manifestDuplicates: [] };
  const roundViolations: string[] = [];
  let roundsChecked = 0;
  const killsBy: Record<string, number> = {};
  const unexpectedExits: string[] = [];
  let producerKills = 0;
  let consumerKills = 0;
  try {
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
          },
          rng,
        ),
      );
      for (const child of round) {
        const { signal, code } = await child.exit;
        if (signal === 'SIGKILL') {
          killsBy[child.crashAt] = (killsBy[child.crashAt] ?? 0) + 1;
          if (child.kind === 'producer') producerKills++;
          else consumerKills++;
        } else {
          unexpectedExits.push(`${child.kind} ${child.logPath} exited ${code}`);
        }
      }
      // After every round of kills: everything but "lost" must already hold (what is
      // still queued is delivered by a later round or the final drain).
      await readLogs(round, logs);
      const partial = checkInvariants({ ...logs, manifests: [], deletions: [] });
      for (const k of VIOLATIONS) {
        if (k !== 'lost') roundViolations.push(...partial[k].map((v) => `round ${r}: ${v}`));
      }
      roundsChecked++;
    }
    const { calls, events, manifestDuplicates } = logs;

    // A consumer here resumes after every kill and drains what is left.
    const final = await Consumer.open({ store: options.store, gcIntervalMs: 0 });
    for (;;) {
      const batch = await final.next();
      if (!batch) break;
      events.push({
        kind: 'delivered',
        consumer: 'final',
        sequence: batch.sequence,
        location: batch.location,
        entries: batch.entries.map(entryId),
      });
      await final.ack(batch.sequence);
    }
    await final.flush();
    events.push({ kind: 'acked', consumer: 'final', through: final.lastAckedSequence });
    await final.close();

    // Orphans: batch objects nobody received. GC keeps them within the grace period.
    const received = new Set(events.flatMap((e) => (e.kind === 'delivered' ? [e.location] : [])));
    let orphans = 0;
    for await (const m of options.store.list('ingest/'))
      if (m.key.endsWith('.batch') && !received.has(m.key)) orphans++;
    const withinGrace = await new GarbageCollector({ store: options.store }).run();
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
    await rm(dir, { recursive: true, force: true });
  }
}

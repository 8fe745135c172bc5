/**
 * Rounds of `process()` processes killed with SIGKILL. The queue is written
 * first, in batches of {@link BATCH_ENTRIES} entries (one `produce()` call
 * each), so kills land inside batches. Each round starts one child (see
 * crash-process-child.ts) on a subscription (in turn) that kills itself at
 * a chosen point, or is killed by this process at a random (seeded) moment;
 * the next child of that subscription resumes. After the rounds a child per
 * subscription drains the queue, and the dead-letter queue is read.
 *
 * The children's logs tell which entries each one was handed, which it
 * committed (or sent to the dead-letter queue) and which positions it wrote.
 * After every kill the resume position is checked against them: never before
 * a position written (nor, exactly-once, before an entry whose commit was
 * followed by a later hand-out), never past an entry not finished; and the
 * entries handed out again are counted against the delivery style's bound.
 * The invariant checker reads every log too, after each round and at the end.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Consumer,
  Producer,
  Queue,
  type Delivery,
  type Layout,
  type ObjectStore,
} from '../../src/index.ts';
import {
  checkInvariants,
  entryBytes,
  entryId,
  mulberry32,
  VIOLATIONS,
  type ConsumerEvent,
  type InvariantReport,
  type ProducedCall,
} from '../../src/testing.ts';
import type { ProcessChildConfig, ProcessCrashPoint } from './crash-process-child.ts';

/** Entries per batch (per `produce()` call). */
export const BATCH_ENTRIES = 20;
/** The one producer's name: entries are `p:0`, `p:1`, ... in position order. */
const PRODUCER = 'p';
/** Entries `p:n` with `n % 13 === 7` throw on every attempt. */
const POISON_EVERY = 13;
const POISON_AT = 7;
const MAX_ATTEMPTS = 2;
/** The dead-letter queue, beside the processed one on the same store. */
const DEAD_LETTERS = { manifestPath: 'dead/manifest', dataPathPrefix: 'dead' };
/** A child that neither reaches its crash point nor ends by then is killed and reported. */
const CHILD_DEADLINE_MS = 30_000;

/** A crash point of the child, or `'timer'`: killed by the parent after a random number of hand-outs. */
export type ProcessKill = ProcessCrashPoint | 'timer';

/** Options of {@link runProcessRounds}. */
export interface ProcessRoundsOptions {
  /** URL of the store, for the child processes. */
  url: string;
  /** The same store, opened in this process. */
  store: ObjectStore;
  layout: Layout;
  /** Subscriptions processed in turn (v1: one, the default), each with its delivery style. */
  subscriptions: readonly { name: string; delivery: Delivery }[];
  concurrency: number;
  /** At-least-once: entries between position records. @default 100 */
  commitEveryEntries?: number;
  /** Batches of {@link BATCH_ENTRIES} entries written before the rounds. */
  batches: number;
  /** Children killed (or caught up first), one per round. */
  rounds: number;
  /** Where each round's child dies, in turn. */
  kills: readonly ProcessKill[];
  seed: number;
}

/** What the rounds did and what the checks found. */
export interface ProcessRoundsResult {
  entries: number;
  poisonEntries: number;
  kills: number;
  killsBy: Record<string, number>;
  /** Kills whose last hand-out was inside a batch (neither its first nor its last entry). */
  killsInsideBatch: number;
  /** Children that caught up before their crash point. */
  ended: number;
  unexpectedExits: string[];
  /** Hand-outs of entries handed out before on the subscription (after kills). */
  redelivered: number;
  /** Most entries one kill left to be handed out again. */
  mostRedelivered: number;
  /** What the harness's own checks found, per session and kill (must be empty). */
  violations: string[];
  /** The checker's violations but "lost" after every round (must be empty). */
  roundViolations: string[];
  report: InvariantReport;
  deadLetters: number;
  /** Dead letters written more than once for one entry and subscription (a kill after the write). */
  repeatedDeadLetters: number;
  elapsedMs: number;
}

/** One line of a child's log. */
type Line =
  | { tag: 'H'; n: number; sequence: number; index: number; id: string; attempt: number }
  /** Committed, exhausted (to be dead-lettered), dead letter durable. */
  | { tag: 'C' | 'E' | 'X'; n: number; sequence: number; index: number; id: string }
  | { tag: 'W'; n: number }
  | { tag: 'END'; reason: string; n: number };

/** One child: a consumer session. */
interface Session {
  name: string;
  subscription: string;
  delivery: Delivery;
  kill: ProcessKill | 'none';
  killed: boolean;
  lines: Line[];
}

const ordinal = (sequence: number, index: number): number => sequence * BATCH_ENTRIES + index;
const isPoison = (n: number): boolean => n % POISON_EVERY === POISON_AT;

/** Runs the rounds, the drains and every check; see the file's comment. */
export async function runProcessRounds(
  options: ProcessRoundsOptions,
): Promise<ProcessRoundsResult> {
  const started = performance.now();
  const rng = mulberry32(options.seed);
  const dir = await mkdtemp(join(tmpdir(), 'spillway-process-crash-'));
  const v1 = options.layout === 'v1';
  const commitEveryEntries = options.commitEveryEntries ?? 100;
  const entries = options.batches * BATCH_ENTRIES;
  try {
    const calls = await produceAll(options.store, options.layout, options.batches);
    const sessions: Session[] = [];
    const violations: string[] = [];
    const roundViolations: string[] = [];
    const unexpectedExits: string[] = [];
    const killsBy: Record<string, number> = {};
    let kills = 0;
    let killsInsideBatch = 0;
    let ended = 0;
    let redelivered = 0;
    let mostRedelivered = 0;
    const last = new Map<string, Session>();
    /** The furthest entry handed out on each subscription so far. */
    const furthest = new Map<string, number>();

    const run = async (
      subscription: { name: string; delivery: Delivery },
      kill: ProcessKill | 'none',
    ): Promise<Session> => {
      const name = `s${sessions.length}-${subscription.name}`;
      const crashAfter = kill === 'after-dead-letter' ? 1 : 2 + Math.floor(rng() * 30);
      const config: ProcessChildConfig = {
        url: options.url,
        layout: options.layout,
        subscription: subscription.name,
        logPath: join(dir, `${name}.log`),
        delivery: subscription.delivery,
        concurrency: options.concurrency,
        commitEveryEntries,
        maxAttempts: MAX_ATTEMPTS,
        poisonEvery: POISON_EVERY,
        poisonAt: POISON_AT,
        deadLetters: DEAD_LETTERS,
        crashAfter,
        ...(kill === 'none' || kill === 'timer' ? {} : { crashAt: kill }),
      };
      const timer =
        kill === 'timer'
          ? { afterHandOuts: 1 + Math.floor(rng() * 25), delayMs: Math.floor(rng() * 4) }
          : undefined;
      const exit = await runChild(config, timer);
      const text = await readFile(config.logPath, 'utf8').catch(() => '');
      const session: Session = {
        name,
        subscription: subscription.name,
        delivery: subscription.delivery,
        kill,
        killed: exit.signal === 'SIGKILL',
        lines: parseLines(text),
      };
      const endLine = session.lines.find((l) => l.tag === 'END');
      if (session.killed && kill !== 'none') {
        kills++;
        killsBy[kill] = (killsBy[kill] ?? 0) + 1;
        const lastHand = session.lines.findLast((l) => l.tag === 'H');
        if (lastHand && lastHand.index > 0 && lastHand.index < BATCH_ENTRIES - 1) {
          killsInsideBatch++;
        }
      } else if (exit.code === 0 && endLine) {
        ended++;
      } else {
        unexpectedExits.push(`${name} exited ${exit.code ?? exit.signal}: ${exit.stderr}`);
      }
      violations.push(...checkSession(session, v1));
      const previous = last.get(subscription.name);
      if (previous) {
        const r = checkResume(previous, session, options, commitEveryEntries);
        violations.push(...r.violations);
        mostRedelivered = Math.max(mostRedelivered, r.again);
      }
      const before = furthest.get(subscription.name) ?? -1;
      for (const n of handOuts(session)) {
        if (n <= before) redelivered++;
        furthest.set(subscription.name, Math.max(n, furthest.get(subscription.name) ?? -1));
      }
      last.set(subscription.name, session);
      sessions.push(session);
      return session;
    };

    for (let r = 0; r < options.rounds; r++) {
      const subscription = options.subscriptions[
        r % options.subscriptions.length
      ] as ProcessRoundsOptions['subscriptions'][number];
      await run(subscription, options.kills[r % options.kills.length] as ProcessKill);
      const partial = checkInvariants({
        calls,
        events: events(sessions, v1),
        manifests: [],
        deletions: [],
      });
      for (const k of VIOLATIONS) {
        if (k !== 'lost') roundViolations.push(...partial[k].map((v) => `round ${r}: ${v}`));
      }
    }

    // A child per subscription drains what is left, unharmed.
    for (const subscription of options.subscriptions) {
      const drain = await run(subscription, 'none');
      const end = drain.lines.find((l) => l.tag === 'END');
      if (end?.tag !== 'END' || end.reason !== 'end' || end.n !== entries) {
        violations.push(`${drain.name}: the drain ended ${JSON.stringify(end)}, not at ${entries}`);
      }
      const finished = new Set<number>();
      for (const s of sessions) {
        if (s.subscription !== subscription.name) continue;
        for (const l of s.lines) if (l.tag === 'C' || l.tag === 'X') finished.add(l.n);
      }
      for (let n = 0; n < entries; n++) {
        if (!finished.has(n))
          violations.push(`[${subscription.name}] ${PRODUCER}:${n} never finished`);
      }
    }

    const letters = await readDeadLetters(options.store);
    let repeatedDeadLetters = 0;
    for (const subscription of options.subscriptions) {
      const exhausted = new Map<number, number>();
      for (const s of sessions) {
        if (s.subscription !== subscription.name) continue;
        for (const l of s.lines)
          if (l.tag === 'E') exhausted.set(l.n, (exhausted.get(l.n) ?? 0) + 1);
      }
      for (let n = 0; n < entries; n++) {
        const count = letters.get(`${subscription.name} ${n}`) ?? 0;
        const tries = exhausted.get(n) ?? 0;
        if (isPoison(n) && count === 0) {
          violations.push(
            `[${subscription.name}] ${PRODUCER}:${n} is not in the dead-letter queue`,
          );
        } else if (count > tries) {
          violations.push(
            `[${subscription.name}] ${PRODUCER}:${n} is ${count} times in the dead-letter queue, exhausted ${tries} times`,
          );
        }
        if (count > 1) repeatedDeadLetters += count - 1;
      }
    }
    for (const key of letters.keys()) {
      const [sub, n] = key.split(' ');
      if (!options.subscriptions.some((s) => s.name === sub) || !isPoison(Number(n))) {
        violations.push(`a dead letter that should not be there: ${key}`);
      }
    }

    return {
      entries,
      poisonEntries: Array.from({ length: entries }, (_, n) => n).filter(isPoison).length,
      kills,
      killsBy,
      killsInsideBatch,
      ended,
      unexpectedExits,
      redelivered,
      mostRedelivered,
      violations,
      roundViolations,
      report: checkInvariants({
        calls,
        events: events(sessions, v1),
        manifests: [],
        deletions: [],
      }),
      deadLetters: [...letters.values()].reduce((a, b) => a + b, 0),
      repeatedDeadLetters,
      elapsedMs: Math.round(performance.now() - started),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Writes `batches` batches of {@link BATCH_ENTRIES} entries, one `produce()` call each. */
async function produceAll(
  store: ObjectStore,
  layout: Layout,
  batches: number,
): Promise<ProducedCall[]> {
  const producer = new Producer({ store, layout, flushIntervalMs: 0, instanceId: PRODUCER });
  const calls: ProducedCall[] = [];
  for (let b = 0; b < batches; b++) {
    const first = b * BATCH_ENTRIES;
    const call: ProducedCall = {
      producer: PRODUCER,
      first,
      count: BATCH_ENTRIES,
      outcome: 'unknown',
    };
    calls.push(call);
    const handle = await producer.produce(
      Array.from({ length: BATCH_ENTRIES }, (_, k) => entryBytes(PRODUCER, first + k)),
    );
    const { sequence } = await handle.durable;
    if (sequence !== b) throw new Error(`batch ${b} was appended as sequence ${sequence}`);
    call.outcome = 'resolved';
  }
  await producer.close();
  return calls;
}

/**
 * Runs one child until it exits: killed by itself at its crash point, by
 * this process (`timer`: after that many hand-outs, then a few ms more), at
 * the deadline, or ended on its own.
 */
async function runChild(
  config: ProcessChildConfig,
  timer: { afterHandOuts: number; delayMs: number } | undefined,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const script = join(new URL('.', import.meta.url).pathname, 'crash-process-child.ts');
  const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(config)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const deadline = setTimeout(() => child.kill('SIGKILL'), CHILD_DEADLINE_MS);
  let handOuts = 0;
  let pending = '';
  let shot: NodeJS.Timeout | undefined;
  child.stdout.on('data', (d: Buffer) => {
    pending += d.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      if (line !== 'H' || !timer || shot) continue;
      if (++handOuts === timer.afterHandOuts) {
        shot = setTimeout(() => child.kill('SIGKILL'), timer.delayMs);
      }
    }
  });
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      clearTimeout(deadline);
      clearTimeout(shot);
      resolve({ code, signal, stderr: stderr.slice(-2000) });
    });
  });
}

function parseLines(text: string): Line[] {
  const out: Line[] = [];
  for (const raw of text.split('\n')) {
    // A line cut short by the kill is not a line.
    const [tag, a, b, c, d] = raw.split(' ');
    if (tag === 'H' && d !== undefined) {
      const sequence = Number(a);
      const index = Number(b);
      const id = c as string;
      out.push({ tag, n: idNumber(id), sequence, index, id, attempt: Number(d) });
    } else if ((tag === 'C' || tag === 'E' || tag === 'X') && c !== undefined) {
      out.push({ tag, n: idNumber(c), sequence: Number(a), index: Number(b), id: c });
    } else if (tag === 'W' && b !== undefined) {
      out.push({ tag, n: ordinal(Number(a), Number(b)) });
    } else if (tag === 'END' && c !== undefined) {
      out.push({ tag, reason: a as string, n: ordinal(Number(b), Number(c)) });
    }
  }
  return out;
}

/** The entries a session was handed (first attempts), in order. */
function handOuts(s: Session): number[] {
  return s.lines.flatMap((l) => (l.tag === 'H' && l.attempt === 1 ? [l.n] : []));
}

function idNumber(id: string): number {
  return Number(id.slice(id.lastIndexOf(':') + 1));
}

/**
 * One session's log on its own: positions match the entries, hand-outs are
 * consecutive, retries and commits follow their hand-out, poison entries
 * (only) are exhausted, and written positions never move back. In the
 * exactly-once styles, every entry finished is recorded before the next is
 * handed out (on v1: every batch wholly finished, before the next batch's
 * entries): whether or not a kill lands there.
 */
function checkSession(s: Session, v1: boolean): string[] {
  const out: string[] = [];
  const at = (l: { n: number; sequence: number; index: number; id: string }): boolean =>
    l.id === `${PRODUCER}:${l.n}` && ordinal(l.sequence, l.index) === l.n;
  let previous: number | undefined;
  let written = -1;
  const attempts = new Map<number, number>();
  const finished = new Set<number>();
  const exhausted = new Set<number>();
  /** The first entry that must be recorded by now (exactly-once). */
  let due: number | undefined;
  for (const l of s.lines) {
    if (l.tag === 'H' || l.tag === 'C' || l.tag === 'E' || l.tag === 'X') {
      if (!at(l)) out.push(`${s.name}: ${l.id} at ${l.sequence}:${l.index}`);
    }
    if (l.tag === 'H') {
      if (l.attempt === 1) {
        due = mustBeRecorded(due ?? written, finished, l.n, v1);
        if (s.delivery !== 'at-least-once' && written < due) {
          out.push(
            `${s.name}: ${l.id} handed out while ${PRODUCER}:${written} to ${PRODUCER}:${due - 1} were finished and not recorded (position written: ${written})`,
          );
        }
        if (previous !== undefined && l.n !== previous + 1) {
          out.push(`${s.name}: handed out ${l.id} after ${PRODUCER}:${previous}`);
        }
        previous = l.n;
      } else if (attempts.get(l.n) !== l.attempt - 1 || finished.has(l.n)) {
        out.push(`${s.name}: attempt ${l.attempt} of ${l.id} out of turn`);
      }
      attempts.set(l.n, l.attempt);
    } else if (l.tag === 'C' || l.tag === 'E' || l.tag === 'X') {
      if (!attempts.has(l.n) || finished.has(l.n)) {
        out.push(`${s.name}: ${l.tag} ${l.id} without its hand-out, or after it finished`);
      }
      if ((l.tag !== 'C') !== isPoison(l.n)) out.push(`${s.name}: ${l.tag} ${l.id}`);
      if (l.tag === 'E' && attempts.get(l.n) !== MAX_ATTEMPTS) {
        out.push(`${s.name}: ${l.id} exhausted at attempt ${attempts.get(l.n)}`);
      }
      if (l.tag === 'X' && !exhausted.has(l.n))
        out.push(`${s.name}: ${l.id} dead-lettered, not exhausted`);
      if (l.tag === 'E') exhausted.add(l.n);
      else finished.add(l.n);
    } else if (l.tag === 'W') {
      if (l.n < written) out.push(`${s.name}: the position went back to ${l.n} from ${written}`);
      written = l.n;
    }
  }
  return out;
}

/**
 * A kill and the resume after it: `next` (the next session of the same
 * subscription) resumes at the position it found written, which must lie
 * between what `prev` had recorded (its last position written seen; in the
 * exactly-once styles also every entry whose commit was followed by a later
 * hand-out) and its first entry not finished; on a v1 queue, at a batch's
 * start. The entries handed out again are bounded by the delivery style.
 */
function checkResume(
  prev: Session,
  next: Session,
  o: ProcessRoundsOptions,
  commitEveryEntries: number,
): { violations: string[]; again: number } {
  const out: string[] = [];
  const v1 = o.layout === 'v1';
  const where = `${prev.name} (${prev.kill}) -> ${next.name}`;
  const writes = (s: Session): number[] => s.lines.flatMap((l) => (l.tag === 'W' ? [l.n] : []));
  const resume = writes(next)[0];
  const from = writes(prev)[0];
  if (resume === undefined || from === undefined) {
    return { violations: [`${where}: a session wrote no position on opening`], again: 0 };
  }
  const firstHandOut = handOuts(next)[0];
  if (firstHandOut !== undefined && firstHandOut !== resume) {
    out.push(`${where}: opened at ${resume} but handed out ${firstHandOut} first`);
  }
  // Lower bound: what prev is known to have recorded.
  let lo = Math.max(...writes(prev));
  if (prev.delivery !== 'at-least-once') lo = Math.max(lo, provenPrefix(prev, from, v1));
  // Upper bound: prev's first entry not finished (on v1, the start of its batch).
  const finished = new Set(
    prev.lines.flatMap((l) => (l.tag === 'C' || l.tag === 'X' ? [l.n] : [])),
  );
  let hi = from;
  while (finished.has(hi)) hi++;
  if (v1) hi -= hi % BATCH_ENTRIES;
  if (resume < lo || resume > hi) {
    out.push(`${where}: resumed at ${resume}, expected from ${lo} to ${hi}`);
  }
  if (v1 && resume % BATCH_ENTRIES !== 0) out.push(`${where}: resumed inside a batch on v1`);
  // The kill leaves prev's entries from the resume position on to be handed out again.
  const lastHandOut = handOuts(prev).at(-1);
  const again = lastHandOut !== undefined && lastHandOut >= resume ? lastHandOut - resume + 1 : 0;
  const bound = v1
    ? BATCH_ENTRIES + o.concurrency - 1
    : prev.delivery === 'at-least-once'
      ? commitEveryEntries + o.concurrency
      : o.concurrency;
  if (again > bound) {
    out.push(`${where}: ${again} entries to be handed out again, more than ${bound}`);
  }
  return { violations: out, again };
}

/**
 * The first entry not proven recorded by `s`, which opened at `from`: every
 * entry finished before a later hand-out in the session is (on v1: every
 * batch wholly finished before a hand-out in a later batch).
 */
function provenPrefix(s: Session, from: number, v1: boolean): number {
  let next = from;
  const finished = new Set<number>();
  for (const l of s.lines) {
    if (l.tag === 'C' || l.tag === 'X') finished.add(l.n);
    if (l.tag === 'H' && l.attempt === 1) next = mustBeRecorded(next, finished, l.n, v1);
  }
  return next;
}

/**
 * Exactly-once: the position that must be recorded when entry `handOut` is
 * handed out, `next` being the one before: past every entry finished from
 * there on (on v1, past the whole batches finished before `handOut`'s).
 */
function mustBeRecorded(
  next: number,
  finished: ReadonlySet<number>,
  handOut: number,
  v1: boolean,
): number {
  let p = next;
  while (finished.has(p)) p++;
  if (v1) {
    p = Math.min(p, handOut - (handOut % BATCH_ENTRIES));
    p -= p % BATCH_ENTRIES;
  }
  return Math.max(next, p);
}

/** The sessions' logs as the invariant checker's events, in order. */
function events(sessions: readonly Session[], v1: boolean): ConsumerEvent[] {
  const out: ConsumerEvent[] = [];
  for (const s of sessions) {
    const subscription = v1 ? {} : { subscription: s.subscription };
    const promise = s.delivery === 'at-least-once' ? 'none' : v1 ? 'batch' : 'entry';
    for (const l of s.lines) {
      const base = { consumer: s.name, ...subscription };
      if (l.tag === 'H') {
        out.push({
          kind: 'handed-out',
          ...base,
          sequence: l.sequence,
          index: l.index,
          entry: l.id,
          attempt: l.attempt,
        });
      } else if (l.tag === 'C' || l.tag === 'X') {
        out.push({
          kind: 'committed',
          ...base,
          sequence: l.sequence,
          index: l.index,
          entry: l.id,
          outcome: l.tag === 'C' ? 'commit' : 'dead-letter',
          promise,
        });
      }
    }
  }
  return out;
}

/** Dead letters by `"{subscription} {n}"`, each checked against its record. */
async function readDeadLetters(store: ObjectStore): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const consumer = await Consumer.open({
    queue: Queue.open({ store, ...DEAD_LETTERS }),
    gcIntervalMs: 0,
  });
  try {
    for (;;) {
      const batch = await consumer.next();
      if (!batch) break;
      batch.entries.forEach((bytes, k) => {
        const id = entryId(bytes);
        const meta = batch.metadata.findLast((m) => m.startIndex <= k);
        const record = JSON.parse(new TextDecoder().decode(meta?.payload)) as {
          subscription: string;
          sequence: number;
          index: number;
        };
        const n = idNumber(id);
        // A record that names another position than the entry's counts as a stray letter.
        const key =
          ordinal(record.sequence, record.index) === n
            ? `${record.subscription} ${n}`
            : `${record.subscription} ${id}@${record.sequence}:${record.index}`;
        out.set(key, (out.get(key) ?? 0) + 1);
      });
      await consumer.ack(batch.sequence);
    }
  } finally {
    await consumer.close();
  }
  return out;
}

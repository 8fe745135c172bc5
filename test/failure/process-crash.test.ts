/**
 * Crash tests of `Consumer.process()` with real processes, on file:// and on
 * Ceph RGW: processes handling entries one by one are killed with SIGKILL at
 * chosen points (an entry handed out; right after the handler returned
 * `'commit'`; before and after a position write, between two entries; after
 * a dead letter became durable) and at random moments, inside batches of
 * 20 entries. The next process resumes; at the end one drains.
 *
 * Exactly-once (log layout): every entry is committed, an entry comes again
 * only if it was in flight when its process was killed (at most
 * `concurrency` per kill), and the resume position is the first entry not
 * committed. On a v1 queue the same holds for whole batches. At-least-once:
 * at most `commitEveryEntries + concurrency` entries come again per kill,
 * nothing is lost. Entries whose handler throws every time are in the
 * dead-letter queue (at least once, at most once per exhaustion), every
 * other entry is committed; the invariant checker reads every log.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { openStore } from '../../src/index.ts';
import { assertInvariants } from '../../src/testing.ts';
import {
  createTestBucket,
  deleteTestBucket,
  reportMissingServer,
  s3Endpoint,
} from '../support/servers.ts';
import {
  runProcessRounds,
  type ProcessKill,
  type ProcessRoundsOptions,
  type ProcessRoundsResult,
} from './process-rounds.ts';

/** Every kill, in the order rounds take them. */
const ALL_KILLS: ProcessKill[] = [
  'handed-out',
  'after-commit',
  'before-position-write',
  'after-position-write',
  'after-dead-letter',
  'timer',
];

type Scenario = Omit<ProcessRoundsOptions, 'url' | 'store'> & { name: string };

function check(result: ProcessRoundsResult, s: Scenario, context: string): void {
  assert.deepEqual(result.violations, [], 'positions are recorded and resumed where they must be');
  assertInvariants(result.report, context);
  assert.deepEqual(result.roundViolations, [], 'the checker passes after every round');
  assert.deepEqual(result.unexpectedExits, []);
  assert.equal(result.kills + result.ended, s.rounds + s.subscriptions.length);
  assert.ok(result.kills >= s.rounds - 1, `only ${result.kills} of ${s.rounds} children killed`);
  for (const kill of s.kills) {
    assert.ok((result.killsBy[kill] ?? 0) > 0, `no child killed at ${kill}`);
  }
  assert.ok(result.killsInsideBatch > 0, 'some kills landed inside a batch');
  assert.ok(result.redelivered > 0, 'some entries in flight came again');
  assert.equal(result.report.handedOutAgain, result.redelivered, 'the checker counts the same');
  // Every entry committed (or dead-lettered) by every subscription: nothing lost.
  assert.equal(result.report.committedEntries, result.entries);
  assert.ok(result.deadLetters >= result.poisonEntries * s.subscriptions.length);
  if (s.layout === 'v1') {
    assert.ok(
      result.mostRedelivered > s.concurrency,
      'on v1, a kill inside a batch delivers its finished entries again',
    );
  }
}

function figures(result: ProcessRoundsResult, backend: string, s: Scenario): string {
  return `FIGURES ${JSON.stringify({
    suite: 'process-crash',
    backend,
    scenario: s.name,
    kills: result.kills,
    ended: result.ended,
    killsBy: result.killsBy,
    killsInsideBatch: result.killsInsideBatch,
    entries: result.entries,
    handedOutAgain: result.report.handedOutAgain,
    redelivered: result.redelivered,
    mostRedelivered: result.mostRedelivered,
    deadLetters: result.deadLetters,
    repeatedDeadLetters: result.repeatedDeadLetters,
    elapsedMs: result.elapsedMs,
  })}`;
}

const FILE: Scenario[] = [
  {
    name: 'log, exactly-once on two subscriptions (one global), concurrency 1',
    layout: 'log',
    subscriptions: [
      { name: 'default', delivery: 'global-exactly-once' },
      { name: 'audit', delivery: 'exactly-once' },
    ],
    concurrency: 1,
    batches: 10,
    rounds: 12,
    kills: ALL_KILLS,
    seed: 11,
  },
  {
    name: 'log, exactly-once, concurrency 4',
    layout: 'log',
    subscriptions: [{ name: 'default', delivery: 'exactly-once' }],
    concurrency: 4,
    batches: 10,
    rounds: 6,
    kills: ALL_KILLS,
    seed: 12,
  },
  {
    name: 'log, at-least-once every 7 entries, concurrency 2',
    layout: 'log',
    subscriptions: [{ name: 'default', delivery: 'at-least-once' }],
    concurrency: 2,
    commitEveryEntries: 7,
    batches: 10,
    rounds: 6,
    kills: ALL_KILLS,
    seed: 13,
  },
  {
    name: 'v1, exactly-once (whole batches), concurrency 1',
    layout: 'v1',
    subscriptions: [{ name: 'default', delivery: 'exactly-once' }],
    concurrency: 1,
    batches: 8,
    rounds: 6,
    kills: ALL_KILLS,
    seed: 14,
  },
];

const S3: Scenario[] = [
  {
    name: 'log, exactly-once on two subscriptions, concurrency 1',
    layout: 'log',
    subscriptions: [
      { name: 'default', delivery: 'exactly-once' },
      { name: 'audit', delivery: 'exactly-once' },
    ],
    concurrency: 1,
    batches: 6,
    rounds: 6,
    kills: ALL_KILLS,
    seed: 20,
  },
  {
    name: 'log, exactly-once, concurrency 4',
    layout: 'log',
    subscriptions: [{ name: 'default', delivery: 'exactly-once' }],
    concurrency: 4,
    batches: 10,
    rounds: 6,
    kills: ALL_KILLS,
    seed: 21,
  },
  {
    name: 'v1, exactly-once (whole batches), concurrency 1',
    layout: 'v1',
    subscriptions: [{ name: 'default', delivery: 'exactly-once' }],
    concurrency: 1,
    batches: 6,
    rounds: 3,
    kills: ['handed-out', 'before-position-write', 'timer'],
    seed: 22,
  },
];

describe('process() crash tests on file://', () => {
  for (const s of FILE) {
    test(`${s.name}: processes killed with SIGKILL lose nothing and repeat only what was in flight`, async (t) => {
      const dir = await mkdtemp(join(tmpdir(), 'spillway-process-crash-'));
      const store = openStore(`file://${dir}`);
      try {
        const result = await runProcessRounds({ ...s, url: `file://${dir}`, store });
        t.diagnostic(figures(result, 'file', s));
        check(result, s, `process() crash rounds on file://, ${s.name}`);
      } finally {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      }
    });
  }
});

const endpoint = s3Endpoint();
if (!endpoint) {
  reportMissingServer(
    'process() crash tests on s3',
    's3',
    'Run `npm test`, which starts Ceph RGW.',
  );
} else {
  describe('process() crash tests on s3 (Ceph RGW)', () => {
    for (const s of S3) {
      test(`${s.name}: processes killed with SIGKILL lose nothing and repeat only what was in flight`, async (t) => {
        const bucket = await createTestBucket(endpoint, 'process-crash');
        const url = `s3://${bucket}?endpoint=${encodeURIComponent(endpoint)}`;
        const store = openStore(url);
        try {
          const result = await runProcessRounds({ ...s, url, store });
          t.diagnostic(figures(result, 's3 (Ceph RGW)', s));
          check(result, s, `process() crash rounds on s3, ${s.name}`);
        } finally {
          await store.close();
          await deleteTestBucket(endpoint, bucket);
        }
      });
    }
  });
}

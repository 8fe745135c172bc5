/**
 * Crash tests with real processes, in both layouts, on file:// and on Ceph
 * RGW: producers and consumers killed with SIGKILL at random moments and at
 * chosen points (between a batch upload and its append, around the append's
 * write (a manifest write, or a commit create), between a commit read and
 * the cursor write, around an ack flush), and on the log layout collector
 * processes killed after moving the boundary and between their deletes.
 * After the kills a consumer resumes and drains (every subscription), and the
 * invariant checker must pass; orphaned batch objects survive a collection
 * within the grace period and go after it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { openStore, type Layout } from '../../src/index.ts';
import {
  createTestBucket,
  deleteTestBucket,
  reportMissingServer,
  s3Endpoint,
} from '../support/servers.ts';
import { runCrashRounds, type CrashRoundsResult } from './crash-rounds.ts';
import { assertInvariants } from '../../src/testing.ts';

function check(
  result: CrashRoundsResult,
  backend: string,
  layout: Layout,
  producerKills: number,
): void {
  assertInvariants(result.report, `crash rounds on ${backend}, ${layout} layout`);
  assert.deepEqual(result.unexpectedExits, []);
  assert.deepEqual(result.roundViolations, [], 'the checker passes after every round of kills');
  assert.ok(result.roundsChecked > 0);
  assert.deepEqual(result.manifestDuplicates, []);
  assert.deepEqual(result.collectorErrors, []);
  assert.ok(result.producerKills >= producerKills, `only ${result.producerKills} producer kills`);
  for (const point of [
    'after-batch-upload',
    'before-manifest-write',
    'after-manifest-write',
    'after-fetch',
    'before-ack-write',
    'after-ack-write',
    'timer',
  ]) {
    assert.ok((result.killsBy[point] ?? 0) > 0, `no kill at ${point}`);
  }
  if (layout === 'log') {
    for (const point of ['after-boundary-write', 'mid-delete']) {
      assert.ok((result.collectorHits[point] ?? 0) > 0, `no collector killed at ${point}`);
    }
  }
  assert.ok(result.report.resolvedEntries > 0, 'some entries became durable');
  assert.ok(result.orphans > 0, 'killed producers left orphaned batch objects');
  if (layout === 'v1') {
    assert.equal(
      result.deletedAfterGrace,
      result.keptWithinGrace,
      'GC took every orphan after the grace period',
    );
  } else {
    // A log collection also takes collected commits and their batch objects.
    assert.ok(
      result.deletedAfterGrace >= result.orphans,
      'GC took every orphan after the grace period',
    );
  }
  assert.equal(result.objectsLeft, 0);
}

function figures(result: CrashRoundsResult, backend: string, layout: Layout): string {
  const r = result.report;
  return `FIGURES ${JSON.stringify({ suite: 'crash', backend, layout, producerKills: result.producerKills, consumerKills: result.consumerKills, killsBy: result.killsBy, collectorHits: result.collectorHits, calls: r.calls, entries: r.entries, resolved: r.resolvedEntries, unknown: r.unknownEntries, delivered: r.deliveredEntries, deliveredWithoutResolve: r.deliveredWithoutResolve, redeliveredBatches: r.redeliveredBatches, redeliveredEntries: r.redeliveredEntries, orphans: result.orphans, collectedAfterGrace: result.deletedAfterGrace, lost: r.lost.length, duplicated: r.duplicated.length, elapsedMs: result.elapsedMs })}`;
}

for (const layout of ['v1', 'log'] as Layout[]) {
  describe(`crash tests on file://, ${layout} layout`, () => {
    test('100 producer and 25 consumer processes killed with SIGKILL: nothing durable lost, nothing acked delivered twice', async (t) => {
      const dir = await mkdtemp(join(tmpdir(), 'spillway-crash-'));
      const store = openStore(`file://${dir}`);
      try {
        const result = await runCrashRounds({
          url: `file://${dir}`,
          store,
          rounds: 25,
          producersPerRound: 4,
          seed: 7,
          layout,
        });
        t.diagnostic(figures(result, 'file', layout));
        check(result, 'file', layout, 100);
        // Temporary files of writes cut short are removed when the store next starts.
        const reopened = openStore(`file://${dir}`);
        await reopened.head('ingest/manifest').catch(() => undefined);
        await reopened.close();
        const left = await readdir(join(dir, '.spillway', 'tmp')).catch(() => []);
        assert.deepEqual(left, []);
      } finally {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe(`crash tests on lmdb://, ${layout} layout`, () => {
    test('48 producer and 12 consumer processes killed with SIGKILL: nothing durable lost, nothing acked delivered twice', async (t) => {
      const dir = await mkdtemp(join(tmpdir(), 'spillway-crash-lmdb-'));
      const url = `lmdb://${dir}`;
      const store = openStore(url);
      try {
        const result = await runCrashRounds({
          url,
          store,
          // Log: more rounds, fewer producers each, as every third round's collector is to be
          // killed right after a boundary write, which needs commits aged past its grace period.
          rounds: layout === 'log' ? 24 : 12,
          producersPerRound: layout === 'log' ? 2 : 4,
          seed: 11,
          layout,
        });
        t.diagnostic(figures(result, 'lmdb', layout));
        check(result, 'lmdb', layout, 48);
      } finally {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  const endpoint = s3Endpoint();
  if (!endpoint) {
    reportMissingServer(
      `crash tests on s3, ${layout} layout`,
      's3',
      'Run `npm test`, which starts Ceph RGW.',
    );
  } else {
    describe(`crash tests on s3 (Ceph RGW), ${layout} layout`, () => {
      test('20 producer and 7 consumer processes killed with SIGKILL: nothing durable lost, nothing acked delivered twice', async (t) => {
        const bucket = await createTestBucket(endpoint, 'crash');
        const url = `s3://${bucket}?endpoint=${encodeURIComponent(endpoint)}`;
        const store = openStore(url);
        try {
          const result = await runCrashRounds({
            url,
            store,
            rounds: 7,
            producersPerRound: 3,
            seed: 9,
            layout,
          });
          t.diagnostic(figures(result, 's3 (Ceph RGW)', layout));
          check(result, 's3 (Ceph RGW)', layout, 20);
        } finally {
          await store.close();
          await deleteTestBucket(endpoint, bucket);
        }
      });
    });
  }
}

/**
 * Seeded fault storms over memory, file:// and Ceph RGW: random transient
 * errors, latency spikes, racing writers and lost responses on every
 * operation, consumer crashes and restarts, garbage collection; then the
 * invariant checker. A failing run prints its seed; replay it with
 * SPILLWAY_STORM_SEED=<seed>.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { MemoryStore, openStore } from '../../src/index.ts';
import {
  createTestBucket,
  deleteTestBucket,
  reportMissingServer,
  s3Endpoint,
  uniqueName,
} from '../support/servers.ts';
import { assertInvariants } from '../../src/testing.ts';
import { runStorm, type StormResult } from './storm.ts';

const replay = process.env.SPILLWAY_STORM_SEED
  ? [Number(process.env.SPILLWAY_STORM_SEED)]
  : undefined;

function check(result: StormResult, backend: string): void {
  const context = `storm on ${backend}, seed ${result.seed} (replay with SPILLWAY_STORM_SEED=${result.seed})`;
  assertInvariants(result.report, context);
  assert.equal(result.report.lost.length, 0);
  assert.equal(result.objectsLeft, 0, `${context}: batch objects left after a grace-0 collection`);
  assert.ok(result.report.calls >= 1, context);
}

function figures(result: StormResult, backend: string): string {
  const r = result.report;
  return `FIGURES ${JSON.stringify({ suite: 'storm', backend, seed: result.seed, calls: r.calls, entries: r.entries, resolved: r.resolvedEntries, rejected: r.rejectedEntries, rejections: result.rejections, operations: result.operations, ...result.faults, consumerSessions: result.consumerSessions, redeliveredBatches: r.redeliveredBatches, manifestWrites: result.manifestWrites, collected: result.batchesCollected, maxFlushMs: result.maxFlushMs, lost: r.lost.length, duplicated: r.duplicated.length, elapsedMs: result.elapsedMs })}`;
}

describe('fault storm over memory', () => {
  for (const seed of replay ?? [11, 23, 37]) {
    test(`seed ${seed}: 10,000 produce() calls, nothing lost, nothing duplicated, order kept`, async (t) => {
      const name = uniqueName('storm');
      try {
        const result = await runStorm({ store: new MemoryStore(name), seed, calls: 10_000 });
        t.diagnostic(figures(result, 'memory'));
        check(result, 'memory');
        assert.ok(result.faults.errors > 0 && result.faults.appliedThenFailed > 0);
        assert.ok(result.faults.conflicts > 0 && result.faults.delays > 0);
      } finally {
        MemoryStore.drop(name);
      }
    });
  }
});

describe('fault storm over file://', () => {
  for (const seed of replay ?? [41]) {
    test(`seed ${seed}: 10,000 produce() calls, nothing lost, nothing duplicated, order kept`, async (t) => {
      const dir = await mkdtemp(join(tmpdir(), 'spillway-storm-'));
      try {
        const result = await runStorm({ store: openStore(`file://${dir}`), seed, calls: 10_000 });
        t.diagnostic(figures(result, 'file'));
        check(result, 'file');
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }
});

const endpoint = s3Endpoint();
if (!endpoint) {
  reportMissingServer('fault storm over s3', 's3', 'Run `npm test`, which starts Ceph RGW.');
} else {
  describe('fault storm over s3 (Ceph RGW)', () => {
    for (const seed of replay ?? [53]) {
      test(`seed ${seed}: 2,000 produce() calls, nothing lost, nothing duplicated, order kept`, async (t) => {
        const bucket = await createTestBucket(endpoint, 'storm');
        const store = openStore(`s3://${bucket}?endpoint=${encodeURIComponent(endpoint)}`);
        try {
          const result = await runStorm({ store, seed, calls: 2_000 });
          t.diagnostic(figures(result, 's3 (Ceph RGW)'));
          check(result, 's3 (Ceph RGW)');
        } finally {
          await store.close();
          await deleteTestBucket(endpoint, bucket);
        }
      });
    }
  });
}

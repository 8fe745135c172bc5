/**
 * Seeded fault storms over memory, file://, Ceph RGW and Azurite, in both
 * layouts: random transient
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
  azureConnectionString,
  createTestBucket,
  createTestContainer,
  deleteTestBucket,
  deleteTestContainer,
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

const layoutEnv = process.env.SPILLWAY_STORM_LAYOUT as 'v1' | 'log' | undefined;
/** Seeds per backend and layout; SPILLWAY_STORM_SEED (and SPILLWAY_STORM_LAYOUT) replay one. */
function seeds(layout: 'v1' | 'log', defaults: number[]): number[] {
  if (!replay) return defaults;
  return layoutEnv === undefined || layoutEnv === layout ? replay : [];
}

for (const layout of ['v1', 'log'] as const) {
  describe(`fault storm over memory, ${layout} layout`, () => {
    for (const seed of seeds(layout, layout === 'v1' ? [11, 23, 37] : [13, 29])) {
      test(`seed ${seed}: 10,000 produce() calls, nothing lost, nothing duplicated, order kept${layout === 'log' ? ', for each of two subscriptions' : ''}`, async (t) => {
        const name = uniqueName('storm');
        try {
          const result = await runStorm({
            store: new MemoryStore(name),
            seed,
            calls: 10_000,
            layout,
          });
          t.diagnostic(figures(result, `memory ${layout}`));
          check(result, `memory ${layout}`);
          assert.ok(result.faults.errors > 0 && result.faults.appliedThenFailed > 0);
          assert.ok(result.faults.conflicts > 0 && result.faults.delays > 0);
        } finally {
          MemoryStore.drop(name);
        }
      });
    }
  });

  describe(`fault storm over file://, ${layout} layout`, () => {
    for (const seed of seeds(layout, layout === 'v1' ? [41] : [43])) {
      test(`seed ${seed}: ${layout === 'v1' ? '10,000' : '5,000'} produce() calls, nothing lost, nothing duplicated, order kept`, async (t) => {
        const dir = await mkdtemp(join(tmpdir(), 'spillway-storm-'));
        try {
          const result = await runStorm({
            store: openStore(`file://${dir}`),
            seed,
            calls: layout === 'v1' ? 10_000 : 5_000,
            layout,
          });
          t.diagnostic(figures(result, `file ${layout}`));
          check(result, `file ${layout}`);
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      });
    }
  });
}

const endpoint = s3Endpoint();
if (!endpoint) {
  reportMissingServer('fault storm over s3', 's3', 'Run `npm test`, which starts Ceph RGW.');
} else {
  for (const layout of ['v1', 'log'] as const) {
    describe(`fault storm over s3 (Ceph RGW), ${layout} layout`, () => {
      for (const seed of seeds(layout, layout === 'v1' ? [53] : [59])) {
        test(`seed ${seed}: 2,000 produce() calls, nothing lost, nothing duplicated, order kept`, async (t) => {
          const bucket = await createTestBucket(endpoint, 'storm');
          const store = openStore(`s3://${bucket}?endpoint=${encodeURIComponent(endpoint)}`);
          try {
            const result = await runStorm({ store, seed, calls: 2_000, layout });
            t.diagnostic(figures(result, `s3 (Ceph RGW) ${layout}`));
            check(result, `s3 (Ceph RGW) ${layout}`);
          } finally {
            await store.close();
            await deleteTestBucket(endpoint, bucket);
          }
        });
      }
    });
  }
}

const azure = azureConnectionString();
if (!azure) {
  reportMissingServer('fault storm over az', 'azure', 'Run `npm test`, which starts Azurite.');
} else {
  for (const layout of ['v1', 'log'] as const) {
    describe(`fault storm over az (Azurite), ${layout} layout`, () => {
      for (const seed of seeds(layout, layout === 'v1' ? [61] : [67])) {
        test(`seed ${seed}: 1,000 produce() calls, nothing lost, nothing duplicated, order kept`, async (t) => {
          const container = await createTestContainer(azure, 'storm');
          const store = openStore(`az://${container}/q`);
          try {
            const result = await runStorm({ store, seed, calls: 1_000, layout });
            t.diagnostic(figures(result, `az (Azurite) ${layout}`));
            check(result, `az (Azurite) ${layout}`);
          } finally {
            await store.close();
            await deleteTestContainer(azure, container);
          }
        });
      }
    });
  }
}

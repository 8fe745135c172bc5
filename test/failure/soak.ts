/**
 * Soak mode: fault storms with fresh seeds, one after another, until the time
 * is up. Each run prints its figures; the first violation stops the soak with
 * its seed (replay it in the suite with SPILLWAY_STORM_SEED=<seed>).
 *
 *   npm run soak -- [--minutes 10] [--backend memory,file,s3] [--seed N] [--calls 10000]
 *
 * The s3 backend needs Ceph RGW: the soak starts it with scripts/rgw.sh when
 * SPILLWAY_TEST_S3_ENDPOINT is not set, and stops it at the end.
 */
import { startServer, stopServer } from '../../scripts/servers.mjs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { MemoryStore, openStore, type ObjectStore } from '../../src/index.ts';
import { createTestBucket } from '../support/servers.ts';
import { assertInvariants } from '../../src/testing.ts';
import { runStorm } from './storm.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    backend: { type: 'string', default: 'memory,file' },
    seed: { type: 'string' },
    calls: { type: 'string', default: '10000' },
  },
});
const minutes = Number(values.minutes);
const calls = Number(values.calls);
const backends = values.backend.split(',').map((b) => b.trim());
for (const b of backends) {
  if (!['memory', 'file', 's3'].includes(b)) {
    console.error(`soak: unknown backend "${b}"; expected memory, file or s3`);
    process.exit(2);
  }
}
if (!(minutes > 0) || !(calls > 0)) {
  console.error('soak: --minutes and --calls must be positive numbers');
  process.exit(2);
}
let seed = values.seed !== undefined ? Number(values.seed) : Date.now() % 1_000_000;
console.log(`soak: ${minutes} min over ${backends.join(', ')}, first seed ${seed}`);

let stopRgw = false;
if (backends.includes('s3') && !process.env.SPILLWAY_TEST_S3_ENDPOINT) {
  const r = startServer('rgw.sh');
  if (r.error !== undefined) {
    console.error(`soak: Ceph RGW did not start: ${r.error}`);
    process.exit(1);
  }
  Object.assign(process.env, r.env);
  stopRgw = true;
}
process.env.AWS_EC2_METADATA_DISABLED = 'true';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

async function open(backend: string): Promise<{ store: ObjectStore; done: () => Promise<void> }> {
  if (backend === 'memory') {
    const name = `soak-${seed}`;
    return { store: new MemoryStore(name), done: async () => MemoryStore.drop(name) };
  }
  if (backend === 'file') {
    const dir = await mkdtemp(join(tmpdir(), 'spillway-soak-'));
    const store = openStore(`file://${dir}`);
    return {
      store,
      done: () => store.close().then(() => rm(dir, { recursive: true, force: true })),
    };
  }
  const endpoint = process.env.SPILLWAY_TEST_S3_ENDPOINT as string;
  const bucket = await createTestBucket(endpoint, `soak-${seed}`);
  const store = openStore(`s3://${bucket}?endpoint=${encodeURIComponent(endpoint)}`);
  return { store, done: () => store.close() };
}

const deadline = Date.now() + minutes * 60_000;
let runs = 0;
let code = 0;
try {
  while (Date.now() < deadline) {
    for (const backend of backends) {
      const { store, done } = await open(backend);
      try {
        const result = await runStorm({
          store,
          seed,
          calls: backend === 's3' ? Math.min(calls, 2000) : calls,
        });
        const r = result.report;
        console.log(
          JSON.stringify({
            backend,
            seed,
            calls: r.calls,
            operations: result.operations,
            ...result.faults,
            consumerSessions: result.consumerSessions,
            redeliveredBatches: r.redeliveredBatches,
            lost: r.lost.length,
            duplicated: r.duplicated.length,
            elapsedMs: result.elapsedMs,
          }),
        );
        assertInvariants(r, `soak on ${backend}, seed ${seed}`);
        if (result.objectsLeft !== 0)
          throw new Error(
            `soak on ${backend}, seed ${seed}: ${result.objectsLeft} batch objects left`,
          );
        runs++;
      } finally {
        await done();
      }
      seed++;
    }
  }
  console.log(`soak: ${runs} storms passed`);
} catch (e) {
  console.error(String(e));
  code = 1;
} finally {
  if (stopRgw) stopServer('rgw.sh');
}
process.exit(code);

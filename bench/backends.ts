/**
 * The stores the benchmarks run on: memory, a fresh directory (a file per
 * object, or one LMDB file), and a fresh bucket on Ceph RGW (started with scripts/rgw.sh when no endpoint is set).
 */
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { startServer, stopServer } from '../scripts/servers.mjs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStore, openStore, type ObjectStore } from '../src/index.ts';

/** A backend name as the benchmarks report it. */
export type Backend = 'memory' | 'file' | 'lmdb' | 's3';

/** A fresh, empty store and how to remove it. */
export interface BenchStore {
  store: ObjectStore;
  url: string;
  /** The directory of a file or LMDB store. */
  dir?: string;
  dispose: () => Promise<void>;
}

let counter = 0;

/** Starts Ceph RGW unless SPILLWAY_TEST_S3_ENDPOINT is set; returns a stop function. */
export function ensureRgw(): () => void {
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  if (process.env.SPILLWAY_TEST_S3_ENDPOINT) return () => undefined;
  const r = startServer('rgw.sh');
  if (r.error !== undefined) throw new Error(`Ceph RGW did not start: ${r.error}`);
  Object.assign(process.env, r.env);
  return () => stopServer('rgw.sh');
}

/** Opens a fresh store on `backend`. */
export async function freshStore(backend: Backend): Promise<BenchStore> {
  const name = `bench-${process.pid}-${Date.now().toString(36)}-${counter++}`;
  if (backend === 'memory') {
    return {
      store: new MemoryStore(name),
      url: `memory://${name}`,
      dispose: async () => MemoryStore.drop(name),
    };
  }
  if (backend === 'file' || backend === 'lmdb') {
    const dir = await mkdtemp(join(process.env.SPILLWAY_BENCH_DIR ?? tmpdir(), 'spillway-bench-'));
    const url = `${backend}://${dir}`;
    const store = openStore(url);
    return {
      store,
      url,
      dir,
      dispose: async () => {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  const endpoint = process.env.SPILLWAY_TEST_S3_ENDPOINT as string;
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true });
  await client.send(new CreateBucketCommand({ Bucket: name }));
  client.destroy();
  const url = `s3://${name}?endpoint=${encodeURIComponent(endpoint)}`;
  const store = openStore(url);
  return { store, url, dispose: () => store.close() };
}

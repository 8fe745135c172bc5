/**
 * The stores a suite runs on: memory, a local folder, Ceph RGW (S3),
 * Azurite, and GCS on the in-process test server (test/support/gcs-test-server.ts),
 * each opened fresh and removed after. A server-backed target whose
 * server is missing is reported as a failing test (see `reportMissingServer`).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStore, openStore, type ObjectStore } from '../../src/index.ts';
import { sharedGcsTestServer } from './gcs-test-server.ts';
import {
  azureConnectionString,
  createTestBucket,
  createTestContainer,
  deleteTestBucket,
  deleteTestContainer,
  reportMissingServer,
  s3Endpoint,
  uniqueName,
} from './servers.ts';

/** A fresh store and how to remove it. */
export interface OpenedStore {
  store: ObjectStore;
  /** The URL the store was opened from (for child processes); memory has none. */
  url?: string;
  cleanup: () => Promise<void>;
}

/** One kind of store a suite runs on. */
export interface Backend {
  name: string;
  open: () => Promise<OpenedStore>;
}

const ALL: (Backend & { server?: 's3' | 'azure'; available: () => boolean })[] = [
  {
    name: 'memory',
    available: () => true,
    open: async () => {
      const name = uniqueName('mem');
      return { store: new MemoryStore(name), cleanup: async () => MemoryStore.drop(name) };
    },
  },
  {
    name: 'file',
    available: () => true,
    open: async () => {
      const dir = await mkdtemp(join(tmpdir(), 'spillway-backend-'));
      const url = `file://${dir}`;
      return {
        store: openStore(url),
        url,
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
  },
  {
    name: 's3 (Ceph RGW)',
    server: 's3',
    available: () => s3Endpoint() !== undefined,
    open: async () => {
      const endpoint = s3Endpoint() as string;
      const bucket = await createTestBucket(endpoint, 'be');
      const url = `s3://${bucket}/q?endpoint=${encodeURIComponent(endpoint)}`;
      return { store: openStore(url), url, cleanup: () => deleteTestBucket(endpoint, bucket) };
    },
  },
  {
    name: 'az (Azurite)',
    server: 'azure',
    available: () => azureConnectionString() !== undefined,
    open: async () => {
      const connection = azureConnectionString() as string;
      const container = await createTestContainer(connection, 'be');
      const url = `az://${container}/q`;
      return {
        store: openStore(url),
        url,
        cleanup: () => deleteTestContainer(connection, container),
      };
    },
  },
  {
    name: 'gs (GCS test server)',
    available: () => true,
    open: async () => {
      const server = await sharedGcsTestServer();
      const bucket = uniqueName('be').toLowerCase();
      server.createBucket(bucket);
      const url = `gs://${bucket}/q?endpoint=${encodeURIComponent(server.url)}`;
      return { store: openStore(url), url, cleanup: async () => server.deleteBucket(bucket) };
    },
  },
];

/**
 * The backends available to `suite`; each missing server is reported once as
 * a failing test naming the suite.
 */
export function backends(suite: string): Backend[] {
  const out: Backend[] = [];
  for (const b of ALL) {
    if (b.available()) out.push(b);
    else reportMissingServer(`${suite} on ${b.name}`, b.server as string, 'Run `npm test`.');
  }
  return out;
}

/** Runs `body` on a fresh store of `backend`, closing and removing it after. */
export async function onFreshStore<T>(
  backend: Backend,
  body: (opened: OpenedStore) => Promise<T>,
): Promise<T> {
  const opened = await backend.open();
  try {
    return await body(opened);
  } finally {
    await opened.store.close();
    await opened.cleanup();
  }
}

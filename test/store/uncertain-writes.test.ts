/**
 * Conditional writes whose outcome is lost, against the real servers behind a
 * misbehaving proxy: the adapters settle them by reading back, and report an
 * unknown outcome only when reading back cannot tell.
 */
import { BlobServiceClient } from '@azure/storage-blob';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  AzureStore,
  OutcomeUnknownError,
  PreconditionFailedError,
  S3Store,
  StorageError,
  type ObjectStore,
} from '../../src/index.ts';
import {
  createTestBucket,
  azureConnectionString,
  reportMissingServer,
  s3Endpoint,
  uniqueName,
} from '../support/servers.ts';
import { getOf, MisbehavingProxy, putOf } from './misbehaving-proxy.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const retry = { maxAttempts: 4, baseDelayMs: 1, maxDelayMs: 5 };

interface Target {
  name: string;
  upstream: () => string | undefined;
  /** A store reaching the server through `proxyUrl`, and one reaching it directly. */
  open: (proxyUrl: string, direct: string) => Promise<{ via: ObjectStore; direct: ObjectStore }>;
}

const targets: Target[] = [
  {
    name: 's3 (Ceph RGW)',
    upstream: s3Endpoint,
    open: async (proxyUrl, direct) => {
      const bucket = await createTestBucket(direct, 'uncertain');
      return {
        via: new S3Store({ bucket, endpoint: proxyUrl, retry }),
        direct: new S3Store({ bucket, endpoint: direct }),
      };
    },
  },
  {
    name: 'az (Azurite)',
    upstream: () =>
      azureConnectionString()
        ? /BlobEndpoint=(http:\/\/[^/;]+)/.exec(azureConnectionString() ?? '')?.[1]
        : undefined,
    open: async (proxyUrl, direct) => {
      const container = uniqueName('uncertain').slice(0, 60);
      const base = azureConnectionString() ?? '';
      await BlobServiceClient.fromConnectionString(base).getContainerClient(container).create();
      return {
        via: new AzureStore({ container, connectionString: base.replace(direct, proxyUrl), retry }),
        direct: new AzureStore({ container, connectionString: base }),
      };
    },
  },
];

for (const target of targets) {
  const upstream = target.upstream();
  if (!upstream) {
    reportMissingServer(
      `uncertain writes on ${target.name}`,
      target.name.startsWith('s3') ? 's3' : 'azure',
      'Run `npm test`.',
    );
    continue;
  }
  describe(`uncertain conditional writes: ${target.name}`, () => {
    let proxy: MisbehavingProxy;
    let via: ObjectStore;
    let direct: ObjectStore;
    before(async () => {
      proxy = await MisbehavingProxy.start(upstream);
      const opened = await target.open(proxy.url, upstream);
      via = opened.via;
      direct = opened.direct;
    });
    after(async () => {
      await via.close();
      await direct.close();
      await proxy.stop();
    });

    test('a create whose response is lost is settled as applied by reading back', async () => {
      const key = uniqueName('k');
      proxy.on(putOf(key), { kind: 'lose-response' });
      const { version } = await via.put(key, enc.encode('mine'), { mode: 'create' });
      const got = await direct.get(key);
      assert.equal(dec.decode(got.body), 'mine');
      assert.equal(got.version.replace(/"/g, ''), version.replace(/"/g, ''));
    });

    test('an ifMatch write whose response is lost is settled as applied, not reported as the 412 of its retry', async () => {
      const key = uniqueName('k');
      const v1 = (await direct.put(key, enc.encode('v1'))).version;
      proxy.on(putOf(key), { kind: 'lose-response' });
      await via.put(key, enc.encode('v2'), { mode: { ifMatch: v1 } });
      assert.equal(dec.decode((await direct.get(key)).body), 'v2');
    });

    test('a 500 to a conditional write that was not applied is retried after reading back', async () => {
      const key = uniqueName('k');
      const v1 = (await direct.put(key, enc.encode('v1'))).version;
      proxy.on(putOf(key), { kind: 'status', status: 500 });
      await via.put(key, enc.encode('v2'), { mode: { ifMatch: v1 } });
      assert.equal(dec.decode((await direct.get(key)).body), 'v2');
    });

    test('a lost response followed by another writer is an OutcomeUnknownError, never success or conflict', async () => {
      const key = uniqueName('k');
      const v1 = (await direct.put(key, enc.encode('v1'))).version;
      proxy.on(putOf(key), {
        kind: 'lose-response',
        then: async () => {
          const current = await direct.get(key);
          await direct.put(key, enc.encode('theirs'), { mode: { ifMatch: current.version } });
        },
      });
      await assert.rejects(
        via.put(key, enc.encode('mine'), { mode: { ifMatch: v1 } }),
        OutcomeUnknownError,
      );
      assert.equal(dec.decode((await direct.get(key)).body), 'theirs');
    });

    test('a genuine conflict stays a PreconditionFailedError', async () => {
      const key = uniqueName('k');
      const v1 = (await direct.put(key, enc.encode('v1'))).version;
      await direct.put(key, enc.encode('v2'));
      await assert.rejects(
        via.put(key, enc.encode('mine'), { mode: { ifMatch: v1 } }),
        PreconditionFailedError,
      );
    });

    test('transient 503s are retried, and a retriable StorageError surfaces once attempts run out', async () => {
      const key = uniqueName('k');
      await direct.put(key, enc.encode('x'));
      proxy.on(getOf(key), { kind: 'status', status: 503 }, 2);
      assert.equal(dec.decode((await via.get(key)).body), 'x');
      proxy.on(getOf(key), { kind: 'status', status: 503 }, 10);
      await assert.rejects(
        via.get(key),
        (e: unknown) =>
          e instanceof StorageError && e.retriable && /after 4 attempts/.test(e.message),
      );
    });
  });
}

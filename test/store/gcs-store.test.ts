/**
 * The GCS adapter on the in-process GCS JSON API test server
 * (test/support/gcs-test-server.ts): the shared contract, then what is
 * particular to GCS (generations as versions, the 429 of its per-object write
 * limit, lost responses settled by reading back). The server follows GCS's
 * documentation; this is not a run against real GCS.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  GcsStore,
  openStore,
  OutcomeUnknownError,
  PreconditionFailedError,
  StorageError,
  type GcsStoreOptions,
} from '../../src/index.ts';
import { crc32cBase64, GcsTestServer } from '../support/gcs-test-server.ts';
import { uniqueName } from '../support/servers.ts';
import { describeStoreConformance } from './conformance.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const retry = { maxAttempts: 4, baseDelayMs: 1, maxDelayMs: 5 };

let started: Promise<GcsTestServer> | undefined;
const server = () => (started ??= GcsTestServer.start());
after(async () => (await server()).close());

/** A fresh bucket on the test server. */
async function freshBucket(): Promise<string> {
  const bucket = uniqueName('gcs').toLowerCase();
  (await server()).createBucket(bucket);
  return bucket;
}

async function freshStore(
  options: Partial<GcsStoreOptions> = {},
): Promise<{ store: GcsStore; bucket: string; srv: GcsTestServer }> {
  const srv = await server();
  const bucket = await freshBucket();
  return { store: new GcsStore({ bucket, endpoint: srv.url, retry, ...options }), bucket, srv };
}

describeStoreConformance({
  name: 'gs (GCS test server)',
  exactConflicts: true,
  open: async () => {
    const srv = await server();
    const bucket = await freshBucket();
    return {
      store: openStore(`gs://${bucket}/t?endpoint=${encodeURIComponent(srv.url)}`),
      cleanup: async () => srv.deleteBucket(bucket),
    };
  },
});

describe('gcs store specifics', () => {
  test('a version is the generation: create sends ifGenerationMatch=0, ifMatch the generation', async () => {
    const { store, bucket, srv } = await freshStore();
    const v1 = (await store.put('k', enc.encode('one'), { mode: 'create' })).version;
    assert.equal(v1, srv.object(bucket, 'k')?.generation);
    const v2 = (await store.put('k', enc.encode('two'), { mode: { ifMatch: v1 } })).version;
    assert.equal(v2, srv.object(bucket, 'k')?.generation);
    assert.ok(BigInt(v2) > BigInt(v1), 'generations increase');
    const uploads = srv.requests.filter(
      (r) => r.includes(`/b/${bucket}/o?`) && r.startsWith('POST'),
    );
    assert.match(uploads[0] ?? '', /uploadType=multipart&name=k&ifGenerationMatch=0$/);
    assert.match(uploads[1] ?? '', new RegExp(`ifGenerationMatch=${v1}$`));
    assert.equal((await store.get('k')).version, v2);
    assert.equal((await store.head('k')).version, v2);
    await store.close();
  });

  test('an ifMatch version that is not a generation is a PreconditionFailedError, sent nowhere', async () => {
    const { store, bucket, srv } = await freshStore();
    await store.put('k', enc.encode('x'));
    const before = srv.requests.length;
    for (const version of ['"etag"', '0', 'abc', '']) {
      await assert.rejects(
        store.put('k', enc.encode('y'), { mode: { ifMatch: version } }),
        PreconditionFailedError,
      );
    }
    assert.equal(srv.requests.length, before);
    assert.equal(dec.decode(srv.object(bucket, 'k')?.bytes), 'x');
    await store.close();
  });

  test('uploads carry the CRC32C and MD5 of their bytes, for GCS to check before storing', async () => {
    const { store, srv } = await freshStore();
    const body = enc.encode('checked');
    await store.put('hashed', body);
    const upload = srv.uploads.filter((u) => u.name === 'hashed').at(-1);
    assert.equal(upload?.metadata.crc32c, crc32cBase64(body));
    assert.equal(upload?.metadata.md5Hash, createHash('md5').update(body).digest('base64'));
    // The server's CRC32C is the standard one (RFC 3720 check value of "123456789").
    assert.equal(
      crc32cBase64(enc.encode('123456789')),
      Buffer.from('e3069283', 'hex').toString('base64'),
    );
    await store.close();
  });

  test('a full read whose bytes do not match the CRC32C GCS reports is read again', async () => {
    const { store, srv } = await freshStore();
    await store.put('k', enc.encode('intact'));
    srv.inject({ op: 'media', name: 'k' }, { kind: 'corrupt' });
    assert.equal(dec.decode((await store.get('k')).body), 'intact');
    srv.inject({ op: 'media', name: 'k' }, { kind: 'corrupt' }, 10);
    await assert.rejects(
      store.get('k'),
      (e: unknown) =>
        e instanceof StorageError && e.retriable && /after 4 attempts/.test(e.message),
    );
    srv.clearFaults();
    await store.close();
  });

  test('a 429 on a write is retried after the per-object wait, without reading back', async () => {
    const { store, bucket, srv } = await freshStore({ throttleDelayMs: 80 });
    srv.inject({ op: 'write', name: 'k' }, { kind: 'status', status: 429 }, 2);
    const t0 = Date.now();
    const { version } = await store.put('k', enc.encode('v'), { mode: 'create' });
    const elapsed = Date.now() - t0;
    assert.equal(version, srv.object(bucket, 'k')?.generation);
    // Waits of [40, 80] then [80, 160] ms before the second and third attempts.
    assert.ok(elapsed >= 120, `waited ${elapsed} ms`);
    const mine = srv.requests.filter((r) => r.includes(`/b/${bucket}/o`));
    assert.equal(mine.filter((r) => r.startsWith('POST')).length, 3);
    assert.equal(
      mine.filter((r) => r.startsWith('GET')).length,
      0,
      'a 429 is not an unknown outcome',
    );
    await store.close();
  });

  test('writes faster than one a second to one object are paced by the 429s and all land', async () => {
    const { store, bucket, srv } = await freshStore({
      throttleDelayMs: 600,
      retry: { maxAttempts: 8, baseDelayMs: 1, maxDelayMs: 5 },
    });
    srv.rateLimitObjectWrites = true;
    try {
      let version = (await store.put('counter', enc.encode('0'), { mode: 'create' })).version;
      for (let i = 1; i <= 2; i++) {
        const next = enc.encode(String(i));
        version = (await store.put('counter', next, { mode: { ifMatch: version } })).version;
      }
      assert.equal(dec.decode(srv.object(bucket, 'counter')?.bytes), '2');
      assert.ok(srv.rateLimited >= 2, `429s answered: ${srv.rateLimited}`);
    } finally {
      srv.rateLimitObjectWrites = false;
      await store.close();
    }
  });

  test('a 429 on a delete is retried after the per-object wait', async () => {
    const { store, bucket, srv } = await freshStore({ throttleDelayMs: 60 });
    srv.putObject(bucket, 'k', enc.encode('x'));
    srv.inject({ op: 'delete', name: 'k' }, { kind: 'status', status: 429 });
    const t0 = Date.now();
    await store.delete('k');
    assert.ok(Date.now() - t0 >= 30, 'waited at least half the throttle delay');
    assert.equal(srv.object(bucket, 'k'), undefined);
    await store.close();
  });

  test('a 429 that does not stop surfaces as a retriable StorageError once attempts run out', async () => {
    const { store, srv } = await freshStore({ throttleDelayMs: 1 });
    srv.inject({ op: 'write', name: 'k' }, { kind: 'status', status: 429 }, 10);
    await assert.rejects(
      store.put('k', enc.encode('v'), { mode: 'create' }),
      (e: unknown) =>
        e instanceof StorageError && e.retriable && /after 4 attempts/.test(e.message),
    );
    srv.clearFaults();
    await store.close();
  });

  test('a create whose response is lost is settled as applied by reading back', async () => {
    const { store, bucket, srv } = await freshStore();
    srv.inject({ op: 'write', name: 'k' }, { kind: 'lose-response' });
    const { version } = await store.put('k', enc.encode('mine'), { mode: 'create' });
    assert.equal(version, srv.object(bucket, 'k')?.generation);
    assert.equal(dec.decode(srv.object(bucket, 'k')?.bytes), 'mine');
    await store.close();
  });

  test('an ifMatch write whose response is lost is settled as applied, not reported as the 412 of its retry', async () => {
    const { store, bucket, srv } = await freshStore();
    const v1 = srv.putObject(bucket, 'k', enc.encode('v1'));
    srv.inject({ op: 'write', name: 'k' }, { kind: 'lose-response' });
    const { version } = await store.put('k', enc.encode('v2'), { mode: { ifMatch: v1 } });
    assert.equal(version, srv.object(bucket, 'k')?.generation);
    assert.equal(dec.decode(srv.object(bucket, 'k')?.bytes), 'v2');
    await store.close();
  });

  test('a lost response followed by another writer is an OutcomeUnknownError, never success or conflict', async () => {
    const { store, bucket, srv } = await freshStore();
    const v1 = srv.putObject(bucket, 'k', enc.encode('v1'));
    srv.inject(
      { op: 'write', name: 'k' },
      { kind: 'lose-response', then: () => void srv.putObject(bucket, 'k', enc.encode('theirs')) },
    );
    await assert.rejects(
      store.put('k', enc.encode('mine'), { mode: { ifMatch: v1 } }),
      OutcomeUnknownError,
    );
    assert.equal(dec.decode(srv.object(bucket, 'k')?.bytes), 'theirs');
    await store.close();
  });

  test('a 503 to a conditional write that was not applied is retried after reading back', async () => {
    const { store, bucket, srv } = await freshStore();
    const v1 = srv.putObject(bucket, 'k', enc.encode('v1'));
    srv.inject({ op: 'write', name: 'k' }, { kind: 'status', status: 503 });
    await store.put('k', enc.encode('v2'), { mode: { ifMatch: v1 } });
    assert.equal(dec.decode(srv.object(bucket, 'k')?.bytes), 'v2');
    await store.close();
  });

  test('a write that gets no answer times out, is settled as not applied and is sent again', async () => {
    const { store, bucket, srv } = await freshStore({
      retry: { ...retry, attemptTimeoutMs: 300 },
    });
    srv.inject({ op: 'write', name: 'k' }, { kind: 'stall' });
    const { version } = await store.put('k', enc.encode('mine'), { mode: 'create' });
    assert.equal(version, srv.object(bucket, 'k')?.generation);
    await store.close();
  });

  test('transient 503s on reads are retried, and a retriable StorageError surfaces once attempts run out', async () => {
    const { store, srv } = await freshStore();
    await store.put('k', enc.encode('x'));
    srv.inject({ op: 'media', name: 'k' }, { kind: 'status', status: 503 }, 2);
    assert.equal(dec.decode((await store.get('k')).body), 'x');
    srv.inject({ op: 'read', name: 'k' }, { kind: 'status', status: 503 }, 10);
    await assert.rejects(
      store.head('k'),
      (e: unknown) =>
        e instanceof StorageError && e.retriable && /after 4 attempts/.test(e.message),
    );
    srv.clearFaults();
    await store.close();
  });

  test('a missing bucket is a one-line StorageError naming the bucket', async () => {
    const srv = await server();
    const store = new GcsStore({ bucket: `no-such-bucket-${Date.now()}`, endpoint: srv.url });
    for (const call of [
      () => store.get('k'),
      () => store.put('k', enc.encode('x'), { mode: 'create' }),
    ]) {
      await assert.rejects(call(), (e: unknown) => {
        assert.ok(e instanceof StorageError, String(e));
        assert.equal(e.code, 'BUCKET_NOT_FOUND');
        assert.match(e.message, /bucket "no-such-bucket-\d+" does not exist/);
        assert.doesNotMatch(e.message, /\n|127\.0\.0\.1/);
        return true;
      });
    }
    await store.close();
  });

  test('bad options are refused in the constructor', () => {
    assert.throws(() => new GcsStore({ bucket: 'Bad_Bucket' }), /bucket name/);
    assert.throws(
      () => new GcsStore({ bucket: 'ok-bucket', throttleDelayMs: -1 }),
      /throttleDelayMs/,
    );
    assert.throws(() => new GcsStore({ bucket: 'ok-bucket', endpoint: 'nope' }), /endpoint/);
  });
});

describe('the GCS test server', () => {
  let srv: GcsTestServer;
  let bucket: string;
  const o = (name: string, query = '') =>
    `${srv.url}/storage/v1/b/${bucket}/o/${encodeURIComponent(name)}${query}`;
  before(async () => {
    srv = await server();
    bucket = await freshBucket();
  });

  test('answers preconditions as GCS documents them', async () => {
    const gen = srv.putObject(bucket, 'p', enc.encode('x'));
    assert.equal((await fetch(o('p', `?ifGenerationMatch=${gen}`))).status, 200);
    const failed = await fetch(o('p', '?ifGenerationMatch=1'));
    assert.equal(failed.status, 412);
    const body = (await failed.json()) as { error: { code: number; errors: { reason: string }[] } };
    assert.equal(body.error.code, 412);
    assert.equal(body.error.errors[0]?.reason, 'conditionNotMet');
    assert.equal((await fetch(o('p', `?ifGenerationNotMatch=${gen}`))).status, 304);
    assert.equal((await fetch(o('p', '?ifMetagenerationMatch=1'))).status, 200);
    assert.equal((await fetch(o('p', '?ifMetagenerationMatch=2'))).status, 412);
    assert.equal((await fetch(o('absent', '?ifGenerationMatch=0'))).status, 404);
    assert.equal((await fetch(o('p', ''), { method: 'DELETE' })).status, 204);
    assert.equal((await fetch(o('p'), { method: 'DELETE' })).status, 404);
  });

  test('refuses an upload whose CRC32C does not match its bytes, storing nothing', async () => {
    const boundary = 'b0undary';
    const body = [
      `--${boundary}\r\nContent-Type: application/json\r\n\r\n${JSON.stringify({ crc32c: crc32cBase64(enc.encode('other')) })}\r\n`,
      `--${boundary}\r\nContent-Type: application/octet-stream\r\n\r\nbytes\r\n--${boundary}--`,
    ].join('');
    const res = await fetch(
      `${srv.url}/upload/storage/v1/b/${bucket}/o?uploadType=multipart&name=c`,
      {
        method: 'POST',
        headers: { 'content-type': `multipart/related; boundary=${boundary}` },
        body,
      },
    );
    assert.equal(res.status, 400);
    assert.equal(srv.object(bucket, 'c'), undefined);
  });

  test('answers ranges with 206 and a range past the end with 416', async () => {
    srv.putObject(bucket, 'r', enc.encode('0123456789'));
    const mid = await fetch(o('r', '?alt=media'), { headers: { range: 'bytes=2-4' } });
    assert.equal(mid.status, 206);
    assert.equal(mid.headers.get('content-range'), 'bytes 2-4/10');
    assert.equal(await mid.text(), '234');
    const past = await fetch(o('r', '?alt=media'), { headers: { range: 'bytes=10-' } });
    assert.equal(past.status, 416);
    await past.arrayBuffer();
  });
});

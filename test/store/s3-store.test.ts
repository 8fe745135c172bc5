import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openStore, StorageError } from '../../src/index.ts';
import {
  createTestBucket,
  deleteTestBucket,
  reportMissingServer,
  s3Endpoint,
  uniqueName,
} from '../support/servers.ts';
import { describeStoreConformance } from './conformance.ts';

const endpoint = s3Endpoint();
if (!endpoint) {
  reportMissingServer(
    'S3 store suite',
    's3',
    'Run `npm test` (it starts Ceph RGW with scripts/rgw.sh) on a machine with the Debian packages ceph-mon ceph-osd radosgw ceph-common.',
  );
} else {
  let bucket = '';
  const url = (prefix: string) =>
    `s3://${bucket}/${prefix}?endpoint=${encodeURIComponent(endpoint)}`;
  before(async () => {
    bucket = await createTestBucket(endpoint, 'spillway');
  });
  after(() => deleteTestBucket(endpoint, bucket));

  describeStoreConformance({
    name: 's3 (Ceph RGW)',
    exactConflicts: false,
    open: async () => ({ store: openStore(url(uniqueName('t'))) }),
  });

  describe('s3 store specifics', () => {
    test('a missing bucket is a one-line StorageError naming the bucket', async () => {
      const store = openStore(
        `s3://no-such-bucket-${Date.now()}?endpoint=${encodeURIComponent(endpoint)}`,
      );
      await assert.rejects(store.get('k'), (e: unknown) => {
        assert.ok(e instanceof StorageError);
        assert.equal(e.code, 'BUCKET_NOT_FOUND');
        assert.match(e.message, /bucket "no-such-bucket-\d+" does not exist/);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
    });

    test('ifMatch accepts the version quoted or unquoted', async () => {
      const store = openStore(url(uniqueName('q')));
      const v1 = (await store.put('k', new Uint8Array([1]))).version;
      const v2 = (await store.put('k', new Uint8Array([2]), { mode: { ifMatch: `"${v1}"` } }))
        .version;
      await store.put('k', new Uint8Array([3]), { mode: { ifMatch: v2 } });
      assert.deepEqual([...(await store.get('k')).body], [3]);
    });
  });
}

import { BlobServiceClient } from '@azure/storage-blob';
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { openStore, StorageError } from '../../src/index.ts';
import { azureConnectionString, reportMissingServer, uniqueName } from '../servers.ts';
import { describeStoreConformance } from './conformance.ts';

const connectionString = azureConnectionString();
if (!connectionString) {
  reportMissingServer(
    'Azure store suite',
    'azure',
    'Run `npm test` (it starts Azurite with scripts/azurite.sh) after npm ci.',
  );
} else {
  const container = uniqueName('spillway').toLowerCase().slice(0, 60);
  before(async () => {
    await BlobServiceClient.fromConnectionString(connectionString)
      .getContainerClient(container)
      .create();
  });

  describeStoreConformance({
    name: 'az (Azurite)',
    exactConflicts: true,
    open: async () => ({ store: openStore(`az://${container}/${uniqueName('t')}`) }),
  });

  describe('azure store specifics', () => {
    test('a missing container is a one-line StorageError naming the container', async () => {
      const store = openStore(`az://no-such-container-${Date.now()}`);
      await assert.rejects(store.put('k', new Uint8Array([1])), (e: unknown) => {
        assert.ok(e instanceof StorageError);
        assert.equal(e.code, 'CONTAINER_NOT_FOUND');
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
    });
  });
}

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openStore, StorageError } from '../../src/index.ts';
import {
  azureConnectionString,
  createTestContainer,
  deleteTestContainer,
  reportMissingServer,
  uniqueName,
} from '../support/servers.ts';
import { describeStoreConformance } from './conformance.ts';

const connectionString = azureConnectionString();
if (!connectionString) {
  reportMissingServer(
    'Azure store suite',
    'azure',
    'Run `npm test` (it starts Azurite with scripts/azurite.sh) after npm ci.',
  );
} else {
  let container = '';
  before(async () => {
    container = await createTestContainer(connectionString, 'spillway');
  });
  after(() => deleteTestContainer(connectionString, container));

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

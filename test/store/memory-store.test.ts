import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryStore, openStore } from '../../src/index.ts';
import { uniqueName } from '../support/servers.ts';
import { describeStoreConformance } from './conformance.ts';

describeStoreConformance({
  name: 'memory',
  exactConflicts: true,
  open: async () => {
    const name = uniqueName('mem');
    return { store: openStore(`memory://${name}`), cleanup: async () => MemoryStore.drop(name) };
  },
});

test('memory stores with the same name share their objects', async () => {
  const name = uniqueName('shared');
  await openStore(`memory://${name}`).put('k', new Uint8Array([1]));
  assert.deepEqual([...(await openStore(`memory://${name}`).get('k')).body], [1]);
  await assert.rejects(openStore(`memory://${uniqueName('other')}`).get('k'), {
    code: 'NOT_FOUND',
  });
});

test('the memory store copies bytes in and out', async () => {
  const store = new MemoryStore();
  const body = new Uint8Array([1, 2, 3]);
  await store.put('k', body);
  body[0] = 9;
  const got = await store.get('k');
  got.body[1] = 9;
  assert.deepEqual([...(await store.get('k')).body], [1, 2, 3]);
});

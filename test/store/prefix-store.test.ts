import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidArgumentError, MemoryStore, openStore, PrefixStore } from '../../src/index.ts';
import { uniqueName } from '../support/servers.ts';
import { describeStoreConformance } from './conformance.ts';

describeStoreConformance({
  name: 'prefix over memory',
  exactConflicts: true,
  open: async () => {
    const name = uniqueName('prefixed');
    const inner = new MemoryStore(name);
    // A neighbour under another prefix must never show through.
    await inner.put('other/list/k-1', new Uint8Array([1]));
    return {
      store: new PrefixStore(inner, 'tenant/a'),
      cleanup: async () => MemoryStore.drop(name),
    };
  },
});

test('a URL path becomes a prefix and keys land under it', async () => {
  const name = uniqueName('url');
  await openStore(`memory://${name}/q/one`).put('k', new Uint8Array([7]));
  const inner = new MemoryStore(name);
  assert.deepEqual([...(await inner.get('q/one/k')).body], [7]);
});

test('an empty key is refused instead of naming the prefix itself', async () => {
  const store = new PrefixStore(new MemoryStore(), 'p');
  await assert.rejects(store.put('', new Uint8Array()), InvalidArgumentError);
});

/**
 * A store wrapper that records, for the invariant checker, every manifest
 * version written to the store beneath it and every garbage-collection
 * delete with what the manifest referenced at that moment.
 */
import { NotFoundError, type ObjectStore } from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { decodeManifest } from '../../src/format/manifest.ts';
import type { Deletion } from '../../src/testing.ts';

/** What a {@link recordingStore} saw. */
export interface StoreRecord {
  /** The store to hand to the code under test (or to wrap in faults). */
  store: FaultInjectingStore;
  manifests: string[][];
  deletions: Deletion[];
}

/** Wraps `inner` so that manifest writes and deletes of batch objects are recorded. */
export function recordingStore(inner: ObjectStore, manifestPath: string): StoreRecord {
  const store = new FaultInjectingStore(inner);
  const record: StoreRecord = { store, manifests: [], deletions: [] };
  store.after('put', (call) => {
    if (call.key === manifestPath && call.body) {
      record.manifests.push(decodeManifest(call.body).entries.map((e) => e.location));
    }
  });
  const onDelete = async (keys: readonly string[]): Promise<void> => {
    let referenced: string[] = [];
    try {
      const { body } = await inner.get(manifestPath);
      referenced = decodeManifest(body).entries.map((e) => e.location);
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
    record.deletions.push({ keys, referenced, manifestIndex: record.manifests.length });
  };
  store.before('delete', (call) => onDelete([call.key]));
  store.before('deleteMany', (call) => onDelete(call.keys ?? []));
  return record;
}

/**
 * Building queues for tests: a producer that writes `count` one-entry
 * batches and closes, and the manifest's locations.
 */
import { Producer, type Clock, type DurableResult, type ObjectStore } from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { deferred } from './deferred.ts';
import { decodeManifest } from '../../src/internal.ts';

const enc = new TextEncoder();

/** Writes `count` batches holding `e0`, `e1`, ... (one entry each); returns their locations. */
export async function queueWith(store: ObjectStore, count: number): Promise<string[]> {
  const producer = new Producer({ store, flushIntervalMs: 0 });
  for (let i = 0; i < count; i++) await (await producer.produce([enc.encode(`e${i}`)])).durable;
  await producer.close();
  return manifestLocations(store);
}

/** The locations in the default manifest, in order. */
export async function manifestLocations(store: ObjectStore): Promise<string[]> {
  return decodeManifest((await store.get('ingest/manifest')).body).entries.map((e) => e.location);
}

/** A produce() whose batch is uploaded and whose manifest append is held until `release()`. */
export interface HeldAppend {
  durable: Promise<DurableResult>;
  release: () => void;
  producer: Producer;
}

/**
 * Produces one entry with a producer (on `clock`) over `store` and holds its
 * manifest append right after the batch upload, as a slow producer would;
 * resolves once the batch object is stored and the append waits.
 */
export async function holdAppend(
  store: ObjectStore,
  options: { clock?: Clock; entry?: string } = {},
): Promise<HeldAppend> {
  const held = new FaultInjectingStore(store);
  const gate = deferred();
  const uploaded = deferred();
  let batchUploaded = false;
  held.after('put', (call) => {
    if (call.key.endsWith('.batch')) batchUploaded = true;
  });
  held.before('get', async (call) => {
    if (call.key === 'ingest/manifest' && batchUploaded) {
      batchUploaded = false;
      uploaded.resolve();
      await gate.promise;
    }
  });
  const producer = new Producer({
    store: held,
    flushIntervalMs: 0,
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const { durable } = await producer.produce([enc.encode(options.entry ?? 'in flight')]);
  await uploaded.promise;
  return { durable, release: () => gate.resolve(), producer };
}

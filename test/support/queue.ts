/**
 * Building queues for tests: a producer that writes `count` one-entry
 * batches and closes, and the manifest's locations.
 */
import {
  MemoryStore,
  Producer,
  Queue,
  type Clock,
  type DurableResult,
  type ObjectStore,
} from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { deferred } from './deferred.ts';
import { emptyManifest, encodeManifest } from '../../src/internal.ts';

const enc = new TextEncoder();

/** Writes `count` batches holding `e0`, `e1`, ... (one entry each); returns their locations. */
export async function queueWith(store: ObjectStore, count: number): Promise<string[]> {
  const producer = new Producer({ store, flushIntervalMs: 0 });
  for (let i = 0; i < count; i++) await (await producer.produce([enc.encode(`e${i}`)])).durable;
  await producer.close();
  return manifestLocations(store);
}

/** The locations of the batches pending in the queue at the default paths, in order (either layout). */
export async function manifestLocations(store: ObjectStore): Promise<string[]> {
  const locations: string[] = [];
  for await (const b of Queue.open({ store }).peek()) locations.push(b.location);
  return locations;
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

/**
 * A memory store holding an empty v1 manifest, so that every role on it
 * finds the v1 layout (tests of the manifest's own behaviour).
 */
export async function v1Store(
  options: { name?: string; clock?: Clock } = {},
): Promise<MemoryStore> {
  const store = new MemoryStore(options.name, options.clock ? { clock: options.clock } : {});
  await makeV1(store);
  return store;
}

/** Writes an empty v1 manifest at the default path, so that every role on `store` finds the v1 layout. */
export async function makeV1(store: ObjectStore): Promise<void> {
  await store.put('ingest/manifest', encodeManifest(emptyManifest()));
}

/**
 * Writes one batch per group (each group one `produce()` call), waiting for
 * each to be durable; the group at index i gets metadata `{metadata}{i}`.
 */
export async function produceBatches(
  store: ObjectStore,
  groups: string[][],
  metadata = 'm',
): Promise<void> {
  const producer = new Producer({ store, flushIntervalMs: 0 });
  for (const [i, g] of groups.entries()) {
    const handle = await producer.produce(
      g.map((e) => enc.encode(e)),
      { metadata: enc.encode(`${metadata}${i}`) },
    );
    await handle.durable;
  }
  await producer.close();
}

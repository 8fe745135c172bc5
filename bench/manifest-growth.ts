/** Case (e): the cost of one manifest append as the backlog grows. */
import { noopMetrics, type ObjectStore } from '../src/index.ts';
import { encodeManifest, type ManifestEntry } from '../src/format/manifest.ts';
import { encodeTrailer } from '../src/format/trailer.ts';
import { ManifestQueue } from '../src/queue/manifest-queue.ts';

/** Milliseconds and bytes written per append with `pending` entries already queued. */
export async function appendCost(
  store: ObjectStore,
  pending: number,
  appends: number,
): Promise<{ msPerAppend: number; bytesPerAppend: number; manifestBytes: number }> {
  const extension = encodeTrailer({
    batchSizeBytes: 1 << 20,
    crc32c: 0x12345678,
    instanceId: 'bench-producer-0000000000000000000',
  });
  const entry = (sequence: number): ManifestEntry => ({
    sequence,
    location: `ingest/01JBENCH${String(sequence).padStart(18, '0')}.batch`,
    metadata: [{ startIndex: 0, ingestionTimeMs: Date.now(), payload: new Uint8Array() }],
    extension,
  });
  const entries = Array.from({ length: pending }, (_, i) => entry(i));
  const body = encodeManifest({ epoch: 1, nextSequence: pending, entries });
  await store.put('ingest/manifest', body);
  const queue = new ManifestQueue({ store, manifestPath: 'ingest/manifest', metrics: noopMetrics });
  const t0 = performance.now();
  for (let i = 0; i < appends; i++) {
    const { sequence: _s, ...e } = entry(pending + i);
    await queue.append([e]);
  }
  const ms = (performance.now() - t0) / appends;
  const after = (await queue.read()).sizeBytes;
  return { msPerAppend: ms, bytesPerAppend: after, manifestBytes: body.byteLength };
}

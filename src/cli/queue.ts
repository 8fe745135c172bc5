import { Command } from 'commander';
import { describeEntry } from '../queue/batch-fetch.ts';
import type { ObjectMeta, ObjectStore } from '../store/object-store.ts';
import { redactUrl } from '../redact.ts';
import { classifyBatchObject, GC_DEFAULTS, oldestUlidTime, type CollectionContext } from '../gc.ts';
import {
  formatBytes,
  formatDuration,
  intOption,
  jsonOption,
  openCliStore,
  plural,
  printJson,
  queueOptions,
  readExistingManifest,
  writeOut,
  type QueueOptions,
} from './common.ts';

/** What `spillway queue stats` reports. */
export interface QueueStats {
  url: string;
  manifest_path: string;
  manifest_bytes: number;
  epoch: number;
  next_sequence: number;
  /** Batches in the manifest not yet acknowledged. */
  batches_pending: number;
  /** produce() calls in those batches (one metadata item each). */
  produce_calls_pending: number;
  /** Bytes of the pending batch objects (from their trailers, or their size in the store). */
  bytes_pending: number;
  oldest_entry_age_ms: number | null;
  first_pending_sequence: number | null;
  /** Batch objects under the data prefix. */
  batch_objects: number;
  batch_object_bytes: number;
  /** Batch objects the manifest does not reference. */
  orphans: number;
  orphan_bytes: number;
  /** Orphans old enough for a collection with the default grace period to take them. */
  orphans_collectable: number;
}

async function collectStats(
  store: ObjectStore,
  url: string,
  o: QueueOptions,
  gracePeriodMs: number,
): Promise<QueueStats> {
  const { manifest, sizeBytes, lastModified } = await readExistingManifest(
    store,
    url,
    o.manifestPath,
  );
  const now = Date.now();
  const referenced = new Map<string, number | undefined>();
  let oldest: number | undefined;
  let calls = 0;
  for (const e of manifest.entries) {
    const d = describeEntry(e);
    referenced.set(e.location, d.sizeBytes);
    calls += e.metadata.length;
    for (const m of e.metadata) oldest = Math.min(oldest ?? Infinity, m.ingestionTimeMs);
  }
  const prefix = `${o.dataPrefix}/`;
  let objects = 0;
  let objectBytes = 0;
  const stored = new Map<string, number>();
  const unreferenced: ObjectMeta[] = [];
  // A read-only command cannot probe the store's clock as a collection does; the
  // newest last-modified time it sees is a lower bound of the store's now.
  let storeNowMs = lastModified?.getTime() ?? 0;
  for await (const meta of store.list(prefix)) {
    storeNowMs = Math.max(storeNowMs, meta.lastModified.getTime());
    if (!meta.key.endsWith('.batch')) continue;
    objects++;
    objectBytes += meta.size;
    stored.set(meta.key, meta.size);
    if (!referenced.has(meta.key)) unreferenced.push(meta);
  }
  const context: CollectionContext = {
    prefix,
    referenced: new Set(referenced.keys()),
    oldestReferencedMs: oldestUlidTime(manifest.entries, prefix),
    nowMs: now,
    storeNowMs,
    gracePeriodMs,
  };
  let orphanBytes = 0;
  let collectable = 0;
  for (const meta of unreferenced) {
    orphanBytes += meta.size;
    if (classifyBatchObject(meta, context) === 'collectable') collectable++;
  }
  let pendingBytes = 0;
  for (const [location, size] of referenced) pendingBytes += size ?? stored.get(location) ?? 0;
  return {
    url: redactUrl(url),
    manifest_path: o.manifestPath,
    manifest_bytes: sizeBytes,
    epoch: manifest.epoch,
    next_sequence: manifest.nextSequence,
    batches_pending: manifest.entries.length,
    produce_calls_pending: calls,
    bytes_pending: pendingBytes,
    oldest_entry_age_ms: oldest === undefined ? null : Math.max(0, now - oldest),
    first_pending_sequence: manifest.entries[0]?.sequence ?? null,
    batch_objects: objects,
    batch_object_bytes: objectBytes,
    orphans: unreferenced.length,
    orphan_bytes: orphanBytes,
    orphans_collectable: collectable,
  };
}

function statsText(s: QueueStats): string {
  const rows: [string, string][] = [
    ['queue', `${s.url} (manifest ${s.manifest_path}, ${formatBytes(s.manifest_bytes)})`],
    ['epoch', String(s.epoch)],
    ['next sequence', String(s.next_sequence)],
    [
      'pending',
      `${plural(s.batches_pending, 'batch', 'batches')}, ${plural(s.produce_calls_pending, 'produce call')}, ${formatBytes(s.bytes_pending)}`,
    ],
    [
      'oldest pending',
      s.oldest_entry_age_ms === null
        ? '-'
        : `${formatDuration(s.oldest_entry_age_ms)} ago (sequence ${s.first_pending_sequence})`,
    ],
    [
      'batch objects',
      `${s.batch_objects.toLocaleString('en-US')} (${formatBytes(s.batch_object_bytes)})`,
    ],
    [
      'unreferenced',
      `${s.orphans.toLocaleString('en-US')} (${formatBytes(s.orphan_bytes)}; acknowledged or orphaned), ${s.orphans_collectable.toLocaleString('en-US')} past the grace period`,
    ],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n';
}

/** `spillway queue stats`. */
export function queueCommand(): Command {
  const queue = new Command('queue').description('inspect a queue');
  queue.addCommand(
    jsonOption(
      queueOptions(
        new Command('stats')
          .description(
            'pending batches and bytes, oldest entry age, epoch, next sequence, stored batch objects and orphans',
          )
          .argument('<url>', 'store URL')
          .option(
            '--grace-period-ms <ms>',
            'grace period used to count collectable orphans',
            intOption('--grace-period-ms'),
            GC_DEFAULTS.gcGracePeriodMs,
          ),
      ),
    ).action(async (url: string, o: QueueOptions & { gracePeriodMs: number }) => {
      const store = openCliStore(url);
      try {
        const stats = await collectStats(store, url, o, o.gracePeriodMs);
        if (o.json) await printJson(stats);
        else await writeOut(statsText(stats));
      } finally {
        await store.close();
      }
    }),
  );
  return queue;
}

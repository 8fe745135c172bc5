import { Command } from 'commander';
import { QueueNotFoundError } from '../errors.ts';
import { GC_DEFAULTS } from '../gc.ts';
import type { QueueStats } from '../queue/queue.ts';
import { redactUrl } from '../redact.ts';
import {
  formatBytes,
  formatDuration,
  intOption,
  jsonOption,
  noManifest,
  openCliQueue,
  plural,
  printJson,
  queueOptions,
  writeOut,
  type QueueOptions,
} from './common.ts';

/** What `spillway queue stats` reports. */
export interface StatsJson {
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

/** The library's statistics in the command's JSON shape (snake_case, as the other commands). */
async function collectStats(
  url: string,
  o: QueueOptions,
  gracePeriodMs: number,
): Promise<StatsJson> {
  const queue = openCliQueue(url, o);
  try {
    let s: QueueStats;
    try {
      s = await queue.stats({ gcGracePeriodMs: gracePeriodMs });
    } catch (e) {
      if (e instanceof QueueNotFoundError) throw noManifest(queue, url);
      throw e;
    }
    return {
      url: redactUrl(url),
      manifest_path: s.manifestPath,
      manifest_bytes: s.manifestBytes,
      epoch: s.epoch,
      next_sequence: s.nextSequence,
      batches_pending: s.batchesPending,
      produce_calls_pending: s.produceCallsPending,
      bytes_pending: s.bytesPending,
      oldest_entry_age_ms: s.oldestEntryAgeMs,
      first_pending_sequence: s.firstPendingSequence,
      batch_objects: s.batchObjects,
      batch_object_bytes: s.batchObjectBytes,
      orphans: s.unreferenced,
      orphan_bytes: s.unreferencedBytes,
      orphans_collectable: s.collectable,
    };
  } finally {
    await queue.close();
  }
}

function statsText(s: StatsJson): string {
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
      const stats = await collectStats(url, o, o.gracePeriodMs);
      if (o.json) await printJson(stats);
      else await writeOut(statsText(stats));
    }),
  );
  return queue;
}

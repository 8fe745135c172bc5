import { Command } from 'commander';
import { OutcomeUnknownError, PreconditionFailedError, QueueNotFoundError } from '../errors.ts';
import { GC_DEFAULTS } from '../gc.ts';
import { encodeQueueDescriptor, type LogQueue, type QueueDescriptor } from '../internal.ts';
import type { Retention } from '../format/log-objects.ts';
import type { Layout, Queue, QueueStats } from '../queue/queue.ts';
import { redactUrl } from '../redact.ts';
import {
  CliError,
  existingLayout,
  formatBytes,
  formatDuration,
  intOption,
  jsonOption,
  noQueue,
  openCliQueue,
  plural,
  printJson,
  queueOptions,
  v1Cannot,
  writeOut,
  UsageError,
  type QueueOptions,
} from './common.ts';
import { subscriptionJson, type SubscriptionJson } from './log.ts';
import { subscriptionTable } from './subscription.ts';

/** What `spillway queue stats` reports. */
export interface StatsJson {
  url: string;
  /** `v1` (a manifest) or `log` (commits and subscriptions). */
  layout: Layout;
  /** v1: the manifest's key; log: the queue descriptor's key. */
  manifest_path: string;
  /** v1: the manifest's size; log: 0 (there is no single object). */
  manifest_bytes: number;
  /** v1: the manifest's epoch; log: the default subscription's. */
  epoch: number;
  next_sequence: number;
  /** Batches not yet acknowledged (log: by the subscription furthest behind). */
  batches_pending: number;
  /** produce() calls in those batches (one metadata item each); null for the log. */
  produce_calls_pending: number | null;
  /** Entries in those batches; null for v1 (its manifest does not count them). */
  entries_pending: number | null;
  /** Bytes of the pending batches (from their trailers, or their size in the store). */
  bytes_pending: number;
  oldest_entry_age_ms: number | null;
  first_pending_sequence: number | null;
  /** Batch objects under the data prefix (log: inline batches live in their commits, not here). */
  batch_objects: number;
  batch_object_bytes: number;
  /** v1: batch objects the manifest does not reference; log: objects a collection would delete now. */
  orphans: number;
  orphan_bytes: number;
  /** Of those, the ones old enough for a collection with the grace period to take. */
  orphans_collectable: number;
  /** Log: the queue's retention (null: that limit is off); v1: null. */
  retention: RetentionJson | null;
  /** Log: every subscription with its lag; v1: none. */
  subscriptions: SubscriptionJson[];
}

/** A retention in the commands' JSON shape: null turns a limit off. */
export interface RetentionJson {
  max_age_ms: number | null;
  max_bytes: number | null;
}

function retentionJson(r: Retention): RetentionJson {
  return { max_age_ms: r.maxAgeMs ?? null, max_bytes: r.maxBytes ?? null };
}

/** The library's statistics in the command's JSON shape (snake_case, as the other commands). */
async function collectStats(
  url: string,
  o: QueueOptions,
  gracePeriodMs: number,
): Promise<StatsJson> {
  const queue = openCliQueue(url, o);
  try {
    const layout = await existingLayout(queue, url);
    let s: QueueStats;
    try {
      s = await queue.stats({ gcGracePeriodMs: gracePeriodMs });
    } catch (e) {
      if (e instanceof QueueNotFoundError) throw noQueue(queue, url);
      throw e;
    }
    const log = layout === 'log';
    const slowest = s.subscriptions.reduce<(typeof s.subscriptions)[number] | undefined>(
      (a, b) => (a === undefined || b.nextSequence < a.nextSequence ? b : a),
      undefined,
    );
    return {
      url: redactUrl(url),
      layout,
      manifest_path: s.manifestPath,
      manifest_bytes: s.manifestBytes,
      epoch: s.epoch,
      next_sequence: s.nextSequence,
      batches_pending: s.batchesPending,
      produce_calls_pending: log ? null : s.produceCallsPending,
      entries_pending: log ? (slowest?.lagEntries ?? 0) : null,
      bytes_pending: s.bytesPending,
      oldest_entry_age_ms: s.oldestEntryAgeMs,
      first_pending_sequence: s.firstPendingSequence,
      batch_objects: s.batchObjects,
      batch_object_bytes: s.batchObjectBytes,
      orphans: s.unreferenced,
      orphan_bytes: s.unreferencedBytes,
      orphans_collectable: s.collectable,
      retention: log ? retentionJson(await queue.retention()) : null,
      subscriptions: s.subscriptions.map(subscriptionJson),
    };
  } finally {
    await queue.close();
  }
}

/** A retention in words. */
function retentionText(r: RetentionJson): string {
  const parts = [
    r.max_age_ms === null
      ? undefined
      : `max age ${formatDuration(r.max_age_ms)} (${r.max_age_ms} ms)`,
    r.max_bytes === null ? undefined : `max ${formatBytes(r.max_bytes)} (${r.max_bytes} bytes)`,
  ].filter((x) => x !== undefined);
  return parts.length === 0
    ? 'none: batches are kept until every subscription acknowledged them'
    : `${parts.join(', ')}; older batches are deleted even if not acknowledged`;
}

/** Rows of label and value, the labels padded to one width. */
export function rows(pairs: [string, string][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n';
}

function statsText(s: StatsJson): string {
  const log = s.layout === 'log';
  const pairs: [string, string][] = [
    [
      'queue',
      log
        ? `${s.url} (log ${s.manifest_path})`
        : `${s.url} (manifest ${s.manifest_path}, ${formatBytes(s.manifest_bytes)})`,
    ],
    ['layout', log ? 'log' : 'v1 (OpenData Buffer manifest)'],
    ...(log ? [] : ([['epoch', String(s.epoch)]] as [string, string][])),
    ['next sequence', String(s.next_sequence)],
    [
      'pending',
      log
        ? `${plural(s.batches_pending, 'batch', 'batches')}, ${plural(s.entries_pending ?? 0, 'entry', 'entries')}, ${formatBytes(s.bytes_pending)} (the subscription furthest behind)`
        : `${plural(s.batches_pending, 'batch', 'batches')}, ${plural(s.produce_calls_pending ?? 0, 'produce call')}, ${formatBytes(s.bytes_pending)}`,
    ],
    [
      'oldest pending',
      s.oldest_entry_age_ms === null
        ? '-'
        : `${formatDuration(s.oldest_entry_age_ms)} ago (sequence ${s.first_pending_sequence})`,
    ],
    [
      'batch objects',
      `${s.batch_objects.toLocaleString('en-US')} (${formatBytes(s.batch_object_bytes)})${log ? '; small batches live inside their commits' : ''}`,
    ],
    log
      ? [
          'collectable',
          `${s.orphans_collectable.toLocaleString('en-US')} batch objects past the grace period`,
        ]
      : [
          'unreferenced',
          `${s.orphans.toLocaleString('en-US')} (${formatBytes(s.orphan_bytes)}; acknowledged or orphaned), ${s.orphans_collectable.toLocaleString('en-US')} past the grace period`,
        ],
    ...(s.retention ? ([['retention', retentionText(s.retention)]] as [string, string][]) : []),
  ];
  let text = rows(pairs);
  if (log) {
    text += `subscriptions (${s.subscriptions.length}):\n`;
    text += subscriptionTable(s.subscriptions, '  ');
  }
  return text;
}

/**
 * Reads a limit option: decimal digits for a value (at least 1), or `none`
 * to turn it off (kept as the string: Commander turns a null into "").
 */
function limitOption(name: string): (value: string) => number | 'none' {
  return (value: string) => {
    if (value === 'none') return 'none';
    const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) {
      throw new UsageError(
        `${name} expects an integer >= 1 written in decimal digits, or "none" to turn the limit off, got ${JSON.stringify(value)}`,
      );
    }
    return n;
  };
}

interface ConfigOptions extends QueueOptions {
  retentionMaxAgeMs?: number | 'none';
  retentionMaxBytes?: number | 'none';
}

/**
 * Changes the retention fields given and keeps the others, as a function of
 * the descriptor as stored: a lost race or a lost response reads it again,
 * and the change is done once the stored retention is the one asked for.
 */
async function changeRetention(
  log: LogQueue,
  change: { maxAgeMs?: number | 'none'; maxBytes?: number | 'none' },
): Promise<{ before: Retention; after: Retention }> {
  let before: Retention | undefined;
  for (;;) {
    const current = await log.readDescriptor();
    if (!current) throw new CliError(`no log queue at "${log.descriptorKey}" any more`);
    before ??= current.value.retention;
    const r = { ...current.value.retention };
    if (change.maxAgeMs !== undefined)
      r.maxAgeMs = change.maxAgeMs === 'none' ? undefined : change.maxAgeMs;
    if (change.maxBytes !== undefined)
      r.maxBytes = change.maxBytes === 'none' ? undefined : change.maxBytes;
    const after: Retention = {
      ...(r.maxAgeMs !== undefined ? { maxAgeMs: r.maxAgeMs } : {}),
      ...(r.maxBytes !== undefined ? { maxBytes: r.maxBytes } : {}),
    };
    if (
      after.maxAgeMs === current.value.retention.maxAgeMs &&
      after.maxBytes === current.value.retention.maxBytes
    ) {
      return { before, after };
    }
    const next: QueueDescriptor = { ...current.value, retention: after };
    try {
      await log.store.put(log.descriptorKey, encodeQueueDescriptor(next), {
        mode: { ifMatch: current.version },
      });
      return { before, after };
    } catch (e) {
      if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
    }
  }
}

/** `spillway queue config`. */
async function queueConfig(url: string, o: ConfigOptions): Promise<void> {
  const queue: Queue = openCliQueue(url, o);
  try {
    const layout = await existingLayout(queue, url);
    const change = {
      ...(o.retentionMaxAgeMs !== undefined ? { maxAgeMs: o.retentionMaxAgeMs } : {}),
      ...(o.retentionMaxBytes !== undefined ? { maxBytes: o.retentionMaxBytes } : {}),
    };
    const changing = Object.keys(change).length > 0;
    if (layout === 'v1') {
      if (changing) throw v1Cannot(queue, url, 'keep a retention');
      const config = {
        url: redactUrl(url),
        layout,
        manifest_path: queue.manifestPath,
        retention: null,
      };
      if (o.json) await printJson(config);
      else
        await writeOut(
          rows([
            ['queue', `${config.url} (manifest ${config.manifest_path})`],
            ['layout', 'v1 (OpenData Buffer manifest)'],
            ['retention', 'none: v1 keeps batches until its consumer acknowledges them'],
          ]),
        );
      return;
    }
    const log = queue.logQueue();
    const descriptor = (await log.readDescriptor())?.value;
    if (!descriptor) throw noQueue(queue, url);
    let retention = descriptor.retention;
    let previous: Retention | undefined;
    if (changing) {
      const r = await changeRetention(log, change);
      retention = r.after;
      previous = r.before;
    }
    const config = {
      url: redactUrl(url),
      layout,
      queue: log.descriptorKey,
      created_at_ms: descriptor.createdAtMs,
      retention: retentionJson(retention),
      ...(previous ? { previous_retention: retentionJson(previous) } : {}),
    };
    if (o.json) {
      await printJson(config);
      return;
    }
    await writeOut(
      rows([
        ['queue', `${config.url} (log ${config.queue})`],
        ['layout', 'log'],
        ['created', new Date(descriptor.createdAtMs).toISOString()],
        [changing ? 'retention now' : 'retention', retentionText(config.retention)],
        ...(previous
          ? ([['was', retentionText(retentionJson(previous))]] as [string, string][])
          : []),
      ]),
    );
  } finally {
    await queue.close();
  }
}

/** `spillway queue stats` and `spillway queue config`. */
export function queueCommand(): Command {
  const queue = new Command('queue').description('inspect and configure a queue');
  queue.addCommand(
    jsonOption(
      queueOptions(
        new Command('stats')
          .description(
            'layout, pending batches and bytes, oldest entry age, epoch, next sequence, stored batch objects and what a collection would take; for the log, every subscription with its lag and the retention',
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
  queue.addCommand(
    jsonOption(
      queueOptions(
        new Command('config')
          .description(
            "print the queue's configuration (layout, retention), or change its retention (log layout): batches older than the max age, or beyond the newest max bytes, are deleted by the collector even if a subscription has not acknowledged them",
          )
          .argument('<url>', 'store URL')
          .option(
            '--retention-max-age-ms <ms>',
            'delete batches whose commit is older than this; "none" turns the limit off',
            limitOption('--retention-max-age-ms'),
          )
          .option(
            '--retention-max-bytes <n>',
            'keep at most this many bytes of batches, deleting the oldest; "none" turns the limit off',
            limitOption('--retention-max-bytes'),
          ),
      ),
    ).action(queueConfig),
  );
  return queue;
}

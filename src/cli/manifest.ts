import { Command } from 'commander';
import { MANIFEST_VERSION, entryTrailer, type Manifest } from '../format/manifest.ts';
import { LOG_COMMIT_VERSION, type ManifestEntry } from '../internal.ts';
import type { Queue } from '../queue/queue.ts';
import {
  existingLayout,
  jsonOption,
  openCliQueue,
  printJson,
  queueOptions,
  readExistingManifest,
  type QueueOptions,
} from './common.ts';
import { logCommits } from './log.ts';

/** One manifest entry in the reference implementation's JSON shape, plus our trailer fields. */
export function entryJson(e: ManifestEntry): Record<string, unknown> {
  const t = entryTrailer(e);
  return {
    sequence: e.sequence,
    location: e.location,
    metadata: e.metadata.map((m) => ({
      start_index: m.startIndex,
      ingestion_time_ms: m.ingestionTimeMs,
      payload_base64: Buffer.from(m.payload).toString('base64'),
    })),
    ...(t
      ? {
          trailer: {
            batch_size_bytes: t.batchSizeBytes,
            crc32c: t.crc32c,
            instance_id: t.instanceId,
          },
        }
      : e.extension.byteLength > 0
        ? { extension_base64: Buffer.from(e.extension).toString('base64') }
        : {}),
  };
}

/** The manifest in the reference implementation's JSON shape, plus our trailer fields. */
export function manifestJson(manifest: Manifest): unknown {
  return {
    version: MANIFEST_VERSION,
    epoch: manifest.epoch,
    next_sequence: manifest.nextSequence,
    entries: manifest.entries.map(entryJson),
  };
}

/**
 * A log queue as JSON: its descriptor, boundary, head and cursors, then
 * every commit kept, and every batch of those as an entry in the v1 shape
 * with the number of the commit holding it (and its record count, and the
 * size of an inline batch).
 */
export async function logJson(queue: Queue): Promise<unknown> {
  const log = queue.logQueue();
  const descriptor = (await log.readDescriptor())?.value;
  const { value: b } = await log.readBoundary();
  const head = await log.discoverHead();
  const subscriptions = [];
  for (const name of await log.subscriptions()) {
    const c = (await log.readCursor(name))?.value;
    if (!c) continue;
    subscriptions.push({
      name,
      epoch: c.epoch,
      next_sequence: c.next.sequence,
      next_index: c.next.index,
      commit: c.commit,
      holder: c.holder,
      created_at_ms: c.createdAtMs,
      updated_at_ms: c.updatedAtMs,
      last_loss: c.lastLoss
        ? {
            first_sequence: c.lastLoss.firstSequence,
            last_sequence: c.lastLoss.lastSequence,
            reported_at_ms: c.lastLoss.reportedAtMs,
          }
        : null,
    });
  }
  const commits = [];
  const entries = [];
  for await (const c of logCommits(log, { to: head.commit })) {
    commits.push({
      commit: c.commit,
      key: log.commitKey(c.commit),
      first_sequence: c.firstSequence,
      batches: c.batches.length,
      append_time_ms: c.appendTimeMs,
      total_bytes: c.totalBytes,
      total_records: c.totalRecords,
      writer: c.writer,
    });
    for (const x of c.batches) {
      entries.push({
        commit: c.commit,
        ...entryJson(x.entry),
        records: x.records,
        ...(x.inline ? { inline_bytes: x.inline.byteLength } : {}),
      });
    }
  }
  return {
    layout: 'log',
    version: LOG_COMMIT_VERSION,
    queue: log.descriptorKey,
    created_at_ms: descriptor?.createdAtMs ?? null,
    retention: {
      max_age_ms: descriptor?.retention.maxAgeMs ?? null,
      max_bytes: descriptor?.retention.maxBytes ?? null,
    },
    next_sequence: head.endSequence,
    head: {
      commit: head.commit,
      end_sequence: head.endSequence,
      append_time_ms: head.appendTimeMs,
      total_bytes: head.totalBytes,
      total_records: head.totalRecords,
    },
    boundary: {
      first_commit: b.firstCommit,
      first_sequence: b.firstSequence,
      expired_below: b.expiredBelow,
      updated_at_ms: b.updatedAtMs,
    },
    subscriptions,
    commits,
    entries,
  };
}

/** `spillway manifest dump`. */
export function manifestCommand(): Command {
  const manifest = new Command('manifest').description(
    "read the queue's manifest (v1) or its log of commits (log)",
  );
  manifest.addCommand(
    jsonOption(
      queueOptions(
        new Command('dump')
          .description(
            'print the queue as JSON. v1: the manifest (version, epoch, next_sequence, entries with their metadata and trailer). log: layout, head, boundary, retention, subscriptions, commits, and entries in the same shape as v1 with the commit holding each',
          )
          .argument('<url>', 'store URL, e.g. file:///var/spool/q or s3://bucket/prefix'),
      ),
    ).action(async (url: string, o: QueueOptions) => {
      const queue = openCliQueue(url, o);
      try {
        if ((await existingLayout(queue, url)) === 'log') {
          await printJson(await logJson(queue));
          return;
        }
        const { manifest: m } = await readExistingManifest(queue, url);
        await printJson(manifestJson(m));
      } finally {
        await queue.close();
      }
    }),
  );
  return manifest;
}

import { Command } from 'commander';
import { CorruptDataError } from '../errors.ts';
import { commitEnd, slotStart, type Commit } from '../format/log-commit.ts';
import { isVoid, slotKey } from '../format/log-slot.ts';
import { MANIFEST_VERSION, entryTrailer, type Manifest } from '../format/manifest.ts';
import { LOG_COMMIT_VERSION, type ManifestEntry } from '../internal.ts';
import type { LogQueue } from '../queue/log-queue.ts';
import { readSlot, VOID_AFTER_MS } from '../queue/log-slots.ts';
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

/** One slot of a reservation in the dump. */
interface SlotJson {
  sequence: number;
  key: string;
  /** Who created it: its producer, or the reader that voided it. */
  writer?: string;
  /** Batches it holds (0 for a void). */
  batches?: number;
  /** A void: the sequences it leaves without a batch, to the reservation's end. */
  void?: { first_sequence: number; last_sequence: number };
  /** Why it does not decode, or does not belong to the reservation. */
  corrupt?: string;
}

/** A commit's reservation in the dump: its slots, read in order. */
interface ReservationJson {
  /** The first sequence reserved (after the commit's own batches). */
  first_sequence: number;
  /** The sequence after the last one reserved: the next commit's first. */
  end_sequence: number;
  /**
   * `complete`: every sequence is in a slot of batches or a void; `open`: the
   * slot at `missing_slot` is not written (yet); `corrupt`: the last slot
   * listed does not decode or belongs elsewhere.
   */
  state: 'complete' | 'open' | 'corrupt';
  /** The first slot missing, where readers wait; null unless `open`. */
  missing_slot: number | null;
  /** What `open` means for readers. */
  note?: string;
  slots: SlotJson[];
}

/**
 * A commit's reservation read as a reader would (without voiding): its
 * slots in order up to the first missing one, and their batches in the
 * dump's entry shape, each with its commit and slot.
 */
async function reservationJson(
  log: LogQueue,
  c: Commit,
): Promise<{ reservation: ReservationJson; entries: Record<string, unknown>[] }> {
  const end = commitEnd(c);
  const slots: SlotJson[] = [];
  const entries: Record<string, unknown>[] = [];
  const reservation: ReservationJson = {
    first_sequence: slotStart(c),
    end_sequence: end,
    state: 'complete',
    missing_slot: null,
    slots,
  };
  for (let s = slotStart(c); s < end;) {
    const key = slotKey(log.root, s);
    let slot;
    try {
      slot = await readSlot(log.store, log.root, c, s);
    } catch (e) {
      if (!(e instanceof CorruptDataError)) throw e;
      slots.push({ sequence: s, key, corrupt: e.message });
      reservation.state = 'corrupt';
      break;
    }
    if (!slot) {
      reservation.state = 'open';
      reservation.missing_slot = s;
      reservation.note = `slot ${s} is not written (or was collected with its commit meanwhile): its producer may still write it; readers wait there, and a subscription's reader voids it after waiting ${VOID_AFTER_MS} ms`;
      break;
    }
    if (isVoid(slot)) {
      slots.push({
        sequence: s,
        key,
        writer: slot.writer,
        batches: 0,
        void: { first_sequence: s, last_sequence: end - 1 },
      });
      break;
    }
    slots.push({ sequence: s, key, writer: slot.writer, batches: slot.batches.length });
    for (const x of slot.batches) {
      entries.push({
        commit: c.commit,
        slot: s,
        ...entryJson(x.entry),
        records: x.records,
        ...(x.inline ? { inline_bytes: x.inline.byteLength } : {}),
      });
    }
    s += slot.batches.length;
  }
  return { reservation, entries };
}

/**
 * A log queue as JSON: its descriptor, boundary, head and cursors, then
 * every commit kept, and every batch of those as an entry in the v1 shape
 * with the number of the commit holding it (and its record count, and the
 * size of an inline batch). A commit that reserves sequences also shows
 * `reserved` and its `reservation`: its slots, read in order up to the
 * first one missing; their batches are entries too, with their `slot`.
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
    const reserving = (c.reserved ?? 0) > 0;
    const slots = reserving ? await reservationJson(log, c) : undefined;
    commits.push({
      commit: c.commit,
      key: log.commitKey(c.commit),
      first_sequence: c.firstSequence,
      batches: c.batches.length,
      append_time_ms: c.appendTimeMs,
      total_bytes: c.totalBytes,
      total_records: c.totalRecords,
      writer: c.writer,
      ...(slots ? { reserved: c.reserved, reservation: slots.reservation } : {}),
    });
    for (const x of c.batches) {
      entries.push({
        commit: c.commit,
        ...entryJson(x.entry),
        records: x.records,
        ...(x.inline ? { inline_bytes: x.inline.byteLength } : {}),
      });
    }
    if (slots) entries.push(...slots.entries);
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
            'print the queue as JSON. v1: the manifest (version, epoch, next_sequence, entries with their metadata and trailer). log: layout, head, boundary, retention, subscriptions, commits (with the slots of their reservations, read in order up to the first one missing), and entries in the same shape as v1 with the commit (and slot) holding each',
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

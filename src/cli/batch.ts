import { Command } from 'commander';
import { CorruptDataError, NotFoundError } from '../errors.ts';
import { BATCH_FOOTER_BYTES, decodeBatch } from '../format/batch.ts';
import { crc32c } from '../format/crc32c.ts';
import { decodeSlot, isVoid, parseSlotLocation, slotKey } from '../format/log-slot.ts';
import { parseInlineLocation, type ManifestEntry } from '../internal.ts';
import { describeEntry, hex, type BatchDescriptor } from '../queue/batch-fetch.ts';
import type { LogQueue } from '../queue/log-queue.ts';
import { readSlot } from '../queue/log-slots.ts';
import { redactUrl } from '../redact.ts';
import {
  asText,
  CliError,
  formatBytes,
  intOption,
  jsonOption,
  openCliQueue,
  printJson,
  queueOptions,
  UsageError,
  writeOut,
  type QueueOptions,
} from './common.ts';
import { findLogBatch, type LogBatch } from './log.ts';

/** A batch of a slot, found by its location. */
interface SlotBatch {
  /** The slot's sequence. */
  slot: number;
  /** The commit that reserved the slot. */
  reservedBy: number;
  /** Whether that commit still exists and the slot lies in its reservation. */
  committed: boolean;
  entry: ManifestEntry;
  body: Uint8Array;
}

/**
 * The batch at a slot location `{root}/slots/{seq:020}#{i}`, checked against
 * the reservation of the commit it names when that commit is still there.
 *
 * @throws {CliError} when the slot is missing, is a void, or has no batch `i`.
 * @throws {CorruptDataError} when the slot does not decode, or lies outside
 * the reservation of the commit it names.
 */
async function findSlotBatch(
  log: LogQueue,
  url: string,
  location: string,
  at: { sequence: number; index: number },
): Promise<SlotBatch> {
  const key = slotKey(log.root, at.sequence);
  let bytes: Uint8Array;
  try {
    bytes = (await log.store.get(key)).body;
  } catch (e) {
    if (e instanceof NotFoundError) {
      throw new CliError(
        `no slot "${key}" in ${redactUrl(url)}: its producer has not written it (yet), it lies inside a slot that starts earlier, or it was collected with its commit`,
      );
    }
    throw e;
  }
  const slot = decodeSlot(bytes, key, at.sequence, log.root);
  if (isVoid(slot)) {
    throw new CliError(
      `no batch "${location}" in ${redactUrl(url)}: slot ${at.sequence} is a void (written by "${slot.writer}"): commit ${slot.commit}'s reservation holds no batch at sequences ${at.sequence} to ${slot.endSequence - 1}`,
    );
  }
  const batch = slot.batches[at.index];
  if (!batch?.inline) {
    throw new CliError(
      `no batch "${location}" in ${redactUrl(url)}: slot ${at.sequence} holds ${slot.batches.length} batch${slot.batches.length === 1 ? '' : 'es'} (#0 to #${slot.batches.length - 1})`,
    );
  }
  const commit = await log.readCommit(slot.commit);
  // The reservation's own check: the slot names this commit, its end, and lies after
  // its batches (a CorruptDataError otherwise).
  if (commit) await readSlot(log.store, log.root, commit, at.sequence);
  return {
    slot: at.sequence,
    reservedBy: slot.commit,
    committed: commit !== undefined,
    entry: batch.entry,
    body: batch.inline,
  };
}

interface InspectOptions extends QueueOptions {
  records: number;
  hex?: boolean;
}

/** `spillway batch inspect`. */
export function batchCommand(): Command {
  const batch = new Command('batch').description('look inside batch objects');
  batch.addCommand(
    jsonOption(
      queueOptions(
        new Command('inspect')
          .description(
            'compression, record count, sizes, checksum status against the manifest (v1) or the commit (log), and the first records',
          )
          .argument('<url>', 'store URL')
          .argument(
            '<location>',
            'key of the batch object, e.g. ingest/01J....batch, or the location of an inline batch (log), e.g. ingest/log/00000000000000000007#0, or of a batch in a slot (log), e.g. ingest/slots/00000000000000000042#0',
          )
          .option('-n, --records <count>', 'records to show', intOption('--records'), 5)
          .option('--hex', 'show records as hex even when they are text'),
      ),
    ).action(async (url: string, location: string, o: InspectOptions) => {
      const queue = openCliQueue(url, o);
      const store = queue.store;
      try {
        const layout = await queue.layout();
        const log = queue.logQueue();
        const inline =
          layout === 'log' ? parseInlineLocation(queue.dataPathPrefix, location) : undefined;
        const slotPrefix = `${queue.dataPathPrefix}/slots/`;
        const slotAt =
          layout === 'log' ? parseSlotLocation(queue.dataPathPrefix, location) : undefined;
        if (layout === 'log' && !slotAt && location.startsWith(slotPrefix)) {
          throw new UsageError(
            `"${location}" is not the location of a batch in a slot: expected ${slotPrefix}{sequence, 20 digits}#{index}, e.g. ${slotPrefix}${'0'.repeat(18)}42#0`,
          );
        }
        let body: Uint8Array;
        let entry: ManifestEntry | undefined;
        let found: LogBatch | undefined;
        let inSlot: SlotBatch | undefined;
        if (slotAt) {
          inSlot = await findSlotBatch(log, url, location, slotAt);
          body = inSlot.body;
          // The slot's own entry: its checksum covers it, as a commit's covers its batches'.
          entry = inSlot.entry;
        } else if (inline) {
          found = await findLogBatch(log, location);
          if (!found?.batch.inline) {
            throw new CliError(
              `no inline batch "${location}" in ${redactUrl(url)}: commit ${inline.commit} was collected, or holds no inline batch ${inline.index}`,
            );
          }
          body = found.batch.inline;
        } else {
          try {
            body = (await store.get(location)).body;
          } catch (e) {
            if (e instanceof NotFoundError)
              throw new CliError(`no batch object "${location}" in ${redactUrl(url)}`);
            throw e;
          }
          if (layout === 'log') found = await findLogBatch(log, location).catch(() => undefined);
        }
        if (found) entry = found.batch.entry;
        else if (layout === 'v1') {
          // The manifest entry, when the batch is still queued, holds its size and checksum.
          const { manifest } = await queue.readManifest().catch(() => ({ manifest: undefined }));
          entry = manifest?.entries.find((e) => e.location === location);
        }
        const d: BatchDescriptor | undefined = entry ? describeEntry(entry) : undefined;
        const actualCrc = crc32c(body);
        const where = inSlot ? 'its slot' : layout === 'log' ? 'its commit' : 'the manifest';
        let checksum: string;
        if (!entry)
          checksum =
            layout === 'log'
              ? 'not in the log (collected, orphaned, or foreign): nothing to check against'
              : 'not in the manifest (acknowledged, orphaned, or foreign): nothing to check against';
        else if (d?.crc32c === undefined)
          checksum = `${inSlot ? 'its slot entry' : layout === 'log' ? 'its commit entry' : 'its manifest entry'} has no integrity trailer`;
        else if (d.sizeBytes !== body.byteLength)
          checksum = `MISMATCH: ${body.byteLength} bytes, ${where} records ${d.sizeBytes}`;
        else if (d.crc32c !== actualCrc)
          checksum = `MISMATCH: CRC32C ${hex(actualCrc)}, ${where} records ${hex(d.crc32c)}`;
        else checksum = `ok (CRC32C ${hex(actualCrc)}, ${body.byteLength} bytes)`;

        let decoded;
        try {
          decoded = await decodeBatch(body, location);
        } catch (e) {
          if (!(e instanceof CorruptDataError)) throw e;
          throw new CorruptDataError(`${e.message} (checksum: ${checksum})`, location, e);
        }
        const { records, compression } = decoded;
        // Loops, not Math.min(...records): a spread of a million records overflows the stack.
        let recordBytes = 0;
        let smallest = Infinity;
        let largest = 0;
        for (const r of records) {
          recordBytes += r.byteLength;
          smallest = Math.min(smallest, r.byteLength);
          largest = Math.max(largest, r.byteLength);
        }
        const shown = records.slice(0, o.records).map((r, index) => {
          const text = o.hex ? undefined : asText(r);
          return text !== undefined
            ? { index, bytes: r.byteLength, text }
            : { index, bytes: r.byteLength, hex: Buffer.from(r).toString('hex') };
        });
        const info = {
          location,
          layout,
          sequence: entry?.sequence ?? null,
          commit: found?.commit.commit ?? (inSlot?.committed ? inSlot.reservedBy : null),
          inline: inline !== undefined || inSlot !== undefined,
          slot: inSlot?.slot ?? null,
          // The commit the slot names, whether or not it is still there (`commit` is null
          // once it is collected).
          reserved_by: inSlot?.reservedBy ?? null,
          instance_id: d?.instanceId ?? null,
          compression,
          records: records.length,
          object_bytes: body.byteLength,
          record_block_bytes: recordBytes + 4 * records.length,
          record_bytes: recordBytes,
          record_bytes_min: records.length ? smallest : 0,
          record_bytes_max: largest,
          compression_ratio:
            compression === 'none'
              ? 1
              : Number(
                  (
                    (recordBytes + 4 * records.length) /
                    (body.byteLength - BATCH_FOOTER_BYTES)
                  ).toFixed(2),
                ),
          checksum,
          produce_calls: entry?.metadata.length ?? null,
          first_records: shown,
        };
        if (o.json) {
          await printJson(info);
          return;
        }
        const lines = [
          `batch         ${location}${info.sequence !== null ? ` (sequence ${info.sequence}${info.commit !== null ? `, commit ${info.commit}` : ''}${inSlot ? `, slot ${inSlot.slot}` : ''})` : ''}`,
          ...(inSlot && !inSlot.committed
            ? [
                `reserved by   commit ${inSlot.reservedBy}, which is gone (collected): this slot is left for the next collection`,
              ]
            : []),
          `producer      ${info.instance_id ?? '-'}`,
          `compression   ${compression}${compression === 'none' ? '' : ` (ratio ${info.compression_ratio})`}`,
          `records       ${records.length} (${formatBytes(recordBytes)}; smallest ${info.record_bytes_min} B, largest ${info.record_bytes_max} B)`,
          `object        ${formatBytes(body.byteLength)}${inSlot ? ' (inline, inside its slot)' : info.inline ? ' (inline, inside its commit)' : ''}`,
          `checksum      ${checksum}`,
          `first ${shown.length} record${shown.length === 1 ? '' : 's'}:`,
          ...shown.map((r) =>
            'text' in r
              ? `  [${r.index}] ${JSON.stringify(r.text)}`
              : `  [${r.index}] hex ${r.hex}`,
          ),
        ];
        await writeOut(lines.join('\n') + '\n');
      } finally {
        await queue.close();
      }
    }),
  );
  return batch;
}

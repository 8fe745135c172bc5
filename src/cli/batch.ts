import { Command } from 'commander';
import { CorruptDataError, NotFoundError } from '../errors.ts';
import { BATCH_FOOTER_BYTES, decodeBatch } from '../format/batch.ts';
import { crc32c } from '../format/crc32c.ts';
import { parseInlineLocation, type ManifestEntry } from '../internal.ts';
import { describeEntry, hex, type BatchDescriptor } from '../queue/batch-fetch.ts';
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
  writeOut,
  type QueueOptions,
} from './common.ts';
import { findLogBatch, type LogBatch } from './log.ts';

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
            'key of the batch object, e.g. ingest/01J....batch, or the location of an inline batch (log), e.g. ingest/log/00000000000000000007#0',
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
        let body: Uint8Array;
        let entry: ManifestEntry | undefined;
        let found: LogBatch | undefined;
        if (inline) {
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
        const where = layout === 'log' ? 'its commit' : 'the manifest';
        let checksum: string;
        if (!entry)
          checksum =
            layout === 'log'
              ? 'not in the log (collected, orphaned, or foreign): nothing to check against'
              : 'not in the manifest (acknowledged, orphaned, or foreign): nothing to check against';
        else if (d?.crc32c === undefined)
          checksum = `${layout === 'log' ? 'its commit entry' : 'its manifest entry'} has no integrity trailer`;
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
          commit: found?.commit.commit ?? null,
          inline: inline !== undefined,
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
          `batch         ${location}${info.sequence !== null ? ` (sequence ${info.sequence}${info.commit !== null ? `, commit ${info.commit}` : ''})` : ''}`,
          `producer      ${info.instance_id ?? '-'}`,
          `compression   ${compression}${compression === 'none' ? '' : ` (ratio ${info.compression_ratio})`}`,
          `records       ${records.length} (${formatBytes(recordBytes)}; smallest ${info.record_bytes_min} B, largest ${info.record_bytes_max} B)`,
          `object        ${formatBytes(body.byteLength)}${info.inline ? ' (inline, inside its commit)' : ''}`,
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

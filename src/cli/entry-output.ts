/**
 * How `spillway consume` prints entries on stdout: the three output formats,
 * for a whole batch or for one entry, and the write that resolves once the
 * bytes are handed to the OS.
 */
import type { Batch } from '../queue/queue.ts';
import { asText, CliError } from './common.ts';

/** The formats `consume` writes. */
export type OutputFormat = 'lines' | 'ndjson' | 'frames';

/** One entry to print: its position, bytes and ingestion time (`null` when unknown). */
export interface OutputEntry {
  sequence: number;
  /** The entry's index in its batch. */
  index: number;
  data: Uint8Array;
  ingestionTimeMs: number | null;
}

/**
 * Whether an entry cannot be a line: it holds `\n`, or ends in `\r`, which
 * reading it back as a line would drop.
 */
function lineBreakIn(data: Uint8Array): boolean {
  return data.includes(0x0a) || data[data.byteLength - 1] === 0x0d;
}

/**
 * The bytes one entry prints as (see {@link renderBatch} for the formats).
 *
 * @throws {CliError} for `lines` when the entry holds a line break; nothing is written then.
 */
export function renderEntry(entry: OutputEntry, format: OutputFormat): Buffer {
  const { data } = entry;
  if (format === 'lines') {
    if (lineBreakIn(data)) {
      throw new CliError(
        `entry ${entry.index} of batch ${entry.sequence} contains a line break ("\\n", or a "\\r" at its end), so it cannot be written as one line; it was not written or acknowledged (the entries before it were): use --format ndjson or --format frames`,
      );
    }
    const out = Buffer.allocUnsafe(data.byteLength + 1);
    out.set(data, 0);
    out[data.byteLength] = 0x0a;
    return out;
  }
  if (format === 'frames') {
    const out = Buffer.allocUnsafe(4 + data.byteLength);
    out.writeUInt32LE(data.byteLength, 0);
    out.set(data, 4);
    return out;
  }
  return Buffer.from(ndjsonLine(entry));
}

function ndjsonLine(entry: OutputEntry): string {
  const text = asText(entry.data);
  return `${JSON.stringify({
    sequence: entry.sequence,
    index: entry.index,
    ingestion_time_ms: entry.ingestionTimeMs,
    ...(text !== undefined
      ? { data: text }
      : { data_base64: Buffer.from(entry.data).toString('base64') }),
  })}\n`;
}

/**
 * The bytes a batch prints as. `lines`: each entry's bytes unchanged and a
 * `\n`; an entry holding `\n` (or ending in `\r`, which reading it back as a
 * line would drop) cannot be a line, and the whole batch is refused before
 * any of it is written. `frames`: each entry as a u32 little-endian length
 * and its bytes, which round-trips anything. `ndjson`: one JSON object per
 * entry with its position and ingestion time. A batch that starts inside
 * (`firstIndex`, a position recorded by entry) numbers its entries from there.
 */
export function renderBatch(
  batch: Pick<Batch, 'sequence' | 'entries' | 'metadata' | 'firstIndex'>,
  format: OutputFormat,
): Buffer {
  const first = batch.firstIndex ?? 0;
  if (format === 'lines') {
    let size = 0;
    batch.entries.forEach((e, i) => {
      if (lineBreakIn(e)) {
        throw new CliError(
          `entry ${first + i} of batch ${batch.sequence} contains a line break ("\\n", or a "\\r" at its end), so it cannot be written as one line; nothing of this batch was written or acknowledged: use --format ndjson or --format frames`,
        );
      }
      size += e.byteLength + 1;
    });
    const out = Buffer.allocUnsafe(size);
    let at = 0;
    for (const e of batch.entries) {
      out.set(e, at);
      at += e.byteLength;
      out[at++] = 0x0a;
    }
    return out;
  }
  if (format === 'frames') {
    let size = 0;
    for (const e of batch.entries) size += 4 + e.byteLength;
    const out = Buffer.allocUnsafe(size);
    let at = 0;
    for (const e of batch.entries) {
      out.writeUInt32LE(e.byteLength, at);
      out.set(e, at + 4);
      at += 4 + e.byteLength;
    }
    return out;
  }
  let item = 0;
  return Buffer.from(
    batch.entries
      .map((data, i) => {
        const index = first + i;
        while (
          item + 1 < batch.metadata.length &&
          (batch.metadata[item + 1]?.startIndex ?? Infinity) <= index
        )
          item++;
        return ndjsonLine({
          sequence: batch.sequence,
          index,
          data,
          ingestionTimeMs: batch.metadata[item]?.ingestionTimeMs ?? null,
        });
      })
      .join(''),
  );
}

/** Writes bytes to stdout; resolves once handed to the OS, rejects on a closed pipe. */
export function writeBytes(bytes: Buffer): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (bytes.byteLength === 0) resolve();
    else process.stdout.write(bytes, (e) => (e ? reject(e) : resolve()));
  });
}

/**
 * The list of batches that commits and riders both hold (docs/log-layout.md
 * §4.1, §4.6): a u32 count, then per batch its entry (u32 length and a
 * manifest entry body), its record count (u32) and its inline bytes (u64
 * length, then the bytes; 0 for a batch object of its own).
 */
import { CorruptDataError } from '../errors.ts';
import type { ByteReader, ByteWriter } from './binary.ts';
import type { CommitBatch } from './log-commit.ts';
import { decodeEntryBody, encodedEntry, type ManifestEntry } from './manifest.ts';

/** Batches with their encoded entries, ready to be written. */
export interface EncodedBatchList {
  batches: readonly CommitBatch[];
  entries: Uint8Array[];
  /** Bytes the list takes, its count included. */
  byteLength: number;
}

/** Encodes the entries of `batches` and measures the list. */
export function encodeBatchList(batches: readonly CommitBatch[]): EncodedBatchList {
  let byteLength = 4;
  const entries = batches.map((b) => {
    const entry = encodedEntry(b.entry);
    byteLength += 4 + entry.byteLength + 4 + 8 + (b.inline?.byteLength ?? 0);
    return entry;
  });
  return { batches, entries, byteLength };
}

/** Writes a list made by {@link encodeBatchList}. */
export function writeBatchList(w: ByteWriter, list: EncodedBatchList): void {
  w.u32(list.batches.length);
  list.batches.forEach((b, i) => {
    const entry = list.entries[i] as Uint8Array;
    w.u32(entry.byteLength);
    w.raw(entry);
    w.u32(b.records);
    w.u64(b.inline?.byteLength ?? 0);
    if (b.inline) w.raw(b.inline);
  });
}

/**
 * Reads a batch list from `r`, passing each batch's entry to
 * `checkEntry` as soon as it is decoded and each whole batch to `check`.
 *
 * @throws {CorruptDataError} for a count the bytes cannot hold, or a
 * malformed batch.
 */
export function readBatchList(
  r: ByteReader,
  what: string,
  checks: {
    entry?: (entry: ManifestEntry, i: number) => void;
    batch?: (batch: CommitBatch, i: number) => void;
  } = {},
): CommitBatch[] {
  const count = r.u32('batch count');
  // Each batch takes at least 4 + 14 + 4 + 8 bytes: a count the object cannot hold is corrupt.
  if (count > r.remaining / 30) {
    throw new CorruptDataError(`${what}: claims ${count} batches in ${r.remaining} bytes`, what);
  }
  const batches: CommitBatch[] = [];
  for (let i = 0; i < count; i++) {
    const len = r.u32(`batch ${i} entry length`);
    const start = r.offset;
    r.skip(len, `batch ${i} entry`);
    const entry = decodeEntryBody(r.bytes, `${what} batch ${i}`, start, start + len);
    checks.entry?.(entry, i);
    const records = r.u32(`batch ${i} record count`);
    const inlineLen = r.u64(`batch ${i} inline length`);
    const inline = inlineLen > 0 ? r.bytesOf(inlineLen, `batch ${i} inline bytes`) : undefined;
    const batch: CommitBatch = inline ? { entry, records, inline } : { entry, records };
    checks.batch?.(batch, i);
    batches.push(batch);
  }
  if (r.remaining !== 0) {
    throw new CorruptDataError(`${what}: ${r.remaining} bytes follow the last batch`, what);
  }
  return batches;
}

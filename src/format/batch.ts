import { CorruptDataError, InvalidArgumentError } from '../errors.ts';
import { ByteReader, ByteWriter } from './binary.ts';
import {
  zstdCompress,
  zstdDeclaredBytes,
  zstdDecompress,
  type Compression,
} from './compression.ts';

/** Bytes of the batch footer: compression u8, record count u32, version u16. */
export const BATCH_FOOTER_BYTES = 7;
/** The batch format version Spillway reads and writes. */
export const BATCH_VERSION = 1;
const COMPRESSION_CODES: Record<Compression, number> = { none: 0, zstd: 1 };

/**
 * The largest record block Spillway writes or reads, in bytes: 256 MiB. The
 * record block is the batch's records, each as u32 length + bytes, before
 * compression. Producers refuse to build a larger batch and readers refuse to
 * decode one, so a small object that decompresses to gigabytes (a zstd bomb)
 * costs a reader at most this much memory.
 */
export const DEFAULT_MAX_BATCH_BYTES = 256 * 1024 * 1024;
/**
 * The highest `maxBatchBytes` accepted, in bytes: 1 GiB. The WebAssembly zstd
 * decoder's heap stops at 2 GiB and must hold the compressed bytes too.
 */
const MAX_BATCH_BYTES_LIMIT = 1024 * 1024 * 1024;

/**
 * What one decoded record costs in memory besides its bytes (its
 * `Uint8Array` view object), counted against `maxBatchBytes`: a batch of
 * millions of empty records is as large as its views, not as its bytes.
 */
export const RECORD_OVERHEAD_BYTES = 96;

/**
 * The size a batch counts against `maxBatchBytes`: its record block (each
 * record as u32 length + bytes) plus {@link RECORD_OVERHEAD_BYTES} per record,
 * about what it costs in memory once decoded.
 */
export function batchSizeBytes(blockBytes: number, records: number): number {
  return blockBytes + RECORD_OVERHEAD_BYTES * records;
}

/** Options of {@link encodeBatch} and {@link decodeBatch}. */
export interface BatchLimitOptions {
  /**
   * The largest record block (records as u32 length + bytes, before
   * compression) to write or read, in bytes, inclusive. Writers and readers
   * of one queue must agree: a reader refuses a batch larger than its limit.
   * At most 1 GiB.
   * @default DEFAULT_MAX_BATCH_BYTES (256 MiB)
   */
  maxBatchBytes?: number;
}

/** A decoded batch object. */
export interface DecodedBatch {
  /** The records, as views into the decoded record block. */
  records: Uint8Array[];
  /** How the record block was stored. */
  compression: Compression;
  /** Bytes of the decoded record block (records as u32 length + bytes). */
  blockBytes: number;
}

/**
 * Bytes of the record block that holds `records`: each record as u32 length
 * plus its bytes, before compression. This is what `maxBatchBytes` limits.
 */
export function recordBlockBytes(records: readonly Uint8Array[]): number {
  let size = 0;
  for (const r of records) size += 4 + r.byteLength;
  return size;
}

/**
 * The size of a batch object's decoded record block as known without
 * decompressing it: from the object's size when it is uncompressed, from the
 * zstd frame headers (the sum of their content sizes) when every frame
 * declares one. Readers use it to budget memory before they decode. The size
 * is what the headers claim: {@link decodeBatch} still checks it.
 *
 * @returns undefined when the size is not declared, or the object is not a
 * version-1 batch whose frame headers parse.
 */
export function declaredBlockBytes(bytes: Uint8Array): number | undefined {
  if (bytes.byteLength < BATCH_FOOTER_BYTES) return undefined;
  const end = bytes.byteLength;
  const version = (bytes[end - 2] as number) | ((bytes[end - 1] as number) << 8);
  if (version !== BATCH_VERSION) return undefined;
  const stored = bytes.subarray(0, end - BATCH_FOOTER_BYTES);
  const code = bytes[end - BATCH_FOOTER_BYTES];
  if (code === COMPRESSION_CODES.none) return stored.byteLength;
  if (code === COMPRESSION_CODES.zstd) return zstdDeclaredBytes(stored);
  return undefined;
}

/** The limit from options, validated. */
function maxBatchBytesOf(options: BatchLimitOptions | undefined): number {
  const max = options?.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
  if (!Number.isSafeInteger(max) || max < 0 || max > MAX_BATCH_BYTES_LIMIT) {
    throw new InvalidArgumentError(
      `maxBatchBytes must be a whole number of bytes from 0 to ${MAX_BATCH_BYTES_LIMIT} (1 GiB), got ${String(max)}`,
    );
  }
  return max;
}

/**
 * Encodes records as a version-1 batch object: the record block (each record
 * as u32 length + bytes), compressed as one unit if asked, then the 7-byte
 * footer.
 *
 * @param options.maxBatchBytes the largest record block to build, in bytes
 * (default {@link DEFAULT_MAX_BATCH_BYTES})
 * @throws {InvalidArgumentError} for an unknown compression, an invalid
 * `maxBatchBytes`, or a record block larger than `maxBatchBytes`.
 *
 * @example
 * ```ts
 * const body = await encodeBatch([record], 'zstd');
 * ```
 */
export async function encodeBatch(
  records: readonly Uint8Array[],
  compression: Compression = 'none',
  options?: BatchLimitOptions,
): Promise<Uint8Array> {
  if (!(compression in COMPRESSION_CODES)) {
    throw new InvalidArgumentError(
      `compression must be "none" or "zstd", got ${JSON.stringify(compression)}`,
    );
  }
  const max = maxBatchBytesOf(options);
  const size = recordBlockBytes(records);
  const counted = batchSizeBytes(size, records.length);
  if (counted > max) {
    throw new InvalidArgumentError(
      `a batch of ${records.length} records counts ${counted} bytes (record block plus ${RECORD_OVERHEAD_BYTES} per record), more than ${max} (maxBatchBytes); split the records into smaller batches, or raise maxBatchBytes here and on every reader`,
    );
  }
  if (compression === 'none') {
    // One allocation, not zero-filled: every byte is written below.
    const out = new ByteWriter(uninitialized(size + BATCH_FOOTER_BYTES));
    writeRecords(out, records);
    writeFooter(out, compression, records.length);
    return out.bytes;
  }
  const block = new ByteWriter(uninitialized(size));
  writeRecords(block, records);
  const body = await zstdCompress(block.bytes);
  const out = new ByteWriter(body.byteLength + BATCH_FOOTER_BYTES);
  out.raw(body);
  writeFooter(out, compression, records.length);
  return out.bytes;
}

/** A plain Uint8Array over memory that is not zero-filled. */
function uninitialized(size: number): Uint8Array {
  const b = Buffer.allocUnsafeSlow(size);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

function writeRecords(w: ByteWriter, records: readonly Uint8Array[]): void {
  for (const r of records) {
    w.u32(r.byteLength);
    w.raw(r);
  }
}

function writeFooter(w: ByteWriter, compression: Compression, count: number): void {
  w.u8(COMPRESSION_CODES[compression]);
  w.u32(count);
  w.u16(BATCH_VERSION);
}

/**
 * Decodes a version-1 batch object. Records are views into the decoded block.
 *
 * A record block larger than `maxBatchBytes` is refused before memory is
 * allocated for it: an uncompressed one by its size; a zstd one by the
 * content sizes its frame headers declare, or, when a frame declares none,
 * by decompressing into a buffer of at most `maxBatchBytes` and stopping as
 * soon as the output would pass it. So a zstd bomb costs at most about
 * `maxBatchBytes` of memory, whatever it claims; a block within the limit
 * costs about twice its size while it decodes (libzstd's output buffer, whose
 * WebAssembly heap keeps its largest size for reuse, and the copy returned).
 *
 * @param what the object's location, for error messages
 * @param options.maxBatchBytes the largest record block to decode, in bytes
 * (default {@link DEFAULT_MAX_BATCH_BYTES})
 * @throws {CorruptDataError} for a short object, another version, an unknown
 * compression, invalid zstd, a zstd frame whose declared size is wrong, a
 * record block larger than `maxBatchBytes`, a truncated record block, or
 * bytes after the last record.
 * @throws {InvalidArgumentError} for an invalid `maxBatchBytes`.
 *
 * @example
 * ```ts
 * const { records } = await decodeBatch(body, location, { maxBatchBytes: 64 * 1024 * 1024 });
 * ```
 */
export async function decodeBatch(
  bytes: Uint8Array,
  what = 'batch',
  options?: BatchLimitOptions,
): Promise<DecodedBatch> {
  const max = maxBatchBytesOf(options);
  if (bytes.byteLength < BATCH_FOOTER_BYTES) {
    throw new CorruptDataError(
      `${what}: a batch object has at least ${BATCH_FOOTER_BYTES} bytes (its footer), this one has ${bytes.byteLength}`,
      what,
    );
  }
  const footer = new ByteReader(bytes, what, bytes.byteLength - BATCH_FOOTER_BYTES);
  const code = footer.u8('compression type');
  const count = footer.u32('record count');
  const version = footer.u16('version');
  if (version !== BATCH_VERSION) {
    throw new CorruptDataError(
      `${what}: batch format version ${version}; this reader knows version ${BATCH_VERSION}`,
      what,
    );
  }
  const compression = (Object.keys(COMPRESSION_CODES) as Compression[]).find(
    (c) => COMPRESSION_CODES[c] === code,
  );
  if (compression === undefined) {
    throw new CorruptDataError(
      `${what}: unknown compression type ${code}; expected 0 (none) or 1 (zstd)`,
      what,
    );
  }
  // The record views cost memory too: a count the limit cannot hold is refused before decoding.
  if (batchSizeBytes(0, count) > max) {
    throw new CorruptDataError(
      `${what}: the footer counts ${count} records, which would take ${batchSizeBytes(0, count)} bytes of memory (${RECORD_OVERHEAD_BYTES} per record), more than ${max} (maxBatchBytes); refusing it (a batch from a writer with a larger limit: raise maxBatchBytes to read it)`,
      what,
    );
  }
  const stored = bytes.subarray(0, bytes.byteLength - BATCH_FOOTER_BYTES);
  if (compression === 'none' && batchSizeBytes(stored.byteLength, count) > max) {
    throw new CorruptDataError(
      `${what}: the record block has ${stored.byteLength} bytes and ${count} records, more than ${max} (maxBatchBytes, counting ${RECORD_OVERHEAD_BYTES} bytes per record); refusing it (a batch from a writer with a larger limit: raise maxBatchBytes to read it)`,
      what,
    );
  }
  const block = compression === 'zstd' ? await zstdDecompress(stored, what, max) : stored;
  if (compression === 'zstd' && batchSizeBytes(block.byteLength, count) > max) {
    throw new CorruptDataError(
      `${what}: the record block decompresses to ${block.byteLength} bytes and holds ${count} records, more than ${max} (maxBatchBytes, counting ${RECORD_OVERHEAD_BYTES} bytes per record); refusing it (a batch from a writer with a larger limit: raise maxBatchBytes to read it)`,
      what,
    );
  }
  // Each record takes at least 4 bytes: a count the block cannot hold is corrupt before we allocate for it.
  if (count > block.byteLength / 4) {
    throw new CorruptDataError(
      `${what}: the footer counts ${count} records but the record block has only ${block.byteLength} bytes`,
      what,
    );
  }
  // The hot loop of every read: bounds checked by hand, messages built only on failure.
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  const end = block.byteLength;
  const records: Uint8Array[] = new Array<Uint8Array>(count);
  let offset = 0;
  for (let i = 0; i < count; i++) {
    if (offset + 4 > end) throw truncated(what, `length of record ${i}`, 4, offset, end);
    const len = view.getUint32(offset, true);
    offset += 4;
    if (offset + len > end) throw truncated(what, `record ${i}`, len, offset, end);
    records[i] = block.subarray(offset, offset + len);
    offset += len;
  }
  if (offset !== end) {
    throw new CorruptDataError(
      `${what}: ${end - offset} bytes follow the last of ${count} records`,
      what,
    );
  }
  return { records, compression, blockBytes: block.byteLength };
}

/** The error of a record block cut short, worded as {@link ByteReader} words it. */
function truncated(
  what: string,
  field: string,
  n: number,
  offset: number,
  end: number,
): CorruptDataError {
  return new CorruptDataError(
    `${what}: truncated: ${field} needs ${n} bytes at offset ${offset}, only ${Math.max(0, end - offset)} remain`,
    what,
  );
}

import { CorruptDataError, InvalidArgumentError } from '../errors.ts';
import { ByteReader, ByteWriter } from './binary.ts';
import { zstdCompress, zstdDecompress, type Compression } from './compression.ts';

/** Bytes of the batch footer: compression u8, record count u32, version u16. */
export const BATCH_FOOTER_BYTES = 7;
/** The batch format version Spillway reads and writes. */
export const BATCH_VERSION = 1;
const COMPRESSION_CODES: Record<Compression, number> = { none: 0, zstd: 1 };

/** A decoded batch object. */
export interface DecodedBatch {
  records: Uint8Array[];
  compression: Compression;
}

/**
 * Encodes records as a version-1 batch object: the record block (each record
 * as u32 length + bytes), compressed as one unit if asked, then the 7-byte
 * footer.
 */
export async function encodeBatch(
  records: readonly Uint8Array[],
  compression: Compression = 'none',
): Promise<Uint8Array> {
  if (!(compression in COMPRESSION_CODES)) {
    throw new InvalidArgumentError(
      `compression must be "none" or "zstd", got ${JSON.stringify(compression)}`,
    );
  }
  let size = 0;
  for (const r of records) size += 4 + r.byteLength;
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
 * @param what the object's location, for error messages
 * @throws {CorruptDataError} for a short object, another version, an unknown
 * compression, a truncated record block, or bytes after the last record.
 */
export async function decodeBatch(bytes: Uint8Array, what = 'batch'): Promise<DecodedBatch> {
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
  const stored = bytes.subarray(0, bytes.byteLength - BATCH_FOOTER_BYTES);
  const block = compression === 'zstd' ? await zstdDecompress(stored, what) : stored;
  // Each record takes at least 4 bytes: a count the block cannot hold is corrupt before we allocate for it.
  if (count > block.byteLength / 4) {
    throw new CorruptDataError(
      `${what}: the footer counts ${count} records but the record block has only ${block.byteLength} bytes`,
      what,
    );
  }
  const reader = new ByteReader(block, what);
  const records: Uint8Array[] = new Array<Uint8Array>(count);
  for (let i = 0; i < count; i++) {
    const len = reader.u32(`length of record ${i}`);
    records[i] = reader.bytesOf(len, `record ${i}`);
  }
  if (reader.remaining !== 0) {
    throw new CorruptDataError(
      `${what}: ${reader.remaining} bytes follow the last of ${count} records`,
      what,
    );
  }
  return { records, compression };
}

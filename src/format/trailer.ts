import { ByteReader, ByteWriter } from './binary.ts';

/**
 * Spillway's integrity trailer, written in each manifest entry's extension
 * slot (which other readers skip):
 *
 * ```
 * tag          4 bytes  "SPWT"
 * version      u8       = 1
 * batch_size   u64      bytes of the batch object
 * crc32c       u32      CRC32C of the batch object's bytes
 * id_len       u8
 * instance_id  id_len bytes, UTF-8: the producer that wrote the entry
 * ```
 *
 * A reader that finds another tag or version ignores the slot.
 */
export interface IntegrityTrailer {
  /** Size of the batch object in bytes. */
  batchSizeBytes: number;
  /** CRC32C of the batch object's bytes. */
  crc32c: number;
  /** The producer instance that appended the entry. */
  instanceId: string;
}

const TAG = [0x53, 0x50, 0x57, 0x54]; // "SPWT"
const VERSION = 1;

/** Encodes a trailer; the instance id is cut to 255 bytes of UTF-8. */
export function encodeTrailer(trailer: IntegrityTrailer): Uint8Array {
  let id = Buffer.from(trailer.instanceId, 'utf8');
  if (id.byteLength > 255) id = id.subarray(0, 255);
  const w = new ByteWriter(4 + 1 + 8 + 4 + 1 + id.byteLength);
  w.raw(Uint8Array.from(TAG));
  w.u8(VERSION);
  w.u64(trailer.batchSizeBytes);
  w.u32(trailer.crc32c);
  w.u8(id.byteLength);
  w.raw(id);
  return w.bytes;
}

/** Reads a trailer from an extension slot, or undefined if the slot holds none (or another writer's). */
export function decodeTrailer(extension: Uint8Array): IntegrityTrailer | undefined {
  if (
    extension.byteLength < 18 ||
    TAG.some((b, i) => extension[i] !== b) ||
    extension[4] !== VERSION
  )
    return undefined;
  try {
    const r = new ByteReader(extension, 'integrity trailer', 5);
    const batchSizeBytes = r.u64('batch size');
    const crc32c = r.u32('crc32c');
    const idLen = r.u8('instance id length');
    const instanceId = Buffer.from(r.bytesOf(idLen, 'instance id')).toString('utf8');
    return { batchSizeBytes, crc32c, instanceId };
  } catch {
    return undefined;
  }
}

import { ByteReader, ByteWriter } from './binary.ts';
import { isUlid, ulidFromBytes, ulidToBytes } from './ulid.ts';

/**
 * Spillway's integrity trailer, written in each manifest entry's extension
 * slot (which other readers skip):
 *
 * ```
 * tag          4 bytes  "SPWT"
 * version      u8       1, or 2 when the entry belongs to a group (a rider, log layout)
 * batch_size   u64      bytes of the batch object
 * crc32c       u32      CRC32C of the batch object's bytes
 * id_len       u8
 * instance_id  id_len bytes, UTF-8: the producer that wrote the entry
 * group        16 bytes, version 2 only: the group's ULID, binary (big-endian 128 bits)
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
  /**
   * The group (rider) the entry was appended with, as a canonical ULID:
   * present in version 2 only (docs/log-layout.md §4.1, §7.2).
   */
  group?: string;
}

const TAG = [0x53, 0x50, 0x57, 0x54]; // "SPWT"
/** The trailer version without a group. */
export const TRAILER_VERSION = 1;
/** The trailer version with a group id (batches appended from a rider). */
export const TRAILER_GROUP_VERSION = 2;

/**
 * Encodes a trailer (version 2 when it names a group, else version 1); the
 * instance id is cut to 255 bytes of UTF-8.
 *
 * @throws {InvalidArgumentError} for a group that is not a canonical ULID.
 */
export function encodeTrailer(trailer: IntegrityTrailer): Uint8Array {
  let id = Buffer.from(trailer.instanceId, 'utf8');
  if (id.byteLength > 255) id = id.subarray(0, 255);
  const group = trailer.group === undefined ? undefined : ulidToBytes(trailer.group);
  const w = new ByteWriter(4 + 1 + 8 + 4 + 1 + id.byteLength + (group ? 16 : 0));
  w.raw(Uint8Array.from(TAG));
  w.u8(group ? TRAILER_GROUP_VERSION : TRAILER_VERSION);
  w.u64(trailer.batchSizeBytes);
  w.u32(trailer.crc32c);
  w.u8(id.byteLength);
  w.raw(id);
  if (group) w.raw(group);
  return w.bytes;
}

/**
 * Reads a trailer from an extension slot, or undefined if the slot holds
 * none (or another writer's, or a version this reader does not know).
 */
export function decodeTrailer(extension: Uint8Array): IntegrityTrailer | undefined {
  const version = extension[4];
  if (
    extension.byteLength < 18 ||
    TAG.some((b, i) => extension[i] !== b) ||
    (version !== TRAILER_VERSION && version !== TRAILER_GROUP_VERSION)
  )
    return undefined;
  try {
    const r = new ByteReader(extension, 'integrity trailer', 5);
    const batchSizeBytes = r.u64('batch size');
    const crc32c = r.u32('crc32c');
    const idLen = r.u8('instance id length');
    const instanceId = Buffer.from(r.bytesOf(idLen, 'instance id')).toString('utf8');
    if (version === TRAILER_VERSION) return { batchSizeBytes, crc32c, instanceId };
    const group = ulidFromBytes(r.bytesOf(16, 'group'));
    if (!isUlid(group)) return undefined;
    return { batchSizeBytes, crc32c, instanceId, group };
  } catch {
    return undefined;
  }
}

/** The same trailer with `group` set (version 2); undefined when `extension` holds no trailer. */
export function withGroup(extension: Uint8Array, group: string): Uint8Array | undefined {
  const t = decodeTrailer(extension);
  return t && encodeTrailer({ ...t, group });
}

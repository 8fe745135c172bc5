/**
 * The frame shared by the log's binary objects (commits, riders): four magic
 * bytes, a u16 format version, the body, and a CRC32C of everything before
 * it (u32, little-endian) at the end.
 */
import { CorruptDataError } from '../errors.ts';
import { ByteReader, ByteWriter } from './binary.ts';
import { crc32c } from './crc32c.ts';

/** What {@link openFrame} checks a frame against. */
export interface FrameKind {
  /** The object's name in messages ("commit", "rider"). */
  name: string;
  /** Its four magic bytes and their ASCII spelling. */
  magic: readonly number[];
  magicText: string;
  /** The version this writer writes. */
  version: number;
  /** Every version this reader knows (default: `version` alone). */
  reads?: readonly number[];
  /** Fewest bytes a valid frame has. */
  minBytes: number;
}

/**
 * Checks the magic, the length, the CRC32C and the version of a frame, and
 * returns a reader over its body (after the version, before the checksum).
 *
 * @throws {CorruptDataError} naming `what` and what was found.
 */
export function openFrame(bytes: Uint8Array, what: string, kind: FrameKind): ByteReader {
  return openVersionedFrame(bytes, what, kind).reader;
}

/**
 * {@link openFrame}, also returning the version found (one of `kind.reads`).
 *
 * @throws {CorruptDataError} naming `what` and what was found.
 */
export function openVersionedFrame(
  bytes: Uint8Array,
  what: string,
  kind: FrameKind,
): { reader: ByteReader; version: number } {
  if (bytes.byteLength < kind.minBytes || kind.magic.some((b, i) => bytes[i] !== b)) {
    throw new CorruptDataError(
      `${what}: not a log ${kind.name} (no "${kind.magicText}" magic, or too short)`,
      what,
    );
  }
  const stored = new ByteReader(bytes, what, bytes.byteLength - 4).u32('checksum');
  const actual = crc32c(bytes.subarray(0, bytes.byteLength - 4));
  if (stored !== actual) {
    throw new CorruptDataError(
      `${what}: CRC32C 0x${actual.toString(16).padStart(8, '0')}, but the ${kind.name} records 0x${stored.toString(16).padStart(8, '0')}`,
      what,
    );
  }
  const r = new ByteReader(bytes, what, 4, bytes.byteLength - 4);
  const version = r.u16('version');
  const known = kind.reads ?? [kind.version];
  if (!known.includes(version)) {
    throw new CorruptDataError(
      `${what}: log ${kind.name} format version ${version}; this reader knows version ${known.join(' and ')} (written by a newer Spillway?)`,
      what,
    );
  }
  return { reader: r, version };
}

/**
 * A writer of `bytes` bytes (the whole frame, checksum included) that has
 * written the magic and the version.
 */
export function startFrame(kind: FrameKind, bytes: number, version = kind.version): ByteWriter {
  const w = new ByteWriter(bytes);
  w.raw(Uint8Array.from(kind.magic));
  w.u16(version);
  return w;
}

/** Appends the CRC32C of everything written and returns the frame. */
export function sealFrame(w: ByteWriter): Uint8Array {
  w.u32(crc32c(w.bytes.subarray(0, w.offset)));
  return w.bytes;
}

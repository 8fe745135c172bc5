/**
 * Keys of a keyed buffer: strings or byte arrays, their identity in the key
 * table, their partition, and the entry format of durable mode.
 */
import { CorruptDataError, InvalidArgumentError } from '../errors.ts';
import { describeValue } from '../store/keys.ts';

/** A key: a string, or a byte array (compared by its bytes). A string and its UTF-8 bytes are two different keys. */
export type Key = string | Uint8Array;

/** Longest key, in bytes (a string counts its UTF-8 bytes). */
export const MAX_KEY_BYTES = 64 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * The key's identity in the key table: `s` + the string, or `b` + the bytes
 * as hex.
 *
 * @throws {InvalidArgumentError} for anything but a string or a byte array,
 * a string that is not well-formed UTF-16 (a lone surrogate: its UTF-8 form,
 * and so its durable round trip, would change it), or a key over
 * {@link MAX_KEY_BYTES}.
 */
export function keyId(key: Key): string {
  if (typeof key === 'string') {
    if (!isWellFormed(key)) {
      throw new InvalidArgumentError(
        `a string key must be well-formed UTF-16, got one with a lone surrogate (${describeValue(key.slice(0, 40))}); use a Uint8Array key for arbitrary bytes`,
      );
    }
    if (key.length > MAX_KEY_BYTES / 3 && encoder.encode(key).byteLength > MAX_KEY_BYTES) {
      throw new InvalidArgumentError(`a key must be at most ${MAX_KEY_BYTES} bytes`);
    }
    return `s${key}`;
  }
  if (key instanceof Uint8Array) {
    if (key.byteLength > MAX_KEY_BYTES) {
      throw new InvalidArgumentError(
        `a key must be at most ${MAX_KEY_BYTES} bytes, got ${key.byteLength}`,
      );
    }
    return `b${Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex')}`;
  }
  throw new InvalidArgumentError(
    `a key must be a string or a Uint8Array, got ${describeValue(key)}`,
  );
}

/** Whether `text` has no lone surrogate (`String.prototype.isWellFormed`, Node 20+). */
function isWellFormed(text: string): boolean {
  return (text as string & { isWellFormed(): boolean }).isWellFormed();
}

/** The partition (0 to `partitions - 1`) of a key id: FNV-1a, 32 bits. */
export function partitionOf(id: string, partitions: number): number {
  if (partitions === 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % partitions;
}

/**
 * One durable insert as a queue entry: a kind byte (0 string, 1 bytes), the
 * key's length (u32, little-endian), the key's bytes, then the value's bytes.
 */
export function encodeEntry(key: Key, value: Uint8Array): Uint8Array {
  const keyBytes = typeof key === 'string' ? encoder.encode(key) : key;
  const out = new Uint8Array(5 + keyBytes.byteLength + value.byteLength);
  out[0] = typeof key === 'string' ? 0 : 1;
  new DataView(out.buffer).setUint32(1, keyBytes.byteLength, true);
  out.set(keyBytes, 5);
  out.set(value, 5 + keyBytes.byteLength);
  return out;
}

/** Bytes {@link encodeEntry} adds to a value besides the key's bytes. */
export const ENTRY_HEADER_BYTES = 5;

/**
 * The key and value bytes of an entry {@link encodeEntry} wrote.
 *
 * @throws {CorruptDataError} for an entry it did not write.
 */
export function decodeEntry(entry: Uint8Array, location: string): { key: Key; value: Uint8Array } {
  if (entry.byteLength < 5 || (entry[0] !== 0 && entry[0] !== 1)) {
    throw new CorruptDataError(
      `keyed buffer: an entry of ${location} is not a keyed insert (kind byte ${String(entry[0])}, ${entry.byteLength} bytes)`,
      location,
    );
  }
  const length = new DataView(entry.buffer, entry.byteOffset, entry.byteLength).getUint32(1, true);
  if (5 + length > entry.byteLength) {
    throw new CorruptDataError(
      `keyed buffer: an entry of ${location} declares a ${length}-byte key but holds ${entry.byteLength - 5} bytes`,
      location,
    );
  }
  const keyBytes = entry.subarray(5, 5 + length);
  return {
    key: entry[0] === 0 ? decoder.decode(keyBytes) : Uint8Array.from(keyBytes),
    value: entry.subarray(5 + length),
  };
}

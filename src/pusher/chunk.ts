import { InvalidArgumentError } from '../errors.ts';
import { describeValue } from '../store/keys.ts';

/**
 * A piece of a source (a file, or any byte stream with offsets) on its way
 * into a queue: its entries and the byte range of the source they came from.
 * A source's chunks cover it without gaps or overlaps: the next chunk starts
 * at `offset + size`.
 */
export interface Chunk {
  /**
   * The source's identity: stable across restarts, different for a rotated
   * or replaced file (for files, see `identifySource`). At most 200 bytes of
   * UTF-8.
   */
  source: string;
  /** Where the source is, for people (a file's path); kept with the entries. */
  path?: string;
  /** The chunk's entries, in order (may be empty: e.g. the last chunk of an empty file). */
  items: Uint8Array[];
  /** Byte offset of the chunk in the source (decompressed bytes for compressed files). */
  offset: number;
  /** Bytes of the source the chunk covers. */
  size: number;
  /** Whether this is the source's last chunk: once it and every chunk before it are acknowledged, the source is done. */
  last: boolean;
}

/** The end offset of a chunk: where the source's next chunk starts. */
export function chunkEnd(chunk: Chunk): number {
  return chunk.offset + chunk.size;
}

/** A chunk's name in messages: its source (path when known) and byte range. */
export function describeChunk(chunk: Chunk): string {
  return `${chunk.path ?? chunk.source} bytes ${chunk.offset}-${chunkEnd(chunk)}`;
}

/**
 * Checks a chunk's shape.
 *
 * @throws {InvalidArgumentError} naming the field that is wrong and what it held.
 */
export function checkChunk(method: string, chunk: Chunk): void {
  if (typeof chunk !== 'object' || chunk === null) {
    throw new InvalidArgumentError(
      `${method}: expected a chunk object, got ${describeValue(chunk)}`,
    );
  }
  const { source, path, items, offset, size, last } = chunk;
  if (typeof source !== 'string' || source.length === 0 || Buffer.byteLength(source) > 200) {
    throw new InvalidArgumentError(
      `${method}: chunk.source must be a non-empty string of at most 200 bytes, got ${describeValue(source)}`,
    );
  }
  if (path !== undefined && typeof path !== 'string') {
    throw new InvalidArgumentError(
      `${method}: chunk.path must be a string, got ${describeValue(path)}`,
    );
  }
  if (!Array.isArray(items) || !items.every((i) => i instanceof Uint8Array)) {
    throw new InvalidArgumentError(
      `${method}: chunk.items must be an array of Uint8Array, got ${describeValue(items)}`,
    );
  }
  for (const [name, v] of [
    ['offset', offset],
    ['size', size],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new InvalidArgumentError(
        `${method}: chunk.${name} must be a non-negative integer, got ${describeValue(v)}`,
      );
    }
  }
  if (typeof last !== 'boolean') {
    throw new InvalidArgumentError(
      `${method}: chunk.last must be a boolean, got ${describeValue(last)}`,
    );
  }
}

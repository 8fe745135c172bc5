/**
 * The rider object of the log layout, version 1: a group of batches that a
 * producer which lost a race (or is in rider mode) publishes at
 * `{root}/riders/{group}` for the next committer to carry in its commit. See
 * docs/log-layout.md §4.6 and §7.2.
 *
 * ```
 * magic        4 bytes  "SPLR"
 * version      u16      = 1
 * writer_len   u16      then writer_len bytes, UTF-8: the producer's instance id
 * after        i64      a commit number such that no commit at or below it
 *                       holds the group (-1: the log had no commit)
 * group        16 bytes the group id, the ULID of the key, binary (big-endian)
 * batch_count  u32
 * for each batch, in append order, exactly as in a commit, except:
 *   entry_len  u32      then the entry body, sequence 0, location empty for an
 *                       inline batch (the committer names it), the object key
 *                       for an external one; its trailer is version 2 and
 *                       names the group
 *   records    u32
 *   inline_len u64      then inline_len bytes (0: external)
 * crc32c       u32      CRC32C of every byte before it
 * ```
 */
import { CorruptDataError, InvalidArgumentError } from '../errors.ts';
import type { CommitBatch } from './log-commit.ts';
import { openFrame, sealFrame, startFrame, type FrameKind } from './framed.ts';
import { encodeBatchList, readBatchList, writeBatchList } from './log-batch-list.ts';
import { decodeTrailer } from './trailer.ts';
import { isUlid, ulidFromBytes, ulidToBytes } from './ulid.ts';

/** The rider format version Spillway reads and writes. */
export const LOG_RIDER_VERSION = 1;
const MAGIC = [0x53, 0x50, 0x4c, 0x52]; // "SPLR"
const RIDER_FRAME: FrameKind = {
  name: 'rider',
  magic: MAGIC,
  magicText: 'SPLR',
  version: LOG_RIDER_VERSION,
  minBytes: 4 + 2 + 2 + 8 + 16 + 4 + 4,
};

/** A decoded rider. */
export interface Rider {
  /** The producer that wrote it. */
  writer: string;
  /** No commit at or below this number holds the group; -1 when the log had none. */
  after: number;
  /** The group id: a canonical ULID, the last part of the rider's key. */
  group: string;
  /**
   * Its batches, in order: entries with sequence 0, inline ones with an
   * empty location, each with a version-2 trailer naming the group.
   */
  batches: CommitBatch[];
}

/** The key of the rider of `group` under the queue's root. */
export function riderKey(root: string, group: string): string {
  return `${root}/riders/${group}`;
}

/** The group a rider key names, or undefined when the key is not a rider's. */
export function riderGroupOf(root: string, key: string): string | undefined {
  const prefix = `${root}/riders/`;
  if (!key.startsWith(prefix)) return undefined;
  const group = key.slice(prefix.length);
  return isUlid(group) ? group : undefined;
}

/**
 * Encodes a rider.
 *
 * @throws {InvalidArgumentError} for a batch whose sequence is not 0, an
 * inline batch with a location, an external one without, or a trailer that
 * does not name the group.
 */
export function encodeRider(r: Rider): Uint8Array {
  const writer = Buffer.from(r.writer, 'utf8').subarray(0, 65_535);
  r.batches.forEach((b, i) => {
    const problem = batchProblem(b, r.group);
    if (problem) throw new InvalidArgumentError(`rider ${r.group}: batch ${i} ${problem}`);
  });
  const list = encodeBatchList(r.batches);
  const w = startFrame(RIDER_FRAME, 4 + 2 + 2 + writer.byteLength + 8 + 16 + list.byteLength + 4);
  w.u16(writer.byteLength);
  w.raw(writer);
  w.i64(r.after);
  w.raw(ulidToBytes(r.group));
  writeBatchList(w, list);
  return sealFrame(w);
}

/** What is wrong with a rider's batch, or undefined. */
function batchProblem(b: CommitBatch, group: string): string | undefined {
  if (b.entry.sequence !== 0) return `has sequence ${b.entry.sequence}, expected 0`;
  if (b.inline && b.entry.location !== '') {
    return `is inline but has the location "${b.entry.location}" (expected none)`;
  }
  if (!b.inline && b.entry.location === '') return 'has neither inline bytes nor a location';
  if (!b.inline && /#[0-9]+$/.test(b.entry.location)) {
    return `has no inline bytes but an inline batch's name, "${b.entry.location}"`;
  }
  const t = decodeTrailer(b.entry.extension);
  if (t?.group !== group) {
    return `has ${t ? `a trailer of group ${t.group ?? '(none, version 1)'}` : 'no integrity trailer'}, expected a version-2 trailer of group ${group}`;
  }
  return undefined;
}

/**
 * Decodes a rider and checks it whole: magic, checksum, version, that its
 * group is `expectedGroup` (the one in its key), and every batch.
 *
 * @throws {CorruptDataError} naming the object.
 */
export function decodeRider(bytes: Uint8Array, what: string, expectedGroup?: string): Rider {
  const r = openFrame(bytes, what, RIDER_FRAME);
  const writer = Buffer.from(r.bytesOf(r.u16('writer length'), 'writer')).toString('utf8');
  const after = r.i64('after');
  if (after < -1) throw new CorruptDataError(`${what}: "after" is ${after}, below -1`, what);
  const group = ulidFromBytes(r.bytesOf(16, 'group'));
  if (!isUlid(group)) throw new CorruptDataError(`${what}: the group is not a ULID`, what);
  if (expectedGroup !== undefined && group !== expectedGroup) {
    throw new CorruptDataError(
      `${what}: holds group ${group}, but its key names ${expectedGroup}`,
      what,
    );
  }
  const batches = readBatchList(r, what, {
    batch: (b, i) => {
      const problem = batchProblem(b, group);
      if (problem) throw new CorruptDataError(`${what}: batch ${i} ${problem}`, what);
    },
  });
  if (batches.length === 0) throw new CorruptDataError(`${what}: holds no batch`, what);
  return { writer, after, group, batches };
}

/**
 * The commit object of the log layout, versions 1 and 2: one immutable object
 * per append, `{root}/log/{commit:020}`, holding the batches of that append
 * with consecutive sequences; version 2 also reserves the sequences after
 * them for its writer's slots (docs/log-layout.md §4.7, §7.2). See
 * docs/log-layout.md for the protocol.
 *
 * ```
 * magic         4 bytes  "SPLC"
 * version       u16      1, or 2 when `reserved` > 0
 * commit        u64      this commit's number (the one in its key)
 * first_seq     u64      sequence of its first batch
 * append_time   i64      ms since the Unix epoch; never below the previous commit's
 * total_bytes   u64      bytes of every batch object in the log through this
 *                        commit (the previous commit's total plus this one's)
 * total_records u64      records (entries) in the log through this commit
 *                        (slots are not counted in either total)
 * reserved      u32      version 2 only, at least 1: sequences reserved after
 *                        the batches, for slots (`{root}/slots/{seq:020}`)
 * writer_len    u16      then writer_len bytes, UTF-8: the writer's instance id
 * batch_count   u32
 * for each batch, sequence first_seq + i:
 *   entry_len   u32      then the entry body exactly as in a version-1 manifest
 *                        entry: sequence u64, location, metadata items,
 *                        extension (Spillway's "SPWT" integrity trailer)
 *   records     u32      records (entries) in the batch
 *   inline_len  u64      0 when the batch is its own object; else the
 *                        batch object's bytes follow (a version-1 batch object)
 *   inline      inline_len bytes
 * crc32c        u32      CRC32C of every byte before it
 * ```
 *
 * An inline batch's location is `{root}/log/{commit:020}#{i}`: its commit and
 * its place there.
 */
import { CorruptDataError, InvalidArgumentError } from '../errors.ts';
import { openVersionedFrame, sealFrame, startFrame, type FrameKind } from './framed.ts';
import { encodeBatchList, readBatchList, writeBatchList } from './log-batch-list.ts';
import type { ManifestEntry } from './manifest.ts';

/** The commit format version Spillway writes for a commit that reserves no slot. */
export const LOG_COMMIT_VERSION = 1;
/** The commit format version of a commit that reserves slots. */
export const LOG_COMMIT_RESERVING_VERSION = 2;
/** Most sequences one commit may reserve for slots. */
export const MAX_RESERVED_SEQUENCES = 4096;
const MAGIC = [0x53, 0x50, 0x4c, 0x43]; // "SPLC"
const COMMIT_FRAME: FrameKind = {
  name: 'commit',
  magic: MAGIC,
  magicText: 'SPLC',
  version: LOG_COMMIT_VERSION,
  reads: [LOG_COMMIT_VERSION, LOG_COMMIT_RESERVING_VERSION],
  minBytes: 4 + 2 + 8 + 8 + 8 + 8 + 2 + 4 + 4,
};
/** Digits of a commit number in its key: 20, enough for any u64, so keys sort by number. */
export const COMMIT_DIGITS = 20;

/** One batch in a commit. */
export interface CommitBatch {
  /** Its entry, as a manifest entry (sequence, location, metadata, trailer). */
  entry: ManifestEntry;
  /** Records (entries) in the batch. */
  records: number;
  /** The batch object's bytes when it travels inside the commit. */
  inline?: Uint8Array;
}

/** A decoded commit. */
export interface Commit {
  commit: number;
  firstSequence: number;
  appendTimeMs: number;
  /** Bytes of every batch in the log through this commit (running total). */
  totalBytes: number;
  /** Records in the log through this commit (running total). */
  totalRecords: number;
  writer: string;
  batches: CommitBatch[];
  /**
   * Sequences reserved after the batches for the writer's slots (version 2,
   * docs/log-layout.md §4.7); absent or 0 for a commit that reserves none.
   */
  reserved?: number;
}

/** Sequence after the commit's last batch and its reserved slots. */
export function commitEnd(c: Pick<Commit, 'firstSequence' | 'batches' | 'reserved'>): number {
  return c.firstSequence + c.batches.length + (c.reserved ?? 0);
}

/** The first sequence a commit reserves for slots (its end when it reserves none). */
export function slotStart(c: Pick<Commit, 'firstSequence' | 'batches'>): number {
  return c.firstSequence + c.batches.length;
}

/** The key of commit `n` under the queue's root. */
export function commitKey(root: string, n: number): string {
  return `${root}/log/${String(n).padStart(COMMIT_DIGITS, '0')}`;
}

/** The commit number in a commit key, or undefined when the key is not one. */
export function commitNumberOf(root: string, key: string): number | undefined {
  const prefix = `${root}/log/`;
  if (!key.startsWith(prefix)) return undefined;
  const digits = key.slice(prefix.length);
  if (!/^[0-9]{20}$/.test(digits)) return undefined;
  const n = Number(digits);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** The location of inline batch `index` of commit `n`. */
export function inlineLocation(root: string, n: number, index: number): string {
  return `${commitKey(root, n)}#${index}`;
}

/** The commit and index an inline location names, or undefined for an object key. */
export function parseInlineLocation(
  root: string,
  location: string,
): { commit: number; index: number } | undefined {
  const hash = location.lastIndexOf('#');
  if (hash < 0) return undefined;
  const commit = commitNumberOf(root, location.slice(0, hash));
  const index = location.slice(hash + 1);
  if (commit === undefined || !/^[0-9]{1,9}$/.test(index)) return undefined;
  return { commit, index: Number(index) };
}

/**
 * Encodes a commit. Each batch's entry must carry its sequence
 * (`firstSequence + i`).
 *
 * @throws {InvalidArgumentError} for sequences that do not follow `firstSequence`.
 */
export function encodeCommit(c: Commit): Uint8Array {
  const writer = Buffer.from(c.writer, 'utf8').subarray(0, 65_535);
  c.batches.forEach((b, i) => {
    if (b.entry.sequence !== c.firstSequence + i) {
      throw new InvalidArgumentError(
        `commit ${c.commit}: batch ${i} has sequence ${b.entry.sequence}, expected ${c.firstSequence + i}`,
      );
    }
  });
  const reserved = c.reserved ?? 0;
  if (!Number.isSafeInteger(reserved) || reserved < 0 || reserved > MAX_RESERVED_SEQUENCES) {
    throw new InvalidArgumentError(
      `commit ${c.commit}: reserves ${reserved} sequences, expected 0 to ${MAX_RESERVED_SEQUENCES}`,
    );
  }
  const list = encodeBatchList(c.batches);
  const w = startFrame(
    COMMIT_FRAME,
    4 +
      2 +
      8 +
      8 +
      8 +
      8 +
      8 +
      (reserved > 0 ? 4 : 0) +
      2 +
      writer.byteLength +
      list.byteLength +
      4,
    reserved > 0 ? LOG_COMMIT_RESERVING_VERSION : LOG_COMMIT_VERSION,
  );
  w.u64(c.commit);
  w.u64(c.firstSequence);
  w.i64(c.appendTimeMs);
  w.u64(c.totalBytes);
  w.u64(c.totalRecords);
  if (reserved > 0) w.u32(reserved);
  w.u16(writer.byteLength);
  w.raw(writer);
  writeBatchList(w, list);
  return sealFrame(w);
}

/** The end of an inline batch's location: `/log/{commit, 20 digits}#{index}`. */
const INLINE_NAME = /\/log\/[0-9]{20}#[0-9]+$/;

/**
 * Decodes a commit and checks it whole: magic, version, checksum, that its
 * number is `expected` (the one in its key), and that its batches carry
 * consecutive sequences from `first_seq`.
 *
 * @throws {CorruptDataError} naming the object.
 */
export function decodeCommit(bytes: Uint8Array, what: string, expected?: number): Commit {
  const { reader: r, version } = openVersionedFrame(bytes, what, COMMIT_FRAME);
  const commit = r.u64('commit');
  if (expected !== undefined && commit !== expected) {
    throw new CorruptDataError(
      `${what}: holds commit ${commit}, but its key names ${expected}`,
      what,
    );
  }
  const firstSequence = r.u64('first sequence');
  const appendTimeMs = r.i64('append time');
  const totalBytes = r.u64('total bytes');
  const totalRecords = r.u64('total records');
  const reserved = version === LOG_COMMIT_RESERVING_VERSION ? r.u32('reserved') : 0;
  if (
    version === LOG_COMMIT_RESERVING_VERSION &&
    (reserved < 1 || reserved > MAX_RESERVED_SEQUENCES)
  ) {
    throw new CorruptDataError(
      `${what}: a version-2 commit reserving ${reserved} sequences, expected 1 to ${MAX_RESERVED_SEQUENCES}`,
      what,
    );
  }
  const writer = Buffer.from(r.bytesOf(r.u16('writer length'), 'writer')).toString('utf8');
  const batches = readBatchList(r, what, {
    entry: (entry, i) => {
      if (entry.sequence !== firstSequence + i) {
        throw new CorruptDataError(
          `${what}: batch ${i} has sequence ${entry.sequence}, expected ${firstSequence + i}`,
          what,
        );
      }
    },
    batch: ({ entry, inline }, i) => {
      // An inline batch is named by its commit and place; nothing else may look like one.
      const own = `/log/${String(commit).padStart(20, '0')}#${i}`;
      const named = INLINE_NAME.test(entry.location);
      if (inline ? !entry.location.endsWith(own) : named) {
        throw new CorruptDataError(
          inline
            ? `${what}: inline batch ${i} is named "${entry.location}", expected a name ending "${own}"`
            : `${what}: batch ${i} has no inline bytes but an inline batch's name, "${entry.location}"`,
          what,
        );
      }
    },
  });
  const decoded: Commit = {
    commit,
    firstSequence,
    appendTimeMs,
    totalBytes,
    totalRecords,
    writer,
    batches,
  };
  if (reserved > 0) decoded.reserved = reserved;
  return decoded;
}

/**
 * The slot object of the log layout, version 1: `{root}/slots/{seq:020}`,
 * created once, by the writer of the commit that reserved `seq` (its
 * batches) or by a reader that waited too long for it (a void). See
 * docs/log-layout.md §4.7 and §7.2.
 *
 * ```
 * magic        4 bytes  "SPLS"
 * version      u16      = 1
 * commit       u64      the number of the commit that reserved the slot
 * first_seq    u64      the sequence in the slot's key
 * end_seq      u64      the end of that commit's reservation (its first
 *                       sequence + batches + reserved)
 * kind         u8       1: batches, 2: void
 * writer_len   u16      then writer_len bytes, UTF-8: who created the slot
 * token        16 bytes random: makes every slot's bytes unique, so that a
 *                       writer recognises its own create after a lost response
 * kind 1 only:
 *   batch_count u32     at least 1; first_seq + batch_count <= end_seq
 *   for each batch, sequence first_seq + i, as in a commit (§4.1), always
 *   inline, located at `{root}/slots/{first_seq:020}#{i}`
 * crc32c       u32      CRC32C of every byte before it
 * ```
 *
 * A void says that no sequence from `first_seq` to `end_seq − 1` holds a
 * batch: the reservation's writer wrote its slots in order and never writes
 * one at or after a void.
 */
import { randomBytes } from 'node:crypto';
import { CorruptDataError, InvalidArgumentError } from '../errors.ts';
import type { CommitBatch } from './log-commit.ts';
import { COMMIT_DIGITS } from './log-commit.ts';
import { openFrame, sealFrame, startFrame, type FrameKind } from './framed.ts';
import { encodeBatchList, readBatchList, writeBatchList } from './log-batch-list.ts';

/** The slot format version Spillway reads and writes. */
export const LOG_SLOT_VERSION = 1;
const MAGIC = [0x53, 0x50, 0x4c, 0x53]; // "SPLS"
const SLOT_FRAME: FrameKind = {
  name: 'slot',
  magic: MAGIC,
  magicText: 'SPLS',
  version: LOG_SLOT_VERSION,
  minBytes: 4 + 2 + 8 + 8 + 8 + 1 + 2 + 16 + 4,
};
const KIND_BATCHES = 1;
const KIND_VOID = 2;

/** A decoded slot. */
export interface Slot {
  /** The commit that reserved it. */
  commit: number;
  /** The sequence in its key: its first batch's, or the first one a void covers. */
  firstSequence: number;
  /** The end of the reservation it lies in. */
  endSequence: number;
  /** Who created it: the producer of its batches, or the reader that voided it. */
  writer: string;
  /** 16 random bytes, as 32 hex digits. */
  token: string;
  /** Its batches (sequences from `firstSequence`); empty for a void. */
  batches: CommitBatch[];
}

/** Whether a slot is a void: no batch from its first sequence to the reservation's end. */
export function isVoid(s: Pick<Slot, 'batches'>): boolean {
  return s.batches.length === 0;
}

/** The key of the slot of `sequence` under the queue's root. */
export function slotKey(root: string, sequence: number): string {
  return `${root}/slots/${String(sequence).padStart(COMMIT_DIGITS, '0')}`;
}

/** The sequence a slot key names, or undefined when the key is not a slot's. */
export function slotSequenceOf(root: string, key: string): number | undefined {
  const prefix = `${root}/slots/`;
  if (!key.startsWith(prefix)) return undefined;
  const digits = key.slice(prefix.length);
  if (!/^[0-9]{20}$/.test(digits)) return undefined;
  const n = Number(digits);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** The location of batch `index` of the slot at `sequence`. */
export function slotLocation(root: string, sequence: number, index: number): string {
  return `${slotKey(root, sequence)}#${index}`;
}

/** The slot and index a slot location names, or undefined for any other location. */
export function parseSlotLocation(
  root: string,
  location: string,
): { sequence: number; index: number } | undefined {
  const hash = location.lastIndexOf('#');
  if (hash < 0) return undefined;
  const sequence = slotSequenceOf(root, location.slice(0, hash));
  const index = location.slice(hash + 1);
  if (sequence === undefined || !/^[0-9]{1,9}$/.test(index)) return undefined;
  return { sequence, index: Number(index) };
}

/** A fresh random token for a slot. */
export function slotToken(): string {
  return randomBytes(16).toString('hex');
}

/**
 * Encodes a slot. Batches must carry sequences from `firstSequence`, all be
 * inline and end within the reservation.
 *
 * @throws {InvalidArgumentError} for anything a reader would refuse.
 */
export function encodeSlot(s: Slot, root: string): Uint8Array {
  const problem = slotProblem(s, root);
  if (problem) throw new InvalidArgumentError(`slot ${s.firstSequence}: ${problem}`);
  const writer = Buffer.from(s.writer, 'utf8').subarray(0, 65_535);
  const list = isVoid(s) ? undefined : encodeBatchList(s.batches);
  const w = startFrame(
    SLOT_FRAME,
    4 + 2 + 8 + 8 + 8 + 1 + 2 + writer.byteLength + 16 + (list?.byteLength ?? 0) + 4,
  );
  w.u64(s.commit);
  w.u64(s.firstSequence);
  w.u64(s.endSequence);
  w.u8(list ? KIND_BATCHES : KIND_VOID);
  w.u16(writer.byteLength);
  w.raw(writer);
  w.raw(Buffer.from(s.token, 'hex'));
  if (list) writeBatchList(w, list);
  return sealFrame(w);
}

/** What is wrong with a slot, or undefined. */
function slotProblem(s: Slot, root: string | undefined): string | undefined {
  if (!/^[0-9a-f]{32}$/.test(s.token)) return `its token "${s.token}" is not 32 hex digits`;
  if (s.firstSequence >= s.endSequence) {
    return `its sequence is not below the reservation's end ${s.endSequence}`;
  }
  if (s.firstSequence + s.batches.length > s.endSequence) {
    return `its ${s.batches.length} batches run past the reservation's end ${s.endSequence}`;
  }
  for (const [i, b] of s.batches.entries()) {
    if (b.entry.sequence !== s.firstSequence + i) {
      return `batch ${i} has sequence ${b.entry.sequence}, expected ${s.firstSequence + i}`;
    }
    if (!b.inline) return `batch ${i} is not inline (a slot carries its batches' bytes)`;
    const own = `/slots/${String(s.firstSequence).padStart(COMMIT_DIGITS, '0')}#${i}`;
    const expected = root === undefined ? undefined : `${root}${own}`;
    if (expected ? b.entry.location !== expected : !b.entry.location.endsWith(own)) {
      return `batch ${i} is named "${b.entry.location}", expected ${expected ? `"${expected}"` : `a name ending "${own}"`}`;
    }
  }
  return undefined;
}

/**
 * Decodes a slot and checks it whole: magic, version, checksum, that its
 * first sequence is `expectedSequence` (the one in its key), and its
 * batches' sequences and locations (exactly under `root` when given).
 *
 * @throws {CorruptDataError} naming the object.
 */
export function decodeSlot(
  bytes: Uint8Array,
  what: string,
  expectedSequence?: number,
  root?: string,
): Slot {
  const r = openFrame(bytes, what, SLOT_FRAME);
  const commit = r.u64('commit');
  const firstSequence = r.u64('first sequence');
  if (expectedSequence !== undefined && firstSequence !== expectedSequence) {
    throw new CorruptDataError(
      `${what}: holds the slot of sequence ${firstSequence}, but its key names ${expectedSequence}`,
      what,
    );
  }
  const endSequence = r.u64('end sequence');
  const kind = r.u8('kind');
  if (kind !== KIND_BATCHES && kind !== KIND_VOID) {
    throw new CorruptDataError(
      `${what}: slot kind ${kind}, expected 1 (batches) or 2 (void)`,
      what,
    );
  }
  const writer = Buffer.from(r.bytesOf(r.u16('writer length'), 'writer')).toString('utf8');
  const token = Buffer.from(r.bytesOf(16, 'token')).toString('hex');
  let batches: CommitBatch[] = [];
  if (kind === KIND_BATCHES) {
    batches = readBatchList(r, what);
    if (batches.length === 0) {
      throw new CorruptDataError(`${what}: a slot of batches that holds none`, what);
    }
  } else if (r.remaining !== 0) {
    throw new CorruptDataError(`${what}: ${r.remaining} bytes follow a void`, what);
  }
  const slot: Slot = { commit, firstSequence, endSequence, writer, token, batches };
  const problem = slotProblem(slot, root);
  if (problem) throw new CorruptDataError(`${what}: ${problem}`, what);
  return slot;
}

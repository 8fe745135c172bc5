import { CorruptDataError, InvalidArgumentError, NotFoundError } from '../errors.ts';
import { decodeBatch, type BatchLimitOptions, type DecodedBatch } from '../format/batch.ts';
import { crc32c } from '../format/crc32c.ts';
import { decodeSlot, parseSlotLocation, slotKey } from '../format/log-slot.ts';
import { entryTrailer, type ManifestEntry, type MetadataItem } from '../format/manifest.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { readShared } from './fetch-cache.ts';

/** A batch in the queue, before its object is fetched. */
export interface BatchDescriptor {
  sequence: number;
  location: string;
  metadata: MetadataItem[];
  /** Size of the batch object, from the integrity trailer, when present. */
  sizeBytes?: number;
  /** CRC32C of the batch object, from the integrity trailer, when present. */
  crc32c?: number;
  /** The producer that appended it, from the integrity trailer, when present. */
  instanceId?: string;
}

/** The descriptor of a manifest entry, with its integrity trailer's fields when it has one. */
export function describeEntry(e: ManifestEntry): BatchDescriptor {
  const t = entryTrailer(e);
  return {
    sequence: e.sequence,
    location: e.location,
    metadata: e.metadata,
    ...(t ? { sizeBytes: t.batchSizeBytes, crc32c: t.crc32c, instanceId: t.instanceId } : {}),
  };
}

/**
 * Reads a batch object and checks it against its descriptor (size and CRC32C
 * when the manifest entry has a trailer), without decoding it.
 *
 * @throws {CorruptDataError} naming the location when the object is missing
 * or has another size or checksum than its manifest entry records.
 */
export async function fetchBatchObject(
  store: ObjectStore,
  descriptor: BatchDescriptor,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  let body: Uint8Array;
  try {
    // Shared while in flight: several subscriptions of this process reading one batch
    // at the same time ask the store once.
    body = await readShared(store, descriptor.location, signal);
  } catch (e) {
    if (e instanceof NotFoundError) {
      throw new CorruptDataError(
        `batch object "${descriptor.location}" of manifest entry ${descriptor.sequence} is missing (deleted too early, or the manifest was edited)`,
        descriptor.location,
        e,
      );
    }
    throw e;
  }
  return checkBatchBytes(descriptor, body);
}

/**
 * Checks a batch object's bytes against its descriptor: size and CRC32C,
 * when the entry has a trailer. Returns `body`.
 *
 * @throws {CorruptDataError} naming the location when either differs.
 */
export function checkBatchBytes(descriptor: BatchDescriptor, body: Uint8Array): Uint8Array {
  if (descriptor.sizeBytes !== undefined && body.byteLength !== descriptor.sizeBytes) {
    throw new CorruptDataError(
      `batch object "${descriptor.location}": ${body.byteLength} bytes, but its manifest entry records ${descriptor.sizeBytes}`,
      descriptor.location,
    );
  }
  if (descriptor.crc32c !== undefined) {
    const actual = crc32c(body);
    if (actual !== descriptor.crc32c) {
      throw new CorruptDataError(
        `batch object "${descriptor.location}": CRC32C ${hex(actual)}, but its manifest entry records ${hex(descriptor.crc32c)}`,
        descriptor.location,
      );
    }
  }
  return body;
}

/**
 * The checked bytes of a batch held by a slot of the log layout (location
 * `{root}/slots/{seq:020}#{i}`, docs/log-layout.md §4.7): reads the slot
 * object (shared with reads of it in flight in the process), takes batch
 * `i`'s inline bytes and checks them against the descriptor (size and
 * CRC32C from its trailer; the slot's own CRC32C covers them too).
 *
 * @throws {InvalidArgumentError} when the location is not a slot batch's of `root`.
 * @throws {CorruptDataError} naming the location when the slot is missing
 * (collected, or never written: a reader hands out no batch of a slot it did
 * not read), does not decode, holds no such batch or one of another
 * sequence, or the bytes differ from the descriptor.
 */
export async function fetchSlotBatch(
  store: ObjectStore,
  root: string,
  descriptor: BatchDescriptor,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const at = parseSlotLocation(root, descriptor.location);
  if (!at) {
    throw new InvalidArgumentError(
      `"${descriptor.location}" is not the location of a slot batch under "${root}/slots/"`,
    );
  }
  const key = slotKey(root, at.sequence);
  let bytes: Uint8Array;
  try {
    bytes = await readShared(store, key, signal);
  } catch (e) {
    if (e instanceof NotFoundError) {
      throw new CorruptDataError(
        `slot batch "${descriptor.location}" of sequence ${descriptor.sequence} is missing (its slot was collected with its commit)`,
        descriptor.location,
        e,
      );
    }
    throw e;
  }
  const batch = decodeSlot(bytes, key, at.sequence, root).batches[at.index];
  if (!batch?.inline || batch.entry.sequence !== descriptor.sequence) {
    throw new CorruptDataError(
      `slot batch "${descriptor.location}": the slot holds ${batch ? `sequence ${batch.entry.sequence}` : 'no such batch'} there, expected sequence ${descriptor.sequence}`,
      descriptor.location,
    );
  }
  return checkBatchBytes(descriptor, batch.inline);
}

/**
 * Reads, checks and decodes a batch object ({@link fetchBatchObject}, then
 * {@link decodeBatch} bounded by `maxBatchBytes`).
 *
 * @throws {CorruptDataError} naming the location when the object is missing,
 * has another size or checksum than its manifest entry records, does not
 * decode, or decodes to more than `maxBatchBytes`.
 */
export async function fetchBatch(
  store: ObjectStore,
  descriptor: BatchDescriptor,
  signal?: AbortSignal,
  limits?: BatchLimitOptions,
): Promise<DecodedBatch & { sizeBytes: number }> {
  const body = await fetchBatchObject(store, descriptor, signal);
  const decoded = await decodeBatch(body, descriptor.location, limits);
  return { ...decoded, sizeBytes: body.byteLength };
}

/** `0x` and eight hex digits. */
export function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

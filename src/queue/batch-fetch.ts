import { CorruptDataError, NotFoundError } from '../errors.ts';
import { decodeBatch, type BatchLimitOptions, type DecodedBatch } from '../format/batch.ts';
import { crc32c } from '../format/crc32c.ts';
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

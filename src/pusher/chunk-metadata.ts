/**
 * The metadata a pusher keeps with each chunk's entries (one metadata item
 * per chunk): which job and source the entries came from and the byte range
 * they cover. The queue itself then says which chunks became durable, so a
 * restart can find the progress a crash did not let it checkpoint.
 *
 * Format (version 1): the 4 bytes "SPWI", then UTF-8 JSON
 * `{"v":1,"job":string,"source":string,"path"?:string,"offset":n,"end":n,"last":bool}`.
 */
const TAG = Buffer.from('SPWI');

/** What one chunk's metadata says. */
export interface ChunkRecord {
  /** The ingestion job (progress is kept per job). */
  job: string;
  /** The source's identity (see `Chunk.source`). */
  source: string;
  /** The source's path, when known. */
  path?: string;
  /** First byte of the source the chunk covers. */
  offset: number;
  /** One past its last byte. */
  end: number;
  /** Whether it was the source's last chunk. */
  last: boolean;
}

/** Encodes a chunk's metadata item. */
export function encodeChunkRecord(r: ChunkRecord): Uint8Array {
  const json = JSON.stringify({
    v: 1,
    job: r.job,
    source: r.source,
    ...(r.path !== undefined ? { path: r.path } : {}),
    offset: r.offset,
    end: r.end,
    last: r.last,
  });
  return Buffer.concat([TAG, Buffer.from(json)]);
}

/**
 * Decodes a metadata item written by a pusher; anything else (another
 * producer's metadata, a version this code does not know, a malformed
 * record) is undefined: metadata is opaque to the queue, so a foreign item is
 * not an error.
 */
export function decodeChunkRecord(payload: Uint8Array): ChunkRecord | undefined {
  if (payload.byteLength < TAG.byteLength + 2) return undefined;
  if (!Buffer.from(payload.buffer, payload.byteOffset, TAG.byteLength).equals(TAG))
    return undefined;
  let v: unknown;
  try {
    v = JSON.parse(
      Buffer.from(payload.buffer, payload.byteOffset + 4, payload.byteLength - 4).toString(),
    );
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (
    o.v !== 1 ||
    typeof o.job !== 'string' ||
    typeof o.source !== 'string' ||
    (o.path !== undefined && typeof o.path !== 'string') ||
    !Number.isSafeInteger(o.offset) ||
    !Number.isSafeInteger(o.end) ||
    (o.offset as number) < 0 ||
    (o.end as number) < (o.offset as number) ||
    typeof o.last !== 'boolean'
  ) {
    return undefined;
  }
  return {
    job: o.job,
    source: o.source,
    ...(o.path !== undefined ? { path: o.path } : {}),
    offset: o.offset as number,
    end: o.end as number,
    last: o.last,
  };
}

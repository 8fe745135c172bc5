import { CorruptDataError } from '../errors.ts';
import { ByteReader, ByteWriter } from './binary.ts';
import { decodeTrailer, type IntegrityTrailer } from './trailer.ts';

/** Bytes of the manifest footer: entry count u32, next sequence u64, epoch u64, version u16. */
export const MANIFEST_FOOTER_BYTES = 22;
/** The manifest format version Spillway reads and writes. */
export const MANIFEST_VERSION = 1;

/** One metadata item: covers the batch's records from `startIndex` to the next item's. */
export interface MetadataItem {
  /** Index in the batch of the first record this item covers. */
  startIndex: number;
  /** Wall-clock time of the `produce()` call, in ms since the Unix epoch. */
  ingestionTimeMs: number;
  /** Opaque bytes given to `produce()`. */
  payload: Uint8Array;
}

/** One manifest entry: a batch in the queue. */
export interface ManifestEntry {
  sequence: number;
  /** The batch object's full key. */
  location: string;
  metadata: MetadataItem[];
  /** Raw bytes of the extension slot (after the metadata), kept verbatim. */
  extension: Uint8Array;
}

/** A decoded manifest. */
export interface Manifest {
  /** Sequence the next appended entry gets. */
  nextSequence: number;
  /** Consumer fencing epoch. */
  epoch: number;
  /** Entries in ascending sequence order. */
  entries: ManifestEntry[];
}

/** The manifest of a queue that has never been written. */
export function emptyManifest(): Manifest {
  return { nextSequence: 0, epoch: 0, entries: [] };
}

/** The integrity trailer of an entry, if Spillway wrote one. */
export function entryTrailer(entry: ManifestEntry): IntegrityTrailer | undefined {
  return entry.extension.byteLength > 0 ? decodeTrailer(entry.extension) : undefined;
}

/**
 * Decodes a version-1 manifest.
 *
 * @param what the object's key, for error messages
 * @throws {CorruptDataError} for a short object, another version, an entry
 * count that does not match, an entry that overruns its length or the footer,
 * or a sequence, epoch or time beyond 2^53 - 1.
 */
export function decodeManifest(bytes: Uint8Array, what = 'manifest'): Manifest {
  if (bytes.byteLength < MANIFEST_FOOTER_BYTES) {
    throw new CorruptDataError(
      `${what}: a manifest has at least ${MANIFEST_FOOTER_BYTES} bytes (its footer), this one has ${bytes.byteLength}`,
      what,
    );
  }
  const bodyEnd = bytes.byteLength - MANIFEST_FOOTER_BYTES;
  const footer = new ByteReader(bytes, what, bodyEnd);
  const entryCount = footer.u32('entry count');
  const nextSequence = footer.u64('next sequence');
  const epoch = footer.u64('epoch');
  const version = footer.u16('version');
  if (version !== MANIFEST_VERSION) {
    throw new CorruptDataError(
      `${what}: manifest format version ${version}; this reader knows version ${MANIFEST_VERSION} (written by a newer Spillway?)`,
      what,
    );
  }
  const entries: ManifestEntry[] = [];
  const r = new ByteReader(bytes, what, 0, bodyEnd);
  while (r.remaining > 0) {
    const index = entries.length;
    const entryLen = r.u32(`length of entry ${index}`);
    if (entryLen > r.remaining) {
      throw new CorruptDataError(
        `${what}: entry ${index} claims ${entryLen} bytes, only ${r.remaining} remain before the footer`,
        what,
      );
    }
    const end = r.offset + entryLen;
    const entry = decodeEntryBody(bytes, `${what} entry ${index}`, r.offset, end);
    entries.push(entry);
    r.offset = end;
  }
  if (entries.length !== entryCount) {
    throw new CorruptDataError(
      `${what}: the footer counts ${entryCount} entries but ${entries.length} are present`,
      what,
    );
  }
  for (let i = 1; i < entries.length; i++) {
    if ((entries[i] as ManifestEntry).sequence !== (entries[i - 1] as ManifestEntry).sequence + 1) {
      throw new CorruptDataError(`${what}: entry sequences are not contiguous at entry ${i}`, what);
    }
  }
  const last = entries[entries.length - 1];
  if (last && last.sequence >= nextSequence) {
    throw new CorruptDataError(
      `${what}: entry sequence ${last.sequence} is not below next sequence ${nextSequence}`,
      what,
    );
  }
  return { nextSequence, epoch, entries };
}

/** Encodes a manifest; entries keep their sequences and extension bytes. */
export function encodeManifest(manifest: Manifest): Uint8Array {
  const bodies = manifest.entries.map(encodedEntry);
  let size = MANIFEST_FOOTER_BYTES;
  for (const b of bodies) size += 4 + b.byteLength;
  const w = new ByteWriter(size);
  for (const b of bodies) {
    w.u32(b.byteLength);
    w.raw(b);
  }
  w.u32(manifest.entries.length);
  w.u64(manifest.nextSequence);
  w.u64(manifest.epoch);
  w.u16(MANIFEST_VERSION);
  return w.bytes;
}

/**
 * Decodes one entry's body (what follows its `entry_len`: sequence, location,
 * metadata items, extension) from `bytes[start, end)`. Metadata items are
 * checked now and built on first read.
 *
 * @throws {CorruptDataError} naming `what` when the body is malformed.
 */
export function decodeEntryBody(
  bytes: Uint8Array,
  what: string,
  start: number,
  end: number,
): ManifestEntry {
  const er = new ByteReader(bytes, what, start, end);
  const sequence = er.u64('sequence');
  const locationLen = er.u16('location length');
  const location = Buffer.from(er.bytesOf(locationLen, 'location')).toString('utf8');
  const metadataCount = er.u32('metadata count');
  if (metadataCount > er.remaining / 16) {
    throw new CorruptDataError(
      `${what}: claims ${metadataCount} metadata items in ${er.remaining} bytes`,
      what,
    );
  }
  // Check every metadata item now, build the objects only when someone reads them:
  // a producer's append never does, and a manifest may hold one item per produce() call.
  const metadataStart = er.offset;
  for (let i = 0; i < metadataCount; i++) {
    er.u32(`metadata ${i} start index`);
    er.i64(`metadata ${i} ingestion time`);
    er.skip(er.u32(`metadata ${i} payload length`), `metadata ${i} payload`);
  }
  const extension = er.bytesOf(er.remaining, 'extension');
  const entry = lazyEntry(sequence, location, extension, () => {
    const mr = new ByteReader(bytes, what, metadataStart, end);
    const metadata: MetadataItem[] = new Array<MetadataItem>(metadataCount);
    for (let i = 0; i < metadataCount; i++) {
      const startIndex = mr.u32('start index');
      const ingestionTimeMs = mr.i64('ingestion time');
      metadata[i] = {
        startIndex,
        ingestionTimeMs,
        payload: mr.bytesOf(mr.u32('payload length'), 'payload'),
      };
    }
    return metadata;
  });
  ENCODED.set(entry, bytes.subarray(start, end));
  return entry;
}

/** An entry whose metadata items are decoded on first read (they were checked already). */
function lazyEntry(
  sequence: number,
  location: string,
  extension: Uint8Array,
  readMetadata: () => MetadataItem[],
): ManifestEntry {
  let metadata: MetadataItem[] | undefined;
  const entry = { sequence, location } as ManifestEntry;
  Object.defineProperty(entry, 'metadata', {
    enumerable: true,
    get: () => (metadata ??= readMetadata()),
  });
  entry.extension = extension;
  return entry;
}

/**
 * Encoded bodies of entries, by entry object: entries are never modified, so
 * an entry decoded from (or encoded into) a manifest is copied byte for byte
 * into the next version instead of being encoded again.
 */
const ENCODED = new WeakMap<ManifestEntry, Uint8Array>();

/** The encoded body of an entry (what its `entry_len` counts), cached per entry object. */
export function encodedEntry(e: ManifestEntry): Uint8Array {
  const cached = ENCODED.get(e);
  if (cached) return cached;
  const location = Buffer.from(e.location, 'utf8');
  const w = new ByteWriter(entryBodyBytes(e, location));
  w.u64(e.sequence);
  w.u16(location.byteLength);
  w.raw(location);
  w.u32(e.metadata.length);
  for (const m of e.metadata) {
    w.u32(m.startIndex);
    w.i64(m.ingestionTimeMs);
    w.u32(m.payload.byteLength);
    w.raw(m.payload);
  }
  w.raw(e.extension);
  ENCODED.set(e, w.bytes);
  return w.bytes;
}

function entryBodyBytes(e: ManifestEntry, location: Uint8Array): number {
  let n = 8 + 2 + location.byteLength + 4 + e.extension.byteLength;
  for (const m of e.metadata) n += 16 + m.payload.byteLength;
  return n;
}

/**
 * A file's bytes as they are read, decompressed: plain, gzip and zstd files,
 * recognised by their first bytes, each read through one {@link ByteReader}.
 */
import { Readable, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { fileError, openSource, type OpenedSource } from './source-identity.ts';
import { ZstdReader } from './zstd-stream.ts';

/** Bytes read from the file at a time. */
export const READ_BYTES = 64 * 1024;

/** How a file is compressed, as its first bytes tell. */
export type FileCompression = 'none' | 'gzip' | 'zstd';

/** A file's decompressed bytes, in order. */
export interface ByteReader {
  /**
   * The next bytes (a view that may be reused by the next call), or
   * undefined at the end of what the file holds. A plain file's reader may
   * be asked again after its end, for bytes appended since.
   */
  next(): Promise<Buffer | undefined>;
  close(): Promise<void>;
}

/**
 * How a file is compressed, from its first bytes (not its name): gzip
 * (`1f 8b`), zstd (a zstd frame, or a skippable frame as pzstd writes
 * first), or none.
 *
 * @param source a path (opened and closed here), or an opened source (left open).
 * @throws {InvalidArgumentError} as `openSource` does.
 * @throws {StorageError} when the filesystem fails.
 */
export async function detectCompression(source: string | OpenedSource): Promise<FileCompression> {
  const opened = typeof source === 'string' ? await openSource(source) : source;
  const head = Buffer.alloc(4);
  let bytesRead: number;
  try {
    ({ bytesRead } = await opened.handle.read(head, 0, 4, 0));
  } catch (e) {
    throw fileError(opened.path, e);
  } finally {
    if (typeof source === 'string') await opened.handle.close().catch(() => undefined);
  }
  if (bytesRead >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (bytesRead === 4) {
    const magic = head.readUInt32LE(0);
    // A zstd frame, or a skippable frame (which pzstd writes first).
    if (magic === 0xfd2fb528 || magic >>> 4 === 0x184d2a5) return 'zstd';
  }
  return 'none';
}

/** Positioned reads of a plain file, through one reused buffer. */
export class PlainReader implements ByteReader {
  private readonly buffer = Buffer.allocUnsafe(READ_BYTES);

  constructor(
    private readonly opened: OpenedSource,
    /** Offset of the next byte to read. */
    public position: number,
  ) {}

  async next(): Promise<Buffer | undefined> {
    let bytesRead: number;
    try {
      ({ bytesRead } = await this.opened.handle.read(this.buffer, 0, READ_BYTES, this.position));
    } catch (e) {
      throw fileError(this.opened.path, e);
    }
    if (bytesRead === 0) return undefined;
    this.position += bytesRead;
    return this.buffer.subarray(0, bytesRead);
  }

  async close(): Promise<void> {}
}

/** The file's compressed bytes, a fresh buffer per read (streams keep them). */
export async function* fileBytes(opened: OpenedSource): AsyncGenerator<Buffer> {
  let position = 0;
  for (;;) {
    const buffer = Buffer.allocUnsafe(READ_BYTES);
    let bytesRead: number;
    try {
      ({ bytesRead } = await opened.handle.read(buffer, 0, READ_BYTES, position));
    } catch (e) {
      throw fileError(opened.path, e);
    }
    if (bytesRead === 0) return;
    position += bytesRead;
    yield buffer.subarray(0, bytesRead);
  }
}

/**
 * gzip through node:zlib, which reads members written one after another as
 * one stream. The stream's backpressure bounds what is decompressed ahead.
 */
export class GunzipReader implements ByteReader {
  private readonly input: Readable;
  private readonly gunzip = createGunzip({ chunkSize: READ_BYTES });
  private readonly output: AsyncIterator<Buffer>;

  constructor(opened: OpenedSource) {
    this.input = Readable.from(fileBytes(opened), { objectMode: false, highWaterMark: READ_BYTES });
    // Failures of either side reach the reader through the output's iterator.
    pipeline(this.input, this.gunzip, () => undefined);
    this.output = this.gunzip[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  async next(): Promise<Buffer | undefined> {
    const r = await this.output.next();
    return r.done ? undefined : r.value;
  }

  async close(): Promise<void> {
    await this.output.return?.().catch(() => undefined);
    this.input.destroy();
    this.gunzip.destroy();
  }
}

/**
 * A reader of a file's decompressed bytes from its start.
 *
 * @param compression what {@link detectCompression} said of the file
 */
export function openByteReader(opened: OpenedSource, compression: FileCompression): ByteReader {
  if (compression === 'gzip') return new GunzipReader(opened);
  if (compression === 'zstd') return new ZstdReader(fileBytes(opened));
  return new PlainReader(opened, 0);
}

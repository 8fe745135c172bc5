/**
 * Files turned into chunks: a file's entries, read with bounded memory, in
 * pieces of about `chunkBytes`, each carrying the byte range of the file it
 * covers, so that a pusher can resume a file at the end of its last durable
 * chunk. Plain, gzip and zstd files; lines, NDJSON or CSV.
 */
import { stat } from 'node:fs/promises';
import { sleep } from '../clock.ts';
import { InvalidArgumentError, SpillwayError, asError } from '../errors.ts';
import { anySignal } from '../lifecycle.ts';
import { ChunkAssembler } from './chunk-assembler.ts';
import { CsvRecords } from './csv-records.ts';
import {
  READ_BYTES,
  PlainReader,
  detectCompression,
  openByteReader,
  type ByteReader,
  type FileCompression,
} from './file-bytes.ts';
import type { FollowOptions } from './follow-file.ts';
import { IngestInputError, LF, LineRecords, type RecordParser } from './record-parser.ts';
import { fileError, openSource, type OpenedSource } from './source-identity.ts';

/** How a file's bytes are split into entries; see {@link readFileChunks}. */
export type IngestFormat = 'lines' | 'ndjson' | 'csv';

/** Every {@link IngestFormat}, for option parsing. */
export const INGEST_FORMATS: readonly IngestFormat[] = Object.freeze(['lines', 'ndjson', 'csv']);

/** A piece of a file: its entries and the (decompressed) bytes they came from. */
export interface FileChunk {
  /** Entries of the chunk, in order (empty for the last chunk of an empty file, for instance). */
  items: Uint8Array[];
  /** Decompressed byte offset of the chunk's first byte in the source. */
  offset: number;
  /** Decompressed bytes the chunk covers: the next chunk starts at `offset + size`. */
  size: number;
  /** Whether this is the source's last chunk (end of file reached, not following; or the followed file was rotated away). */
  last: boolean;
  /** 1-based line number of the chunk's first line. */
  firstLine: number;
  /**
   * Physical lines (`\n`-terminated, and an unterminated last one) the chunk
   * covers, blank and header lines included: the next chunk's first line is
   * `firstLine + lines`. Record it with `offset + size` to resume with
   * `fromLine`.
   */
  lines: number;
}

/** Options of {@link readFileChunks}. */
export interface ReadChunksOptions {
  /** How the bytes are split into entries. */
  format: IngestFormat;
  /**
   * Target size of a chunk, in decompressed bytes of the file: a chunk ends
   * at the end of the first entry at or after this many bytes (so it may
   * exceed it by one record, and by blank lines before it). A positive
   * integer.
   */
  chunkBytes: number;
  /**
   * Largest entry accepted, in bytes (a positive integer): a longer line
   * (not counting its line end) or CSV record, or a CSV record whose JSON is
   * longer, is an {@link IngestInputError}. Also what bounds memory.
   */
  maxEntryBytes: number;
  /**
   * Decompressed byte offset to resume at: the `offset + size` of a chunk
   * read before, so the start of a line (of a record, for CSV).
   * @default 0
   */
  fromOffset?: number;
  /**
   * Decompressed byte offset to stop at: the start of bytes read before
   * (the `offset` of a chunk already pushed), so a gap between two ranges
   * can be filled. The chunk that reaches it ends there, with `last: false`,
   * and the generator returns. At least `fromOffset`; a file that ends
   * before it, or a line that crosses it, is an error.
   * @default the end of the file
   */
  endOffset?: number;
  /**
   * Line number of the line at `fromOffset` (the `firstLine + lines` of the
   * chunk that ended there), to number lines from. With it, a plain file is
   * opened at `fromOffset` at once; without it, the bytes before
   * `fromOffset` are read once more to count their line ends. A compressed file is always
   * decompressed from its start and the bytes before `fromOffset` skipped,
   * so resuming it costs a re-read of what came before.
   * @default 1 when `fromOffset` is 0, else counted
   */
  fromLine?: number;
  /**
   * Whether `fromOffset` may be inside a line: the old end of a file whose
   * last line had no `\n` when it was read to its end (that line became an
   * entry then), and which grew since. The bytes from `fromOffset` to the end
   * of that line are then read as a line of their own (numbered as the line
   * they belong to); when they are only its line end (`\n` or `\r\n`),
   * they finish the entry taken before and make none. Without it, such an
   * offset is refused as not the start of a line. It changes nothing when
   * `fromOffset` starts a line.
   * @default false
   */
  continuesLine?: boolean;
  /** Stops the reading: the generator returns (without throwing) and closes the file. */
  signal?: AbortSignal;
  /**
   * Follow mode (plain files only): at the end of the file, wait for more
   * bytes instead of ending. See {@link readFileChunks}.
   */
  follow?: FollowOptions;
}

/**
 * Reads a file as chunks of entries.
 *
 * Formats:
 * - `lines`: the bytes up to each `\n`, unchanged, except that one `\r`
 *   right before the `\n` is dropped. Bytes need not be UTF-8. An empty line
 *   is an empty entry; a last line without `\n` is an entry.
 * - `ndjson`: like `lines`, but each line that is not blank (spaces, tabs)
 *   must be UTF-8 holding one JSON value; blank lines are skipped (they
 *   still count in offsets and line numbers). The entry is the line's bytes.
 * - `csv`: RFC 4180: fields separated by `,`, records by `\n` or `\r\n`;
 *   a field in double quotes may hold commas, quotes (written `""`) and line
 *   ends, so a record may span several lines. Line 1 is the header (a UTF-8
 *   byte order mark before it is dropped); every later record becomes the
 *   entry `{"<name 1>":"<value 1>",...}` (JSON, keys in header order, values
 *   strings). A record with more or fewer fields than the header, an
 *   empty or repeated header name, a quote after a closing quote other than
 *   `""`, bytes that are not UTF-8 or a quoted field still open at the end
 *   of the file are errors. Empty lines are skipped (so a one-column empty
 *   value is written `""`); a quote inside an unquoted field is taken as
 *   is.
 *
 * gzip (also several members in a row) and zstd files are recognised by
 * their first bytes, not their names, and decompressed as they are read;
 * offsets, sizes and `chunkBytes` count decompressed bytes. Memory stays
 * bounded whatever the file holds: one read buffer, the chunk being built
 * (about `chunkBytes`, plus at most one line of `maxEntryBytes`) and, for
 * zstd, the frame's window (at most 128 MiB; larger windows are refused).
 *
 * A chunk ends at the first entry's end at or after `chunkBytes`. The chunks
 * cover the file without gaps: each starts where the one before ended, the
 * first at `fromOffset`. The last chunk says `last: true`, even when it
 * holds no entries (an empty file yields one empty last chunk).
 *
 * Errors: a bad line or record stops the reading, but not before the entries
 * before it are yielded: the generator first yields a chunk (`last: false`)
 * holding every complete entry not yet yielded, then throws. The same holds
 * for gzip or zstd data that turns out truncated or corrupt.
 *
 * Follow mode (`follow`): at the end of the file the generator yields what
 * complete entries it has and waits for more bytes, polling every
 * `pollIntervalMs`; a last line without `\n` is held back until its `\n`
 * arrives. It ends, with a `last: true` chunk, when the path names another
 * file (the file was rotated: what was appended to this one is read first,
 * and an unterminated last line is then an entry) or when the file shrinks
 * below what was read (truncated: a new source begins at the path). Aborting
 * `signal` or `follow.signal` returns without a last chunk.
 * {@link followFile} continues with the next file.
 *
 * @param source a path (opened here and closed when the generator ends), or
 * a source opened with `openSource` (left open, for the caller to close).
 * @throws {InvalidArgumentError} for bad options, a path that is no regular
 * file, a `fromOffset` past the end of the file or inside a line, or follow
 * mode on a compressed file.
 * @throws {IngestInputError} for content that does not fit the format.
 * @throws {StorageError} when the filesystem fails.
 *
 * @example
 * for await (const chunk of readFileChunks('data/events.ndjson.gz', {
 *   format: 'ndjson',
 *   chunkBytes: 1024 * 1024,
 *   maxEntryBytes: 1024 * 1024,
 * })) {
 *   await push(chunk.items); // then record chunk.offset + chunk.size
 * }
 */
export async function* readFileChunks(
  source: string | OpenedSource,
  options: ReadChunksOptions,
): AsyncGenerator<FileChunk> {
  checkReadOptions(options);
  const signal = anySignal(options.signal, options.follow?.signal);
  const aborted = (): boolean => signal?.aborted === true;
  if (aborted()) return;
  const opened = typeof source === 'string' ? await openSource(source) : source;
  const path = opened.path;
  let reader: ByteReader | undefined;
  try {
    const compression = await detectCompression(opened);
    if (options.follow && compression !== 'none') {
      throw new InvalidArgumentError(
        `${path} is ${compression}-compressed; --follow reads plain files (offsets count decompressed bytes, which a growing compressed file cannot give)`,
      );
    }
    const fromOffset = options.fromOffset ?? 0;
    const parser = recordParser(options.format, path, options.maxEntryBytes);
    let assembler: ChunkAssembler;
    const continuesLine = options.continuesLine === true;
    if (compression === 'none' && fromOffset > 0) {
      const insideLine = await checkResumeOffset(opened, fromOffset, continuesLine);
      const fromLine = options.fromLine ?? (await countLines(opened, fromOffset, aborted));
      if (fromLine === undefined) return;
      if (parser.wantsHeader) await readHeader(opened, parser, options.maxEntryBytes);
      reader = new PlainReader(opened, fromOffset);
      assembler = new ChunkAssembler(parser, path, options, {
        start: fromOffset,
        fromLine,
        continuesLine: insideLine,
      });
    } else {
      reader = openByteReader(opened, compression);
      // Decompressed from the start: the bytes before fromOffset are skipped.
      assembler = new ChunkAssembler(parser, path, options, {
        start: 0,
        fromLine: 1,
        skipTo: fromOffset,
        continuesLine,
      });
    }
    if (assembler.stopped) return;
    // Set after a rotation was seen: the old file is read to its end, then it ends.
    let draining = false;
    // Set at the end of a followed file: wait for it to change before reading on.
    let waiting = false;
    for (;;) {
      if (aborted()) return;
      let failure: Error | undefined;
      let done = false;
      try {
        if (waiting && options.follow !== undefined) {
          waiting = false;
          const position = (reader as PlainReader).position;
          const change = await waitForChange(opened, position, options.follow, signal);
          if (change === 'aborted') return;
          if (change === 'rotated') draining = true;
          if (change === 'truncated') {
            // What was past the new end is gone: the source ends with what was read.
            assembler.finish();
            done = true;
          }
        } else {
          const data = await reader.next();
          if (data !== undefined) {
            assembler.push(data);
            done = assembler.stopped;
          } else if (options.follow && !draining) {
            assembler.flush();
            waiting = true;
          } else {
            assembler.finish();
            done = true;
          }
        }
      } catch (e) {
        failure = readError(e, path, compression, assembler);
        // What came before the failure is yielded first: it was good.
        assembler.flush();
      }
      for (const c of assembler.take()) {
        if (aborted()) return;
        yield c;
      }
      if (failure !== undefined) throw failure;
      if (done) return;
    }
  } finally {
    await reader?.close();
    if (typeof source === 'string') await opened.handle.close().catch(() => undefined);
  }
}

function checkReadOptions(o: ReadChunksOptions): void {
  const bad = (name: string, expected: string, value: unknown): InvalidArgumentError =>
    new InvalidArgumentError(`readFileChunks: ${name} must be ${expected}, got ${String(value)}`);
  if (typeof o !== 'object' || o === null) throw bad('options', 'an object', o);
  if (!INGEST_FORMATS.includes(o.format)) {
    throw bad('format', `one of ${INGEST_FORMATS.join(', ')}`, o.format);
  }
  for (const name of ['chunkBytes', 'maxEntryBytes'] as const) {
    const v = o[name];
    if (!Number.isSafeInteger(v) || v < 1) throw bad(name, 'a positive integer', v);
  }
  const fromOffset = o.fromOffset ?? 0;
  if (!Number.isSafeInteger(fromOffset) || fromOffset < 0) {
    throw bad('fromOffset', 'a non-negative integer', o.fromOffset);
  }
  if (
    o.endOffset !== undefined &&
    (!Number.isSafeInteger(o.endOffset) || o.endOffset < fromOffset)
  ) {
    throw bad('endOffset', `an integer at least fromOffset (${fromOffset})`, o.endOffset);
  }
  if (o.fromLine !== undefined) {
    if (!Number.isSafeInteger(o.fromLine) || o.fromLine < 1) {
      throw bad('fromLine', 'a positive integer', o.fromLine);
    }
    if (fromOffset === 0 && o.fromLine !== 1) {
      throw bad('fromLine', '1 when fromOffset is 0', o.fromLine);
    }
  }
  if (o.continuesLine !== undefined && typeof o.continuesLine !== 'boolean') {
    throw bad('continuesLine', 'a boolean', o.continuesLine);
  }
  if (o.follow !== undefined) {
    const ms = o.follow.pollIntervalMs;
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) {
      throw bad('follow.pollIntervalMs', 'a positive number of milliseconds', ms);
    }
  }
}

function recordParser(format: IngestFormat, path: string, maxEntryBytes: number): RecordParser {
  if (format === 'csv') return new CsvRecords(path, maxEntryBytes);
  return new LineRecords(path, maxEntryBytes, format === 'ndjson');
}

/** Reads a plain file's CSV header from its start, into `parser`. */
async function readHeader(
  opened: OpenedSource,
  parser: RecordParser,
  maxEntryBytes: number,
): Promise<void> {
  const reader = new PlainReader(opened, 0);
  const lines = new ChunkAssembler(
    parser,
    opened.path,
    { chunkBytes: 1, maxEntryBytes },
    { start: 0, fromLine: 1, skipTo: Number.MAX_SAFE_INTEGER },
  );
  while (parser.wantsHeader) {
    const data = await reader.next();
    if (data === undefined) {
      lines.completePartialLine();
      return;
    }
    lines.push(data);
  }
}

/**
 * Line number of the byte at `offset` of a plain file, counting its line
 * ends; undefined when `aborted` says so first.
 */
async function countLines(
  opened: OpenedSource,
  offset: number,
  aborted: () => boolean,
): Promise<number | undefined> {
  const buffer = Buffer.allocUnsafe(READ_BYTES);
  let line = 1;
  let position = 0;
  while (position < offset) {
    if (aborted()) return undefined;
    let bytesRead: number;
    try {
      ({ bytesRead } = await opened.handle.read(
        buffer,
        0,
        Math.min(READ_BYTES, offset - position),
        position,
      ));
    } catch (e) {
      throw fileError(opened.path, e);
    }
    if (bytesRead === 0) break;
    const data = buffer.subarray(0, bytesRead);
    for (let i = data.indexOf(LF); i >= 0; i = data.indexOf(LF, i + 1)) line++;
    position += bytesRead;
  }
  return line;
}

/** A failure while reading decompressed bytes, as the error the caller sees. */
function readError(
  e: unknown,
  path: string,
  compression: FileCompression,
  assembler: ChunkAssembler,
): Error {
  if (e instanceof SpillwayError || compression === 'none') return asError(e);
  const reason = e instanceof Error ? e.message : String(e);
  return new IngestInputError(
    path,
    assembler.line,
    `the ${compression} data is truncated or corrupt (${reason}); the lines before were read`,
    e,
  );
}

// ---------------------------------------------------------------------------
// Resuming and following plain files.

/**
 * Checks that `offset` is within a plain file and starts a line (or, with
 * `continuesLine`, may be inside one); returns whether it is inside one.
 */
async function checkResumeOffset(
  opened: OpenedSource,
  offset: number,
  continuesLine: boolean,
): Promise<boolean> {
  let size: number;
  const before = Buffer.alloc(1);
  try {
    size = Number((await opened.handle.stat({ bigint: true })).size);
    if (offset <= size) await opened.handle.read(before, 0, 1, offset - 1);
  } catch (e) {
    throw fileError(opened.path, e);
  }
  if (offset > size) {
    throw new InvalidArgumentError(
      `${opened.path}: cannot resume at byte ${offset}: the file holds only ${size} bytes; it was truncated or replaced since`,
    );
  }
  // The end of a file whose last line has no "\n" is where its last chunk ended.
  const insideLine = offset < size && before[0] !== LF;
  if (insideLine && !continuesLine) {
    throw new InvalidArgumentError(
      `${opened.path}: cannot resume at byte ${offset}: it is not the start of a line; the file changed since, or the offset is not a chunk's end`,
    );
  }
  return insideLine;
}

type Change = 'grown' | 'rotated' | 'truncated' | 'aborted';

/**
 * Waits until a followed file has bytes past `position`, shrank below it
 * (truncated), or its path names another file (rotated); polls every
 * `pollIntervalMs`. A path that names nothing (renamed away, its successor
 * not yet created) is waited out: the writer may still append to this file.
 */
async function waitForChange(
  opened: OpenedSource,
  position: number,
  follow: FollowOptions,
  signal: AbortSignal | undefined,
): Promise<Change> {
  for (;;) {
    try {
      await sleep(follow.pollIntervalMs, { clock: follow.clock, signal });
    } catch {
      return 'aborted';
    }
    let size: bigint;
    try {
      size = (await opened.handle.stat({ bigint: true })).size;
    } catch (e) {
      throw fileError(opened.path, e);
    }
    if (size > BigInt(position)) return 'grown';
    if (size < BigInt(position)) return 'truncated';
    try {
      const now = await stat(opened.path, { bigint: true });
      if (now.dev.toString() !== opened.dev || now.ino.toString() !== opened.ino) return 'rotated';
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw fileError(opened.path, e);
    }
  }
}

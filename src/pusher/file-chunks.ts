/**
 * Files turned into chunks: a file's entries, read with bounded memory, in
 * pieces of about `chunkBytes`, each carrying the byte range of the file it
 * covers, so that a pusher can resume a file at the end of its last durable
 * chunk. Plain, gzip and zstd files; lines, NDJSON or CSV.
 */
import { stat } from 'node:fs/promises';
import { Readable, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import { sleep } from '../clock.ts';
import { InvalidArgumentError, SpillwayError, asError } from '../errors.ts';
import type { FollowOptions } from './follow-file.ts';
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
  /** Stops the reading: the generator returns (without throwing) and closes the file. */
  signal?: AbortSignal;
  /**
   * Follow mode (plain files only): at the end of the file, wait for more
   * bytes instead of ending. See {@link readFileChunks}.
   */
  follow?: FollowOptions;
}

/**
 * A file's content is not what its format says: a line that is not JSON, a
 * CSV record with the wrong number of fields, a line longer than
 * `maxEntryBytes`, gzip or zstd data that is truncated or corrupt. The
 * message names the file and line, for example
 * `data/x.csv line 7: 4 fields, the header has 3`. Its code is
 * `INVALID_ARGUMENT`: reading the same bytes again fails again.
 */
export class IngestInputError extends InvalidArgumentError {
  /** The file, as it was given. */
  readonly path: string;
  /** 1-based line number where the bad line or record starts (a CSV header is line 1). */
  readonly line: number;

  constructor(path: string, line: number, detail: string, cause?: unknown) {
    super(`${path} line ${line}: ${detail}`, cause);
    this.path = path;
    this.line = line;
  }
}

/** Bytes read from the file at a time. */
const READ_BYTES = 64 * 1024;
/**
 * The largest zstd window accepted, which the decoder allocates whole: the
 * default limit of the `zstd` command's own decoder (`--long=27`).
 */
const ZSTD_MAX_WINDOW_BYTES = 128 * 1024 * 1024;
/** Block_Maximum_Size of the zstd format. */
const ZSTD_MAX_BLOCK_BYTES = 128 * 1024;

const LF = 0x0a;
const CR = 0x0d;
const QUOTE = 0x22;
const COMMA = 0x2c;

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
    if (compression === 'none' && fromOffset > 0) {
      await checkResumeOffset(opened, fromOffset);
      const fromLine = options.fromLine ?? (await countLines(opened, fromOffset, aborted));
      if (fromLine === undefined) return;
      if (parser.wantsHeader) await readHeader(opened, parser, options.maxEntryBytes);
      reader = new PlainReader(opened, fromOffset);
      assembler = new ChunkAssembler(parser, path, options, { start: fromOffset, fromLine });
    } else {
      reader =
        compression === 'none'
          ? new PlainReader(opened, 0)
          : compression === 'gzip'
            ? new GunzipReader(opened)
            : new ZstdReader(opened);
      // Decompressed from the start: the bytes before fromOffset are skipped.
      assembler = new ChunkAssembler(parser, path, options, {
        start: 0,
        fromLine: 1,
        skipTo: fromOffset,
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
  if (o.follow !== undefined) {
    const ms = o.follow.pollIntervalMs;
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) {
      throw bad('follow.pollIntervalMs', 'a positive number of milliseconds', ms);
    }
  }
}

// ---------------------------------------------------------------------------
// Chunks: physical lines grouped into records, records into chunks.

/** What a record parser makes of a line: an entry, or one of these. */
const SKIP = Symbol('skip');
const MORE = Symbol('more');
type LineResult = Uint8Array | typeof SKIP | typeof MORE;

/** Turns physical lines into entries, one format. */
interface RecordParser {
  /** Whether the parser still needs its header (CSV before line 1 is read). */
  readonly wantsHeader: boolean;
  /**
   * Takes one line: its bytes without the `\n` (a view that is reused: copy
   * what is kept), `terminated` false for a last line without one. Returns
   * the entry of the record the line ends, `SKIP` when it ends one without
   * an entry (a blank line, the header), or `MORE` when the record goes on.
   *
   * @throws {IngestInputError} for a bad line or record.
   */
  line(bytes: Buffer, number: number, terminated: boolean): LineResult;
  /** The input ended. @throws {IngestInputError} for a record left open. */
  end(): void;
}

/** Where a {@link ChunkAssembler} starts. */
interface AssemblerStart {
  /** Offset of the first byte pushed. */
  start: number;
  /** Number of the line starting at `start`. */
  fromLine: number;
  /**
   * Lines ending at or before this offset are counted but not chunked (only
   * a CSV header among them is parsed): the resume point of a file read
   * from its start.
   */
  skipTo?: number;
}

/**
 * Splits decompressed bytes into lines and groups them into chunks. Chunks
 * are queued as they complete, and taken by the generator.
 *
 * The chunk being built holds only complete records ("committed"); the bytes
 * of an open record (a CSV record spanning lines) and the partial last line
 * belong to the next chunk.
 */
class ChunkAssembler {
  private ready: FileChunk[] = [];
  private items: Uint8Array[] = [];
  private chunkOffset: number;
  private chunkFirstLine: number;
  private committedBytes = 0;
  private committedLines = 0;
  /** Set once the chunk reached chunkBytes; it is emitted when more bytes arrive, or as the last. */
  private full = false;
  /** Bytes and lines of the open record. */
  private recordBytes = 0;
  private recordLines = 0;
  /** The partial line: copies of its pieces, and their total length. */
  private pieces: Buffer[] = [];
  private pending = 0;
  /** Offset of the partial line's first byte. */
  private lineStart: number;
  /** Number of the partial line. */
  private nextLine: number;
  private readonly skipTo: number;
  private readonly endAt: number;
  private readonly chunkBytes: number;
  private readonly maxEntryBytes: number;
  private reachedEnd = false;

  constructor(
    private readonly parser: RecordParser,
    private readonly path: string,
    options: Pick<ReadChunksOptions, 'chunkBytes' | 'maxEntryBytes' | 'endOffset'>,
    at: AssemblerStart,
  ) {
    this.chunkBytes = options.chunkBytes;
    this.maxEntryBytes = options.maxEntryBytes;
    this.endAt = options.endOffset ?? Infinity;
    this.skipTo = at.skipTo ?? 0;
    this.chunkOffset = at.start;
    this.lineStart = at.start;
    this.chunkFirstLine = at.fromLine;
    this.nextLine = at.fromLine;
    if (Math.max(at.start, this.skipTo) === this.endAt) this.reachedEnd = true;
  }

  /** Number of the line being read (for errors in the data under it). */
  get line(): number {
    return this.nextLine;
  }

  /** Whether `endOffset` was reached: nothing more is to be read. */
  get stopped(): boolean {
    return this.reachedEnd;
  }

  /** Takes the next bytes. @throws {IngestInputError} for bad content. */
  push(data: Buffer): void {
    let start = 0;
    while (start < data.length && !this.reachedEnd) {
      if (this.full) this.emit(false);
      const nl = data.indexOf(LF, start);
      if (nl < 0) break;
      this.checkLineLength(this.pending + (nl - start));
      let line = data.subarray(start, nl);
      if (this.pending > 0) {
        line = Buffer.concat([...this.pieces, line], this.pending + line.length);
        this.pieces = [];
        this.pending = 0;
      }
      this.completeLine(line, true);
      start = nl + 1;
    }
    if (start < data.length && !this.reachedEnd) {
      if (this.full) this.emit(false);
      this.checkLineLength(this.pending + (data.length - start));
      // A copy: readers reuse their buffers.
      this.pieces.push(Buffer.from(data.subarray(start)));
      this.pending += data.length - start;
    }
  }

  /** Queues the chunk of the complete records not yet queued, if it has any bytes. */
  flush(): void {
    if (this.committedBytes > 0) this.emit(false);
  }

  /**
   * The input ended: the partial line becomes the last line, and the last
   * chunk is queued.
   * @throws {IngestInputError} for a record left open.
   * @throws {InvalidArgumentError} when the input ended before the resume
   * point or before `endOffset`.
   */
  finish(): void {
    this.completePartialLine();
    if (this.reachedEnd) return;
    if (this.lineStart < this.skipTo || this.endAt !== Infinity) {
      const wanted =
        this.lineStart < this.skipTo
          ? `resume at byte ${this.skipTo}`
          : `read up to byte ${this.endAt}`;
      throw new InvalidArgumentError(
        `${this.path}: cannot ${wanted}: the file holds only ${this.lineStart} bytes (decompressed); it was truncated or replaced since`,
      );
    }
    this.parser.end();
    this.emit(true);
  }

  /** Completes a last line without `\n`, if there is one. */
  completePartialLine(): void {
    if (this.pending === 0) return;
    if (this.full) this.emit(false);
    const line = Buffer.concat(this.pieces, this.pending);
    this.pieces = [];
    this.pending = 0;
    this.completeLine(line, false);
  }

  /** The chunks queued since the last call. */
  take(): FileChunk[] {
    const out = this.ready;
    this.ready = [];
    return out;
  }

  private checkLineLength(bytes: number): void {
    // One byte more than maxEntryBytes: the "\r" of a CRLF line end.
    if (bytes > this.maxEntryBytes + 1) {
      throw new IngestInputError(
        this.path,
        this.nextLine,
        `the line is longer than ${this.maxEntryBytes} bytes, the largest entry accepted (maxEntryBytes); split it, or raise the limit`,
      );
    }
  }

  private completeLine(line: Buffer, terminated: boolean): void {
    const number = this.nextLine++;
    const start = this.lineStart;
    const end = start + line.length + (terminated ? 1 : 0);
    this.lineStart = end;
    if (start < this.skipTo) {
      if (end > this.skipTo) throw this.notALineStart('resume at', this.skipTo, number, start, end);
      if (this.parser.wantsHeader) this.parser.line(line, number, terminated);
      if (end === this.skipTo) {
        this.chunkOffset = end;
        this.chunkFirstLine = this.nextLine;
        if (end === this.endAt) this.reachedEnd = true;
      }
      return;
    }
    if (end > this.endAt) throw this.notALineStart('stop at', this.endAt, number, start, end);
    this.recordBytes += end - start;
    this.recordLines++;
    const result = this.parser.line(line, number, terminated);
    if (result === MORE) {
      if (end === this.endAt) throw this.notALineStart('stop at', this.endAt, number, start, end);
      return;
    }
    if (result !== SKIP) this.items.push(result);
    this.committedBytes += this.recordBytes;
    this.committedLines += this.recordLines;
    this.recordBytes = 0;
    this.recordLines = 0;
    if (end === this.endAt) {
      this.emit(false);
      this.reachedEnd = true;
    } else if (result !== SKIP && this.committedBytes >= this.chunkBytes) {
      // Only an entry ends a chunk: a run of blank lines costs no memory, and makes no empty chunks.
      this.full = true;
    }
  }

  private notALineStart(
    what: string,
    offset: number,
    line: number,
    start: number,
    end: number,
  ): InvalidArgumentError {
    return new InvalidArgumentError(
      `${this.path}: cannot ${what} byte ${offset}: it is inside line ${line} (bytes ${start} to ${end}) or its record, not at the start of one; the file changed since, or the offset is not a chunk's end`,
    );
  }

  private emit(last: boolean): void {
    this.ready.push({
      items: this.items,
      offset: this.chunkOffset,
      size: this.committedBytes,
      last,
      firstLine: this.chunkFirstLine,
      lines: this.committedLines,
    });
    this.chunkOffset += this.committedBytes;
    this.chunkFirstLine += this.committedLines;
    this.items = [];
    this.committedBytes = 0;
    this.committedLines = 0;
    this.full = false;
  }
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

function recordParser(format: IngestFormat, path: string, maxEntryBytes: number): RecordParser {
  if (format === 'csv') return new CsvRecords(path, maxEntryBytes);
  return new LineRecords(path, maxEntryBytes, format === 'ndjson');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** `lines` and `ndjson`: one line, one entry. */
class LineRecords implements RecordParser {
  readonly wantsHeader = false;

  constructor(
    private readonly path: string,
    private readonly maxEntryBytes: number,
    private readonly ndjson: boolean,
  ) {}

  line(bytes: Buffer, number: number): LineResult {
    const line = bytes.length > 0 && bytes[bytes.length - 1] === CR ? bytes.subarray(0, -1) : bytes;
    if (line.length > this.maxEntryBytes) {
      throw new IngestInputError(
        this.path,
        number,
        `the line is longer than ${this.maxEntryBytes} bytes, the largest entry accepted (maxEntryBytes); split it, or raise the limit`,
      );
    }
    if (this.ndjson) {
      if (isBlank(line)) return SKIP;
      checkJson(line, this.path, number);
    }
    return Buffer.from(line);
  }

  end(): void {}
}

function isBlank(line: Uint8Array): boolean {
  for (const b of line) if (b !== 0x20 && b !== 0x09 && b !== CR) return false;
  return true;
}

function checkJson(line: Uint8Array, path: string, number: number): void {
  let text: string;
  try {
    text = utf8.decode(line);
  } catch (e) {
    throw new IngestInputError(
      path,
      number,
      'not valid UTF-8; --format ndjson expects one JSON value per line (use --format lines for other bytes)',
      e,
    );
  }
  try {
    JSON.parse(text);
  } catch (e) {
    throw new IngestInputError(
      path,
      number,
      `not valid JSON (${(e as Error).message}); --format ndjson expects one JSON value per line`,
      e,
    );
  }
}

/** Keeps a byte order mark in field values: only the header's is dropped, on purpose. */
const utf8KeepBom = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * `csv`: RFC 4180 records, each after the header an NDJSON object. Each line
 * is decoded once (UTF-8 sequences never span a line end) and parsed as
 * text.
 */
class CsvRecords implements RecordParser {
  /** The header's names, JSON-encoded with their colon, once read. */
  private keys: string[] | undefined;
  private fields: string[] = [];
  /** The field being read, so far. */
  private field = '';
  private inQuotes = false;
  /** A quoted field's closing quote was read: a comma or the line end must follow. */
  private afterQuote = false;
  /** The field being read has begun (a quote opens a quoted field only as its first character). */
  private fieldStarted = false;
  /** A record is open (it began on an earlier line). */
  private open = false;
  private recordLine = 0;
  private recordBytes = 0;

  constructor(
    private readonly path: string,
    private readonly maxEntryBytes: number,
  ) {}

  get wantsHeader(): boolean {
    return this.keys === undefined;
  }

  line(bytes: Buffer, number: number, terminated: boolean): LineResult {
    if (!this.open) {
      if (bytes.length === 0 || (bytes.length === 1 && bytes[0] === CR)) return SKIP;
      this.open = true;
      this.recordLine = number;
      this.recordBytes = 0;
    }
    this.recordBytes += bytes.length + (terminated ? 1 : 0);
    if (this.recordBytes > this.maxEntryBytes + 1) {
      throw this.error(
        `the record is longer than ${this.maxEntryBytes} bytes, the largest entry accepted (maxEntryBytes); is a quoted field left open?`,
      );
    }
    let text: string;
    try {
      text = utf8KeepBom.decode(bytes);
    } catch (e) {
      const where = number === this.recordLine ? '' : ` (its line ${number})`;
      throw this.error(`the record is not valid UTF-8${where}; CSV fields become JSON strings`, e);
    }
    const n = text.length;
    let i = 0;
    while (i < n) {
      if (this.inQuotes) {
        const q = text.indexOf('"', i);
        if (q < 0) {
          this.field += text.slice(i);
          i = n;
        } else if (text.charCodeAt(q + 1) === QUOTE) {
          this.field += text.slice(i, q + 1);
          i = q + 2;
        } else {
          this.field += text.slice(i, q);
          this.inQuotes = false;
          this.afterQuote = true;
          i = q + 1;
        }
        continue;
      }
      const c = text.charCodeAt(i);
      if (this.afterQuote) {
        if (c === COMMA) {
          this.endField();
          i++;
        } else if (c === CR && i === n - 1) {
          i++;
        } else {
          throw this.error(
            `a closing quote must be followed by a comma or the end of the line, not ${JSON.stringify(text[i])}; write a quote inside a quoted field as ""`,
          );
        }
        continue;
      }
      if (c === QUOTE && !this.fieldStarted) {
        this.inQuotes = true;
        this.fieldStarted = true;
        i++;
        continue;
      }
      const comma = text.indexOf(',', i);
      // The "\r" of a CRLF record end is no part of the last field.
      const stop = comma >= 0 ? comma : text.charCodeAt(n - 1) === CR ? n - 1 : n;
      if (stop > i) this.field += text.slice(i, stop);
      this.fieldStarted = true;
      if (comma < 0) {
        i = n;
      } else {
        this.endField();
        i = comma + 1;
      }
    }
    if (this.inQuotes) {
      // The line end is part of the quoted field (its "\r", if any, was taken above).
      if (terminated) this.field += '\n';
      return MORE;
    }
    this.endField();
    const fields = this.fields;
    this.fields = [];
    this.open = false;
    return this.record(fields);
  }

  end(): void {
    if (this.open) {
      throw this.error(
        'a quoted field is still open at the end of the file (a missing closing quote)',
      );
    }
  }

  private endField(): void {
    this.fields.push(this.field);
    this.field = '';
    this.fieldStarted = false;
    this.afterQuote = false;
  }

  private record(fields: string[]): LineResult {
    if (this.keys === undefined) {
      this.keys = this.header(fields);
      return SKIP;
    }
    if (fields.length !== this.keys.length) {
      throw this.error(
        `${fields.length} field${fields.length === 1 ? '' : 's'}, the header has ${this.keys.length}`,
      );
    }
    // Built by hand: an object would put integer-like names first and treat "__proto__" specially.
    let json = '{';
    for (let i = 0; i < fields.length; i++) {
      if (i > 0) json += ',';
      json += (this.keys[i] as string) + JSON.stringify(fields[i]);
    }
    json += '}';
    const entry = Buffer.from(json);
    if (entry.length > this.maxEntryBytes) {
      throw this.error(
        `the record is ${entry.length} bytes as JSON, more than ${this.maxEntryBytes}, the largest entry accepted (maxEntryBytes)`,
      );
    }
    return entry;
  }

  private header(fields: string[]): string[] {
    if (fields[0]?.startsWith('\ufeff')) fields[0] = fields[0].slice(1);
    const seen = new Map<string, number>();
    for (const [i, name] of fields.entries()) {
      if (name === '') {
        throw this.error(
          `column ${i + 1} of the header has no name; every column needs a unique name, which becomes the JSON key`,
        );
      }
      const before = seen.get(name);
      if (before !== undefined) {
        throw this.error(
          `the header names ${JSON.stringify(name)} twice (columns ${before + 1} and ${i + 1}); every column needs a unique name, which becomes the JSON key`,
        );
      }
      seen.set(name, i);
    }
    return fields.map((name) => `${JSON.stringify(name)}:`);
  }

  private error(detail: string, cause?: unknown): IngestInputError {
    return new IngestInputError(this.path, this.recordLine, detail, cause);
  }
}

// ---------------------------------------------------------------------------
// Bytes: plain, gzip and zstd files, decompressed as they are read.

/** How a file is compressed, as its first bytes tell. */
export type FileCompression = 'none' | 'gzip' | 'zstd';

/** A file's decompressed bytes, in order. */
interface ByteReader {
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
class PlainReader implements ByteReader {
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
async function* fileBytes(opened: OpenedSource): AsyncGenerator<Buffer> {
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
class GunzipReader implements ByteReader {
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
 * zstd through fzstd's streaming decoder. The decoder decompresses whatever
 * complete blocks it is given at once, and one 64 KiB read of a hostile file
 * can hold thousands of blocks of 128 KiB each; so the input is cut after
 * every block (found by walking the frame and block headers) and handed over
 * one block per call, which bounds the output of a call to 128 KiB.
 */
class ZstdReader implements ByteReader {
  private readonly walker = new ZstdWalker();
  private readonly decoder: Decompress;
  private readonly output: Buffer[] = [];
  private readonly input: AsyncGenerator<Buffer>;
  private pending: Buffer | undefined;
  private cuts: number[] = [];
  private cut = 0;
  private from = 0;
  private ended = false;

  constructor(opened: OpenedSource) {
    this.input = fileBytes(opened);
    // A copy: the decoder reuses its window.
    this.decoder = new Decompress((data) => {
      if (data.length > 0) this.output.push(Buffer.from(data));
    });
  }

  async next(): Promise<Buffer | undefined> {
    for (;;) {
      const out = this.output.shift();
      if (out !== undefined) return out;
      const pending = this.pending;
      if (pending !== undefined && this.cut < this.cuts.length) {
        const end = this.cuts[this.cut++] as number;
        this.decoder.push(pending.subarray(this.from, end));
        this.from = end;
        continue;
      }
      if (pending !== undefined && this.from < pending.length) {
        // The start of a block that the next read completes: the decoder keeps it.
        this.decoder.push(pending.subarray(this.from));
        this.from = pending.length;
        continue;
      }
      if (this.ended) return undefined;
      const r = await this.input.next();
      if (r.done) {
        this.ended = true;
        this.pending = undefined;
        this.walker.end();
        this.decoder.push(new Uint8Array(0), true);
        continue;
      }
      this.pending = r.value;
      this.cuts = this.walker.scan(r.value);
      this.cut = 0;
      this.from = 0;
    }
  }

  async close(): Promise<void> {
    await this.input.return(undefined);
  }
}

/**
 * Walks a zstd stream's frame and block headers as its bytes arrive, to find
 * where each block ends, and refuses what the decoder cannot do safely: a
 * window over 128 MiB (allocated up front), a dictionary, reserved values.
 */
class ZstdWalker {
  private state: 'frame' | 'block-header' | 'block' | 'checksum' | 'skip' = 'frame';
  /** Header bytes gathered so far (frame or block header). */
  private header: number[] = [];
  /** Bytes left in the current block, checksum or skippable frame. */
  private left = 0;
  private lastBlock = false;
  private checksum = false;
  /** Offset of the current frame in the stream, for messages. */
  private frameStart = 0;
  private offset = 0;

  /** Offsets in `data` just after each block that ends in it. @throws {Error} for bad headers. */
  scan(data: Uint8Array): number[] {
    const cuts: number[] = [];
    let i = 0;
    while (i < data.length) {
      if (this.state === 'block' || this.state === 'checksum' || this.state === 'skip') {
        const n = Math.min(this.left, data.length - i);
        i += n;
        this.left -= n;
        if (this.left > 0) break;
        if (this.state === 'block') {
          cuts.push(i);
          this.endBlock(this.offset + i);
        } else {
          this.startFrame(this.offset + i);
        }
        continue;
      }
      this.header.push(data[i++] as number);
      if (this.state === 'frame') this.frameHeader();
      else this.blockHeader(this.offset + i);
    }
    this.offset += data.length;
    return cuts;
  }

  /** The stream ended. @throws {Error} when it ends inside a frame. */
  end(): void {
    if (this.state !== 'frame' || this.header.length > 0) {
      throw new Error(`truncated: the stream ends inside the frame at byte ${this.frameStart}`);
    }
  }

  private startFrame(at: number): void {
    this.state = 'frame';
    this.header = [];
    this.frameStart = at;
  }

  private frameHeader(): void {
    const h = this.header;
    if (h.length < 4) return;
    const magic =
      ((h[0] as number) |
        ((h[1] as number) << 8) |
        ((h[2] as number) << 16) |
        ((h[3] as number) << 24)) >>>
      0;
    if (magic >>> 4 === 0x184d2a5) {
      if (h.length < 8) return;
      this.left =
        ((h[4] as number) |
          ((h[5] as number) << 8) |
          ((h[6] as number) << 16) |
          ((h[7] as number) << 24)) >>>
        0;
      this.state = 'skip';
      this.header = [];
      if (this.left === 0) this.startFrame(this.frameStart + 8);
      return;
    }
    if (magic !== 0xfd2fb528) {
      throw new Error(
        `no zstd frame at byte ${this.frameStart} (trailing garbage, or corrupt data)`,
      );
    }
    if (h.length < 5) return;
    const descriptor = h[4] as number;
    const contentSizeFlag = descriptor >> 6;
    const singleSegment = (descriptor >> 5) & 1;
    const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3] as number;
    const contentSizeBytes = contentSizeFlag === 0 ? singleSegment : 1 << contentSizeFlag;
    const length = 5 + (singleSegment ? 0 : 1) + dictionaryIdBytes + contentSizeBytes;
    if (h.length < length) return;
    if (descriptor & 0x08)
      throw new Error(`the frame at byte ${this.frameStart} sets a reserved bit`);
    let at = 5;
    let window = 0;
    if (!singleSegment) {
      const w = h[at++] as number;
      const base = 2 ** (10 + (w >> 3));
      window = base + (base / 8) * (w & 7);
    }
    let dictionaryId = 0;
    for (let k = 0; k < dictionaryIdBytes; k++) dictionaryId += (h[at++] as number) * 2 ** (8 * k);
    let contentSize = 0;
    for (let k = 0; k < contentSizeBytes; k++) contentSize += (h[at++] as number) * 2 ** (8 * k);
    if (contentSizeBytes === 2) contentSize += 256;
    if (singleSegment) window = contentSize;
    if (dictionaryId !== 0) {
      throw new Error(
        `the frame at byte ${this.frameStart} needs a dictionary (id ${dictionaryId})`,
      );
    }
    if (window > ZSTD_MAX_WINDOW_BYTES) {
      throw new Error(
        `the frame at byte ${this.frameStart} asks for a ${window}-byte window, more than ${ZSTD_MAX_WINDOW_BYTES} (128 MiB, the zstd command's own default limit); recompress it without --long or --ultra`,
      );
    }
    this.checksum = ((descriptor >> 2) & 1) === 1;
    this.state = 'block-header';
    this.header = [];
  }

  /** @param at stream offset just after the header's last byte */
  private blockHeader(at: number): void {
    const h = this.header;
    if (h.length < 3) return;
    const value = (h[0] as number) | ((h[1] as number) << 8) | ((h[2] as number) << 16);
    this.header = [];
    this.lastBlock = (value & 1) === 1;
    const type = (value >> 1) & 3;
    const size = value >>> 3;
    if (type === 3)
      throw new Error(`a block of the frame at byte ${this.frameStart} has the reserved type 3`);
    if (size > ZSTD_MAX_BLOCK_BYTES) {
      throw new Error(
        `a block of the frame at byte ${this.frameStart} claims ${size} bytes, more than 128 KiB`,
      );
    }
    // An RLE block stores one byte, repeated `size` times.
    this.left = type === 1 ? 1 : size;
    this.state = 'block';
    if (this.left === 0) this.endBlock(at);
  }

  /** @param at stream offset just after the block */
  private endBlock(at: number): void {
    if (!this.lastBlock) {
      this.state = 'block-header';
    } else if (this.checksum) {
      this.state = 'checksum';
      this.left = 4;
    } else {
      this.startFrame(at);
    }
  }
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

/** Checks that `offset` is within a plain file and starts a line. */
async function checkResumeOffset(opened: OpenedSource, offset: number): Promise<void> {
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
  if (offset < size && before[0] !== LF) {
    throw new InvalidArgumentError(
      `${opened.path}: cannot resume at byte ${offset}: it is not the start of a line; the file changed since, or the offset is not a chunk's end`,
    );
  }
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

/**
 * One signal that aborts when any of the given ones does (undefined for
 * none). Shared with follow mode, which has a signal of its own.
 */
export function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const given = [...new Set(signals)].filter((s): s is AbortSignal => s !== undefined);
  if (given.length <= 1) return given[0];
  return AbortSignal.any(given);
}

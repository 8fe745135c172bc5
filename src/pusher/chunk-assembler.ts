/**
 * Chunks from decompressed bytes: bytes split into physical lines, lines
 * grouped into records by a {@link RecordParser}, records into chunks of
 * about `chunkBytes`, each with the byte range and line numbers it covers.
 */
import { InvalidArgumentError } from '../errors.ts';
import type { FileChunk, ReadChunksOptions } from './file-chunks.ts';
import { CR, IngestInputError, LF, MORE, SKIP, type RecordParser } from './record-parser.ts';

/** Where a {@link ChunkAssembler} starts. */
export interface AssemblerStart {
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
  /**
   * The line at `start`, or the one that crosses `skipTo`, continues a line
   * whose first part an earlier read took as an entry (see
   * `ReadChunksOptions.continuesLine`): its bytes from `start` (`skipTo`)
   * on are a line of their own, or nothing when they are only its line end.
   */
  continuesLine?: boolean;
}

/**
 * Splits decompressed bytes into lines and groups them into chunks. Chunks
 * are queued as they complete, and taken by the generator.
 *
 * The chunk being built holds only complete records ("committed"); the bytes
 * of an open record (a CSV record spanning lines) and the partial last line
 * belong to the next chunk.
 */
export class ChunkAssembler {
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
  /** Whether a line may continue one read before; see {@link AssemblerStart.continuesLine}. */
  private readonly continuesLine: boolean;
  /** Whether the next line completed is the rest of a line read before. */
  private continuing: boolean;

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
    this.continuesLine = at.continuesLine === true;
    this.continuing = this.continuesLine && this.skipTo === 0 && at.start > 0;
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
    let start = this.lineStart;
    const end = start + line.length + (terminated ? 1 : 0);
    this.lineStart = end;
    if (start < this.skipTo && end > this.skipTo && this.continuesLine) {
      // The resume point is inside this line: its first part was an entry already.
      if (this.parser.wantsHeader) this.parser.line(line, number, terminated);
      line = line.subarray(this.skipTo - start);
      start = this.skipTo;
      this.chunkOffset = start;
      this.chunkFirstLine = number;
      this.continuing = true;
    } else if (start < this.skipTo) {
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
    // The rest of a line taken before that is only its line end finishes that entry.
    const result =
      this.continuing && isLineEnd(line) ? SKIP : this.parser.line(line, number, terminated);
    this.continuing = false;
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

/** Whether a line's bytes (without its `\n`) are nothing, or the `\r` of a CRLF. */
function isLineEnd(line: Buffer): boolean {
  return line.length === 0 || (line.length === 1 && line[0] === CR);
}

/**
 * Record parsers: how the physical lines of a file become entries, one
 * parser per format. `lines` and `ndjson` are here (one line, one entry);
 * CSV, whose records may span lines, is in `csv-records.ts`.
 */
import { InvalidArgumentError } from '../errors.ts';

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

/** A line feed, the end of a line. */
export const LF = 0x0a;
/** A carriage return: dropped before a line's `\n` (CRLF line ends). */
export const CR = 0x0d;

/** What a record parser returns for a line that ends a record without an entry (a blank line, a CSV header). */
export const SKIP = Symbol('skip');
/** What a record parser returns for a line that does not end its record (a CSV quoted field goes on). */
export const MORE = Symbol('more');
/** What a record parser makes of a line: an entry, {@link SKIP} or {@link MORE}. */
export type LineResult = Uint8Array | typeof SKIP | typeof MORE;

/** Turns physical lines into entries, one format. */
export interface RecordParser {
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

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** `lines` and `ndjson`: one line, one entry. */
export class LineRecords implements RecordParser {
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

/**
 * The CSV record parser of `--format csv`: RFC 4180 records (quoted fields
 * may hold commas, quotes and line ends), each after the header turned into
 * an NDJSON object keyed by the header's names.
 */
import {
  CR,
  IngestInputError,
  MORE,
  SKIP,
  type LineResult,
  type RecordParser,
} from './record-parser.ts';

const QUOTE = 0x22;
const COMMA = 0x2c;

/** Keeps a byte order mark in field values: only the header's is dropped, on purpose. */
const utf8KeepBom = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * `csv`: RFC 4180 records, each after the header an NDJSON object. Each line
 * is decoded once (UTF-8 sequences never span a line end) and parsed as
 * text.
 */
export class CsvRecords implements RecordParser {
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

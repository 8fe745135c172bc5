import { CliError } from './common.ts';

/** How a byte stream is split into entries. */
export type InputFormat = 'lines' | 'ndjson' | 'frames';

/** Options of {@link readEntries}. */
export interface ReadEntriesOptions {
  /** Largest entry accepted, in bytes; a longer line or frame stops the input with an error. */
  maxEntryBytes: number;
  /** Stops reading (the generator returns) once aborted; what was yielded stays yielded. */
  signal?: AbortSignal;
}

/**
 * Entries read from a byte stream.
 *
 * - `lines`: bytes up to each `\n`, stored unchanged, except that one `\r`
 *   right before the `\n` is dropped (so CRLF files read as expected). A
 *   lone `\r` is an ordinary byte. Bytes need not be UTF-8. A last line
 *   without `\n` is an entry; an empty line is an empty entry.
 * - `ndjson`: like `lines`, but each non-blank line must be UTF-8 holding one
 *   JSON value; blank lines are skipped.
 * - `frames`: a u32 little-endian length, then that many bytes, repeated.
 *
 * Memory stays bounded: a line or frame longer than `maxEntryBytes` is an
 * error (a frame's header is checked before any of its bytes are buffered),
 * and each entry's bytes are joined once.
 *
 * @throws {CliError} naming the line or frame number and what was wrong.
 */
export async function* readEntries(
  input: AsyncIterable<Uint8Array | string>,
  format: InputFormat,
  options: ReadEntriesOptions,
): AsyncGenerator<Uint8Array> {
  const source = chunksOf(input, options.signal);
  if (format === 'frames') yield* frames(source, options.maxEntryBytes);
  else yield* lines(source, format === 'ndjson', options.maxEntryBytes);
}

async function* chunksOf(
  input: AsyncIterable<Uint8Array | string>,
  signal: AbortSignal | undefined,
): AsyncGenerator<Buffer> {
  if (signal?.aborted) return;
  const iterator = input[Symbol.asyncIterator]();
  const aborted = new Promise<'aborted'>((resolve) => {
    if (signal) signal.addEventListener('abort', () => resolve('aborted'), { once: true });
  });
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), aborted]);
      if (next === 'aborted' || next.done) return;
      const v = next.value;
      yield typeof v === 'string'
        ? Buffer.from(v)
        : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    }
  } finally {
    // Stop the source (and, for stdin, the reading) when the consumer stops early.
    void iterator.return?.();
  }
}

async function* lines(
  source: AsyncIterable<Buffer>,
  ndjson: boolean,
  maxEntryBytes: number,
): AsyncGenerator<Uint8Array> {
  // The current line's bytes so far, in pieces: joined once when the line ends.
  let pieces: Buffer[] = [];
  let pending = 0;
  let lineNumber = 0;
  const finish = (tail: Buffer): Uint8Array | undefined => {
    lineNumber++;
    let line = pieces.length === 0 ? tail : Buffer.concat([...pieces, tail], pending + tail.length);
    pieces = [];
    pending = 0;
    if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    if (ndjson) {
      if (isBlank(line)) return undefined;
      checkJson(line, lineNumber);
    }
    return line;
  };
  const tooLong = (): CliError =>
    new CliError(
      `stdin line ${lineNumber + 1} is longer than ${maxEntryBytes} bytes, the largest entry accepted; use --format frames for large binary entries, or split the line`,
    );
  for await (const chunk of source) {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      // One extra byte allowed: the "\r" that a CRLF line end drops.
      if (pending + (nl - start) > maxEntryBytes + 1) throw tooLong();
      const line = finish(chunk.subarray(start, nl));
      if (line !== undefined) yield line;
      start = nl + 1;
    }
    if (start < chunk.length) {
      pending += chunk.length - start;
      if (pending > maxEntryBytes + 1) throw tooLong();
      pieces.push(chunk.subarray(start));
    }
  }
  if (pending > 0) {
    const line = finish(Buffer.alloc(0));
    if (line !== undefined) yield line;
  }
}

function isBlank(line: Buffer): boolean {
  for (const b of line) if (b !== 0x20 && b !== 0x09 && b !== 0x0d) return false;
  return true;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function checkJson(line: Buffer, n: number): void {
  let text: string;
  try {
    text = strictUtf8.decode(line);
  } catch {
    throw new CliError(
      `stdin line ${n} is not valid UTF-8; --format ndjson expects one JSON value per line (use --format lines or frames for other bytes)`,
    );
  }
  try {
    JSON.parse(text);
  } catch (e) {
    throw new CliError(
      `stdin line ${n} is not valid JSON (${(e as Error).message}); expected one JSON value per line with --format ndjson`,
    );
  }
}

async function* frames(
  source: AsyncIterable<Buffer>,
  maxEntryBytes: number,
): AsyncGenerator<Uint8Array> {
  let pieces: Buffer[] = [];
  let buffered = 0;
  let frame = 0;
  // Bytes of the frame being read (its header parsed), or -1 while its header is incomplete.
  let want = -1;
  const take = (n: number): Buffer => {
    // Joins exactly n bytes from the front of the pieces, copying at most once.
    const first = pieces[0] as Buffer;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) pieces.shift();
      else pieces[0] = first.subarray(n);
      buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const p = pieces[0] as Buffer;
      const k = Math.min(p.length, n - done);
      p.copy(out, done, 0, k);
      done += k;
      if (k === p.length) pieces.shift();
      else pieces[0] = p.subarray(k);
    }
    buffered -= n;
    return out;
  };
  for await (const chunk of source) {
    if (chunk.length === 0) continue;
    pieces.push(chunk);
    buffered += chunk.length;
    for (;;) {
      if (want < 0) {
        if (buffered < 4) break;
        want = take(4).readUInt32LE(0);
        frame++;
        if (want > maxEntryBytes) {
          throw new CliError(
            `stdin frame ${frame} claims ${want} bytes, more than ${maxEntryBytes}, the largest entry accepted; frames are a u32 little-endian length followed by that many bytes`,
          );
        }
      }
      if (buffered < want) break;
      yield want === 0 ? new Uint8Array(0) : take(want);
      want = -1;
    }
  }
  if (want >= 0 || buffered > 0) {
    pieces = [];
    throw new CliError(
      `stdin ends inside frame ${want >= 0 ? frame : frame + 1}: ${buffered} bytes left over${want >= 0 ? ` of the ${want} its header claims` : ' (an incomplete length header)'}; frames are a u32 little-endian length followed by that many bytes`,
    );
  }
}

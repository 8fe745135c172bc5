/**
 * Reading request bodies within a limit, and splitting them into entries by
 * their media type.
 */
import { HttpError } from './http-error.ts';

/**
 * The whole body of `request`, refused with 413 as soon as it is known to
 * exceed `maxBytes`: from `Content-Length` before anything is read, else
 * while streaming, without holding more than `maxBytes` (the stream is
 * cancelled at the chunk that crosses the limit). When `signal` aborts
 * (the server closing) the reading stops and the request is refused: a
 * client sending slowly cannot hold a shutdown up.
 *
 * @throws {HttpError} 413 `PAYLOAD_TOO_LARGE`, 400 for a bad
 * `Content-Length`, 503 `SHUTTING_DOWN` when `signal` aborts first.
 */
export async function readBody(
  request: Request,
  maxBytes: number,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const declared = request.headers.get('content-length');
  if (declared !== null) {
    if (!/^[0-9]+$/.test(declared)) {
      throw new HttpError(400, 'BAD_REQUEST', `bad Content-Length ${JSON.stringify(declared)}`);
    }
    if (Number(declared) > maxBytes) throw tooLarge(maxBytes, `${declared} bytes declared`);
  }
  if (!request.body) return new Uint8Array(0);
  const reader = (request.body as ReadableStream<Uint8Array>).getReader();
  // A cancelled read ends as if the body had: the signal is checked after each one.
  const stop = (): void => void reader.cancel().catch(() => undefined);
  signal?.addEventListener('abort', stop, { once: true });
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      if (signal?.aborted) throw shuttingDown();
      const { done, value } = await reader.read();
      if (signal?.aborted) throw shuttingDown();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        await reader.cancel().catch(() => undefined);
        throw tooLarge(maxBytes, 'more sent');
      }
      chunks.push(value);
    }
  } finally {
    signal?.removeEventListener('abort', stop);
  }
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

function shuttingDown(): HttpError {
  return new HttpError(503, 'SHUTTING_DOWN', 'the server is closing; nothing was accepted', {
    headers: { 'Retry-After': '1' },
  });
}

function tooLarge(maxBytes: number, what: string): HttpError {
  return new HttpError(
    413,
    'PAYLOAD_TOO_LARGE',
    `the body is larger than the server's limit of ${maxBytes} bytes (${what}); split it into several requests`,
  );
}

/** How a POST body carries entries, by its `Content-Type`. */
export type EntryFormat = 'ndjson' | 'octet-stream' | 'frames';

/** The media types each format is accepted under. */
export const ENTRY_MEDIA_TYPES: Readonly<Record<EntryFormat, readonly string[]>> = Object.freeze({
  ndjson: ['application/x-ndjson', 'application/ndjson', 'application/jsonl'],
  'octet-stream': ['application/octet-stream'],
  frames: ['application/x-spillway-frames'],
});

/**
 * The format a `Content-Type` names (parameters such as `charset` ignored).
 *
 * @throws {HttpError} 415 for a missing or other media type.
 */
export function entryFormat(contentType: string | null): EntryFormat {
  const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  for (const [format, types] of Object.entries(ENTRY_MEDIA_TYPES)) {
    if (types.includes(type)) return format as EntryFormat;
  }
  throw new HttpError(
    415,
    'UNSUPPORTED_MEDIA_TYPE',
    `Content-Type ${JSON.stringify(contentType ?? '')} is not taken here; send application/x-ndjson (one JSON value per line), application/octet-stream (one entry) or application/x-spillway-frames (u32 little-endian length, then bytes, repeated)`,
  );
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The entries of a body:
 *
 * - `ndjson`: one entry per line, split on `\n` (a `\r` before it is
 *   dropped); each line must be UTF-8 holding one JSON value and is stored
 *   as its bytes, unchanged; lines of only spaces and tabs are skipped;
 * - `octet-stream`: the whole body is one entry (possibly empty);
 * - `frames`: u32 little-endian length, then that many bytes, repeated to
 *   the end of the body.
 *
 * Entries are views of `body`, not copies.
 *
 * @throws {HttpError} 400 naming the line or frame that is malformed, or
 * when an NDJSON or frames body holds no entry; 413 at entry
 * `maxEntries + 1`.
 */
export function splitEntries(
  body: Uint8Array,
  format: EntryFormat,
  maxEntries = Number.POSITIVE_INFINITY,
): Uint8Array[] {
  if (format === 'octet-stream') return [body];
  // Each entry costs about 100 bytes of memory besides its own: a body of tiny
  // lines or empty frames is refused at the first entry too many, not held.
  const push = (out: Uint8Array[], entry: Uint8Array): void => {
    if (out.length >= maxEntries) {
      throw new HttpError(
        413,
        'PAYLOAD_TOO_LARGE',
        `the body holds more than ${maxEntries} entries, more than one batch can ever hold; split it into several requests`,
      );
    }
    out.push(entry);
  };
  const entries = format === 'frames' ? splitFrames(body, push) : splitNdjson(body, push);
  if (entries.length === 0) {
    throw new HttpError(
      400,
      'BAD_REQUEST',
      `the body holds no entry (${format === 'frames' ? 'no frame' : 'no non-blank line'})`,
    );
  }
  return entries;
}

type Push = (out: Uint8Array[], entry: Uint8Array) => void;

function splitNdjson(body: Uint8Array, push: Push): Uint8Array[] {
  const out: Uint8Array[] = [];
  let start = 0;
  let line = 0;
  while (start < body.byteLength) {
    let end = body.indexOf(0x0a, start);
    if (end < 0) end = body.byteLength;
    line++;
    let stop = end;
    if (stop > start && body[stop - 1] === 0x0d) stop--;
    const bytes = body.subarray(start, stop);
    start = end + 1;
    if (bytes.every((b) => b === 0x20 || b === 0x09)) continue;
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      throw new HttpError(400, 'BAD_REQUEST', `line ${line} is not UTF-8`);
    }
    try {
      JSON.parse(text);
    } catch (e) {
      throw new HttpError(
        400,
        'BAD_REQUEST',
        `line ${line} is not one JSON value (${(e as Error).message}); NDJSON takes one JSON value per line`,
      );
    }
    push(out, bytes);
  }
  return out;
}

function splitFrames(body: Uint8Array, push: Push): Uint8Array[] {
  const out: Uint8Array[] = [];
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let at = 0;
  while (at < body.byteLength) {
    if (at + 4 > body.byteLength) {
      throw new HttpError(
        400,
        'BAD_REQUEST',
        `frame ${out.length + 1} at byte ${at}: its 4-byte length is cut off (${body.byteLength - at} bytes left)`,
      );
    }
    const length = view.getUint32(at, true);
    if (at + 4 + length > body.byteLength) {
      throw new HttpError(
        400,
        'BAD_REQUEST',
        `frame ${out.length + 1} at byte ${at}: it declares ${length} bytes but ${body.byteLength - at - 4} follow`,
      );
    }
    push(out, body.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return out;
}

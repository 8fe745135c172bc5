/**
 * How the HTTP API answers a failure: a status, and a JSON body
 * `{ "error": { "code", "message", "retriable" } }`. Library errors are
 * translated here, at the edge, and nowhere else.
 */
import { hasCode, SpillwayError, type ErrorCode } from '../errors.ts';
import { scrubSecrets } from '../redact.ts';

/**
 * The codes the HTTP API adds to the library's (`INVALID_ARGUMENT`,
 * `QUEUE_NOT_FOUND`, `STORAGE`, ...; see `ErrorCode`):
 *
 * | code | status | when |
 * | --- | --- | --- |
 * | `BAD_REQUEST` | 400 | a malformed body, parameter or header |
 * | `INVALID_QUEUE_NAME` | 400 | a queue name outside `^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`, or with `..` |
 * | `UNAUTHORIZED` | 401 | no token, or a wrong one |
 * | `FORBIDDEN` | 403 | a cookie-authenticated write from another origin |
 * | `NOT_FOUND` | 404 | no such route, queue or subscription |
 * | `V1_LAYOUT` | 409 | a subscription or retention route on a v1 queue |
 * | `SHARDED_LAYOUT` | 409 | a write that would start a queue inside a sharded queue's prefix |
 * | `PAYLOAD_TOO_LARGE` | 413 | a body over `maxBodyBytes`, or entries that can never fit the producer's buffer |
 * | `UNSUPPORTED_MEDIA_TYPE` | 415 | a `Content-Type` the route does not take |
 * | `IDEMPOTENCY_KEY_REUSED` | 422 | an `Idempotency-Key` seen with another body |
 * | `BUSY` | 503 | the producer's buffer is full: retry after `Retry-After` seconds |
 * | `SHUTTING_DOWN` | 503 | the server is closing |
 */
export type HttpErrorCode =
  | 'BAD_REQUEST'
  | 'INVALID_QUEUE_NAME'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'V1_LAYOUT'
  | 'SHARDED_LAYOUT'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'BUSY'
  | 'SHUTTING_DOWN';

/** The JSON body of every error answer. */
export interface ErrorBody {
  error: { code: string; message: string; retriable: boolean };
}

/**
 * A failure the server answers with `status`. Thrown by route handlers and
 * turned into the answer by the app's error handler; it never leaves the
 * server.
 */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retriable: boolean;
  /** Extra answer headers, such as `Retry-After`. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    status: number,
    code: HttpErrorCode | ErrorCode | 'INTERNAL',
    message: string,
    options: { retriable?: boolean; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.retriable = options.retriable ?? status === 503;
    this.headers = options.headers ?? {};
  }

  /** The JSON body of the answer. */
  body(): ErrorBody {
    return { error: { code: this.code, message: this.message, retriable: this.retriable } };
  }
}

/**
 * The answer for any error: an {@link HttpError} as it is; a library error by
 * its code (invalid argument 400, no queue 404, fenced 409, a closed role or
 * a retriable storage failure 503, another storage failure 502, corrupt data
 * 500); anything else 500 without details. Messages never carry credentials.
 */
export function toHttpError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof SpillwayError) {
    const message = scrubSecrets(e.message);
    const as = (status: number, retriable = e.retriable): HttpError =>
      new HttpError(status, e.code, message, {
        retriable,
        ...(status === 503 ? { headers: { 'Retry-After': '1' } } : {}),
        cause: e,
      });
    if (hasCode(e, 'INVALID_ARGUMENT')) return as(400);
    if (hasCode(e, 'QUEUE_NOT_FOUND')) return as(404);
    if (hasCode(e, 'FENCED')) return as(409);
    if (hasCode(e, 'CLOSED') || hasCode(e, 'TIMEOUT')) return as(503, true);
    if (hasCode(e, 'CORRUPT_DATA')) return as(500);
    if (hasCode(e, 'DATA_LOSS')) return as(409);
    return as(e.retriable ? 503 : 502);
  }
  return new HttpError(500, 'INTERNAL', 'internal server error', { cause: e });
}

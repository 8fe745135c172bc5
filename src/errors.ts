/**
 * The error tree. Every error Spillway raises is a {@link SpillwayError} with a
 * stable string `code`, a `retriable` flag (true when repeating the same call
 * later may succeed and is safe) and, where there was one, the original
 * `cause`. Nothing above `src/store/` sees an SDK error or an HTTP status.
 */

/**
 * Every `code` a Spillway error carries, and when it occurs. Codes are stable:
 * match on them (with {@link hasCode}) rather than on messages.
 *
 * | code | class | when |
 * | --- | --- | --- |
 * | `STORAGE` | StorageError | a store call failed (network, server, OS); `retriable` says whether trying later may help |
 * | `NOT_FOUND` | NotFoundError | the object does not exist |
 * | `PRECONDITION_FAILED` | PreconditionFailedError | a conditional write found another version (or the key present, for a create) |
 * | `OUTCOME_UNKNOWN` | OutcomeUnknownError | a write may or may not have landed, and reading back could not tell |
 * | `ACCESS_DENIED` | StorageError | the store refused (HTTP 401/403, EACCES, EPERM, EROFS) |
 * | `CREDENTIALS_MISSING` | StorageError | no credentials in the SDK's chain |
 * | `CREDENTIALS_INVALID` | StorageError | the credentials were refused |
 * | `BUCKET_NOT_FOUND` | StorageError | the S3 bucket does not exist |
 * | `CONTAINER_NOT_FOUND` | StorageError | the Azure container does not exist |
 * | `NO_SPACE` | StorageError | the local disk or quota is full |
 * | `UNSAFE_PATH` | StorageError | a symbolic link inside a `file://` store's folder |
 * | `INJECTED` | StorageError | a fault injected by `FaultInjectingStore` (tests) |
 * | `DEPENDENCY_MISSING` | SpillwayError | the optional package a store URL needs is not installed |
 * | `CORRUPT_DATA` | CorruptDataError | stored bytes do not decode or do not match their checksum or size, or exceed `maxBatchBytes` |
 * | `QUEUE_NOT_FOUND` | QueueNotFoundError | no manifest where one must be (a typo in a path) |
 * | `DATA_LOSS` | DataLossError | retention deleted batches a subscription had not acknowledged (reported once) |
 * | `INVALID_ARGUMENT` | InvalidArgumentError | a value that can never work: a bad URL, option or key |
 * | `FENCED` | FencedError | a newer consumer took over |
 * | `CLOSED` | ClosedError | a call after `close()` or `destroy()` |
 * | `TIMEOUT` | TimeoutError | `close({ timeoutMs })` ran out of time; what was pending was given up |
 * | `CLI` | (command line) | a command failed; the message says why |
 */
export type ErrorCode =
  | 'STORAGE'
  | 'NOT_FOUND'
  | 'PRECONDITION_FAILED'
  | 'OUTCOME_UNKNOWN'
  | 'ACCESS_DENIED'
  | 'CREDENTIALS_MISSING'
  | 'CREDENTIALS_INVALID'
  | 'BUCKET_NOT_FOUND'
  | 'CONTAINER_NOT_FOUND'
  | 'NO_SPACE'
  | 'UNSAFE_PATH'
  | 'INJECTED'
  | 'DEPENDENCY_MISSING'
  | 'CORRUPT_DATA'
  | 'QUEUE_NOT_FOUND'
  | 'DATA_LOSS'
  | 'INVALID_ARGUMENT'
  | 'FENCED'
  | 'CLOSED'
  | 'TIMEOUT'
  | 'CLI';

/** Options shared by every Spillway error constructor. */
export interface SpillwayErrorOptions {
  /** Stable machine-readable code; each class has a default. */
  code?: ErrorCode;
  /** Whether repeating the call may succeed and is safe. */
  retriable?: boolean;
  /** The underlying error, if any. */
  cause?: unknown;
}

/** Base class of every error Spillway raises. */
export class SpillwayError extends Error {
  /** Stable machine-readable code, for example `NOT_FOUND`; see {@link ErrorCode}. */
  readonly code: ErrorCode;
  /** True when repeating the same call later may succeed and is safe. */
  readonly retriable: boolean;

  constructor(message: string, options: SpillwayErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code ?? 'STORAGE';
    this.retriable = options.retriable ?? false;
  }
}

/**
 * A storage operation failed: network, server, permissions, a missing bucket
 * or container, missing credentials. `retriable` tells transient failures
 * (timeouts, 5xx, throttling) that survived the store's own retries from
 * permanent ones.
 */
export class StorageError extends SpillwayError {
  constructor(message: string, options: SpillwayErrorOptions = {}) {
    super(message, { code: 'STORAGE', ...options });
  }
}

/** The object does not exist. */
export class NotFoundError extends StorageError {
  /** The key that was asked for, relative to the store. */
  readonly key: string;
  constructor(key: string, message = `object "${key}" does not exist`, cause?: unknown) {
    super(message, { code: 'NOT_FOUND', retriable: false, cause });
    this.key = key;
  }
}

/**
 * A conditional write was refused: `create` found the key present, or
 * `ifMatch` found a different version (or no object). The write was not
 * applied.
 */
export class PreconditionFailedError extends StorageError {
  /** The key whose condition failed. */
  readonly key: string;
  constructor(key: string, message: string, cause?: unknown) {
    super(message, { code: 'PRECONDITION_FAILED', retriable: false, cause });
    this.key = key;
  }
}

/**
 * A write may or may not have been applied: the connection was lost after the
 * request was sent, the request timed out, or the server answered in a way that
 * does not say (Ceph RGW answers HTTP 500 to the loser of a conditional-write
 * race). The store could not settle it by reading back. Re-read the object and
 * decide; never assume either outcome.
 */
export class OutcomeUnknownError extends StorageError {
  /** The key whose write has an unknown outcome. */
  readonly key: string;
  constructor(key: string, message: string, cause?: unknown) {
    super(message, { code: 'OUTCOME_UNKNOWN', retriable: false, cause });
    this.key = key;
  }
}

/** Stored bytes do not decode, or do not match their recorded size or checksum. */
export class CorruptDataError extends SpillwayError {
  /** The object (key or location) that is corrupt, when known. */
  readonly location: string | undefined;
  constructor(message: string, location?: string, cause?: unknown) {
    super(message, { code: 'CORRUPT_DATA', retriable: false, cause });
    this.location = location;
  }
}

/**
 * The queue a call names is not there: no manifest (or, for other layouts,
 * no index) at the path given. Raised where acting as if the queue were
 * empty would be dangerous, such as a collection, which would otherwise take
 * every batch object for unreferenced. Usually a typo in a path or URL.
 */
export class QueueNotFoundError extends SpillwayError {
  /** The key that was looked for, relative to the store. */
  readonly key: string;
  constructor(key: string, message: string) {
    super(message, { code: 'QUEUE_NOT_FOUND', retriable: false });
    this.key = key;
  }
}

/**
 * Retention deleted batches this subscription had not acknowledged: the
 * sequences `firstSequence` to `lastSequence` (inclusive) are gone. Raised
 * once, by the read that finds out (the subscription's cursor records it, so
 * not again after a restart); the next read continues with the oldest
 * retained batch. Counted in the `buffer.retention_lost_batches` metric.
 */
export class DataLossError extends SpillwayError {
  readonly firstSequence: number;
  readonly lastSequence: number;
  constructor(firstSequence: number, lastSequence: number, message: string) {
    super(message, { code: 'DATA_LOSS', retriable: false });
    this.firstSequence = firstSequence;
    this.lastSequence = lastSequence;
  }
}

/** A caller passed a value that can never work: a bad URL, option or key. */
export class InvalidArgumentError extends SpillwayError {
  constructor(message: string, cause?: unknown) {
    super(message, { code: 'INVALID_ARGUMENT', retriable: false, cause });
  }
}

/** A newer consumer raised the epoch; this one may no longer read or write. */
export class FencedError extends SpillwayError {
  constructor(message: string) {
    super(message, { code: 'FENCED', retriable: false });
  }
}

/** The object was closed; no further calls are accepted. */
export class ClosedError extends SpillwayError {
  constructor(what: string) {
    super(`${what} is closed`, { code: 'CLOSED', retriable: false });
  }
}

/**
 * A graceful `close({ timeoutMs })` ran out of time: the role was destroyed,
 * and what was still pending (entries not yet durable, acknowledgements not
 * yet applied) was given up and rejected with this error.
 */
export class TimeoutError extends SpillwayError {
  constructor(message: string) {
    super(message, { code: 'TIMEOUT', retriable: false });
  }
}

/**
 * Whether `error` carries the given code: any error object with that `code`
 * (a Spillway error, or one that crossed a boundary where its class was
 * lost, such as a worker or a second copy of the package).
 */
export function hasCode(error: unknown, code: ErrorCode): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

/** The value as an Error, for rethrowing stored failures of unknown type. */
export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

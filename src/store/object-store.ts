/**
 * The storage contract. Every part of Spillway touches storage only through
 * this interface; adapters (memory, file, S3, Azure) and wrappers (prefix,
 * fault injection) implement it.
 */

/**
 * An opaque version of one stored object: an ETag, a generation, a counter.
 * Compare only for equality, and only for the same key.
 */
export type ObjectVersion = string;

/** Options every store call accepts. */
export interface StoreCallOptions {
  /** Aborts the call (and its retries). The call rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A byte range within an object. */
export interface ByteRange {
  /** First byte, counted from 0. */
  offset: number;
  /** Number of bytes; to the end of the object when omitted. */
  length?: number;
}

/** Options of {@link ObjectStore.get}. */
export interface GetOptions extends StoreCallOptions {
  /** Read only this range. A range past the end returns the bytes that exist. */
  range?: ByteRange;
}

/** What {@link ObjectStore.get} returns. */
export interface GetResult {
  /** The bytes (of the range, if one was asked for). */
  body: Uint8Array;
  /** The version of the object the bytes came from. */
  version: ObjectVersion;
  /** Size of the whole object in bytes. */
  size: number;
  /** When the object was last written. */
  lastModified: Date;
}

/** What {@link ObjectStore.head} returns, and each item {@link ObjectStore.list} yields. */
export interface ObjectMeta {
  /** The key, relative to the store. */
  key: string;
  /** Size in bytes. */
  size: number;
  /** Current version. */
  version: ObjectVersion;
  /** When the object was last written. */
  lastModified: Date;
}

/**
 * How {@link ObjectStore.put} treats an existing object:
 * - `'overwrite'`: write unconditionally;
 * - `'create'`: write only if the key does not exist;
 * - `{ ifMatch }`: write only if the object exists at exactly that version.
 */
export type PutMode = 'overwrite' | 'create' | { ifMatch: ObjectVersion };

/** Options of {@link ObjectStore.put}. */
export interface PutOptions extends StoreCallOptions {
  /** @default 'overwrite' */
  mode?: PutMode;
}

/** What {@link ObjectStore.put} returns. */
export interface PutResult {
  /** The version the write created. */
  version: ObjectVersion;
}

/**
 * What a store tells the roles that use it about its costs, so that their
 * defaults suit it. Every field is optional; a role's explicit option wins.
 */
export interface StoreHints {
  /**
   * The default of the producer's `inlineMaxBytes` on this store: where bytes
   * are cheap and each write is a synchronous commit (a local engine), a batch
   * is better carried inside its log commit up to this size.
   */
  inlineMaxBytes?: number;
}

/**
 * A key-value object store with atomic conditional writes.
 *
 * Keys are non-empty UTF-8 strings of at most 1024 bytes without NUL; some
 * stores restrict them further (the file store refuses `.` and `..` segments
 * and empty segments). Transient failures are retried inside each call with
 * bounded exponential backoff and jitter; what surfaces has survived those
 * retries.
 *
 * Errors: {@link NotFoundError} for a missing key (get, head),
 * {@link PreconditionFailedError} for a refused conditional write,
 * {@link OutcomeUnknownError} for a write whose result could not be learned,
 * {@link StorageError} for everything else, {@link InvalidArgumentError} for a
 * key the store cannot hold, {@link ClosedError} after `close()`.
 */
export interface ObjectStore {
  /** A human-readable name of the store (its URL without credentials), for messages. */
  readonly description: string;

  /** Defaults this store suggests to the roles that use it (wrappers pass the inner store's on). */
  readonly hints?: StoreHints;

  /** Reads an object, or a range of it. Throws {@link NotFoundError} when absent. */
  get(key: string, options?: GetOptions): Promise<GetResult>;

  /** Reads an object's size, version and last-modified time. Throws {@link NotFoundError} when absent. */
  head(key: string, options?: StoreCallOptions): Promise<ObjectMeta>;

  /**
   * Writes an object, conditionally or not, and returns the new version. The
   * write is atomic: readers see the old bytes or the new ones, never a mix.
   * Throws {@link PreconditionFailedError} when the condition does not hold and
   * {@link OutcomeUnknownError} when the outcome of a conditional write was
   * lost and reading back could not settle it.
   */
  put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult>;

  /** Lists objects whose key starts with `prefix`, in ascending byte order of their UTF-8 keys. */
  list(prefix: string, options?: StoreCallOptions): AsyncIterable<ObjectMeta>;

  /** Deletes an object; deleting an absent key succeeds. */
  delete(key: string, options?: StoreCallOptions): Promise<void>;

  /** Deletes several objects; absent keys are fine. */
  deleteMany(keys: readonly string[], options?: StoreCallOptions): Promise<void>;

  /** Releases resources. Idempotent; later calls reject with {@link ClosedError}. */
  close(): Promise<void>;
}

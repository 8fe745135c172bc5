import {
  ClosedError,
  NotFoundError,
  OutcomeUnknownError,
  PreconditionFailedError,
  StorageError,
} from '../errors.ts';
import { validateKey, validatePrefix } from './keys.ts';
import type {
  ByteRange,
  GetOptions,
  GetResult,
  ObjectMeta,
  ObjectStore,
  PutMode,
  PutOptions,
  PutResult,
  StoreCallOptions,
} from './object-store.ts';
import { attemptSignal, backoffMs, delay, resolveRetry, type RetryOptions } from './retry.ts';

/** Options shared by the network adapters (S3, Azure). */
export interface RemoteStoreOptions {
  /** Retries of transient failures. */
  retry?: RetryOptions;
  /** Time limit of one request attempt, in milliseconds. @default 30000 */
  requestTimeoutMs?: number;
}

/** How an adapter classifies one failed request attempt. */
export type AttemptFailure =
  | { kind: 'not-found' }
  | { kind: 'precondition' }
  /** Timeouts, 5xx, throttling, broken connections. `sent`: the request may have reached the server. */
  | { kind: 'transient'; sent: boolean; detail: string }
  | { kind: 'permanent'; error: StorageError };

/** One page of a listing. */
export interface ListPage {
  items: ObjectMeta[];
  /** Continuation token; absent on the last page. */
  next?: string;
}

type Settlement =
  { kind: 'applied'; version: string } | { kind: 'not-applied' } | { kind: 'unknown' };

/**
 * The behaviour every network adapter shares: bounded retries with jittered
 * backoff, per-attempt timeouts, and the rule for conditional writes whose
 * outcome was lost (a timeout, a dropped connection, an HTTP 500 from a server
 * that lost a race): read the object back and decide. If the stored bytes are
 * ours, the write happened; if the object is still at the version (or absence)
 * the condition named, it did not and the write is tried again; otherwise the
 * call fails with {@link OutcomeUnknownError}. A 412 that follows an uncertain
 * attempt is never taken as a conflict, because an SDK-level retry of a write
 * that succeeded comes back as 412; the SDKs' own retries are turned off.
 */
export abstract class RemoteStore implements ObjectStore {
  abstract readonly description: string;
  private readonly retryOptions: Required<RetryOptions>;
  private readonly requestTimeoutMs: number;
  private closed = false;

  protected constructor(options: RemoteStoreOptions) {
    this.retryOptions = resolveRetry(options.retry);
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  }

  /** Maps an SDK error of one attempt to a failure kind. */
  protected abstract classify(error: unknown, key: string | undefined): AttemptFailure;
  protected abstract rawGet(
    key: string,
    range: ByteRange | undefined,
    signal: AbortSignal,
  ): Promise<GetResult>;
  protected abstract rawHead(key: string, signal: AbortSignal): Promise<ObjectMeta>;
  protected abstract rawPut(
    key: string,
    body: Uint8Array,
    mode: PutMode,
    signal: AbortSignal,
  ): Promise<PutResult>;
  protected abstract rawListPage(
    prefix: string,
    next: string | undefined,
    signal: AbortSignal,
  ): Promise<ListPage>;
  protected abstract rawDelete(key: string, signal: AbortSignal): Promise<void>;
  /** Deletes at most {@link deleteBatchSize} keys. */
  protected abstract rawDeleteMany(keys: string[], signal: AbortSignal): Promise<void>;
  protected abstract dispose(): Promise<void>;
  /** Keys one `rawDeleteMany` call takes. */
  protected readonly deleteBatchSize: number = 1000;

  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    this.check(key);
    const range = options.range;
    return this.run('get', key, options.signal, async (s) => {
      if (range?.length === 0) return emptyRead(await this.rawHead(key, s));
      try {
        return await this.rawGet(key, range, s);
      } catch (error) {
        // A range that starts past the end is 416 on S3 and Azure; the contract returns no bytes.
        if (range && httpStatus(error) === 416) return emptyRead(await this.rawHead(key, s));
        throw error;
      }
    });
  }

  async head(key: string, options: StoreCallOptions = {}): Promise<ObjectMeta> {
    this.check(key);
    return this.run('head', key, options.signal, (s) => this.rawHead(key, s));
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    this.check(key);
    const mode = options.mode ?? 'overwrite';
    if (mode === 'overwrite') {
      return this.run('put', key, options.signal, (s) => this.rawPut(key, body, mode, s));
    }
    return this.conditionalPut(key, body, mode, options.signal);
  }

  async *list(prefix: string, options: StoreCallOptions = {}): AsyncIterable<ObjectMeta> {
    validatePrefix(prefix, this.description);
    this.checkOpen();
    let next: string | undefined;
    do {
      const token = next;
      const page = await this.run('list', prefix, options.signal, (s) =>
        this.rawListPage(prefix, token, s),
      );
      yield* page.items;
      next = page.next;
    } while (next !== undefined);
  }

  async delete(key: string, options: StoreCallOptions = {}): Promise<void> {
    this.check(key);
    await this.run('delete', key, options.signal, (s) => this.rawDelete(key, s));
  }

  async deleteMany(keys: readonly string[], options: StoreCallOptions = {}): Promise<void> {
    for (const key of keys) this.check(key);
    for (let i = 0; i < keys.length; i += this.deleteBatchSize) {
      const chunk = keys.slice(i, i + this.deleteBatchSize);
      await this.run('deleteMany', chunk[0], options.signal, (s) => this.rawDeleteMany(chunk, s));
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.dispose();
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError(`store ${this.description}`);
  }

  private check(key: string): void {
    validateKey(key, this.description);
    this.checkOpen();
  }

  /** Runs an idempotent request with retries. */
  private async run<T>(
    op: string,
    key: string | undefined,
    signal: AbortSignal | undefined,
    attempt: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    for (let n = 1; ; n++) {
      signal?.throwIfAborted();
      try {
        return await attempt(attemptSignal(signal, this.requestTimeoutMs));
      } catch (error) {
        signal?.throwIfAborted();
        const failure = this.classify(error, key);
        if (failure.kind === 'not-found') throw new NotFoundError(key ?? '', undefined, error);
        if (failure.kind === 'permanent') throw failure.error;
        if (failure.kind === 'precondition') {
          throw new PreconditionFailedError(
            key ?? '',
            `${this.description}: ${op} "${key}": precondition failed`,
            error,
          );
        }
        if (n >= this.retryOptions.maxAttempts) {
          throw new StorageError(
            `${this.description}: ${op}${key === undefined ? '' : ` "${key}"`} failed after ${n} attempts: ${failure.detail}`,
            { retriable: true, cause: error },
          );
        }
        await delay(backoffMs(n, this.retryOptions), signal);
      }
    }
  }

  private async conditionalPut(
    key: string,
    body: Uint8Array,
    mode: 'create' | { ifMatch: string },
    signal: AbortSignal | undefined,
  ): Promise<PutResult> {
    const what = mode === 'create' ? 'create' : `ifMatch ${mode.ifMatch}`;
    // True while an earlier attempt may have been applied and not yet settled.
    let uncertain: unknown;
    for (let n = 1; ; n++) {
      if (signal?.aborted) {
        if (uncertain !== undefined) throw this.unknown(key, what, signal.reason);
        signal.throwIfAborted();
      }
      try {
        return await this.rawPut(key, body, mode, attemptSignal(signal, this.requestTimeoutMs));
      } catch (error) {
        if (signal?.aborted) throw this.unknown(key, what, signal.reason);
        const failure = this.classify(error, key);
        if (failure.kind === 'permanent') {
          if (uncertain !== undefined) throw this.unknown(key, what, error);
          throw failure.error;
        }
        if (failure.kind === 'precondition' || failure.kind === 'not-found') {
          if (uncertain === undefined) {
            throw new PreconditionFailedError(
              key,
              mode === 'create'
                ? `${this.description}: create "${key}": the object already exists`
                : `${this.description}: put "${key}" if version ${mode.ifMatch}: the object changed (or is gone)`,
              error,
            );
          }
        } else if (!failure.sent && uncertain === undefined) {
          // The request never left: nothing to settle.
          if (n >= this.retryOptions.maxAttempts) {
            throw new StorageError(
              `${this.description}: put "${key}" failed after ${n} attempts: ${failure.detail}`,
              {
                retriable: true,
                cause: error,
              },
            );
          }
          await delay(backoffMs(n, this.retryOptions), signal);
          continue;
        }
        uncertain = error;
        const settled = await this.settle(key, body, mode, signal);
        if (settled.kind === 'applied') return { version: settled.version };
        if (settled.kind === 'unknown' || n >= this.retryOptions.maxAttempts)
          throw this.unknown(key, what, error);
        // Definitely not applied: the next attempt starts with a clean slate.
        uncertain = undefined;
        await delay(backoffMs(n, this.retryOptions), signal);
      }
    }
  }

  /** Reads the object back to learn whether an uncertain conditional write was applied. */
  private async settle(
    key: string,
    body: Uint8Array,
    mode: 'create' | { ifMatch: string },
    signal: AbortSignal | undefined,
  ): Promise<Settlement> {
    let current: GetResult | undefined;
    try {
      current = await this.run('get', key, signal, (s) => this.rawGet(key, undefined, s));
    } catch (error) {
      if (!(error instanceof NotFoundError)) return { kind: 'unknown' };
    }
    if (current === undefined)
      return mode === 'create' ? { kind: 'not-applied' } : { kind: 'unknown' };
    if (
      Buffer.from(current.body.buffer, current.body.byteOffset, current.body.byteLength).equals(
        body,
      )
    ) {
      return { kind: 'applied', version: current.version };
    }
    if (mode !== 'create' && this.sameVersion(current.version, mode.ifMatch))
      return { kind: 'not-applied' };
    return { kind: 'unknown' };
  }

  /** Whether two versions name the same object state; adapters normalise quoting. */
  protected sameVersion(a: string, b: string): boolean {
    return a === b;
  }

  private unknown(key: string, what: string, cause: unknown): OutcomeUnknownError {
    return new OutcomeUnknownError(
      key,
      `${this.description}: put "${key}" (${what}): the outcome is unknown (the request failed after it may have reached the server, and reading back did not settle it); re-read before deciding`,
      cause,
    );
  }
}

function emptyRead(meta: ObjectMeta): GetResult {
  return {
    body: new Uint8Array(),
    version: meta.version,
    size: meta.size,
    lastModified: meta.lastModified,
  };
}

function httpStatus(error: unknown): number | undefined {
  const e = error as { $metadata?: { httpStatusCode?: number }; statusCode?: number } | undefined;
  return e?.$metadata?.httpStatusCode ?? e?.statusCode;
}

/** Collects a Node readable stream (or web stream) into one Uint8Array. */
export async function collectStream(
  stream: AsyncIterable<Uint8Array | string>,
): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream)
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** True for Node network error codes that mean the request never reached the server. */
export function isNotSentCode(code: unknown): boolean {
  return (
    code === 'ECONNREFUSED' ||
    code === 'ENOTFOUND' ||
    code === 'EAI_AGAIN' ||
    code === 'EHOSTUNREACH'
  );
}

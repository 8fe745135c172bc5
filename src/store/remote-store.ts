import { systemClock, type Clock } from '../clock.ts';
import { ClosedError, NotFoundError, PreconditionFailedError, StorageError } from '../errors.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { attemptSignal, resolveRetryPolicy, retry, type RetryPolicy } from '../retry.ts';
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
import { putSettled, type ConditionalMode } from './settle.ts';

/** Options shared by the network adapters (S3, Azure). */
export interface RemoteStoreOptions {
  /** Retries of transient failures, and the per-request and per-call time limits. */
  retry?: RetryPolicy;
  /** Time for backoffs and deadlines. @default the system clock */
  clock?: Clock;
  /** Where retries and settled writes are reported. @default silent */
  logger?: Logger;
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

/**
 * The behaviour every network adapter shares: the retry policy of
 * `src/retry.ts` (bounded attempts with jittered backoff, a per-request
 * timeout and a per-call deadline), and the rule for conditional writes whose
 * outcome was lost (a timeout, a dropped connection, an HTTP 500 from a server
 * that lost a race), settled by reading back in `settle.ts`. A 412 that
 * follows an uncertain attempt is never taken as a conflict, because a retry
 * of a write that succeeded comes back as 412; the SDKs' own retries are
 * turned off.
 */
export abstract class RemoteStore implements ObjectStore {
  abstract readonly description: string;
  private readonly policy: Required<RetryPolicy>;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private closed = false;

  protected constructor(options: RemoteStoreOptions) {
    this.policy = resolveRetryPolicy(options.retry);
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
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

  /** Runs an idempotent request under the retry policy, translating each failure. */
  private run<T>(
    op: string,
    key: string | undefined,
    signal: AbortSignal | undefined,
    attempt: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const what = `${this.description}: ${op}${key === undefined ? '' : ` "${key}"`}`;
    return retry(
      async (s, n) => {
        try {
          return await attempt(s);
        } catch (error) {
          signal?.throwIfAborted();
          throw this.translate(error, key, op, what, n);
        }
      },
      { policy: this.policy, signal, clock: this.clock, logger: this.logger, what },
    );
  }

  /** One attempt's failure as a Spillway error. */
  private translate(
    error: unknown,
    key: string | undefined,
    op: string,
    what: string,
    n: number,
  ): Error {
    const failure = this.classify(error, key);
    if (failure.kind === 'not-found') return new NotFoundError(key ?? '', undefined, error);
    if (failure.kind === 'permanent') return failure.error;
    if (failure.kind === 'precondition') {
      return new PreconditionFailedError(key ?? '', `${what}: precondition failed`, error);
    }
    return new StorageError(
      `${what} failed after ${n} attempt${n === 1 ? '' : 's'}: ${failure.detail}`,
      {
        retriable: true,
        cause: error,
      },
    );
  }

  private conditionalPut(
    key: string,
    body: Uint8Array,
    mode: ConditionalMode,
    signal: AbortSignal | undefined,
  ): Promise<PutResult> {
    return putSettled({
      key,
      body,
      mode,
      policy: this.policy,
      clock: this.clock,
      signal,
      logger: this.logger,
      description: this.description,
      attempt: (s) => this.rawPut(key, body, mode, s),
      attemptSignal: (s) => attemptSignal(s, this.policy.attemptTimeoutMs),
      classify: (error) => {
        const failure = this.classify(error, key);
        if (failure.kind === 'permanent') return failure.error;
        if (failure.kind === 'precondition') return 'conflict';
        if (failure.kind === 'not-found') {
          // For ifMatch, a missing object is a failed condition. A create cannot
          // find its key missing: a 404 there means the bucket or path is wrong.
          if (mode !== 'create') return 'conflict';
          return new StorageError(
            `${this.description}: create "${key}" answered "not found": the bucket or container, or the path to it, does not exist (check the URL and the endpoint)`,
            { cause: error },
          );
        }
        return failure.sent ? 'uncertain' : 'not-sent';
      },
      readBack: (bounded) => this.run('get', key, bounded, (s) => this.rawGet(key, undefined, s)),
      sameVersion: (a, b) => this.sameVersion(a, b),
    });
  }

  /** Whether two versions name the same object state; adapters normalise quoting. */
  protected sameVersion(a: string, b: string): boolean {
    return a === b;
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

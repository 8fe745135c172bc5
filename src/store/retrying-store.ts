import { systemClock, type Clock } from '../clock.ts';
import { OutcomeUnknownError, PreconditionFailedError } from '../errors.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { checkCallOptions } from '../options.ts';
import {
  attemptSignal,
  isRetriable,
  resolveRetryPolicy,
  retry,
  type RetryCallOptions,
  type RetryPolicy,
} from '../retry.ts';
import type {
  GetOptions,
  GetResult,
  ObjectMeta,
  ObjectStore,
  PutOptions,
  PutResult,
  StoreCallOptions,
  StoreHints,
} from './object-store.ts';
import { putSettled } from './settle.ts';

/** Options of {@link RetryingStore}. */
export interface RetryingStoreOptions {
  /** The policy. @default RETRY_DEFAULTS */
  retry?: RetryPolicy;
  clock?: Clock;
  logger?: Logger;
}

/**
 * Gives any {@link ObjectStore} the retry policy and the settling of
 * uncertain writes that the built-in adapters have: retriable failures are
 * tried again within the policy's attempts and deadline, and a conditional
 * write that failed after it may have landed (an {@link OutcomeUnknownError},
 * or a retriable failure) is settled by reading back, never retried blindly.
 *
 * For stores that do not retry themselves: a custom adapter, or a
 * {@link FaultInjectingStore} in tests, which stands for the network below
 * an adapter's retries. Wrapping a store that already retries (S3, Azure,
 * file) multiplies the attempts; don't.
 *
 * @example
 * const store = new RetryingStore(new FaultInjectingStore(new MemoryStore(), { random: { seed: 7, errorRate: 0.1 } }));
 */
export class RetryingStore implements ObjectStore {
  readonly description: string;

  /** The inner store's hints. */
  get hints(): StoreHints | undefined {
    return this.inner.hints;
  }
  private readonly policy: Required<RetryPolicy>;
  private readonly clock: Clock;
  private readonly logger: Logger;

  constructor(
    readonly inner: ObjectStore,
    options: RetryingStoreOptions = {},
  ) {
    checkCallOptions('RetryingStore', options, ['retry', 'clock', 'logger']);
    this.description = inner.description;
    this.policy = resolveRetryPolicy(options.retry);
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
  }

  get(key: string, options: GetOptions = {}): Promise<GetResult> {
    return retry(
      (s) => this.inner.get(key, { ...options, signal: s }),
      this.options(options, 'get', key),
    );
  }

  head(key: string, options: StoreCallOptions = {}): Promise<ObjectMeta> {
    return retry((s) => this.inner.head(key, { signal: s }), this.options(options, 'head', key));
  }

  put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const mode = options.mode ?? 'overwrite';
    if (mode === 'overwrite') {
      // An overwrite is idempotent: one whose outcome was lost is simply made again.
      return retry((s) => this.inner.put(key, body, { mode, signal: s }), {
        ...this.options(options, 'put', key),
        retriable: (e) => isRetriable(e) || e instanceof OutcomeUnknownError,
      });
    }
    return putSettled({
      key,
      body,
      mode,
      policy: this.policy,
      clock: this.clock,
      signal: options.signal,
      logger: this.logger,
      description: this.description,
      attempt: (s) => this.inner.put(key, body, { mode, signal: s }),
      attemptSignal: (s) => attemptSignal(s, this.policy.attemptTimeoutMs),
      classify: (e) => {
        if (e instanceof PreconditionFailedError) return 'conflict';
        if (e instanceof OutcomeUnknownError || isRetriable(e)) return 'uncertain';
        return 'fatal';
      },
      readBack: (bounded) => this.get(key, { signal: bounded }),
    });
  }

  async *list(prefix: string, options: StoreCallOptions = {}): AsyncIterable<ObjectMeta> {
    // A listing is retried as a whole until it yields its first item; after
    // that a failure surfaces, since the caller has seen part of it.
    let first: IteratorResult<ObjectMeta> | undefined;
    let iterator: AsyncIterator<ObjectMeta> | undefined;
    await retry(
      async () => {
        // The caller's signal, not the attempt's: the iterator outlives this attempt.
        iterator = this.inner.list(prefix, { signal: options.signal })[Symbol.asyncIterator]();
        first = await iterator.next();
      },
      this.options(options, 'list', prefix),
    );
    if (!first || first.done || !iterator) return;
    yield first.value;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield next.value;
    }
  }

  delete(key: string, options: StoreCallOptions = {}): Promise<void> {
    return retry(
      (s) => this.inner.delete(key, { signal: s }),
      this.options(options, 'delete', key),
    );
  }

  deleteMany(keys: readonly string[], options: StoreCallOptions = {}): Promise<void> {
    return retry(
      (s) => this.inner.deleteMany(keys, { signal: s }),
      this.options(options, 'deleteMany', keys[0] ?? ''),
    );
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private options(options: StoreCallOptions, op: string, key: string): RetryCallOptions {
    return {
      policy: this.policy,
      signal: options.signal,
      clock: this.clock,
      logger: this.logger,
      what: `${this.description}: ${op} "${key}"`,
    };
  }
}

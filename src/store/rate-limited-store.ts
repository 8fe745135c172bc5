/**
 * A cap on store requests per second: a token bucket in front of any
 * {@link ObjectStore}. Every role of a process that shares the wrapped store
 * (producers, consumers, the collector, the HTTP server's reads) shares the
 * one budget.
 */
import { monotonicNow, systemClock, type Clock, type ClockTimer } from '../clock.ts';
import { ClosedError, InvalidArgumentError } from '../errors.ts';
import { noopMetrics, type Metrics } from '../metrics.ts';
import { checkCallOptions } from '../options.ts';
import { describeValue } from './keys.ts';
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

/** Objects one listing page or one batch delete covers, as S3 bills them. */
export const KEYS_PER_REQUEST = 1000;

/** Options of {@link RateLimitedStore}. */
export interface RateLimitedStoreOptions {
  /** Requests let through per second, on average (may be fractional, > 0). */
  requestsPerSecond: number;
  /**
   * Requests that may go at once after a quiet spell (the bucket's size),
   * an integer >= 1. @default max(1, ceil(requestsPerSecond))
   */
  burst?: number;
  /**
   * Where the waits are recorded: `store.throttle_wait_seconds`, one
   * observation per call that waited for a token.
   * @default no metrics
   */
  metrics?: Metrics;
  /** @default the system clock */
  clock?: Clock;
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

/**
 * A token bucket: `requestsPerSecond` tokens a second up to `burst`; each
 * {@link take} spends one, waiting (first come, first served) while there
 * is none.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly waiters: Waiter[] = [];
  private timer: ClockTimer | undefined;
  private closed = false;

  constructor(
    readonly requestsPerSecond: number,
    readonly burst: number,
    private readonly clock: Clock = systemClock,
  ) {
    this.tokens = burst;
    this.last = monotonicNow(clock);
  }

  /** Requests waiting for a token. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Resolves when a token is spent for the caller: at once if one is there
   * and nobody waits ahead, else when its turn comes.
   *
   * @returns whether the caller had to wait.
   * @throws the signal's reason when it aborts first (the place in line is given up).
   * @throws {ClosedError} after {@link close}.
   */
  take(signal?: AbortSignal): Promise<boolean> {
    if (this.closed) return Promise.reject(new ClosedError('the rate limiter'));
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    this.refill();
    if (this.waiters.length === 0 && this.tokens >= 1) {
      this.tokens -= 1;
      return Promise.resolve(false);
    }
    return new Promise<boolean>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: () => resolve(true),
        reject,
        signal,
        onAbort: () => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(signal?.reason as Error);
          // The next in line may be served by the tokens this one no longer needs.
          this.reschedule();
        },
      };
      this.waiters.push(waiter);
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      this.reschedule();
    });
  }

  /** Rejects every waiter with a {@link ClosedError}, and every later take. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.waiters.splice(0)) {
      w.signal?.removeEventListener('abort', w.onAbort);
      w.reject(new ClosedError('the rate limiter'));
    }
  }

  private refill(): void {
    const now = monotonicNow(this.clock);
    const elapsedMs = Math.max(0, now - this.last);
    this.last = now;
    this.tokens = Math.min(this.burst, this.tokens + (elapsedMs * this.requestsPerSecond) / 1000);
  }

  /** Serves the waiters the tokens allow, and sets one timer for the next token. */
  private reschedule(): void {
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.refill();
    while (this.waiters.length > 0 && this.tokens >= 1) {
      this.tokens -= 1;
      const w = this.waiters.shift() as Waiter;
      w.signal?.removeEventListener('abort', w.onAbort);
      w.resolve();
    }
    if (this.waiters.length === 0) return;
    const ms = Math.max(1, Math.ceil(((1 - this.tokens) * 1000) / this.requestsPerSecond));
    // Referenced: somebody is awaiting this token.
    this.timer = this.clock.setTimeout(() => this.reschedule(), ms, { ref: true });
  }
}

/**
 * Lets at most `requestsPerSecond` requests a second (on average, `burst`
 * at once) reach the store below; a call waits for its token before it is
 * made, and gives up its place when its `signal` aborts.
 *
 * A request is one call, except a listing (one request for its first page,
 * then one per {@link KEYS_PER_REQUEST} objects listed) and `deleteMany`
 * (one per {@link KEYS_PER_REQUEST} keys), as S3 counts them. The cap
 * applies to calls, above the store's own retries: a retry of a failed call
 * is not charged again.
 *
 * `close()` rejects the calls still waiting with a {@link ClosedError} and
 * closes the store below.
 *
 * @throws {InvalidArgumentError} for bad options.
 *
 * @example
 * // Every role given `store` shares 100 requests a second.
 * const store = new RateLimitedStore(openStore('s3://bucket/q'), { requestsPerSecond: 100 });
 */
export class RateLimitedStore implements ObjectStore {
  readonly description: string;

  /** The inner store's hints. */
  get hints(): StoreHints | undefined {
    return this.inner.hints;
  }
  /** The bucket every call draws from. */
  readonly bucket: TokenBucket;
  private readonly metrics: Metrics;
  private readonly clock: Clock;

  constructor(
    readonly inner: ObjectStore,
    options: RateLimitedStoreOptions,
  ) {
    checkCallOptions('RateLimitedStore', options, [
      'requestsPerSecond',
      'burst',
      'metrics',
      'clock',
    ]);
    const rate = options?.requestsPerSecond;
    if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0) {
      throw new InvalidArgumentError(
        `RateLimitedStore: requestsPerSecond must be a number > 0, got ${describeValue(rate)}`,
      );
    }
    const burst = options.burst ?? Math.max(1, Math.ceil(rate));
    if (!Number.isSafeInteger(burst) || burst < 1) {
      throw new InvalidArgumentError(
        `RateLimitedStore: burst must be an integer >= 1, got ${describeValue(burst)}`,
      );
    }
    this.description = inner.description;
    this.clock = options.clock ?? systemClock;
    this.metrics = options.metrics ?? noopMetrics;
    this.bucket = new TokenBucket(rate, burst, this.clock);
  }

  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    await this.admit(1, options.signal);
    return this.inner.get(key, options);
  }

  async head(key: string, options: StoreCallOptions = {}): Promise<ObjectMeta> {
    await this.admit(1, options.signal);
    return this.inner.head(key, options);
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    await this.admit(1, options.signal);
    return this.inner.put(key, body, options);
  }

  async *list(prefix: string, options: StoreCallOptions = {}): AsyncIterable<ObjectMeta> {
    await this.admit(1, options.signal);
    let n = 0;
    for await (const meta of this.inner.list(prefix, options)) {
      // The next page's request, charged before its first object is handed out.
      if (n > 0 && n % KEYS_PER_REQUEST === 0) await this.admit(1, options.signal);
      n++;
      yield meta;
    }
  }

  async delete(key: string, options: StoreCallOptions = {}): Promise<void> {
    await this.admit(1, options.signal);
    return this.inner.delete(key, options);
  }

  async deleteMany(keys: readonly string[], options: StoreCallOptions = {}): Promise<void> {
    // An empty call sends nothing.
    await this.admit(Math.ceil(keys.length / KEYS_PER_REQUEST), options.signal);
    return this.inner.deleteMany(keys, options);
  }

  /** Rejects the calls waiting for a token ({@link ClosedError}), then closes the store below. */
  close(): Promise<void> {
    this.bucket.close();
    return this.inner.close();
  }

  private async admit(requests: number, signal: AbortSignal | undefined): Promise<void> {
    const started = monotonicNow(this.clock);
    let waited = false;
    for (let i = 0; i < requests; i++) {
      if (await this.bucket.take(signal)) waited = true;
    }
    if (waited) {
      const seconds = (monotonicNow(this.clock) - started) / 1000;
      this.metrics.observe('store.throttle_wait_seconds', seconds);
    }
  }
}

/**
 * The one retry policy. Transient storage failures are retried in exactly
 * one place, the store (each adapter, or {@link RetryingStore} around a store
 * that does not retry); nothing above the store layer retries a storage
 * error again, so a call's total budget is the policy below and nothing
 * multiplies it. Protocol loops above the store (a conditional write that
 * lost a race, re-read and re-applied) are not retries of a failure and are
 * bounded by the same policy's deadline.
 */
import { sleep, systemClock, type Clock } from './clock.ts';
import { InvalidArgumentError, StorageError } from './errors.ts';
import type { Logger } from './logger.ts';

/** How transient failures are retried. */
export interface RetryPolicy {
  /** Attempts in all, the first included. @default 6 */
  maxAttempts?: number;
  /** Ceiling of the first backoff, in milliseconds; later ones double. @default 25 */
  baseDelayMs?: number;
  /** Ceiling of any one backoff, in milliseconds. @default 2000 */
  maxDelayMs?: number;
  /** Time limit of one attempt (one request), in milliseconds. @default 30000 */
  attemptTimeoutMs?: number;
  /**
   * Time limit of one call with all its attempts and backoffs, in
   * milliseconds: no new attempt starts after it. @default 120000
   */
  deadlineMs?: number;
}

/** Defaults of {@link RetryPolicy}. */
export const RETRY_DEFAULTS: Readonly<Required<RetryPolicy>> = Object.freeze({
  maxAttempts: 6,
  baseDelayMs: 25,
  maxDelayMs: 2000,
  attemptTimeoutMs: 30_000,
  deadlineMs: 120_000,
});

/**
 * Resolves a policy against the defaults and validates it.
 *
 * @throws {InvalidArgumentError} naming the field and the value.
 */
export function resolveRetryPolicy(policy: RetryPolicy | undefined): Required<RetryPolicy> {
  const p = { ...RETRY_DEFAULTS };
  for (const [name, value] of Object.entries(policy ?? {}) as [keyof RetryPolicy, unknown][]) {
    if (value === undefined) continue;
    if (!(name in RETRY_DEFAULTS)) {
      throw new InvalidArgumentError(
        `retry: unknown field "${String(name)}"; expected ${Object.keys(RETRY_DEFAULTS).join(', ')}`,
      );
    }
    const min = name === 'maxAttempts' || name === 'attemptTimeoutMs' ? 1 : 0;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
      throw new InvalidArgumentError(
        `retry.${name} must be an integer >= ${min}, got ${typeof value === 'number' ? value : typeof value}`,
      );
    }
    p[name] = value;
  }
  return Object.freeze(p);
}

/**
 * The backoff before attempt `attempt + 1` (attempts count from 1): "full
 * jitter", a uniform draw below min(max, base * 2^(attempt-1)), so racing
 * writers spread out instead of colliding again in step.
 */
export function backoffMs(
  attempt: number,
  policy: Pick<Required<RetryPolicy>, 'baseDelayMs' | 'maxDelayMs'>,
  random = Math.random,
): number {
  const ceiling = Math.min(
    policy.maxDelayMs,
    policy.baseDelayMs * 2 ** Math.min(30, Math.max(0, attempt - 1)),
  );
  return Math.floor(random() * ceiling);
}

/** Whether an error is worth another attempt by the policy: a retriable storage failure. */
export function isRetriable(error: unknown): boolean {
  return error instanceof StorageError && error.retriable && error.code !== 'CLOSED';
}

/** Options of {@link retry}. */
export interface RetryCallOptions {
  policy: Required<RetryPolicy>;
  /** Aborts the wait and the attempt; the call rejects with the signal's reason. */
  signal?: AbortSignal;
  clock?: Clock;
  /** Which failures to retry. @default {@link isRetriable} */
  retriable?: (error: unknown) => boolean;
  logger?: Logger;
  /** Names the call in log lines, e.g. `s3://bucket: put "key"`. */
  what?: string;
}

/**
 * Runs `attempt` until it succeeds, fails with an error that is not
 * retriable, runs out of attempts, or would pass the deadline. Each attempt
 * gets a signal that aborts at the caller's signal or after
 * `attemptTimeoutMs`. Rethrows the last failure.
 */
export async function retry<T>(
  attempt: (signal: AbortSignal, n: number) => Promise<T>,
  options: RetryCallOptions,
): Promise<T> {
  const { policy, signal, clock = systemClock, retriable = isRetriable, logger } = options;
  const started = clock.now();
  for (let n = 1; ; n++) {
    signal?.throwIfAborted();
    try {
      return await attempt(attemptSignal(signal, policy.attemptTimeoutMs), n);
    } catch (error) {
      signal?.throwIfAborted();
      if (!retriable(error) || n >= policy.maxAttempts) throw error;
      const wait = backoffMs(n, policy);
      if (clock.now() + wait - started >= policy.deadlineMs) throw error;
      logger?.debug(
        { attempt: n, delayMs: wait, error: (error as Error).message },
        `${options.what ?? 'store call'}: retrying after a transient failure`,
      );
      await sleep(wait, { signal, clock });
    }
  }
}

/**
 * Combines an optional caller signal with a per-attempt timeout. The result
 * aborts with a TimeoutError DOMException when the timeout fires first.
 */
export function attemptSignal(signal: AbortSignal | undefined, timeoutMs: number): AbortSignal {
  const timeout = AbortSignal.timeout(timeoutMs);
  return signal ? AbortSignal.any([signal, timeout]) : timeout;
}

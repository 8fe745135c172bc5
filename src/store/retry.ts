import { setTimeout as sleep } from 'node:timers/promises';

/** How a store retries transient failures. */
export interface RetryOptions {
  /** Attempts in all, the first included. @default 6 */
  maxAttempts?: number;
  /** Upper bound of the first backoff, in milliseconds. @default 25 */
  baseDelayMs?: number;
  /** Upper bound of any one backoff, in milliseconds. @default 2000 */
  maxDelayMs?: number;
}

/** Defaults of {@link RetryOptions}. */
export const RETRY_DEFAULTS: Readonly<Required<RetryOptions>> = Object.freeze({
  maxAttempts: 6,
  baseDelayMs: 25,
  maxDelayMs: 2000,
});

/** Resolves {@link RetryOptions} against the defaults. */
export function resolveRetry(options: RetryOptions | undefined): Required<RetryOptions> {
  return { ...RETRY_DEFAULTS, ...options };
}

/**
 * The backoff before attempt `attempt + 1` (attempts count from 1): "full
 * jitter", a uniform draw below min(max, base * 2^(attempt-1)), so racing
 * writers spread out instead of colliding again in step.
 */
export function backoffMs(
  attempt: number,
  options: Required<RetryOptions>,
  random = Math.random,
): number {
  const ceiling = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}

/**
 * Waits `ms` milliseconds, rejecting with the signal's reason if it aborts.
 * The timer keeps the process alive: somebody is awaiting this wait (only
 * background timers are unref'd).
 */
export async function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) {
    signal?.throwIfAborted();
    return;
  }
  await sleep(ms, undefined, { signal });
}

/**
 * Combines an optional caller signal with a per-attempt timeout. The result
 * aborts with a TimeoutError DOMException when the timeout fires first.
 */
export function attemptSignal(signal: AbortSignal | undefined, timeoutMs: number): AbortSignal {
  const timeout = AbortSignal.timeout(timeoutMs);
  return signal ? AbortSignal.any([signal, timeout]) : timeout;
}

/**
 * Small helpers for the lifecycle every long-lived role shares: waits that a
 * signal can abort, signals combined, and graceful closes bounded by a timeout.
 */
import type { Clock, ClockTimer } from './clock.ts';

/** Waits for `work`, or rejects with the signal's reason when it aborts first. */
export function abortable<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) {
    // The work was started: its failure, if any, is the caller's no longer.
    work.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: Error) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** Waits for `work` up to `ms` by `clock`; true when the time ran out first. */
export async function withTimeout(
  work: Promise<unknown>,
  ms: number,
  clock: Clock,
): Promise<boolean> {
  let timer: ClockTimer | undefined;
  const expired = new Promise<true>((resolve) => {
    timer = clock.setTimeout(() => resolve(true), ms, { ref: true });
  });
  try {
    return (await Promise.race([work.then(() => false), expired])) === true;
  } finally {
    clock.clearTimeout(timer);
  }
}

/**
 * A role's `close({ timeoutMs })`: waits for `closing`, at most `timeoutMs`
 * by `clock` when given; if the time runs out first, destroys the role with
 * the error `timedOut()` builds (which says what was left undone) and
 * rejects with it. Every call's timeout counts, also one given after a
 * close without.
 */
export async function closeWithin(
  closing: Promise<void>,
  timeoutMs: number | undefined,
  clock: Clock,
  timedOut: () => Error,
  destroy: (error: Error) => Promise<void>,
): Promise<void> {
  if (timeoutMs !== undefined && (await withTimeout(closing, timeoutMs, clock))) {
    const error = timedOut();
    await destroy(error);
    throw error;
  }
  await closing;
}

/**
 * One signal that aborts when any of the given ones does (undefined for
 * none; the signal itself for one). Given ones may be undefined or repeated.
 */
export function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const given = [...new Set(signals)].filter((s): s is AbortSignal => s !== undefined);
  if (given.length <= 1) return given[0];
  return AbortSignal.any(given);
}

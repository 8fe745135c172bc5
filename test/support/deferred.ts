/**
 * Promises tests hold and release by hand, to interleave racing parties
 * deterministically instead of sleeping.
 */

/** A promise and the functions that settle it. */
export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

/** A promise settled from outside. */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * Whether `promise` settles within `turns` turns of the event loop (each a
 * setImmediate, so promise jobs and in-process I/O in between run). For
 * in-memory work this is deterministic: no timer, no wall clock.
 */
export async function settlesWithin(promise: Promise<unknown>, turns = 200): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < turns && !settled; i++) await new Promise((r) => setImmediate(r));
  return settled;
}

/** Runs turns of the event loop until `condition` holds; fails after `turns`. */
export async function until(condition: () => boolean, turns = 10_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (condition()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`condition not met after ${turns} turns of the event loop`);
}

/**
 * Settling a conditional write whose outcome was lost: the one place where
 * Spillway reads an object back to learn whether its own write landed. Both
 * the network adapters ({@link RemoteStore}) and {@link RetryingStore} use it;
 * nothing above the store layer settles again.
 */
import { sleep, type Clock } from '../clock.ts';
import {
  NotFoundError,
  OutcomeUnknownError,
  PreconditionFailedError,
  StorageError,
} from '../errors.ts';
import type { Logger } from '../logger.ts';
import { backoffMs, type RetryPolicy } from '../retry.ts';
import type { GetResult, PutResult } from './object-store.ts';

/** The condition of a conditional write. */
export type ConditionalMode = 'create' | { ifMatch: string };

/** How one failed attempt of a conditional write is to be treated. */
export type PutFailure =
  /** The condition did not hold (a 412 or an "exists"): not applied. */
  | 'conflict'
  /** The request may have reached the store: applied or not, nobody knows. */
  | 'uncertain'
  /** The request never left (connection refused): not applied, try again. */
  | 'not-sent'
  /** Permanent: rethrow the attempt's error (when it is a Spillway error). */
  | 'fatal'
  /** Permanent: throw this error instead (the attempt's, translated). */
  | Error;

/** What reading back says about an uncertain write. */
export type Settlement =
  { kind: 'applied'; version: string } | { kind: 'not-applied' } | { kind: 'unknown' };

/**
 * Decides from the object as read back (undefined: absent) whether our write
 * of `body` under `mode` landed: our bytes are there (applied); the object is
 * still absent for a create, or still at the version an ifMatch named (not
 * applied); anything else (someone else's bytes) is unknown, since our write
 * may have landed and been overwritten.
 */
export function settleFromReadBack(
  current: GetResult | undefined,
  body: Uint8Array,
  mode: ConditionalMode,
  sameVersion: (a: string, b: string) => boolean = (a, b) => a === b,
): Settlement {
  if (current === undefined)
    return mode === 'create' ? { kind: 'not-applied' } : { kind: 'unknown' };
  if (
    Buffer.from(current.body.buffer, current.body.byteOffset, current.body.byteLength).equals(body)
  ) {
    return { kind: 'applied', version: current.version };
  }
  if (mode !== 'create' && sameVersion(current.version, mode.ifMatch))
    return { kind: 'not-applied' };
  return { kind: 'unknown' };
}

/** What {@link putSettled} needs. */
export interface SettledPut {
  key: string;
  body: Uint8Array;
  mode: ConditionalMode;
  policy: Required<RetryPolicy>;
  clock: Clock;
  signal?: AbortSignal;
  logger?: Logger;
  /** The store, for messages. */
  description: string;
  /** One attempt of the write, with a per-attempt signal. */
  attempt(signal: AbortSignal): Promise<PutResult>;
  /** How a failed attempt is to be treated. */
  classify(error: unknown): PutFailure;
  /**
   * Reads the object back (with the store's own retries); a NotFoundError
   * means absent. The signal ends it at the put's deadline.
   */
  readBack(signal: AbortSignal): Promise<GetResult>;
  sameVersion?: (a: string, b: string) => boolean;
  /** Per-attempt signal for `attempt`. */
  attemptSignal(signal: AbortSignal | undefined): AbortSignal;
}

/**
 * A conditional write with retries in which a lost outcome is settled by
 * reading back, never guessed: a conflict that follows an uncertain attempt is
 * not taken as a conflict (it may be our own earlier write), and when the
 * read-back cannot tell, the call fails with {@link OutcomeUnknownError}.
 * Never a false success, never a false conflict.
 */
export async function putSettled(p: SettledPut): Promise<PutResult> {
  const what = p.mode === 'create' ? 'create' : `ifMatch ${p.mode.ifMatch}`;
  const started = p.clock.now();
  const unknown = (cause: unknown): OutcomeUnknownError =>
    new OutcomeUnknownError(
      p.key,
      `${p.description}: put "${p.key}" (${what}): the outcome is unknown (the request failed after it may have reached the server, and reading back did not settle it); re-read before deciding`,
      cause,
    );
  // Set while an earlier attempt may have been applied and is not yet settled.
  let uncertain: unknown;
  for (let n = 1; ; n++) {
    if (p.signal?.aborted) {
      if (uncertain !== undefined) throw unknown(p.signal.reason);
      p.signal.throwIfAborted();
    }
    let failure: PutFailure;
    let error: unknown;
    try {
      return await p.attempt(p.attemptSignal(p.signal));
    } catch (e) {
      error = e;
      if (p.signal?.aborted) throw unknown(p.signal.reason);
      failure = p.classify(e);
    }
    if (failure === 'fatal' || failure instanceof Error) {
      if (uncertain !== undefined) throw unknown(error);
      throw failure instanceof Error ? failure : error;
    }
    if (failure === 'conflict' && uncertain === undefined) {
      throw error instanceof PreconditionFailedError
        ? error
        : new PreconditionFailedError(
            p.key,
            p.mode === 'create'
              ? `${p.description}: create "${p.key}": the object already exists`
              : `${p.description}: put "${p.key}" if version ${p.mode.ifMatch}: the object changed (or is gone)`,
            error,
          );
    }
    const outOfBudget = (wait: number): boolean =>
      n >= p.policy.maxAttempts || p.clock.now() + wait - started >= p.policy.deadlineMs;
    if (failure === 'not-sent' && uncertain === undefined) {
      const wait = backoffMs(n, p.policy);
      if (outOfBudget(wait)) {
        throw error instanceof StorageError
          ? error
          : new StorageError(`${p.description}: put "${p.key}" failed after ${n} attempts`, {
              retriable: true,
              cause: error,
            });
      }
      await sleep(wait, { signal: p.signal, clock: p.clock });
      continue;
    }
    // Uncertain, or a conflict or refusal after an uncertain attempt: read back.
    uncertain = error;
    let settled: Settlement;
    try {
      // The read-back shares the put's deadline: the call's whole budget stays the policy's.
      const left = Math.max(1, p.policy.deadlineMs - (p.clock.now() - started));
      const bounded = p.signal
        ? AbortSignal.any([p.signal, AbortSignal.timeout(left)])
        : AbortSignal.timeout(left);
      const current = await p.readBack(bounded).catch((e: unknown) => {
        if (e instanceof NotFoundError) return undefined;
        throw e;
      });
      settled = settleFromReadBack(current, p.body, p.mode, p.sameVersion);
    } catch {
      settled = { kind: 'unknown' };
    }
    if (settled.kind === 'applied') {
      p.logger?.debug(
        { key: p.key, attempt: n },
        `${p.description}: a write whose response was lost had landed`,
      );
      return { version: settled.version };
    }
    const wait = backoffMs(n, p.policy);
    if (settled.kind === 'unknown' || outOfBudget(wait)) throw unknown(error);
    // Definitely not applied: the next attempt starts with a clean slate.
    uncertain = undefined;
    await sleep(wait, { signal: p.signal, clock: p.clock });
  }
}

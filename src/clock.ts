/**
 * Time, injectable: every timer Spillway sets and every "now" it reads goes
 * through a {@link Clock}, so tests move time by hand instead of sleeping.
 */

/** An opaque handle of a timer set through a {@link Clock}. */
export type ClockTimer = { readonly __clockTimer: never } | object;

/** Options of {@link Clock.setTimeout}. */
export interface TimerOptions {
  /**
   * Whether the timer keeps the process alive. Background timers (ack
   * intervals, collections) do not; a timer somebody awaits does.
   * @default false
   */
  ref?: boolean;
}

/** A source of time, injectable so tests need not sleep. */
export interface Clock {
  /** Wall-clock milliseconds since the Unix epoch. */
  now(): number;
  /**
   * Milliseconds on a clock that never goes backwards, for measuring how
   * long something took (its origin means nothing). Optional: without it,
   * `performance.now()` is used.
   */
  monotonicNow?(): number;
  /** Calls `callback` once, `ms` milliseconds from now (by this clock). */
  setTimeout(callback: () => void, ms: number, options?: TimerOptions): ClockTimer;
  /** Cancels a timer; unknown or fired timers are ignored. */
  clearTimeout(timer: ClockTimer | undefined): void;
}

/** The system clock: `Date.now()` and Node's timers. */
export const systemClock: Clock = Object.freeze({
  now: () => Date.now(),
  monotonicNow: () => performance.now(),
  setTimeout(callback: () => void, ms: number, options?: TimerOptions): ClockTimer {
    // Node fires a timer past 2^31 - 1 ms at once; waits that long are capped there.
    const t = setTimeout(callback, Math.min(2_147_483_647, Math.max(0, ms)));
    if (!options?.ref) t.unref();
    return t;
  },
  clearTimeout(timer: ClockTimer | undefined): void {
    if (timer !== undefined) clearTimeout(timer as NodeJS.Timeout);
  },
});

interface ManualTimer {
  due: number;
  order: number;
  callback: () => void;
}

/**
 * A clock tests move by hand: `now()` changes only through
 * {@link ManualClock.advance} or {@link ManualClock.set}, which fire the
 * timers that fall due, in order of their due time.
 *
 * @example
 * const clock = new ManualClock();
 * const producer = new Producer({ store, clock, flushIntervalMs: 100 });
 * await producer.produce([bytes]);
 * await clock.advance(100); // the flush timer fires now
 */
export class ManualClock implements Clock {
  private readonly timers = new Set<ManualTimer>();
  private order = 0;

  constructor(private ms = 1_700_000_000_000) {}

  now(): number {
    return this.ms;
  }

  /** The same as {@link ManualClock.now}: a manual clock never goes backwards. */
  monotonicNow(): number {
    return this.ms;
  }

  setTimeout(callback: () => void, ms: number): ClockTimer {
    const timer: ManualTimer = { due: this.ms + Math.max(0, ms), order: this.order++, callback };
    this.timers.add(timer);
    return timer;
  }

  clearTimeout(timer: ClockTimer | undefined): void {
    this.timers.delete(timer as ManualTimer);
  }

  /** Timers set and not yet fired or cleared. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way
   * (each at its own due time, so a timer set by a callback fires too if it is
   * due before the end). Resolves after the callbacks' promise jobs ran.
   */
  async advance(ms: number): Promise<void> {
    await this.set(this.ms + ms);
  }

  /** Sets the time (never backwards past a due timer), firing what falls due. */
  async set(ms: number): Promise<void> {
    for (;;) {
      let next: ManualTimer | undefined;
      for (const t of this.timers) {
        if (
          t.due <= ms &&
          (!next || t.due < next.due || (t.due === next.due && t.order < next.order))
        )
          next = t;
      }
      if (!next) break;
      this.timers.delete(next);
      this.ms = Math.max(this.ms, next.due);
      next.callback();
      // Let the callback's promise jobs run before the next timer.
      await settle();
    }
    this.ms = Math.max(this.ms, ms);
    await settle();
  }
}

/** `clock`'s monotonic milliseconds, or `performance.now()` when it has none. */
export function monotonicNow(clock: Clock): number {
  return clock.monotonicNow ? clock.monotonicNow() : performance.now();
}

/** Lets pending promise jobs and immediates run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
}

/**
 * Waits `ms` by `clock`; rejects with the signal's reason if it aborts. The
 * timer keeps the process alive: somebody is awaiting it.
 */
export function sleep(
  ms: number,
  options: { signal?: AbortSignal; clock?: Clock } = {},
): Promise<void> {
  const { signal, clock = systemClock } = options;
  if (signal?.aborted) return Promise.reject(signal.reason as Error);
  if (ms <= 0) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clock.clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = clock.setTimeout(
      () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      },
      ms,
      { ref: true },
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A clock `offsetMs` ahead of `base` (behind, if negative): a host whose
 * clock is wrong. Its timers run at `base`'s pace.
 */
export function skewedClock(offsetMs: number, base: Clock = systemClock): Clock {
  return {
    now: () => base.now() + offsetMs,
    monotonicNow: () => monotonicNow(base),
    setTimeout: (callback, ms, options) => base.setTimeout(callback, ms, options),
    clearTimeout: (timer) => base.clearTimeout(timer),
  };
}

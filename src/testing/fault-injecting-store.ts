import { OutcomeUnknownError, StorageError } from '../errors.ts';
import type {
  GetOptions,
  GetResult,
  ObjectMeta,
  ObjectStore,
  PutOptions,
  PutResult,
  StoreCallOptions,
  StoreHints,
} from '../store/object-store.ts';
import { sleep } from '../clock.ts';

/** The operations of an {@link ObjectStore} that faults can target. */
export type StoreOperation = 'get' | 'head' | 'put' | 'list' | 'delete' | 'deleteMany';
const OPERATIONS: readonly StoreOperation[] = [
  'get',
  'head',
  'put',
  'list',
  'delete',
  'deleteMany',
];
const WRITES: ReadonlySet<StoreOperation> = new Set(['put', 'delete', 'deleteMany']);

/** What a hook is told about the call it intercepts. */
export interface StoreCall {
  op: StoreOperation;
  /** The key, the list prefix, or the first key of a deleteMany. */
  key: string;
  /** Every key, for a deleteMany. */
  keys?: readonly string[];
  /** The put mode, for puts. */
  mode?: PutOptions['mode'];
  /** The body, for puts. */
  body?: Uint8Array;
  /** The caller's signal: a hook that holds the call may honour it. */
  signal?: AbortSignal;
}

/** A hook run before or after a call reaches the inner store; the call waits for it. */
export type StoreHook = (call: StoreCall) => void | Promise<void>;

/** Random faults, drawn from a seeded generator so a run can be replayed. */
export interface RandomFaults {
  /** Seed of the generator. @default 1 */
  seed?: number;
  /** Chance per call of failing before it reaches the store. @default 0 */
  errorRate?: number;
  /** Chance per write of applying it and then failing as if the response was lost. @default 0 */
  applyThenFailRate?: number;
  /**
   * Chance per conditional overwrite (`ifMatch`) of a racing writer: the
   * object is rewritten with its own bytes just before the call reaches the
   * store, so the call loses a real race (a conflict, where the store gives
   * the rewrite a new version). @default 0
   */
  conflictRate?: number;
  /** Chance per call of extra latency. @default 0 */
  latencyRate?: number;
  /** Extra latency when it strikes, in milliseconds, drawn uniformly up to this. @default 20 */
  maxLatencyMs?: number;
  /** Operations the random faults apply to. @default every operation */
  operations?: readonly StoreOperation[];
}

/** Options of {@link FaultInjectingStore}. */
export interface FaultInjectingStoreOptions {
  /** Random faults; none when omitted. */
  random?: RandomFaults;
}

/** Counts of what a {@link FaultInjectingStore} did, for test reports. */
export interface FaultStats {
  /** Calls seen, by operation. */
  calls: Record<StoreOperation, number>;
  /** Calls failed before reaching the store. */
  errors: number;
  /** Writes applied and then reported as failed. */
  appliedThenFailed: number;
  /** Calls delayed. */
  delays: number;
  /** Racing rewrites injected before conditional overwrites. */
  conflicts: number;
}

interface Scripted {
  remaining: number;
  error?: () => Error;
}

/**
 * Wraps a store and injects faults, for tests of code built on the store
 * (Spillway's and yours):
 *
 * - {@link failNext}: the next N calls of an operation fail before reaching
 *   the store (a retriable {@link StorageError} by default);
 * - {@link applyThenFailNext}: the next N writes are applied and then fail as
 *   if the response was lost ({@link OutcomeUnknownError} for puts);
 * - {@link setLatency}: fixed extra latency per operation;
 * - {@link before} / {@link after}: hooks that run around each call and may
 *   wait, to interleave racing writers deterministically;
 * - random faults from a seeded generator ({@link RandomFaults}).
 *
 * @example
 * const store = new FaultInjectingStore(openStore('memory://t'));
 * store.applyThenFailNext('put'); // the next put lands, but its caller sees OutcomeUnknownError
 */
export class FaultInjectingStore implements ObjectStore {
  readonly description: string;

  /** The inner store's hints. */
  get hints(): StoreHints | undefined {
    return this.inner.hints;
  }
  /** What was injected so far. */
  readonly stats: FaultStats;
  private readonly failures = new Map<StoreOperation, Scripted>();
  private readonly applyThenFail = new Map<StoreOperation, number>();
  private readonly latencyMs = new Map<StoreOperation, number>();
  private readonly hooksBefore = new Map<StoreOperation, Set<StoreHook>>();
  private readonly hooksAfter = new Map<StoreOperation, Set<StoreHook>>();
  private random: RandomFaults | undefined;
  private rng: () => number;

  constructor(
    /** The wrapped store. */
    readonly inner: ObjectStore,
    options: FaultInjectingStoreOptions = {},
  ) {
    this.description = `faulty(${inner.description})`;
    this.stats = {
      calls: Object.fromEntries(OPERATIONS.map((op) => [op, 0])) as Record<StoreOperation, number>,
      errors: 0,
      appliedThenFailed: 0,
      delays: 0,
      conflicts: 0,
    };
    this.random = options.random;
    this.rng = mulberry32(options.random?.seed ?? 1);
  }

  /** Fails the next `count` calls of `op` before they reach the store. */
  failNext(op: StoreOperation, count = 1, error?: () => Error): this {
    this.failures.set(op, { remaining: count, ...(error ? { error } : {}) });
    return this;
  }

  /** Applies the next `count` writes of `op` and then fails them as if the response was lost. */
  applyThenFailNext(op: 'put' | 'delete' | 'deleteMany', count = 1): this {
    this.applyThenFail.set(op, count);
    return this;
  }

  /** Adds `ms` of latency to every call of `op` (0 removes it). */
  setLatency(op: StoreOperation, ms: number): this {
    this.latencyMs.set(op, ms);
    return this;
  }

  /** Replaces the random faults (undefined turns them off). */
  setRandomFaults(random: RandomFaults | undefined): this {
    this.random = random;
    this.rng = mulberry32(random?.seed ?? 1);
    return this;
  }

  /** Runs `hook` before each call of `op` reaches the store. Returns a function that removes it. */
  before(op: StoreOperation, hook: StoreHook): () => void {
    return addHook(this.hooksBefore, op, hook);
  }

  /** Runs `hook` after each call of `op` returned from the store, before its caller sees the result. */
  after(op: StoreOperation, hook: StoreHook): () => void {
    return addHook(this.hooksAfter, op, hook);
  }

  /** Removes every scripted fault, latency and hook (the random faults stay). */
  reset(): this {
    this.failures.clear();
    this.applyThenFail.clear();
    this.latencyMs.clear();
    this.hooksBefore.clear();
    this.hooksAfter.clear();
    return this;
  }

  get(key: string, options?: GetOptions): Promise<GetResult> {
    return this.call({ op: 'get', key }, options?.signal, () => this.inner.get(key, options));
  }

  head(key: string, options?: StoreCallOptions): Promise<ObjectMeta> {
    return this.call({ op: 'head', key }, options?.signal, () => this.inner.head(key, options));
  }

  put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult> {
    return this.call(
      { op: 'put', key, mode: options?.mode ?? 'overwrite', body },
      options?.signal,
      () => this.inner.put(key, body, options),
    );
  }

  async *list(prefix: string, options?: StoreCallOptions): AsyncIterable<ObjectMeta> {
    const items: ObjectMeta[] = await this.call(
      { op: 'list', key: prefix },
      options?.signal,
      async () => {
        const all: ObjectMeta[] = [];
        for await (const item of this.inner.list(prefix, options)) all.push(item);
        return all;
      },
    );
    yield* items;
  }

  delete(key: string, options?: StoreCallOptions): Promise<void> {
    return this.call({ op: 'delete', key }, options?.signal, () => this.inner.delete(key, options));
  }

  deleteMany(keys: readonly string[], options?: StoreCallOptions): Promise<void> {
    return this.call({ op: 'deleteMany', key: keys[0] ?? '', keys }, options?.signal, () =>
      this.inner.deleteMany(keys, options),
    );
  }

  /** Closes the inner store. */
  close(): Promise<void> {
    return this.inner.close();
  }

  private async call<T>(
    call: StoreCall,
    signal: AbortSignal | undefined,
    run: () => Promise<T>,
  ): Promise<T> {
    const { op } = call;
    if (signal) call.signal = signal;
    this.stats.calls[op]++;
    for (const hook of this.hooksBefore.get(op) ?? []) await hook(call);

    const random =
      this.random && (this.random.operations ?? OPERATIONS).includes(op) ? this.random : undefined;
    let extra = this.latencyMs.get(op) ?? 0;
    if (random && this.rng() < (random.latencyRate ?? 0))
      extra += this.rng() * (random.maxLatencyMs ?? 20);
    if (extra > 0) {
      this.stats.delays++;
      await sleep(extra, { signal });
    }

    const scripted = this.failures.get(op);
    const failScripted = scripted !== undefined && scripted.remaining > 0;
    if (failScripted) scripted.remaining--;
    if (failScripted || (random && this.rng() < (random.errorRate ?? 0))) {
      this.stats.errors++;
      throw (
        scripted?.error?.() ??
        new StorageError(
          `injected fault: ${op} "${call.key}" failed before reaching ${this.inner.description}`,
          {
            code: 'INJECTED',
            retriable: true,
          },
        )
      );
    }

    let lose = false;
    if (WRITES.has(op)) {
      const left = this.applyThenFail.get(op) ?? 0;
      if (left > 0) {
        this.applyThenFail.set(op, left - 1);
        lose = true;
      } else if (random && this.rng() < (random.applyThenFailRate ?? 0)) {
        lose = true;
      }
    }

    if (
      random &&
      op === 'put' &&
      typeof call.mode === 'object' &&
      this.rng() < (random.conflictRate ?? 0)
    ) {
      await this.raceRewrite(call.key, signal);
    }

    const result = await run();
    for (const hook of this.hooksAfter.get(op) ?? []) await hook(call);
    if (lose) {
      this.stats.appliedThenFailed++;
      const message = `injected fault: ${op} "${call.key}" was applied but its response was lost`;
      if (op === 'put') throw new OutcomeUnknownError(call.key, message);
      throw new StorageError(message, { code: 'INJECTED', retriable: true });
    }
    return result;
  }

  /** Rewrites `key` with its current bytes, as a racing writer would; a missing key is left alone. */
  private async raceRewrite(key: string, signal: AbortSignal | undefined): Promise<void> {
    try {
      const current = await this.inner.get(key, { signal });
      await this.inner.put(key, current.body, { mode: { ifMatch: current.version }, signal });
      this.stats.conflicts++;
    } catch {
      // The race is best effort: whatever got in its way is a race of its own.
    }
  }
}

function addHook(
  map: Map<StoreOperation, Set<StoreHook>>,
  op: StoreOperation,
  hook: StoreHook,
): () => void {
  let set = map.get(op);
  if (!set) {
    set = new Set();
    map.set(op, set);
  }
  set.add(hook);
  return () => set.delete(hook);
}

/** A small, fast, seedable generator (mulberry32); good enough for fault schedules. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

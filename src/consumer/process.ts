/**
 * Processing entry by entry: a handler decides for each entry whether it is
 * done (`'commit'`), to be tried again (`'retry'`, or a thrown error), to be
 * passed over (`'skip'`) or whether processing ends (`'stop'`). The
 * {@link EntryProcessor} hands entries out in order, runs the retry policy,
 * sends exhausted entries to a dead-letter queue, and records the position
 * (the first entry not done) through its {@link ProcessHost}, the consumer.
 */
import { sleep, type Clock } from '../clock.ts';
import { asError, InvalidArgumentError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { Producer } from '../producer/producer.ts';
import type { Batch } from '../queue/queue.ts';

/** What a handler decides for one entry. */
export type ProcessOutcome = 'commit' | 'retry' | 'skip' | 'stop';

/** One entry handed to a handler. */
export interface ProcessEntry {
  /** The batch holding the entry. */
  sequence: number;
  /** The entry's place in its batch: `{ sequence, index }` is its position. */
  index: number;
  /** The entry's bytes, as produced. */
  data: Uint8Array;
  /** The metadata of the `produce()` call that wrote the entry (empty when none was given). */
  metadata: Uint8Array;
  /** When that `produce()` call was made, in ms since the Unix epoch (producer's clock). */
  ingestionTimeMs: number;
  /** This attempt's number, from 1. */
  attempt: number;
}

/**
 * Handles one entry; a rejection counts as `'retry'`. (TypeScript widens the
 * literal an `async` arrow returns after an `await` to `string`: annotate it,
 * `async (e): Promise<ProcessOutcome> => …`, or return `'commit' as const`.)
 */
export type ProcessHandler = (entry: ProcessEntry) => ProcessOutcome | Promise<ProcessOutcome>;

/**
 * The delivery promise (see the README, "Processing"):
 * - `'exactly-once'`: the subscription's holder is fenced as with `next()`,
 *   and a commit is durable before the next entry is handed out: an entry
 *   committed is never delivered to the subscription again once a later
 *   entry was handed out. One cursor write per entry finished.
 * - `'global-exactly-once'`: the same on the queue's default subscription,
 *   which the consumer must be reading (on a v1 queue, the manifest's one
 *   consumer).
 * - `'at-least-once'`: the position is recorded every `commitEveryEntries`
 *   entries or `commitIntervalMs`, whichever comes first: after a crash, the
 *   entries finished since the last record come again (at most that many).
 */
export type Delivery = 'exactly-once' | 'global-exactly-once' | 'at-least-once';

/** Options of `Consumer.process()`. */
export interface ProcessOptions {
  /** Entries to finish (commit, skip or dead-letter) before returning. @default no limit */
  limit?: number;
  /** Wait for new entries when caught up (until `signal` aborts) instead of returning. @default false */
  wait?: boolean;
  /** Ends processing: entries in flight finish, then the call returns with reason `'aborted'`. */
  signal?: AbortSignal;
  /** Entries handled at once; positions still advance in order. @default 1 */
  concurrency?: number;
  /** Time between reads when waiting for new entries, in ms. @default 1000 */
  pollIntervalMs?: number;
  /** How failed attempts are tried again (a thrown error or `'retry'`). */
  retry?: {
    /** Wait before the second attempt, in ms. @default 1000 */
    delayMs?: number;
    /**
     * Attempts per entry, the first included (the keyed buffer's `retryMax`
     * counts retries after the first, as DataBuffer does). @default 3
     */
    maxAttempts?: number;
    /** `'exponential'` doubles the wait after each attempt; `'fixed'` keeps it. @default 'exponential' */
    backoff?: 'fixed' | 'exponential';
    /** Longest wait, in ms. @default 60000 */
    maxDelayMs?: number;
  };
  /** What happens to an entry whose attempts ran out. @default 'stop' */
  onExhausted?: 'stop' | 'skip' | 'dead-letter';
  /**
   * The producer of the dead-letter queue (required for `'dead-letter'`; it
   * must write to another queue). Each dead letter keeps the entry's bytes;
   * its metadata is JSON: the queue, subscription, position, original
   * metadata (base64), ingestion time, the last error and the attempt count.
   * It is durable before the position moves past the entry.
   */
  deadLetter?: Producer;
  /** @default 'exactly-once' */
  delivery?: Delivery;
  /** At-least-once: entries finished between position records. @default 100 */
  commitEveryEntries?: number;
  /** At-least-once: longest time between position records, in ms. @default 1000 */
  commitIntervalMs?: number;
}

/** Why `process()` returned. */
export type ProcessEndReason =
  /** `limit` entries were finished. */
  | 'limit'
  /** Caught up with the log (`wait: false`). */
  | 'end'
  /** A handler returned `'stop'`. */
  | 'stopped'
  /** An entry ran out of attempts with `onExhausted: 'stop'`. */
  | 'exhausted'
  /** The signal aborted. */
  | 'aborted';

/** What one `process()` call did. */
export interface ProcessResult {
  committed: number;
  skipped: number;
  /** Attempts that failed and were tried again. */
  retried: number;
  deadLettered: number;
  /**
   * Entries handed out that a reader of the subscription had recorded as
   * finished before this consumer opened (shared readers, at-least-once):
   * known duplicates. Entries finished after the last record of a reader
   * that crashed come again too, and are not counted: at most
   * `commitEveryEntries` (or `commitIntervalMs` worth) per crash.
   */
  redelivered: number;
  reason: ProcessEndReason;
  /** The first entry not finished: where this consumer's next call resumes. */
  position: { sequence: number; index: number };
  /**
   * The position recorded in the store: where the next holder of the
   * subscription would start (behind `position` on a v1 queue inside a
   * batch, since v1 records whole batches).
   */
  recorded: { sequence: number; index: number };
}

/** What the processor needs of its consumer. */
export interface ProcessHost {
  /** The next batch in order (trimmed to the entries not yet committed), or undefined when caught up. */
  next(signal: AbortSignal | undefined): Promise<Batch | undefined>;
  /**
   * Records that every entry before `index` of batch `sequence` (`length`
   * entries in all) is finished, durably when `durable`, and acknowledges
   * every batch wholly finished.
   */
  commit(sequence: number, index: number, length: number, durable: boolean): Promise<void>;
  /** The first entry not finished, and the position recorded in the store. */
  readonly position: { sequence: number; index: number };
  readonly recordedPosition: { sequence: number; index: number };
  readonly clock: Clock;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Names the queue and subscription in dead letters and messages. */
  readonly queueDescription: string;
  readonly subscription: string;
  /** Whether the host is a shared reader (not fenced): at-least-once only. */
  readonly shared: boolean;
  /** Whether the host reads the queue's default subscription (or a v1 queue). */
  readonly onDefaultSubscription: boolean;
  /** Whether `producer` writes to the host's own queue. */
  sameQueue(producer: Producer): Promise<boolean>;
  /** Aborts when the host is destroyed: processing ends at once with its reason. */
  readonly stopped: AbortSignal;
  /** Entries before this position were finished before (by another shared reader): handing them out is a redelivery. */
  readonly doneBefore: { sequence: number; index: number };
}

/** One entry handed out (or to be). */
interface EntryRef {
  batch: Batch;
  /** The entry's index in its batch. */
  index: number;
  /** Entries in the batch in all (`firstIndex` + `entries.length`). */
  length: number;
  /**
   * `waiting`: handed out before and to be handed out again (a call ended
   * before it finished); `running`: its handler runs; `done`: finished, its
   * position not yet recorded.
   */
  state: 'waiting' | 'running' | 'done';
}

const MAX_CONCURRENCY = 1024;

/**
 * The entries of one consumer, handed out across `process()` calls. What a
 * call handed out and did not finish comes first in the next call, and what
 * it finished and could not record is recorded before anything new is
 * handed out.
 */
export class EntryProcessor {
  /** Handed out, in order, whose position is not yet recorded (finished or not). */
  private readonly window: EntryRef[] = [];
  /** Entries of the last batch read, not yet handed out. */
  private backlog: EntryRef[] = [];
  /** The newest finished entry whose position is not recorded durably yet, and entries since the last record. */
  private pending: EntryRef | undefined;
  private sinceRecord = 0;
  private recordedAt: number;
  /** The call running, and how to ask it to stop (close()). */
  private current: { done: Promise<unknown>; stop: AbortController } | undefined;

  constructor(private readonly host: ProcessHost) {
    this.recordedAt = host.clock.now();
  }

  /** Runs `handler` over entries until a reason to return (see {@link ProcessEndReason}). */
  async run(handler: ProcessHandler, options: ProcessOptions = {}): Promise<ProcessResult> {
    const o = settings(options, this.host);
    if (typeof handler !== 'function') {
      throw new InvalidArgumentError(
        `process(handler): expected a function, got ${describe(handler)}`,
      );
    }
    if (this.current) {
      throw new InvalidArgumentError(
        'process(): another process() call of this consumer is running; one at a time',
      );
    }
    const stop = new AbortController();
    const done = (async () => {
      if (o.deadLetter && (await this.host.sameQueue(o.deadLetter))) {
        throw new InvalidArgumentError(
          `process(): the dead-letter producer writes to the queue being processed (${this.host.queueDescription}); dead letters must go to another queue`,
        );
      }
      return this.loop(handler, o, stop.signal);
    })();
    this.current = { done, stop };
    try {
      return await done;
    } finally {
      this.current = undefined;
    }
  }

  /** Asks a running call to stop handing out entries and waits until it has returned (close()). */
  async drain(): Promise<void> {
    const c = this.current;
    if (!c) return;
    c.stop.abort();
    await c.done.catch(() => undefined);
  }

  /**
   * Takes the finished prefix of the window and records its end: durably
   * when `durable`, else only as acknowledged batches (at-least-once between
   * records). A failed write leaves it pending, to be written again.
   */
  private async record(durable: boolean, o: Settings): Promise<void> {
    const h = this.host;
    let last: EntryRef | undefined;
    for (let ref = this.window[0]; ref?.state === 'done'; ref = this.window[0]) {
      this.window.shift();
      last = ref;
      if (ref.length > 0) this.sinceRecord++;
    }
    if (last) this.pending = last;
    const p = this.pending;
    if (!p) return;
    const due =
      durable ||
      this.sinceRecord >= o.commitEveryEntries ||
      h.clock.now() - this.recordedAt >= o.commitIntervalMs;
    if (!due && !last) return;
    await h.commit(p.batch.sequence, p.index + 1, p.length, due);
    if (due && this.pending === p) {
      this.pending = undefined;
      this.sinceRecord = 0;
      this.recordedAt = h.clock.now();
    }
  }

  private async loop(
    handler: ProcessHandler,
    o: Settings,
    stop: AbortSignal,
  ): Promise<ProcessResult> {
    const h = this.host;
    const counts = { committed: 0, skipped: 0, retried: 0, deadLettered: 0, redelivered: 0 };
    const exactlyOnce = o.delivery !== 'at-least-once';
    const window = this.window;
    const inFlight = new Set<Promise<void>>();
    let reason: ProcessEndReason | undefined;
    let failure: unknown;
    let finished = 0;
    // Ends waits and retries: the caller's signal, close(), destroy().
    const ended = AbortSignal.any([...(o.signal ? [o.signal] : []), stop, h.stopped]);
    // A destroyed host ends the call at once, whatever the handlers are doing.
    let onStopped: (() => void) | undefined;
    const halted = new Promise<never>((_, reject) => {
      onStopped = (): void => {
        reject(h.stopped.reason as Error);
        waiting?.reject(h.stopped.reason as Error);
      };
      if (h.stopped.aborted) onStopped();
      else h.stopped.addEventListener('abort', onStopped, { once: true });
    });
    halted.catch(() => undefined);
    // One wait at a time, woken by the next task that ends (or by destroy()): nothing
    // stays attached to a promise that lives as long as the call.
    let waiting: { resolve: () => void; reject: (e: Error) => void } | undefined;
    const settled = (): Promise<void> => {
      if (h.stopped.aborted) return Promise.reject(h.stopped.reason as Error);
      return new Promise<void>((resolve, reject) => (waiting = { resolve, reject })).finally(
        () => (waiting = undefined),
      );
    };

    const launch = (ref: EntryRef): void => {
      ref.state = 'running';
      const task: Promise<void> = (async () => {
        const outcome = await this.attempts(ref, handler, o, counts, ended);
        if (outcome !== 'done') {
          ref.state = 'waiting';
          reason ??= outcome === 'stop' ? 'stopped' : outcome;
          return;
        }
        ref.state = 'done';
        finished++;
        if (o.limit !== undefined && finished >= o.limit) reason ??= 'limit';
      })()
        .catch((e: unknown) => {
          ref.state = 'waiting';
          failure ??= e;
        })
        .finally(() => {
          inFlight.delete(task);
          waiting?.resolve();
        });
      inFlight.add(task);
    };

    try {
      // What an earlier call finished and could not record is recorded first.
      if (this.pending || window[0]?.state === 'done') await this.record(exactlyOnce, o);
      for (;;) {
        if (ended.aborted) reason ??= 'aborted';
        if (reason !== undefined || failure !== undefined) break;
        if (window.some((r) => r.state === 'done')) await this.record(exactlyOnce, o);
        else if (this.pending && h.clock.now() - this.recordedAt >= o.commitIntervalMs) {
          await this.record(false, o);
        }
        const busy = inFlight.size >= o.concurrency;
        const enough = o.limit !== undefined && finished + inFlight.size >= o.limit;
        if (busy || enough) {
          if (inFlight.size > 0) await settled();
          else break;
          continue;
        }
        // Entries handed out before and not finished go first, in their places.
        const again = window.find((r) => r.state === 'waiting');
        if (again) {
          launch(again);
          continue;
        }
        // Something new: in exactly-once, only once every finished entry is recorded
        // (one finished behind another still running waits for it); in at-least-once,
        // only while the unrecorded entries stay within the bound.
        const blocked = exactlyOnce
          ? window.some((r) => r.state === 'done')
          : window.length + this.sinceRecord >= o.concurrency + o.commitEveryEntries;
        if (blocked) {
          if (inFlight.size > 0) await settled();
          continue;
        }
        if (ended.aborted) continue;
        const ref = await this.take(ended);
        if (!ref) {
          if (ended.aborted) continue;
          if (inFlight.size > 0) {
            await settled();
            continue;
          }
          if (this.pending) await this.record(true, o);
          if (!o.wait) {
            reason = 'end';
            break;
          }
          try {
            await sleep(o.pollIntervalMs, { signal: ended, clock: h.clock });
          } catch {
            // ended: the top of the loop says why
          }
          continue;
        }
        // An entry may have finished while the next batch was read: it is recorded
        // before this one is handed out.
        if (exactlyOnce && window.some((r) => r.state === 'done')) {
          this.backlog.unshift(ref);
          continue;
        }
        window.push(ref);
        const d = h.doneBefore;
        if (
          ref.length > 0 &&
          (ref.batch.sequence < d.sequence ||
            (ref.batch.sequence === d.sequence && ref.index < d.index))
        ) {
          counts.redelivered++;
          h.metrics.increment('buffer.process_redelivered', 1, { subscription: h.subscription });
        }
        if (ref.length === 0) {
          // An empty batch: nothing to hand out, finished as it is, in its place.
          ref.state = 'done';
          continue;
        }
        launch(ref);
      }
    } catch (e) {
      failure ??= e;
    }
    try {
      // Entries in flight finish (or give up) before the call returns.
      try {
        await Promise.race([Promise.allSettled([...inFlight]), halted]);
      } catch (e) {
        failure ??= e;
      }
      if (!h.stopped.aborted) {
        try {
          await this.record(true, o);
        } catch (e) {
          failure ??= e;
        }
      }
    } finally {
      if (onStopped) h.stopped.removeEventListener('abort', onStopped);
    }
    if (failure !== undefined) throw asError(failure);
    return {
      ...counts,
      reason: reason ?? 'end',
      position: h.position,
      recorded: h.recordedPosition,
    };
  }

  /** The next entry not yet handed out: the last batch's, then the next batch's. */
  private async take(signal: AbortSignal): Promise<EntryRef | undefined> {
    const ref = this.backlog.shift();
    if (ref) return ref;
    let batch: Batch | undefined;
    try {
      batch = await this.host.next(signal);
    } catch (e) {
      if (signal.aborted) return undefined;
      throw e;
    }
    if (!batch) return undefined;
    const first = batch.firstIndex ?? 0;
    const length = first + batch.entries.length;
    // An empty batch is one reference of length 0 (index -1: its end is index 0).
    if (batch.entries.length === 0) return { batch, index: -1, length: 0, state: 'waiting' };
    const b = batch;
    this.backlog = b.entries.map((_, i) => ({
      batch: b,
      index: first + i,
      length,
      state: 'waiting' as const,
    }));
    return this.backlog.shift();
  }

  /** Runs the attempts of one entry; what it ended with. */
  private async attempts(
    ref: EntryRef,
    handler: ProcessHandler,
    o: Settings,
    counts: { committed: number; skipped: number; retried: number; deadLettered: number },
    ended: AbortSignal,
  ): Promise<'done' | 'stop' | 'exhausted' | 'aborted'> {
    const h = this.host;
    const entry = entryOf(ref);
    for (let attempt = 1; ; attempt++) {
      if (h.stopped.aborted) throw asError(h.stopped.reason);
      let outcome: unknown;
      let error: unknown;
      try {
        outcome = await handler({ ...entry, attempt });
      } catch (e) {
        outcome = 'retry';
        error = e;
      }
      if (outcome === 'commit') {
        counts.committed++;
        h.metrics.increment('buffer.process_committed', 1, { subscription: h.subscription });
        return 'done';
      }
      if (outcome === 'skip') {
        counts.skipped++;
        h.metrics.increment('buffer.process_skipped', 1, { subscription: h.subscription });
        h.logger.warn(
          { queue: h.queueDescription, sequence: ref.batch.sequence, index: ref.index },
          'process: the handler skipped an entry',
        );
        return 'done';
      }
      if (outcome === 'stop') return 'stop';
      if (outcome !== 'retry') {
        throw new InvalidArgumentError(
          `process(): the handler must resolve to 'commit', 'retry', 'skip' or 'stop', got ${describe(outcome)} for entry ${ref.batch.sequence}:${ref.index}`,
        );
      }
      if (attempt >= o.maxAttempts) {
        h.metrics.increment('buffer.process_exhausted', 1, { subscription: h.subscription });
        if (o.onExhausted === 'stop') return 'exhausted';
        if (o.onExhausted === 'skip') {
          counts.skipped++;
          h.logger.warn(
            {
              queue: h.queueDescription,
              sequence: ref.batch.sequence,
              index: ref.index,
              attempts: attempt,
              error: String(error),
            },
            'process: an entry ran out of attempts and was skipped',
          );
          return 'done';
        }
        await this.deadLetter(entry, o.deadLetter as Producer, attempt, error);
        counts.deadLettered++;
        return 'done';
      }
      counts.retried++;
      h.metrics.increment('buffer.process_retried', 1, { subscription: h.subscription });
      const wait = Math.min(
        o.maxDelayMs,
        o.delayMs * (o.backoff === 'exponential' ? 2 ** Math.min(30, attempt - 1) : 1),
      );
      try {
        await sleep(wait, { signal: ended, clock: h.clock });
      } catch {
        if (h.stopped.aborted) throw asError(h.stopped.reason);
        return 'aborted';
      }
    }
  }

  /** Writes an exhausted entry to the dead-letter queue and waits until it is durable. */
  private async deadLetter(
    entry: Omit<ProcessEntry, 'attempt'>,
    producer: Producer,
    attempts: number,
    error: unknown,
  ): Promise<void> {
    const h = this.host;
    const record = {
      queue: h.queueDescription,
      subscription: h.subscription,
      sequence: entry.sequence,
      index: entry.index,
      ingestionTimeMs: entry.ingestionTimeMs,
      metadata: Buffer.from(entry.metadata).toString('base64'),
      attempts,
      error: error === undefined ? "the handler returned 'retry'" : errorText(error),
    };
    const handle = await producer.produce([entry.data], {
      metadata: new TextEncoder().encode(JSON.stringify(record)),
    });
    await handle.durable;
    h.metrics.increment('buffer.process_dead_lettered', 1, { subscription: h.subscription });
  }
}

/** The entry of a reference, without its attempt number. */
function entryOf(ref: EntryRef): Omit<ProcessEntry, 'attempt'> {
  const first = ref.batch.firstIndex ?? 0;
  let item = ref.batch.metadata[0];
  for (const m of ref.batch.metadata) if (m.startIndex <= ref.index) item = m;
  return {
    sequence: ref.batch.sequence,
    index: ref.index,
    data: ref.batch.entries[ref.index - first] as Uint8Array,
    metadata: item?.payload ?? new Uint8Array(),
    ingestionTimeMs: item?.ingestionTimeMs ?? 0,
  };
}

/** Resolved options. */
interface Settings {
  limit: number | undefined;
  wait: boolean;
  signal: AbortSignal | undefined;
  concurrency: number;
  pollIntervalMs: number;
  delayMs: number;
  maxAttempts: number;
  backoff: 'fixed' | 'exponential';
  maxDelayMs: number;
  onExhausted: 'stop' | 'skip' | 'dead-letter';
  deadLetter: Producer | undefined;
  delivery: Delivery;
  commitEveryEntries: number;
  commitIntervalMs: number;
}

const KNOWN = new Set([
  'limit',
  'wait',
  'signal',
  'concurrency',
  'pollIntervalMs',
  'retry',
  'onExhausted',
  'deadLetter',
  'delivery',
  'commitEveryEntries',
  'commitIntervalMs',
]);
const KNOWN_RETRY = new Set(['delayMs', 'maxAttempts', 'backoff', 'maxDelayMs']);

/** Checks and resolves the options of one call. */
function settings(options: ProcessOptions, host: ProcessHost): Settings {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError(`process(handler, options): options must be an object`);
  }
  for (const k of Object.keys(options)) {
    if (!KNOWN.has(k)) {
      throw new InvalidArgumentError(
        `process(): unknown option "${k}"; expected one of ${[...KNOWN].join(', ')}`,
      );
    }
  }
  const retry = options.retry ?? {};
  if (typeof retry !== 'object' || retry === null || Array.isArray(retry)) {
    throw new InvalidArgumentError(
      `process(): retry must be an object { delayMs, maxAttempts, backoff, maxDelayMs }, got ${describe(retry)}`,
    );
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new InvalidArgumentError(
      `process(): signal must be an AbortSignal, got ${describe(options.signal)}`,
    );
  }
  for (const k of Object.keys(retry)) {
    if (!KNOWN_RETRY.has(k)) {
      throw new InvalidArgumentError(
        `process(): unknown retry option "${k}"; expected one of ${[...KNOWN_RETRY].join(', ')}`,
      );
    }
  }
  const int = (name: string, v: unknown, min: number, fallback: number, max = 2_147_483_647) => {
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
      throw new InvalidArgumentError(
        `process(): ${name} must be an integer from ${min} to ${max}, got ${describe(v)}`,
      );
    }
    return v;
  };
  const oneOf = <T extends string>(name: string, v: unknown, allowed: readonly T[], d: T): T => {
    if (v === undefined) return d;
    if (!allowed.includes(v as T)) {
      throw new InvalidArgumentError(
        `process(): ${name} must be ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describe(v)}`,
      );
    }
    return v as T;
  };
  if (options.wait !== undefined && typeof options.wait !== 'boolean') {
    throw new InvalidArgumentError(
      `process(): wait must be true or false, got ${describe(options.wait)}`,
    );
  }
  const s: Settings = {
    limit:
      options.limit === undefined
        ? undefined
        : int('limit', options.limit, 1, 0, Number.MAX_SAFE_INTEGER),
    wait: options.wait ?? false,
    signal: options.signal,
    concurrency: int('concurrency', options.concurrency, 1, 1, MAX_CONCURRENCY),
    pollIntervalMs: int('pollIntervalMs', options.pollIntervalMs, 1, 1000),
    delayMs: int('retry.delayMs', retry.delayMs, 0, 1000),
    maxAttempts: int('retry.maxAttempts', retry.maxAttempts, 1, 3),
    backoff: oneOf('retry.backoff', retry.backoff, ['fixed', 'exponential'], 'exponential'),
    maxDelayMs: int('retry.maxDelayMs', retry.maxDelayMs, 0, 60_000),
    onExhausted: oneOf('onExhausted', options.onExhausted, ['stop', 'skip', 'dead-letter'], 'stop'),
    deadLetter: options.deadLetter,
    delivery: oneOf(
      'delivery',
      options.delivery,
      ['exactly-once', 'global-exactly-once', 'at-least-once'],
      'exactly-once',
    ),
    commitEveryEntries: int('commitEveryEntries', options.commitEveryEntries, 1, 100),
    commitIntervalMs: int('commitIntervalMs', options.commitIntervalMs, 0, 1000),
  };
  if (s.onExhausted === 'dead-letter') {
    const p = s.deadLetter;
    if (p === undefined || typeof (p as Partial<Producer>).produce !== 'function') {
      throw new InvalidArgumentError(
        `process(): onExhausted 'dead-letter' needs deadLetter, the Producer of another queue; got ${describe(p)}`,
      );
    }
  } else if (s.deadLetter !== undefined) {
    throw new InvalidArgumentError(
      `process(): deadLetter is given but onExhausted is '${s.onExhausted}'; set onExhausted: 'dead-letter'`,
    );
  }
  if (host.shared && s.delivery !== 'at-least-once') {
    throw new InvalidArgumentError(
      `process(): delivery '${s.delivery}' needs a consumer that holds its subscription, but this one was opened with shared: true (nobody is fenced); use delivery 'at-least-once', or open without shared`,
    );
  }
  if (s.delivery === 'global-exactly-once' && !host.onDefaultSubscription) {
    throw new InvalidArgumentError(
      `process(): delivery 'global-exactly-once' reads the queue's default subscription, but this consumer reads subscription "${host.subscription}"; open the consumer without a subscription, or use 'exactly-once'`,
    );
  }
  return s;
}

function describe(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'object':
      return v === null ? 'null' : Array.isArray(v) ? 'an array' : 'an object';
    case 'function':
      return 'a function';
    case 'symbol':
      return 'a symbol';
    case 'undefined':
      return 'undefined';
    default:
      return `${typeof v} ${String(v)}`;
  }
}

function errorText(e: unknown): string {
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return text.length > 4096 ? `${text.slice(0, 4096)}…` : text;
}

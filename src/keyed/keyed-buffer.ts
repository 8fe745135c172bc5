/**
 * The keyed buffer: values grouped by key in memory, each key flushed to a
 * handler on its own schedule, as its own task. In durable mode every insert
 * is first stored in a Spillway queue (see `journal.ts`).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import { monotonicNow, sleep, systemClock, type Clock, type ClockTimer } from '../clock.ts';
import {
  asError,
  ClosedError,
  CorruptDataError,
  InvalidArgumentError,
  TimeoutError,
} from '../errors.ts';
import { abortable, closeWithin } from '../lifecycle.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { noopMetrics, type Metrics } from '../metrics.ts';
import {
  checkCallOptions,
  checkOption,
  resolveOptions,
  type OptionSpec,
  type OptionSpecs,
} from '../options.ts';
import { describeValue } from '../store/keys.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { bytesCodec, type Codec } from './codec.ts';
import { KeyedJournal, type JournalValue, type KeyedQueueOptions } from './journal.ts';
import { encodeEntry, keyId, partitionOf, type Key } from './key.ts';

/** Why a flush started. */
export type FlushReason =
  /** `flushIntervalMs` (plus jitter) passed since the oldest value's insert. */
  | 'interval'
  /** The key reached `maxValuesPerKey`. */
  | 'size'
  /** `flush(key)`, `flushAll()`. */
  | 'explicit'
  /** `idleTimeoutMs` passed without an insert. */
  | 'idle'
  /** An `insert()` waits for room and no flush was running to make some. */
  | 'pressure'
  /** `close()`. */
  | 'close';

/** What a handler learns about the flush besides the key and the values. */
export interface FlushInfo {
  /** The key's partition, 0 to `partitions - 1`. */
  partition: number;
  /** Attempt of this flush, from 1; `onError` gets the last one's number. */
  attempt: number;
  /** Why the flush started. */
  reason: FlushReason;
  /** Clock milliseconds (`clock.now()`) of the insert of the oldest value in the flush. */
  firstInsertMs: number;
}

/** The handler of a flush: may return a promise; a throw or rejection fails the attempt. */
export type FlushHandler<V> = (key: Key, values: V[], info: FlushInfo) => unknown;

/** The handler of a flush that failed every attempt: may return a promise. */
export type FlushErrorHandler<V> = (
  key: Key,
  values: V[],
  error: unknown,
  info: FlushInfo,
) => unknown;

/** Options of {@link KeyedBuffer}. */
export interface KeyedBufferOptions<V = Uint8Array> {
  /**
   * Receives a key's values, in insert order, one call per flush. At most
   * one call per key runs at a time. Resolving counts the values as flushed;
   * throwing or rejecting fails the attempt (see `retryMax`).
   */
  onFlush: FlushHandler<V>;
  /**
   * Receives a flush's values once every attempt failed, with the last
   * error. Resolving counts the values as flushed (handled). Without it, or
   * when it throws, the values are kept: see {@link KeyedBuffer}.
   */
  onError?: FlushErrorHandler<V>;
  /** Turns values into bytes (to count them; durable mode stores them). @default bytes as they are ({@link bytesCodec}) */
  codec?: Codec<V>;
  /** Milliseconds from the insert of a key's oldest buffered value to its flush. @default 5000 */
  flushIntervalMs?: number;
  /** Most milliseconds added to each interval and retry delay, drawn uniformly from [0, jitterMs]. @default 0 */
  jitterMs?: number;
  /** Shards of the key table, by a hash of the key; handlers learn a key's partition. @default 1 */
  partitions?: number;
  /** Flushes (handler calls, with their retries) running at once, over all keys. @default 16 */
  maxConcurrentFlushes?: number;
  /** Milliseconds before a failed attempt is retried (plus jitter, see `jitterMs`). @default 1000 */
  retryDelayMs?: number;
  /**
   * Retries after the first attempt: a flush makes at most `retryMax + 1`
   * attempts. (Unlike `Consumer.process()`'s `retry.maxAttempts`, which
   * counts the first attempt.) @default 3
   */
  retryMax?: number;
  /** A key holding this many values is flushed at once; a flush takes at most this many. @default no limit */
  maxValuesPerKey?: number;
  /**
   * Bytes (of values as the codec encodes them plus their keys' bytes, once
   * per value; durable mode: of their queue entries, which hold both) held
   * until flushed, over all keys, before `insert()` waits for room. @default 67108864 (64 MiB)
   */
  maxBufferedBytes?: number;
  /** Values held until flushed, over all keys, before `insert()` waits for room. @default 100000 */
  maxBufferedValues?: number;
  /**
   * A key with no insert for this many milliseconds is forgotten: what it
   * still holds is flushed at once (reason `idle`), and then its entry in
   * the key table is removed, so `count(key)` returns `undefined`. Until
   * then a key that holds nothing counts 0, and its entry costs memory that
   * no limit counts: about 0.6 KiB plus twice the key's length, per key seen
   * in the last `idleTimeoutMs`. Lower it for many short-lived keys. @default 60000
   */
  idleTimeoutMs?: number;
  /** Where metrics go (`keyed.*`, see {@link KeyedBuffer}). @default no metrics */
  metrics?: Metrics;
  /** Where failures are logged. @default silent */
  logger?: Logger;
  /** Time source and timers. @default the system clock */
  clock?: Clock;
  /** Source of jitter, uniform in [0, 1). @default Math.random */
  random?: () => number;
}

/** Options of {@link KeyedBuffer.open}. */
export interface DurableKeyedBufferOptions<V = Uint8Array> extends KeyedBufferOptions<V> {
  /** Keep every insert in a Spillway queue before `insert()` resolves. */
  durable: true;
  /** The store of the queue: a URL or an `ObjectStore`. */
  store: string | ObjectStore;
  /** Options of the queue, its producer and its consumer (they keep their meaning there). */
  queue?: KeyedQueueOptions;
}

/** Defaults of {@link KeyedBufferOptions}. */
export const KEYED_BUFFER_DEFAULTS = Object.freeze({
  flushIntervalMs: 5000,
  jitterMs: 0,
  partitions: 1,
  maxConcurrentFlushes: 16,
  retryDelayMs: 1000,
  retryMax: 3,
  maxBufferedBytes: 64 * 1024 * 1024,
  maxBufferedValues: 100_000,
  idleTimeoutMs: 60_000,
});

type Settings = typeof KEYED_BUFFER_DEFAULTS & { maxValuesPerKey?: number };

const MAX_MS = 2_147_483_647;
const SPECS: OptionSpecs<DurableKeyedBufferOptions<unknown>> = {
  onFlush: { kind: 'any' },
  onError: { kind: 'any' },
  codec: { kind: 'any' },
  flushIntervalMs: { kind: 'int', min: 0, max: MAX_MS },
  jitterMs: { kind: 'int', min: 0, max: MAX_MS },
  partitions: { kind: 'int', min: 1, max: 65_536 },
  maxConcurrentFlushes: { kind: 'int', min: 1 },
  retryDelayMs: { kind: 'int', min: 0, max: MAX_MS },
  retryMax: { kind: 'int', min: 0, max: 1000 },
  maxValuesPerKey: { kind: 'int', min: 1 },
  maxBufferedBytes: { kind: 'int', min: 1 },
  maxBufferedValues: { kind: 'int', min: 1 },
  idleTimeoutMs: { kind: 'int', min: 1, max: MAX_MS },
  metrics: { kind: 'any' },
  logger: { kind: 'any' },
  clock: { kind: 'any' },
  random: { kind: 'any' },
  durable: { kind: 'boolean' },
  store: { kind: 'any' },
  queue: { kind: 'any' },
};

const POLL_SPEC: OptionSpec = { kind: 'int', min: 0, max: MAX_MS };
const TIMEOUT_SPEC: OptionSpec = { kind: 'int', min: 0, max: MAX_MS };
const BOOLEAN_SPEC: OptionSpec = { kind: 'boolean' };
const SUBSCRIPTION_SPEC: OptionSpec = {
  kind: 'string',
  pattern: /^.{1,200}$/u,
  expected: '1-200 characters',
};

const QUEUE_FIELDS = [
  'manifestPath',
  'dataPathPrefix',
  'layout',
  'subscription',
  'instanceId',
  'flushIntervalMs',
  'maxBufferedBytes',
  'ackIntervalMs',
  'ackBatchSize',
  'gcIntervalMs',
  'pollIntervalMs',
];

/** What {@link KeyedBuffer.stats} reports. */
export interface KeyedBufferStats {
  /** Keys in the key table. */
  keys: number;
  /** Keys holding values not yet flushed. */
  keysBuffered: number;
  /** Values held until flushed (waiting or in a flush). */
  values: number;
  /** Bytes held, as counted against `maxBufferedBytes`. */
  bytes: number;
  /** Flushes running now. */
  flushesRunning: number;
  /** Age of the oldest value held, in ms (0 when none). */
  oldestValueAgeMs: number;
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface Item<V> {
  value: V;
  bytes: number;
  atMs: number;
  /** Batch sequence in the queue (durable mode), else -1. */
  sequence: number;
  /** `flush(key)` calls waiting for this value's flush. */
  waiters?: Waiter[];
}

interface KeyState<V> {
  id: string;
  key: Key;
  partition: number;
  pending: Item<V>[];
  /** Values of the flush running now. */
  running: Item<V>[] | undefined;
  /** When the current interval started (the oldest pending insert, or a failure), if any. */
  intervalStartMs: number | undefined;
  dueTimer: ClockTimer | undefined;
  /** A flush was asked for while one ran (or while waiting for a slot): why. */
  wanted: FlushReason | undefined;
  queued: boolean;
  /** The last flush failed and kept its values: pressure does not retry it before its interval. */
  failed: boolean;
  lastInsertMs: number;
  idleTimer: ClockTimer | undefined;
  forget: boolean;
}

/**
 * Values grouped by key, each key flushed on its own schedule to a handler
 * (for example to write one row or file per key).
 *
 * **Schedule.** A key's flush is due `flushIntervalMs` plus a jitter drawn
 * from [0, `jitterMs`] after the insert of the oldest value it holds (so
 * after a flush the next insert starts a new interval); at once when it
 * holds `maxValuesPerKey` (unless its last flush failed: see Failures); at
 * `flush(key)`, `flushAll()`, `close()`; and when an `insert()` waits for
 * room while no flush runs (every key holding values whose last flush did
 * not fail is flushed, reason `pressure`). A due flush also
 * waits for the key's previous flush and for one of `maxConcurrentFlushes`
 * slots. Each flush is a task of its own, so a slow key holds one slot and
 * nothing else.
 *
 * **Order.** A key's values reach `onFlush` in insert order, one call per
 * flush; values inserted during a flush go to the next one.
 *
 * **Failures.** A failed attempt is retried after `retryDelayMs` (plus
 * jitter) up to `retryMax` times; then `onError` gets the values. Without
 * `onError`, or when it throws, the values are **kept**: they go back in
 * front of the key's buffer (before values inserted meanwhile, so order
 * holds), a new interval starts, and they are flushed again when it ends
 * (not sooner for `maxValuesPerKey` or pressure; sooner only for `flush(key)`,
 * `flushAll()` or `close()`); the
 * failure is counted in `keyed.errors`, logged, emitted as an `'error'` event
 * when there is a listener, and rejects the `flush(key)` / `flushAll()` /
 * `close()` calls waiting for those values. Nothing is dropped silently.
 *
 * **Backpressure.** `insert()` waits for room (`maxBufferedBytes`,
 * `maxBufferedValues`, counted until a value is flushed) in arrival order;
 * it never drops. An insert made from inside this buffer's `onFlush` or
 * `onError` (while the call runs) that would have to wait rejects with
 * {@link InvalidArgumentError} instead: only finished flushes make room, so
 * it could wait forever. A failed `close()` rejects the inserts still
 * waiting, with its error.
 *
 * **Durable mode** ({@link KeyedBuffer.open} with `durable: true`): every
 * insert is stored in a Spillway queue and read back before `insert()`
 * resolves; the queue is acknowledged only up to the oldest value not yet
 * flushed, so after a crash every value whose insert resolved and whose
 * flush had not completed is flushed again (at-least-once per value). One
 * holder at a time: opening the buffer elsewhere fences this one. A value
 * read back that the codec cannot decode (a codec changed between runs) is
 * not flushed and not acknowledged: it stays in the queue for a fixed codec
 * after the next open, is counted in `keyed.undecodable_values`, logged,
 * emitted as an `'error'` event ({@link CorruptDataError}), and makes
 * `close()` reject.
 *
 * **Metrics.** Counters `keyed.flushes`, `keyed.values_flushed`,
 * `keyed.retries`, `keyed.errors`, `keyed.undecodable_values`; histogram `keyed.flush_duration_seconds`;
 * gauges `keyed.keys_buffered` and `keyed.oldest_value_age_seconds`
 * (updated at most once a second, at the end of a flush).
 *
 * @example
 * const buffer = new KeyedBuffer({
 *   flushIntervalMs: 5000,
 *   async onFlush(key, values) { await db.append(key, values); },
 * });
 * await buffer.insert('user-1', bytes); // waits only for room
 * await buffer.close(); // flushes everything
 */
export class KeyedBuffer<V = Uint8Array> extends EventEmitter {
  private readonly o: Settings;
  private readonly onFlush: FlushHandler<V>;
  private readonly onError: FlushErrorHandler<V> | undefined;
  private readonly codec: Codec<V>;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly tables: Map<string, KeyState<V>>[];
  private readonly ready: KeyState<V>[] = [];
  private readonly roomWaiters: (Waiter & { bytes: number })[] = [];
  private running = 0;
  private bufferedBytes = 0;
  private bufferedValues = 0;
  private gaugedAt = -Infinity;
  private journal: KeyedJournal | undefined;
  private closing: Promise<void> | undefined;
  private destroyed: Error | undefined;
  private readonly stopSleeps = new AbortController();
  /** Durable inserts between admission and read-back. */
  private readonly appending = new Set<Promise<number>>();
  /** Marks the async context of a handler call while it runs (see `admit`). */
  private readonly handlerFrames = new AsyncLocalStorage<{ active: boolean }>();
  /** Durable: values read back that did not decode (never acknowledged), and the error close() rejects with. */
  private undecodableValues = 0;
  private undecodable: CorruptDataError | undefined;
  private badRandomReported = false;
  /** Durable, during `open()`: 'error' events held until it returns. */
  private openReports: (() => void)[] | undefined;

  /**
   * An in-memory keyed buffer (see {@link KeyedBuffer.open} for durable mode).
   *
   * @throws {InvalidArgumentError} for a bad or unknown option, or no `onFlush`.
   */
  constructor(options: KeyedBufferOptions<V>) {
    super();
    const o = resolveOptions(
      'KeyedBuffer',
      SPECS as OptionSpecs<KeyedBufferOptions<V>>,
      KEYED_BUFFER_DEFAULTS as Partial<KeyedBufferOptions<V>>,
      options,
    ) as KeyedBufferOptions<V> & Settings;
    if (typeof o.onFlush !== 'function') {
      throw new InvalidArgumentError('KeyedBuffer: onFlush must be a function');
    }
    if (o.onError !== undefined && typeof o.onError !== 'function') {
      throw new InvalidArgumentError('KeyedBuffer: onError must be a function when given');
    }
    const durableOnly = o as { durable?: boolean; store?: unknown; queue?: unknown };
    if (durableOnly.durable || durableOnly.store !== undefined || durableOnly.queue !== undefined) {
      throw new InvalidArgumentError(
        'KeyedBuffer: durable, store and queue are for durable mode: use `await KeyedBuffer.open({ store, durable: true, ... })`',
      );
    }
    const codec = o.codec ?? (bytesCodec as unknown as Codec<V>);
    if (!hasMethods(codec, ['encode', 'decode'])) {
      throw new InvalidArgumentError('KeyedBuffer: codec must have encode() and decode()');
    }
    if (o.random !== undefined && typeof o.random !== 'function') {
      throw new InvalidArgumentError(
        `KeyedBuffer: random must be a function returning a number in [0, 1), got ${describeValue(o.random)}`,
      );
    }
    const objects: [string, unknown, string[]][] = [
      ['clock', o.clock, ['now', 'setTimeout', 'clearTimeout']],
      ['metrics', o.metrics, ['increment', 'observe', 'gauge']],
      ['logger', o.logger, ['debug', 'warn', 'error']],
    ];
    for (const [name, value, methods] of objects) {
      if (value !== undefined && !hasMethods(value, methods)) {
        throw new InvalidArgumentError(
          `KeyedBuffer: ${name} must be an object with ${methods.map((m) => `${m}()`).join(', ')}, got ${describeValue(value)}`,
        );
      }
    }
    this.o = o;
    this.onFlush = o.onFlush;
    this.onError = o.onError;
    this.codec = codec;
    this.metrics = o.metrics ?? noopMetrics;
    this.logger = o.logger ?? silentLogger;
    this.clock = o.clock ?? systemClock;
    this.random = o.random ?? Math.random;
    this.tables = Array.from({ length: o.partitions }, () => new Map<string, KeyState<V>>());
  }

  /**
   * A keyed buffer; with `durable: true`, crash-safe: every insert is
   * stored in a Spillway queue at `store` before `insert()` resolves, and
   * the queue is acknowledged only up to the oldest value not yet flushed.
   * Opening takes the queue's subscription over, which fences a buffer that
   * another process opened on it before (its calls then fail with
   * `FencedError`), and reads back every value a previous run inserted and
   * did not flush; they are flushed again (at-least-once: values flushed
   * after the last acknowledgement written are flushed twice).
   *
   * @throws {InvalidArgumentError} for bad options.
   * @throws {StorageError} when the queue cannot be opened.
   */
  static async open<V = Uint8Array>(
    options: DurableKeyedBufferOptions<V> | KeyedBufferOptions<V>,
  ): Promise<KeyedBuffer<V>> {
    if (options === null || typeof options !== 'object' || !('durable' in options)) {
      return new KeyedBuffer<V>(options);
    }
    const { durable, store, queue, ...rest } = options;
    if (durable !== undefined) checkOption('KeyedBuffer.open()', 'durable', BOOLEAN_SPEC, durable);
    if (durable !== true) {
      if (store !== undefined || queue !== undefined) {
        throw new InvalidArgumentError(
          'KeyedBuffer.open(): store and queue are for durable mode; pass `durable: true` with them, or leave them out for an in-memory buffer',
        );
      }
      return new KeyedBuffer<V>(rest);
    }
    if (store === undefined) {
      throw new InvalidArgumentError('KeyedBuffer.open(): durable mode needs a `store`');
    }
    checkCallOptions('KeyedBuffer.open({ queue })', queue, QUEUE_FIELDS);
    if (queue?.pollIntervalMs !== undefined) {
      checkOption('KeyedBuffer', 'queue.pollIntervalMs', POLL_SPEC, queue.pollIntervalMs);
    }
    if (queue?.subscription !== undefined) {
      checkOption('KeyedBuffer', 'queue.subscription', SUBSCRIPTION_SPEC, queue.subscription);
    }
    const buffer = new KeyedBuffer<V>(rest);
    const reports: (() => void)[] = [];
    buffer.openReports = reports;
    buffer.journal = await KeyedJournal.open({
      ...queue,
      store,
      ...(rest.clock ? { clock: rest.clock } : {}),
      metrics: buffer.metrics,
      logger: buffer.logger,
      sink: {
        values: (values) => buffer.fromJournal(values),
        failed: (error) => buffer.journalFailed(error),
      },
    }).finally(() => (buffer.openReports = undefined));
    // After the caller's continuation has attached its listeners.
    if (reports.length > 0) setImmediate(() => reports.forEach((emit) => emit()));
    return buffer;
  }

  /**
   * Buffers one value under `key`. Resolves once it is buffered (durable
   * mode: stored in the queue and buffered), waiting for room first. Do not
   * modify a byte value until it was flushed.
   *
   * @throws {InvalidArgumentError} for a bad key (a string key must be
   * well-formed UTF-16), a value the codec refuses (its throw is the
   * `cause`; durable mode: also a value whose encoded bytes the codec cannot
   * decode), a value (with its key) larger than `maxBufferedBytes`, or an
   * insert made from inside this buffer's `onFlush` / `onError` that would
   * have to wait for room (only flushes make room: it could wait forever).
   * @throws {ClosedError} after `close()` or `destroy()`.
   * @throws {FencedError} (durable) once another process opened the buffer;
   * the value may be in the queue then, and that process flushes it.
   */
  async insert(key: Key, value: V, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkCallOptions('insert', options, ['signal']);
    this.checkOpen();
    options.signal?.throwIfAborted();
    const id = keyId(key);
    const encoded = this.encode(value);
    // Durable: a value stored that does not decode could never be flushed.
    if (this.journal) this.checkDecodes(encoded);
    const entry = this.journal ? encodeEntry(key, encoded) : undefined;
    // Memory mode counts the key's bytes with each value too (as a durable entry holds them).
    const bytes = entry ? entry.byteLength : encoded.byteLength + keyBytes(key);
    if (bytes > this.o.maxBufferedBytes) {
      throw new InvalidArgumentError(
        `insert(): the value and its key need ${bytes} bytes but maxBufferedBytes is ${this.o.maxBufferedBytes}; it can never fit`,
      );
    }
    await this.admit(bytes, options.signal);
    if (!this.journal || !entry) {
      this.add(id, key, value, bytes, -1);
      return;
    }
    // Durable: the room taken above is held until the value, read back from the
    // queue, holds room of its own (counted twice meanwhile, never less).
    const append = this.journal.append(entry, options.signal);
    this.appending.add(append);
    try {
      await append;
    } finally {
      this.appending.delete(append);
      this.release(bytes, 1);
    }
    if (this.destroyed) throw this.destroyed;
  }

  /** The codec's bytes for `value`; any throw becomes an {@link InvalidArgumentError}. */
  private encode(value: V): Uint8Array {
    let encoded: unknown;
    try {
      encoded = this.codec.encode(value);
    } catch (e) {
      if (e instanceof InvalidArgumentError) throw e;
      throw new InvalidArgumentError(
        `insert(): the codec's encode() refused the value: ${asError(e).message}`,
        e,
      );
    }
    if (!(encoded instanceof Uint8Array)) {
      throw new InvalidArgumentError(
        `insert(): the codec must encode values to a Uint8Array, got ${describeValue(encoded)}`,
      );
    }
    return encoded;
  }

  private checkDecodes(encoded: Uint8Array): void {
    try {
      this.codec.decode(encoded);
    } catch (e) {
      throw new InvalidArgumentError(
        `insert(): the codec's decode() cannot read back what its encode() wrote for this value (${asError(e).message}); a durable buffer would store it and never flush it: fix the codec`,
        e,
      );
    }
  }

  /** Values of `key` not yet flushed (waiting or in a flush); `undefined` for a key not in the table. */
  count(key: Key): number | undefined {
    const id = keyId(key);
    const state = this.tables[partitionOf(id, this.o.partitions)]?.get(id);
    if (!state) return undefined;
    return state.pending.length + (state.running?.length ?? 0);
  }

  /**
   * Flushes `key` now and resolves once every value it held at the call was
   * flushed (by `onFlush`, or handled by `onError`); at once for a key with
   * nothing buffered.
   *
   * @throws the handler's last error when the values were kept (see {@link KeyedBuffer}).
   * @throws {ClosedError} after `destroy()`; {@link FencedError} (durable) once fenced.
   */
  async flush(key: Key, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkCallOptions('flush', options, ['signal']);
    if (this.destroyed) throw this.destroyed;
    const id = keyId(key);
    const state = this.tables[partitionOf(id, this.o.partitions)]?.get(id);
    if (!state) return;
    await abortable(this.flushState(state, 'explicit'), options.signal);
  }

  /**
   * Flushes every key now; resolves once everything buffered at the call
   * was flushed. Rejects with the first failure, after all settled.
   */
  async flushAll(options: { signal?: AbortSignal } = {}): Promise<void> {
    checkCallOptions('flushAll', options, ['signal']);
    if (this.destroyed) throw this.destroyed;
    await abortable(this.flushEverything('explicit'), options.signal);
  }

  /** What the buffer holds now (walks the key table). */
  stats(): KeyedBufferStats {
    let keys = 0;
    let keysBuffered = 0;
    let oldest = Infinity;
    for (const table of this.tables) {
      keys += table.size;
      for (const s of table.values()) {
        const first = s.running?.[0] ?? s.pending[0];
        if (!first) continue;
        keysBuffered++;
        if (first.atMs < oldest) oldest = first.atMs;
      }
    }
    return {
      keys,
      keysBuffered,
      values: this.bufferedValues,
      bytes: this.bufferedBytes,
      flushesRunning: this.running,
      oldestValueAgeMs: oldest === Infinity ? 0 : Math.max(0, this.clock.now() - oldest),
    };
  }

  /**
   * Stops taking inserts, flushes everything (inserts already waiting for
   * room are admitted and flushed too; durable: the queue is first read to
   * its end, so values appended by a fenced holder are flushed too), then
   * closes the queue (durable), applying its acknowledgements. Idempotent. Rejects with the first failure: values kept after a failed
   * flush are then not flushed (durable: they stay in the queue and are
   * flushed after the next open). With `timeoutMs`, a close not finished by
   * then destroys the buffer with a {@link TimeoutError} and rejects with it.
   * Inserts still waiting for room when the close fails reject with its error.
   *
   * @throws {InvalidArgumentError} (as a rejection, nothing closed) for a
   * `timeoutMs` that is not an integer from 0 to 2147483647.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    try {
      checkCallOptions('close', options, ['timeoutMs']);
      if (options.timeoutMs !== undefined) {
        checkOption('close()', 'timeoutMs', TIMEOUT_SPEC, options.timeoutMs);
      }
    } catch (e) {
      return Promise.reject(asError(e));
    }
    this.closing ??= (async () => {
      const errors: unknown[] = [];
      for (;;) {
        if (this.destroyed) break;
        try {
          // Durable: values others appended (a fenced holder's late appends) are flushed too.
          await Promise.allSettled([...this.appending]);
          await this.journal?.catchUp();
          await this.flushEverything('close');
        } catch (e) {
          errors.push(e);
          break;
        }
        if (this.roomWaiters.length === 0 && this.bufferedValues === 0) break;
        // Admitted waiters (or durable reads) added values meanwhile: another round.
        await new Promise<void>((r) => setImmediate(r));
      }
      if (this.destroyed) throw this.destroyed;
      this.stopTimers();
      if (this.undecodable) errors.push(this.undecodable);
      if (this.journal) await this.journal.close().catch((e: unknown) => errors.push(e));
      if (errors.length > 0) {
        const error = asError(errors[0]);
        // Inserts still waiting for room will never get it now: they fail with the close.
        for (const w of this.roomWaiters.splice(0)) w.reject(error);
        throw error;
      }
    })();
    this.closing.catch(() => undefined);
    const { timeoutMs } = options;
    return closeWithin(
      this.closing,
      timeoutMs,
      this.clock,
      () =>
        new TimeoutError(
          `keyed buffer: close() did not finish in ${timeoutMs} ms; ${this.bufferedValues} values were not flushed`,
        ),
      (e) => this.destroy(e),
    );
  }

  /**
   * Stops at once: waiting inserts and flush calls reject with `error` (a
   * {@link ClosedError} by default), timers are cleared, handlers still
   * running are left to finish and their outcome ignored. Values not yet
   * flushed are dropped from memory (durable: they stay in the queue and
   * are flushed after the next open). Idempotent.
   */
  async destroy(error?: Error): Promise<void> {
    if (this.destroyed) return;
    const reason = error ?? new ClosedError('keyed buffer (destroyed)');
    this.destroyed = reason;
    this.stopTimers();
    this.stopSleeps.abort(reason);
    for (const w of this.roomWaiters.splice(0)) w.reject(reason);
    this.ready.length = 0;
    for (const table of this.tables) {
      for (const s of table.values()) {
        for (const item of [...(s.running ?? []), ...s.pending]) {
          for (const w of item.waiters ?? []) w.reject(reason);
          item.waiters = undefined;
        }
      }
    }
    this.closing ??= Promise.reject(reason);
    this.closing.catch(() => undefined);
    await this.journal?.destroy(reason);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private checkOpen(): void {
    if (this.destroyed) throw this.destroyed;
    if (this.closing) throw new ClosedError('keyed buffer');
  }

  private stopTimers(): void {
    for (const table of this.tables) {
      for (const s of table.values()) {
        this.clock.clearTimeout(s.dueTimer);
        this.clock.clearTimeout(s.idleTimer);
        s.dueTimer = undefined;
        s.idleTimer = undefined;
      }
    }
  }

  // ---- room ----

  private hasRoom(bytes: number): boolean {
    return (
      this.bufferedBytes + bytes <= this.o.maxBufferedBytes &&
      this.bufferedValues + 1 <= this.o.maxBufferedValues
    );
  }

  private async admit(bytes: number, signal: AbortSignal | undefined): Promise<void> {
    if (this.roomWaiters.length === 0 && this.hasRoom(bytes)) {
      this.bufferedBytes += bytes;
      this.bufferedValues += 1;
      return;
    }
    if (this.handlerFrames.getStore()?.active) {
      throw new InvalidArgumentError(
        `insert(): called from inside this buffer's onFlush or onError, and the buffer is full (maxBufferedBytes ${this.o.maxBufferedBytes}, maxBufferedValues ${this.o.maxBufferedValues}): only finished flushes make room, so it could wait forever. Insert after the handler returned, into another buffer, or raise the limits`,
      );
    }
    const wait = new Promise<void>((resolve, reject) => {
      const waiter = { bytes, resolve, reject };
      this.roomWaiters.push(waiter);
      signal?.addEventListener(
        'abort',
        () => {
          const i = this.roomWaiters.indexOf(waiter);
          if (i < 0) return;
          this.roomWaiters.splice(i, 1);
          reject(signal.reason as Error);
          this.wake();
        },
        { once: true },
      );
    });
    this.relievePressure();
    await wait;
  }

  private release(bytes: number, values: number): void {
    this.bufferedBytes -= bytes;
    this.bufferedValues -= values;
    this.wake();
  }

  /** Admits waiting inserts, in order, while they fit. */
  private wake(): void {
    for (;;) {
      const w = this.roomWaiters[0];
      if (!w || !this.hasRoom(w.bytes)) break;
      this.roomWaiters.shift();
      this.bufferedBytes += w.bytes;
      this.bufferedValues += 1;
      w.resolve();
    }
  }

  /** An insert waits: when no flush is running (none will make room), flush every key holding values. */
  private relievePressure(): void {
    if (this.running > 0 || this.ready.length > 0 || this.roomWaiters.length === 0) return;
    for (const table of this.tables) {
      for (const s of table.values()) {
        if (s.pending.length > 0 && !s.failed) this.request(s, 'pressure');
      }
    }
  }

  // ---- the key table ----

  private stateOf(id: string, key: Key): KeyState<V> {
    const partition = partitionOf(id, this.o.partitions);
    const table = this.tables[partition] as Map<string, KeyState<V>>;
    let s = table.get(id);
    if (!s) {
      s = {
        id,
        key: typeof key === 'string' ? key : Uint8Array.from(key),
        partition,
        pending: [],
        running: undefined,
        intervalStartMs: undefined,
        dueTimer: undefined,
        wanted: undefined,
        queued: false,
        failed: false,
        lastInsertMs: this.clock.now(),
        idleTimer: undefined,
        forget: false,
      };
      table.set(id, s);
    }
    return s;
  }

  /** Adds an admitted value to its key. */
  private add(id: string, key: Key, value: V, bytes: number, sequence: number): void {
    const s = this.stateOf(id, key);
    const now = this.clock.now();
    s.pending.push({ value, bytes, atMs: now, sequence });
    s.lastInsertMs = now;
    s.forget = false;
    if (s.intervalStartMs === undefined) this.startInterval(s, now);
    this.armIdle(s);
    // A key whose last flush failed waits for its new interval, even when full.
    if (
      this.o.maxValuesPerKey !== undefined &&
      s.pending.length >= this.o.maxValuesPerKey &&
      !s.failed
    ) {
      this.request(s, 'size');
    }
    // An insert waiting for room arrived before this value: it may be the only one to flush.
    if (this.roomWaiters.length > 0) this.relievePressure();
  }

  /** Durable mode: values read back from the queue (own inserts, or a previous run's). */
  private fromJournal(values: JournalValue[]): void {
    if (this.destroyed) return;
    for (const v of values) {
      let decoded: V;
      try {
        decoded = this.codec.decode(v.value);
      } catch (e) {
        // Stored but not decodable (a codec changed since it was written): never
        // acknowledged, so it holds the queue's acknowledgement back and comes
        // again at the next open, for a fixed codec to flush. Reported, and
        // close() rejects.
        this.undecodableValues++;
        this.undecodable = new CorruptDataError(
          `keyed buffer: ${this.undecodableValues} value(s) read back from the queue do not decode with the codec (first at batch ${v.sequence}, key ${describeKey(v.key)}: ${asError(e).message}); they are not flushed and not acknowledged: they stay in the queue, holding its acknowledgement back, and come back at the next open (fix the codec)`,
          `batch ${v.sequence}`,
          e,
        );
        this.metrics.increment('keyed.undecodable_values');
        this.logger.error(
          { key: describeKey(v.key), sequence: v.sequence, error: asError(e).message },
          'keyed buffer: a value read back from the queue does not decode; it stays in the queue',
        );
        const error = this.undecodable;
        const emit = (): void => {
          if (this.listenerCount('error') > 0) this.emit('error', error, v.key);
        };
        // Read during open(): emitted once open() returned, to a listener attached right after it.
        if (this.openReports) this.openReports.push(emit);
        else emit();
        continue;
      }
      const bytes = v.value.byteLength;
      this.bufferedBytes += bytes;
      this.bufferedValues += 1;
      this.add(keyId(v.key), v.key, decoded, bytes, v.sequence);
    }
  }

  private journalFailed(error: Error): void {
    if (error.name === 'FencedError' || (error as { code?: string }).code === 'FENCED') {
      this.logger.error({ error: error.message }, 'keyed buffer: fenced by a newer holder');
      void this.destroy(error);
      return;
    }
    this.report(undefined, error);
  }

  private startInterval(s: KeyState<V>, fromMs: number): void {
    s.intervalStartMs = fromMs;
    this.clock.clearTimeout(s.dueTimer);
    const jitter = this.jitter();
    const delay = Math.max(0, fromMs + this.o.flushIntervalMs + jitter - this.clock.now());
    s.dueTimer = this.clock.setTimeout(() => {
      s.dueTimer = undefined;
      this.request(s, 'interval');
    }, delay);
  }

  /** A draw from [0, jitterMs]; a `random` that returns no number in [0, 1) is reported once and adds none. */
  private jitter(): number {
    const most: number = this.o.jitterMs;
    if (most === 0) return 0;
    const r: unknown = this.random();
    if (typeof r === 'number' && r >= 0 && r < 1) return Math.floor(r * (most + 1));
    if (!this.badRandomReported) {
      this.badRandomReported = true;
      this.report(
        undefined,
        new InvalidArgumentError(
          `KeyedBuffer: random() must return a number in [0, 1), got ${describeValue(r)}; no jitter is added`,
        ),
      );
    }
    return 0;
  }

  private armIdle(s: KeyState<V>): void {
    if (s.idleTimer !== undefined || this.destroyed) return;
    const delay = Math.max(0, s.lastInsertMs + this.o.idleTimeoutMs - this.clock.now());
    s.idleTimer = this.clock.setTimeout(() => {
      s.idleTimer = undefined;
      if (this.clock.now() - s.lastInsertMs < this.o.idleTimeoutMs) {
        this.armIdle(s);
        return;
      }
      s.forget = true;
      if (s.pending.length > 0) this.request(s, 'idle');
      else this.forgetIfIdle(s);
    }, delay);
  }

  private forgetIfIdle(s: KeyState<V>): void {
    if (!s.forget || s.pending.length > 0 || s.running || s.queued) return;
    this.clock.clearTimeout(s.dueTimer);
    this.clock.clearTimeout(s.idleTimer);
    this.tables[s.partition]?.delete(s.id);
  }

  // ---- flushing ----

  /** Asks for a flush of `s`: queued for a slot now, or after the running one. */
  private request(s: KeyState<V>, reason: FlushReason): void {
    if (this.destroyed) return;
    if (s.running || s.queued) {
      s.wanted ??= reason;
      return;
    }
    if (s.pending.length === 0) return;
    s.queued = true;
    s.wanted = reason;
    this.ready.push(s);
    this.pump();
  }

  /** Starts queued flushes while slots are free. */
  private pump(): void {
    while (this.running < this.o.maxConcurrentFlushes && this.ready.length > 0) {
      const s = this.ready.shift() as KeyState<V>;
      s.queued = false;
      const reason = s.wanted ?? 'interval';
      s.wanted = undefined;
      if (s.pending.length === 0) continue;
      this.start(s, reason);
    }
  }

  private start(s: KeyState<V>, reason: FlushReason): void {
    const cap = this.o.maxValuesPerKey ?? Infinity;
    const items = s.pending.splice(0, cap);
    s.running = items;
    this.clock.clearTimeout(s.dueTimer);
    s.dueTimer = undefined;
    s.intervalStartMs = undefined;
    // What stays behind starts its interval at its own oldest insert.
    const next = s.pending[0];
    if (next) this.startInterval(s, next.atMs);
    this.running++;
    void this.run(s, items, reason).then((outcome) => this.finish(s, items, outcome));
  }

  /** The attempts of one flush, then onError; never throws. */
  private async run(
    s: KeyState<V>,
    items: Item<V>[],
    reason: FlushReason,
  ): Promise<{ ok: true } | { ok: false; error: unknown }> {
    const values = items.map((i) => i.value);
    const info: FlushInfo = {
      partition: s.partition,
      attempt: 0,
      reason,
      firstInsertMs: (items[0] as Item<V>).atMs,
    };
    let error: unknown;
    for (let attempt = 1; attempt <= this.o.retryMax + 1; attempt++) {
      if (this.destroyed) return { ok: false, error: this.destroyed };
      if (attempt > 1) {
        this.metrics.increment('keyed.retries');
        const jitter = this.jitter();
        try {
          await sleep(this.o.retryDelayMs + jitter, {
            clock: this.clock,
            signal: this.stopSleeps.signal,
          });
        } catch {
          return { ok: false, error: this.destroyed };
        }
      }
      info.attempt = attempt;
      const started = monotonicNow(this.clock);
      try {
        await this.inHandler(() => this.onFlush(s.key, [...values], { ...info }));
        this.metrics.observe(
          'keyed.flush_duration_seconds',
          (monotonicNow(this.clock) - started) / 1000,
        );
        this.metrics.increment('keyed.flushes');
        this.metrics.increment('keyed.values_flushed', items.length);
        return { ok: true };
      } catch (e) {
        error = e;
        this.logger.debug(
          { key: describeKey(s.key), attempt, error: String(e) },
          'keyed buffer: a flush attempt failed',
        );
      }
    }
    this.metrics.increment('keyed.errors');
    if (this.onError && !this.destroyed) {
      try {
        const last = error;
        await this.inHandler(() => this.onError?.(s.key, [...values], last, { ...info }));
        return { ok: true };
      } catch (e) {
        error = e;
      }
    }
    return { ok: false, error };
  }

  /** Calls a handler in a frame `admit` recognises (reentrant inserts), active until it settles. */
  private async inHandler(call: () => unknown): Promise<void> {
    const frame = { active: true };
    try {
      await this.handlerFrames.run(frame, call);
    } finally {
      frame.active = false;
    }
  }

  private finish(
    s: KeyState<V>,
    items: Item<V>[],
    outcome: { ok: true } | { ok: false; error: unknown },
  ): void {
    this.running--;
    s.running = undefined;
    if (this.destroyed) return;
    if (outcome.ok) {
      s.failed = false;
      let bytes = 0;
      for (const item of items) {
        bytes += item.bytes;
        for (const w of item.waiters ?? []) w.resolve();
        item.waiters = undefined;
        if (item.sequence >= 0) this.journal?.done(item.sequence, 1);
      }
      this.release(bytes, items.length);
    } else {
      // Kept: back in front, in order; a new interval before they are tried again.
      s.failed = true;
      for (const item of items) {
        for (const w of item.waiters ?? []) w.reject(outcome.error);
        item.waiters = undefined;
      }
      s.pending.unshift(...items);
      this.startInterval(s, this.clock.now());
      this.report(s.key, asError(outcome.error), items.length);
    }
    this.gauge();
    const wanted = s.wanted;
    s.wanted = undefined;
    const cap = this.o.maxValuesPerKey ?? Infinity;
    // After a failure, kept values wait for the new interval (not a 'size' flush at once).
    if (s.pending.length >= cap && outcome.ok) this.request(s, 'size');
    else if (wanted !== undefined && outcome.ok) this.request(s, wanted);
    else if (s.pending.some((i) => i.waiters !== undefined)) this.request(s, 'explicit');
    this.forgetIfIdle(s);
    this.pump();
    this.relievePressure();
  }

  /** A failure nobody may be awaiting: counted already, logged, and emitted when listened to. */
  private report(key: Key | undefined, error: Error, kept?: number): void {
    this.logger.error(
      { key: key === undefined ? undefined : describeKey(key), kept, error: error.message },
      kept !== undefined
        ? 'keyed buffer: a flush failed; its values are kept and retried at the next interval'
        : 'keyed buffer: background failure',
    );
    if (this.listenerCount('error') > 0) this.emit('error', error, key);
  }

  private gauge(): void {
    const now = monotonicNow(this.clock);
    if (now - this.gaugedAt < 1000) return;
    this.gaugedAt = now;
    const stats = this.stats();
    this.metrics.gauge('keyed.keys_buffered', stats.keysBuffered);
    this.metrics.gauge('keyed.oldest_value_age_seconds', stats.oldestValueAgeMs / 1000);
  }

  private flushState(s: KeyState<V>, reason: FlushReason): Promise<void> {
    const target = s.pending.at(-1) ?? s.running?.at(-1);
    if (!target) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => {
      (target.waiters ??= []).push({ resolve, reject });
    });
    this.request(s, reason);
    return done;
  }

  private async flushEverything(reason: FlushReason): Promise<void> {
    const all: Promise<void>[] = [];
    for (const table of this.tables) {
      for (const s of table.values()) all.push(this.flushState(s, reason));
    }
    const results = await Promise.allSettled(all);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}

function hasMethods(value: unknown, names: readonly string[]): boolean {
  if (value === null || typeof value !== 'object') return false;
  const record = value as Record<string, unknown>;
  return names.every((n) => typeof record[n] === 'function');
}

/** Bytes of a key as counted against `maxBufferedBytes` (a string: its UTF-8 bytes). */
function keyBytes(key: Key): number {
  return typeof key === 'string' ? Buffer.byteLength(key, 'utf8') : key.byteLength;
}

function describeKey(key: Key): string {
  return typeof key === 'string'
    ? key.slice(0, 200)
    : `0x${Buffer.from(key.subarray(0, 100)).toString('hex')}`;
}

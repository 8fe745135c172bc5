import { sleep, systemClock, type Clock } from '../clock.ts';
import {
  InvalidArgumentError,
  NotFoundError,
  OutcomeUnknownError,
  PreconditionFailedError,
  QueueNotFoundError,
} from '../errors.ts';
import { DEFAULT_MAX_BATCH_BYTES } from '../format/batch.ts';
import type { MetadataItem } from '../format/manifest.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { noopMetrics, type Metrics } from '../metrics.ts';
import { resolveOptions, type OptionSpecs } from '../options.ts';
import { redactUrl } from '../redact.ts';
import type { ObjectMeta, ObjectStore, StoreCallOptions } from '../store/object-store.ts';
import { resolveStore, type OpenStoreOptions } from '../store/open-store.ts';
import { describeEntry, fetchBatch } from './batch-fetch.ts';
import { classifyBatchObject, oldestUlidTime, type CollectionContext } from '../collection-rule.ts';
import { collectLog } from '../log-collector.ts';
import type { Retention } from '../format/log-objects.ts';
import { peekLog, subscriptionInfos, type SubscriptionInfo } from './log-inspect.ts';
import { isSubscriptionName, LogQueue, type StartAt } from './log-queue.ts';
import { ManifestQueue, type ManifestSnapshot } from './manifest-queue.ts';

/** Where a queue lives: its store and its paths in it. */
export interface QueueOptions {
  /** The store, as a URL or an {@link ObjectStore}. */
  store: string | ObjectStore;
  /** Key of the queue manifest. @default "ingest/manifest" */
  manifestPath?: string;
  /** Folder of the batch objects, without a trailing "/". @default "ingest" */
  dataPathPrefix?: string;
  /** Options of a store opened from a URL (retries, clock, logger). */
  storeOptions?: OpenStoreOptions;
  /**
   * The layout a new queue gets, or the one an existing queue must have:
   * `'log'` (the default for new queues) or `'v1'` (OpenData Buffer v1, to
   * share a queue with the Rust implementation). An existing queue keeps the
   * layout found in the store; asking for the other is an
   * `InvalidArgumentError`. @default detected, else 'log'
   */
  layout?: Layout;
}

/** How a queue is laid out in the store: see docs/log-layout.md and the v1 format. */
export type Layout = 'v1' | 'log';

/** Defaults of {@link QueueOptions}. */
export const QUEUE_DEFAULTS = Object.freeze({
  manifestPath: 'ingest/manifest',
  dataPathPrefix: 'ingest',
});

/** Name, under the data prefix, of the object naming the manifest the prefix belongs to. */
export const OWNER_MARKER = 'queue.manifest';

const KEY_PATH = /^(?!\/)(?!.*\/\/)(?!.*\/$).+$/s;

const QUEUE_SPECS: OptionSpecs<QueueOptions> = {
  store: { kind: 'any' },
  manifestPath: { kind: 'string', pattern: KEY_PATH, expected: 'a non-empty key' },
  dataPathPrefix: {
    kind: 'string',
    pattern: KEY_PATH,
    expected: 'a non-empty key prefix without a leading or trailing "/"',
  },
  storeOptions: { kind: 'any' },
  layout: { kind: 'enum', values: ['v1', 'log'] },
};

/**
 * How a role names its queue: a {@link Queue} (or its options, or a store
 * URL) as `queue`, or the queue's fields (`store`, `manifestPath`,
 * `dataPathPrefix`) directly, as before there was a handle.
 */
export interface QueueSelector {
  /** The queue: a handle, its options, or a store URL (default paths). */
  queue?: Queue | QueueOptions | string;
  /** The store, when `queue` is not given. */
  store?: string | ObjectStore;
  /** See {@link QueueOptions.manifestPath}; only without `queue`. */
  manifestPath?: string;
  /** See {@link QueueOptions.dataPathPrefix}; only without `queue`. */
  dataPathPrefix?: string;
  /** See {@link QueueOptions.layout}; only without `queue`. */
  layout?: Layout;
}

/** Option specs of the {@link QueueSelector} fields, which every role accepts; checked by {@link Queue.select}. */
export const QUEUE_SELECTOR_SPECS: OptionSpecs<QueueSelector> = Object.freeze({
  queue: { kind: 'any' },
  store: { kind: 'any' },
  manifestPath: { kind: 'any' },
  dataPathPrefix: { kind: 'any' },
  layout: { kind: 'any' },
});

/** A queue's state, as {@link Queue.stats} reports it. */
export interface QueueStats {
  /** The store, without credentials. */
  store: string;
  /** The queue's layout. */
  layout: Layout;
  manifestPath: string;
  manifestBytes: number;
  epoch: number;
  nextSequence: number;
  /** Batches in the manifest, not yet acknowledged. */
  batchesPending: number;
  /** `produce()` calls in those batches (one metadata item each). */
  produceCallsPending: number;
  /** Bytes of the pending batch objects (from their trailers, or their size in the store). */
  bytesPending: number;
  /** Age of the oldest pending entry by its ingestion time and this process's clock, or null. */
  oldestEntryAgeMs: number | null;
  firstPendingSequence: number | null;
  /** Batch objects under the data prefix. */
  batchObjects: number;
  batchObjectBytes: number;
  /** Batch objects the manifest does not reference (acknowledged, or orphans of crashed producers). */
  unreferenced: number;
  unreferencedBytes: number;
  /**
   * Of those, how many a collection with the grace period given would delete,
   * judged by the collector's rule with the newest last-modified time seen as
   * the store's clock (a read cannot probe it as a collection does).
   */
  collectable: number;
  /** Log layout: every subscription with its lag (v1: none). */
  subscriptions: SubscriptionInfo[];
}

/** A batch as read. */
export interface Batch {
  sequence: number;
  location: string;
  entries: Uint8Array[];
  /** One item per `produce()` call: its entries start at `startIndex` (an index in the whole batch). */
  metadata: MetadataItem[];
  /**
   * The index in the batch of `entries[0]`: 0, except for the first batch a
   * consumer hands out when its subscription's position is inside that batch
   * (entries before it were committed by `process()`), which holds only the
   * entries from there on.
   */
  firstIndex?: number;
}

/** Options of {@link Queue.peek}. */
export interface PeekOptions extends StoreCallOptions {
  /** First sequence to read; at most the queue's next sequence. @default the oldest pending */
  fromSequence?: number;
  /** Keep reading new batches as they are appended, until `signal` aborts. @default false */
  follow?: boolean;
  /** Wait between manifest reads when following, in ms. @default 1000 */
  pollIntervalMs?: number;
  /** See {@link ConsumerOptions.maxBatchBytes}. @default 268435456 */
  maxBatchBytes?: number;
}

/** How long a role waits for a v1 manifest whose marker is there (see `Queue.manifestAppears`), in ms. */
const MANIFEST_APPEAR_MS = 3000;

/**
 * A handle naming one queue: its store, its manifest and the folder of its
 * batch objects. Every role takes one (or the same fields), and the command
 * line builds one per URL. It holds no state of the queue itself, only where
 * it is; many roles may share one handle.
 *
 * @example
 * const queue = Queue.open({ store: 'file:./data', manifestPath: 'orders/manifest', dataPathPrefix: 'orders' });
 * const producer = new Producer({ queue });
 * console.log(await queue.stats());
 * await producer.close();
 * await queue.close();
 */
export class Queue {
  readonly store: ObjectStore;
  readonly manifestPath: string;
  readonly dataPathPrefix: string;
  /** The layout asked for, if any; {@link layout} tells the one in force. */
  readonly requestedLayout: Layout | undefined;
  /** The store and the manifest path, for messages; no credentials. */
  readonly description: string;
  private readonly ownsStore: boolean;
  private closed = false;

  private detected: Promise<Layout> | undefined;
  private log: LogQueue | undefined;

  private constructor(
    options: Required<Omit<QueueOptions, 'storeOptions' | 'layout'>> & { layout?: Layout },
    ownsStore: boolean,
  ) {
    this.store = options.store as ObjectStore;
    this.manifestPath = options.manifestPath;
    this.dataPathPrefix = options.dataPathPrefix;
    this.requestedLayout = options.layout;
    this.ownsStore = ownsStore;
    this.description = `${redactUrl(this.store.description)} (manifest ${this.manifestPath})`;
  }

  /**
   * Resolves a queue from its options or a store URL (default paths). A
   * store given as a URL is opened here and closed by {@link close}.
   *
   * @throws {InvalidArgumentError} for a bad URL or path.
   */
  static open(options: QueueOptions | string): Queue {
    const o = resolveOptions<QueueOptions>(
      'Queue',
      QUEUE_SPECS,
      QUEUE_DEFAULTS,
      typeof options === 'string' ? { store: options } : options,
    );
    const store = resolveStore(o.store, o.storeOptions);
    return new Queue(
      {
        store,
        manifestPath: o.manifestPath as string,
        dataPathPrefix: o.dataPathPrefix as string,
        ...(o.layout ? { layout: o.layout } : {}),
      },
      typeof o.store === 'string',
    );
  }

  /**
   * The queue a role names (see {@link QueueSelector}), and whether the role
   * opened it (and so must close it).
   *
   * @throws {InvalidArgumentError} when neither or both of `queue` and `store` are given.
   */
  static select(role: string, selector: QueueSelector): { queue: Queue; owned: boolean } {
    const { queue, store, manifestPath, dataPathPrefix, layout } = selector;
    if (queue !== undefined) {
      if (
        store !== undefined ||
        manifestPath !== undefined ||
        dataPathPrefix !== undefined ||
        layout !== undefined
      ) {
        throw new InvalidArgumentError(
          `${role}: give either queue or store (with manifestPath and dataPathPrefix), not both`,
        );
      }
      if (queue instanceof Queue) return { queue, owned: false };
      return { queue: Queue.open(queue), owned: true };
    }
    if (store === undefined) {
      throw new InvalidArgumentError(
        `${role}: expected a queue (a Queue, its options or a store URL) or a store, got neither`,
      );
    }
    return { queue: Queue.open({ store, manifestPath, dataPathPrefix, layout }), owned: true };
  }

  /** The manifest as stored; an absent manifest reads as an empty queue with `version` undefined. */
  readManifest(options: StoreCallOptions = {}): Promise<ManifestSnapshot> {
    return this.manifestQueue().read(options.signal);
  }

  /**
   * The manifest, which must exist.
   *
   * @throws {QueueNotFoundError} naming the path when there is no manifest.
   */
  async readExistingManifest(options: StoreCallOptions = {}): Promise<ManifestSnapshot> {
    const snapshot = await this.readManifest(options);
    if (snapshot.version === undefined) {
      throw new QueueNotFoundError(
        this.manifestPath,
        `no manifest at "${this.manifestPath}" in ${redactUrl(this.store.description)}: nothing was ever produced there, or the manifest path or the URL is wrong`,
      );
    }
    return snapshot;
  }

  /**
   * Counts what is pending, what is stored and what a collection would take,
   * reading the manifest and listing the batch objects; changes nothing.
   *
   * @throws {QueueNotFoundError} when there is no manifest.
   */
  async stats(
    options: StoreCallOptions & { gcGracePeriodMs?: number; clock?: Clock } = {},
  ): Promise<QueueStats> {
    const clock = options.clock ?? systemClock;
    if ((await this.layout(options)) === 'log') return this.logStats(clock, options);
    const { manifest, sizeBytes, lastModified } = await this.readExistingManifest(options);
    await this.checkOwnership(options);
    const now = clock.now();
    const referenced = new Map<string, number | undefined>();
    let oldest: number | undefined;
    let calls = 0;
    for (const e of manifest.entries) {
      referenced.set(e.location, describeEntry(e).sizeBytes);
      calls += e.metadata.length;
      for (const m of e.metadata) oldest = Math.min(oldest ?? Infinity, m.ingestionTimeMs);
    }
    const prefix = `${this.dataPathPrefix}/`;
    let objects = 0;
    let objectBytes = 0;
    const stored = new Map<string, number>();
    const unreferenced: ObjectMeta[] = [];
    let storeNowMs = lastModified?.getTime() ?? 0;
    for await (const meta of this.store.list(prefix, options)) {
      storeNowMs = Math.max(storeNowMs, meta.lastModified.getTime());
      if (!meta.key.endsWith('.batch')) continue;
      objects++;
      objectBytes += meta.size;
      stored.set(meta.key, meta.size);
      if (!referenced.has(meta.key)) unreferenced.push(meta);
    }
    const context: CollectionContext = {
      prefix,
      referenced: new Set(referenced.keys()),
      oldestReferencedMs: oldestUlidTime(manifest.entries, prefix),
      nowMs: now,
      storeNowMs,
      gracePeriodMs: options.gcGracePeriodMs ?? 10 * 60 * 1000,
    };
    let unreferencedBytes = 0;
    let collectable = 0;
    for (const meta of unreferenced) {
      unreferencedBytes += meta.size;
      if (classifyBatchObject(meta, context) === 'collectable') collectable++;
    }
    let bytesPending = 0;
    for (const [location, size] of referenced) bytesPending += size ?? stored.get(location) ?? 0;
    return {
      store: redactUrl(this.store.description),
      layout: 'v1',
      subscriptions: [],
      manifestPath: this.manifestPath,
      manifestBytes: sizeBytes,
      epoch: manifest.epoch,
      nextSequence: manifest.nextSequence,
      batchesPending: manifest.entries.length,
      produceCallsPending: calls,
      bytesPending,
      oldestEntryAgeMs: oldest === undefined ? null : Math.max(0, now - oldest),
      firstPendingSequence: manifest.entries[0]?.sequence ?? null,
      batchObjects: objects,
      batchObjectBytes: objectBytes,
      unreferenced: unreferenced.length,
      unreferencedBytes,
      collectable,
    };
  }

  /**
   * Reads batches in order without acknowledging them and without fencing
   * the queue's consumer: a look at what is pending, for operators and tools.
   * Batches acknowledged meanwhile by the consumer may be skipped.
   *
   * @throws {InvalidArgumentError} when `fromSequence` is past the next sequence.
   * @throws {CorruptDataError} for a missing or damaged batch.
   */
  async *peek(options: PeekOptions & { clock?: Clock } = {}): AsyncIterable<Batch> {
    const { signal, follow = false, pollIntervalMs = 1000, clock = systemClock } = options;
    const maxBatchBytes = options.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    if ((await this.layout({ signal })) === 'log') {
      yield* peekLog(this.logQueue(), {
        ...(options.fromSequence !== undefined ? { fromSequence: options.fromSequence } : {}),
        follow,
        pollIntervalMs,
        maxBatchBytes,
        clock,
        ...(signal ? { signal } : {}),
      });
      return;
    }
    const queue = this.manifestQueue();
    let after = (options.fromSequence ?? 0) - 1;
    let first = true;
    while (!signal?.aborted) {
      const { manifest } = await queue.read(signal);
      if (
        first &&
        options.fromSequence !== undefined &&
        options.fromSequence > manifest.nextSequence
      ) {
        throw new InvalidArgumentError(
          `fromSequence ${options.fromSequence} is past the end of the queue (its next sequence is ${manifest.nextSequence}); expected at most ${manifest.nextSequence}`,
        );
      }
      first = false;
      for (const e of manifest.entries) {
        if (e.sequence <= after) continue;
        if (signal?.aborted) return;
        const d = describeEntry(e);
        const { records } = await fetchBatch(this.store, d, signal, { maxBatchBytes });
        yield {
          sequence: d.sequence,
          location: d.location,
          entries: records,
          metadata: d.metadata,
        };
        after = e.sequence;
      }
      if (!follow) return;
      try {
        await sleep(pollIntervalMs, { signal, clock });
      } catch {
        return;
      }
    }
  }

  /** Whether the data prefix has the marker naming a manifest (any manifest). */
  async hasOwnershipMarker(options: StoreCallOptions = {}): Promise<boolean> {
    try {
      await this.store.head(`${this.dataPathPrefix}/${OWNER_MARKER}`, options);
      return true;
    } catch (e) {
      if (e instanceof NotFoundError) return false;
      throw e;
    }
  }

  /**
   * Makes sure the data prefix belongs to this queue's manifest: a small
   * marker object, `{dataPathPrefix}/queue.manifest`, holds the manifest's
   * path. The first producer of a queue writes it (create-only); every role
   * checks it, so a queue opened with a mistyped manifest path or a data
   * prefix that belongs to another queue is refused before it writes or
   * collects anything. Queues written before the marker existed have none:
   * `claim` writes it, a check passes. A claim then reads the log descriptor
   * of the data prefix: a log created there while this role found no queue
   * is refused (the log checks for the marker after its descriptor, so one
   * of the two sees the other).
   *
   * @throws {InvalidArgumentError} when the marker names another manifest,
   * or (claiming) when the data prefix holds a log queue.
   */
  async checkOwnership(options: StoreCallOptions & { claim?: boolean } = {}): Promise<void> {
    const key = `${this.dataPathPrefix}/${OWNER_MARKER}`;
    const mine = new TextEncoder().encode(this.manifestPath);
    if (options.claim) {
      let claimed = false;
      try {
        await this.store.put(key, mine, { mode: 'create', signal: options.signal });
        claimed = true;
      } catch (e) {
        if (!(e instanceof PreconditionFailedError)) throw e;
      }
      // Written, then checked: a log created at the same moment (which checks the marker
      // after its descriptor) is seen by one of the two, whichever order they ran in.
      await this.refuseLogHere(options.signal);
      if (claimed) return;
    }
    const owner = await this.markerOwner(options.signal);
    if (owner !== undefined && owner !== this.manifestPath) {
      throw new InvalidArgumentError(
        `${redactUrl(this.store.description)}: the data prefix "${this.dataPathPrefix}" belongs to the queue whose manifest is "${owner}", not "${this.manifestPath}"; check the manifest path and the data prefix (they go together)`,
      );
    }
  }

  /** The manifest path the data prefix's marker names; `undefined` without a marker. */
  private async markerOwner(signal: AbortSignal | undefined): Promise<string | undefined> {
    try {
      const got = await this.store.get(`${this.dataPathPrefix}/${OWNER_MARKER}`, { signal });
      return new TextDecoder().decode(got.body);
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  /**
   * Refuses a v1 role whose data prefix holds a log queue's descriptor: one
   * created while this role found neither layout.
   */
  private async refuseLogHere(signal: AbortSignal | undefined): Promise<void> {
    // A manifest at the descriptor's own key: that one object is the mutex (each layout
    // creates it create-only), so no log can start beside this queue.
    if (this.manifestIsDescriptorKey()) return;
    if (await this.logQueue().readDescriptor(signal)) throw this.bothHere();
  }

  /**
   * Refuses a log role whose existing log shares its prefix with a v1 queue:
   * a manifest at `manifestPath`, or a marker whose manifest is there or
   * appears within `MANIFEST_APPEAR_MS` (a v1 queue being created). A log
   * whose creator was refused keeps its descriptor, so every role that finds
   * one checks again, not only its creator. A marker whose manifest never
   * appears is a v1 role that found this log and was refused: the log goes on.
   */
  private async refuseV1Here(
    signal: AbortSignal | undefined,
    manifestSeenAbsent = false,
  ): Promise<void> {
    const descriptorKey = this.logQueue().descriptorKey;
    const [owner, manifest] = await Promise.all([
      this.markerOwner(signal),
      manifestSeenAbsent || this.manifestIsDescriptorKey()
        ? false
        : this.store.head(this.manifestPath, { signal }).then(
            () => true,
            (e: unknown) => {
              if (e instanceof NotFoundError) return false;
              throw e;
            },
          ),
    ]);
    if (manifest) throw this.bothHere();
    if (owner === undefined || owner === descriptorKey) return;
    if (await this.manifestAppears(signal, owner)) throw this.bothHere(owner);
  }

  /** Whether this queue's manifest path is its data prefix's log descriptor key (`{prefix}/queue`). */
  private manifestIsDescriptorKey(): boolean {
    return this.manifestPath === `${this.dataPathPrefix}/queue`;
  }

  private bothHere(manifestPath = this.manifestPath): InvalidArgumentError {
    return new InvalidArgumentError(
      `${redactUrl(this.store.description)}: both a v1 manifest ("${manifestPath}") and a log queue ("${this.dataPathPrefix}/queue") live here; a prefix holds one queue: move one of them`,
    );
  }

  /**
   * The layout in force: the one found in the store (a v1 manifest at
   * `manifestPath`, or a log descriptor at `{dataPathPrefix}/queue`), else the
   * one asked for, else `'log'` for a new queue. Found once per handle.
   *
   * @throws {InvalidArgumentError} when the store holds the other layout than
   * the one asked for, or both.
   */
  layout(options: StoreCallOptions = {}): Promise<Layout> {
    this.detected ??= this.detectLayout(options.signal);
    this.detected.catch(() => (this.detected = undefined));
    return this.detected;
  }

  private async detectLayout(signal: AbortSignal | undefined): Promise<Layout> {
    if (this.manifestIsDescriptorKey()) {
      // The manifest's key is where a log's descriptor would be: only v1 can live here.
      if (this.requestedLayout === 'log') {
        throw new InvalidArgumentError(
          `${redactUrl(this.store.description)}: the manifest path "${this.manifestPath}" is the key of a log queue's descriptor under the data prefix "${this.dataPathPrefix}", so only a v1 queue can live here; choose another manifest path or data prefix for a log`,
        );
      }
      return 'v1';
    }
    const [manifest, log] = await Promise.all([
      this.store.head(this.manifestPath, { signal }).then(
        () => true,
        (e: unknown) => {
          if (e instanceof NotFoundError) return false;
          throw e;
        },
      ),
      this.logQueue().readDescriptor(signal),
    ]);
    const where = `${redactUrl(this.store.description)}`;
    if (manifest && log) throw this.bothHere();
    const found: Layout | undefined = manifest ? 'v1' : log ? 'log' : undefined;
    if (found && this.requestedLayout && found !== this.requestedLayout) {
      throw new InvalidArgumentError(
        found === 'v1'
          ? `${where}: the queue at "${this.manifestPath}" has the v1 layout (a manifest), not the log layout asked for; open it without a layout, or with layout 'v1'`
          : `${where}: the queue at "${this.dataPathPrefix}" has the log layout, not the v1 layout asked for; open it without a layout, or with layout 'log'`,
      );
    }
    // A log found: refused where a v1 queue lives or is being created too.
    if (found === 'log') await this.refuseV1Here(signal, true);
    if (found || this.requestedLayout) return found ?? (this.requestedLayout as Layout);
    // Nothing yet, but a v1 marker: a v1 queue being created (its first role wrote the
    // marker, the manifest follows) is v1; one whose manifest stays missing lost it, and
    // a log is not started there (ensureLog refuses).
    if (await this.hasOwnershipMarker({ signal })) {
      return (await this.manifestAppears(signal)) ? 'v1' : 'log';
    }
    return 'log';
  }

  /**
   * Whether this queue's missing manifest appears within a short wait
   * (`MANIFEST_APPEAR_MS`): a v1 queue's first role writes the data prefix's
   * marker just before the manifest, so a role that looks in between sees a
   * marker without a manifest for a moment.
   */
  async manifestAppears(signal?: AbortSignal, manifestPath = this.manifestPath): Promise<boolean> {
    const deadline = performance.now() + MANIFEST_APPEAR_MS;
    for (;;) {
      try {
        await this.store.head(manifestPath, { signal });
        return true;
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
      }
      if (performance.now() >= deadline) return false;
      await sleep(100, { signal });
    }
  }

  /** The log layout's state for this queue (whether or not it exists yet). */
  logQueue(
    options: { metrics?: Metrics; logger?: Logger; clock?: Clock; writer?: string } = {},
  ): LogQueue {
    if (options.metrics || options.logger || options.clock || options.writer) {
      return new LogQueue({ store: this.store, root: this.dataPathPrefix, ...options });
    }
    this.log ??= new LogQueue({ store: this.store, root: this.dataPathPrefix });
    return this.log;
  }

  /** The log queue, which must exist. @throws {QueueNotFoundError} */
  private async existingLog(signal?: AbortSignal): Promise<LogQueue> {
    const log = this.logQueue();
    if (!(await log.readDescriptor(signal))) {
      throw new QueueNotFoundError(
        log.descriptorKey,
        `no queue at "${this.dataPathPrefix}" in ${redactUrl(this.store.description)}: neither a log queue ("${log.descriptorKey}") nor a v1 manifest ("${this.manifestPath}"); nothing was ever produced there, or a path or the URL is wrong`,
      );
    }
    return log;
  }

  /**
   * Creates the log queue `log` unless it exists, after making sure it does
   * not start inside the data prefix of a v1 queue (a mistyped manifest path
   * must not start a second queue among another's batches).
   *
   * @throws {InvalidArgumentError} when the data prefix holds a v1 queue's
   * marker, found before the log is created or, when a v1 role claimed the
   * prefix meanwhile, after.
   */
  async ensureLog(log: LogQueue, signal?: AbortSignal): Promise<void> {
    if (await log.readDescriptor(signal)) {
      // It exists, but its creator may have been refused (it keeps its descriptor).
      await this.refuseV1Here(signal);
      return;
    }
    // A marker naming another manifest is refused here...
    await this.checkOwnership({ signal });
    // ...and one naming this (missing) manifest is a v1 queue that lost it.
    if (await this.hasOwnershipMarker({ signal })) {
      throw new InvalidArgumentError(
        `${redactUrl(this.store.description)}: the data prefix "${this.dataPathPrefix}" belongs to a v1 queue (its marker names the manifest "${this.manifestPath}", which is missing); a log queue is not started inside it`,
      );
    }
    await log.ensureCreated(signal);
    // Created, then checked: a v1 queue claiming this prefix at the same moment (which
    // checks for a descriptor after its marker) is seen by one of the two.
    if (await this.hasOwnershipMarker({ signal })) throw this.bothHere();
  }

  /** Refuses what only the log layout can do, naming it. */
  private async requireLog(what: string, signal?: AbortSignal): Promise<LogQueue> {
    if ((await this.layout({ signal })) === 'v1') {
      throw new InvalidArgumentError(
        `the queue at "${this.manifestPath}" has the v1 layout, which cannot ${what}: it has one consumer and no retention (a new queue gets the log layout; v1 is for sharing a queue with the Rust implementation)`,
      );
    }
    return this.existingLog(signal);
  }

  private async logStats(
    clock: Clock,
    options: StoreCallOptions & { gcGracePeriodMs?: number },
  ): Promise<QueueStats> {
    const log = await this.existingLog(options.signal);
    const now = clock.now();
    const head = await log.discoverHead(options.signal);
    const subscriptions = await subscriptionInfos(log, now, options.signal);
    const slowest = subscriptions.reduce<SubscriptionInfo | undefined>(
      (a, b) => (a === undefined || b.nextSequence < a.nextSequence ? b : a),
      undefined,
    );
    let objects = 0;
    let objectBytes = 0;
    let newest = 0;
    for await (const meta of this.store.list(`${this.dataPathPrefix}/`, options)) {
      newest = Math.max(newest, meta.lastModified.getTime());
      const rest = meta.key.slice(this.dataPathPrefix.length + 1);
      if (rest.includes('/') || !rest.endsWith('.batch')) continue;
      objects++;
      objectBytes += meta.size;
    }
    const dry = await collectLog(
      {
        log,
        storeNowMs: newest,
        nowMs: now,
        gracePeriodMs: options.gcGracePeriodMs ?? 10 * 60 * 1000,
        dryRun: true,
        metrics: noopMetrics,
        logger: silentLogger,
        isProbe: () => false,
      },
      options,
    );
    const collectable = dry.deleted.filter((k) => k.endsWith('.batch')).length;
    return {
      store: redactUrl(this.store.description),
      layout: 'log',
      manifestPath: log.descriptorKey,
      manifestBytes: 0,
      epoch: subscriptions.find((x) => x.name === 'default')?.epoch ?? 0,
      nextSequence: head.endSequence,
      batchesPending: slowest?.lagBatches ?? 0,
      produceCallsPending: 0,
      bytesPending: slowest?.lagBytes ?? 0,
      oldestEntryAgeMs: slowest?.oldestUnackedAgeMs ?? null,
      // By batches, not sequences: those a void left empty are not pending (§7.2).
      firstPendingSequence: slowest && slowest.lagBatches > 0 ? slowest.nextSequence : null,
      batchObjects: objects,
      batchObjectBytes: objectBytes,
      unreferenced: collectable,
      unreferencedBytes: 0,
      collectable,
      subscriptions,
    };
  }

  /** Every subscription with its lag (log layout). @throws {InvalidArgumentError} on a v1 queue */
  async subscriptions(
    options: StoreCallOptions & { clock?: Clock } = {},
  ): Promise<SubscriptionInfo[]> {
    const log = await this.requireLog('have named subscriptions', options.signal);
    return subscriptionInfos(log, (options.clock ?? systemClock).now(), options.signal);
  }

  /**
   * Creates a subscription at `startAt`; an existing one keeps its cursor.
   *
   * @throws {InvalidArgumentError} on a v1 queue, or for a bad name or start.
   */
  async createSubscription(
    name: string,
    startAt: StartAt = 'oldest',
    options: StoreCallOptions = {},
  ): Promise<void> {
    checkSubscriptionName(name);
    const log = await this.requireLog('have named subscriptions', options.signal);
    await log.createCursor(name, startAt, options.signal);
  }

  /** Deletes a subscription: it no longer holds data back; its holder is fenced. */
  async deleteSubscription(name: string, options: StoreCallOptions = {}): Promise<void> {
    checkSubscriptionName(name);
    const log = await this.requireLog('have named subscriptions', options.signal);
    if (!(await log.readCursor(name, options.signal))) {
      throw new InvalidArgumentError(
        `no subscription "${name}" on the queue at "${this.dataPathPrefix}"`,
      );
    }
    await log.deleteSubscription(name, options.signal);
  }

  /**
   * Moves a subscription to `startAt` and fences its current holder (the
   * epoch goes up); creates it if it does not exist.
   */
  async resetSubscription(
    name: string,
    startAt: StartAt,
    options: StoreCallOptions & { clock?: Clock } = {},
  ): Promise<void> {
    checkSubscriptionName(name);
    const log = await this.requireLog('have named subscriptions', options.signal);
    const clock = options.clock ?? systemClock;
    for (;;) {
      const current = await log.createCursor(name, startAt, options.signal);
      const { next, commit } = await log.resolveStart(startAt, options.signal);
      try {
        await log.writeCursor(
          {
            ...current.value,
            epoch: current.value.epoch + 1,
            next,
            commit,
            updatedAtMs: clock.now(),
            // A reset fences shared readers too: they leave the cursor.
            readers: undefined,
          },
          current.version,
          options.signal,
        );
        return;
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
      }
    }
  }

  /** The queue's retention (log layout). */
  async retention(options: StoreCallOptions = {}): Promise<Retention> {
    const log = await this.requireLog('keep a retention', options.signal);
    return (await log.readDescriptor(options.signal))?.value.retention ?? {};
  }

  /**
   * Sets the queue's retention, stored with the queue and enforced by the
   * collector: batches older than `maxAgeMs` (by their commit's store time),
   * or beyond the newest `maxBytes`, are deleted even if a subscription has
   * not acknowledged them. Omit a field to turn that rule off.
   */
  async setRetention(retention: Retention, options: StoreCallOptions = {}): Promise<Retention> {
    for (const [k, v] of Object.entries(retention)) {
      if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1)) {
        throw new InvalidArgumentError(`retention.${k} must be an integer >= 1, got ${String(v)}`);
      }
    }
    const log = await this.requireLog('keep a retention', options.signal);
    return (await log.setRetention(retention, options.signal)).retention;
  }

  /** The manifest as a conditional-write queue, for the roles. */
  manifestQueue(
    options: { metrics?: Metrics; logger?: Logger; clock?: Clock } = {},
  ): ManifestQueue {
    return new ManifestQueue({
      store: this.store,
      manifestPath: this.manifestPath,
      metrics: options.metrics ?? noopMetrics,
      logger: options.logger ?? silentLogger,
      clock: options.clock ?? systemClock,
    });
  }

  /** Closes the store if this handle opened it from a URL. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsStore) await this.store.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function checkSubscriptionName(name: string): void {
  if (!isSubscriptionName(name)) {
    throw new InvalidArgumentError(
      `a subscription name is 1-100 letters, digits, ".", "_" or "-", not starting with ".", got ${JSON.stringify(name)}`,
    );
  }
}

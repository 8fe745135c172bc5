import { sleep, systemClock, type Clock } from '../clock.ts';
import {
  InvalidArgumentError,
  NotFoundError,
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
}

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
}

/** Option specs of the {@link QueueSelector} fields, which every role accepts; checked by {@link Queue.select}. */
export const QUEUE_SELECTOR_SPECS: OptionSpecs<QueueSelector> = Object.freeze({
  queue: { kind: 'any' },
  store: { kind: 'any' },
  manifestPath: { kind: 'any' },
  dataPathPrefix: { kind: 'any' },
});

/** A queue's state, as {@link Queue.stats} reports it. */
export interface QueueStats {
  /** The store, without credentials. */
  store: string;
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
}

/** A batch as read. */
export interface Batch {
  sequence: number;
  location: string;
  entries: Uint8Array[];
  /** One item per `produce()` call: its entries start at `startIndex`. */
  metadata: MetadataItem[];
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
  /** The store and the manifest path, for messages; no credentials. */
  readonly description: string;
  private readonly ownsStore: boolean;
  private closed = false;

  private constructor(options: Required<Omit<QueueOptions, 'storeOptions'>>, ownsStore: boolean) {
    this.store = options.store as ObjectStore;
    this.manifestPath = options.manifestPath;
    this.dataPathPrefix = options.dataPathPrefix;
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
    const { queue, store, manifestPath, dataPathPrefix } = selector;
    if (queue !== undefined) {
      if (store !== undefined || manifestPath !== undefined || dataPathPrefix !== undefined) {
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
    return { queue: Queue.open({ store, manifestPath, dataPathPrefix }), owned: true };
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

  /**
   * Makes sure the data prefix belongs to this queue's manifest: a small
   * marker object, `{dataPathPrefix}/queue.manifest`, holds the manifest's
   * path. The first producer of a queue writes it (create-only); every role
   * checks it, so a queue opened with a mistyped manifest path or a data
   * prefix that belongs to another queue is refused before it writes or
   * collects anything. Queues written before the marker existed have none:
   * `claim` writes it, a check passes.
   *
   * @throws {InvalidArgumentError} when the marker names another manifest.
   */
  async checkOwnership(options: StoreCallOptions & { claim?: boolean } = {}): Promise<void> {
    const key = `${this.dataPathPrefix}/${OWNER_MARKER}`;
    const mine = new TextEncoder().encode(this.manifestPath);
    if (options.claim) {
      try {
        await this.store.put(key, mine, { mode: 'create', signal: options.signal });
        return;
      } catch (e) {
        if (!(e instanceof PreconditionFailedError)) throw e;
      }
    }
    let owner: string;
    try {
      owner = new TextDecoder().decode(
        (await this.store.get(key, { signal: options.signal })).body,
      );
    } catch (e) {
      if (e instanceof NotFoundError) return;
      throw e;
    }
    if (owner !== this.manifestPath) {
      throw new InvalidArgumentError(
        `${redactUrl(this.store.description)}: the data prefix "${this.dataPathPrefix}" belongs to the queue whose manifest is "${owner}", not "${this.manifestPath}"; check the manifest path and the data prefix (they go together)`,
      );
    }
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

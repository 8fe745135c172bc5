import { systemClock, type Clock } from './clock.ts';
import { InvalidArgumentError, QueueNotFoundError } from './errors.ts';
import { isUlid, ulidTimeMs } from './format/ulid.ts';
import { noopMetrics, type Metrics } from './metrics.ts';
import { ManifestQueue } from './queue/manifest-queue.ts';
import type { ObjectMeta, ObjectStore } from './store/object-store.ts';
import { resolveStore } from './store/open-store.ts';

/** Options of {@link GarbageCollector}. */
export interface GarbageCollectorOptions {
  /** The store, as a URL or an {@link ObjectStore}. */
  store: string | ObjectStore;
  /** Folder of the batch objects. @default "ingest" */
  dataPathPrefix?: string;
  /** Key of the queue manifest. @default "ingest/manifest" */
  manifestPath?: string;
  /**
   * Minimum age of an unreferenced batch object before it may be deleted. It
   * must exceed the longest time between the start of a producer's batch
   * upload and its manifest append (upload time plus append retries). The age
   * is measured twice, and both must pass: by the batch's ULID time against
   * this collector's clock, and by the object's last-modified time, which the
   * store assigns, against the store's own clock (see
   * {@link GarbageCollector}). @default 600000 (10 minutes)
   */
  gcGracePeriodMs?: number;
  metrics?: Metrics;
  clock?: Clock;
}

/** Defaults of {@link GarbageCollectorOptions}. */
export const GC_DEFAULTS = Object.freeze({
  dataPathPrefix: 'ingest',
  manifestPath: 'ingest/manifest',
  gcGracePeriodMs: 10 * 60 * 1000,
});

/** Name, under the data prefix, of the object a collection writes to read the store's clock. */
export const CLOCK_PROBE_NAME = 'collector.clock';

/** What one collection did (or, in a dry run, would do). */
export interface CollectionResult {
  dryRun: boolean;
  /** Keys deleted (or that would be). */
  deleted: string[];
  /** Bytes of those objects. */
  bytesDeleted: number;
  /** Keys whose deletion failed. */
  failed: string[];
  /** Batch objects examined and kept. */
  kept: number;
}

/** How the collector sees one object under the data prefix. */
export type BatchObjectState =
  /** Not named `{ULID}.batch` directly under the data prefix: never touched. */
  | 'foreign'
  /** The manifest references it. */
  | 'referenced'
  /** Unreferenced, but too young by one of the two clocks, or newer than the oldest entry. */
  | 'young'
  /** Unreferenced and old enough by both clocks: a collection deletes it. */
  | 'collectable';

/** What {@link classifyBatchObject} needs to know about the queue and the time. */
export interface CollectionContext {
  /** The data prefix with its trailing "/". */
  prefix: string;
  /** Locations the manifest references. */
  referenced: ReadonlySet<string>;
  /** ULID time of the oldest referenced batch, or Infinity. */
  oldestReferencedMs: number;
  /** The collector's clock. */
  nowMs: number;
  /** The store's clock, read before the manifest (never later than the manifest read). */
  storeNowMs: number;
  gracePeriodMs: number;
}

/**
 * The collector's rule for one listed object, shared with `queue stats`.
 * A batch object is collectable only when every condition holds: its name
 * is `{ULID}.batch` directly under the data prefix; the manifest does not
 * reference it; its ULID time is older than the oldest referenced batch's;
 * its ULID time is at least the grace period behind the collector's clock;
 * and its last-modified time is at least the grace period behind the store's
 * clock. The last condition is what makes skew harmless: a producer whose
 * clock runs behind writes old-looking ULIDs, and a collector whose clock
 * runs ahead sees everything as old, but neither moves the store's clock.
 */
export function classifyBatchObject(meta: ObjectMeta, c: CollectionContext): BatchObjectState {
  if (!meta.key.startsWith(c.prefix)) return 'foreign';
  const rest = meta.key.slice(c.prefix.length);
  if (!rest.endsWith('.batch')) return 'foreign';
  const ulid = rest.slice(0, -'.batch'.length);
  if (!isUlid(ulid)) return 'foreign';
  if (c.referenced.has(meta.key)) return 'referenced';
  const t = ulidTimeMs(ulid);
  if (t >= c.oldestReferencedMs) return 'young';
  if (c.nowMs - t < c.gracePeriodMs) return 'young';
  if (c.storeNowMs - meta.lastModified.getTime() < c.gracePeriodMs) return 'young';
  return 'collectable';
}

/**
 * Deletes batch objects nobody needs, by the rule of
 * {@link classifyBatchObject}.
 *
 * Order of one collection: write a small probe object
 * (`{dataPathPrefix}/collector.clock`) and read back its last-modified time,
 * the store's "now"; then read the manifest; then list. A batch uploaded at
 * store time U and appended at store time A, with A - U below the grace
 * period, is safe: if the manifest read missed its entry, the append came
 * after the read, so the store's now as probed (before the read) is below
 * A, and less than the grace period past U.
 *
 * What is still assumed: the store gives every object its last-modified time
 * from one clock that does not jump back by more than the grace period (true
 * of S3, Azure and GCS, of one machine's file system, and of the memory
 * store); batch objects are written once (create-only) and never touched
 * again, so their last-modified time is their upload's; and no producer
 * takes longer than the grace period from the start of a batch upload to the
 * end of its append. Clocks of producer and collector hosts may be wrong by
 * any amount. Stores that keep last-modified times to the second (S3) make
 * the effective grace up to a second shorter.
 *
 * A collection refuses to run, with {@link QueueNotFoundError}, when the
 * manifest does not exist: without it every batch object would look
 * unreferenced, so a typo in the manifest path would delete the backlog.
 */
export class GarbageCollector {
  private readonly store: ObjectStore;
  private readonly queue: ManifestQueue;
  private readonly prefix: string;
  private readonly gracePeriodMs: number;
  private readonly metrics: Metrics;
  private readonly clock: Clock;

  constructor(options: GarbageCollectorOptions) {
    const grace = options.gcGracePeriodMs ?? GC_DEFAULTS.gcGracePeriodMs;
    if (!Number.isSafeInteger(grace) || grace < 0) {
      throw new InvalidArgumentError(
        `gcGracePeriodMs must be an integer >= 0, got ${String(grace)}`,
      );
    }
    this.store = resolveStore(options.store);
    this.metrics = options.metrics ?? noopMetrics;
    this.clock = options.clock ?? systemClock;
    this.prefix = `${options.dataPathPrefix ?? GC_DEFAULTS.dataPathPrefix}/`;
    this.gracePeriodMs = grace;
    this.queue = new ManifestQueue({
      store: this.store,
      manifestPath: options.manifestPath ?? GC_DEFAULTS.manifestPath,
      metrics: this.metrics,
    });
  }

  /**
   * Runs one collection. With `dryRun`, deletes nothing and reports what it
   * would delete (it still writes the clock probe).
   *
   * @throws {QueueNotFoundError} when there is no manifest at the path given.
   */
  async run(options: { dryRun?: boolean; signal?: AbortSignal } = {}): Promise<CollectionResult> {
    const started = performance.now();
    const storeNowMs = await this.probeStoreClock(options.signal);
    const snapshot = await this.queue.read(options.signal);
    if (snapshot.version === undefined) {
      throw new QueueNotFoundError(
        this.queue.manifestPath,
        `${this.store.description}: no manifest at "${this.queue.manifestPath}"; refusing to collect, since every batch object under "${this.prefix}" would look unreferenced (check the manifest path and the URL)`,
      );
    }
    const context: CollectionContext = {
      prefix: this.prefix,
      referenced: new Set(snapshot.manifest.entries.map((e) => e.location)),
      oldestReferencedMs: oldestUlidTime(snapshot.manifest.entries, this.prefix),
      nowMs: this.clock.now(),
      storeNowMs,
      gracePeriodMs: this.gracePeriodMs,
    };
    const result: CollectionResult = {
      dryRun: options.dryRun ?? false,
      deleted: [],
      bytesDeleted: 0,
      failed: [],
      kept: 0,
    };
    for await (const meta of this.store.list(this.prefix, options)) {
      const state = classifyBatchObject(meta, context);
      if (state === 'foreign') continue;
      if (state !== 'collectable') {
        result.kept++;
        continue;
      }
      result.deleted.push(meta.key);
      result.bytesDeleted += meta.size;
    }
    if (!result.dryRun && result.deleted.length > 0) {
      try {
        await this.store.deleteMany(result.deleted, options);
        this.metrics.increment('buffer.gc_files_deleted', result.deleted.length);
        this.metrics.increment('buffer.batches_collected', result.deleted.length);
        this.metrics.increment('buffer.bytes_collected', result.bytesDeleted);
      } catch (e) {
        result.failed = result.deleted;
        result.deleted = [];
        result.bytesDeleted = 0;
        this.metrics.increment('buffer.gc_files_failed', result.failed.length);
        this.metrics.observe('buffer.gc_duration_seconds', (performance.now() - started) / 1000);
        throw e;
      }
    }
    this.metrics.observe('buffer.gc_duration_seconds', (performance.now() - started) / 1000);
    return result;
  }

  /** Writes the probe object and returns the last-modified time the store gave it, as listed. */
  private async probeStoreClock(signal?: AbortSignal): Promise<number> {
    const key = `${this.prefix}${CLOCK_PROBE_NAME}`;
    await this.store.put(key, new TextEncoder().encode(String(this.clock.now())), { signal });
    // Another collector may overwrite the probe in between: its time is also
    // one the store gave before our manifest read, so either reading is safe.
    // The time is read from a listing, as the batches' are: S3 servers list
    // times to the millisecond but HEAD them to the second.
    for await (const meta of this.store.list(key, { signal })) {
      if (meta.key === key) return meta.lastModified.getTime();
    }
    return (await this.store.head(key, { signal })).lastModified.getTime();
  }
}

/** ULID time of the oldest batch named `{prefix}{ULID}.batch` among `entries`, or Infinity. */
export function oldestUlidTime(entries: readonly { location: string }[], prefix: string): number {
  let oldest = Infinity;
  for (const e of entries) {
    const name = e.location.startsWith(prefix)
      ? e.location.slice(prefix.length, -'.batch'.length)
      : '';
    if (isUlid(name)) oldest = Math.min(oldest, ulidTimeMs(name));
  }
  return oldest;
}

import { systemClock, type Clock } from './clock.ts';
import { InvalidArgumentError } from './errors.ts';
import { isUlid, ulidTimeMs } from './format/ulid.ts';
import { noopMetrics, type Metrics } from './metrics.ts';
import { ManifestQueue } from './queue/manifest-queue.ts';
import type { ObjectStore } from './store/object-store.ts';
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
   * Minimum age of a batch object, by its ULID time, before it may be
   * deleted; it must exceed the longest gap between a producer's batch upload
   * and its manifest append. @default 600000 (10 minutes)
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

/**
 * Deletes batch objects nobody needs: named `{ULID}.batch` directly under the
 * data prefix, not referenced by the manifest, with a ULID time older than the
 * oldest manifest entry's (when the manifest has entries) and older than the
 * grace period. The manifest is read before listing, so a batch uploaded
 * during the listing is younger than the grace period and safe.
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
    if (!Number.isFinite(grace) || grace < 0) {
      throw new InvalidArgumentError(`gcGracePeriodMs must be a number >= 0, got ${String(grace)}`);
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

  /** Runs one collection. With `dryRun`, deletes nothing and reports what it would delete. */
  async run(options: { dryRun?: boolean; signal?: AbortSignal } = {}): Promise<CollectionResult> {
    const started = performance.now();
    const { manifest } = await this.queue.read(options.signal);
    const referenced = new Set(manifest.entries.map((e) => e.location));
    let oldest = Infinity;
    for (const e of manifest.entries) {
      const name = e.location.startsWith(this.prefix)
        ? e.location.slice(this.prefix.length, -'.batch'.length)
        : '';
      if (isUlid(name)) oldest = Math.min(oldest, ulidTimeMs(name));
    }
    const now = this.clock.now();
    const result: CollectionResult = {
      dryRun: options.dryRun ?? false,
      deleted: [],
      bytesDeleted: 0,
      failed: [],
      kept: 0,
    };
    for await (const meta of this.store.list(this.prefix, options)) {
      const rest = meta.key.slice(this.prefix.length);
      if (!rest.endsWith('.batch')) continue;
      const ulid = rest.slice(0, -'.batch'.length);
      if (!isUlid(ulid)) continue;
      const t = ulidTimeMs(ulid);
      if (referenced.has(meta.key) || t >= oldest || now - t < this.gracePeriodMs) {
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
}

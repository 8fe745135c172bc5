import { randomUUID } from 'node:crypto';
import { systemClock, type Clock } from './clock.ts';
import { classifyBatchObject, oldestUlidTime, type CollectionContext } from './collection-rule.ts';
import { ClosedError, InvalidArgumentError, NotFoundError, QueueNotFoundError } from './errors.ts';
import { silentLogger, type Logger } from './logger.ts';
import { noopMetrics, type Metrics } from './metrics.ts';
import { checkCallOptions, resolveOptions, type OptionSpecs } from './options.ts';
import { collectLog } from './log-collector.ts';
import type { ManifestQueue } from './queue/manifest-queue.ts';
import { Queue, QUEUE_SELECTOR_SPECS, type QueueSelector } from './queue/queue.ts';
import type { ObjectStore, StoreCallOptions } from './store/object-store.ts';

export {
  classifyBatchObject,
  type BatchObjectState,
  type CollectionContext,
} from './collection-rule.ts';

/** Options of {@link GarbageCollector}. */
export interface GarbageCollectorOptions extends QueueSelector {
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
  /** Where collections are counted. @default no metrics */
  metrics?: Metrics;
  /** Where each collection is reported (debug) and failures (warn). @default silent */
  logger?: Logger;
  /** The collector's clock. @default the system clock */
  clock?: Clock;
}

/** Defaults of {@link GarbageCollectorOptions}. */
export const GC_DEFAULTS = Object.freeze({
  gcGracePeriodMs: 10 * 60 * 1000,
});

const GC_SPECS: OptionSpecs<GarbageCollectorOptions> = {
  ...QUEUE_SELECTOR_SPECS,
  gcGracePeriodMs: { kind: 'int', min: 0 },
  metrics: { kind: 'any' },
  logger: { kind: 'any' },
  clock: { kind: 'any' },
};

/**
 * Start of the name, under the data prefix, of the object a collection
 * writes (and deletes) to read the store's clock; a UUID follows.
 */
export const CLOCK_PROBE_PREFIX = 'collector.clock.';
const PROBE_NAME = /^collector\.clock\.[0-9a-f-]{36}$/;

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
 * Deletes batch objects nobody needs, by the rule of
 * {@link classifyBatchObject}.
 *
 * Order of one collection: check that the manifest exists and that the data
 * prefix belongs to it (its marker, see `Queue.checkOwnership`), writing
 * nothing before; write a fresh probe object
 * (`{dataPathPrefix}/collector.clock.{uuid}`) and read its last-modified time
 * from a listing, the store's "now"; read the manifest; list and delete; delete
 * the probe. A batch uploaded at store time U and appended at store time A,
 * with A - U below the grace period, is safe: if the manifest read missed its
 * entry, the append came after the read, so the store's now as probed
 * (before the read) is below A, and less than the grace period past U. The
 * probe is a new object each time, so its time is the store's now even if an
 * earlier object was stamped in the future.
 *
 * What is still assumed: the store stamps every new object from one clock
 * that does not jump back by more than the grace period (true of S3, Azure
 * and GCS, of one machine's file system, and of the memory store); batch
 * objects are written once (create-only) and never touched again, so their
 * last-modified time is their upload's; and no producer takes longer than the
 * grace period from the start of a batch upload to the end of its append.
 * Clocks of producer and collector hosts may be wrong by any amount. Stores
 * that keep last-modified times to the second make the effective grace up to
 * a second shorter.
 *
 * Refusals, so that a mistyped path never deletes a backlog: no manifest at
 * the path ({@link QueueNotFoundError}); a data prefix whose marker names
 * another manifest, or a manifest whose entries all lie under another prefix
 * ({@link InvalidArgumentError}). A manifest that never had an entry (next
 * sequence 0, as one a consumer created at a mistyped path) references
 * nothing, and nothing is collected for it.
 */
export class GarbageCollector {
  /** The queue collected. */
  readonly queue: Queue;
  private readonly store: ObjectStore;
  private readonly manifest: ManifestQueue;
  private readonly ownsQueue: boolean;
  private readonly prefix: string;
  private readonly gracePeriodMs: number;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private closed = false;

  /** @throws {InvalidArgumentError} for bad options. */
  constructor(options: GarbageCollectorOptions) {
    const o = resolveOptions('GarbageCollector', GC_SPECS, GC_DEFAULTS, options);
    const { queue, owned } = Queue.select('GarbageCollector', o);
    this.queue = queue;
    this.ownsQueue = owned;
    this.store = queue.store;
    this.metrics = o.metrics ?? noopMetrics;
    this.logger = o.logger ?? silentLogger;
    this.clock = o.clock ?? systemClock;
    this.prefix = `${queue.dataPathPrefix}/`;
    this.gracePeriodMs = o.gcGracePeriodMs as number;
    this.manifest = queue.manifestQueue({
      metrics: this.metrics,
      logger: this.logger,
      clock: this.clock,
    });
  }

  /**
   * Runs one collection. With `dryRun`, deletes nothing and reports what it
   * would delete (it still writes, and deletes, its clock probe).
   *
   * @throws {QueueNotFoundError} when there is no manifest at the path given.
   * @throws {InvalidArgumentError} when the data prefix does not go with the manifest.
   */
  async run(options: StoreCallOptions & { dryRun?: boolean } = {}): Promise<CollectionResult> {
    checkCallOptions('run', options, ['dryRun', 'signal']);
    if (this.closed) throw new ClosedError('garbage collector');
    const started = performance.now();
    const layout = await this.queue.layout(options);
    if (layout === 'log') return this.runLog(started, options);
    // Nothing is written before the queue is known to exist and to own the data prefix.
    try {
      await this.store.head(this.queue.manifestPath, options);
    } catch (e) {
      if (e instanceof NotFoundError) throw this.noManifest();
      throw e;
    }
    // A marker naming another manifest refuses here; none at all (a queue from before
    // markers) is settled once the manifest is read.
    const marked = await this.queue.hasOwnershipMarker(options);
    await this.queue.checkOwnership(options);
    const probe = await this.probeStoreClock(options.signal);
    try {
      return await this.collect(probe.storeNowMs, probe.key, started, options, marked);
    } finally {
      await this.store.delete(probe.key).catch(() => undefined);
    }
  }

  /** A collection of a log queue (see `collectLog`). */
  private async runLog(
    started: number,
    options: StoreCallOptions & { dryRun?: boolean },
  ): Promise<CollectionResult> {
    const log = this.queue.logQueue({
      metrics: this.metrics,
      logger: this.logger,
      clock: this.clock,
    });
    // Nothing is written before the queue is known to exist.
    if (!(await log.readDescriptor(options.signal))) {
      throw new QueueNotFoundError(
        log.descriptorKey,
        `${this.store.description}: no queue at "${log.root}" (neither a log descriptor "${log.descriptorKey}" nor a manifest "${this.queue.manifestPath}"); refusing to collect (check the paths and the URL)`,
      );
    }
    const probe = await this.probeStoreClock(options.signal);
    try {
      const r = await collectLog(
        {
          log,
          storeNowMs: probe.storeNowMs,
          nowMs: this.clock.now(),
          gracePeriodMs: this.gracePeriodMs,
          dryRun: options.dryRun ?? false,
          metrics: this.metrics,
          logger: this.logger,
          isProbe: (key) => PROBE_NAME.test(key.slice(this.prefix.length)),
          probeKey: probe.key,
        },
        options,
      );
      const result: CollectionResult = {
        dryRun: options.dryRun ?? false,
        deleted: r.deleted,
        bytesDeleted: r.bytesDeleted,
        failed: [],
        kept: r.kept,
      };
      if (!result.dryRun) {
        this.metrics.increment('buffer.gc_files_deleted', r.deleted.length);
        this.metrics.increment('buffer.bytes_collected', r.bytesDeleted);
      }
      this.metrics.observe('buffer.gc_duration_seconds', (performance.now() - started) / 1000);
      this.logger.debug(
        {
          queue: this.queue.description,
          dryRun: result.dryRun,
          deleted: r.deleted.length,
          firstCommit: r.firstCommit,
        },
        'collection done',
      );
      return result;
    } finally {
      await this.store.delete(probe.key).catch(() => undefined);
    }
  }

  /** Releases what the collector opened (a store given as a URL). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsQueue) await this.queue.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private noManifest(): QueueNotFoundError {
    return new QueueNotFoundError(
      this.queue.manifestPath,
      `${this.store.description}: no manifest at "${this.queue.manifestPath}"; refusing to collect, since every batch object under "${this.prefix}" would look unreferenced (check the manifest path and the URL)`,
    );
  }

  private async collect(
    storeNowMs: number,
    probeKey: string,
    started: number,
    options: StoreCallOptions & { dryRun?: boolean },
    marked: boolean,
  ): Promise<CollectionResult> {
    const snapshot = await this.manifest.read(options.signal);
    if (snapshot.version === undefined) throw this.noManifest();
    const { entries, nextSequence } = snapshot.manifest;
    if (entries.length > 0 && !entries.some((e) => e.location.startsWith(this.prefix))) {
      throw new InvalidArgumentError(
        `${this.store.description}: the manifest "${this.queue.manifestPath}" references no batch under "${this.prefix}" (its batches are under "${entries[0]?.location.replace(/[^/]*$/, '')}"); refusing to collect: the data prefix does not go with this manifest`,
      );
    }
    // Without a marker, only a manifest that references batches under the prefix proves
    // the prefix is its own: then claim it; else collect nothing (it could be another
    // queue's backlog under a prefix given by mistake).
    let provenOwner = marked;
    if (!marked && entries.some((e) => e.location.startsWith(this.prefix))) {
      if (!(options.dryRun ?? false)) await this.queue.checkOwnership({ ...options, claim: true });
      provenOwner = true;
    }
    if (!provenOwner) {
      this.logger.warn(
        { queue: this.queue.description },
        'collection: the data prefix has no marker naming its manifest and the manifest references nothing under it; collecting nothing until a producer of this queue writes the marker',
      );
    }
    const context: CollectionContext = {
      prefix: this.prefix,
      referenced: new Set(entries.map((e) => e.location)),
      // A manifest that never had an entry is the queue of no batch here: nothing is
      // older than its oldest batch, so nothing is collected.
      oldestReferencedMs:
        nextSequence === 0 || !provenOwner ? -Infinity : oldestUlidTime(entries, this.prefix),
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
    const staleProbes: string[] = [];
    for await (const meta of this.store.list(this.prefix, options)) {
      const state = classifyBatchObject(meta, context);
      if (state === 'foreign') {
        // Probes of collectors that died before deleting theirs.
        const name = meta.key.slice(this.prefix.length);
        if (
          PROBE_NAME.test(name) &&
          meta.key !== probeKey &&
          storeNowMs - meta.lastModified.getTime() >= this.gracePeriodMs
        )
          staleProbes.push(meta.key);
        continue;
      }
      if (state !== 'collectable') {
        result.kept++;
        continue;
      }
      result.deleted.push(meta.key);
      result.bytesDeleted += meta.size;
    }
    if (!result.dryRun && staleProbes.length > 0) {
      await this.store.deleteMany(staleProbes, options).catch(() => undefined);
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
        this.logger.warn(
          { queue: this.queue.description, objects: result.failed.length, error: String(e) },
          'collection: deleting failed',
        );
        throw e;
      }
    }
    this.metrics.observe('buffer.gc_duration_seconds', (performance.now() - started) / 1000);
    this.logger.debug(
      {
        queue: this.queue.description,
        dryRun: result.dryRun,
        deleted: result.deleted.length,
        bytesDeleted: result.bytesDeleted,
        kept: result.kept,
      },
      'collection done',
    );
    return result;
  }

  /**
   * Writes a fresh probe object and returns its key and the last-modified
   * time the store gave it, as listed. Fresh: an object written once, so its
   * time is the store's now, whatever time an earlier object was given.
   */
  private async probeStoreClock(
    signal: AbortSignal | undefined,
  ): Promise<{ key: string; storeNowMs: number }> {
    const key = `${this.prefix}${CLOCK_PROBE_PREFIX}${randomUUID()}`;
    await this.store.put(key, new TextEncoder().encode(String(this.clock.now())), {
      mode: 'create',
      signal,
    });
    // The time is read from a listing, as the batches' are: S3 servers list
    // times to the millisecond but HEAD them to the second.
    for await (const meta of this.store.list(key, { signal })) {
      if (meta.key === key) return { key, storeNowMs: meta.lastModified.getTime() };
    }
    return { key, storeNowMs: (await this.store.head(key, { signal })).lastModified.getTime() };
  }
}

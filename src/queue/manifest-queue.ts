import { sleep, systemClock, type Clock } from '../clock.ts';
import {
  CorruptDataError,
  FencedError,
  NotFoundError,
  OutcomeUnknownError,
  PreconditionFailedError,
  StorageError,
} from '../errors.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { backoffMs, RETRY_DEFAULTS } from '../retry.ts';
import {
  decodeManifest,
  emptyManifest,
  encodeManifest,
  type Manifest,
  type ManifestEntry,
} from '../format/manifest.ts';
import type { Metrics } from '../metrics.ts';
import type { ObjectStore } from '../store/object-store.ts';

/** A manifest as read, with the version a conditional write must name. */
export interface ManifestSnapshot {
  manifest: Manifest;
  /** Undefined when the manifest object does not exist yet. */
  version: string | undefined;
  /** Size of the stored object in bytes (0 when absent). */
  sizeBytes: number;
  /** When the store last wrote the manifest; undefined when absent. */
  lastModified: Date | undefined;
}

/** An entry to append; its sequence is assigned by the append. */
export type NewEntry = Omit<ManifestEntry, 'sequence'>;

/** Options of {@link ManifestQueue}. */
export interface ManifestQueueOptions {
  store: ObjectStore;
  manifestPath: string;
  metrics: Metrics;
  logger?: Logger;
  clock?: Clock;
  /** Ceiling of the first conflict backoff, in ms. @default 5 */
  conflictBaseDelayMs?: number;
  /**
   * Ceiling of any conflict backoff, in ms: short, so a writer that keeps
   * losing the race is not left asleep while the others append. @default 50
   */
  conflictMaxDelayMs?: number;
  /**
   * Time limit of one change with all its re-reads after lost races, in ms.
   * @default 120000 (the retry policy's deadline)
   */
  deadlineMs?: number;
}

/** What a change function asks for: write this manifest, or nothing left to do. */
type Change = { write: Manifest } | { done: true };
/** How the previous attempt of a change ended. */
type Previous = 'none' | 'conflict' | 'unknown';

/**
 * The queue manifest in object storage: read it, and change it with
 * conditional writes (create when absent, else ifMatch the version read).
 *
 * Every change is expressed as a function of the current manifest that says
 * whether there is still something to do. That makes each operation
 * idempotent: after a conflict or an unknown outcome the manifest is read
 * again and the function sees whether the earlier attempt landed. Those
 * re-reads are the protocol, not retries of a failure: a storage error
 * (which the store has already retried by its policy) ends the change.
 */
export class ManifestQueue {
  readonly store: ObjectStore;
  readonly manifestPath: string;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly backoff: { baseDelayMs: number; maxDelayMs: number };
  private readonly deadlineMs: number;

  constructor(options: ManifestQueueOptions) {
    this.store = options.store;
    this.manifestPath = options.manifestPath;
    this.metrics = options.metrics;
    this.logger = options.logger ?? silentLogger;
    this.clock = options.clock ?? systemClock;
    this.backoff = {
      baseDelayMs: options.conflictBaseDelayMs ?? 5,
      maxDelayMs: options.conflictMaxDelayMs ?? 50,
    };
    this.deadlineMs = options.deadlineMs ?? RETRY_DEFAULTS.deadlineMs;
  }

  /** Reads and decodes the manifest; an absent manifest is an empty queue. */
  async read(signal?: AbortSignal): Promise<ManifestSnapshot> {
    try {
      const { body, version, lastModified } = await this.store.get(this.manifestPath, { signal });
      return {
        manifest: decodeManifest(body, this.manifestPath),
        version,
        sizeBytes: body.byteLength,
        lastModified,
      };
    } catch (e) {
      if (e instanceof NotFoundError)
        return {
          manifest: emptyManifest(),
          version: undefined,
          sizeBytes: 0,
          lastModified: undefined,
        };
      throw e;
    }
  }

  /**
   * Applies `change` until it reports nothing left to do. Returns the
   * snapshot of the manifest as this call left (or found) it.
   */
  async update(
    role: 'producer' | 'consumer',
    change: (current: Manifest, previous: Previous) => Change,
    signal?: AbortSignal,
  ): Promise<{ manifest: Manifest; writes: number }> {
    const started = this.clock.now();
    let writes = 0;
    let previous: Previous = 'none';
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      let snapshot: ManifestSnapshot;
      try {
        snapshot = await this.read(signal);
      } catch (e) {
        // After a write whose outcome is unknown, a failed re-read leaves it unknown:
        // a plain storage error would invite a retry that may append twice.
        if (previous === 'unknown') {
          throw new OutcomeUnknownError(
            this.manifestPath,
            `${this.manifestPath}: a ${role} write's outcome is unknown and the manifest could not be read back to tell (${(e as Error).message}); re-read before deciding`,
            e,
          );
        }
        throw e;
      }
      const next = change(snapshot.manifest, previous);
      if ('done' in next) return { manifest: snapshot.manifest, writes };
      try {
        const body = encodeManifest(next.write);
        await this.store.put(this.manifestPath, body, {
          mode: snapshot.version === undefined ? 'create' : { ifMatch: snapshot.version },
          signal,
        });
        writes++;
        this.metrics.increment('buffer.manifest_writes', 1, { role });
        this.metrics.increment('buffer.bytes_written', body.byteLength, { role });
        return { manifest: next.write, writes };
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
        // A lost race (another writer got there first), or a write that may or may not
        // have landed: the next read tells which, and the change function decides.
        previous = e instanceof PreconditionFailedError ? 'conflict' : 'unknown';
        if (previous === 'conflict')
          this.metrics.increment('buffer.manifest_conflicts', 1, { role });
        const wait = previous === 'conflict' ? backoffMs(Math.min(attempt, 16), this.backoff) : 0;
        if (this.clock.now() + wait - started >= this.deadlineMs) {
          if (previous === 'unknown') {
            throw new OutcomeUnknownError(
              this.manifestPath,
              `${this.manifestPath}: a ${role} write's outcome is unknown and the deadline (${this.deadlineMs} ms) passed before a re-read could tell; re-read before deciding`,
              e,
            );
          }
          throw new StorageError(
            `${this.manifestPath}: a ${role} change did not land in ${this.deadlineMs} ms (${attempt} attempts, the last one ${previous === 'conflict' ? 'lost a race to another writer' : 'had an unknown outcome'}); the store is too contended or too slow`,
            { retriable: true, cause: e },
          );
        }
        this.logger.debug(
          { manifest: this.manifestPath, role, attempt, outcome: previous },
          previous === 'conflict'
            ? 'manifest write lost a race; re-reading'
            : 'manifest write outcome unknown; re-reading',
        );
        await sleep(wait, { signal, clock: this.clock });
      }
    }
  }

  /**
   * Appends entries in order, once each: entries whose location is already
   * in the manifest (an earlier attempt landed) are not appended again.
   * Returns the sequence of every entry, in the order given.
   */
  async append(entries: readonly NewEntry[], signal?: AbortSignal): Promise<number[]> {
    const wanted = new Set(entries.map((e) => e.location));
    let sequences: number[] = [];
    // First sequence of the last write attempted, and of one whose outcome is still unknown.
    let attemptedBase = -1;
    let unknownBase: number | undefined;
    await this.update(
      'producer',
      (m, previous) => {
        if (previous === 'unknown') unknownBase = attemptedBase;
        const present = new Map<string, number>();
        // Only the tail can hold our entries: appends are at the end, dequeues cut the head.
        for (let i = m.entries.length - 1; i >= 0 && present.size < wanted.size; i--) {
          const e = m.entries[i] as ManifestEntry;
          if (wanted.has(e.location)) present.set(e.location, e.sequence);
        }
        if (present.size === entries.length) {
          sequences = entries.map((e) => present.get(e.location) as number);
          return { done: true };
        }
        if (present.size > 0) {
          // One write carries all of them, so a partial landing means the manifest was edited by hand.
          throw new CorruptDataError(
            `${this.manifestPath}: only some of the locations of one append are present; refusing to append the rest`,
            this.manifestPath,
          );
        }
        if (unknownBase !== undefined) {
          // Our locations are absent. That proves the write did not land only if nothing
          // was appended since, or others' entries hold the sequences we would have had;
          // if those sequences were appended and already dequeued, appending again could
          // deliver the batch twice.
          const end = unknownBase + entries.length;
          const heldByOthers = m.entries.some(
            (e) => e.sequence >= unknownBase! && e.sequence < end,
          );
          if (m.nextSequence !== unknownBase && !heldByOthers) {
            throw new OutcomeUnknownError(
              this.manifestPath,
              `${this.manifestPath}: an append of ${entries.length} entries may have landed and already been dequeued (sequences ${unknownBase}..${end - 1} are gone); not appending again, to avoid delivering it twice`,
            );
          }
          unknownBase = undefined;
        }
        attemptedBase = m.nextSequence;
        const appended = entries.map((e, i) => ({ ...e, sequence: m.nextSequence + i }));
        sequences = appended.map((e) => e.sequence);
        return {
          write: {
            epoch: m.epoch,
            nextSequence: m.nextSequence + entries.length,
            entries: [...m.entries, ...appended],
          },
        };
      },
      signal,
    );
    return sequences;
  }

  /**
   * Raises the epoch by one and returns the new epoch: every consumer holding
   * an older epoch is fenced from then on.
   */
  async fence(signal?: AbortSignal): Promise<number> {
    let epoch = 0;
    // Always raise above what is read, even after an unknown outcome: an epoch equal to the
    // one we tried may be another consumer's, and skipping a number is harmless.
    await this.update(
      'consumer',
      (m) => {
        epoch = m.epoch + 1;
        return { write: { ...m, epoch } };
      },
      signal,
    );
    return epoch;
  }

  /**
   * Removes every entry with sequence <= `through`, as the consumer holding
   * `epoch`. Throws {@link FencedError} if the stored epoch is another.
   */
  async dequeue(through: number, epoch: number, signal?: AbortSignal): Promise<Manifest> {
    const { manifest } = await this.update(
      'consumer',
      (m) => {
        if (m.epoch !== epoch) throw fenced(this.manifestPath, epoch, m.epoch);
        const first = m.entries.findIndex((e) => e.sequence > through);
        const keep = first < 0 ? [] : m.entries.slice(first);
        if (keep.length === m.entries.length) return { done: true };
        return { write: { ...m, entries: keep } };
      },
      signal,
    );
    return manifest;
  }
}

/** The error for a consumer whose epoch was superseded. */
export function fenced(manifestPath: string, mine: number, stored: number): FencedError {
  return new FencedError(
    `${manifestPath}: this consumer holds epoch ${mine} but the manifest is at epoch ${stored}: a newer consumer took over; open a new Consumer to continue`,
  );
}

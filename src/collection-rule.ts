/**
 * What the collector may delete: one rule, shared by the collector and by
 * the statistics that report what a collection would take.
 */
import { isUlid, ulidTimeMs } from './format/ulid.ts';
import type { ObjectMeta } from './store/object-store.ts';

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

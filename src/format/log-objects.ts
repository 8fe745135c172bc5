/**
 * The small control objects of the log layout, version 1, as UTF-8 JSON
 * (see docs/log-layout.md): the queue descriptor, a subscription's cursor,
 * the collection boundary and the head hint. Each carries a `format` tag
 * and a `version`; a reader refuses other tags, newer versions and
 * malformed fields with a {@link CorruptDataError} naming the object.
 */
import { CorruptDataError, InvalidArgumentError } from '../errors.ts';

/** A position: entry `index` of the batch with `sequence`. */
export interface Position {
  sequence: number;
  index: number;
}

/** Retention of a queue; both optional (absent: keep until every subscription acknowledged). */
export interface Retention {
  /** Batches whose commit is older than this, by the store's clock, expire. */
  maxAgeMs?: number;
  /** Oldest batches expire while the retained batch objects exceed this many bytes. */
  maxBytes?: number;
}

/** `{root}/queue`: what says "a log queue lives here", with its configuration. */
export interface QueueDescriptor {
  createdAtMs: number;
  retention: Retention;
}

/** `{root}/subscriptions/{name}`: one subscription's cursor. */
export interface Cursor {
  /** The subscription's name. */
  subscription: string;
  /** Raised by each consumer that takes the subscription over; older holders are fenced. */
  epoch: number;
  /** The first position not acknowledged. */
  next: Position;
  /** A commit at or before the one holding `next.sequence`, to start reading from. */
  commit: number;
  createdAtMs: number;
  updatedAtMs: number;
  /** Who wrote the cursor last (an instance id). */
  holder: string;
  /** The last range retention took from under this subscription, once reported. */
  lastLoss?: { firstSequence: number; lastSequence: number; reportedAtMs: number };
  /**
   * Shared readers (consumers opened with `shared`), by instance id: each
   * one's own position (the first entry it has not finished) and when it
   * wrote it, by its clock. `next` is the lowest of them (never moving back).
   */
  readers?: Record<string, SharedReader>;
}

/** A shared reader's progress in a cursor. */
export interface SharedReader {
  next: Position;
  updatedAtMs: number;
  /** Random per join: a second reader joining under the same id replaces the first, which is then fenced. */
  session: string;
}

/** A map of shared readers without a prototype: any id, "__proto__" included, is a plain key. */
export function readerMap(
  entries: Iterable<[string, SharedReader]> = [],
): Record<string, SharedReader> {
  const map = Object.create(null) as Record<string, SharedReader>;
  for (const [id, r] of entries) map[id] = r;
  return map;
}

/** Most shared readers one cursor holds. */
export const MAX_SHARED_READERS = 256;

/** `{root}/boundary`: everything below it may already be deleted; it only moves up. */
export interface Boundary {
  /** The first commit kept. */
  firstCommit: number;
  /** The first sequence of that commit. */
  firstSequence: number;
  /**
   * Sequences below this were deleted by retention, acknowledged or not: a
   * cursor below it lost data (a `DataLossError`). A cursor below the
   * boundary but not below this was created after the collection that moved
   * the boundary, and simply starts at the boundary.
   */
  expiredBelow: number;
  updatedAtMs: number;
}

/** `{root}/head`: an advisory hint of the newest commit, to spare cold starts a long probe. */
export interface HeadHint {
  commit: number;
  /** Sequence after that commit's last batch. */
  endSequence: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

function encodeObject(format: string, body: object): Uint8Array {
  return enc.encode(`${JSON.stringify({ format, version: 1, ...body })}\n`);
}

function decodeObject(bytes: Uint8Array, what: string, format: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(dec.decode(bytes));
  } catch (e) {
    throw new CorruptDataError(`${what}: not valid UTF-8 JSON (${(e as Error).message})`, what, e);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new CorruptDataError(`${what}: expected a JSON object`, what);
  }
  const o = value as Record<string, unknown>;
  if (o.format !== format) {
    throw new CorruptDataError(
      `${what}: expected format "${format}", got ${JSON.stringify(o.format)}`,
      what,
    );
  }
  if (o.version !== 1) {
    throw new CorruptDataError(
      `${what}: ${format} version ${JSON.stringify(o.version)}; this reader knows version 1 (written by a newer Spillway?)`,
      what,
    );
  }
  return o;
}

function int(o: Record<string, unknown>, field: string, what: string, min = 0): number {
  const v = o[field];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new CorruptDataError(
      `${what}: ${field} must be an integer >= ${min}, got ${JSON.stringify(v)}`,
      what,
    );
  }
  return v;
}

function str(o: Record<string, unknown>, field: string, what: string): string {
  const v = o[field];
  if (typeof v !== 'string') {
    throw new CorruptDataError(
      `${what}: ${field} must be a string, got ${JSON.stringify(v)}`,
      what,
    );
  }
  return v;
}

function obj(o: Record<string, unknown>, field: string, what: string): Record<string, unknown> {
  const v = o[field];
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new CorruptDataError(`${what}: ${field} must be an object`, what);
  }
  return v as Record<string, unknown>;
}

/** Encodes the queue descriptor. */
export function encodeQueueDescriptor(d: QueueDescriptor): Uint8Array {
  return encodeObject('spillway-log', {
    createdAtMs: d.createdAtMs,
    retention: {
      ...(d.retention.maxAgeMs !== undefined ? { maxAgeMs: d.retention.maxAgeMs } : {}),
      ...(d.retention.maxBytes !== undefined ? { maxBytes: d.retention.maxBytes } : {}),
    },
  });
}

/** Decodes the queue descriptor. @throws {CorruptDataError} */
export function decodeQueueDescriptor(bytes: Uint8Array, what: string): QueueDescriptor {
  const o = decodeObject(bytes, what, 'spillway-log');
  const r = obj(o, 'retention', what);
  const retention: Retention = {};
  if (r.maxAgeMs !== undefined) retention.maxAgeMs = int(r, 'maxAgeMs', `${what} retention`, 1);
  if (r.maxBytes !== undefined) retention.maxBytes = int(r, 'maxBytes', `${what} retention`, 1);
  return { createdAtMs: int(o, 'createdAtMs', what), retention };
}

/** Encodes a cursor. */
export function encodeCursor(c: Cursor): Uint8Array {
  // What a reader would refuse is never written.
  for (const [field, v] of [
    ['epoch', c.epoch],
    ['next.sequence', c.next.sequence],
    ['next.index', c.next.index],
    ['commit', c.commit],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new InvalidArgumentError(
        `cursor of "${c.subscription}": ${field} must be an integer from 0 to 2^53 - 1, got ${String(v)}`,
      );
    }
  }
  return encodeObject('spillway-cursor', {
    subscription: c.subscription,
    epoch: c.epoch,
    next: { sequence: c.next.sequence, index: c.next.index },
    commit: c.commit,
    createdAtMs: c.createdAtMs,
    updatedAtMs: c.updatedAtMs,
    holder: c.holder,
    ...(c.lastLoss ? { lastLoss: c.lastLoss } : {}),
    ...(c.readers && Object.keys(c.readers).length > 0
      ? {
          readers: Object.fromEntries(
            Object.entries(c.readers).map(([id, r]) => [
              id,
              {
                next: { sequence: r.next.sequence, index: r.next.index },
                updatedAtMs: r.updatedAtMs,
                session: r.session,
              },
            ]),
          ),
        }
      : {}),
  });
}

/** Decodes a cursor. @throws {CorruptDataError} */
export function decodeCursor(bytes: Uint8Array, what: string): Cursor {
  const o = decodeObject(bytes, what, 'spillway-cursor');
  const next = obj(o, 'next', what);
  const cursor: Cursor = {
    subscription: str(o, 'subscription', what),
    epoch: int(o, 'epoch', what),
    next: {
      sequence: int(next, 'sequence', `${what} next`),
      index: int(next, 'index', `${what} next`),
    },
    commit: int(o, 'commit', what),
    createdAtMs: int(o, 'createdAtMs', what),
    updatedAtMs: int(o, 'updatedAtMs', what),
    holder: str(o, 'holder', what),
  };
  if (o.lastLoss !== undefined) {
    const l = obj(o, 'lastLoss', what);
    cursor.lastLoss = {
      firstSequence: int(l, 'firstSequence', `${what} lastLoss`),
      lastSequence: int(l, 'lastSequence', `${what} lastLoss`),
      reportedAtMs: int(l, 'reportedAtMs', `${what} lastLoss`),
    };
  }
  if (o.readers !== undefined) {
    const readers = obj(o, 'readers', what);
    const ids = Object.keys(readers);
    if (ids.length > MAX_SHARED_READERS) {
      throw new CorruptDataError(
        `${what}: readers holds ${ids.length} shared readers, more than ${MAX_SHARED_READERS}`,
        what,
      );
    }
    // Without a prototype: an id such as "__proto__" stays a plain key.
    cursor.readers = readerMap(
      ids.map((id): [string, SharedReader] => {
        const at = `${what} reader ${JSON.stringify(id)}`;
        if (!/^[\x20-\x7e]{1,200}$/.test(id)) {
          throw new CorruptDataError(`${at}: an id must be 1-200 printable ASCII characters`, what);
        }
        const r = obj(readers, id, `${what} readers`);
        const n = obj(r, 'next', at);
        return [
          id,
          {
            next: {
              sequence: int(n, 'sequence', `${at} next`),
              index: int(n, 'index', `${at} next`),
            },
            updatedAtMs: int(r, 'updatedAtMs', at),
            session: str(r, 'session', at),
          },
        ];
      }),
    );
  }
  return cursor;
}

/** Encodes the boundary. */
export function encodeBoundary(b: Boundary): Uint8Array {
  return encodeObject('spillway-boundary', {
    firstCommit: b.firstCommit,
    firstSequence: b.firstSequence,
    expiredBelow: b.expiredBelow,
    updatedAtMs: b.updatedAtMs,
  });
}

/** Decodes the boundary. @throws {CorruptDataError} */
export function decodeBoundary(bytes: Uint8Array, what: string): Boundary {
  const o = decodeObject(bytes, what, 'spillway-boundary');
  return {
    firstCommit: int(o, 'firstCommit', what),
    firstSequence: int(o, 'firstSequence', what),
    expiredBelow: int(o, 'expiredBelow', what),
    updatedAtMs: int(o, 'updatedAtMs', what),
  };
}

/** Encodes the head hint. */
export function encodeHeadHint(h: HeadHint): Uint8Array {
  return encodeObject('spillway-head', { commit: h.commit, endSequence: h.endSequence });
}

/** Decodes the head hint. @throws {CorruptDataError} */
export function decodeHeadHint(bytes: Uint8Array, what: string): HeadHint {
  const o = decodeObject(bytes, what, 'spillway-head');
  return { commit: int(o, 'commit', what), endSequence: int(o, 'endSequence', what) };
}

/** Compares two positions: negative when `a` comes first. */
export function comparePositions(a: Position, b: Position): number {
  return a.sequence - b.sequence || a.index - b.index;
}

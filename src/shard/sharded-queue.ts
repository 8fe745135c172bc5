/**
 * A sharded queue: V vnode queues (each a log-layout queue) under one data
 * prefix, with a descriptor that records V and the routing hash, so that
 * every producer and every group routes alike (docs/scaling-out.md §2).
 */
import {
  CorruptDataError,
  InvalidArgumentError,
  NotFoundError,
  PreconditionFailedError,
  QueueNotFoundError,
} from '../errors.ts';
import { checkCallOptions, resolveOptions, type OptionSpecs } from '../options.ts';
import { Queue, QUEUE_DEFAULTS } from '../queue/queue.ts';
import { redactUrl } from '../redact.ts';
import type { ObjectStore, StoreCallOptions } from '../store/object-store.ts';
import { resolveStore, type OpenStoreOptions } from '../store/open-store.ts';
import {
  MAX_VNODE_CAPACITY,
  ROUTING_HASH,
  vnodeOf,
  vnodePrefix,
  type RoutingKey,
} from './routing.ts';

/** Format tag of the descriptor `{prefix}/sharded`. */
export const SHARDED_FORMAT = 'spillway-sharded';

/** The descriptor `{prefix}/sharded`, version 1. */
export interface ShardedDescriptor {
  /** Number of vnodes, fixed for the queue's life. */
  vnodeCapacity: number;
  /** The routing hash: `fnv1a-32` (the only one). */
  hash: string;
  /** When the queue was created, by its creator's clock. */
  createdAtMs: number;
  /** Instance id of the creator. */
  createdBy: string;
}

/** Options of {@link ShardedQueue.open}. */
export interface ShardedQueueOptions {
  /** The store, as a URL or an {@link ObjectStore}; a URL is opened here and closed by `close()`. */
  store: string | ObjectStore;
  /** Prefix of the whole sharded queue (its descriptor, vnodes and groups). @default "ingest" */
  dataPathPrefix?: string;
  /**
   * Number of vnodes. Creates the queue with it when it does not exist; an
   * existing queue must have been created with the same number (resharding
   * is not supported). Omit it to open an existing queue with whatever it
   * records.
   */
  vnodeCapacity?: number;
  /** Written as `createdBy` when this call creates the queue. @default "unknown" */
  instanceId?: string;
  /** Options of a store opened from a URL. */
  storeOptions?: OpenStoreOptions;
  /** Time of creation. @default Date.now */
  now?: () => number;
  /** Aborts the descriptor's read or creation. */
  signal?: AbortSignal;
}

const SPECS: OptionSpecs<ShardedQueueOptions> = {
  store: { kind: 'any' },
  dataPathPrefix: {
    kind: 'string',
    pattern: /^(?!\/)(?!.*\/\/)(?!.*\/$).+$/s,
    expected: 'a non-empty key prefix without a leading or trailing "/"',
  },
  vnodeCapacity: { kind: 'int', min: 1, max: MAX_VNODE_CAPACITY },
  instanceId: {
    kind: 'string',
    pattern: /^[\x20-\x7e]{1,200}$/,
    expected: 'printable ASCII, 1-200 characters',
  },
  storeOptions: { kind: 'any' },
  now: { kind: 'any' },
  signal: { kind: 'any' },
};

/**
 * The handle of a sharded queue: its store, its prefix and its descriptor.
 * Producers route with {@link vnodeOf}; each vnode is an ordinary log queue
 * ({@link vnodeQueue}) under `{prefix}/v{v:04}`.
 *
 * @example
 * const sharded = await ShardedQueue.open({ store: 'file:./q', vnodeCapacity: 32 });
 * sharded.vnodeOf('user-1'); // 7
 * await sharded.close();
 */
export class ShardedQueue {
  readonly store: ObjectStore;
  readonly dataPathPrefix: string;
  readonly descriptor: ShardedDescriptor;
  private readonly ownsStore: boolean;
  private readonly queues = new Map<number, Queue>();

  private constructor(
    store: ObjectStore,
    prefix: string,
    descriptor: ShardedDescriptor,
    owns: boolean,
  ) {
    this.store = store;
    this.dataPathPrefix = prefix;
    this.descriptor = descriptor;
    this.ownsStore = owns;
  }

  /** Number of vnodes. */
  get vnodeCapacity(): number {
    return this.descriptor.vnodeCapacity;
  }

  /** The key of the descriptor of a sharded queue under `prefix`. */
  static descriptorKey(prefix: string): string {
    return `${prefix}/sharded`;
  }

  /**
   * Opens a sharded queue, creating it (create-only) when `vnodeCapacity` is
   * given and none exists.
   *
   * @throws {InvalidArgumentError} when the stored vnode capacity differs from
   * the one given (resharding is not supported), or the prefix holds an
   * unsharded queue.
   * @throws {QueueNotFoundError} when there is none and no `vnodeCapacity` was given.
   * @throws {CorruptDataError} for a descriptor that does not decode.
   */
  static async open(options: ShardedQueueOptions): Promise<ShardedQueue> {
    const o = resolveOptions(
      'ShardedQueue',
      SPECS,
      { dataPathPrefix: QUEUE_DEFAULTS.dataPathPrefix },
      options,
    );
    const prefix = o.dataPathPrefix as string;
    const store = resolveStore(o.store, o.storeOptions);
    const owns = typeof o.store === 'string';
    try {
      const descriptor = await ensureDescriptor(store, prefix, o);
      return new ShardedQueue(store, prefix, descriptor, owns);
    } catch (e) {
      if (owns) await store.close().catch(() => undefined);
      throw e;
    }
  }

  /** Reads the descriptor under `prefix`, or undefined when there is no sharded queue there. */
  static async readDescriptor(
    store: ObjectStore,
    prefix: string,
    options: StoreCallOptions = {},
  ): Promise<ShardedDescriptor | undefined> {
    const key = ShardedQueue.descriptorKey(prefix);
    try {
      const { body } = await store.get(key, options);
      return decodeShardedDescriptor(body, key);
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  /** The vnode of `key` in this queue. */
  vnodeOf(key: RoutingKey): number {
    return vnodeOf(key, this.vnodeCapacity);
  }

  /** The prefix of vnode `v`: `{prefix}/v{v:04}`. */
  vnodePrefix(vnode: number): string {
    return vnodePrefix(this.dataPathPrefix, vnode);
  }

  /**
   * The queue of vnode `v`, a log-layout queue on this queue's store (one
   * handle per vnode, shared by every role of the process).
   */
  vnodeQueue(vnode: number): Queue {
    let q = this.queues.get(vnode);
    if (!q) {
      const p = this.vnodePrefix(vnode);
      q = Queue.open({
        store: this.store,
        dataPathPrefix: p,
        manifestPath: `${p}/manifest`,
        layout: 'log',
      });
      this.queues.set(vnode, q);
    }
    return q;
  }

  /** The store without credentials and the prefix, for messages. */
  get description(): string {
    return `${redactUrl(this.store.description)} (sharded queue ${this.dataPathPrefix}, ${this.vnodeCapacity} vnodes)`;
  }

  /** Closes the store if this handle opened it from a URL. Idempotent. */
  async close(options: StoreCallOptions = {}): Promise<void> {
    checkCallOptions('close', options, ['signal']);
    if (this.ownsStore) await this.store.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

async function ensureDescriptor(
  store: ObjectStore,
  prefix: string,
  o: ShardedQueueOptions,
): Promise<ShardedDescriptor> {
  const key = ShardedQueue.descriptorKey(prefix);
  for (let attempt = 0; ; attempt++) {
    const found = await ShardedQueue.readDescriptor(store, prefix, { signal: o.signal });
    if (found) {
      if (o.vnodeCapacity !== undefined && o.vnodeCapacity !== found.vnodeCapacity) {
        throw new InvalidArgumentError(
          `the sharded queue "${prefix}" in ${redactUrl(store.description)} has ${found.vnodeCapacity} vnodes, not ${o.vnodeCapacity}: a sharded queue keeps its vnode capacity for its life (resharding is not supported); give vnodeCapacity ${found.vnodeCapacity} (or leave it out), or use another prefix`,
        );
      }
      return found;
    }
    if (o.vnodeCapacity === undefined) {
      throw new QueueNotFoundError(
        key,
        `no sharded queue at "${prefix}" in ${redactUrl(store.description)} (no descriptor "${key}"): give the vnode capacity to create one, or check the URL and the prefix`,
      );
    }
    if (attempt > 0) {
      throw new CorruptDataError(
        `${key}: created by another writer and then gone; expected it to stay`,
        key,
      );
    }
    // A plain queue already under the prefix would have the vnodes' folders among its objects.
    const plain = await store.head(`${prefix}/queue`, { signal: o.signal }).then(
      () => true,
      (e: unknown) => {
        if (e instanceof NotFoundError) return false;
        throw e;
      },
    );
    if (plain) {
      throw new InvalidArgumentError(
        `the prefix "${prefix}" in ${redactUrl(store.description)} holds an unsharded log queue ("${prefix}/queue"): a sharded queue is not created over it; use another prefix`,
      );
    }
    const descriptor: ShardedDescriptor = {
      vnodeCapacity: o.vnodeCapacity,
      hash: ROUTING_HASH,
      createdAtMs: (o.now ?? Date.now)(),
      createdBy: o.instanceId ?? 'unknown',
    };
    try {
      await store.put(key, encodeShardedDescriptor(descriptor), {
        mode: 'create',
        signal: o.signal,
      });
      return descriptor;
    } catch (e) {
      // Another process created it first: use theirs (checked on the next round).
      if (!(e instanceof PreconditionFailedError)) throw e;
    }
  }
}

/** The descriptor as stored: compact JSON, fields in this order, one newline. */
export function encodeShardedDescriptor(d: ShardedDescriptor): Uint8Array {
  return new TextEncoder().encode(
    `${JSON.stringify({ format: SHARDED_FORMAT, version: 1, vnodeCapacity: d.vnodeCapacity, hash: d.hash, createdAtMs: d.createdAtMs, createdBy: d.createdBy })}\n`,
  );
}

/** Decodes a descriptor, refusing another format, version, hash or a bad capacity. */
export function decodeShardedDescriptor(body: Uint8Array, key: string): ShardedDescriptor {
  const v = parseJsonObject(body, key);
  if (v.format !== SHARDED_FORMAT || v.version !== 1) {
    throw new CorruptDataError(
      `${key}: expected format "${SHARDED_FORMAT}" version 1, got format ${JSON.stringify(v.format)} version ${JSON.stringify(v.version)}`,
    );
  }
  const cap = v.vnodeCapacity;
  if (
    typeof cap !== 'number' ||
    !Number.isSafeInteger(cap) ||
    cap < 1 ||
    cap > MAX_VNODE_CAPACITY
  ) {
    throw new CorruptDataError(
      `${key}: vnodeCapacity must be an integer from 1 to ${MAX_VNODE_CAPACITY}, got ${JSON.stringify(cap)}`,
    );
  }
  if (v.hash !== ROUTING_HASH) {
    throw new CorruptDataError(
      `${key}: hash ${JSON.stringify(v.hash)} is not known; this version routes with "${ROUTING_HASH}" only`,
    );
  }
  return {
    vnodeCapacity: cap,
    hash: v.hash,
    createdAtMs: typeof v.createdAtMs === 'number' ? v.createdAtMs : 0,
    createdBy: typeof v.createdBy === 'string' ? v.createdBy : 'unknown',
  };
}

/** Parses one JSON object, or throws a CorruptDataError naming `key`. */
export function parseJsonObject(body: Uint8Array, key: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch (e) {
    throw new CorruptDataError(`${key}: not UTF-8 JSON (${String(e)})`, key, e);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new CorruptDataError(`${key}: expected a JSON object`);
  }
  return v as Record<string, unknown>;
}

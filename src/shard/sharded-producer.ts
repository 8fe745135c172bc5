/**
 * Produces into a sharded queue: each call goes, by its key, to one vnode
 * queue, through one {@link Producer} per vnode created on first use. The
 * vnode producers of one ShardedProducer share one memory budget.
 */
import { randomUUID } from 'node:crypto';
import { asError, ClosedError, InvalidArgumentError } from '../errors.ts';
import { checkCallOptions, resolveOptions, type OptionSpecs } from '../options.ts';
import {
  Producer,
  PRODUCER_DEFAULTS,
  type DurableResult,
  type ProducerOptions,
} from '../producer/producer.ts';
import { MemoryStore } from '../store/memory-store.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { ByteBudget } from './byte-budget.ts';
import { keyBytes, type RoutingKey } from './routing.ts';
import { ShardedQueue } from './sharded-queue.ts';

/** Producer options a ShardedProducer passes to each vnode producer. */
type VnodeProducerOptions = Pick<
  ProducerOptions,
  | 'flushIntervalMs'
  | 'flushSizeBytes'
  | 'maxBufferedInputs'
  | 'compression'
  | 'maxConcurrentUploads'
  | 'maxBatchBytes'
  | 'inlineMaxBytes'
  | 'metrics'
  | 'logger'
  | 'clock'
>;

/** Options of {@link ShardedProducer.open}. */
export interface ShardedProducerOptions extends VnodeProducerOptions {
  /** The sharded queue, opened; else give `store` (and `dataPathPrefix`, `vnodeCapacity`). */
  queue?: ShardedQueue;
  /** The store, as a URL or an {@link ObjectStore}, when `queue` is not given. */
  store?: string | ObjectStore;
  /** See {@link ShardedQueueOptions.dataPathPrefix}. @default "ingest" */
  dataPathPrefix?: string;
  /**
   * Number of vnodes: creates the sharded queue with it, or must equal the
   * one it was created with. Required to create one; optional to open one.
   */
  vnodeCapacity?: number;
  /**
   * This process's id, written by every vnode producer in its trailers and
   * as the writer of its commits. @default a random UUID
   */
  instanceId?: string;
  /**
   * Bytes (counted as for `Producer`: entries and metadata, plus 512 per
   * call and 96 per entry) held until durable, by all vnode producers
   * together; `produce()` waits for room beyond it. @default 268435456 (256 MiB)
   */
  maxBufferedBytes?: number;
}

const SPECS: OptionSpecs<ShardedProducerOptions> = {
  queue: { kind: 'any' },
  store: { kind: 'any' },
  dataPathPrefix: { kind: 'any' },
  vnodeCapacity: { kind: 'any' },
  instanceId: {
    kind: 'string',
    pattern: /^[\x20-\x7e]{1,200}$/,
    expected: 'printable ASCII, 1-200 characters',
  },
  maxBufferedBytes: { kind: 'int', min: 1 },
  flushIntervalMs: { kind: 'any' },
  flushSizeBytes: { kind: 'any' },
  maxBufferedInputs: { kind: 'any' },
  compression: { kind: 'any' },
  maxConcurrentUploads: { kind: 'any' },
  maxBatchBytes: { kind: 'any' },
  inlineMaxBytes: { kind: 'any' },
  metrics: { kind: 'any' },
  logger: { kind: 'any' },
  clock: { kind: 'any' },
};

/** Where a call's entries landed: its vnode and, in that vnode's queue, its batch. */
export interface ShardedDurableResult extends DurableResult {
  vnode: number;
}

/** What {@link ShardedProducer.produce} returns once the entries are buffered. */
export interface ShardedProduceHandle {
  /** The vnode the key routed to. */
  readonly vnode: number;
  /** Resolves once the entries are durable in the vnode's queue; rejects with the cause otherwise. */
  readonly durable: Promise<ShardedDurableResult>;
}

/** Options of one {@link ShardedProducer.produce} call. */
export interface ShardedProduceOptions {
  /** Opaque bytes kept with the call's entries (one metadata item). */
  metadata?: Uint8Array;
  /** Aborts the wait for buffer room. */
  signal?: AbortSignal;
}

const CALL_OVERHEAD_BYTES = 512;
/** A store nothing is written to: vnode producer options are checked against it once. */
const OPTIONS_CHECK_STORE = new MemoryStore('spillway-sharded-producer-options-check');
const ENTRY_OVERHEAD_BYTES = 96;

/**
 * Routes `produce(key, entries)` calls to the vnode queues of a sharded
 * queue. Calls with one key go to one vnode producer in call order, so
 * per-key order is that of the `produce()` calls. One byte budget,
 * `maxBufferedBytes`, covers every vnode producer: a call takes its bytes
 * before it reaches its vnode's producer and gives them back once durable.
 *
 * @example
 * const producer = await ShardedProducer.open({ store: 'file:./q', vnodeCapacity: 32 });
 * const { vnode, durable } = await producer.produce('user-1', [bytes]);
 * await durable; // { vnode, sequence, location }
 * await producer.close();
 */
export class ShardedProducer {
  readonly queue: ShardedQueue;
  readonly instanceId: string;
  private readonly ownsQueue: boolean;
  private readonly budget: ByteBudget;
  private readonly vnodeOptions: VnodeProducerOptions;
  private readonly producers = new Map<number, Producer>();
  /** Per vnode, the admission of the last call: the next one waits for it (call order). */
  private readonly admissions = new Map<number, Promise<void>>();
  private closing: Promise<void> | undefined;
  private destroyed: Error | undefined;

  private constructor(queue: ShardedQueue, owns: boolean, o: ShardedProducerOptions) {
    this.queue = queue;
    this.ownsQueue = owns;
    this.instanceId = o.instanceId ?? randomUUID();
    const maxBufferedBytes = o.maxBufferedBytes ?? PRODUCER_DEFAULTS.maxBufferedBytes;
    this.budget = new ByteBudget(maxBufferedBytes);
    const {
      queue: _q,
      store: _s,
      dataPathPrefix: _d,
      vnodeCapacity: _v,
      instanceId: _i,
      maxBufferedBytes: _m,
      ...rest
    } = o;
    this.vnodeOptions = rest;
  }

  /**
   * Opens (creating it if `vnodeCapacity` is given and none exists) the
   * sharded queue and a producer for it.
   *
   * @throws {InvalidArgumentError} for bad options, or a vnode capacity other than the queue's.
   * @throws {QueueNotFoundError} when there is no sharded queue and no `vnodeCapacity`.
   */
  static async open(options: ShardedProducerOptions): Promise<ShardedProducer> {
    const o = resolveOptions('ShardedProducer', SPECS, {}, options);
    if ((o.queue === undefined) === (o.store === undefined)) {
      throw new InvalidArgumentError(
        'ShardedProducer: give either queue (a ShardedQueue) or store, exactly one',
      );
    }
    // Check the vnode producers' options once, before anything is written.
    await new Producer({ store: OPTIONS_CHECK_STORE, ...pickVnodeOptions(o) }).destroy();
    if (o.queue) return new ShardedProducer(o.queue, false, o);
    const queue = await ShardedQueue.open({
      store: o.store as string | ObjectStore,
      ...(o.dataPathPrefix !== undefined ? { dataPathPrefix: o.dataPathPrefix } : {}),
      ...(o.vnodeCapacity !== undefined ? { vnodeCapacity: o.vnodeCapacity } : {}),
      ...(o.instanceId !== undefined ? { instanceId: o.instanceId } : {}),
      ...(o.clock ? { now: () => (o.clock as NonNullable<typeof o.clock>).now() } : {}),
    });
    return new ShardedProducer(queue, true, o);
  }

  /** Number of vnodes of the queue. */
  get vnodeCapacity(): number {
    return this.queue.vnodeCapacity;
  }

  /** Bytes held by calls not yet durable, over every vnode. */
  get bufferedBytes(): number {
    return this.budget.usedBytes;
  }

  /**
   * Produces `entries` to the vnode of `key`. Resolves once they are
   * buffered (waiting for room in the shared budget); `durable` resolves
   * once they are stored in the vnode's queue.
   *
   * @throws {InvalidArgumentError} for a key that is neither a string nor
   * bytes, or a call larger than `maxBufferedBytes`, or what `Producer.produce` refuses.
   * @throws {ClosedError} after `close()` or `destroy()`.
   */
  async produce(
    key: RoutingKey,
    entries: readonly Uint8Array[],
    options: ShardedProduceOptions = {},
  ): Promise<ShardedProduceHandle> {
    if (this.closing || this.destroyed) throw new ClosedError('sharded producer');
    checkCallOptions('produce', options, ['metadata', 'signal']);
    const vnode = this.queue.vnodeOf(keyBytes(key));
    if (!Array.isArray(entries)) {
      throw new InvalidArgumentError(
        'produce(key, entries): entries must be an array of Uint8Array',
      );
    }
    let bytes = CALL_OVERHEAD_BYTES + (options.metadata?.byteLength ?? 0);
    for (const e of entries)
      bytes += ENTRY_OVERHEAD_BYTES + (e instanceof Uint8Array ? e.byteLength : 0);
    if (bytes > this.budget.capacity) {
      throw new InvalidArgumentError(
        `produce(): this call needs ${bytes} bytes of buffer but maxBufferedBytes is ${this.budget.capacity}; it can never fit`,
      );
    }
    const producer = this.producerOf(vnode);
    // Calls of one vnode are admitted one after another, in call order: a later call must
    // not reach the vnode producer before an earlier one still waiting for room.
    const before = this.admissions.get(vnode) ?? Promise.resolve();
    const admitted = before.then(async () => {
      await this.budget.acquire(bytes, options.signal);
      try {
        return await producer.produce(entries, {
          ...(options.metadata ? { metadata: options.metadata } : {}),
        });
      } catch (e) {
        this.budget.release(bytes);
        throw e;
      }
    });
    const settled = admitted.then(
      () => undefined,
      () => undefined,
    );
    this.admissions.set(vnode, settled);
    void settled.then(() => {
      if (this.admissions.get(vnode) === settled) this.admissions.delete(vnode);
    });
    const handle = await admitted;
    const durable = handle.durable.then(
      (r) => {
        this.budget.release(bytes);
        return { vnode, ...r };
      },
      (e: unknown) => {
        this.budget.release(bytes);
        throw e;
      },
    );
    durable.catch(() => undefined);
    return { vnode, durable };
  }

  /** Flushes every vnode producer now. */
  async flush(options: { signal?: AbortSignal } = {}): Promise<void> {
    checkCallOptions('flush', options, ['signal']);
    if (this.destroyed) throw this.destroyed;
    await Promise.all([...this.producers.values()].map((p) => p.flush(options)));
  }

  /** The vnode producer of `vnode`, created on first use. */
  private producerOf(vnode: number): Producer {
    let p = this.producers.get(vnode);
    if (!p) {
      p = new Producer({
        queue: this.queue.vnodeQueue(vnode),
        instanceId: this.instanceId,
        ...this.vnodeOptions,
        // The shared budget bounds memory; a vnode producer never waits on its own.
        maxBufferedBytes: this.budget.capacity,
      });
      this.producers.set(vnode, p);
    }
    return p;
  }

  /**
   * Makes everything buffered durable and closes every vnode producer (each
   * step runs even when another fails; the first failure is thrown).
   * Idempotent. With `timeoutMs`, each vnode producer's close is bounded by it.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    checkCallOptions('close', options, ['timeoutMs']);
    this.closing ??= (async () => {
      // Let calls waiting for admission reach their producers first.
      await Promise.all([...this.admissions.values()]);
      const results = await Promise.allSettled(
        [...this.producers.values()].map((p) => p.close(options)),
      );
      this.budget.rejectAll(new ClosedError('sharded producer'));
      if (this.ownsQueue) await this.queue.close().catch(() => undefined);
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw asError(failed.reason);
    })();
    return this.closing;
  }

  /** Stops at once: every vnode producer is destroyed; what was not durable rejects. Idempotent. */
  async destroy(error?: Error): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = error ?? new ClosedError('sharded producer (destroyed)');
    this.budget.rejectAll(this.destroyed);
    this.closing ??= Promise.resolve();
    await Promise.allSettled([...this.producers.values()].map((p) => p.destroy(this.destroyed)));
    if (this.ownsQueue) await this.queue.close().catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function pickVnodeOptions(o: ShardedProducerOptions): VnodeProducerOptions {
  const out: Record<string, unknown> = {};
  for (const k of [
    'flushIntervalMs',
    'flushSizeBytes',
    'maxBufferedInputs',
    'compression',
    'maxConcurrentUploads',
    'maxBatchBytes',
    'inlineMaxBytes',
  ] as const) {
    if (o[k] !== undefined) out[k] = o[k];
  }
  return out;
}

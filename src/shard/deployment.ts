/**
 * Deployment shapes: one configuration that says where a Spillway
 * application keeps its queue and how its processes share it, and builds
 * the store, producers and consumers for it (docs/scaling-out.md §1).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Clock } from '../clock.ts';
import { Consumer } from '../consumer/consumer.ts';
import { asError, InvalidArgumentError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { Producer } from '../producer/producer.ts';
import { Queue, QUEUE_DEFAULTS } from '../queue/queue.ts';
import { redactUrl } from '../redact.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { openStore } from '../store/open-store.ts';
import { ConsumerGroup, type VnodeConsumerOptions } from './consumer-group.ts';
import { checkVnode, MAX_VNODE_CAPACITY, parseVnodeList } from './routing.ts';
import { ShardedProducer, type ShardedProducerOptions } from './sharded-producer.ts';
import { ShardedQueue } from './sharded-queue.ts';

/** The three shapes. */
export type DeploymentShape = 'in-process' | 'local' | 'object-store';

/** A deployment as JSON (`Deployment.fromJSON`, `toJSON`). */
export interface DeploymentConfig {
  /** `in-process` (memory, not durable), `local` (a directory, durable on one node) or `object-store` (shared by many nodes). */
  shape: DeploymentShape;
  /** `local`: a directory path or `file://` URL; `object-store`: a store URL (`s3://`, `az://`, `gs://`, or `file://` on a disk several processes share). */
  store?: string;
  /** This process's id, written into everything it commits. Required for `object-store`. */
  instanceId?: string;
  /** Number of vnodes: the queue is sharded when given. Required for `object-store`. */
  vnodeCapacity?: number;
  /** The vnodes this instance reads (static assignment), as a list or a text such as `"0-7,12"`. */
  vnodes?: number[] | string;
  /** See `ConsumerGroupOptions.leaseTtlMs`. @default 10000 */
  leaseTtlMs?: number;
  /** Prefix of the queue in the store. @default "ingest" */
  dataPathPrefix?: string;
}

/** Options shared by the shapes. */
export interface DeploymentOptions {
  instanceId?: string;
  vnodeCapacity?: number;
  vnodes?: number[] | string;
  leaseTtlMs?: number;
  dataPathPrefix?: string;
}

/** Options of {@link Deployment.build}: what every role built gets. */
export interface BuildOptions {
  clock?: Clock;
  logger?: Logger;
  /** Options of the producers built (the instance id and the queue come from the deployment). */
  producer?: Omit<
    ShardedProducerOptions,
    'queue' | 'store' | 'dataPathPrefix' | 'vnodeCapacity' | 'instanceId' | 'clock' | 'logger'
  >;
  /** Options of the consumers built (of each vnode's consumer in a group). */
  consumer?: VnodeConsumerOptions;
}

/** What {@link Deployment.build} returns. */
export interface BuiltDeployment {
  readonly deployment: Deployment;
  /** The store every role built shares; closed by `close()`. */
  readonly store: ObjectStore;
  /** A producer: a {@link ShardedProducer} when the queue is sharded, else a {@link Producer}. */
  producer(): Promise<ShardedProducer | Producer>;
  /**
   * A consumer for `group`: a {@link ConsumerGroup} member when the queue is
   * sharded, else a {@link Consumer} of the subscription named `group`.
   */
  consumer(group: string): Promise<ConsumerGroup | Consumer>;
  /** Closes every role built (each gracefully), then the store. */
  close(): Promise<void>;
}

const SHAPES: readonly DeploymentShape[] = ['in-process', 'local', 'object-store'];
const INSTANCE_ID = /^[\x20-\x7e]{1,200}$/;

/**
 * Where the queue lives and how processes share it, in one of three shapes:
 *
 * - {@link inProcess}: a memory store; nothing survives the process
 *   (`isDurable` false). Tests, demos, a buffer in front of a slow call.
 * - {@link local}: a directory; durable on one node, shared by the
 *   processes of that node.
 * - {@link objectStore}: a bucket shared by many nodes, sharded into
 *   `vnodeCapacity` vnodes read by consumer groups; every instance names
 *   itself (`instanceId`) and may name its vnodes (`vnodes`).
 *
 * @example
 * const d = Deployment.fromEnv(); // SPILLWAY_STORE, SPILLWAY_INSTANCE_ID, SPILLWAY_VNODE_CAPACITY, SPILLWAY_VNODES
 * const built = d.build();
 * const producer = await built.producer();
 * const consumer = await built.consumer('billing');
 * await built.close();
 */
export class Deployment {
  readonly shape: DeploymentShape;
  /** The store URL (for `in-process`, a `memory://` name unique to this deployment). */
  readonly store: string;
  readonly instanceId: string;
  readonly vnodeCapacity: number | undefined;
  readonly vnodes: number[] | undefined;
  readonly leaseTtlMs: number | undefined;
  readonly dataPathPrefix: string;

  private constructor(
    shape: DeploymentShape,
    store: string,
    o: DeploymentOptions,
    instanceId: string,
  ) {
    this.shape = shape;
    this.store = store;
    this.instanceId = instanceId;
    this.dataPathPrefix = o.dataPathPrefix ?? QUEUE_DEFAULTS.dataPathPrefix;
    if (!/^(?!\/)(?!.*\/\/)(?!.*\/$).+$/s.test(this.dataPathPrefix)) {
      throw new InvalidArgumentError(
        `deployment: dataPathPrefix must be a non-empty key prefix without a leading or trailing "/", got ${JSON.stringify(this.dataPathPrefix)}`,
      );
    }
    if (o.vnodeCapacity !== undefined) {
      if (
        !Number.isSafeInteger(o.vnodeCapacity) ||
        o.vnodeCapacity < 1 ||
        o.vnodeCapacity > MAX_VNODE_CAPACITY
      ) {
        throw new InvalidArgumentError(
          `deployment: vnodeCapacity must be an integer from 1 to ${MAX_VNODE_CAPACITY}, got ${JSON.stringify(o.vnodeCapacity)}`,
        );
      }
    }
    this.vnodeCapacity = o.vnodeCapacity;
    if (o.vnodes !== undefined) {
      if (o.vnodeCapacity === undefined) {
        throw new InvalidArgumentError(
          'deployment: vnodes name vnodes of a sharded queue; give vnodeCapacity too',
        );
      }
      const list =
        typeof o.vnodes === 'string'
          ? parseVnodeList(o.vnodes, o.vnodeCapacity, 'deployment: vnodes')
          : Array.isArray(o.vnodes)
            ? o.vnodes
            : undefined;
      if (!list || list.length === 0) {
        throw new InvalidArgumentError(
          `deployment: vnodes must be a non-empty list of vnodes or a text such as "0-7,12", got ${JSON.stringify(o.vnodes)}`,
        );
      }
      for (const v of list) checkVnode(v, o.vnodeCapacity, 'deployment: vnodes');
      this.vnodes = [...new Set(list)].sort((a, b) => a - b);
    }
    if (o.leaseTtlMs !== undefined && (!Number.isSafeInteger(o.leaseTtlMs) || o.leaseTtlMs < 100)) {
      throw new InvalidArgumentError(
        `deployment: leaseTtlMs must be an integer >= 100, got ${JSON.stringify(o.leaseTtlMs)}`,
      );
    }
    this.leaseTtlMs = o.leaseTtlMs;
  }

  /** In this process only, on a memory store: nothing survives a restart. */
  static inProcess(
    options: Omit<DeploymentOptions, 'vnodes'> & { vnodes?: number[] | string } = {},
  ): Deployment {
    const id = checkId(options.instanceId) ?? randomUUID();
    return new Deployment('in-process', `memory://spillway-${randomUUID()}`, options, id);
  }

  /**
   * In a directory (a path or a `file://` URL, one file per object; or an
   * `lmdb://` URL, one LMDB file with group commit, for the highest durable
   * rate on one disk): durable on this node, shared by its processes. The
   * instance id defaults to `{hostname}-{pid}`.
   */
  static local(path: string, options: DeploymentOptions = {}): Deployment {
    if (typeof path !== 'string' || path === '') {
      throw new InvalidArgumentError(
        `deployment: local needs a directory path, got ${JSON.stringify(path)}`,
      );
    }
    const localUrl = path.startsWith('file:') || path.startsWith('lmdb:');
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(path) && !localUrl) {
      throw new InvalidArgumentError(
        `deployment: local takes a directory, a file:// or an lmdb:// URL, got ${redactUrl(path)}: use objectStore(url, ...) for a bucket`,
      );
    }
    const url = localUrl ? path : pathToFileURL(resolvePath(path)).href;
    const id = checkId(options.instanceId) ?? `${hostname()}-${process.pid}`;
    return new Deployment('local', url, options, id);
  }

  /**
   * On object storage shared by many nodes: a sharded queue of
   * `vnodeCapacity` vnodes, read by consumer groups.
   *
   * @throws {InvalidArgumentError} without an instance id or a vnode
   * capacity, for a `memory://` URL (not shared), or a vnode outside the capacity.
   */
  static objectStore(
    url: string,
    options: DeploymentOptions & { instanceId: string; vnodeCapacity: number },
  ): Deployment {
    if (typeof url !== 'string' || !/^[a-z][a-z0-9+.-]*:/i.test(url)) {
      throw new InvalidArgumentError(
        `deployment: objectStore needs a store URL (s3://, az://, gs://, file://), got ${JSON.stringify(url)}`,
      );
    }
    if (url.startsWith('memory:')) {
      throw new InvalidArgumentError(
        'deployment: a memory:// store lives in one process and cannot be shared; use inProcess() for it',
      );
    }
    if (options?.instanceId === undefined) {
      throw new InvalidArgumentError(
        `deployment: a store shared by many nodes (${redactUrl(url)}) needs an instance id for each node (instanceId, or SPILLWAY_INSTANCE_ID): it is written into every commit, lease and cursor, and names the node in the group`,
      );
    }
    if (options.vnodeCapacity === undefined) {
      throw new InvalidArgumentError(
        `deployment: a store shared by many nodes (${redactUrl(url)}) needs vnodeCapacity (or SPILLWAY_VNODE_CAPACITY), the number of vnodes its queue is sharded into; every node must give the same`,
      );
    }
    return new Deployment('object-store', url, options, checkId(options.instanceId) as string);
  }

  /**
   * A deployment from its JSON (a string or the parsed object), as
   * {@link toJSON} writes it.
   *
   * @throws {InvalidArgumentError} naming the field that is wrong or unknown.
   */
  static fromJSON(json: string | DeploymentConfig): Deployment {
    let v: unknown = json;
    if (typeof json === 'string') {
      try {
        v = JSON.parse(json);
      } catch (e) {
        throw new InvalidArgumentError(`deployment: not JSON: ${String(e)}`);
      }
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      throw new InvalidArgumentError('deployment: expected a JSON object with a "shape"');
    }
    const c = v as Record<string, unknown>;
    const known = [
      'shape',
      'store',
      'instanceId',
      'vnodeCapacity',
      'vnodes',
      'leaseTtlMs',
      'dataPathPrefix',
    ];
    for (const k of Object.keys(c)) {
      if (!known.includes(k)) {
        throw new InvalidArgumentError(
          `deployment: unknown field "${k}"; expected ${known.join(', ')}`,
        );
      }
    }
    if (!SHAPES.includes(c.shape as DeploymentShape)) {
      throw new InvalidArgumentError(
        `deployment: shape must be one of ${SHAPES.map((s) => `"${s}"`).join(', ')}, got ${JSON.stringify(c.shape)}`,
      );
    }
    const o: DeploymentOptions = {};
    if (c.instanceId !== undefined) o.instanceId = c.instanceId as string;
    if (c.vnodeCapacity !== undefined) o.vnodeCapacity = c.vnodeCapacity as number;
    if (c.vnodes !== undefined) o.vnodes = c.vnodes as number[] | string;
    if (c.leaseTtlMs !== undefined) o.leaseTtlMs = c.leaseTtlMs as number;
    if (c.dataPathPrefix !== undefined) o.dataPathPrefix = c.dataPathPrefix as string;
    if (c.shape === 'in-process') {
      if (c.store !== undefined) {
        throw new InvalidArgumentError(
          'deployment: the in-process shape takes no store (it is memory)',
        );
      }
      return Deployment.inProcess(o);
    }
    if (typeof c.store !== 'string') {
      throw new InvalidArgumentError(
        `deployment: the ${String(c.shape)} shape needs "store", a ${c.shape === 'local' ? 'directory' : 'store URL'}`,
      );
    }
    if (c.shape === 'local') return Deployment.local(c.store, o);
    return Deployment.objectStore(
      c.store,
      o as DeploymentOptions & { instanceId: string; vnodeCapacity: number },
    );
  }

  /**
   * A deployment from environment variables: `SPILLWAY_STORE` (a
   * `memory://` URL: in-process; a path, `file://` or `lmdb://` URL: local, unless
   * `SPILLWAY_VNODE_CAPACITY` and `SPILLWAY_INSTANCE_ID` are both set, then
   * object-store on that directory; anything else: object-store),
   * `SPILLWAY_INSTANCE_ID`, `SPILLWAY_VNODE_CAPACITY`, `SPILLWAY_VNODES`
   * (`0-7,12`), `SPILLWAY_LEASE_TTL_MS`, `SPILLWAY_DATA_PREFIX`.
   *
   * @throws {InvalidArgumentError} naming the variable that is missing or wrong.
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): Deployment {
    const store = env.SPILLWAY_STORE;
    if (store === undefined || store === '') {
      throw new InvalidArgumentError(
        'deployment: SPILLWAY_STORE is not set; expected memory://name, a directory, file:///dir, lmdb:///dir or a bucket URL (s3://, az://, gs://)',
      );
    }
    const int = (name: string): number | undefined => {
      const text = env[name];
      if (text === undefined || text === '') return undefined;
      if (!/^[0-9]+$/.test(text)) {
        throw new InvalidArgumentError(
          `deployment: ${name} expects an integer in decimal digits, got ${JSON.stringify(text)}`,
        );
      }
      return Number(text);
    };
    const o: DeploymentOptions = {};
    const id = env.SPILLWAY_INSTANCE_ID;
    if (id !== undefined && id !== '') o.instanceId = id;
    const cap = int('SPILLWAY_VNODE_CAPACITY');
    if (cap !== undefined) o.vnodeCapacity = cap;
    const vnodes = env.SPILLWAY_VNODES;
    if (vnodes !== undefined && vnodes !== '') {
      if (cap === undefined) {
        throw new InvalidArgumentError(
          'deployment: SPILLWAY_VNODES names vnodes of a sharded queue; set SPILLWAY_VNODE_CAPACITY too',
        );
      }
      o.vnodes = parseVnodeList(vnodes, cap, 'SPILLWAY_VNODES');
    }
    const ttl = int('SPILLWAY_LEASE_TTL_MS');
    if (ttl !== undefined) o.leaseTtlMs = ttl;
    const prefix = env.SPILLWAY_DATA_PREFIX;
    if (prefix !== undefined && prefix !== '') o.dataPathPrefix = prefix;
    if (store.startsWith('memory:')) return Deployment.inProcess(o);
    const local =
      store.startsWith('file:') || store.startsWith('lmdb:') || !/^[a-z][a-z0-9+.-]*:/i.test(store);
    if (local && !(o.instanceId !== undefined && o.vnodeCapacity !== undefined)) {
      return Deployment.local(store, o);
    }
    return Deployment.objectStore(
      local && !/^[a-z][a-z0-9+.-]*:/i.test(store) ? pathToFileURL(resolvePath(store)).href : store,
      o as DeploymentOptions & { instanceId: string; vnodeCapacity: number },
    );
  }

  /** Whether what is produced survives a restart of the process: false only in-process. */
  get isDurable(): boolean {
    return this.shape !== 'in-process';
  }

  /** Whether the queue is sharded into vnodes (a vnode capacity is given). */
  get sharded(): boolean {
    return this.vnodeCapacity !== undefined;
  }

  /** The deployment as JSON, for `fromJSON`; the store URL without credentials. */
  toJSON(): DeploymentConfig {
    return {
      shape: this.shape,
      ...(this.shape !== 'in-process' ? { store: redactUrl(this.store) } : {}),
      instanceId: this.instanceId,
      ...(this.vnodeCapacity !== undefined ? { vnodeCapacity: this.vnodeCapacity } : {}),
      ...(this.vnodes ? { vnodes: [...this.vnodes] } : {}),
      ...(this.leaseTtlMs !== undefined ? { leaseTtlMs: this.leaseTtlMs } : {}),
      dataPathPrefix: this.dataPathPrefix,
    };
  }

  /**
   * Opens the store and returns factories of the roles, each configured for
   * this deployment: the instance id on every producer and consumer, the
   * vnode capacity, the static vnodes and the lease TTL on every group.
   */
  build(options: BuildOptions = {}): BuiltDeployment {
    const store = openStore(this.store, options.logger ? { logger: options.logger } : {});
    const roles: { close(): Promise<void> }[] = [];
    let sharded: Promise<ShardedQueue> | undefined;
    const shardedQueue = (): Promise<ShardedQueue> =>
      (sharded ??= ShardedQueue.open({
        store,
        dataPathPrefix: this.dataPathPrefix,
        vnodeCapacity: this.vnodeCapacity,
        instanceId: this.instanceId,
      }));
    const plainQueue = Queue.open({
      store,
      dataPathPrefix: this.dataPathPrefix,
      manifestPath: `${this.dataPathPrefix}/manifest`,
    });
    const common = {
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.logger ? { logger: options.logger } : {}),
    };
    const built: BuiltDeployment = {
      deployment: this,
      store,
      producer: async () => {
        const p = this.sharded
          ? await ShardedProducer.open({
              queue: await shardedQueue(),
              instanceId: this.instanceId,
              ...options.producer,
              ...common,
            })
          : new Producer({
              queue: plainQueue,
              instanceId: this.instanceId,
              ...withoutBudget(options.producer),
              ...common,
            });
        roles.push(p);
        return p;
      },
      consumer: async (group: string) => {
        const c = this.sharded
          ? await ConsumerGroup.join({
              queue: await shardedQueue(),
              group,
              instanceId: this.instanceId,
              ...(this.vnodes ? { vnodes: this.vnodes } : {}),
              ...(this.leaseTtlMs !== undefined ? { leaseTtlMs: this.leaseTtlMs } : {}),
              ...(options.consumer ? { consumer: options.consumer } : {}),
              ...common,
            })
          : await Consumer.open({
              queue: plainQueue,
              subscription: group,
              instanceId: this.instanceId,
              ...options.consumer,
              ...common,
            });
        roles.push(c);
        return c;
      },
      close: async () => {
        const results = await Promise.allSettled(
          roles
            .splice(0)
            .reverse()
            .map((r) => r.close()),
        );
        await store.close();
        const failed = results.find((r) => r.status === 'rejected');
        if (failed) throw asError(failed.reason);
      },
    };
    return built;
  }
}

function checkId(id: unknown): string | undefined {
  if (id === undefined) return undefined;
  if (typeof id !== 'string' || !INSTANCE_ID.test(id)) {
    throw new InvalidArgumentError(
      `deployment: instanceId must be printable ASCII, 1-200 characters, got ${JSON.stringify(id)}`,
    );
  }
  return id;
}

function withoutBudget(o: BuildOptions['producer']): Record<string, unknown> {
  return { ...(o ?? {}) };
}

import { systemClock, type Clock } from '../clock.ts';
import { ClosedError, NotFoundError, PreconditionFailedError } from '../errors.ts';
import { compareKeys, validateKey, validatePrefix } from './keys.ts';
import type {
  GetOptions,
  GetResult,
  ObjectMeta,
  ObjectStore,
  PutOptions,
  PutResult,
  StoreCallOptions,
} from './object-store.ts';

interface StoredObject {
  body: Uint8Array;
  version: string;
  lastModified: Date;
}

/** Stores by name, shared by every MemoryStore of the process opened with that name. */
const namedStores = new Map<string, Map<string, StoredObject>>();
let nextVersion = 1;
/** Calls made, to yield to the event loop now and then. */
let calls = 0;

/**
 * An in-process {@link ObjectStore}. `memory://name` opens the same objects
 * from anywhere in the process; data lives until {@link MemoryStore.drop}
 * or the process exits (closing a store does not delete its data).
 * Bytes are copied on the way in and out, so callers may reuse their buffers.
 */
export class MemoryStore implements ObjectStore {
  readonly description: string;
  private readonly objects: Map<string, StoredObject>;
  private readonly clock: Clock;
  private closed = false;

  /**
   * @param name Stores with the same name share their objects.
   * @param options.clock where writes through this handle take their
   * last-modified time, as a server's clock would; tests pass a manual clock
   * to age objects without sleeping. @default the system clock
   */
  constructor(
    readonly name: string = `anonymous-${Math.random().toString(36).slice(2)}`,
    options: { clock?: Clock } = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.description = `memory://${name}`;
    let objects = namedStores.get(name);
    if (!objects) {
      objects = new Map();
      namedStores.set(name, objects);
    }
    this.objects = objects;
  }

  /** Deletes every object of the named store. */
  static drop(name: string): void {
    namedStores.delete(name);
  }

  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    await this.enter(key, options);
    const object = this.objects.get(key);
    if (!object)
      throw new NotFoundError(key, `${this.description}: object "${key}" does not exist`);
    const { offset = 0, length } = options.range ?? {};
    const end =
      length === undefined
        ? object.body.byteLength
        : Math.min(object.body.byteLength, offset + length);
    return {
      body: object.body.slice(Math.min(offset, end), end),
      version: object.version,
      size: object.body.byteLength,
      lastModified: object.lastModified,
    };
  }

  async head(key: string, options: StoreCallOptions = {}): Promise<ObjectMeta> {
    await this.enter(key, options);
    const object = this.objects.get(key);
    if (!object)
      throw new NotFoundError(key, `${this.description}: object "${key}" does not exist`);
    return {
      key,
      size: object.body.byteLength,
      version: object.version,
      lastModified: object.lastModified,
    };
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    await this.enter(key, options);
    const mode = options.mode ?? 'overwrite';
    const current = this.objects.get(key);
    if (mode === 'create' && current) {
      throw new PreconditionFailedError(
        key,
        `${this.description}: create "${key}": the object already exists`,
      );
    }
    if (typeof mode === 'object' && current?.version !== mode.ifMatch) {
      throw new PreconditionFailedError(
        key,
        `${this.description}: put "${key}" if version ${mode.ifMatch}: the object is ${current ? `at version ${current.version}` : 'absent'}`,
      );
    }
    const version = String(nextVersion++);
    this.objects.set(key, {
      body: Uint8Array.prototype.slice.call(body),
      version,
      lastModified: new Date(this.clock.now()),
    });
    return { version };
  }

  async *list(prefix: string, options: StoreCallOptions = {}): AsyncIterable<ObjectMeta> {
    validatePrefix(prefix, this.description);
    if (this.closed) throw new ClosedError(`store ${this.description}`);
    options.signal?.throwIfAborted();
    const keys = [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort(compareKeys);
    for (const key of keys) {
      const object = this.objects.get(key);
      if (object)
        yield {
          key,
          size: object.body.byteLength,
          version: object.version,
          lastModified: object.lastModified,
        };
    }
  }

  async delete(key: string, options: StoreCallOptions = {}): Promise<void> {
    await this.enter(key, options);
    this.objects.delete(key);
  }

  async deleteMany(keys: readonly string[], options: StoreCallOptions = {}): Promise<void> {
    for (const key of keys) await this.delete(key, options);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Checks the call and yields once, so callers see the asynchrony a real store has. */
  private async enter(key: string, options: StoreCallOptions): Promise<void> {
    validateKey(key, this.description);
    if (this.closed) throw new ClosedError(`store ${this.description}`);
    options.signal?.throwIfAborted();
    // A real store answers through the event loop; yield to it now and then, so that a
    // caller in a tight loop does not starve timers and I/O (group-commit seals, timeouts).
    if (++calls % 64 === 0) await new Promise<void>((r) => setImmediate(r));
    else await Promise.resolve();
    if (this.closed) throw new ClosedError(`store ${this.description}`);
    options.signal?.throwIfAborted();
  }
}

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ClosedError, NotFoundError, PreconditionFailedError, StorageError } from '../errors.ts';
import { validateKey, validatePrefix } from './keys.ts';
import type {
  GetOptions,
  GetResult,
  ObjectMeta,
  ObjectStore,
  PutOptions,
  PutResult,
  StoreCallOptions,
  StoreHints,
} from './object-store.ts';
import { loadOptionalSdk } from './optional-sdk.ts';

/** The file inside the store's folder that holds every object (LMDB adds `spillway.mdb-lock`). */
export const LMDB_STORE_FILE = 'spillway.mdb';

/** The parts of the `lmdb` package this store uses. */
interface LmdbDatabase {
  getBinaryFast(key: Buffer): Buffer | undefined;
  getKeys(options: { start: Buffer; snapshot?: boolean }): Iterable<Buffer>;
  getRange(options: {
    start: Buffer;
    snapshot?: boolean;
  }): Iterable<{ key: Buffer; value: Buffer }>;
  putSync(key: Buffer, value: Buffer | Uint8Array): void;
  removeSync(key: Buffer): boolean;
  transaction<T>(fn: () => T): Promise<T>;
  resetReadTxn(): void;
}
interface LmdbRoot extends LmdbDatabase {
  openDB(options: { name: string; encoding: 'binary'; keyEncoding: 'binary' }): LmdbDatabase;
  close(): Promise<void>;
}
interface LmdbModule {
  open(options: Record<string, unknown>): LmdbRoot;
}

/** One opened environment, shared by every store of this process on the same folder. */
interface Environment {
  root: LmdbRoot;
  /** key → body */
  data: LmdbDatabase;
  /** key → 24-byte header: version (u64), last modified (ms, f64), size (f64) */
  meta: LmdbDatabase;
  /** the version counter */
  state: LmdbDatabase;
  handles: number;
}

const environments = new Map<string, Promise<Environment>>();
const VERSION_KEY = Buffer.from('version');
const META_BYTES = 24;

interface Header {
  version: bigint;
  lastModifiedMs: number;
  size: number;
}

type WriteOutcome = { ok: true; version: string } | { ok: false; current?: string };

/**
 * A local {@link ObjectStore} in one LMDB file (`lmdb:///abs/dir`), for one
 * machine that needs durable appends at the rate of its disk.
 *
 * Why it exists: the file store makes each object a file, so a durable create
 * is about ten filesystem steps and two fsyncs. Here every write is a change
 * to one memory-mapped B-tree, and the writes of a process that arrive
 * together (concurrent producers, a batch and its commit from different
 * callers) share one transaction and one `fdatasync`: group commit done by
 * the storage engine.
 *
 * - Durability: a write resolves once its transaction is flushed to disk.
 *   LMDB's copy-on-write pages mean a crash (SIGKILL, power loss) leaves the
 *   last flushed transaction intact; nothing needs repair on open.
 * - Conditional writes check and write inside the writing transaction, and
 *   LMDB allows one writing transaction at a time across every process that
 *   opened the file (a robust mutex in the lock file, released by the kernel
 *   when its holder dies), so `create` and `ifMatch` are atomic across
 *   processes of this machine. Processes on other machines must not share the
 *   folder (a network filesystem breaks LMDB's locking).
 * - Versions are a counter kept in the file: unique and increasing per file.
 * - Keys are any store key; they list in byte order of their UTF-8.
 * - The file grows as needed and reuses the pages of deleted objects; it does
 *   not shrink (copy the folder with `mdb_copy -c` to compact it).
 *
 * Needs the optional dependency `lmdb` (prebuilt binaries as npm packages).
 */
export class LmdbStore implements ObjectStore {
  readonly description: string;
  /**
   * Batches up to 4 MiB travel inside their log commits: bytes cost little
   * here, and one transaction per append instead of two halves its latency.
   */
  readonly hints: StoreHints = Object.freeze({ inlineMaxBytes: 4 * 1024 * 1024 });
  private readonly path: string;
  private env?: Promise<Environment>;
  private closed = false;
  private readonly pending = new Set<Promise<unknown>>();

  /** @param dir the folder that holds the store's file; created on the first call */
  constructor(dir: string) {
    this.path = dir;
    this.description = `lmdb://${dir}`;
  }

  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    const env = await this.enter(key, options);
    const k = keyBytes(key);
    env.data.resetReadTxn();
    const header = readHeader(env.meta.getBinaryFast(k));
    const body = env.data.getBinaryFast(k);
    if (!header || !body) throw this.notFound(key);
    const { offset = 0, length } = options.range ?? {};
    const end = length === undefined ? body.length : Math.min(body.length, offset + length);
    return {
      // getBinaryFast's buffer is reused by the next read: copy what the caller keeps.
      body: Uint8Array.prototype.slice.call(body, Math.min(offset, end), end),
      version: header.version.toString(),
      size: header.size,
      lastModified: new Date(header.lastModifiedMs),
    };
  }

  async head(key: string, options: StoreCallOptions = {}): Promise<ObjectMeta> {
    const env = await this.enter(key, options);
    env.meta.resetReadTxn();
    const header = readHeader(env.meta.getBinaryFast(keyBytes(key)));
    if (!header) throw this.notFound(key);
    return {
      key,
      size: header.size,
      version: header.version.toString(),
      lastModified: new Date(header.lastModifiedMs),
    };
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const env = await this.enter(key, options);
    const mode = options.mode ?? 'overwrite';
    const k = keyBytes(key);
    const outcome = await this.track(
      env.root.transaction((): WriteOutcome => {
        const current = readHeader(env.meta.getBinaryFast(k));
        if (mode === 'create' && current) return { ok: false, current: current.version.toString() };
        if (typeof mode === 'object' && current?.version.toString() !== mode.ifMatch) {
          return current ? { ok: false, current: current.version.toString() } : { ok: false };
        }
        const previous = readCounter(env.state.getBinaryFast(VERSION_KEY));
        const version = previous + 1n;
        env.state.putSync(VERSION_KEY, counterBytes(version));
        env.meta.putSync(
          k,
          headerBytes({ version, lastModifiedMs: Date.now(), size: body.length }),
        );
        env.data.putSync(k, body);
        return { ok: true, version: version.toString() };
      }),
      'put',
      key,
    );
    if (outcome.ok) return { version: outcome.version };
    throw new PreconditionFailedError(
      key,
      mode === 'create'
        ? `${this.description}: create "${key}": the object already exists`
        : `${this.description}: put "${key}" if version ${(mode as { ifMatch: string }).ifMatch}: the object is ${outcome.current ? `at version ${outcome.current}` : 'absent'}`,
    );
  }

  async *list(prefix: string, options: StoreCallOptions = {}): AsyncIterable<ObjectMeta> {
    validatePrefix(prefix, this.description);
    const env = await this.open(options);
    const start = Buffer.from(prefix, 'utf8');
    // Pages of keys, each read in one snapshot; the next page starts after the last key seen,
    // so a long listing neither holds a read transaction across the caller's awaits nor
    // misses keys that existed throughout.
    let after: Buffer | undefined;
    for (;;) {
      const page: ObjectMeta[] = [];
      env.meta.resetReadTxn();
      for (const { key, value } of env.meta.getRange({ start: after ?? start })) {
        if (after && key.equals(after)) continue;
        if (!startsWith(key, start)) break;
        const header = readHeader(value);
        if (header) {
          page.push({
            key: key.toString('utf8'),
            size: header.size,
            version: header.version.toString(),
            lastModified: new Date(header.lastModifiedMs),
          });
        }
        after = Buffer.from(key);
        if (page.length >= 1000) break;
      }
      for (const item of page) {
        this.checkOpen();
        options.signal?.throwIfAborted();
        yield item;
      }
      if (page.length < 1000) return;
    }
  }

  async delete(key: string, options: StoreCallOptions = {}): Promise<void> {
    await this.deleteMany([key], options);
  }

  async deleteMany(keys: readonly string[], options: StoreCallOptions = {}): Promise<void> {
    for (const key of keys) validateKey(key, this.description);
    const env = await this.open(options);
    if (keys.length === 0) return;
    await this.track(
      env.root.transaction(() => {
        for (const key of keys) {
          const k = keyBytes(key);
          env.meta.removeSync(k);
          env.data.removeSync(k);
        }
      }),
      'delete',
      keys[0] as string,
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.pending]);
    const env = this.env;
    this.env = undefined;
    if (!env) return;
    const opened = await env.catch(() => undefined);
    if (!opened) return;
    if (--opened.handles === 0) {
      environments.delete(this.path);
      await opened.root.close();
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError(`store ${this.description}`);
  }

  private async enter(key: string, options: StoreCallOptions): Promise<Environment> {
    validateKey(key, this.description);
    return this.open(options);
  }

  private async open(options: StoreCallOptions): Promise<Environment> {
    this.checkOpen();
    options.signal?.throwIfAborted();
    if (!this.env) {
      const env = acquire(this.path, this.description);
      this.env = env;
      env.catch(() => {
        if (this.env === env) this.env = undefined;
      });
    }
    const env = await this.env;
    this.checkOpen();
    options.signal?.throwIfAborted();
    return env;
  }

  private async track<T>(work: Promise<T>, op: string, key: string): Promise<T> {
    this.pending.add(work);
    try {
      return await work;
    } catch (e) {
      throw new StorageError(
        `${this.description}: ${op} "${key}" failed: ${(e as Error).message ?? String(e)}`,
        { cause: e, retriable: false },
      );
    } finally {
      this.pending.delete(work);
    }
  }

  private notFound(key: string): NotFoundError {
    return new NotFoundError(key, `${this.description}: object "${key}" does not exist`);
  }
}

/** Opens (or joins) the environment of `dir`; each call must be matched by one `close`. */
function acquire(dir: string, description: string): Promise<Environment> {
  const existing = environments.get(dir);
  if (existing) {
    return existing.then((env) => {
      env.handles++;
      return env;
    });
  }
  const opening = (async (): Promise<Environment> => {
    const lmdb = await loadOptionalSdk<LmdbModule>(
      'lmdb',
      'lmdb',
      () => import('lmdb'),
    );
    try {
      await mkdir(dir, { recursive: true });
      const root = lmdb.open({
        path: join(dir, LMDB_STORE_FILE),
        noSubdir: true,
        encoding: 'binary',
        keyEncoding: 'binary',
        compression: false,
        maxDbs: 4,
        // Promises resolve once the transaction is on disk, not merely visible.
        overlappingSync: false,
      });
      const db = (name: string) => root.openDB({ name, encoding: 'binary', keyEncoding: 'binary' });
      return { root, data: db('data'), meta: db('meta'), state: db('state'), handles: 1 };
    } catch (e) {
      throw new StorageError(
        `${description}: cannot open the store: ${(e as Error).message ?? String(e)}`,
        { cause: e, retriable: false },
      );
    }
  })();
  environments.set(dir, opening);
  opening.catch(() => {
    if (environments.get(dir) === opening) environments.delete(dir);
  });
  return opening;
}

function keyBytes(key: string): Buffer {
  return Buffer.from(key, 'utf8');
}

function startsWith(key: Buffer, prefix: Buffer): boolean {
  return (
    key.length >= prefix.length && key.compare(prefix, 0, prefix.length, 0, prefix.length) === 0
  );
}

function readHeader(bytes: Buffer | undefined): Header | undefined {
  if (!bytes || bytes.length < META_BYTES) return undefined;
  return {
    version: bytes.readBigUInt64LE(0),
    lastModifiedMs: bytes.readDoubleLE(8),
    size: bytes.readDoubleLE(16),
  };
}

function headerBytes(header: Header): Buffer {
  const b = Buffer.alloc(META_BYTES);
  b.writeBigUInt64LE(header.version, 0);
  b.writeDoubleLE(header.lastModifiedMs, 8);
  b.writeDoubleLE(header.size, 16);
  return b;
}

function readCounter(bytes: Buffer | undefined): bigint {
  return bytes && bytes.length >= 8 ? bytes.readBigUInt64LE(0) : 0n;
}

function counterBytes(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value, 0);
  return b;
}

import { constants as osConstants } from 'node:os';
import { mkdir, open as openFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import {
  ClosedError,
  type ErrorCode,
  InvalidArgumentError,
  NotFoundError,
  PreconditionFailedError,
  SpillwayError,
  StorageError,
} from '../errors.ts';
import { validateKey, validatePrefix } from './keys.ts';
import type {
  GetOptions,
  GetResult,
  ObjectMeta,
  ObjectStore,
  PutMode,
  PutOptions,
  PutResult,
  StoreCallOptions,
  StoreHints,
} from './object-store.ts';
import { loadOptionalSdk } from './optional-sdk.ts';

/** The file inside the store's folder that holds every object (LMDB adds `spillway.mdb-lock`). */
export const LMDB_STORE_FILE = 'spillway.mdb';

/**
 * The gate's file beside it (and `spillway.gate-lock`): empty, its write
 * transactions a lock between processes; see `underGate`.
 */
export const LMDB_GATE_FILE = 'spillway.gate';

/** The largest object this store holds, in bytes: LMDB's limit on one value (4 GiB - 1). */
export const LMDB_MAX_OBJECT_BYTES = 0xffffffff;

/** The parts of the `lmdb` package this store uses. */
interface LmdbDatabase {
  getBinaryFast(key: Buffer): Uint8Array | undefined;
  getRange(options: { start: Buffer }): Iterable<{ key: Buffer; value: Buffer }>;
  putSync(key: Buffer, value: Uint8Array): void;
  removeSync(key: Buffer): boolean;
  transaction<T>(fn: () => T): Promise<T>;
  /** Inside a writing transaction: runs at once, rolled back alone if `fn` throws. */
  childTransaction<T>(fn: () => T): T;
  resetReadTxn(): void;
}
interface LmdbRoot extends LmdbDatabase {
  openDB(options: { name: string; encoding: 'binary'; keyEncoding: 'binary' }): LmdbDatabase;
  close(): Promise<void>;
}
interface LmdbModule {
  open(options: Record<string, unknown>): LmdbRoot;
}

/** One opened environment. */
interface Environment {
  root: LmdbRoot;
  /** key → body */
  data: LmdbDatabase;
  /** key → 24-byte header: version (u64), last modified (ms, f64), size (f64) */
  meta: LmdbDatabase;
  /** the version counter */
  state: LmdbDatabase;
  /** The gate's file: its (empty) write transactions are a lock between the processes of the folder. */
  gate: LmdbRoot;
  /** Writes waiting for the next transaction, and the flush under way. */
  pending: PendingWrite[];
  flushing?: Promise<void>;
}

/** One write waiting for its transaction: `apply` runs inside it and never throws. */
interface PendingWrite {
  apply: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** An environment shared by every store of this process on the same folder, reference counted. */
interface Shared {
  opening: Promise<Environment>;
  /** Stores holding it; counted when a store asks, not when the opening settles, so no close can slip between. */
  handles: number;
}

const environments = new Map<string, Shared>();
const VERSION_KEY = Buffer.from('version');
const META_BYTES = 24;
const LIST_PAGE = 1000;

interface Header {
  version: bigint;
  lastModifiedMs: number;
  size: number;
}

type WriteOutcome =
  { ok: true; version: string } | { ok: false; current?: string } | { ok: 'threw'; error: unknown };

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
 *   one writing transaction runs at a time across the processes of the
 *   machine, so `create` and `ifMatch` are atomic among them. Each opening
 *   of the file and each write transaction runs under a gate (see
 *   `underGate`), because lmdb-js's copy of LMDB writes the lock file's
 *   "last committed transaction" without a lock whenever a process opens
 *   the file, which lost committed writes. Processes on other machines must
 *   never share the folder (a network filesystem breaks LMDB's locking).
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
  private shared?: Shared;
  private closed = false;
  private closing?: Promise<void>;
  private readonly inFlight = new Set<Promise<unknown>>();

  /** @param dir the folder that holds the store's file; created on the first call */
  constructor(dir: string) {
    this.path = dir;
    this.description = `lmdb://${dir}`;
  }

  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    validateKey(key, this.description);
    return this.run(
      'get',
      key,
      options,
      (env) => {
        const k = keyBytes(key);
        // A fresh snapshot, so that a write of another process that finished before this call is seen.
        env.root.resetReadTxn();
        const header = readHeader(env.meta.getBinaryFast(k));
        const body = env.data.getBinaryFast(k);
        if (!header || !body) throw this.notFound(key);
        const { offset = 0, length } = options.range ?? {};
        const end = length === undefined ? body.length : Math.min(body.length, offset + length);
        return {
          // getBinaryFast's bytes are reused by the next read or map the file: copy what the caller keeps.
          body: Uint8Array.prototype.slice.call(body, Math.min(offset, end), end),
          version: header.version.toString(),
          size: header.size,
          lastModified: new Date(header.lastModifiedMs),
        };
      },
      () => {
        throw this.notFound(key);
      },
    );
  }

  async head(key: string, options: StoreCallOptions = {}): Promise<ObjectMeta> {
    validateKey(key, this.description);
    return this.run(
      'head',
      key,
      options,
      (env) => {
        env.root.resetReadTxn();
        const header = readHeader(env.meta.getBinaryFast(keyBytes(key)));
        if (!header) throw this.notFound(key);
        return {
          key,
          size: header.size,
          version: header.version.toString(),
          lastModified: new Date(header.lastModifiedMs),
        };
      },
      () => {
        throw this.notFound(key);
      },
    );
  }

  /**
   * Writes an object; see {@link ObjectStore.put}.
   *
   * @throws {InvalidArgumentError} for a body that is not a `Uint8Array`, one
   *   larger than {@link LMDB_MAX_OBJECT_BYTES}, or an unknown mode.
   */
  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    validateKey(key, this.description);
    const mode = checkMode(options.mode ?? 'overwrite', this.description, key);
    const bytes = bodyBytes(body, this.description, key);
    const outcome = await this.run('put', key, options, (env) =>
      enqueueWrite(env, (): WriteOutcome => {
        // The writes waiting together share the transaction, and lmdb-js commits whatever
        // a throwing callback wrote before it threw; a child transaction makes this write
        // all or nothing, whatever happens inside it.
        try {
          return env.root.childTransaction(() => write(env, keyBytes(key), bytes, mode));
        } catch (error) {
          return { ok: 'threw', error };
        }
      }),
    );
    if (outcome.ok === true) return { version: outcome.version };
    if (outcome.ok === 'threw') throw lmdbStoreError(outcome.error, this.description, 'put', key);
    throw new PreconditionFailedError(
      key,
      mode === 'create'
        ? `${this.description}: create "${key}": the object already exists`
        : `${this.description}: put "${key}" if version ${(mode as { ifMatch: string }).ifMatch}: the object is ${outcome.current ? `at version ${outcome.current}` : 'absent'}`,
    );
  }

  async *list(prefix: string, options: StoreCallOptions = {}): AsyncIterable<ObjectMeta> {
    validatePrefix(prefix, this.description);
    const env = await this.run(
      'list',
      prefix,
      options,
      (opened): Environment | undefined => opened,
      () => undefined,
    );
    // No store file yet: nothing to list, and nothing is created for asking.
    if (!env) return;
    const start = Buffer.from(prefix, 'utf8');
    // Pages of keys, each read in one snapshot; the next page starts after the last key seen,
    // so a long listing neither holds a read transaction across the caller's awaits nor
    // misses keys that existed throughout.
    let after: Buffer | undefined;
    for (;;) {
      // The environment may have been closed while the caller held the iterator.
      this.checkOpen();
      options.signal?.throwIfAborted();
      const page: ObjectMeta[] = [];
      let seen = 0;
      try {
        env.root.resetReadTxn();
        for (const { key, value } of env.meta.getRange({ start: after ?? start })) {
          if (after && key.equals(after)) continue;
          if (!startsWith(key, start)) break;
          after = Buffer.from(key);
          seen++;
          const header = readHeader(value);
          if (header) {
            page.push({
              key: key.toString('utf8'),
              size: header.size,
              version: header.version.toString(),
              lastModified: new Date(header.lastModifiedMs),
            });
          }
          if (seen >= LIST_PAGE) break;
        }
      } catch (e) {
        throw lmdbStoreError(e, this.description, 'list', prefix);
      }
      for (const item of page) {
        this.checkOpen();
        options.signal?.throwIfAborted();
        yield item;
      }
      if (seen < LIST_PAGE) return;
    }
  }

  async delete(key: string, options: StoreCallOptions = {}): Promise<void> {
    await this.deleteMany([key], options);
  }

  async deleteMany(keys: readonly string[], options: StoreCallOptions = {}): Promise<void> {
    for (const key of keys) validateKey(key, this.description);
    await this.run(
      'delete',
      keys[0] ?? '',
      options,
      async (env) => {
        if (keys.length === 0) return;
        const outcome = await enqueueWrite(env, () => {
          try {
            env.root.childTransaction(() => {
              for (const key of keys) {
                const k = keyBytes(key);
                env.meta.removeSync(k);
                env.data.removeSync(k);
              }
            });
            return undefined;
          } catch (error) {
            return { error };
          }
        });
        if (outcome) throw outcome.error;
      },
      () => undefined,
    );
  }

  /**
   * Finishes the calls made before it, then releases the environment (the
   * last store of the process on the folder closes it). Idempotent; later
   * calls reject with {@link ClosedError}.
   */
  async close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      await Promise.allSettled([...this.inFlight]);
      const shared = this.shared;
      this.shared = undefined;
      if (shared) await release(this.path, shared);
    })();
    return this.closing;
  }

  /** Closes the store; see {@link LmdbStore.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError(`store ${this.description}`);
  }

  /**
   * Runs one call on the environment. The call counts as in flight from the
   * moment it is made, so `close()` waits for it rather than closing the
   * environment under it; errors leave as typed errors naming the call and key.
   * A call given `absent` (reads and deletes) on a folder without the
   * store's file gets `absent()` instead: it creates nothing, so a typo in a
   * read-only command leaves no trace.
   */
  private run<T>(
    op: string,
    key: string,
    options: StoreCallOptions,
    fn: (env: Environment) => T | Promise<T>,
    absent?: () => T,
  ): Promise<T> {
    this.checkOpen();
    options.signal?.throwIfAborted();
    const work = (async () => {
      let env: Environment;
      try {
        if (absent && !this.shared && !(await this.hasStoreFile())) return absent();
        env = await this.environment();
      } catch (e) {
        throw lmdbStoreError(e, this.description, op, key);
      }
      options.signal?.throwIfAborted();
      try {
        return await fn(env);
      } catch (e) {
        throw await settleCommitError(e, this.description, op, key);
      }
    })();
    this.inFlight.add(work);
    const done = () => this.inFlight.delete(work);
    work.then(done, done);
    return work;
  }

  private environment(): Promise<Environment> {
    if (!this.shared) {
      const shared = acquire(this.path);
      this.shared = shared;
      // A failed opening is forgotten, so that the next call tries again (the folder may appear).
      shared.opening.catch(() => {
        if (this.shared === shared) {
          this.shared = undefined;
          shared.handles--;
        }
      });
    }
    return this.shared.opening;
  }

  /** Whether the store's file exists; a folder path that is something else is an error. */
  private async hasStoreFile(): Promise<boolean> {
    const folder = await isFolder(this.path);
    if (folder === false) throw notAFolder(this.path);
    return folder === true && (await exists(join(this.path, LMDB_STORE_FILE)));
  }

  private notFound(key: string): NotFoundError {
    return new NotFoundError(key, `${this.description}: object "${key}" does not exist`);
  }
}

/** The write of one put, inside the writing transaction: check the condition, then write. */
function write(env: Environment, k: Buffer, body: Uint8Array, mode: PutMode): WriteOutcome {
  const current = readHeader(env.meta.getBinaryFast(k));
  if (mode === 'create' && current) return { ok: false, current: current.version.toString() };
  if (typeof mode === 'object' && current?.version.toString() !== mode.ifMatch) {
    return current ? { ok: false, current: current.version.toString() } : { ok: false };
  }
  const version = readCounter(env.state.getBinaryFast(VERSION_KEY)) + 1n;
  env.state.putSync(VERSION_KEY, counterBytes(version));
  env.meta.putSync(k, headerBytes({ version, lastModifiedMs: Date.now(), size: body.byteLength }));
  env.data.putSync(k, body);
  return { ok: true, version: version.toString() };
}

/** Counts one more store on `dir`'s environment, opening it if this is the first. */
function acquire(dir: string): Shared {
  const existing = environments.get(dir);
  if (existing) {
    existing.handles++;
    return existing;
  }
  const shared: Shared = { opening: openEnvironment(dir), handles: 1 };
  environments.set(dir, shared);
  shared.opening.catch(() => {
    if (environments.get(dir) === shared) environments.delete(dir);
  });
  return shared;
}

/** Counts one store fewer; the last one closes the environment. */
async function release(dir: string, shared: Shared): Promise<void> {
  if (--shared.handles > 0) return;
  if (environments.get(dir) === shared) environments.delete(dir);
  const env = await shared.opening.catch(() => undefined);
  if (env) {
    try {
      await env.root.close();
    } finally {
      await env.gate.close();
    }
  }
}

/**
 * Runs `fn` holding the folder's gate: one process at a time, across the
 * processes of the machine (LMDB's write lock of the gate's file).
 *
 * Why: lmdb-js's copy of LMDB (3.5.6 and older) stores the transaction id it
 * read from the file's header into the lock file's "last committed
 * transaction" whenever a process opens the file, with no lock held
 * (`mdb_env_open2`; upstream LMDB does so only for `MDB_PREVSNAPSHOT`). An
 * opening during another process's commit moved that id back, and the next
 * write transaction started from an old snapshot: a committed write was
 * lost. So every opening of the store's file and every write transaction on
 * it happen under the gate, and never overlap. The gate's own transactions
 * write nothing (an empty commit changes no page), so the same bug cannot
 * harm the gate.
 */
function underGate<T>(gate: LmdbRoot, fn: () => Promise<T>): Promise<T> {
  // lmdb-js keeps the write transaction open until the callback's promise settles, and its
  // worker keeps a thread of libuv's pool (4 by default) meanwhile, while `fn` needs another
  // for the store's commit: with gates of 4 folders held at once, no commit could start. So
  // a process holds, or waits for, one gate at a time.
  const turn = gateTurn.then(() => gate.transaction(fn) as Promise<T>);
  gateTurn = turn.catch(() => undefined);
  return turn;
}

/** The end of this process's queue for gates (of any folder): see `underGate`. */
let gateTurn: Promise<unknown> = Promise.resolve();

/**
 * Queues a write for the environment's next transaction; the writes queued
 * while one transaction commits share the next (group commit), which runs
 * under the gate.
 */
function enqueueWrite<T>(env: Environment, apply: () => T): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    env.pending.push({ apply, resolve: resolve as (value: unknown) => void, reject });
    env.flushing ??= flushWrites(env);
  });
}

/** Commits the queued writes, a transaction at a time, until none is left. */
async function flushWrites(env: Environment): Promise<void> {
  try {
    // Writes made in this event turn join the first transaction.
    await new Promise((r) => setImmediate(r));
    while (env.pending.length > 0) {
      const batch = env.pending.splice(0);
      const results: unknown[] = [];
      let failure: { error: unknown } | undefined;
      try {
        failure = await underGate(env.gate, () =>
          env.root
            .transaction(() => {
              // Should lmdb-js run the callback again, its results start afresh.
              results.length = 0;
              for (const w of batch) results.push(w.apply());
            })
            .then(
              () => undefined,
              (error: unknown) => {
                // lmdb-js rejects the detail of a failed commit (`commitError`) soon after;
                // handled here, so it is no unhandled rejection while the gate closes, and
                // read again by settleCommitError.
                const detail = (error as { commitError?: Promise<unknown> } | null)?.commitError;
                if (detail && typeof detail.catch === 'function') detail.catch(() => undefined);
                return { error };
              },
            ),
        );
      } catch (error) {
        failure = { error };
      }
      // A transaction not committed: none of its writes was applied.
      if (failure) for (const w of batch) w.reject(failure.error);
      else batch.forEach((w, i) => w.resolve(results[i]));
    }
  } finally {
    env.flushing = undefined;
  }
}

async function openEnvironment(dir: string): Promise<Environment> {
  const lmdb = await loadOptionalSdk<LmdbModule>(
    'lmdb',
    'lmdb',
    // The package's types differ in detail (promises, overloads) from the subset declared here.
    () => import('lmdb') as unknown as Promise<LmdbModule>,
  );
  const created = await mkdir(dir, { recursive: true }).catch(async (e: unknown) => {
    throw (await isFolder(dir)) === false ? notAFolder(dir, e) : e;
  });
  if (!(await isFolder(dir))) throw notAFolder(dir);
  const gate = lmdb.open({
    path: join(dir, LMDB_GATE_FILE),
    noSubdir: true,
    encoding: 'binary',
    keyEncoding: 'binary',
    overlappingSync: false,
    eventTurnBatching: false,
  });
  try {
    // The store's file is opened under the gate: never while another process commits to it.
    const env = await underGate(gate, async () => {
      const root = lmdb.open({
        path: join(dir, LMDB_STORE_FILE),
        noSubdir: true,
        encoding: 'binary',
        keyEncoding: 'binary',
        compression: false,
        maxDbs: 4,
        // Promises resolve once the transaction is on disk, not merely visible.
        overlappingSync: false,
        // Writes still share transactions (those queued before the writer thread starts), but
        // lmdb-js's event-turn batch keeps a promise of its own that nobody handles: a failed
        // commit (a full disk) became an unhandled rejection and ended the process.
        eventTurnBatching: false,
      });
      try {
        const db = (name: string) =>
          root.openDB({ name, encoding: 'binary', keyEncoding: 'binary' });
        return {
          root,
          data: db('data'),
          meta: db('meta'),
          state: db('state'),
          gate,
          pending: [] as PendingWrite[],
        };
      } catch (e) {
        await root.close().catch(() => undefined);
        throw e;
      }
    });
    try {
      // The store's files (and any folders just made) are durable only once their folder
      // entries are: without this, a power loss soon after the first writes could lose the
      // whole file, writes that were reported durable included.
      await fsyncFolder(dir);
      if (created !== undefined) {
        const top = resolve(created);
        for (let d = resolve(dir); ; d = dirname(d)) {
          await fsyncFolder(dirname(d));
          if (d === top || d === dirname(d)) break;
        }
      }
      return env;
    } catch (e) {
      await env.root.close().catch(() => undefined);
      throw e;
    }
  } catch (e) {
    await gate.close().catch(() => undefined);
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function isFolder(path: string): Promise<boolean | undefined> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return undefined;
  }
}

function notAFolder(dir: string, cause?: unknown): Error {
  return Object.assign(new Error(`"${dir}" is not a folder (a file is in the way)`), {
    code: 'ENOTDIR',
    cause,
  });
}

async function fsyncFolder(dir: string): Promise<void> {
  const handle = await openFile(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Waits for the detail of a failed commit: lmdb-js rejects each write of the
 * batch with a generic "Commit failed" whose `commitError` promise carries the
 * cause, and leaves that promise unhandled unless someone looks.
 */
async function settleCommitError(
  e: unknown,
  store: string,
  op: string,
  key: string,
): Promise<Error> {
  const detail = (e as { commitError?: unknown } | null)?.commitError;
  if (detail && typeof (detail as Promise<unknown>).then === 'function') {
    // lmdb-js rejects it right after the writes' promises; the timer only guards against a
    // version that never does.
    let timer: NodeJS.Timeout | undefined;
    const cause = await Promise.race([
      (detail as Promise<unknown>).then(
        () => e,
        (c: unknown) => c,
      ),
      new Promise<unknown>((done) => {
        timer = setTimeout(() => done(e), 1000);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
    const mapped = lmdbStoreError(cause, store, op, key);
    return new StorageError(
      `${mapped.message} (the transaction this ${op} shared with the process's other writes of the moment was not committed; none of them was applied)`,
      {
        code: mapped instanceof SpillwayError ? mapped.code : 'STORAGE',
        retriable: false,
        cause,
      },
    );
  }
  return lmdbStoreError(e, store, op, key);
}

const ERRNO_NAMES = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, n]) => [n, name]),
);

/**
 * Translates what `lmdb` or the file system threw into a Spillway error that
 * names the store, the call and the key: `ACCESS_DENIED` for EACCES, EPERM and
 * EROFS, `NO_SPACE` for ENOSPC and EDQUOT, `STORAGE` otherwise.
 */
function lmdbStoreError(error: unknown, store: string, op: string, key: string): Error {
  if (error instanceof SpillwayError) return error;
  if (error instanceof Error && error.name === 'AbortError') return error;
  const raw = (error as { code?: unknown } | null)?.code;
  const code =
    typeof raw === 'number' ? ERRNO_NAMES.get(raw) : typeof raw === 'string' ? raw : undefined;
  const message = error instanceof Error ? error.message : String(error);
  const fail = (text: string, spillwayCode: ErrorCode = 'STORAGE') =>
    new StorageError(`${store}: ${op} "${key}": ${text}`, {
      code: spillwayCode,
      retriable: false,
      cause: error,
    });
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return fail(
        `permission denied (${message}); check the owner and mode of the store's folder and its files`,
        'ACCESS_DENIED',
      );
    case 'EROFS':
      return fail(
        `the file system is read-only (${message}); an LMDB store needs to write its lock file even to read`,
        'ACCESS_DENIED',
      );
    case 'ENOSPC':
    case 'EDQUOT':
      return fail(`the disk or quota is full (${message}); free some space`, 'NO_SPACE');
    case 'EIO':
      return fail(
        `${message} (EIO; a write cut short by a full disk or a file size limit reads as this too)`,
      );
    default:
      return fail(message);
  }
}

/** The body as a plain view LMDB can copy from; a `SharedArrayBuffer`'s bytes are copied first. */
function bodyBytes(body: unknown, store: string, key: string): Uint8Array {
  if (!(body instanceof Uint8Array)) {
    throw new InvalidArgumentError(
      `${store}: put "${key}": expected the body as a Uint8Array, got ${body === null ? 'null' : Array.isArray(body) ? 'an array' : typeof body === 'object' ? (body.constructor?.name ?? 'an object') : typeof body}`,
    );
  }
  if (body.byteLength > LMDB_MAX_OBJECT_BYTES) {
    throw new InvalidArgumentError(
      `${store}: put "${key}": the body is ${body.byteLength} bytes, an LMDB store holds at most ${LMDB_MAX_OBJECT_BYTES} per object`,
    );
  }
  // lmdb-js stores the bytes at the address of the view's ArrayBuffer, which it cannot
  // find for a SharedArrayBuffer (it stored zeros), and honours `start`/`end` properties
  // a caller's Buffer may carry: give it a fresh view of its own.
  if (!(body.buffer instanceof ArrayBuffer)) return Uint8Array.prototype.slice.call(body);
  return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
}

function checkMode(mode: unknown, store: string, key: string): PutMode {
  if (mode === 'overwrite' || mode === 'create') return mode;
  if (
    typeof mode === 'object' &&
    mode !== null &&
    typeof (mode as { ifMatch?: unknown }).ifMatch === 'string'
  ) {
    return mode as PutMode;
  }
  throw new InvalidArgumentError(
    `${store}: put "${key}": expected mode 'overwrite', 'create' or { ifMatch: version }, got ${JSON.stringify(mode)}`,
  );
}

function keyBytes(key: string): Buffer {
  return Buffer.from(key, 'utf8');
}

function startsWith(key: Buffer, prefix: Buffer): boolean {
  return (
    key.length >= prefix.length && key.compare(prefix, 0, prefix.length, 0, prefix.length) === 0
  );
}

function readHeader(bytes: Uint8Array | undefined): Header | undefined {
  if (!bytes || bytes.length < META_BYTES) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, META_BYTES);
  return {
    version: view.getBigUint64(0, true),
    lastModifiedMs: view.getFloat64(8, true),
    size: view.getFloat64(16, true),
  };
}

function headerBytes(header: Header): Buffer {
  const b = Buffer.alloc(META_BYTES);
  b.writeBigUInt64LE(header.version, 0);
  b.writeDoubleLE(header.lastModifiedMs, 8);
  b.writeDoubleLE(header.size, 16);
  return b;
}

function readCounter(bytes: Uint8Array | undefined): bigint {
  return bytes && bytes.length >= 8
    ? new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true)
    : 0n;
}

function counterBytes(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value, 0);
  return b;
}

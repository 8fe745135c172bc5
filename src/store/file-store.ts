import { randomBytes } from 'node:crypto';
import { constants, type BigIntStats, type Stats } from 'node:fs';
import { link, lstat, mkdir, open, readdir, realpath, rename, unlink } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import {
  ClosedError,
  InvalidArgumentError,
  NotFoundError,
  PreconditionFailedError,
  SpillwayError,
  StorageError,
  type ErrorCode,
} from '../errors.ts';
import { systemClock, type Clock } from '../clock.ts';
import { silentLogger, type Logger } from '../logger.ts';
import {
  isRetriable,
  resolveRetryPolicy,
  retry,
  type RetryCallOptions,
  type RetryPolicy,
} from '../retry.ts';
import { compareKeys, validateKey, validatePrefix } from './keys.ts';
import { putSettled } from './settle.ts';
import { FileLock } from './file-lock.ts';
import type {
  GetOptions,
  GetResult,
  ObjectMeta,
  ObjectStore,
  PutOptions,
  PutResult,
  StoreCallOptions,
} from './object-store.ts';

/** Options of {@link FileStore}. */
export interface FileStoreOptions {
  /** Retries of transient failures (EMFILE, ENFILE, EAGAIN, EBUSY). */
  retry?: RetryPolicy;
  /** Time for backoffs. @default the system clock */
  clock?: Clock;
  /** Where retries are reported. @default silent */
  logger?: Logger;
}

/** Folder under the root that holds the store's own files; no key may start with it. */
export const FILE_STORE_INTERNAL_DIR = '.spillway';
const MAX_SEGMENT_BYTES = 255;
/** The store's own folders, below the root, each checked to be a real folder before the first write. */
const INTERNAL_DIRS = [
  FILE_STORE_INTERNAL_DIR,
  `${FILE_STORE_INTERNAL_DIR}/tmp`,
  `${FILE_STORE_INTERNAL_DIR}/locks`,
];
/**
 * Temporary files are named `spw-<pid>-<16 hex>.tmp`, a pattern only this
 * store writes, so the sweep of dead writers' files can never take a file
 * someone else put in the folder.
 */
const TEMP_FILE = /^spw-([1-9][0-9]{0,9})-[0-9a-f]{16}\.tmp$/;
// O_NOFOLLOW makes an open of a link fail with ELOOP instead of following it; O_NONBLOCK keeps
// a FIFO planted at a key from blocking the open forever (it has no effect on regular files).
// Both are missing on Windows, where only the lstat checks apply.
const NO_FOLLOW = constants.O_NOFOLLOW ?? 0;
const READ_FLAGS = constants.O_RDONLY | NO_FOLLOW | (constants.O_NONBLOCK ?? 0);
const TEMP_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | NO_FOLLOW;
const DIR_FLAGS = constants.O_RDONLY | (constants.O_DIRECTORY ?? 0) | NO_FOLLOW;

/** How far the folders of a path exist: all of them, up to a missing one, or up to a non-folder. */
type FolderCheck = { state: 'ok' | 'missing' | 'blocked'; depth: number };

/**
 * An {@link ObjectStore} in a local directory; each key is a file at the same
 * relative path.
 *
 * Durability: `put` resolves only after the file's data and metadata and the
 * directory entry are fsynced. Atomicity: bytes are written to a temporary
 * file and moved into place, so readers see whole objects only. `create` is
 * one `link(2)`, which fails if the key exists. Overwrites, `ifMatch` writes
 * and deletes run under a per-key lock shared by every process on the machine
 * (see {@link FileLock}), so checking the version and replacing the file are
 * one atomic step. Versions combine the file's inode and its modification
 * time, which each locked write sets strictly above the previous one, so a
 * version never repeats for a key.
 *
 * Keys are relative paths: no leading `/`, no empty, `.` or `..` segment, no
 * NUL, no segment over 255 bytes, and not under `.spillway/`; a key cannot
 * name both an object and a folder (`a` and `a/b`).
 *
 * Links: the store never follows a symbolic link inside its folder. The root
 * path itself may be (or pass through) a link, which is resolved once, on
 * first use, to its real path. Below it, every folder of a key or list prefix
 * is checked with `lstat`, missing folders are created one at a time, objects
 * are opened with `O_NOFOLLOW`, and the store's own `.spillway/`,
 * `.spillway/tmp` and `.spillway/locks` must be real folders. A link met
 * anywhere, including one at a key itself, fails the call with a
 * {@link StorageError} of code `UNSAFE_PATH` and is left in place. What
 * remains is a race: someone with write access to the folder who swaps a
 * checked folder for a link between the check and the use can still redirect
 * that one call. Node has no `openat(2)` to close it; do not give untrusted
 * users write access to the store's folder.
 *
 * Reads (`get`, `head`, `list`) create nothing, so a queue in a read-only
 * folder can be read, and a missing folder reads as empty (NotFoundError, an
 * empty listing). The first `put` or `delete` creates the root and
 * `.spillway/` if missing. The first call of any kind removes the temporary
 * files of writers that died mid-put, if `.spillway/tmp` is there.
 *
 * Errors: every failure is a Spillway error. Operating-system errors become a
 * {@link StorageError} naming the store, the call and the key, with the
 * original error as `cause`: see {@link fileStoreError} for the codes.
 *
 * @example
 * const store = new FileStore('/var/lib/spillway/orders');
 * await store.put('batches/000001', bytes, { mode: 'create' });
 */
export class FileStore implements ObjectStore {
  readonly description: string;
  /** Absolute path of the root directory, as given (it may be or pass through a link). */
  readonly root: string;
  /** The root's real path, once found; every path the store touches starts with it. */
  private realRoot?: string;
  /** Settles with the real root once it and the store's own folders exist and are checked. */
  private writable?: Promise<string>;
  /** Salt of lock names, from `.spillway/lock-secret`; set once writes are prepared. */
  private lockSecret?: string;
  /** Settles when the sweep of dead writers' temporary files, done once per store, is over. */
  private swept?: Promise<void>;
  private closed = false;

  private readonly policy: Required<RetryPolicy>;
  private readonly clock: Clock;
  private readonly logger: Logger;

  /**
   * @param root directory of the store; created by the first write if missing
   * @param options retries of transient failures (too many open files, EBUSY),
   * with their clock and logger
   */
  constructor(root: string, options: FileStoreOptions = {}) {
    this.root = resolve(root);
    this.description = `file://${this.root}`;
    this.policy = resolveRetryPolicy(options.retry);
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? silentLogger;
  }

  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    return retry((_s, n) => this.getOnce(key, options, n), this.retryOptions(options, 'get', key));
  }

  async head(key: string, options: StoreCallOptions = {}): Promise<ObjectMeta> {
    return retry(() => this.headOnce(key, options), this.retryOptions(options, 'head', key));
  }

  /**
   * Writes an object. Overwrites are retried on transient failures; a
   * conditional write that failed after it may have landed is settled by
   * reading back (`settle.ts`), never retried blindly.
   */
  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const mode = options.mode ?? 'overwrite';
    if (mode === 'overwrite') {
      return retry(() => this.putOnce(key, body, options), this.retryOptions(options, 'put', key));
    }
    return putSettled({
      key,
      body,
      mode,
      policy: this.policy,
      clock: this.clock,
      signal: options.signal,
      logger: this.logger,
      description: this.description,
      attempt: () => this.putOnce(key, body, options),
      attemptSignal: (s) => s ?? new AbortController().signal,
      classify: (e) =>
        e instanceof PreconditionFailedError ? 'conflict' : isRetriable(e) ? 'uncertain' : 'fatal',
      readBack: (bounded) => this.getOnce(key, { signal: bounded }, 1),
    });
  }

  async delete(key: string, options: StoreCallOptions = {}): Promise<void> {
    await retry(() => this.deleteOnce(key, options), this.retryOptions(options, 'delete', key));
  }

  private retryOptions(options: StoreCallOptions, op: string, key: string): RetryCallOptions {
    return {
      policy: this.policy,
      signal: options.signal,
      clock: this.clock,
      logger: this.logger,
      what: `${this.description}: ${op} "${key}"`,
    };
  }

  private async getOnce(key: string, options: GetOptions, _attempt: number): Promise<GetResult> {
    const segments = this.enter(key, options);
    try {
      const path = await this.objectPath(segments, key);
      if (path === undefined) throw this.notFound(key);
      const handle = await open(path, READ_FLAGS).catch((e: unknown) => {
        throw errnoOf(e) === 'ELOOP' ? this.unsafe(`key "${key}"`, key) : e;
      });
      try {
        const st = await handle.stat({ bigint: true });
        if (!st.isFile()) throw this.notAnObject(key, st.isDirectory());
        const size = Number(st.size);
        const offset = Math.min(options.range?.offset ?? 0, size);
        const end =
          options.range?.length === undefined
            ? size
            : Math.min(size, offset + options.range.length);
        const body = Buffer.allocUnsafe(end - offset);
        let done = 0;
        while (done < body.byteLength) {
          const { bytesRead } = await handle.read(
            body,
            done,
            body.byteLength - done,
            offset + done,
          );
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return {
          body: body.subarray(0, done),
          version: versionOf(st),
          size,
          lastModified: st.mtime,
        };
      } finally {
        await handle.close();
      }
    } catch (e) {
      throw fileStoreError(e, this.description, 'get', key);
    }
  }

  private async headOnce(key: string, options: StoreCallOptions): Promise<ObjectMeta> {
    const segments = this.enter(key, options);
    try {
      const path = await this.objectPath(segments, key);
      if (path === undefined) throw this.notFound(key);
      const st = await lstat(path, { bigint: true });
      if (st.isSymbolicLink()) throw this.unsafe(`key "${key}"`, key);
      if (!st.isFile()) throw this.notAnObject(key, st.isDirectory());
      return { key, size: Number(st.size), version: versionOf(st), lastModified: st.mtime };
    } catch (e) {
      throw fileStoreError(e, this.description, 'head', key);
    }
  }

  /** The error of a create whose key is taken: by an object, or by something that is not one. */
  private refuseExisting(key: string, existing: Stats | undefined): never {
    if (existing?.isSymbolicLink()) throw this.unsafe(`key "${key}"`, key);
    if (existing?.isDirectory()) {
      throw new InvalidArgumentError(
        `${this.description}: key "${key}" names a folder of other keys, not an object`,
      );
    }
    if (existing && !existing.isFile()) throw this.notAnObject(key, false);
    throw new PreconditionFailedError(
      key,
      `${this.description}: create "${key}": the object already exists`,
    );
  }

  /** A fresh temporary file's path under the store's own folder. */
  private tempPath(root: string): string {
    return join(
      root,
      FILE_STORE_INTERNAL_DIR,
      'tmp',
      `spw-${process.pid}-${randomBytes(8).toString('hex')}.tmp`,
    );
  }

  /** Creates `key` if absent (the caller holds the key's lock): temp file, fsync, link(2). */
  private async createOnce(
    root: string,
    segments: readonly string[],
    key: string,
    path: string,
    body: Uint8Array,
  ): Promise<PutResult> {
    const existing = await lstat(path).catch(() => undefined);
    if (existing) this.refuseExisting(key, existing);
    const tmp = this.tempPath(root);
    const handle = await open(tmp, TEMP_FLAGS, 0o666);
    try {
      await handle.writeFile(body);
      await this.makeParents(root, segments, key);
      await handle.sync();
      const st = await handle.stat({ bigint: true });
      await handle.close();
      try {
        // link(2) fails with EEXIST if the key exists (a writer without the lock, such as
        // another machine on a shared folder): an atomic create-if-absent. It never
        // follows a link at the new name.
        await link(tmp, path);
      } catch (e) {
        if (errnoOf(e) !== 'EEXIST') throw e;
        this.refuseExisting(key, await lstat(path).catch(() => undefined));
      }
      await fsyncDir(dirname(path));
      return { version: versionOf(st) };
    } finally {
      await handle.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
    }
  }

  private async putOnce(key: string, body: Uint8Array, options: PutOptions): Promise<PutResult> {
    const segments = this.enter(key, options);
    const mode = options.mode ?? 'overwrite';
    try {
      const root = await this.prepareWrites();
      const path = join(root, ...segments);
      if (mode === 'create') {
        // A create that will lose finds out before writing and syncing anything; creates
        // of one key are serialized, so racing writers (log commits) wait for the winner
        // instead of all syncing their bytes. The link is what makes a create atomic.
        const existing = await lstat(path).catch(() => undefined);
        if (existing) this.refuseExisting(key, existing);
        // Waiters look often: the holder keeps the lock for one small write and fsync,
        // and a racing writer wants to learn at once that it lost.
        return await this.lock(root, key).withLock(
          () => this.createOnce(root, segments, key, path, body),
          options.signal,
          1,
        );
      }
      const tmp = this.tempPath(root);
      const handle = await open(tmp, TEMP_FLAGS, 0o666);
      let moved = false;
      try {
        await handle.writeFile(body);
        await this.makeParents(root, segments, key);
        return await this.lock(root, key).withLock(async () => {
          const current = await lstat(path, { bigint: true }).catch((e: unknown) => {
            if (errnoOf(e) === 'ENOENT') return undefined;
            throw e;
          });
          if (current?.isSymbolicLink()) throw this.unsafe(`key "${key}"`, key);
          if (current && !current.isFile()) {
            if (!current.isDirectory()) throw this.notAnObject(key, false);
            throw new InvalidArgumentError(
              `${this.description}: key "${key}" names a folder of other keys, not an object`,
            );
          }
          if (typeof mode === 'object' && (!current || versionOf(current) !== mode.ifMatch)) {
            throw new PreconditionFailedError(
              key,
              `${this.description}: put "${key}" if version ${mode.ifMatch}: the object is ${current ? `at version ${versionOf(current)}` : 'absent'}`,
            );
          }
          const st = await stampAfter(handle, current);
          await handle.sync();
          await handle.close();
          // rename(2) replaces the name itself, never the target of a link planted after the check.
          await rename(tmp, path);
          moved = true;
          await fsyncDir(dirname(path));
          return { version: versionOf(st) };
        }, options.signal);
      } finally {
        await handle.close().catch(() => undefined);
        if (!moved) await unlink(tmp).catch(() => undefined);
      }
    } catch (e) {
      throw fileStoreError(e, this.description, 'put', key);
    }
  }

  async *list(prefix: string, options: StoreCallOptions = {}): AsyncIterable<ObjectMeta> {
    validatePrefix(prefix, this.description);
    this.checkOpen();
    const cut = prefix.lastIndexOf('/');
    const dirPart = cut < 0 ? '' : prefix.slice(0, cut);
    const namePrefix = prefix.slice(cut + 1);
    const dirSegments = dirPart === '' ? [] : dirPart.split('/');
    if (dirSegments.some((s) => s === '.' || s === '..')) {
      throw new InvalidArgumentError(
        `${this.description}: prefix ${JSON.stringify(prefix)} has a "." or ".." segment`,
      );
    }
    // An empty segment ("a//b") can name no key here.
    if (dirSegments.some((s) => s === '')) return;
    try {
      const root = await this.findRoot();
      if (root === undefined) return;
      const subject = `prefix "${prefix}"`;
      const found = await this.checkFolders(root, dirSegments, dirSegments.length, subject);
      if (found.state !== 'ok') return;
      yield* this.walk(root, dirPart, namePrefix, subject, options.signal);
    } catch (e) {
      throw fileStoreError(e, this.description, 'list', prefix);
    }
  }

  private async deleteOnce(key: string, options: StoreCallOptions): Promise<void> {
    const segments = this.enter(key, options);
    const subject = `key "${key}"`;
    try {
      // A folder that does not exist holds nothing to delete; deleting from it creates nothing.
      if ((await this.findRoot()) === undefined) return;
      const root = await this.prepareWrites();
      const path = join(root, ...segments);
      await this.lock(root, key).withLock(async () => {
        const found = await this.checkFolders(root, segments, segments.length - 1, subject);
        if (found.state !== 'ok') return;
        const st = await lstat(path).catch((e: unknown) => {
          if (errnoOf(e) === 'ENOENT') return undefined;
          throw e;
        });
        if (st === undefined || st.isDirectory()) return;
        if (st.isSymbolicLink()) throw this.unsafe(subject, key);
        try {
          await unlink(path);
        } catch (e) {
          if (errnoOf(e) === 'ENOENT') return;
          throw e;
        }
        await fsyncDir(dirname(path));
      }, options.signal);
    } catch (e) {
      throw fileStoreError(e, this.description, 'delete', key);
    }
  }

  async deleteMany(keys: readonly string[], options: StoreCallOptions = {}): Promise<void> {
    for (const key of keys) this.resolveKey(key);
    for (const key of keys) await this.delete(key, options);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Splits a key into its path segments, refusing anything that could leave the root. */
  private resolveKey(key: string): string[] {
    validateKey(key, this.description);
    const segments = key.split('/');
    for (const segment of segments) {
      if (segment === '' || segment === '.' || segment === '..') {
        throw new InvalidArgumentError(
          `${this.description}: key ${JSON.stringify(key)} is not a relative path of non-empty segments without "." or ".." (it could escape the store's folder)`,
        );
      }
      if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES) {
        throw new InvalidArgumentError(
          `${this.description}: key segment of ${Buffer.byteLength(segment)} bytes; a file name holds at most ${MAX_SEGMENT_BYTES}`,
        );
      }
    }
    if (segments[0] === FILE_STORE_INTERNAL_DIR) {
      throw new InvalidArgumentError(
        `${this.description}: keys under "${FILE_STORE_INTERNAL_DIR}/" are reserved for the store`,
      );
    }
    if (!join(this.root, ...segments).startsWith(this.root + sep)) {
      throw new InvalidArgumentError(
        `${this.description}: key ${JSON.stringify(key)} resolves outside the store`,
      );
    }
    return segments;
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError(`store ${this.description}`);
  }

  private enter(key: string, options: StoreCallOptions): string[] {
    const segments = this.resolveKey(key);
    this.checkOpen();
    options.signal?.throwIfAborted();
    return segments;
  }

  private lock(root: string, key: string): FileLock {
    // Scoped by the real root, so stores opened through a link and through the real path share
    // locks; salted with the store's secret, so nobody who cannot read the store's folder can
    // compute a lock's name and hold it to stall writers.
    return new FileLock(
      `${this.lockSecret ?? ''}\0${root}\0${key}`,
      join(root, FILE_STORE_INTERNAL_DIR, 'locks'),
    );
  }

  /**
   * A key that names no object: a folder of other keys reads as absent, as
   * on S3; a FIFO, socket or device is an error, never taken for absence
   * (a create would find it present and loop).
   */
  private notAnObject(key: string, folder: boolean): Error {
    if (folder) return this.notFound(key);
    return new StorageError(
      `${this.description}: key "${key}" names a special file (a FIFO, socket or device), not an object: remove it`,
    );
  }

  private notFound(key: string): NotFoundError {
    return new NotFoundError(key, `${this.description}: object "${key}" does not exist`);
  }

  private unsafe(subject: string, link: string): StorageError {
    return new StorageError(
      `${this.description}: ${subject}: "${link}" is a symbolic link; the file store never follows links inside its folder`,
      { code: 'UNSAFE_PATH' },
    );
  }

  /** The real path of the root, or undefined while it does not exist. */
  private async findRoot(): Promise<string | undefined> {
    if (this.realRoot !== undefined) return this.realRoot;
    let real: string;
    try {
      real = await realpath(this.root);
    } catch (e) {
      const code = errnoOf(e);
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw e;
    }
    if (!(await lstat(real)).isDirectory()) {
      throw new StorageError(
        `${this.description}: "${real}" is not a folder; a file store needs a folder`,
      );
    }
    // Cached only after the sweep, so that no call goes ahead of it.
    await (this.swept ??= sweepTempFiles(real));
    this.realRoot = real;
    return real;
  }

  /** The path of the object at `segments` if every folder on the way exists (and is no link). */
  private async objectPath(segments: string[], key: string): Promise<string | undefined> {
    const root = await this.findRoot();
    if (root === undefined) return undefined;
    const found = await this.checkFolders(root, segments, segments.length - 1, `key "${key}"`);
    return found.state === 'ok' ? join(root, ...segments) : undefined;
  }

  /**
   * Creates the root and the store's own folders if missing and checks that
   * those are real folders; once per store, retried after a failure.
   */
  private prepareWrites(): Promise<string> {
    const ready = (this.writable ??= (async () => {
      // The root path is the user's choice and may pass through links; below it, nothing may.
      await mkdir(this.root, { recursive: true });
      const root = await this.findRoot();
      if (root === undefined) throw new StorageError(`${this.description}: the folder vanished`);
      for (const rel of INTERNAL_DIRS) {
        const path = join(root, ...rel.split('/'));
        await mkdir(path).catch((e: unknown) => {
          if (errnoOf(e) !== 'EEXIST') throw e;
        });
        const st = await lstat(path);
        if (st.isSymbolicLink() || !st.isDirectory()) {
          throw new StorageError(
            st.isSymbolicLink()
              ? `${this.description}: "${rel}" is a symbolic link; the file store never follows links inside its folder, and keeps its temporary files and locks in a real folder there: remove the link`
              : `${this.description}: "${rel}" is not a folder; the file store keeps its temporary files and locks there: move it away`,
            { code: 'UNSAFE_PATH' },
          );
        }
      }
      this.lockSecret = await loadLockSecret(root, this.description);
      return root;
    })());
    ready.catch(() => {
      if (this.writable === ready) this.writable = undefined;
    });
    return ready;
  }

  /**
   * Checks the first `count` segments below `root` with one `lstat` each: a
   * link fails the call; a missing folder or a file in the way ends the check.
   */
  private async checkFolders(
    root: string,
    segments: readonly string[],
    count: number,
    subject: string,
  ): Promise<FolderCheck> {
    let dir = root;
    for (let depth = 0; depth < count; depth++) {
      dir = join(dir, segments[depth] as string);
      let st;
      try {
        st = await lstat(dir);
      } catch (e) {
        if (errnoOf(e) === 'ENOENT') return { state: 'missing', depth };
        throw e;
      }
      if (st.isSymbolicLink()) throw this.unsafe(subject, segments.slice(0, depth + 1).join('/'));
      if (!st.isDirectory()) return { state: 'blocked', depth };
    }
    return { state: 'ok', depth: count };
  }

  /** Makes the folders of a key, one at a time so that no link is ever followed. */
  private async makeParents(root: string, segments: readonly string[], key: string): Promise<void> {
    const count = segments.length - 1;
    const subject = `key "${key}"`;
    const blocked = () =>
      new InvalidArgumentError(
        `${this.description}: key "${key}" needs a folder where an object already is (a key cannot be both an object and a prefix of another key)`,
      );
    const found = await this.checkFolders(root, segments, count, subject);
    if (found.state === 'blocked') throw blocked();
    if (found.state === 'ok') return;
    const created: string[] = [];
    let dir = join(root, ...segments.slice(0, found.depth));
    for (let depth = found.depth; depth < count; depth++) {
      dir = join(dir, segments[depth] as string);
      try {
        // Without `recursive`, mkdir(2) never follows a link: a link here is EEXIST.
        await mkdir(dir);
        created.push(dir);
      } catch (e) {
        if (errnoOf(e) !== 'EEXIST') throw e;
        // Made by a racing writer, or planted: check it as any other folder.
        const st = await lstat(dir);
        if (st.isSymbolicLink()) throw this.unsafe(subject, segments.slice(0, depth + 1).join('/'));
        if (!st.isDirectory()) throw blocked();
      }
    }
    // New folders must be durable too: fsync each one's parent, deepest last.
    for (const d of created) await fsyncDir(dirname(d));
  }

  private async *walk(
    root: string,
    relDir: string,
    namePrefix: string,
    subject: string,
    signal?: AbortSignal,
  ): AsyncIterable<ObjectMeta> {
    signal?.throwIfAborted();
    const abs = relDir === '' ? root : join(root, ...relDir.split('/'));
    let entries;
    try {
      // Entry types come from lstat (or the directory itself): links show as links.
      entries = await readdir(abs, { withFileTypes: true });
    } catch (e) {
      const code = errnoOf(e);
      // Removed while we listed: it holds no keys any more.
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw e;
    }
    const keyOf = (name: string) => (relDir === '' ? name : `${relDir}/${name}`);
    const matching = entries.filter(
      (d) =>
        d.name.startsWith(namePrefix) && !(relDir === '' && d.name === FILE_STORE_INTERNAL_DIR),
    );
    const link = matching.find((d) => d.isSymbolicLink());
    if (link) throw this.unsafe(subject, keyOf(link.name));
    // A folder sorts as its name plus "/", which is where its keys fall in byte order.
    const named = matching
      .filter((d) => d.isFile() || d.isDirectory())
      .map((d) => ({ d, sortKey: d.isDirectory() ? `${d.name}/` : d.name }))
      .sort((a, b) => compareKeys(a.sortKey, b.sortKey));
    for (const { d } of named) {
      const key = keyOf(d.name);
      if (d.isDirectory()) {
        yield* this.walk(root, key, '', subject, signal);
        continue;
      }
      const st = await lstat(join(abs, d.name), { bigint: true }).catch((e: unknown) => {
        if (errnoOf(e) === 'ENOENT') return undefined;
        throw e;
      });
      if (st?.isSymbolicLink()) throw this.unsafe(subject, key);
      if (st?.isFile())
        yield { key, size: Number(st.size), version: versionOf(st), lastModified: st.mtime };
    }
  }
}

/**
 * Translates a failure inside a {@link FileStore} call into a Spillway error.
 * Spillway errors and aborts pass through unchanged. For `get` and `head`,
 * ENOENT, ENOTDIR and EISDIR are a {@link NotFoundError}. Anything else is a
 * {@link StorageError} whose message names the store, the call and the key
 * (or prefix), with the original error as `cause`, and whose code is
 * `ACCESS_DENIED` for EACCES, EPERM and EROFS, `NO_SPACE` for ENOSPC and
 * EDQUOT, and `STORAGE` otherwise; `retriable` is true only for EMFILE,
 * ENFILE, EAGAIN and EBUSY, which pass with time.
 *
 * @param error what was thrown
 * @param store the store's description, `file:///path`
 * @param op the call: `get`, `head`, `put`, `delete` or `list`
 * @param key the key, or the prefix for `list`
 */
export function fileStoreError(error: unknown, store: string, op: string, key: string): Error {
  if (error instanceof SpillwayError) return error;
  if (error instanceof Error && error.name === 'AbortError') return error;
  const code = errnoOf(error);
  if (
    (op === 'get' || op === 'head') &&
    (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR')
  ) {
    return new NotFoundError(key, `${store}: object "${key}" does not exist`, error);
  }
  const at = `${store}: ${op} "${key}"`;
  const e = (error ?? {}) as Partial<NodeJS.ErrnoException>;
  const where = `${code}${e.syscall ? ` on ${e.syscall}` : ''}${e.path ? ` of "${e.path}"` : ''}`;
  const fail = (message: string, spillwayCode: ErrorCode, retriable = false) =>
    new StorageError(`${at}: ${message}`, { code: spillwayCode, retriable, cause: error });
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return fail(
        `permission denied (${where}); check the owner and mode of the store's folder`,
        'ACCESS_DENIED',
      );
    case 'EROFS':
      return fail(
        `the file system is read-only (${where}); it can be read, not written`,
        'ACCESS_DENIED',
      );
    case 'ENOSPC':
      return fail(`the disk is full (${where}); free some space`, 'NO_SPACE');
    case 'EDQUOT':
      return fail(
        `the disk quota is full (${where}); free some space or raise the quota`,
        'NO_SPACE',
      );
    case 'EMFILE':
    case 'ENFILE':
      return fail(`too many open files (${where}); retry, or raise the limit`, 'STORAGE', true);
    case 'EAGAIN':
    case 'EBUSY':
      return fail(String(e.message ?? where), 'STORAGE', true);
    default:
      return fail(error instanceof Error ? error.message : String(error), 'STORAGE');
  }
}

function errnoOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** A version string that changes with every write of the key: mtime (ns) and inode. */
function versionOf(st: BigIntStats): string {
  return `${st.mtimeNs.toString(36)}.${st.ino.toString(36)}`;
}

/**
 * Sets the new file's modification time to now, or one microsecond past the
 * version it replaces if the clock has not moved past it, so each key's
 * versions strictly increase even when inodes are reused.
 */
async function stampAfter(
  handle: Awaited<ReturnType<typeof open>>,
  previous: BigIntStats | undefined,
): Promise<BigIntStats> {
  let us = BigInt(Date.now()) * 1000n;
  for (;;) {
    if (previous && us * 1000n <= previous.mtimeNs) us = previous.mtimeNs / 1000n + 1n;
    const seconds = Number(us) / 1e6;
    await handle.utimes(seconds, seconds);
    const st = await handle.stat({ bigint: true });
    if (!previous || st.mtimeNs > previous.mtimeNs) return st;
    us += 1n;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, DIR_FLAGS);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Deletes temporary files whose writing process is gone (a crash mid-put):
 * only regular files named as this store names them, in `.spillway/tmp` if it
 * and `.spillway` are real folders, so nothing planted in the folder or
 * written by anyone else is ever taken. Best effort: never fails (in a
 * read-only folder nothing can be deleted, and reads must still work).
 */
async function sweepTempFiles(root: string): Promise<void> {
  const tmpDir = join(root, FILE_STORE_INTERNAL_DIR, 'tmp');
  for (const dir of [dirname(tmpDir), tmpDir]) {
    // lstat: a link is not a directory, so a planted link is never swept through.
    if (!(await lstat(dir).catch(() => undefined))?.isDirectory()) return;
  }
  const names = await readdir(tmpDir).catch(() => [] as string[]);
  for (const name of names) {
    const pid = Number(TEMP_FILE.exec(name)?.[1]);
    if (!Number.isSafeInteger(pid) || pid === process.pid || isAlive(pid)) continue;
    const path = join(tmpDir, name);
    const st = await lstat(path).catch(() => undefined);
    if (st?.isFile()) await unlink(path).catch(() => undefined);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The store's lock salt: random bytes in `.spillway/lock-secret`, created
 * once, atomically (written to a temporary file, then linked into place), so
 * every process reads the same whole value. Lock names are abstract sockets
 * any local process could bind; salted, they can be guessed only by those
 * who can read the store's folder (keep it closed to other users: mode 700
 * or 750).
 */
async function loadLockSecret(root: string, description: string): Promise<string> {
  const path = join(root, FILE_STORE_INTERNAL_DIR, 'lock-secret');
  const read = async (): Promise<string | undefined> => {
    const st = await lstat(path).catch((e: unknown) => {
      if (errnoOf(e) === 'ENOENT') return undefined;
      throw e;
    });
    if (st === undefined) return undefined;
    if (!st.isFile()) {
      throw new StorageError(
        `${description}: "${FILE_STORE_INTERNAL_DIR}/lock-secret" is not a regular file; the file store keeps its lock salt there: remove it`,
        { code: 'UNSAFE_PATH' },
      );
    }
    const handle = await open(path, READ_FLAGS);
    try {
      return (await handle.readFile('utf8')).trim();
    } finally {
      await handle.close();
    }
  };
  const existing = await read();
  if (existing) return existing;
  const tmp = join(
    root,
    FILE_STORE_INTERNAL_DIR,
    'tmp',
    `spw-${process.pid}-${randomBytes(8).toString('hex')}.tmp`,
  );
  // As readable as the store's other files: every user who may write the store must read it.
  const handle = await open(tmp, TEMP_FLAGS);
  try {
    await handle.writeFile(randomBytes(32).toString('hex'));
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await link(tmp, path);
    await fsyncDir(dirname(path));
  } catch (e) {
    if (errnoOf(e) !== 'EEXIST') throw e;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  const secret = await read();
  if (!secret) throw new StorageError(`${description}: the lock salt could not be read back`);
  return secret;
}

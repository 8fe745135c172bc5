import { randomBytes } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { link, mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import {
  ClosedError,
  InvalidArgumentError,
  NotFoundError,
  PreconditionFailedError,
  StorageError,
} from '../errors.ts';
import { compareKeys, validateKey, validatePrefix } from './keys.ts';
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

/** Folder under the root that holds the store's own files; no key may start with it. */
export const FILE_STORE_INTERNAL_DIR = '.spillway';
const MAX_SEGMENT_BYTES = 255;

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
 */
export class FileStore implements ObjectStore {
  readonly description: string;
  /** Absolute path of the root directory. */
  readonly root: string;
  private readonly tmpDir: string;
  private readonly lockDir: string;
  private ready?: Promise<void>;
  private closed = false;

  /** @param root directory of the store; created if missing */
  constructor(root: string) {
    this.root = resolve(root);
    this.description = `file://${this.root}`;
    this.tmpDir = join(this.root, FILE_STORE_INTERNAL_DIR, 'tmp');
    this.lockDir = join(this.root, FILE_STORE_INTERNAL_DIR, 'locks');
  }

  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    const path = await this.enter(key, options);
    const handle = await open(path, 'r').catch((e: NodeJS.ErrnoException) => {
      throw this.translate(e, key, 'get');
    });
    try {
      const st = await handle.stat({ bigint: true });
      if (!st.isFile())
        throw new NotFoundError(key, `${this.description}: object "${key}" does not exist`);
      const size = Number(st.size);
      const offset = Math.min(options.range?.offset ?? 0, size);
      const end =
        options.range?.length === undefined ? size : Math.min(size, offset + options.range.length);
      const body = Buffer.allocUnsafe(end - offset);
      let done = 0;
      while (done < body.byteLength) {
        const { bytesRead } = await handle.read(body, done, body.byteLength - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return { body: body.subarray(0, done), version: versionOf(st), size, lastModified: st.mtime };
    } finally {
      await handle.close();
    }
  }

  async head(key: string, options: StoreCallOptions = {}): Promise<ObjectMeta> {
    const path = await this.enter(key, options);
    const st = await stat(path, { bigint: true }).catch((e: NodeJS.ErrnoException) => {
      throw this.translate(e, key, 'head');
    });
    if (!st.isFile())
      throw new NotFoundError(key, `${this.description}: object "${key}" does not exist`);
    return { key, size: Number(st.size), version: versionOf(st), lastModified: st.mtime };
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const path = await this.enter(key, options);
    const mode = options.mode ?? 'overwrite';
    const tmp = join(this.tmpDir, `${process.pid}-${randomBytes(8).toString('hex')}`);
    const handle = await open(tmp, 'wx');
    let moved = false;
    try {
      await handle.writeFile(body);
      await this.makeParents(path, key);
      if (mode === 'create') {
        await handle.sync();
        const st = await handle.stat({ bigint: true });
        await handle.close();
        try {
          // link(2) fails with EEXIST if the key exists: an atomic create-if-absent.
          await link(tmp, path);
        } catch (e) {
          const err = e as NodeJS.ErrnoException;
          if (err.code === 'EEXIST') {
            throw new PreconditionFailedError(
              key,
              `${this.description}: create "${key}": the object already exists`,
            );
          }
          throw this.translate(err, key, 'put');
        }
        await fsyncDir(dirname(path));
        return { version: versionOf(st) };
      }
      return await new FileLock(`${this.root}\0${key}`, this.lockDir).withLock(async () => {
        const current = await stat(path, { bigint: true }).catch((e: NodeJS.ErrnoException) => {
          if (e.code === 'ENOENT') return undefined;
          throw this.translate(e, key, 'put');
        });
        if (current && !current.isFile()) {
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
        await rename(tmp, path);
        moved = true;
        await fsyncDir(dirname(path));
        return { version: versionOf(st) };
      }, options.signal);
    } finally {
      await handle.close().catch(() => undefined);
      if (!moved) await unlink(tmp).catch(() => undefined);
    }
  }

  async *list(prefix: string, options: StoreCallOptions = {}): AsyncIterable<ObjectMeta> {
    validatePrefix(prefix, this.description);
    this.checkOpen();
    await this.init();
    const cut = prefix.lastIndexOf('/');
    const dirPart = cut < 0 ? '' : prefix.slice(0, cut);
    const namePrefix = prefix.slice(cut + 1);
    if (dirPart !== '') {
      const segments = dirPart.split('/');
      if (segments.some((s) => s === '.' || s === '..')) {
        throw new InvalidArgumentError(
          `${this.description}: prefix ${JSON.stringify(prefix)} has a "." or ".." segment`,
        );
      }
      // An empty segment ("a//b") can name no key here.
      if (segments.some((s) => s === '')) return;
    }
    yield* this.walk(dirPart, namePrefix, options.signal);
  }

  async delete(key: string, options: StoreCallOptions = {}): Promise<void> {
    const path = await this.enter(key, options);
    await new FileLock(`${this.root}\0${key}`, this.lockDir).withLock(async () => {
      try {
        await unlink(path);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR' || code === 'EPERM')
          return;
        throw this.translate(e as NodeJS.ErrnoException, key, 'delete');
      }
      await fsyncDir(dirname(path));
    }, options.signal);
  }

  async deleteMany(keys: readonly string[], options: StoreCallOptions = {}): Promise<void> {
    for (const key of keys) this.resolveKey(key);
    for (const key of keys) await this.delete(key, options);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Maps a key to its path, refusing anything that could leave the root. */
  private resolveKey(key: string): string {
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
    const path = join(this.root, ...segments);
    if (!path.startsWith(this.root + sep)) {
      throw new InvalidArgumentError(
        `${this.description}: key ${JSON.stringify(key)} resolves outside the store`,
      );
    }
    return path;
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError(`store ${this.description}`);
  }

  private async enter(key: string, options: StoreCallOptions): Promise<string> {
    const path = this.resolveKey(key);
    this.checkOpen();
    options.signal?.throwIfAborted();
    await this.init();
    return path;
  }

  private init(): Promise<void> {
    this.ready ??= (async () => {
      try {
        await mkdir(this.tmpDir, { recursive: true });
        await mkdir(this.lockDir, { recursive: true });
      } catch (e) {
        throw new StorageError(
          `${this.description}: cannot create the store's folder: ${(e as Error).message}`,
          {
            cause: e,
          },
        );
      }
      await removeOrphanedTempFiles(this.tmpDir);
    })();
    return this.ready;
  }

  private async makeParents(path: string, key: string): Promise<void> {
    const parent = dirname(path);
    if (parent === this.root) return;
    let first: string | undefined;
    try {
      first = await mkdir(parent, { recursive: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' || code === 'ENOTDIR') {
        throw new InvalidArgumentError(
          `${this.description}: key "${key}" needs a folder where an object already is (a key cannot be both an object and a prefix of another key)`,
        );
      }
      throw e;
    }
    // New folders must be durable too: fsync each one's parent, deepest last.
    if (first !== undefined) {
      let dir = parent;
      const created: string[] = [];
      while (dir.length >= first.length) {
        created.push(dirname(dir));
        dir = dirname(dir);
      }
      for (const d of created.reverse()) await fsyncDir(d);
    }
  }

  private async *walk(
    relDir: string,
    namePrefix: string,
    signal?: AbortSignal,
  ): AsyncIterable<ObjectMeta> {
    signal?.throwIfAborted();
    const abs = relDir === '' ? this.root : join(this.root, ...relDir.split('/'));
    let entries;
    try {
      entries = await readdir(abs, { withFileTypes: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw new StorageError(
        `${this.description}: cannot list "${relDir}": ${(e as Error).message}`,
        { cause: e },
      );
    }
    // A folder sorts as its name plus "/", which is where its keys fall in byte order.
    const named = entries
      .filter((d) => d.name.startsWith(namePrefix) && (d.isFile() || d.isDirectory()))
      .filter((d) => !(relDir === '' && d.name === FILE_STORE_INTERNAL_DIR))
      .map((d) => ({ d, sortKey: d.isDirectory() ? `${d.name}/` : d.name }))
      .sort((a, b) => compareKeys(a.sortKey, b.sortKey));
    for (const { d } of named) {
      const key = relDir === '' ? d.name : `${relDir}/${d.name}`;
      if (d.isDirectory()) {
        yield* this.walk(key, '', signal);
        continue;
      }
      const st = await stat(join(abs, d.name), { bigint: true }).catch(() => undefined);
      if (st?.isFile())
        yield { key, size: Number(st.size), version: versionOf(st), lastModified: st.mtime };
    }
  }

  private translate(e: NodeJS.ErrnoException, key: string, op: string): Error {
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR' || e.code === 'EISDIR') {
      return new NotFoundError(key, `${this.description}: object "${key}" does not exist`, e);
    }
    if (e.code === 'EACCES' || e.code === 'EPERM') {
      return new StorageError(`${this.description}: ${op} "${key}": permission denied`, {
        code: 'ACCESS_DENIED',
        cause: e,
      });
    }
    const retriable =
      e.code === 'EMFILE' || e.code === 'ENFILE' || e.code === 'EAGAIN' || e.code === 'EBUSY';
    return new StorageError(`${this.description}: ${op} "${key}": ${e.message}`, {
      retriable,
      cause: e,
    });
  }
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
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Deletes temporary files whose writing process is gone (a crash mid-put). */
async function removeOrphanedTempFiles(tmpDir: string): Promise<void> {
  const names = await readdir(tmpDir).catch(() => [] as string[]);
  for (const name of names) {
    const pid = Number(name.split('-')[0]);
    if (!Number.isInteger(pid) || pid === process.pid || isAlive(pid)) continue;
    await unlink(join(tmpDir, name)).catch(() => undefined);
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

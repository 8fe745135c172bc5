/**
 * What a file source is, beyond its path: the device and inode it lives on
 * and a fingerprint of its first bytes. A rotated log keeps its path but not
 * its inode; a reused inode keeps its number but not its first bytes; so the
 * three together tell "the same file, grown" from "another file".
 */
import { createHash } from 'node:crypto';
import { constants as fsConstants, type BigIntStats, type Stats } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { InvalidArgumentError, StorageError } from '../errors.ts';

/** Bytes fingerprinted by default: the first KiB of the file as stored. */
export const DEFAULT_FINGERPRINT_BYTES = 1024;

/**
 * A file source's identity.
 *
 * `dev` and `ino` are decimal strings, not numbers: inode numbers on XFS,
 * btrfs and network filesystems pass 2^53, where a JavaScript number would
 * silently round two files onto one identity.
 */
export interface SourceIdentity {
  /** The path the source was found at, as given (not resolved). */
  path: string;
  /** The device the file lives on, in decimal (`stat.dev`). */
  dev: string;
  /** The file's inode number, in decimal (`stat.ino`). */
  ino: string;
  /**
   * Lowercase hex SHA-256 of the file's first `fingerprintLength` bytes as
   * stored (compressed bytes for a compressed file).
   */
  fingerprint: string;
  /**
   * Bytes the fingerprint covers: the fingerprint size asked for, or fewer
   * when the file was shorter (a file still being written, in follow mode).
   */
  fingerprintLength: number;
  /**
   * A stable name for the source, usable in object names (only
   * `[A-Za-z0-9._-]`, at most 80 characters): `<dev>-<ino>-<16 hex digits of
   * the fingerprint>`. It is fixed when a source is first identified: a file
   * identified again after it grew past a short fingerprint gets another
   * fingerprint and so another key, so a caller that finds a recorded
   * identity checks it with {@link matchesSource} and keeps the recorded key.
   */
  key: string;
}

/** Options of {@link identifySource}. */
export interface IdentifySourceOptions {
  /**
   * Bytes of the file's start to fingerprint, as stored (a positive integer).
   * @default 1024 ({@link DEFAULT_FINGERPRINT_BYTES})
   */
  fingerprintBytes?: number;
}

/**
 * A regular file opened for reading, with its device and inode taken from the
 * open descriptor, so that what is identified and what is read are the same
 * file even if the path is renamed or replaced meanwhile. The caller closes
 * `handle`.
 */
export interface OpenedSource {
  /** The path it was opened at, as given. */
  path: string;
  /** The open file; close it when done. */
  handle: FileHandle;
  /** `stat.dev` of the open file, in decimal. */
  dev: string;
  /** `stat.ino` of the open file, in decimal. */
  ino: string;
}

/**
 * Opens a regular file for reading. Symbolic links are followed: a path the
 * user names is taken to mean what it points at.
 *
 * @throws {InvalidArgumentError} when the path does not exist, cannot be
 * read for lack of permission, or is not a regular file (a folder, FIFO,
 * socket or device), naming the path and what it is.
 * @throws {StorageError} for other failures of the filesystem.
 */
export async function openSource(path: string): Promise<OpenedSource> {
  // stat first: opening a FIFO would block for a writer, opening a device may act on it.
  let stats = await statFile(path);
  checkRegular(path, stats);
  let handle: FileHandle;
  try {
    // O_NONBLOCK: if the path was swapped for a FIFO since the stat, opening does not hang.
    handle = await open(path, fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0));
  } catch (e) {
    throw fileError(path, e);
  }
  try {
    stats = await handle.stat({ bigint: true });
    checkRegular(path, stats);
  } catch (e) {
    await handle.close().catch(() => undefined);
    throw e instanceof InvalidArgumentError ? e : fileError(path, e);
  }
  return { path, handle, dev: stats.dev.toString(), ino: stats.ino.toString() };
}

/**
 * Identifies a file source: its device, inode and a fingerprint of its first
 * bytes (as stored: a compressed file's compressed bytes).
 *
 * @param source a path (opened and closed here), or a source opened with
 * {@link openSource} (left open), to identify exactly the file being read.
 * @throws {InvalidArgumentError} as {@link openSource} does, and for a bad
 * `fingerprintBytes`.
 * @throws {StorageError} for other failures of the filesystem.
 *
 * @example
 * const identity = await identifySource('logs/app.log');
 * // identity.key: '2049-1837465-3f1a9c0b7d2e4f61'
 */
export async function identifySource(
  source: string | OpenedSource,
  options: IdentifySourceOptions = {},
): Promise<SourceIdentity> {
  const fingerprintBytes = options.fingerprintBytes ?? DEFAULT_FINGERPRINT_BYTES;
  if (!Number.isSafeInteger(fingerprintBytes) || fingerprintBytes < 1) {
    throw new InvalidArgumentError(
      `identifySource: fingerprintBytes must be a positive integer, got ${String(fingerprintBytes)}`,
    );
  }
  return withOpened(source, async (opened) => {
    const prefix = await readPrefix(opened, fingerprintBytes);
    const fingerprint = sha256(prefix);
    return {
      path: opened.path,
      dev: opened.dev,
      ino: opened.ino,
      fingerprint,
      fingerprintLength: prefix.byteLength,
      key: `${opened.dev}-${opened.ino}-${fingerprint.slice(0, 16)}`,
    };
  });
}

/**
 * Whether `b` is the same source as `a`, judged from the two identities
 * alone: the same device and inode, and fingerprints of the same length that
 * are equal. Two fingerprints of different lengths (a file that grew between
 * the two identifications) cannot be compared by their hashes, so this says
 * false for them; use {@link matchesSource}, which re-reads the file.
 */
export function sameSource(a: SourceIdentity, b: SourceIdentity): boolean {
  return (
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.fingerprintLength === b.fingerprintLength &&
    a.fingerprint === b.fingerprint
  );
}

/**
 * Whether the file at `source` is still the source `identity` names: the same
 * device and inode, and its first `identity.fingerprintLength` bytes hash to
 * `identity.fingerprint`. A file that grew since (follow mode) still
 * matches; one that was truncated below the fingerprinted bytes, replaced, or
 * whose inode was reused for other content does not. A path that no longer
 * exists or is no regular file does not match either.
 *
 * @param source a path, or a source opened with {@link openSource} (left open).
 * @throws {InvalidArgumentError} when the path cannot be read for lack of permission.
 * @throws {StorageError} for other failures of the filesystem.
 */
export async function matchesSource(
  source: string | OpenedSource,
  identity: SourceIdentity,
): Promise<boolean> {
  let opened: OpenedSource;
  if (typeof source === 'string') {
    try {
      opened = await openSource(source);
    } catch (e) {
      // Gone, or no regular file any more: not the source. A refused read is the caller's to fix.
      if (e instanceof InvalidArgumentError && !isPermissionError(e.cause)) return false;
      throw e;
    }
  } else {
    opened = source;
  }
  try {
    if (opened.dev !== identity.dev || opened.ino !== identity.ino) return false;
    const prefix = await readPrefix(opened, identity.fingerprintLength);
    return (
      prefix.byteLength === identity.fingerprintLength && sha256(prefix) === identity.fingerprint
    );
  } finally {
    if (typeof source === 'string') await opened.handle.close().catch(() => undefined);
  }
}

/**
 * Translates a failed filesystem call on an input path into a Spillway error:
 * a missing path or a refused read is an {@link InvalidArgumentError} (the
 * user named something that cannot be read), anything else a
 * {@link StorageError} with the original error as its cause.
 *
 * @param what how the path is named in the message, e.g. "file" or "folder"
 */
export function fileError(path: string, error: unknown, what = 'file'): Error {
  if (error instanceof InvalidArgumentError || error instanceof StorageError) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new InvalidArgumentError(`no such ${what}: ${path}`, error);
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new InvalidArgumentError(`cannot read ${path}: permission denied`, error);
  }
  if (code === 'ELOOP') {
    return new InvalidArgumentError(
      `cannot read ${path}: too many levels of symbolic links`,
      error,
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  return new StorageError(`cannot read ${path}: ${message}`, { retriable: false, cause: error });
}

/** What a non-regular file is, for messages ("a folder", "a FIFO (named pipe)"). */
export function describeFileType(stats: BigIntStats | Stats): string {
  if (stats.isFile()) return 'a regular file';
  if (stats.isDirectory()) return 'a folder';
  if (stats.isFIFO()) return 'a FIFO (named pipe)';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

async function statFile(path: string): Promise<BigIntStats> {
  try {
    return await stat(path, { bigint: true });
  } catch (e) {
    throw fileError(path, e);
  }
}

function checkRegular(path: string, stats: BigIntStats): void {
  if (!stats.isFile()) {
    throw new InvalidArgumentError(
      `${path} is ${describeFileType(stats)}, not a regular file; only regular files can be ingested`,
    );
  }
}

function isPermissionError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'EACCES' || code === 'EPERM';
}

/** Runs `work` on an opened source, opening (and closing) a path first. */
async function withOpened<T>(
  source: string | OpenedSource,
  work: (opened: OpenedSource) => Promise<T>,
): Promise<T> {
  const opened = typeof source === 'string' ? await openSource(source) : source;
  try {
    return await work(opened);
  } finally {
    if (typeof source === 'string') await opened.handle.close().catch(() => undefined);
  }
}

/** The file's first `bytes` bytes, or all of it when shorter. */
async function readPrefix(opened: OpenedSource, bytes: number): Promise<Buffer> {
  const buffer = Buffer.alloc(bytes);
  let filled = 0;
  try {
    while (filled < bytes) {
      const { bytesRead } = await opened.handle.read(buffer, filled, bytes - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
  } catch (e) {
    throw fileError(opened.path, e);
  }
  return buffer.subarray(0, filled);
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

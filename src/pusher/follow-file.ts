/**
 * Follow mode (`spillway ingest --follow`): a growing file read as it grows,
 * across rotations, each file at the path one source with its own identity.
 */
import { sleep, type Clock } from '../clock.ts';
import { InvalidArgumentError } from '../errors.ts';
import { anySignal } from '../lifecycle.ts';
import { readFileChunks, type FileChunk, type ReadChunksOptions } from './file-chunks.ts';
import {
  DEFAULT_FINGERPRINT_BYTES,
  identifySource,
  matchesSource,
  openSource,
  type OpenedSource,
  type SourceIdentity,
} from './source-identity.ts';

/** How often a followed file is checked when no poll interval is given, in milliseconds. */
export const DEFAULT_POLL_INTERVAL_MS = 250;

/** Options of follow mode. */
export interface FollowOptions {
  /**
   * How often the file is checked for appended bytes, rotation and
   * truncation once its end is reached, in milliseconds (positive). It bounds
   * the delay between a line's `\n` being written and its chunk being
   * yielded.
   * @default 250 ({@link DEFAULT_POLL_INTERVAL_MS}) in {@link followFile}
   */
  pollIntervalMs: number;
  /** Stops following: the generator returns, and the current source is not marked last. */
  signal?: AbortSignal;
  /** Where the poll timers are set; tests pass a manual clock. @default the system clock */
  clock?: Clock;
}

/**
 * Options of {@link followFile}: those of `readFileChunks`, where
 * `fromOffset` and `fromLine` apply to the first file followed only (the
 * files after a rotation start at 0), and:
 */
export interface FollowFileOptions extends Omit<ReadChunksOptions, 'follow'> {
  /** Follow settings; `pollIntervalMs` defaults to 250. */
  follow?: Partial<FollowOptions>;
  /**
   * The source a previous run was reading, to resume: `fromOffset` and
   * `fromLine` apply to the file at the path only if it still is this
   * source (same device and inode, same first bytes, see `matchesSource`),
   * and it keeps this identity's key. Otherwise the file at the path is a
   * new source, read from its start; the rest of the old one, wherever it
   * was rotated to, is not looked for.
   */
  identity?: SourceIdentity;
  /** Bytes fingerprinted to identify each file; see `identifySource`. @default 1024 */
  fingerprintBytes?: number;
}

/** A chunk of a followed file, with the identity of the file it came from. */
export interface FollowedChunk {
  /**
   * The source the chunk belongs to. Its `key` stays the same for the whole
   * source; while the file is shorter than `fingerprintBytes`, later chunks
   * carry a fingerprint over more bytes (record the latest).
   */
  identity: SourceIdentity;
  /** The chunk; `last` marks the end of a source that was rotated away or truncated. */
  chunk: FileChunk;
}

/**
 * Follows the file at `path` as it grows, like `tail -F`: yields chunks of
 * complete entries as lines are appended (see `readFileChunks`: a partial
 * last line waits for its `\n`), and survives rotation.
 *
 * Rotation: when the path names another file (another device or inode: the
 * file was renamed away and a new one created), the old file, still open,
 * is read to its end and its final chunk yielded with `last: true` (an
 * unterminated last line is an entry then); the new file is then read from
 * its start as a new source, with its own identity. Lines written to the old
 * file after that are not read. A path that names nothing for a while
 * (renamed away, the new file not yet created) is waited for.
 *
 * Truncation (the file shrinks below what was read, as `copytruncate` does)
 * also ends the source with `last: true`; the truncated file is then a new
 * source from offset 0. A truncated file that grows back past the old size
 * between two polls cannot be told from a grown one. Should the new source
 * get the same key as the old (same device, inode and first bytes), its key
 * gets a suffix `.<n>`, so that two sources never share a key.
 *
 * Aborting `signal` (or `follow.signal`) ends the generator (without throwing)
 * and closes the file; the current source is not marked last.
 *
 * @throws {InvalidArgumentError} for bad options, a path that is not a
 * regular file when following starts, or a compressed file ("--follow reads
 * plain files").
 * @throws {IngestInputError} for content that does not fit the format
 * (after yielding the entries before it).
 * @throws {StorageError} when the filesystem fails.
 *
 * @example
 * const controller = new AbortController();
 * for await (const { identity, chunk } of followFile('logs/app.log', {
 *   format: 'lines',
 *   chunkBytes: 1024 * 1024,
 *   maxEntryBytes: 1024 * 1024,
 *   signal: controller.signal,
 * })) {
 *   await push(identity.key, chunk);
 * }
 */
export async function* followFile(
  path: string,
  options: FollowFileOptions,
): AsyncGenerator<FollowedChunk> {
  const signal = anySignal(options.signal, options.follow?.signal);
  const follow: FollowOptions = {
    pollIntervalMs: options.follow?.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS,
    ...(signal ? { signal } : {}),
    ...(options.follow?.clock ? { clock: options.follow.clock } : {}),
  };
  const fingerprint = { fingerprintBytes: options.fingerprintBytes };
  let resume = options.identity;
  let first = true;
  // Keys of the sources followed so far, as identifySource made them.
  const keys = new Set<string>();
  let opened: OpenedSource | undefined = await openSource(path);
  while (opened !== undefined) {
    try {
      let identity = await identifySource(opened, fingerprint);
      let fromOffset = 0;
      let fromLine: number | undefined;
      if (first && resume === undefined) {
        fromOffset = options.fromOffset ?? 0;
        fromLine = options.fromLine;
      } else if (resume !== undefined && (await matchesSource(opened, resume))) {
        identity = { ...identity, key: resume.key };
        fromOffset = options.fromOffset ?? 0;
        fromLine = options.fromLine;
      }
      resume = undefined;
      first = false;
      if (keys.has(identity.key)) {
        // A truncated file that starts as it did: another source all the same.
        identity = { ...identity, key: `${identity.key}.${keys.size}` };
      }
      keys.add(identity.key);
      let last = false;
      for await (const chunk of readFileChunks(opened, {
        ...options,
        signal,
        fromOffset,
        fromLine,
        follow,
      })) {
        identity = await refreshFingerprint(opened, identity, chunk, options.fingerprintBytes);
        last = chunk.last;
        yield { identity, chunk };
      }
      if (!last) return;
    } finally {
      await opened.handle.close().catch(() => undefined);
    }
    opened = await waitForFile(path, follow);
  }
}

/**
 * The identity with a fingerprint over more bytes, once the file has them:
 * a file that was short when first identified gets a stronger fingerprint
 * as it grows. The key stays.
 */
async function refreshFingerprint(
  opened: OpenedSource,
  identity: SourceIdentity,
  chunk: FileChunk,
  fingerprintBytes: number | undefined,
): Promise<SourceIdentity> {
  const wanted = fingerprintBytes ?? DEFAULT_FINGERPRINT_BYTES;
  if (identity.fingerprintLength >= wanted) return identity;
  if (chunk.offset + chunk.size <= identity.fingerprintLength) return identity;
  const now = await identifySource(opened, { fingerprintBytes: wanted });
  if (now.fingerprintLength <= identity.fingerprintLength) return identity;
  return { ...identity, fingerprint: now.fingerprint, fingerprintLength: now.fingerprintLength };
}

/**
 * Opens the file at `path` once there is one, polling; undefined when a
 * signal aborts first.
 */
async function waitForFile(path: string, follow: FollowOptions): Promise<OpenedSource | undefined> {
  for (;;) {
    if (follow.signal?.aborted) return undefined;
    try {
      return await openSource(path);
    } catch (e) {
      const code = ((e as InvalidArgumentError).cause as NodeJS.ErrnoException | undefined)?.code;
      if (!(e instanceof InvalidArgumentError) || (code !== 'ENOENT' && code !== 'ENOTDIR')) {
        throw e;
      }
    }
    try {
      await sleep(follow.pollIntervalMs, follow);
    } catch {
      return undefined;
    }
  }
}

/**
 * The files `spillway ingest` reads, from the paths on its command line:
 * files as given, folders walked, glob patterns matched.
 */
import { lstat, readdir, realpath, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.ts';
import { describeFileType, fileError } from './source-identity.ts';

/** A folder Spillway keeps its own state in; never ingested. */
const STATE_FOLDER = '.spillway';

/** Options of {@link expandPaths}. */
export interface ExpandPathsOptions {
  /** Stops the expansion: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Expands command-line paths into the files to read, in a stable order.
 *
 * - A file is taken as given (a symbolic link the user names is followed).
 * - A folder is walked recursively, depth first, entries sorted by name in
 *   byte order (a subfolder's files come where its name sorts). Only regular
 *   files are taken: symbolic links inside are skipped (a linked folder is
 *   never entered, so there are no loops and no escaping the folder), and so
 *   are FIFOs, sockets and devices. Dot files are included; folders named
 *   `.spillway` are skipped.
 * - A path that does not exist but holds `*`, `?` or `[` is a glob pattern:
 *   `*` matches any characters within a name, `?` one character, `[abc]`,
 *   `[a-z]` and `[!abc]` (or `[^abc]`) one of (or none of) a set, `**` as a
 *   whole segment any number of folders, and `\` makes the next character
 *   literal. Segments are separated by `/`. As in a shell, a wildcard does
 *   not match a name's leading dot (write `.*` for those), and `**` does not
 *   enter dot folders. Matches are regular files found as in a folder walk
 *   (symbolic links skipped), sorted the same way. A path that exists is
 *   never taken for a pattern, even when it holds such characters.
 *
 * Paths come back as given, or joined onto the argument they were found
 * under. A file reached twice (the same device and inode: through a
 * symbolic link, another spelling of its path, or a hard link) is listed
 * once, where it * was first found.
 *
 * @throws {InvalidArgumentError} for a path that does not exist and is no
 * pattern ("no such file or folder: X"), a pattern that matches no file, a
 * named path that is neither a file nor a folder, or a folder that cannot be
 * read for lack of permission.
 * @throws {StorageError} for other failures of the filesystem.
 *
 * @example
 * await expandPaths(['logs/', 'data/*.ndjson.gz']);
 * // ['logs/a.log', 'logs/old/b.log', 'data/2024-01.ndjson.gz', ...]
 */
export async function expandPaths(
  args: string[],
  options: ExpandPathsOptions = {},
): Promise<string[]> {
  const { signal } = options;
  const out: string[] = [];
  const seen = new Set<string>();
  const add = async (path: string, real: string): Promise<void> => {
    // Hard links have real paths of their own: one file is one inode, read once.
    const id = (await fileId(path)) ?? real;
    if (seen.has(id)) return;
    seen.add(id);
    out.push(path);
  };
  for (const arg of args) {
    signal?.throwIfAborted();
    const stats = await statIfExists(arg);
    if (stats === undefined) {
      if (!hasMagic(arg)) throw new InvalidArgumentError(`no such file or folder: ${arg}`);
      const found = await expandGlob(arg, signal);
      if (found.length === 0) {
        throw new InvalidArgumentError(`no files match the pattern ${arg}`);
      }
      for (const f of found) await add(f.path, f.real);
    } else if (stats.isFile()) {
      await add(arg, await realPath(arg));
    } else if (stats.isDirectory()) {
      const real = await realPath(arg);
      for (const rel of await walk(arg, signal)) await add(join(arg, rel), join(real, rel));
    } else {
      throw new InvalidArgumentError(
        `${arg} is ${describeFileType(stats)}; spillway ingest reads regular files and folders of them`,
      );
    }
  }
  return out;
}

/** A folder's entries, sorted by name in byte order; none when it vanished meanwhile. */
async function entries(
  dir: string,
  signal: AbortSignal | undefined,
): Promise<{ name: string; kind: 'file' | 'folder' | 'other' }[]> {
  signal?.throwIfAborted();
  let dirents;
  try {
    dirents = await readdir(dir, { withFileTypes: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw fileError(dir, e, 'folder');
  }
  dirents.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  const out: { name: string; kind: 'file' | 'folder' | 'other' }[] = [];
  for (const d of dirents) {
    let kind: 'file' | 'folder' | 'other';
    if (d.isFile()) kind = 'file';
    else if (d.isDirectory()) kind = 'folder';
    else if (d.isSymbolicLink()) kind = 'other';
    else if (d.isFIFO() || d.isSocket() || d.isCharacterDevice() || d.isBlockDevice()) {
      kind = 'other';
    } else {
      // Some filesystems do not say (DT_UNKNOWN): ask, without following links.
      const s = await lstat(join(dir, d.name)).catch(() => undefined);
      kind = s?.isFile() ? 'file' : s?.isDirectory() ? 'folder' : 'other';
    }
    out.push({ name: d.name, kind });
  }
  return out;
}

/** The regular files under `dir`, relative to it, depth first in name order. */
async function walk(dir: string, signal: AbortSignal | undefined): Promise<string[]> {
  const out: string[] = [];
  const visit = async (rel: string): Promise<void> => {
    for (const e of await entries(join(dir, rel), signal)) {
      const path = rel === '' ? e.name : join(rel, e.name);
      if (e.kind === 'file') out.push(path);
      else if (e.kind === 'folder' && e.name !== STATE_FOLDER) await visit(path);
    }
  };
  await visit('');
  return out;
}

/** Whether a path holds an unescaped glob character. */
function hasMagic(pattern: string): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') i++;
    else if (c === '*' || c === '?' || c === '[') return true;
  }
  return false;
}

/** A pattern's text with its backslash escapes removed. */
function unescape(text: string): string {
  return text.replace(/\\(.)/gs, '$1');
}

/**
 * The regular expression one segment of a glob matches a whole name with.
 * Exported for its tests.
 */
export function globSegmentRegExp(segment: string): RegExp {
  let source = '';
  // As in a shell, a wildcard does not match a leading dot.
  if (segment[0] !== '.' && !segment.startsWith('\\.')) source += '(?!\\.)';
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i] as string;
    if (c === '\\' && i + 1 < segment.length) {
      source += escapeRegExp(segment[++i] as string);
    } else if (c === '*') {
      while (segment[i + 1] === '*') i++;
      source += '.*';
    } else if (c === '?') {
      source += '.';
    } else if (c === '[') {
      const end = classEnd(segment, i);
      if (end < 0) {
        source += '\\[';
        continue;
      }
      let body = segment.slice(i + 1, end);
      let negate = false;
      if (body[0] === '!' || body[0] === '^') {
        negate = true;
        body = body.slice(1);
      }
      let cls = '';
      for (let k = 0; k < body.length; k++) {
        const ch = body[k] as string;
        if (ch === '\\' && k + 1 < body.length) cls += escapeClassChar(body[++k] as string);
        else if (ch === '-' && k > 0 && k < body.length - 1) cls += '-';
        else cls += escapeClassChar(ch);
      }
      source += negate ? `[^${cls}]` : `[${cls}]`;
      i = end;
    } else {
      source += escapeRegExp(c);
    }
  }
  return new RegExp(`^${source}$`, 'su');
}

/** Index of the `]` closing the class opened at `start`, or -1 (then `[` is literal). */
function classEnd(segment: string, start: number): number {
  let i = start + 1;
  if (segment[i] === '!' || segment[i] === '^') i++;
  // A "]" first in the class is one of its characters.
  if (segment[i] === ']') i++;
  for (; i < segment.length; i++) {
    if (segment[i] === '\\') i++;
    else if (segment[i] === ']') return i;
  }
  return -1;
}

function escapeRegExp(c: string): string {
  return /[\\^$.*+?()[\]{}|/-]/.test(c) ? `\\${c}` : c;
}

function escapeClassChar(c: string): string {
  return /[\\\]^[-]/.test(c) ? `\\${c}` : c;
}

/** Files matching a glob pattern, each with its real path. */
async function expandGlob(
  pattern: string,
  signal: AbortSignal | undefined,
): Promise<{ path: string; real: string }[]> {
  const segments = pattern.split('/');
  // The leading segments without wildcards name the folder to start from.
  let fixed = 0;
  while (fixed < segments.length - 1 && !hasMagic(segments[fixed] as string)) fixed++;
  const base = segments.slice(0, fixed).map(unescape).join('/');
  const root = base === '' ? (isAbsolute(pattern) ? '/' : '.') : base;
  const rest = segments.slice(fixed).filter((s) => s !== '');
  const matchers = rest.map((s) => (s === '**' ? '**' : globSegmentRegExp(s)));
  const found = new Map<string, string[]>();
  const visit = async (rel: string[], at: number): Promise<void> => {
    const matcher = matchers[at];
    if (matcher === undefined) return;
    const dir = join(root, ...rel);
    if (matcher === '**') {
      // Last, "**" matches every file below; else it stands for zero or more folders.
      const last = at === matchers.length - 1;
      if (!last) await visit(rel, at + 1);
      for (const e of await entries(dir, signal)) {
        if (e.name.startsWith('.')) continue;
        const path = [...rel, e.name];
        if (e.kind === 'folder') await visit(path, at);
        else if (last && e.kind === 'file') found.set(path.join('/'), path);
      }
      return;
    }
    const lastSegment = at === matchers.length - 1;
    for (const e of await entries(dir, signal)) {
      if (!matcher.test(e.name)) continue;
      const path = [...rel, e.name];
      if (lastSegment && e.kind === 'file') found.set(path.join('/'), path);
      else if (!lastSegment && e.kind === 'folder' && e.name !== STATE_FOLDER)
        await visit(path, at + 1);
    }
  };
  await visit([], 0);
  if (found.size === 0) return [];
  const real = await realPath(root);
  return [...found.values()].sort(comparePaths).map((rel) => ({
    path: base === '' && !isAbsolute(pattern) ? join(...rel) : join(root, ...rel),
    real: join(real, ...rel),
  }));
}

/** Orders paths as a folder walk lists them: segment by segment, in byte order. */
function comparePaths(a: string[], b: string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const c = Buffer.compare(Buffer.from(a[i] as string), Buffer.from(b[i] as string));
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

async function statIfExists(path: string) {
  try {
    return await stat(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      // A dangling symbolic link exists, but names nothing to read.
      const link = await lstat(path).catch(() => undefined);
      if (link?.isSymbolicLink()) {
        throw new InvalidArgumentError(
          `${path} is a symbolic link to nothing (its target is gone)`,
        );
      }
      return undefined;
    }
    throw fileError(path, e);
  }
}

async function realPath(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    // Vanished meanwhile: fall back to the lexical path; reading it will say what is wrong.
    return resolve(path);
  }
}

/** A file's device and inode, or undefined when it vanished meanwhile. */
async function fileId(path: string): Promise<string | undefined> {
  try {
    const s = await stat(path, { bigint: true });
    return `${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}

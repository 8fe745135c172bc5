import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import type { OpenedSource, SourceIdentity } from './source-identity.ts';

/**
 * The progress key of a file source: `{dev}-{ino}-{fingerprintLength}-{16
 * hex digits of the fingerprint}`. It carries how many bytes were
 * fingerprinted, so a file that grew since (a log still being written) is
 * still recognised from its key alone: its first `fingerprintLength` bytes
 * hash the same.
 */
export function sourceKey(identity: SourceIdentity): string {
  return `${identity.dev}-${identity.ino}-${identity.fingerprintLength}-${identity.fingerprint.slice(0, 16)}`;
}

/**
 * The recorded key, among `keys`, that names the file `identity` describes:
 * the same device and inode, and the same hash of the bytes the key's
 * fingerprint covered (re-read from `identity.path` when their number
 * differs). Undefined when none does: the file is a new source.
 *
 * @param opened the file `identity` was taken from, still open: its bytes
 * are re-read from it rather than from `identity.path`, which may name
 * another file by now (rotated, replaced). Pass it whenever there is one.
 */
export async function findSourceKey(
  identity: SourceIdentity,
  keys: Iterable<string>,
  opened?: OpenedSource,
): Promise<string | undefined> {
  const prefix = `${identity.dev}-${identity.ino}-`;
  let best: { key: string; length: number } | undefined;
  for (const key of keys) {
    if (!key.startsWith(prefix)) continue;
    const m = /^(\d+)-([0-9a-f]{16})$/.exec(key.slice(prefix.length));
    if (!m) continue;
    const length = Number(m[1]);
    const hex = m[2] as string;
    let matches: boolean;
    if (length === identity.fingerprintLength) matches = identity.fingerprint.startsWith(hex);
    else if (length > identity.fingerprintLength)
      matches = false; // the file shrank below it
    else {
      matches =
        (await hashPrefix(opened?.handle ?? identity.path, length))?.startsWith(hex) === true;
    }
    if (matches && (!best || length > best.length)) best = { key, length };
  }
  return best?.key;
}

/**
 * Hex SHA-256 of a file's first `length` bytes, or undefined when it is
 * shorter or unreadable. A path is opened and closed here; a handle is left open.
 */
async function hashPrefix(file: string | FileHandle, length: number): Promise<string | undefined> {
  let handle: FileHandle | undefined;
  try {
    handle = typeof file === 'string' ? await open(file, 'r') : file;
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await handle.read(buf, got, length - got, got);
      if (bytesRead === 0) return undefined;
      got += bytesRead;
    }
    return createHash('sha256').update(buf).digest('hex');
  } catch {
    return undefined;
  } finally {
    if (typeof file === 'string') await handle?.close();
  }
}

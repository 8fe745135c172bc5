import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  appendFile,
  mkdir,
  mkdtemp,
  rename,
  rm,
  stat,
  symlink,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { InvalidArgumentError } from '../../src/errors.ts';
import {
  identifySource,
  matchesSource,
  openSource,
  sameSource,
} from '../../src/pusher/source-identity.ts';
import { findSourceKey, sourceKey } from '../../src/pusher/source-key.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spillway-source-identity-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let files = 0;
async function file(content: string | Uint8Array): Promise<string> {
  const path = join(dir, `f${files++}`);
  await writeFile(path, content);
  return path;
}

const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

test('a file is identified by device, inode and a hash of its first KiB', async () => {
  const content = 'x'.repeat(3000);
  const path = await file(content);
  const id = await identifySource(path);
  const s = await stat(path, { bigint: true });
  assert.equal(id.path, path);
  assert.equal(id.dev, s.dev.toString());
  assert.equal(id.ino, s.ino.toString());
  assert.equal(id.fingerprint, sha256(content.slice(0, 1024)));
  assert.equal(id.fingerprintLength, 1024);
  assert.equal(id.key, `${id.dev}-${id.ino}-${id.fingerprint.slice(0, 16)}`);
  assert.match(id.key, /^[A-Za-z0-9._-]+$/);
  const small = await identifySource(path, { fingerprintBytes: 10 });
  assert.equal(small.fingerprint, sha256(content.slice(0, 10)));
});

test('a compressed file is fingerprinted by its stored bytes', async () => {
  const gz = gzipSync('hello\n');
  const id = await identifySource(await file(gz));
  assert.equal(id.fingerprint, sha256(gz));
  assert.equal(id.fingerprintLength, gz.length);
});

test('a short file records how much it fingerprinted, and still matches after it grows', async () => {
  const path = await file('abc\n');
  const early = await identifySource(path);
  assert.equal(early.fingerprintLength, 4);
  assert.equal(early.fingerprint, sha256('abc\n'));
  await appendFile(path, 'y'.repeat(5000));
  const later = await identifySource(path);
  assert.equal(later.fingerprintLength, 1024);
  // Hashes of different lengths cannot be compared; the file can.
  assert.equal(sameSource(early, later), false);
  assert.equal(await matchesSource(path, early), true);
  assert.equal(await matchesSource(path, later), true);
  assert.equal(sameSource(later, await identifySource(path)), true);
});

test('a file renamed away and replaced, rewritten in place, or truncated is another source', async () => {
  const path = await file('first content\n');
  const id = await identifySource(path);
  await rename(path, `${path}.1`);
  await writeFile(path, 'first content\n');
  assert.equal(await matchesSource(path, id), false, 'another inode');
  assert.equal(await matchesSource(`${path}.1`, id), true, 'the renamed file is still the source');

  const inPlace = await file('aaaa\n');
  const before = await identifySource(inPlace);
  await writeFile(inPlace, 'bbbb\n');
  assert.equal(await matchesSource(inPlace, before), false, 'other first bytes');
  await truncate(inPlace, 2);
  assert.equal(await matchesSource(inPlace, before), false, 'shorter than the fingerprint');
});

test('a path that is gone or no regular file does not match', async () => {
  const path = await file('x\n');
  const id = await identifySource(path);
  await rm(path);
  assert.equal(await matchesSource(path, id), false);
  await mkdir(path);
  assert.equal(await matchesSource(path, id), false);
});

test('identifying a missing path, a folder or a bad fingerprint size fails with InvalidArgumentError', async () => {
  await assert.rejects(identifySource(join(dir, 'missing')), (e: unknown) => {
    assert.ok(e instanceof InvalidArgumentError);
    assert.match(e.message, /^no such file: .*missing$/);
    return true;
  });
  await assert.rejects(identifySource(dir), /is a folder, not a regular file/);
  const path = await file('x');
  for (const fingerprintBytes of [0, -1, 1.5, Number.NaN]) {
    await assert.rejects(identifySource(path, { fingerprintBytes }), InvalidArgumentError);
  }
});

test('a symbolic link named explicitly is followed to its file', async () => {
  const target = await file('target\n');
  const link = join(dir, 'link');
  await symlink(target, link);
  const viaLink = await identifySource(link);
  const direct = await identifySource(target);
  assert.equal(viaLink.path, link);
  assert.equal(viaLink.key, direct.key);
});

test('an opened source identifies the file it has open, even once the path names another', async () => {
  const path = await file('old\n');
  const opened = await openSource(path);
  try {
    await rename(path, `${path}.old`);
    await writeFile(path, 'new\n');
    const id = await identifySource(opened);
    assert.equal(id.fingerprint, sha256('old\n'));
    assert.equal(await matchesSource(opened, id), true);
    assert.equal(await matchesSource(path, id), false);
  } finally {
    await opened.handle.close();
  }
});

test('findSourceKey re-reads the bytes of the file opened, not of whatever the path names by now', async () => {
  const path = await file('abc');
  const key = sourceKey(await identifySource(path));
  await appendFile(path, 'def\n');
  const opened = await openSource(path);
  try {
    const grown = await identifySource(opened);
    assert.equal(await findSourceKey(grown, [key], opened), key, 'the file grew: the same source');
    // The path now names another file with other first bytes (rotated and replaced).
    await rename(path, `${path}.1`);
    await writeFile(path, 'xyz and more');
    assert.equal(await findSourceKey(grown, [key], opened), key);
    assert.equal(
      await findSourceKey(grown, [key]),
      undefined,
      'read through the path: another file',
    );
  } finally {
    await opened.handle.close();
  }
});

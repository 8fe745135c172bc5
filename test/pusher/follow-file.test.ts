import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { ManualClock } from '../../src/clock.ts';
import { InvalidArgumentError } from '../../src/errors.ts';
import { readFileChunks, type FileChunk } from '../../src/pusher/file-chunks.ts';
import { followFile, type FollowedChunk } from '../../src/pusher/follow-file.ts';
import { identifySource } from '../../src/pusher/source-identity.ts';
import { settlesWithin, until } from '../support/deferred.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spillway-follow-file-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let files = 0;
async function file(content: string): Promise<string> {
  const path = join(dir, `f${files++}.log`);
  await writeFile(path, content);
  return path;
}

const OPTIONS = { format: 'lines', chunkBytes: 1024, maxEntryBytes: 1024 } as const;
/** Polls often: the tests wait for yielded chunks, never for time. */
const FAST = { pollIntervalMs: 2 };

/** The generator's next value; fails the test instead of hanging if none comes. */
async function next<T>(gen: AsyncGenerator<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  try {
    const r = await Promise.race([gen.next(), timeout]);
    assert.equal(r.done, false, `the generator ended instead of yielding ${what}`);
    return r.value;
  } finally {
    clearTimeout(timer);
  }
}

const items = (c: FileChunk): string[] => c.items.map((i) => Buffer.from(i).toString());

describe('readFileChunks in follow mode', () => {
  test('yields lines as they are appended, holding a partial line back until its "\\n"', async () => {
    const path = await file('one\ntw');
    const controller = new AbortController();
    const gen = readFileChunks(path, {
      ...OPTIONS,
      follow: { ...FAST, signal: controller.signal },
    });
    const first = await next(gen, 'the first chunk');
    assert.deepEqual(items(first), ['one']);
    assert.deepEqual([first.offset, first.size, first.last], [0, 4, false]);
    await appendFile(path, 'o\nthree\nfo');
    const second = await next(gen, 'the appended lines');
    assert.deepEqual(items(second), ['two', 'three']);
    assert.deepEqual([second.offset, second.size, second.firstLine], [4, 10, 2]);
    await appendFile(path, 'ur\n');
    assert.deepEqual(items(await next(gen, 'the completed line')), ['four']);
    controller.abort();
    assert.deepEqual(await gen.next(), { done: true, value: undefined });
  });

  test('polls by the clock given: appended lines wait for the next poll', async () => {
    const clock = new ManualClock();
    const path = await file('a\n');
    const gen = readFileChunks(path, { ...OPTIONS, follow: { pollIntervalMs: 100, clock } });
    assert.deepEqual(items(await next(gen, 'the first chunk')), ['a']);
    const pending = gen.next();
    await until(() => clock.pendingTimers > 0);
    await appendFile(path, 'b\n');
    assert.equal(await settlesWithin(pending, 50), false, 'read before the poll was due');
    await clock.advance(100);
    const r = await pending;
    assert.deepEqual(items(r.value as FileChunk), ['b']);
    await gen.return(undefined);
  });

  test('a rotated file is read to its end and ends with a last chunk holding its unterminated line', async () => {
    const path = await file('a\n');
    const gen = readFileChunks(path, { ...OPTIONS, follow: FAST });
    assert.deepEqual(items(await next(gen, 'the first chunk')), ['a']);
    await appendFile(path, 'b\npartial');
    await rename(path, `${path}.1`);
    await writeFile(path, 'new\n');
    const rest: FileChunk[] = [];
    for (;;) {
      const c = await next(gen, 'the rest of the rotated file');
      rest.push(c);
      if (c.last) break;
    }
    assert.deepEqual(rest.flatMap(items), ['b', 'partial']);
    const last = rest.at(-1) as FileChunk;
    assert.equal(last.offset + last.size, 'a\nb\npartial'.length);
    assert.deepEqual(await gen.next(), { done: true, value: undefined });
  });
});

describe('followFile', () => {
  test('continues with the new file after a rotation by rename, as a new source from offset 0', async () => {
    const path = await file('1\n2\n');
    const controller = new AbortController();
    const gen = followFile(path, { ...OPTIONS, signal: controller.signal, follow: FAST });
    const first = await next(gen, 'the first chunk');
    assert.deepEqual(items(first.chunk), ['1', '2']);
    const oldIdentity = first.identity;

    await appendFile(path, '3\nunterminated');
    await rename(path, `${path}.1`);
    await writeFile(path, 'n1\nn2\n');

    const seen: FollowedChunk[] = [];
    while (!seen.some((s) => s.identity.key !== oldIdentity.key && s.chunk.items.length > 0)) {
      seen.push(await next(gen, 'chunks of both files'));
    }
    const old = seen.filter((s) => s.identity.key === oldIdentity.key);
    assert.deepEqual(
      old.flatMap((s) => items(s.chunk)),
      ['3', 'unterminated'],
    );
    assert.equal(old.at(-1)?.chunk.last, true);
    const fresh = seen.filter((s) => s.identity.key !== oldIdentity.key);
    assert.deepEqual(
      fresh.flatMap((s) => items(s.chunk)),
      ['n1', 'n2'],
    );
    assert.equal(fresh[0]?.chunk.offset, 0);
    assert.equal(fresh[0]?.chunk.firstLine, 1);
    assert.equal(fresh[0]?.identity.ino, (await stat(path, { bigint: true })).ino.toString());
    assert.notEqual(fresh[0]?.identity.ino, oldIdentity.ino);

    controller.abort();
    assert.deepEqual(await gen.next(), { done: true, value: undefined });
  });

  test('waits for the path to be created again after a rotation that leaves it missing', async () => {
    const path = await file('x\n');
    const controller = new AbortController();
    const gen = followFile(path, { ...OPTIONS, signal: controller.signal, follow: FAST });
    assert.deepEqual(items((await next(gen, 'the first chunk')).chunk), ['x']);
    await rename(path, `${path}.1`);
    // Nothing at the path: the old file is not over yet (its writer may still append).
    await appendFile(`${path}.1`, 'y\n');
    assert.deepEqual(items((await next(gen, 'the line appended after the rename')).chunk), ['y']);
    await writeFile(path, 'z\n');
    const seen: FollowedChunk[] = [];
    while (!seen.some((s) => s.chunk.items.length > 0)) seen.push(await next(gen, 'the new file'));
    assert.equal(seen[0]?.chunk.last, true);
    assert.deepEqual(items((seen.at(-1) as FollowedChunk).chunk), ['z']);
    controller.abort();
  });

  test('a truncated file ends its source; what is written after is a new source from 0', async () => {
    const path = await file('aaa\nbbb\n');
    const controller = new AbortController();
    const gen = followFile(path, { ...OPTIONS, signal: controller.signal, follow: FAST });
    const first = await next(gen, 'the first chunk');
    assert.deepEqual(items(first.chunk), ['aaa', 'bbb']);
    await truncate(path, 0);
    const end = await next(gen, 'the end of the truncated source');
    assert.equal(end.chunk.last, true);
    assert.equal(end.identity.key, first.identity.key);
    await appendFile(path, 'c\n');
    const fresh = await next(gen, 'the new content');
    assert.deepEqual(items(fresh.chunk), ['c']);
    assert.equal(fresh.chunk.offset, 0);
    assert.equal(fresh.identity.ino, first.identity.ino);
    assert.notEqual(fresh.identity.key, first.identity.key);
    controller.abort();
  });

  test('a file truncated and rewritten with the same first bytes gets a key of its own', async () => {
    const clock = new ManualClock();
    const path = await file('aaa\nbbb\n');
    const gen = followFile(path, {
      ...OPTIONS,
      follow: { pollIntervalMs: 100, clock },
      fingerprintBytes: 4,
    });
    const first = await next(gen, 'the first chunk');
    const pending = gen.next();
    await until(() => clock.pendingTimers > 0);
    await writeFile(path, 'aaa\n');
    await clock.advance(100);
    const end = (await pending).value as FollowedChunk;
    assert.equal(end.chunk.last, true);
    const fresh = await next(gen, 'the rewritten content');
    assert.deepEqual(items(fresh.chunk), ['aaa']);
    assert.equal(fresh.identity.fingerprint, first.identity.fingerprint);
    assert.equal(fresh.identity.key, `${first.identity.key}.1`);
    await gen.return(undefined);
  });

  test('a source that was empty keeps its key and gains a full fingerprint as it grows', async () => {
    const path = await file('');
    const controller = new AbortController();
    const gen = followFile(path, {
      ...OPTIONS,
      signal: controller.signal,
      follow: FAST,
      fingerprintBytes: 8,
    });
    await appendFile(path, 'abc\n');
    const a = await next(gen, 'the first line');
    await appendFile(path, 'defghij\n');
    const b = await next(gen, 'the second line');
    assert.equal(b.identity.key, a.identity.key);
    assert.equal(b.identity.fingerprintLength, 8);
    assert.deepEqual(
      { ...b.identity, path },
      { ...(await identifySource(path, { fingerprintBytes: 8 })), key: a.identity.key },
    );
    controller.abort();
  });

  test('resumes a recorded source at its offset, and starts a replaced file from 0', async () => {
    const path = await file('a\nb\nc\n');
    const identity = await identifySource(path);
    const controller = new AbortController();
    const resumed = followFile(path, {
      ...OPTIONS,
      signal: controller.signal,
      follow: FAST,
      identity,
      fromOffset: 2,
      fromLine: 2,
    });
    const r = await next(resumed, 'the resumed chunk');
    assert.deepEqual(items(r.chunk), ['b', 'c']);
    assert.equal(r.chunk.firstLine, 2);
    assert.equal(r.identity.key, identity.key);
    await resumed.return(undefined);

    await rename(path, `${path}.old`);
    await writeFile(path, 'x\ny\n');
    const replaced = followFile(path, {
      ...OPTIONS,
      signal: controller.signal,
      follow: FAST,
      identity,
      fromOffset: 2,
    });
    const n = await next(replaced, 'the replaced file');
    assert.deepEqual(items(n.chunk), ['x', 'y']);
    assert.notEqual(n.identity.key, identity.key);
    controller.abort();
    assert.deepEqual(await replaced.next(), { done: true, value: undefined });
  });

  test('aborting while waiting ends the generator without a last chunk', async () => {
    const path = await file('a\n');
    const controller = new AbortController();
    const gen = followFile(path, {
      ...OPTIONS,
      follow: { pollIntervalMs: 60_000, signal: controller.signal },
    });
    const first = await next(gen, 'the first chunk');
    assert.equal(first.chunk.last, false);
    const pending = gen.next();
    controller.abort();
    assert.deepEqual(await pending, { done: true, value: undefined });
  });

  test('a compressed file is refused', async () => {
    const path = join(dir, 'x.log');
    await writeFile(path, gzipSync('a\n'));
    await assert.rejects(followFile(path, OPTIONS).next(), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.match(e.message, /gzip-compressed; --follow reads plain files/);
      return true;
    });
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createWriteStream, readdirSync } from 'node:fs';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { createGzip, gzipSync } from 'node:zlib';
import { InvalidArgumentError } from '../../src/errors.ts';
import { zstdCompress } from '../../src/format/compression.ts';
import { detectCompression } from '../../src/pusher/file-bytes.ts';
import {
  readFileChunks,
  type FileChunk,
  type ReadChunksOptions,
} from '../../src/pusher/file-chunks.ts';
import { IngestInputError } from '../../src/pusher/record-parser.ts';
import { openSource } from '../../src/pusher/source-identity.ts';
import { MiB, rleBombFrame } from '../format/zstd-bombs.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spillway-file-chunks-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let files = 0;
/** Writes `content` to a new file in the test folder; returns its path. */
async function file(content: string | Uint8Array, name = `f${files++}`): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}

const LINES: Omit<ReadChunksOptions, 'chunkBytes'> = { format: 'lines', maxEntryBytes: 1000 };

async function collect(
  path: string,
  options: Partial<ReadChunksOptions> = {},
): Promise<FileChunk[]> {
  const out: FileChunk[] = [];
  for await (const c of readFileChunks(path, { ...LINES, chunkBytes: 100, ...options })) {
    out.push(c);
  }
  return out;
}

/** Reads until the generator throws; returns what it yielded first and the error. */
async function collectUntilError(
  path: string,
  options: Partial<ReadChunksOptions>,
): Promise<{ chunks: FileChunk[]; error: unknown }> {
  const chunks: FileChunk[] = [];
  try {
    for await (const c of readFileChunks(path, { ...LINES, chunkBytes: 100, ...options })) {
      chunks.push(c);
    }
  } catch (error) {
    return { chunks, error };
  }
  assert.fail('expected the reading to fail');
}

const text = (items: Uint8Array[]): string[] => items.map((i) => Buffer.from(i).toString());
const allItems = (chunks: FileChunk[]): string[] => chunks.flatMap((c) => text(c.items));

/** Lines of varied lengths (some empty), each ending in "\n". */
function sampleLines(count: number): string {
  let out = '';
  for (let i = 0; i < count; i++) out += `${i}:${'abcdefghij'.repeat((i * 7) % 13)}\n`;
  return out;
}

/** Checks the chunks tile `content` from `from`, and that `lines` chunks hold its lines. */
function checkTiling(chunks: FileChunk[], content: Buffer, from = 0, firstLine = 1): void {
  assert.ok(chunks.length > 0);
  let at = from;
  let line = firstLine;
  for (const [i, c] of chunks.entries()) {
    assert.equal(c.offset, at, `chunk ${i} starts where the one before ended`);
    assert.equal(c.firstLine, line, `chunk ${i}'s first line`);
    assert.equal(c.last, i === chunks.length - 1, `only the last chunk is last`);
    const bytes = content.subarray(c.offset, c.offset + c.size).toString();
    const joined = text(c.items).join('\n');
    assert.ok(bytes === `${joined}\n` || (c.last && bytes === joined), `chunk ${i} is its items`);
    assert.equal(c.lines, c.items.length);
    at += c.size;
    line += c.lines;
  }
  assert.equal(at, content.length, 'the chunks cover the whole file');
}

describe('lines', () => {
  test('chunks tile the file, each ending at the first line end at or after chunkBytes', async () => {
    const content = Buffer.from(sampleLines(300));
    const path = await file(content);
    const chunks = await collect(path, { chunkBytes: 500 });
    checkTiling(chunks, content);
    assert.ok(chunks.length > 10);
    for (const c of chunks.slice(0, -1)) {
      const lastLength = (c.items.at(-1) as Uint8Array).byteLength + 1;
      assert.ok(c.size >= 500, `a chunk of ${c.size} bytes ended early`);
      assert.ok(c.size - lastLength < 500, `a chunk of ${c.size} bytes did not end at 500`);
    }
  });

  test('resuming at the end of every chunk yields exactly the rest, with or without fromLine', async () => {
    const content = Buffer.from(sampleLines(200));
    const path = await file(content);
    const chunks = await collect(path, { chunkBytes: 300 });
    for (const [i, c] of chunks.entries()) {
      const rest = chunks.slice(i + 1).flatMap((r) => text(r.items));
      const fromOffset = c.offset + c.size;
      for (const fromLine of [c.firstLine + c.lines, undefined]) {
        const resumed = await collect(path, { chunkBytes: 300, fromOffset, fromLine });
        assert.deepEqual(allItems(resumed), rest);
        assert.deepEqual(resumed[0], {
          ...(chunks[i + 1] ?? {
            items: [],
            offset: content.length,
            size: 0,
            firstLine: c.firstLine + c.lines,
            lines: 0,
          }),
          last: i + 1 >= chunks.length - 1,
        });
      }
    }
  });

  test('a CRLF line end loses its "\\r"; a lone "\\r" is kept; an empty line is an empty entry', async () => {
    const path = await file('a\r\nb\r\n\r\nx\ry\n\n');
    assert.deepEqual(allItems(await collect(path)), ['a', 'b', '', 'x\ry', '']);
  });

  test('a last line without "\\n" is an entry, and the last chunk covers it', async () => {
    const content = Buffer.from('one\ntwo\nthree');
    const path = await file(content);
    const chunks = await collect(path, { chunkBytes: 4 });
    assert.deepEqual(allItems(chunks), ['one', 'two', 'three']);
    checkTiling(chunks, content);
    assert.deepEqual(allItems(await collect(path, { fromOffset: 8 })), ['three']);
  });

  test('an empty file yields one empty last chunk', async () => {
    assert.deepEqual(await collect(await file('')), [
      { items: [], offset: 0, size: 0, last: true, firstLine: 1, lines: 0 },
    ]);
  });

  test('bytes need not be UTF-8', async () => {
    const bytes = Buffer.from([0xff, 0xfe, 0x00, 0x0a, 0xc3, 0x28, 0x0a]);
    const chunks = await collect(await file(bytes));
    assert.deepEqual(
      chunks[0]?.items.map((i) => [...i]),
      [
        [0xff, 0xfe, 0x00],
        [0xc3, 0x28],
      ],
    );
  });

  test('resuming at the end of the file yields an empty last chunk', async () => {
    const path = await file('a\nb\n');
    assert.deepEqual(await collect(path, { fromOffset: 4, fromLine: 3 }), [
      { items: [], offset: 4, size: 0, last: true, firstLine: 3, lines: 0 },
    ]);
  });

  test('resuming inside a line, or past the end, is refused', async () => {
    const path = await file('abc\ndef\n');
    await assert.rejects(collect(path, { fromOffset: 5 }), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.match(e.message, /cannot resume at byte 5: it is not the start of a line/);
      return true;
    });
    await assert.rejects(collect(path, { fromOffset: 9 }), /the file holds only 8 bytes/);
  });

  test('a file done with a last line without "\\n" that grew: continuesLine reads the rest of that line as a line of its own', async () => {
    // Run 1 read "one\nab" to its end: "ab" became an entry, and the file was done at 6.
    const path = await file('one\nab');
    assert.deepEqual(allItems(await collect(path)), ['one', 'ab']);
    await appendFile(path, 'cd\ntwo\n');
    // Without the option the old end is refused (not a line start) ...
    await assert.rejects(collect(path, { fromOffset: 6 }), /not the start of a line/);
    // ... with it, the rest of the line is an entry; nothing is read twice or lost.
    const rest = await collect(path, { fromOffset: 6, continuesLine: true });
    assert.deepEqual(allItems(rest), ['cd', 'two']);
    assert.equal(rest[0]?.offset, 6);
    assert.equal(rest[0]?.firstLine, 2, 'the rest is numbered as the line it belongs to');
    checkTiling(rest, await readFile(path), 6, 2);
  });

  test('continuesLine: when only the line end followed ("\\n" or "\\r\\n"), it finishes the entry taken and makes none', async () => {
    for (const end of ['\n', '\r\n']) {
      const path = await file('one\nab');
      await appendFile(path, `${end}\ntwo\n`);
      const rest = await collect(path, { fromOffset: 6, continuesLine: true });
      // The empty line after it is a line of the file, kept as an empty entry.
      assert.deepEqual(allItems(rest), ['', 'two'], JSON.stringify(end));
      const size = (await readFile(path)).length;
      assert.deepEqual(
        rest.map((c) => [c.offset, c.size, c.firstLine, c.lines, c.last]),
        [[6, size - 6, 2, 3, true]],
      );
    }
  });

  test('continuesLine changes nothing at a line start: an empty line there is an entry', async () => {
    const path = await file('one\n\ntwo\n');
    assert.deepEqual(allItems(await collect(path, { fromOffset: 4, continuesLine: true })), [
      '',
      'two',
    ]);
    assert.deepEqual(allItems(await collect(path, { fromOffset: 0, continuesLine: true })), [
      'one',
      '',
      'two',
    ]);
  });

  test('endOffset stops at a chunk boundary, with the chunk there not last', async () => {
    const content = Buffer.from(sampleLines(100));
    const path = await file(content);
    const chunks = await collect(path, { chunkBytes: 200 });
    const [a, b] = [chunks[1] as FileChunk, chunks[4] as FileChunk];
    const between = await collect(path, {
      chunkBytes: 200,
      fromOffset: a.offset,
      endOffset: b.offset,
    });
    assert.deepEqual(between, chunks.slice(1, 4));
    const gz = await file(gzipSync(content));
    assert.deepEqual(
      await collect(gz, { chunkBytes: 200, fromOffset: a.offset, endOffset: b.offset }),
      chunks.slice(1, 4),
    );
    await assert.rejects(
      collect(path, { chunkBytes: 200, endOffset: b.offset + 1 }),
      /cannot stop at byte \d+: it is inside line/,
    );
    await assert.rejects(
      collect(path, { endOffset: content.length + 10 }),
      /cannot read up to byte \d+: the file holds only/,
    );
  });

  test('a line longer than maxEntryBytes fails naming the file and line, after the lines before', async () => {
    const path = await file(`${'a\n'.repeat(10)}${'x'.repeat(50)}\nb\n`);
    const { chunks, error } = await collectUntilError(path, {
      maxEntryBytes: 40,
      chunkBytes: 1000,
    });
    assert.deepEqual(allItems(chunks), Array(10).fill('a'));
    assert.equal(chunks.at(-1)?.last, false);
    assert.ok(error instanceof IngestInputError);
    assert.equal(error.path, path);
    assert.equal(error.line, 11);
    assert.equal(error.code, 'INVALID_ARGUMENT');
    assert.match(error.message, new RegExp(`^${path} line 11: the line is longer than 40 bytes`));
  });

  test('a line of exactly maxEntryBytes is accepted, also with a CRLF line end', async () => {
    const path = await file(`${'x'.repeat(40)}\r\n${'y'.repeat(40)}\n`);
    assert.deepEqual(allItems(await collect(path, { maxEntryBytes: 40 })), [
      'x'.repeat(40),
      'y'.repeat(40),
    ]);
  });

  test('bad options are refused', async () => {
    const path = await file('a\n');
    for (const bad of [
      { chunkBytes: 0 },
      { maxEntryBytes: 1.5 },
      { fromOffset: -1 },
      { format: 'xml' as 'lines' },
      { fromLine: 3 },
      { fromOffset: 2, endOffset: 1 },
      { follow: { pollIntervalMs: 0 } },
    ]) {
      await assert.rejects(collect(path, bad), InvalidArgumentError, JSON.stringify(bad));
    }
  });

  test('a folder, or a FIFO, is refused without hanging', async () => {
    await assert.rejects(collect(dir), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.match(e.message, /is a folder, not a regular file/);
      return true;
    });
    const fifo = join(dir, 'fifo');
    try {
      execFileSync('mkfifo', [fifo]);
    } catch {
      return; // no mkfifo here
    }
    await assert.rejects(collect(fifo), /is a FIFO \(named pipe\), not a regular file/);
  });

  test('a missing file is an InvalidArgumentError', async () => {
    await assert.rejects(collect(join(dir, 'nope')), /no such file: .*nope/);
  });

  test('aborting stops the generator and closes the file', async () => {
    const path = await file(sampleLines(2000));
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const controller = new AbortController();
    const before = fds();
    const seen: FileChunk[] = [];
    for await (const c of readFileChunks(path, {
      ...LINES,
      chunkBytes: 100,
      signal: controller.signal,
    })) {
      seen.push(c);
      if (seen.length === 3) controller.abort();
    }
    assert.equal(seen.length, 3);
    assert.equal(fds(), before);
  });

  test('a source opened by the caller is read and left open', async () => {
    const path = await file('a\nb\n');
    const opened = await openSource(path);
    try {
      assert.deepEqual(allItems(await collectFrom(opened)), ['a', 'b']);
      assert.deepEqual(allItems(await collectFrom(opened)), ['a', 'b']);
    } finally {
      await opened.handle.close();
    }
  });
});

async function collectFrom(source: Awaited<ReturnType<typeof openSource>>): Promise<FileChunk[]> {
  const out: FileChunk[] = [];
  for await (const c of readFileChunks(source, { ...LINES, chunkBytes: 100 })) out.push(c);
  return out;
}

describe('compressed files', () => {
  const content = Buffer.from(sampleLines(400));
  const plainChunks = async (): Promise<FileChunk[]> =>
    collect(await file(content), { chunkBytes: 700 });

  test('compression is told by the first bytes, not the name', async () => {
    assert.equal(await detectCompression(await file(gzipSync('a'), 'plain.txt')), 'gzip');
    assert.equal(await detectCompression(await file(await zstdCompress(content), 'x.gz')), 'zstd');
    assert.equal(await detectCompression(await file('\x1f', 'short.gz')), 'none');
    assert.equal(await detectCompression(await file('', 'empty.zst')), 'none');
  });

  test('gzip, several members in a row, reads as the plain file (decompressed offsets)', async () => {
    const third = Math.floor(content.length / 3);
    const gz = Buffer.concat([
      gzipSync(content.subarray(0, third)),
      gzipSync(content.subarray(third, 2 * third)),
      gzipSync(content.subarray(2 * third)),
    ]);
    const path = await file(gz, 'data.txt');
    const chunks = await collect(path, { chunkBytes: 700 });
    checkTiling(chunks, content);
    assert.deepEqual(chunks, await plainChunks());
  });

  test('zstd, several frames, reads as the plain file (decompressed offsets)', async () => {
    const half = Math.floor(content.length / 2);
    const zst = Buffer.concat([
      await zstdCompress(content.subarray(0, half)),
      // A skippable frame between the two.
      Buffer.from([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]),
      await zstdCompress(content.subarray(half)),
    ]);
    const path = await file(zst, 'data.log');
    const chunks = await collect(path, { chunkBytes: 700 });
    checkTiling(chunks, content);
    assert.deepEqual(chunks, await plainChunks());
  });

  test('resuming inside a compressed file skips to the offset and yields the rest', async () => {
    const expected = await plainChunks();
    for (const compressed of [gzipSync(content), await zstdCompress(content)]) {
      const path = await file(compressed);
      for (const i of [0, 3, expected.length - 2]) {
        const c = expected[i] as FileChunk;
        const resumed = await collect(path, { chunkBytes: 700, fromOffset: c.offset + c.size });
        assert.deepEqual(resumed, expected.slice(i + 1));
      }
      await assert.rejects(
        collect(path, { fromOffset: (expected[0] as FileChunk).size + 1 }),
        /cannot resume at byte \d+: it is inside line/,
      );
    }
  });

  test('continuesLine: a compressed file resumed inside a line yields the rest of it', async () => {
    for (const compressed of [
      gzipSync('one\nabcd\n\ntwo\n'),
      await zstdCompress(Buffer.from('one\nab\n\ntwo\n')),
    ]) {
      const path = await file(compressed);
      const rest = await collect(path, { fromOffset: 6, continuesLine: true });
      assert.equal(rest[0]?.offset, 6);
      assert.equal(rest[0]?.firstLine, 2);
      assert.deepEqual(rest.at(-1)?.last, true);
      const items = allItems(rest);
      // "abcd": "cd" is the rest; "ab" + "\n": only the line end, no entry; then the empty line.
      assert.deepEqual(items, items.length === 3 ? ['cd', '', 'two'] : ['', 'two']);
    }
  });

  test('a truncated gzip file fails naming the file, after yielding the lines before', async () => {
    const gz = gzipSync(content);
    const path = await file(gz.subarray(0, Math.floor(gz.length * 0.7)), 'cut.gz');
    const { chunks, error } = await collectUntilError(path, { chunkBytes: 700 });
    assert.ok(chunks.length > 0);
    assert.ok(chunks.every((c) => !c.last));
    assert.deepEqual(
      allItems(chunks),
      allItems(await plainChunks()).slice(0, allItems(chunks).length),
    );
    assert.ok(error instanceof IngestInputError);
    assert.match(
      error.message,
      new RegExp(`^${path} line \\d+: the gzip data is truncated or corrupt`),
    );
    assert.equal(chunks[0]?.offset, 0);
    for (let i = 1; i < chunks.length; i++) {
      const before = chunks[i - 1] as FileChunk;
      assert.equal(chunks[i]?.offset, before.offset + before.size);
    }
  });

  test('a truncated or corrupt zstd file fails naming the file, after yielding the lines before', async () => {
    // Several 128 KiB blocks, so that the first ones are whole.
    const zst = Buffer.from(await zstdCompress(Buffer.from(sampleLines(8000))));
    const cut = await file(zst.subarray(0, zst.length - 3), 'cut.zst');
    const { chunks, error } = await collectUntilError(cut, { chunkBytes: 700 });
    assert.ok(chunks.length > 0);
    assert.ok(error instanceof IngestInputError);
    assert.match(error.message, /the zstd data is truncated or corrupt/);
    assert.ok(error.message.startsWith(`${cut} line `));

    const garbage = Buffer.concat([zst, Buffer.from('trailing garbage')]);
    const { error: e2 } = await collectUntilError(await file(garbage), { chunkBytes: 700 });
    assert.match(String(e2), /the zstd data is truncated or corrupt \(no zstd frame at byte/);
  });

  test('a zstd frame asking for a window over 128 MiB is refused before anything is allocated', async () => {
    // Window descriptor 0xa0: 2^(10 + 20) = 1 GiB.
    const frame = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa0, 0x01, 0x00, 0x00]);
    const { error } = await collectUntilError(await file(frame), {});
    assert.match(String(error), /asks for a 1073741824-byte window, more than 134217728/);
  });

  test('follow mode refuses a compressed file', async () => {
    await assert.rejects(
      collect(await file(gzipSync(content)), { follow: { pollIntervalMs: 10 } }),
      (e: unknown) =>
        e instanceof InvalidArgumentError && /--follow reads plain files/.test(e.message),
    );
  });
});

describe('memory', () => {
  const rssGrowth = async (path: string, options: Partial<ReadChunksOptions>) => {
    const start = process.memoryUsage().rss;
    let peak = start;
    let entries = 0;
    let error: unknown;
    try {
      for await (const c of readFileChunks(path, {
        ...LINES,
        chunkBytes: MiB,
        maxEntryBytes: MiB,
        ...options,
      })) {
        entries += c.items.length;
        peak = Math.max(peak, process.memoryUsage().rss);
      }
    } catch (e) {
      error = e;
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    return { growth: peak - start, entries, error };
  };

  test('a 200 MiB gzip bomb is read with bounded memory', async () => {
    const path = join(dir, 'bomb.gz');
    const line = Buffer.from(`${'0'.repeat(4095)}\n`);
    const block = Buffer.concat(Array(256).fill(line) as Buffer[]); // 1 MiB
    await pipeline(
      Readable.from(
        (function* () {
          for (let i = 0; i < 200; i++) yield block;
        })(),
      ),
      createGzip({ level: 1 }),
      createWriteStream(path),
    );
    const { growth, entries, error } = await rssGrowth(path, {});
    assert.equal(error, undefined);
    assert.equal(entries, 200 * 256);
    // Holding the file would cost 200 MiB. What the bound allows is garbage: entries of chunks
    // already dropped, which V8 collects once its external memory passes about 64 MiB.
    assert.ok(growth < 100 * MiB, `rss grew by ${(growth / MiB).toFixed(1)} MiB`);
  });

  test('a zstd bomb of one endless line stops at maxEntryBytes with bounded memory', async () => {
    const path = await file(rleBombFrame(256 * MiB), 'bomb.zst');
    const { growth, error } = await rssGrowth(path, {});
    assert.ok(error instanceof IngestInputError);
    assert.match(error.message, /line 1: the line is longer than 1048576 bytes/);
    assert.ok(growth < 64 * MiB, `rss grew by ${(growth / MiB).toFixed(1)} MiB`);
  });
});

describe('ndjson', () => {
  const NDJSON = { format: 'ndjson' } as const;

  test('each line is one JSON value, kept as its bytes; blank lines are skipped but counted', async () => {
    const content = Buffer.from('{"a":1}\r\n\n  \n[1, 2]\n"x"\n');
    const path = await file(content);
    const chunks = await collect(path, NDJSON);
    assert.deepEqual(allItems(chunks), ['{"a":1}', '[1, 2]', '"x"']);
    assert.equal(chunks.at(-1)?.size, content.length);
    assert.equal(chunks.at(-1)?.lines, 5);
  });

  test('a line that is not JSON fails naming the file and line, after the lines before', async () => {
    const path = await file('{"a":1}\n\n{"b":2}\n{"c":\n{"d":4}\n');
    const { chunks, error } = await collectUntilError(path, NDJSON);
    assert.deepEqual(allItems(chunks), ['{"a":1}', '{"b":2}']);
    assert.equal(chunks.at(-1)?.last, false);
    assert.equal(chunks.at(-1)?.size, 17);
    assert.ok(error instanceof IngestInputError);
    assert.equal(error.line, 4);
    assert.match(error.message, new RegExp(`^${path} line 4: not valid JSON`));
  });

  test('a line that is not UTF-8 fails', async () => {
    const path = await file(Buffer.from([0x22, 0xc3, 0x28, 0x22, 0x0a]));
    const { error } = await collectUntilError(path, NDJSON);
    assert.match(String(error), /line 1: not valid UTF-8/);
  });
});

describe('csv', () => {
  const CSV = { format: 'csv' } as const;

  test('records become JSON objects in header order, with quotes, commas, escaped quotes and line ends', async () => {
    const path = await file(
      'name,2,1,note\r\n' +
        'plain,b,c,d\r\n' +
        '"with, comma","say ""hi""",,"two\nlines"\n' +
        '"crlf\r\ninside",x,y,z\n' +
        '\n' +
        'last,without,line,end',
    );
    assert.deepEqual(allItems(await collect(path, CSV)), [
      '{"name":"plain","2":"b","1":"c","note":"d"}',
      '{"name":"with, comma","2":"say \\"hi\\"","1":"","note":"two\\nlines"}',
      '{"name":"crlf\\r\\ninside","2":"x","1":"y","note":"z"}',
      '{"name":"last","2":"without","1":"line","note":"end"}',
    ]);
  });

  test('a byte order mark before the header is dropped; "__proto__" is a name like any other', async () => {
    const path = await file('\ufeffa,__proto__\n1,2\n');
    assert.deepEqual(allItems(await collect(path, CSV)), ['{"a":"1","__proto__":"2"}']);
  });

  test('a chunk never ends inside a record, and resuming at any chunk end yields the rest', async () => {
    let content = 'id,text\n';
    for (let i = 0; i < 60; i++) content += i % 3 ? `${i},"multi\nline ""${i}"""\n` : `${i},one\n`;
    const path = await file(content);
    const chunks = await collect(path, { ...CSV, chunkBytes: 40 });
    assert.equal(allItems(chunks).length, 60);
    let at = 0;
    for (const c of chunks) {
      assert.equal(c.offset, at);
      at += c.size;
      // Each chunk parses on its own: it holds whole records.
      const own = await collect(
        await file(
          `${c.offset === 0 ? '' : 'id,text\n'}${content.slice(c.offset, c.offset + c.size)}`,
        ),
        CSV,
      );
      assert.deepEqual(allItems(own), text(c.items));
    }
    assert.equal(at, content.length);
    const gz = await file(gzipSync(content));
    for (const [i, c] of chunks.entries()) {
      const rest = allItems(chunks.slice(i + 1));
      const fromOffset = c.offset + c.size;
      const fromLine = c.firstLine + c.lines;
      assert.deepEqual(
        allItems(await collect(path, { ...CSV, chunkBytes: 40, fromOffset, fromLine })),
        rest,
      );
      assert.deepEqual(allItems(await collect(gz, { ...CSV, chunkBytes: 40, fromOffset })), rest);
    }
  });

  test('a record with more fields than the header fails with its line, after the records before', async () => {
    const path = await file('a,b,c\n1,2,3\n"x\ny",2,3\n\n4,5,6\n7,8,9,10\n11,12,13\n');
    const { chunks, error } = await collectUntilError(path, { ...CSV, chunkBytes: 1000 });
    assert.deepEqual(allItems(chunks), [
      '{"a":"1","b":"2","c":"3"}',
      '{"a":"x\\ny","b":"2","c":"3"}',
      '{"a":"4","b":"5","c":"6"}',
    ]);
    assert.equal(chunks.length, 1);
    assert.equal(chunks[0]?.last, false);
    assert.equal(chunks[0]?.size, 'a,b,c\n1,2,3\n"x\ny",2,3\n\n4,5,6\n'.length);
    assert.ok(error instanceof IngestInputError);
    assert.equal(error.line, 7);
    assert.equal(error.message, `${path} line 7: 4 fields, the header has 3`);
  });

  test('a record with fewer fields fails, naming the line its record starts on', async () => {
    const path = await file('a,b,c\n"multi\nline",2\n');
    const { error } = await collectUntilError(path, CSV);
    assert.equal((error as Error).message, `${path} line 2: 2 fields, the header has 3`);
  });

  test('a header with an empty or repeated name fails', async () => {
    const empty = await file('a,,c\n1,2,3\n');
    const { error: e1 } = await collectUntilError(empty, CSV);
    assert.match(String(e1), /line 1: column 2 of the header has no name/);
    const twice = await file('a,b,a\n1,2,3\n');
    const { error: e2 } = await collectUntilError(twice, CSV);
    assert.match(String(e2), /line 1: the header names "a" twice \(columns 1 and 3\)/);
  });

  test('a quote left open, or text after a closing quote, fails', async () => {
    const open = await file('a,b\n1,2\n"never closed,3\n4,5\n');
    const { chunks, error } = await collectUntilError(open, CSV);
    assert.deepEqual(allItems(chunks), ['{"a":"1","b":"2"}']);
    assert.match(String(error), /line 3: a quoted field is still open at the end of the file/);
    const after = await file('a,b\n"x"y,2\n');
    const { error: e2 } = await collectUntilError(after, CSV);
    assert.match(
      String(e2),
      /line 2: a closing quote must be followed by a comma or the end of the line/,
    );
  });

  test('quoted fields spanning lines survive read boundaries (files over 64 KiB)', async () => {
    let content = 'n,text,tail\n';
    const expected: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const value = `record ${i}\n${'word, '.repeat(i % 40)}"quoted"\r\nend ${i}`;
      content += `${i},"${value.replaceAll('"', '""')}",t${i}\n`;
      expected.push(JSON.stringify({ n: String(i), text: value, tail: `t${i}` }));
    }
    assert.ok(content.length > 4 * 64 * 1024);
    for (const path of [await file(content), await file(gzipSync(content))]) {
      assert.deepEqual(allItems(await collect(path, { ...CSV, chunkBytes: 10_000 })), expected);
    }
  });

  test('a record that is not UTF-8 fails naming the line its record starts on', async () => {
    const path = await file(
      Buffer.concat([Buffer.from('a,b\n1,"x\n'), Buffer.from([0xc3, 0x28]), Buffer.from('"\n')]),
    );
    const { error } = await collectUntilError(path, CSV);
    assert.match(String(error), /line 2: the record is not valid UTF-8 \(its line 3\)/);
  });

  test('a quote inside an unquoted field is taken as is', async () => {
    const path = await file('size,name\n5",screen\n');
    assert.deepEqual(allItems(await collect(path, CSV)), ['{"size":"5\\"","name":"screen"}']);
  });

  test('a header alone yields one empty last chunk', async () => {
    const chunks = await collect(await file('a,b\n'), CSV);
    assert.deepEqual(chunks, [
      { items: [], offset: 0, size: 4, last: true, firstLine: 1, lines: 1 },
    ]);
  });
});

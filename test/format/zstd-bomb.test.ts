import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { CorruptDataError, InvalidArgumentError } from '../../src/index.ts';
import {
  declaredBlockBytes,
  RECORD_OVERHEAD_BYTES,
  decodeBatch,
  DEFAULT_MAX_BATCH_BYTES,
  encodeBatch,
  recordBlockBytes,
} from '../../src/format/batch.ts';
import { zstdDecompressStreaming, zstdFrames } from '../../src/format/compression.ts';
import {
  claimingFrame,
  markedZerosFrame,
  MiB,
  recordBlock,
  repeat,
  rleBombFrame,
  sizedFrame,
  text,
  withoutContentSize,
  zerosFrame,
  zstdBatch,
} from './zstd-bombs.ts';

const GiB = 1024 * MiB;

/** A CorruptDataError naming `where`, whose message matches `pattern`. */
function corrupt(where: string, pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof CorruptDataError, `expected a CorruptDataError, got ${String(e)}`);
    assert.equal(e.location, where);
    assert.match(e.message, pattern);
    assert.ok(e.message.startsWith(`${where}: `), e.message);
    return true;
  };
}

/** One record that makes a record block of exactly `bytes` bytes. */
function recordsOfBlock(bytes: number): Uint8Array[] {
  return [text(bytes - 4)];
}

describe('decompression limits (maxBatchBytes)', () => {
  test('DEFAULT_MAX_BATCH_BYTES is 256 MiB', () => {
    assert.equal(DEFAULT_MAX_BATCH_BYTES, 256 * MiB);
  });

  test('a 1 GiB bomb of frames declaring their sizes is refused from its headers, without decompressing', async () => {
    const bomb = zstdBatch(repeat(await zerosFrame(), 1024));
    assert.ok(bomb.byteLength < 64 * 1024, `the bomb weighs ${bomb.byteLength} bytes`);
    assert.equal(declaredBlockBytes(bomb), GiB);
    await assert.rejects(
      decodeBatch(bomb, 'ingest/X.batch'),
      corrupt(
        'ingest/X.batch',
        /declare 1073741824 bytes, more than 268435456 \(maxBatchBytes\); refusing it without decompressing \(a zstd bomb, or a batch from a writer with a larger limit: raise maxBatchBytes to read it\)$/,
      ),
    );
    await assert.rejects(
      decodeBatch(bomb, 'b', { maxBatchBytes: 8 * MiB }),
      corrupt('b', /declare 1073741824 bytes, more than 8388608 \(maxBatchBytes\)/),
    );
  });

  test('a 1 GiB bomb of RLE blocks in a frame without a content size is refused from its block headers', async () => {
    const bomb = zstdBatch(rleBombFrame(GiB));
    assert.ok(bomb.byteLength < 40 * 1024, `the bomb weighs ${bomb.byteLength} bytes`);
    assert.equal(declaredBlockBytes(bomb), undefined);
    await assert.rejects(
      decodeBatch(bomb, 'b', { maxBatchBytes: 8 * MiB }),
      corrupt(
        'b',
        /decompresses to at least 1073741824 bytes, more than 8388608 \(maxBatchBytes\); refusing it without decompressing/,
      ),
    );
  });

  test('1 GiB bombs of compressed blocks without content sizes stop decompressing at maxBatchBytes', async () => {
    for (const windowLog of [20, 27]) {
      const frame = await markedZerosFrame(windowLog);
      const [info] = zstdFrames(frame, 'frame');
      // Made of compressed blocks, whose sizes only decompressing tells.
      assert.equal(info?.minBytes, 0);
      assert.equal(info?.contentBytes, undefined);
      const bomb = zstdBatch(repeat(frame, 1024));
      assert.equal(declaredBlockBytes(bomb), undefined);
      await assert.rejects(
        decodeBatch(bomb, 'ingest/X.batch', { maxBatchBytes: 8 * MiB }),
        corrupt(
          'ingest/X.batch',
          /^ingest\/X\.batch: the record block decompresses to more than 8388608 bytes \(maxBatchBytes\); refusing it \(a zstd bomb, or a batch from a writer with a larger limit: raise maxBatchBytes to read it\)$/,
        ),
      );
    }
  });

  test('refusing a 1 GiB bomb costs about maxBatchBytes of memory at most, and nothing when headers tell', () => {
    // A fresh process per bomb: its peak RSS is the measure, and a peak never goes down.
    // 64 MiB rather than less: the process's own noise (JIT, heap growth) reaches several MiB.
    const max = 64 * MiB;
    const child = fileURLToPath(new URL('./zstd-bomb-child.ts', import.meta.url));
    for (const [kind, bound] of [
      ['sized', max / 2],
      ['rle', max / 2],
      ['compressed', 1.5 * max],
      ['compressed-wide-window', 1.5 * max],
    ] as const) {
      const out = execFileSync(process.execPath, ['--import', 'tsx', child, kind, String(max)], {
        encoding: 'utf8',
      });
      const r = JSON.parse(out) as { message: string; growthBytes: number; ms: number };
      assert.match(r.message, /^CorruptDataError: .*\(maxBatchBytes\)/, `${kind}: ${r.message}`);
      assert.ok(
        r.growthBytes < bound,
        `${kind}: peak memory grew by ${r.growthBytes} bytes, more than ${bound}`,
      );
      // Not a benchmark: a guard against decoding the whole gigabyte.
      assert.ok(r.ms < 5000, `${kind}: refusing took ${r.ms} ms`);
    }
  });

  test('a frame that claims 4 GiB is refused without decompressing', async () => {
    const bomb = zstdBatch(claimingFrame(4 * GiB));
    assert.equal(declaredBlockBytes(bomb), 4 * GiB);
    await assert.rejects(
      decodeBatch(bomb, 'b'),
      corrupt('b', /declare 4294967296 bytes, more than 268435456 \(maxBatchBytes\)/),
    );
    // Even 2^64 - 1, which no JS number holds exactly, is refused rather than wrapped.
    const huge = claimingFrame(0);
    huge.fill(0xff, 5, 13);
    await assert.rejects(decodeBatch(zstdBatch(huge), 'b'), corrupt('b', /more than 268435456/));
  });

  test('the limit is inclusive: a batch of exactly maxBatchBytes (record block plus 96 per record) decodes, one byte more does not', async () => {
    const block = MiB;
    // One record: the limit counts its block and its view.
    const max = block + RECORD_OVERHEAD_BYTES;
    const exact = recordsOfBlock(block);
    const over = recordsOfBlock(block + 1);
    const ways: [string, (records: Uint8Array[]) => Promise<Uint8Array>][] = [
      ['uncompressed', (r) => encodeBatch(r, 'none', { maxBatchBytes: max + 1 })],
      ['zstd with content size', (r) => encodeBatch(r, 'zstd', { maxBatchBytes: max + 1 })],
      [
        'zstd without content size',
        async (r) => zstdBatch(withoutContentSize(await sizedFrame(recordBlock(r)))),
      ],
      [
        'zstd without content size, 128 MiB window',
        async (r) => zstdBatch(withoutContentSize(await sizedFrame(recordBlock(r)), 27)),
      ],
      [
        'zstd in two frames, with and without content size',
        async (r) => {
          const block = recordBlock(r);
          const half = block.byteLength >> 1;
          const first = await sizedFrame(block.subarray(0, half));
          const second = withoutContentSize(await sizedFrame(block.subarray(half)));
          return zstdBatch(Buffer.concat([first, second]));
        },
      ],
    ];
    for (const [how, encode] of ways) {
      const decoded = await decodeBatch(await encode(exact), how, { maxBatchBytes: max });
      assert.equal(decoded.blockBytes, block, how);
      assert.equal(Buffer.compare(decoded.records[0] as Uint8Array, exact[0] as Uint8Array), 0);
      await assert.rejects(
        decodeBatch(await encode(over), how, { maxBatchBytes: max }),
        corrupt(how, /more than 1048672 (bytes )?\(maxBatchBytes/),
      );
    }
  });

  test('a declared content size that differs from what decompresses is corruption', async () => {
    const block = recordBlock([text(300_000)]);
    const frame = await sizedFrame(block);
    // The content size field of the frame as written: 4 bytes after the header descriptor.
    const [info] = zstdFrames(frame, 'frame');
    assert.equal(info?.contentBytes, block.byteLength);
    const fieldAt = frameContentSizeOffset(frame);
    for (const delta of [-1, 1, -200_000]) {
      const lying = Uint8Array.from(frame);
      new DataView(lying.buffer).setUint32(fieldAt, block.byteLength + delta, true);
      assert.equal(declaredBlockBytes(zstdBatch(lying)), block.byteLength + delta);
      const declared = block.byteLength + delta;
      await assert.rejects(
        decodeBatch(zstdBatch(lying), 'b'),
        corrupt(
          'b',
          delta < 0
            ? new RegExp(
                `frame 0 of the record block declares ${declared} bytes but decompresses to more$`,
              )
            : new RegExp(`or it holds fewer than the ${declared} bytes it declares$`),
        ),
      );
      // With a frame that declares no size after it, a different decoder checks the same thing.
      const mixed = Buffer.concat([lying, withoutContentSize(await sizedFrame(text(10)))]);
      await assert.rejects(decodeBatch(zstdBatch(mixed), 'b'), corrupt('b', /zstd/));
    }
  });

  test('several frames, skippable frames and frames without sizes decode to the same records', async () => {
    const records = [text(200_000), randomBytes(50_000), new Uint8Array(0), text(70_000)];
    const block = recordBlock(records);
    const parts = [
      block.subarray(0, 100_000),
      block.subarray(100_000, 250_000),
      block.subarray(250_000),
    ];
    const frames = await Promise.all(parts.map((p) => sizedFrame(p)));
    const skippable = Uint8Array.of(0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3);
    const layouts: [string, Uint8Array, number | undefined][] = [
      ['three sized frames', Buffer.concat(frames), block.byteLength],
      ['with skippable frames', Buffer.concat([skippable, ...frames, skippable]), block.byteLength],
      ['three unsized frames', Buffer.concat(frames.map((f) => withoutContentSize(f))), undefined],
      [
        'sized and unsized',
        Buffer.concat([
          frames[0] as Uint8Array,
          withoutContentSize(frames[1] as Uint8Array),
          frames[2] as Uint8Array,
        ]),
        undefined,
      ],
    ];
    for (const [how, stored, declared] of layouts) {
      const batch = zstdBatch(stored, records.length);
      assert.equal(declaredBlockBytes(batch), declared, how);
      const decoded = await decodeBatch(batch, how);
      assert.equal(decoded.blockBytes, block.byteLength, how);
      assert.deepEqual(
        decoded.records.map((r) => Buffer.from(r)),
        records.map((r) => Buffer.from(r)),
        how,
      );
    }
  });

  test('bytes that are not whole zstd frames are corruption naming the object', async () => {
    const frame = await sizedFrame(recordBlock([text(1000)]));
    for (const [how, stored] of [
      ['trailing garbage', Buffer.concat([frame, Uint8Array.of(1, 2, 3, 4, 5)])],
      ['a truncated frame', frame.subarray(0, frame.byteLength - 1)],
      ['random bytes', randomBytes(1000)],
      [
        'a reserved block type',
        Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 0x07, 0x00, 0x00),
      ],
    ] as const) {
      await assert.rejects(decodeBatch(zstdBatch(stored), how), corrupt(how, /not valid zstd/));
      assert.equal(declaredBlockBytes(zstdBatch(stored)), undefined, how);
    }
  });
});

/** Offset of a 4-byte Frame_Content_Size field in a frame without a dictionary ID. */
function frameContentSizeOffset(frame: Uint8Array): number {
  const descriptor = frame[4] as number;
  assert.equal(descriptor >> 6, 2, 'a 4-byte content size field');
  assert.equal(descriptor & 3, 0, 'no dictionary ID');
  return (descriptor >> 5) & 1 ? 5 : 6;
}

describe('declaredBlockBytes', () => {
  test('an uncompressed batch declares its record block by its size', async () => {
    const records = [text(1000), new Uint8Array(0)];
    assert.equal(declaredBlockBytes(await encodeBatch(records)), recordBlockBytes(records));
    assert.equal(recordBlockBytes(records), 1008);
  });

  test('a zstd batch declares what its frame headers declare, and nothing without them', async () => {
    const records = [text(300_000), text(5)];
    const batch = await encodeBatch(records, 'zstd');
    assert.equal(declaredBlockBytes(batch), recordBlockBytes(records));
    const unsized = zstdBatch(withoutContentSize(batch.subarray(0, batch.byteLength - 7)), 2);
    assert.equal(declaredBlockBytes(unsized), undefined);
    assert.equal((await decodeBatch(unsized)).blockBytes, recordBlockBytes(records));
  });

  test('garbage, short objects and other versions or compressions declare nothing', async () => {
    assert.equal(declaredBlockBytes(new Uint8Array(0)), undefined);
    assert.equal(declaredBlockBytes(Uint8Array.of(0, 0, 0, 0, 0, 1)), undefined);
    assert.equal(declaredBlockBytes(Uint8Array.of(9, 0, 0, 0, 0, 2, 0)), undefined);
    assert.equal(declaredBlockBytes(Uint8Array.of(9, 0, 0, 0, 0, 1, 0)), undefined);
    assert.equal(declaredBlockBytes(Uint8Array.of(5, 0, 0, 0, 0, 0, 1, 0)), 1);
    // No frames at all: an empty record block, which decodes to no records.
    assert.equal(declaredBlockBytes(zstdBatch(new Uint8Array(0), 0)), 0);
    assert.deepEqual(await decodeBatch(zstdBatch(new Uint8Array(0), 0)), {
      records: [],
      compression: 'zstd',
      blockBytes: 0,
    });
  });
});

describe('encodeBatch limits', () => {
  test('a batch larger than maxBatchBytes is refused; exactly maxBatchBytes is written', async () => {
    const max = 64 * 1024;
    const block = max - RECORD_OVERHEAD_BYTES;
    for (const c of ['none', 'zstd'] as const) {
      const body = await encodeBatch(recordsOfBlock(block), c, { maxBatchBytes: max });
      assert.equal((await decodeBatch(body, 'b', { maxBatchBytes: max })).blockBytes, block);
      await assert.rejects(
        encodeBatch(recordsOfBlock(block + 1), c, { maxBatchBytes: max }),
        (e: unknown) =>
          e instanceof InvalidArgumentError &&
          /a batch of 1 records counts 65537 bytes \(record block plus 96 per record\), more than 65536 \(maxBatchBytes\); split the records/.test(
            e.message,
          ),
      );
    }
  });

  test('a footer that claims millions of records is refused before decoding: the views alone would pass the limit', async () => {
    const body = zstdBatch(await sizedFrame(new Uint8Array(64 * 1024)), 16_384);
    await assert.rejects(
      decodeBatch(body, 'b', { maxBatchBytes: 1024 * 1024 }),
      corrupt('b', /the footer counts 16384 records, which would take 1572864 bytes of memory/),
    );
  });

  test('an uncompressed record block larger than maxBatchBytes is refused by readers too', async () => {
    const body = await encodeBatch(recordsOfBlock(1001));
    await assert.rejects(
      decodeBatch(body, 'b', { maxBatchBytes: 1000 }),
      corrupt(
        'b',
        /^b: the record block has 1001 bytes and 1 records, more than 1000 \(maxBatchBytes, counting 96 bytes per record\); refusing it/,
      ),
    );
  });

  test('maxBatchBytes must be a whole number of bytes up to 1 GiB', async () => {
    for (const bad of [-1, 1.5, Number.NaN, 2 * GiB]) {
      await assert.rejects(encodeBatch([], 'none', { maxBatchBytes: bad }), InvalidArgumentError);
      await assert.rejects(
        decodeBatch(await encodeBatch([]), 'b', { maxBatchBytes: bad }),
        InvalidArgumentError,
      );
    }
  });
});

describe('the pure-JS streaming decoder (for blocks too large for the WebAssembly heap)', () => {
  test('decodes frames with and without sizes, and stops at the limit', async () => {
    const block = recordBlock([text(500_000)]);
    const half = block.byteLength >> 1;
    const stored = Buffer.concat([
      await sizedFrame(block.subarray(0, half)),
      withoutContentSize(await sizedFrame(block.subarray(half))),
    ]);
    const out = await zstdDecompressStreaming(stored, 'b', 600_000, 600_000);
    assert.equal(Buffer.compare(out, block), 0);
    await assert.rejects(
      zstdDecompressStreaming(stored, 'b', 400_000, 400_000),
      corrupt('b', /decompresses to more than 400000 bytes \(maxBatchBytes\)/),
    );
    // Capacity below the limit comes from the block headers: passing it is corruption, not a bomb.
    await assert.rejects(
      zstdDecompressStreaming(stored, 'b', 400_000, 800_000),
      corrupt('b', /more than its frame and block headers allow \(400000 bytes\)/),
    );
    const bomb = repeat(await markedZerosFrame(), 1024);
    await assert.rejects(
      zstdDecompressStreaming(bomb, 'b', 8 * MiB, 8 * MiB),
      corrupt('b', /decompresses to more than 8388608 bytes/),
    );
  });

  test('refuses a window larger than both the limit and 8 MiB, and a frame that lies about its size', async () => {
    const frame = withoutContentSize(await sizedFrame(text(1000)), 24);
    await assert.rejects(
      zstdDecompressStreaming(frame, 'b', 1000, 1000),
      corrupt('b', /asks for a 16777216-byte window, more than 8388608/),
    );
    const sized = await sizedFrame(text(300_000));
    const lying = Uint8Array.from(sized);
    new DataView(lying.buffer).setUint32(frameContentSizeOffset(sized), 299_999, true);
    await assert.rejects(
      zstdDecompressStreaming(lying, 'b', MiB, MiB),
      corrupt('b', /declares 299999 bytes but decompresses to 300000 or more/),
    );
  });
});

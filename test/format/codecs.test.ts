import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { CorruptDataError } from '../../src/index.ts';
import { decodeBatch, encodeBatch } from '../../src/format/batch.ts';
import { crc32c } from '../../src/format/crc32c.ts';
import { decodeManifest, encodeManifest } from '../../src/format/manifest.ts';
import { decodeTrailer, encodeTrailer } from '../../src/format/trailer.ts';
import { isUlid, UlidGenerator, ulidTimeMs } from '../../src/format/ulid.ts';

describe('codecs', () => {
  test('CRC32C matches the standard check value', () => {
    assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
    const data = randomBytes(1000);
    assert.equal(crc32c(data.subarray(500), crc32c(data.subarray(0, 500))), crc32c(data));
  });

  test('ULIDs are canonical, carry their time, and sort in creation order within a millisecond', () => {
    const gen = new UlidGenerator();
    const ids = Array.from({ length: 1000 }, () => gen.next(1712345678000));
    assert.ok(ids.every(isUlid));
    assert.equal(ulidTimeMs(ids[0] as string), 1712345678000);
    assert.deepEqual([...ids].sort(), ids);
    assert.equal(ulidTimeMs(new UlidGenerator().next(0)), 0);
    assert.equal(ulidTimeMs(new UlidGenerator().next(2 ** 48 - 1)), 2 ** 48 - 1);
    // A manual clock may stand at a fraction of a ms: the ULID is that ms's, still canonical.
    const fractional = new UlidGenerator().next(1712345678000.5);
    assert.ok(isUlid(fractional), `${fractional} is not canonical`);
    assert.equal(ulidTimeMs(fractional), 1712345678000);
  });

  test('the integrity trailer round-trips, and foreign extension bytes are ignored', () => {
    const t = { batchSizeBytes: 123456, crc32c: 0xdeadbeef, instanceId: 'producer-é' };
    assert.deepEqual(decodeTrailer(encodeTrailer(t)), t);
    assert.equal(decodeTrailer(new Uint8Array(20)), undefined);
  });

  test('sequences and epochs above 2^53 are refused, never rounded', () => {
    const bytes = encodeManifest({ nextSequence: 1, epoch: 1, entries: [] });
    new DataView(bytes.buffer).setBigUint64(4 + 8, 2n ** 53n + 1n, true); // epoch
    assert.throws(
      () => decodeManifest(bytes, 'm'),
      (e: unknown) => e instanceof CorruptDataError && /9007199254740993/.test(e.message),
    );
  });

  test('batches round-trip with and without zstd, including empty records', async () => {
    const records = [new Uint8Array(), randomBytes(10), new Uint8Array(100_000).fill(7)];
    for (const c of ['none', 'zstd'] as const) {
      const decoded = await decodeBatch(await encodeBatch(records, c));
      assert.equal(decoded.compression, c);
      assert.deepEqual(
        decoded.records.map((r) => Buffer.from(r)),
        records.map((r) => Buffer.from(r)),
      );
    }
  });

  test('trailing bytes after the last record and absurd record counts are corruption', async () => {
    const good = await encodeBatch([new Uint8Array([1, 2])]);
    const extra = new Uint8Array(good.byteLength + 1);
    extra.set(good.subarray(0, good.byteLength - 7));
    extra.set(good.subarray(good.byteLength - 7), good.byteLength - 6);
    await assert.rejects(decodeBatch(extra, 'x'), /follow the last/);
    const huge = Uint8Array.from(good);
    new DataView(huge.buffer).setUint32(huge.byteLength - 6, 0xffffffff, true);
    await assert.rejects(decodeBatch(huge, 'x'), CorruptDataError);
  });

  test('zstd frames without a content size, and several frames, decode (zstd CLI frames)', async (t) => {
    let zstd: Buffer;
    const input = Buffer.from('spillway '.repeat(500_000));
    try {
      zstd = execFileSync('zstd', ['-q', '-3', '--no-content-size', '-c'], { input });
    } catch {
      t.skip('the zstd command is not installed');
      return;
    }
    const block = Buffer.alloc(4 + input.byteLength);
    block.writeUInt32LE(input.byteLength, 0);
    input.copy(block, 4);
    // The record block as two frames, neither declaring its content size.
    const half = block.byteLength >> 1;
    const frame = Buffer.concat([
      execFileSync('zstd', ['-q', '-3', '--no-content-size', '-c'], {
        input: block.subarray(0, half),
      }),
      execFileSync('zstd', ['-q', '-3', '--no-content-size', '-c'], {
        input: block.subarray(half),
      }),
    ]);
    const footer = Buffer.from([1, 1, 0, 0, 0, 1, 0]);
    const decoded = await decodeBatch(Buffer.concat([frame, footer]));
    assert.equal(Buffer.compare(Buffer.from(decoded.records[0] as Uint8Array), input), 0);
    assert.ok(zstd.byteLength > 0);
  });
});

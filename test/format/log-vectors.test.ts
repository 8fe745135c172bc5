/**
 * The log layout's test vectors (test/fixtures/log-vectors/, written by
 * scripts/log-vectors.mjs from docs/log-layout.md alone): Spillway's codecs
 * must decode each valid one to what cases.json says, encode those values to
 * the identical checked-in bytes, and refuse each invalid one, for its
 * reason, with a CorruptDataError naming the object.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { CorruptDataError } from '../../src/errors.ts';
import { decodeBatch } from '../../src/format/batch.ts';
import { crc32c } from '../../src/format/crc32c.ts';
import {
  decodeSlot,
  encodeSlot,
  parseSlotLocation,
  slotKey,
  slotSequenceOf,
  type Slot,
} from '../../src/format/log-slot.ts';
import {
  commitEnd,
  commitKey,
  commitNumberOf,
  decodeCommit,
  encodeCommit,
  parseInlineLocation,
  type Commit,
} from '../../src/format/log-commit.ts';
import {
  decodeBoundary,
  decodeCursor,
  decodeHeadHint,
  decodeQueueDescriptor,
  encodeBoundary,
  encodeCursor,
  encodeHeadHint,
  encodeQueueDescriptor,
  type Boundary,
  type Cursor,
  type HeadHint,
  type QueueDescriptor,
} from '../../src/format/log-objects.ts';
import { decodeTrailer } from '../../src/format/trailer.ts';

const ROOT = 'ingest';

interface CommitBatchCase {
  sequence: number;
  location: string;
  metadata: { startIndex: number; ingestionTimeMs: number; payloadBase64: string }[];
  extensionHex: string;
  trailer: { batchSizeBytes: number; crc32c: number; instanceId: string };
  records: number;
  inlineBase64: string | null;
  inlineRecordsBase64: string[] | null;
}

interface CommitCase {
  commit: number;
  firstSequence: number;
  appendTimeMs: number;
  totalBytes: number;
  totalRecords: number;
  writer: string;
  batches: CommitBatchCase[];
  /** Sequences reserved for slots (version 2 only). */
  reserved?: number;
}

interface SlotCase {
  commit: number;
  firstSequence: number;
  endSequence: number;
  writer: string;
  token: string;
  batches: CommitBatchCase[];
}

type Kind = 'commit' | 'slot' | 'batch' | 'descriptor' | 'cursor' | 'boundary' | 'head';

interface Case {
  file: string;
  kind: Kind;
  valid: boolean;
  note: string;
  key: string;
  commit?: number;
  /** For slots: the sequence in the key. */
  sequence?: number;
  error?: string;
  decoded?: unknown;
  recordsBase64?: string[];
}

const dir = new URL('../fixtures/log-vectors/', import.meta.url);
const cases = JSON.parse(readFileSync(new URL('cases.json', dir), 'utf8')) as Case[];
const read = (file: string) => new Uint8Array(readFileSync(new URL(file, dir)));
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');
const fromB64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));

/** A decoded commit in cases.json's shape. */
function describeCommit(c: Commit): CommitCase {
  return {
    commit: c.commit,
    firstSequence: c.firstSequence,
    appendTimeMs: c.appendTimeMs,
    totalBytes: c.totalBytes,
    totalRecords: c.totalRecords,
    writer: c.writer,
    batches: describeBatches(c.batches),
    ...(c.reserved ? { reserved: c.reserved } : {}),
  };
}

/** A decoded slot in cases.json's shape. */
function describeSlot(s: Slot): SlotCase {
  const { commit, firstSequence, endSequence, writer, token } = s;
  return { commit, firstSequence, endSequence, writer, token, batches: describeBatches(s.batches) };
}

/** Batches in cases.json's shape. */
function describeBatches(batches: Commit['batches']): CommitBatchCase[] {
  return batches.map((b, i) => {
    const trailer = decodeTrailer(b.entry.extension);
    assert.ok(trailer, `batch ${i} carries an integrity trailer`);
    return {
      sequence: b.entry.sequence,
      location: b.entry.location,
      metadata: b.entry.metadata.map((m) => ({
        startIndex: m.startIndex,
        ingestionTimeMs: m.ingestionTimeMs,
        payloadBase64: b64(m.payload),
      })),
      extensionHex: Buffer.from(b.entry.extension).toString('hex'),
      trailer,
      records: b.records,
      inlineBase64: b.inline ? b64(b.inline) : null,
      // Checked separately, by decoding the inline bytes.
      inlineRecordsBase64: null,
    };
  });
}

/** A commit built from cases.json's values alone (no decoded objects, no cached encodings). */
function commitFrom(c: CommitCase): Commit {
  return {
    commit: c.commit,
    firstSequence: c.firstSequence,
    appendTimeMs: c.appendTimeMs,
    totalBytes: c.totalBytes,
    totalRecords: c.totalRecords,
    writer: c.writer,
    batches: batchesFrom(c.batches),
    ...(c.reserved ? { reserved: c.reserved } : {}),
  };
}

/** Batches built from cases.json's values alone. */
function batchesFrom(batches: CommitBatchCase[]): Commit['batches'] {
  return batches.map((b) => ({
    entry: {
      sequence: b.sequence,
      location: b.location,
      metadata: b.metadata.map((m) => ({
        startIndex: m.startIndex,
        ingestionTimeMs: m.ingestionTimeMs,
        payload: fromB64(m.payloadBase64),
      })),
      extension: new Uint8Array(Buffer.from(b.extensionHex, 'hex')),
    },
    records: b.records,
    ...(b.inlineBase64 !== null ? { inline: fromB64(b.inlineBase64) } : {}),
  }));
}

const jsonCodecs = {
  descriptor: {
    decode: decodeQueueDescriptor,
    encode: (v: unknown) => encodeQueueDescriptor(v as QueueDescriptor),
  },
  cursor: { decode: decodeCursor, encode: (v: unknown) => encodeCursor(v as Cursor) },
  boundary: { decode: decodeBoundary, encode: (v: unknown) => encodeBoundary(v as Boundary) },
  head: { decode: decodeHeadHint, encode: (v: unknown) => encodeHeadHint(v as HeadHint) },
} as const;

function isRefusal(c: Case): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof CorruptDataError, `expected a CorruptDataError, got ${String(e)}`);
    assert.ok(e.message.startsWith(`${c.key}`), `the message names the object: ${e.message}`);
    // Refusals of a nested field (retention, next, lastLoss) append its name to the location.
    assert.ok(
      e.location?.startsWith(c.key),
      `the error's location names the object: ${e.location}`,
    );
    assert.ok(
      e.message.includes(c.error as string),
      `expected the refusal to mention "${c.error}": ${e.message}`,
    );
    return true;
  };
}

describe('log layout vectors', () => {
  test('every file in cases.json exists and every kind is covered', () => {
    const kinds = new Set(cases.map((c) => `${c.kind}:${c.valid}`));
    for (const k of ['commit', 'slot', 'descriptor', 'cursor', 'boundary', 'head']) {
      assert.ok(kinds.has(`${k}:true`), `a valid ${k} vector`);
      assert.ok(kinds.has(`${k}:false`), `an invalid ${k} vector`);
    }
    for (const c of cases) assert.ok(read(c.file).byteLength > 0, c.file);
  });

  for (const c of cases.filter((x) => x.kind === 'commit' && x.valid)) {
    const expected = c.decoded as CommitCase;

    test(`${c.file} decodes to its documented fields`, () => {
      const n = c.commit as number;
      assert.equal(commitKey(ROOT, n), c.key);
      assert.equal(commitNumberOf(ROOT, c.key), n);
      const decoded = decodeCommit(read(c.file), c.key, n);
      assert.deepEqual(describeCommit(decoded), {
        ...expected,
        batches: expected.batches.map((b) => ({ ...b, inlineRecordsBase64: null })),
      });
    });

    test(`${c.file} re-encodes to identical bytes, from its decoding and from its documented values`, () => {
      const bytes = read(c.file);
      assert.deepEqual(encodeCommit(decodeCommit(bytes, c.key, c.commit)), bytes);
      assert.deepEqual(encodeCommit(commitFrom(expected)), bytes);
    });

    test(`${c.file}: inline batches are version-1 batch objects at "{key}#{index}", matching their trailers`, async () => {
      const decoded = decodeCommit(read(c.file), c.key, c.commit);
      for (const [i, b] of decoded.batches.entries()) {
        const want = expected.batches[i] as CommitBatchCase;
        const inline = parseInlineLocation(ROOT, b.entry.location);
        if (!b.inline) {
          assert.equal(inline, undefined, `batch ${i} names its own object`);
          continue;
        }
        assert.deepEqual(inline, { commit: c.commit, index: i });
        assert.equal(b.inline.byteLength, want.trailer.batchSizeBytes);
        assert.equal(crc32c(b.inline), want.trailer.crc32c);
        const { records } = await decodeBatch(b.inline, b.entry.location);
        assert.equal(records.length, b.records);
        assert.deepEqual(records.map(b64), want.inlineRecordsBase64);
      }
    });
  }

  for (const c of cases.filter((x) => x.kind === 'batch')) {
    test(`${c.file} is the batch object its commit's trailer describes`, async () => {
      const bytes = read(c.file);
      const { records } = await decodeBatch(bytes, c.key);
      assert.deepEqual(records.map(b64), c.recordsBase64);
      const owner = cases.find(
        (x) =>
          x.kind === 'commit' &&
          x.valid &&
          (x.decoded as CommitCase).batches.some((b) => b.location === c.key),
      );
      const batch = (owner?.decoded as CommitCase).batches.find((b) => b.location === c.key);
      assert.equal(bytes.byteLength, batch?.trailer.batchSizeBytes);
      assert.equal(crc32c(bytes), batch?.trailer.crc32c);
      assert.equal(records.length, batch?.records);
    });
  }

  for (const c of cases.filter((x) => x.kind === 'slot' && x.valid)) {
    const expected = c.decoded as SlotCase;
    const sequence = c.sequence as number;

    test(`${c.file} decodes to its documented fields and re-encodes to identical bytes`, async () => {
      assert.equal(slotKey(ROOT, sequence), c.key);
      assert.equal(slotSequenceOf(ROOT, c.key), sequence);
      const decoded = decodeSlot(read(c.file), c.key, sequence, ROOT);
      assert.deepEqual(describeSlot(decoded), {
        ...expected,
        batches: expected.batches.map((b) => ({ ...b, inlineRecordsBase64: null })),
      });
      assert.deepEqual(encodeSlot(decoded, ROOT), read(c.file));
      assert.deepEqual(
        encodeSlot({ ...expected, batches: batchesFrom(expected.batches) }, ROOT),
        read(c.file),
      );
      for (const [i, b] of decoded.batches.entries()) {
        assert.deepEqual(parseSlotLocation(ROOT, b.entry.location), { sequence, index: i });
        const { records } = await decodeBatch(b.inline as Uint8Array, b.entry.location);
        assert.equal(records.length, b.records);
      }
    });
  }

  test('the slots lie in the reservation of commit-reserving.bin', () => {
    const reserving = decodeCommit(read('commit-reserving.bin'), commitKey(ROOT, 20), 20);
    assert.equal(reserving.reserved, 6);
    assert.equal(commitEnd(reserving), 47);
    for (const file of ['slot-batches.bin', 'slot-void.bin']) {
      const c = cases.find((x) => x.file === file && x.valid) as Case;
      const slot = decodeSlot(read(file), c.key, c.sequence, ROOT);
      assert.equal(slot.commit, reserving.commit);
      assert.equal(slot.endSequence, commitEnd(reserving));
    }
  });

  for (const c of cases.filter((x) => x.kind === 'slot' && !x.valid)) {
    test(`${c.file} read as slot ${c.sequence} is refused: ${c.note}`, () => {
      assert.throws(() => decodeSlot(read(c.file), c.key, c.sequence, ROOT), isRefusal(c));
    });
  }

  for (const c of cases.filter((x) => x.kind === 'commit' && !x.valid)) {
    test(`${c.file} read as commit ${c.commit} is refused: ${c.note}`, () => {
      assert.throws(() => decodeCommit(read(c.file), c.key, c.commit), isRefusal(c));
    });
  }

  test('an encoder refuses batches whose sequences do not follow first_seq', () => {
    const c = cases.find((x) => x.file === 'commit-three.bin') as Case;
    const commit = commitFrom(c.decoded as CommitCase);
    (commit.batches[2] as Commit['batches'][number]).entry.sequence = 103;
    assert.throws(() => encodeCommit(commit), /sequence 103, expected 102/);
  });

  for (const c of cases.filter((x) => x.kind in jsonCodecs && x.valid)) {
    const codec = jsonCodecs[c.kind as keyof typeof jsonCodecs];
    test(`${c.file} decodes to its documented fields and re-encodes to identical bytes`, () => {
      const bytes = read(c.file);
      const decoded = codec.decode(bytes, c.key);
      assert.deepEqual(decoded, c.decoded);
      assert.deepEqual(codec.encode(decoded), bytes);
      assert.deepEqual(codec.encode(structuredClone(c.decoded)), bytes);
    });
  }

  for (const c of cases.filter((x) => x.kind in jsonCodecs && !x.valid)) {
    const codec = jsonCodecs[c.kind as keyof typeof jsonCodecs];
    test(`${c.file} read as a ${c.kind} is refused: ${c.note}`, () => {
      assert.throws(() => codec.decode(read(c.file), c.key), isRefusal(c));
    });
  }

  test('control objects are read whatever their field order and whitespace', () => {
    const c = cases.find((x) => x.file === 'cursor-lastloss.json') as Case;
    const reordered = JSON.stringify(
      Object.fromEntries(
        Object.entries(JSON.parse(Buffer.from(read(c.file)).toString('utf8')) as object).reverse(),
      ),
      null,
      2,
    );
    assert.deepEqual(decodeCursor(new TextEncoder().encode(reordered), c.key), c.decoded);
  });
});

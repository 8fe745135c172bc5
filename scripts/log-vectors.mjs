#!/usr/bin/env node
/**
 * Writes the test vectors of the log layout (docs/log-layout.md) into
 * test/fixtures/log-vectors/: commit objects, the batch objects they name or
 * carry, the JSON control objects, corrupted variants, cases.json (what each
 * file decodes to, or why it is refused) and README.md.
 *
 * The encoder here shares no code with src/: it follows docs/log-layout.md
 * only, so that test/format/log-vectors.test.ts checks the document and the
 * code against each other. The test compares with the checked-in bytes; run
 * this again only when the format itself changes (and bump its version).
 *
 *   node scripts/log-vectors.mjs
 */
import { Buffer } from 'node:buffer';
import { mkdirSync, writeFileSync } from 'node:fs';

const OUT = new URL('../test/fixtures/log-vectors/', import.meta.url);
const ROOT = 'ingest';

// ---- bytes ---------------------------------------------------------------

/** CRC32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit. */
function crc32c(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** A little-endian byte builder. */
class Bytes {
  parts = [];
  u8(v) {
    this.parts.push(Buffer.from([v]));
    return this;
  }
  u16(v) {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(v);
    this.parts.push(b);
    return this;
  }
  u32(v) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.parts.push(b);
    return this;
  }
  u64(v) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.parts.push(b);
    return this;
  }
  i64(v) {
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(BigInt(v));
    this.parts.push(b);
    return this;
  }
  raw(b) {
    this.parts.push(Buffer.from(b));
    return this;
  }
  done() {
    return Buffer.concat(this.parts);
  }
}

const utf8 = (s) => Buffer.from(s, 'utf8');
const commitKey = (n) => `${ROOT}/log/${String(n).padStart(20, '0')}`;

/** A version-1 batch object, uncompressed: records, then the 7-byte footer. */
function batchObject(records) {
  const w = new Bytes();
  for (const r of records) w.u32(r.length).raw(r);
  return w.u8(0).u32(records.length).u16(1).done();
}

/** Spillway's integrity trailer ("SPWT", version 1). */
function trailer({ batchSizeBytes, crc32c: crc, instanceId }) {
  const id = utf8(instanceId);
  return new Bytes()
    .raw(utf8('SPWT'))
    .u8(1)
    .u64(batchSizeBytes)
    .u32(crc)
    .u8(id.length)
    .raw(id)
    .done();
}

/** A version-1 manifest entry body (without its entry_len). */
function entryBody({ sequence, location, metadata, extension }) {
  const loc = utf8(location);
  const w = new Bytes().u64(sequence).u16(loc.length).raw(loc).u32(metadata.length);
  for (const m of metadata) {
    w.u32(m.startIndex).i64(m.ingestionTimeMs).u32(m.payload.length).raw(m.payload);
  }
  return w.raw(extension).done();
}

/** Writes a batch list (§4.1): count, then each batch's entry, records and inline bytes. */
function batchList(w, batches) {
  w.u32(batches.length);
  for (const b of batches) {
    const body = entryBody(b);
    w.u32(body.length).raw(body).u32(b.records);
    w.u64(b.inline ? b.inline.length : 0);
    if (b.inline) w.raw(b.inline);
  }
}

/**
 * A log commit with its CRC32C: version 1, or version 2 (`reserved` after
 * the totals) when it reserves sequences.
 */
function commitObject(c, { version = c.reserved ? 2 : 1, magic = 'SPLC' } = {}) {
  const writer = utf8(c.writer);
  const w = new Bytes()
    .raw(utf8(magic))
    .u16(version)
    .u64(c.commit)
    .u64(c.firstSequence)
    .i64(c.appendTimeMs)
    .u64(c.totalBytes)
    .u64(c.totalRecords);
  if (version === 2) w.u32(c.reserved ?? 0);
  w.u16(writer.length).raw(writer);
  batchList(w, c.batches);
  return sealed(w.done());
}

const slotKey = (s) => `${ROOT}/slots/${String(s).padStart(20, '0')}`;

/** A slot object (§4.7): its batches (kind 1), or a void (kind 2) when it has none. */
function slotObject(s, { kind = s.batches.length > 0 ? 1 : 2 } = {}) {
  const writer = utf8(s.writer);
  const w = new Bytes()
    .raw(utf8('SPLS'))
    .u16(1)
    .u64(s.commit)
    .u64(s.firstSequence)
    .u64(s.endSequence)
    .u8(kind)
    .u16(writer.length)
    .raw(writer)
    .raw(Buffer.from(s.token, 'hex'));
  if (kind === 1) batchList(w, s.batches);
  return sealed(w.done());
}

/** Bytes followed by their CRC32C. */
const sealed = (bytes) => Buffer.concat([bytes, new Bytes().u32(crc32c(bytes)).done()]);

/** A JSON control object exactly as Spillway writes it: compact, fields in order, a newline. */
const json = (o) => Buffer.from(`${JSON.stringify(o)}\n`, 'utf8');

// ---- the vectors ---------------------------------------------------------

const files = new Map();
const cases = [];
const put = (file, bytes) => files.set(file, bytes);

const externalRecords = ['a', 'bc', 'def'].map(utf8);
const externalBatch = batchObject(externalRecords);
const inlineRecords = ['alpha', 'beta', 'gamma'].map(utf8);
const inlineBatch = batchObject(inlineRecords);
const emptyRecordBatch = batchObject([Buffer.alloc(0)]);
put('external-batch.bin', externalBatch);

const trailerOf = (body, instanceId) => ({
  batchSizeBytes: body.length,
  crc32c: crc32c(body),
  instanceId,
});

const commitExternal = {
  commit: 7,
  firstSequence: 12,
  appendTimeMs: 1718000000123,
  totalBytes: 5000000123,
  totalRecords: 1000003,
  writer: 'producer-a',
  batches: [
    {
      sequence: 12,
      location: `${ROOT}/01J5T4R3KXBMZ7QV9N2WG8YDHP.batch`,
      metadata: [{ startIndex: 0, ingestionTimeMs: 1718000000100, payload: utf8('tenant=a') }],
      trailer: trailerOf(externalBatch, 'producer-a'),
      records: 3,
    },
  ],
};

const commitInline = {
  commit: 12,
  firstSequence: 30,
  appendTimeMs: 1718000001000,
  totalBytes: 4096,
  totalRecords: 64,
  writer: 'producer-b',
  batches: [
    {
      sequence: 30,
      location: `${commitKey(12)}#0`,
      metadata: [
        { startIndex: 0, ingestionTimeMs: 1718000000990, payload: utf8('m1') },
        { startIndex: 2, ingestionTimeMs: 1718000000995, payload: utf8('m2') },
      ],
      trailer: trailerOf(inlineBatch, 'producer-b'),
      records: 3,
      inline: inlineBatch,
      inlineRecords,
    },
  ],
};

const commitThree = {
  commit: 64,
  firstSequence: 100,
  appendTimeMs: 1718000002500,
  totalBytes: 123456789012,
  totalRecords: 4294967301,
  writer: 'zürich-3',
  batches: [
    {
      sequence: 100,
      location: `${ROOT}/01J5T4R5Q8N3C2V1B0X9Z8Y7W6.batch`,
      metadata: [{ startIndex: 0, ingestionTimeMs: 1718000002400, payload: Buffer.alloc(0) }],
      trailer: { batchSizeBytes: 1048576, crc32c: 0x89abcdef, instanceId: 'zürich-3' },
      records: 1000,
    },
    {
      sequence: 101,
      location: `${commitKey(64)}#1`,
      metadata: [{ startIndex: 0, ingestionTimeMs: 1718000002450, payload: utf8('x') }],
      trailer: trailerOf(emptyRecordBatch, 'zürich-3'),
      records: 1,
      inline: emptyRecordBatch,
      inlineRecords: [Buffer.alloc(0)],
    },
    {
      sequence: 102,
      location: `${ROOT}/01J5T4R6A2B3C4D5E6F7G8H9JK.batch`,
      metadata: [
        { startIndex: 0, ingestionTimeMs: 1718000002460, payload: Buffer.from([0x00, 0xff]) },
        { startIndex: 1, ingestionTimeMs: 1718000002470, payload: utf8('{"k":1}') },
      ],
      trailer: { batchSizeBytes: 77, crc32c: 0x01020304, instanceId: 'zürich-3' },
      records: 2,
    },
  ],
};

const withExtensions = (c) => ({
  ...c,
  batches: c.batches.map((b) => ({ ...b, extension: trailer(b.trailer) })),
});

/** What a commit decodes to, in cases.json's shape. */
const describeCommit = (c) => ({
  commit: c.commit,
  firstSequence: c.firstSequence,
  appendTimeMs: c.appendTimeMs,
  totalBytes: c.totalBytes,
  totalRecords: c.totalRecords,
  writer: c.writer,
  batches: c.batches.map((b) => ({
    sequence: b.sequence,
    location: b.location,
    metadata: b.metadata.map((m) => ({
      startIndex: m.startIndex,
      ingestionTimeMs: m.ingestionTimeMs,
      payloadBase64: m.payload.toString('base64'),
    })),
    extensionHex: trailer(b.trailer).toString('hex'),
    trailer: b.trailer,
    records: b.records,
    inlineBase64: b.inline ? b.inline.toString('base64') : null,
    inlineRecordsBase64: b.inlineRecords ? b.inlineRecords.map((r) => r.toString('base64')) : null,
  })),
});

for (const [file, c, note] of [
  ['commit-external.bin', commitExternal, 'one batch in its own object (external-batch.bin)'],
  ['commit-inline.bin', commitInline, 'one inline batch with two metadata items'],
  ['commit-three.bin', commitThree, 'three batches: external, inline, external'],
]) {
  put(file, commitObject(withExtensions(c)));
  cases.push({
    file,
    kind: 'commit',
    valid: true,
    note,
    key: commitKey(c.commit),
    commit: c.commit,
    decoded: describeCommit(c),
  });
}
cases.push({
  file: 'external-batch.bin',
  kind: 'batch',
  valid: true,
  note: `the batch object ${commitExternal.batches[0].location} that commit-external.bin names`,
  key: commitExternal.batches[0].location,
  recordsBase64: externalRecords.map((r) => r.toString('base64')),
});

// Corrupted commits.
const good = commitObject(withExtensions(commitExternal));
const invalid = (file, bytes, error, note, commit = 7) => {
  put(file, bytes);
  cases.push({ file, kind: 'commit', valid: false, note, key: commitKey(commit), commit, error });
};
invalid(
  'commit-bad-magic.bin',
  commitObject(withExtensions(commitExternal), { magic: 'SPLX' }),
  'magic',
  'commit-external.bin with the magic "SPLX" (CRC32C recomputed)',
);
invalid(
  'commit-bad-version.bin',
  commitObject(withExtensions(commitExternal), { version: 3 }),
  'version 3',
  'commit-external.bin with version 3 (CRC32C recomputed)',
);
{
  const b = Buffer.from(good);
  b[50] ^= 0x01; // a byte of the writer id; the CRC32C no longer matches
  invalid('commit-bad-crc.bin', b, 'CRC32C', 'commit-external.bin with one writer byte changed');
}
invalid(
  'commit-truncated.bin',
  good.subarray(0, good.length - 9),
  'CRC32C',
  'commit-external.bin without its last 9 bytes (an upload cut short: the CRC32C catches it)',
);
invalid(
  'commit-truncated-resealed.bin',
  // Without the CRC32C (4) and the last 4 bytes of inline_len, then sealed again.
  sealed(good.subarray(0, good.length - 8)),
  'truncated',
  'commit-external.bin cut inside its inline_len field, with a valid CRC32C over what is left',
);
invalid('commit-short.bin', good.subarray(0, 20), 'too short', 'the first 20 bytes of a commit');
cases.push({
  file: 'commit-external.bin',
  kind: 'commit',
  valid: false,
  note: 'commit 7 read from the key of commit 8',
  key: commitKey(8),
  commit: 8,
  error: 'its key names 8',
});
{
  const gap = withExtensions(commitThree);
  gap.batches[2] = { ...gap.batches[2], sequence: 103 };
  invalid(
    'commit-sequence-gap.bin',
    commitObject(gap),
    'expected 102',
    'commit-three.bin whose third batch carries sequence 103 (CRC32C valid)',
    64,
  );
}
invalid(
  'commit-trailing-bytes.bin',
  sealed(Buffer.concat([good.subarray(0, good.length - 4), Buffer.from([1, 2, 3])])),
  'follow the last batch',
  'commit-external.bin with 3 bytes after its last batch (CRC32C valid)',
);
{
  const b = Buffer.from(good.subarray(0, good.length - 4));
  const countAt = 4 + 2 + 8 * 5 + 2 + utf8(commitExternal.writer).length;
  b.writeUInt32LE(0xffffffff, countAt);
  invalid(
    'commit-bad-count.bin',
    sealed(b),
    'claims 4294967295 batches',
    'commit-external.bin claiming 2^32-1 batches (CRC32C valid)',
  );
}

// A commit reserving sequences (version 2), and the slots of its reservation.
const commitReserving = {
  commit: 20,
  firstSequence: 40,
  appendTimeMs: 1718000003000,
  totalBytes: 5000,
  totalRecords: 80,
  writer: 'producer-c',
  reserved: 6,
  batches: [
    {
      sequence: 40,
      location: `${commitKey(20)}#0`,
      metadata: [{ startIndex: 0, ingestionTimeMs: 1718000002990, payload: Buffer.alloc(0) }],
      trailer: trailerOf(inlineBatch, 'producer-c'),
      records: 3,
      inline: inlineBatch,
      inlineRecords: inlineRecords,
    },
  ],
};
put('commit-reserving.bin', commitObject(withExtensions(commitReserving)));
cases.push({
  file: 'commit-reserving.bin',
  kind: 'commit',
  valid: true,
  note: 'version 2: one inline batch (sequence 40), then sequences 41-46 reserved for slots',
  key: commitKey(20),
  commit: 20,
  decoded: { ...describeCommit(commitReserving), reserved: 6 },
});
invalid(
  'commit-reserving-none.bin',
  commitObject(withExtensions({ ...commitReserving, reserved: 0 }), { version: 2 }),
  'reserving 0 sequences',
  'commit-reserving.bin as version 2 with reserved 0 (CRC32C valid)',
  20,
);
const slotBatches = {
  commit: 20,
  firstSequence: 41,
  endSequence: 47,
  writer: 'producer-c',
  token: '00112233445566778899aabbccddeeff',
  batches: [41, 42].map((sequence, i) => ({
    sequence,
    location: `${slotKey(41)}#${i}`,
    metadata: [{ startIndex: 0, ingestionTimeMs: 1718000003010 + i, payload: Buffer.alloc(0) }],
    trailer: trailerOf(externalBatch, 'producer-c'),
    records: 3,
    inline: externalBatch,
    inlineRecords: externalRecords,
  })),
};
const slotVoid = {
  commit: 20,
  firstSequence: 43,
  endSequence: 47,
  writer: 'consumer-1',
  token: 'ffeeddccbbaa99887766554433221100',
  batches: [],
};
const describeSlot = (s) => ({
  commit: s.commit,
  firstSequence: s.firstSequence,
  endSequence: s.endSequence,
  writer: s.writer,
  token: s.token,
  batches: describeCommit({ ...s, batches: s.batches }).batches,
});
for (const [file, slot, note] of [
  [
    'slot-batches.bin',
    slotBatches,
    'slot 41 of commit-reserving.bin: two inline batches, sequences 41 and 42',
  ],
  [
    'slot-void.bin',
    slotVoid,
    'slot 43 of commit-reserving.bin, voided by a reader: no batch at 43-46',
  ],
]) {
  put(file, slotObject(withExtensions(slot)));
  cases.push({
    file,
    kind: 'slot',
    valid: true,
    note,
    key: slotKey(slot.firstSequence),
    sequence: slot.firstSequence,
    decoded: describeSlot(slot),
  });
}
const invalidSlot = (file, bytes, error, note, sequence = 41) => {
  put(file, bytes);
  cases.push({ file, kind: 'slot', valid: false, note, key: slotKey(sequence), sequence, error });
};
invalidSlot(
  'slot-past-end.bin',
  slotObject(withExtensions({ ...slotBatches, endSequence: 42 })),
  'run past the reservation',
  'slot-batches.bin claiming a reservation that ends at 42 (CRC32C valid)',
);
invalidSlot(
  'slot-bad-kind.bin',
  slotObject(withExtensions(slotVoid), { kind: 3 }),
  'slot kind 3',
  'slot-void.bin with kind 3 (CRC32C valid)',
  43,
);
invalidSlot(
  'slot-batches.bin',
  slotObject(withExtensions(slotBatches)),
  'its key names 44',
  'slot-batches.bin read from the key of slot 44',
  44,
);
{
  const wrong = withExtensions(slotBatches);
  wrong.batches[1] = { ...wrong.batches[1], location: `${commitKey(20)}#1` };
  invalidSlot(
    'slot-bad-location.bin',
    slotObject(wrong),
    'is named',
    'slot-batches.bin whose second batch is named like an inline batch of a commit (CRC32C valid)',
  );
}

// JSON control objects.
const jsonCase = (file, kind, key, value, note) => {
  put(file, json(value));
  const { format: _f, version: _v, ...decoded } = value;
  cases.push({ file, kind, valid: true, note, key, decoded });
};
jsonCase(
  'descriptor.json',
  'descriptor',
  `${ROOT}/queue`,
  {
    format: 'spillway-log',
    version: 1,
    createdAtMs: 1718000000000,
    retention: { maxAgeMs: 604800000, maxBytes: 10737418240 },
  },
  'a queue with retention: 7 days, 10 GiB',
);
jsonCase(
  'descriptor-no-retention.json',
  'descriptor',
  `${ROOT}/queue`,
  { format: 'spillway-log', version: 1, createdAtMs: 1718000000000, retention: {} },
  'a queue without retention (as a producer creates it)',
);
jsonCase(
  'cursor.json',
  'cursor',
  `${ROOT}/subscriptions/default`,
  {
    format: 'spillway-cursor',
    version: 1,
    subscription: 'default',
    epoch: 3,
    next: { sequence: 31, index: 0 },
    commit: 12,
    createdAtMs: 1718000000000,
    updatedAtMs: 1718000005000,
    holder: 'consumer-1',
  },
  'the default subscription, acknowledged through sequence 30',
);
jsonCase(
  'cursor-lastloss.json',
  'cursor',
  `${ROOT}/subscriptions/audit.v2`,
  {
    format: 'spillway-cursor',
    version: 1,
    subscription: 'audit.v2',
    epoch: 1,
    next: { sequence: 100, index: 0 },
    commit: 64,
    createdAtMs: 1718000000000,
    updatedAtMs: 1718000009000,
    holder: 'consumer-2',
    lastLoss: { firstSequence: 40, lastSequence: 99, reportedAtMs: 1718000009000 },
  },
  'a subscription that retention overtook: sequences 40-99 lost, reported once',
);
jsonCase(
  'boundary.json',
  'boundary',
  `${ROOT}/boundary`,
  {
    format: 'spillway-boundary',
    version: 1,
    firstCommit: 64,
    firstSequence: 100,
    expiredBelow: 100,
    updatedAtMs: 1718000008000,
  },
  'commits below 64 may be gone; sequences below 100 expired by retention',
);
jsonCase(
  'head.json',
  'head',
  `${ROOT}/head`,
  { format: 'spillway-head', version: 1, commit: 128, endSequence: 321 },
  'a head hint: commit 128 exists, the next sequence after it is 321',
);

const badJson = (file, kind, key, text, error, note) => {
  put(file, Buffer.from(text, 'utf8'));
  cases.push({ file, kind, valid: false, note, key, error });
};
badJson(
  'cursor-unknown-format.json',
  'cursor',
  `${ROOT}/subscriptions/default`,
  '{"format":"spillway-subscription","version":1,"subscription":"default","epoch":3,"next":{"sequence":31,"index":0},"commit":12,"createdAtMs":1718000000000,"updatedAtMs":1718000005000,"holder":"consumer-1"}\n',
  'expected format "spillway-cursor"',
  'cursor.json with an unknown format tag',
);
badJson(
  'boundary-as-cursor.json',
  'cursor',
  `${ROOT}/subscriptions/default`,
  json({
    format: 'spillway-boundary',
    version: 1,
    firstCommit: 64,
    firstSequence: 100,
    expiredBelow: 100,
    updatedAtMs: 1718000008000,
  }).toString('utf8'),
  'expected format "spillway-cursor"',
  'a boundary object read where a cursor belongs',
);
badJson(
  'head-version-2.json',
  'head',
  `${ROOT}/head`,
  '{"format":"spillway-head","version":2,"commit":128,"endSequence":321}\n',
  'version 2',
  'a head hint of a newer version',
);
badJson(
  'boundary-negative.json',
  'boundary',
  `${ROOT}/boundary`,
  '{"format":"spillway-boundary","version":1,"firstCommit":-1,"firstSequence":0,"expiredBelow":0,"updatedAtMs":0}\n',
  'firstCommit must be an integer >= 0',
  'a boundary with a negative commit',
);
badJson(
  'descriptor-zero-retention.json',
  'descriptor',
  `${ROOT}/queue`,
  '{"format":"spillway-log","version":1,"createdAtMs":1718000000000,"retention":{"maxAgeMs":0}}\n',
  'maxAgeMs must be an integer >= 1',
  'a retention of 0 ms (absent means "no limit"; 0 is refused)',
);
badJson(
  'cursor-not-json.json',
  'cursor',
  `${ROOT}/subscriptions/default`,
  '{"format":"spillway-cursor","version":1,"subscription":"def',
  'not valid UTF-8 JSON',
  'a cursor cut short',
);
badJson(
  'cursor-missing-next.json',
  'cursor',
  `${ROOT}/subscriptions/default`,
  '{"format":"spillway-cursor","version":1,"subscription":"default","epoch":3,"commit":12,"createdAtMs":1718000000000,"updatedAtMs":1718000005000,"holder":"consumer-1"}\n',
  'next must be an object',
  'a cursor without its position',
);

// ---- README --------------------------------------------------------------

/** An annotated dump of commit-external.bin, field by field. */
function annotate(c, bytes) {
  const rows = [];
  let at = 0;
  const field = (name, n, meaning) => {
    rows.push(
      `| ${at} | ${n} | \`${bytes.subarray(at, at + n).toString('hex')}\` | ${name} | ${meaning} |`,
    );
    at += n;
  };
  const b = c.batches[0];
  const loc = utf8(b.location);
  const ext = trailer(b.trailer);
  field('magic', 4, '"SPLC"');
  field('version', 2, '1');
  field('commit', 8, String(c.commit));
  field('first_seq', 8, String(c.firstSequence));
  field('append_time', 8, `${c.appendTimeMs} (ms since the Unix epoch)`);
  field('total_bytes', 8, `${c.totalBytes} (above 2^32: both halves matter)`);
  field('total_records', 8, String(c.totalRecords));
  field('writer_len', 2, String(utf8(c.writer).length));
  field('writer', utf8(c.writer).length, `"${c.writer}"`);
  field('batch_count', 4, '1');
  field('entry_len', 4, String(entryBody({ ...b, extension: ext }).length));
  field('  sequence', 8, String(b.sequence));
  field('  location_len', 2, String(loc.length));
  field('  location', loc.length, `"${b.location}"`);
  field('  metadata_count', 4, '1');
  field('    start_index', 4, '0');
  field('    ingestion_time_ms', 8, String(b.metadata[0].ingestionTimeMs));
  field('    payload_len', 4, String(b.metadata[0].payload.length));
  field('    payload', b.metadata[0].payload.length, `"${b.metadata[0].payload.toString()}"`);
  field(
    '  extension',
    ext.length,
    `SPWT trailer: size ${b.trailer.batchSizeBytes}, crc32c 0x${b.trailer.crc32c.toString(16).padStart(8, '0')}, id "${b.trailer.instanceId}"`,
  );
  field('records', 4, String(b.records));
  field('inline_len', 8, '0: the batch is its own object');
  field(
    'crc32c',
    4,
    `0x${bytes.readUInt32LE(at).toString(16).padStart(8, '0')}, of bytes 0-${at - 1}`,
  );
  return rows.join('\n');
}

const readme = `# Log layout test vectors

Objects of the log layout (commits of versions 1 and 2, slots), as specified in
[docs/log-layout.md](../../../docs/log-layout.md), with what each decodes to.
They were written by \`scripts/log-vectors.mjs\`, an encoder that follows the
document and shares no code with \`src/\`; \`test/format/log-vectors.test.ts\`
decodes every valid one with Spillway's codecs, compares with
\`cases.json\`, re-encodes it to the identical bytes, and checks that every
invalid one is refused with a \`CorruptDataError\` for the reason given.

An implementation in another language can check itself the same way:
\`cases.json\` lists every file with its \`kind\` (\`commit\`, \`slot\`, \`batch\`,
\`descriptor\`, \`cursor\`, \`boundary\`, \`head\`), its object \`key\` under the
queue root \`${ROOT}\`, whether a reader must accept it (\`valid\`), and either
what it decodes to (\`decoded\`) or a phrase of Spillway's refusal
(\`error\`). For commits, \`commit\` is the number in the key the object is
read from; a reader must refuse a commit whose own number differs. All
integers are little-endian; byte strings in \`cases.json\` are base64 (or hex
for \`extensionHex\`).

## Commits

### commit-external.bin (key \`${commitKey(7)}\`)

Commit 7 of a log, first sequence 12, one batch stored as its own object
(\`external-batch.bin\`, the batch object \`${commitExternal.batches[0].location}\`:
three records \`a\`, \`bc\`, \`def\`, ${externalBatch.length} bytes). Every field:

| offset | bytes | hex | field | value |
| --- | --- | --- | --- | --- |
${annotate(commitExternal, good)}

### commit-inline.bin (key \`${commitKey(12)}\`)

Commit 12, first sequence 30, written by \`producer-b\` at ${commitInline.appendTimeMs};
running totals 4096 bytes and 64 records. One batch, sequence 30, carried
inline (its location is \`${commitInline.batches[0].location}\`, the commit's key and
\`#\` and the batch's index): a version-1 batch object of ${inlineBatch.length} bytes holding
the three records \`alpha\`, \`beta\`, \`gamma\`. Two metadata items: records 0-1
came from a \`produce()\` call at 1718000000990 with payload \`m1\`, record 2
from one at 1718000000995 with payload \`m2\`. Its trailer records the inline
bytes' size (${inlineBatch.length}) and CRC32C (0x${crc32c(inlineBatch).toString(16).padStart(8, '0')}).

### commit-three.bin (key \`${commitKey(64)}\`)

Commit 64, first sequence 100, writer \`zürich-3\` (9 bytes of UTF-8 for 8
characters), running totals ${commitThree.totalBytes} bytes and ${commitThree.totalRecords} records
(both above 2^32). Three batches:

| sequence | location | records | metadata (start index, time, payload) | trailer (size, crc32c) | inline |
| --- | --- | --- | --- | --- | --- |
${commitThree.batches
  .map(
    (b) =>
      `| ${b.sequence} | \`${b.location}\` | ${b.records} | ${b.metadata
        .map(
          (m) =>
            `${m.startIndex}, ${m.ingestionTimeMs}, ${m.payload.length ? `\`${m.payload.toString('hex')}\` (hex)` : 'empty'}`,
        )
        .join(
          '; ',
        )} | ${b.trailer.batchSizeBytes}, 0x${b.trailer.crc32c.toString(16).padStart(8, '0')} | ${b.inline ? `${b.inline.length} bytes: one empty record` : 'no'} |`,
  )
  .join('\n')}

The external objects of batches 100 and 102 are not included (their trailers
are made up); batch 101's inline bytes are \`${emptyRecordBatch.toString('hex')}\`.

### commit-reserving.bin (key \`${commitKey(20)}\`) and its slots

Commit 20, version 2 (§4.1): first sequence 40, one inline batch (sequence
40, the three records of commit-inline.bin's batch), then \`reserved\` = 6:
sequences 41-46 belong to its writer's slots (§4.7), and the next commit
starts at 47. Its totals count its own batch only.

- **slot-batches.bin** (key \`${slotKey(41)}\`): the slot of sequence 41,
  holding two inline batches (sequences 41 and 42, at \`${slotKey(41)}#0\`
  and \`#1\`, each the bytes of external-batch.bin), written by
  \`producer-c\`; the next slot of the reservation is 43.
- **slot-void.bin** (key \`${slotKey(43)}\`): a void written by
  \`consumer-1\` at 43: no batch at sequences 43-46.

A reader of commit 20 delivers sequences 40, 41, 42 and then goes on at
commit 21 (first sequence 47).

### Refused commits and slots

| file | read from | why a reader refuses it |
| --- | --- | --- |
${cases
  .filter((c) => (c.kind === 'commit' || c.kind === 'slot') && !c.valid)
  .map(
    (c) =>
      `| ${c.file} | ${c.kind === 'slot' ? `slot ${c.sequence}` : `commit ${c.commit}`} | ${c.note} |`,
  )
  .join('\n')}

## Control objects (UTF-8 JSON)

Spillway writes each as compact JSON with its fields in the order shown and
one newline at the end; re-encoding a decoded object gives the same bytes.
A reader must accept any field order and whitespace.

${cases
  .filter((c) => c.valid && !['commit', 'batch', 'slot'].includes(c.kind))
  .map(
    (c) =>
      `### ${c.file} (key \`${c.key}\`)\n\n${c.note[0].toUpperCase()}${c.note.slice(1)}.\n\n\`\`\`json\n${files.get(c.file).toString('utf8').trimEnd()}\n\`\`\``,
  )
  .join('\n\n')}

### Refused control objects

| file | read as | why a reader refuses it |
| --- | --- | --- |
${cases
  .filter((c) => !c.valid && !['commit', 'batch'].includes(c.kind))
  .map((c) => `| ${c.file} | ${c.kind} | ${c.note} |`)
  .join('\n')}
`;

mkdirSync(OUT, { recursive: true });
for (const [file, bytes] of files) writeFileSync(new URL(file, OUT), bytes);
writeFileSync(new URL('cases.json', OUT), `${JSON.stringify(cases, null, 1)}\n`);
writeFileSync(new URL('README.md', OUT), readme);
console.log(`wrote ${files.size} vectors, cases.json and README.md to ${OUT.pathname}`);

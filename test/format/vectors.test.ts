import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { CorruptDataError } from '../../src/index.ts';
import { decodeBatch, encodeBatch } from '../../src/format/batch.ts';
import { decodeManifest, encodeManifest } from '../../src/format/manifest.ts';

interface Case {
  file: string;
  kind: 'batch' | 'manifest';
  valid: boolean;
  records_base64?: string[];
  next_sequence?: number;
  epoch?: number;
  entries?: {
    sequence: number;
    location: string;
    metadata: { start_index: number; ingestion_time_ms: number; payload_base64: string }[];
  }[];
}

const dir = new URL('../fixtures/vectors/', import.meta.url);
const cases = JSON.parse(readFileSync(new URL('cases.json', dir), 'utf8')) as Case[];
const read = (file: string) => new Uint8Array(readFileSync(new URL(file, dir)));
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

describe('public format vectors', () => {
  for (const c of cases) {
    if (c.kind === 'batch' && c.valid) {
      test(`${c.file} decodes to its records and re-encodes`, async () => {
        const bytes = read(c.file);
        const batch = await decodeBatch(bytes, c.file);
        assert.deepEqual(batch.records.map(b64), c.records_base64);
        const again = await encodeBatch(batch.records, batch.compression);
        if (batch.compression === 'none') assert.deepEqual(again, bytes);
        else assert.deepEqual((await decodeBatch(again)).records.map(b64), c.records_base64);
      });
    } else if (c.kind === 'manifest' && c.valid) {
      test(`${c.file} decodes to its entries and re-encodes to identical bytes`, () => {
        const bytes = read(c.file);
        const m = decodeManifest(bytes, c.file);
        assert.equal(m.nextSequence, c.next_sequence);
        assert.equal(m.epoch, c.epoch);
        assert.deepEqual(
          m.entries.map((e) => ({
            sequence: e.sequence,
            location: e.location,
            metadata: e.metadata.map((x) => ({
              start_index: x.startIndex,
              ingestion_time_ms: x.ingestionTimeMs,
              payload_base64: b64(x.payload),
            })),
          })),
          c.entries,
        );
        assert.deepEqual(encodeManifest(m), bytes);
      });
    } else {
      test(`${c.file} is rejected with a CorruptDataError naming it`, async () => {
        const bytes = read(c.file);
        const decode =
          c.kind === 'batch'
            ? () => decodeBatch(bytes, c.file)
            : async () => decodeManifest(bytes, c.file);
        await assert.rejects(
          decode,
          (e: unknown) =>
            e instanceof CorruptDataError && e.message.includes(c.file) && e.location === c.file,
        );
      });
    }
  }
});

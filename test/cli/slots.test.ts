/**
 * The `spillway` command on a log with reservations: `manifest dump` shows
 * each commit's reservation and its slots (batches, a void, the first slot
 * missing), and `batch inspect` reads a batch at a slot location, refusing
 * bad ones clearly. The log is built by hand in a file:// folder.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openStore } from '../../src/index.ts';
import { commitKey } from '../../src/format/log-commit.ts';
import { slotKey, slotLocation } from '../../src/format/log-slot.ts';
import { json, ok, spillway, type Run } from '../support/cli.ts';
import { batchOf, buildLog, PLAN, ROOT, slotBytes, type Built } from '../support/slot-log.ts';

interface SlotJson {
  sequence: number;
  key: string;
  writer?: string;
  batches?: number;
  void?: { first_sequence: number; last_sequence: number };
  corrupt?: string;
}

interface Dump {
  layout: 'log';
  next_sequence: number;
  commits: {
    commit: number;
    first_sequence: number;
    batches: number;
    reserved?: number;
    reservation?: {
      first_sequence: number;
      end_sequence: number;
      state: string;
      missing_slot: number | null;
      note?: string;
      slots: SlotJson[];
    };
  }[];
  entries: {
    commit: number;
    slot?: number;
    sequence: number;
    location: string;
    records: number;
    inline_bytes?: number;
    trailer?: { batch_size_bytes: number };
  }[];
}

interface Inspect {
  location: string;
  sequence: number | null;
  commit: number | null;
  slot: number | null;
  reserved_by: number | null;
  inline: boolean;
  records: number;
  checksum: string;
  first_records: { text?: string }[];
}

let dir: string;
let url: string;
let built: Built;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spillway-cli-slots-'));
  url = `file://${dir}`;
  const store = openStore(url);
  built = await buildLog(store, PLAN);
  await store.close();
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function refused(r: Run, code: number, message: RegExp): void {
  assert.equal(r.code, code, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.equal(r.stdout, '');
}

describe('manifest dump of a log with reservations', () => {
  test('shows each reservation with its slots in order: batches, a void and the sequences it covers, the first slot missing', async () => {
    const d = json<Dump>(await spillway(['manifest', 'dump', url]));
    assert.equal(d.next_sequence, 12);
    const [c0, c1, c2, c3] = d.commits;
    assert.equal(c0!.reserved, 4);
    assert.deepEqual(c0!.reservation, {
      first_sequence: 1,
      end_sequence: 5,
      state: 'complete',
      missing_slot: null,
      slots: [
        { sequence: 1, key: slotKey(ROOT, 1), writer: 'hand', batches: 2 },
        {
          sequence: 3,
          key: slotKey(ROOT, 3),
          writer: 'hand',
          batches: 0,
          void: { first_sequence: 3, last_sequence: 4 },
        },
      ],
    });
    assert.equal(c1!.reserved, 3);
    assert.equal(c1!.reservation!.state, 'complete');
    assert.deepEqual(
      c1!.reservation!.slots.map((s) => [s.sequence, s.batches]),
      [
        [5, 1],
        [6, 2],
      ],
    );
    assert.equal(c2!.reservation!.state, 'open');
    assert.equal(c2!.reservation!.missing_slot, 10);
    assert.match(c2!.reservation!.note!, /slot 10 is not written/);
    assert.deepEqual(
      c2!.reservation!.slots.map((s) => s.sequence),
      [9],
    );
    assert.equal(c3!.reserved, undefined, 'a commit that reserves nothing shows no reservation');
    assert.equal(c3!.reservation, undefined);

    assert.deepEqual(
      d.entries.map((e) => [e.sequence, e.commit, e.slot ?? null, e.location]),
      [
        [0, 0, null, `${commitKey(ROOT, 0)}#0`],
        [1, 0, 1, slotLocation(ROOT, 1, 0)],
        [2, 0, 1, slotLocation(ROOT, 1, 1)],
        [5, 1, 5, slotLocation(ROOT, 5, 0)],
        [6, 1, 6, slotLocation(ROOT, 6, 0)],
        [7, 1, 6, slotLocation(ROOT, 6, 1)],
        [8, 2, null, `${commitKey(ROOT, 2)}#0`],
        [9, 2, 9, slotLocation(ROOT, 9, 0)],
        [11, 3, null, `${commitKey(ROOT, 3)}#0`],
      ],
    );
    for (const e of d.entries) {
      assert.equal(e.records, 1);
      assert.equal(e.inline_bytes, e.trailer!.batch_size_bytes, e.location);
    }
  });
});

describe('batch inspect of a slot location', () => {
  test('reads the batch from its slot and checks it, naming its commit and slot', async () => {
    const location = slotLocation(ROOT, 6, 1);
    const i = json<Inspect>(await spillway(['batch', 'inspect', url, location, '--json']));
    assert.equal(i.location, location);
    assert.equal(i.sequence, 7);
    assert.equal(i.commit, 1);
    assert.equal(i.slot, 6);
    assert.equal(i.reserved_by, 1);
    assert.equal(i.inline, true);
    assert.equal(i.records, 1);
    assert.match(i.checksum, /^ok \(CRC32C 0x[0-9a-f]{8}, \d+ bytes\)$/);
    assert.deepEqual(
      i.first_records.map((r) => r.text),
      ['f'],
    );
    const text = ok(await spillway(['batch', 'inspect', url, location])).stdout;
    assert.match(text, /^batch\s+ingest\/slots\/0{19}6#1 \(sequence 7, commit 1, slot 6\)$/m);
    assert.match(text, /^object\s+\d+ B \(inline, inside its slot\)$/m);
    // An inline batch of a commit and a commit location are unchanged.
    const inCommit = json<Inspect>(
      await spillway(['batch', 'inspect', url, `${commitKey(ROOT, 2)}#0`, '--json']),
    );
    assert.deepEqual([inCommit.sequence, inCommit.commit, inCommit.slot], [8, 2, null]);
  });

  test('a malformed slot location is a usage error (exit 2) saying the form expected', async () => {
    for (const bad of [`${ROOT}/slots/6#0`, `${ROOT}/slots/${'0'.repeat(19)}6`]) {
      refused(
        await spillway(['batch', 'inspect', url, bad]),
        2,
        /is not the location of a batch in a slot: expected ingest\/slots\/\{sequence, 20 digits\}#\{index\}/,
      );
    }
  });

  test('a slot missing, a void, and an index past the slot are exit 1, each saying which', async () => {
    refused(
      await spillway(['batch', 'inspect', url, slotLocation(ROOT, 10, 0)]),
      1,
      /^spillway: no slot "ingest\/slots\/0{18}10" in file:.*not written it \(yet\)/,
    );
    refused(
      await spillway(['batch', 'inspect', url, slotLocation(ROOT, 2, 0)]),
      1,
      /no slot "ingest\/slots\/0{19}2".*inside a slot that starts earlier/,
    );
    refused(
      await spillway(['batch', 'inspect', url, slotLocation(ROOT, 3, 0)]),
      1,
      /slot 3 is a void \(written by "hand"\): commit 0's reservation holds no batch at sequences 3 to 4/,
    );
    refused(
      await spillway(['batch', 'inspect', url, slotLocation(ROOT, 6, 2)]),
      1,
      /slot 6 holds 2 batches \(#0 to #1\)/,
    );
  });

  test("a slot outside its commit's reservation is corrupt; one whose commit is gone is shown as left for collection", async () => {
    const store = openStore(url);
    try {
      // Slot 10 claiming commit 1, whose reservation ends at 8.
      const c1 = { ...built.commits[1]!, reserved: 3 };
      const wrong = { ...c1, firstSequence: 5, reserved: 6 }; // ends at 11: 10 encodes
      await store.put(
        slotKey(ROOT, 10),
        slotBytes(wrong, 10, [await batchOf('x', 10, slotLocation(ROOT, 10, 0))]),
        { mode: 'create' },
      );
      refused(
        await spillway(['batch', 'inspect', url, slotLocation(ROOT, 10, 0)]),
        1,
        /slot of commit 1's reservation ending at 11, expected commit 1's, ending at 8/,
      );
      // Commit 0 collected, its slot 1 not yet.
      await store.delete(commitKey(ROOT, 0));
    } finally {
      await store.close();
    }
    const i = json<Inspect>(
      await spillway(['batch', 'inspect', url, slotLocation(ROOT, 1, 1), '--json']),
    );
    assert.deepEqual([i.sequence, i.commit, i.slot, i.reserved_by], [2, null, 1, 0]);
    assert.match(i.checksum, /^ok /);
    const text = ok(await spillway(['batch', 'inspect', url, slotLocation(ROOT, 1, 1)])).stdout;
    assert.match(text, /^reserved by\s+commit 0, which is gone \(collected\)/m);
  });
});

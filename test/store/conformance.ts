/**
 * The ObjectStore contract, run identically against every adapter and wrapper.
 * Each test gets a fresh, isolated store from the target's factory.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import {
  ClosedError,
  NotFoundError,
  OutcomeUnknownError,
  PreconditionFailedError,
  type ObjectStore,
} from '../../src/index.ts';
import { compareKeys } from '../../src/store/keys.ts';

/** A store under test and how to dispose of it. */
export interface StoreUnderTest {
  store: ObjectStore;
  cleanup?: () => Promise<void>;
}

/** How to run the suite against one store kind. */
export interface ConformanceTarget {
  /** Shown in test names. */
  name: string;
  /** A fresh store isolated from every other test's. */
  open: () => Promise<StoreUnderTest>;
  /**
   * True when a lost conditional write is always reported as a plain
   * precondition failure. Network stores may instead answer with an unknown
   * outcome (Ceph RGW returns HTTP 500 to the loser of a race), which the
   * contract allows.
   */
  exactConflicts: boolean;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Registers the whole suite for `target`. */
export function describeStoreConformance(target: ConformanceTarget): void {
  describe(`ObjectStore contract: ${target.name}`, () => {
    const opened: StoreUnderTest[] = [];
    const open = async () => {
      const s = await target.open();
      opened.push(s);
      return s.store;
    };
    after(async () => {
      for (const s of opened) {
        await s.store.close().catch(() => undefined);
        await s.cleanup?.();
      }
    });

    test('round-trips empty, 1-byte and 16 MiB objects with their sizes and versions', async () => {
      const store = await open();
      for (const [key, body] of [
        ['empty', new Uint8Array()],
        ['one', new Uint8Array([0xff])],
        ['big', randomBytes(16 * 1024 * 1024)],
      ] as const) {
        const { version } = await store.put(key, body);
        const got = await store.get(key);
        assert.equal(got.size, body.byteLength, `${key}: size`);
        assert.ok(Buffer.from(got.body).equals(Buffer.from(body)), `${key}: bytes differ`);
        assert.equal(got.version, version, `${key}: get returns the version put returned`);
        const head = await store.head(key);
        assert.equal(head.size, body.byteLength);
        assert.equal(head.version, version);
        assert.ok(head.lastModified instanceof Date && !Number.isNaN(head.lastModified.getTime()));
      }
    });

    test('a missing key is a NotFoundError for get and head', async () => {
      const store = await open();
      await assert.rejects(store.get('missing'), NotFoundError);
      await assert.rejects(store.head('missing/deeper'), NotFoundError);
    });

    test('overwrite replaces the bytes and changes the version', async () => {
      const store = await open();
      const first = await store.put('k', enc.encode('one'));
      const second = await store.put('k', enc.encode('two'), { mode: 'overwrite' });
      assert.notEqual(first.version, second.version);
      assert.equal(dec.decode((await store.get('k')).body), 'two');
    });

    test('create refuses an existing key and leaves it unchanged', async () => {
      const store = await open();
      await store.put('k', enc.encode('first'), { mode: 'create' });
      await assert.rejects(
        store.put('k', enc.encode('second'), { mode: 'create' }),
        PreconditionFailedError,
      );
      assert.equal(dec.decode((await store.get('k')).body), 'first');
    });

    test('ifMatch writes only over the version it names', async () => {
      const store = await open();
      const v1 = (await store.put('k', enc.encode('v1'))).version;
      const v2 = (await store.put('k', enc.encode('v2'), { mode: { ifMatch: v1 } })).version;
      assert.notEqual(v1, v2);
      await assert.rejects(
        store.put('k', enc.encode('stale'), { mode: { ifMatch: v1 } }),
        PreconditionFailedError,
      );
      assert.equal(dec.decode((await store.get('k')).body), 'v2');
      await assert.rejects(
        store.put('absent', enc.encode('x'), { mode: { ifMatch: v2 } }),
        PreconditionFailedError,
      );
      await assert.rejects(store.get('absent'), NotFoundError);
    });

    test('ranged reads return the bytes asked for and the whole size', async () => {
      const store = await open();
      await store.put('r', enc.encode('0123456789'));
      const mid = await store.get('r', { range: { offset: 2, length: 3 } });
      assert.equal(dec.decode(mid.body), '234');
      assert.equal(mid.size, 10);
      assert.equal(dec.decode((await store.get('r', { range: { offset: 7 } })).body), '789');
      assert.equal(
        (await store.get('r', { range: { offset: 8, length: 100 } })).body.byteLength,
        2,
      );
      assert.equal((await store.get('r', { range: { offset: 20, length: 5 } })).body.byteLength, 0);
      assert.equal((await store.get('r', { range: { offset: 0, length: 0 } })).body.byteLength, 0);
    });

    test('list yields keys under a prefix in byte order across more than 1000 keys', async () => {
      const store = await open();
      const keys: string[] = [];
      for (let i = 0; i < 1050; i++) keys.push(`list/k-${i}`);
      // A folder sorts where its name plus "/" falls: after k-5a-b, before k-5a0.
      keys.push(
        'list/k-5a/deeper',
        'list/k-5a-b',
        'list/k-5a0',
        'list/k.dot',
        'list/k/slash',
        'list/K-upper',
      );
      await parallel(keys, 32, (k) => store.put(k, enc.encode(k)));
      await store.put('listing-not-under-prefix', enc.encode('x'));
      await store.put('lisu', enc.encode('x'));
      const listed: string[] = [];
      for await (const meta of store.list('list/')) {
        listed.push(meta.key);
        if (meta.key === 'list/k-7') assert.equal(meta.size, 'list/k-7'.length);
      }
      assert.deepEqual(listed, [...keys].sort(compareKeys));
      const partial: string[] = [];
      for await (const meta of store.list('list/k-10')) partial.push(meta.key);
      assert.deepEqual(partial, keys.filter((k) => k.startsWith('list/k-10')).sort(compareKeys));
      const none: string[] = [];
      for await (const meta of store.list('nothing-here/')) none.push(meta.key);
      assert.deepEqual(none, []);
    });

    test('delete is idempotent and deleteMany takes present and absent keys', async () => {
      const store = await open();
      await store.put('d', enc.encode('x'));
      await store.delete('d');
      await store.delete('d');
      await assert.rejects(store.get('d'), NotFoundError);
      await store.put('m/1', enc.encode('1'));
      await store.put('m/2', enc.encode('2'));
      await store.deleteMany(['m/1', 'm/2', 'm/never']);
      await store.deleteMany([]);
      const left: string[] = [];
      for await (const meta of store.list('m/')) left.push(meta.key);
      assert.deepEqual(left, []);
      await store.put('d', enc.encode('again'), { mode: 'create' });
      assert.equal(dec.decode((await store.get('d')).body), 'again');
    });

    test('of 8 concurrent create-only writers to one key exactly one wins', async () => {
      const store = await open();
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) =>
          store.put('race', enc.encode(`writer-${i}`), { mode: 'create' }),
        ),
      );
      const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
      assert.equal(winners.length, 1, `winners: ${winners.join(',')}`);
      for (const r of results) {
        if (r.status === 'rejected') {
          const ok = target.exactConflicts
            ? r.reason instanceof PreconditionFailedError
            : r.reason instanceof PreconditionFailedError ||
              r.reason instanceof OutcomeUnknownError;
          assert.ok(ok, `loser failed with ${String(r.reason)}`);
        }
      }
      assert.equal(dec.decode((await store.get('race')).body), `writer-${winners[0]}`);
    });

    test('a compare-and-swap counter with 8 writers of 50 increments ends at exactly 400', async () => {
      const store = await open();
      await Promise.all(
        Array.from({ length: 8 }, (_, w) => casIncrements(store, 'counter', `w${w}`, 50)),
      );
      const final = JSON.parse(dec.decode((await store.get('counter')).body)) as CounterState;
      assert.equal(final.count, 400);
      assert.equal(new Set(final.ops).size, 400);
    });

    test('keys with spaces, unicode and deep paths round-trip and list', async () => {
      const store = await open();
      const keys = [
        'with space/a b.txt',
        'unicode/é ü/日本語/🦀',
        'deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p.bin',
        "odd/!$&'()*+,;=@[]~",
      ];
      for (const k of keys) await store.put(k, enc.encode(k));
      for (const k of keys) assert.equal(dec.decode((await store.get(k)).body), k);
      const listed: string[] = [];
      for await (const meta of store.list('')) listed.push(meta.key);
      assert.deepEqual(listed, [...keys].sort(compareKeys));
    });

    test('an aborted signal rejects the call', async () => {
      const store = await open();
      const controller = new AbortController();
      controller.abort();
      await assert.rejects(store.get('x', { signal: controller.signal }), { name: 'AbortError' });
      await assert.rejects(store.put('x', enc.encode('y'), { signal: controller.signal }), {
        name: 'AbortError',
      });
      await assert.rejects(store.get('x'), NotFoundError);
    });

    test('calls after close reject with ClosedError, and close is idempotent', async () => {
      const store = await open();
      await store.put('k', enc.encode('v'));
      await store.close();
      await store.close();
      await assert.rejects(store.get('k'), ClosedError);
      await assert.rejects(store.put('k', enc.encode('v')), ClosedError);
    });
  });
}

/** The counter's stored state: the count and the id of every increment applied. */
export interface CounterState {
  count: number;
  ops: string[];
}

/**
 * Performs `n` read-modify-write increments with ifMatch/create. Each
 * increment records its id, so a write with an unknown outcome is settled by
 * looking for the id, as the manifest queue settles appends by location.
 */
export async function casIncrements(
  store: ObjectStore,
  key: string,
  writer: string,
  n: number,
): Promise<void> {
  for (let i = 0; i < n; i++) {
    const op = `${writer}-${i}`;
    for (let attempt = 0; ; attempt++) {
      let state: CounterState = { count: 0, ops: [] };
      let version: string | undefined;
      try {
        const got = await store.get(key);
        state = JSON.parse(dec.decode(got.body)) as CounterState;
        version = got.version;
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
      }
      if (state.ops.includes(op)) break;
      const next = enc.encode(JSON.stringify({ count: state.count + 1, ops: [...state.ops, op] }));
      try {
        await store.put(key, next, {
          mode: version === undefined ? 'create' : { ifMatch: version },
        });
        break;
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
        if (attempt > 1000) throw new Error(`${op}: no progress after ${attempt} attempts`);
        // Back off so that racing writers spread out, as real callers do.
        await new Promise((r) =>
          setTimeout(r, Math.random() * Math.min(50, 2 ** Math.min(attempt, 6))),
        );
      }
    }
  }
}

async function parallel<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

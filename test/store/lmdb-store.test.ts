import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, LmdbStore, Producer, openStore } from '../../src/index.ts';
import { describeStoreConformance, type CounterState } from './conformance.ts';

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'spillway-lmdb-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describeStoreConformance({
  name: 'lmdb',
  exactConflicts: true,
  open: async () => ({ store: openStore(`lmdb://${await freshDir()}`) }),
});

function child(script: string, args: string[]) {
  return spawn(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(new URL(script, import.meta.url)), ...args],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
}

describe('lmdb store specifics', () => {
  test('lmdb: URLs open absolute and relative folders; hosts, credentials and queries are refused', async () => {
    const dir = await freshDir();
    assert.equal(openStore(`lmdb://${dir}`).description, `lmdb://${dir}`);
    assert.equal(openStore('lmdb:./some/dir').description, `lmdb://${resolve('some/dir')}`);
    for (const url of ['lmdb://host/dir', 'lmdb://u:secret@/dir', `lmdb://${dir}?x=1`, 'lmdb:']) {
      assert.throws(
        () => openStore(url),
        (e: unknown) => {
          assert.ok(e instanceof InvalidArgumentError, String(e));
          assert.match(e.message, /lmdb URL/);
          assert.doesNotMatch(e.message, /secret/);
          return true;
        },
      );
    }
    assert.throws(() => openStore('lmdb:///'), /filesystem root/);
  });

  test('creates nothing until the first call, then one file and its lock in the folder', async () => {
    const dir = join(await freshDir(), 'store');
    const store = openStore(`lmdb://${dir}`);
    await assert.rejects(readdir(dir), { code: 'ENOENT' });
    await store.put('k', new Uint8Array([1]));
    assert.deepEqual((await readdir(dir)).sort(), ['spillway.mdb', 'spillway.mdb-lock']);
    await store.close();
  });

  test('two stores of one process on one folder share it; closing one leaves the other working', async () => {
    const dir = await freshDir();
    const a = new LmdbStore(dir);
    const b = new LmdbStore(dir);
    await a.put('k', new Uint8Array([1]), { mode: 'create' });
    await assert.rejects(b.put('k', new Uint8Array([2]), { mode: 'create' }), {
      code: 'PRECONDITION_FAILED',
    });
    await a.close();
    await a.close();
    await assert.rejects(a.get('k'), { code: 'CLOSED' });
    assert.deepEqual([...(await b.get('k')).body], [1]);
    await b.put('k2', new Uint8Array([3]));
    await b.close();
    const c = new LmdbStore(dir);
    assert.deepEqual([...(await c.get('k2')).body], [3]);
    await c.close();
  });

  test('a compare-and-swap counter shared by 4 OS processes of 100 increments ends at exactly 400', async () => {
    const dir = await freshDir();
    const url = `lmdb://${dir}`;
    const codes = await Promise.all(
      Array.from(
        { length: 4 },
        (_, i) =>
          new Promise<number | null>((resolve, reject) => {
            const p = child('./store-counter-child.ts', [url, 'counter', `p${i}`, '100']);
            p.stdout.resume();
            p.once('error', reject);
            p.once('exit', resolve);
          }),
      ),
    );
    assert.deepEqual(codes, [0, 0, 0, 0]);
    const store = openStore(url);
    const state = JSON.parse(
      new TextDecoder().decode((await store.get('counter')).body),
    ) as CounterState;
    assert.equal(state.count, 400);
    assert.equal(new Set(state.ops).size, 400);
    await store.close();
  });

  test('writers SIGKILLed mid-write lose nothing they were told is durable, and the store works on', async () => {
    const dir = await freshDir();
    const url = `lmdb://${dir}`;
    const acknowledged = new Set<string>();
    for (let round = 0; round < 3; round++) {
      // Two writers at once: a kill may land while one holds the write lock.
      const writers = [0, 1].map((w) => {
        const p = child('./lmdb-writer-child.ts', [url, `r${round}w${w}`]);
        let buffered = '';
        let seen = 0;
        const enough = new Promise<void>((resolve) => {
          p.stdout.on('data', (chunk: Buffer) => {
            buffered += chunk.toString();
            const lines = buffered.split('\n');
            buffered = lines.pop() ?? '';
            for (const line of lines) acknowledged.add(line);
            seen += lines.length;
            if (seen >= 50 + round * 40) resolve();
          });
        });
        const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
        return { p, enough, exited };
      });
      await Promise.all(writers.map((w) => w.enough));
      for (const w of writers) w.p.kill('SIGKILL');
      await Promise.all(writers.map((w) => w.exited));
    }
    const store = openStore(url);
    const keys = new Set<string>();
    for await (const meta of store.list('')) {
      keys.add(meta.key);
      assert.equal(meta.size, 8192);
    }
    for (const key of acknowledged) assert.ok(keys.has(key), `acknowledged ${key} is missing`);
    for (const key of [...acknowledged].slice(0, 20)) {
      assert.ok((await store.get(key)).body.every((b) => b === 7));
    }
    await store.put('after', new Uint8Array([1]), { mode: 'create' });
    await store.close();
  });

  test('a producer on the LMDB store carries batches of up to 4 MiB inside its commits unless told otherwise', async () => {
    const dir = await freshDir();
    const store = new LmdbStore(dir);
    assert.equal(store.hints.inlineMaxBytes, 4 * 1024 * 1024);
    const producer = new Producer({ store, flushIntervalMs: 0 });
    const located = await (await producer.produce([new Uint8Array(512 * 1024)])).durable;
    assert.match(String(located.location), /#\d+$/);
    await producer.close();
    const explicit = new Producer({ store, flushIntervalMs: 0, inlineMaxBytes: 1024 });
    const separate = await (await explicit.produce([new Uint8Array(512 * 1024)])).durable;
    assert.doesNotMatch(String(separate.location), /#\d+$/);
    await explicit.close();
    await store.close();
  });
});

test('reads and deletes on a folder without a store create nothing (a typo leaves no trace)', async () => {
  const dir = join(await freshDir(), 'typo', 'deeper');
  const store = openStore(`lmdb://${dir}`);
  await assert.rejects(store.get('k'), { code: 'NOT_FOUND' });
  await assert.rejects(store.head('k'), { code: 'NOT_FOUND' });
  const listed: string[] = [];
  for await (const m of store.list('')) listed.push(m.key);
  assert.deepEqual(listed, []);
  await store.delete('k');
  await store.deleteMany(['a', 'b']);
  await assert.rejects(readdir(dir), { code: 'ENOENT' });
  await assert.rejects(readdir(join(dir, '..')), { code: 'ENOENT' });
  // The first write creates it; reads see it from then on, in this process and others.
  await store.put('k', new Uint8Array([1]));
  assert.deepEqual([...(await openStore(`lmdb://${dir}`).get('k')).body], [1]);
  await store.close();
});

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  InvalidArgumentError,
  LmdbStore,
  Producer,
  openStore,
  type ObjectStore,
} from '../../src/index.ts';
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

/** The CAS counter holds `count` increments, each recorded once. */
async function assertCounter(store: ObjectStore, count: number): Promise<void> {
  const state = JSON.parse(
    new TextDecoder().decode((await store.get('counter')).body),
  ) as CounterState;
  assert.equal(state.count, count);
  assert.equal(new Set(state.ops).size, count);
}

/** Why the strace test cannot run here, if it cannot: no strace, or no permission to trace. */
function straceSkip(): string | false {
  const probe = spawnSync('strace', ['-qq', '-o', '/dev/null', 'true']);
  if (probe.error) return 'strace is not installed (the CI installs it)';
  if (probe.status !== 0) return `strace cannot trace here: ${String(probe.stderr).trim()}`;
  return false;
}

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

  test('creates nothing until the first call, then the store file, the gate file and their locks', async () => {
    const dir = join(await freshDir(), 'store');
    const store = openStore(`lmdb://${dir}`);
    await assert.rejects(readdir(dir), { code: 'ENOENT' });
    await store.put('k', new Uint8Array([1]));
    assert.deepEqual((await readdir(dir)).sort(), [
      'spillway.gate',
      'spillway.gate-lock',
      'spillway.mdb',
      'spillway.mdb-lock',
    ]);
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
    await assertCounter(store, 400);
    await store.close();
  });

  test('one process writing 6 folders at once finishes (the gates of all folders are taken one at a time)', async () => {
    // Holding a gate keeps one of libuv's 4 pool threads; the store's commit needs another.
    const stores = await Promise.all(
      Array.from({ length: 6 }, async () => openStore(`lmdb://${await freshDir()}`)),
    );
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve('hung'), 20_000);
    });
    const writes = Promise.all(
      stores.flatMap((store, i) =>
        Array.from({ length: 20 }, (_, k) =>
          store.put(`s${i}/${k}`, new Uint8Array([i, k]), { mode: 'create' }),
        ),
      ),
    ).then(() => 'done');
    assert.equal(await Promise.race([writes, hung]), 'done');
    clearTimeout(timer);
    for (const [i, store] of stores.entries()) {
      assert.deepEqual([...(await store.get(`s${i}/19`)).body], [i, 19]);
      await store.close();
    }
  });

  test(
    'a process opening the folder while another writes does not turn back its commits (header reads slowed with strace)',
    { skip: straceSkip() },
    async () => {
      // lmdb-js's LMDB stores the transaction id it read at opening into the lock file, with
      // no lock: an opening during a commit moved it back, and the next write started from
      // an old snapshot; hence the gate. strace widens an opening from microseconds to 20 ms
      // per header read. This did not fail without the gate either (4 runs): it checks that
      // slowed openings under the gate neither stall nor lose the writer's commits.
      const dir = await freshDir();
      const url = `lmdb://${dir}`;
      const first = openStore(url);
      await first.put('seed', new Uint8Array([1]));
      await first.close();
      const writer = child('./store-counter-child.ts', [url, 'counter', 'w', '400']);
      writer.stdout.resume();
      const opener = spawn(
        'strace',
        [
          '-f',
          '-qq',
          '-o',
          '/dev/null',
          '-P',
          join(dir, 'spillway.mdb'),
          '-e',
          'trace=pread64',
          '-e',
          'inject=pread64:delay_exit=20000',
          process.execPath,
          '--import',
          'tsx',
          fileURLToPath(new URL('./lmdb-opener-child.ts', import.meta.url)),
          dir,
          '40',
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let opened = '';
      opener.stdout.on('data', (d: Buffer) => (opened += d.toString()));
      const [w, o] = await Promise.all(
        [writer, opener].map(
          (p) => new Promise<number | null>((resolve) => p.once('exit', resolve)),
        ),
      );
      assert.equal(o, 0);
      assert.match(opened, /OPENED/);
      assert.equal(w, 0, 'the writer failed (a commit refused, or a crash)');
      const store = openStore(url);
      await assertCounter(store, 400);
      await store.close();
    },
  );

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

// Attacks on the LMDB store's contract: partial writes, bodies LMDB mishandles, failed commits,
// close with calls in flight, a dead holder of the write lock, and the errors each one gives.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ClosedError, InvalidArgumentError, LmdbStore, StorageError } from '../../src/index.ts';
import { LMDB_STORE_FILE } from '../../src/store/lmdb-store.ts';
import { compareKeys } from '../../src/store/keys.ts';

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'spillway-lmdb-review-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const STORE_MODULE = fileURLToPath(new URL('../../src/store/lmdb-store.ts', import.meta.url));

/** Runs `script` (an ES module written to a temporary file) in a child Node with the TypeScript loader. */
async function runChild(
  script: string,
  args: string[],
  options: { shellPrefix?: string; onLine?: (line: string) => void } = {},
) {
  const file = join(await freshDir(), 'child.mjs');
  await writeFile(file, script);
  const argv = ['--import', 'tsx', file, ...args];
  const child = options.shellPrefix
    ? spawn(
        '/bin/sh',
        ['-c', `${options.shellPrefix}; exec "$0" "$@"`, process.execPath, ...argv],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      )
    : spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let partial = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    partial += chunk.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) options.onLine?.(line);
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>(
    (resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => resolve({ code, stdout, stderr }));
    },
  );
  return { child, exited };
}

describe('lmdb store under attack', () => {
  test('a put whose body is not a Uint8Array is refused whole: nothing of it is stored', async () => {
    const store = new LmdbStore(await freshDir());
    const { version } = await store.put('k', new Uint8Array([1, 2]));
    for (const body of [[9, 9, 9], { length: 3 }, 'abc', null]) {
      await assert.rejects(store.put('k', body as unknown as Uint8Array), InvalidArgumentError);
      await assert.rejects(
        store.put('fresh', body as unknown as Uint8Array, { mode: 'create' }),
        InvalidArgumentError,
      );
    }
    // Before the fix the header was rewritten (new version and size) over the old bytes,
    // and "fresh" existed for head (so create refused it forever) but not for get.
    const head = await store.head('k');
    const got = await store.get('k');
    assert.equal(head.version, version);
    assert.equal(got.version, version);
    assert.equal(head.size, 2);
    assert.deepEqual([...got.body], [1, 2]);
    await assert.rejects(store.head('fresh'), { code: 'NOT_FOUND' });
    await store.put('fresh', new Uint8Array([5]), { mode: 'create' });
    await store.close();
  });

  test('a body in a SharedArrayBuffer or at an offset in its buffer is stored as its bytes', async () => {
    const store = new LmdbStore(await freshDir());
    const shared = new Uint8Array(new SharedArrayBuffer(8)).fill(9);
    await store.put('shared', shared);
    assert.deepEqual([...(await store.get('shared')).body], [9, 9, 9, 9, 9, 9, 9, 9]);
    const backing = Uint8Array.from({ length: 16 }, (_, i) => i);
    await store.put('view', backing.subarray(3, 8));
    assert.deepEqual([...(await store.get('view')).body], [3, 4, 5, 6, 7]);
    await store.close();
  });

  test('an unknown put mode is refused rather than taken for overwrite', async () => {
    const store = new LmdbStore(await freshDir());
    await store.put('k', new Uint8Array([1]));
    for (const mode of ['crate', { ifmatch: '1' }, { ifMatch: 1 }]) {
      await assert.rejects(
        store.put('k', new Uint8Array([2]), { mode: mode as never }),
        InvalidArgumentError,
      );
    }
    assert.deepEqual([...(await store.get('k')).body], [1]);
    await store.close();
  });

  test('a commit that fails (file size limit) rejects its writes with StorageError, without an unhandled rejection, and the store works on', async () => {
    const dir = await freshDir();
    // SIGXFSZ ignored, so that writing past the limit fails with EFBIG instead of killing.
    const { exited } = await runChild(
      `
      const { LmdbStore } = await import(process.argv[2]);
      const store = new LmdbStore(process.argv[3]);
      await store.put('before', new Uint8Array(100).fill(1));
      const results = await Promise.allSettled([
        store.put('small', new Uint8Array(100).fill(2)),
        store.put('big', new Uint8Array(4 << 20).fill(3)),
      ]);
      await new Promise((r) => setImmediate(r));
      const after = await store.put('after', new Uint8Array(100).fill(4));
      const absent = await store.head('big').then(() => 'present', (e) => e.code);
      await store.close();
      console.log(JSON.stringify({
        results: results.map((r) => r.status === 'fulfilled' ? 'ok' : { name: r.reason.name, message: r.reason.message }),
        after: after.version,
        absent,
      }));
      `,
      [STORE_MODULE, dir],
      { shellPrefix: "trap '' XFSZ; ulimit -f 1024" },
    );
    const { code, stdout, stderr } = await exited;
    assert.equal(code, 0, `the child died: ${stderr.slice(-2000)}`);
    const report = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as {
      results: ({ name: string; message: string } | 'ok')[];
      after: string;
      absent: string;
    };
    const big = report.results[1];
    assert.ok(big !== 'ok' && big !== undefined);
    assert.equal(big.name, 'StorageError');
    assert.match(big.message, /put "big"/);
    assert.doesNotMatch(big.message, /see commitError/);
    assert.equal(report.absent, 'NOT_FOUND');
    assert.ok(report.after);
  });

  test('calls made before close() finish and are stored; a list resumed after close rejects with ClosedError', async () => {
    const dir = await freshDir();
    const store = new LmdbStore(dir);
    for (let i = 0; i < 1005; i++)
      void store.put(`l/${String(i).padStart(4, '0')}`, new Uint8Array(1));
    await store.put('l/zzzz', new Uint8Array(1));
    const listing = store.list('l/')[Symbol.asyncIterator]();
    for (let i = 0; i < 1000; i++) await listing.next();
    const puts = [0, 1, 2, 3].map((i) => store.put(`late/${i}`, new Uint8Array([i])));
    await store.close();
    const settled = await Promise.allSettled(puts);
    assert.deepEqual(
      settled.map((s) => s.status),
      ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'],
    );
    await assert.rejects(listing.next(), ClosedError);
    await assert.rejects(store.put('x', new Uint8Array(1)), ClosedError);
    const reopened = new LmdbStore(dir);
    assert.deepEqual([...(await reopened.get('late/3')).body], [3]);
    await reopened.close();
  });

  test('a folder path that is a file fails with an error naming the store, the call, the key and the cause', async () => {
    const file = join(await freshDir(), 'not-a-folder');
    await writeFile(file, 'x');
    const store = new LmdbStore(file);
    await assert.rejects(store.get('k'), (e: unknown) => {
      assert.ok(e instanceof StorageError, String(e));
      assert.match(e.message, new RegExp(`lmdb://${file}: get "k": .*not a folder`));
      return true;
    });
    await store.close();
  });

  test(
    'a process SIGKILLed while it holds the write lock does not stall the others',
    { timeout: 20_000 },
    async () => {
      const dir = await freshDir();
      const store = new LmdbStore(dir);
      await store.put('k', new Uint8Array([1]));
      let locked!: () => void;
      const holding = new Promise<void>((resolve) => (locked = resolve));
      const { child, exited } = await runChild(
        `
      const { open } = await import(process.argv[2]);
      const root = open({ path: process.argv[3], noSubdir: true, overlappingSync: false, maxDbs: 4 });
      root.transactionSync(() => {
        process.stdout.write('locked\\n');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
      });
      `,
        [import.meta.resolve('lmdb'), join(dir, LMDB_STORE_FILE)],
        { onLine: (line) => line === 'locked' && locked() },
      );
      await holding;
      const put = store.put('k2', new Uint8Array([2]), { mode: 'create' });
      child.kill('SIGKILL');
      await exited;
      assert.ok((await put).version);
      assert.deepEqual([...(await store.get('k2')).body], [2]);
      await store.close();
    },
  );

  test('keys of 1024 UTF-8 bytes and unusual code points round-trip and list in UTF-8 byte order', async () => {
    const store = new LmdbStore(await freshDir());
    const keys = [
      '\u{1F600}'.repeat(256),
      'é'.repeat(512),
      'x'.repeat(1024),
      '\uffff',
      '\u{10000}',
      '\ue000',
      '\u007f',
      '\u0080',
      '\u0001',
      'a',
      'a/b',
    ];
    for (const [i, key] of keys.entries()) await store.put(key, new Uint8Array([i]));
    const listed: string[] = [];
    for await (const meta of store.list('')) listed.push(meta.key);
    assert.deepEqual(listed, [...keys].sort(compareKeys));
    for (const [i, key] of keys.entries()) assert.deepEqual([...(await store.get(key)).body], [i]);
    await store.close();
  });

  test('stores opened through a symbolic link and a trailing slash share the folder with its real path', async () => {
    const dir = await freshDir();
    const link = `${dir}-link`;
    await symlink(dir, link);
    dirs.push(link);
    const real = new LmdbStore(dir);
    const linked = new LmdbStore(link);
    const slashed = new LmdbStore(`${dir}/`);
    await real.put('k', new Uint8Array([1]), { mode: 'create' });
    await assert.rejects(linked.put('k', new Uint8Array([2]), { mode: 'create' }), {
      code: 'PRECONDITION_FAILED',
    });
    await linked.close();
    const { version } = await slashed.put('k', new Uint8Array([3]));
    assert.equal((await real.get('k')).version, version);
    await slashed.close();
    await real.put('k', new Uint8Array([4]), { mode: { ifMatch: version } });
    await real.close();
  });
});

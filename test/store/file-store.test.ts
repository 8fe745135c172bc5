import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  realpath,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  FileStore,
  InvalidArgumentError,
  NotFoundError,
  StorageError,
  openStore,
  type ObjectStore,
} from '../../src/index.ts';
import { fileStoreError } from '../../src/store/file-store.ts';
import { describeStoreConformance, type CounterState } from './conformance.ts';
import type { ChildOp, ChildResult } from './file-ops-child.ts';

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'spillway-file-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describeStoreConformance({
  name: 'file',
  exactConflicts: true,
  open: async () => ({ store: openStore(`file://${await freshDir()}`) }),
});

describe('file store specifics', () => {
  test('keys that could escape the root are refused with InvalidArgumentError', async () => {
    const root = await freshDir();
    const store = new FileStore(join(root, 'inner'));
    for (const key of [
      '../escape',
      '/abs',
      'a/../../b',
      'a/./b',
      'a//b',
      'trailing/',
      'nul\0byte',
      '.spillway/tmp/x',
      '..',
    ]) {
      await assert.rejects(
        store.put(key, new Uint8Array([1])),
        InvalidArgumentError,
        `key ${JSON.stringify(key)}`,
      );
      await assert.rejects(store.get(key), InvalidArgumentError, `get ${JSON.stringify(key)}`);
    }
    await assert.rejects(async () => {
      for await (const _ of store.list('../')) void _;
    }, InvalidArgumentError);
    // Nothing escaped, and refused calls did not even create the store's own folder.
    assert.deepEqual(await readdir(root), []);
  });

  test('a key cannot be both an object and a folder of other keys', async () => {
    const store = new FileStore(await freshDir());
    await store.put('a', new Uint8Array([1]));
    await assert.rejects(store.put('a/b', new Uint8Array([1])), InvalidArgumentError);
    await store.put('c/d', new Uint8Array([1]));
    await assert.rejects(store.put('c', new Uint8Array([1])), InvalidArgumentError);
  });

  test('readers never see a partly written object while it is overwritten', async () => {
    const store = new FileStore(await freshDir());
    const bodies = [randomBytes(4 << 20), randomBytes(4 << 20)];
    await store.put('big', bodies[0] as Uint8Array);
    let writing = true;
    const writer = (async () => {
      for (let i = 1; i <= 10; i++) await store.put('big', bodies[i % 2] as Uint8Array);
      writing = false;
    })();
    let reads = 0;
    while (writing) {
      const got = Buffer.from((await store.get('big')).body);
      assert.ok(
        got.equals(bodies[0] as Buffer) || got.equals(bodies[1] as Buffer),
        'a read saw a mix of two writes',
      );
      reads++;
    }
    await writer;
    assert.ok(reads > 0);
  });

  test('no temporary files are left behind, and those of dead processes are removed on open', async () => {
    const root = await freshDir();
    const store = new FileStore(root);
    await store.put('x', new Uint8Array([1]));
    await assert.rejects(store.put('x', new Uint8Array([2]), { mode: 'create' }));
    await assert.rejects(store.put('x', new Uint8Array([2]), { mode: { ifMatch: 'stale' } }));
    assert.deepEqual(await readdir(join(root, '.spillway', 'tmp')), []);
    // A temporary file of a process that no longer exists (pid 2^22 + 1 is beyond Linux's largest pid_max).
    const orphan = `spw-4194305-${'deadbeef'.repeat(2)}.tmp`;
    await writeFile(join(root, '.spillway', 'tmp', orphan), 'partial');
    const reopened = new FileStore(root);
    await reopened.head('x');
    assert.deepEqual(await readdir(join(root, '.spillway', 'tmp')), []);
  });

  test('file: URLs open absolute and relative folders', async () => {
    const root = await freshDir();
    await openStore(`file://${root}`).put('k', new Uint8Array([5]));
    const relative = openStore(`file:${join(root).replace(process.cwd(), '.')}`) as FileStore;
    assert.equal(relative.root, root);
    assert.equal((openStore('file:./some/dir') as FileStore).root, join(process.cwd(), 'some/dir'));
  });

  test('a compare-and-swap counter shared by 4 OS processes of 100 increments ends at exactly 400', async () => {
    const root = await freshDir();
    const child = fileURLToPath(new URL('./file-counter-child.ts', import.meta.url));
    const codes = await Promise.all(
      Array.from(
        { length: 4 },
        (_, i) =>
          new Promise<number | null>((resolve, reject) => {
            const p = spawn(
              process.execPath,
              ['--import', 'tsx', child, root, 'counter', `p${i}`, '100'],
              {
                stdio: ['ignore', 'inherit', 'inherit'],
              },
            );
            p.once('error', reject);
            p.once('exit', resolve);
          }),
      ),
    );
    assert.deepEqual(codes, [0, 0, 0, 0]);
    const state = JSON.parse(
      new TextDecoder().decode((await new FileStore(root).get('counter')).body),
    ) as CounterState;
    assert.equal(state.count, 400);
    assert.equal(new Set(state.ops).size, 400);
  });
});

const isRoot = process.getuid?.() === 0;
const bytes = (s: string) => new TextEncoder().encode(s);

async function keysOf(store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const meta of store.list(prefix)) keys.push(meta.key);
  return keys;
}

/** Every path under `dir`, relative, folders with a trailing "/" and links with " ->". */
async function tree(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(join(dir, rel), { withFileTypes: true })) {
    const path = rel === '' ? d.name : `${rel}/${d.name}`;
    if (d.isSymbolicLink()) out.push(`${path} ->`);
    else if (d.isDirectory()) out.push(`${path}/`, ...(await tree(dir, path)));
    else out.push(path);
  }
  return out.sort();
}

/**
 * A check for `assert.rejects`: a StorageError with code UNSAFE_PATH whose
 * message names the store, the call's subject (`key "k"` or `prefix "p"`)
 * and the path that is a link.
 */
function unsafePath(store: FileStore, subject: string, link: string) {
  return (e: unknown) => {
    assert.ok(e instanceof StorageError, `expected a StorageError, got ${String(e)}`);
    assert.equal(e.code, 'UNSAFE_PATH', e.message);
    assert.equal(e.retriable, false);
    assert.ok(
      e.message.startsWith(`${store.description}: ${subject}: "${link}" is a symbolic link;`),
      e.message,
    );
    return true;
  };
}

describe('file store: links inside the folder are never followed', () => {
  async function setUp() {
    const base = await freshDir();
    const root = join(base, 'root');
    const outside = join(base, 'outside');
    await mkdir(root);
    await mkdir(outside);
    await writeFile(join(outside, 'x.batch'), 'outside');
    return { root, outside, store: new FileStore(root) };
  }

  test('a linked folder is refused by put, get, head, delete and list, and nothing outside changes', async () => {
    const { root, outside, store } = await setUp();
    await symlink(outside, join(root, 'ingest'));
    const key = (k: string) => unsafePath(store, `key "${k}"`, 'ingest');
    for (const mode of ['overwrite', 'create', { ifMatch: 'v' }] as const) {
      await assert.rejects(
        store.put('ingest/y.batch', bytes('y'), { mode }),
        key('ingest/y.batch'),
      );
    }
    await assert.rejects(store.put('ingest/new/y.batch', bytes('y')), key('ingest/new/y.batch'));
    await assert.rejects(store.get('ingest/x.batch'), key('ingest/x.batch'));
    await assert.rejects(store.head('ingest/x.batch'), key('ingest/x.batch'));
    await assert.rejects(store.delete('ingest/x.batch'), key('ingest/x.batch'));
    await assert.rejects(store.deleteMany(['ingest/x.batch']), key('ingest/x.batch'));
    for (const prefix of ['ingest/', 'ingest/x', 'ing', '']) {
      await assert.rejects(
        keysOf(store, prefix),
        unsafePath(store, `prefix "${prefix}"`, 'ingest'),
      );
    }
    assert.deepEqual(await tree(outside), ['x.batch']);
    assert.equal(await readFile(join(outside, 'x.batch'), 'utf8'), 'outside');
  });

  test('a link deeper down is named in the error, whichever call meets it', async () => {
    const { root, outside, store } = await setUp();
    await store.put('a/real', bytes('r'));
    await symlink(outside, join(root, 'a', 'b'));
    await assert.rejects(
      store.put('a/b/c/d', bytes('d')),
      unsafePath(store, 'key "a/b/c/d"', 'a/b'),
    );
    await assert.rejects(store.get('a/b/x.batch'), unsafePath(store, 'key "a/b/x.batch"', 'a/b'));
    await assert.rejects(keysOf(store, 'a/b/'), unsafePath(store, 'prefix "a/b/"', 'a/b'));
    await assert.rejects(keysOf(store, 'a/'), unsafePath(store, 'prefix "a/"', 'a/b'));
    // Keys beside the link are still served.
    assert.equal(new TextDecoder().decode((await store.get('a/real')).body), 'r');
    assert.deepEqual(await keysOf(store, 'a/r'), ['a/real']);
    assert.deepEqual(await tree(outside), ['x.batch']);
  });

  test('a link planted at a key is an error, not an object, and is neither followed nor removed', async () => {
    const { root, outside, store } = await setUp();
    await store.put('k0', bytes('0'));
    await symlink(join(outside, 'x.batch'), join(root, 'k'));
    const refused = unsafePath(store, 'key "k"', 'k');
    await assert.rejects(store.get('k'), refused);
    await assert.rejects(store.head('k'), refused);
    await assert.rejects(store.delete('k'), refused);
    const { version } = await store.head('k0');
    for (const mode of ['overwrite', 'create', { ifMatch: version }] as const) {
      await assert.rejects(store.put('k', bytes('new'), { mode }), refused);
    }
    await assert.rejects(keysOf(store, ''), unsafePath(store, 'prefix ""', 'k'));
    assert.ok((await lstat(join(root, 'k'))).isSymbolicLink());
    assert.equal(await readFile(join(outside, 'x.batch'), 'utf8'), 'outside');
    assert.deepEqual(await readdir(join(root, '.spillway', 'tmp')), []);
  });

  test('a root that is itself a link is resolved once, and shares locks with its real path', async () => {
    const base = await freshDir();
    await mkdir(join(base, 'real'));
    await symlink(join(base, 'real'), join(base, 'link'));
    const viaLink = new FileStore(join(base, 'link'));
    const viaReal = new FileStore(join(base, 'real'));
    const { version } = await viaLink.put('a/b', bytes('1'));
    assert.equal(await readFile(join(base, 'real', 'a', 'b'), 'utf8'), '1');
    await viaReal.put('a/b', bytes('2'), { mode: { ifMatch: version } });
    await assert.rejects(viaLink.put('a/b', bytes('3'), { mode: { ifMatch: version } }));
    assert.deepEqual(await keysOf(viaLink, ''), ['a/b']);
    assert.equal(new TextDecoder().decode((await viaLink.get('a/b')).body), '2');
  });

  test(
    'a FIFO planted at a key is an error for every call, instead of blocking a read forever or looking absent (a create would loop)',
    {
      timeout: 10_000,
    },
    async (t) => {
      const { root, store } = await setUp();
      const made = spawnSync('mkfifo', [join(root, 'fifo')], { encoding: 'utf8' });
      if (made.status !== 0) {
        t.diagnostic(`skipped: mkfifo failed (${made.stderr || made.error?.message})`);
        return;
      }
      for (const call of [
        () => store.get('fifo'),
        () => store.head('fifo'),
        () => store.put('fifo', bytes('x')),
        () => store.put('fifo', bytes('x'), { mode: 'create' }),
      ]) {
        await assert.rejects(
          call(),
          (e: unknown) =>
            e instanceof StorageError &&
            !(e instanceof NotFoundError) &&
            /special file/.test(e.message),
        );
      }
      // A folder where an object is looked for reads as absent (as on S3); a create there is refused.
      await mkdir(join(root, 'folder', 'inner'), { recursive: true });
      await writeFile(join(root, 'folder', 'inner', 'x'), 'x');
      await assert.rejects(store.get('folder'), NotFoundError);
      await assert.rejects(
        store.put('folder', bytes('x'), { mode: 'create' }),
        InvalidArgumentError,
      );
      assert.deepEqual(await keysOf(store, ''), ['folder/inner/x']);
    },
  );
});

describe("file store: the store's own folder", () => {
  test('a linked .spillway, .spillway/tmp or .spillway/locks is refused, and nothing outside is deleted', async () => {
    for (const linked of ['.spillway', '.spillway/tmp', '.spillway/locks']) {
      const base = await freshDir();
      const root = join(base, 'root');
      const elsewhere = join(base, 'elsewhere');
      await mkdir(join(root, '.spillway'), { recursive: true });
      await mkdir(elsewhere);
      // Names the old sweep took for temporary files of dead processes.
      const planted = ['123-foo', '4194305-foo', 'spw-999999-0123456789abcdef.tmp'];
      for (const name of planted) await writeFile(join(elsewhere, name), 'keep me');
      if (linked === '.spillway') await rm(join(root, '.spillway'), { recursive: true });
      await symlink(elsewhere, join(root, ...linked.split('/')));
      const store = new FileStore(root);
      for (const write of [() => store.put('k', bytes('k')), () => store.delete('k')]) {
        await assert.rejects(write(), (e: unknown) => {
          assert.ok(e instanceof StorageError, String(e));
          assert.equal(e.code, 'UNSAFE_PATH');
          assert.ok(
            e.message.startsWith(`${store.description}: "${linked}" is a symbolic link;`),
            e.message,
          );
          return true;
        });
      }
      assert.deepEqual(await tree(elsewhere), [...planted].sort(), linked);
      assert.ok(!(await tree(root)).includes('k'), linked);
    }
  });

  test('a .spillway that is a file is refused', async () => {
    const root = await freshDir();
    await writeFile(join(root, '.spillway'), 'not a folder');
    const store = new FileStore(root);
    await assert.rejects(store.put('k', bytes('k')), { name: 'StorageError', code: 'UNSAFE_PATH' });
    assert.deepEqual(await tree(root), ['.spillway']);
  });

  test('the temp sweep deletes only regular files of its own name pattern whose process is dead', async () => {
    const root = await freshDir();
    const tmp = join(root, '.spillway', 'tmp');
    await mkdir(tmp, { recursive: true });
    const dead = 'spw-4194305-0123456789abcdef.tmp';
    const kept = [
      '12345-x',
      '4194305-deadbeef',
      `${dead}.bak`,
      'spw-4194305-0123456789ABCDEF.tmp',
      `spw-${process.pid}-0123456789abcdef.tmp`,
    ];
    for (const name of [dead, ...kept]) await writeFile(join(tmp, name), 'x');
    await mkdir(join(tmp, 'spw-4194305-aaaaaaaaaaaaaaaa.tmp'));
    await symlink(join(root, 'nowhere'), join(tmp, 'spw-4194305-bbbbbbbbbbbbbbbb.tmp'));
    await new FileStore(root).put('k', bytes('k'));
    assert.deepEqual(
      await readdir(tmp).then((names) => names.sort()),
      [...kept, 'spw-4194305-aaaaaaaaaaaaaaaa.tmp', 'spw-4194305-bbbbbbbbbbbbbbbb.tmp'].sort(),
    );
  });
});

/** What running the child as an unprivileged user gave, or why it could not run. */
type ChildRun = { results: ChildResult[] } | { skipped: string };

/**
 * Runs store calls in a child process for which folder permissions apply: as
 * uid 65534 (nobody) when the tests run as root, else as the current user.
 */
async function runUnprivileged(root: string, ops: ChildOp[]): Promise<ChildRun> {
  const child = fileURLToPath(new URL('./file-ops-child.ts', import.meta.url));
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', child, root, JSON.stringify(ops)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(isRoot ? { uid: 65534, gid: 65534 } : {}),
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const cannot = (why: string) => {
      // As root the switch to uid 65534 may be impossible (no CAP_SETUID, a
      // checkout nobody can read): only then is the permission check skipped.
      if (isRoot) resolve({ skipped: `cannot run a child as uid 65534: ${why}` });
      else reject(new Error(`the child failed: ${why}`));
    };
    p.once('error', (e) => cannot(e.message));
    p.once('close', (code) => {
      try {
        resolve({ results: JSON.parse(out) as ChildResult[] });
      } catch {
        cannot(`exit code ${code}: ${err.slice(0, 1000)}`);
      }
    });
  });
}

/** Makes `dirs` read-only for the duration of `fn`, then writable again so cleanup works. */
async function readOnly(dirs: string[], fn: () => Promise<void>): Promise<void> {
  for (const d of dirs) await chmod(d, 0o555);
  try {
    await fn();
  } finally {
    for (const d of dirs) await chmod(d, 0o755);
  }
}

describe('file store: reads create nothing', () => {
  test('get, head, list and delete on a missing folder create nothing', async () => {
    const base = await freshDir();
    const store = new FileStore(join(base, 'typo', 'deeper'));
    await assert.rejects(store.get('k'), NotFoundError);
    await assert.rejects(store.head('a/b'), NotFoundError);
    assert.deepEqual(await keysOf(store, ''), []);
    assert.deepEqual(await keysOf(store, 'a/'), []);
    await store.delete('k');
    assert.deepEqual(await readdir(base), []);
    await store.put('k', bytes('k'));
    assert.equal(new TextDecoder().decode((await store.get('k')).body), 'k');
  });

  test('a queue in a read-only folder can be read, and reading it creates nothing', async (t) => {
    const base = await freshDir();
    await chmod(base, 0o755);
    const root = join(base, 'q');
    const writer = new FileStore(root);
    await writer.put('a', bytes('A'));
    await writer.put('d/b', bytes('B'));
    // A queue copied or unpacked from elsewhere has no scratch folder.
    await rm(join(root, '.spillway'), { recursive: true });
    const before = await tree(root);
    await readOnly([root, join(root, 'd')], async () => {
      // In this process (which may be root, for whom permissions do not apply).
      const reader = new FileStore(root);
      assert.equal(new TextDecoder().decode((await reader.get('a')).body), 'A');
      assert.equal((await reader.head('d/b')).size, 1);
      assert.deepEqual(await keysOf(reader, ''), ['a', 'd/b']);
      await assert.rejects(reader.get('missing'), NotFoundError);
      assert.deepEqual(await tree(root), before);
      // And as a user the folder's permissions bind.
      const run = await runUnprivileged(root, [
        { op: 'get', key: 'a' },
        { op: 'head', key: 'd/b' },
        { op: 'list', key: '' },
        { op: 'list', key: 'd/' },
        { op: 'get', key: 'missing' },
      ]);
      if ('skipped' in run) {
        t.diagnostic(
          `permission assertion skipped, only "nothing created" checked: ${run.skipped}`,
        );
      } else {
        assert.deepEqual(
          run.results.map((r) => (r.ok ? r.value : `${r.name} ${r.code}`)),
          ['A', 1, ['a', 'd/b'], ['d/b'], 'NotFoundError NOT_FOUND'],
        );
      }
      assert.deepEqual(await tree(root), before);
    });
  });
});

describe('file store: operating-system errors are Spillway errors', () => {
  test('calls the process may not make fail with ACCESS_DENIED naming the store, the call and the key', async (t) => {
    const base = await freshDir();
    await chmod(base, 0o755);
    const root = join(base, 'q');
    const writer = new FileStore(root);
    await writer.put('a', bytes('A'));
    await writer.put('secret', bytes('S'));
    await writer.put('locked/x', bytes('X'));
    const before = await tree(root);
    const spillway = join(root, '.spillway');
    const unreadable = [join(root, 'secret'), join(root, 'locked')];
    for (const path of unreadable) await chmod(path, 0o000);
    await readOnly([root, spillway, join(spillway, 'tmp'), join(spillway, 'locks')], async () => {
      const run = await runUnprivileged(root, [
        { op: 'put', key: 'k' },
        { op: 'put', key: 'new/k' },
        { op: 'put', key: 'a' },
        { op: 'delete', key: 'a' },
        { op: 'get', key: 'secret' },
        { op: 'head', key: 'locked/x' },
        { op: 'list', key: 'locked/' },
      ]);
      const inside = await runUnprivileged(join(root, 'sub'), [{ op: 'put', key: 'k' }]);
      if ('skipped' in run || 'skipped' in inside) {
        const why = 'skipped' in run ? run.skipped : 'skipped' in inside ? inside.skipped : '';
        t.diagnostic(`permission assertions skipped (see the synthetic-errno test): ${why}`);
        return;
      }
      for (const [store, results] of [
        [root, run.results],
        [join(root, 'sub'), inside.results],
      ] as const) {
        for (const r of results) {
          assert.ok(!r.ok, `${r.op} "${r.key}" succeeded`);
          assert.equal(r.name, 'StorageError', r.message);
          assert.equal(r.code, 'ACCESS_DENIED', r.message);
          assert.ok(r.spillway);
          assert.ok(r.message.startsWith(`file://${store}: ${r.op} "${r.key}": `), r.message);
          assert.match(r.message, /permission denied \(EACCES on \w+ of "\//);
        }
      }
    }).finally(async () => {
      for (const path of unreadable) await chmod(path, 0o755);
    });
    assert.deepEqual(await tree(root), before);
    assert.deepEqual(await readdir(join(spillway, 'tmp')), []);
  });

  test('a full disk fails put with NO_SPACE and leaves no temporary file behind', async (t) => {
    if (!isRoot) {
      t.diagnostic('mounting a 64 KiB tmpfs needs root; see the synthetic-errno test below');
      return;
    }
    const dir = await freshDir();
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], {
      encoding: 'utf8',
    });
    if (mounted.status !== 0) {
      t.diagnostic(`cannot mount a tmpfs (${mounted.stderr || mounted.error?.message}); see below`);
      return;
    }
    try {
      const store = new FileStore(dir);
      await store.put('small', bytes('s'));
      for (const [key, mode] of [
        ['big', 'overwrite'],
        ['small', 'overwrite'],
        ['big', 'create'],
        ['nested/big', 'create'],
      ] as const) {
        await assert.rejects(store.put(key, new Uint8Array(256 << 10), { mode }), (e: unknown) => {
          assert.ok(e instanceof StorageError, String(e));
          assert.equal(e.code, 'NO_SPACE');
          assert.equal(e.retriable, false);
          assert.ok(e.message.startsWith(`${store.description}: put "${key}": `), e.message);
          assert.match(e.message, /disk is full/);
          assert.equal((e.cause as NodeJS.ErrnoException).code, 'ENOSPC');
          return true;
        });
        assert.deepEqual(await readdir(join(dir, '.spillway', 'tmp')), [], `after ${key}`);
      }
      assert.deepEqual(await keysOf(store, ''), ['small']);
      // The failed writes gave their space back.
      for (let i = 0; i < 4; i++) await store.put(`after-${i}`, new Uint8Array(8 << 10));
    } finally {
      spawnSync('umount', [dir]);
    }
  });

  test('errno codes become stable Spillway codes, with retriable set only for transient ones', () => {
    const errno = (code: string) =>
      Object.assign(new Error(`${code}: synthetic, open '/srv/q/k'`), {
        code,
        syscall: 'open',
        path: '/srv/q/k',
      });
    const cases: [string, string, string, boolean, RegExp][] = [
      ['EACCES', 'put', 'ACCESS_DENIED', false, /permission denied/],
      ['EPERM', 'delete', 'ACCESS_DENIED', false, /permission denied/],
      ['EROFS', 'put', 'ACCESS_DENIED', false, /read-only/],
      ['ENOSPC', 'put', 'NO_SPACE', false, /disk is full/],
      ['EDQUOT', 'put', 'NO_SPACE', false, /quota is full/],
      ['EMFILE', 'get', 'STORAGE', true, /too many open files/],
      ['ENFILE', 'list', 'STORAGE', true, /too many open files/],
      ['EAGAIN', 'put', 'STORAGE', true, /EAGAIN/],
      ['EBUSY', 'delete', 'STORAGE', true, /EBUSY/],
      ['EIO', 'get', 'STORAGE', false, /EIO/],
      ['ENOENT', 'put', 'STORAGE', false, /ENOENT/],
    ];
    for (const [code, op, expected, retriable, message] of cases) {
      const cause = errno(code);
      const e = fileStoreError(cause, 'file:///srv/q', op, 'k');
      assert.ok(e instanceof StorageError && !(e instanceof NotFoundError), code);
      assert.equal(e.code, expected, code);
      assert.equal(e.retriable, retriable, code);
      assert.equal(e.cause, cause);
      assert.ok(e.message.startsWith(`file:///srv/q: ${op} "k": `), e.message);
      assert.match(e.message, message);
    }
    for (const op of ['get', 'head']) {
      for (const code of ['ENOENT', 'ENOTDIR']) {
        assert.ok(fileStoreError(errno(code), 'file:///srv/q', op, 'k') instanceof NotFoundError);
      }
    }
    const bug = new TypeError('not an errno error');
    const wrapped = fileStoreError(bug, 'file:///srv/q', 'get', 'k');
    assert.ok(wrapped instanceof StorageError && wrapped.cause === bug);
  });
});

describe('file store: locks', () => {
  test('lock names are salted with the store secret: a local process binding the name it could guess does not stall writers', async (t) => {
    if (process.platform !== 'linux') {
      t.diagnostic('skipped: abstract-socket locks are Linux only');
      return;
    }
    const root = await freshDir();
    const store = new FileStore(root);
    await store.put('k', bytes('v1'));
    const secret = await readFile(join(root, '.spillway', 'lock-secret'), 'utf8');
    assert.match(secret, /^[0-9a-f]{64}$/);
    // The name an unsalted lock of this key would have had.
    const guessed = `\0spillway-${createHash('sha256')
      .update(`${await realpath(root)}\0k`)
      .digest('hex')
      .slice(0, 40)}`;
    const squatter = net.createServer();
    await new Promise<void>((resolve, reject) => {
      squatter.once('error', reject);
      squatter.listen(guessed, resolve);
    });
    try {
      const v = (await store.head('k')).version;
      await store.put('k', bytes('v2'), { mode: { ifMatch: v } });
      assert.equal(new TextDecoder().decode((await store.get('k')).body), 'v2');
    } finally {
      await new Promise<void>((r) => squatter.close(() => r()));
    }
  });
});

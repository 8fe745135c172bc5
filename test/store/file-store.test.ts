import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FileStore, InvalidArgumentError, openStore } from '../../src/index.ts';
import { describeStoreConformance, type CounterState } from './conformance.ts';

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
    assert.deepEqual(await readdir(root), ['inner']);
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
    // A temporary file of a process that no longer exists (pid 2^22 + 1 is beyond Linux's pid_max default).
    await mkdir(join(root, '.spillway', 'tmp'), { recursive: true });
    await writeFile(join(root, '.spillway', 'tmp', '4194305-deadbeef'), 'partial');
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

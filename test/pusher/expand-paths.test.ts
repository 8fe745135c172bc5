import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { InvalidArgumentError } from '../../src/errors.ts';
import { expandPaths, globSegmentRegExp } from '../../src/pusher/expand-paths.ts';

let root: string;
const cwd = process.cwd();

/** Creates the files (paths ending in "/" are folders) under the test root. */
async function tree(paths: string[]): Promise<void> {
  for (const p of paths) {
    const full = join(root, p);
    if (p.endsWith('/')) {
      await mkdir(full, { recursive: true });
    } else {
      await mkdir(dirname(full), { recursive: true });
      await writeFile(full, p);
    }
  }
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'spillway-expand-paths-'));
  await tree([
    'logs/b.log',
    'logs/a.log',
    'logs/B.log',
    'logs/a/z.log',
    'logs/a.txt',
    'logs/.hidden.log',
    'logs/.spillway/state.json',
    'logs/old/2024/x.log',
    'logs/old/2024/y.txt',
    'logs/empty/',
    'other/q.log',
    'odd/[x].log',
  ]);
  await symlink(join(root, 'logs/a.log'), join(root, 'logs/link-to-file.log'));
  await symlink(join(root, 'other'), join(root, 'logs/link-to-dir'));
  await symlink(join(root, 'logs'), join(root, 'logs/old/loop'));
  try {
    execFileSync('mkfifo', [join(root, 'logs/fifo.log')]);
  } catch {
    // No mkfifo here: the FIFO case is not covered.
  }
  process.chdir(root);
});
after(async () => {
  process.chdir(cwd);
  await rm(root, { recursive: true, force: true });
});

describe('folders', () => {
  test('are walked depth first in byte order, regular files only, dot files included, .spillway and links skipped', async () => {
    assert.deepEqual(await expandPaths(['logs']), [
      'logs/.hidden.log',
      'logs/B.log',
      'logs/a/z.log',
      'logs/a.log',
      'logs/a.txt',
      'logs/b.log',
      'logs/old/2024/x.log',
      'logs/old/2024/y.txt',
    ]);
  });

  test('keep the path as given, absolute or with a trailing slash', async () => {
    assert.deepEqual(await expandPaths(['other/']), ['other/q.log']);
    assert.deepEqual(await expandPaths([join(root, 'other')]), [join(root, 'other/q.log')]);
  });
});

describe('files', () => {
  test('are taken as given, in the order given; a named link is followed', async () => {
    assert.deepEqual(await expandPaths(['other/q.log', 'logs/link-to-file.log']), [
      'other/q.log',
      'logs/link-to-file.log',
    ]);
  });

  test('reached twice are listed once, where first found', async () => {
    assert.deepEqual(
      await expandPaths([
        'logs/b.log',
        './logs/b.log',
        'logs/old',
        join(root, 'logs/old/2024/x.log'),
      ]),
      ['logs/b.log', 'logs/old/2024/x.log', 'logs/old/2024/y.txt'],
    );
    // The link and its target are one file.
    assert.deepEqual(await expandPaths(['logs/link-to-file.log', 'logs/a.log']), [
      'logs/link-to-file.log',
    ]);
  });

  test('hard links of one file are listed once: one inode, one source', async () => {
    await tree(['hard/one.log']);
    await link(join(root, 'hard/one.log'), join(root, 'hard/two.log'));
    await link(join(root, 'hard/one.log'), join(root, 'other-hard.log'));
    assert.deepEqual(await expandPaths(['hard']), ['hard/one.log']);
    assert.deepEqual(await expandPaths(['other-hard.log', 'hard/*.log']), ['other-hard.log']);
  });

  test('a missing path is an InvalidArgumentError', async () => {
    await assert.rejects(expandPaths(['logs/nope.log']), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.equal(e.message, 'no such file or folder: logs/nope.log');
      return true;
    });
  });

  test('a FIFO named explicitly is refused', async (t) => {
    try {
      execFileSync('test', ['-p', join(root, 'logs/fifo.log')]);
    } catch {
      t.skip('no FIFO');
      return;
    }
    await assert.rejects(expandPaths(['logs/fifo.log']), /is a FIFO \(named pipe\)/);
  });
});

describe('globs', () => {
  test('* and ? match within a name, not a leading dot, in byte order', async () => {
    assert.deepEqual(await expandPaths(['logs/*.log']), ['logs/B.log', 'logs/a.log', 'logs/b.log']);
    assert.deepEqual(await expandPaths(['logs/?.*']), [
      'logs/B.log',
      'logs/a.log',
      'logs/a.txt',
      'logs/b.log',
    ]);
    assert.deepEqual(await expandPaths(['logs/.*.log']), ['logs/.hidden.log']);
  });

  test('** matches any number of folders, without entering links or dot folders', async () => {
    assert.deepEqual(await expandPaths(['logs/**/*.log']), [
      'logs/B.log',
      'logs/a/z.log',
      'logs/a.log',
      'logs/b.log',
      'logs/old/2024/x.log',
    ]);
    assert.deepEqual(await expandPaths(['logs/**']), [
      'logs/B.log',
      'logs/a/z.log',
      'logs/a.log',
      'logs/a.txt',
      'logs/b.log',
      'logs/old/2024/x.log',
      'logs/old/2024/y.txt',
    ]);
  });

  test('[...] matches one of a set, [!...] one outside it; \\ escapes', async () => {
    assert.deepEqual(await expandPaths(['logs/[ab].log']), ['logs/a.log', 'logs/b.log']);
    assert.deepEqual(await expandPaths(['logs/[!a].log']), ['logs/B.log', 'logs/b.log']);
    assert.deepEqual(await expandPaths(['logs/[A-Z].log']), ['logs/B.log']);
    assert.deepEqual(await expandPaths(['odd/\\[x\\].*']), ['odd/[x].log']);
    // A path that exists is never taken for a pattern.
    assert.deepEqual(await expandPaths(['odd/[x].log']), ['odd/[x].log']);
  });

  test('patterns in the folder given, absolute or relative, and with a wildcard folder', async () => {
    assert.deepEqual(await expandPaths(['*/q.log']), ['other/q.log']);
    assert.deepEqual(await expandPaths([join(root, 'logs/old/*/x.*')]), [
      join(root, 'logs/old/2024/x.log'),
    ]);
  });

  test('a pattern that matches nothing is an InvalidArgumentError', async () => {
    await assert.rejects(expandPaths(['logs/*.csv']), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.equal(e.message, 'no files match the pattern logs/*.csv');
      return true;
    });
  });

  test('an aborted expansion rejects with the reason', async () => {
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    await assert.rejects(expandPaths(['logs'], { signal: controller.signal }), /stop/);
  });
});

describe('globSegmentRegExp', () => {
  const matches = (pattern: string, name: string): boolean => globSegmentRegExp(pattern).test(name);

  test('wildcards, sets, ranges, negation and escapes', () => {
    assert.ok(matches('*.log', 'a.log'));
    assert.ok(!matches('*.log', 'a.log.1'));
    assert.ok(!matches('*.log', '.a.log'));
    assert.ok(matches('.*', '.a'));
    assert.ok(matches('a?c', 'abc'));
    assert.ok(matches('a?c', 'a€c'), 'one character, not one byte');
    assert.ok(!matches('a?c', 'ac'));
    assert.ok(matches('[a-c]x', 'bx'));
    assert.ok(!matches('[a-c]x', 'dx'));
    assert.ok(matches('[!a-c]x', 'dx'));
    assert.ok(matches('[^a-c]x', 'dx'));
    assert.ok(matches('[]]', ']'));
    assert.ok(matches('[a-]', '-'));
    assert.ok(matches('x[', 'x['), 'an unclosed [ is literal');
    assert.ok(matches('\\*', '*'));
    assert.ok(!matches('\\*', 'a'));
    assert.ok(matches('a.b(c)+$', 'a.b(c)+$'), 'regular expression characters are literal');
    assert.ok(matches('*', 'line\nbreak'));
  });
});

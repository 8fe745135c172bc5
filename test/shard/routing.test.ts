import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  assignVnodes,
  fnv1a32,
  parseVnodeList,
  rendezvousScore,
  vnodeOf,
  vnodePrefix,
} from '../../src/shard/routing.ts';
import { InvalidArgumentError } from '../../src/index.ts';

const all = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

describe('routing', () => {
  test('FNV-1a 32 and the vnode of a key match the documented vectors', () => {
    const vectors: [string, number, number][] = [
      ['', 0x811c9dc5, 5],
      ['a', 0xe40c292c, 12],
      ['user-1', 0xf5537974, 20],
      ['user-2', 0xf8537e2d, 13],
      ['order:42', 0x491db2f1, 17],
      ['héllo', 0x4aa48540, 0],
    ];
    for (const [key, hash, v32] of vectors) {
      assert.equal(fnv1a32(new TextEncoder().encode(key)), hash, key);
      assert.equal(vnodeOf(key, 32), v32, key);
      assert.equal(vnodeOf(new TextEncoder().encode(key), 32), v32, 'bytes route as their string');
    }
  });

  test('rendezvous scores match the documented vectors', () => {
    assert.equal(rendezvousScore('a', 0), 0x407891f0);
    assert.equal(rendezvousScore('b', 7), 0x6022803f);
  });

  test('assignment is balanced, the same in any order, and a death or a join moves few vnodes', () => {
    const four = assignVnodes(['d', 'b', 'a', 'c'], all(32));
    assert.deepEqual(four, assignVnodes(['a', 'b', 'c', 'd'], all(32)));
    const load = (m: Map<number, string>): number[] => {
      const c = new Map<string, number>();
      for (const o of m.values()) c.set(o, (c.get(o) ?? 0) + 1);
      return [...c.values()].sort();
    };
    assert.deepEqual(load(four), [8, 8, 8, 8]);
    const three = assignVnodes(['a', 'b', 'c'], all(32));
    let moved = 0;
    for (const [v, o] of four) if (three.get(v) !== o) moved++;
    assert.ok(moved <= 12, `a death moved ${moved} vnodes (8 were the dead one's)`);
    const five = assignVnodes(['a', 'b', 'c', 'd', 'e'], all(32));
    moved = 0;
    for (const [v, o] of four) if (five.get(v) !== o) moved++;
    assert.ok(moved <= 10, `a join moved ${moved} vnodes`);
  });

  test('vnode lists parse ranges and refuse what is outside the capacity, backwards or malformed', () => {
    assert.deepEqual(parseVnodeList('0-3,12, 2', 16), [0, 1, 2, 3, 12]);
    assert.throws(() => parseVnodeList('0-16', 16), /outside the vnode capacity.*0 to 15/);
    assert.throws(() => parseVnodeList('7-3', 16), /runs backwards/);
    assert.throws(() => parseVnodeList('a', 16), InvalidArgumentError);
    assert.throws(() => parseVnodeList('', 16), InvalidArgumentError);
    assert.equal(vnodePrefix('ingest', 7), 'ingest/v0007');
  });
});

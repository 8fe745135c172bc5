/**
 * Both CRC32C implementations, the native one (`@node-rs/crc32`) and the JS
 * fallback, against the standard check values, against each other on random
 * data and on every format vector, and the dispatch that picks between them.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';
import { crc32c, crc32cImplementation, crc32cJs, crc32cNative } from '../../src/format/crc32c.ts';

type Crc = (bytes: Uint8Array, previous?: number) => number;

const root = new URL('../../', import.meta.url);
const forcedJs = process.env.SPILLWAY_CRC32C?.trim().toLowerCase() === 'js';

/** Why the native binding is not there, or undefined when it loads. */
function nativeMissingReason(): string | undefined {
  if (crc32cNative) return undefined;
  if (forcedJs) return 'SPILLWAY_CRC32C=js is set';
  try {
    createRequire(import.meta.url)('@node-rs/crc32');
    return '@node-rs/crc32 loads but failed its self-check';
  } catch (error) {
    return `@node-rs/crc32 does not load here: ${(error as Error).message.split('\n')[0]}`;
  }
}
const skipNative = nativeMissingReason();

const ascending = Uint8Array.from({ length: 32 }, (_, i) => i);
const VECTORS: [string, Uint8Array, number][] = [
  ['the empty input', new Uint8Array(0), 0],
  ['"123456789"', new TextEncoder().encode('123456789'), 0xe3069283],
  ['32 bytes of 0x00', new Uint8Array(32), 0x8a9136aa],
  ['32 bytes of 0xff', new Uint8Array(32).fill(0xff), 0x62a8ab43],
  ['32 bytes ascending 0..31', ascending, 0x46dd794e],
  ['32 bytes descending 31..0', ascending.slice().reverse(), 0x113fdb5c],
];

/** A deterministic pseudo-random generator, so a failure can be replayed. */
function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

function implementationSuite(name: string, crc: () => Crc, skip?: string): void {
  describe(`CRC32C, ${name}`, { ...(skip ? { skip } : {}) }, () => {
    for (const [label, bytes, expected] of VECTORS) {
      test(`gives 0x${expected.toString(16).padStart(8, '0')} for ${label}`, () => {
        assert.equal(crc()(bytes), expected);
      });
      test(`gives the same for ${label} as an unaligned view into a larger buffer`, () => {
        const backing = new Uint8Array(bytes.byteLength + 11).fill(0xa5);
        backing.set(bytes, 5);
        assert.equal(crc()(backing.subarray(5, 5 + bytes.byteLength)), expected);
      });
    }

    test('continues from a previous CRC: crc(b, crc(a)) is the CRC of a then b', () => {
      const random = xorshift(18);
      const data = randomBytes(3000);
      const whole = crc()(data);
      for (let i = 0; i < 200; i++) {
        const cut = Math.floor(random() * (data.byteLength + 1));
        const a = data.subarray(0, cut);
        const b = data.subarray(cut);
        assert.equal(crc()(b, crc()(a)), whole, `split at ${cut}`);
      }
      // Three pieces, one of them empty.
      assert.equal(
        crc()(data.subarray(7), crc()(data.subarray(7, 7), crc()(data.subarray(0, 7)))),
        whole,
      );
    });

    test('treats previous modulo 2^32, as the JS implementation does', () => {
      const data = new TextEncoder().encode('spillway');
      assert.equal(crc()(data, -1), crc32cJs(data, 0xffffffff));
      assert.equal(crc()(data, 2 ** 32 + 5), crc32cJs(data, 5));
    });
  });
}

implementationSuite('JS slice-by-8', () => crc32cJs);
implementationSuite('native @node-rs/crc32', () => crc32cNative as Crc, skipNative);
implementationSuite(`exported crc32c (${crc32cImplementation})`, () => crc32c);

describe('CRC32C, native against JS', { ...(skipNative ? { skip: skipNative } : {}) }, () => {
  const native = (): Crc => crc32cNative as Crc;

  test('agree on random buffers of 0..5000 bytes at unaligned offsets', () => {
    const random = xorshift(0x5eed);
    const backing = randomBytes(5000 + 64);
    for (let i = 0; i < 500; i++) {
      const length = Math.floor(random() * 5001);
      const offset = Math.floor(random() * 64);
      const view = backing.subarray(offset, offset + length);
      const previous = i % 2 === 0 ? 0 : Math.floor(random() * 2 ** 32);
      assert.equal(native()(view, previous), crc32cJs(view, previous), `${length} B at +${offset}`);
      assert.equal(crc32c(view, previous), crc32cJs(view, previous), `${length} B at +${offset}`);
    }
  });

  test('agree on every length around the native threshold', () => {
    const backing = randomBytes(300);
    for (let length = 0; length <= 256; length++) {
      const view = backing.subarray(3, 3 + length);
      assert.equal(native()(view), crc32cJs(view), `${length} B`);
      assert.equal(crc32c(view), crc32cJs(view), `${length} B`);
    }
  });

  test('read a subarray view in place, not the whole underlying buffer', () => {
    const backing = randomBytes(4096);
    const view = backing.subarray(1001, 3001);
    assert.equal(native()(view), crc32cJs(Uint8Array.from(view)));
    assert.notEqual(native()(view), native()(backing));
  });

  test('agree on every format vector (whole objects and every prefix)', () => {
    for (const dir of ['test/fixtures/vectors/', 'test/fixtures/log-vectors/']) {
      const files = readdirSync(new URL(dir, root)).filter((f) => f.endsWith('.bin'));
      assert.ok(files.length > 0, `no vectors in ${dir}`);
      for (const file of files) {
        const bytes = new Uint8Array(readFileSync(new URL(dir + file, root)));
        for (let end = 0; end <= bytes.byteLength; end++) {
          const prefix = bytes.subarray(0, end);
          assert.equal(native()(prefix), crc32cJs(prefix), `${dir}${file}, first ${end} B`);
        }
      }
    }
  });
});

describe('CRC32C, choice of implementation', () => {
  test('uses the native implementation whenever @node-rs/crc32 loads', () => {
    let loads = false;
    try {
      createRequire(import.meta.url)('@node-rs/crc32');
      loads = true;
    } catch {
      // An optional dependency: its absence is what the fallback is for.
    }
    assert.equal(crc32cImplementation, loads && !forcedJs ? 'native' : 'js');
    assert.equal(crc32cNative !== undefined, crc32cImplementation === 'native');
  });

  // A child process, so the variable is read when the module loads.
  const childEnv = (): NodeJS.ProcessEnv => {
    const env: NodeJS.ProcessEnv = { ...process.env, SPILLWAY_CRC32C: 'js' };
    // Without this the child's test runner would report to this one's protocol.
    delete env.NODE_TEST_CONTEXT;
    return env;
  };

  test('SPILLWAY_CRC32C=js forces the JS implementation', () => {
    const out = execFileSync(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        "const m = await import('./src/format/crc32c.ts'); console.log(JSON.stringify([m.crc32cImplementation, m.crc32cNative === undefined, m.crc32c(new TextEncoder().encode('123456789'))]));",
      ],
      { cwd: root, env: childEnv(), encoding: 'utf8' },
    );
    assert.deepEqual(JSON.parse(out), ['js', true, 0xe3069283]);
  });

  test('the format vector suites pass with SPILLWAY_CRC32C=js', () => {
    // Throws, with the child's output, when a suite fails.
    const out = execFileSync(
      process.execPath,
      [
        '--import',
        'tsx',
        '--test',
        '--test-reporter=tap',
        'test/format/vectors.test.ts',
        'test/format/log-vectors.test.ts',
      ],
      { cwd: root, env: childEnv(), encoding: 'utf8', stdio: 'pipe' },
    );
    assert.match(out, /^# pass [1-9]\d*$/m);
    assert.match(out, /^# fail 0$/m);
  });
});

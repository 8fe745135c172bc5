import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  FileStore,
  GcsStore,
  InvalidArgumentError,
  MemoryStore,
  openStore,
  PrefixStore,
  S3Store,
  StorageError,
} from '../../src/index.ts';

/** Asserts a one-line InvalidArgumentError whose message matches. */
function refuses(url: string, pattern: RegExp): void {
  assert.throws(
    () => openStore(url),
    (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError, `${url}: ${String(e)}`);
      assert.match(e.message, pattern);
      assert.doesNotMatch(e.message, /\n/);
      return true;
    },
  );
}

describe('openStore', () => {
  test('chooses the adapter by scheme', () => {
    assert.ok(openStore('memory://x') instanceof MemoryStore);
    assert.ok(openStore('memory://x/p') instanceof PrefixStore);
    assert.ok(openStore('file:///tmp/spillway-open-test') instanceof FileStore);
    assert.ok(openStore('s3://bucket-name?endpoint=http://127.0.0.1:1') instanceof S3Store);
    assert.ok(openStore('s3://bucket-name/some/prefix') instanceof PrefixStore);
    assert.ok(openStore('gs://bucket-name?endpoint=http://127.0.0.1:1') instanceof GcsStore);
    assert.ok(openStore('gs://bucket_name.example/some/prefix') instanceof PrefixStore);
  });

  test('bad URLs get one line that says what was expected', () => {
    refuses('', /expected a store URL/);
    refuses('not a url', /expected a store URL.*got "not a url"/);
    refuses('ftp://host/x', /unknown store URL scheme "ftp:"/);
    refuses('gs://Bad_Bucket', /bucket of 3-63/);
    refuses('gs://bucket-name?region=eu', /unknown URL parameter "region"/);
    refuses('gs://bucket-name?endpoint=nope', /endpoint parameter must be a URL/);
    refuses('memory://', /expected memory:\/\/<name>/);
    refuses('s3://Bad_Bucket', /bucket of 3-63/);
    refuses('s3://bucket-name?colour=blue', /unknown URL parameter "colour"/);
    refuses('s3://bucket-name?endpoint=nope', /endpoint parameter must be a URL/);
    refuses('file://otherhost/x', /host "otherhost"/);
    refuses('file:///', /filesystem root/);
    refuses('az://UPPER', /container name/);
  });

  test('credentials in a URL are refused and never echoed', () => {
    assert.throws(
      () => openStore('s3://AKIAEXAMPLE:supersecret@bucket-name/p'),
      (e: unknown) =>
        e instanceof InvalidArgumentError && !/supersecret|AKIAEXAMPLE/.test(e.message),
    );
    for (const url of [
      'gs://user:supersecret@bucket-name/p',
      'gs://bucket-name?endpoint=http://user:supersecret@127.0.0.1:1',
    ]) {
      assert.throws(
        () => openStore(url),
        (e: unknown) =>
          e instanceof InvalidArgumentError &&
          /Application Default Credentials/.test(e.message) &&
          !/supersecret/.test(e.message),
      );
    }
  });

  test('a missing Azure connection string is one line naming the variable', () => {
    const saved = process.env.AZURE_STORAGE_CONNECTION_STRING;
    delete process.env.AZURE_STORAGE_CONNECTION_STRING;
    try {
      assert.throws(
        () => openStore('az://container-name'),
        (e: unknown) =>
          e instanceof StorageError &&
          e.code === 'CREDENTIALS_MISSING' &&
          /AZURE_STORAGE_CONNECTION_STRING/.test(e.message),
      );
    } finally {
      if (saved !== undefined) process.env.AZURE_STORAGE_CONNECTION_STRING = saved;
    }
  });

  test('missing AWS credentials are one line naming the chain', async () => {
    const saved = { ...process.env };
    for (const k of [
      'AWS_ACCESS_KEY_ID',
      'AWS_SECRET_ACCESS_KEY',
      'AWS_SESSION_TOKEN',
      'AWS_PROFILE',
    ])
      delete process.env[k];
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    process.env.AWS_SHARED_CREDENTIALS_FILE = '/nonexistent/credentials';
    process.env.AWS_CONFIG_FILE = '/nonexistent/config';
    try {
      const store = openStore('s3://bucket-name?endpoint=http://127.0.0.1:9', {
        retry: { maxAttempts: 1 },
      });
      await assert.rejects(store.get('k'), (e: unknown) => {
        assert.ok(e instanceof StorageError, String(e));
        assert.equal(e.code, 'CREDENTIALS_MISSING');
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
      await store.close();
    } finally {
      process.env = saved;
    }
  });

  test('the cloud SDKs are not loaded until their scheme is used', async () => {
    const { execFileSync } = await import('node:child_process');
    // A resolve hook that refuses the SDKs: importing Spillway and using memory:// must not touch them,
    // and the first S3 call must (the positive control that the hook works).
    const hook = `data:text/javascript,export async function resolve(s, c, n) { if (/^@(aws-sdk|azure|google-cloud)\\//.test(s)) throw new Error('SDK loaded: ' + s); return n(s, c); }`;
    const script = `
      import { register } from 'node:module';
      register(${JSON.stringify(hook)});
      const m = await import('./src/index.ts');
      const mem = m.openStore('memory://lazy');
      await mem.put('k', new Uint8Array());
      const s3 = m.openStore('s3://bucket-name?endpoint=http://127.0.0.1:9');
      const err = await s3.get('k').then(() => 'none', (e) => String(e.message));
      const gs = m.openStore('gs://bucket-name?endpoint=http://127.0.0.1:9');
      const gsErr = await gs.get('k').then(() => 'none', (e) => String(e.message));
      console.log(JSON.stringify({ memoryOk: true, s3: err, gs: gsErr }));`;
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { encoding: 'utf8' },
    );
    const result = JSON.parse(out.trim()) as { memoryOk: boolean; s3: string; gs: string };
    assert.equal(result.memoryOk, true);
    assert.match(result.s3, /SDK loaded: @aws-sdk\/client-s3/);
    assert.match(result.gs, /SDK loaded: @google-cloud\/storage/);
  });
});

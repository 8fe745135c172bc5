import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from '../errors.ts';
import { checkCallOptions } from '../options.ts';
import { redactUrl } from '../redact.ts';
import { AzureStore, azureOptionsFromUrl } from './azure-store.ts';
import { FileStore } from './file-store.ts';
import { GcsStore, gcsOptionsFromUrl } from './gcs-store.ts';
import { LmdbStore } from './lmdb-store.ts';
import { MemoryStore } from './memory-store.ts';
import type { ObjectStore } from './object-store.ts';
import { PrefixStore } from './prefix-store.ts';
import type { RemoteStoreOptions } from './remote-store.ts';
import { S3Store, s3OptionsFromUrl } from './s3-store.ts';

/**
 * Options of {@link openStore}: the retry policy (see `RetryPolicy`), the
 * clock its backoffs use and the logger retries are reported to. They apply
 * to the stores that retry: S3, Azure, GCS and the local directory.
 */
export type OpenStoreOptions = RemoteStoreOptions;

const SCHEMES =
  'memory://<name>, file:///absolute/dir, file:./relative/dir, lmdb:///absolute/dir, lmdb:./relative/dir, s3://<bucket>[/prefix], az://<container>[/prefix] or gs://<bucket>[/prefix]';

/**
 * Opens the store a URL names:
 *
 * | URL | store |
 * | --- | --- |
 * | `memory://name[/prefix]` | in-process; the same name is the same store |
 * | `file:///abs/dir`, `file:./rel/dir` | a local directory, one file per object ({@link FileStore}) |
 * | `lmdb:///abs/dir`, `lmdb:./rel/dir` | a local directory, one LMDB file ({@link LmdbStore}) |
 * | `s3://bucket[/prefix][?endpoint=&region=&forcePathStyle=]` | S3 or an S3-compatible server |
 * | `az://container[/prefix]` | Azure Blob Storage; `AZURE_STORAGE_CONNECTION_STRING` |
 * | `gs://bucket[/prefix][?endpoint=]` | Google Cloud Storage; Application Default Credentials |
 *
 * The cloud SDKs load on the first call, and only for their scheme. Nothing is
 * contacted here: a missing bucket or missing credentials surface on the first
 * call as a {@link StorageError} whose one-line message names the problem.
 *
 * @throws {InvalidArgumentError} for a malformed URL or an unknown scheme.
 * @example
 * const store = openStore('file:./data');
 * await store.put('greeting', new TextEncoder().encode('hello'), { mode: 'create' });
 */
export function openStore(url: string, options: OpenStoreOptions = {}): ObjectStore {
  checkCallOptions('openStore', options, ['retry', 'clock', 'logger']);
  try {
    return openStoreUnchecked(url, options);
  } catch (e) {
    // decodeURIComponent and fileURLToPath throw bare URIError / TypeError on malformed input.
    if (e instanceof URIError || (e instanceof TypeError && !(e instanceof InvalidArgumentError))) {
      throw new InvalidArgumentError(
        `store URL "${redactUrl(String(url))}" is malformed: ${e instanceof URIError ? 'bad percent-encoding (a "%" must be followed by two hex digits; write "%25" for a literal "%")' : 'it does not name a usable path'}`,
        e,
      );
    }
    throw e;
  }
}

function openStoreUnchecked(url: string, options: OpenStoreOptions): ObjectStore {
  if (typeof url !== 'string' || url.length === 0) {
    throw new InvalidArgumentError(
      `expected a store URL (${SCHEMES}), got ${url === '' ? 'an empty string' : typeof url}`,
    );
  }
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'file') return new FileStore(filePath(url), options);
  if (scheme === 'lmdb') return new LmdbStore(filePath(url, 'lmdb'));
  if (scheme === undefined || !URL.canParse(url)) {
    throw new InvalidArgumentError(`expected a store URL (${SCHEMES}), got "${redactUrl(url)}"`);
  }
  const parsed = new URL(url);
  switch (scheme) {
    case 'memory': {
      if (!parsed.hostname || parsed.username || parsed.password || parsed.search || parsed.hash)
        throw new InvalidArgumentError(
          `memory URL: expected memory://<name>[/prefix] with no credentials or parameters, got "${redactUrl(url)}"`,
        );
      return withPrefix(
        new MemoryStore(parsed.hostname),
        decodeURIComponent(parsed.pathname.replace(/^\/+/, '')),
      );
    }
    case 's3': {
      const { options: s3, prefix } = s3OptionsFromUrl(parsed, options);
      return withPrefix(new S3Store(s3), prefix);
    }
    case 'az':
    case 'azure': {
      const { options: az, prefix } = azureOptionsFromUrl(parsed, options);
      return withPrefix(new AzureStore(az), prefix);
    }
    case 'gs': {
      const { options: gs, prefix } = gcsOptionsFromUrl(parsed, options);
      return withPrefix(new GcsStore(gs), prefix);
    }
    default:
      throw new InvalidArgumentError(
        `unknown store URL scheme "${scheme}:" in "${redactUrl(url)}"; expected ${SCHEMES}`,
      );
  }
}

/** Accepts a store or its URL, as every Spillway role does for its `store` option. */
export function resolveStore(store: string | ObjectStore, options?: OpenStoreOptions): ObjectStore {
  if (typeof store === 'string') return openStore(store, options);
  if (store && typeof store === 'object' && typeof store.put === 'function') return store;
  throw new InvalidArgumentError(
    `expected a store URL or an ObjectStore, got ${store === null ? 'null' : typeof store}`,
  );
}

function withPrefix(store: ObjectStore, prefix: string): ObjectStore {
  const trimmed = prefix.replace(/\/+$/, '');
  return trimmed === '' ? store : new PrefixStore(store, trimmed);
}

function filePath(url: string, scheme: 'file' | 'lmdb' = 'file'): string {
  if (url.startsWith(`${scheme}://`)) {
    let parsed: URL;
    try {
      // Parsed as the file URL it would be, so that fileURLToPath applies its rules.
      parsed = new URL(`file${url.slice(scheme.length)}`);
    } catch (e) {
      throw new InvalidArgumentError(`${scheme} URL: cannot parse "${redactUrl(url)}"`, e);
    }
    if (parsed.username || parsed.password) {
      throw new InvalidArgumentError(
        `${scheme} URL "${redactUrl(url)}": credentials in the URL are not accepted (a local folder needs none)`,
      );
    }
    if (parsed.hostname !== '' && parsed.hostname !== 'localhost') {
      throw new InvalidArgumentError(
        `${scheme} URL: expected ${scheme}:///absolute/path or ${scheme}:./relative/path, got host "${parsed.hostname}" in "${redactUrl(url)}"`,
      );
    }
    if (parsed.search || parsed.hash)
      throw new InvalidArgumentError(
        `${scheme} URL: "${redactUrl(url)}" has a query or fragment; expected a plain path`,
      );
    const path = fileURLToPath(parsed);
    if (path === '/')
      throw new InvalidArgumentError(
        `${scheme} URL: refusing to use the filesystem root as a store`,
      );
    return path;
  }
  const rest = decodeURIComponent(url.slice(scheme.length + 1));
  if (rest === '' || rest.includes('\0') || rest.includes('?') || rest.includes('#')) {
    throw new InvalidArgumentError(
      `${scheme} URL: expected ${scheme}:///absolute/path or ${scheme}:./relative/path, got "${redactUrl(url)}"`,
    );
  }
  return resolve(rest);
}

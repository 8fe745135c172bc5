import type * as GcsSdk from '@google-cloud/storage';
import { createHash } from 'node:crypto';
import { sleep, systemClock, type Clock } from '../clock.ts';
import { InvalidArgumentError, PreconditionFailedError, StorageError } from '../errors.ts';
import { redactUrl, hideEndpoint } from '../redact.ts';
import { resolveRetryPolicy } from '../retry.ts';
import { loadOptionalSdk } from './optional-sdk.ts';
import type { ByteRange, GetResult, ObjectMeta, PutMode, PutResult } from './object-store.ts';
import {
  collectStream,
  isNotSentCode,
  RemoteStore,
  type AttemptFailure,
  type ListPage,
  type RemoteStoreOptions,
} from './remote-store.ts';

type GcsModule = typeof GcsSdk;

/** Options of {@link GcsStore}. */
export interface GcsStoreOptions extends RemoteStoreOptions {
  /** Bucket name. */
  bucket: string;
  /**
   * JSON API endpoint of a GCS-compatible server (a test server or an
   * emulator), e.g. `http://127.0.0.1:4443`. The SDK sends requests to a
   * custom endpoint without credentials. Else Google's endpoint (or, as the
   * SDK decides, `STORAGE_EMULATOR_HOST`).
   */
  endpoint?: string;
  /**
   * How long writes and deletes of one object wait after GCS answered 429 to
   * one of them (GCS allows about one mutation per second of one object
   * name), in milliseconds; doubles with each further 429 on that object, up
   * to 32 s, jittered between half and all of it. @default 1000
   */
  throttleDelayMs?: number;
  /** Parallel deletes in `deleteMany`. @default 16 */
  deleteConcurrency?: number;
}

/** Defaults of {@link GcsStoreOptions}. */
const GCS_DEFAULTS = Object.freeze({ throttleDelayMs: 1000, deleteConcurrency: 16 });
const MAX_THROTTLE_DELAY_MS = 32_000;

/** A wait for the per-object rate limit that was cut short: the request was never sent. */
class ThrottleWaitAborted extends Error {
  override readonly name = 'ThrottleWaitAborted';
}

/**
 * An {@link ObjectStore} on Google Cloud Storage, through
 * `@google-cloud/storage` v7 (loaded on first use). Credentials come only
 * from the SDK's standard chain (Application Default Credentials:
 * `GOOGLE_APPLICATION_CREDENTIALS`, `gcloud auth application-default login`,
 * or the metadata server).
 *
 * A version is the object's generation. Conditional writes use
 * `ifGenerationMatch`: `0` for `create`, the generation for `ifMatch`; a 412
 * is a failed condition. Uploads are single requests (`resumable: false`)
 * that carry the bytes' CRC32C and MD5, so GCS refuses a corrupted upload
 * before it stores it (the SDK's own after-the-fact check is off: on a
 * mismatch it deletes the object unconditionally, which could delete a newer
 * generation another writer made). Full reads are checked against the
 * CRC32C GCS reports. A 429 (GCS's limit of about one write per second to
 * one object) is taken as not applied and retried by the store's policy,
 * and further writes and deletes of that object first wait
 * {@link GcsStoreOptions.throttleDelayMs}, doubling while the 429s go on.
 *
 * The SDK takes no AbortSignal: a call that is aborted or times out returns
 * at once; a download is stopped, and any other request is left to end
 * within the SDK's timeout (the policy's `attemptTimeoutMs`). A conditional
 * write whose answer was lost that way is settled by reading back, like any
 * other lost response.
 *
 * @example
 * const store = new GcsStore({ bucket: 'my-bucket' });
 * await store.put('greeting', new TextEncoder().encode('hello'), { mode: 'create' });
 */
export class GcsStore extends RemoteStore {
  readonly description: string;
  protected override readonly deleteBatchSize = 256;
  private readonly options: GcsStoreOptions;
  private readonly time: Clock;
  private readonly attemptTimeoutMs: number;
  private readonly throttleDelayMs: number;
  private readonly deleteConcurrency: number;
  private handle?: Promise<{ sdk: GcsModule; bucket: GcsSdk.Bucket }>;
  /** Objects that answered 429 to a mutation: when the next may go, and how many 429s in a row. */
  private readonly throttled = new Map<string, { until: number; strikes: number }>();

  /** @throws {InvalidArgumentError} for a bad option. */
  constructor(options: GcsStoreOptions) {
    super(options);
    if (typeof options?.bucket !== 'string' || !isBucketName(options.bucket)) {
      throw new InvalidArgumentError(
        `GcsStore: expected a bucket name of 3-63 lowercase letters, digits, dashes, underscores or dots, got ${typeof options?.bucket === 'string' ? `"${options.bucket}"` : typeof options?.bucket}`,
      );
    }
    this.options = options;
    this.description = `gs://${options.bucket}`;
    this.time = options.clock ?? systemClock;
    this.attemptTimeoutMs = resolveRetryPolicy(options.retry).attemptTimeoutMs;
    this.throttleDelayMs = integerOption('throttleDelayMs', options.throttleDelayMs, 0);
    this.deleteConcurrency = integerOption('deleteConcurrency', options.deleteConcurrency, 1);
    if (options.endpoint !== undefined && !URL.canParse(options.endpoint)) {
      throw new InvalidArgumentError(
        `${this.description}: the endpoint must be a URL such as http://127.0.0.1:4443 (its value is not shown: it may hold secrets)`,
      );
    }
  }

  private async sdk(): Promise<{ sdk: GcsModule; bucket: GcsSdk.Bucket }> {
    this.handle ??= (async () => {
      const sdk = await loadOptionalSdk(
        '@google-cloud/storage',
        'gs',
        () => import('@google-cloud/storage'),
      );
      const storage = new sdk.Storage({
        ...(this.options.endpoint !== undefined ? { apiEndpoint: this.options.endpoint } : {}),
        // Retries are ours (see RemoteStore): an SDK retry of a conditional write that landed comes back 412.
        retryOptions: { autoRetry: false, maxRetries: 0, retryableErrorFn: () => false },
        // Bounds requests the SDK cannot abort (see the class comment).
        timeout: this.attemptTimeoutMs,
      });
      return { sdk, bucket: storage.bucket(this.options.bucket) };
    })();
    return this.handle;
  }

  /** See {@link hideEndpoint}. */
  private hideEndpoint(text: string): string {
    return hideEndpoint(text, this.options.endpoint);
  }

  protected classify(error: unknown, key: string | undefined): AttemptFailure {
    if (error instanceof StorageError) return { kind: 'permanent', error };
    const e = error as {
      name?: string;
      code?: unknown;
      message?: string;
      errors?: { reason?: string }[];
      type?: string;
    };
    const status = typeof e.code === 'number' ? e.code : undefined;
    const reason = e.errors?.[0]?.reason;
    const message = errorMessage(e.message ?? String(error));
    const detail = this.hideEndpoint(
      `${reason ?? e.name ?? 'Error'}${status ? ` (HTTP ${status})` : ''}: ${message}`,
    );
    if (error instanceof ThrottleWaitAborted) return { kind: 'transient', sent: false, detail };
    if (status === 404 && /bucket does not exist/i.test(message)) {
      return {
        kind: 'permanent',
        error: new StorageError(
          `${this.description}: bucket "${this.options.bucket}" does not exist`,
          { code: 'BUCKET_NOT_FOUND', cause: error },
        ),
      };
    }
    if (/could not load the default credentials|could not refresh access token/i.test(message)) {
      return {
        kind: 'permanent',
        error: new StorageError(
          `${this.description}: no Google Cloud credentials found; set them through Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, \`gcloud auth application-default login\`, or the metadata server)`,
          { code: 'CREDENTIALS_MISSING', cause: error },
        ),
      };
    }
    if (status === 404) return { kind: 'not-found' };
    if (status === 412) return { kind: 'precondition' };
    // GCS refuses a write over its rate limit before applying it: nothing landed.
    if (status === 429) return { kind: 'transient', sent: false, detail };
    if (e.name === 'TimeoutError' || e.name === 'AbortError')
      return { kind: 'transient', sent: true, detail };
    if (isNotSentCode(e.code)) return { kind: 'transient', sent: false, detail };
    // A full read whose bytes did not match GCS's CRC32C: read again.
    if (e.code === 'CONTENT_DOWNLOAD_MISMATCH') return { kind: 'transient', sent: true, detail };
    if (status === undefined || status >= 500 || status === 408) {
      return { kind: 'transient', sent: true, detail };
    }
    if (status === 401 || status === 403) {
      return {
        kind: 'permanent',
        error: new StorageError(
          `${this.description}: access denied${key ? ` to "${key}"` : ''}: ${detail}`,
          { code: 'ACCESS_DENIED', cause: error },
        ),
      };
    }
    return {
      kind: 'permanent',
      error: new StorageError(`${this.description}: ${detail}`, { cause: error }),
    };
  }

  protected async rawGet(
    key: string,
    range: ByteRange | undefined,
    signal: AbortSignal,
  ): Promise<GetResult> {
    const { bucket } = await this.sdk();
    signal.throwIfAborted();
    const ranged = range !== undefined && (range.offset > 0 || range.length !== undefined);
    const stream = bucket.file(key).createReadStream(
      ranged
        ? {
            start: range.offset,
            ...(range.length !== undefined ? { end: range.offset + range.length - 1 } : {}),
          }
        : { validation: 'crc32c' },
    );
    let headers: Record<string, string | undefined> = {};
    stream.on('response', (res: { headers?: Record<string, string> }) => {
      headers = res.headers ?? {};
    });
    const onAbort = () => stream.destroy(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    let body: Uint8Array;
    try {
      body = await collectStream(stream);
    } catch (error) {
      // A range that starts past the end; the contract returns no bytes.
      if (ranged && (error as { code?: unknown }).code === 416) {
        const meta = await this.rawHead(key, signal);
        return {
          body: new Uint8Array(),
          version: meta.version,
          size: meta.size,
          lastModified: meta.lastModified,
        };
      }
      throw error;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    const version = headers['x-goog-generation'];
    if (!version) {
      throw new StorageError(
        `${this.description}: get "${key}": the response carries no x-goog-generation header, so the object's version is unknown`,
        { retriable: false },
      );
    }
    const total = headers['content-range']
      ? /\/(\d+)$/.exec(headers['content-range'])?.[1]
      : undefined;
    const stored = headers['x-goog-stored-content-length'];
    const modified = headers['last-modified'] ? new Date(headers['last-modified']) : undefined;
    return {
      body,
      version,
      size:
        total !== undefined
          ? Number(total)
          : stored !== undefined
            ? Number(stored)
            : body.byteLength,
      lastModified: modified && !Number.isNaN(modified.getTime()) ? modified : new Date(0),
    };
  }

  protected async rawHead(key: string, signal: AbortSignal): Promise<ObjectMeta> {
    const { bucket } = await this.sdk();
    signal.throwIfAborted();
    const [meta] = await abortable(signal, bucket.file(key).getMetadata());
    return this.metaOf(key, meta);
  }

  protected async rawPut(
    key: string,
    body: Uint8Array,
    mode: PutMode,
    signal: AbortSignal,
  ): Promise<PutResult> {
    const { sdk, bucket } = await this.sdk();
    let ifGenerationMatch: string | undefined;
    if (mode === 'create') ifGenerationMatch = '0';
    else if (typeof mode === 'object') {
      if (!/^[1-9]\d*$/.test(mode.ifMatch)) {
        throw new PreconditionFailedError(
          key,
          `${this.description}: put "${key}" if version ${JSON.stringify(mode.ifMatch)}: that is not a GCS generation, so it is not the object's current version`,
        );
      }
      ifGenerationMatch = mode.ifMatch;
    }
    const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    const crc32c = new sdk.CRC32C();
    crc32c.update(bytes);
    const file = bucket.file(key);
    await this.mutate(key, signal, () =>
      file.save(bytes, {
        resumable: false,
        // GCS checks the hashes sent in the metadata before it stores anything (see the class comment).
        validation: false,
        metadata: {
          crc32c: crc32c.toString(),
          md5Hash: createHash('md5').update(bytes).digest('base64'),
        },
        contentType: 'application/octet-stream',
        timeout: this.attemptTimeoutMs,
        ...(ifGenerationMatch !== undefined ? { preconditionOpts: { ifGenerationMatch } } : {}),
      }),
    );
    return { version: this.metaOf(key, file.metadata).version };
  }

  protected async rawListPage(
    prefix: string,
    next: string | undefined,
    signal: AbortSignal,
  ): Promise<ListPage> {
    const { bucket } = await this.sdk();
    signal.throwIfAborted();
    const [, , response] = await abortable(
      signal,
      bucket.getFiles({
        autoPaginate: false,
        maxResults: 1000,
        ...(prefix !== '' ? { prefix } : {}),
        ...(next !== undefined ? { pageToken: next } : {}),
      }),
    );
    const page = (response ?? {}) as { items?: GcsSdk.FileMetadata[]; nextPageToken?: string };
    const items = (page.items ?? []).map((m) => this.metaOf(m.name ?? '', m));
    return page.nextPageToken ? { items, next: page.nextPageToken } : { items };
  }

  protected async rawDelete(key: string, signal: AbortSignal): Promise<void> {
    const { bucket } = await this.sdk();
    await this.mutate(key, signal, () => bucket.file(key).delete({ ignoreNotFound: true }));
  }

  protected async rawDeleteMany(keys: string[], signal: AbortSignal): Promise<void> {
    let index = 0;
    const worker = async () => {
      while (index < keys.length) await this.rawDelete(keys[index++] as string, signal);
    };
    await Promise.all(
      Array.from({ length: Math.min(this.deleteConcurrency, keys.length) }, worker),
    );
  }

  protected async dispose(): Promise<void> {
    // The SDK holds no resources that need releasing; forget the per-object waits.
    this.throttled.clear();
  }

  private metaOf(key: string, meta: GcsSdk.FileMetadata | undefined): ObjectMeta {
    const generation = meta?.generation;
    if (generation === undefined || generation === null || String(generation) === '') {
      throw new StorageError(
        `${this.description}: "${key}": the object resource carries no generation, so its version is unknown`,
      );
    }
    const updated = meta?.updated ? new Date(meta.updated) : undefined;
    return {
      key,
      size: Number(meta?.size ?? 0),
      version: String(generation),
      lastModified: updated && !Number.isNaN(updated.getTime()) ? updated : new Date(0),
    };
  }

  /**
   * Runs one write or delete of `key` under GCS's per-object mutation limit:
   * waits out an earlier 429 on that object first, and starts or lengthens
   * the wait when this one gets a 429.
   */
  private async mutate<T>(key: string, signal: AbortSignal, send: () => Promise<T>): Promise<T> {
    await this.waitOutThrottle(key, signal);
    signal.throwIfAborted();
    let result: T;
    try {
      result = await abortable(signal, send());
    } catch (error) {
      if ((error as { code?: unknown }).code === 429) this.throttle(key);
      throw error;
    }
    this.throttled.delete(key);
    return result;
  }

  /** Waits until a mutation of `key` may go again after a 429; an abort here means nothing was sent. */
  private async waitOutThrottle(key: string, signal: AbortSignal): Promise<void> {
    const t = this.throttled.get(key);
    const wait = t ? t.until - this.time.now() : 0;
    if (wait <= 0) return;
    try {
      await sleep(wait, { signal, clock: this.time });
    } catch (error) {
      throw new ThrottleWaitAborted(
        `waited for GCS's per-object write limit and was stopped before sending`,
        { cause: error },
      );
    }
  }

  private throttle(key: string): void {
    const now = this.time.now();
    if (this.throttled.size >= 1024) {
      for (const [k, t] of this.throttled) if (t.until <= now) this.throttled.delete(k);
    }
    const t = this.throttled.get(key) ?? { until: 0, strikes: 0 };
    t.strikes++;
    const ceiling = Math.min(
      MAX_THROTTLE_DELAY_MS,
      this.throttleDelayMs * 2 ** Math.min(t.strikes - 1, 15),
    );
    // Jittered in [ceiling/2, ceiling]: racing writers of one object spread out.
    t.until = now + ceiling / 2 + (Math.random() * ceiling) / 2;
    this.throttled.set(key, t);
  }
}

/** Parses the parts of a `gs://bucket/prefix?endpoint=` URL that belong to the adapter. */
export function gcsOptionsFromUrl(
  url: URL,
  base: RemoteStoreOptions,
): { options: GcsStoreOptions; prefix: string } {
  if (url.username || url.password) {
    throw new InvalidArgumentError(
      `gs://…: credentials in the URL are not accepted; use Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, or the metadata server)`,
    );
  }
  const bucket = decodeURIComponent(url.hostname);
  if (!isBucketName(bucket)) {
    throw new InvalidArgumentError(
      `gs URL: expected gs://<bucket>[/prefix] with a bucket of 3-63 lowercase letters, digits, dashes, underscores or dots, got "${url.hostname}"`,
    );
  }
  if (url.hash) throw new InvalidArgumentError(`gs://${bucket}: a URL fragment is not accepted`);
  const q = url.searchParams;
  for (const name of q.keys()) {
    if (name !== 'endpoint') {
      throw new InvalidArgumentError(
        `gs://${bucket}: unknown URL parameter "${name}"; expected endpoint`,
      );
    }
  }
  const endpoint = q.get('endpoint') ?? undefined;
  if (endpoint !== undefined && !URL.canParse(endpoint)) {
    throw new InvalidArgumentError(
      `gs://${bucket}: the endpoint parameter must be a URL such as http://127.0.0.1:4443 (its value is not shown: URL parameters may hold secrets)`,
    );
  }
  if (endpoint !== undefined) {
    const e = new URL(endpoint);
    if (e.username || e.password) {
      throw new InvalidArgumentError(
        `gs://${bucket}: the endpoint "${redactUrl(endpoint)}" carries credentials; they are not accepted in URLs: use Application Default Credentials`,
      );
    }
  }
  return {
    options: { ...base, bucket, ...(endpoint !== undefined ? { endpoint } : {}) },
    prefix: decodeURIComponent(url.pathname.replace(/^\/+/, '')),
  };
}

/** GCS bucket naming: 3-63 characters (222 with dots, 63 per dot-separated part). */
function isBucketName(name: string): boolean {
  return (
    /^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/.test(name) &&
    name.split('.').every((part) => part.length > 0 && part.length <= 63) &&
    (name.includes('.') || name.length <= 63)
  );
}

function integerOption(name: keyof typeof GCS_DEFAULTS, value: unknown, min: number): number {
  if (value === undefined) return GCS_DEFAULTS[name];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidArgumentError(
      `GcsStore: ${name} must be an integer >= ${min}, got ${typeof value === 'number' ? value : typeof value}`,
    );
  }
  return value;
}

/** Settles with `run`, or rejects with the signal's reason as soon as it aborts. */
function abortable<T>(signal: AbortSignal, run: Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    run.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

/** The first line of an SDK message; a media download's carries the JSON error body. */
function errorMessage(text: string): string {
  if (text.startsWith('{')) {
    try {
      const body = JSON.parse(text) as { error?: { message?: unknown } };
      if (typeof body.error?.message === 'string') return body.error.message;
    } catch {
      // Not JSON after all: keep the text.
    }
  }
  return text.split('\n')[0] ?? '';
}

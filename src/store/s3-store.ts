import type * as S3Sdk from '@aws-sdk/client-s3';
import { InvalidArgumentError, StorageError } from '../errors.ts';
import { redactUrl, hideEndpoint } from '../redact.ts';
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

type S3Module = typeof S3Sdk;

/** Options of {@link S3Store}. URL query parameters take precedence over the environment. */
export interface S3StoreOptions extends RemoteStoreOptions {
  /** Bucket name. */
  bucket: string;
  /** Endpoint URL for S3-compatible servers; else `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, or AWS. */
  endpoint?: string;
  /** Region; else `AWS_REGION`, `AWS_DEFAULT_REGION`, or `us-east-1`. */
  region?: string;
  /** Path-style addressing (`endpoint/bucket/key`). @default true when an endpoint is set, else false */
  forcePathStyle?: boolean;
}

/**
 * An {@link ObjectStore} on Amazon S3 or an S3-compatible server, through
 * `@aws-sdk/client-s3` (loaded on first use). Credentials come only from the
 * SDK's standard chain.
 *
 * Conditional writes: `create` sends `If-None-Match: *`; `ifMatch` sends
 * `If-Match` with the ETag unquoted (Ceph RGW refuses the quoted form with
 * 412) and, if a server refuses that while the ETag still matches, switches to
 * the quoted form AWS documents.
 */
export class S3Store extends RemoteStore {
  readonly description: string;
  private readonly options: S3StoreOptions;
  private client?: Promise<{ sdk: S3Module; client: S3Sdk.S3Client }>;
  /** Whether this server wants `If-Match` quoted; learned on the first refusal. */
  private quoteIfMatch = false;
  /** Set once an ifMatch write succeeded: from then on a 412 is a real conflict, no HEAD needed. */
  private quotingKnown = false;

  constructor(options: S3StoreOptions) {
    super(options);
    this.options = options;
    this.description = `s3://${options.bucket}`;
  }

  private async sdk(): Promise<{ sdk: S3Module; client: S3Sdk.S3Client }> {
    this.client ??= (async () => {
      const sdk = await loadOptionalSdk(
        '@aws-sdk/client-s3',
        's3',
        () => import('@aws-sdk/client-s3'),
      );
      const env = process.env;
      const endpoint = this.options.endpoint ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
      const client = new sdk.S3Client({
        region: this.options.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
        ...(endpoint ? { endpoint } : {}),
        forcePathStyle: this.options.forcePathStyle ?? endpoint !== undefined,
        // Retries are ours: an SDK retry of a conditional write that succeeded comes back as 412.
        maxAttempts: 1,
        // S3-compatible servers (Ceph RGW 16) refuse streamed bodies and unknown checksum headers.
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
      return { sdk, client };
    })();
    return this.client;
  }

  /** See {@link hideEndpoint}. */
  private hideEndpoint(text: string): string {
    return hideEndpoint(text, this.options.endpoint);
  }

  protected classify(error: unknown, key: string | undefined): AttemptFailure {
    if (error instanceof StorageError) return { kind: 'permanent', error };
    const e = error as {
      name?: string;
      code?: string;
      message?: string;
      $metadata?: { httpStatusCode?: number };
      $fault?: string;
      $retryable?: unknown;
    };
    const status = e.$metadata?.httpStatusCode;
    const name = e.name ?? '';
    const detail = this.hideEndpoint(
      `${name}${status ? ` (HTTP ${status})` : ''}: ${e.message ?? String(error)}`,
    );
    if (name === 'NoSuchBucket') {
      return {
        kind: 'permanent',
        error: new StorageError(
          `${this.description}: bucket "${this.options.bucket}" does not exist`,
          {
            code: 'BUCKET_NOT_FOUND',
            cause: error,
          },
        ),
      };
    }
    if (name === 'CredentialsProviderError' || /credential/i.test(name)) {
      return {
        kind: 'permanent',
        error: new StorageError(
          `${this.description}: no AWS credentials found; set them through the standard chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role)`,
          { code: 'CREDENTIALS_MISSING', cause: error },
        ),
      };
    }
    if (status === 404 || name === 'NoSuchKey' || name === 'NotFound') return { kind: 'not-found' };
    if (status === 412 || name === 'PreconditionFailed') return { kind: 'precondition' };
    if (name === 'TimeoutError' || name === 'AbortError')
      return { kind: 'transient', sent: true, detail };
    if (isNotSentCode(e.code)) return { kind: 'transient', sent: false, detail };
    // 409 ConditionalRequestConflict: a concurrent conditional write was in flight; not applied.
    if (status === 409 && name === 'ConditionalRequestConflict')
      return { kind: 'transient', sent: true, detail };
    if (status === undefined || status >= 500 || status === 429 || status === 408 || e.$retryable) {
      return { kind: 'transient', sent: true, detail };
    }
    if (status === 403 || status === 401) {
      return {
        kind: 'permanent',
        error: new StorageError(
          `${this.description}: access denied${key ? ` to "${key}"` : ''}: ${detail}`,
          {
            code: 'ACCESS_DENIED',
            cause: error,
          },
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
    const { sdk, client } = await this.sdk();
    const out = await client.send(
      new sdk.GetObjectCommand({
        Bucket: this.options.bucket,
        Key: key,
        Range: rangeHeader(range),
      }),
      { abortSignal: signal },
    );
    const body = out.Body
      ? await collectStream(out.Body as AsyncIterable<Uint8Array>)
      : new Uint8Array();
    return {
      body,
      version: unquote(out.ETag),
      size: totalSize(out.ContentRange) ?? out.ContentLength ?? body.byteLength,
      lastModified: out.LastModified ?? new Date(0),
    };
  }

  protected async rawHead(key: string, signal: AbortSignal): Promise<ObjectMeta> {
    const { sdk, client } = await this.sdk();
    const out = await client.send(
      new sdk.HeadObjectCommand({ Bucket: this.options.bucket, Key: key }),
      {
        abortSignal: signal,
      },
    );
    return {
      key,
      size: out.ContentLength ?? 0,
      version: unquote(out.ETag),
      lastModified: out.LastModified ?? new Date(0),
    };
  }

  protected async rawPut(
    key: string,
    body: Uint8Array,
    mode: PutMode,
    signal: AbortSignal,
  ): Promise<PutResult> {
    const { sdk, client } = await this.sdk();
    const send = async (ifMatch?: string) => {
      const out = await client.send(
        new sdk.PutObjectCommand({
          Bucket: this.options.bucket,
          Key: key,
          Body: body,
          ContentLength: body.byteLength,
          ...(mode === 'create' ? { IfNoneMatch: '*' } : {}),
          ...(ifMatch !== undefined ? { IfMatch: ifMatch } : {}),
        }),
        { abortSignal: signal },
      );
      return { version: unquote(out.ETag) };
    };
    if (typeof mode !== 'object') return send();
    const etag = unquote(mode.ifMatch);
    try {
      const result = await send(this.quoteIfMatch ? `"${etag}"` : etag);
      this.quotingKnown = true;
      return result;
    } catch (error) {
      if (this.quotingKnown || this.classify(error, key).kind !== 'precondition') throw error;
      // Refused: a real conflict, or a server that wants the other quoting. Ask.
      const current = await this.rawHead(key, signal).catch(() => undefined);
      if (current === undefined || current.version !== etag) throw error;
      this.quoteIfMatch = !this.quoteIfMatch;
      const result = await send(this.quoteIfMatch ? `"${etag}"` : etag);
      this.quotingKnown = true;
      return result;
    }
  }

  protected async rawListPage(
    prefix: string,
    next: string | undefined,
    signal: AbortSignal,
  ): Promise<ListPage> {
    const { sdk, client } = await this.sdk();
    const out = await client.send(
      new sdk.ListObjectsV2Command({
        Bucket: this.options.bucket,
        Prefix: prefix,
        ContinuationToken: next,
      }),
      { abortSignal: signal },
    );
    const items = (out.Contents ?? []).map((o) => ({
      key: o.Key ?? '',
      size: o.Size ?? 0,
      version: unquote(o.ETag),
      lastModified: o.LastModified ?? new Date(0),
    }));
    return out.IsTruncated && out.NextContinuationToken
      ? { items, next: out.NextContinuationToken }
      : { items };
  }

  protected async rawDelete(key: string, signal: AbortSignal): Promise<void> {
    const { sdk, client } = await this.sdk();
    await client.send(new sdk.DeleteObjectCommand({ Bucket: this.options.bucket, Key: key }), {
      abortSignal: signal,
    });
  }

  protected async rawDeleteMany(keys: string[], signal: AbortSignal): Promise<void> {
    const { sdk, client } = await this.sdk();
    const out = await client.send(
      new sdk.DeleteObjectsCommand({
        Bucket: this.options.bucket,
        Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true },
      }),
      { abortSignal: signal },
    );
    const failed = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
    if (failed.length > 0) {
      const first = failed[0];
      throw Object.assign(
        new Error(
          `${failed.length} of ${keys.length} deletes failed; first: ${first?.Key}: ${first?.Code} ${first?.Message}`,
        ),
        {
          $metadata: { httpStatusCode: 500 },
        },
      );
    }
  }

  protected override sameVersion(a: string, b: string): boolean {
    return unquote(a) === unquote(b);
  }

  protected async dispose(): Promise<void> {
    if (this.client) (await this.client.catch(() => undefined))?.client.destroy();
  }
}

/** Parses the parts of an `s3://bucket/prefix?query` URL that belong to the adapter. */
export function s3OptionsFromUrl(
  url: URL,
  base: RemoteStoreOptions,
): { options: S3StoreOptions; prefix: string } {
  if (url.username || url.password) {
    throw new InvalidArgumentError(
      `${url.protocol}//…: credentials in the URL are not accepted; use the standard AWS chain (environment, profile, instance role)`,
    );
  }
  const bucket = decodeURIComponent(url.hostname);
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new InvalidArgumentError(
      `s3 URL: expected s3://<bucket>[/prefix] with a bucket of 3-63 lowercase letters, digits, dots or dashes, got "${url.hostname}"`,
    );
  }
  const q = url.searchParams;
  const known = new Set(['endpoint', 'region', 'forcePathStyle', 'pathStyle']);
  for (const name of q.keys()) {
    if (!known.has(name)) {
      throw new InvalidArgumentError(
        `s3://${bucket}: unknown URL parameter "${name}"; expected endpoint, region or forcePathStyle`,
      );
    }
  }
  const pathStyle =
    q.get('forcePathStyle') ?? q.get('pathStyle') ?? process.env.AWS_S3_FORCE_PATH_STYLE;
  if (
    pathStyle !== undefined &&
    pathStyle !== null &&
    !['true', 'false', '1', '0'].includes(pathStyle)
  ) {
    throw new InvalidArgumentError(
      `s3://${bucket}: forcePathStyle must be true or false (its value is not shown: URL parameters may hold secrets)`,
    );
  }
  const endpoint = q.get('endpoint') ?? undefined;
  if (endpoint !== undefined && !URL.canParse(endpoint)) {
    throw new InvalidArgumentError(
      `s3://${bucket}: the endpoint parameter must be a URL such as http://127.0.0.1:7480 (its value is not shown: URL parameters may hold secrets)`,
    );
  }
  if (endpoint !== undefined) {
    const e = new URL(endpoint);
    if (e.username || e.password) {
      throw new InvalidArgumentError(
        `s3://${bucket}: the endpoint "${redactUrl(endpoint)}" carries credentials; they are not accepted in URLs: use the standard AWS chain (environment, profile, instance role)`,
      );
    }
  }
  return {
    options: {
      ...base,
      bucket,
      ...(endpoint !== undefined ? { endpoint } : {}),
      ...(q.get('region') ? { region: q.get('region') as string } : {}),
      ...(pathStyle !== undefined && pathStyle !== null
        ? { forcePathStyle: pathStyle === 'true' || pathStyle === '1' }
        : {}),
    },
    prefix: decodeURIComponent(url.pathname.replace(/^\/+/, '')),
  };
}

function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

function rangeHeader(range: ByteRange | undefined): string | undefined {
  if (!range) return undefined;
  const end = range.length === undefined ? '' : String(range.offset + range.length - 1);
  return `bytes=${range.offset}-${end}`;
}

function totalSize(contentRange: string | undefined): number | undefined {
  const m = contentRange ? /\/(\d+)$/.exec(contentRange) : null;
  return m ? Number(m[1]) : undefined;
}

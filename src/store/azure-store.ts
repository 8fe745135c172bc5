import { loadOptionalSdk } from './optional-sdk.ts';
import type { ContainerClient } from '@azure/storage-blob';
import { InvalidArgumentError, StorageError } from '../errors.ts';
import type { ByteRange, GetResult, ObjectMeta, PutMode, PutResult } from './object-store.ts';
import {
  collectStream,
  isNotSentCode,
  RemoteStore,
  type AttemptFailure,
  type ListPage,
  type RemoteStoreOptions,
} from './remote-store.ts';

/** Options of {@link AzureStore}. */
export interface AzureStoreOptions extends RemoteStoreOptions {
  /** Container name. */
  container: string;
  /** Connection string; else `AZURE_STORAGE_CONNECTION_STRING`. Never logged. */
  connectionString?: string;
  /** Parallel deletes in `deleteMany`. @default 16 */
  deleteConcurrency?: number;
}

/**
 * An {@link ObjectStore} on Azure Blob Storage (or Azurite), through
 * `@azure/storage-blob` (loaded on first use). `create` sends
 * `If-None-Match: *` (a conflict is HTTP 409), `ifMatch` sends `If-Match`
 * (a conflict is HTTP 412).
 */
export class AzureStore extends RemoteStore {
  readonly description: string;
  private readonly options: AzureStoreOptions;
  private readonly connectionString: string;
  private container?: Promise<ContainerClient>;
  protected override readonly deleteBatchSize = 256;

  constructor(options: AzureStoreOptions) {
    super(options);
    this.options = options;
    this.description = `az://${options.container}`;
    const connectionString =
      options.connectionString ?? process.env.AZURE_STORAGE_CONNECTION_STRING;
    if (!connectionString) {
      throw new StorageError(
        `${this.description}: no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING to the storage account's connection string`,
        { code: 'CREDENTIALS_MISSING' },
      );
    }
    this.connectionString = connectionString;
  }

  private async client(): Promise<ContainerClient> {
    this.container ??= (async () => {
      const { BlobServiceClient } = await loadOptionalSdk(
        '@azure/storage-blob',
        'az',
        () => import('@azure/storage-blob'),
      );
      let service;
      try {
        // Retries are ours (see RemoteStore); the SDK's would hide the outcome of conditional writes.
        service = BlobServiceClient.fromConnectionString(this.connectionString, {
          retryOptions: { maxTries: 1 },
        });
      } catch (error) {
        throw new StorageError(
          `${this.description}: AZURE_STORAGE_CONNECTION_STRING is not a valid connection string`,
          {
            code: 'CREDENTIALS_INVALID',
            cause: error,
          },
        );
      }
      return service.getContainerClient(this.options.container);
    })();
    return this.container;
  }

  protected classify(error: unknown, key: string | undefined): AttemptFailure {
    if (error instanceof StorageError) return { kind: 'permanent', error };
    const e = error as {
      name?: string;
      code?: string;
      statusCode?: number;
      message?: string;
      details?: { errorCode?: string };
    };
    const status = e.statusCode;
    const code = e.details?.errorCode ?? e.code ?? '';
    const detail = `${code || e.name || 'Error'}${status ? ` (HTTP ${status})` : ''}: ${(e.message ?? String(error)).split('\n')[0]}`;
    if (code === 'ContainerNotFound') {
      return {
        kind: 'permanent',
        error: new StorageError(
          `${this.description}: container "${this.options.container}" does not exist`,
          {
            code: 'CONTAINER_NOT_FOUND',
            cause: error,
          },
        ),
      };
    }
    if (status === 404) return { kind: 'not-found' };
    if (status === 412 || code === 'BlobAlreadyExists' || code === 'ConditionNotMet')
      return { kind: 'precondition' };
    if (e.name === 'TimeoutError' || e.name === 'AbortError')
      return { kind: 'transient', sent: true, detail };
    if (isNotSentCode(e.code)) return { kind: 'transient', sent: false, detail };
    if (status === undefined || status >= 500 || status === 429 || status === 408) {
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
    const blob = (await this.client()).getBlobClient(key);
    const out = await blob.download(range?.offset ?? 0, range?.length, { abortSignal: signal });
    const body = out.readableStreamBody
      ? await collectStream(out.readableStreamBody as AsyncIterable<Uint8Array>)
      : new Uint8Array();
    const total = out.contentRange ? /\/(\d+)$/.exec(out.contentRange)?.[1] : undefined;
    return {
      body,
      version: out.etag ?? '',
      size: total !== undefined ? Number(total) : (out.contentLength ?? body.byteLength),
      lastModified: out.lastModified ?? new Date(0),
    };
  }

  protected async rawHead(key: string, signal: AbortSignal): Promise<ObjectMeta> {
    const out = await (
      await this.client()
    )
      .getBlobClient(key)
      .getProperties({ abortSignal: signal });
    return {
      key,
      size: out.contentLength ?? 0,
      version: out.etag ?? '',
      lastModified: out.lastModified ?? new Date(0),
    };
  }

  protected async rawPut(
    key: string,
    body: Uint8Array,
    mode: PutMode,
    signal: AbortSignal,
  ): Promise<PutResult> {
    const blob = (await this.client()).getBlockBlobClient(key);
    const conditions =
      mode === 'create'
        ? { ifNoneMatch: '*' }
        : typeof mode === 'object'
          ? { ifMatch: mode.ifMatch }
          : undefined;
    const out = await blob.upload(body, body.byteLength, { conditions, abortSignal: signal });
    return { version: out.etag ?? '' };
  }

  protected async rawListPage(
    prefix: string,
    next: string | undefined,
    signal: AbortSignal,
  ): Promise<ListPage> {
    const pages = (await this.client())
      .listBlobsFlat({ prefix, abortSignal: signal })
      .byPage({ maxPageSize: 1000, ...(next !== undefined ? { continuationToken: next } : {}) });
    const page = await pages.next();
    if (page.done) return { items: [] };
    const items = page.value.segment.blobItems.map((b) => ({
      key: b.name,
      size: b.properties.contentLength ?? 0,
      version: b.properties.etag ?? '',
      lastModified: b.properties.lastModified,
    }));
    return page.value.continuationToken ? { items, next: page.value.continuationToken } : { items };
  }

  protected async rawDelete(key: string, signal: AbortSignal): Promise<void> {
    await (await this.client()).getBlobClient(key).deleteIfExists({ abortSignal: signal });
  }

  protected async rawDeleteMany(keys: string[], signal: AbortSignal): Promise<void> {
    const container = await this.client();
    let index = 0;
    const worker = async () => {
      while (index < keys.length) {
        const key = keys[index++] as string;
        await container.getBlobClient(key).deleteIfExists({ abortSignal: signal });
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(this.options.deleteConcurrency ?? 16, keys.length) }, worker),
    );
  }

  protected override sameVersion(a: string, b: string): boolean {
    return a.replace(/"/g, '') === b.replace(/"/g, '');
  }

  protected async dispose(): Promise<void> {
    // The Azure SDK holds no resources that need releasing.
  }
}

/** Parses an `az://container/prefix` URL. */
export function azureOptionsFromUrl(
  url: URL,
  base: RemoteStoreOptions,
): { options: AzureStoreOptions; prefix: string } {
  if (url.username || url.password || url.search) {
    throw new InvalidArgumentError(
      `az URL: expected az://<container>[/prefix] with no credentials or parameters (the connection string comes from AZURE_STORAGE_CONNECTION_STRING)`,
    );
  }
  const container = decodeURIComponent(url.hostname);
  if (!/^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/.test(container)) {
    throw new InvalidArgumentError(
      `az URL: expected a container name of 3-63 lowercase letters, digits and single dashes, got "${url.hostname}"`,
    );
  }
  return {
    options: { ...base, container },
    prefix: decodeURIComponent(url.pathname.replace(/^\/+/, '')),
  };
}

/**
 * Store requests counted by operation kind, into the library's metrics: the
 * figures a bill is made of (`spillway_store_requests_total{op="put"}`).
 */
import { noopMetrics, type MetricLabels, type Metrics } from '../metrics.ts';
import { checkCallOptions } from '../options.ts';
import type {
  GetOptions,
  GetResult,
  ObjectMeta,
  ObjectStore,
  PutOptions,
  PutResult,
  StoreCallOptions,
  StoreHints,
} from './object-store.ts';
import { KEYS_PER_REQUEST } from './rate-limited-store.ts';

/** The operation kinds counted, as the `op` label of `store.requests`. */
export type StoreRequestKind = 'get' | 'head' | 'put' | 'list' | 'delete';

/** Every {@link StoreRequestKind}. */
export const STORE_REQUEST_KINDS: readonly StoreRequestKind[] = Object.freeze([
  'put',
  'get',
  'head',
  'list',
  'delete',
]);

/** Options of {@link CountingStore}. */
export interface CountingStoreOptions {
  /** Where the counts go. @default no metrics */
  metrics?: Metrics;
  /** Labels added to every count (e.g. `{ queue }`). @default none */
  labels?: MetricLabels;
}

/**
 * Counts every request made through it as `store.requests` with the label
 * `op` (`put`, `get`, `head`, `list`, `delete`), and the bytes of every
 * read as `store.bytes_read`. A request is one call, except a listing (one
 * for its first page, then one per {@link KEYS_PER_REQUEST} objects) and
 * `deleteMany` (one per {@link KEYS_PER_REQUEST} keys), as S3 bills them.
 * A call is counted when it is made, whatever its outcome (a failed
 * request is billed too); the store's own retries below are not seen.
 *
 * @example
 * const metrics = new PrometheusMetrics();
 * const store = new CountingStore(openStore('s3://bucket/q'), { metrics });
 */
export class CountingStore implements ObjectStore {
  readonly description: string;

  /** The inner store's hints. */
  get hints(): StoreHints | undefined {
    return this.inner.hints;
  }
  private readonly metrics: Metrics;
  private readonly labels: Readonly<Record<StoreRequestKind, MetricLabels>>;
  private readonly extra: MetricLabels;

  constructor(
    readonly inner: ObjectStore,
    options: CountingStoreOptions = {},
  ) {
    checkCallOptions('CountingStore', options, ['metrics', 'labels']);
    this.description = inner.description;
    this.metrics = options.metrics ?? noopMetrics;
    this.extra = { ...(options.labels ?? {}) };
    const of = (op: StoreRequestKind): MetricLabels => ({ ...this.extra, op });
    this.labels = {
      get: of('get'),
      head: of('head'),
      put: of('put'),
      list: of('list'),
      delete: of('delete'),
    };
  }

  async get(key: string, options?: GetOptions): Promise<GetResult> {
    this.count('get');
    const result = await this.inner.get(key, options);
    this.metrics.increment('store.bytes_read', result.body.byteLength, this.extra);
    return result;
  }

  head(key: string, options?: StoreCallOptions): Promise<ObjectMeta> {
    this.count('head');
    return this.inner.head(key, options);
  }

  put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult> {
    this.count('put');
    return this.inner.put(key, body, options);
  }

  async *list(prefix: string, options?: StoreCallOptions): AsyncIterable<ObjectMeta> {
    this.count('list');
    let n = 0;
    for await (const meta of this.inner.list(prefix, options)) {
      if (n > 0 && n % KEYS_PER_REQUEST === 0) this.count('list');
      n++;
      yield meta;
    }
  }

  delete(key: string, options?: StoreCallOptions): Promise<void> {
    this.count('delete');
    return this.inner.delete(key, options);
  }

  deleteMany(keys: readonly string[], options?: StoreCallOptions): Promise<void> {
    // An empty call sends nothing.
    const requests = Math.ceil(keys.length / KEYS_PER_REQUEST);
    if (requests > 0) this.count('delete', requests);
    return this.inner.deleteMany(keys, options);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private count(op: StoreRequestKind, n = 1): void {
    this.metrics.increment('store.requests', n, this.labels[op]);
  }
}

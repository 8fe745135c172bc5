import { InvalidArgumentError } from '../errors.ts';
import { validateKey } from './keys.ts';
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

/**
 * Presents the keys of `inner` under `prefix` as a store of their own: `get("a")`
 * reads `prefix/a`, and `list` strips the prefix from what it yields. Closing it
 * closes `inner`.
 */
export class PrefixStore implements ObjectStore {
  readonly description: string;

  /** The inner store's hints. */
  get hints(): StoreHints | undefined {
    return this.inner.hints;
  }
  private readonly prefix: string;

  /** @param prefix a folder-like prefix; a trailing "/" is added if missing */
  constructor(
    private readonly inner: ObjectStore,
    prefix: string,
  ) {
    if (prefix === '' || prefix.startsWith('/') || prefix.includes('\0')) {
      throw new InvalidArgumentError(
        `prefix must be a non-empty relative path without NUL, got ${JSON.stringify(prefix)}`,
      );
    }
    this.prefix = prefix.endsWith('/') ? prefix : `${prefix}/`;
    this.description = `${inner.description}/${this.prefix.slice(0, -1)}`;
  }

  async get(key: string, options?: GetOptions): Promise<GetResult> {
    return this.inner.get(this.full(key), options);
  }

  async head(key: string, options?: StoreCallOptions): Promise<ObjectMeta> {
    return { ...(await this.inner.head(this.full(key), options)), key };
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult> {
    return this.inner.put(this.full(key), body, options);
  }

  async *list(prefix: string, options?: StoreCallOptions): AsyncIterable<ObjectMeta> {
    for await (const meta of this.inner.list(this.prefix + prefix, options)) {
      yield { ...meta, key: meta.key.slice(this.prefix.length) };
    }
  }

  async delete(key: string, options?: StoreCallOptions): Promise<void> {
    return this.inner.delete(this.full(key), options);
  }

  async deleteMany(keys: readonly string[], options?: StoreCallOptions): Promise<void> {
    return this.inner.deleteMany(
      keys.map((k) => this.full(k)),
      options,
    );
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private full(key: string): string {
    validateKey(key, this.description);
    return this.prefix + key;
  }
}

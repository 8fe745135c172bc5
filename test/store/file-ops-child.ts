// A child process of the file store tests: runs store calls (often as an
// unprivileged user, so that folder permissions apply) and prints one JSON
// result per call, so the parent can assert on the errors' classes and codes.
import { FileStore, SpillwayError } from '../../src/index.ts';

/** One call for the child to make. */
export interface ChildOp {
  op: 'get' | 'head' | 'list' | 'put' | 'delete';
  /** The key, or the prefix for `list`. */
  key: string;
}

/** What one call did: its value on success, the error's shape on failure. */
export type ChildResult =
  | { op: string; key: string; ok: true; value: string | string[] | number }
  | {
      op: string;
      key: string;
      ok: false;
      name: string;
      code: string | undefined;
      spillway: boolean;
      message: string;
    };

async function run(store: FileStore, { op, key }: ChildOp): Promise<string | string[] | number> {
  switch (op) {
    case 'get':
      return new TextDecoder().decode((await store.get(key)).body);
    case 'head':
      return (await store.head(key)).size;
    case 'list': {
      const keys: string[] = [];
      for await (const meta of store.list(key)) keys.push(meta.key);
      return keys;
    }
    case 'put':
      return (await store.put(key, new TextEncoder().encode(key))).version;
    case 'delete':
      await store.delete(key);
      return '';
  }
}

const [root, opsJson] = process.argv.slice(2);
const store = new FileStore(root as string);
const results: ChildResult[] = [];
for (const op of JSON.parse(opsJson as string) as ChildOp[]) {
  try {
    results.push({ ...op, ok: true, value: await run(store, op) });
  } catch (e) {
    const err = e as Error & { code?: string };
    results.push({
      ...op,
      ok: false,
      name: err.name,
      code: err.code,
      spillway: e instanceof SpillwayError,
      message: err.message,
    });
  }
}
process.stdout.write(JSON.stringify(results));

// A child process of the file store tests: performs CAS increments on a shared counter.
import { FileStore } from '../../src/index.ts';
import { casIncrements } from './conformance.ts';

const [root, key, writer, n] = process.argv.slice(2);
const store = new FileStore(root as string);
await casIncrements(store, key as string, writer as string, Number(n));
await store.close();

// A child process of the store tests: performs CAS increments on a counter in the store a URL names.
import { openStore } from '../../src/index.ts';
import { casIncrements } from './conformance.ts';

const [url, key, writer, n] = process.argv.slice(2);
const store = openStore(url as string);
await casIncrements(store, key as string, writer as string, Number(n));
await store.close();

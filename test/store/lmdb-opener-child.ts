// A child process of the LMDB store tests: opens the store in a folder (its first call opens the
// file) and closes it again, `n` times, writing nothing.
import { LmdbStore } from '../../src/index.ts';

const [dir, n] = process.argv.slice(2);
for (let i = 0; i < Number(n); i++) {
  const store = new LmdbStore(dir as string);
  await store.head('absent').catch(() => undefined);
  await store.close();
}
process.stdout.write('OPENED\n');

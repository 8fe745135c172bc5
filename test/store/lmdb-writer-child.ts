// A child process of the LMDB store tests: creates keys w-0, w-1, ... as fast as it can,
// reporting each one on stdout once its put resolved (durable), until it is killed.
import { openStore } from '../../src/index.ts';

const [url, writer] = process.argv.slice(2);
const store = openStore(url as string);
const body = new Uint8Array(8192).fill(7);
for (let i = 0; ; i++) {
  // Several writes in flight at once, so a kill lands inside shared transactions.
  await Promise.all(
    [0, 1, 2, 3].map(async (j) => {
      const key = `${writer}/${i * 4 + j}`;
      await store.put(key, body, { mode: 'create' });
      process.stdout.write(`${key}\n`);
    }),
  );
}

/**
 * The main job until the `spillway` CLI lands: writes objects to a local
 * directory store, updates a shared record with compare-and-swap from several
 * concurrent writers, and reads everything back.
 *
 *   npm run demo [-- file:./somewhere]
 */
import { openStore, PreconditionFailedError } from '../src/index.ts';

const url = process.argv[2] ?? 'file:./.spillway-demo';
const store = openStore(url);
const enc = new TextEncoder();
const dec = new TextDecoder();
const started = performance.now();

// 1. Immutable objects, written create-only like batch objects.
const run = new Date().toISOString().replace(/[:.]/g, '-');
for (let i = 0; i < 20; i++) {
  await store.put(
    `demo/${run}/object-${String(i).padStart(3, '0')}`,
    enc.encode(`entry ${i} of run ${run}`),
    { mode: 'create' },
  );
}

// 2. A shared counter updated by 8 concurrent writers with ifMatch, like the queue manifest.
const key = `demo/${run}/counter`;
await store.put(key, enc.encode('0'), { mode: 'create' });
let conflicts = 0;
await Promise.all(
  Array.from({ length: 8 }, async () => {
    for (let n = 0; n < 25; n++) {
      for (;;) {
        const current = await store.get(key);
        const next = Number(dec.decode(current.body)) + 1;
        try {
          await store.put(key, enc.encode(String(next)), { mode: { ifMatch: current.version } });
          break;
        } catch (e) {
          if (!(e instanceof PreconditionFailedError)) throw e;
          conflicts++;
        }
      }
    }
  }),
);

// 3. Read back.
let objects = 0;
for await (const meta of store.list(`demo/${run}/object-`)) {
  const { body } = await store.get(meta.key);
  if (!dec.decode(body).startsWith('entry ')) throw new Error(`unexpected content in ${meta.key}`);
  objects++;
}
const counter = dec.decode((await store.get(key)).body);
await store.close();
console.log(`store:    ${store.description}`);
console.log(`objects:  ${objects} written create-only and read back`);
console.log(`counter:  ${counter} (expected 200) after ${conflicts} compare-and-swap conflicts`);
console.log(`time:     ${(performance.now() - started).toFixed(0)} ms`);
if (objects !== 20 || counter !== '200') process.exit(1);

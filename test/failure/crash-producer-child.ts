/**
 * A producer process for the crash tests. It produces `{id}:{n}` entries from
 * four closed-loop lanes until it is killed, logging each call before it is
 * made (`S first count`) and how its `durable` ended (`D first sequence
 * location`, `X first code`). With a crash point it kills itself with SIGKILL there:
 *
 * - `after-batch-upload`: the n-th batch object is stored, its append not begun;
 * - `before-manifest-write` / `after-manifest-write`: around the n-th append
 *   write, a manifest write (v1) or a commit create (log); after: it landed,
 *   and the producer never learns it did.
 *
 * Every manifest version (or commit) it writes is checked for a location held
 * twice (`MDUP location`). On the log layout it makes its batches inline or
 * not, as configured, so both kinds are killed around.
 */
import { openSync, writeSync } from 'node:fs';
import { openStore, Producer, type Layout } from '../../src/index.ts';
import { decodeCommit } from '../../src/internal.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { decodeManifest } from '../../src/format/manifest.ts';
import { entryBytes } from '../../src/testing.ts';

/** The child's configuration, passed as JSON in argv[2]. */
export interface ProducerChildConfig {
  url: string;
  id: string;
  logPath: string;
  crashAt: 'timer' | 'after-batch-upload' | 'before-manifest-write' | 'after-manifest-write';
  crashAfter: number;
  flushIntervalMs: number;
  layout: Layout;
  /** Log layout: batches up to this size travel inside their commit. */
  inlineMaxBytes: number;
}

const cfg = JSON.parse(process.argv[2] as string) as ProducerChildConfig;
const fd = openSync(cfg.logPath, 'a');
const log = (line: string): void => void writeSync(fd, `${line}\n`);
const die = (): void => void process.kill(process.pid, 'SIGKILL');
const manifestPath = 'ingest/manifest';
const isAppend = (key: string): boolean =>
  cfg.layout === 'v1' ? key === manifestPath : /^ingest\/log\/[0-9]{20}$/.test(key);

const store = new FaultInjectingStore(openStore(cfg.url));
let batches = 0;
let manifestWrites = 0;
store.before('put', (call) => {
  if (isAppend(call.key) && cfg.crashAt === 'before-manifest-write') {
    if (++manifestWrites === cfg.crashAfter) die();
  }
});
store.after('put', (call) => {
  if (call.key.endsWith('.batch')) {
    if (cfg.crashAt === 'after-batch-upload' && ++batches === cfg.crashAfter) die();
  } else if (isAppend(call.key) && call.body) {
    const seen = new Set<string>();
    const entries =
      cfg.layout === 'v1'
        ? decodeManifest(call.body).entries
        : decodeCommit(call.body, call.key).batches.map((b) => b.entry);
    for (const e of entries) {
      if (seen.has(e.location)) log(`MDUP ${e.location}`);
      seen.add(e.location);
    }
    if (cfg.crashAt === 'after-manifest-write' && ++manifestWrites === cfg.crashAfter) die();
  }
});

const producer = new Producer({
  store,
  instanceId: cfg.id,
  layout: cfg.layout,
  inlineMaxBytes: cfg.inlineMaxBytes,
  flushIntervalMs: cfg.flushIntervalMs,
  maxBufferedInputs: 64,
});
let n = 0;
process.stdout.write('READY\n');
// Until killed; the parent's deadline kills a child that never reaches its crash point.
await Promise.all(
  Array.from({ length: 4 }, async () => {
    for (;;) {
      const count = 1 + (n % 3);
      const first = n;
      n += count;
      log(`S ${first} ${count}`);
      const entries = Array.from({ length: count }, (_, k) => entryBytes(cfg.id, first + k));
      const { durable } = await producer.produce(entries);
      await durable.then(
        (r) => log(`D ${first} ${r.sequence} ${r.location}`),
        (e: unknown) => log(`X ${first} ${(e as { code?: string }).code ?? 'UNKNOWN'}`),
      );
    }
  }),
);

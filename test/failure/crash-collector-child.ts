/**
 * A collector process for the crash tests (log layout): it collects the queue
 * over and over until killed, saying `RAN` on stdout after each collection. With a crash point it kills itself with
 * SIGKILL there, and says so first (`HIT point`):
 *
 * - `after-boundary-write`: the n-th boundary move landed, nothing deleted yet;
 * - `mid-delete`: before its n-th delete request, with others done or to come.
 */
import { openSync, writeSync } from 'node:fs';
import { GarbageCollector, openStore } from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';

/** The child's configuration, passed as JSON in argv[2]. */
export interface CollectorChildConfig {
  url: string;
  logPath: string;
  crashAt: 'timer' | 'after-boundary-write' | 'mid-delete';
  crashAfter: number;
  gracePeriodMs: number;
}

const cfg = JSON.parse(process.argv[2] as string) as CollectorChildConfig;
const fd = openSync(cfg.logPath, 'a');
const die = (): void => {
  writeSync(fd, `HIT ${cfg.crashAt}\n`);
  process.kill(process.pid, 'SIGKILL');
};

const store = new FaultInjectingStore(openStore(cfg.url));
let hits = 0;
store.after('put', (call) => {
  if (call.key === 'ingest/boundary' && cfg.crashAt === 'after-boundary-write') {
    if (++hits === cfg.crashAfter) die();
  }
});
store.before('deleteMany', () => {
  if (cfg.crashAt === 'mid-delete' && ++hits === cfg.crashAfter) die();
});
const collector = new GarbageCollector({ store, gcGracePeriodMs: cfg.gracePeriodMs });
process.stdout.write('READY\n');
for (;;) {
  await collector.run().catch((e: unknown) => writeSync(fd, `E ${String(e)}\n`));
  process.stdout.write('RAN\n');
  await new Promise((r) => setTimeout(r, 20));
}

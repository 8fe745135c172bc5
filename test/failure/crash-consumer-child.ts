/**
 * A consumer process for the crash tests. It drains the queue (on the log
 * layout: its subscription) until killed, logging each batch it receives
 * (`R sequence location id,id,...`) and each acknowledgement known to be
 * stored (`A through`, after its flush resolved). With a crash point it kills
 * itself with SIGKILL there:
 *
 * - `after-fetch`: the n-th batch is received (its commit read) and not
 *   acknowledged: between the commit and the cursor write;
 * - `before-ack-write` / `after-ack-write`: around its n-th acknowledgement
 *   write, a manifest dequeue (v1) or a cursor write (log); after: the acks
 *   landed and the consumer never learns it.
 */
import { openSync, writeSync } from 'node:fs';
import { Consumer, openStore, type Layout } from '../../src/index.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { entryId } from '../../src/testing.ts';

/** The child's configuration, passed as JSON in argv[2]. */
export interface ConsumerChildConfig {
  url: string;
  logPath: string;
  crashAt: 'timer' | 'after-fetch' | 'before-ack-write' | 'after-ack-write';
  crashAfter: number;
  /** Batches between explicit flushes. */
  flushEvery: number;
  layout: Layout;
  /** Log layout: the subscription read. */
  subscription: string;
}

const cfg = JSON.parse(process.argv[2] as string) as ConsumerChildConfig;
const fd = openSync(cfg.logPath, 'a');
const log = (line: string): void => void writeSync(fd, `${line}\n`);
const die = (): void => void process.kill(process.pid, 'SIGKILL');
const ackKey = cfg.layout === 'v1' ? 'ingest/manifest' : `ingest/subscriptions/${cfg.subscription}`;

const store = new FaultInjectingStore(openStore(cfg.url));
let opened = false;
let ackWrites = 0;
store.before('put', (call) => {
  if (opened && call.key === ackKey && cfg.crashAt === 'before-ack-write') {
    if (++ackWrites === cfg.crashAfter) die();
  }
});
store.after('put', (call) => {
  if (opened && call.key === ackKey && cfg.crashAt === 'after-ack-write') {
    if (++ackWrites === cfg.crashAfter) die();
  }
});

const consumer = await Consumer.open({
  store,
  layout: cfg.layout,
  ...(cfg.layout === 'log' ? { subscription: cfg.subscription } : {}),
  ackBatchSize: 1_000_000,
  ackIntervalMs: 3_600_000,
  gcIntervalMs: 0,
  gcGracePeriodMs: 5000,
});
opened = true;
process.stdout.write('READY\n');
let received = 0;
for (;;) {
  const batch = await consumer.next();
  if (!batch) {
    await new Promise((r) => setTimeout(r, 5));
    continue;
  }
  log(`R ${batch.sequence} ${batch.location} ${batch.entries.map(entryId).join(',')}`);
  if (cfg.crashAt === 'after-fetch' && ++received === cfg.crashAfter) die();
  await consumer.ack(batch.sequence);
  if (batch.sequence % cfg.flushEvery === 0) {
    await consumer.flush();
    log(`A ${batch.sequence}`);
    if (batch.sequence % (cfg.flushEvery * 4) === 0) await consumer.collectGarbage();
  }
}

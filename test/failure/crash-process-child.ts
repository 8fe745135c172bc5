/**
 * A `process()` process for the crash tests. It opens a consumer on its
 * subscription and processes the queue entry by entry until caught up or
 * killed. Its handler logs each attempt as it starts (`H sequence index id
 * attempt`) and, before returning `'commit'`, the commit (`C sequence index
 * id`); poison entries throw on every attempt, and their last attempt is
 * logged (`E sequence index id`) before the entry goes to the dead-letter
 * queue, as is its dead letter once durable (`X sequence index id`). Every
 * line is appended and fsynced before the handler goes on, so the log holds
 * at least what the handler did. Each position write that
 * landed is logged too (`W sequence index`: the subscription's cursor, or
 * the v1 manifest's first batch), as are the end (`END reason sequence
 * index`) and, on stdout, `READY` and each hand-out (`H`).
 *
 * With a crash point it kills itself with SIGKILL there:
 *
 * - `handed-out`: as its n-th entry is handed out (in flight, not committed);
 * - `after-commit`: once the handler returned `'commit'` for its n-th commit,
 *   before `process()` went on (its position write may be under way);
 * - `before-position-write` / `after-position-write`: around the first
 *   position write after its n-th commit (after: it landed, and the next
 *   entry was not handed out yet);
 * - `after-dead-letter`: its n-th dead letter is durable, the position not
 *   yet moved past the entry.
 */
import { fsyncSync, openSync, writeSync } from 'node:fs';
import {
  Consumer,
  openStore,
  Producer,
  Queue,
  type Delivery,
  type Layout,
  type ProduceHandle,
  type ProduceOptions,
} from '../../src/index.ts';
import { decodeCursor, decodeManifest } from '../../src/internal.ts';
import { entryId, FaultInjectingStore } from '../../src/testing.ts';

/** Where a child kills itself. */
export type ProcessCrashPoint =
  | 'handed-out'
  | 'after-commit'
  | 'before-position-write'
  | 'after-position-write'
  | 'after-dead-letter';

/** The child's configuration, passed as JSON in argv[2]. */
export interface ProcessChildConfig {
  url: string;
  layout: Layout;
  /** Log layout: the subscription processed. */
  subscription: string;
  logPath: string;
  delivery: Delivery;
  concurrency: number;
  /** At-least-once: entries between position records. */
  commitEveryEntries: number;
  /** Attempts per entry (a poison entry's run out). */
  maxAttempts: number;
  /** Entries `{producer}:{n}` with `n % poisonEvery === poisonAt` throw on every attempt. */
  poisonEvery: number;
  poisonAt: number;
  /** The dead-letter queue, on the same store (log layout; its appends are `{dataPathPrefix}/log/…`). */
  deadLetters: { manifestPath: string; dataPathPrefix: string };
  /** Where to die (none: process until caught up, then exit). */
  crashAt?: ProcessCrashPoint;
  crashAfter: number;
}

const cfg = JSON.parse(process.argv[2] as string) as ProcessChildConfig;
const fd = openSync(cfg.logPath, 'a');
const log = (line: string): void => {
  writeSync(fd, `${line}\n`);
  fsyncSync(fd);
};
const die = (): void => void process.kill(process.pid, 'SIGKILL');
const positionKey =
  cfg.layout === 'v1' ? 'ingest/manifest' : `ingest/subscriptions/${cfg.subscription}`;

const raw = openStore(cfg.url);
const store = new FaultInjectingStore(raw);
/** Set once the n-th commit was logged: the next position write is the crash point. */
let armed = false;
store.before('put', (call) => {
  if (call.key === positionKey && armed && cfg.crashAt === 'before-position-write') die();
});
store.after('put', (call) => {
  if (call.key !== positionKey || !call.body) return;
  if (armed && cfg.crashAt === 'after-position-write') die();
  if (cfg.layout === 'v1') {
    const m = decodeManifest(call.body);
    log(`W ${m.entries[0]?.sequence ?? m.nextSequence} 0`);
  } else {
    const { next } = decodeCursor(call.body, call.key);
    log(`W ${next.sequence} ${next.index}`);
  }
});
// Dead letters go to a log-layout queue beside the processed one; its appends are commits.
const deadStore = new FaultInjectingStore(raw);
let deadLetters = 0;
deadStore.after('put', (call) => {
  if (!/^log\/[0-9]{20}$/.test(call.key.slice(cfg.deadLetters.dataPathPrefix.length + 1))) return;
  if (cfg.crashAt === 'after-dead-letter' && ++deadLetters === cfg.crashAfter) die();
});
/** Logs each dead letter once it is durable: its entry is finished from then on. */
class LoggingProducer extends Producer {
  override async produce(
    entries: readonly Uint8Array[],
    options?: Uint8Array | ProduceOptions,
  ): Promise<ProduceHandle> {
    const handle = await super.produce(entries, options);
    const metadata = options instanceof Uint8Array ? options : options?.metadata;
    const letter = JSON.parse(new TextDecoder().decode(metadata)) as {
      sequence: number;
      index: number;
    };
    const id = entryId(entries[0] as Uint8Array);
    const durable = handle.durable.then((r) => {
      log(`X ${letter.sequence} ${letter.index} ${id}`);
      return r;
    });
    return { ...handle, durable };
  }
}
const deadLetter = new LoggingProducer({
  queue: Queue.open({ store: deadStore, ...cfg.deadLetters, layout: 'log' }),
  flushIntervalMs: 0,
});

const consumer = await Consumer.open({
  store,
  layout: cfg.layout,
  ...(cfg.layout === 'log' ? { subscription: cfg.subscription } : {}),
  gcIntervalMs: 0,
  // Batches are read two at a time: entries run while the next read is under way.
  readAheadBatches: 2,
});
process.stdout.write('READY\n');
let handedOut = 0;
let commits = 0;
const result = await consumer.process(
  async (e) => {
    const id = entryId(e.data);
    log(`H ${e.sequence} ${e.index} ${id} ${e.attempt}`);
    if (e.attempt === 1) {
      process.stdout.write('H\n');
      if (cfg.crashAt === 'handed-out' && ++handedOut === cfg.crashAfter) die();
    }
    // Other entries start meanwhile (concurrency).
    await new Promise((r) => setImmediate(r));
    if (Number(id.slice(id.lastIndexOf(':') + 1)) % cfg.poisonEvery === cfg.poisonAt) {
      if (e.attempt >= cfg.maxAttempts) log(`E ${e.sequence} ${e.index} ${id}`);
      throw new Error(`cannot handle ${id}`);
    }
    log(`C ${e.sequence} ${e.index} ${id}`);
    if (++commits === cfg.crashAfter) {
      if (cfg.crashAt === 'after-commit') setImmediate(die);
      armed = true;
    }
    return 'commit' as const;
  },
  {
    delivery: cfg.delivery,
    concurrency: cfg.concurrency,
    commitEveryEntries: cfg.commitEveryEntries,
    commitIntervalMs: 3_600_000,
    retry: { delayMs: 0, maxAttempts: cfg.maxAttempts },
    onExhausted: 'dead-letter',
    deadLetter,
  },
);
log(`END ${result.reason} ${result.position.sequence} ${result.position.index}`);
await consumer.close();
await deadLetter.close();
process.stdout.write('END\n');

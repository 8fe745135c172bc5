/**
 * Case (h), one producer process: forked by producer-processes.ts with an IPC
 * channel, it runs one closed loop per `go` request on the queue it is
 * given, and reports what it measured. It stays up between runs (so process
 * start-up is never measured) and exits when the channel closes.
 *
 * Protocol, one request at a time, after the process says `{ type: 'started' }`:
 * - `{ type: 'prepare', url, layout, callers }`: opens the store and a
 *   Producer (flushIntervalMs 0) and makes one entry durable, so the layout
 *   and the head are known; answers `{ type: 'ready' }`.
 * - `{ type: 'go', startAtMs, durationMs }`: at `startAtMs` (ms since the
 *   epoch, the same instant for every process), `callers` callers each await
 *   `durable` before their next 1 KiB entry until `durationMs` have passed;
 *   then closes the producer and the store; answers with a {@link WorkerResult}.
 * - a failure answers `{ type: 'error', message }`.
 */
import {
  CountingStore,
  InMemoryMetrics,
  openStore,
  Producer,
  type Layout,
  type ObjectStore,
} from '../src/index.ts';
import { withAddedLatency } from './latency.ts';
import { entryPool } from './stats.ts';

/** A request from the parent. */
export type WorkerRequest =
  | { type: 'prepare'; url: string; layout: Layout; callers: number }
  | { type: 'go'; startAtMs: number; durationMs: number };

/** What one process measured. */
export interface WorkerResult {
  type: 'result';
  /** Entries made durable (one per `produce()` call). */
  ops: number;
  /** Durable latency of each call, in ms (two decimals). */
  latencies: number[];
  /** When the last caller finished, in ms since the epoch. */
  finishedAtMs: number;
  /** Appends (commits, or manifest writes) that landed, and races lost on the way. */
  appends: number;
  conflicts: number;
  /** Riders written, riders of others carried in this process's commits, and stalls (log layout). */
  ridersWritten: number;
  ridersIncluded: number;
  riderStalls: number;
  /** CPU time the process used during the run (user + system), in ms. */
  cpuMs: number;
  /** Store requests the process made during the run (PUT, GET, HEAD, LIST, DELETE). */
  requests: number;
  /** The same requests by operation. */
  requestsByOp: Record<string, number>;
}

/** An answer to the parent. */
export type WorkerReply =
  { type: 'started' } | { type: 'ready' } | WorkerResult | { type: 'error'; message: string };

interface Prepared {
  store: ObjectStore;
  producer: Producer;
  metrics: InMemoryMetrics;
  callers: number;
}

const pool = entryPool(1024);
let prepared: Prepared | undefined;

function reply(message: WorkerReply): void {
  process.send?.(message);
}

async function prepare(url: string, layout: Layout, callers: number): Promise<void> {
  const metrics = new InMemoryMetrics();
  // Counted: the requests each entry costs are what contention adds.
  const store = new CountingStore(withAddedLatency(openStore(url)), { metrics });
  const producer = new Producer({ store, layout, flushIntervalMs: 0, metrics });
  try {
    await (
      await producer.produce([pool[0] as Uint8Array])
    ).durable;
  } catch (e) {
    await producer.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw e;
  }
  prepared = { store, producer, metrics, callers };
}

async function go(startAtMs: number, durationMs: number): Promise<WorkerResult> {
  const p = prepared;
  if (!p) throw new Error('go before prepare');
  prepared = undefined;
  const appendsBefore = p.metrics.counter('buffer.manifest_writes', { role: 'producer' });
  const conflictsBefore = p.metrics.counter('buffer.manifest_conflicts', { role: 'producer' });
  const opNames = ['get', 'head', 'put', 'list', 'delete'];
  const byOp = (): number[] => opNames.map((op) => p.metrics.counter('store.requests', { op }));
  const requests = (): number => byOp().reduce((n, x) => n + x, 0);
  const requestsBefore = requests();
  const byOpBefore = byOp();
  const ridersBefore = [
    'buffer.riders_written',
    'buffer.riders_included',
    'buffer.rider_stalls',
  ].map((name) => p.metrics.counter(name));
  const wait = startAtMs - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const end = performance.now() + durationMs - Math.max(0, -wait);
  const cpu = process.cpuUsage();
  const latencies: number[] = [];
  let ops = 0;
  try {
    await Promise.all(
      Array.from({ length: p.callers }, async (_, c) => {
        for (let i = c; performance.now() < end; i++) {
          const s = performance.now();
          await (
            await p.producer.produce([pool[i % pool.length] as Uint8Array])
          ).durable;
          latencies.push(Math.round((performance.now() - s) * 100) / 100);
          ops++;
        }
      }),
    );
    const finishedAtMs = Date.now();
    const used = process.cpuUsage(cpu);
    return {
      type: 'result',
      ops,
      latencies,
      finishedAtMs,
      appends: p.metrics.counter('buffer.manifest_writes', { role: 'producer' }) - appendsBefore,
      conflicts:
        p.metrics.counter('buffer.manifest_conflicts', { role: 'producer' }) - conflictsBefore,
      ridersWritten: p.metrics.counter('buffer.riders_written') - (ridersBefore[0] as number),
      ridersIncluded: p.metrics.counter('buffer.riders_included') - (ridersBefore[1] as number),
      riderStalls: p.metrics.counter('buffer.rider_stalls') - (ridersBefore[2] as number),
      cpuMs: (used.user + used.system) / 1000,
      requests: requests() - requestsBefore,
      requestsByOp: Object.fromEntries(
        byOp().map((n, i) => [opNames[i] as string, n - (byOpBefore[i] as number)]),
      ),
    };
  } finally {
    await p.producer.close();
    await p.store.close();
  }
}

process.on('message', (message: WorkerRequest) => {
  const work =
    message.type === 'prepare'
      ? prepare(message.url, message.layout, message.callers).then((): WorkerReply => ({
          type: 'ready',
        }))
      : go(message.startAtMs, message.durationMs);
  work.then(reply, (e: unknown) =>
    reply({ type: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) }),
  );
});
process.on('disconnect', () => process.exit(0));
// Requests sent before the listener existed could be lost: the parent waits for this first.
reply({ type: 'started' });

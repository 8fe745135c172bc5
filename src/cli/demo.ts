import { asError } from '../errors.ts';
import { Command, Option } from 'commander';
import { randomBytes } from 'node:crypto';
import { sleep } from '../clock.ts';
import { Consumer } from '../consumer/consumer.ts';
import { GarbageCollector, GC_DEFAULTS } from '../gc.ts';
import type { Metrics } from '../metrics.ts';
import { startServer, type SpillwayServer } from '../server/server.ts';
import { Producer } from '../producer/producer.ts';
import type { Compression } from '../format/compression.ts';
import { Queue, type Layout } from '../queue/queue.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { openStore } from '../store/open-store.ts';
import { redactUrl } from '../redact.ts';
import {
  checkQueueToWrite,
  formatBytes,
  formatDuration,
  intOption,
  layoutOption,
  MAX_TIMER_MS,
  printJson,
  UsageError,
  writeOut,
} from './common.ts';
import { runKeyedDemo } from './demo-keyed.ts';
import { runGroupDemo } from './group.ts';
import { LiveStatus, RateMeter } from './progress.ts';
import { costOptions, costSettings, type CostOptions } from './serve.ts';
import { StopSignals } from './stop-signals.ts';

/** Where `spillway demo` keeps its queue unless told otherwise. */
export const DEMO_STORE = 'file:./.spillway-demo';

/** The queue the demo writes: the library's default paths, served as this name. */
const DEMO_QUEUE = 'ingest';

interface DemoOptions extends CostOptions {
  store: string;
  producers: number;
  durationS: number;
  entryBytes: number;
  entriesPerCall: number;
  flushIntervalMs: number;
  maxBufferedInputs: number;
  compression: Compression;
  layout?: Layout;
  json?: boolean;
  keyed?: boolean;
  keys: number;
  keyFlushIntervalMs: number;
  vnodes?: number;
  consumers?: number;
  serve?: boolean;
  port: number;
}

/** The figures the demo shows live and at the end. */
interface DemoState {
  started: number;
  produced: number;
  producedBytes: number;
  durable: number;
  consumed: number;
  /** As the consumer reports it (v1); unknown for the log. */
  batchesPending: number | undefined;
  lagMs: number;
  latenciesMs: number[];
  recentLatenciesMs: number[];
}

function percentile(sorted: readonly number[], q: number): number {
  return sorted.length === 0
    ? 0
    : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0);
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

/** `spillway demo`: the main job, live. */
export function demoCommand(): Command {
  const command = new Command('demo')
    .description(
      `several producers write to a local directory store while one consumer drains it, with a live view; Ctrl-C stops cleanly with everything durable and drained (default store ${DEMO_STORE})`,
    )
    .option('--store <url>', 'store URL', DEMO_STORE)
    .addOption(layoutOption())
    .option('--producers <n>', 'producers writing at once', intOption('--producers', 1), 3)
    .option(
      '--duration-s <s>',
      'seconds to produce for; 0 runs until Ctrl-C',
      intOption('--duration-s', 0, Math.floor(MAX_TIMER_MS / 1000)),
      10,
    )
    .option('--entry-bytes <n>', 'size of each entry', intOption('--entry-bytes', 16), 256)
    .option(
      '--entries-per-call <n>',
      'entries per produce() call',
      intOption('--entries-per-call', 1),
      20,
    )
    .option(
      '--flush-interval-ms <ms>',
      'producer flush interval (0: group commit)',
      intOption('--flush-interval-ms', 0, MAX_TIMER_MS),
      20,
    )
    .option(
      '--max-buffered-inputs <n>',
      'produce() calls each producer holds until durable; lower keeps latency down while producing flat out',
      intOption('--max-buffered-inputs', 1),
      400,
    )
    .addOption(
      new Option('--compression <codec>', 'compression of batch objects')
        .choices(['none', 'zstd'])
        .default('none'),
    )
    .option('--json', 'print the summary as JSON')
    .option(
      '--keyed',
      'run a durable keyed buffer instead (queue under keyed-demo/): inserters over --keys keys, live keys, flushes per second and the oldest value age',
    )
    .option('--keys <n>', 'keyed: distinct keys', intOption('--keys', 1), 1000)
    .option(
      '--key-flush-interval-ms <ms>',
      'keyed: flushIntervalMs of each key (jitter a fifth of it)',
      intOption('--key-flush-interval-ms', 0, MAX_TIMER_MS),
      1000,
    )
    .option(
      '--serve',
      'also serve the HTTP API and the live dashboard for the demo\'s queue ("ingest") on 127.0.0.1, with a token made for this run in the printed URL; runs until Ctrl-C unless --duration-s is given',
    )
    .option(
      '--port <n>',
      '--serve: TCP port (0: any free port)',
      intOption('--port', 0, 65_535),
      8080,
    )
    .option(
      '--vnodes <n>',
      'a sharded queue of N vnodes read by a consumer group (see --consumers): the assignment of vnodes to consumers, live; one consumer stops a third of the way in and its vnodes move to the others',
      intOption('--vnodes', 1, 10_000),
    )
    .option(
      '--consumers <n>',
      '--vnodes: consumers in the group (default 3)',
      intOption('--consumers', 1, 100),
    );
  return costOptions(command).action(async (o: DemoOptions, cmd: Command) => {
    if (o.vnodes !== undefined || o.consumers !== undefined) {
      if (o.keyed || o.serve)
        throw new UsageError(
          '--vnodes/--consumers is a demo of its own: leave out --keyed and --serve',
        );
      return runGroupDemo({
        store: o.store,
        vnodes: o.vnodes ?? 8,
        consumers: o.consumers ?? 3,
        durationS: o.durationS,
        entryBytes: o.entryBytes,
        ...(o.json ? { json: true } : {}),
      });
    }
    if (o.keyed && o.serve) throw new UsageError('--serve goes with the queue demo, not --keyed');
    // Serving, the demo runs until Ctrl-C unless told how long.
    if (o.serve && cmd.getOptionValueSource('durationS') !== 'cli') o.durationS = 0;
    return o.keyed ? runKeyedDemo(o) : runDemo(o);
  });
}

/** Calls every one of `targets`. */
function teeMetrics(...targets: Metrics[]): Metrics {
  return {
    increment: (name, value, labels) => targets.forEach((t) => t.increment(name, value, labels)),
    observe: (name, value, labels) => targets.forEach((t) => t.observe(name, value, labels)),
    gauge: (name, value, labels) => targets.forEach((t) => t.gauge(name, value, labels)),
  };
}

/**
 * The HTTP API and the dashboard over the demo's store, on loopback, with
 * a random token made for this run (a browser opens the printed URL once
 * and is then known by its cookie).
 */
async function serveDemo(
  store: ObjectStore,
  o: DemoOptions,
): Promise<{ server: SpillwayServer; token: string }> {
  const token = randomBytes(24).toString('base64url');
  const settings = costSettings(o);
  const server = await startServer({
    store,
    port: o.port,
    host: '127.0.0.1',
    tokens: [token],
    ...settings,
    dashboard: { ...settings.dashboard, queues: [DEMO_QUEUE] },
  });
  return { server, token };
}

async function runDemo(o: DemoOptions): Promise<void> {
  const opened = openStore(o.store); // a bad URL fails here, before anything starts
  let served: { server: SpillwayServer; token: string } | undefined;
  // Serving, every role uses the server's store: one request count, one cap.
  let store: ObjectStore = opened;
  let queue: Queue | undefined;
  let layout: Layout;
  try {
    if (o.serve) {
      served = await serveDemo(opened, o);
      store = served.server.api.context.store;
    }
    // One handle for every role; the store stays ours to close.
    queue = Queue.open({ store, ...(o.layout ? { layout: o.layout } : {}) });
    await checkQueueToWrite(queue, o.store, o.layout);
    layout = await queue.layout();
  } catch (e) {
    await served?.server.close().catch(() => undefined);
    await opened.close();
    throw e;
  }
  const state: DemoState = {
    started: performance.now(),
    produced: 0,
    producedBytes: 0,
    durable: 0,
    consumed: 0,
    batchesPending: undefined,
    lagMs: 0,
    latenciesMs: [],
    recentLatenciesMs: [],
  };
  const viewMetrics: Metrics = {
    increment: () => undefined,
    observe: () => undefined,
    gauge: (name, value) => {
      if (name === 'buffer.queue_length') state.batchesPending = value;
      else if (name === 'buffer.consumer_lag_seconds') state.lagMs = value * 1000;
    },
  };
  const servedMetrics = served?.server.api.context.metrics.withLabels({ queue: DEMO_QUEUE });
  const metrics = servedMetrics ? teeMetrics(viewMetrics, servedMetrics) : viewMetrics;
  if (served) {
    const base = served.server.url;
    await writeOut(
      [
        `spillway demo: dashboard at ${base}/?token=${served.token}`,
        `  (a token made for this run, on loopback only; the page logs in once and keeps a cookie)`,
        `  the HTTP API too: curl -H 'Authorization: Bearer ${served.token}' ${base}/v1/queues/${DEMO_QUEUE}`,
        '',
      ].join('\n'),
    );
  }

  // The first Ctrl-C ends production; a second exits at once (see StopSignals).
  const stopProducing = new StopSignals();

  const producedRate = new RateMeter();
  const consumedRate = new RateMeter();
  const rates = { durable: 0, consumed: 0 };
  const ticker = setInterval(() => {
    rates.durable = producedRate.sample(state.durable);
    rates.consumed = consumedRate.sample(state.consumed);
  }, 250);
  ticker.unref();
  let phase = 'producing';
  const view = (): string => {
    const recent = [...state.recentLatenciesMs].sort((a, b) => a - b);
    state.recentLatenciesMs = recent.slice(-2000);
    const elapsed = performance.now() - state.started;
    return [
      `spillway demo: ${o.producers} producers -> 1 consumer on ${redactUrl(o.store)} (${layout} layout)  [${phase}, ${formatDuration(elapsed)}${o.durationS === 0 ? ', Ctrl-C to stop' : ` of ${o.durationS} s`}]`,
      `  durable   ${fmt(state.durable).padStart(11)} entries  ${fmt(rates.durable).padStart(9)}/s   latency p50 ${percentile(recent, 0.5).toFixed(1)} ms, p99 ${percentile(recent, 0.99).toFixed(1)} ms`,
      `  consumed  ${fmt(state.consumed).padStart(11)} entries  ${fmt(rates.consumed).padStart(9)}/s   lag ${formatDuration(state.lagMs)}`,
      state.batchesPending === undefined
        ? `  queue     ${fmt(Math.max(0, state.durable - state.consumed)).padStart(11)} entries behind`
        : `  queue     ${fmt(state.batchesPending).padStart(11)} batches pending, ${fmt(Math.max(0, state.durable - state.consumed))} entries behind`,
    ].join('\n');
  };
  const status = new LiveStatus(view, { plainEveryMs: 2000, intervalMs: 250 });

  const consumer = await Consumer.open({
    queue,
    metrics,
    // Serving, the collector runs as it would in production, for the dashboard to show.
    gcIntervalMs: o.serve ? 10_000 : 0,
    ackIntervalMs: 200,
  });
  let producersDone = false;
  const draining = (async () => {
    for (;;) {
      // Only a read that began after the producers finished may end the drain.
      const finished = producersDone;
      const batch = await consumer.next();
      if (!batch) {
        if (finished) return;
        await sleep(10);
        continue;
      }
      state.consumed += batch.entries.length;
      await consumer.ack(batch.sequence);
    }
  })();

  const run = randomBytes(4).toString('hex');
  const filler = 'x'.repeat(o.entryBytes);
  const enc = new TextEncoder();
  const deadline =
    o.durationS > 0 ? setTimeout(() => stopProducing.stop(), o.durationS * 1000) : undefined;
  const producers = Array.from(
    { length: o.producers },
    (_, p) =>
      new Producer({
        queue,
        instanceId: `demo-${run}-p${p}`,
        flushIntervalMs: o.flushIntervalMs,
        maxBufferedInputs: o.maxBufferedInputs,
        compression: o.compression,
        ...(servedMetrics ? { metrics: servedMetrics } : {}),
      }),
  );
  let failure: unknown;
  await Promise.all(
    producers.map(async (producer, p) => {
      let n = 0;
      const pending = new Set<Promise<void>>();
      while (!stopProducing.signal.aborted && failure === undefined) {
        const entries: Uint8Array[] = [];
        for (let i = 0; i < o.entriesPerCall; i++, n++) {
          const head = `{"run":"${run}","producer":${p},"n":${n},"at":${Date.now()},"pad":"`;
          entries.push(
            enc.encode(`${head}${filler.slice(0, Math.max(0, o.entryBytes - head.length - 2))}"}`),
          );
          state.producedBytes += (entries.at(-1) as Uint8Array).byteLength;
        }
        const t0 = performance.now();
        const { durable } = await producer.produce(entries);
        state.produced += entries.length;
        const settled = durable.then(
          () => {
            const ms = performance.now() - t0;
            state.durable += entries.length;
            state.latenciesMs.push(ms);
            state.recentLatenciesMs.push(ms);
          },
          (e: unknown) => void (failure ??= e),
        );
        pending.add(settled);
        void settled.then(() => pending.delete(settled));
      }
      await Promise.all(pending);
      await producer.close().catch((e: unknown) => void (failure ??= e));
    }),
  );
  clearTimeout(deadline);
  const producedFor = performance.now() - state.started;
  phase = 'draining';
  producersDone = true;
  await draining;
  await consumer.close();
  const gc = await new GarbageCollector({
    queue,
    ...(servedMetrics ? { metrics: servedMetrics } : {}),
  }).run();
  await queue.close();
  await served?.server.close();
  await opened.close();
  status.stop();
  clearInterval(ticker);
  stopProducing.dispose();

  const all = state.latenciesMs.sort((a, b) => a - b);
  const summary = {
    store: redactUrl(o.store),
    layout,
    producers: o.producers,
    produced_for_ms: Math.round(producedFor),
    entries_durable: state.durable,
    bytes_durable: state.producedBytes,
    entries_per_second: Math.round((state.durable * 1000) / producedFor),
    durable_latency_ms: {
      p50: Number(percentile(all, 0.5).toFixed(1)),
      p99: Number(percentile(all, 0.99).toFixed(1)),
      max: Number((all.at(-1) ?? 0).toFixed(1)),
    },
    entries_consumed: state.consumed,
    entries_from_earlier_runs: Math.max(0, state.consumed - state.durable),
    batch_objects_collected: gc.deleted.length,
    batch_objects_awaiting_grace: gc.kept,
  };
  if (o.json) await printJson(summary);
  else {
    await writeOut(
      [
        `demo finished: ${o.producers} producers and 1 consumer on ${summary.store} (${layout} layout)`,
        `  produced   ${fmt(summary.entries_durable)} entries (${formatBytes(summary.bytes_durable)}) in ${formatDuration(producedFor)}, all durable: ${fmt(summary.entries_per_second)} entries/s`,
        `  durable    p50 ${summary.durable_latency_ms.p50} ms, p99 ${summary.durable_latency_ms.p99} ms, max ${summary.durable_latency_ms.max} ms after produce()`,
        `  consumed   ${fmt(summary.entries_consumed)} entries${summary.entries_from_earlier_runs > 0 ? ` (${fmt(summary.entries_from_earlier_runs)} left from an earlier run)` : ''}, all acknowledged; the queue is empty`,
        `  collected  ${summary.batch_objects_collected} objects; ${summary.batch_objects_awaiting_grace} wait out the ${formatDuration(GC_DEFAULTS.gcGracePeriodMs)} grace period`,
        '',
      ].join('\n'),
    );
  }
  if (failure !== undefined) throw asError(failure);
}

/**
 * `spillway demo --keyed`: a durable keyed buffer on the demo store, with a
 * live view of its keys, flushes per second and the oldest value's age.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { asError } from '../errors.ts';
import { KeyedBuffer } from '../keyed/keyed-buffer.ts';
import type { Metrics } from '../metrics.ts';
import { redactUrl } from '../redact.ts';
import { formatDuration, printJson, writeOut } from './common.ts';
import { LiveStatus, RateMeter } from './progress.ts';
import { StopSignals } from './stop-signals.ts';

/** Options of the keyed demo (see `spillway demo --help`). */
export interface KeyedDemoOptions {
  store: string;
  producers: number;
  durationS: number;
  entryBytes: number;
  keys: number;
  keyFlushIntervalMs: number;
  json?: boolean;
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

/** Runs the keyed demo until its duration ends or Ctrl-C, then closes (flushing everything) and prints a summary. */
export async function runKeyedDemo(o: KeyedDemoOptions): Promise<void> {
  const counts = { inserted: 0, flushes: 0, valuesFlushed: 0, retries: 0 };
  const metrics: Metrics = {
    increment: (name, value = 1) => {
      if (name === 'keyed.flushes') counts.flushes += value;
      else if (name === 'keyed.values_flushed') counts.valuesFlushed += value;
      else if (name === 'keyed.retries') counts.retries += value;
    },
    observe: () => undefined,
    gauge: () => undefined,
  };
  const buffer = await KeyedBuffer.open({
    store: o.store,
    durable: true,
    flushIntervalMs: o.keyFlushIntervalMs,
    jitterMs: Math.floor(o.keyFlushIntervalMs / 5),
    metrics,
    // A write of one key's values somewhere downstream, about a millisecond.
    onFlush: () => delay(1),
    queue: { dataPathPrefix: 'keyed-demo', manifestPath: 'keyed-demo/manifest' },
  });
  const recovered = buffer.stats().values;
  const stop = new StopSignals();
  const started = performance.now();
  const insertRate = new RateMeter();
  const flushRate = new RateMeter();
  const rates = { inserts: 0, flushes: 0 };
  const ticker = setInterval(() => {
    rates.inserts = insertRate.sample(counts.inserted);
    rates.flushes = flushRate.sample(counts.flushes);
  }, 250);
  ticker.unref();
  let phase = 'inserting';
  const view = (): string => {
    const s = buffer.stats();
    return [
      `spillway demo --keyed: ${o.producers} inserters, ${o.keys} keys, durable on ${redactUrl(o.store)}  [${phase}, ${formatDuration(performance.now() - started)}${o.durationS === 0 ? ', Ctrl-C to stop' : ` of ${o.durationS} s`}]`,
      `  inserted  ${fmt(counts.inserted).padStart(11)} values   ${fmt(rates.inserts).padStart(9)}/s`,
      `  flushed   ${fmt(counts.valuesFlushed).padStart(11)} values   ${fmt(rates.flushes).padStart(9)} flushes/s   ${fmt(counts.retries)} retries`,
      `  buffered  ${fmt(s.values).padStart(11)} values   ${fmt(s.keysBuffered)} of ${fmt(s.keys)} keys, ${s.flushesRunning} flushing, oldest value ${formatDuration(s.oldestValueAgeMs)}`,
    ].join('\n');
  };
  const status = new LiveStatus(view, { plainEveryMs: 2000, intervalMs: 250 });
  const deadline = o.durationS > 0 ? setTimeout(() => stop.stop(), o.durationS * 1000) : undefined;
  const value = new Uint8Array(o.entryBytes).fill(0x6b);
  let failure: unknown;
  await Promise.all(
    Array.from({ length: o.producers }, async (_, p) => {
      for (let n = p; !stop.signal.aborted && failure === undefined; n += o.producers) {
        try {
          await buffer.insert(`key-${(n * 7919) % o.keys}`, value, { signal: stop.signal });
          counts.inserted++;
        } catch (e) {
          if (!stop.signal.aborted) failure ??= e;
        }
      }
    }),
  );
  clearTimeout(deadline);
  phase = 'flushing';
  const insertedFor = performance.now() - started;
  await buffer.close().catch((e: unknown) => void (failure ??= e));
  status.stop();
  clearInterval(ticker);
  stop.dispose();
  const summary = {
    store: redactUrl(o.store),
    keys: o.keys,
    inserted_for_ms: Math.round(insertedFor),
    values_inserted: counts.inserted,
    inserts_per_second: Math.round((counts.inserted * 1000) / insertedFor),
    values_from_earlier_runs: recovered,
    flushes: counts.flushes,
    values_flushed: counts.valuesFlushed,
    retries: counts.retries,
  };
  if (o.json) await printJson(summary);
  else {
    await writeOut(
      [
        `keyed demo finished: ${o.producers} inserters over ${o.keys} keys on ${summary.store}`,
        `  inserted  ${fmt(counts.inserted)} values in ${formatDuration(insertedFor)}, each durable before insert() resolved: ${fmt(summary.inserts_per_second)}/s`,
        `  flushed   ${fmt(counts.valuesFlushed)} values in ${fmt(counts.flushes)} flushes${recovered > 0 ? ` (${fmt(recovered)} left from an earlier run)` : ''}; nothing left buffered`,
        '',
      ].join('\n'),
    );
  }
  if (failure !== undefined) throw asError(failure);
}

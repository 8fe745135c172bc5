/**
 * A durable keyed buffer process for the crash test. Four lanes insert
 * `{round}:{n}` into keys `k0`..`k3` (one lane per key, so each key's insert
 * order is its lane's), printing `R key value` once an insert resolved; each
 * flush appends `{"key","values"}` to the flush log before it returns. The
 * parent kills it with SIGKILL. With `clean`, it only opens (reading back
 * what was left), closes (flushing it), and exits.
 */
import { appendFileSync, writeSync } from 'node:fs';
import { KeyedBuffer } from '../../src/index.ts';

/** The child's configuration, passed as JSON in argv[2]. */
export interface KeyedCrashChildConfig {
  url: string;
  round: number;
  flushLogPath: string;
  clean: boolean;
}

const cfg = JSON.parse(process.argv[2] as string) as KeyedCrashChildConfig;
const dec = new TextDecoder();
const enc = new TextEncoder();

const buffer = await KeyedBuffer.open({
  store: cfg.url,
  durable: true,
  flushIntervalMs: 20,
  jitterMs: 20,
  retryDelayMs: 10,
  queue: { ackIntervalMs: 30, gcIntervalMs: 0 },
  onFlush: (key, values) => {
    const line = JSON.stringify({ key, values: values.map((v) => dec.decode(v)) });
    appendFileSync(cfg.flushLogPath, `${line}\n`);
  },
});

if (cfg.clean) {
  await buffer.close();
  writeSync(1, 'closed\n');
  process.exit(0);
}

await Promise.all(
  [0, 1, 2, 3].map(async (lane) => {
    for (let n = 0; ; n++) {
      const value = `${cfg.round}:${n}`;
      await buffer.insert(`k${lane}`, enc.encode(value));
      writeSync(1, `R k${lane} ${value}\n`);
    }
  }),
);

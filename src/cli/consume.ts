import { Command, Option } from 'commander';
import { Consumer, type Batch } from '../consumer.ts';
import { describeEntry, fetchBatch } from '../queue/batch-fetch.ts';
import { ManifestQueue } from '../queue/manifest-queue.ts';
import { noopMetrics } from '../metrics.ts';
import { delay } from '../store/retry.ts';
import type { ObjectStore } from '../store/object-store.ts';
import {
  asText,
  intOption,
  openCliStore,
  queueOptions,
  writeOut,
  type QueueOptions,
} from './common.ts';
import { LiveStatus, RateMeter } from './progress.ts';

interface ConsumeOptions extends QueueOptions {
  format: 'lines' | 'ndjson';
  json?: boolean;
  peek?: boolean;
  follow?: boolean;
  fromSequence?: number;
  pollIntervalMs: number;
}

function render(
  batch: Pick<Batch, 'sequence' | 'entries' | 'metadata'>,
  format: ConsumeOptions['format'],
): string {
  if (format === 'lines') {
    return batch.entries.map((e) => `${Buffer.from(e).toString('utf8')}\n`).join('');
  }
  let item = 0;
  return batch.entries
    .map((e, index) => {
      while (
        item + 1 < batch.metadata.length &&
        (batch.metadata[item + 1]?.startIndex ?? Infinity) <= index
      )
        item++;
      const text = asText(e);
      return `${JSON.stringify({
        sequence: batch.sequence,
        index,
        ingestion_time_ms: batch.metadata[item]?.ingestionTimeMs ?? null,
        ...(text !== undefined
          ? { data: text }
          : { data_base64: Buffer.from(e).toString('base64') }),
      })}\n`;
    })
    .join('');
}

/** Prints batches without acknowledging them, and without fencing the queue's consumer. */
async function peek(
  store: ObjectStore,
  o: ConsumeOptions,
  signal: AbortSignal,
  count: (b: Batch) => void,
): Promise<void> {
  const queue = new ManifestQueue({ store, manifestPath: o.manifestPath, metrics: noopMetrics });
  let after = (o.fromSequence ?? 0) - 1;
  while (!signal.aborted) {
    const { manifest } = await queue.read(signal);
    for (const e of manifest.entries) {
      if (e.sequence <= after || signal.aborted) continue;
      const d = describeEntry(e);
      const { records } = await fetchBatch(store, d, signal);
      const batch = {
        sequence: d.sequence,
        location: d.location,
        entries: records,
        metadata: d.metadata,
      };
      await writeOut(render(batch, o.format));
      count(batch);
      after = e.sequence;
    }
    if (!o.follow) return;
    await delay(o.pollIntervalMs, signal).catch(() => undefined);
  }
}

/** `spillway consume`. */
export function consumeCommand(): Command {
  return queueOptions(
    new Command('consume')
      .description(
        "write entries to stdout, acknowledging each batch once written (this takes over as the queue's consumer and fences the previous one), or --peek without acknowledging",
      )
      .argument('<url>', 'store URL')
      .addOption(
        new Option('--format <format>', 'one entry per line, or one JSON object per entry')
          .choices(['lines', 'ndjson'])
          .default('lines'),
      )
      .option('--json', 'same as --format ndjson')
      .option('--peek', 'read without acknowledging and without fencing the running consumer')
      .option('--follow', 'keep waiting for new batches (until Ctrl-C)')
      .option(
        '--from-sequence <n>',
        'start at this sequence; without --peek, the batches before it count as acknowledged',
        intOption('--from-sequence'),
      )
      .option(
        '--poll-interval-ms <ms>',
        'wait between manifest reads with --follow',
        intOption('--poll-interval-ms', 1),
        1000,
      ),
  ).action(async (url: string, o: ConsumeOptions) => {
    if (o.json) o.format = 'ndjson';
    const store = openCliStore(url);
    const stop = new AbortController();
    const onSignal = (): void => stop.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    let entries = 0;
    let batches = 0;
    const rate = new RateMeter();
    const status = new LiveStatus(
      () =>
        `consume: ${entries} entries in ${batches} batches, ${Math.round(rate.sample(entries))} entries/s`,
    );
    const count = (b: Pick<Batch, 'entries'>): void => {
      entries += b.entries.length;
      batches++;
    };
    try {
      if (o.peek) {
        await peek(store, o, stop.signal, count);
        return;
      }
      const consumer = await Consumer.open({
        store,
        manifestPath: o.manifestPath,
        dataPathPrefix: o.dataPrefix,
        gcIntervalMs: 0,
        ...(o.fromSequence !== undefined ? { lastAckedSequence: o.fromSequence - 1 } : {}),
      });
      try {
        while (!stop.signal.aborted) {
          const batch = await consumer.next();
          if (!batch) {
            if (!o.follow) break;
            await delay(o.pollIntervalMs, stop.signal).catch(() => undefined);
            continue;
          }
          // Acknowledge only what reached stdout.
          await writeOut(render(batch, o.format));
          count(batch);
          await consumer.ack(batch.sequence);
        }
      } finally {
        await consumer.close();
      }
    } finally {
      status.stop();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await store.close();
      if (process.stderr.isTTY)
        process.stderr.write(
          `consumed ${entries} entries in ${batches} batches${o.peek ? ' (peek: nothing acknowledged)' : ''}\n`,
        );
    }
  });
}

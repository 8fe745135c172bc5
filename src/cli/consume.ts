import { Command, Option } from 'commander';
import { hostname } from 'node:os';
import { sleep } from '../clock.ts';
import { Consumer } from '../consumer/consumer.ts';
import { InvalidArgumentError } from '../errors.ts';
import { DEFAULT_SUBSCRIPTION } from '../internal.ts';
import type { StartAt } from '../queue/log-queue.ts';
import type { Batch, Layout, Queue } from '../queue/queue.ts';
import {
  asText,
  CliError,
  checkQueueToWrite,
  existingLayout,
  formatStartAt,
  intOption,
  layoutOption,
  MAX_TIMER_MS,
  openCliQueue,
  parseStartAt,
  queueOptions,
  START_AT_FORMS,
  subscriptionName,
  UsageError,
  v1Cannot,
  type QueueOptions,
} from './common.ts';
import { PipeReaders } from './pipe-reader.ts';
import { LiveStatus, RateMeter } from './progress.ts';
import { StopSignals } from './stop-signals.ts';

type OutputFormat = 'lines' | 'ndjson' | 'frames';

interface ConsumeOptions extends QueueOptions {
  format: OutputFormat;
  json?: boolean;
  peek?: boolean;
  follow?: boolean;
  fromSequence?: number;
  pollIntervalMs: number;
  subscription?: string;
  startAt?: StartAt;
}

/** Who this consumer is, as a subscription's holder shows it: the command, host and process. */
function consumerId(): string {
  const host = hostname()
    .replace(/[^\x21-\x7e]/g, '?')
    .slice(0, 100);
  return `spillway consume on ${host} pid ${process.pid}`;
}

/** Longest time written output waits before it is acknowledged, in ms. */
const ACK_INTERVAL_MS = 1000;
/** Batches written that trigger an acknowledgement at once. */
const ACK_EVERY_BATCHES = 100;

/**
 * The bytes a batch prints as. `lines`: each entry's bytes unchanged and a
 * `\n`; an entry holding `\n` (or ending in `\r`, which reading it back as a
 * line would drop) cannot be a line, and the whole batch is refused before
 * any of it is written. `frames`: each entry as a u32 little-endian length
 * and its bytes, which round-trips anything. `ndjson`: one JSON object per
 * entry with its position and ingestion time.
 */
export function renderBatch(
  batch: Pick<Batch, 'sequence' | 'entries' | 'metadata'>,
  format: OutputFormat,
): Buffer {
  if (format === 'lines') {
    let size = 0;
    batch.entries.forEach((e, index) => {
      if (e.includes(0x0a) || e[e.byteLength - 1] === 0x0d) {
        throw new CliError(
          `entry ${index} of batch ${batch.sequence} contains a line break ("\\n", or a "\\r" at its end), so it cannot be written as one line; nothing of this batch was written or acknowledged: use --format ndjson or --format frames`,
        );
      }
      size += e.byteLength + 1;
    });
    const out = Buffer.allocUnsafe(size);
    let at = 0;
    for (const e of batch.entries) {
      out.set(e, at);
      at += e.byteLength;
      out[at++] = 0x0a;
    }
    return out;
  }
  if (format === 'frames') {
    let size = 0;
    for (const e of batch.entries) size += 4 + e.byteLength;
    const out = Buffer.allocUnsafe(size);
    let at = 0;
    for (const e of batch.entries) {
      out.writeUInt32LE(e.byteLength, at);
      out.set(e, at + 4);
      at += 4 + e.byteLength;
    }
    return out;
  }
  let item = 0;
  return Buffer.from(
    batch.entries
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
      .join(''),
  );
}

/** Writes bytes to stdout; resolves once handed to the OS, rejects on a closed pipe. */
function writeBytes(bytes: Buffer): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (bytes.byteLength === 0) resolve();
    else process.stdout.write(bytes, (e) => (e ? reject(e) : resolve()));
  });
}

/** Refuses a start beyond the end of the queue: it would skip what is appended meanwhile. */
async function checkFromSequence(
  queue: Queue,
  layout: Layout,
  from: number | undefined,
): Promise<void> {
  if (from === undefined) return;
  const next =
    layout === 'v1'
      ? (await queue.readManifest()).manifest.nextSequence
      : (await queue.logQueue().discoverHead()).endSequence;
  if (from > next) {
    throw new UsageError(
      `--from-sequence ${from} is past the end of the queue (its next sequence is ${next}); expected at most ${next}`,
    );
  }
}

/**
 * Where `--peek` starts on a log queue: `--from-sequence`, else `--start-at`,
 * else where the subscription stands (what `consume` would print next), else,
 * for a subscription not created yet, the oldest batch kept.
 */
async function logPeekStart(queue: Queue, o: ConsumeOptions): Promise<number | undefined> {
  if (o.fromSequence !== undefined) return o.fromSequence;
  const log = queue.logQueue();
  if (o.startAt !== undefined) return (await log.resolveStart(o.startAt)).next.sequence;
  return (await log.readCursor(o.subscription ?? DEFAULT_SUBSCRIPTION))?.value.next.sequence;
}

/** Prints batches without acknowledging them, and without fencing the queue's consumer. */
async function peek(
  queue: Queue,
  o: ConsumeOptions,
  signal: AbortSignal,
  count: (b: Batch) => void,
): Promise<void> {
  try {
    for await (const batch of queue.peek({
      ...(o.fromSequence !== undefined ? { fromSequence: o.fromSequence } : {}),
      follow: o.follow,
      pollIntervalMs: o.pollIntervalMs,
      signal,
    })) {
      await writeBytes(renderBatch(batch, o.format));
      count(batch);
    }
  } catch (e) {
    // The end of the queue moved back meanwhile: a usage error, as checked before.
    if (e instanceof InvalidArgumentError) throw new UsageError(e.message);
    throw e;
  }
}

/**
 * Acknowledges what was written to stdout, and only that: every
 * {@link ACK_EVERY_BATCHES} batches, after {@link ACK_INTERVAL_MS}, and at
 * the end. When stdout is a pipe, each acknowledgement first checks that a
 * reader still holds it; if the reader went away (`| head`), nothing written
 * since the last acknowledgement is acknowledged and the command stops.
 */
class WrittenAcks {
  private written = -1;
  private acked = -1;
  private sinceAck = 0;
  private lastAckAt = performance.now();
  /** Set once the reader of stdout went away; nothing more is acknowledged. */
  readerGone = false;
  private readonly readers = new PipeReaders(1);

  constructor(private readonly consumer: Consumer) {}

  /** Records that a batch reached stdout; acknowledges if one is due. */
  async wrote(sequence: number): Promise<void> {
    this.written = sequence;
    this.sinceAck++;
    if (
      this.sinceAck >= ACK_EVERY_BATCHES ||
      performance.now() - this.lastAckAt >= ACK_INTERVAL_MS
    ) {
      await this.ack();
    }
  }

  /** Acknowledges everything written so far, if its reader is still there. */
  async ack(): Promise<void> {
    if (this.readerGone || this.written <= this.acked) return;
    if ((await this.readers.status()) === 'gone') {
      this.readerGone = true;
      return;
    }
    await this.consumer.ackThrough(this.written);
    this.acked = this.written;
    this.sinceAck = 0;
    this.lastAckAt = performance.now();
  }
}

/** `spillway consume`. */
export function consumeCommand(): Command {
  return queueOptions(
    new Command('consume')
      .description(
        "write entries to stdout, acknowledging what was written (this takes over as the queue's consumer, or the subscription's, and fences the previous one), or --peek without acknowledging",
      )
      .argument('<url>', 'store URL')
      .addOption(
        new Option(
          '--format <format>',
          'lines: each entry\'s bytes and "\\n" (entries holding a line break are refused); ndjson: one JSON object per entry; frames: u32 little-endian length and bytes (any entry)',
        )
          .choices(['lines', 'ndjson', 'frames'])
          .default('lines'),
      )
      .option('--json', 'same as --format ndjson')
      .option(
        '--peek',
        "read without acknowledging and without fencing the running consumer, from where consume would start (log: the subscription's position, or --start-at)",
      )
      .option(
        '--subscription <name>',
        `the subscription to read and acknowledge as (log layout); a new one is created at --start-at (default "${DEFAULT_SUBSCRIPTION}")`,
        subscriptionName(),
      )
      .option(
        '--start-at <position>',
        `where a subscription created now starts (log layout; an existing one keeps its position): ${START_AT_FORMS}; with --peek, where the peek starts`,
        (v: string) => parseStartAt(v),
      )
      .option('--follow', 'keep waiting for new batches (until Ctrl-C)')
      .option(
        '--from-sequence <n>',
        'start at this sequence (at most the next sequence); without --peek, the batches before it count as acknowledged',
        intOption('--from-sequence'),
      )
      .option(
        '--poll-interval-ms <ms>',
        'wait between manifest reads with --follow',
        intOption('--poll-interval-ms', 1, MAX_TIMER_MS),
        1000,
      )
      .addOption(layoutOption()),
  ).action(async (url: string, o: ConsumeOptions) => {
    if (o.json) o.format = 'ndjson';
    const queue = openCliQueue(url, o);
    const stop = new StopSignals();
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
      if (o.fromSequence !== undefined && o.startAt !== undefined) {
        throw new UsageError(
          '--from-sequence and --start-at both say where to start: give one of them',
        );
      }
      if (!o.peek) await checkQueueToWrite(queue, url, o.layout);
      // Reading a queue that is not there is a mistake (a typo), unless waiting for it.
      const layout = o.peek && !o.follow ? await existingLayout(queue, url) : await queue.layout();
      if (layout === 'v1') {
        if (o.subscription !== undefined && o.subscription !== DEFAULT_SUBSCRIPTION) {
          throw v1Cannot(queue, url, `have named subscriptions (--subscription ${o.subscription})`);
        }
        if (o.startAt !== undefined) {
          throw v1Cannot(
            queue,
            url,
            `start a subscription at a position (--start-at ${formatStartAt(o.startAt)})`,
            '--from-sequence N starts its consumer at N',
          );
        }
      }
      await checkFromSequence(queue, layout, o.fromSequence);
      if (o.peek) {
        if (layout === 'log') {
          const from = await logPeekStart(queue, o);
          if (from !== undefined) o.fromSequence = from;
        }
        await peek(queue, o, stop.signal, count);
        return;
      }
      if (layout === 'log' && o.startAt !== undefined) {
        const name = o.subscription ?? DEFAULT_SUBSCRIPTION;
        const cursor = await queue.logQueue().readCursor(name);
        if (cursor) {
          process.stderr.write(
            `spillway: subscription "${name}" exists already, at sequence ${cursor.value.next.sequence}: --start-at ${formatStartAt(o.startAt)} is ignored (subscription reset moves it)\n`,
          );
        }
      }
      const consumer = await Consumer.open({
        queue,
        gcIntervalMs: 0,
        instanceId: consumerId(),
        ...(o.subscription !== undefined ? { subscription: o.subscription } : {}),
        ...(o.startAt !== undefined ? { startAt: o.startAt } : {}),
        ...(o.fromSequence !== undefined ? { lastAckedSequence: o.fromSequence - 1 } : {}),
      });
      const acks = new WrittenAcks(consumer);
      try {
        while (!stop.signal.aborted && !acks.readerGone) {
          const batch = await consumer.next();
          if (!batch) {
            await acks.ack();
            if (!o.follow) break;
            await sleep(o.pollIntervalMs, { signal: stop.signal }).catch(() => undefined);
            continue;
          }
          let bytes: Buffer;
          try {
            bytes = renderBatch(batch, o.format);
          } catch (e) {
            // The batches written before the refused one are done: acknowledge them.
            await acks.ack();
            throw e;
          }
          await writeBytes(bytes);
          count(batch);
          await acks.wrote(batch.sequence);
        }
        await acks.ack();
      } finally {
        await consumer.close();
      }
    } finally {
      stop.dispose();
      status.stop();
      await queue.close();
      if (process.stderr.isTTY)
        process.stderr.write(
          `consumed ${entries} entries in ${batches} batches${o.peek ? ' (peek: nothing acknowledged)' : ''}\n`,
        );
    }
  });
}

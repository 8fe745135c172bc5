import { Command, Option } from 'commander';
import { hostname } from 'node:os';
import { sleep } from '../clock.ts';
import { Consumer } from '../consumer/consumer.ts';
import { InvalidArgumentError } from '../errors.ts';
import { DEFAULT_SUBSCRIPTION } from '../internal.ts';
import { Producer } from '../producer/producer.ts';
import type { StartAt } from '../queue/log-queue.ts';
import { QUEUE_DEFAULTS, type Batch, type Layout, type Queue } from '../queue/queue.ts';
import { redactUrl } from '../redact.ts';
import {
  CliError,
  checkQueueToWrite,
  existingLayout,
  formatStartAt,
  intOption,
  layoutOption,
  MAX_TIMER_MS,
  openCliQueue,
  parseStartAt,
  plural,
  queueOptions,
  START_AT_FORMS,
  subscriptionName,
  UsageError,
  v1Cannot,
  type QueueOptions,
} from './common.ts';
import {
  consumeEntries,
  endText,
  summaryLine,
  type EntryRun,
  type EntryTally,
} from './consume-entries.ts';
import { renderBatch, writeBytes, type OutputFormat } from './entry-output.ts';
import { EXIT_RETRY } from './exec-entry.ts';
import { consumeGroup } from './group.ts';
import { PipeReaders } from './pipe-reader.ts';
import { LiveStatus, RateMeter } from './progress.ts';
import { StopSignals } from './stop-signals.ts';

interface ConsumeOptions extends QueueOptions {
  format: OutputFormat;
  json?: boolean;
  peek?: boolean;
  follow?: boolean;
  fromSequence?: number;
  pollIntervalMs: number;
  subscription?: string;
  startAt?: StartAt;
  limit?: number;
  exec?: string;
  atLeastOnce?: boolean;
  commitEvery?: number;
  commitIntervalMs?: number;
  maxAttempts?: number;
  retryDelayMs?: number;
  onExhausted?: 'stop' | 'skip' | 'dead-letter';
  deadLetter?: string;
  group?: string;
  instanceId?: string;
  vnodes?: string;
  leaseTtlMs?: number;
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

/** Defaults of the options of consuming entry by entry. */
const ENTRY_DEFAULTS = Object.freeze({
  commitEvery: 100,
  commitIntervalMs: 1000,
  maxAttempts: 3,
  retryDelayMs: 1000,
});
/** Largest count the entry options take (entries, attempts). */
const MAX_COUNT = 2_147_483_647;

/** Whether the command consumes entry by entry (through `Consumer.process()`). */
function byEntry(o: ConsumeOptions): boolean {
  return o.limit !== undefined || o.exec !== undefined || o.atLeastOnce === true;
}

/**
 * Refuses, before anything is read, options that do not go together: what
 * only `--exec` or `--at-least-once` use, given without it; what `--peek`
 * cannot do; a dead-letter choice without its queue, or the other way round.
 */
function checkEntryOptions(o: ConsumeOptions, command: Command): void {
  const given = (name: string): boolean => command.getOptionValueSource(name) === 'cli';
  const withOnly = (option: string, needs: string): UsageError =>
    new UsageError(`${option} applies only with ${needs}`);
  if (!o.atLeastOnce) {
    if (given('commitEvery')) throw withOnly('--commit-every', '--at-least-once');
    if (given('commitIntervalMs')) throw withOnly('--commit-interval-ms', '--at-least-once');
  }
  if (o.exec === undefined) {
    for (const [key, option] of [
      ['maxAttempts', '--max-attempts'],
      ['retryDelayMs', '--retry-delay-ms'],
      ['onExhausted', '--on-exhausted'],
      ['deadLetter', '--dead-letter'],
    ] as const) {
      if (given(key)) throw withOnly(option, '--exec (what is printed on stdout is never retried)');
    }
  } else {
    if (o.exec.trim() === '') {
      throw new UsageError('--exec expects a shell command, got an empty one');
    }
    if (given('format') || given('json')) {
      throw new UsageError(
        `--${given('json') ? 'json' : 'format'} and --exec: the command gets each entry's bytes unchanged on its stdin, and nothing is printed; leave out the format`,
      );
    }
  }
  if (o.peek) {
    if (o.exec !== undefined) {
      throw new UsageError('--peek and --exec: --peek acknowledges nothing; leave out one of them');
    }
    if (o.atLeastOnce) {
      throw new UsageError(
        '--peek and --at-least-once: --peek acknowledges nothing; leave out one of them',
      );
    }
  }
  if (o.onExhausted === 'dead-letter' && o.deadLetter === undefined) {
    throw new UsageError(
      '--on-exhausted dead-letter needs --dead-letter URL, the queue to write to',
    );
  }
  if (
    o.deadLetter !== undefined &&
    o.onExhausted !== undefined &&
    o.onExhausted !== 'dead-letter'
  ) {
    throw new UsageError(
      `--dead-letter and --on-exhausted ${o.onExhausted}: entries that run out of attempts go to the dead-letter queue; leave out one of them`,
    );
  }
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

/**
 * Prints batches without acknowledging them, and without fencing the queue's
 * consumer; with `--limit`, at most that many entries.
 */
async function peek(
  queue: Queue,
  o: ConsumeOptions,
  signal: AbortSignal,
  count: (b: Pick<Batch, 'entries'>) => void,
): Promise<void> {
  let left = o.limit ?? Infinity;
  try {
    for await (const batch of queue.peek({
      ...(o.fromSequence !== undefined ? { fromSequence: o.fromSequence } : {}),
      follow: o.follow,
      pollIntervalMs: o.pollIntervalMs,
      signal,
    })) {
      const shown =
        batch.entries.length > left ? { ...batch, entries: batch.entries.slice(0, left) } : batch;
      await writeBytes(renderBatch(shown, o.format));
      count(shown);
      left -= shown.entries.length;
      if (left <= 0) break;
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

/** Whether two queue handles name the same queue: the same store and the same paths. */
function sameQueue(a: Queue, b: Queue): boolean {
  return (
    a.store.description === b.store.description &&
    a.manifestPath === b.manifestPath &&
    a.dataPathPrefix === b.dataPathPrefix
  );
}

/** What the command is doing, for the live status line and the summary. */
interface Progress {
  entries: number;
  batches: number;
  tally: EntryTally;
  /** The summary printed at the end; undefined prints none. */
  summary?: string;
  /** Print the summary even when stderr is not a terminal (`--exec`). */
  alwaysSummarize: boolean;
}

/** `spillway consume`. */
export function consumeCommand(): Command {
  return queueOptions(
    new Command('consume')
      .description(
        "write entries to stdout (or run --exec CMD for each), acknowledging what was written (this takes over as the queue's consumer, or the subscription's, and fences the previous one), or --peek without acknowledging",
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
      .option(
        '--limit <n>',
        'finish at most N entries (entries, not batches), then exit 0; the next consume starts at the entry after them',
        intOption('--limit', 1),
      )
      .option(
        '--exec <command>',
        `run "/bin/sh -c COMMAND" for each entry, in order, with the entry's bytes on its stdin; exit 0 commits the entry, ${EXIT_RETRY} (EX_TEMPFAIL) tries it again, 126, 127 or a signal stop consume (exit 1, entry not committed), any other status skips it with a warning`,
      )
      .option(
        '--max-attempts <n>',
        `with --exec: attempts per entry, the first included (default ${ENTRY_DEFAULTS.maxAttempts})`,
        intOption('--max-attempts', 1, MAX_COUNT),
      )
      .option(
        '--retry-delay-ms <ms>',
        `with --exec: wait before the second attempt, doubled after each (at most 60000) (default ${ENTRY_DEFAULTS.retryDelayMs})`,
        intOption('--retry-delay-ms', 0, MAX_TIMER_MS),
      )
      .addOption(
        new Option(
          '--on-exhausted <action>',
          'with --exec, an entry whose attempts ran out: stop (exit 1, the default), skip it, or dead-letter it (the default with --dead-letter)',
        ).choices(['stop', 'skip', 'dead-letter']),
      )
      .option(
        '--dead-letter <url>',
        'with --exec: write entries whose attempts ran out to the queue at this URL (default paths; it must be another queue), durably, before moving on',
      )
      .option(
        '--at-least-once',
        'record the position every --commit-every entries or --commit-interval-ms instead of after each entry; after a crash those entries come again. On a log queue, reads the subscription as a shared reader, fencing nobody',
      )
      .option(
        '--commit-every <n>',
        `with --at-least-once: entries finished between position records (default ${ENTRY_DEFAULTS.commitEvery})`,
        intOption('--commit-every', 1, MAX_COUNT),
      )
      .option(
        '--commit-interval-ms <ms>',
        `with --at-least-once: longest time between position records (default ${ENTRY_DEFAULTS.commitIntervalMs})`,
        intOption('--commit-interval-ms', 0, MAX_TIMER_MS),
      )
      .addOption(layoutOption())
      .option(
        '--group <name>',
        'join this consumer group of a sharded queue: read the vnodes assigned to this member (NDJSON adds vnode and key), acknowledge each batch once written, until Ctrl-C, then leave, releasing the vnodes',
        subscriptionName('--group'),
      )
      .option('--instance-id <id>', 'with --group: the name of this member (required)')
      .option(
        '--vnodes <list>',
        'with --group: read these vnodes only (static assignment), e.g. 0-7,12',
      )
      .option(
        '--lease-ttl-ms <ms>',
        "with --group: lease time-to-live; a dead member's vnodes move after about 1.3 times this (default 10000)",
        intOption('--lease-ttl-ms', 100, MAX_TIMER_MS),
      ),
  ).action(async (url: string, o: ConsumeOptions, command: Command) => {
    if (o.json) o.format = 'ndjson';
    if (o.group === undefined) {
      for (const [key, option] of [
        ['instanceId', '--instance-id'],
        ['vnodes', '--vnodes'],
        ['leaseTtlMs', '--lease-ttl-ms'],
      ] as const) {
        if (o[key] !== undefined) throw new UsageError(`${option} applies only with --group`);
      }
    } else {
      for (const [key, option] of [
        ['peek', '--peek'],
        ['subscription', '--subscription'],
        ['startAt', '--start-at'],
        ['fromSequence', '--from-sequence'],
        ['limit', '--limit'],
        ['exec', '--exec'],
        ['atLeastOnce', '--at-least-once'],
        ['layout', '--layout'],
      ] as const) {
        if (o[key] !== undefined) {
          throw new UsageError(
            `${option} and --group: a group reads its own subscription (named after it) in every vnode, from the oldest entry kept, until Ctrl-C; leave out ${option}`,
          );
        }
      }
      await consumeGroup(url, {
        dataPrefix: o.dataPrefix,
        group: o.group,
        format: o.format,
        pollIntervalMs: o.pollIntervalMs,
        ...(o.instanceId !== undefined ? { instanceId: o.instanceId } : {}),
        ...(o.vnodes !== undefined ? { vnodes: o.vnodes } : {}),
        ...(o.leaseTtlMs !== undefined ? { leaseTtlMs: o.leaseTtlMs } : {}),
      });
      return;
    }
    checkEntryOptions(o, command);
    const queue = openCliQueue(url, o);
    let dead: Queue | undefined;
    const progress: Progress = {
      entries: 0,
      batches: 0,
      tally: { finished: 0, skipped: 0 },
      alwaysSummarize: o.exec !== undefined,
    };
    const stop = new StopSignals(
      o.exec === undefined
        ? undefined
        : () =>
            process.stderr.write(
              '\nspillway: stopping: no new command is started; a command running finishes first, and its exit status counts (press Ctrl-C again to terminate it, its entry not committed)\n',
            ),
    );
    const rate = new RateMeter();
    // No live status under --exec: the commands' output shares the terminal.
    const status =
      o.exec === undefined
        ? new LiveStatus(() =>
            byEntry(o)
              ? `consume: ${progress.tally.finished} entries (${progress.tally.skipped} skipped), ${Math.round(rate.sample(progress.tally.finished))} entries/s`
              : `consume: ${progress.entries} entries in ${progress.batches} batches, ${Math.round(rate.sample(progress.entries))} entries/s`,
          )
        : undefined;
    const count = (b: Pick<Batch, 'entries'>): void => {
      progress.entries += b.entries.length;
      progress.batches++;
    };
    try {
      if (o.fromSequence !== undefined && o.startAt !== undefined) {
        throw new UsageError(
          '--from-sequence and --start-at both say where to start: give one of them',
        );
      }
      if (o.deadLetter !== undefined) {
        dead = openCliQueue(o.deadLetter, {
          manifestPath: QUEUE_DEFAULTS.manifestPath,
          dataPrefix: QUEUE_DEFAULTS.dataPathPrefix,
        });
        if (sameQueue(dead, queue)) {
          throw new UsageError(
            `--dead-letter ${redactUrl(o.deadLetter)} names the queue being consumed; dead letters must go to another queue`,
          );
        }
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
        try {
          await peek(queue, o, stop.signal, count);
        } finally {
          progress.summary = `consumed ${progress.entries} entries in ${progress.batches} batches (peek: nothing acknowledged)`;
        }
        return;
      }
      if (dead && o.deadLetter !== undefined) await checkQueueToWrite(dead, o.deadLetter);
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
        // At least once on the log: a shared reader, which fences nobody.
        ...(o.atLeastOnce && layout === 'log' ? { shared: true } : {}),
      });
      let failed = true;
      try {
        if (byEntry(o)) await entryByEntry(consumer, o, layout, dead, stop, progress);
        else await batchByBatch(consumer, o, stop.signal, count, progress);
        failed = false;
      } finally {
        // A failure already on its way wins over one of the close.
        await consumer.close().catch((e: unknown) => {
          if (!failed) throw e;
        });
      }
    } finally {
      stop.dispose();
      status?.stop();
      await queue.close();
      await dead?.close();
      if (progress.summary !== undefined && (progress.alwaysSummarize || process.stderr.isTTY)) {
        process.stderr.write(`${progress.summary}\n`);
      }
    }
  });
}

/**
 * The batch-by-batch loop (no entry option given): writes whole batches and
 * acknowledges them as {@link WrittenAcks} says.
 */
async function batchByBatch(
  consumer: Consumer,
  o: ConsumeOptions,
  signal: AbortSignal,
  count: (b: Pick<Batch, 'entries'>) => void,
  progress: Progress,
): Promise<void> {
  const acks = new WrittenAcks(consumer);
  try {
    while (!signal.aborted && !acks.readerGone) {
      const batch = await consumer.next();
      if (!batch) {
        await acks.ack();
        if (!o.follow) break;
        await sleep(o.pollIntervalMs, { signal }).catch(() => undefined);
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
    progress.summary = `consumed ${progress.entries} entries in ${progress.batches} batches`;
  }
}

/**
 * Entry by entry (`--limit`, `--exec`, `--at-least-once`): runs
 * `Consumer.process()`, sets the summary, and throws what ends the command
 * with exit 1 (an entry that cannot be printed, a command that cannot run,
 * an entry whose attempts ran out).
 */
async function entryByEntry(
  consumer: Consumer,
  o: ConsumeOptions,
  layout: Layout,
  dead: Queue | undefined,
  stop: StopSignals,
  progress: Progress,
): Promise<void> {
  const producer = dead ? new Producer({ queue: dead, flushIntervalMs: 0 }) : undefined;
  const run: EntryRun = {
    layout,
    follow: o.follow === true,
    pollIntervalMs: o.pollIntervalMs,
    format: o.format,
    atLeastOnce: o.atLeastOnce === true,
    commitEvery: o.commitEvery ?? ENTRY_DEFAULTS.commitEvery,
    commitIntervalMs: o.commitIntervalMs ?? ENTRY_DEFAULTS.commitIntervalMs,
    maxAttempts: o.maxAttempts ?? ENTRY_DEFAULTS.maxAttempts,
    retryDelayMs: o.retryDelayMs ?? ENTRY_DEFAULTS.retryDelayMs,
    onExhausted: o.onExhausted ?? (producer ? 'dead-letter' : 'stop'),
    signal: stop.signal,
    ...(o.limit !== undefined ? { limit: o.limit } : {}),
    ...(o.exec !== undefined ? { exec: o.exec } : {}),
    ...(producer ? { deadLetter: producer } : {}),
  };
  let outcome: Awaited<ReturnType<typeof consumeEntries>>;
  try {
    outcome = await consumeEntries(consumer, run, progress.tally);
  } finally {
    await producer?.close();
  }
  const { result, halt, quiet } = outcome;
  progress.summary = summaryLine(result, endText(result, run.limit, stop.received, quiet));
  const { sequence, index } = result.position;
  if (layout === 'v1' && index > 0) {
    process.stderr.write(
      `spillway: the v1 layout records whole batches only: the first ${plural(index, 'entry', 'entries')} of batch ${sequence}, finished now, will be delivered again to the next consumer\n`,
    );
  }
  if (result.reason === 'stopped' && halt) throw halt;
  if (result.reason === 'exhausted') {
    throw new CliError(
      `entry ${sequence}:${index}: the command exited with status ${EXIT_RETRY} (EX_TEMPFAIL) on attempt ${run.maxAttempts} of ${run.maxAttempts}, the last; it was not committed, and consume stopped there: give --on-exhausted skip, or --dead-letter URL, to move past such entries`,
    );
  }
}

/**
 * `spillway consume` entry by entry, through `Consumer.process()`: what
 * `--limit`, `--exec` and `--at-least-once` run on. Each entry is printed on
 * stdout (or given to the command of `--exec`) and only then committed.
 */
import type {
  Consumer,
  ProcessEntry,
  ProcessHandler,
  ProcessOptions,
  ProcessResult,
} from '../consumer/consumer.ts';
import type { Producer } from '../producer/producer.ts';
import type { Layout } from '../queue/queue.ts';
import { CliError, isBrokenPipe, plural } from './common.ts';
import { renderEntry, writeBytes, type OutputFormat } from './entry-output.ts';
import { EntryCommand, verdictOf } from './exec-entry.ts';
import { PipeReaders } from './pipe-reader.ts';

/** How entries are consumed, as the command line asked. */
export interface EntryRun {
  layout: Layout;
  /** Entries to finish before stopping; undefined for no limit. */
  limit?: number;
  /** Wait for more entries when caught up (`--follow`). */
  follow: boolean;
  pollIntervalMs: number;
  /** Output format when printing on stdout (without `exec`). */
  format: OutputFormat;
  /** The shell command run for each entry, instead of printing it. */
  exec?: string;
  atLeastOnce: boolean;
  commitEvery: number;
  commitIntervalMs: number;
  maxAttempts: number;
  retryDelayMs: number;
  onExhausted: 'stop' | 'skip' | 'dead-letter';
  deadLetter?: Producer;
  /** Ends processing gracefully (the first Ctrl-C). */
  signal: AbortSignal;
}

/** What a run did so far, for the live status line. */
export interface EntryTally {
  finished: number;
  skipped: number;
}

/** How long an `'unknown'` answer about stdout's reader is reused, in ms (the scan is costly). */
const UNKNOWN_READER_RECHECK_MS = 1000;

/**
 * Consumes entries as `run` says and returns what `process()` returned,
 * together with the reason it stopped early, if any: `halt` is an error to
 * report with exit 1 (a line break in `--format lines`, a command that
 * could not run), `quiet` a reason to end with exit 0 (the reader of stdout
 * went away).
 */
export async function consumeEntries(
  consumer: Consumer,
  run: EntryRun,
  tally: EntryTally,
): Promise<{ result: ProcessResult; halt?: Error; quiet?: string }> {
  const stopped: { halt?: Error; quiet?: string } = {};
  const handler = run.exec
    ? execHandler(new EntryCommand(run.exec), run, tally, stopped)
    : printHandler(run.format, tally, stopped);
  const options: ProcessOptions = {
    wait: run.follow,
    signal: run.signal,
    pollIntervalMs: run.pollIntervalMs,
    retry: { delayMs: run.retryDelayMs, maxAttempts: run.maxAttempts, backoff: 'exponential' },
    onExhausted: run.onExhausted,
    delivery: run.atLeastOnce ? 'at-least-once' : 'exactly-once',
    ...(run.limit !== undefined ? { limit: run.limit } : {}),
    ...(run.deadLetter ? { deadLetter: run.deadLetter } : {}),
    ...(run.atLeastOnce
      ? { commitEveryEntries: run.commitEvery, commitIntervalMs: run.commitIntervalMs }
      : {}),
  };
  const result = await consumer.process(handler, options);
  return { result, ...stopped };
}

/**
 * Prints each entry on stdout; commits it once written and, when stdout is a
 * pipe, once a reader still holds the pipe. Never asks for a retry: an entry
 * that cannot be written stops the run.
 */
function printHandler(
  format: OutputFormat,
  tally: EntryTally,
  stopped: { halt?: Error; quiet?: string },
): ProcessHandler {
  const readers = new PipeReaders(1);
  let unknownUntil = 0;
  return async (entry) => {
    let bytes: Buffer;
    try {
      bytes = renderEntry(
        {
          sequence: entry.sequence,
          index: entry.index,
          data: entry.data,
          ingestionTimeMs: entry.ingestionTimeMs,
        },
        format,
      );
    } catch (e) {
      stopped.halt = e as Error;
      return 'stop';
    }
    try {
      await writeBytes(bytes);
    } catch (e) {
      if (!isBrokenPipe(e)) stopped.halt = e as Error;
      else stopped.quiet = 'the reader of stdout went away';
      return 'stop';
    }
    // The processor records what is committed: an entry is committed only while a reader
    // still holds the pipe, so a reader that went away (`| head`) leaves what it did not
    // take in the queue.
    if (performance.now() >= unknownUntil) {
      const status = await readers.status();
      if (status === 'gone') {
        stopped.quiet = 'the reader of stdout went away';
        return 'stop';
      }
      if (status === 'unknown') unknownUntil = performance.now() + UNKNOWN_READER_RECHECK_MS;
    }
    tally.finished++;
    return 'commit';
  };
}

/** Runs the command for each entry and reads its exit status (see {@link verdictOf}). */
function execHandler(
  command: EntryCommand,
  run: EntryRun,
  tally: EntryTally,
  stopped: { halt?: Error; quiet?: string },
): ProcessHandler {
  return async (entry: ProcessEntry) => {
    const verdict = verdictOf(await command.run(entry));
    const at = `entry ${entry.sequence}:${entry.index}`;
    switch (verdict.kind) {
      case 'commit':
        tally.finished++;
        return 'commit';
      case 'skip':
        warn(`${at} skipped: ${verdict.why}`);
        tally.finished++;
        tally.skipped++;
        return 'skip';
      case 'halt':
        stopped.halt = new CliError(
          `${at}: ${verdict.why}; it was not committed, and consume stopped there (fix the command and run consume again)`,
        );
        return 'stop';
      case 'retry': {
        if (entry.attempt < run.maxAttempts) {
          warn(
            `${at}: ${verdict.why} on attempt ${entry.attempt} of ${run.maxAttempts}; trying it again`,
          );
        } else if (run.onExhausted !== 'stop') {
          warn(
            `${at}: ${verdict.why} on attempt ${entry.attempt} of ${run.maxAttempts}, the last; ${run.onExhausted === 'skip' ? 'skipped' : 'written to the dead-letter queue'}`,
          );
          tally.finished++;
          if (run.onExhausted === 'skip') tally.skipped++;
        }
        // Thrown rather than returned, so that a dead letter records why.
        throw new Error(verdict.why);
      }
    }
  };
}

function warn(line: string): void {
  process.stderr.write(`spillway: ${line}\n`);
}

/**
 * Why a run stopped, in a few words, for the summary: `limit` as given,
 * the signal that stopped it, and the quiet reason of {@link consumeEntries}.
 */
export function endText(
  result: ProcessResult,
  limit: number | undefined,
  signal: NodeJS.Signals | undefined,
  quiet: string | undefined,
): string {
  switch (result.reason) {
    case 'limit':
      return `--limit ${limit ?? ''} reached`;
    case 'end':
      return 'caught up';
    case 'aborted':
      return `stopped by ${signal ?? 'a stop'}`;
    case 'exhausted':
      return `stopped: entry ${result.position.sequence}:${result.position.index} ran out of attempts (below)`;
    case 'stopped':
      return quiet ? `stopped: ${quiet}` : 'stopped at an error (below)';
  }
}

/**
 * The summary line: entries finished (committed, skipped, dead-lettered),
 * attempts retried, entries that came again after an earlier reader
 * recorded them (at least once), why the run stopped, and where the
 * subscription resumes.
 */
export function summaryLine(result: ProcessResult, why: string): string {
  const n = (v: number): string => v.toLocaleString('en-US');
  const finished = result.committed + result.skipped + result.deadLettered;
  const again = result.redelivered > 0 ? `; ${n(result.redelivered)} redelivered` : '';
  return `consumed ${plural(finished, 'entry', 'entries')} (${n(result.committed)} committed, ${n(result.skipped)} skipped, ${n(result.deadLettered)} dead-lettered; ${plural(result.retried, 'attempt')} retried${again}), ${why}; next: sequence ${result.position.sequence}, entry ${result.position.index}`;
}

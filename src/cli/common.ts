import { Option, type Command } from 'commander';
import {
  InvalidArgumentError,
  NotFoundError,
  QueueNotFoundError,
  SpillwayError,
} from '../errors.ts';
import { isSubscriptionName } from '../internal.ts';
import type { StartAt } from '../queue/log-queue.ts';
import type { ManifestSnapshot } from '../queue/manifest-queue.ts';
import { OWNER_MARKER, Queue, QUEUE_DEFAULTS, type Layout } from '../queue/queue.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { openStore } from '../store/open-store.ts';
import { redactUrl, scrubSecrets } from '../redact.ts';

/** Options every command that opens a queue accepts. */
export interface QueueOptions {
  manifestPath: string;
  dataPrefix: string;
  /** The layout a new queue gets (commands that may create one). */
  layout?: Layout;
  verbose?: boolean;
  json?: boolean;
}

/** Adds `--manifest-path`, `--data-prefix` and `--verbose` to a command. */
export function queueOptions(command: Command): Command {
  return command
    .option(
      '--manifest-path <key>',
      'key of the queue manifest (v1 layout)',
      QUEUE_DEFAULTS.manifestPath,
    )
    .option(
      '--data-prefix <prefix>',
      'folder of the batch objects (and, log layout, of the whole queue)',
      QUEUE_DEFAULTS.dataPathPrefix,
    )
    .option('--verbose', 'print stack traces of errors');
}

/** `--layout`, for a command that may create a queue. */
export function layoutOption(): Option {
  return new Option(
    '--layout <layout>',
    'layout of a new queue: log (named subscriptions, retention) or v1 (OpenData Buffer v1, shared with the Rust implementation); an existing queue keeps its own, and naming the other is refused (default: log)',
  ).choices(['log', 'v1']);
}

/** Adds `--json` to a read command. */
export function jsonOption(command: Command): Command {
  return command.option('--json', 'print JSON instead of text');
}

/** Opens the store of a URL given on the command line; a bad URL is a usage error. */
export function openCliStore(url: string): ObjectStore {
  return openStore(url);
}

/** The queue a command names: its URL and the path options; close it when done. */
export function openCliQueue(url: string, o: QueueOptions): Queue {
  return Queue.open({
    store: url,
    manifestPath: o.manifestPath,
    dataPathPrefix: o.dataPrefix,
    ...(o.layout ? { layout: o.layout } : {}),
  });
}

/**
 * The layout of the queue a command names, which must exist (a v1 manifest,
 * or a log descriptor); reads only.
 *
 * @throws {CliError} naming both places looked at when there is no queue.
 */
export async function existingLayout(queue: Queue, url: string): Promise<Layout> {
  const layout = await queue.layout();
  if (layout === 'v1') {
    try {
      await queue.store.head(queue.manifestPath);
    } catch (e) {
      if (e instanceof NotFoundError) throw noQueue(queue, url);
      throw e;
    }
  } else if (!(await queue.logQueue().readDescriptor())) {
    throw noQueue(queue, url);
  }
  return layout;
}

/** Reads the v1 manifest; a missing one is an error that names where it was looked for. */
export async function readExistingManifest(queue: Queue, url: string): Promise<ManifestSnapshot> {
  try {
    return await queue.readExistingManifest();
  } catch (e) {
    if (e instanceof QueueNotFoundError) throw noQueue(queue, url);
    throw e;
  }
}

/** The one-line error for a queue that is not where the command looked, in either layout. */
export function noQueue(queue: Queue, url: string): CliError {
  return new CliError(
    `no queue in ${redactUrl(url)}: no manifest at "${queue.manifestPath}" (v1 layout) and no log at "${queue.logQueue().descriptorKey}" (log layout): nothing was ever produced there, or --manifest-path / --data-prefix / the URL is wrong`,
  );
}

/**
 * Refuses, with exit 1, what only the log layout can do on a v1 queue, and
 * a queue that does not exist.
 */
export async function requireLog(queue: Queue, url: string, what: string): Promise<void> {
  if ((await existingLayout(queue, url)) === 'v1') throw v1Cannot(queue, url, what);
}

/** The one-line error for what a v1 queue cannot do; `hint` replaces the default advice. */
export function v1Cannot(queue: Queue, url: string, what: string, hint?: string): CliError {
  return new CliError(
    `the queue at "${queue.manifestPath}" in ${redactUrl(url)} has the v1 layout, which cannot ${what}: it has one consumer and no retention (${hint ?? 'new queues get the log layout; v1 is for sharing a queue with the Rust implementation'})`,
  );
}

/**
 * Checks, before a command that may create the queue reads or writes
 * anything, that `--layout` does not name another layout than the queue's,
 * and that a log queue about to be created does not land in the data prefix
 * of a v1 queue (whose marker names another manifest path: a typo in
 * `--manifest-path` must not start a second queue inside the first).
 *
 * @throws {UsageError} for the wrong `--layout`.
 * @throws {InvalidArgumentError} when the data prefix belongs to another manifest.
 */
export async function checkQueueToWrite(queue: Queue, url: string, asked?: Layout): Promise<void> {
  const [manifest, log] = await Promise.all([
    queue.store.head(queue.manifestPath).then(
      () => true,
      (e: unknown) => {
        if (e instanceof NotFoundError) return false;
        throw e;
      },
    ),
    queue.logQueue().readDescriptor(),
  ]);
  const found: Layout | undefined = manifest ? 'v1' : log ? 'log' : undefined;
  if (found === undefined && (asked ?? 'log') === 'log') {
    // Only a v1 queue marks its data prefix: a marker naming another manifest is refused
    // by checkOwnership; one naming this manifest, which is missing, is a v1 queue that
    // lost its manifest, and a log must not start inside it either.
    await queue.checkOwnership();
    const marker = `${queue.dataPathPrefix}/${OWNER_MARKER}`;
    const marked = await queue.store.head(marker).then(
      () => true,
      (e: unknown) => {
        if (e instanceof NotFoundError) return false;
        throw e;
      },
    );
    // A v1 queue being created writes its marker just before its manifest: wait for it.
    if (marked && asked === undefined && (await queue.manifestAppears())) return;
    if (marked) {
      throw new UsageError(
        `the data prefix "${queue.dataPathPrefix}" in ${redactUrl(url)} belongs to a v1 queue (its marker "${marker}" names the manifest "${queue.manifestPath}"), but there is no manifest there: a log queue is not started inside it; check the URL and the paths, or give --layout v1 to go on with the v1 queue`,
      );
    }
  }
  if (asked !== undefined && found !== undefined && found !== asked) {
    throw new UsageError(
      `--layout ${asked}: the queue in ${redactUrl(url)} has the ${found} layout already (${found === 'v1' ? `a manifest at "${queue.manifestPath}"` : `a log at "${queue.logQueue().descriptorKey}"`}), and a queue keeps its layout: leave out --layout, or give --layout ${found}`,
    );
  }
}

/** Parses `--subscription`: a usage error naming the value unless it is a valid name. */
export function subscriptionName(option = '--subscription'): (value: string) => string {
  return (value: string) => {
    if (!isSubscriptionName(value)) {
      throw new UsageError(
        `${option} expects 1-100 letters, digits, ".", "_" or "-", not starting with ".", got ${JSON.stringify(value)}`,
      );
    }
    return value;
  };
}

/** What `--start-at` accepts, for help texts and errors. */
export const START_AT_FORMS = 'oldest, latest, seq:N or time:ISO-8601-or-ms';

/**
 * Parses `--start-at`: `oldest`, `latest`, `seq:N` (decimal digits) or
 * `time:T`, with T milliseconds since the Unix epoch (decimal digits) or an
 * ISO 8601 date (`2024-05-01`, midnight UTC) or date and time with a zone
 * (`2024-05-01T12:00:00Z`, `...+02:00`); anything else is a usage error
 * naming the value.
 */
export function parseStartAt(value: string, option = '--start-at'): StartAt {
  const bad = (why: string): UsageError =>
    new UsageError(`${option} expects ${START_AT_FORMS}${why}, got ${JSON.stringify(value)}`);
  if (value === 'oldest' || value === 'latest') return value;
  if (value.startsWith('seq:')) {
    const digits = value.slice(4);
    const n = /^[0-9]+$/.test(digits) ? Number(digits) : NaN;
    if (!Number.isSafeInteger(n)) throw bad(' (N in decimal digits)');
    return { sequence: n };
  }
  if (value.startsWith('time:')) {
    const t = value.slice(5);
    let ms = NaN;
    if (/^[0-9]+$/.test(t)) ms = Number(t);
    else if (
      /^\d{4}-\d{2}-\d{2}$/.test(t) ||
      /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/.test(t)
    ) {
      // Date.parse rolls 2024-02-30 over to March: a day the calendar lacks is refused.
      const [y, m, d] = t.slice(0, 10).split('-').map(Number) as [number, number, number];
      const day = new Date(Date.UTC(y, m - 1, d));
      if (day.getUTCFullYear() === y && day.getUTCMonth() === m - 1 && day.getUTCDate() === d) {
        ms = Date.parse(t);
      }
    }
    if (!Number.isSafeInteger(ms) || ms < 0) {
      throw bad(
        ' (T in ms since the Unix epoch, or an ISO 8601 date, or date and time with a zone such as 2024-05-01T12:00:00Z)',
      );
    }
    return { timeMs: ms };
  }
  throw bad('');
}

/** A start position as the command line writes it. */
export function formatStartAt(s: StartAt): string {
  if (typeof s === 'string') return s;
  return 'sequence' in s ? `seq:${s.sequence}` : `time:${new Date(s.timeMs).toISOString()}`;
}

/** A runtime failure of a command, reported in one line with exit code 1. */
export class CliError extends SpillwayError {
  constructor(message: string) {
    super(message, { code: 'CLI' });
    this.name = 'CliError';
  }
}

/** A misuse of the command line, reported with exit code 2. */
export class UsageError extends InvalidArgumentError {}

/** Exit code of an error: 2 for usage, 1 for everything else. */
export function exitCodeOf(e: unknown): number {
  return e instanceof InvalidArgumentError ? 2 : 1;
}

/** One line describing an error, without credentials or stack unless `verbose`. */
export function describeError(e: unknown, verbose: boolean): string {
  if (verbose && e instanceof Error && e.stack) return scrubSecrets(e.stack);
  const message = e instanceof Error ? e.message : String(e);
  const line = message.split('\n')[0] ?? '';
  return scrubSecrets(
    e instanceof SpillwayError && !(e instanceof CliError) ? `${e.name}: ${line}` : line,
  );
}

/**
 * Parses an integer option written in decimal digits only: an empty value
 * (an unset shell variable), a sign, `1e3`, `0x10` or `1.0` is a usage error
 * naming the option, never a silent 0.
 */
export function intOption(
  name: string,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): (value: string) => number {
  return (value: string) => {
    const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new UsageError(
        `${name} expects an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`} written in decimal digits, got ${JSON.stringify(value)}`,
      );
    }
    return n;
  };
}

/** Longest delay a timer can wait, in ms (about 24.8 days); longer ones fire at once in Node. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * Writes to stdout and resolves once the bytes are handed to the OS, so a
 * caller can acknowledge only what was written; rejects on a closed pipe.
 */
export function writeOut(text: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    process.stdout.write(text, (e) => (e ? reject(e) : resolve()));
  });
}

/** Whether an error is a closed output pipe (`spillway ... | head`): not a failure. */
export function isBrokenPipe(e: unknown): boolean {
  return (e as { code?: string } | undefined)?.code === 'EPIPE';
}

/** A count with its noun, pluralized: "1 batch", "2 batches". */
export function plural(n: number, noun: string, nouns = `${noun}s`): string {
  return `${n.toLocaleString('en-US')} ${n === 1 ? noun : nouns}`;
}

/** Prints `value` as indented JSON. */
export function printJson(value: unknown): Promise<void> {
  return writeOut(`${JSON.stringify(value, null, 2)}\n`);
}

/** Bytes as a short human figure: 1.5 KiB, 12 MiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

/** A duration in ms as a short human figure: 850 ms, 12.3 s, 4m05s, 3h12m. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Text is printable UTF-8 without control characters other than tab. */
export function asText(bytes: Uint8Array): string | undefined {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u0008\u000b-\u001f\u007f]/.test(text) ? undefined : text;
}

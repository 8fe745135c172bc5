import type { Command } from 'commander';
import { InvalidArgumentError, QueueNotFoundError, SpillwayError } from '../errors.ts';
import type { ManifestSnapshot } from '../queue/manifest-queue.ts';
import { Queue, QUEUE_DEFAULTS } from '../queue/queue.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { openStore } from '../store/open-store.ts';
import { redactUrl, scrubSecrets } from '../redact.ts';

/** Options every command that opens a queue accepts. */
export interface QueueOptions {
  manifestPath: string;
  dataPrefix: string;
  verbose?: boolean;
  json?: boolean;
}

/** Adds `--manifest-path`, `--data-prefix` and `--verbose` to a command. */
export function queueOptions(command: Command): Command {
  return command
    .option('--manifest-path <key>', 'key of the queue manifest', QUEUE_DEFAULTS.manifestPath)
    .option('--data-prefix <prefix>', 'folder of the batch objects', QUEUE_DEFAULTS.dataPathPrefix)
    .option('--verbose', 'print stack traces of errors');
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
  return Queue.open({ store: url, manifestPath: o.manifestPath, dataPathPrefix: o.dataPrefix });
}

/** Reads the manifest; a missing one is an error that names where it was looked for. */
export async function readExistingManifest(queue: Queue, url: string): Promise<ManifestSnapshot> {
  try {
    return await queue.readExistingManifest();
  } catch (e) {
    if (e instanceof QueueNotFoundError) throw noManifest(queue, url);
    throw e;
  }
}

/** The one-line error for a queue whose manifest is not where the command looked. */
export function noManifest(queue: Queue, url: string): CliError {
  return new CliError(
    `no manifest at "${queue.manifestPath}" in ${redactUrl(url)}: nothing was ever produced there, or --manifest-path / the URL is wrong`,
  );
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

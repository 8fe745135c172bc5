import { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import type { Logger, LogFields } from '../logger.ts';
import { redactUrl, scrubSecrets } from '../redact.ts';
import { APP_DEFAULTS } from '../server/app.ts';
import type { DashboardOptions } from '../server/dashboard-routes.ts';
import { S3_STANDARD_PRICES } from '../server/dashboard/sampler.ts';
import { SERVER_DEFAULTS, startServer } from '../server/server.ts';
import { intOption, MAX_TIMER_MS, UsageError, writeOut } from './common.ts';
import { StopSignals } from './stop-signals.ts';

interface ServeOptions extends CostOptions {
  port: number;
  host: string;
  tokenFile?: string;
  createQueues?: boolean;
  maxBodyBytes: number;
  flushIntervalMs: number;
  insecureNoAuth?: boolean;
  shutdownTimeoutMs: number;
  verbose?: boolean;
}

/** The options of the request cap and the dashboard's prices, shared by `serve` and `demo --serve`. */
export interface CostOptions {
  maxRequestsPerSecond?: number;
  pricePer1kPuts: number;
  pricePer1kGets: number;
  pricePerGbMonth: number;
}

/** The environment variable holding a token (one). */
export const TOKEN_ENV = 'SPILLWAY_TOKEN';

/** `spillway serve`. */
export function serveCommand(): Command {
  const command = new Command('serve')
    .description(
      'serve the HTTP API (ingest, subscriptions, stats, /metrics) over the queues of a store; a queue name is a prefix of the store',
    )
    .argument('<url>', 'store URL')
    .option('--port <n>', 'TCP port (0: any free port)', intOption('--port', 0, 65_535), 8080)
    .option('--host <address>', 'address to listen on', SERVER_DEFAULTS.host)
    .option(
      '--token-file <path>',
      `file of bearer tokens, one per line (blank lines and # comments skipped); also ${TOKEN_ENV}`,
    )
    .option('--create-queues', 'create a queue (log layout) on its first write; else 404')
    .option(
      '--max-body-bytes <n>',
      'largest request body; more is answered 413',
      intOption('--max-body-bytes', 1, 1024 ** 3),
      APP_DEFAULTS.maxBodyBytes,
    )
    .option(
      '--flush-interval-ms <ms>',
      "each queue's producer flush interval (0: group commit)",
      intOption('--flush-interval-ms', 0, MAX_TIMER_MS),
      0,
    )
    .option(
      '--shutdown-timeout-ms <ms>',
      'longest graceful shutdown; then what is not durable is abandoned and the exit code is 1',
      intOption('--shutdown-timeout-ms', 0, MAX_TIMER_MS),
      30_000,
    );
  return costOptions(command)
    .option(
      '--insecure-no-auth',
      'listen on an address other than loopback without any token (anyone who reaches it can read and write every queue)',
    )
    .option('--verbose', 'print stack traces of errors, and debug lines')
    .action(async (url: string, o: ServeOptions) => {
      const tokens = await readTokens(o.tokenFile);
      const logger = stderrLogger(o.verbose === true);
      const server = await startServer({
        store: url,
        storeOptions: { logger },
        port: o.port,
        host: o.host,
        tokens,
        createQueues: o.createQueues === true,
        maxBodyBytes: o.maxBodyBytes,
        producer: { flushIntervalMs: o.flushIntervalMs },
        ...costSettings(o),
        insecureNoAuth: o.insecureNoAuth === true,
        logger,
      });
      const stop = new StopSignals((signal) =>
        process.stderr.write(
          `\nspillway: ${signal}: stopping: no new requests; making every accepted entry durable (press Ctrl-C again to abandon it)\n`,
        ),
      );
      try {
        await writeOut(
          `spillway: serving ${redactUrl(url)} on ${server.url} (${tokens.length > 0 ? `bearer token auth, ${tokens.length} token${tokens.length === 1 ? '' : 's'}` : 'no auth'}${o.createQueues ? ', creating queues on first write' : ''})\n`,
        );
        await writeOut(
          `spillway: dashboard at ${server.url}/${tokens.length > 0 ? ' (log in with a token: open /?token=<token> once, or the form)' : ''}\n`,
        );
        await new Promise<void>((resolve) =>
          stop.signal.addEventListener('abort', () => resolve(), { once: true }),
        );
        await server.close({ timeoutMs: o.shutdownTimeoutMs });
        process.stderr.write('spillway: stopped; everything accepted is durable\n');
      } finally {
        stop.dispose();
      }
    });
}

/** Adds `--max-requests-per-second` and the `--price-*` options to `command`. */
export function costOptions(command: Command): Command {
  return command
    .option(
      '--max-requests-per-second <n>',
      'cap on store requests per second, for every queue and role of the process together (a token bucket; calls wait their turn); default: no cap',
      intOption('--max-requests-per-second', 1, 1_000_000),
    )
    .option(
      '--price-per-1k-puts <usd>',
      "dashboard cost estimate: USD per 1,000 PUT and LIST requests (S3 Standard's by default)",
      priceOption('--price-per-1k-puts'),
      S3_STANDARD_PRICES.perThousandPuts,
    )
    .option(
      '--price-per-1k-gets <usd>',
      'dashboard cost estimate: USD per 1,000 GET and HEAD requests',
      priceOption('--price-per-1k-gets'),
      S3_STANDARD_PRICES.perThousandGets,
    )
    .option(
      '--price-per-gb-month <usd>',
      'dashboard cost estimate: USD per GB stored for a month',
      priceOption('--price-per-gb-month'),
      S3_STANDARD_PRICES.perGbMonth,
    );
}

/** What {@link costOptions} set, as server options. */
export function costSettings(o: CostOptions): {
  maxRequestsPerSecond?: number;
  dashboard: DashboardOptions;
} {
  return {
    ...(o.maxRequestsPerSecond === undefined
      ? {}
      : { maxRequestsPerSecond: o.maxRequestsPerSecond }),
    dashboard: {
      prices: {
        perThousandPuts: o.pricePer1kPuts,
        perThousandGets: o.pricePer1kGets,
        perGbMonth: o.pricePerGbMonth,
      },
    },
  };
}

/** Parses a price: a decimal number >= 0 (`0.005`), else a usage error naming the option. */
function priceOption(name: string): (value: string) => number {
  return (value: string) => {
    const n = /^[0-9]+(\.[0-9]+)?$/.test(value) ? Number(value) : NaN;
    if (!Number.isFinite(n)) {
      throw new UsageError(
        `${name} expects a price in USD written as a decimal number (e.g. 0.005), got ${JSON.stringify(value)}`,
      );
    }
    return n;
  };
}

/**
 * The tokens of `--token-file` (one per line; blank lines and lines
 * starting with `#` skipped) and of `SPILLWAY_TOKEN`. Never printed.
 *
 * @throws {UsageError} for a file that cannot be read or holds no token.
 */
async function readTokens(file: string | undefined): Promise<string[]> {
  const tokens: string[] = [];
  if (file !== undefined) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new UsageError(
        `--token-file ${JSON.stringify(file)} cannot be read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      );
    }
    for (const line of text.split(/\r?\n/)) {
      const t = line.trim();
      if (t !== '' && !t.startsWith('#')) tokens.push(t);
    }
    if (tokens.length === 0) {
      throw new UsageError(`--token-file ${JSON.stringify(file)} holds no token`);
    }
  }
  const env = process.env[TOKEN_ENV]?.trim();
  if (env) tokens.push(env);
  for (const [i, t] of tokens.entries()) {
    if (!/^[\x21-\x7e]{16,4096}$/.test(t)) {
      throw new UsageError(
        `token ${i + 1} (${env && i === tokens.length - 1 ? TOKEN_ENV : 'of --token-file'}) must be 16-4096 printable ASCII characters without spaces; its value is not shown`,
      );
    }
  }
  return tokens;
}

/** Warnings and errors as one line each on stderr (debug lines too when verbose), without secrets. */
function stderrLogger(verbose: boolean): Logger {
  const line = (level: string, fields: LogFields, message: string): void => {
    let extra = '';
    try {
      extra = Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : '';
    } catch {
      extra = '';
    }
    process.stderr.write(`spillway: ${level}: ${scrubSecrets(`${message}${extra}`)}\n`);
  };
  return {
    debug: (fields, message) => {
      if (verbose) line('debug', fields, message);
    },
    warn: (fields, message) => line('warn', fields, message),
    error: (fields, message) => line('error', fields, message),
  };
}

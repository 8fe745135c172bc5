/**
 * The dashboard: the page at `/`, its script and stylesheet (served from
 * the package, nothing from elsewhere), and its data: `GET
 * /v1/dashboard/data` (JSON) and `GET /v1/dashboard/events` (server-sent
 * events: a `snapshot` with the settings and the history, then a `sample`
 * every second). Authenticated like every route; a browser logs in with
 * `?token=` or the form and then sends the session cookie.
 */
import type { Context, Hono } from 'hono';
import { InvalidArgumentError } from '../errors.ts';
import type { AppContext } from './app-context.ts';
import { DASHBOARD_HTML, DASHBOARD_SCRIPT_PATH, DASHBOARD_STYLE_PATH } from './dashboard/page.ts';
import { DashboardSampler, S3_STANDARD_PRICES, type StorePrices } from './dashboard/sampler.ts';
import { DASHBOARD_JS } from './dashboard/script.ts';
import { DASHBOARD_CSS } from './dashboard/style.ts';
import { eventStream, type ServerSentEvent } from './event-stream.ts';
import { checkQueueName } from './queue-name.ts';

/** Options of the dashboard (`AppOptions.dashboard`). */
export interface DashboardOptions {
  /** Store prices of the cost estimate, in USD; fields not given keep S3 Standard's. @default S3_STANDARD_PRICES */
  prices?: Partial<StorePrices>;
  /** Queues always shown, besides those in the store when the page first opens and those the server opens later. @default none */
  queues?: readonly string[];
  /** Between two samples (one point of every chart), in ms. @default 1000 */
  sampleIntervalMs?: number;
  /** Between two reads of each queue's stats while a page is open, in ms. @default 5000 */
  statsIntervalMs?: number;
  /** Samples kept for a page that opens later. @default 300 */
  historySize?: number;
}

/** Defaults of {@link DashboardOptions}. */
export const DASHBOARD_DEFAULTS = Object.freeze({
  prices: S3_STANDARD_PRICES,
  sampleIntervalMs: 1000,
  statsIntervalMs: 5000,
  historySize: 300,
});

/**
 * The dashboard's sampler, from checked options; it samples only once the
 * dashboard is first asked for.
 *
 * @throws {InvalidArgumentError} for bad options.
 */
export function createDashboardSampler(
  ctx: Pick<AppContext, 'metrics' | 'queues' | 'clock' | 'logger'>,
  options: DashboardOptions,
  maxRequestsPerSecond: number | undefined,
): DashboardSampler {
  if (options === null || typeof options !== 'object') {
    throw new InvalidArgumentError(
      `createApp: dashboard must be an options object, got ${options === null ? 'null' : typeof options}`,
    );
  }
  const known = ['prices', 'queues', 'sampleIntervalMs', 'statsIntervalMs', 'historySize'];
  for (const k of Object.keys(options)) {
    if (!known.includes(k)) {
      throw new InvalidArgumentError(
        `createApp: unknown dashboard option "${k}"; expected one of ${known.join(', ')}`,
      );
    }
  }
  const prices: StorePrices = { ...S3_STANDARD_PRICES, ...(options.prices ?? {}) };
  for (const [k, v] of Object.entries(prices)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new InvalidArgumentError(
        `createApp: dashboard.prices.${k} must be a number >= 0 (USD), got ${String(v)}`,
      );
    }
  }
  const int = (name: string, v: number | undefined, fallback: number, min: number): number => {
    const value = v ?? fallback;
    if (!Number.isSafeInteger(value) || value < min || value > 2_147_483_647) {
      throw new InvalidArgumentError(
        `createApp: dashboard.${name} must be an integer >= ${min}, got ${String(v)}`,
      );
    }
    return value;
  };
  const queues = [...(options.queues ?? [])];
  for (const q of queues) {
    try {
      checkQueueName(q);
    } catch (e) {
      throw new InvalidArgumentError(`createApp: dashboard.queues: ${(e as Error).message}`);
    }
  }
  return new DashboardSampler({
    ...ctx,
    watch: queues,
    prices,
    sampleIntervalMs: int(
      'sampleIntervalMs',
      options.sampleIntervalMs,
      DASHBOARD_DEFAULTS.sampleIntervalMs,
      10,
    ),
    statsIntervalMs: int(
      'statsIntervalMs',
      options.statsIntervalMs,
      DASHBOARD_DEFAULTS.statsIntervalMs,
      100,
    ),
    historySize: int('historySize', options.historySize, DASHBOARD_DEFAULTS.historySize, 1),
    maxRequestsPerSecond,
  });
}

/**
 * Only this server's own script and stylesheet, no inline code, no frames,
 * no other origin: the page works entirely from the package.
 */
const PAGE_HEADERS = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-cache',
};

/** Registers the dashboard's routes on `app`. */
export function dashboardRoutes(app: Hono, ctx: AppContext): void {
  const asset =
    (body: string, type: string) =>
    (c: Context): Response =>
      c.body(body, 200, { ...PAGE_HEADERS, 'Content-Type': type });
  app.get('/', asset(DASHBOARD_HTML, 'text/html; charset=utf-8'));
  // Browsers ask for it on every page, the login form's included: nothing, without authentication.
  app.get('/favicon.ico', (c) => c.body(null, 204, { 'Cache-Control': 'max-age=86400' }));
  app.get(DASHBOARD_SCRIPT_PATH, asset(DASHBOARD_JS, 'text/javascript; charset=utf-8'));
  app.get(DASHBOARD_STYLE_PATH, asset(DASHBOARD_CSS, 'text/css; charset=utf-8'));

  app.get('/v1/dashboard/data', (c) => c.json(ctx.dashboard.snapshot()));

  app.get('/v1/dashboard/events', () => {
    const sampler = ctx.dashboard;
    let opened = false;
    return eventStream({
      signal: ctx.closing,
      heartbeatMs: ctx.settings.sseHeartbeatMs,
      retryMs: 2000,
      clock: ctx.clock,
      next: async (signal): Promise<ServerSentEvent[] | undefined> => {
        if (!opened) {
          opened = true;
          // The stream's signal aborts when the client goes or the server closes.
          const release = sampler.watch();
          signal.addEventListener('abort', release, { once: true });
          return [{ event: 'snapshot', data: JSON.stringify(sampler.snapshot()) }];
        }
        const sample = await sampler.next(signal);
        if (sample === undefined) return undefined;
        return [{ event: 'sample', id: String(sample.t), data: JSON.stringify(sample) }];
      },
    });
  });
}

/**
 * The HTTP API as a Hono app, built without listening: `app.request()` (or
 * `app.fetch`) drives it in process, and `startServer` serves it over HTTP.
 * See docs/http-api.md for every route.
 */
import { setMaxListeners } from 'node:events';
import { Hono } from 'hono';
import { routePath } from 'hono/route';
import type { Context, MiddlewareHandler } from 'hono';
import { systemClock, type Clock } from '../clock.ts';
import { asError, InvalidArgumentError, NotFoundError } from '../errors.ts';
import { DEFAULT_MAX_BATCH_BYTES, RECORD_OVERHEAD_BYTES } from '../format/batch.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { PROMETHEUS_CONTENT_TYPE, PrometheusMetrics } from '../metrics/prometheus.ts';
import { resolveOptions, type OptionSpecs } from '../options.ts';
import { scrubSecrets } from '../redact.ts';
import { Producer } from '../producer/producer.ts';
import { MemoryStore } from '../store/memory-store.ts';
import { CountingStore } from '../store/counting-store.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { resolveStore, type OpenStoreOptions } from '../store/open-store.ts';
import { RateLimitedStore } from '../store/rate-limited-store.ts';
import type { AppContext, AppSettings } from './app-context.ts';
import { authMiddleware, loginRoutes, Tokens } from './auth.ts';
import {
  createDashboardSampler,
  dashboardRoutes,
  type DashboardOptions,
} from './dashboard-routes.ts';
import { HttpError, toHttpError } from './http-error.ts';
import { IDEMPOTENCY_DEFAULTS, IdempotencyKeys } from './idempotency.ts';
import { postEntries } from './ingest-route.ts';
import { openApiDocument } from './openapi.ts';
import { queueRoutes } from './queue-routes.ts';
import { ServedQueues, type ServedProducerOptions } from './served-queues.ts';
import { subscriptionRoutes } from './subscription-routes.ts';

/** Options of {@link createApp} (and of `startServer`, which adds where to listen). */
export interface AppOptions {
  /** The store every queue lives in, as a URL or an {@link ObjectStore}; a URL is opened here and closed by `close()`. */
  store: string | ObjectStore;
  /** Options of a store opened from a URL (retries, clock, logger). */
  storeOptions?: OpenStoreOptions;
  /**
   * Bearer tokens accepted (any of them); none turns authentication off
   * (`startServer` then listens on loopback only, unless told otherwise).
   * @default none
   */
  tokens?: readonly string[];
  /** Create a queue (log layout) on its first write; else writing to an unknown queue is 404. @default false */
  createQueues?: boolean;
  /** Largest request body, in bytes; more is 413. @default 16777216 (16 MiB) */
  maxBodyBytes?: number;
  /**
   * How long a POST waits for room in its queue's producer buffer before it
   * is answered 503 with `Retry-After`, in ms. @default 100
   */
  admissionWaitMs?: number;
  /** Most a long poll may wait (`?waitMs=`), in ms. @default 60000 */
  maxWaitMs?: number;
  /**
   * How often a waiting long poll or event stream reads the store again,
   * in ms; appends made through this server wake them at once. @default 500
   */
  pollIntervalMs?: number;
  /** Most entries one GET .../entries returns (`?max=`). @default 10000 */
  maxEntriesPerRead?: number;
  /** Longest quiet time of an event stream before a comment line keeps it open, in ms. @default 15000 */
  sseHeartbeatMs?: number;
  /** How long an `Idempotency-Key` is remembered after its first request, in ms. @default 600000 (10 minutes) */
  idempotencyWindowMs?: number;
  /** Most `Idempotency-Key`s remembered (all queues); the least recently used goes first. @default 100000 */
  idempotencyMaxKeys?: number;
  /**
   * Options of each queue's producer (one per queue, created on its first
   * write). @default { flushIntervalMs: 0 } (group commit: a lone request is
   * durable after about one store round trip; batches grow under load)
   */
  producer?: ServedProducerOptions;
  /**
   * Most store requests per second, for every queue and role of the server
   * together (a token bucket, burst of one second's worth; a call waits for
   * its turn). Counted as S3 bills them: a listing is one request per 1,000
   * objects. @default no cap
   */
  maxRequestsPerSecond?: number;
  /** The dashboard at `/`: prices of the cost estimate, queues always shown, intervals. @default S3 Standard prices */
  dashboard?: DashboardOptions;
  /** Where metrics go, and what `/metrics` serves. @default a new PrometheusMetrics */
  metrics?: PrometheusMetrics;
  /** @default silent */
  logger?: Logger;
  /** @default the system clock */
  clock?: Clock;
}

/** Defaults of {@link AppOptions}. */
export const APP_DEFAULTS = Object.freeze({
  createQueues: false,
  maxBodyBytes: 16 * 1024 * 1024,
  admissionWaitMs: 100,
  maxWaitMs: 60_000,
  pollIntervalMs: 500,
  maxEntriesPerRead: 10_000,
  sseHeartbeatMs: 15_000,
  idempotencyWindowMs: IDEMPOTENCY_DEFAULTS.windowMs,
  idempotencyMaxKeys: IDEMPOTENCY_DEFAULTS.maxKeys,
});

const TIMER_MAX = 2_147_483_647;

/** Option specs of {@link AppOptions}; `startServer` adds its own. */
export const APP_SPECS: OptionSpecs<AppOptions> = {
  store: { kind: 'any' },
  storeOptions: { kind: 'any' },
  tokens: { kind: 'any' },
  createQueues: { kind: 'boolean' },
  maxBodyBytes: { kind: 'int', min: 1, max: 1024 ** 3 },
  admissionWaitMs: { kind: 'int', min: 1, max: TIMER_MAX },
  maxWaitMs: { kind: 'int', min: 0, max: TIMER_MAX },
  pollIntervalMs: { kind: 'int', min: 1, max: TIMER_MAX },
  maxEntriesPerRead: { kind: 'int', min: 1, max: 1_000_000 },
  sseHeartbeatMs: { kind: 'int', min: 1, max: TIMER_MAX },
  idempotencyWindowMs: { kind: 'int', min: 0, max: TIMER_MAX },
  idempotencyMaxKeys: { kind: 'int', min: 0 },
  producer: { kind: 'any' },
  maxRequestsPerSecond: { kind: 'int', min: 1, max: 1_000_000 },
  dashboard: { kind: 'any' },
  metrics: { kind: 'any' },
  logger: { kind: 'any' },
  clock: { kind: 'any' },
};

/** What {@link createApp} returns: the app, and how to stop what it holds. */
export interface SpillwayApp {
  /** The Hono app: `app.fetch(request)`, `app.request(path, init)`. */
  readonly app: Hono;
  /** What the routes share (for routes added later: a dashboard, a metrics stream). */
  readonly context: AppContext;
  /** Whether {@link close} was called. */
  readonly closed: boolean;
  /**
   * Stops taking requests (new ones are answered 503 `SHUTTING_DOWN`),
   * ends long polls and event streams, closes every producer (everything
   * accepted becomes durable, and the requests waiting for that are
   * answered), waits for the requests in flight, then closes the queues
   * and a store opened from a URL. Runs every step even when one fails;
   * rejects with the first failure. Idempotent. With `timeoutMs`, producers
   * still not done by then are destroyed (their pending entries rejected)
   * and the close rejects with a `TimeoutError`.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Builds the HTTP API over a store, without listening.
 *
 * @throws {InvalidArgumentError} for bad options (named), including the
 * producer's.
 *
 * @example
 * const api = createApp({ store: 'file:./data', createQueues: true });
 * const res = await api.app.request('/v1/queues/orders/entries', {
 *   method: 'POST',
 *   headers: { 'Content-Type': 'application/x-ndjson' },
 *   body: '{"id":1}\n{"id":2}\n',
 * });
 * console.log(res.status, await res.json()); // 201 { sequence: 0, entries: 2 }
 * await api.close();
 */
export function createApp(options: AppOptions): SpillwayApp {
  const o = resolveOptions<AppOptions>('createApp', APP_SPECS, APP_DEFAULTS, options);
  const tokens = new Tokens(checkTokens(o.tokens));
  const producerOptions: ServedProducerOptions = { flushIntervalMs: 0, ...(o.producer ?? {}) };
  // Checked now, not on the first request: a bad option is the operator's, not a client's.
  const check = new MemoryStore();
  void new Producer({ ...producerOptions, store: check }).destroy();
  MemoryStore.drop(check.name);
  const clock = o.clock ?? systemClock;
  const logger = o.logger ?? silentLogger;
  const ownsMetrics = o.metrics === undefined;
  const metrics = o.metrics ?? new PrometheusMetrics();
  const ownsStore = typeof o.store === 'string';
  // Counted, then capped: a call is counted when its token lets it go.
  const counted = new CountingStore(resolveStore(o.store, o.storeOptions), { metrics });
  const store: ObjectStore =
    o.maxRequestsPerSecond === undefined
      ? counted
      : new RateLimitedStore(counted, {
          requestsPerSecond: o.maxRequestsPerSecond,
          metrics,
          clock,
        });
  const settings: AppSettings = {
    maxBodyBytes: o.maxBodyBytes as number,
    admissionWaitMs: o.admissionWaitMs as number,
    maxWaitMs: o.maxWaitMs as number,
    pollIntervalMs: o.pollIntervalMs as number,
    maxEntriesPerRead: o.maxEntriesPerRead as number,
    sseHeartbeatMs: o.sseHeartbeatMs as number,
    // An entry takes at least 4 + 96 bytes of a batch, and a request's entries go in one.
    maxEntriesPerRequest: Math.floor(
      (producerOptions.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES) / (4 + RECORD_OVERHEAD_BYTES),
    ),
  };
  const queues = new ServedQueues({
    store,
    createQueues: o.createQueues as boolean,
    producer: producerOptions,
    metricsFor: (queue) => metrics.withLabels({ queue }),
    logger,
    clock,
  });
  const dashboard = createDashboardSampler(
    { metrics, queues, clock, logger },
    o.dashboard ?? {},
    o.maxRequestsPerSecond,
  );
  const closingController = new AbortController();
  // Every request in flight listens for the shutdown (and stops listening when it ends):
  // hundreds at once is normal, not a leak.
  setMaxListeners(0, closingController.signal);
  const inFlight = new Set<Promise<unknown>>();
  const context: AppContext = {
    queues,
    store,
    dashboard,
    settings,
    idempotency: new IdempotencyKeys({
      windowMs: o.idempotencyWindowMs,
      maxKeys: o.idempotencyMaxKeys,
      clock,
    }),
    metrics,
    logger,
    clock,
    closing: closingController.signal,
    track<T>(work: Promise<T>): Promise<T> {
      const settled = work.then(
        () => undefined,
        () => undefined,
      );
      inFlight.add(settled);
      void settled.then(() => inFlight.delete(settled));
      return work;
    },
  };

  const app = new Hono();
  app.onError((e, c) => {
    const h = toHttpError(e);
    if (h.status >= 500 && !(e instanceof HttpError)) {
      logger.error(
        {
          method: c.req.method,
          route: routeOf(c),
          status: h.status,
          error: asError(e).message,
        },
        'http: request failed',
      );
    }
    for (const [k, v] of Object.entries(h.headers)) c.header(k, v);
    return c.json(h.body(), h.status as 400);
  });
  app.notFound((c) => {
    const h = new HttpError(404, 'NOT_FOUND', `no route ${c.req.method} ${c.req.path}`);
    return c.json(h.body(), 404);
  });

  app.use('*', countRequests(metrics));
  app.use('*', async (c, next) => {
    if (closingController.signal.aborted && c.req.path !== '/healthz') {
      throw new HttpError(503, 'SHUTTING_DOWN', 'the server is closing', {
        headers: { 'Retry-After': '1', Connection: 'close' },
      });
    }
    return next();
  });
  app.use('*', authMiddleware(tokens));

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    try {
      // Any answer from the store says it is reachable; a missing key is one.
      await store.head('spillway-readyz-probe', { signal: AbortSignal.timeout(5000) });
    } catch (e) {
      if (!(e instanceof NotFoundError)) {
        throw new HttpError(
          503,
          'STORAGE',
          `the store is not reachable: ${scrubSecrets(asError(e).message)}`,
          {
            headers: { 'Retry-After': '5' },
          },
        );
      }
    }
    return c.json({ status: 'ready' });
  });
  const login = loginRoutes(tokens);
  app.get('/login', login.form);
  app.post('/login', login.submit);
  app.get('/metrics', (c) =>
    c.body(metrics.exposition(), 200, { 'Content-Type': PROMETHEUS_CONTENT_TYPE }),
  );
  app.get('/v1/openapi.json', (c) => c.json(openApiDocument()));
  queueRoutes(app, context);
  app.post('/v1/queues/:queue/entries', postEntries(context));
  subscriptionRoutes(app, context);
  dashboardRoutes(app, context);

  let closing: Promise<void> | undefined;
  const close = (closeOptions: { timeoutMs?: number } = {}): Promise<void> => {
    closing ??= (async () => {
      closingController.abort();
      dashboard.close();
      const errors: unknown[] = [];
      // Producers first: each makes what it accepted durable, which answers the
      // requests waiting for it; then those requests are let finish.
      await queues.close(closeOptions).catch((e: unknown) => errors.push(e));
      await Promise.all([...inFlight]);
      if (ownsStore) await store.close().catch((e: unknown) => errors.push(e));
      if (ownsMetrics) metrics.close();
      if (errors.length > 0) throw asError(errors[0]);
    })();
    return closing;
  };
  return {
    app,
    context,
    get closed() {
      return closing !== undefined;
    },
    close,
    [Symbol.asyncDispose]: () => close(),
  };
}

/**
 * Tokens as given, each checked: at least 16 characters, printable ASCII
 * without spaces (what a header carries).
 *
 * @throws {InvalidArgumentError} for a bad token (its value is not echoed).
 */
function checkTokens(tokens: readonly string[] | undefined): string[] {
  if (tokens === undefined) return [];
  if (!Array.isArray(tokens))
    throw new InvalidArgumentError('createApp: tokens must be an array of strings');
  return tokens.map((t: unknown, i) => {
    if (typeof t !== 'string' || !/^[\x21-\x7e]{16,4096}$/.test(t)) {
      throw new InvalidArgumentError(
        `createApp: token ${i + 1} must be 16-4096 printable ASCII characters without spaces (its value is not shown)`,
      );
    }
    return t;
  });
}

/** The route pattern a request matched (`/v1/queues/:queue`), or `*` when none did. */
function routeOf(c: Context): string {
  return routePath(c, -1);
}

/** Counts and times every request by its route (not its path: no unbounded labels). */
function countRequests(metrics: PrometheusMetrics): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    try {
      await next();
    } finally {
      const route = routeOf(c);
      const labels = { method: c.req.method, route: route === '*' ? 'unmatched' : route };
      metrics.increment('http.requests', 1, { ...labels, status: String(c.res.status) });
      metrics.observe(
        'http.request_duration_seconds',
        (performance.now() - started) / 1000,
        labels,
      );
    }
  };
}

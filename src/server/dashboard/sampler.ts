/**
 * The dashboard's figures, computed on the server: every second the
 * sampler reads the counters and histograms the library records (through
 * {@link PrometheusMetrics}) and turns their differences into rates,
 * percentiles, batch sizes, requests per GB and a cost per GB; every few
 * seconds, while somebody watches, it reads each queue's `stats()` for its
 * depth and the lag of its subscriptions. A bounded history of samples is
 * kept for pages that open later.
 */
import { monotonicNow, type Clock, type ClockTimer } from '../../clock.ts';
import { asError } from '../../errors.ts';
import { scrubSecrets } from '../../redact.ts';
import type { Logger } from '../../logger.ts';
import type { MetricSeries, PrometheusMetrics } from '../../metrics/prometheus.ts';
import { STORE_REQUEST_KINDS, type StoreRequestKind } from '../../store/counting-store.ts';
import type { ServedQueues } from '../served-queues.ts';

/** Store prices the cost estimate uses, in US dollars. */
export interface StorePrices {
  /** Per 1,000 PUT (and LIST) requests. @default 0.005 (S3 Standard, us-east-1) */
  perThousandPuts: number;
  /** Per 1,000 GET (and HEAD) requests. @default 0.0004 (S3 Standard, us-east-1) */
  perThousandGets: number;
  /** Per GB stored for a month. @default 0.023 (S3 Standard, us-east-1, first 50 TB) */
  perGbMonth: number;
}

/** S3 Standard's list prices in us-east-1 (DELETE is free). */
export const S3_STANDARD_PRICES: Readonly<StorePrices> = Object.freeze({
  perThousandPuts: 0.005,
  perThousandGets: 0.0004,
  perGbMonth: 0.023,
});

/** Options of {@link DashboardSampler}. */
export interface DashboardSamplerOptions {
  metrics: PrometheusMetrics;
  queues: ServedQueues;
  /** Queues always shown, besides those the server has opened. */
  watch: readonly string[];
  prices: StorePrices;
  /** Between samples, in ms. */
  sampleIntervalMs: number;
  /** Between two reads of each queue's stats while somebody watches, in ms. */
  statsIntervalMs: number;
  /** Samples kept for pages that open later. */
  historySize: number;
  /** Whether a requests-per-second cap is set (shown on the page). */
  maxRequestsPerSecond: number | undefined;
  clock: Clock;
  logger: Logger;
}

/** A subscription of a queue, as the page shows it. */
export interface SubscriptionView {
  name: string;
  lagEntries: number;
  lagBytes: number;
  oldestUnackedAgeMs: number | null;
}

/** A queue, as the page shows it (from its last `stats()`). */
export interface QueueView {
  name: string;
  layout?: string;
  batchesPending?: number;
  bytesPending?: number;
  oldestEntryAgeMs?: number | null;
  /** Bytes of the batch objects stored. */
  storedBytes?: number;
  subscriptions: SubscriptionView[];
  /** Why the last read of its stats failed. */
  error?: string;
  /** When its stats were read, ms since the epoch. */
  readAtMs?: number;
}

/** One sample: rates over the last interval, and figures over a longer window. */
export interface DashboardSample {
  /** When it was taken, ms since the epoch. */
  t: number;
  /** Entries and entry bytes made durable per second. */
  entriesInPerS: number;
  bytesInPerS: number;
  /** Entries consumed per second: acknowledged by library consumers, plus sent to HTTP readers. */
  entriesOutPerS: number;
  /** Bytes read from the store per second. */
  bytesOutPerS: number;
  /** Batches made durable per second, and their mean size over the window. */
  batchesPerS: number;
  entriesPerBatch: number | null;
  bytesPerBatch: number | null;
  /** Durable latency (a batch sealed to its append durable) over the window, in ms. */
  durableP50Ms: number | null;
  durableP99Ms: number | null;
  /** Store requests per second, by operation kind. */
  requestsPerS: Record<StoreRequestKind, number>;
  /** Store calls per second that waited for the requests-per-second cap. */
  throttledPerS: number;
  /** The collector: objects and bytes deleted per second, passes since the start. */
  gcObjectsPerS: number;
  gcBytesPerS: number;
  gcPasses: number;
  /** Store requests per GB made durable, over the window (null when too little was written). */
  requestsPerGb: number | null;
  /** Request cost per GB made durable at the configured prices, over the window, in USD. */
  costPerGb: number | null;
  /** Cost of storing what is stored now, per month, in USD. */
  storageCostPerMonth: number | null;
  /** Totals since the server started. */
  totals: {
    entriesIn: number;
    bytesIn: number;
    entriesOut: number;
    requests: number;
    gcObjects: number;
  };
  /** The queues, as last read. */
  queues: QueueView[];
}

/** What a page gets first: the settings, and the history. */
export interface DashboardSnapshot {
  prices: StorePrices;
  sampleIntervalMs: number;
  windowMs: number;
  maxRequestsPerSecond: number | null;
  samples: DashboardSample[];
}

/** The counters a sample is the difference of. */
interface Totals {
  at: number;
  entriesIn: number;
  bytesIn: number;
  batchesIn: number;
  entriesOut: number;
  bytesRead: number;
  requests: Record<StoreRequestKind, number>;
  throttled: number;
  gcObjects: number;
  gcBytes: number;
  gcPasses: number;
  /** Observations of the flush duration per bucket (+Inf last). */
  flush: number[];
  flushBuckets: readonly number[];
}

/** Span of the percentiles, batch sizes and per-GB figures, in ms. */
const WINDOW_MS = 30_000;
/** Below this many bytes in the window, per-GB figures mean nothing. */
const MIN_BYTES_FOR_PER_GB = 64 * 1024;
const GB = 1e9;
/** Queues discovered in the store at most (the page stays readable). */
const MAX_QUEUES = 20;

/** See the module comment. */
export class DashboardSampler {
  private readonly history: DashboardSample[] = [];
  private readonly totals: Totals[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly views = new Map<string, QueueView>();
  private timer: ClockTimer | undefined;
  private started = false;
  private closed = false;
  private watchers = 0;
  private lastDemandAt = -Infinity;
  private lastStatsAt = -Infinity;
  private statsRunning: Promise<void> | undefined;
  private discovered = false;
  private readonly stop = new AbortController();

  constructor(private readonly o: DashboardSamplerOptions) {}

  /** Starts sampling (once; the dashboard's first request does it). */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.totals.push(this.read());
    this.schedule();
  }

  /** Everything a page needs first. Marks the stats as wanted. */
  snapshot(): DashboardSnapshot {
    this.start();
    this.demand();
    return {
      prices: { ...this.o.prices },
      sampleIntervalMs: this.o.sampleIntervalMs,
      windowMs: WINDOW_MS,
      maxRequestsPerSecond: this.o.maxRequestsPerSecond ?? null,
      samples: [...this.history],
    };
  }

  /**
   * Counts a watcher (an open event stream) until the returned function is
   * called; the queues' stats are read only while somebody watches.
   */
  watch(): () => void {
    this.start();
    this.watchers++;
    this.demand();
    let done = false;
    return () => {
      if (!done) this.watchers--;
      done = true;
    };
  }

  /** Resolves with the next sample, or undefined when `signal` aborts or the sampler closes. */
  next(signal: AbortSignal): Promise<DashboardSample | undefined> {
    if (this.closed || signal.aborted) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const done = (): void => {
        this.waiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve(this.closed || signal.aborted ? undefined : this.history.at(-1));
      };
      this.waiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Stops sampling and ends every wait. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stop.abort();
    this.o.clock.clearTimeout(this.timer);
    for (const w of [...this.waiters]) w();
  }

  private demand(): void {
    this.lastDemandAt = monotonicNow(this.o.clock);
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = this.o.clock.setTimeout(() => {
      try {
        this.tick();
      } catch (e) {
        this.o.logger.warn({ error: asError(e).message }, 'dashboard: a sample failed');
      }
      this.schedule();
    }, this.o.sampleIntervalMs);
  }

  /** Takes one sample: the counters now against the last ones and the window's first. */
  tick(): void {
    const now = this.read();
    const prev = this.totals.at(-1) as Totals;
    this.totals.push(now);
    while (this.totals.length > 2 && now.at - (this.totals[1] as Totals).at >= WINDOW_MS) {
      this.totals.shift();
    }
    const first = this.totals[0] as Totals;
    const seconds = Math.max(1e-3, (now.at - prev.at) / 1000);
    const rate = (a: number, b: number): number => Math.max(0, a - b) / seconds;
    const requestsPerS = {} as Record<StoreRequestKind, number>;
    for (const op of STORE_REQUEST_KINDS)
      requestsPerS[op] = rate(now.requests[op], prev.requests[op]);

    const windowBytes = now.bytesIn - first.bytesIn;
    const windowBatches = now.batchesIn - first.batchesIn;
    const d = (op: StoreRequestKind): number => now.requests[op] - first.requests[op];
    const windowRequests = STORE_REQUEST_KINDS.reduce((n, op) => n + d(op), 0);
    const perGb = windowBytes >= MIN_BYTES_FOR_PER_GB ? GB / windowBytes : null;
    const { prices } = this.o;
    const requestCost =
      ((d('put') + d('list')) / 1000) * prices.perThousandPuts +
      ((d('get') + d('head')) / 1000) * prices.perThousandGets;
    const flush = now.flush.map((c, i) => c - (first.flush[i] ?? 0));
    const queues = [...this.views.values()];
    const stored = queues.reduce<number | null>(
      (n, q) => (q.storedBytes === undefined ? n : (n ?? 0) + q.storedBytes),
      null,
    );
    const sample: DashboardSample = {
      t: this.o.clock.now(),
      entriesInPerS: rate(now.entriesIn, prev.entriesIn),
      bytesInPerS: rate(now.bytesIn, prev.bytesIn),
      entriesOutPerS: rate(now.entriesOut, prev.entriesOut),
      bytesOutPerS: rate(now.bytesRead, prev.bytesRead),
      batchesPerS: rate(now.batchesIn, prev.batchesIn),
      entriesPerBatch: windowBatches > 0 ? (now.entriesIn - first.entriesIn) / windowBatches : null,
      bytesPerBatch: windowBatches > 0 ? windowBytes / windowBatches : null,
      durableP50Ms: percentileMs(now.flushBuckets, flush, 0.5),
      durableP99Ms: percentileMs(now.flushBuckets, flush, 0.99),
      requestsPerS,
      throttledPerS: rate(now.throttled, prev.throttled),
      gcObjectsPerS: rate(now.gcObjects, prev.gcObjects),
      gcBytesPerS: rate(now.gcBytes, prev.gcBytes),
      gcPasses: now.gcPasses,
      requestsPerGb: perGb === null ? null : windowRequests * perGb,
      costPerGb: perGb === null ? null : requestCost * perGb,
      storageCostPerMonth: stored === null ? null : (stored / GB) * prices.perGbMonth,
      totals: {
        entriesIn: now.entriesIn,
        bytesIn: now.bytesIn,
        entriesOut: now.entriesOut,
        requests: STORE_REQUEST_KINDS.reduce((n, op) => n + now.requests[op], 0),
        gcObjects: now.gcObjects,
      },
      queues,
    };
    this.history.push(sample);
    if (this.history.length > this.o.historySize) this.history.shift();
    for (const w of [...this.waiters]) w();
    this.maybeReadStats();
  }

  /** Reads the queues' stats when they are due and somebody wants them; one read at a time. */
  private maybeReadStats(): void {
    const now = monotonicNow(this.o.clock);
    const wanted = this.watchers > 0 || now - this.lastDemandAt < this.o.statsIntervalMs * 2;
    if (!wanted || this.statsRunning || now - this.lastStatsAt < this.o.statsIntervalMs) return;
    this.lastStatsAt = now;
    this.statsRunning = this.readStats().finally(() => (this.statsRunning = undefined));
  }

  private async readStats(): Promise<void> {
    const signal = this.stop.signal;
    const names = new Set([...this.o.watch, ...this.o.queues.names()]);
    if (!this.discovered) {
      // Once: the queues already in the store (a listing of the whole store).
      this.discovered = true;
      try {
        for (const n of await this.o.queues.list(signal)) names.add(n);
      } catch (e) {
        if (signal.aborted) return;
        this.o.logger.warn({ error: asError(e).message }, 'dashboard: listing the queues failed');
      }
    }
    for (const name of [...names].sort().slice(0, MAX_QUEUES)) {
      if (signal.aborted) return;
      const view: QueueView = this.views.get(name) ?? { name, subscriptions: [] };
      try {
        if (!(await this.o.queues.layoutOf(name, signal))) continue;
        const s = await this.o.queues.queue(name).stats({ signal, clock: this.o.clock });
        view.layout = s.layout;
        view.batchesPending = s.batchesPending;
        view.bytesPending = s.bytesPending;
        view.oldestEntryAgeMs = s.oldestEntryAgeMs;
        view.storedBytes = s.batchObjectBytes;
        view.subscriptions = s.subscriptions.map((sub) => ({
          name: sub.name,
          lagEntries: sub.lagEntries,
          lagBytes: sub.lagBytes,
          oldestUnackedAgeMs: sub.oldestUnackedAgeMs,
        }));
        delete view.error;
      } catch (e) {
        if (signal.aborted) return;
        // Shown on the page: a store's message may name a URL with credentials.
        view.error = scrubSecrets(asError(e).message);
      }
      view.readAtMs = this.o.clock.now();
      this.views.set(name, view);
    }
  }

  /** The counters now, summed over their labels (every queue). */
  private read(): Totals {
    const m = this.o.metrics;
    const sum = (name: string): number => total(m.series(name));
    const requests = {} as Record<StoreRequestKind, number>;
    const byOp = m.series('store.requests');
    for (const op of STORE_REQUEST_KINDS) {
      requests[op] = total(byOp.filter((s) => s.labels.op === op));
    }
    const flushSeries = m.series('buffer.flush_duration_seconds');
    const flushBuckets = flushSeries[0]?.buckets ?? [];
    const flush = new Array<number>(flushBuckets.length + 1).fill(0);
    for (const s of flushSeries) s.counts?.forEach((c, i) => (flush[i] = (flush[i] ?? 0) + c));
    return {
      at: monotonicNow(this.o.clock),
      entriesIn: sum('buffer.entries_flushed'),
      bytesIn: sum('buffer.bytes_flushed'),
      batchesIn: sum('buffer.batches_flushed'),
      entriesOut: sum('buffer.entries_collected') + sum('http.entries_delivered'),
      bytesRead: sum('store.bytes_read'),
      requests,
      throttled: sum('store.throttle_wait_seconds'),
      gcObjects: sum('buffer.gc_files_deleted'),
      gcBytes: sum('buffer.bytes_collected'),
      gcPasses: sum('buffer.gc_duration_seconds'),
      flush,
      flushBuckets,
    };
  }
}

function total(series: readonly MetricSeries[]): number {
  return series.reduce((n, s) => n + s.value, 0);
}

/**
 * The `q` quantile of observations counted in buckets, in ms: linear within
 * the bucket it falls in (from the previous bound; 0 for the first), the
 * last bound when it falls beyond it; null without observations.
 */
export function percentileMs(
  bounds: readonly number[],
  counts: readonly number[],
  q: number,
): number | null {
  const n = counts.reduce((a, b) => a + b, 0);
  if (n <= 0) return null;
  const rank = q * n;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i] as number;
    if (c > 0 && seen + c >= rank) {
      if (i >= bounds.length) return (bounds.at(-1) ?? 0) * 1000;
      const lower = i === 0 ? 0 : (bounds[i - 1] as number);
      const upper = bounds[i] as number;
      return (lower + ((upper - lower) * (rank - seen)) / c) * 1000;
    }
    seen += c;
  }
  return (bounds.at(-1) ?? 0) * 1000;
}

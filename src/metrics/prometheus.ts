/**
 * A {@link Metrics} that keeps every metric the library emits and writes
 * them in the Prometheus text exposition format (version 0.0.4), with the
 * names, help texts and buckets of the registry (`./registry.ts`).
 */
import type { MetricLabels, Metrics } from '../metrics.ts';
import { ProcessMetrics } from './process-metrics.ts';
import {
  LATENCY_BUCKETS_SECONDS,
  METRICS,
  metricDefinition,
  prometheusName,
  type MetricDefinition,
  type MetricType,
} from './registry.ts';

/** The `Content-Type` of {@link PrometheusMetrics.exposition}. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Options of {@link PrometheusMetrics}. */
export interface PrometheusMetricsOptions {
  /**
   * Labels added to every sample (a label the library passes with the same
   * name wins). @default none
   */
  labels?: MetricLabels;
  /**
   * Add the process's metrics (CPU, memory, heap, event-loop lag, start
   * time) to each exposition; measuring the lag runs a native timer until
   * {@link PrometheusMetrics.close}. @default true
   */
  processMetrics?: boolean;
}

interface Family {
  readonly name: string;
  readonly type: MetricType;
  readonly help: string;
  readonly buckets: readonly number[];
  readonly series: Map<string, Series>;
}

interface Series {
  readonly labels: readonly (readonly [string, string])[];
  value: number;
  /** Histograms: observations per bucket (not cumulative), then sum and count. */
  counts?: number[];
  sum?: number;
  count?: number;
}

/** One series of a metric, as {@link PrometheusMetrics.series} returns it. */
export interface MetricSeries {
  readonly labels: Readonly<Record<string, string>>;
  /** A counter's or gauge's value; a histogram's count. */
  readonly value: number;
  /** Histograms: upper bounds of the buckets (`+Inf` implied). */
  readonly buckets?: readonly number[];
  /** Histograms: observations per bucket, not cumulative, with one more for `+Inf`. */
  readonly counts?: readonly number[];
  readonly sum?: number;
  readonly count?: number;
}

/**
 * Collects metrics in memory and writes them for Prometheus. Pass it (or a
 * {@link withLabels} view of it) as the `metrics` option of any role; serve
 * {@link exposition} at `/metrics` with {@link PROMETHEUS_CONTENT_TYPE}.
 *
 * Names come from the registry (`buffer.batches_flushed` becomes
 * `spillway_buffer_batches_flushed_total`); a name the registry lacks is
 * kept under `spillway_` + its name with a generic help text. Every
 * registry metric is listed (HELP and TYPE) even before its first sample.
 * Like every {@link Metrics}, it never throws: a value that is not a finite
 * number, a negative counter increment and a call of another type than the
 * metric's are ignored.
 *
 * @example
 * const metrics = new PrometheusMetrics();
 * const producer = new Producer({ queue, metrics: metrics.withLabels({ queue: 'orders' }) });
 * http.createServer((req, res) => {
 *   res.setHeader('Content-Type', PROMETHEUS_CONTENT_TYPE);
 *   res.end(metrics.exposition());
 * });
 */
export class PrometheusMetrics implements Metrics {
  private readonly families = new Map<string, Family>();
  private readonly baseLabels: MetricLabels;
  private readonly process: ProcessMetrics | undefined;

  constructor(options: PrometheusMetricsOptions = {}) {
    this.baseLabels = { ...(options.labels ?? {}) };
    for (const def of METRICS) this.familyOf(def.name, def.type, def);
    this.process = options.processMetrics === false ? undefined : new ProcessMetrics();
  }

  increment(name: string, value = 1, labels?: MetricLabels): void {
    if (!Number.isFinite(value) || value < 0) return;
    const s = this.seriesOf(name, 'counter', labels);
    if (s) s.value += value;
  }

  observe(name: string, value: number, labels?: MetricLabels): void {
    if (!Number.isFinite(value)) return;
    const family = this.familyOf(name, 'histogram');
    const s = family && this.seriesOf(name, 'histogram', labels);
    if (!family || !s) return;
    s.counts ??= new Array<number>(family.buckets.length).fill(0);
    s.sum = (s.sum ?? 0) + value;
    s.count = (s.count ?? 0) + 1;
    const i = family.buckets.findIndex((le) => value <= le);
    if (i >= 0) (s.counts[i] as number)++;
  }

  gauge(name: string, value: number, labels?: MetricLabels): void {
    if (!Number.isFinite(value)) return;
    const s = this.seriesOf(name, 'gauge', labels);
    if (s) s.value = value;
  }

  /**
   * A view that adds `labels` to every sample it records (over this
   * instance's own labels; the library's labels win over both), writing
   * into this instance: give each queue's roles `withLabels({ queue })`.
   */
  withLabels(labels: MetricLabels): Metrics {
    const fixed = { ...labels };
    const merge = (l?: MetricLabels): MetricLabels => (l ? { ...fixed, ...l } : fixed);
    return {
      increment: (name, value, l) => this.increment(name, value, merge(l)),
      observe: (name, value, l) => this.observe(name, value, merge(l)),
      gauge: (name, value, l) => this.gauge(name, value, merge(l)),
    };
  }

  /** The current value of a counter or gauge series (0 when it has none); for tests and views. */
  value(name: string, labels?: MetricLabels): number {
    const def = metricDefinition(name);
    const family = this.families.get(prometheusName(name, def?.type ?? 'counter'));
    return family?.series.get(seriesKey(this.labelPairs(labels)))?.value ?? 0;
  }

  /**
   * Every series of a metric as it is now (copies): its labels, its value
   * (counters and gauges) and, for a histogram, the bucket upper bounds with
   * the observations in each (not cumulative; the last count is `+Inf`'s),
   * the sum and the count. Empty for a metric without samples. For views
   * that derive rates and percentiles, such as the dashboard.
   */
  series(name: string): MetricSeries[] {
    const def = metricDefinition(name);
    const family = this.families.get(prometheusName(name, def?.type ?? 'counter'));
    if (!family) return [];
    return [...family.series.values()].map((s) => {
      const labels = Object.fromEntries(s.labels);
      if (family.type !== 'histogram') return { labels, value: s.value };
      const counts = [...(s.counts ?? new Array<number>(family.buckets.length).fill(0))];
      const inBuckets = counts.reduce((a, b) => a + b, 0);
      return {
        labels,
        value: s.count ?? 0,
        buckets: family.buckets,
        counts: [...counts, (s.count ?? 0) - inBuckets],
        sum: s.sum ?? 0,
        count: s.count ?? 0,
      };
    });
  }

  /** Every metric in the text exposition format 0.0.4, process metrics last. */
  exposition(): string {
    const out: string[] = [];
    for (const f of this.families.values()) {
      out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`);
      out.push(`# TYPE ${f.name} ${f.type}`);
      for (const s of f.series.values()) {
        if (f.type !== 'histogram') {
          out.push(`${f.name}${formatLabels(s.labels)} ${formatValue(s.value)}`);
          continue;
        }
        let cumulative = 0;
        f.buckets.forEach((le, i) => {
          cumulative += s.counts?.[i] ?? 0;
          out.push(
            `${f.name}_bucket${formatLabels([...s.labels, ['le', formatValue(le)]])} ${cumulative}`,
          );
        });
        out.push(`${f.name}_bucket${formatLabels([...s.labels, ['le', '+Inf']])} ${s.count ?? 0}`);
        out.push(`${f.name}_sum${formatLabels(s.labels)} ${formatValue(s.sum ?? 0)}`);
        out.push(`${f.name}_count${formatLabels(s.labels)} ${s.count ?? 0}`);
      }
    }
    for (const p of this.process?.samples() ?? []) {
      out.push(`# HELP ${p.name} ${escapeHelp(p.help)}`);
      out.push(`# TYPE ${p.name} ${p.type}`);
      out.push(`${p.name} ${formatValue(p.value)}`);
    }
    return `${out.join('\n')}\n`;
  }

  /** Stops the process metrics' measurement of the event-loop lag. Idempotent. */
  close(): void {
    this.process?.close();
  }

  private familyOf(name: string, type: MetricType, def?: MetricDefinition): Family | undefined {
    const known = def ?? metricDefinition(name);
    const promName = prometheusName(name, known?.type ?? type);
    let family = this.families.get(promName);
    if (!family) {
      family = {
        name: promName,
        type: known?.type ?? type,
        help: known?.help ?? `Spillway metric "${name}" (not in the registry).`,
        buckets: known?.buckets ?? LATENCY_BUCKETS_SECONDS,
        series: new Map(),
      };
      this.families.set(promName, family);
    }
    return family.type === type ? family : undefined;
  }

  private seriesOf(name: string, type: MetricType, labels?: MetricLabels): Series | undefined {
    const family = this.familyOf(name, type);
    if (!family) return undefined;
    const pairs = this.labelPairs(labels);
    const key = seriesKey(pairs);
    let s = family.series.get(key);
    if (!s) {
      s = { labels: pairs, value: 0 };
      family.series.set(key, s);
    }
    return s;
  }

  /** This instance's labels under the call's, with names made valid, sorted by name. */
  private labelPairs(labels?: MetricLabels): [string, string][] {
    const merged = new Map<string, string>();
    for (const [k, v] of Object.entries(this.baseLabels)) merged.set(labelName(k), String(v));
    for (const [k, v] of Object.entries(labels ?? {})) merged.set(labelName(k), String(v));
    return [...merged].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }
}

/** A valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved). */
function labelName(name: string): string {
  let n = name.replace(/[^a-zA-Z0-9_]/g, '_');
  if (!/^[a-zA-Z_]/.test(n)) n = `_${n}`;
  if (n.startsWith('__')) n = `l${n}`;
  return n;
}

function seriesKey(pairs: readonly (readonly [string, string])[]): string {
  return JSON.stringify(pairs);
}

/** `{a="1",b="x\"y"}`, or nothing without labels. */
function formatLabels(pairs: readonly (readonly [string, string])[]): string {
  if (pairs.length === 0) return '';
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
}

/** A label value as the format wants it: `\`, `"` and line feeds escaped. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** A HELP text as the format wants it: `\` and line feeds escaped. */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A sample value: Go's float syntax (`+Inf`, `-Inf`, `NaN`, or the shortest decimal). */
function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Labels of one metric sample. */
export type MetricLabels = Readonly<Record<string, string>>;

/**
 * Where Spillway reports what it does. Names follow the reference
 * implementation: `buffer.batches_flushed`, `buffer.entries_flushed`,
 * `buffer.bytes_flushed`, `buffer.bytes_written`,
 * `buffer.flush_duration_seconds`, `buffer.manifest_writes` and
 * `buffer.manifest_conflicts` (label `role`: producer, consumer),
 * `buffer.batches_collected`, `buffer.entries_collected`,
 * `buffer.bytes_collected`, `buffer.consumer_lag_seconds`,
 * `buffer.queue_length`, `buffer.acks`, `buffer.gc_files_deleted`,
 * `buffer.gc_files_failed`, `buffer.gc_duration_seconds`,
 * `buffer.fetch_duration_seconds`. Implementations must not throw.
 */
export interface Metrics {
  /** Adds `value` to a counter. */
  increment(name: string, value?: number, labels?: MetricLabels): void;
  /** Records one observation of a histogram (durations in seconds). */
  observe(name: string, value: number, labels?: MetricLabels): void;
  /** Sets a gauge. */
  gauge(name: string, value: number, labels?: MetricLabels): void;
}

/** Metrics that go nowhere: the default. */
export const noopMetrics: Metrics = Object.freeze({
  increment: () => undefined,
  observe: () => undefined,
  gauge: () => undefined,
});

/** Metrics kept in memory, keyed by name and labels; for tests and simple reporting. */
export class InMemoryMetrics implements Metrics {
  readonly counters = new Map<string, number>();
  readonly gauges = new Map<string, number>();
  readonly histograms = new Map<string, number[]>();

  increment(name: string, value = 1, labels?: MetricLabels): void {
    const key = metricKey(name, labels);
    this.counters.set(key, (this.counters.get(key) ?? 0) + value);
  }
  observe(name: string, value: number, labels?: MetricLabels): void {
    const key = metricKey(name, labels);
    const list = this.histograms.get(key) ?? [];
    list.push(value);
    this.histograms.set(key, list);
  }
  gauge(name: string, value: number, labels?: MetricLabels): void {
    this.gauges.set(metricKey(name, labels), value);
  }
  /** A counter's value (0 if never incremented). */
  counter(name: string, labels?: MetricLabels): number {
    return this.counters.get(metricKey(name, labels)) ?? 0;
  }
}

/** `name{a="1",b="2"}` with labels sorted. */
export function metricKey(name: string, labels?: MetricLabels): string {
  if (!labels || Object.keys(labels).length === 0) return name;
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${labels[k]}"`);
  return `${name}{${parts.join(',')}}`;
}

/**
 * The one list of every metric Spillway emits: the name the library passes
 * to the `Metrics` interface (`buffer.batches_flushed`), its Prometheus name
 * (`spillway_buffer_batches_flushed_total`), its type, help text, unit, the
 * labels the library passes with it and, for histograms, the buckets. A new
 * metric is one entry here; exporters and documentation read this list.
 */
/** How a metric aggregates, as Prometheus names the types. */
export type MetricType = 'counter' | 'gauge' | 'histogram';

/** One metric of the registry. */
export interface MetricDefinition {
  /** The name the library passes to `Metrics`, e.g. `buffer.batches_flushed`. */
  readonly name: string;
  /**
   * The Prometheus name: `spillway_` + the name, the unit as a suffix
   * (`_bytes`, `_seconds`) and `_total` for counters.
   */
  readonly prometheusName: string;
  readonly type: MetricType;
  /** One sentence: what is counted or measured, and when. */
  readonly help: string;
  /** What one unit is: `batches`, `entries`, `bytes`, `seconds`, ... */
  readonly unit: string;
  /** Labels the library passes with it (an exporter may add its own, such as `queue`). */
  readonly labels: readonly string[];
  /** Histograms: upper bounds of the buckets, ascending (`+Inf` is implied). */
  readonly buckets?: readonly number[];
}

/** Buckets of short durations (a store round trip to a slow flush), in seconds. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
]);

/** Buckets of long durations (a collection pass), in seconds. */
export const LONG_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600,
]);

function counter(
  name: string,
  prometheusName: string,
  unit: string,
  help: string,
  labels: readonly string[] = [],
): MetricDefinition {
  return Object.freeze({ name, prometheusName, type: 'counter', unit, help, labels });
}

function gauge(
  name: string,
  prometheusName: string,
  unit: string,
  help: string,
  labels: readonly string[] = [],
): MetricDefinition {
  return Object.freeze({ name, prometheusName, type: 'gauge', unit, help, labels });
}

function histogram(
  name: string,
  prometheusName: string,
  help: string,
  buckets: readonly number[],
  labels: readonly string[] = [],
): MetricDefinition {
  return Object.freeze({
    name,
    prometheusName,
    type: 'histogram',
    unit: 'seconds',
    help,
    labels,
    buckets,
  });
}

const SUB = ['subscription'] as const;

/**
 * Every metric the library and the HTTP server emit, in the order an
 * exposition lists them.
 */
export const METRICS: readonly MetricDefinition[] = Object.freeze([
  // Producer.
  counter(
    'buffer.batches_flushed',
    'spillway_buffer_batches_flushed_total',
    'batches',
    'Batches a producer made durable (batch stored and appended to the queue).',
  ),
  counter(
    'buffer.entries_flushed',
    'spillway_buffer_entries_flushed_total',
    'entries',
    'Entries a producer made durable.',
  ),
  counter(
    'buffer.bytes_flushed',
    'spillway_buffer_flushed_bytes_total',
    'bytes',
    'Entry and metadata bytes a producer made durable (without encoding overhead).',
  ),
  counter(
    'buffer.bytes_written',
    'spillway_buffer_written_bytes_total',
    'bytes',
    'Bytes written to the store: batch objects, commits and manifests, by role.',
    ['role'],
  ),
  histogram(
    'buffer.flush_duration_seconds',
    'spillway_buffer_flush_duration_seconds',
    'Time from sealing a batch to its durable append, in seconds.',
    LATENCY_BUCKETS_SECONDS,
  ),
  counter(
    'buffer.manifest_writes',
    'spillway_buffer_manifest_writes_total',
    'writes',
    'Conditional writes of the queue that landed: v1 manifest writes, or log commits created, by role.',
    ['role'],
  ),
  counter(
    'buffer.manifest_conflicts',
    'spillway_buffer_manifest_conflicts_total',
    'conflicts',
    'Races lost on the v1 manifest or the log (another writer got there first), by role.',
    ['role'],
  ),
  counter(
    'buffer.riders_written',
    'spillway_buffer_riders_written_total',
    'riders',
    'Groups a producer published as riders for another producer to commit (log layout).',
  ),
  counter(
    'buffer.riders_included',
    'spillway_buffer_riders_included_total',
    'riders',
    "Other producers' riders this producer carried in its commits (log layout).",
  ),
  counter(
    'buffer.rider_stalls',
    'spillway_buffer_rider_stalls_total',
    'stalls',
    'Riders their owner committed itself because no other producer carried them in time (log layout).',
  ),
  counter(
    'buffer.slots_written',
    'spillway_buffer_slots_written_total',
    'slots',
    'Appends a producer wrote to a slot of its reservation (one write, no read; log layout).',
  ),
  counter(
    'buffer.slots_closed',
    'spillway_buffer_slots_closed_total',
    'reservations',
    'Reservations whose unused rest their producer voided (idle, too old, or closing; log layout).',
  ),
  counter(
    'buffer.slots_voided_under_writer',
    'spillway_buffer_slots_voided_under_writer_total',
    'slots',
    'Slot creates refused because a reader had voided the slot: the group went into a commit (log layout).',
  ),
  // Consumer.
  counter(
    'buffer.acks',
    'spillway_buffer_acks_total',
    'batches',
    'Batches a consumer acknowledged.',
  ),
  counter(
    'buffer.entries_collected',
    'spillway_buffer_entries_collected_total',
    'entries',
    'Entries whose acknowledgement a consumer wrote to the store.',
  ),
  gauge(
    'buffer.queue_length',
    'spillway_buffer_queue_length',
    'batches',
    'v1: batches left in the manifest after the last acknowledgement was applied.',
  ),
  gauge(
    'buffer.consumer_lag_seconds',
    'spillway_buffer_consumer_lag_seconds',
    'seconds',
    'Age of the batch a consumer handed out last, by its first ingestion time, in seconds.',
  ),
  histogram(
    'buffer.fetch_duration_seconds',
    'spillway_buffer_fetch_duration_seconds',
    'Time to fetch and check one batch object, in seconds.',
    LATENCY_BUCKETS_SECONDS,
  ),
  counter(
    'buffer.retention_lost_batches',
    'spillway_buffer_retention_lost_batches_total',
    'batches',
    'Batches a subscription lost (deleted before it read them), counted when the loss is recorded.',
    SUB,
  ),
  counter(
    'buffer.process_committed',
    'spillway_buffer_process_committed_total',
    'entries',
    'Entries process() finished with commit.',
    SUB,
  ),
  counter(
    'buffer.process_skipped',
    'spillway_buffer_process_skipped_total',
    'entries',
    'Entries process() passed over (skip, or skipped when their attempts ran out).',
    SUB,
  ),
  counter(
    'buffer.process_retried',
    'spillway_buffer_process_retried_total',
    'attempts',
    'Attempts of process() handlers that asked for a retry or threw.',
    SUB,
  ),
  counter(
    'buffer.process_exhausted',
    'spillway_buffer_process_exhausted_total',
    'entries',
    'Entries whose process() attempts ran out.',
    SUB,
  ),
  counter(
    'buffer.process_dead_lettered',
    'spillway_buffer_process_dead_lettered_total',
    'entries',
    'Entries process() wrote to the dead-letter queue.',
    SUB,
  ),
  counter(
    'buffer.process_redelivered',
    'spillway_buffer_process_redelivered_total',
    'entries',
    'Entries process() handed out again that a reader had finished before (at-least-once).',
    SUB,
  ),
  // Collector.
  counter(
    'buffer.batches_collected',
    'spillway_buffer_batches_collected_total',
    'batches',
    'Batch objects the collector deleted (v1).',
  ),
  counter(
    'buffer.bytes_collected',
    'spillway_buffer_collected_bytes_total',
    'bytes',
    'Bytes of the objects the collector deleted.',
  ),
  counter(
    'buffer.gc_files_deleted',
    'spillway_buffer_gc_files_deleted_total',
    'objects',
    'Objects the collector deleted.',
  ),
  counter(
    'buffer.gc_files_failed',
    'spillway_buffer_gc_files_failed_total',
    'objects',
    'Objects the collector failed to delete (tried again next pass).',
  ),
  histogram(
    'buffer.gc_duration_seconds',
    'spillway_buffer_gc_duration_seconds',
    'Time of one collection pass, in seconds.',
    LONG_BUCKETS_SECONDS,
  ),
  counter(
    'buffer.retention_expired_batches',
    'spillway_buffer_retention_expired_batches_total',
    'batches',
    'Batches retention deleted before every subscription had acknowledged them.',
  ),
  // Keyed buffer.
  counter('keyed.flushes', 'spillway_keyed_flushes_total', 'flushes', 'Successful key flushes.'),
  counter(
    'keyed.values_flushed',
    'spillway_keyed_values_flushed_total',
    'values',
    'Values handed to a successful onFlush.',
  ),
  counter(
    'keyed.retries',
    'spillway_keyed_retries_total',
    'attempts',
    'Flush attempts retried after a failure.',
  ),
  counter(
    'keyed.errors',
    'spillway_keyed_errors_total',
    'flushes',
    'Flushes that failed after their last retry.',
  ),
  counter(
    'keyed.undecodable_values',
    'spillway_keyed_undecodable_values_total',
    'values',
    'Durable values read back that the codec could not decode.',
  ),
  histogram(
    'keyed.flush_duration_seconds',
    'spillway_keyed_flush_duration_seconds',
    'Time of one successful onFlush call, in seconds.',
    LATENCY_BUCKETS_SECONDS,
  ),
  gauge(
    'keyed.keys_buffered',
    'spillway_keyed_keys_buffered',
    'keys',
    'Keys holding values (at most once a second, at the end of a flush).',
  ),
  gauge(
    'keyed.oldest_value_age_seconds',
    'spillway_keyed_oldest_value_age_seconds',
    'seconds',
    'Age of the oldest buffered value, in seconds (at most once a second).',
  ),
  // Store requests (CountingStore, RateLimitedStore).
  counter(
    'store.requests',
    'spillway_store_requests_total',
    'requests',
    'Requests made to the store, by operation kind (put, get, head, list, delete), as S3 bills them: a listing is one per 1,000 objects, a batch delete one per 1,000 keys.',
    ['op'],
  ),
  counter(
    'store.bytes_read',
    'spillway_store_read_bytes_total',
    'bytes',
    'Bytes read from the store (bodies of gets).',
  ),
  histogram(
    'store.throttle_wait_seconds',
    'spillway_store_throttle_wait_seconds',
    'Time a store call waited for the requests-per-second cap, in seconds (calls that did not wait are not observed).',
    LATENCY_BUCKETS_SECONDS,
  ),
  // HTTP server.
  counter(
    'http.requests',
    'spillway_http_requests_total',
    'requests',
    'HTTP requests answered, by method, route and status.',
    ['method', 'route', 'status'],
  ),
  histogram(
    'http.request_duration_seconds',
    'spillway_http_request_duration_seconds',
    'Time from receiving an HTTP request to its answer (long polls included), in seconds.',
    LATENCY_BUCKETS_SECONDS,
    ['method', 'route'],
  ),
  counter(
    'http.entries_accepted',
    'spillway_http_entries_accepted_total',
    'entries',
    'Entries accepted by POST .../entries (handed to the producer).',
  ),
  counter(
    'http.bytes_accepted',
    'spillway_http_accepted_bytes_total',
    'bytes',
    'Entry bytes accepted by POST .../entries.',
  ),
  counter(
    'http.entries_delivered',
    'spillway_http_entries_delivered_total',
    'entries',
    'Entries sent to HTTP readers (GET .../entries and the event stream).',
    SUB,
  ),
]);

const BY_NAME = new Map(METRICS.map((m) => [m.name, m]));

/** The registry's entry for a library name, or undefined for a name it does not know. */
export function metricDefinition(name: string): MetricDefinition | undefined {
  return BY_NAME.get(name);
}

/**
 * The Prometheus name of a library metric: the registry's, or for a name
 * the registry lacks, `spillway_` + the name with every character outside
 * `[a-zA-Z0-9_]` as `_` (+ `_total` for a counter).
 */
export function prometheusName(name: string, type: MetricType): string {
  const known = BY_NAME.get(name);
  if (known) return known.prometheusName;
  const base = `spillway_${name.replace(/[^a-zA-Z0-9_]/g, '_')}`;
  return type === 'counter' && !base.endsWith('_total') ? `${base}_total` : base;
}

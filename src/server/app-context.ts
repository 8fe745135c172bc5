/**
 * What every route of the HTTP API shares: the served queues, the settings,
 * the idempotency keys, metrics, the dashboard's sampler, and the server's lifecycle (requests in
 * flight, and a signal that aborts waits when the server closes).
 */
import type { Clock } from '../clock.ts';
import type { Logger } from '../logger.ts';
import type { PrometheusMetrics } from '../metrics/prometheus.ts';
import type { ObjectStore } from '../store/object-store.ts';
import type { DashboardSampler } from './dashboard/sampler.ts';
import type { IdempotencyKeys } from './idempotency.ts';
import type { ServedQueues } from './served-queues.ts';

/** The resolved settings the routes read. */
export interface AppSettings {
  maxBodyBytes: number;
  admissionWaitMs: number;
  maxWaitMs: number;
  pollIntervalMs: number;
  maxEntriesPerRead: number;
  sseHeartbeatMs: number;
  /** Most entries one POST may hold: more can never fit one batch of the producer. */
  maxEntriesPerRequest: number;
}

/** See the module comment. */
export interface AppContext {
  readonly queues: ServedQueues;
  /**
   * The store every queue is served from, as the server uses it: its
   * requests counted by kind in `metrics` and held to the server's
   * requests-per-second cap. Roles added to the same process (the demo's
   * producers and consumer) use this one, so they share the count and the cap.
   */
  readonly store: ObjectStore;
  /** The dashboard's figures. */
  readonly dashboard: DashboardSampler;
  readonly settings: AppSettings;
  readonly idempotency: IdempotencyKeys;
  readonly metrics: PrometheusMetrics;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Aborts when the server starts closing: long polls answer, streams end. */
  readonly closing: AbortSignal;
  /**
   * Counts a piece of work the server must finish before its producers
   * close (an ingest request from its body to its answer).
   */
  track<T>(work: Promise<T>): Promise<T>;
}

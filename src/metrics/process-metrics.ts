/**
 * The process's own metrics, in the names Prometheus clients use for every
 * language (`process_*`) and for Node (`nodejs_*`): CPU time, resident
 * memory, start time, heap, and event-loop lag.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { MetricType } from './registry.ts';

/** One sample of a process metric. */
export interface ProcessSample {
  readonly name: string;
  readonly type: MetricType;
  readonly help: string;
  readonly value: number;
}

/** Resolution of the event-loop delay monitor, in ms. */
const LAG_RESOLUTION_MS = 20;

/**
 * Samples the process's metrics on demand. The event-loop lag is measured
 * continuously (a native timer that does not keep the process alive) and
 * reported as the mean and the 99th percentile since the previous sample.
 * {@link close} stops the measurement; idempotent.
 */
export class ProcessMetrics {
  private readonly lag: IntervalHistogram;
  private readonly startTimeSeconds: number;
  private closed = false;

  constructor() {
    this.lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
    this.lag.enable();
    this.startTimeSeconds = Math.round(Date.now() / 1000 - process.uptime());
  }

  /** Every process metric, sampled now. */
  samples(): ProcessSample[] {
    const cpu = process.cpuUsage();
    const memory = process.memoryUsage();
    // The histogram records the delay beyond the resolution's own timer, in ns; an
    // empty one (closed, or no tick yet) reads NaN.
    const mean = this.lag.count > 0 ? this.lag.mean / 1e9 : 0;
    const p99 = this.lag.count > 0 ? this.lag.percentile(99) / 1e9 : 0;
    if (!this.closed) this.lag.reset();
    return [
      {
        name: 'process_cpu_user_seconds_total',
        type: 'counter',
        help: 'User CPU time spent, in seconds.',
        value: cpu.user / 1e6,
      },
      {
        name: 'process_cpu_system_seconds_total',
        type: 'counter',
        help: 'System CPU time spent, in seconds.',
        value: cpu.system / 1e6,
      },
      {
        name: 'process_cpu_seconds_total',
        type: 'counter',
        help: 'User and system CPU time spent, in seconds.',
        value: (cpu.user + cpu.system) / 1e6,
      },
      {
        name: 'process_resident_memory_bytes',
        type: 'gauge',
        help: 'Resident memory size, in bytes.',
        value: memory.rss,
      },
      {
        name: 'process_start_time_seconds',
        type: 'gauge',
        help: 'Start time of the process since the Unix epoch, in seconds.',
        value: this.startTimeSeconds,
      },
      {
        name: 'nodejs_heap_size_total_bytes',
        type: 'gauge',
        help: 'V8 heap size, in bytes.',
        value: memory.heapTotal,
      },
      {
        name: 'nodejs_heap_size_used_bytes',
        type: 'gauge',
        help: 'V8 heap used, in bytes.',
        value: memory.heapUsed,
      },
      {
        name: 'nodejs_external_memory_bytes',
        type: 'gauge',
        help: 'Memory of C++ objects bound to JavaScript objects (buffers included), in bytes.',
        value: memory.external,
      },
      {
        name: 'nodejs_eventloop_lag_seconds',
        type: 'gauge',
        help: 'Mean event-loop delay since the previous scrape, in seconds.',
        value: mean,
      },
      {
        name: 'nodejs_eventloop_lag_p99_seconds',
        type: 'gauge',
        help: '99th percentile of the event-loop delay since the previous scrape, in seconds.',
        value: p99,
      },
    ];
  }

  /** Stops measuring the event-loop lag. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.lag.disable();
  }
}

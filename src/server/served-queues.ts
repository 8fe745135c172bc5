/**
 * The queues one server serves: a {@link Queue} handle per name (all on the
 * server's store), one {@link Producer} per queue created on its first
 * write, and a way for readers waiting on a queue to hear of this server's
 * appends at once.
 */
import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock.ts';
import { asError, NotFoundError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { Producer, type ProducerOptions } from '../producer/producer.ts';
import type { LogQueue } from '../queue/log-queue.ts';
import { Queue, type Layout } from '../queue/queue.ts';
import { ShardedQueue } from '../shard/sharded-queue.ts';
import type { ObjectStore } from '../store/object-store.ts';
import { HttpError } from './http-error.ts';
import { queueNameOfKey, queuePaths } from './queue-name.ts';

/**
 * Producer options the server passes on (the queue, metrics, logger and
 * clock are the server's).
 */
export type ServedProducerOptions = Omit<
  ProducerOptions,
  'queue' | 'store' | 'manifestPath' | 'dataPathPrefix' | 'layout' | 'metrics' | 'logger' | 'clock'
>;

/** Options of {@link ServedQueues}. */
export interface ServedQueuesOptions {
  store: ObjectStore;
  createQueues: boolean;
  producer: ServedProducerOptions;
  /** Metrics of the roles, given a `queue` label per queue. */
  metricsFor: (queue: string) => Metrics;
  logger: Logger;
  clock: Clock;
}

/** Wakes the readers waiting on one queue. */
class AppendSignal {
  private waiters = new Set<() => void>();

  /** Resolves at the next {@link notify}, or when `signal` aborts (never rejects). */
  wait(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        this.waiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.waiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  notify(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** See the module comment. */
export class ServedQueues {
  /** Written as the holder of cursors this server creates. */
  readonly writer = `spillway-http/${randomUUID()}`;
  private readonly queues = new Map<string, Queue>();
  private readonly logs = new Map<string, LogQueue>();
  private readonly layouts = new Map<string, Layout>();
  private readonly producers = new Map<string, Promise<Producer>>();
  private readonly signals = new Map<string, AppendSignal>();
  private closing: Promise<void> | undefined;

  constructor(private readonly o: ServedQueuesOptions) {}

  /** The handle of queue `name` (validated). */
  queue(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = Queue.open({ store: this.o.store, ...queuePaths(name) });
      this.queues.set(name, q);
    }
    return q;
  }

  /** The names of the queues this server has opened (written to, read from, or asked about), sorted. */
  names(): string[] {
    return [...this.layouts.keys()].sort();
  }

  /** The log layout's state of queue `name`, with this server's metrics and writer id. */
  log(name: string): LogQueue {
    let l = this.logs.get(name);
    if (!l) {
      l = this.queue(name).logQueue({
        metrics: this.o.metricsFor(name),
        logger: this.o.logger,
        clock: this.o.clock,
        writer: this.writer,
      });
      this.logs.set(name, l);
    }
    return l;
  }

  /**
   * The layout of queue `name`, or undefined when there is no queue (no v1
   * manifest, no log descriptor). A layout found is remembered: a queue
   * keeps its layout.
   */
  async layoutOf(name: string, signal?: AbortSignal): Promise<Layout | undefined> {
    const known = this.layouts.get(name);
    if (known) return known;
    const q = this.queue(name);
    const [manifest, log] = await Promise.all([
      q.store.head(q.manifestPath, { signal }).then(
        () => true,
        (e: unknown) => {
          if (e instanceof NotFoundError) return false;
          throw e;
        },
      ),
      this.log(name).readDescriptor(signal),
    ]);
    const found: Layout | undefined = manifest ? 'v1' : log ? 'log' : undefined;
    if (found) this.layouts.set(name, found);
    else if (!this.producers.has(name)) {
      // Handles are kept for queues that exist: names probed in vain cost no memory.
      this.queues.delete(name);
      this.logs.delete(name);
    }
    return found;
  }

  /**
   * The layout of queue `name`, which must exist.
   *
   * @throws {HttpError} 404 when there is no queue of that name.
   */
  async existing(name: string, signal?: AbortSignal): Promise<Layout> {
    const layout = await this.layoutOf(name, signal);
    if (!layout) throw noQueue(name);
    return layout;
  }

  /**
   * The producer of queue `name`, created on first use. A queue that does
   * not exist is created (log layout) when the server creates queues, else
   * refused.
   *
   * @throws {HttpError} 404 for a queue that does not exist (without `createQueues`).
   * @throws {HttpError} 503 `SHUTTING_DOWN` once the server is closing.
   */
  producer(name: string, signal?: AbortSignal): Promise<Producer> {
    if (this.closing) {
      return Promise.reject(
        new HttpError(503, 'SHUTTING_DOWN', 'the server is closing; nothing was accepted', {
          headers: { 'Retry-After': '1' },
        }),
      );
    }
    let p = this.producers.get(name);
    if (!p) {
      p = (async () => {
        if (!(await this.layoutOf(name, signal))) {
          if (!this.o.createQueues) throw noQueue(name, true);
          await this.refuseSharded(name, signal);
          const q = this.queue(name);
          await q.ensureLog(this.log(name), signal);
          this.layouts.set(name, 'log');
        }
        return new Producer({
          // Each waiting call is an HTTP request here (socket, request context), which the
          // byte budget does not count: hold at most 10,000 unless told otherwise.
          maxBufferedInputs: 10_000,
          ...this.o.producer,
          queue: this.queue(name),
          metrics: this.o.metricsFor(name),
          logger: this.o.logger,
          clock: this.o.clock,
        });
      })();
      this.producers.set(name, p);
      // A failure is not kept: the next request asks again.
      p.catch(() => {
        if (this.producers.get(name) === p) this.producers.delete(name);
      });
    }
    return p;
  }

  /**
   * Refuses to start a queue inside a sharded queue's prefix (its descriptor
   * `{name}/sharded`): the sharded queue's readers read its vnodes, and would
   * never see what went into a plain queue beside them.
   *
   * @throws {HttpError} 409 `SHARDED_LAYOUT` when `name` is a sharded queue.
   */
  private async refuseSharded(name: string, signal?: AbortSignal): Promise<void> {
    const sharded = await this.o.store.head(ShardedQueue.descriptorKey(name), { signal }).then(
      () => true,
      (e: unknown) => {
        if (e instanceof NotFoundError) return false;
        throw e;
      },
    );
    if (sharded) {
      throw new HttpError(
        409,
        'SHARDED_LAYOUT',
        `"${name}" is a sharded queue (${ShardedQueue.descriptorKey(name)}), which this server does not serve; write to it with a sharded producer (spillway produce --key-field)`,
      );
    }
  }

  /** Tells the readers waiting on queue `name` that this server appended to it. */
  appended(name: string): void {
    this.signals.get(name)?.notify();
  }

  /** Resolves at this server's next append to queue `name`, or when `signal` aborts. */
  nextAppend(name: string, signal: AbortSignal): Promise<void> {
    let s = this.signals.get(name);
    if (!s) {
      s = new AppendSignal();
      this.signals.set(name, s);
    }
    return s.wait(signal);
  }

  /**
   * The names of the queues in the store: every prefix holding a log
   * descriptor (`{name}/queue`) or a v1 manifest (`{name}/manifest`). Lists
   * the whole store, so it costs one listing request per 1,000 objects.
   */
  async list(signal?: AbortSignal): Promise<string[]> {
    const names = new Set<string>();
    for await (const meta of this.o.store.list('', { signal })) {
      const name = queueNameOfKey(meta.key);
      if (name) names.add(name);
    }
    return [...names].sort();
  }

  /**
   * Closes every producer (each makes everything it accepted durable), then
   * the queue handles; runs every step even when one fails and rejects with
   * the first failure. Idempotent.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.closing ??= (async () => {
      const errors: unknown[] = [];
      const producers = await Promise.allSettled([...this.producers.values()]);
      await Promise.all(
        producers.map(async (p) => {
          if (p.status !== 'fulfilled') return;
          await p.value
            .close(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs })
            .catch((e: unknown) => errors.push(e));
        }),
      );
      for (const s of this.signals.values()) s.notify();
      for (const q of this.queues.values()) await q.close().catch((e: unknown) => errors.push(e));
      if (errors.length > 0) throw asError(errors[0]);
    })();
    return this.closing;
  }
}

function noQueue(name: string, writing = false): HttpError {
  return new HttpError(
    404,
    'QUEUE_NOT_FOUND',
    writing
      ? `no queue "${name}": this server creates queues on first write only when started with --create-queues (createQueues: true)`
      : `no queue "${name}"`,
  );
}

/**
 * Case (h): 1, 2, 4 and 8 producer processes flat out on one queue, each
 * offered the same load (a closed loop of `callers` callers of 1 KiB
 * entries, flushIntervalMs 0). The processes are forked once
 * (producer-worker.ts) and reused, so start-up is never measured; every run
 * gets a fresh queue and starts all its processes at the same instant.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { Producer, type Layout } from '../src/index.ts';
import type { BenchStore } from './backends.ts';
import type { WorkerReply, WorkerRequest, WorkerResult } from './producer-worker.ts';
import { latencySummary, type LatencySummary } from './stats.ts';

/** Aggregate figures of one run. */
export interface ProcessesResult extends LatencySummary {
  /** Entries made durable per second, all processes together. */
  entriesPerSecond: number;
  /** Appends (commits or manifest writes) per second, all processes together. */
  appendsPerSecond: number;
  /** Races lost per append that landed. */
  conflictsPerAppend: number;
  /** The slowest durable latency, in ms. */
  maxMs: number;
  /** Riders written per append that landed (log layout). */
  ridersPerAppend: number;
  /** Riders carried by another process's commit, per rider written. */
  ridersIncludedShare: number;
  /** Store requests per entry made durable, all processes together. */
  requestsPerEntry: number;
  /** The same by operation (get, head, put, list, delete). */
  requestsPerEntryByOp: Record<string, number>;
  /** CPU cores the processes kept busy on average (their CPU time over the run's time). */
  cpuCores: number;
  /** Owners that committed their rider themselves (stalls), all processes. */
  riderStalls: number;
  /** Entries of the process that made the fewest over those of the one that made the most (1: fair). */
  fairness: number;
}

/** Time the parent allows the processes to receive `go` before they all start. */
const START_MARGIN_MS = 100;

/** A set of forked producer processes. */
export class ProducerProcesses {
  private constructor(private readonly children: ChildProcess[]) {}

  /** Forks `count` producer processes (TypeScript through tsx, like the parent) and waits until each is up. */
  static async start(count: number): Promise<ProducerProcesses> {
    const worker = new URL('./producer-worker.ts', import.meta.url).pathname;
    const root = new URL('..', import.meta.url).pathname;
    const children = Array.from({ length: count }, () =>
      fork(worker, [], {
        cwd: root,
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      }),
    );
    const processes = new ProducerProcesses(children);
    try {
      await Promise.all(children.map((c) => answer(c)));
    } catch (e) {
      await processes.close();
      throw e;
    }
    return processes;
  }

  /**
   * Runs `processes` of them for `durationMs` on the queue of `store` (created
   * here with one entry in `layout`, so no process races to create it). With
   * `separateQueues`, each process writes its own queue under the store
   * (`p0`, `p1`, …) instead: nothing is shared but the machine and the
   * store's server, which makes the run the ceiling that one shared queue
   * can at best reach here.
   */
  async run(
    store: BenchStore,
    layout: Layout,
    processes: number,
    callers: number,
    durationMs: number,
    separateQueues = false,
  ): Promise<ProcessesResult> {
    if (processes > this.children.length) throw new Error(`only ${this.children.length} processes`);
    if (!separateQueues) {
      const creator = new Producer({ store: store.store, layout, flushIntervalMs: 0 });
      await (
        await creator.produce([new Uint8Array(1024)])
      ).durable;
      await creator.close();
    }

    const children = this.children.slice(0, processes);
    await Promise.all(
      children.map((c, i) =>
        request(c, {
          type: 'prepare',
          url: separateQueues ? subfolderUrl(store.url, `p${i}`) : store.url,
          layout,
          callers,
        }),
      ),
    );
    const startAtMs = Date.now() + START_MARGIN_MS;
    const results = (await Promise.all(
      children.map((c) => request(c, { type: 'go', startAtMs, durationMs })),
    )) as WorkerResult[];

    const seconds = (Math.max(...results.map((r) => r.finishedAtMs)) - startAtMs) / 1000;
    let ops = 0;
    let appends = 0;
    let conflicts = 0;
    let ridersWritten = 0;
    let ridersIncluded = 0;
    let riderStalls = 0;
    let cpuMs = 0;
    let requests = 0;
    const byOp: Record<string, number> = {};
    let maxMs = 0;
    const latencies: number[] = [];
    for (const r of results) {
      ops += r.ops;
      appends += r.appends;
      conflicts += r.conflicts;
      ridersWritten += r.ridersWritten;
      ridersIncluded += r.ridersIncluded;
      riderStalls += r.riderStalls;
      cpuMs += r.cpuMs;
      requests += r.requests;
      for (const [op, n] of Object.entries(r.requestsByOp)) byOp[op] = (byOp[op] ?? 0) + n;
      for (const l of r.latencies) {
        latencies.push(l);
        if (l > maxMs) maxMs = l;
      }
    }
    const perProcess = results.map((r) => r.ops);
    return {
      entriesPerSecond: ops / seconds,
      appendsPerSecond: appends / seconds,
      conflictsPerAppend: appends > 0 ? conflicts / appends : 0,
      ridersPerAppend: appends > 0 ? ridersWritten / appends : 0,
      ridersIncludedShare: ridersWritten > 0 ? ridersIncluded / ridersWritten : 0,
      riderStalls,
      cpuCores: cpuMs / 1000 / seconds,
      requestsPerEntry: ops > 0 ? requests / ops : 0,
      requestsPerEntryByOp: Object.fromEntries(
        Object.entries(byOp).map(([op, n]) => [op, ops > 0 ? n / ops : 0]),
      ),
      maxMs,
      fairness: Math.min(...perProcess) / Math.max(1, ...perProcess),
      ...latencySummary(latencies),
    };
  }

  /** Ends every process (closing its channel; a process that does not leave is killed). */
  async close(): Promise<void> {
    await Promise.all(
      this.children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
            c.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            if (c.connected) c.disconnect();
            else c.kill();
          }),
      ),
    );
  }
}

/** `url` with `/{name}` added to its path (before any query). */
export function subfolderUrl(url: string, name: string): string {
  const q = url.indexOf('?');
  const [path, query] = q < 0 ? [url, ''] : [url.slice(0, q), url.slice(q)];
  return `${path.replace(/\/+$/, '')}/${name}${query}`;
}

/** Sends one request and waits for its answer. */
function request(child: ChildProcess, message: WorkerRequest): Promise<WorkerReply> {
  const answered = answer(child);
  child.send(message);
  return answered;
}

/** The next message of a process; an error answer or an exit rejects. */
function answer(child: ChildProcess): Promise<WorkerReply> {
  return new Promise((resolve, reject) => {
    const onMessage = (reply: WorkerReply): void => {
      cleanup();
      if (reply.type === 'error')
        reject(new Error(`producer process ${child.pid}: ${reply.message}`));
      else resolve(reply);
    };
    const onExit = (code: number | null, signal: string | null): void => {
      cleanup();
      reject(new Error(`producer process ${child.pid} exited (${signal ?? code})`));
    };
    const cleanup = (): void => {
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

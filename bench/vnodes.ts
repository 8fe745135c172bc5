/**
 * Case (o): sharded queues. Durable throughput of 4 producer processes into
 * 1, 8 and 32 vnodes (appends spread over V logs, each still written by
 * every process, in smaller commits as V grows), with what it cost in
 * requests, and the time the members of a consumer group take to own a dead
 * member's vnodes.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ShardedQueue } from '../src/shard/sharded-queue.ts';
import type { BenchStore } from './backends.ts';

const root = new URL('..', import.meta.url).pathname;

/** What `processes` producer processes made durable into a sharded queue, all together. */
export interface ShardedResult {
  /** Entries made durable per second. */
  entriesPerSecond: number;
  /** Entries per commit (appends that landed, all vnodes). */
  entriesPerAppend: number;
  /** Store requests per entry, in all and by operation. */
  requestsPerEntry: number;
  requestsPerEntryByOp: Record<string, number>;
  /** Races lost per append that landed; riders written per append; owners' stall commits. */
  conflictsPerAppend: number;
  ridersPerAppend: number;
  riderStalls: number;
  /** CPU cores the processes kept busy on average. */
  cpuCores: number;
}

/** What `processes` processes make durable into a fresh sharded queue of `vnodes`. */
export async function shardedThroughput(
  s: BenchStore,
  vnodes: number,
  processes: number,
  callers: number,
  durationMs: number,
): Promise<ShardedResult> {
  // Created once here, so no process races to create it.
  await (await ShardedQueue.open({ store: s.store, vnodeCapacity: vnodes })).close();
  const worker = new URL('./sharded-worker.ts', import.meta.url).pathname;
  const children = Array.from({ length: processes }, () =>
    fork(worker, [s.url, String(vnodes), String(callers), String(durationMs)], {
      cwd: root,
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  try {
    await Promise.all(children.map((c) => message(c, 'ready')));
    const startAtMs = Date.now() + 200;
    const results = children.map((c) => message(c, 'result'));
    for (const c of children) c.send({ startAtMs });
    const r = (await Promise.all(results)) as {
      ops: number;
      finishedAtMs: number;
      cpuMs: number;
      counts: Record<string, number>;
    }[];
    const seconds = (Math.max(...r.map((x) => x.finishedAtMs)) - startAtMs) / 1000;
    const ops = r.reduce((n, x) => n + x.ops, 0);
    const sum = (name: string): number => r.reduce((n, x) => n + (x.counts[name] ?? 0), 0);
    const perEntry = (n: number): number => (ops > 0 ? n / ops : 0);
    const byOp = Object.fromEntries(
      ['get', 'head', 'put', 'list', 'delete'].map((op) => [op, perEntry(sum(op))]),
    );
    const appends = sum('appends');
    return {
      entriesPerSecond: ops / seconds,
      entriesPerAppend: appends > 0 ? ops / appends : 0,
      requestsPerEntry: Object.values(byOp).reduce((n, x) => n + x, 0),
      requestsPerEntryByOp: byOp,
      conflictsPerAppend: appends > 0 ? sum('conflicts') / appends : 0,
      ridersPerAppend: appends > 0 ? sum('ridersWritten') / appends : 0,
      riderStalls: sum('riderStalls'),
      cpuCores: r.reduce((n, x) => n + x.cpuMs, 0) / 1000 / seconds,
    };
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  }
}

/**
 * Starts `members` group members on a sharded queue of `vnodes`, waits until
 * they share every vnode, SIGKILLs one, and returns the ms until the others
 * own every vnode again.
 */
export async function takeoverMs(
  s: BenchStore,
  vnodes: number,
  members: number,
  leaseTtlMs: number,
): Promise<number> {
  await (await ShardedQueue.open({ store: s.store, vnodeCapacity: vnodes })).close();
  const script = new URL('./group-member.ts', import.meta.url).pathname;
  const owned = new Map<string, number[]>();
  let changed: (() => void) | undefined;
  const children: ChildProcess[] = [];
  for (let i = 0; i < members; i++) {
    const id = `m${i}`;
    const c = spawn(process.execPath, ['--import', 'tsx', script, s.url, id, String(leaseTtlMs)], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(c);
    createInterface({ input: c.stdout as NodeJS.ReadableStream }).on('line', (l) => {
      const m = JSON.parse(l) as { id: string; vnodes: number[] };
      owned.set(m.id, m.vnodes);
      changed?.();
    });
  }
  const until = async (ok: () => boolean, timeoutMs: number): Promise<void> => {
    const deadline = performance.now() + timeoutMs;
    while (!ok()) {
      if (performance.now() > deadline) throw new Error('group assignment did not settle');
      await new Promise<void>((r) => {
        changed = r;
        setTimeout(r, 100);
      });
    }
  };
  const covered = (ids: string[]): boolean => {
    const all = new Set(ids.flatMap((id) => owned.get(id) ?? []));
    return all.size === vnodes;
  };
  try {
    const ids = children.map((_, i) => `m${i}`);
    // Settled: every vnode owned by exactly one member, and every member owning some.
    const settled = (): boolean =>
      covered(ids) &&
      ids.reduce((n, id) => n + (owned.get(id)?.length ?? 0), 0) === vnodes &&
      ids.every((id) => (owned.get(id)?.length ?? 0) > 0);
    await until(settled, 20 * leaseTtlMs);
    const victim = children[0] as ChildProcess;
    victim.kill('SIGKILL');
    const killedAt = performance.now();
    await until(() => covered(ids.slice(1)), 20 * leaseTtlMs);
    return performance.now() - killedAt;
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  }
}

function message(child: ChildProcess, type: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { type: string }): void => {
      if (m.type !== type) return;
      child.off('message', onMessage);
      resolve(m);
    };
    child.on('message', onMessage);
    child.once('exit', (code) => reject(new Error(`sharded worker exited (${code})`)));
  });
}

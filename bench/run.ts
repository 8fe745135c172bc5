/**
 * `npm run bench [-- --quick] [-- --only a,b,c,d,e,f,g] [-- --backends memory,file,s3]`
 *
 * Spillway against the physical limits of this machine, measured in the same
 * run. Prints a table and writes JSON to bench/results/.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Compression } from '../src/index.ts';
import { ensureRgw, freshStore, type Backend } from './backends.ts';
import { closedLoop } from './closed-loop.ts';
import { drain, fillBacklog } from './drain.ts';
import { designFloor, rawGetMBps, rawGroupCommit, rawPut, sequentialWriteMBps } from './limits.ts';
import { appendCost } from './manifest-growth.ts';
import { openLoop } from './open-loop.ts';
import { requestsPerGb } from './requests.ts';
import { stalledMemory } from './stalled-memory.ts';
import { round } from './stats.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string', default: 'a,b,c,d,e,f,g' },
    backends: { type: 'string', default: 'memory,file,s3' },
  },
});
const quick = values.quick;
const only = new Set(values.only.split(','));
const backends = values.backends.split(',') as Backend[];
const MiB = 1024 * 1024;

/** One measured figure. */
interface Row {
  case: string;
  backend: string;
  params: string;
  value: number;
  unit: string;
  limit?: number;
  ratio?: number;
  extra?: Record<string, number>;
}
const rows: Row[] = [];
function add(row: Row): void {
  if (row.limit !== undefined && row.limit > 0) row.ratio = round(row.value / row.limit, 2);
  row.value = round(row.value, row.value < 10 ? 2 : 0);
  if (row.limit !== undefined) row.limit = round(row.limit, row.limit < 10 ? 2 : 0);
  rows.push(row);
  const extra = row.extra
    ? ' ' +
      Object.entries(row.extra)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')
    : '';
  console.error(
    `  ${row.case} ${row.backend} ${row.params}: ${row.value} ${row.unit}${row.ratio !== undefined ? ` (${row.ratio} of ${row.limit})` : ''}${extra}`,
  );
}

const root = new URL('..', import.meta.url).pathname;
// The stalled-store case runs the built package.
const build = spawnSync(
  process.execPath,
  [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
  { cwd: root, stdio: 'inherit' },
);
if (build.status !== 0) process.exit(1);
const stopRgw = backends.includes('s3') ? ensureRgw() : () => undefined;
const started = Date.now();
try {
  const seconds = quick ? 1000 : 3000;

  // (c) the limits of this machine, first.
  const fileDir = await freshStore('file');
  const seqMBps = await sequentialWriteMBps(fileDir.dir as string, quick ? 128 * MiB : 512 * MiB);
  add({
    case: 'c limit',
    backend: 'file',
    params: 'sequential write + fsync',
    value: seqMBps,
    unit: 'MB/s',
  });
  const groupCommit = new Map<number, number>();
  for (const writers of [1, 16, 256]) {
    const r = await rawGroupCommit(fileDir.dir as string, writers, seconds);
    groupCommit.set(writers, r.opsPerSecond);
    add({
      case: 'c limit',
      backend: 'file',
      params: `group-commit fdatasync, ${writers} writers, 1 KiB`,
      value: r.opsPerSecond,
      unit: 'msgs/s',
      extra: { p50Ms: r.p50Ms, p99Ms: r.p99Ms },
    });
  }
  await fileDir.dispose();
  // The floor of this design per durable round trip: a batch create, a manifest read and a
  // conditional manifest write, one after another (no contention), on each store.
  for (const backend of backends.filter((b) => b !== 'memory')) {
    const s = await freshStore(backend);
    const r = await designFloor(s.store, quick ? 50 : 200);
    await s.dispose();
    add({
      case: 'c limit',
      backend,
      params: 'design floor: batch create + manifest read + conditional write, 1 KiB',
      value: 1000 / r.msPerRoundTrip,
      unit: 'round trips/s',
      extra: { createMs: r.createMs, readMs: r.readMs, conditionalWriteMs: r.conditionalWriteMs },
    });
  }
  const rawPutLimit = new Map<number, number>();
  let rawPutMBps = 0;
  if (backends.includes('s3')) {
    const s3 = await freshStore('s3');
    for (const c of [1, 16, 256]) {
      const r = await rawPut(s3.store, c, 1024, seconds);
      rawPutLimit.set(c, r.opsPerSecond);
      add({
        case: 'c limit',
        backend: 's3',
        params: `raw PUT 1 KiB, ${c} clients`,
        value: r.opsPerSecond,
        unit: 'PUT/s',
        extra: { p50Ms: r.p50Ms, p99Ms: r.p99Ms },
      });
    }
    const big = await rawPut(s3.store, 4, 8 * MiB, seconds);
    rawPutMBps = big.mbPerSecond;
    add({
      case: 'c limit',
      backend: 's3',
      params: 'raw PUT 8 MiB, 4 clients',
      value: big.mbPerSecond,
      unit: 'MB/s',
    });
    await s3.dispose();
  }

  if (only.has('a')) {
    for (const backend of backends) {
      for (const entryBytes of [100, 1024, 64 * 1024]) {
        for (const compression of ['none', 'zstd'] as Compression[]) {
          const s = await freshStore(backend);
          const total =
            (backend === 's3' ? 32 : quick ? 32 : 256) * MiB * (entryBytes === 100 ? 0.25 : 1);
          const r = await openLoop(s.store, entryBytes, compression, total);
          await s.dispose();
          const limit = backend === 'file' ? seqMBps : backend === 's3' ? rawPutMBps : undefined;
          add({
            case: 'a open loop',
            backend,
            params: `${entryBytes} B, ${compression}`,
            value: r.mbPerSecond,
            unit: 'MB/s',
            ...(limit ? { limit } : {}),
            extra: { entriesPerSecond: round(r.entriesPerSecond) },
          });
        }
      }
    }
  }

  if (only.has('b')) {
    for (const backend of backends.filter((b) => b !== 'memory')) {
      for (const flushIntervalMs of [0, 100]) {
        for (const producers of [1, 16, 256]) {
          const s = await freshStore(backend);
          const r = await closedLoop(s.store, producers, flushIntervalMs, seconds);
          await s.dispose();
          const limit =
            backend === 'file' ? groupCommit.get(producers) : rawPutLimit.get(producers);
          add({
            case: 'b closed loop',
            backend,
            params: `${producers} producers, flushIntervalMs ${flushIntervalMs}`,
            value: r.entriesPerSecond,
            unit: 'entries/s',
            ...(limit ? { limit } : {}),
            extra: {
              p50Ms: r.p50Ms,
              p99Ms: r.p99Ms,
              manifestWritesPerS: round(r.manifestWritesPerSecond, 1),
            },
          });
        }
      }
    }
  }

  if (only.has('d')) {
    for (const backend of backends) {
      const batches = quick ? 24 : 64;
      for (const readAhead of [1, 8, 32]) {
        const s = await freshStore(backend);
        const keys = await fillBacklog(s.store, batches, 1024);
        const r = await drain(s.store, readAhead);
        // Raw GETs of the same objects afterwards (the drain does not delete them), as warm as the drain's.
        // The best of one reader and eight: RGW on this machine serves parallel 1 MiB GETs worse than serial ones.
        const limit = Math.max(
          await rawGetMBps(s.store, keys, 1),
          await rawGetMBps(s.store, keys, 8),
        );
        await s.dispose();
        add({
          case: 'd drain',
          backend,
          params: `read-ahead ${readAhead}, 1 MiB batches`,
          value: r.mbPerSecond,
          unit: 'MB/s',
          limit,
          extra: { entriesPerSecond: round(r.entriesPerSecond) },
        });
      }
    }
  }

  if (only.has('e')) {
    for (const backend of backends) {
      for (const pending of [1, 1000, 10_000, 100_000]) {
        if (quick && pending === 100_000 && backend === 's3') continue;
        const s = await freshStore(backend);
        const r = await appendCost(s.store, pending, pending >= 100_000 ? 5 : 20);
        await s.dispose();
        add({
          case: 'e manifest append',
          backend,
          params: `${pending} pending`,
          value: r.msPerAppend,
          unit: 'ms/append',
          extra: { bytesWrittenPerAppend: r.bytesPerAppend },
        });
      }
    }
  }

  if (only.has('f')) {
    const budget = 64 * MiB;
    const r = stalledMemory(budget, seconds);
    add({
      case: 'f stalled store',
      backend: 'memory',
      params: 'maxBufferedBytes 64 MiB, 1 KiB entries',
      // Growth over the process before it produced anything (Node itself takes ~50 MiB).
      value: (r.peakRss - r.baselineRss) / MiB,
      unit: 'MiB RSS growth',
      limit: budget / MiB + 64,
      extra: {
        baselineRssMiB: round(r.baselineRss / MiB),
        peakRssMiB: round(r.peakRss / MiB),
        peakArrayBuffersMiB: round(r.peakArrayBuffers / MiB),
        liveArrayBuffersAfterGcMiB: round(r.liveArrayBuffersAfterGc / MiB),
        producedEntries: r.produced,
      },
    });
  }

  if (only.has('g')) {
    for (const backend of backends.filter((b) => b !== 'memory')) {
      const s = await freshStore(backend);
      const r = await requestsPerGb(s.store, (quick ? 32 : 128) * MiB);
      await s.dispose();
      add({
        case: 'g requests per GB',
        backend,
        params: 'defaults, 1 KiB entries',
        value: r.put + r.get + r.head + r.list + r.delete,
        unit: 'requests/GB',
        extra: Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v as number, 1)])),
      });
    }
  }
} finally {
  stopRgw();
}

const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? 'unknown',
  memoryGiB: round(totalmem() / 1024 ** 3, 1),
  node: process.version,
};
const result = { startedAt: new Date(started).toISOString(), quick, machine, rows };
await mkdir(join(root, 'bench/results'), { recursive: true });
const file = join(
  root,
  'bench/results',
  `${new Date(started).toISOString().replace(/[:.]/g, '-')}${quick ? '-quick' : ''}.json`,
);
await writeFile(file, JSON.stringify(result, null, 2) + '\n');
await writeFile(join(root, 'bench/results/latest.json'), JSON.stringify(result, null, 2) + '\n');

// The readable table.
const header = ['case', 'backend', 'parameters', 'value', 'unit', 'limit', 'ratio', 'details'];
const table = rows.map((r) => [
  r.case,
  r.backend,
  r.params,
  String(r.value),
  r.unit,
  r.limit === undefined ? '' : String(r.limit),
  r.ratio === undefined ? '' : String(r.ratio),
  r.extra
    ? Object.entries(r.extra)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')
    : '',
]);
const widths = header.map((h, i) =>
  Math.max(h.length, ...table.map((t) => (t[i] as string).length)),
);
const line = (cells: string[]): string =>
  `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')} |`;
console.log(
  `Spillway benchmarks, ${machine.cpus} x ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node}${quick ? ' (quick)' : ''}`,
);
console.log(line(header));
console.log(`| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`);
for (const t of table) console.log(line(t));
console.log(`\nJSON: ${file}`);

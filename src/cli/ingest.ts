import { Command, Option } from 'commander';
import { asError, FencedError, InvalidArgumentError } from '../errors.ts';
import type { Compression } from '../format/compression.ts';
import { Producer } from '../producer/producer.ts';
import { expandPaths } from '../pusher/expand-paths.ts';
import { readFileChunks, type IngestFormat } from '../pusher/file-chunks.ts';
import { followFile } from '../pusher/follow-file.ts';
import { IngestProgress, type RecordedSource } from '../pusher/ingest-progress.ts';
import { AsyncPusher, PUSHER_DEFAULTS } from '../pusher/pusher.ts';
import {
  identifySource,
  openSource,
  type OpenedSource,
  type SourceIdentity,
} from '../pusher/source-identity.ts';
import { detectCompression } from '../pusher/file-bytes.ts';
import { findSourceKey, sourceKey } from '../pusher/source-key.ts';
import {
  CliError,
  describeError,
  formatBytes,
  formatDuration,
  intOption,
  jsonOption,
  MAX_TIMER_MS,
  openCliQueue,
  plural,
  printJson,
  queueOptions,
  writeOut,
  type QueueOptions,
} from './common.ts';
import { IngestStatus } from './ingest-status.ts';
import { StopSignals } from './stop-signals.ts';

interface IngestOptions extends QueueOptions {
  format: IngestFormat;
  job: string;
  follow?: boolean;
  maxInFlightBytes: number;
  chunkBytes: number;
  maxEntryBytes: number;
  checkpointIntervalMs: number;
  pollIntervalMs: number;
  compression: Compression;
}

/** What happened to one file. */
interface FileResult {
  path: string;
  state: 'done' | 'already-done' | 'failed' | 'stopped' | 'following';
  /** Bytes of the file made durable in this run. */
  bytes: number;
  entries: number;
  error?: string;
}

/** Largest `--chunk-bytes`: a chunk of one-byte lines still fits one batch (256 MiB with 96 bytes per entry). */
const MAX_CHUNK_BYTES = 4 * 1024 * 1024;
/** Largest `--max-entry-bytes`. */
const MAX_ENTRY_BYTES = 64 * 1024 * 1024;
/** The producer's room: a chunk (with one entry past its end) of the smallest entries, counted as the producer counts them. */
const PRODUCER_ROOM_BYTES = 320 * 1024 * 1024;

/** `spillway ingest`. */
export function ingestCommand(): Command {
  return jsonOption(
    queueOptions(
      new Command('ingest')
        .description(
          'push files, folders (recursively) and globs into a queue, chunk by chunk; progress is kept per file, so a rerun after a crash resumes where the durable data ends, and a rerun after completion does nothing',
        )
        .argument('<url>', 'store URL')
        .argument('<path...>', 'files, folders or globs (quote globs: "logs/**/*.ndjson")')
        .addOption(
          new Option(
            '--format <format>',
            'how files are split into entries: one per line, one JSON value per line, or CSV rows as JSON objects keyed by the header',
          )
            .choices(['lines', 'ndjson', 'csv'])
            .default('lines'),
        )
        .option(
          '--job <name>',
          'the ingestion job: progress is kept per job (one process per job at a time)',
          'default',
        )
        .option(
          '--follow',
          'keep tailing the files as they grow (rotation by rename handled) until Ctrl-C',
        )
        .option(
          '--max-in-flight-bytes <n>',
          'bytes read and not yet durable before reading waits',
          intOption('--max-in-flight-bytes', 1),
          PUSHER_DEFAULTS.maxInFlightBytes,
        )
        .option(
          '--chunk-bytes <n>',
          'bytes of a file per chunk (one produce() call)',
          intOption('--chunk-bytes', 1, MAX_CHUNK_BYTES),
          1024 * 1024,
        )
        .option(
          '--max-entry-bytes <n>',
          'longest line (or CSV record) accepted; a longer one stops its file with an error',
          intOption('--max-entry-bytes', 1, MAX_ENTRY_BYTES),
          8 * 1024 * 1024,
        )
        .option(
          '--checkpoint-interval-ms <ms>',
          'how often progress is checkpointed to the store',
          intOption('--checkpoint-interval-ms', 1, MAX_TIMER_MS),
          2000,
        )
        .option(
          '--poll-interval-ms <ms>',
          'with --follow: how often files are checked for new data',
          intOption('--poll-interval-ms', 1, MAX_TIMER_MS),
          250,
        )
        .addOption(
          new Option('--compression <codec>', 'compression of batch objects')
            .choices(['none', 'zstd'])
            .default('none'),
        ),
    ),
  ).action(async (url: string, paths: string[], o: IngestOptions) => {
    await ingest(url, paths, o);
  });
}

async function ingest(url: string, args: string[], o: IngestOptions): Promise<void> {
  const started = performance.now();
  const stop = new StopSignals(() =>
    process.stderr.write(
      `\nspillway: stopping: no more is read; making what was read durable and checkpointing (press Ctrl-C again to abandon it; a rerun resumes)\n`,
    ),
  );
  let paths: string[];
  try {
    paths = await expandPaths(args, { signal: stop.signal });
  } catch (e) {
    stop.dispose();
    throw e;
  }
  const queue = openCliQueue(url, o);
  let progress: IngestProgress;
  try {
    progress = await IngestProgress.open({ queue, job: o.job, signal: stop.signal });
  } catch (e) {
    await queue.close();
    stop.dispose();
    throw e;
  }
  const producer = new Producer({
    queue,
    flushIntervalMs: 0,
    compression: o.compression,
    // The pusher is the bound (--max-in-flight-bytes); the producer takes whatever it lets
    // through, including one chunk of tiny entries, each counted with its overhead.
    maxBufferedBytes: Math.max(o.maxInFlightBytes * 2, PRODUCER_ROOM_BYTES),
    maxBufferedInputs: 1_000_000,
  });
  const results = new Map<string, FileResult>();
  const bySource = new Map<string, FileResult>();
  const status = new IngestStatus();
  const pusher = new AsyncPusher({
    producer,
    job: o.job,
    maxInFlightBytes: o.maxInFlightBytes,
    onAck: ({ chunk, sourceDone }) => {
      const r = bySource.get(chunk.source);
      if (!r) return;
      r.bytes += chunk.size;
      r.entries += chunk.items.length;
      status.acked(chunk.source, chunk.offset + chunk.size, chunk.items.length);
      if (sourceDone && r.state !== 'failed') {
        r.state = 'done';
        status.finished(chunk.source);
      }
    },
  });
  let checkpointFailure: unknown;
  const checkpoints = setInterval(() => {
    progress.checkpoint(pusher).catch((e: unknown) => {
      checkpointFailure ??= e;
      stop.stop();
    });
  }, o.checkpointIntervalMs);
  checkpoints.unref();

  // Recorded keys by device and inode (the start of a key), so that finding a file's
  // key costs the same in a folder of a million files as in one of ten.
  const recordedByInode = new Map<string, string[]>();
  for (const { source } of progress.sources()) {
    const m = /^(\d+-\d+-)/.exec(source);
    if (m)
      recordedByInode.set(m[1] as string, [...(recordedByInode.get(m[1] as string) ?? []), source]);
  }
  /** The source key of a file, keeping the one an earlier run recorded for it. */
  const keyOf = async (identity: SourceIdentity, opened?: OpenedSource): Promise<string> =>
    (await findSourceKey(
      identity,
      recordedByInode.get(`${identity.dev}-${identity.ino}-`) ?? [],
      opened,
    )) ?? sourceKey(identity);

  const ingestOne = async (path: string): Promise<void> => {
    const result: FileResult = { path, state: 'stopped', bytes: 0, entries: 0 };
    results.set(path, result);
    let opened: OpenedSource | undefined;
    try {
      // One open file for identity, size and every read: a rotation meanwhile cannot
      // put the new file's bytes under the old one's key.
      opened = await openSource(path);
      const identity = await identifySource(opened);
      const key = await keyOf(identity, opened);
      bySource.set(key, result);
      const compressed = (await detectCompression(opened)) !== 'none';
      const sizeBytes = Number((await opened.handle.stat()).size);
      const recorded = progress.get(key);
      if (recorded?.done && (compressed || recorded.sizeBytes === sizeBytes)) {
        result.state = 'already-done';
        return;
      }
      if (recorded && !compressed && sizeBytes < recorded.ackedOffset) {
        throw new InvalidArgumentError(
          `${path}: ${recorded.ackedOffset} bytes of it were ingested, and it now has ${sizeBytes}: it was truncated in place; move it aside and ingest the new content as a new file`,
        );
      }
      const resumed = resumeFrom(recorded, compressed, sizeBytes);
      if (resumed) pusher.resume({ ...resumed, source: key, path });
      status.start(key, path, compressed ? undefined : sizeBytes, resumed?.ackedOffset ?? 0);
      // A plain file that was done and grew: its last line may have had no line end.
      const grew = recorded?.done === true && !compressed;
      let first = true;
      for (const [from, to] of segments(resumed)) {
        for await (const c of readFileChunks(opened, {
          format: o.format,
          chunkBytes: o.chunkBytes,
          fromOffset: from,
          ...(to !== undefined ? { endOffset: to } : {}),
          ...(first && grew ? { continuesLine: true } : {}),
          maxEntryBytes: o.maxEntryBytes,
          signal: stop.signal,
        })) {
          if (stop.signal.aborted) return;
          await pusher.push(
            {
              source: key,
              path,
              items: c.items,
              offset: c.offset,
              size: c.size,
              // Only the read to the end of the file can end the source.
              last: c.last && to === undefined,
            },
            { signal: stop.signal },
          );
        }
        first = false;
      }
    } catch (e) {
      if (stop.signal.aborted && !(e instanceof InvalidArgumentError)) return;
      result.state = 'failed';
      result.error = describeError(e, o.verbose === true);
      status.failed(path, result.error);
    } finally {
      await opened?.handle.close().catch(() => undefined);
    }
  };

  const followOne = async (path: string): Promise<void> => {
    const result: FileResult = { path, state: 'following', bytes: 0, entries: 0 };
    results.set(path, result);
    try {
      const opened = await openSource(path);
      let firstIdentity: SourceIdentity;
      let key: string;
      let resumed: Omit<RecordedSource, 'source'> | undefined;
      let recorded: RecordedSource | undefined;
      try {
        firstIdentity = await identifySource(opened);
        key = await keyOf(firstIdentity, opened);
        recorded = progress.get(key);
        const sizeBytes = Number((await opened.handle.stat()).size);
        resumed = resumeFrom(recorded, false, sizeBytes);
        if (resumed) pusher.resume({ ...resumed, source: key, path });
        bySource.set(key, result);
        status.start(key, path, undefined, resumed?.ackedOffset ?? 0);
        // Gaps first (ranges past a chunk that failed are durable already), then follow.
        const parts = segments(resumed);
        for (const [from, to] of parts.slice(0, -1)) {
          for await (const c of readFileChunks(opened, {
            format: o.format,
            chunkBytes: o.chunkBytes,
            fromOffset: from,
            endOffset: to,
            maxEntryBytes: o.maxEntryBytes,
            signal: stop.signal,
          })) {
            await pusher.push({ source: key, path, ...c, last: false }, { signal: stop.signal });
          }
        }
        resumed = {
          ...(resumed ?? { ackedBeyond: [], done: false }),
          ackedOffset: (parts.at(-1) as [number, number | undefined])[0],
        };
      } finally {
        await opened.handle.close().catch(() => undefined);
      }
      const keys = new Map<string, string>([[firstIdentity.key, key]]);
      for await (const { identity, chunk } of followFile(path, {
        format: o.format,
        chunkBytes: o.chunkBytes,
        fromOffset: resumed.ackedOffset,
        ...(recorded?.done === true ? { continuesLine: true } : {}),
        maxEntryBytes: o.maxEntryBytes,
        signal: stop.signal,
        identity: firstIdentity,
        follow: { pollIntervalMs: o.pollIntervalMs },
      })) {
        // A source keeps the key it got first (its fingerprint may cover more bytes later
        // on); a new one gets its own, keeping the suffix that tells a file truncated and
        // rewritten with the same first bytes from the one before it.
        let k = keys.get(identity.key);
        if (k === undefined) {
          const base = `${identity.dev}-${identity.ino}-${identity.fingerprint.slice(0, 16)}`;
          const suffix = identity.key.startsWith(base) ? identity.key.slice(base.length) : '';
          k = suffix ? `${sourceKey(identity)}${suffix}` : await keyOf(identity);
          keys.set(identity.key, k);
        }
        if (!bySource.has(k)) {
          bySource.set(k, result);
          const r = progress.get(k);
          const from = resumeFrom(r, false, undefined);
          if (from) pusher.resume({ ...from, source: k, path });
          status.start(k, path, undefined, from?.ackedOffset ?? 0);
        }
        await pusher.push({ source: k, path, ...chunk }, { signal: stop.signal });
      }
    } catch (e) {
      if (stop.signal.aborted) return;
      result.state = 'failed';
      result.error = describeError(e, o.verbose === true);
      status.failed(path, result.error);
    }
  };

  let failure: unknown;
  try {
    if (o.follow) await Promise.all(paths.map((p) => followOne(p)));
    else for (const p of paths) if (!stop.signal.aborted) await ingestOne(p);
    await pusher.flush().catch((e: unknown) => void (failure ??= e));
  } finally {
    clearInterval(checkpoints);
    await pusher.close().catch((e: unknown) => void (failure ??= e));
    await producer.close().catch((e: unknown) => void (failure ??= e));
    if (!(checkpointFailure instanceof FencedError)) {
      // The last checkpoint; with nothing in flight the job then holds nothing back.
      await progress.finish(pusher).catch((e: unknown) => void (failure ??= e));
    }
    await queue.close();
    stop.dispose();
    status.stop();
  }
  failure ??= checkpointFailure;

  const all = [...results.values()];
  const count = (s: FileResult['state']): number => all.filter((r) => r.state === s).length;
  const entries = all.reduce((n, r) => n + r.entries, 0);
  const bytes = all.reduce((n, r) => n + r.bytes, 0);
  const elapsedMs = Math.round(performance.now() - started);
  const summary = {
    job: o.job,
    files: paths.length,
    files_done: count('done'),
    files_already_done: count('already-done'),
    files_failed: count('failed'),
    files_not_finished: count('stopped') + count('following'),
    entries,
    bytes,
    mb_per_s: elapsedMs > 0 ? Math.round((bytes / 1e6 / (elapsedMs / 1000)) * 100) / 100 : 0,
    elapsed_ms: elapsedMs,
    ...(stop.received ? { stopped_by: stop.received } : {}),
    errors: all
      .filter((r) => r.error !== undefined)
      .map((r) => ({ path: r.path, message: r.error as string })),
  };
  for (const e of summary.errors) process.stderr.write(`spillway: ${e.message}\n`);
  if (o.json) await printJson(summary);
  else await writeOut(describeSummary(summary));
  if (failure !== undefined) throw asError(failure);
  if (summary.files_failed > 0) {
    throw new CliError(
      `${plural(summary.files_failed, 'file')} of ${summary.files} stopped at an error (above); what came before each error is durable`,
    );
  }
}

/** Where a file resumes: what an earlier run made durable (a grown plain file is no longer done). */
function resumeFrom(
  recorded: RecordedSource | undefined,
  compressed: boolean,
  sizeBytes: number | undefined,
): Omit<RecordedSource, 'source'> | undefined {
  if (!recorded) return undefined;
  const { source: _, ...rest } = recorded;
  if (!compressed && rest.sizeBytes !== undefined && rest.sizeBytes !== sizeBytes) {
    // The file grew after its end was read: what follows the old end is new data.
    const { sizeBytes: __, ...open } = rest;
    return { ...open, done: false };
  }
  return rest;
}

/**
 * The byte ranges of a file still to read: from what was acknowledged
 * without a gap to the end, skipping ranges acknowledged past a gap (after a
 * failed chunk). `undefined` as an end means the end of the file.
 */
function segments(
  resumed: Omit<RecordedSource, 'source'> | undefined,
): [number, number | undefined][] {
  const out: [number, number | undefined][] = [];
  let from = resumed?.ackedOffset ?? 0;
  for (const [a, b] of resumed?.ackedBeyond ?? []) {
    if (a > from) out.push([from, a]);
    from = Math.max(from, b);
  }
  out.push([from, undefined]);
  return out;
}

function describeSummary(s: {
  job: string;
  files: number;
  files_done: number;
  files_already_done: number;
  files_failed: number;
  files_not_finished: number;
  entries: number;
  bytes: number;
  mb_per_s: number;
  elapsed_ms: number;
  stopped_by?: string;
  errors: { path: string; message: string }[];
}): string {
  if (s.files_already_done === s.files && s.files > 0) {
    return `nothing to do: ${s.files === 1 ? 'the file was' : `all ${s.files} files were`} already ingested by job "${s.job}"\n`;
  }
  const parts = [
    `${plural(s.files_done, 'file')} done`,
    ...(s.files_already_done > 0 ? [`${s.files_already_done} already done before`] : []),
    ...(s.files_failed > 0 ? [`${s.files_failed} FAILED`] : []),
    ...(s.files_not_finished > 0 ? [`${s.files_not_finished} not finished`] : []),
  ];
  const lines = [
    `${s.stopped_by ? `stopped by ${s.stopped_by}: ` : ''}ingested ${s.entries.toLocaleString('en-US')} entries (${formatBytes(s.bytes)}) from ${plural(s.files, 'file')}: ${parts.join(', ')}; ${s.mb_per_s} MB/s, ${formatDuration(s.elapsed_ms)}${s.files_not_finished > 0 ? '; a rerun resumes' : ''}`,
  ];
  return `${lines.join('\n')}\n`;
}

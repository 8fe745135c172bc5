import { asError } from '../errors.ts';
import { Command, Option } from 'commander';
import { Producer, PRODUCER_DEFAULTS } from '../producer/producer.ts';
import { DEFAULT_MAX_BATCH_BYTES } from '../format/batch.ts';
import type { Compression } from '../format/compression.ts';
import {
  checkQueueToWrite,
  formatBytes,
  formatDuration,
  intOption,
  MAX_TIMER_MS,
  jsonOption,
  layoutOption,
  plural,
  openCliQueue,
  printJson,
  queueOptions,
  UsageError,
  writeOut,
  type QueueOptions,
} from './common.ts';
import { readEntries } from './entry-input.ts';
import { isSharded, produceSharded } from './group.ts';
import { LiveStatus, RateMeter } from './progress.ts';
import { StopSignals } from './stop-signals.ts';

/** What one produce() call costs besides its entries (see Producer's byte budget). */
const ONE_ENTRY_CALL_OVERHEAD_BYTES = 512 + 96;

interface ProduceOptions extends QueueOptions {
  format: 'lines' | 'ndjson' | 'frames';
  entriesPerCall: number;
  flushIntervalMs: number;
  compression: Compression;
  vnodeCapacity?: number;
  keyField?: string;
}

/** `spillway produce`. */
export function produceCommand(): Command {
  return jsonOption(
    queueOptions(
      new Command('produce')
        .description(
          'read entries from stdin and produce them; ends once all are durable and prints the counts',
        )
        .argument('<url>', 'store URL')
        .addOption(
          new Option(
            '--format <format>',
            'how stdin is split into entries: one per line, one JSON value per line, or u32 little-endian length-prefixed frames',
          )
            .choices(['lines', 'ndjson', 'frames'])
            .default('lines'),
        )
        .option(
          '--entries-per-call <n>',
          'entries per produce() call',
          intOption('--entries-per-call', 1),
          1000,
        )
        .option(
          '--flush-interval-ms <ms>',
          'producer flush interval (0: group commit)',
          intOption('--flush-interval-ms', 0, MAX_TIMER_MS),
          100,
        )
        .addOption(
          new Option('--compression <codec>', 'compression of batch objects')
            .choices(['none', 'zstd'])
            .default('none'),
        )
        .addOption(layoutOption())
        .option(
          '--vnode-capacity <n>',
          'produce into a sharded queue of N vnodes under the data prefix (created with N; an existing one must have N, and is routed to without this option)',
          intOption('--vnode-capacity', 1, 10_000),
        )
        .option(
          '--key-field <field>',
          "sharded queue, --format ndjson: route each line by the value of this field (the whole line when it is absent); the key is kept as the entry's metadata",
        ),
    ),
  ).action(async (url: string, o: ProduceOptions) => {
    if (
      o.keyField !== undefined &&
      o.vnodeCapacity === undefined &&
      !(await isSharded(url, o.dataPrefix))
    ) {
      throw new UsageError('--key-field routes entries to vnodes: give --vnode-capacity N too');
    }
    if (o.vnodeCapacity !== undefined || (await isSharded(url, o.dataPrefix))) {
      if (o.layout === 'v1')
        throw new UsageError('--layout v1 and a sharded queue: vnodes have the log layout');
      await produceSharded(url, {
        dataPrefix: o.dataPrefix,
        format: o.format,
        flushIntervalMs: o.flushIntervalMs,
        compression: o.compression,
        ...(o.vnodeCapacity !== undefined ? { vnodeCapacity: o.vnodeCapacity } : {}),
        ...(o.keyField !== undefined ? { keyField: o.keyField } : {}),
        ...(o.json ? { json: true } : {}),
      });
      return;
    }
    const started = performance.now();
    const queue = openCliQueue(url, o);
    try {
      // Before any input is read: a refused --layout must not consume stdin.
      await checkQueueToWrite(queue, url, o.layout);
    } catch (e) {
      await queue.close();
      throw e;
    }
    const producer = new Producer({
      queue,
      flushIntervalMs: o.flushIntervalMs,
      compression: o.compression,
    });
    let read = 0;
    let readBytes = 0;
    let durable = 0;
    let calls = 0;
    const batches = new Set<string>();
    let failure: unknown;
    const rate = new RateMeter();
    const status = new LiveStatus(
      () =>
        `produce: ${read} read (${formatBytes(readBytes)}), ${durable} durable, ${Math.round(rate.sample(durable))} entries/s`,
    );
    const stop = new StopSignals(() =>
      process.stderr.write(
        `\nspillway: stopping: no more input is read; making the ${read} entries read so far durable (press Ctrl-C again to abandon them)\n`,
      ),
    );
    const pending: Promise<void>[] = [];
    let chunk: Uint8Array[] = [];
    const send = async (): Promise<void> => {
      const entries = chunk;
      chunk = [];
      calls++;
      const handle = await producer.produce(entries);
      pending.push(
        handle.durable.then(
          (r) => {
            durable += entries.length;
            batches.add(r.location);
          },
          (e: unknown) => void (failure ??= e),
        ),
      );
    };
    let inputError: unknown;
    try {
      for await (const entry of readEntries(process.stdin, o.format, {
        // An entry must fit in one produce() call's budget and alone in a batch.
        maxEntryBytes: Math.min(
          PRODUCER_DEFAULTS.maxBufferedBytes - ONE_ENTRY_CALL_OVERHEAD_BYTES,
          DEFAULT_MAX_BATCH_BYTES - 4,
        ),
        signal: stop.signal,
      })) {
        chunk.push(entry);
        read++;
        readBytes += entry.byteLength;
        if (chunk.length >= o.entriesPerCall) await send();
      }
    } catch (e) {
      inputError = e;
    }
    // Reading is over (the end, an error or a stop): release stdin, which an open pipe would keep alive.
    process.stdin.destroy();
    try {
      if (chunk.length > 0) await send();
      await Promise.all(pending);
      await producer.close().catch((e: unknown) => void (failure ??= e));
    } finally {
      await queue.close();
      stop.dispose();
      status.stop();
    }
    const allDurable = durable === read && failure === undefined;
    const summary = {
      entries: durable,
      entries_read: read,
      bytes: readBytes,
      produce_calls: calls,
      batches: batches.size,
      all_durable: allDurable,
      input_complete: inputError === undefined && stop.received === undefined,
      ...(stop.received ? { stopped_by: stop.received } : {}),
      elapsed_ms: Math.round(performance.now() - started),
    };
    if (o.json) await printJson(summary);
    else {
      const counts = `${durable.toLocaleString('en-US')} of ${read.toLocaleString('en-US')} entries (${formatBytes(readBytes)}) in ${plural(batches.size, 'batch', 'batches')}`;
      const state = allDurable
        ? 'all durable'
        : `${(read - durable).toLocaleString('en-US')} NOT durable`;
      const stopped =
        inputError !== undefined
          ? 'stopped at an input error (below)'
          : stop.received !== undefined
            ? `stopped by ${stop.received}`
            : undefined;
      await writeOut(
        stopped === undefined
          ? `produced ${counts}, ${state}, ${formatDuration(summary.elapsed_ms)}\n`
          : `${stopped}: produced ${counts} read before it, ${state}; the rest of the input was not read, ${formatDuration(summary.elapsed_ms)}\n`,
      );
    }
    if (inputError !== undefined) throw asError(inputError);
    if (failure !== undefined) throw asError(failure);
  });
}

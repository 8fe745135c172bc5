import { asError } from '../errors.ts';
import { Command, Option } from 'commander';
import { createInterface } from 'node:readline';
import { Producer } from '../producer.ts';
import type { Compression } from '../format/compression.ts';
import {
  CliError,
  formatBytes,
  formatDuration,
  intOption,
  jsonOption,
  plural,
  openCliStore,
  printJson,
  queueOptions,
  writeOut,
  type QueueOptions,
} from './common.ts';
import { LiveStatus, RateMeter } from './progress.ts';

interface ProduceOptions extends QueueOptions {
  format: 'lines' | 'ndjson' | 'frames';
  entriesPerCall: number;
  flushIntervalMs: number;
  compression: Compression;
}

/** Entries read from stdin, in the chosen framing. */
async function* readEntries(
  input: NodeJS.ReadableStream,
  format: ProduceOptions['format'],
): AsyncGenerator<Uint8Array> {
  if (format === 'frames') {
    // Each frame: a u32 little-endian length, then that many bytes (as in a batch's record block).
    let pending = Buffer.alloc(0);
    let offset = 0;
    for await (const chunk of input) {
      pending = Buffer.concat([pending.subarray(offset), chunk as Buffer]);
      offset = 0;
      while (pending.length - offset >= 4) {
        const len = pending.readUInt32LE(offset);
        if (pending.length - offset - 4 < len) break;
        yield Uint8Array.prototype.slice.call(pending, offset + 4, offset + 4 + len);
        offset += 4 + len;
      }
    }
    if (pending.length - offset > 0) {
      throw new CliError(
        `stdin ends inside a frame: ${pending.length - offset} bytes left over; frames are a u32 little-endian length followed by that many bytes`,
      );
    }
    return;
  }
  const lines = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  for await (const line of lines) {
    n++;
    if (format === 'ndjson') {
      if (line.trim() === '') continue;
      try {
        JSON.parse(line);
      } catch (e) {
        throw new CliError(
          `stdin line ${n} is not valid JSON (${(e as Error).message}); expected one JSON value per line with --format ndjson`,
        );
      }
    }
    yield Buffer.from(line, 'utf8');
  }
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
          intOption('--flush-interval-ms'),
          100,
        )
        .addOption(
          new Option('--compression <codec>', 'compression of batch objects')
            .choices(['none', 'zstd'])
            .default('none'),
        ),
    ),
  ).action(async (url: string, o: ProduceOptions) => {
    const started = performance.now();
    const producer = new Producer({
      store: openCliStore(url),
      manifestPath: o.manifestPath,
      dataPathPrefix: o.dataPrefix,
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
      for await (const entry of readEntries(process.stdin, o.format)) {
        chunk.push(entry);
        read++;
        readBytes += entry.byteLength;
        if (chunk.length >= o.entriesPerCall) await send();
      }
    } catch (e) {
      inputError = e;
    }
    if (chunk.length > 0) await send();
    await Promise.all(pending);
    await producer.close().catch((e: unknown) => void (failure ??= e));
    status.stop();
    const summary = {
      entries: durable,
      bytes: readBytes,
      produce_calls: calls,
      batches: batches.size,
      all_durable: durable === read && failure === undefined && inputError === undefined,
      elapsed_ms: Math.round(performance.now() - started),
    };
    if (o.json) await printJson(summary);
    else
      await writeOut(
        `produced ${durable} of ${read} entries (${formatBytes(readBytes)}) in ${plural(batches.size, 'batch', 'batches')}, ${durable === read ? 'all durable' : `${read - durable} NOT durable`}, ${formatDuration(summary.elapsed_ms)}\n`,
      );
    if (inputError !== undefined) throw asError(inputError);
    if (failure !== undefined) throw asError(failure);
  });
}

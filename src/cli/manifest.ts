import { Command } from 'commander';
import { MANIFEST_VERSION, entryTrailer, type Manifest } from '../format/manifest.ts';
import {
  jsonOption,
  openCliQueue,
  printJson,
  queueOptions,
  readExistingManifest,
  type QueueOptions,
} from './common.ts';

/** The manifest in the reference implementation's JSON shape, plus our trailer fields. */
export function manifestJson(manifest: Manifest): unknown {
  return {
    version: MANIFEST_VERSION,
    epoch: manifest.epoch,
    next_sequence: manifest.nextSequence,
    entries: manifest.entries.map((e) => {
      const t = entryTrailer(e);
      return {
        sequence: e.sequence,
        location: e.location,
        metadata: e.metadata.map((m) => ({
          start_index: m.startIndex,
          ingestion_time_ms: m.ingestionTimeMs,
          payload_base64: Buffer.from(m.payload).toString('base64'),
        })),
        ...(t
          ? {
              trailer: {
                batch_size_bytes: t.batchSizeBytes,
                crc32c: t.crc32c,
                instance_id: t.instanceId,
              },
            }
          : e.extension.byteLength > 0
            ? { extension_base64: Buffer.from(e.extension).toString('base64') }
            : {}),
      };
    }),
  };
}

/** `spillway manifest dump`. */
export function manifestCommand(): Command {
  const manifest = new Command('manifest').description('read the queue manifest');
  manifest.addCommand(
    jsonOption(
      queueOptions(
        new Command('dump')
          .description(
            'print the manifest as JSON (version, epoch, next_sequence, entries with their metadata and trailer)',
          )
          .argument('<url>', 'store URL, e.g. file:///var/spool/q or s3://bucket/prefix'),
      ),
    ).action(async (url: string, o: QueueOptions) => {
      const queue = openCliQueue(url, o);
      try {
        const { manifest: m } = await readExistingManifest(queue, url);
        await printJson(manifestJson(m));
      } finally {
        await queue.close();
      }
    }),
  );
  return manifest;
}

import { Command } from 'commander';
import { GarbageCollector, GC_DEFAULTS } from '../gc.ts';
import {
  existingLayout,
  formatBytes,
  intOption,
  jsonOption,
  plural,
  openCliQueue,
  printJson,
  queueOptions,
  writeOut,
  type QueueOptions,
} from './common.ts';

/** `spillway gc`. */
export function gcCommand(): Command {
  return jsonOption(
    queueOptions(
      new Command('gc')
        .description(
          'run one garbage collection: delete batch objects (and, log layout, commits) that are acknowledged, orphaned or past the retention, and older than the grace period',
        )
        .argument('<url>', 'store URL')
        .option('--dry-run', 'delete nothing; print what would be deleted')
        .option(
          '--grace-period-ms <ms>',
          'minimum age of a batch object before it may be deleted; must exceed the longest upload-to-append delay of any producer',
          intOption('--grace-period-ms'),
          GC_DEFAULTS.gcGracePeriodMs,
        ),
    ),
  ).action(async (url: string, o: QueueOptions & { dryRun?: boolean; gracePeriodMs: number }) => {
    const queue = openCliQueue(url, o);
    try {
      // A typo in a path or the URL is named here, before the collector writes its probe.
      const layout = await existingLayout(queue, url);
      const gc = new GarbageCollector({ queue, gcGracePeriodMs: o.gracePeriodMs });
      const r = await gc.run({ dryRun: o.dryRun ?? false });
      if (o.json) {
        await printJson({
          dry_run: r.dryRun,
          deleted: r.deleted,
          bytes_deleted: r.bytesDeleted,
          kept: r.kept,
        });
        return;
      }
      const verb = r.dryRun ? 'would delete' : 'deleted';
      const lines = r.deleted.map((k) => `${verb} ${k}`);
      lines.push(
        `${r.dryRun ? 'dry run: ' : ''}${verb} ${plural(r.deleted.length, layout === 'log' ? 'object' : 'batch object')} (${formatBytes(r.bytesDeleted)}), kept ${r.kept}`,
      );
      await writeOut(lines.join('\n') + '\n');
    } finally {
      await queue.close();
    }
  });
}

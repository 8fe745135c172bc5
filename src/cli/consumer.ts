import { Command } from 'commander';
import {
  jsonOption,
  openCliQueue,
  printJson,
  queueOptions,
  readExistingManifest,
  writeOut,
  type QueueOptions,
} from './common.ts';

/** `spillway consumer fence`. */
export function consumerCommand(): Command {
  const consumer = new Command('consumer').description("manage the queue's consumer");
  consumer.addCommand(
    jsonOption(
      queueOptions(
        new Command('fence')
          .description(
            'raise the epoch, so the running consumer can no longer acknowledge; the next Consumer.open() takes over',
          )
          .argument('<url>', 'store URL'),
      ),
    ).action(async (url: string, o: QueueOptions) => {
      const queue = openCliQueue(url, o);
      try {
        const before = (await readExistingManifest(queue, url)).manifest.epoch;
        const epoch = await queue.manifestQueue().fence();
        if (o.json) await printJson({ previous_epoch: before, epoch });
        else
          await writeOut(
            `epoch raised from ${before} to ${epoch}: consumers holding an older epoch are fenced\n`,
          );
      } finally {
        await queue.close();
      }
    }),
  );
  return consumer;
}

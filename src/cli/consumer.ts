import { Command } from 'commander';
import { OutcomeUnknownError, PreconditionFailedError } from '../errors.ts';
import { DEFAULT_SUBSCRIPTION, type LogQueue } from '../internal.ts';
import { redactUrl } from '../redact.ts';
import {
  CliError,
  existingLayout,
  jsonOption,
  openCliQueue,
  printJson,
  queueOptions,
  subscriptionName,
  v1Cannot,
  writeOut,
  type QueueOptions,
} from './common.ts';

/**
 * Raises a subscription's epoch without moving its cursor, so its holder can
 * no longer acknowledge. Done once the stored epoch is above the one first
 * read: a lost race (the holder acknowledged meanwhile) reads again and
 * raises over that; a lost response, or another fence meanwhile, finds the
 * epoch raised already.
 */
async function fenceSubscription(
  log: LogQueue,
  name: string,
  url: string,
): Promise<{ before: number; epoch: number }> {
  const missing = (): CliError =>
    new CliError(
      `no subscription "${name}" on the queue at "${log.root}" in ${redactUrl(url)}: nothing to fence (subscription list shows the ones there are)`,
    );
  let current = await log.readCursor(name);
  if (!current) throw missing();
  const before = current.value.epoch;
  for (;;) {
    const epoch = current.value.epoch + 1;
    try {
      // Fencing removes shared readers too: they are fenced by the epoch.
      await log.writeCursor(
        { ...current.value, epoch, updatedAtMs: Date.now(), readers: undefined },
        current.version,
      );
      return { before, epoch };
    } catch (e) {
      if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
    }
    const again = await log.readCursor(name);
    if (!again) throw missing();
    if (again.value.epoch > before) return { before, epoch: again.value.epoch };
    current = again;
  }
}

/** `spillway consumer fence`. */
export function consumerCommand(): Command {
  const consumer = new Command('consumer').description(
    "manage the queue's consumer (v1) or a subscription's (log)",
  );
  consumer.addCommand(
    jsonOption(
      queueOptions(
        new Command('fence')
          .description(
            "raise the epoch, so the running consumer can no longer acknowledge; the next consumer takes over where it stopped. v1: the manifest's epoch; log: the subscription's (its cursor does not move)",
          )
          .argument('<url>', 'store URL')
          .option(
            '--subscription <name>',
            `the subscription to fence (log layout; default "${DEFAULT_SUBSCRIPTION}")`,
            subscriptionName(),
          ),
      ),
    ).action(async (url: string, o: QueueOptions & { subscription?: string }) => {
      const queue = openCliQueue(url, o);
      try {
        const layout = await existingLayout(queue, url);
        let r: { before: number; epoch: number };
        const name = o.subscription ?? DEFAULT_SUBSCRIPTION;
        if (layout === 'log') {
          r = await fenceSubscription(queue.logQueue(), name, url);
        } else {
          if (name !== DEFAULT_SUBSCRIPTION)
            throw v1Cannot(queue, url, `have named subscriptions (--subscription ${name})`);
          const before = (await queue.readExistingManifest()).manifest.epoch;
          r = { before, epoch: await queue.manifestQueue().fence() };
        }
        if (o.json) {
          await printJson({
            layout,
            ...(layout === 'log' ? { subscription: name } : {}),
            previous_epoch: r.before,
            epoch: r.epoch,
          });
        } else {
          await writeOut(
            `${layout === 'log' ? `subscription "${name}": ` : ''}epoch raised from ${r.before} to ${r.epoch}: consumers holding an older epoch are fenced\n`,
          );
        }
      } finally {
        await queue.close();
      }
    }),
  );
  return consumer;
}

import { Command, Option } from 'commander';
import type { StartAt } from '../queue/log-queue.ts';
import type { Queue } from '../queue/queue.ts';
import { redactUrl } from '../redact.ts';
import {
  CliError,
  formatBytes,
  formatDuration,
  formatStartAt,
  jsonOption,
  openCliQueue,
  parseStartAt,
  printJson,
  queueOptions,
  requireLog,
  START_AT_FORMS,
  subscriptionName,
  writeOut,
  type QueueOptions,
} from './common.ts';
import { subscriptionJson, type SubscriptionJson } from './log.ts';

/** What v1 cannot do, in the refusal of every subscription command. */
const NAMED_SUBSCRIPTIONS = 'have named subscriptions';

/** Subscriptions as a table, one line each, every line prefixed with `indent`. */
export function subscriptionTable(subs: readonly SubscriptionJson[], indent = ''): string {
  const header = [
    'name',
    'next sequence',
    'epoch',
    'lag batches',
    'lag entries',
    'lag bytes',
    'oldest unacked',
    'holder',
  ];
  const body = subs.map((s) => [
    s.name,
    s.next_index > 0 ? `${s.next_sequence}:${s.next_index}` : String(s.next_sequence),
    String(s.epoch),
    s.lag_batches.toLocaleString('en-US'),
    s.lag_entries.toLocaleString('en-US'),
    formatBytes(s.lag_bytes),
    s.oldest_unacked_age_ms === null ? '-' : formatDuration(s.oldest_unacked_age_ms),
    s.holder || '-',
  ]);
  const all = [header, ...body];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] as string).length)));
  const lines = all.map(
    (r) =>
      indent +
      r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] as number))).join('  '),
  );
  const losses = subs
    .filter((s) => s.last_loss)
    .map(
      (s) =>
        `${indent}"${s.name}" lost sequences ${s.last_loss?.first_sequence} to ${s.last_loss?.last_sequence} to retention (reported ${new Date(s.last_loss?.reported_at_ms ?? 0).toISOString()})`,
    );
  return [...lines, ...losses].join('\n') + '\n';
}

/** Opens the queue, refuses v1 and a missing queue, runs `fn`, closes. */
async function onLog<T>(
  url: string,
  o: QueueOptions,
  fn: (queue: Queue) => Promise<T>,
): Promise<T> {
  const queue = openCliQueue(url, o);
  try {
    await requireLog(queue, url, NAMED_SUBSCRIPTIONS);
    return await fn(queue);
  } finally {
    await queue.close();
  }
}

/** A subscription that must exist; its cursor as the list shows it. */
async function existing(queue: Queue, url: string, name: string): Promise<SubscriptionJson> {
  const found = (await queue.subscriptions()).find((s) => s.name === name);
  if (!found) {
    throw new CliError(
      `no subscription "${name}" on the queue at "${queue.dataPathPrefix}" in ${redactUrl(url)}: subscription list shows the ones there are, subscription create makes one`,
    );
  }
  return subscriptionJson(found);
}

function startAtOption(description: string): Option {
  return new Option('--start-at <position>', `${description}: ${START_AT_FORMS}`).argParser(
    (v: string) => parseStartAt(v),
  );
}

/** `spillway subscription list|create|delete|reset`. */
export function subscriptionCommand(): Command {
  const subscription = new Command('subscription').description(
    "manage a log queue's named subscriptions: each has its own cursor, epoch and lag, and holds back what it has not acknowledged (v1 queues have one consumer and no subscriptions)",
  );

  subscription.addCommand(
    jsonOption(
      queueOptions(
        new Command('list')
          .description(
            'every subscription: next sequence, epoch, lag in batches, entries and bytes, age of the oldest entry not acknowledged, holder',
          )
          .argument('<url>', 'store URL'),
      ),
    ).action(async (url: string, o: QueueOptions) => {
      const subs = await onLog(url, o, async (queue) =>
        (await queue.subscriptions()).map(subscriptionJson),
      );
      if (o.json) await printJson({ subscriptions: subs });
      else await writeOut(subscriptionTable(subs));
    }),
  );

  subscription.addCommand(
    jsonOption(
      queueOptions(
        new Command('create')
          .description(
            'create a subscription; one that exists already keeps its cursor (subscription reset moves it)',
          )
          .argument('<url>', 'store URL')
          .argument('<name>', 'subscription name', subscriptionName('<name>'))
          .addOption(startAtOption('where it starts').default('oldest')),
      ),
    ).action(async (url: string, name: string, o: QueueOptions & { startAt: StartAt }) => {
      const r = await onLog(url, o, async (queue) => {
        const before = (await queue.subscriptions()).some((s) => s.name === name);
        if (!before) await queue.createSubscription(name, o.startAt);
        return { created: !before, sub: await existing(queue, url, name) };
      });
      if (o.json) {
        await printJson({
          name,
          created: r.created,
          start_at: formatStartAt(o.startAt),
          next_sequence: r.sub.next_sequence,
          epoch: r.sub.epoch,
        });
      } else if (r.created) {
        await writeOut(
          `created subscription "${name}" at sequence ${r.sub.next_sequence} (--start-at ${formatStartAt(o.startAt)}); it holds back what it has not acknowledged from there\n`,
        );
      } else {
        await writeOut(
          `subscription "${name}" exists already, at sequence ${r.sub.next_sequence}: left unchanged (subscription reset moves it)\n`,
        );
      }
    }),
  );

  subscription.addCommand(
    jsonOption(
      queueOptions(
        new Command('delete')
          .description(
            'delete a subscription: it no longer holds data back, and its consumer, if one runs, is fenced',
          )
          .argument('<url>', 'store URL')
          .argument('<name>', 'subscription name', subscriptionName('<name>')),
      ),
    ).action(async (url: string, name: string, o: QueueOptions) => {
      const was = await onLog(url, o, async (queue) => {
        const sub = await existing(queue, url, name);
        await queue.deleteSubscription(name);
        return sub;
      });
      if (o.json) {
        await printJson({
          name,
          deleted: true,
          next_sequence: was.next_sequence,
          lag_batches: was.lag_batches,
        });
      } else {
        await writeOut(
          `deleted subscription "${name}" (it was at sequence ${was.next_sequence}, ${was.lag_batches.toLocaleString('en-US')} batches behind); a consumer still holding it is fenced\n`,
        );
      }
    }),
  );

  subscription.addCommand(
    jsonOption(
      queueOptions(
        new Command('reset')
          .description(
            'move a subscription to another position and raise its epoch, fencing the consumer holding it; the next consumer starts there',
          )
          .argument('<url>', 'store URL')
          .argument('<name>', 'subscription name', subscriptionName('<name>'))
          .addOption(startAtOption('where it moves to').makeOptionMandatory()),
      ),
    ).action(async (url: string, name: string, o: QueueOptions & { startAt: StartAt }) => {
      const r = await onLog(url, o, async (queue) => {
        const before = await existing(queue, url, name);
        await queue.resetSubscription(name, o.startAt);
        return { before, after: await existing(queue, url, name) };
      });
      if (o.json) {
        await printJson({
          name,
          start_at: formatStartAt(o.startAt),
          previous_next_sequence: r.before.next_sequence,
          previous_epoch: r.before.epoch,
          next_sequence: r.after.next_sequence,
          epoch: r.after.epoch,
        });
      } else {
        await writeOut(
          `subscription "${name}" moved from sequence ${r.before.next_sequence} to ${r.after.next_sequence} (--start-at ${formatStartAt(o.startAt)}); epoch raised from ${r.before.epoch} to ${r.after.epoch}: its consumer is fenced\n`,
        );
      }
    }),
  );
  return subscription;
}

/**
 * Case (o), one consumer-group member as a process: joins group `g` of the
 * sharded queue at its URL and prints its vnodes as a JSON line whenever
 * they change, reading and acknowledging whatever arrives. vnodes.ts kills
 * one with SIGKILL and times how long the others take to own every vnode.
 */
import { ConsumerGroup } from '../src/shard/consumer-group.ts';

const [url, instanceId, ttl] = process.argv.slice(2) as [string, string, string];
const group = await ConsumerGroup.join({
  store: url,
  group: 'g',
  instanceId,
  leaseTtlMs: Number(ttl),
  consumer: { gcIntervalMs: 0 },
});
let last = '';
const report = (): void => {
  const now = JSON.stringify(group.vnodes);
  if (now !== last) {
    last = now;
    process.stdout.write(`${JSON.stringify({ id: instanceId, vnodes: group.vnodes })}\n`);
  }
};
report();
setInterval(report, 20);
for await (const { vnode, batch } of group.batches({ pollIntervalMs: 50 })) {
  await group.ackThrough(vnode, batch.sequence);
  report();
}

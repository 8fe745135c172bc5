/**
 * One member of a consumer group, as a process: reads its vnodes, writes one
 * NDJSON line per batch received ("got", with its entries), then
 * acknowledges it and writes "acked" once the acknowledgement is stored;
 * "own" whenever its vnodes change. SIGTERM leaves the group cleanly
 * ("left"); SIGKILL is the crash the test inflicts.
 */
import { ConsumerGroup } from '../../src/shard/consumer-group.ts';

const [url, instanceId, ttl] = process.argv.slice(2) as [string, string, string];
const out = (v: object): boolean => process.stdout.write(`${JSON.stringify(v)}\n`);
const dec = new TextDecoder();

// Warnings and errors go to stderr, which the test prints when it fails.
const toStderr = (level: string) => (fields: object, message: string) =>
  process.stderr.write(`${instanceId} ${level}: ${message} ${JSON.stringify(fields)}\n`);
const group = await ConsumerGroup.join({
  store: url,
  group: 'g',
  instanceId,
  leaseTtlMs: Number(ttl),
  consumer: { gcIntervalMs: 0 },
  logger: { debug: () => undefined, warn: toStderr('warn'), error: toStderr('error') },
});
const stop = new AbortController();
process.on('SIGTERM', () => stop.abort());
let last = '';
const report = (): void => {
  // `open`: the vnodes whose subscription this member has open (read from).
  const open = group.vnodes.filter((v) => group.consumerOf(v) !== undefined);
  const now = JSON.stringify([group.vnodes, open]);
  if (now !== last) {
    last = now;
    out({ t: 'own', id: instanceId, vnodes: group.vnodes, open });
  }
};
report();
const watch = setInterval(report, 50);
try {
  for await (const { vnode, batch } of group.batches({ signal: stop.signal, pollIntervalMs: 50 })) {
    out({
      t: 'got',
      id: instanceId,
      vnode,
      seq: batch.sequence,
      entries: batch.entries.map((e) => dec.decode(e)),
    });
    try {
      await group.ackThrough(vnode, batch.sequence);
      out({ t: 'acked', id: instanceId, vnode, seq: batch.sequence });
    } catch (e) {
      out({ t: 'ack-refused', id: instanceId, vnode, seq: batch.sequence, error: String(e) });
    }
    report();
  }
} finally {
  clearInterval(watch);
  await group.close();
  out({ t: 'left', id: instanceId });
}

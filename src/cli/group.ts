/**
 * The sharded side of the `spillway` command: `produce --vnode-capacity`
 * (routing NDJSON lines by a field), `consume --group`, `group status` and
 * `demo --vnodes N --consumers M`.
 */
import { Command } from 'commander';
import { asError, InvalidArgumentError, NotFoundError } from '../errors.ts';
import { PRODUCER_DEFAULTS } from '../producer/producer.ts';
import { DEFAULT_MAX_BATCH_BYTES } from '../format/batch.ts';
import type { Compression } from '../format/compression.ts';
import { subscriptionInfos } from '../queue/log-inspect.ts';
import type { Batch } from '../queue/queue.ts';
import { redactUrl } from '../redact.ts';
import { openStore } from '../store/open-store.ts';
import { ConsumerGroup } from '../shard/consumer-group.ts';
import {
  decodeLease,
  decodeMember,
  groupPrefix,
  type Lease,
  type Member,
} from '../shard/group-objects.ts';
import { parseVnodeList } from '../shard/routing.ts';
import { ShardedProducer } from '../shard/sharded-producer.ts';
import { ShardedQueue } from '../shard/sharded-queue.ts';
import {
  asText,
  CliError,
  formatBytes,
  formatDuration,
  jsonOption,
  plural,
  printJson,
  subscriptionName,
  UsageError,
  writeOut,
} from './common.ts';
import { readEntries, type InputFormat } from './entry-input.ts';
import { writeBytes, type OutputFormat } from './entry-output.ts';
import { LiveStatus, RateMeter } from './progress.ts';
import { StopSignals } from './stop-signals.ts';

const ONE_ENTRY_CALL_OVERHEAD_BYTES = 512 + 96;

/** What `produce` needs to route into a sharded queue. */
export interface ShardedProduceOptions {
  dataPrefix: string;
  format: InputFormat;
  vnodeCapacity?: number;
  keyField?: string;
  flushIntervalMs: number;
  compression: Compression;
  json?: boolean;
}

/** Whether `url` holds a sharded queue under `prefix` (so `produce` routes without being told V). */
export async function isSharded(url: string, prefix: string): Promise<boolean> {
  const store = openStore(url);
  try {
    return (await ShardedQueue.readDescriptor(store, prefix)) !== undefined;
  } finally {
    await store.close();
  }
}

/** The routing key of one input line: the value of `field` (a string as it is, else its JSON), else the whole line. */
function keyOf(entry: Uint8Array, field: string | undefined): Uint8Array {
  if (field === undefined) return entry;
  const value = (JSON.parse(new TextDecoder().decode(entry)) as Record<string, unknown> | null)?.[
    field
  ];
  if (value === undefined) return entry;
  return new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value));
}

/**
 * `spillway produce --vnode-capacity V [--key-field F]`: each entry goes to
 * the vnode of its key, in one produce() call with the key as its metadata.
 */
export async function produceSharded(url: string, o: ShardedProduceOptions): Promise<void> {
  const started = performance.now();
  if (o.keyField !== undefined && o.format !== 'ndjson') {
    throw new UsageError('--key-field reads a field of each JSON line: it needs --format ndjson');
  }
  let producer: ShardedProducer;
  try {
    producer = await ShardedProducer.open({
      store: url,
      dataPathPrefix: o.dataPrefix,
      ...(o.vnodeCapacity !== undefined ? { vnodeCapacity: o.vnodeCapacity } : {}),
      flushIntervalMs: o.flushIntervalMs,
      compression: o.compression,
    });
  } catch (e) {
    if (e instanceof InvalidArgumentError) throw new UsageError(`--vnode-capacity: ${e.message}`);
    throw e;
  }
  let read = 0;
  let readBytes = 0;
  let durable = 0;
  let failure: unknown;
  const vnodes = new Set<number>();
  const rate = new RateMeter();
  const status = new LiveStatus(
    () =>
      `produce: ${read} read (${formatBytes(readBytes)}), ${durable} durable into ${vnodes.size} of ${producer.vnodeCapacity} vnodes, ${Math.round(rate.sample(durable))} entries/s`,
  );
  const stop = new StopSignals(() =>
    process.stderr.write(
      `\nspillway: stopping: no more input is read; making the ${read} entries read so far durable (press Ctrl-C again to abandon them)\n`,
    ),
  );
  const pending = new Set<Promise<void>>();
  let inputError: unknown;
  try {
    for await (const entry of readEntries(process.stdin, o.format, {
      maxEntryBytes: Math.min(
        PRODUCER_DEFAULTS.maxBufferedBytes - ONE_ENTRY_CALL_OVERHEAD_BYTES - 1024,
        DEFAULT_MAX_BATCH_BYTES - 4,
      ),
      signal: stop.signal,
    })) {
      read++;
      readBytes += entry.byteLength;
      const key = keyOf(entry, o.keyField);
      const handle = await producer.produce(key, [entry], { metadata: key });
      vnodes.add(handle.vnode);
      const p = handle.durable.then(
        () => void durable++,
        (e: unknown) => void (failure ??= e),
      );
      pending.add(p);
      void p.then(() => pending.delete(p));
    }
  } catch (e) {
    inputError = e;
  }
  process.stdin.destroy();
  try {
    await Promise.all(pending);
    await producer.close().catch((e: unknown) => void (failure ??= e));
  } finally {
    stop.dispose();
    status.stop();
  }
  const allDurable = durable === read && failure === undefined;
  const elapsed = Math.round(performance.now() - started);
  if (o.json) {
    await printJson({
      entries: durable,
      entries_read: read,
      bytes: readBytes,
      vnode_capacity: producer.vnodeCapacity,
      vnodes_written: vnodes.size,
      all_durable: allDurable,
      input_complete: inputError === undefined && stop.received === undefined,
      ...(stop.received ? { stopped_by: stop.received } : {}),
      elapsed_ms: elapsed,
    });
  } else {
    await writeOut(
      `produced ${durable.toLocaleString('en-US')} of ${read.toLocaleString('en-US')} entries (${formatBytes(readBytes)}) into ${vnodes.size} of ${plural(producer.vnodeCapacity, 'vnode')}, ${allDurable ? 'all durable' : `${(read - durable).toLocaleString('en-US')} NOT durable`}${stop.received ? `, stopped by ${stop.received}` : ''}, ${formatDuration(elapsed)}\n`,
    );
  }
  if (inputError !== undefined) throw asError(inputError);
  if (failure !== undefined) throw asError(failure);
}

/** What `consume --group` needs. */
export interface GroupConsumeOptions {
  dataPrefix: string;
  group: string;
  instanceId?: string;
  vnodes?: string;
  leaseTtlMs?: number;
  format: OutputFormat;
  pollIntervalMs: number;
}

/** Longest time written output waits before its acknowledgement is applied, in ms. */
const GROUP_ACK_INTERVAL_MS = 1000;

/**
 * `spillway consume --group NAME --instance-id ID`: joins the group, prints
 * what its vnodes receive, acknowledges each batch once written (applied
 * within a second), and leaves cleanly on the first Ctrl-C.
 */
export async function consumeGroup(url: string, o: GroupConsumeOptions): Promise<void> {
  if (o.instanceId === undefined) {
    throw new UsageError(
      '--group needs --instance-id ID: the name of this member in the group, written into its leases and cursors',
    );
  }
  if (o.format === 'frames') {
    throw new UsageError(
      '--group prints --format lines or ndjson (ndjson names the vnode and key of each entry)',
    );
  }
  const queue = await ShardedQueue.open({ store: url, dataPathPrefix: o.dataPrefix }).catch(
    (e: unknown) => {
      throw e instanceof InvalidArgumentError ? new UsageError(e.message) : e;
    },
  );
  let vnodes: number[] | undefined;
  try {
    if (o.vnodes !== undefined) vnodes = parseVnodeList(o.vnodes, queue.vnodeCapacity, '--vnodes');
  } catch (e) {
    await queue.close();
    throw new UsageError((e as Error).message);
  }
  const stop = new StopSignals(() =>
    process.stderr.write(
      "\nspillway: stopping: acknowledging what was written and releasing this member's vnodes (press Ctrl-C again to leave at once; the leases then expire on their own)\n",
    ),
  );
  let entries = 0;
  let batches = 0;
  let group: ConsumerGroup | undefined;
  const status = new LiveStatus(
    () =>
      `consume --group ${o.group}: ${entries} entries in ${batches} batches; vnodes ${group ? formatVnodes(group.vnodes) : '-'}`,
  );
  try {
    group = await ConsumerGroup.join({
      queue,
      group: o.group,
      instanceId: o.instanceId,
      ...(vnodes ? { vnodes } : {}),
      ...(o.leaseTtlMs !== undefined ? { leaseTtlMs: o.leaseTtlMs } : {}),
      consumer: { gcIntervalMs: 0, ackIntervalMs: GROUP_ACK_INTERVAL_MS },
      signal: stop.signal,
    });
    for await (const { vnode, batch } of group.batches({
      signal: stop.signal,
      pollIntervalMs: o.pollIntervalMs,
    })) {
      await writeBytes(renderGroupBatch(vnode, batch, o.format));
      entries += batch.entries.length;
      batches++;
      await group.ack(vnode, batch.sequence);
    }
  } finally {
    stop.dispose();
    status.stop();
    try {
      await group?.close();
    } finally {
      await queue.close();
    }
    if (process.stderr.isTTY) {
      process.stderr.write(
        `consumed ${entries} entries in ${batches} batches; left group "${o.group}"\n`,
      );
    }
  }
}

/** A batch of a vnode as NDJSON (with `vnode`, `key` from the produce call's metadata, position) or lines. */
function renderGroupBatch(vnode: number, batch: Batch, format: OutputFormat): Buffer {
  const first = batch.firstIndex ?? 0;
  let item = 0;
  const parts: string[] = [];
  for (let i = 0; i < batch.entries.length; i++) {
    const data = batch.entries[i] as Uint8Array;
    const index = first + i;
    if (format === 'lines') {
      if (data.includes(0x0a)) {
        throw new CliError(
          `entry ${index} of batch ${batch.sequence} of vnode ${vnode} contains a line break: use --format ndjson`,
        );
      }
      parts.push(`${Buffer.from(data).toString('utf8')}\n`);
      continue;
    }
    while (
      item + 1 < batch.metadata.length &&
      (batch.metadata[item + 1]?.startIndex ?? Infinity) <= index
    )
      item++;
    const meta = batch.metadata[item];
    const key = meta && meta.payload.byteLength > 0 ? asText(meta.payload) : undefined;
    const text = asText(data);
    parts.push(
      `${JSON.stringify({
        vnode,
        ...(key !== undefined ? { key } : {}),
        sequence: batch.sequence,
        index,
        ingestion_time_ms: meta?.ingestionTimeMs ?? null,
        ...(text !== undefined
          ? { data: text }
          : { data_base64: Buffer.from(data).toString('base64') }),
      })}\n`,
    );
  }
  return Buffer.from(parts.join(''));
}

/** Vnodes as ranges: "0-3,7". */
export function formatVnodes(vnodes: readonly number[]): string {
  if (vnodes.length === 0) return 'none';
  const out: string[] = [];
  let start = vnodes[0] as number;
  let prev = start;
  for (const v of [...vnodes.slice(1), Infinity]) {
    if (v === prev + 1) {
      prev = v;
      continue;
    }
    out.push(start === prev ? `${start}` : `${start}-${prev}`);
    start = prev = v;
  }
  return out.join(',');
}

/** One member as `group status` shows it. */
interface MemberStatus {
  instance_id: string;
  session: string;
  assignment: 'dynamic' | 'static';
  vnodes: number[];
  heartbeat_age_ms: number;
  live: boolean;
}

/** One vnode as `group status` shows it. */
interface VnodeStatus {
  vnode: number;
  owner: string | null;
  session: string | null;
  epoch: number;
  lease_age_ms: number | null;
  lease_expired: boolean;
  lag_batches: number;
  lag_entries: number;
  lag_bytes: number;
}

/**
 * The group's state as stored: members (heartbeats), leases, and lag per
 * vnode. Ages are by the store's clock: the newest last-modified time among
 * the group's objects less each object's own, so no host clock is compared.
 */
export async function groupStatus(
  url: string,
  prefix: string,
  group: string,
): Promise<{
  group: string;
  vnode_capacity: number;
  members: MemberStatus[];
  vnodes: VnodeStatus[];
}> {
  const queue = await ShardedQueue.open({ store: url, dataPathPrefix: prefix });
  try {
    const store = queue.store;
    const base = groupPrefix(prefix, group);
    const metas = [];
    for await (const m of store.list(`${base}/`)) metas.push(m);
    if (metas.length === 0) {
      throw new CliError(
        `no group "${group}" in the sharded queue "${prefix}" of ${redactUrl(url)}: nobody joined it (or it left no trace)`,
      );
    }
    const storeNow = Math.max(...metas.map((m) => m.lastModified.getTime()));
    const members: (Member & { age: number })[] = [];
    const leases = new Map<number, Lease & { age: number }>();
    for (const meta of metas) {
      try {
        const { body } = await store.get(meta.key);
        const age = storeNow - meta.lastModified.getTime();
        if (meta.key.startsWith(`${base}/members/`))
          members.push({ ...decodeMember(body, meta.key), age });
        else if (meta.key.startsWith(`${base}/leases/`)) {
          const l = decodeLease(body, meta.key);
          leases.set(l.vnode, { ...l, age });
        }
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
      }
    }
    const vnodes: VnodeStatus[] = [];
    for (let v = 0; v < queue.vnodeCapacity; v++) {
      const log = queue.vnodeQueue(v).logQueue();
      let lag = { lagBatches: 0, lagEntries: 0, lagBytes: 0 };
      if (await log.readDescriptor()) {
        const info = (await subscriptionInfos(log, Date.now())).find((s) => s.name === group);
        if (info) lag = info;
        else {
          // Not read by the group yet: everything kept is its lag.
          const all = await subscriptionInfos(log, Date.now());
          const head = await log.discoverHead();
          lag = {
            lagBatches:
              head.endSequence - Math.min(...all.map((s) => s.nextSequence), head.endSequence),
            lagEntries: 0,
            lagBytes: 0,
          };
        }
      }
      const l = leases.get(v);
      const ttl = members.find((m) => m.instanceId === l?.owner)?.leaseTtlMs ?? 10_000;
      vnodes.push({
        vnode: v,
        owner: l?.owner ?? null,
        session: l?.session ?? null,
        epoch: l?.epoch ?? 0,
        lease_age_ms: l ? l.age : null,
        lease_expired: l !== undefined && l.owner !== null && l.age >= ttl,
        lag_batches: lag.lagBatches,
        lag_entries: lag.lagEntries,
        lag_bytes: lag.lagBytes,
      });
    }
    return {
      group,
      vnode_capacity: queue.vnodeCapacity,
      members: members
        .map((m) => ({
          instance_id: m.instanceId,
          session: m.session,
          assignment: m.assignment,
          vnodes: vnodes.filter((v) => v.session === m.session).map((v) => v.vnode),
          heartbeat_age_ms: m.age,
          live: m.age < m.leaseTtlMs,
        }))
        .sort((a, b) => a.instance_id.localeCompare(b.instance_id)),
      vnodes,
    };
  } finally {
    await queue.close();
  }
}

/** `spillway group status`. */
export function groupCommand(): Command {
  const status = jsonOption(
    new Command('status')
      .description(
        "a consumer group of a sharded queue: its members (heartbeat age, vnodes owned), every vnode's lease (owner, epoch, age) and lag; ages by the store's clock",
      )
      .argument('<url>', 'store URL')
      .requiredOption('--group <name>', 'the group', subscriptionName('--group'))
      .option('--data-prefix <prefix>', 'prefix of the sharded queue', 'ingest')
      .option('--verbose', 'print stack traces of errors'),
  ).action(async (url: string, o: { group: string; dataPrefix: string; json?: boolean }) => {
    const s = await groupStatus(url, o.dataPrefix, o.group);
    if (o.json) {
      await printJson(s);
      return;
    }
    const lines = [
      `group     ${s.group} on ${redactUrl(url)} (${s.vnode_capacity} vnodes)`,
      `members   ${s.members.length}`,
    ];
    for (const m of s.members) {
      lines.push(
        `  ${m.instance_id} (${m.assignment}, session ${m.session.slice(0, 8)}): ${m.live ? 'live' : 'silent'}, heartbeat ${formatDuration(m.heartbeat_age_ms)} old, vnodes ${formatVnodes(m.vnodes)}`,
      );
    }
    lines.push('vnode  owner                    epoch  lease age  lag');
    for (const v of s.vnodes) {
      lines.push(
        `${String(v.vnode).padStart(5)}  ${(v.owner ?? '(free)').slice(0, 24).padEnd(24)} ${String(v.epoch).padStart(5)}  ${(v.lease_age_ms === null ? '-' : formatDuration(v.lease_age_ms) + (v.lease_expired ? ' (expired)' : '')).padEnd(9)}  ${plural(v.lag_batches, 'batch', 'batches')}, ${plural(v.lag_entries, 'entry', 'entries')}`,
      );
    }
    await writeOut(`${lines.join('\n')}\n`);
  });
  return new Command('group').description('consumer groups of sharded queues').addCommand(status);
}

/** `spillway demo --vnodes N --consumers M`: producers into N vnodes, M group members, one stopped midway. */
export async function runGroupDemo(o: {
  store: string;
  vnodes: number;
  consumers: number;
  durationS: number;
  entryBytes: number;
  json?: boolean;
}): Promise<void> {
  const ttl = 1500;
  const prefix = `group-demo-${Date.now().toString(36)}`;
  const store = openStore(o.store);
  const queue = await ShardedQueue.open({
    store,
    dataPathPrefix: prefix,
    vnodeCapacity: o.vnodes,
  }).catch(async (e: unknown) => {
    await store.close();
    throw e;
  });
  const producer = await ShardedProducer.open({
    queue,
    flushIntervalMs: 20,
    instanceId: 'demo-producer',
  });
  const stop = new StopSignals();
  const members = new Map<string, ConsumerGroup>();
  const consumed = new Map<string, number>();
  const events: string[] = [];
  let produced = 0;
  let durable = 0;
  const started = performance.now();
  const duration = o.durationS > 0 ? o.durationS * 1000 : Infinity;
  const join = async (id: string): Promise<void> => {
    const g = await ConsumerGroup.join({
      queue,
      group: 'demo',
      instanceId: id,
      leaseTtlMs: ttl,
      consumer: { gcIntervalMs: 0, ackIntervalMs: 200 },
    });
    members.set(id, g);
    consumed.set(id, consumed.get(id) ?? 0);
    const reading = (async () => {
      for await (const { vnode, batch } of g.batches({ pollIntervalMs: 50 })) {
        consumed.set(id, (consumed.get(id) ?? 0) + batch.entries.length);
        await g.ack(vnode, batch.sequence).catch(() => undefined);
      }
    })();
    reading.catch(() => undefined);
  };
  for (let i = 1; i <= o.consumers; i++) await join(`consumer-${i}`);
  const view = (): string => {
    const elapsed = performance.now() - started;
    return [
      `spillway demo: 1 producer -> ${o.vnodes} vnodes -> group of ${members.size} consumers on ${redactUrl(o.store)} (lease TTL ${ttl} ms)  [${formatDuration(elapsed)}${o.durationS === 0 ? ', Ctrl-C to stop' : ` of ${o.durationS} s`}]`,
      `  produced ${produced}, durable ${durable}, consumed ${[...consumed.values()].reduce((a, b) => a + b, 0)}`,
      ...[...members].map(
        ([id, g]) =>
          `  ${id.padEnd(12)} vnodes ${formatVnodes(g.vnodes).padEnd(30)} consumed ${consumed.get(id)}`,
      ),
      ...events.slice(-4).map((e) => `  ${e}`),
    ].join('\n');
  };
  const status = new LiveStatus(view, { plainEveryMs: 1000, intervalMs: 250 });
  let stopped: string | undefined;
  let stoppedVnodes: number[] = [];
  const filler = 'x'.repeat(Math.max(0, o.entryBytes - 40));
  let failure: unknown;
  try {
    for (let n = 0; !stop.signal.aborted && performance.now() - started < duration; n++) {
      const key = `key-${n % 1000}`;
      const { durable: d } = await producer.produce(
        key,
        [new TextEncoder().encode(`{"key":"${key}","n":${n},"pad":"${filler}"}`)],
        {
          metadata: new TextEncoder().encode(key),
        },
      );
      produced++;
      d.then(
        () => void durable++,
        (e: unknown) => void (failure ??= e),
      );
      if (n % 200 === 0) await new Promise((r) => setTimeout(r, 5));
      // A third of the way in, one consumer stops as a crash would: its vnodes move once its leases expire.
      if (
        stopped === undefined &&
        members.size > 1 &&
        performance.now() - started > Math.min(duration, 30_000) / 3
      ) {
        stopped = `consumer-${members.size}`;
        const g = members.get(stopped) as ConsumerGroup;
        stoppedVnodes = g.vnodes;
        await g.destroy();
        members.delete(stopped);
        const at = performance.now();
        events.push(
          `${stopped} stopped (as a crash) holding vnodes ${formatVnodes(stoppedVnodes)}`,
        );
        void (async () => {
          while (
            ![...members.values()].some((m) => stoppedVnodes.some((v) => m.vnodes.includes(v)))
          ) {
            await new Promise((r) => setTimeout(r, 50));
          }
          while (
            !stoppedVnodes.every((v) => [...members.values()].some((m) => m.vnodes.includes(v)))
          ) {
            await new Promise((r) => setTimeout(r, 50));
          }
          events.push(
            `vnodes ${formatVnodes(stoppedVnodes)} taken over ${formatDuration(performance.now() - at)} after the stop`,
          );
        })();
      }
    }
    await producer.close();
    // Let the group drain what was produced.
    const deadline = performance.now() + 10_000;
    while (
      [...consumed.values()].reduce((a, b) => a + b, 0) < durable &&
      performance.now() < deadline &&
      !stop.signal.aborted
    ) {
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    status.stop();
    await Promise.allSettled([...members.values()].map((g) => g.close()));
    await queue.close();
    await store.close();
    stop.dispose();
  }
  const total = [...consumed.values()].reduce((a, b) => a + b, 0);
  const summary = {
    store: redactUrl(o.store),
    vnodes: o.vnodes,
    consumers: o.consumers,
    entries_durable: durable,
    entries_consumed: total,
    stopped_consumer: stopped ?? null,
    events,
  };
  if (o.json) await printJson(summary);
  else {
    await writeOut(
      [
        `demo finished: ${durable} entries durable in ${o.vnodes} vnodes, ${total} deliveries to the group of ${o.consumers} (more than durable: batches the stopped consumer had not acknowledged were delivered again to the new owners)`,
        ...events.map((e) => `  ${e}`),
        '',
      ].join('\n'),
    );
  }
  if (failure !== undefined) throw asError(failure);
}

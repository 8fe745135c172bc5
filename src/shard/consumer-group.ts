/**
 * Consumer groups over a sharded queue: the vnodes are shared among the
 * member processes, each vnode read by one member at a time through the
 * vnode queue's subscription named after the group. Ownership is a lease
 * object per vnode, written with conditional writes; see
 * docs/scaling-out.md §4-5 for the protocol and why it is safe.
 */
import { randomUUID } from 'node:crypto';
import { monotonicNow, sleep, systemClock, type Clock, type ClockTimer } from '../clock.ts';
import { Consumer, type ConsumerOptions } from '../consumer/consumer.ts';
import {
  asError,
  ClosedError,
  FencedError,
  InvalidArgumentError,
  NotFoundError,
  OutcomeUnknownError,
  PreconditionFailedError,
} from '../errors.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { checkCallOptions, resolveOptions, type OptionSpecs } from '../options.ts';
import type { Batch } from '../queue/queue.ts';
import type { ObjectStore } from '../store/object-store.ts';
import {
  decodeLease,
  decodeMember,
  encodeLease,
  encodeMember,
  groupPrefix,
  leaseKey,
  memberKey,
  type Lease,
  type Member,
} from './group-objects.ts';
import { assignVnodes, checkVnode } from './routing.ts';
import { ShardedQueue } from './sharded-queue.ts';

/** Consumer options a group passes to each vnode's consumer. */
export type VnodeConsumerOptions = Pick<
  ConsumerOptions,
  | 'ackBatchSize'
  | 'ackIntervalMs'
  | 'gcIntervalMs'
  | 'gcGracePeriodMs'
  | 'readAheadBatches'
  | 'readAheadBytes'
  | 'maxBatchBytes'
  | 'metrics'
>;

/** Options of {@link ConsumerGroup.join}. */
export interface ConsumerGroupOptions {
  /** The sharded queue, opened; else give `store` (and `dataPathPrefix`). */
  queue?: ShardedQueue;
  /** The store, as a URL or an {@link ObjectStore}, when `queue` is not given. */
  store?: string | ObjectStore;
  /** Prefix of the sharded queue. @default "ingest" */
  dataPathPrefix?: string;
  /**
   * The group: also the name of the subscription it reads in every vnode
   * queue (1-100 letters, digits, ".", "_" or "-", not starting with ".").
   * A new group starts at the oldest entries kept.
   */
  group: string;
  /**
   * This member's id: written in its leases, its heartbeat and (as the
   * holder) in the cursors it takes over. Two processes may share one; they
   * still never own a vnode at once (ownership is per process session).
   */
  instanceId: string;
  /**
   * Static assignment: the vnodes this member reads (and only these). Without
   * it the live dynamic members share all vnodes by rendezvous hashing.
   * Either way a vnode is taken only through its lease. @default dynamic
   */
  vnodes?: readonly number[];
  /**
   * How long a lease lives without renewal, in ms: a member renews its leases
   * and its heartbeat every third of it, and takes over another's lease once
   * it has seen it unchanged for this long by its own monotonic clock.
   * A dead member's vnodes move after about 1.3 times this. @default 10000
   */
  leaseTtlMs?: number;
  /** Options of the vnode consumers (acks, read-ahead, collection). */
  consumer?: VnodeConsumerOptions;
  /** Where lost leases and background failures are reported. @default silent */
  logger?: Logger;
  /** Time source and timers. @default the system clock */
  clock?: Clock;
  /** Aborts `join()`. */
  signal?: AbortSignal;
}

const SUBSCRIPTION_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$/;

const SPECS: OptionSpecs<ConsumerGroupOptions> = {
  queue: { kind: 'any' },
  store: { kind: 'any' },
  dataPathPrefix: { kind: 'any' },
  group: {
    kind: 'string',
    pattern: SUBSCRIPTION_NAME,
    expected: '1-100 letters, digits, ".", "_" or "-", not starting with "."',
  },
  instanceId: {
    kind: 'string',
    pattern: /^[\x20-\x7e]{1,200}$/,
    expected: 'printable ASCII, 1-200 characters',
  },
  vnodes: { kind: 'any' },
  leaseTtlMs: { kind: 'int', min: 100, max: 2_147_483_647 },
  consumer: { kind: 'any' },
  logger: { kind: 'any' },
  clock: { kind: 'any' },
  signal: { kind: 'any' },
};

/** Defaults of {@link ConsumerGroupOptions}. */
export const CONSUMER_GROUP_DEFAULTS = Object.freeze({ leaseTtlMs: 10_000 });

/** A batch from one vnode, as the group hands it out. */
export interface GroupBatch {
  vnode: number;
  batch: Batch;
}

/** What a member holds of one vnode. */
interface Owned {
  vnode: number;
  /** The lease as this member last wrote it, and its version. */
  lease: Lease;
  version: string;
  /** Monotonic ms until which the lease is ours even if no renewal lands: send time of the last write + ttl. */
  validUntil: number;
  consumer: Consumer | undefined;
  opening: Promise<void> | undefined;
  state: 'active' | 'draining';
  /** Monotonic ms when draining started. */
  drainingSince: number;
  /** Sequences handed out and not acknowledged, in order. */
  pending: number[];
  /**
   * Batches its consumer handed out while this member could not hand them on
   * (its lease in doubt, or the vnode being handed over), lowest sequence
   * first: the consumer will not give them again, so they are handed out
   * from here, in order, once the vnode is held and active again (else the
   * next owner reads them from the cursor). Several when several `next()`
   * calls were in flight; at most one per call.
   */
  held: Batch[];
}

/** A key seen in a listing: its version, and since when (monotonic ms) this member has seen it unchanged. */
interface Observed {
  version: string;
  since: number;
}

/** A member as the group sees it now. */
export interface GroupMemberView {
  instanceId: string;
  session: string;
  assignment: 'dynamic' | 'static';
  /** Whether its heartbeat changed within the lease TTL, as this process observed it. */
  live: boolean;
}

/**
 * One member of a consumer group. `join()` announces it (a heartbeat object),
 * takes the leases of the vnodes it should own and opens, for each, the
 * vnode queue's subscription named after the group, which fences the
 * vnode's previous owner. In the background, every third of `leaseTtlMs`,
 * it renews its heartbeat and leases, notices members that joined or died,
 * and moves vnodes: it hands over those that now belong to another member
 * (once what it handed out of them is acknowledged, or after `leaseTtlMs`)
 * and takes those it should own once they are free or their lease expired.
 *
 * Read with {@link next} or {@link batches} (each item names its vnode) and
 * acknowledge with {@link ack} / {@link ackThrough} per vnode. Per vnode,
 * batches come in order; acknowledged batches are never delivered again;
 * batches not acknowledged when a vnode changes owner are delivered again
 * to the new owner.
 *
 * @example
 * const group = await ConsumerGroup.join({ store: 's3://bucket/q', group: 'billing', instanceId: 'node-1' });
 * for await (const { vnode, batch } of group.batches({ signal })) {
 *   await handle(batch.entries);
 *   await group.ack(vnode, batch.sequence);
 * }
 * await group.close(); // acknowledges what was acked, releases the leases at once
 */
export class ConsumerGroup {
  readonly queue: ShardedQueue;
  readonly group: string;
  readonly instanceId: string;
  /** Random per join: what tells two processes with one instance id apart. */
  readonly session = randomUUID();
  readonly leaseTtlMs: number;
  private readonly staticVnodes: number[] | undefined;
  private readonly ownsQueue: boolean;
  private readonly store: ObjectStore;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly consumerOptions: VnodeConsumerOptions;
  private readonly owned = new Map<number, Owned>();
  /** Vnodes whose `default` subscription this member deleted (or found gone). */
  private readonly defaultDropped = new Set<number>();
  private readonly observed = new Map<string, Observed>();
  /** Leases as last read, by key: the version and the decoded lease. */
  private readonly leaseCache = new Map<string, { version: string; value: Lease }>();
  private readonly memberCache = new Map<string, { version: string; value: Member }>();
  private members: GroupMemberView[] = [];
  private beat = 0;
  private readonly joinedAtMs: number;
  private timer: ClockTimer | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private closing: Promise<void> | undefined;
  private destroyed: Error | undefined;
  private rotation = 0;
  private wake: (() => void) | undefined;
  /** The last background failure, if the last round failed. */
  lastError: unknown;

  private constructor(
    queue: ShardedQueue,
    owns: boolean,
    o: ConsumerGroupOptions & { leaseTtlMs: number },
  ) {
    this.queue = queue;
    this.ownsQueue = owns;
    this.store = queue.store;
    this.group = o.group;
    this.instanceId = o.instanceId;
    this.leaseTtlMs = o.leaseTtlMs;
    this.clock = o.clock ?? systemClock;
    this.logger = o.logger ?? silentLogger;
    this.consumerOptions = o.consumer ?? {};
    this.joinedAtMs = this.clock.now();
    if (o.vnodes !== undefined) {
      if (!Array.isArray(o.vnodes) || o.vnodes.length === 0) {
        throw new InvalidArgumentError(
          'ConsumerGroup: vnodes must be a non-empty array of vnodes (or left out for dynamic assignment)',
        );
      }
      for (const v of o.vnodes) checkVnode(v, queue.vnodeCapacity, 'ConsumerGroup: vnodes');
      this.staticVnodes = [...new Set(o.vnodes)].sort((a, b) => a - b);
    }
  }

  /**
   * Joins the group: writes this member's heartbeat, takes the leases it
   * can take now and opens their vnodes, then keeps going in the
   * background until {@link close}.
   *
   * @throws {InvalidArgumentError} for bad options or a vnode outside the capacity.
   * @throws {QueueNotFoundError} when there is no sharded queue.
   */
  static async join(options: ConsumerGroupOptions): Promise<ConsumerGroup> {
    const o = resolveOptions(
      'ConsumerGroup',
      SPECS,
      CONSUMER_GROUP_DEFAULTS,
      options,
    ) as ConsumerGroupOptions & {
      leaseTtlMs: number;
    };
    if ((o.queue === undefined) === (o.store === undefined)) {
      throw new InvalidArgumentError(
        'ConsumerGroup: give either queue (a ShardedQueue) or store, exactly one',
      );
    }
    const queue =
      o.queue ??
      (await ShardedQueue.open({
        store: o.store as string | ObjectStore,
        ...(o.dataPathPrefix !== undefined ? { dataPathPrefix: o.dataPathPrefix } : {}),
        ...(o.signal ? { signal: o.signal } : {}),
      }));
    let group: ConsumerGroup;
    try {
      group = new ConsumerGroup(queue, o.queue === undefined, o);
    } catch (e) {
      if (o.queue === undefined) await queue.close().catch(() => undefined);
      throw e;
    }
    try {
      await group.rebalance({ signal: o.signal });
    } catch (e) {
      await group.destroy();
      throw e;
    }
    group.schedule();
    return group;
  }

  /** The vnodes this member owns and reads now (being handed over included), ascending. */
  get vnodes(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  /** The members this member saw at its last round, itself included. */
  get memberViews(): GroupMemberView[] {
    return this.members.map((m) => ({ ...m }));
  }

  /** The consumer of an owned vnode (for `position`, metrics); undefined when not owned or not open yet. */
  consumerOf(vnode: number): Consumer | undefined {
    return this.owned.get(vnode)?.consumer;
  }

  /**
   * Runs one round now (heartbeat, renewals, takeovers, hand-overs) and
   * resolves when it is done; rounds never overlap. The background runs one
   * every third of `leaseTtlMs` anyway.
   */
  rebalance(options: { signal?: AbortSignal } = {}): Promise<void> {
    checkCallOptions('rebalance', options, ['signal']);
    if (this.destroyed) return Promise.reject(this.destroyed);
    // An explicit round resolves once the vnodes it took are open (or failed to open).
    return this.tick(options.signal).then((opening) => Promise.all(opening).then(() => undefined));
  }

  /**
   * Runs one round after any in progress; resolves, once its leases are
   * written, with the openings of the subscriptions it took (the next round
   * does not wait for them: renewals must not wait for slow openings).
   */
  private tick(signal?: AbortSignal): Promise<Promise<void>[]> {
    const run = this.ticking.then(() => this.round(signal));
    this.ticking = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private schedule(): void {
    if (this.closing || this.destroyed) return;
    this.timer = this.clock.setTimeout(
      () => {
        this.timer = undefined;
        this.tick()
          .then(
            () => (this.lastError = undefined),
            (e: unknown) => {
              this.lastError = e;
              this.logger.warn(
                { group: this.group, instanceId: this.instanceId, error: String(e) },
                'consumer group: a background round failed; leases not renewed expire on their own',
              );
            },
          )
          .finally(() => this.schedule());
      },
      Math.max(1, Math.floor(this.leaseTtlMs / 3)),
    );
  }

  private now(): number {
    return monotonicNow(this.clock);
  }

  /** One round: heartbeat, members, leases, then what to give up and what to take. */
  private async round(signal: AbortSignal | undefined): Promise<Promise<void>[]> {
    const opening: Promise<void>[] = [];
    if (this.destroyed || this.closing) return opening;
    await this.heartbeat(signal);
    await this.readMembers(signal);
    const leases = await this.readLeases(signal);
    await this.renew(leases, signal);
    const desired = this.desired();
    for (const o of this.owned.values()) {
      if (o.state === 'active' && !desired.has(o.vnode)) {
        o.state = 'draining';
        o.drainingSince = this.now();
      }
    }
    await Promise.all(
      [...this.owned.values()]
        .filter((o) => o.state === 'draining')
        .map((o) => this.finishDrainIfDone(o, signal)),
    );
    const taking: Promise<void>[] = [];
    for (const v of desired) {
      const mine = this.owned.get(v);
      if (mine) {
        // Handed over meanwhile and wanted again: keep it.
        if (mine.state === 'draining') mine.state = 'active';
        if (!mine.consumer && !mine.opening) opening.push(this.openLater(mine, signal));
        continue;
      }
      taking.push(this.take(v, leases.get(v), signal, opening));
    }
    await Promise.all(taking);
    return opening;
  }

  private async heartbeat(signal: AbortSignal | undefined): Promise<void> {
    const member: Member = {
      group: this.group,
      instanceId: this.instanceId,
      session: this.session,
      assignment: this.staticVnodes ? 'static' : 'dynamic',
      beat: ++this.beat,
      joinedAtMs: this.joinedAtMs,
      renewedAtMs: this.clock.now(),
      vnodes: this.vnodes,
      leaseTtlMs: this.leaseTtlMs,
    };
    await this.store.put(this.memberKey(), encodeMember(member), { mode: 'overwrite', signal });
  }

  private memberKey(): string {
    return memberKey(this.queue.dataPathPrefix, this.group, this.instanceId, this.session);
  }

  /** Lists the members; a member is live while its heartbeat changed within the TTL, as observed here. */
  private async readMembers(signal: AbortSignal | undefined): Promise<void> {
    const prefix = `${groupPrefix(this.queue.dataPathPrefix, this.group)}/members/`;
    const now = this.now();
    const views: GroupMemberView[] = [];
    const seen = new Set<string>();
    for await (const meta of this.store.list(prefix, { signal })) {
      seen.add(meta.key);
      const since = this.observe(meta.key, meta.version, now);
      const cached = await this.readListed(meta, this.memberCache, decodeMember, signal);
      if (!cached) continue;
      const m = cached.value;
      const self = meta.key === this.memberKey();
      const live = self || now - since < this.leaseTtlMs;
      views.push({ instanceId: m.instanceId, session: m.session, assignment: m.assignment, live });
      // A member silent for three TTLs is gone for good: tidy its heartbeat away.
      if (!self && now - since >= 3 * this.leaseTtlMs) {
        await this.store.delete(meta.key, { signal }).catch(() => undefined);
      }
    }
    for (const k of this.memberCache.keys()) if (!seen.has(k)) this.memberCache.delete(k);
    this.members = views;
  }

  /**
   * A listed object's decoded value: from `cache` when the listing shows the
   * version read before, else read (and cached). Undefined when it was
   * deleted since the listing.
   */
  private async readListed<T>(
    meta: { key: string; version: string },
    cache: Map<string, { version: string; value: T }>,
    decode: (body: Uint8Array, key: string) => T,
    signal: AbortSignal | undefined,
  ): Promise<{ version: string; value: T } | undefined> {
    const cached = cache.get(meta.key);
    if (cached?.version === meta.version) return cached;
    try {
      const { body, version } = await this.store.get(meta.key, { signal });
      const read = { version, value: decode(body, meta.key) };
      cache.set(meta.key, read);
      return read;
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  /** Records a key's version; returns since when (monotonic ms) it has been seen unchanged. */
  private observe(key: string, version: string, now: number): number {
    const o = this.observed.get(key);
    if (o && o.version === version) return o.since;
    this.observed.set(key, { version, since: now });
    return now;
  }

  /** The leases of the group as stored now, by vnode (listing, then reading those that changed). */
  private async readLeases(
    signal: AbortSignal | undefined,
  ): Promise<Map<number, { lease: Lease; version: string; since: number }>> {
    const prefix = `${groupPrefix(this.queue.dataPathPrefix, this.group)}/leases/`;
    const now = this.now();
    const out = new Map<number, { lease: Lease; version: string; since: number }>();
    for await (const meta of this.store.list(prefix, { signal })) {
      const since = this.observe(meta.key, meta.version, now);
      const cached = await this.readListed(meta, this.leaseCache, decodeLease, signal);
      if (!cached) continue;
      // A read that raced a write reports the newer version: watch that one.
      const watched =
        cached.version === meta.version ? since : this.observe(meta.key, cached.version, now);
      out.set(cached.value.vnode, { lease: cached.value, version: cached.version, since: watched });
    }
    return out;
  }

  /** Renews every lease this member owns; one that changed under it, or ran out, is lost. */
  private async renew(
    leases: Map<number, { lease: Lease; version: string }>,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    await Promise.all(
      [...this.owned.values()].map(async (o) => {
        const stored = leases.get(o.vnode);
        if (!stored || stored.version !== o.version) {
          await this.lose(o, 'its lease was changed by another member');
          return;
        }
        const sent = this.now();
        if (sent >= o.validUntil) {
          await this.lose(o, 'its lease ran out before it could be renewed');
          return;
        }
        const lease: Lease = { ...o.lease, renewedAtMs: this.clock.now() };
        try {
          const written = await this.writeLease(lease, { ifMatch: o.version }, signal);
          if (!this.owned.has(o.vnode)) return;
          o.lease = lease;
          o.version = written;
          o.validUntil = sent + this.leaseTtlMs;
        } catch (e) {
          if (e instanceof PreconditionFailedError) {
            await this.lose(o, 'its lease was taken over');
            return;
          }
          // A failed renewal keeps the lease until validUntil; the next round tries again.
          this.logger.warn(
            { group: this.group, vnode: o.vnode, error: String(e) },
            'consumer group: renewing a lease failed',
          );
        }
      }),
    );
  }

  /**
   * Writes a lease; an unknown outcome is settled by reading it back: ours
   * (same session, epoch and renewal time) counts as written.
   */
  private async writeLease(
    lease: Lease,
    mode: 'create' | { ifMatch: string },
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const key = leaseKey(this.queue.dataPathPrefix, this.group, lease.vnode);
    try {
      return (await this.store.put(key, encodeLease(lease), { mode, signal })).version;
    } catch (e) {
      if (!(e instanceof OutcomeUnknownError)) throw e;
      const { body, version } = await this.store.get(key, { signal });
      const stored = decodeLease(body, key);
      if (
        stored.session === lease.session &&
        stored.epoch === lease.epoch &&
        stored.renewedAtMs === lease.renewedAtMs &&
        stored.owner === lease.owner
      ) {
        return version;
      }
      throw new PreconditionFailedError(key, `${key}: the lease was written by another member`);
    }
  }

  /** The vnodes this member should own now. */
  private desired(): Set<number> {
    if (this.staticVnodes) return new Set(this.staticVnodes);
    const all = Array.from({ length: this.queue.vnodeCapacity }, (_, v) => v);
    const live = this.members
      .filter((m) => m.live && m.assignment === 'dynamic')
      .map((m) => m.instanceId);
    if (!live.includes(this.instanceId)) live.push(this.instanceId);
    const owners = assignVnodes(live, all);
    return new Set(all.filter((v) => owners.get(v) === this.instanceId));
  }

  /**
   * Takes vnode `v` when its lease is absent, released, or expired (seen
   * unchanged for a whole TTL here), then opens its subscription.
   */
  private async take(
    v: number,
    stored: { lease: Lease; version: string; since: number } | undefined,
    signal: AbortSignal | undefined,
    opening: Promise<void>[],
  ): Promise<void> {
    if (this.closing || this.destroyed) return;
    const now = this.now();
    let mode: 'create' | { ifMatch: string };
    let epoch: number;
    if (!stored) {
      mode = 'create';
      epoch = 1;
    } else {
      const l = stored.lease;
      const free = l.owner === null;
      const expired = now - stored.since >= this.leaseTtlMs;
      // Our own session's lease (a write whose answer was lost, then forgotten): take it back.
      const ours = l.session === this.session;
      if (!free && !expired && !ours) return;
      mode = { ifMatch: stored.version };
      epoch = l.epoch + 1;
    }
    const wall = this.clock.now();
    const lease: Lease = {
      group: this.group,
      vnode: v,
      owner: this.instanceId,
      session: this.session,
      epoch,
      acquiredAtMs: wall,
      renewedAtMs: wall,
    };
    let version: string;
    try {
      version = await this.writeLease(lease, mode, signal);
    } catch (e) {
      // Another member was faster: the next round looks again.
      if (e instanceof PreconditionFailedError) return;
      throw e;
    }
    const o: Owned = {
      vnode: v,
      lease,
      version,
      validUntil: now + this.leaseTtlMs,
      consumer: undefined,
      opening: undefined,
      state: 'active',
      drainingSince: 0,
      pending: [],
      held: [],
    };
    if (this.closing || this.destroyed) {
      await this.release(o, signal).catch(() => undefined);
      return;
    }
    this.owned.set(v, o);
    // Opened beside the round: a round that waited for slow openings would renew the
    // leases it holds too late, and lose them. Until it is open, the vnode gives nothing.
    opening.push(this.openLater(o, signal));
  }

  /**
   * Starts opening `o`; the promise is for a caller of `rebalance()`. A
   * failure is logged, and the next round opens it again.
   */
  private openLater(o: Owned, signal: AbortSignal | undefined): Promise<void> {
    const p = this.open(o, signal);
    p.catch(() => undefined);
    return p;
  }

  /**
   * Opens the vnode's subscription: this raises its epoch and so fences the
   * previous owner, whose acknowledgements fail from then on.
   */
  /**
   * Deletes a vnode's `default` subscription once a group's subscription
   * holds its data: every log queue is created with one (so nothing is
   * collected before anybody reads), but nobody reads a vnode through it, and
   * left alone it would keep the collector from deleting any of the vnode's
   * batches. The group's subscription, created at `oldest`, covers
   * everything `default` kept.
   */
  private async dropDefaultSubscription(
    vnode: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (this.defaultDropped.has(vnode)) return;
    try {
      await this.queue.vnodeQueue(vnode).deleteSubscription('default', signal ? { signal } : {});
    } catch (e) {
      // Already gone (another member, an earlier run): nothing to do.
      if (!(e instanceof InvalidArgumentError)) throw e;
    }
    this.defaultDropped.add(vnode);
  }

  private open(o: Owned, signal: AbortSignal | undefined): Promise<void> {
    o.opening ??= (async () => {
      try {
        const consumer = await Consumer.open({
          queue: this.queue.vnodeQueue(o.vnode),
          subscription: this.group,
          startAt: 'oldest',
          instanceId: this.instanceId,
          clock: this.clock,
          logger: this.logger,
          ...this.consumerOptions,
          ...(signal ? { signal } : {}),
        });
        if (this.owned.get(o.vnode) !== o || this.destroyed) {
          await consumer.destroy();
          return;
        }
        try {
          await this.dropDefaultSubscription(o.vnode, signal);
        } catch (e) {
          await consumer.destroy();
          throw e;
        }
        o.consumer = consumer;
        this.wake?.();
      } catch (e) {
        // The next round opens it again; the lease stays ours meanwhile.
        this.logger.warn(
          { group: this.group, vnode: o.vnode, error: String(e) },
          'consumer group: opening a vnode failed',
        );
        throw e;
      } finally {
        o.opening = undefined;
      }
    })();
    return o.opening;
  }

  /** Gives a vnode up without writing: its lease is another's now (or ran out). */
  private async lose(o: Owned, why: string): Promise<void> {
    if (this.owned.get(o.vnode) !== o) return;
    this.owned.delete(o.vnode);
    this.logger.warn(
      { group: this.group, vnode: o.vnode, instanceId: this.instanceId },
      `consumer group: lost vnode ${o.vnode}: ${why}; nothing more is acknowledged for it`,
    );
    // Nothing pending is applied: those batches go to the new owner again.
    await o.consumer?.destroy(new FencedError(`vnode ${o.vnode} of group "${this.group}": ${why}`));
  }

  /** Hands a draining vnode over once what it handed out is acknowledged, or after a TTL. */
  private async finishDrainIfDone(o: Owned, signal: AbortSignal | undefined): Promise<void> {
    if (o.state !== 'draining') return;
    if (o.pending.length > 0 && this.now() - o.drainingSince < this.leaseTtlMs) return;
    this.owned.delete(o.vnode);
    await o.opening?.catch(() => undefined);
    try {
      // Applies the acknowledgements made; what is still handed out comes again to the next owner.
      await o.consumer?.close();
    } catch (e) {
      if (!(e instanceof FencedError)) {
        this.logger.warn(
          { group: this.group, vnode: o.vnode, error: String(e) },
          'consumer group: closing a vnode failed',
        );
      }
    }
    await this.release(o, signal);
  }

  /** Marks the lease free (epoch kept), if it is still ours. */
  private async release(o: Owned, signal: AbortSignal | undefined): Promise<void> {
    const lease: Lease = { ...o.lease, owner: null, session: null, renewedAtMs: this.clock.now() };
    try {
      await this.writeLease(lease, { ifMatch: o.version }, signal);
    } catch (e) {
      // Taken over meanwhile: nothing to release.
      if (!(e instanceof PreconditionFailedError)) throw e;
    }
  }

  /** Whether this member may hand out and acknowledge batches of `o` now. */
  private holds(o: Owned): boolean {
    return this.owned.get(o.vnode) === o && this.now() < o.validUntil && o.consumer !== undefined;
  }

  /**
   * The next batch of any vnode this member reads (each call starts at the
   * next vnode, so every vnode gets its turn), or `undefined` when all are
   * caught up. A vnode being handed over gives nothing more.
   *
   * @throws {ClosedError} after `close()`.
   * @throws what a vnode's consumer throws, but a {@link FencedError}: that
   * vnode is given up and the others are read.
   */
  async next(options: { signal?: AbortSignal } = {}): Promise<GroupBatch | undefined> {
    checkCallOptions('next', options, ['signal']);
    this.check();
    const candidates = [...this.owned.values()].filter((o) => o.state === 'active');
    const n = candidates.length;
    for (let i = 0; i < n; i++) {
      const o = candidates[(this.rotation + i) % n] as Owned;
      if (!this.holds(o)) continue;
      let batch: Batch | undefined = o.held.shift();
      try {
        batch ??= await (o.consumer as Consumer).next(options);
      } catch (e) {
        if (e instanceof FencedError) {
          await this.lose(o, 'another member took its subscription over');
          continue;
        }
        if (e instanceof ClosedError && this.owned.get(o.vnode) !== o) continue;
        throw e;
      }
      // Lost or handed over meanwhile: the next owner reads it from the cursor.
      if (!batch || this.owned.get(o.vnode) !== o) continue;
      // Its consumer counts it as handed out and will not give it again: it waits with
      // any others kept (another call's, while this one waited), the lowest first, so
      // batches leave in order; while the lease is in doubt or the vnode is being handed
      // over, all wait for it to be held again (a renewal in flight lands, a hand-over
      // is called off).
      insertBySequence(o.held, batch);
      if (!this.holds(o) || o.state !== 'active') continue;
      const first = o.held.shift() as Batch;
      this.rotation = (this.rotation + i + 1) % Math.max(1, n);
      o.pending.push(first.sequence);
      return { vnode: o.vnode, batch: first };
    }
    return undefined;
  }

  /**
   * Batches of every vnode this member reads, as they arrive, until `signal`
   * aborts or the group closes; when all are caught up it waits
   * `pollIntervalMs` (by the group's clock) or until it takes a vnode.
   */
  async *batches(
    options: { signal?: AbortSignal; pollIntervalMs?: number } = {},
  ): AsyncIterable<GroupBatch> {
    checkCallOptions('batches', options, ['signal', 'pollIntervalMs']);
    const { signal, pollIntervalMs = 1000 } = options;
    while (!signal?.aborted && !this.closing && !this.destroyed) {
      let item: GroupBatch | undefined;
      try {
        item = await this.next({ ...(signal ? { signal } : {}) });
      } catch (e) {
        if (signal?.aborted || this.closing) return;
        throw e;
      }
      if (item) {
        yield item;
        continue;
      }
      await this.idle(pollIntervalMs, signal);
    }
  }

  private async idle(ms: number, signal: AbortSignal | undefined): Promise<void> {
    const woken = new AbortController();
    this.wake = () => woken.abort();
    try {
      await sleep(ms, {
        signal: signal ? AbortSignal.any([signal, woken.signal]) : woken.signal,
        clock: this.clock,
      });
    } catch {
      // Woken, or aborted: the loop looks again.
    } finally {
      this.wake = undefined;
    }
  }

  /**
   * Acknowledges the oldest batch of `vnode` handed out and not acknowledged
   * (applied as the vnode consumer's `ack()` is: in groups of `ackBatchSize`
   * or after `ackIntervalMs`).
   *
   * @throws {FencedError} when this member no longer owns the vnode (its
   * lease was lost or ran out): the acknowledgement is not recorded.
   * @throws {InvalidArgumentError} when `sequence` is not the oldest unacknowledged batch of the vnode.
   */
  async ack(
    vnode: number,
    sequence: number,
    options: { signal?: AbortSignal } = {},
  ): Promise<void> {
    const o = this.ownedForAck(vnode);
    await (o.consumer as Consumer)
      .ack(sequence, options)
      .catch((e: unknown) => this.ackFailed(o, e));
    if (o.pending[0] === sequence) o.pending.shift();
    await this.afterAck(o);
  }

  /**
   * Acknowledges every batch of `vnode` handed out up to `sequence` and
   * applies it at once (one cursor write).
   *
   * @throws {FencedError} when this member no longer owns the vnode, or the
   * write found the subscription taken over: nothing is recorded.
   */
  async ackThrough(
    vnode: number,
    sequence: number,
    options: { signal?: AbortSignal } = {},
  ): Promise<void> {
    const o = this.ownedForAck(vnode);
    await (o.consumer as Consumer)
      .ackThrough(sequence, options)
      .catch((e: unknown) => this.ackFailed(o, e));
    while (o.pending.length > 0 && (o.pending[0] as number) <= sequence) o.pending.shift();
    await this.afterAck(o);
  }

  /** Applies the pending acknowledgements of every vnode now. */
  async flush(options: { signal?: AbortSignal } = {}): Promise<void> {
    checkCallOptions('flush', options, ['signal']);
    this.check();
    await Promise.all(
      [...this.owned.values()].map((o) =>
        o.consumer
          ? o.consumer.flush(options).catch((e: unknown) => this.ackFailed(o, e))
          : Promise.resolve(),
      ),
    );
  }

  private ownedForAck(vnode: number): Owned {
    this.check();
    const o = this.owned.get(vnode);
    if (!o || !o.consumer) {
      throw new FencedError(
        `vnode ${vnode} of group "${this.group}": this member (${this.instanceId}) does not own it (any more): its lease was lost or handed over, and the acknowledgement is not recorded; the batch goes to the vnode's owner again`,
      );
    }
    if (this.now() >= o.validUntil) {
      throw new FencedError(
        `vnode ${vnode} of group "${this.group}": this member's lease ran out (not renewed for ${this.leaseTtlMs} ms); the acknowledgement is not recorded`,
      );
    }
    return o;
  }

  private async ackFailed(o: Owned, e: unknown): Promise<never> {
    if (e instanceof FencedError) await this.lose(o, 'another member took its subscription over');
    throw e;
  }

  private async afterAck(o: Owned): Promise<void> {
    // A vnode being handed over goes as soon as everything it handed out is acknowledged.
    if (o.state === 'draining' && o.pending.length === 0) {
      void this.tick().catch(() => undefined);
    }
  }

  private check(): void {
    if (this.destroyed) throw this.destroyed;
    if (this.closing) throw new ClosedError('consumer group');
  }

  /**
   * Leaves the group: stops handing out, applies the acknowledgements made
   * (batches handed out and not acknowledged go to the next owner), releases
   * every lease at once and removes this member's heartbeat, so the others
   * take its vnodes at their next round. Idempotent; every step runs even
   * when one fails (the first failure is thrown).
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.clock.clearTimeout(this.timer);
      this.timer = undefined;
      this.wake?.();
      await this.ticking;
      const errors: unknown[] = [];
      await Promise.all(
        [...this.owned.values()].map(async (o) => {
          this.owned.delete(o.vnode);
          await o.opening?.catch(() => undefined);
          try {
            await o.consumer?.close();
          } catch (e) {
            if (!(e instanceof FencedError)) errors.push(e);
            return; // fenced: not ours to release
          }
          await this.release(o, undefined).catch((e: unknown) => errors.push(e));
        }),
      );
      await this.store.delete(this.memberKey()).catch((e: unknown) => errors.push(e));
      if (this.ownsQueue) await this.queue.close().catch((e: unknown) => errors.push(e));
      if (errors.length > 0) throw asError(errors[0]);
    })();
    return this.closing;
  }

  /**
   * Stops at once, as a crash would (for tests and for shutting down hard):
   * no acknowledgement is applied, no lease released (they expire after
   * `leaseTtlMs`). Idempotent.
   */
  async destroy(error?: Error): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = error ?? new ClosedError('consumer group (destroyed)');
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.wake?.();
    this.closing ??= Promise.resolve();
    const owned = [...this.owned.values()];
    this.owned.clear();
    await Promise.allSettled(owned.map((o) => o.consumer?.destroy() ?? Promise.resolve()));
    if (this.ownsQueue) await this.queue.close().catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Inserts `batch` into `batches` (sorted by sequence), keeping them sorted. */
function insertBySequence(batches: Batch[], batch: Batch): void {
  let i = batches.length;
  while (i > 0 && (batches[i - 1] as Batch).sequence > batch.sequence) i--;
  batches.splice(i, 0, batch);
}

/**
 * An independent checker of the buffer's promises, fed with a log of what
 * producers submitted and what consumers received and acknowledged: whole
 * batches (`next()` and acks) or entries (`process()`: each entry handed to
 * the handler and each one it finished).
 *
 * Entries are named `"{producer}:{n}"`, where `n` counts one producer's
 * entries in submission order, so the checker can tell each entry's origin
 * and its place in its producer's order from the bytes alone.
 */

/** One `produce()` call: entries `{producer}:{first}` .. `{producer}:{first + count - 1}`. */
export interface ProducedCall {
  producer: string;
  first: number;
  count: number;
  /** How its `durable` promise ended; `unknown` when the process died first. */
  outcome: 'resolved' | 'rejected' | 'unknown';
}

/**
 * What consumers did, in the order it happened. `subscription` names the
 * subscription the consumer read (log layout); absent, the default one.
 * Every subscription is checked on its own: each must receive every entry
 * whose `durable` resolved (with `process()`: commit it), exactly once once
 * acknowledged (or once its commit was recorded), in each producer's order.
 */
export type ConsumerEvent =
  | {
      kind: 'delivered';
      /** The consumer session (one per `Consumer.open`). */
      consumer: string;
      subscription?: string;
      sequence: number;
      location: string;
      entries: readonly string[];
      /**
       * The index of `entries[0]` in its batch (`Batch.firstIndex`): a batch
       * handed out after a commit inside it holds only the rest. @default 0
       */
      firstIndex?: number;
    }
  | EntryHandedOut
  | EntryCommitted
  /** An acknowledgement through `through` that is known to be stored (its flush resolved). */
  | { kind: 'acked'; consumer: string; subscription?: string; through: number }
  /**
   * A `DataLossError` a consumer received: sequences `first` to `last` were
   * deleted before it acknowledged them. A violation unless retention was
   * meant to expire them (`expected`).
   */
  | {
      kind: 'lost';
      consumer: string;
      subscription?: string;
      first: number;
      last: number;
      expected: boolean;
    };

/**
 * An entry handed to a `process()` handler, logged as the handler starts.
 * Attempt 1 (or none given) is the hand-out; later attempts are retries of
 * the same hand-out, by the same consumer session.
 */
export interface EntryHandedOut {
  kind: 'handed-out';
  /** The consumer session (one per `Consumer.open`). */
  consumer: string;
  subscription?: string;
  /** The entry's position: batch `sequence`, `index` in it. */
  sequence: number;
  index: number;
  /** The entry's id (see {@link entryId}). */
  entry: string;
  /** @default 1 */
  attempt?: number;
}

/**
 * An entry a `process()` handler finished, logged before the handler
 * returns (so before `process()` records it): it returned `'commit'`, or
 * the entry was skipped or sent to a dead-letter queue (`outcome`).
 * `promise` says what the delivery style promises once the same consumer
 * session handed out an entry after this event:
 *
 * - `'entry'` (the exactly-once styles on the log layout, the default): the
 *   entry is never handed out to the subscription again;
 * - `'batch'` (exactly-once on a v1 queue, which records whole batches): the
 *   same, once every entry of its batch handed out to that session was
 *   finished and the later entry is in a later batch;
 * - `'none'` (at-least-once): it may be handed out again (counted).
 */
export interface EntryCommitted {
  kind: 'committed';
  consumer: string;
  subscription?: string;
  sequence: number;
  index: number;
  entry: string;
  /** @default 'commit' */
  outcome?: 'commit' | 'skip' | 'dead-letter';
  /** @default 'entry' */
  promise?: 'entry' | 'batch' | 'none';
}

/** Everything a run tells the checker. */
export interface RunLog {
  calls: readonly ProducedCall[];
  events: readonly ConsumerEvent[];
  /** Locations of every manifest version seen written or read, in order. */
  manifests: readonly (readonly string[])[];
  /** Batch objects deleted by garbage collection, with the locations referenced when they went. */
  deletions: readonly Deletion[];
}

/** One garbage-collection delete, as it reached the store. */
export interface Deletion {
  keys: readonly string[];
  /** Locations the stored manifest referenced just before the delete. */
  referenced: readonly string[];
  /** How many entries `manifests` had then: later versions must not reference the keys either. */
  manifestIndex: number;
}

/** What the checker counted and found. Every list of violations must be empty. */
export interface InvariantReport {
  calls: number;
  entries: number;
  resolvedEntries: number;
  rejectedEntries: number;
  unknownEntries: number;
  /** Distinct entries delivered at least once. */
  deliveredEntries: number;
  /** Deliveries of batches handed out before and never acknowledged (allowed, counted). */
  redeliveredBatches: number;
  redeliveredEntries: number;
  /** Entries whose `durable` rejected or never settled and that were delivered anyway. */
  deliveredWithoutResolve: number;
  /** Distinct entries handed to a `process()` handler (most of any subscription). */
  handedOutEntries: number;
  /** Distinct entries a `process()` handler finished (most of any subscription). */
  committedEntries: number;
  /**
   * Hand-outs of an entry handed out before to the same subscription, its
   * commit not recorded (allowed, counted; every subscription together).
   */
  handedOutAgain: number;
  lost: string[];
  duplicated: string[];
  outOfOrder: string[];
  phantom: string[];
  manifestDuplicates: string[];
  gcViolations: string[];
}

/** Checks a run's log against every invariant; returns counts and violations. */
export function checkInvariants(log: RunLog): InvariantReport {
  const report: InvariantReport = {
    calls: log.calls.length,
    entries: 0,
    resolvedEntries: 0,
    rejectedEntries: 0,
    unknownEntries: 0,
    deliveredEntries: 0,
    redeliveredBatches: 0,
    redeliveredEntries: 0,
    deliveredWithoutResolve: 0,
    handedOutEntries: 0,
    committedEntries: 0,
    handedOutAgain: 0,
    lost: [],
    duplicated: [],
    outOfOrder: [],
    phantom: [],
    manifestDuplicates: [],
    gcViolations: [],
  };

  // Outcome of every submitted entry.
  const outcome = new Map<string, ProducedCall['outcome']>();
  for (const c of log.calls) {
    for (let i = 0; i < c.count; i++) outcome.set(`${c.producer}:${c.first + i}`, c.outcome);
    report.entries += c.count;
    if (c.outcome === 'resolved') report.resolvedEntries += c.count;
    else if (c.outcome === 'rejected') report.rejectedEntries += c.count;
    else report.unknownEntries += c.count;
  }

  const locationOf = new Map<number, string>();
  const subscriptions = new Map<string, ConsumerEvent[]>();
  for (const ev of log.events) {
    const name = ev.subscription ?? 'default';
    let list = subscriptions.get(name);
    if (!list) subscriptions.set(name, (list = []));
    list.push(ev);
  }
  if (subscriptions.size === 0) subscriptions.set('default', []);
  let delivered = 0;
  for (const [name, events] of subscriptions) {
    const prefix = subscriptions.size > 1 ? `[${name}] ` : '';
    delivered = Math.max(delivered, checkSubscription(events, prefix, outcome, locationOf, report));
  }
  report.deliveredEntries = delivered;

  // No manifest version holds a location twice, and a location keeps its sequence.
  for (const [i, locations] of log.manifests.entries()) {
    const seen = new Set<string>();
    for (const l of locations) {
      if (seen.has(l)) report.manifestDuplicates.push(`manifest version ${i} holds ${l} twice`);
      seen.add(l);
    }
  }
  const sequencesByLocation = new Map<string, number>();
  for (const [sequence, location] of locationOf) {
    const other = sequencesByLocation.get(location);
    if (other !== undefined && other !== sequence) {
      report.manifestDuplicates.push(`${location} was appended as ${other} and as ${sequence}`);
    }
    sequencesByLocation.set(location, sequence);
  }

  // GC deletes only what the manifest no longer references.
  for (const d of log.deletions) {
    const referenced = new Set(d.referenced);
    for (const k of d.keys) {
      if (referenced.has(k)) report.gcViolations.push(`${k} was deleted while referenced`);
    }
    const gone = new Set(d.keys);
    for (let i = d.manifestIndex; i < log.manifests.length; i++) {
      for (const l of log.manifests[i] ?? []) {
        if (gone.has(l))
          report.gcViolations.push(`${l} was deleted, then manifest version ${i} referenced it`);
      }
    }
  }
  return report;
}

/** The lists of violations in an {@link InvariantReport}. */
export const VIOLATIONS = [
  'lost',
  'duplicated',
  'outOfOrder',
  'phantom',
  'manifestDuplicates',
  'gcViolations',
] as const;

/** Throws with the first violations of each kind, if there are any. */
export function assertInvariants(report: InvariantReport, context: string): void {
  const problems = VIOLATIONS.filter((k) => report[k].length > 0).map(
    (k) => `${k} (${report[k].length}): ${report[k].slice(0, 5).join('; ')}`,
  );
  if (problems.length > 0) {
    throw new Error(`${context}: invariants violated: ${problems.join(' | ')}`);
  }
}

/** The entry bytes for `{producer}:{n}`. */
export function entryBytes(producer: string, n: number): Uint8Array {
  return new TextEncoder().encode(`${producer}:${n}`);
}

/** The id of entry bytes made by {@link entryBytes}. */
export function entryId(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/**
 * The checks one subscription's events must pass: a batch may come again only
 * while it was never acknowledged, and an entry only while its commit was not
 * recorded; an entry lives in one batch (and one position) only; every
 * resolved entry arrives (with `process()`: is committed), in each producer's
 * order; and no loss was reported that retention was not meant to cause.
 * Returns the entries delivered.
 */
function checkSubscription(
  events: readonly ConsumerEvent[],
  prefix: string,
  outcome: ReadonlyMap<string, ProducedCall['outcome']>,
  locationOf: Map<number, string>,
  report: InvariantReport,
): number {
  const sequenceOf = new Map<string, number>();
  /** Entries delivered in a batch or committed: what "nothing lost" counts. */
  const received = new Set<string>();
  const seenBatch = new Set<number>();
  let ackedThrough = -1;
  const firstDeliveries: { sequence: number; index: number; id: string }[] = [];
  const expectedLoss: [number, number][] = [];
  const entries = new EntryLedger(report);

  /** Records where an entry was seen; the first time, checks that it was produced. */
  const sight = (id: string, sequence: number, index: number, where: string): void => {
    const first = sequenceOf.get(id);
    if (first === undefined) {
      sequenceOf.set(id, sequence);
      firstDeliveries.push({ sequence, index, id });
      const o = outcome.get(id);
      if (o === undefined) report.phantom.push(`${id} in ${where} was never produced`);
      else if (o !== 'resolved') report.deliveredWithoutResolve++;
    } else if (first !== sequence) {
      report.duplicated.push(`${id} is in batch ${first} and again in ${where}`);
    }
  };

  for (const ev of events) {
    if (ev.kind === 'acked') {
      ackedThrough = Math.max(ackedThrough, ev.through);
      continue;
    }
    if (ev.kind === 'lost') {
      if (ev.expected) expectedLoss.push([ev.first, ev.last]);
      else
        report.lost.push(
          `${prefix}sequences ${ev.first} to ${ev.last} reported lost to ${ev.consumer}`,
        );
      ackedThrough = Math.max(ackedThrough, ev.last);
      continue;
    }
    if (ev.kind === 'handed-out' || ev.kind === 'committed') {
      const where = `${prefix}entry ${ev.sequence}:${ev.index} to ${ev.consumer}`;
      if (ev.kind === 'handed-out' && (ev.attempt ?? 1) <= 1 && ev.sequence <= ackedThrough) {
        report.duplicated.push(
          `${where} (${ev.entry}): handed out after its batch was acknowledged (through ${ackedThrough})`,
        );
      }
      sight(ev.entry, ev.sequence, ev.index, where);
      if (ev.kind === 'handed-out') entries.handedOut(ev, where);
      else if (entries.committed(ev, where)) received.add(ev.entry);
      continue;
    }
    const where = `${prefix}batch ${ev.sequence} (${ev.location}) to ${ev.consumer}`;
    const knownLocation = locationOf.get(ev.sequence);
    if (knownLocation !== undefined && knownLocation !== ev.location) {
      report.manifestDuplicates.push(
        `sequence ${ev.sequence} delivered as ${knownLocation} and as ${ev.location}`,
      );
    }
    locationOf.set(ev.sequence, ev.location);
    if (ev.sequence <= ackedThrough) {
      report.duplicated.push(
        `${where}: delivered after it was acknowledged (through ${ackedThrough})`,
      );
    }
    const again = seenBatch.has(ev.sequence);
    if (again) {
      report.redeliveredBatches++;
      report.redeliveredEntries += ev.entries.length;
    }
    seenBatch.add(ev.sequence);
    const firstIndex = ev.firstIndex ?? 0;
    ev.entries.forEach((id, k) => {
      sight(id, ev.sequence, firstIndex + k, where);
      received.add(id);
    });
  }

  for (const [id, o] of outcome) {
    if (o === 'resolved' && !received.has(id) && expectedLoss.length === 0) {
      report.lost.push(
        `${prefix}${id}${sequenceOf.has(id) ? ' (handed out, never committed)' : ''}`,
      );
    }
  }
  report.handedOutEntries = Math.max(report.handedOutEntries, entries.handedOutIds.size);
  report.committedEntries = Math.max(report.committedEntries, entries.committedIds.size);

  // Each producer's entries arrive in the order it submitted them.
  firstDeliveries.sort((a, b) => a.sequence - b.sequence || a.index - b.index);
  const lastN = new Map<string, { n: number; id: string }>();
  for (const d of firstDeliveries) {
    const cut = d.id.lastIndexOf(':');
    const producer = d.id.slice(0, cut);
    const n = Number(d.id.slice(cut + 1));
    const prev = lastN.get(producer);
    if (prev && n <= prev.n) report.outOfOrder.push(`${prefix}${d.id} arrived after ${prev.id}`);
    lastN.set(producer, { n, id: d.id });
  }
  return sequenceOf.size;
}

/** One consumer session's entries of one batch: handed out, and finished with their promise. */
interface SessionBatch {
  handed: Set<number>;
  /** Finished, their recording not yet proven by a later hand-out. */
  finished: Map<number, NonNullable<EntryCommitted['promise']>>;
  /** Indices finished in this session (proven or not). */
  done: Set<number>;
}

/** One consumer session's entries, by batch sequence. */
interface EntrySession {
  batches: Map<number, SessionBatch>;
  /** The last position handed out (attempt 1). */
  last?: { sequence: number; index: number };
}

/**
 * The entry-level checks of one subscription (`process()`): the promise of
 * each commit once a later entry was handed out, the order of each session's
 * hand-outs, the positions of entries.
 */
class EntryLedger {
  /** Positions whose commit is proven recorded: never to be handed out again. */
  private readonly recorded = new Map<string, string>();
  /** Positions handed out (attempt 1), and the entry at each. */
  private readonly handed = new Map<string, string>();
  private readonly sessions = new Map<string, EntrySession>();
  readonly handedOutIds = new Set<string>();
  readonly committedIds = new Set<string>();

  constructor(private readonly report: InvariantReport) {}

  handedOut(ev: EntryHandedOut, where: string): void {
    const session = this.session(ev.consumer);
    const key = `${ev.sequence}:${ev.index}`;
    this.handedOutIds.add(ev.entry);
    const atKey = this.handed.get(key);
    if (atKey !== undefined && atKey !== ev.entry) {
      this.report.duplicated.push(`${where}: holds ${ev.entry}, but ${atKey} was handed out there`);
    }
    if ((ev.attempt ?? 1) > 1) {
      if (!session.batches.get(ev.sequence)?.handed.has(ev.index)) {
        this.report.phantom.push(
          `${where}: attempt ${ev.attempt} of ${ev.entry}, never handed out to that consumer`,
        );
      }
      return;
    }
    // Handing out an entry proves that every commit the session logged before it was
    // recorded, as far as the delivery style promises (see EntryCommitted.promise).
    for (const [sequence, b] of session.batches) {
      const wholeBatch = sequence < ev.sequence && b.done.size === b.handed.size;
      for (const [index, promise] of b.finished) {
        if (promise === 'entry' || (promise === 'batch' && wholeBatch)) {
          this.recorded.set(`${sequence}:${index}`, ev.consumer);
          b.finished.delete(index);
        } else if (promise === 'none') {
          b.finished.delete(index);
        }
      }
      if (b.finished.size === 0 && b.done.size === b.handed.size && sequence < ev.sequence) {
        session.batches.delete(sequence);
      }
    }
    const by = this.recorded.get(key);
    if (by !== undefined) {
      this.report.duplicated.push(
        `${where} (${ev.entry}): handed out again after ${by} committed it and handed out a later entry`,
      );
    }
    if (atKey !== undefined) this.report.handedOutAgain++;
    this.handed.set(key, ev.entry);
    const last = session.last;
    if (
      last &&
      (ev.sequence < last.sequence || (ev.sequence === last.sequence && ev.index <= last.index))
    ) {
      this.report.outOfOrder.push(
        `${where} (${ev.entry}): handed out after ${last.sequence}:${last.index}, in the same session`,
      );
    }
    session.last = { sequence: ev.sequence, index: ev.index };
    let b = session.batches.get(ev.sequence);
    if (!b)
      session.batches.set(
        ev.sequence,
        (b = { handed: new Set(), finished: new Map(), done: new Set() }),
      );
    b.handed.add(ev.index);
  }

  /** Records a commit; whether it counts as the entry received (it was handed out). */
  committed(ev: EntryCommitted, where: string): boolean {
    const b = this.session(ev.consumer).batches.get(ev.sequence);
    if (!b?.handed.has(ev.index)) {
      this.report.phantom.push(
        `${where}: ${ev.entry} committed, never handed out to that consumer`,
      );
      return false;
    }
    if (b.done.has(ev.index)) {
      this.report.duplicated.push(`${where}: ${ev.entry} committed twice by that consumer`);
      return true;
    }
    b.done.add(ev.index);
    b.finished.set(ev.index, ev.promise ?? 'entry');
    this.committedIds.add(ev.entry);
    return true;
  }

  private session(consumer: string): EntrySession {
    let s = this.sessions.get(consumer);
    if (!s) this.sessions.set(consumer, (s = { batches: new Map() }));
    return s;
  }
}

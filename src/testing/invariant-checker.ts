/**
 * An independent checker of the buffer's promises, fed with a log of what
 * producers submitted and what consumers received and acknowledged.
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
 * whose `durable` resolved, exactly once once acknowledged, in each
 * producer's order.
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
    }
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
 * while it was never acknowledged, an entry lives in one batch only, every
 * resolved entry arrives, in each producer's order, and no loss was reported
 * that retention was not meant to cause. Returns the entries delivered.
 */
function checkSubscription(
  events: readonly ConsumerEvent[],
  prefix: string,
  outcome: ReadonlyMap<string, ProducedCall['outcome']>,
  locationOf: Map<number, string>,
  report: InvariantReport,
): number {
  const sequenceOf = new Map<string, number>();
  const seenBatch = new Set<number>();
  let ackedThrough = -1;
  const firstDeliveries: { sequence: number; index: number; id: string }[] = [];
  const expectedLoss: [number, number][] = [];
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
    ev.entries.forEach((id, index) => {
      const first = sequenceOf.get(id);
      if (first === undefined) {
        sequenceOf.set(id, ev.sequence);
        firstDeliveries.push({ sequence: ev.sequence, index, id });
        const o = outcome.get(id);
        if (o === undefined) report.phantom.push(`${id} in ${where} was never produced`);
        else if (o !== 'resolved') report.deliveredWithoutResolve++;
      } else if (first !== ev.sequence) {
        report.duplicated.push(`${id} is in batch ${first} and again in ${where}`);
      }
    });
  }

  for (const [id, o] of outcome) {
    if (o === 'resolved' && !sequenceOf.has(id) && expectedLoss.length === 0) {
      report.lost.push(`${prefix}${id}`);
    }
  }

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

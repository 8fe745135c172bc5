import { randomUUID } from 'node:crypto';
import { systemClock, type Clock } from '../clock.ts';
import {
  CorruptDataError,
  DataLossError,
  FencedError,
  InvalidArgumentError,
  NotFoundError,
  OutcomeUnknownError,
  PreconditionFailedError,
} from '../errors.ts';
import { commitEnd, slotStart, type CommitBatch } from '../format/log-commit.ts';
import type { LogQueue } from '../queue/log-queue.ts';
import { readReservation, SlotWaits } from '../queue/log-slots.ts';
import type { Queue } from '../queue/queue.ts';
import { decodeChunkRecord } from './chunk-metadata.ts';
import type { Pusher } from './pusher.ts';
import { addRange, type SourceProgress } from './source-progress.ts';

/** A source's progress as recorded by a job. */
export type RecordedSource = Pick<
  SourceProgress,
  'source' | 'path' | 'ackedOffset' | 'ackedBeyond' | 'done' | 'sizeBytes'
>;

/** Options of {@link IngestProgress.open}. */
export interface IngestProgressOptions {
  /** The queue the job pushes to (log layout). */
  queue: Queue;
  /** The job's name (see `PusherOptions.job`). */
  job: string;
  /** Time source. @default the system clock */
  clock?: Clock;
  signal?: AbortSignal;
}

/** The checkpoint object, format `spillway-ingest-progress` version 1. */
interface Checkpoint {
  format: 'spillway-ingest-progress';
  version: 1;
  job: string;
  /** Raised by each run that opens the job: an older run's checkpoints are refused. */
  epoch: number;
  /** Random per write: tells our own write from another after a lost response. */
  writeId: string;
  /** Every chunk of the job in a batch below this sequence is reflected in `sources`. */
  asOfSequence: number;
  /**
   * Whether a run may have pushed chunks past `asOfSequence` (every
   * checkpoint but the last one of a run that ended with everything
   * acknowledged). Opening the job then scans from `asOfSequence` even when
   * the hold is missing (deleted under the run). Absent in checkpoints
   * written before the field: taken as false.
   */
  running?: boolean;
  updatedAtMs: number;
  sources: Record<string, Omit<RecordedSource, 'source'>>;
}

/**
 * What an ingestion job made durable, kept across crashes without trusting
 * a checkpoint alone.
 *
 * Each chunk's entries carry the job, the source and the byte range (see
 * `chunk-metadata.ts`), so the queue itself records what became durable. A
 * checkpoint object, `{root}/pusher/{job}.progress`, says where to start
 * looking: it holds every source's progress as of a sequence, and a
 * subscription `ingest.{job}` (the **hold**) stays at that sequence, so the
 * collector keeps every batch the checkpoint does not reflect yet. Opening
 * the job reads the checkpoint and scans the commits from its sequence to
 * the head for the job's chunks; a checkpoint is written (then the hold
 * moved) every few seconds and at the end; a job that ends with nothing in
 * flight deletes its hold, so it holds nothing back while it is not running.
 *
 * Each open raises the checkpoint's epoch: a run of the same job that was
 * still going is refused at its next checkpoint ({@link FencedError}). Run
 * one process per job at a time: chunks two runs pushed at once may be
 * written twice.
 */
export class IngestProgress {
  /** The job. */
  readonly job: string;
  private readonly log: LogQueue;
  private readonly clock: Clock;
  private readonly key: string;
  private readonly hold: string;
  private recorded = new Map<string, RecordedSource>();
  private epoch = 0;
  private version: string | undefined;
  private asOf = 0;
  private chain: Promise<void> = Promise.resolve();
  /** A checkpoint waiting for the one being written: later calls join it. */
  private queued: Promise<void> | undefined;
  private holdDeleted = false;

  private constructor(log: LogQueue, job: string, clock: Clock) {
    this.log = log;
    this.job = job;
    this.clock = clock;
    this.key = `${log.root}/pusher/${job}.progress`;
    this.hold = `ingest.${job}`;
  }

  /**
   * Opens a job on a queue (created, with the log layout, if it does not
   * exist), and finds what its earlier runs made durable.
   *
   * @throws {InvalidArgumentError} on a v1 queue, or for a bad job name.
   * @throws {DataLossError} when retention deleted batches the job's
   * progress rests on (what became durable can no longer be told).
   */
  static async open(options: IngestProgressOptions): Promise<IngestProgress> {
    const { queue, job, signal } = options;
    if (typeof job !== 'string' || !/^[A-Za-z0-9._-]{1,90}$/.test(job)) {
      throw new InvalidArgumentError(
        `ingest: a job name must be 1-90 characters of [A-Za-z0-9._-], got ${JSON.stringify(job)}`,
      );
    }
    if ((await queue.layout({ ...(signal ? { signal } : {}) })) === 'v1') {
      throw new InvalidArgumentError(
        `the queue at "${queue.manifestPath}" has the v1 layout: ingestion keeps its progress with a subscription, which needs the log layout (a new queue gets it)`,
      );
    }
    const log = queue.logQueue();
    await queue.ensureLog(log, signal);
    const p = new IngestProgress(log, job, options.clock ?? systemClock);
    await p.recover(signal);
    return p;
  }

  /** What earlier runs made durable, per source. */
  sources(): RecordedSource[] {
    return [...this.recorded.values()];
  }

  /** One source's recorded progress, if any run pushed some of it. */
  get(source: string): RecordedSource | undefined {
    return this.recorded.get(source);
  }

  /**
   * Writes a checkpoint of what `pusher` has acknowledged (with the sources
   * recorded before), then moves the hold up to it. Calls are serialised,
   * and coalesced: a call made while another checkpoint waits to be written
   * joins that one (which takes the progress as of its start), so a store
   * slower than the checkpoint interval costs no backlog.
   *
   * @throws {FencedError} when another run of the job opened it since.
   */
  checkpoint(pusher: Pusher, signal?: AbortSignal): Promise<void> {
    if (this.queued !== undefined) return this.queued;
    const run = this.chain.then(() => {
      this.queued = undefined;
      return this.write(pusher, false, signal);
    });
    this.queued = run;
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * The last checkpoint of a run; when every chunk pushed is acknowledged
   * (`Pusher.allAcknowledged`: nothing in flight, and no failed chunk whose
   * entries may have landed all the same), the hold is then deleted (the
   * checkpoint reflects every chunk pushed, so nothing needs keeping for
   * this job until it runs again). Otherwise the hold stays at the
   * checkpoint, and the next open scans from there.
   */
  finish(pusher: Pusher, signal?: AbortSignal): Promise<void> {
    const run = this.chain.then(() => {
      this.queued = undefined;
      return this.write(pusher, true, signal);
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async recover(signal?: AbortSignal): Promise<void> {
    const got = await this.readCheckpoint(signal);
    const cursor = await this.log.readCursor(this.hold, signal);
    let scanFrom: number | undefined;
    if (got) {
      for (const [source, s] of Object.entries(got.value.sources)) {
        this.recorded.set(source, { source, ...s });
      }
      this.asOf = got.value.asOfSequence;
      this.epoch = got.value.epoch;
    }
    if (cursor) {
      // A run did not finish cleanly: its chunks past the checkpoint are in the queue.
      scanFrom = got ? got.value.asOfSequence : cursor.value.next.sequence;
    } else if (got?.value.running === true) {
      // The same, with the hold deleted under the run (by hand): the batches past the
      // checkpoint may be collected already, which the scan then reports as lost.
      // moveHold re-creates the hold at the end of the scan, before anything is pushed.
      scanFrom = got.value.asOfSequence;
    } else {
      const created = await this.log.createCursor(this.hold, 'latest', signal);
      this.asOf = created.value.next.sequence;
    }
    if (scanFrom !== undefined) this.asOf = await this.scan(scanFrom, signal);
    this.epoch++;
    this.version = got?.version;
    await this.put(this.snapshot(new Map(), true), signal);
    await this.moveHold(signal);
  }

  /**
   * Adds the job's chunks in commits from `from` to the head, slots of their
   * reservations included; returns the end of the log scanned, or the first
   * slot found missing when one is (its producer may still write it, so the
   * next open scans from there again; it never voids).
   */
  private async scan(from: number, signal?: AbortSignal): Promise<number> {
    const { value: boundary } = await this.log.readBoundary(signal);
    if (from < boundary.firstSequence) {
      throw new DataLossError(
        from,
        boundary.firstSequence - 1,
        `ingest job "${this.job}": batches ${from}-${boundary.firstSequence - 1}, which say what its last run made durable, were deleted (retention?); not resuming, since it could write data twice or skip some. Check the sources, then delete "${this.key}" and the subscription "${this.hold}" to start over`,
      );
    }
    let end = from;
    let gap: number | undefined;
    const waits = new SlotWaits(() => 0);
    let { commit: n } = await this.log.resolveStart({ sequence: from }, signal);
    for (;;) {
      const c = await this.log.readCommit(n, signal);
      if (!c) break;
      let batches: CommitBatch[] = c.batches;
      if (commitEnd(c) > slotStart(c) && commitEnd(c) > from) {
        const slots = await readReservation(
          this.log.store,
          this.log.root,
          c,
          slotStart(c),
          from,
          waits,
          signal ? { signal } : {},
        );
        batches = [...c.batches, ...slots.batches];
        if (!slots.complete) gap ??= slots.nextSlot;
      }
      for (const b of batches) {
        if (b.entry.sequence < from) continue;
        for (const m of b.entry.metadata) {
          const r = decodeChunkRecord(m.payload);
          if (!r || r.job !== this.job) continue;
          const s = this.recorded.get(r.source) ?? {
            source: r.source,
            ackedOffset: 0,
            ackedBeyond: [],
            done: false,
          };
          const ranges: [number, number][] = s.ackedOffset > 0 ? [[0, s.ackedOffset]] : [];
          for (const x of s.ackedBeyond) addRange(ranges, [x[0], x[1]]);
          addRange(ranges, [r.offset, r.end]);
          const first = ranges[0];
          const acked = first && first[0] === 0 ? first[1] : 0;
          const size = r.last ? r.end : s.sizeBytes;
          this.recorded.set(r.source, {
            source: r.source,
            ...(r.path !== undefined
              ? { path: r.path }
              : s.path !== undefined
                ? { path: s.path }
                : {}),
            ackedOffset: acked,
            ackedBeyond: ranges.filter(([a]) => a > acked),
            done: size !== undefined && acked >= size,
            ...(size !== undefined ? { sizeBytes: size } : {}),
          });
        }
      }
      end = commitEnd(c);
      n++;
    }
    return Math.max(Math.min(end, gap ?? end), from);
  }

  private async write(pusher: Pusher, finishing: boolean, signal?: AbortSignal): Promise<void> {
    const now = new Map<string, RecordedSource>();
    for (const p of pusher.progress()) {
      now.set(p.source, {
        source: p.source,
        ...(p.path !== undefined ? { path: p.path } : {}),
        ackedOffset: p.ackedOffset,
        ackedBeyond: p.ackedBeyond,
        done: p.done,
        ...(p.sizeBytes !== undefined ? { sizeBytes: p.sizeBytes } : {}),
      });
    }
    const through = pusher.acknowledgedThroughSequence;
    // A chunk that failed may have landed (a lost response): not idle until its bytes are acknowledged.
    const idle =
      pusher.allAcknowledged &&
      pusher.bytesInFlight === 0 &&
      pusher.progress().every((p) => p.inFlight === 0);
    if (finishing && idle) {
      // Everything pushed is acknowledged and reflected: nothing past here is the job's.
      const head = await this.log.discoverHead(signal);
      this.asOf = Math.max(this.asOf, head.endSequence);
    } else if (through !== undefined) {
      this.asOf = Math.max(this.asOf, through);
    }
    for (const [k, v] of now) this.recorded.set(k, v);
    await this.put(this.snapshot(now, !(finishing && idle)), signal);
    if (finishing && idle) {
      await this.log.deleteSubscription(this.hold, signal);
      this.holdDeleted = true;
    } else {
      await this.moveHold(signal);
    }
  }

  private snapshot(current: Map<string, RecordedSource>, running: boolean): Checkpoint {
    // No prototype: a source may be named "__proto__".
    const sources = Object.create(null) as Checkpoint['sources'];
    for (const [k, v] of this.recorded) {
      const { source: _, ...rest } = current.get(k) ?? v;
      sources[k] = rest;
    }
    return {
      format: 'spillway-ingest-progress',
      version: 1,
      job: this.job,
      epoch: this.epoch,
      writeId: randomUUID(),
      asOfSequence: this.asOf,
      running,
      updatedAtMs: this.clock.now(),
      sources,
    };
  }

  /** Writes the checkpoint over the version last seen; another epoch there fences this run. */
  private async put(c: Checkpoint, signal?: AbortSignal): Promise<void> {
    const body = Buffer.from(JSON.stringify(c));
    try {
      const { version } = await this.log.store.put(this.key, body, {
        mode: this.version === undefined ? 'create' : { ifMatch: this.version },
        ...(signal ? { signal } : {}),
      });
      this.version = version;
    } catch (e) {
      if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
      const stored = await this.readCheckpoint(signal);
      if (stored && stored.value.writeId === c.writeId) {
        this.version = stored.version;
        return;
      }
      throw new FencedError(
        `ingest job "${this.job}": another run opened the job (its checkpoint has epoch ${stored?.value.epoch ?? 'none'}, this run ${c.epoch}); this run stops. Run one process per job`,
      );
    }
  }

  /** Moves the hold up to the checkpoint's sequence (re-creating it if it was deleted). */
  private async moveHold(signal?: AbortSignal): Promise<void> {
    if (this.holdDeleted) {
      await this.log.createCursor(this.hold, { sequence: this.asOf }, signal);
      this.holdDeleted = false;
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      const cur = await this.log.readCursor(this.hold, signal);
      if (!cur) {
        await this.log.createCursor(this.hold, { sequence: this.asOf }, signal);
        return;
      }
      if (cur.value.next.sequence >= this.asOf) return;
      const { next, commit } = await this.log.resolveStart({ sequence: this.asOf }, signal);
      try {
        await this.log.writeCursor(
          {
            ...cur.value,
            next,
            commit,
            updatedAtMs: this.clock.now(),
            holder: `ingest ${this.job}`,
          },
          cur.version,
          signal,
        );
        return;
      } catch (e) {
        if (!(e instanceof PreconditionFailedError) && !(e instanceof OutcomeUnknownError)) throw e;
      }
    }
  }

  private async readCheckpoint(
    signal?: AbortSignal,
  ): Promise<{ value: Checkpoint; version: string } | undefined> {
    let got;
    try {
      got = await this.log.store.get(this.key, signal ? { signal } : {});
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
    let v: unknown;
    try {
      v = JSON.parse(Buffer.from(got.body).toString());
    } catch (e) {
      throw new CorruptDataError(`${this.key}: not JSON (${(e as Error).message})`, this.key);
    }
    const c = v as Checkpoint;
    if (
      typeof c !== 'object' ||
      c === null ||
      c.format !== 'spillway-ingest-progress' ||
      c.version !== 1 ||
      c.job !== this.job ||
      !Number.isSafeInteger(c.epoch) ||
      !Number.isSafeInteger(c.asOfSequence) ||
      typeof c.sources !== 'object' ||
      c.sources === null ||
      Array.isArray(c.sources) ||
      (c.running !== undefined && typeof c.running !== 'boolean')
    ) {
      throw new CorruptDataError(
        `${this.key}: expected an ingest checkpoint (format "spillway-ingest-progress", version 1, job "${this.job}"); delete it and the subscription "${this.hold}" to start the job over`,
        this.key,
      );
    }
    for (const [source, p] of Object.entries(c.sources)) {
      const problem = checkRecordedSource(p);
      if (problem !== undefined) {
        throw new CorruptDataError(
          `${this.key}: the progress of source ${JSON.stringify(source)} is malformed (${problem}); delete it and the subscription "${this.hold}" to start the job over`,
          this.key,
        );
      }
    }
    return { value: c, version: got.version };
  }
}

/** What is wrong with a source's progress as a checkpoint holds it, if anything. */
function checkRecordedSource(p: unknown): string | undefined {
  if (typeof p !== 'object' || p === null) return 'not an object';
  const o = p as Record<string, unknown>;
  const offset = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
  if (!offset(o.ackedOffset)) return `ackedOffset ${JSON.stringify(o.ackedOffset)}`;
  if (typeof o.done !== 'boolean') return `done ${JSON.stringify(o.done)}`;
  if (o.path !== undefined && typeof o.path !== 'string') return 'path is no string';
  if (o.sizeBytes !== undefined && !offset(o.sizeBytes)) {
    return `sizeBytes ${JSON.stringify(o.sizeBytes)}`;
  }
  if (
    !Array.isArray(o.ackedBeyond) ||
    !o.ackedBeyond.every(
      (r: unknown) =>
        Array.isArray(r) && r.length === 2 && offset(r[0]) && offset(r[1]) && r[0] <= r[1],
    )
  ) {
    return `ackedBeyond ${JSON.stringify(o.ackedBeyond)}`;
  }
  return undefined;
}

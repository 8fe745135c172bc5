import { InvalidArgumentError } from '../errors.ts';
import { chunkEnd, describeChunk, type Chunk } from './chunk.ts';

/** What is known of one source's progress. */
export interface SourceProgress {
  /** The source's identity. */
  source: string;
  /** Its path, when known. */
  path?: string;
  /**
   * Bytes acknowledged from the source's start without a gap: everything
   * before this offset is durable, and a restart resumes here.
   */
  ackedOffset: number;
  /**
   * Ranges `[start, end)` acknowledged past a gap (a chunk that failed while
   * later ones became durable); a restart fills the gap and skips these.
   */
  ackedBeyond: [number, number][];
  /** Chunks pushed and not yet acknowledged. */
  inFlight: number;
  /** Whether the source's last chunk and everything before it are acknowledged. */
  done: boolean;
  /** The source's size, once its last chunk has been acknowledged. */
  sizeBytes?: number;
}

interface State {
  path?: string;
  /** Acknowledged ranges, sorted, merged. */
  ranges: [number, number][];
  inFlight: Map<number, Chunk>;
  /** Offsets of chunks acknowledged (for telling a second ack from a stray one). */
  size?: number;
  done: boolean;
}

/**
 * Per-source progress of a pusher: the chunks in flight, the ranges
 * acknowledged, and whether each source is done. Chunks are known by
 * source and offset.
 */
export class ProgressTracker {
  private readonly sources = new Map<string, State>();

  /**
   * Starts a source from what a previous run made durable: everything before
   * `ackedOffset`, the ranges in `ackedBeyond`, and `done`.
   */
  resume(
    p: Pick<
      SourceProgress,
      'source' | 'path' | 'ackedOffset' | 'ackedBeyond' | 'done' | 'sizeBytes'
    >,
  ): void {
    const s = this.state(p.source, p.path);
    if (p.ackedOffset > 0) addRange(s.ranges, [0, p.ackedOffset]);
    for (const r of p.ackedBeyond) addRange(s.ranges, [r[0], r[1]]);
    if (p.sizeBytes !== undefined) s.size = p.sizeBytes;
    s.done = p.done;
  }

  /**
   * Records a chunk as pushed.
   *
   * @throws {InvalidArgumentError} when its bytes overlap a chunk in flight
   * or bytes already acknowledged.
   */
  pushed(chunk: Chunk): void {
    const s = this.state(chunk.source, chunk.path);
    const end = chunkEnd(chunk);
    for (const c of s.inFlight.values()) {
      if (overlaps(chunk.offset, end, c.offset, chunkEnd(c)) || c.offset === chunk.offset) {
        throw new InvalidArgumentError(
          `push: ${describeChunk(chunk)} overlaps ${describeChunk(c)}, which is in flight`,
        );
      }
    }
    for (const [a, b] of s.ranges) {
      if (overlaps(chunk.offset, end, a, b)) {
        throw new InvalidArgumentError(
          `push: ${describeChunk(chunk)} overlaps bytes ${a}-${b}, already acknowledged`,
        );
      }
    }
    if (s.done && chunk.size > 0) {
      throw new InvalidArgumentError(`push: ${describeChunk(chunk)}: the source is already done`);
    }
    s.inFlight.set(chunk.offset, chunk);
  }

  /** Forgets a chunk in flight that failed: its bytes may be pushed again. */
  failed(chunk: Chunk): void {
    this.sources.get(chunk.source)?.inFlight.delete(chunk.offset);
  }

  /**
   * Records a chunk as acknowledged; returns whether its source is now done
   * (its last chunk and everything before it acknowledged).
   *
   * @throws {InvalidArgumentError} for a chunk acknowledged before, or never pushed.
   */
  acked(chunk: Chunk): boolean {
    const s = this.sources.get(chunk.source);
    const inFlight = s?.inFlight.get(chunk.offset);
    if (!s || !inFlight) {
      const end = chunkEnd(chunk);
      const covered = s?.ranges.some(([a, b]) => a <= chunk.offset && end <= b && a < b);
      throw new InvalidArgumentError(
        covered
          ? `ack: ${describeChunk(chunk)} was already acknowledged`
          : `ack: ${describeChunk(chunk)} was never pushed`,
      );
    }
    s.inFlight.delete(chunk.offset);
    addRange(s.ranges, [inFlight.offset, chunkEnd(inFlight)]);
    if (inFlight.last) s.size = chunkEnd(inFlight);
    const wasDone = s.done;
    s.done = s.size !== undefined && contiguousEnd(s.ranges) >= s.size && s.inFlight.size === 0;
    return s.done && !wasDone;
  }

  /** Whether every byte of a chunk's range is acknowledged (an empty chunk: its offset). */
  covers(chunk: Chunk): boolean {
    const end = chunkEnd(chunk);
    return (
      this.sources.get(chunk.source)?.ranges.some(([a, b]) => a <= chunk.offset && end <= b) ===
      true
    );
  }

  /** Whether a chunk is in flight. */
  isInFlight(chunk: Chunk): boolean {
    return this.sources.get(chunk.source)?.inFlight.has(chunk.offset) === true;
  }

  /** One source's progress, if it is known. */
  get(source: string): SourceProgress | undefined {
    const s = this.sources.get(source);
    return s ? snapshot(source, s) : undefined;
  }

  /** Every source's progress, in the order they were first seen. */
  all(): SourceProgress[] {
    return [...this.sources].map(([source, s]) => snapshot(source, s));
  }

  private state(source: string, path: string | undefined): State {
    let s = this.sources.get(source);
    if (!s) {
      s = { ranges: [], inFlight: new Map(), done: false };
      this.sources.set(source, s);
    }
    if (path !== undefined) s.path = path;
    return s;
  }
}

function snapshot(source: string, s: State): SourceProgress {
  const acked = contiguousEnd(s.ranges);
  return {
    source,
    ...(s.path !== undefined ? { path: s.path } : {}),
    ackedOffset: acked,
    ackedBeyond: s.ranges.filter(([a]) => a > acked).map(([a, b]) => [a, b]),
    inFlight: s.inFlight.size,
    done: s.done,
    ...(s.size !== undefined ? { sizeBytes: s.size } : {}),
  };
}

/** End of the acknowledged run that starts at 0. */
function contiguousEnd(ranges: [number, number][]): number {
  const first = ranges[0];
  return first && first[0] === 0 ? first[1] : 0;
}

function overlaps(a0: number, a1: number, b0: number, b1: number): boolean {
  return a0 < b1 && b0 < a1;
}

/** Adds `[a, b)` to sorted, merged ranges (touching ranges merge; empty ones are kept as points). */
export function addRange(ranges: [number, number][], r: [number, number]): void {
  let [a, b] = r;
  const out: [number, number][] = [];
  let placed = false;
  for (const [x, y] of ranges) {
    if (y < a) out.push([x, y]);
    else if (b < x) {
      if (!placed) {
        out.push([a, b]);
        placed = true;
      }
      out.push([x, y]);
    } else {
      a = Math.min(a, x);
      b = Math.max(b, y);
    }
  }
  if (!placed) out.push([a, b]);
  ranges.splice(0, ranges.length, ...out);
}

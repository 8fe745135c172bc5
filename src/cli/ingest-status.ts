import { formatBytes, formatDuration } from './common.ts';
import { LiveStatus, RateMeter } from './progress.ts';

/** Files shown at once; older finished ones scroll away. */
const SHOWN = 8;
const BAR_WIDTH = 24;

interface FileLine {
  path: string;
  /** The file's size, when known (plain files: offsets are bytes of the file). */
  totalBytes: number | undefined;
  /** Offset acknowledged (durable) so far. */
  ackedBytes: number;
  /** Where this run started in the file. */
  startBytes: number;
  entries: number;
  state: 'running' | 'done' | 'failed';
  rate: RateMeter;
  startedAt: number;
}

/**
 * The progress display of `spillway ingest` on a terminal: one bar per
 * file (bytes durable, rate, ETA) and a total, redrawn in place; nothing
 * when stderr is not a terminal.
 */
export class IngestStatus {
  private readonly files = new Map<string, FileLine>();
  private readonly status: LiveStatus;

  constructor() {
    this.status = new LiveStatus(() => this.render());
  }

  /** A file starts (or resumes at `startBytes`). */
  start(source: string, path: string, totalBytes: number | undefined, startBytes: number): void {
    this.files.set(source, {
      path,
      totalBytes,
      ackedBytes: startBytes,
      startBytes,
      entries: 0,
      state: 'running',
      rate: new RateMeter(),
      startedAt: performance.now(),
    });
  }

  /** Bytes of a file durable up to `offset`. */
  acked(source: string, offset: number, entries: number): void {
    const f = this.files.get(source);
    if (!f) return;
    f.ackedBytes = Math.max(f.ackedBytes, offset);
    f.entries += entries;
  }

  /** A file is complete. */
  finished(source: string): void {
    const f = this.files.get(source);
    if (f) f.state = 'done';
  }

  /** A file stopped with an error. */
  failed(path: string, _message: string): void {
    for (const f of this.files.values()) if (f.path === path) f.state = 'failed';
  }

  /** Stops redrawing, leaving the last frame. */
  stop(): void {
    this.status.stop();
  }

  private render(): string {
    const all = [...this.files.values()];
    const running = all.filter((f) => f.state === 'running');
    const shown = [
      ...all.filter((f) => f.state !== 'running').slice(-Math.max(0, SHOWN - running.length)),
      ...running,
    ].slice(-SHOWN);
    const lines = shown.map((f) => this.line(f));
    const done = all.filter((f) => f.state === 'done').length;
    const bytes = all.reduce((n, f) => n + f.ackedBytes - f.startBytes, 0);
    lines.push(`${done}/${all.length} files done, ${formatBytes(bytes)} durable`);
    return lines.join('\n');
  }

  private line(f: FileLine): string {
    const rate = f.state === 'running' ? f.rate.sample(f.ackedBytes) : 0;
    const name = f.path.length > 40 ? `…${f.path.slice(-39)}` : f.path.padEnd(40);
    if (f.state === 'failed') return `${name} failed`;
    let bar = '';
    let eta = '';
    if (f.totalBytes !== undefined && f.totalBytes > 0) {
      const part = Math.min(1, f.ackedBytes / f.totalBytes);
      const filled = Math.round(part * BAR_WIDTH);
      bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${String(Math.floor(part * 100)).padStart(3)}% `;
      if (f.state === 'running' && rate > 0) {
        eta = ` ETA ${formatDuration(((f.totalBytes - f.ackedBytes) / rate) * 1000)}`;
      }
    }
    const size =
      f.totalBytes !== undefined
        ? `${formatBytes(f.ackedBytes)}/${formatBytes(f.totalBytes)}`
        : formatBytes(f.ackedBytes);
    const tail = f.state === 'done' ? 'done' : `${formatBytes(rate)}/s${eta}`;
    return `${name} ${bar}${size} ${tail}`;
  }
}

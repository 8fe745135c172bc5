import { createLogUpdate } from 'log-update';

/**
 * A live status line (or block) on a terminal, redrawn in place a few times a
 * second from a render function; nothing at all when the stream is not a
 * terminal, unless `plainEveryMs` asks for a plain line now and then.
 */
export class LiveStatus {
  private readonly stream: NodeJS.WriteStream;
  private readonly live: ReturnType<typeof createLogUpdate> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastPlain = 0;

  constructor(
    private readonly render: () => string,
    options: { stream?: NodeJS.WriteStream; intervalMs?: number; plainEveryMs?: number } = {},
  ) {
    this.stream = options.stream ?? process.stderr;
    const tty = this.stream.isTTY === true && process.env.TERM !== 'dumb';
    this.live = tty ? createLogUpdate(this.stream, { showCursor: true }) : undefined;
    const every = options.intervalMs ?? 200;
    const plainEveryMs = options.plainEveryMs;
    if (this.live || plainEveryMs !== undefined) {
      this.timer = setInterval(() => {
        if (this.live) this.live(this.render());
        else if (plainEveryMs !== undefined && performance.now() - this.lastPlain >= plainEveryMs) {
          this.lastPlain = performance.now();
          this.stream.write(`${this.render()}\n`);
        }
      }, every);
      this.timer.unref();
      this.lastPlain = performance.now();
    }
  }

  /** Whether the status is drawn live (the stream is a terminal). */
  get isLive(): boolean {
    return this.live !== undefined;
  }

  /** Stops redrawing; on a terminal, leaves the last frame (or `final`) in place. */
  stop(final?: string): void {
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.live) {
      this.live(final ?? this.render());
      this.live.done();
    }
  }
}

/** Events per second over a sliding window, for live displays. */
export class RateMeter {
  private readonly samples: { t: number; total: number }[] = [];
  constructor(private readonly windowMs = 2000) {}

  /** Records the running total now and returns the rate over the window. */
  sample(total: number, now = performance.now()): number {
    this.samples.push({ t: now, total });
    while (this.samples.length > 2 && now - (this.samples[0] as { t: number }).t > this.windowMs) {
      this.samples.shift();
    }
    const first = this.samples[0] as { t: number; total: number };
    const dt = now - first.t;
    return dt > 0 ? ((total - first.total) * 1000) / dt : 0;
  }
}

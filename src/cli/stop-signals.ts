import { constants } from 'node:os';

/**
 * The one rule for stopping a long-running command (`produce`, `consume
 * --follow`, `demo`, ...) with Ctrl-C (SIGINT) or SIGTERM:
 *
 * - the first signal asks for a graceful stop: the command stops taking new
 *   work (reading input, fetching batches), finishes what it started (makes
 *   what it read durable, acknowledges what it wrote), prints its summary
 *   and exits 0, or 1 if finishing failed;
 * - a second signal exits at once with 128 + the signal's number (130 for
 *   SIGINT, 143 for SIGTERM); what was not yet durable or acknowledged is
 *   left as it is (never acknowledged, so never lost from the queue).
 */
export class StopSignals {
  private readonly controller = new AbortController();
  private readonly onSignal = (name: NodeJS.Signals): void => {
    if (this.received !== undefined) process.exit(128 + (constants.signals[name] ?? 0));
    this.received = name;
    this.notice?.(name);
    if (!this.controller.signal.aborted) this.controller.abort(new Error(`stopped by ${name}`));
  };
  /** The signal that asked for the stop, once one did. */
  received: NodeJS.Signals | undefined;

  /**
   * @param notice called on the first signal, e.g. to tell the operator what
   * is being finished and that a second Ctrl-C abandons it
   */
  constructor(private readonly notice?: (signal: NodeJS.Signals) => void) {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  /** Aborts on the first signal. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Asks for the stop as a signal would (a deadline, say), without counting as one. */
  stop(): void {
    if (!this.controller.signal.aborted) this.controller.abort(new Error('stopped'));
  }

  /** Stops listening; idempotent. */
  dispose(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}

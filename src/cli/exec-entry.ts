/**
 * `spillway consume --exec CMD`: runs a shell command for one entry and says
 * what its exit status means for that entry.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import type { ProcessEntry } from '../consumer/consumer.ts';

/** The exit status asking for the entry again (`EX_TEMPFAIL` of sysexits.h). */
export const EXIT_RETRY = 75;

/** How one run of the command ended. */
export type CommandEnd =
  | { kind: 'exit'; status: number }
  | { kind: 'signal'; signal: NodeJS.Signals }
  /** `/bin/sh` itself could not be started (no such file, no processes left). */
  | { kind: 'spawn-error'; error: Error };

/**
 * What an end means for the entry:
 * - `commit`: status 0;
 * - `retry`: status 75 (`EX_TEMPFAIL`), the entry again after the retry wait;
 * - `skip`: any other status the command chose, the entry passed over;
 * - `halt`: the command did not really run or did not finish: the shell could
 *   not find or execute it (126, 127), it was killed by a signal (or the shell
 *   reports it so, with 128 + the signal's number: 129 to 192), or the shell
 *   could not be started. Consuming stops there, the entry not committed, so a
 *   typo or a crashing command never skips the queue.
 */
export type CommandVerdict =
  | { kind: 'commit' }
  | { kind: 'retry'; why: string }
  | { kind: 'skip'; why: string }
  | { kind: 'halt'; why: string };

/** Reads an end as {@link CommandVerdict} says. */
export function verdictOf(end: CommandEnd): CommandVerdict {
  if (end.kind === 'spawn-error') {
    return { kind: 'halt', why: `/bin/sh could not be started: ${end.error.message}` };
  }
  if (end.kind === 'signal') {
    return { kind: 'halt', why: `the command was killed by ${end.signal}` };
  }
  const { status } = end;
  if (status === 0) return { kind: 'commit' };
  if (status === EXIT_RETRY) {
    return { kind: 'retry', why: `the command exited with status ${EXIT_RETRY} (EX_TEMPFAIL)` };
  }
  if (status === 126) {
    return { kind: 'halt', why: 'the command cannot run: exit status 126 (found, not executable)' };
  }
  if (status === 127) {
    return { kind: 'halt', why: 'the command cannot run: exit status 127 (not found)' };
  }
  if (status > 128 && status <= 128 + 64) {
    const n = status - 128;
    const name = Object.entries(constants.signals).find(([, v]) => v === n)?.[0];
    return {
      kind: 'halt',
      why: `the command exited with status ${status}, which is how a shell reports a command killed by signal ${n}${name ? ` (${name})` : ''}`,
    };
  }
  return { kind: 'skip', why: `the command exited with status ${status}` };
}

/**
 * Runs one shell command per entry: `/bin/sh -c CMD` with the entry's bytes
 * on stdin (then end of file), its stdout and stderr those of `spillway`,
 * and the entry's place in the environment: `SPILLWAY_SEQUENCE`,
 * `SPILLWAY_INDEX`, `SPILLWAY_ATTEMPT` (from 1) and
 * `SPILLWAY_INGESTION_TIME_MS`.
 *
 * The command runs in its own process group, so a Ctrl-C at the terminal
 * reaches `spillway` only, which lets the command finish (see
 * `StopSignals`); if `spillway` exits while a command runs (a second
 * Ctrl-C), the command's group gets SIGTERM.
 */
export class EntryCommand {
  private running: ChildProcess | undefined;
  private readonly onExit = (): void => this.terminate();

  constructor(readonly command: string) {}

  /** Runs the command for `entry` and resolves with how it ended; never rejects. */
  run(entry: ProcessEntry): Promise<CommandEnd> {
    return new Promise<CommandEnd>((resolve) => {
      let child: ChildProcess;
      const done = (end: CommandEnd): void => {
        if (this.running === child) {
          this.running = undefined;
          process.off('exit', this.onExit);
        }
        resolve(end);
      };
      try {
        child = spawn('/bin/sh', ['-c', this.command], {
          stdio: ['pipe', 'inherit', 'inherit'],
          detached: true,
          env: {
            ...process.env,
            SPILLWAY_SEQUENCE: String(entry.sequence),
            SPILLWAY_INDEX: String(entry.index),
            SPILLWAY_ATTEMPT: String(entry.attempt),
            SPILLWAY_INGESTION_TIME_MS: String(entry.ingestionTimeMs),
          },
        });
      } catch (e) {
        resolve({ kind: 'spawn-error', error: e as Error });
        return;
      }
      this.running = child;
      process.on('exit', this.onExit);
      let settled = false;
      child.once('error', (error) => {
        if (settled) return;
        settled = true;
        done({ kind: 'spawn-error', error });
      });
      child.once('exit', (status, signal) => {
        if (settled) return;
        settled = true;
        done(signal ? { kind: 'signal', signal } : { kind: 'exit', status: status ?? 0 });
      });
      // A command that does not read its input closes the pipe: that is its choice, and
      // its exit status still decides.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(entry.data);
    });
  }

  /** Sends SIGTERM to the process group of the command running, if any. */
  terminate(): void {
    const pid = this.running?.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, 'SIGTERM');
    } catch {
      // It is gone already.
    }
  }
}

/**
 * Where Spillway tells an operator what is worth knowing but is no caller's
 * error: retried requests, lost races, collections. The shape is pino's (and
 * bunyan's): a method per level taking an optional object of fields and a
 * message, so a pino logger (or a child of one) can be passed as is.
 *
 * Levels used: `debug` for routine events (a retry, a conflict, a
 * collection), `warn` for something an operator should look at (a call that
 * needed many attempts, a collection that failed in the background), `error`
 * for background failures that stop a role.
 */

/** Fields of one log line; `error` holds an error's message. */
export type LogFields = Readonly<Record<string, unknown>>;

/** A pino-style logger. Implementations must not throw. */
export interface Logger {
  debug(fields: LogFields, message: string): void;
  warn(fields: LogFields, message: string): void;
  error(fields: LogFields, message: string): void;
}

/** The default: logs nothing. */
export const silentLogger: Logger = Object.freeze({
  debug: () => undefined,
  warn: () => undefined,
  error: () => undefined,
});

/** A logger that keeps every line in memory, for tests. */
export class MemoryLogger implements Logger {
  readonly lines: { level: 'debug' | 'warn' | 'error'; fields: LogFields; message: string }[] = [];
  debug(fields: LogFields, message: string): void {
    this.lines.push({ level: 'debug', fields, message });
  }
  warn(fields: LogFields, message: string): void {
    this.lines.push({ level: 'warn', fields, message });
  }
  error(fields: LogFields, message: string): void {
    this.lines.push({ level: 'error', fields, message });
  }
}

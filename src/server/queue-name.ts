/**
 * How a queue name in a URL maps to a queue in the store. A name is one
 * path segment, so it can never reach another queue's objects or the
 * store's own files; the queue lives under the prefix of that name, laid out
 * as the library's defaults lay out `ingest`.
 */
import { HttpError } from './http-error.ts';

/** Queue names: 1-100 letters, digits, `.`, `_`, `-`, starting with a letter or digit. */
export const QUEUE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/**
 * Whether `name` is a valid queue name: it matches {@link QUEUE_NAME} and
 * holds no `..` (no slash, no dot segment, nothing to decode).
 */
export function isQueueName(name: string): boolean {
  return QUEUE_NAME.test(name) && !name.includes('..');
}

/**
 * The queue a name maps to: data and log under `{name}/` (`dataPathPrefix`
 * = name), a v1 manifest at `{name}/manifest`; the name `ingest` is the
 * queue the library and the command line use by default.
 *
 * @throws {HttpError} 400 `INVALID_QUEUE_NAME` for a name that is not valid.
 */
export function queuePaths(name: string): { dataPathPrefix: string; manifestPath: string } {
  checkQueueName(name);
  return { dataPathPrefix: name, manifestPath: `${name}/manifest` };
}

/** @throws {HttpError} 400 `INVALID_QUEUE_NAME` unless {@link isQueueName}. */
export function checkQueueName(name: string): void {
  if (!isQueueName(name)) {
    throw new HttpError(
      400,
      'INVALID_QUEUE_NAME',
      `a queue name is 1-100 letters, digits, ".", "_" or "-", starting with a letter or digit, without "..", got ${JSON.stringify(name.slice(0, 120))}`,
    );
  }
}

/**
 * The queue name of a key that marks a queue in the store (`{name}/queue`,
 * a log descriptor, or `{name}/manifest`, a v1 manifest), else undefined.
 */
export function queueNameOfKey(key: string): string | undefined {
  const slash = key.indexOf('/');
  if (slash < 0) return undefined;
  const rest = key.slice(slash + 1);
  if (rest !== 'queue' && rest !== 'manifest') return undefined;
  const name = key.slice(0, slash);
  return isQueueName(name) ? name : undefined;
}

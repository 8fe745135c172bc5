import { InvalidArgumentError } from '../errors.ts';

/** Longest key, in UTF-8 bytes, that every store accepts. */
export const MAX_KEY_BYTES = 1024;

/**
 * Checks what every store requires of a key: a non-empty string of at most
 * {@link MAX_KEY_BYTES} UTF-8 bytes with no NUL character.
 *
 * @throws {InvalidArgumentError} naming the key and the rule it breaks.
 */
export function validateKey(key: unknown, store: string): asserts key is string {
  if (typeof key !== 'string' || key.length === 0) {
    throw new InvalidArgumentError(
      `${store}: expected a non-empty string key, got ${describeValue(key)}`,
    );
  }
  if (key.includes('\0')) {
    throw new InvalidArgumentError(`${store}: key ${JSON.stringify(key)} contains a NUL character`);
  }
  const bytes = Buffer.byteLength(key, 'utf8');
  if (bytes > MAX_KEY_BYTES) {
    throw new InvalidArgumentError(
      `${store}: key is ${bytes} bytes of UTF-8, at most ${MAX_KEY_BYTES} are allowed`,
    );
  }
}

/** Checks a list prefix: a string (possibly empty) with no NUL character. */
export function validatePrefix(prefix: unknown, store: string): asserts prefix is string {
  if (typeof prefix !== 'string' || prefix.includes('\0')) {
    throw new InvalidArgumentError(
      `${store}: expected a string prefix without NUL, got ${describeValue(prefix)}`,
    );
  }
}

/** Compares two keys by the byte order of their UTF-8 encodings, as object stores list them. */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** A short description of a value for error messages. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string')
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${typeof value} ${String(value)}`;
  }
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value instanceof Uint8Array) return `${value.byteLength} bytes`;
  return typeof value;
}

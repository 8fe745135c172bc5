/**
 * The one options resolver: every role (producer, consumer, collector, queue)
 * and the command line resolve their options here, against one frozen
 * defaults object per role, with the same checks and the same messages.
 */
import { InvalidArgumentError } from './errors.ts';
import { describeValue } from './store/keys.ts';

/** How one option is checked. */
export type OptionSpec =
  /** A safe integer in [min, max]. */
  | { kind: 'int'; min: number; max?: number }
  /** One of the values. */
  | { kind: 'enum'; values: readonly string[] }
  /** A string matching `pattern`, described as `expected` in messages. */
  | { kind: 'string'; pattern?: RegExp; expected?: string }
  /** A boolean. */
  | { kind: 'boolean' }
  /** Checked by the role itself (a store, a clock, a callback). */
  | { kind: 'any' };

/** Specs by option name. */
export type OptionSpecs<T> = { readonly [K in keyof T]-?: OptionSpec };

/**
 * Merges `given` over `defaults` (a field given as `undefined` keeps its
 * default), checks every field against its spec, and refuses fields no spec
 * names (a typo such as `flushIntervalMS` would otherwise be ignored
 * silently).
 *
 * @param role names the caller in messages, e.g. `Producer`
 * @throws {InvalidArgumentError} naming the role, the option, what was
 * expected and what arrived.
 */
export function resolveOptions<T extends object>(
  role: string,
  specs: OptionSpecs<T>,
  defaults: Partial<T>,
  given: Partial<T>,
): T {
  if (given === null || typeof given !== 'object') {
    throw new InvalidArgumentError(
      `${role}: expected an options object, got ${describeValue(given)}`,
    );
  }
  const out: Record<string, unknown> = { ...defaults };
  for (const [name, value] of Object.entries(given)) {
    if (!Object.hasOwn(specs, name)) {
      throw new InvalidArgumentError(
        `${role}: unknown option "${name}"; expected one of ${Object.keys(specs).sort().join(', ')}`,
      );
    }
    if (value !== undefined) out[name] = value;
  }
  for (const [name, spec] of Object.entries<OptionSpec>(specs)) {
    const value = out[name];
    if (value === undefined) continue;
    checkOption(role, name, spec, value);
  }
  return out as T;
}

/** Checks one value against its spec. */
export function checkOption(role: string, name: string, spec: OptionSpec, value: unknown): void {
  const fail = (expected: string): never => {
    throw new InvalidArgumentError(
      `${role}: ${name} must be ${expected}, got ${describeValue(value)}`,
    );
  };
  switch (spec.kind) {
    case 'int':
      if (
        typeof value !== 'number' ||
        !Number.isSafeInteger(value) ||
        value < spec.min ||
        (spec.max !== undefined && value > spec.max)
      ) {
        fail(
          spec.max === undefined
            ? `an integer >= ${spec.min}`
            : `an integer from ${spec.min} to ${spec.max}`,
        );
      }
      return;
    case 'enum':
      if (typeof value !== 'string' || !spec.values.includes(value)) {
        fail(`one of ${spec.values.map((v) => JSON.stringify(v)).join(', ')}`);
      }
      return;
    case 'string':
      if (typeof value !== 'string' || (spec.pattern && !spec.pattern.test(value))) {
        fail(spec.expected ?? 'a string');
      }
      return;
    case 'boolean':
      if (typeof value !== 'boolean') fail('true or false');
      return;
    case 'any':
      return;
  }
}

/**
 * Refuses fields of a call's options object that the call does not know (a
 * typo such as `dryrun` or `timeoutMS` would otherwise be ignored, and a dry
 * run become a real one).
 *
 * @throws {InvalidArgumentError} naming the call and the field.
 */
export function checkCallOptions(call: string, options: unknown, known: readonly string[]): void {
  if (options === undefined) return;
  if (options === null || typeof options !== 'object') {
    throw new InvalidArgumentError(
      `${call}(): expected an options object, got ${describeValue(options)}`,
    );
  }
  for (const name of Object.keys(options)) {
    if (!known.includes(name)) {
      throw new InvalidArgumentError(
        `${call}(): unknown option "${name}"; expected ${known.length > 0 ? `one of ${known.join(', ')}` : 'none'}`,
      );
    }
  }
}

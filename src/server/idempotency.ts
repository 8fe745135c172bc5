/**
 * `Idempotency-Key`: a retried POST answers with the first one's result
 * instead of appending again. Keys are remembered per queue, in this
 * process's memory, for a window of time and up to a count (the least
 * recently used key goes first).
 */
import { createHash } from 'node:crypto';
import type { Clock } from '../clock.ts';
import type { DurableResult } from '../producer/producer.ts';
import { HttpError } from './http-error.ts';

/** An `Idempotency-Key`: 1-200 printable ASCII characters. */
export const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,200}$/;

/** What the first request with a key did. */
export interface IdempotentAppend {
  /** SHA-256 of the first request's format and body (hex): a retry must send the same. */
  readonly bodyHash: string;
  /** Entries the request held. */
  readonly entries: number;
  /** Settles once the entries were handed to the producer (or refused). */
  readonly accepted: Promise<void>;
  /** Settles once they are durable (or failed). */
  readonly durable: Promise<DurableResult>;
}

interface Record {
  append: IdempotentAppend;
  expiresAtMs: number;
}

/** Options of {@link IdempotencyKeys}. */
export interface IdempotencyKeysOptions {
  /** How long a key is remembered after its first request, in ms. @default 600000 (10 minutes) */
  windowMs?: number;
  /** Most keys remembered (all queues together); the least recently used goes first. @default 100000 */
  maxKeys?: number;
  /** Time source. */
  clock: Clock;
}

/** Defaults of {@link IdempotencyKeysOptions}. */
export const IDEMPOTENCY_DEFAULTS = Object.freeze({ windowMs: 600_000, maxKeys: 100_000 });

/**
 * The keys seen, with what their first request did. A retry that arrives
 * while the first is still in flight gets the same promises, so it waits
 * for the same outcome. A key whose first request failed without appending
 * anything (refused, busy, a failure that certainly did not land) is
 * forgotten, so a retry appends; a failure that may have landed (an
 * unknown outcome) is kept and answered again, never appended twice.
 */
export class IdempotencyKeys {
  private readonly records = new Map<string, Record>();
  private readonly windowMs: number;
  private readonly maxKeys: number;
  private readonly clock: Clock;

  constructor(options: IdempotencyKeysOptions) {
    this.windowMs = options.windowMs ?? IDEMPOTENCY_DEFAULTS.windowMs;
    this.maxKeys = options.maxKeys ?? IDEMPOTENCY_DEFAULTS.maxKeys;
    this.clock = options.clock;
  }

  /**
   * The append remembered for `key` on `queue`, or, when there is none,
   * the one `start()` begins (remembered from now on). `format` is how the
   * body carries entries (its media type's format).
   *
   * @returns `replayed` true when the key was seen before.
   * @throws {HttpError} 422 `IDEMPOTENCY_KEY_REUSED` when the key was seen with another body or format.
   */
  run(
    queue: string,
    key: string,
    format: string,
    body: Uint8Array,
    start: () => Omit<IdempotentAppend, 'bodyHash'>,
  ): { append: IdempotentAppend; replayed: boolean } {
    const id = `${queue}\n${key}`;
    // The format too: the same bytes as NDJSON and as one octet-stream entry are other entries.
    const bodyHash = createHash('sha256').update(`${format}\n`).update(body).digest('hex');
    const now = this.clock.now();
    const found = this.records.get(id);
    if (found && found.expiresAtMs > now) {
      if (found.append.bodyHash !== bodyHash) {
        throw new HttpError(
          422,
          'IDEMPOTENCY_KEY_REUSED',
          `Idempotency-Key ${JSON.stringify(key)} was used for another body on queue "${queue}" in the last ${this.windowMs} ms; use a new key for new entries`,
        );
      }
      // Most recently used goes last.
      this.records.delete(id);
      this.records.set(id, found);
      return { append: found.append, replayed: true };
    }
    if (found) this.records.delete(id);
    const append: IdempotentAppend = { bodyHash, ...start() };
    const record: Record = { append, expiresAtMs: now + this.windowMs };
    this.records.set(id, record);
    const forget = (): void => {
      if (this.records.get(id) === record) this.records.delete(id);
    };
    append.accepted.catch(forget);
    append.durable.catch((e: unknown) => {
      if ((e as { code?: unknown } | undefined)?.code !== 'OUTCOME_UNKNOWN') forget();
    });
    this.evict(now);
    return { append, replayed: false };
  }

  /** Keys remembered now. */
  get size(): number {
    return this.records.size;
  }

  /** Drops expired keys from the oldest end, then the least recently used beyond `maxKeys`. */
  private evict(now: number): void {
    for (const [id, r] of this.records) {
      if (this.records.size <= this.maxKeys && r.expiresAtMs > now) break;
      this.records.delete(id);
    }
  }
}

/**
 * `POST /v1/queues/{queue}/entries`: entries in, answered once durable
 * (`201 { sequence, entries }`), or once accepted with `?wait=false`
 * (`202`). One `produce()` call per request, so a request's entries land
 * together, in order, in one batch.
 */
import type { Context } from 'hono';
import { ClosedError, InvalidArgumentError } from '../errors.ts';
import type { ProduceHandle, Producer } from '../producer/producer.ts';
import type { AppContext } from './app-context.ts';
import { HttpError } from './http-error.ts';
import { IDEMPOTENCY_KEY, type IdempotentAppend } from './idempotency.ts';
import { checkQueueName } from './queue-name.ts';
import { entryFormat, readBody, splitEntries } from './request-body.ts';

/** What a durable append answers. */
export interface AppendAnswer {
  /** The sequence of the batch holding the request's entries. */
  sequence: number;
  /** How many entries the request held. */
  entries: number;
}

/** The handler of `POST /v1/queues/{queue}/entries`. */
export function postEntries(ctx: AppContext): (c: Context) => Promise<Response> {
  return async (c) => {
    const name = c.req.param('queue') as string;
    checkQueueName(name);
    const wait = booleanParam(c.req.query('wait'), 'wait', true);
    const key = c.req.header('idempotency-key');
    if (key !== undefined && !IDEMPOTENCY_KEY.test(key)) {
      throw new HttpError(
        400,
        'BAD_REQUEST',
        'Idempotency-Key must be 1-200 printable ASCII characters without spaces',
      );
    }
    const format = entryFormat(c.req.header('content-type') ?? null);
    return ctx.track(
      (async () => {
        const body = await readBody(c.req.raw, ctx.settings.maxBodyBytes, ctx.closing);
        const entries = splitEntries(body, format, ctx.settings.maxEntriesPerRequest);
        // Not the request's signal: the producer is shared, and a client that goes
        // away while its queue is created must not fail the others waiting for it.
        const producer = await ctx.queues.producer(name, ctx.closing).catch((e: unknown) => {
          if (ctx.closing.aborted) {
            throw new HttpError(
              503,
              'SHUTTING_DOWN',
              'the server is closing; nothing was accepted',
              {
                headers: { 'Retry-After': '1' },
              },
            );
          }
          throw e;
        });
        const start = (): Omit<IdempotentAppend, 'bodyHash'> => {
          const accepted = admit(producer, entries, ctx);
          const durable = accepted.then((h) => h.durable);
          accepted.then(
            () => {
              let bytes = 0;
              for (const e of entries) bytes += e.byteLength;
              ctx.metrics.increment('http.entries_accepted', entries.length, { queue: name });
              ctx.metrics.increment('http.bytes_accepted', bytes, { queue: name });
            },
            () => undefined,
          );
          durable.then(
            () => ctx.queues.appended(name),
            (e: unknown) => {
              // Accepted and then lost (a store failure): the answer says so if it waits.
              if (!wait) {
                ctx.logger.warn(
                  { queue: name, entries: entries.length, error: String(e) },
                  'http: entries accepted with wait=false did not become durable',
                );
              }
            },
          );
          return { entries: entries.length, accepted: accepted.then(() => undefined), durable };
        };
        const { append, replayed } =
          key === undefined
            ? { append: { bodyHash: '', ...start() }, replayed: false }
            : ctx.idempotency.run(name, key, format, body, start);
        const headers: Record<string, string> = replayed ? { 'Idempotent-Replayed': 'true' } : {};
        await append.accepted;
        if (!wait) return c.json({ accepted: true, entries: append.entries }, 202, headers);
        const { sequence } = await append.durable;
        const answer: AppendAnswer = { sequence, entries: append.entries };
        return c.json(answer, replayed ? 200 : 201, headers);
      })(),
    );
  };
}

/**
 * Hands the entries to the producer, waiting for buffer room at most
 * `admissionWaitMs`: memory stays bounded by the producer's buffer, and a
 * client that finds it full is told to come back rather than held.
 *
 * @throws {HttpError} 503 `BUSY` with `Retry-After` when there was no room
 * in time; 413 for entries that can never fit; 503 `SHUTTING_DOWN` once
 * the server is closing.
 */
async function admit(
  producer: Producer,
  entries: Uint8Array[],
  ctx: AppContext,
): Promise<ProduceHandle> {
  const busy = new HttpError(
    503,
    'BUSY',
    `the queue's producer buffer is full (the store is slower than the writes); retry after a moment`,
    { headers: { 'Retry-After': '1' } },
  );
  const room = new AbortController();
  // A request waits on it: it keeps the process alive, as the request does.
  const timer = ctx.clock.setTimeout(() => room.abort(busy), ctx.settings.admissionWaitMs, {
    ref: true,
  });
  try {
    return await producer.produce(entries, { signal: room.signal });
  } catch (e) {
    if (room.signal.aborted && e === busy) throw busy;
    if (e instanceof ClosedError) {
      throw new HttpError(503, 'SHUTTING_DOWN', 'the server is closing; nothing was accepted', {
        headers: { 'Retry-After': '1' },
      });
    }
    if (e instanceof InvalidArgumentError) {
      throw new HttpError(
        413,
        'PAYLOAD_TOO_LARGE',
        `these entries can never fit the producer's buffer or one batch: ${e.message}`,
      );
    }
    throw e;
  } finally {
    ctx.clock.clearTimeout(timer);
  }
}

/** A boolean query parameter: `true`, `false`, `1`, `0`, or absent (`fallback`). */
export function booleanParam(value: string | undefined, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw new HttpError(
    400,
    'BAD_REQUEST',
    `?${name}= takes true or false, got ${JSON.stringify(value)}`,
  );
}

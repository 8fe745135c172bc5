/**
 * The subscription routes of a log queue: read entries (a long poll),
 * acknowledge a position, tail as server-sent events, list, create and
 * delete. Reads take no lease (see `subscription-position.ts`).
 */
import type { Context, Hono } from 'hono';
import { parseStartAt } from '../cli/common.ts';
import { comparePositions, type Position } from '../format/log-objects.ts';
import { commitHolding } from '../queue/log-inspect.ts';
import { isSubscriptionName, type LogQueue, type StartAt } from '../queue/log-queue.ts';
import type { AppContext } from './app-context.ts';
import { eventStream, type ServerSentEvent } from './event-stream.ts';
import { HttpError } from './http-error.ts';
import { checkQueueName } from './queue-name.ts';
import { readBody } from './request-body.ts';
import {
  acknowledge,
  readEntries,
  type PositionedEntry,
  type ReadPoint,
  type ReadResult,
  type SlotVoiding,
} from './subscription-position.ts';
import { SlotWaits } from '../queue/log-slots.ts';

/** Longest JSON body the subscription routes read, in bytes. */
const SMALL_BODY_BYTES = 65_536;

/** Entries per event-stream read. */
const STREAM_READ_ENTRIES = 100;

/**
 * One entry as the API writes it (a line of NDJSON, or an event's data):
 * `{ "position": { "sequence", "index" }, "ingestionTimeMs", "data" }`,
 * `data` being the entry itself when it is UTF-8 holding one JSON value,
 * else its bytes in base64 with `"encoding": "base64"`.
 */
export function entryJson(e: PositionedEntry): string {
  const head = `{"position":{"sequence":${e.position.sequence},"index":${e.position.index}},"ingestionTimeMs":${e.ingestionTimeMs},`;
  const text = jsonText(e.data);
  if (text !== undefined) return `${head}"data":${text}}`;
  return `${head}"data":"${Buffer.from(e.data).toString('base64')}","encoding":"base64"}`;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The entry as JSON text to embed as it is, or undefined when it is not
 * one JSON value in UTF-8. Line breaks outside strings are JSON whitespace
 * (inside strings JSON does not allow them), so they become spaces and the
 * entry stays on one line; nothing else changes (numbers keep their digits).
 */
function jsonText(bytes: Uint8Array): string | undefined {
  let text: string;
  try {
    text = utf8.decode(bytes);
    JSON.parse(text);
  } catch {
    return undefined;
  }
  return text.replace(/[\r\n]/g, ' ');
}

/** Registers the subscription routes on `app`. */
export function subscriptionRoutes(app: Hono, ctx: AppContext): void {
  const base = '/v1/queues/:queue/subscriptions';
  // Readers void a reservation's slot they waited for too long (docs/log-layout.md §7.2,
  // "Reservations"), timed per queue on the server's clock; one entry per queue served.
  const waitsByQueue = new Map<string, SlotWaits>();
  const voiding = (name: string): SlotVoiding => {
    let waits = waitsByQueue.get(name);
    if (!waits) {
      waits = new SlotWaits(() => monotonic(ctx));
      waitsByQueue.set(name, waits);
    }
    return { waits, voidAs: ctx.queues.writer };
  };

  app.get(base, async (c) => {
    const name = await logQueueName(c, ctx);
    const subscriptions = await ctx.queues.queue(name).subscriptions({ signal: c.req.raw.signal });
    return c.json({ subscriptions });
  });

  app.put(`${base}/:subscription`, async (c) => {
    const { name, subscription, log } = await target(c, ctx);
    const startAt = await startAtOf(c);
    const existing = await log.readCursor(subscription, c.req.raw.signal);
    const cursor = existing ?? (await log.createCursor(subscription, startAt, c.req.raw.signal));
    return c.json(
      {
        queue: name,
        subscription,
        created: existing === undefined,
        next: cursor.value.next,
        createdAtMs: cursor.value.createdAtMs,
      },
      existing ? 200 : 201,
    );
  });

  app.delete(`${base}/:subscription`, async (c) => {
    const { subscription, log } = await target(c, ctx);
    if (!(await log.readCursor(subscription, c.req.raw.signal))) {
      throw new HttpError(404, 'NOT_FOUND', `no subscription "${subscription}"`);
    }
    await log.deleteSubscription(subscription, c.req.raw.signal);
    return c.body(null, 204);
  });

  app.get(`${base}/:subscription/entries`, async (c) => {
    const { name, subscription, log } = await target(c, ctx);
    const max = intParam(c.req.query('max'), 'max', 1, ctx.settings.maxEntriesPerRead, 100);
    const waitMs = intParam(c.req.query('waitMs'), 'waitMs', 0, ctx.settings.maxWaitMs, 0);
    const startAt = startAtParam(c.req.query('startAt'));
    const { signal, dispose } = requestSignal(c.req.raw.signal, ctx.closing);
    const deadline = monotonic(ctx) + waitMs;
    let result: ReadResult | undefined;
    try {
      for (;;) {
        // Listen before reading: an append that lands during the read still wakes us.
        const wake = new AbortController();
        const woken = ctx.queues.nextAppend(name, wake.signal);
        try {
          const cursor =
            (await log.readCursor(subscription, signal)) ??
            (await log.createCursor(subscription, startAt, signal));
          const { next, commit } = cursor.value;
          result = await readEntries(log, { next, commit }, max, signal, voiding(name));
          const left = deadline - monotonic(ctx);
          if (result.entries.length > 0 || left <= 0 || signal.aborted) break;
          await waitFor(ctx, woken, Math.min(left, ctx.settings.pollIntervalMs), signal, wake);
        } catch (e) {
          // The client left, or the server is closing: answer what there is (nothing).
          if (!signal.aborted) throw e;
          break;
        } finally {
          wake.abort();
        }
      }
    } finally {
      dispose();
    }
    const headers: Record<string, string> = {
      'Content-Type': 'application/x-ndjson',
      'Cache-Control': 'no-store',
    };
    if (!result) return c.body('', 200, headers);
    ctx.metrics.increment('http.entries_delivered', result.entries.length, {
      queue: name,
      subscription,
    });
    headers['Spillway-Next-Position'] = `${result.point.next.sequence}:${result.point.next.index}`;
    if (result.lost) {
      headers['Spillway-Data-Loss'] = `${result.lost.firstSequence}-${result.lost.lastSequence}`;
    }
    const body = result.entries.map((e) => `${entryJson(e)}\n`).join('');
    return c.body(body, 200, headers);
  });

  app.post(`${base}/:subscription/ack`, async (c) => {
    const { subscription, log } = await target(c, ctx);
    const position = positionOf(await jsonBody(c));
    const next = await acknowledge(log, subscription, position, ctx.clock, c.req.raw.signal);
    return c.json({ next });
  });

  app.get(`${base}/:subscription/stream`, async (c) => {
    const { name, subscription, log } = await target(c, ctx);
    const startAt = startAtParam(c.req.query('startAt'));
    const lastId = c.req.header('last-event-id') ?? c.req.query('lastEventId');
    const { signal, dispose } = requestSignal(c.req.raw.signal, ctx.closing);
    let point = await streamStart(log, subscription, startAt, lastId, signal).finally(dispose);
    return eventStream({
      signal: ctx.closing,
      heartbeatMs: ctx.settings.sseHeartbeatMs,
      clock: ctx.clock,
      next: async (stop) => {
        const wake = new AbortController();
        const woken = ctx.queues.nextAppend(name, wake.signal);
        try {
          const r = await readEntries(log, point, STREAM_READ_ENTRIES, stop, voiding(name));
          point = r.point;
          const events: ServerSentEvent[] = [];
          if (r.lost) events.push({ event: 'loss', data: JSON.stringify(r.lost) });
          for (const e of r.entries) {
            events.push({
              id: `${e.position.sequence}:${e.position.index}`,
              event: 'entry',
              data: entryJson(e),
            });
          }
          if (r.entries.length > 0) {
            ctx.metrics.increment('http.entries_delivered', r.entries.length, {
              queue: name,
              subscription,
            });
          }
          if (events.length === 0) {
            await waitFor(ctx, woken, ctx.settings.pollIntervalMs, stop, wake);
          }
          return events;
        } finally {
          wake.abort();
        }
      },
    });
  });
}

/** The queue of the request, which must exist and have the log layout. */
async function logQueueName(c: Context, ctx: AppContext): Promise<string> {
  const name = c.req.param('queue') as string;
  checkQueueName(name);
  if ((await ctx.queues.existing(name, c.req.raw.signal)) === 'v1') {
    throw new HttpError(
      409,
      'V1_LAYOUT',
      `the queue "${name}" has the v1 layout, which has one consumer and no named subscriptions or retention; it is served for ingest and stats only (new queues get the log layout)`,
    );
  }
  return name;
}

async function target(
  c: Context,
  ctx: AppContext,
): Promise<{ name: string; subscription: string; log: LogQueue }> {
  const subscription = c.req.param('subscription') as string;
  const name = await logQueueName(c, ctx);
  if (!isSubscriptionName(subscription)) {
    throw new HttpError(
      400,
      'BAD_REQUEST',
      `a subscription name is 1-100 letters, digits, ".", "_" or "-", not starting with ".", got ${JSON.stringify(subscription.slice(0, 120))}`,
    );
  }
  return { name, subscription, log: ctx.queues.log(name) };
}

/**
 * Where the stream starts: after the entry named by `Last-Event-ID`
 * (`sequence:index`) when it is at or past the subscription's position
 * and in the log, else at that position (what was acknowledged is not sent
 * again).
 */
async function streamStart(
  log: LogQueue,
  subscription: string,
  startAt: StartAt,
  lastId: string | undefined,
  signal: AbortSignal,
): Promise<ReadPoint> {
  const cursor =
    (await log.readCursor(subscription, signal)) ??
    (await log.createCursor(subscription, startAt, signal));
  const { next, commit } = cursor.value;
  if (lastId === undefined || lastId === '') return { next, commit };
  const m = /^([0-9]{1,16}):([0-9]{1,16})$/.exec(lastId);
  if (!m) {
    throw new HttpError(
      400,
      'BAD_REQUEST',
      `Last-Event-ID must be "sequence:index" as the stream sent it, got ${JSON.stringify(lastId.slice(0, 60))}`,
    );
  }
  const after: Position = { sequence: Number(m[1]), index: Number(m[2]) + 1 };
  if (comparePositions(after, next) <= 0) return { next, commit };
  const head = await log.discoverHead(signal);
  // Not an entry of this log (the queue was made again, or the id is made up): starting
  // there would pass over everything appended until the log reaches it.
  if (after.sequence >= head.endSequence) return { next, commit };
  const holding = await commitHolding(log, after.sequence, commit, head, signal);
  return { next: after, commit: holding?.commit ?? head.commit + 1 };
}

/**
 * A signal that aborts when the request's or the server's does, and
 * `dispose()` to call when the request is done. Not `AbortSignal.any`: in
 * Node 20 every signal it makes from the server's long-lived one stays
 * reachable from it (a slow leak, a few hundred bytes a request, more while
 * a listener is attached).
 */
function requestSignal(
  request: AbortSignal,
  closing: AbortSignal,
): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const abort = (): void => controller.abort();
  if (request.aborted || closing.aborted) abort();
  request.addEventListener('abort', abort, { once: true });
  closing.addEventListener('abort', abort, { once: true });
  return {
    signal: controller.signal,
    dispose: () => {
      request.removeEventListener('abort', abort);
      closing.removeEventListener('abort', abort);
    },
  };
}

/** Waits for `woken` (this server appended), `ms`, or `signal`, whichever comes first. */
async function waitFor(
  ctx: AppContext,
  woken: Promise<void>,
  ms: number,
  signal: AbortSignal,
  wake: AbortController,
): Promise<void> {
  const timer = ctx.clock.setTimeout(() => wake.abort(), ms, { ref: true });
  const onAbort = (): void => wake.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    await woken;
  } finally {
    ctx.clock.clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
}

function monotonic(ctx: AppContext): number {
  return ctx.clock.monotonicNow?.() ?? performance.now();
}

/** An integer query parameter in decimal digits within [min, max], or `fallback` when absent. */
export function intParam(
  value: string | undefined,
  name: string,
  min: number,
  max: number,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  const n = /^[0-9]{1,16}$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new HttpError(
      400,
      'BAD_REQUEST',
      `?${name}= takes an integer from ${min} to ${max} in decimal digits, got ${JSON.stringify(value.slice(0, 40))}`,
    );
  }
  return n;
}

/** `?startAt=`: `oldest` (default), `latest`, `seq:N` or `time:T` (ms or ISO 8601). */
function startAtParam(value: string | undefined): StartAt {
  if (value === undefined) return 'oldest';
  try {
    return parseStartAt(value, 'startAt');
  } catch (e) {
    throw new HttpError(400, 'BAD_REQUEST', (e as Error).message);
  }
}

/** The start of a PUT: `?startAt=`, else `{ "startAt": ... }` in a JSON body, else `oldest`. */
async function startAtOf(c: Context): Promise<StartAt> {
  const q = c.req.query('startAt');
  if (q !== undefined) return startAtParam(q);
  const body = await readBody(c.req.raw, SMALL_BODY_BYTES);
  if (body.byteLength === 0) return 'oldest';
  const o = parseJson(body);
  const v = (o as { startAt?: unknown } | null)?.startAt;
  if (v === undefined) return 'oldest';
  if (typeof v !== 'string') {
    throw new HttpError(
      400,
      'BAD_REQUEST',
      'startAt must be a string such as "oldest" or "seq:12"',
    );
  }
  return startAtParam(v);
}

async function jsonBody(c: Context): Promise<unknown> {
  return parseJson(await readBody(c.req.raw, SMALL_BODY_BYTES));
}

function parseJson(body: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(body)) as unknown;
  } catch (e) {
    throw new HttpError(400, 'BAD_REQUEST', `the body is not JSON: ${(e as Error).message}`);
  }
}

/** `{ "position": { "sequence": S, "index": I } }`, both integers from 0. */
function positionOf(body: unknown): Position {
  const p = (body as { position?: unknown } | null)?.position as
    { sequence?: unknown; index?: unknown } | undefined;
  const ok = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
  if (typeof p !== 'object' || p === null || !ok(p.sequence) || !ok(p.index)) {
    throw new HttpError(
      400,
      'BAD_REQUEST',
      'expected a body { "position": { "sequence": S, "index": I } } with integers from 0, the position of an entry as GET .../entries gave it',
    );
  }
  return { sequence: p.sequence, index: p.index };
}

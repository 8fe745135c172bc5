/**
 * The queue routes: list the queues of the store, a queue's stats, and its
 * retention (log layout).
 */
import type { Hono } from 'hono';
import type { Retention } from '../format/log-objects.ts';
import type { AppContext } from './app-context.ts';
import { HttpError } from './http-error.ts';
import { checkQueueName } from './queue-name.ts';
import { readBody } from './request-body.ts';

/** Registers the queue routes on `app`. */
export function queueRoutes(app: Hono, ctx: AppContext): void {
  app.get('/v1/queues', async (c) => {
    return c.json({ queues: await ctx.queues.list(c.req.raw.signal) });
  });

  app.get('/v1/queues/:queue', async (c) => {
    const name = c.req.param('queue');
    checkQueueName(name);
    await ctx.queues.existing(name, c.req.raw.signal);
    const stats = await ctx.queues
      .queue(name)
      .stats({ signal: c.req.raw.signal, clock: ctx.clock });
    return c.json({ queue: name, ...stats });
  });

  app.get('/v1/queues/:queue/retention', async (c) => {
    const name = await logQueue(c.req.param('queue'), ctx, c.req.raw.signal);
    const retention = await ctx.queues.queue(name).retention({ signal: c.req.raw.signal });
    return c.json({ retention });
  });

  app.put('/v1/queues/:queue/retention', async (c) => {
    const name = await logQueue(c.req.param('queue'), ctx, c.req.raw.signal);
    const given = retentionOf(await readBody(c.req.raw, 65_536));
    const retention = await ctx.queues
      .queue(name)
      .setRetention(given, { signal: c.req.raw.signal });
    return c.json({ retention });
  });
}

async function logQueue(name: string, ctx: AppContext, signal: AbortSignal): Promise<string> {
  checkQueueName(name);
  if ((await ctx.queues.existing(name, signal)) === 'v1') {
    throw new HttpError(
      409,
      'V1_LAYOUT',
      `the queue "${name}" has the v1 layout, which has no retention (batches are kept until its consumer acknowledges them)`,
    );
  }
  return name;
}

/**
 * `{ "maxAgeMs": N | null, "maxBytes": N | null }`: the whole retention (a
 * field absent or null turns that limit off; `{}` keeps everything until
 * acknowledged).
 */
function retentionOf(body: Uint8Array): Retention {
  let o: unknown;
  try {
    o = JSON.parse(new TextDecoder().decode(body));
  } catch (e) {
    throw new HttpError(400, 'BAD_REQUEST', `the body is not JSON: ${(e as Error).message}`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) {
    throw new HttpError(400, 'BAD_REQUEST', 'expected a JSON object { "maxAgeMs", "maxBytes" }');
  }
  const out: Retention = {};
  for (const [k, v] of Object.entries(o)) {
    if (k !== 'maxAgeMs' && k !== 'maxBytes') {
      throw new HttpError(
        400,
        'BAD_REQUEST',
        `unknown retention field "${k}"; expected maxAgeMs, maxBytes`,
      );
    }
    if (v === null) continue;
    if (!Number.isSafeInteger(v) || (v as number) < 1) {
      throw new HttpError(
        400,
        'BAD_REQUEST',
        `${k} must be an integer >= 1 or null, got ${JSON.stringify(v)}`,
      );
    }
    out[k] = v as number;
  }
  return out;
}

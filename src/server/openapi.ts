/**
 * The OpenAPI 3.1 document of the HTTP API, served at `/v1/openapi.json`.
 * Written by hand, next to docs/http-api.md; a test checks that every route
 * the app registers is in it.
 */

type Json = Record<string, unknown>;

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });

const queueParam: Json = {
  name: 'queue',
  in: 'path',
  required: true,
  description:
    'Queue name: 1-100 letters, digits, ".", "_", "-", starting with a letter or digit, without "..". The queue lives under the store prefix of that name.',
  schema: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$' },
};

const subscriptionParam: Json = {
  name: 'subscription',
  in: 'path',
  required: true,
  description: 'Subscription name: 1-100 letters, digits, ".", "_" or "-", not starting with ".".',
  schema: { type: 'string', pattern: '^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$' },
};

const startAtParam: Json = {
  name: 'startAt',
  in: 'query',
  description:
    'Where a subscription created by this request starts: oldest (default), latest, seq:N, or time:T (ms since the Unix epoch, or ISO 8601). An existing subscription keeps its position.',
  schema: {
    type: 'string',
    examples: ['oldest', 'latest', 'seq:120', 'time:2024-05-01T00:00:00Z'],
  },
};

function errors(...statuses: number[]): Json {
  const text: Record<number, string> = {
    400: 'Bad input (JSON error body)',
    401: 'Authentication required',
    403: 'A browser request from a page of another origin, or (without tokens) a Host that is not an IP address or localhost',
    404: 'No such queue, subscription or route',
    409: 'The queue has another layout: v1 (no subscriptions, no retention), or sharded (not served)',
    413: 'Body larger than the limit, or more entries than one batch holds',
    415: 'Unsupported Content-Type',
    422: 'Idempotency-Key reused with another body or format',
    502: 'The store failed',
    503: 'Busy (buffer full), shutting down, or the store is unavailable; see Retry-After',
  };
  const out: Json = {};
  for (const s of [...statuses, 401, 403, 502, 503]) {
    out[String(s)] = {
      description: text[s],
      content: { 'application/json': { schema: ref('Error') } },
    };
  }
  return out;
}

function json(schema: Json, description = 'OK'): Json {
  return { description, content: { 'application/json': { schema } } };
}

/** The document (a fresh object each call). */
export function openApiDocument(): Json {
  return {
    openapi: '3.1.0',
    info: {
      title: 'Spillway HTTP API',
      version: '1',
      description:
        'Ingest entries into Spillway queues and read them through named subscriptions. See docs/http-api.md.',
    },
    security: [{ bearer: [] }, { cookie: [] }],
    paths: {
      '/healthz': {
        get: {
          summary: 'Liveness (no authentication)',
          security: [],
          responses: { '200': json({ type: 'object' }) },
        },
      },
      '/readyz': {
        get: {
          summary: 'Readiness: the store answers',
          responses: { '200': json({ type: 'object' }), ...errors() },
        },
      },
      '/login': {
        get: {
          summary: 'Login form for browsers',
          security: [],
          parameters: [{ name: 'next', in: 'query', schema: { type: 'string' } }],
          responses: { '200': { description: 'HTML form' } },
        },
        post: {
          summary: 'Log in with a token; sets the session cookie and redirects to next',
          security: [],
          requestBody: {
            content: {
              'application/x-www-form-urlencoded': {
                schema: {
                  type: 'object',
                  properties: { token: { type: 'string' }, next: { type: 'string' } },
                },
              },
            },
          },
          responses: {
            '303': { description: 'Logged in: Set-Cookie and Location' },
            '401': { description: 'Wrong token (HTML form again)' },
          },
        },
      },
      '/metrics': {
        get: {
          summary: 'Prometheus metrics (text exposition format 0.0.4)',
          responses: {
            '200': {
              description: 'Metrics',
              content: { 'text/plain': { schema: { type: 'string' } } },
            },
            ...errors(),
          },
        },
      },
      '/': {
        get: {
          summary: 'The dashboard (HTML; a browser logs in with ?token= or /login first)',
          responses: {
            '200': { description: 'The page', content: { 'text/html': {} } },
            '303': { description: 'Not logged in: to the login form' },
            ...errors(),
          },
        },
      },
      '/favicon.ico': {
        get: {
          summary: 'No icon (no authentication; browsers ask for it)',
          security: [],
          responses: { '204': { description: 'Nothing' } },
        },
      },
      '/dashboard/app.js': {
        get: {
          summary: "The dashboard's script",
          responses: {
            '200': { description: 'Script', content: { 'text/javascript': {} } },
            ...errors(),
          },
        },
      },
      '/dashboard/app.css': {
        get: {
          summary: "The dashboard's stylesheet",
          responses: {
            '200': { description: 'Stylesheet', content: { 'text/css': {} } },
            ...errors(),
          },
        },
      },
      '/v1/dashboard/data': {
        get: {
          summary:
            "The dashboard's figures: prices, the request cap, and the recent samples (rates, latency, batch sizes, requests and cost per GB, queues and subscriptions)",
          responses: { '200': json({ type: 'object' }), ...errors() },
        },
      },
      '/v1/dashboard/events': {
        get: {
          summary:
            "The dashboard's figures live (server-sent events): a `snapshot` event (as /v1/dashboard/data), then a `sample` event every second",
          responses: {
            '200': {
              description: 'Event stream',
              content: { 'text/event-stream': { schema: { type: 'string' } } },
            },
            ...errors(),
          },
        },
      },
      '/v1/openapi.json': {
        get: { summary: 'This document', responses: { '200': json({ type: 'object' }) } },
      },
      '/v1/queues': {
        get: {
          summary: 'The queues in the store (prefixes holding a log descriptor or a v1 manifest)',
          responses: {
            '200': json({
              type: 'object',
              properties: { queues: { type: 'array', items: { type: 'string' } } },
            }),
            ...errors(),
          },
        },
      },
      '/v1/queues/{queue}': {
        parameters: [queueParam],
        get: {
          summary: "A queue's stats (what `spillway queue stats` prints)",
          responses: { '200': json({ type: 'object' }), ...errors(400, 404) },
        },
      },
      '/v1/queues/{queue}/entries': {
        parameters: [queueParam],
        post: {
          summary: 'Append entries; answered once durable (or once accepted with wait=false)',
          parameters: [
            {
              name: 'wait',
              in: 'query',
              description: 'false: answer 202 once accepted, before the entries are durable',
              schema: { type: 'boolean', default: true },
            },
            {
              name: 'Idempotency-Key',
              in: 'header',
              description:
                "A retry with the same key (and body) on the same queue within the window answers with the first request's result instead of appending again",
              schema: { type: 'string', pattern: '^[\\x21-\\x7e]{1,200}$' },
            },
          ],
          requestBody: {
            required: true,
            content: {
              'application/x-ndjson': {
                schema: {
                  type: 'string',
                  description: 'One JSON value per line; each line is one entry',
                },
              },
              'application/octet-stream': {
                schema: { type: 'string', format: 'binary', description: 'One entry' },
              },
              'application/x-spillway-frames': {
                schema: {
                  type: 'string',
                  format: 'binary',
                  description: 'u32 little-endian length, then that many bytes, repeated',
                },
              },
            },
          },
          responses: {
            '201': json(ref('Appended'), 'Durable'),
            '200': json(ref('Appended'), 'Durable (replayed for an Idempotency-Key seen before)'),
            '202': json(
              {
                type: 'object',
                properties: { accepted: { const: true }, entries: { type: 'integer' } },
              },
              'Accepted (wait=false)',
            ),
            ...errors(400, 404, 409, 413, 415, 422),
          },
        },
      },
      '/v1/queues/{queue}/retention': {
        parameters: [queueParam],
        get: {
          summary: "The queue's retention (log layout)",
          responses: {
            '200': json({ type: 'object', properties: { retention: ref('Retention') } }),
            ...errors(400, 404, 409),
          },
        },
        put: {
          summary: "Replaces the queue's retention; a limit absent or null is off",
          requestBody: {
            required: true,
            content: { 'application/json': { schema: ref('Retention') } },
          },
          responses: {
            '200': json({ type: 'object', properties: { retention: ref('Retention') } }),
            ...errors(400, 404, 409),
          },
        },
      },
      '/v1/queues/{queue}/subscriptions': {
        parameters: [queueParam],
        get: {
          summary: 'Every subscription with its position and lag',
          responses: {
            '200': json({
              type: 'object',
              properties: { subscriptions: { type: 'array', items: { type: 'object' } } },
            }),
            ...errors(400, 404, 409),
          },
        },
      },
      '/v1/queues/{queue}/subscriptions/{subscription}': {
        parameters: [queueParam, subscriptionParam],
        put: {
          summary: 'Creates a subscription at startAt (an existing one is kept)',
          parameters: [startAtParam],
          responses: {
            '201': json({ type: 'object' }, 'Created'),
            '200': json({ type: 'object' }, 'Existed already'),
            ...errors(400, 404, 409),
          },
        },
        delete: {
          summary: 'Deletes a subscription: it no longer holds data back',
          responses: { '204': { description: 'Deleted' }, ...errors(400, 404, 409) },
        },
      },
      '/v1/queues/{queue}/subscriptions/{subscription}/entries': {
        parameters: [queueParam, subscriptionParam],
        get: {
          summary:
            "Entries from the subscription's position (first not acknowledged), without a lease; a long poll with waitMs",
          parameters: [
            { name: 'max', in: 'query', schema: { type: 'integer', minimum: 1, default: 100 } },
            {
              name: 'waitMs',
              in: 'query',
              description: 'Wait up to this long for at least one entry',
              schema: { type: 'integer', minimum: 0, default: 0 },
            },
            startAtParam,
          ],
          responses: {
            '200': {
              description:
                'NDJSON, one Entry per line (empty when none came in time); Spillway-Next-Position: where reading would go on; Spillway-Data-Loss: sequences deleted before they were read',
              content: { 'application/x-ndjson': { schema: ref('Entry') } },
            },
            ...errors(400, 404, 409),
          },
        },
      },
      '/v1/queues/{queue}/subscriptions/{subscription}/ack': {
        parameters: [queueParam, subscriptionParam],
        post: {
          summary: 'Acknowledges the entry at position and every one before it',
          requestBody: {
            required: true,
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  required: ['position'],
                  properties: { position: ref('Position') },
                },
              },
            },
          },
          responses: {
            '200': json(
              { type: 'object', properties: { next: ref('Position') } },
              "The subscription's position after the call",
            ),
            ...errors(400, 404, 409),
          },
        },
      },
      '/v1/queues/{queue}/subscriptions/{subscription}/stream': {
        parameters: [queueParam, subscriptionParam],
        get: {
          summary:
            "Server-sent events from the subscription's position (or after Last-Event-ID): one `entry` event per entry, its id the position",
          parameters: [
            startAtParam,
            {
              name: 'Last-Event-ID',
              in: 'header',
              description: 'sequence:index of the last entry received; the stream goes on after it',
              schema: { type: 'string' },
            },
          ],
          responses: {
            '200': { description: 'text/event-stream', content: { 'text/event-stream': {} } },
            ...errors(400, 404, 409),
          },
        },
      },
    },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer' },
        cookie: { type: 'apiKey', in: 'cookie', name: 'spillway_session' },
      },
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: {
            error: {
              type: 'object',
              required: ['code', 'message', 'retriable'],
              properties: {
                code: { type: 'string' },
                message: { type: 'string' },
                retriable: { type: 'boolean' },
              },
            },
          },
        },
        Appended: {
          type: 'object',
          required: ['sequence', 'entries'],
          properties: {
            sequence: { type: 'integer', description: 'Sequence of the batch holding the entries' },
            entries: { type: 'integer' },
          },
        },
        Position: {
          type: 'object',
          required: ['sequence', 'index'],
          properties: {
            sequence: { type: 'integer', minimum: 0 },
            index: { type: 'integer', minimum: 0 },
          },
        },
        Entry: {
          type: 'object',
          required: ['position', 'ingestionTimeMs', 'data'],
          properties: {
            position: ref('Position'),
            ingestionTimeMs: { type: 'integer' },
            data: { description: 'The entry as JSON when it is UTF-8 JSON, else base64' },
            encoding: { const: 'base64' },
          },
        },
        Retention: {
          type: 'object',
          properties: {
            maxAgeMs: { type: ['integer', 'null'], minimum: 1 },
            maxBytes: { type: ['integer', 'null'], minimum: 1 },
          },
        },
      },
    },
  };
}

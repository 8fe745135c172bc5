/**
 * Shared pieces of the HTTP API tests: an app on a fresh memory store, and
 * small request helpers.
 */
import { MemoryStore, type ObjectStore } from '../../src/index.ts';
import { createApp, type AppOptions, type SpillwayApp } from '../../src/server/app.ts';
import { uniqueName } from '../support/servers.ts';

/** A fresh in-memory store, dropped by `drop()`. */
export function freshStore(): { store: MemoryStore; drop: () => void } {
  const name = uniqueName('http');
  return { store: new MemoryStore(name), drop: () => MemoryStore.drop(name) };
}

/** An app over a fresh memory store (unless one is given); `close()` closes both. */
export function testApp(
  options: Partial<AppOptions> = {},
): SpillwayApp & { store: ObjectStore; dispose: () => Promise<void> } {
  const fresh = options.store === undefined ? freshStore() : undefined;
  const store = (options.store ?? fresh?.store) as ObjectStore;
  const api = createApp({ createQueues: true, ...options, store });
  return Object.assign(api, {
    store,
    dispose: async () => {
      await api.close();
      fresh?.drop();
    },
  });
}

/** NDJSON body of JSON values, one per line. */
export function ndjson(...values: unknown[]): string {
  return values.map((v) => `${JSON.stringify(v)}\n`).join('');
}

/** `POST /v1/queues/{queue}/entries` with an NDJSON body. */
export function postNdjson(
  api: SpillwayApp,
  queue: string,
  body: string,
  init: { query?: string; headers?: Record<string, string> } = {},
): Promise<Response> {
  return Promise.resolve(
    api.app.request(`/v1/queues/${queue}/entries${init.query ?? ''}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-ndjson', ...(init.headers ?? {}) },
      body,
    }),
  );
}

/** One parsed line of GET .../entries. */
export interface EntryLine {
  position: { sequence: number; index: number };
  ingestionTimeMs: number;
  data: unknown;
  encoding?: 'base64';
}

/** The lines of an NDJSON answer. */
export async function entryLines(res: Response): Promise<EntryLine[]> {
  const text = await res.text();
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as EntryLine);
}

/** `GET .../subscriptions/{name}/entries` with a query string. */
export function getEntries(
  api: SpillwayApp,
  queue: string,
  subscription: string,
  query = '',
): Promise<Response> {
  return Promise.resolve(
    api.app.request(`/v1/queues/${queue}/subscriptions/${subscription}/entries${query}`),
  );
}

/** `POST .../subscriptions/{name}/ack`. */
export function ack(
  api: SpillwayApp,
  queue: string,
  subscription: string,
  position: { sequence: number; index: number },
): Promise<Response> {
  return Promise.resolve(
    api.app.request(`/v1/queues/${queue}/subscriptions/${subscription}/ack`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ position }),
    }),
  );
}

/** u32 little-endian length-prefixed frames. */
export function frames(...entries: Uint8Array[]): Uint8Array {
  const total = entries.reduce((n, e) => n + 4 + e.byteLength, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const e of entries) {
    view.setUint32(at, e.byteLength, true);
    out.set(e, at + 4);
    at += 4 + e.byteLength;
  }
  return out;
}

/** The error code of a JSON error answer. */
export async function errorCode(res: Response): Promise<string> {
  const body = (await res.json()) as { error?: { code?: string } };
  return body.error?.code ?? '(no error body)';
}

/** One server-sent event. */
export interface SseEvent {
  id?: string;
  event?: string;
  data: string;
}

/**
 * Reads events (comments skipped) from an event stream until `until`
 * returns true for one of them or the stream ends, then cancels it;
 * returns every event read.
 */
export async function readEventsUntil(
  res: Response,
  until: (e: SseEvent) => boolean,
): Promise<SseEvent[]> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const out: SseEvent[] = [];
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return out;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const e: SseEvent = { data: '' };
        let hasData = false;
        for (const line of block.split('\n')) {
          if (line.startsWith('id: ')) e.id = line.slice(4);
          else if (line.startsWith('event: ')) e.event = line.slice(7);
          else if (line.startsWith('data: ')) {
            e.data += (hasData ? '\n' : '') + line.slice(6);
            hasData = true;
          }
        }
        if (!hasData) continue;
        out.push(e);
        if (until(e)) return out;
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

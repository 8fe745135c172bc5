/**
 * Server-sent events (`text/event-stream`): a response whose body asks a
 * source for its next events only when the client has read the previous
 * ones (backpressure), sends a comment line while the source has nothing
 * (so proxies keep the connection open), and ends when the client goes
 * away or the server closes. Used by the subscription stream; a metrics
 * stream can use it too.
 */
import type { Clock } from '../clock.ts';
import { toHttpError } from './http-error.ts';

/** One event. */
export interface ServerSentEvent {
  /** `id:`, what the client sends back as `Last-Event-ID` when it reconnects. */
  id?: string;
  /** `event:`, the event's type; `message` when absent. */
  event?: string;
  /** `data:`; line feeds split it into several `data:` lines. */
  data: string;
}

/** Options of {@link eventStream}. */
export interface EventStreamOptions {
  /**
   * The next events: resolves with some (sent at once), or with none when
   * there is nothing now (a heartbeat follows if `heartbeatMs` passes
   * without any), or with `undefined` to end the stream. Called again after
   * its events were read. Must give up when `signal` aborts.
   */
  next: (signal: AbortSignal) => Promise<ServerSentEvent[] | undefined>;
  /** Ends the stream when it aborts (the server closing). */
  signal: AbortSignal;
  /** Longest quiet time before a comment line is sent, in ms. */
  heartbeatMs: number;
  /** Reconnection delay suggested to the client (`retry:`), in ms. */
  retryMs?: number;
  clock: Clock;
}

const encoder = new TextEncoder();

/** One event in the wire format. */
export function formatEvent(e: ServerSentEvent): string {
  let out = '';
  if (e.id !== undefined) out += `id: ${e.id.replace(/[\r\n]/g, '')}\n`;
  if (e.event !== undefined) out += `event: ${e.event.replace(/[\r\n]/g, '')}\n`;
  for (const line of e.data.split(/\r\n|\r|\n/)) out += `data: ${line}\n`;
  return `${out}\n`;
}

/** A `text/event-stream` response fed by `options.next`. */
export function eventStream(options: EventStreamOptions): Response {
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  options.signal.addEventListener('abort', onAbort, { once: true });
  let lastSentAt = monotonic(options.clock);
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        // The first bytes go out at once, so the client knows the stream is open.
        controller.enqueue(encoder.encode(`retry: ${options.retryMs ?? 1000}\n: open\n\n`));
      },
      async pull(controller) {
        // The client may cancel while a read is pending: nothing is sent after that.
        const send = (text: string): void => {
          if (!cancelled) controller.enqueue(encoder.encode(text));
        };
        for (;;) {
          if (stop.signal.aborted) {
            options.signal.removeEventListener('abort', onAbort);
            if (!cancelled) controller.close();
            return;
          }
          let events: ServerSentEvent[] | undefined;
          try {
            events = await options.next(stop.signal);
          } catch (e) {
            if (stop.signal.aborted) continue;
            // As an error answer says it: no credentials, nothing of an unexpected error.
            const { code, message, retriable } = toHttpError(e).body().error;
            send(
              formatEvent({ event: 'error', data: JSON.stringify({ code, message, retriable }) }),
            );
            stop.abort();
            continue;
          }
          if (events === undefined) {
            stop.abort();
            continue;
          }
          const now = monotonic(options.clock);
          if (events.length > 0) {
            lastSentAt = now;
            send(events.map(formatEvent).join(''));
            return;
          }
          if (now - lastSentAt >= options.heartbeatMs) {
            lastSentAt = now;
            send(': keep-alive\n\n');
            return;
          }
        }
      },
      cancel() {
        cancelled = true;
        options.signal.removeEventListener('abort', onAbort);
        stop.abort();
      },
    },
    { highWaterMark: 0 },
  );
  return new Response(body, {
    headers: {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      'X-Accel-Buffering': 'no',
    },
  });
}

function monotonic(clock: Clock): number {
  return clock.monotonicNow?.() ?? performance.now();
}

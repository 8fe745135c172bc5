/**
 * The HTTP API listening on a port (Node's HTTP server through
 * `@hono/node-server`), with a graceful close.
 */
import { createAdaptorServer } from '@hono/node-server';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import { asError, InvalidArgumentError } from '../errors.ts';
import { resolveOptions, type OptionSpecs } from '../options.ts';
import { APP_DEFAULTS, APP_SPECS, createApp, type AppOptions, type SpillwayApp } from './app.ts';

/** Options of {@link startServer}: the app's, and where to listen. */
export interface ServerOptions extends AppOptions {
  /** TCP port; 0 picks a free one (see {@link SpillwayServer.url}). @default 8080 */
  port?: number;
  /** Address to listen on. @default "127.0.0.1" */
  host?: string;
  /**
   * Listen on an address other than loopback without any token: anyone who
   * reaches the port may write and read every queue. Without it, a server
   * with no token refuses such an address. @default false
   */
  insecureNoAuth?: boolean;
}

/** Defaults of {@link ServerOptions}. */
export const SERVER_DEFAULTS = Object.freeze({
  ...APP_DEFAULTS,
  port: 8080,
  host: '127.0.0.1',
  insecureNoAuth: false,
});

const SERVER_SPECS: OptionSpecs<ServerOptions> = {
  ...APP_SPECS,
  port: { kind: 'int', min: 0, max: 65_535 },
  host: {
    kind: 'string',
    pattern: /^[A-Za-z0-9.:_-]{1,255}$/,
    expected: 'a host name or IP address',
  },
  insecureNoAuth: { kind: 'boolean' },
};

/** A listening server. */
export interface SpillwayServer {
  /** The base URL it listens on, e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  /** The port it listens on (the one picked, for port 0). */
  readonly port: number;
  /** The app it serves. */
  readonly api: SpillwayApp;
  /**
   * Graceful close: stops accepting connections, answers new requests on
   * open ones with 503, ends long polls and streams, makes every accepted
   * entry durable and answers the requests waiting for that, closes the
   * producers, queues and store, then the last connections. Idempotent.
   * With `timeoutMs`, what is not finished by then is abandoned (producers
   * destroyed, connections cut) and the close rejects with a `TimeoutError`.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Starts the HTTP API: builds the app ({@link createApp}) and listens.
 *
 * @throws {InvalidArgumentError} for bad options, and for a non-loopback
 * `host` without tokens unless `insecureNoAuth`.
 * @throws the listen error (e.g. `EADDRINUSE`) after closing what it opened.
 *
 * @example
 * const server = await startServer({ store: 'file:./data', port: 8080, tokens: [token], createQueues: true });
 * console.log(`listening on ${server.url}`);
 * process.once('SIGTERM', () => void server.close({ timeoutMs: 30_000 }));
 */
export async function startServer(options: ServerOptions): Promise<SpillwayServer> {
  const o = resolveOptions<ServerOptions>('startServer', SERVER_SPECS, SERVER_DEFAULTS, options);
  const { port, host, insecureNoAuth, ...appOptions } = o;
  const hasTokens = (appOptions.tokens?.length ?? 0) > 0;
  if (!hasTokens && !insecureNoAuth && !isLoopback(host as string)) {
    throw new InvalidArgumentError(
      `startServer: refusing to listen on ${host} without a token: anyone who reaches it could read and write every queue; give a token (--token-file, SPILLWAY_TOKEN), listen on 127.0.0.1, or pass insecureNoAuth (--insecure-no-auth)`,
    );
  }
  const api = createApp(appOptions);
  const server = createAdaptorServer({
    fetch: api.app.fetch,
    // The global Request and Response stay Node's own: the library and its callers use them.
    overrideGlobalObjects: false,
    // Answers are small and each one is awaited by its client: no Nagle delay, and
    // connections kept for the client's next request.
    serverOptions: { noDelay: true, keepAlive: true },
  }) as Server;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    await api.close().catch(() => undefined);
    throw e;
  }
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${shown}:${address.port}`;

  let closing: Promise<void> | undefined;
  const close = (closeOptions: { timeoutMs?: number } = {}): Promise<void> => {
    closing ??= (async () => {
      const errors: unknown[] = [];
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Idle keep-alive connections go now; busy ones after their answer.
      server.closeIdleConnections();
      await api.close(closeOptions).catch((e: unknown) => errors.push(e));
      // Streams and long polls ended with the app; whatever still holds a connection is cut.
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), 1000);
      timer.unref();
      await closed;
      clearTimeout(timer);
      if (errors.length > 0) throw asError(errors[0]);
    })();
    return closing;
  };
  return {
    url,
    port: address.port,
    api,
    close,
    [Symbol.asyncDispose]: () => close(),
  };
}

/** Whether `host` names only this machine: `localhost`, 127.0.0.0/8 or ::1. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

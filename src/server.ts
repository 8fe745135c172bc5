/**
 * `spillway/server`: the HTTP server of `spillway serve` as a library: an
 * app built without listening (fetch-style handlers, testable in process)
 * and a server that listens and shuts down gracefully. A subpath of its own,
 * so that users of the main entry point never load the HTTP framework.
 *
 * @packageDocumentation
 */
export { createApp, APP_DEFAULTS, type AppOptions, type SpillwayApp } from './server/app.ts';
export {
  startServer,
  SERVER_DEFAULTS,
  type ServerOptions,
  type SpillwayServer,
} from './server/server.ts';

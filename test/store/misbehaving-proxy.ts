/**
 * An HTTP proxy on loopback that forwards to a real server (RGW, Azurite) and
 * misbehaves on purpose, so the network adapters meet the failures that break
 * naive compare-and-swap: a response lost after the server applied the write,
 * a 500 or 503 answered without forwarding.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** What to do with one matching request. */
export type ProxyAction =
  /** Forward, let the server apply it, then cut the connection before the client sees the answer. */
  | { kind: 'lose-response'; then?: () => Promise<void> }
  /** Answer this status without forwarding. */
  | { kind: 'status'; status: number };

interface Rule {
  match: (req: http.IncomingMessage) => boolean;
  action: ProxyAction;
  remaining: number;
}

/** A running proxy; `url` is its base URL. */
export class MisbehavingProxy {
  private readonly rules: Rule[] = [];
  /** Requests forwarded or refused, by method. */
  readonly seen: string[] = [];
  private constructor(
    private readonly server: http.Server,
    readonly url: string,
  ) {}

  static async start(target: string): Promise<MisbehavingProxy> {
    const upstream = new URL(target);
    const holder: { proxy?: MisbehavingProxy } = {};
    const server = http.createServer((req, res) => {
      const proxy = holder.proxy as MisbehavingProxy;
      proxy.seen.push(`${req.method} ${req.url}`);
      const rule = proxy.rules.find((r) => r.remaining > 0 && r.match(req));
      if (rule) rule.remaining--;
      const action = rule?.action;
      if (action?.kind === 'status') {
        req.resume();
        res.writeHead(action.status, { 'content-type': 'application/xml' });
        res.end(
          `<?xml version="1.0"?><Error><Code>InternalError</Code><Message>injected ${action.status}</Message></Error>`,
        );
        return;
      }
      const forward = http.request(
        {
          host: upstream.hostname,
          port: upstream.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
        },
        (up) => {
          if (action?.kind === 'lose-response') {
            up.resume();
            up.on('end', () => {
              void (async () => {
                await action.then?.();
                req.socket.destroy();
              })();
            });
            return;
          }
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        },
      );
      forward.on('error', () => req.socket.destroy());
      req.pipe(forward);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    holder.proxy = new MisbehavingProxy(server, `http://127.0.0.1:${port}`);
    return holder.proxy;
  }

  /** Applies `action` to the next `count` requests that `match`. */
  on(match: (req: http.IncomingMessage) => boolean, action: ProxyAction, count = 1): void {
    this.rules.push({ match, action, remaining: count });
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** Matches PUT requests whose path ends with the key. */
export function putOf(key: string): (req: http.IncomingMessage) => boolean {
  return (req) =>
    req.method === 'PUT' && (req.url ?? '').split('?')[0]!.endsWith(`/${encodeURIComponent(key)}`);
}

/** Matches GET requests whose path ends with the key. */
export function getOf(key: string): (req: http.IncomingMessage) => boolean {
  return (req) =>
    req.method === 'GET' && (req.url ?? '').split('?')[0]!.endsWith(`/${encodeURIComponent(key)}`);
}

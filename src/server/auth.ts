/**
 * Bearer-token authentication, and a cookie for browsers (which cannot set
 * headers on an `EventSource`): a browser logs in once, with `?token=` on
 * any GET or with the form at `/login`, and is then known by an HttpOnly,
 * SameSite=Strict cookie derived from the token (an HMAC, so the cookie
 * never holds the token itself). Tokens are compared in constant time and
 * never logged or echoed.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { Context, MiddlewareHandler } from 'hono';
import { HttpError } from './http-error.ts';
import { readBody } from './request-body.ts';

/** Name of the session cookie. */
export const SESSION_COOKIE = 'spillway_session';

/** Paths answered without authentication. */
const OPEN_PATHS = new Set(['/healthz', '/login', '/favicon.ico']);

/** Longest form body `/login` reads, in bytes. */
const LOGIN_BODY_BYTES = 8192;

/** The tokens a server accepts; none means no authentication. */
export class Tokens {
  private readonly digests: Buffer[];
  private readonly sessions: Buffer[];

  /** @param tokens the accepted tokens (several, to rotate without a restart of clients) */
  constructor(tokens: readonly string[]) {
    this.digests = tokens.map((t) => sha256(t));
    this.sessions = tokens.map((t) => Buffer.from(sessionValue(t)));
  }

  /** Whether any token is configured (else every request is let in). */
  get enabled(): boolean {
    return this.digests.length > 0;
  }

  /** Whether `token` is one of the tokens; constant time in the tokens' bytes. */
  accepts(token: string): boolean {
    const d = sha256(token);
    let ok = false;
    for (const t of this.digests) ok = timingSafeEqual(d, t) || ok;
    return ok;
  }

  /** Whether a session cookie's value belongs to one of the tokens. */
  acceptsSession(value: string): boolean {
    const v = Buffer.from(value);
    let ok = false;
    for (const s of this.sessions) ok = (s.length === v.length && timingSafeEqual(s, v)) || ok;
    return ok;
  }

  /** The session cookie's value for `token` (call only with an accepted token). */
  sessionFor(token: string): string {
    return sessionValue(token);
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function sessionValue(token: string): string {
  return createHmac('sha256', token).update('spillway-session-v1').digest('base64url');
}

/**
 * The middleware: lets `/healthz` and `/login` through; with tokens
 * configured, takes `Authorization: Bearer <token>`, or the session cookie
 * (refusing a write from another origin, `Origin` checked), or `?token=` on
 * a GET (answered with the cookie and a redirect to the same URL without the
 * token); anything else is 401 (a browser asking for HTML is sent to the
 * login form).
 */
export function authMiddleware(tokens: Tokens): MiddlewareHandler {
  return async (c, next) => {
    if (OPEN_PATHS.has(c.req.path)) return next();
    const url = new URL(c.req.url);
    const method = c.req.method;
    if (!tokens.enabled) {
      // Nothing authenticates a request, so a browser's are checked as a cookie's are.
      if (!isLoopbackName(url.hostname)) {
        throw new HttpError(
          403,
          'FORBIDDEN',
          `without a token this server answers only requests that name it by an IP address or localhost, not "${url.hostname.slice(0, 100)}" (a web page could otherwise reach it through DNS rebinding); give a token to serve it under a host name`,
        );
      }
      checkBrowserOrigin(c, url);
      return next();
    }
    const queryToken = url.searchParams.get('token');
    if (queryToken !== null && (method === 'GET' || method === 'HEAD')) {
      if (!tokens.accepts(queryToken))
        throw unauthorized('the token given as ?token= is not valid');
      url.searchParams.delete('token');
      // A path of this server: "//host" would be another server's.
      const path = url.pathname.replace(/^\/+/, '/');
      return loginAnswer(c, tokens.sessionFor(queryToken), `${path}${url.search}`);
    }
    const header = c.req.header('authorization');
    if (header !== undefined) {
      const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
      if (!m || !tokens.accepts(m[1] as string)) {
        throw unauthorized('the bearer token is not valid');
      }
      return next();
    }
    const cookie = cookieValue(c.req.header('cookie'), SESSION_COOKIE);
    if (cookie !== undefined && tokens.acceptsSession(cookie)) {
      checkBrowserOrigin(c, url);
      return next();
    }
    if (method === 'GET' && (c.req.header('accept') ?? '').includes('text/html')) {
      return c.redirect(`/login?next=${encodeURIComponent(`${url.pathname}${url.search}`)}`, 303);
    }
    throw unauthorized('send Authorization: Bearer <token>');
  };
}

/**
 * Refuses what a browser sends on behalf of another site or origin, for a
 * request that nothing but the browser itself authenticates (the session
 * cookie, or no token at all): a write whose `Origin` is not this server's
 * (a form or a no-cors fetch of any page), and any request a page of
 * another origin made without navigating to it (`Sec-Fetch-Site`: an image
 * or script tag, since a read may create a subscription). Clients that send
 * neither header (curl, libraries) are let in.
 *
 * @throws {HttpError} 403 `FORBIDDEN`.
 */
function checkBrowserOrigin(c: Context, url: URL): void {
  const method = c.req.method;
  const read = method === 'GET' || method === 'HEAD';
  const origin = c.req.header('origin');
  if (!read && origin !== undefined && !ownOrigins(c, url).includes(origin)) {
    throw new HttpError(
      403,
      'FORBIDDEN',
      `a write from a browser must come from ${url.origin}, not ${origin.slice(0, 200)}`,
    );
  }
  const site = c.req.header('sec-fetch-site');
  const navigates = read && c.req.header('sec-fetch-mode') === 'navigate';
  if ((site === 'cross-site' || site === 'same-site') && !navigates) {
    throw new HttpError(
      403,
      'FORBIDDEN',
      `a request a page of another origin made (Sec-Fetch-Site: ${site}) is not answered; send Authorization: Bearer <token>`,
    );
  }
}

/** The origins this server is reached at: the request's, and its https twin behind a TLS proxy. */
function ownOrigins(c: Context, url: URL): string[] {
  const origins = [url.origin];
  if (url.protocol === 'http:' && c.req.header('x-forwarded-proto') === 'https') {
    origins.push(`https://${url.host}`);
  }
  return origins;
}

/** Whether `hostname` (of a URL) is `localhost`, a `.localhost` name or an IP address. */
function isLoopbackName(hostname: string): boolean {
  const h = hostname.toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (h.startsWith('[') && h.endsWith(']')) return isIP(h.slice(1, -1)) === 6;
  return isIP(h) === 4;
}

/** The login routes: `GET /login` (the form) and `POST /login` (token, next). */
export function loginRoutes(tokens: Tokens): {
  form: (c: Context) => Response;
  submit: (c: Context) => Promise<Response>;
} {
  return {
    form: (c) => c.html(loginPage(safeNext(c.req.query('next')), false)),
    submit: async (c) => {
      const body = await readBody(c.req.raw, LOGIN_BODY_BYTES);
      const form = new URLSearchParams(new TextDecoder().decode(body));
      const next = safeNext(form.get('next') ?? undefined);
      const token = form.get('token') ?? '';
      if (!tokens.enabled) return c.redirect(next, 303);
      if (!tokens.accepts(token)) return c.html(loginPage(next, true), 401);
      return loginAnswer(c, tokens.sessionFor(token), next);
    },
  };
}

/** A redirect to `location` that sets the session cookie. */
function loginAnswer(c: Context, session: string, location: string): Response {
  const url = new URL(c.req.url);
  const secure = url.protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https';
  c.header(
    'Set-Cookie',
    `${SESSION_COOKIE}=${session}; Path=/; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`,
  );
  c.header('Cache-Control', 'no-store');
  return c.redirect(location, 303);
}

/**
 * A path of this server to go to after login: printable ASCII without
 * spaces (browsers drop tabs and line breaks, so "/\t/evil" would be
 * "//evil"), starting with one `/` and not `/\`; else `/`.
 */
function safeNext(next: string | undefined): string {
  if (!next || !/^\/(?![/\\])[\x21-\x7e]*$/.test(next) || next.includes('\\')) return '/';
  return next;
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function unauthorized(why: string): HttpError {
  return new HttpError(401, 'UNAUTHORIZED', `authentication required: ${why}`, {
    headers: { 'WWW-Authenticate': 'Bearer realm="spillway"' },
  });
}

function escapeHtml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch] as string,
  );
}

function loginPage(next: string, failed: boolean): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spillway: log in</title>
<style>body{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}input,button{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.3rem 0}.error{color:#b00}</style>
</head><body>
<h1>Spillway</h1>
${failed ? '<p class="error">That token is not valid.</p>' : ''}
<form method="post" action="/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="${escapeHtml(next)}">
<button type="submit">Log in</button>
</form>
</body></html>
`;
}

/**
 * Keeping secrets out of messages. A store URL may carry credentials in its
 * user-info (`scheme://user:password@host`) or in query values (`?token=`,
 * `?sig=`, an `endpoint=` that itself holds a password). No part of either is
 * ever printed: every message that names a URL goes through
 * {@link redactUrl}, and the command line passes every line it prints about
 * an error through {@link scrubSecrets}. Both err on the side of hiding: a
 * path that contains `@` loses the part before it.
 */

/**
 * A URL with its user-info removed and its query and fragment hidden: the
 * scheme, host and path stay, and so do the names of query parameters that
 * have a value, so the reader still knows which store is meant. Works on
 * strings that are not valid URLs too: the user-info is everything between
 * `//` and the last `@` (a password may hold `@`, `/`, `?` or `#`).
 *
 * @example
 * redactUrl('s3://bucket/q?endpoint=http://u:p@h') // 's3://***@h' (the last "@" ends the user-info)
 * redactUrl('s3://bucket/q?region=eu') // 's3://bucket/q?region=***'
 */
export function redactUrl(url: string): string {
  let out = String(url);
  const start = out.indexOf('//');
  if (start >= 0) {
    const at = out.lastIndexOf('@');
    if (at > start) out = `${out.slice(0, start + 2)}***@${out.slice(at + 1)}`;
  }
  const hash = out.indexOf('#');
  if (hash >= 0) out = `${out.slice(0, hash)}#***`;
  const query = out.indexOf('?');
  if (query >= 0) {
    const params = out
      .slice(query + 1)
      .split('&')
      .map((pair) => {
        const eq = pair.indexOf('=');
        const name = eq < 0 ? '' : pair.slice(0, eq);
        return /^[A-Za-z0-9_.-]{1,64}$/.test(name) ? `${name}=***` : '***';
      });
    out = `${out.slice(0, query)}?${params.join('&')}`;
  }
  return out;
}

/**
 * Removes from free text (an error message, a stack, a usage line)
 * everything that looks like credentials: the user-info of anything shaped
 * `scheme://...@` up to the last `@` of that word, and the values of
 * URL-style query parameters. A last line of defence for messages that come
 * from SDKs, the OS or the argument parser.
 */
export function scrubSecrets(text: string): string {
  // User-info: from "//" to the last "@" of the same whitespace-free word.
  let out = text.replace(/\/\/[^\s"'`<>]*@/g, '//***@');
  // Query values of anything URL-like: "?a=b&c=d" keeps the names.
  out = out.replace(/([?&][A-Za-z0-9_.\-[\]]+=)[^&\s"'`<>]*/g, '$1***');
  return out;
}

/**
 * Replaces a store endpoint (and its host) in a message with `<endpoint>`:
 * an endpoint given in a store URL is a query value, and those are never
 * printed; SDK messages name the host (`ENOTFOUND host`).
 */
export function hideEndpoint(text: string, endpoint: string | undefined): string {
  if (!endpoint || !URL.canParse(endpoint)) return text;
  const { host, hostname } = new URL(endpoint);
  let out = text.split(endpoint).join('<endpoint>');
  for (const h of [host, hostname]) if (h) out = out.split(h).join('<endpoint>');
  return out;
}

/**
 * Keeping secrets out of messages. A store URL may carry credentials in its
 * user-info (`scheme://user:password@host`) or in query values (`?token=`,
 * `?sig=`, an `endpoint=` that itself holds a password). No part of either is
 * ever printed: every message that names a URL goes through
 * {@link redactUrl}, and the command line passes every error message through
 * {@link scrubSecrets} before it reaches a terminal or a log.
 */

/**
 * A URL with its user-info removed and every query value replaced by `***`;
 * the scheme, host, path and parameter names stay, so the reader still knows
 * which store is meant. Works on strings that are not valid URLs too.
 *
 * @example
 * redactUrl('s3://bucket/q?endpoint=http://u:p@h') // 's3://bucket/q?endpoint=***'
 */
export function redactUrl(url: string): string {
  let out = String(url);
  const hash = out.indexOf('#');
  if (hash >= 0) out = out.slice(0, hash);
  const query = out.indexOf('?');
  let tail = '';
  if (query >= 0) {
    tail = `?${out
      .slice(query + 1)
      .split('&')
      .map((pair) => {
        const eq = pair.indexOf('=');
        return eq < 0 ? pair : `${pair.slice(0, eq)}=***`;
      })
      .join('&')}`;
    out = out.slice(0, query);
  }
  return removeUserInfo(out) + tail;
}

/**
 * Removes from free text (an error message, a stack) everything that looks
 * like credentials: the user-info of any `scheme://user:pass@host` (a
 * password may itself hold `@`), and the values of URL query parameters.
 * A last line of defence for messages that come from SDKs or the OS.
 */
export function scrubSecrets(text: string): string {
  // User-info: from "//" to the last "@" before the authority ends (at "/", whitespace or a quote).
  let out = text.replace(/\/\/[^\s/"'`<>?#]*@/g, '//***@');
  // Query values of anything URL-like: "?a=b&c=d" keeps the names.
  out = out.replace(/([?&][A-Za-z0-9_.\-[\]]+=)[^&\s"'`<>#]*/g, '$1***');
  return out;
}

function removeUserInfo(url: string): string {
  const start = url.indexOf('//');
  if (start < 0) return url;
  const authorityEnd = url.indexOf('/', start + 2);
  const authority = authorityEnd < 0 ? url.slice(start + 2) : url.slice(start + 2, authorityEnd);
  const at = authority.lastIndexOf('@');
  if (at < 0) return url;
  return `${url.slice(0, start + 2)}***@${authority.slice(at + 1)}${authorityEnd < 0 ? '' : url.slice(authorityEnd)}`;
}

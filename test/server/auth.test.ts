/**
 * Authentication, in process: bearer tokens, the browser's one-time
 * `?token=` and login form, the session cookie, and what stays open.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { errorCode, ndjson, postNdjson, testApp } from './helpers.ts';

const TOKEN = 'test-token-0123456789abcdef';
const OTHER = 'rotated-token-fedcba9876543210';

/** The `name=value` of a Set-Cookie answer. */
function cookieOf(res: Response): string {
  const set = res.headers.get('set-cookie') ?? '';
  return set.split(';')[0] ?? '';
}

describe('authentication', () => {
  test('every route but /healthz and /login needs a token; a wrong one is 401; the right one passes', async () => {
    const api = testApp({ tokens: [TOKEN, OTHER] });
    try {
      assert.equal((await api.app.request('/healthz')).status, 200);
      assert.equal((await api.app.request('/login')).status, 200);
      for (const path of [
        '/readyz',
        '/metrics',
        '/v1/openapi.json',
        '/v1/queues',
        '/v1/queues/q',
      ]) {
        const res = await api.app.request(path);
        assert.equal(res.status, 401, path);
        assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="spillway"');
        assert.equal(await errorCode(res), 'UNAUTHORIZED');
      }
      const wrong = await postNdjson(api, 'q', ndjson(1), {
        headers: { Authorization: 'Bearer not-the-token-at-all' },
      });
      assert.equal(wrong.status, 401);
      const text = await wrong.text();
      assert.ok(!text.includes('not-the-token-at-all'), 'a token is never echoed');
      for (const t of [TOKEN, OTHER]) {
        const ok = await postNdjson(api, 'q', ndjson(1), {
          headers: { Authorization: `Bearer ${t}` },
        });
        assert.equal(ok.status, 201);
      }
      const metrics = await api.app.request('/metrics', {
        headers: { Authorization: `bearer ${TOKEN}` },
      });
      assert.equal(metrics.status, 200);
    } finally {
      await api.dispose();
    }
  });

  test('?token= on a GET sets an HttpOnly SameSite=Strict cookie and redirects to the URL without it', async () => {
    const api = testApp({ tokens: [TOKEN] });
    try {
      const res = await api.app.request(`/v1/queues?token=${TOKEN}&x=1`);
      assert.equal(res.status, 303);
      assert.equal(res.headers.get('location'), '/v1/queues?x=1');
      const set = res.headers.get('set-cookie') ?? '';
      assert.match(set, /^spillway_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict$/);
      assert.ok(!set.includes(TOKEN), 'the cookie does not hold the token');
      const cookie = cookieOf(res);
      const list = await api.app.request('/v1/queues?x=1', { headers: { Cookie: cookie } });
      assert.equal(list.status, 200);
      // Behind a TLS proxy the cookie is Secure.
      const behindTls = await api.app.request(`/v1/queues?token=${TOKEN}`, {
        headers: { 'X-Forwarded-Proto': 'https' },
      });
      assert.match(behindTls.headers.get('set-cookie') ?? '', /; Secure$/);
      const wrong = await api.app.request('/v1/queues?token=wrong-token-value-000000');
      assert.equal(wrong.status, 401);
      assert.equal(wrong.headers.get('set-cookie'), null);
      const forged = await api.app.request('/v1/queues', {
        headers: { Cookie: 'spillway_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' },
      });
      assert.equal(forged.status, 401);
    } finally {
      await api.dispose();
    }
  });

  test('the cookie authenticates writes from the same origin only', async () => {
    const api = testApp({ tokens: [TOKEN] });
    try {
      const cookie = cookieOf(await api.app.request(`/v1/queues?token=${TOKEN}`));
      assert.match(cookie, /^spillway_session=/);
      const same = await postNdjson(api, 'q', ndjson(1), {
        headers: { Cookie: cookie, Origin: 'http://localhost' },
      });
      assert.equal(same.status, 201);
      const cross = await postNdjson(api, 'q', ndjson(1), {
        headers: { Cookie: cookie, Origin: 'https://evil.example' },
      });
      assert.equal(cross.status, 403);
      assert.equal(await errorCode(cross), 'FORBIDDEN');
    } finally {
      await api.dispose();
    }
  });

  test('the login form: a browser asking for HTML is sent to it, and a right token logs in', async () => {
    const api = testApp({ tokens: [TOKEN] });
    try {
      const page = await api.app.request('/v1/queues/q', { headers: { Accept: 'text/html' } });
      assert.equal(page.status, 303);
      assert.equal(page.headers.get('location'), '/login?next=%2Fv1%2Fqueues%2Fq');
      const form = await api.app.request('/login?next=%2Fv1%2Fqueues');
      assert.match(
        await form.text(),
        /<form method="post" action="\/login">[\s\S]*value="\/v1\/queues"/,
      );
      const post = (body: string): Promise<Response> =>
        Promise.resolve(
          api.app.request('/login', {
            method: 'POST',
            headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
            body,
          }),
        );
      const bad = await post(`token=nope-nope-nope-nope&next=%2Fv1%2Fqueues`);
      assert.equal(bad.status, 401);
      assert.match(await bad.text(), /not valid/);
      const good = await post(`token=${TOKEN}&next=%2Fv1%2Fqueues`);
      assert.equal(good.status, 303);
      assert.equal(good.headers.get('location'), '/v1/queues');
      const ok = await api.app.request('/v1/queues', { headers: { Cookie: cookieOf(good) } });
      assert.equal(ok.status, 200);
      // Only a path of this server is a place to go after login.
      const away = await post(`token=${TOKEN}&next=https%3A%2F%2Fevil.example%2F`);
      assert.equal(away.headers.get('location'), '/');
      const slashes = await post(`token=${TOKEN}&next=%2F%2Fevil.example`);
      assert.equal(slashes.headers.get('location'), '/');
    } finally {
      await api.dispose();
    }
  });

  test('without tokens every route is open', async () => {
    const api = testApp();
    try {
      assert.equal((await api.app.request('/v1/queues')).status, 200);
      assert.equal((await api.app.request('/metrics')).status, 200);
    } finally {
      await api.dispose();
    }
  });
});

/**
 * The dashboard, in process: its routes need authentication like the rest,
 * its page, script and stylesheet come from the package with the right
 * types and nothing from elsewhere, its events carry the figures, and the
 * sampler derives them correctly from the metrics (manual clock).
 */
import assert from 'node:assert/strict';
import { Script } from 'node:vm';
import { describe, test } from 'node:test';
import { ManualClock } from '../../src/clock.ts';
import { silentLogger } from '../../src/logger.ts';
import { PrometheusMetrics } from '../../src/metrics/prometheus.ts';
import {
  DashboardSampler,
  percentileMs,
  S3_STANDARD_PRICES,
  type DashboardSample,
  type DashboardSnapshot,
} from '../../src/server/dashboard/sampler.ts';
import type { ServedQueues } from '../../src/server/served-queues.ts';
import { ndjson, postNdjson, readEventsUntil, testApp } from './helpers.ts';

const TOKEN = 'dashboard-token-0123456789';
const auth = { Authorization: `Bearer ${TOKEN}` };
function assertNear(actual: number | null, expected: number): void {
  assert.ok(actual !== null && Math.abs(actual - expected) < 1e-9, `${actual} is not ${expected}`);
}

const ASSETS = [
  ['/', /^text\/html; charset=utf-8$/],
  ['/dashboard/app.js', /^text\/javascript; charset=utf-8$/],
  ['/dashboard/app.css', /^text\/css; charset=utf-8$/],
] as const;

describe('dashboard routes', () => {
  test('the page, its assets and its data need a token, then the session cookie', async () => {
    const api = testApp({ tokens: [TOKEN] });
    try {
      for (const [path] of ASSETS) {
        assert.equal((await api.app.request(path)).status, 401, path);
      }
      assert.equal((await api.app.request('/v1/dashboard/events')).status, 401);
      assert.equal((await api.app.request('/v1/dashboard/data')).status, 401);
      // A browser without a session is sent to the login form, which comes back to the page.
      const browser = await api.app.request('/', { headers: { Accept: 'text/html' } });
      assert.equal(browser.status, 303);
      assert.equal(browser.headers.get('location'), '/login?next=%2F');
      // ?token= logs in: a cookie, and the page without the token in its URL.
      const login = await api.app.request(`/?token=${TOKEN}`);
      assert.equal(login.status, 303);
      assert.equal(login.headers.get('location'), '/');
      const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] as string;
      for (const [path] of ASSETS) {
        assert.equal((await api.app.request(path, { headers: { Cookie: cookie } })).status, 200);
      }
      const events = await api.app.request('/v1/dashboard/events', { headers: { Cookie: cookie } });
      assert.equal(events.status, 200);
      const [first] = await readEventsUntil(events, () => true);
      assert.equal(first?.event, 'snapshot');
    } finally {
      await api.dispose();
    }
  });

  test('the page, script and stylesheet have their content types, a strict CSP, and no URL of another origin', async () => {
    const api = testApp({ tokens: [TOKEN] });
    try {
      const bodies: string[] = [];
      for (const [path, type] of ASSETS) {
        const res = await api.app.request(path, { headers: auth });
        assert.equal(res.status, 200);
        assert.match(res.headers.get('content-type') ?? '', type, path);
        assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'none'/);
        assert.match(res.headers.get('content-security-policy') ?? '', /script-src 'self';/);
        assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
        bodies.push(await res.text());
      }
      const [html, js, css] = bodies as [string, string, string];
      for (const text of bodies) {
        assert.doesNotMatch(
          text,
          /(?:https?:)?\/\/[a-z0-9-]+\.[a-z]{2,}/i,
          'no URL of another host',
        );
        assert.doesNotMatch(text, /@import|url\(/i, 'nothing loaded from a stylesheet');
      }
      const refs = [...html.matchAll(/(?:src|href)="([^"]*)"/g)].map((m) => m[1] as string);
      assert.ok(refs.length >= 2);
      for (const r of refs) assert.match(r, /^\/[^/]/, `${r} is a path of this server`);
      assert.doesNotMatch(
        html,
        /<script>|<style>|\son[a-z]+=/i,
        'no inline script or style (the CSP forbids them)',
      );
      assert.match(html, /<meta name="viewport" content="width=device-width/);
      assert.match(css, /@media \(max-width: 600px\)/, 'a layout for phones');
      assert.doesNotThrow(() => new Script(js), 'the script parses');
      assert.ok(js.includes("new EventSource('/v1/dashboard/events')"));
    } finally {
      await api.dispose();
    }
  });

  test('the events carry throughput, requests by kind, per-GB cost, latency, batch sizes, depth and lag', async () => {
    const api = testApp({
      tokens: [TOKEN],
      dashboard: { sampleIntervalMs: 50, statsIntervalMs: 100 },
    });
    try {
      const entry = { pad: 'x'.repeat(1000) };
      // A subscription that reads nothing yet: its lag grows with every write.
      assert.equal((await postNdjson(api, 'q', ndjson(entry), { headers: auth })).status, 201);
      assert.equal(
        (
          await api.app.request('/v1/queues/q/subscriptions/reader/entries?max=1', {
            headers: auth,
          })
        ).status,
        200,
      );
      let writing = true;
      const writer = (async () => {
        while (writing) {
          const body = ndjson(...Array.from({ length: 50 }, () => entry));
          const res = await postNdjson(api, 'q', body, { headers: auth });
          assert.equal(res.status, 201);
        }
      })();
      const res = await api.app.request('/v1/dashboard/events', { headers: auth });
      assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
      let found: DashboardSample | undefined;
      const events = await readEventsUntil(res, (e) => {
        if (e.event !== 'sample') return false;
        const s = JSON.parse(e.data) as DashboardSample;
        const q = s.queues.find((x) => x.name === 'q');
        const ok =
          s.entriesInPerS > 0 &&
          s.bytesInPerS > 0 &&
          s.requestsPerS.put > 0 &&
          s.costPerGb !== null &&
          s.requestsPerGb !== null &&
          s.durableP50Ms !== null &&
          s.entriesPerBatch !== null &&
          (q?.subscriptions.find((sub) => sub.name === 'reader')?.lagEntries ?? 0) > 0;
        if (ok) found = s;
        return ok;
      });
      writing = false;
      await writer;
      assert.equal(events[0]?.event, 'snapshot');
      const snapshot = JSON.parse(events[0]?.data ?? '{}') as DashboardSnapshot;
      assert.deepEqual(snapshot.prices, S3_STANDARD_PRICES);
      assert.ok(found, 'a sample with every figure moving');
      assert.ok(found.costPerGb! > 0 && found.requestsPerGb! > 0);
      assert.ok(found.durableP99Ms! >= found.durableP50Ms!);
      assert.ok(found.entriesPerBatch! >= 1);
      assert.equal(found.queues.find((x) => x.name === 'q')?.layout, 'log');
      assert.ok(found.totals.entriesIn > 0 && found.totals.requests > 0);
      // The same numbers as JSON, and the request counts in /metrics.
      const data = (await (
        await api.app.request('/v1/dashboard/data', { headers: auth })
      ).json()) as DashboardSnapshot;
      assert.ok(data.samples.length >= 1);
      const metrics = await (await api.app.request('/metrics', { headers: auth })).text();
      assert.match(metrics, /^spillway_store_requests_total\{op="put"\} [1-9]\d*$/m);
      assert.match(metrics, /^spillway_store_requests_total\{op="get"\} [1-9]\d*$/m);
    } finally {
      await api.dispose();
    }
  });

  test('prices and the request cap given to the app are what the page is told', async () => {
    const api = testApp({
      tokens: [TOKEN],
      maxRequestsPerSecond: 500,
      dashboard: { prices: { perThousandPuts: 0.0055 } },
    });
    try {
      const data = (await (
        await api.app.request('/v1/dashboard/data', { headers: auth })
      ).json()) as DashboardSnapshot;
      assert.deepEqual(data.prices, { ...S3_STANDARD_PRICES, perThousandPuts: 0.0055 });
      assert.equal(data.maxRequestsPerSecond, 500);
      // Writes go through the cap and are still counted.
      assert.equal((await postNdjson(api, 'q', ndjson(1), { headers: auth })).status, 201);
      assert.ok(api.context.metrics.value('store.requests', { op: 'put' }) >= 1);
    } finally {
      await api.dispose();
    }
  });

  test('bad dashboard options are refused when the app is built', () => {
    assert.throws(
      () => testApp({ dashboard: { prices: { perThousandGets: -1 } } }),
      /perThousandGets must be a number >= 0/,
    );
    assert.throws(
      () => testApp({ dashboard: { sampleIntervalMs: 1 } }),
      /sampleIntervalMs must be an integer >= 10/,
    );
    assert.throws(() => testApp({ dashboard: { queues: ['../x'] } }), /dashboard.queues/);
    assert.throws(
      () => testApp({ dashboard: { colour: 'red' } as never }),
      /unknown dashboard option "colour"/,
    );
    assert.throws(() => testApp({ maxRequestsPerSecond: 0 }), /maxRequestsPerSecond/);
  });
});

describe('dashboard sampler', () => {
  const noQueues = {
    names: () => [],
    list: async () => [],
  } as unknown as ServedQueues;

  function sampler(clock: ManualClock, metrics: PrometheusMetrics): DashboardSampler {
    return new DashboardSampler({
      metrics,
      queues: noQueues,
      watch: [],
      prices: S3_STANDARD_PRICES,
      sampleIntervalMs: 1000,
      statsIntervalMs: 5000,
      historySize: 3,
      maxRequestsPerSecond: undefined,
      clock,
      logger: silentLogger,
    });
  }

  test('rates are the counters’ differences over the interval, summed over queues', async () => {
    const clock = new ManualClock();
    const metrics = new PrometheusMetrics({ processMetrics: false });
    const s = sampler(clock, metrics);
    s.start();
    const a = metrics.withLabels({ queue: 'a' });
    const b = metrics.withLabels({ queue: 'b' });
    a.increment('buffer.entries_flushed', 300);
    b.increment('buffer.entries_flushed', 200);
    a.increment('buffer.bytes_flushed', 400_000);
    b.increment('buffer.bytes_flushed', 100_000);
    a.increment('buffer.batches_flushed', 5);
    a.increment('buffer.entries_collected', 100);
    metrics.increment('http.entries_delivered', 50, { queue: 'b', subscription: 's' });
    metrics.increment('store.requests', 10, { op: 'put' });
    metrics.increment('store.requests', 4, { op: 'get' });
    metrics.increment('store.bytes_read', 2000);
    metrics.increment('buffer.gc_files_deleted', 3);
    a.observe('buffer.flush_duration_seconds', 0.004);
    a.observe('buffer.flush_duration_seconds', 0.004);
    await clock.advance(2000);
    const next = s.next(new AbortController().signal);
    await clock.advance(0);
    const [, sample] = s.snapshot().samples as [DashboardSample, DashboardSample];
    assert.equal(sample.entriesInPerS, 0, 'nothing new in the second interval');
    const first = s.snapshot().samples[0] as DashboardSample;
    assert.equal(first.entriesInPerS, 500);
    assert.equal(first.bytesInPerS, 500_000);
    assert.equal(first.entriesOutPerS, 150);
    assert.equal(first.bytesOutPerS, 2000);
    assert.equal(first.batchesPerS, 5);
    assert.equal(first.entriesPerBatch, 100);
    assert.equal(first.bytesPerBatch, 100_000);
    assert.deepEqual(first.requestsPerS, { put: 10, get: 4, head: 0, list: 0, delete: 0 });
    assert.equal(first.gcObjectsPerS, 3);
    // 14 requests for 0.0005 GB: 28,000 per GB; 10 PUTs at $0.005/1k and 4 GETs at $0.0004/1k.
    assert.equal(first.requestsPerGb, 28_000);
    assert.ok(
      Math.abs((first.costPerGb as number) - (10 * 0.005 + 4 * 0.0004) / 1000 / 0.0005) < 1e-12,
    );
    // Both observations in the 2.5-5 ms bucket.
    assertNear(first.durableP50Ms, 3.75);
    assertNear(first.durableP99Ms, 4.975);
    assert.equal(first.totals.entriesIn, 500);
    s.close();
    assert.equal(await next, undefined, 'a waiter ends when the sampler closes');
    assert.equal(clock.pendingTimers, 0);
  });

  test('the history keeps the last samples only', async () => {
    const clock = new ManualClock();
    const s = sampler(clock, new PrometheusMetrics({ processMetrics: false }));
    s.start();
    await clock.advance(10_000);
    assert.equal(s.snapshot().samples.length, 3);
    s.close();
  });

  test('percentiles interpolate within their bucket and stop at the last bound', () => {
    const bounds = [0.001, 0.01, 0.1];
    assert.equal(percentileMs(bounds, [0, 0, 0, 0], 0.5), null);
    assertNear(percentileMs(bounds, [10, 0, 0, 0], 0.5), 0.5);
    assertNear(percentileMs(bounds, [5, 5, 0, 0], 0.75), 5.5);
    assert.equal(percentileMs(bounds, [0, 0, 0, 3], 0.99), 100);
  });
});

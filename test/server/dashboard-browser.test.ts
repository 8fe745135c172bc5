/**
 * The dashboard in a real browser: Debian's chromium, driven by
 * playwright-core (no browser download), opens the page of a server on
 * `file://` while this process writes and reads through the HTTP API,
 * logs in with the form, and checks that the numbers move and the charts
 * draw, on a laptop's viewport and a phone's. Screenshots go to
 * test-artifacts/.
 *
 * Needs /usr/bin/chromium (`bash scripts/chromium.sh install`); without it
 * the test fails, unless SPILLWAY_SKIP_BROWSER=1.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startServer, type SpillwayServer } from '../../src/server/server.ts';

const CHROMIUM = process.env.SPILLWAY_CHROMIUM ?? '/usr/bin/chromium';
const SKIP = process.env.SPILLWAY_SKIP_BROWSER === '1';
const TOKEN = 'browser-test-token-0123456789';
const ARTIFACTS = new URL('../../test-artifacts/', import.meta.url).pathname;
const auth = { Authorization: `Bearer ${TOKEN}` };

// The page's globals, as far as the checks below (which run in the page) use them:
// this project's types have no DOM, and the page's CSP forbids evaluating strings.
interface PageElement {
  textContent: string | null;
  dataset: Record<string, string | undefined>;
  getAttribute(name: string): string | null;
}
interface PageCanvas extends PageElement {
  width: number;
  height: number;
  getContext(kind: '2d'): {
    getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray };
  } | null;
}
declare const document: {
  body: PageElement;
  documentElement: { scrollWidth: number };
  getElementById(id: string): PageElement | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement>;
};
declare const window: { innerWidth: number };
declare function getComputedStyle(e: PageElement): { gridTemplateColumns: string };

/** Writes NDJSON entries and reads them back through a subscription until stopped. */
function trafficTo(base: string): { stop: () => Promise<void> } {
  let running = true;
  const entry = JSON.stringify({ event: 'click', pad: 'x'.repeat(1000) });
  const body = `${entry}\n`.repeat(50);
  const writer = (async () => {
    while (running) {
      const res = await fetch(`${base}/v1/queues/demo/entries`, {
        method: 'POST',
        headers: { ...auth, 'Content-Type': 'application/x-ndjson' },
        body,
      });
      assert.equal(res.status, 201, await res.text());
    }
  })();
  const reader = (async () => {
    while (running) {
      const res = await fetch(
        `${base}/v1/queues/demo/subscriptions/dashboard-test/entries?max=100&waitMs=200`,
        { headers: auth },
      );
      if (res.status === 404) {
        await res.body?.cancel();
        continue; // the queue is created by the first write
      }
      const lines = (await res.text()).split('\n').filter((l) => l !== '');
      const last = lines.at(-1);
      if (last === undefined) continue;
      const { position } = JSON.parse(last) as { position: unknown };
      const ack = await fetch(`${base}/v1/queues/demo/subscriptions/dashboard-test/ack`, {
        method: 'POST',
        headers: { ...auth, 'Content-Type': 'application/json' },
        body: JSON.stringify({ position }),
      });
      assert.equal(ack.status, 200, await ack.text());
    }
  })();
  return {
    stop: async () => {
      running = false;
      await Promise.all([writer, reader]);
    },
  };
}

test(
  'the dashboard in chromium: login, numbers that move, charts that draw, a phone layout',
  {
    skip: SKIP && !existsSync(CHROMIUM) ? 'SPILLWAY_SKIP_BROWSER=1 and no chromium' : false,
    timeout: 120_000,
  },
  async () => {
    assert.ok(
      existsSync(CHROMIUM),
      `chromium is not installed at ${CHROMIUM}: run "bash scripts/chromium.sh install" (apt-get install -y chromium), point SPILLWAY_CHROMIUM at a Chromium, or set SPILLWAY_SKIP_BROWSER=1 to skip this test`,
    );
    const { chromium } = await import('playwright-core');
    const dir = await mkdtemp(join(tmpdir(), 'spillway-dashboard-'));
    let server: SpillwayServer | undefined;
    let traffic: { stop: () => Promise<void> } | undefined;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    try {
      server = await startServer({
        store: `file://${dir}`,
        port: 0,
        tokens: [TOKEN],
        createQueues: true,
        dashboard: { sampleIntervalMs: 250, statsIntervalMs: 1000 },
      });
      const base = server.url;
      traffic = trafficTo(base);
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const problems: string[] = [];
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error') problems.push(`console: ${m.text()}`);
      });
      page.on('request', (r) => {
        if (!r.url().startsWith(base)) problems.push(`request to another origin: ${r.url()}`);
      });

      // Not logged in: the login form, which comes back to the page.
      await page.goto(`${base}/`);
      assert.match(page.url(), /\/login\?next=%2F$/);
      await page.fill('#token', TOKEN);
      await Promise.all([page.waitForURL(`${base}/`), page.click('button[type=submit]')]);

      // Numbers that move: entries per second above zero, several samples in.
      await page.waitForFunction(
        () =>
          Number(document.body.dataset.samples ?? 0) >= 4 &&
          Number(document.body.dataset.entriesIn ?? 0) > 0 &&
          document.getElementById('status')?.dataset.state === 'live',
        undefined,
        { timeout: 30_000 },
      );
      const first = await page.textContent('#kpi-entries-in');
      assert.ok(first !== null && first !== '–', `entries/s shows a number, got ${first}`);
      // The depth, lag and cost come from the queue's stats and the request counts.
      await page.waitForFunction(
        () =>
          [...document.querySelectorAll('#queues tbody td')].some(
            (td) => td.textContent === 'demo',
          ) &&
          [...document.querySelectorAll('#subscriptions tbody td')].some(
            (td) => td.textContent === 'dashboard-test',
          ) &&
          document.getElementById('kpi-cost-per-gb')?.textContent?.startsWith('$') === true,
        undefined,
        { timeout: 30_000 },
      );

      // Charts that draw: points plotted, and pixels painted on every chart with data.
      const charts = ['entries', 'bytes', 'latency', 'batches', 'requests', 'cost'];
      await page.waitForFunction(
        (ids) =>
          ids.every(
            (id) =>
              Number(document.getElementById(`chart-${id}`)?.getAttribute('data-points') ?? 0) >= 2,
          ),
        charts,
        { timeout: 30_000 },
      );
      const painted = await page.evaluate((ids) => {
        const out: Record<string, number> = {};
        for (const id of ids) {
          const canvas = document.getElementById(`chart-${id}`) as PageCanvas;
          const data = canvas
            .getContext('2d')
            ?.getImageData(0, 0, canvas.width, canvas.height).data;
          let n = 0;
          for (let i = 3; i < (data?.length ?? 0); i += 4) if ((data?.[i] ?? 0) > 0) n++;
          out[id] = n;
        }
        return out;
      }, charts);
      for (const id of charts) {
        assert.ok((painted[id] ?? 0) > 500, `chart ${id} painted only ${painted[id]} pixels`);
      }
      // The legends and the prices say what the lines are.
      assert.match((await page.textContent('#legend-entries')) ?? '', /in .*out/);
      assert.match((await page.textContent('#prices')) ?? '', /\$0\.005 per 1,000 PUT\/LIST/);

      await mkdir(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });

      // A phone: one column, nothing wider than the screen.
      await page.setViewportSize({ width: 390, height: 844 });
      await page.waitForFunction(() => document.documentElement.scrollWidth <= window.innerWidth);
      const columns = await page.evaluate(
        () =>
          getComputedStyle(
            document.querySelector('.grid') as PageElement,
          ).gridTemplateColumns.split(' ').length,
      );
      assert.equal(columns, 1, 'the charts stack on a phone');
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-phone.png'), fullPage: true });

      assert.deepEqual(problems, [], 'no script error, no CSP violation, nothing from elsewhere');
      await page.close();
    } finally {
      await browser.close();
      await traffic?.stop().catch(() => undefined);
      await server?.close({ timeoutMs: 10_000 });
      await rm(dir, { recursive: true, force: true });
    }
  },
);

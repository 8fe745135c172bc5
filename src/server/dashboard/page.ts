/**
 * The dashboard's page: plain HTML that loads one stylesheet and one
 * script from this server (no build step, nothing from elsewhere).
 */

/** Paths the assets are served at. */
export const DASHBOARD_SCRIPT_PATH = '/dashboard/app.js';
export const DASHBOARD_STYLE_PATH = '/dashboard/app.css';

/** One chart card: a canvas and a legend the script fills. */
function chart(id: string, title: string, note: string): string {
  return `<section class="card chart" id="card-${id}">
  <h2>${title}</h2>
  <p class="note">${note}</p>
  <canvas id="chart-${id}" data-chart="${id}" role="img" aria-label="${title}"></canvas>
  <ul class="legend" id="legend-${id}"></ul>
</section>`;
}

/** One headline figure. */
function tile(id: string, label: string): string {
  return `<div class="tile"><span class="label">${label}</span><span class="value" id="kpi-${id}" data-kpi="${id}">–</span></div>`;
}

/** The whole page. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spillway dashboard</title>
<link rel="stylesheet" href="${DASHBOARD_STYLE_PATH}">
<script src="${DASHBOARD_SCRIPT_PATH}" defer></script>
</head>
<body>
<header>
  <h1>Spillway</h1>
  <span id="status" class="status" data-state="connecting">connecting…</span>
</header>
<main>
<section class="tiles" aria-label="Now">
${tile('entries-in', 'entries/s in')}
${tile('entries-out', 'entries/s out')}
${tile('bytes-in', 'bytes/s in')}
${tile('depth', 'pending')}
${tile('p99', 'durable p99')}
${tile('requests', 'store requests/s')}
${tile('requests-per-gb', 'requests per GB')}
${tile('cost-per-gb', 'cost per GB')}
</section>
<div class="grid">
${chart('entries', 'Entries per second', 'in: made durable; out: acknowledged by consumers and sent to HTTP readers')}
${chart('bytes', 'Bytes per second', 'in: entry bytes made durable; out: bytes read from the store')}
${chart('depth', 'Queue depth', 'bytes pending per queue (from its stats, every few seconds)')}
${chart('lag', 'Consumer lag', 'entries not yet acknowledged, per subscription')}
${chart('latency', 'Durable latency', 'a batch sealed to its append durable, p50 and p99 over 30 s, ms')}
${chart('batches', 'Batch size', 'entries per batch, mean over 30 s')}
${chart('requests', 'Store requests per second', 'by operation kind, as S3 bills them')}
${chart('collector', 'Collector', 'objects deleted per second')}
${chart('cost', 'Cost per GB written', 'requests per GB and their cost at the prices below, over 30 s')}
</div>
<section class="card">
  <h2>Queues</h2>
  <div class="scroll"><table id="queues">
    <thead><tr><th>queue</th><th>layout</th><th>batches pending</th><th>bytes pending</th><th>oldest entry</th><th>stored</th></tr></thead>
    <tbody></tbody>
  </table></div>
  <h2>Subscriptions</h2>
  <div class="scroll"><table id="subscriptions">
    <thead><tr><th>queue</th><th>subscription</th><th>lag entries</th><th>lag bytes</th><th>oldest unacknowledged</th></tr></thead>
    <tbody></tbody>
  </table></div>
</section>
<section class="card">
  <h2>Costs</h2>
  <p id="prices" class="note">–</p>
  <p id="totals" class="note">–</p>
</section>
</main>
<footer><a href="/metrics">/metrics</a> · <a href="/v1/openapi.json">API</a> · <a href="/v1/dashboard/data">JSON</a></footer>
</body>
</html>
`;

/**
 * The dashboard's script: plain browser JavaScript, no build step. It
 * listens to `GET /v1/dashboard/events` (the session cookie authenticates
 * it), keeps the last samples, and draws each chart on its canvas with the
 * small line-chart routine below.
 */
export const DASHBOARD_JS = String.raw`'use strict';
(function () {
  var MAX_SAMPLES = 300;
  var COLORS = ['#2563eb', '#f97316', '#16a34a', '#dc2626', '#9333ea', '#0891b2', '#ca8a04', '#db2777'];
  var OPS = ['put', 'get', 'head', 'list', 'delete'];
  var samples = [];
  var settings = null;

  function $(id) { return document.getElementById(id); }

  function num(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
    if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
    if (a >= 100 || digits === 0) return Math.round(v).toLocaleString('en-US');
    return v.toFixed(digits === undefined ? 1 : digits);
  }
  function bytes(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    var units = ['B', 'KB', 'MB', 'GB', 'TB'];
    var i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (i === 0 || Math.abs(v) >= 100 ? Math.round(v) : v.toFixed(1)) + ' ' + units[i];
  }
  function ms(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    if (v >= 60000) return (v / 60000).toFixed(1) + ' min';
    if (v >= 1000) return (v / 1000).toFixed(1) + ' s';
    return v.toFixed(v < 10 ? 1 : 0) + ' ms';
  }
  function usd(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    if (v === 0) return '$0';
    return '$' + (v >= 1 ? v.toFixed(2) : v >= 0.01 ? v.toFixed(3) : v.toPrecision(2));
  }

  /** A y-axis top at or above max: 1, 2 or 5 times a power of ten. */
  function niceMax(max) {
    if (!(max > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(max)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= max) return steps[i] * p;
    return 10 * p;
  }

  /**
   * Draws series (each { label, values: [[t, v]], color }) on a canvas as
   * lines over the time span of the samples, with a y grid labelled by fmt.
   * Returns the number of points drawn (kept on the canvas for tests).
   */
  function drawChart(canvas, series, fmt) {
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth, h = canvas.clientHeight;
    if (w === 0 || h === 0) return 0;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    var ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var style = getComputedStyle(document.body);
    var text = style.color;
    var left = 62, right = 8, top = 8, bottom = 18;
    var t0 = Infinity, t1 = -Infinity, max = 0;
    series.forEach(function (s) {
      s.values.forEach(function (p) {
        if (p[1] === null || !isFinite(p[1])) return;
        t0 = Math.min(t0, p[0]); t1 = Math.max(t1, p[0]); max = Math.max(max, p[1]);
      });
    });
    var top_ = niceMax(max);
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (var g = 0; g <= 4; g++) {
      var y = top + ((h - top - bottom) * g) / 4;
      ctx.strokeStyle = 'rgba(128,128,128,0.25)';
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w - right, y); ctx.stroke();
      ctx.fillStyle = text;
      ctx.fillText(fmt(top_ * (1 - g / 4)), left - 6, y);
    }
    if (!(t1 > t0)) { t1 = t0 + 1; }
    ctx.textAlign = 'left'; ctx.textBaseline = 'alphabetic';
    ctx.fillText(isFinite(t0) ? Math.round((t1 - t0) / 1000) + ' s' : 'waiting for data', left, h - 4);
    var drawn = 0;
    series.forEach(function (s) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      var pen = false;
      s.values.forEach(function (p) {
        if (p[1] === null || !isFinite(p[1])) { pen = false; return; }
        var x = left + ((w - left - right) * (p[0] - t0)) / (t1 - t0);
        var y = top + (h - top - bottom) * (1 - p[1] / top_);
        if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        pen = true;
        drawn++;
      });
      ctx.stroke();
    });
    canvas.setAttribute('data-points', String(drawn));
    return drawn;
  }

  function legend(id, series, fmt) {
    var ul = $('legend-' + id);
    ul.textContent = '';
    series.forEach(function (s) {
      var last = null;
      for (var i = s.values.length - 1; i >= 0; i--) if (s.values[i][1] !== null) { last = s.values[i][1]; break; }
      var li = document.createElement('li');
      var sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = s.color;
      var b = document.createElement('b');
      b.textContent = fmt(last);
      li.appendChild(sw);
      li.appendChild(document.createTextNode(s.label + ' '));
      li.appendChild(b);
      ul.appendChild(li);
    });
  }

  function line(label, pick, i) {
    return {
      label: label,
      color: COLORS[i % COLORS.length],
      values: samples.map(function (s) { var v = pick(s); return [s.t, v === undefined ? null : v]; }),
    };
  }

  function chart(id, series, fmt) {
    drawChart($('chart-' + id), series, fmt);
    legend(id, series, fmt);
  }

  /** Series of one value per queue (or subscription) found in any sample. */
  function perKey(keysOf, valueOf) {
    var keys = [];
    samples.forEach(function (s) {
      keysOf(s).forEach(function (k) { if (keys.indexOf(k) < 0) keys.push(k); });
    });
    return keys.slice(0, 8).map(function (k, i) {
      return line(k, function (s) { return valueOf(s, k); }, i);
    });
  }

  function findQueue(s, name) {
    for (var i = 0; i < s.queues.length; i++) if (s.queues[i].name === name) return s.queues[i];
    return null;
  }

  function cell(tr, text) {
    var td = document.createElement('td');
    td.textContent = text;
    tr.appendChild(td);
  }

  function tables(last) {
    var qb = document.querySelector('#queues tbody');
    var sb = document.querySelector('#subscriptions tbody');
    qb.textContent = '';
    sb.textContent = '';
    last.queues.forEach(function (q) {
      var tr = document.createElement('tr');
      cell(tr, q.name);
      cell(tr, q.error ? 'error: ' + q.error : q.layout || '');
      cell(tr, num(q.batchesPending, 0));
      cell(tr, bytes(q.bytesPending));
      cell(tr, ms(q.oldestEntryAgeMs));
      cell(tr, bytes(q.storedBytes));
      qb.appendChild(tr);
      q.subscriptions.forEach(function (sub) {
        var r = document.createElement('tr');
        cell(r, q.name);
        cell(r, sub.name);
        cell(r, num(sub.lagEntries, 0));
        cell(r, bytes(sub.lagBytes));
        cell(r, ms(sub.oldestUnackedAgeMs));
        sb.appendChild(r);
      });
    });
  }

  function render() {
    if (samples.length === 0) return;
    var last = samples[samples.length - 1];
    var pending = last.queues.reduce(function (n, q) { return n + (q.bytesPending || 0); }, 0);
    var requests = OPS.reduce(function (n, op) { return n + last.requestsPerS[op]; }, 0);
    $('kpi-entries-in').textContent = num(last.entriesInPerS, 0);
    $('kpi-entries-out').textContent = num(last.entriesOutPerS, 0);
    $('kpi-bytes-in').textContent = bytes(last.bytesInPerS) + '/s';
    $('kpi-depth').textContent = bytes(pending);
    $('kpi-p99').textContent = ms(last.durableP99Ms);
    $('kpi-requests').textContent = num(requests, 0);
    $('kpi-requests-per-gb').textContent = num(last.requestsPerGb, 0);
    $('kpi-cost-per-gb').textContent = usd(last.costPerGb);
    document.body.setAttribute('data-samples', String(samples.length));
    document.body.setAttribute('data-entries-in', String(last.entriesInPerS));

    chart('entries', [
      line('in', function (s) { return s.entriesInPerS; }, 0),
      line('out', function (s) { return s.entriesOutPerS; }, 1),
    ], function (v) { return num(v, 0); });
    chart('bytes', [
      line('in', function (s) { return s.bytesInPerS; }, 0),
      line('out', function (s) { return s.bytesOutPerS; }, 1),
    ], bytes);
    chart('depth', perKey(
      function (s) { return s.queues.map(function (q) { return q.name; }); },
      function (s, k) { var q = findQueue(s, k); return q && q.bytesPending !== undefined ? q.bytesPending : null; }
    ), bytes);
    chart('lag', perKey(
      function (s) {
        var out = [];
        s.queues.forEach(function (q) { q.subscriptions.forEach(function (sub) { out.push(q.name + '/' + sub.name); }); });
        return out;
      },
      function (s, k) {
        var slash = k.indexOf('/');
        var q = findQueue(s, k.slice(0, slash));
        if (!q) return null;
        for (var i = 0; i < q.subscriptions.length; i++) if (q.subscriptions[i].name === k.slice(slash + 1)) return q.subscriptions[i].lagEntries;
        return null;
      }
    ), function (v) { return num(v, 0); });
    chart('latency', [
      line('p50', function (s) { return s.durableP50Ms; }, 0),
      line('p99', function (s) { return s.durableP99Ms; }, 1),
    ], ms);
    chart('batches', [line('entries per batch', function (s) { return s.entriesPerBatch; }, 2)], function (v) { return num(v, 0); });
    chart('requests', OPS.map(function (op, i) {
      return line(op, function (s) { return s.requestsPerS[op]; }, i);
    }).concat(settings && settings.maxRequestsPerSecond ? [line('throttled', function (s) { return s.throttledPerS; }, 5)] : []), function (v) { return num(v, 0); });
    chart('collector', [line('objects deleted/s', function (s) { return s.gcObjectsPerS; }, 2)], function (v) { return num(v, 1); });
    chart('cost', [line('requests per GB', function (s) { return s.requestsPerGb; }, 0)], function (v) { return num(v, 0); });
    var legendCost = $('legend-cost');
    var li = document.createElement('li');
    li.textContent = 'cost per GB ' + usd(last.costPerGb) + ' · storage ' + usd(last.storageCostPerMonth) + '/month';
    legendCost.appendChild(li);

    tables(last);
    var t = last.totals;
    $('totals').textContent = 'Since the server started: ' + num(t.entriesIn, 0) + ' entries (' + bytes(t.bytesIn) +
      ') in, ' + num(t.entriesOut, 0) + ' out, ' + num(t.requests, 0) + ' store requests, ' +
      num(t.gcObjects, 0) + ' objects collected, ' + num(last.gcPasses, 0) + ' collection passes.';
  }

  function showSettings() {
    var p = settings.prices;
    $('prices').textContent = 'Prices (USD): $' + p.perThousandPuts + ' per 1,000 PUT/LIST, $' + p.perThousandGets +
      ' per 1,000 GET/HEAD, $' + p.perGbMonth + ' per GB-month stored (DELETE free). Change them with --price-per-1k-puts, --price-per-1k-gets, --price-per-gb-month.' +
      (settings.maxRequestsPerSecond ? ' Store requests capped at ' + settings.maxRequestsPerSecond + '/s.' : '');
  }

  function status(state, text) {
    var el = $('status');
    el.setAttribute('data-state', state);
    el.textContent = text;
  }

  var scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(function () { scheduled = false; render(); });
  }

  function connect() {
    var source = new EventSource('/v1/dashboard/events');
    source.addEventListener('snapshot', function (e) {
      var snap = JSON.parse(e.data);
      settings = snap;
      samples = snap.samples.slice(-MAX_SAMPLES);
      showSettings();
      status('live', 'live');
      schedule();
    });
    source.addEventListener('sample', function (e) {
      samples.push(JSON.parse(e.data));
      if (samples.length > MAX_SAMPLES) samples.shift();
      status('live', 'live');
      schedule();
    });
    source.onerror = function () {
      status('error', 'disconnected, retrying…');
      // A closed stream (the session gone, or the server restarted) is opened again;
      // when the session is gone, the login page is where to go.
      if (source.readyState === EventSource.CLOSED) {
        fetch('/v1/dashboard/data', { credentials: 'same-origin' }).then(function (r) {
          if (r.status === 401) location.href = '/login?next=' + encodeURIComponent('/');
          else setTimeout(connect, 2000);
        }, function () { setTimeout(connect, 2000); });
      }
    };
  }

  window.addEventListener('resize', schedule);
  connect();
})();
`;

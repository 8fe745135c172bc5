/**
 * PrometheusMetrics: the text exposition format 0.0.4, parsed back; every
 * registry metric listed; labels escaped; histograms cumulative; fed by a
 * real producer.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryStore, Producer } from '../../src/index.ts';
import { escapeLabelValue, PrometheusMetrics } from '../../src/metrics/prometheus.ts';
import { METRICS } from '../../src/metrics/registry.ts';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Parsed {
  help: Map<string, string>;
  type: Map<string, string>;
  samples: Sample[];
}

/** A strict parser of the text format: every line is a comment we know or a sample. */
function parse(text: string): Parsed {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a line feed');
  const out: Parsed = { help: new Map(), type: new Map(), samples: [] };
  for (const line of text.slice(0, -1).split('\n')) {
    let m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      assert.ok(!out.help.has(m[1] as string), `HELP twice for ${m[1]}`);
      out.help.set(m[1] as string, (m[2] as string).replace(/\\n/g, '\n').replace(/\\\\/g, '\\'));
      continue;
    }
    m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (m) {
      out.type.set(m[1] as string, m[2] as string);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    assert.ok(m, `not a valid line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      const body = m[2].slice(1, -1);
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy;
      let at = 0;
      let l: RegExpExecArray | null;
      while (at < body.length && (l = re.exec(body))) {
        labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) =>
          c === 'n' ? '\n' : c,
        );
        at = re.lastIndex;
      }
      assert.equal(at, body.length, `bad labels in ${line}`);
    }
    const raw = m[3] as string;
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
    assert.ok(!Number.isNaN(value) || raw === 'NaN', `bad value in ${line}`);
    out.samples.push({ name: m[1] as string, labels, value });
  }
  return out;
}

describe('PrometheusMetrics', () => {
  test('every registry metric is listed with HELP and TYPE, even before a sample', () => {
    const metrics = new PrometheusMetrics({ processMetrics: false });
    const parsed = parse(metrics.exposition());
    for (const m of METRICS) {
      assert.equal(parsed.type.get(m.prometheusName), m.type, m.prometheusName);
      assert.equal(parsed.help.get(m.prometheusName), m.help);
    }
    assert.equal(parsed.samples.length, 0);
  });

  test('counters, gauges and histograms come out as the format wants them', () => {
    const metrics = new PrometheusMetrics({ processMetrics: false, labels: { instance: 'a' } });
    metrics.increment('buffer.batches_flushed');
    metrics.increment('buffer.batches_flushed', 2);
    metrics.increment('buffer.manifest_writes', 1, { role: 'producer' });
    metrics.increment('buffer.manifest_writes', 1, { role: 'consumer' });
    metrics.gauge('buffer.queue_length', 7);
    metrics.gauge('buffer.queue_length', 3);
    for (const v of [0.002, 0.02, 0.02, 3, 1000])
      metrics.observe('buffer.flush_duration_seconds', v);
    const p = parse(metrics.exposition());
    const get = (name: string, labels: Record<string, string> = {}): number | undefined =>
      p.samples.find(
        (s) =>
          s.name === name &&
          JSON.stringify(s.labels) === JSON.stringify({ instance: 'a', ...labels }),
      )?.value;
    assert.equal(get('spillway_buffer_batches_flushed_total'), 3);
    assert.equal(get('spillway_buffer_manifest_writes_total', { role: 'producer' }), 1);
    assert.equal(get('spillway_buffer_manifest_writes_total', { role: 'consumer' }), 1);
    assert.equal(get('spillway_buffer_queue_length'), 3);
    const buckets = p.samples.filter(
      (s) => s.name === 'spillway_buffer_flush_duration_seconds_bucket',
    );
    const le = (b: string): number | undefined => buckets.find((s) => s.labels.le === b)?.value;
    assert.equal(le('0.001'), 0);
    assert.equal(le('0.0025'), 1);
    assert.equal(le('0.025'), 3);
    assert.equal(le('5'), 4);
    assert.equal(le('60'), 4);
    assert.equal(le('+Inf'), 5);
    for (let i = 1; i < buckets.length; i++) {
      assert.ok((buckets[i]?.value as number) >= (buckets[i - 1]?.value as number), 'cumulative');
    }
    assert.equal(get('spillway_buffer_flush_duration_seconds_count'), 5);
    assert.ok(
      Math.abs((get('spillway_buffer_flush_duration_seconds_sum') as number) - 1003.042) < 1e-9,
    );
    assert.equal(metrics.value('buffer.batches_flushed'), 3);
  });

  test('label values are escaped and label names made valid', () => {
    const metrics = new PrometheusMetrics({ processMetrics: false });
    const nasty = 'a"b\\c\nd}e,f="g"';
    metrics.increment('buffer.acks', 1, { subscription: nasty, 'bad-name': 'x', '0lead': 'y' });
    const text = metrics.exposition();
    assert.ok(text.includes(`subscription="${escapeLabelValue(nasty)}"`));
    assert.equal(escapeLabelValue(nasty), 'a\\"b\\\\c\\nd}e,f=\\"g\\"');
    const s = parse(text).samples.find((x) => x.name === 'spillway_buffer_acks_total');
    assert.deepEqual(s?.labels, { _0lead: 'y', bad_name: 'x', subscription: nasty });
  });

  test('withLabels adds a queue label; names outside the registry are kept; bad values are ignored, never thrown', () => {
    const metrics = new PrometheusMetrics({ processMetrics: false });
    const orders = metrics.withLabels({ queue: 'orders' });
    orders.increment('buffer.entries_flushed', 5);
    orders.increment('buffer.manifest_conflicts', 1, { role: 'producer' });
    orders.increment('future.widgets');
    orders.increment('buffer.entries_flushed', Number.NaN);
    orders.increment('buffer.entries_flushed', -1);
    orders.observe('buffer.entries_flushed', 1); // the wrong type: ignored
    orders.gauge('buffer.queue_length', Infinity);
    const p = parse(metrics.exposition());
    assert.deepEqual(
      p.samples.filter((s) => s.name.startsWith('spillway_buffer_entries_flushed')),
      [{ name: 'spillway_buffer_entries_flushed_total', labels: { queue: 'orders' }, value: 5 }],
    );
    assert.deepEqual(
      p.samples.find((s) => s.name === 'spillway_buffer_manifest_conflicts_total')?.labels,
      { queue: 'orders', role: 'producer' },
    );
    assert.equal(p.type.get('spillway_future_widgets_total'), 'counter');
    assert.match(p.help.get('spillway_future_widgets_total') ?? '', /not in the registry/);
    assert.equal(
      p.samples.some((s) => s.name === 'spillway_buffer_queue_length'),
      false,
    );
  });

  test('process metrics are included and the measurement stops at close', () => {
    const metrics = new PrometheusMetrics();
    try {
      const p = parse(metrics.exposition());
      for (const name of [
        'process_cpu_seconds_total',
        'process_resident_memory_bytes',
        'process_start_time_seconds',
        'nodejs_heap_size_used_bytes',
        'nodejs_eventloop_lag_seconds',
      ]) {
        const s = p.samples.find((x) => x.name === name);
        assert.ok(s && Number.isFinite(s.value) && s.value >= 0, name);
        assert.ok(p.help.has(name) && p.type.has(name), name);
      }
      const start = p.samples.find((x) => x.name === 'process_start_time_seconds')?.value as number;
      assert.ok(Math.abs(start - (Date.now() / 1000 - process.uptime())) < 5);
    } finally {
      metrics.close();
      metrics.close();
    }
  });

  test('a producer given it reports its flushes under the queue label', async () => {
    const metrics = new PrometheusMetrics({ processMetrics: false });
    const name = `prom-${process.pid}-${Date.now()}`;
    const producer = new Producer({
      store: new MemoryStore(name),
      flushIntervalMs: 0,
      metrics: metrics.withLabels({ queue: 'ingest' }),
    });
    try {
      await (
        await producer.produce([new Uint8Array(10), new Uint8Array(20)])
      ).durable;
      await producer.close();
      const p = parse(metrics.exposition());
      const value = (n: string, labels: Record<string, string>): number | undefined =>
        p.samples.find((s) => s.name === n && JSON.stringify(s.labels) === JSON.stringify(labels))
          ?.value;
      assert.equal(value('spillway_buffer_entries_flushed_total', { queue: 'ingest' }), 2);
      assert.equal(value('spillway_buffer_flushed_bytes_total', { queue: 'ingest' }), 30);
      assert.equal(value('spillway_buffer_flush_duration_seconds_count', { queue: 'ingest' }), 1);
      assert.equal(
        value('spillway_buffer_manifest_writes_total', { queue: 'ingest', role: 'producer' }),
        1,
      );
    } finally {
      MemoryStore.drop(name);
    }
  });
});

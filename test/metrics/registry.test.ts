/**
 * The metric registry is complete and well-formed: every metric name the
 * source emits is in it, with a valid Prometheus name of the right shape.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { METRICS, metricDefinition, prometheusName } from '../../src/metrics/registry.ts';

const SRC = new URL('../../src/', import.meta.url).pathname;

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sourceFiles(path)));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

test('every metric the source emits is in the registry, with the type it is emitted as', async () => {
  const emitted = new Map<string, Set<string>>();
  const call = /metrics\??\.(increment|observe|gauge)\(\s*['"`]([a-z_.]+)['"`]/g;
  for (const file of await sourceFiles(SRC)) {
    const text = await readFile(file, 'utf8');
    for (const m of text.matchAll(call)) {
      const [, method, name] = m as unknown as [string, string, string];
      const set = emitted.get(name) ?? new Set();
      set.add(method);
      emitted.set(name, set);
    }
  }
  assert.ok(emitted.size >= 30, `found only ${emitted.size} metric names in src/`);
  const type = { increment: 'counter', observe: 'histogram', gauge: 'gauge' } as const;
  for (const [name, methods] of emitted) {
    const def = metricDefinition(name);
    assert.ok(def, `${name} is emitted but not in src/metrics/registry.ts`);
    for (const m of methods) {
      assert.equal(def.type, type[m as keyof typeof type], `${name} is emitted with ${m}`);
    }
  }
});

test('registry entries are unique and follow the Prometheus naming conventions', () => {
  const names = new Set<string>();
  const promNames = new Set<string>();
  for (const m of METRICS) {
    assert.ok(!names.has(m.name), `${m.name} twice`);
    assert.ok(!promNames.has(m.prometheusName), `${m.prometheusName} twice`);
    names.add(m.name);
    promNames.add(m.prometheusName);
    assert.match(m.prometheusName, /^spillway_[a-z0-9_]+$/);
    assert.ok(m.help.length > 10 && m.help.endsWith('.'), `${m.name}: help "${m.help}"`);
    if (m.type === 'counter') assert.ok(m.prometheusName.endsWith('_total'), m.prometheusName);
    else assert.ok(!m.prometheusName.endsWith('_total'), m.prometheusName);
    if (m.unit === 'seconds') assert.ok(m.prometheusName.endsWith('_seconds'), m.prometheusName);
    if (m.unit === 'bytes') assert.match(m.prometheusName, /_bytes(_total)?$/);
    if (m.type === 'histogram') {
      const b = m.buckets ?? [];
      assert.ok(b.length > 3, `${m.name}: buckets`);
      for (let i = 1; i < b.length; i++) assert.ok((b[i] as number) > (b[i - 1] as number));
    } else {
      assert.equal(m.buckets, undefined);
    }
  }
  assert.equal(
    prometheusName('buffer.batches_flushed', 'counter'),
    'spillway_buffer_batches_flushed_total',
  );
  assert.equal(prometheusName('new.thing-x', 'counter'), 'spillway_new_thing_x_total');
  assert.equal(prometheusName('new.level', 'gauge'), 'spillway_new_level');
});

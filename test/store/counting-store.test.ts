import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryStore } from '../../src/index.ts';
import { PrometheusMetrics } from '../../src/metrics/prometheus.ts';
import { CountingStore } from '../../src/store/counting-store.ts';
import { FaultInjectingStore } from '../../src/testing.ts';
import { uniqueName } from '../support/servers.ts';
import { describeStoreConformance } from './conformance.ts';

describeStoreConformance({
  name: 'counting over memory',
  exactConflicts: true,
  open: async () => {
    const name = uniqueName('counted');
    return {
      store: new CountingStore(new MemoryStore(name), {
        metrics: new PrometheusMetrics({ processMetrics: false }),
      }),
      cleanup: async () => MemoryStore.drop(name),
    };
  },
});

test('requests are counted by operation kind, as spillway_store_requests_total{op}', async () => {
  const metrics = new PrometheusMetrics({ processMetrics: false });
  const store = new CountingStore(new MemoryStore(), { metrics });
  const body = new Uint8Array(100);
  for (let i = 0; i < 1500; i++) await store.put(`k/${String(i).padStart(4, '0')}`, body);
  await store.get('k/0000');
  await store.get('k/0001', { range: { offset: 0, length: 10 } });
  await store.head('k/0002');
  await assert.rejects(store.head('missing'), { code: 'NOT_FOUND' });
  let n = 0;
  for await (const _ of store.list('k/')) n++;
  assert.equal(n, 1500);
  await store.delete('k/0000');
  await store.deleteMany([]);
  await store.deleteMany(Array.from({ length: 1001 }, (_, i) => `k/${String(i).padStart(4, '0')}`));
  const v = (op: string) => metrics.value('store.requests', { op });
  assert.equal(v('put'), 1500);
  assert.equal(v('get'), 2);
  assert.equal(v('head'), 2, 'a failed request is billed too');
  assert.equal(v('list'), 2, 'two pages');
  assert.equal(v('delete'), 1 + 2, 'an empty batch sends nothing; 1,001 keys are two requests');
  assert.equal(metrics.value('store.bytes_read'), 110);
  const text = metrics.exposition();
  assert.match(text, /^spillway_store_requests_total\{op="put"\} 1500$/m);
  assert.match(text, /^# TYPE spillway_store_requests_total counter$/m);
});

test('a failed call is counted once, however often the store below fails', async () => {
  const metrics = new PrometheusMetrics({ processMetrics: false });
  const faulty = new FaultInjectingStore(new MemoryStore());
  faulty.failNext('put', 1);
  const store = new CountingStore(faulty, { metrics, labels: { queue: 'q' } });
  await assert.rejects(store.put('k', new Uint8Array(1)));
  assert.equal(metrics.value('store.requests', { op: 'put', queue: 'q' }), 1);
});

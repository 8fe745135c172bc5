/**
 * /v1/openapi.json documents every route the app serves, and nothing else.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { testApp } from './helpers.ts';

test('the OpenAPI document lists exactly the routes the app registers, with their methods', async () => {
  const api = testApp();
  try {
    const res = await api.app.request('/v1/openapi.json');
    assert.equal(res.status, 200);
    const doc = (await res.json()) as {
      openapi: string;
      paths: Record<string, Record<string, unknown>>;
    };
    assert.equal(doc.openapi, '3.1.0');
    const registered = new Set<string>();
    for (const r of api.app.routes) {
      if (r.method === 'ALL') continue; // middleware
      registered.add(`${r.method.toLowerCase()} ${r.path.replace(/:([A-Za-z]+)/g, '{$1}')}`);
    }
    const documented = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of Object.keys(item)) {
        if (method !== 'parameters') documented.add(`${method} ${path}`);
      }
    }
    assert.deepEqual([...registered].sort(), [...documented].sort());
  } finally {
    await api.dispose();
  }
});

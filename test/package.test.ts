/**
 * The package's entry points, as a user imports them (the built `dist/`),
 * and the optional cloud SDKs.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadOptionalSdk } from '../src/store/optional-sdk.ts';

test('spillway, spillway/testing and spillway/internal resolve; test tools are not on the main entry', async () => {
  const main = (await import('spillway')) as Record<string, unknown>;
  const testing = (await import('spillway/testing')) as Record<string, unknown>;
  const internal = (await import('spillway/internal')) as Record<string, unknown>;
  for (const name of ['Producer', 'Consumer', 'GarbageCollector', 'Queue', 'openStore', 'hasCode'])
    assert.equal(typeof main[name], 'function', name);
  for (const name of ['FaultInjectingStore', 'ManualClock', 'checkInvariants', 'RetryingStore'])
    assert.equal(typeof testing[name], 'function', name);
  for (const name of ['encodeBatch', 'decodeManifest', 'ManifestQueue'])
    assert.equal(typeof internal[name], 'function', name);
  assert.equal(main.FaultInjectingStore, undefined);
  assert.equal(main.ManualClock, undefined);
});

test('spillway/server resolves, and the main entry does not load the HTTP framework', async () => {
  const server = (await import('spillway/server')) as Record<string, unknown>;
  for (const name of ['createApp', 'startServer'])
    assert.equal(typeof server[name], 'function', name);
  const main = (await import('spillway')) as Record<string, unknown>;
  assert.equal(main.createApp, undefined);
  assert.equal(typeof main.PrometheusMetrics, 'function');
});

test('a missing optional SDK is one error naming the package to install', async () => {
  const notInstalled = '@spillway-test/not-installed';
  await assert.rejects(
    loadOptionalSdk('@aws-sdk/client-s3', 's3', () => import(notInstalled)),
    (e: unknown) => {
      assert.equal((e as { code?: string }).code, 'DEPENDENCY_MISSING');
      assert.match(
        (e as Error).message,
        /^s3:\/\/ needs the package @aws-sdk\/client-s3, which is not installed: run `npm install @aws-sdk\/client-s3`$/,
      );
      return true;
    },
  );
});

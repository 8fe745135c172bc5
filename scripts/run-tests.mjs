#!/usr/bin/env node
// The whole test suite: starts the real servers (Ceph RGW for S3, Azurite for
// Azure), runs every test file with Node's test runner, and stops the servers.
// A server that cannot start is reported, and its suites fail saying why.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { startServer, stopServer } from './servers.mjs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const env = {
  ...process.env,
  // The AWS SDK must never go looking for instance credentials on the network.
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
};

function start(name, script) {
  const r = startServer(script, env);
  if (r.error) {
    console.error(`run-tests: ${name} did not start: ${r.error}`);
    env[`SPILLWAY_TEST_${name.toUpperCase()}_ERROR`] = r.error;
    return false;
  }
  Object.assign(env, r.env);
  console.error(`run-tests: ${name} started`);
  return true;
}

function testFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...testFiles(path));
    else if (name.endsWith('.test.ts')) out.push(path);
  }
  return out;
}

// The CLI tests spawn the built command, so build first.
const build = spawnSync(
  process.execPath,
  [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
  { cwd: root, stdio: 'inherit' },
);
if (build.status !== 0) {
  console.error('run-tests: the build failed');
  process.exit(1);
}

const files =
  process.argv.slice(2).length > 0 ? process.argv.slice(2) : testFiles(join(root, 'test'));
// The dashboard's browser test drives Debian's chromium: install it on first use, as
// rgw.sh installs Ceph (root on Debian); elsewhere the test says what to install.
if (
  !process.env.SPILLWAY_SKIP_BROWSER &&
  files.some((f) => f.includes('dashboard-browser')) &&
  spawnSync('bash', [join(root, 'scripts/chromium.sh'), 'install'], { stdio: 'inherit' }).status !==
    0
) {
  console.error('run-tests: chromium is not installed; the browser test will fail saying why');
}
const wantS3 = !process.env.SPILLWAY_TEST_S3_ENDPOINT;
const wantAzure = !process.env.AZURE_STORAGE_CONNECTION_STRING;
const started = [];
if (wantS3 && start('s3', 'rgw.sh')) started.push('rgw.sh');
if (wantAzure && start('azure', 'azurite.sh')) started.push('azurite.sh');

let code = 1;
try {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=600000', ...files],
    { stdio: 'inherit', env, cwd: root },
  );
  code = await new Promise((resolve) =>
    child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))),
  );
} finally {
  for (const script of started.reverse()) stopServer(script, env);
}
process.exit(code);

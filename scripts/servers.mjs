// Start and stop of the real servers (scripts/rgw.sh, scripts/azurite.sh), shared by
// the test runner, the soak mode and the benchmarks. A start script prints
// `export NAME=value` lines; they are returned as an object.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const scripts = new URL('.', import.meta.url).pathname;

/**
 * Runs `scripts/<script> start`. Returns `{ env }` with the variables it
 * exported, or `{ error }` with the last lines of its output.
 */
export function startServer(script, env = process.env) {
  const r = spawnSync('bash', [join(scripts, script), 'start'], { encoding: 'utf8', env });
  if (r.status !== 0) {
    const error = (r.stderr || r.stdout || `exit ${r.status}`)
      .trim()
      .split('\n')
      .slice(-3)
      .join(' | ');
    return { error };
  }
  const exported = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) exported[m[1]] = m[2].replace(/^'(.*)'$/, '$1');
  }
  return { env: exported };
}

/** Runs `scripts/<script> stop`. */
export function stopServer(script, env = process.env) {
  spawnSync('bash', [join(scripts, script), 'stop'], { stdio: 'inherit', env });
}

/**
 * Running the built `spillway` command as a user would: spawned with
 * arguments and stdin, its exit code and output collected.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

/** Path of the built command (`npm test` builds it first). */
export const bin = new URL('../../dist/cli/main.js', import.meta.url).pathname;

/** What one run of the command did. */
export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout as bytes, for binary output. */
  stdoutBytes: Buffer;
}

/** Runs `spillway <args>` with `input` on stdin. */
export function spillway(
  args: string[],
  input?: string | Buffer,
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: { ...process.env, ...options.env },
      ...(options.cwd ? { cwd: options.cwd } : {}),
    });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.stdin.on('error', () => undefined);
    child.on('close', (code) => {
      const stdoutBytes = Buffer.concat(out);
      resolve({ code, stdout: stdoutBytes.toString(), stderr, stdoutBytes });
    });
    child.stdin.end(input ?? '');
  });
}

/** Asserts exit 0 and returns the run. */
export function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return r;
}

/** Asserts exit 0 and parses stdout as JSON. */
export function json<T = Record<string, unknown>>(r: Run): T {
  return JSON.parse(ok(r).stdout) as T;
}

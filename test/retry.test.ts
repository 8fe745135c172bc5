import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InvalidArgumentError, RETRY_DEFAULTS, StorageError } from '../src/index.ts';
import { backoffMs, resolveRetryPolicy, retry } from '../src/retry.ts';
import { ManualClock } from '../src/testing.ts';

describe('retry policy', () => {
  test('defaults, validation naming the field, and unknown fields refused', () => {
    assert.deepEqual(resolveRetryPolicy(undefined), RETRY_DEFAULTS);
    assert.equal(resolveRetryPolicy({ maxAttempts: 2 }).maxAttempts, 2);
    assert.throws(
      () => resolveRetryPolicy({ maxAttempts: 0 }),
      /retry.maxAttempts must be an integer >= 1/,
    );
    assert.throws(() => resolveRetryPolicy({ deadlineMs: 1.5 }), InvalidArgumentError);
    assert.throws(() => resolveRetryPolicy({ retries: 3 } as never), /unknown field "retries"/);
  });

  test('backoff is full jitter below a doubling ceiling capped at maxDelayMs', () => {
    const p = { baseDelayMs: 10, maxDelayMs: 50 };
    assert.equal(
      backoffMs(1, p, () => 0.999),
      9,
    );
    assert.equal(
      backoffMs(2, p, () => 0.999),
      19,
    );
    assert.equal(
      backoffMs(10, p, () => 0.999),
      49,
    );
    assert.equal(
      backoffMs(1000, p, () => 0.5),
      25,
    );
    assert.equal(
      backoffMs(3, p, () => 0),
      0,
    );
  });

  test('retries only retriable errors, waits on the clock, and stops at maxAttempts', async () => {
    const clock = new ManualClock();
    const policy = resolveRetryPolicy({ maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 100 });
    let calls = 0;
    const transient = new StorageError('flaky', { retriable: true });
    const run = retry(
      async () => {
        calls++;
        throw transient;
      },
      { policy, clock },
    );
    run.catch(() => undefined);
    for (let i = 0; i < 5; i++) await clock.advance(100);
    await assert.rejects(run, /flaky/);
    assert.equal(calls, 3);
    let permanent = 0;
    await assert.rejects(
      retry(
        async () => {
          permanent++;
          throw new StorageError('no', { retriable: false });
        },
        { policy, clock },
      ),
      /no/,
    );
    assert.equal(permanent, 1);
  });

  test('an aborted signal stops the wait with its reason', async () => {
    const clock = new ManualClock();
    const controller = new AbortController();
    const run = retry(
      async () => {
        throw new StorageError('flaky', { retriable: true });
      },
      {
        policy: resolveRetryPolicy({ baseDelayMs: 1000, maxDelayMs: 1000 }),
        clock,
        signal: controller.signal,
      },
    );
    run.catch(() => undefined);
    controller.abort(new Error('stop'));
    await assert.rejects(run, /stop|flaky/);
  });
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sleep } from '../src/clock.ts';
import { ManualClock, skewedClock } from '../src/testing.ts';

test('a manual clock fires timers in due order as time advances, including timers set by callbacks', async () => {
  const clock = new ManualClock(0);
  const fired: string[] = [];
  clock.setTimeout(() => fired.push('b@20'), 20);
  const cancelled = clock.setTimeout(() => fired.push('never'), 15);
  clock.setTimeout(() => {
    fired.push('a@10');
    clock.setTimeout(() => fired.push('c@25'), 15);
  }, 10);
  clock.clearTimeout(cancelled);
  await clock.advance(9);
  assert.deepEqual(fired, []);
  await clock.advance(21);
  assert.deepEqual(fired, ['a@10', 'b@20', 'c@25']);
  assert.equal(clock.now(), 30);
  assert.equal(clock.pendingTimers, 0);
});

test('sleep waits on the given clock and rejects with the signal reason when aborted', async () => {
  const clock = new ManualClock(0);
  let done = false;
  const s = sleep(100, { clock }).then(() => (done = true));
  await clock.advance(99);
  assert.equal(done, false);
  await clock.advance(1);
  await s;
  assert.equal(done, true);
  const controller = new AbortController();
  const aborted = sleep(100, { clock, signal: controller.signal });
  controller.abort(new Error('stop'));
  await assert.rejects(aborted, /stop/);
  assert.equal(clock.pendingTimers, 0);
});

test('a skewed clock is offset from its base', () => {
  const base = new ManualClock(1000);
  assert.equal(skewedClock(-500, base).now(), 500);
});

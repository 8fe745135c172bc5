import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FencedError, hasCode, NotFoundError, StorageError, TimeoutError } from '../src/index.ts';

test('hasCode checks the code, whatever the class (errors that crossed a boundary keep their code)', () => {
  assert.equal(hasCode(new NotFoundError('k'), 'NOT_FOUND'), true);
  assert.equal(hasCode(new StorageError('x', { code: 'NO_SPACE' }), 'NO_SPACE'), true);
  assert.equal(hasCode(new FencedError('f'), 'NOT_FOUND'), false);
  assert.equal(hasCode({ code: 'FENCED', message: 'from a worker' }, 'FENCED'), true);
  assert.equal(hasCode(undefined, 'FENCED'), false);
  assert.equal(new TimeoutError('t').code, 'TIMEOUT');
});

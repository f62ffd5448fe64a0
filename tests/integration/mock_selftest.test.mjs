// tests/mock/selftest.sh as part of the suite: every dialect of bridle-mock,
// its faults, counters and provider batch APIs, checked with curl against
// $BUILD/bridle-mock (the ASan build in the sanitizer pass).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

import { BUILD, ROOT, SLOW } from './lib/harness.mjs';

test('tests/mock/selftest.sh passes against $BUILD/bridle-mock', () => {
  const r = spawnSync('bash', [path.join(ROOT, 'tests/mock/selftest.sh'), path.join(BUILD, 'bridle-mock')], {
    cwd: ROOT, encoding: 'utf8', timeout: 120000 * SLOW,
  });
  const last = r.stdout.trim().split('\n').at(-1);
  const failed = r.stdout.split('\n').filter((l) => l.startsWith('FAIL'));
  assert.deepEqual(failed, [], r.stderr.slice(-2000));
  assert.match(last, /^\d+ passed, 0 failed$/);
  assert.equal(r.status, 0);
});

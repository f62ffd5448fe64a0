// Timeouts per task and per route (issue 6): config "timeouts" gives a
// request a total deadline (every attempt and wait included, in place of
// limits.request_timeout_ms) and per-attempt connect / first-byte limits.
// The mock is made slow with latency_ms (the status line waits); the same
// slow mock answers a request whose task has no override.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { SLOW, get, mockConfig, mockFault, mockReset, mockStats, post, startBridle, startMock } from './lib/harness.mjs';

let mock;
let gw;
before(async () => {
  mock = await startMock();
  gw = await startBridle({
    config: mockConfig(mock.url, {
      // retries and breakers on: a request's own short limits must neither
      // escape the total nor open a breaker that other requests share
      resilience: { retries: true, breaker: true, breaker_failures: 2, backoff_base_ms: 20, backoff_cap_ms: 50 },
      timeouts: {
        default: { total_ms: 5000 },
        tasks: { classify: { total_ms: 300 }, extract: { first_byte_ms: 200 } },
        routes: { auto: { total_ms: 400 } },
      },
    }),
  });
});
after(async () => {
  await gw?.stop();
  await mock?.stop();
});

const slow = (ms, extra = {}) => ({
  model: 'gpt-4o-mini',
  messages: [{ role: 'user', content: `[[mock:latency_ms=${ms}]] Hello` }],
  ...extra,
});

async function timed(body, headers = {}) {
  const t0 = Date.now();
  const r = await post(`${gw.baseURL}/chat/completions`, body, { ...gw.auth, ...headers });
  return { ...r, ms: Date.now() - t0 };
}

async function breakerOf(model) {
  const r = await get(`${gw.baseURL}/bridle/health`, gw.auth);
  assert.equal(r.status, 200, r.text);
  return r.json.targets.find((t) => t.model === model).breaker;
}

describe('total timeout per task', () => {
  test('classify (total 300 ms) against a mock that takes 1 s → 504 request_timeout naming the setting', async () => {
    await mockReset(mock.url);
    const r = await timed(slow(1000), { 'x-bridle-task': 'classify' });
    assert.equal(r.status, 504, r.text);
    assert.equal(r.json.error.code, 'request_timeout');
    assert.equal(r.json.error.type, 'timeout_error');
    assert.match(r.json.error.message, /total timeout of 300 ms \(timeouts\.tasks\.classify\.total_ms\)/);
    assert.equal(r.headers['x-should-retry'], 'false');
    assert.ok(r.ms >= 290 && r.ms < 300 + 400 * SLOW, `answered after ${r.ms} ms`);
    const elapsed = Number(/(\d+) ms elapsed/.exec(r.json.error.message)[1]);
    assert.ok(elapsed >= 295 && elapsed < 300 + 300 * SLOW, `message says ${elapsed} ms`);
  });

  test('metadata.task works like the header', async () => {
    const r = await timed(slow(1000, { metadata: { task: 'classify' } }));
    assert.equal(r.status, 504, r.text);
    assert.equal(r.headers['x-should-retry'], 'false');
    assert.match(r.json.error.message, /timeouts\.tasks\.classify\.total_ms/);
  });

  test('a task without an override gets the default (5 s) and succeeds on the same slow mock', async () => {
    const r = await timed(slow(1000), { 'x-bridle-task': 'summarize' });
    assert.equal(r.status, 200, r.text);
    assert.ok(r.ms >= 1000, `answered after ${r.ms} ms`);
  });

  test('the total covers retries: a 503 then a slow attempt ends at 300 ms, attempts 2', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=503,latency_ms=150' });
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 5, directives: 'latency_ms=1000' });
    const r = await timed({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hello' }] }, { 'x-bridle-task': 'classify' });
    assert.equal(r.status, 504, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.equal(r.headers['x-should-retry'], 'false');
    assert.match(r.json.error.message, /over 2 attempts/);
    assert.ok(r.ms >= 290 && r.ms < 300 + 400 * SLOW, `answered after ${r.ms} ms`);
    assert.equal((await mockStats(mock.url)).by_model['gpt-4o-mini'], 2);
  });

  test('a stream still running at the total timeout ends with an error event naming it', async () => {
    await mockReset(mock.url);
    const r = await timed(
      {
        model: 'gpt-4o-mini',
        stream: true,
        messages: [{ role: 'user', content: '[[mock:trickle_ms=150]] Hello' }],
      },
      { 'x-bridle-task': 'classify' },
    );
    assert.equal(r.status, 200);
    assert.match(r.text, /"content":"Hello"/, 'the first pieces were relayed');
    assert.match(r.text, /"type":"timeout_error"/);
    assert.match(r.text, /total timeout of 300 ms \(timeouts\.tasks\.classify\.total_ms\) ran out mid-stream/);
    assert.ok(r.ms >= 290 && r.ms < 300 + 400 * SLOW, `ended after ${r.ms} ms`);
  });

  test('attempts cut by a request’s own deadline do not count against the breaker (it opens at 2)', async () => {
    // the 503 above counted; the attempt cut by the deadline after it, and
    // the stream cut by it, did not (a second failure would have opened it)
    const b = await breakerOf('gpt-4o-mini');
    assert.equal(b.state, 'closed', JSON.stringify(b));
    assert.equal(b.consecutive_failures, 1, JSON.stringify(b));
  });
});

describe('first-byte timeout per task', () => {
  test('extract (first byte 200 ms): every attempt is cut at 200 ms, retried, then 504 naming it', async () => {
    await mockReset(mock.url);
    const r = await timed(slow(600), { 'x-bridle-task': 'extract' });
    assert.equal(r.status, 504, r.text);
    assert.equal(r.json.error.code, 'upstream_timeout');
    assert.match(r.json.error.message, /first-byte timeout of 200 ms \(timeouts\.tasks\.extract\.first_byte_ms\)/);
    assert.equal(r.headers['x-bridle-attempts'], '3');
    assert.equal(r.headers['x-should-retry'], 'true'); // a per-attempt limit, not the request's deadline
    assert.equal((await mockStats(mock.url)).by_model['gpt-4o-mini'], 3);
    assert.ok(r.ms >= 600 && r.ms < 600 + 900 * SLOW, `answered after ${r.ms} ms`);
    // the provider's own first-byte limit (120 s) was not broken: no breaker failure
    assert.equal((await breakerOf('gpt-4o-mini')).state, 'closed');
  });

  test('a first byte within the limit is fine', async () => {
    const r = await timed(slow(50), { 'x-bridle-task': 'extract' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '1');
  });
});

describe('total timeout per route', () => {
  test('the route auto (total 400 ms) → 504 naming timeouts.routes.auto.total_ms; the task wins over it', async () => {
    const r = await timed(slow(1000, { model: 'auto' }));
    assert.equal(r.status, 504, r.text);
    assert.match(r.json.error.message, /total timeout of 400 ms \(timeouts\.routes\.auto\.total_ms\)/);
    assert.equal(r.headers['x-should-retry'], 'false');
    assert.ok(r.ms >= 390 && r.ms < 400 + 400 * SLOW, `answered after ${r.ms} ms`);
    const t = await timed(slow(1000, { model: 'auto' }), { 'x-bridle-task': 'classify' });
    assert.equal(t.status, 504, t.text);
    assert.equal(t.headers['x-should-retry'], 'false');
    assert.match(t.json.error.message, /300 ms \(timeouts\.tasks\.classify\.total_ms\)/);
  });

  test('a model that is not the route keeps the default', async () => {
    const r = await timed(slow(600));
    assert.equal(r.status, 200, r.text);
  });
});

describe('check-config', () => {
  test('names the JSON path of a bad timeout', async () => {
    const { spawnSync } = await import('node:child_process');
    const { writeFileSync } = await import('node:fs');
    const { tmpDir, BUILD } = await import('./lib/harness.mjs');
    const file = `${tmpDir()}/bad.json`;
    writeFileSync(
      file,
      JSON.stringify(mockConfig(mock.url, { timeouts: { routes: { nope: { total_ms: 1000 } } } })),
    );
    const p = spawnSync(`${BUILD}/bridle`, ['check-config', file], { encoding: 'utf8' });
    assert.equal(p.status, 1, p.stderr);
    assert.match(p.stderr + p.stdout, /\$\.timeouts\.routes\.nope: expected the name of a route in \$\.routes/);
  });
});

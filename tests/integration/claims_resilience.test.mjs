// README claims about resilience that had no test of their own (issue 10):
//  - "4xx and 429 never trip it; a 429 pauses the target for everyone"
//    (README, Routing and resilience; docs/config.md resilience.breaker):
//    while a 429's Retry-After runs, no request reaches that target, the
//    health endpoint shows it waiting, a route fails over, and the request
//    that got the 429 waits its Retry-After and is answered.
//  - "A circuit breaker per model target opens after repeated 5xx or
//    timeouts ... rests it, then lets one probe through": upstream timeouts
//    (no first byte within the provider's timeouts.first_byte_ms) open it;
//    while open the target is skipped (a route) or shed (503 circuit_open,
//    x-should-retry: false, Retry-After); after the open period one probe
//    closes it.
// Every setting an assertion depends on is set here, not inherited from the
// harness's base config.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { get, mockConfig, mockFault, mockReset, mockStats, post, sleep, startBridle, startMock } from './lib/harness.mjs';

/** Timing windows grow on the sanitizer build (slower binaries, loaded machine). */
const SLOW = /asan/i.test(process.env.BUILD || '') ? 3 : 1;

let mock;
before(async () => {
  mock = await startMock();
});
after(async () => {
  await mock?.stop();
});

const body = (model, extra = {}) => ({ model, messages: [{ role: 'user', content: 'Hello' }], ...extra });

async function calls(model) {
  return (await mockStats(mock.url)).by_model?.[model] ?? 0;
}

async function target(gw, model) {
  const r = await get(`${gw.baseURL}/bridle/health`, gw.auth);
  assert.equal(r.status, 200, r.text);
  const t = r.json.targets.find((x) => x.model === model);
  assert.ok(t?.breaker, `health has no breaker for ${model}: ${r.text}`);
  return t;
}

/** Polls fn() until it returns a truthy value; fails after ms. */
async function until(fn, ms, what) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
}

describe('a 429 with Retry-After pauses the target for everyone', () => {
  let gw;
  const PAUSE_MS = 2500 * SLOW;
  before(async () => {
    gw = await startBridle({
      // breaker on (the pause lives in the target's breaker), retries on (the
      // request that got the 429 waits for its Retry-After and tries again)
      config: mockConfig(mock.url, { resilience: { breaker: true, retries: true, max_wait_ms: 60000 } }),
    });
  });
  after(async () => {
    await gw?.stop();
  });

  test('during the pause: health shows it, concurrent requests never reach the target (shed or failed over), then it serves again', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: `status=429,retry_after_ms=${PAUSE_MS}` });
    const t0 = Date.now();
    const first = post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth, { timeoutMs: 30000 * SLOW });

    // the 429 came back and bridle paused the target: the health endpoint
    // says when it may be used again (the breaker itself stays closed)
    const paused = await until(async () => {
      const t = await target(gw, 'gpt-4o-mini');
      return t.breaker.retry_in_ms > 0 ? t : null;
    }, 5000 * SLOW, 'health showing gpt-4o-mini paused');
    assert.equal(paused.breaker.state, 'closed', `a 429 never trips the breaker: ${JSON.stringify(paused)}`);
    assert.ok(paused.breaker.retry_in_ms <= PAUSE_MS, JSON.stringify(paused));
    assert.equal(await calls('gpt-4o-mini'), 1);

    // other requests, concurrent with the first one (which waits): the
    // target itself is not called; naming it gets a 503 that says when to
    // come back, a route answers from its next candidate
    const [direct, routed] = await Promise.all([
      Promise.all(Array.from({ length: 4 }, () => post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth))),
      Promise.all(Array.from({ length: 3 }, () => post(`${gw.baseURL}/chat/completions`, body('auto'), gw.auth))),
    ]);
    const during = Date.now() - t0;
    assert.ok(during < PAUSE_MS, `the concurrent requests took until ${during} ms, past the ${PAUSE_MS} ms pause: timing too loose to judge`);
    for (const r of direct) {
      assert.equal(r.status, 503, r.text);
      assert.equal(r.json.error.code, 'circuit_open', r.text);
      assert.equal(r.headers['x-should-retry'], 'false');
      const ra = Number(r.headers['retry-after']);
      assert.ok(ra >= 1 && ra <= Math.ceil(PAUSE_MS / 1000) + 1, `retry-after ${r.headers['retry-after']}`);
    }
    for (const r of routed) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['x-bridle-model'], 'claude-haiku-4-5', r.headers['x-bridle-route']);
      assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    }
    assert.equal(await calls('gpt-4o-mini'), 1, 'a request reached the paused target');
    assert.equal(await calls('claude-haiku-4-5'), 3);

    // the first request waited out the Retry-After and was answered
    const r = await first;
    const took = Date.now() - t0;
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.ok(took >= PAUSE_MS - 20, `answered after ${took} ms, before the ${PAUSE_MS} ms Retry-After`);
    assert.equal(await calls('gpt-4o-mini'), 2);

    // the pause is over for everyone
    const t = await target(gw, 'gpt-4o-mini');
    assert.equal(t.breaker.retry_in_ms, 0, JSON.stringify(t));
    const again = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(again.status, 200, again.text);
    const routedAgain = await post(`${gw.baseURL}/chat/completions`, body('auto'), gw.auth);
    assert.equal(routedAgain.headers['x-bridle-model'], 'gpt-4o-mini');
    assert.equal(await calls('gpt-4o-mini'), 4);
  });
});

describe('upstream timeouts open the breaker', () => {
  let gw;
  const FIRST_BYTE_MS = 400 * SLOW;
  const OPEN_MS = 2000 * SLOW;
  before(async () => {
    gw = await startBridle({
      config: mockConfig(mock.url, {
        providers: { openai: { timeouts: { first_byte_ms: FIRST_BYTE_MS } } },
        // one attempt per request, so N requests are N timeouts
        resilience: { breaker: true, retries: false, breaker_failures: 3, breaker_open_ms: OPEN_MS, breaker_open_max_ms: 4 * OPEN_MS },
      }),
    });
  });
  after(async () => {
    await gw?.stop();
  });

  test('3 first-byte timeouts → open; shed with circuit_open and x-should-retry: false, skipped by a route; one probe after the open period closes it', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 3, directives: `latency_ms=${FIRST_BYTE_MS * 10}` });
    for (let i = 1; i <= 3; i++) {
      const t0 = Date.now();
      const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
      const ms = Date.now() - t0;
      assert.equal(r.status, 504, r.text);
      assert.equal(r.json.error.code, 'upstream_timeout', r.text);
      assert.ok(ms < FIRST_BYTE_MS * 5, `timed out after ${ms} ms, first_byte_ms is ${FIRST_BYTE_MS}`);
      const t = await target(gw, 'gpt-4o-mini');
      if (i < 3) {
        assert.equal(t.breaker.state, 'closed', `after ${i} timeouts: ${JSON.stringify(t)}`);
        assert.equal(t.breaker.consecutive_failures, i, `timeouts count as failures: ${JSON.stringify(t)}`);
      } else {
        assert.equal(t.breaker.state, 'open', `after 3 timeouts: ${JSON.stringify(t)}`);
        assert.equal(t.breaker.opens_total, 1);
        assert.ok(t.breaker.retry_in_ms > 0 && t.breaker.retry_in_ms <= OPEN_MS * 1.2 + 50, JSON.stringify(t));
      }
    }
    const n = await calls('gpt-4o-mini');
    assert.equal(n, 3);

    // open: shed at once, not called, a route skips it
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
      assert.equal(r.status, 503, r.text);
      assert.equal(r.json.error.code, 'circuit_open');
      assert.equal(r.headers['x-should-retry'], 'false');
      assert.ok(Number(r.headers['retry-after']) >= 1, `retry-after ${r.headers['retry-after']}`);
      assert.ok(Date.now() - t0 < FIRST_BYTE_MS, 'shed without waiting on the provider');
    }
    const routed = await post(`${gw.baseURL}/chat/completions`, body('auto'), gw.auth);
    assert.equal(routed.status, 200, routed.text);
    assert.equal(routed.headers['x-bridle-model'], 'claude-haiku-4-5');
    assert.equal(await calls('gpt-4o-mini'), n, 'a request reached the provider while the breaker was open');

    // after the open period (±20 % jitter): one probe, which succeeds and closes it
    await until(async () => (await target(gw, 'gpt-4o-mini')).breaker.retry_in_ms === 0, OPEN_MS * 1.2 + 2000 * SLOW, 'the open period to end');
    const probe = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(probe.status, 200, probe.text);
    assert.equal(await calls('gpt-4o-mini'), n + 1, 'exactly one probe');
    const t = await target(gw, 'gpt-4o-mini');
    assert.equal(t.breaker.state, 'closed', JSON.stringify(t));
    assert.equal(t.breaker.consecutive_failures, 0);
    const routedAfter = await post(`${gw.baseURL}/chat/completions`, body('auto'), gw.auth);
    assert.equal(routedAfter.headers['x-bridle-model'], 'gpt-4o-mini', 'the route uses it again');
  });
});

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

import { SLOW, get, mockConfig, mockFault, mockReset, mockStats, post, sleep, startBridle, startMock } from './lib/harness.mjs';

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
  before(async () => {
    gw = await startBridle({
      // breaker on: the pause lives in the target's breaker. Retries off: the
      // 429 comes back to its client at once, so what happens to everyone
      // else during the pause is seen on its own (the retry that waits out a
      // Retry-After is the next describe).
      config: mockConfig(mock.url, { resilience: { breaker: true, retries: false } }),
    });
  });
  after(async () => {
    await gw?.stop();
  });

  test('retry-after-ms (OpenAI): health shows the pause, concurrent requests never reach the target (shed or failed over), then it serves again', async () => {
    const PAUSE_MS = 2500 * SLOW;
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: `status=429,retry_after_ms=${PAUSE_MS}` });
    const t0 = Date.now();
    const first = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(first.status, 429, first.text);
    assert.equal(first.headers['retry-after'], String(Math.ceil(PAUSE_MS / 1000)));

    // the health endpoint says when the target may be used again (the
    // breaker itself stays closed: a 429 never trips it)
    const paused = await target(gw, 'gpt-4o-mini');
    assert.equal(paused.breaker.state, 'closed', JSON.stringify(paused));
    assert.ok(paused.breaker.retry_in_ms > 0 && paused.breaker.retry_in_ms <= PAUSE_MS, JSON.stringify(paused));

    // everyone else, concurrently: the target is not called; naming it gets a
    // rate-limit 429 (retries are off here: nobody waits the pause out) that
    // says when to come back, a route answers from its next candidate
    const [direct, routed] = await Promise.all([
      Promise.all(Array.from({ length: 4 }, () => post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth))),
      Promise.all(Array.from({ length: 3 }, () => post(`${gw.baseURL}/chat/completions`, body('auto'), gw.auth))),
    ]);
    const during = Date.now() - t0;
    assert.ok(during < PAUSE_MS, `the concurrent requests took until ${during} ms, past the ${PAUSE_MS} ms pause: timing too loose to judge`);
    for (const r of direct) {
      assert.equal(r.status, 429, r.text);
      assert.equal(r.json.error.code, 'rate_limited', r.text);
      assert.match(r.json.error.message, /rate-limiting/);
      assert.doesNotMatch(r.json.error.message, /circuit/);
      assert.equal(r.headers['x-should-retry'], 'true');
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

    // the pause ends for everyone
    await until(async () => (await target(gw, 'gpt-4o-mini')).breaker.retry_in_ms === 0, PAUSE_MS + 2000 * SLOW, 'the pause to end');
    assert.ok(Date.now() - t0 >= PAUSE_MS - 20, 'the pause ended early');
    const again = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(again.status, 200, again.text);
    const routedAgain = await post(`${gw.baseURL}/chat/completions`, body('auto'), gw.auth);
    assert.equal(routedAgain.headers['x-bridle-model'], 'gpt-4o-mini');
    assert.equal(await calls('gpt-4o-mini'), 3);
  });

  test('a plain Retry-After in seconds, from another dialect (Anthropic), pauses its target the same way', async () => {
    const SECS = 2 * SLOW;
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'claude-haiku-4-5', count: 1, directives: `status=429,retry_after=${SECS}` });
    const t0 = Date.now();
    const first = await post(`${gw.baseURL}/chat/completions`, body('claude-haiku-4-5'), gw.auth);
    assert.equal(first.status, 429, first.text);
    const t = await target(gw, 'claude-haiku-4-5');
    assert.ok(t.breaker.retry_in_ms > 0 && t.breaker.retry_in_ms <= SECS * 1000, JSON.stringify(t));
    const other = await post(`${gw.baseURL}/chat/completions`, body('claude-haiku-4-5'), gw.auth);
    assert.ok(Date.now() - t0 < SECS * 1000, 'too slow to judge');
    assert.equal(other.status, 429, other.text);
    assert.equal(other.json.error.code, 'rate_limited');
    assert.equal(await calls('claude-haiku-4-5'), 1, 'a request reached the paused target');
    await until(async () => (await target(gw, 'claude-haiku-4-5')).breaker.retry_in_ms === 0, SECS * 1000 + 2000 * SLOW, 'the pause to end');
    const after = await post(`${gw.baseURL}/chat/completions`, body('claude-haiku-4-5'), gw.auth);
    assert.equal(after.status, 200, after.text);
    assert.equal(await calls('claude-haiku-4-5'), 2);
  });
});

describe('the request that got the 429 waits out its Retry-After', () => {
  let gw;
  before(async () => {
    gw = await startBridle({ config: mockConfig(mock.url, { resilience: { breaker: true, retries: true, max_wait_ms: 60000 } }) });
  });
  after(async () => {
    await gw?.stop();
  });

  // README: "Failures are retried ...: ... otherwise the same target after a
  // full-jitter backoff or its Retry-After". The retry's timer is a libevent
  // timer (coarse, cached clock), the pause is checked against
  // util_now_ms() (CLOCK_MONOTONIC): the timer can fire a few ms before the
  // pause has ended by that clock, and then the request is refused by the
  // pause its own 429 set and shed: 503 circuit_open, x-should-retry: false.
  // (Likely: the timer's deadline is counted from the time libevent cached at
  // the start of the loop pass, the pause's from util_now_ms() read later in
  // that pass, truncated to the ms.) It shows when the loop wakes for other
  // work near the deadline (here: health polled every few ms); an idle
  // gateway wakes at the rounded-up deadline and passes.
  test(
    'with other traffic on the gateway, it is answered by its retry (attempts 2), never shed by its own pause',
    {},
    async () => {
      const outcomes = {};
      const TRIALS = 12;
      for (let i = 0; i < TRIALS; i++) {
        const model = i % 2 ? 'claude-haiku-4-5' : 'gpt-4o-mini';
        const seconds = i < 2; // the plain Retry-After: 1 form twice, then retry-after-ms: 300
        await mockReset(mock.url);
        await mockFault(mock.url, { model, count: 1, directives: seconds ? 'status=429,retry_after=1' : 'status=429,retry_after_ms=300' });
        let stop = false;
        const traffic = (async () => {
          while (!stop) {
            await get(`${gw.baseURL}/bridle/health`, gw.auth);
            await sleep(5);
          }
        })();
        const r = await post(`${gw.baseURL}/chat/completions`, body(model), gw.auth, { timeoutMs: 30000 * SLOW });
        stop = true;
        await traffic;
        const k = `${r.status} ${r.json?.error?.code ?? ''} attempts=${r.headers['x-bridle-attempts']} x-should-retry=${r.headers['x-should-retry'] ?? '-'} upstream calls=${await calls(model)}`;
        outcomes[k] = (outcomes[k] || 0) + 1;
        await sleep(seconds ? 1100 : 400); // the pause is over whatever happened
      }
      assert.deepEqual(outcomes, { '200  attempts=2 x-should-retry=- upstream calls=2': TRIALS });
    },
  );
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

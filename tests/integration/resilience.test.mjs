// Resilience (issue 6, first part): same-target retries with backoff and
// Retry-After, failing over first when a candidate remains, the circuit
// breaker per target (0 upstream calls while open, a probe after the wait,
// 4xx never trips it), no retry once a byte was streamed, and the health
// endpoint that shows it all. Faults come from the mock's fault queue.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { SLOW, get, mockConfig, mockFault, mockReset, mockStats, post, sleep, startBridle, startMock } from './lib/harness.mjs';

let mock;
after(async () => {
  await mock?.stop();
});
before(async () => {
  mock = await startMock();
});

const body = (model, extra = {}) => ({ model, messages: [{ role: 'user', content: 'Hello' }], ...extra });

async function requestsTo(model) {
  const s = await mockStats(mock.url);
  return s.by_model?.[model] ?? 0;
}

async function health(gw) {
  const r = await get(`${gw.baseURL}/bridle/health`, gw.auth);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

describe('retries on one target', () => {
  let gw;
  before(async () => {
    gw = await startBridle({
      config: mockConfig(mock.url, {
        // the breaker stays on (the default): no test here reaches its 5 failures in a row
        resilience: { max_wait_ms: 1000, backoff_base_ms: 20, backoff_cap_ms: 100 },
      }),
    });
  });
  after(async () => {
    await gw?.stop();
  });

  test('a 503 once → retried on the same target after a backoff, answered; attempts 2', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=503' });
    const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.equal(await requestsTo('gpt-4o-mini'), 2);
  });

  test('a 429 with retry-after-ms: 300 → the retry waits at least that long', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=429,retry_after_ms=300' });
    const t0 = Date.now();
    const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    const took = Date.now() - t0;
    assert.equal(r.status, 200, r.text);
    assert.ok(took >= 290, `answered after ${took} ms, before the advised 300 ms`);
    assert.equal(r.headers['x-bridle-attempts'], '2');
  });

  test('a Retry-After longer than max_wait_ms is not waited for: the 429 comes back at once, and the target is paused', async () => {
    // gemini-2.5-flash: the 30 s pause must not reach the other tests' model
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gemini-2.5-flash', count: 1, directives: 'status=429,retry_after=30' });
    const t0 = Date.now();
    const r = await post(`${gw.baseURL}/chat/completions`, body('gemini-2.5-flash'), gw.auth);
    assert.ok(Date.now() - t0 < 1000 * SLOW, 'waited for a Retry-After beyond max_wait_ms');
    assert.equal(r.status, 429, r.text);
    assert.equal(r.headers['retry-after'], '30');
    assert.equal(r.headers['x-should-retry'], 'true');
    assert.equal(r.headers['x-bridle-attempts'], '1');
    assert.equal(await requestsTo('gemini-2.5-flash'), 1);
    const b = (await health(gw)).targets.find((t) => t.model === 'gemini-2.5-flash').breaker;
    assert.equal(b.consecutive_failures, 0, JSON.stringify(b));
    assert.ok(b.retry_in_ms > 30000 - 2000 * SLOW && b.retry_in_ms <= 30000, `the pause in /v1/bridle/health: ${JSON.stringify(b)}`);
  });

  test('every attempt fails → gives up after max_attempts (3), the last error returned', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 10, directives: 'status=503' });
    const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(r.status, 503, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '3');
    assert.equal(r.headers['x-should-retry'], 'true');
    assert.equal(await requestsTo('gpt-4o-mini'), 3);
    await mockReset(mock.url);
  });

  test('a 400 is never retried', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=400' });
    const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.headers['x-should-retry'], 'false');
    assert.equal(r.headers['x-bridle-attempts'], '1');
    assert.equal(await requestsTo('gpt-4o-mini'), 1);
  });

  test('no retry after the first streamed byte: a cut stream ends with an error event', async () => {
    await mockReset(mock.url);
    const r = await post(
      `${gw.baseURL}/chat/completions`,
      { ...body('gpt-4o-mini', { stream: true }), messages: [{ role: 'user', content: '[[mock:cut_after=2]] hi' }] },
      gw.auth,
    );
    assert.equal(r.status, 200);
    assert.match(r.text, /"error"/);
    assert.equal(await requestsTo('gpt-4o-mini'), 1);
  });

  test('with a route, a 503 fails over to the next candidate at once instead of waiting', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=503,retry_after=5' });
    const t0 = Date.now();
    const r = await post(`${gw.baseURL}/chat/completions`, body('auto'), gw.auth);
    assert.equal(r.status, 200, r.text);
    assert.ok(Date.now() - t0 < 1000 * SLOW);
    assert.equal(r.headers['x-bridle-model'], 'claude-haiku-4-5');
    assert.equal(r.headers['x-bridle-attempts'], '2');
  });
});

describe('circuit breaker', () => {
  let gw;
  before(async () => {
    gw = await startBridle({
      config: mockConfig(mock.url, {
        // retries stay on (the default): a 503 is tried 3 times, each a failure
        resilience: { breaker_failures: 3, breaker_open_ms: 800, backoff_base_ms: 20, backoff_cap_ms: 100 },
      }),
    });
  });
  after(async () => {
    await gw?.stop();
  });

  test('4xx and 429 never open it', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gemini-2.5-flash', count: 3, directives: 'status=400' });
    for (let i = 0; i < 3; i++) {
      const r = await post(`${gw.baseURL}/chat/completions`, body('gemini-2.5-flash'), gw.auth);
      assert.equal(r.status, 400, r.text);
      assert.deepEqual([r.headers['x-bridle-attempts'], r.headers['x-should-retry']], ['1', 'false']);
    }
    // a 429 without Retry-After is retried after a backoff: 3 requests × 3 attempts
    await mockFault(mock.url, { model: 'gemini-2.5-flash', count: 9, directives: 'status=429' });
    for (let i = 0; i < 3; i++) {
      const r = await post(`${gw.baseURL}/chat/completions`, body('gemini-2.5-flash'), gw.auth);
      assert.equal(r.status, 429, r.text);
      assert.equal(r.headers['x-bridle-attempts'], '3');
      assert.equal(r.headers['x-should-retry'], 'true');
    }
    assert.equal(await requestsTo('gemini-2.5-flash'), 3 + 9);
    await mockReset(mock.url);
    const h = await health(gw);
    const b = h.targets.find((t) => t.model === 'gemini-2.5-flash').breaker;
    assert.deepEqual([b.state, b.consecutive_failures, b.opens_total], ['closed', 0, 0], JSON.stringify(b));
    assert.equal((await post(`${gw.baseURL}/chat/completions`, body('gemini-2.5-flash'), gw.auth)).status, 200);
  });

  test('3 failures open it; while open no request reaches the provider; after the wait one probe closes it', async () => {
    await mockReset(mock.url);
    // one request, three failed attempts (503, retryable): the third opens it
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 3, directives: 'status=503' });
    const failed = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(failed.status, 503, failed.text);
    assert.equal(failed.json.error.code, 'upstream_overloaded');
    assert.equal(failed.headers['x-bridle-attempts'], '3');
    assert.equal(failed.headers['x-should-retry'], 'true');
    assert.equal(await requestsTo('gpt-4o-mini'), 3);
    let h = await health(gw);
    const t = h.targets.find((x) => x.model === 'gpt-4o-mini');
    assert.equal(t.breaker.state, 'open', JSON.stringify(t));
    assert.equal(t.breaker.opens_total, 1, JSON.stringify(t));
    // open for breaker_open_ms (800) ± 20 %
    assert.ok(t.breaker.retry_in_ms > 640 - 150 * SLOW && t.breaker.retry_in_ms <= 960, JSON.stringify(t));
    const before = await requestsTo('gpt-4o-mini');
    for (let i = 0; i < 5; i++) {
      const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
      assert.equal(r.status, 503, r.text);
      assert.equal(r.json.error.code, 'circuit_open');
      assert.equal(r.headers['retry-after'], '1'); // under a second left, rounded up
      assert.equal(r.headers['x-should-retry'], 'false');
      assert.equal(r.headers['x-bridle-attempts'], '0');
    }
    assert.equal(await requestsTo('gpt-4o-mini'), before, 'a request reached the provider while open');
    // a route skips the open target and answers from the next candidate
    const routed = await post(`${gw.baseURL}/chat/completions`, body('auto'), gw.auth);
    assert.equal(routed.status, 200, routed.text);
    assert.equal(routed.headers['x-bridle-model'], 'claude-haiku-4-5');
    assert.equal(await requestsTo('gpt-4o-mini'), before);
    await sleep(1100); // open period 800 ms ± 20% jitter
    const probe = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(probe.status, 200, probe.text);
    assert.equal(await requestsTo('gpt-4o-mini'), before + 1, 'exactly one probe');
    h = await health(gw);
    const after = h.targets.find((x) => x.model === 'gpt-4o-mini').breaker;
    assert.deepEqual([after.state, after.consecutive_failures, after.opens_total], ['closed', 0, 1], JSON.stringify(after));
  });
});

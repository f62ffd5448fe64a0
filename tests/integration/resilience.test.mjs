// Resilience (issue 6, first part): same-target retries with backoff and
// Retry-After, failing over first when a candidate remains, the circuit
// breaker per target (0 upstream calls while open, a probe after the wait,
// 4xx never trips it), no retry once a byte was streamed, and the health
// endpoint that shows it all. Faults come from the mock's fault queue.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { get, mockConfig, mockFault, mockReset, mockStats, post, sleep, startBridle, startMock } from './lib/harness.mjs';

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
        resilience: { retries: true, breaker: false, max_wait_ms: 1000, backoff_base_ms: 20, backoff_cap_ms: 100 },
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

  test('a Retry-After longer than max_wait_ms is not waited for: the 429 comes back at once', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=429,retry_after=30' });
    const t0 = Date.now();
    const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.ok(Date.now() - t0 < 1000, 'waited for a Retry-After beyond max_wait_ms');
    assert.equal(r.status, 429, r.text);
    assert.equal(r.headers['retry-after'], '30');
    assert.equal(await requestsTo('gpt-4o-mini'), 1);
  });

  test('every attempt fails → gives up after max_attempts (3), the last error returned', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 10, directives: 'status=503' });
    const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(r.status, 503, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '3');
    assert.equal(await requestsTo('gpt-4o-mini'), 3);
    await mockReset(mock.url);
  });

  test('a 400 is never retried', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=400' });
    const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
    assert.equal(r.status, 400, r.text);
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
    assert.ok(Date.now() - t0 < 1000);
    assert.equal(r.headers['x-bridle-model'], 'claude-haiku-4-5');
  });
});

describe('circuit breaker', () => {
  let gw;
  before(async () => {
    gw = await startBridle({
      config: mockConfig(mock.url, {
        resilience: { retries: false, breaker: true, breaker_failures: 3, breaker_open_ms: 800 },
      }),
    });
  });
  after(async () => {
    await gw?.stop();
  });

  test('4xx and 429 never open it', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gemini-2.5-flash', count: 3, directives: 'status=400' });
    for (let i = 0; i < 3; i++)
      assert.equal((await post(`${gw.baseURL}/chat/completions`, body('gemini-2.5-flash'), gw.auth)).status, 400);
    await mockFault(mock.url, { model: 'gemini-2.5-flash', count: 3, directives: 'status=429' });
    for (let i = 0; i < 3; i++)
      assert.equal((await post(`${gw.baseURL}/chat/completions`, body('gemini-2.5-flash'), gw.auth)).status, 429);
    await mockReset(mock.url);
    const h = await health(gw);
    assert.equal(h.targets.find((t) => t.model === 'gemini-2.5-flash').breaker.state, 'closed');
    assert.equal((await post(`${gw.baseURL}/chat/completions`, body('gemini-2.5-flash'), gw.auth)).status, 200);
  });

  test('3 failures open it; while open no request reaches the provider; after the wait one probe closes it', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 3, directives: 'status=500' });
    for (let i = 0; i < 3; i++)
      assert.equal((await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth)).status, 502);
    let h = await health(gw);
    const t = h.targets.find((x) => x.model === 'gpt-4o-mini');
    assert.equal(t.breaker.state, 'open', JSON.stringify(t));
    const before = await requestsTo('gpt-4o-mini');
    for (let i = 0; i < 5; i++) {
      const r = await post(`${gw.baseURL}/chat/completions`, body('gpt-4o-mini'), gw.auth);
      assert.equal(r.status, 503, r.text);
      assert.equal(r.json.error.code, 'circuit_open');
      assert.ok(Number(r.headers['retry-after']) >= 1);
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
    assert.equal(h.targets.find((x) => x.model === 'gpt-4o-mini').breaker.state, 'closed');
  });
});

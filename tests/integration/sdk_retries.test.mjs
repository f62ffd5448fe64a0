// SDK retries do not multiply bridle's (issue 6; reliability.md §2.2): the
// openai SDK with its default maxRetries (2) in front of bridle with
// retries and breakers on. Where bridle has already done what retrying can
// do — an error no retry fixes, a spent retry budget, an open breaker — it
// says x-should-retry: false and the SDK sends ONE request, so the mock
// sees exactly the attempts bridle made for it. Where a retry can help (a
// 503 with a short Retry-After while budget remains) it says true and the
// SDK's retry reaches bridle. SDK attempts are counted at the SDK's fetch:
// every request it sends to bridle, with the x-request-id bridle answered.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { mockConfig, mockFault, mockReset, mockStats, post, startBridle, startMock } from './lib/harness.mjs';

let mock;
after(async () => {
  await mock?.stop();
});
before(async () => {
  mock = await startMock();
});

/** An SDK client with default retries whose every HTTP exchange is recorded. */
function sdk(gw) {
  const seen = [];
  const client = new OpenAI({
    apiKey: gw.key,
    baseURL: gw.baseURL,
    timeout: 10000,
    fetch: async (url, init) => {
      const r = await fetch(url, init);
      seen.push({
        status: r.status,
        id: r.headers.get('x-request-id'),
        shouldRetry: r.headers.get('x-should-retry'),
        retryAfter: r.headers.get('retry-after'),
        attempts: Number(r.headers.get('x-bridle-attempts')),
      });
      return r;
    },
  });
  assert.equal(client.maxRetries, 2, 'the SDK default');
  return { client, seen };
}

const upstream = async (model) => (await mockStats(mock.url)).by_model?.[model] ?? 0;
const ask = (client, model) => client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }] });

/** One SDK call that must fail: → {error, seen, upstream (mock attempts it caused)}. */
async function failing(gw, model) {
  const { client, seen } = sdk(gw);
  const before_ = await upstream(model);
  let error;
  await assert.rejects(ask(client, model), (e) => {
    error = e;
    return e instanceof OpenAI.APIError;
  });
  return { error, seen, upstream: (await upstream(model)) - before_ };
}

describe('retries on in bridle, breaker on', () => {
  let gw;
  before(async () => {
    gw = await startBridle({
      config: mockConfig(mock.url, {
        resilience: {
          retries: true,
          breaker: true,
          breaker_failures: 4,
          breaker_open_ms: 30000,
          backoff_base_ms: 10,
          backoff_cap_ms: 50,
        },
      }),
    });
  });
  after(async () => {
    await gw?.stop();
  });

  for (const [what, directives, status] of [
    ['400', 'status=400', 400],
    ['401 (bridle’s provider key)', 'status=401', 502],
    ['404 (the upstream model)', 'status=404', 502],
    ['429 insufficient_quota', 'status=429,code=insufficient_quota', 429],
  ]) {
    test(`non-retryable ${what}: one SDK request, one upstream attempt`, async () => {
      await mockReset(mock.url);
      await mockFault(mock.url, { model: 'gpt-4o-mini', count: 10, directives });
      const { error, seen, upstream: n } = await failing(gw, 'gpt-4o-mini');
      assert.equal(error.status, status, error.message);
      assert.equal(seen.length, 1, `the SDK sent ${seen.length} requests: ${JSON.stringify(seen)}`);
      assert.equal(seen[0].shouldRetry, 'false');
      assert.equal(n, 1, 'upstream attempts');
      assert.equal(seen[0].attempts, n, 'x-bridle-attempts is what the mock saw');
    });
  }

  test('breaker open: bridle sheds with x-should-retry: false and a Retry-After; the SDK sends one request, the mock sees none', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'claude-haiku-4-5', count: 1000, directives: 'status=503' });
    // two requests: three failed attempts, then a fourth (the breaker opens
    // at 4) whose retry the breaker refuses
    const body = { model: 'claude-haiku-4-5', messages: [{ role: 'user', content: 'x' }] };
    for (let i = 0; i < 2; i++) {
      const r = await post(`${gw.baseURL}/chat/completions`, body, gw.auth);
      assert.equal(r.status, 503, r.text);
      // the first: 3 attempts, retryable; the second: its 4th failure opens the breaker, which refuses the retry
      assert.deepEqual([r.json.error.code, r.headers['x-bridle-attempts'], r.headers['x-should-retry']], i === 0 ? ['upstream_overloaded', '3', 'true'] : ['circuit_open', '1', 'false'], r.text);
    }
    assert.equal(await upstream('claude-haiku-4-5'), 4);
    const { error, seen, upstream: n } = await failing(gw, 'claude-haiku-4-5');
    assert.equal(error.status, 503);
    assert.equal(error.code, 'circuit_open');
    assert.equal(seen.length, 1, `the SDK sent ${seen.length} requests: ${JSON.stringify(seen)}`);
    assert.equal(seen[0].shouldRetry, 'false');
    assert.ok(Number(seen[0].retryAfter) >= 20, `retry-after ${seen[0].retryAfter}`);
    assert.equal(n, 0);
    assert.equal(seen[0].attempts, 0);
    await mockReset(mock.url);
  });

  test('a 503 with a short Retry-After while budget remains: x-should-retry: true, and the SDK’s retry reaches bridle', async () => {
    await mockReset(mock.url);
    // bridle's three attempts all get 503 (Retry-After 100 ms, waited out;
    // three failures stay under the breaker's 4), then the provider is back
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 3, directives: 'status=503,retry_after_ms=100' });
    const { client, seen } = sdk(gw);
    const c = await ask(client, 'gpt-4o-mini');
    assert.equal(c.choices[0].message.role, 'assistant');
    assert.equal(seen.length, 2, JSON.stringify(seen));
    assert.equal(seen[0].status, 503);
    assert.equal(seen[0].shouldRetry, 'true');
    assert.equal(seen[0].retryAfter, '1');
    assert.equal(seen[0].attempts, 3);
    assert.equal(seen[1].status, 200);
    assert.notEqual(seen[0].id, seen[1].id, 'two requests reached bridle');
    assert.equal(await upstream('gpt-4o-mini'), 4, 'three attempts for the first request, one for the SDK’s retry');
  });
});

describe('retries on in bridle, breaker off: the retry budget', () => {
  let gw;
  before(async () => {
    gw = await startBridle({
      config: mockConfig(mock.url, {
        resilience: { retries: true, breaker: false, backoff_base_ms: 5, backoff_cap_ms: 20 },
      }),
    });
  });
  after(async () => {
    await gw?.stop();
  });

  test('budget spent: bridle makes one attempt, says x-should-retry: false; the SDK sends one request', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 100000, directives: 'status=503' });
    // 20 failing requests want 40 retries; the budget's floor is 30 in 10 s
    const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] };
    const spend = await Promise.all(Array.from({ length: 20 }, () => post(`${gw.baseURL}/chat/completions`, body, gw.auth)));
    assert.ok(spend.every((r) => r.status === 503));
    const made = spend.reduce((n, r) => n + Number(r.headers['x-bridle-attempts']), 0);
    assert.equal(made, 20 + 30, 'the floor of 30 retries, no more');
    // every request the budget refused a retry (fewer than 3 attempts) says false; one that
    // used its 3 attempts says false too once the provider's budget is spent, so not checked
    for (const r of spend)
      if (r.headers['x-bridle-attempts'] !== '3') assert.equal(r.headers['x-should-retry'], 'false', JSON.stringify(r.headers));
    assert.ok(spend.some((r) => r.headers['x-should-retry'] === 'false'), 'a request refused a retry says so');
    const { error, seen, upstream: n } = await failing(gw, 'gpt-4o-mini');
    assert.equal(error.status, 503);
    assert.equal(seen.length, 1, `the SDK sent ${seen.length} requests: ${JSON.stringify(seen)}`);
    assert.equal(seen[0].shouldRetry, 'false');
    assert.equal(n, 1);
    assert.equal(seen[0].attempts, 1);
    await mockReset(mock.url);
  });
});

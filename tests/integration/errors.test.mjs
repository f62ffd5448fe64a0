// Every bad input and every provider failure ends in the OpenAI error JSON
// with the right status, a message that says what to fix, and x-should-retry
// where a retry cannot help. Also: failover across a route's candidates.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';

import {
  get,
  httpRequest,
  mockConfig,
  mockFault,
  mockLast,
  mockReset,
  mockStats,
  parseSSE,
  post,
  rawRequest,
  sleep,
  SLOW,
  startBridle,
  startMock,
} from './lib/harness.mjs';
import { Conn } from './lib/conn.mjs';
import { answerFor, billed, costPusd, expected, formatSavings, formatUsd, words } from './lib/mockmath.mjs';

const FIRST_BYTE_MS = 500;
const MAX_BODY = 4096;
const MAX_HEADERS = 30;
const MAX_HEADER_BYTES = 2000;

let mock;
let gw;
let CHAT;
let CONFIG;

before(async () => {
  mock = await startMock();
  const timeouts = { first_byte_ms: FIRST_BYTE_MS };
  CONFIG = mockConfig(mock.url, {
    limits: { max_body_bytes: MAX_BODY, max_headers: MAX_HEADERS, max_header_bytes: MAX_HEADER_BYTES },
    providers: { openai: { timeouts }, anthropic: { timeouts }, gemini: { timeouts }, ollama: { timeouts } },
    routes: { r: { candidates: ['gpt-4o-mini', 'claude-haiku-4-5'] } },
  });
  gw = await startBridle({ config: CONFIG });
  CHAT = `${gw.baseURL}/chat/completions`;
});

/** A gateway of this file's config for one test, stopped when the test ends. */
async function ownGateway(t) {
  const g = await startBridle({ config: CONFIG });
  t.after(() => g.stop());
  return g;
}

const callsTo = async (model) => (await mockStats(mock.url)).by_model?.[model] ?? 0;

/** GET /v1/bridle/health of gateway g. */
async function health(g) {
  const r = await get(`${g.baseURL}/bridle/health`, g.auth);
  assert.equal(r.status, 200, r.text);
  return r.json;
}
async function breakerOf(g, model) {
  const t = (await health(g)).targets.find((x) => x.model === model);
  assert.ok(t?.breaker, `no breaker for ${model} in /v1/bridle/health`);
  return t.breaker;
}
const pick = (b) => ({ state: b.state, consecutive_failures: b.consecutive_failures });

/** Waits until neither the mock nor gateway g has a call in flight (bridle's own count per provider). */
async function waitQuiet(g) {
  let h;
  let m;
  for (let i = 0; i < 100; i++) {
    [h, m] = [await health(g), await mockStats(mock.url)];
    if (m.in_flight === 0 && h.providers.every((p) => p.in_flight === 0)) return;
    await sleep(20);
  }
  assert.fail(`calls left in flight: mock ${m.in_flight}, bridle ${JSON.stringify(h.providers)}`);
}

/** The headers of a chat that reached a provider: who answered, after how many attempts, and the request id. */
function assertAttempt(r, model, attempts) {
  const what = `${r.status} ${JSON.stringify(r.headers)}`;
  assert.equal(r.headers['x-bridle-model'], model, what);
  assert.equal(r.headers['x-bridle-attempts'], String(attempts), what);
  assert.match(r.headers['x-request-id'] || '', /^req_[0-9a-f]{24}$/, what);
}

after(async () => {
  await gw?.stop();
  await mock?.stop();
});

const user = (content, model = 'gpt-4o-mini', extra = {}) => ({ model, messages: [{ role: 'user', content }], ...extra });
const chat = (body, headers = gw.auth, g = gw) => post(`${g.baseURL}/chat/completions`, body, headers, { timeoutMs: 10000 * SLOW });

/**
 * Asserts the OpenAI error shape {"error":{"message","type","param","code"}}
 * and returns the error object.
 */
function assertError(r, status, { code, type, param, message, retry = false } = {}) {
  const what = `${r.status} ${r.text}`;
  assert.equal(r.status, status, what);
  assert.match(r.headers['content-type'] || '', /^application\/json/, `content-type: ${what}`);
  assert.ok(r.json && typeof r.json === 'object', `not JSON: ${what}`);
  assert.deepEqual(Object.keys(r.json), ['error'], what);
  const e = r.json.error;
  assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'param', 'type'], what);
  assert.equal(typeof e.message, 'string', what);
  assert.ok(e.message.length >= 10, `message too short to help: ${what}`);
  assert.equal(typeof e.type, 'string', what);
  assert.ok(e.param === null || typeof e.param === 'string', what);
  assert.ok(e.code === null || typeof e.code === 'string', what);
  if (code !== undefined) assert.equal(e.code, code, what);
  if (type !== undefined) assert.equal(e.type, type, what);
  if (param !== undefined) assert.equal(e.param, param, what);
  if (message) assert.match(e.message, message, what);
  // README: "Every error says x-should-retry: true or false" — checked on every error here
  assert.ok(retry === true || retry === false, 'assertError: say whether the error is retryable');
  assert.equal(r.headers['x-should-retry'], String(retry), `x-should-retry: ${what}`);
  return e;
}

describe('bad requests', () => {
  const cases = [
    ['malformed JSON', '{"model": "gpt-4o-mini", "messages": [', { code: 'invalid_json', message: /not valid JSON/ }],
    ['JSON with trailing garbage', '{"model":"gpt-4o-mini","messages":[]} x', { code: 'invalid_json', message: /JSON/ }],
    ['body is an array', '[{"model":"gpt-4o-mini"}]', { message: /JSON object/ }],
    ['body is a string', '"hello"', { message: /JSON object/ }],
    ['body is null', 'null', { message: /JSON|object/ }],
    ['empty body', '', { message: /empty/ }],
    ['missing model', { messages: [{ role: 'user', content: 'x' }] }, { param: 'model', message: /"model" is missing/ }],
    ['model is a number', { model: 4, messages: [{ role: 'user', content: 'x' }] }, { param: 'model', message: /string/ }],
    ['model is empty', { model: '', messages: [{ role: 'user', content: 'x' }] }, { param: 'model', message: /non-empty/ }],
    ['missing messages', { model: 'gpt-4o-mini' }, { param: 'messages', message: /"messages" is missing/ }],
    ['messages is a string', { model: 'gpt-4o-mini', messages: 'hi' }, { param: 'messages', message: /list/ }],
    ['messages is an object', { model: 'gpt-4o-mini', messages: { role: 'user' } }, { param: 'messages', message: /list/ }],
    ['messages is empty', { model: 'gpt-4o-mini', messages: [] }, { param: 'messages', message: /empty/ }],
    ['a message is a string', { model: 'gpt-4o-mini', messages: ['hi'] }, { param: 'messages[0]', message: /object/ }],
    [
      'a message without role',
      { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'a' }, { content: 'x' }] },
      { param: 'messages[1].role', message: /missing/ },
    ],
    ['a bad role', { model: 'gpt-4o-mini', messages: [{ role: 'robot', content: 'x' }] }, { param: 'messages[0].role', message: /one of/ }],
    ['a numeric role', { model: 'gpt-4o-mini', messages: [{ role: 7, content: 'x' }] }, { param: 'messages[0].role' }],
    ['content is a number', { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 42 }] }, { param: 'messages[0].content', message: /string or a list/ }],
    ['content is an object', { model: 'gpt-4o-mini', messages: [{ role: 'user', content: { text: 'x' } }] }, { param: 'messages[0].content' }],
    ['user content missing', { model: 'gpt-4o-mini', messages: [{ role: 'user' }] }, { param: 'messages[0].content', message: /missing/ }],
    ['a content part without type', { model: 'gpt-4o-mini', messages: [{ role: 'user', content: [{ text: 'x' }] }] }, { param: 'messages[0].content[0]', message: /type/ }],
    [
      'stream_options without stream',
      { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream_options: { include_usage: true } },
      { param: 'stream_options', message: /only allowed when "stream" is true/ },
    ],
    ['stream is a string', user('x', 'gpt-4o-mini', { stream: 'yes' }), { param: 'stream', message: /true or false/ }],
    ['max_tokens is a string', user('x', 'gpt-4o-mini', { max_tokens: '10' }), { param: 'max_tokens', message: /integer/ }],
    ['max_tokens is a float', user('x', 'gpt-4o-mini', { max_tokens: 1.5 }), { param: 'max_tokens', message: /integer/ }],
    ['max_tokens is 0', user('x', 'gpt-4o-mini', { max_tokens: 0 }), { param: 'max_tokens', message: /between 1/ }],
    ['max_tokens is negative', user('x', 'gpt-4o-mini', { max_tokens: -5 }), { param: 'max_tokens', message: /between/ }],
    ['max_completion_tokens is 0', user('x', 'gpt-4o-mini', { max_completion_tokens: 0 }), { param: 'max_completion_tokens' }],
    ['temperature 2.5', user('x', 'gpt-4o-mini', { temperature: 2.5 }), { param: 'temperature', message: /between 0 and 2/ }],
    ['temperature -0.1', user('x', 'gpt-4o-mini', { temperature: -0.1 }), { param: 'temperature', message: /between 0 and 2/ }],
    ['temperature is a string', user('x', 'gpt-4o-mini', { temperature: 'hot' }), { param: 'temperature', message: /number/ }],
    ['top_p 1.5', user('x', 'gpt-4o-mini', { top_p: 1.5 }), { param: 'top_p' }],
  ];
  for (const [name, body, want] of cases) {
    test(`${name} → 400`, async () => {
      const r = await chat(body);
      assertError(r, 400, { type: 'invalid_request_error', ...want });
    });
  }

  test('a bad request never reaches the provider', async () => {
    const before = (await mockStats(mock.url)).requests;
    await chat({ model: 'gpt-4o-mini', messages: [] });
    await chat('{');
    assert.equal((await mockStats(mock.url)).requests, before);
  });

  test('unknown model → 404 model_not_found naming the model and GET /v1/models', async () => {
    const r = await chat(user('x', 'gpt-9-ultra'));
    assertError(r, 404, { code: 'model_not_found', param: 'model', message: /gpt-9-ultra.*\/v1\/models/ });
  });

  test('no key, wrong key, wrong scheme → 401 before the body is even read', async () => {
    for (const headers of [{}, { authorization: 'Bearer bk-nope' }, { authorization: `Basic ${gw.key}` }, { authorization: 'Bearer ' }]) {
      const r = await chat(user('x'), headers);
      assertError(r, 401, { message: /key/i });
    }
    // an invalid body with no key is still a 401, not a 400
    assertError(await chat('{', {}), 401);
    // GET /v1/models needs the key too
    assertError(await get(`${gw.baseURL}/models`, { authorization: 'Bearer bk-nope' }), 401);
  });

  test('wrong method → 405, unknown path → 404', async () => {
    assertError(await get(CHAT, gw.auth), 405, { message: /POST/ });
    assertError(await post(CHAT, user('x'), gw.auth, { method: 'PUT' }), 405, { message: /POST/ });
    assertError(await get(`${gw.url}/v2/chat`, gw.auth), 404, { message: /\/v2\/chat/ });
    assertError(await post(`${gw.baseURL}/audio/speech`, { input: 'x' }, gw.auth), 404, { message: /audio\/speech/ });
    // embeddings are served now (embeddings.test.mjs): GET is the wrong method
    assertError(await get(`${gw.baseURL}/embeddings`, gw.auth), 405, { message: /POST/ });
  });
});

describe('protocol limits', () => {
  const big = () => user('x'.repeat(MAX_BODY + 100));

  test('body over limits.max_body_bytes → 413 JSON (fresh connection)', async () => {
    const r = await rawRequest(gw.port, httpRequest('POST', '/v1/chat/completions', { headers: gw.auth, body: big() }));
    assert.equal(r.responses.length, 1, r.raw.slice(0, 500));
    const res = r.responses[0];
    let json = null;
    try {
      json = JSON.parse(res.body);
    } catch {}
    assertError({ status: res.status, headers: res.headers, text: res.body, json }, 413, { message: /max_body_bytes|too large/ });
  });

  test('body over limits.max_body_bytes → 413 JSON on a keep-alive connection after a first request', async () => {
    const first = httpRequest('GET', '/healthz');
    const second = httpRequest('POST', '/v1/chat/completions', { headers: gw.auth, body: big() });
    // sequential, not pipelined: the second is written after the first answer arrived
    const c = new Conn(gw.port);
    await c.ready;
    try {
      assert.equal((await c.request(first)).status, 200);
      await c.write(second);
      assert.ok(await c.waitResponses(2, 5000), `no answer to the second request (closed=${c.closed})`);
      const res = c.responses[1];
      let json = null;
      try {
        json = JSON.parse(res.body);
      } catch {}
      assertError({ status: res.status, headers: res.headers, text: res.body, json }, 413, { message: /max_body_bytes|too large/ });
    } finally {
      c.close();
    }
  });

  test('body over limit through fetch (undici) → 413 JSON', async () => {
    await chat(user('warm the connection pool'));
    const r = await chat(big());
    assertError(r, 413, { message: /max_body_bytes|too large/ });
  });

  test(`more than limits.max_headers (${MAX_HEADERS}) header lines → 431`, async () => {
    const many = {};
    for (let i = 0; i < MAX_HEADERS + 5; i++) many[`x-extra-${i}`] = 'v';
    const r = await chat(user('x'), { ...gw.auth, ...many });
    assertError(r, 431, { message: /max_headers/ });
  });

  test(`headers over limits.max_header_bytes (${MAX_HEADER_BYTES}) → 431`, async () => {
    const r = await chat(user('x'), { ...gw.auth, 'x-big': 'y'.repeat(MAX_HEADER_BYTES + 500) });
    assertError(r, 431, { message: /max_header_bytes/ });
  });

  test('headers far over the limit (above evhttp\'s own 4× cap) → still a JSON 431', async () => {
    const r = await rawRequest(
      gw.port,
      httpRequest('POST', '/v1/chat/completions', { headers: { ...gw.auth, 'x-big': 'y'.repeat(MAX_HEADER_BYTES * 5) }, body: user('x') }),
    );
    assert.equal(r.responses.length, 1, r.raw.slice(0, 500));
    const res = r.responses[0];
    let json = null;
    try {
      json = JSON.parse(res.body);
    } catch {}
    assertError({ status: res.status, headers: res.headers, text: res.body, json }, 431);
  });

  test('the gateway still serves after all that', async () => {
    const r = await chat(user('x'));
    assert.equal(r.status, 200, r.text);
  });
});

describe('provider failures', () => {
  // bridle runs with its shipped defaults here: a failed attempt is retried
  // (max_attempts 3, an ambiguous 500/502/cut answer once), counts against
  // the target's breaker (opens at 5 in a row) and a 429's Retry-After pauses
  // the target for everyone. The faults are `[[mock:…]]` markers, so every
  // attempt of a request meets the same fault; each test gets a gateway of
  // its own, so one test's breaker state, pause or retry budget does not
  // decide the next test's answer.
  before(async () => mockReset(mock.url));

  test('upstream 400 → 400 with the upstream message, one attempt (fatal: not retried), breaker untouched, not retryable', async (t) => {
    const g = await ownGateway(t);
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
      const n0 = await callsTo(model);
      const r = await chat(user('[[mock:status=400]]', model), g.auth, g);
      const e = assertError(r, 400, { type: 'invalid_request_error', message: /mock: injected failure/, retry: false });
      assert.match(e.message, new RegExp(model.replace('.', '\\.')), e.message);
      assertAttempt(r, model, 1);
      assert.equal((await callsTo(model)) - n0, 1, `${model}: one upstream call`);
      assert.deepEqual(pick(await breakerOf(g, model)), { state: 'closed', consecutive_failures: 0 }, `${model}: a 4xx never counts against the breaker`);
    }
  });

  test('upstream 401/403 → 502 upstream_auth_error without echoing the upstream text, one attempt each', async (t) => {
    const g = await ownGateway(t);
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash']) {
      for (const status of [401, 403]) {
        const n0 = await callsTo(model);
        const r = await chat(user(`[[mock:status=${status}]]`, model), g.auth, g);
        const e = assertError(r, 502, { type: 'upstream_auth_error', message: /credentials|api_key/, retry: false });
        assert.doesNotMatch(e.message, /mock: injected failure|invalid_api_key|sk-mock/, `${model} ${status}: ${e.message}`);
        assertAttempt(r, model, 1);
        assert.equal((await callsTo(model)) - n0, 1, `${model} ${status}: not retried`);
      }
      assert.deepEqual(pick(await breakerOf(g, model)), { state: 'closed', consecutive_failures: 0 }, model);
    }
  });

  test('upstream 429 with a Retry-After over resilience.max_wait_ms (60 s) → 429 at once, the header passed on, retryable; the target is then paused for everyone', async (t) => {
    const g = await ownGateway(t);
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash']) {
      const n0 = await callsTo(model);
      const t0 = Date.now();
      const r = await chat(user('[[mock:status=429,retry_after=61]]', model), g.auth, g);
      assertError(r, 429, { retry: true });
      assert.ok(Date.now() - t0 < 1000 * SLOW, `${model}: a wait over max_wait_ms was sat out (${Date.now() - t0} ms)`);
      assert.equal(r.headers['retry-after'], '61', `${model}: ${JSON.stringify(r.headers)}`);
      assertAttempt(r, model, 1);
      assert.equal((await callsTo(model)) - n0, 1, `${model}: not retried`);
      // "a 429 pauses the target for everyone": the next request is refused
      // without an upstream call, as a rate limit (not a breaker), with the
      // pause's remaining time
      const next = await chat(user('after the 429', model), g.auth, g);
      assertError(next, 429, { code: 'rate_limited', retry: true, message: /rate-limiting/ });
      assert.doesNotMatch(next.json.error.message, /circuit/);
      assert.ok(Number(next.headers['retry-after']) >= 61 - 2 * SLOW && Number(next.headers['retry-after']) <= 61, `${model}: ${JSON.stringify(next.headers)}`);
      assert.equal(next.headers['x-bridle-attempts'], '0', model);
      assert.equal((await callsTo(model)) - n0, 1, `${model}: the paused target was called`);
      const b = await breakerOf(g, model);
      assert.equal(b.consecutive_failures, 0, `${model}: a 429 never counts against the breaker: ${JSON.stringify(b)}`);
      assert.ok(b.retry_in_ms > 61000 - 2000 * SLOW && b.retry_in_ms <= 61000, `${model}: the pause in /v1/bridle/health: ${JSON.stringify(b)}`);
    }
    // retry-after-ms is passed on as whole seconds, rounded up
    const ms = await chat(user('[[mock:status=429,retry_after_ms=61500]]', 'llama3.2'), g.auth, g);
    assertError(ms, 429, { retry: true });
    assert.equal(ms.headers['retry-after'], '62', JSON.stringify(ms.headers));
  });

  test('upstream 429 with Retry-After: 1 → bridle sits the pause out and retries (3 attempts, ≥ 2 s), then the 429, retryable', async (t) => {
    const g = await ownGateway(t);
    const n0 = await callsTo('gpt-4o-mini');
    const t0 = Date.now();
    const r = await chat(user('[[mock:status=429,retry_after=1]]'), g.auth, g);
    const took = Date.now() - t0;
    assertError(r, 429, { retry: true });
    assert.equal(r.headers['retry-after'], '1', JSON.stringify(r.headers));
    assertAttempt(r, 'gpt-4o-mini', 3);
    assert.equal((await callsTo('gpt-4o-mini')) - n0, 3);
    assert.ok(took >= 2000, `the two advised pauses of 1 s were not sat out: ${took} ms`);
  });

  test('upstream 429 insufficient_quota → 429 with x-should-retry: false, one attempt (waiting does not add credit)', async (t) => {
    const g = await ownGateway(t);
    const n0 = await callsTo('gpt-4o-mini');
    const r = await chat(user('[[mock:status=429,code=insufficient_quota]]'), g.auth, g);
    assertError(r, 429, { code: 'insufficient_quota', retry: false, message: /quota/ });
    assertAttempt(r, 'gpt-4o-mini', 1);
    assert.equal((await callsTo('gpt-4o-mini')) - n0, 1);
    assert.deepEqual(pick(await breakerOf(g, 'gpt-4o-mini')), { state: 'closed', consecutive_failures: 0 });
  });

  // [model, upstream status, bridle's status, attempts, x-should-retry]:
  // 503/529 are "overloaded" (retryable: 3 attempts, a client may retry);
  // 500/502 are ambiguous (the provider may have done the work: retried once,
  // then x-should-retry: false).
  const fiveXX = [
    ['gpt-4o-mini', 500, 502, 2, 'false'],
    ['gpt-4o-mini', 502, 502, 2, 'false'],
    ['gpt-4o-mini', 503, 503, 3, 'true'],
    ['claude-haiku-4-5', 500, 502, 2, 'false'],
    ['claude-haiku-4-5', 529, 503, 3, 'true'],
    ['gemini-2.5-flash', 503, 503, 3, 'true'],
    ['llama3.2', 500, 502, 2, 'false'],
  ];
  for (const [model, status, want, attempts, retry] of fiveXX) {
    test(`upstream ${status} from ${model} → ${want} after ${attempts} attempts, x-should-retry: ${retry}; each attempt counts against the breaker`, async (t) => {
      const g = await ownGateway(t);
      const n0 = await callsTo(model);
      const r = await chat(user(`[[mock:status=${status}]]`, model), g.auth, g);
      assertError(r, want, { retry: retry === 'true' });
      assertAttempt(r, model, attempts);
      assert.equal((await callsTo(model)) - n0, attempts);
      assert.deepEqual(pick(await breakerOf(g, model)), { state: 'closed', consecutive_failures: attempts });
    });
  }

  test('anthropic HTTP 503 (body type api_error) → 503 retryable, like 503 from the other dialects', async (t) => {
    const g = await ownGateway(t);
    const r = await chat(user('[[mock:status=503]]', 'claude-haiku-4-5'), g.auth, g);
    assertError(r, 503, { retry: true });
    assertAttempt(r, 'claude-haiku-4-5', 3);
  });

  test('malformed 2xx body → 502 after one retry (ambiguous), x-should-retry: false', async (t) => {
    const g = await ownGateway(t);
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
      const n0 = await callsTo(model);
      const r = await chat(user('[[mock:malformed=1]]', model), g.auth, g);
      assertError(r, 502, { retry: false, message: /could not be read|malformed|not/ });
      assertAttempt(r, model, 2);
      assert.equal((await callsTo(model)) - n0, 2, model);
      assert.deepEqual(pick(await breakerOf(g, model)), { state: 'closed', consecutive_failures: 2 }, model);
    }
  });

  test('a non-stream answer cut in half → 502 upstream_incomplete_response after one retry (ambiguous), x-should-retry: false', async (t) => {
    const g = await ownGateway(t);
    const n0 = await callsTo('gpt-4o-mini');
    const r = await chat(user('[[mock:cut_after=1]]'), g.auth, g);
    assertError(r, 502, { code: 'upstream_incomplete_response', retry: false });
    assertAttempt(r, 'gpt-4o-mini', 2);
    assert.equal((await callsTo('gpt-4o-mini')) - n0, 2);
  });

  test(`hang → timeout at the provider's first_byte_ms (${FIRST_BYTE_MS} ms) on each of 3 attempts, 504 with a clear message`, async (t) => {
    const g = await ownGateway(t);
    const n0 = await callsTo('gpt-4o-mini');
    const t0 = Date.now();
    const r = await chat(user('[[mock:hang=1]]'), g.auth, g);
    const ms = Date.now() - t0;
    assertError(r, 504, { code: 'upstream_timeout', retry: true, message: /first-byte timeout/ });
    assertAttempt(r, 'gpt-4o-mini', 3);
    assert.equal((await callsTo('gpt-4o-mini')) - n0, 3);
    // 3 × first_byte_ms, plus two full-jitter backoffs below 250 and 500 ms
    assert.ok(ms >= 3 * FIRST_BYTE_MS - 50 && ms < 3 * FIRST_BYTE_MS + 750 + 1000 * SLOW, `answered after ${ms} ms`);
    assert.deepEqual(pick(await breakerOf(g, 'gpt-4o-mini')), { state: 'closed', consecutive_failures: 3 });
    // the hung upstream calls were released, upstream and in bridle's own count
    await waitQuiet(g);
  });

  test('stream cut mid-way → the chunks so far, a data: {"error":…} event, then [DONE]; not retried (bytes were sent)', async (t) => {
    const g = await ownGateway(t);
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
      const n0 = await callsTo(model);
      const r = await chat(user('[[mock:cut_after=3]]', model, { stream: true, stream_options: { include_usage: true } }), g.auth, g);
      assert.equal(r.status, 200, `${model}: ${r.text}`);
      assertAttempt(r, model, 1);
      const ev = parseSSE(r.text);
      assert.equal(ev.at(-1).data, '[DONE]', `${model}:\n${r.text}`);
      const err = JSON.parse(ev.at(-2).data);
      assert.equal(typeof err.error?.message, 'string', `${model}: ${ev.at(-2).data}`);
      assert.match(err.error.message, /cut|closed|ended|incomplete/i, err.error.message);
      const chunks = ev.slice(0, -2).map((e) => JSON.parse(e.data));
      for (const c of chunks) assert.equal(c.error, undefined, `${model}: a second error ${JSON.stringify(c)}`);
      const text = chunks.flatMap((c) => c.choices.map((ch) => ch.delta?.content ?? '')).join('');
      assert.equal(text, words(answerFor(model)).slice(0, 3).join(' '), `${model}: text relayed before the cut`);
      assert.ok(!chunks.some((c) => c.usage), `${model}: no usage chunk after a cut`);
      assert.ok(!chunks.some((c) => c.choices.some((ch) => ch.finish_reason)), `${model}: no finish after a cut`);
      assert.equal((await callsTo(model)) - n0, 1, `${model}: a stream is never retried once it started`);
      assert.deepEqual(pick(await breakerOf(g, model)), { state: 'closed', consecutive_failures: 1 }, `${model}: a cut stream is a failure`);
    }
  });

  test('an upstream error sent as the stream starts (status ≥ 400 on a stream request) is a plain error reply, retried like any other', async (t) => {
    const g = await ownGateway(t);
    const r = await chat(user('[[mock:status=503]]', 'gpt-4o-mini', { stream: true }), g.auth, g);
    assertError(r, 503, { retry: true });
    assertAttempt(r, 'gpt-4o-mini', 3);
  });

  test('five failed attempts in a row open the breaker: the next request is shed (503 circuit_open, Retry-After, x-should-retry: false, no upstream call)', async (t) => {
    const g = await ownGateway(t);
    // 3 attempts (503) + 2 attempts (500, ambiguous) = 5 consecutive failures
    assertError(await chat(user('[[mock:status=503]]'), g.auth, g), 503, { retry: true });
    assertError(await chat(user('[[mock:status=500]]'), g.auth, g), 502, { retry: false });
    const b = await breakerOf(g, 'gpt-4o-mini');
    assert.equal(b.state, 'open', JSON.stringify(b));
    assert.equal(b.opens_total, 1, JSON.stringify(b));
    // the first open period is breaker_open_ms (5000) ± 20 %
    assert.ok(b.retry_in_ms > 4000 - 1000 * SLOW && b.retry_in_ms <= 6000, JSON.stringify(b));
    const n0 = await callsTo('gpt-4o-mini');
    const r = await chat(user('healthy request'), g.auth, g);
    assertError(r, 503, { code: 'circuit_open', retry: false });
    assert.ok(Number(r.headers['retry-after']) >= 5 - 2 * SLOW && Number(r.headers['retry-after']) <= 6, JSON.stringify(r.headers));
    assert.equal(r.headers['x-bridle-attempts'], '0');
    assert.equal((await callsTo('gpt-4o-mini')) - n0, 0);
  });

  test('the process keeps serving afterwards, and nothing is left in flight upstream', async () => {
    const r = await chat(user('all good?'));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, answerFor('gpt-4o-mini'));
    assertAttempt(r, 'gpt-4o-mini', 1);
    await waitQuiet(gw);
  });
});

describe('failover across a route', () => {
  // Route r = [gpt-4o-mini, claude-haiku-4-5]. With the default resilience a
  // failed candidate is left for the next one at once; the last candidate is
  // retried after a backoff (up to 3 attempts). One gateway per test: a 429
  // pauses gpt-4o-mini for everyone, which would change the next test.
  before(async () => mockReset(mock.url));
  afterEach(async () => mockReset(mock.url));

  const byModel = async () => (await mockStats(mock.url)).by_model || {};
  const delta = (a, b, m) => (b[m] || 0) - (a[m] || 0);

  test('the first candidate answers 503 → the second answers; attempts 2, provider anthropic', async (t) => {
    const g = await ownGateway(t);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=503' });
    const before = await byModel();
    const r = await chat(user('fail over please', 'r'), g.auth, g);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    assert.equal(r.headers['x-bridle-model'], 'claude-haiku-4-5');
    assert.equal(r.headers['x-bridle-route'], 'r');
    assert.equal(r.json.choices[0].message.content, answerFor('claude-haiku-4-5'));
    // the answer's cost: claude-haiku-4-5's prices for the mock's usage
    const e = expected(user('fail over please').messages, 'claude-haiku-4-5');
    const u = billed('anthropic', e);
    assert.equal(r.headers['x-bridle-cost-usd'], formatUsd(costPusd('claude-haiku-4-5', u)));
    // a route's baseline is its first candidate: the failover cost more than gpt-4o-mini would have
    assert.equal(r.headers['x-bridle-savings-usd'], formatSavings(costPusd('gpt-4o-mini', u) - costPusd('claude-haiku-4-5', u)));
    const after = await byModel();
    assert.equal(delta(before, after, 'gpt-4o-mini'), 1);
    assert.equal(delta(before, after, 'claude-haiku-4-5'), 1);
    assert.deepEqual(pick(await breakerOf(g, 'gpt-4o-mini')), { state: 'closed', consecutive_failures: 1 });
    assert.deepEqual(pick(await breakerOf(g, 'claude-haiku-4-5')), { state: 'closed', consecutive_failures: 0 });
  });

  test('no failure → the first candidate; attempts 1', async (t) => {
    const g = await ownGateway(t);
    const r = await chat(user('plain', 'r'), g.auth, g);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '1');
    assert.equal(r.headers['x-bridle-provider'], 'openai');
    assert.equal(r.headers['x-bridle-route'], 'r');
  });

  test('failover on 429 (at once, even with a Retry-After bridle could sit out), and gpt-4o-mini is then paused for the route', async (t) => {
    const g = await ownGateway(t);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=429,retry_after=30' });
    const t0 = Date.now();
    let r = await chat(user('x', 'r'), g.auth, g);
    assert.equal(r.status, 200, r.text);
    assert.ok(Date.now() - t0 < 1000 * SLOW, `waited ${Date.now() - t0} ms`);
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    // paused: the next request skips gpt-4o-mini without calling it
    const before = await byModel();
    r = await chat(user('y', 'r'), g.auth, g);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '1');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    assert.equal(delta(before, await byModel(), 'gpt-4o-mini'), 0);
  });

  test('failover on a hang (first-byte timeout)', async (t) => {
    const g = await ownGateway(t);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'hang=1' });
    const r = await chat(user('x', 'r'), g.auth, g);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    await waitQuiet(g);
  });

  test('failover before a stream starts', async (t) => {
    const g = await ownGateway(t);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=503' });
    const r = await chat(user('x', 'r', { stream: true }), g.auth, g);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    const ev = parseSSE(r.text);
    assert.equal(ev.at(-1).data, '[DONE]');
    const text = ev
      .slice(0, -1)
      .map((e) => JSON.parse(e.data))
      .flatMap((c) => c.choices.map((ch) => ch.delta?.content ?? ''))
      .join('');
    assert.equal(text, answerFor('claude-haiku-4-5'));
  });

  test('a 400 is NOT failed over', async (t) => {
    const g = await ownGateway(t);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=400' });
    const before = await byModel();
    const r = await chat(user('x', 'r'), g.auth, g);
    assertError(r, 400, { message: /mock: injected failure/, retry: false });
    assert.equal(r.headers['x-bridle-attempts'], '1');
    assert.equal(r.headers['x-bridle-provider'], 'openai');
    const after = await byModel();
    assert.equal(delta(before, after, 'claude-haiku-4-5'), 0, 'the second candidate was not called');
  });

  test('upstream auth failure is NOT failed over either', async (t) => {
    const g = await ownGateway(t);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=401' });
    const r = await chat(user('x', 'r'), g.auth, g);
    assertError(r, 502, { type: 'upstream_auth_error', retry: false });
    assert.equal(r.headers['x-bridle-attempts'], '1');
  });

  test('each candidate fails once → the last candidate is retried after a backoff and answers; attempts 3', async (t) => {
    const g = await ownGateway(t);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=503' });
    await mockFault(mock.url, { model: 'claude-haiku-4-5', count: 1, directives: 'status=529' });
    const before = await byModel();
    const r = await chat(user('x', 'r'), g.auth, g);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '3');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    const after = await byModel();
    assert.equal(delta(before, after, 'gpt-4o-mini'), 1);
    assert.equal(delta(before, after, 'claude-haiku-4-5'), 2);
  });

  test('every candidate keeps failing → the last error; attempts 4 (1 on the first candidate, 3 on the last)', async (t) => {
    const g = await ownGateway(t);
    const before = await byModel();
    const r = await chat(user('[[mock:status=503]]', 'r'), g.auth, g);
    assertError(r, 503, { retry: true });
    assert.equal(r.headers['x-bridle-attempts'], '4');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    assert.equal(r.headers['x-bridle-route'], 'r');
    const after = await byModel();
    assert.equal(delta(before, after, 'gpt-4o-mini'), 1);
    assert.equal(delta(before, after, 'claude-haiku-4-5'), 3);
  });

  test('a stream that failed after it started is not failed over', async (t) => {
    const g = await ownGateway(t);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'cut_after=2' });
    const before = await byModel();
    const r = await chat(user('x', 'r', { stream: true }), g.auth, g);
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-bridle-provider'], 'openai');
    assert.equal(r.headers['x-bridle-attempts'], '1');
    const ev = parseSSE(r.text);
    assert.equal(ev.at(-1).data, '[DONE]');
    assert.ok(JSON.parse(ev.at(-2).data).error, r.text);
    const after = await byModel();
    assert.equal(delta(before, after, 'claude-haiku-4-5'), 0);
    assert.equal(delta(before, after, 'gpt-4o-mini'), 1);
    const last = await mockLast(mock.url);
    assert.equal(last[0].body.model, 'gpt-4o-mini');
  });
});

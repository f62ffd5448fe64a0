// Every bad input and every provider failure ends in the OpenAI error JSON
// with the right status, a message that says what to fix, and x-should-retry
// where a retry cannot help. Also: failover across a route's candidates.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

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
  startBridle,
  startMock,
} from './lib/harness.mjs';
import { Conn } from './lib/conn.mjs';
import { answerFor, words } from './lib/mockmath.mjs';

const FIRST_BYTE_MS = 500;
const MAX_BODY = 4096;
const MAX_HEADERS = 30;
const MAX_HEADER_BYTES = 2000;

let mock;
let gw;
let CHAT;

before(async () => {
  mock = await startMock();
  const timeouts = { first_byte_ms: FIRST_BYTE_MS };
  gw = await startBridle({
    config: mockConfig(mock.url, {
      limits: { max_body_bytes: MAX_BODY, max_headers: MAX_HEADERS, max_header_bytes: MAX_HEADER_BYTES },
      providers: { openai: { timeouts }, anthropic: { timeouts }, gemini: { timeouts }, ollama: { timeouts } },
      routes: { r: { candidates: ['gpt-4o-mini', 'claude-haiku-4-5'] } },
    }),
  });
  CHAT = `${gw.baseURL}/chat/completions`;
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
});

const user = (content, model = 'gpt-4o-mini', extra = {}) => ({ model, messages: [{ role: 'user', content }], ...extra });
const chat = (body, headers = gw.auth) => post(CHAT, body, headers, { timeoutMs: 10000 });

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
  if (retry === false) assert.equal(r.headers['x-should-retry'], 'false', `x-should-retry: ${what}`);
  else if (retry === true) assert.equal(r.headers['x-should-retry'], 'true', `x-should-retry: ${what}`);
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
    assertError(await post(`${gw.baseURL}/embeddings`, { input: 'x' }, gw.auth), 404, { message: /embeddings/ });
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
  before(async () => mockReset(mock.url));

  test('upstream 400 → 400 with the upstream message, not failed over, not retryable', async () => {
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
      const r = await chat(user('[[mock:status=400]]', model));
      const e = assertError(r, 400, { type: 'invalid_request_error', message: /mock: injected failure/ });
      assert.match(e.message, new RegExp(model.replace('.', '\\.')), e.message);
    }
  });

  test('upstream 401/403 → 502 upstream_auth_error without echoing the upstream text', async () => {
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash']) {
      for (const status of [401, 403]) {
        const r = await chat(user(`[[mock:status=${status}]]`, model));
        const e = assertError(r, 502, { type: 'upstream_auth_error', message: /credentials|api_key/ });
        assert.doesNotMatch(e.message, /mock: injected failure|invalid_api_key|sk-mock/, `${model} ${status}: ${e.message}`);
      }
    }
  });

  test('upstream 429 with Retry-After → 429, retry-after header, retryable', async () => {
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash']) {
      const r = await chat(user('[[mock:status=429,retry_after=7]]', model));
      assertError(r, 429, { retry: true });
      assert.equal(r.headers['retry-after'], '7', `${model}: ${JSON.stringify(r.headers)}`);
    }
    const ms = await chat(user('[[mock:status=429,retry_after_ms=1500]]'));
    assertError(ms, 429, { retry: true });
    assert.equal(ms.headers['retry-after'], '2', JSON.stringify(ms.headers));
  });

  test('upstream 429 insufficient_quota → 429 with x-should-retry: false', async () => {
    const r = await chat(user('[[mock:status=429,code=insufficient_quota]]'));
    assertError(r, 429, { code: 'insufficient_quota', retry: false, message: /quota/ });
  });

  test('upstream 5xx → 5xx', async () => {
    const cases = [
      ['gpt-4o-mini', 500],
      ['gpt-4o-mini', 502],
      ['gpt-4o-mini', 503],
      ['claude-haiku-4-5', 500],
      ['claude-haiku-4-5', 529],
      ['gemini-2.5-flash', 503],
      ['llama3.2', 500],
    ];
    for (const [model, status] of cases) {
      const r = await chat(user(`[[mock:status=${status}]]`, model));
      assert.ok(r.status >= 500 && r.status <= 599, `${model} ${status} → ${r.status} ${r.text}`);
      assertError(r, r.status, { retry: null });
      if (status === 503 || status === 529) {
        assert.equal(r.status, 503, `${model} ${status}`);
        assert.equal(r.headers['x-should-retry'], 'true', `${model} ${status} is retryable`);
      }
    }
  });

  test('anthropic HTTP 503 (body type api_error) → 503 retryable, like 503 from the other dialects', async () => {
    const r = await chat(user('[[mock:status=503]]', 'claude-haiku-4-5'));
    assertError(r, 503, { retry: true });
  });

  test('malformed 2xx body → 502', async () => {
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
      const r = await chat(user('[[mock:malformed=1]]', model));
      assertError(r, 502, { retry: null, message: /could not be read|malformed|not/ });
    }
  });

  test('a non-stream answer cut in half → 502', async () => {
    const r = await chat(user('[[mock:cut_after=1]]'));
    assertError(r, 502, { retry: null });
  });

  test(`hang → timeout at the provider's first_byte_ms (${FIRST_BYTE_MS} ms) with a clear message`, async () => {
    const t0 = Date.now();
    const r = await chat(user('[[mock:hang=1]]'));
    const ms = Date.now() - t0;
    assert.ok([502, 504].includes(r.status), `${r.status} ${r.text}`);
    assertError(r, r.status, { retry: null, message: /time/i });
    assert.ok(ms >= FIRST_BYTE_MS - 50 && ms < FIRST_BYTE_MS + 1500, `answered after ${ms} ms`);
    // the hung upstream call was released
    for (let i = 0; i < 50 && (await mockStats(mock.url)).in_flight > 0; i++) await sleep(20);
    assert.equal((await mockStats(mock.url)).in_flight, 0);
  });

  test('stream cut mid-way → the chunks so far, a data: {"error":…} event, then [DONE]', async () => {
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
      const r = await chat(user('[[mock:cut_after=3]]', model, { stream: true, stream_options: { include_usage: true } }));
      assert.equal(r.status, 200, `${model}: ${r.text}`);
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
    }
  });

  test('an upstream error sent as the stream starts (status ≥ 400 on a stream request) is a plain error reply', async () => {
    const r = await chat(user('[[mock:status=503]]', 'gpt-4o-mini', { stream: true }));
    assertError(r, 503, { retry: true });
  });

  test('the process keeps serving afterwards, and nothing is left in flight upstream', async () => {
    const r = await chat(user('all good?'));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, answerFor('gpt-4o-mini'));
    for (let i = 0; i < 50 && (await mockStats(mock.url)).in_flight > 0; i++) await sleep(20);
    assert.equal((await mockStats(mock.url)).in_flight, 0);
  });
});

describe('failover across a route', () => {
  before(async () => mockReset(mock.url));

  const byModel = async () => (await mockStats(mock.url)).by_model || {};

  test('the first candidate answers 503 → the second answers; attempts 2, provider anthropic', async () => {
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=503' });
    const before = await byModel();
    const r = await chat(user('fail over please', 'r'));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    assert.equal(r.headers['x-bridle-model'], 'claude-haiku-4-5');
    assert.equal(r.headers['x-bridle-route'], 'r');
    assert.equal(r.json.choices[0].message.content, answerFor('claude-haiku-4-5'));
    assert.ok(r.headers['x-bridle-cost-usd']);
    const after = await byModel();
    assert.equal((after['gpt-4o-mini'] || 0) - (before['gpt-4o-mini'] || 0), 1);
    assert.equal((after['claude-haiku-4-5'] || 0) - (before['claude-haiku-4-5'] || 0), 1);
  });

  test('no failure → the first candidate; attempts 1', async () => {
    const r = await chat(user('plain', 'r'));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '1');
    assert.equal(r.headers['x-bridle-provider'], 'openai');
    assert.equal(r.headers['x-bridle-route'], 'r');
  });

  test('failover also on 429, a hang (first-byte timeout) and before a stream starts', async () => {
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=429,retry_after=30' });
    let r = await chat(user('x', 'r'));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');

    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'hang=1' });
    r = await chat(user('x', 'r'));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');

    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=503' });
    r = await chat(user('x', 'r', { stream: true }));
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

  test('a 400 is NOT failed over', async () => {
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=400' });
    const before = await byModel();
    const r = await chat(user('x', 'r'));
    assertError(r, 400, { message: /mock: injected failure/ });
    assert.equal(r.headers['x-bridle-attempts'], '1');
    assert.equal(r.headers['x-bridle-provider'], 'openai');
    const after = await byModel();
    assert.equal(after['claude-haiku-4-5'] || 0, before['claude-haiku-4-5'] || 0, 'the second candidate was not called');
  });

  test('upstream auth failure is NOT failed over either', async () => {
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=401' });
    const r = await chat(user('x', 'r'));
    assertError(r, 502, { type: 'upstream_auth_error' });
    assert.equal(r.headers['x-bridle-attempts'], '1');
  });

  test('every candidate fails → the last error, attempts 2', async () => {
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=503' });
    await mockFault(mock.url, { model: 'claude-haiku-4-5', count: 1, directives: 'status=529' });
    const r = await chat(user('x', 'r'));
    assertError(r, 503, { retry: true });
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    assert.equal(r.headers['x-bridle-route'], 'r');
  });

  test('a stream that failed after it started is not failed over', async () => {
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'cut_after=2' });
    const before = await byModel();
    const r = await chat(user('x', 'r', { stream: true }));
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-bridle-provider'], 'openai');
    const ev = parseSSE(r.text);
    assert.equal(ev.at(-1).data, '[DONE]');
    assert.ok(JSON.parse(ev.at(-2).data).error, r.text);
    const after = await byModel();
    assert.equal(after['claude-haiku-4-5'] || 0, before['claude-haiku-4-5'] || 0);
    const last = await mockLast(mock.url);
    assert.equal(last[0].body.model, 'gpt-4o-mini');
  });
});

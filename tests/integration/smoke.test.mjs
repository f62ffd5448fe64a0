// Smoke test: the binaries start, answer health checks, authenticate, and
// carry one chat completion through the mock. Proves the harness itself.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import OpenAI from 'openai';

import { get, httpRequest, mockConfig, mockStats, post, rawRequest, startBridle, startMock } from './lib/harness.mjs';
import { answerFor } from './lib/mockmath.mjs';

let mock;
let gw;

before(async () => {
  mock = await startMock();
  gw = await startBridle({ config: mockConfig(mock.url) });
});

// No after() needed: the harness stops both when the file ends and fails the
// file if either printed a sanitizer report (ASan pass).

const chat = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hello' }] };

test('GET /healthz and /readyz answer 200', async () => {
  const h = await get(`${gw.url}/healthz`);
  assert.equal(h.status, 200, h.text);
  assert.deepEqual(h.json, { status: 'ok' });
  const r = await get(`${gw.url}/readyz`);
  assert.equal(r.status, 200, r.text);
});

test('a chat completion goes through the mock', async () => {
  const before = await mockStats(mock.url);
  const r = await post(`${gw.baseURL}/chat/completions`, chat, gw.auth);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.object, 'chat.completion');
  assert.equal(r.json.choices[0].message.content, answerFor('gpt-4o-mini'));
  // 'Hello': 5 bytes → 2 prompt tokens; the 8-word answer → 8 completion tokens
  assert.equal(r.json.usage.prompt_tokens, 2, JSON.stringify(r.json.usage));
  assert.equal(r.json.usage.completion_tokens, 8, JSON.stringify(r.json.usage));
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
  assert.equal(r.headers['x-bridle-attempts'], '1');
  const after = await mockStats(mock.url);
  assert.equal(after.requests - before.requests, 1, `mock requests: ${JSON.stringify(after)}`);
});

test('the openai SDK works against bridle', async () => {
  const client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0, timeout: 10000 });
  const c = await client.chat.completions.create(chat);
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.usage.total_tokens, 2 + 8);
});

test('401 without a key, and with a wrong one', async () => {
  const r = await post(`${gw.baseURL}/chat/completions`, chat);
  assert.equal(r.status, 401, r.text);
  assert.equal(r.headers['x-should-retry'], 'false');
  assert.equal(typeof r.json?.error?.message, 'string', r.text);
  const w = await post(`${gw.baseURL}/chat/completions`, chat, { authorization: 'Bearer bk-wrong' });
  assert.equal(w.status, 401, w.text);
  assert.equal(w.headers['x-should-retry'], 'false');
});

// Why evhttp and not libevhtp (README.md): libevhtp 1.2.18 corrupts the path
// when the request line arrives in several TCP segments and drops pipelined
// requests. This pins the behaviour we chose evhttp for.
test('requests split into 1-, 3- and 7-byte segments, two pipelined per connection', async () => {
  const one = httpRequest('POST', '/v1/chat/completions', { headers: gw.auth, body: chat });
  const health = httpRequest('GET', '/healthz');
  for (const seg of [1, 3, 7]) {
    const r = await rawRequest(gw.port, one + health, seg);
    assert.equal(r.responses.length, 2, `segment ${seg}: ${r.raw.slice(0, 500)}`);
    assert.equal(r.responses[0].status, 200, `segment ${seg}: ${r.responses[0].body}`);
    assert.equal(JSON.parse(r.responses[0].body).object, 'chat.completion');
    assert.equal(r.responses[1].status, 200, `segment ${seg}: ${r.responses[1].body}`);
    assert.deepEqual(JSON.parse(r.responses[1].body), { status: 'ok' });
  }
});

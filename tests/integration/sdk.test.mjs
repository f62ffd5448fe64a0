// The official `openai` SDK (6.x) against bridle: chat, streaming with and
// without usage, errors surfaced as the SDK's classes, retries governed by
// x-should-retry, request ids, mid-stream errors and the model list.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';

import { mockConfig, mockFault, mockReset, mockStats, startBridle, startMock } from './lib/harness.mjs';
import { answerFor, expected, words } from './lib/mockmath.mjs';

let mock;
let gw;
let client;

before(async () => {
  mock = await startMock();
  gw = await startBridle({ config: mockConfig(mock.url) });
  client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0, timeout: 10000 });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
});

const requests = async () => (await mockStats(mock.url)).requests;

test('chat.completions.create', async () => {
  const messages = [{ role: 'user', content: 'Say hello to the test suite' }];
  for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
    const e = expected(messages, model);
    const c = await client.chat.completions.create({ model, messages });
    assert.equal(c.object, 'chat.completion');
    assert.equal(c.choices[0].message.content, e.answer);
    assert.equal(c.choices[0].finish_reason, 'stop');
    assert.equal(c.usage.prompt_tokens, 7);
    assert.equal(c.usage.completion_tokens, 8);
    assert.equal(c.usage.total_tokens, 15);
  }
});

test('stream with stream_options.include_usage: a final chunk with usage and no choices', async () => {
  for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
    const stream = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'Say hello to the test suite' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const ch of stream) chunks.push(ch);
    const text = chunks.flatMap((c) => c.choices.map((x) => x.delta?.content ?? '')).join('');
    assert.equal(text, answerFor(model), model);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, [], model);
    assert.equal(last.usage.prompt_tokens, 7, model);
    assert.equal(last.usage.completion_tokens, 8, model);
    assert.equal(last.usage.total_tokens, 15, model);
    assert.equal(chunks.filter((c) => c.usage).length, 1, model);
  }
});

test('stream without include_usage: no usage chunk', async () => {
  for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
    const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }], stream: true });
    const chunks = [];
    for await (const ch of stream) chunks.push(ch);
    assert.ok(chunks.length > 0);
    assert.equal(chunks.filter((c) => c.usage).length, 0, `${model}: ${JSON.stringify(chunks.at(-1))}`);
    assert.equal(chunks.flatMap((c) => c.choices.map((x) => x.delta?.content ?? '')).join(''), answerFor(model));
  }
});

test('unknown model → OpenAI.NotFoundError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (e) => {
      assert.ok(e instanceof OpenAI.NotFoundError, `${e.constructor.name}: ${e.message}`);
      assert.equal(e.status, 404);
      assert.equal(e.code, 'model_not_found');
      assert.equal(e.param, 'model');
      assert.match(e.message, /no-such-model/);
      assert.match(e.requestID || '', /^req_[0-9a-f]{24}$/, 'the error carries the request id');
      assert.equal(e.headers.get('x-should-retry'), 'false');
      return true;
    },
  );
});

test('wrong key → OpenAI.AuthenticationError', async () => {
  const bad = new OpenAI({ apiKey: 'bk-wrong', baseURL: gw.baseURL, maxRetries: 0, timeout: 10000 });
  await assert.rejects(bad.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.status, 401);
    assert.equal(e.headers.get('x-should-retry'), 'false');
    return true;
  });
});

test('a bad message → OpenAI.BadRequestError naming the parameter', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'robot', content: 'x' }] }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
      assert.equal(e.status, 400);
      assert.equal(e.param, 'messages[0].role');
      assert.equal(e.headers.get('x-should-retry'), 'false');
      assert.match(e.message, /role/);
      return true;
    },
  );
});

test('upstream insufficient_quota → OpenAI.RateLimitError, and the SDK does not retry it (x-should-retry: false)', async () => {
  await mockReset(mock.url);
  const retrying = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 2, timeout: 10000 });
  await mockFault(mock.url, { model: 'gpt-4o-mini', count: 3, directives: 'status=429,code=insufficient_quota,retry_after_ms=10' });
  const before = await requests();
  await assert.rejects(
    retrying.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }),
    (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError, `${e.constructor.name}: ${e.message}`);
      assert.equal(e.status, 429);
      assert.equal(e.code, 'insufficient_quota');
      assert.equal(e.headers.get('x-should-retry'), 'false');
      return true;
    },
  );
  assert.equal((await requests()) - before, 1, 'the SDK retried a non-retryable 429');
  await mockReset(mock.url);
});

test('a plain upstream 429 (retryable) is retried by bridle after its Retry-After: the SDK gets the answer from its one request', async () => {
  await mockReset(mock.url);
  const retrying = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 2, timeout: 10000 });
  await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=429,retry_after_ms=10' });
  const before = await requests();
  const { data: c, response } = await retrying.chat.completions
    .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] })
    .withResponse();
  assert.equal(c.choices[0].message.content, answerFor('gpt-4o-mini'));
  assert.equal(response.headers.get('x-bridle-attempts'), '2', 'bridle retried the 429 itself');
  assert.equal((await requests()) - before, 2);
});

test('bridle\'s attempts used up on a retryable 429 → x-should-retry: true, the SDK retries and succeeds', async () => {
  await mockReset(mock.url);
  const seen = [];
  const retrying = new OpenAI({
    apiKey: gw.key,
    baseURL: gw.baseURL,
    maxRetries: 2,
    timeout: 10000,
    fetch: async (url, init) => {
      const r = await fetch(url, init);
      seen.push({ status: r.status, retry: r.headers.get('x-should-retry'), attempts: r.headers.get('x-bridle-attempts'), code: r.status >= 400 ? (await r.clone().json()).error?.code : null });
      return r;
    },
  });
  // 3 = bridle's max_attempts: its own three attempts meet a 429 each
  await mockFault(mock.url, { model: 'gpt-4o-mini', count: 3, directives: 'status=429,retry_after_ms=10' });
  const before = await requests();
  const c = await retrying.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(c.choices[0].message.content, answerFor('gpt-4o-mini'));
  assert.deepEqual(seen, [
    { status: 429, retry: 'true', attempts: '3', code: 'rate_limit_exceeded' },
    { status: 200, retry: null, attempts: '1', code: null },
  ]);
  assert.equal((await requests()) - before, 4);
});

test('withResponse(): _request_id is the x-request-id header', async () => {
  const { data, response, request_id: rid } = await client.chat.completions
    .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] })
    .withResponse();
  const hdr = response.headers.get('x-request-id');
  assert.match(hdr || '', /^req_[0-9a-f]{24}$/);
  assert.equal(data._request_id, hdr);
  assert.equal(rid, hdr);
  assert.equal(response.headers.get('x-bridle-provider'), 'openai');
  // streams carry it too
  const { response: sresp, data: stream } = await client.chat.completions
    .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream: true })
    .withResponse();
  assert.match(sresp.headers.get('x-request-id') || '', /^req_[0-9a-f]{24}$/);
  for await (const _ of stream);
});

test('a mid-stream error throws OpenAI.APIError from the stream iterator, after the chunks already sent', async () => {
  for (const model of ['gpt-4o-mini', 'claude-haiku-4-5']) {
    const stream = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: '[[mock:cut_after=3]]' }],
      stream: true,
    });
    let text = '';
    await assert.rejects(
      (async () => {
        for await (const ch of stream) text += ch.choices.map((x) => x.delta?.content ?? '').join('');
      })(),
      (e) => {
        assert.ok(e instanceof OpenAI.APIError, `${e.constructor.name}: ${e.message}`);
        assert.match(e.message, /cut|closed/i);
        return true;
      },
    );
    assert.equal(text, words(answerFor(model)).slice(0, 3).join(' '));
  }
});

test('client.models.list() lists the configured models and the route', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model');
    assert.equal(typeof m.owned_by, 'string');
    ids.push(m.id);
  }
  assert.deepEqual(ids.sort(), ['auto', 'claude-haiku-4-5', 'gemini-2.5-flash', 'gpt-4o-mini', 'llama3.2']);
});

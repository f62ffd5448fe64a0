// POST /v1/messages, the Anthropic-style way in, driven by the official
// @anthropic-ai/sdk (1.x: Authorization: Bearer) and by raw requests (the
// classic x-api-key + anthropic-version: 2023-06-01): plain and streamed
// answers from every dialect, routing (auto), errors in Anthropic's shape
// and statuses, count_tokens, what each dialect receives, and the ledger row.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';

import { get, mockConfig, mockFault, mockLast, mockReset, parseSSE, post, startBridle, startMock, tmpDir, sleep } from './lib/harness.mjs';
import { startCluster } from './lib/ledgerlib.mjs';
import { answerFor, billed, costPusd, expected } from './lib/mockmath.mjs';

const RUN = randomBytes(4).toString('hex');
let seq = 0;
const marker = () => `m-${RUN}-${++seq}`;

const MODELS = [
  { model: 'claude-haiku-4-5', dialect: 'anthropic' },
  { model: 'gpt-4o-mini', dialect: 'openai' },
  { model: 'gemini-2.5-flash', dialect: 'gemini' },
  { model: 'llama3.2', dialect: 'ollama' },
];

let mock, db, gw, client;

before(async () => {
  mock = await startMock();
  db = await startCluster();
  gw = await startBridle({
    config: mockConfig(mock.url, {
      database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 100 },
      resilience: { max_attempts: 1 },
    }),
    keyId: 'messages',
    team: 'team-messages',
  });
  client = new Anthropic({ apiKey: gw.key, baseURL: gw.url, maxRetries: 0, timeout: 15000 });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await db?.destroy();
});

const hello = [{ role: 'user', content: 'Say hello to the messages test' }];
const url = () => `${gw.url}/v1/messages`;

async function rowFor(m, ms = 3000) {
  const t0 = Date.now();
  for (;;) {
    const { rows } = await db.query('SELECT * FROM usage_events WHERE end_user = $1', [m]);
    if (rows.length) return rows;
    if (Date.now() - t0 > ms) assert.fail(`no ledger row for ${m} after ${ms} ms`);
    await sleep(25);
  }
}

describe('the SDK, plain and streamed, on every dialect', () => {
  test('messages.create answers in Anthropic shape from each dialect', async () => {
    for (const { model, dialect } of MODELS) {
      const e = expected(hello, model);
      const user = marker();
      const { data: msg, response } = await client.messages
        .create({ model, max_tokens: 256, messages: hello, metadata: { user_id: user } })
        .withResponse();
      assert.equal(msg.type, 'message', model);
      assert.equal(msg.role, 'assistant');
      assert.match(msg.id, /^msg_[0-9a-f]{24}$/);
      assert.deepEqual(msg.content, [{ type: 'text', text: e.answer }], model);
      assert.equal(msg.stop_reason, 'end_turn');
      assert.equal(msg.stop_sequence, null);
      assert.equal(msg.usage.output_tokens, e.C, model);
      assert.equal(msg.usage.input_tokens, e.P, model);
      assert.equal(response.headers.get('x-bridle-model'), model);
      assert.equal(response.headers.get('request-id'), response.headers.get('x-request-id'));
      assert.equal(msg._request_id, response.headers.get('x-request-id'));
      // the ledger row, as for chat completions
      const [row] = await rowFor(user);
      const b = billed(dialect, e);
      assert.equal(row.status, 200);
      assert.equal(row.model, model);
      assert.equal(row.output_tokens, String(e.C), model);
      assert.equal(row.input_tokens, String(b.input_uncached), model);
      assert.equal(row.cost_pusd, String(costPusd(model, b)), model);
    }
  });

  test('messages.stream is reassembled by the SDK, from each dialect', async () => {
    for (const { model } of MODELS) {
      const e = expected(hello, model);
      const stream = client.messages.stream({ model, max_tokens: 256, messages: hello });
      const seen = [];
      stream.on('streamEvent', (ev) => seen.push(ev.type));
      const msg = await stream.finalMessage();
      assert.equal(msg.content.length, 1, model);
      assert.equal(msg.content[0].text, e.answer, model);
      assert.equal(msg.stop_reason, 'end_turn');
      assert.equal(msg.usage.output_tokens, e.C, model);
      assert.equal(seen[0], 'message_start');
      assert.equal(seen.at(-1), 'message_stop');
      assert.ok(seen.includes('content_block_delta'));
      assert.equal(seen.filter((t) => t === 'message_delta').length, 1);
    }
  });

  test('the raw stream: named events in Anthropic order, ping included, no [DONE]', async () => {
    const r = await post(url(), { model: 'gpt-4o-mini', max_tokens: 64, stream: true, messages: hello }, gw.auth);
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /text\/event-stream/);
    const evs = parseSSE(r.text);
    assert.ok(evs.every((ev) => ev.event && JSON.parse(ev.data).type === ev.event), r.text);
    const names = evs.map((ev) => ev.event);
    assert.deepEqual(names.slice(0, 3), ['message_start', 'ping', 'content_block_start']);
    assert.deepEqual(names.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
    assert.ok(!r.text.includes('[DONE]'));
    const text = evs
      .filter((ev) => ev.event === 'content_block_delta')
      .map((ev) => JSON.parse(ev.data).delta.text)
      .join('');
    assert.equal(text, answerFor('gpt-4o-mini'));
  });

  test('model "auto" is routed like a chat completion', async () => {
    const { data: msg, response } = await client.messages
      .create({ model: 'auto', max_tokens: 128, messages: hello })
      .withResponse();
    const chosen = response.headers.get('x-bridle-model');
    assert.ok(MODELS.some((m) => m.model === chosen), chosen);
    assert.ok(response.headers.get('x-bridle-route'));
    assert.equal(msg.content[0].type, 'text');
  });

  test('the classic wire: x-api-key and anthropic-version 2023-06-01', async () => {
    const r = await post(url(), { model: 'claude-haiku-4-5', max_tokens: 32, messages: hello }, {
      'x-api-key': gw.key,
      'anthropic-version': '2023-06-01',
      'anthropic-beta': 'prompt-caching-2024-07-31',
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.type, 'message');
    const [last] = await mockLast(mock.url);
    assert.equal(last.headers['anthropic-beta'], 'prompt-caching-2024-07-31');
    assert.equal(last.headers['anthropic-version'], '2023-06-01');
  });

  test('anthropic-beta goes to Anthropic models only, and only when it is feature names', async () => {
    await post(url(), { model: 'gpt-4o-mini', max_tokens: 32, messages: hello }, { ...gw.auth, 'anthropic-beta': 'context-1m-2025-08-07' });
    assert.equal((await mockLast(mock.url))[0].headers['anthropic-beta'], undefined);
    await post(url(), { model: 'claude-haiku-4-5', max_tokens: 32, messages: hello }, { ...gw.auth, 'anthropic-beta': 'a;b=c' });
    assert.equal((await mockLast(mock.url))[0].headers['anthropic-beta'], undefined);
  });
});

test('models.list answers in Anthropic shape to an Anthropic client', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.type, 'model');
    ids.push(m.id);
  }
  for (const { model } of MODELS) assert.ok(ids.includes(model), ids.join());
  assert.ok(ids.includes('auto'));
});

describe('what each dialect receives', () => {
  const convo = {
    max_tokens: 200,
    system: [{ type: 'text', text: 'You are terse.', cache_control: { type: 'ephemeral' } }],
    temperature: 0.5,
    top_k: 40,
    stop_sequences: ['END'],
    tools: [
      {
        name: 'get_weather',
        description: 'Weather for a city',
        input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
        cache_control: { type: 'ephemeral' },
      },
    ],
    tool_choice: { type: 'auto', disable_parallel_tool_use: true },
    messages: [
      { role: 'user', content: 'Weather in Paris?' },
      {
        role: 'assistant',
        content: [
          { type: 'thinking', thinking: 'I should call the tool.', signature: 'sig-abc' },
          { type: 'text', text: 'Let me look.' },
          { type: 'tool_use', id: 'toolu_01', name: 'get_weather', input: { city: 'Paris' } },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'toolu_01', content: 'Sunny, 21C', is_error: false },
          { type: 'text', text: 'And tomorrow?', cache_control: { type: 'ephemeral' } },
          { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
        ],
      },
    ],
  };

  test('an Anthropic model gets the request as it was sent', async () => {
    await mockReset(mock.url);
    const r = await post(url(), { model: 'claude-haiku-4-5', ...convo }, gw.auth);
    assert.equal(r.status, 200, r.text);
    const [last] = await mockLast(mock.url);
    const b = last.body;
    assert.equal(last.path, '/v1/messages');
    assert.deepEqual(b.system, convo.system);
    assert.equal(b.top_k, 40);
    assert.deepEqual(b.stop_sequences, ['END']);
    assert.deepEqual(b.tools[0].cache_control, { type: 'ephemeral' });
    assert.deepEqual(b.tools[0].input_schema, convo.tools[0].input_schema);
    assert.deepEqual(b.tool_choice, { type: 'auto', disable_parallel_tool_use: true });
    assert.deepEqual(b.messages[1].content, convo.messages[1].content); // thinking first, signature kept
    assert.deepEqual(b.messages[2].content[0], { type: 'tool_result', tool_use_id: 'toolu_01', content: 'Sunny, 21C' });
    assert.deepEqual(b.messages[2].content[1], convo.messages[2].content[1]);
    assert.deepEqual(b.messages[2].content[2], convo.messages[2].content[2]);
  });

  test('an OpenAI model gets OpenAI shapes and none of the Anthropic-only members', async () => {
    await mockReset(mock.url);
    const r = await post(url(), { model: 'gpt-4o-mini', ...convo }, gw.auth);
    assert.equal(r.status, 200, r.text);
    const [last] = await mockLast(mock.url);
    const b = last.body;
    assert.equal(last.path, '/v1/chat/completions');
    const raw = JSON.stringify(b);
    for (const gone of ['cache_control', 'thinking_blocks', 'top_k', 'is_error', 'signature'])
      assert.ok(!raw.includes(gone), `${gone} reached OpenAI: ${raw}`);
    assert.deepEqual(b.messages[0], { role: 'system', content: [{ type: 'text', text: 'You are terse.' }] });
    assert.deepEqual(b.messages[2].tool_calls, [
      { id: 'toolu_01', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
    ]);
    assert.deepEqual(b.messages[3], { role: 'tool', tool_call_id: 'toolu_01', content: 'Sunny, 21C' });
    assert.equal(b.messages[4].content[1].image_url.url, 'data:image/png;base64,iVBORw0KGgo=');
    assert.deepEqual(b.stop, ['END']);
    assert.equal(b.tool_choice, 'auto');
    assert.equal(b.parallel_tool_calls, false);
    assert.equal(b.tools[0].function.name, 'get_weather');
  });

  test('a Gemini model gets functionCall / functionResponse parts', async () => {
    await mockReset(mock.url);
    const r = await post(url(), { model: 'gemini-2.5-flash', ...convo }, gw.auth);
    assert.equal(r.status, 200, r.text);
    const [last] = await mockLast(mock.url);
    const raw = JSON.stringify(last.body);
    assert.ok(raw.includes('functionCall') && raw.includes('functionResponse'), raw);
  });
});

describe('errors in Anthropic shape', () => {
  test('a missing max_tokens is a 400 invalid_request_error naming it', async () => {
    await assert.rejects(
      client.messages.create({ model: 'claude-haiku-4-5', messages: hello }),
      (e) => e.status === 400 && e.error?.type === 'error' && e.error.error.type === 'invalid_request_error' && /max_tokens/.test(e.message),
    );
  });

  test('a bad block names its path', async () => {
    const r = await post(url(), { model: 'gpt-4o-mini', max_tokens: 10, messages: [{ role: 'user', content: [{ type: 'text' }] }] }, gw.auth);
    assert.equal(r.status, 400);
    assert.equal(r.json.type, 'error');
    assert.match(r.json.error.message, /messages\.0\.content\.0\.text/);
  });

  test('an unknown field is refused, not dropped', async () => {
    const r = await post(url(), { model: 'gpt-4o-mini', max_tokens: 10, messages: hello, mcp_servers: [] }, gw.auth);
    assert.equal(r.status, 400);
    assert.match(r.json.error.message, /mcp_servers/);
  });

  test('a wrong key is a 401 authentication_error', async () => {
    const bad = new Anthropic({ apiKey: 'bk-wrong', baseURL: gw.url, maxRetries: 0 });
    await assert.rejects(bad.messages.create({ model: 'gpt-4o-mini', max_tokens: 10, messages: hello }), (e) => e.status === 401 && e.error.error.type === 'authentication_error');
  });

  test('an overloaded provider is a 529 overloaded_error', async () => {
    await mockFault(mock.url, { model: 'claude-haiku-4-5', count: 1, directives: 'status=529' });
    await assert.rejects(
      client.messages.create({ model: 'claude-haiku-4-5', max_tokens: 10, messages: hello }),
      (e) => e.status === 529 && e.error.error.type === 'overloaded_error',
    );
  });

  test('a GET on /v1/messages is a 405 in Anthropic shape', async () => {
    const r = await get(`${gw.url}/v1/messages`, gw.auth);
    assert.equal(r.status, 405);
    assert.equal(r.json.type, 'error');
  });
});

describe('count_tokens', () => {
  test('counts the prompt, tools included, and says it is an estimate', async () => {
    const small = await client.messages.countTokens({ model: 'claude-haiku-4-5', messages: hello });
    assert.ok(small.input_tokens > 0);
    const withTools = await client.messages.countTokens({
      model: 'claude-haiku-4-5',
      messages: hello,
      tools: [{ name: 'x', input_schema: { type: 'object', properties: { a: { type: 'string', description: 'x'.repeat(400) } } } }],
    });
    assert.ok(withTools.input_tokens >= small.input_tokens + 100, JSON.stringify(withTools));
    const r = await post(`${gw.url}/v1/messages/count_tokens`, { model: 'x', messages: [{ role: 'robot', content: 'a' }] }, gw.auth);
    assert.equal(r.status, 400);
    assert.match(r.json.error.message, /messages\.0\.role/);
  });
});

describe('tool calls through /v1/messages', () => {
  const tools = [
    {
      name: 'get_weather',
      description: 'Weather for a city',
      input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
    { name: 'get_time', input_schema: { type: 'object', properties: { zone: { type: 'string' } } } },
  ];
  const ask = (model, messages, stream, extra = {}) =>
    stream
      ? client.messages.stream({ model, max_tokens: 256, tools, messages, ...extra }).finalMessage()
      : client.messages.create({ model, max_tokens: 256, tools, messages, ...extra });

  test('a round trip on each dialect, plain and streamed, reassembled by the SDK', async () => {
    for (const { model } of MODELS)
      for (const stream of [false, true]) {
        const what = `${model} stream=${stream}`;
        const messages = [{ role: 'user', content: '[[mock:tool_calls=2]] Weather and time in Paris?' }];
        const first = await ask(model, messages, stream);
        assert.equal(first.stop_reason, 'tool_use', what);
        const calls = first.content.filter((b) => b.type === 'tool_use');
        assert.deepEqual(calls.map((c) => c.name), ['get_weather', 'get_time'], what);
        assert.deepEqual(calls[0].input, { city: 'mock-city' }, what);
        assert.deepEqual(calls[1].input, { zone: 'mock-zone' }, what);
        assert.ok(calls.every((c) => c.id) && calls[0].id !== calls[1].id, what);
        messages.push({ role: 'assistant', content: first.content });
        messages.push({
          role: 'user',
          content: calls.map((c, i) => ({ type: 'tool_result', tool_use_id: c.id, content: i ? '12:00' : 'Sunny' })),
        });
        const second = await ask(model, messages, stream);
        assert.equal(second.stop_reason, 'end_turn', what);
        assert.equal(second.content[0].type, 'text', what);
        assert.ok(second.content[0].text.length > 0, what);
      }
  });

  test('tool_choice tool, and disable_parallel_tool_use, reach every dialect that can force a call', async () => {
    for (const { model, dialect } of MODELS) {
      const choice = { tool_choice: { type: 'tool', name: 'get_time', disable_parallel_tool_use: true } };
      const messages = [{ role: 'user', content: '[[mock:tool_calls=2]] Time?' }];
      if (dialect === 'ollama') {
        // Ollama cannot force a call: refused in Anthropic's shape, naming it
        await assert.rejects(ask(model, messages, false, choice), (e) => e.status === 400 && e.error.error.type === 'invalid_request_error' && /tool_choice/.test(e.message));
        continue;
      }
      const m = await ask(model, messages, false, choice);
      const calls = m.content.filter((b) => b.type === 'tool_use');
      assert.ok(calls.length >= 1 && calls.every((c) => c.name === 'get_time'), model);
      // OpenAI's parallel_tool_calls and Anthropic's own flag limit the answer to one call
      if (model === 'gpt-4o-mini' || model === 'claude-haiku-4-5') assert.equal(calls.length, 1, model);
    }
  });
});

test('thinking comes back signed and goes back as it came, plain and streamed', async () => {
  for (const stream of [false, true]) {
    const messages = [{ role: 'user', content: '[[mock:thinking=1]] Think, then answer.' }];
    const req = { model: 'claude-haiku-4-5', max_tokens: 256, messages };
    const m = stream ? await client.messages.stream(req).finalMessage() : await client.messages.create(req);
    assert.equal(m.content[0].type, 'thinking', `stream=${stream}`);
    assert.equal(m.content[0].thinking, 'Let me think this through.');
    assert.match(m.content[0].signature, /^sig_/);
    assert.equal(m.content[1].type, 'text');
    messages.push({ role: 'assistant', content: m.content }, { role: 'user', content: 'Go on.' });
    await client.messages.create({ ...req, messages });
    const [last] = await mockLast(mock.url);
    assert.deepEqual(last.body.messages[1].content[0], m.content[0]);
  }
  // a chat completion of the same answer has no thinking in it
  const r = await post(`${gw.baseURL}/chat/completions`, { model: 'claude-haiku-4-5', messages: [{ role: 'user', content: '[[mock:thinking=1]] x' }] }, gw.auth);
  assert.equal(r.status, 200);
  assert.ok(!r.text.includes('thinking'), r.text);
});

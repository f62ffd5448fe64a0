// Parameter fidelity across dialects (issue 15): every parameter of an
// OpenAI chat-completions request, sent to a model of every dialect, is
// translated (the mock shows what the provider received), refused with a
// 400 that names it (and nothing goes upstream), or ignored (the request
// succeeds and the provider never sees it) — the table of docs/config.md
// "OpenAI parameters on other dialects". Then capability routing:
// auto/tier and routes skip the models that cannot take a request, a named
// one is refused, and bridle's headers and ledger row say where it went.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { get, mockConfig, mockLast, mockStats, parseSSE, post, runCli, runCliOk, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startPostgres } from './lib/pg.mjs';

let mock;
let pg;
let gw;

const DIALECTS = ['openai', 'anthropic', 'gemini', 'ollama'];
const MODEL = { openai: 'gpt-4o-mini', anthropic: 'claude-haiku-4-5', gemini: 'gemini-2.5-flash', ollama: 'llama3.2' };

before(async () => {
  mock = await startMock();
  pg = await startPostgres();
  const config = mockConfig(mock.url, {
    models: {
      // the same upstream as gpt-4o-mini, far cheaper, and said to have no tools
      'cheap-notools': {
        provider: 'openai',
        upstream_model: 'gpt-4o-mini',
        prices: { input: 0.01, output: 0.01, tier: 'budget' },
        capabilities: ['vision', 'json_schema', 'logprobs'],
      },
      'cheap-claude': { provider: 'anthropic', upstream_model: 'claude-haiku-4-5', prices: { input: 0.02, output: 0.02, tier: 'budget' } },
      // an Ollama vision model: the name says so
      'llava-local': { provider: 'ollama', upstream_model: 'llava', prices: { input: 0, output: 0, tier: 'budget' } },
    },
    routes: {
      toolless: { candidates: ['cheap-notools', 'claude-haiku-4-5'] },
      nologprobs: { candidates: ['claude-haiku-4-5', 'cheap-claude'] },
    },
    // budget: the three cheapest (no local model: prefer_local would put it
    // first); mid, gpt-4o-mini, is where the budget tier escalates
    routing: {
      default_tier: 'budget',
      tiers: { budget: ['cheap-notools', 'cheap-claude', 'gemini-2.5-flash'], mid: ['gpt-4o-mini'], heavy: ['gpt-4o-mini'] },
    },
    database: { url: pg.url, spool_dir: path.join(tmpDir('bridle-fidelity-'), 'spool'), flush_interval_ms: 50 },
  });
  delete config.routes.auto; // "auto" goes to the routing policy
  gw = await startBridle({ config });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await pg?.stop?.();
});

const chat = (body) => post(`${gw.baseURL}/chat/completions`, body, gw.auth, { timeoutMs: 10000 });
const USER_MSG = [{ role: 'user', content: 'Say hello.' }];
const TOOLS = [{ type: 'function', function: { name: 'lookup', description: 'Look a word up', parameters: { type: 'object', properties: { q: { type: 'string' } } } } }];
const SCHEMA = { type: 'object', properties: { answer: { type: 'string' } }, required: ['answer'] };
const PNG = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=';

const gc = (up) => up.body.generationConfig ?? {};
const opts = (up) => up.body.options ?? {};

// Each row: what the client sends, and per dialect what must happen:
//   'pass'      OpenAI-compatible: the member goes upstream as the client wrote it
//   'ignored'   200, and no trace of it upstream (top-level key absent)
//   { sent }    200, and sent(upstream request) checks the translation
//   { refused } 400 naming `refused` (the param), and no upstream call
const ROWS = [
  { name: 'temperature', body: { temperature: 0.5 }, openai: 'pass', anthropic: { sent: (u) => assert.equal(u.body.temperature, 0.5) }, gemini: { sent: (u) => assert.equal(gc(u).temperature, 0.5) }, ollama: { sent: (u) => assert.equal(opts(u).temperature, 0.5) } },
  { name: 'temperature above 1', body: { temperature: 1.5 }, openai: 'pass', anthropic: { refused: 'temperature' }, gemini: { sent: (u) => assert.equal(gc(u).temperature, 1.5) }, ollama: { sent: (u) => assert.equal(opts(u).temperature, 1.5) } },
  { name: 'top_p', body: { top_p: 0.9 }, openai: 'pass', anthropic: { sent: (u) => assert.equal(u.body.top_p, 0.9) }, gemini: { sent: (u) => assert.equal(gc(u).topP, 0.9) }, ollama: { sent: (u) => assert.equal(opts(u).top_p, 0.9) } },
  { name: 'top_k', body: { top_k: 40 }, openai: 'pass', anthropic: { sent: (u) => assert.equal(u.body.top_k, 40) }, gemini: { sent: (u) => assert.equal(gc(u).topK, 40) }, ollama: { sent: (u) => assert.equal(opts(u).top_k, 40) } },
  { name: 'stop', body: { stop: ['END'] }, openai: 'pass', anthropic: { sent: (u) => assert.deepEqual(u.body.stop_sequences, ['END']) }, gemini: { sent: (u) => assert.deepEqual(gc(u).stopSequences, ['END']) }, ollama: { sent: (u) => assert.deepEqual(opts(u).stop, ['END']) } },
  { name: 'stop (a string)', body: { stop: 'END' }, openai: 'pass', anthropic: { sent: (u) => assert.deepEqual(u.body.stop_sequences, ['END']) }, gemini: { sent: (u) => assert.deepEqual(gc(u).stopSequences, ['END']) }, ollama: { sent: (u) => assert.deepEqual(opts(u).stop, ['END']) } },
  { name: 'max_completion_tokens', body: { max_completion_tokens: 77 }, openai: { sent: (u) => assert.equal(u.body.max_tokens, 77) }, anthropic: { sent: (u) => assert.equal(u.body.max_tokens, 77) }, gemini: { sent: (u) => assert.equal(gc(u).maxOutputTokens, 77) }, ollama: { sent: (u) => assert.equal(opts(u).num_predict, 77) } },
  { name: 'max_tokens', body: { max_tokens: 55 }, openai: 'pass', anthropic: { sent: (u) => assert.equal(u.body.max_tokens, 55) }, gemini: { sent: (u) => assert.equal(gc(u).maxOutputTokens, 55) }, ollama: { sent: (u) => assert.equal(opts(u).num_predict, 55) } },
  { name: 'n', body: { n: 2 }, openai: 'pass', anthropic: { refused: 'n' }, gemini: { sent: (u) => assert.equal(gc(u).candidateCount, 2) }, ollama: { refused: 'n' } },
  { name: 'n (streamed)', body: { n: 2, stream: true }, openai: 'pass', anthropic: { refused: 'n' }, gemini: { sent: (u) => assert.equal(gc(u).candidateCount, 2) }, ollama: { refused: 'n' } },
  { name: 'seed', body: { seed: 7 }, openai: 'pass', anthropic: 'ignored', gemini: { sent: (u) => assert.equal(gc(u).seed, 7) }, ollama: { sent: (u) => assert.equal(opts(u).seed, 7) } },
  { name: 'presence_penalty', body: { presence_penalty: 0.5 }, openai: 'pass', anthropic: 'ignored', gemini: { sent: (u) => assert.equal(gc(u).presencePenalty, 0.5) }, ollama: { sent: (u) => assert.equal(opts(u).presence_penalty, 0.5) } },
  { name: 'frequency_penalty', body: { frequency_penalty: -0.5 }, openai: 'pass', anthropic: 'ignored', gemini: { sent: (u) => assert.equal(gc(u).frequencyPenalty, -0.5) }, ollama: { sent: (u) => assert.equal(opts(u).frequency_penalty, -0.5) } },
  { name: 'logit_bias', body: { logit_bias: { 50256: -100 } }, openai: 'pass', anthropic: { refused: 'logit_bias' }, gemini: { refused: 'logit_bias' }, ollama: { refused: 'logit_bias' } },
  { name: 'logit_bias (empty)', body: { logit_bias: {} }, openai: 'pass', anthropic: 'ignored', gemini: 'ignored', ollama: 'ignored' },
  { name: 'logprobs', body: { logprobs: true }, openai: 'pass', anthropic: { refused: 'logprobs' }, gemini: { sent: (u) => assert.equal(gc(u).responseLogprobs, true) }, ollama: { sent: (u) => assert.equal(u.body.logprobs, true) } },
  { name: 'logprobs false', body: { logprobs: false }, openai: 'pass', anthropic: 'ignored', gemini: 'ignored', ollama: 'ignored' },
  { name: 'top_logprobs', body: { logprobs: true, top_logprobs: 3 }, openai: 'pass', anthropic: { refused: 'logprobs' }, gemini: { sent: (u) => { assert.equal(gc(u).responseLogprobs, true); assert.equal(gc(u).logprobs, 3); } }, ollama: { sent: (u) => assert.equal(u.body.top_logprobs, 3) } },
  { name: 'logprobs (streamed)', body: { logprobs: true, stream: true }, openai: 'pass', anthropic: { refused: 'logprobs' }, gemini: { sent: (u) => assert.equal(gc(u).responseLogprobs, true) }, ollama: { sent: (u) => assert.equal(u.body.logprobs, true) } },
  // gpt-4o-mini is not an audio model: its default capabilities have no audio
  { name: 'modalities audio', body: { modalities: ['text', 'audio'], audio: { voice: 'alloy', format: 'wav' } }, openai: { refused: 'modalities' }, anthropic: { refused: 'modalities' }, gemini: { refused: 'modalities' }, ollama: { refused: 'modalities' } },
  { name: 'modalities text', body: { modalities: ['text'] }, openai: 'pass', anthropic: 'ignored', gemini: 'ignored', ollama: 'ignored' },
  { name: 'audio', body: { audio: { voice: 'alloy', format: 'wav' } }, openai: { refused: 'audio' }, anthropic: { refused: 'audio' }, gemini: { refused: 'audio' }, ollama: { refused: 'audio' } },
  { name: 'parallel_tool_calls false', body: { tools: TOOLS, parallel_tool_calls: false }, openai: 'pass', anthropic: { sent: (u) => assert.equal(u.body.tool_choice.disable_parallel_tool_use, true) }, gemini: 'ignored', ollama: 'ignored' },
  { name: 'parallel_tool_calls true', body: { tools: TOOLS, parallel_tool_calls: true }, openai: 'pass', anthropic: { sent: (u) => assert.equal(u.body.tool_choice.disable_parallel_tool_use, undefined) }, gemini: 'ignored', ollama: 'ignored' },
  { name: 'tools', body: { tools: TOOLS }, openai: 'pass', anthropic: { sent: (u) => assert.deepEqual(u.body.tools[0].input_schema, TOOLS[0].function.parameters) }, gemini: { sent: (u) => assert.equal(u.body.tools[0].functionDeclarations[0].name, 'lookup') }, ollama: { sent: (u) => assert.deepEqual(u.body.tools, TOOLS) } },
  { name: 'tool_choice required', body: { tools: TOOLS, tool_choice: 'required' }, openai: 'pass', anthropic: { sent: (u) => assert.equal(u.body.tool_choice.type, 'any') }, gemini: { sent: (u) => assert.equal(u.body.toolConfig.functionCallingConfig.mode, 'ANY') }, ollama: { refused: 'tool_choice' } },
  { name: 'tool_choice named', body: { tools: TOOLS, tool_choice: { type: 'function', function: { name: 'lookup' } } }, openai: 'pass', anthropic: { sent: (u) => assert.deepEqual(u.body.tool_choice, { type: 'tool', name: 'lookup' }) }, gemini: { sent: (u) => assert.deepEqual(u.body.toolConfig.functionCallingConfig.allowedFunctionNames, ['lookup']) }, ollama: { refused: 'tool_choice' } },
  { name: 'tool_choice allowed_tools', body: { tools: TOOLS, tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'auto', tools: [{ type: 'function', function: { name: 'lookup' } }] } } }, openai: 'pass', anthropic: { sent: (u) => assert.deepEqual(u.body.tools.map((t) => t.name), ['lookup']) }, gemini: { sent: (u) => assert.deepEqual(u.body.tools[0].functionDeclarations.map((f) => f.name), ['lookup']) }, ollama: { sent: (u) => assert.deepEqual(u.body.tools.map((t) => t.function.name), ['lookup']) } },
  { name: 'tool_choice none', body: { tools: TOOLS, tool_choice: 'none' }, openai: 'pass', anthropic: { sent: (u) => assert.equal(u.body.tool_choice.type, 'none') }, gemini: { sent: (u) => assert.equal(u.body.toolConfig.functionCallingConfig.mode, 'NONE') }, ollama: { sent: (u) => assert.equal(u.body.tools, undefined) } },
  { name: 'user', body: { user: 'end-user-1' }, openai: 'pass', anthropic: { sent: (u) => assert.deepEqual(u.body.metadata, { user_id: 'end-user-1' }) }, gemini: 'ignored', ollama: 'ignored' },
  { name: 'safety_identifier', body: { safety_identifier: 'hashed-7' }, openai: 'pass', anthropic: { sent: (u) => assert.deepEqual(u.body.metadata, { user_id: 'hashed-7' }) }, gemini: 'ignored', ollama: 'ignored' },
  { name: 'response_format json_object', body: { response_format: { type: 'json_object' } }, openai: 'pass', anthropic: { sent: (u) => assert.deepEqual(u.body.tool_choice, { type: 'tool', name: 'json_answer' }) }, gemini: { sent: (u) => assert.equal(gc(u).responseMimeType, 'application/json') }, ollama: { sent: (u) => assert.equal(u.body.format, 'json') } },
  { name: 'response_format with tools', body: { tools: TOOLS, response_format: { type: 'json_object' } }, openai: 'pass', anthropic: { refused: 'response_format' }, gemini: { sent: (u) => assert.equal(gc(u).responseMimeType, 'application/json') }, ollama: { sent: (u) => assert.equal(u.body.format, 'json') } },
  { name: 'a custom tool', body: { tools: [{ type: 'custom', custom: { name: 'grammar' } }] }, openai: 'pass', anthropic: { refused: 'tools[0]' }, gemini: { refused: 'tools[0]' }, ollama: { refused: 'tools[0]' } },
  { name: 'response_format json_schema', body: { response_format: { type: 'json_schema', json_schema: { name: 'a', schema: SCHEMA } } }, openai: 'pass', anthropic: { sent: (u) => assert.deepEqual(u.body.tools[0].input_schema, SCHEMA) }, gemini: { sent: (u) => assert.deepEqual(gc(u).responseJsonSchema, SCHEMA) }, ollama: { sent: (u) => assert.deepEqual(u.body.format, SCHEMA) } },
  { name: 'reasoning_effort', body: { reasoning_effort: 'low' }, openai: 'pass', anthropic: { sent: (u) => assert.deepEqual(u.body.thinking, { type: 'enabled', budget_tokens: 1024 }) }, gemini: { sent: (u) => assert.equal(gc(u).thinkingConfig.thinkingBudget, 1024) }, ollama: 'ignored' },
  { name: 'prediction', body: { prediction: { type: 'content', content: 'Hello' } }, openai: 'pass', anthropic: 'ignored', gemini: 'ignored', ollama: 'ignored' },
  { name: 'service_tier', body: { service_tier: 'flex' }, openai: 'pass', anthropic: 'ignored', gemini: 'ignored', ollama: 'ignored' },
  { name: 'store', body: { store: true }, openai: 'pass', anthropic: 'ignored', gemini: 'ignored', ollama: 'ignored' },
  { name: 'verbosity', body: { verbosity: 'low' }, openai: 'pass', anthropic: 'ignored', gemini: 'ignored', ollama: 'ignored' },
  { name: 'prompt_cache_key', body: { prompt_cache_key: 'k1' }, openai: 'pass', anthropic: 'ignored', gemini: 'ignored', ollama: 'ignored' },
  // only OpenAI itself (options.max_completion_tokens) gets metadata: bridle's tags
  { name: 'metadata', body: { metadata: { task: 'chat' } }, openai: 'ignored', anthropic: 'ignored', gemini: 'ignored', ollama: 'ignored' },
  { name: 'web_search_options', body: { web_search_options: {} }, openai: 'pass', anthropic: { refused: 'web_search_options' }, gemini: { refused: 'web_search_options' }, ollama: { refused: 'web_search_options' } },
  { name: 'functions', body: { functions: [TOOLS[0].function] }, openai: 'pass', anthropic: { refused: 'functions' }, gemini: { refused: 'functions' }, ollama: { refused: 'functions' } },
  { name: 'an unknown parameter', body: { frobnicate: 3 }, openai: 'pass', anthropic: { refused: 'frobnicate' }, gemini: { refused: 'frobnicate' }, ollama: { refused: 'frobnicate' } },
  {
    name: 'an image',
    body: { messages: [{ role: 'user', content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: PNG } }] }] },
    openai: { sent: (u) => assert.equal(u.body.messages[0].content[1].image_url.url, PNG) },
    anthropic: { sent: (u) => assert.equal(u.body.messages[0].content[1].source.type, 'base64') },
    gemini: { sent: (u) => assert.equal(u.body.contents[0].parts[1].inlineData.mimeType, 'image/png') },
    // llama3.2 reads no images (Ollama models have vision only when named *vision* / *llava*)
    ollama: { refused: 'messages[0].content[1]' },
  },
  {
    name: 'an image by URL',
    body: { messages: [{ role: 'user', content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: 'https://example.test/a.png' } }] }] },
    openai: { sent: (u) => assert.equal(u.body.messages[0].content[1].image_url.url, 'https://example.test/a.png') },
    anthropic: { sent: (u) => assert.deepEqual(u.body.messages[0].content[1].source, { type: 'url', url: 'https://example.test/a.png' }) },
    gemini: { refused: 'messages[0].content[1]' }, // data: URIs only
    ollama: { refused: 'messages[0].content[1]' },
  },
  {
    name: 'a file part',
    body: { messages: [{ role: 'user', content: [{ type: 'text', text: 'Read this' }, { type: 'file', file: { file_id: 'file-1' } }] }] },
    openai: { sent: (u) => assert.equal(u.body.messages[0].content[1].file.file_id, 'file-1') },
    anthropic: { refused: 'messages[0].content[1]' },
    gemini: { refused: 'messages[0].content[1]' },
    ollama: { refused: 'messages[0].content[1]' },
  },
];

/** The top-level key(s) a row sends, for the "ignored" / "pass" checks. */
const keysOf = (row) => Object.keys(row.body).filter((k) => k !== 'messages' && k !== 'stream' && k !== 'tools');

async function upstreamCalls() {
  return (await mockStats(mock.url)).requests;
}

describe('every parameter on every dialect', () => {
  for (const row of ROWS) {
    for (const dialect of DIALECTS) {
      const want = row[dialect];
      test(`${row.name} → ${dialect}: ${typeof want === 'string' ? want : want.refused ? 'refused' : 'translated'}`, async () => {
        const model = MODEL[dialect];
        const body = { model, messages: USER_MSG, ...row.body };
        const before = await upstreamCalls();
        const r = await chat(body);
        if (want.refused) {
          assert.equal(r.status, 400, r.text);
          assert.equal(r.json.error.type, 'invalid_request_error', r.text);
          assert.equal(r.json.error.param, want.refused, r.text);
          assert.match(r.json.error.code, /^(unsupported_parameter|model_lacks_capability)$/, r.text);
          assert.ok(r.json.error.message.includes(model), `the message names the model: ${r.text}`);
          assert.match(r.json.error.message, /[Rr]emove it/, `the message says how to fix it: ${r.text}`);
          assert.equal(await upstreamCalls(), before, 'a refused request never reaches the provider');
          return;
        }
        assert.equal(r.status, 200, r.text);
        assert.equal(r.headers['x-bridle-model'], model);
        assert.equal(r.headers['x-bridle-provider'], dialect);
        assert.equal(await upstreamCalls(), before + 1);
        const [up] = await mockLast(mock.url);
        if (want === 'pass') {
          for (const k of keysOf(row)) assert.deepEqual(up.body[k], row.body[k], `${k} forwarded as sent: ${JSON.stringify(up.body)}`);
        } else if (want === 'ignored') {
          for (const k of keysOf(row)) assert.equal(up.body[k], undefined, `${k} must not reach ${dialect}: ${JSON.stringify(up.body)}`);
        } else {
          want.sent(up);
        }
      });
    }
  }
});

// ---------------------------------------------------------------------------
// what comes back: Gemini's candidates and log probabilities in OpenAI's shape

describe('translated answers', () => {
  const body = { model: 'gemini-2.5-flash', messages: USER_MSG, n: 2, logprobs: true, top_logprobs: 2 };

  test('gemini, n = 2 with logprobs: two choices, each with logprobs.content whose tokens make its text', async () => {
    const r = await chat(body);
    assert.equal(r.status, 200, r.text);
    const { choices } = r.json;
    assert.equal(choices.length, 2, r.text);
    assert.deepEqual(choices.map((c) => c.index), [0, 1]);
    for (const c of choices) {
      const content = c.logprobs?.content;
      assert.ok(Array.isArray(content) && content.length > 1, JSON.stringify(c));
      assert.equal(content.map((t) => t.token).join(''), c.message.content);
      for (const t of content) {
        assert.equal(t.logprob, -0.25);
        assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf8')]);
        assert.deepEqual(t.top_logprobs.map((a) => [a.token, a.logprob]), [[t.token, -0.25], ['alt1', -1]]);
      }
    }
  });

  test('the same streamed: each candidate its own choice, role first, its logprobs in its chunks, one finish each', async () => {
    const r = await chat({ ...body, stream: true });
    assert.equal(r.status, 200, r.text);
    const chunks = parseSSE(r.text).filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data));
    const byIndex = new Map();
    for (const ch of chunks)
      for (const c of ch.choices) {
        const acc = byIndex.get(c.index) ?? { text: '', tokens: '', roles: 0, finishes: [] };
        if (c.delta.role) acc.roles++;
        acc.text += c.delta.content ?? '';
        for (const t of c.logprobs?.content ?? []) acc.tokens += t.token;
        if (c.finish_reason) acc.finishes.push(c.finish_reason);
        byIndex.set(c.index, acc);
      }
    assert.deepEqual([...byIndex.keys()].sort(), [0, 1], r.text);
    for (const [i, acc] of byIndex) {
      assert.ok(acc.text.length > 0, `choice ${i}: ${r.text}`);
      assert.equal(acc.tokens, acc.text, `choice ${i}: the logprobs' tokens make its text`);
      assert.equal(acc.roles, 1, `choice ${i}: the role once`);
      assert.deepEqual(acc.finishes, ['stop'], `choice ${i}`);
    }
    assert.equal(parseSSE(r.text).at(-1).data, '[DONE]');
  });

  test('ollama logprobs, plain and streamed: its list becomes logprobs.content', async () => {
    const ask = { model: 'llama3.2', messages: USER_MSG, logprobs: true, top_logprobs: 3 };
    let r = await chat(ask);
    assert.equal(r.status, 200, r.text);
    const c = r.json.choices[0];
    assert.equal(c.logprobs.content.map((t) => t.token).join(''), c.message.content);
    assert.deepEqual(c.logprobs.content[0].top_logprobs.map((a) => a.token).slice(1), ['alt1', 'alt2']);
    r = await chat({ ...ask, stream: true });
    assert.equal(r.status, 200, r.text);
    let text = '';
    let tokens = '';
    for (const e of parseSSE(r.text)) {
      if (e.data === '[DONE]') continue;
      for (const ch of JSON.parse(e.data).choices) {
        text += ch.delta.content ?? '';
        for (const t of ch.logprobs?.content ?? []) tokens += t.token;
      }
    }
    assert.ok(text.length > 0, r.text);
    assert.equal(tokens, text);
  });
});

// ---------------------------------------------------------------------------
// capability routing

async function ledgerRow(user) {
  for (let i = 0; i < 100; i++) {
    const { rows } = await pg.query(
      pg.url,
      'SELECT requested_model, model, provider, status, error_class, route_reason FROM usage_events WHERE end_user = $1',
      [user],
    );
    if (rows.length) return rows[0];
    await sleep(50);
  }
  throw new Error(`no ledger row for ${user}`);
}

describe('capability routing', () => {
  test('auto takes the cheapest model; with tools it skips the one without tools', async () => {
    let r = await chat({ model: 'auto', messages: USER_MSG, user: 'cap-a1' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'], 'cheap-notools');

    r = await chat({ model: 'auto', messages: USER_MSG, tools: TOOLS, user: 'cap-a2' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'], 'cheap-claude', 'the next cheapest has tools');
    assert.equal(r.headers['x-bridle-provider'], 'anthropic');
    assert.match(r.headers['x-bridle-route'], /skipped 1 that cannot take it/);
    const row = await ledgerRow('cap-a2');
    assert.equal(row.requested_model, 'auto');
    assert.equal(row.model, 'cheap-claude');
    assert.equal(row.provider, 'anthropic');
    assert.equal(row.status, 200);
    assert.match(row.route_reason, /skipped 1 that cannot take it/);
  });

  test('auto with logprobs skips the models without logprobs and the dialects that refuse them', async () => {
    const r = await chat({ model: 'auto', messages: USER_MSG, tools: TOOLS, logprobs: true, top_logprobs: 2, user: 'cap-b1' });
    assert.equal(r.status, 200, r.text);
    // cheap-notools lacks tools, cheap-claude lacks logprobs: gemini is next
    assert.equal(r.headers['x-bridle-model'], 'gemini-2.5-flash');
    assert.equal(r.headers['x-bridle-provider'], 'gemini');
    assert.match(r.headers['x-bridle-route'], /skipped 2 that cannot take it/);
    const [up] = await mockLast(mock.url);
    assert.equal(up.body.generationConfig.responseLogprobs, true);
    assert.equal(up.body.generationConfig.logprobs, 2);
    const row = await ledgerRow('cap-b1');
    assert.equal(row.model, 'gemini-2.5-flash');
    assert.equal(row.provider, 'gemini');
  });

  test('auto with tools, n = 2 and logit_bias: every budget model is skipped, the OpenAI one a tier up answers', async () => {
    const r = await chat({ model: 'auto', messages: USER_MSG, tools: TOOLS, n: 2, logit_bias: { 50256: -100 }, user: 'cap-c1' });
    assert.equal(r.status, 200, r.text);
    // cheap-notools: no tools; cheap-claude: n; gemini: logit_bias
    assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
    assert.match(r.headers['x-bridle-route'], /none fit, falling back to mid; skipped 3 that cannot take it/);
    const [up] = await mockLast(mock.url);
    assert.equal(up.body.n, 2);
    assert.deepEqual(up.body.logit_bias, { 50256: -100 });
    const row = await ledgerRow('cap-c1');
    assert.equal(row.model, 'gpt-4o-mini');
    assert.equal(row.provider, 'openai');
  });

  test('a named model without the capability: 400 naming the parameter and the model, recorded, nothing sent', async () => {
    const before = await upstreamCalls();
    const r = await chat({ model: 'claude-haiku-4-5', messages: USER_MSG, logprobs: true, user: 'cap-d1' });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'logprobs');
    assert.equal(r.json.error.code, 'model_lacks_capability');
    assert.match(r.json.error.message, /logprobs needs the logprobs capability, which the model claude-haiku-4-5 does not have/);
    assert.equal(r.headers['x-should-retry'], 'false');
    assert.equal(await upstreamCalls(), before);
    const row = await ledgerRow('cap-d1');
    assert.equal(row.requested_model, 'claude-haiku-4-5');
    assert.equal(row.status, 400);
  });

  test('a route skips its candidates that cannot take the request; when none can, a 400 naming the parameter', async () => {
    let r = await chat({ model: 'toolless', messages: USER_MSG, tools: TOOLS, user: 'cap-e1' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'], 'claude-haiku-4-5');
    assert.match(r.headers['x-bridle-route'], /route toolless: skipped 1 candidate that cannot take it/);

    const before = await upstreamCalls();
    r = await chat({ model: 'nologprobs', messages: USER_MSG, logprobs: true, user: 'cap-e2' });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'logprobs');
    assert.match(r.json.error.message, /route "nologprobs": none of its candidate models can take this request/);
    assert.equal(await upstreamCalls(), before);
  });

  test('auto with an image skips the local model without vision; a vision one by name takes it', async () => {
    const messages = [{ role: 'user', content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: PNG } }] }];
    let r = await chat({ model: 'llama3.2', messages });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'messages[0].content[1]');
    r = await chat({ model: 'llava-local', messages });
    assert.equal(r.status, 200, r.text);
    const [up] = await mockLast(mock.url);
    assert.equal(up.body.model, 'llava');
    assert.equal(up.body.messages[0].images.length, 1);
  });

  test('when no model of the tier (nor above) can take it: 400 with the parameter', async () => {
    const r = await chat({ model: 'auto', messages: USER_MSG, modalities: ['audio'] });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'modalities');
    assert.match(r.json.error.message, /none of its models .* can take this request/);
  });

  test('bridle route shows the models it skipped and why, in text and JSON', async () => {
    const dir = tmpDir('bridle-fidelity-route-');
    const req = path.join(dir, 'req.json');
    fs.writeFileSync(req, JSON.stringify({ model: 'auto', messages: USER_MSG, tools: TOOLS, logprobs: true }));
    const text = await runCliOk(['route', '--config', gw.configPath, '--request', req]);
    assert.match(text.stdout, /^ {2}1\. gemini-2\.5-flash /m, text.stdout);
    assert.match(text.stdout, /^skipped +cheap-notools +tools: lacks tools$/m, text.stdout);
    assert.match(text.stdout, /^skipped +cheap-claude +logprobs: lacks logprobs$/m, text.stdout);
    const json = JSON.parse((await runCliOk(['route', '--config', gw.configPath, '--request', req, '--json'])).stdout);
    assert.equal(json.chosen, 'gemini-2.5-flash');
    assert.deepEqual(json.skipped, [
      { model: 'cheap-notools', param: 'tools', reason: 'lacks tools' },
      { model: 'cheap-claude', param: 'logprobs', reason: 'lacks logprobs' },
    ]);
    // nothing can take audio: the command fails and lists every model it skipped
    fs.writeFileSync(req, JSON.stringify({ model: 'auto', messages: USER_MSG, audio: { voice: 'alloy', format: 'wav' } }));
    const none = await runCli(['route', '--config', gw.configPath, '--request', req]);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /none of its models .* can take this request/);
    assert.match(none.stderr, /^skipped +gpt-4o-mini +audio: lacks audio$/m, none.stderr);
  });

  test('GET /v1/models lists what each model can do', async () => {
    const r = await get(`${gw.baseURL}/models`, gw.auth);
    assert.equal(r.status, 200, r.text);
    const caps = Object.fromEntries(r.json.data.filter((m) => m.bridle.capabilities).map((m) => [m.id, m.bridle.capabilities]));
    assert.deepEqual(caps['gpt-4o-mini'], ['tools', 'vision', 'json_schema', 'logprobs']);
    assert.deepEqual(caps['claude-haiku-4-5'], ['tools', 'vision', 'json_schema']);
    assert.deepEqual(caps['gemini-2.5-flash'], ['tools', 'vision', 'json_schema', 'logprobs']);
    assert.deepEqual(caps['llama3.2'], ['tools', 'json_schema', 'logprobs']);
    assert.deepEqual(caps['llava-local'], ['tools', 'vision', 'json_schema', 'logprobs']);
    assert.deepEqual(caps['cheap-notools'], ['vision', 'json_schema', 'logprobs']); // as configured
  });
});

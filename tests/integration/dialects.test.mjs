// One model per upstream dialect (openai, anthropic, gemini, ollama) through
// bridle to bridle-mock: the answer, the usage computed from the mock's
// formulas, the cost header computed from the price table, streaming with and
// without include_usage, what the mock received upstream, and truncation.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { mockConfig, mockLast, parseSSE, post, startBridle, startMock } from './lib/harness.mjs';
import { billed, costPusd, expected, formatUsd } from './lib/mockmath.mjs';

let mock;
let gw;

// model → dialect, upstream model, price row
const MODELS = [
  { model: 'gpt-4o-mini', dialect: 'openai', upstream: 'gpt-4o-mini', price: 'gpt-4o-mini' },
  { model: 'claude-haiku-4-5', dialect: 'anthropic', upstream: 'claude-haiku-4-5', price: 'claude-haiku-4-5' },
  { model: 'gemini-2.5-flash', dialect: 'gemini', upstream: 'gemini-2.5-flash', price: 'gemini-2.5-flash' },
  { model: 'llama3.2', dialect: 'ollama', upstream: 'llama3.2', price: 'llama3.2' },
];
// the same four under another client-facing name (models.NAME.upstream_model)
const ALIASES = MODELS.map((m) => ({ ...m, model: `alias-${m.dialect}` }));

before(async () => {
  mock = await startMock();
  const models = {};
  for (const a of ALIASES) models[a.model] = { provider: a.dialect, upstream_model: a.upstream, price: a.price };
  gw = await startBridle({ config: mockConfig(mock.url, { models }) });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
});

const chat = (body, headers = gw.auth) => post(`${gw.baseURL}/chat/completions`, body, headers, { timeoutMs: 10000 });

/** The client-facing usage bridle should return for expectation `e` in `dialect`. */
function clientUsage(dialect, e) {
  const b = billed(dialect, e);
  const prompt = b.input_uncached + b.cache_read + b.cache_write_5m + b.cache_write_1h;
  return { prompt_tokens: prompt, completion_tokens: e.C, total_tokens: prompt + e.C };
}

function checkUsage(dialect, usage, e, what) {
  const want = clientUsage(dialect, e);
  const got = {
    prompt_tokens: usage?.prompt_tokens,
    completion_tokens: usage?.completion_tokens,
    total_tokens: usage?.total_tokens,
  };
  assert.deepEqual(got, want, `${what}: usage ${JSON.stringify(usage)}`);
  // Ollama has no prompt cache: the mock ignores cached_tokens there
  const b = billed(dialect, e);
  if (dialect !== 'ollama' || usage.prompt_tokens_details)
    assert.equal(usage.prompt_tokens_details?.cached_tokens ?? 0, b.cache_read, `${what}: cached_tokens in ${JSON.stringify(usage)}`);
  if (dialect === 'openai' || dialect === 'gemini')
    assert.equal(usage.completion_tokens_details?.reasoning_tokens ?? 0, e.R, `${what}: reasoning_tokens in ${JSON.stringify(usage)}`);
}

function checkCost(r, m, e, what) {
  const want = formatUsd(costPusd(m.price, billed(m.dialect, e)));
  assert.equal(r.headers['x-bridle-cost-usd'], want, `${what}: x-bridle-cost-usd (usage ${JSON.stringify(r.json?.usage)})`);
  // a model asked for by name is its own baseline: nothing saved
  assert.equal(r.headers['x-bridle-savings-usd'], '0.000000', `${what}: x-bridle-savings-usd`);
}

/** Checks a whole SSE stream; → {chunks (parsed JSON, before [DONE]), text (concatenated content)}. */
function readStream(r, what) {
  assert.equal(r.status, 200, `${what}: ${r.text}`);
  assert.match(r.headers['content-type'] || '', /^text\/event-stream/, what);
  const events = parseSSE(r.text);
  assert.ok(events.length >= 2, `${what}: ${r.text}`);
  assert.equal(events.at(-1).data, '[DONE]', `${what}: [DONE] must be the last event:\n${r.text}`);
  assert.equal(events.filter((e) => e.data === '[DONE]').length, 1, `${what}: one [DONE]`);
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data));
  for (const c of chunks) {
    assert.equal(c.error, undefined, `${what}: error chunk ${JSON.stringify(c)}`);
    assert.equal(c.object, 'chat.completion.chunk', `${what}: ${JSON.stringify(c)}`);
  }
  const ids = new Set(chunks.map((c) => c.id));
  assert.equal(ids.size, 1, `${what}: every chunk has the same id, got ${[...ids]}`);
  let text = '';
  for (const c of chunks) for (const ch of c.choices) text += ch.delta?.content ?? '';
  return { chunks, text };
}

for (const m of MODELS) {
  describe(`${m.model} (${m.dialect})`, () => {
    test('non-stream: answer, finish_reason, exact usage, headers and cost', async () => {
      const messages = [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'Say hello to the test suite, please: ünïcødé counts in bytes' },
      ];
      const e = expected(messages, m.upstream);
      const r = await chat({ model: m.model, messages });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.object, 'chat.completion');
      assert.equal(r.json.model, m.model);
      assert.equal(typeof r.json.id, 'string');
      assert.equal(typeof r.json.created, 'number');
      assert.equal(r.json.choices.length, 1);
      assert.equal(r.json.choices[0].index, 0);
      assert.equal(r.json.choices[0].message.role, 'assistant');
      assert.equal(r.json.choices[0].message.content, e.answer);
      assert.equal(r.json.choices[0].finish_reason, 'stop');
      checkUsage(m.dialect, r.json.usage, e, m.model);
      assert.match(r.headers['content-type'], /^application\/json/);
      assert.equal(r.headers['x-bridle-provider'], m.dialect);
      assert.equal(r.headers['x-bridle-model'], m.model);
      assert.equal(r.headers['x-bridle-attempts'], '1');
      assert.equal(r.headers['x-bridle-route'], undefined);
      assert.match(r.headers['x-request-id'] || '', /^\S{8,}$/);
      checkCost(r, m, e, m.model);
    });

    test('usage overrides via directives show in usage and cost', async () => {
      const cases = [
        '[[mock:cached_tokens=5]] twenty bytes pad pad pad pad pad pad pad pad pad pad',
        '[[mock:reasoning_tokens=7]] think first',
        '[[mock:prompt_tokens=1000,completion_tokens=250,cached_tokens=400]]',
        '[[mock:prompt_tokens=3000,cached_tokens=1000,reasoning_tokens=12]]',
      ];
      if (m.dialect === 'anthropic' || m.dialect === 'openai') {
        cases.push('[[mock:prompt_tokens=2000,cache_write_tokens=600,cached_tokens=300]]');
      }
      if (m.dialect === 'anthropic') {
        cases.push('[[mock:prompt_tokens=5000,cache_write_tokens=600,cache_write_1h_tokens=900,cached_tokens=300]]');
      }
      for (const content of cases) {
        const messages = [{ role: 'user', content }];
        const e = expected(messages, m.upstream);
        // the mock's Anthropic dialect reports no thinking tokens: reasoning is not visible there
        const r = await chat({ model: m.model, messages });
        assert.equal(r.status, 200, `${content}: ${r.text}`);
        assert.equal(r.json.choices[0].message.content, e.answer);
        checkUsage(m.dialect, r.json.usage, e, content);
        if (m.dialect === 'anthropic' || (m.dialect === 'openai' && e.W5 + e.W1 > 0)) {
          assert.equal(
            r.json.usage.prompt_tokens_details?.cache_write_tokens ?? 0,
            e.W5 + e.W1,
            `${content}: cache_write_tokens in ${JSON.stringify(r.json.usage)}`,
          );
        }
        checkCost(r, m, e, content);
      }
    });

    for (const includeUsage of [true, false]) {
      test(`stream, include_usage ${includeUsage}: chunks make the answer, [DONE] last, usage chunk iff asked`, async () => {
        const messages = [{ role: 'user', content: `Stream to me [[mock:cached_tokens=3,reasoning_tokens=2]] ${'x'.repeat(41)}` }];
        const e = expected(messages, m.upstream);
        const body = { model: m.model, messages, stream: true };
        if (includeUsage) body.stream_options = { include_usage: true };
        const r = await chat(body);
        const { chunks, text } = readStream(r, m.model);
        assert.equal(text, e.answer);
        assert.equal(r.headers['x-bridle-provider'], m.dialect);
        assert.equal(r.headers['x-bridle-model'], m.model);
        assert.equal(r.headers['x-bridle-attempts'], '1');
        assert.match(r.headers['x-request-id'] || '', /^req_[0-9a-f]{24}$/);
        const finishes = chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f);
        assert.deepEqual(finishes, ['stop'], `one finish_reason: ${finishes}`);
        for (const c of chunks) assert.equal(c.model, m.model, JSON.stringify(c));
        const withUsage = chunks.filter((c) => c.usage);
        if (!includeUsage) {
          assert.equal(withUsage.length, 0, `no usage chunk was asked for: ${JSON.stringify(withUsage)}`);
          for (const c of chunks) assert.ok(c.choices.length > 0, `a chunk without choices: ${JSON.stringify(c)}`);
          return;
        }
        assert.equal(withUsage.length, 1, `one usage chunk: ${r.text}`);
        const last = chunks.at(-1);
        assert.equal(last, withUsage[0], 'the usage chunk is the last before [DONE]');
        assert.deepEqual(last.choices, []);
        checkUsage(m.dialect, last.usage, e, `${m.model} stream`);
      });
    }

    test('stream with include_usage: every earlier chunk has "usage": null (wire-formats §1.2)', async () => {
      const r = await chat({
        model: m.model,
        messages: [{ role: 'user', content: 'Hi' }],
        stream: true,
        stream_options: { include_usage: true },
      });
      const { chunks } = readStream(r, m.model);
      for (const c of chunks.slice(0, -1))
        assert.ok('usage' in c && c.usage === null, `chunk without "usage": null: ${JSON.stringify(c)}`);
    });

    test('finish=length → finish_reason "length", stream and not', async () => {
      const messages = [{ role: 'user', content: 'Go on [[mock:finish=length]]' }];
      const e = expected(messages, m.upstream);
      const r = await chat({ model: m.model, messages });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.choices[0].finish_reason, 'length');
      assert.equal(r.json.choices[0].message.content, e.answer);
      const s = await chat({ model: m.model, messages, stream: true });
      const { chunks, text } = readStream(s, m.model);
      assert.equal(text, e.answer);
      const finishes = chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f);
      assert.deepEqual(finishes, ['length']);
    });

    for (const field of ['max_tokens', 'max_completion_tokens']) {
      test(`${field}: 3 truncates the answer to 3 words, finish_reason "length", the cap goes upstream`, async () => {
        const messages = [{ role: 'user', content: 'Tell me everything' }];
        const e = expected(messages, m.upstream, { cap: 3 });
        assert.equal(e.finish, 'length');
        const r = await chat({ model: m.model, messages, [field]: 3 });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.choices[0].message.content, e.answer);
        assert.equal(r.json.choices[0].finish_reason, 'length');
        checkUsage(m.dialect, r.json.usage, e, field);
        checkCost(r, m, e, field);
        const [up] = await mockLast(mock.url);
        const b = up.body;
        if (m.dialect === 'openai') assert.equal(b.max_tokens ?? b.max_completion_tokens, 3, JSON.stringify(b));
        if (m.dialect === 'anthropic') assert.equal(b.max_tokens, 3, JSON.stringify(b));
        if (m.dialect === 'gemini') assert.equal(b.generationConfig?.maxOutputTokens, 3, JSON.stringify(b));
        if (m.dialect === 'ollama') assert.equal(b.options?.num_predict, 3, JSON.stringify(b));

        const s = await chat({ model: m.model, messages, [field]: 3, stream: true, stream_options: { include_usage: true } });
        const { chunks, text } = readStream(s, m.model);
        assert.equal(text, e.answer);
        const finishes = chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f);
        assert.deepEqual(finishes, ['length']);
        checkUsage(m.dialect, chunks.at(-1).usage, e, `${field} stream`);
      });
    }
  });
}

describe('what the mock receives upstream', () => {
  const messages = [
    { role: 'system', content: 'System rules here.' },
    { role: 'user', content: 'First question' },
    { role: 'assistant', content: 'First answer' },
    { role: 'user', content: 'Second question' },
  ];

  test('openai: model, messages as sent, provider key; stream always asks for usage', async () => {
    await chat({ model: 'gpt-4o-mini', messages });
    let [up] = await mockLast(mock.url);
    assert.equal(up.path, '/v1/chat/completions');
    assert.equal(up.body.model, 'gpt-4o-mini');
    assert.deepEqual(up.body.messages, messages);
    assert.ok(!up.body.stream, JSON.stringify(up.body));
    assert.equal(up.headers.authorization, 'Bearer sk-mock-openai');
    for (const inc of [undefined, false, true]) {
      const body = { model: 'gpt-4o-mini', messages, stream: true };
      if (inc !== undefined) body.stream_options = { include_usage: inc };
      const r = await chat(body);
      assert.equal(r.status, 200, r.text);
      [up] = await mockLast(mock.url);
      assert.equal(up.body.stream, true);
      assert.deepEqual(up.body.stream_options, { include_usage: true }, `client include_usage ${inc}`);
    }
  });

  test('anthropic: max_tokens always present, system hoisted, provider key and version', async () => {
    await chat({ model: 'claude-haiku-4-5', messages });
    let [up] = await mockLast(mock.url);
    assert.equal(up.path, '/v1/messages');
    assert.equal(up.body.model, 'claude-haiku-4-5');
    assert.equal(typeof up.body.max_tokens, 'number');
    assert.equal(up.body.max_tokens, 4096); // ANTHROPIC_DEFAULT_MAX_TOKENS: the client set none
    const sys = typeof up.body.system === 'string' ? up.body.system : up.body.system.map((b) => b.text).join('');
    assert.equal(sys, 'System rules here.');
    assert.deepEqual(
      up.body.messages.map((x) => x.role),
      ['user', 'assistant', 'user'],
    );
    assert.equal(up.headers['x-api-key'], 'sk-mock-anthropic');
    assert.equal(up.headers['anthropic-version'], '2023-06-01');
    await chat({ model: 'claude-haiku-4-5', messages, max_tokens: 77, stream: true });
    [up] = await mockLast(mock.url);
    assert.equal(up.body.max_tokens, 77);
    assert.equal(up.body.stream, true);
  });

  test('gemini: model in the path, generateContent / streamGenerateContent?alt=sse, systemInstruction', async () => {
    await chat({ model: 'gemini-2.5-flash', messages });
    let [up] = await mockLast(mock.url);
    assert.equal(up.path, '/v1beta/models/gemini-2.5-flash:generateContent');
    assert.equal(up.headers['x-goog-api-key'], 'mock-gemini');
    assert.equal(up.body.systemInstruction.parts.map((p) => p.text).join(''), 'System rules here.');
    assert.deepEqual(
      up.body.contents.map((c) => c.role),
      ['user', 'model', 'user'],
    );
    await chat({ model: 'gemini-2.5-flash', messages, stream: true });
    [up] = await mockLast(mock.url);
    assert.equal(up.path, '/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse');
  });

  test('ollama: /api/chat with "stream" always explicit', async () => {
    await chat({ model: 'llama3.2', messages });
    let [up] = await mockLast(mock.url);
    assert.equal(up.path, '/api/chat');
    assert.equal(up.body.model, 'llama3.2');
    assert.equal(up.body.stream, false);
    await chat({ model: 'llama3.2', messages, stream: true });
    [up] = await mockLast(mock.url);
    assert.equal(up.body.stream, true);
  });

  test('the client key never goes upstream', async () => {
    for (const m of MODELS) {
      await chat({ model: m.model, messages });
      const [up] = await mockLast(mock.url);
      assert.ok(!JSON.stringify(up.headers).includes(gw.key), `${m.model}: ${JSON.stringify(up.headers)}`);
    }
  });

  test('upstream_model: an alias is sent upstream under the provider name, answered and priced as configured', async () => {
    for (const a of ALIASES) {
      const msgs = [{ role: 'user', content: 'alias check [[mock:cached_tokens=2]]' }];
      const e = expected(msgs, a.upstream);
      const r = await chat({ model: a.model, messages: msgs });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.choices[0].message.content, e.answer, a.model);
      // the upstream's own name for the model may show through (OpenAI answers with a dated name)
      assert.ok([a.model, a.upstream].includes(r.json.model), `${a.model}: model ${r.json.model}`);
      assert.equal(r.headers['x-bridle-model'], a.model);
      assert.equal(r.headers['x-bridle-provider'], a.dialect);
      checkCost(r, a, e, a.model);
      const [up] = await mockLast(mock.url);
      if (a.dialect === 'gemini') assert.equal(up.path, `/v1beta/models/${a.upstream}:generateContent`);
      else assert.equal(up.body.model, a.upstream, JSON.stringify(up.body));
    }
  });
});

// Tool calls end to end, with the `openai` SDK (6.x) against bridle and the
// mock answering tool calls in each provider's dialect (tests/mock/README.md,
// "Tool calls"): the calls come back in OpenAI's shape with finish_reason
// "tool_calls" (Gemini and Ollama say STOP/stop natively), plain and
// streamed (reassembled by the SDK's own helpers); the tool results sent back
// as role:"tool" messages reach each provider in its own shape (checked on
// /_mock/last); tools, tool_choice and parallel_tool_calls are translated;
// every request leaves a ledger row with its tokens and a cost; and the SDK's
// runTools drives whole conversations through bridle.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { get, mockConfig, mockLast, mockReset, mockStats, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster } from './lib/ledgerlib.mjs';
import { answerFor, billed, formatUsd, PRICES } from './lib/mockmath.mjs';

const MODELS = [
  { model: 'gpt-4o-mini', dialect: 'openai' },
  { model: 'claude-haiku-4-5', dialect: 'anthropic' },
  { model: 'gemini-2.5-flash', dialect: 'gemini' },
  { model: 'llama3.2', dialect: 'ollama' },
];

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
      required: ['city'],
    },
  },
};
const TIME = {
  type: 'function',
  function: {
    name: 'get_time',
    description: 'Local time in a time zone',
    parameters: { type: 'object', properties: { tz: { type: 'string' } }, required: ['tz'] },
  },
};
const TOOLS = [WEATHER, TIME];
// what the mock derives from the schemas (README: "Tool calls")
const ARGS = { get_weather: { city: 'mock-city', unit: 'celsius' }, get_time: { tz: 'mock-tz' } };
const RESULTS = { get_weather: '{"temp_c":21,"sky":"clear"}', get_time: '{"time":"12:00"}' };
// the mock counts a call as ceil((name + arguments bytes) / 4) output tokens
const callTokens = (name) => Math.ceil((name.length + JSON.stringify(ARGS[name]).length) / 4);

const RUN = randomBytes(4).toString('hex');
let seq = 0;
const marker = () => `tools-${RUN}-${++seq}`;

let mock, db, gw, client, lastHeaders;

before(async () => {
  mock = await startMock();
  db = await startCluster();
  gw = await startBridle({
    config: mockConfig(mock.url, {
      database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 100 },
      // a self-hosted model priced (its GPUs cost money), so every row has a cost
      models: { 'llama3.2': { provider: 'ollama', prices: { input: 0.1, output: 0.4 } }, 'gemini-3-flash': { provider: 'gemini' } },
      cache: { enabled: true }, // only requests at temperature 0 use it
    }),
    keyId: 'tools',
    team: 'team-tools',
  });
  // the stream helpers do not expose the response: its headers are kept here
  const fetchKeep = async (url, init) => {
    const r = await fetch(url, init);
    lastHeaders = r.headers;
    return r;
  };
  client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0, timeout: 15000, fetch: fetchKeep });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await db?.destroy();
});

const ask = (n = 1) => [{ role: 'user', content: `What is the weather in Paris? [[mock:tool_calls=${n}]]` }];

/** The body the provider received last (bridle's upstream request). */
const upstream = async () => (await mockLast(mock.url, 1))[0].body;

/** create() with a ledger marker → {c, headers, user}. */
async function create(body, user = marker()) {
  const { data, response } = await client.chat.completions.create({ ...body, user }).withResponse();
  return { c: data, headers: response.headers, user };
}

/** The SDK's stream helper, reassembled by finalChatCompletion() → {c, user, chunks, headers}. */
async function streamed(body, user = marker()) {
  const s = client.chat.completions.stream({ ...body, user, stream_options: { include_usage: true } });
  const chunks = [];
  s.on('chunk', (ch) => chunks.push(ch));
  const c = await s.finalChatCompletion();
  return { c, user, chunks, headers: lastHeaders };
}

/** The assistant turn to send back, as the SDK's docs do: the message itself. */
const assistantTurn = (msg) => ({ role: 'assistant', content: msg.content ?? null, tool_calls: msg.tool_calls });

const toolTurns = (calls) => calls.map((tc) => ({ role: 'tool', tool_call_id: tc.id, content: RESULTS[tc.function.name] }));

function assertCalls(c, names, what) {
  const ch = c.choices[0];
  assert.equal(ch.finish_reason, 'tool_calls', `${what}: finish_reason`);
  const calls = ch.message.tool_calls || [];
  assert.deepEqual(
    calls.map((tc) => tc.function.name),
    names,
    `${what}: called tools`,
  );
  for (const tc of calls) {
    assert.equal(tc.type, 'function', what);
    assert.match(tc.id, /^\S{6,}$/, `${what}: a call id`);
    assert.deepEqual(JSON.parse(tc.function.arguments), ARGS[tc.function.name], `${what}: arguments`);
  }
  assert.equal(new Set(calls.map((tc) => tc.id)).size, calls.length, `${what}: distinct ids`);
  return calls;
}

// ---------------------------------------------------------------------------
// what each provider must have received

const anthropicTool = (t) => ({ name: t.function.name, description: t.function.description, input_schema: t.function.parameters });
const geminiDecl = (t) => ({ name: t.function.name, description: t.function.description, parametersJsonSchema: t.function.parameters });

/** The tools and tool_choice in the dialect's own shape. */
function assertToolsSent(dialect, body, tools, choice, what) {
  const named = typeof choice === 'object' ? choice.function.name : null;
  switch (dialect) {
    case 'openai':
      assert.deepEqual(body.tools, tools, what);
      assert.deepEqual(body.tool_choice, choice, what);
      break;
    case 'anthropic': {
      assert.deepEqual(body.tools, tools.map(anthropicTool), what);
      const want = named ? { type: 'tool', name: named } : { type: { auto: 'auto', required: 'any', none: 'none' }[choice] };
      assert.deepEqual(body.tool_choice, want, what);
      break;
    }
    case 'gemini': {
      assert.deepEqual(body.tools, [{ functionDeclarations: tools.map(geminiDecl) }], what);
      const mode = named ? 'ANY' : { auto: 'AUTO', required: 'ANY', none: 'NONE' }[choice];
      const want = named ? { mode, allowedFunctionNames: [named] } : { mode };
      assert.deepEqual(body.toolConfig, { functionCallingConfig: want }, what);
      break;
    }
    case 'ollama':
      // no tool_choice on Ollama's wire: none sends no tools, a named
      // function only that one, auto and required every tool
      assert.equal(body.tool_choice, undefined, what);
      if (choice === 'none') assert.equal(body.tools, undefined, what);
      else assert.deepEqual(body.tools, named ? tools.filter((t) => t.function.name === named) : tools, what);
      break;
  }
}

/** The assistant's calls and the tool results, in the dialect's own shape. */
function assertResultsSent(dialect, body, calls, what) {
  const names = calls.map((tc) => tc.function.name);
  switch (dialect) {
    case 'openai': {
      const m = body.messages;
      assert.deepEqual(m.at(-1 - calls.length).tool_calls.map((tc) => tc.id), calls.map((tc) => tc.id), what);
      assert.deepEqual(
        m.slice(-calls.length),
        calls.map((tc) => ({ role: 'tool', tool_call_id: tc.id, content: RESULTS[tc.function.name] })),
        what,
      );
      break;
    }
    case 'anthropic': {
      const [asst, user] = body.messages.slice(-2);
      assert.equal(asst.role, 'assistant', what);
      assert.deepEqual(
        asst.content.filter((b) => b.type === 'tool_use'),
        calls.map((tc) => ({ type: 'tool_use', id: tc.id, name: tc.function.name, input: ARGS[tc.function.name] })),
        what,
      );
      // every result in ONE user turn, each naming the tool_use it answers
      assert.equal(user.role, 'user', what);
      assert.deepEqual(
        user.content,
        calls.map((tc) => ({ type: 'tool_result', tool_use_id: tc.id, content: RESULTS[tc.function.name] })),
        what,
      );
      break;
    }
    case 'gemini': {
      const [model, user] = body.contents.slice(-2);
      assert.equal(model.role, 'model', what);
      assert.deepEqual(
        model.parts.filter((p) => p.functionCall).map((p) => p.functionCall),
        names.map((n) => ({ name: n, args: ARGS[n] })),
        what,
      );
      assert.equal(user.role, 'user', what);
      assert.deepEqual(
        user.parts,
        names.map((n) => ({ functionResponse: { name: n, response: { content: RESULTS[n] } } })),
        what,
      );
      break;
    }
    case 'ollama': {
      const m = body.messages;
      assert.deepEqual(
        m.at(-1 - calls.length).tool_calls.map((tc) => tc.function),
        names.map((n) => ({ name: n, arguments: ARGS[n] })),
        `${what}: arguments as objects`,
      );
      assert.deepEqual(
        m.slice(-calls.length),
        names.map((n) => ({ role: 'tool', content: RESULTS[n], tool_name: n })),
        what,
      );
      break;
    }
  }
}

// ---------------------------------------------------------------------------
// the ledger

async function ledgerRows(users, ms = 3000) {
  const t0 = Date.now();
  for (;;) {
    const rows = (await db.query('SELECT * FROM usage_events WHERE end_user = ANY($1)', [users])).rows;
    if (rows.length >= users.length || Date.now() - t0 > ms) return new Map(rows.map((r) => [r.end_user, r]));
    await sleep(25);
  }
}

// the models this file prices beyond mockmath's table: llama3.2 as configured above
const PRICE = {
  ...PRICES,
  'llama3.2': { input: 100000n, cached: 0n, write5m: 0n, write1h: 0n, output: 400000n },
  'gemini-3-flash': { input: 500000n, cached: 50000n, write5m: 0n, write1h: 0n, output: 3000000n },
};
const DIALECT = { 'gpt-4o-mini': 'openai', 'claude-haiku-4-5': 'anthropic', 'gemini-2.5-flash': 'gemini', 'gemini-3-flash': 'gemini', 'llama3.2': 'ollama' };

/** The exact cost, in pico-dollars, of an answer with this (client-facing) usage. */
function costOf(model, usage) {
  const b = billed(DIALECT[model], { P: usage.prompt_tokens, C: usage.completion_tokens, R: 0, CR: 0, W5: 0, W1: 0 });
  const p = PRICE[model]; // no cache reads or writes here
  assert.equal(b.cache_read + b.cache_write_5m + b.cache_write_1h, 0);
  return BigInt(b.input_uncached) * p.input + BigInt(b.output) * p.output;
}

/** The row holds what the client was told: tokens, the exact cost, status 200. */
function assertRow(row, { model, streamed }, usage, what) {
  assert.ok(row, `${what}: a ledger row`);
  assert.equal(row.status, 200, what);
  assert.equal(row.model, model, what);
  assert.equal(row.streamed, streamed, what);
  assert.equal(row.usage_exact, true, what);
  const input = Number(row.input_tokens) + Number(row.cache_read_tokens) + Number(row.cache_write_tokens);
  assert.equal(input, usage.prompt_tokens, `${what}: input tokens`);
  assert.equal(Number(row.output_tokens), usage.completion_tokens, `${what}: output tokens`);
  assert.ok(BigInt(row.cost_pusd) > 0n, `${what}: cost > 0`);
  assert.equal(BigInt(row.cost_pusd), costOf(model, usage), `${what}: the exact cost`);
}

// ---------------------------------------------------------------------------

describe('a round trip per dialect: tools out, calls back, results out, text back', () => {
  for (const m of MODELS) {
    test(`${m.model} (${m.dialect}), plain`, async () => {
      const messages = ask();
      const first = await create({ model: m.model, messages, tools: TOOLS, tool_choice: 'auto' });
      const calls = assertCalls(first.c, ['get_weather'], 'first answer');
      assert.equal(first.c.choices[0].message.content, null, 'no text with the call: null, as OpenAI says');
      assertToolsSent(m.dialect, await upstream(), TOOLS, 'auto', 'tools out');
      assert.equal(first.headers.get('x-bridle-model'), m.model);
      assert.equal(first.headers.get('x-bridle-provider'), m.dialect);
      assert.equal(first.headers.get('x-bridle-cost-usd'), formatUsd(costOf(m.model, first.c.usage)), 'x-bridle-cost-usd');
      assert.equal(first.c.usage.completion_tokens, callTokens('get_weather'), 'the call is billed as output');

      const messages2 = [...messages, assistantTurn(first.c.choices[0].message), ...toolTurns(calls)];
      const second = await create({ model: m.model, messages: messages2, tools: TOOLS, tool_choice: 'auto' });
      assert.equal(second.c.choices[0].finish_reason, 'stop');
      assert.equal(second.c.choices[0].message.content, answerFor(m.model));
      assert.ok(!second.c.choices[0].message.tool_calls?.length, 'no calls in the final answer');
      assertResultsSent(m.dialect, await upstream(), calls, 'results out');

      const rows = await ledgerRows([first.user, second.user]);
      assertRow(rows.get(first.user), { model: m.model, streamed: false }, first.c.usage, 'the call');
      assertRow(rows.get(second.user), { model: m.model, streamed: false }, second.c.usage, 'the answer');
    });

    test(`${m.model} (${m.dialect}), streamed: finalChatCompletion() reassembles the call`, async () => {
      const messages = ask();
      const first = await streamed({ model: m.model, messages, tools: TOOLS, tool_choice: 'auto' });
      const calls = assertCalls(first.c, ['get_weather'], 'first answer');
      assert.equal(first.headers.get('x-bridle-model'), m.model);
      assert.equal(first.headers.get('x-bridle-provider'), m.dialect);
      assert.equal(first.headers.get('content-type'), 'text/event-stream');
      assertToolsSent(m.dialect, await upstream(), TOOLS, 'auto', 'tools out');
      // one chunk names the call (id + name), later ones only add arguments
      const deltas = first.chunks.flatMap((ch) => ch.choices.flatMap((c) => c.delta?.tool_calls ?? []));
      assert.equal(deltas.filter((d) => d.id).length, 1, 'the id once');
      assert.equal(deltas[0].id, calls[0].id);
      assert.equal(deltas[0].function.name, 'get_weather');
      assert.ok(deltas.every((d) => d.index === 0), 'index 0 throughout');
      if (m.dialect === 'openai' || m.dialect === 'anthropic')
        assert.ok(deltas.length > 2, `arguments in fragments (${deltas.length} deltas)`);
      const usageChunk = first.chunks.at(-1);
      assert.deepEqual(usageChunk.choices, []);
      assert.equal(usageChunk.usage.completion_tokens, callTokens('get_weather'));

      const messages2 = [...messages, assistantTurn(first.c.choices[0].message), ...toolTurns(calls)];
      const second = await streamed({ model: m.model, messages: messages2, tools: TOOLS });
      assert.equal(second.c.choices[0].finish_reason, 'stop');
      assert.equal(second.c.choices[0].message.content, answerFor(m.model));
      assertResultsSent(m.dialect, await upstream(), calls, 'results out');

      const rows = await ledgerRows([first.user, second.user]);
      assertRow(rows.get(first.user), { model: m.model, streamed: true }, usageChunk.usage, 'the call');
      assertRow(rows.get(second.user), { model: m.model, streamed: true }, second.chunks.at(-1).usage, 'the answer');
    });
  }
});

describe('tool_choice', () => {
  for (const m of MODELS) {
    test(`${m.model} (${m.dialect}): required, a named function, none`, async () => {
      if (m.dialect === 'ollama') {
        // Ollama cannot force a call: bridle refuses rather than hope (docs/config.md)
        for (const tool_choice of ['required', { type: 'function', function: { name: 'get_time' } }])
          await assert.rejects(create({ model: m.model, messages: ask(), tools: TOOLS, tool_choice }), (e) => e.status === 400 && e.param === 'tool_choice');
      } else {
      const req = await create({ model: m.model, messages: ask(), tools: TOOLS, tool_choice: 'required' });
      assertCalls(req.c, ['get_weather'], 'required');
      assertToolsSent(m.dialect, await upstream(), TOOLS, 'required', 'required');

      // the mock calls the first tool unless one is forced: get_time proves it
      const choice = { type: 'function', function: { name: 'get_time' } };
      for (const s of [false, true]) {
        const r = s ? await streamed({ model: m.model, messages: ask(), tools: TOOLS, tool_choice: choice }) : await create({ model: m.model, messages: ask(), tools: TOOLS, tool_choice: choice });
        assertCalls(r.c, ['get_time'], `named, ${s ? 'streamed' : 'plain'}`);
        assertToolsSent(m.dialect, await upstream(), TOOLS, choice, 'named');
      }
      }

      const none = await create({ model: m.model, messages: ask(), tools: TOOLS, tool_choice: 'none' });
      assert.equal(none.c.choices[0].finish_reason, 'stop');
      assert.equal(none.c.choices[0].message.content, answerFor(m.model));
      assert.equal(none.c.choices[0].message.tool_calls, undefined);
      assertToolsSent(m.dialect, await upstream(), TOOLS, 'none', 'none');
    });
  }
});

describe('tool_choice allowed_tools (a subset of the tools)', () => {
  for (const m of MODELS)
    test(`${m.model} (${m.dialect}): mode required and auto offer only the subset`, async () => {
      for (const mode of ['required', 'auto']) {
        const tool_choice = { type: 'allowed_tools', allowed_tools: { mode, tools: [{ type: 'function', function: { name: 'get_time' } }] } };
        if (m.dialect === 'ollama' && mode === 'required') {
          await assert.rejects(create({ model: m.model, messages: ask(1), tools: TOOLS, tool_choice }), (e) => e.status === 400 && e.param === 'tool_choice');
          continue;
        }
        const r = await create({ model: m.model, messages: ask(1), tools: TOOLS, tool_choice });
        assertCalls(r.c, ['get_time'], mode);
        const body = await upstream();
        switch (m.dialect) {
          case 'openai':
            assert.deepEqual(body.tool_choice, tool_choice, 'as sent');
            break;
          case 'anthropic':
            assert.deepEqual(body.tools, [anthropicTool(TIME)], mode);
            assert.deepEqual(body.tool_choice, { type: mode === 'required' ? 'any' : 'auto' }, mode);
            break;
          case 'gemini':
            assert.deepEqual(body.tools, [{ functionDeclarations: [geminiDecl(TIME)] }], mode);
            assert.deepEqual(body.toolConfig, { functionCallingConfig: { mode: mode === 'required' ? 'ANY' : 'AUTO' } }, mode);
            break;
          case 'ollama':
            assert.deepEqual(body.tools, [TIME], mode);
            break;
        }
      }
      // a subset that names none of the tools: refused, saying so (OpenAI itself judges its own)
      if (m.dialect !== 'openai') {
        const bad = { type: 'allowed_tools', allowed_tools: { mode: 'auto', tools: [{ type: 'function', function: { name: 'nope' } }] } };
        await assert.rejects(client.chat.completions.create({ model: m.model, messages: ask(1), tools: TOOLS, tool_choice: bad }), (e) => {
          assert.equal(e.status, 400);
          assert.match(e.message, /allowed_tools names none of the request's tools/);
          return true;
        });
      }
    });
});

describe('parallel calls', () => {
  for (const m of MODELS) {
    test(`${m.model} (${m.dialect}): two calls in one answer, both results back, plain and streamed`, async () => {
      for (const s of [false, true]) {
        const how = s ? 'streamed' : 'plain';
        const messages = ask(2);
        const call = (body) => (s ? streamed(body) : create(body));
        const first = await call({ model: m.model, messages, tools: TOOLS });
        const calls = assertCalls(first.c, ['get_weather', 'get_time'], how);
        const messages2 = [...messages, assistantTurn(first.c.choices[0].message), ...toolTurns(calls)];
        const second = await call({ model: m.model, messages: messages2, tools: TOOLS });
        assert.equal(second.c.choices[0].message.content, answerFor(m.model), how);
        assertResultsSent(m.dialect, await upstream(), calls, how);
        const usage = s ? first.chunks.at(-1).usage : first.c.usage;
        assert.equal(usage.completion_tokens, callTokens('get_weather') + callTokens('get_time'), how);
        const rows = await ledgerRows([first.user, second.user]);
        assertRow(rows.get(first.user), { model: m.model, streamed: s }, usage, `${how}, the calls`);
      }
    });
  }

  test('parallel_tool_calls: false reaches OpenAI as is and Anthropic as disable_parallel_tool_use', async () => {
    for (const model of ['gpt-4o-mini', 'claude-haiku-4-5']) {
      for (const tool_choice of [undefined, 'auto', 'required']) {
        const r = await create({ model, messages: ask(2), tools: TOOLS, tool_choice, parallel_tool_calls: false });
        assertCalls(r.c, ['get_weather'], `${model} ${tool_choice}: one call`);
        const body = await upstream();
        if (model === 'gpt-4o-mini') assert.equal(body.parallel_tool_calls, false);
        else
          assert.deepEqual(body.tool_choice, { type: tool_choice === 'required' ? 'any' : 'auto', disable_parallel_tool_use: true }, `${tool_choice}`);
      }
    }
  });
});

describe('parallel_tool_calls: false where the provider cannot be told', () => {
  for (const m of MODELS.filter((x) => x.dialect === 'gemini' || x.dialect === 'ollama'))
    test(`${m.model} (${m.dialect}): the first call only, and the conversation goes on (plain and streamed)`, async () => {
      for (const s of [false, true]) {
        const how = s ? 'streamed' : 'plain';
        const messages = ask(2); // the mock answers two calls: Gemini and Ollama have no switch
        const call = (body) => (s ? streamed(body) : create(body));
        const first = await call({ model: m.model, messages, tools: TOOLS, parallel_tool_calls: false });
        const calls = assertCalls(first.c, ['get_weather'], how);
        const messages2 = [...messages, assistantTurn(first.c.choices[0].message), ...toolTurns(calls)];
        const second = await call({ model: m.model, messages: messages2, tools: TOOLS, parallel_tool_calls: false });
        assert.equal(second.c.choices[0].message.content, answerFor(m.model), how);
        assertResultsSent(m.dialect, await upstream(), calls, how);
      }
    });
});

describe("the SDK's runTools", () => {
  const runnable = (calls) => [
    { type: 'function', function: { ...WEATHER.function, parse: JSON.parse, function: async (a) => (calls.push(['get_weather', a]), RESULTS.get_weather) } },
    { type: 'function', function: { ...TIME.function, parse: JSON.parse, function: async (a) => (calls.push(['get_time', a]), RESULTS.get_time) } },
  ];
  for (const m of MODELS)
    for (const stream of [false, true])
      test(`${m.model} (${m.dialect}), ${stream ? 'streamed' : 'plain'}: two tools run, the final answer is text`, async () => {
        const ran = [];
        const runner = client.chat.completions.runTools({ model: m.model, messages: ask(2), tools: runnable(ran), stream });
        assert.equal(await runner.finalContent(), answerFor(m.model));
        assert.deepEqual(ran, [
          ['get_weather', ARGS.get_weather],
          ['get_time', ARGS.get_time],
        ]);
        const all = runner.messages;
        assert.equal(all.filter((x) => x.role === 'tool').length, 2);
        const last = await upstream();
        const n = m.dialect === 'gemini' ? last.contents.length : last.messages.length;
        assert.ok(n >= 3, 'the final request carried the conversation');
      });
});

describe('text with the calls, and conversations that move between providers', () => {
  for (const m of MODELS)
    test(`${m.model} (${m.dialect}): a sentence before two calls, plain and streamed`, async () => {
      for (const s of [false, true]) {
        const how = s ? 'streamed' : 'plain';
        const messages = [{ role: 'user', content: 'Weather and time? [[mock:tool_calls=2,content=Let%20me%20check.]]' }];
        const call = (body) => (s ? streamed(body) : create(body));
        const first = await call({ model: m.model, messages, tools: TOOLS });
        const calls = assertCalls(first.c, ['get_weather', 'get_time'], how);
        assert.equal(first.c.choices[0].message.content, 'Let me check.', how);
        const messages2 = [...messages, assistantTurn(first.c.choices[0].message), ...toolTurns(calls)];
        const second = await call({ model: m.model, messages: messages2, tools: TOOLS });
        assert.equal(second.c.choices[0].message.content, 'Let me check.', `${how}: the answer`);
        const body = await upstream();
        assertResultsSent(m.dialect, body, calls, how);
        // the sentence went back too, before the calls
        if (m.dialect === 'anthropic') assert.deepEqual(body.messages.at(-2).content[0], { type: 'text', text: 'Let me check.' });
        if (m.dialect === 'gemini') assert.deepEqual(body.contents.at(-2).parts[0], { text: 'Let me check.' });
        if (m.dialect === 'openai' || m.dialect === 'ollama') assert.equal(body.messages.at(-3).content, 'Let me check.');
      }
    });

  test('Gemini 3: the thought signature of a call goes back with it (plain and streamed)', async () => {
    for (const s of [false, true]) {
      const how = s ? 'streamed' : 'plain';
      const messages = ask(2);
      const call = (body) => (s ? streamed(body) : create(body));
      const first = await call({ model: 'gemini-3-flash', messages, tools: TOOLS });
      const calls = assertCalls(first.c, ['get_weather', 'get_time'], how);
      const messages2 = [...messages, assistantTurn(first.c.choices[0].message), ...toolTurns(calls)];
      // without the signature the mock answers as Gemini 3 does: 400
      const second = await call({ model: 'gemini-3-flash', messages: messages2, tools: TOOLS });
      assert.equal(second.c.choices[0].message.content, answerFor('gemini-3-flash'), how);
      const parts = (await upstream()).contents.at(-2).parts;
      assert.match(parts[0].thoughtSignature, /\/get_weather\//, `${how}: the first call's signature`);
      assert.equal(parts[1].thoughtSignature, undefined, `${how}: only the first call had one`);
      assert.deepEqual(parts.map((p) => p.functionCall.name), ['get_weather', 'get_time']);
    }
  });

  test('Anthropic with thinking: the tool loop goes on without it (its thinking blocks did not come back)', async () => {
    for (const s of [false, true]) {
      const messages = ask(1);
      const call = (body) => (s ? streamed(body) : create(body));
      const body = { model: 'claude-haiku-4-5', tools: TOOLS, reasoning_effort: 'low' };
      const first = await call({ ...body, messages });
      const calls = assertCalls(first.c, ['get_weather'], 'first');
      assert.deepEqual((await upstream()).thinking, { type: 'enabled', budget_tokens: 1024 }, 'the question is thought about');
      const messages2 = [...messages, assistantTurn(first.c.choices[0].message), ...toolTurns(calls)];
      // with thinking on, the mock refuses this as Anthropic does (400)
      const second = await call({ ...body, messages: messages2 });
      assert.equal(second.c.choices[0].message.content, answerFor('claude-haiku-4-5'));
      assert.equal((await upstream()).thinking, undefined, 'no thinking for the results');
    }
  });

  test('calls made by Gemini 3 answered through Anthropic, OpenAI and Ollama', async () => {
    const messages = ask(2);
    const first = await create({ model: 'gemini-3-flash', messages, tools: TOOLS });
    const calls = assertCalls(first.c, ['get_weather', 'get_time'], 'gemini');
    const messages2 = [...messages, assistantTurn(first.c.choices[0].message), ...toolTurns(calls)];
    for (const m of MODELS.filter((x) => x.dialect !== 'gemini')) {
      const r = await create({ model: m.model, messages: messages2, tools: TOOLS });
      assert.equal(r.c.choices[0].message.content, answerFor(m.model), m.model);
      const body = await upstream();
      if (m.dialect === 'openai') {
        // OpenAI takes ids of 40 characters at most (the mock refuses longer, as OpenAI does):
        // the signature stays behind, and the call still pairs with its result
        const ids = body.messages.at(-3).tool_calls.map((tc) => tc.id);
        assert.deepEqual(ids, calls.map((tc) => tc.id.split('__thought__')[0]));
        assert.deepEqual(body.messages.slice(-2).map((x) => x.tool_call_id), ids);
      }
      if (m.dialect === 'anthropic') {
        // ids fit Anthropic's ^[a-zA-Z0-9_-]+$ (the mock refuses others, as Anthropic does) and still pair up
        const ids = body.messages.at(-2).content.map((b) => b.id);
        assert.ok(ids.every((id) => /^[a-zA-Z0-9_-]+$/.test(id)), ids.join(' '));
        assert.deepEqual(body.messages.at(-1).content.map((b) => b.tool_use_id), ids);
      }
    }
  });

  test('the response cache replays tool calls, plain to streamed and back', async () => {
    for (const m of MODELS) {
      const user = marker();
      const body = { model: m.model, messages: ask(2), tools: TOOLS, temperature: 0 };
      const plain = await create(body, user);
      assert.equal(plain.headers.get('x-bridle-cache'), 'miss', m.model);
      const calls = assertCalls(plain.c, ['get_weather', 'get_time'], `${m.model} plain`);
      const again = await streamed(body, user);
      assert.equal(again.headers.get('x-bridle-cache'), 'hit', m.model);
      const replayed = assertCalls(again.c, ['get_weather', 'get_time'], `${m.model} replayed as a stream`);
      assert.deepEqual(replayed, calls, `${m.model}: the same calls, ids and all`);
      const sbody = { ...body, messages: ask(1) };
      const s1 = await streamed(sbody, user);
      assert.equal(s1.headers.get('x-bridle-cache'), 'miss', m.model);
      const p2 = await create(sbody, user);
      assert.equal(p2.headers.get('x-bridle-cache'), 'hit', m.model);
      assert.deepEqual(p2.c.choices[0].message.tool_calls, s1.c.choices[0].message.tool_calls, `${m.model}: stream replayed plain`);
      assert.equal(p2.c.choices[0].finish_reason, 'tool_calls');
    }
  });
});

describe('estimates', () => {
  for (const m of MODELS)
    test(`${m.model} (${m.dialect}): an answer of tool calls without usage is billed on the calls' bytes`, async () => {
      for (const s of [false, true]) {
        const how = s ? 'streamed' : 'plain';
        const messages = [{ role: 'user', content: 'Weather? [[mock:tool_calls=2,no_usage=1]]' }];
        const r = s ? await streamed({ model: m.model, messages, tools: TOOLS }) : await create({ model: m.model, messages, tools: TOOLS });
        assertCalls(r.c, ['get_weather', 'get_time'], how);
        if (!s) assert.equal(r.headers.get('x-bridle-usage'), 'estimated', how);
        const row = (await ledgerRows([r.user])).get(r.user);
        assert.ok(row, how);
        assert.equal(row.usage_exact, false, how);
        // what the model wrote: names and arguments, 4 bytes a token
        const bytes = ['get_weather', 'get_time'].reduce((n, k) => n + k.length + JSON.stringify(ARGS[k]).length, 0);
        assert.equal(Number(row.output_tokens), Math.ceil(bytes / 4), `${how}: output estimated from the calls`);
        // and the input from the text and the tools' JSON (as the SDK sent it)
        const input = Buffer.byteLength(messages[0].content) + JSON.stringify(TOOLS).length;
        assert.equal(Number(row.input_tokens), Math.ceil(input / 4), `${how}: input estimated with the tools`);
        assert.ok(BigInt(row.cost_pusd) > 0n, how);
      }
    });
});

describe('a tool call stream cut upstream', () => {
  // cut_after=3: OpenAI sends the call's name and two 8-byte argument
  // fragments; Anthropic the block start (the name), an empty delta and one
  for (const [model, bytes] of [
    ['gpt-4o-mini', 'get_weather'.length + 16],
    ['claude-haiku-4-5', 'get_weather'.length + 8],
  ])
    test(`${model}: billed on what the model had written, name and arguments`, async () => {
      const user = marker();
      const messages = [{ role: 'user', content: 'Weather? [[mock:tool_calls=1,cut_after=3]]' }];
      const s = client.chat.completions.stream({ model, messages, tools: TOOLS, user });
      await assert.rejects(s.finalChatCompletion());
      const row = (await ledgerRows([user])).get(user);
      assert.ok(row, 'a ledger row');
      assert.equal(row.usage_exact, false);
      assert.equal(row.error_class, 'upstream_stream_cut');
      assert.equal(Number(row.output_tokens), Math.ceil(bytes / 4), 'output estimated from the partial call');
    });
});

describe('the cascade', () => {
  let cgw, cclient;
  before(async () => {
    const config = mockConfig(mock.url, {
      models: { 'gpt-4o': { provider: 'openai' } },
      routing: {
        default_tier: 'budget',
        tiers: { budget: ['gpt-4o-mini'], mid: ['gpt-4o'], heavy: ['gpt-4o'] },
        cascade: { enabled: true, checks: ['length', 'json', 'uncertain', 'empty'], uncertain_marker: 'UNCERTAIN' },
      },
    });
    delete config.routes.auto; // "auto" goes to the routing policy
    cgw = await startBridle({ config });
    cclient = new OpenAI({ apiKey: cgw.key, baseURL: cgw.baseURL, maxRetries: 0, timeout: 15000 });
  });

  test('an answer of tool calls has no text and is not escalated as empty (plain and streamed)', async () => {
    for (const stream of [false, true]) {
      await mockReset(mock.url);
      const body = { model: 'auto', messages: ask(1), tools: TOOLS };
      const { data, response } = stream
        ? await (async () => {
            const s = cclient.chat.completions.stream(body);
            return { data: await s.finalChatCompletion(), response: null };
          })()
        : await cclient.chat.completions.create(body).withResponse();
      assertCalls(data, ['get_weather'], stream ? 'streamed' : 'plain');
      if (response) {
        assert.equal(response.headers.get('x-bridle-model'), 'gpt-4o-mini');
        assert.doesNotMatch(response.headers.get('x-bridle-route'), /escalated/);
      }
      const stats = await mockStats(mock.url);
      assert.deepEqual(stats.by_model, { 'gpt-4o-mini': 1 }, 'one call, to the cheap model');
    }
    // a text answer that is empty still escalates (the check is on)
    await mockReset(mock.url);
    const { response } = await cclient.chat.completions
      .create({ model: 'auto', messages: [{ role: 'user', content: 'hi [[mock:content=%20]]' }] })
      .withResponse();
    assert.match(response.headers.get('x-bridle-route'), /failed the empty check/);
  });
});

test("bridle's health after every round trip: nothing in flight, the breakers counted only the cut streams, the cache's hits", async () => {
  const h = (await get(`${gw.baseURL}/bridle/health`, gw.auth)).json;
  for (const p of h.providers) assert.equal(p.in_flight, 0, p.name);
  const cut = { 'gpt-4o-mini': 1, 'claude-haiku-4-5': 1 }; // the cut streams above
  for (const t of h.targets) {
    assert.equal(t.breaker.state, 'closed', t.model);
    assert.equal(t.breaker.opens_total, 0, t.model);
    // the window is 10 s: the cut streams may have left it, nothing else may be in it
    assert.ok(t.breaker.window_failures <= (cut[t.model] ?? 0), `${t.model}: tool conversations are no failures`);
  }
  assert.ok(h.cache.hits >= 8, `cache hits ${h.cache.hits}: two per dialect in the cache test`);
});

// Thinking-budget caps reach the providers (issue 5): for `model: "auto"`
// and a task with a cap in routing.thinking_caps, the upstream request
// carries it in the dialect's own form (Anthropic thinking.budget_tokens,
// Gemini generationConfig.thinkingConfig.thinkingBudget, OpenAI
// reasoning_effort), only for models that reason, and never when the client
// set its own reasoning control. The client's own control reaches the
// dialects that take a token budget in the same form, on the same scale
// (low 1024, medium 4096, high 16384; none/minimal: none). Read back from
// what the mock received.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { mockConfig, mockLast, mockStats, post, startBridle, startMock } from './lib/harness.mjs';

let mock;
let gw;

before(async () => {
  mock = await startMock();
  const config = mockConfig(mock.url, {
    models: {
      'claude-opus-4-8': { provider: 'anthropic' },
      'gpt-5.5': { provider: 'openai' },
      'gemini-2.5-pro': { provider: 'gemini' },
      'claude-plain': { provider: 'anthropic', price: 'claude-haiku-4-5', reasoning: false },
      'gemini-plain': { provider: 'gemini', price: 'gemini-2.5-flash', reasoning: false },
    },
    routing: {
      tasks: { complex_reasoning: 'heavy', analysis: 'mid', summarize: 'budget', classify: 'local' },
      tiers: { local: ['gpt-4o-mini'], budget: ['gemini-2.5-flash'], mid: ['gpt-5.5'], heavy: ['claude-opus-4-8'] },
      thinking_caps: { complex_reasoning: 8000, analysis: 2000, summarize: 3000, classify: 5000 },
    },
  });
  delete config.routes.auto;
  gw = await startBridle({ config });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
});

/** Asks through the gateway; returns the reply and the body the mock got. */
async function ask(task, extra = {}, model = 'auto') {
  const r = await post(
    `${gw.baseURL}/chat/completions`,
    { model, messages: [{ role: 'user', content: 'Think about it' }], ...extra },
    { ...gw.auth, 'x-bridle-task': task },
  );
  assert.equal(r.status, 200, r.text);
  const [last] = await mockLast(mock.url, 1);
  return { r, sent: last.body, path: last.path };
}

test('Anthropic: thinking {enabled, budget_tokens} with max_tokens raised past it', async () => {
  for (const stream of [false, true]) {
    const { r, sent, path } = await ask('complex_reasoning', { stream });
    assert.equal(r.headers['x-bridle-model'], 'claude-opus-4-8');
    assert.equal(path, '/v1/messages');
    assert.deepEqual(sent.thinking, { type: 'enabled', budget_tokens: 8000 }, JSON.stringify(sent));
    assert.equal(sent.max_tokens, 4096 + 8000); // the default answer room + the budget
  }
});

test('Anthropic: a max_tokens of the client bounds the budget (clamped under it)', async () => {
  const { sent } = await ask('complex_reasoning', { max_tokens: 3000 });
  assert.deepEqual(sent.thinking, { type: 'enabled', budget_tokens: 2999 });
  assert.equal(sent.max_tokens, 3000);
});

test('OpenAI reasoning model: reasoning_effort from the budget (2000 → low)', async () => {
  const { r, sent } = await ask('analysis');
  assert.equal(r.headers['x-bridle-model'], 'gpt-5.5');
  assert.equal(sent.reasoning_effort, 'low', JSON.stringify(sent));
});

test('Gemini: generationConfig.thinkingConfig.thinkingBudget', async () => {
  const { r, sent, path } = await ask('summarize');
  assert.equal(r.headers['x-bridle-model'], 'gemini-2.5-flash');
  assert.match(path, /gemini-2\.5-flash:generateContent/);
  assert.deepEqual(sent.generationConfig.thinkingConfig, { thinkingBudget: 3000 }, JSON.stringify(sent));
});

test('a model that does not reason gets nothing, even with a cap for the task', async () => {
  const { r, sent } = await ask('classify');
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
  assert.equal(sent.reasoning_effort, undefined, JSON.stringify(sent));
  assert.equal(sent.thinking, undefined);
});

test("the client's own reasoning control wins over the task's cap", async () => {
  let { sent } = await ask('complex_reasoning', { reasoning_effort: 'high' });
  assert.deepEqual(sent.thinking, { type: 'enabled', budget_tokens: 16384 }, JSON.stringify(sent));
  assert.equal(sent.max_tokens, 4096 + 16384); // the client's high, not the cap of 8000
  ({ sent } = await ask('analysis', { reasoning_effort: 'high' }));
  assert.equal(sent.reasoning_effort, 'high', JSON.stringify(sent)); // the client's, once
  ({ sent } = await ask('summarize', { reasoning_effort: 'minimal' }));
  assert.deepEqual(sent.generationConfig?.thinkingConfig, { thinkingBudget: 0 }, JSON.stringify(sent));
});

test('a model named by the client is not planned by the policy: no cap', async () => {
  const { sent } = await ask('complex_reasoning', {}, 'claude-opus-4-8');
  assert.equal(sent.thinking, undefined, JSON.stringify(sent));
});

/** A request to `model` with the client's own control, no task cap. */
const own = (model, extra, stream = false) => ask('none', { stream, ...extra }, model);

test("Anthropic: the client's reasoning_effort becomes thinking.budget_tokens, streamed or not", async () => {
  for (const stream of [false, true])
    for (const [effort, budget] of [['low', 1024], ['medium', 4096], ['high', 16384]]) {
      const { sent, path } = await own('claude-opus-4-8', { reasoning_effort: effort }, stream);
      assert.equal(path, '/v1/messages');
      assert.deepEqual(sent.thinking, { type: 'enabled', budget_tokens: budget }, `${effort}: ${JSON.stringify(sent)}`);
      assert.equal(sent.max_tokens, 4096 + budget);
      assert.equal(sent.reasoning_effort, undefined);
      assert.equal(sent.stream, stream ? true : undefined);
    }
  const { sent } = await own('claude-opus-4-8', { reasoning: { effort: 'medium' } });
  assert.deepEqual(sent.thinking, { type: 'enabled', budget_tokens: 4096 }, JSON.stringify(sent));
});

test("Anthropic: the client's effort within the thinking rules (max_tokens, none, minimal)", async () => {
  let { sent } = await own('claude-opus-4-8', { reasoning_effort: 'high', max_tokens: 3000 });
  assert.deepEqual(sent.thinking, { type: 'enabled', budget_tokens: 2999 }, JSON.stringify(sent));
  assert.equal(sent.max_tokens, 3000);
  ({ sent } = await own('claude-opus-4-8', { reasoning_effort: 'low', max_tokens: 1000 }, true));
  assert.equal(sent.thinking, undefined, JSON.stringify(sent)); // under Anthropic's 1024
  for (const effort of ['none', 'minimal']) {
    ({ sent } = await own('claude-opus-4-8', { reasoning_effort: effort }));
    assert.equal(sent.thinking, undefined, `${effort}: ${JSON.stringify(sent)}`);
    assert.equal(sent.max_tokens, 4096);
  }
});

test("Anthropic: the client's thinking object goes as it came", async () => {
  const thinking = { type: 'enabled', budget_tokens: 2048, display: 'summarized' };
  for (const stream of [false, true]) {
    const { sent } = await own('claude-opus-4-8', { thinking }, stream);
    assert.deepEqual(sent.thinking, thinking, JSON.stringify(sent));
    assert.equal(sent.max_tokens, 4096 + 2048);
  }
});

test("Gemini: the client's reasoning_effort becomes thinkingConfig.thinkingBudget, streamed or not", async () => {
  for (const stream of [false, true])
    for (const [effort, budget] of [['low', 1024], ['medium', 4096], ['high', 16384], ['none', 0]]) {
      const { sent, path } = await own('gemini-2.5-flash', { reasoning_effort: effort }, stream);
      assert.match(path, stream ? /:streamGenerateContent/ : /:generateContent/);
      assert.deepEqual(sent.generationConfig?.thinkingConfig, { thinkingBudget: budget }, `${effort}: ${JSON.stringify(sent)}`);
    }
  let { sent } = await own('gemini-2.5-flash', { reasoning: { effort: 'high' }, max_tokens: 3000 });
  assert.deepEqual(sent.generationConfig.thinkingConfig, { thinkingBudget: 3000 }, JSON.stringify(sent)); // within the cap
  // 2.5 Pro cannot turn thinking off: its smallest budget
  ({ sent } = await own('gemini-2.5-pro', { reasoning_effort: 'none' }));
  assert.deepEqual(sent.generationConfig.thinkingConfig, { thinkingBudget: 128 }, JSON.stringify(sent));
});

test("a model that does not reason gets none of the client's reasoning control", async () => {
  let { sent } = await own('claude-plain', { reasoning_effort: 'high' });
  assert.equal(sent.thinking, undefined, JSON.stringify(sent));
  assert.equal(sent.max_tokens, 4096);
  ({ sent } = await own('claude-plain', { thinking: { type: 'enabled', budget_tokens: 2048 } }, true));
  assert.equal(sent.thinking, undefined, JSON.stringify(sent));
  ({ sent } = await own('gemini-plain', { reasoning_effort: 'high' }, true));
  assert.equal(sent.generationConfig?.thinkingConfig, undefined, JSON.stringify(sent));
});

test("OpenAI-compatible: the client's reasoning control reaches a model it named as sent; a non-reasoning model routing chose gets none (it would refuse the request)", async () => {
  const control = { reasoning_effort: 'high', reasoning: { effort: 'high' } };
  let { r, sent } = await ask('classify', control); // auto → gpt-4o-mini, which does not reason
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
  assert.equal(sent.reasoning_effort, undefined, JSON.stringify(sent));
  assert.equal(sent.reasoning, undefined, JSON.stringify(sent));
  ({ r, sent } = await ask('analysis', control)); // auto → gpt-5.5, which reasons
  assert.equal(r.headers['x-bridle-model'], 'gpt-5.5');
  assert.equal(sent.reasoning_effort, 'high');
  assert.deepEqual(sent.reasoning, { effort: 'high' });
  ({ sent } = await ask('classify', control, 'gpt-4o-mini')); // named by the client: its call
  assert.equal(sent.reasoning_effort, 'high');
});

test('an unknown reasoning effort is a 400 that names the allowed values', async () => {
  const before = (await mockStats(mock.url)).requests;
  for (const [extra, param] of [
    [{ reasoning_effort: 'extreme' }, 'reasoning_effort'],
    [{ reasoning: { effort: 'lots' } }, 'reasoning.effort'],
  ]) {
    for (const model of ['claude-opus-4-8', 'gemini-2.5-flash', 'gpt-5.5']) {
      const r = await post(
        `${gw.baseURL}/chat/completions`,
        { model, messages: [{ role: 'user', content: 'x' }], ...extra },
        gw.auth,
      );
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json.error.type, 'invalid_request_error');
      assert.equal(r.json.error.param, param);
      assert.equal(r.json.error.code, 'invalid_value');
      assert.equal(r.headers['x-should-retry'], 'false');
      assert.match(r.json.error.message, /must be one of none, minimal, low, medium, high, xhigh or max/);
    }
  }
  assert.equal((await mockStats(mock.url)).requests, before); // nothing went upstream
});

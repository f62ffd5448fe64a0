// Thinking-budget caps reach the providers (issue 5): for `model: "auto"`
// and a task with a cap in routing.thinking_caps, the upstream request
// carries it in the dialect's own form (Anthropic thinking.budget_tokens,
// Gemini generationConfig.thinkingConfig.thinkingBudget, OpenAI
// reasoning_effort), only for models that reason, and never when the client
// set its own reasoning control. Read back from what the mock received.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { mockConfig, mockLast, post, startBridle, startMock } from './lib/harness.mjs';

let mock;
let gw;

before(async () => {
  mock = await startMock();
  const config = mockConfig(mock.url, {
    models: {
      'claude-opus-4-8': { provider: 'anthropic' },
      'gpt-5.5': { provider: 'openai' },
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

test("the client's own reasoning control wins: no cap is added", async () => {
  let { sent } = await ask('complex_reasoning', { reasoning_effort: 'high' });
  assert.equal(sent.thinking, undefined, JSON.stringify(sent));
  assert.equal(sent.max_tokens, 4096);
  ({ sent } = await ask('analysis', { reasoning_effort: 'high' }));
  assert.equal(sent.reasoning_effort, 'high', JSON.stringify(sent)); // the client's, once
  ({ sent } = await ask('summarize', { reasoning_effort: 'minimal' }));
  assert.equal(sent.generationConfig?.thinkingConfig, undefined, JSON.stringify(sent));
});

test('a model named by the client is not planned by the policy: no cap', async () => {
  const { sent } = await ask('complex_reasoning', {}, 'claude-opus-4-8');
  assert.equal(sent.thinking, undefined, JSON.stringify(sent));
});

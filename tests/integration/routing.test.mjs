// Routing through the gateway (issue 5, first part): `model: "auto"` and
// `tier:NAME` are planned by the routing policy from the config's
// "routing" section: the task picks the tier, the cheapest healthy model
// that fits answers, output caps are applied, and the headers say why.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';

import { mockConfig, mockFault, mockLast, mockReset, mockStats, post, startBridle, startMock } from './lib/harness.mjs';
import { answerFor, billed, costPusd, expected, formatSavings, formatUsd, upstreamPromptTokens, words } from './lib/mockmath.mjs';

let mock;
let gw;

before(async () => {
  mock = await startMock();
  const config = mockConfig(mock.url, {
    models: {
      'gpt-4o': { provider: 'openai' },
      'claude-sonnet-4-6': { provider: 'anthropic' },
      'claude-opus-4-8': { provider: 'anthropic' },
    },
    routing: {
      default_tier: 'mid',
      tiers: {
        budget: ['claude-haiku-4-5', 'gpt-4o-mini', 'gemini-2.5-flash'],
        mid: ['claude-sonnet-4-6', 'gpt-4o'],
        heavy: ['claude-opus-4-8'],
      },
      output_caps: { classify: 10 },
      cascade: { enabled: true, checks: ['length', 'json', 'uncertain', 'empty'], uncertain_marker: 'UNCERTAIN' },
    },
  });
  delete config.routes.auto; // "auto" goes to the routing policy, not a named route
  gw = await startBridle({ config });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
});

const ask = (model, headers = {}, extra = {}) =>
  post(`${gw.baseURL}/chat/completions`, { model, messages: [{ role: 'user', content: 'Is this spam?' }], ...extra }, { ...gw.auth, ...headers });

test('auto + x-bridle-task: classify → the cheapest budget model, output capped at 10, headers say why', async () => {
  const r = await ask('auto', { 'x-bridle-task': 'classify' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini'); // cheapest of the budget tier
  assert.equal(r.headers['x-bridle-route'], 'task classify -> tier budget: cheapest of 3 that fit');
  const sent = (await mockLast(mock.url, 1))[0].body;
  assert.equal(sent.max_tokens ?? sent.max_completion_tokens, 10, JSON.stringify(sent));
  // 'Is this spam?' is 13 bytes → P = 4; the 8-word answer fits the cap → C = 8.
  // The baseline is the priciest heavy model (no routing.baseline): claude-opus-4-8.
  const u = billed('openai', expected([{ role: 'user', content: 'Is this spam?' }], 'gpt-4o-mini', { cap: 10 }));
  const cost = costPusd('gpt-4o-mini', u);
  assert.equal(r.headers['x-bridle-cost-usd'], formatUsd(cost)); // 0.0000054
  assert.equal(r.headers['x-bridle-savings-usd'], formatSavings(costPusd('claude-opus-4-8', u) - cost)); // 0.000215
});

test('auto + metadata.task: complex_reasoning → a heavy model', async () => {
  const r = await ask('auto', {}, { metadata: { task: 'complex_reasoning' } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'claude-opus-4-8');
  assert.equal(r.headers['x-bridle-route'], 'task complex_reasoning -> tier heavy: cheapest of 1 that fit');
});

test('x-bridle-tier wins; tier:NAME names a tier; an unknown tier is a 400', async () => {
  let r = await ask('auto', { 'x-bridle-tier': 'budget', 'x-bridle-task': 'complex_reasoning' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
  r = await ask('tier:mid');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o'); // cheaper than Sonnet
  r = await ask('tier:gigantic');
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.code, 'invalid_tier');
  assert.equal(r.headers['x-should-retry'], 'false');
});

test('a concrete model is honoured; the default tier applies without a task', async () => {
  let r = await ask('claude-haiku-4-5');
  assert.equal(r.headers['x-bridle-model'], 'claude-haiku-4-5');
  r = await ask('auto');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o'); // default_tier mid, cheapest
});

test('the openai SDK with model "auto" gets a normal answer', async () => {
  const client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0 });
  const c = await client.chat.completions.create({ model: 'auto', messages: [{ role: 'user', content: 'Hi' }] });
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.model, 'gpt-4o'); // default_tier mid, cheapest
  assert.equal(c.choices[0].message.content, answerFor('gpt-4o'));
});

test('cascade: a cheap answer that is cut, UNCERTAIN or not JSON escalates to the next tier; both calls billed', async () => {
  // The mock's answers are plain text, so with JSON asked for every tier's
  // answer fails that check and the cascade climbs to the top tier.
  for (const [directives, extra, check, final] of [
    ['finish=length', {}, 'length', 'gpt-4o'],
    ['content=UNCERTAIN%20maybe%20spam', {}, 'uncertain', 'gpt-4o'],
    ['content=%7Bnot%20json', { response_format: { type: 'json_object' } }, 'json', 'claude-opus-4-8'],
  ]) {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives });
    const r = await ask('auto', { 'x-bridle-task': 'extract' }, extra);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'], final, `${check}: ${r.headers['x-bridle-route']}`);
    assert.equal(r.headers['x-bridle-route'], `task extract -> tier budget: cheapest of 3 that fit; escalated: the cheaper answer failed the ${check} check`);
    const stats = await mockStats(mock.url);
    assert.equal(stats.by_model['gpt-4o-mini'], 1);
    assert.equal(stats.by_model['gpt-4o'], 1);
    assert.equal(stats.by_model['claude-opus-4-8'], final === 'claude-opus-4-8' ? 1 : undefined);
    // Every answer is billed: the cost is the exact sum of each call's cost,
    // from the prompt each model received and the answer it gave (the cheap
    // one from the fault's content=, the others the mock's 8-word default).
    const calls = await mockLast(mock.url, stats.requests);
    assert.deepEqual(calls.map((c) => c.body.model), final === 'gpt-4o' ? ['gpt-4o-mini', 'gpt-4o'] : ['gpt-4o-mini', 'gpt-4o', 'claude-opus-4-8']);
    const content = /content=([^,]*)/.exec(directives)?.[1];
    let total = 0n;
    let finalUsage;
    for (const [i, c] of calls.entries()) {
      const model = c.body.model;
      const C = words(i === 0 && content ? decodeURIComponent(content) : answerFor(model)).length;
      const usage = billed(model.startsWith('claude') ? 'anthropic' : 'openai', { P: upstreamPromptTokens(c.body), C, R: 0, CR: 0, W5: 0, W1: 0 });
      total += costPusd(model, usage);
      finalUsage = usage;
    }
    assert.equal(r.headers['x-bridle-cost-usd'], formatUsd(total), `${check}: both (all) answers billed`);
    // savings: the baseline (claude-opus-4-8) on the final answer's usage, less everything paid
    assert.equal(r.headers['x-bridle-savings-usd'], formatSavings(costPusd('claude-opus-4-8', finalUsage) - total), check);
  }
});

test('cascade, streamed: a cheaper stream is held back; when it fails a check the client gets only the next tier\'s stream', async () => {
  const stream = { stream: true, stream_options: { include_usage: true } };
  for (const [directives, check] of [
    ['finish=length,content=CHEAP%20ANSWER', 'length'],
    ['content=UNCERTAIN%20CHEAP', 'uncertain'],
    ['cut_after=1,content=CHEAP%20ANSWER%20CUT', 'complete'],
  ]) {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives });
    const r = await ask('auto', { 'x-bridle-task': 'extract' }, stream);
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers['content-type'], /text\/event-stream/);
    assert.equal(r.headers['x-bridle-model'], 'gpt-4o', `${check}: ${r.headers['x-bridle-route']}`);
    assert.equal(r.headers['x-bridle-route'], `task extract -> tier budget: cheapest of 3 that fit; escalated: the cheaper answer failed the ${check} check`);
    assert.doesNotMatch(r.text, /CHEAP/, `${check}: nothing of the held answer reaches the client`);
    const events = r.text.split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)));
    assert.ok(events.length > 2);
    assert.ok(events.every((e) => !e.model || e.model.startsWith('gpt-4o') && !e.model.includes('mini')), JSON.stringify(events[0]));
    assert.deepEqual(
      { prompt: events.at(-1).usage?.prompt_tokens, completion: events.at(-1).usage?.completion_tokens },
      { prompt: 4, completion: 8 },
      'the usage chunk is the final model\'s (its 8-word default answer to the 4-token prompt)',
    );
    assert.match(r.text, /data: \[DONE\]\n\n$/);
    const stats = await mockStats(mock.url);
    assert.equal(stats.by_model['gpt-4o-mini'], 1);
    assert.equal(stats.by_model['gpt-4o'], 1);
  }
});

test('cascade, streamed: a good cheaper stream passes and is delivered whole', async () => {
  await mockReset(mock.url);
  const r = await ask('auto', { 'x-bridle-task': 'extract' }, { stream: true, stream_options: { include_usage: true } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
  assert.equal(r.headers['x-bridle-route'], 'task extract -> tier budget: cheapest of 3 that fit');
  const direct = await ask('gpt-4o-mini', {}, { stream: true, stream_options: { include_usage: true } });
  const content = (t) => t.split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)).choices?.[0]?.delta?.content || '').join('');
  assert.equal(content(r.text), content(direct.text), 'the same answer as asking the model directly');
  assert.match(r.text, /data: \[DONE\]\n\n$/);
  assert.equal((await mockStats(mock.url)).by_model['gpt-4o'], undefined);
});

test('cascade: a good cheap answer is not escalated', async () => {
  await mockReset(mock.url);
  const r = await ask('auto', { 'x-bridle-task': 'extract' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
  assert.equal(r.headers['x-bridle-route'], 'task extract -> tier budget: cheapest of 3 that fit');
});

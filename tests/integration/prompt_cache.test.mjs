// Provider prompt caching (issue 14): on Anthropic routes bridle marks the
// long stable prefix with cache_control when the client marked nothing and
// the prefix reaches the model's minimum (claude-haiku-4-5: 2,048 tokens),
// so the second identical prompt reads the cache at 0.1x input instead of
// paying full price. The mock simulates Anthropic's cache (tests/mock/README.md
// "Prompt cache"); the evidence is what the mock received and the cost bridle
// billed (x-bridle-cost-usd), priced from the usage the mock reported.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import { mockConfig, mockLast, post, startBridle, startMock } from './lib/harness.mjs';
import { answerFor, billed, costPusd, formatUsd, upstreamPromptTokens, words } from './lib/mockmath.mjs';

let mock;
let gw; // the default: options.prompt_cache "auto", 5-minute TTL
let hour; // prompt_cache_ttl "1h"
let off; // prompt_cache "off"

before(async () => {
  mock = await startMock();
  gw = await startBridle({ config: mockConfig(mock.url) });
  hour = await startBridle({ config: mockConfig(mock.url, { providers: { anthropic: { options: { prompt_cache_ttl: '1h' } } } }) });
  off = await startBridle({ config: mockConfig(mock.url, { providers: { anthropic: { options: { prompt_cache: 'off' } } } }) });
});

after(async () => {
  for (const g of [gw, hour, off]) await g?.stop();
  await mock?.stop();
});

/** A system prompt of exactly `bytes` bytes (about bytes / 4 tokens), unique per call. */
const systemOf = (bytes) => {
  const tag = randomBytes(4).toString('hex');
  return tag + 'x'.repeat(bytes - tag.length);
};
const ask = (g, system, user = 'Hi') =>
  post(`${g.baseURL}/chat/completions`, { model: 'claude-haiku-4-5', messages: [{ role: 'system', content: system }, { role: 'user', content: user }] }, g.auth);
const marks = (body) => JSON.stringify(body).split('"cache_control"').length - 1;

/** What bridle must bill for the mock's answer to `sent` with these cache counts. */
function expectedCost(sent, { CR = 0, W5 = 0, W1 = 0 } = {}) {
  const P = upstreamPromptTokens(sent);
  const C = words(answerFor('claude-haiku-4-5')).length;
  return costPusd('claude-haiku-4-5', billed('anthropic', { P, C, R: 0, CR, W5, W1 }));
}

test('just under the minimum (2,047 tokens): no cache_control, full price both times', async () => {
  const system = systemOf(2047 * 4);
  for (let i = 0; i < 2; i++) {
    const r = await ask(gw, system);
    assert.equal(r.status, 200, r.text);
    const [sent] = await mockLast(mock.url, 1);
    assert.equal(marks(sent.body), 0, JSON.stringify(sent.body).slice(0, 200));
    assert.equal(r.headers['x-bridle-cost-usd'], formatUsd(expectedCost(sent.body)));
  }
});

test('at the minimum (2,048 tokens): the system prompt is marked; the first call writes the cache, the second reads it', async () => {
  const system = systemOf(2048 * 4);
  const first = await ask(gw, system);
  assert.equal(first.status, 200, first.text);
  const [sent] = await mockLast(mock.url, 1);
  assert.equal(marks(sent.body), 1);
  assert.deepEqual(sent.body.system.at(-1).cache_control, { type: 'ephemeral' });
  assert.equal(sent.body.messages.at(-1).content.at(-1).cache_control, undefined, 'the last message is never marked');
  // first: 2,048 tokens written at 1.25x input
  assert.equal(first.headers['x-bridle-cost-usd'], formatUsd(expectedCost(sent.body, { W5: 2048 })));
  // second: the same prefix read at 0.1x input
  const second = await ask(gw, system, 'Hi again');
  const [sent2] = await mockLast(mock.url, 1);
  assert.equal(second.headers['x-bridle-cost-usd'], formatUsd(expectedCost(sent2.body, { CR: 2048 })));
  const fullPrice = expectedCost(sent2.body);
  assert.ok(expectedCost(sent2.body, { CR: 2048 }) * 3n < fullPrice, 'the cached call costs well under a third of the uncached one');
});

test('prompt_cache_ttl "1h": the mark asks for an hour, written at 2x input', async () => {
  const system = systemOf(3000 * 4);
  const r = await ask(hour, system);
  const [sent] = await mockLast(mock.url, 1);
  assert.deepEqual(sent.body.system.at(-1).cache_control, { type: 'ephemeral', ttl: '1h' });
  assert.equal(r.headers['x-bridle-cost-usd'], formatUsd(expectedCost(sent.body, { W1: 3000 })));
});

test("a client's own breakpoints are left alone; prompt_cache \"off\" marks nothing", async () => {
  const system = systemOf(3000 * 4);
  const body = {
    model: 'claude-haiku-4-5',
    messages: [
      { role: 'system', content: system },
      { role: 'user', content: [{ type: 'text', text: 'Hi', cache_control: { type: 'ephemeral' } }] },
    ],
  };
  const r = await post(`${gw.baseURL}/chat/completions`, body, gw.auth);
  assert.equal(r.status, 200, r.text);
  const [sent] = await mockLast(mock.url, 1);
  assert.equal(marks(sent.body), 1);
  assert.equal(sent.body.system.at(-1).cache_control, undefined);
  assert.deepEqual(sent.body.messages[0].content[0].cache_control, { type: 'ephemeral' });
  await ask(off, system);
  const [sent2] = await mockLast(mock.url, 1);
  assert.equal(marks(sent2.body), 0);
});

test('a conversation: the prefix so far is marked, so the next turn reads the earlier turns from the cache', async () => {
  const system = systemOf(100);
  const doc = 'y'.repeat(2100 * 4); // a pasted document, long on its own
  const turns = [
    { role: 'system', content: system },
    { role: 'user', content: doc },
    { role: 'assistant', content: 'Read it.' },
    { role: 'user', content: 'Summarise it' },
  ];
  const post1 = await post(`${gw.baseURL}/chat/completions`, { model: 'claude-haiku-4-5', messages: turns }, gw.auth);
  assert.equal(post1.status, 200, post1.text);
  const [sent] = await mockLast(mock.url, 1);
  // the document (long on its own) and the conversation before the last message
  assert.equal(marks(sent.body), 2, JSON.stringify(sent.body).slice(0, 300));
  const next = [...turns, { role: 'assistant', content: 'It says y.' }, { role: 'user', content: 'Shorter' }];
  const r2 = await post(`${gw.baseURL}/chat/completions`, { model: 'claude-haiku-4-5', messages: next }, gw.auth);
  assert.equal(r2.status, 200, r2.text);
  const [sent2] = await mockLast(mock.url, 1);
  assert.equal(marks(sent2.body), 2);
  // read: the prefix through the document, which the first request wrote; written: from there to
  // the new mark (the mock reads only at a request's own marks: Anthropic also looks back 20 blocks)
  const readTokens = Math.ceil((system.length + doc.length) / 4);
  const lastMark = Math.ceil((system.length + doc.length + 'Read it.'.length + 'Summarise it'.length + 'It says y.'.length) / 4);
  assert.equal(r2.headers['x-bridle-cost-usd'], formatUsd(expectedCost(sent2.body, { CR: readTokens, W5: lastMark - readTokens })));
});

// README claims about routing that had no end-to-end test (issue 10):
//  - "local-first with cloud fallback when the local host is busy": a local
//    (Ollama) model at its provider's max_concurrency is passed over for the
//    cloud model of the same tier, and is used again once its calls end; the
//    health endpoint's in-flight counts follow.
//  - "a streamed request's cheaper answer is held back until it passes ...
//    `routing.cascade.streams: false` turns that off": with it off, the
//    cheaper tier's stream is relayed as it comes (its first token long
//    before its end) and never escalated, while a non-streamed request still
//    cascades. The same request with the default (streams on) is the
//    contrast: held back, escalated, first token only at the end.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { SLOW, get, mockConfig, mockFault, mockReset, mockStats, post, sleep, startBridle, startMock } from './lib/harness.mjs';

let mock;
before(async () => {
  mock = await startMock();
});
after(async () => {
  await mock?.stop();
});

const chat = (gw, body, headers = {}) => post(`${gw.baseURL}/chat/completions`, body, { ...gw.auth, ...headers }, { timeoutMs: 30000 * SLOW });
const calls = async (model) => (await mockStats(mock.url)).by_model?.[model] ?? 0;

async function providers(gw) {
  const r = await get(`${gw.baseURL}/bridle/health`, gw.auth);
  assert.equal(r.status, 200, r.text);
  return Object.fromEntries(r.json.providers.map((p) => [p.name, p]));
}

async function until(fn, ms, what) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
}

/** A policy config ("auto" → routing, not a route); resilience settings the assertions rely on are explicit. */
function policyConfig(overrides) {
  const cfg = mockConfig(mock.url, { resilience: { retries: false, breaker: true }, ...overrides });
  delete cfg.routes.auto;
  return cfg;
}

describe('local first, cloud when the local host is busy', () => {
  const MAX = 2;
  let gw;
  before(async () => {
    gw = await startBridle({
      config: policyConfig({
        providers: { ollama: { max_concurrency: MAX } },
        routing: {
          default_tier: 'budget',
          tasks: { classify: 'budget' },
          // the local model is listed last: only prefer_local puts it first
          tiers: { budget: ['gpt-4o-mini', 'llama3.2'] },
          prefer_local: true,
        },
      }),
    });
  });
  after(async () => {
    await gw?.stop();
  });

  test(`${MAX} slow local calls in flight → the next auto request goes to the cloud model; after they end, local again; in-flight back to 0`, async () => {
    await mockReset(mock.url);
    const ask = (content) => chat(gw, { model: 'auto', messages: [{ role: 'user', content }] }, { 'x-bridle-task': 'classify' });

    const idle = await ask('idle');
    assert.equal(idle.status, 200, idle.text);
    assert.equal(idle.headers['x-bridle-model'], 'llama3.2', idle.headers['x-bridle-route']);
    assert.equal(idle.headers['x-bridle-provider'], 'ollama');

    const SLOW_MS = 2500 * SLOW;
    const slow = Array.from({ length: MAX }, (_, i) => ask(`slow ${i} [[mock:latency_ms=${SLOW_MS}]]`));
    const busy = await until(async () => {
      const p = await providers(gw);
      return p.ollama.in_flight === MAX ? p : null;
    }, 5000 * SLOW, `${MAX} calls in flight to ollama`);
    assert.equal(busy.ollama.max_concurrency, MAX);
    assert.equal(busy.openai.in_flight, 0);

    const t0 = Date.now();
    const fallback = await ask('while busy');
    assert.ok(Date.now() - t0 < SLOW_MS / 2, 'answered without waiting for the local host');
    assert.equal(fallback.status, 200, fallback.text);
    assert.equal(fallback.headers['x-bridle-model'], 'gpt-4o-mini', fallback.headers['x-bridle-route']);
    assert.equal(fallback.headers['x-bridle-provider'], 'openai');
    assert.equal(fallback.headers['x-bridle-attempts'], '1', 'the busy local host was not tried first');
    assert.equal(await calls('llama3.2'), 1 + MAX, 'no call reached the busy local host');
    assert.equal((await providers(gw)).ollama.in_flight, MAX);

    for (const r of await Promise.all(slow)) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['x-bridle-model'], 'llama3.2');
    }
    const p = await until(async () => {
      const q = await providers(gw);
      return Object.values(q).every((x) => x.in_flight === 0) ? q : null;
    }, 3000 * SLOW, 'every provider back to 0 in flight');
    assert.equal(p.ollama.in_flight, 0);

    const back = await ask('after');
    assert.equal(back.status, 200, back.text);
    assert.equal(back.headers['x-bridle-model'], 'llama3.2', back.headers['x-bridle-route']);
    assert.equal(await calls('llama3.2'), 2 + MAX);
    assert.equal(await calls('gpt-4o-mini'), 1);
  });
  // The provider call of a client that left is cancelled (the mock sees it
  // go) but chat_finish() never takes it off provider_inflight (only the
  // engine's done callback does, and a cancelled call gets none): health
  // shows it in flight for ever, and once max_concurrency calls have leaked
  // the provider is busy for good: "auto" never goes local again and a
  // request naming the model gets 503 provider_busy.
  test(
    'clients that leave while their local calls are slow free the local host: in-flight back to 0, local used again',
    {},
    async () => {
      await mockReset(mock.url);
      const SLOW_MS = 5000 * SLOW;
      const ac = new AbortController();
      const gone = Array.from({ length: MAX }, (_, i) =>
        fetch(`${gw.baseURL}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-bridle-task': 'classify', ...gw.auth },
          body: JSON.stringify({ model: 'auto', stream: i % 2 === 1, messages: [{ role: 'user', content: `leaving ${i} [[mock:latency_ms=${SLOW_MS}]]` }] }),
          signal: ac.signal,
        }).catch((e) => e),
      );
      await until(async () => (await providers(gw)).ollama.in_flight === MAX, 5000 * SLOW, `${MAX} calls in flight to ollama`);
      const t0 = Date.now();
      ac.abort();
      await Promise.all(gone);
      await until(async () => (await providers(gw)).ollama.in_flight === 0, 2000 * SLOW, 'ollama in-flight back to 0 after the clients left');
      assert.ok(Date.now() - t0 < SLOW_MS, 'freed only when the slow calls ended by themselves');
      const r = await chat(gw, { model: 'auto', messages: [{ role: 'user', content: 'after they left' }] }, { 'x-bridle-task': 'classify' });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['x-bridle-model'], 'llama3.2', r.headers['x-bridle-route']);
      const direct = await chat(gw, { model: 'llama3.2', messages: [{ role: 'user', content: 'named' }] });
      assert.equal(direct.status, 200, direct.text);
    },
  );
});

/** POSTs a streamed request and notes when `seen(text)` first holds. → {status, headers, text, firstMs, totalMs} */
async function streamTimed(gw, body, headers, seen) {
  const t0 = Date.now();
  const r = await fetch(`${gw.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...gw.auth, ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30000 * SLOW),
  });
  const dec = new TextDecoder();
  let text = '';
  let firstMs = null;
  for await (const chunk of r.body) {
    text += dec.decode(chunk, { stream: true });
    if (firstMs === null && seen(text)) firstMs = Date.now() - t0;
  }
  return { status: r.status, headers: Object.fromEntries(r.headers), text, firstMs, totalMs: Date.now() - t0 };
}

const contentOf = (text) =>
  text
    .split('\n\n')
    .filter((e) => e.startsWith('data: {'))
    .map((e) => JSON.parse(e.slice(6)).choices?.[0]?.delta?.content || '')
    .join('');

describe('routing.cascade.streams', () => {
  const TRICKLE = 400;
  const WORDS = 5; // "UNCERTAIN cheap answer streams slowly"
  const CHEAP = `content=UNCERTAIN%20cheap%20answer%20streams%20slowly,trickle_ms=${TRICKLE}`;
  const routing = (streams) => ({
    default_tier: 'budget',
    tasks: { extract: 'budget' },
    tiers: { budget: ['gpt-4o-mini'], mid: ['gpt-4o'] },
    cascade: { enabled: true, checks: ['length', 'json', 'uncertain', 'empty'], uncertain_marker: 'UNCERTAIN', ...(streams === undefined ? {} : { streams }) },
  });
  let off;
  let on;
  before(async () => {
    const models = { 'gpt-4o': { provider: 'openai' } };
    off = await startBridle({ config: policyConfig({ models, routing: routing(false) }) });
    on = await startBridle({ config: policyConfig({ models, routing: routing(undefined) }) });
  });
  after(async () => {
    await off?.stop();
    await on?.stop();
  });
  const req = (extra = {}) => ({ model: 'auto', messages: [{ role: 'user', content: 'Extract the fields' }], ...extra });
  const STREAM = { stream: true, stream_options: { include_usage: true } };
  const hasContent = (t) => contentOf(t.slice(0, t.lastIndexOf('\n\n') + 2)).length > 0;

  test('streams: false → the cheaper stream is relayed as it comes, not held, not escalated', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: CHEAP });
    const r = await streamTimed(off, req(STREAM), { 'x-bridle-task': 'extract' }, hasContent);
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers['content-type'], /text\/event-stream/);
    assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini', r.headers['x-bridle-route']);
    assert.doesNotMatch(r.headers['x-bridle-route'] || '', /escalat/);
    assert.equal(contentOf(r.text), 'UNCERTAIN cheap answer streams slowly', 'the cheap answer, as it was');
    assert.match(r.text, /data: \[DONE\]\n\n$/);
    // relayed as it came: the first words arrive while the mock is still
    // trickling the rest (WORDS pieces TRICKLE ms apart, then the close)
    assert.ok(r.firstMs !== null && r.totalMs - r.firstMs >= (WORDS - 2) * TRICKLE,
      `first content at ${r.firstMs} ms, stream ended at ${r.totalMs} ms: held back, not relayed`);
    assert.equal(await calls('gpt-4o-mini'), 1);
    assert.equal(await calls('gpt-4o'), 0, 'a stream is never escalated with streams: false');
  });

  test('streams: false → a non-streamed request still cascades', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: CHEAP });
    const r = await chat(off, req(), { 'x-bridle-task': 'extract' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'], 'gpt-4o', r.headers['x-bridle-route']);
    assert.match(r.headers['x-bridle-route'], /escalated.*uncertain/);
    assert.doesNotMatch(r.json.choices[0].message.content, /UNCERTAIN/);
    assert.equal(await calls('gpt-4o-mini'), 1);
    assert.equal(await calls('gpt-4o'), 1);
  });

  test('contrast, streams on (the default): the same stream is held back, escalated, the first token comes at the end', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: CHEAP });
    const r = await streamTimed(on, req(STREAM), { 'x-bridle-task': 'extract' }, hasContent);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'], 'gpt-4o', r.headers['x-bridle-route']);
    assert.match(r.headers['x-bridle-route'], /escalated.*uncertain/);
    assert.doesNotMatch(r.text, /UNCERTAIN/);
    assert.ok(r.firstMs >= (WORDS - 1) * TRICKLE, `first content at ${r.firstMs} ms: not held back`);
    assert.equal(await calls('gpt-4o'), 1);
  });
});

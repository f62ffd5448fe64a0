// The response cache (issue 14, router/cache.h): a deterministic request
// (temperature 0, n 1) whose answer the gateway already has is answered from
// memory: the same body, or the stream it adds up to, with x-bridle-cache:
// hit, cost 0 and no upstream call. The evidence is bridle's own: its
// headers, /v1/bridle/health's cache counters and the ledger; the mock's
// counters only confirm that no call went out.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';

import { get, mockConfig, mockFault, mockStats, newKey, post, runCliOk, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { billed, costPusd, expected, formatUsd } from './lib/mockmath.mjs';
import { startPostgres } from './lib/pg.mjs';

let mock;
let pg;
let gw; // cache on, ledger on, key scope
let team; // scope "team"
let short; // ttl 1 s, per-task and per-route TTLs
let small; // 1 MB of memory
let off; // the default: no cache
let shared1; // two gateways sharing the PostgreSQL level (cache.shared)
let shared2;
let away; // cache.shared with the database unreachable
const mate = newKey(); // a second key of gw's and team's team "test"
const stranger = newKey(); // a key of another team

before(async () => {
  mock = await startMock();
  pg = await startPostgres();
  const keys = [
    { id: 'mate', sha256: mate.sha256, team: 'test' },
    { id: 'stranger', sha256: stranger.sha256, team: 'other' },
  ];
  const cache = { enabled: true, ttl_s: 3600, deterministic_models: ['llama3.2'] };
  gw = await startBridle({
    config: mockConfig(mock.url, {
      cache,
      keys,
      database: { url: pg.url, spool_dir: path.join(tmpDir('bridle-cache-'), 'spool'), flush_interval_ms: 50 },
    }),
  });
  team = await startBridle({ config: mockConfig(mock.url, { cache: { ...cache, scope: 'team' }, keys }) });
  short = await startBridle({
    config: mockConfig(mock.url, { cache: { enabled: true, ttl_s: 2, tasks: { chat: 0, faq: 3600 }, routes: { auto: 0 } } }),
  });
  small = await startBridle({ config: mockConfig(mock.url, { cache: { enabled: true, max_mb: 1 } }) });
  off = await startBridle({ config: mockConfig(mock.url) });
  const sharedConfig = (url) =>
    mockConfig(mock.url, {
      cache: { enabled: true, shared: true, shared_timeout_ms: 2000 },
      database: { url, spool_dir: path.join(tmpDir('bridle-cache-shared-'), 'spool'), flush_interval_ms: 50 },
    });
  shared1 = await startBridle({ config: sharedConfig(pg.url) });
  shared2 = await startBridle({ config: sharedConfig(pg.url) });
  away = await startBridle({ config: sharedConfig('postgresql://127.0.0.1:1/none?connect_timeout=1') });
});

after(async () => {
  for (const g of [gw, team, short, small, off, shared1, shared2, away]) await g?.stop();
  await mock?.stop();
  await pg?.stop?.();
});

const calls = async () => (await mockStats(mock.url)).by_path?.['/v1/chat/completions'] ?? 0;
const allCalls = async () => (await mockStats(mock.url)).requests;
const unique = (what) => `${what} ${randomBytes(4).toString('hex')}`;
const body = (text, extra = {}) => ({ model: 'gpt-4o-mini', temperature: 0, messages: [{ role: 'user', content: text }], ...extra });
const ask = (g, b, headers = {}) => post(`${g.baseURL}/chat/completions`, b, { ...g.auth, ...headers });
async function health(g) {
  const r = await get(`${g.baseURL}/bridle/health`, g.auth);
  assert.equal(r.status, 200, r.text);
  return r.json;
}
async function ledgerRows(user, n) {
  let rows = [];
  for (let i = 0; i < 100 && rows.length < n; i++) {
    await sleep(50);
    rows = (
      await pg.query(
        pg.url,
        `SELECT cost_pusd::text AS cost, baseline_cost_pusd::text AS baseline, cache_hit, attempts, status, streamed,
                input_tokens, output_tokens, route_reason
           FROM usage_events WHERE end_user = $1 ORDER BY ts`,
        [user],
      )
    ).rows;
  }
  return rows;
}

test('a repeat is a hit: the same bytes, cost 0, no upstream call; the ledger records both, the hit at no cost', async () => {
  const user = unique('u');
  const b = body('What is the capital of France?', { user });
  const c0 = await calls();
  const h0 = (await health(gw)).cache;
  const first = await ask(gw, b);
  const second = await ask(gw, b);
  assert.equal(first.status, 200, first.text);
  assert.equal(second.status, 200, second.text);
  assert.equal((await calls()) - c0, 1, 'one upstream call for two requests');
  assert.equal(first.headers['x-bridle-cache'], 'miss');
  assert.equal(second.headers['x-bridle-cache'], 'hit');
  assert.equal(second.text, first.text, 'replayed byte for byte');
  const u = billed('openai', expected(b.messages, 'gpt-4o-mini'));
  const cost = costPusd('gpt-4o-mini', u);
  assert.equal(first.headers['x-bridle-cost-usd'], formatUsd(cost));
  assert.equal(second.headers['x-bridle-cost-usd'], '0.0');
  assert.equal(second.headers['x-bridle-attempts'], '0');
  assert.equal(second.headers['x-bridle-model'], 'gpt-4o-mini');
  assert.notEqual(second.headers['x-request-id'], first.headers['x-request-id']);
  const h1 = (await health(gw)).cache;
  assert.equal(h1.hits - h0.hits, 1);
  assert.equal(h1.misses - h0.misses, 1);
  assert.equal(h1.stores - h0.stores, 1);
  assert.ok(h1.bytes > h0.bytes);
  const rows = await ledgerRows(user, 2);
  assert.equal(rows.length, 2, JSON.stringify(rows));
  const tokens = { input_tokens: String(u.input_uncached), output_tokens: String(u.output) };
  assert.deepEqual(rows[0], { cost: String(cost), baseline: String(cost), cache_hit: false, attempts: 1, status: 200, streamed: false, ...tokens, route_reason: 'the model requested' });
  // the hit: cost 0, the answer's tokens, and what it saved (the served model's price of them)
  assert.deepEqual(rows[1], { cost: '0', baseline: String(cost), cache_hit: true, attempts: 0, status: 200, streamed: false, ...tokens, route_reason: 'response cache hit: no upstream call' });
});

test('bridle cost summary splits savings: by caching (the hits) and by routing (the rest), to the pico-dollar', async () => {
  const user = unique('split');
  const b = body('How much did the cache save?', { user });
  for (let i = 0; i < 3; i++) assert.equal((await ask(gw, b)).status, 200);
  assert.equal((await ledgerRows(user, 3)).length, 3);
  const from = new Date(Date.now() - 3600e3).toISOString();
  const to = new Date(Date.now() + 60e3).toISOString();
  const want = (
    await pg.query(
      pg.url,
      `SELECT coalesce(sum(baseline_cost_pusd) FILTER (WHERE cache_hit), 0)::text AS caching,
              (sum(baseline_cost_pusd - cost_pusd) - coalesce(sum(baseline_cost_pusd) FILTER (WHERE cache_hit), 0))::text AS routing,
              count(*) FILTER (WHERE cache_hit)::int AS hits
         FROM usage_events WHERE ts >= $1 AND ts < $2`,
      [from, to],
    )
  ).rows[0];
  assert.ok(want.hits >= 2 && BigInt(want.caching) > 0n, JSON.stringify(want));
  const { stdout } = await runCliOk(['cost', 'summary', '--json', '--database-url', pg.url, '--from', from, '--to', to]);
  const j = JSON.parse(stdout);
  assert.equal(String(j.cache_savings_pusd), want.caching);
  assert.equal(String(j.routing_savings_pusd), want.routing);
  assert.equal(BigInt(j.cache_savings_pusd) + BigInt(j.routing_savings_pusd), BigInt(j.savings_pusd));
});

test('a streamed request replays a plain answer as a stream the openai SDK reads, usage chunk included', async () => {
  const b = body(unique('Stream me a cached answer'));
  const plain = await ask(gw, b);
  assert.equal(plain.headers['x-bridle-cache'], 'miss');
  const c0 = await calls();
  const client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0 });
  const { data: stream, response } = await client.chat.completions
    .create({ ...b, stream: true, stream_options: { include_usage: true } })
    .withResponse();
  assert.equal(response.headers.get('x-bridle-cache'), 'hit');
  assert.equal(response.headers.get('content-type'), 'text/event-stream');
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    for (const ch of chunk.choices) {
      text += ch.delta?.content ?? '';
      finish = ch.finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal((await calls()) - c0, 0);
  assert.equal(text, plain.json.choices[0].message.content);
  assert.equal(finish, 'stop');
  assert.deepEqual(usage, plain.json.usage);
});

test('a plain request replays a streamed answer as the chat.completion it adds up to', async () => {
  for (const model of ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
    const b = body(unique('Stream first'), { model });
    const client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0 });
    const streamed = await client.chat.completions.stream({ ...b, stream: true });
    const whole = await streamed.finalChatCompletion();
    const a0 = await allCalls();
    const r = await ask(gw, b);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-cache'], 'hit', model);
    assert.equal((await allCalls()) - a0, 0, model);
    assert.equal(r.json.object, 'chat.completion');
    assert.equal(r.json.model, model);
    assert.equal(r.json.choices[0].message.role, 'assistant');
    assert.equal(r.json.choices[0].message.content, whole.choices[0].message.content, model);
    assert.equal(r.json.choices[0].finish_reason, 'stop');
    const e = expected(b.messages, model);
    assert.equal(r.json.usage.prompt_tokens, e.P, model);
    assert.equal(r.json.usage.completion_tokens, e.C, model);
  }
});

test('every parameter that can change the answer changes the key; the form of the request does not', async () => {
  const text = unique('Key sensitivity');
  const base = body(text);
  assert.equal((await ask(gw, base)).headers['x-bridle-cache'], 'miss');
  const misses = {
    'another message': body(`${text}!`),
    'a system prompt': { ...base, messages: [{ role: 'system', content: 'Be brief' }, ...base.messages] },
    'another model': { ...base, model: 'claude-haiku-4-5' },
    tools: { ...base, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }] },
    tool_choice: { ...base, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }], tool_choice: 'none' },
    response_format: { ...base, response_format: { type: 'json_object' } },
    top_p: { ...base, top_p: 0.5 },
    seed: { ...base, seed: 7 },
    stop: { ...base, stop: ['x'] },
    presence_penalty: { ...base, presence_penalty: 0.5 },
    frequency_penalty: { ...base, frequency_penalty: 0.5 },
    max_tokens: { ...base, max_tokens: 50 },
    max_completion_tokens: { ...base, max_completion_tokens: 60 },
  };
  for (const [what, b] of Object.entries(misses)) {
    const r = await ask(gw, b);
    assert.equal(r.status, 200, `${what}: ${r.text}`);
    assert.equal(r.headers['x-bridle-cache'], 'miss', what);
  }
  const hits = {
    'streamed (replayed as a stream)': { ...base, stream: true },
    'another user': { ...base, user: 'someone' },
    metadata: { ...base, metadata: { note: 'x' } },
    'key order': { messages: base.messages, temperature: 0, model: 'gpt-4o-mini' },
  };
  const c0 = await calls();
  for (const [what, b] of Object.entries(hits)) {
    const r = await ask(gw, b);
    assert.equal(r.status, 200, `${what}: ${r.text}`);
    assert.equal(r.headers['x-bridle-cache'], 'hit', what);
  }
  const spaced = `{ "model" : "gpt-4o-mini" ,\n "temperature" : 0 , "messages" : ${JSON.stringify(base.messages, null, 2)} }`;
  const r = await post(`${gw.baseURL}/chat/completions`, spaced, { ...gw.auth, 'content-type': 'application/json' });
  assert.equal(r.headers['x-bridle-cache'], 'hit', 'whitespace');
  assert.equal((await calls()) - c0, 0);
});

test('keys are isolated; with scope "team" the keys of a team share, other teams do not', async () => {
  const b = body(unique('Isolation'));
  const mateAuth = { authorization: `Bearer ${mate.key}` };
  const strangerAuth = { authorization: `Bearer ${stranger.key}` };
  assert.equal((await ask(gw, b)).headers['x-bridle-cache'], 'miss');
  assert.equal((await ask(gw, b, mateAuth)).headers['x-bridle-cache'], 'miss', 'scope key: another key of the same team');
  assert.equal((await ask(gw, b)).headers['x-bridle-cache'], 'hit');
  assert.equal((await ask(gw, b, mateAuth)).headers['x-bridle-cache'], 'hit');
  assert.equal((await ask(team, b)).headers['x-bridle-cache'], 'miss');
  assert.equal((await ask(team, b, mateAuth)).headers['x-bridle-cache'], 'hit', 'scope team: a team mate reads it');
  assert.equal((await ask(team, b, strangerAuth)).headers['x-bridle-cache'], 'miss', 'another team does not');
});

test('what is cached: temperature 0, a deterministic model without temperature, or x-bridle-cache: on; n 1 only', async () => {
  const cases = [
    ['temperature 0.7', { temperature: 0.7 }, {}, undefined],
    ['no temperature', { temperature: undefined }, {}, undefined],
    ['n 2', { n: 2 }, {}, undefined],
    ['x-bridle-cache: off', {}, { 'x-bridle-cache': 'off' }, undefined],
    ['x-bridle-cache: on with temperature 0.7', { temperature: 0.7 }, { 'x-bridle-cache': 'on' }, 'hit'],
    ['llama3.2 without temperature (deterministic_models)', { model: 'llama3.2', temperature: undefined }, {}, 'hit'],
  ];
  for (const [what, extra, headers, second] of cases) {
    const b = body(unique(what), extra);
    const a0 = await allCalls();
    const r1 = await ask(gw, b, headers);
    const r2 = await ask(gw, b, headers);
    assert.equal(r1.status, 200, `${what}: ${r1.text}`);
    assert.equal(r2.headers['x-bridle-cache'], second, what);
    const upstream = (await allCalls()) - a0;
    assert.equal(upstream, second ? 1 : 2, `${what}: upstream calls`);
  }
  const bad = await ask(gw, body('x'), { 'x-bridle-cache': 'maybe' });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.code, 'invalid_cache_header');
  assert.match(bad.json.error.message, /"on".*"off"/);
});

test('Cache-Control: no-store skips the cache; no-cache skips the lookup and stores the fresh answer', async () => {
  const b = body(unique('Cache-Control'));
  const a0 = await allCalls();
  const ns = await ask(gw, b, { 'cache-control': 'no-store' });
  assert.equal(ns.headers['x-bridle-cache'], undefined);
  assert.equal((await ask(gw, b)).headers['x-bridle-cache'], 'miss', 'no-store stored nothing');
  const nc = await ask(gw, b, { 'cache-control': 'max-age=0, No-Cache' });
  assert.equal(nc.headers['x-bridle-cache'], 'miss', 'no-cache: looked past the entry');
  assert.equal((await ask(gw, b)).headers['x-bridle-cache'], 'hit');
  assert.equal((await allCalls()) - a0, 3);
});

test('errors, cut streams and answers the cascade set aside are never cached', async () => {
  // an upstream error: the next identical request calls again
  const e = body(unique('error'));
  await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=400' });
  assert.equal((await ask(gw, e)).status, 400);
  const e2 = await ask(gw, e);
  assert.equal(e2.status, 200);
  assert.equal(e2.headers['x-bridle-cache'], 'miss');
  // a stream cut upstream
  const s = body(unique('cut'), { stream: true });
  await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'cut_after=2' });
  const cut = await ask(gw, s);
  assert.match(cut.text, /"error"/);
  const s2 = await ask(gw, s);
  assert.equal(s2.headers['x-bridle-cache'], 'miss', 'the cut stream was not stored');
  assert.doesNotMatch(s2.text, /"error"/);
  assert.equal((await ask(gw, s)).headers['x-bridle-cache'], 'hit', 'the whole one was');
});

test('the cascade: the answer kept is cached, never the cheaper one it set aside', async () => {
  const m = await startMock();
  const config = mockConfig(m.url, {
    models: { 'gpt-4o': { provider: 'openai' }, 'claude-opus-4-8': { provider: 'anthropic' } },
    routing: {
      default_tier: 'budget',
      tiers: { budget: ['gpt-4o-mini'], mid: ['gpt-4o'], heavy: ['claude-opus-4-8'] },
      cascade: { enabled: true, checks: ['uncertain'], uncertain_marker: 'UNCERTAIN' },
    },
    cache: { enabled: true },
  });
  delete config.routes.auto;
  const g = await startBridle({ config });
  try {
    await mockFault(m.url, { model: 'gpt-4o-mini', count: 1, directives: 'content=UNCERTAIN%20maybe' });
    const b = { model: 'auto', temperature: 0, messages: [{ role: 'user', content: 'Is this spam?' }] };
    const r1 = await post(`${g.baseURL}/chat/completions`, b, g.auth);
    assert.equal(r1.headers['x-bridle-model'], 'gpt-4o', r1.headers['x-bridle-route']);
    const r2 = await post(`${g.baseURL}/chat/completions`, b, g.auth);
    assert.equal(r2.headers['x-bridle-cache'], 'hit');
    assert.equal(r2.headers['x-bridle-model'], 'gpt-4o');
    assert.equal(r2.text, r1.text);
    assert.doesNotMatch(r2.text, /UNCERTAIN/);
    assert.equal((await mockStats(m.url)).requests, 2);
  } finally {
    await g.stop();
    await m.stop();
  }
});

test('TTL: an answer expires after ttl_s; per-task and per-route TTLs, 0 meaning never cached', async () => {
  const b = body(unique('ttl'));
  assert.equal((await ask(short, b)).headers['x-bridle-cache'], 'miss');
  assert.equal((await ask(short, b)).headers['x-bridle-cache'], 'hit');
  await sleep(2100);
  assert.equal((await ask(short, b)).headers['x-bridle-cache'], 'miss', 'expired after 2 s');
  assert.equal((await health(short)).cache.expired, 1);
  // cache.tasks.chat = 0: never; cache.tasks.faq = 3600 wins over the 2 s default
  const t = body(unique('task'));
  await ask(short, t, { 'x-bridle-task': 'chat' });
  assert.equal((await ask(short, t, { 'x-bridle-task': 'chat' })).headers['x-bridle-cache'], undefined);
  await ask(short, t, { 'x-bridle-task': 'faq' });
  await sleep(2100);
  assert.equal((await ask(short, t, { 'x-bridle-task': 'faq' })).headers['x-bridle-cache'], 'hit');
  // cache.routes.auto = 0
  const r = body(unique('route'), { model: 'auto' });
  await ask(short, r);
  assert.equal((await ask(short, r)).headers['x-bridle-cache'], undefined);
});

test('memory: the cache stays within max_mb, evicting the least recently used', async () => {
  const cap = (await health(small)).cache.max_bytes;
  assert.equal(cap, 1 << 20);
  // answers of about 50 KB: 40 of them are twice the cap
  const big = (i) => body(`big ${i} ${randomBytes(4).toString('hex')} [[mock:repeat=1000]]`);
  const bodies = Array.from({ length: 40 }, (_, i) => big(i));
  for (const b of bodies) {
    const r = await ask(small, b);
    assert.equal(r.status, 200);
    assert.ok(r.text.length > 40000 && r.text.length < 60000, `${r.text.length} bytes`);
    assert.equal(r.headers['x-bridle-cache'], 'miss');
    const h = (await health(small)).cache;
    assert.ok(h.bytes <= cap, `${h.bytes} > ${cap}`);
  }
  const h = (await health(small)).cache;
  assert.ok(h.evictions >= 15 && h.bytes > cap * 0.9, JSON.stringify(h));
  assert.equal(h.entries, 40 - h.evictions);
  assert.equal((await ask(small, bodies[0])).headers['x-bridle-cache'], 'miss', 'the oldest went first');
  assert.equal((await ask(small, bodies[39])).headers['x-bridle-cache'], 'hit', 'the newest stayed');
});

test('the cache is off by default: no header, no counters, every request goes upstream', async () => {
  const b = body(unique('off'));
  const a0 = await allCalls();
  const r1 = await ask(off, b);
  const r2 = await ask(off, b);
  assert.equal(r1.headers['x-bridle-cache'], undefined);
  assert.equal(r2.headers['x-bridle-cache'], undefined);
  assert.equal((await allCalls()) - a0, 2);
  assert.equal((await health(off)).cache, undefined);
});

test('cache.shared: two gateways share answers through PostgreSQL; the second keeps a copy in memory', async () => {
  const b = body(unique('Shared level'));
  // the same key on both: the same client key id and team ("test"), different secrets
  const a0 = await allCalls();
  const h1 = (await health(shared2)).cache.shared;
  const first = await ask(shared1, b);
  assert.equal(first.headers['x-bridle-cache'], 'miss');
  // the write to PostgreSQL is not awaited by the first answer: wait until the row is there
  let rows = [];
  for (let i = 0; i < 100 && !rows.length; i++) {
    rows = (await pg.query(pg.url, "SELECT expires_at > now() + interval '50 minutes' AS fresh FROM bridle_response_cache WHERE body = $1", [first.text])).rows;
    if (!rows.length) await sleep(20);
  }
  assert.equal(rows.length, 1, 'shared1 stored its answer in PostgreSQL');
  assert.ok(rows[0].fresh, 'with the configured TTL (1 h)');
  // shared2 has never seen the request: its first answer comes from PostgreSQL, as a stream
  const second = await ask(shared2, { ...b, stream: true });
  assert.equal(second.headers['x-bridle-cache'], 'hit');
  assert.equal(second.headers['x-bridle-cost-usd'], '0.0');
  assert.equal(second.headers['x-bridle-model'], 'gpt-4o-mini');
  assert.match(second.text, /data: \[DONE\]/);
  const h2 = (await health(shared2)).cache.shared;
  assert.equal(h2.hits - h1.hits, 1, JSON.stringify(h2));
  assert.equal(h2.lookups - h1.lookups, 1);
  // now in shared2's memory: no lookup in PostgreSQL, the same bytes as shared1's answer
  const third = await ask(shared2, b);
  assert.equal(third.headers['x-bridle-cache'], 'hit');
  assert.equal(third.text, first.text);
  assert.equal((await health(shared2)).cache.shared.lookups, h2.lookups);
  assert.equal((await allCalls()) - a0, 1, 'one upstream call for three requests on two gateways');
});

test('cache.shared with the database away: lookups are misses at once, requests are served, memory still hits', async () => {
  const b = body(unique('away'));
  const r1 = await ask(away, b);
  assert.equal(r1.status, 200, r1.text);
  assert.equal(r1.headers['x-bridle-cache'], 'miss');
  const r2 = await ask(away, b);
  assert.equal(r2.headers['x-bridle-cache'], 'hit');
  const h = (await health(away)).cache.shared;
  assert.equal(h.hits, 0);
  assert.ok(h.lookups >= 1 && h.misses >= 1, JSON.stringify(h));
});

test('cache.shared_logged: the shared table is made LOGGED at connection; UNLOGGED is the default', async () => {
  const persistence = async () =>
    (await pg.query(pg.url, "SELECT relpersistence FROM pg_class WHERE relname = 'bridle_response_cache'")).rows[0]?.relpersistence;
  const until = async (want) => {
    for (let i = 0; i < 100 && (await persistence()) !== want; i++) await sleep(50);
    return persistence();
  };
  assert.equal(await persistence(), 'u', 'migration 0010 creates it UNLOGGED');
  const start = (logged) =>
    startBridle({
      config: mockConfig(mock.url, {
        cache: { enabled: true, shared: true, shared_logged: logged },
        database: { url: pg.url, spool_dir: path.join(tmpDir('bridle-cache-logged-'), 'spool') },
      }),
    });
  const logged = await start(true);
  try {
    assert.equal(await until('p'), 'p');
    const b = body(unique('logged'));
    assert.equal((await ask(logged, b)).headers['x-bridle-cache'], 'miss');
    assert.equal((await ask(logged, b)).headers['x-bridle-cache'], 'hit');
  } finally {
    await logged.stop();
  }
  const unlogged = await start(false);
  try {
    assert.equal(await until('u'), 'u');
  } finally {
    await unlogged.stop();
  }
});

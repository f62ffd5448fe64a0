// POST /v1/embeddings (issue 15) through the official openai SDK and raw
// HTTP, against embedding models of each dialect on the mock (OpenAI
// /v1/embeddings, Gemini embedContent/batchEmbedContents, Ollama /api/embed),
// with the ledger in a real PostgreSQL. The mock's vectors are deterministic
// (tests/mock/README.md, "Embeddings"): the test computes them itself, so it
// checks every component bridle hands back, in float and in base64, and that
// the three dialects give the same vector for the same text. Each answer is
// checked against bridle's own state: its headers, its ledger row (tokens,
// cost to the pico-dollar, status, route, key, team), /metrics.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import fs from 'node:fs';
import path from 'node:path';
import { ROOT, SLOW, get, mockConfig, mockFault, mockLast, mockReset, mockStats, post, runCli, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster, waitUntil } from './lib/ledgerlib.mjs';

const RUN = randomBytes(4).toString('hex');
let seq = 0;
const marker = () => `emb-${RUN}-${++seq}`;

// ---------------------------------------------------------------------------
// the mock's vectors (tests/mock/embeddings.c), computed here

const MASK = (1n << 64n) - 1n;
function fnv1a(bytes) {
  let h = 14695981039346656037n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 1099511628211n) & MASK;
  return h;
}
function splitmix64(st) {
  st.x = (st.x + 0x9e3779b97f4a7c15n) & MASK;
  let z = st.x;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK;
  return z ^ (z >> 31n);
}
/** The unit vector the mock answers for `text` (float32 values). */
function mockVector(text, dims = 1536) {
  const st = { x: fnv1a(Buffer.from(text, 'utf8')) };
  const c = [];
  let norm = 0;
  for (let j = 0; j < dims; j++) {
    const v = Number(splitmix64(st) >> 11n) * 2 ** -53 * 2 - 1;
    c.push(v);
    norm += v * v;
  }
  norm = Math.sqrt(norm);
  return c.map((v) => Math.fround(v / norm));
}
/** The mock's token count for a text: ceil(bytes / 4), at least 1. */
const tokensOf = (text) => Math.max(1, Math.ceil(Buffer.byteLength(text) / 4));
/** base64 of float32 little-endian → numbers. */
const fromBase64 = (s) => {
  const b = Buffer.from(s, 'base64');
  return Array.from(new Float32Array(b.buffer, b.byteOffset, b.length / 4));
};
const f32 = (xs) => xs.map((x) => Math.fround(x));

// Prices in µ$ per million tokens: cost in pico-dollars = tokens × price.
const PRICE = { 'text-embedding-3-small': 20000n, 'gemini-embedding-001': 150000n, 'nomic-embed-text': 0n, 'my-embed': 50000n };
const MODELS = [
  ['text-embedding-3-small', 'openai'],
  ['gemini-embedding-001', 'gemini'],
  ['nomic-embed-text', 'ollama'],
];

let mock, db, gw, client;

const config = (extra = {}) =>
  mockConfig(mock.url, {
    models: {
      'text-embedding-3-small': { provider: 'openai' },
      'gemini-embedding-001': { provider: 'gemini' },
      'nomic-embed-text': { provider: 'ollama' },
      // outside the price table: the kind and an input price are enough
      'my-embed': { provider: 'openai', kind: 'embedding', upstream_model: 'vendor-embed-v2', prices: { input: 0.05 } },
    },
    routes: {
      'embed-any': { candidates: ['text-embedding-3-small', 'gemini-embedding-001', 'nomic-embed-text'] },
    },
    database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 50 },
    ...extra,
  });

before(async () => {
  mock = await startMock();
  db = await startCluster();
  gw = await startBridle({ config: config() });
  client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0, timeout: 10000 });
});

after(async () => {
  await gw?.stop();
  await db?.destroy();
  await mock?.stop();
});

const rowsOf = async (user, n = 1) => {
  let rows;
  await waitUntil(async () => {
    rows = (await db.query('SELECT * FROM usage_events WHERE end_user = $1 ORDER BY ts', [user])).rows;
    return rows.length >= n;
  }, 10000 * SLOW, `${n} ledger row(s) of ${user}`);
  return rows;
};
const rowOf = async (user) => (await rowsOf(user))[0];

/** The ledger row says what the answer said: tokens, exact cost, who. */
function checkRow(row, { model, provider, tokens, status = 200, exact = true, requested = model }) {
  assert.equal(row.status, status);
  assert.equal(row.requested_model, requested);
  assert.equal(row.model, model);
  assert.equal(row.provider, provider);
  assert.equal(BigInt(row.input_tokens), BigInt(tokens));
  assert.equal(BigInt(row.output_tokens), 0n);
  assert.equal(BigInt(row.cost_pusd), BigInt(tokens) * PRICE[model], `${model}: ${tokens} tokens`);
  assert.equal(row.usage_exact, exact);
  assert.equal(row.streamed, false);
  assert.equal(row.key_id, 'test');
  assert.equal(row.team, 'test');
}

// ---------------------------------------------------------------------------

describe('the openai SDK', () => {
  test('one input, SDK default (base64 on the wire, decoded by the SDK): the exact vector', async () => {
    for (const [model, provider] of MODELS) {
      const user = marker();
      const text = `The quick brown fox ${user}`;
      const r = await client.embeddings.create({ model, input: text, user });
      assert.equal(r.object, 'list');
      assert.equal(r.data.length, 1);
      assert.equal(r.data[0].object, 'embedding');
      assert.equal(r.data[0].index, 0);
      assert.deepEqual(r.data[0].embedding, mockVector(text), model);
      assert.equal(r.usage.prompt_tokens, tokensOf(text));
      assert.equal(r.usage.total_tokens, tokensOf(text));
      const last = (await mockLast(mock.url))[0];
      if (provider === 'openai') assert.equal(last.body.encoding_format, 'base64');
      checkRow(await rowOf(user), { model, provider, tokens: tokensOf(text) });
    }
  });

  test('several inputs with encoding_format float and dimensions: each vector in order', async () => {
    for (const [model, provider] of MODELS) {
      const user = marker();
      const input = [`alpha ${user}`, `a longer second input for ${user}`, 'γ — not ASCII ✓'];
      const r = await client.embeddings.create({ model, input, dimensions: 64, encoding_format: 'float', user });
      assert.equal(r.data.length, 3);
      r.data.forEach((d, i) => {
        assert.equal(d.index, i);
        assert.equal(d.embedding.length, 64);
        assert.deepEqual(f32(d.embedding), mockVector(input[i], 64), `${model} input ${i}`);
      });
      const tokens = input.reduce((a, t) => a + tokensOf(t), 0);
      assert.equal(r.usage.prompt_tokens, tokens);
      checkRow(await rowOf(user), { model, provider, tokens });
      // what bridle sent, in the provider's own dialect
      const last = (await mockLast(mock.url))[0];
      if (provider === 'openai') {
        assert.equal(last.path, '/v1/embeddings');
        assert.deepEqual(last.body.input, input);
        assert.equal(last.body.dimensions, 64);
      } else if (provider === 'gemini') {
        assert.equal(last.path, '/v1beta/models/gemini-embedding-001:batchEmbedContents');
        assert.equal(last.headers['x-goog-api-key'], 'mock-gemini');
        assert.deepEqual(
          last.body.requests.map((q) => [q.model, q.content.parts[0].text, q.outputDimensionality]),
          input.map((t) => ['models/gemini-embedding-001', t, 64]),
        );
      } else {
        assert.equal(last.path, '/api/embed');
        assert.deepEqual(last.body, { model: 'nomic-embed-text', input, dimensions: 64 });
      }
    }
  });

  test('encoding_format base64 asked by the client: base64 of the same float32 values', async () => {
    for (const [model] of MODELS) {
      const text = `base64 please ${marker()}`;
      const r = await client.embeddings.create({ model, input: [text, 'x'], encoding_format: 'base64', dimensions: 16 });
      assert.equal(typeof r.data[0].embedding, 'string', model);
      assert.deepEqual(fromBase64(r.data[0].embedding), mockVector(text, 16), model);
      assert.deepEqual(fromBase64(r.data[1].embedding), mockVector('x', 16), model);
    }
  });

  test('2,048 inputs, the most one request takes, in each dialect', async () => {
    for (const [model, provider] of MODELS) {
      const user = marker();
      const input = Array.from({ length: 2048 }, (_, i) => `item ${i} of ${user}`);
      const r = await client.embeddings.create({ model, input, dimensions: 8, user });
      assert.equal(r.data.length, 2048, model);
      assert.deepEqual(r.data.map((d) => d.index), input.map((_, i) => i));
      for (const i of [0, 1, 1000, 2047]) assert.deepEqual(r.data[i].embedding, mockVector(input[i], 8), `${model} #${i}`);
      const tokens = input.reduce((a, t) => a + tokensOf(t), 0);
      assert.equal(r.usage.prompt_tokens, tokens);
      checkRow(await rowOf(user), { model, provider, tokens });
    }
  });

  test('the same text gives the same vector whichever dialect answers', async () => {
    const text = `one text ${marker()}`;
    const got = [];
    for (const [model] of MODELS) got.push((await client.embeddings.create({ model, input: text, dimensions: 32 })).data[0].embedding);
    assert.deepEqual(got[1], got[0]);
    assert.deepEqual(got[2], got[0]);
  });

  test('token ids go to an OpenAI-compatible model as they came', async () => {
    const user = marker();
    const r = await client.embeddings.create({ model: 'text-embedding-3-small', input: [[1, 2, 3], [40, 50]], dimensions: 8, user });
    assert.equal(r.data.length, 2);
    assert.equal(r.usage.prompt_tokens, 5); // the mock counts token ids
    assert.deepEqual((await mockLast(mock.url))[0].body.input, [[1, 2, 3], [40, 50]]);
    checkRow(await rowOf(user), { model: 'text-embedding-3-small', provider: 'openai', tokens: 5 });
  });

  test('a model outside the price table: its upstream name, its own input price', async () => {
    const user = marker();
    const text = `priced by the config ${user}`;
    const r = await client.embeddings.create({ model: 'my-embed', input: text, user });
    assert.deepEqual(r.data[0].embedding, mockVector(text));
    assert.equal((await mockLast(mock.url))[0].body.model, 'vendor-embed-v2');
    const row = await rowOf(user);
    assert.equal(row.model, 'my-embed');
    assert.equal(BigInt(row.cost_pusd), BigInt(tokensOf(text)) * PRICE['my-embed']);
  });
});

describe('raw HTTP: headers, estimates, errors', () => {
  const emb = (body, headers = {}) => post(`${gw.baseURL}/embeddings`, body, { ...gw.auth, ...headers });

  test('the cost and attempt headers say what the ledger row says', async () => {
    const user = marker();
    const text = `headers ${user} and some more words to count`;
    const r = await emb({ model: 'gemini-embedding-001', input: text, user, dimensions: 4 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-provider'], 'gemini');
    assert.equal(r.headers['x-bridle-model'], 'gemini-embedding-001');
    assert.equal(r.headers['x-bridle-attempts'], '1');
    assert.equal(r.headers['x-bridle-usage'], undefined);
    const row = await rowOf(user);
    const pusd = BigInt(tokensOf(text)) * PRICE['gemini-embedding-001'];
    assert.equal(BigInt(Math.round(Number(r.headers['x-bridle-cost-usd']) * 1e12)), pusd);
    assert.equal(BigInt(row.cost_pusd), pusd);
    assert.equal(r.json.model, 'gemini-embedding-001');
  });

  test('a provider that reports no usage: billed on an estimate, marked as one', async () => {
    for (const [model, provider] of MODELS) {
      const user = marker();
      const text = `no usage here [[mock:no_usage=1]] ${user}`;
      const r = await emb({ model, input: [text, 'abcdefghi'], user, dimensions: 4 });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['x-bridle-usage'], 'estimated', model);
      const est = tokensOf(text) + 3; // bridle's estimate: ceil(bytes / 4) per input
      assert.equal(r.json.usage.prompt_tokens, est, model);
      assert.deepEqual(f32(r.json.data[1].embedding), mockVector('abcdefghi', 4), model);
      checkRow(await rowOf(user), { model, provider, tokens: est, exact: false });
    }
  });

  test('a chat model named for embeddings, and an embedding model named for chat: 400 naming model', async () => {
    const user = marker();
    const a = await emb({ model: 'gpt-4o-mini', input: 'x', user });
    assert.equal(a.status, 400, a.text);
    assert.equal(a.json.error.param, 'model');
    assert.equal(a.json.error.type, 'invalid_request_error');
    assert.match(a.json.error.message, /chat model, not an embedding model.*POST \/v1\/chat\/completions/);
    const b = await post(`${gw.baseURL}/chat/completions`, { model: 'nomic-embed-text', messages: [{ role: 'user', content: 'hi' }] }, gw.auth);
    assert.equal(b.status, 400, b.text);
    assert.equal(b.json.error.param, 'model');
    assert.match(b.json.error.message, /embedding model: send it to POST \/v1\/embeddings/);
    const c = await emb({ model: 'auto', input: 'x' }); // a route of chat models here
    assert.equal(c.status, 400);
    assert.match(c.json.error.message, /The route 'auto' lists chat models, not embedding models/);
    const t = await emb({ model: 'tier:budget', input: 'x' });
    assert.equal(t.status, 400);
    assert.equal(t.json.error.param, 'model');
    assert.match(t.json.error.message, /routes chat requests only/);
    const e = await post(`${gw.baseURL}/chat/completions`, { model: 'embed-any', messages: [{ role: 'user', content: 'hi' }] }, gw.auth);
    assert.equal(e.status, 400);
    assert.match(e.json.error.message, /The route 'embed-any' lists embedding models/);
    const d = await emb({ model: 'no-such-embedder', input: 'x' });
    assert.equal(d.status, 404);
    assert.equal(d.json.error.code, 'model_not_found');
    // refused before any upstream call, and recorded as such
    const row = await rowOf(user);
    assert.equal(row.status, 400);
    assert.equal(BigInt(row.cost_pusd), 0n);
    assert.equal(row.attempts, 0);
  });

  test('bridle route says what the gateway does with a chat request for an embedding model', async () => {
    const req = path.join(tmpDir('bridle-route-'), 'req.json');
    fs.writeFileSync(req, JSON.stringify({ model: 'text-embedding-3-small', messages: [{ role: 'user', content: 'hi' }] }));
    // make run's config (bridle route needs a routing policy): it serves text-embedding-3-small
    const r = await runCli(['route', '--config', path.join(ROOT, 'config', 'bridle.json'), '--request', req]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /text-embedding-3-small is an embedding model: .*400.*POST \/v1\/embeddings/);
  });

  test('bad bodies: 400 with the field and how to fix it', async () => {
    const cases = [
      [{ model: 'text-embedding-3-small' }, 'input', /"input" is missing/],
      [{ model: 'text-embedding-3-small', input: '' }, 'input', /empty string/],
      [{ model: 'text-embedding-3-small', input: [] }, 'input', /empty list/],
      [{ model: 'text-embedding-3-small', input: ['a', ''] }, 'input[1]', /empty string/],
      [{ model: 'text-embedding-3-small', input: ['a', 3] }, 'input[1]', /must be a string like the first input/],
      [{ model: 'text-embedding-3-small', input: [[1, 2], [-1]] }, 'input[1]', /token ids/],
      [{ model: 'text-embedding-3-small', input: [[]] }, 'input[0]', /empty list of token ids/],
      [{ model: 'text-embedding-3-small', input: { text: 'x' } }, 'input', /must be a string, a list of strings/],
      [{ model: 'text-embedding-3-small', input: Array(2049).fill('a') }, 'input', /at most 2048/],
      [{ model: 'text-embedding-3-small', input: 'x', encoding_format: 'int8' }, 'encoding_format', /"float" or "base64"/],
      [{ model: 'text-embedding-3-small', input: 'x', dimensions: 0 }, 'dimensions', /integer from 1/],
      [{ model: 'text-embedding-3-small', input: 'x', dimensions: 1.5 }, 'dimensions', /integer from 1/],
      [{ input: 'x' }, 'model', /embedding model/],
      [{ model: 'text-embedding-3-small', input: 'x', user: 5 }, 'user', /must be a string/],
      [{ model: 'text-embedding-3-small', input: 'x', stream: true }, 'stream', /never streamed/],
      [{ model: 'nomic-embed-text', input: [[1, 2]] }, 'input', /text only/],
      [{ model: 'gemini-embedding-001', input: [1, 2] }, 'input', /text only/],
    ];
    for (const [body, param, re] of cases) {
      const r = await emb(body);
      assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 80)}: ${r.text}`);
      assert.equal(r.json.error.type, 'invalid_request_error');
      assert.equal(r.json.error.param, param, JSON.stringify(body).slice(0, 80));
      assert.match(r.json.error.message, re);
    }
    const dup = await post(`${gw.baseURL}/embeddings`, '{"model":"text-embedding-3-small","input":"a","input":"b"}', { ...gw.auth, 'content-type': 'application/json' });
    assert.equal(dup.status, 400);
    assert.equal(dup.json.error.code, 'duplicate_key');
    const g = await get(`${gw.baseURL}/embeddings`, gw.auth);
    assert.equal(g.status, 405);
  });

  test('the SDK surfaces a 400 as OpenAI.BadRequestError', async () => {
    await assert.rejects(client.embeddings.create({ model: 'gpt-4o-mini', input: 'x' }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
      assert.equal(e.param, 'model');
      return true;
    });
  });

  test('a provider error comes back in OpenAI shape with its status, and is recorded', async () => {
    await mockReset(mock.url);
    const user = marker();
    await mockFault(mock.url, { model: 'nomic-embed-text', count: 1, directives: 'status=400' });
    const r = await emb({ model: 'nomic-embed-text', input: 'x', user });
    assert.equal(r.status, 400, r.text);
    assert.ok(r.json.error.message.includes('nomic-embed-text'), r.text);
    const row = await rowOf(user);
    assert.equal(row.status, 400);
    assert.equal(row.attempts, 1);
    assert.equal(BigInt(row.cost_pusd), 0n);
  });

  test('a 503 is retried on the same model; a malformed answer is a 502 after its retry', async () => {
    await mockReset(mock.url);
    const user = marker();
    await mockFault(mock.url, { model: 'text-embedding-3-small', count: 1, directives: 'status=503' });
    const r = await emb({ model: 'text-embedding-3-small', input: `retry ${user}`, user });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '2');
    assert.equal((await rowOf(user)).attempts, 2);
    const bad = await emb({ model: 'gemini-embedding-001', input: 'x [[mock:malformed=1]]' });
    assert.equal(bad.status, 502, bad.text);
    assert.equal(bad.json.error.code, 'upstream_malformed_response');
  });

  test('a route of embedding models fails over across dialects', async () => {
    await mockReset(mock.url);
    const user = marker();
    const text = `fail over ${user}`;
    await mockFault(mock.url, { model: 'text-embedding-3-small', count: 5, directives: 'status=500' });
    const r = await emb({ model: 'embed-any', input: text, user, dimensions: 8 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'], 'gemini-embedding-001');
    assert.deepEqual(f32(r.json.data[0].embedding), mockVector(text, 8));
    const row = await rowOf(user);
    checkRow(row, { model: 'gemini-embedding-001', provider: 'gemini', tokens: tokensOf(text), requested: 'embed-any' });
    assert.match(row.route_reason, /route embed-any, candidate 2/);
    await mockReset(mock.url);
  });

  test('an Idempotency-Key replays the stored answer without a second call', async () => {
    const user = marker();
    const body = { model: 'gemini-embedding-001', input: [`once ${user}`], dimensions: 4, user };
    const headers = { 'Idempotency-Key': `idem-${user}` };
    const before = (await mockStats(mock.url)).by_model['gemini-embedding-001'] ?? 0;
    const a = await emb(body, headers);
    assert.equal(a.status, 200, a.text);
    const b = await emb(body, headers);
    assert.equal(b.status, 200, b.text);
    assert.equal(b.headers['idempotent-replayed'], 'true');
    assert.equal(b.text, a.text);
    assert.equal((await mockStats(mock.url)).by_model['gemini-embedding-001'] - before, 1);
    const rows = await rowsOf(user, 2);
    assert.equal(BigInt(rows[1].cost_pusd), 0n);
  });

  test('/metrics counts embeddings apart from chat, with input tokens only', async () => {
    const text = `metered ${marker()}`;
    const r = await emb({ model: 'nomic-embed-text', input: text });
    assert.equal(r.status, 200);
    const m = (await get(`${gw.url}/metrics`)).text;
    const labels = 'gen_ai_operation_name="embeddings",gen_ai_provider_name="ollama",gen_ai_request_model="nomic-embed-text",gen_ai_response_model="nomic-embed-text"';
    const count = m.match(new RegExp(`^gen_ai_client_token_usage_count\\{${labels},gen_ai_token_type="input"\\} (\\d+)`, 'm'));
    assert.ok(count && Number(count[1]) >= 1, m.split('\n').filter((l) => l.includes('embeddings')).join('\n'));
    assert.ok(!m.includes(`${labels},gen_ai_token_type="output"`), 'no output tokens for embeddings');
    assert.match(m, new RegExp(`^bridle_requests_total\\{${labels},http_response_status_code="200"\\} \\d+`, 'm'));
  });
});

describe('the response cache and coalescing', () => {
  let g;
  before(async () => {
    g = await startBridle({ config: config({ cache: { enabled: true }, resilience: { coalesce: true } }) });
  });
  after(async () => g?.stop());

  test('the same embeddings request again is answered from the cache at no cost', async () => {
    const user = marker();
    const body = { model: 'text-embedding-3-small', input: [`cached ${user}`, 'twice'], dimensions: 8, user };
    const a = await post(`${g.baseURL}/embeddings`, body, g.auth);
    assert.equal(a.status, 200, a.text);
    assert.equal(a.headers['x-bridle-cache'], 'miss');
    const b = await post(`${g.baseURL}/embeddings`, body, g.auth);
    assert.equal(b.status, 200, b.text);
    assert.equal(b.headers['x-bridle-cache'], 'hit');
    assert.equal(b.headers['x-bridle-attempts'], '0');
    assert.deepEqual(b.json, a.json);
    const rows = await rowsOf(user, 2);
    assert.equal(BigInt(rows[0].cost_pusd), BigInt(rows[0].input_tokens) * PRICE['text-embedding-3-small']);
    assert.equal(rows[1].cache_hit, true);
    assert.equal(BigInt(rows[1].cost_pusd), 0n);
    assert.equal(BigInt(rows[1].baseline_cost_pusd), BigInt(rows[0].cost_pusd));
    // a different input is a different entry
    const c = await post(`${g.baseURL}/embeddings`, { ...body, dimensions: 4 }, g.auth);
    assert.equal(c.headers['x-bridle-cache'], 'miss');
    assert.equal(c.json.data[0].embedding.length, 4);
  });

  test('identical requests in flight together share one upstream call', async () => {
    const user = marker();
    const body = { model: 'nomic-embed-text', input: `together ${user} [[mock:latency_ms=300]]`, dimensions: 4, user };
    const before = (await mockStats(mock.url)).by_model['nomic-embed-text'] ?? 0;
    const rs = await Promise.all([1, 2, 3].map(() => post(`${g.baseURL}/embeddings`, body, g.auth)));
    assert.ok(rs.every((r) => r.status === 200), rs.map((r) => r.text).join('\n'));
    assert.equal((await mockStats(mock.url)).by_model['nomic-embed-text'] - before, 1);
    assert.equal(rs.filter((r) => r.headers['x-bridle-coalesced'] === 'true').length, 2);
    for (const r of rs) assert.deepEqual(r.json, rs[0].json);
    const rows = await rowsOf(user, 3);
    assert.equal(rows.filter((r) => r.cache_hit).length, 2); // the copies: no upstream call
  });
});

describe('budgets', () => {
  let g;
  before(async () => {
    // a team of its own (the gateway's total budget would count the other
    // gateways' spend on this database): $0.000002 a day, 2,000,000
    // pico-dollars, 100 tokens of text-embedding-3-small
    const team = `emb-budget-${RUN}`;
    g = await startBridle({ team, config: config({ teams: { [team]: { budget_daily_usd: 0.000002 } } }) });
  });
  after(async () => g?.stop());

  test('the reservation is the body as input tokens at the input price; the settlement is the actual', async () => {
    const user = marker();
    const small = { model: 'text-embedding-3-small', input: 'tiny', user }; // ~75 bytes: 1.5 M reserved
    const a = await post(`${g.baseURL}/embeddings`, small, g.auth);
    assert.equal(a.status, 200, a.text);
    const big = await post(`${g.baseURL}/embeddings`, { ...small, input: 'x'.repeat(200) }, g.auth);
    assert.equal(big.status, 429, big.text); // ~275 bytes: 5.5 M does not fit
    assert.equal(big.json.error.type, 'budget_exceeded');
    const free = await post(`${g.baseURL}/embeddings`, { ...small, model: 'nomic-embed-text', input: 'x'.repeat(200) }, g.auth);
    assert.equal(free.status, 200, free.text); // a free (local) model always fits
    const rows = await rowsOf(user, 3);
    assert.deepEqual(rows.map((r) => r.status), [200, 429, 200]);
    assert.equal(BigInt(rows[0].cost_pusd), 20000n); // settled at its 1 token, not the reservation
    assert.equal(rows[1].attempts, 0);
  });
});

// The request core (router/run.c) with the shipped resilience defaults: the
// defects issue 10 found, each asserted on bridle's own state (its health
// endpoint, its headers, its ledger rows), not only on the mock's counters.
//   a. provider call slots come back when clients hang up mid-call
//   b. a 429 with a short Retry-After ends in a retry, not in circuit_open;
//      a longer pause is reported as a rate limit
//   c. an answer without a usage block is billed on an estimate, and says so
//   f. coalesced copies carry the provider, model and cost headers
import assert from 'node:assert/strict';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { SLOW, get, mockConfig, mockFault, mockReset, mockStats, post, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster, waitUntil } from './lib/ledgerlib.mjs';

const RUN = randomBytes(4).toString('hex');
let seq = 0;
const marker = () => `core-${RUN}-${++seq}`;

let mock, db, gw;

before(async () => {
  mock = await startMock();
  db = await startCluster();
  gw = await startBridle({
    config: mockConfig(mock.url, {
      resilience: { retries: null, breaker: null, coalesce: true }, // the shipped defaults
      providers: { ollama: { max_concurrency: 4 } },
      database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 50 },
    }),
  });
});

after(async () => {
  await gw?.stop();
  await db?.destroy();
  await mock?.stop();
});

/** Starts a gateway with the shipped resilience defaults (the harness base
 * turns retries and breakers off: null deletes its keys). */
async function defaultsGateway(extra = {}) {
  return startBridle({
    config: mockConfig(mock.url, {
      resilience: { retries: null, breaker: null, ...extra.resilience },
      providers: { ollama: { max_concurrency: 4 } },
      database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 50 },
      ...extra.config,
    }),
  });
}

const health = async (g) => (await get(`${g.baseURL}/bridle/health`, g.auth)).json;
const inflight = async (g, provider) => (await health(g)).providers.find((p) => p.name === provider).in_flight;
const rowOf = async (user) => {
  let row;
  await waitUntil(async () => {
    row = (await db.query('SELECT * FROM usage_events WHERE end_user = $1', [user])).rows[0];
    return !!row;
  }, 10000 * SLOW, `the ledger row of ${user}`);
  return row;
};
const rowsOf = async (user, n) => {
  let rows;
  await waitUntil(async () => {
    rows = (await db.query('SELECT * FROM usage_events WHERE end_user = $1 ORDER BY ts', [user])).rows;
    return rows.length >= n;
  }, 10000 * SLOW, `${n} ledger rows of ${user}`);
  return rows;
};

/** Sends a request and hangs up after `ms`. */
function hangUp(g, body, ms) {
  return new Promise((resolve) => {
    const data = JSON.stringify(body);
    const req = http.request(`${g.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { ...g.auth, 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
    });
    req.on('error', () => resolve());
    req.on('response', (res) => res.resume());
    req.end(data);
    setTimeout(() => {
      req.destroy();
      resolve();
    }, ms);
  });
}

const usd = (h) => BigInt(Math.round(Number(h) * 1e12)); // header dollars → pico-dollars

describe('a. call slots come back when clients hang up', () => {
  let g;
  before(async () => {
    g = await defaultsGateway();
  });
  after(async () => g?.stop());

  test('20 clients hang up during a slow call: health shows no call in flight', async () => {
    await mockReset(mock.url);
    const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'slow [[mock:latency_ms=3000]]' }] };
    await Promise.all(Array.from({ length: 20 }, () => hangUp(g, body, 300 * SLOW)));
    await waitUntil(async () => (await inflight(g, 'openai')) === 0, 2000 * SLOW, 'openai in_flight back to 0');
    assert.equal(await inflight(g, 'openai'), 0);
  });

  test('a local model with max_concurrency 4 still answers after 8 hang-ups', async () => {
    const slow = { model: 'llama3.2', messages: [{ role: 'user', content: 'slow [[mock:latency_ms=3000]]' }] };
    for (let i = 0; i < 2; i++) await Promise.all(Array.from({ length: 4 }, () => hangUp(g, slow, 300 * SLOW)));
    await waitUntil(async () => (await inflight(g, 'ollama')) === 0, 2000 * SLOW, 'ollama in_flight back to 0');
    const r = await post(`${g.baseURL}/chat/completions`, { model: 'llama3.2', messages: [{ role: 'user', content: 'hi' }] }, g.auth);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'], 'llama3.2');
  });

  test('a client that leaves is recorded once as 499, with the attempt it cost', async () => {
    const user = marker();
    await hangUp(g, { model: 'gpt-4o-mini', user, messages: [{ role: 'user', content: 'bye [[mock:latency_ms=2000]]' }] }, 300 * SLOW);
    const row = await rowOf(user);
    assert.equal(row.status, 499);
    assert.equal(row.error_class, 'client_closed');
    assert.equal(row.attempts, 1);
  });
});

describe('b. a 429 with Retry-After', () => {
  let g;
  before(async () => {
    g = await defaultsGateway({ resilience: { max_wait_ms: 1500 } });
  });
  after(async () => g?.stop());

  test('Retry-After: 1, five times: each request is retried after the pause and answered', async () => {
    for (let i = 0; i < 5; i++) {
      await mockReset(mock.url);
      await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=429,retry_after=1' });
      const t0 = Date.now();
      const r = await post(`${g.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `try ${i}` }] }, g.auth);
      assert.equal(r.status, 200, `try ${i}: ${r.status} ${r.text}`);
      assert.equal(r.headers['x-bridle-attempts'], '2', `try ${i}`);
      assert.ok(Date.now() - t0 >= 950, `try ${i}: answered after ${Date.now() - t0} ms, before the pause ended`);
      assert.equal((await mockStats(mock.url)).by_model['gpt-4o-mini'], 2);
    }
    const t = (await health(g)).targets.find((x) => x.model === 'gpt-4o-mini');
    assert.equal(t.breaker.state, 'closed', 'a 429 never trips the breaker');
  });

  test('a request that arrives during the pause waits it out too (the pause is for everyone)', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=429,retry_after=1' });
    const first = post(`${g.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'first' }] }, g.auth);
    await sleep(300);
    const second = await post(`${g.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'second' }] }, g.auth);
    assert.equal(second.status, 200, second.text);
    assert.equal(second.headers['x-bridle-attempts'], '1', 'no call during the pause');
    assert.equal((await first).status, 200);
    assert.equal((await mockStats(mock.url)).by_model['gpt-4o-mini'], 3);
  });

  test('a pause longer than resilience.max_wait_ms: a rate-limit error, not circuit_open', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=429,retry_after=3' });
    const first = await post(`${g.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'first' }] }, g.auth);
    assert.equal(first.status, 429, first.text);
    assert.equal(first.headers['x-should-retry'], 'true');
    const r = await post(`${g.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'during' }] }, g.auth);
    assert.equal(r.status, 429, r.text);
    assert.equal(r.json.error.code, 'rate_limited');
    assert.equal(r.json.error.type, 'rate_limit_error');
    assert.match(r.json.error.message, /rate-limiting/);
    assert.doesNotMatch(r.json.error.message, /circuit/);
    assert.equal(r.headers['x-should-retry'], 'true');
    assert.ok(Number(r.headers['retry-after']) >= 1 && Number(r.headers['retry-after']) <= 3, r.headers['retry-after']);
    assert.equal(r.headers['x-bridle-attempts'], '0');
    assert.equal((await mockStats(mock.url)).by_model['gpt-4o-mini'], 1, 'nobody called the paused target');
    await sleep(3100);
  });
});

describe('c. an answer without usage', () => {
  test('is billed on an estimate, marked in the header and in the ledger', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'no_usage=1' });
    const user = marker();
    const prompt = 'Count these words, please: one two three four five six.';
    const r = await post(`${gw.baseURL}/chat/completions`, { model: 'gpt-4o-mini', user, messages: [{ role: 'user', content: prompt }] }, gw.auth);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.usage, undefined, 'the provider sent no usage');
    assert.equal(r.headers['x-bridle-usage'], 'estimated');
    const answer = r.json.choices[0].message.content;
    const input = BigInt(Math.ceil(prompt.length / 4));
    const output = BigInt(Math.ceil(answer.length / 4));
    const cost = input * 150000n + output * 600000n; // gpt-4o-mini: $0.15 / $0.60 per Mtok
    assert.equal(usd(r.headers['x-bridle-cost-usd']), cost);
    const row = await rowOf(user);
    assert.equal(row.usage_exact, false);
    assert.equal(BigInt(row.input_tokens), input);
    assert.equal(BigInt(row.output_tokens), output);
    assert.equal(BigInt(row.cost_pusd), cost);
  });

  test('an answer with usage says nothing of estimates', async () => {
    const r = await post(`${gw.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }, gw.auth);
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-bridle-usage'], undefined);
  });
});

describe('f. coalesced copies', () => {
  test('carry provider, model and a cost of 0; the ledger has one billed row and free copies with the same tokens', async () => {
    await mockReset(mock.url);
    const user = marker();
    const body = { model: 'gpt-4o-mini', temperature: 0, user, messages: [{ role: 'user', content: 'same [[mock:latency_ms=300]]' }] };
    const rs = await Promise.all(Array.from({ length: 5 }, () => post(`${gw.baseURL}/chat/completions`, body, gw.auth)));
    assert.equal((await mockStats(mock.url)).by_model['gpt-4o-mini'], 1);
    const copies = rs.filter((r) => r.headers['x-bridle-coalesced'] === 'true');
    const [leader] = rs.filter((r) => r.headers['x-bridle-coalesced'] !== 'true');
    assert.equal(copies.length, 4);
    const leaderCost = usd(leader.headers['x-bridle-cost-usd']);
    assert.ok(leaderCost > 0n);
    for (const c of copies) {
      assert.equal(c.status, 200);
      assert.equal(c.headers['x-bridle-provider'], 'openai');
      assert.equal(c.headers['x-bridle-model'], 'gpt-4o-mini');
      assert.equal(usd(c.headers['x-bridle-cost-usd']), 0n);
      const round6 = ((leaderCost + 500000n) / 1000000n) * 1000000n; // the header has 6 decimals
      assert.equal(usd(c.headers['x-bridle-savings-usd']), round6, 'a copy saves what the call cost');
      assert.equal(c.headers['x-bridle-attempts'], '0');
    }
    const rows = await rowsOf(user, 5);
    const billed = rows.filter((x) => !x.cache_hit);
    const free = rows.filter((x) => x.cache_hit);
    assert.equal(billed.length, 1);
    assert.equal(BigInt(billed[0].cost_pusd), leaderCost);
    assert.equal(free.length, 4);
    for (const x of free) {
      assert.equal(BigInt(x.cost_pusd), 0n);
      assert.equal(x.model, 'gpt-4o-mini');
      assert.equal(x.output_tokens, billed[0].output_tokens);
      assert.equal(x.input_tokens, billed[0].input_tokens);
      assert.equal(BigInt(x.baseline_cost_pusd), BigInt(billed[0].baseline_cost_pusd));
    }
  });
});

describe('a spent quota on one candidate', () => {
  test('fails over to the next candidate of the route (waiting would not help; another may have credit)', async () => {
    await mockReset(mock.url);
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: 'status=429,code=insufficient_quota' });
    const r = await post(`${gw.baseURL}/chat/completions`, { model: 'auto', messages: [{ role: 'user', content: 'hi' }] }, gw.auth);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'], 'claude-haiku-4-5');
    assert.equal(r.headers['x-bridle-attempts'], '2');
    const s = await mockStats(mock.url);
    assert.equal(s.by_model['gpt-4o-mini'], 1);
    assert.equal(s.by_model['claude-haiku-4-5'], 1);
  });
});

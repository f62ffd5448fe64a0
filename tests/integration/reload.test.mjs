// SIGHUP reloads the config file without dropping a request (issue 15,
// "Operations"; router_reload in router/router.h, docs/design.md "Config
// reload"): new requests get the new config, requests in flight finish
// under the one they started with, a bad file is refused whole, and a
// setting that needs a restart is logged and kept.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { SLOW, get, mockConfig, mockFault, mockReset, post, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster, waitUntil } from './lib/ledgerlib.mjs';

let mock, db;
before(async () => {
  mock = await startMock();
  db = await startCluster();
});
after(async () => {
  await db?.destroy();
});

const chat = (gw, model, content, headers = {}) =>
  post(`${gw.baseURL}/chat/completions`, { model, messages: [{ role: 'user', content }] }, { ...gw.auth, ...headers }, { timeoutMs: 20000 * SLOW });

/** A chat request on a connection of its own (the kernel picks a worker per connection). */
function chatNewConn(gw, model, content) {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify({ model, messages: [{ role: 'user', content }] }));
    const req = http.request(
      { host: '127.0.0.1', port: gw.port, method: 'POST', path: '/v1/chat/completions', agent: false, headers: { ...gw.auth, 'content-type': 'application/json', 'content-length': data.length } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** Writes cfg over the gateway's file, sends SIGHUP, waits for the reload's log line (or `until`). */
async function reload(gw, cfg, until = /config reloaded from /) {
  if (cfg) writeFileSync(gw.configPath, JSON.stringify(cfg, null, 2));
  const re = new RegExp(until.source, 'g');
  const seen = (gw.proc.stderr.match(re) || []).length;
  gw.proc.child.kill('SIGHUP');
  await gw.proc.waitFor((p) => (p.stderr.match(re) || []).length > seen, 5000 * SLOW, `${until} after SIGHUP`);
}

async function rowsPerRequest(ids) {
  const { rows } = await db.query(
    'SELECT left(event_id, 24) AS id, count(*)::int AS n, max(cost_pusd)::text AS cost FROM usage_events WHERE left(event_id, 24) = ANY($1) GROUP BY 1',
    [ids.map((id) => id.slice(4))],
  );
  return new Map(rows.map((r) => [`req_${r.id}`, r]));
}

async function allRows(ids) {
  const { value } = await waitUntil(
    async () => {
      const m = await rowsPerRequest(ids);
      return m.size === ids.length ? m : null;
    },
    10000 * SLOW,
    `a ledger row for each of ${ids.length} requests`,
    200,
  );
  return value;
}

describe('one gateway', () => {
  let gw, base;
  before(async () => {
    const spool = path.join(tmpDir('bridle-reload-'), 'spool');
    gw = await startBridle({ config: mockConfig(mock.url, { database: { url: db.url, spool_dir: spool, flush_interval_ms: 100 } }) });
    base = structuredClone(gw.config); // with the test key the harness added
  });
  after(async () => {
    await gw?.stop();
  });

  test('a model added to the file is served after SIGHUP, and not before', async () => {
    const before = await chat(gw, 'gpt-4o', 'hi');
    assert.equal(before.status, 404, before.text);
    assert.equal(before.json.error.code, 'model_not_found');
    base.models['gpt-4o'] = { provider: 'openai' };
    await reload(gw, base);
    const r = await chat(gw, 'gpt-4o', 'hi');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'] ?? 'gpt-4o', 'gpt-4o');
    assert.match(r.json.choices[0].message.content, /Hello from gpt-4o\./);
    const models = (await get(`${gw.baseURL}/models`, gw.auth)).json.data.map((m) => m.id);
    assert.ok(models.includes('gpt-4o'), `GET /v1/models lists it: ${models}`);
    assert.match(gw.proc.stderr, new RegExp(`config reloaded from ${gw.configPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: 5 models, 1 routes\n`));
    const rows = await allRows([r.headers['x-request-id']]);
    assert.equal(rows.get(r.headers['x-request-id']).n, 1);
  });

  test('a bad file is refused: the old config stays, the log names the file and the JSON path', async () => {
    const bad = structuredClone(base);
    bad.providers.openai.kind = 'opnai';
    delete bad.models['gpt-4o'];
    await reload(gw, bad, /config reload refused/);
    assert.match(
      gw.proc.stderr,
      new RegExp(`config reload refused, the running config is kept: ${gw.configPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: \\$\\.providers\\.openai\\.kind: expected`),
    );
    // still the old config: gpt-4o (gone from the bad file) is served
    const r = await chat(gw, 'gpt-4o', 'still here?');
    assert.equal(r.status, 200, r.text);
    // not JSON at all: refused the same way
    writeFileSync(gw.configPath, '{"providers": ');
    await reload(gw, null, /config reload refused/);
    assert.equal((await chat(gw, 'gpt-4o', 'and now?')).status, 200);
    writeFileSync(gw.configPath, JSON.stringify(base, null, 2));
  });

  test('a listen address or database change is logged as needing a restart and otherwise ignored', async () => {
    const changed = structuredClone(base);
    changed.listen = '127.0.0.1:1';
    changed.database.url = 'postgresql://nobody@127.0.0.1:1/none';
    changed.database.spool_dir = path.join(tmpDir('bridle-reload-'), 'other');
    changed.routes.fast = { candidates: ['claude-haiku-4-5'] }; // this part applies
    await reload(gw, changed);
    const esc = gw.configPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    for (const p of ['listen', 'database.url', 'database.spool_dir'])
      assert.match(gw.proc.stderr, new RegExp(`config reload: ${p.replace('.', '\\.')} changed in ${esc}; it takes effect only at a restart, so the running value is kept`));
    assert.doesNotMatch(gw.proc.stderr, /nobody@127\.0\.0\.1:1/, 'values are not logged');
    assert.match(gw.proc.stderr, /config reloaded from .*: 5 models, 2 routes; some changes wait for a restart \(above\)/);
    // still on the same address, still writing to the same database; the new route is served
    const r = await chat(gw, 'fast', 'via the new route');
    assert.equal(r.status, 200, r.text);
    assert.match(r.json.choices[0].message.content, /claude-haiku-4-5/);
    const rows = await allRows([r.headers['x-request-id']]);
    assert.equal(rows.get(r.headers['x-request-id']).n, 1, 'its usage went to the database it started with');
    writeFileSync(gw.configPath, JSON.stringify(base, null, 2));
    await reload(gw, base);
  });

  test('requests in flight during a reload finish under the old config; new ones use the new one', async () => {
    const msg = 'price me [[mock:latency_ms=1200]]';
    const pre = await chat(gw, 'gpt-4o-mini', msg);
    assert.equal(pre.status, 200, pre.text);
    const inflight = chat(gw, 'gpt-4o-mini', msg);
    await sleep(300);
    // a new price and a new upstream name for the same model
    const changed = structuredClone(base);
    changed.models['gpt-4o-mini'] = { provider: 'openai', upstream_model: 'gpt-4o-mini-2', prices: { input: 1000, output: 1000 } };
    await reload(gw, changed);
    const post1 = await chat(gw, 'gpt-4o-mini', msg);
    const old = await inflight;
    assert.equal(old.status, 200, old.text);
    assert.equal(post1.status, 200, post1.text);
    // the one in flight: the old upstream model and the old price, in its header and its ledger row
    assert.match(old.json.choices[0].message.content, /Hello from gpt-4o-mini\./);
    assert.equal(old.headers['x-bridle-cost-usd'], pre.headers['x-bridle-cost-usd']);
    assert.match(post1.json.choices[0].message.content, /Hello from gpt-4o-mini-2\./);
    const u = post1.json.usage;
    const want = (u.prompt_tokens + u.completion_tokens) * 1000; // micro-dollars at $1000/M
    assert.equal(Number(post1.headers['x-bridle-cost-usd']), want / 1e6, `new price: ${post1.headers['x-bridle-cost-usd']}`);
    assert.notEqual(post1.headers['x-bridle-cost-usd'], pre.headers['x-bridle-cost-usd']);
    const ids = [pre, old, post1].map((r) => r.headers['x-request-id']);
    const rows = await allRows(ids);
    assert.equal(rows.get(ids[1]).cost, rows.get(ids[0]).cost, 'the in-flight row is priced as before');
    assert.equal(BigInt(rows.get(ids[2]).cost), BigInt(want) * 1000000n, 'the new row is priced at the new price (pico-dollars)');
    writeFileSync(gw.configPath, JSON.stringify(base, null, 2));
    await reload(gw, base);
  });

  test('a target keeps its circuit breaker across a reload; a model moved to another provider gets a fresh one', async () => {
    const breakerOf = async (model) => (await get(`${gw.url}/v1/bridle/health`, gw.auth)).json.targets.find((t) => t.model === model)?.breaker;
    await mockFault(mock.url, { model: 'claude-haiku-4-5', count: 50, directives: 'status=503' });
    for (let i = 0; i < 10 && (await breakerOf('claude-haiku-4-5')).state !== 'open'; i++) await chat(gw, 'claude-haiku-4-5', `fail ${i}`);
    const open = await breakerOf('claude-haiku-4-5');
    assert.equal(open.state, 'open', JSON.stringify(open));
    await mockReset(mock.url);
    const cfg = structuredClone(base);
    cfg.models['gpt-4o'] = { provider: 'anthropic', upstream_model: 'claude-haiku-4-5', price: 'gpt-4o' }; // moved
    await reload(gw, cfg);
    const kept = await breakerOf('claude-haiku-4-5');
    assert.equal(kept.state, 'open', `the same model and provider keep their breaker: ${JSON.stringify(kept)}`);
    assert.ok(kept.opens_total >= open.opens_total);
    const r = await chat(gw, 'claude-haiku-4-5', 'still resting?');
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.error.code, 'circuit_open', r.text);
    const moved = await breakerOf('gpt-4o');
    assert.deepEqual([moved.state, moved.opens_total], ['closed', 0], 'a new (model, provider) pair starts closed');
    writeFileSync(gw.configPath, JSON.stringify(base, null, 2));
    await reload(gw, base);
  });

  test('reload under load: several SIGHUPs during steady traffic, no request fails, every one has its ledger row', async (t) => {
    let stop = false;
    const ok = [];
    const failed = [];
    const loop = async (n) => {
      for (let i = 0; !stop; i++) {
        const model = i % 3 === 0 ? 'auto' : 'gpt-4o-mini';
        const r = await chat(gw, model, `load ${n}.${i} [[mock:latency_ms=${(i % 4) * 40}]]`).catch((e) => ({ status: 0, text: String(e) }));
        (r.status === 200 ? ok : failed).push(r);
      }
    };
    const loops = Array.from({ length: 8 }, (_, n) => loop(n));
    for (let k = 0; k < 6; k++) {
      await sleep(250);
      const cfg = structuredClone(base);
      cfg.routes.auto.candidates = k % 2 ? ['gpt-4o-mini', 'claude-haiku-4-5'] : ['claude-haiku-4-5', 'gpt-4o-mini'];
      cfg.models[`extra-${k}`] = { provider: 'gemini', upstream_model: 'gemini-2.5-flash', price: 'gemini-2.5-flash' };
      try {
        await reload(gw, cfg);
      } catch (e) {
        stop = true;
        await Promise.all(loops);
        throw e;
      }
    }
    await sleep(250);
    stop = true;
    await Promise.all(loops);
    assert.equal((gw.proc.stderr.match(/config reload refused/g) || []).length, 2, 'only the two bad files of the earlier test were refused');
    t.diagnostic(`${ok.length} answered across 6 reloads`);
    assert.deepEqual(
      failed.map((f) => `${f.status} ${f.text}`.slice(0, 200)),
      [],
    );
    assert.ok(ok.length > 50, `${ok.length} requests`);
    const ids = ok.map((r) => r.headers['x-request-id']);
    const rows = await allRows(ids);
    for (const id of ids) assert.equal(rows.get(id).n, 1, `rows for ${id}`);
    const h = (await get(`${gw.url}/v1/bridle/health`, gw.auth)).json;
    assert.equal(h.providers.find((p) => p.name === 'openai').in_flight, 0, 'every call slot given back across the reloads');
    writeFileSync(gw.configPath, JSON.stringify(base, null, 2));
  });

  test('SIGTERM still drains after reloads', async () => {
    const pending = chat(gw, 'gpt-4o-mini', 'last one [[mock:latency_ms=600]]');
    await sleep(150);
    gw.proc.child.kill('SIGTERM');
    const r = await pending;
    assert.equal(r.status, 200, r.text);
    await gw.proc.closed;
    assert.deepEqual(gw.proc.exited, { code: 0, signal: null }, gw.proc.logs());
    gw = null;
  });
});

test('with two workers, SIGHUP reloads every worker', async () => {
  const spool = path.join(tmpDir('bridle-reload-'), 'spool');
  const gw = await startBridle({ config: mockConfig(mock.url, { workers: 2, database: { url: db.url, spool_dir: spool } }) });
  const cfg = structuredClone(gw.config);
  cfg.models['gpt-4o'] = { provider: 'openai' };
  writeFileSync(gw.configPath, JSON.stringify(cfg, null, 2));
  gw.proc.child.kill('SIGHUP');
  await gw.proc.waitFor((p) => (p.stderr.match(/config reloaded from /g) || []).length >= 2, 5000 * SLOW, 'both workers reloaded');
  const seen = new Set();
  for (let i = 0; i < 40 && seen.size < 2; i++) {
    const r = await chatNewConn(gw, 'gpt-4o', `after ${i}`);
    assert.equal(r.status, 200, r.text);
    seen.add(r.headers['x-bridle-worker']);
  }
  assert.deepEqual([...seen].sort(), ['0', '1'], 'both workers serve the added model');
  await gw.stop();
  assert.deepEqual(gw.proc.exited, { code: 0, signal: null });
});

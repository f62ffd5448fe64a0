// The usage ledger end to end (reliability.md §5): bridle → spool → PostgreSQL.
// Every request the test sends carries a unique "user" (→ end_user) so its row
// can be found; each row is checked field by field against the mock's token
// formulas and the price table (tests/integration/lib/mockmath.mjs). Then the
// faults: database down at start, SIGTERM with events pending, migrate
// "check" on an empty database, spool full.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { BUILD, get, mockConfig, mockFault, mockReset, post, spawnTracked, startBridle, startMock, tmpDir, sleep } from './lib/harness.mjs';
import { startCluster, spoolState, startBridleAt, waitUntil } from './lib/ledgerlib.mjs';
import { billed, costPusd, expected } from './lib/mockmath.mjs';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';

const RUN = randomBytes(4).toString('hex');
let seq = 0;
const marker = () => `u-${RUN}-${++seq}`;

const MODELS = [
  { model: 'gpt-4o-mini', dialect: 'openai', provider: 'openai' },
  { model: 'claude-haiku-4-5', dialect: 'anthropic', provider: 'anthropic' },
  { model: 'gemini-2.5-flash', dialect: 'gemini', provider: 'gemini' },
  { model: 'llama3.2', dialect: 'ollama', provider: 'ollama' },
];

let mock;
let db; // the cluster the main gateway writes to
let gw;
const sentMain = []; // every marker sent through gw

before(async () => {
  mock = await startMock();
  db = await startCluster();
  gw = await startBridle({
    config: mockConfig(mock.url, { database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 100 } }),
    keyId: 'ledger-main',
    team: 'team-ledger',
  });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await db?.destroy();
});

/** POST /v1/chat/completions with a fresh marker in "user"; → {marker, status, text, json, headers}. */
async function chat(g, body, headers = {}, sent = sentMain) {
  const m = marker();
  sent.push(m);
  const r = await post(`${g.baseURL}/chat/completions`, { ...body, user: m }, { ...g.auth, ...headers }, { timeoutMs: 15000 });
  return { marker: m, ...r };
}

const rowsFor = async (cluster, markers) =>
  (await cluster.query('SELECT * FROM usage_events WHERE end_user = ANY($1)', [markers])).rows;

/** Waits until every marker has a row; → {byMarker (marker → [rows]), ms}. */
async function waitRows(cluster, markers, ms = 1500) {
  const t0 = Date.now();
  let rows = [];
  for (;;) {
    try {
      rows = await rowsFor(cluster, markers);
    } catch {}
    const have = new Set(rows.map((r) => r.end_user));
    if (markers.every((m) => have.has(m))) break;
    if (Date.now() - t0 > ms)
      assert.fail(`rows for ${markers.filter((m) => !have.has(m)).length} of ${markers.length} requests missing after ${ms} ms`);
    await sleep(25);
  }
  const byMarker = new Map();
  for (const r of rows) byMarker.set(r.end_user, [...(byMarker.get(r.end_user) || []), r]);
  return { byMarker, ms: Date.now() - t0 };
}

function one(byMarker, m, what) {
  const rs = byMarker.get(m) || [];
  assert.equal(rs.length, 1, `${what}: exactly one row for ${m}, got ${rs.length}`);
  return rs[0];
}

/** The token columns and cost the row must hold for expectation e in a dialect. */
function wantUsage(dialect, e, priceModel, baselineModel = priceModel) {
  const b = billed(dialect, e);
  return {
    input_tokens: String(b.input_uncached),
    cache_read_tokens: String(b.cache_read),
    cache_write_tokens: String(b.cache_write_5m + b.cache_write_1h),
    output_tokens: String(e.C),
    // the mock's Anthropic and Ollama dialects report no reasoning tokens
    reasoning_tokens: String(dialect === 'openai' || dialect === 'gemini' ? e.R : 0),
    usage_exact: true,
    cost_pusd: String(costPusd(priceModel, b)),
    baseline_cost_pusd: String(costPusd(baselineModel, b)),
  };
}

const pick = (row, keys) => Object.fromEntries(keys.map((k) => [k, row[k]]));

/** Reads an SSE response until the first data event, then destroys the socket. */
function streamAndAbort(g, body) {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = http.request(`${g.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { ...g.auth, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    });
    req.on('response', (res) => {
      res.once('data', () => {
        req.destroy();
        resolve(res.statusCode);
      });
    });
    req.on('error', (e) => (e.code === 'ECONNRESET' ? null : reject(e)));
    req.end(payload);
  });
}

describe('every request has exactly one row with the right usage, cost and attribution', () => {
  test('each dialect, streamed and not, with usage overrides', async () => {
    const cases = [];
    for (const m of MODELS) {
      const contents = [
        'Say hello to the ledger test, please',
        '[[mock:cached_tokens=5]] twenty bytes pad pad pad pad pad pad pad pad pad pad',
        '[[mock:reasoning_tokens=7]] think first',
        '[[mock:prompt_tokens=3000,cached_tokens=1000,reasoning_tokens=12,completion_tokens=40]]',
      ];
      if (m.dialect === 'openai' || m.dialect === 'anthropic')
        contents.push('[[mock:prompt_tokens=2000,cache_write_tokens=600,cached_tokens=300]]');
      if (m.dialect === 'anthropic')
        contents.push('[[mock:prompt_tokens=5000,cache_write_tokens=600,cache_write_1h_tokens=900,cached_tokens=300]]');
      for (const stream of [false, true])
        for (const content of contents) {
          const messages = [{ role: 'user', content }];
          const r = await chat(gw, { model: m.model, messages, stream, ...(m.dialect === 'anthropic' ? { max_tokens: 256 } : {}) });
          assert.equal(r.status, 200, `${m.model} stream=${stream} ${content}: ${r.text}`);
          if (stream) assert.match(r.text, /data: \[DONE\]\s*$/, `${m.model} ${content}: stream complete`);
          cases.push({ m, stream, content, e: expected(messages, m.model), marker: r.marker });
        }
    }
    const { byMarker, ms } = await waitRows(db, cases.map((c) => c.marker));
    console.log(`# ${cases.length} rows arrived ${ms} ms after the last response`);
    for (const c of cases) {
      const what = `${c.m.model} stream=${c.stream} ${c.content}`;
      const row = one(byMarker, c.marker, what);
      const want = wantUsage(c.m.dialect, c.e, c.m.model);
      assert.deepEqual(pick(row, Object.keys(want)), want, what);
      assert.deepEqual(
        pick(row, ['key_id', 'team', 'requested_model', 'provider', 'model', 'route_reason', 'streamed', 'status', 'error_class', 'attempts']),
        {
          key_id: 'ledger-main',
          team: 'team-ledger',
          requested_model: c.m.model,
          provider: c.m.provider,
          model: c.m.model,
          route_reason: 'the model requested',
          streamed: c.stream,
          status: 200,
          error_class: null,
          attempts: 1,
        },
        what,
      );
      assert.match(row.event_id, /^[0-9a-f]{32}$/, what);
      assert.ok(Number(row.latency_us) > 0, `${what}: latency_us ${row.latency_us}`);
      if (c.stream) assert.ok(Number(row.ttft_us) >= 0, `${what}: ttft_us ${row.ttft_us}`);
      assert.ok(Math.abs(row.ts.getTime() - Date.now()) < 120000, `${what}: ts ${row.ts.toISOString()}`);
    }
  });

  test('a route: the model that answered is billed, the baseline is the first candidate', async () => {
    await mockReset(mock.url);
    // the first candidate fails (retryable) on every attempt: bridle fails over to the second
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 20, directives: 'status=503' });
    const out = [];
    try {
      for (const stream of [false, true]) {
        const messages = [{ role: 'user', content: '[[mock:prompt_tokens=1000,completion_tokens=100,cached_tokens=200]] route me' }];
        const r = await chat(gw, { model: 'auto', messages, stream, max_tokens: 500 });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.headers['x-bridle-model'], 'claude-haiku-4-5', JSON.stringify(r.headers));
        out.push({ r, stream, e: expected(messages, 'claude-haiku-4-5') });
      }
      const messages = [{ role: 'user', content: 'first candidate answers' }];
      await mockReset(mock.url);
      const r = await chat(gw, { model: 'auto', messages });
      assert.equal(r.status, 200, r.text);
      out.push({ r, stream: false, e: expected(messages, 'gpt-4o-mini'), first: true });
    } finally {
      await mockReset(mock.url);
    }
    const { byMarker } = await waitRows(db, out.map((o) => o.r.marker));
    for (const o of out) {
      const row = one(byMarker, o.r.marker, `route stream=${o.stream}`);
      if (o.first) {
        assert.deepEqual(pick(row, ['requested_model', 'model', 'provider', 'route_reason']), {
          requested_model: 'auto',
          model: 'gpt-4o-mini',
          provider: 'openai',
          route_reason: 'route auto, candidate 1',
        });
        const want = wantUsage('openai', o.e, 'gpt-4o-mini', 'gpt-4o-mini');
        assert.deepEqual(pick(row, Object.keys(want)), want);
        continue;
      }
      assert.deepEqual(pick(row, ['requested_model', 'model', 'provider', 'route_reason', 'status', 'streamed']), {
        requested_model: 'auto',
        model: 'claude-haiku-4-5',
        provider: 'anthropic',
        route_reason: 'route auto, candidate 2',
        status: 200,
        streamed: o.stream,
      });
      // the first candidate once (503), then the second at once (a failover, not a retry)
      assert.equal(row.attempts, 2, `attempts ${row.attempts}`);
      const want = wantUsage('anthropic', o.e, 'claude-haiku-4-5', 'gpt-4o-mini');
      assert.deepEqual(pick(row, Object.keys(want)), want, `route stream=${o.stream}`);
      assert.notEqual(row.cost_pusd, row.baseline_cost_pusd);
    }
  });

  test('attribution: x-bridle-* headers and metadata; team from the key', async () => {
    const messages = [{ role: 'user', content: 'attribute me' }];
    const a = await chat(gw, { model: 'gpt-4o-mini', messages }, { 'x-bridle-task': 'summarise', 'x-bridle-agent': 'agent-7', 'x-bridle-feature': 'inbox' });
    const b = await chat(gw, { model: 'gpt-4o-mini', messages, stream: true, metadata: { task: 'm-task', agent: 'm-agent', feature: 'm-feature' } });
    const c = await chat(gw, { model: 'gpt-4o-mini', messages, metadata: { task: 'm-task', agent: 'm-agent', feature: 'm-feature' } }, { 'x-bridle-task': 'h-task' });
    const d = await chat(gw, { model: 'gpt-4o-mini', messages });
    for (const r of [a, b, c, d]) assert.equal(r.status, 200, r.text);
    const { byMarker } = await waitRows(db, [a, b, c, d].map((r) => r.marker));
    const cols = ['task', 'agent', 'feature', 'team', 'key_id'];
    assert.deepEqual(pick(one(byMarker, a.marker, 'headers'), cols), { task: 'summarise', agent: 'agent-7', feature: 'inbox', team: 'team-ledger', key_id: 'ledger-main' });
    assert.deepEqual(pick(one(byMarker, b.marker, 'metadata'), cols), { task: 'm-task', agent: 'm-agent', feature: 'm-feature', team: 'team-ledger', key_id: 'ledger-main' });
    assert.deepEqual(pick(one(byMarker, c.marker, 'header wins'), cols), { task: 'h-task', agent: 'm-agent', feature: 'm-feature', team: 'team-ledger', key_id: 'ledger-main' });
    assert.deepEqual(pick(one(byMarker, d.marker, 'none'), cols), { task: null, agent: null, feature: null, team: 'team-ledger', key_id: 'ledger-main' });
  });

  test("attribution text reaches the row as sent: COPY's escapes (tab, newline, backslash, \\N)", async () => {
    const odd = { task: 'a\tb\nc\rd', agent: '\\N', feature: 'back\\slash "quoted" é ✓' };
    const r = await chat(gw, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'odd' }], metadata: odd });
    assert.equal(r.status, 200, r.text);
    const { byMarker } = await waitRows(db, [r.marker]);
    assert.deepEqual(pick(one(byMarker, r.marker, 'odd text'), ['task', 'agent', 'feature']), odd);
  });

  test('errors: unknown model (404), upstream failures (502/503), a cut stream, a client that disconnects (499)', async () => {
    const messages = (s) => [{ role: 'user', content: s }];
    const unknown = await chat(gw, { model: 'no-such-model', messages: messages('hi') });
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(unknown.headers['x-should-retry'], 'false');
    // With the default resilience each failure is retried: 503/529 3 attempts
    // (retryable), 500 2 (ambiguous: once). One model each, so no target
    // reaches the breaker's 5 failures in a row before the cut streams below.
    const up503 = await chat(gw, { model: 'gpt-4o-mini', messages: messages('[[mock:status=503]] fail') });
    const up500 = await chat(gw, { model: 'gemini-2.5-flash', messages: messages('[[mock:status=500]] fail') });
    const up503s = await chat(gw, { model: 'claude-haiku-4-5', max_tokens: 100, stream: true, messages: messages('[[mock:status=529]] fail') });
    const wantFail = new Map([
      [up503, { status: 503, attempts: 3 }],
      [up500, { status: 502, attempts: 2 }],
      [up503s, { status: 503, attempts: 3 }],
    ]);
    for (const [r, w] of wantFail) {
      assert.equal(r.status, w.status, r.text);
      assert.equal(r.headers['x-bridle-attempts'], String(w.attempts), JSON.stringify(r.headers));
    }
    const cuts = [];
    for (const m of MODELS) {
      const r = await chat(gw, { model: m.model, stream: true, max_tokens: 100, messages: messages('[[mock:cut_after=3]] cut me') });
      assert.equal(r.status, 200, r.text);
      cuts.push({ m, r });
    }
    // a client that goes away mid-stream
    const gone = marker();
    sentMain.push(gone);
    const st = await streamAndAbort(gw, {
      model: 'gpt-4o-mini',
      stream: true,
      user: gone,
      messages: messages('[[mock:trickle_ms=300]] slowly'),
    });
    assert.equal(st, 200);

    const markers = [unknown, up503, up500, up503s, ...cuts.map((c) => c.r)].map((r) => r.marker).concat(gone);
    const { byMarker } = await waitRows(db, markers, 3000);
    const u = one(byMarker, unknown.marker, 'unknown model');
    assert.deepEqual(pick(u, ['status', 'error_class', 'requested_model', 'cost_pusd', 'attempts']), {
      status: 404,
      error_class: 'model_not_found',
      requested_model: 'no-such-model',
      cost_pusd: '0',
      attempts: 0,
    });
    for (const [r, w] of wantFail) {
      const row = one(byMarker, r.marker, `upstream ${r.status}`);
      const code = r.json?.error?.code;
      assert.ok(code, `the error has a code: ${r.text}`);
      assert.equal(row.status, w.status, `upstream failure: ${r.text}`);
      assert.equal(row.error_class, code, `error_class = the error code the client got: ${r.text}`);
      assert.equal(row.cost_pusd, '0');
      assert.equal(row.attempts, w.attempts, `attempts: ${r.text}`);
    }
    // every dialect is checked before failing, so the report names all of them
    const cutProblems = [];
    for (const c of cuts) {
      const row = one(byMarker, c.r.marker, `cut ${c.m.model}`);
      const why = [];
      if (row.usage_exact !== false) why.push(`usage_exact ${row.usage_exact}`);
      if (!(Number(row.output_tokens) > 0)) why.push(`output_tokens ${row.output_tokens}`);
      if (!(Number(row.input_tokens) > 0)) why.push(`input_tokens ${row.input_tokens}`);
      if (row.error_class !== 'upstream_stream_cut' && row.error_class !== 'upstream_stream_error') why.push(`error_class ${row.error_class}`);
      if (c.m.model !== 'llama3.2' && !(BigInt(row.cost_pusd) > 0n)) why.push(`cost_pusd ${row.cost_pusd}`);
      // Exactly (server/chat.c estimate_usage): counts the provider reported before the cut are
      // kept (Anthropic's input at message_start; Gemini's running usageMetadata: the prompt and
      // 3 candidates), the rest is ceil(characters / 4) of the prompt text and of the text relayed
      // ("Hello from MODEL." — the first 3 words).
      const relayed = `Hello from ${c.m.model}.`;
      const wantIn = Math.ceil(Buffer.byteLength('[[mock:cut_after=3]] cut me') / 4);
      const wantOut = Math.ceil(relayed.length / 4);
      if (row.input_tokens !== String(wantIn) || row.output_tokens !== String(wantOut))
        why.push(`tokens in/out ${row.input_tokens}/${row.output_tokens}, want ${wantIn}/${wantOut}`);
      const wantCost = String(costPusd(c.m.model, { input_uncached: wantIn, cache_read: 0, cache_write_5m: 0, cache_write_1h: 0, output: wantOut }));
      if (row.cost_pusd !== wantCost) why.push(`cost_pusd ${row.cost_pusd}, want ${wantCost}`);
      if (why.length)
        cutProblems.push(`${c.m.model}: ${why.join(', ')} (output_tokens ${row.output_tokens}, input_tokens ${row.input_tokens}; the client saw ${c.r.text.length} bytes)`);
    }
    assert.deepEqual(cutProblems, [], 'a stream cut after 3 content pieces must be recorded as estimated (usage_exact false) with output > 0');
    const g = one(byMarker, gone, 'client gone');
    assert.deepEqual(pick(g, ['status', 'error_class', 'streamed']), { status: 499, error_class: 'client_closed', streamed: true });
  });

  test('totals: one row per request sent, no duplicate event ids', async () => {
    const { value } = await waitUntil(async () => {
      const r = (await db.query("SELECT count(*)::int n, count(DISTINCT event_id)::int d, count(DISTINCT end_user)::int u FROM usage_events WHERE key_id = 'ledger-main'")).rows[0];
      return r.n >= sentMain.length ? r : null;
    }, 3000, 'all rows');
    assert.deepEqual(value, { n: sentMain.length, d: sentMain.length, u: sentMain.length });
  });
});

// ---------------------------------------------------------------------------
// faults: each with its own cluster and gateway

/** A cluster with the schema applied (by `bridle migrate`), for gateways started with migrate "off". */
async function migratedCluster() {
  const c = await startCluster();
  const p = spawnTracked('bridle-migrate', path.join(BUILD, 'bridle'), ['migrate', '--database-url', c.url]);
  await p.closed;
  assert.equal(p.exited.code, 0, p.logs());
  return c;
}

async function gatewayFor(cluster, extra = {}, opts = {}) {
  const spool = tmpDir('bridle-spool-');
  const g = await startBridle({
    config: mockConfig(mock.url, { database: { url: cluster.url, spool_dir: spool, flush_interval_ms: 100, ...extra } }),
    keyId: opts.keyId || 'ledger-fault',
    team: 'team-fault',
    ...opts,
  });
  return { g, spool };
}

async function sendMany(g, n, sent, concurrency = 4) {
  const results = [];
  let i = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (i < n) {
        const k = i++;
        const r = await chat(g, { model: k % 3 ? 'gpt-4o-mini' : 'claude-haiku-4-5', max_tokens: 64, stream: k % 2 === 1, messages: [{ role: 'user', content: `request ${k}` }] }, {}, sent);
        results.push(r);
      }
    }),
  );
  return results;
}

describe('faults', () => {
  test('database down at start (migrate "off"): requests succeed, events wait in the spool, all arrive once when it starts', async () => {
    const c = await migratedCluster();
    try {
      c.stopImmediate();
      const { g, spool } = await gatewayFor(c, { migrate: 'off' });
      const sent = [];
      const s0 = spoolState(spool);
      const rs = await sendMany(g, 60, sent);
      for (const r of rs) assert.equal(r.status, 200, r.text);
      await sleep(300);
      const s1 = spoolState(spool);
      assert.equal(s1.unacked - s0.unacked, 60, `spool holds the 60 events: ${JSON.stringify({ s0, s1 })}`);
      assert.ok(s1.bytes > s0.bytes, 'spool grew');
      const health = async () => (await get(`${g.baseURL}/bridle/health`, g.auth)).json.ledger;
      const down = await health();
      assert.equal(down.database_up, false);
      assert.equal(down.queued, 60);
      assert.ok(down.oldest_unshipped_ms >= 300, `the oldest event waits: ${JSON.stringify(down)}`);
      assert.equal(down.last_insert_ms_ago, -1, 'nothing shipped yet');
      c.start();
      const t0 = Date.now();
      const { byMarker, ms } = await waitRows(c, sent, 15000);
      for (const m of sent) one(byMarker, m, 'after the database came back');
      const drained = await waitUntil(() => spoolState(spool).unacked === 0, 5000, 'spool acked');
      console.log(`# database down at start: 60 events arrived ${ms} ms after it started; spool acked after ${Date.now() - t0} ms (${JSON.stringify(spoolState(spool))})`);
      assert.ok(drained);
      const up = await health();
      assert.deepEqual([up.database_up, up.queued, up.oldest_unshipped_ms], [true, 0, 0], JSON.stringify(up));
      assert.ok(up.last_insert_ms_ago >= 0 && up.last_insert_ms_ago < 5000, JSON.stringify(up));
      await sleep(300);
      const n = (await c.query("SELECT count(*)::int n, count(DISTINCT event_id)::int d FROM usage_events")).rows[0];
      assert.deepEqual(n, { n: 60, d: 60 });
      await g.stop();
    } finally {
      await c.destroy();
    }
  });

  test('a backlog many times the in-memory queue, drained while requests keep coming: every event once', async () => {
    // batch_max 20: the queue holds 80 events, the rest are read back from
    // the spool in many refills (the ledger keeps its spool cursor between
    // them) while new events are appended behind it and batches go out
    // while the next is written.
    const c = await migratedCluster();
    try {
      c.stopImmediate();
      const { g, spool } = await gatewayFor(c, { migrate: 'off', batch_max: 20 });
      const sent = [];
      for (const r of await sendMany(g, 1200, sent, 8)) assert.equal(r.status, 200, r.text);
      const health = async () => (await get(`${g.baseURL}/bridle/health`, g.auth)).json.ledger;
      const down = await health();
      assert.deepEqual([down.recorded, down.inserted, down.queued], [1200, 0, 80], JSON.stringify(down));
      c.start();
      const during = [];
      for (const r of await sendMany(g, 400, during, 2)) assert.equal(r.status, 200, r.text);
      const all = [...sent, ...during];
      const { byMarker, ms } = await waitRows(c, all, 30000);
      for (const m of all) one(byMarker, m, 'backlog and live events');
      await waitUntil(() => spoolState(spool).unacked === 0, 5000, 'spool acked');
      const up = await health();
      console.log(`# backlog of 1200 (queue 80) + 400 live: all rows ${ms} ms after the live requests; ${JSON.stringify(up)}`);
      assert.deepEqual([up.recorded, up.inserted, up.queued], [1600, 1600, 0], JSON.stringify(up));
      const n = (await c.query('SELECT count(*)::int n, count(DISTINCT event_id)::int d FROM usage_events')).rows[0];
      assert.deepEqual(n, { n: 1600, d: 1600 });
      await g.stop();
      // no batch held an event already sent: the dedup path is for replays only
      assert.doesNotMatch(g.proc.stderr, /already has \(a replay\)/, g.logs());
    } finally {
      await c.destroy();
    }
  });

  test('database down at start with the default migrate ("apply"): the gateway still starts and serves', async () => {
    // DB off the hot path (reliability.md §5.2 item 4): a restart during a database outage must not become a gateway outage.
    const c = await migratedCluster();
    try {
      c.stopImmediate();
      const { g } = await gatewayFor(c, {}, { readyTimeoutMs: 15000 });
      const sent = [];
      const rs = await sendMany(g, 5, sent);
      for (const r of rs) assert.equal(r.status, 200, r.text);
      c.start();
      const { byMarker } = await waitRows(c, sent, 15000);
      for (const m of sent) one(byMarker, m, 'after the database came back');
      await g.stop();
    } finally {
      await c.destroy();
    }
  });

  test('SIGTERM with events pending (database down): nothing lost after a restart', async () => {
    const c = await migratedCluster();
    try {
      const { g, spool } = await gatewayFor(c, { migrate: 'off' });
      c.stopImmediate();
      const sent = [];
      const rs = await sendMany(g, 40, sent);
      for (const r of rs) assert.equal(r.status, 200, r.text);
      const t0 = Date.now();
      const ex = await g.stop({ timeoutMs: 20000 });
      console.log(`# SIGTERM with 40 events pending and the database down: exited ${JSON.stringify(ex)} after ${Date.now() - t0} ms`);
      assert.equal(ex.code, 0, g.logs());
      assert.match(g.proc.stderr, /stay in the\s+spool|not yet in the database/, g.logs());
      assert.equal(spoolState(spool).unacked, 40, JSON.stringify(spoolState(spool)));
      c.start();
      const p = await startBridleAt(g.configPath, g.port);
      const { byMarker } = await waitRows(c, sent, 15000);
      for (const m of sent) one(byMarker, m, 'after the restart');
      await waitUntil(() => spoolState(spool).unacked === 0, 5000, 'spool acked');
      await p.stop();
    } finally {
      await c.destroy();
    }
  });

  test('a spool replayed into a database that already has its events: no duplicates, new events still arrive', async () => {
    // The same 30 events are sent twice: first from the spool, then from a
    // copy of it (as after a crash between COPY's commit and the spool's
    // trim). COPY refuses the second batch on the key; the ledger takes the
    // dedup path (stage table + ON CONFLICT DO NOTHING) and goes back to COPY.
    const c = await migratedCluster();
    try {
      c.stopImmediate();
      const { g, spool } = await gatewayFor(c, { migrate: 'off' });
      const sent = [];
      for (const r of await sendMany(g, 30, sent)) assert.equal(r.status, 200, r.text);
      assert.equal((await g.stop({ timeoutMs: 20000 })).code, 0, g.logs());
      const copy = tmpDir('bridle-spool-copy-');
      cpSync(spool, copy, { recursive: true });
      c.start();
      const first = await startBridleAt(g.configPath, g.port);
      await waitRows(c, sent, 15000);
      await waitUntil(() => spoolState(spool).unacked === 0, 5000, 'first spool acked');
      await first.stop();

      const conf = JSON.parse(readFileSync(g.configPath, 'utf8'));
      conf.database.spool_dir = copy;
      const copyConfig = path.join(tmpDir('bridle-conf-'), 'bridle.json');
      writeFileSync(copyConfig, JSON.stringify(conf));
      const second = await startBridleAt(copyConfig, g.port);
      await waitUntil(() => spoolState(copy).unacked === 0, 10000, 'the copy replayed and acked');
      const later = [];
      for (const r of await sendMany(g, 10, later)) assert.equal(r.status, 200, r.text);
      const { byMarker } = await waitRows(c, later, 5000);
      for (const m of later) one(byMarker, m, 'sent after the replay');
      await second.stop();
      assert.match(second.stderr, /already has \(a replay\)/, second.logs());
      const n = (await c.query('SELECT count(*)::int n, count(DISTINCT event_id)::int d FROM usage_events')).rows[0];
      assert.deepEqual(n, { n: 40, d: 40 }, 'each event once');
    } finally {
      await c.destroy();
    }
  });

  test('SIGTERM with the database up: the drain delivers every event before exit', async () => {
    const c = await migratedCluster();
    try {
      const { g } = await gatewayFor(c, { migrate: 'off', flush_interval_ms: 5000 });
      const sent = [];
      const rs = await sendMany(g, 50, sent);
      for (const r of rs) assert.equal(r.status, 200, r.text);
      const ex = await g.stop({ timeoutMs: 20000 });
      assert.equal(ex.code, 0, g.logs());
      const rows = await rowsFor(c, sent);
      assert.equal(rows.length, 50, `rows in the database right after exit: ${rows.length}\n${g.logs()}`);
    } finally {
      await c.destroy();
    }
  });

  test('migrate "check" with an empty database refuses to start with a clear message', async () => {
    const c = await startCluster();
    try {
      const dir = tmpDir();
      const cfg = mockConfig(mock.url, { database: { url: c.url, spool_dir: path.join(dir, 'spool'), migrate: 'check' } });
      const configPath = path.join(dir, 'bridle.json');
      writeFileSync(configPath, JSON.stringify(cfg));
      const p = spawnTracked('bridle', path.join(BUILD, 'bridle'), ['serve', '--config', configPath, '--listen', '127.0.0.1:0']);
      const t = setTimeout(() => p.child.kill('SIGKILL'), 10000);
      await p.closed;
      clearTimeout(t);
      assert.notEqual(p.exited.code, 0, `must refuse to start:\n${p.logs()}`);
      assert.equal(p.exited.signal, null, p.logs());
      assert.match(p.stderr, /migrations? (are|is) pending/, p.logs());
      assert.match(p.stderr, /bridle migrate/, p.logs());
      const t2 = (await c.query("SELECT to_regclass('usage_events') AS t")).rows[0].t;
      assert.equal(t2, null, 'check must not create the schema');
    } finally {
      await c.destroy();
    }
  });

  test('spool full (database down): billable requests get 503 usage_log_full, nothing is dropped', async () => {
    const c = await migratedCluster();
    try {
      c.stopImmediate();
      const { g, spool } = await gatewayFor(c, { migrate: 'off', spool_max_bytes: 2 * 1024 * 1024 });
      const sent = [];
      const ok = [];
      const full = [];
      let other = 0;
      let i = 0;
      const t0 = Date.now();
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (full.length < 50 && i < 30000 && Date.now() - t0 < 60000) {
            const k = i++;
            const r = await chat(g, { model: 'gpt-4o-mini', stream: k % 2 === 1, messages: [{ role: 'user', content: `fill ${k}` }] }, {}, sent);
            if (r.status === 200) ok.push(r.marker);
            else if (r.status === 503 && r.json?.error?.code === 'usage_log_full') full.push(r);
            else other++;
          }
        }),
      );
      console.log(`# spool full: ${ok.length} served, ${full.length} refused with usage_log_full, ${other} other, spool ${JSON.stringify(spoolState(spool))}`);
      assert.ok(full.length >= 50, `the spool never filled (${ok.length} requests served)`);
      assert.equal(other, 0);
      assert.ok(ok.length > 100);
      assert.ok(full.every((r) => /retry/i.test(r.json.error.message)), 'a clear message');
      c.start();
      const { byMarker, ms } = await waitRows(c, ok, 30000);
      for (const m of ok) one(byMarker, m, 'served while the database was down');
      // a refused request's own event is either in the database or logged whole at error level
      const refused = full.map((r) => r.marker);
      await sleep(500);
      const refusedRows = await rowsFor(c, refused);
      const logged = (g.proc.stderr.match(/the spool is full; the event follows/g) || []).length;
      console.log(`# spool full: ${ok.length} rows arrived ${ms} ms after the database started; refused: ${refusedRows.length} rows + ${logged} logged`);
      assert.ok(refusedRows.length + logged >= full.length, `refused requests' events: ${refusedRows.length} rows + ${logged} log lines < ${full.length}`);
      // once the database has everything, the gateway serves again
      await waitUntil(() => spoolState(spool).unacked === 0, 10000, 'spool acked');
      const again = await waitUntil(async () => {
        const r = await chat(g, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'after the outage' }] }, {}, sent);
        return r.status === 200 ? r : null;
      }, 5000, 'a 200 after the spool drained', 200);
      assert.equal(again.value.status, 200);
      await g.stop();
    } finally {
      await c.destroy();
    }
  });
});

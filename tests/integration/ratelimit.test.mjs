// Rate limits (issue 11; router/ratelimit.h, db/instances.h): requests per
// minute, tokens and cost per hour, per key and per team, enforced as
// floor(limit / N) on each of the N gateways sharing a database (counted from
// bridle_instances heartbeats). Refusals are OpenAI's 429 with Retry-After;
// every answer of a limited key carries x-ratelimit-* headers.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { SLOW, get, freePort, mockConfig, newKey, post, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster, startBridleAt, waitUntil } from './lib/ledgerlib.mjs';
import { expected } from './lib/mockmath.mjs';

let mock;
before(async () => {
  mock = await startMock();
});
after(async () => {
  await mock?.stop();
});

const MSG = [{ role: 'user', content: 'Say hello.' }];
const chat = (g, key, body = {}, headers = {}) =>
  post(`${g.url}/v1/chat/completions`, { model: 'gpt-4o-mini', messages: MSG, ...body }, { authorization: `Bearer ${key}`, ...headers }, { timeoutMs: 15000 * SLOW });
const health = async (g, key) => (await get(`${g.url}/v1/bridle/health`, { authorization: `Bearer ${key}` })).json;
const windowOf = (h, scope, id) => h.rate_limits.windows.find((w) => w.scope === scope && w.id === id);

/** OpenAI's duration format ("1s", "6m0s", "120ms", "1h0m19.75s") → ms. */
function parseDuration(s) {
  const m = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$/.exec(s);
  assert.ok(m && s.length > 0, `not a duration: ${JSON.stringify(s)}`);
  return (Number(m[1] || 0) * 3600 + Number(m[2] || 0) * 60 + Number(m[3] || 0)) * 1000 + Number(m[4] || 0);
}

function assertRefusal(r, type) {
  assert.equal(r.status, 429, r.text);
  assert.equal(r.json.error.code, 'rate_limit_exceeded', r.text);
  assert.equal(r.json.error.type, type, r.text);
  assert.equal(r.json.error.param, null);
  assert.match(r.headers['retry-after'], /^[1-9]\d*$/, 'Retry-After in whole seconds');
  const ms = Number(r.headers['retry-after-ms']);
  assert.ok(ms > 0 && Math.ceil(ms / 1000) === Number(r.headers['retry-after']), `retry-after-ms ${ms} vs Retry-After ${r.headers['retry-after']}`);
  assert.equal(r.headers['x-should-retry'], 'true');
}

describe('two gateways sharing one database', () => {
  let db;
  let gws = [];
  const k = newKey();
  before(async () => {
    db = await startCluster();
    const cfg = mockConfig(mock.url, {
      database: { url: db.url, flush_interval_ms: 100, heartbeat_ms: 250 },
      keys: [{ id: 'shared', sha256: k.sha256, rpm: 600 }],
    });
    // one config but for the spool, which each process owns
    for (let i = 0; i < 2; i++) {
      const dir = tmpDir('bridle-rl-');
      const configPath = path.join(dir, 'bridle.json');
      writeFileSync(configPath, JSON.stringify({ ...cfg, database: { ...cfg.database, spool_dir: path.join(dir, 'spool') } }));
      const port = await freePort();
      const proc = await startBridleAt(configPath, port, { readyMs: 15000 * SLOW });
      gws.push({ url: `http://127.0.0.1:${port}`, proc });
    }
  });
  after(async () => {
    for (const g of gws) await g.proc.stop().catch(() => {});
    await db?.destroy();
  });

  test('1,200 RPM offered to a 600 RPM key over 2 instances: at most 606 admitted, every refusal a 429 with Retry-After', async () => {
    for (const g of gws) await waitUntil(async () => (await health(g, k.key)).rate_limits.instances === 2, 10000 * SLOW, 'both see N = 2');
    const { rows } = await db.query('SELECT count(*)::int n FROM bridle_instances WHERE seen_at > now() - interval \'1 second\'');
    assert.equal(rows[0].n, 2, 'two live rows in bridle_instances');

    const t0 = Date.now();
    const pending = [];
    for (let i = 0; i < 1200; i++) {
      const wait = t0 + i * 50 - Date.now();
      if (wait > 0) await sleep(wait);
      pending.push(chat(gws[i % 2], k.key, { messages: [{ role: 'user', content: `hello ${i}` }] }));
    }
    const rs = await Promise.all(pending);
    const ok = rs.filter((r) => r.status === 200);
    const refused = rs.filter((r) => r.status !== 200);
    console.log(`# ${rs.length} offered in ${Date.now() - t0} ms: ${ok.length} admitted, ${refused.length} refused`);
    assert.ok(ok.length <= 606, `admitted ${ok.length} > 606`);
    assert.ok(ok.length >= 540, `admitted ${ok.length} < 540`);
    for (const r of refused) assertRefusal(r, 'requests');
    assert.match(refused[0].json.error.message, /^Rate limit reached for key "shared" on requests per minute \(RPM\): limit 600, used 600 in the last minute\. Try again in [\d.hms]+\./);
    for (const r of [...ok.slice(0, 3), refused[0]]) assert.equal(r.headers['x-ratelimit-limit-requests'], '600');
    assert.equal(refused[0].headers['x-ratelimit-remaining-requests'], '0');
    // each instance's own window holds its share
    for (const g of gws) {
      const w = windowOf(await health(g, k.key), 'key', 'shared');
      assert.equal(w.requests.share, 300);
      assert.ok(w.requests.used <= 300 && w.requests.used >= 270, JSON.stringify(w));
    }
    // refusals are recorded like any 4xx
    await waitUntil(
      async () => (await db.query("SELECT count(*)::int n FROM usage_events WHERE status = 429 AND error_class = 'rate_limit_exceeded' AND key_id = 'shared'")).rows[0].n === refused.length,
      10000 * SLOW,
      'one usage event per refusal',
    );
  });

  test('an instance killed (SIGKILL) drops out within ~3 heartbeats and the survivor takes the whole limit', async () => {
    const [a, b] = gws;
    // a at its share (300 of N = 2): first use up what its sliding window freed
    // since the test above (its oldest admissions may be over 60 s old by now)
    let r0;
    for (let i = 0; i < 400; i++) {
      r0 = await chat(a, k.key);
      if (r0.status !== 200) break;
    }
    assertRefusal(r0, 'requests');
    await b.proc.stop({ signal: 'SIGKILL' });
    const t0 = Date.now();
    const { ms } = await waitUntil(async () => (await health(a, k.key)).rate_limits.instances === 1, 5000 * SLOW, 'N back to 1', 25);
    console.log(`# N = 1 on the survivor ${Date.now() - t0} ms after SIGKILL (heartbeat 250 ms)`);
    assert.ok(ms <= 1500 * SLOW, `took ${ms} ms`);
    const w = windowOf(await health(a, k.key), 'key', 'shared');
    assert.equal(w.requests.share, 600);
    const r = await chat(a, k.key);
    assert.equal(r.status, 200, r.text);
    assert.ok(Number(r.headers['x-ratelimit-remaining-requests']) > 0);
  });
});

describe('one gateway (no database: N = 1)', () => {
  let gw;
  const keys = {
    hdr: newKey(),
    tok: newKey(),
    usd: newKey(),
    s1: newKey(),
    s2: newKey(),
    free: newKey(),
  };
  before(async () => {
    gw = await startBridle({
      config: mockConfig(mock.url, {
        teams: { squad: { rpm: 3 } },
        keys: [
          { id: 'hdr', sha256: keys.hdr.sha256, rpm: 5, tokens_per_hour: 100000 },
          { id: 'tok', sha256: keys.tok.sha256, tokens_per_hour: 400 },
          { id: 'usd', sha256: keys.usd.sha256, usd_per_hour: '0.0001' },
          { id: 's1', sha256: keys.s1.sha256, team: 'squad' },
          { id: 's2', sha256: keys.s2.sha256, team: 'squad' },
          { id: 'free', sha256: keys.free.sha256 },
        ],
      }),
    });
  });
  after(async () => {
    await gw?.stop();
  });

  test('x-ratelimit-* headers on a 200, a streamed 200 and a 429: remaining goes down, reset parses', async () => {
    const key = keys.hdr.key;
    const r1 = await chat(gw, key);
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.headers['x-ratelimit-limit-requests'], '5');
    assert.equal(r1.headers['x-ratelimit-remaining-requests'], '4');
    const reset1 = parseDuration(r1.headers['x-ratelimit-reset-requests']);
    assert.ok(reset1 > 59000 && reset1 <= 61000, `reset ${reset1}`);
    assert.equal(r1.headers['x-ratelimit-limit-tokens'], '100000');
    // settled before the head: the actual tokens, prompt and answer
    const e = expected(MSG, 'gpt-4o-mini');
    assert.equal(r1.headers['x-ratelimit-remaining-tokens'], String(100000 - e.P - e.C));
    const resetTok = parseDuration(r1.headers['x-ratelimit-reset-tokens']);
    assert.ok(resetTok > 3600000 && resetTok <= 3660000, `reset tokens ${resetTok}`);

    const s = await chat(gw, key, { stream: true });
    assert.equal(s.status, 200, s.text);
    assert.match(s.headers['content-type'], /text\/event-stream/);
    assert.equal(s.headers['x-ratelimit-remaining-requests'], '3');
    // while the stream runs its reservation (body bytes + 4096 output) is held
    assert.ok(Number(s.headers['x-ratelimit-remaining-tokens']) < 100000 - e.P - e.C - 4096);

    const rest = [];
    for (let i = 0; i < 3; i++) rest.push(await chat(gw, key));
    assert.deepEqual(
      rest.map((r) => [r.status, r.headers['x-ratelimit-remaining-requests']]),
      [
        [200, '2'],
        [200, '1'],
        [200, '0'],
      ],
    );
    const no = await chat(gw, key);
    assertRefusal(no, 'requests');
    assert.equal(no.headers['x-ratelimit-limit-requests'], '5');
    assert.equal(no.headers['x-ratelimit-remaining-requests'], '0');
    const resetNo = parseDuration(no.headers['x-ratelimit-reset-requests']);
    assert.ok(resetNo > 0 && resetNo <= 61000);
    assert.ok(Math.abs(resetNo - Number(no.headers['retry-after-ms'])) < 2000);
    assert.match(no.json.error.message, /^Rate limit reached for key "hdr" on requests per minute \(RPM\): limit 5, used 5 in the last minute\. Try again in /);
    // a 4xx of another kind carries them too
    const bad = await chat(gw, key, { model: 'no-such-model' });
    assert.equal(bad.status, 404);
    assert.equal(bad.headers['x-ratelimit-remaining-requests'], '0');
    const w = windowOf(await health(gw, key), 'key', 'hdr');
    assert.equal(w.requests.used, 5);
    assert.equal(w.in_flight, 0);
  });

  test('tokens_per_hour: reserved at admission, settled to the actual, then 429 type tokens', async () => {
    const key = keys.tok.key;
    const big = [{ role: 'user', content: 'Hi [[mock:completion_tokens=150]]' }];
    const r1 = await chat(gw, key, { messages: big, max_tokens: 200 });
    assert.equal(r1.status, 200, r1.text);
    const used = r1.json.usage.prompt_tokens + r1.json.usage.completion_tokens;
    assert.equal(r1.headers['x-ratelimit-remaining-tokens'], String(400 - used));
    const w = windowOf(await health(gw, key), 'key', 'tok');
    assert.equal(w.tokens.used, used, 'the reservation became the actual');
    // the next one's bound (its body's bytes + max_tokens 200) does not fit in what is left
    const r2 = await chat(gw, key, { messages: big, max_tokens: 200 });
    assertRefusal(r2, 'tokens');
    assert.match(r2.json.error.message, /^Rate limit reached for key "tok" on tokens per hour \(TPH\): limit 400, used \d+ in the last hour, requested \d+\. Try again in /);
    assert.ok(Number(r2.headers['retry-after']) <= 3661);
    // one that may use more than the whole limit can never pass: said so, not retryable
    const r3 = await chat(gw, key, { max_tokens: 5000 });
    assert.equal(r3.status, 429);
    assert.equal(r3.json.error.type, 'tokens');
    assert.equal(r3.json.error.code, 'rate_limit_exceeded');
    assert.equal(r3.headers['x-should-retry'], 'false');
    assert.match(r3.json.error.message, /Request too large for key "tok".*Lower max_tokens/);
    // a small request still fits
    const r4 = await chat(gw, key, { max_tokens: 10 });
    assert.equal(r4.status, 200, r4.text);
  });

  test('usd_per_hour: 429 type cost once the hour\'s cost is spent', async () => {
    const key = keys.usd.key;
    // gpt-4o-mini: $0.15 / $0.60 per million; 100 output tokens ≈ $0.00006
    const msgs = [{ role: 'user', content: 'Hi [[mock:completion_tokens=100]]' }];
    const r1 = await chat(gw, key, { messages: msgs, max_tokens: 100 });
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.headers['x-ratelimit-limit-requests'], undefined, 'no headers for a cost limit alone');
    const cost = Math.round(Number(r1.headers['x-bridle-cost-usd']) * 1e12);
    const w = windowOf(await health(gw, key), 'key', 'usd');
    assert.equal(w.cost_pusd.limit, 100000000);
    assert.equal(w.cost_pusd.used, cost, 'the reservation became the actual cost');
    const r2 = await chat(gw, key, { messages: msgs, max_tokens: 100 });
    assertRefusal(r2, 'cost');
    assert.match(r2.json.error.message, /^Rate limit reached for key "usd" on cost per hour: limit \$0\.000100, used \$0\.0000\d\d in the last hour, requested \$0\.0000\d\d\. Try again in /);
  });

  test('a team limit covers its keys together', async () => {
    const seq = [keys.s1, keys.s2, keys.s1].map((k) => k.key);
    const rs = [];
    for (const key of seq) rs.push(await chat(gw, key));
    assert.deepEqual(
      rs.map((r) => [r.status, r.headers['x-ratelimit-limit-requests'], r.headers['x-ratelimit-remaining-requests']]),
      [
        [200, '3', '2'],
        [200, '3', '1'],
        [200, '3', '0'],
      ],
    );
    for (const key of [keys.s2.key, keys.s1.key]) {
      const r = await chat(gw, key);
      assertRefusal(r, 'requests');
      assert.match(r.json.error.message, /^Rate limit reached for team "squad" on requests per minute \(RPM\): limit 3, used 3/);
    }
    const h = await health(gw, keys.s1.key);
    assert.equal(windowOf(h, 'team', 'squad').requests.used, 3);
    assert.equal(windowOf(h, 'key', 's1'), undefined, 'a key without limits of its own has no window');
  });

  test('a key without limits gets no x-ratelimit headers', async () => {
    for (const body of [{}, { stream: true }, { model: 'no-such-model' }]) {
      const r = await chat(gw, keys.free.key, body);
      assert.ok(r.status === 200 || r.status === 404, r.text);
      assert.deepEqual(
        Object.keys(r.headers).filter((h) => h.startsWith('x-ratelimit')),
        [],
        JSON.stringify(body),
      );
    }
    const h = await health(gw, keys.free.key);
    assert.equal(windowOf(h, 'key', 'free'), undefined);
    assert.equal(h.rate_limits.instances, 1);
    assert.equal(h.heartbeat.database, false);
  });
});

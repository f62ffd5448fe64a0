// Hard budgets under concurrency, across instances (issue 11, T7;
// reliability.md §4.2–4.3): two gateways on one PostgreSQL share a key's
// $1.00 budget through leases (bridle_budget_lease / _sync / _sweep of
// migrations/0004). Each request reserves an upper bound of its cost
// (E ≈ $0.049 from max_tokens) before the call and settles what it cost
// (A ≈ $0.030) after it; 64 clients send 1,000 requests over both
// gateways, one of them is SIGKILLed midway and restarted on its spool.
// The settled spend never passes the budget, every refusal is a 429
// budget_exceeded, the 75 % alert fires once, and the leases come back to
// 0 after the run (the killed one's released by its restarted successor).
// Also: the reservation of a request without max_tokens is bounded (the
// gateway's default cap, sent upstream too), a request that costs nothing (an idempotent replay) reserves nothing, a request whose
// budget has slack in hand costs no database query, and without a database
// the gateway enforces budgets alone.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { SLOW, freePort, get, mockConfig, mockLast, newKey, post, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startBridleAt, startCluster, waitUntil } from './lib/ledgerlib.mjs';
import { expected } from './lib/mockmath.mjs';

const USD = 1_000_000_000_000n; // pico-dollars
const IN_PRICE = 1_000_000n; // pico-dollars a token: $1 / M input tokens
const OUT_PRICE = 3_750_000_000n; // $3,750 / M output tokens: $0.00375 a token
const MAX_TOKENS = 13; // E's output part: 13 × $0.00375 = $0.04875
// The killed gateway is restarted at once and replays its spool; its lease
// holds the cost of those events until then, and the restarted gateway
// releases it once they are in (a gateway back after its TTL finds that
// cost kept as an orphan: budget_orphans.test.mjs). Scaled, so that a
// loaded or sanitized run keeps that order.
const TTL_MS = 4000 * SLOW;
const SYNC_MS = 250;
const messages = [{ role: 'user', content: 'Count to three.' }];
const body = (extra = {}) => ({ model: 't7', messages, max_tokens: MAX_TOKENS, ...extra });
// A: what one answer costs (the mock's usage for this prompt on "t7")
const u = expected(messages, 't7');
const A = BigInt(u.P) * IN_PRICE + BigInt(u.C) * OUT_PRICE;

const k1 = newKey(); // the $1.00 budget of T7
const k2 = newKey(); // $1.00: a capped request fits, an uncapped one does not
const k3 = newKey(); // $20: an uncapped request fits its default cap
const k4 = newKey(); // $1,000: slack in hand, for counting queries
const k5 = newKey(); // $0.10, for the idempotent replay
const k6 = newKey(); // $1.00, first used while the database is down

function config(mockUrl, dbUrl) {
  return mockConfig(mockUrl, {
    database: dbUrl ? { url: dbUrl, spool_dir: '${T7_SPOOL}', flush_interval_ms: 50 } : undefined,
    budgets: { lease_ttl_ms: TTL_MS, sync_ms: SYNC_MS },
    alerts: { thresholds: [0.5, 0.75] },
    models: { t7: { provider: 'openai', prices: { input: '1', output: '3750' } } },
    keys: [
      { id: 'k1', sha256: k1.sha256, budget_usd: '1.00' },
      { id: 'k2', sha256: k2.sha256, budget_usd: '1.00' },
      { id: 'k3', sha256: k3.sha256, budget_usd: '20' },
      { id: 'k4', sha256: k4.sha256, budget_daily_usd: '1000' },
      { id: 'k5', sha256: k5.sha256, budget_usd: '0.10' },
      { id: 'k6', sha256: k6.sha256, budget_usd: '1.00' },
    ],
  });
}

const auth = (k) => ({ authorization: `Bearer ${k.key}` });
const health = async (url) => (await get(`${url}/v1/bridle/health`, auth(k1))).json.budgets;

describe('two gateways, one PostgreSQL', () => {
  let mock;
  let db;
  const gw = []; // {port, url, spool, proc}
  let configPath;

  before(async () => {
    mock = await startMock();
    db = await startCluster();
    const dir = tmpDir('bridle-t7-');
    configPath = path.join(dir, 'bridle.json');
    writeFileSync(configPath, JSON.stringify(config(mock.url, db.url)));
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      const spool = path.join(dir, `spool${i}`);
      const proc = await startBridleAt(configPath, port, { env: { T7_SPOOL: spool } });
      gw.push({ port, url: `http://127.0.0.1:${port}`, spool, proc });
    }
  });

  after(async () => {
    for (const g of gw) await g.proc?.stop().catch(() => {});
    await mock?.stop();
    await db?.destroy();
  });

  const q = async (sql) => (await db.query(sql)).rows;

  test('T7: 64 clients, 1,000 requests, one gateway killed midway: the settled spend stays within $1.00', async () => {
    assert.ok(A > 29_000_000_000n && A < 31_000_000_000n, `one answer costs ${A} pusd`);
    const results = [];
    let sent = 0;
    let killed = false;
    let restarted = null;
    let leaseGone = null; // when the killed gateway's lease rows were swept, ms after the kill
    const N = 1000;
    const client = async () => {
      while (sent < N) {
        const i = sent++;
        // spread over both; while gateway 0 is down, its share goes to gateway 1
        const g = gw[i % 2 === 0 && gw[0].proc && !gw[0].down ? 0 : 1];
        try {
          const r = await post(`${g.url}/v1/chat/completions`, body(), auth(k1), { timeoutMs: 20000 * SLOW });
          results.push(r);
          const ok = results.filter((x) => x.status === 200).length;
          if (!killed && ok >= 14) {
            // midway through the budget: gateway 0 dies with leases and reservations held
            killed = true;
            gw[0].down = true;
            const pid = gw[0].proc.child.pid;
            const dying = gw[0].proc.stop({ signal: 'SIGKILL' });
            const tKill = Date.now();
            leaseGone = (async () => {
              const held = async () =>
                (await q(`SELECT count(*)::int AS n, coalesce(sum(held_pusd), 0)::text AS h FROM bridle_budget_leases WHERE instance LIKE '%:${pid}:%'`))[0];
              const atKill = await held();
              await waitUntil(async () => (await held()).n === 0, (TTL_MS + 6 * SYNC_MS + 2000) * SLOW, 'the killed gateway\'s leases swept', 20);
              return { ms: Date.now() - tKill, atKill, pid };
            })();
            restarted = (async () => {
              await dying;
              gw[0].proc = await startBridleAt(configPath, gw[0].port, { env: { T7_SPOOL: gw[0].spool } });
              gw[0].down = false;
            })();
          }
        } catch (e) {
          results.push({ status: 'error', error: String(e), gateway: g === gw[0] ? 0 : 1 });
        }
        // paced so that the run (about 6 s) outlasts the killed gateway's lease:
        // what it held comes back to the others before the run ends
        await sleep(Math.round((350 * TTL_MS) / 3000));
      }
    };
    await Promise.all(Array.from({ length: 64 }, client));
    await restarted;
    assert.ok(killed, 'gateway 0 was killed');
    // what the killed gateway held came back once its restart had replayed its spool
    // (bridle_budget_release_instance of migrations/0007), at the latest by the sweep after its TTL
    const gone = await leaseGone;
    assert.ok(gone.atKill.n > 0, 'the killed gateway held a lease when it died');
    assert.ok(gone.ms <= (TTL_MS + 6 * SYNC_MS + 2000) * SLOW, `released ${gone.ms} ms after the kill`);
    assert.match(gw[0].proc.logs(), new RegExp(`the previous run on this spool was [^ ]*:${gone.pid}:`));
    assert.match(gw[0].proc.logs(), /the leases of the previous run .* are released/);

    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    const other = results.filter((r) => r.status !== 200 && r.status !== 429);
    // only requests caught by the kill fail without an HTTP answer
    for (const r of other) assert.equal(r.status, 'error', `unexpected answer ${r.status}: ${r.text}`);
    assert.ok(other.length <= 64, `${other.length} requests lost to the kill`);
    for (const r of refused) {
      assert.equal(r.json?.error?.type, 'budget_exceeded', r.text);
      assert.equal(r.headers['x-should-retry'], 'false');
      assert.match(r.json.error.message, /^Budget exceeded: key "k1" monthly budget of \$1\.00 is used up \(\$0\.\d+ spent, this request may cost up to \$0\.04\d+\); it resets at \d{4}-\d\d-01T00:00:00Z \(in \d+d \d+h\)/);
    }

    // everything settled is in the ledger once (the killed gateway's spool replayed)
    await waitUntil(async () => {
      const [r] = await q("SELECT count(*)::int AS n FROM usage_events WHERE key_id = 'k1' AND status = 200");
      return r.n >= ok.length;
    }, 20000 * SLOW, 'every answered request in the ledger');
    await sleep(500);
    const [sum] = await q("SELECT coalesce(sum(cost_pusd), 0)::bigint::text AS s, count(*)::int AS n, count(DISTINCT event_id)::int AS d FROM usage_events WHERE key_id = 'k1'");
    const settled = BigInt(sum.s);
    assert.equal(sum.n, sum.d, 'no request settled twice');
    assert.ok(settled <= USD, `settled ${settled} pusd > $1.00`);
    // the budget was used, not stranded: the killed gateway's lease came back (released
    // at its restart) and was spent; what is left is less than two answers' reservations
    assert.ok(settled >= USD - 2n * 49_000_000_000n, `only ${settled} pusd settled of $1.00 (${ok.length} answers)`);
    // the database's view equals the ledger's: charged exactly once per event
    const [spend] = await q("SELECT spent_pusd::text AS s FROM bridle_budget_spend WHERE scope = 'key' AND scope_id = 'k1' AND period = 'month'");
    assert.equal(BigInt(spend.s), settled);
    // every 200 the clients saw is one billed event
    assert.ok(BigInt(ok.length) * A <= settled + 0n, `${ok.length} answers, ${settled} pusd settled`);

    // the config's thresholds replaced the default ones (75 %, 95 %) in the database,
    // and the 50 % and 75 % alerts fired once each (two gateways, a replay)
    assert.deepEqual((await q('SELECT share_bp FROM bridle_alert_thresholds ORDER BY 1')).map((r) => r.share_bp), [5000, 7500]);
    const alerts = await q("SELECT share_bp, count(*)::int AS n FROM bridle_budget_alerts WHERE scope = 'key' AND scope_id = 'k1' AND period = 'month' GROUP BY 1 ORDER BY 1");
    assert.deepEqual(alerts, [{ share_bp: 5000, n: 1 }, { share_bp: 7500, n: 1 }]);
    const [lim] = await q("SELECT limit_pusd::text AS l, source FROM bridle_budgets WHERE scope = 'key' AND scope_id = 'k1' AND period = 'month'");
    assert.deepEqual(lim, { l: String(USD), source: 'config' });

    // the leases come back to 0 (the killed one's released at its restart) within the TTL and a few syncs
    const t0 = Date.now();
    const { ms } = await waitUntil(async () => {
      const [h] = await q("SELECT coalesce(sum(held_pusd), 0)::int AS h FROM bridle_budget_spend WHERE scope = 'key' AND scope_id = 'k1'");
      const [l] = await q("SELECT count(*)::int AS n FROM bridle_budget_leases WHERE scope = 'key' AND scope_id = 'k1'");
      return h.h === 0 && l.n === 0;
    }, (TTL_MS + 6 * SYNC_MS + 2000) * SLOW, 'held_pusd back to 0');
    console.log(`T7: ${ok.length} answered, ${refused.length} refused, ${other.length} lost to the kill; settled $${Number(settled) / 1e12}; the killed gateway held ${gone.atKill.h} pusd, released ${gone.ms} ms after the kill; all held back to 0 ${ms} ms after the run`);
    for (const g of gw) assert.equal((await health(g.url)).held_pusd, 0);
  });

  test('a request without max_tokens reserves the gateway default cap (4,096 tokens), not an unbounded amount', async () => {
    // k2 has $1.00: 13 tokens reserve ≈ $0.049 and fit; 4,096 tokens reserve ≈ $15.36 and do not
    const capped = await post(`${gw[1].url}/v1/chat/completions`, body(), auth(k2));
    assert.equal(capped.status, 200, capped.text);
    const uncapped = await post(`${gw[1].url}/v1/chat/completions`, { model: 't7', messages }, auth(k2));
    assert.equal(uncapped.status, 429, uncapped.text);
    assert.match(uncapped.json.error.message, /this request may cost up to \$15\.36\d*\)/);
    // k3 has $20: the same request fits, and the cap it was priced at went upstream
    const fits = await post(`${gw[1].url}/v1/chat/completions`, { model: 't7', messages }, auth(k3));
    assert.equal(fits.status, 200, fits.text);
    const [last] = await mockLast(mock.url, 1);
    assert.equal(last.body.max_tokens, 4096, JSON.stringify(last).slice(0, 400));
  });

  test('a request whose budget has slack in hand costs no database query; an idempotent replay reserves nothing', async () => {
    const g = gw[1];
    const warm = await post(`${g.url}/v1/chat/completions`, body(), auth(k4));
    assert.equal(warm.status, 200, warm.text);
    const before = await health(g.url);
    const N = 200;
    for (let i = 0; i < N; i += 8)
      await Promise.all(Array.from({ length: 8 }, () => post(`${g.url}/v1/chat/completions`, body(), auth(k4))));
    const afterH = await health(g.url);
    const leases = afterH.lease_calls - before.lease_calls;
    const syncs = afterH.sync_calls - before.sync_calls;
    const queries = afterH.queries - before.queries;
    const local = afterH.local_admits - before.local_admits;
    console.log(`budget queries for ${N} requests: ${queries} (lease calls ${leases}, syncs ${syncs}); admitted with no query: ${local}`);
    // at most the 8 requests in flight wait for each lease call; all others take no query
    const waited = afterH.lease_admits - before.lease_admits;
    assert.equal(local + waited, N);
    assert.ok(waited <= 8 * leases, `${waited} requests waited for ${leases} lease calls`);
    // the leases: a handful of slices, not one per request; the rest are the periodic syncs/sweeps
    assert.ok(leases <= 10, `${leases} lease calls for ${N} requests`);
    assert.ok(queries - syncs <= leases + 5, `${queries} queries: ${leases} leases, ${syncs} syncs`);

    // k5 ($0.10): two answers fit (0.03 + 0.049 ≤ 0.10 after one); a replay of the first with
    // its Idempotency-Key costs nothing and reserves nothing, so it is served even at the limit
    const idem = { ...auth(k5), 'idempotency-key': 'k5-first' };
    const first = await post(`${g.url}/v1/chat/completions`, body(), idem);
    assert.equal(first.status, 200, first.text);
    // its cost is committed (charged to spent_pusd) while this gateway's lease row still
    // counts it until the next sync: the lease call corrects the row first (0005), so the
    // next request, which fits, is not refused for a cost counted twice
    await waitUntil(async () => Number((await q("SELECT coalesce(sum(spent_pusd), 0)::text AS s FROM bridle_budget_spend WHERE scope = 'key' AND scope_id = 'k5'"))[0].s) > 0, 10000 * SLOW, 'k5 charged', 5);
    const second = await post(`${g.url}/v1/chat/completions`, body(), auth(k5));
    assert.equal(second.status, 200, second.text);
    const third = await post(`${g.url}/v1/chat/completions`, body(), auth(k5));
    assert.equal(third.status, 429, third.text);
    const replay = await post(`${g.url}/v1/chat/completions`, body(), idem);
    assert.equal(replay.status, 200, replay.text);
    assert.equal(replay.headers['idempotent-replayed'], 'true');
  });

  test('database down: slack in hand keeps admitting until its lease may have expired; a request that needs a lease gets 503 budget_unavailable with Retry-After; back when it returns', async () => {
    const g = gw[1];
    const warm = await post(`${g.url}/v1/chat/completions`, body(), auth(k4));
    assert.equal(warm.status, 200, warm.text);
    db.stopImmediate();
    try {
      // k4 has slack in this gateway's lease: no database needed
      const inHand = await post(`${g.url}/v1/chat/completions`, body(), auth(k4));
      assert.equal(inHand.status, 200, inHand.text);
      // k6 has none: its lease cannot be asked for
      const t0 = Date.now();
      const r = await post(`${g.url}/v1/chat/completions`, body(), auth(k6));
      assert.equal(r.status, 503, r.text);
      assert.equal(r.json.error.code, 'budget_unavailable');
      assert.equal(r.headers['retry-after'], '1');
      assert.equal(r.headers['x-should-retry'], 'true');
      assert.match(r.json.error.message, /cannot check this request against its budgets right now/);
      assert.ok(Date.now() - t0 < 6000 * SLOW, `answered after ${Date.now() - t0} ms`);
      // past 3/4 of the TTL without a renewal the slack is not trusted any more
      await sleep(TTL_MS);
      const stale = await post(`${g.url}/v1/chat/completions`, body(), auth(k4));
      assert.equal(stale.status, 503, stale.text);
      assert.equal(stale.json.error.code, 'budget_unavailable');
    } finally {
      db.start();
    }
    await waitUntil(async () => (await post(`${g.url}/v1/chat/completions`, body(), auth(k6))).status === 200, 15000 * SLOW, 'k6 served once the database is back');
  });

  test('bridle_budget_lease_held (migration 0005) sets the caller\'s lease to what it holds, then grants within the limit', async () => {
    const call = async (held, need, want) =>
      (await q(`SELECT i, granted::int AS g, spent_pusd::int AS s, held_pusd::int AS h FROM bridle_budget_lease_held('sql:1:t', '{key}', '{sqltest}', '{day}', '{2026-01-01T00:00:00Z}', '{100}', '{${held}}', '{${need}}', '{${want}}', 60000)`))[0];
    const row = async () => (await q("SELECT held_pusd::int AS h FROM bridle_budget_leases WHERE instance = 'sql:1:t'"))[0]?.h ?? null;
    // a quarter of what is left: 25
    assert.deepEqual(await call(0, 10, 40), { i: 1, g: 25, s: 0, h: 25 });
    // the ledger charges 20 of it; the gateway holds 5 now. 20 + 5 + 70 fits in 100
    // (0004's bridle_budget_lease would count the 20 twice: 20 + 25 + 70 > 100)
    await q("UPDATE bridle_budget_spend SET spent_pusd = 20 WHERE scope_id = 'sqltest'");
    assert.deepEqual(await call(5, 70, 70), { i: 1, g: 70, s: 20, h: 75 });
    assert.equal(await row(), 75);
    // over: nothing granted, the lease stays what it holds (renewed)
    assert.deepEqual(await call(75, 10, 10), { i: 1, g: 0, s: 20, h: 75 });
    assert.equal(await row(), 75);
    // holding nothing ends the lease
    assert.deepEqual(await call(0, 0, 0), { i: 1, g: 0, s: 20, h: 0 });
    assert.equal(await row(), null);
  });

  test('a gateway stopped with SIGTERM gives its leases back at once, not after their TTL', async () => {
    const g = gw[1];
    const r = await post(`${g.url}/v1/chat/completions`, body(), auth(k4));
    assert.equal(r.status, 200, r.text);
    const pid = g.proc.child.pid;
    const leases = async () =>
      (await q(`SELECT count(*)::int AS n FROM bridle_budget_leases WHERE instance LIKE '%:${pid}:%' AND held_pusd > 0`))[0].n;
    assert.ok((await leases()) > 0, 'it holds a lease');
    const ex = await g.proc.stop();
    assert.equal(ex.code, 0, g.proc.logs());
    assert.equal(await leases(), 0, 'its leases are gone when it has exited');
    const [h] = await q("SELECT held_pusd::int AS h FROM bridle_budget_spend WHERE scope = 'key' AND scope_id = 'k4' ORDER BY period_start DESC LIMIT 1");
    assert.equal(h.h, 0);
    g.proc = null;
  });
});

describe('no database', () => {
  let mock;
  let g;
  before(async () => {
    mock = await startMock();
    const cfg = config(mock.url, null);
    delete cfg.database;
    g = await startBridle({ config: cfg });
  });
  after(async () => {
    await g?.stop();
    await mock?.stop();
  });

  test('budgets are enforced by the gateway alone: a $0.10 budget admits what fits and refuses the rest, named model and all', async () => {
    assert.match(g.logs(), /no database configured: budgets are enforced by this process alone/);
    const seen = [];
    for (let i = 0; i < 5; i++) {
      const r = await post(`${g.baseURL}/chat/completions`, body(), auth(k5));
      seen.push(r.status);
      if (r.status === 429) {
        assert.equal(r.json.error.type, 'budget_exceeded');
        assert.match(r.json.error.message, /key "k5" monthly budget of \$0\.10 is used up \(\$0\.06\d* spent/);
      }
    }
    // 0.03 spent + 0.049 fits in 0.10; 0.06 + 0.049 does not
    assert.deepEqual(seen, [200, 200, 429, 429, 429]);
    const h = (await get(`${g.url}/v1/bridle/health`, g.auth)).json.budgets;
    assert.equal(h.queries, 0);
    assert.equal(h.refused, 3);
  });
});

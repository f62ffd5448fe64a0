// Budget alerts end to end (router/alerts.c, migration 0004's trigger):
// two gateways share one PostgreSQL and one webhook receiver; spend is made
// through the gateways (the mock reports usage we choose, the model's price
// makes each request cost exactly $0.25), the ledger ships the events, the
// trigger fires the thresholds, and exactly one gateway delivers each alert:
//  - one POST per threshold (not one per gateway), its body's values exact,
//    delivered_at set, claimed_by one of the two, one warn line in all logs;
//  - a webhook answering 500 twice: delivered on the third attempt, the
//    attempts and the last error recorded;
//  - a claim left by a dead gateway is taken over after claim_timeout_ms;
//  - `bridle cost alert` (--json, --threshold, the table, bad arguments).

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { SLOW, mockConfig, newKey, post, runCli as runBridle, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster, waitUntil } from './lib/ledgerlib.mjs';

const PUSD = 1_000_000_000_000n; // pico-dollars per dollar
const COST = PUSD / 4n; // one request: 25000 prompt tokens at $10 per million
const LIMIT = PUSD; // $1.00 a day
const CLAIM_TIMEOUT_MS = 3000;

let db;
let mock;
let A;
let B;
let hook;
const keys = { k1: newKey(), k2: newKey() };
const posts = []; // {at, status, body}
let failFor = {}; // id -> how many POSTs to answer 500 first

function startReceiver() {
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      let data = '';
      req.on('data', (d) => (data += d));
      req.on('end', () => {
        let body = null;
        try {
          body = JSON.parse(data);
        } catch {}
        const id = body?.id;
        const fail = (failFor[id] ?? 0) > 0;
        if (fail) failFor[id]--;
        const status = fail ? 500 : 200;
        posts.push({ at: Date.now(), status, body, contentType: req.headers['content-type'], method: req.method });
        res.writeHead(status, { 'content-type': 'text/plain' });
        res.end(fail ? 'nope' : 'ok');
      });
    });
    srv.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${srv.address().port}/hook`, close: () => new Promise((r) => srv.close(r)) }));
  });
}


const gatewayConfig = () =>
  mockConfig(mock.url, {
    models: { pricey: { provider: 'openai', upstream_model: 'gpt-4o-mini', prices: { input: '10', output: '0' } } },
    database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 50 },
    alerts: { webhook_url: hook.url, thresholds: [0.5, 0.75], poll_ms: 200, claim_timeout_ms: CLAIM_TIMEOUT_MS },
    keys: Object.entries(keys).map(([id, k]) => ({ id, sha256: k.sha256 })),
  });

before(async () => {
  db = await startCluster();
  const m = await runBridle(['migrate', '--database-url', db.url]);
  assert.equal(m.code, 0, m.stderr);
  // what the budgets helper will make gateways write from their config:
  // the thresholds and the keys' daily budgets
  await db.query('DELETE FROM bridle_alert_thresholds');
  await db.query('INSERT INTO bridle_alert_thresholds VALUES (5000), (7500)');
  await db.query("INSERT INTO bridle_budgets (scope, scope_id, period, limit_pusd) VALUES ('key', 'k1', 'day', $1), ('key', 'k2', 'day', $1)", [LIMIT.toString()]);
  hook = await startReceiver();
  mock = await startMock();
  A = await startBridle({ config: gatewayConfig(), keyId: 'gw-a' });
  B = await startBridle({ config: gatewayConfig(), keyId: 'gw-b' });
});

after(async () => {
  await A?.stop();
  await B?.stop();
  await mock?.stop();
  await hook?.close();
  await db?.destroy();
});

const spent = async (id) =>
  BigInt((await db.query("SELECT coalesce(sum(spent_pusd), 0)::text AS s FROM bridle_budget_spend WHERE scope = 'key' AND scope_id = $1 AND period = 'day'", [id])).rows[0].s);

/** One $0.25 request for key `id` through gateway g; waits until the ledger has charged it. */
async function spend(g, id) {
  const before = await spent(id);
  const r = await post(
    `${g.baseURL}/chat/completions`,
    { model: 'pricey', messages: [{ role: 'user', content: 'spend [[mock:prompt_tokens=25000,completion_tokens=3]]' }] },
    { authorization: `Bearer ${keys[id].key}` },
  );
  assert.equal(r.status, 200, r.text);
  await waitUntil(async () => (await spent(id)) === before + COST, 10000 * SLOW, `${id}'s spend charged`);
}

const alertRows = async (id) =>
  (
    await db.query(
      `SELECT share_bp, spent_pusd::text, limit_pusd::text, claimed_by, attempts, last_error, delivered_at IS NOT NULL AS delivered,
              to_char(fired_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS fired_at,
              to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS period_start
       FROM bridle_budget_alerts WHERE scope_id = $1 ORDER BY share_bp`,
      [id],
    )
  ).rows;

const logCount = (re) => [A, B].reduce((n, g) => n + (g.proc.stderr.match(new RegExp(re.source, 'g')) ?? []).length, 0);
const pids = () => [A, B].map((g) => g.proc.child.pid);
const claimedByGateway = (c) => pids().some((pid) => new RegExp(`:${pid}:`).test(c));

describe('budget alerts', () => {
  test('each threshold is delivered once, by one of the two gateways, with exact values', async () => {
    await spend(A, 'k1'); // $0.25: below both
    await spend(B, 'k1'); // $0.50: 50 %
    await spend(A, 'k1'); // $0.75: 75 %
    const charged = Date.now();
    await waitUntil(async () => (await alertRows('k1')).filter((r) => r.delivered).length === 2, 10000 * SLOW, 'both alerts delivered');
    await sleep(1500); // several more polls by both gateways: nothing more may arrive
    const got = posts.filter((p) => p.body?.id === 'k1');
    assert.equal(got.length, 2, JSON.stringify(got));
    const rows = await alertRows('k1');
    assert.deepEqual(rows.map((r) => [r.share_bp, r.spent_pusd, r.limit_pusd, r.attempts, r.delivered]), [
      [5000, (2n * COST).toString(), LIMIT.toString(), 1, true],
      [7500, (3n * COST).toString(), LIMIT.toString(), 1, true],
    ]);
    for (const r of rows) assert.ok(claimedByGateway(r.claimed_by), `claimed_by ${r.claimed_by} is one of pids ${pids()}`);
    const start = rows[0].period_start;
    assert.match(start, /T00:00:00Z$/);
    const end = new Date(Date.parse(start) + 86400000).toISOString().replace('.000Z', 'Z');
    got.sort((x, y) => x.body.threshold - y.body.threshold);
    console.log(`# the 75 % alert reached the webhook ${got[1].at - charged} ms after its spend was in the database (poll_ms 200)`);
    for (const [i, [thr, usd]] of [[0.5, 0.5], [0.75, 0.75]].entries()) {
      assert.equal(got[i].status, 200);
      assert.equal(got[i].method, 'POST');
      assert.equal(got[i].contentType, 'application/json');
      const { text, ...body } = got[i].body;
      assert.deepEqual(body, {
        type: 'budget_alert',
        scope: 'key',
        id: 'k1',
        period: 'day',
        period_start: start,
        period_end: end,
        threshold: thr,
        spent_usd: usd,
        limit_usd: 1,
        share: usd,
        fired_at: rows[i].fired_at,
      });
      assert.equal(text, `key "k1" daily budget ${thr * 100}% reached: $${usd.toFixed(2)} of $1.00 (period from ${start}, resets ${end})`);
      // the warn line: exactly once across both gateways' logs
      assert.equal(logCount(new RegExp(` warn budget alert: key "k1" daily budget ${thr * 100}% reached: \\$${usd.toFixed(2)} of \\$1\\.00`)), 1, A.logs() + B.logs());
    }
  });

  test('a webhook answering 500 twice: delivered on the third attempt, attempts and last error recorded', async () => {
    failFor = { k2: 2 };
    await spend(B, 'k2');
    await spend(A, 'k2'); // $0.50: 50 %
    const { ms } = await waitUntil(async () => (await alertRows('k2')).every((r) => r.delivered) && (await alertRows('k2')).length === 1, 15000 * SLOW, 'k2 delivered');
    await sleep(1000);
    const got = posts.filter((p) => p.body?.id === 'k2');
    assert.deepEqual(got.map((p) => p.status), [500, 500, 200]);
    const gaps = got.slice(1).map((p, i) => p.at - got[i].at);
    console.log(`# webhook 500, 500, 200: delivered ${ms} ms after the spend; retries after ${gaps.join(' and ')} ms`);
    // backoff: 1 s then 2 s, halved by jitter at most, capped at claim_timeout / 2
    assert.ok(gaps[0] >= 450 && gaps[1] >= 700, `backoff gaps ${gaps}`);
    for (const p of got) assert.deepEqual([p.body.threshold, p.body.spent_usd, p.body.share], [0.5, 0.5, 0.5]);
    const [row] = await alertRows('k2');
    assert.equal(row.attempts, 3);
    assert.equal(row.last_error, 'the webhook answered HTTP 500');
    assert.ok(claimedByGateway(row.claimed_by), row.claimed_by);
    assert.equal(logCount(/ warn budget alert: key "k2" daily budget 50% reached/), 1, 'logged once, not per attempt');
    assert.doesNotMatch(A.proc.stderr + B.proc.stderr, /\/hook/, 'the webhook URL is never logged');
  });

  test('a webhook that keeps failing: given up after 10 attempts in all, with an error line', async () => {
    failFor = { doomed: 1000 };
    // seven attempts were made before (earlier claims): three are left
    await db.query(
      `INSERT INTO bridle_budget_alerts (scope, scope_id, period, period_start, share_bp, limit_pusd, spent_pusd, attempts)
       VALUES ('key', 'doomed', 'week', bridle_period_start('week', now()), 7500, 1000000000000, 800000000000, 7)`,
    );
    await waitUntil(() => logCount(/ error budget alert NOT delivered after 10 attempts, giving up \(the webhook answered HTTP 500\): key "doomed" weekly budget 75% reached/) === 1, 15000 * SLOW, 'the error line');
    await sleep(1500); // more polls: nobody claims it again
    assert.equal(posts.filter((p) => p.body?.id === 'doomed').length, 3);
    const [row] = await alertRows('doomed');
    assert.deepEqual([row.attempts, row.delivered, row.last_error], [10, false, 'the webhook answered HTTP 500']);
    assert.equal(logCount(/ error budget alert NOT delivered/), 1);
  });

  test('a claim left by a dead gateway is taken over after claim_timeout_ms', async () => {
    const t0 = Date.now();
    await db.query(
      `INSERT INTO bridle_budget_alerts (scope, scope_id, period, period_start, share_bp, limit_pusd, spent_pusd, claimed_by, claimed_at, attempts)
       VALUES ('team', 'ghost', 'month', bridle_period_start('month', now()), 7500, 4000000000000, 3000000000000, 'dead-host:1:0', now(), 1)`,
    );
    const { ms } = await waitUntil(async () => (await alertRows('ghost'))[0].delivered, (CLAIM_TIMEOUT_MS + 5000) * SLOW, 'ghost delivered');
    const got = posts.filter((p) => p.body?.id === 'ghost');
    assert.equal(got.length, 1);
    assert.ok(got[0].at - t0 >= CLAIM_TIMEOUT_MS - 100, `taken over after ${got[0].at - t0} ms, not before the claim timed out`);
    assert.deepEqual([got[0].body.scope, got[0].body.period, got[0].body.threshold, got[0].body.spent_usd, got[0].body.limit_usd, got[0].body.share], ['team', 'month', 0.75, 3, 4, 0.75]);
    assert.match(got[0].body.text, /^team "ghost" monthly budget 75% reached: \$3\.00 of \$4\.00/);
    const [row] = await alertRows('ghost');
    assert.equal(row.attempts, 2);
    assert.ok(claimedByGateway(row.claimed_by), row.claimed_by);
    console.log(`# a dead gateway's claim was taken over and delivered ${ms} ms after it was made (claim_timeout_ms ${CLAIM_TIMEOUT_MS})`);
  });

  test('a webhook without a database: a warning at start, the gateway serves', async () => {
    const g = await startBridle({ config: mockConfig(mock.url, { alerts: { webhook_url: hook.url } }), keyId: 'gw-nodb' });
    try {
      assert.match(g.proc.stderr, / warn alerts\.webhook_url is set but there is no database: budget alerts are fired and delivered through PostgreSQL, so none will be sent/);
      assert.doesNotMatch(g.proc.stderr, /127\.0\.0\.1:\d+\/hook/, 'the webhook URL is never logged');
      const r = await post(`${g.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }, g.auth);
      assert.equal(r.status, 200, r.text);
    } finally {
      await g.stop();
    }
  });
});

describe('bridle cost alert', () => {
  /** Seconds of today (UTC) gone by, by the database's clock. */
  const elapsed = async () => Number((await db.query("SELECT extract(epoch FROM now() - bridle_period_start('day', now()))::float8 AS s")).rows[0].s);

  test('--json: budgets at or above 75 %, values from the database, projection to the end of the day', async () => {
    const e0 = await elapsed();
    const r = await runBridle(['cost', 'alert', '--json', '--database-url', db.url]);
    const e1 = await elapsed();
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout);
    assert.equal(rows.length, 1, r.stdout);
    const [x] = rows;
    const status = (await db.query("SELECT spent_usd::float8 AS s, limit_usd::float8 AS l, share::float8 AS sh FROM bridle_budget_status WHERE scope_id = 'k1'")).rows[0];
    assert.deepEqual([x.scope, x.id, x.period, x.spent_usd, x.limit_usd, x.share], ['key', 'k1', 'day', status.s, status.l, status.sh]);
    assert.deepEqual([x.spent_usd, x.limit_usd, x.share], [0.75, 1, 0.75]);
    // linear: spent / elapsed × the whole day, between the two readings of the clock
    const hi = (0.75 * 86400) / e0;
    const lo = (0.75 * 86400) / e1;
    assert.ok(x.projected_usd >= lo * 0.999 && x.projected_usd <= hi * 1.001, `projected ${x.projected_usd} in [${lo}, ${hi}]`);
    assert.equal(x.spent_pusd, Number(3n * COST));
  });

  test('--threshold filters; the table; an empty result; bad arguments', async () => {
    const all = JSON.parse((await runBridle(['cost', 'alert', '--threshold', '0.4', '--json', '--database-url', db.url])).stdout);
    assert.deepEqual(all.map((x) => [x.id, x.share]), [['k1', 0.75], ['k2', 0.5]]);
    const none = await runBridle(['cost', 'alert', '--threshold', '0.9', '--json', '--database-url', db.url]);
    assert.equal(none.code, 0, none.stderr);
    assert.deepEqual(JSON.parse(none.stdout), []);
    const noneTable = await runBridle(['cost', 'alert', '--threshold', '0.9', '--database-url', db.url]);
    assert.match(noneTable.stdout, /^no budget at or above 90 % of its limit$/m);
    const table = await runBridle(['cost', 'alert', '--threshold', '0.5', '--database-url', db.url]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^key\s+k1\s+day\s+\$0\.750000\s+\$1\.00\s+75\.0 %/m, table.stdout);
    assert.match(table.stdout, /^key\s+k2\s+day\s+\$0\.500000\s+\$1\.00\s+50\.0 %/m, table.stdout);
    for (const bad of ['x', '-1', '11', '']) {
      const r = await runBridle(['cost', 'alert', '--threshold', bad, '--database-url', db.url]);
      assert.equal(r.code, 2, `--threshold "${bad}"`);
      assert.match(r.stderr, /--threshold wants a share of the budget from 0 to 10, like 0\.75/);
    }
  });
});

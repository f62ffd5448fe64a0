// Issue 12: the rollups of migration 0006 equal the raw aggregates they
// replace, whatever path loaded the events and however the rollup step ran.
//
// The property test: several rounds of random events over five days (random
// dimensions including NULLs, costs, tokens, latencies, TTFT, streamed or
// not, errors) loaded by COPY (psql \copy) and by multi-row INSERT; replays
// of events already in through the ledger's dedup path (INSERT ... ON
// CONFLICT DO NOTHING); 4 concurrent `bridle ledger rollup` runs while the
// inserts go on; a partition dropped while some of its events are still
// pending. After each round, for random ranges and every max_grain:
// bridle_usage == raw aggregates per dimension group (exact integers); the
// rollup rows of every grain == the raw aggregates per (bucket, dims); the
// dropped day's rollups == what its raw events were; histograms per idx ==
// raw counts; bridle_hist_quantile within 9 % of percentile_cont; bridle_top
// == the raw top N. End to end: requests through a running bridle land in
// usage_rollup by the gateway's own periodic step, nothing left pending.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { BUILD, SLOW, get, mockConfig, post, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster, waitUntil } from './lib/ledgerlib.mjs';

const BRIDLE = path.join(BUILD, 'bridle');
let pg;
let mock;
let gw;

function psqlBin() {
  if (process.env.PG_BIN && fs.existsSync(path.join(process.env.PG_BIN, 'psql'))) return path.join(process.env.PG_BIN, 'psql');
  const base = '/usr/lib/postgresql';
  const v = fs.existsSync(base) ? fs.readdirSync(base).filter((d) => /^\d+$/.test(d)).sort((a, b) => b - a) : [];
  for (const d of v) if (fs.existsSync(path.join(base, d, 'bin', 'psql'))) return path.join(base, d, 'bin', 'psql');
  return 'psql';
}

// a seeded PRNG: a failure can be replayed with ROLLUP_SEED
const SEED = Number(process.env.ROLLUP_SEED) || Date.now() % 1e9;
let s = SEED;
const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
const pick = (a) => a[Math.floor(rnd() * a.length)];
const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));

const COLS = [
  'event_id', 'ts', 'key_id', 'team', 'agent', 'task', 'feature', 'provider', 'model', 'tier', 'streamed', 'status',
  'error_class', 'attempts', 'input_tokens', 'cache_read_tokens', 'cache_write_tokens', 'output_tokens',
  'reasoning_tokens', 'usage_exact', 'cost_pusd', 'baseline_cost_pusd', 'latency_us', 'ttft_us', 'upstream_us', 'cache_hit',
];
let nextId = 0;
const DAY = 86400000;
const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
const firstDay = today - 4 * DAY; // events from here to now; firstDay is dropped in round 2
let liveFrom = firstDay; // the earliest day still in usage_events

function randomEvent() {
  const streamed = rnd() < 0.5;
  const err = rnd() < 0.1;
  const latency = Math.round(Math.exp(Math.log(800) + rnd() * Math.log(20000))); // 0.8 ms .. 16 s, log-uniform
  const ts = liveFrom + Math.floor(rnd() * (Date.now() - liveFrom));
  return {
    event_id: `ev-${SEED}-${nextId++}`,
    ts: new Date(ts).toISOString(),
    key_id: pick(['k1', 'k2', 'k3', null]),
    team: pick(['alpha', 'beta', null]),
    agent: pick(['a', null, null]),
    task: pick(['classify', 'chat', null]),
    feature: pick(['f', null]),
    provider: pick(['openai', 'anthropic']),
    model: pick(['gpt-4o-mini', 'claude-haiku-4-5', null]),
    tier: pick(['budget', 'heavy', null]),
    streamed,
    status: err ? pick([429, 500, 502]) : 200,
    error_class: err ? pick(['rate_limited', 'upstream_5xx', null]) : null,
    attempts: int(1, 3),
    input_tokens: int(0, 4000),
    cache_read_tokens: int(0, 500),
    cache_write_tokens: int(0, 100),
    output_tokens: int(0, 2000),
    reasoning_tokens: int(0, 300),
    usage_exact: rnd() < 0.9,
    // ties on cost on purpose (the top's tie-break), and big values (sums past 2^53)
    cost_pusd: rnd() < 0.2 ? 1000000 : int(0, 2 ** 30) * 4096,
    baseline_cost_pusd: int(0, 2 ** 30) * 8192,
    latency_us: latency,
    ttft_us: streamed ? (rnd() < 0.1 ? null : Math.floor(latency * rnd())) : null,
    upstream_us: int(0, latency),
    cache_hit: rnd() < 0.05,
  };
}

const tsv = (v) => (v === null || v === undefined ? '\\N' : typeof v === 'boolean' ? (v ? 't' : 'f') : String(v));

function copyIn(events) {
  const f = path.join(os.tmpdir(), `rollup-${process.pid}-${nextId}.tsv`);
  fs.writeFileSync(f, events.map((e) => COLS.map((c) => tsv(e[c])).join('\t')).join('\n') + '\n');
  const r = spawnSync(psqlBin(), [pg.url, '-v', 'ON_ERROR_STOP=1', '-c', `\\copy usage_events (${COLS.join(',')}) FROM '${f}'`], { encoding: 'utf8' });
  fs.rmSync(f, { force: true });
  assert.equal(r.status, 0, `COPY failed: ${r.stderr}`);
}

// a multi-row INSERT; dedup: the ledger's 23505 path (replays are not inserted)
async function insertRows(events, dedup = false, url = pg.url) {
  const vals = [];
  const params = [];
  for (const e of events) {
    vals.push(`(${COLS.map((c) => `$${params.push(e[c])}`).join(',')})`);
  }
  await pg.query(`INSERT INTO usage_events (${COLS.join(',')}) VALUES ${vals.join(',')}${dedup ? ' ON CONFLICT DO NOTHING' : ''}`, params, url);
}

const inserted = []; // every event really in (for replays)
async function load(n) {
  const evs = Array.from({ length: n }, randomEvent);
  const half = Math.floor(n / 2);
  copyIn(evs.slice(0, half));
  for (let i = half; i < n; i += 200) await insertRows(evs.slice(i, Math.min(n, i + 200)));
  inserted.push(...evs);
}

async function replay(n) {
  // old events again (some from the dropped day: no partition, so only live ones), with a few new
  const live = inserted.filter((e) => Date.parse(e.ts) >= liveFrom);
  const evs = Array.from({ length: n }, () => pick(live));
  const fresh = Array.from({ length: Math.ceil(n / 10) }, randomEvent);
  const before = (await pg.query('SELECT count(*)::int AS n FROM usage_events')).rows[0].n;
  for (let i = 0; i < evs.length; i += 150) await insertRows([...evs.slice(i, i + 150), ...fresh.splice(0, 15)], true);
  inserted.push(...fresh);
  return before;
}

function rollupCli(limit) {
  return new Promise((resolve) => {
    const p = spawn(BRIDLE, ['ledger', 'rollup', '--database-url', pg.url, '--limit', String(limit), '--json']);
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

const DIMS = ['key_id', 'team', 'model', 'provider', 'agent', 'task', 'feature', 'tier', 'status', 'error_class'];
const DIM_SQL = DIMS.map((d) => (d === 'status' ? 'status' : `coalesce(${d}, '') AS ${d}`)).join(', ');
const MEASURES = {
  requests: 'count(*)',
  errors: "count(*) FILTER (WHERE coalesce(error_class, '') <> '' OR status >= 400)",
  retries: 'sum(greatest(attempts - 1, 0))',
  cache_hits: 'count(*) FILTER (WHERE cache_hit)',
  streamed: 'count(*) FILTER (WHERE streamed)',
  estimated: 'count(*) FILTER (WHERE NOT usage_exact)',
  input_tokens: 'sum(input_tokens)',
  cache_read_tokens: 'sum(cache_read_tokens)',
  cache_write_tokens: 'sum(cache_write_tokens)',
  output_tokens: 'sum(output_tokens)',
  reasoning_tokens: 'sum(reasoning_tokens)',
  cost_pusd: 'sum(cost_pusd)',
  baseline_cost_pusd: 'sum(baseline_cost_pusd)',
  latency_us_sum: 'sum(latency_us)',
  ttft_us_sum: 'coalesce(sum(ttft_us) FILTER (WHERE streamed AND ttft_us >= 0), 0)',
  ttft_count: 'count(*) FILTER (WHERE streamed AND ttft_us >= 0)',
  upstream_us_sum: 'sum(upstream_us)',
};
const RAW_M = Object.entries(MEASURES).map(([k, v]) => `(${v})::bigint AS ${k}`).join(', ');
const SUM_M = Object.keys(MEASURES).map((k) => `sum(${k})::bigint AS ${k}`).join(', ');
const COL_M = Object.keys(MEASURES).join(', ');
const DIM_NAMES = DIMS.join(', ');
const BUCKET = { '5m': 'bridle_bucket_5m(ts)', '1h': "date_trunc('hour', ts, 'UTC')", '1d': "date_trunc('day', ts, 'UTC')" };

// rows in one set and not the other (both directions), with the count of rows compared
async function diff(a, b, params = []) {
  const r = await pg.query(
    `WITH a AS (${a}), b AS (${b}) SELECT (SELECT count(*) FROM a)::int AS n, ` +
      `(SELECT json_agg(x) FROM ((SELECT 'rollup' AS side, * FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b) y) ` +
      `UNION ALL (SELECT 'raw', * FROM (SELECT * FROM b EXCEPT ALL SELECT * FROM a) z) LIMIT 5) x) AS bad`,
    params,
  );
  return r.rows[0];
}

const iso = (ms) => new Date(ms).toISOString();
function randomRange() {
  const lo = liveFrom + Math.floor(rnd() * (Date.now() + 3600000 - liveFrom));
  const len = pick([
    () => int(1, 299) * 1000, // shorter than 5 minutes
    () => int(1, 12) * 300000, // whole 5-minute buckets (aligned or not)
    () => int(1, 48) * 3600000 + int(0, 3599) * 1000,
    () => int(1, 4) * DAY + int(0, 86399) * 1000,
  ])();
  let from = lo;
  const align = rnd();
  if (align < 0.25) from = Math.floor(lo / 300000) * 300000;
  else if (align < 0.4) from = Math.floor(lo / 3600000) * 3600000;
  else if (align < 0.5) from = Math.floor(lo / DAY) * DAY;
  const to = rnd() < 0.2 ? Math.floor((from + len) / 3600000) * 3600000 : from + len;
  return [Math.max(from, liveFrom), Math.max(to, liveFrom + 1)];
}

async function checkUsage(ranges) {
  let nonEmpty = 0;
  for (const [from, to] of ranges) {
    for (const g of ['5 minutes', '1 hour', '1 day', '1 minute']) {
      const d = await diff(
        `SELECT ${DIM_NAMES}, ${SUM_M} FROM bridle_usage($1, $2, $3::interval) GROUP BY ${DIM_NAMES}`,
        `SELECT ${DIM_SQL}, ${RAW_M} FROM usage_events WHERE ts >= $1 AND ts < $2 GROUP BY ${DIM_NAMES}`,
        [iso(from), iso(to), g],
      );
      assert.equal(d.bad, null, `bridle_usage(${iso(from)}, ${iso(to)}, ${g}) != raw (seed ${SEED}): ${JSON.stringify(d.bad)}`);
      if (d.n) nonEmpty++;
    }
  }
  assert.ok(nonEmpty >= ranges.length, `too few ranges held events (${nonEmpty})`);
}

async function checkGrains() {
  for (const g of ['5m', '1h', '1d']) {
    const d = await diff(
      `SELECT bucket, ${DIM_NAMES}, ${COL_M} FROM usage_rollup WHERE grain = '${g}' AND bucket >= $1`,
      `SELECT ${BUCKET[g]} AS bucket, ${DIM_SQL}, ${RAW_M} FROM usage_events WHERE ts >= $1 GROUP BY 1, ${DIM_NAMES}`,
      [iso(liveFrom)],
    );
    assert.equal(d.bad, null, `usage_rollup ${g} != raw (seed ${SEED}): ${JSON.stringify(d.bad)}`);
    assert.ok(d.n > 0, `no ${g} rollup rows`);
    const h = await diff(
      `SELECT bucket, metric, model, provider, idx, n FROM usage_rollup_hist WHERE grain = '${g}' AND bucket >= $1`,
      `SELECT ${BUCKET[g]} AS bucket, m.metric, coalesce(model, '') AS model, coalesce(provider, '') AS provider, ` +
        `bridle_hist_idx(m.us) AS idx, count(*)::bigint AS n FROM usage_events CROSS JOIN LATERAL ` +
        `(VALUES ('latency', latency_us), ('ttft', CASE WHEN streamed AND ttft_us >= 0 THEN ttft_us END)) m(metric, us) ` +
        `WHERE ts >= $1 AND m.us IS NOT NULL GROUP BY 1, 2, 3, 4, 5`,
      [iso(liveFrom)],
    );
    assert.equal(h.bad, null, `usage_rollup_hist ${g} != raw (seed ${SEED}): ${JSON.stringify(h.bad)}`);
  }
}

async function checkHist(ranges) {
  for (const [from, to] of ranges) {
    const d = await diff(
      'SELECT metric, model, idx, sum(n)::bigint FROM bridle_usage_hist($1, $2) GROUP BY 1, 2, 3',
      `SELECT m.metric, coalesce(model, ''), bridle_hist_idx(m.us), count(*)::bigint FROM usage_events CROSS JOIN LATERAL ` +
        `(VALUES ('latency', latency_us), ('ttft', CASE WHEN streamed AND ttft_us >= 0 THEN ttft_us END)) m(metric, us) ` +
        'WHERE ts >= $1 AND ts < $2 AND m.us IS NOT NULL GROUP BY 1, 2, 3',
      [iso(from), iso(to)],
    );
    assert.equal(d.bad, null, `bridle_usage_hist(${iso(from)}, ${iso(to)}) != raw (seed ${SEED}): ${JSON.stringify(d.bad)}`);
  }
  // percentiles from the histograms, over everything still raw
  const r = await pg.query(
    `WITH h AS (SELECT idx, sum(n)::bigint AS n FROM bridle_usage_hist($1, now() + interval '1 hour') WHERE metric = 'latency' GROUP BY idx) ` +
      `SELECT q, (SELECT bridle_hist_quantile(q, idx, n) FROM h) AS est, ` +
      `(SELECT percentile_cont(q) WITHIN GROUP (ORDER BY latency_us / 1000.0) FROM usage_events WHERE ts >= $1) AS exact ` +
      'FROM unnest(ARRAY[0.5, 0.9, 0.95, 0.99]::float8[]) q',
    [iso(liveFrom)],
  );
  for (const { q, est, exact } of r.rows) {
    assert.ok(Math.abs(est - exact) / exact <= 0.09, `p${q * 100}: histogram ${est} ms vs exact ${exact} ms (seed ${SEED})`);
  }
}

async function checkTop(ranges) {
  for (const [from, to] of ranges) {
    const n = pick([1, 10, 100]);
    const top = await pg.query('SELECT event_id FROM bridle_top($1, $2, $3)', [iso(from), iso(to), n]);
    const raw = await pg.query(
      'SELECT event_id FROM usage_events WHERE ts >= $1 AND ts < $2 ORDER BY cost_pusd DESC, ts DESC, event_id LIMIT $3',
      [iso(from), iso(to), n],
    );
    assert.deepEqual(top.rows.map((x) => x.event_id), raw.rows.map((x) => x.event_id), `bridle_top(${iso(from)}, ${iso(to)}, ${n}) (seed ${SEED})`);
  }
  const over = await pg.query('SELECT count(*)::int AS n FROM (SELECT hour FROM usage_top GROUP BY hour HAVING count(*) > 100) x');
  assert.equal(over.rows[0].n, 0, 'usage_top holds at most 100 events per hour once trimmed');
}

const pendingRows = async () =>
  (await pg.query('SELECT (SELECT count(*) FROM usage_rollup_pending) + (SELECT count(*) FROM usage_rollup_hist_pending) AS n')).rows[0].n | 0;

before(async () => {
  pg = await startCluster();
  const m = spawnSync(BRIDLE, ['migrate', '--database-url', pg.url], { encoding: 'utf8' });
  assert.equal(m.status, 0, m.stderr);
  await pg.query('SELECT bridle_ensure_partition((now() AT TIME ZONE \'UTC\')::date - d) FROM generate_series(0, 5) d');
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await pg?.destroy();
});

test(`property: rollups == raw aggregates after inserts, replays, concurrent rollups and a partition drop (seed ${SEED})`, async () => {
  const dropDay = new Date(firstDay).toISOString().slice(0, 10).replaceAll('-', '');
  for (let round = 1; round <= 3; round++) {
    await load(1500);
    // readers are exact before any rollup ran (pending rows are read too)
    let ranges = Array.from({ length: 6 }, randomRange);
    ranges.push([liveFrom, Date.now() + 1000]);
    await checkUsage(ranges.slice(0, 3));

    // replays through the dedup path: only the fresh ones are new
    const before = await replay(600);
    const afterN = (await pg.query('SELECT count(*)::int AS n FROM usage_events')).rows[0].n;
    assert.equal(afterN, before + 60, 'replayed events are not inserted twice');

    // 4 concurrent rollup runs (small batches: many interleaved calls) while inserts go on
    const runs = Promise.all([rollupCli(37), rollupCli(53), rollupCli(101), rollupCli(1000)]);
    await load(900);
    await replay(150);
    const res = await runs;
    for (const r of res) {
      assert.equal(r.code, 0, `bridle ledger rollup failed: ${r.err}`);
      const j = JSON.parse(r.out);
      assert.ok(j.calls >= 1 && j.moved >= 0, r.out);
    }
    assert.ok(res.reduce((a, r) => a + JSON.parse(r.out).moved, 0) > 0, 'the concurrent runs moved pending rows');
    await checkUsage(ranges); // partly rolled up, partly pending

    if (round === 2) {
      // drop the oldest day while some of its events are still pending
      await insertRows(Array.from({ length: 50 }, () => ({ ...randomEvent(), ts: new Date(firstDay + int(0, DAY - 1)).toISOString() })));
      assert.ok((await pendingRows()) > 0);
      const snap = (g) => `SELECT '${g}' AS grain, ${BUCKET[g]} AS bucket, ${DIM_SQL}, ${RAW_M} FROM usage_events WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2, ${DIM_NAMES}`;
      await pg.query(`CREATE TABLE dropped_day AS ${snap('5m')} UNION ALL ${snap('1h')} UNION ALL ${snap('1d')}`.replaceAll('$1', `'${iso(firstDay)}'`).replaceAll('$2', `'${iso(firstDay + DAY)}'`));
      await pg.query(`DROP TABLE usage_events_p${dropDay}`);
      liveFrom = firstDay + DAY;
      // the raw side of a comparison has no events of the dropped day any more
      ranges = ranges.map(([f, t]) => [Math.max(f, liveFrom), Math.max(t, liveFrom + 1)]);
    }

    const last = await rollupCli(100000);
    assert.equal(last.code, 0, last.err);
    assert.equal(await pendingRows(), 0, 'nothing pending after a rollup run');
    const again = await rollupCli(100000);
    assert.equal(JSON.parse(again.out).moved, 0, 'a second run moves nothing (idempotent)');

    await checkGrains();
    await checkUsage(ranges);
    await checkHist(ranges.slice(0, 4));
    await checkTop(ranges);
    if (round >= 2) {
      const d = await diff(
        `SELECT grain, bucket, ${DIM_NAMES}, ${COL_M} FROM usage_rollup WHERE bucket >= $1 AND bucket < $2`,
        'SELECT * FROM dropped_day',
        [iso(firstDay), iso(firstDay + DAY)],
      );
      assert.equal(d.bad, null, `the dropped day's rollups != its raw events (seed ${SEED}): ${JSON.stringify(d.bad)}`);
      assert.ok(d.n > 0);
    }
  }
  // retention: 5-minute rows older than 2 days go, the others stay
  const n5 = (await pg.query("SELECT count(*) FILTER (WHERE grain = '5m' AND bucket < date_trunc('day', now(), 'UTC') - interval '2 days')::int AS old, count(*) FILTER (WHERE grain = '1d')::int AS d FROM usage_rollup")).rows[0];
  assert.ok(n5.old > 0);
  await pg.query('SELECT bridle_rollup_retention(2, 0, 0)');
  const n5b = (await pg.query("SELECT count(*) FILTER (WHERE grain = '5m' AND bucket < date_trunc('day', now(), 'UTC') - interval '2 days')::int AS old, count(*) FILTER (WHERE grain = '1d')::int AS d FROM usage_rollup")).rows[0];
  assert.equal(n5b.old, 0);
  assert.equal(n5b.d, n5.d);
});

test('bridle_cover: exact, disjoint pieces for short, aligned, month-crossing ranges and every max_grain', async () => {
  const cases = [
    ['2026-01-31 23:58:00+00', '2026-02-01 00:03:00+00', '1 day'],
    ['2026-01-31 00:00:00+00', '2026-02-02 00:00:00+00', '1 day'],
    ['2026-01-30 13:07:11+00', '2026-03-02 04:59:59+00', '1 day'],
    ['2026-01-30 13:07:11+00', '2026-03-02 04:59:59+00', '1 hour'],
    ['2026-01-30 13:07:11+00', '2026-02-02 04:59:59+00', '5 minutes'],
    ['2026-01-30 13:05:00+00', '2026-01-30 13:10:00+00', '1 day'],
    ['2026-01-30 13:05:00+00', '2026-01-30 13:06:00+00', '1 day'],
    ['2026-01-30 13:05:00+00', '2026-01-30 14:05:00+00', '1 minute'],
  ];
  for (const [from, to, g] of cases) {
    const r = await pg.query('SELECT grain, lo, hi FROM bridle_cover($1, $2, $3::interval) ORDER BY lo', [from, to, g]);
    assert.ok(r.rows.length > 0);
    assert.equal(r.rows[0].lo.getTime(), Date.parse(from.replace(' ', 'T').replace('+00', 'Z')), `${from} ${to} ${g}`);
    for (let i = 1; i < r.rows.length; i++) assert.equal(r.rows[i].lo.getTime(), r.rows[i - 1].hi.getTime(), 'contiguous');
    assert.equal(r.rows.at(-1).hi.getTime(), Date.parse(to.replace(' ', 'T').replace('+00', 'Z')));
    const step = { '1d': DAY, '1h': 3600000, '5m': 300000 };
    const max = { '1 day': DAY, '1 hour': 3600000, '5 minutes': 300000, '1 minute': 60000 }[g];
    for (const p of r.rows) {
      if (p.grain === 'raw') {
        if (max >= 300000) assert.ok(p.hi - p.lo < 2 * 300000, 'raw pieces only at the edges');
        continue;
      }
      assert.ok(step[p.grain] <= max, `${p.grain} within max_grain ${g}`);
      assert.equal(p.lo.getTime() % step[p.grain], 0, 'aligned');
      assert.equal(p.hi.getTime() % step[p.grain], 0, 'aligned');
    }
  }
  const empty = await pg.query("SELECT count(*)::int AS n FROM bridle_cover('2026-01-01', '2026-01-01', '1 day')");
  assert.equal(empty.rows[0].n, 0);
});

test("the gateway's periodic rollup step moves what requests recorded; nothing left pending", async () => {
  await pg.query('CREATE DATABASE e2e', [], pg.adminUrl);
  const url = pg.urlFor('e2e');
  mock = await startMock();
  const config = mockConfig(mock.url, {
    database: { url, spool_dir: path.join(tmpDir('bridle-rollup-'), 'spool'), rollup_interval_ms: 1500, rollup_batch: 100 },
  });
  gw = await startBridle({ config });
  const N = 12;
  for (let i = 0; i < N; i++) {
    const r = await post(`${gw.baseURL}/chat/completions`, { model: 'gpt-4o-mini', max_tokens: 8, messages: [{ role: 'user', content: `hi ${i}` }] }, gw.auth);
    assert.equal(r.status, 200, r.text);
  }
  const q = (sql) => pg.query(sql, [], url);
  await waitUntil(async () => (await q('SELECT count(*)::int AS n FROM usage_events')).rows[0].n === N, 10000 * SLOW, 'the ledger wrote every event');
  await waitUntil(
    async () => (await q("SELECT coalesce(sum(requests), 0)::int AS n FROM usage_rollup WHERE grain = '1d'")).rows[0].n === N,
    10000 * SLOW,
    'the gateway rolled them up',
  );
  const p = (await q('SELECT (SELECT count(*) FROM usage_rollup_pending) + (SELECT count(*) FROM usage_rollup_hist_pending) AS n')).rows[0];
  assert.equal(Number(p.n), 0, 'nothing left pending');
  const cmp = (await q("SELECT (SELECT sum(cost_pusd) FROM usage_events)::text AS raw, (SELECT sum(cost_pusd) FROM usage_rollup WHERE grain = '5m')::text AS r5, (SELECT sum(cost_pusd) FROM usage_rollup WHERE grain = '1h')::text AS r1")).rows[0];
  assert.ok(BigInt(cmp.raw) > 0n);
  assert.equal(cmp.r5, cmp.raw);
  assert.equal(cmp.r1, cmp.raw);
  const h = (await get(`${gw.baseURL}/bridle/health`, gw.auth)).json.rollup;
  assert.ok(h && h.runs > 0 && h.moved > 0 && h.failures === 0 && h.retention_runs >= 1, JSON.stringify(h));
  // a backlog (a bulk import): the gateway calls again at once while a call moves a full
  // batch, so 2000 events in ~1000 pending rows (10+ batches of 100) are in well before
  // 10 intervals of 1.5 s
  await q("SELECT bridle_ensure_partition((now() AT TIME ZONE 'UTC')::date)");
  const runs0 = h.runs;
  const sinceMidnight = Date.now() - today;
  const bulk = Array.from({ length: 2000 }, () => ({ ...randomEvent(), ts: new Date(today + Math.floor(rnd() * sinceMidnight)).toISOString() }));
  for (let i = 0; i < bulk.length; i += 250) await insertRows(bulk.slice(i, i + 250), false, url);
  const pend = Number((await q('SELECT count(*) AS n FROM usage_rollup_pending')).rows[0].n);
  assert.ok(pend > 500, `a backlog of ${pend} pending rows`);
  const t0 = Date.now();
  await waitUntil(async () => Number((await q('SELECT count(*) AS n FROM usage_rollup_pending')).rows[0].n) === 0, 5000 * SLOW, 'the gateway caught up');
  const took = Date.now() - t0;
  const h2 = (await get(`${gw.baseURL}/bridle/health`, gw.auth)).json.rollup;
  assert.ok(h2.runs - runs0 >= Math.floor(pend / 100), `${h2.runs - runs0} calls for ${pend} pending rows`);
  assert.ok(took < 5000 * SLOW, `caught up in ${took} ms`);
  const tot = (await q("SELECT (SELECT count(*) FROM usage_events)::int AS raw, (SELECT sum(requests) FROM usage_rollup WHERE grain = '1d')::int AS r")).rows[0];
  assert.equal(tot.r, tot.raw);
  assert.equal(tot.raw, N + bulk.length);
  // the CLI agrees: nothing pending
  const st = spawnSync(BRIDLE, ['ledger', 'status', '--database-url', url, '--json'], { encoding: 'utf8' });
  assert.equal(st.status, 0, st.stderr);
  const js = JSON.parse(st.stdout);
  assert.equal(js.pending, 0);
  assert.ok(js.rollup_rows['1d'] >= 1);
});

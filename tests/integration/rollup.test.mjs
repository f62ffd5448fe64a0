// Issue 12: the rollups of migration 0008 (usage_rollup_ops, usage_rollup_attr,
// usage_rollup_hist, usage_top) equal the raw aggregates they replace,
// whatever path loaded the events and however the rollup step ran.
//
// The property test: several rounds of random events over five days (random
// dimensions including NULLs, costs, tokens, latencies, TTFT, streamed or
// not, errors) loaded by COPY (psql \copy) and by multi-row INSERT, and
// a dense hour (over 100 events: its top 100 gets a floor); replays of
// events already in through the ledger's dedup path (INSERT ... ON CONFLICT
// DO NOTHING); 4 concurrent `bridle ledger rollup` runs while the inserts
// go on; a partition dropped while some of its events are still pending.
// After each round, for random ranges and every max_grain (the readers
// return pieces: summed here): bridle_usage == raw aggregates per ops
// dimensions and UTC day, bridle_usage_by(dim) == raw aggregates per value
// for all six attribution dimensions (exact integers); the rollup rows of
// every grain == the raw aggregates per (bucket, dims) for the ops cube and
// every attribution dimension; the dropped day's rollups == what its raw
// events were; histograms per idx == raw counts; quantiles within 9 % of
// percentile_cont; bridle_top == the raw top N; usage_top_floor never above
// its hour's true 100th cost, and the capture skips events below it. The
// upgrade: a ledger at 0007 rolled up by 0006 and migrated to 0008 holds
// the same aggregates. End to end: requests through a running bridle land
// in the rollups by the gateway's own periodic step, nothing left pending.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { BUILD, ROOT, SLOW, get, mockConfig, post, startBridle, startMock, tmpDir } from './lib/harness.mjs';
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
  'event_id', 'ts', 'key_id', 'team', 'agent', 'task', 'feature', 'requested_model', 'provider', 'model', 'tier', 'streamed', 'status',
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
    requested_model: pick(['gpt-4o', 'gpt-4o-mini', 'auto', null]),
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

function copyIn(events, url = pg.url) {
  const f = path.join(os.tmpdir(), `rollup-${process.pid}-${nextId}.tsv`);
  fs.writeFileSync(f, events.map((e) => COLS.map((c) => tsv(e[c])).join('\t')).join('\n') + '\n');
  const r = spawnSync(psqlBin(), [url, '-v', 'ON_ERROR_STOP=1', '-c', `\\copy usage_events (${COLS.join(',')}) FROM '${f}'`], { encoding: 'utf8' });
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
async function load(n, url = pg.url, make = randomEvent) {
  const evs = Array.from({ length: n }, make);
  const half = Math.floor(n / 2);
  copyIn(evs.slice(0, half), url);
  for (let i = half; i < n; i += 200) await insertRows(evs.slice(i, Math.min(n, i + 200)), false, url);
  if (url === pg.url) inserted.push(...evs);
}

// An hour with more than 100 events (its kept top 100 gets a floor, and
// later statements of that hour only rank the events at or above it).
const HOUR = 3600000;
const denseHour = today - 2 * DAY + 5 * HOUR;
const denseEvent = () => ({ ...randomEvent(), ts: new Date(denseHour + Math.floor(rnd() * HOUR)).toISOString() });

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

// the ops cube's dimensions, and the attribution dimensions (dim -> column)
const OPS = ['requested_model', 'model', 'provider', 'status', 'error_class'];
const opsSql = (dims) => dims.map((d) => (d === 'status' ? 'status' : `coalesce(${d}, '') AS ${d}`)).join(', ');
const OPS_SQL = opsSql(OPS);
const OPS_NAMES = OPS.join(', ');
const ATTR = { key: 'key_id', team: 'team', agent: 'agent', task: 'task', feature: 'feature', tier: 'tier' };
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
const BUCKET = { '5m': 'bridle_bucket_5m(ts)', '1h': "date_trunc('hour', ts, 'UTC')", '1d': "date_trunc('day', ts, 'UTC')" };

// rows in one set and not the other (both directions), with the count of rows compared
async function diff(a, b, params = [], url = pg.url) {
  const r = await pg.query(
    `WITH a AS (${a}), b AS (${b}) SELECT (SELECT count(*) FROM a)::int AS n, ` +
      `(SELECT json_agg(x) FROM ((SELECT 'rollup' AS side, * FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b) y) ` +
      `UNION ALL (SELECT 'raw', * FROM (SELECT * FROM b EXCEPT ALL SELECT * FROM a) z) LIMIT 5) x) AS bad`,
    params,
    url,
  );
  return r.rows[0];
}

const iso = (ms) => new Date(ms).toISOString();
// A range that starts at or before a loaded event still in the table, so no
// range is empty (uniform starts up to an hour ahead could all miss the
// events, and checkUsage's guard then failed on some seeds).
function randomRange() {
  const live = inserted.filter((e) => Date.parse(e.ts) >= liveFrom);
  const lo = live.length ? Date.parse(pick(live).ts) : liveFrom + Math.floor(rnd() * (Date.now() + 3600000 - liveFrom));
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
  return [Math.max(from, liveFrom), Math.max(to, lo + 1)];
}

// The readers over [from, to) for every max_grain, pieces summed: the ops
// cube per UTC day (every piece lies inside one day), and each attribution
// dimension per value. ops: the ops dimensions compared (the upgrade test
// leaves requested_model out: 0006 did not keep it).
async function checkUsage(ranges, { url = pg.url, ops = OPS } = {}) {
  let nonEmpty = 0;
  const names = ops.join(', ');
  for (const [from, to] of ranges) {
    for (const g of ['5 minutes', '1 hour', '1 day', '1 minute']) {
      const params = [iso(from), iso(to), g];
      const d = await diff(
        `SELECT date_trunc('day', bucket, 'UTC') AS day, ${names}, ${SUM_M} FROM bridle_usage($1, $2, $3::interval) GROUP BY 1, ${names}`,
        `SELECT date_trunc('day', ts, 'UTC') AS day, ${opsSql(ops)}, ${RAW_M} FROM usage_events WHERE ts >= $1 AND ts < $2 AND $3::interval IS NOT NULL GROUP BY 1, ${names}`,
        params,
        url,
      );
      assert.equal(d.bad, null, `bridle_usage(${iso(from)}, ${iso(to)}, ${g}) != raw (seed ${SEED}): ${JSON.stringify(d.bad)}`);
      if (d.n) nonEmpty++;
      for (const [dim, col] of Object.entries(ATTR)) {
        const a = await diff(
          `SELECT value, ${SUM_M} FROM bridle_usage_by('${dim}', $1, $2, $3::interval) GROUP BY value`,
          `SELECT coalesce(${col}, '') AS value, ${RAW_M} FROM usage_events WHERE ts >= $1 AND ts < $2 AND $3::interval IS NOT NULL GROUP BY 1`,
          params,
          url,
        );
        assert.equal(a.bad, null, `bridle_usage_by('${dim}', ${iso(from)}, ${iso(to)}, ${g}) != raw (seed ${SEED}): ${JSON.stringify(a.bad)}`);
        assert.equal(a.n > 0, d.n > 0, `bridle_usage_by('${dim}') has rows where bridle_usage has`);
        // the two values that cost most, and only their rows (the index path of "top n + (other)");
        // one grain: the cover is the same code for every reader, checked above
        if (g !== '1 hour') continue;
        const top2 = `SELECT coalesce(${col}, '') AS value FROM usage_events WHERE ts >= $1 AND ts < $2 GROUP BY 1 ORDER BY sum(cost_pusd) DESC, 1 LIMIT 2`;
        const v = await diff(
          `SELECT value, ${SUM_M} FROM bridle_usage_by_values('${dim}', bridle_top_values('${dim}', $1, $2, 2), $1, $2, $3::interval) GROUP BY value`,
          `SELECT coalesce(${col}, '') AS value, ${RAW_M} FROM usage_events WHERE ts >= $1 AND ts < $2 AND $3::interval IS NOT NULL AND coalesce(${col}, '') IN (${top2}) GROUP BY 1`,
          params,
          url,
        );
        assert.equal(v.bad, null, `bridle_usage_by_values('${dim}', top 2, ${iso(from)}, ${iso(to)}, ${g}) != raw (seed ${SEED}): ${JSON.stringify(v.bad)}`);
        assert.equal(v.n > 0, d.n > 0, `bridle_usage_by_values('${dim}', top 2) has rows where bridle_usage has`);
      }
    }
  }
  assert.ok(nonEmpty >= ranges.length, `too few ranges held events (${nonEmpty})`);
}

const HIST_RAW =
  "m.metric, bridle_hist_idx(m.us) AS idx, count(*)::bigint AS n FROM usage_events CROSS JOIN LATERAL " +
  "(VALUES ('latency', latency_us), ('ttft', CASE WHEN streamed AND ttft_us >= 0 THEN ttft_us END)) m(metric, us)";

// Every rollup row of every grain from `from` on == the raw aggregate of its
// (bucket, dims): the ops cube, each attribution dimension, the histograms.
async function checkGrains({ url = pg.url, from = liveFrom, ops = OPS } = {}) {
  const names = ops.join(', ');
  for (const g of ['5m', '1h', '1d']) {
    const d = await diff(
      `SELECT bucket, ${names}, ${SUM_M} FROM usage_rollup_ops WHERE grain = '${g}' AND bucket >= $1 GROUP BY bucket, ${names}`,
      `SELECT ${BUCKET[g]} AS bucket, ${opsSql(ops)}, ${RAW_M} FROM usage_events WHERE ts >= $1 GROUP BY 1, ${names}`,
      [iso(from)],
      url,
    );
    assert.equal(d.bad, null, `usage_rollup_ops ${g} != raw (seed ${SEED}): ${JSON.stringify(d.bad)}`);
    assert.ok(d.n > 0, `no ${g} ops rows`);
    for (const [dim, col] of Object.entries(ATTR)) {
      const a = await diff(
        `SELECT bucket, value, ${COL_M} FROM usage_rollup_attr WHERE grain = '${g}' AND dim = '${dim}' AND bucket >= $1`,
        `SELECT ${BUCKET[g]} AS bucket, coalesce(${col}, '') AS value, ${RAW_M} FROM usage_events WHERE ts >= $1 GROUP BY 1, 2`,
        [iso(from)],
        url,
      );
      assert.equal(a.bad, null, `usage_rollup_attr ${g} ${dim} != raw (seed ${SEED}): ${JSON.stringify(a.bad)}`);
      assert.ok(a.n > 0, `no ${g} ${dim} rows`);
    }
    const h = await diff(
      `SELECT bucket, metric, idx, n FROM usage_rollup_hist WHERE grain = '${g}' AND bucket >= $1`,
      `SELECT ${BUCKET[g]} AS bucket, ${HIST_RAW} WHERE ts >= $1 AND m.us IS NOT NULL GROUP BY 1, 2, 3`,
      [iso(from)],
      url,
    );
    assert.equal(h.bad, null, `usage_rollup_hist ${g} != raw (seed ${SEED}): ${JSON.stringify(h.bad)}`);
    assert.ok(h.n > 0, `no ${g} histogram rows`);
  }
}

async function checkHist(ranges, url = pg.url) {
  for (const [from, to] of ranges) {
    for (const g of ['5 minutes', '1 hour', '1 day']) {
      const d = await diff(
        'SELECT metric, idx, sum(n)::bigint FROM bridle_usage_hist($1, $2, $3::interval) GROUP BY 1, 2',
        `SELECT ${HIST_RAW} WHERE ts >= $1 AND ts < $2 AND $3::interval IS NOT NULL AND m.us IS NOT NULL GROUP BY 1, 2`,
        [iso(from), iso(to), g],
        url,
      );
      assert.equal(d.bad, null, `bridle_usage_hist(${iso(from)}, ${iso(to)}, ${g}) != raw (seed ${SEED}): ${JSON.stringify(d.bad)}`);
    }
  }
  // percentiles from the histograms, over everything still raw
  const r = await pg.query(
    `WITH h AS (SELECT metric, idx, sum(n)::bigint AS n FROM bridle_usage_hist($1, now() + interval '1 hour') GROUP BY 1, 2) ` +
      `SELECT q, (SELECT bridle_hist_quantile(q, idx, n) FROM h WHERE metric = 'latency') AS est, ` +
      `(SELECT percentile_cont(q) WITHIN GROUP (ORDER BY latency_us / 1000.0) FROM usage_events WHERE ts >= $1) AS exact, ` +
      `(SELECT bridle_hist_quantile(q, idx, n) FROM h WHERE metric = 'ttft') AS test, ` +
      `(SELECT percentile_cont(q) WITHIN GROUP (ORDER BY ttft_us / 1000.0) FROM usage_events WHERE ts >= $1 AND streamed AND ttft_us >= 0) AS texact ` +
      'FROM unnest(ARRAY[0.5, 0.9, 0.95, 0.99]::float8[]) q',
    [iso(liveFrom)],
    url,
  );
  for (const { q, est, exact, test: tEst, texact } of r.rows) {
    assert.ok(Math.abs(est - exact) / exact <= 0.09, `latency p${q * 100}: histogram ${est} ms vs exact ${exact} ms (seed ${SEED})`);
    // TTFT goes down to 0 (bucket 0 is [0, 0.1 ms)): 9 % or within that
    // bucket; its tail is sparser (half the events): the dense quantiles only
    if (q <= 0.9) assert.ok(Math.abs(tEst - texact) <= Math.max(0.09 * texact, 0.1), `ttft p${q * 100}: histogram ${tEst} ms vs exact ${texact} ms (seed ${SEED})`);
  }
}

async function checkTop(ranges, url = pg.url, trimmed = true) {
  for (const [from, to] of ranges) {
    const n = pick([1, 10, 100]);
    const top = await pg.query('SELECT event_id FROM bridle_top($1, $2, $3)', [iso(from), iso(to), n], url);
    const raw = await pg.query(
      'SELECT event_id FROM usage_events WHERE ts >= $1 AND ts < $2 ORDER BY cost_pusd DESC, ts DESC, event_id LIMIT $3',
      [iso(from), iso(to), n],
      url,
    );
    assert.deepEqual(top.rows.map((x) => x.event_id), raw.rows.map((x) => x.event_id), `bridle_top(${iso(from)}, ${iso(to)}, ${n}) (seed ${SEED})`);
  }
  if (!trimmed) return;
  const over = await pg.query('SELECT count(*)::int AS n FROM (SELECT hour FROM usage_top GROUP BY hour HAVING count(*) > 100) x', [], url);
  assert.equal(over.rows[0].n, 0, 'usage_top holds at most 100 events per hour once trimmed');
}

// Every floor is at most its hour's true 100th highest cost (else the
// capture would skip an event of the real top 100). Returns how many hours
// have a floor.
async function checkFloors(url = pg.url, from = liveFrom) {
  const r = await pg.query(
    'SELECT f.hour, f.floor_pusd::text AS floor, ' +
      "(SELECT e.cost_pusd FROM usage_events e WHERE e.ts >= f.hour AND e.ts < f.hour + interval '1 hour' " +
      'ORDER BY e.cost_pusd DESC OFFSET 99 LIMIT 1)::text AS true100 FROM usage_top_floor f WHERE f.hour >= $1',
    [iso(from)],
    url,
  );
  for (const f of r.rows) {
    assert.ok(f.true100 !== null, `a floor for ${f.hour.toISOString()}, an hour with fewer than 100 events`);
    assert.ok(BigInt(f.floor) <= BigInt(f.true100), `usage_top_floor ${f.hour.toISOString()}: ${f.floor} > the 100th cost ${f.true100} (seed ${SEED})`);
  }
  return r.rows.length;
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
    await load(150, pg.url, denseEvent); // over 100 in one hour: a floor after the first rollup
    // readers are exact before any rollup ran (pending rows are read too)
    let ranges = Array.from({ length: 4 }, randomRange);
    ranges.push([liveFrom, Date.now() + 1000]);
    ranges.push([denseHour, denseHour + HOUR]);
    ranges.push([denseHour + 7 * 60000, denseHour + 53 * 60000]); // bridle_top from the hour's kept top 100
    await checkUsage(ranges.slice(0, 3));

    // replays through the dedup path: only the fresh ones are new
    const before = await replay(600);
    const afterN = (await pg.query('SELECT count(*)::int AS n FROM usage_events')).rows[0].n;
    assert.equal(afterN, before + 60, 'replayed events are not inserted twice');

    // 4 concurrent rollup runs (small batches: many interleaved calls) while inserts go on
    const runs = Promise.all([rollupCli(37), rollupCli(53), rollupCli(101), rollupCli(1000)]);
    await load(900);
    await load(60, pg.url, denseEvent);
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
      const within = `FROM usage_events WHERE ts >= '${iso(firstDay)}' AND ts < '${iso(firstDay + DAY)}'`;
      const snapOps = (g) => `SELECT '${g}'::text AS grain, ${BUCKET[g]} AS bucket, ${OPS_SQL}, ${RAW_M} ${within} GROUP BY 1, 2, ${OPS_NAMES}`;
      const snapAttr = (g, dim) =>
        `SELECT '${g}'::text AS grain, '${dim}'::text AS dim, ${BUCKET[g]} AS bucket, coalesce(${ATTR[dim]}, '') AS value, ${RAW_M} ${within} GROUP BY 1, 2, 3, 4`;
      const grains = ['5m', '1h', '1d'];
      await pg.query(`CREATE TABLE dropped_ops AS ${grains.map(snapOps).join(' UNION ALL ')}`);
      await pg.query(`CREATE TABLE dropped_attr AS ${grains.flatMap((g) => Object.keys(ATTR).map((d) => snapAttr(g, d))).join(' UNION ALL ')}`);
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
    await checkHist(ranges.slice(0, 3));
    await checkTop(ranges);
    assert.ok((await checkFloors()) >= 1, 'the dense hour has a floor');
    if (round >= 2) {
      const [a, b] = [iso(firstDay), iso(firstDay + DAY)];
      const d = await diff(`SELECT grain, bucket, ${OPS_NAMES}, ${COL_M} FROM usage_rollup_ops WHERE bucket >= $1 AND bucket < $2`, 'SELECT * FROM dropped_ops', [a, b]);
      assert.equal(d.bad, null, `the dropped day's ops rollups != its raw events (seed ${SEED}): ${JSON.stringify(d.bad)}`);
      assert.ok(d.n > 0);
      const e = await diff(`SELECT grain, dim, bucket, value, ${COL_M} FROM usage_rollup_attr WHERE bucket >= $1 AND bucket < $2`, 'SELECT * FROM dropped_attr', [a, b]);
      assert.equal(e.bad, null, `the dropped day's attribution rollups != its raw events (seed ${SEED}): ${JSON.stringify(e.bad)}`);
      assert.ok(e.n > 0);
    }

    // the capture skips events below the dense hour's floor: 20 below it and
    // 5 above in one statement of that hour add exactly the 5 to usage_top
    const f = (await pg.query('SELECT floor_pusd::text AS f FROM usage_top_floor WHERE hour = $1', [iso(denseHour)])).rows[0];
    assert.ok(f, `the dense hour has a floor (seed ${SEED})`);
    const floor = BigInt(f.f);
    const kept = async () => (await pg.query('SELECT count(*)::int AS n FROM usage_top WHERE hour = $1', [iso(denseHour)])).rows[0].n;
    assert.equal(await kept(), 100);
    const probe = [
      ...Array.from({ length: 20 }, (_, i) => ({ ...denseEvent(), cost_pusd: (floor / 2n - BigInt(i)).toString() })),
      ...Array.from({ length: 5 }, (_, i) => ({ ...denseEvent(), cost_pusd: (floor + 1000n + BigInt(i)).toString() })),
    ];
    assert.ok(floor > 40n, `a floor (${floor}) with room below it (seed ${SEED})`);
    {
      await insertRows(probe);
      inserted.push(...probe);
      assert.equal(await kept(), 105, 'below-floor events are not captured into usage_top; those above are');
      await checkTop([[denseHour, denseHour + HOUR], [denseHour - HOUR, denseHour + 2 * HOUR]], pg.url, false); // not trimmed yet
      assert.equal((await rollupCli(100000)).code, 0);
      assert.equal(await kept(), 100);
      assert.ok((await checkFloors()) >= 1);
      const nf = (await pg.query('SELECT floor_pusd::text AS f FROM usage_top_floor WHERE hour = $1', [iso(denseHour)])).rows[0];
      assert.ok(BigInt(nf.f) >= floor, 'a floor only rises');
      await checkTop([[denseHour, denseHour + HOUR]]);
    }
  }
  // retention: 5-minute rows older than 2 days go, the others stay
  const counts = async () =>
    (
      await pg.query(
        "SELECT (SELECT count(*) FROM usage_rollup_ops WHERE grain = '5m' AND bucket < $1)::int AS ops, " +
          "(SELECT count(*) FROM usage_rollup_attr WHERE grain = '5m' AND bucket < $1)::int AS attr, " +
          "(SELECT count(*) FROM usage_rollup_hist WHERE grain = '5m' AND bucket < $1)::int AS hist, " +
          "(SELECT count(*) FROM usage_rollup_ops WHERE grain <> '5m')::int AS ops_rest, " +
          "(SELECT count(*) FROM usage_rollup_attr WHERE grain <> '5m')::int AS attr_rest, " +
          "(SELECT count(*) FROM usage_rollup_hist WHERE grain <> '5m')::int AS hist_rest",
        [iso(today - 2 * DAY)],
      )
    ).rows[0];
  const n5 = await counts();
  assert.ok(n5.ops > 0 && n5.attr > 0 && n5.hist > 0, JSON.stringify(n5));
  await pg.query('SELECT bridle_rollup_retention(2, 0, 0)');
  const n5b = await counts();
  assert.deepEqual(n5b, { ...n5, ops: 0, attr: 0, hist: 0 });
});

// A ledger at 0007 whose events 0006's bridle_rollup rolled up (some still
// pending, a dense hour with a trimmed top), migrated to 0008 by `bridle
// migrate`: the narrow rollups hold exactly the raw aggregates (requested_model
// is '' in rows from before: 0006 did not keep it), the floors are safe, and
// events captured after the upgrade add up with the old rows.
test(`upgrade: 0006's rollups re-aggregated by 0008 equal the raw aggregates (seed ${SEED})`, async () => {
  await pg.query('CREATE DATABASE upgrade', [], pg.adminUrl);
  const url = pg.urlFor('upgrade');
  const q = (sql, params = []) => pg.query(sql, params, url);
  // what db/migrate.c does per migration: the file and its record, one transaction
  await q('CREATE TABLE bridle_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
  const dir = path.join(ROOT, 'migrations');
  const files = fs.readdirSync(dir).filter((f) => /^000[1-7]_.*\.sql$/.test(f)).sort();
  assert.equal(files.length, 7);
  for (const f of files) {
    const name = f.replace(/\.sql$/, '');
    const r = spawnSync(psqlBin(), [url, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-1', '-f', path.join(dir, f), '-c',
      `INSERT INTO bridle_schema_migrations (version, name, applied_at) VALUES (${Number(name.slice(0, 4))}, '${name}', now())`], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${f}: ${r.stderr}`);
  }
  assert.ok((await q("SELECT to_regclass('usage_rollup') AS t")).rows[0].t, '0006 made usage_rollup');
  await q("SELECT bridle_ensure_partition((now() AT TIME ZONE 'UTC')::date - d) FROM generate_series(0, 5) d");

  const from = today - 3 * DAY;
  const ev = () => ({ ...randomEvent(), ts: new Date(from + Math.floor(rnd() * (Date.now() - from))).toISOString() });
  await load(1200, url, ev);
  await load(160, url, denseEvent);
  const r0 = await q('SELECT bridle_rollup(1000000) AS n');
  assert.ok(Number(r0.rows[0].n) > 0, "0006's rollup moved the events");
  assert.equal(Number((await q("SELECT count(*) AS n FROM usage_top WHERE hour = $1", [iso(denseHour)])).rows[0].n), 100, "0006 trimmed the dense hour to 100");
  await load(400, url, ev); // left pending for 0008 to roll up first
  assert.ok(Number((await q('SELECT count(*) AS n FROM usage_rollup_pending')).rows[0].n) > 0);

  const m = spawnSync(BRIDLE, ['migrate', '--database-url', url], { encoding: 'utf8' });
  assert.equal(m.status, 0, m.stderr);
  assert.match(m.stdout, /applied 0008_narrow_rollups/);
  assert.equal((await q("SELECT to_regclass('usage_rollup') AS t")).rows[0].t, null, 'the wide rollup is gone');
  const st = spawnSync(BRIDLE, ['ledger', 'status', '--database-url', url, '--json'], { encoding: 'utf8' });
  assert.equal(st.status, 0, st.stderr);
  const js = JSON.parse(st.stdout);
  assert.equal(js.pending, 0, 'what 0006 left pending is rolled up');
  assert.ok(js.rollup_rows['1d'] > 0 && js.attr_rows['1d'] > 0 && js.hist_rows > 0 && js.top_floor_hours >= 1, st.stdout);
  assert.equal(Number((await q("SELECT count(*) AS n FROM usage_rollup_ops WHERE requested_model <> ''")).rows[0].n), 0, "requested_model is '' in rows from 0006");

  const NO_RM = OPS.filter((d) => d !== 'requested_model');
  await checkGrains({ url, from, ops: NO_RM });
  const ranges = [[from, Date.now() + 1000], ...Array.from({ length: 3 }, () => {
    const a = from + Math.floor(rnd() * (Date.now() - from));
    return [a, a + int(1, 30) * HOUR + int(0, 3599) * 1000];
  })];
  await checkUsage(ranges, { url, ops: NO_RM });
  await checkHist(ranges.slice(0, 2), url);
  assert.ok((await checkFloors(url, from)) >= 1, 'the dense hour got its floor from the trimmed top');
  await checkTop([...ranges, [denseHour, denseHour + HOUR]], url);

  // after the upgrade: new events through 0008's capture, rolled up by the CLI
  await load(600, url, ev);
  await load(80, url, denseEvent);
  const ro = spawnSync(BRIDLE, ['ledger', 'rollup', '--database-url', url, '--json'], { encoding: 'utf8' });
  assert.equal(ro.status, 0, ro.stderr);
  assert.ok(JSON.parse(ro.stdout).moved > 0);
  assert.ok(Number((await q("SELECT count(*) AS n FROM usage_rollup_ops WHERE requested_model <> ''")).rows[0].n) > 0, 'new rows keep requested_model');
  await checkGrains({ url, from, ops: NO_RM });
  await checkUsage(ranges, { url, ops: NO_RM });
  assert.ok((await checkFloors(url, from)) >= 1);
  await checkTop([...ranges, [denseHour, denseHour + HOUR]], url);
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
    async () => (await q("SELECT coalesce(sum(requests), 0)::int AS n FROM usage_rollup_ops WHERE grain = '1d'")).rows[0].n === N,
    10000 * SLOW,
    'the gateway rolled them up',
  );
  const p = (await q('SELECT (SELECT count(*) FROM usage_rollup_pending) + (SELECT count(*) FROM usage_rollup_hist_pending) AS n')).rows[0];
  assert.equal(Number(p.n), 0, 'nothing left pending');
  const cmp = (await q("SELECT (SELECT sum(cost_pusd) FROM usage_events)::text AS raw, (SELECT sum(cost_pusd) FROM usage_rollup_ops WHERE grain = '5m')::text AS r5, (SELECT sum(cost_pusd) FROM usage_rollup_ops WHERE grain = '1h')::text AS r1, (SELECT sum(cost_pusd) FROM usage_rollup_attr WHERE grain = '1h' AND dim = 'key')::text AS k1")).rows[0];
  assert.ok(BigInt(cmp.raw) > 0n);
  assert.equal(cmp.r5, cmp.raw);
  assert.equal(cmp.r1, cmp.raw);
  assert.equal(cmp.k1, cmp.raw);
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
  const tot = (await q("SELECT (SELECT count(*) FROM usage_events)::int AS raw, (SELECT sum(requests) FROM usage_rollup_ops WHERE grain = '1d')::int AS r, (SELECT sum(requests) FROM usage_rollup_attr WHERE grain = '1d' AND dim = 'team')::int AS t")).rows[0];
  assert.equal(tot.r, tot.raw);
  assert.equal(tot.t, tot.raw);
  assert.equal(tot.raw, N + bulk.length);
  // the CLI agrees: nothing pending
  const st = spawnSync(BRIDLE, ['ledger', 'status', '--database-url', url, '--json'], { encoding: 'utf8' });
  assert.equal(st.status, 0, st.stderr);
  const js = JSON.parse(st.stdout);
  assert.equal(js.pending, 0);
  assert.ok(js.rollup_rows['1d'] >= 1 && js.attr_rows['1d'] >= 6 && js.hist_rows >= 3, st.stdout);
});

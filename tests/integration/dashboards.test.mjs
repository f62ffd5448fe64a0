// The usage ledger end to end, without the gateway: `bridle migrate` against a
// throwaway PostgreSQL, a seed of usage events we control exactly, then
//  - every panel of deploy/grafana/dashboards/bridle-costs.json, its macros
//    expanded the way Grafana's PostgreSQL datasource expands them, run and
//    checked against numbers computed here from the raw seed. The panels read
//    the rollup readers of migrations/0008 (bridle_usage, bridle_usage_by,
//    bridle_usage_hist, bridle_top), never usage_events: the seed is inserted in two statements
//    with `SELECT bridle_rollup()` between them, so rolled-up rows and rows
//    still pending share buckets, and the ranges end off the 5-minute grid
//    with events in the raw edges (and just outside them). Sums and counts
//    must be exact; percentiles come from eighth-octave histograms, so they
//    are checked against the same interpolation done here and to be within
//    9 % (one bucket: 2^(1/8) - 1 = 9.05 %) of the raw nearest-rank value;
//  - `bridle cost summary|breakdown|top` (--json exact, tables readable,
//    errors clear);
//  - migrations (twice is a no-op, concurrent runs apply once) and the
//    partition functions (ensure is idempotent, retention drops only old days).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { ROOT, freePort, runCli as runBridle, runCliOk as runOk } from './lib/harness.mjs';
import { groupMap, grouped, insertEvents, isError, money6, mulberry32, reportMeasures, sum, usd } from './lib/events.mjs';
import { startPostgres } from './lib/pg.mjs';

const DASHBOARD = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/grafana/dashboards/bridle-costs.json'), 'utf8'));
const DATASOURCES = fs.readFileSync(path.join(ROOT, 'deploy/grafana/provisioning/datasources/postgres.yaml'), 'utf8');

// ---------------------------------------------------------------------------
// running the binary


// ---------------------------------------------------------------------------
// Grafana's PostgreSQL macro expansion (pkg/tsdb/sqleng Interpolate, then
// pkg/tsdb/grafana-postgresql-datasource/macros.go, timescaledb off)

/** time.RFC3339Nano of a UTC instant: fraction without trailing zeros. */
function rfc3339Nano(d) {
  return d.toISOString().replace(/\.(\d+)Z$/, (_, f) => {
    const t = f.replace(/0+$/, '');
    return t ? `.${t}Z` : 'Z';
  });
}

const UNIT_MS = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000, w: 604800000, M: 2592000000, y: 31536000000 };

/** gtime.ParseInterval, for the forms dashboards use ("1d", "5m", "30s"). */
function parseIntervalMs(s) {
  const m = /^(\d+)(ms|s|m|h|d|w|M|y)$/.exec(s.trim());
  if (!m) throw new Error(`Grafana would fail: error parsing interval ${s}`);
  return Number(m[1]) * UNIT_MS[m[2]];
}

/** gtime.FormatInterval: the largest whole unit. */
function formatInterval(ms) {
  for (const [u, n] of [['y', UNIT_MS.y], ['d', UNIT_MS.d], ['h', UNIT_MS.h], ['m', UNIT_MS.m], ['s', UNIT_MS.s]])
    if (ms >= n) return `${Math.floor(ms / n)}${u}`;
  return `${ms}ms`;
}

/** Go's %v of a float64 (shortest repr; exponent from 1e21 up is not needed here). */
function goFloat(v) {
  if (Math.abs(v) >= 1e21) throw new Error('interval too large for this expander');
  return String(v);
}

export function grafanaExpand(rawSql, { from, to, intervalMs, vars = {} }) {
  let sql = rawSql;
  // dashboard variables (the frontend's templateSrv)
  for (const [k, v] of Object.entries(vars)) sql = sql.replaceAll(`\${${k}}`, v).replace(new RegExp(`\\$${k}\\b`, 'g'), v);
  // sqleng.Interpolate
  sql = sql
    .replaceAll('$__interval_ms', String(intervalMs))
    .replaceAll('$__interval', formatInterval(intervalMs))
    .replaceAll('$__unixEpochFrom()', String(Math.floor(from.getTime() / 1000)))
    .replaceAll('$__unixEpochTo()', String(Math.floor(to.getTime() / 1000)));
  // the postgres macro engine
  const original = sql;
  return sql.replace(/\$([_a-zA-Z0-9]+)\(([^)]*)\)/g, (whole, name, argStr) => {
    if (name === '__timeGroup') {
      // pre-5.3 compatibility: "$__timeGroup(...)," means the alias form
      const i = original.indexOf(whole);
      if (i >= 0 && original[i + whole.length] === ',') name = '__timeGroupAlias';
    }
    const args = argStr.split(',').map((a) => a.replace(/^ +| +$/g, ''));
    const group = () => {
      if (args.length < 2) throw new Error(`macro ${name} needs time column and interval`);
      const secs = parseIntervalMs(args[1].replace(/^'+|'+$/g, '')) / 1000;
      return `floor(extract(epoch from ${args[0]})/${goFloat(secs)})*${goFloat(secs)}`;
    };
    switch (name) {
      case '__time':
        return `${args[0]} AS "time"`;
      case '__timeEpoch':
        return `extract(epoch from ${args[0]}) as "time"`;
      case '__timeFilter':
        return `${args[0]} BETWEEN '${rfc3339Nano(from)}' AND '${rfc3339Nano(to)}'`;
      case '__timeFrom':
        return `'${rfc3339Nano(from)}'`;
      case '__timeTo':
        return `'${rfc3339Nano(to)}'`;
      case '__timeGroup':
        return group();
      case '__timeGroupAlias':
        return `${group()} AS "time"`;
      case '__unixEpochFilter':
        return `${args[0]} >= ${Math.floor(from / 1000)} AND ${args[0]} <= ${Math.floor(to / 1000)}`;
      default:
        throw new Error(`Grafana would fail: unknown macro "${name}"`);
    }
  });
}

// ---------------------------------------------------------------------------
// the seed: exact, deterministic, relative to today (UTC)

const DAY = 86400000;
const NOW = Date.now();
const TODAY0 = Math.floor(NOW / DAY) * DAY;
const SEED_DAYS = [12, 11, 10, 9, 8, 7, 6, 5, 4, 3].map((k) => TODAY0 - k * DAY);
const OUTLIER_DAY = TODAY0 - 7 * DAY;
// A range off every grid (7 min 13 s into a day .. 2 h 2.5 min into another):
// its edges are raw pieces shorter than 5 minutes, and the seed has events in
// them, exactly on `from` (counted), exactly on `to` (not counted) and a
// second outside either end.
const EDGE = { from: new Date(TODAY0 - 8 * DAY + 433000), to: new Date(TODAY0 - 3 * DAY + 7350000) };

const MODELS = [
  { model: 'gpt-4o', provider: 'openai', requested_model: 'gpt-4o', tier: 'heavy' },
  { model: 'claude-sonnet', provider: 'anthropic', requested_model: 'gpt-4o', tier: 'mid' },
  { model: 'gemini-flash', provider: 'gemini', requested_model: 'gpt-4o', tier: 'budget' },
  { model: 'llama3', provider: 'ollama', requested_model: 'gpt-4o-mini', tier: 'local' },
];
const KEYS = [
  { key_id: 'key-a', team: 'alpha' },
  { key_id: 'key-b', team: 'alpha' },
  { key_id: 'key-c', team: 'beta' },
  { key_id: null, team: null },
];
const AGENTS = ['planner', 'coder', null];
const TASKS = ['chat', 'summarize', 'code'];
const FEATURES = ['search', 'inbox', null];

function makeSeed() {
  const r = mulberry32(20261124);
  const int = (lo, hi) => lo + Math.floor(r() * (hi - lo + 1));
  const pick = (a) => a[Math.floor(r() * a.length)];
  const events = [];
  let n = 0;
  const ev = (tsMs, over = {}) => {
    const m = pick(MODELS);
    const k = pick(KEYS);
    const streamed = r() < 0.5;
    const roll = r();
    let status = 200;
    let error_class = null;
    let attempts = r() < 0.15 ? 2 : 1;
    if (roll < 0.1) [status, error_class, attempts] = [502, 'upstream_timeout', 3];
    else if (roll < 0.15) [status, error_class, attempts] = [429, 'rate_limited', 1];
    const cache_hit = status === 200 && r() < 0.15;
    const input = BigInt(int(10, 20000));
    const cacheRead = r() < 0.4 ? BigInt(int(0, 8000)) : 0n;
    const cacheWrite = r() < 0.2 ? BigInt(int(0, 3000)) : 0n;
    const output = BigInt(int(1, 4000));
    const reasoning = r() < 0.3 ? BigInt(int(0, Number(output))) : 0n;
    let cost = BigInt(int(1_000_000_000, 50_000_000_000)); // 0.001 .. 0.05 USD
    if (m.provider === 'ollama' || cache_hit || status === 429) cost = 0n;
    let baseline = cost * BigInt(int(1, 3)) + BigInt(int(0, 5_000_000_000));
    if (m.provider === 'anthropic' && r() < 0.3) baseline = cost / 2n; // routed up: negative savings
    const latency = BigInt(int(50_000, 5_000_000));
    let ttft = null;
    if (streamed) ttft = r() < 0.1 ? -1n : BigInt(int(80_000, 900_000));
    else if (r() < 0.5) ttft = -1n;
    n++;
    events.push({
      event_id: n.toString(16).padStart(32, '0'),
      ts: new Date(tsMs),
      ...k,
      end_user: r() < 0.5 ? `user-${int(1, 5)}` : null,
      agent: pick(AGENTS),
      task: pick(TASKS),
      feature: pick(FEATURES),
      ...m,
      route_reason: `task ${m.tier}`,
      streamed,
      status,
      error_class,
      attempts,
      input_tokens: input,
      cache_read_tokens: cacheRead,
      cache_write_tokens: cacheWrite,
      output_tokens: output,
      reasoning_tokens: reasoning,
      usage_exact: r() < 0.95,
      cost_pusd: cost,
      baseline_cost_pusd: baseline,
      latency_us: latency,
      ttft_us: ttft,
      upstream_us: latency - 1000n,
      cache_hit,
      batch_id: null,
      ...over,
    });
  };
  for (const day of SEED_DAYS)
    for (let i = 0; i < 16; i++) ev(day + 120000 + int(0, DAY - 240000)); // whole ms, never near midnight
  // the outlier day: five expensive requests and the single most expensive one
  for (let i = 0; i < 5; i++)
    ev(OUTLIER_DAY + 3600000 * (9 + i), { cost_pusd: 4_000_000_000_000n + BigInt(i), baseline_cost_pusd: 6_000_000_000_000n, status: 200, error_class: null });
  ev(OUTLIER_DAY + 3600000 * 15 + 123, {
    cost_pusd: 9_876_543_210_987n,
    baseline_cost_pusd: 12_000_000_000_000n,
    status: 200,
    error_class: null,
    model: 'gpt-4o',
    provider: 'openai',
    key_id: 'key-c',
    team: 'beta',
  });
  // the last 24 hours, for `--period day`
  for (let h = 1; h <= 6; h++) ev(NOW - h * 3600000 - 17000);
  // spend inside every current budget period whatever the date and hour (the
  // hours above are yesterday just after midnight, and a week can start today)
  const current = Math.max(TODAY0, NOW - 1000);
  ev(current, { key_id: 'key-a', team: 'alpha', cost_pusd: 3_000_000_000n, status: 200, error_class: null });
  ev(current, { key_id: 'key-c', team: 'beta', cost_pusd: 2_000_000_000n, status: 200, error_class: null });
  // the raw edges of EDGE, and just outside them
  for (const t of [-1000, 0, 1000, 100000]) ev(EDGE.from.getTime() + t);
  for (const t of [-100000, -1000, 0, 1000]) ev(EDGE.to.getTime() + t);
  // one in the raw edge at the end of the dashboard's range (it ends a minute
  // from now, off the grid): tokens and a request, no cost (a budget's
  // period must not depend on it), after `now` so the CLI periods skip it
  ev(NOW + 59999, { cost_pusd: 0n, status: 200, error_class: null });
  return events;
}

const EVENTS = makeSeed();
const TOP_EVENT = EVENTS.find((e) => e.cost_pusd === 9_876_543_210_987n);

// Budgets (bridle_budgets) for the budget panel: limits in pico-dollars.
const BUDGETS = [
  { scope: 'key', scope_id: 'key-a', period: 'day', limit: 50_000_000_000n },
  { scope: 'key', scope_id: 'key-c', period: 'month', limit: 20_000_000_000_000n },
  { scope: 'team', scope_id: 'alpha', period: 'week', limit: 5_000_000_000_000n },
  { scope: 'total', scope_id: '', period: 'month', limit: 100_000_000_000_000n },
  { scope: 'key', scope_id: 'key-z', period: 'day', limit: 1_000_000_000_000n }, // nothing spent
];

/** The UTC start of the period holding ms (a week starts on Monday), as bridle_period_start. */
function periodStart(period, ms) {
  const day = Math.floor(ms / DAY) * DAY;
  if (period === 'day') return day;
  if (period === 'week') return day - ((new Date(day).getUTCDay() + 6) % 7) * DAY;
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}
function periodEnd(period, start) {
  if (period === 'day') return start + DAY;
  if (period === 'week') return start + 7 * DAY;
  const d = new Date(start);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}


// ---------------------------------------------------------------------------
// independent arithmetic

const retries = (e) => Math.max(e.attempts - 1, 0);
const bucketOf = (e, ms) => Math.floor(e.ts.getTime() / ms) * (ms / 1000);
function percentileCont(values, p) {
  const v = [...values].sort((a, b) => a - b);
  const pos = p * (v.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}
function near(actual, expected, what, tol = 1e-9) {
  if (expected === null) return assert.equal(actual, null, what);
  const a = Number(actual);
  assert.ok(Math.abs(a - expected) <= tol * Math.max(1, Math.abs(expected)), `${what}: got ${actual}, want ${expected}`);
}
function sameMap(actual, expected, what, cmp = (a, b, k) => assert.equal(a, b, `${what} ${k}`)) {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort(), `${what}: series/buckets`);
  for (const [k, v] of expected) cmp(actual.get(k), v, k);
}
function dailyCosts(evs) {
  const days = groupMap(evs, (e) => bucketOf(e, DAY));
  return [...days.entries()].map(([day, es]) => ({ day, cost: sum(es, (e) => e.cost_pusd), n: es.length })).sort((a, b) => a.day - b.day);
}
function meanSd(xs) {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : null;
  return { mean, sd };
}

// ---------------------------------------------------------------------------
// per-panel checks: title -> (rows, events in range, interval ms)

// top: only the `top` values that cost most over the range (ties by value)
// are series of their own, the others add up in '(other)'
const costBy = (col, top = Infinity) => (rows, evs, ms) => {
  const got = new Map(rows.map((r) => [`${Number(r.time)}|${r.metric}`, r.cost_usd ?? r.spend_usd]));
  const want = new Map();
  const totals = [...groupMap(evs, (e) => e[col] ?? '')].map(([v, es]) => [v, sum(es, (e) => e.cost_pusd)]);
  totals.sort(([va, a], [vb, b]) => (a !== b ? (a > b ? -1 : 1) : va < vb ? -1 : va > vb ? 1 : 0));
  const kept = new Set(totals.slice(0, top).map(([v]) => v));
  const series = (e) => (kept.has(e[col] ?? '') ? (e[col] ?? '(none)') : '(other)');
  for (const [k, es] of groupMap(evs, (e) => `${bucketOf(e, ms)}|${series(e)}`)) want.set(k, usd(sum(es, (e) => e.cost_pusd)));
  sameMap(got, want, `cost by ${col}`);
  // a time series must be sorted by time
  const times = rows.map((r) => Number(r.time));
  assert.deepEqual(times, [...times].sort((a, b) => a - b));
};
const perBucket = (rows, evs, ms, fn) => {
  const got = new Map(rows.map((r) => [Number(r.time), r]));
  const want = groupMap(evs, (e) => bucketOf(e, ms));
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), 'buckets');
  for (const [t, es] of want) fn(got.get(t), es, t);
};
// migrations/0006's histograms: bucket 0 is below 100 µs, bucket i is
// [0.1 ms · 2^((i-1)/8), 0.1 ms · 2^(i/8)), bucket 191 takes the rest.
const histIdx = (us) => (us < 100 ? 0 : Math.min(191, 1 + Math.floor(8 * Math.log2(us / 100))));
const histLo = (i) => (i <= 0 ? 0 : 0.1 * 2 ** ((i - 1) / 8));
const histHi = (i) => 0.1 * 2 ** (i / 8);
/** bridle_hist_quantile, independently: the bucket holding rank q·N, interpolated linearly. */
function histQuantile(valuesMs, q) {
  const n = new Map();
  for (const v of valuesMs) n.set(histIdx(Math.round(v * 1000)), (n.get(histIdx(Math.round(v * 1000))) ?? 0) + 1);
  const target = q * valuesMs.length;
  let cum = 0;
  for (const i of [...n.keys()].sort((a, b) => a - b)) {
    const c = n.get(i);
    if (cum + c >= target) return histLo(i) + ((histHi(i) - histLo(i)) * Math.max(target - cum, 0)) / c;
    cum += c;
  }
  return histHi(191);
}
const percentiles = (valueOf) => (rows, evs, ms) =>
  perBucket(rows, evs.filter((e) => valueOf(e) !== null), ms, (row, es, t) => {
    const vals = es.map(valueOf);
    const sorted = [...vals].sort((a, b) => a - b);
    for (const [col, q] of [['p50', 0.5], ['p95', 0.95], ['p99', 0.99]]) {
      near(row[col], histQuantile(vals, q), `${col} @${t} (histogram)`, 1e-9);
      // within one eighth-octave bucket of the raw nearest-rank percentile
      const raw = sorted[Math.max(Math.ceil(q * sorted.length), 1) - 1];
      assert.ok(Math.abs(row[col] - raw) <= 0.0906 * raw, `${col} @${t}: ${row[col]} vs raw ${raw}: more than 9 % off`);
    }
  });
const perProvider = (field, fn) => (rows, evs, ms) => {
  const got = new Map(rows.map((r) => [`${Number(r.time)}|${r.metric}`, r[field]]));
  const want = new Map();
  for (const [k, es] of groupMap(evs, (e) => `${bucketOf(e, ms)}|${e.provider ?? '(none)'}`)) want.set(k, fn(es));
  sameMap(got, want, field, (a, b, k) => near(a, b, `${field} ${k}`));
};

const CHECKS = {
  'Total cost': ([row], evs) => assert.equal(row.cost_usd, usd(sum(evs, (e) => e.cost_pusd))),
  'Savings vs baseline': ([row], evs) => {
    assert.equal(row.savings_usd, usd(sum(evs, (e) => e.baseline_cost_pusd - e.cost_pusd)));
    assert.equal(row.baseline_cost_usd, usd(sum(evs, (e) => e.baseline_cost_pusd)));
    // migration 0009: an answer served without an upstream call saved its baseline (the call it replaced)
    assert.equal(row.by_caching_usd, usd(sum(evs, (e) => (e.cache_hit ? e.baseline_cost_pusd : 0n))));
    assert.equal(row.by_routing_usd, usd(sum(evs, (e) => e.baseline_cost_pusd - e.cost_pusd - (e.cache_hit ? e.baseline_cost_pusd : 0n))));
    assert.ok(evs.some((e) => e.cache_hit && e.baseline_cost_pusd > 0n), 'the seed has hits that saved something');
  },
  'Requests and errors': ([row], evs) => {
    assert.equal(row.requests, String(evs.length));
    assert.equal(row.errors, String(evs.filter(isError).length));
  },
  'Error rate': ([row], evs) => near(row.error_rate, evs.filter(isError).length / evs.length, 'error rate'),
  'Cost by model': costBy('model'),
  'Cost by provider': costBy('provider'),
  'Cost by key': costBy('key_id', 10),
  'Cost by team': costBy('team'),
  'Cost by agent': costBy('agent'),
  'Cost by task': costBy('task'),
  'Cost by feature': costBy('feature'),
  'Savings: baseline vs actual': (rows, evs, ms) =>
    perBucket(rows, evs, ms, (row, es) => {
      assert.equal(row.baseline_usd, usd(sum(es, (e) => e.baseline_cost_pusd)));
      assert.equal(row.actual_usd, usd(sum(es, (e) => e.cost_pusd)));
      assert.equal(row.savings_usd, usd(sum(es, (e) => e.baseline_cost_pusd - e.cost_pusd)));
      assert.equal(row.by_caching_usd, usd(sum(es, (e) => (e.cache_hit ? e.baseline_cost_pusd : 0n))));
      assert.equal(row.by_routing_usd, usd(sum(es, (e) => e.baseline_cost_pusd - e.cost_pusd - (e.cache_hit ? e.baseline_cost_pusd : 0n))));
    }),
  'Tokens in / out / cached': (rows, evs, ms) =>
    perBucket(rows, evs, ms, (row, es) => {
      assert.equal(row.input_uncached, sum(es, (e) => e.input_tokens).toString());
      assert.equal(row.cache_read, sum(es, (e) => e.cache_read_tokens).toString());
      assert.equal(row.cache_write, sum(es, (e) => e.cache_write_tokens).toString());
      assert.equal(row.output, sum(es, (e) => e.output_tokens).toString());
      assert.equal(row.reasoning, sum(es, (e) => e.reasoning_tokens).toString());
    }),
  'Cache hit rate': (rows, evs, ms) =>
    perBucket(rows, evs, ms, (row, es, t) => {
      near(row.response_cache, es.filter((e) => e.cache_hit).length / es.length, `response cache @${t}`);
      const prompt = sum(es, (e) => e.input_tokens + e.cache_read_tokens + e.cache_write_tokens);
      near(row.prompt_cache_read, prompt ? Number(sum(es, (e) => e.cache_read_tokens)) / Number(prompt) : null, `prompt cache @${t}`);
    }),
  'Prompt cache by model': (rows, evs) => {
    const want = [...groupMap(evs, (e) => e.model ?? '(none)')].map(([model, es]) => ({
      model,
      input_uncached: sum(es, (e) => e.input_tokens).toString(),
      cache_read: sum(es, (e) => e.cache_read_tokens).toString(),
      cache_write: sum(es, (e) => e.cache_write_tokens).toString(),
      cost_usd: usd(sum(es, (e) => e.cost_pusd)),
      read: sum(es, (e) => e.cache_read_tokens),
      prompt: sum(es, (e) => e.input_tokens + e.cache_read_tokens + e.cache_write_tokens),
    }));
    want.sort((a, b) => (a.read !== b.read ? (a.read > b.read ? -1 : 1) : a.model < b.model ? -1 : 1));
    assert.deepEqual(
      rows.map((r) => r.model),
      want.map((w) => w.model),
    );
    rows.forEach((r, i) => {
      const w = want[i];
      for (const k of ['input_uncached', 'cache_read', 'cache_write', 'cost_usd']) assert.equal(r[k], w[k], `${w.model} ${k}`);
      near(r.read_share, w.prompt ? Number(w.read) / Number(w.prompt) : null, `${w.model} read share`);
    });
    assert.ok(want.some((w) => w.read > 0n) && want.some((w) => BigInt(w.cache_write) > 0n), 'the seed reads and writes prompt caches');
  },
  'Budgets this period': (rows) => {
    // every configured budget, with the spend of the period that holds now
    const now = Date.now();
    const want = BUDGETS.map((b) => {
      const start = periodStart(b.period, now);
      const match = (e) => (b.scope === 'key' ? e.key_id === b.scope_id : b.scope === 'team' ? e.team === b.scope_id : true);
      const spent = sum(EVENTS.filter((e) => e.ts.getTime() >= start && match(e)), (e) => e.cost_pusd);
      return { ...b, id: b.scope === 'total' ? '(total)' : b.scope_id, spent, end: periodEnd(b.period, start) };
    });
    // share DESC (compared exactly), then scope, scope_id, period
    want.sort((x, y) => {
      const l = x.spent * y.limit;
      const r = y.spent * x.limit;
      if (l !== r) return l > r ? -1 : 1;
      for (const k of ['scope', 'scope_id', 'period']) if (x[k] !== y[k]) return x[k] < y[k] ? -1 : 1;
      return 0;
    });
    assert.ok(want.filter((w) => w.spent > 0n).length >= 3, 'the seed spends against several budgets this period');
    assert.deepEqual(rows.map((r) => [r.scope, r.id, r.period]), want.map((w) => [w.scope, w.id, w.period]));
    rows.forEach((r, i) => {
      const w = want[i];
      assert.equal(r.spent_usd, usd(w.spent), `spent ${w.id} ${w.period}`);
      assert.equal(r.limit_usd, usd(w.limit), `limit ${w.id} ${w.period}`);
      assert.equal(r.held_usd, usd(0n));
      near(r.used_pct, (100 * Number(w.spent)) / Number(w.limit), `used % ${w.id} ${w.period}`);
      assert.equal(r.resets.getTime(), w.end, `resets ${w.id} ${w.period}`);
    });
  },
  'Spend per key per day': (rows, evs) => costBy('key_id')(rows, evs, DAY), // fixed '1d' buckets
  'Latency p50 / p95 / p99': percentiles((e) => Number(e.latency_us) / 1000),
  'Time to first token p50 / p95 / p99': percentiles((e) => (e.streamed && e.ttft_us !== null && e.ttft_us >= 0n ? Number(e.ttft_us) / 1000 : null)),
  'Error rate by provider': perProvider('error_rate', (es) => es.filter(isError).length / es.length),
  'Retries per request by provider': perProvider('retries_per_request', (es) => es.reduce((a, e) => a + retries(e), 0) / es.length),
  'Errors by provider and class': (rows, evs) => {
    const got = new Map(rows.map((r) => [`${r.provider}|${r.error_class}`, `${r.errors}/${r.retries}`]));
    const want = new Map();
    for (const [k, es] of groupMap(evs.filter(isError), (e) => `${e.provider ?? '(none)'}|${e.error_class || `http_${e.status}`}`))
      want.set(k, `${es.length}/${es.reduce((a, e) => a + retries(e), 0)}`);
    sameMap(got, want, 'errors');
    assert.ok(want.size >= 2, 'the seed has errors of several providers/classes');
  },
  'Most expensive requests': (rows, evs) => {
    const want = [...evs]
      .sort((a, b) => (a.cost_pusd !== b.cost_pusd ? (a.cost_pusd > b.cost_pusd ? -1 : 1) : b.ts - a.ts || (a.event_id < b.event_id ? -1 : 1)))
      .slice(0, 20);
    assert.equal(rows[0].event_id, TOP_EVENT.event_id, 'the most expensive request comes first');
    assert.deepEqual(rows.map((r) => r.event_id), want.map((e) => e.event_id));
    assert.equal(rows[0].cost_usd, '9.876543210987');
    assert.equal(rows[0].time.getTime(), TOP_EVENT.ts.getTime());
  },
  'Daily cost vs mean + 2σ': (rows, evs) => {
    const days = dailyCosts(evs);
    const { mean, sd } = meanSd(days.map((d) => Number(usd(d.cost))));
    assert.deepEqual(rows.map((r) => Number(r.time)), days.map((d) => d.day));
    rows.forEach((r, i) => {
      assert.equal(r.cost_usd, usd(days[i].cost));
      near(r.mean_usd, mean, 'mean');
      near(r.threshold_usd, mean + 2 * sd, 'threshold');
    });
  },
  'Days above mean + 2σ': (rows, evs) => {
    const days = dailyCosts(evs);
    const { mean, sd } = meanSd(days.map((d) => Number(usd(d.cost))));
    const want = days.filter((d) => Number(usd(d.cost)) > mean + 2 * sd);
    assert.deepEqual(want.map((d) => d.day * 1000), [OUTLIER_DAY], 'the seed has exactly one outlier day');
    assert.deepEqual(rows.map((r) => r.time.getTime()), [OUTLIER_DAY]);
    assert.equal(rows[0].cost_usd, usd(want[0].cost));
    assert.equal(rows[0].requests, String(want[0].n));
    near(rows[0].z, (Number(usd(want[0].cost)) - mean) / sd, 'z', 1e-6);
    assert.ok(Number(rows[0].z) > 2.5, `a clear outlier (z = ${rows[0].z})`);
  },
};

// ---------------------------------------------------------------------------

let PG;
let URL; // the seeded database
before(async () => {
  PG = await startPostgres({ database: 'seeded' });
  URL = PG.url;
  await runOk(['migrate', '--database-url', URL]);
  const c = new pg.Client({ connectionString: URL });
  await c.connect();
  try {
    // the seed reaches back 12 days: older than the partitions migrate made
    const days = new Set(EVENTS.map((e) => e.ts.toISOString().slice(0, 10)));
    for (const day of days) await c.query('SELECT bridle_ensure_partition($1::date)', [day]);
    // half the events rolled up, the other half still pending, in the same buckets
    const first = EVENTS.filter((_, i) => i % 2 === 0);
    const second = EVENTS.filter((_, i) => i % 2 === 1);
    assert.equal((await insertEvents(c, first)).rowCount, first.length);
    const moved = await c.query('SELECT bridle_rollup() AS n');
    assert.ok(Number(moved.rows[0].n) > 0, 'the first half is rolled up');
    await c.query('BEGIN');
    const r = await insertEvents(c, second);
    assert.equal(r.rowCount, second.length);
    const again = await insertEvents(c, EVENTS.slice(0, 5)); // a replay
    assert.equal(again.rowCount, 0, 'a replayed event is dropped by ON CONFLICT DO NOTHING');
    await c.query('COMMIT');
    const state = await c.query('SELECT (SELECT count(*) FROM usage_rollup_ops)::int AS rolled, (SELECT count(*) FROM usage_rollup_pending)::int AS pending');
    assert.ok(state.rows[0].rolled > 0 && state.rows[0].pending > 0, `rolled-up and pending rows both take part: ${JSON.stringify(state.rows[0])}`);
    for (const b of BUDGETS)
      await c.query('INSERT INTO bridle_budgets (scope, scope_id, period, limit_pusd) VALUES ($1, $2, $3, $4)', [b.scope, b.scope_id, b.period, b.limit.toString()]);
  } finally {
    await c.end();
  }
});
after(async () => {
  if (PG) await PG.stop();
});

describe('grafana dashboard', () => {
  const RANGE = { from: new Date(TODAY0 - 13 * DAY), to: new Date(NOW + 60000) };
  // the "Live" row reads Prometheus (tests/integration/metrics.test.mjs runs its queries)
  const panels = DASHBOARD.panels.filter((p) => p.type !== 'row' && p.datasource?.type !== 'prometheus');

  test('provisioning files are consistent', () => {
    const uid = /^\s*uid:\s*([\w-]+)/m.exec(DATASOURCES)?.[1];
    assert.equal(uid, 'bridle-pg');
    const provider = fs.readFileSync(path.join(ROOT, 'deploy/grafana/provisioning/dashboards/bridle.yaml'), 'utf8');
    assert.match(provider, /^apiVersion: 1$/m);
    assert.match(provider, /type: file/);
    assert.match(provider, /path: \/var\/lib\/grafana\/dashboards/);
    assert.ok(DASHBOARD.uid && DASHBOARD.title && DASHBOARD.schemaVersion);
    const ids = DASHBOARD.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    for (const p of panels) {
      assert.deepEqual(p.datasource, { type: 'grafana-postgresql-datasource', uid }, p.title);
      for (const t of p.targets) {
        assert.deepEqual(t.datasource, p.datasource, p.title);
        assert.ok(t.rawQuery && t.editorMode === 'code' && ['time_series', 'table'].includes(t.format), p.title);
        if (/bridle_budget_status/.test(t.rawSql))
          // budgets are about the period that holds now, not the dashboard's range
          assert.doesNotMatch(t.rawSql, /\$__time|\$budget/, `${p.title} reads the configured budgets, no dashboard variable`);
        else {
          // the rollup readers over the dashboard's range, never a scan of the raw events
          assert.match(
            t.rawSql,
            /bridle_(usage|usage_hist|top)\(\$__timeFrom\(\)::timestamptz, \$__timeTo\(\)::timestamptz,|bridle_usage_by\('(key|team|agent|task|feature|tier)', \$__timeFrom\(\)::timestamptz, \$__timeTo\(\)::timestamptz,/,
            `${p.title} reads the rollups over the dashboard's time range`,
          );
          assert.doesNotMatch(t.rawSql, /usage_events|\$__timeFilter/, `${p.title} does not scan usage_events`);
          // a time series' grain is never coarser than its points: at most $__interval (at least 5 minutes, the finest rollup)
          if (t.format === 'time_series' && /\$__interval/.test(t.rawSql))
            assert.match(t.rawSql, /LEAST\(interval '1 day', GREATEST\(interval '5 minutes', '\$__interval'::interval\)\)/, p.title);
          // at most 720 points: Grafana's interval for 30 days is then 1 h (not 30 min), so a month reads hour rows
          if (t.format === 'time_series' && /\$__interval/.test(t.rawSql)) assert.equal(p.maxDataPoints, 720, p.title);
        }
        if (t.format === 'time_series') assert.match(t.rawSql, /AS "time"|\$__timeGroupAlias/, p.title);
      }
    }
    assert.deepEqual(DASHBOARD.templating.list.map((v) => v.name), [], 'no dashboard variables: budgets come from bridle_budgets');
    // every panel has a check below, and every check a panel
    assert.deepEqual(panels.map((p) => p.title).sort(), Object.keys(CHECKS).sort());
  });

  // checks that hold on the long range only (the budgets are about now; one
  // outlier among six partial days is not > 2.5 σ)
  const LONG_ONLY = new Set(['Budgets this period', 'Days above mean + 2σ']);
  for (const p of panels) {
    test(`panel: ${p.title}`, async () => {
      const c = new pg.Client({ connectionString: URL });
      await c.connect();
      try {
        const inRange = (r) => EVENTS.filter((e) => e.ts >= r.from && e.ts < r.to); // [from, to), as bridle_usage
        for (const t of p.targets) {
          const runs = [[RANGE, DAY], [RANGE, 3600000], [EDGE, DAY], [EDGE, 3600000], [EDGE, 300000]];
          for (const [range, ms] of runs) {
            if (LONG_ONLY.has(p.title) && (range !== RANGE || ms !== DAY)) continue;
            const sql = grafanaExpand(t.rawSql, { ...range, intervalMs: ms });
            assert.doesNotMatch(sql, /\$__|\$budget/, 'every macro expanded');
            const { rows } = await c.query(sql);
            assert.ok(rows.length > 0, `${p.title}: rows`);
            CHECKS[p.title](rows, inRange(range), ms);
          }
          // the same panel zoomed in to one hour (narrow range, 1m points on the 5m grain) must still run
          const narrow = grafanaExpand(t.rawSql, { from: new Date(NOW - 3600000), to: new Date(NOW), intervalMs: 60000 });
          await c.query(narrow);
        }
      } finally {
        await c.end();
      }
    });
  }

  test('hourly buckets add up to the same total', async () => {
    const p = panels.find((x) => x.title === 'Cost by model');
    const sql = grafanaExpand(p.targets[0].rawSql, { ...RANGE, intervalMs: 3600000 });
    const { rows } = await PG.query(URL, sql);
    CHECKS['Cost by model'](rows, EVENTS, 3600000);
    const total = rows.reduce((a, r) => a + BigInt(r.cost_usd.replace('.', '')), 0n);
    assert.equal(total, sum(EVENTS, (e) => e.cost_pusd));
  });

  test('cost by key: the 10 keys that cost most over the range, the others add up in (other)', async () => {
    // 14 keys and no key (the cheapest), costs distinct per key, over yesterday and today;
    // half rolled up, half pending
    const url = await PG.createDatabase('manykeys');
    await runOk(['migrate', '--database-url', url]);
    const today = await pgToday(url);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      for (const day of [today - DAY, today]) await c.query('SELECT bridle_ensure_partition($1::date)', [new Date(day).toISOString().slice(0, 10)]);
      const evs = [];
      for (let k = 0; k <= 14; k++)
        for (let j = 0; j < 6; j++) {
          const ts = new Date(Math.min(today - DAY + j * 9000000 + k * 61000, NOW - 1000));
          evs.push({ event_id: `mk-${k}-${j}`, ts, key_id: k === 0 ? null : `key-${String(k).padStart(2, '0')}`, cost_pusd: BigInt((k + 1) * 1000003 + j) });
        }
      const ins = (es) =>
        c.query(
          `INSERT INTO usage_events (event_id, ts, key_id, status, cost_pusd) SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::int[], $5::bigint[])`,
          [es.map((e) => e.event_id), es.map((e) => e.ts), es.map((e) => e.key_id), es.map(() => 200), es.map((e) => e.cost_pusd.toString())],
        );
      await ins(evs.filter((_, i) => i % 2 === 0));
      await c.query('SELECT bridle_rollup()');
      await ins(evs.filter((_, i) => i % 2 === 1));
      const p = panels.find((x) => x.title === 'Cost by key');
      for (const ms of [DAY, 3600000]) {
        const range = { from: new Date(today - 2 * DAY), to: new Date(NOW + 60000) };
        const { rows } = await c.query(grafanaExpand(p.targets[0].rawSql, { ...range, intervalMs: ms }));
        CHECKS['Cost by key'](rows, evs, ms);
        const names = [...new Set(rows.map((r) => r.metric))].sort();
        // keys 05..14 cost most; 01..04 and the keyless events are (other)
        assert.deepEqual(names, ['(other)', ...Array.from({ length: 10 }, (_, i) => `key-${String(i + 5).padStart(2, '0')}`)]);
        const other = rows.filter((r) => r.metric === '(other)').reduce((a, r) => a + BigInt(r.cost_usd.replace('.', '')), 0n);
        assert.equal(other, sum(evs.filter((e) => e.key_id === null || e.key_id < 'key-05'), (e) => e.cost_pusd));
      }
    } finally {
      await c.end();
    }
  });

  test('days above mean + 2σ: a moderate spike (2 < z < 3) is flagged, ordinary days are not', async () => {
    // 20 days alternating $1 and $3, one day at $5: z(5) = 2.39, z(3) = 0.72
    const url = await PG.createDatabase('spike');
    await runOk(['migrate', '--database-url', url]);
    const today = await pgToday(url);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const spikeDay = today - 11 * DAY;
    try {
      for (let k = 1; k <= 21; k++) {
        const day = today - k * DAY;
        await c.query('SELECT bridle_ensure_partition($1::date)', [new Date(day).toISOString().slice(0, 10)]);
        const cost = day === spikeDay ? 5_000_000_000_000n : k % 2 ? 1_000_000_000_000n : 3_000_000_000_000n;
        await c.query("INSERT INTO usage_events (event_id, ts, status, cost_pusd) VALUES ($1, $2, 200, $3)", [`spike-${k}`, new Date(day + 43200000), cost.toString()]);
      }
      const p = panels.find((x) => x.title === 'Days above mean + 2σ');
      const sql = grafanaExpand(p.targets[0].rawSql, { from: new Date(today - 22 * DAY), to: new Date(today), intervalMs: DAY });
      const { rows } = await c.query(sql);
      assert.deepEqual(rows.map((r) => r.time.getTime()), [spikeDay]);
      assert.equal(rows[0].cost_usd, '5.000000000000');
      near(rows[0].z, 2.39, 'z', 0.01);
    } finally {
      await c.end();
    }
  });

  test('views: usage_events_v, usage_daily and usage_daily_totals agree with the seed', async () => {
    const v = await PG.query(URL, 'SELECT event_id, cost_usd, savings_usd, latency_ms, ttft_ms, is_error FROM usage_events_v WHERE event_id = $1', [TOP_EVENT.event_id]);
    assert.equal(v.rows[0].cost_usd, '9.876543210987');
    assert.equal(v.rows[0].savings_usd, usd(TOP_EVENT.baseline_cost_pusd - TOP_EVENT.cost_pusd));
    const neg = await PG.query(URL, 'SELECT count(*) AS n FROM usage_events_v WHERE ttft_ms IS NOT NULL AND ttft_ms < 0');
    assert.equal(neg.rows[0].n, '0', 'ttft -1 means none');
    const d = await PG.query(URL, 'SELECT sum(requests) AS n, sum(cost_pusd) AS p, sum(savings_usd) AS s, sum(errors) AS e FROM usage_daily');
    assert.equal(d.rows[0].n, String(EVENTS.length));
    assert.equal(d.rows[0].p, sum(EVENTS, (e) => e.cost_pusd).toString());
    assert.equal(d.rows[0].s, usd(sum(EVENTS, (e) => e.baseline_cost_pusd - e.cost_pusd)));
    assert.equal(d.rows[0].e, String(EVENTS.filter(isError).length));
    const t = await PG.query(URL, 'SELECT day_start, cost_usd FROM usage_daily_totals WHERE above_2sigma');
    assert.deepEqual(t.rows.map((r) => r.day_start.getTime()), [OUTLIER_DAY]);
  });
});

// ---------------------------------------------------------------------------

describe('bridle cost', () => {
  const FROM = new Date(TODAY0 - 13 * DAY).toISOString();
  const TO = new Date(NOW + 60000).toISOString();
  const win = ['--from', FROM, '--to', TO];
  const measures = reportMeasures;

  test('summary --json: exact totals over a window', async () => {
    const { stdout } = await runOk(['cost', 'summary', '--json', '--database-url', URL, ...win]);
    const j = JSON.parse(stdout);
    assert.equal(j.period, 'custom');
    assert.equal(Date.parse(j.from), Math.floor(Date.parse(FROM) / 1000) * 1000);
    assert.equal(Date.parse(j.to), Math.floor(Date.parse(TO) / 1000) * 1000);
    const { period, from, to, ...rest } = j;
    assert.deepEqual(rest, measures(EVENTS));
    // the exact decimal text, not just the same double
    assert.match(stdout, new RegExp(`"cost_usd": ${usd(sum(EVENTS, (e) => e.cost_pusd)).replace('.', '\\.')}[,}]`));
    assert.match(stdout, new RegExp(`"cost_pusd": ${sum(EVENTS, (e) => e.cost_pusd)}[,}]`));
  });

  test('summary --period month|day (DATABASE_URL from the environment)', async () => {
    const month = JSON.parse((await runOk(['cost', 'summary', '--period', 'month', '--json'], { env: { DATABASE_URL: URL } })).stdout);
    assert.equal(month.period, 'month');
    assert.equal(Date.parse(month.to) - Date.parse(month.from), 30 * DAY);
    const inMonth = EVENTS.filter((e) => e.ts >= Date.parse(month.from) && e.ts < Date.parse(month.to));
    assert.equal(inMonth.length, EVENTS.length - 1, 'all but the one a minute from now');
    assert.equal(month.cost_usd, measures(EVENTS).cost_usd);
    const { period: _p, from: _f, to: _t, ...monthRest } = month;
    assert.deepEqual(monthRest, measures(inMonth));
    const day = JSON.parse((await runOk(['cost', 'summary', '--period', 'day', '--json', '--database-url', URL])).stdout);
    assert.equal(day.period, 'day');
    const inDay = EVENTS.filter((e) => e.ts >= Date.parse(day.from) && e.ts < Date.parse(day.to));
    assert.equal(inDay.length, 8); // the 6 hourly ones and the 2 in the current periods
    const { period, from, to, ...rest } = day;
    assert.deepEqual(rest, measures(inDay));
  });

  test('summary table shows the totals', async () => {
    const { stdout } = await runOk(['cost', 'summary', '--database-url', URL, ...win]);
    assert.match(stdout, /cost summary/);
    const line = (label) => stdout.split('\n').find((l) => new RegExp(`^  ${label}\\s{2,}`).test(l)) ?? '';
    assert.ok(line('requests').trim().endsWith(grouped(String(EVENTS.length))));
    assert.ok(line('cost').trim().endsWith(money6(sum(EVENTS, (e) => e.cost_pusd))), stdout);
    assert.ok(line('baseline cost').trim().endsWith(money6(sum(EVENTS, (e) => e.baseline_cost_pusd))), stdout);
    assert.ok(line('savings').trim().endsWith(money6(sum(EVENTS, (e) => e.baseline_cost_pusd - e.cost_pusd))), stdout);
    assert.ok(line('output tokens').trim().endsWith(grouped(sum(EVENTS, (e) => e.output_tokens).toString())));
  });

  for (const [by, col] of [['model', 'model'], ['provider', 'provider'], ['key', 'key_id'], ['team', 'team'], ['agent', 'agent'], ['task', 'task'], ['feature', 'feature']]) {
    test(`breakdown --by ${by} --json: exact rows, most expensive first`, async () => {
      const { stdout } = await runOk(['cost', 'breakdown', '--by', by, '--json', '--database-url', URL, ...win]);
      const rows = JSON.parse(stdout);
      const want = [...groupMap(EVENTS, (e) => e[col]).entries()]
        .map(([k, es]) => ({ [by]: k, ...measures(es), _p: sum(es, (e) => e.cost_pusd) }))
        .sort((a, b) => (a._p !== b._p ? (a._p > b._p ? -1 : 1) : a[by] === null ? 1 : b[by] === null ? -1 : a[by] < b[by] ? -1 : 1))
        .map(({ _p, ...r }) => r);
      assert.deepEqual(rows, want);
    });
  }

  test('breakdown table has a total row', async () => {
    const { stdout } = await runOk(['cost', 'breakdown', '--by', 'provider', '--database-url', URL, ...win]);
    const total = stdout.split('\n').find((l) => l.startsWith('total'));
    assert.ok(total, stdout);
    assert.ok(total.includes(money6(sum(EVENTS, (e) => e.cost_pusd))), stdout);
    for (const p of ['openai', 'anthropic', 'gemini', 'ollama']) assert.match(stdout, new RegExp(`^${p}\\s`, 'm'));
  });

  test('top --json: the most expensive requests, in order', async () => {
    const { stdout } = await runOk(['cost', 'top', '--limit', '3', '--json', '--database-url', URL, ...win]);
    const rows = JSON.parse(stdout);
    const want = [...EVENTS].sort((a, b) => (a.cost_pusd !== b.cost_pusd ? (a.cost_pusd > b.cost_pusd ? -1 : 1) : b.ts - a.ts)).slice(0, 3);
    assert.deepEqual(rows.map((r) => r.event_id), want.map((e) => e.event_id));
    const [t] = rows;
    assert.equal(t.event_id, TOP_EVENT.event_id);
    assert.equal(Date.parse(t.ts), TOP_EVENT.ts.getTime());
    assert.equal(t.model, 'gpt-4o');
    assert.equal(t.key, 'key-c');
    assert.equal(t.cost_usd, 9.876543210987);
    assert.equal(t.cost_pusd, 9876543210987);
    assert.equal(t.output_tokens, Number(TOP_EVENT.output_tokens));
    const table = (await runOk(['cost', 'top', '--database-url', URL, ...win])).stdout;
    assert.match(table, new RegExp(`${TOP_EVENT.event_id}.*\\$9\\.876543`));
  });

  test('a window off the 5-minute grid, rows still pending: summary, breakdown and top stay exact', async () => {
    // EDGE starts 7 min 13 s into a day and ends 2 h 2.5 min into another: raw
    // pieces at both ends (with events on `from`, on `to` and a second outside),
    // whole hours and days from the rollups, half of every bucket still pending
    const edge = ['--from', EDGE.from.toISOString(), '--to', EDGE.to.toISOString()];
    const evs = EVENTS.filter((e) => e.ts >= EDGE.from && e.ts < EDGE.to);
    assert.ok(evs.some((e) => e.ts.getTime() === EDGE.from.getTime()) && EVENTS.some((e) => e.ts.getTime() === EDGE.to.getTime()));
    const pending = await PG.query(URL, 'SELECT count(*)::int AS n FROM usage_rollup_pending WHERE bucket >= $1 AND bucket < $2', [EDGE.from, EDGE.to]);
    assert.ok(pending.rows[0].n > 0, 'some of the window is still pending');
    const s = JSON.parse((await runOk(['cost', 'summary', '--json', '--database-url', URL, ...edge])).stdout);
    const { period, from, to, ...rest } = s;
    assert.deepEqual(rest, measures(evs));
    for (const [by, col] of [['key', 'key_id'], ['day', null]]) {
      const rows = JSON.parse((await runOk(['cost', 'breakdown', '--by', by, '--json', '--database-url', URL, ...edge])).stdout);
      const keyOf = col ? (e) => e[col] : (e) => e.ts.toISOString().slice(0, 10);
      const got = new Map(rows.map(({ [by]: k, ...m }) => [k, m]));
      const want = new Map([...groupMap(evs, keyOf).entries()].map(([k, es]) => [k, measures(es)]));
      assert.deepEqual(got, want, `breakdown --by ${by}`);
    }
    const top = JSON.parse((await runOk(['cost', 'top', '--limit', '100', '--json', '--database-url', URL, ...edge])).stdout);
    const want = [...evs].sort((a, b) => (a.cost_pusd !== b.cost_pusd ? (a.cost_pusd > b.cost_pusd ? -1 : 1) : b.ts - a.ts || (a.event_id < b.event_id ? -1 : 1))).slice(0, 100);
    assert.deepEqual(top.map((r) => r.event_id), want.map((e) => e.event_id));
    assert.deepEqual(top.map((r) => r.latency_ms), want.map((e) => Number(e.latency_us) / 1000));
    // a rollup run in between changes nothing
    await PG.query(URL, 'SELECT bridle_rollup()');
    const again = JSON.parse((await runOk(['cost', 'summary', '--json', '--database-url', URL, ...edge])).stdout);
    assert.deepEqual(again, s);
  });

  test('top: --limit is at most 100 (the rollups keep the top 100 of each hour)', async () => {
    const r = await runBridle(['cost', 'top', '--limit', '101', '--database-url', URL]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--limit wants a number from 1 to 100, not "101"/);
    assert.equal(r.stdout, '');
  });

  test('errors: unreachable database, missing schema, bad arguments', async () => {
    const port = await freePort(); // nothing listens there
    const down = await runBridle(['cost', 'summary', '--database-url', `postgresql://postgres@127.0.0.1:${port}/x`]);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /cannot connect to the database/);
    assert.equal(down.stdout, '');
    const empty = await PG.createDatabase('no_schema');
    const missing = await runBridle(['cost', 'top', '--database-url', empty]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /run `bridle migrate`/);
    const noUrl = await runBridle(['cost', 'summary']);
    assert.equal(noUrl.code, 2);
    assert.match(noUrl.stderr, /DATABASE_URL/);
    const badBy = await runBridle(['cost', 'breakdown', '--by', 'colour', '--database-url', URL]);
    assert.equal(badBy.code, 2);
    assert.match(badBy.stderr, /--by is one of/);
    const badPeriod = await runBridle(['cost', 'summary', '--period', 'year', '--database-url', URL]);
    assert.equal(badPeriod.code, 2);
  });
});

// ---------------------------------------------------------------------------

/** Midnight UTC today by the server's clock (what the partition functions use). */
async function pgToday(url) {
  const { rows } = await PG.query(url, "SELECT to_char((now() AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') || 'T00:00:00Z' AS d");
  return Date.parse(rows[0].d);
}

// every migration in the repository, in order (the binary embeds them all)
const MIGRATIONS = fs
  .readdirSync(path.join(ROOT, 'migrations'))
  .filter((f) => /^\d{4}_.*\.sql$/.test(f))
  .sort()
  .map((f) => f.replace(/\.sql$/, ''));

describe('migrations and partitions', () => {
  test('migrate twice: the second run is a no-op', async () => {
    const url = await PG.createDatabase('twice');
    const first = await runOk(['migrate', '--database-url', url]);
    assert.match(first.stdout, /^applied 0001_usage_events/m);
    assert.match(first.stdout, /^applied 0002_ledger_insert_rate/m);
    const second = await runOk(['migrate'], { env: { DATABASE_URL: url } });
    assert.match(second.stdout, /database is up to date/);
    assert.doesNotMatch(second.stdout, /applied 0/);
    const { rows } = await PG.query(url, 'SELECT version, name FROM bridle_schema_migrations ORDER BY version');
    assert.deepEqual(rows, MIGRATIONS.map((name) => ({ version: Number(name.slice(0, 4)), name })));
    const status = await runOk(['migrate', '--status', '--database-url', url]);
    assert.match(status.stdout, /0001_usage_events\s+applied/);
  });

  test('two gateways migrating at once apply each migration once', async () => {
    const url = await PG.createDatabase('racing');
    const [a, b] = await Promise.all([runOk(['migrate', '--database-url', url]), runOk(['migrate', '--database-url', url])]);
    for (const name of MIGRATIONS) {
      const applied = [a, b].filter((r) => new RegExp(`applied ${name}`).test(r.stdout));
      assert.equal(applied.length, 1, `${name}:\n${a.stdout}\n${b.stdout}`);
    }
    const { rows } = await PG.query(url, 'SELECT count(*)::int AS n FROM bridle_schema_migrations');
    assert.equal(rows[0].n, MIGRATIONS.length);
  });

  test('migrate: dry run, no URL, unreachable database', async () => {
    const url = await PG.createDatabase('dry');
    const dry = await runOk(['migrate', '--dry-run', '--database-url', url]);
    assert.match(dry.stdout, /pending: 0001_usage_events/);
    const { rows } = await PG.query(url, "SELECT to_regclass('usage_events') AS t, to_regclass('bridle_schema_migrations') AS m");
    assert.deepEqual(rows[0], { t: null, m: null }, 'a dry run changes nothing');
    const noUrl = await runBridle(['migrate']);
    assert.equal(noUrl.code, 2);
    assert.match(noUrl.stderr, /--database-url/);
    const down = await runBridle(['migrate', '--database-url', `postgresql://postgres@127.0.0.1:${await freePort()}/x`]);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /cannot connect to the database/);
  });

  test('0002 upgrades a ledger made by 0001: rows kept, key (ts, event_id), no B-trees on key/team', async () => {
    const url = await PG.createDatabase('upgrade');
    const v1 = fs.readFileSync(path.join(ROOT, 'migrations/0001_usage_events.sql'), 'utf8');
    await PG.query(url, v1);
    await PG.query(url, 'CREATE TABLE bridle_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
    await PG.query(url, "INSERT INTO bridle_schema_migrations (version, name) VALUES (1, '0001_usage_events')");
    await PG.query(url, 'SELECT bridle_ensure_partitions(1)');
    await PG.query(url, "INSERT INTO usage_events (event_id, ts, status, cost_pusd) VALUES ('old', now(), 200, 7)");
    const r = await runOk(['migrate', '--database-url', url]);
    assert.match(r.stdout, /^applied 0002_ledger_insert_rate/m);
    assert.doesNotMatch(r.stdout, /applied 0001/);
    const key = await PG.query(url, "SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint WHERE conrelid = 'usage_events'::regclass AND contype = 'p'");
    assert.deepEqual(key.rows, [{ d: 'PRIMARY KEY (ts, event_id)' }]);
    const idx = await PG.query(url, "SELECT indexname FROM pg_indexes WHERE tablename = 'usage_events' ORDER BY 1");
    assert.deepEqual(idx.rows.map((x) => x.indexname), ['usage_events_pkey', 'usage_events_ts_brin']);
    const kept = await PG.query(url, "SELECT event_id, cost_pusd::int AS c FROM usage_events");
    assert.deepEqual(kept.rows, [{ event_id: 'old', c: 7 }]);
    const dup = await PG.query(url, "INSERT INTO usage_events (event_id, ts, status) SELECT event_id, ts, 500 FROM usage_events ON CONFLICT DO NOTHING");
    assert.equal(dup.rowCount, 0, 'a replayed event is still dropped by the key');
  });

  test('a migration that fails names itself and the PostgreSQL error', async () => {
    const url = await PG.createDatabase('clash');
    await PG.query(url, 'CREATE TABLE usage_events (x int)'); // in the way
    const r = await runBridle(['migrate', '--database-url', url]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /migration 0001_usage_events failed: relation "usage_events" already exists/);
    const { rows } = await PG.query(url, 'SELECT count(*)::int AS n FROM bridle_schema_migrations');
    assert.equal(rows[0].n, 0, 'nothing recorded, the transaction rolled back');
  });

  test('bridle_ensure_partitions is idempotent; no default partition', async () => {
    const url = await PG.createDatabase('parts');
    await runOk(['migrate', '--database-url', url]);
    const parts = async () =>
      (await PG.query(url, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'usage_events'::regclass ORDER BY 1")).rows.map((r) => r.relname);
    const made = await parts();
    const today = await pgToday(url);
    const day = (k) => `usage_events_p${new Date(today + k * DAY).toISOString().slice(0, 10).replaceAll('-', '')}`;
    assert.deepEqual(made, [-1, 0, 1, 2, 3, 4, 5, 6, 7].map(day), 'yesterday .. today+7 after migrate');
    assert.equal((await PG.query(url, 'SELECT bridle_ensure_partitions(7) AS n')).rows[0].n, 0);
    assert.deepEqual(await parts(), made);
    // two sessions racing for the same new days
    const [x, y] = await Promise.all([PG.query(url, 'SELECT bridle_ensure_partitions(12) AS n'), PG.query(url, 'SELECT bridle_ensure_partitions(12) AS n')]);
    assert.equal(x.rows[0].n + y.rows[0].n, 5);
    assert.equal((await parts()).length, 14);
    // an event for a day without a partition is refused, not silently kept
    await assert.rejects(
      PG.query(url, "INSERT INTO usage_events (event_id, ts, status) VALUES ('x', now() - interval '30 days', 200)"),
      /no partition of relation "usage_events" found/,
    );
  });

  test('bridle_drop_partitions_older_than drops old partitions only', async () => {
    const url = await PG.createDatabase('retention');
    await runOk(['migrate', '--database-url', url]);
    const today = await pgToday(url);
    const iso = (k) => new Date(today - k * DAY).toISOString().slice(0, 10);
    for (const k of [40, 35, 31, 30, 29]) await PG.query(url, 'SELECT bridle_ensure_partition($1::date)', [iso(k)]);
    const ins = (k, id) => PG.query(url, 'INSERT INTO usage_events (event_id, ts, status, cost_pusd) VALUES ($1, $2, 200, 1)', [id, new Date(today - k * DAY + 3600000)]);
    await ins(35, 'old');
    await ins(30, 'edge');
    await ins(0, 'today');
    // keeps today and the 30 days before it: drops the days 40, 35 and 31 back
    assert.equal((await PG.query(url, 'SELECT bridle_drop_partitions_older_than(30) AS n')).rows[0].n, 3);
    const left = (await PG.query(url, 'SELECT event_id FROM usage_events ORDER BY 1')).rows.map((r) => r.event_id);
    assert.deepEqual(left, ['edge', 'today']);
    const { rows } = await PG.query(url, "SELECT count(*)::int AS n FROM pg_inherits WHERE inhparent = 'usage_events'::regclass");
    assert.equal(rows[0].n, 11, 'days 30 and 29 back plus yesterday .. today+7');
    assert.equal((await PG.query(url, 'SELECT bridle_drop_partitions_older_than(30) AS n')).rows[0].n, 0, 'idempotent');
    await assert.rejects(PG.query(url, 'SELECT bridle_drop_partitions_older_than(-1)'), /days must be >= 0/);
  });
});

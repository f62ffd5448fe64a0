// `bridle cost breakdown` on the readers of migration 0008, against a seed of
// usage events we control exactly:
//  - --by requested_model (the ops rollup: bridle_usage) and --by an
//    attribution dimension (key, team, agent, task, feature, tier: one row
//    per value in bridle_usage_by) give the rows computed here from the raw
//    seed, over a window off the 5-minute grid (raw edges), with half of
//    every bucket rolled up and half still pending (the readers return
//    pieces that share buckets: the CLI must sum them);
//  - they read the rollups, not the raw events: after the raw events of a
//    rolled-up day are deleted, they still count them (--by user, which is
//    no rollup dimension, does not);
//  - a database without 0008's bridle_usage_by is told to run `bridle migrate`.
// dashboards.test.mjs checks summary, top and the other breakdowns.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { runCli as runBridle, runCliOk as runOk } from './lib/harness.mjs';
import { groupMap, insertEvents, money6, mulberry32, reportMeasures, sum } from './lib/events.mjs';
import { startPostgres } from './lib/pg.mjs';


// ---------------------------------------------------------------------------
// the seed: deterministic, relative to today (UTC)

const DAY = 86400000;
const TODAY0 = Math.floor(Date.now() / DAY) * DAY;
const SEED_DAYS = [6, 5, 4, 3, 2].map((k) => TODAY0 - k * DAY);
// 7 min 13 s into a day .. 2 h 2.5 min into another: raw edges at both ends
const WIN = { from: new Date(TODAY0 - 5 * DAY + 433000), to: new Date(TODAY0 - 2 * DAY + 7350000) };
// a whole day inside WIN whose raw events the last test deletes
const GONE_DAY = TODAY0 - 4 * DAY;

const ROUTES = [
  { requested_model: 'gpt-4o', model: 'gpt-4o', provider: 'openai', tier: 'heavy' },
  { requested_model: 'gpt-4o', model: 'claude-sonnet', provider: 'anthropic', tier: 'mid' },
  { requested_model: 'auto', model: 'gemini-flash', provider: 'gemini', tier: 'budget' },
  { requested_model: 'auto', model: 'gpt-4o', provider: 'openai', tier: 'heavy' },
  { requested_model: 'gpt-4o-mini', model: 'llama3', provider: 'ollama', tier: null },
  { requested_model: null, model: 'gpt-4o', provider: 'openai', tier: null },
];
const KEYS = [
  { key_id: 'key-a', team: 'alpha' },
  { key_id: 'key-b', team: 'alpha' },
  { key_id: 'key-c', team: 'beta' },
  { key_id: null, team: null },
];
const AGENTS = ['planner', 'coder', null];
const TASKS = ['chat', 'summarize', null];
const FEATURES = ['search', 'inbox', null];
const USERS = ['user-1', 'user-2', null];

function makeSeed() {
  const r = mulberry32(20261206);
  const int = (lo, hi) => lo + Math.floor(r() * (hi - lo + 1));
  const pick = (a) => a[Math.floor(r() * a.length)];
  const events = [];
  const ev = (tsMs) => {
    const roll = r();
    const [status, error_class, attempts] = roll < 0.1 ? [502, 'upstream_timeout', 3] : roll < 0.15 ? [429, 'rate_limited', 1] : [200, null, r() < 0.2 ? 2 : 1];
    const cost = status === 429 ? 0n : BigInt(int(1_000_000_000, 50_000_000_000));
    const latency = BigInt(int(50_000, 3_000_000));
    events.push({
      event_id: (events.length + 1).toString(16).padStart(32, '0'),
      ts: new Date(tsMs),
      ...pick(KEYS),
      end_user: pick(USERS),
      agent: pick(AGENTS),
      task: pick(TASKS),
      feature: pick(FEATURES),
      ...pick(ROUTES),
      route_reason: 'test',
      streamed: false,
      status,
      error_class,
      attempts,
      input_tokens: BigInt(int(10, 20000)),
      cache_read_tokens: r() < 0.4 ? BigInt(int(0, 8000)) : 0n,
      cache_write_tokens: r() < 0.2 ? BigInt(int(0, 3000)) : 0n,
      output_tokens: BigInt(int(1, 4000)),
      reasoning_tokens: r() < 0.3 ? BigInt(int(0, 500)) : 0n,
      usage_exact: true,
      cost_pusd: cost,
      baseline_cost_pusd: cost + BigInt(int(0, 5_000_000_000)),
      latency_us: latency,
      ttft_us: -1n,
      upstream_us: latency - 1000n,
      cache_hit: false,
      batch_id: null,
    });
  };
  for (const day of SEED_DAYS) for (let i = 0; i < 30; i++) ev(day + 120000 + int(0, DAY - 240000));
  // on the window's edges (from counts, to does not) and just outside them
  for (const t of [-1000, 0, 1000, 100000]) ev(WIN.from.getTime() + t);
  for (const t of [-100000, -1000, 0, 1000]) ev(WIN.to.getTime() + t);
  return events;
}

let EVENTS = makeSeed();


// ---------------------------------------------------------------------------
// arithmetic on the seed

const measures = reportMeasures;
/** The rows `breakdown --by BY --json` must print: most expensive first, none last among equals. */
function wantRows(by, evs, keyFn) {
  return [...groupMap(evs, keyFn).entries()]
    .map(([k, es]) => ({ [by]: k, ...measures(es), _p: sum(es, (e) => e.cost_pusd) }))
    .sort((a, b) => (a._p !== b._p ? (a._p > b._p ? -1 : 1) : a[by] === null ? 1 : b[by] === null ? -1 : a[by] < b[by] ? -1 : 1))
    .map(({ _p, ...r }) => r);
}

const COLUMN = { requested_model: 'requested_model', key: 'key_id', team: 'team', agent: 'agent', task: 'task', feature: 'feature', tier: 'tier', user: 'end_user', model: 'model' };
const inWin = () => EVENTS.filter((e) => e.ts >= WIN.from && e.ts < WIN.to);
const win = () => ['--from', WIN.from.toISOString(), '--to', WIN.to.toISOString()];

// ---------------------------------------------------------------------------

let PG;
let URL;
before(async () => {
  PG = await startPostgres({ database: 'cost' });
  URL = PG.url;
  await runOk(['migrate', '--database-url', URL]);
  const c = new pg.Client({ connectionString: URL });
  await c.connect();
  try {
    for (const day of new Set(EVENTS.map((e) => e.ts.toISOString().slice(0, 10))))
      await c.query('SELECT bridle_ensure_partition($1::date)', [day]);
    // half rolled up, half pending, in the same buckets
    await insertEvents(c, EVENTS.filter((_, i) => i % 2 === 0));
    assert.ok(Number((await c.query('SELECT bridle_rollup() AS n')).rows[0].n) > 0);
    await insertEvents(c, EVENTS.filter((_, i) => i % 2 === 1));
    const { rows } = await c.query(
      'SELECT (SELECT count(*) FROM usage_rollup_attr)::int AS attr, (SELECT count(*) FROM usage_rollup_ops)::int AS ops, (SELECT count(*) FROM usage_rollup_pending)::int AS pending',
    );
    assert.ok(rows[0].attr > 0 && rows[0].ops > 0 && rows[0].pending > 0, JSON.stringify(rows[0]));
  } finally {
    await c.end();
  }
});
after(async () => {
  if (PG) await PG.stop();
});

describe('bridle cost breakdown on the rollups of 0008', () => {
  test('the seed covers what the breakdowns must tell apart', () => {
    const evs = inWin();
    assert.ok(evs.some((e) => e.ts.getTime() === WIN.from.getTime()) && EVENTS.some((e) => e.ts.getTime() === WIN.to.getTime()));
    for (const col of ['requested_model', 'tier', 'agent', 'key_id'])
      assert.ok(evs.some((e) => e[col] === null) && new Set(evs.map((e) => e[col])).size >= 3, col);
    // requested_model is not a function of model (nor the other way round)
    assert.ok(new Set(evs.filter((e) => e.model === 'gpt-4o').map((e) => e.requested_model)).size >= 3);
  });

  for (const by of ['requested_model', 'tier', 'agent', 'key', 'team', 'task', 'feature', 'model', 'user']) {
    test(`--by ${by} --json: exact rows over a window off the grid, most expensive first`, async () => {
      const rows = JSON.parse((await runOk(['cost', 'breakdown', '--by', by, '--json', '--database-url', URL, ...win()])).stdout);
      assert.deepEqual(rows, wantRows(by, inWin(), (e) => e[COLUMN[by]]));
    });
  }

  test('--by requested_model table: (none) and a total equal to the summary', async () => {
    const evs = inWin();
    const { stdout } = await runOk(['cost', 'breakdown', '--by', 'requested_model', '--database-url', URL, ...win()]);
    assert.match(stdout, /^cost by requested_model/);
    const line = (first) => stdout.split('\n').find((l) => l.startsWith(`${first} `)) ?? '';
    for (const [k, es] of groupMap(evs, (e) => e.requested_model)) assert.ok(line(k ?? '(none)').includes(money6(sum(es, (e) => e.cost_pusd))), `${k}\n${stdout}`);
    assert.ok(line('total').includes(money6(sum(evs, (e) => e.cost_pusd))), stdout);
    const s = JSON.parse((await runOk(['cost', 'summary', '--json', '--database-url', URL, ...win()])).stdout);
    assert.equal(s.cost_pusd, Number(sum(evs, (e) => e.cost_pusd)));
  });

  test('--by day: one row per UTC day, the partial days at the edges included', async () => {
    const rows = JSON.parse((await runOk(['cost', 'breakdown', '--by', 'day', '--json', '--database-url', URL, ...win()])).stdout);
    const want = [...groupMap(inWin(), (e) => e.ts.toISOString().slice(0, 10)).entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([day, es]) => ({ day, ...measures(es) }));
    assert.deepEqual(rows, want);
  });

  test('the help and a bad --by name requested_model among the rollup dimensions', async () => {
    const help = await runOk(['cost', '--help']);
    assert.match(help.stdout, /--by model\|provider\|requested_model\|key\|team\|agent\|task\|/);
    assert.match(help.stdout, /--by user scans the raw events/);
    const bad = await runBridle(['cost', 'breakdown', '--by', 'end_user', '--database-url', URL]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--by is one of model, provider, requested_model, key, team, agent, task, feature, tier, user, day \(not "end_user"\)/);
  });

  test('a database without 0008 readers: run `bridle migrate`; alert reads budgets only', async () => {
    const old = await PG.createDatabase('before_0008');
    await runOk(['migrate', '--database-url', old]);
    await PG.query(old, 'DROP FUNCTION bridle_usage_by(text, timestamptz, timestamptz, interval)');
    for (const args of [['summary'], ['breakdown', '--by', 'model'], ['top']]) {
      const r = await runBridle(['cost', ...args, '--database-url', old]);
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, /bridle_usage_by/);
      assert.match(r.stderr, /run `bridle migrate`/);
      assert.equal(r.stdout, '');
    }
    const alert = await runBridle(['cost', 'alert', '--json', '--database-url', old]);
    assert.equal(alert.code, 0, alert.stderr);
    assert.deepEqual(JSON.parse(alert.stdout), []);
  });

  // Last: it deletes raw events.
  test('rollup dimensions come from the rollups, --by user from the raw events', async () => {
    await PG.query(URL, 'SELECT bridle_rollup()');
    const gone = EVENTS.filter((e) => e.ts.getTime() >= GONE_DAY && e.ts.getTime() < GONE_DAY + DAY);
    assert.ok(gone.length >= 20);
    const del = await PG.query(URL, 'DELETE FROM usage_events WHERE ts >= $1 AND ts < $2', [new Date(GONE_DAY), new Date(GONE_DAY + DAY)]);
    assert.equal(del.rowCount, gone.length);
    for (const by of ['requested_model', 'tier', 'key']) {
      const rows = JSON.parse((await runOk(['cost', 'breakdown', '--by', by, '--json', '--database-url', URL, ...win()])).stdout);
      assert.deepEqual(rows, wantRows(by, inWin(), (e) => e[COLUMN[by]]), `--by ${by} still counts the deleted day`);
    }
    const users = JSON.parse((await runOk(['cost', 'breakdown', '--by', 'user', '--json', '--database-url', URL, ...win()])).stdout);
    assert.deepEqual(users, wantRows('user', inWin().filter((e) => !gone.includes(e)), (e) => e.end_user));
  });
});

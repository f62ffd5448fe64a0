// Keys and teams in PostgreSQL (issue 11): two gateways on one database pick
// up keys created, revoked and re-budgeted with `bridle keys` / `bridle
// teams` and the admin API within 2 s (database.keys_refresh_ms, default
// 1000), with no restart. Admin keys work only on /v1/bridle/admin/, client
// keys never there; expired and revoked keys get a 401 that says so; a key
// with a list of models gets 403 model_not_allowed for any other; config
// keys work with no database at all.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';

import { BUILD, ROOT, SANITIZED, get, mockConfig, newKey, post, sha256hex, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster, waitUntil } from './lib/ledgerlib.mjs';

const SAN_ENV = SANITIZED ? { ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', UBSAN_OPTIONS: 'print_stacktrace=1' } : {};
const WITHIN_MS = 2000; // the bound for a change to reach running gateways

let mock;
let db;
let gwA;
let gwB;
const adminKey = `bk-admin-${newKey().key.slice(3)}`;
const admin = { key: adminKey, sha256: sha256hex(adminKey) };

function cli(args, env = {}) {
  const r = spawnSync(`${BUILD}/bridle`, args, {
    cwd: ROOT,
    env: { ...process.env, ...SAN_ENV, DATABASE_URL: db.url, ...env },
    encoding: 'utf8',
    timeout: 60000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function cliOk(args) {
  const r = cli(args);
  assert.equal(r.code, 0, `bridle ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

const chat = (gw, key, model = 'gpt-4o-mini', headers = {}) =>
  post(
    `${gw.baseURL}/chat/completions`,
    { model, messages: [{ role: 'user', content: 'hi' }] },
    { authorization: `Bearer ${key}`, ...headers },
    { timeoutMs: 15000 },
  );

const health = (gw, key) => get(`${gw.baseURL}/bridle/health`, { authorization: `Bearer ${key}` });
const adminReq = (gw, method, p, body, key = admin.key) =>
  post(`${gw.baseURL}/bridle/admin${p}`, body, { authorization: `Bearer ${key}` }, { method });

/** Polls every gateway until pred(reply) holds for all; → ms from t0. */
async function untilAll(gws, ask, pred, what, t0 = Date.now()) {
  const pending = new Set(gws);
  let last;
  while (pending.size) {
    for (const gw of [...pending]) {
      last = await ask(gw);
      if (pred(last)) pending.delete(gw);
    }
    if (!pending.size) break;
    if (Date.now() - t0 > 10000) assert.fail(`${what}: not within 10 s (last: ${last.status} ${last.text})`);
    await sleep(20);
  }
  return Date.now() - t0;
}

before(async () => {
  mock = await startMock();
  db = await startCluster();
  const cfg = (spool) =>
    mockConfig(mock.url, {
      database: { url: db.url, spool_dir: spool, flush_interval_ms: 100 },
      teams: { cfgteam: { budget_daily_usd: '3' } },
      keys: [{ id: 'ops-admin', sha256: admin.sha256, kind: 'admin' }],
    });
  gwA = await startBridle({ config: cfg(tmpDir('bridle-keys-a-')), keyId: 'cfg-a', team: 'cfgteam' });
  gwB = await startBridle({ config: cfg(tmpDir('bridle-keys-b-')), keyId: 'cfg-b', team: 'cfgteam' });
});

after(async () => {
  await gwA?.stop();
  await gwB?.stop();
  await mock?.stop();
  await db?.destroy();
});

describe('keys from the command line reach both gateways', () => {
  let created;

  test('keys create --json prints exactly {id, key}; the key works on both gateways within 2 s', async () => {
    const r = cliOk(['keys', 'create', '--team', 'alpha', '--id', 'cli-1', '--agent', 'agent-007', '--json']);
    const t0 = Date.now();
    assert.match(r.stdout, /^\{"id": "cli-1", "key": "bk-[0-9a-f]{48}"\}\n$/);
    created = JSON.parse(r.stdout);
    assert.deepEqual(Object.keys(created), ['id', 'key']);
    const ms = await untilAll([gwA, gwB], (gw) => chat(gw, created.key), (x) => x.status === 200, 'new key accepted', t0);
    console.log(`# key created with the CLI accepted by both gateways after ${ms} ms`);
    assert.ok(ms < WITHIN_MS, `took ${ms} ms`);
    // the key's agent is recorded when the request names none; the request's own wins
    const h = await chat(gwA, created.key, 'gpt-4o-mini', { 'x-bridle-agent': 'header-agent' });
    assert.equal(h.status, 200);
    const rows = await waitUntil(async () => {
      const q = await db.query("SELECT agent, team FROM usage_events WHERE key_id = 'cli-1' ORDER BY ts");
      return q.rows.length >= 3 ? q.rows : null;
    }, 5000, 'usage rows of cli-1');
    assert.ok(rows.value.some((x) => x.agent === 'agent-007' && x.team === 'alpha'), JSON.stringify(rows.value));
    assert.ok(rows.value.some((x) => x.agent === 'header-agent'), JSON.stringify(rows.value));
  });

  test('keys list shows prefix…last4, never the key', () => {
    const r = cliOk(['keys', 'list', '--json']);
    const list = JSON.parse(r.stdout);
    const k = list.find((x) => x.id === 'cli-1');
    assert.ok(k, r.stdout);
    assert.equal(k.prefix, created.key.slice(0, 7));
    assert.equal(k.last4, created.key.slice(-4));
    assert.equal(k.kind, 'client');
    assert.equal(k.team, 'alpha');
    assert.equal(k.revoked_at, null);
    assert.ok(!r.stdout.includes(created.key));
    const human = cliOk(['keys', 'list']);
    assert.match(human.stdout, new RegExp(`cli-1\\s+${created.key.slice(0, 7)}…${created.key.slice(-4)}\\s+client\\s+alpha`));
    assert.ok(!human.stdout.includes(created.key));
  });

  test('keys revoke: both gateways refuse the key (401 "revoked") within 2 s', async () => {
    cliOk(['keys', 'revoke', 'cli-1']);
    const t0 = Date.now();
    const ms = await untilAll(
      [gwA, gwB],
      (gw) => chat(gw, created.key),
      (x) => x.status === 401 && /revoked \(at \d{4}-\d\d-\d\dT/.test(x.json?.error?.message) && x.json.error.code === 'invalid_api_key',
      'revoked key refused',
      t0,
    );
    console.log(`# key revoked with the CLI refused by both gateways after ${ms} ms`);
    assert.ok(ms < WITHIN_MS, `took ${ms} ms`);
    const again = cli(['keys', 'revoke', 'no-such-key']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no key with the id "no-such-key"/);
  });

  test('teams set changes reach both gateways within 2 s (health shows the team limits the gateway holds)', async () => {
    const k = JSON.parse(cliOk(['keys', 'create', '--team', 'beta', '--id', 'cli-beta', '--budget-daily', '1.25', '--rpm', '60', '--json']).stdout);
    await untilAll([gwA, gwB], (gw) => health(gw, k.key), (x) => x.status === 200, 'beta key loaded');
    const h0 = (await health(gwA, k.key)).json.key;
    assert.equal(h0.source, 'database');
    assert.equal(h0.limits.budget_daily_usd, '1.250000');
    assert.equal(h0.limits.rpm, 60);
    assert.equal(h0.team_limits.budget_daily_usd, '0.000000'); // a team with just its name
    const out = cliOk(['teams', 'set', 'beta', '--budget-daily', '7.5', '--budget-monthly', '100.000000000001', '--tokens-per-hour', '5000']);
    assert.match(out.stdout, /team beta: budgets day \$7\.5 month \$100\.000000000001; limits tokens\/h 5000/);
    const t0 = Date.now();
    const ms = await untilAll(
      [gwA, gwB],
      (gw) => health(gw, k.key),
      (x) => x.json?.key?.team_limits?.budget_daily_usd === '7.500000' && x.json.key.team_limits.tokens_per_hour === 5000,
      'team budget reached the gateways',
      t0,
    );
    console.log(`# teams set reached both gateways after ${ms} ms`);
    assert.ok(ms < WITHIN_MS, `took ${ms} ms`);
    // exact pico-dollars in the database
    const b = await db.query("SELECT period, limit_pusd::text AS l FROM bridle_budgets WHERE scope = 'team' AND scope_id = 'beta' ORDER BY period");
    assert.deepEqual(b.rows, [
      { period: 'day', l: '7500000000000' },
      { period: 'month', l: '100000000000001' },
    ]);
    // 0 removes a budget; the others stay
    cliOk(['teams', 'set', 'beta', '--budget-daily', '0']);
    await untilAll([gwA, gwB], (gw) => health(gw, k.key), (x) => x.json?.key?.team_limits?.budget_daily_usd === '0.000000', 'budget removed');
    const teams = JSON.parse(cliOk(['teams', 'list', '--json']).stdout);
    const beta = teams.find((t) => t.name === 'beta');
    assert.equal(beta.budget_daily_usd, null);
    assert.equal(beta.budget_monthly_usd, 100.000000000001);
    assert.equal(beta.tokens_per_hour, 5000);
  });

  test('a key of a team only in the config gets the config team', async () => {
    const k = JSON.parse(cliOk(['keys', 'create', '--team', 'cfgteam', '--json']).stdout);
    assert.match(k.id, /^key_[0-9a-f]{12}$/);
    await untilAll([gwA], (gw) => health(gw, k.key), (x) => x.status === 200, 'cfgteam key loaded');
    assert.equal((await health(gwA, k.key)).json.key.team_limits.budget_daily_usd, '3.000000');
  });

  test('usage errors name the flag; no DATABASE_URL is a clear error', () => {
    let r = cli(['keys', 'create', '--team', 'x', '--budget-weekly', '1.5.0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--budget-weekly: expected an amount of US dollars/);
    assert.match(r.stderr, /usage:/);
    r = cli(['keys', 'create', '--team', 'x', '--bogus']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown flag "--bogus"/);
    r = cli(['keys', 'create', '--rpm', '5']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--team TEAM is required/);
    r = cli(['keys', 'list'], { DATABASE_URL: '' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /DATABASE_URL is not set/);
    r = cli(['keys', 'create', '--team', 'x', '--id', 'cli-beta']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /already exists/);
  });
});

describe('key kinds, expiry, models', () => {
  test('an admin key on a client route gets 403; a client key on the admin API gets 403; health takes both', async () => {
    let r = await chat(gwA, admin.key);
    assert.equal(r.status, 403);
    assert.equal(r.json.error.type, 'permission_error');
    assert.match(r.json.error.message, /admin keys only work on \/v1\/bridle\/admin\//);
    r = await get(`${gwA.baseURL}/models`, { authorization: `Bearer ${admin.key}` });
    assert.equal(r.status, 403);
    r = await adminReq(gwA, 'GET', '/keys', undefined, gwA.key);
    assert.equal(r.status, 403);
    assert.equal(r.json.error.type, 'permission_error');
    r = await health(gwA, admin.key);
    assert.equal(r.status, 200);
    assert.equal(r.json.key.kind, 'admin');
    assert.equal((await health(gwA, gwA.key)).status, 200);
  });

  test('an expired key gets 401 that says when it expired', async () => {
    const k = JSON.parse(cliOk(['keys', 'create', '--team', 'alpha', '--expires', '2020-01-31T00:00:00Z', '--json']).stdout);
    await untilAll(
      [gwA, gwB],
      (gw) => chat(gw, k.key),
      (x) => x.status === 401 && /expired at 2020-01-31T00:00:00Z; create a new one with `bridle keys create`/.test(x.json?.error?.message),
      'expired key refused',
    );
  });

  test('a key with models may use only those: 403 model_not_allowed lists them', async () => {
    const k = JSON.parse(cliOk(['keys', 'create', '--team', 'alpha', '--models', 'gpt-4o-mini', '--json']).stdout);
    await untilAll([gwA], (gw) => chat(gw, k.key), (x) => x.status === 200, 'models key loaded');
    const r = await chat(gwA, k.key, 'claude-haiku-4-5');
    assert.equal(r.status, 403);
    assert.equal(r.json.error.type, 'permission_error');
    assert.equal(r.json.error.code, 'model_not_allowed');
    assert.match(r.json.error.message, /'gpt-4o-mini'/);
    assert.equal((await chat(gwA, k.key, 'auto')).status, 403);
  });
});

describe('admin API', () => {
  test('create, list, revoke round trip', async () => {
    let r = await adminReq(gwA, 'POST', '/keys', {
      team: 'gamma',
      id: 'api-1',
      models: ['gpt-4o-mini', 'auto'],
      budget_daily_usd: 2.5,
      budget_monthly_usd: '40',
      rpm: 10,
      usd_per_hour: '0.25',
      expires_at: '2099-01-01T00:00:00Z',
    });
    assert.equal(r.status, 201, r.text);
    const key = r.json.key;
    assert.match(key, /^bk-[0-9a-f]{48}$/);
    assert.equal(r.json.id, 'api-1');
    assert.equal(r.json.prefix, key.slice(0, 7));
    assert.equal(r.json.last4, key.slice(-4));
    assert.equal(r.json.budget_daily_usd, 2.5);
    assert.deepEqual(r.json.models, ['gpt-4o-mini', 'auto']);
    const t0 = Date.now();
    const ms = await untilAll([gwA, gwB], (gw) => chat(gw, key), (x) => x.status === 200, 'admin-API key accepted', t0);
    assert.ok(ms < WITHIN_MS, `took ${ms} ms`);
    const h = (await health(gwB, key)).json.key;
    assert.equal(h.limits.budget_daily_usd, '2.500000');
    assert.equal(h.limits.budget_monthly_usd, '40.000000');
    assert.equal(h.limits.usd_per_hour, '0.250000');
    r = await adminReq(gwB, 'GET', '/keys');
    assert.equal(r.status, 200);
    assert.equal(r.json.object, 'list');
    const listed = r.json.data.find((k) => k.id === 'api-1');
    assert.ok(listed);
    assert.ok(!r.text.includes(key));
    assert.ok(!('key' in listed));
    r = await adminReq(gwA, 'POST', '/keys/api-1/revoke');
    assert.equal(r.status, 200, r.text);
    assert.match(r.json.revoked_at, /^\d{4}-/);
    await untilAll([gwA, gwB], (gw) => chat(gw, key), (x) => x.status === 401 && /revoked/.test(x.json?.error?.message), 'admin-revoked key refused', t0);
    r = await adminReq(gwA, 'DELETE', '/keys/nope');
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, 'key_not_found');
  });

  test('an admin key made by the API works on the admin API', async () => {
    const r = await adminReq(gwA, 'POST', '/keys', { kind: 'admin', id: 'api-admin' });
    assert.equal(r.status, 201, r.text);
    assert.match(r.json.key, /^bk-admin-[0-9a-f]{48}$/);
    assert.equal(r.json.prefix, r.json.key.slice(0, 13));
    await untilAll([gwB], (gw) => adminReq(gw, 'GET', '/teams', undefined, r.json.key), (x) => x.status === 200, 'new admin key accepted');
  });

  test('teams and budgets', async () => {
    let r = await adminReq(gwA, 'PUT', '/teams/gamma', { budget_weekly_usd: '12', rpm: 100 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.name, 'gamma');
    assert.equal(r.json.budget_weekly_usd, 12);
    assert.equal(r.json.rpm, 100);
    r = await adminReq(gwA, 'GET', '/teams');
    assert.ok(r.json.data.some((t) => t.name === 'gamma' && t.budget_weekly_usd === 12));
    r = await adminReq(gwA, 'GET', '/budgets');
    assert.equal(r.status, 200);
    assert.ok(r.json.data.some((b) => b.scope === 'team' && b.id === 'gamma' && b.period === 'week' && b.limit_usd === 12), r.text);
  });

  test('errors: 400 names the field, 405, 404', async () => {
    let r = await adminReq(gwA, 'POST', '/keys', { team: 'x', budget_daily_usd: -1 });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.param, 'budget_daily_usd');
    r = await adminReq(gwA, 'POST', '/keys', { team: 'x', colour: 'red' });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.param, 'colour');
    r = await adminReq(gwA, 'POST', '/keys', { budget_daily_usd: 1 });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.param, 'team');
    r = await adminReq(gwA, 'POST', '/keys', { team: 'x', models: ['no-such-model'] });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.param, 'models');
    r = await adminReq(gwA, 'POST', '/keys', 'not json');
    assert.equal(r.status, 400);
    r = await adminReq(gwA, 'PUT', '/keys');
    assert.equal(r.status, 405);
    r = await adminReq(gwA, 'GET', '/nothing');
    assert.equal(r.status, 404);
  });
});

describe('without the database', () => {
  test('config keys work with no database; the admin API says it needs one', async () => {
    const gw = await startBridle({
      config: mockConfig(mock.url, { keys: [{ id: 'ops-admin', sha256: admin.sha256, kind: 'admin' }] }),
    });
    try {
      assert.equal((await chat(gw, gw.key)).status, 200);
      assert.equal((await chat(gw, admin.key)).status, 403);
      const r = await adminReq(gw, 'GET', '/keys');
      assert.equal(r.status, 503);
      assert.match(r.json.error.message, /the admin API needs database\.url/i);
      assert.equal((await chat(gw, newKey().key)).status, 401);
    } finally {
      await gw.stop();
    }
  });

  test('a database that never answered: config keys work, unknown keys get 503 Retry-After 1', async () => {
    const gw = await startBridle({
      config: mockConfig(mock.url, {
        database: { url: 'postgresql://nobody@127.0.0.1:1/none?connect_timeout=1', spool_dir: tmpDir('bridle-keys-down-') },
      }),
    });
    try {
      assert.equal((await chat(gw, gw.key)).status, 200);
      const r = await chat(gw, newKey().key);
      assert.equal(r.status, 503);
      assert.equal(r.headers['retry-after'], '1');
      assert.match(r.json.error.message, /key store is loading/);
    } finally {
      await gw.stop();
    }
  });
});

// Key hygiene (issue 11): no raw key anywhere bridle writes. A gateway at
// log_level debug serves keys made by the CLI and by the admin API (client
// and admin), a config key, a revoked key and a key nobody made, by both
// headers; then its stdout and stderr, a pg_dump of the database, the
// PostgreSQL server log and every file of the spool are searched for each
// raw key: none may hold one. Each key's SHA-256 must be in the dump, so the
// search would find what it looks for if it were there.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { BUILD, ROOT, SANITIZED, get, mockConfig, newKey, post, sha256hex, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster, waitUntil } from './lib/ledgerlib.mjs';

const SAN_ENV = SANITIZED ? { ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', UBSAN_OPTIONS: 'print_stacktrace=1' } : {};

let mock;
let db;
let gw;
let spool;
const adminKey = `bk-admin-${newKey().key.slice(3)}`;

function cli(args) {
  const r = spawnSync(`${BUILD}/bridle`, args, {
    cwd: ROOT,
    env: { ...process.env, ...SAN_ENV, DATABASE_URL: db.url },
    encoding: 'utf8',
    timeout: 60000,
  });
  assert.equal(r.status, 0, `bridle ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function pgDump() {
  const bins = ['/usr/lib/postgresql/15/bin/pg_dump', ...['16', '17', '14'].map((v) => `/usr/lib/postgresql/${v}/bin/pg_dump`), 'pg_dump'];
  const bin = bins.find((b) => b === 'pg_dump' || existsSync(b));
  const r = spawnSync(bin, ['--data-only', '--inserts', '-d', db.url], { encoding: 'utf8', maxBuffer: 256 << 20 });
  assert.equal(r.status, 0, `pg_dump failed: ${r.stderr}`);
  return r.stdout;
}

function filesUnder(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

const chat = (key, header = 'authorization') =>
  post(
    `${gw.baseURL}/chat/completions`,
    { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }] },
    header === 'authorization' ? { authorization: `Bearer ${key}` } : { 'x-api-key': key },
    { timeoutMs: 15000 },
  );

before(async () => {
  mock = await startMock();
  db = await startCluster();
  spool = tmpDir('bridle-hygiene-spool-');
  gw = await startBridle({
    config: mockConfig(mock.url, {
      log_level: 'debug',
      database: { url: db.url, spool_dir: spool, flush_interval_ms: 100 },
      keys: [{ id: 'hyg-admin', sha256: sha256hex(adminKey), kind: 'admin' }],
    }),
    keyId: 'hyg-config',
  });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await db?.destroy();
});

test('no raw key in logs, database or spool; every hash is in the database', async () => {
  const keys = {}; // name -> raw key
  keys.config = gw.key;
  keys.configAdmin = adminKey;
  keys.cli = JSON.parse(cli(['keys', 'create', '--team', 'hyg', '--id', 'hyg-cli', '--json'])).key;
  keys.cliHuman = /^key: (bk-\S+)$/m.exec(cli(['keys', 'create', '--team', 'hyg', '--id', 'hyg-cli-2', '--budget-daily', '5']))[1];
  keys.cliAdmin = JSON.parse(cli(['keys', 'create', '--admin', '--id', 'hyg-cli-admin', '--json'])).key;
  let r = await post(`${gw.baseURL}/bridle/admin/keys`, { team: 'hyg', id: 'hyg-api', agent: 'a1' }, { authorization: `Bearer ${adminKey}` });
  assert.equal(r.status, 201, r.text);
  keys.api = r.json.key;
  r = await post(`${gw.baseURL}/bridle/admin/keys`, { kind: 'admin', id: 'hyg-api-admin' }, { authorization: `Bearer ${adminKey}` });
  assert.equal(r.status, 201, r.text);
  keys.apiAdmin = r.json.key;
  keys.revoked = JSON.parse(cli(['keys', 'create', '--team', 'hyg', '--id', 'hyg-revoked', '--json'])).key;
  keys.unknown = newKey().key;

  // every database key is served (the gateway reloaded)
  await waitUntil(async () => (await chat(keys.revoked)).status === 200, 5000, 'database keys loaded');
  for (const name of ['config', 'cli', 'cliHuman', 'api']) {
    assert.equal((await chat(keys[name])).status, 200, name);
    assert.equal((await chat(keys[name], 'x-api-key')).status, 200, name);
  }
  for (const name of ['configAdmin', 'cliAdmin', 'apiAdmin']) {
    assert.equal((await get(`${gw.baseURL}/bridle/admin/keys`, { authorization: `Bearer ${keys[name]}` })).status, 200, name);
    assert.equal((await chat(keys[name])).status, 403, name);
  }
  cli(['keys', 'revoke', 'hyg-revoked']);
  await waitUntil(async () => (await chat(keys.revoked)).status === 401, 5000, 'revoked key refused');
  assert.equal((await chat(keys.revoked, 'x-api-key')).status, 401);
  assert.equal((await chat(keys.unknown)).status, 401);
  assert.equal((await chat(keys.unknown, 'x-api-key')).status, 401);
  // a client key on the admin API, an admin key with a bad path
  assert.equal((await get(`${gw.baseURL}/bridle/admin/keys`, { authorization: `Bearer ${keys.cli}` })).status, 403);
  assert.equal((await get(`${gw.baseURL}/bridle/admin/${keys.cli}`, { authorization: `Bearer ${adminKey}` })).status, 404);

  // the ledger has shipped the traffic
  await waitUntil(async () => (await db.query("SELECT count(*)::int AS n FROM usage_events WHERE key_id = 'hyg-api'")).rows[0].n >= 2, 5000, 'usage rows');
  await sleep(300);

  const logs = gw.proc.stdout + gw.proc.stderr;
  assert.match(logs, / debug /, 'the gateway logged at debug level');
  const dump = pgDump();
  const pgLog = path.join(path.dirname(db.dataDir), 'postgres.log');
  const places = [
    ['bridle stdout/stderr', logs],
    ['pg_dump', dump],
    ['postgres log', existsSync(pgLog) ? readFileSync(pgLog, 'latin1') : ''],
  ];
  const spoolFiles = filesUnder(spool);
  assert.ok(spoolFiles.length > 0, 'the spool has files');
  for (const f of spoolFiles) places.push([`spool ${path.relative(spool, f)}`, readFileSync(f, 'latin1')]);

  for (const [name, key] of Object.entries(keys)) {
    for (const [where, text] of places) {
      // the whole key, and its secret part alone (without "bk-" / "bk-admin-")
      const secret = key.replace(/^bk-(admin-)?/, '');
      assert.equal(text.split(key).length - 1, 0, `the raw ${name} key is in ${where}`);
      assert.equal(text.split(secret.slice(4, -4)).length - 1, 0, `the ${name} key's secret part is in ${where}`);
    }
  }
  // the hashes of the database keys are stored (the grep looks at the right data)
  for (const name of ['cli', 'cliHuman', 'cliAdmin', 'api', 'apiAdmin', 'revoked']) {
    assert.ok(dump.includes(sha256hex(keys[name])), `the SHA-256 of the ${name} key is in the dump`);
  }
  // config keys' hashes are in the config only; their traffic is in the dump by id
  assert.ok(dump.includes('hyg-config'));
  console.log(`# searched ${places.length} places (${spoolFiles.length} spool files, ${dump.length} bytes of dump, ${logs.length} bytes of log) for ${Object.keys(keys).length} keys`);
});

// A batch reserves its worst case against the budgets at creation (issue
// 16; migrations/0014): E, the sum over its lines of what the run would
// reserve for each, is held in PostgreSQL as a lease of instance
// 'batch:<id>' on every budget the key is charged to, in the creation's
// statement. A batch that does not fit is refused with 429 and nothing is
// created; while it runs its reservation counts against live traffic on
// every gateway of the database; each line's usage event moves its cost
// from the batch's lease to spent; the end (completed, cancelled) gives the
// rest back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import { mockConfig, newKey, post, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster } from './lib/ledgerlib.mjs';

const RUN = randomBytes(4).toString('hex');
// gpt-4o-mini: 150,000 pico-dollars an input token, 600,000 an output token
// (router/price_table.c); the run's bound counts each body byte a token
const IN_PUSD = 150000n;
const OUT_PUSD = 600000n;
const MAX_TOKENS = 50;

let mock, db, gw, gw2;
const keys = {};
for (const k of ['run', 'over', 'cancel', 'two', 'idem', 'teamy', 'anth', 'ext']) keys[k] = newKey();

const config = () =>
  mockConfig(mock.url, {
    database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 100 },
    budgets: { sync_ms: 200, total: { daily_usd: '10' } },
    resilience: { max_attempts: 1 },
    batches: { concurrency: 2, busy_concurrency: 2 },
    teams: { squad: { budget_daily_usd: '1' }, tiny: { budget_daily_usd: '0.0002' } },
    keys: [
      { id: 'run', sha256: keys.run.sha256, team: 'squad', budget_daily_usd: '0.001' },
      { id: 'over', sha256: keys.over.sha256, budget_daily_usd: '0.001' },
      { id: 'cancel', sha256: keys.cancel.sha256, budget_daily_usd: '0.001' },
      { id: 'two', sha256: keys.two.sha256, budget_daily_usd: '0.001' },
      { id: 'idem', sha256: keys.idem.sha256, budget_daily_usd: '0.001' },
      { id: 'teamy', sha256: keys.teamy.sha256, team: 'tiny' },
      { id: 'anth', sha256: keys.anth.sha256, budget_daily_usd: '0.001' },
      { id: 'ext', sha256: keys.ext.sha256, budget_daily_usd: '0.001' },
    ],
  });

before(async () => {
  mock = await startMock();
  db = await startCluster();
  gw = await startBridle({ config: config() });
});

after(async () => {
  await gw2?.stop();
  await gw?.stop();
  await mock?.stop();
  await db?.destroy();
});

const auth = (k) => ({ authorization: `Bearer ${keys[k].key}` });

/** A line's body, and what the run reserves for it on gpt-4o-mini. */
function lineOf(id, content) {
  const body = { model: 'gpt-4o-mini', max_tokens: MAX_TOKENS, messages: [{ role: 'user', content }], user: `${RUN}-${id}` };
  const worst = BigInt(Buffer.byteLength(JSON.stringify(body))) * IN_PUSD + BigInt(MAX_TOKENS) * OUT_PUSD;
  return { text: JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/chat/completions', body }), worst };
}

/** n lines (slow ones when latency is set) → {lines, worst}. */
function batchOf(tag, n, latency = 0) {
  const lines = [];
  let worst = 0n;
  for (let i = 0; i < n; i++) {
    const l = lineOf(`${tag}-${i}`, `${latency ? `[[mock:latency_ms=${latency}]] ` : ''}Line ${i} of ${tag}`);
    lines.push(l.text);
    worst += l.worst;
  }
  return { lines, worst };
}

/** Uploads the lines with key k (multipart, as the SDK does) → the file id. */
async function upload(k, lines) {
  const form = new FormData();
  form.append('purpose', 'batch');
  form.append('file', new Blob([lines.join('\n') + '\n']), 'in.jsonl');
  const r = await fetch(`${gw.baseURL}/files`, { method: 'POST', headers: auth(k), body: form });
  const j = await r.json();
  assert.equal(r.status, 200, JSON.stringify(j));
  return j.id;
}

const create = (k, file, headers = {}, base = gw.baseURL) =>
  post(`${base}/batches`, { input_file_id: file, endpoint: '/v1/chat/completions', completion_window: '24h' }, { ...auth(k), ...headers });

async function until(k, id, statuses, ms = 30000) {
  const t0 = Date.now();
  for (;;) {
    const r = await fetch(`${gw.baseURL}/batches/${id}`, { headers: auth(k) });
    const b = await r.json();
    if (statuses.includes(b.status)) return b;
    if (Date.now() - t0 > ms) assert.fail(`batch ${id} still ${b.status} after ${ms} ms`);
    await sleep(100);
  }
}

const leases = async (id) =>
  (await db.query("SELECT scope, scope_id, period, held_pusd::text AS held FROM bridle_budget_leases WHERE instance = $1 ORDER BY scope", [`batch:${id}`])).rows;

const spend = async (scope, sid) =>
  (
    await db.query(
      "SELECT spent_pusd::text AS spent, held_pusd::text AS held FROM bridle_budget_spend WHERE scope = $1 AND scope_id = $2 AND period = 'day' AND period_start = bridle_period_start('day', now())",
      [scope, sid],
    )
  ).rows[0] ?? { spent: '0', held: '0' };

const batchCost = async (id) => BigInt((await db.query('SELECT coalesce(sum(cost_pusd), 0)::text AS c, count(*)::int AS n FROM usage_events WHERE batch_id = $1', [id])).rows[0].c);

/** Waits until the ledger holds n rows of the batch. */
async function ledgerRows(id, n) {
  for (let t = 0; t < 100; t++) {
    const { rows } = await db.query('SELECT count(*)::int AS n FROM usage_events WHERE batch_id = $1', [id]);
    if (rows[0].n >= n) return;
    await sleep(100);
  }
  assert.fail(`the ledger does not hold ${n} rows of ${id}`);
}

// a live request of key k that reserves about 615 µ$ (1,000 output tokens):
// it fits in a $0.001 budget alone, not beside a batch holding 480 µ$
const live = (k, base = gw.baseURL) =>
  post(`${base}/chat/completions`, { model: 'gpt-4o-mini', max_tokens: 1000, messages: [{ role: 'user', content: 'live' }] }, auth(k));

/** The live request, until it fits (a gateway reads spend back every budgets.sync_ms). */
async function liveFits(k, base) {
  let r;
  for (let t = 0; t < 20; t++) {
    r = await live(k, base);
    if (r.status === 200) return r;
    await sleep(200);
  }
  assert.fail(`the live request is still refused: ${r.text}`);
}

test('a batch whose worst case exceeds the key budget is refused up front: 429, nothing created, nothing held', async () => {
  const { lines, worst } = batchOf('over', 30); // 30 × ~48 µ$ > $0.001
  assert.ok(worst > 1_000_000_000n);
  const file = await upload('over', lines);
  const { rows: f } = await db.query('SELECT worst_pusd::text AS w FROM bridle_files WHERE id = $1', [file]);
  assert.equal(BigInt(f[0].w), worst, 'the file is priced at upload, to the pico-dollar');
  const r = await create('over', file);
  assert.equal(r.status, 429, r.text);
  assert.equal(r.headers['x-should-retry'], 'false');
  assert.equal(r.json.error.type, 'budget_exceeded');
  assert.equal(r.json.error.code, 'budget_exceeded');
  assert.match(r.json.error.message, /^Budget exceeded: key "over" daily budget of \$0\.001 cannot hold this batch, whose requests may cost up to \$([0-9.]+) together: \$0\.001 is left \(\$0\.00 spent, \$0\.00 held/);
  const said = Number(/up to \$([0-9.]+)/.exec(r.json.error.message)[1]);
  assert.ok(Math.abs(said * 1e12 - Number(worst)) < 1e6, `${said} for ${worst} pico-dollars`);
  const { rows: b } = await db.query("SELECT count(*)::int AS n FROM bridle_batches WHERE key_id = 'over'");
  assert.equal(b[0].n, 0, 'no batch row');
  const { rows: l } = await db.query("SELECT count(*)::int AS n FROM bridle_batch_lines WHERE custom_id LIKE 'over-%'");
  assert.equal(l[0].n, 0, 'no lines');
  const { rows: ls } = await db.query("SELECT count(*)::int AS n FROM bridle_budget_leases WHERE instance LIKE 'batch:%' AND scope_id = 'over'");
  assert.equal(ls[0].n, 0, 'no lease');
  assert.equal((await spend('key', 'over')).held, '0');
});

test('a batch that fills the budget to within one line runs every line: its lines reserve nothing of their own', async () => {
  // as many lines as fit in $0.001: one more line's reservation would not
  const lines = [];
  let worst = 0n;
  for (let i = 0; ; i++) {
    const l = lineOf(`full-${i}`, `Line ${i} of full`);
    if (worst + l.worst > 1_000_000_000n) break;
    lines.push(l.text);
    worst += l.worst;
  }
  assert.ok(1_000_000_000n - worst < lineOf('full-x', 'Line x of full').worst);
  const r = await create('over', await upload('over', lines));
  assert.equal(r.status, 200, r.text);
  const done = await until('over', r.json.id, ['completed', 'failed']);
  assert.deepEqual(done.request_counts, { total: lines.length, completed: lines.length, failed: 0 });
  await ledgerRows(r.json.id, lines.length);
  const s = await spend('key', 'over');
  assert.equal(s.held, '0');
  assert.equal(BigInt(s.spent), await batchCost(r.json.id));
});

test('a batch within budget holds its worst case on the key, team and total budgets while it runs; lines move their cost from it to spent; the end gives the rest back', async () => {
  const { lines, worst } = batchOf('run', 10, 400); // 10 × ~48 µ$, 2 at a time, 400 ms each
  const file = await upload('run', lines);
  const r = await create('run', file);
  assert.equal(r.status, 200, r.text);
  const id = r.json.id;
  const { rows: b } = await db.query('SELECT reserved_pusd::text AS r FROM bridle_batches WHERE id = $1', [id]);
  assert.equal(BigInt(b[0].r), worst);
  // held at creation, before any line ran, on the key's, its team's and the total's daily budgets
  const held = await leases(id);
  assert.deepEqual(held.map((x) => [x.scope, x.scope_id, x.period]), [['key', 'run', 'day'], ['team', 'squad', 'day'], ['total', '', 'day']]);
  const { rows: now } = await db.query(
    "SELECT (SELECT held_pusd FROM bridle_budget_leases WHERE instance = $2 AND scope = 'team')::text AS held, (SELECT coalesce(sum(cost_pusd), 0) FROM usage_events WHERE batch_id = $1)::text AS cost",
    [id, `batch:${id}`],
  );
  assert.equal(BigInt(now[0].held) + BigInt(now[0].cost), worst);
  assert.ok(BigInt((await spend('team', 'squad')).held) >= BigInt(held[1].held));

  // the reservation counts against live traffic: 615 µ$ would fit in the
  // key's $0.001 alone, not beside the batch's ~480 µ$
  const refused = await live('run');
  assert.equal(refused.status, 429, refused.text);
  assert.equal(refused.json.error.type, 'budget_exceeded');

  // mid-run: what the lease still holds + what the committed lines cost = E, to the pico-dollar
  await ledgerRows(id, 2);
  const { rows: mid } = await db.query(
    "SELECT (SELECT held_pusd FROM bridle_budget_leases WHERE instance = $2 AND scope = 'key')::text AS held, (SELECT coalesce(sum(cost_pusd), 0) FROM usage_events WHERE batch_id = $1)::text AS cost, (SELECT count(*) FROM usage_events WHERE batch_id = $1)::int AS n",
    [id, `batch:${id}`],
  );
  assert.ok(mid[0].n >= 2 && mid[0].n < 10, `${mid[0].n} lines committed`);
  assert.ok(BigInt(mid[0].cost) > 0n);
  assert.equal(BigInt(mid[0].held) + BigInt(mid[0].cost), worst);

  const done = await until('run', id, ['completed']);
  assert.deepEqual(done.request_counts, { total: 10, completed: 10, failed: 0 });
  await ledgerRows(id, 10);
  assert.deepEqual(await leases(id), [], 'the lease ended with the batch');
  const cost = await batchCost(id);
  assert.ok(cost > 0n && cost < worst);
  for (const [scope, sid] of [['key', 'run'], ['team', 'squad']]) {
    const s = await spend(scope, sid);
    assert.equal(s.held, '0', `${scope} held`);
    assert.equal(BigInt(s.spent), cost, `${scope} spent = the ledger's cost of the batch`);
  }
  // and with the reservation gone, the same live request fits
  assert.equal((await liveFits('run')).status, 200);
});

test('cancel midway gives back the rest: nothing held, spent = what the lines that ran cost', async () => {
  const { lines, worst } = batchOf('cancel', 12, 500);
  const r = await create('cancel', await upload('cancel', lines));
  assert.equal(r.status, 200, r.text);
  const id = r.json.id;
  assert.equal(BigInt((await leases(id))[0].held), worst);
  await sleep(700);
  const c = await post(`${gw.baseURL}/batches/${id}/cancel`, {}, auth('cancel'));
  assert.equal(c.status, 200, c.text);
  const end = await until('cancel', id, ['cancelled']);
  const ran = end.request_counts.completed;
  assert.ok(ran >= 1 && ran < 12, `${ran} ran`);
  assert.deepEqual(await leases(id), []);
  await ledgerRows(id, ran);
  await sleep(300); // a line's event in the ledger's next flush, if any
  const cost = await batchCost(id);
  const s = await spend('key', 'cancel');
  assert.equal(s.held, '0');
  assert.equal(BigInt(s.spent), cost);
  assert.ok(cost < worst / 2n);
});

test('a batch past its window expires and gives the rest back', async () => {
  const { lines, worst } = batchOf('exp', 12, 500);
  const r = await create('cancel', await upload('cancel', lines));
  assert.equal(r.status, 200, r.text);
  const id = r.json.id;
  assert.equal(BigInt((await leases(id))[0].held), worst);
  const before = BigInt((await spend('key', 'cancel')).spent);
  await sleep(300);
  await db.query('UPDATE bridle_batches SET expires_at = now() WHERE id = $1', [id]);
  const end = await until('cancel', id, ['expired']);
  assert.deepEqual(await leases(id), []);
  await ledgerRows(id, end.request_counts.completed);
  await sleep(300);
  const s = await spend('key', 'cancel');
  assert.equal(s.held, '0');
  assert.equal(BigInt(s.spent) - before, await batchCost(id));
});

test("a batch's events written by another path (a provider batch, another gateway) settle the same way: at most what the lease holds moves, the rest is spent", async () => {
  const { lines, worst } = batchOf('ext', 2, 4000); // lines that run take 4 s
  const r = await create('ext', await upload('ext', lines));
  assert.equal(r.status, 200, r.text);
  const id = r.json.id;
  const ev = (n, cost) =>
    db.query("INSERT INTO usage_events (event_id, ts, key_id, status, cost_pusd, batch_id) VALUES ($1, now(), 'ext', 200, $2, $3)", [`${RUN}-ext-${n}`, String(cost), id]);
  await ev(1, 10_000_000n);
  assert.equal(BigInt((await leases(id))[0].held), worst - 10_000_000n);
  let s = await spend('key', 'ext');
  assert.equal(BigInt(s.held), worst - 10_000_000n);
  assert.equal(BigInt(s.spent), 10_000_000n);
  // more than the lease still holds: it goes to 0, the whole cost is spent
  await ev(2, worst);
  assert.equal((await leases(id))[0].held, '0');
  s = await spend('key', 'ext');
  assert.equal(s.held, '0');
  assert.equal(BigInt(s.spent), worst + 10_000_000n);
  const c = await post(`${gw.baseURL}/batches/${id}/cancel`, {}, auth('ext'));
  assert.equal(c.status, 200);
  const end = await until('ext', id, ['cancelled'], 20000);
  await ledgerRows(id, end.request_counts.completed + 2);
  assert.deepEqual(await leases(id), []);
  s = await spend('key', 'ext');
  assert.equal(s.held, '0');
  assert.equal(BigInt(s.spent), await batchCost(id));
});

test('two gateways on one database: the reservation made through one refuses the other\'s live request', async () => {
  gw2 = await startBridle({ config: config() });
  const { lines } = batchOf('two', 10, 500);
  const r = await create('two', await upload('two', lines));
  assert.equal(r.status, 200, r.text);
  const refused = await live('two', gw2.baseURL);
  assert.equal(refused.status, 429, refused.text);
  assert.match(refused.json.error.message, /key "two" daily budget/);
  const c = await post(`${gw.baseURL}/batches/${r.json.id}/cancel`, {}, auth('two'));
  assert.equal(c.status, 200);
  await until('two', r.json.id, ['cancelled']);
  assert.equal((await liveFits('two', gw2.baseURL)).status, 200);
});

test('an Idempotency-Key replay reserves nothing more', async () => {
  const { lines, worst } = batchOf('idem', 4, 300);
  const file = await upload('idem', lines);
  const k = { 'idempotency-key': `idem-${RUN}` };
  const first = await create('idem', file, k);
  assert.equal(first.status, 200, first.text);
  const again = await create('idem', file, k);
  assert.equal(again.status, 200, again.text);
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.equal(again.json.id, first.json.id);
  const { rows } = await db.query("SELECT count(*)::int AS n, sum(held_pusd)::text AS held FROM bridle_budget_leases WHERE instance LIKE 'batch:%' AND scope = 'key' AND scope_id = 'idem'");
  assert.equal(rows[0].n, 1);
  assert.ok(BigInt(rows[0].held) <= worst);
  assert.ok(BigInt((await spend('key', 'idem')).held) <= worst);
  await until('idem', first.json.id, ['completed']);
});

test("the team's budget refuses a batch its key alone would take, naming the team", async () => {
  const { lines } = batchOf('teamy', 5); // ~240 µ$ > the team's 200 µ$
  const r = await create('teamy', await upload('teamy', lines));
  assert.equal(r.status, 429, r.text);
  assert.match(r.json.error.message, /^Budget exceeded: team "tiny" daily budget of \$0\.0002 cannot hold this batch/);
  const { rows } = await db.query("SELECT count(*)::int AS n FROM bridle_batches WHERE key_id = 'teamy'");
  assert.equal(rows[0].n, 0);
});

test("Anthropic's Message Batches: priced at creation, refused in Anthropic's error shape, held while they run", async () => {
  const req = (id, max_tokens) => ({ custom_id: id, params: { model: 'claude-haiku-4-5', max_tokens, messages: [{ role: 'user', content: '[[mock:latency_ms=300]] hi' }] } });
  // claude-haiku-4-5: 5 µ$ an output token: 300 tokens → 1.5 m$ > $0.001
  const big = await post(`${gw.url}/v1/messages/batches`, { requests: [req('a', 300)] }, { ...auth('anth'), 'anthropic-version': '2023-06-01' });
  assert.equal(big.status, 429, big.text);
  assert.equal(big.json.type, 'error');
  assert.equal(big.json.error.type, 'rate_limit_error');
  assert.match(big.json.error.message, /^Budget exceeded: key "anth" daily budget of \$0\.001 cannot hold this batch/);
  const { rows: none } = await db.query("SELECT count(*)::int AS n FROM bridle_batches WHERE key_id = 'anth'");
  assert.equal(none[0].n, 0);
  const ok = await post(`${gw.url}/v1/messages/batches`, { requests: [req('a', 20), req('b', 20)] }, { ...auth('anth'), 'anthropic-version': '2023-06-01' });
  assert.equal(ok.status, 200, ok.text);
  const { rows } = await db.query('SELECT reserved_pusd::text AS r FROM bridle_batches WHERE id = $1', [ok.json.id]);
  const reserved = BigInt(rows[0].r);
  assert.ok(reserved >= 2n * 20n * 5000000n, `${reserved}`); // at least the output bound of both
  assert.equal(BigInt((await leases(ok.json.id))[0].held), reserved);
  for (let t = 0; t < 100; t++) {
    const b = await fetch(`${gw.url}/v1/messages/batches/${ok.json.id}`, { headers: { ...auth('anth'), 'anthropic-version': '2023-06-01' } });
    if ((await b.json()).processing_status === 'ended') break;
    await sleep(100);
  }
  await ledgerRows(ok.json.id, 2);
  assert.deepEqual(await leases(ok.json.id), []);
  const s = await spend('key', 'anth');
  assert.equal(s.held, '0');
  assert.equal(BigInt(s.spent), await batchCost(ok.json.id));
});

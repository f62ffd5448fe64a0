// A killed gateway that comes back after its lease TTL (migrations/0007,
// docs/design.md "Budgets"): the sweep gives back only what it had leased
// but not spent, and keeps the cost of its settled requests whose usage
// events are still in its spool (unshipped) as an orphan lease row; the
// restarted gateway replays its spool (the trigger charges spent_pusd) and
// then releases its predecessor's rows. Meanwhile another gateway drives
// the same $1.00 key to its limit: the settled spend never passes $1.00.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { SLOW, freePort, mockConfig, newKey, post, sleep, startMock, tmpDir } from './lib/harness.mjs';
import { startBridleAt, startCluster, waitUntil } from './lib/ledgerlib.mjs';
import { expected } from './lib/mockmath.mjs';

const USD = 1_000_000_000_000n; // pico-dollars
const IN_PRICE = 1_000_000n; // $1 / M input tokens
const OUT_PRICE = 3_750_000_000n; // $3,750 / M output tokens
const TTL_MS = 2000 * SLOW;
const SYNC_MS = 250;
const messages = [{ role: 'user', content: 'Count to three.' }];
const body = () => ({ model: 't7', messages, max_tokens: 13 });
const u = expected(messages, 't7');
const COST = BigInt(u.P) * IN_PRICE + BigInt(u.C) * OUT_PRICE; // one answer, ≈ $0.030
const k = newKey();
const auth = { authorization: `Bearer ${k.key}` };

function config(mockUrl, dbUrl, flushMs) {
  return mockConfig(mockUrl, {
    database: { url: dbUrl, spool_dir: '${ORPH_SPOOL}', flush_interval_ms: flushMs },
    budgets: { lease_ttl_ms: TTL_MS, sync_ms: SYNC_MS, orphan_ttl_ms: 3_600_000 },
    models: { t7: { provider: 'openai', prices: { input: '1', output: '3750' } } },
    keys: [{ id: 'k1', sha256: k.sha256, budget_usd: '1.00' }],
  });
}

describe('a gateway killed and back after its lease TTL', () => {
  let mock;
  let db;
  let dir;
  let slowCfg; // gateway A at first: its events stay in its spool (a 60 s flush)
  let fastCfg;
  const procs = [];
  const q = async (sql) => (await db.query(sql)).rows;

  before(async () => {
    mock = await startMock();
    db = await startCluster();
    dir = tmpDir('bridle-orphans-');
    slowCfg = path.join(dir, 'slow.json');
    fastCfg = path.join(dir, 'fast.json');
    writeFileSync(slowCfg, JSON.stringify(config(mock.url, db.url, 60000)));
    writeFileSync(fastCfg, JSON.stringify(config(mock.url, db.url, 50)));
  });

  after(async () => {
    for (const p of procs) await p.stop().catch(() => {});
    await mock?.stop();
    await db?.destroy();
  });

  test('the sweep keeps the unshipped cost as an orphan; the replay charges it; the settled spend stays within $1.00', async () => {
    const spoolA = path.join(dir, 'spoolA');
    const portA = await freePort();
    const portB = await freePort();
    let a = await startBridleAt(slowCfg, portA, { env: { ORPH_SPOOL: spoolA } });
    procs.push(a);
    const b = await startBridleAt(fastCfg, portB, { env: { ORPH_SPOOL: path.join(dir, 'spoolB') } });
    procs.push(b);
    const urlA = `http://127.0.0.1:${portA}`;
    const urlB = `http://127.0.0.1:${portB}`;

    // A answers 5 requests; their events wait in its spool
    const N_A = 5;
    for (let i = 0; i < N_A; i++) {
      const r = await post(`${urlA}/v1/chat/completions`, body(), auth);
      assert.equal(r.status, 200, r.text);
    }
    const unshipped = BigInt(N_A) * COST;
    const pidA = a.child.pid;
    const rowA = async () =>
      (await q(`SELECT held_pusd::text AS h, unshipped_pusd::text AS u, orphaned_at IS NOT NULL AS orphan FROM bridle_budget_leases WHERE instance LIKE '%:${pidA}:%' AND scope = 'key' AND scope_id = 'k1'`))[0];
    // its next sync records the unshipped part of its lease
    await waitUntil(async () => (await rowA())?.u === String(unshipped), 5000 * SLOW, 'A\'s lease row records its unshipped spend', 20);
    const atKill = await rowA();
    assert.ok(BigInt(atKill.h) > unshipped, `A holds ${atKill.h} pusd: more than its unshipped ${unshipped}`);
    assert.equal((await q("SELECT count(*)::int AS n FROM usage_events WHERE key_id = 'k1'"))[0].n, 0, 'A\'s events are still in its spool');

    await a.stop({ signal: 'SIGKILL' });
    const tKill = Date.now();
    // past the TTL, B's sweep gives back avail + reserved and keeps the rest as an orphan
    const { value: orphan } = await waitUntil(async () => {
      const r = await rowA();
      return r?.orphan ? r : null;
    }, (TTL_MS + 8 * SYNC_MS + 3000) * SLOW, 'A\'s lease swept into an orphan', 20);
    const sweptMs = Date.now() - tKill;
    assert.ok(sweptMs >= TTL_MS * 0.5, `swept ${sweptMs} ms after the kill (TTL ${TTL_MS})`);
    assert.equal(orphan.h, String(unshipped), 'the orphan holds exactly the cost of A\'s answered requests');
    assert.equal(orphan.u, String(unshipped));
    const [exp] = await q(`SELECT (expires_at - now() BETWEEN interval '55 minutes' AND interval '60 minutes')::boolean AS ok FROM bridle_budget_leases WHERE instance LIKE '%:${pidA}:%'`);
    assert.equal(exp.ok, true, 'an orphan lives for budgets.orphan_ttl_ms (1 h here)');
    const spendRow = async () =>
      (await q("SELECT spent_pusd::text AS s, held_pusd::text AS h FROM bridle_budget_spend WHERE scope = 'key' AND scope_id = 'k1' AND period = 'month'"))[0];
    const s0 = await spendRow();
    assert.equal(s0.s, '0');
    assert.equal(s0.h, String(unshipped), 'held = the orphan alone');

    // B drives the key to its limit: the orphan's cost stays out of its reach
    // (a cost committed a moment before B's lease row knows it counts twice for that moment:
    // a refusal is believed once it holds after a few syncs)
    let okB = 0;
    let refused = null;
    let refusals = 0;
    for (let i = 0; i < 80 && refusals < 3; i++) {
      const r = await post(`${urlB}/v1/chat/completions`, body(), auth);
      if (r.status === 200) {
        okB++;
        refusals = 0;
      } else if (r.status === 429) {
        refused = r;
        refusals++;
        await sleep(3 * SYNC_MS);
      } else assert.fail(`unexpected ${r.status}: ${r.text}`);
    }
    assert.ok(refused, 'B refused once the budget was used up');
    assert.equal(refused.json.error.type, 'budget_exceeded', refused.text);
    const settledB = BigInt(okB) * COST;
    // B used what the orphan left: $1.00 − 5 answers, less than one reservation (E ≈ $0.049) left over
    assert.ok(settledB + unshipped <= USD, `B settled ${settledB} + orphan ${unshipped} > $1.00`);
    assert.ok(settledB + unshipped + 2n * 49_000_000_000n > USD, `B settled only ${settledB} pusd (${okB} answers): ${refused.text} ${JSON.stringify(await spendRow())} ${JSON.stringify(await q("SELECT * FROM bridle_budget_leases"))}`);
    await waitUntil(async () => (await spendRow()).s === String(settledB), 10000 * SLOW, 'B\'s events committed', 20);

    // A comes back (normal flush) on its spool: its events replay, then its predecessor's rows end
    a = await startBridleAt(fastCfg, portA, { env: { ORPH_SPOOL: spoolA } });
    procs.push(a);
    await waitUntil(async () => (await spendRow()).s === String(settledB + unshipped), 10000 * SLOW, 'A\'s events replayed and charged', 20);
    await waitUntil(async () => !(await rowA()), 10000 * SLOW, 'the orphan released by the restarted gateway', 20);
    assert.match(a.logs(), new RegExp(`the previous run on this spool was [^ ]*:${pidA}:`));
    assert.match(a.logs(), /the leases of the previous run .* are released/);
    // every lease comes back (B's idle slack at its next syncs)
    await waitUntil(async () => (await spendRow()).h === '0', 10000 * SLOW, 'held_pusd back to 0', 20);

    const [sum] = await q("SELECT coalesce(sum(cost_pusd), 0)::bigint::text AS s, count(*) FILTER (WHERE status = 200)::int AS n, count(*)::int AS all, count(DISTINCT event_id)::int AS d FROM usage_events WHERE key_id = 'k1'");
    assert.equal(sum.all, sum.d, 'no event charged twice');
    assert.equal(sum.n, N_A + okB);
    assert.equal(BigInt(sum.s), settledB + unshipped);
    assert.ok(BigInt(sum.s) <= USD, `settled ${sum.s} pusd > $1.00`);
    assert.equal((await spendRow()).s, sum.s, 'spent_pusd = the ledger');
    assert.equal((await q("SELECT count(*)::int AS n FROM bridle_budget_leases WHERE scope_id = 'k1'"))[0].n, 0);
    console.log(`orphans: A held ${atKill.h} pusd at the kill, swept to an orphan of ${orphan.h} after ${sweptMs} ms; B answered ${okB}; settled $${Number(sum.s) / 1e12}`);
    for (const p of procs) await p.stop().catch(() => {});
  });

  test('SQL: an orphan past its own TTL is released whole; a live lease with nothing unshipped is ended whole; release_instance ends an instance\'s rows', async () => {
    // no gateway runs now: nothing else sweeps
    const lease = (inst, sid, held, unshipped, ttl) =>
      q(`SELECT granted::text AS g FROM bridle_budget_lease_held2('${inst}', '{key}', '{${sid}}', '{day}', '{2026-01-01T00:00:00Z}', '{1000}', '{${held}}', '{${unshipped}}', '{0}', '{0}', ${ttl})`);
    const spend = async (sid) => (await q(`SELECT held_pusd::int AS h FROM bridle_budget_spend WHERE scope_id = '${sid}'`))[0].h;
    const rows = async (sid) => q(`SELECT instance, held_pusd::int AS h, unshipped_pusd::int AS u, orphaned_at IS NOT NULL AS o FROM bridle_budget_leases WHERE scope_id = '${sid}' ORDER BY 1`);
    await lease('sql:1:a', 'orph', 100, 30, 1);
    await lease('sql:2:b', 'orph', 50, 0, 1);
    await q("SELECT * FROM bridle_budget_sync2('sql:3:c', '{key}', '{orph}', '{day}', '{2026-01-01T00:00:00Z}', '{40}', '{500}', 60000)");
    assert.deepEqual(await rows('orph'), [
      { instance: 'sql:1:a', h: 100, u: 30, o: false },
      { instance: 'sql:2:b', h: 50, u: 0, o: false },
      { instance: 'sql:3:c', h: 40, u: 40, o: false }, // unshipped is clamped to held
    ]);
    assert.equal(await spend('orph'), 190);
    await sleep(20);
    await q('SELECT bridle_budget_sweep_orphans(30)');
    assert.deepEqual(await rows('orph'), [
      { instance: 'sql:1:a', h: 30, u: 30, o: true },
      { instance: 'sql:3:c', h: 40, u: 40, o: false },
    ]);
    assert.equal(await spend('orph'), 70);
    await sleep(60);
    await q('SELECT bridle_budget_sweep()');
    assert.deepEqual(await rows('orph'), [{ instance: 'sql:3:c', h: 40, u: 40, o: false }]);
    assert.equal(await spend('orph'), 40);
    assert.equal((await q("SELECT bridle_budget_release_instance('sql:3:c') AS n"))[0].n, 1);
    assert.deepEqual(await rows('orph'), []);
    assert.equal(await spend('orph'), 0);
  });
});

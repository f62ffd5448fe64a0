// Team budgets (issue 5): teams.NAME.budget_usd against the month-to-date
// spend of all the team's keys, read back from the ledger with the keys'
// (same query, same refresh). spend_share is the higher of the key's and
// the team's share, so two keys that are each well under their own budget
// are downgraded together once the team's spend passes the share, and
// x-bridle-route says it was the team's budget.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { mockConfig, newKey, post, sleep, startBridle, startMock } from './lib/harness.mjs';
import { startPostgres } from './lib/pg.mjs';

let mock;
let pg;
let gw;
const a1 = newKey();
const a2 = newKey();
const a3 = newKey(); // alpha, no budget of its own
const b1 = newKey(); // another team
const KEY_BUDGET = 100_000_000n; // $0.0001 in pico-dollars
const TEAM_BUDGET = 50_000_000n; // $0.00005

before(async () => {
  mock = await startMock();
  pg = await startPostgres();
  const config = mockConfig(mock.url, {
    database: {
      url: pg.url,
      spool_dir: path.join(mkdtempSync(path.join(tmpdir(), 'bridle-team-')), 'spool'),
      spend_refresh_ms: 200,
    },
    routing: {
      tiers: { local: ['llama3.2'], budget: ['gpt-4o-mini'], mid: ['claude-haiku-4-5'], heavy: ['gemini-2.5-flash'] },
      budget_downgrade: { share_pct: 80, to_tier: 'local' },
    },
    teams: { alpha: { budget_usd: '0.00005' }, beta: { budget_usd: '0.00005' } },
    keys: [
      { id: 'a1', sha256: a1.sha256, team: 'alpha', budget_usd: '0.0001' },
      { id: 'a2', sha256: a2.sha256, team: 'alpha', budget_usd: '0.0001' },
      { id: 'a3', sha256: a3.sha256, team: 'alpha' },
      { id: 'b1', sha256: b1.sha256, team: 'beta', budget_usd: '0.0001' },
    ],
  });
  delete config.routes.auto;
  gw = await startBridle({ config });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await pg?.stop();
});

// metadata.team cannot move a key's spend off its own team
const ask = (key, metadata = {}) =>
  post(
    `${gw.baseURL}/chat/completions`,
    { model: 'auto', messages: [{ role: 'user', content: 'Is this spam?' }], metadata },
    { authorization: `Bearer ${key}`, 'x-bridle-task': 'classify' },
  );

const spentBy = async (where) => {
  const r = await pg.query(pg.url, `SELECT coalesce(sum(cost_pusd), 0)::bigint AS s FROM usage_events WHERE ${where}`);
  return BigInt(r.rows[0].s);
};

test('two keys of one team: downgraded together past 80 % of the team budget, each under its own', async () => {
  let downgraded = null;
  for (let i = 0; i < 40 && !downgraded; i++) {
    const key = i % 2 ? a2 : a1;
    const r = await ask(key.key, i % 4 === 0 ? { team: 'beta' } : {});
    assert.equal(r.status, 200, r.text);
    if (r.headers['x-bridle-model'] === 'llama3.2') downgraded = { i, route: r.headers['x-bridle-route'] };
    else assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
    await sleep(60);
  }
  assert.ok(downgraded, 'never downgraded');
  assert.ok(downgraded.i >= 2, `downgraded at request ${downgraded.i}`);
  assert.match(downgraded.route, /over the team budget \(\d+% >= 80%\): local/);

  // what the gateway read: the team past 80 % of its budget, each key under 80 % of its own
  const team = await spentBy("team = 'alpha'");
  assert.ok(team * 100n >= 80n * TEAM_BUDGET, `team spent ${team} pusd`);
  for (const id of ['a1', 'a2']) {
    const own = await spentBy(`key_id = '${id}'`);
    assert.ok(own > 0n && own * 100n < 80n * KEY_BUDGET, `${id} spent ${own} pusd`);
  }
  // the keys' team is theirs, whatever metadata.team said
  assert.equal(await spentBy("key_id IN ('a1', 'a2') AND team IS DISTINCT FROM 'alpha'"), 0n);
  assert.equal(await spentBy("team = 'beta'"), 0n);

  // both keys stay downgraded, and so does a key of the team without a budget of its own
  for (const key of [a1, a2, a3]) {
    const r = await ask(key.key);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-model'], 'llama3.2');
    assert.match(r.headers['x-bridle-route'], /team budget/);
  }
});

test('a key of another team is not downgraded', async () => {
  const r = await ask(b1.key);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
  assert.doesNotMatch(r.headers['x-bridle-route'], /budget \(/);
});

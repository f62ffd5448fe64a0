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

import { SLOW, mockConfig, newKey, post, sleep, startBridle, startMock } from './lib/harness.mjs';
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

async function waitUntilSpent(where, pusd) {
  let got;
  for (let t = 0; t < 100; t++) {
    got = await spentBy(where);
    if (got >= pusd) return;
    await sleep(50);
  }
  assert.fail(`${where}: ${got} of ${pusd} pusd in the ledger`);
}

test('two keys of one team: downgraded together past 80 % of the team budget, each under its own', async () => {
  // 5.4 µ$ a request (P = 4, C = 8 on gpt-4o-mini), alternating a1 and a2:
  // after 8 requests the team has spent 43.2 µ$ (86 % of 50), each key
  // 21.6 µ$ (22 % of 100); after 7, 37.8 µ$ (75 %). The 9th request is the
  // first downgraded one, and none before it.
  const perRequest = 5_400_000n;
  const firstOver = Number((TEAM_BUDGET * 80n / 100n + perRequest - 1n) / perRequest);
  assert.equal(firstOver, 8);
  const seen = [];
  for (let i = 0; i <= firstOver; i++) {
    // bridle's view is current: the earlier requests are in the ledger and a
    // spend refresh (every 200 ms) has read them back
    await waitUntilSpent("team = 'alpha'", BigInt(i) * perRequest);
    await sleep(500 * SLOW);
    const key = i % 2 ? a2 : a1;
    const r = await ask(key.key, i % 4 === 0 ? { team: 'beta' } : {});
    assert.equal(r.status, 200, r.text);
    seen.push(r.headers['x-bridle-model']);
    if (i < firstOver) {
      assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini', `request ${i + 1}: downgraded below the share: ${seen}`);
      assert.equal(r.headers['x-bridle-route'], 'task classify -> tier budget: cheapest of 1 that fit');
    } else {
      assert.equal(r.headers['x-bridle-model'], 'llama3.2', `request ${i + 1}: not downgraded at 86 %: ${seen}`);
      assert.equal(r.headers['x-bridle-route'], 'task classify -> tier budget: cheapest of 1 that fit; over the team budget (86% >= 80%): local');
    }
  }

  // what the gateway read: the team past 80 % of its budget, each key under 80 % of its own
  // (the 9th request went to the free local model)
  await waitUntilSpent("team = 'alpha'", 8n * perRequest);
  assert.equal(await spentBy("team = 'alpha'"), 8n * perRequest);
  for (const id of ['a1', 'a2']) {
    const own = await spentBy(`key_id = '${id}'`);
    assert.equal(own, 4n * perRequest, `${id} spent ${own} pusd`);
    assert.ok(own * 100n < 80n * KEY_BUDGET, `${id} spent ${own} pusd`);
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

// Team budgets (issues 5 and 11): teams.NAME.budget_usd against the spend
// of all the team's keys this month, read back by the budget leases' sync.
// spend_share is the higher of the key's and the team's share, so two keys
// that are each well under their own budget are downgraded together once
// the team's spend passes the share, and x-bridle-route says it was the
// team's budget; and a request that no longer fits in the team's budget is
// refused for either key (429 budget_exceeded naming the team).
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
const KEY_BUDGET = 200_000_000n; // $0.0002 in pico-dollars
const TEAM_BUDGET = 100_000_000n; // $0.0001

before(async () => {
  mock = await startMock();
  pg = await startPostgres();
  const config = mockConfig(mock.url, {
    database: {
      url: pg.url,
      spool_dir: path.join(mkdtempSync(path.join(tmpdir(), 'bridle-team-')), 'spool'),
    },
    budgets: { sync_ms: 200 },
    routing: {
      tiers: { local: ['llama3.2'], budget: ['gpt-4o-mini'], mid: ['claude-haiku-4-5'], heavy: ['gemini-2.5-flash'] },
      budget_downgrade: { share_pct: 50, to_tier: 'local' },
    },
    teams: { alpha: { budget_usd: '0.0001' }, beta: { budget_usd: '0.0001' } },
    keys: [
      { id: 'a1', sha256: a1.sha256, team: 'alpha', budget_usd: '0.0002' },
      { id: 'a2', sha256: a2.sha256, team: 'alpha', budget_usd: '0.0002' },
      { id: 'a3', sha256: a3.sha256, team: 'alpha' },
      { id: 'b1', sha256: b1.sha256, team: 'beta', budget_usd: '0.0002' },
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

// metadata.team cannot move a key's spend off its own team; max_tokens 16
// bounds each reservation (about 25 µ$ on gpt-4o-mini)
const ask = (key, metadata = {}, model = 'auto', max_tokens = 16) =>
  post(
    `${gw.baseURL}/chat/completions`,
    { model, max_tokens, messages: [{ role: 'user', content: 'Is this spam?' }], metadata },
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

test('two keys of one team: downgraded together past 50 % of the team budget, each under its own', async () => {
  // 5.4 µ$ a request (P = 4, C = 8 on gpt-4o-mini), alternating a1 and a2:
  // after 10 requests the team has spent 54 µ$ (54 % of 100), each key
  // 27 µ$ (13 % of 200); after 9, 48.6 µ$ (48 %). The 11th request is the
  // first downgraded one, and none before it.
  const perRequest = 5_400_000n;
  const firstOver = Number((TEAM_BUDGET * 50n / 100n + perRequest - 1n) / perRequest);
  assert.equal(firstOver, 10);
  const seen = [];
  for (let i = 0; i <= firstOver; i++) {
    // bridle's view is current: the earlier requests are in the ledger and a
    // budget sync (every 200 ms) has read them back
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
      assert.equal(r.headers['x-bridle-model'], 'llama3.2', `request ${i + 1}: not downgraded at 54 %: ${seen}`);
      assert.equal(r.headers['x-bridle-route'], 'task classify -> tier budget: cheapest of 1 that fit; over the team budget (54% >= 50%): local');
    }
  }

  // what the gateway read: the team past 50 % of its budget, each key under 50 % of its own
  // (the 11th request went to the free local model)
  await waitUntilSpent("team = 'alpha'", 10n * perRequest);
  assert.equal(await spentBy("team = 'alpha'"), 10n * perRequest);
  for (const id of ['a1', 'a2']) {
    const own = await spentBy(`key_id = '${id}'`);
    assert.equal(own, 5n * perRequest, `${id} spent ${own} pusd`);
    assert.ok(own * 100n < 50n * KEY_BUDGET, `${id} spent ${own} pusd`);
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

test('the team budget is shared: once what is left of it cannot hold a request, both keys are refused with 429 naming the team, each well under its own', async () => {
  // 54 µ$ of the team's 100 spent; max_tokens 100 reserves about 74 µ$:
  // that fits in each key's own 200 µ$ but not in the team's 46 µ$
  for (const key of [a1, a2]) {
    const r = await ask(key.key, {}, 'gpt-4o-mini', 100);
    assert.equal(r.status, 429, r.text);
    assert.equal(r.headers['x-should-retry'], 'false');
    assert.equal(r.json.error.type, 'budget_exceeded');
    assert.match(r.json.error.message, /^Budget exceeded: team "alpha" monthly budget of \$0\.0001 is used up \(\$0\.000054 spent, /);
  }
  // a key of another team with the same request is served
  const other = await ask(b1.key, {}, 'gpt-4o-mini', 100);
  assert.equal(other.status, 200, other.text);
  // the team's budget row came from the config file
  const rows = (await pg.query(pg.url, "SELECT scope, scope_id, period, limit_pusd::text AS l, source FROM bridle_budgets WHERE scope = 'team' ORDER BY scope_id")).rows;
  assert.deepEqual(rows.map((r) => [r.scope_id, r.period, r.l, r.source]), [
    ['alpha', 'month', '100000000', 'config'],
    ['beta', 'month', '100000000', 'config'],
  ]);
});

test('a key of another team is not downgraded', async () => {
  const r = await ask(b1.key);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
  assert.doesNotMatch(r.headers['x-bridle-route'], /budget \(/);
});

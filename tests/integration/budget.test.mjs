// Budget downgrade (issue 5): a key's month-to-date spend, read back from the
// ledger, is compared with its budget (keys[].budget_usd); past the share
// set in routing.budget_downgrade, "auto" requests go to the cheaper tier
// (here the free local model) and x-bridle-route says why.
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
const budgeted = newKey();

before(async () => {
  mock = await startMock();
  pg = await startPostgres();
  const config = mockConfig(mock.url, {
    database: {
      url: pg.url,
      spool_dir: path.join(mkdtempSync(path.join(tmpdir(), 'bridle-budget-')), 'spool'),
      spend_refresh_ms: 200,
    },
    routing: {
      tiers: { local: ['llama3.2'], budget: ['gpt-4o-mini'], mid: ['claude-haiku-4-5'], heavy: ['gemini-2.5-flash'] },
      budget_downgrade: { share_pct: 80, to_tier: 'local' },
    },
    keys: [{ id: 'budgeted', sha256: budgeted.sha256, budget_usd: '0.00005' }],
  });
  delete config.routes.auto;
  gw = await startBridle({ config });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await pg?.stop();
});

const ask = (key) =>
  post(
    `${gw.baseURL}/chat/completions`,
    { model: 'auto', messages: [{ role: 'user', content: 'Is this spam?' }] },
    { authorization: `Bearer ${key}`, 'x-bridle-task': 'classify' },
  );

test('under budget: the budget tier; past 80 % of it: the local tier, and the route says so', async () => {
  let r = await ask(budgeted.key);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
  const perRequest = Number(r.headers['x-bridle-cost-usd']);
  assert.ok(perRequest > 0);
  // spend until past 80 % of $0.00005, then give the ledger a refresh to read it back
  let downgraded = null;
  for (let i = 0; i < 40 && !downgraded; i++) {
    r = await ask(budgeted.key);
    assert.equal(r.status, 200, r.text);
    if (r.headers['x-bridle-model'] === 'llama3.2') downgraded = { i, route: r.headers['x-bridle-route'] };
    await sleep(60);
  }
  assert.ok(downgraded, 'never downgraded');
  assert.match(downgraded.route, /budget/i);
  // the spend that triggered it is at least 80 % of the budget
  const spent = await pg.query(pg.url, "SELECT sum(cost_pusd)::bigint AS s FROM usage_events WHERE key_id = 'budgeted'");
  assert.ok(BigInt(spent.rows[0].s) * 100n >= 80n * 50_000_000n, `spent ${spent.rows[0].s} pusd`);
});

test('another key without a budget is not downgraded', async () => {
  const r = await ask(gw.key);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
});

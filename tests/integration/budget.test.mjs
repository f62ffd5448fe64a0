// Budget downgrade (issue 5): a key's month-to-date spend, read back from the
// ledger, is compared with its budget (keys[].budget_usd); past the share
// set in routing.budget_downgrade, "auto" requests go to the cheaper tier
// (here the free local model) and x-bridle-route says why.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { SLOW, mockConfig, newKey, post, sleep, startBridle, startMock } from './lib/harness.mjs';
import { billed, costPusd, expected, formatUsd } from './lib/mockmath.mjs';
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

/** Waits until the ledger holds n rows of the budgeted key. */
async function waitSpent(n) {
  let got;
  for (let t = 0; t < 100; t++) {
    got = Number((await pg.query(pg.url, "SELECT count(*)::int AS n FROM usage_events WHERE key_id = 'budgeted'")).rows[0].n);
    if (got >= n) return;
    await sleep(50);
  }
  assert.fail(`${got} of ${n} rows of the budgeted key in the ledger`);
}

const ask = (key) =>
  post(
    `${gw.baseURL}/chat/completions`,
    { model: 'auto', messages: [{ role: 'user', content: 'Is this spam?' }] },
    { authorization: `Bearer ${key}`, 'x-bridle-task': 'classify' },
  );

test('under budget: the budget tier; from the first request after 80 % of it is spent (not before): the local tier, and the route says so', async () => {
  // Each classify request on gpt-4o-mini costs P = 4 ('Is this spam?', 13
  // bytes) × 0.15 $/M + C = 8 × 0.60 $/M = 5.4 µ$. The budget is 50 µ$, so
  // after 7 requests (37.8 µ$, 75 %) the key is under the share and after 8
  // (43.2 µ$, 86 %) past it: the 9th request is the first downgraded one.
  const u = billed('openai', expected([{ role: 'user', content: 'Is this spam?' }], 'gpt-4o-mini'));
  const perRequest = costPusd('gpt-4o-mini', u);
  assert.equal(perRequest, 5_400_000n);
  const BUDGET = 50_000_000n;
  const firstOver = Number((BUDGET * 80n / 100n + perRequest - 1n) / perRequest); // 8 requests spend ≥ 80 %
  const seen = [];
  for (let i = 0; i <= firstOver; i++) {
    // bridle's view of the spend must be current: every earlier request is
    // in the ledger, then a spend refresh (every 200 ms) has read it back
    await waitSpent(i);
    await sleep(500 * SLOW);
    const r = await ask(budgeted.key);
    assert.equal(r.status, 200, r.text);
    seen.push(r.headers['x-bridle-model']);
    if (i < firstOver) {
      assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini', `request ${i + 1}, ${i} billed (${(BigInt(i) * perRequest * 100n) / BUDGET} % spent): downgraded below the share: ${seen}`);
      assert.equal(r.headers['x-bridle-cost-usd'], formatUsd(perRequest));
      assert.equal(r.headers['x-bridle-route'], 'task classify -> tier budget: cheapest of 1 that fit');
    } else {
      assert.equal(r.headers['x-bridle-model'], 'llama3.2', `request ${i + 1}, ${i} billed (86 % spent): not downgraded: ${seen}`);
      assert.equal(r.headers['x-bridle-route'], 'task classify -> tier budget: cheapest of 1 that fit; over budget (86% >= 80%): local');
      assert.equal(r.headers['x-bridle-cost-usd'], '0.0'); // the local model is free
    }
  }
});

test('another key without a budget is not downgraded', async () => {
  const r = await ask(gw.key);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
});

// Budget downgrade (issue 5) and hard budgets (issue 11): a key's spend this
// month (settled in the database, read back by the budget leases' sync,
// plus what this gateway settled and the ledger has not shipped yet) is
// compared with its budget (keys[].budget_usd); past the share set in
// routing.budget_downgrade, "auto" requests go to the cheaper tier (here the
// free local model) and x-bridle-route says why. A request whose upper-bound
// cost no longer fits in what is left is refused: 429 budget_exceeded.
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
const over = newKey();

before(async () => {
  mock = await startMock();
  pg = await startPostgres();
  const config = mockConfig(mock.url, {
    database: {
      url: pg.url,
      spool_dir: path.join(mkdtempSync(path.join(tmpdir(), 'bridle-budget-')), 'spool'),
    },
    budgets: { sync_ms: 200 },
    routing: {
      tiers: { local: ['llama3.2'], budget: ['gpt-4o-mini'], mid: ['claude-haiku-4-5'], heavy: ['gemini-2.5-flash'] },
      budget_downgrade: { share_pct: 50, to_tier: 'local' },
    },
    keys: [
      { id: 'budgeted', sha256: budgeted.sha256, budget_usd: '0.0001' },
      { id: 'over', sha256: over.sha256, budget_usd: '0.0001' },
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

// max_tokens 16 bounds each request's reservation: the body's bytes (about
// 90) at the input price + 16 × the output price, about 23 µ$ on gpt-4o-mini
const ask = (key, model = 'auto', max_tokens = 16) =>
  post(
    `${gw.baseURL}/chat/completions`,
    { model, max_tokens, messages: [{ role: 'user', content: 'Is this spam?' }] },
    { authorization: `Bearer ${key}`, 'x-bridle-task': 'classify' },
  );

test('under budget: the budget tier; from the first request after 50 % of it is spent (not before): the local tier, and the route says so', async () => {
  // Each classify request on gpt-4o-mini costs P = 4 ('Is this spam?', 13
  // bytes) × 0.15 $/M + C = 8 × 0.60 $/M = 5.4 µ$. The budget is 100 µ$, so
  // after 9 requests (48.6 µ$, 48 %) the key is under the share and after 10
  // (54 µ$, 54 %) past it: the 11th request is the first downgraded one.
  // (Each reservation, about 23 µ$, fits in what is left until then.)
  const u = billed('openai', expected([{ role: 'user', content: 'Is this spam?' }], 'gpt-4o-mini'));
  const perRequest = costPusd('gpt-4o-mini', u);
  assert.equal(perRequest, 5_400_000n);
  const BUDGET = 100_000_000n;
  const firstOver = Number((BUDGET * 50n / 100n + perRequest - 1n) / perRequest); // 10 requests spend ≥ 50 %
  assert.equal(firstOver, 10);
  const seen = [];
  for (let i = 0; i <= firstOver; i++) {
    // bridle's view of the spend must be current: every earlier request is
    // in the ledger, then a budget sync (every 200 ms) has read it back
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
      assert.equal(r.headers['x-bridle-model'], 'llama3.2', `request ${i + 1}, ${i} billed (54 % spent): not downgraded: ${seen}`);
      assert.equal(r.headers['x-bridle-route'], 'task classify -> tier budget: cheapest of 1 that fit; over budget (54% >= 50%): local');
      assert.equal(r.headers['x-bridle-cost-usd'], '0.0'); // the local model is free
    }
  }
});

test('another key without a budget is not downgraded', async () => {
  const r = await ask(gw.key);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-bridle-model'], 'gpt-4o-mini');
});

test('a named model whose reservation does not fit in what is left is refused: 429 budget_exceeded, not retryable, naming the budget', async () => {
  // 54 µ$ of 100 spent; max_tokens 100 reserves about 13.5 + 60 µ$ > 46 µ$
  await waitSpent(10);
  const r = await ask(budgeted.key, 'gpt-4o-mini', 100);
  assert.equal(r.status, 429, r.text);
  assert.equal(r.headers['x-should-retry'], 'false');
  const e = r.json.error;
  assert.equal(e.type, 'budget_exceeded');
  assert.match(e.message, /^Budget exceeded: key "budgeted" monthly budget of \$0\.0001 is used up \(\$0\.000054 spent, this request may cost up to \$0\.0000\d+\); it resets at \d{4}-\d\d-01T00:00:00Z \(in \d+d \d+h\)/);
  // nothing was called, nothing billed
  assert.equal(r.headers['x-bridle-attempts'], '0');
  // a small enough request still fits: 16 tokens reserve about 23 µ$
  const small = await ask(budgeted.key, 'gpt-4o-mini', 16);
  assert.equal(small.status, 200, small.text);
});

test('a key whose recorded spend is past its budget (176 %) gets 429 for a priced model; the free local model still answers', async () => {
  const first = await ask(over.key, 'gpt-4o-mini');
  assert.equal(first.status, 200, first.text);
  for (let t = 0; t < 100; t++) {
    const n = (await pg.query(pg.url, "SELECT spent_pusd FROM bridle_budget_spend WHERE scope = 'key' AND scope_id = 'over' AND period = 'month'")).rows[0]?.spent_pusd;
    if (Number(n) > 0) break; // the first request is charged
    await sleep(50);
  }
  // spend recorded past the limit (say, the budget was lowered): 176 µ$ of 100
  await pg.query(pg.url, "UPDATE bridle_budget_spend SET spent_pusd = 176000000 WHERE scope = 'key' AND scope_id = 'over' AND period = 'month'");
  await sleep(800 * SLOW); // a sync reads it back and drops the lease's slack
  const r = await ask(over.key, 'gpt-4o-mini');
  assert.equal(r.status, 429, r.text);
  assert.equal(r.json.error.type, 'budget_exceeded');
  assert.equal(r.headers['x-should-retry'], 'false');
  assert.match(r.json.error.message, /key "over" monthly budget of \$0\.0001 is used up \(\$0\.000176 spent/);
  const local = await ask(over.key, 'llama3.2');
  assert.equal(local.status, 200, local.text);
  assert.equal(local.headers['x-bridle-cost-usd'], '0.0');
});

// A batch's reservation (migrations/0014) with its lines sent to a
// provider's batch API (the provider batch path, migration 0013): the
// worst case is held at creation at the live price, while the lines are
// out at the provider the reservation refuses live traffic that would not
// fit beside it, their events (written when the provider batch is settled,
// at the batch price) move their cost from it to spent, and the end gives
// the rest back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import { mockConfig, newKey, post, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster } from './lib/ledgerlib.mjs';

const RUN = randomBytes(4).toString('hex');
const key = newKey();
let mock, db, gw;

before(async () => {
  mock = await startMock({ args: ['--batch-ms', '1500'] });
  db = await startCluster();
  gw = await startBridle({
    config: mockConfig(mock.url, {
      database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 100 },
      providers: { openai: { batch: true }, anthropic: { batch: true } },
      resilience: { max_attempts: 1 },
      budgets: { sync_ms: 200 },
      batches: { concurrency: 16, submit_after_ms: 200, poll_min_ms: 100, poll_max_ms: 300 },
      keys: [{ id: 'pb', sha256: key.sha256, budget_daily_usd: '0.001' }],
    }),
  });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await db?.destroy();
});

const auth = { authorization: `Bearer ${key.key}` };
// gpt-4o-mini: 150,000 pico-dollars an input token (each body byte), 600,000 an output token
const lineOf = (i) => {
  const body = { model: 'gpt-4o-mini', max_tokens: 50, messages: [{ role: 'user', content: `Line ${i}` }], user: `${RUN}-${i}` };
  return { text: JSON.stringify({ custom_id: `pb-${i}`, method: 'POST', url: '/v1/chat/completions', body }), worst: BigInt(Buffer.byteLength(JSON.stringify(body))) * 150000n + 50n * 600000n };
};

const spend = async () =>
  (await db.query("SELECT spent_pusd::text AS spent, held_pusd::text AS held FROM bridle_budget_spend WHERE scope = 'key' AND scope_id = 'pb' AND period = 'day' AND period_start = bridle_period_start('day', now())")).rows[0];

test('lines at the provider batch API: held at creation, refused live traffic meanwhile, settled at the batch price against the reservation, the rest back at the end', async () => {
  const lines = [0, 1, 2, 3, 4, 5].map(lineOf);
  const worst = lines.reduce((s, l) => s + l.worst, 0n);
  const form = new FormData();
  form.append('purpose', 'batch');
  form.append('file', new Blob([lines.map((l) => l.text).join('\n') + '\n']), 'in.jsonl');
  const f = await (await fetch(`${gw.baseURL}/files`, { method: 'POST', headers: auth, body: form })).json();
  const r = await post(`${gw.baseURL}/batches`, { input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' }, auth);
  assert.equal(r.status, 200, r.text);
  const id = r.json.id;
  const { rows: lease } = await db.query('SELECT held_pusd::text AS held FROM bridle_budget_leases WHERE instance = $1', [`batch:${id}`]);
  assert.equal(BigInt(lease[0].held), worst);

  // out at the provider: the reservation still counts against live traffic
  for (let t = 0; t < 100; t++) {
    const { rows } = await db.query("SELECT count(*)::int AS n FROM bridle_batch_lines WHERE batch_id = $1 AND state = 'submitted'", [id]);
    if (rows[0].n === 6) break;
    await sleep(50);
  }
  assert.equal(BigInt((await spend()).held), worst);
  const live = await post(`${gw.baseURL}/chat/completions`, { model: 'gpt-4o-mini', max_tokens: 1500, messages: [{ role: 'user', content: 'live' }] }, auth);
  assert.equal(live.status, 429, live.text); // ~900 µ$ alone fits in $0.001, not beside the batch's ~200 µ$

  let b;
  for (let t = 0; t < 300; t++) {
    b = await (await fetch(`${gw.baseURL}/batches/${id}`, { headers: auth })).json();
    if (b.status === 'completed') break;
    await sleep(100);
  }
  assert.equal(b.status, 'completed');
  assert.deepEqual(b.request_counts, { total: 6, completed: 6, failed: 0 });
  let rows;
  for (let t = 0; t < 100; t++) {
    ({ rows } = await db.query('SELECT cost_pusd::text AS cost, route_reason FROM usage_events WHERE batch_id = $1', [id]));
    if (rows.length >= 6) break;
    await sleep(100);
  }
  assert.equal(rows.length, 6);
  assert.ok(rows.every((x) => /provider batch/.test(x.route_reason)), rows[0].route_reason);
  const cost = rows.reduce((s, x) => s + BigInt(x.cost), 0n);
  assert.ok(cost > 0n && cost < worst / 2n);
  const { rows: left } = await db.query('SELECT count(*)::int AS n FROM bridle_budget_leases WHERE instance = $1', [`batch:${id}`]);
  assert.equal(left[0].n, 0);
  const s = await spend();
  assert.equal(s.held, '0');
  assert.equal(BigInt(s.spent), cost);
});

// The provider batch path (issue 16): batch lines routed to a provider
// with `batch: true` go to its batch API (the mock's OpenAI Batch and
// Anthropic Message Batches), are polled, joined back on custom_id, and
// priced at the batch discount; lines for a provider without one (Ollama)
// run live from the local queue at the live price. Checked on bridle's own
// state: the output file, the ledger rows and their cost, and the
// provider batches it keeps in PostgreSQL.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI, { toFile } from 'openai';

import { get, mockConfig, mockReset, mockStats, post, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startBridleAt, startCluster } from './lib/ledgerlib.mjs';
import { answerFor } from './lib/mockmath.mjs';

const RUN = randomBytes(4).toString('hex');
let mock, db, gw, client, restarted;

const config = (mockUrl, dbUrl, spool) =>
  mockConfig(mockUrl, {
    database: { url: dbUrl, spool_dir: spool, flush_interval_ms: 100 },
    providers: { openai: { batch: true }, anthropic: { batch: true }, gemini: { batch: true } },
    resilience: { max_attempts: 1 },
    batches: { concurrency: 16, submit_after_ms: 300, poll_min_ms: 100, poll_max_ms: 400 },
  });

before(async () => {
  mock = await startMock({ args: ['--batch-ms', '300'] });
  db = await startCluster();
  gw = await startBridle({ config: config(mock.url, db.url, tmpDir('bridle-spool-')), keyId: 'pbatch' });
  client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0 });
});

after(async () => {
  await restarted?.stop();
  await gw?.stop();
  await mock?.stop();
  await db?.destroy();
});

const line = (id, content, model = 'gpt-4o-mini') =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model, messages: [{ role: 'user', content }], user: `${RUN}-${id}` },
  });

async function submit(c, lines) {
  const file = await c.files.create({ file: await toFile(Buffer.from(lines.join('\n') + '\n'), 'in.jsonl'), purpose: 'batch' });
  return c.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
}

async function until(c, id, statuses, ms = 60000) {
  const t0 = Date.now();
  for (;;) {
    // a gateway just started answers 503 until its database connection is up
    const b = await c.batches.retrieve(id).catch((e) => (e.status === 503 ? {} : Promise.reject(e)));
    if (statuses.includes(b.status)) return b;
    if (Date.now() - t0 > ms) assert.fail(`batch ${id} still ${b.status} after ${ms} ms`);
    await sleep(100);
  }
}

const fileLines = async (c, id) => (await (await c.files.content(id)).text()).trim().split('\n').map((l) => JSON.parse(l));

/** The ledger rows of users with this prefix, once there are n of them. */
async function ledgerRows(prefix, n) {
  let rows;
  for (let t = 0; t < 100; t++) {
    ({ rows } = await db.query(
      'SELECT end_user, provider, model, status, cost_pusd::text AS cost, baseline_cost_pusd::text AS baseline, batch_id, route_reason, input_tokens, output_tokens FROM usage_events WHERE end_user LIKE $1 ORDER BY end_user',
      [`${prefix}%`],
    ));
    if (rows.length >= n) return rows;
    await sleep(100);
  }
  return rows;
}

/** What one live request with this body costs, from bridle's own ledger. */
async function liveCost(model, content) {
  const user = `${RUN}-live-${randomBytes(3).toString('hex')}`;
  const r = await post(`${gw.baseURL}/chat/completions`, { model, messages: [{ role: 'user', content }], user }, { authorization: `Bearer ${gw.key}` });
  assert.equal(r.status, 200, r.text);
  const [row] = await ledgerRows(user, 1);
  return BigInt(row.cost);
}

describe('the provider batch path', () => {
  test("OpenAI's Batch API and Anthropic's Message Batches at half price; Ollama lines run live", async () => {
    await mockReset(mock.url);
    const models = ['gpt-4o-mini', 'claude-haiku-4-5', 'llama3.2'];
    const lines = [];
    for (let i = 0; i < 30; i++) lines.push(line(`mix-${String(i).padStart(2, '0')}`, i === 4 ? '[[mock:status=400]] refuse me' : `Hello number ${i}`, models[i % 3]));
    const created = await submit(client, lines);
    const done = await until(client, created.id, ['completed']);
    assert.deepEqual(done.request_counts, { total: 30, completed: 29, failed: 1 });
    const out = await fileLines(client, done.output_file_id);
    assert.deepEqual(out.map((o) => o.custom_id), lines.map((l) => JSON.parse(l).custom_id).filter((id) => id !== 'mix-04'));
    for (const o of out) {
      const i = Number(o.custom_id.slice(4));
      assert.equal(o.response.status_code, 200);
      assert.equal(o.response.body.choices[0].message.content, answerFor(models[i % 3]), o.custom_id);
    }
    const errs = await fileLines(client, done.error_file_id);
    assert.equal(errs.length, 1);
    assert.equal(errs[0].custom_id, 'mix-04');
    assert.equal(errs[0].response.status_code, 400);
    assert.equal(errs[0].response.body.error.type, 'invalid_request_error');

    // the ledger: one row per line, the batch's id, batch lines at half the live price
    const rows = await ledgerRows(`${RUN}-mix-`, 30);
    assert.equal(rows.length, 30);
    assert.ok(rows.every((r) => r.batch_id === created.id));
    const live = {
      'gpt-4o-mini': await liveCost('gpt-4o-mini', 'Hello number 10'),
      'claude-haiku-4-5': await liveCost('claude-haiku-4-5', 'Hello number 10'),
      'llama3.2': 0n,
    };
    for (const r of rows) {
      const i = Number(r.end_user.split('-mix-')[1]);
      const m = models[i % 3];
      if (i === 4) {
        assert.equal(r.status, 400);
        assert.equal(r.cost, '0');
        continue;
      }
      assert.equal(r.status, 200);
      assert.equal(r.model, m);
      if (m === 'llama3.2') {
        assert.doesNotMatch(r.route_reason, /provider batch/);
        continue;
      }
      assert.match(r.route_reason, /provider batch/);
      // the same usage as the live request (its prompt has as many bytes), half its price
      if (i >= 10) assert.equal(BigInt(r.cost), live[m] / 2n, `${r.end_user} ${m}`);
      assert.equal(BigInt(r.baseline) / 2n, BigInt(r.cost), 'the baseline is the live price: savings show the batch discount');
    }

    // the calls: batch lines never reached the live endpoints
    const st = await mockStats(mock.url);
    assert.equal(st.batch.lines_run.openai, 10);
    assert.equal(st.batch.lines_run.anthropic, 10);
    assert.equal(st.batch.custom_ids_submitted_twice, 0);
    // bridle's own counters
    const health = (await get(`${gw.baseURL}/bridle/health`, { authorization: `Bearer ${gw.key}` })).json;
    assert.equal(health.providers.find((p) => p.name === 'openai').batch, true);
    assert.equal(health.providers.find((p) => p.name === 'ollama').batch, false);
    assert.ok(health.batches.provider_batches.submitted >= 2, JSON.stringify(health.batches));
    assert.ok(health.batches.provider_batches.settled_lines >= 20, JSON.stringify(health.batches));
    assert.equal(health.batches.provider_batches.lost, 0);
    const { rows: pbs } = await db.query('SELECT provider, status, lines FROM bridle_provider_batches WHERE batch_id = $1 ORDER BY provider', [created.id]);
    assert.deepEqual(pbs, [
      { provider: 'anthropic', status: 'ended', lines: 10 },
      { provider: 'openai', status: 'ended', lines: 10 },
    ]);
  });

  test("Gemini's batch mode: inlined requests, the answers joined on their keys, at half price", async () => {
    await mockReset(mock.url);
    const lines = [];
    for (let i = 0; i < 12; i++) lines.push(line(`gem-${String(i).padStart(2, '0')}`, i === 3 ? '[[mock:status=400]] refuse me' : `Hello number ${i}`, 'gemini-2.5-flash'));
    const created = await submit(client, lines);
    const done = await until(client, created.id, ['completed']);
    assert.deepEqual(done.request_counts, { total: 12, completed: 11, failed: 1 });
    const out = await fileLines(client, done.output_file_id);
    assert.deepEqual(out.map((o) => o.custom_id), lines.map((l) => JSON.parse(l).custom_id).filter((id) => id !== 'gem-03'));
    for (const o of out) assert.equal(o.response.body.choices[0].message.content, answerFor('gemini-2.5-flash'));
    const errs = await fileLines(client, done.error_file_id);
    assert.equal(errs[0].custom_id, 'gem-03');
    assert.equal(errs[0].response.status_code, 400);
    const st = await mockStats(mock.url);
    assert.equal(st.batch.lines_run.gemini, 12);
    assert.equal(st.by_path['/v1beta/models/gemini-2.5-flash:generateContent'] ?? 0, 0, 'no line went live');
    const live = await liveCost('gemini-2.5-flash', 'Hello number 10');
    const rows = await ledgerRows(`${RUN}-gem-`, 12);
    for (const r of rows.filter((x) => x.status === 200)) {
      assert.match(r.route_reason, /provider batch/);
      if (Number(r.end_user.split('-gem-')[1]) >= 10) assert.equal(BigInt(r.cost), live / 2n);
    }
  });

  test("the Anthropic SDK's Message Batches: lines for Claude go to Anthropic's batch API", async () => {
    await mockReset(mock.url);
    const ac = new Anthropic({ apiKey: gw.key, baseURL: gw.url, maxRetries: 0 });
    const requests = [];
    for (let i = 0; i < 6; i++)
      requests.push({ custom_id: `a-${i}`, params: { model: 'claude-haiku-4-5', max_tokens: 64, messages: [{ role: 'user', content: `Hi ${i}` }], metadata: { user_id: `${RUN}-ant-${i}` } } });
    const b = await ac.messages.batches.create({ requests });
    let end;
    for (let t = 0; t < 600 && !(end && end.processing_status === 'ended'); t++) {
      end = await ac.messages.batches.retrieve(b.id);
      await sleep(100);
    }
    assert.equal(end.processing_status, 'ended');
    assert.equal(end.request_counts.succeeded, 6);
    const results = [];
    for await (const r of await ac.messages.batches.results(b.id)) results.push(r);
    assert.deepEqual(results.map((r) => r.custom_id), requests.map((r) => r.custom_id));
    for (const r of results) assert.equal(r.result.message.content[0].text, answerFor('claude-haiku-4-5'));
    assert.equal((await mockStats(mock.url)).batch.lines_run.anthropic, 6);
    const rows = await ledgerRows(`${RUN}-ant-`, 6);
    assert.ok(rows.every((r) => /provider batch/.test(r.route_reason) && r.batch_id === b.id));
  });

  test('a provider that refuses the batch: its lines run live, at the live price', async () => {
    await mockReset(mock.url);
    await post(`${mock.url}/_mock/batch`, { fail_create: 503 });
    const lines = [];
    for (let i = 0; i < 5; i++) lines.push(line(`ref-${i}`, `Hello number ${i}`));
    const created = await submit(client, lines);
    const done = await until(client, created.id, ['completed']);
    assert.deepEqual(done.request_counts, { total: 5, completed: 5, failed: 0 });
    const rows = await ledgerRows(`${RUN}-ref-`, 5);
    assert.ok(rows.every((r) => r.status === 200 && !/provider batch/.test(r.route_reason)));
    assert.equal((await mockStats(mock.url)).by_path['/v1/chat/completions'], 5, 'each line once, live');
    const { rows: pbs } = await db.query('SELECT status, error FROM bridle_provider_batches WHERE batch_id = $1', [created.id]);
    assert.equal(pbs.length, 1);
    assert.equal(pbs[0].status, 'failed');
    assert.match(pbs[0].error, /HTTP 503/);
  });

  test('cancel midway: the provider batch is cancelled at the provider, its lines cancelled', async () => {
    await mockReset(mock.url);
    await post(`${mock.url}/_mock/batch`, { processing_ms: 5000 });
    const lines = [];
    for (let i = 0; i < 8; i++) lines.push(line(`can-${i}`, `Hello ${i}`));
    const created = await submit(client, lines);
    for (let t = 0; t < 100; t++) {
      const { rows } = await db.query("SELECT count(*)::int AS n FROM bridle_provider_batches WHERE batch_id = $1 AND status = 'in_progress'", [created.id]);
      if (rows[0].n) break;
      await sleep(100);
    }
    await client.batches.cancel(created.id);
    const end = await until(client, created.id, ['cancelled'], 20000);
    // what the provider ran before the cancel is kept, the rest is cancelled
    const { completed, failed, total } = end.request_counts;
    assert.equal(completed + failed, total);
    assert.ok(completed < total, `completed ${completed}`);
    const { rows: pbs } = await db.query('SELECT remote_id, cancel_sent FROM bridle_provider_batches WHERE batch_id = $1', [created.id]);
    assert.equal(pbs.length, 1);
    assert.equal(pbs[0].cancel_sent, true);
    const remote = await get(`${mock.url}/v1/batches/${pbs[0].remote_id}`, { authorization: 'Bearer sk-mock-openai' });
    assert.ok(['cancelling', 'cancelled'].includes(remote.json.status), remote.text);
    assert.equal((await mockStats(mock.url)).batch.lines_run.openai, completed);
    const errs = await fileLines(client, end.error_file_id);
    assert.equal(errs.length, failed);
    assert.ok(errs.every((e) => e.error.code === 'batch_cancelled'), JSON.stringify(errs[0]));
    await post(`${mock.url}/_mock/batch`, { processing_ms: 300 });
  });
});

test('a settlement done twice (a crash between the events and the lines) charges nothing twice', async () => {
  await mockReset(mock.url);
  const lines = [];
  for (let i = 0; i < 6; i++) lines.push(line(`twice-${i}`, `Hello ${i}`));
  const created = await submit(client, lines);
  await until(client, created.id, ['completed']);
  const before = await ledgerRows(`${RUN}-twice-`, 6);
  assert.equal(before.length, 6);
  // as if the gateway died after spooling the events, before writing the lines
  await db.query("UPDATE bridle_batch_lines SET state = 'submitted' WHERE batch_id = $1", [created.id]);
  await db.query("UPDATE bridle_batches SET status = 'in_progress', output_file_id = NULL, completed_at = NULL WHERE id = $1", [created.id]);
  await db.query("UPDATE bridle_provider_batches SET status = 'in_progress', next_poll_at = now(), poll_until = NULL WHERE batch_id = $1", [created.id]);
  const again = await until(client, created.id, ['completed']);
  assert.equal(again.request_counts.completed, 6);
  await sleep(500); // the ledger's flush interval, twice over
  const after = await ledgerRows(`${RUN}-twice-`, 6);
  assert.deepEqual(after, before, 'the same six rows: the repeated events were dropped as duplicates');
  assert.equal((await mockStats(mock.url)).batch.lines_run.openai, 6, 'settling again sends nothing');
});

test("a provider batch left submitting by a gateway that is gone: its lines fail as interrupted, never sent", async () => {
  const lines = [line('gone-0', 'Hello'), line('gone-1', 'Hello')];
  await mockReset(mock.url);
  await post(`${mock.url}/_mock/batch`, { fail_create: 0 });
  // the lines of a batch whose provider batch a dead gateway was submitting
  const created = await submit(client, lines.slice(0, 1));
  await until(client, created.id, ['completed']);
  await db.query("UPDATE bridle_batches SET status = 'in_progress', output_file_id = NULL WHERE id = $1", [created.id]);
  await db.query("INSERT INTO bridle_provider_batches (id, batch_id, provider, model, status, instance, lines) VALUES ('pb_dead', $1, 'openai', 'gpt-4o-mini', 'submitting', 'no-such-gateway', 1)", [created.id]);
  await db.query("UPDATE bridle_batch_lines SET state = 'submitted', pbatch_id = 'pb_dead', status = NULL, response = NULL WHERE batch_id = $1", [created.id]);
  const end = await until(client, created.id, ['completed'], 20000);
  assert.equal(end.request_counts.failed, 1);
  const { rows } = await db.query('SELECT state, response FROM bridle_batch_lines WHERE batch_id = $1', [created.id]);
  assert.equal(rows[0].state, 'failed');
  assert.match(rows[0].response, /^interrupted: the gateway submitting/);
  const { rows: pb } = await db.query("SELECT status FROM bridle_provider_batches WHERE id = 'pb_dead'");
  assert.equal(pb[0].status, 'failed');
});

test('10,000 lines through the openai SDK: every one answered, in order, one ledger row each, at half price', async () => {
  await mockReset(mock.url);
  const n = 10000;
  const lines = [];
  for (let i = 0; i < n; i++) lines.push(line(`big-${String(i).padStart(5, '0')}`, `Line ${String(i).padStart(5, '0')} of the big one`));
  const t0 = Date.now();
  const created = await submit(client, lines);
  const done = await until(client, created.id, ['completed'], 240000);
  const ms = Date.now() - t0;
  assert.deepEqual(done.request_counts, { total: n, completed: n, failed: 0 });
  const out = await fileLines(client, done.output_file_id);
  assert.equal(out.length, n);
  out.forEach((o, i) => {
    assert.equal(o.custom_id, `big-${String(i).padStart(5, '0')}`);
    assert.equal(o.response.body.choices[0].message.content, answerFor('gpt-4o-mini'));
  });
  const st = await mockStats(mock.url);
  assert.equal(st.batch.lines_run.openai, n);
  assert.equal(st.by_path['/v1/chat/completions'] ?? 0, 0, 'no line went live');
  const live = await liveCost('gpt-4o-mini', 'Line 00000 of the big one');
  const { rows } = await db.query(
    "SELECT count(*)::int AS n, count(DISTINCT cost_pusd)::int AS costs, min(cost_pusd)::text AS cost FROM usage_events WHERE end_user LIKE $1 AND batch_id = $2 AND route_reason LIKE '%provider batch%'",
    [`${RUN}-big-%`, created.id],
  );
  assert.equal(rows[0].n, n);
  assert.equal(rows[0].costs, 1);
  assert.equal(BigInt(rows[0].cost), live / 2n);
  const { rows: pbs } = await db.query('SELECT count(*)::int AS n, sum(lines)::int AS lines FROM bridle_provider_batches WHERE batch_id = $1', [created.id]);
  assert.equal(pbs[0].lines, n);
  console.log(`# 10,000 lines through the provider batch path in ${ms} ms (${pbs[0].n} provider batches)`);
});

test('SIGKILL twice, while lines are routed and while provider batches are out: the batch completes; no line sent or charged twice', async () => {
  await mockReset(mock.url);
  await post(`${mock.url}/_mock/batch`, { processing_ms: 1500 });
  const n = 60;
  const lines = [];
  for (let i = 0; i < n; i++) lines.push(line(`kill-${String(i).padStart(2, '0')}`, `Hello ${i}`, i % 2 ? 'gpt-4o-mini' : 'claude-haiku-4-5'));
  const created = await submit(client, lines);
  const count = async (sql) => (await db.query(sql, [created.id])).rows[0].n;
  // the first kill: as soon as lines are being routed
  for (let t = 0; t < 200; t++) {
    if ((await count("SELECT count(*)::int AS n FROM bridle_batch_lines WHERE batch_id = $1 AND state <> 'pending'")) > 0) break;
    await sleep(5);
  }
  await gw.proc.stop({ signal: 'SIGKILL' });
  let proc = await startBridleAt(gw.configPath, gw.port);
  // the second: while its provider batches are out
  for (let t = 0; t < 200; t++) {
    if ((await count("SELECT count(*)::int AS n FROM bridle_provider_batches WHERE batch_id = $1 AND status = 'in_progress'")) > 0) break;
    await sleep(25);
  }
  await proc.stop({ signal: 'SIGKILL' });
  restarted = await startBridleAt(gw.configPath, gw.port);
  const end = await until(client, created.id, ['completed'], 60000);
  const { completed, failed, total } = end.request_counts;
  assert.equal(total, n);
  assert.equal(completed + failed, n);
  const { rows: bad } = await db.query("SELECT response FROM bridle_batch_lines WHERE batch_id = $1 AND state = 'failed'", [created.id]);
  assert.ok(bad.every((r) => r.response.startsWith('interrupted')), JSON.stringify(bad.slice(0, 2)));
  const st = await mockStats(mock.url);
  assert.equal(st.batch.custom_ids_submitted_twice, 0);
  assert.equal(st.batch.custom_ids_run_twice, 0);
  // a provider batch whose creation got no answer may still have run there: its lines fail, never sent again
  assert.ok(st.batch.lines_run.total >= completed, `${st.batch.lines_run.total} run, ${completed} completed`);
  const rows = await ledgerRows(`${RUN}-kill-`, completed);
  assert.equal(rows.length, completed, 'one ledger row per answered line, none twice');
  assert.ok(rows.every((r) => r.status === 200 && /provider batch/.test(r.route_reason)));
  await post(`${mock.url}/_mock/batch`, { processing_ms: 300 });
});

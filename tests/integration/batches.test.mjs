// The Batch API with the local queue (issue 16, second step): the openai
// SDK's batches calls against bridle, the mock and a real PostgreSQL. A
// batch's lines run as requests of its key (one ledger row each), its
// output file keeps the input's order, failed lines go to the error file,
// and a cancelled batch sends none of its pending lines.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI, { toFile } from 'openai';

import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { get, mockConfig, mockReset, mockStats, newKey, runCli, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster } from './lib/ledgerlib.mjs';
import { answerFor } from './lib/mockmath.mjs';

const RUN = randomBytes(4).toString('hex');
let mock, db, gw, client, other;

before(async () => {
  mock = await startMock();
  db = await startCluster();
  const second = newKey();
  gw = await startBridle({
    config: mockConfig(mock.url, {
      database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 100 },
      keys: [{ id: 'other', sha256: second.sha256, team: 'other' }],
      resilience: { max_attempts: 1 },
      batches: { concurrency: 16 },
    }),
    keyId: 'batcher',
  });
  client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0 });
  other = new OpenAI({ apiKey: second.key, baseURL: gw.baseURL, maxRetries: 0 });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await db?.destroy();
});

const MODELS = ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2'];
const line = (id, content, model = 'gpt-4o-mini') =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model, messages: [{ role: 'user', content }], user: `${RUN}-${id}` },
  });

async function submit(lines) {
  const file = await client.files.create({ file: await toFile(Buffer.from(lines.join('\n') + '\n'), 'in.jsonl'), purpose: 'batch' });
  return client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { run: RUN } });
}

async function until(id, statuses, ms = 30000) {
  const t0 = Date.now();
  for (;;) {
    const b = await client.batches.retrieve(id);
    if (statuses.includes(b.status)) return b;
    if (Date.now() - t0 > ms) assert.fail(`batch ${id} still ${b.status} after ${ms} ms`);
    await sleep(100);
  }
}

const fileLines = async (id) => (await (await client.files.content(id)).text()).trim().split('\n').map((l) => JSON.parse(l));

const claims = async () =>
  (await get(`${gw.baseURL}/bridle/health`, { authorization: `Bearer ${gw.key}` })).json.batches.claims;

describe('a batch through the local queue', () => {
  // First in the file: no batch exists yet. Claims that find nothing wait
  // 1, 2, 4, 8, 16 ticks of 200 ms (then 25): the 1st to the 5th take 3 s
  // (0.8 s at one a tick), and the 6th would come 3.2 s after the 5th.
  test('an idle gateway asks for lines less and less often, and at once when a batch comes', async () => {
    const waitFor = async (want, ms) => {
      const t0 = Date.now();
      for (let n; (n = await claims()) < want; await sleep(20))
        if (Date.now() - t0 > ms) assert.fail(`${n} claims after ${ms} ms, ${want} awaited`);
      return Date.now() - t0;
    };
    assert.ok((await claims()) <= 1, 'this test runs first, on a gateway just started');
    await waitFor(1, 5000);
    const idle = await waitFor(5, 10000);
    assert.ok(idle >= 2500, `the 2nd to the 5th claim came within ${idle} ms`);
    const b = await submit([line('wake-0', 'Hello'), line('wake-1', 'Hello again')]);
    const woken = await waitFor(6, 10000);
    assert.ok(woken < 1500, `the first claim after the batch was created came after ${woken} ms`);
    const done = await until(b.id, ['completed', 'failed']);
    assert.equal(done.status, 'completed');
    assert.equal(done.request_counts.completed, 2);
  });

  test('every line answered, in order, one ledger row each; a failed line in the error file', async () => {
    const n = 24;
    const lines = [];
    for (let i = 0; i < n; i++) lines.push(line(`req-${i}`, i === 7 ? '[[mock:status=400]] refuse me' : `Hello number ${i}`, MODELS[i % 4]));
    const created = await submit(lines);
    assert.match(created.id, /^batch_[0-9a-f]{24}$/);
    assert.equal(created.object, 'batch');
    assert.equal(created.status, 'in_progress');
    assert.equal(created.endpoint, '/v1/chat/completions');
    assert.deepEqual(created.metadata, { run: RUN });
    assert.equal(created.request_counts.total, n);

    const done = await until(created.id, ['completed']);
    assert.deepEqual(done.request_counts, { total: n, completed: n - 1, failed: 1 });
    assert.ok(done.completed_at >= done.created_at);
    const out = await fileLines(done.output_file_id);
    assert.deepEqual(out.map((o) => o.custom_id), lines.map((_, i) => `req-${i}`).filter((id) => id !== 'req-7'));
    for (const o of out) {
      const i = Number(o.custom_id.slice(4));
      assert.equal(o.response.status_code, 200);
      assert.equal(o.error, null);
      assert.equal(o.response.body.choices[0].message.content, answerFor(MODELS[i % 4]), o.custom_id);
      assert.match(o.response.request_id, /^req_/);
    }
    const errs = await fileLines(done.error_file_id);
    assert.equal(errs.length, 1);
    assert.equal(errs[0].custom_id, 'req-7');
    assert.equal(errs[0].response.status_code, 400);

    // bridle's own record: one usage event per line, under the batch's key
    let rows;
    for (let t = 0; t < 50; t++) {
      ({ rows } = await db.query('SELECT end_user, key_id, status, batch_id FROM usage_events WHERE end_user LIKE $1', [`${RUN}-req-%`]));
      if (rows.length >= n) break;
      await sleep(100);
    }
    assert.equal(rows.length, n);
    assert.ok(rows.every((r) => r.key_id === 'batcher' && r.batch_id === created.id));
    assert.equal(rows.filter((r) => r.status === 400).length, 1);

    // Ended, the batch keeps its counts on its row (migration 0015), and a
    // read no longer counts its lines: without them it still says the same.
    const { rows: [counts] } = await db.query(
      'SELECT n_done, n_failed, n_cancelled, n_expired FROM bridle_batches WHERE id = $1', [created.id]);
    assert.deepEqual(counts, { n_done: n - 1, n_failed: 1, n_cancelled: 0, n_expired: 0 });
    await db.query('DELETE FROM bridle_batch_lines WHERE batch_id = $1', [created.id]);
    assert.deepEqual((await client.batches.retrieve(created.id)).request_counts, { total: n, completed: n - 1, failed: 1 });
    const listed = [];
    for await (const b of client.batches.list({ limit: 100 })) listed.push(b);
    assert.deepEqual(listed.find((b) => b.id === created.id).request_counts, { total: n, completed: n - 1, failed: 1 });
  });

  test('PostgreSQL compiles none of the gateway\'s queries: JIT is off for its database (migration 0016)', async () => {
    // A page of batches was JIT-compiled on every call (0.26-0.34 s against 0.2 ms).
    const { rows } = await db.query(
      'SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database() AND s.setrole = 0');
    assert.deepEqual(rows.map((r) => r.setconfig), [['jit=off']]);
  });

  test('10,000 lines: every one answered, in order, one ledger row each', async () => {
    await mockReset(mock.url);
    const n = 10000;
    const lines = [];
    for (let i = 0; i < n; i++) lines.push(line(`big-${i}`, `Line ${i} of the big batch`, MODELS[i % 4]));
    const t0 = Date.now();
    const created = await submit(lines);
    const done = await until(created.id, ['completed'], 240000);
    const ms = Date.now() - t0;
    assert.deepEqual(done.request_counts, { total: n, completed: n, failed: 0 });
    const out = await fileLines(done.output_file_id);
    assert.equal(out.length, n);
    out.forEach((o, i) => {
      assert.equal(o.custom_id, `big-${i}`);
      assert.equal(o.response.body.choices[0].message.content, answerFor(MODELS[i % 4]));
    });
    assert.equal((await mockStats(mock.url)).requests, n);
    const { rows } = await db.query('SELECT count(*)::int AS n FROM usage_events WHERE end_user LIKE $1', [`${RUN}-big-%`]);
    assert.equal(rows[0].n, n);
    console.log(`# 10,000 lines in ${ms} ms`);
  });

  test('cancel midway: the pending lines are never sent', async () => {
    await mockReset(mock.url);
    const n = 40;
    const lines = [];
    for (let i = 0; i < n; i++) lines.push(line(`slow-${i}`, '[[mock:latency_ms=300]] slowly'));
    const created = await submit(lines);
    await sleep(700);
    const cancelling = await client.batches.cancel(created.id);
    assert.ok(['cancelling', 'cancelled'].includes(cancelling.status), cancelling.status);
    const end = await until(created.id, ['cancelled']);
    const { completed, failed, total } = end.request_counts;
    assert.equal(total, n);
    assert.ok(completed >= 1 && completed < n, `completed ${completed}`);
    assert.equal(completed + failed, n);
    const sent = (await mockStats(mock.url)).requests;
    assert.equal(sent, completed, 'only the lines that ran reached the provider');
    const errs = await fileLines(end.error_file_id);
    assert.ok(errs.every((e) => e.error.code === 'batch_cancelled'));
    assert.equal(errs.length, failed);
  });

  test('a batch past its window expires: its pending lines are never sent', async () => {
    await mockReset(mock.url);
    const lines = [];
    for (let i = 0; i < 120; i++) lines.push(line(`exp-${i}`, '[[mock:latency_ms=300]] slowly'));
    const created = await submit(lines);
    await sleep(300);
    await db.query("UPDATE bridle_batches SET expires_at = now() WHERE id = $1", [created.id]);
    const end = await until(created.id, ['expired'], 20000);
    assert.ok(end.expired_at >= end.created_at);
    const { completed, failed, total } = end.request_counts;
    assert.equal(completed + failed, total);
    assert.ok(completed >= 1 && completed < total, `completed ${completed}`);
    assert.equal((await mockStats(mock.url)).requests, completed);
    const errs = await fileLines(end.error_file_id);
    assert.ok(errs.every((e) => e.error.code === 'batch_expired'), JSON.stringify(errs[0]));
  });

  test('list, pages, and another key sees nothing', async () => {
    const page = await client.batches.list({ limit: 1 });
    assert.equal(page.data.length, 1);
    assert.equal(page.has_more, true);
    const ids = [];
    for await (const b of client.batches.list({ limit: 1 })) ids.push(b.id);
    assert.ok(ids.length >= 2);
    assert.equal(new Set(ids).size, ids.length);
    await assert.rejects(other.batches.retrieve(ids[0]), (e) => e.status === 404);
    await assert.rejects(other.batches.cancel(ids[0]), (e) => e.status === 404);
    const mine = [];
    for await (const b of other.batches.list()) mine.push(b.id);
    assert.deepEqual(mine, []);
  });

  test('Idempotency-Key on creation: one batch, replayed; another body with the key is a 422', async () => {
    const file = await client.files.create({ file: await toFile(Buffer.from(line('idem-1', 'hi') + '\n'), 'i.jsonl'), purpose: 'batch' });
    const body = { input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' };
    const key = `idem-${RUN}`;
    const first = await client.batches.create(body, { headers: { 'Idempotency-Key': key } }).withResponse();
    const again = await client.batches.create(body, { headers: { 'Idempotency-Key': key } }).withResponse();
    assert.equal(again.data.id, first.data.id);
    assert.equal(again.response.headers.get('idempotent-replayed'), 'true');
    assert.equal(first.response.headers.get('idempotent-replayed'), null);
    const { rows } = await db.query('SELECT count(*)::int AS n FROM bridle_batches WHERE input_file_id = $1', [file.id]);
    assert.equal(rows[0].n, 1);
    await assert.rejects(client.batches.create({ ...body, metadata: { x: 'y' } }, { headers: { 'Idempotency-Key': key } }), (e) => e.status === 422);
    await until(first.data.id, ['completed']);
  });

  test('a batch of a file that is not there, or of another endpoint, is refused', async () => {
    await assert.rejects(
      client.batches.create({ input_file_id: 'file-000000000000000000000000', endpoint: '/v1/chat/completions', completion_window: '24h' }),
      (e) => e.status === 400 && e.param === 'input_file_id',
    );
    await assert.rejects(
      client.batches.create({ input_file_id: 'file-x', endpoint: '/v1/embeddings', completion_window: '24h' }),
      (e) => e.status === 400 && e.param === 'endpoint',
    );
  });
});

describe("Anthropic's Message Batches", () => {
  let ac;
  before(() => {
    ac = new Anthropic({ apiKey: gw.key, baseURL: gw.url, maxRetries: 0 });
  });
  const req = (id, content, model = 'claude-haiku-4-5') => ({
    custom_id: id,
    params: { model, max_tokens: 64, messages: [{ role: 'user', content }], metadata: { user_id: `${RUN}-${id}` } },
  });
  async function ended(id) {
    for (let t = 0; t < 300; t++) {
      const b = await ac.messages.batches.retrieve(id);
      if (b.processing_status === 'ended') return b;
      await sleep(100);
    }
    assert.fail(`message batch ${id} did not end`);
  }

  test('create, retrieve, results in order; an errored request; routed to any dialect', async () => {
    const requests = MODELS.map((m, i) => req(`m-${i}`, `Hello ${i}`, m));
    requests.push(req('m-bad', '[[mock:status=400]] refuse'));
    const b = await ac.messages.batches.create({ requests });
    assert.match(b.id, /^msgbatch_[0-9a-f]{24}$/);
    assert.equal(b.type, 'message_batch');
    assert.equal(b.processing_status, 'in_progress');
    assert.match(b.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    const end = await ended(b.id);
    assert.deepEqual(end.request_counts, { processing: 0, succeeded: 4, errored: 1, canceled: 0, expired: 0 });
    assert.equal(end.results_url, `/v1/messages/batches/${b.id}/results`);
    const results = [];
    for await (const r of await ac.messages.batches.results(b.id)) results.push(r);
    assert.deepEqual(results.map((r) => r.custom_id), requests.map((r) => r.custom_id));
    results.slice(0, 4).forEach((r, i) => {
      assert.equal(r.result.type, 'succeeded');
      assert.equal(r.result.message.type, 'message');
      assert.equal(r.result.message.content[0].text, answerFor(MODELS[i]));
    });
    assert.equal(results[4].result.type, 'errored');
    assert.equal(results[4].result.error.error.type, 'invalid_request_error');
    const { rows } = await db.query('SELECT count(*)::int AS n FROM usage_events WHERE end_user LIKE $1', [`${RUN}-m-%`]);
    assert.equal(rows[0].n, 5);
    // the batch's own file is not among the client's files
    const files = [];
    for await (const f of client.files.list()) files.push(f.purpose);
    assert.ok(!files.includes('messages_batch'));
  });

  test('list and cancel; results before the end are refused; bad requests name their index', async () => {
    const slow = [];
    for (let i = 0; i < 30; i++) slow.push(req(`s-${i}`, '[[mock:latency_ms=300]] slowly'));
    const b = await ac.messages.batches.create({ requests: slow });
    await assert.rejects(ac.messages.batches.results(b.id), /results_url/);
    const c = await ac.messages.batches.cancel(b.id);
    assert.ok(['canceling', 'ended'].includes(c.processing_status));
    const end = await ended(b.id);
    assert.ok(end.request_counts.canceled > 0);
    const ids = [];
    for await (const x of ac.messages.batches.list({ limit: 1 })) ids.push(x.id);
    assert.ok(ids.includes(b.id) && ids.every((x) => x.startsWith('msgbatch_')));
    await assert.rejects(
      ac.messages.batches.create({ requests: [req('a', 'x'), { custom_id: 'b', params: { model: 'claude-haiku-4-5', messages: [] } }] }),
      (e) => e.status === 400 && /requests\.1\.params\.max_tokens/.test(e.message),
    );
    await assert.rejects(ac.messages.batches.create({ requests: [req('a', 'x'), req('a', 'y')] }), (e) => e.status === 400 && /used twice/.test(e.message));
    await assert.rejects(ac.messages.batches.retrieve('msgbatch_000000000000000000000000'), (e) => e.status === 404 && e.error.error.type === 'not_found_error');
  });
});

test('the CLI: bridle batch submit --wait, status, results', async () => {
  const file = path.join(tmpDir('bridle-cli-'), 'in.jsonl');
  const lines = [];
  for (let i = 0; i < 12; i++) lines.push(line(`cli-${i}`, i === 3 ? '[[mock:status=400]] no' : `Hi ${i}`));
  writeFileSync(file, lines.join('\n') + '\n');
  const env = { BRIDLE_URL: gw.url, BRIDLE_KEY: gw.key };
  const sub = await runCli(['batch', 'submit', file, '--wait'], { env });
  assert.equal(sub.code, 0, sub.stderr);
  const m = /^(batch_[0-9a-f]{24})  completed  11\/12 completed, 1 failed  output file-\w+  errors file-\w+$/m.exec(sub.stdout);
  assert.ok(m, sub.stdout);
  const st = await runCli(['batch', 'status', m[1], '--json'], { env });
  assert.equal(JSON.parse(st.stdout).request_counts.completed, 11);
  const out = await runCli(['batch', 'results', m[1]], { env });
  assert.deepEqual(out.stdout.trim().split('\n').map((l) => JSON.parse(l).custom_id), lines.map((_, i) => `cli-${i}`).filter((x) => x !== 'cli-3'));
  const errs = await runCli(['batch', 'results', m[1], '--errors'], { env });
  assert.equal(JSON.parse(errs.stdout.trim()).custom_id, 'cli-3');
  const bad = await runCli(['batch', 'status', 'batch_x'], { env });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /HTTP 404: No batch found/);
  const nokey = await runCli(['batch', 'status', 'batch_x'], { env: { BRIDLE_URL: gw.url } });
  assert.equal(nokey.code, 2);
});

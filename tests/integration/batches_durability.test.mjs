// A batch survives SIGKILL of the gateway running it, twice, and no line
// reaches the provider twice: lines claimed by the killed process are
// failed as interrupted when its successor starts on the same spool, the
// rest run, and the batch completes (issue 16).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import OpenAI, { toFile } from 'openai';

import { mockConfig, mockLast, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startBridleAt, startCluster, waitUntil } from './lib/ledgerlib.mjs';

const RUN = randomBytes(4).toString('hex');
const N = 60;
let mock, db, gw, proc;

before(async () => {
  mock = await startMock();
  db = await startCluster();
  gw = await startBridle({
    config: mockConfig(mock.url, {
      database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 50 },
      resilience: { max_attempts: 1 },
      batches: { concurrency: 4 },
    }),
    keyId: 'durable',
  });
  proc = gw.proc;
});

after(async () => {
  await proc?.stop();
  await mock?.stop();
  await db?.destroy();
});

const running = async (id) =>
  (await db.query("SELECT count(*)::int AS n FROM bridle_batch_lines WHERE batch_id = $1 AND state = 'running'", [id])).rows[0].n;
const done = async (id) =>
  (await db.query("SELECT count(*)::int AS n FROM bridle_batch_lines WHERE batch_id = $1 AND state = 'done'", [id])).rows[0].n;

test('SIGKILL twice while a batch runs: it completes, and no line is sent twice', async () => {
  const client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0 });
  const lines = [];
  for (let i = 0; i < N; i++)
    lines.push(
      JSON.stringify({
        custom_id: `d-${i}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `[[mock:latency_ms=120]] line ${i}` }], user: `${RUN}-${i}` },
      }),
    );
  const file = await client.files.create({ file: await toFile(Buffer.from(lines.join('\n')), 'd.jsonl'), purpose: 'batch' });
  const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });

  for (const atLeast of [8, 28]) {
    // killed while lines run: done, and some claimed and in flight
    await waitUntil(async () => (await done(batch.id)) >= atLeast && (await running(batch.id)) >= 2, 20000, `${atLeast} lines done`);
    await proc.stop({ signal: 'SIGKILL' });
    proc = await startBridleAt(gw.configPath, gw.port);
  }

  const end = await waitUntil(
    async () => {
      const b = await client.batches.retrieve(batch.id);
      return b.status === 'completed' && b;
    },
    30000,
    'the batch completes',
    100,
  );
  const { total, completed, failed } = end.value.request_counts;
  assert.equal(total, N);
  assert.equal(completed + failed, N);
  assert.ok(failed >= 2 && failed <= 8, `the lines in flight at each kill fail, no others (${failed})`);
  const { rows: bad } = await db.query("SELECT response FROM bridle_batch_lines WHERE batch_id = $1 AND state = 'failed'", [batch.id]);
  assert.ok(bad.every((r) => r.response.startsWith('interrupted')), JSON.stringify(bad));

  // what reached the provider: every line at most once
  const seen = new Map();
  for (const req of await mockLast(mock.url, 64)) {
    const m = /line (\d+)/.exec(JSON.stringify(req.body));
    if (m) seen.set(m[1], (seen.get(m[1]) ?? 0) + 1);
  }
  assert.ok([...seen.values()].every((n) => n === 1), JSON.stringify([...seen]));
  assert.ok(seen.size >= completed, `${seen.size} lines sent, ${completed} completed`);

  // every answered line has its ledger row (the spool replayed what each kill left)
  const { rows } = await waitUntil(
    async () => {
      const r = await db.query('SELECT count(DISTINCT end_user)::int AS n FROM usage_events WHERE end_user LIKE $1 AND status = 200', [`${RUN}-%`]);
      return r.rows[0].n >= completed && r;
    },
    15000,
    'ledger rows for the answered lines',
  ).then((x) => x.value);
  assert.ok(rows[0].n >= completed);
});

// T8 (reliability.md §8): zero lost, zero duplicated usage events under
// database and process faults. LEDGER_FAULT_N requests (default 20,000) at
// LEDGER_FAULT_RATE req/s (default 250, so that
// the whole file fits the runner's 120 s per-file limit: TEST_TIMEOUT_MS in
// scripts/run-integration-tests.sh also bounds a whole test file), plain and streamed, over several
// keep-alive connections, against the mock. Meanwhile:
//   ~6 % in    PostgreSQL `pg_ctl stop -m immediate`, restarted 30 s later
//   ~50 % in   the gateway SIGKILLed and restarted on the same port and spool
//   ~62 % in   the postmaster SIGSTOPped for 10 s, then SIGCONT
// Each request carries a unique metadata.feature (→ usage_events.feature),
// since the event id is not in the response. Only requests the client saw
// complete (200 and a whole body / [DONE]) are counted.
// Pass: every completed request has exactly one row (0 lost), count(*) ==
// count(DISTINCT event_id) (0 duplicated), and the spool is drained (every
// record acked, rows stop arriving) within 60 s of the database's return.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { after, test } from 'node:test';

import { SLOW, mockConfig, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { spoolState, startBridleAt, startCluster, waitUntil } from './lib/ledgerlib.mjs';

const N = Number(process.env.LEDGER_FAULT_N || 20000);
const RATE = Number(process.env.LEDGER_FAULT_RATE || 250);
const CONNS = 16;
const PG_DOWN_MS = 30000;
const PAUSE_MS = 10000;
const RUN = randomBytes(4).toString('hex');

let mock;
let db;
let gwProc; // the current gateway process
after(async () => {
  await gwProc?.stop().catch(() => {});
  await mock?.stop();
  await db?.destroy();
});

const pct = (xs, p) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

test(`T8: ${N} requests at ${RATE}/s through a database outage, a gateway SIGKILL and a paused postmaster: 0 lost, 0 duplicated`, { timeout: 240000 * SLOW }, async () => {
  mock = await startMock();
  db = await startCluster();
  const spool = tmpDir('bridle-spool-');
  const gw = await startBridle({
    config: mockConfig(mock.url, { log_level: 'warn', database: { url: db.url, spool_dir: spool, flush_interval_ms: 100 } }),
    keyId: 'fault',
    team: 'fault',
  });
  gwProc = gw.proc;
  const port = gw.port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNS });

  const completed = []; // features of requests that completed
  const lat = []; // [sentAtMs (rel), latencyMs] of completed requests
  let failed = 0;
  let bad = 0; // completed with 200 but not a whole body (counted as failed too)
  let non200 = 0;
  let inflight = 0;
  const T0 = Date.now();
  const now = () => Date.now() - T0;

  function one(i) {
    const feature = `f-${RUN}-${i}`;
    const stream = i % 2 === 1;
    const model = i % 4 < 2 ? 'gpt-4o-mini' : 'claude-haiku-4-5';
    const body = JSON.stringify({ model, stream, max_tokens: 64, metadata: { feature }, messages: [{ role: 'user', content: `fault test ${i}` }] });
    const t = Date.now();
    inflight++;
    const req = http.request({
      host: '127.0.0.1',
      port,
      path: '/v1/chat/completions',
      method: 'POST',
      agent,
      timeout: 15000,
      headers: { authorization: `Bearer ${gw.key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    let done = false;
    const finish = (ok) => {
      if (done) return;
      done = true;
      inflight--;
      if (ok) {
        completed.push(feature);
        lat.push([t - T0, Date.now() - t]);
      } else failed++;
    };
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        if (res.statusCode !== 200) {
          non200++;
          return finish(false);
        }
        const text = Buffer.concat(chunks).toString('utf8');
        let ok;
        if (stream) ok = /data: \[DONE\]\s*$/.test(text) && !text.includes('"error"');
        else {
          try {
            ok = JSON.parse(text).choices?.[0]?.message?.content?.length > 0;
          } catch {
            ok = false;
          }
        }
        if (!ok) bad++;
        finish(ok);
      });
      res.on('error', () => finish(false));
      res.on('aborted', () => finish(false));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => finish(false));
    req.end(body);
  }

  // the load: paced by a timer, independent of the faults
  let sent = 0;
  const loadDone = new Promise((resolve) => {
    const iv = setInterval(() => {
      const due = Math.min(N, Math.floor((now() * RATE) / 1000));
      while (sent < due) one(sent++);
      if (sent >= N) {
        clearInterval(iv);
        resolve(now());
      }
    }, 5);
  });
  const dur = (N / RATE) * 1000;
  const at = (frac) => sleep(Math.max(0, T0 + frac * dur - Date.now()));
  const log = (s) => console.log(`# [${(now() / 1000).toFixed(1)} s] ${s}`);

  // faults, in order
  const fig = {};
  await at(0.06);
  log(`pg_ctl stop -m immediate (${completed.length} completed so far)`);
  await db.stopImmediateAsync();
  const downAt = now();
  await sleep(PG_DOWN_MS);
  const completedBeforeRestart = completed.length;
  const latDown = lat.filter(([s]) => s >= downAt && s < now()).map(([, l]) => l);
  const latBefore = lat.filter(([s]) => s >= 1000 && s < downAt).map(([, l]) => l);
  await db.startAsync();
  const pgBackAt = now();
  log(`PostgreSQL started again; spool ${JSON.stringify(spoolState(spool))}`);
  // drain after the outage: rows catch up with what completed before the restart
  const prefix = `f-${RUN}-%`;
  const countRows = async () => Number((await db.query('SELECT count(*) AS n FROM usage_events WHERE feature LIKE $1', [prefix])).rows[0].n);
  const caughtUp = waitUntil(async () => (await countRows()) >= completedBeforeRestart, 60000, 'rows catch up after the restart', 200)
    .then(() => {
      fig.drainAfterOutageMs = now() - pgBackAt;
      log(`rows caught up with the ${completedBeforeRestart} requests completed before the restart, ${fig.drainAfterOutageMs} ms after PostgreSQL returned`);
    })
    .catch((e) => {
      fig.drainAfterOutageMs = `> 60000 (${e.message})`;
    });

  await at(0.5);
  log(`SIGKILL gateway pid ${gwProc.child.pid} (${inflight} in flight)`);
  await gwProc.stop({ signal: 'SIGKILL' });
  const killedAt = now();
  gwProc = await startBridleAt(gw.configPath, port, { readyMs: 20000 });
  log(`gateway restarted on port ${port} in ${now() - killedAt} ms`);

  await at(0.62);
  const pmPid = db.pid();
  log(`SIGSTOP postmaster ${pmPid}`);
  db.pause();
  await sleep(PAUSE_MS);
  db.resume();
  const resumedAt = now();
  log('SIGCONT postmaster');

  const loadEnd = await loadDone;
  await waitUntil(() => inflight === 0, 20000, 'requests in flight to finish', 50);
  log(`load done: ${sent} sent, ${completed.length} completed, ${failed} failed (${non200} non-200, ${bad} incomplete bodies)`);
  await caughtUp;

  // final drain: every completed request has its row and the spool is all acked
  const dbBack = Math.max(pgBackAt, resumedAt);
  const t0 = now();
  const missing = async () =>
    completed.length - Number((await db.query('SELECT count(DISTINCT feature) AS n FROM usage_events WHERE feature = ANY($1)', [completed])).rows[0].n);
  let drained = false;
  let lastMissing = -1;
  while (now() - Math.max(dbBack, t0) < 60000) {
    lastMissing = await missing().catch(() => -1);
    if (lastMissing === 0 && spoolState(spool).unacked === 0) {
      drained = true;
      break;
    }
    await sleep(250);
  }
  const drainMs = now() - loadEnd;
  // rows stop arriving
  const c1 = await countRows();
  await sleep(1500);
  const c2 = await countRows();
  const sp = spoolState(spool);

  const q = (
    await db.query(
      `SELECT count(*)::int AS rows, count(DISTINCT event_id)::int AS ids, count(DISTINCT feature)::int AS features,
              count(DISTINCT event_id) FILTER (WHERE feature = ANY($2))::int AS completed_ids,
              count(*) FILTER (WHERE feature = ANY($2))::int AS completed_rows
         FROM usage_events WHERE feature LIKE $1`,
      [prefix, completed],
    )
  ).rows[0];
  const all = (await db.query('SELECT count(*)::int AS n, count(DISTINCT event_id)::int AS d FROM usage_events')).rows[0];

  fig.requests = sent;
  fig.completed = completed.length;
  fig.failed = failed;
  fig.rows = q.rows;
  fig.rowsOfCompleted = q.completed_ids;
  fig.lost = completed.length - q.completed_ids;
  fig.duplicated = q.rows - q.ids;
  fig.duplicatedFeatures = q.rows - q.features;
  fig.finalDrainMsAfterLoadEnd = drained ? drainMs : `not drained (missing ${lastMissing}, spool ${JSON.stringify(sp)})`;
  fig.rowsStillArriving = c2 - c1;
  fig.spool = sp;
  fig.p99BeforeMs = pct(latBefore, 99);
  fig.p99DbDownMs = pct(latDown, 99);
  fig.p50BeforeMs = pct(latBefore, 50);
  fig.p50DbDownMs = pct(latDown, 50);
  fig.runtimeS = (now() / 1000).toFixed(1);
  console.log(`# T8 figures: ${JSON.stringify(fig)}`);
  agent.destroy();

  assert.ok(completed.length >= N * 0.95, `at least 95% completed: ${completed.length} of ${N}`);
  assert.equal(fig.lost, 0, `lost events: ${fig.lost} of ${completed.length} completed requests have no row`);
  assert.equal(q.completed_rows, q.completed_ids, 'one row per completed request');
  assert.equal(all.n, all.d, `duplicated event ids: ${all.n - all.d}`);
  assert.equal(fig.duplicatedFeatures, 0, 'one row per request marker');
  assert.ok(drained, `spool drained within 60 s of the database's return: ${fig.finalDrainMsAfterLoadEnd}`);
  assert.equal(typeof fig.drainAfterOutageMs, 'number', `rows caught up within 60 s after the outage: ${fig.drainAfterOutageMs}`);
  assert.equal(fig.rowsStillArriving, 0, 'rows stop arriving');
  assert.equal(sp.unacked, 0, `spool fully acked: ${JSON.stringify(sp)}`);
  await gwProc.stop();
});

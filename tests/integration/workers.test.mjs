// --workers N (issue 15, "Operations"; server/workers.h, docs/design.md
// "Workers"): a supervisor holds one SO_REUSEPORT socket per worker, forks
// the workers, restarts one that dies and drains them all on SIGTERM. Each
// worker has its own spool (a restarted one replays its predecessor's) and
// its own instance row; every reply names its worker (x-bridle-worker).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { SLOW, mockConfig, mockStats, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { spoolState, startCluster, waitUntil } from './lib/ledgerlib.mjs';

/** One request on a connection of its own (so the kernel's SO_REUSEPORT
 * hash picks a worker for each): → {status, headers, json} or {error}. */
function request(port, method, p, { headers = {}, body } = {}) {
  return new Promise((resolve) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: p,
        agent: false,
        headers: { ...headers, ...(data ? { 'content-type': 'application/json', 'content-length': data.length } : {}) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => {
          let json;
          try {
            json = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
        res.on('error', (e) => resolve({ error: e.message }));
      },
    );
    req.setTimeout(20000 * SLOW, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ error: e.message }));
    if (data) req.write(data);
    req.end();
  });
}

const chat = (gw, content, headers = {}) =>
  request(gw.port, 'POST', '/v1/chat/completions', {
    headers: { ...gw.auth, ...headers },
    body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content }] },
  });
const health = (gw) => request(gw.port, 'GET', '/v1/bridle/health', { headers: gw.auth });

/** The pid of worker `index`, asking on new connections until it answers. */
async function pidOf(gw, index, notPid = 0) {
  const { value } = await waitUntil(
    async () => {
      const r = await health(gw);
      const p = r.json?.process;
      return p && p.worker === index && p.pid !== notPid ? p.pid : null;
    },
    10000 * SLOW,
    `worker ${index} answering${notPid ? ` with a pid other than ${notPid}` : ''}`,
    5,
  );
  return value;
}

let mock, db;
before(async () => {
  mock = await startMock();
  db = await startCluster();
});
after(async () => {
  await db?.destroy();
});

/** Rows in usage_events per request id (the event id starts with its 24 hex digits). */
async function rowsPerRequest(ids) {
  const { rows } = await db.query(
    'SELECT left(event_id, 24) AS id, count(*)::int AS n FROM usage_events WHERE left(event_id, 24) = ANY($1) GROUP BY 1',
    [ids.map((id) => id.slice(4))],
  );
  return new Map(rows.map((r) => [`req_${r.id}`, r.n]));
}

describe('two workers', () => {
  let gw, spool;
  before(async () => {
    spool = path.join(tmpDir('bridle-workers-'), 'spool');
    gw = await startBridle({
      // a long flush interval keeps a killed worker's last events in its spool
      config: mockConfig(mock.url, { workers: 2, database: { url: db.url, spool_dir: spool, flush_interval_ms: 2000, heartbeat_ms: 250 } }),
    });
  });
  after(async () => {
    await gw?.stop().catch(() => {});
  });

  test('each worker has its own spool and instance row; traffic splits across them', async () => {
    const pids = [await pidOf(gw, 0), await pidOf(gw, 1)];
    assert.notEqual(pids[0], pids[1]);
    assert.ok(existsSync(path.join(spool, 'lock')), 'worker 0 keeps database.spool_dir');
    assert.ok(existsSync(path.join(spool, 'worker-1', 'lock')), 'worker 1 has spool_dir/worker-1');
    const inst = [readFileSync(path.join(spool, 'instance'), 'utf8').trim(), readFileSync(path.join(spool, 'worker-1', 'instance'), 'utf8').trim()];
    assert.notEqual(inst[0], inst[1]);
    for (let i = 0; i < 2; i++) assert.match(inst[i], new RegExp(`:${pids[i]}:`), 'the instance id names the worker pid');
    await waitUntil(
      async () => {
        const { rows } = await db.query('SELECT count(*)::int AS n FROM bridle_instances WHERE instance = ANY($1) AND seen_at > now() - interval \'2 seconds\'', [inst]);
        return rows[0].n === 2;
      },
      5000 * SLOW,
      'both instance rows live in bridle_instances',
    );

    const N = 200;
    const per = [0, 0];
    for (let i = 0; i < N; i += 10) {
      const rs = await Promise.all(Array.from({ length: 10 }, (_, j) => chat(gw, `split ${i + j}`)));
      for (const r of rs) {
        assert.equal(r.status, 200, r.text ?? r.error);
        per[Number(r.headers['x-bridle-worker'])]++;
      }
    }
    assert.equal(per[0] + per[1], N);
    for (let i = 0; i < 2; i++) assert.ok(per[i] >= N * 0.35 && per[i] <= N * 0.65, `worker ${i} served ${per[i]} of ${N}`);
  });

  test('a worker killed with SIGKILL under load is replaced and its spool replayed; only its in-flight requests fail; every success has exactly one ledger row; a second death soon after waits twice as long', async (t) => {
    const oldPid = await pidOf(gw, 1);
    let inFlight = 0;
    let stop = false;
    let inFlightAtKill = -1;
    const ok = [];
    const failed = [];
    const loop = async (n) => {
      for (let i = 0; !stop; i++) {
        inFlight++;
        const r = await chat(gw, `load ${n}.${i} [[mock:latency_ms=100]]`);
        inFlight--;
        if (r.status === 200) ok.push(r);
        else failed.push(r);
      }
    };
    const loops = Array.from({ length: 12 }, (_, n) => loop(n));
    await sleep(1000);
    const served1 = ok.filter((r) => r.headers['x-bridle-worker'] === '1').length;
    inFlightAtKill = inFlight;
    process.kill(oldPid, 'SIGKILL');
    // what it left in its spool, before its successor (100 ms later) replays it
    const left = spoolState(path.join(spool, 'worker-1'));
    await sleep(1500);
    stop = true;
    await Promise.all(loops);

    t.diagnostic(`${ok.length} answered, ${failed.length} failed, ${inFlightAtKill} in flight at the kill`);
    assert.ok(served1 > 0, 'worker 1 served requests before it was killed');
    assert.ok(left.unacked > 0, `the killed worker left events its successor must replay: ${JSON.stringify(left)}`);
    await gw.proc.waitFor((p) => new RegExp(`worker 1 \\(pid ${oldPid}\\) was killed by signal 9 \\(Killed\\); restarting it in \\d+ ms`).test(p.stderr), 5000 * SLOW, 'the restart log line');
    const newPid = await pidOf(gw, 1, oldPid);
    assert.notEqual(newPid, oldPid);
    assert.match(gw.proc.stderr, new RegExp(`worker 1 started \\(pid ${newPid}\\)`));

    // only the requests in flight when it died were lost, and as broken connections, not error answers
    assert.ok(failed.length <= inFlightAtKill, `${failed.length} failed, ${inFlightAtKill} were in flight at the kill`);
    for (const f of failed) assert.ok(f.error, `a failure that is not a broken connection: ${JSON.stringify(f).slice(0, 300)}`);
    const after1 = ok.filter((r) => r.headers['x-bridle-worker'] === '1').length;
    assert.ok(after1 > served1, 'the new worker 1 served requests after the kill');

    // every answered request has exactly one row: the killed worker's spooled events were replayed by its successor
    const ids = ok.map((r) => r.headers['x-request-id']);
    assert.equal(new Set(ids).size, ids.length);
    const { value: rows } = await waitUntil(
      async () => {
        const m = await rowsPerRequest(ids);
        return m.size === ids.length ? m : null;
      },
      15000 * SLOW,
      `a ledger row for each of ${ids.length} answered requests`,
      200,
    );
    for (const id of ids) assert.equal(rows.get(id), 1, `rows for ${id}`);
    await waitUntil(() => spoolState(path.join(spool, 'worker-1')).unacked === 0, 10000 * SLOW, 'the successor shipped its predecessor\'s spool');

    // dying again soon after a restart doubles the wait: a crash loop does not spin
    process.kill(newPid, 'SIGKILL');
    await gw.proc.waitFor((p) => new RegExp(`worker 1 \\(pid ${newPid}\\) was killed by signal 9 \\(Killed\\); restarting it in 200 ms`).test(p.stderr), 5000 * SLOW, 'the second restart, after 200 ms');
    await pidOf(gw, 1, newPid);
  });

  test('state shared in PostgreSQL holds across workers: one Idempotency-Key sent to both runs once', async () => {
    const before = (await mockStats(mock.url)).requests;
    const key = `workers-${Date.now()}`;
    const rs = await Promise.all(Array.from({ length: 16 }, () => chat(gw, 'once across workers [[mock:latency_ms=400]]', { 'idempotency-key': key })));
    const workers = new Set();
    for (const r of rs) {
      assert.equal(r.status, 200, r.text ?? r.error);
      assert.equal(r.json.id, rs[0].json.id, 'every one got the one answer');
      workers.add(r.headers['x-bridle-worker']);
    }
    assert.deepEqual([...workers].sort(), ['0', '1'], 'both workers answered');
    assert.equal((await mockStats(mock.url)).requests - before, 1, 'one upstream call');
    assert.equal(rs.filter((r) => r.headers['idempotent-replayed'] !== 'true').length, 1, 'one ran, the rest were replays');
  });

  test('SIGTERM on the supervisor drains both workers: requests in flight finish, it exits 0', async () => {
    const pids = [await pidOf(gw, 0), await pidOf(gw, 1)];
    const pending = Array.from({ length: 8 }, (_, i) => chat(gw, `drain ${i} [[mock:latency_ms=700]]`));
    await sleep(250);
    gw.proc.child.kill('SIGTERM');
    const rs = await Promise.all(pending);
    const per = [0, 0];
    for (const r of rs) {
      assert.equal(r.status, 200, r.text ?? r.error);
      per[Number(r.headers['x-bridle-worker'])]++;
    }
    await gw.proc.closed;
    assert.deepEqual(gw.proc.exited, { code: 0, signal: null }, gw.proc.logs());
    for (let i = 0; i < 2; i++) assert.match(gw.proc.stderr, new RegExp(`worker ${i} \\(pid ${pids[i]}\\) exited with status 0: drained`));
    assert.match(gw.proc.stderr, /supervisor: every worker has exited\n/);
    const ids = rs.map((r) => r.headers['x-request-id']);
    const rows = await rowsPerRequest(ids);
    for (const id of ids) assert.equal(rows.get(id), 1, `the drain shipped ${id}`);
  });
});

test('a worker that cannot start stops the gateway with a non-zero status', async () => {
  // database.migrate "check" against a database with pending migrations: every worker refuses to start
  await db.query('CREATE DATABASE workers_empty', [], db.adminUrl);
  const fresh = db.urlFor('workers_empty');
  const spool = path.join(tmpDir('bridle-workers-'), 'spool');
  await assert.rejects(
    startBridle({ config: mockConfig(mock.url, { workers: 2, database: { url: fresh, spool_dir: spool, migrate: 'check' } }), readyTimeoutMs: 8000 * SLOW }),
    (e) => /exited \{"code":1,"signal":null\}/.test(e.message) && /before it served: the gateway cannot start/.test(e.message) && /migrations are pending/.test(e.message),
  );
});

// README claims about operating bridle that had no test of their own (issue 10):
//  - "`SIGTERM` finishes the requests in flight and hands every event to the
//    database (or the spool) before exiting": slow requests (plain and
//    streamed) in flight when SIGTERM arrives all complete with 200, a new
//    request is not served, the process exits 0 afterwards, and every
//    request's row is in PostgreSQL when it has exited.
//  - "`build/bridle new-key` prints a new key and its hash, `build/bridle
//    hash-key KEY` the hash of an existing one" (and docs/config.md
//    keys[].sha256): the printed hash is the key's SHA-256, hash-key agrees,
//    and a gateway configured with it authenticates that key and no other.
//  - "While PostgreSQL is away, events wait in the spool and are replayed in
//    order when it returns": every event written while it was down arrives
//    once, inserted in the order the requests were made (ts order), before
//    the events that came after it returned.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { BUILD, SLOW, get, httpRequest, mockConfig, post, rawRequest, sleep, spawnTracked, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { spoolState, startCluster, waitUntil } from './lib/ledgerlib.mjs';

const RUN = randomBytes(4).toString('hex');

let mock;
let db;
before(async () => {
  mock = await startMock();
  db = await startCluster();
});
after(async () => {
  await mock?.stop();
  await db?.destroy();
});

const ledgerConfig = (extra = {}) =>
  mockConfig(mock.url, {
    database: { url: db.url, spool_dir: tmpDir('bridle-claims-spool-'), flush_interval_ms: 100, ...extra },
  });

const rowsFor = async (markers) =>
  (await db.query('SELECT end_user, status, streamed, event_id FROM usage_events WHERE end_user = ANY($1)', [markers])).rows;

/** Runs `bridle ARGS` to completion. → {code, stdout, stderr} */
async function bridleCli(args) {
  const p = spawnTracked(`bridle ${args[0]}`, path.join(BUILD, 'bridle'), args);
  const t = setTimeout(() => p.child.kill('SIGKILL'), 10000 * SLOW);
  await p.closed;
  clearTimeout(t);
  p.check();
  return { code: p.exited.code, stdout: p.stdout, stderr: p.stderr };
}

/** One request on `agent` (keep-alive). → {status, headers, text} */
function viaAgent(agent, port, method, target, headers = {}, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { host: '127.0.0.1', port, method, path: target, agent, timeout: 10000 * SLOW, headers: { ...headers, ...(data ? { 'content-type': 'application/json' } : {}) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(data);
  });
}

describe('SIGTERM with requests in flight', () => {
  test('the slow requests in flight all complete with 200, a new one is not served, exit 0, every request has its row', async () => {
    const gw = await startBridle({ config: ledgerConfig(), keyId: 'claims-term' });
    const LAT = 2000 * SLOW;
    const TRICKLE = 300 * SLOW;
    const markers = [];
    const inflight = [];
    for (let i = 0; i < 6; i++) {
      const stream = i % 2 === 1;
      const user = `term-${RUN}-${i}`;
      markers.push(user);
      const content = stream ? `[[mock:trickle_ms=${TRICKLE}]] streamed ${i}` : `[[mock:latency_ms=${LAT}]] plain ${i}`;
      inflight.push(
        post(`${gw.baseURL}/chat/completions`, { model: 'gpt-4o-mini', stream, user, messages: [{ role: 'user', content }] }, gw.auth, {
          timeoutMs: 30000 * SLOW,
        }).then((r) => ({ ...r, stream, doneAt: Date.now() })),
      );
    }
    await waitUntil(async () => {
      const h = (await get(`${gw.baseURL}/bridle/health`, gw.auth)).json;
      return h.providers.find((p) => p.name === 'openai').in_flight === 6;
    }, 5000 * SLOW, 'six calls in flight');

    // a keep-alive connection opened before the signal, to send on after it
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    assert.equal((await viaAgent(agent, gw.port, 'GET', '/healthz')).status, 200);

    const sigAt = Date.now();
    gw.proc.child.kill('SIGTERM');
    await sleep(200 * SLOW);
    // a new connection after the signal is not served: it is never accepted,
    // and closed when the process exits
    const fresh = rawRequest(
      gw.port,
      httpRequest('POST', '/v1/chat/completions', {
        headers: gw.auth,
        body: { model: 'gpt-4o-mini', user: `term-${RUN}-late`, messages: [{ role: 'user', content: 'late' }] },
      }),
      Infinity,
      { timeoutMs: 30000 * SLOW },
    ).catch((e) => ({ error: e.code || e.message, responses: [] }));
    // a request on a connection that was already open gets 503 draining, retryable elsewhere
    const kept = await viaAgent(agent, gw.port, 'POST', '/v1/chat/completions', gw.auth, {
      model: 'gpt-4o-mini',
      user: `term-${RUN}-kept`,
      messages: [{ role: 'user', content: 'kept' }],
    }).catch((e) => ({ error: e.code || e.message }));
    agent.destroy();
    assert.equal(kept.status, 503, JSON.stringify(kept));
    assert.equal(JSON.parse(kept.text).error.code, 'draining');
    assert.equal(kept.headers['x-should-retry'], 'true');

    const results = await Promise.all(inflight);
    for (const r of results) {
      assert.equal(r.status, 200, r.text);
      if (r.stream) {
        assert.match(r.text, /data: \[DONE\]\n\n$/);
        assert.doesNotMatch(r.text, /"error"/);
      } else {
        assert.match(r.json.choices[0].message.content, /mock reply/);
      }
    }
    const lastDone = Math.max(...results.map((r) => r.doneAt));
    assert.ok(lastDone - sigAt > 500, 'the requests were still in flight when the signal came');

    await gw.proc.closed;
    const exitedAt = Date.now();
    assert.deepEqual(gw.proc.exited, { code: 0, signal: null }, gw.logs());
    assert.ok(exitedAt >= lastDone - 50, 'exited before the requests in flight completed');
    assert.ok(exitedAt - lastDone < 10000 * SLOW, `exited ${exitedAt - lastDone} ms after the last request`);

    const f = await fresh;
    console.log(`# after SIGTERM: a new connection got ${JSON.stringify({ responses: f.responses.length, closed: f.closed, timedOut: f.timedOut, error: f.error })}`);
    assert.deepEqual(f.responses.map((r) => r.status), [], `a connection made after SIGTERM was served: ${JSON.stringify(f.responses)}`);
    assert.ok(f.error || f.closed, 'the new connection was closed when the process exited');

    const rows = await rowsFor([...markers, `term-${RUN}-late`, `term-${RUN}-kept`]);
    assert.deepEqual(rows.map((r) => r.end_user).sort(), [...markers].sort(), 'one row per request, right after exit');
    for (const r of rows) assert.equal(r.status, 200, JSON.stringify(r));
    await gw.stop(); // sanitizer check of the exited process
  });
});

describe('new-key and hash-key', () => {
  test('new-key prints bk-… and its SHA-256; hash-key agrees; a gateway with that hash lets the key in and no other', async () => {
    const a = await bridleCli(['new-key']);
    assert.equal(a.code, 0, a.stderr);
    const key = /^key: (\S+)$/m.exec(a.stdout)?.[1];
    const sha = /^sha256: (\S+)$/m.exec(a.stdout)?.[1];
    assert.match(key || '', /^bk-[0-9a-f]{48}$/, a.stdout);
    assert.match(sha || '', /^[0-9a-f]{64}$/, a.stdout);
    assert.equal(sha, createHash('sha256').update(key).digest('hex'), 'the SHA-256 of the key');
    const b = await bridleCli(['new-key']);
    assert.notEqual(/^key: (\S+)$/m.exec(b.stdout)?.[1], key, 'a new key each time');

    const h = await bridleCli(['hash-key', key]);
    assert.equal(h.code, 0, h.stderr);
    assert.equal(h.stdout.trim(), sha);

    const gw = await startBridle({ config: mockConfig(mock.url, { keys: [{ id: 'from-new-key', sha256: h.stdout.trim() }] }) });
    try {
      const req = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };
      const ok = await post(`${gw.baseURL}/chat/completions`, req, { authorization: `Bearer ${key}` });
      assert.equal(ok.status, 200, ok.text);
      const other = /^key: (\S+)$/m.exec(b.stdout)[1];
      for (const bad of [other, `${key}x`, key.slice(0, -1), sha]) {
        const r = await post(`${gw.baseURL}/chat/completions`, req, { authorization: `Bearer ${bad}` });
        assert.equal(r.status, 401, `${bad}: ${r.text}`);
      }
      const models = await get(`${gw.baseURL}/models`, { authorization: `Bearer ${key}` });
      assert.equal(models.status, 200, models.text);
    } finally {
      await gw.stop();
    }
  });
});

describe('the spool while PostgreSQL is away', () => {
  test('events written while it is down arrive once each, in request order, before the ones sent after it returned', async () => {
    const spool = tmpDir('bridle-claims-spool-');
    const gw = await startBridle({ config: ledgerConfig({ spool_dir: spool }), keyId: 'claims-spool' });
    const health = async () => (await get(`${gw.baseURL}/bridle/health`, gw.auth)).json.ledger;
    const send = async (user, i) => {
      const r = await post(
        `${gw.baseURL}/chat/completions`,
        { model: i % 3 ? 'gpt-4o-mini' : 'claude-haiku-4-5', max_tokens: 64, stream: i % 2 === 1, user, messages: [{ role: 'user', content: `ordered ${i}` }] },
        gw.auth,
      );
      assert.equal(r.status, 200, r.text);
    };
    const DOWN = 40;
    const AFTER = 10;
    const name = (i) => `ord-${RUN}-${String(i).padStart(3, '0')}`;
    try {
      await db.stopImmediateAsync();
      for (let i = 0; i < DOWN; i++) await send(name(i), i); // one at a time: the spool's order is the request order
      await sleep(300);
      const down = await health();
      assert.equal(down.database_up, false, JSON.stringify(down));
      assert.equal(down.queued, DOWN, JSON.stringify(down));
      assert.equal(spoolState(spool).unacked, DOWN);

      await db.startAsync();
      for (let i = DOWN; i < DOWN + AFTER; i++) await send(name(i), i);
      const all = Array.from({ length: DOWN + AFTER }, (_, i) => name(i));
      await waitUntil(async () => (await rowsFor(all)).length >= all.length, 30000 * SLOW, 'every row in PostgreSQL', 100);
      await waitUntil(() => spoolState(spool).unacked === 0, 10000 * SLOW, 'spool acked');
      await sleep(300); // nothing more arrives

      // insertion order: the heap order of a partition nobody deletes from
      const { rows } = await db.query(
        `SELECT end_user, ts, event_id FROM usage_events WHERE end_user LIKE $1 ORDER BY tableoid::regclass::text, ctid`,
        [`ord-${RUN}-%`],
      );
      assert.equal(rows.length, all.length, `rows: ${rows.length} for ${all.length} requests (lost or duplicated)`);
      assert.equal(new Set(rows.map((r) => r.event_id)).size, all.length, 'duplicated event ids');
      assert.deepEqual(rows.map((r) => r.end_user), all, 'inserted in the order the requests were made');
      for (let i = 1; i < rows.length; i++)
        assert.ok(rows[i].ts >= rows[i - 1].ts, `ts order broken at ${rows[i].end_user}: ${rows[i - 1].ts.toISOString()} then ${rows[i].ts.toISOString()}`);
      const up = await health();
      assert.deepEqual([up.database_up, up.queued], [true, 0], JSON.stringify(up));
    } finally {
      if (!db.running()) await db.startAsync();
      await gw.stop();
    }
  });
});

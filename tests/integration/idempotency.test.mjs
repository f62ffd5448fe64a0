// Idempotency-Key (issue 6; reliability.md §3.4; IETF
// draft-ietf-httpapi-idempotency-key-header): same key and body → one
// upstream call, later requests replayed byte for byte with
// Idempotent-Replayed: true; concurrent duplicates wait for the first (or get
// 409 by configuration); a different body → 422; failed outcomes (5xx) are not
// stored. Keys live in PostgreSQL, so two gateways sharing it make exactly one
// upstream call per key. The mock's own counters are the evidence.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { SLOW, mockConfig, mockFault, mockReset, mockStats, post, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startPostgres } from './lib/pg.mjs';
import { billed, costPusd, expected } from './lib/mockmath.mjs';

let mock;
let pg;
let a; // two gateways on one database, one client key
let b;

const RUN = randomBytes(4).toString('hex');
const newIdemKey = (s) => `"${RUN}-${s}"`;

function configFor(url, { database = {}, ...extra } = {}) {
  return mockConfig(mock.url, {
    database: { url, spool_dir: path.join(tmpDir('bridle-idem-'), 'spool'), ...database },
    ...extra,
  });
}

before(async () => {
  mock = await startMock();
  pg = await startPostgres();
  a = await startBridle({ config: configFor(pg.url), keyId: 'idem' });
  // b knows a's key (same id, so the same scope) and one of its own
  b = await startBridle({ config: { ...configFor(pg.url), keys: a.config.keys }, keyId: 'idem-b' });
});

after(async () => {
  await a?.stop();
  await b?.stop();
  await mock?.stop();
  await pg?.stop?.();
});

const body = (text, extra = {}) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: text }], ...extra });
const send = (g, key, payload, headers = {}) =>
  post(`${g.baseURL}/chat/completions`, payload, { ...a.auth, ...(key ? { 'idempotency-key': key } : {}), ...headers });
const generations = async () => (await mockStats(mock.url)).by_model?.['gpt-4o-mini'] || 0;

describe('Idempotency-Key', () => {
  test('same key and body: one upstream call; the retry is the first answer, byte for byte', async () => {
    const key = newIdemKey('basic');
    const n0 = await generations();
    const payload = body('hello once', { user: RUN });
    const first = await send(a, key, payload);
    assert.equal(first.status, 200, first.text);
    assert.equal(first.headers['idempotent-replayed'], undefined);
    const again = await send(a, key, payload);
    const other = await send(b, key, payload); // the other gateway, same database
    for (const r of [again, other]) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['idempotent-replayed'], 'true');
      assert.equal(r.text, first.text, 'the stored answer, byte for byte');
      assert.notEqual(r.headers['x-request-id'], first.headers['x-request-id'], 'a request of its own');
    }
    assert.equal((await generations()) - n0, 1, 'one upstream call for three requests');
    // the ledger has all three requests; the replays cost nothing and say why
    const ids = [first, again, other].map((r) => r.headers['x-request-id']);
    let rows = [];
    for (let i = 0; i < 60 && rows.length < 3; i++) {
      await sleep(100);
      rows = (await pg.query(pg.url, "SELECT cache_hit, cost_pusd::int AS cost, route_reason FROM usage_events WHERE key_id = 'idem' AND end_user = $1 ORDER BY cache_hit", [RUN])).rows;
    }
    assert.equal(rows.length, 3, JSON.stringify(rows) + ids);
    assert.equal(rows[0].cache_hit, false);
    // gpt-4o-mini: P = ceil(10 bytes / 4) = 3 input tokens at 0.15 $/M, 8 output at 0.60 $/M
    assert.equal(rows[0].cost, Number(costPusd('gpt-4o-mini', billed('openai', expected(payload.messages, 'gpt-4o-mini')))));
    for (const r of rows.slice(1)) assert.deepEqual(r, { cache_hit: true, cost: 0, route_reason: 'idempotent replay: no upstream call' });
  });

  test('same key, different body: 422, every time, and nothing reaches the provider', async () => {
    const key = newIdemKey('mismatch');
    assert.equal((await send(a, key, body('original'))).status, 200);
    const n0 = await generations();
    for (const g of [a, b, a]) {
      const r = await send(g, key, body('something else'));
      assert.equal(r.status, 422, r.text);
      assert.equal(r.json.error.code, 'idempotency_key_reused');
      assert.match(r.json.error.message, /different request body/);
      assert.equal(r.headers['x-should-retry'], 'false');
    }
    assert.equal((await generations()) - n0, 0);
  });

  test('a failed upstream outcome (503) is not stored: the next request with the key runs', async () => {
    const key = newIdemKey('failed');
    // 3 faults: bridle's own attempts (max_attempts 3, the default) all fail
    await mockFault(mock.url, { model: 'gpt-4o-mini', count: 3, directives: 'status=503' });
    const n0 = await generations();
    const failed = await send(a, key, body('flaky'));
    assert.equal(failed.status, 503, failed.text);
    assert.equal(failed.headers['x-bridle-attempts'], '3', JSON.stringify(failed.headers));
    assert.equal(failed.headers['x-should-retry'], 'true', JSON.stringify(failed.headers));
    const retried = await send(b, key, body('flaky'));
    assert.equal(retried.status, 200, retried.text);
    assert.equal(retried.headers['idempotent-replayed'], undefined, 'it ran, it was not replayed');
    assert.equal((await generations()) - n0, 3 + 1);
    const replay = await send(a, key, body('flaky'));
    assert.equal(replay.headers['idempotent-replayed'], 'true');
    assert.equal(replay.text, retried.text);
  });

  test('a streamed answer is replayed as the same stream', async () => {
    const key = newIdemKey('stream');
    const payload = body('stream me', { stream: true, stream_options: { include_usage: true } });
    const n0 = await generations();
    const first = await send(a, key, payload);
    assert.equal(first.status, 200);
    assert.match(first.headers['content-type'], /text\/event-stream/);
    assert.match(first.text, /data: \[DONE\]/);
    await sleep(200); // the stream is stored just after its last byte
    const again = await send(b, key, payload);
    assert.equal(again.status, 200);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.match(again.headers['content-type'], /text\/event-stream/);
    assert.equal(again.text, first.text);
    assert.equal((await generations()) - n0, 1);
  });

  test('malformed keys: 400 with what to send', async () => {
    for (const bad of ['"unterminated', '""', 'has space', `"${'x'.repeat(256)}"`, '"tab\there"']) {
      const r = await send(a, bad, body('bad key'));
      assert.equal(r.status, 400, `${bad}: ${r.text}`);
      assert.equal(r.json.error.code, 'invalid_idempotency_key');
      assert.equal(r.headers['x-should-retry'], 'false');
    }
    const bare = await send(a, `${RUN}-bare-token`, body('bare'));
    assert.equal(bare.status, 200, 'a bare token is accepted too');
  });

  test('200 keys × 32 concurrent identical requests across two gateways: exactly 200 upstream calls', async () => {
    const KEYS = 200;
    const PER_KEY = 32;
    const n0 = await generations();
    const statuses = new Map();
    let replayed = 0;
    let next = 0;
    const latency = '[[mock:latency_ms=150]]'; // the first call is still running when its duplicates arrive
    async function oneKey(k) {
      const key = newIdemKey(`fan-${k}`);
      const payload = body(`fan out ${k} ${latency}`);
      const rs = await Promise.all(Array.from({ length: PER_KEY }, (_, i) => send(i % 2 ? b : a, key, payload)));
      for (const r of rs) statuses.set(r.status, (statuses.get(r.status) || 0) + 1);
      const texts = new Set(rs.filter((r) => r.status === 200).map((r) => r.text));
      assert.equal(texts.size, 1, `key ${k}: every answer is the same answer`);
      replayed += rs.filter((r) => r.headers['idempotent-replayed'] === 'true').length;
    }
    const t0 = Date.now();
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        while (next < KEYS) await oneKey(next++);
      }),
    );
    const calls = (await generations()) - n0;
    console.log(
      `# idempotency: ${KEYS} keys × ${PER_KEY} requests in ${Date.now() - t0} ms: ${calls} upstream calls, ` +
        `statuses ${JSON.stringify(Object.fromEntries(statuses))}, ${replayed} replayed`,
    );
    assert.equal(calls, KEYS, 'exactly one upstream call per key');
    assert.deepEqual(Object.fromEntries(statuses), { 200: KEYS * PER_KEY });
    assert.equal(replayed, KEYS * (PER_KEY - 1));
  });

  test('an expired key runs anew; a claim whose gateway died is taken over after its lease', async () => {
    // Time is moved in the database rather than waited for: the row's
    // expires_at / locked_until are set in the past, as 24 h (or a crashed
    // gateway's lease) would leave them.
    const expired = newIdemKey('expired');
    const payload = body('expires');
    const first = await send(a, expired, payload);
    await pg.query(pg.url, "UPDATE bridle_idempotency SET expires_at = now() - interval '1 second' WHERE idem_key = $1", [expired.slice(1, -1)]);
    const n0 = await generations();
    const anew = await send(b, expired, payload);
    assert.equal(anew.status, 200);
    assert.equal(anew.headers['idempotent-replayed'], undefined, 'past its retention the key runs again');
    assert.notEqual(anew.text, first.text);
    assert.equal((await generations()) - n0, 1);

    const orphan = newIdemKey('orphan');
    const fp = (await import('node:crypto')).createHash('sha256').update(`POST /v1/chat/completions\n${JSON.stringify(payload)}`).digest('hex');
    const insert = (lease) =>
      pg.query(
        pg.url,
        `INSERT INTO bridle_idempotency (key_id, idem_key, fingerprint, owner, locked_until, expires_at)
         VALUES ('idem', $1, $2, 'a-gateway-that-died', now() + $3::interval, now() + interval '1 day')`,
        [orphan.slice(1, -1), fp, lease],
      );
    await insert('-1 second');
    const taken = await send(a, orphan, payload);
    assert.equal(taken.status, 200, taken.text);
    assert.equal(taken.headers['idempotent-replayed'], undefined, 'the lapsed claim was taken over and run');
    assert.equal((await generations()) - n0, 2);
    const owner = (await pg.query(pg.url, 'SELECT state, owner FROM bridle_idempotency WHERE idem_key = $1', [orphan.slice(1, -1)])).rows[0];
    assert.equal(owner.state, 'done');
    assert.notEqual(owner.owner, 'a-gateway-that-died');
  });

  test('a claim held elsewhere within its lease: the request waits until its own deadline, then 409', async () => {
    const held = newIdemKey('held');
    const payload = body('held elsewhere');
    const fp = (await import('node:crypto')).createHash('sha256').update(`POST /v1/chat/completions\n${JSON.stringify(payload)}`).digest('hex');
    await pg.query(
      pg.url,
      `INSERT INTO bridle_idempotency (key_id, idem_key, fingerprint, owner, locked_until, expires_at)
       VALUES ('idem', $1, $2, 'another-gateway', now() + interval '1 hour', now() + interval '1 day')`,
      [held.slice(1, -1), fp],
    );
    const g = await startBridle({ config: { ...configFor(pg.url, { limits: { request_timeout_ms: 700 } }), keys: a.config.keys }, keyId: 'idem-w' });
    try {
      const n0 = await generations();
      const t0 = Date.now();
      const r = await send(g, held, payload);
      const ms = Date.now() - t0;
      assert.equal(r.status, 409, r.text);
      assert.equal(r.json.error.code, 'idempotency_key_in_use');
      assert.equal(r.headers['x-should-retry'], 'true');
      assert.ok(ms >= 650 && ms < 3000 * SLOW, `waited ${ms} ms for a 700 ms deadline`);
      assert.equal((await generations()) - n0, 0);
      // the other gateway stores its answer: a waiting request gets it
      const waiting = send(g, held, payload);
      await sleep(150);
      await pg.query(pg.url, "UPDATE bridle_idempotency SET state = 'done', status = 200, content_type = 'application/json', body = '{\"stored\":true}' WHERE idem_key = $1", [held.slice(1, -1)]);
      const got = await waiting;
      assert.equal(got.status, 200, got.text);
      assert.equal(got.text, '{"stored":true}');
      assert.equal(got.headers['idempotent-replayed'], 'true');
    } finally {
      await g.stop();
    }
  });

  test('with the key missing, requests are independent (no key, no dedup)', async () => {
    const n0 = await generations();
    await send(a, null, body('no key'));
    await send(a, null, body('no key'));
    assert.equal((await generations()) - n0, 2);
  });
});

describe('Idempotency-Key: configuration and faults', () => {
  test('concurrent: "conflict" answers a duplicate in flight with 409 and Retry-After', async () => {
    const g = await startBridle({ config: { ...configFor(pg.url, { idempotency: { concurrent: 'conflict' } }), keys: a.config.keys }, keyId: 'idem-c' });
    try {
      const key = newIdemKey('conflict');
      const payload = body('slow one [[mock:latency_ms=400]]');
      const first = send(g, key, payload);
      await sleep(100);
      const dup = await send(g, key, payload);
      assert.equal(dup.status, 409, dup.text);
      assert.equal(dup.json.error.code, 'idempotency_key_in_use');
      assert.equal(dup.headers['x-should-retry'], 'true');
      assert.equal(dup.headers['retry-after'], '1');
      assert.equal((await first).status, 200);
      const after = await send(g, key, payload);
      assert.equal(after.headers['idempotent-replayed'], 'true');
    } finally {
      await g.stop();
    }
  });

  test('the database unreachable: 503 idempotency_unavailable (retryable), requests without a key still served', async () => {
    const dead = `postgresql://postgres@127.0.0.1:1/none`;
    const g = await startBridle({ config: { ...configFor(dead, { database: { migrate: 'off' } }), keys: a.config.keys }, keyId: 'idem-d' });
    try {
      const r = await send(g, newIdemKey('down'), body('db down'));
      assert.equal(r.status, 503, r.text);
      assert.equal(r.json.error.code, 'idempotency_unavailable');
      assert.equal(r.headers['x-should-retry'], 'true');
      const plain = await send(g, null, body('db down, no key'));
      assert.equal(plain.status, 200, plain.text);
    } finally {
      await g.stop();
    }
  });
});

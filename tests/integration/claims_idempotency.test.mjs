// README claims about Idempotency-Key that had no test of their own (issue 10):
//  - "keys are scoped by client key (one client cannot read or block
//    another's)": the same key and body from two client keys are two
//    requests, each replayed only to its own client; a key one client holds
//    in flight does not make another client wait or get 409/422.
//  - "only final outcomes are stored (2xx, and 400/404/413/422, which a retry
//    cannot change); a 429, 5xx ... frees the key": a 4xx answer is replayed
//    byte for byte with Idempotent-Replayed: true; after a 429 or 5xx the
//    same key runs again.
//  - "a streamed answer is stored as the stream that was sent (up to 8 MB)
//    and replayed in one piece": one over 8 MB is not stored (the retry runs
//    anew), one under is replayed as sent.
// Evidence: the responses, the bridle_idempotency rows in PostgreSQL, and the
// mock's call counts.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { SLOW, mockConfig, mockFault, mockReset, mockStats, newKey, post, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startPostgres } from './lib/pg.mjs';

const RUN = randomBytes(4).toString('hex');
const idemKey = (s) => `"${RUN}-${s}"`;
const bare = (k) => k.slice(1, -1);

let mock;
let pg;
let gw; // one gateway, two client keys: gw.key (id claims-a) and other (id claims-b)
let other;

before(async () => {
  mock = await startMock();
  pg = await startPostgres();
  other = { ...newKey(), id: 'claims-b' };
  gw = await startBridle({
    config: mockConfig(mock.url, {
      database: { url: pg.url, spool_dir: path.join(tmpDir('bridle-claims-idem-'), 'spool') },
      // each request's first upstream outcome is what the client gets (a 429
      // or 5xx is not retried into a 200), and no breaker or pause interferes
      resilience: { retries: false, breaker: false },
      keys: [{ id: other.id, sha256: other.sha256, team: 'b' }],
    }),
    keyId: 'claims-a',
  });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await pg?.stop?.();
});

const A = () => gw.auth;
const B = () => ({ authorization: `Bearer ${other.key}` });
const body = (text, extra = {}) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: text }], ...extra });
const send = (auth, key, payload, opts = {}) =>
  post(`${gw.baseURL}/chat/completions`, payload, { ...auth, 'idempotency-key': key }, { timeoutMs: 60000 * SLOW, ...opts });
const calls = async () => (await mockStats(mock.url)).requests ?? 0;
const rows = async (key) =>
  (await pg.query(pg.url, 'SELECT key_id, state, status, length(body) AS len FROM bridle_idempotency WHERE idem_key = $1 ORDER BY key_id', [bare(key)])).rows;

async function until(fn, ms, what) {
  const t0 = Date.now();
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(25);
  }
}

describe('scoped per client key', () => {
  test('the same Idempotency-Key and body from two client keys: two upstream calls, each client replayed its own answer', async () => {
    const key = idemKey('scoped');
    const payload = body('scoped per client');
    const n0 = await calls();
    const a1 = await send(A(), key, payload);
    const b1 = await send(B(), key, payload);
    for (const r of [a1, b1]) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['idempotent-replayed'], undefined, 'ran, not replayed');
    }
    assert.notEqual(a1.json.id, b1.json.id, "the other client's answer was not served");
    assert.equal((await calls()) - n0, 2, 'two upstream calls');
    const a2 = await send(A(), key, payload);
    const b2 = await send(B(), key, payload);
    assert.equal(a2.headers['idempotent-replayed'], 'true');
    assert.equal(b2.headers['idempotent-replayed'], 'true');
    assert.equal(a2.text, a1.text, 'A gets A\'s answer');
    assert.equal(b2.text, b1.text, 'B gets B\'s answer');
    assert.equal((await calls()) - n0, 2);
    const rs = await rows(key);
    assert.deepEqual(rs.map((r) => [r.key_id, r.state, r.status]), [
      ['claims-a', 'done', 200],
      ['claims-b', 'done', 200],
    ]);
  });

  test("one client's key in flight does not block another's: no wait, no 409, no 422 for a different body", async () => {
    const key = idemKey('noblock');
    const HOLD = 2000 * SLOW;
    const held = send(A(), key, body(`slow [[mock:latency_ms=${HOLD}]]`));
    await until(async () => (await rows(key)).length === 1, 5000 * SLOW, "A's claim");
    const t0 = Date.now();
    const b = await send(B(), key, body('another body, same key'));
    const ms = Date.now() - t0;
    assert.equal(b.status, 200, b.text);
    assert.equal(b.headers['idempotent-replayed'], undefined);
    assert.ok(ms < HOLD / 2, `B waited ${ms} ms for A's request`);
    const a = await held;
    assert.equal(a.status, 200, a.text);
    assert.notEqual(a.text, b.text);
  });
});

describe('which outcomes are stored', () => {
  const cases = [
    { what: 'upstream 400', status: 400, fault: 'status=400' },
    { what: 'upstream 422', status: 422, fault: 'status=422' },
    { what: 'upstream 413', status: 413, fault: 'status=413' },
  ];
  for (const c of cases) {
    test(`${c.what}: stored and replayed byte for byte with Idempotent-Replayed: true`, async () => {
      await mockReset(mock.url);
      const key = idemKey(`final-${c.status}`);
      const payload = { ...body(`final ${c.status}`), ...(c.model ? { model: c.model } : {}) };
      if (c.fault) await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: c.fault });
      const first = await send(A(), key, payload);
      assert.equal(first.status, c.status, first.text);
      assert.equal(first.headers['idempotent-replayed'], undefined);
      const n1 = await calls();
      assert.deepEqual((await rows(key)).map((r) => [r.state, r.status]), [['done', c.status]], 'stored as the final outcome');
      for (let i = 0; i < 2; i++) {
        const again = await send(A(), key, payload);
        assert.equal(again.status, c.status, again.text);
        assert.equal(again.headers['idempotent-replayed'], 'true');
        assert.equal(again.text, first.text, 'byte for byte');
        assert.equal(again.headers['content-type'], first.headers['content-type']);
      }
      assert.equal(await calls(), n1, 'a replay does not reach the provider');
    });
  }

  // The plan comes before admission (docs/design.md, Decisions): a model the
  // gateway does not serve is refused before the key is claimed, so nothing
  // is stored; the same request gets the same 404 again.
  test('unknown model 404: refused before the key is claimed, the same 404 again, nothing stored', async () => {
    await mockReset(mock.url);
    const key = idemKey('final-404');
    const payload = { ...body('final 404'), model: 'no-such-model' };
    const first = await send(A(), key, payload);
    assert.equal(first.status, 404, first.text);
    assert.equal(first.json.error.code, 'model_not_found');
    const again = await send(A(), key, payload);
    assert.equal(again.status, 404, again.text);
    assert.equal(again.headers['idempotent-replayed'], undefined);
    assert.deepEqual(again.json.error, first.json.error);
    assert.deepEqual(await rows(key), [], 'no claim was made');
    assert.equal(await calls(), 0);
  });

  for (const status of [429, 500, 503]) {
    test(`a ${status} frees the key: the retry with it runs anew, then its 200 is replayed`, async () => {
      await mockReset(mock.url);
      const key = idemKey(`free-${status}`);
      const payload = body(`transient ${status}`);
      await mockFault(mock.url, { model: 'gpt-4o-mini', count: 1, directives: `status=${status}` });
      const first = await send(A(), key, payload);
      assert.ok(first.status === status || (status === 500 && first.status === 502), `${first.status} ${first.text}`);
      await until(async () => (await rows(key)).length === 0, 3000 * SLOW, 'the key freed');
      const retry = await send(A(), key, payload);
      assert.equal(retry.status, 200, retry.text);
      assert.equal(retry.headers['idempotent-replayed'], undefined, 'ran anew, not a replay of the failure');
      assert.equal(await calls(), 2);
      const third = await send(A(), key, payload);
      assert.equal(third.headers['idempotent-replayed'], 'true');
      assert.equal(third.text, retry.text);
      assert.equal(await calls(), 2);
    });
  }
});

describe('a streamed answer is stored up to 8 MB', () => {
  const CAP = 8 << 20;
  const WORD = 'w'.repeat(1000); // one 1000-byte word per SSE chunk
  const stream = (n, tag) =>
    body(`[[mock:content=${WORD},repeat=${n}]] ${tag}`, { stream: true, stream_options: { include_usage: true } });

  test('over 8 MB: not stored, a retry with the key runs anew', async () => {
    await mockReset(mock.url);
    const key = idemKey('big');
    const payload = stream(8000, 'over');
    const first = await send(A(), key, payload);
    assert.equal(first.status, 200);
    assert.match(first.text, /data: \[DONE\]\n\n$/);
    const bytes = Buffer.byteLength(first.text);
    assert.ok(bytes > CAP, `the stream is ${bytes} bytes, not over 8 MB`);
    await until(async () => (await rows(key)).length === 0, 5000 * SLOW, 'the key freed');
    const retry = await send(A(), key, payload);
    assert.equal(retry.status, 200);
    assert.equal(retry.headers['idempotent-replayed'], undefined, 'a stream over 8 MB was replayed');
    assert.equal(await calls(), 2, 'the retry reached the provider');
  });

  test('under 8 MB: stored as sent, replayed in one piece, byte for byte', async () => {
    await mockReset(mock.url);
    const key = idemKey('under');
    const payload = stream(5000, 'under');
    const first = await send(A(), key, payload);
    assert.equal(first.status, 200);
    assert.match(first.text, /data: \[DONE\]\n\n$/);
    const bytes = Buffer.byteLength(first.text);
    assert.ok(bytes > 4 << 20 && bytes < CAP, `the stream is ${bytes} bytes`);
    const stored = await until(async () => {
      const r = await rows(key);
      return r.length === 1 && r[0].state === 'done' ? r[0] : null;
    }, 5000 * SLOW, 'the stream stored');
    assert.equal(stored.status, 200);
    const again = await send(A(), key, payload);
    assert.equal(again.status, 200);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.match(again.headers['content-type'], /text\/event-stream/);
    assert.equal(Buffer.byteLength(again.text), bytes);
    assert.ok(again.text === first.text, 'the replay differs from the stream that was sent');
    assert.equal(await calls(), 1);
  });
});

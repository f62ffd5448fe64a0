// Coalescing (issue 6, resilience.coalesce): identical deterministic requests
// (temperature 0, n 1, not streamed) of one client key in flight at the same
// time make one upstream call; the others get a copy of its answer with
// x-bridle-coalesced: true. The mock's counters are the evidence.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { randomBytes } from 'node:crypto';
import path from 'node:path';

import { get, mockConfig, mockStats, newKey, post, sleep, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startPostgres } from './lib/pg.mjs';
import { billed, costPusd, expected, formatUsd } from './lib/mockmath.mjs';

let mock;
let pg; // the ledger of `on`
let on; // coalescing on
let off; // the default: off
const other = newKey();

before(async () => {
  mock = await startMock();
  pg = await startPostgres();
  on = await startBridle({
    config: mockConfig(mock.url, {
      resilience: { coalesce: true },
      keys: [{ id: 'other', sha256: other.sha256 }],
      database: { url: pg.url, spool_dir: path.join(tmpDir('bridle-coalesce-'), 'spool'), flush_interval_ms: 100 },
    }),
  });
  off = await startBridle({ config: mockConfig(mock.url) });
});

after(async () => {
  await on?.stop();
  await off?.stop();
  await mock?.stop();
  await pg?.stop?.();
});

const calls = async () => (await mockStats(mock.url)).by_model?.['gpt-4o-mini'] || 0;
const req = (text, extra = {}) => ({
  model: 'gpt-4o-mini',
  temperature: 0,
  messages: [{ role: 'user', content: `${text} [[mock:latency_ms=200]]` }],
  ...extra,
});
/** bridle's own count of calls in flight to the openai provider (GET /v1/bridle/health). */
async function openaiInFlight(g) {
  const r = await get(`${g.baseURL}/bridle/health`, g.auth);
  assert.equal(r.status, 200, r.text);
  return r.json.providers.find((p) => p.name === 'openai').in_flight;
}
const many = (g, n, body, auth = g.auth) => Promise.all(Array.from({ length: n }, () => post(`${g.baseURL}/chat/completions`, body, auth)));

test('10 identical temperature-0 requests in flight: one upstream call, ten equal answers', async () => {
  const n0 = await calls();
  const user = `coalesce-${randomBytes(4).toString('hex')}`; // the same for all ten: the bodies must be identical
  const pending = many(on, 10, req('same question', { user }));
  // while the mock sits on the call (200 ms), bridle itself has one call in flight, not ten
  await sleep(100);
  assert.equal(await openaiInFlight(on), 1, 'bridle made one upstream call for ten requests');
  const rs = await pending;
  assert.equal((await calls()) - n0, 1);
  assert.equal(await openaiInFlight(on), 0);
  for (const r of rs) assert.equal(r.status, 200, r.text);
  assert.equal(new Set(rs.map((r) => r.text)).size, 1);
  assert.equal(rs.filter((r) => r.headers['x-bridle-coalesced'] === 'true').length, 9);
  assert.equal(new Set(rs.map((r) => r.headers['x-request-id'])).size, 10, 'each a request of its own');
  // the leader made the one attempt and is billed for it; the followers made none
  const [leader, ...followers] = [...rs].sort((a, b) => (a.headers['x-bridle-coalesced'] ? 1 : 0) - (b.headers['x-bridle-coalesced'] ? 1 : 0));
  assert.equal(leader.headers['x-bridle-coalesced'], undefined);
  assert.equal(leader.headers['x-bridle-attempts'], '1');
  assert.equal(leader.headers['x-bridle-model'], 'gpt-4o-mini');
  const u = billed('openai', expected(req('same question').messages, 'gpt-4o-mini'));
  assert.equal(leader.headers['x-bridle-cost-usd'], formatUsd(costPusd('gpt-4o-mini', u)));
  for (const f of followers) assert.equal(f.headers['x-bridle-attempts'], '0', JSON.stringify(f.headers));
  // the ledger: ten rows, the leader's billed, the nine copies at no cost (docs/config.md)
  let rows = [];
  for (let i = 0; i < 60 && rows.length < 10; i++) {
    await sleep(100);
    rows = (
      await pg.query(
        pg.url,
        'SELECT cost_pusd::text AS cost, cache_hit, attempts, status, route_reason FROM usage_events WHERE end_user = $1 ORDER BY cache_hit, cost_pusd DESC',
        [user],
      )
    ).rows;
  }
  assert.equal(rows.length, 10, JSON.stringify(rows));
  assert.deepEqual(rows[0], { cost: String(costPusd('gpt-4o-mini', u)), cache_hit: false, attempts: 1, status: 200, route_reason: 'the model requested' });
  for (const r of rows.slice(1))
    assert.deepEqual(r, { cost: '0', cache_hit: true, attempts: 0, status: 200, route_reason: 'coalesced with an identical request in flight: no upstream call' });
});

test('not coalesced: temperature above 0, n > 1, streams, another client key, or the option off', async () => {
  const n0 = await calls();
  await many(on, 3, req('warm', { temperature: 0.7 }));
  await many(on, 3, req('no temperature', { temperature: undefined }));
  await many(on, 2, req('two choices', { n: 2 }));
  await many(on, 2, req('streamed', { stream: true }));
  await Promise.all([post(`${on.baseURL}/chat/completions`, req('two clients'), on.auth), post(`${on.baseURL}/chat/completions`, req('two clients'), { authorization: `Bearer ${other.key}` })]);
  await many(off, 3, req('option off'));
  assert.equal((await calls()) - n0, 3 + 3 + 2 + 2 + 2 + 3);
});

test('requests one after the other are not coalesced (no cache): only those in flight together', async () => {
  const n0 = await calls();
  await post(`${on.baseURL}/chat/completions`, req('sequential'), on.auth);
  await post(`${on.baseURL}/chat/completions`, req('sequential'), on.auth);
  assert.equal((await calls()) - n0, 2);
});

test('the leader\'s client leaves: its followers run on their own and are answered', async () => {
  const n0 = await calls();
  const body = JSON.stringify(req('leader leaves'));
  const leader = http.request(`${on.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { ...on.auth, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
  });
  leader.on('error', () => {});
  leader.end(body);
  await sleep(50);
  const followers = many(on, 3, req('leader leaves'));
  await sleep(50);
  leader.destroy();
  const rs = await followers;
  for (const r of rs) {
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-coalesced'], undefined, 'they ran themselves');
    assert.equal(r.headers['x-bridle-attempts'], '1', JSON.stringify(r.headers));
  }
  assert.equal((await calls()) - n0, 4, 'the abandoned call and one per follower');
  // the abandoned call is not counted as in flight any more
  for (let i = 0; i < 50 && (await openaiInFlight(on)) !== 0; i++) await sleep(20);
  assert.equal(await openaiInFlight(on), 0, "bridle's count of calls in flight to openai after the leader left");
});

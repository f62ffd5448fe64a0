// Connection-level behaviour: the read deadline against slow clients, upstream
// cancellation when the client leaves, limits.max_connections, keep-alive and
// pipelining (byte-for-byte the same answers whatever the TCP segmentation).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Conn } from './lib/conn.mjs';
import { SLOW, get, httpRequest, mockConfig, mockStats, post, rawRequest, sleep, startBridle, startMock } from './lib/harness.mjs';
import { answerFor } from './lib/mockmath.mjs';

const READ_TIMEOUT_MS = 1500;
const MAX_CONN = 5;
const CONN_READ_TIMEOUT_MS = 2500;

let mock;
let gw; // default limits
let gwSlow; // limits.read_timeout_ms = READ_TIMEOUT_MS
let gwConn; // limits.max_connections = MAX_CONN
let gwConnReadyAt;

before(async () => {
  mock = await startMock();
  [gw, gwSlow, gwConn] = await Promise.all([
    startBridle({ config: mockConfig(mock.url) }),
    startBridle({ config: mockConfig(mock.url, { limits: { read_timeout_ms: READ_TIMEOUT_MS } }) }),
    startBridle({ config: mockConfig(mock.url, { limits: { max_connections: MAX_CONN, read_timeout_ms: CONN_READ_TIMEOUT_MS } }) }),
  ]);
  gwConnReadyAt = Date.now();
});

after(async () => {
  await gw?.stop();
  await gwSlow?.stop();
  await gwConn?.stop();
  await mock?.stop();
});

const user = (content, model = 'gpt-4o-mini', extra = {}) => ({ model, messages: [{ role: 'user', content }], ...extra });

async function waitUntil(pred, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}
const inFlight = async () => (await mockStats(mock.url)).in_flight;
/** bridle's own count of calls in flight to a provider (GET /v1/bridle/health). */
async function bridleInFlight(g, provider) {
  const r = await get(`${g.baseURL}/bridle/health`, g.auth);
  assert.equal(r.status, 200, r.text);
  const p = r.json.providers.find((x) => x.name === provider);
  assert.ok(p, `no provider ${provider} in ${r.text}`);
  return p.in_flight;
}

describe('read deadline', () => {
  test(`a client trickling its request (1 byte / 300 ms) is cut off at limits.read_timeout_ms; others are served meanwhile`, async () => {
    const c = new Conn(gwSlow.port);
    await c.ready;
    const req = httpRequest('POST', '/v1/chat/completions', { headers: gwSlow.auth, body: user('slow') });
    const t0 = Date.now();
    let i = 0;
    const trickle = setInterval(() => {
      if (c.closed || i >= req.length) return;
      c.write(req[i++]).catch(() => {});
    }, 300);
    try {
      const served = [];
      for (let k = 0; k < 4; k++) {
        await sleep(250);
        const t = Date.now();
        const r = await post(`${gwSlow.baseURL}/chat/completions`, user(`meanwhile ${k}`), gwSlow.auth, { timeoutMs: 5000 });
        served.push({ status: r.status, ms: Date.now() - t, at: Date.now() - t0 });
      }
      for (const s of served) {
        assert.equal(s.status, 200, JSON.stringify(served));
        assert.ok(s.ms < 1000 * SLOW, `a normal request took ${s.ms} ms while a slow client trickled: ${JSON.stringify(served)}`);
      }
      assert.ok(await c.waitClosed(READ_TIMEOUT_MS + 3000 * SLOW), 'the slow connection was never closed');
      const elapsed = c.closedAt - t0;
      assert.ok(elapsed >= READ_TIMEOUT_MS - 100, `closed after ${elapsed} ms, before the deadline`);
      assert.ok(elapsed < READ_TIMEOUT_MS + 1500 * SLOW, `closed after ${elapsed} ms`);
      assert.ok(i < req.length, 'the request was never complete');
      // nothing but (at most) a 408 was sent back
      for (const r of c.responses) {
        assert.equal(r.status, 408, JSON.stringify(r));
        assert.equal(r.headers['x-should-retry'], 'false', JSON.stringify(r));
      }
    } finally {
      clearInterval(trickle);
      c.close();
    }
    const r = await post(`${gwSlow.baseURL}/chat/completions`, user('after'), gwSlow.auth, { timeoutMs: 5000 });
    assert.equal(r.status, 200);
  });

  test('a client that sends the headers and stalls on the body is cut off too', async () => {
    const c = new Conn(gwSlow.port);
    await c.ready;
    const req = httpRequest('POST', '/v1/chat/completions', { headers: gwSlow.auth, body: user('stall') });
    const t0 = Date.now();
    await c.write(req.slice(0, req.indexOf('\r\n\r\n') + 10));
    assert.ok(await c.waitClosed(READ_TIMEOUT_MS + 3000 * SLOW), 'never closed');
    const elapsed = c.closedAt - t0;
    assert.ok(elapsed >= READ_TIMEOUT_MS - 100 && elapsed < READ_TIMEOUT_MS + 1500 * SLOW, `closed after ${elapsed} ms`);
    c.close();
  });
});

describe('client disconnects', () => {
  test('a client leaving while the provider hangs cancels the upstream call (mock in_flight → 0)', async () => {
    await waitUntil(async () => (await inFlight()) === 0, 3000, 'a quiet mock');
    const ac = new AbortController();
    const p = fetch(`${gw.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { ...gw.auth, 'content-type': 'application/json' },
      body: JSON.stringify(user('[[mock:hang=1]]')),
      signal: ac.signal,
    }).catch((e) => e);
    await waitUntil(async () => (await inFlight()) === 1, 3000 * SLOW, 'the hung call upstream');
    assert.equal(await bridleInFlight(gw, 'openai'), 1, 'bridle counts the call in flight');
    ac.abort();
    await p;
    await waitUntil(async () => (await inFlight()) === 0, 3000 * SLOW, 'the upstream call to be cancelled');
    await waitUntil(async () => (await bridleInFlight(gw, 'openai')) === 0, 1000 * SLOW, "bridle's count of calls in flight to return to 0");
  });

  test('a client leaving a stream mid-way cancels the upstream stream', async () => {
    const ac = new AbortController();
    const r = await fetch(`${gw.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { ...gw.auth, 'content-type': 'application/json' },
      body: JSON.stringify(user('[[mock:trickle_ms=400]]', 'claude-haiku-4-5', { stream: true })),
      signal: ac.signal,
    });
    assert.equal(r.status, 200);
    const reader = r.body.getReader();
    const first = await reader.read();
    assert.ok(!first.done);
    assert.equal(await inFlight(), 1);
    assert.equal(await bridleInFlight(gw, 'anthropic'), 1, 'bridle counts the stream in flight');
    const t0 = Date.now();
    ac.abort();
    await reader.read().catch(() => {});
    // the whole stream would take > 3 s; cancellation must be quicker
    await waitUntil(async () => (await inFlight()) === 0, 1500 * SLOW, 'the upstream stream to be cancelled');
    assert.ok(Date.now() - t0 < 1500 * SLOW);
    await waitUntil(async () => (await bridleInFlight(gw, 'anthropic')) === 0, 1000 * SLOW, "bridle's count of calls in flight to return to 0");
  });

  test("a client leaving does not use up a provider's max_concurrency: with 1, the next request is served", async (t) => {
    const g = await startBridle({ config: mockConfig(mock.url, { providers: { openai: { max_concurrency: 1 } } }) });
    t.after(() => g.stop());
    await waitUntil(async () => (await inFlight()) === 0, 3000 * SLOW, 'a quiet mock');
    const ac = new AbortController();
    const p = fetch(`${g.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { ...g.auth, 'content-type': 'application/json' },
      body: JSON.stringify(user('[[mock:hang=1]]')),
      signal: ac.signal,
    }).catch((e) => e);
    await waitUntil(async () => (await inFlight()) === 1, 3000 * SLOW, 'the hung call upstream');
    ac.abort();
    await p;
    await waitUntil(async () => (await inFlight()) === 0, 3000 * SLOW, 'the upstream call to be cancelled');
    await sleep(50);
    const r = await post(`${g.baseURL}/chat/completions`, user('next'), g.auth, { timeoutMs: 5000 * SLOW });
    assert.equal(r.status, 200, `${r.text} (bridle's in_flight for openai: ${await bridleInFlight(g, 'openai')})`);
  });

  test('the gateway is fine afterwards: nothing in flight, no breaker touched by the clients that left', async () => {
    const r = await post(`${gw.baseURL}/chat/completions`, user('still there?'), gw.auth, { timeoutMs: 5000 * SLOW });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-bridle-attempts'], '1');
    const h = (await get(`${gw.baseURL}/bridle/health`, gw.auth)).json;
    assert.deepEqual(h.providers.map((p) => [p.name, p.in_flight]), [['openai', 0], ['anthropic', 0], ['gemini', 0], ['ollama', 0]]);
    // a client that leaves says nothing about the provider's health
    for (const t of h.targets) assert.deepEqual([t.model, t.breaker.state, t.breaker.consecutive_failures], [t.model, 'closed', 0]);
  });
});

describe('limits.max_connections', () => {
  test(`a connection beyond ${MAX_CONN} is not served until one closes; the gateway recovers`, async () => {
    // startBridle's readiness probe leaves a pooled keep-alive connection; the
    // read deadline closes it. Wait for that so we own every slot.
    const wait = gwConnReadyAt + CONN_READ_TIMEOUT_MS + 300 - Date.now();
    if (wait > 0) await sleep(wait);
    const health = httpRequest('GET', '/healthz');
    const conns = [];
    try {
      for (let i = 0; i < MAX_CONN; i++) {
        const c = new Conn(gwConn.port);
        await c.ready;
        const r = await c.request(health, 2000);
        assert.equal(r.status, 200);
        conns.push(c);
      }
      const tOpen = Date.now();
      const extra = new Conn(gwConn.port);
      await extra.ready; // the kernel completes the handshake; the gateway does not accept
      await extra.write(health);
      assert.equal(await extra.waitResponses(1, 400), false, `connection #${MAX_CONN + 1} was served`);
      conns[0].close();
      assert.ok(await extra.waitResponses(1, 1000 * SLOW), `connection #${MAX_CONN + 1} not served after one closed`);
      assert.equal(extra.responses[0].status, 200);
      assert.ok(Date.now() - tOpen < CONN_READ_TIMEOUT_MS, 'served only because the others timed out');
      conns.push(extra);
    } finally {
      for (const c of conns) c.close();
    }
    // recovers: more than MAX_CONN connections in a row, each served
    for (let i = 0; i < MAX_CONN * 3; i++) {
      const r = await rawRequest(gwConn.port, health, Infinity, { timeoutMs: 3000 });
      assert.equal(r.responses[0]?.status, 200, `connection ${i} after recovery: ${r.raw}`);
    }
    const r = await post(`${gwConn.baseURL}/chat/completions`, user('x'), gwConn.auth, { timeoutMs: 5000 });
    assert.equal(r.status, 200);
  });
});

describe('keep-alive and pipelining', () => {
  test('20 sequential requests on one connection', async () => {
    const c = new Conn(gw.port);
    await c.ready;
    const models = ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2'];
    const ids = new Set();
    try {
      for (let i = 0; i < 20; i++) {
        const model = models[i % models.length];
        const stream = i % 5 === 4;
        const r = await c.request(
          httpRequest('POST', '/v1/chat/completions', { headers: gw.auth, body: user(`request ${i}`, model, stream ? { stream: true } : {}) }),
        );
        assert.equal(r.status, 200, `request ${i}: ${r.body}`);
        assert.notEqual((r.headers.connection || '').toLowerCase(), 'close', `request ${i}`);
        assert.equal(r.headers['x-bridle-model'], model, `request ${i}`);
        assert.equal(r.headers['x-bridle-attempts'], '1', `request ${i}`);
        assert.match(r.headers['x-request-id'] || '', /^req_[0-9a-f]{24}$/, `request ${i}`);
        assert.ok(!ids.has(r.headers['x-request-id']), `request ${i}: x-request-id reused`);
        ids.add(r.headers['x-request-id']);
        if (!stream) assert.equal(JSON.parse(r.body).choices[0].message.content, answerFor(model), `request ${i}`);
        else assert.match(r.body, /data: \[DONE\]\n\n$/, `request ${i}`);
        assert.equal(c.closed, false, `closed after request ${i}`);
      }
      // Connection: close is honoured
      const r = await c.request(httpRequest('GET', '/healthz', { headers: { connection: 'close' } }));
      assert.equal(r.status, 200);
      assert.ok(await c.waitClosed(2000), 'not closed after Connection: close');
    } finally {
      c.close();
    }
  });

  const REQUESTS = () => [
    httpRequest('POST', '/v1/chat/completions', { headers: gw.auth, body: user('pipelined one') }),
    httpRequest('GET', '/healthz'),
    httpRequest('POST', '/v1/chat/completions', {
      headers: gw.auth,
      body: user('pipelined stream', 'claude-haiku-4-5', { stream: true, stream_options: { include_usage: true } }),
    }),
    httpRequest('POST', '/v1/chat/completions', { headers: gw.auth, body: { model: 'gpt-4o-mini', messages: [] } }),
    httpRequest('GET', '/v1/models', { headers: gw.auth }),
    httpRequest('POST', '/v1/chat/completions', { headers: gw.auth, body: user('pipelined ollama', 'llama3.2') }),
    httpRequest('GET', '/nope', { headers: gw.auth }),
  ];

  /** A response with what legitimately differs between two runs masked. */
  function normalize(r) {
    const cl = r.headers['content-length'];
    if (cl !== undefined) assert.equal(Number(cl), Buffer.byteLength(r.body), 'content-length matches the body');
    const headers = Object.entries(r.headers).filter(([k]) => !['date', 'x-request-id', 'content-length'].includes(k));
    const body = r.body
      .replace(/"id":"[^"]*"/g, '"id":"ID"')
      .replace(/"created":\d+/g, '"created":0');
    return { status: r.status, reason: r.reason, httpVersion: r.httpVersion, headers, body };
  }

  test('7 pipelined requests, whole and in 1-, 3-, 7-byte segments: the same bytes as each sent alone', async () => {
    const reqs = REQUESTS();
    const alone = [];
    for (const q of reqs) {
      const r = await rawRequest(gw.port, q);
      assert.equal(r.responses.length, 1, r.raw.slice(0, 300));
      alone.push(normalize(r.responses[0]));
    }
    assert.deepEqual(
      alone.map((r) => r.status),
      [200, 200, 200, 400, 200, 200, 404],
    );
    const all = reqs.join('');
    for (const seg of [Infinity, 1, 3, 7]) {
      const r = await rawRequest(gw.port, all, seg, { delayMs: seg === 1 ? 0 : 1, timeoutMs: 20000 });
      assert.equal(r.responses.length, reqs.length, `segments of ${seg}: ${r.responses.length} responses\n${r.raw.slice(-500)}`);
      for (let i = 0; i < reqs.length; i++)
        assert.deepEqual(normalize(r.responses[i]), alone[i], `segments of ${seg}, response ${i}`);
      assert.equal(r.closed, false, `segments of ${seg}: the connection was closed`);
    }
  });
});

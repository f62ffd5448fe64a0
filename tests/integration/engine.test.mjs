// The outbound engine under concurrency: a fresh gateway must open upstream
// connections in parallel on plain HTTP. With CURLOPT_PIPEWAIT on an http://
// provider, curl holds every new transfer until the first connection's
// response headers show it is HTTP/1.1 (no multiplexing): for an LLM that is
// the time to first token, so a burst of N fresh calls took 2x the latency.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';

import { SANITIZED, get, mockConfig, mockStats, post, sleep, startBridle, startMock } from './lib/harness.mjs';

// The sanitized build is slower per request; a longer mock latency keeps the
// gap between "parallel" (1x) and "serialized behind the first" (2x) wide.
const LATENCY_MS = SANITIZED ? 1500 : 1000;
const N = 64;
const TOLERANCE = 1.7;

let mock, gw;
before(async () => {
  mock = await startMock();
  gw = await startBridle({ config: mockConfig(mock.url) });
});

test(`${N} concurrent calls on a fresh gateway each take ~1x the upstream latency, not 2x (no PIPEWAIT over plain http)`, async () => {
  const before = (await mockStats(mock.url)).requests ?? 0;
  const one = async (i) => {
    const t0 = performance.now();
    const r = await post(
      `${gw.baseURL}/chat/completions`,
      // distinct prompts: nothing may be coalesced
      { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `burst ${i} [[mock:latency_ms=${LATENCY_MS}]]` }] },
      gw.auth,
    );
    return { ms: performance.now() - t0, status: r.status, text: r.text };
  };
  const results = await Promise.all(Array.from({ length: N }, (_, i) => one(i)));
  for (const r of results) assert.equal(r.status, 200, r.text);
  const ms = results.map((r) => r.ms).sort((a, b) => a - b);
  const max = ms[ms.length - 1];
  const p50 = ms[Math.floor(ms.length / 2)];
  const summary = `min ${ms[0].toFixed(0)} ms, p50 ${p50.toFixed(0)} ms, max ${max.toFixed(0)} ms (mock latency ${LATENCY_MS} ms)`;
  console.log(`# engine burst: ${summary}`);
  assert.ok(max < TOLERANCE * LATENCY_MS, `slowest call ${max.toFixed(0)} ms >= ${TOLERANCE}x the mock latency: ${summary}`);
  const stats = await mockStats(mock.url);
  if (typeof stats.requests === 'number') assert.equal(stats.requests - before, N, JSON.stringify(stats));

  // bridle's own view afterwards: no provider call left in flight
  let health;
  for (let i = 0; i < 50; i++) {
    health = await get(`${gw.baseURL}/bridle/health`, gw.auth);
    assert.equal(health.status, 200, health.text);
    if (health.json.providers.every((p) => p.in_flight === 0)) break;
    await sleep(20);
  }
  for (const p of health.json.providers) assert.equal(p.in_flight, 0, `provider ${p.name} still has calls in flight: ${health.text}`);
});

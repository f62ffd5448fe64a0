// Structured logs (issue 15): with log_format "json" every line bridle writes
// is a JSON object, and with access_log one line per request says who asked,
// what it was routed to, how it ended, what it used and cost, and how long it
// took. Never a secret: neither the client's key nor a provider's.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { mockConfig, post, sleep, startBridle, startMock } from './lib/harness.mjs';
import { billed, costPusd, expected, formatUsd } from './lib/mockmath.mjs';

let mock;
let gw;

before(async () => {
  mock = await startMock();
  gw = await startBridle({ config: mockConfig(mock.url, { log_format: 'json', access_log: true }) });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
});

/** bridle's stderr lines so far, each parsed (a line that is not JSON fails). */
function lines() {
  return gw.proc.stderr
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        assert.fail(`not a JSON line: ${l}`);
      }
    });
}
async function accessLine(requestId) {
  for (let i = 0; i < 50; i++) {
    const found = lines().find((l) => l.msg === 'access' && l.request_id === requestId);
    if (found) return found;
    await sleep(20);
  }
  assert.fail(`no access line for ${requestId}`);
}

test('every line is JSON with ts, level and msg; the start-up lines too', async () => {
  const all = lines();
  assert.ok(all.length >= 2, JSON.stringify(all));
  for (const l of all) {
    assert.match(l.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(['debug', 'info', 'warn', 'error'].includes(l.level), JSON.stringify(l));
    assert.equal(typeof l.msg, 'string');
  }
  assert.ok(all.some((l) => /listening on/.test(l.msg)));
});

test('one access line per request: route, model, provider, status, tokens, exact cost, timings', async () => {
  const messages = [{ role: 'user', content: 'Log this request' }];
  const plain = await post(`${gw.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages, metadata: { team: 'x' } }, gw.auth);
  assert.equal(plain.status, 200);
  const a = await accessLine(plain.headers['x-request-id']);
  const u = billed('openai', expected(messages, 'gpt-4o-mini'));
  assert.deepEqual(
    { key: a.key, team: a.team, requested_model: a.requested_model, route: a.route, model: a.model, provider: a.provider, status: a.status, attempts: a.attempts, streamed: a.streamed, cache: a.cache },
    { key: 'test', team: 'test', requested_model: 'gpt-4o-mini', route: null, model: 'gpt-4o-mini', provider: 'openai', status: 200, attempts: 1, streamed: false, cache: null },
  );
  assert.equal(a.input_tokens, u.input_uncached);
  assert.equal(a.output_tokens, u.output);
  assert.equal(a.cost_usd.toFixed(12).replace(/0+$/, '').replace(/\.$/, '.0'), formatUsd(costPusd('gpt-4o-mini', u)));
  assert.ok(a.latency_ms > 0 && a.ttft_ms === null);

  const routed = await post(`${gw.baseURL}/chat/completions`, { model: 'auto', messages, stream: true }, gw.auth);
  const b = await accessLine(routed.headers['x-request-id']);
  assert.equal(b.route, 'auto');
  assert.equal(b.requested_model, 'auto');
  assert.equal(b.model, routed.headers['x-bridle-model']);
  assert.equal(b.streamed, true);
  assert.ok(b.ttft_ms > 0 && b.ttft_ms <= b.latency_ms);

  const missing = await post(`${gw.baseURL}/chat/completions`, { model: 'no-such-model', messages }, gw.auth);
  const c = await accessLine(missing.headers['x-request-id']);
  assert.deepEqual([c.status, c.requested_model, c.model, c.attempts, c.cost_usd], [404, null, null, 0, 0]);
});

test('no secret in any line: not the client key, not a provider key', async () => {
  await post(`${gw.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }, gw.auth);
  await post(`${gw.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }, { authorization: 'Bearer bk-wrong-key-000000000000' });
  await sleep(50);
  const text = gw.proc.stderr;
  for (const secret of [gw.key, 'bk-wrong-key-000000000000', 'sk-mock-openai', 'sk-mock-anthropic', 'mock-gemini'])
    assert.ok(!text.includes(secret), `the logs hold ${secret}`);
});

// GET /metrics (issue 15, server/metrics.h): Prometheus text format with the
// OpenTelemetry GenAI names and bridle's own counters. The figures are
// checked against what the mock answered (exact tokens and cost), the
// exposition passes `promtool check metrics`, a real Prometheus scrapes it
// and reads the counters back as they move, and only metrics.allow may read it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { freePort, get, mockConfig, post, ROOT, sleep, spawnTracked, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { billed, costPusd, expected } from './lib/mockmath.mjs';

let mock;
let gw;
let closed; // metrics.allow without loopback

before(async () => {
  mock = await startMock();
  gw = await startBridle({ config: mockConfig(mock.url) });
  closed = await startBridle({ config: mockConfig(mock.url, { metrics: { allow: ['10.0.0.0/8'] } }) });
});

after(async () => {
  await gw?.stop();
  await closed?.stop();
  await mock?.stop();
});

/** Parses the exposition into [{name, labels, value}]. */
function parse(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels = {};
    for (const [, k, v] of (m[2] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: m[3] });
  }
  return out;
}
const scrape = async (g) => {
  const r = await get(`${g.url}/metrics`);
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  return { text: r.text, samples: parse(r.text) };
};
const pick = (samples, name, labels = {}) =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
const value = (samples, name, labels) => {
  const found = pick(samples, name, labels);
  assert.equal(found.length, 1, `${name} ${JSON.stringify(labels)}: ${found.length} samples`);
  return found[0].value;
};

test('requests, tokens, cost and durations, to the token and the pico-dollar', async () => {
  const messages = [{ role: 'user', content: 'Count me in the metrics' }];
  const ask = (model, stream = false) => post(`${gw.baseURL}/chat/completions`, { model, messages, stream }, gw.auth);
  for (let i = 0; i < 3; i++) assert.equal((await ask('gpt-4o-mini')).status, 200);
  assert.equal((await ask('claude-haiku-4-5', true)).status, 200);
  assert.equal((await post(`${gw.baseURL}/chat/completions`, { model: 'nope', messages }, gw.auth)).status, 404);
  const { samples } = await scrape(gw);
  const mini = { gen_ai_request_model: 'gpt-4o-mini', gen_ai_response_model: 'gpt-4o-mini', gen_ai_provider_name: 'openai' };
  const haiku = { gen_ai_request_model: 'claude-haiku-4-5', gen_ai_response_model: 'claude-haiku-4-5', gen_ai_provider_name: 'anthropic' };
  assert.equal(value(samples, 'bridle_requests_total', { ...mini, http_response_status_code: '200' }), '3');
  assert.equal(value(samples, 'bridle_requests_total', { ...haiku, http_response_status_code: '200' }), '1');
  // an unknown model is counted with empty model labels (never the client's string)
  assert.equal(value(samples, 'bridle_requests_total', { gen_ai_request_model: '', http_response_status_code: '404' }), '1');
  assert.ok(!samples.some((s) => Object.values(s.labels).includes('nope')));
  // tokens: the mock's counts (tests/mock/README.md), input and output
  const e = expected(messages, 'gpt-4o-mini');
  assert.equal(value(samples, 'gen_ai_client_token_usage_sum', { ...mini, gen_ai_token_type: 'input' }), (3 * e.P).toFixed(6));
  assert.equal(value(samples, 'gen_ai_client_token_usage_sum', { ...mini, gen_ai_token_type: 'output' }), (3 * e.C).toFixed(6));
  assert.equal(value(samples, 'gen_ai_client_token_usage_count', { ...mini, gen_ai_token_type: 'input' }), '3');
  assert.equal(value(samples, 'gen_ai_client_token_usage_bucket', { ...mini, gen_ai_token_type: 'output', le: '+Inf' }), '3');
  // cost: exact, as the ledger would have it
  const cost = 3n * costPusd('gpt-4o-mini', billed('openai', e));
  const usd = value(samples, 'bridle_cost_usd_total', { gen_ai_provider_name: 'openai', gen_ai_response_model: 'gpt-4o-mini' });
  assert.equal(BigInt(usd.replace('.', '')), cost, `${usd} USD`);
  // durations: every request; time to first token: the stream only
  assert.equal(value(samples, 'gen_ai_server_request_duration_seconds_count', mini), '3');
  assert.equal(value(samples, 'gen_ai_server_time_to_first_token_seconds_count', haiku), '1');
  assert.equal(pick(samples, 'gen_ai_server_time_to_first_token_seconds_count', mini).length, 0);
  // bridle's own
  assert.equal(value(samples, 'bridle_upstream_attempts_total'), '4');
  assert.equal(value(samples, 'bridle_requests_in_flight'), '0');
  // every HTTP response by class: the three 200s, the 404 and a 401 that never became a run
  assert.equal((await post(`${gw.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages }, { authorization: 'Bearer bk-nobody' })).status, 401);
  const after401 = (await scrape(gw)).samples;
  assert.ok(Number(value(after401, 'bridle_http_responses_total', { code: '4xx' })) >= 2);
  assert.ok(Number(value(after401, 'bridle_http_responses_total', { code: '2xx' })) >= 4);
  assert.equal(value(samples, 'bridle_provider_calls_in_flight', { gen_ai_provider_name: 'openai' }), '0');
  assert.equal(value(samples, 'bridle_breaker_state', { gen_ai_response_model: 'gpt-4o-mini', state: 'closed' }), '1');
  assert.equal(value(samples, 'bridle_breaker_state', { gen_ai_response_model: 'gpt-4o-mini', state: 'open' }), '0');
});

test('promtool check metrics passes on the exposition', async () => {
  const { text } = await scrape(gw);
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.error, undefined, 'promtool is installed (Debian package prometheus; make test installs it)');
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.equal(r.stdout + r.stderr, '', 'no lint findings');
});

test('metrics.allow: a client outside it gets 403 in the OpenAI error shape', async () => {
  const r = await get(`${closed.url}/metrics`);
  assert.equal(r.status, 403);
  assert.equal(r.json.error.code, 'metrics_not_allowed');
  assert.match(r.json.error.message, /metrics\.allow/);
});

test('a real Prometheus scrapes bridle and reads the counters back as they move', async () => {
  const dir = tmpDir('bridle-prometheus-');
  const port = await freePort();
  const target = new URL(gw.url).host;
  writeFileSync(
    path.join(dir, 'prometheus.yml'),
    `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: bridle\n    static_configs:\n      - targets: ['${target}']\n`,
  );
  const prom = spawnTracked('prometheus', 'prometheus', [
    `--config.file=${path.join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
  ]);
  try {
    const query = async (q) => {
      const r = await get(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`);
      return r.status === 200 && r.json.status === 'success' ? r.json.data.result : null;
    };
    const q = 'sum(bridle_requests_total{gen_ai_request_model="gemini-2.5-flash"})';
    const until = async (pred, what) => {
      for (let i = 0; i < 200; i++) {
        const res = await query(q).catch(() => null);
        const v = res && res.length ? Number(res[0].value[1]) : res ? 0 : null;
        if (v !== null && pred(v)) return v;
        await sleep(100);
      }
      throw new Error(`Prometheus never saw ${what}\n${prom.logs()}`);
    };
    await until((v) => v === 0, 'the target with no Gemini request yet');
    const messages = [{ role: 'user', content: 'Scraped' }];
    for (let i = 0; i < 5; i++) await post(`${gw.baseURL}/chat/completions`, { model: 'gemini-2.5-flash', messages }, gw.auth);
    assert.equal(await until((v) => v === 5, '5 Gemini requests'), 5);
    const up = await query('up{job="bridle"}');
    assert.equal(up[0].value[1], '1');
    // every panel of the dashboard's "Live" row runs, and the traffic shows in them
    const dash = JSON.parse(readFileSync(path.join(ROOT, 'deploy/grafana/dashboards/bridle-costs.json'), 'utf8'));
    const live = dash.panels.filter((p) => p.datasource?.type === 'prometheus');
    assert.ok(live.length >= 5, `${live.length} Prometheus panels`);
    const prov = readFileSync(path.join(ROOT, 'deploy/grafana/provisioning/datasources/prometheus.yaml'), 'utf8');
    for (const p of live) {
      assert.equal(p.datasource.uid, /uid:\s*([\w-]+)/.exec(prov)[1], p.title);
      for (const t of p.targets) {
        let res = null;
        for (let i = 0; i < 50 && !(res && res.length); i++) {
          res = await query(t.expr);
          assert.ok(res, `${p.title}: ${t.expr} is not a valid query`);
          if (!res.length) await sleep(200);
        }
        if (!/time_to_first_token/.test(t.expr)) assert.ok(res.length > 0, `${p.title}: no series after traffic`);
      }
    }
  } finally {
    await prom.stop();
  }
});

test("docker-compose's Prometheus config passes promtool check config", () => {
  const r = spawnSync('promtool', ['check', 'config', path.join(ROOT, 'deploy/prometheus/prometheus.yml')], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
});

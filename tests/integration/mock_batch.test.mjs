// bridle-mock's provider batch APIs (OpenAI Files + Batch, Anthropic Message
// Batches, Gemini's batch mode), driven by the real openai and @anthropic-ai/sdk clients against
// the mock alone: the shapes the SDKs parse, every line's answer equal to the
// live endpoint's answer to the same body, per-line failures, cancel,
// expiry, refusal, the processing-time knobs and the counters bridle's
// provider batch path asserts on.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI, { toFile } from 'openai';

import { mockLast, mockStats, post, get, sleep, startMock, SLOW } from './lib/harness.mjs';

let mock, oai, ant;

before(async () => {
  mock = await startMock({ args: ['--batch-ms', '300'] });
  oai = new OpenAI({ apiKey: 'sk-mock', baseURL: `${mock.url}/v1`, maxRetries: 0 });
  ant = new Anthropic({ apiKey: 'ak-mock', baseURL: mock.url, maxRetries: 0 });
});
after(async () => {
  await mock?.stop();
});

const knob = (body) => post(`${mock.url}/_mock/batch`, body);

function chatLine(id, content, model = 'gpt-4o-mini', extra = {}) {
  return { custom_id: id, method: 'POST', url: '/v1/chat/completions', body: { model, messages: [{ role: 'user', content }], ...extra } };
}

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } } } } },
  { type: 'function', function: { name: 'get_time' } },
];
// Each answer names its own request (mockN): the same everywhere else.
const sameBut = (x) => JSON.parse(JSON.stringify(x).replace(/mock\d+/g, 'mockN'));

async function submit(lines, metadata) {
  const text = lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n';
  const file = await oai.files.create({ file: await toFile(Buffer.from(text), 'batch.jsonl'), purpose: 'batch' });
  return oai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata });
}

async function waitOpenAI(id, done = ['completed', 'failed', 'cancelled', 'expired'], ms = 20000 * SLOW) {
  const end = Date.now() + ms;
  for (;;) {
    const b = await oai.batches.retrieve(id);
    if (done.includes(b.status)) return b;
    if (Date.now() > end) throw new Error(`batch ${id} still ${b.status}`);
    await sleep(50);
  }
}

async function fileLines(id) {
  if (!id) return [];
  const text = await (await oai.files.content(id)).text();
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

async function waitAnthropic(id, ms = 20000 * SLOW) {
  const end = Date.now() + ms;
  for (;;) {
    const b = await ant.messages.batches.retrieve(id);
    if (b.processing_status === 'ended') return b;
    if (Date.now() > end) throw new Error(`batch ${id} still ${b.processing_status}`);
    await sleep(50);
  }
}

async function results(id) {
  const out = [];
  for await (const r of await ant.messages.batches.results(id)) out.push(r);
  return out;
}

test('OpenAI: upload, create, poll, output and error files; every line answered as live', async () => {
  const lines = [
    chatLine('q-0', 'Say hello to the test suite'),
    chatLine('q-1', 'Another question, a little longer than the first one'),
    chatLine('q-2', 'fail this one [[mock:status=500]]'),
    chatLine('q-3', 'with a cap', 'gpt-4o-mini', { max_completion_tokens: 3 }),
    chatLine('q-4', 'x [[mock:content=Forty%20two,reasoning_tokens=5,cached_tokens=2]]'),
    chatLine('q-5', 'Weather? [[mock:tool_calls=2]]', 'gpt-4o-mini', { tools: TOOLS }),
  ];
  const before_ = await mockStats(mock.url);
  const created = await submit(lines, { run: 'a' });
  assert.equal(created.status, 'validating');
  assert.equal(created.object, 'batch');
  assert.deepEqual(created.metadata, { run: 'a' });
  const b = await waitOpenAI(created.id);
  assert.equal(b.status, 'completed');
  assert.deepEqual(b.request_counts, { total: 6, completed: 5, failed: 1 });
  assert.equal(b.model, 'gpt-4o-mini');
  for (const k of ['in_progress_at', 'finalizing_at', 'completed_at']) assert.ok(b[k] >= b.created_at, k);

  const out = await fileLines(b.output_file_id);
  const err = await fileLines(b.error_file_id);
  assert.deepEqual(out.map((l) => l.custom_id).sort(), ['q-0', 'q-1', 'q-3', 'q-4', 'q-5']);
  assert.deepEqual(err.map((l) => l.custom_id), ['q-2']);
  // not in the input's order: bridle must join on custom_id
  assert.notDeepEqual(out.map((l) => l.custom_id), ['q-0', 'q-1', 'q-3', 'q-4', 'q-5']);
  const meta = await oai.files.retrieve(b.output_file_id);
  assert.equal(meta.purpose, 'batch_output');

  // each line's body is what the live endpoint answers to the same body
  let sum = { input: 0, output: 0, cached: 0, reasoning: 0 };
  for (const l of lines) {
    const live = await post(`${mock.url}/v1/chat/completions`, l.body);
    const got = [...out, ...err].find((x) => x.custom_id === l.custom_id);
    assert.match(got.id, /^batch_req_/);
    assert.equal(got.error, null);
    assert.equal(got.response.status_code, live.status, l.custom_id);
    assert.match(got.response.request_id, /^req_/);
    if (live.status !== 200) {
      assert.deepEqual(got.response.body, live.json, l.custom_id);
      continue;
    }
    const a = got.response.body, w = live.json;
    assert.equal(a.object, 'chat.completion');
    assert.deepEqual(sameBut(a.choices), sameBut(w.choices), l.custom_id);
    assert.deepEqual(a.usage, w.usage, l.custom_id);
    sum.input += w.usage.prompt_tokens;
    sum.output += w.usage.completion_tokens;
    sum.cached += w.usage.prompt_tokens_details.cached_tokens;
    sum.reasoning += w.usage.completion_tokens_details.reasoning_tokens;
  }
  assert.deepEqual(b.usage, {
    input_tokens: sum.input, input_tokens_details: { cached_tokens: sum.cached },
    output_tokens: sum.output, output_tokens_details: { reasoning_tokens: sum.reasoning },
    total_tokens: sum.input + sum.output,
  });
  assert.ok(sum.reasoning === 5 && sum.cached === 2, 'the markers applied per line');
  const calls = out.find((l) => l.custom_id === 'q-5').response.body.choices[0];
  assert.equal(calls.finish_reason, 'tool_calls');
  assert.deepEqual(calls.message.tool_calls.map((c) => c.function.name), ['get_weather', 'get_time']);

  // batch lines are counted apart from live requests
  const s = await mockStats(mock.url);
  assert.equal(s.batch.created.openai - before_.batch.created.openai, 1);
  assert.equal(s.batch.lines_run.openai - before_.batch.lines_run.openai, 6);
  // by_model saw the 6 live comparison requests only, not the 6 lines
  assert.equal((s.by_model['gpt-4o-mini'] ?? 0) - (before_.by_model['gpt-4o-mini'] ?? 0), 6);
  // the ring holds HTTP requests only: the last is the last live comparison
  const last = await mockLast(mock.url, 64);
  assert.equal(last.at(-1).path, '/v1/chat/completions');
  assert.equal(last.at(-1).body.messages[0].content, lines.at(-1).body.messages[0].content);
  const upload = last.find((e) => e.method === 'POST' && e.path === '/v1/files');
  assert.equal(upload?.body, '', 'an upload body is not kept');
});

test('OpenAI: a bad input file fails the batch with errors naming the lines', async () => {
  const created = await submit([
    chatLine('v-1', 'fine'),
    '{"custom_id": "v-2", not json',
    chatLine('v-1', 'a duplicate'),
    chatLine('v-4', 'another model', 'gpt-4o'),
    { ...chatLine('v-5', 'wrong url'), url: '/v1/embeddings' },
    { ...chatLine('v-6', 'GET'), method: 'GET' },
    { custom_id: 'v-7', method: 'POST', url: '/v1/chat/completions', body: { messages: [] } },
  ]);
  const b = await waitOpenAI(created.id);
  assert.equal(b.status, 'failed');
  assert.ok(b.failed_at >= b.created_at);
  assert.equal(b.output_file_id, null);
  const byLine = Object.fromEntries(b.errors.data.map((e) => [e.line, e.code]));
  assert.deepEqual(byLine, {
    2: 'invalid_json_line', 3: 'duplicate_custom_id', 4: 'mismatched_model', 5: 'invalid_url', 6: 'invalid_value', 7: 'missing_required_parameter',
  });
  assert.ok(b.errors.data.every((e) => e.message.length > 20));
  assert.equal(b.errors.data.find((e) => e.line === 3).param, 'custom_id');
});

test('OpenAI: create refuses an unknown file, a wrong endpoint and a wrong window', async () => {
  await assert.rejects(oai.batches.create({ input_file_id: 'file-nope', endpoint: '/v1/chat/completions', completion_window: '24h' }),
    (e) => e.status === 400 && e.error.param === 'input_file_id' && /POST \/v1\/files/.test(e.message));
  const file = await oai.files.create({ file: await toFile(Buffer.from(JSON.stringify(chatLine('w', 'x')) + '\n'), 'batch.jsonl'), purpose: 'batch' });
  await assert.rejects(oai.batches.create({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' }),
    (e) => e.status === 400 && e.error.param === 'endpoint');
  await assert.rejects(oai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '1h' }),
    (e) => e.status === 400 && e.error.param === 'completion_window');
  await assert.rejects(oai.files.create({ file: await toFile(Buffer.from('x'), 'batch.txt'), purpose: 'batch' }),
    (e) => e.status === 400 && /\.jsonl/.test(e.message));
  const deleted = await oai.files.delete(file.id);
  assert.deepEqual(deleted, { id: file.id, object: 'file', deleted: true });
  await assert.rejects(oai.files.retrieve(file.id), (e) => e.status === 404);
});

test('OpenAI: cancel midway keeps the lines already run and runs no more', async () => {
  await knob({ processing_ms: 3000 });
  const lines = Array.from({ length: 300 }, (_, i) => chatLine(`c-${i}`, `cancel test ${i}`));
  const before_ = await mockStats(mock.url);
  const created = await submit(lines);
  await knob({ processing_ms: 300 });
  await waitOpenAI(created.id, ['in_progress']);
  await sleep(900);
  const cancelling = await oai.batches.cancel(created.id);
  assert.equal(cancelling.status, 'cancelling');
  assert.ok(cancelling.cancelling_at > 0);
  const b = await waitOpenAI(created.id);
  assert.equal(b.status, 'cancelled');
  const ran = b.request_counts.completed;
  assert.ok(ran > 0 && ran < 300, `completed ${ran}`);
  const out = await fileLines(b.output_file_id);
  assert.equal(out.length, ran);
  assert.equal(b.error_file_id, null, 'cancelled lines appear nowhere');
  await sleep(3000 * SLOW); // past the old deadline: nothing more runs
  const s = await mockStats(mock.url);
  assert.equal(s.batch.lines_run.openai - before_.batch.lines_run.openai, ran);
  await assert.rejects(oai.batches.cancel(created.id), (e) => e.status === 400 && /cancelled/.test(e.message));
});

test('OpenAI: expire ends the batch expired, the lines not run in the error file', async () => {
  await knob({ expire: true });
  const created = await submit(Array.from({ length: 10 }, (_, i) => chatLine(`e-${i}`, `expire ${i}`)));
  const b = await waitOpenAI(created.id);
  assert.equal(b.status, 'expired');
  assert.ok(b.expired_at > 0);
  assert.deepEqual(b.request_counts, { total: 10, completed: 5, failed: 5 });
  const err = await fileLines(b.error_file_id);
  assert.equal(err.length, 5);
  assert.ok(err.every((l) => l.response === null && l.error.code === 'batch_expired'));
  assert.equal((await fileLines(b.output_file_id)).length, 5);
  const next = await waitOpenAI((await submit([chatLine('e-next', 'x')])).id);
  assert.equal(next.status, 'completed', 'expire applies to one batch');
});

test('fail_create refuses the next creation once, in each dialect', async () => {
  await knob({ fail_create: 503 });
  await assert.rejects(submit([chatLine('f-1', 'x')]), (e) => e.status === 503 && e.error?.type === 'server_error');
  assert.equal((await waitOpenAI((await submit([chatLine('f-2', 'x')])).id)).status, 'completed');
  await knob({ fail_create: 429 });
  await assert.rejects(ant.messages.batches.create({ requests: [{ custom_id: 'f-3', params: { model: 'claude-x', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] } }] }),
    (e) => e.status === 429 && e.error?.error?.type === 'rate_limit_error');
  const bad = await post(`${mock.url}/_mock/batch`, { fail_create: 200 });
  assert.equal(bad.status, 400);
});

test('the processing time: --batch-ms and POST /_mock/batch', async () => {
  const k = await get(`${mock.url}/_mock/batch`);
  assert.equal(k.json.processing_ms, 300, '--batch-ms 300 from the command line');
  await knob({ processing_ms: 1500 });
  const t0 = Date.now();
  const created = await submit([chatLine('t-1', 'slow')]);
  await sleep(700);
  assert.equal((await oai.batches.retrieve(created.id)).status, 'in_progress');
  await waitOpenAI(created.id);
  assert.ok(Date.now() - t0 >= 1500, `done after ${Date.now() - t0} ms`);
  await post(`${mock.url}/_mock/reset`, {});
  assert.equal((await get(`${mock.url}/_mock/batch`)).json.processing_ms, 300, 'reset restores --batch-ms');
});

test('Anthropic: create, poll, results through the SDK; each result is the live answer', async () => {
  const msg = (content, extra = {}) => ({ model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content }], ...extra });
  const requests = [
    { custom_id: 'a-0', params: msg('Say hello to the test suite') },
    { custom_id: 'a-1', params: msg('capped', { max_tokens: 2 }) },
    { custom_id: 'a-2', params: msg('overloaded [[mock:status=529]]') },
    { custom_id: 'a-3', params: { model: 'claude-haiku-4-5', messages: [{ role: 'user', content: 'no max_tokens' }] } },
    { custom_id: 'a-4', params: msg('tokens [[mock:cached_tokens=3,completion_tokens=40]]') },
    { custom_id: 'a-5', params: msg('think [[mock:thinking=1,tool_call=get_weather]]', { tools: [{ name: 'get_weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }] }) },
  ];
  const before_ = await mockStats(mock.url);
  const created = await ant.messages.batches.create({ requests });
  assert.equal(created.type, 'message_batch');
  assert.match(created.id, /^msgbatch_/);
  assert.equal(created.processing_status, 'in_progress');
  assert.equal(created.results_url, null);
  assert.equal(created.request_counts.processing, 6);
  assert.match(created.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const b = await waitAnthropic(created.id);
  assert.deepEqual(b.request_counts, { processing: 0, succeeded: 4, errored: 2, canceled: 0, expired: 0 });
  assert.equal(b.results_url, `${mock.url}/v1/messages/batches/${b.id}/results`);
  assert.ok(b.ended_at);
  const res = await results(b.id);
  assert.notDeepEqual(res.map((r) => r.custom_id), requests.map((r) => r.custom_id), 'unordered');
  for (const r of requests) {
    const live = await post(`${mock.url}/v1/messages`, r.params);
    const got = res.find((x) => x.custom_id === r.custom_id);
    if (live.status !== 200) {
      assert.equal(got.result.type, 'errored', r.custom_id);
      assert.deepEqual(got.result.error.error, live.json.error, r.custom_id);
      assert.equal(got.result.error.type, 'error');
      continue;
    }
    assert.equal(got.result.type, 'succeeded', r.custom_id);
    const m = got.result.message;
    assert.deepEqual(sameBut(m.content), sameBut(live.json.content), r.custom_id);
    assert.equal(m.stop_reason, live.json.stop_reason);
    assert.deepEqual({ ...m.usage, service_tier: 'standard' }, live.json.usage, r.custom_id);
    assert.equal(m.usage.service_tier, 'batch');
  }
  const s = await mockStats(mock.url);
  assert.equal(s.batch.created.anthropic - before_.batch.created.anthropic, 1);
  assert.equal(s.batch.lines_run.anthropic - before_.batch.lines_run.anthropic, 6);
  const think = res.find((x) => x.custom_id === 'a-5').result.message;
  assert.deepEqual(think.content.map((c) => c.type), ['thinking', 'tool_use']);
  assert.equal(think.stop_reason, 'tool_use');
});

test('Anthropic: cancel, creation errors, list and delete', async () => {
  await knob({ processing_ms: 3000 });
  const params = (i) => ({ model: 'claude-x', max_tokens: 5, messages: [{ role: 'user', content: `c ${i}` }] });
  const created = await ant.messages.batches.create({ requests: Array.from({ length: 200 }, (_, i) => ({ custom_id: `ac-${i}`, params: params(i) })) });
  await knob({ processing_ms: 300 });
  await sleep(800);
  const canceling = await ant.messages.batches.cancel(created.id);
  assert.equal(canceling.processing_status, 'canceling');
  assert.ok(canceling.cancel_initiated_at);
  const b = await waitAnthropic(created.id);
  const c = b.request_counts;
  assert.ok(c.succeeded > 0 && c.canceled > 0 && c.succeeded + c.canceled === 200, JSON.stringify(c));
  const res = await results(b.id);
  assert.equal(res.length, 200);
  assert.equal(res.filter((r) => r.result.type === 'canceled').length, c.canceled);

  await assert.rejects(ant.messages.batches.create({ requests: [{ custom_id: 'd', params: params(1) }, { custom_id: 'd', params: params(2) }] }),
    (e) => e.status === 400 && /requests\.1\.custom_id/.test(e.message));
  await assert.rejects(ant.messages.batches.create({ requests: [{ custom_id: 'bad id!', params: params(1) }] }),
    (e) => e.status === 400 && /requests\.0\.custom_id/.test(e.message));

  const page = await ant.messages.batches.list({ limit: 1 });
  assert.equal(page.data.length, 1);
  assert.equal(page.has_more, true);
  const older = await ant.messages.batches.list({ limit: 1, after_id: page.last_id });
  assert.notEqual(older.data[0].id, page.data[0].id);

  const del = await ant.messages.batches.delete(b.id);
  assert.deepEqual(del, { id: b.id, type: 'message_batch_deleted' });
  await assert.rejects(ant.messages.batches.retrieve(b.id), (e) => e.status === 404);
});

async function geminiBatch(model, items) {
  const r = await post(`${mock.url}/v1beta/models/${model}:batchGenerateContent`, {
    batch: { display_name: 'bridle', input_config: { requests: { requests: items } } },
  });
  assert.equal(r.status, 200, r.text);
  return r.json;
}

async function waitGemini(name, ms = 20000 * SLOW) {
  const end = Date.now() + ms;
  for (;;) {
    const r = await get(`${mock.url}/v1beta/${name}`);
    assert.equal(r.status, 200, r.text);
    if (r.json.done) return r.json;
    if (Date.now() > end) throw new Error(`${name} still ${r.json.metadata.state}`);
    await sleep(50);
  }
}

test('Gemini batch mode: inlined requests, each response the live answer, in input order with its key', async () => {
  const req = (text, extra = {}) => ({ contents: [{ role: 'user', parts: [{ text }] }], ...extra });
  const items = [
    { metadata: { key: 'g-0' }, request: req('Say hello to the test suite') },
    { metadata: { key: 'g-1' }, request: req('fail [[mock:status=503]]') },
    { metadata: { key: 'g-2' }, request: req('capped', { generationConfig: { maxOutputTokens: 2 } }) },
    { request: req('no key [[mock:reasoning_tokens=4]]') },
    { metadata: { key: 'g-4' }, request: { nothing: true } },
  ];
  const before_ = await mockStats(mock.url);
  const op = await geminiBatch('gemini-2.5-flash', items);
  assert.match(op.name, /^batches\/[0-9a-f]+$/);
  assert.equal(op.metadata.state, 'BATCH_STATE_PENDING');
  assert.equal(op.metadata.model, 'models/gemini-2.5-flash');
  assert.equal(op.metadata.batchStats.requestCount, '5');
  assert.equal(op.done, undefined);
  const done = await waitGemini(op.name);
  assert.equal(done.metadata.state, 'BATCH_STATE_SUCCEEDED');
  assert.deepEqual(done.metadata.batchStats, { requestCount: '5', successfulRequestCount: '3', failedRequestCount: '2', pendingRequestCount: '0' });
  const got = done.response.inlinedResponses.inlinedResponses;
  assert.equal(got.length, 5);
  assert.deepEqual(got.map((g) => g.metadata?.key), ['g-0', 'g-1', 'g-2', undefined, 'g-4'], 'input order, keys echoed');
  for (let i = 0; i < items.length; i++) {
    const live = await post(`${mock.url}/v1beta/models/gemini-2.5-flash:generateContent`, items[i].request);
    if (live.status === 200) assert.deepEqual(sameBut(got[i].response), sameBut(live.json), `item ${i}`);
    else assert.deepEqual(got[i].error, live.json.error, `item ${i}`);
  }
  const s = await mockStats(mock.url);
  assert.equal(s.batch.created.gemini - before_.batch.created.gemini, 1);
  assert.equal(s.batch.lines_run.gemini - before_.batch.lines_run.gemini, 5);
});

test('Gemini batch mode: cancel midway, errors, fail_create', async () => {
  await knob({ processing_ms: 3000 });
  const items = Array.from({ length: 200 }, (_, i) => ({ metadata: { key: `gc-${i}` }, request: { contents: [{ parts: [{ text: `c ${i}` }] }] } }));
  const op = await geminiBatch('gemini-2.5-flash', items);
  await knob({ processing_ms: 300 });
  await sleep(800);
  const c = await post(`${mock.url}/v1beta/${op.name}:cancel`, {});
  assert.equal(c.status, 200);
  assert.deepEqual(c.json, {});
  const done = await waitGemini(op.name);
  assert.equal(done.metadata.state, 'BATCH_STATE_CANCELLED');
  const ran = done.response.inlinedResponses.inlinedResponses.length;
  assert.ok(ran > 0 && ran < 200, `ran ${ran}`);
  assert.equal(Number(done.metadata.batchStats.successfulRequestCount), ran);
  const again = await post(`${mock.url}/v1beta/${op.name}:cancel`, {});
  assert.equal(again.status, 400);
  assert.equal((await get(`${mock.url}/v1beta/batches/nope`)).status, 404);
  const bad = await post(`${mock.url}/v1beta/models/gemini-2.5-flash:batchGenerateContent`, { batch: { input_config: { file_name: 'files/x' } } });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.status, 'INVALID_ARGUMENT');
  await knob({ fail_create: 503 });
  const refused = await post(`${mock.url}/v1beta/models/gemini-2.5-flash:batchGenerateContent`, { batch: { input_config: { requests: { requests: items.slice(0, 1) } } } });
  assert.equal(refused.status, 503);
  assert.equal(refused.json.error.status, 'UNAVAILABLE');
});

test('custom_ids submitted or run twice are counted, for "no line upstream twice"', async () => {
  await post(`${mock.url}/_mock/reset`, {});
  await waitOpenAI((await submit([chatLine('dup-1', 'x'), chatLine('once-1', 'y')])).id);
  let s = await mockStats(mock.url);
  assert.equal(s.batch.custom_ids_submitted_twice, 0);
  assert.equal(s.batch.custom_ids_run_twice, 0);
  await waitOpenAI((await submit([chatLine('dup-1', 'x again')])).id);
  s = await mockStats(mock.url);
  assert.equal(s.batch.custom_ids_submitted_twice, 1);
  assert.equal(s.batch.custom_ids_run_twice, 1);
  const r = await get(`${mock.url}/_mock/batch_lines?repeated=1`);
  assert.deepEqual(r.json.lines, { 'dup-1': { submitted: 2, run: 2 } });
  const all = await get(`${mock.url}/_mock/batch_lines`);
  assert.deepEqual(all.json.lines['once-1'], { submitted: 1, run: 1 });
  // a batch that failed validation submitted nothing
  await waitOpenAI((await submit([chatLine('dup-1', 'x'), 'not json'])).id);
  assert.equal((await get(`${mock.url}/_mock/batch_lines`)).json.lines['dup-1'].submitted, 2);
});

test('50,000 lines: validated and run on the loop, the mock answering meanwhile', async () => {
  await knob({ processing_ms: 1000 });
  const lines = Array.from({ length: 50000 }, (_, i) => chatLine(`big-${i}`, `Question number ${i}`));
  const t0 = Date.now();
  const created = await submit(lines);
  let worst = 0, polls = 0;
  let b;
  for (;;) {
    const p0 = Date.now();
    b = await oai.batches.retrieve(created.id);
    worst = Math.max(worst, Date.now() - p0);
    polls++;
    if (['completed', 'failed'].includes(b.status)) break;
    assert.ok(Date.now() - t0 < 60000 * SLOW, 'the 50k batch finishes');
    await sleep(20);
  }
  const total = Date.now() - t0;
  assert.equal(b.status, 'completed');
  assert.deepEqual(b.request_counts, { total: 50000, completed: 50000, failed: 0 });
  const out = await fileLines(b.output_file_id);
  assert.equal(out.length, 50000);
  assert.equal(new Set(out.map((l) => l.custom_id)).size, 50000);
  assert.equal(out[0].custom_id, 'big-49999');
  assert.ok(worst < 1000 * SLOW, `a poll waited ${worst} ms`);
  console.log(`# 50k lines: ${total} ms end to end, ${polls} polls, slowest poll ${worst} ms`);
  await knob({ processing_ms: 300 });
});

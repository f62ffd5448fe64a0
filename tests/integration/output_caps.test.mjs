// Output caps are bounds, and the output side is priced (issue 10, d and e).
//
// e: a task's cap in $.routing.output_caps bounds the client's max_tokens
// (the lower of the two) for every plan: "auto", a named model and a route
// of $.routes, as long as the request carries the task; "cap": "default" on
// the task or the route makes it a fill-in only. Checked on what the mock
// received, in every dialect's own field, and against what `bridle route`
// prints for the same request and config.
//
// d: with no max_tokens after capping, the routing policy prices the output
// side from the task's typical output: the shipped config no longer sends
// agent_orchestration to gpt-5.5 ($30/M out) over Claude Opus ($25/M out).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';

import { BUILD, ROOT, SANITIZED, mockConfig, mockLast, post, startBridle, startMock, tmpDir } from './lib/harness.mjs';

const BIN = path.join(BUILD, 'bridle');
const SAN_ENV = SANITIZED ? { ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', UBSAN_OPTIONS: 'print_stacktrace=1' } : {};
const SAN_PATTERNS = [/ERROR: AddressSanitizer/, /ERROR: LeakSanitizer/, /runtime error:/];

/** Runs build/bridle with args from the repo root; {code, stdout, stderr}. */
function bridle(...args) {
  const r = spawnSync(BIN, args, { cwd: ROOT, env: { ...process.env, ...SAN_ENV }, encoding: 'utf8', timeout: 60000 });
  for (const re of SAN_PATTERNS) assert.doesNotMatch(r.stderr, re, `sanitizer report from bridle ${args.join(' ')}:\n${r.stderr}`);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const dir = tmpDir();
let n = 0;
/** `bridle route --json` for a request body and headers, against a config file. */
function route(configPath, body, task) {
  const file = path.join(dir, `req-${n++}.json`);
  writeFileSync(file, JSON.stringify(body));
  const args = ['route', '--config', configPath, '--request', file];
  if (task) args.push('--header', `x-bridle-task: ${task}`);
  const r = bridle(...args, '--json');
  assert.equal(r.code, 0, r.stderr);
  const text = bridle(...args);
  assert.equal(text.code, 0, text.stderr);
  return { json: JSON.parse(r.stdout), text: text.stdout };
}

/** The output limit a dialect's body carries, by the field that dialect uses. */
function sentCap(up) {
  const b = up.body;
  if (up.path.endsWith('/messages')) return b.max_tokens; // Anthropic
  if (up.path.includes(':generateContent') || up.path.includes(':streamGenerateContent')) return b.generationConfig?.maxOutputTokens;
  if (up.path === '/api/chat') return b.options?.num_predict; // Ollama
  return b.max_completion_tokens ?? b.max_tokens; // OpenAI-compatible
}

describe('output caps bound the request, in every plan and dialect', () => {
  let mock, gw;
  before(async () => {
    mock = await startMock();
    const config = mockConfig(mock.url, {
      providers: {
        // OpenAI itself: max_completion_tokens instead of max_tokens
        'openai-mct': { kind: 'openai', base_url: `${mock.url}/v1`, api_key: 'sk-mock-openai', options: { max_completion_tokens: true } },
      },
      models: { 'gpt-4o': { provider: 'openai-mct' } },
      routes: {
        auto: null, // "auto" is the routing policy's here
        strict: { candidates: ['gemini-2.5-flash'] },
        loose: { candidates: ['claude-haiku-4-5'], cap: 'default' },
      },
      routing: {
        default_tier: 'budget',
        tasks: { classify: 'budget', draft_writing: 'budget' },
        tiers: { budget: ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash'] },
        output_caps: { classify: 10, draft_writing: { max: 2000, cap: 'default' } },
      },
    });
    gw = await startBridle({ config });
  });

  /** Sends one request; returns the cap the mock received and `bridle route`'s view of it. */
  async function both(body, task) {
    const headers = { ...gw.auth, ...(task ? { 'x-bridle-task': task } : {}) };
    const r = await post(`${gw.baseURL}/chat/completions`, body, headers);
    assert.equal(r.status, 200, r.text);
    const [up] = await mockLast(mock.url);
    const cli = route(gw.configPath, body, task);
    return { sent: sentCap(up), up, cli: cli.json, text: cli.text, model: r.headers['x-bridle-model'] };
  }

  const msgs = [{ role: 'user', content: 'Is this spam? "You won a prize"' }];

  test('auto + classify: a client max_tokens of 5000 goes upstream as the cap, 10', async () => {
    const x = await both({ model: 'auto', max_tokens: 5000, messages: msgs }, 'classify');
    assert.equal(x.model, 'gpt-4o-mini');
    assert.equal(x.sent, 10, JSON.stringify(x.up.body));
    assert.equal(x.up.body.max_tokens, 10); // the client's key, its value replaced
    assert.equal(x.cli.max_tokens_applied, 10);
    assert.equal(x.cli.client_max_tokens, 5000);
    assert.equal(x.cli.output_capped, true);
    assert.match(x.text, /output\s+max_tokens 10 \(the task's cap, bounding the request's 5000\)/);
    // under the cap, the client's own goes through
    const y = await both({ model: 'auto', max_tokens: 4, messages: msgs }, 'classify');
    assert.equal(y.sent, 4);
    assert.equal(y.cli.max_tokens_applied, 4);
    assert.equal(y.cli.output_capped, false);
  });

  test('a named model with x-bridle-task: classify is capped too, in every dialect', async () => {
    for (const model of ['gpt-4o-mini', 'gpt-4o', 'claude-haiku-4-5', 'gemini-2.5-flash', 'llama3.2']) {
      const x = await both({ model, max_tokens: 5000, messages: msgs }, 'classify');
      assert.equal(x.model, model);
      assert.equal(x.sent, 10, `${model}: ${x.up.path} ${JSON.stringify(x.up.body)}`);
      assert.equal(x.cli.max_tokens_applied, 10, model);
      assert.equal(x.cli.chosen, model);
      if (model === 'gpt-4o') {
        // the host wants max_completion_tokens: one key, the capped value
        assert.equal(x.up.body.max_completion_tokens, 10);
        assert.equal(x.up.body.max_tokens, undefined);
      }
      // and with no max_tokens of its own, the cap fills in
      const y = await both({ model, messages: msgs }, 'classify');
      assert.equal(y.sent, 10, `${model} without max_tokens: ${JSON.stringify(y.up.body)}`);
      assert.equal(y.cli.max_tokens_applied, 10);
    }
  });

  test('a route of $.routes with a task is capped; "cap": "default" on the route only fills in', async () => {
    const s = await both({ model: 'strict', max_tokens: 5000, messages: msgs }, 'classify');
    assert.equal(s.model, 'gemini-2.5-flash');
    assert.equal(s.sent, 10, JSON.stringify(s.up.body));
    assert.equal(s.cli.max_tokens_applied, 10);
    assert.match(s.cli.rule, /^route strict/);
    const l = await both({ model: 'loose', max_tokens: 5000, messages: msgs }, 'classify');
    assert.equal(l.model, 'claude-haiku-4-5');
    assert.equal(l.sent, 5000, JSON.stringify(l.up.body));
    assert.equal(l.cli.max_tokens_applied, 5000);
    assert.equal(l.cli.output_capped, false);
    const f = await both({ model: 'loose', messages: msgs }, 'classify');
    assert.equal(f.sent, 10);
    assert.equal(f.cli.max_tokens_applied, 10);
  });

  test('a task whose cap says "cap": "default": the client 5000 goes through, none → 2000', async () => {
    const x = await both({ model: 'auto', max_tokens: 5000, messages: msgs }, 'draft_writing');
    assert.equal(x.sent, 5000, JSON.stringify(x.up.body));
    assert.equal(x.cli.max_tokens_applied, 5000);
    assert.match(x.text, /max_tokens 5000 \(the request's own: the task's cap of 2000 only fills in/);
    const y = await both({ model: 'claude-haiku-4-5', messages: msgs }, 'draft_writing');
    assert.equal(y.sent, 2000, JSON.stringify(y.up.body));
    assert.equal(y.cli.max_tokens_applied, 2000);
  });

  test('no task, no cap: the client value, untouched, and route agrees', async () => {
    const x = await both({ model: 'gpt-4o-mini', max_tokens: 5000, messages: msgs });
    assert.equal(x.sent, 5000);
    assert.equal(x.cli.max_tokens_applied, 5000);
    const y = await both({ model: 'auto', messages: msgs });
    assert.equal(y.sent, undefined, JSON.stringify(y.up.body));
    assert.equal(y.cli.max_tokens_applied, -1);
  });
});

describe('the policy prices the output side (shipped config)', () => {
  test('agent_orchestration: Claude Opus over gpt-5.5, with estimates that differ by the output price', () => {
    const body = { model: 'auto', messages: [{ role: 'user', content: 'Plan the steps for the agents to migrate the billing service.' }] };
    const { json: r, text } = route('config/bridle.json', body, 'agent_orchestration');
    assert.equal(r.tier, 'heavy');
    assert.equal(r.chosen, 'claude-opus-4-8');
    assert.equal(r.max_tokens_applied, -1); // no cap for the task: priced on its typical output
    assert.equal(r.est_output_tokens, 800);
    assert.match(r.est_output_from, /typical_output 800/);
    const c = Object.fromEntries(r.candidates.map((x) => [x.model, x]));
    const opus = c['claude-opus-4-8'];
    const gpt = c['gpt-5.5'];
    assert.ok(opus && gpt, JSON.stringify(r.candidates));
    // both sides, in integer pico-dollars: same input price ($5/M), output $25/M vs $30/M
    for (const x of [opus, gpt]) assert.equal(x.est_input_pusd + x.est_output_pusd, x.est_cost_pusd);
    assert.equal(opus.est_input_pusd, gpt.est_input_pusd);
    assert.equal(opus.est_output_pusd, 800 * 25_000_000);
    assert.equal(gpt.est_output_pusd, 800 * 30_000_000);
    assert.notEqual(opus.est_cost_pusd, gpt.est_cost_pusd);
    assert.ok(opus.est_cost_pusd < gpt.est_cost_pusd);
    assert.ok(r.candidates.indexOf(opus) < r.candidates.indexOf(gpt));
    // the text shows the estimate with both sides
    assert.match(text, /estimate\s+\d+ tokens in \+ 800 tokens out \(the task's typical_output 800\)/);
    assert.match(text, /1\. claude-opus-4-8 .*est \$0\.\d+ +\(in \$0\.\d+ \+ out \$0\.02000000\)/);
    assert.match(text, /2\. gpt-5\.5 .*\(in \$0\.\d+ \+ out \$0\.02400000\)/);
  });
});

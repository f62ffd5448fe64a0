// `bridle route` and `bridle simulate` (cli/route.c): the routing
// policy from the command line, no provider called. Checks the two seed case
// studies of issue 5 to the pico-dollar, and that `route` sends a classify
// to a budget model and complex reasoning to a heavy one.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

import { BUILD, ROOT, SANITIZED, tmpDir } from './lib/harness.mjs';

const BIN = path.join(BUILD, 'bridle');
const CONFIG = 'config/examples/routing.json';
const AGENTS = 'config/examples/workload-agents.jsonl';
const SAAS = 'config/examples/workload-saas.jsonl';
const USD = 1_000_000_000_000n; // pico-dollars in a dollar

const SAN_ENV = SANITIZED ? { ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', UBSAN_OPTIONS: 'print_stacktrace=1' } : {};
const SAN_PATTERNS = [/ERROR: AddressSanitizer/, /ERROR: LeakSanitizer/, /runtime error:/];

/** Runs build/bridle with args from the repo root; {code, stdout, stderr}. */
function bridle(...args) {
  const r = spawnSync(BIN, args, { cwd: ROOT, env: { ...process.env, ...SAN_ENV }, encoding: 'utf8', timeout: 60000 });
  for (const re of SAN_PATTERNS) assert.doesNotMatch(r.stderr, re, `sanitizer report from bridle ${args.join(' ')}:\n${r.stderr}`);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function json(...args) {
  const r = bridle(...args, '--json');
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

// Amounts are integer pico-dollars; JSON numbers are exact below 2^53
// (about $9,000), which every amount here is.
function pusd(v) {
  assert.ok(Number.isSafeInteger(v), `not an exact integer: ${v}`);
  return BigInt(v);
}

function routingTiers() {
  return JSON.parse(readFileSync(path.join(ROOT, CONFIG), 'utf8')).routing.tiers;
}

describe('simulate: the seed case studies', () => {
  test('agents: 312 jobs a week routed local / Haiku / Sonnet come to $1.472 a week', () => {
    const r = json('simulate', '--config', CONFIG, '--workload', AGENTS);
    assert.equal(r.requests_per_week, 312);
    assert.equal(pusd(r.routed.per_week_pusd), 1_472_000_000_000n); // exactly $1.472000
    assert.equal(pusd(r.routed.per_day_pusd), 210_285_714_286n); // 1.472 / 7, rounded half up
    assert.equal(pusd(r.routed.per_month_pusd), 6_308_571_428_571n); // × 30 / 7
    assert.equal(pusd(r.baseline.per_week_pusd), 4_422_000_000_000n); // all on Sonnet
    assert.equal(r.baseline_model, 'claude-sonnet-4-6');
    const byModel = Object.fromEntries(r.by_model.map((m) => [m.model, m]));
    assert.deepEqual(Object.keys(byModel).sort(), ['claude-haiku-4-5', 'claude-sonnet-4-6', 'llama3.2']);
    assert.equal(byModel['llama3.2'].requests_per_week, 100);
    assert.equal(pusd(byModel['llama3.2'].routed.per_week_pusd), 0n);
    assert.equal(byModel['claude-haiku-4-5'].requests_per_week, 140);
    assert.equal(byModel['claude-sonnet-4-6'].requests_per_week, 72);
    const byTask = Object.fromEntries(r.by_task.map((t) => [t.task, t]));
    assert.equal(byTask.test_generation.requests_per_week, 140);
    assert.equal(byTask.analysis.requests_per_week, 12);

    const text = bridle('simulate', '--config', CONFIG, '--workload', AGENTS);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /routed\s+\$1\.472000\/week/);
  });

  test('SaaS: about $340 a month all-Sonnet, well under $100 routed', () => {
    const r = json('simulate', '--config', CONFIG, '--workload', SAAS);
    assert.equal(r.requests_per_week, 7 * (2000 + 500 + 50 + 20));
    const base = pusd(r.baseline.per_month_pusd);
    const routed = pusd(r.routed.per_month_pusd);
    assert.equal(base, 340_200_000_000_000n); // $340.20 / month
    assert.equal(routed, 71_910_000_000_000n); // $71.91 / month
    assert.ok(base > 335n * USD && base < 345n * USD);
    assert.ok(routed < 80n * USD);
    assert.equal(pusd(r.savings.per_month_pusd), base - routed);
    const byTask = Object.fromEntries(r.by_task.map((t) => [t.task, t]));
    // classify and summaries on a budget model, capped output, pennies a day
    assert.equal(pusd(byTask.classify.routed.per_day_pusd), 162_000_000_000n);
    assert.equal(pusd(byTask.summarize.routed.per_day_pusd), 285_000_000_000n);
    const tiers = routingTiers();
    for (const route of r.routes) {
      if (route.task === 'classify' || route.task === 'summarize') assert.ok(tiers.budget.includes(route.model), route.model);
      if (route.task === 'agent_orchestration') assert.ok(tiers.heavy.includes(route.model), route.model);
    }
    const classify = r.routes.find((x) => x.task === 'classify');
    assert.equal(classify.output_tokens, 10); // the output cap, since the line sets none
  });

  test('--baseline picks another model to compare with', () => {
    const r = json('simulate', '--config', CONFIG, '--workload', SAAS, '--baseline', 'claude-opus-4-8');
    assert.equal(r.baseline_model, 'claude-opus-4-8');
    assert.equal(r.baseline_from, '--baseline');
    assert.ok(pusd(r.baseline.per_month_pusd) > 340n * USD);
    assert.equal(pusd(r.routed.per_month_pusd), 71_910_000_000_000n);
    const bad = bridle('simulate', '--config', CONFIG, '--workload', SAAS, '--baseline', 'gpt-9');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--baseline gpt-9: no such model/);
  });

  test('a bad workload line is reported with its line number', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'bad.jsonl');
    writeFileSync(file, '{"task": "classify", "prompt_tokens": 5}\n\n{"task": "classify", "prompt_tokens": 5, "per": "month"}\n');
    let r = bridle('simulate', '--config', CONFIG, '--workload', file);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad\.jsonl:3: "per": expected "day" or "week"/);
    writeFileSync(file, '{"task": "classify", "tier": "gold", "prompt_tokens": 5}\n');
    r = bridle('simulate', '--config', CONFIG, '--workload', file);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad\.jsonl:1: x-bridle-tier: unknown tier "gold"/);
  });
});

describe('route: one decision, no calls', () => {
  const dir = tmpDir();
  const request = path.join(dir, 'request.json');
  writeFileSync(
    request,
    JSON.stringify({
      model: 'auto',
      messages: [
        { role: 'system', content: 'Answer with one word.' },
        { role: 'user', content: 'Is this ticket a bug, a feature request or a question? "Export does nothing."' },
      ],
    }),
  );

  test('classify goes to a budget model, complex reasoning to a heavy one', () => {
    const tiers = routingTiers();
    const c = json('route', '--config', CONFIG, '--request', request, '--header', 'x-bridle-task: classify');
    assert.equal(c.tier, 'budget');
    assert.ok(tiers.budget.includes(c.chosen), c.chosen);
    assert.equal(c.chosen, 'gpt-4o-mini'); // the cheapest of the three
    assert.equal(c.max_tokens_applied, 10);
    assert.equal(c.output_capped, true);
    assert.equal(c.estimated, true);
    assert.match(c.rule, /^task classify -> tier budget/);
    assert.ok(pusd(c.est_cost_pusd) < pusd(c.baseline_cost_pusd));
    // cascade and fallbacks: the mid and heavy tiers follow
    assert.deepEqual(
      c.candidates.map((x) => x.tier),
      ['budget', 'budget', 'budget', 'mid', 'heavy', 'heavy'],
    );

    const h = json('route', '--config', CONFIG, '--request', request, '--header', 'x-bridle-task: complex_reasoning');
    assert.equal(h.tier, 'heavy');
    assert.ok(tiers.heavy.includes(h.chosen), h.chosen);
    assert.equal(h.thinking_cap, 8000);
    // and how the cap would reach each candidate, read from what its adapter would send
    assert.equal(h.thinking_sent, true);
    const sent = Object.fromEntries(h.candidates.map((x) => [x.model, x.thinking]));
    assert.equal(sent['claude-opus-4-8'], 'thinking.budget_tokens 8000 (max_tokens 12096)');
    assert.equal(sent['gpt-5.5'], 'reasoning_effort medium');
    const ht = bridle('route', '--config', CONFIG, '--request', request, '--header', 'x-bridle-task: complex_reasoning');
    assert.match(ht.stdout, /thinking\s+budget 8000 tokens/);
    assert.match(ht.stdout, /thinking: reasoning_effort medium/);
    writeFileSync(path.join(dir, 'own.json'), JSON.stringify({ model: 'auto', reasoning_effort: 'low', messages: [{ role: 'user', content: 'hi' }] }));
    const own = json('route', '--config', CONFIG, '--request', path.join(dir, 'own.json'), '--header', 'x-bridle-task: complex_reasoning');
    assert.equal(own.thinking_cap, 8000);
    assert.equal(own.thinking_sent, false);
    // the client's own effort, as each candidate would get it
    const ownSent = Object.fromEntries(own.candidates.map((x) => [x.model, x.thinking]));
    assert.equal(ownSent['claude-opus-4-8'], 'thinking.budget_tokens 1024 (max_tokens 5120)');
    assert.equal(ownSent['gpt-5.5'], 'reasoning_effort low');

    const text = bridle('route', '--config', CONFIG, '--request', request, '--header', 'x-bridle-task: classify');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /rule\s+task classify -> tier budget/);
    assert.match(text.stdout, /1\. gpt-4o-mini/);
  });

  test('a concrete model is honoured; over budget goes local; a bad tier is refused', () => {
    writeFileSync(path.join(dir, 'named.json'), JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] }));
    const n = json('route', '--config', CONFIG, '--request', path.join(dir, 'named.json'), '--header', 'x-bridle-task: classify');
    assert.equal(n.chosen, 'claude-sonnet-4-6');
    assert.equal(n.candidates.length, 1);
    // the classify cap (10) bounds the request's own 50, named model or not
    assert.equal(n.client_max_tokens, 50);
    assert.equal(n.max_tokens_applied, 10);
    assert.equal(n.output_capped, true);

    const d = json('route', '--config', CONFIG, '--request', request, '--header', 'x-bridle-task: code_gen', '--spend-share', '85');
    assert.equal(d.chosen, 'llama3.2');
    assert.equal(d.downgraded, true);
    assert.match(d.rule, /over budget \(85% >= 80%\): local/);

    const b = bridle('route', '--config', CONFIG, '--request', request, '--header', 'x-bridle-tier: gold');
    assert.equal(b.code, 1);
    assert.match(b.stderr, /x-bridle-tier: unknown tier "gold"/);
  });

  test('routing config errors name the JSON path', () => {
    const cfg = JSON.parse(readFileSync(path.join(ROOT, CONFIG), 'utf8'));
    cfg.routing.tiers.budget = ['gpt-4o-mini', 'gpt-9'];
    const file = path.join(dir, 'bad-config.json');
    writeFileSync(file, JSON.stringify(cfg));
    let r = bridle('route', '--config', file, '--request', request);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad-config\.json: \$\.routing\.tiers\.budget\[1\]: no model named "gpt-9" in \$\.models/);
    cfg.routing.tiers.budget = ['gpt-4o-mini'];
    cfg.routing.cascade.escalate_to = { budget: 'mid', mid: 'budget' };
    writeFileSync(file, JSON.stringify(cfg));
    r = bridle('simulate', '--config', file, '--workload', SAAS);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\$\.routing\.cascade\.escalate_to: a cycle: budget -> mid -> budget/);
    // the rest of the config is still checked, and named by its real file
    delete cfg.routing.cascade.escalate_to;
    cfg.models['gpt-4o-mini'].provider = 'nowhere';
    writeFileSync(file, JSON.stringify(cfg));
    r = bridle('route', '--config', file, '--request', request);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad-config\.json: \$\.models\.gpt-4o-mini\.provider: no provider named "nowhere"/);
  });
});

describe('simulate: with and without the provider prompt cache (issue 14)', () => {
  const run = (lines) => {
    const dir = tmpDir('bridle-simulate-pc-');
    const wl = path.join(dir, 'workload.jsonl');
    writeFileSync(wl, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    return json('simulate', '--config', CONFIG, '--workload', wl);
  };
  // prices are µ$ per million tokens, so tokens × price is pico-dollars

  test("the seed's arithmetic: a 2,000-token system prompt, 1,000 requests a day on Sonnet: $6/day without, $0.6069 with", () => {
    const r = run([{ model: 'claude-sonnet-4-6', prompt_tokens: 2000, output_tokens: 0, count: 1000, per: 'day', cached_prefix_tokens: 2000 }]);
    assert.equal(pusd(r.routed.per_day_pusd), 6n * USD); // 2,000 × 1,000 × $3/M
    // warm: 999 reads at $0.30/M; one write a day (the cold start) at $3.75/M
    const day = 999n * 2000n * 300_000n + 1n * 2000n * 3_750_000n;
    assert.equal(pusd(r.routed_with_prompt_cache.per_week_pusd), 7n * day);
    assert.equal(pusd(r.routed_with_prompt_cache.per_day_pusd), day); // $0.6069 (the seed says "about $0.63")
  });

  test('a request an hour misses the 5-minute cache every time: writes cost more than no cache; under the minimum nothing changes', () => {
    const slow = run([{ model: 'claude-sonnet-4-6', prompt_tokens: 2000, output_tokens: 0, count: 24, per: 'day', cached_prefix_tokens: 2000 }]);
    assert.equal(pusd(slow.routed_with_prompt_cache.per_week_pusd), 7n * 24n * 2000n * 3_750_000n);
    assert.ok(pusd(slow.routed_with_prompt_cache.per_week_pusd) > pusd(slow.routed.per_week_pusd));
    const short = run([{ model: 'claude-sonnet-4-6', prompt_tokens: 2000, output_tokens: 0, count: 1000, per: 'day', cached_prefix_tokens: 1000 }]);
    assert.equal(short.routed_with_prompt_cache.per_week_pusd, short.routed.per_week_pusd, "below Sonnet's 1,024-token minimum");
  });

  test('OpenAI: reads at the cached rate, writes at the plain rate; lines without a prefix count the same both ways', () => {
    const r = run([
      { model: 'gpt-4o-mini', prompt_tokens: 3000, output_tokens: 100, count: 7000, per: 'week', cached_prefix_tokens: 2500 },
      { model: 'gpt-4o-mini', prompt_tokens: 300, output_tokens: 10, count: 70, per: 'week' },
    ]);
    const warm = 500n * 150_000n + 2500n * 75_000n + 100n * 600_000n;
    const cold = 3000n * 150_000n + 100n * 600_000n;
    const plain = 300n * 150_000n + 10n * 600_000n;
    // 1,000 a day: one every 86 s keeps the cache warm; one write a day
    assert.equal(pusd(r.routed_with_prompt_cache.per_week_pusd), 6993n * warm + 7n * cold + 70n * plain);
    assert.equal(pusd(r.routed.per_week_pusd), 7000n * cold + 70n * plain);
  });
});

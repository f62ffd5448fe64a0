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
import { PRICES } from './lib/mockmath.mjs';

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

// ---------------------------------------------------------------- batch (issue 16)

// The price table's figures (router/price_table.c via lib/mockmath.mjs; µ$
// per million tokens, so tokens × price is pico-dollars), its
// batch_discount_pct and its shortest cacheable prefixes (Anthropic's
// min_cache_tokens; 1,024 for OpenAI, whose rows give none).
const BATCH_PCT = { 'gpt-4o-mini': 50n, 'claude-haiku-4-5': 50n, 'gemini-2.5-flash': 50n, 'claude-sonnet-4-6': 50n, 'claude-opus-4-8': 50n, 'llama3.2': 0n };
const MIN_CACHE = { 'gpt-4o-mini': 1024n, 'claude-haiku-4-5': 2048n, 'claude-sonnet-4-6': 1024n, 'claude-opus-4-8': 1024n };

/** One request's cost as pricing_cost_pusd computes it (no long context at these sizes). */
function unitCost(model, { input = 0n, read = 0n, write5m = 0n, output = 0n }, batch) {
  const p = PRICES[model];
  const c = input * p.input + read * p.cached + write5m * (p.write5m || p.input) + output * p.output;
  return batch ? (c * (100n - BATCH_PCT[model])) / 100n : c; // one truncation, as bridle
}

/**
 * A line's week, step by step as simulate documents it: routed (live), with
 * batching (the discount when it goes through a batch API), then with the
 * 5-minute prompt cache on its stable prefix (one write a day while requests
 * come at least every 5 minutes, else a write every request).
 */
function lineWeek({ model, input, output, weekly, batched, prefix = 0n }) {
  const routed = weekly * unitCost(model, { input, output }, false);
  const batchedWeek = weekly * unitCost(model, { input, output }, batched);
  let cached = batchedWeek;
  if (prefix > 0n && prefix >= (MIN_CACHE[model] ?? 0n) && prefix <= input && MIN_CACHE[model]) {
    const gap = (7n * 86400n) / weekly;
    const writes = gap <= 300n ? (weekly < 7n ? weekly : 7n) : weekly;
    const warm = unitCost(model, { input: input - prefix, read: prefix, output }, batched);
    const cold = unitCost(model, { input: input - prefix, write5m: prefix, output }, batched);
    cached = warm * (weekly - writes) + cold * writes;
  }
  return { routed, batched: batchedWeek, cached };
}

/** div_round of cli/route.c: half away from zero. */
function divRound(num, den) {
  return num >= 0n ? (num * 2n + den) / (den * 2n) : -((-num * 2n + den) / (den * 2n));
}
const perDay = (week) => divRound(week, 7n);
const perMonth = (week) => divRound(week * 30n, 7n);

/** Pico-dollars as simulate prints them: 6 decimals, rounded half up. */
function usd6(p) {
  const neg = p < 0n;
  const v = ((neg ? -p : p) + 500_000n) / 1_000_000n;
  return `${neg ? '-' : ''}${v / 1_000_000n}.${String(v % 1_000_000n).padStart(6, '0')}`;
}

function money(m) {
  return { week: pusd(m.per_week_pusd), day: pusd(m.per_day_pusd), month: pusd(m.per_month_pusd) };
}
const expectMoney = (week) => ({ week, day: perDay(week), month: perMonth(week) });

const SAAS_BATCH = 'config/examples/workload-saas-batch.jsonl';

describe('simulate: batch-eligible work at the batch discount (issue 16)', () => {
  // The batch-marked SaaS workload: what each line is and where the policy
  // sends it (classify and summarize: the budget tier's cheapest; code_gen:
  // mid; agents: heavy's cheapest). Only the summaries are marked batch.
  const SAAS_LINES = [
    { task: 'classify', model: 'gpt-4o-mini', input: 500n, output: 10n, weekly: 14000n, batch: false, prefix: 400n },
    { task: 'summarize', model: 'gpt-4o-mini', input: 1800n, output: 500n, weekly: 3500n, batch: true, prefix: 300n },
    { task: 'code_gen', model: 'claude-sonnet-4-6', input: 2000n, output: 1000n, weekly: 350n, batch: false, prefix: 1500n },
    { task: 'agent_orchestration', model: 'claude-opus-4-8', input: 4000n, output: 1000n, weekly: 140n, batch: false, prefix: 3000n },
  ];

  test('the batch-marked SaaS workload, to the pico-dollar: the summaries at half price, the saving shown apart from routing and caching', () => {
    const r = json('simulate', '--config', CONFIG, '--workload', SAAS_BATCH);
    const sum = { routed: 0n, batched: 0n, cached: 0n, baseline: 0n };
    for (const l of SAAS_LINES) {
      const route = r.routes.find((x) => x.task === l.task);
      assert.equal(route.model, l.model, l.task);
      assert.equal(route.batch, l.batch, l.task);
      assert.equal(route.batched, l.batch, l.task); // OpenAI and Anthropic providers take batches here
      assert.equal(route.batch_priced_live, null);
      assert.equal(pusd(route.unit_cost_pusd), unitCost(l.model, { input: l.input, output: l.output }, false));
      assert.equal(pusd(route.batch_unit_cost_pusd), unitCost(l.model, { input: l.input, output: l.output }, l.batch));
      const w = lineWeek({ ...l, batched: l.batch });
      for (const k of ['routed', 'batched', 'cached']) sum[k] += w[k];
      sum.baseline += l.weekly * unitCost('claude-sonnet-4-6', { input: l.input, output: l.output }, false);
      const t = r.by_task.find((x) => x.task === l.task);
      assert.equal(t.batch_requests_per_week, l.batch ? Number(l.weekly) : 0);
      assert.deepEqual(money(t.routed_with_batch), expectMoney(w.batched), l.task);
      assert.deepEqual(money(t.savings_by.batching), expectMoney(w.routed - w.batched), l.task);
      assert.deepEqual(money(t.savings_by.caching), expectMoney(w.batched - w.cached), l.task);
    }
    // the summaries: 3,500 a week at half of 1,800 × $0.15/M + 500 × $0.60/M
    assert.equal(sum.routed - sum.batched, 3500n * ((1800n * 150_000n + 500n * 600_000n) / 2n));
    assert.equal(r.batch_requests_per_week, 3500);
    assert.deepEqual(money(r.routed), expectMoney(sum.routed));
    assert.deepEqual(money(r.baseline), expectMoney(sum.baseline));
    assert.deepEqual(money(r.routed_with_batch), expectMoney(sum.batched));
    assert.deepEqual(money(r.routed_with_prompt_cache), expectMoney(sum.cached));
    assert.deepEqual(money(r.projected), expectMoney(sum.cached));
    assert.deepEqual(money(r.savings_by.routing), expectMoney(sum.baseline - sum.routed));
    assert.deepEqual(money(r.savings_by.batching), expectMoney(sum.routed - sum.batched));
    assert.deepEqual(money(r.savings_by.caching), expectMoney(sum.batched - sum.cached));
    assert.deepEqual(money(r.savings), money(r.savings_by.routing)); // "savings" stays routing's alone
    // the three parts add up, per week, to the whole
    assert.equal(
      pusd(r.savings_by.routing.per_week_pusd) + pusd(r.savings_by.batching.per_week_pusd) + pusd(r.savings_by.caching.per_week_pusd),
      pusd(r.baseline.per_week_pusd) - pusd(r.projected.per_week_pusd),
    );
    // by model: the batch discount lands on gpt-4o-mini's row only
    const byModel = Object.fromEntries(r.by_model.map((m) => [m.model, m]));
    assert.equal(byModel['gpt-4o-mini'].batch_requests_per_week, 3500);
    assert.equal(pusd(byModel['gpt-4o-mini'].savings_by.batching.per_week_pusd), sum.routed - sum.batched);
    assert.equal(pusd(byModel['claude-sonnet-4-6'].savings_by.batching.per_week_pusd), 0n);

    // the text says the same, the batching apart
    const text = bridle('simulate', '--config', CONFIG, '--workload', SAAS_BATCH);
    assert.equal(text.code, 0, text.stderr);
    const line = (re) => text.stdout.split('\n').find((x) => re.test(x));
    assert.equal(
      line(/^with batching /),
      `with batching  $${usd6(sum.batched)}/week  $${usd6(perDay(sum.batched))}/day  $${usd6(perMonth(sum.batched))}/month  (routed; 3500 requests a week through a provider's batch API at its discount)`,
    );
    assert.equal(
      line(/^saved /),
      `saved     $${usd6(perMonth(sum.baseline - sum.routed))}/month by routing, $${usd6(perMonth(sum.routed - sum.batched))} by batching, ` +
        `${perMonth(sum.batched - sum.cached) < 0n ? '-$' + usd6(-perMonth(sum.batched - sum.cached)) : '$' + usd6(perMonth(sum.batched - sum.cached))} by caching: ` +
        `$${usd6(perMonth(sum.baseline - sum.cached))}/month in all (${(Number(((sum.baseline - sum.cached) * 1000n) / sum.baseline) / 10).toFixed(1)}% of the baseline)`,
    );
    // the summarize row: 3,500 through batch, and its batching saving a month
    assert.match(line(/^ {2}summarize /), new RegExp(`\\s3500\\s+${usd6(perMonth(sum.routed - sum.batched)).replace('.', '\\.')}\\s`));
  });

  const runWith = (lines, config = CONFIG) => {
    const dir = tmpDir('bridle-simulate-batch-');
    const wl = path.join(dir, 'workload.jsonl');
    writeFileSync(wl, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    return { json: json('simulate', '--config', config, '--workload', wl), text: bridle('simulate', '--config', config, '--workload', wl) };
  };

  test('a local model and a Gemini model get no discount: their batch lines run from the local queue at the live price', () => {
    const { json: r, text } = runWith([
      { task: 'summarize', tier: 'local', prompt_tokens: 3000, output_tokens: 400, count: 80, per: 'week', batch: true },
      { task: 'summarize', model: 'gemini-2.5-flash', prompt_tokens: 3000, output_tokens: 400, count: 80, per: 'week', batch: true },
      { task: 'summarize', model: 'claude-haiku-4-5', prompt_tokens: 3000, output_tokens: 400, count: 80, per: 'week', batch: true },
    ]);
    const [local, gemini, haiku] = r.routes;
    assert.equal(local.model, 'llama3.2');
    assert.equal(local.batched, false);
    assert.equal(local.unit_cost_pusd, 0);
    assert.match(local.batch_priced_live, /mock-ollama \(ollama\).*local queue at the live price/);
    assert.equal(gemini.batched, false);
    const geminiUnit = unitCost('gemini-2.5-flash', { input: 3000n, output: 400n }, false);
    assert.ok(geminiUnit > 0n);
    assert.equal(pusd(gemini.batch_unit_cost_pusd), geminiUnit); // not halved
    assert.match(gemini.batch_priced_live, /served by mock-gemini, which has no "batch": true/);
    assert.equal(haiku.batched, true); // the control: an Anthropic provider with "batch": true
    const haikuUnit = unitCost('claude-haiku-4-5', { input: 3000n, output: 400n }, false);
    assert.equal(pusd(haiku.batch_unit_cost_pusd), haikuUnit / 2n);
    assert.equal(r.batch_requests_per_week, 80);
    assert.equal(pusd(r.savings_by.batching.per_week_pusd), 80n * (haikuUnit - haikuUnit / 2n));
    const byModel = Object.fromEntries(r.by_model.map((m) => [m.model, m]));
    assert.equal(byModel['llama3.2'].batch_requests_per_week, 0);
    assert.equal(pusd(byModel['gemini-2.5-flash'].savings_by.batching.per_week_pusd), 0n);
    assert.match(text.stdout, /note {6}line 1 is marked batch, but llama3\.2 is served by mock-ollama \(ollama\)/);
    assert.match(text.stdout, /note {6}line 2 is marked batch, but gemini-2\.5-flash is served by mock-gemini, which has no "batch": true/);
  });

  test('"batch": false on a provider (or none) gives no discount; "batch": true on an Ollama provider is a config error', () => {
    const cfg = JSON.parse(readFileSync(path.join(ROOT, CONFIG), 'utf8'));
    cfg.providers.mock.batch = false;
    delete cfg.providers['mock-anthropic'].batch; // the default: false
    const dir = tmpDir('bridle-simulate-nobatch-');
    const file = path.join(dir, 'no-batch.json');
    writeFileSync(file, JSON.stringify(cfg));
    const { json: r, text } = runWith(
      [
        { task: 'summarize', model: 'gpt-4o-mini', prompt_tokens: 1800, output_tokens: 500, count: 500, per: 'day', batch: true },
        { task: 'code_gen', model: 'claude-sonnet-4-6', prompt_tokens: 2000, output_tokens: 1000, count: 50, per: 'day', batch: true },
      ],
      file,
    );
    for (const route of r.routes) {
      assert.equal(route.batch, true);
      assert.equal(route.batched, false);
      assert.equal(route.batch_unit_cost_pusd, route.unit_cost_pusd);
    }
    assert.match(r.routes[0].batch_priced_live, /served by mock, which has no "batch": true \(providers\.mock\.batch\)/);
    assert.match(r.routes[1].batch_priced_live, /providers\.mock-anthropic\.batch/);
    assert.equal(r.batch_requests_per_week, 0);
    assert.deepEqual(money(r.routed_with_batch), money(r.routed));
    assert.equal(pusd(r.savings_by.batching.per_week_pusd), 0n);
    assert.match(text.stdout, /with batching .*\(routed; 0 requests a week through a provider's batch API/);

    cfg.providers['mock-ollama'].batch = true;
    writeFileSync(file, JSON.stringify(cfg));
    const bad = bridle('simulate', '--config', file, '--workload', SAAS_BATCH);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /no-batch\.json: \$\.providers\.mock-ollama\.batch: only openai, anthropic and gemini providers have a batch API bridle uses \(this one is ollama\)/);
  });

  test('"batch" must be true or false', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'bad.jsonl');
    writeFileSync(file, '{"task": "summarize", "prompt_tokens": 5, "batch": "yes"}\n');
    const r = bridle('simulate', '--config', CONFIG, '--workload', file);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad\.jsonl:1: "batch": expected true or false \(got "yes"\)/);
  });
});

// ---------------------------------------------------------------- the README's case study

describe("README: the seed's SaaS case study", () => {
  // The seed's own figures, quoted in the section; every other dollar
  // figure there must be one bridle printed.
  const SEED = new Set(['340', '105', '44']);
  const toPusd = (s) => {
    const [whole, frac = ''] = s.replace(/,/g, '').split('.');
    return BigInt(whole) * USD + BigInt(frac.padEnd(12, '0'));
  };

  test('its commands print what it pastes, and every figure in it is from their output', () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const start = readme.indexOf('\n## Case study: a SaaS day');
    assert.ok(start >= 0, 'README has the case study section');
    const end = readme.indexOf('\n## ', start + 1);
    const section = readme.slice(start, end);
    const blocks = [...section.matchAll(/```(\w+)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1], body: m[2] }));
    const runs = [];
    for (let i = 0; i < blocks.length; i++) {
      if (blocks[i].lang !== 'sh') continue;
      const cmd = blocks[i].body.trim();
      assert.match(cmd, /^build\/bridle simulate( --[a-z]+ \S+)+$/, 'one simulate command per block');
      const r = bridle(...cmd.split(/\s+/).slice(1));
      assert.equal(r.code, 0, r.stderr);
      runs.push(r.stdout);
      // the pasted output: its lines are the command's, in order (an excerpt may leave lines out)
      const pasted = blocks[i + 1];
      assert.equal(pasted?.lang, 'text', `the output of "${cmd}" follows it`);
      const out = r.stdout.split('\n');
      let j = 0;
      for (const line of pasted.body.split('\n').filter((x) => x !== '')) {
        while (j < out.length && out[j] !== line) j++;
        assert.ok(j < out.length, `README pastes a line "${cmd}" does not print (or out of order):\n${line}\n--- it prints:\n${r.stdout}`);
        j++;
      }
    }
    assert.equal(runs.length, 2, 'two runs: the workload, then its batch-marked variant');

    // every dollar figure of the prose is the seed's or one bridle printed
    const printed = new Set(runs.flatMap((o) => [...o.matchAll(/(\d+\.\d{6})/g)].map((m) => toPusd(m[1]))));
    const prose = section.replace(/```[\s\S]*?```/g, '');
    const figures = [...prose.matchAll(/\$(\d[\d,]*(?:\.\d+)?)/g)].map((m) => m[1]);
    assert.ok(figures.length >= 10, figures.join(' '));
    for (const f of figures) if (!SEED.has(f)) assert.ok(printed.has(toPusd(f)), `README figure $${f} is not in the commands' output`);

    // the summary table: each bridle figure is the /month of the line it names
    const rows = [...prose.matchAll(/^\| ([^|]+) \| ([^|]+) \| ([^|]+) \| run (\d), `([^`]+)` \|$/gm)];
    assert.equal(rows.length, 4, 'four steps come from a run');
    for (const [, step, , bridleCol, run, label] of rows) {
      const line = runs[Number(run) - 1].split('\n').find((x) => x.startsWith(label + ' ') && x.includes('/month'));
      assert.ok(line, `run ${run} prints a "${label}" line`);
      const month = line.match(/\$(\d+\.\d+)\/month/)[1];
      assert.equal(toPusd(bridleCol.trim().replace(/^\$/, '')), toPusd(month), `${step}: README says ${bridleCol}, run ${run} prints $${month}`);
    }
  });
});

/* Unit tests for router/policy.c: the "routing" config (errors with their
 * JSON paths) and every planning rule, with exact integer costs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "router/policy.h"

/* ------------------------------------------------------------ fixtures */

enum { LLAMA, MINI, HAIKU, FLASH, SONNET, GPT4O, OPUS, GPT55, N_MODELS };

static policy_model table[N_MODELS];

static const model_price *price_of(const char *name)
{
    const model_price *p = pricing_default_lookup(name);
    assert_non_null(p);
    return p;
}

/* The model table as the lead's config would give it: every model enabled,
 * healthy and idle; llama3.2 local with a small (Ollama-like) window. */
static int setup(void **state)
{
    static const char *const names[N_MODELS] = {
        "llama3.2",          "gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash",
        "claude-sonnet-4-6", "gpt-4o",      "claude-opus-4-8",  "gpt-5.5"};
    for (int i = 0; i < N_MODELS; i++) {
        const model_price *p = price_of(names[i]);
        table[i] = (policy_model){.name = names[i],
                                  .price = p,
                                  .context_window = p->context_window,
                                  .tier = p->tier,
                                  .enabled = true,
                                  .healthy = true,
                                  .local = p->tier == TIER_LOCAL};
    }
    table[LLAMA].context_window = 8192;
    return 0;
}

static json_object *J(const char *s)
{
    json_object *o = json_tokener_parse(s);
    assert_non_null(o);
    return o;
}

/* The example, mid and heavy filled in. */
static const char *const EXAMPLE =
    "{\"default_tier\": \"mid\","
    " \"tiers\": {\"local\": [\"llama3.2\"],"
    "             \"budget\": [\"claude-haiku-4-5\", \"gemini-2.5-flash\", \"gpt-4o-mini\"],"
    "             \"mid\": [\"claude-sonnet-4-6\", \"gpt-4o\"],"
    "             \"heavy\": [\"gpt-5.5\", \"claude-opus-4-8\"]},"
    " \"prefer_local\": true,"
    " \"output_caps\": {\"classify\": 10, \"summarize\": 500, \"extract\": 300, \"code_gen\": "
    "2000},"
    " \"thinking_caps\": {\"complex_reasoning\": 8000},"
    " \"cascade\": {\"enabled\": true, \"checks\": [\"length\", \"json\", \"uncertain\", "
    "\"empty\"],"
    "               \"uncertain_marker\": \"UNCERTAIN\","
    "               \"escalate_to\": {\"local\": \"budget\", \"budget\": \"mid\", \"mid\": "
    "\"heavy\"}},"
    " \"budget_downgrade\": {\"share_pct\": 80, \"to_tier\": \"local\"},"
    " \"batch_tasks\": [\"summarize\", \"translate\"],"
    " \"baseline\": \"claude-sonnet-4-6\"}";

static policy *make(const char *routing_json)
{
    char err[512] = "";
    json_object *r = routing_json ? J(routing_json) : NULL;
    policy *p = policy_new(r, table, N_MODELS, err, sizeof err);
    json_object_put(r);
    if (!p) fail_msg("policy_new: %s", err);
    return p;
}

static policy_request req_auto(const char *task)
{
    return (policy_request){.model = "auto",
                            .task = task,
                            .prompt_chars = 400,
                            .max_tokens = -1,
                            .spend_share_pct = -1};
}

static policy_plan plan_ok(const policy *p, const policy_request *r)
{
    policy_plan out;
    char err[256] = "";
    policy_result rc = policy_plan_request(p, table, N_MODELS, r, &out, err, sizeof err);
    if (rc != POLICY_OK) fail_msg("plan failed (%d): %s", rc, err);
    return out;
}

static const char *cand_name(const policy_plan *pl, int i)
{
    assert_true(i < pl->n);
    return table[pl->cand[i].model_index].name;
}

static void assert_order(const policy_plan *pl, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(cand_name(pl, i), table[va_arg(ap, int)].name);
    va_end(ap);
    assert_int_equal(pl->n, n);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

/* ------------------------------------------------------------ defaults */

static void test_null_routing_uses_price_table_tiers(void **state)
{
    policy *p = make(NULL);
    policy_request r = req_auto("classify");
    policy_plan pl = plan_ok(p, &r);
    /* budget tier from the table: mini, haiku, flash; cheapest first */
    assert_int_equal(pl.tier, TIER_BUDGET);
    assert_int_equal(pl.n_primary, 3);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o-mini");
    assert_string_equal(cand_name(&pl, 1), "gemini-2.5-flash");
    assert_string_equal(cand_name(&pl, 2), "claude-haiku-4-5");
    /* default baseline: the most expensive heavy model */
    assert_int_equal(policy_baseline_index(p), GPT55);
    assert_int_equal(policy_task_tier(p, "complex_reasoning"), TIER_HEAVY);
    assert_int_equal(policy_task_tier(p, "code_review"), TIER_MID);
    assert_int_equal(policy_task_tier(p, "nope"), TIER_NONE);
    assert_false(policy_cascade_enabled(p));
    policy_free(p);
    policy_free(NULL);
}

static void test_example_config_parses(void **state)
{
    policy *p = make(EXAMPLE);
    int n;
    const int *b = policy_tier_models(p, TIER_BUDGET, &n);
    assert_int_equal(n, 3);
    assert_int_equal(b[0], HAIKU);
    assert_int_equal(b[2], MINI);
    assert_int_equal(policy_baseline_index(p), SONNET);
    assert_true(policy_cascade_enabled(p));
    policy_free(p);
}

/* ------------------------------------------------------------ which tier */

static void test_concrete_model_honoured(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("classify");
    r.model = "claude-opus-4-8";
    r.tier_header = "budget";
    policy_plan pl = plan_ok(p, &r);
    assert_order(&pl, 1, OPUS);
    assert_int_equal(pl.n_primary, 1);
    assert_int_equal(pl.tier, TIER_HEAVY);
    assert_string_equal(pl.rule, "model claude-opus-4-8 asked by name");
    assert_string_equal(pl.cand[0].reason, "asked by name");
    /* the task's output cap still applies */
    assert_int_equal(pl.max_tokens_applied, 10);

    /* honoured even when unhealthy: the attempt loop decides */
    table[OPUS].healthy = false;
    pl = plan_ok(p, &r);
    assert_order(&pl, 1, OPUS);
    assert_string_equal(pl.cand[0].reason, "asked by name (unhealthy)");
    table[OPUS].healthy = true;
    policy_free(p);
}

static void test_unknown_model_is_an_error(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto(NULL);
    r.model = "gpt-9";
    policy_plan pl;
    char err[256];
    assert_int_equal(policy_plan_request(p, table, N_MODELS, &r, &pl, err, sizeof err),
                     POLICY_UNKNOWN_MODEL);
    assert_contains(err, "no model named \"gpt-9\"");
    assert_int_equal(pl.n, 0);
    policy_free(p);
}

static void test_auto_tier_from_task(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("classify");
    policy_plan pl = plan_ok(p, &r);
    assert_int_equal(pl.tier, TIER_BUDGET);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o-mini");
    assert_string_equal(pl.rule, "task classify -> tier budget: cheapest of 3 that fit");

    r = req_auto("complex_reasoning");
    pl = plan_ok(p, &r);
    assert_int_equal(pl.tier, TIER_HEAVY);
    assert_string_equal(cand_name(&pl, 0), "claude-opus-4-8");
    assert_int_equal(pl.thinking_cap, 8000);

    r = req_auto("code_gen");
    pl = plan_ok(p, &r);
    assert_int_equal(pl.tier, TIER_MID);

    /* NULL model means auto */
    r.model = NULL;
    pl = plan_ok(p, &r);
    assert_int_equal(pl.tier, TIER_MID);
    policy_free(p);
}

static void test_tier_header_and_tier_model(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("classify");
    r.tier_header = "heavy"; /* an explicit tier wins over the task's */
    policy_plan pl = plan_ok(p, &r);
    assert_int_equal(pl.tier, TIER_HEAVY);
    assert_contains(pl.rule, "x-bridle-tier heavy");

    r = req_auto(NULL);
    r.model = "tier:budget";
    r.tier_header = "heavy"; /* only for "auto" */
    pl = plan_ok(p, &r);
    assert_int_equal(pl.tier, TIER_BUDGET);
    assert_contains(pl.rule, "model tier:budget");

    char err[256];
    r.model = "tier:gold";
    assert_int_equal(policy_plan_request(p, table, N_MODELS, &r, &pl, err, sizeof err),
                     POLICY_BAD_TIER);
    assert_contains(err, "tier:gold");
    r.model = "auto";
    r.tier_header = "platinum";
    assert_int_equal(policy_plan_request(p, table, N_MODELS, &r, &pl, err, sizeof err),
                     POLICY_BAD_TIER);
    assert_contains(err, "x-bridle-tier: unknown tier \"platinum\"");
    policy_free(p);
}

static void test_default_tier(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto(NULL);
    policy_plan pl = plan_ok(p, &r);
    assert_int_equal(pl.tier, TIER_MID);
    assert_contains(pl.rule, "no task: default tier mid");

    r = req_auto("poetry");
    pl = plan_ok(p, &r);
    assert_int_equal(pl.tier, TIER_MID);
    assert_contains(pl.rule, "task poetry unmapped: default tier mid");

    policy *q = make("{\"default_tier\": \"budget\"}");
    pl = plan_ok(q, &r);
    assert_int_equal(pl.tier, TIER_BUDGET);
    policy_free(q);
    policy_free(p);
}

static void test_custom_tasks_replace_defaults(void **state)
{
    policy *p = make("{\"tasks\": {\"test_generation\": \"budget\", \"classify\": \"mid\"}}");
    assert_int_equal(policy_task_tier(p, "test_generation"), TIER_BUDGET);
    assert_int_equal(policy_task_tier(p, "classify"), TIER_MID);
    assert_int_equal(policy_task_tier(p, "summarize"), TIER_NONE);
    policy_free(p);
}

/* ------------------------------------------------------------ ordering */

static void test_cheapest_first_with_escalation(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("classify");
    policy_plan pl = plan_ok(p, &r);
    /* budget by cost (listed haiku, flash, mini), then mid, then heavy */
    assert_order(&pl, 7, MINI, FLASH, HAIKU, GPT4O, SONNET, OPUS, GPT55);
    assert_int_equal(pl.n_primary, 3);
    assert_int_equal(pl.cand[3].tier, TIER_MID);
    assert_int_equal(pl.cand[5].tier, TIER_HEAVY);
    assert_string_equal(pl.cand[0].reason, "budget #1: cheapest estimate that fits");
    assert_string_equal(pl.cand[1].reason, "budget #2 by estimated cost");
    assert_string_equal(pl.cand[3].reason, "escalation mid #1: cheapest estimate that fits");
    for (int i = 1; i < 3; i++)
        assert_true(pl.cand[i - 1].est_cost_pusd <= pl.cand[i].est_cost_pusd);
    /* where the cascade goes from each step */
    assert_int_equal(policy_escalation_index(p, &pl, 0), 3);
    assert_int_equal(policy_escalation_index(p, &pl, 2), 3);
    assert_int_equal(policy_escalation_index(p, &pl, 3), 5);
    assert_int_equal(policy_escalation_index(p, &pl, 5), -1);
    assert_int_equal(policy_escalation_index(p, &pl, 99), -1);
    policy_free(p);
}

static void test_exact_estimates(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("classify");
    r.prompt_chars = 401; /* ceil(401 / 4) = 101 tokens */
    policy_plan pl = plan_ok(p, &r);
    assert_int_equal(pl.est_prompt_tokens, 101);
    assert_true(pl.estimated);
    assert_int_equal(pl.max_tokens_applied, 10);
    assert_true(pl.output_capped);
    /* gpt-4o-mini: 101 × 0.15 $/M + 10 × 0.60 $/M = 15,150,000 + 6,000,000 pusd */
    assert_int_equal(pl.est_cost_pusd, 21150000);
    /* baseline sonnet: 101 × 3 + 10 × 15 = 303e6 + 150e6 */
    assert_int_equal(pl.baseline_index, SONNET);
    assert_int_equal(pl.baseline_cost_pusd, 453000000);
    r.prompt_chars = 0;
    pl = plan_ok(p, &r);
    assert_int_equal(pl.est_prompt_tokens, 0);
    r.prompt_chars = -5;
    pl = plan_ok(p, &r);
    assert_int_equal(pl.est_prompt_tokens, 0);
    policy_free(p);
}

static void test_order_depends_on_token_mix(void **state)
{
    /* Two priced local-less models: A cheap in, dear out; B the reverse. */
    static model_price a = {.name = "a", .input = 1000000, .output = 10000000};
    static model_price b = {.name = "b", .input = 4000000, .output = 2000000};
    policy_model t[2] = {
        {.name = "a", .price = &a, .tier = TIER_BUDGET, .enabled = true, .healthy = true},
        {.name = "b", .price = &b, .tier = TIER_BUDGET, .enabled = true, .healthy = true}};
    char err[256];
    json_object *r = J("{\"tiers\": {\"budget\": [\"a\", \"b\"]}, \"tasks\": {}, "
                       "\"default_tier\": \"budget\"}");
    policy *p = policy_new(r, t, 2, err, sizeof err);
    json_object_put(r);
    assert_non_null(p);
    policy_request q = {
        .model = "auto", .prompt_chars = 4000, .max_tokens = 10, .spend_share_pct = -1};
    policy_plan pl;
    assert_int_equal(policy_plan_request(p, t, 2, &q, &pl, err, sizeof err), POLICY_OK);
    assert_string_equal(t[pl.cand[0].model_index].name, "a"); /* prompt-heavy: a */
    q.prompt_chars = 40;
    q.max_tokens = 1000;
    assert_int_equal(policy_plan_request(p, t, 2, &q, &pl, err, sizeof err), POLICY_OK);
    assert_string_equal(t[pl.cand[0].model_index].name, "b"); /* output-heavy: b */
    /* equal cost: list order */
    q.prompt_chars = 0;
    q.max_tokens = 0;
    assert_int_equal(policy_plan_request(p, t, 2, &q, &pl, err, sizeof err), POLICY_OK);
    assert_string_equal(t[pl.cand[0].model_index].name, "a");
    assert_string_equal(t[pl.cand[1].model_index].name, "b");
    policy_free(p);
}

static void test_context_window_filter(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("classify");
    r.prompt_chars = 4 * 127995; /* + cap 10 = 128005 > gpt-4o-mini's 128000 */
    policy_plan pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "gemini-2.5-flash");
    assert_string_equal(cand_name(&pl, 1), "claude-haiku-4-5");
    assert_int_equal(pl.n_primary, 2);
    for (int i = 0; i < pl.n; i++)
        assert_int_not_equal(pl.cand[i].model_index, MINI);
    for (int i = 0; i < pl.n; i++)
        assert_int_not_equal(pl.cand[i].model_index, GPT4O); /* 128k too */
    /* exactly at the window fits */
    r.prompt_chars = 4 * 127990;
    pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o-mini");
    /* the max_tokens sent counts: the request's own 100, bounded by the
     * classify cap, is 10, which still fits */
    r.max_tokens = 100;
    pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o-mini");
    assert_true(pl.output_capped);
    assert_int_equal(pl.max_tokens_applied, 10);
    /* under the cap, the request's own counts: 127993 + 5 fits, + the cap 10 not */
    r.prompt_chars = 4 * 127993;
    r.max_tokens = 5;
    pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o-mini");
    assert_false(pl.output_capped);
    r.max_tokens = -1;
    pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "gemini-2.5-flash");
    /* no max_tokens and no cap: the typical output is what must fit (500) */
    r = req_auto("analysis");
    r.prompt_chars = 4 * 127600;
    pl = plan_ok(p, &r);
    assert_int_equal(pl.est_output_tokens, POLICY_DEFAULT_TYPICAL_OUTPUT);
    for (int i = 0; i < pl.n; i++)
        assert_int_not_equal(pl.cand[i].model_index, GPT4O);
    r = req_auto("classify");
    r.prompt_chars = 4 * 127990;
    r.max_tokens = 20;
    /* 0 = unknown window: fits */
    table[MINI].context_window = 0;
    pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o-mini");
    table[MINI].context_window = 128000;
    policy_free(p);
}

static void test_disabled_and_unhealthy_skipped(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("classify");
    table[MINI].enabled = false;
    table[FLASH].healthy = false;
    policy_plan pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "claude-haiku-4-5");
    assert_int_equal(pl.n_primary, 1);
    assert_string_equal(pl.rule, "task classify -> tier budget: cheapest of 1 that fit");
    table[MINI].enabled = true;
    table[FLASH].healthy = true;
    policy_free(p);
}

static void test_primary_empty_falls_back_to_escalation(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("classify");
    table[MINI].healthy = table[FLASH].healthy = table[HAIKU].healthy = false;
    policy_plan pl = plan_ok(p, &r);
    assert_int_equal(pl.n_primary, 0);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o");
    assert_contains(pl.rule, "none fit, falling back to mid");
    table[MINI].healthy = table[FLASH].healthy = table[HAIKU].healthy = true;
    policy_free(p);
}

static void test_no_candidate(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("complex_reasoning");
    table[OPUS].enabled = false;
    table[GPT55].healthy = false;
    policy_plan pl;
    char err[512];
    assert_int_equal(policy_plan_request(p, table, N_MODELS, &r, &pl, err, sizeof err),
                     POLICY_NO_CANDIDATE);
    assert_contains(err, "tier heavy: no model can take this request (2 listed: 1 without an "
                         "enabled provider, 1 unhealthy, 0 with a context window");
    assert_int_equal(pl.n, 0);
    table[OPUS].enabled = true;
    table[GPT55].healthy = true;
    /* too big for every window (prompt + the typical output, 500, + the
     * thinking cap, 8000) */
    r.prompt_chars = 4LL * 2000000;
    assert_int_equal(policy_plan_request(p, table, N_MODELS, &r, &pl, err, sizeof err),
                     POLICY_NO_CANDIDATE);
    assert_contains(err, "2 with a context window under 2008500 tokens");
    /* a model table of another length */
    assert_int_equal(policy_plan_request(p, table, N_MODELS - 1, &r, &pl, err, sizeof err),
                     POLICY_NO_CANDIDATE);
    policy_free(p);
}

static void test_at_most_eight_candidates(void **state)
{
    /* 12 budget models, priced 12, 11, ..., 1: the 8 cheapest, in order */
    static model_price prices[12];
    policy_model t[12];
    char names[12][8];
    char json[512] = "{\"default_tier\": \"budget\", \"tasks\": {}, \"tiers\": {\"budget\": [";
    for (int i = 0; i < 12; i++) {
        snprintf(names[i], sizeof names[i], "m%d", i);
        prices[i] = (model_price){.name = names[i], .input = 12 - i, .output = 12 - i};
        t[i] = (policy_model){.name = names[i],
                              .price = &prices[i],
                              .tier = TIER_BUDGET,
                              .enabled = true,
                              .healthy = true};
        snprintf(json + strlen(json), sizeof json - strlen(json), "%s\"m%d\"", i ? ", " : "", i);
    }
    strcat(json, "]}}");
    char err[256];
    json_object *r = J(json);
    policy *p = policy_new(r, t, 12, err, sizeof err);
    json_object_put(r);
    assert_non_null(p);
    policy_request q = {
        .model = "auto", .prompt_chars = 400, .max_tokens = 10, .spend_share_pct = -1};
    policy_plan pl;
    assert_int_equal(policy_plan_request(p, t, 12, &q, &pl, err, sizeof err), POLICY_OK);
    assert_int_equal(pl.n, POLICY_MAX_CAND);
    assert_int_equal(pl.n_primary, POLICY_MAX_CAND);
    for (int i = 0; i < POLICY_MAX_CAND; i++)
        assert_int_equal(pl.cand[i].model_index, 11 - i);
    assert_string_equal(pl.rule, "no task: default tier budget: cheapest of 12 that fit");
    policy_free(p);
}

/* ------------------------------------------------------------ local models */

static const char *const WITH_LOCAL =
    "{\"tiers\": {\"local\": [\"llama3.2\"], \"budget\": [\"gpt-4o-mini\", \"llama3.2\", "
    "\"claude-haiku-4-5\"], \"mid\": [\"claude-sonnet-4-6\"], \"heavy\": [\"claude-opus-4-8\"]},"
    " \"prefer_local\": true}";

static void test_local_first(void **state)
{
    policy *p = make(WITH_LOCAL);
    policy_request r = req_auto("classify");
    policy_plan pl = plan_ok(p, &r);
    assert_order(&pl, 5, LLAMA, MINI, HAIKU, SONNET, OPUS);
    assert_string_equal(pl.cand[0].reason, "budget #1: local first (prefer_local)");
    assert_contains(pl.rule, ", local first");
    policy_free(p);
}

static void test_busy_local_goes_last(void **state)
{
    policy *p = make(WITH_LOCAL);
    policy_request r = req_auto("classify");
    table[LLAMA].busy = true;
    policy_plan pl = plan_ok(p, &r);
    /* cloud first, then escalation, then the busy local model */
    assert_order(&pl, 5, MINI, HAIKU, SONNET, OPUS, LLAMA);
    assert_contains(pl.cand[4].reason, "local but busy, so last");
    /* the local tier itself: its busy model still comes after cloud fallback */
    r.model = "tier:local";
    pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o-mini");
    assert_string_equal(cand_name(&pl, pl.n - 1), "llama3.2");
    table[LLAMA].busy = false;
    policy_free(p);
}

static void test_local_too_small_skipped(void **state)
{
    policy *p = make(WITH_LOCAL);
    policy_request r = req_auto("classify");
    r.prompt_chars = 4 * 9000; /* over llama's 8192 */
    policy_plan pl = plan_ok(p, &r);
    assert_order(&pl, 4, MINI, HAIKU, SONNET, OPUS);
    policy_free(p);
}

static void test_prefer_local_off_orders_by_cost(void **state)
{
    /* a priced local model: without prefer_local it is ordered by cost */
    static model_price dear_local = {.name = "llama3.2", .input = 1000000, .output = 1000000};
    const model_price *keep = table[LLAMA].price;
    table[LLAMA].price = &dear_local;
    policy *p = make("{\"tiers\": {\"local\": [\"llama3.2\"], \"budget\": [\"llama3.2\", "
                     "\"gpt-4o-mini\"], \"mid\": [\"claude-sonnet-4-6\"], \"heavy\": "
                     "[\"claude-opus-4-8\"]}, \"prefer_local\": false}");
    policy_request r = req_auto("classify");
    policy_plan pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o-mini");
    assert_string_equal(cand_name(&pl, 1), "llama3.2");
    policy_free(p);
    p = make("{\"tiers\": {\"local\": [\"llama3.2\"], \"budget\": [\"gpt-4o-mini\", "
             "\"llama3.2\"], \"mid\": [\"claude-sonnet-4-6\"], \"heavy\": "
             "[\"claude-opus-4-8\"]}}");
    pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "llama3.2"); /* prefer_local defaults to true */
    policy_free(p);
    table[LLAMA].price = keep;
}

/* ------------------------------------------------------------ budget downgrade */

static void test_budget_downgrade(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("code_gen");
    r.spend_share_pct = 79;
    policy_plan pl = plan_ok(p, &r);
    assert_int_equal(pl.tier, TIER_MID);
    assert_false(pl.downgraded);

    r.spend_share_pct = 80;
    pl = plan_ok(p, &r);
    assert_true(pl.downgraded);
    assert_int_equal(pl.tier, TIER_LOCAL);
    assert_order(&pl, 1, LLAMA); /* replaced, no escalation */
    assert_int_equal(pl.n_primary, 1);
    assert_string_equal(pl.rule,
                        "task code_gen -> tier mid: cheapest of 2 that fit; over budget (80% >= "
                        "80%): local");
    assert_string_equal(pl.cand[0].reason, "over budget: local #1: local first (prefer_local)");
    assert_int_equal(pl.est_cost_pusd, 0);

    /* a concrete model too */
    r.model = "claude-opus-4-8";
    r.spend_share_pct = 120;
    pl = plan_ok(p, &r);
    assert_order(&pl, 1, LLAMA);
    assert_contains(pl.rule, "model claude-opus-4-8 asked by name; over budget (120% >= 80%)");

    /* unknown spend: no downgrade */
    r.spend_share_pct = -1;
    pl = plan_ok(p, &r);
    assert_order(&pl, 1, OPUS);

    /* nothing in the downgrade tier fits: the plan stays, and says so */
    r.model = "auto";
    r.spend_share_pct = 90;
    r.prompt_chars = 4 * 10000;
    pl = plan_ok(p, &r);
    assert_false(pl.downgraded);
    assert_int_equal(pl.tier, TIER_MID);
    assert_contains(pl.rule, "; over budget but no local model fits: kept");
    r.team_budget = true; /* the team's share was the higher: the rule names it */
    pl = plan_ok(p, &r);
    assert_contains(pl.rule, "; over the team budget but no local model fits: kept");
    r.prompt_chars = 40;
    pl = plan_ok(p, &r);
    assert_true(pl.downgraded);
    assert_string_equal(pl.rule, "task code_gen -> tier mid: cheapest of 2 that fit; over the "
                                 "team budget (90% >= 80%): local");
    policy_free(p);

    policy *q = make(NULL); /* no budget_downgrade configured */
    r = req_auto("code_gen");
    r.spend_share_pct = 500;
    pl = plan_ok(q, &r);
    assert_false(pl.downgraded);
    policy_free(q);
}

static void test_busy_local_downgrade_keeps_it_last(void **state)
{
    policy *p = make("{\"budget_downgrade\": {\"share_pct\": 50, \"to_tier\": \"budget\"},"
                     " \"tiers\": {\"budget\": [\"llama3.2\", \"claude-haiku-4-5\"], \"mid\": "
                     "[\"claude-sonnet-4-6\"], \"heavy\": [\"claude-opus-4-8\"]}}");
    table[LLAMA].busy = true;
    policy_request r = req_auto("complex_reasoning");
    r.spend_share_pct = 50;
    policy_plan pl = plan_ok(p, &r);
    assert_order(&pl, 2, HAIKU, LLAMA);
    table[LLAMA].busy = false;
    policy_free(p);
}

/* ------------------------------------------------------------ caps, batch */

static void test_output_caps(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("summarize");
    policy_plan pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 500);
    assert_true(pl.output_capped);
    assert_true(pl.batch_eligible);
    assert_int_equal(pl.thinking_cap, -1);

    r.max_tokens = 42; /* under the cap: the request's own */
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 42);
    assert_false(pl.output_capped);

    r.max_tokens = 0;
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 0);

    r.max_tokens = 5000; /* over the cap: bounded by it */
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 500);
    assert_true(pl.output_capped);
    assert_int_equal(pl.est_output_tokens, 500);

    r = req_auto("analysis"); /* no cap for it, no default */
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, -1);
    assert_false(pl.output_capped);
    assert_false(pl.batch_eligible);
    /* output estimated at the default typical output, 500 tokens:
     * gpt-4o 100 × 2.50 $/M + 500 × 10 $/M (Sonnet: 100 × 3 + 500 × 15) */
    assert_int_equal(pl.est_output_tokens, 500);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o");
    assert_int_equal(pl.est_cost_pusd, 100 * 2500000LL + 500 * 10000000LL);
    policy_free(p);

    p = make("{\"default_output_cap\": 1000, \"output_caps\": {\"classify\": 5}}");
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 1000);
    assert_true(pl.output_capped);
    r = req_auto("classify");
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 5);
    r = req_auto(NULL);
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 1000);
    policy_free(p);
}

/* Caps are bounds unless they say "cap": "default"; one function, for
 * every kind of plan (issue 10 e). */
static void test_output_cap_bounds_the_request(void **state)
{
    policy *p = make("{\"output_caps\": {\"classify\": 10, \"draft_writing\": {\"max\": 2000, "
                     "\"cap\": \"default\"}, \"summarize\": {\"max\": 300, \"cap\": "
                     "\"bound\"}}, \"default_output_cap\": 4000}");
    bool applied = false;
    /* a bound: the lower of the two; set when the client has none */
    assert_int_equal(policy_output_cap(p, "classify", false, 5000, &applied), 10);
    assert_true(applied);
    assert_int_equal(policy_output_cap(p, "classify", false, 7, &applied), 7);
    assert_false(applied);
    assert_int_equal(policy_output_cap(p, "classify", false, 10, &applied), 10);
    assert_false(applied);
    assert_int_equal(policy_output_cap(p, "classify", false, -1, &applied), 10);
    assert_true(applied);
    assert_int_equal(policy_output_cap(p, "summarize", false, 301, &applied), 300);
    assert_true(applied);
    /* "cap": "default" on the task: it only fills in */
    assert_int_equal(policy_output_cap(p, "draft_writing", false, 5000, &applied), 5000);
    assert_false(applied);
    assert_int_equal(policy_output_cap(p, "draft_writing", false, -1, &applied), 2000);
    assert_true(applied);
    /* "cap": "default" on the route: every cap only fills in */
    assert_int_equal(policy_output_cap(p, "classify", true, 5000, &applied), 5000);
    assert_false(applied);
    assert_int_equal(policy_output_cap(p, "classify", true, -1, &applied), 10);
    assert_true(applied);
    /* no task, or a task without its own: default_output_cap, a bound too */
    assert_int_equal(policy_output_cap(p, NULL, false, 9000, &applied), 4000);
    assert_true(applied);
    assert_int_equal(policy_output_cap(p, "poetry", false, 100, NULL), 100);
    assert_int_equal(policy_output_cap(p, "", false, -1, NULL), 4000);
    /* no policy: the client's own, never applied */
    assert_int_equal(policy_output_cap(NULL, "classify", false, 5000, &applied), 5000);
    assert_false(applied);
    assert_int_equal(policy_output_cap(NULL, "classify", false, -1, &applied), -1);
    assert_false(applied);

    /* every plan uses it: auto, tier:NAME and a named model */
    policy_request r = req_auto("classify");
    r.max_tokens = 5000;
    policy_plan pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 10);
    assert_true(pl.output_capped);
    r.model = "tier:heavy";
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 10);
    r.model = "gpt-4o-mini";
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 10);
    assert_true(pl.output_capped);
    r.route_cap_default = true; /* the route's "default" is honoured in a plan too */
    r.model = "auto";
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 5000);
    assert_false(pl.output_capped);
    r = req_auto("draft_writing");
    r.max_tokens = 5000;
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 5000);
    assert_false(pl.output_capped);
    /* the default cap, as an object */
    policy *q = make("{\"default_output_cap\": {\"max\": 100, \"cap\": \"default\"}}");
    assert_int_equal(policy_output_cap(q, "classify", false, 5000, NULL), 5000);
    assert_int_equal(policy_output_cap(q, "classify", false, -1, NULL), 100);
    policy_free(q);
    policy_free(p);
}

/* A route of $.routes: its enabled candidates in its order, capped and
 * priced like any plan, never downgraded. */
static void test_route_plan(void **state)
{
    policy *p = make(EXAMPLE);
    static const int cands[] = {SONNET, MINI, HAIKU};
    policy_request r = req_auto("classify");
    r.model = "cheap";
    r.route = "cheap";
    r.route_models = cands;
    r.n_route_models = 3;
    r.max_tokens = 5000;
    r.spend_share_pct = 99;
    table[MINI].enabled = false;
    table[HAIKU].healthy = false;
    policy_plan pl = plan_ok(p, &r);
    assert_order(&pl, 2, SONNET, HAIKU);
    assert_int_equal(pl.n_primary, 2);
    assert_false(pl.downgraded);
    assert_string_equal(pl.rule, "route cheap: its candidates in order");
    assert_string_equal(pl.cand[0].reason, "route cheap #1");
    assert_string_equal(pl.cand[1].reason, "route cheap #2 (unhealthy)");
    assert_int_equal(pl.max_tokens_applied, 10);
    /* Sonnet: 100 × 3 $/M + 10 × 15 $/M */
    assert_int_equal(pl.est_cost_pusd, 100 * 3000000LL + 10 * 15000000LL);
    r.route_cap_default = true;
    pl = plan_ok(p, &r);
    assert_int_equal(pl.max_tokens_applied, 5000);
    table[SONNET].enabled = table[HAIKU].enabled = false;
    policy_plan none;
    char err[256];
    assert_int_equal(policy_plan_request(p, table, N_MODELS, &r, &none, err, sizeof err),
                     POLICY_NO_CANDIDATE);
    assert_contains(err, "route \"cheap\": none of its candidate models has an enabled provider");
    table[SONNET].enabled = table[HAIKU].enabled = table[MINI].enabled = true;
    table[HAIKU].healthy = true;
    policy_free(p);
}

/* Without a cap, the output side is priced from the task's typical output
 * (issue 10 d): a model with the cheaper input but the dearer output must
 * not win a task whose answers are long. */
static void test_typical_output_prices_the_output_side(void **state)
{
    /* A: $1/M in, $20/M out; B: $2/M in, $5/M out */
    static model_price a = {.name = "a", .input = 1000000, .output = 20000000};
    static model_price b = {.name = "b", .input = 2000000, .output = 5000000};
    policy_model t[2] = {
        {.name = "a", .price = &a, .tier = TIER_HEAVY, .enabled = true, .healthy = true},
        {.name = "b", .price = &b, .tier = TIER_HEAVY, .enabled = true, .healthy = true}};
    char err[256];
    json_object *cfg = J("{\"tiers\": {\"heavy\": [\"a\", \"b\"]}, \"default_tier\": \"heavy\","
                         " \"tasks\": {\"agent_orchestration\": \"heavy\", \"classify\": "
                         "\"heavy\"},"
                         " \"typical_output\": {\"agent_orchestration\": 2000, \"classify\": 1},"
                         " \"default_typical_output\": 0}");
    policy *p = policy_new(cfg, t, 2, err, sizeof err);
    json_object_put(cfg);
    if (!p) fail_msg("policy_new: %s", err);
    policy_request q = {.model = "auto",
                        .task = "agent_orchestration",
                        .prompt_chars = 4 * 1000,
                        .max_tokens = -1,
                        .spend_share_pct = -1};
    policy_plan pl;
    assert_int_equal(policy_plan_request(p, t, 2, &q, &pl, err, sizeof err), POLICY_OK);
    /* 1000 in + 2000 out: A 1000 × 1 + 2000 × 20 = $0.041, B 1000 × 2 + 2000 × 5 = $0.012 */
    assert_int_equal(pl.est_output_tokens, 2000);
    assert_string_equal(t[pl.cand[0].model_index].name, "b");
    assert_int_equal(pl.cand[0].est_cost_pusd, 1000 * 2000000LL + 2000 * 5000000LL);
    assert_string_equal(t[pl.cand[1].model_index].name, "a");
    assert_int_equal(pl.cand[1].est_cost_pusd, 1000 * 1000000LL + 2000 * 20000000LL);
    assert_int_not_equal(pl.cand[0].est_cost_pusd, pl.cand[1].est_cost_pusd);
    /* a short typical answer: the input side decides, A */
    q.task = "classify";
    assert_int_equal(policy_plan_request(p, t, 2, &q, &pl, err, sizeof err), POLICY_OK);
    assert_string_equal(t[pl.cand[0].model_index].name, "a");
    /* a max_tokens, after capping, replaces the typical output */
    q.task = "agent_orchestration";
    q.max_tokens = 10;
    assert_int_equal(policy_plan_request(p, t, 2, &q, &pl, err, sizeof err), POLICY_OK);
    assert_int_equal(pl.est_output_tokens, 10);
    assert_string_equal(t[pl.cand[0].model_index].name, "a");
    /* default_typical_output for a task without its own; 0 here: input only */
    q.task = "poetry";
    q.max_tokens = -1;
    assert_int_equal(policy_plan_request(p, t, 2, &q, &pl, err, sizeof err), POLICY_OK);
    assert_int_equal(pl.est_output_tokens, 0);
    assert_string_equal(t[pl.cand[0].model_index].name, "a");
    bool own = true;
    assert_int_equal(policy_typical_output(p, "poetry", &own), 0);
    assert_false(own);
    assert_int_equal(policy_typical_output(p, "agent_orchestration", &own), 2000);
    assert_true(own);
    policy_free(p);

    /* the built-in default (500) already orders the stock heavy tier by the
     * output side: gpt-5.5 ($5 in, $30 out) is no longer taken over Opus
     * ($5 in, $25 out) on list order */
    policy *s = make(NULL);
    policy_request h = req_auto("agent_orchestration");
    pl = plan_ok(s, &h);
    assert_int_equal(pl.est_output_tokens, POLICY_DEFAULT_TYPICAL_OUTPUT);
    assert_string_equal(cand_name(&pl, 0), "claude-opus-4-8");
    assert_string_equal(cand_name(&pl, 1), "gpt-5.5");
    assert_true(pl.cand[0].est_cost_pusd < pl.cand[1].est_cost_pusd);
    assert_int_equal(policy_typical_output(NULL, "x", NULL), POLICY_DEFAULT_TYPICAL_OUTPUT);
    policy_free(s);
}

static void test_rule_is_header_safe(void **state)
{
    policy *p = make(EXAMPLE);
    policy_request r = req_auto("evil\r\nx-injected: 1");
    policy_plan pl = plan_ok(p, &r);
    assert_null(strchr(pl.rule, '\r'));
    assert_null(strchr(pl.rule, '\n'));
    assert_contains(pl.rule, "task evil??x-injected: 1 unmapped");
    r = req_auto("a-very-long-task-name-that-goes-on-and-on-and-on-and-on-and-on-for-ever");
    pl = plan_ok(p, &r);
    assert_true(strlen(pl.rule) < sizeof pl.rule);
    policy_free(p);
}

/* ------------------------------------------------------------ escalation, cascade */

static void test_escalate_tier(void **state)
{
    policy *p = make(EXAMPLE);
    model_tier to = TIER_NONE;
    assert_true(policy_escalate_tier(p, TIER_LOCAL, &to));
    assert_int_equal(to, TIER_BUDGET);
    assert_true(policy_escalate_tier(p, TIER_MID, &to));
    assert_int_equal(to, TIER_HEAVY);
    assert_false(policy_escalate_tier(p, TIER_HEAVY, &to));
    assert_false(policy_escalate_tier(p, TIER_NONE, &to));
    assert_false(policy_escalate_tier(NULL, TIER_MID, &to));
    policy_free(p);

    /* a custom ladder that skips mid */
    p = make("{\"cascade\": {\"escalate_to\": {\"budget\": \"heavy\"}}}");
    assert_true(policy_escalate_tier(p, TIER_BUDGET, &to));
    assert_int_equal(to, TIER_HEAVY);
    assert_false(policy_escalate_tier(p, TIER_MID, &to));
    policy_request r = req_auto("classify");
    policy_plan pl = plan_ok(p, &r);
    for (int i = 0; i < pl.n; i++)
        assert_int_not_equal(pl.cand[i].tier, TIER_MID);
    assert_int_equal(pl.cand[pl.n - 1].tier, TIER_HEAVY);
    policy_free(p);

    /* the default ladder skips a step into an empty tier */
    p = make("{\"tiers\": {\"budget\": [\"gpt-4o-mini\"], \"mid\": [\"gpt-4o\"]}, \"tasks\": {}}");
    assert_false(policy_escalate_tier(p, TIER_MID, &to)); /* heavy is empty */
    assert_true(policy_escalate_tier(p, TIER_LOCAL, &to));
    assert_int_equal(to, TIER_BUDGET);
    policy_free(p);
}

static bool esc(const policy *p, const char *finish, const char *text, bool json)
{
    return policy_cascade_should_escalate(p, finish, text, text ? strlen(text) : 0, json);
}

static void test_cascade_checks(void **state)
{
    policy *p = make(EXAMPLE);
    assert_false(esc(p, "stop", "Paris.", false));
    assert_true(esc(p, "length", "Paris, the capital of", false));
    assert_string_equal(policy_cascade_failed_check(p, "length", "x", 1, false), "length");
    /* empty */
    assert_true(esc(p, "stop", "", false));
    assert_true(esc(p, "stop", " \n\t ", false));
    assert_true(esc(p, "stop", NULL, false));
    assert_string_equal(policy_cascade_failed_check(p, "stop", "", 0, false), "empty");
    /* uncertain marker, after white space; case matters */
    assert_true(esc(p, "stop", "UNCERTAIN: could be either", false));
    assert_true(esc(p, "stop", "\n  UNCERTAIN", false));
    assert_false(esc(p, "stop", "uncertain, but likely A", false));
    assert_false(esc(p, "stop", "It is UNCERTAIN", false));
    assert_false(esc(p, "stop", "UNCERTAI", false));
    assert_string_equal(policy_cascade_failed_check(p, NULL, "UNCERTAIN", 9, false), "uncertain");
    /* json mode */
    assert_false(esc(p, "stop", "{\"label\": \"spam\"}", true));
    assert_false(esc(p, "stop", "  [1, 2]\n", true));
    assert_false(esc(p, "stop", "42", true)); /* a bare number at the end is whole */
    assert_true(esc(p, "stop", "{\"label\": \"spam\"", true));
    assert_true(esc(p, "stop", "Here is the JSON: {}", true));
    assert_true(esc(p, "stop", "{} {}", true));
    assert_true(esc(p, "stop", "{'a': 1}", true));
    assert_false(esc(p, "stop", "{\"label\": \"spam\"", false)); /* not asked for JSON */
    assert_string_equal(policy_cascade_failed_check(p, "stop", "nope", 4, true), "json");
    /* tool calls: no text is their shape, not a failed answer */
    assert_false(esc(p, "tool_calls", "", false));
    assert_false(esc(p, "tool_calls", NULL, true));
    assert_false(esc(p, "tool_calls", "UNCERTAIN", false));
    /* a length-limited slice: only len bytes count */
    const char *s = "{\"a\": 1}garbage";
    assert_false(policy_cascade_should_escalate(p, "stop", s, 8, true));
    assert_true(policy_cascade_should_escalate(p, "stop", s, strlen(s), true));
    policy_free(p);
}

static void test_cascade_configured_checks(void **state)
{
    policy *p = make("{\"cascade\": {\"checks\": [\"json\"], \"uncertain_marker\": \"??\"}}");
    assert_true(policy_cascade_enabled(p));
    assert_false(esc(p, "length", "cut", false));
    assert_false(esc(p, "stop", "", false));
    assert_false(esc(p, "stop", "UNCERTAIN", false));
    assert_true(esc(p, "stop", "not json", true));
    policy_free(p);

    p = make("{\"cascade\": {\"checks\": [\"uncertain\"], \"uncertain_marker\": \"[unsure]\"}}");
    assert_true(esc(p, "stop", "[unsure] maybe", false));
    assert_false(esc(p, "stop", "UNCERTAIN", false));
    policy_free(p);

    /* streams are cascaded unless the config says not */
    p = make("{\"cascade\": {}}");
    assert_true(policy_cascade_streams(p));
    policy_free(p);
    p = make("{\"cascade\": {\"streams\": false}}");
    assert_true(policy_cascade_enabled(p));
    assert_false(policy_cascade_streams(p));
    policy_free(p);

    p = make("{\"cascade\": {\"enabled\": false}}");
    assert_false(policy_cascade_enabled(p));
    assert_false(policy_cascade_streams(p));
    assert_false(esc(p, "length", "", true));
    assert_null(policy_cascade_failed_check(p, "length", "", 0, true));
    /* escalation tiers are still fallbacks */
    policy_request r = req_auto("classify");
    policy_plan pl = plan_ok(p, &r);
    assert_true(pl.n > pl.n_primary);
    policy_free(p);
    assert_false(esc(NULL, "length", "", false));
}

/* A tier with more models than the plan has places still leaves one to
 * each escalation tier: the cascade (and failover upward) has somewhere to
 * go. Found by bench/routing with 20 budget models. */
static void test_escalation_keeps_a_place(void **state)
{
    static const char *const names[] = {
        "gpt-4o-mini",   "claude-haiku-4-5",      "gemini-2.5-flash",  "gpt-4.1-mini",
        "gpt-5-mini",    "gpt-5.4-mini",          "gpt-5.4-nano",      "gemini-2.5-flash-lite",
        "deepseek-chat", "gemini-3.1-flash-lite", "claude-sonnet-4-6", "claude-opus-4-8"};
    enum { N = sizeof names / sizeof names[0] };
    policy_model many[N];
    for (int i = 0; i < N; i++) {
        const model_price *pr = price_of(names[i]);
        many[i] = (policy_model){.name = names[i],
                                 .price = pr,
                                 .context_window = pr->context_window,
                                 .tier = pr->tier,
                                 .enabled = true,
                                 .healthy = true};
    }
    json_object *r = J("{\"default_tier\": \"budget\", \"tasks\": {},"
                       " \"tiers\": {\"budget\": [\"gpt-4o-mini\", \"claude-haiku-4-5\","
                       " \"gemini-2.5-flash\", \"gpt-4.1-mini\", \"gpt-5-mini\", \"gpt-5.4-mini\","
                       " \"gpt-5.4-nano\", \"gemini-2.5-flash-lite\", \"deepseek-chat\","
                       " \"gemini-3.1-flash-lite\"], \"mid\": [\"claude-sonnet-4-6\"],"
                       " \"heavy\": [\"claude-opus-4-8\"]}, \"cascade\": {}}");
    char err[512] = "";
    policy *p = policy_new(r, many, N, err, sizeof err);
    json_object_put(r);
    if (!p) fail_msg("%s", err);
    policy_request rq = {.model = "auto", .max_tokens = -1, .spend_share_pct = -1};
    policy_plan pl;
    assert_int_equal(policy_plan_request(p, many, N, &rq, &pl, err, sizeof err), POLICY_OK);
    assert_int_equal(pl.n, POLICY_MAX_CAND);
    assert_int_equal(pl.n_primary, POLICY_MAX_CAND - 2);
    assert_int_equal(pl.cand[POLICY_MAX_CAND - 2].model_index, 10); /* sonnet: mid */
    assert_int_equal(pl.cand[POLICY_MAX_CAND - 1].model_index, 11); /* opus: heavy */
    assert_int_equal(policy_escalation_index(p, &pl, 0), POLICY_MAX_CAND - 2);
    policy_free(p);
}

/* ------------------------------------------------------------ config errors */

static void expect_error(const char *routing, const char *want)
{
    char err[512] = "";
    json_object *r = J(routing);
    policy *p = policy_new(r, table, N_MODELS, err, sizeof err);
    json_object_put(r);
    if (p) {
        policy_free(p);
        fail_msg("accepted %s (wanted: %s)", routing, want);
    }
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("for %s\n  got:  %s\n  want: %s...", routing, err, want);
}

static void test_config_errors(void **state)
{
    expect_error("{\"tiers\": {\"budget\": [\"gpt-4o-mini\", \"x\"]}}",
                 "$.routing.tiers.budget[1]: no model named \"x\" in $.models");
    expect_error("{\"tiers\": {\"budget\": [\"gpt-4o-mini\", 3]}}",
                 "$.routing.tiers.budget[1]: expected a model name, got int");
    expect_error("{\"tiers\": {\"budget\": [\"gpt-4o-mini\", \"gpt-4o-mini\"]}}",
                 "$.routing.tiers.budget[1]: \"gpt-4o-mini\" is listed twice");
    expect_error("{\"tiers\": {\"budget\": \"gpt-4o-mini\"}}",
                 "$.routing.tiers.budget: expected a list, got string");
    expect_error("{\"tiers\": {\"premium\": []}}", "$.routing.tiers.premium: unknown tier");
    expect_error("{\"tiers\": []}", "$.routing.tiers: expected an object, got array");
    expect_error("{\"tasks\": {\"classify\": \"gold\"}}",
                 "$.routing.tasks.classify: unknown tier \"gold\" (expected local, budget, mid "
                 "or heavy)");
    expect_error("{\"tasks\": {\"classify\": 1}}",
                 "$.routing.tasks.classify: expected a tier name");
    expect_error("{\"tiers\": {\"budget\": [\"gpt-4o-mini\"], \"mid\": [\"gpt-4o\"]}, "
                 "\"tasks\": {\"classify\": \"budget\", \"architecture\": \"heavy\"}}",
                 "$.routing.tasks.architecture: tier \"heavy\" has no models (list some in "
                 "$.routing.tiers.heavy)");
    expect_error("{\"tiers\": {\"budget\": [\"gpt-4o-mini\"], \"mid\": [\"gpt-4o\"]}}",
                 "$.routing.tasks: not given, and the default maps agent_orchestration to tier "
                 "\"heavy\", which has no models");
    expect_error("{\"tiers\": {\"budget\": [\"gpt-4o-mini\"]}, \"tasks\": {}}",
                 "$.routing.default_tier: not given, and the default (mid) has no models");
    expect_error("{\"default_tier\": \"ultra\"}", "$.routing.default_tier: unknown tier \"ultra\"");
    expect_error("{\"cascade\": {\"escalate_to\": {\"budget\": \"mid\", \"mid\": \"budget\"}}}",
                 "$.routing.cascade.escalate_to: a cycle: budget -> mid -> budget");
    expect_error("{\"cascade\": {\"escalate_to\": {\"local\": \"budget\", \"budget\": \"mid\", "
                 "\"mid\": \"heavy\", \"heavy\": \"local\"}}}",
                 "$.routing.cascade.escalate_to: a cycle: budget -> mid -> heavy -> local -> "
                 "budget");
    expect_error("{\"cascade\": {\"streams\": \"yes\"}}", "$.routing.cascade.streams: ");
    expect_error("{\"cascade\": {\"escalate_to\": {\"mid\": \"mid\"}}}",
                 "$.routing.cascade.escalate_to: a cycle: mid -> mid");
    expect_error("{\"cascade\": {\"escalate_to\": {\"gold\": \"mid\"}}}",
                 "$.routing.cascade.escalate_to.gold: unknown tier");
    expect_error("{\"cascade\": {\"escalate_to\": {\"budget\": \"mid\"}}, \"tiers\": {\"budget\": "
                 "[\"gpt-4o-mini\"]}, \"tasks\": {}, \"default_tier\": \"budget\"}",
                 "$.routing.cascade.escalate_to.budget: tier \"mid\" has no models");
    expect_error("{\"cascade\": {\"checks\": [\"length\", \"vibes\"]}}",
                 "$.routing.cascade.checks[1]: expected one of length, json, uncertain, empty "
                 "(got \"vibes\")");
    expect_error("{\"cascade\": {\"uncertain_marker\": \"\"}}",
                 "$.routing.cascade.uncertain_marker: expected a non-empty string");
    expect_error("{\"cascade\": {\"enabled\": \"yes\"}}",
                 "$.routing.cascade.enabled: expected true or false, got string");
    expect_error("{\"cascade\": {\"retry\": 1}}", "$.routing.cascade.retry: unknown key");
    expect_error("{\"output_caps\": {\"classify\": 0}}",
                 "$.routing.output_caps.classify: expected an integer from 1 to 100000000 (got 0)");
    expect_error("{\"output_caps\": {\"classify\": \"10\"}}",
                 "$.routing.output_caps.classify: expected a number of tokens, or {\"max\": N, "
                 "\"cap\": \"bound\" or \"default\"}, got string");
    expect_error("{\"output_caps\": {\"draft\": {\"cap\": \"default\"}}}",
                 "$.routing.output_caps.draft.max: required");
    expect_error("{\"output_caps\": {\"draft\": {\"max\": 0}}}",
                 "$.routing.output_caps.draft.max: expected an integer from 1");
    expect_error("{\"output_caps\": {\"draft\": {\"max\": 10, \"cap\": \"soft\"}}}",
                 "$.routing.output_caps.draft.cap: expected \"bound\" (the cap bounds the "
                 "request's max_tokens) or \"default\"");
    expect_error("{\"output_caps\": {\"draft\": {\"max\": 10, \"mode\": \"default\"}}}",
                 "$.routing.output_caps.draft.mode: unknown key (expected max or cap)");
    expect_error("{\"default_output_cap\": {\"max\": 10, \"cap\": 1}}",
                 "$.routing.default_output_cap.cap: expected \"bound\"");
    expect_error("{\"typical_output\": {\"code_gen\": -1}}",
                 "$.routing.typical_output.code_gen: expected an integer from 0");
    expect_error("{\"typical_output\": [1]}",
                 "$.routing.typical_output: expected an object, got array");
    expect_error("{\"default_typical_output\": \"long\"}",
                 "$.routing.default_typical_output: expected an integer from 0 to 100000000, "
                 "got string");
    expect_error("{\"output_caps\": {\"classify\": 10.5}}",
                 "$.routing.output_caps.classify: expected an integer");
    expect_error("{\"thinking_caps\": {\"complex_reasoning\": -1}}",
                 "$.routing.thinking_caps.complex_reasoning: expected an integer from 0");
    expect_error("{\"default_output_cap\": 0}",
                 "$.routing.default_output_cap: expected an integer");
    expect_error("{\"budget_downgrade\": {\"to_tier\": \"local\"}}",
                 "$.routing.budget_downgrade.share_pct: required");
    expect_error("{\"budget_downgrade\": {\"share_pct\": 80}}",
                 "$.routing.budget_downgrade.to_tier: required");
    expect_error("{\"budget_downgrade\": {\"share_pct\": 0, \"to_tier\": \"local\"}}",
                 "$.routing.budget_downgrade.share_pct: expected an integer from 1 to 1000");
    expect_error("{\"budget_downgrade\": {\"share_pct\": 80, \"to_tier\": \"free\"}}",
                 "$.routing.budget_downgrade.to_tier: unknown tier \"free\"");
    expect_error("{\"budget_downgrade\": {\"share_pct\": 80, \"to_tier\": \"local\"}, "
                 "\"tiers\": {\"local\": [], \"budget\": [\"gpt-4o-mini\"], \"mid\": "
                 "[\"gpt-4o\"], \"heavy\": [\"gpt-5.5\"]}}",
                 "$.routing.budget_downgrade.to_tier: tier \"local\" has no models");
    expect_error("{\"budget_downgrade\": {\"share\": 80}}",
                 "$.routing.budget_downgrade.share: unknown key");
    expect_error("{\"batch_tasks\": [\"summarize\", 7]}",
                 "$.routing.batch_tasks[1]: expected a task name, got 7");
    expect_error("{\"batch_tasks\": \"summarize\"}", "$.routing.batch_tasks: expected a list");
    expect_error("{\"prefer_local\": 1}",
                 "$.routing.prefer_local: expected true or false, got int");
    expect_error("{\"baseline\": \"gpt-9\"}",
                 "$.routing.baseline: no model named \"gpt-9\" in $.models");
    expect_error("{\"tierz\": {}}", "$.routing.tierz: unknown key (expected default_tier, tasks");
    expect_error("[]", "$.routing: expected an object, got array");
}

/* A model that cannot take the request (a capability it lacks, or a
 * dialect that refuses a parameter) is skipped wherever it is met: in the
 * tier, in the escalation tiers, in a route; listed in plan.skipped; when
 * nothing is left, POLICY_UNFIT. */
static void test_skips_models_that_cannot_take_it(void **state)
{
    policy *p = make(EXAMPLE);
    enum { NEED = 1u << 3, OTHER = 1u << 0 };
    for (int i = 0; i < N_MODELS; i++) {
        table[i].caps = NEED | OTHER;
        table[i].dialect = 0;
    }
    table[HAIKU].caps = OTHER; /* lacks NEED */
    table[FLASH].dialect = 2;  /* a dialect that refuses a parameter */
    policy_request r = req_auto("classify");
    r.needs = NEED;
    r.refused_dialects = 1u << 2;
    policy_plan pl = plan_ok(p, &r);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o-mini");
    for (int i = 0; i < pl.n; i++) {
        assert_int_not_equal(pl.cand[i].model_index, HAIKU);
        assert_int_not_equal(pl.cand[i].model_index, FLASH);
    }
    assert_int_equal(pl.n_primary, 1);
    assert_int_equal(pl.n_skipped, 2);
    assert_true((pl.skipped[0] == HAIKU && pl.skipped[1] == FLASH) ||
                (pl.skipped[0] == FLASH && pl.skipped[1] == HAIKU));

    /* the whole budget tier unfit: the escalation tier answers */
    table[MINI].caps = OTHER;
    pl = plan_ok(p, &r);
    assert_int_equal(pl.n_primary, 0);
    assert_string_equal(cand_name(&pl, 0), "gpt-4o");
    assert_int_equal(pl.n_skipped, 3);

    /* nothing can: POLICY_UNFIT, with what was skipped */
    for (int i = 0; i < N_MODELS; i++)
        table[i].caps = OTHER;
    char err[256];
    assert_int_equal(policy_plan_request(p, table, N_MODELS, &r, &pl, err, sizeof err),
                     POLICY_UNFIT);
    assert_int_equal(pl.n, 0);
    assert_true(pl.n_skipped >= 3);
    assert_contains(err, "can take this request");

    /* a route skips the same way */
    table[SONNET].caps = NEED;
    int route[] = {HAIKU, SONNET};
    policy_request rr = {.model = "r",
                         .route = "r",
                         .route_models = route,
                         .n_route_models = 2,
                         .prompt_chars = 40,
                         .max_tokens = -1,
                         .spend_share_pct = -1,
                         .needs = NEED};
    pl = plan_ok(p, &rr);
    assert_order(&pl, 1, SONNET);
    assert_int_equal(pl.n_skipped, 1);
    assert_int_equal(pl.skipped[0], HAIKU);
    table[SONNET].caps = OTHER;
    assert_int_equal(policy_plan_request(p, table, N_MODELS, &rr, &pl, err, sizeof err),
                     POLICY_UNFIT);
    assert_contains(err, "route \"r\"");

    /* a request that needs nothing: every model as before */
    r.needs = 0;
    r.refused_dialects = 0;
    pl = plan_ok(p, &r);
    assert_int_equal(pl.n_skipped, 0);
    assert_int_equal(pl.n_primary, 3);
    policy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_routing_uses_price_table_tiers),
        cmocka_unit_test(test_example_config_parses),
        cmocka_unit_test(test_concrete_model_honoured),
        cmocka_unit_test(test_unknown_model_is_an_error),
        cmocka_unit_test(test_auto_tier_from_task),
        cmocka_unit_test(test_tier_header_and_tier_model),
        cmocka_unit_test(test_default_tier),
        cmocka_unit_test(test_custom_tasks_replace_defaults),
        cmocka_unit_test(test_cheapest_first_with_escalation),
        cmocka_unit_test(test_exact_estimates),
        cmocka_unit_test(test_order_depends_on_token_mix),
        cmocka_unit_test(test_context_window_filter),
        cmocka_unit_test(test_disabled_and_unhealthy_skipped),
        cmocka_unit_test(test_primary_empty_falls_back_to_escalation),
        cmocka_unit_test(test_no_candidate),
        cmocka_unit_test(test_at_most_eight_candidates),
        cmocka_unit_test(test_local_first),
        cmocka_unit_test(test_busy_local_goes_last),
        cmocka_unit_test(test_local_too_small_skipped),
        cmocka_unit_test(test_prefer_local_off_orders_by_cost),
        cmocka_unit_test(test_budget_downgrade),
        cmocka_unit_test(test_busy_local_downgrade_keeps_it_last),
        cmocka_unit_test(test_output_caps),
        cmocka_unit_test(test_output_cap_bounds_the_request),
        cmocka_unit_test(test_route_plan),
        cmocka_unit_test(test_typical_output_prices_the_output_side),
        cmocka_unit_test(test_rule_is_header_safe),
        cmocka_unit_test(test_escalate_tier),
        cmocka_unit_test(test_cascade_checks),
        cmocka_unit_test(test_cascade_configured_checks),
        cmocka_unit_test_setup(test_escalation_keeps_a_place, setup),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test_setup(test_skips_models_that_cannot_take_it, setup),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}

/* Unit tests for providers/pricing.c and the built-in table (providers/price_table.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "providers/pricing.h"

static const model_price *must_find(const char *name)
{
    const model_price *p = pricing_default_lookup(name);
    assert_non_null(p);
    return p;
}

static int64_t cost(const char *model, usage_record u, bool batch)
{
    return pricing_cost_pusd(must_find(model), &u, batch);
}

/* ------------------------------------------------------------ cost */

static void test_sonnet_plain(void **state)
{
    /* $3/$15 per Mtok: 1,500 in and 500 out cost $0.0120 exactly. */
    usage_record u = {.input_uncached = 1500, .output = 500};
    assert_int_equal(cost("claude-sonnet-4-5", u, false), 12000000000LL);
}

static void test_cache_read_is_ninety_percent_off(void **state)
{
    usage_record cached = {.cache_read = 2000};
    usage_record plain = {.input_uncached = 2000};
    assert_int_equal(cost("claude-sonnet-4-5", cached, false), 600000000LL);
    assert_int_equal(cost("claude-sonnet-4-5", plain, false), 6000000000LL);
}

static void test_anthropic_cache_writes(void **state)
{
    /* 5-minute writes 1.25× ($3.75), 1-hour writes 2× ($6). */
    usage_record w5 = {.cache_write_5m = 1000};
    usage_record w1 = {.cache_write_1h = 1000};
    assert_int_equal(cost("claude-sonnet-4-5", w5, false), 3750000000LL);
    assert_int_equal(cost("claude-sonnet-4-5", w1, false), 6000000000LL);

    usage_record all = {.input_uncached = 100,
                        .cache_read = 10000,
                        .cache_write_5m = 2000,
                        .cache_write_1h = 1000,
                        .output = 300};
    /* haiku: $0.0001 + $0.001 + $0.0025 + $0.002 + $0.0015 = $0.0071 */
    int64_t want =
        100 * 1000000LL + 10000 * 100000LL + 2000 * 1250000LL + 1000 * 2000000LL + 300 * 5000000LL;
    assert_int_equal(cost("claude-haiku-4-5", all, false), want);
    assert_int_equal(want, 7100000000LL);
}

static void test_cache_write_defaults_to_input(void **state)
{
    model_price p = {.name = "x", .input = 2000000, .output = 1};
    usage_record u = {.cache_write_5m = 10, .cache_write_1h = 5};
    assert_int_equal(pricing_cost_pusd(&p, &u, false), 15 * 2000000LL);
}

static void test_openai_cached_half(void **state)
{
    usage_record cached = {.cache_read = 1000};
    usage_record plain = {.input_uncached = 1000};
    assert_int_equal(cost("gpt-4o-mini", cached, false), 75000000LL);
    assert_int_equal(cost("gpt-4o-mini", plain, false), 150000000LL);
}

static void test_long_context_threshold(void **state)
{
    /* Exactly at the threshold: plain prices. */
    usage_record at = {.input_uncached = 150000, .cache_read = 50000, .output = 1000};
    assert_int_equal(cost("claude-sonnet-4-5", at, false),
                     150000 * 3000000LL + 50000 * 300000LL + 1000 * 15000000LL);

    /* One token above, counted through the cache bucket: the whole request
     * is re-priced, input side 2×, output 1.5×. */
    usage_record above = {.input_uncached = 150000, .cache_read = 50001, .output = 1000};
    assert_int_equal(cost("claude-sonnet-4-5", above, false),
                     (150000 * 3000000LL + 50001 * 300000LL) * 2 + 1000 * 15000000LL * 3 / 2);
    assert_int_equal(cost("claude-sonnet-4-5", above, false), 952500600000LL);

    /* Cache writes count toward the threshold too. */
    usage_record writes = {.input_uncached = 200000, .cache_write_1h = 1};
    assert_int_equal(cost("claude-sonnet-4-5", writes, false),
                     (200000 * 3000000LL + 6000000LL) * 2);

    /* Sonnet 4.6 bills flat at 1M. */
    usage_record big = {.input_uncached = 500000};
    assert_int_equal(cost("claude-sonnet-4-6", big, false), 500000 * 3000000LL);
}

static void test_long_context_gemini_pro(void **state)
{
    usage_record below = {.input_uncached = 200000, .output = 1000};
    assert_int_equal(cost("gemini-2.5-pro", below, false), 200000 * 1250000LL + 1000 * 10000000LL);
    /* Above 200k: $2.50 in, $15 out, $0.25 cached — the documented figures. */
    usage_record above = {.input_uncached = 200001, .output = 1000};
    assert_int_equal(cost("gemini-2.5-pro", above, false), 200001 * 2500000LL + 1000 * 15000000LL);
    usage_record cached = {.input_uncached = 1, .cache_read = 200000};
    assert_int_equal(cost("gemini-2.5-pro", cached, false), 2500000LL + 200000 * 250000LL);

    /* gpt-5.4 above 272k. */
    usage_record g = {.input_uncached = 272001, .output = 10};
    assert_int_equal(cost("gpt-5.4", g, false), 272001 * 5000000LL + 10 * 22500000LL);
}

static void test_batch_discount(void **state)
{
    usage_record u = {.input_uncached = 1000, .output = 1000};
    assert_int_equal(cost("gpt-4o", u, false), 12500000000LL);
    assert_int_equal(cost("gpt-4o", u, true), 6250000000LL);
    assert_int_equal(cost("claude-opus-4-5", u, true), (5000000000LL + 25000000000LL) / 2);
    /* DeepSeek has no batch price. */
    assert_int_equal(cost("deepseek-chat", u, true), cost("deepseek-chat", u, false));

    /* Long context and batch together. */
    usage_record lc = {.input_uncached = 200001, .output = 1000};
    assert_int_equal(cost("gemini-2.5-pro", lc, true), (200001 * 2500000LL + 15000000000LL) / 2);
}

static void test_reasoning_inside_output(void **state)
{
    usage_record with = {.input_uncached = 10, .output = 1000, .reasoning = 800};
    usage_record without = {.input_uncached = 10, .output = 1000};
    assert_int_equal(cost("gpt-5", with, false), cost("gpt-5", without, false));
    assert_int_equal(cost("gpt-5", with, false), 10 * 1250000LL + 1000 * 10000000LL);
}

static void test_zero_and_negative(void **state)
{
    usage_record zero = {0};
    assert_int_equal(cost("claude-opus-4-1", zero, false), 0);
    assert_int_equal(cost("claude-opus-4-1", zero, true), 0);
    usage_record neg = {.input_uncached = -5, .cache_read = -1, .output = -100};
    assert_int_equal(cost("claude-opus-4-1", neg, false), 0);
    usage_record mixed = {.input_uncached = -5, .output = 2};
    assert_int_equal(cost("claude-opus-4-1", mixed, false), 2 * 75000000LL);
    assert_int_equal(pricing_cost_pusd(NULL, &zero, false), 0);
    assert_int_equal(pricing_cost_pusd(must_find("gpt-4o"), NULL, false), 0);
}

static void test_local_models_free(void **state)
{
    usage_record u = {.input_uncached = 100000, .output = 100000};
    assert_int_equal(cost("llama3.2", u, false), 0);
    assert_int_equal(cost("qwen2.5", u, false), 0);
    assert_int_equal(cost("mistral", u, false), 0);
}

static void test_overflow_saturates(void **state)
{
    usage_record huge = {.input_uncached = INT64_MAX,
                         .cache_read = INT64_MAX,
                         .cache_write_5m = INT64_MAX,
                         .cache_write_1h = INT64_MAX,
                         .output = INT64_MAX};
    assert_int_equal(cost("claude-opus-4-1", huge, false), INT64_MAX);
    assert_int_equal(cost("claude-sonnet-4-5", huge, true), INT64_MAX);

    /* 1.2e19 pusd does not fit an int64 but half of it does: exact, not
     * saturated, because the intermediate is 128-bit. */
    model_price p = {.name = "x", .output = 2000000, .batch_discount_pct = 50};
    usage_record u = {.output = 6000000000000LL};
    assert_int_equal(pricing_cost_pusd(&p, &u, false), INT64_MAX);
    assert_int_equal(pricing_cost_pusd(&p, &u, true), 6000000000000000000LL);

    /* A broken row cannot make a cost negative. */
    model_price bad = {.name = "bad", .input = -5, .output = 10, .batch_discount_pct = 300};
    usage_record one = {.input_uncached = 1, .output = 1};
    assert_int_equal(pricing_cost_pusd(&bad, &one, false), 10);
    assert_int_equal(pricing_cost_pusd(&bad, &one, true), 0);
}

static void test_rounding_truncates(void **state)
{
    /* 1 token at 1 µ$/Mtok × 150% = 1.5 pusd → 1 (a fraction is dropped). */
    model_price p = {.name = "x",
                     .input = 1,
                     .output = 1,
                     .long_ctx_threshold = 1,
                     .long_ctx_input_pct = 100,
                     .long_ctx_output_pct = 150};
    usage_record u = {.input_uncached = 2, .output = 1};
    assert_int_equal(pricing_cost_pusd(&p, &u, false), 2 + 1);
    usage_record v = {.input_uncached = 2, .output = 3};
    assert_int_equal(pricing_cost_pusd(&p, &v, false), 2 + 4); /* 4.5 → 4 */

    /* A threshold without percentages leaves prices unchanged. */
    model_price q = {.name = "y", .input = 10, .output = 10, .long_ctx_threshold = 1};
    assert_int_equal(pricing_cost_pusd(&q, &v, false), 50);
}

/* ------------------------------------------------------------ parsing */

static void parse_ok(const char *s, int64_t want)
{
    int64_t got = -42;
    if (!pricing_parse_usd_per_mtok(s, &got)) fail_msg("\"%s\" rejected", s);
    if (got != want) fail_msg("\"%s\" → %lld, want %lld", s, (long long)got, (long long)want);
}

static void parse_bad(const char *s)
{
    int64_t got = -42;
    if (pricing_parse_usd_per_mtok(s, &got)) fail_msg("\"%s\" accepted as %lld", s, (long long)got);
}

static void test_parse_usd_per_mtok(void **state)
{
    int64_t v = 0;
    parse_ok("3", 3000000);
    parse_ok("0.075", 75000);
    parse_ok("0.0028", 2800);
    parse_ok("0.0145", 14500);
    parse_ok("22.50", 22500000);
    parse_ok("0", 0);
    parse_ok("0.0", 0);
    parse_ok("000.30", 300000);
    parse_ok("0.000001", 1);
    parse_ok("0.0750000", 75000); /* trailing zeros add no precision */
    parse_ok(".5", 500000);
    parse_ok("5.", 5000000);
    parse_ok("1e-3", 1000);
    parse_ok("2.5E1", 25000000);
    parse_ok("7.5e+0", 7500000);
    parse_ok("1e-6", 1);
    parse_ok("0e400", 0);
    parse_ok("9223372036854.775807", INT64_MAX);

    assert_false(pricing_parse_usd_per_mtok(NULL, &v));
    parse_bad("");
    parse_bad(".");
    parse_bad("-1");
    parse_bad("-0");
    parse_bad("+3");
    parse_bad(" 3");
    parse_bad("3 ");
    parse_bad("abc");
    parse_bad("3abc");
    parse_bad("1.2.3");
    parse_bad("0x10");
    parse_bad("inf");
    parse_bad("nan");
    parse_bad("1e");
    parse_bad("1e+");
    parse_bad("e5");
    parse_bad("0.0000001"); /* 7 decimals */
    parse_bad("0.0000015");
    parse_bad("1e-7");
    parse_bad("9223372036854.775808"); /* one past INT64_MAX µ$ */
    parse_bad("1e18");
    parse_bad("1e401");
    parse_bad("99999999999999999999999999999999999999999999999999"); /* > 40 digits */

    assert_false(pricing_parse_usd_per_mtok("1", NULL));
    assert_true(pricing_parse_usd_per_mtok("1", &v));
}

/* ------------------------------------------------------------ tiers */

static void test_tiers(void **state)
{
    static const struct {
        const char *name;
        model_tier tier;
    } cases[] = {
        {"budget", TIER_BUDGET}, {"mid", TIER_MID}, {"heavy", TIER_HEAVY}, {"local", TIER_LOCAL}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        model_tier t = TIER_NONE;
        assert_true(pricing_tier_parse(cases[i].name, &t));
        assert_int_equal(t, cases[i].tier);
        assert_string_equal(pricing_tier_name(cases[i].tier), cases[i].name);
    }
    model_tier t = TIER_MID;
    assert_false(pricing_tier_parse("none", &t));
    assert_false(pricing_tier_parse("Budget", &t));
    assert_false(pricing_tier_parse("", &t));
    assert_false(pricing_tier_parse(NULL, &t));
    assert_int_equal(t, TIER_MID);
    assert_string_equal(pricing_tier_name(TIER_NONE), "none");
    assert_string_equal(pricing_tier_name((model_tier)99), "none");
}

/* ------------------------------------------------------------ lookup */

static void test_lookup(void **state)
{
    assert_string_equal(must_find("claude-haiku-4-5")->name, "claude-haiku-4-5");
    assert_string_equal(must_find("claude-haiku-4-5-20251001")->name, "claude-haiku-4-5");
    assert_string_equal(must_find("gpt-4o-2024-08-06")->name, "gpt-4o");
    assert_string_equal(must_find("gpt-4o-mini")->name, "gpt-4o-mini");
    assert_string_equal(must_find("gpt-4o-mini-2024-07-18")->name, "gpt-4o-mini");
    assert_null(pricing_default_lookup("claude-haiku-4-5-2025100"));
    assert_null(pricing_default_lookup("claude-haiku-4-5-2025100x"));
    assert_null(pricing_default_lookup("claude-haiku-4"));
    assert_null(pricing_default_lookup("-20251001"));
    assert_null(pricing_default_lookup("no-such-model"));
    assert_null(pricing_default_lookup(""));
    assert_null(pricing_default_lookup(NULL));
}

/* ------------------------------------------------------------ table */

static void test_table_rows_sane(void **state)
{
    const model_price *t = pricing_default_table();
    int n = 0;
    for (const model_price *p = t; p->name; p++, n++) {
        const char *nm = p->name;
        if (p->input < 0 || p->output < 0 || p->cached_input < 0)
            fail_msg("%s: negative price", nm);
        if (p->cached_input > p->input) fail_msg("%s: cached above input", nm);
        if (p->cache_write_5m && p->cache_write_5m < p->input)
            fail_msg("%s: 5m write below input", nm);
        if (p->cache_write_1h && p->cache_write_1h < p->cache_write_5m)
            fail_msg("%s: 1h write below 5m write", nm);
        if (p->context_window <= 0) fail_msg("%s: no context window", nm);
        /* embedding models: input only, and no tier ("auto" never picks one) */
        if (p->embedding && (p->output || p->tier != TIER_NONE))
            fail_msg("%s: an embedding model with output prices or a tier", nm);
        if (p->tier == TIER_NONE && !p->embedding) fail_msg("%s: no tier", nm);
        if (!p->effective_from || strlen(p->effective_from) != 10 || p->effective_from[4] != '-')
            fail_msg("%s: bad effective_from", nm);
        if (p->batch_discount_pct < 0 || p->batch_discount_pct > 100)
            fail_msg("%s: bad batch discount", nm);
        if (p->long_ctx_threshold && (p->long_ctx_input_pct < 100 || p->long_ctx_output_pct < 100 ||
                                      p->long_ctx_threshold >= p->context_window))
            fail_msg("%s: bad long-context rule", nm);
        if (!p->embedding && (p->tier == TIER_LOCAL) != (p->input == 0 && p->output == 0))
            fail_msg("%s: local iff free", nm);
        for (const model_price *q = t; q < p; q++)
            if (strcmp(q->name, p->name) == 0) fail_msg("%s: duplicate", nm);
        assert_ptr_equal(pricing_default_lookup(nm), p);
    }
    assert_true(n >= 30);
}

static void test_table_has_every_model(void **state)
{
    static const char *const names[] = {
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
        "claude-sonnet-4-6",
        "claude-opus-4-5",
        "claude-opus-4-6",
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-opus-4-1",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-5",
        "gpt-5.1",
        "gpt-5-mini",
        "gpt-5.4",
        "gpt-5.4-mini",
        "gpt-5.4-nano",
        "gpt-5.5",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-3-flash",
        "gemini-3.1-pro",
        "gemini-3.1-flash-lite",
        "deepseek-chat",
        "deepseek-reasoner",
        "deepseek-v4-flash",
        "deepseek-v4-pro",
        "llama3.2",
        "qwen2.5",
        "mistral",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!pricing_default_lookup(names[i])) fail_msg("%s missing", names[i]);
}

/* The table's USD() conversion must agree with the exact parser. */
static void check_row(const char *name, const char *in, const char *cached, const char *out)
{
    const model_price *p = must_find(name);
    int64_t v;
    assert_true(pricing_parse_usd_per_mtok(in, &v));
    assert_int_equal(p->input, v);
    assert_true(pricing_parse_usd_per_mtok(cached, &v));
    assert_int_equal(p->cached_input, v);
    assert_true(pricing_parse_usd_per_mtok(out, &v));
    assert_int_equal(p->output, v);
}

static void test_table_figures(void **state)
{
    check_row("claude-haiku-4-5", "1.00", "0.10", "5.00");
    check_row("claude-opus-4-1", "15", "1.50", "75");
    check_row("gpt-4o-mini", "0.15", "0.075", "0.60");
    check_row("gpt-5", "1.25", "0.125", "10");
    check_row("gpt-5.4-nano", "0.20", "0.02", "1.25");
    check_row("gemini-2.5-flash", "0.30", "0.03", "2.50");
    check_row("deepseek-v4-flash", "0.14", "0.0028", "0.28");
    check_row("deepseek-v4-pro", "1.74", "0.0145", "3.48");

    const model_price *s = must_find("claude-sonnet-4-5");
    assert_int_equal(s->cache_write_5m, 3750000);
    assert_int_equal(s->cache_write_1h, 6000000);
    assert_int_equal(must_find("claude-opus-4-1")->cache_write_5m, 18750000);
    assert_int_equal(must_find("gpt-4o")->cache_write_5m, 0);

    assert_int_equal(must_find("gpt-4o")->batch_discount_pct, 50);
    assert_int_equal(must_find("claude-haiku-4-5")->batch_discount_pct, 50);
    assert_int_equal(must_find("gemini-2.5-flash")->batch_discount_pct, 50);
    assert_int_equal(must_find("deepseek-chat")->batch_discount_pct, 0);

    assert_non_null(must_find("gemini-2.5-flash")->note);
    assert_non_null(strstr(must_find("llama3.2")->note, "price 0 unless configured"));

    assert_int_equal(must_find("claude-haiku-4-5")->tier, TIER_BUDGET);
    assert_int_equal(must_find("gpt-5.4-mini")->tier, TIER_BUDGET);
    assert_int_equal(must_find("gpt-5.1")->tier, TIER_MID);
    assert_int_equal(must_find("gemini-3.1-pro")->tier, TIER_MID);
    assert_int_equal(must_find("claude-opus-4-8")->tier, TIER_HEAVY);
    assert_int_equal(must_find("gpt-5.5")->tier, TIER_HEAVY);
    assert_int_equal(must_find("mistral")->tier, TIER_LOCAL);
}

/* Embedding models: input only, at the prices; a million tokens of
 * text-embedding-3-small cost exactly 2 cents (2e10 pico-dollars). */
static void test_table_embeddings(void **state)
{
    check_row("text-embedding-3-small", "0.02", "0", "0");
    check_row("text-embedding-3-large", "0.13", "0", "0");
    check_row("gemini-embedding-001", "0.15", "0", "0");
    const char *const names[] = {"text-embedding-3-small", "text-embedding-3-large",
                                 "gemini-embedding-001", "nomic-embed-text"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        assert_true(must_find(names[i])->embedding);
        assert_int_equal(must_find(names[i])->tier, TIER_NONE);
    }
    assert_false(must_find("gpt-4o-mini")->embedding);
    usage_record u = {.input_uncached = 1000000, .exact = true};
    assert_int_equal(pricing_cost_pusd(must_find("text-embedding-3-small"), &u, false),
                     20000000000LL);
    u.input_uncached = 7;
    assert_int_equal(pricing_cost_pusd(must_find("gemini-embedding-001"), &u, false), 1050000);
    assert_int_equal(pricing_cost_pusd(must_find("nomic-embed-text"), &u, false), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sonnet_plain),
        cmocka_unit_test(test_table_embeddings),
        cmocka_unit_test(test_cache_read_is_ninety_percent_off),
        cmocka_unit_test(test_anthropic_cache_writes),
        cmocka_unit_test(test_cache_write_defaults_to_input),
        cmocka_unit_test(test_openai_cached_half),
        cmocka_unit_test(test_long_context_threshold),
        cmocka_unit_test(test_long_context_gemini_pro),
        cmocka_unit_test(test_batch_discount),
        cmocka_unit_test(test_reasoning_inside_output),
        cmocka_unit_test(test_zero_and_negative),
        cmocka_unit_test(test_local_models_free),
        cmocka_unit_test(test_overflow_saturates),
        cmocka_unit_test(test_rounding_truncates),
        cmocka_unit_test(test_parse_usd_per_mtok),
        cmocka_unit_test(test_tiers),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_table_rows_sane),
        cmocka_unit_test(test_table_has_every_model),
        cmocka_unit_test(test_table_figures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

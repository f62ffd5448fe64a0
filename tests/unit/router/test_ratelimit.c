/* Unit tests for router/ratelimit.c, on a fake clock: sliding windows,
 * buckets rolling, reserve and settle, shares across instances, team limits,
 * headers, memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "router/ratelimit.h"

#define T0 1000000000LL /* an arbitrary monotonic start, ms */
#define MIN 60000LL

static key_conf key(const char *id, int64_t rpm, int64_t tph, int64_t pusd)
{
    key_conf k;
    memset(&k, 0, sizeof k);
    k.id = id;
    k.lim.rpm = rpm;
    k.lim.tokens_per_hour = tph;
    k.lim.pusd_per_hour = pusd;
    return k;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A burst fills the limit; the next request waits until the oldest second
 * leaves the window (61 one-second buckets: conservative), to the ms. */
static void test_rpm_burst_and_retry(void **state)
{
    ratelimiter *rl = ratelimit_new();
    key_conf k = key("k", 10, 0, 0);
    rl_hold h;
    rl_refusal w;
    int64_t t = T0 + 300; /* 300 ms into a second */
    for (int i = 0; i < 10; i++) {
        assert_true(ratelimit_admit(rl, &k, t, 0, 0, &h, &w));
        ratelimit_settle(rl, &h, t, 0, 0);
    }
    assert_false(ratelimit_admit(rl, &k, t, 0, 0, &h, &w));
    assert_int_equal(w.kind, RL_REQUESTS);
    assert_false(w.team);
    assert_false(w.too_large);
    assert_string_equal(w.name, "k");
    assert_int_equal(w.limit, 10);
    assert_int_equal(w.used, 10);
    /* the bucket of T0 leaves when the bucket 61 s later begins */
    assert_int_equal(w.retry_ms, 61000 - 300);
    assert_false(ratelimit_admit(rl, &k, t + w.retry_ms - 1, 0, 0, &h, &w));
    assert_true(ratelimit_admit(rl, &k, t + 60700, 0, 0, &h, &w));
    ratelimit_settle(rl, &h, t, 0, 0);
    ratelimit_free(rl);
}

/* Whatever the arrivals, no 60 s window (sliding to the ms) ever holds more
 * than the limit, and a steady overload is admitted at close to the limit. */
static void test_rpm_sliding_exact_random(void **state)
{
    uint64_t seed = 42;
    for (int round = 0; round < 20; round++) {
        ratelimiter *rl = ratelimit_new();
        int64_t limit = 5 + (int64_t)(rng_next(&seed) % 100);
        key_conf k = key("r", limit, 0, 0);
        int64_t *adm = malloc(sizeof(int64_t) * 20000);
        int n = 0;
        int64_t t = T0 + (int64_t)(rng_next(&seed) % 1000);
        for (int i = 0; i < 20000; i++) {
            t += (int64_t)(rng_next(&seed) % 40);
            rl_hold h;
            rl_refusal w;
            if (ratelimit_admit(rl, &k, t, 0, 0, &h, &w)) {
                adm[n++] = t;
                ratelimit_settle(rl, &h, t, 0, 0);
            } else
                assert_true(w.retry_ms > 0 && w.retry_ms <= 61000);
        }
        /* every window [s, s + 60000) with s at an admission */
        for (int i = 0, j = 0; i < n; i++) {
            while (j < n && adm[j] < adm[i] + 60000)
                j++;
            assert_true(j - i <= limit);
        }
        /* ~ limit per 61 s over the run */
        double span = (double)(t - T0) / 61000.0;
        assert_true(n >= (int)(limit * (span - 1)));
        free(adm);
        ratelimit_free(rl);
    }
}

/* The acceptance figure: 1,200 RPM offered to 600 for 60 s, over 2
 * instances of 300 each: at most 606 admitted, at least 540. */
static void test_rpm_two_instances_share(void **state)
{
    ratelimiter *a = ratelimit_new(), *b = ratelimit_new();
    ratelimit_set_instances(a, 2);
    ratelimit_set_instances(b, 2);
    assert_int_equal(ratelimit_instances(a), 2);
    key_conf k = key("k", 600, 0, 0);
    int admitted = 0;
    for (int i = 0; i < 1200; i++) { /* 20 per second, alternately */
        int64_t t = T0 + 123 + i * 50;
        rl_hold h;
        rl_refusal w;
        if (ratelimit_admit(i % 2 ? a : b, &k, t, 0, 0, &h, &w)) {
            admitted++;
            ratelimit_settle(i % 2 ? a : b, &h, t, 0, 0);
        } else {
            assert_int_equal(w.limit, 600);
            assert_int_equal(w.n, 2);
            assert_int_equal(w.used, 600); /* 300 here × 2 */
        }
    }
    assert_true(admitted <= 606 && admitted >= 540);
    /* a limit below N still never gives more than the limit in total */
    ratelimit_set_instances(a, 3);
    key_conf small = key("small", 3, 0, 0);
    rl_hold h;
    rl_refusal w;
    assert_true(ratelimit_admit(a, &small, T0, 0, 0, &h, &w));
    assert_false(ratelimit_admit(a, &small, T0, 0, 0, &h, &w));
    ratelimit_free(a);
    ratelimit_free(b);
}

/* Tokens: reserved at admission, corrected at settlement; one-minute
 * buckets roll out after 61 minutes. */
static void test_tokens_reserve_settle(void **state)
{
    ratelimiter *rl = ratelimit_new();
    key_conf k = key("t", 0, 1000, 0);
    rl_hold h1, h2;
    rl_refusal w;
    int64_t t = T0;
    assert_true(ratelimit_admit(rl, &k, t, 600, 0, &h1, &w));
    assert_true(h1.held);
    /* 600 reserved: 600 more do not fit, and wait for the first minute */
    assert_false(ratelimit_admit(rl, &k, t + 1000, 600, 0, &h2, &w));
    assert_int_equal(w.kind, RL_TOKENS);
    assert_false(w.too_large);
    assert_int_equal(w.used, 600);
    assert_int_equal(w.asked, 600);
    assert_int_equal(w.retry_ms, 61 * MIN - (t % MIN) - 1000);
    rl_status st;
    ratelimit_status(rl, &k, &h1, t + 1000, &st);
    assert_true(st.has[RL_TOKENS]);
    assert_false(st.has[RL_REQUESTS]);
    assert_int_equal(st.limit[RL_TOKENS], 1000);
    assert_int_equal(st.remaining[RL_TOKENS], 400);
    /* the answer used 100: 500 left, the second fits */
    ratelimit_settle(rl, &h1, t + 2000, 100, 0);
    assert_false(h1.held);
    ratelimit_status(rl, &k, NULL, t + 2000, &st);
    assert_int_equal(st.remaining[RL_TOKENS], 900);
    assert_true(ratelimit_admit(rl, &k, t + 3000, 600, 0, &h2, &w));
    /* a settlement later than the reservation's minute: taken back there,
     * the actual counted now */
    ratelimit_settle(rl, &h2, t + 5 * MIN, 700, 0);
    ratelimit_status(rl, &k, NULL, t + 5 * MIN, &st);
    assert_int_equal(st.remaining[RL_TOKENS], 1000 - 800);
    /* the 100 of minute 0 leaves at minute 61, the 700 at minute 66 */
    int64_t m0 = t - t % MIN;
    ratelimit_status(rl, &k, NULL, m0 + 61 * MIN, &st);
    assert_int_equal(st.remaining[RL_TOKENS], 300);
    assert_int_equal(st.reset_ms[RL_TOKENS], 5 * MIN);
    ratelimit_status(rl, &k, NULL, m0 + 66 * MIN, &st);
    assert_int_equal(st.remaining[RL_TOKENS], 1000);
    assert_int_equal(st.reset_ms[RL_TOKENS], 0);
    /* a request larger than the whole share can never pass */
    assert_false(ratelimit_admit(rl, &k, m0 + 66 * MIN, 1001, 0, &h2, &w));
    assert_true(w.too_large);
    /* a failed request gives everything back */
    assert_true(ratelimit_admit(rl, &k, m0 + 67 * MIN, 1000, 0, &h2, &w));
    ratelimit_settle(rl, &h2, m0 + 67 * MIN, 0, 0);
    ratelimit_status(rl, &k, NULL, m0 + 67 * MIN, &st);
    assert_int_equal(st.remaining[RL_TOKENS], 1000);
    ratelimit_free(rl);
}

/* Cost per hour works like tokens, in pico-dollars. */
static void test_cost(void **state)
{
    ratelimiter *rl = ratelimit_new();
    key_conf k = key("c", 0, 0, 1000000);
    rl_hold h;
    rl_refusal w;
    assert_true(ratelimit_admit(rl, &k, T0, 0, 700000, &h, &w));
    ratelimit_settle(rl, &h, T0, 0, 600000);
    assert_false(ratelimit_admit(rl, &k, T0, 0, 500000, &h, &w));
    assert_int_equal(w.kind, RL_COST);
    assert_int_equal(w.used, 600000);
    assert_true(ratelimit_admit(rl, &k, T0, 0, 400000, &h, &w));
    ratelimit_settle(rl, &h, T0, 0, 400000);
    assert_false(ratelimit_admit(rl, &k, T0, 0, 1, &h, &w));
    ratelimit_free(rl);
}

/* A team's limit covers its keys together; the tighter limit shows in the
 * headers; the refusal says team. */
static void test_team(void **state)
{
    ratelimiter *rl = ratelimit_new();
    team_conf team = {.name = "alpha", .lim = {.rpm = 4}};
    key_conf k1 = key("k1", 0, 0, 0), k2 = key("k2", 100, 0, 0);
    k1.team = k2.team = "alpha";
    k1.team_cfg = k2.team_cfg = &team;
    assert_true(ratelimit_applies(&k1));
    rl_hold h;
    rl_refusal w;
    for (int i = 0; i < 4; i++) {
        assert_true(ratelimit_admit(rl, i % 2 ? &k1 : &k2, T0 + i, 0, 0, &h, &w));
        ratelimit_settle(rl, &h, T0 + i, 0, 0);
    }
    assert_false(ratelimit_admit(rl, &k1, T0 + 10, 0, 0, &h, &w));
    assert_true(w.team);
    assert_string_equal(w.name, "alpha");
    assert_false(ratelimit_admit(rl, &k2, T0 + 10, 0, 0, &h, &w));
    assert_true(w.team);
    rl_status st;
    ratelimit_status(rl, &k2, NULL, T0 + 10, &st);
    assert_int_equal(st.limit[RL_REQUESTS], 4); /* the team's, tighter than the key's 100 */
    assert_int_equal(st.remaining[RL_REQUESTS], 0);
    assert_int_equal(ratelimit_entries(rl), 2); /* k2 and alpha: k1 has no limit of its own */
    ratelimit_free(rl);
}

static void test_no_limits(void **state)
{
    key_conf k = key("free", 0, 0, 0);
    assert_false(ratelimit_applies(&k));
    assert_false(ratelimit_applies(NULL));
    ratelimiter *rl = ratelimit_new();
    rl_status st;
    ratelimit_status(rl, &k, NULL, T0, &st);
    assert_false(st.has[RL_REQUESTS] || st.has[RL_TOKENS] || st.has[RL_COST]);
    buf b = BUF_INIT;
    ratelimit_add_headers(&st, &b);
    assert_int_equal(b.len, 0);
    buf_free(&b);
    ratelimit_free(rl);
}

static void test_headers(void **state)
{
    ratelimiter *rl = ratelimit_new();
    ratelimit_set_instances(rl, 2);
    key_conf k = key("h", 600, 10000, 0);
    rl_hold h;
    rl_refusal w;
    assert_true(ratelimit_admit(rl, &k, T0 + 250, 100, 0, &h, &w));
    rl_status st;
    ratelimit_status(rl, &k, &h, T0 + 250, &st);
    buf b = BUF_INIT;
    ratelimit_add_headers(&st, &b);
    assert_string_equal(b.data, "x-ratelimit-limit-requests: 600\r\n"
                                "x-ratelimit-remaining-requests: 598\r\n"
                                "x-ratelimit-reset-requests: 1m0.75s\r\n"
                                "x-ratelimit-limit-tokens: 10000\r\n"
                                "x-ratelimit-remaining-tokens: 9800\r\n"
                                "x-ratelimit-reset-tokens: 1h0m19.75s\r\n");
    buf_free(&b);
    ratelimit_settle(rl, &h, T0 + 250, 0, 0);
    ratelimit_free(rl);
}

static void test_format_duration(void **state)
{
    char s[48];
    const struct {
        int64_t ms;
        const char *want;
    } cases[] = {{0, "0s"},           {-5, "0s"},
                 {120, "120ms"},      {1000, "1s"},
                 {1200, "1.2s"},      {1234, "1.234s"},
                 {360000, "6m0s"},    {61500, "1m1.5s"},
                 {3600000, "1h0m0s"}, {3723004, "1h2m3.004s"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ratelimit_format_duration(cases[i].ms, s, sizeof s);
        assert_string_equal(s, cases[i].want);
    }
}

/* States are freed after an hour idle, never while a request holds one. */
static void test_sweep(void **state)
{
    ratelimiter *rl = ratelimit_new();
    rl_hold held;
    rl_refusal w;
    char id[32];
    key_conf keep = key("keep", 10, 0, 0);
    assert_true(ratelimit_admit(rl, &keep, T0, 5, 0, &held, &w));
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "key-%d", i);
        key_conf k = key(id, 10, 0, 0);
        rl_hold h;
        assert_true(ratelimit_admit(rl, &k, T0, 0, 0, &h, &w));
        ratelimit_settle(rl, &h, T0, 0, 0);
    }
    assert_int_equal(ratelimit_entries(rl), 1001);
    ratelimit_sweep(rl, T0 + 30 * MIN);
    assert_int_equal(ratelimit_entries(rl), 1001);
    ratelimit_sweep(rl, T0 + 63 * MIN);
    assert_int_equal(ratelimit_entries(rl), 1); /* "keep" is held */
    ratelimit_settle(rl, &held, T0 + 63 * MIN, 0, 0);
    ratelimit_sweep(rl, T0 + 126 * MIN);
    assert_int_equal(ratelimit_entries(rl), 0);
    /* health lists what is there */
    key_conf k = key("x\"y", 7, 0, 0);
    rl_hold h;
    assert_true(ratelimit_admit(rl, &k, T0 + 127 * MIN, 0, 0, &h, &w));
    buf b = BUF_INIT;
    ratelimit_health_json(rl, T0 + 127 * MIN, 10, &b);
    assert_non_null(strstr(b.data, "\"instances\":1,\"entries\":1"));
    assert_non_null(strstr(b.data, "\"id\":\"x\\\"y\",\"requests\":{\"limit\":7,\"share\":7,"
                                   "\"used\":1}"));
    assert_non_null(strstr(b.data, "\"in_flight\":1"));
    buf_free(&b);
    ratelimit_settle(rl, &h, T0 + 127 * MIN, 0, 0);
    ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rpm_burst_and_retry),
        cmocka_unit_test(test_rpm_sliding_exact_random),
        cmocka_unit_test(test_rpm_two_instances_share),
        cmocka_unit_test(test_tokens_reserve_settle),
        cmocka_unit_test(test_cost),
        cmocka_unit_test(test_team),
        cmocka_unit_test(test_no_limits),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_format_duration),
        cmocka_unit_test(test_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

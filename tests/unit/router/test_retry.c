/* Unit tests for router/retry.c: backoff, the decision rules, the budget. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "router/retry.h"

/* splitmix64: a seedable PRNG for the tests */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int64_t rng_range(uint64_t *s, int64_t lo, int64_t hi) /* [lo, hi] */
{
    return lo + (int64_t)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* ------------------------------------------------------------ backoff */

static void test_backoff_bounds(void **state)
{
    uint64_t r = 1;
    for (int a = 0; a < 12; a++) {
        int64_t bound = 250LL << a;
        if (bound > 8000) bound = 8000;
        for (int i = 0; i < 1000; i++)
            assert_in_range(retry_backoff_ms(a, 250, 8000, rng_next(&r)), 0, bound - 1);
        assert_int_equal(retry_backoff_ms(a, 250, 8000, 0), 0);
        assert_int_equal(retry_backoff_ms(a, 250, 8000, UINT64_MAX), bound - 1);
    }
    /* overflow-safe for any attempt */
    assert_int_equal(retry_backoff_ms(62, 1, INT64_MAX, UINT64_MAX), (1LL << 62) - 1);
    int big[] = {63, 64, 65, 1000, INT_MAX};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        assert_int_equal(retry_backoff_ms(big[i], 250, 8000, UINT64_MAX), 7999);
        assert_int_equal(retry_backoff_ms(big[i], 1, INT64_MAX, UINT64_MAX), INT64_MAX - 1);
        assert_int_equal(retry_backoff_ms(big[i], INT64_MAX / 3, INT64_MAX, UINT64_MAX),
                         INT64_MAX - 1);
    }
    /* degenerate arguments */
    assert_int_equal(retry_backoff_ms(-5, 250, 8000, UINT64_MAX), 249); /* as attempt 0 */
    assert_int_equal(retry_backoff_ms(3, 0, 8000, UINT64_MAX), 0);
    assert_int_equal(retry_backoff_ms(3, 250, 0, UINT64_MAX), 0);
    assert_int_equal(retry_backoff_ms(3, -1, -1, UINT64_MAX), 0);
    assert_int_equal(retry_backoff_ms(0, 500, 100, UINT64_MAX), 99); /* cap below base */
    assert_int_equal(retry_backoff_ms(0, 1, 1, UINT64_MAX), 0);
}

/* Pearson chi-square over `bins` equal bins of [0, bound). */
static double chi_square(int attempt, int64_t base, int64_t cap, int64_t bound, int bins,
                         uint64_t seed, int n)
{
    long *count = calloc((size_t)bins, sizeof *count);
    assert_non_null(count);
    for (int i = 0; i < n; i++) {
        int64_t v = retry_backoff_ms(attempt, base, cap, rng_next(&seed));
        assert_in_range(v, 0, bound - 1);
        count[v * bins / bound]++;
    }
    double expect = (double)n / bins, chi = 0;
    for (int i = 0; i < bins; i++)
        chi += (count[i] - expect) * (count[i] - expect) / expect;
    free(count);
    return chi;
}

static void test_backoff_uniform(void **state)
{
    /* 100,000 samples in 20 bins: 19 degrees of freedom, whose 0.999 quantile
     * is 43.82. Fixed seeds, so this is deterministic, not flaky. */
    double chi0 = chi_square(0, 1000, 60000, 1000, 20, 42, 100000);
    double chi3 = chi_square(3, 1000, 60000, 8000, 20, 43, 100000);
    double chic = chi_square(30, 1000, 60000, 60000, 20, 44, 100000); /* at the cap */
    print_message("backoff chi-square (19 dof): %.1f %.1f %.1f\n", chi0, chi3, chic);
    assert_true(chi0 < 43.82 && chi3 < 43.82 && chic < 43.82);
    /* and the mean is half the bound, within 1% */
    uint64_t s = 9;
    double sum = 0;
    for (int i = 0; i < 100000; i++)
        sum += (double)retry_backoff_ms(2, 250, 8000, rng_next(&s));
    assert_true(sum / 100000 > 495 && sum / 100000 < 505);
}

/* ------------------------------------------------------------ decision */

/* A retryable first failure with plenty of time, one alternative. */
static retry_input base_input(void)
{
    retry_input in;
    memset(&in, 0, sizeof in);
    in.cls = ERRCLASS_RETRYABLE;
    in.attempt = 1;
    in.retry_after_ms = -1;
    in.deadline_left_ms = 60000;
    in.max_wait_ms = 30000;
    in.backoff_base_ms = 500;
    in.backoff_cap_ms = 8000;
    in.has_alternative = true;
    in.rnd = UINT64_MAX; /* the top of the jitter range */
    return in;
}

static retry_decision decide(retry_input in)
{
    retry_decision d;
    memset(&d, 0x5a, sizeof d);
    retry_decide(&in, &d);
    assert_non_null(d.reason);
    if (d.action != RETRY_SAME_AFTER) assert_int_equal(d.wait_ms, 0);
    return d;
}

static void test_decide_retryable_backs_off(void **state)
{
    retry_input in = base_input();
    for (int a = 1; a <= 2; a++) {
        in.attempt = a;
        retry_decision d = decide(in);
        assert_int_equal(d.action, RETRY_SAME_AFTER);
        assert_int_equal(d.wait_ms, (500LL << (a - 1)) - 1); /* backoff(attempt - 1) */
        assert_string_equal(d.reason, "retry after backoff");
    }
    in.attempt = 3; /* default max_attempts 3 */
    assert_int_equal(decide(in).action, RETRY_FAIL_OVER);
    in.has_alternative = false;
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);
    in.max_attempts = 5;
    assert_int_equal(decide(in).action, RETRY_SAME_AFTER);
    in.attempt = 5;
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);
}

static void test_decide_defaults(void **state)
{
    retry_input in;
    memset(&in, 0, sizeof in);
    in.cls = ERRCLASS_RETRYABLE;
    in.attempt = 1;
    in.retry_after_ms = -1;
    in.deadline_left_ms = INT64_MAX;
    in.rnd = UINT64_MAX;
    retry_decision d = decide(in);
    assert_int_equal(d.action, RETRY_SAME_AFTER);
    assert_int_equal(d.wait_ms, 249); /* base 250 */
    in.attempt = 2;
    assert_int_equal(decide(in).wait_ms, 499);
    in.attempt = 3;
    assert_int_equal(decide(in).action, RETRY_GIVE_UP); /* max 3 attempts, no alternative */
    in.attempt = 2;
    in.max_attempts = 100;
    in.attempt = 50;
    assert_int_equal(decide(in).wait_ms, 7999); /* cap 8000 */
    in.retry_after_ms = 60000;                  /* max wait 60 s: still waits */
    assert_int_equal(decide(in).wait_ms, 60000);
    in.retry_after_ms = 60001;
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);
}

static void test_decide_retry_after(void **state)
{
    retry_input in = base_input();
    in.retry_after_ms = 2000;
    retry_decision d = decide(in);
    assert_int_equal(d.action, RETRY_SAME_AFTER);
    assert_int_equal(d.wait_ms, 2000); /* the advice, not the backoff */
    assert_string_equal(d.reason, "retry after the advised delay");
    in.retry_after_ms = 0;
    assert_int_equal(decide(in).wait_ms, 0);
    in.retry_after_ms = 30000; /* == max wait: wait */
    assert_int_equal(decide(in).action, RETRY_SAME_AFTER);
    in.retry_after_ms = 30001; /* longer than the max wait: fail over */
    d = decide(in);
    assert_int_equal(d.action, RETRY_FAIL_OVER);
    assert_string_equal(d.reason, "retry-after longer than the max wait");
    in.has_alternative = false; /* nowhere to go: pass the 429 through */
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);
    /* a backoff longer than the max wait is clamped, not a fail-over */
    in = base_input();
    in.max_wait_ms = 100;
    in.attempt = 2;
    d = decide(in);
    assert_int_equal(d.action, RETRY_SAME_AFTER);
    assert_int_equal(d.wait_ms, 100);
}

static void test_decide_never_after_streaming(void **state)
{
    error_class cls[] = {ERRCLASS_RETRYABLE, ERRCLASS_AMBIGUOUS, ERRCLASS_FATAL};
    for (int i = 0; i < 3; i++)
        for (int alt = 0; alt < 2; alt++) {
            retry_input in = base_input();
            in.cls = cls[i];
            in.streamed = true;
            in.has_alternative = alt;
            in.quota_exhausted = alt;
            retry_decision d = decide(in);
            assert_int_equal(d.action, RETRY_GIVE_UP);
            assert_string_equal(d.reason, "response committed: bytes already streamed");
        }
}

static void test_decide_deadline(void **state)
{
    retry_input in = base_input();
    in.retry_after_ms = 5000;
    in.deadline_left_ms = 5001;
    assert_int_equal(decide(in).action, RETRY_SAME_AFTER);
    in.deadline_left_ms = 5000; /* the retry would start at the deadline */
    retry_decision d = decide(in);
    assert_int_equal(d.action, RETRY_FAIL_OVER);
    assert_string_equal(d.reason, "the wait would end past the deadline");
    in.has_alternative = false;
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);
    /* an attempt needs min_attempt_ms to be worth starting */
    in = base_input();
    in.retry_after_ms = 1000;
    in.min_attempt_ms = 2000;
    in.deadline_left_ms = 3001;
    assert_int_equal(decide(in).action, RETRY_SAME_AFTER);
    in.deadline_left_ms = 3000;
    assert_int_equal(decide(in).action, RETRY_FAIL_OVER);
    in.deadline_left_ms = 2000; /* not even time to fail over */
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);
    in = base_input();
    in.deadline_left_ms = 0;
    assert_string_equal(decide(in).reason, "no time left before the deadline");
    in.deadline_left_ms = -5;
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);
}

static void test_decide_fatal_quota_none(void **state)
{
    retry_input in = base_input();
    in.cls = ERRCLASS_FATAL;
    retry_decision d = decide(in);
    assert_int_equal(d.action, RETRY_GIVE_UP);
    assert_string_equal(d.reason, "fatal error: would fail again");
    in.cls = ERRCLASS_NONE;
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);
    in.cls = (error_class)99;
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);

    in = base_input();
    in.cls = ERRCLASS_FATAL; /* as the classifiers mark insufficient_quota */
    in.quota_exhausted = true;
    in.retry_after_ms = 10; /* waiting won't bring the quota back */
    d = decide(in);
    assert_int_equal(d.action, RETRY_FAIL_OVER);
    assert_string_equal(d.reason, "quota exhausted on this target");
    in.has_alternative = false;
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);
}

static void test_decide_ambiguous_at_most_once(void **state)
{
    retry_input in = base_input();
    in.cls = ERRCLASS_AMBIGUOUS;
    in.max_attempts = 5;
    assert_int_equal(decide(in).action, RETRY_SAME_AFTER); /* first: once, same target */
    in.attempt = 2;                                        /* same target already retried */
    in.ambiguous_retries = 0;                              /* (the earlier error was retryable) */
    assert_int_equal(decide(in).action, RETRY_FAIL_OVER);
    in.ambiguous_retries = 1; /* this request already retried an ambiguous error */
    for (int a = 1; a <= 3; a++) {
        in.attempt = a;
        retry_decision d = decide(in);
        assert_int_equal(d.action, RETRY_GIVE_UP);
        assert_string_equal(d.reason, "ambiguous error already retried once");
    }
    /* retryable errors are not limited by ambiguous_retries */
    in.cls = ERRCLASS_RETRYABLE;
    in.attempt = 1;
    assert_int_equal(decide(in).action, RETRY_SAME_AFTER);
}

static void test_decide_budget(void **state)
{
    retry_input in = base_input();
    in.budget_exhausted = true;
    retry_decision d = decide(in);
    assert_int_equal(d.action, RETRY_FAIL_OVER);
    assert_string_equal(d.reason, "retry budget exhausted");
    in.has_alternative = false;
    assert_int_equal(decide(in).action, RETRY_GIVE_UP);
}

static void test_action_names(void **state)
{
    assert_string_equal(retry_action_name(RETRY_GIVE_UP), "give_up");
    assert_string_equal(retry_action_name(RETRY_SAME_AFTER), "retry_same");
    assert_string_equal(retry_action_name(RETRY_FAIL_OVER), "fail_over");
    assert_string_equal(retry_action_name((retry_action)9), "unknown");
}

/* Random inputs: the promises hold for every one of them. */
static void test_decide_invariants_random(void **state)
{
    uint64_t r = 0xdec1de;
    int seen[3] = {0};
    for (int i = 0; i < 200000; i++) {
        retry_input in;
        memset(&in, 0, sizeof in);
        in.cls = (error_class)rng_range(&r, 0, 3);
        in.quota_exhausted = rng_range(&r, 0, 9) == 0;
        in.attempt = (int)rng_range(&r, 1, 6);
        in.max_attempts = (int)rng_range(&r, -1, 5);
        in.ambiguous_retries = (int)rng_range(&r, 0, 1);
        in.retry_after_ms = rng_range(&r, 0, 2) ? -1 : rng_range(&r, 0, 120000);
        in.deadline_left_ms = rng_range(&r, 0, 9) == 0 ? INT64_MAX : rng_range(&r, -100, 90000);
        in.min_attempt_ms = rng_range(&r, 0, 1) ? 0 : rng_range(&r, 0, 5000);
        in.max_wait_ms = rng_range(&r, 0, 60000);
        in.backoff_base_ms = rng_range(&r, 0, 1000);
        in.backoff_cap_ms = rng_range(&r, 0, 30000);
        in.streamed = rng_range(&r, 0, 5) == 0;
        in.has_alternative = rng_range(&r, 0, 1);
        in.budget_exhausted = rng_range(&r, 0, 5) == 0;
        in.rnd = rng_next(&r);
        retry_decision d;
        retry_decide(&in, &d);
        seen[d.action]++;
        assert_non_null(d.reason);
        int max_a = in.max_attempts > 0 ? in.max_attempts : 3;
        int64_t max_w = in.max_wait_ms > 0 ? in.max_wait_ms : 60000;
        switch (d.action) {
        case RETRY_SAME_AFTER:
            assert_false(in.streamed);
            assert_false(in.quota_exhausted);
            assert_false(in.budget_exhausted);
            assert_true(in.cls == ERRCLASS_RETRYABLE || in.cls == ERRCLASS_AMBIGUOUS);
            assert_true(in.attempt < max_a);
            if (in.cls == ERRCLASS_AMBIGUOUS)
                assert_true(in.attempt == 1 && in.ambiguous_retries == 0);
            assert_in_range(d.wait_ms, 0, max_w);
            assert_true((__int128)d.wait_ms + in.min_attempt_ms < in.deadline_left_ms);
            if (in.retry_after_ms >= 0) assert_int_equal(d.wait_ms, in.retry_after_ms);
            break;
        case RETRY_FAIL_OVER:
            assert_true(in.has_alternative);
            assert_false(in.streamed);
            assert_true(in.cls == ERRCLASS_RETRYABLE || in.cls == ERRCLASS_AMBIGUOUS ||
                        in.quota_exhausted);
            assert_true(in.deadline_left_ms > in.min_attempt_ms);
            /* a quota refusal means nothing ran: failing over is safe */
            if (in.cls == ERRCLASS_AMBIGUOUS && !in.quota_exhausted)
                assert_int_equal(in.ambiguous_retries, 0);
            break;
        case RETRY_GIVE_UP:
            break;
        }
    }
    assert_true(seen[0] > 1000 && seen[1] > 1000 && seen[2] > 1000);
}

/* ------------------------------------------------------------ budget */

static void test_budget_basics(void **state)
{
    retry_budget_free(NULL);
    retry_budget_config d = retry_budget_config_default();
    assert_int_equal(d.ratio_pct, 10);
    assert_int_equal(d.window_ms, 10000);
    assert_int_equal(d.buckets, 10);
    assert_int_equal(d.min_per_s, 3);
    retry_budget_config bad[4] = {d, d, d, d};
    bad[0].ratio_pct = -1;
    bad[1].buckets = 0;
    bad[2].window_ms = 5, bad[2].buckets = 10;
    bad[3].min_per_s = -1;
    for (int i = 0; i < 4; i++)
        assert_null(retry_budget_new(&bad[i]));

    retry_budget *rb = retry_budget_new(NULL);
    assert_non_null(rb);
    /* the floor: 3/s over 10 s = 30 retries with no traffic at all */
    assert_true(retry_budget_would_allow(rb, 0));
    assert_true(retry_budget_would_allow(rb, 0)); /* a peek consumes nothing */
    for (int i = 0; i < 30; i++)
        assert_true(retry_budget_allow(rb, 0));
    assert_false(retry_budget_would_allow(rb, 0));
    assert_false(retry_budget_allow(rb, 0));
    /* the floor is a minimum: the ratio adds nothing until 10% of the
     * requests pass it (310 requests buy the 31st retry), not on top of it */
    for (int i = 0; i < 309; i++)
        retry_budget_note_request(rb, 100);
    assert_false(retry_budget_allow(rb, 100));
    retry_budget_note_request(rb, 100);
    assert_true(retry_budget_allow(rb, 100));
    assert_false(retry_budget_allow(rb, 100));
    retry_budget_snapshot s;
    retry_budget_get_snapshot(rb, 100, &s);
    assert_int_equal(s.requests, 310);
    assert_int_equal(s.retries, 31);
    assert_int_equal(s.denied, 3);
    /* bucket 0 leaves the window at t = 10000 */
    assert_false(retry_budget_allow(rb, 9999));
    retry_budget_get_snapshot(rb, 10000, &s);
    assert_int_equal(s.requests, 0);
    assert_int_equal(s.retries, 0);
    assert_true(retry_budget_allow(rb, 10000));
    retry_budget_free(rb);

    /* 1000 requests: 100 retries (10%; the floor of 30 is below it) */
    rb = retry_budget_new(NULL);
    for (int i = 0; i < 1000; i++)
        retry_budget_note_request(rb, i);
    int n = 0;
    while (retry_budget_allow(rb, 1000))
        n++;
    assert_int_equal(n, 100);
    retry_budget_free(rb);

    /* no floor, no ratio: never */
    retry_budget_config z = {.ratio_pct = 0, .window_ms = 1000, .buckets = 1, .min_per_s = 0};
    rb = retry_budget_new(&z);
    for (int i = 0; i < 100; i++)
        retry_budget_note_request(rb, 0);
    assert_false(retry_budget_allow(rb, 0));
    retry_budget_free(rb);
}

/* Outage simulation: every upstream attempt fails, every failure wants a retry
 * (up to 3 attempts per request, backoff from retry_decide, one target, no
 * alternative). Upstream attempts over client requests, over every 10 s
 * interval (at 1 ms steps), must stay at 1 + max(10%, the floor's 30 retries
 * per window), plus at most one bucket's worth (10% of it) from the bucketed
 * window's edges. */
#define SIM_MS 120000
#define SIM_WINDOW 10000

static double simulate(uint64_t seed, bool bursty, bool use_budget, double *bound_out)
{
    static int req_at[SIM_MS], att_at[SIM_MS];
    static int64_t due[SIM_MS + 100000]; /* pending retries, by time: attempt number */
    static int due_attempt[SIM_MS + 100000];
    memset(req_at, 0, sizeof req_at);
    memset(att_at, 0, sizeof att_at);
    int ndue = 0;
    retry_budget *rb = retry_budget_new(NULL);
    uint64_t r = seed;
    for (int64_t now = 0; now < SIM_MS; now++) {
        /* client arrivals: 100/s, steady or in bursts of 0..40 each 100 ms */
        int arrivals = bursty ? (now % 100 == 0 ? (int)rng_range(&r, 0, 40) : 0) : now % 10 == 0;
        /* failed attempts of this ms: new requests (attempt 1) and retries due now */
        int failed_attempt[4096], nf = 0;
        for (int i = 0; i < arrivals; i++) {
            retry_budget_note_request(rb, now);
            req_at[now]++;
            att_at[now]++;
            failed_attempt[nf++] = 1;
        }
        for (int i = 0; i < ndue;) {
            if (due[i] == now) {
                att_at[now]++;
                assert_true(nf < 4096);
                failed_attempt[nf++] = due_attempt[i] + 1;
                due[i] = due[--ndue];
                due_attempt[i] = due_attempt[ndue];
            } else {
                i++;
            }
        }
        for (int i = 0; i < nf; i++) {
            retry_input in;
            memset(&in, 0, sizeof in);
            in.cls = ERRCLASS_RETRYABLE;
            in.attempt = failed_attempt[i];
            in.retry_after_ms = -1;
            in.deadline_left_ms = INT64_MAX;
            in.backoff_base_ms = 100;
            in.backoff_cap_ms = 2000;
            in.budget_exhausted = use_budget && !retry_budget_would_allow(rb, now);
            in.rnd = rng_next(&r);
            retry_decision d;
            retry_decide(&in, &d);
            if (d.action != RETRY_SAME_AFTER) continue;
            if (use_budget) assert_true(retry_budget_allow(rb, now)); /* peeked just now */
            due[ndue] = now + (d.wait_ms > 0 ? d.wait_ms : 1);
            due_attempt[ndue++] = failed_attempt[i];
        }
    }
    retry_budget_free(rb);
    /* every 10 s interval [s, s + 10 s) that lies inside the run */
    long req = 0, att = 0;
    double worst = 0, worst_bound = 0, worst_margin = -1e9;
    for (int t = 0; t < SIM_MS; t++) {
        req += req_at[t];
        att += att_at[t];
        if (t >= SIM_WINDOW) {
            req -= req_at[t - SIM_WINDOW];
            att -= att_at[t - SIM_WINDOW];
        }
        if (t < SIM_WINDOW - 1 || req == 0) continue;
        double ratio = (double)att / req;
        double bound = 1.0 + 1.1 * (30.0 / req > 0.10 ? 30.0 / req : 0.10);
        if (ratio > worst) worst = ratio;
        if (ratio - bound > worst_margin) worst_margin = ratio - bound, worst_bound = bound;
        if (use_budget) assert_true(ratio <= bound);
    }
    *bound_out = worst_bound;
    return worst;
}

static void test_budget_outage_simulation(void **state)
{
    double bound;
    double steady = simulate(1, false, true, &bound);
    print_message("outage, steady 100/s: worst attempts/requests over any 10 s = %.4f "
                  "(bound there %.4f)\n",
                  steady, bound);
    double bursty = simulate(2, true, true, &bound);
    print_message("outage, bursty 200/s: worst attempts/requests over any 10 s = %.4f "
                  "(bound there %.4f)\n",
                  bursty, bound);
    double none = simulate(1, false, false, &bound);
    print_message("outage, no budget: %.4f (3 attempts each)\n", none);
    assert_true(steady <= 1.11);
    assert_true(none > 2.9); /* the budget is what keeps it down */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_backoff_uniform),
        cmocka_unit_test(test_decide_retryable_backs_off),
        cmocka_unit_test(test_decide_defaults),
        cmocka_unit_test(test_decide_retry_after),
        cmocka_unit_test(test_decide_never_after_streaming),
        cmocka_unit_test(test_decide_deadline),
        cmocka_unit_test(test_decide_fatal_quota_none),
        cmocka_unit_test(test_decide_ambiguous_at_most_once),
        cmocka_unit_test(test_decide_budget),
        cmocka_unit_test(test_action_names),
        cmocka_unit_test(test_decide_invariants_random),
        cmocka_unit_test(test_budget_basics),
        cmocka_unit_test(test_budget_outage_simulation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

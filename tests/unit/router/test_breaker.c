/* Unit tests for router/breaker.c, and a model-based test against a small
 * reference model that keeps the full event list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "router/breaker.h"

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

/* Defaults without jitter, so open periods are exact. */
static breaker_config cfg_nojitter(void)
{
    breaker_config c = breaker_config_default();
    c.jitter_pct = 0;
    return c;
}

static breaker_ticket admit(breaker *b, int64_t now)
{
    breaker_ticket t;
    assert_true(breaker_allow(b, now, &t));
    return t;
}

static void outcome(breaker *b, int64_t now, breaker_outcome o)
{
    breaker_ticket t = admit(b, now);
    breaker_record(b, now, &t, o, 0);
}

/* Trip a default (5-in-a-row) breaker at `now`. */
static void trip(breaker *b, int64_t now)
{
    for (int i = 0; i < 5; i++)
        outcome(b, now, BREAKER_FAILURE);
    assert_int_equal(breaker_get_state(b, now), BREAKER_OPEN);
}

/* ------------------------------------------------------------ basics */

static void test_new_free_config(void **state)
{
    breaker_free(NULL);
    breaker *b = breaker_new(NULL);
    assert_non_null(b);
    assert_int_equal(breaker_get_state(b, 0), BREAKER_CLOSED);
    breaker_free(b);

    breaker_config d = breaker_config_default();
    assert_int_equal(d.consecutive_failures, 5);
    assert_int_equal(d.window_ms, 10000);
    assert_int_equal(d.window_min_calls, 20);
    assert_int_equal(d.failure_rate_pct, 50);
    assert_int_equal(d.open_base_ms, 5000);
    assert_int_equal(d.open_max_ms, 60000);
    assert_int_equal(d.jitter_pct, 20);
    assert_int_equal(d.half_open_probes, 1);

    breaker_config bad[8];
    for (int i = 0; i < 8; i++)
        bad[i] = d;
    bad[0].consecutive_failures = 0;
    bad[1].window_buckets = BREAKER_MAX_BUCKETS + 1;
    bad[2].window_ms = 3, bad[2].window_buckets = 4;
    bad[3].failure_rate_pct = 101;
    bad[4].open_max_ms = d.open_base_ms - 1;
    bad[5].jitter_pct = -1;
    bad[6].half_open_probes = 0;
    bad[7].stable_ms = -1;
    for (int i = 0; i < 8; i++)
        assert_null(breaker_new(&bad[i]));
}

static void test_names(void **state)
{
    assert_string_equal(breaker_state_name(BREAKER_CLOSED), "closed");
    assert_string_equal(breaker_state_name(BREAKER_OPEN), "open");
    assert_string_equal(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
    assert_string_equal(breaker_state_name((breaker_state)42), "unknown");
    assert_string_equal(breaker_outcome_name(BREAKER_SUCCESS), "success");
    assert_string_equal(breaker_outcome_name(BREAKER_FAILURE), "failure");
    assert_string_equal(breaker_outcome_name(BREAKER_NEUTRAL), "neutral");
    assert_string_equal(breaker_outcome_name(BREAKER_ABANDONED), "abandoned");
    assert_string_equal(breaker_outcome_name((breaker_outcome)42), "unknown");
}

/* ------------------------------------------------------------ tripping */

static void test_consecutive_failures_trip_at_five(void **state)
{
    breaker_config c = cfg_nojitter();
    breaker *b = breaker_new(&c);
    for (int i = 0; i < 4; i++)
        outcome(b, 0, BREAKER_FAILURE);
    assert_int_equal(breaker_get_state(b, 0), BREAKER_CLOSED);
    outcome(b, 0, BREAKER_SUCCESS); /* resets the run */
    for (int i = 0; i < 4; i++)
        outcome(b, 1, BREAKER_FAILURE);
    assert_int_equal(breaker_get_state(b, 1), BREAKER_CLOSED);
    breaker_snapshot s;
    breaker_get_snapshot(b, 1, &s);
    assert_int_equal(s.consecutive_failures, 4);
    outcome(b, 2, BREAKER_FAILURE);
    assert_int_equal(breaker_get_state(b, 2), BREAKER_OPEN);
    breaker_get_snapshot(b, 2, &s);
    assert_int_equal(s.opens_total, 1);
    assert_int_equal(s.consecutive_opens, 1);
    assert_int_equal(s.open_until_ms, 2 + 5000);
    breaker_free(b);
}

static void test_failure_rate_trips(void **state)
{
    /* S,F alternating: never 2 failures in a row; 50% of 20 calls trips. */
    breaker_config c = cfg_nojitter();
    breaker *b = breaker_new(&c);
    for (int i = 0; i < 19; i++)
        outcome(b, 100 * i, i % 2 ? BREAKER_FAILURE : BREAKER_SUCCESS);
    breaker_snapshot s;
    breaker_get_snapshot(b, 1900, &s);
    assert_int_equal(s.window_calls, 19);
    assert_int_equal(s.window_failures, 9);
    assert_int_equal(breaker_get_state(b, 1900), BREAKER_CLOSED);
    outcome(b, 1900, BREAKER_FAILURE); /* 10 of 20 */
    assert_int_equal(breaker_get_state(b, 1900), BREAKER_OPEN);
    breaker_free(b);

    /* 9 failures of 20: below 50%, stays closed. */
    b = breaker_new(&c);
    for (int i = 0; i < 11; i++)
        outcome(b, 0, BREAKER_SUCCESS);
    for (int i = 0; i < 9; i++) {
        outcome(b, 0, BREAKER_FAILURE);
        outcome(b, 0, BREAKER_SUCCESS);
    }
    assert_int_equal(breaker_get_state(b, 0), BREAKER_CLOSED);
    breaker_free(b);

    /* Below the volume floor, even 100% failures (1 in a row) don't trip. */
    c.consecutive_failures = 100;
    b = breaker_new(&c);
    for (int i = 0; i < 19; i++)
        outcome(b, 0, BREAKER_FAILURE);
    assert_int_equal(breaker_get_state(b, 0), BREAKER_CLOSED);
    outcome(b, 0, BREAKER_FAILURE);
    assert_int_equal(breaker_get_state(b, 0), BREAKER_OPEN);
    breaker_free(b);
}

static void test_window_slides(void **state)
{
    breaker_config c = cfg_nojitter();
    breaker *b = breaker_new(&c);
    /* 10 failures (interleaved) at t in bucket 0 */
    for (int i = 0; i < 10; i++) {
        outcome(b, 500, BREAKER_SUCCESS);
        outcome(b, 500, BREAKER_FAILURE);
    }
    assert_int_equal(breaker_get_state(b, 500), BREAKER_OPEN); /* 10/20 */
    breaker_free(b);

    b = breaker_new(&c);
    for (int i = 0; i < 9; i++) {
        outcome(b, 500, BREAKER_FAILURE);
        outcome(b, 500, BREAKER_SUCCESS);
    }
    breaker_snapshot s;
    breaker_get_snapshot(b, 9999, &s); /* bucket 9: bucket 0 still in */
    assert_int_equal(s.window_calls, 18);
    breaker_get_snapshot(b, 10000, &s); /* bucket 10: bucket 0 gone */
    assert_int_equal(s.window_calls, 0);
    /* the old failures no longer count: 2 more failures don't reach 50% of 20 */
    outcome(b, 10000, BREAKER_FAILURE);
    outcome(b, 10000, BREAKER_SUCCESS);
    outcome(b, 10000, BREAKER_FAILURE);
    assert_int_equal(breaker_get_state(b, 10000), BREAKER_CLOSED);
    breaker_free(b);
}

static void test_neutral_never_trips(void **state)
{
    breaker_config c = cfg_nojitter();
    breaker *b = breaker_new(&c);
    for (int i = 0; i < 10000; i++)
        outcome(b, i, BREAKER_NEUTRAL); /* 4xx and 429 */
    for (int i = 0; i < 10000; i++)
        outcome(b, 10000 + i, BREAKER_ABANDONED);
    assert_int_equal(breaker_get_state(b, 20000), BREAKER_CLOSED);
    breaker_snapshot s;
    breaker_get_snapshot(b, 20000, &s);
    assert_int_equal(s.window_calls, 0);
    assert_int_equal(s.opens_total, 0);
    /* neutral neither counts nor resets the failure run */
    for (int i = 0; i < 4; i++) {
        outcome(b, 30000, BREAKER_FAILURE);
        outcome(b, 30000, BREAKER_NEUTRAL);
    }
    assert_int_equal(breaker_get_state(b, 30000), BREAKER_CLOSED);
    outcome(b, 30000, BREAKER_FAILURE);
    assert_int_equal(breaker_get_state(b, 30000), BREAKER_OPEN);
    breaker_free(b);
}

/* ------------------------------------------------------------ open */

static void test_open_allows_nothing(void **state)
{
    breaker_config c = cfg_nojitter();
    breaker *b = breaker_new(&c);
    trip(b, 1000);
    int allowed = 0;
    breaker_ticket t;
    for (int64_t now = 1000; now < 6000; now++) {
        allowed += breaker_allow(b, now, &t);
        assert_int_equal(breaker_retry_at_ms(b, now), 6000);
    }
    assert_int_equal(allowed, 0);
    assert_int_equal(breaker_get_state(b, 5999), BREAKER_OPEN);
    assert_int_equal(breaker_get_state(b, 6000), BREAKER_HALF_OPEN);
    assert_int_equal(breaker_retry_at_ms(b, 6000), 6000);
    breaker_free(b);
}

static void test_open_wait_grows_and_caps(void **state)
{
    breaker_config c = cfg_nojitter();
    breaker *b = breaker_new(&c);
    int64_t now = 0;
    trip(b, now);
    int64_t expect[] = {5000, 10000, 20000, 40000, 60000, 60000, 60000};
    for (int i = 0; i < 7; i++) {
        breaker_snapshot s;
        breaker_get_snapshot(b, now, &s);
        assert_int_equal(s.open_until_ms - now, expect[i]);
        assert_int_equal(s.consecutive_opens, i + 1);
        now = s.open_until_ms;
        breaker_ticket p = admit(b, now); /* the probe */
        assert_true(p.probe);
        breaker_record(b, now, &p, BREAKER_FAILURE, 0); /* probe fails: longer wait */
    }
    breaker_free(b);
}

static void test_open_wait_jitter(void **state)
{
    breaker_config c = breaker_config_default(); /* ±20% */
    uint64_t seed = 7;
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 2000; i++) {
        breaker *b = breaker_new(&c);
        for (int k = 0; k < 4; k++)
            outcome(b, 0, BREAKER_FAILURE);
        breaker_ticket t = admit(b, 0);
        breaker_record(b, 0, &t, BREAKER_FAILURE, rng_next(&seed));
        breaker_snapshot s;
        breaker_get_snapshot(b, 0, &s);
        assert_in_range(s.open_until_ms, 4000, 6000);
        lo = s.open_until_ms < lo ? s.open_until_ms : lo;
        hi = s.open_until_ms > hi ? s.open_until_ms : hi;
        breaker_free(b);
    }
    assert_true(lo < 4100 && hi > 5900); /* it does spread */
    /* the extreme values of rnd map to the ends of the range */
    breaker *b = breaker_new(&c);
    for (int k = 0; k < 4; k++)
        outcome(b, 0, BREAKER_FAILURE);
    breaker_ticket t = admit(b, 0);
    breaker_record(b, 0, &t, BREAKER_FAILURE, 2000); /* 2000 mod 2001 */
    assert_int_equal(breaker_retry_at_ms(b, 0), 6000);
    breaker_free(b);
}

/* ------------------------------------------------------------ half-open */

static void test_half_open_exactly_k_probes(void **state)
{
    for (int k = 1; k <= 4; k++) {
        breaker_config c = cfg_nojitter();
        c.half_open_probes = k;
        breaker *b = breaker_new(&c);
        trip(b, 0);
        breaker_ticket t[8];
        int n = 0;
        for (int i = 0; i < 8; i++) {
            breaker_ticket x;
            if (breaker_allow(b, 5000 + i, &x)) t[n++] = x;
        }
        assert_int_equal(n, k);
        for (int i = 0; i < n; i++)
            assert_true(t[i].probe);
        assert_int_equal(breaker_retry_at_ms(b, 6000), -1);
        breaker_snapshot s;
        breaker_get_snapshot(b, 6000, &s);
        assert_int_equal(s.state, BREAKER_HALF_OPEN);
        assert_int_equal(s.probes_in_flight, k);
        /* an abandoned probe frees exactly one slot; so does a neutral one */
        breaker_record(b, 6000, &t[0], BREAKER_ABANDONED, 0);
        assert_true(breaker_allow(b, 6000, &t[0]));
        breaker_ticket x;
        assert_false(breaker_allow(b, 6000, &x));
        breaker_record(b, 6000, &t[0], BREAKER_NEUTRAL, 0);
        assert_int_equal(breaker_get_state(b, 6000), BREAKER_HALF_OPEN);
        assert_true(breaker_allow(b, 6000, &t[0]));
        assert_false(breaker_allow(b, 6000, &x));
        /* one success closes; the other probes' late results are ignored */
        breaker_record(b, 6001, &t[0], BREAKER_SUCCESS, 0);
        assert_int_equal(breaker_get_state(b, 6001), BREAKER_CLOSED);
        for (int i = 1; i < n; i++)
            breaker_record(b, 6002, &t[i], BREAKER_FAILURE, 0);
        assert_int_equal(breaker_get_state(b, 6002), BREAKER_CLOSED);
        breaker_get_snapshot(b, 6002, &s);
        assert_int_equal(s.consecutive_failures, 0);
        assert_int_equal(s.window_calls, 0);
        breaker_free(b);
    }
}

static void test_probe_failure_reopens_longer(void **state)
{
    breaker_config c = cfg_nojitter();
    c.half_open_probes = 2;
    breaker *b = breaker_new(&c);
    trip(b, 0);
    breaker_ticket p1 = admit(b, 5000), p2 = admit(b, 5000);
    breaker_record(b, 5100, &p1, BREAKER_FAILURE, 0);
    assert_int_equal(breaker_get_state(b, 5100), BREAKER_OPEN);
    assert_int_equal(breaker_retry_at_ms(b, 5100), 5100 + 10000);
    /* the other probe's success comes from the previous period: ignored */
    breaker_record(b, 5200, &p2, BREAKER_SUCCESS, 0);
    assert_int_equal(breaker_get_state(b, 5200), BREAKER_OPEN);
    breaker_ticket x;
    assert_false(breaker_allow(b, 15099, &x));
    assert_true(breaker_allow(b, 15100, &x));
    breaker_free(b);
}

static void test_stale_closed_tickets_ignored(void **state)
{
    breaker_config c = cfg_nojitter();
    breaker *b = breaker_new(&c);
    breaker_ticket old[10];
    for (int i = 0; i < 10; i++)
        old[i] = admit(b, 0); /* in flight when it trips */
    trip(b, 0);
    /* their results arrive while OPEN, then HALF_OPEN: none may change anything */
    for (int i = 0; i < 5; i++)
        breaker_record(b, 10, &old[i], BREAKER_SUCCESS, 0);
    breaker_ticket p = admit(b, 5000);
    for (int i = 5; i < 10; i++)
        breaker_record(b, 5000, &old[i], BREAKER_SUCCESS, 0);
    assert_int_equal(breaker_get_state(b, 5000), BREAKER_HALF_OPEN);
    breaker_ticket x;
    assert_false(breaker_allow(b, 5000, &x)); /* the one slot is still taken */
    for (int i = 0; i < 10; i++)
        breaker_record(b, 5000, &old[i], BREAKER_ABANDONED, 0);
    assert_false(breaker_allow(b, 5000, &x));
    breaker_record(b, 5000, &p, BREAKER_SUCCESS, 0);
    assert_int_equal(breaker_get_state(b, 5000), BREAKER_CLOSED);
    /* old failures arriving after the close do not count either */
    for (int i = 0; i < 10; i++)
        breaker_record(b, 5001, &old[i], BREAKER_FAILURE, 0);
    assert_int_equal(breaker_get_state(b, 5001), BREAKER_CLOSED);
    breaker_record(b, 5001, NULL, BREAKER_FAILURE, 0);
    breaker_free(b);
}

static void test_stable_period_resets_multiplier(void **state)
{
    breaker_config c = cfg_nojitter();
    c.stable_ms = 60000;
    breaker *b = breaker_new(&c);
    trip(b, 0);
    breaker_ticket p = admit(b, 5000);
    breaker_record(b, 5000, &p, BREAKER_FAILURE, 0); /* 2nd: 10 s */
    p = admit(b, 15000);
    breaker_record(b, 15000, &p, BREAKER_SUCCESS, 0); /* closed at 15000 */
    trip(b, 16000);                                   /* soon after: 3rd, 20 s */
    assert_int_equal(breaker_retry_at_ms(b, 16000), 36000);
    p = admit(b, 36000);
    breaker_record(b, 36000, &p, BREAKER_SUCCESS, 0); /* closed at 36000 */
    breaker_snapshot s;
    breaker_get_snapshot(b, 95999, &s);
    assert_int_equal(s.consecutive_opens, 3);
    breaker_get_snapshot(b, 96000, &s);
    assert_int_equal(s.consecutive_opens, 0);
    trip(b, 96000); /* stable for 60 s: back to the base */
    assert_int_equal(breaker_retry_at_ms(b, 96000), 101000);
    breaker_get_snapshot(b, 96000, &s);
    assert_int_equal(s.consecutive_opens, 1);
    assert_int_equal(s.opens_total, 4);
    breaker_free(b);
}

/* ------------------------------------------------------------ pause */

static void test_pause(void **state)
{
    breaker_config c = cfg_nojitter();
    breaker *b = breaker_new(&c);
    breaker_ticket inflight = admit(b, 0);
    breaker_pause(b, 3000);
    breaker_pause(b, 2000); /* never shortens */
    breaker_ticket x;
    for (int64_t t = 0; t < 3000; t += 7)
        assert_false(breaker_allow(b, t, &x));
    assert_int_equal(breaker_get_state(b, 100), BREAKER_CLOSED);
    assert_int_equal(breaker_retry_at_ms(b, 100), 3000);
    breaker_snapshot s;
    breaker_get_snapshot(b, 100, &s);
    assert_int_equal(s.paused_until_ms, 3000);
    assert_int_equal(s.opens_total, 0);
    assert_int_equal(s.consecutive_opens, 0);
    breaker_record(b, 100, &inflight, BREAKER_NEUTRAL, 0); /* the 429 itself */
    assert_true(breaker_allow(b, 3000, &x));
    breaker_get_snapshot(b, 3000, &s);
    assert_int_equal(s.paused_until_ms, -1);

    /* a pause over an open period: allowed at the later of the two */
    trip(b, 4000);
    breaker_pause(b, 12000);
    assert_int_equal(breaker_retry_at_ms(b, 4000), 12000);
    assert_int_equal(breaker_get_state(b, 9000), BREAKER_HALF_OPEN);
    assert_false(breaker_allow(b, 11999, &x));
    assert_true(breaker_allow(b, 12000, &x));
    assert_true(x.probe);
    breaker_get_snapshot(b, 12000, &s);
    assert_int_equal(s.consecutive_opens, 1); /* the pause is not a trip */
    breaker_free(b);
}

static void test_snapshot(void **state)
{
    breaker_config c = cfg_nojitter();
    breaker *b = breaker_new(&c);
    outcome(b, 0, BREAKER_SUCCESS);
    outcome(b, 0, BREAKER_FAILURE);
    outcome(b, 0, BREAKER_FAILURE);
    breaker_snapshot s;
    breaker_get_snapshot(b, 5, &s);
    assert_int_equal(s.state, BREAKER_CLOSED);
    assert_int_equal(s.consecutive_failures, 2);
    assert_int_equal(s.window_calls, 3);
    assert_int_equal(s.window_failures, 2);
    assert_int_equal(s.probes_in_flight, 0);
    assert_int_equal(s.open_until_ms, -1);
    assert_int_equal(s.paused_until_ms, -1);
    assert_int_equal(s.next_allow_ms, 5);
    breaker_free(b);
}

/* ------------------------------------------------------------ model */

/* The reference: stores every success and failure of the current CLOSED
 * period with its time, and recomputes the run and the window by scanning
 * them. Nothing is incremental except the obvious counters. */
#define M_MAX_EVENTS 4096

typedef struct model {
    breaker_config c;
    breaker_state state; /* OPEN stays OPEN until an allow() finds its end */
    uint64_t period;
    int64_t ev_t[M_MAX_EVENTS];
    bool ev_fail[M_MAX_EVENTS];
    int nev;
    int opens;
    uint64_t total;
    int64_t open_until;
    int probes;
    int64_t closed_since;
    int64_t paused; /* -1: none */
} model;

static int64_t m_bucket(const model *m, int64_t t)
{
    int64_t bm = m->c.window_ms / m->c.window_buckets;
    return t >= 0 ? t / bm : -((-t + bm - 1) / bm);
}

static int m_run(const model *m)
{
    int run = 0;
    for (int i = m->nev - 1; i >= 0 && m->ev_fail[i]; i--)
        run++;
    return run;
}

static void m_window(const model *m, int64_t now, int *calls, int *fails)
{
    *calls = *fails = 0;
    int64_t cur = m_bucket(m, now);
    for (int i = 0; i < m->nev; i++) {
        int64_t k = m_bucket(m, m->ev_t[i]);
        if (k > cur - m->c.window_buckets && k <= cur) {
            (*calls)++;
            *fails += m->ev_fail[i];
        }
    }
}

static int64_t m_wait(const model *m, uint64_t rnd)
{
    int64_t w = m->c.open_base_ms;
    for (int i = 1; i < m->opens; i++) {
        w *= 2;
        if (w > m->c.open_max_ms) w = m->c.open_max_ms;
    }
    int64_t j = w * m->c.jitter_pct / 100;
    return w - j + (int64_t)(rnd % (uint64_t)(2 * j + 1));
}

static void m_trip(model *m, int64_t now, uint64_t rnd)
{
    if (m->state == BREAKER_CLOSED && m->opens > 0 && now - m->closed_since >= m->c.stable_ms)
        m->opens = 0;
    m->opens++;
    m->total++;
    m->open_until = now + m_wait(m, rnd);
    m->state = BREAKER_OPEN;
    m->period++;
    m->nev = 0;
    m->probes = 0;
}

static breaker_state m_state(const model *m, int64_t now)
{
    if (m->state == BREAKER_OPEN && now >= m->open_until) return BREAKER_HALF_OPEN;
    return m->state;
}

static bool m_allow(model *m, int64_t now, breaker_ticket *t)
{
    if (m->paused >= 0 && now < m->paused) return false;
    if (m->state == BREAKER_OPEN) {
        if (now < m->open_until) return false;
        m->state = BREAKER_HALF_OPEN;
        m->probes = 0;
    }
    if (m->state == BREAKER_HALF_OPEN) {
        if (m->probes >= m->c.half_open_probes) return false;
        m->probes++;
        *t = (breaker_ticket){.period = m->period, .probe = true};
        return true;
    }
    *t = (breaker_ticket){.period = m->period, .probe = false};
    return true;
}

static void m_record(model *m, int64_t now, const breaker_ticket *t, breaker_outcome o,
                     uint64_t rnd)
{
    if (t->period != m->period) return;
    if (m->state == BREAKER_CLOSED && !t->probe) {
        if (o != BREAKER_SUCCESS && o != BREAKER_FAILURE) return;
        assert_true(m->nev < M_MAX_EVENTS);
        m->ev_t[m->nev] = now;
        m->ev_fail[m->nev] = o == BREAKER_FAILURE;
        m->nev++;
        if (o != BREAKER_FAILURE) return;
        int calls, fails;
        m_window(m, now, &calls, &fails);
        if (m_run(m) >= m->c.consecutive_failures ||
            (calls >= m->c.window_min_calls && fails * 100 >= m->c.failure_rate_pct * calls))
            m_trip(m, now, rnd);
    } else if (m->state == BREAKER_HALF_OPEN && t->probe) {
        m->probes--;
        if (o == BREAKER_FAILURE) {
            m_trip(m, now, rnd);
        } else if (o == BREAKER_SUCCESS) {
            m->state = BREAKER_CLOSED;
            m->closed_since = now;
            m->period++;
            m->nev = 0;
            m->probes = 0;
        }
    }
}

static void m_snapshot(const model *m, int64_t now, breaker_snapshot *s)
{
    breaker_state st = m_state(m, now);
    memset(s, 0, sizeof *s);
    s->state = st;
    s->consecutive_failures = st == BREAKER_CLOSED ? m_run(m) : 0;
    m_window(m, now, &s->window_calls, &s->window_failures);
    s->consecutive_opens = m->opens;
    if (st == BREAKER_CLOSED && m->opens > 0 && now - m->closed_since >= m->c.stable_ms)
        s->consecutive_opens = 0;
    s->opens_total = m->total;
    s->probes_in_flight = m->state == BREAKER_HALF_OPEN ? m->probes : 0;
    s->open_until_ms = st == BREAKER_OPEN ? m->open_until : -1;
    bool paused = m->paused >= 0 && now < m->paused;
    s->paused_until_ms = paused ? m->paused : -1;
    if (st == BREAKER_HALF_OPEN && m->state == BREAKER_HALF_OPEN &&
        m->probes >= m->c.half_open_probes)
        s->next_allow_ms = -1;
    else {
        int64_t t = st == BREAKER_OPEN ? m->open_until : now;
        s->next_allow_ms = paused && m->paused > t ? m->paused : t;
    }
}

static breaker_config random_config(uint64_t *r)
{
    breaker_config c = breaker_config_default();
    if (rng_range(r, 0, 3) == 0) return c;
    static const int64_t windows[] = {100, 1000, 2000, 10000};
    c.consecutive_failures = (int)rng_range(r, 1, 6);
    c.window_ms = windows[rng_range(r, 0, 3)];
    c.window_buckets = (int)rng_range(r, 1, 10);
    c.window_min_calls = (int)rng_range(r, 1, 20);
    c.failure_rate_pct = (int)(rng_range(r, 0, 2) == 0 ? 100 : rng_range(r, 1, 100));
    c.open_base_ms = rng_range(r, 1, 5000);
    c.open_max_ms = c.open_base_ms * rng_range(r, 1, 16);
    c.jitter_pct = (int)(rng_range(r, 0, 1) ? 20 : rng_range(r, 0, 100));
    c.half_open_probes = (int)rng_range(r, 1, 3);
    c.stable_ms = rng_range(r, 0, 2) == 0 ? 0 : rng_range(r, 1, 60000);
    return c;
}

#define MODEL_SEQUENCES 10000
#define MODEL_STEPS 300
#define MODEL_SEED 0x6272696465ULL /* "bride" */

typedef struct pair {
    breaker_ticket real, ref;
} pair;

static int mismatch(uint64_t seed, int seq, int step, const char *what, int64_t a, int64_t b)
{
    print_error("model mismatch: seed=%#llx sequence=%d step=%d %s: breaker=%lld model=%lld\n",
                (unsigned long long)seed, seq, step, what, (long long)a, (long long)b);
    return 1;
}

#define AGREE(what, a, b)                                                                          \
    do {                                                                                           \
        if ((int64_t)(a) != (int64_t)(b)) {                                                        \
            mismatch(MODEL_SEED, seq, step, what, (int64_t)(a), (int64_t)(b));                     \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

static void test_model_random_sequences(void **state)
{
    static model m;
    pair out[64];
    uint64_t stats[4] = {0}; /* trips, probes, closes-from-half-open, refusals while open */
    for (int seq = 0; seq < MODEL_SEQUENCES; seq++) {
        uint64_t r = MODEL_SEED ^ ((uint64_t)seq * 0x9e3779b97f4a7c15ULL);
        breaker_config c = random_config(&r);
        breaker *b = breaker_new(&c);
        assert_non_null(b);
        memset(&m, 0, sizeof m);
        m.c = c;
        m.state = BREAKER_CLOSED;
        m.paused = -1;
        int nout = 0;
        int64_t now = rng_range(&r, 0, 100000);
        /* per sequence, how failure-prone the target is */
        int fail_w = (int)rng_range(&r, 10, 90);
        for (int step = 0; step < MODEL_STEPS; step++) {
            int op = (int)rng_range(&r, 0, 99);
            uint64_t rnd = rng_next(&r);
            if (op < 35) { /* allow */
                breaker_ticket tr = {0}, tm = {0};
                breaker_state before = m_state(&m, now);
                bool ar = breaker_allow(b, now, &tr);
                bool am = m_allow(&m, now, &tm);
                AGREE("allow", ar, am);
                if (before == BREAKER_OPEN) {
                    AGREE("allowed while open", ar, 0);
                    stats[3]++;
                }
                if (ar) {
                    AGREE("ticket.probe", tr.probe, tm.probe);
                    stats[1] += tr.probe;
                    if (nout < 64) {
                        out[nout++] = (pair){tr, tm};
                    } else { /* too many in flight: finish this one at once */
                        breaker_record(b, now, &tr, BREAKER_ABANDONED, rnd);
                        m_record(&m, now, &tm, BREAKER_ABANDONED, rnd);
                    }
                }
            } else if (op < 75) { /* record one outstanding ticket */
                if (nout == 0) continue;
                int i = (int)rng_range(&r, 0, nout - 1);
                /* fail_w% failures; of the rest, 60% successes, 20% neutral, 20% abandoned */
                int o = (int)rng_range(&r, 0, 99);
                breaker_outcome oc = BREAKER_FAILURE;
                if (o >= fail_w) {
                    int rest = (int)rng_range(&r, 0, 9);
                    oc = rest < 6   ? BREAKER_SUCCESS
                         : rest < 8 ? BREAKER_NEUTRAL
                                    : BREAKER_ABANDONED;
                }
                breaker_state before = breaker_get_state(b, now);
                breaker_record(b, now, &out[i].real, oc, rnd);
                m_record(&m, now, &out[i].ref, oc, rnd);
                breaker_state after = breaker_get_state(b, now);
                stats[0] += after == BREAKER_OPEN && before != BREAKER_OPEN;
                stats[2] += before == BREAKER_HALF_OPEN && after == BREAKER_CLOSED;
                out[i] = out[--nout];
            } else if (op < 97) { /* time passes */
                int k = (int)rng_range(&r, 0, 9);
                now += k < 4   ? rng_range(&r, 0, 50)
                       : k < 8 ? rng_range(&r, 0, 2000)
                               : rng_range(&r, 0, c.open_max_ms * 2);
            } else { /* a 429 with Retry-After */
                int64_t until = now + rng_range(&r, 0, 20000);
                breaker_pause(b, until);
                if (until > m.paused) m.paused = until;
            }
            breaker_snapshot sr, sm;
            AGREE("state", breaker_get_state(b, now), m_state(&m, now));
            breaker_get_snapshot(b, now, &sr);
            m_snapshot(&m, now, &sm);
            AGREE("snapshot.state", sr.state, sm.state);
            AGREE("consecutive_failures", sr.consecutive_failures, sm.consecutive_failures);
            AGREE("window_calls", sr.window_calls, sm.window_calls);
            AGREE("window_failures", sr.window_failures, sm.window_failures);
            AGREE("consecutive_opens", sr.consecutive_opens, sm.consecutive_opens);
            AGREE("opens_total", sr.opens_total, sm.opens_total);
            AGREE("probes_in_flight", sr.probes_in_flight, sm.probes_in_flight);
            AGREE("open_until_ms", sr.open_until_ms, sm.open_until_ms);
            AGREE("paused_until_ms", sr.paused_until_ms, sm.paused_until_ms);
            AGREE("next_allow_ms", sr.next_allow_ms, sm.next_allow_ms);
            AGREE("retry_at", breaker_retry_at_ms(b, now), sm.next_allow_ms);
            if (sr.probes_in_flight > c.half_open_probes)
                AGREE("probes over K", sr.probes_in_flight, c.half_open_probes);
        }
        breaker_free(b);
    }
    /* the sequences did exercise every transition, many times */
    print_message("model: %d sequences x %d steps, seed %#llx: %llu trips, %llu probes, %llu "
                  "closes from half-open, %llu refusals while open\n",
                  MODEL_SEQUENCES, MODEL_STEPS, (unsigned long long)MODEL_SEED,
                  (unsigned long long)stats[0], (unsigned long long)stats[1],
                  (unsigned long long)stats[2], (unsigned long long)stats[3]);
    assert_true(stats[0] > 10000 && stats[1] > 10000 && stats[2] > 1000 && stats[3] > 10000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_free_config),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_consecutive_failures_trip_at_five),
        cmocka_unit_test(test_failure_rate_trips),
        cmocka_unit_test(test_window_slides),
        cmocka_unit_test(test_neutral_never_trips),
        cmocka_unit_test(test_open_allows_nothing),
        cmocka_unit_test(test_open_wait_grows_and_caps),
        cmocka_unit_test(test_open_wait_jitter),
        cmocka_unit_test(test_half_open_exactly_k_probes),
        cmocka_unit_test(test_probe_failure_reopens_longer),
        cmocka_unit_test(test_stale_closed_tickets_ignored),
        cmocka_unit_test(test_stable_period_resets_multiplier),
        cmocka_unit_test(test_pause),
        cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_model_random_sequences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

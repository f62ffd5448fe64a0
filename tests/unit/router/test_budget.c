/* Unit tests for router/budget.c with a fake store and a fake clock: the
 * reservation math, FIFO waiters behind one lease call, release on
 * failure, unshipped accounting, period rollover, the database down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "router/budget.h"

#define USD 1000000000000LL
#define DAY1 1796515200LL /* 2026-12-06 00:00:00 UTC, a Sunday */

static int64_t now_ms_v = 1000000, wall_ms_v = (DAY1 + 3600) * 1000;
static int64_t fake_now(void)
{
    return now_ms_v;
}
static int64_t fake_wall(void)
{
    return wall_ms_v;
}

/* ------------------------------------------------------------ fake store */

typedef struct fake {
    budget_store base;
    bool down;
    int leases, syncs, sweeps;
    budget_item *items; /* the call in flight */
    int n;
    bool is_lease;
    budget_store_cb cb;
    void *ctx;
    /* the database: spent and held of the one budget the tests look at */
    int64_t spent, held;
    char released[96]; /* release_instance's last instance */
    int releases;
} fake;

static int f_call(budget_store *s, bool lease, budget_item *items, int n, budget_store_cb cb,
                  void *ctx)
{
    fake *f = (fake *)s;
    if (f->down) return -1;
    assert_null(f->cb); /* one call at a time */
    f->items = items;
    f->n = n;
    f->is_lease = lease;
    f->cb = cb;
    f->ctx = ctx;
    s->queries++;
    return 0;
}
static int f_lease(budget_store *s, const char *inst, budget_item *items, int n, int64_t ttl,
                   budget_store_cb cb, void *ctx)
{
    ((fake *)s)->leases++;
    return f_call(s, true, items, n, cb, ctx);
}
static int f_sync(budget_store *s, const char *inst, budget_item *items, int n, int64_t ttl,
                  budget_store_cb cb, void *ctx)
{
    ((fake *)s)->syncs++;
    return f_call(s, false, items, n, cb, ctx);
}
static void f_sweep(budget_store *s, int64_t orphan_ttl_ms)
{
    ((fake *)s)->sweeps++;
}
static bool f_up(const budget_store *s)
{
    return !((const fake *)s)->down;
}
static void f_free(budget_store *s) {}
static void f_release_instance(budget_store *s, const char *inst)
{
    fake *f = (fake *)s;
    snprintf(f->released, sizeof f->released, "%s", inst);
    f->releases++;
}
static const budget_store_ops fake_ops = {f_lease, f_sync, f_sweep,           NULL,
                                          f_up,    f_free, f_release_instance};

/* Answers the call in flight like bridle_budget_lease/_sync would, on
 * f->spent and f->held: a lease grants want if spent + held + need fits. */
static void answer(fake *f)
{
    assert_non_null(f->cb);
    for (int i = 0; i < f->n; i++) {
        budget_item *it = &f->items[i];
        if (f->is_lease) {
            if (strcmp(it->scope, "key") == 0) f->held = it->held_pusd; /* one gateway */
            bool ok = f->spent + f->held + it->need_pusd <= it->limit_pusd;
            int64_t room = it->limit_pusd - f->spent - f->held;
            it->granted_pusd = ok ? (it->want_pusd < room ? it->want_pusd : room) : 0;
            if (ok && it->granted_pusd < it->need_pusd) it->granted_pusd = it->need_pusd;
            f->held += it->granted_pusd;
        } else
            f->held = it->held_pusd;
        it->spent_pusd = f->spent;
        it->total_held_pusd = f->held;
    }
    budget_store_cb cb = f->cb;
    f->cb = NULL;
    cb(f->ctx, NULL);
}

static fake F;

static budget *new_budget(bool fail_open)
{
    memset(&F, 0, sizeof F);
    F.base.ops = &fake_ops;
    budget_options o = {.instance = "test:1:x",
                        .lease_ttl_ms = 30000,
                        .lease_max_pusd = 5 * USD,
                        .fail_open = fail_open,
                        .now_ms = fake_now,
                        .wall_ms = fake_wall};
    wall_ms_v = (DAY1 + 3600) * 1000;
    return budget_new(NULL, &F.base, &o);
}

/* a key with a daily budget of $1.00 */
static const int64_t key_limits[N_PERIODS] = {USD, 0, 0};

static budget_request req_of(int64_t amount)
{
    budget_request r = {
        .key_id = "k1", .key_limits = key_limits, .ts_us = wall_ms_v * 1000, .amount_pusd = amount};
    return r;
}

typedef struct waiter {
    budget_hold h;
    budget_status st;
    int order;
} waiter;
static int calls;
static void on_done(void *ctx, budget_status st)
{
    waiter *w = ctx;
    w->st = st;
    w->order = ++calls;
}

/* ------------------------------------------------------------ tests */

static void test_periods(void **state)
{
    (void)state;
    int64_t t = DAY1 + 13 * 3600 + 5; /* Sunday 13:00:05 */
    assert_int_equal(budget_period_start(PERIOD_DAY, t), DAY1);
    assert_int_equal(budget_period_start(PERIOD_WEEK, t), DAY1 - 6 * 86400); /* Monday 11-30 */
    assert_int_equal(budget_period_start(PERIOD_WEEK, DAY1 - 6 * 86400), DAY1 - 6 * 86400);
    assert_int_equal(budget_period_start(PERIOD_MONTH, t), DAY1 - 5 * 86400); /* 12-01 */
    assert_int_equal(budget_period_end(PERIOD_MONTH, DAY1 - 5 * 86400), DAY1 + 26 * 86400);
    assert_int_equal(budget_period_end(PERIOD_DAY, DAY1), DAY1 + 86400);
    /* 2000-02-29 23:59:59 is in February 2000 */
    assert_int_equal(budget_period_start(PERIOD_MONTH, 951782400 + 86399), 949363200);
    assert_int_equal(budget_period_start(PERIOD_DAY, 951782400 + 86399), 951782400);
    assert_int_equal(budget_period_start(PERIOD_DAY, -1), -86400); /* floor, not truncation */
    assert_int_equal(budget_period_end(PERIOD_MONTH, 949363200), 951868800); /* Feb 2000 */
}

/* The integer calendar against libc's gmtime/timegm, every 7 hours and a
 * bit over 1900..2200. */
static void test_periods_match_libc(void **state)
{
    (void)state;
    for (int64_t t = -2208988800LL; t < 7258118400LL; t += 7 * 3600 + 13) {
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        tm.tm_mday = 1;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        int64_t start = (int64_t)timegm(&tm);
        assert_int_equal(budget_period_start(PERIOD_MONTH, t), start);
        tm.tm_mon++;
        assert_int_equal(budget_period_end(PERIOD_MONTH, start), (int64_t)timegm(&tm));
        gmtime_r(&tt, &tm);
        int64_t wk = budget_period_start(PERIOD_WEEK, t);
        time_t wt = (time_t)wk;
        struct tm wm;
        gmtime_r(&wt, &wm);
        assert_int_equal(wm.tm_wday, 1); /* a Monday */
        assert_true(t - wk >= 0 && t - wk < 7 * 86400);
    }
}

static void test_reserve_from_lease_then_locally(void **state)
{
    (void)state;
    budget *b = new_budget(false);
    int64_t E = 50000000000LL; /* $0.05 */
    waiter w1 = {0};
    budget_request r = req_of(E);
    assert_int_equal(budget_reserve(b, &w1.h, &r, on_done, &w1), BUDGET_WAIT);
    assert_int_equal(F.leases, 1);
    assert_int_equal(F.n, 1);
    assert_int_equal(F.items[0].need_pusd, E);
    assert_true(F.items[0].want_pusd >= 4 * E); /* a slice, not just this request */
    assert_int_equal(F.items[0].limit_pusd, USD);
    assert_int_equal(F.items[0].start_s, DAY1);
    assert_string_equal(F.items[0].scope, "key");
    assert_string_equal(F.items[0].period, "day");
    answer(&F);
    assert_int_equal(w1.st, BUDGET_OK);
    int64_t G = F.held;
    /* the next three fit in what is left of the slice: no database call */
    waiter w[3] = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(budget_reserve(b, &w[i].h, &r, on_done, &w[i]), BUDGET_OK);
    assert_int_equal(F.leases, 1);
    budget_stats st = budget_get_stats(b);
    assert_int_equal(st.held_pusd, G);
    assert_int_equal(st.local_admits, 3);
    assert_int_equal(st.lease_admits, 1);
    assert_int_equal(st.store_queries, 1);
    budget_free(b);
}

static void test_fifo_waiters_one_lease(void **state)
{
    (void)state;
    budget *b = new_budget(false);
    int64_t E = 100000000000LL; /* $0.10 */
    waiter w[4] = {0};
    calls = 0;
    budget_request r = req_of(E);
    for (int i = 0; i < 4; i++)
        assert_int_equal(budget_reserve(b, &w[i].h, &r, on_done, &w[i]), BUDGET_WAIT);
    assert_int_equal(F.leases, 1); /* one call in flight; the rest queue behind it */
    assert_int_equal(budget_get_stats(b).waiting, 4);
    assert_true(F.items[0].want_pusd >= 4 * E); /* served from its grant */
    answer(&F);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(w[i].st, BUDGET_OK);
        assert_int_equal(w[i].order, i + 1);
    }
    assert_int_equal(F.leases, 1);
    assert_int_equal(budget_get_stats(b).waiting, 0);
    budget_free(b);
}

static void test_refused_when_used_up(void **state)
{
    (void)state;
    budget *b = new_budget(false);
    F.spent = 970000000000LL; /* $0.97 of $1.00 */
    waiter w = {0}, v = {0};
    calls = 0;
    budget_request r = req_of(50000000000LL);
    budget_request small = req_of(10000000000LL);
    assert_int_equal(budget_reserve(b, &w.h, &r, on_done, &w), BUDGET_WAIT);
    assert_int_equal(budget_reserve(b, &v.h, &small, on_done, &v), BUDGET_WAIT);
    answer(&F);
    assert_int_equal(w.st, BUDGET_EXCEEDED);
    assert_string_equal(w.h.message,
                        "Budget exceeded: key \"k1\" daily budget of $1.00 is used up ($0.97 "
                        "spent, this request may cost up to $0.05); it resets at "
                        "2026-12-07T00:00:00Z (in 23h 0m). Ask for fewer tokens (max_tokens), use "
                        "a cheaper model, or raise the budget");
    assert_false(w.h.reserved);
    /* the smaller request behind it needs less than was refused: it gets its own lease */
    assert_int_equal(v.order, 0); /* still waiting */
    assert_int_equal(F.leases, 2);
    assert_int_equal(F.items[0].need_pusd, 10000000000LL);
    answer(&F);
    assert_int_equal(v.st, BUDGET_OK);
    assert_int_equal(budget_get_stats(b).refused, 1);
    budget_free(b);
}

static void test_release_and_settle(void **state)
{
    (void)state;
    budget *b = new_budget(false);
    int64_t E = 50000000000LL, A = 30000000000LL;
    waiter w = {0};
    budget_request r = req_of(E);
    budget_reserve(b, &w.h, &r, on_done, &w);
    answer(&F);
    int64_t G = F.held;
    /* a failed request gives back its whole reservation */
    budget_release(b, &w.h);
    assert_false(w.h.reserved);
    budget_release(b, &w.h); /* once only */
    waiter x[2] = {0};
    assert_int_equal(budget_reserve(b, &x[0].h, &r, on_done, &x[0]), BUDGET_OK);
    /* settled: A unshipped, E - A back in the slice; the lease is unchanged */
    budget_settle(b, &x[0].h, A);
    assert_int_equal(budget_get_stats(b).held_pusd, G);
    bool team;
    assert_int_equal(budget_share_pct(b, &r, &team), 3); /* (0 + 0.03) / 1.00 */
    assert_false(team);
    /* the ledger ships it: unshipped -= A (the database's spent has it now) */
    usage_event ev;
    memset(&ev, 0, sizeof ev);
    strcpy(ev.key_id, "k1");
    ev.ts_us = r.ts_us;
    ev.cost_pusd = A;
    budget_shipped(b, &ev);
    assert_int_equal(budget_get_stats(b).held_pusd, G - A);
    budget_shipped(b, &ev); /* clamped at 0 */
    assert_int_equal(budget_get_stats(b).held_pusd, G - A);
    assert_int_equal(budget_share_pct(b, &r, &team), 3);
    /* an event of an earlier process (spool replay) is not ours */
    budget_reserve(b, &x[1].h, &r, on_done, &x[1]);
    budget_settle(b, &x[1].h, A);
    ev.ts_us = 1000;
    budget_shipped(b, &ev);
    assert_int_equal(budget_get_stats(b).held_pusd, G - A);
    /* the sync sends the whole lease: avail + reserved + unshipped, and the
     * unshipped part of it (kept as an orphan if this process dies) */
    budget_sync_now(b);
    assert_int_equal(F.syncs, 1);
    assert_int_equal(F.items[0].held_pusd, G - A);
    assert_int_equal(F.items[0].unshipped_pusd, A);
    answer(&F);
    /* a lease call sends it too */
    waiter y = {0};
    budget_request big = req_of(G);
    assert_int_equal(budget_reserve(b, &y.h, &big, on_done, &y), BUDGET_WAIT);
    assert_true(F.is_lease);
    assert_int_equal(F.items[0].unshipped_pusd, A);
    answer(&F);
    assert_int_equal(y.st, BUDGET_OK);
    budget_release(b, &y.h);
    budget_free(b);
}

static void test_idle_slack_and_period_rollover(void **state)
{
    (void)state;
    budget *b = new_budget(false);
    int64_t E = 50000000000LL;
    waiter w = {0};
    budget_request r = req_of(E);
    budget_reserve(b, &w.h, &r, on_done, &w);
    answer(&F);
    budget_settle(b, &w.h, E);
    usage_event ev;
    memset(&ev, 0, sizeof ev);
    strcpy(ev.key_id, "k1");
    ev.ts_us = r.ts_us;
    ev.cost_pusd = E;
    budget_shipped(b, &ev);
    F.spent += E;
    /* used since the last sync: its slack stays */
    budget_sync_now(b);
    assert_true(F.items[0].held_pusd > 0);
    answer(&F);
    /* the next day: a new budget row; the old one, idle, gives its slack back */
    wall_ms_v += 86400 * 1000;
    now_ms_v += 1000;
    waiter v = {0};
    budget_request r2 = req_of(E);
    assert_int_equal(budget_reserve(b, &v.h, &r2, on_done, &v), BUDGET_WAIT);
    assert_int_equal(F.items[0].start_s, DAY1 + 86400);
    F.spent = 0, F.held = 0; /* the fake holds one row: the new day's */
    answer(&F);
    assert_int_equal(v.st, BUDGET_OK);
    assert_int_equal(budget_get_stats(b).tracked, 2);
    budget_sync_now(b);
    assert_int_equal(F.n, 2);
    int old = F.items[0].start_s == DAY1 ? 0 : 1;
    assert_int_equal(F.items[old].held_pusd, 0); /* idle: given back */
    answer(&F);
    assert_int_equal(budget_get_stats(b).tracked, 1); /* the past day is forgotten */
    budget_free(b);
}

static void test_database_down(void **state)
{
    (void)state;
    budget *b = new_budget(false);
    waiter w = {0};
    budget_request r = req_of(50000000000LL);
    budget_reserve(b, &w.h, &r, on_done, &w);
    answer(&F);
    /* with slack in hand it keeps admitting */
    F.down = true;
    waiter x = {0};
    assert_int_equal(budget_reserve(b, &x.h, &r, on_done, &x), BUDGET_OK);
    /* a request that needs a lease: 503 */
    waiter big = {0};
    budget_request rb = req_of(USD / 2);
    assert_int_equal(budget_reserve(b, &big.h, &rb, on_done, &big), BUDGET_UNAVAILABLE);
    assert_non_null(strstr(big.h.message, "cannot check this request against its budgets"));
    assert_false(big.h.reserved);
    /* the slack goes stale after the lease's TTL: no more admissions from it */
    now_ms_v += 30000;
    waiter y = {0};
    assert_int_equal(budget_reserve(b, &y.h, &r, on_done, &y), BUDGET_UNAVAILABLE);
    budget_free(b);
    /* fail_open admits instead */
    b = new_budget(true);
    F.down = true;
    waiter z = {0};
    assert_int_equal(budget_reserve(b, &z.h, &r, on_done, &z), BUDGET_OK);
    assert_false(z.h.reserved);
    budget_free(b);
}

static void test_extend_and_scopes(void **state)
{
    (void)state;
    budget *b = new_budget(false);
    static const int64_t team_limits[N_PERIODS] = {0, 0, 10 * USD};
    static const int64_t total_limits[N_PERIODS] = {0, 100 * USD, 0};
    budget_request r = {.key_id = "k1",
                        .key_limits = key_limits,
                        .team = "alpha",
                        .team_limits = team_limits,
                        .total_limits = total_limits,
                        .ts_us = wall_ms_v * 1000,
                        .amount_pusd = 10000000000LL};
    waiter w = {0};
    assert_int_equal(budget_reserve(b, &w.h, &r, on_done, &w), BUDGET_WAIT);
    assert_int_equal(F.n, 3); /* key day, team month, total week */
    assert_string_equal(F.items[1].scope, "team");
    assert_string_equal(F.items[1].period, "month");
    assert_string_equal(F.items[2].scope, "total");
    assert_string_equal(F.items[2].id, "");
    assert_int_equal(F.items[2].start_s, DAY1 - 6 * 86400);
    answer(&F);
    assert_int_equal(w.st, BUDGET_OK);
    assert_int_equal(w.h.amount, 10000000000LL);
    /* a fail-over to a dearer candidate raises it; within the slice: no call */
    assert_int_equal(budget_extend(b, &w.h, 20000000000LL, on_done, &w), BUDGET_OK);
    assert_int_equal(w.h.amount, 20000000000LL);
    assert_int_equal(F.leases, 1);
    budget_settle(b, &w.h, 0);
    assert_int_equal(budget_get_stats(b).held_pusd, F.held);
    budget_free(b);
}

static int drained;
static void on_drained(void *ctx)
{
    drained++;
}

static void test_drain_gives_leases_back(void **state)
{
    (void)state;
    budget *b = new_budget(false);
    int64_t E = 50000000000LL;
    waiter w = {0}, x = {0};
    budget_request r = req_of(E);
    budget_reserve(b, &w.h, &r, on_done, &w);
    answer(&F);
    assert_int_equal(budget_reserve(b, &x.h, &r, on_done, &x), BUDGET_OK);
    budget_settle(b, &w.h, E); /* shipped below */
    usage_event ev;
    memset(&ev, 0, sizeof ev);
    strcpy(ev.key_id, "k1");
    ev.ts_us = r.ts_us;
    ev.cost_pusd = E;
    budget_shipped(b, &ev);
    drained = 0;
    budget_drain(b, on_drained, NULL);
    assert_int_equal(drained, 0);
    assert_int_equal(F.syncs, 1);
    assert_int_equal(F.items[0].held_pusd, E); /* only x's reservation stays held */
    answer(&F);
    assert_int_equal(drained, 1);
    budget_settle(b, &x.h, 0);
    budget_free(b);
    /* nothing held: done at once */
    b = new_budget(false);
    budget_drain(b, on_drained, NULL);
    assert_int_equal(drained, 2);
    budget_free(b);
}

/* A restart on a spool: the previous run's instance id is read from
 * <spool>/instance, this one's written, and the previous run's leases are
 * released once the spool has replayed. */
static void test_take_over_previous_instance(void **state)
{
    (void)state;
    char dir[] = "/tmp/bridle-test-budget-XXXXXX";
    assert_non_null(mkdtemp(dir));
    budget *b = new_budget(false);
    assert_int_equal(budget_take_over(b, dir), 0);
    assert_string_equal(budget_previous_instance(b), ""); /* the first run on it */
    budget_spool_replayed(b);
    assert_int_equal(F.releases, 0);
    budget_free(b);
    char path[512], line[128] = "";
    snprintf(path, sizeof path, "%s/instance", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "test:1:x\n");
    /* the next run */
    memset(&F, 0, sizeof F);
    F.base.ops = &fake_ops;
    budget_options o = {.instance = "test:2:y", .now_ms = fake_now, .wall_ms = fake_wall};
    b = budget_new(NULL, &F.base, &o);
    assert_int_equal(budget_take_over(b, dir), 0);
    assert_string_equal(budget_previous_instance(b), "test:1:x");
    assert_int_equal(F.releases, 0); /* not before the spool has replayed */
    budget_spool_replayed(b);
    assert_int_equal(F.releases, 1);
    assert_string_equal(F.released, "test:1:x");
    budget_free(b);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "test:2:y\n");
    unlink(path);
    rmdir(dir);
}

/* A cost already in PostgreSQL's spent but not yet acknowledged to this
 * process (still unshipped here) is not counted twice in a refusal. */
static void test_refusal_counts_a_shipped_cost_once(void **state)
{
    (void)state;
    budget *b = new_budget(false);
    waiter w = {0}, v = {0};
    budget_request half = req_of(USD / 2);
    assert_int_equal(budget_reserve(b, &w.h, &half, on_done, &w), BUDGET_WAIT);
    answer(&F);
    assert_int_equal(w.st, BUDGET_OK);
    budget_settle(b, &w.h, 4 * USD / 10); /* $0.40: unshipped here */
    F.spent = 4 * USD / 10;               /* ...and already committed there */
    budget_request big = req_of(9 * USD / 10);
    assert_int_equal(budget_reserve(b, &v.h, &big, on_done, &v), BUDGET_WAIT);
    answer(&F);
    assert_int_equal(v.st, BUDGET_EXCEEDED);
    assert_non_null(strstr(v.h.message, "($0.40 spent,"));
    budget_free(b);
}

/* A batch's budgets go to PostgreSQL as array literals: only those with a
 * limit, ids quoted and escaped. */
static void test_batch_arrays(void **state)
{
    int64_t key[N_PERIODS] = {5, 0, 7}, team[N_PERIODS] = {0, 0, 0}, total[N_PERIODS] = {0, 9, 0};
    budget_request req = {.key_id = "k\"1\\",
                          .key_limits = key,
                          .team = "t",
                          .team_limits = team,
                          .total_limits = total};
    buf a[4] = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT};
    assert_int_equal(budget_request_arrays(&req, a), 3);
    assert_string_equal(a[0].data, "{\"key\",\"key\",\"total\"}");
    assert_string_equal(a[1].data, "{\"k\\\"1\\\\\",\"k\\\"1\\\\\",\"\"}");
    assert_string_equal(a[2].data, "{\"day\",\"month\",\"week\"}");
    assert_string_equal(a[3].data, "{5,7,9}");
    for (int i = 0; i < 4; i++)
        buf_free(&a[i]);
    budget_request none = {.key_id = "k"};
    assert_int_equal(budget_request_arrays(&none, a), 0);
    assert_string_equal(a[0].data, "{}");
    assert_string_equal(a[3].data, "{}");
    for (int i = 0; i < 4; i++)
        buf_free(&a[i]);
}

static void test_batch_refused_message(void **state)
{
    char msg[600];
    budget_say_batch_refused("team", "squad", "week", 1000000000000, 250000000000, 500000000000,
                             400000000000, msg, sizeof msg);
    assert_non_null(strstr(msg, "Budget exceeded: team \"squad\" weekly budget of $1.00 cannot "
                                "hold this batch, whose requests may cost up to $0.40 together: "
                                "$0.25 is left ($0.25 spent, $0.50 held"));
    budget_say_batch_refused("total", "", "day", 1000000000000, 2000000000000, 0, 1, msg,
                             sizeof msg);
    assert_non_null(strstr(msg, "the gateway's total daily budget"));
    assert_non_null(strstr(msg, "$0.00 is left"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_periods),
        cmocka_unit_test(test_periods_match_libc),
        cmocka_unit_test(test_reserve_from_lease_then_locally),
        cmocka_unit_test(test_fifo_waiters_one_lease),
        cmocka_unit_test(test_refused_when_used_up),
        cmocka_unit_test(test_release_and_settle),
        cmocka_unit_test(test_idle_slack_and_period_rollover),
        cmocka_unit_test(test_database_down),
        cmocka_unit_test(test_extend_and_scopes),
        cmocka_unit_test(test_drain_gives_leases_back),
        cmocka_unit_test(test_take_over_previous_instance),
        cmocka_unit_test(test_refusal_counts_a_shipped_cost_once),
        cmocka_unit_test(test_batch_arrays),
        cmocka_unit_test(test_batch_refused_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

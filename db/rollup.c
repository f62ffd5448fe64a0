/* The rollup step in the gateway (db/rollup.h). */
#include "db/rollup.h"

#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/pgconn.h"
#include "lib/log.h"
#include "lib/util.h"

#define RETENTION_EVERY_MS (24LL * 3600 * 1000)

static const char ROLLUP_SQL[] = "SELECT bridle_rollup($1::integer)";
static const char RETENTION_SQL[] =
    "SELECT bridle_rollup_retention($1::integer, $2::integer, $3::integer)";

struct rollup {
    struct event_base *base;
    pgconn *pg;
    rollup_options opt;
    char batch[24], days[3][24];
    struct event timer;
    int64_t sent_ms;        /* when the call in flight went out */
    int64_t last_answer_ms; /* 0: none yet */
    int64_t next_retention_ms;
    bool warned;
    rollup_stats st;
};

static void schedule(rollup *r, int64_t ms)
{
    struct timeval tv = util_ms_timeval(ms);
    evtimer_add(&r->timer, &tv);
}

static bool answer_ok(rollup *r, PGresult *res, const char *error, const char *what)
{
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        if (r->warned) log_info("rollup: %s works again", what);
        r->warned = false;
        return true;
    }
    r->st.failures++;
    if (!r->warned)
        log_warn("rollup: %s failed (%s); retrying every %d ms (readers stay exact: they add "
                 "what is still pending)",
                 what,
                 res     ? PQresultErrorMessage(res)
                 : error ? error
                         : "no answer",
                 r->opt.interval_ms);
    r->warned = true;
    return false;
}

static void on_rollup(void *ctx, PGresult *res, const char *error)
{
    rollup *r = ctx;
    if (!answer_ok(r, res, error, "bridle_rollup()")) {
        r->st.catching_up = false;
        schedule(r, r->opt.interval_ms);
        return;
    }
    int64_t now = util_now_ms();
    int64_t moved = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    r->st.runs++;
    r->st.moved += moved;
    r->st.last_moved = moved;
    r->st.last_ms = now - r->sent_ms;
    r->last_answer_ms = now;
    /* a full batch: more is likely waiting; go again after the loop's turn */
    r->st.catching_up = moved >= r->opt.batch;
    schedule(r, r->st.catching_up ? 0 : r->opt.interval_ms);
}

static void on_retention(void *ctx, PGresult *res, const char *error)
{
    rollup *r = ctx;
    if (answer_ok(r, res, error, "bridle_rollup_retention()")) {
        int64_t n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        r->st.retention_runs++;
        r->st.retention_deleted += n;
        if (n) log_info("rollup: retention deleted %lld rollup rows", (long long)n);
        r->next_retention_ms = util_now_ms() + RETENTION_EVERY_MS;
    } else {
        r->next_retention_ms = util_now_ms() + 60000; /* try again in a minute */
    }
    schedule(r, 0);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    rollup *r = arg;
    if (!pgconn_idle(r->pg)) {        /* no connection yet, or a call still out */
        if (pgconn_up(r->pg)) return; /* its answer schedules the next one */
        schedule(r, r->opt.interval_ms);
        return;
    }
    r->sent_ms = util_now_ms();
    if (r->sent_ms >= r->next_retention_ms) {
        const char *p[3] = {r->days[0], r->days[1], r->days[2]};
        if (pgconn_send(r->pg, RETENTION_SQL, 3, p, on_retention, r) != 0)
            schedule(r, r->opt.interval_ms);
        return;
    }
    const char *p[1] = {r->batch};
    if (pgconn_send(r->pg, ROLLUP_SQL, 1, p, on_rollup, r) != 0) schedule(r, r->opt.interval_ms);
}

static void on_state(void *ctx, bool up)
{
    rollup *r = ctx;
    if (up && pgconn_idle(r->pg)) schedule(r, 0);
}

rollup *rollup_new(struct event_base *base, const rollup_options *opt)
{
    rollup *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->base = base;
    r->opt = *opt;
    r->opt.database_url = NULL; /* not kept: pgconn has it */
    if (r->opt.interval_ms <= 0) r->opt.interval_ms = 2000;
    if (r->opt.batch <= 0) r->opt.batch = 100000;
    snprintf(r->batch, sizeof r->batch, "%d", r->opt.batch);
    snprintf(r->days[0], sizeof r->days[0], "%d", opt->retention_days_5m);
    snprintf(r->days[1], sizeof r->days[1], "%d", opt->retention_days_1h);
    snprintf(r->days[2], sizeof r->days[2], "%d", opt->retention_days_1d);
    event_assign(&r->timer, base, -1, 0, on_timer, r);
    /* a big batch after an outage can take a while; the loop never waits */
    pgconn_options po = {.query_timeout_ms = 120000, .backoff_max_ms = 5000};
    if (!(r->pg = pgconn_new(base, opt->database_url, &po, on_state, r))) {
        rollup_free(r);
        return NULL;
    }
    schedule(r, r->opt.interval_ms);
    return r;
}

void rollup_free(rollup *r)
{
    if (!r) return;
    evtimer_del(&r->timer);
    pgconn_free(r->pg);
    free(r);
}

rollup_stats rollup_get_stats(const rollup *r)
{
    rollup_stats s = {0};
    if (!r) return s;
    s = r->st;
    s.last_run_ms_ago = r->last_answer_ms ? util_now_ms() - r->last_answer_ms : -1;
    return s;
}

/* Instance heartbeats in bridle_instances (db/instances.h). */
#include "db/instances.h"

#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/pgconn.h"
#include "lib/log.h"
#include "lib/util.h"

/* The upsert and the count in one round trip. The count reads the snapshot
 * taken before the upsert, so this instance is counted as the 1 in front.
 * Rows of instances gone for a day are dropped on the way. */
static const char HEARTBEAT_SQL[] =
    "WITH up AS (INSERT INTO bridle_instances (instance) VALUES ($1) "
    "ON CONFLICT (instance) DO UPDATE SET seen_at = now()), "
    "gone AS (DELETE FROM bridle_instances WHERE seen_at < now() - interval '1 day') "
    "SELECT 1 + count(*) FROM bridle_instances "
    "WHERE instance <> $1 AND seen_at > now() - $2::bigint * interval '1 millisecond'";

struct instances {
    struct event_base *base;
    pgconn *pg;
    char id[128];
    int64_t heartbeat_ms;
    char window_ms[24];
    struct event timer;
    instances_count_fn on_count;
    void *ctx;
    int n;
    int64_t beats;
    bool ok, warned;
};

static void on_result(void *ctx, PGresult *res, const char *error)
{
    instances *in = ctx;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        in->ok = false;
        if (!in->warned)
            log_warn("instances: the heartbeat failed (%s); rate limits keep their shares for %d "
                     "instance(s)",
                     res     ? PQresultErrorMessage(res)
                     : error ? error
                             : "no answer",
                     in->n);
        in->warned = true;
        return;
    }
    int n = atoi(PQgetvalue(res, 0, 0));
    if (n < 1) n = 1;
    if (in->warned) log_info("instances: heartbeats work again (%d instance(s))", n);
    in->warned = false;
    in->ok = true;
    in->beats++;
    if (n != in->n) log_info("instances: %d gateway(s) share this database's rate limits", n);
    in->n = n;
    if (in->on_count) in->on_count(in->ctx, n);
}

static void beat(instances *in)
{
    if (!pgconn_idle(in->pg)) return; /* the last one is still out, or no connection */
    const char *params[2] = {in->id, in->window_ms};
    pgconn_send(in->pg, HEARTBEAT_SQL, 2, params, on_result, in);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    beat(arg);
}

static void on_state(void *ctx, bool up)
{
    if (up) beat(ctx);
}

instances *instances_new(struct event_base *base, const char *conninfo, const char *instance_id,
                         int64_t heartbeat_ms, instances_count_fn on_count, void *ctx)
{
    instances *in = calloc(1, sizeof *in);
    if (!in) return NULL;
    in->base = base;
    in->heartbeat_ms = heartbeat_ms > 0 ? heartbeat_ms : 1000;
    snprintf(in->id, sizeof in->id, "%s", instance_id);
    snprintf(in->window_ms, sizeof in->window_ms, "%lld", (long long)(3 * in->heartbeat_ms));
    in->on_count = on_count;
    in->ctx = ctx;
    in->n = 1;
    event_assign(&in->timer, base, -1, EV_PERSIST, on_timer, in);
    struct timeval tv = util_ms_timeval(in->heartbeat_ms);
    evtimer_add(&in->timer, &tv);
    /* a query slower than a heartbeat is given up: the next one goes out */
    pgconn_options po = {.query_timeout_ms =
                             (int)(in->heartbeat_ms < 1000 ? 1000 : in->heartbeat_ms),
                         .backoff_max_ms = 2000};
    if (!(in->pg = pgconn_new(base, conninfo, &po, on_state, in))) {
        instances_free(in);
        return NULL;
    }
    return in;
}

void instances_free(instances *in)
{
    if (!in) return;
    evtimer_del(&in->timer);
    pgconn_free(in->pg);
    free(in);
}

int instances_count(const instances *in)
{
    return in ? in->n : 1;
}

int64_t instances_beats(const instances *in)
{
    return in ? in->beats : 0;
}

bool instances_ok(const instances *in)
{
    return in && in->ok;
}

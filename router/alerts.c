/* Budget alert delivery (router/alerts.h). */
#include "router/alerts.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/pgconn.h"
#include "lib/log.h"
#include "lib/util.h"
#include "providers/engine.h"
#include "router/router.h"

#define CLAIM_LIMIT 100
#define BACKOFF_BASE_MS 1000
#define BACKOFF_CAP_MS 300000

/* ------------------------------------------------------------ formatting */

void alerts_format_usd(int64_t pusd, int min_decimals, char *out, size_t outlen)
{
    char s[48];
    util_format_pusd(pusd, 12, s, sizeof s);
    char *dot = strchr(s, '.');
    if (dot) {
        char *end = s + strlen(s);
        while (end > dot + 1 + min_decimals && end[-1] == '0')
            *--end = '\0';
        if (end == dot + 1) *dot = '\0';
    }
    snprintf(out, outlen, "%s", s);
}

/* n / 10^scale as a decimal, trailing zeros trimmed ("0.75", "1", "0.505"). */
static void format_scaled(uint64_t n, int scale, char *out, size_t outlen)
{
    uint64_t unit = 1;
    for (int i = 0; i < scale; i++)
        unit *= 10;
    char frac[24];
    snprintf(frac, sizeof frac, "%0*llu", scale, (unsigned long long)(n % unit));
    size_t l = strlen(frac);
    while (l > 0 && frac[l - 1] == '0')
        frac[--l] = '\0';
    if (l)
        snprintf(out, outlen, "%llu.%s", (unsigned long long)(n / unit), frac);
    else
        snprintf(out, outlen, "%llu", (unsigned long long)(n / unit));
}

/* spent / limit in millionths, rounded half up; exact for any int64 inputs. */
static uint64_t share_millionths(int64_t spent, int64_t limit)
{
    if (limit <= 0 || spent <= 0) return 0;
    unsigned __int128 v =
        ((unsigned __int128)(uint64_t)spent * 1000000u + (uint64_t)limit / 2) / (uint64_t)limit;
    return v > UINT64_MAX ? UINT64_MAX : (uint64_t)v;
}

static const char *period_word(const char *period)
{
    if (strcmp(period, "week") == 0) return "weekly";
    if (strcmp(period, "month") == 0) return "monthly";
    return "daily";
}

void alerts_format_text(const alert_row *r, char *out, size_t outlen)
{
    char who[120], pct[24], spent[48], limit[48];
    if (strcmp(r->scope, "total") == 0)
        snprintf(who, sizeof who, "total");
    else
        snprintf(who, sizeof who, "%s \"%s\"", r->scope, r->scope_id);
    format_scaled((uint64_t)r->share_bp, 2, pct, sizeof pct);
    alerts_format_usd(r->spent_pusd, 2, spent, sizeof spent);
    alerts_format_usd(r->limit_pusd, 2, limit, sizeof limit);
    snprintf(out, outlen, "%s %s budget %s%% reached: $%s of $%s (period from %s, resets %s)", who,
             period_word(r->period), pct, spent, limit, r->period_start, r->period_end);
}

void alerts_format_body(const alert_row *r, buf *out)
{
    char thr[24], spent[48], limit[48], share[40], text[512];
    format_scaled((uint64_t)r->share_bp, 4, thr, sizeof thr);
    alerts_format_usd(r->spent_pusd, 1, spent, sizeof spent);
    alerts_format_usd(r->limit_pusd, 1, limit, sizeof limit);
    format_scaled(share_millionths(r->spent_pusd, r->limit_pusd), 6, share, sizeof share);
    alerts_format_text(r, text, sizeof text);
    buf_append_str(out, "{\"type\":\"budget_alert\",\"scope\":");
    buf_append_json_str(out, r->scope, strlen(r->scope));
    buf_append_str(out, ",\"id\":");
    buf_append_json_str(out, r->scope_id, strlen(r->scope_id));
    buf_printf(out,
               ",\"period\":\"%s\",\"period_start\":\"%s\",\"period_end\":\"%s\",\"threshold\":%s,"
               "\"spent_usd\":%s,\"limit_usd\":%s,\"share\":%s,\"fired_at\":\"%s\",\"text\":",
               r->period, r->period_start, r->period_end, thr, spent, limit, share, r->fired_at);
    buf_append_json_str(out, text, strlen(text));
    buf_append_char(out, '}');
}

/* ------------------------------------------------------------ state */

typedef enum {
    OP_NONE,
    OP_DELIVERED, /* set delivered_at */
    OP_FAILED,    /* record last_error; then back off or give up */
    OP_RETRY,     /* count the next attempt (and renew the claim), then POST */
} op_kind;

typedef struct pending {
    struct alerts *owner;
    alert_row row;
    int attempts; /* as counted in the database */
    char error[256];
    op_kind op;
    engine_call *call;
    struct event *timer;   /* the backoff before the next attempt */
    struct pending *next;  /* in owner->all */
    struct pending *qnext; /* in the database queue */
    bool queued;
} pending;

struct alerts {
    engine *eng; /* not the router: a config reload replaces it (router_reload) */
    uint64_t rng;
    struct event_base *base;
    pgconn *pg;
    struct event *tick;
    const char *webhook; /* "" = log only */
    int64_t claim_timeout_ms;
    int64_t post_timeout_ms;
    bool claiming;
    pending *all;
    pending *qhead, *qtail; /* database updates, one at a time */
    pending *in_db;         /* the one whose update is running */
    char instance[96];
};

static void pump(alerts *a);

static void pending_free(pending *p)
{
    alerts *a = p->owner;
    for (pending **pp = &a->all; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    if (p->call) engine_call_cancel(p->call);
    if (p->timer) event_free(p->timer);
    free(p);
}

static void enqueue(pending *p, op_kind op)
{
    alerts *a = p->owner;
    p->op = op;
    if (!p->queued) {
        p->queued = true;
        p->qnext = NULL;
        if (a->qtail)
            a->qtail->qnext = p;
        else
            a->qhead = p;
        a->qtail = p;
    }
    pump(a);
}

static pending *dequeue(alerts *a)
{
    pending *p = a->qhead;
    if (!p) return NULL;
    a->qhead = p->qnext;
    if (!a->qhead) a->qtail = NULL;
    p->queued = false;
    return p;
}

/* ------------------------------------------------------------ the webhook */

static void post_start(pending *p);

/* splitmix64, for the backoff's jitter */
static uint64_t alerts_random(alerts *a)
{
    uint64_t z = (a->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void on_post_done(void *ctx, const engine_result *r)
{
    pending *p = ctx;
    p->call = NULL;
    if (r->ok && r->status >= 200 && r->status < 300) {
        enqueue(p, OP_DELIVERED);
        return;
    }
    if (r->ok)
        snprintf(p->error, sizeof p->error, "the webhook answered HTTP %d", r->status);
    else
        snprintf(p->error, sizeof p->error, "the webhook request failed: %s",
                 r->what ? r->what : "unknown error");
    enqueue(p, OP_FAILED);
}

static void on_post_headers(void *ctx, int status, const upstream_headers *hs) {}
static void on_post_data(void *ctx, const char *data, size_t len) {}

static void post_start(pending *p)
{
    alerts *a = p->owner;
    static const engine_callbacks cb = {on_post_headers, on_post_data, on_post_done};
    provider_conf pc = {
        .name = "alerts.webhook_url",
        .connect_timeout_ms = (int)(a->post_timeout_ms < 3000 ? a->post_timeout_ms : 3000),
        .total_timeout_ms = (int)a->post_timeout_ms,
    };
    upstream_request req;
    upstream_request_init(&req);
    buf_append_str(&req.url, a->webhook);
    alerts_format_body(&p->row, &req.body);
    upstream_request_add_header(&req, "Content-Type", "application/json");
    upstream_request_add_header(&req, "User-Agent", "bridle-alerts");
    upstream_request_add_header(&req, "Expect", "");
    upstream_request_finish_headers(&req);
    p->call = engine_call_start(a->eng, &req, &pc, NULL, &cb, p);
    upstream_request_free(&req);
    if (!p->call) {
        snprintf(p->error, sizeof p->error, "the webhook request could not be started");
        enqueue(p, OP_FAILED);
    }
}

static void on_backoff(evutil_socket_t fd, short what, void *arg)
{
    pending *p = arg;
    enqueue(p, OP_RETRY);
}

static void back_off(pending *p)
{
    alerts *a = p->owner;
    /* the claim is renewed at every attempt: wait well within its timeout */
    int64_t cap =
        a->claim_timeout_ms / 2 < BACKOFF_CAP_MS ? a->claim_timeout_ms / 2 : BACKOFF_CAP_MS;
    int64_t d = BACKOFF_BASE_MS < cap ? BACKOFF_BASE_MS : cap;
    for (int i = 1; i < p->attempts && d < cap; i++)
        d *= 2;
    if (d > cap) d = cap;
    d = d / 2 + (int64_t)(alerts_random(a) % (uint64_t)(d / 2 + 1)); /* half jitter */
    if (!p->timer) p->timer = evtimer_new(a->base, on_backoff, p);
    struct timeval tv = util_ms_timeval(d);
    evtimer_add(p->timer, &tv);
    log_info("budget alert webhook: attempt %d of %d failed (%s); next in %lld ms", p->attempts,
             ALERTS_MAX_ATTEMPTS, p->error, (long long)d);
}

/* ------------------------------------------------------------ the database */

#define ISO_S "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"
#define ISO_MS "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"
#define ISO_US "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"

static const char CLAIM_SQL[] =
    "UPDATE bridle_budget_alerts a SET claimed_by = $1, claimed_at = now(), "
    "attempts = a.attempts + 1 "
    "FROM (SELECT scope, scope_id, period, period_start, share_bp FROM bridle_budget_alerts "
    "      WHERE delivered_at IS NULL AND attempts < $2::int "
    "        AND (claimed_at IS NULL OR claimed_at < now() - $3::bigint * interval '1 "
    "millisecond') "
    "      ORDER BY fired_at LIMIT 100 FOR UPDATE SKIP LOCKED) c "
    "WHERE a.scope = c.scope AND a.scope_id = c.scope_id AND a.period = c.period "
    "  AND a.period_start = c.period_start AND a.share_bp = c.share_bp "
    "RETURNING a.scope, a.scope_id, a.period, "
    "  to_char(a.period_start AT TIME ZONE 'UTC', " ISO_S "), "
    "  to_char(bridle_period_end(a.period, a.period_start) AT TIME ZONE 'UTC', " ISO_S "), "
    "  to_char(a.period_start AT TIME ZONE 'UTC', " ISO_US "), "
    "  to_char(a.fired_at AT TIME ZONE 'UTC', " ISO_MS "), "
    "  a.share_bp, a.limit_pusd, a.spent_pusd, a.attempts";

#define ROW_KEY                                                                                    \
    "WHERE scope = $1 AND scope_id = $2 AND period = $3 AND period_start = $4::timestamptz "       \
    "AND share_bp = $5::int AND claimed_by = $6 "

static const char DELIVERED_SQL[] =
    "UPDATE bridle_budget_alerts SET delivered_at = now() " ROW_KEY "AND delivered_at IS NULL";
static const char FAILED_SQL[] = "UPDATE bridle_budget_alerts SET last_error = $7, claimed_at = "
                                 "now() " ROW_KEY "AND delivered_at IS NULL";
static const char RETRY_SQL[] =
    "UPDATE bridle_budget_alerts SET attempts = attempts + 1, "
    "claimed_at = now() " ROW_KEY "AND delivered_at IS NULL RETURNING attempts";

static void on_op_result(void *ctx, PGresult *res, const char *error)
{
    alerts *a = ctx;
    pending *p = a->in_db;
    a->in_db = NULL;
    if (!p) return;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        /* try the same update again at the next tick */
        log_warn("budget alerts: updating an alert failed (%s); will retry",
                 res     ? PQresultErrorMessage(res)
                 : error ? error
                         : "connection lost");
        if (!p->queued) {
            p->queued = true;
            p->qnext = a->qhead;
            a->qhead = p;
            if (!a->qtail) a->qtail = p;
        }
        return;
    }
    bool mine = atoi(PQcmdTuples(res)) > 0;
    switch (p->op) {
    case OP_DELIVERED:
        if (!mine)
            log_warn(
                "budget alerts: delivered an alert whose claim another gateway had taken over");
        pending_free(p);
        break;
    case OP_FAILED:
        if (!mine) {
            pending_free(p);
        } else if (p->attempts >= ALERTS_MAX_ATTEMPTS) {
            char text[512];
            alerts_format_text(&p->row, text, sizeof text);
            log_error("budget alert NOT delivered after %d attempts, giving up (%s): %s",
                      p->attempts, p->error, text);
            pending_free(p);
        } else {
            back_off(p);
        }
        break;
    case OP_RETRY:
        if (!mine) {
            pending_free(p); /* taken over meanwhile: the other gateway delivers it */
        } else {
            p->attempts = atoi(PQgetvalue(res, 0, 0));
            post_start(p);
        }
        break;
    default:
        pending_free(p);
    }
    pump(a);
}

static void on_claim_result(void *ctx, PGresult *res, const char *error)
{
    alerts *a = ctx;
    a->claiming = false;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_debug("budget alerts: claim failed (%s)", res     ? PQresultErrorMessage(res)
                                                      : error ? error
                                                              : "connection lost");
        return;
    }
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        pending *p = calloc(1, sizeof *p);
        if (!p) break;
        p->owner = a;
        alert_row *r = &p->row;
        snprintf(r->scope, sizeof r->scope, "%s", PQgetvalue(res, i, 0));
        snprintf(r->scope_id, sizeof r->scope_id, "%s", PQgetvalue(res, i, 1));
        snprintf(r->period, sizeof r->period, "%s", PQgetvalue(res, i, 2));
        snprintf(r->period_start, sizeof r->period_start, "%s", PQgetvalue(res, i, 3));
        snprintf(r->period_end, sizeof r->period_end, "%s", PQgetvalue(res, i, 4));
        snprintf(r->start_key, sizeof r->start_key, "%s", PQgetvalue(res, i, 5));
        snprintf(r->fired_at, sizeof r->fired_at, "%s", PQgetvalue(res, i, 6));
        r->share_bp = atoi(PQgetvalue(res, i, 7));
        r->limit_pusd = strtoll(PQgetvalue(res, i, 8), NULL, 10);
        r->spent_pusd = strtoll(PQgetvalue(res, i, 9), NULL, 10);
        p->attempts = atoi(PQgetvalue(res, i, 10));
        p->next = a->all;
        a->all = p;
        char text[512];
        alerts_format_text(r, text, sizeof text);
        log_warn("budget alert: %s", text);
        if (*a->webhook)
            post_start(p);
        else
            enqueue(p, OP_DELIVERED);
    }
    pump(a);
}

/* Sends the next queued update, or else (from the tick) a claim. */
static void pump(alerts *a)
{
    if (a->in_db || a->claiming || !pgconn_idle(a->pg)) return;
    pending *p = dequeue(a);
    if (!p) return;
    char bp[16];
    snprintf(bp, sizeof bp, "%d", p->row.share_bp);
    const char *v[] = {p->row.scope, p->row.scope_id, p->row.period, p->row.start_key,
                       bp,           a->instance,     p->error};
    const char *sql = p->op == OP_DELIVERED ? DELIVERED_SQL
                      : p->op == OP_FAILED  ? FAILED_SQL
                                            : RETRY_SQL;
    a->in_db = p;
    if (pgconn_send(a->pg, sql, p->op == OP_FAILED ? 7 : 6, v, on_op_result, a) != 0) {
        a->in_db = NULL;
        p->queued = true;
        p->qnext = a->qhead;
        a->qhead = p;
        if (!a->qtail) a->qtail = p;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    alerts *a = arg;
    if (a->qhead) {
        pump(a);
        return;
    }
    if (a->in_db || a->claiming || !pgconn_idle(a->pg)) return;
    char maxa[16], timeout[24];
    snprintf(maxa, sizeof maxa, "%d", ALERTS_MAX_ATTEMPTS);
    snprintf(timeout, sizeof timeout, "%lld", (long long)a->claim_timeout_ms);
    const char *v[] = {a->instance, maxa, timeout};
    if (pgconn_send(a->pg, CLAIM_SQL, 3, v, on_claim_result, a) == 0) a->claiming = true;
}

static void on_state(void *ctx, bool up)
{
    alerts *a = ctx;
    if (up) pump(a);
}

/* ------------------------------------------------------------ life */

alerts *alerts_start(router *rt)
{
    const bridle_config *cfg = router_config(rt);
    const alerts_conf *ac = config_alerts(cfg);
    const database_conf *db = config_database(cfg);
    if (!db->url[0]) {
        if (ac->webhook_url[0])
            log_warn("alerts.webhook_url is set but there is no database: budget alerts are "
                     "fired and delivered through PostgreSQL, so none will be sent");
        return NULL;
    }
    alerts *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->eng = router_engine(rt);
    a->rng = router_random(rt);
    a->base = router_base(rt);
    a->webhook = ac->webhook_url;
    a->claim_timeout_ms = ac->claim_timeout_ms > 0 ? ac->claim_timeout_ms : 60000;
    /* a POST ends well before its claim could be taken over */
    a->post_timeout_ms = a->claim_timeout_ms / 2 < 10000 ? a->claim_timeout_ms / 2 : 10000;
    snprintf(a->instance, sizeof a->instance, "%s", router_instance_id(rt));
    pgconn_options po = {.query_timeout_ms = 10000};
    a->pg = pgconn_new(a->base, db->url, &po, on_state, a);
    a->tick = event_new(a->base, -1, EV_PERSIST, on_tick, a);
    if (!a->pg || !a->tick) {
        alerts_free(a);
        return NULL;
    }
    struct timeval tv = util_ms_timeval(ac->poll_ms > 0 ? ac->poll_ms : 1000);
    event_add(a->tick, &tv);
    log_info("budget alerts: polling every %lld ms%s", (long long)(ac->poll_ms),
             *a->webhook ? ", delivering to the webhook" : " (no webhook: logged only)");
    return a;
}

void alerts_free(alerts *a)
{
    if (!a) return;
    if (a->tick) event_free(a->tick);
    while (a->all)
        pending_free(a->all);
    pgconn_free(a->pg);
    free(a);
}

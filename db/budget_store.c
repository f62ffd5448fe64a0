/* Budget leases from PostgreSQL or from this process (budget_store.h). */
#include "db/budget_store.h"

#include <event2/event.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db/pgconn.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/util.h"

/* ------------------------------------------------------------ arrays as text */

/* Appends s as an element of a PostgreSQL array literal: quoted, with " and
 * \ escaped, so any key id or team name goes through. */
static void arr_str(buf *b, const char *s, bool first)
{
    if (!first) buf_append_char(b, ',');
    buf_append_char(b, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') buf_append_char(b, '\\');
        buf_append_char(b, *s);
    }
    buf_append_char(b, '"');
}

static void arr_int(buf *b, int64_t v, bool first)
{
    buf_printf(b, "%s%lld", first ? "" : ",", (long long)v);
}

static void arr_ts(buf *b, int64_t s, bool first)
{
    time_t t = (time_t)s;
    struct tm tm;
    gmtime_r(&t, &tm);
    char out[40];
    strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%SZ", &tm);
    arr_str(b, out, first);
}

/* The columns every call passes: scope, id, period, start. */
static void key_arrays(buf *a, const budget_item *it, int n)
{
    for (int c = 0; c < 4; c++) {
        buf_append_char(&a[c], '{');
        for (int i = 0; i < n; i++) {
            if (c == 0) arr_str(&a[c], it[i].scope, i == 0);
            if (c == 1) arr_str(&a[c], it[i].id, i == 0);
            if (c == 2) arr_str(&a[c], it[i].period, i == 0);
            if (c == 3) arr_ts(&a[c], it[i].start_s, i == 0);
        }
        buf_append_char(&a[c], '}');
    }
}

void budget_limit_arrays(const budget_limit_row *rows, int n, buf out[4])
{
    for (int c = 0; c < 4; c++)
        buf_append_char(&out[c], '{');
    for (int i = 0; i < n; i++) {
        arr_str(&out[0], rows[i].scope, i == 0);
        arr_str(&out[1], rows[i].id, i == 0);
        arr_str(&out[2], rows[i].period, i == 0);
        arr_int(&out[3], rows[i].limit_pusd, i == 0);
    }
    for (int c = 0; c < 4; c++)
        buf_append_char(&out[c], '}');
}

static void int_array(buf *a, const budget_item *it, int n, size_t field)
{
    buf_append_char(a, '{');
    for (int i = 0; i < n; i++)
        arr_int(a, *(const int64_t *)((const char *)&it[i] + field), i == 0);
    buf_append_char(a, '}');
}

/* ------------------------------------------------------------ PostgreSQL */

typedef enum { PG_NONE, PG_CONFIG, PG_LEASE, PG_SYNC, PG_SWEEP, PG_RELEASE } pg_op_kind;

typedef struct pg_call {
    bool pending;
    char instance[96];
    budget_item *items;
    int n;
    int64_t ttl_ms;
    budget_store_cb cb;
    void *ctx;
} pg_call;

typedef struct pg_store {
    budget_store base;
    pgconn *pg;
    bool down; /* the last connection attempt failed, or the connection was lost */
    bool config_due, sweep_due;
    int64_t orphan_ttl_ms; /* of the sweep due */
    char release_inst[96]; /* to end with bridle_budget_release_instance ("" none) */
    bool release_due;      /* send it (again at each connection until it ran) */
    pg_op_kind in_flight;
    pg_call lease, sync;
    char *cfg_params[5]; /* scope[], id[], period[], limit[], thresholds[] */
} pg_store;

/* migrations/0007: the lease set to what this gateway holds now (and the
 * unshipped part of it), then extended, in one call */
static const char lease_sql[] =
    "SELECT i, granted, spent_pusd, held_pusd FROM bridle_budget_lease_held2($1, $2::text[], "
    "$3::text[], $4::text[], $5::timestamptz[], $6::bigint[], $7::bigint[], $8::bigint[], "
    "$9::bigint[], $10::bigint[], $11::integer) ORDER BY i";
static const char sync_sql[] =
    "SELECT i, spent_pusd, held_pusd FROM bridle_budget_sync2($1, $2::text[], $3::text[], "
    "$4::text[], $5::timestamptz[], $6::bigint[], $7::bigint[], $8::integer) ORDER BY i";
static const char sweep_sql[] = "SELECT bridle_budget_sweep_orphans($1::bigint)";
static const char release_sql[] = "SELECT bridle_budget_release_instance($1)";
/* The config's limits (an update only where they differ: every statement
 * on bridle_budgets bumps the keys' version all the same) and the alert
 * thresholds, replaced. */
static const char config_sql[] =
    "WITH l AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) "
    "AS u(scope, sid, period, lim)), "
    "up AS (INSERT INTO bridle_budgets AS b (scope, scope_id, period, limit_pusd, source) "
    "SELECT scope, sid, period, lim, 'config' FROM l ORDER BY 1, 2, 3 "
    "ON CONFLICT (scope, scope_id, period) DO UPDATE SET limit_pusd = excluded.limit_pusd, "
    "source = 'config', updated_at = now() "
    "WHERE b.limit_pusd <> excluded.limit_pusd OR b.source <> 'config' RETURNING 1), "
    "del AS (DELETE FROM bridle_alert_thresholds WHERE share_bp <> ALL ($5::integer[]) "
    "RETURNING 1), "
    "ins AS (INSERT INTO bridle_alert_thresholds SELECT DISTINCT unnest($5::integer[]) "
    "ON CONFLICT DO NOTHING RETURNING 1) "
    "SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM del), (SELECT count(*) FROM ins)";

static void pg_flush(pg_store *s);

static void finish_call(pg_call *c, const char *error)
{
    c->pending = false;
    budget_store_cb cb = c->cb;
    c->cb = NULL;
    if (cb) cb(c->ctx, error);
}

static void on_result(void *ctx, PGresult *res, const char *error)
{
    pg_store *s = ctx;
    pg_op_kind k = s->in_flight;
    s->in_flight = PG_NONE;
    if (k == PG_CONFIG) {
        s->config_due = false; /* tried again at the next connection */
        if (error)
            log_warn("budgets: writing the config's budgets and alert thresholds failed: %s",
                     error);
        else
            log_info("budgets: the config's budgets and alert thresholds are in the database");
    } else if (k == PG_SWEEP) {
        if (error) log_warn("budgets: sweeping expired leases failed: %s", error);
    } else if (k == PG_RELEASE) {
        if (error) {
            /* sent again at the next connection */
            log_warn("budgets: releasing the leases of the previous run %s failed: %s",
                     s->release_inst, error);
        } else {
            log_info("budgets: the leases of the previous run %s are released (%s budgets)",
                     s->release_inst, PQntuples(res) ? PQgetvalue(res, 0, 0) : "0");
            s->release_inst[0] = '\0';
        }
    } else if (k == PG_LEASE || k == PG_SYNC) {
        pg_call *c = k == PG_LEASE ? &s->lease : &s->sync;
        if (!error) {
            int rows = PQntuples(res);
            for (int r = 0; r < rows; r++) {
                int i = atoi(PQgetvalue(res, r, 0)) - 1;
                if (i < 0 || i >= c->n) continue;
                budget_item *it = &c->items[i];
                int col = 1;
                if (k == PG_LEASE) it->granted_pusd = strtoll(PQgetvalue(res, r, col++), NULL, 10);
                it->spent_pusd = strtoll(PQgetvalue(res, r, col++), NULL, 10);
                it->total_held_pusd = strtoll(PQgetvalue(res, r, col), NULL, 10);
            }
            if (rows != c->n) error = "the database returned fewer budgets than asked";
        }
        finish_call(c, error);
    }
    pg_flush(s);
}

static int send_call(pg_store *s, pg_op_kind k, pg_call *c)
{
    buf a[11] = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT,
                 BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT};
    key_arrays(a, c->items, c->n);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)c->ttl_ms);
    const char *v[11] = {c->instance};
    for (int i = 0; i < 4; i++)
        v[i + 1] = a[i].data;
    int rc;
    if (k == PG_LEASE) {
        int_array(&a[4], c->items, c->n, offsetof(budget_item, limit_pusd));
        int_array(&a[5], c->items, c->n, offsetof(budget_item, held_pusd));
        int_array(&a[6], c->items, c->n, offsetof(budget_item, unshipped_pusd));
        int_array(&a[7], c->items, c->n, offsetof(budget_item, need_pusd));
        int_array(&a[8], c->items, c->n, offsetof(budget_item, want_pusd));
        for (int i = 4; i < 9; i++)
            v[i + 1] = a[i].data;
        v[10] = ttl;
        rc = pgconn_send(s->pg, lease_sql, 11, v, on_result, s);
    } else {
        int_array(&a[4], c->items, c->n, offsetof(budget_item, held_pusd));
        int_array(&a[5], c->items, c->n, offsetof(budget_item, unshipped_pusd));
        v[5] = a[4].data;
        v[6] = a[5].data;
        v[7] = ttl;
        rc = pgconn_send(s->pg, sync_sql, 8, v, on_result, s);
    }
    for (int i = 0; i < 11; i++)
        buf_free(&a[i]);
    return rc;
}

static void pg_flush(pg_store *s)
{
    if (s->in_flight != PG_NONE || !pgconn_idle(s->pg)) return;
    if (s->config_due) {
        if (pgconn_send(s->pg, config_sql, 5, (const char *const *)s->cfg_params, on_result, s) ==
            0) {
            s->in_flight = PG_CONFIG;
            s->base.queries++;
        }
        return;
    }
    pg_op_kind k = s->lease.pending ? PG_LEASE : s->sync.pending ? PG_SYNC : PG_NONE;
    if (k != PG_NONE) {
        pg_call *c = k == PG_LEASE ? &s->lease : &s->sync;
        if (send_call(s, k, c) == 0) {
            s->in_flight = k;
            s->base.queries++;
        }
        return;
    }
    if (s->release_due && s->release_inst[0]) {
        const char *v[1] = {s->release_inst};
        if (pgconn_send(s->pg, release_sql, 1, v, on_result, s) == 0) {
            s->release_due = false;
            s->in_flight = PG_RELEASE;
            s->base.queries++;
        }
        return;
    }
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)s->orphan_ttl_ms);
    const char *v[1] = {ttl};
    if (s->sweep_due && pgconn_send(s->pg, sweep_sql, 1, v, on_result, s) == 0) {
        s->sweep_due = false;
        s->in_flight = PG_SWEEP;
        s->base.queries++;
    }
}

static void on_state(void *ctx, bool up)
{
    pg_store *s = ctx;
    s->down = !up;
    if (up) {
        s->config_due = true;
        s->release_due = s->release_inst[0] != '\0';
        pg_flush(s);
        return;
    }
    /* calls not sent yet fail now; the one in flight hears from on_result */
    if (s->lease.pending && s->in_flight != PG_LEASE)
        finish_call(&s->lease, "the database is unreachable");
    if (s->sync.pending && s->in_flight != PG_SYNC)
        finish_call(&s->sync, "the database is unreachable");
}

static int pg_queue(pg_store *s, pg_call *c, const char *instance, budget_item *items, int n,
                    int64_t ttl_ms, budget_store_cb cb, void *ctx)
{
    if (s->down || c->pending) return -1;
    *c = (pg_call){.pending = true, .items = items, .n = n, .ttl_ms = ttl_ms, .cb = cb, .ctx = ctx};
    snprintf(c->instance, sizeof c->instance, "%s", instance);
    pg_flush(s);
    return 0;
}

static int pg_lease(budget_store *bs, const char *instance, budget_item *items, int n,
                    int64_t ttl_ms, budget_store_cb cb, void *ctx)
{
    pg_store *s = (pg_store *)bs;
    return pg_queue(s, &s->lease, instance, items, n, ttl_ms, cb, ctx);
}

static int pg_sync(budget_store *bs, const char *instance, budget_item *items, int n,
                   int64_t ttl_ms, budget_store_cb cb, void *ctx)
{
    pg_store *s = (pg_store *)bs;
    return pg_queue(s, &s->sync, instance, items, n, ttl_ms, cb, ctx);
}

static void pg_sweep(budget_store *bs, int64_t orphan_ttl_ms)
{
    pg_store *s = (pg_store *)bs;
    s->sweep_due = true;
    s->orphan_ttl_ms = orphan_ttl_ms > 0 ? orphan_ttl_ms : 86400000;
    pg_flush(s);
}

static void pg_release_instance(budget_store *bs, const char *instance)
{
    pg_store *s = (pg_store *)bs;
    if (!instance || !instance[0]) return;
    snprintf(s->release_inst, sizeof s->release_inst, "%s", instance);
    s->release_due = true;
    pg_flush(s);
}

static bool pg_up(const budget_store *bs)
{
    const pg_store *s = (const pg_store *)bs;
    return pgconn_up(s->pg);
}

static void pg_free(budget_store *bs)
{
    pg_store *s = (pg_store *)bs;
    pgconn_free(s->pg);
    for (int i = 0; i < 5; i++)
        free(s->cfg_params[i]);
    free(s);
}

static const budget_store_ops pg_ops = {pg_lease, pg_sync, pg_sweep,           NULL,
                                        pg_up,    pg_free, pg_release_instance};

budget_store *budget_store_pg_new(struct event_base *base, const char *url,
                                  const budget_limit_row *rows, int n_rows,
                                  const int *thresholds_bp, int n_thresholds)
{
    pg_store *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base.ops = &pg_ops;
    buf a[5] = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT};
    budget_limit_arrays(rows, n_rows, a);
    buf_append_char(&a[4], '{');
    for (int i = 0; i < n_thresholds; i++)
        arr_int(&a[4], thresholds_bp[i], i == 0);
    buf_append_char(&a[4], '}');
    for (int c = 0; c < 5; c++)
        s->cfg_params[c] = buf_steal(&a[c]);
    /* a lease is on a request's path: a hung database answers in 5 s, not 10 */
    pgconn_options po = {.query_timeout_ms = 5000, .backoff_max_ms = 2000};
    s->pg = pgconn_new(base, url, &po, on_state, s);
    if (!s->pg) {
        pg_free(&s->base);
        return NULL;
    }
    return &s->base;
}

/* ------------------------------------------------------------ in process */

typedef struct mem_row {
    char key[160]; /* scope \t id \t period \t start */
    int64_t spent, held, start_s;
    struct mem_row *next;
} mem_row;

typedef struct mem_store {
    budget_store base;
    struct event_base *evb;
    mem_row *rows;
} mem_store;

typedef struct mem_done {
    budget_store_cb cb;
    void *ctx;
} mem_done;

static mem_row *mem_find(mem_store *s, const budget_item *it)
{
    char key[160];
    snprintf(key, sizeof key, "%s\t%s\t%s\t%lld", it->scope, it->id, it->period,
             (long long)it->start_s);
    for (mem_row *r = s->rows; r; r = r->next)
        if (strcmp(r->key, key) == 0) return r;
    mem_row *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    snprintf(r->key, sizeof r->key, "%s", key);
    r->start_s = it->start_s;
    r->next = s->rows;
    s->rows = r;
    return r;
}

static void on_mem_done(evutil_socket_t fd, short what, void *arg)
{
    mem_done d = *(mem_done *)arg;
    free(arg);
    d.cb(d.ctx, NULL);
}

/* Answers on the next loop pass, like the database would. */
static int mem_later(mem_store *s, budget_store_cb cb, void *ctx)
{
    mem_done *d = malloc(sizeof *d);
    if (!d) return -1;
    *d = (mem_done){cb, ctx};
    struct timeval zero = {0, 0};
    if (event_base_once(s->evb, -1, EV_TIMEOUT, on_mem_done, d, &zero) != 0) {
        free(d);
        return -1;
    }
    return 0;
}

static int mem_lease(budget_store *bs, const char *instance, budget_item *items, int n,
                     int64_t ttl_ms, budget_store_cb cb, void *ctx)
{
    mem_store *s = (mem_store *)bs;
    for (int i = 0; i < n; i++) {
        budget_item *it = &items[i];
        mem_row *r = mem_find(s, it);
        if (!r) return -1;
        r->held = it->held_pusd > 0 ? it->held_pusd : 0; /* what the caller holds now */
        it->granted_pusd = 0;
        if (r->spent + r->held + it->need_pusd <= it->limit_pusd) {
            int64_t left = (it->limit_pusd - r->spent - r->held) / 4;
            int64_t g = it->want_pusd < left ? it->want_pusd : left;
            if (g < it->need_pusd) g = it->need_pusd;
            r->held += g;
            it->granted_pusd = g;
        }
        it->spent_pusd = r->spent;
        it->total_held_pusd = r->held;
    }
    return mem_later(s, cb, ctx);
}

static int mem_sync(budget_store *bs, const char *instance, budget_item *items, int n,
                    int64_t ttl_ms, budget_store_cb cb, void *ctx)
{
    mem_store *s = (mem_store *)bs;
    for (int i = 0; i < n; i++) {
        mem_row *r = mem_find(s, &items[i]);
        if (!r) return -1;
        r->held = items[i].held_pusd;
        items[i].spent_pusd = r->spent;
        items[i].total_held_pusd = r->held;
    }
    /* rows of periods long gone (more than a month and a bit) */
    int64_t old = util_wall_ms() / 1000 - 40 * 86400;
    for (mem_row **p = &s->rows; *p;) {
        mem_row *r = *p;
        if (r->held == 0 && r->start_s < old) {
            *p = r->next;
            free(r);
        } else
            p = &r->next;
    }
    return mem_later(s, cb, ctx);
}

static void mem_sweep(budget_store *bs, int64_t orphan_ttl_ms) {}

static void mem_charge(budget_store *bs, const budget_item *item, int64_t pusd)
{
    mem_row *r = mem_find((mem_store *)bs, item);
    if (!r) return;
    r->spent += pusd;
    r->held = r->held > pusd ? r->held - pusd : 0;
}

static bool mem_up(const budget_store *bs)
{
    return true;
}

static void mem_free(budget_store *bs)
{
    mem_store *s = (mem_store *)bs;
    while (s->rows) {
        mem_row *r = s->rows;
        s->rows = r->next;
        free(r);
    }
    free(s);
}

static const budget_store_ops mem_ops = {mem_lease, mem_sync, mem_sweep, mem_charge,
                                         mem_up,    mem_free, NULL};

budget_store *budget_store_mem_new(struct event_base *base)
{
    mem_store *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base.ops = &mem_ops;
    s->evb = base;
    return &s->base;
}

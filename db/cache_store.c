/* The response cache's shared level (db/cache_store.h). */
#include "db/cache_store.h"

#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/pgconn.h"
#include "lib/log.h"

#define QUEUE_MAX 1024 /* past this a lookup is a miss at once and a write is dropped */
#define TRIM_INTERVAL_S 30

typedef enum { OP_GET, OP_PUT, OP_TRIM, OP_PERSIST } op_kind;

struct cache_store_op {
    cache_store *s;
    op_kind kind;
    char *key;           /* GET, PUT */
    char *body, *model;  /* PUT */
    cache_store_usage u; /* PUT */
    int64_t ttl_ms;      /* PUT */
    cache_store_fn fn;   /* GET; NULL once answered or cancelled */
    void *ctx;
    bool queued, in_flight;
    struct event timer; /* GET: the deadline, or an answer given at once */
    bool timer_armed;
    cache_store_op *next;
};

struct cache_store {
    struct event_base *base;
    cache_store_options opt;
    pgconn *pg;
    cache_store_op *head, *tail, *job; /* the queue, and the query in flight */
    int queued;
    bool persist_again; /* setting LOGGED / UNLOGGED failed (migration 0010 not applied yet?) */
    struct event trim_timer;
    cache_store_stats st;
};

/* key is $1 in both; the key's hash is PostgreSQL's own sha256(). */
static const char get_sql[] =
    "SELECT body, model, input_uncached, cache_read, cache_write_5m, cache_write_1h, output, "
    "reasoning, usage_exact, usage_estimated, "
    "greatest((extract(epoch FROM expires_at - now()) * 1000)::bigint, 0) "
    "FROM bridle_response_cache WHERE key_hash = sha256(convert_to($1, 'UTF8')) AND key = $1 "
    "AND expires_at > now()";
static const char put_sql[] =
    "INSERT INTO bridle_response_cache (key_hash, key, body, model, input_uncached, cache_read, "
    "cache_write_5m, cache_write_1h, output, reasoning, usage_exact, usage_estimated, expires_at) "
    "VALUES (sha256(convert_to($1, 'UTF8')), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
    "now() + $12::bigint * interval '1 millisecond') "
    "ON CONFLICT (key_hash) DO UPDATE SET key = excluded.key, body = excluded.body, "
    "model = excluded.model, input_uncached = excluded.input_uncached, "
    "cache_read = excluded.cache_read, cache_write_5m = excluded.cache_write_5m, "
    "cache_write_1h = excluded.cache_write_1h, output = excluded.output, "
    "reasoning = excluded.reasoning, usage_exact = excluded.usage_exact, "
    "usage_estimated = excluded.usage_estimated, stored_at = now(), "
    "expires_at = excluded.expires_at";
/* Expired rows, then the oldest beyond the byte bound. */
static const char trim_sql[] =
    "WITH gone AS (DELETE FROM bridle_response_cache WHERE expires_at <= now()), "
    "sized AS (SELECT key_hash, sum(octet_length(key) + octet_length(body)) "
    "OVER (ORDER BY stored_at DESC, key_hash) AS running FROM bridle_response_cache) "
    "DELETE FROM bridle_response_cache c USING sized s "
    "WHERE c.key_hash = s.key_hash AND s.running > $1::bigint";

/* Both are no-ops when the table already is so; the gateways sharing a
 * database should agree (the last to connect wins). */
static const char logged_sql[] = "ALTER TABLE bridle_response_cache SET LOGGED";
static const char unlogged_sql[] = "ALTER TABLE bridle_response_cache SET UNLOGGED";

static void pump(cache_store *s);

static void op_free(cache_store_op *op)
{
    if (op->timer_armed) evtimer_del(&op->timer);
    free(op->key);
    free(op->body);
    free(op->model);
    free(op);
}

/* Frees op once nothing holds it: not queued, not in flight, answered. */
static void op_release(cache_store_op *op)
{
    if (!op->queued && !op->in_flight && !op->fn) op_free(op);
}

/* Answers a lookup (row NULL: a miss), once. */
static void answer(cache_store_op *op, const cache_store_row *row)
{
    cache_store_fn fn = op->fn;
    op->fn = NULL;
    if (op->timer_armed) {
        evtimer_del(&op->timer);
        op->timer_armed = false;
    }
    if (fn) fn(op->ctx, row);
}

static void on_op_timer(evutil_socket_t fd, short what, void *arg)
{
    cache_store_op *op = arg;
    op->timer_armed = false;
    if (op->queued || op->in_flight) op->s->st.timeouts++;
    answer(op, NULL);
    op_release(op);
}

static cache_store_op *op_new(cache_store *s, op_kind kind)
{
    cache_store_op *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->s = s;
    op->kind = kind;
    evtimer_assign(&op->timer, s->base, on_op_timer, op);
    return op;
}

static bool enqueue(cache_store *s, cache_store_op *op)
{
    if (s->queued >= QUEUE_MAX || !pgconn_up(s->pg)) return false;
    op->queued = true;
    if (s->tail)
        s->tail->next = op;
    else
        s->head = op;
    s->tail = op;
    s->queued++;
    pump(s);
    return true;
}

static void enqueue_new(cache_store *s, op_kind kind)
{
    cache_store_op *op = op_new(s, kind);
    if (op && !enqueue(s, op)) op_free(op);
}

/* ------------------------------------------------------------ results */

static int64_t col_int(PGresult *r, int c)
{
    return strtoll(PQgetvalue(r, 0, c), NULL, 10);
}

static void on_get_result(cache_store_op *op, PGresult *res, const char *error)
{
    cache_store *s = op->s;
    if (error || PQresultStatus(res) != PGRES_TUPLES_OK) {
        s->st.errors++;
        answer(op, NULL);
        return;
    }
    if (PQntuples(res) != 1) {
        s->st.misses++;
        answer(op, NULL);
        return;
    }
    cache_store_row row = {
        .body = PQgetvalue(res, 0, 0),
        .len = (size_t)PQgetlength(res, 0, 0),
        .model = PQgetvalue(res, 0, 1),
        .usage = {col_int(res, 2), col_int(res, 3), col_int(res, 4), col_int(res, 5),
                  col_int(res, 6), col_int(res, 7), PQgetvalue(res, 0, 8)[0] == 't',
                  PQgetvalue(res, 0, 9)[0] == 't'},
        .ttl_left_ms = col_int(res, 10),
    };
    if (op->fn) s->st.hits++;
    answer(op, &row);
}

static void on_result(void *ctx, PGresult *res, const char *error)
{
    cache_store *s = ctx;
    cache_store_op *op = s->job;
    s->job = NULL;
    op->in_flight = false;
    if (op->kind == OP_GET) {
        on_get_result(op, res, error);
    } else if (error || (res && PQresultStatus(res) != PGRES_COMMAND_OK)) {
        s->st.errors++;
        if (op->kind == OP_PERSIST) s->persist_again = true; /* with the next trim */
        log_warn("response cache: %s in PostgreSQL failed: %s",
                 op->kind == OP_PUT    ? "storing an answer"
                 : op->kind == OP_TRIM ? "trimming the table"
                                       : "setting the table LOGGED or UNLOGGED",
                 error ? error : PQresultErrorMessage(res));
    }
    op_release(op);
    pump(s);
}

/* ------------------------------------------------------------ the queue */

static int send_op(cache_store *s, cache_store_op *op)
{
    if (op->kind == OP_GET) {
        const char *v[] = {op->key};
        return pgconn_send(s->pg, get_sql, 1, v, on_result, s);
    }
    if (op->kind == OP_PERSIST)
        return pgconn_send(s->pg, s->opt.logged ? logged_sql : unlogged_sql, 0, NULL, on_result, s);
    if (op->kind == OP_TRIM) {
        char max[24];
        snprintf(max, sizeof max, "%lld", (long long)s->opt.max_bytes);
        const char *v[] = {max};
        return pgconn_send(s->pg, trim_sql, 1, v, on_result, s);
    }
    char n[8][24], ttl[24];
    const cache_store_usage *u = &op->u;
    const int64_t counts[] = {u->input_uncached, u->cache_read, u->cache_write_5m,
                              u->cache_write_1h, u->output,     u->reasoning};
    for (int i = 0; i < 6; i++)
        snprintf(n[i], sizeof n[i], "%lld", (long long)counts[i]);
    snprintf(ttl, sizeof ttl, "%lld", (long long)op->ttl_ms);
    const char *v[] = {op->key,
                       op->body,
                       op->model,
                       n[0],
                       n[1],
                       n[2],
                       n[3],
                       n[4],
                       n[5],
                       u->exact ? "true" : "false",
                       u->estimated ? "true" : "false",
                       ttl};
    return pgconn_send(s->pg, put_sql, 12, v, on_result, s);
}

static void pump(cache_store *s)
{
    while (!s->job && s->head && pgconn_idle(s->pg)) {
        cache_store_op *op = s->head;
        s->head = op->next;
        if (!s->head) s->tail = NULL;
        op->next = NULL;
        op->queued = false;
        s->queued--;
        if (op->kind == OP_GET && !op->fn) { /* answered (timed out) or cancelled meanwhile */
            op_release(op);
            continue;
        }
        op->in_flight = true;
        s->job = op;
        if (send_op(s, op) != 0) { /* the connection just went */
            s->job = NULL;
            op->in_flight = false;
            answer(op, NULL);
            op_release(op);
        }
    }
}

/* The connection went: what waits for it is answered now, as misses. */
static void on_conn_state(void *ctx, bool up)
{
    cache_store *s = ctx;
    if (up) {
        enqueue_new(s, OP_PERSIST); /* first in the queue, which is empty */
        return;
    }
    cache_store_op *op;
    while ((op = s->head)) {
        s->head = op->next;
        op->queued = false;
        s->queued--;
        if (op->kind != OP_GET) s->st.dropped++;
        answer(op, NULL);
        op_release(op); /* a write or a trim has no callback: freed here */
    }
    s->tail = NULL;
}

static void on_trim_timer(evutil_socket_t fd, short what, void *arg)
{
    cache_store *s = arg;
    if (s->persist_again) {
        s->persist_again = false;
        enqueue_new(s, OP_PERSIST);
    }
    enqueue_new(s, OP_TRIM);
}

/* ------------------------------------------------------------ public */

cache_store_op *cache_store_get(cache_store *s, const char *key, cache_store_fn fn, void *ctx)
{
    cache_store_op *op = op_new(s, OP_GET);
    if (!op || !(op->key = strdup(key))) {
        free(op);
        return NULL;
    }
    op->fn = fn;
    op->ctx = ctx;
    s->st.lookups++;
    struct timeval tv = {0, 0};
    if (enqueue(s, op)) {
        tv.tv_sec = s->opt.timeout_ms / 1000;
        tv.tv_usec = (s->opt.timeout_ms % 1000) * 1000;
    } else {
        s->st.misses++; /* the database away or the queue full: a miss, from the loop */
    }
    evtimer_add(&op->timer, &tv);
    op->timer_armed = true;
    return op;
}

void cache_store_cancel(cache_store_op *op)
{
    if (!op) return;
    op->fn = NULL;
    if (op->timer_armed) {
        evtimer_del(&op->timer);
        op->timer_armed = false;
    }
    op_release(op);
}

void cache_store_put(cache_store *s, const char *key, const char *body, size_t len,
                     const char *model, const cache_store_usage *u, int64_t ttl_ms)
{
    cache_store_op *op = op_new(s, OP_PUT);
    if (!op) return;
    op->key = strdup(key);
    op->body = strndup(body, len);
    op->model = strdup(model);
    op->u = *u;
    op->ttl_ms = ttl_ms;
    if (!op->key || !op->body || !op->model || !enqueue(s, op)) {
        s->st.dropped++;
        op_free(op);
        return;
    }
    s->st.stores++;
}

cache_store_stats cache_store_get_stats(const cache_store *s)
{
    return s->st;
}

cache_store *cache_store_new(struct event_base *base, const cache_store_options *opt)
{
    cache_store *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base = base;
    s->opt = *opt;
    if (s->opt.timeout_ms <= 0) s->opt.timeout_ms = 50;
    pgconn_options po = {.query_timeout_ms = 5000};
    s->pg = pgconn_new(base, opt->database_url, &po, on_conn_state, s);
    if (!s->pg) {
        free(s);
        return NULL;
    }
    event_assign(&s->trim_timer, base, -1, EV_PERSIST, on_trim_timer, s);
    struct timeval tv = {TRIM_INTERVAL_S, 0};
    evtimer_add(&s->trim_timer, &tv);
    return s;
}

void cache_store_free(cache_store *s)
{
    if (!s) return;
    evtimer_del(&s->trim_timer);
    pgconn_free(s->pg);
    if (s->job) op_free(s->job);
    cache_store_op *op;
    while ((op = s->head)) {
        s->head = op->next;
        op_free(op);
    }
    free(s);
}

/* The ledger: spool first, PostgreSQL second.
 *
 * Every event is appended to the spool (db/spool) and gets a sequence
 * number. A bounded in-memory queue holds a contiguous run of those events
 * for the database; when it is full (the database is away or slow) new
 * events stay only in the spool and are read back from it, in order, when
 * the queue has room again. A batch goes to PostgreSQL as one multi-row
 * INSERT ... ON CONFLICT DO NOTHING; when it commits, the spool is told
 * (spool_ack) and trims itself. A restart replays what the spool still
 * holds; a replayed event that PostgreSQL already has is a no-op. */
#include "db/ledger.h"

#include <errno.h>
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "db/pgconn.h"
#include "db/spool.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/util.h"

#define LEDGER_COLUMNS 30
#define MAINTENANCE_INTERVAL_MS (3600 * 1000)

typedef struct queued {
    uint64_t seq;
    usage_event ev;
} queued;

struct ledger {
    struct event_base *base;
    ledger_options opt;
    spool *sp;
    pgconn *pg;
    struct event sync_ev;  /* the spool's eventfd: durable position advanced */
    struct event flush_ev; /* periodic flush */
    struct event maint_ev; /* partitions ahead, retention */
    queued *q;             /* ring */
    int q_head, q_len;
    uint64_t next_to_queue; /* the next sequence number the queue expects */
    uint64_t last_appended;
    int in_flight; /* events in the INSERT being run */
    bool maintenance_due;
    bool draining;
    void (*drain_done)(void *);
    void *drain_ctx;
    int64_t drain_deadline_ms;
    buf cols[LEDGER_COLUMNS]; /* one array literal per column of a batch */
    int64_t batch_min_ts, batch_max_ts;
    struct spend {
        char key_id[65];
        int64_t pusd;
    } * spend; /* month-to-date spend per key */
    int n_spend, cap_spend;
    bool spend_known;
    int64_t spend_due_ms;
    ledger_stats stats;
};

static void flush(ledger *l);

/* ------------------------------------------------------------ queue */

static queued *q_at(ledger *l, int i)
{
    return &l->q[(l->q_head + i) % l->opt.queue_max];
}

static bool q_push(ledger *l, uint64_t seq, const usage_event *ev)
{
    if (l->q_len >= l->opt.queue_max || seq != l->next_to_queue) return false;
    queued *slot = q_at(l, l->q_len);
    slot->seq = seq;
    slot->ev = *ev;
    l->q_len++;
    l->next_to_queue = seq + 1;
    return true;
}

static int refill_cb(void *ctx, uint64_t seq, const usage_event *ev)
{
    ledger *l = ctx;
    if (seq < l->next_to_queue) return 0; /* a replayed record the queue already holds */
    l->next_to_queue = seq;               /* the spool may skip numbers it lost: follow it */
    if (!q_push(l, seq, ev)) return 1;
    l->stats.replayed++;
    return 0;
}

/* Reads events that are only in the spool back into the queue, in order. */
static void refill_from_spool(ledger *l)
{
    if (l->q_len >= l->opt.queue_max || l->next_to_queue > l->last_appended) return;
    spool_cursor *cur = spool_cursor_new(l->sp, l->next_to_queue - 1);
    if (!cur) return;
    usage_event ev;
    uint64_t seq;
    while (l->q_len < l->opt.queue_max && spool_cursor_next(cur, &ev, &seq) == 1)
        if (refill_cb(l, seq, &ev)) break;
    spool_cursor_free(cur);
}

/* ------------------------------------------------------------ SQL
 *
 * One statement of 30 parameters whatever the batch size: each parameter is
 * a PostgreSQL array literal holding one column of every event, and
 * unnest() turns them back into rows. PostgreSQL parses a short statement
 * instead of one with 30,000 placeholders, which is what made the multi-row
 * VALUES form slow. */

static const char insert_sql[] =
    "INSERT INTO usage_events (event_id,ts,key_id,team,end_user,agent,task,feature,"
    "requested_model,provider,model,tier,route_reason,streamed,status,error_class,attempts,"
    "input_tokens,cache_read_tokens,cache_write_tokens,output_tokens,reasoning_tokens,usage_exact,"
    "cost_pusd,baseline_cost_pusd,latency_us,ttft_us,upstream_us,cache_hit,batch_id) "
    "SELECT * FROM unnest($1::text[],$2::timestamptz[],$3::text[],$4::text[],$5::text[],"
    "$6::text[],$7::text[],$8::text[],$9::text[],$10::text[],$11::text[],$12::text[],$13::text[],"
    "$14::bool[],$15::int[],$16::text[],$17::int[],$18::bigint[],$19::bigint[],$20::bigint[],"
    "$21::bigint[],$22::bigint[],$23::bool[],$24::bigint[],$25::bigint[],$26::bigint[],"
    "$27::bigint[],$28::bigint[],$29::bool[],$30::text[]) ON CONFLICT DO NOTHING";

/* One array element: a quoted string (NULL when empty), as the array
 * literal syntax wants: backslash and double quote escaped. */
static void elem_str(buf *col, const char *s)
{
    if (col->len > 1) buf_append_char(col, ',');
    if (!s || !*s) {
        buf_append_str(col, "NULL");
        return;
    }
    buf_append_char(col, '"');
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\') buf_append_char(col, '\\');
        buf_append_char(col, *p);
    }
    buf_append_char(col, '"');
}

static void elem_int(buf *col, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%s%lld", col->len > 1 ? "," : "", (long long)v);
    buf_append(col, tmp, (size_t)n);
}

static void elem_bool(buf *col, bool v)
{
    buf_append_str(col, col->len > 1 ? (v ? ",t" : ",f") : (v ? "t" : "f"));
}

static void format_ts(char *out, size_t n, int64_t us)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t k = strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%06lld+00", (long long)(us % 1000000));
}

static void elem_ts(buf *col, int64_t us)
{
    char tmp[48];
    format_ts(tmp, sizeof tmp, us);
    elem_str(col, tmp);
}

static void event_columns(buf *c, const usage_event *e)
{
    elem_str(c++, e->event_id);
    elem_ts(c++, e->ts_us);
    elem_str(c++, e->key_id);
    elem_str(c++, e->team);
    elem_str(c++, e->end_user);
    elem_str(c++, e->agent);
    elem_str(c++, e->task);
    elem_str(c++, e->feature);
    elem_str(c++, e->requested_model);
    elem_str(c++, e->provider);
    elem_str(c++, e->model);
    elem_str(c++, e->tier);
    elem_str(c++, e->route_reason);
    elem_bool(c++, e->streamed);
    elem_int(c++, e->status);
    elem_str(c++, e->error_class);
    elem_int(c++, e->attempts);
    elem_int(c++, e->input_tokens);
    elem_int(c++, e->cache_read_tokens);
    elem_int(c++, e->cache_write_tokens);
    elem_int(c++, e->output_tokens);
    elem_int(c++, e->reasoning_tokens);
    elem_bool(c++, e->usage_exact);
    elem_int(c++, e->cost_pusd);
    elem_int(c++, e->baseline_cost_pusd);
    elem_int(c++, e->latency_us);
    elem_int(c++, e->ttft_us);
    elem_int(c++, e->upstream_us);
    elem_bool(c++, e->cache_hit);
    elem_str(c, e->batch_id);
}

/* ------------------------------------------------------------ database */

static void on_maintenance_done(void *ctx, PGresult *res, const char *error)
{
    ledger *l = ctx;
    if (error)
        log_warn("ledger: partition maintenance failed: %s", error);
    else
        l->maintenance_due = false;
    flush(l);
}

/* Keeps daily partitions ahead of time and, if configured, drops old ones. */
static bool run_maintenance(ledger *l)
{
    char sql[256];
    if (l->opt.retention_days > 0)
        snprintf(sql, sizeof sql,
                 "SELECT bridle_ensure_partitions(%d), bridle_drop_partitions_older_than(%d)",
                 l->opt.partitions_ahead_days, l->opt.retention_days);
    else
        snprintf(sql, sizeof sql, "SELECT bridle_ensure_partitions(%d)",
                 l->opt.partitions_ahead_days);
    return pgconn_send(l->pg, sql, 0, NULL, on_maintenance_done, l) == 0;
}

/* An event older than the partitions (a long outage, a replay): create
 * partitions for the batch's days, then the batch is retried. */
static bool ensure_batch_partitions(ledger *l)
{
    char from[48], to[48];
    format_ts(from, sizeof from, l->batch_min_ts);
    format_ts(to, sizeof to, l->batch_max_ts);
    const char *values[2] = {from, to};
    int rc = pgconn_send(l->pg,
                         "SELECT count(*) FILTER (WHERE bridle_ensure_partition(d::date)) FROM "
                         "generate_series(date_trunc('day', $1::timestamptz AT TIME ZONE 'UTC'), "
                         "$2::timestamptz AT TIME ZONE 'UTC', interval '1 day') AS d",
                         2, values, on_maintenance_done, l);
    return rc == 0;
}

static void on_insert_done(void *ctx, PGresult *res, const char *error)
{
    ledger *l = ctx;
    int n = l->in_flight;
    l->in_flight = 0;
    if (error) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (state && strcmp(state, "23514") == 0) { /* no partition for a row */
            ensure_batch_partitions(l);
            return;
        }
        log_warn("ledger: inserting %d events failed (they stay in the spool): %s", n, error);
        return;
    }
    uint64_t last = q_at(l, n - 1)->seq;
    l->q_head = (l->q_head + n) % l->opt.queue_max;
    l->q_len -= n;
    l->stats.inserted += n;
    spool_ack(l->sp, last);
    flush(l);
}

static void send_batch(ledger *l)
{
    int n = l->q_len < l->opt.batch_max ? l->q_len : l->opt.batch_max;
    l->batch_min_ts = INT64_MAX;
    l->batch_max_ts = INT64_MIN;
    for (int k = 0; k < LEDGER_COLUMNS; k++) {
        buf_reset(&l->cols[k]);
        buf_append_char(&l->cols[k], '{');
    }
    for (int i = 0; i < n; i++) {
        const usage_event *e = &q_at(l, i)->ev;
        event_columns(l->cols, e);
        if (e->ts_us < l->batch_min_ts) l->batch_min_ts = e->ts_us;
        if (e->ts_us > l->batch_max_ts) l->batch_max_ts = e->ts_us;
    }
    const char *values[LEDGER_COLUMNS];
    for (int k = 0; k < LEDGER_COLUMNS; k++) {
        buf_append_char(&l->cols[k], '}');
        values[k] = l->cols[k].data;
    }
    if (pgconn_send(l->pg, insert_sql, LEDGER_COLUMNS, values, on_insert_done, l) == 0)
        l->in_flight = n;
}

static void check_drained(ledger *l)
{
    if (!l->draining || !l->drain_done) return;
    bool empty = l->q_len == 0 && l->next_to_queue > l->last_appended;
    if (!empty && util_now_ms() < l->drain_deadline_ms) return;
    if (!empty)
        log_warn(
            "ledger: stopping with %llu events not yet in the database; they stay in the "
            "spool and are sent at the next start",
            (unsigned long long)(l->last_appended - l->next_to_queue + 1 + (uint64_t)l->q_len));
    if (spool_sync_now(l->sp) != 0)
        log_error("ledger: the final sync of the spool failed: %s", strerror(errno));
    void (*done)(void *) = l->drain_done;
    l->drain_done = NULL;
    done(l->drain_ctx);
}

static struct spend *spend_slot(ledger *l, const char *key_id, bool create)
{
    for (int i = 0; i < l->n_spend; i++)
        if (strcmp(l->spend[i].key_id, key_id) == 0) return &l->spend[i];
    if (!create) return NULL;
    if (l->n_spend == l->cap_spend) {
        int cap = l->cap_spend ? l->cap_spend * 2 : 16;
        struct spend *s = realloc(l->spend, sizeof *s * (size_t)cap);
        if (!s) return NULL;
        l->spend = s;
        l->cap_spend = cap;
    }
    struct spend *s = &l->spend[l->n_spend++];
    snprintf(s->key_id, sizeof s->key_id, "%s", key_id);
    s->pusd = 0;
    return s;
}

static void on_spend_read(void *ctx, PGresult *res, const char *error)
{
    ledger *l = ctx;
    l->spend_due_ms = util_now_ms() + l->opt.spend_refresh_ms;
    if (error) {
        log_warn("ledger: reading spend per key failed: %s", error);
    } else {
        for (int i = 0; i < l->n_spend; i++)
            l->spend[i].pusd = 0;
        for (int r = 0; r < PQntuples(res); r++) {
            struct spend *s = spend_slot(l, PQgetvalue(res, r, 0), true);
            if (s) s->pusd = strtoll(PQgetvalue(res, r, 1), NULL, 10);
        }
        l->spend_known = true;
    }
    flush(l);
}

/* Month-to-date spend per key, for budgets; cheap with the (key_id, ts) index. */
static bool read_spend(ledger *l)
{
    return pgconn_send(
               l->pg,
               "SELECT key_id, sum(cost_pusd)::bigint FROM usage_events WHERE ts >= "
               "date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AND key_id "
               "IS NOT NULL GROUP BY key_id",
               0, NULL, on_spend_read, l) == 0;
}

static void flush(ledger *l)
{
    if (pgconn_idle(l->pg)) {
        if (l->maintenance_due && run_maintenance(l)) return;
        /* spend is read when nothing waits to be inserted, so it includes it */
        if (l->q_len == 0 && util_now_ms() >= l->spend_due_ms && read_spend(l)) return;
        refill_from_spool(l);
        if (l->q_len > 0) send_batch(l);
    }
    check_drained(l);
}

static void on_flush_timer(evutil_socket_t fd, short what, void *arg)
{
    flush(arg);
}

static void on_maintenance_timer(evutil_socket_t fd, short what, void *arg)
{
    ledger *l = arg;
    l->maintenance_due = true;
    flush(l);
}

static void on_db_state(void *ctx, bool up)
{
    ledger *l = ctx;
    l->stats.database_up = up;
    if (up) {
        l->maintenance_due = true;
        flush(l);
    }
}

static void on_spool_sync(evutil_socket_t fd, short what, void *arg)
{
    ledger *l = arg;
    spool_on_sync_ready(l->sp);
}

/* ------------------------------------------------------------ public */

static void log_lost_event(const usage_event *e, const char *why)
{
    log_error("ledger: %s; the event follows so it is not lost: event_id=%s ts_us=%lld key=%s "
              "model=%s provider=%s status=%d input=%lld cache_read=%lld cache_write=%lld "
              "output=%lld reasoning=%lld cost_pusd=%lld baseline_pusd=%lld",
              why, e->event_id, (long long)e->ts_us, e->key_id, e->model, e->provider, e->status,
              (long long)e->input_tokens, (long long)e->cache_read_tokens,
              (long long)e->cache_write_tokens, (long long)e->output_tokens,
              (long long)e->reasoning_tokens, (long long)e->cost_pusd,
              (long long)e->baseline_cost_pusd);
}

int ledger_record(ledger *l, const usage_event *ev)
{
    uint64_t seq;
    int rc = spool_append(l->sp, ev, &seq);
    if (rc != SPOOL_OK) {
        log_lost_event(ev, rc == SPOOL_FULL ? "the spool is full" : "the spool cannot be written");
        return -1;
    }
    l->stats.recorded++;
    l->last_appended = seq;
    struct spend *sp = ev->key_id[0] ? spend_slot(l, ev->key_id, true) : NULL;
    if (sp) /* counted now; the next read from the database replaces it */
        sp->pusd += ev->cost_pusd;
    q_push(l, seq, ev);
    if (l->q_len >= l->opt.batch_max) flush(l);
    return 0;
}

int64_t ledger_key_spend_pusd(const ledger *l, const char *key_id)
{
    if (!l->spend_known) return -1;
    for (int i = 0; i < l->n_spend; i++)
        if (strcmp(l->spend[i].key_id, key_id) == 0) return l->spend[i].pusd;
    return 0;
}

bool ledger_can_accept(const ledger *l)
{
    /* Everything in the database: the spool frees acked space on the next
     * append, whatever its files still measure. */
    if (l->q_len == 0 && l->next_to_queue > l->last_appended && l->in_flight == 0) return true;
    /* keep room for the requests already in flight */
    return spool_bytes(l->sp) + (1 << 20) < (uint64_t)l->opt.spool_max_bytes;
}

void ledger_drain(ledger *l, int limit_ms, void (*done)(void *ctx), void *ctx)
{
    l->draining = true;
    l->drain_done = done;
    l->drain_ctx = ctx;
    l->drain_deadline_ms = util_now_ms() + limit_ms;
    flush(l);
}

static void apply_defaults(ledger_options *o)
{
    if (o->spool_max_bytes <= 0) o->spool_max_bytes = 1LL << 30;
    if (o->flush_interval_ms <= 0) o->flush_interval_ms = 100;
    if (o->batch_max <= 0) o->batch_max = 5000;
    if (o->queue_max < o->batch_max)
        o->queue_max = o->queue_max > 0 ? o->batch_max : 4 * o->batch_max;
    if (o->partitions_ahead_days <= 0) o->partitions_ahead_days = 7;
    if (o->query_timeout_ms <= 0) o->query_timeout_ms = 10000;
}

ledger *ledger_new(struct event_base *base, const ledger_options *opt, char *err, size_t errlen)
{
    ledger *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->base = base;
    l->opt = *opt;
    apply_defaults(&l->opt);
    l->q = calloc((size_t)l->opt.queue_max, sizeof *l->q);
    mkdir(opt->spool_dir, 0700);
    spool_options so = {.cap_bytes = (uint64_t)l->opt.spool_max_bytes};
    char serr[256] = "";
    l->sp = l->q ? spool_open(opt->spool_dir, &so, serr, sizeof serr) : NULL;
    if (!l->sp) {
        snprintf(err, errlen, "cannot open the usage spool in %s: %s", opt->spool_dir,
                 serr[0] ? serr : strerror(errno));
        free(l->q);
        free(l);
        return NULL;
    }
    spool_stats st;
    spool_get_stats(l->sp, &st);
    l->last_appended = st.appended;
    l->next_to_queue = st.acked + 1;
    if (st.appended > st.acked)
        log_info("ledger: %llu events from an earlier run wait in the spool; they will be sent",
                 (unsigned long long)(st.appended - st.acked));
    refill_from_spool(l);
    event_assign(&l->sync_ev, base, spool_sync_fd(l->sp), EV_READ | EV_PERSIST, on_spool_sync, l);
    event_add(&l->sync_ev, NULL);
    event_assign(&l->flush_ev, base, -1, EV_PERSIST, on_flush_timer, l);
    struct timeval ftv = {l->opt.flush_interval_ms / 1000,
                          (l->opt.flush_interval_ms % 1000) * 1000};
    event_add(&l->flush_ev, &ftv);
    event_assign(&l->maint_ev, base, -1, EV_PERSIST, on_maintenance_timer, l);
    struct timeval mtv = {MAINTENANCE_INTERVAL_MS / 1000, 0};
    event_add(&l->maint_ev, &mtv);
    pgconn_options po = {.query_timeout_ms = l->opt.query_timeout_ms};
    l->pg = pgconn_new(base, opt->database_url, &po, on_db_state, l);
    return l;
}

void ledger_free(ledger *l)
{
    if (!l) return;
    event_del(&l->sync_ev);
    event_del(&l->flush_ev);
    event_del(&l->maint_ev);
    pgconn_free(l->pg);
    if (spool_close(l->sp) != 0) log_error("ledger: closing the spool failed: %s", strerror(errno));
    for (int k = 0; k < LEDGER_COLUMNS; k++)
        buf_free(&l->cols[k]);
    free(l->q);
    free(l->spend);
    free(l);
}

ledger_stats ledger_get_stats(const ledger *l)
{
    ledger_stats s = l->stats;
    s.queued = l->q_len;
    s.spool_bytes = (int64_t)spool_bytes(l->sp);
    return s;
}

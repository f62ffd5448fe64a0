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
    struct event sync_ev;   /* the spool's eventfd: durable position advanced */
    struct event flush_ev;  /* periodic flush */
    struct event maint_ev;  /* partitions ahead, retention */
    queued *q;              /* ring */
    int q_head, q_len;
    uint64_t next_to_queue; /* the next sequence number the queue expects */
    uint64_t last_appended;
    int in_flight;          /* events in the INSERT being run */
    bool maintenance_due;
    bool draining;
    void (*drain_done)(void *);
    void *drain_ctx;
    int64_t drain_deadline_ms;
    buf sql, params;
    int64_t batch_min_ts, batch_max_ts;
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
    if (l->q_len >= l->opt.queue_max || seq != l->next_to_queue)
        return false;
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
    if (seq < l->next_to_queue)
        return 0; /* a replayed record the queue already holds */
    l->next_to_queue = seq; /* the spool may skip numbers it lost: follow it */
    if (!q_push(l, seq, ev))
        return 1;
    l->stats.replayed++;
    return 0;
}

/* Reads events that are only in the spool back into the queue, in order. */
static void refill_from_spool(ledger *l)
{
    if (l->q_len >= l->opt.queue_max || l->next_to_queue > l->last_appended)
        return;
    spool_cursor *cur = spool_cursor_new(l->sp, l->next_to_queue - 1);
    if (!cur)
        return;
    usage_event ev;
    uint64_t seq;
    while (l->q_len < l->opt.queue_max && spool_cursor_next(cur, &ev, &seq) == 1)
        if (refill_cb(l, seq, &ev))
            break;
    spool_cursor_free(cur);
}

/* ------------------------------------------------------------ SQL */

static const char *const columns =
    "event_id,ts,key_id,team,end_user,agent,task,feature,requested_model,provider,model,tier,"
    "route_reason,streamed,status,error_class,attempts,input_tokens,cache_read_tokens,"
    "cache_write_tokens,output_tokens,reasoning_tokens,usage_exact,cost_pusd,baseline_cost_pusd,"
    "latency_us,ttft_us,upstream_us,cache_hit,batch_id";

static void build_insert_sql(buf *sql, int rows)
{
    buf_reset(sql);
    buf_printf(sql, "INSERT INTO usage_events (%s) VALUES ", columns);
    int p = 1;
    for (int r = 0; r < rows; r++) {
        buf_append_str(sql, r ? ",(" : "(");
        for (int col = 0; col < LEDGER_COLUMNS; col++)
            buf_printf(sql, col ? ",$%d" : "$%d", p++);
        buf_append_char(sql, ')');
    }
    buf_append_str(sql, " ON CONFLICT DO NOTHING");
}

/* Parameter texts are appended to one buffer as NUL-terminated strings;
 * offsets become pointers once the buffer stops growing. SIZE_MAX = NULL. */
static void param_str(buf *p, size_t *off, const char *s)
{
    if (!s || !*s) {
        *off = SIZE_MAX;
        return;
    }
    *off = p->len;
    buf_append(p, s, strlen(s) + 1);
}

static void param_int(buf *p, size_t *off, int64_t v)
{
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    *off = p->len;
    buf_append(p, tmp, strlen(tmp) + 1);
}

static void param_bool(buf *p, size_t *off, bool v)
{
    param_str(p, off, v ? "true" : "false");
}

static void param_ts(buf *p, size_t *off, int64_t us)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char tmp[48];
    size_t n = strftime(tmp, sizeof tmp, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(tmp + n, sizeof tmp - n, ".%06lld+00", (long long)(us % 1000000));
    *off = p->len;
    buf_append(p, tmp, strlen(tmp) + 1);
}

static void event_params(buf *p, size_t *o, const usage_event *e)
{
    param_str(p, o++, e->event_id);
    param_ts(p, o++, e->ts_us);
    param_str(p, o++, e->key_id);
    param_str(p, o++, e->team);
    param_str(p, o++, e->end_user);
    param_str(p, o++, e->agent);
    param_str(p, o++, e->task);
    param_str(p, o++, e->feature);
    param_str(p, o++, e->requested_model);
    param_str(p, o++, e->provider);
    param_str(p, o++, e->model);
    param_str(p, o++, e->tier);
    param_str(p, o++, e->route_reason);
    param_bool(p, o++, e->streamed);
    param_int(p, o++, e->status);
    param_str(p, o++, e->error_class);
    param_int(p, o++, e->attempts);
    param_int(p, o++, e->input_tokens);
    param_int(p, o++, e->cache_read_tokens);
    param_int(p, o++, e->cache_write_tokens);
    param_int(p, o++, e->output_tokens);
    param_int(p, o++, e->reasoning_tokens);
    param_bool(p, o++, e->usage_exact);
    param_int(p, o++, e->cost_pusd);
    param_int(p, o++, e->baseline_cost_pusd);
    param_int(p, o++, e->latency_us);
    param_int(p, o++, e->ttft_us);
    param_int(p, o++, e->upstream_us);
    param_bool(p, o++, e->cache_hit);
    param_str(p, o, e->batch_id);
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
        snprintf(sql, sizeof sql, "SELECT bridle_ensure_partitions(%d)", l->opt.partitions_ahead_days);
    return pgconn_send(l->pg, sql, 0, NULL, on_maintenance_done, l) == 0;
}

/* An event older than the partitions (a long outage, a replay): create
 * partitions for the batch's days, then the batch is retried. */
static bool ensure_batch_partitions(ledger *l)
{
    buf p = BUF_INIT;
    size_t off[2];
    param_ts(&p, &off[0], l->batch_min_ts);
    param_ts(&p, &off[1], l->batch_max_ts);
    const char *values[2] = {p.data + off[0], p.data + off[1]};
    int rc = pgconn_send(l->pg,
                         "SELECT count(*) FILTER (WHERE bridle_ensure_partition(d::date)) FROM "
                         "generate_series(date_trunc('day', $1::timestamptz AT TIME ZONE 'UTC'), "
                         "$2::timestamptz AT TIME ZONE 'UTC', interval '1 day') AS d",
                         2, values, on_maintenance_done, l);
    buf_free(&p);
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
    size_t *off = malloc(sizeof *off * (size_t)n * LEDGER_COLUMNS);
    const char **values = malloc(sizeof *values * (size_t)n * LEDGER_COLUMNS);
    if (!off || !values) {
        free(off);
        free(values);
        return;
    }
    buf_reset(&l->params);
    l->batch_min_ts = INT64_MAX;
    l->batch_max_ts = INT64_MIN;
    for (int i = 0; i < n; i++) {
        const usage_event *e = &q_at(l, i)->ev;
        event_params(&l->params, off + (size_t)i * LEDGER_COLUMNS, e);
        if (e->ts_us < l->batch_min_ts)
            l->batch_min_ts = e->ts_us;
        if (e->ts_us > l->batch_max_ts)
            l->batch_max_ts = e->ts_us;
    }
    for (size_t i = 0; i < (size_t)n * LEDGER_COLUMNS; i++)
        values[i] = off[i] == SIZE_MAX ? NULL : l->params.data + off[i];
    build_insert_sql(&l->sql, n);
    if (pgconn_send(l->pg, l->sql.data, n * LEDGER_COLUMNS, values, on_insert_done, l) == 0)
        l->in_flight = n;
    free(off);
    free(values);
}

static void check_drained(ledger *l)
{
    if (!l->draining || !l->drain_done)
        return;
    bool empty = l->q_len == 0 && l->next_to_queue > l->last_appended;
    if (!empty && util_now_ms() < l->drain_deadline_ms)
        return;
    if (!empty)
        log_warn("ledger: stopping with %llu events not yet in the database; they stay in the "
                 "spool and are sent at the next start",
                 (unsigned long long)(l->last_appended - l->next_to_queue + 1 + (uint64_t)l->q_len));
    if (spool_sync_now(l->sp) != 0)
        log_error("ledger: the final sync of the spool failed: %s", strerror(errno));
    void (*done)(void *) = l->drain_done;
    l->drain_done = NULL;
    done(l->drain_ctx);
}

static void flush(ledger *l)
{
    if (pgconn_idle(l->pg)) {
        if (l->maintenance_due && run_maintenance(l))
            return;
        refill_from_spool(l);
        if (l->q_len > 0)
            send_batch(l);
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
    q_push(l, seq, ev);
    if (l->q_len >= l->opt.batch_max)
        flush(l);
    return 0;
}

bool ledger_can_accept(const ledger *l)
{
    /* Everything in the database: the spool frees acked space on the next
     * append, whatever its files still measure. */
    if (l->q_len == 0 && l->next_to_queue > l->last_appended && l->in_flight == 0)
        return true;
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
    if (o->spool_max_bytes <= 0)
        o->spool_max_bytes = 1LL << 30;
    if (o->flush_interval_ms <= 0)
        o->flush_interval_ms = 100;
    if (o->batch_max <= 0 || o->batch_max > 2000) /* PostgreSQL takes at most 65535 parameters */
        o->batch_max = 1000;
    if (o->queue_max < o->batch_max)
        o->queue_max = o->queue_max > 0 ? o->batch_max : 20000;
    if (o->partitions_ahead_days <= 0)
        o->partitions_ahead_days = 7;
    if (o->query_timeout_ms <= 0)
        o->query_timeout_ms = 10000;
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
    struct timeval ftv = {l->opt.flush_interval_ms / 1000, (l->opt.flush_interval_ms % 1000) * 1000};
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
    if (!l)
        return;
    event_del(&l->sync_ev);
    event_del(&l->flush_ev);
    event_del(&l->maint_ev);
    pgconn_free(l->pg);
    if (spool_close(l->sp) != 0)
        log_error("ledger: closing the spool failed: %s", strerror(errno));
    buf_free(&l->sql);
    buf_free(&l->params);
    free(l->q);
    free(l);
}

ledger_stats ledger_get_stats(const ledger *l)
{
    ledger_stats s = l->stats;
    s.queued = l->q_len;
    s.spool_bytes = (int64_t)spool_bytes(l->sp);
    return s;
}

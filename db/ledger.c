/* The ledger: spool first, PostgreSQL second.
 *
 * Every event is staged, and a loop pass's events are appended to the
 * spool (db/spool) in one write at the end of the pass; each gets a
 * sequence number. A bounded in-memory queue holds a contiguous run of those events
 * for the database; when it is full (the database is away or slow) new
 * events stay only in the spool and are read back from it, in order, when
 * the queue has room again. A batch goes to PostgreSQL as one COPY (see
 * "SQL" below for duplicates); when it commits, the spool is told
 * (spool_ack) and trims itself. A restart replays what the spool still
 * holds; a replayed event that PostgreSQL already has is a no-op.
 *
 * One batch is in flight at a time (acks stay in order, one transaction per
 * batch). Each event's COPY line is written when it is queued, and while
 * PostgreSQL takes a batch the loop reads the spool and writes the rest of
 * the next batch's text, so that batch leaves the moment the commit comes
 * back: the drain costs PostgreSQL's time, not the sum of both sides'. */
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
    struct event write_ev; /* activated by ledger_record: the pass's events go to the spool */
    usage_event *staged;   /* this loop pass's events, for one spool write */
    int staged_n, staged_cap;
    void (*on_written)(void *);
    void *written_ctx;
    queued *q; /* ring */
    int q_head, q_len;
    uint64_t next_to_queue; /* the next sequence number the queue expects */
    uint64_t last_appended;
    uint64_t start_appended; /* the last event in the spool at open (an earlier run's) */
    bool start_replayed;     /* every event up to start_appended is committed */
    void (*on_replayed)(void *);
    void *replayed_ctx;
    int in_flight;          /* events in the INSERT being run */
    int64_t last_insert_ms; /* util_now_ms of the last committed batch; 0: none */
    bool maintenance_due;
    bool draining;
    void (*drain_done)(void *);
    void *drain_ctx;
    int64_t drain_deadline_ms;
    buf batch;  /* the COPY text of the batch in flight */
    bool dedup; /* the batch holds events the table has: take the dedup path */
    int64_t batch_min_ts, batch_max_ts;
    /* The COPY text of the next next_n events after those in flight, written
     * while they are; dropped when the batch in flight fails. */
    buf next;
    int next_n;
    int64_t next_min_ts, next_max_ts;
    /* The spool is read on from where the last refill stopped (a fresh
     * cursor scans its segment from the start): valid while cur_last is the
     * last event queued. */
    spool_cursor *cur;
    uint64_t cur_last;
    ledger_stats stats;
};

static void flush(ledger *l);

/* The earlier run's events are all committed (acked: the last sequence
 * number PostgreSQL has, in order): tell ledger_set_on_replayed's fn once. */
static void check_replayed(ledger *l, uint64_t acked)
{
    if (l->start_replayed || acked < l->start_appended) return;
    l->start_replayed = true;
    if (l->start_appended > 0)
        log_info("ledger: the events of an earlier run in the spool are all in the database");
    void (*fn)(void *) = l->on_replayed;
    l->on_replayed = NULL;
    if (fn) fn(l->replayed_ctx);
}

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

static void drop_cursor(ledger *l)
{
    spool_cursor_free(l->cur);
    l->cur = NULL;
}

/* The next spool record after the last one queued. The kept cursor holds a
 * copy of its segment as it was when loaded: a record it skips or misses may
 * only have been appended since, so anything but the very next number sends
 * the question to a fresh cursor, whose answer (a gap the spool lost, or
 * the end) is the spool's. 1: a record, 0: none, -1: error. */
static int spool_next(ledger *l, usage_event *ev, uint64_t *seq)
{
    if (l->cur && l->cur_last == l->next_to_queue - 1) {
        if (spool_cursor_next(l->cur, ev, seq) == 1 && *seq == l->next_to_queue) {
            l->cur_last = *seq;
            return 1;
        }
    }
    drop_cursor(l);
    l->cur = spool_cursor_new(l->sp, l->next_to_queue - 1);
    if (!l->cur) return -1;
    int r = spool_cursor_next(l->cur, ev, seq); /* above next_to_queue - 1 only */
    if (r != 1) {
        drop_cursor(l);
        return r;
    }
    l->cur_last = *seq;
    return 1;
}

/* Reads events that are only in the spool back into the queue, in order. */
static void refill_from_spool(ledger *l)
{
    usage_event ev;
    uint64_t seq;
    while (l->q_len < l->opt.queue_max && l->next_to_queue <= l->last_appended &&
           spool_next(l, &ev, &seq) == 1) {
        l->next_to_queue = seq; /* the spool may skip numbers it lost: follow it */
        q_push(l, seq, &ev);    /* room checked above, seq is next_to_queue */
        l->stats.replayed++;
    }
    /* caught up: the queue follows ledger_record; free the segment's copy */
    if (l->next_to_queue > l->last_appended) drop_cursor(l);
}

/* ------------------------------------------------------------ SQL
 *
 * A batch is one COPY into usage_events, in COPY's text format (a line per
 * event, tab between columns, \N for NULL): the cheapest way into
 * PostgreSQL for both sides (bench/RESULTS.md, "Ledger"). COPY has no ON
 * CONFLICT, so the primary key (ts, event_id) rejects a batch that holds an
 * event the table already has: that happens only when the spool replays
 * what PostgreSQL took just before a crash or a lost connection. Such a
 * batch goes round once more through a temporary table and
 * INSERT ... SELECT ... ON CONFLICT DO NOTHING (the "dedup" path), which
 * keeps the rows that are new and drops the others. */

#define LEDGER_COLUMN_LIST                                                                         \
    "(event_id,ts,key_id,team,end_user,agent,task,feature,requested_model,provider,model,tier,"    \
    "route_reason,streamed,status,error_class,attempts,input_tokens,cache_read_tokens,"            \
    "cache_write_tokens,output_tokens,reasoning_tokens,usage_exact,cost_pusd,baseline_cost_pusd,"  \
    "latency_us,ttft_us,upstream_us,cache_hit,batch_id)"

static const char copy_sql[] = "COPY usage_events " LEDGER_COLUMN_LIST " FROM STDIN";
static const char stage_sql[] = "CREATE TEMP TABLE IF NOT EXISTS ledger_stage (LIKE usage_events)";
static const char stage_copy_sql[] = "COPY ledger_stage " LEDGER_COLUMN_LIST " FROM STDIN";
/* Empties the stage as it inserts: nothing is left for the next batch. */
static const char stage_insert_sql[] =
    "WITH staged AS (DELETE FROM ledger_stage RETURNING *) "
    "INSERT INTO usage_events SELECT * FROM staged ON CONFLICT DO NOTHING";

/* The col_* write one column and its tab at p and return the end;
 * event_line reserves room for the longest line first, so none checks.
 * A text column is NULL when empty; backslash, tab, newline and carriage
 * return are escaped as COPY's text format wants. */
static char *col_str(char *p, const char *s)
{
    if (!*s) return memcpy(p, "\\N\t", 3), p + 3;
    for (; *s; s++) {
        char c = *s;
        if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
            *p++ = '\\';
            c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
        }
        *p++ = c;
    }
    *p++ = '\t';
    return p;
}

static char *col_int(char *p, int64_t v)
{
    char tmp[24], *end = tmp + sizeof tmp, *d;
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    *--end = '\t';
    d = util_u64_digits(u, end);
    if (v < 0) *--d = '-';
    size_t n = (size_t)(tmp + sizeof tmp - d);
    memcpy(p, d, n);
    return p + n;
}

static char *col_bool(char *p, bool v)
{
    *p++ = v ? 't' : 'f';
    *p++ = '\t';
    return p;
}

static char *col_ts(char *p, int64_t us)
{
    p += util_format_utc_us(us, p); /* nothing in it needs COPY's escapes */
    *p++ = '\t';
    return p;
}

/* One line of COPY text: the columns of LEDGER_COLUMN_LIST, in order. */
static void event_line(buf *b, const usage_event *e)
{
    /* every text column escaped at worst doubles; the numbers are ≤ 21 each */
    buf_reserve(b, 2 * sizeof *e + 40 * 21);
    char *p = b->data + b->len;
    p = col_str(p, e->event_id);
    p = col_ts(p, e->ts_us);
    p = col_str(p, e->key_id);
    p = col_str(p, e->team);
    p = col_str(p, e->end_user);
    p = col_str(p, e->agent);
    p = col_str(p, e->task);
    p = col_str(p, e->feature);
    p = col_str(p, e->requested_model);
    p = col_str(p, e->provider);
    p = col_str(p, e->model);
    p = col_str(p, e->tier);
    p = col_str(p, e->route_reason);
    p = col_bool(p, e->streamed);
    p = col_int(p, e->status);
    p = col_str(p, e->error_class);
    p = col_int(p, e->attempts);
    p = col_int(p, e->input_tokens);
    p = col_int(p, e->cache_read_tokens);
    p = col_int(p, e->cache_write_tokens);
    p = col_int(p, e->output_tokens);
    p = col_int(p, e->reasoning_tokens);
    p = col_bool(p, e->usage_exact);
    p = col_int(p, e->cost_pusd);
    p = col_int(p, e->baseline_cost_pusd);
    p = col_int(p, e->latency_us);
    p = col_int(p, e->ttft_us);
    p = col_int(p, e->upstream_us);
    p = col_bool(p, e->cache_hit);
    p = col_str(p, e->batch_id);
    p[-1] = '\n'; /* the last column ends the line, not a tab */
    b->len = (size_t)(p - b->data);
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
    char from[UTIL_UTC_US_LEN], to[UTIL_UTC_US_LEN];
    util_format_utc_us(l->batch_min_ts, from);
    util_format_utc_us(l->batch_max_ts, to);
    const char *values[2] = {from, to};
    int rc = pgconn_send(l->pg,
                         "SELECT count(*) FILTER (WHERE bridle_ensure_partition(d::date)) FROM "
                         "generate_series(date_trunc('day', $1::timestamptz AT TIME ZONE 'UTC'), "
                         "$2::timestamptz AT TIME ZONE 'UTC', interval '1 day') AS d",
                         2, values, on_maintenance_done, l);
    return rc == 0;
}

/* Appends the COPY text of queue entries [from, to) to the next batch. */
static void extend_next(ledger *l, int from, int to)
{
    if (l->next_n == 0) {
        buf_reset(&l->next);
        l->next_min_ts = INT64_MAX;
        l->next_max_ts = INT64_MIN;
    }
    for (int i = from; i < to; i++) {
        const usage_event *e = &q_at(l, i)->ev;
        event_line(&l->next, e);
        if (e->ts_us < l->next_min_ts) l->next_min_ts = e->ts_us;
        if (e->ts_us > l->next_max_ts) l->next_max_ts = e->ts_us;
    }
    l->next_n += to - from;
}

/* The COPY line of the event just queued, now (about a microsecond), when
 * it is the next one the next batch takes: a batch is ready when it leaves,
 * and the loop never stops to format thousands of events at once. */
static void format_queued(ledger *l)
{
    int i = l->q_len - 1;
    if (i == l->in_flight + l->next_n && l->next_n < l->opt.batch_max) extend_next(l, i, i + 1);
}

static void drop_next(ledger *l)
{
    l->next_n = 0;
}

static void on_insert_done(void *ctx, PGresult *res, const char *error)
{
    ledger *l = ctx;
    int n = l->in_flight;
    l->in_flight = 0;
    if (error) {
        drop_next(l);
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (state && strcmp(state, "23514") == 0) { /* no partition for a row */
            ensure_batch_partitions(l);
            return;
        }
        if (state && strcmp(state, "23505") == 0 && !l->dedup) { /* a replayed event */
            log_info("ledger: a batch of %d events holds events the database already has "
                     "(a replay); sending it again without them",
                     n);
            l->dedup = true;
            flush(l);
            return;
        }
        log_warn("ledger: inserting %d events failed (they stay in the spool): %s", n, error);
        return;
    }
    uint64_t last = q_at(l, n - 1)->seq;
    if (l->opt.on_shipped) /* committed: COPY and dedup paths alike, replays too */
        for (int i = 0; i < n; i++)
            l->opt.on_shipped(l->opt.shipped_ctx, &q_at(l, i)->ev);
    l->q_head = (l->q_head + n) % l->opt.queue_max;
    l->q_len -= n;
    l->stats.inserted += n;
    l->last_insert_ms = util_now_ms();
    l->dedup = false;
    spool_ack(l->sp, last);
    check_replayed(l, last);
    /* A short batch waits for the flush timer: sent back to back, a few events
     * per COPY at 1 connection cost PostgreSQL ~45 % of a core in commits. A
     * full batch, a spool backlog or a drain goes on at once. */
    if (l->q_len >= l->opt.batch_max || l->next_to_queue <= l->last_appended || l->draining)
        flush(l);
}

/* The dedup path, step by step: stage table ready → batch copied into it →
 * INSERT ... SELECT ... ON CONFLICT DO NOTHING → on_insert_done. */
static bool dedup_failed(ledger *l, const char *error)
{
    if (!error) return false;
    drop_next(l);
    log_warn("ledger: staging %d events failed (they stay in the spool): %s", l->in_flight, error);
    l->in_flight = 0;
    return true;
}

static void on_staged(void *ctx, PGresult *res, const char *error)
{
    ledger *l = ctx;
    if (dedup_failed(l, error)) return;
    if (pgconn_send(l->pg, stage_insert_sql, 0, NULL, on_insert_done, l) != 0) l->in_flight = 0;
}

static void on_stage_ready(void *ctx, PGresult *res, const char *error)
{
    ledger *l = ctx;
    if (dedup_failed(l, error)) return;
    if (pgconn_copy_in(l->pg, stage_copy_sql, l->batch.data, l->batch.len, on_staged, l) != 0)
        l->in_flight = 0;
}

/* pgconn_on_copy_sent: PostgreSQL has the batch; ready the next one meanwhile. */
static void prepare_next(void *ctx)
{
    ledger *l = ctx;
    refill_from_spool(l);
    int have = l->in_flight + l->next_n;
    int want =
        l->q_len - l->in_flight < l->opt.batch_max ? l->q_len : l->in_flight + l->opt.batch_max;
    if (want > have) extend_next(l, have, want);
}

static void send_batch(ledger *l)
{
    int n = l->q_len < l->opt.batch_max ? l->q_len : l->opt.batch_max;
    /* the text written while the last batch was in flight, completed: the
     * dedup path writes its own from the queue (drop_next ran) */
    if (l->next_n < n) extend_next(l, l->next_n, n);
    buf t = l->batch;
    l->batch = l->next;
    l->next = t;
    l->next_n = 0;
    l->batch_min_ts = l->next_min_ts;
    l->batch_max_ts = l->next_max_ts;
    int rc = l->dedup
                 ? pgconn_send(l->pg, stage_sql, 0, NULL, on_stage_ready, l)
                 : pgconn_copy_in(l->pg, copy_sql, l->batch.data, l->batch.len, on_insert_done, l);
    if (rc != 0) return;
    l->in_flight = n;
    if (!l->dedup) pgconn_on_copy_sent(l->pg, prepare_next, l);
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

static void flush(ledger *l)
{
    if (pgconn_idle(l->pg)) {
        if (l->maintenance_due && run_maintenance(l)) return;
        /* a full batch goes first; the spool is read while it is in flight */
        if (l->q_len < l->opt.batch_max) refill_from_spool(l);
        if (l->q_len > 0) send_batch(l);
    }
    /* the spool may have skipped records it lost: nothing left before next_to_queue */
    if (l->q_len == 0 && l->in_flight == 0 && l->next_to_queue > 0)
        check_replayed(l, l->next_to_queue - 1);
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

/* The pass's events into the spool in one write, then into the queue;
 * what the spool refused is logged whole. */
static void spool_staged(ledger *l)
{
    int n = l->staged_n;
    l->staged_n = 0;
    if (n == 0) return;
    size_t done = 0;
    uint64_t seq = 0;
    int rc = spool_append_many(l->sp, l->staged, (size_t)n, &done, &seq);
    for (size_t i = 0; i < done; i++) {
        l->stats.recorded++;
        l->last_appended = seq + i;
        if (q_push(l, seq + i, &l->staged[i])) format_queued(l);
    }
    for (size_t i = done; i < (size_t)n; i++)
        log_lost_event(&l->staged[i],
                       rc == SPOOL_FULL ? "the spool is full" : "the spool cannot be written");
}

static void write_staged(ledger *l)
{
    spool_staged(l);
    if (l->on_written) l->on_written(l->written_ctx);
    if (l->q_len >= l->opt.batch_max) flush(l);
}

static void on_write_ev(evutil_socket_t fd, short what, void *arg)
{
    write_staged(arg);
}

int ledger_record(ledger *l, const usage_event *ev)
{
    if (l->staged_n == l->staged_cap) {
        int cap = l->staged_cap ? 2 * l->staged_cap : 64;
        usage_event *nv = realloc(l->staged, (size_t)cap * sizeof *nv);
        if (!nv) {
            log_lost_event(ev, "out of memory");
            return -1;
        }
        l->staged = nv;
        l->staged_cap = cap;
    }
    l->staged[l->staged_n++] = *ev;
    /* Same priority as every event: it runs in this loop pass, after the
     * callbacks already active, before the next wait for I/O. */
    if (l->staged_n == 1) event_active(&l->write_ev, EV_TIMEOUT, 1);
    return 0;
}

void ledger_set_on_written(ledger *l, void (*fn)(void *ctx), void *ctx)
{
    l->on_written = fn;
    l->written_ctx = ctx;
}

void ledger_set_on_replayed(ledger *l, void (*fn)(void *ctx), void *ctx)
{
    if (l->start_replayed) {
        if (fn) fn(ctx);
        return;
    }
    l->on_replayed = fn;
    l->replayed_ctx = ctx;
}

void ledger_set_on_shipped(ledger *l, void (*fn)(void *ctx, const usage_event *ev), void *ctx)
{
    l->opt.on_shipped = fn;
    l->opt.shipped_ctx = ctx;
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
    write_staged(l);
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
    spool_options so = {.cap_bytes = (uint64_t)l->opt.spool_max_bytes,
                        .sync_interval_ms =
                            l->opt.spool_sync_ms < 0 ? SPOOL_SYNC_AT_ONCE : l->opt.spool_sync_ms};
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
    l->start_appended = st.appended;
    l->start_replayed = st.appended <= st.acked;
    if (st.appended > st.acked)
        log_info("ledger: %llu events from an earlier run wait in the spool; they will be sent",
                 (unsigned long long)(st.appended - st.acked));
    refill_from_spool(l);
    event_assign(&l->sync_ev, base, spool_sync_fd(l->sp), EV_READ | EV_PERSIST, on_spool_sync, l);
    event_add(&l->sync_ev, NULL);
    event_assign(&l->write_ev, base, -1, 0, on_write_ev, l);
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
    spool_staged(l); /* nothing else: what waits on the write is gone */
    event_del(&l->write_ev);
    event_del(&l->sync_ev);
    event_del(&l->flush_ev);
    event_del(&l->maint_ev);
    pgconn_free(l->pg);
    if (spool_close(l->sp) != 0) log_error("ledger: closing the spool failed: %s", strerror(errno));
    buf_free(&l->batch);
    buf_free(&l->next);
    spool_cursor_free(l->cur);
    free(l->staged);
    free(l->q);
    free(l);
}

ledger_stats ledger_get_stats(const ledger *l)
{
    ledger_stats s = l->stats;
    s.queued = l->q_len;
    s.spool_bytes = (int64_t)spool_bytes(l->sp);
    /* the queue is refilled from the spool in order: its head is the oldest */
    int64_t age = l->q_len > 0 ? util_wall_ms() - q_at((ledger *)l, 0)->ev.ts_us / 1000 : 0;
    s.oldest_unshipped_ms = age > 0 ? age : 0;
    s.last_insert_ms_ago = l->last_insert_ms ? util_now_ms() - l->last_insert_ms : -1;
    return s;
}

#include "db/pgconn.h"

#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/util.h"

typedef enum { PG_DOWN, PG_CONNECTING, PG_IDLE, PG_BUSY } pg_state;

struct pgconn {
    struct event_base *base;
    char *conninfo;
    pgconn_options opt;
    PGconn *conn;
    pg_state state;
    struct event sock_ev;
    bool sock_armed;
    int sock_fd;
    short sock_what;
    struct event timer; /* backoff, connect timeout or query timeout */
    int backoff_ms;
    pgconn_state_fn on_state;
    void *ctx;
    pgconn_result_fn on_result;
    void *rctx;
    PGresult *last;
    const char *copy_data; /* pgconn_copy_in: sent once the server asks for it */
    size_t copy_len;
    bool copy_ended; /* the COPY's data and end are queued in libpq */
    void (*on_copy_sent)(void *ctx);
    void *copy_sent_ctx;
    char err[256];
};

static void connect_start(pgconn *c);
static void on_socket(evutil_socket_t fd, short what, void *arg);

static void timer_arm(pgconn *c, int ms)
{
    struct timeval tv = util_ms_timeval(ms);
    evtimer_add(&c->timer, &tv);
}

/* Watches the connection's socket for `what`, re-reading PQsocket: libpq
 * may change it while connecting. */
static void watch(pgconn *c, short what)
{
    int fd = c->conn ? PQsocket(c->conn) : -1;
    if (c->sock_armed && fd == c->sock_fd && what == c->sock_what) return;
    if (c->sock_armed) event_del(&c->sock_ev);
    c->sock_armed = false;
    if (fd < 0) return;
    event_assign(&c->sock_ev, c->base, fd, what | EV_PERSIST, on_socket, c);
    event_add(&c->sock_ev, NULL);
    c->sock_armed = true;
    c->sock_fd = fd;
    c->sock_what = what;
}

static void set_error(pgconn *c, const char *what)
{
    const char *pqerr = c->conn ? PQerrorMessage(c->conn) : "";
    snprintf(c->err, sizeof c->err, "%s%s%s", what, *pqerr ? ": " : "", pqerr);
    size_t n = strlen(c->err);
    while (n && (c->err[n - 1] == '\n' || c->err[n - 1] == ' '))
        c->err[--n] = '\0';
}

/* Drops the connection, fails the query in flight, schedules a reconnect
 * with exponential backoff and full jitter. */
static void connection_lost(pgconn *c, const char *why)
{
    bool was_up = c->state == PG_IDLE || c->state == PG_BUSY;
    bool was_connecting = c->state == PG_CONNECTING;
    pgconn_result_fn cb = c->state == PG_BUSY ? c->on_result : NULL;
    void *rctx = c->rctx;
    set_error(c, why);
    if (c->sock_armed) event_del(&c->sock_ev);
    c->sock_armed = false;
    evtimer_del(&c->timer);
    if (c->last) PQclear(c->last);
    c->last = NULL;
    if (c->conn) PQfinish(c->conn);
    c->conn = NULL;
    c->state = PG_DOWN;
    c->on_result = NULL;
    c->copy_ended = false;
    c->on_copy_sent = NULL;
    int cap = c->backoff_ms ? c->backoff_ms * 2 : c->opt.backoff_min_ms;
    if (cap > c->opt.backoff_max_ms) cap = c->opt.backoff_max_ms;
    c->backoff_ms = cap;
    char r[9];
    unsigned jitter = util_random_hex(r, 4) ? (unsigned)strtoul(r, NULL, 16) : 0;
    int wait = cap / 2 + (int)(jitter % (unsigned)(cap / 2 + 1));
    log_warn("database: %s; reconnecting in %d ms", c->err, wait);
    timer_arm(c, wait);
    if (cb) cb(rctx, NULL, c->err);
    if ((was_up || was_connecting) && c->on_state) c->on_state(c->ctx, false);
}

static void connect_step(pgconn *c)
{
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING:
        watch(c, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        watch(c, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        evtimer_del(&c->timer);
        PQsetnonblocking(c->conn, 1);
        c->state = PG_IDLE;
        c->backoff_ms = 0;
        c->err[0] = '\0';
        watch(c, EV_READ); /* to notice the server going away while idle */
        log_info("database: connected");
        if (c->on_state) c->on_state(c->ctx, true);
        return;
    default:
        connection_lost(c, "cannot connect");
    }
}

static void deliver(pgconn *c)
{
    evtimer_del(&c->timer);
    PGresult *res = c->last;
    pgconn_result_fn cb = c->on_result;
    void *rctx = c->rctx;
    c->last = NULL;
    c->on_result = NULL;
    c->state = PG_IDLE;
    c->copy_data = NULL;
    c->copy_ended = false;
    c->on_copy_sent = NULL;
    watch(c, EV_READ);
    const char *err = NULL;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(c->err, sizeof c->err, "%s",
                 res ? PQresultErrorMessage(res) : "no result from the server");
        err = c->err;
    }
    if (cb) cb(rctx, res, err);
    if (res) PQclear(res);
}

/* The COPY's data has all left libpq: tell pgconn_on_copy_sent's fn, once. */
static void copy_sent(pgconn *c)
{
    void (*fn)(void *) = c->on_copy_sent;
    c->copy_ended = false;
    c->on_copy_sent = NULL;
    if (fn) fn(c->copy_sent_ctx);
}

/* The server is ready for COPY input: all of it, then the end. In
 * non-blocking mode libpq grows its output buffer rather than refuse
 * (PQputCopyData returns 0 only when it cannot), and query_step flushes. */
static int send_copy_data(pgconn *c)
{
    const char *data = c->copy_data ? c->copy_data : "";
    size_t len = c->copy_data ? c->copy_len : 0;
    c->copy_data = NULL;
    for (size_t off = 0; off < len;) {
        int n = len - off > (1 << 30) ? 1 << 30 : (int)(len - off);
        if (PQputCopyData(c->conn, data + off, n) != 1) {
            connection_lost(c, "cannot send COPY data");
            return -1;
        }
        off += (size_t)n;
    }
    if (PQputCopyEnd(c->conn, NULL) != 1) {
        connection_lost(c, "cannot end COPY data");
        return -1;
    }
    int f = PQflush(c->conn);
    if (f < 0) {
        connection_lost(c, "lost while sending COPY data");
        return -1;
    }
    watch(c, f == 1 ? EV_READ | EV_WRITE : EV_READ);
    c->copy_ended = true;
    if (f == 0) copy_sent(c);
    return 0;
}

/* Reads what the server sent; collects results until the query is done. */
static void query_step(pgconn *c, short what)
{
    if (what & EV_WRITE) {
        int f = PQflush(c->conn);
        if (f < 0) {
            connection_lost(c, "lost while sending a query");
            return;
        }
        watch(c, f == 1 ? EV_READ | EV_WRITE : EV_READ);
        if (f == 0 && c->copy_ended) copy_sent(c);
    }
    if (!(what & EV_READ)) return;
    if (!PQconsumeInput(c->conn)) {
        connection_lost(c, "lost while waiting for a result");
        return;
    }
    while (!PQisBusy(c->conn)) {
        PGresult *r = PQgetResult(c->conn);
        if (!r) {
            deliver(c);
            return;
        }
        if (PQresultStatus(r) == PGRES_COPY_IN) {
            PQclear(r);
            if (send_copy_data(c) != 0) return;
            continue;
        }
        if (c->last) PQclear(c->last);
        c->last = r;
    }
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
    pgconn *c = arg;
    switch (c->state) {
    case PG_CONNECTING:
        connect_step(c);
        break;
    case PG_BUSY:
        query_step(c, what);
        break;
    case PG_IDLE:
        /* nothing is expected while idle: a notice, or the end */
        if (!PQconsumeInput(c->conn) || PQstatus(c->conn) != CONNECTION_OK)
            connection_lost(c, "the server closed the connection");
        break;
    case PG_DOWN:
        break;
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    pgconn *c = arg;
    switch (c->state) {
    case PG_DOWN:
        connect_start(c);
        break;
    case PG_CONNECTING:
        connection_lost(c, "connection timed out");
        break;
    case PG_BUSY:
        connection_lost(c, "query timed out");
        break;
    case PG_IDLE:
        break;
    }
}

/* libpq prints server notices to stderr unless told otherwise; they are
 * debug detail here ("relation ... already exists, skipping"). */
static void log_notice(void *arg, const char *message)
{
    log_debug("database notice: %s", message);
}

static void connect_start(pgconn *c)
{
    c->conn = PQconnectStart(c->conninfo);
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
        connection_lost(c, "cannot start connecting");
        return;
    }
    PQsetNoticeProcessor(c->conn, log_notice, NULL);
    c->state = PG_CONNECTING;
    timer_arm(c, c->opt.connect_timeout_ms);
    connect_step(c);
}

pgconn *pgconn_new(struct event_base *base, const char *conninfo, const pgconn_options *opt,
                   pgconn_state_fn on_state, void *ctx)
{
    pgconn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->base = base;
    c->conninfo = strdup(conninfo);
    c->opt = opt ? *opt : (pgconn_options){0};
    if (c->opt.connect_timeout_ms <= 0) c->opt.connect_timeout_ms = 5000;
    if (c->opt.query_timeout_ms <= 0) c->opt.query_timeout_ms = 10000;
    if (c->opt.backoff_min_ms <= 0) c->opt.backoff_min_ms = 100;
    if (c->opt.backoff_max_ms < c->opt.backoff_min_ms)
        c->opt.backoff_max_ms = c->opt.backoff_min_ms > 5000 ? c->opt.backoff_min_ms : 5000;
    c->on_state = on_state;
    c->ctx = ctx;
    evtimer_assign(&c->timer, base, on_timer, c);
    connect_start(c);
    return c;
}

void pgconn_free(pgconn *c)
{
    if (!c) return;
    if (c->sock_armed) event_del(&c->sock_ev);
    evtimer_del(&c->timer);
    if (c->last) PQclear(c->last);
    if (c->conn) PQfinish(c->conn);
    free(c->conninfo);
    free(c);
}

bool pgconn_idle(const pgconn *c)
{
    return c && c->state == PG_IDLE;
}

bool pgconn_up(const pgconn *c)
{
    return c && (c->state == PG_IDLE || c->state == PG_BUSY);
}

bool pgconn_starting(const pgconn *c)
{
    return c && c->state == PG_CONNECTING && c->backoff_ms == 0;
}

int pgconn_send(pgconn *c, const char *sql, int nparams, const char *const *values,
                pgconn_result_fn on_result, void *ctx)
{
    if (!pgconn_idle(c)) return -1;
    if (!PQsendQueryParams(c->conn, sql, nparams, NULL, values, NULL, NULL, 0)) {
        connection_lost(c, "cannot send a query");
        return -1;
    }
    c->state = PG_BUSY;
    c->on_result = on_result;
    c->rctx = ctx;
    timer_arm(c, c->opt.query_timeout_ms);
    int f = PQflush(c->conn);
    watch(c, f == 1 ? EV_READ | EV_WRITE : EV_READ);
    return 0;
}

int pgconn_copy_in(pgconn *c, const char *sql, const char *data, size_t len,
                   pgconn_result_fn on_result, void *ctx)
{
    if (pgconn_send(c, sql, 0, NULL, on_result, ctx) != 0) return -1;
    c->copy_data = data;
    c->copy_len = len;
    return 0;
}

void pgconn_on_copy_sent(pgconn *c, void (*fn)(void *ctx), void *ctx)
{
    c->on_copy_sent = fn;
    c->copy_sent_ctx = ctx;
}

const char *pgconn_last_error(const pgconn *c)
{
    return c->err;
}

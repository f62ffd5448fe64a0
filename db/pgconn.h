/* One PostgreSQL connection driven by the event loop: libpq in
 * non-blocking mode (PQconnectStart/PQconnectPoll, PQsendQueryParams,
 * PQflush, PQconsumeInput, PQisBusy), never blocking the loop. It
 * reconnects by itself with exponential backoff and jitter, and gives up on
 * a query that takes longer than the query timeout (a paused or partitioned
 * server), dropping the connection and reconnecting.
 *
 * One query at a time: pgconn_send while busy fails. The result callback
 * runs on the loop with the final PGresult (owned by pgconn; valid during
 * the callback), or with res NULL and a reason when the connection was lost
 * or the query timed out. */
#ifndef BRIDLE_PGCONN_H
#define BRIDLE_PGCONN_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>

typedef struct pgconn pgconn;

typedef void (*pgconn_result_fn)(void *ctx, PGresult *res, const char *error);
/* Called when the connection becomes usable (up), is lost, or an attempt
 * to connect fails (!up; again at every failed attempt). */
typedef void (*pgconn_state_fn)(void *ctx, bool up);

typedef struct pgconn_options {
    int connect_timeout_ms; /* default 5000 */
    int query_timeout_ms;   /* default 10000 */
    int backoff_min_ms;     /* default 100 */
    int backoff_max_ms;     /* default 5000 */
} pgconn_options;

/* Starts connecting at once. conninfo is a URL or key=value string; it is
 * never logged (it may hold a password). */
pgconn *pgconn_new(struct event_base *base, const char *conninfo, const pgconn_options *opt,
                   pgconn_state_fn on_state, void *ctx);
void pgconn_free(pgconn *c);

/* Connected and not running a query. */
bool pgconn_idle(const pgconn *c);
bool pgconn_up(const pgconn *c);
/* The first attempt since the start is under way and nothing has failed
 * yet: a query sent now waits for it instead of being refused. */
bool pgconn_starting(const pgconn *c);

/* Sends one query with text parameters. Returns 0, or -1 when not idle. */
int pgconn_send(pgconn *c, const char *sql, int nparams, const char *const *values,
                pgconn_result_fn on_result, void *ctx);

/* Runs `COPY ... FROM STDIN` (sql) and sends data, len bytes in COPY's
 * text format, as its input. The data must stay valid until on_result
 * runs. Returns 0, or -1 when not idle. */
int pgconn_copy_in(pgconn *c, const char *sql, const char *data, size_t len,
                   pgconn_result_fn on_result, void *ctx);

/* Optional, for the query pgconn_copy_in has just started: fn(ctx) runs
 * once, when all of its data is in the socket (the server is taking it and
 * the loop is free until the result). Not called if the query ends first. */
void pgconn_on_copy_sent(pgconn *c, void (*fn)(void *ctx), void *ctx);

/* The last connection error, for logs (no secrets: libpq's messages name
 * host and user, never the password). */
const char *pgconn_last_error(const pgconn *c);

#endif

/* Queries in order on one non-blocking PostgreSQL connection (db/pgconn):
 * a FIFO of queries, one running at a time, each with its callback. The
 * callback runs on the loop with the result (owned by pgqueue, valid during
 * the callback) or NULL and a reason (the connection was lost, the query
 * timed out, or the database went away with the query still queued); never
 * inside the call that queued it. */
#ifndef BRIDLE_PGQUEUE_H
#define BRIDLE_PGQUEUE_H

#include <event2/event.h>
#include <libpq-fe.h>

typedef struct pgqueue pgqueue;
typedef void (*pgqueue_fn)(void *ctx, PGresult *res, const char *error);

/* max_queued: queries waiting at most (beyond that pgqueue_send fails). */
pgqueue *pgqueue_new(struct event_base *base, const char *database_url, int query_timeout_ms,
                     int max_queued);
void pgqueue_free(pgqueue *q);
int pgqueue_up(const pgqueue *q);

/* Queues sql with text params (NULL = SQL NULL). The params are copied,
 * but for params[borrow] (-1: none), which must stay valid until fn runs.
 * Returns 0, or -1 when the database is down or the queue full (fn is then
 * not called). */
int pgqueue_send(pgqueue *q, const char *sql, const char *const *params, int n, int borrow,
                 pgqueue_fn fn, void *ctx);

#endif

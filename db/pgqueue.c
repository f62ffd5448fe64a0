/* Queries in order on one connection (db/pgqueue.h). */
#include "db/pgqueue.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "db/pgconn.h"

#define MAX_PARAMS 12

typedef struct qjob {
    const char *sql;
    const char *values[MAX_PARAMS]; /* owned[i], or borrowed */
    char *owned[MAX_PARAMS];
    int n;
    pgqueue_fn fn;
    void *ctx;
    struct qjob *next;
} qjob;

struct pgqueue {
    pgconn *pg;
    qjob *head, *tail, *running;
    int queued, max_queued;
};

static void job_free(qjob *j)
{
    for (int i = 0; i < j->n; i++)
        free(j->owned[i]);
    free(j);
}

static void pump(pgqueue *q);

static void on_result(void *ctx, PGresult *res, const char *error)
{
    pgqueue *q = ctx;
    qjob *j = q->running;
    q->running = NULL;
    j->fn(j->ctx, res, error);
    job_free(j);
    pump(q);
}

static void pump(pgqueue *q)
{
    while (q->head && !q->running && pgconn_idle(q->pg)) {
        qjob *j = q->head;
        if (pgconn_send(q->pg, j->sql, j->n, j->values, on_result, q) != 0) return;
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        q->queued--;
        q->running = j;
    }
}

/* The database went away: every queued query fails now (the one running
 * fails through its own result). */
static void on_state(void *ctx, bool up)
{
    pgqueue *q = ctx;
    if (up) {
        pump(q);
        return;
    }
    while (q->head) {
        qjob *j = q->head;
        q->head = j->next;
        q->queued--;
        j->fn(j->ctx, NULL, "the database cannot be reached");
        job_free(j);
    }
    q->tail = NULL;
}

pgqueue *pgqueue_new(struct event_base *base, const char *database_url, int query_timeout_ms,
                     int max_queued)
{
    pgqueue *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->max_queued = max_queued;
    pgconn_options po = {.connect_timeout_ms = 5000, .query_timeout_ms = query_timeout_ms};
    if (!(q->pg = pgconn_new(base, database_url, &po, on_state, q))) {
        free(q);
        return NULL;
    }
    return q;
}

void pgqueue_free(pgqueue *q)
{
    if (!q) return;
    pgconn_free(q->pg);
    while (q->head) {
        qjob *j = q->head;
        q->head = j->next;
        job_free(j);
    }
    if (q->running) job_free(q->running);
    free(q);
}

int pgqueue_up(const pgqueue *q)
{
    return pgconn_up(q->pg);
}

int pgqueue_send(pgqueue *q, const char *sql, const char *const *params, int n, int borrow,
                 pgqueue_fn fn, void *ctx)
{
    /* just started: the query waits for the first connection (it fails with
     * it), so a gateway does not refuse what comes before that is made */
    bool reachable = pgconn_up(q->pg) || pgconn_starting(q->pg);
    if (n > MAX_PARAMS || !reachable || q->queued >= q->max_queued) return -1;
    qjob *j = calloc(1, sizeof *j);
    if (!j) return -1;
    j->sql = sql;
    j->fn = fn;
    j->ctx = ctx;
    j->n = n;
    for (int i = 0; i < n; i++) {
        if (i == borrow || !params[i]) {
            j->values[i] = params[i];
            continue;
        }
        if (!(j->owned[i] = strdup(params[i]))) {
            job_free(j);
            return -1;
        }
        j->values[i] = j->owned[i];
    }
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->queued++;
    pump(q);
    return 0;
}

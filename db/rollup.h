/* The rollup step in the gateway (migration 0006): on its own non-blocking
 * connection (db/pgconn.h), every interval_ms it runs
 * `SELECT bridle_rollup(batch)`, which moves the usage the capture trigger
 * left in the *_pending tables into the 5-minute, hourly and daily rollups
 * and trims the per-hour top 100. When a call moved a full batch (a backlog
 * after an outage or a bulk import) the next call goes out at once, after
 * yielding to the loop. At start and once a day it runs
 * `SELECT bridle_rollup_retention(days_5m, days_1h, days_1d)`.
 *
 * Nothing waits for it: no request's path touches this connection. Every
 * gateway on a database runs it; concurrent runs are safe (each pending row
 * is deleted by exactly one transaction, the one that adds it). */
#ifndef BRIDLE_ROLLUP_H
#define BRIDLE_ROLLUP_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct rollup rollup;

typedef struct rollup_options {
    const char *database_url;
    int interval_ms; /* between calls when nothing is left (default 2000) */
    int batch;       /* bridle_rollup's limit (default 100000) */
    int retention_days_5m, retention_days_1h, retention_days_1d; /* 0 = keep */
} rollup_options;

typedef struct rollup_stats {
    int64_t runs;            /* bridle_rollup calls answered */
    int64_t moved;           /* pending rows moved, in total */
    int64_t last_moved;      /* by the last call */
    int64_t last_ms;         /* how long the last call took */
    int64_t last_run_ms_ago; /* since the last answered call (-1: none yet) */
    int64_t failures;        /* calls that failed (connection lost, timeout, SQL error) */
    int64_t retention_runs, retention_deleted;
    bool catching_up; /* the last call moved a full batch: the next goes out at once */
} rollup_stats;

/* Starts at once (the first call when the connection is up). NULL on OOM.
 * conninfo is never logged. */
rollup *rollup_new(struct event_base *base, const rollup_options *opt);
/* Stops; a call in flight is abandoned (its transaction rolls back or
 * commits on the server: either is exact). */
void rollup_free(rollup *r);
rollup_stats rollup_get_stats(const rollup *r);

#endif

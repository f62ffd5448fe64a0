/* The process's state, shared by the server/ files. One per worker
 * process; never shared across threads. */
#ifndef BRIDLE_APP_H
#define BRIDLE_APP_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "providers/engine.h"
#include "router/config.h"

typedef struct app_stats {
    int64_t requests, replies_2xx, replies_4xx, replies_5xx, upstream_attempts;
} app_stats;

typedef struct app {
    struct event_base *base;
    bridle_config *cfg;
    int worker; /* this worker's index under a supervisor, or -1 (one process) */
    engine *eng;
    struct h1_server *h1;  /* the HTTP server (server/h1.h) */
    struct router *router; /* breakers, budgets, call slots, coalescing (router/router.h) */
    int64_t in_flight;     /* client requests being served */
    bool draining;         /* SIGTERM: finish what is in flight, then exit */
    struct event *drain_timer;
    struct chat *chat_pool; /* finished requests' sinks kept for reuse (server/chat.c) */
    int chat_pool_n;
    struct ledger *ledger;   /* NULL when no database is configured */
    struct idem_store *idem; /* Idempotency-Key claims; NULL without a database */
    struct rollup *rollup;   /* the rollup step (db/rollup.h); NULL without a database */
    struct keyring *keys;    /* config and database keys (router/keyring.h) */
    struct admin *admin;     /* /v1/bridle/admin/ (server/admin.h); NULL without a database */
    struct filestore *files; /* the Files API's store (server/files.h); NULL without a database */
    struct batches
        *batches; /* the Batch API and local queue (server/batches.h); NULL without one */
    app_stats stats;
} app;

#endif

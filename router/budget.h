/* Hard budgets: reserve before the call, settle after it, with leases.
 *
 * A request is charged to every budget with a limit among its key's
 * (day/week/month), its team's and the gateway's total ($.budgets.total),
 * in the UTC period holding its start time (the usage event's ts, so that
 * the database charges the same period). Before the upstream call the run
 * reserves E, an upper bound of what it can cost, on each of them; after
 * it the run settles the actual cost A.
 *
 * Each process holds a lease per budget: budget carved out of the shared
 * limit in PostgreSQL (bridle_budget_lease, migrations/0004) a slice at a
 * time. Locally a budget's lease is avail (not reserved) + reserved (in
 * flight) + unshipped (settled, not yet committed by the ledger). A
 * reservation that fits in avail costs no database round trip; otherwise
 * one lease call (one at a time per process; later requests wait behind it
 * in FIFO order and are served from its grant) asks for the missing part
 * and a slice more. Granted 0 means the budget is used up: the request is
 * refused. Every budgets.sync_ms the lease is synced (renewed, idle slack
 * given back, spend read back); a dead process's lease expires after
 * budgets.lease_ttl_ms and is swept, all but its unshipped part, which
 * stays held as an orphan until the restarted process has replayed its
 * spool (budget_take_over) or budgets.orphan_ttl_ms passes. Without a database the same
 * accounting runs against this process alone (db/budget_store.h). */
#ifndef BRIDLE_BUDGET_H
#define BRIDLE_BUDGET_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "db/budget_store.h"
#include "lib/buf.h"
#include "db/usage_event.h"
#include "router/config.h"

typedef struct budget budget;
struct bentry;

typedef struct budget_options {
    const char *instance; /* this process (router_instance_id) */
    int64_t lease_ttl_ms;
    int64_t sync_ms;          /* 0: no timer (tests call budget_sync_now) */
    int64_t lease_max_pusd;   /* the largest slice asked for at once; 0: no cap */
    int64_t orphan_ttl_ms;    /* an expired lease's unshipped part stays held this long; 0: 24 h */
    bool fail_open;           /* a lease that cannot be asked for admits instead of 503 */
    bool local;               /* the store is this process's: settled spend is charged at once */
    int64_t (*now_ms)(void);  /* monotonic; NULL: util_now_ms */
    int64_t (*wall_ms)(void); /* NULL: util_wall_ms */
} budget_options;

/* The budgets a request is charged to: limits per period (arrays of
 * N_PERIODS, 0 = none) or NULL. */
typedef struct budget_request {
    const char *key_id;
    const int64_t *key_limits;
    const char *team;
    const int64_t *team_limits;
    const int64_t *total_limits;
    int64_t ts_us;       /* the request's start, wall clock: usage_event.ts_us */
    int64_t amount_pusd; /* E: an upper bound of its cost */
} budget_request;

typedef enum { BUDGET_OK, BUDGET_WAIT, BUDGET_EXCEEDED, BUDGET_UNAVAILABLE } budget_status;

#define BUDGET_MAX_PER_REQUEST (3 * N_PERIODS)

/* A request's reservation, owned by the caller (in its run). Zeroed by
 * budget_reserve. */
typedef struct budget_hold {
    struct bentry *e[BUDGET_MAX_PER_REQUEST];
    int n;
    int64_t amount; /* reserved on every e[i] */
    int64_t ask;    /* being asked for on top of it */
    bool reserved;  /* amount is reserved: settle or release it */
    bool waiting;   /* queued for a lease */
    struct budget_hold *next;
    void (*cb)(void *ctx, budget_status st);
    void *ctx;
    int retry_after_s;
    /* BUDGET_EXCEEDED / BUDGET_UNAVAILABLE: what to tell the client (last:
     * budget_reserve clears only what comes before it) */
    char message[512];
} budget_hold;

typedef struct budget_stats {
    int64_t tracked;      /* budgets (scope, id, period, start) held locally */
    int64_t held_pusd;    /* their leases: avail + reserved + unshipped */
    int64_t waiting;      /* requests waiting for a lease */
    int64_t local_admits; /* reservations that took no database call */
    int64_t lease_admits; /* reservations that waited for a lease call */
    int64_t lease_calls, sync_calls;
    int64_t refused, unavailable;
    int64_t store_queries; /* statements sent to the database */
} budget_stats;

/* Takes ownership of store. NULL on OOM. */
budget *budget_new(struct event_base *base, budget_store *store, const budget_options *opt);
void budget_free(budget *b);

/* Reserves req->amount_pusd on every budget of req. BUDGET_OK: reserved
 * (or nothing to reserve); BUDGET_WAIT: cb(ctx, status) comes later (never
 * inside this call) with OK, EXCEEDED or UNAVAILABLE; EXCEEDED or
 * UNAVAILABLE now: h->message says why. */
budget_status budget_reserve(budget *b, budget_hold *h, const budget_request *req,
                             void (*cb)(void *ctx, budget_status st), void *ctx);
/* Raises h's reservation to total_pusd (a fail-over or an escalation to a
 * dearer candidate), with the same answers as budget_reserve; what is
 * already reserved stays reserved whatever the answer. */
budget_status budget_extend(budget *b, budget_hold *h, int64_t total_pusd,
                            void (*cb)(void *ctx, budget_status st), void *ctx);
/* The request ended having cost cost_pusd: its reservation becomes
 * settled spend (unshipped until the ledger commits it) and the rest goes
 * back to avail; a hold still queued leaves the queue. Every hold that
 * budget_reserve filled is ended by exactly one call of this (later calls
 * are no-ops). */
void budget_settle(budget *b, budget_hold *h, int64_t cost_pusd);
/* budget_settle with no cost: a failed request gives back its whole
 * reservation. */
void budget_release(budget *b, budget_hold *h);
/* The ledger committed ev (ledger_options.on_shipped). */
void budget_shipped(void *b, const usage_event *ev);

/* A restart: reads the previous run's instance id from <dir>/instance
 * (the spool directory) and writes this one's there (a temporary file
 * renamed over it). Its leases are ended by budget_spool_replayed. -1
 * (logged): the file cannot be written. */
int budget_take_over(budget *b, const char *dir);
/* The events the spool held at start are committed (ledger_set_on_replayed):
 * the previous run's leases (bridle_budget_release_instance), orphans
 * included, are ended; until then they hold those events' cost. */
void budget_spool_replayed(void *b);
/* The previous run's instance id ("" none), for tests and logs. */
const char *budget_previous_instance(const budget *b);

/* The highest share, in %, of (spent + unshipped) / limit among the key's
 * and its team's budgets for a request at ts_us, or -1 when none is known;
 * *team: the team's is the highest. */
int budget_share_pct(const budget *b, const budget_request *req, bool *team);

/* Syncs every lease now (the timer does it every sync_ms). */
void budget_sync_now(budget *b);
/* For shutdown, after the ledger drained: gives every lease back but what
 * is still reserved or unshipped (one sync), then calls done(ctx) (at
 * once when there is nothing to give back or the database is away). */
void budget_drain(budget *b, void (*done)(void *ctx), void *ctx);
budget_stats budget_get_stats(const budget *b);

/* ------------------------------------------------------------ batches
 *
 * A batch reserves its worst case in PostgreSQL when it is created
 * (migrations/0014, a lease of its own that its lines' usage events
 * settle), not through this process's leases: its lines run with
 * run_input.budget_held and reserve nothing here. */

/* The budgets a request of key is charged to (no amount, ts now). */
void budget_request_for_key(budget_request *req, const key_conf *key, const bridle_config *cfg);
/* req's budgets with a limit as four PostgreSQL array literals, appended to
 * out[0..3]: scopes, ids and periods (text[]) and limits (bigint[]).
 * Returns how many. */
int budget_request_arrays(const budget_request *req, buf out[4]);
/* The client's message for a batch whose worst case need does not fit in
 * a budget (scope "key", "team" or "total", its id, period "day", "week"
 * or "month", limit, spent and held there), in the run's words. */
void budget_say_batch_refused(const char *scope, const char *id, const char *period, int64_t limit,
                              int64_t spent, int64_t held, int64_t need, char *out, size_t n);

/* The UTC start of the period holding t (Unix seconds), and its end. */
int64_t budget_period_start(budget_period p, int64_t t);
int64_t budget_period_end(budget_period p, int64_t start);

#endif

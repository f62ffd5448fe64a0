/* Where budget leases come from (router/budget.h): PostgreSQL
 * (bridle_budget_lease_held2, bridle_budget_sync2, bridle_budget_sweep_orphans
 * and bridle_budget_release_instance of migrations/0007), or, without a database, this process
 * alone (an in-memory spent + held per budget, reset at restart).
 *
 * A store is a table of functions so that router/budget.c can be tested
 * with a fake one. Every call is asynchronous: it returns 0 and later calls
 * cb once on the loop (never inside the call), with the caller's items
 * filled in; or returns -1 at once when it cannot ask (the database is
 * down), and then never calls cb. The items must stay valid until cb. */
#ifndef BRIDLE_BUDGET_STORE_H
#define BRIDLE_BUDGET_STORE_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/buf.h"

/* One budget in one period: the key of bridle_budget_spend. */
typedef struct budget_item {
    const char *scope;  /* "key" | "team" | "total" (static strings) */
    char id[68];        /* key id, team name, "" for the total */
    const char *period; /* "day" | "week" | "month" */
    int64_t start_s;    /* the period's start, Unix seconds (UTC) */
    int64_t limit_pusd;
    /* lease: in */
    int64_t need_pusd, want_pusd;
    /* lease and sync: in, this process's whole lease on it now (before the
     * grant) */
    int64_t held_pusd;
    /* lease and sync: in, the part of held_pusd that is settled spend not yet
     * committed by the ledger (kept as an orphan if this process dies) */
    int64_t unshipped_pusd;
    /* out (lease and sync) */
    int64_t granted_pusd;    /* lease: 0 = refused (spent + held + need > limit) */
    int64_t spent_pusd;      /* settled spend of the period, all gateways */
    int64_t total_held_pusd; /* all gateways' leases, after the call */
} budget_item;

/* error NULL: the items' out fields are filled. */
typedef void (*budget_store_cb)(void *ctx, const char *error);

/* A budget limit written into bridle_budgets (source 'config'). */
typedef struct budget_limit_row {
    const char *scope, *id, *period;
    int64_t limit_pusd;
} budget_limit_row;

/* rows as four PostgreSQL array literals appended to out[0..3]: scopes, ids
 * and periods (text[], quoted and escaped) and limits (bigint[]). */
void budget_limit_arrays(const budget_limit_row *rows, int n, buf out[4]);

typedef struct budget_store budget_store;
typedef struct budget_store_ops {
    int (*lease)(budget_store *s, const char *instance, budget_item *items, int n, int64_t ttl_ms,
                 budget_store_cb cb, void *ctx);
    int (*sync)(budget_store *s, const char *instance, budget_item *items, int n, int64_t ttl_ms,
                budget_store_cb cb, void *ctx);
    /* Ends expired leases (any gateway's), keeping their unshipped part as
     * orphans for orphan_ttl_ms; fire and forget. */
    void (*sweep)(budget_store *s, int64_t orphan_ttl_ms);
    /* In-process store only (NULL for PostgreSQL): settled spend, charged at
     * once (there is no ledger to charge it): spent += pusd, held -= pusd. */
    void (*charge)(budget_store *s, const budget_item *item, int64_t pusd);
    bool (*up)(const budget_store *s);
    void (*free)(budget_store *s);
    /* Ends every lease of instance (a predecessor whose spool has replayed);
     * fire and forget, sent again at each reconnection until it ran. NULL:
     * nothing to do (the in-process store). */
    void (*release_instance)(budget_store *s, const char *instance);
} budget_store_ops;

struct budget_store {
    const budget_store_ops *ops;
    int64_t queries; /* statements sent to the database (0 for the in-process store) */
};

/* PostgreSQL at url, on its own connection. At each (re)connection it
 * writes the config's limits (rows) into bridle_budgets and thresholds_bp
 * into bridle_alert_thresholds (replacing them) before anything else. The
 * arrays are copied. */
budget_store *budget_store_pg_new(struct event_base *base, const char *url,
                                  const budget_limit_row *rows, int n_rows,
                                  const int *thresholds_bp, int n_thresholds);
/* This process alone. */
budget_store *budget_store_mem_new(struct event_base *base);

static inline void budget_store_free(budget_store *s)
{
    if (s) s->ops->free(s);
}

#endif

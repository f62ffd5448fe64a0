/* The router: what every request of one worker process shares while it is
 * routed, as one config sees it. Behind it is a core that outlives
 * configs (router_reload): the circuit breakers (one per model and
 * provider name), the retry budgets and call slots (one per provider
 * name), budgets, rate limits, heartbeats, metrics and the pool of
 * finished runs. The router itself holds its config (borrowed from the
 * process for the first, owned after a reload), the routing policy's model
 * table with each model's live state, the table of coalesced calls and the
 * memory response cache. It borrows the event loop, the engine
 * (providers/engine.h), the ledger and the idempotency store, which the
 * process owns.
 *
 * The runs (router/run.h) are its only users on the request path: a run
 * keeps the router it started on; the server reads the current one for
 * /v1/bridle/health and the drain. One current router per process, on one
 * thread. */
#ifndef BRIDLE_ROUTER_H
#define BRIDLE_ROUTER_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "providers/engine.h"
#include "router/breaker.h"
#include "router/config.h"
#include "router/policy.h"
#include "router/ratelimit.h"
#include "router/retry.h"

typedef struct router router;
struct ledger;
struct idem_store;
struct run;
struct instances;
struct budget;
struct resp_cache;
struct cache_store;
struct metrics;

/* ledger and idem may be NULL (no database). Returns NULL on OOM. */
router *router_new(struct event_base *base, const bridle_config *cfg, engine *eng,
                   struct ledger *ledger, struct idem_store *idem);
/* A config reload (SIGHUP): a router for cfg that shares everything of old
 * that does not come from the config (the loop, engine, ledger,
 * idempotency store, budgets and their leases, rate-limit windows,
 * heartbeats, metrics, the run pool, the spool's waiters, the shared cache
 * level) and the live state keyed by name: a breaker per model and
 * provider name, calls in flight and the retry budget per provider name.
 * Its own: the config (it takes ownership: freed with it), the policy's
 * model table, the coalescing table and the in-memory response cache
 * (whose entries point into their config), which starts empty.
 * New runs must go to the returned router; runs in flight keep old and
 * its config, and old is freed (with its config if it owned it) on the
 * loop pass after its last run is reaped. NULL on OOM: old stays. */
router *router_reload(router *old, bridle_config *cfg);
/* Frees the router, every older one still alive and all they share; no
 * run may still be live. */
void router_free(router *rt);

struct event_base *router_base(const router *rt);
const bridle_config *router_config(const router *rt);
engine *router_engine(const router *rt);
struct ledger *router_ledger(const router *rt);
struct idem_store *router_idem(const router *rt);
/* The hard budgets (router/budget.h): leases in PostgreSQL, or this
 * process's own accounting without a database. */
struct budget *router_budgets(const router *rt);

/* The response cache (router/cache.h), or NULL when cache.enabled is off. */
struct resp_cache *router_cache(const router *rt);
/* Its shared level in PostgreSQL (db/cache_store.h), or NULL when
 * cache.shared is off. */
struct cache_store *router_cache_store(const router *rt);
/* What the runs did (router/metrics.h), for GET /metrics. */
struct metrics *router_metrics(const router *rt);

/* ------------------------------------------------------------ call slots */

/* Takes one of p's max_concurrency call slots; false when all are taken.
 * Every slot taken is given back exactly once (router_slot_release). */
bool router_slot_take(router *rt, const provider_conf *p);
void router_slot_release(router *rt, const provider_conf *p);
/* Calls in flight to provider index i. */
int router_inflight(const router *rt, int provider_index);

/* ------------------------------------------------------------ resilience */

/* The breaker of t's model, or NULL when breakers are off. */
breaker *router_breaker(const router *rt, const target *t);
/* The retry budget of p. */
retry_budget *router_budget(const router *rt, const provider_conf *p);
/* A uniform 64-bit random value (splitmix64) for jitter. */
uint64_t router_random(router *rt);
/* "host:pid:random": this process among the gateways sharing a database
 * (budget leases, alert claims, rate-limit heartbeats). New at each start. */
const char *router_instance_id(const router *rt);

/* ------------------------------------------------------------ rate limits */

/* The rate-limit windows (router/ratelimit.h), shared by N instances. */
ratelimiter *router_ratelimit(const router *rt);
/* The heartbeats that count N (db/instances.h), or NULL without a database. */
const struct instances *router_instances(const router *rt);

/* ------------------------------------------------------------ policy */

/* The policy's model table with each model's state (enabled, healthy from
 * its breaker, busy when its local provider's slots are all taken) brought
 * up to date. *n receives its length. */
policy_model *router_policy_models(router *rt, int *n);

/* ------------------------------------------------------------ coalescing */

/* The run leading the call for fingerprint fp, or NULL. */
struct run *router_coalesce_find(const router *rt, const char *fp);
/* Registers `leader` for fp; false on OOM (the run then leads nobody). */
bool router_coalesce_add(router *rt, const char *fp, struct run *leader);
/* Removes leader's entry for fp (a no-op when absent). */
void router_coalesce_remove(router *rt, const char *fp, const struct run *leader);
/* Entries in the table: 0 when no call is being shared. */
int router_coalesce_count(const router *rt);

/* ------------------------------------------------------------ runs */

/* Runs in flight, and upstream attempts made since router_new. */
typedef struct router_stats {
    int64_t runs, upstream_attempts;
} router_stats;
router_stats router_get_stats(const router *rt);
/* For router/run.c: counts a run in or out, and an upstream attempt. */
void router_count_run(router *rt, int delta);
void router_count_attempt(router *rt);
/* The runs waiting for the ledger's spool write, and those being resumed
 * after it (router/run.c). */
struct run **router_spool_waiters(router *rt, bool resuming);

/* The head of the pool of finished runs kept for reuse (router/run.c). */
struct run **router_run_pool(router *rt, int **count);

#endif

#include "router/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "db/cache_store.h"
#include "db/instances.h"
#include "db/ledger.h"
#include "lib/log.h"
#include "lib/util.h"
#include "router/budget.h"
#include "router/cache.h"
#include "router/metrics.h"
#include "router/ratelimit.h"
#include "router/run.h"

#define COALESCE_BUCKETS 1024

typedef struct coalesce_entry {
    char fp[65];
    struct run *leader;
    struct coalesce_entry *next;
} coalesce_entry;

struct router {
    struct event_base *base;
    const bridle_config *cfg;
    engine *eng;
    struct ledger *ledger;
    struct idem_store *idem;
    struct budget *hard;    /* hard budgets (router/budget.h) */
    int *inflight;          /* calls in flight per provider index */
    breaker **breakers;     /* one per model target (target.index); NULL when off */
    retry_budget **budgets; /* one per provider (provider_conf.index) */
    uint64_t rng;           /* splitmix64 state */
    char instance[96];      /* this process among the gateways sharing the database */
    policy_model *pmodels;  /* the policy's model table (config order) */
    int n_pmodels;
    int64_t pmodels_health_ms; /* when pmodels[].healthy was last read from the breakers */
    coalesce_entry **coalesce; /* leaders by fingerprint, allocated on first use */
    int n_coalesce;
    struct run *pool;
    int pool_n;
    struct run *spool_waiting, *spool_resuming; /* router/run.c */
    router_stats stats;
    ratelimiter *rl;     /* rate-limit windows per key and team */
    instances *inst;     /* heartbeats: the gateways sharing the limits; NULL without a database */
    resp_cache *cache;   /* the response cache; NULL when off */
    cache_store *shared; /* its level in PostgreSQL; NULL when off */
    metrics *metrics;    /* what the runs did, for GET /metrics */
};

static bool resilience_new(router *rt)
{
    const resilience_conf *rc = config_resilience(rt->cfg);
    int nm = config_n_models(rt->cfg), np = config_n_providers(rt->cfg);
    if (rc->breaker) {
        breaker_config bc = breaker_config_default();
        bc.consecutive_failures = (int)rc->breaker_failures;
        bc.open_base_ms = rc->breaker_open_ms;
        bc.open_max_ms = rc->breaker_open_max_ms; /* config checks it is >= the base */
        if (!(rt->breakers = calloc((size_t)nm + 1, sizeof *rt->breakers))) return false;
        for (int i = 0; i < nm; i++)
            if (!(rt->breakers[i] = breaker_new(&bc))) return false;
    }
    if (!(rt->budgets = calloc((size_t)np + 1, sizeof *rt->budgets))) return false;
    for (int i = 0; i < np; i++)
        if (!(rt->budgets[i] = retry_budget_new(NULL))) return false;
    return true;
}

/* N from the heartbeats: each instance enforces floor(limit / N). */
static void on_instances(void *ctx, int n)
{
    router *rt = ctx;
    ratelimit_set_instances(rt->rl, n);
}

/* The config file's budgets, for bridle_budgets (source 'config'). */
static int config_budget_rows(const bridle_config *cfg, budget_limit_row **out)
{
    static const char *const periods[] = {"day", "week", "month"};
    int nk = config_n_keys(cfg), nt = config_n_teams(cfg), n = 0;
    budget_limit_row *rows = calloc((size_t)(nk + nt + 1) * N_PERIODS + 1, sizeof *rows);
    if (!rows) return -1;
    for (int i = 0; i <= nk + nt; i++) {
        const char *scope = i < nk ? "key" : i < nk + nt ? "team" : "total";
        const char *id = i < nk        ? config_key(cfg, i)->id
                         : i < nk + nt ? config_team(cfg, i - nk)->name
                                       : "";
        const spend_limits *l = i < nk        ? &config_key(cfg, i)->lim
                                : i < nk + nt ? &config_team(cfg, i - nk)->lim
                                              : &config_budgets(cfg)->total;
        for (int p = 0; p < N_PERIODS; p++)
            if (l->budget_pusd[p] > 0)
                rows[n++] = (budget_limit_row){scope, id, periods[p], l->budget_pusd[p]};
    }
    *out = rows;
    return n;
}

static bool budgets_new(router *rt)
{
    const bridle_config *cfg = rt->cfg;
    const budgets_conf *bc = config_budgets(cfg);
    const char *url = config_database(cfg)->url;
    budget_limit_row *rows = NULL;
    int n = config_budget_rows(cfg, &rows);
    if (n < 0) return false;
    budget_store *st;
    if (url && url[0]) {
        const alerts_conf *ac = config_alerts(cfg);
        st = budget_store_pg_new(rt->base, url, rows, n, ac->thresholds_bp, ac->n_thresholds);
    } else {
        if (n > 0)
            log_warn("no database configured: budgets are enforced by this process alone, and "
                     "what was spent is forgotten at restart");
        st = budget_store_mem_new(rt->base);
    }
    free(rows);
    if (!st) return false;
    budget_options bo = {
        .instance = rt->instance,
        .lease_ttl_ms = bc->lease_ttl_ms,
        .sync_ms = bc->sync_ms,
        .lease_max_pusd = bc->lease_max_pusd,
        .fail_open = bc->fail_open,
        .local = !(url && url[0]),
        .orphan_ttl_ms = bc->orphan_ttl_ms,
    };
    if (!(rt->hard = budget_new(rt->base, st, &bo))) return false;
    if (rt->ledger) ledger_set_on_shipped(rt->ledger, budget_shipped, rt->hard);
    /* a restart on this spool: the previous run's leases end once its events are in */
    const char *spool = config_database(cfg)->spool_dir;
    if (rt->ledger && url && url[0] && spool && spool[0] && budget_take_over(rt->hard, spool) == 0)
        ledger_set_on_replayed(rt->ledger, budget_spool_replayed, rt->hard);
    return true;
}

router *router_new(struct event_base *base, const bridle_config *cfg, engine *eng,
                   struct ledger *lg, struct idem_store *idem)
{
    router *rt = calloc(1, sizeof *rt);
    if (!rt) return NULL;
    *rt = (router){.base = base, .cfg = cfg, .eng = eng, .ledger = lg, .idem = idem};
    char seed[17];
    rt->rng = util_random_hex(seed, 8) ? strtoull(seed, NULL, 16) : (uint64_t)util_now_us();
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(rt->instance, sizeof rt->instance, "%s:%d:%08llx", host, (int)getpid(),
             (unsigned long long)(rt->rng >> 32));
    int nm = config_n_models(cfg), np = config_n_providers(cfg);
    rt->inflight = calloc((size_t)np + 1, sizeof *rt->inflight);
    rt->pmodels = calloc((size_t)nm + 1, sizeof *rt->pmodels);
    if (!rt->inflight || !rt->pmodels || !resilience_new(rt) || !budgets_new(rt)) {
        router_free(rt);
        return NULL;
    }
    rt->n_pmodels = policy_models_from_config(cfg, rt->pmodels, nm);
    if (lg) ledger_set_on_written(lg, run_spool_written, rt);
    const cache_conf *cc = config_cache(cfg);
    cache_store_options so = {.database_url = config_database(cfg)->url,
                              .timeout_ms = (int)cc->shared_timeout_ms,
                              .max_bytes = cc->shared_max_bytes,
                              .logged = cc->shared_logged};
    if (!(rt->rl = ratelimit_new()) || !(rt->metrics = metrics_new()) ||
        (cc->enabled && !(rt->cache = resp_cache_new(cc->max_bytes))) ||
        (cc->enabled && cc->shared && !(rt->shared = cache_store_new(base, &so)))) {
        router_free(rt);
        return NULL;
    }
    const database_conf *db = config_database(cfg);
    if (db->url && *db->url &&
        !(rt->inst =
              instances_new(base, db->url, rt->instance, db->heartbeat_ms, on_instances, rt))) {
        router_free(rt);
        return NULL;
    }
    return rt;
}

void router_free(router *rt)
{
    if (!rt) return;
    run_pool_free(rt);
    instances_free(rt->inst);
    ratelimit_free(rt->rl);
    resp_cache_free(rt->cache);
    cache_store_free(rt->shared);
    metrics_free(rt->metrics);
    if (rt->ledger) ledger_set_on_written(rt->ledger, NULL, NULL);
    if (rt->ledger && rt->hard) ledger_set_on_shipped(rt->ledger, NULL, NULL);
    if (rt->ledger && rt->hard) ledger_set_on_replayed(rt->ledger, NULL, NULL);
    budget_free(rt->hard);
    for (int i = 0; rt->breakers && i < config_n_models(rt->cfg); i++)
        breaker_free(rt->breakers[i]);
    for (int i = 0; rt->budgets && i < config_n_providers(rt->cfg); i++)
        retry_budget_free(rt->budgets[i]);
    for (int i = 0; rt->coalesce && i < COALESCE_BUCKETS; i++)
        while (rt->coalesce[i]) {
            coalesce_entry *e = rt->coalesce[i];
            rt->coalesce[i] = e->next;
            free(e);
        }
    free(rt->coalesce);
    free(rt->breakers);
    free(rt->budgets);
    free(rt->inflight);
    free(rt->pmodels);
    free(rt);
}

struct resp_cache *router_cache(const router *rt)
{
    return rt->cache;
}

struct cache_store *router_cache_store(const router *rt)
{
    return rt->shared;
}

struct metrics *router_metrics(const router *rt)
{
    return rt->metrics;
}

ratelimiter *router_ratelimit(const router *rt)
{
    return rt->rl;
}

const struct instances *router_instances(const router *rt)
{
    return rt->inst;
}

struct event_base *router_base(const router *rt)
{
    return rt->base;
}
const bridle_config *router_config(const router *rt)
{
    return rt->cfg;
}
engine *router_engine(const router *rt)
{
    return rt->eng;
}
struct ledger *router_ledger(const router *rt)
{
    return rt->ledger;
}
struct budget *router_budgets(const router *rt)
{
    return rt->hard;
}
struct idem_store *router_idem(const router *rt)
{
    return rt->idem;
}

/* ------------------------------------------------------------ call slots */

bool router_slot_take(router *rt, const provider_conf *p)
{
    if (rt->inflight[p->index] >= p->max_concurrency) return false;
    rt->inflight[p->index]++;
    return true;
}

void router_slot_release(router *rt, const provider_conf *p)
{
    if (rt->inflight[p->index] > 0) rt->inflight[p->index]--;
}

int router_inflight(const router *rt, int provider_index)
{
    return rt->inflight[provider_index];
}

/* ------------------------------------------------------------ resilience */

breaker *router_breaker(const router *rt, const target *t)
{
    return rt->breakers ? rt->breakers[t->index] : NULL;
}

retry_budget *router_budget(const router *rt, const provider_conf *p)
{
    return rt->budgets[p->index];
}

const char *router_instance_id(const router *rt)
{
    return rt->instance;
}

uint64_t router_random(router *rt)
{
    uint64_t z = (rt->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------ policy */

/* Breakers change state over milliseconds, so their view is refreshed once
 * per millisecond (a target that opened since is still skipped at attempt
 * time); "busy" matters only for local models and changes with every call,
 * so it is read each time. */
policy_model *router_policy_models(router *rt, int *n)
{
    int64_t now = util_now_ms();
    bool health = now != rt->pmodels_health_ms;
    rt->pmodels_health_ms = now;
    for (int i = 0; i < rt->n_pmodels; i++) {
        policy_model *pm = &rt->pmodels[i];
        if (health)
            pm->healthy = !rt->breakers || breaker_get_state(rt->breakers[i], now) != BREAKER_OPEN;
        if (pm->local) {
            const model_conf *m = config_model(rt->cfg, i);
            const provider_conf *p = m->target.provider;
            pm->busy = m->enabled && rt->inflight[p->index] >= p->max_concurrency;
        }
    }
    *n = rt->n_pmodels;
    return rt->pmodels;
}

/* ------------------------------------------------------------ coalescing */

static coalesce_entry **bucket_of(const router *rt, const char *fp)
{
    char head[4] = {fp[0], fp[1], fp[2], '\0'};
    return &rt->coalesce[strtoul(head, NULL, 16) % COALESCE_BUCKETS];
}

struct run *router_coalesce_find(const router *rt, const char *fp)
{
    if (!rt->coalesce) return NULL;
    for (coalesce_entry *e = *bucket_of(rt, fp); e; e = e->next)
        if (strcmp(e->fp, fp) == 0) return e->leader;
    return NULL;
}

bool router_coalesce_add(router *rt, const char *fp, struct run *leader)
{
    if (!rt->coalesce && !(rt->coalesce = calloc(COALESCE_BUCKETS, sizeof *rt->coalesce)))
        return false;
    coalesce_entry *e = malloc(sizeof *e);
    if (!e) return false;
    snprintf(e->fp, sizeof e->fp, "%s", fp);
    e->leader = leader;
    coalesce_entry **b = bucket_of(rt, fp);
    e->next = *b;
    *b = e;
    rt->n_coalesce++;
    return true;
}

void router_coalesce_remove(router *rt, const char *fp, const struct run *leader)
{
    if (!rt->coalesce) return;
    for (coalesce_entry **p = bucket_of(rt, fp); *p; p = &(*p)->next)
        if ((*p)->leader == leader) {
            coalesce_entry *e = *p;
            *p = e->next;
            free(e);
            rt->n_coalesce--;
            return;
        }
}

int router_coalesce_count(const router *rt)
{
    return rt->n_coalesce;
}

/* ------------------------------------------------------------ runs */

router_stats router_get_stats(const router *rt)
{
    return rt->stats;
}
void router_count_run(router *rt, int delta)
{
    rt->stats.runs += delta;
}
void router_count_attempt(router *rt)
{
    rt->stats.upstream_attempts++;
}

struct run **router_spool_waiters(router *rt, bool resuming)
{
    return resuming ? &rt->spool_resuming : &rt->spool_waiting;
}

struct run **router_run_pool(router *rt, int **count)
{
    *count = &rt->pool_n;
    return &rt->pool;
}

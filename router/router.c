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

/* A provider's live state, shared by every config that names it: calls in
 * flight (so max_concurrency counts the calls of runs still on an older
 * config) and its retry budget. */
typedef struct prov_state {
    char *name;
    int inflight;
    retry_budget *retry;
    struct prov_state *next;
} prov_state;

/* A model target's breaker, shared by every config in which the model has
 * the same name and provider: a reload does not forget that a target is
 * failing. */
typedef struct named_breaker {
    char *model, *provider;
    breaker *b;
    struct named_breaker *next;
} named_breaker;

/* What outlives a config: everything but the config-derived tables. */
typedef struct router_core {
    struct event_base *base;
    engine *eng;
    struct ledger *ledger;
    struct idem_store *idem;
    struct budget *hard; /* hard budgets (router/budget.h) */
    uint64_t rng;        /* splitmix64 state */
    char instance[96];   /* this process among the gateways sharing the database */
    struct run *pool;
    int pool_n;
    struct run *spool_waiting, *spool_resuming; /* router/run.c */
    router_stats stats;
    ratelimiter *rl;     /* rate-limit windows per key and team */
    instances *inst;     /* heartbeats: the gateways sharing the limits; NULL without a database */
    cache_store *shared; /* the response cache's level in PostgreSQL; NULL when off */
    metrics *metrics;    /* what the runs did, for GET /metrics */
    prov_state *provs;
    named_breaker *breakers;
    router *views; /* every router on this core: the current one and retired ones */
} router_core;

/* One config's view of the core (router.h: router_reload). */
struct router {
    router_core *core;
    const bridle_config *cfg;
    bool owns_cfg;         /* a reloaded config: freed with its router */
    bool retired;          /* a newer config serves new runs; freed after its last run */
    int64_t runs;          /* runs started on this router and not yet reaped */
    struct event *reap;    /* frees a retired router on the loop pass after its last run */
    prov_state **provs;    /* by provider_conf.index */
    breaker **breakers;    /* by target.index; NULL when off */
    policy_model *pmodels; /* the policy's model table (config order) */
    int n_pmodels;
    int64_t pmodels_health_ms; /* when pmodels[].healthy was last read from the breakers */
    coalesce_entry **coalesce; /* leaders by fingerprint, allocated on first use */
    int n_coalesce;
    resp_cache *cache; /* the response cache; NULL when off. Per config: its
                          entries point at the config's targets */
    router *next_view;
};

static prov_state *prov_find(router_core *c, const char *name)
{
    for (prov_state *p = c->provs; p; p = p->next)
        if (strcmp(p->name, name) == 0) return p;
    prov_state *p = calloc(1, sizeof *p);
    if (!p || !(p->name = strdup(name)) || !(p->retry = retry_budget_new(NULL))) {
        if (p) free(p->name);
        free(p);
        return NULL;
    }
    p->next = c->provs;
    c->provs = p;
    return p;
}

static breaker *breaker_find(router_core *c, const model_conf *m, const breaker_config *bc)
{
    const char *prov = m->target.provider->name;
    for (named_breaker *n = c->breakers; n; n = n->next)
        if (strcmp(n->model, m->name) == 0 && strcmp(n->provider, prov) == 0) {
            breaker_set_config(n->b, bc);
            return n->b;
        }
    named_breaker *n = calloc(1, sizeof *n);
    if (!n || !(n->model = strdup(m->name)) || !(n->provider = strdup(prov)) ||
        !(n->b = breaker_new(bc))) {
        if (n) {
            free(n->model);
            free(n->provider);
        }
        free(n);
        return NULL;
    }
    n->next = c->breakers;
    c->breakers = n;
    return n->b;
}

/* This config's tables over the core's named state. */
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
            if (!(rt->breakers[i] = breaker_find(rt->core, config_model(rt->cfg, i), &bc)))
                return false;
    }
    if (!(rt->provs = calloc((size_t)np + 1, sizeof *rt->provs))) return false;
    for (int i = 0; i < np; i++)
        if (!(rt->provs[i] = prov_find(rt->core, config_provider(rt->cfg, i)->name))) return false;
    return true;
}

/* N from the heartbeats: each instance enforces floor(limit / N). */
static void on_instances(void *ctx, int n)
{
    router_core *c = ctx;
    ratelimit_set_instances(c->rl, n);
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

static bool budgets_new(router_core *c, const bridle_config *cfg)
{
    const budgets_conf *bc = config_budgets(cfg);
    const char *url = config_database(cfg)->url;
    budget_limit_row *rows = NULL;
    int n = config_budget_rows(cfg, &rows);
    if (n < 0) return false;
    budget_store *st;
    if (url && url[0]) {
        const alerts_conf *ac = config_alerts(cfg);
        st = budget_store_pg_new(c->base, url, rows, n, ac->thresholds_bp, ac->n_thresholds);
    } else {
        if (n > 0)
            log_warn("no database configured: budgets are enforced by this process alone, and "
                     "what was spent is forgotten at restart");
        st = budget_store_mem_new(c->base);
    }
    free(rows);
    if (!st) return false;
    budget_options bo = {
        .instance = c->instance,
        .lease_ttl_ms = bc->lease_ttl_ms,
        .sync_ms = bc->sync_ms,
        .lease_max_pusd = bc->lease_max_pusd,
        .fail_open = bc->fail_open,
        .local = !(url && url[0]),
        .orphan_ttl_ms = bc->orphan_ttl_ms,
    };
    if (!(c->hard = budget_new(c->base, st, &bo))) return false;
    if (c->ledger) ledger_set_on_shipped(c->ledger, budget_shipped, c->hard);
    /* a restart on this spool: the previous run's leases end once its events are in */
    const char *spool = config_database(cfg)->spool_dir;
    if (c->ledger && url && url[0] && spool && spool[0] && budget_take_over(c->hard, spool) == 0)
        ledger_set_on_replayed(c->ledger, budget_spool_replayed, c->hard);
    return true;
}

static void core_free(router_core *c);
static void view_free(router *rt);

static void on_reap_view(evutil_socket_t fd, short what, void *arg)
{
    router *rt = arg;
    if (rt->retired && rt->runs == 0) view_free(rt);
}

/* A router for cfg on core c (the config-derived tables). NULL on OOM. */
static router *view_new(router_core *c, const bridle_config *cfg)
{
    router *rt = calloc(1, sizeof *rt);
    if (!rt) return NULL;
    *rt = (router){.core = c, .cfg = cfg};
    rt->next_view = c->views;
    c->views = rt;
    int nm = config_n_models(cfg);
    const cache_conf *cc = config_cache(cfg);
    rt->pmodels = calloc((size_t)nm + 1, sizeof *rt->pmodels);
    rt->reap = evtimer_new(c->base, on_reap_view, rt);
    if (!rt->pmodels || !rt->reap || !resilience_new(rt) ||
        (cc->enabled && !(rt->cache = resp_cache_new(cc->max_bytes)))) {
        view_free(rt);
        return NULL;
    }
    rt->n_pmodels = policy_models_from_config(cfg, rt->pmodels, nm);
    return rt;
}

router *router_new(struct event_base *base, const bridle_config *cfg, engine *eng,
                   struct ledger *lg, struct idem_store *idem)
{
    router_core *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    *c = (router_core){.base = base, .eng = eng, .ledger = lg, .idem = idem};
    char seed[17];
    c->rng = util_random_hex(seed, 8) ? strtoull(seed, NULL, 16) : (uint64_t)util_now_us();
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(c->instance, sizeof c->instance, "%s:%d:%08llx", host, (int)getpid(),
             (unsigned long long)(c->rng >> 32));
    const cache_conf *cc = config_cache(cfg);
    cache_store_options so = {.database_url = config_database(cfg)->url,
                              .timeout_ms = (int)cc->shared_timeout_ms,
                              .max_bytes = cc->shared_max_bytes,
                              .logged = cc->shared_logged};
    const database_conf *db = config_database(cfg);
    router *rt = NULL;
    if (!budgets_new(c, cfg) || !(c->rl = ratelimit_new()) || !(c->metrics = metrics_new()) ||
        (cc->enabled && cc->shared && !(c->shared = cache_store_new(base, &so))) ||
        (db->url && *db->url &&
         !(c->inst =
               instances_new(base, db->url, c->instance, db->heartbeat_ms, on_instances, c))) ||
        !(rt = view_new(c, cfg))) {
        core_free(c);
        return NULL;
    }
    if (lg) ledger_set_on_written(lg, run_spool_written, rt);
    return rt;
}

router *router_reload(router *old, bridle_config *cfg)
{
    router_core *c = old->core;
    router *rt = view_new(c, cfg);
    if (!rt) return NULL;
    rt->owns_cfg = true;
    old->retired = true;
    /* the spool's waiters are the core's: any live router resumes them */
    if (c->ledger) ledger_set_on_written(c->ledger, run_spool_written, rt);
    if (old->runs == 0) event_active(old->reap, EV_TIMEOUT, 1);
    return rt;
}

static void view_free(router *rt)
{
    router_core *c = rt->core;
    for (router **p = &c->views; *p; p = &(*p)->next_view)
        if (*p == rt) {
            *p = rt->next_view;
            break;
        }
    if (rt->reap) event_free(rt->reap);
    resp_cache_free(rt->cache);
    for (int i = 0; rt->coalesce && i < COALESCE_BUCKETS; i++)
        while (rt->coalesce[i]) {
            coalesce_entry *e = rt->coalesce[i];
            rt->coalesce[i] = e->next;
            free(e);
        }
    free(rt->coalesce);
    free(rt->breakers);
    free(rt->provs);
    free(rt->pmodels);
    if (rt->owns_cfg) config_free((bridle_config *)rt->cfg);
    free(rt);
}

static void core_free(router_core *c)
{
    if (c->views) run_pool_free(c->views); /* the pool is the core's */
    while (c->views)
        view_free(c->views);
    instances_free(c->inst);
    ratelimit_free(c->rl);
    cache_store_free(c->shared);
    metrics_free(c->metrics);
    if (c->ledger) ledger_set_on_written(c->ledger, NULL, NULL);
    if (c->ledger && c->hard) ledger_set_on_shipped(c->ledger, NULL, NULL);
    if (c->ledger && c->hard) ledger_set_on_replayed(c->ledger, NULL, NULL);
    budget_free(c->hard);
    while (c->breakers) {
        named_breaker *n = c->breakers;
        c->breakers = n->next;
        breaker_free(n->b);
        free(n->model);
        free(n->provider);
        free(n);
    }
    while (c->provs) {
        prov_state *p = c->provs;
        c->provs = p->next;
        retry_budget_free(p->retry);
        free(p->name);
        free(p);
    }
    free(c);
}

void router_free(router *rt)
{
    if (rt) core_free(rt->core);
}

struct resp_cache *router_cache(const router *rt)
{
    return rt->cache;
}

struct cache_store *router_cache_store(const router *rt)
{
    return rt->core->shared;
}

struct metrics *router_metrics(const router *rt)
{
    return rt->core->metrics;
}

ratelimiter *router_ratelimit(const router *rt)
{
    return rt->core->rl;
}

const struct instances *router_instances(const router *rt)
{
    return rt->core->inst;
}

struct event_base *router_base(const router *rt)
{
    return rt->core->base;
}
const bridle_config *router_config(const router *rt)
{
    return rt->cfg;
}
engine *router_engine(const router *rt)
{
    return rt->core->eng;
}
struct ledger *router_ledger(const router *rt)
{
    return rt->core->ledger;
}
struct budget *router_budgets(const router *rt)
{
    return rt->core->hard;
}
struct idem_store *router_idem(const router *rt)
{
    return rt->core->idem;
}

/* ------------------------------------------------------------ call slots */

bool router_slot_take(router *rt, const provider_conf *p)
{
    prov_state *ps = rt->provs[p->index];
    if (ps->inflight >= p->max_concurrency) return false;
    ps->inflight++;
    return true;
}

void router_slot_release(router *rt, const provider_conf *p)
{
    if (rt->provs[p->index]->inflight > 0) rt->provs[p->index]->inflight--;
}

int router_inflight(const router *rt, int provider_index)
{
    return rt->provs[provider_index]->inflight;
}

/* ------------------------------------------------------------ resilience */

breaker *router_breaker(const router *rt, const target *t)
{
    return rt->breakers ? rt->breakers[t->index] : NULL;
}

retry_budget *router_budget(const router *rt, const provider_conf *p)
{
    return rt->provs[p->index]->retry;
}

const char *router_instance_id(const router *rt)
{
    return rt->core->instance;
}

uint64_t router_random(router *rt)
{
    uint64_t z = (rt->core->rng += 0x9E3779B97F4A7C15ULL);
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
            pm->busy = m->enabled && rt->provs[p->index]->inflight >= p->max_concurrency;
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
    return rt->core->stats;
}
void router_count_run(router *rt, int delta)
{
    rt->core->stats.runs += delta;
    rt->runs += delta;
    /* freed on the next loop pass: the reaped run still stands on it */
    if (rt->retired && rt->runs == 0) event_active(rt->reap, EV_TIMEOUT, 1);
}
void router_count_attempt(router *rt)
{
    rt->core->stats.upstream_attempts++;
}

struct run **router_spool_waiters(router *rt, bool resuming)
{
    return resuming ? &rt->core->spool_resuming : &rt->core->spool_waiting;
}

struct run **router_run_pool(router *rt, int **count)
{
    *count = &rt->core->pool_n;
    return &rt->core->pool;
}

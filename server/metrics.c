/* GET /metrics (server/metrics.h). */
#include "server/metrics.h"

#include <string.h>

#include "db/cache_store.h"
#include "db/ledger.h"
#include "lib/buf.h"
#include "lib/util.h"
#include "router/breaker.h"
#include "router/cache.h"
#include "router/metrics.h"
#include "router/retry.h"
#include "router/router.h"
#include "server/http.h"

static void family(buf *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family of one sample without labels. */
static void one(buf *b, const char *name, const char *type, const char *help, int64_t v)
{
    family(b, name, type, help);
    buf_printf(b, "%s %lld\n", name, (long long)v);
}

static void provider_sample(buf *b, const char *name, const char *provider, int64_t v)
{
    buf_printf(b, "%s{gen_ai_provider_name=", name);
    metrics_label_value(b, provider);
    buf_printf(b, "} %lld\n", (long long)v);
}

static void providers(app *a, buf *b)
{
    const bridle_config *cfg = a->cfg;
    int64_t now = util_now_ms();
    family(b, "bridle_provider_calls_in_flight", "gauge", "Upstream calls in flight per provider.");
    for (int i = 0; i < config_n_providers(cfg); i++)
        provider_sample(b, "bridle_provider_calls_in_flight", config_provider(cfg, i)->name,
                        router_inflight(a->router, i));
    family(b, "bridle_retry_budget_denied_total", "counter",
           "Retries a provider's retry budget refused.");
    for (int i = 0; i < config_n_providers(cfg); i++) {
        const provider_conf *p = config_provider(cfg, i);
        retry_budget_snapshot rs = {0};
        retry_budget *rb = router_budget(a->router, p);
        if (rb) retry_budget_get_snapshot(rb, now, &rs);
        provider_sample(b, "bridle_retry_budget_denied_total", p->name, rs.denied);
    }
}

/* One sample per state, 1 for the breaker's current one (a state set). */
static void breakers(app *a, buf *b)
{
    static const breaker_state states[] = {BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN};
    int64_t now = util_now_ms();
    family(b, "bridle_breaker_state", "gauge",
           "The circuit breaker of each model target: 1 for its current state.");
    for (int i = 0; i < config_n_models(a->cfg); i++) {
        const model_conf *m = config_model(a->cfg, i);
        const breaker *br = router_breaker(a->router, &m->target);
        if (!br) continue;
        breaker_snapshot sn;
        breaker_get_snapshot(br, now, &sn);
        for (size_t k = 0; k < sizeof states / sizeof *states; k++) {
            buf_append_str(b, "bridle_breaker_state{gen_ai_provider_name=");
            metrics_label_value(b, m->target.provider->name);
            buf_append_str(b, ",gen_ai_response_model=");
            metrics_label_value(b, m->name);
            buf_printf(b, ",state=\"%s\"} %d\n", breaker_state_name(states[k]),
                       sn.state == states[k]);
        }
    }
}

static void caches(app *a, buf *b)
{
    struct resp_cache *rc = router_cache(a->router);
    if (!rc) return;
    cache_stats cs = resp_cache_get_stats(rc);
    one(b, "bridle_response_cache_hits_total", "counter",
        "Requests answered from the response cache (memory).", cs.hits);
    one(b, "bridle_response_cache_misses_total", "counter",
        "Cacheable requests the memory level did not have.", cs.misses);
    one(b, "bridle_response_cache_evictions_total", "counter",
        "Entries evicted to stay within cache.max_mb.", cs.evictions);
    one(b, "bridle_response_cache_bytes", "gauge", "Memory the response cache holds.", cs.bytes);
    one(b, "bridle_response_cache_entries", "gauge", "Answers the response cache holds.",
        cs.entries);
    struct cache_store *sh = router_cache_store(a->router);
    if (!sh) return;
    cache_store_stats ss = cache_store_get_stats(sh);
    one(b, "bridle_response_cache_shared_hits_total", "counter",
        "Answers found in the shared level (PostgreSQL).", ss.hits);
    one(b, "bridle_response_cache_shared_timeouts_total", "counter",
        "Lookups in the shared level that did not answer in time (served as misses).", ss.timeouts);
}

static void ledger_figures(app *a, buf *b)
{
    if (!a->ledger) return;
    ledger_stats ls = ledger_get_stats(a->ledger);
    one(b, "bridle_ledger_database_up", "gauge", "1 while the ledger reaches PostgreSQL.",
        ls.database_up);
    one(b, "bridle_ledger_events_recorded_total", "counter", "Usage events written to the spool.",
        ls.recorded);
    one(b, "bridle_ledger_events_inserted_total", "counter", "Usage events in PostgreSQL.",
        ls.inserted);
    one(b, "bridle_ledger_queue_events", "gauge", "Usage events waiting for PostgreSQL.",
        ls.queued);
    one(b, "bridle_ledger_spool_bytes", "gauge", "The spool's size on disk.", ls.spool_bytes);
    family(b, "bridle_ledger_ship_lag_seconds", "gauge",
           "Age of the oldest usage event not yet in PostgreSQL (0: none).");
    buf_printf(b, "bridle_ledger_ship_lag_seconds %.3f\n", (double)ls.oldest_unshipped_ms / 1e3);
}

void metrics_reply(app *a, h1_req *req)
{
    if (!config_metrics_allowed(a->cfg, h1_req_peer(req))) {
        http_reply_error(a, req, 403, "permission_error", "metrics_not_allowed", NULL,
                         "GET /metrics answers only the address blocks of metrics.allow in the "
                         "config (loopback by default)",
                         false);
        return;
    }
    buf b = BUF_INIT;
    metrics_render(router_metrics(a->router), &b);
    family(&b, "bridle_http_responses_total", "counter",
           "Every HTTP response, by status class (auth and protocol errors too).");
    const int64_t by_class[] = {a->stats.replies_2xx, a->stats.replies_4xx, a->stats.replies_5xx};
    for (int i = 0; i < 3; i++)
        buf_printf(&b, "bridle_http_responses_total{code=\"%dxx\"} %lld\n", i ? i + 3 : 2,
                   (long long)by_class[i]);
    router_stats rs = router_get_stats(a->router);
    one(&b, "bridle_requests_in_flight", "gauge", "Client requests being served.", rs.runs);
    one(&b, "bridle_upstream_attempts_total", "counter",
        "Calls made to providers (retries and failovers included).", rs.upstream_attempts);
    providers(a, &b);
    breakers(a, &b);
    caches(a, &b);
    ledger_figures(a, &b);
    http_reply(a, req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "",
               b.len);
    buf_free(&b);
}

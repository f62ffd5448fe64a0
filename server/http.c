#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/util.h"
#include "db/instances.h"
#include "db/rollup.h"
#include "db/cache_store.h"
#include "db/ledger.h"
#include "providers/params.h"
#include "router/keyring.h"
#include "router/messages.h"
#include "router/budget.h"
#include "router/cache.h"
#include "router/router.h"
#include "server/admin.h"
#include "server/chat.h"
#include "server/files.h"
#include "server/batches.h"
#include "server/metrics.h"

/* ------------------------------------------------------------ replies */

/* What a request that could not be read gets told: 413 for a body over
 * the limit, 431 for headers far over it, 400 for a request line or
 * headers that could not be parsed. Returns the error code and fills msg. */
static const char *protocol_error_text(app *a, int status, char *msg, size_t n)
{
    const limits_conf *lim = config_limits(a->cfg);
    if (status == 413) {
        snprintf(msg, n,
                 "The request body is too large: this gateway accepts at most %lld bytes "
                 "(limits.max_body_bytes); send a smaller request",
                 (long long)lim->max_body_bytes);
        return "request_too_large";
    }
    if (status == 431) {
        snprintf(msg, n,
                 "The request headers are too large: at most %lld header lines and %lld bytes "
                 "are accepted (limits.max_headers, limits.max_header_bytes)",
                 (long long)lim->max_headers, (long long)lim->max_header_bytes);
        return "request_header_fields_too_large";
    }
    snprintf(msg, n,
             "The HTTP request could not be read: the request line or headers are malformed, "
             "or the headers are larger than %lld bytes (limits.max_header_bytes)",
             (long long)lim->max_header_bytes);
    return "bad_request";
}

/* Request ids need to be unique, not secret: a 64-bit counter mixed by
 * splitmix64 from a random start costs no system call per request. */
void http_new_request_id(char out[32])
{
    static uint64_t state;
    static bool seeded;
    if (!seeded) {
        char hex[17];
        if (util_random_hex(hex, 8)) state = strtoull(hex, NULL, 16);
        state ^= (uint64_t)util_now_us() << 16 ^ (uint64_t)getpid();
        seeded = true;
    }
    static const char digits[] = "0123456789abcdef";
    memcpy(out, "req_", 4);
    for (int half = 0; half < 2; half++) {
        uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        for (int i = 0; i < 12; i++, z >>= 4)
            out[4 + half * 12 + i] = digits[z & 15];
    }
    out[28] = '\0';
}

void http_count_reply(app *a, int status)
{
    if (status < 300)
        a->stats.replies_2xx++;
    else if (status < 500)
        a->stats.replies_4xx++;
    else
        a->stats.replies_5xx++;
}

void http_reply_json(app *a, h1_req *req, int status, const char *body, size_t len)
{
    http_reply(a, req, status, "application/json", body, len);
}

void http_head_flush(h1_req *req, buf *head)
{
    h1_add_header_lines(req, head->data, head->len);
    buf_reset(head);
}

void http_reply(app *a, h1_req *req, int status, const char *content_type, const char *body,
                size_t len)
{
    http_count_reply(a, status);
    h1_reply(req, status, content_type, body, len);
}

void http_reply_error(app *a, h1_req *req, int status, const char *type, const char *code,
                      const char *param, const char *message, bool should_retry)
{
    buf b = BUF_INIT;
    const char *path = h1_req_target(req);
    if (path && strncmp(path, "/v1/messages", 12) == 0) { /* Anthropic's clients */
        messages_error_json(&b, status, message, strlen(message));
        status = messages_status(status);
    } else {
        provider_openai_error_json(&b, type, code, param, message);
    }
    /* said both ways: the OpenAI SDKs obey it over their own status rules */
    h1_add_header(req, "x-should-retry", should_retry ? "true" : "false");
    http_reply_json(a, req, status, b.data, b.len);
    buf_free(&b);
}

static void on_held_gone(void *arg)
{
    ((http_held *)arg)->gone = true;
}

void http_hold(http_held *h, app *a, h1_req *req)
{
    h->a = a;
    h->req = req;
    h->gone = false;
    a->in_flight++;
    h1_watch_gone(req, on_held_gone, h);
}

bool http_unhold(http_held *h)
{
    h->a->in_flight--;
    if (h->gone) {
        h1_req_release(h->req);
        return false;
    }
    h1_watch_gone(h->req, NULL, NULL);
    return true;
}

/* ------------------------------------------------------------ routes */

static void reply_models(app *a, h1_req *req)
{
    buf b = BUF_INIT;
    buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    long created = 1735689600; /* fixed: models have no creation time here */
    bool first = true;
    for (int i = 0; i < config_n_models(a->cfg); i++) {
        const model_conf *m = config_model(a->cfg, i);
        if (!m->enabled) continue;
        buf_printf(&b, "%s{\"id\":", first ? "" : ",");
        buf_append_json_str(&b, m->name, strlen(m->name));
        buf_printf(&b, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":", created);
        buf_append_json_str(&b, m->target.provider->name, strlen(m->target.provider->name));
        buf_printf(&b, ",\"bridle\":{\"provider\":");
        buf_append_json_str(&b, m->target.provider->name, strlen(m->target.provider->name));
        buf_printf(&b, ",\"tier\":\"%s\",\"context_window\":%lld,\"capabilities\":[",
                   pricing_tier_name(m->price.tier), (long long)m->price.context_window);
        /* what a request may ask of it (docs/config.md "Capability routing") */
        bool first_cap = true;
        for (unsigned cap = 1; cap & CAP_ALL; cap <<= 1)
            if (m->target.caps & cap) {
                buf_printf(&b, "%s\"%s\"", first_cap ? "" : ",", params_cap_name(cap));
                first_cap = false;
            }
        buf_append_str(&b, "]}}");
        first = false;
    }
    for (int i = 0; i < config_n_routes(a->cfg); i++) {
        const route_conf *r = config_route(a->cfg, i);
        buf_printf(&b, "%s{\"id\":", first ? "" : ",");
        buf_append_json_str(&b, r->name, strlen(r->name));
        buf_printf(&b,
                   ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"bridle\","
                   "\"bridle\":{\"route\":true,\"candidates\":[",
                   created);
        for (int j = 0; j < r->n_candidates; j++) {
            if (j) buf_append_char(&b, ',');
            buf_append_json_str(&b, r->candidates[j]->name, strlen(r->candidates[j]->name));
        }
        buf_append_str(&b, "]}}");
        first = false;
    }
    buf_append_str(&b, "]}");
    http_reply_json(a, req, 200, b.data, b.len);
    buf_free(&b);
}

/* GET /v1/models from Anthropic's SDKs (they send anthropic-version):
 * Anthropic's list shape, every model and route, one page. */
static void reply_models_anthropic(app *a, h1_req *req)
{
    buf b = BUF_INIT;
    const char *first_id = NULL, *last_id = NULL;
    buf_append_str(&b, "{\"data\":[");
    int n_models = config_n_models(a->cfg), n = n_models + config_n_routes(a->cfg);
    for (int i = 0; i < n; i++) {
        const model_conf *m = i < n_models ? config_model(a->cfg, i) : NULL;
        if (m && !m->enabled) continue;
        const char *id = m ? m->name : config_route(a->cfg, i - n_models)->name;
        if (first_id) buf_append_char(&b, ',');
        if (!first_id) first_id = id;
        last_id = id;
        buf_append_str(&b, "{\"type\":\"model\",\"id\":");
        buf_append_json_str(&b, id, strlen(id));
        buf_append_str(&b, ",\"display_name\":");
        buf_append_json_str(&b, id, strlen(id));
        buf_append_str(&b, ",\"created_at\":\"2025-01-01T00:00:00Z\"}");
    }
    buf_append_str(&b, "],\"has_more\":false,\"first_id\":");
    if (first_id) {
        buf_append_json_str(&b, first_id, strlen(first_id));
        buf_append_str(&b, ",\"last_id\":");
        buf_append_json_str(&b, last_id, strlen(last_id));
    } else {
        buf_append_str(&b, "null,\"last_id\":null");
    }
    buf_append_char(&b, '}');
    http_reply_json(a, req, 200, b.data, b.len);
    buf_free(&b);
}

/* GET /v1/bridle/health: what the gateway knows about its upstreams (circuit
 * breakers, calls in flight) and its usage ledger. */
static void health_limits(buf *b, const spend_limits *l)
{
    char d[40], w[40], m[40], h[40];
    util_format_pusd(l->budget_pusd[PERIOD_DAY], 6, d, sizeof d);
    util_format_pusd(l->budget_pusd[PERIOD_WEEK], 6, w, sizeof w);
    util_format_pusd(l->budget_pusd[PERIOD_MONTH], 6, m, sizeof m);
    util_format_pusd(l->pusd_per_hour, 6, h, sizeof h);
    buf_printf(b,
               "{\"budget_daily_usd\":\"%s\",\"budget_weekly_usd\":\"%s\","
               "\"budget_monthly_usd\":\"%s\",\"rpm\":%lld,\"tokens_per_hour\":%lld,"
               "\"usd_per_hour\":\"%s\"}",
               d, w, m, (long long)l->rpm, (long long)l->tokens_per_hour, h);
}

/* The caller's key as this gateway holds it (after the last reload): its
 * team and the limits that apply; never the key or its hash. */
static void health_key(app *a, buf *b, const key_conf *k)
{
    buf_append_str(b, ",\"key\":{\"id\":");
    buf_append_json_str(b, k->id, strlen(k->id));
    buf_printf(b, ",\"kind\":\"%s\",\"source\":\"%s\",\"team\":", k->admin ? "admin" : "client",
               k->set ? "database" : "config");
    if (k->team)
        buf_append_json_str(b, k->team, strlen(k->team));
    else
        buf_append_str(b, "null");
    buf_append_str(b, ",\"limits\":");
    health_limits(b, &k->lim);
    buf_append_str(b, ",\"team_limits\":");
    if (k->team_cfg)
        health_limits(b, &k->team_cfg->lim);
    else
        buf_append_str(b, "null");
    buf_append_char(b, '}');
    if (a->keys)
        buf_printf(b, ",\"keys\":{\"loaded\":%s,\"generation\":%llu,\"database_keys\":%d}",
                   keyring_loaded(a->keys) ? "true" : "false",
                   (unsigned long long)keyring_generation(a->keys), keyring_n_db_keys(a->keys));
}

static void reply_health(app *a, h1_req *req, const key_conf *k)
{
    int64_t now = util_now_ms();
    buf b = BUF_INIT;
    /* which process answered: under a supervisor, the worker's index */
    buf_printf(&b, "{\"process\":{\"pid\":%d,\"worker\":%d},\"providers\":[", (int)getpid(),
               a->worker);
    for (int i = 0; i < config_n_providers(a->cfg); i++) {
        const provider_conf *p = config_provider(a->cfg, i);
        buf_printf(&b, "%s{\"name\":", i ? "," : "");
        buf_append_json_str(&b, p->name, strlen(p->name));
        buf_printf(&b, ",\"enabled\":%s,\"in_flight\":%d,\"max_concurrency\":%d,\"batch\":%s}",
                   config_provider_enabled(a->cfg, i) ? "true" : "false",
                   router_inflight(a->router, i), p->max_concurrency, p->batch ? "true" : "false");
    }
    buf_append_str(&b, "],\"targets\":[");
    for (int i = 0; i < config_n_models(a->cfg); i++) {
        const model_conf *m = config_model(a->cfg, i);
        buf_printf(&b, "%s{\"model\":", i ? "," : "");
        buf_append_json_str(&b, m->name, strlen(m->name));
        buf_append_str(&b, ",\"provider\":");
        buf_append_json_str(&b, m->target.provider->name, strlen(m->target.provider->name));
        const breaker *br = router_breaker(a->router, &m->target);
        if (br) {
            breaker_snapshot sn;
            breaker_get_snapshot(br, now, &sn);
            buf_printf(&b,
                       ",\"breaker\":{\"state\":\"%s\",\"consecutive_failures\":%d,"
                       "\"window_calls\":%d,\"window_failures\":%d,\"opens_total\":%llu,"
                       "\"retry_in_ms\":%lld}",
                       breaker_state_name(sn.state), sn.consecutive_failures, sn.window_calls,
                       sn.window_failures, (unsigned long long)sn.opens_total,
                       (long long)(sn.next_allow_ms > now ? sn.next_allow_ms - now : 0));
        }
        buf_append_char(&b, '}');
    }
    buf_append_char(&b, ']');
    if (a->ledger) {
        ledger_stats ls = ledger_get_stats(a->ledger);
        buf_printf(&b,
                   ",\"ledger\":{\"database_up\":%s,\"recorded\":%lld,\"inserted\":%lld,"
                   "\"queued\":%lld,\"spool_bytes\":%lld,\"oldest_unshipped_ms\":%lld,"
                   "\"last_insert_ms_ago\":%lld,\"accepting\":%s}",
                   ls.database_up ? "true" : "false", (long long)ls.recorded,
                   (long long)ls.inserted, (long long)ls.queued, (long long)ls.spool_bytes,
                   (long long)ls.oldest_unshipped_ms, (long long)ls.last_insert_ms_ago,
                   ledger_can_accept(a->ledger) ? "true" : "false");
    }
    if (a->rollup) { /* db/rollup.h */
        rollup_stats rs = rollup_get_stats(a->rollup);
        buf_printf(&b,
                   ",\"rollup\":{\"runs\":%lld,\"moved\":%lld,\"last_moved\":%lld,"
                   "\"last_ms\":%lld,\"last_run_ms_ago\":%lld,\"failures\":%lld,"
                   "\"catching_up\":%s,\"retention_runs\":%lld}",
                   (long long)rs.runs, (long long)rs.moved, (long long)rs.last_moved,
                   (long long)rs.last_ms, (long long)rs.last_run_ms_ago, (long long)rs.failures,
                   rs.catching_up ? "true" : "false", (long long)rs.retention_runs);
    }
    struct resp_cache *rc = router_cache(a->router);
    if (rc) { /* router/cache.h */
        cache_stats cs = resp_cache_get_stats(rc);
        buf_printf(&b,
                   ",\"cache\":{\"entries\":%lld,\"bytes\":%lld,\"max_bytes\":%lld,\"hits\":%lld,"
                   "\"misses\":%lld,\"stores\":%lld,\"evictions\":%lld,\"expired\":%lld,"
                   "\"refused\":%lld",
                   (long long)cs.entries, (long long)cs.bytes, (long long)cs.max_bytes,
                   (long long)cs.hits, (long long)cs.misses, (long long)cs.stores,
                   (long long)cs.evictions, (long long)cs.expired, (long long)cs.refused);
        struct cache_store *sh = router_cache_store(a->router);
        if (sh) { /* db/cache_store.h: the level in PostgreSQL */
            cache_store_stats ss = cache_store_get_stats(sh);
            buf_printf(&b,
                       ",\"shared\":{\"lookups\":%lld,\"hits\":%lld,\"misses\":%lld,"
                       "\"timeouts\":%lld,\"stores\":%lld,\"dropped\":%lld,\"errors\":%lld}",
                       (long long)ss.lookups, (long long)ss.hits, (long long)ss.misses,
                       (long long)ss.timeouts, (long long)ss.stores, (long long)ss.dropped,
                       (long long)ss.errors);
        }
        buf_append_char(&b, '}');
    }
    if (a->batches) batches_health_json(a->batches, &b);
    health_key(a, &b, k);
    /* rate limits: N (the gateways sharing them) and the windows here */
    buf_append_str(&b, ",\"rate_limits\":");
    ratelimit_health_json(router_ratelimit(a->router), now, 200, &b);
    const struct instances *in = router_instances(a->router);
    buf_printf(&b, ",\"heartbeat\":{\"database\":%s,\"ok\":%s,\"beats\":%lld}",
               in ? "true" : "false", instances_ok(in) ? "true" : "false",
               (long long)instances_beats(in));
    if (router_budgets(a->router)) { /* router/budget.h */
        budget_stats bs = budget_get_stats(router_budgets(a->router));
        buf_printf(&b,
                   ",\"budgets\":{\"tracked\":%lld,\"held_pusd\":%lld,\"waiting\":%lld,"
                   "\"local_admits\":%lld,\"lease_admits\":%lld,\"lease_calls\":%lld,"
                   "\"sync_calls\":%lld,"
                   "\"refused\":%lld,\"unavailable\":%lld,\"queries\":%lld}",
                   (long long)bs.tracked, (long long)bs.held_pusd, (long long)bs.waiting,
                   (long long)bs.local_admits, (long long)bs.lease_admits,
                   (long long)bs.lease_calls, (long long)bs.sync_calls, (long long)bs.refused,
                   (long long)bs.unavailable, (long long)bs.store_queries);
    }
    buf_append_char(&b, '}');
    http_reply_json(a, req, 200, b.data, b.len);
    buf_free(&b);
}

/* The client key from `Authorization: Bearer KEY` or `x-api-key: KEY`. */
static const char *client_key(const request_headers *h)
{
    const char *auth = h->authorization;
    if (auth && util_starts_with_ci(auth, "Bearer ")) {
        auth += 7;
        while (*auth == ' ')
            auth++;
        return *auth ? auth : NULL;
    }
    return h->x_api_key && *h->x_api_key ? h->x_api_key : NULL;
}

/* Hashing every presented key with SHA-256 costs as much as the rest of
 * the request parsing; a small direct-mapped cache of keys already verified
 * skips it. A hit needs the exact key (compared in constant time); a miss
 * only costs the hash it would have cost anyway. Entries die with the
 * keyring's generation: a reload (a revoked key, a changed budget) makes
 * every key be looked up again. */
#define KEY_CACHE_SLOTS 256
static struct {
    char key[128];
    size_t len;
    const key_conf *conf;
    const bridle_config *cfg;
    uint64_t generation;
} key_cache[KEY_CACHE_SLOTS];

static size_t key_slot(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    return (size_t)(h % KEY_CACHE_SLOTS);
}

static const key_conf *find_key(app *a, const char *key)
{
    size_t len = strlen(key), slot = key_slot(key, len);
    uint64_t gen = a->keys ? keyring_generation(a->keys) : 0;
    if (key_cache[slot].cfg == a->cfg && key_cache[slot].generation == gen &&
        key_cache[slot].len == len && util_consttime_eq(key_cache[slot].key, key, len))
        return key_cache[slot].conf;
    char hex[65];
    util_sha256_hex(key, len, hex);
    const key_conf *k = a->keys ? keyring_find(a->keys, hex) : config_find_key(a->cfg, hex);
    if (k && len < sizeof key_cache[slot].key) {
        memcpy(key_cache[slot].key, key, len);
        key_cache[slot].len = len;
        key_cache[slot].conf = k;
        key_cache[slot].cfg = a->cfg;
        key_cache[slot].generation = gen;
    }
    return k;
}

/* Which keys a route takes. */
typedef enum { KEYS_CLIENT, KEYS_ADMIN, KEYS_ANY } key_kind;

static void format_utc(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const key_conf *authenticate(app *a, h1_req *req, const request_headers *h, key_kind want)
{
    const char *key = client_key(h);
    if (!key) {
        http_reply_error(a, req, 401, "invalid_request_error", "missing_api_key", NULL,
                         "No API key: send your bridle key as \"Authorization: Bearer KEY\" (keys "
                         "are listed in the gateway's config)",
                         false);
        return NULL;
    }
    const key_conf *k = find_key(a, key);
    char msg[300], when[40];
    if (!k && a->keys && !keyring_loaded(a->keys)) {
        h1_add_header(req, "Retry-After", "1");
        http_reply_error(a, req, 503, "server_error", "key_store_loading", NULL,
                         "The key store is loading: this gateway has not read its keys from the "
                         "database yet; retry in a second",
                         true);
        return NULL;
    }
    if (!k) {
        http_reply_error(a, req, 401, "invalid_request_error", "invalid_api_key", NULL,
                         "Incorrect API key: this key is not known to the gateway; check the key "
                         "you pass in \"Authorization: Bearer ...\"",
                         false);
        return NULL;
    }
    if (k->revoked) {
        format_utc(keyring_revoked_ms(k), when, sizeof when);
        snprintf(msg, sizeof msg,
                 "Incorrect API key: this key was revoked (at %s); ask for a new one (`bridle keys "
                 "create`)",
                 when);
        http_reply_error(a, req, 401, "invalid_request_error", "invalid_api_key", NULL, msg, false);
        return NULL;
    }
    if (k->expires_ms && util_wall_ms() >= k->expires_ms) {
        format_utc(k->expires_ms, when, sizeof when);
        snprintf(msg, sizeof msg,
                 "Incorrect API key: this key expired at %s; create a new one with `bridle keys "
                 "create`",
                 when);
        http_reply_error(a, req, 401, "invalid_request_error", "invalid_api_key", NULL, msg, false);
        return NULL;
    }
    if (want == KEYS_CLIENT && k->admin) {
        http_reply_error(a, req, 403, "permission_error", "admin_key", NULL,
                         "This is an admin key: admin keys only work on /v1/bridle/admin/; use a "
                         "client key for this route",
                         false);
        return NULL;
    }
    if (want == KEYS_ADMIN && !k->admin) {
        http_reply_error(
            a, req, 403, "permission_error", "admin_key_required", NULL,
            "The admin API (/v1/bridle/admin/) takes admin keys only: this is a client "
            "key; create an admin key with `bridle keys create --admin`",
            false);
        return NULL;
    }
    return k;
}

/* One pass over the request headers: their count and size for the limits,
 * and the few bridle reads. */
static void scan_headers(const h1_req *req, request_headers *h)
{
    memset(h, 0, sizeof *h);
    h->count = h1_req_header_count(req);
    for (int i = 0; i < h->count; i++) {
        const char *key, *value;
        h1_req_header(req, i, &key, &value);
        size_t klen = strlen(key);
        h->bytes += (int64_t)(klen + strlen(value) + 4);
        if (klen == 13 && strcasecmp(key, "authorization") == 0)
            h->authorization = value;
        else if (klen == 9 && strcasecmp(key, "x-api-key") == 0)
            h->x_api_key = value;
        else if (klen == 17 && strcasecmp(key, "anthropic-version") == 0)
            h->anthropic_version = value;
        else if (klen == 14 && strcasecmp(key, "anthropic-beta") == 0)
            h->anthropic_beta = value;
        else if (klen == 13 && strcasecmp(key, "cache-control") == 0)
            h->cache_control = value;
        else if (klen == 15 && strcasecmp(key, "idempotency-key") == 0) {
            h->idempotency_key = value;
            h->idempotency_keys++;
        } else if (klen > 9 && strncasecmp(key, "x-bridle-", 9) == 0) {
            const char *name = key + 9;
            if (strcasecmp(name, "task") == 0)
                h->task = value;
            else if (strcasecmp(name, "agent") == 0)
                h->agent = value;
            else if (strcasecmp(name, "feature") == 0)
                h->feature = value;
            else if (strcasecmp(name, "tier") == 0)
                h->tier = value;
            else if (strcasecmp(name, "cache") == 0)
                h->cache = value;
        }
    }
}

/* A request that could not be read, or whose headers are over the limits:
 * 400, 413 or 431. */
static void reply_unreadable(app *a, h1_req *req, int status)
{
    char msg[300];
    const char *code = protocol_error_text(a, status, msg, sizeof msg);
    http_reply_error(a, req, status, "invalid_request_error", code, NULL, msg, false);
}

static bool path_is(const char *path, const char *want)
{
    size_t n = strlen(want);
    return strncmp(path, want, n) == 0 && (path[n] == '\0' || path[n] == '?');
}

static void route_v1(app *a, h1_req *req, const request_headers *h, const char *path, h1_method cmd)
{
    if (path_is(path, "/v1/chat/completions")) {
        if (cmd != H1_POST) {
            http_reply_error(a, req, 405, "invalid_request_error", "method_not_allowed", NULL,
                             "Use POST for /v1/chat/completions", false);
            return;
        }
        const key_conf *k = authenticate(a, req, h, KEYS_CLIENT);
        if (!k) return;
        char id[32];
        http_new_request_id(id);
        chat_handle(a, req, k, h, id);
        return;
    }
    if (path_is(path, "/v1/messages/batches") || strncmp(path, "/v1/messages/batches/", 21) == 0) {
        const key_conf *k = authenticate(a, req, h, KEYS_CLIENT);
        if (k) messages_batches_handle(a, req, k, path, cmd);
        return;
    }
    if (path_is(path, "/v1/messages") || path_is(path, "/v1/messages/count_tokens")) {
        bool count = path[12] == '/';
        if (cmd != H1_POST) {
            http_reply_error(a, req, 405, "invalid_request_error", "method_not_allowed", NULL,
                             count ? "Use POST for /v1/messages/count_tokens"
                                   : "Use POST for /v1/messages",
                             false);
            return;
        }
        const key_conf *k = authenticate(a, req, h, KEYS_CLIENT);
        if (!k) return;
        if (count) {
            messages_count_tokens(a, req);
            return;
        }
        char id[32];
        http_new_request_id(id);
        messages_handle(a, req, k, h, id);
        return;
    }
    if (path_is(path, "/v1/embeddings")) {
        if (cmd != H1_POST) {
            http_reply_error(a, req, 405, "invalid_request_error", "method_not_allowed", NULL,
                             "Use POST for /v1/embeddings", false);
            return;
        }
        const key_conf *k = authenticate(a, req, h, KEYS_CLIENT);
        if (!k) return;
        char id[32];
        http_new_request_id(id);
        embeddings_handle(a, req, k, h, id);
        return;
    }
    if (path_is(path, "/v1/batches") || strncmp(path, "/v1/batches/", 12) == 0) {
        const key_conf *k = authenticate(a, req, h, KEYS_CLIENT);
        if (k) batches_handle(a, req, k, h, path, cmd);
        return;
    }
    if (path_is(path, "/v1/files") || strncmp(path, "/v1/files/", 10) == 0) {
        const key_conf *k = authenticate(a, req, h, KEYS_CLIENT);
        if (k) files_handle(a, req, k, path, cmd);
        return;
    }
    if (path_is(path, "/v1/models")) {
        if (!authenticate(a, req, h, KEYS_CLIENT)) return;
        if (h->anthropic_version)
            reply_models_anthropic(a, req);
        else
            reply_models(a, req);
        return;
    }
    if (path_is(path, "/v1/bridle/health")) {
        const key_conf *k = authenticate(a, req, h, KEYS_ANY);
        if (k) reply_health(a, req, k);
        return;
    }
    if (strncmp(path, "/v1/bridle/admin/", 17) == 0 || path_is(path, "/v1/bridle/admin")) {
        if (authenticate(a, req, h, KEYS_ADMIN)) admin_handle(a, req, path, cmd);
        return;
    }
    char msg[300];
    snprintf(msg, sizeof msg,
             "Unknown path %.120s: this gateway serves POST /v1/chat/completions, POST "
             "/v1/messages, POST /v1/embeddings and GET /v1/models",
             path);
    http_reply_error(a, req, 404, "invalid_request_error", "unknown_url", NULL, msg, false);
}

static void on_request(h1_req *req, void *arg)
{
    app *a = arg;
    a->stats.requests++;
    if (h1_req_error(req)) {
        reply_unreadable(a, req, h1_req_error(req));
        return;
    }
    const char *uri = h1_req_target(req);
    request_headers h;
    scan_headers(req, &h);
    const limits_conf *lim = config_limits(a->cfg);
    if (h.count > lim->max_headers || h.bytes > lim->max_header_bytes) {
        reply_unreadable(a, req, 431);
        return;
    }
    h1_method cmd = h1_req_method(req);
    if (path_is(uri, "/healthz")) {
        http_reply_json(a, req, 200, "{\"status\":\"ok\"}", 15);
        return;
    }
    if (path_is(uri, "/readyz")) {
        if (a->draining)
            http_reply_error(a, req, 503, "server_error", "draining", NULL,
                             "The gateway is shutting down", true);
        else
            http_reply_json(a, req, 200, "{\"status\":\"ready\"}", 18);
        return;
    }
    if (path_is(uri, "/metrics") && cmd == H1_GET) {
        metrics_reply(a, req); /* server/metrics.h: also while draining */
        return;
    }
    if (a->draining) {
        http_reply_error(a, req, 503, "server_error", "draining", NULL,
                         "The gateway is shutting down; retry on another instance", true);
        return;
    }
    route_v1(a, req, &h, uri, cmd);
}

/* A listening socket for sa, or -1 with a reason in err. SO_REUSEADDR, so
 * that a restart does not wait for old connections in TIME_WAIT; and
 * SO_REUSEPORT only when `reuseport` (the workers' port group, below). */
static evutil_socket_t listen_socket(const struct sockaddr *sa, socklen_t sl, const char *addr,
                                     bool reuseport, char *err, size_t errlen)
{
    evutil_socket_t fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: socket: %s", addr, strerror(errno));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
        bind(fd, sa, sl) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE)
            snprintf(err, errlen,
                     "cannot listen on %s: address already in use: another process (perhaps "
                     "another bridle) is serving it; stop it or choose another --listen address",
                     addr);
        else
            snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(e));
        return -1;
    }
    return fd;
}

/* host:port as a sockaddr, and "host:port" for messages; false if host is
 * not a numeric address. */
static bool listen_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *sl,
                        char *addr, size_t addrlen)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *sl = sizeof *s4;
        snprintf(addr, addrlen, "%s:%d", host, port);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *sl = sizeof *s6;
        snprintf(addr, addrlen, "[%s]:%d", host, port);
    } else {
        return false;
    }
    return true;
}

/* One worker: never SO_REUSEPORT. With it the kernel lets any process of
 * the same user bind the same address and splits the connections between
 * them, so a second gateway started by mistake (another config, other
 * keys) would silently take half of the traffic; without it that bind
 * fails with EADDRINUSE, and it fails too against a process that does use
 * SO_REUSEPORT.
 *
 * Several workers keep that guarantee: first a bind without SO_REUSEPORT
 * proves that nobody serves the address (it fails against any listener,
 * SO_REUSEPORT or not), then the supervisor creates all n SO_REUSEPORT
 * sockets itself and keeps them for its whole life, handing socket i to
 * worker i. Nothing outside this process can join the group afterwards
 * except another process doing the same in the microseconds between the
 * probe's close and the first SO_REUSEPORT bind (a bridle without
 * workers never can); and a restarted worker gets the same socket back, so
 * the connections queued on it wait for it instead of being reset. */
int http_listen(const char *host, int port, int n, int *fds, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    char addr[300];
    if (!listen_addr(host, port, &ss, &sl, addr, sizeof addr)) {
        snprintf(err, errlen, "listen address %s is not a numeric IPv4/IPv6 address", host);
        return -1;
    }
    evutil_socket_t probe = listen_socket((struct sockaddr *)&ss, sl, addr, false, err, errlen);
    if (probe < 0 || n == 1) {
        fds[0] = probe;
        return probe < 0 ? -1 : 0;
    }
    /* port 0: the group takes the port the probe was given */
    socklen_t got = sl;
    if (port == 0 && getsockname(probe, (struct sockaddr *)&ss, &got) != 0) {
        snprintf(err, errlen, "cannot listen on %s: getsockname: %s", addr, strerror(errno));
        close(probe);
        return -1;
    }
    close(probe);
    for (int i = 0; i < n; i++) {
        fds[i] = listen_socket((struct sockaddr *)&ss, sl, addr, true, err, errlen);
        if (fds[i] < 0) {
            while (i-- > 0)
                close(fds[i]);
            return -1;
        }
    }
    return 0;
}

int http_start(app *a, evutil_socket_t fd, char *err, size_t errlen)
{
    const limits_conf *lim = config_limits(a->cfg);
    h1_options o = {
        .max_body_bytes = (size_t)lim->max_body_bytes,
        .max_upload_bytes = (size_t)lim->max_upload_bytes,
        .upload_prefix = "/v1/files",
        .max_header_bytes = (size_t)lim->max_header_bytes,
        .read_timeout_ms = lim->read_timeout_ms,
        .max_connections = lim->max_connections,
    };
    /* which worker answered: for tests and for tracing a request to its log */
    if (a->worker >= 0)
        snprintf(o.extra_head, sizeof o.extra_head, "x-bridle-worker: %d\r\n", a->worker);
    a->h1 = h1_server_new(a->base, fd, &o, on_request, a);
    if (!a->h1) {
        close(fd);
        snprintf(err, errlen, "cannot serve: out of memory");
        return -1;
    }
    return 0;
}

void http_stop_accepting(app *a)
{
    if (a->h1) h1_server_stop_accepting(a->h1);
}

void http_free(app *a)
{
    h1_server_free(a->h1);
    a->h1 = NULL;
}

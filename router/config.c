#include "router/config.h"

#include "lib/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "providers/batch.h"
#include "providers/params.h"
#include "router/policy.h"

#define MAX_PROVIDERS 64
#define MAX_MODELS 512
#define MAX_ROUTES 128
#define MAX_KEYS 4096
#define MAX_TEAMS 4096
#define TEAM_NAME_MAX 64 /* usage_event.team */

/* One level of the "timeouts" section: the default, a task or a route. */
typedef struct timeout_level {
    const char *name; /* the task or route; NULL for the default */
    timeout_conf t;
    const char *from[3]; /* the config paths of connect, first byte and total */
} timeout_level;

/* A task's or a route's cache TTL (cache.tasks, cache.routes). */
typedef struct cache_ttl {
    const char *name;
    int64_t ttl_s;
} cache_ttl;

/* A read-only hash of names to array indexes, for the per-request lookups
 * ("model" → model or route): open addressing, built once at load. */
typedef struct name_index {
    int *slot; /* index + 1; 0 = empty */
    unsigned mask;
} name_index;

static unsigned name_hash(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* names: the first element's `const char *name`, then every `stride` bytes */
static const char *name_at(const void *names, size_t stride, int i)
{
    return *(const char *const *)((const char *)names + stride * (size_t)i);
}

static void name_index_build(name_index *ix, const void *names, size_t stride, int n)
{
    unsigned size = 16;
    while (size < (unsigned)n * 2)
        size *= 2;
    ix->slot = calloc(size, sizeof *ix->slot);
    ix->mask = ix->slot ? size - 1 : 0;
    for (int i = 0; i < n && ix->slot; i++) {
        unsigned h = name_hash(name_at(names, stride, i)) & ix->mask;
        while (ix->slot[h])
            h = (h + 1) & ix->mask;
        ix->slot[h] = i + 1;
    }
}

/* The index of name, or -1; linear while the index is not built (during
 * loading). */
static int name_index_find(const name_index *ix, const void *names, size_t stride, int n,
                           const char *name)
{
    if (!ix->slot) {
        for (int i = 0; i < n; i++)
            if (strcmp(name_at(names, stride, i), name) == 0) return i;
        return -1;
    }
    for (unsigned h = name_hash(name) & ix->mask; ix->slot[h]; h = (h + 1) & ix->mask)
        if (strcmp(name_at(names, stride, ix->slot[h] - 1), name) == 0) return ix->slot[h] - 1;
    return -1;
}

struct bridle_config {
    char *path;
    char *listen;
    char *log_level;
    int workers;     /* worker processes; 0 = "auto" (one per core) */
    bool log_json;   /* log_format "json" */
    bool access_log; /* one line per request */
    limits_conf limits;
    database_conf database;
    resilience_conf resilience;
    idempotency_conf idempotency;
    budgets_conf budgets;
    alerts_conf alerts;
    cache_conf cache;
    cache_ttl *cache_tasks, *cache_routes; /* cache.tasks / cache.routes */
    int n_cache_tasks, n_cache_routes;
    bool cache_deterministic[MAX_MODELS]; /* by model index: cache.deterministic_models */
    batches_conf batches;                 /* batches: the local queue */
    util_cidr *metrics_allow;             /* metrics.allow: who may read GET /metrics */
    int n_metrics_allow;
    name_index model_ix, route_ix; /* names → index, built once the config is loaded */
    timeout_level tmo_default;
    timeout_level *tmo_tasks, *tmo_routes;
    int n_tmo_tasks, n_tmo_routes;
    json_object *routing; /* a reference into the parsed file, kept */
    struct policy *policy;
    provider_conf providers[MAX_PROVIDERS];
    bool provider_enabled[MAX_PROVIDERS];
    int n_providers;
    model_conf models[MAX_MODELS];
    int n_models;
    route_conf routes[MAX_ROUTES];
    int n_routes;
    key_conf *keys;
    int n_keys;
    team_conf *teams;
    int n_teams;
    /* every string and array this config allocated, freed together */
    void **owned;
    int n_owned, cap_owned;
};

/* Parsing context: where we are, and the first error. */
typedef struct parse_ctx {
    bridle_config *cfg;
    char path[256]; /* JSON path of the value being read */
    char *err;
    size_t errlen;
    bool failed;
    bool missing_env; /* a ${VAR} without default was unset */
    bool env_lenient; /* inside a provider or a key: an unset ${VAR} disables it instead */
    char missing_name[128];
} parse_ctx;

static void *own(bridle_config *c, void *p)
{
    if (c->n_owned == c->cap_owned) {
        c->cap_owned = c->cap_owned ? c->cap_owned * 2 : 64;
        c->owned = realloc(c->owned, sizeof *c->owned * (size_t)c->cap_owned);
        if (!c->owned) abort();
    }
    c->owned[c->n_owned++] = p;
    return p;
}

static void fail(parse_ctx *pc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(parse_ctx *pc, const char *fmt, ...)
{
    if (pc->failed) return;
    pc->failed = true;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(pc->err, pc->errlen, "%s: %s: %s", pc->cfg->path, pc->path, what);
}

/* Pushes ".key" or "[i]" onto the path; returns the old length to pop to. */
static size_t path_push(parse_ctx *pc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(parse_ctx *pc, const char *fmt, ...)
{
    size_t old = strlen(pc->path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pc->path + old, sizeof pc->path - old, fmt, ap);
    va_end(ap);
    return old;
}

static void path_pop(parse_ctx *pc, size_t old)
{
    pc->path[old] = '\0';
}

static const char *type_name(json_object *o)
{
    return o ? json_type_to_name(json_object_get_type(o)) : "null";
}

/* Rejects keys not in `known` (NULL-terminated): typos must not pass. */
static void check_keys(parse_ctx *pc, json_object *obj, const char *const *known)
{
    json_object_object_foreach(obj, key, val)
    {
        (void)val;
        bool ok = false;
        for (const char *const *k = known; *k; k++)
            ok = ok || strcmp(*k, key) == 0;
        if (!ok) {
            size_t old = path_push(pc, ".%s", key);
            fail(pc, "unknown key (expected one of the documented keys, see docs/config.md)");
            path_pop(pc, old);
            return;
        }
    }
}

/* Expands ${VAR} and ${VAR:-default}. An unset VAR without default sets
 * pc->missing_env and expands to "". */
static char *expand_env(parse_ctx *pc, const char *s)
{
    buf out = BUF_INIT;
    buf_append_str(&out, "");
    for (const char *p = s; *p;) {
        if (p[0] != '$' || p[1] != '{') {
            buf_append_char(&out, *p++);
            continue;
        }
        const char *end = strchr(p, '}');
        if (!end) {
            fail(pc, "unterminated ${ in \"%s\"", s);
            break;
        }
        char name[128];
        size_t n = (size_t)(end - p - 2);
        if (n >= sizeof name) n = sizeof name - 1;
        memcpy(name, p + 2, n);
        name[n] = '\0';
        char *def = strstr(name, ":-");
        if (def) {
            *def = '\0';
            def += 2;
        }
        const char *val = getenv(name);
        if (val && *val)
            buf_append_str(&out, val);
        else if (def)
            buf_append_str(&out, def);
        else if (!*name) {
            fail(pc, "\"${}\" names no environment variable");
        } else if (pc->env_lenient) {
            pc->missing_env = true;
            snprintf(pc->missing_name, sizeof pc->missing_name, "%s", name);
        } else {
            fail(pc,
                 "environment variable %s is not set (set it, or give a default with ${%s:-value})",
                 name, name);
        }
        p = end + 1;
    }
    return own(pc->cfg, buf_steal(&out));
}

/* Reads obj[key] as a string (env-expanded). Returns NULL if absent. */
static const char *get_str(parse_ctx *pc, json_object *obj, const char *key, bool required)
{
    json_object *v;
    size_t old = path_push(pc, ".%s", key);
    const char *res = NULL;
    if (!json_object_object_get_ex(obj, key, &v)) {
        if (required) fail(pc, "required string is missing");
    } else if (!json_object_is_type(v, json_type_string)) {
        fail(pc, "expected a string, got %s", type_name(v));
    } else {
        res = expand_env(pc, json_object_get_string(v));
    }
    path_pop(pc, old);
    return res;
}

static int64_t get_int(parse_ctx *pc, json_object *obj, const char *key, int64_t def, int64_t lo,
                       int64_t hi)
{
    json_object *v;
    if (!obj || !json_object_object_get_ex(obj, key, &v)) return def;
    size_t old = path_push(pc, ".%s", key);
    int64_t res = def;
    if (!json_object_is_type(v, json_type_int))
        fail(pc, "expected an integer, got %s", type_name(v));
    else if ((res = json_object_get_int64(v)) < lo || res > hi)
        fail(pc, "expected an integer from %lld to %lld, got %lld", (long long)lo, (long long)hi,
             (long long)res);
    path_pop(pc, old);
    return res;
}

static bool get_bool(parse_ctx *pc, json_object *obj, const char *key, bool def)
{
    json_object *v;
    if (!obj || !json_object_object_get_ex(obj, key, &v)) return def;
    if (!json_object_is_type(v, json_type_boolean)) {
        size_t old = path_push(pc, ".%s", key);
        fail(pc, "expected true or false, got %s", type_name(v));
        path_pop(pc, old);
        return def;
    }
    return json_object_get_boolean(v);
}

static json_object *get_obj(parse_ctx *pc, json_object *obj, const char *key, bool required)
{
    json_object *v;
    if (!json_object_object_get_ex(obj, key, &v)) {
        if (required) {
            size_t old = path_push(pc, ".%s", key);
            fail(pc, "required object is missing");
            path_pop(pc, old);
        }
        return NULL;
    }
    if (!json_object_is_type(v, json_type_object)) {
        size_t old = path_push(pc, ".%s", key);
        fail(pc, "expected an object, got %s", type_name(v));
        path_pop(pc, old);
        return NULL;
    }
    return v;
}

/* ------------------------------------------------------------ limits */

/* Every limit in one table: name, default, bounds, where it lands. */
static const struct {
    const char *name;
    int64_t def, lo, hi;
    size_t offset;
} limit_table[] = {
    {"max_body_bytes", 4 << 20, 1024, 1LL << 30, offsetof(limits_conf, max_body_bytes)},
    {"max_upload_bytes", 210 << 20, 1024, 1LL << 31, offsetof(limits_conf, max_upload_bytes)},
    {"max_header_bytes", 16384, 1024, 1 << 20, offsetof(limits_conf, max_header_bytes)},
    {"max_headers", 64, 8, 1000, offsetof(limits_conf, max_headers)},
    {"read_timeout_ms", 30000, 100, 3600000, offsetof(limits_conf, read_timeout_ms)},
    {"request_timeout_ms", 600000, 100, 86400000, offsetof(limits_conf, request_timeout_ms)},
    {"max_connections", 8192, 1, 1000000, offsetof(limits_conf, max_connections)},
};

static void parse_limits(parse_ctx *pc, json_object *root)
{
    json_object *l = get_obj(pc, root, "limits", false);
    size_t old = path_push(pc, ".limits");
    const char *known[sizeof limit_table / sizeof limit_table[0] + 1];
    for (size_t i = 0; i < sizeof limit_table / sizeof limit_table[0]; i++) {
        int64_t v = get_int(pc, l, limit_table[i].name, limit_table[i].def, limit_table[i].lo,
                            limit_table[i].hi);
        *(int64_t *)((char *)&pc->cfg->limits + limit_table[i].offset) = v;
        known[i] = limit_table[i].name;
    }
    known[sizeof limit_table / sizeof limit_table[0]] = NULL;
    if (l) check_keys(pc, l, known);
    path_pop(pc, old);
}

/* ------------------------------------------------------------ providers */

static const char **parse_headers(parse_ctx *pc, json_object *h)
{
    int n = json_object_object_length(h), i = 0;
    const char **lines = own(pc->cfg, calloc((size_t)n + 1, sizeof *lines));
    json_object_object_foreach(h, name, val)
    {
        size_t old = path_push(pc, ".headers.%s", name);
        if (!json_object_is_type(val, json_type_string))
            fail(pc, "expected a string header value, got %s", type_name(val));
        else {
            buf line = BUF_INIT;
            buf_printf(&line, "%s: %s", name, expand_env(pc, json_object_get_string(val)));
            lines[i++] = own(pc->cfg, buf_steal(&line));
        }
        path_pop(pc, old);
    }
    return lines;
}

/* options.prompt_cache ("auto": bridle places cache breakpoints where the
 * dialect has them, Anthropic; "off") and options.prompt_cache_ttl ("5m",
 * "1h": the breakpoints' TTL, priced at that write rate). */
static void parse_prompt_cache(parse_ctx *pc, json_object *opt, provider_conf *p)
{
    const char *mode = opt ? get_str(pc, opt, "prompt_cache", false) : NULL;
    const char *ttl = opt ? get_str(pc, opt, "prompt_cache_ttl", false) : NULL;
    p->prompt_cache_auto = !mode || strcmp(mode, "auto") == 0;
    p->prompt_cache_1h = ttl && strcmp(ttl, "1h") == 0;
    if (mode && !p->prompt_cache_auto && strcmp(mode, "off") != 0) {
        size_t o = path_push(pc, ".prompt_cache");
        fail(pc,
             "expected \"auto\" (bridle marks the long stable prefix for the provider's prompt "
             "cache) or \"off\" (got \"%s\")",
             mode);
        path_pop(pc, o);
    }
    if (ttl && !p->prompt_cache_1h && strcmp(ttl, "5m") != 0) {
        size_t o = path_push(pc, ".prompt_cache_ttl");
        fail(pc, "expected \"5m\" or \"1h\" (got \"%s\")", ttl);
        path_pop(pc, o);
    }
}

/* batch: batch lines routed to this provider go to its batch API (OpenAI
 * Batch, Anthropic Message Batches) at the batch price. Opt-in: many
 * OpenAI-compatible hosts have none. */
static void parse_provider_batch(parse_ctx *pc, json_object *o, provider_conf *p)
{
    p->batch = get_bool(pc, o, "batch", false);
    if (p->batch && p->ops && !provider_batch_supported(p)) {
        size_t old = path_push(pc, ".batch");
        fail(pc,
             "only openai, anthropic and gemini providers have a batch API bridle uses (this one "
             "is %s): remove \"batch\" and its batch lines run from the local queue",
             p->ops->kind);
        path_pop(pc, old);
    }
}

static void parse_provider(parse_ctx *pc, const char *name, json_object *o)
{
    static const char *const known[] = {"kind",    "base_url", "api_key",  "optional",
                                        "headers", "options",  "timeouts", "max_concurrency",
                                        "batch",   NULL};
    bridle_config *c = pc->cfg;
    if (c->n_providers == MAX_PROVIDERS) {
        fail(pc, "too many providers (at most %d)", MAX_PROVIDERS);
        return;
    }
    int idx = c->n_providers++;
    provider_conf *p = &c->providers[idx];
    p->index = idx;
    p->name = own(c, strdup(name));
    check_keys(pc, o, known);
    bool optional = get_bool(pc, o, "optional", false);
    pc->missing_env = false;
    pc->env_lenient = true;
    const char *kind = get_str(pc, o, "kind", true);
    const char *url = get_str(pc, o, "base_url", true);
    p->api_key = get_str(pc, o, "api_key", false);
    json_object *h = get_obj(pc, o, "headers", false);
    if (h) p->extra_headers = parse_headers(pc, h);
    pc->env_lenient = false;
    bool missing = pc->missing_env;
    c->provider_enabled[idx] = !missing;
    if (missing && !optional)
        fail(pc,
             "environment variable %s is not set (set it, give a default with ${%s:-value}, or "
             "mark the provider \"optional\": true)",
             pc->missing_name, pc->missing_name);
    if (kind && !missing && !(p->ops = provider_find(kind))) {
        size_t old = path_push(pc, ".kind");
        fail(pc, "expected one of openai, anthropic, gemini, ollama (got \"%s\")", kind);
        path_pop(pc, old);
    }
    if (url) {
        char *u = own(c, strdup(url));
        size_t len = strlen(u);
        while (len && u[len - 1] == '/')
            u[--len] = '\0';
        if (!missing && strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
            size_t old = path_push(pc, ".base_url");
            fail(pc, "expected an http:// or https:// URL (got \"%s\")", u);
            path_pop(pc, old);
        }
        p->base_url = u;
    }
    if (missing && !p->ops) /* disabled: keep a dialect so error messages can name it */
        p->ops = provider_find("openai");

    json_object *opt = get_obj(pc, o, "options", false);
    size_t old = path_push(pc, ".options");
    static const char *const opt_known[] = {"max_completion_tokens", "stream_usage",
                                            "default_max_tokens",    "prompt_cache",
                                            "prompt_cache_ttl",      NULL};
    if (opt) check_keys(pc, opt, opt_known);
    p->use_max_completion_tokens = get_bool(pc, opt, "max_completion_tokens", false);
    p->stream_usage = get_bool(pc, opt, "stream_usage", true);
    p->default_max_tokens = get_int(pc, opt, "default_max_tokens", 4096, 1, 10000000);
    parse_prompt_cache(pc, opt, p);
    path_pop(pc, old);

    json_object *t = get_obj(pc, o, "timeouts", false);
    old = path_push(pc, ".timeouts");
    static const char *const t_known[] = {"connect_ms", "first_byte_ms", "idle_ms", "total_ms",
                                          NULL};
    if (t) check_keys(pc, t, t_known);
    p->connect_timeout_ms = (int)get_int(pc, t, "connect_ms", 5000, 1, 600000);
    p->first_byte_timeout_ms = (int)get_int(pc, t, "first_byte_ms", 120000, 1, 3600000);
    p->idle_timeout_ms = (int)get_int(pc, t, "idle_ms", 60000, 1000, 3600000);
    p->total_timeout_ms = (int)get_int(pc, t, "total_ms", 600000, 1, 86400000);
    path_pop(pc, old);
    p->max_concurrency = (int)get_int(pc, o, "max_concurrency", 1024, 1, 1000000);
    parse_provider_batch(pc, o, p);
}

static void parse_providers(parse_ctx *pc, json_object *root)
{
    json_object *ps = get_obj(pc, root, "providers", true);
    if (!ps) return;
    json_object_object_foreach(ps, name, val)
    {
        size_t old = path_push(pc, ".providers.%s", name);
        if (!json_object_is_type(val, json_type_object))
            fail(pc, "expected an object, got %s", type_name(val));
        else
            parse_provider(pc, name, val);
        path_pop(pc, old);
    }
}

static int find_provider(const bridle_config *c, const char *name)
{
    for (int i = 0; i < c->n_providers; i++)
        if (strcmp(c->providers[i].name, name) == 0) return i;
    return -1;
}

/* ------------------------------------------------------------ models */

static int64_t price_field(parse_ctx *pc, json_object *prices, const char *key, int64_t def)
{
    json_object *v;
    if (!json_object_object_get_ex(prices, key, &v)) return def;
    size_t old = path_push(pc, ".%s", key);
    int64_t out = def;
    const char *s = json_object_is_type(v, json_type_string) ||
                            json_object_is_type(v, json_type_int) ||
                            json_object_is_type(v, json_type_double)
                        ? json_object_get_string(v)
                        : NULL;
    if (!s || !pricing_parse_usd_per_mtok(s, &out))
        fail(pc, "expected a price in USD per million tokens, like 3 or \"0.075\" (at most 6 "
                 "decimals)");
    path_pop(pc, old);
    return out;
}

static void parse_prices(parse_ctx *pc, json_object *pr, model_price *mp)
{
    static const char *const known[] = {"input",
                                        "output",
                                        "cached_input",
                                        "cache_write_5m",
                                        "cache_write_1h",
                                        "batch_discount_pct",
                                        "context_window",
                                        "tier",
                                        "min_cache_tokens",
                                        NULL};
    size_t old = path_push(pc, ".prices");
    check_keys(pc, pr, known);
    mp->input = price_field(pc, pr, "input", mp->input);
    mp->output = price_field(pc, pr, "output", mp->output);
    mp->cached_input =
        price_field(pc, pr, "cached_input", mp->cached_input ? mp->cached_input : mp->input);
    mp->cache_write_5m = price_field(pc, pr, "cache_write_5m", mp->cache_write_5m);
    mp->cache_write_1h = price_field(pc, pr, "cache_write_1h", mp->cache_write_1h);
    mp->batch_discount_pct =
        (int)get_int(pc, pr, "batch_discount_pct", mp->batch_discount_pct, 0, 100);
    mp->context_window = get_int(pc, pr, "context_window", mp->context_window, 0, 100000000);
    mp->min_cache_tokens = get_int(pc, pr, "min_cache_tokens", mp->min_cache_tokens, 0, 100000000);
    const char *tier = get_str(pc, pr, "tier", false);
    if (tier && !pricing_tier_parse(tier, &mp->tier)) {
        size_t o2 = path_push(pc, ".tier");
        fail(pc, "expected budget, mid, heavy or local (got \"%s\")", tier);
        path_pop(pc, o2);
    }
    path_pop(pc, old);
}

/* "provider": "name" or ["first choice", "fallback", ...]: the first enabled one serves. */
static void parse_model_provider(parse_ctx *pc, json_object *o, model_conf *m)
{
    json_object *v;
    size_t old = path_push(pc, ".provider");
    if (!json_object_object_get_ex(o, "provider", &v)) {
        fail(pc, "required: the name of a provider (or a list of them in order of preference)");
        path_pop(pc, old);
        return;
    }
    bool is_list = json_object_is_type(v, json_type_array);
    size_t n = is_list ? json_object_array_length(v) : 1;
    if (n == 0) {
        fail(pc, "expected a provider name or a non-empty list of them");
        path_pop(pc, old);
        return;
    }
    for (size_t i = 0; i < n && !pc->failed; i++) {
        json_object *item = is_list ? json_object_array_get_idx(v, i) : v;
        if (!json_object_is_type(item, json_type_string)) {
            fail(pc, "expected a provider name (string), got %s", type_name(item));
            break;
        }
        int idx = find_provider(pc->cfg, json_object_get_string(item));
        if (idx < 0) {
            fail(pc, "no provider named \"%s\" in $.providers", json_object_get_string(item));
            break;
        }
        if (!m->enabled && pc->cfg->provider_enabled[idx]) {
            m->enabled = true;
            m->target.provider = &pc->cfg->providers[idx];
        }
    }
    if (!m->enabled && !pc->failed && n > 0) /* keep a provider for error messages */
        m->target.provider = &pc->cfg->providers[find_provider(
            pc->cfg, json_object_get_string(is_list ? json_object_array_get_idx(v, 0) : v))];
    path_pop(pc, old);
}

/* "kind": "chat" or "embedding" (the price card's, by default). An
 * embedding model needs a dialect that has embeddings. */
static bool parse_model_kind(parse_ctx *pc, json_object *o, const model_conf *m, bool def)
{
    const char *kind = get_str(pc, o, "kind", false);
    bool embedding = kind ? strcmp(kind, "embedding") == 0 : def;
    size_t old = path_push(pc, ".kind");
    if (kind && !embedding && strcmp(kind, "chat") != 0)
        fail(pc, "expected \"chat\" or \"embedding\", got \"%s\"", kind);
    else if (embedding && m->target.provider && m->target.provider->ops &&
             !m->target.provider->ops->embed)
        fail(pc,
             "provider %s speaks %s, which has no embeddings endpoint: serve this model from "
             "an openai, gemini or ollama provider",
             m->target.provider->name, m->target.provider->ops->kind);
    path_pop(pc, old);
    return embedding;
}

/* models.NAME.capabilities: the whole list, replacing what its dialect
 * and name suggest (params_default_caps). */
static void parse_capabilities(parse_ctx *pc, json_object *o, model_conf *m)
{
    const provider_conf *p = m->target.provider;
    m->target.caps = params_default_caps(p ? p->ops : NULL, m->target.upstream_model);
    json_object *v;
    if (!json_object_object_get_ex(o, "capabilities", &v)) return;
    size_t old = path_push(pc, ".capabilities");
    if (!json_object_is_type(v, json_type_array)) {
        fail(pc, "expected a list of capabilities (%s), got %s", params_cap_names(), type_name(v));
        path_pop(pc, old);
        return;
    }
    m->target.caps = 0;
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        json_object *item = json_object_array_get_idx(v, i);
        unsigned cap;
        if (!json_object_is_type(item, json_type_string) ||
            !params_cap_parse(json_object_get_string(item), &cap)) {
            size_t o2 = path_push(pc, "[%zu]", i);
            fail(pc, "expected one of %s, got %s", params_cap_names(),
                 json_object_to_json_string(item));
            path_pop(pc, o2);
            break;
        }
        m->target.caps |= cap;
    }
    path_pop(pc, old);
}

static void parse_model(parse_ctx *pc, const char *name, json_object *o)
{
    static const char *const known[] = {"provider",  "upstream_model", "price",        "prices",
                                        "reasoning", "kind",           "capabilities", NULL};
    bridle_config *c = pc->cfg;
    if (c->n_models == MAX_MODELS) {
        fail(pc, "too many models (at most %d)", MAX_MODELS);
        return;
    }
    model_conf *m = &c->models[c->n_models++];
    m->name = own(c, strdup(name));
    m->target.index = c->n_models - 1;
    check_keys(pc, o, known);
    parse_model_provider(pc, o, m);
    const char *up = get_str(pc, o, "upstream_model", false);
    m->target.model = m->name;
    m->target.upstream_model = up ? up : m->name;
    const char *price_name = get_str(pc, o, "price", false);
    const model_price *base = pricing_default_lookup(price_name ? price_name : name);
    json_object *pr = get_obj(pc, o, "prices", false);
    if (price_name && !base) {
        size_t old = path_push(pc, ".price");
        fail(pc, "no model \"%s\" in the built-in price table", price_name);
        path_pop(pc, old);
    } else if (!base && !pr) {
        fail(pc,
             "no price: \"%s\" is not in the built-in price table; give \"price\" (a table "
             "model) or \"prices\" {\"input\", \"output\", ...} in USD per million tokens",
             name);
    }
    if (base) m->price = *base;
    if (pr) parse_prices(pc, pr, &m->price);
    m->price.embedding = parse_model_kind(pc, o, m, base && base->embedding);
    if (pr && !base &&
        (!json_object_object_get_ex(pr, "input", NULL) ||
         (!m->price.embedding && !json_object_object_get_ex(pr, "output", NULL)))) {
        size_t o2 = path_push(pc, ".prices");
        fail(pc, m->price.embedding
                     ? "an embedding model outside the built-in price table needs an \"input\" "
                       "price (USD per million tokens; 0 for a free local model)"
                     : "a model outside the built-in price table needs at least \"input\" and "
                       "\"output\" prices (USD per million tokens; 0 for a free local model)");
        path_pop(pc, o2);
    }
    /* the price card says whether it reasons; the file may say otherwise
     * (a fine-tune, a local reasoning model) */
    m->price.reasoning = get_bool(pc, o, "reasoning", m->price.reasoning);
    m->price.name = m->name;
    m->target.price = &m->price;
    parse_capabilities(pc, o, m);
}

static void parse_models(parse_ctx *pc, json_object *root)
{
    json_object *ms = get_obj(pc, root, "models", true);
    if (!ms) return;
    json_object_object_foreach(ms, name, val)
    {
        size_t old = path_push(pc, ".models.%s", name);
        if (!json_object_is_type(val, json_type_object))
            fail(pc, "expected an object, got %s", type_name(val));
        else
            parse_model(pc, name, val);
        path_pop(pc, old);
    }
}

/* ------------------------------------------------------------ routes, keys */

static void parse_route(parse_ctx *pc, const char *name, json_object *o)
{
    bridle_config *c = pc->cfg;
    static const char *const known[] = {"candidates", "baseline", "cap", NULL};
    if (c->n_routes == MAX_ROUTES) {
        fail(pc, "too many routes (at most %d)", MAX_ROUTES);
        return;
    }
    if (config_find_model(c, name)) {
        fail(pc, "a route cannot have the name of a model (\"%s\")", name);
        return;
    }
    check_keys(pc, o, known);
    route_conf *r = &c->routes[c->n_routes++];
    r->name = own(c, strdup(name));
    json_object *cand;
    size_t old = path_push(pc, ".candidates");
    if (!json_object_object_get_ex(o, "candidates", &cand) ||
        !json_object_is_type(cand, json_type_array) || json_object_array_length(cand) == 0) {
        fail(pc, "expected a non-empty list of model names");
        path_pop(pc, old);
        return;
    }
    size_t n = json_object_array_length(cand);
    r->candidates = own(c, calloc(n, sizeof *r->candidates));
    for (size_t i = 0; i < n; i++) {
        json_object *item = json_object_array_get_idx(cand, i);
        const model_conf *m = json_object_is_type(item, json_type_string)
                                  ? config_find_model(c, json_object_get_string(item))
                                  : NULL;
        if (!m) {
            size_t o2 = path_push(pc, "[%zu]", i);
            fail(pc, "expected the name of a model in $.models (got %s)",
                 json_object_to_json_string(item));
            path_pop(pc, o2);
            break;
        }
        if (r->n_candidates && m->price.embedding != r->candidates[0]->price.embedding) {
            size_t o2 = path_push(pc, "[%zu]", i);
            fail(pc,
                 "\"%s\" is %s model and \"%s\" is not: a route lists chat models or "
                 "embedding models, not both",
                 m->name, m->price.embedding ? "an embedding" : "a chat", r->candidates[0]->name);
            path_pop(pc, o2);
            break;
        }
        r->candidates[r->n_candidates++] = m;
    }
    path_pop(pc, old);
    const char *base = get_str(pc, o, "baseline", false);
    r->baseline = base ? config_find_model(c, base) : r->n_candidates ? r->candidates[0] : NULL;
    if (base && !r->baseline) {
        old = path_push(pc, ".baseline");
        fail(pc, "expected the name of a model in $.models (got \"%s\")", base);
        path_pop(pc, old);
    }
    const char *cap = pc->failed ? NULL : get_str(pc, o, "cap", false);
    if (cap && strcmp(cap, "default") == 0)
        r->cap_default = true;
    else if (cap && strcmp(cap, "bound") != 0) {
        old = path_push(pc, ".cap");
        fail(pc,
             "expected \"bound\" (output caps bound the request's max_tokens) or \"default\" "
             "(they only fill in a missing one), got \"%s\"",
             cap);
        path_pop(pc, old);
    }
}

static void parse_routes(parse_ctx *pc, json_object *root)
{
    json_object *rs = get_obj(pc, root, "routes", false);
    if (!rs) return;
    json_object_object_foreach(rs, name, val)
    {
        size_t old = path_push(pc, ".routes.%s", name);
        if (!json_object_is_type(val, json_type_object))
            fail(pc, "expected an object, got %s", type_name(val));
        else
            parse_route(pc, name, val);
        path_pop(pc, old);
    }
}

/* obj[name]: dollars (up to 6 decimals) as pico-dollars; 0 when absent. */
static int64_t parse_dollars(parse_ctx *pc, json_object *obj, const char *name)
{
    json_object *v;
    if (!obj || !json_object_object_get_ex(obj, name, &v)) return 0;
    int64_t micro = 0;
    const char *s = json_object_is_type(v, json_type_string) ||
                            json_object_is_type(v, json_type_int) ||
                            json_object_is_type(v, json_type_double)
                        ? json_object_get_string(v)
                        : NULL;
    if (!s || !pricing_parse_usd_per_mtok(s, &micro) || micro > INT64_MAX / 1000000) {
        size_t old = path_push(pc, ".%s", name);
        fail(pc, "expected dollars, like 50 or \"12.5\" (at most 6 decimals)");
        path_pop(pc, old);
        return 0;
    }
    return micro * 1000000; /* µ$ -> pico-dollars */
}

/* The budget and rate-limit fields a key and a team share; "budget_usd"
 * is the monthly budget under its older name. */
#define SPEND_LIMIT_FIELDS                                                                         \
    "budget_usd", "budget_daily_usd", "budget_weekly_usd", "budget_monthly_usd", "rpm",            \
        "tokens_per_hour", "usd_per_hour"

static void parse_spend_limits(parse_ctx *pc, json_object *o, spend_limits *l)
{
    l->budget_pusd[PERIOD_DAY] = parse_dollars(pc, o, "budget_daily_usd");
    l->budget_pusd[PERIOD_WEEK] = parse_dollars(pc, o, "budget_weekly_usd");
    l->budget_pusd[PERIOD_MONTH] = parse_dollars(pc, o, "budget_monthly_usd");
    if (!l->budget_pusd[PERIOD_MONTH])
        l->budget_pusd[PERIOD_MONTH] = parse_dollars(pc, o, "budget_usd");
    l->rpm = get_int(pc, o, "rpm", 0, 0, 100000000);
    l->tokens_per_hour = get_int(pc, o, "tokens_per_hour", 0, 0, INT64_MAX / 4);
    l->pusd_per_hour = parse_dollars(pc, o, "usd_per_hour");
}

/* $.teams: {"NAME": {"budget_usd": X}}. Parsed before the keys, which
 * point at their team's entry. */
static void parse_teams(parse_ctx *pc, json_object *root)
{
    json_object *ts = get_obj(pc, root, "teams", false);
    if (!ts) return;
    bridle_config *c = pc->cfg;
    int n = json_object_object_length(ts);
    if (n > MAX_TEAMS) {
        fail(pc, "too many teams (at most %d)", MAX_TEAMS);
        return;
    }
    c->teams = own(c, calloc(n ? (size_t)n : 1, sizeof *c->teams));
    static const char *const known[] = {SPEND_LIMIT_FIELDS, NULL};
    json_object_object_foreach(ts, name, val)
    {
        size_t old = path_push(pc, ".teams.%s", name);
        if (!json_object_is_type(val, json_type_object))
            fail(pc, "expected an object like {\"budget_usd\": 100}, got %s", type_name(val));
        else if (strlen(name) > TEAM_NAME_MAX || !*name)
            fail(pc, "a team name has 1 to %d bytes (the usage ledger keeps that many)",
                 TEAM_NAME_MAX);
        else {
            check_keys(pc, val, known);
            team_conf *t = &c->teams[c->n_teams++];
            t->name = own(c, strdup(name));
            parse_spend_limits(pc, val, &t->lim);
        }
        path_pop(pc, old);
    }
}

static bool is_hex64(const char *s)
{
    if (strlen(s) != 64) return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
    return true;
}

/* keys[].kind, agent, feature, models, expires_at. */
static void parse_key_extras(parse_ctx *pc, json_object *k, key_conf *kc)
{
    bridle_config *c = pc->cfg;
    const char *kind = get_str(pc, k, "kind", false);
    kc->admin = kind && strcmp(kind, "admin") == 0;
    if (kind && !kc->admin && strcmp(kind, "client") != 0) {
        size_t old = path_push(pc, ".kind");
        fail(pc, "expected \"client\" (the default) or \"admin\" (got \"%s\")", kind);
        path_pop(pc, old);
    }
    kc->agent = get_str(pc, k, "agent", false);
    kc->feature = get_str(pc, k, "feature", false);
    json_object *ms;
    if (json_object_object_get_ex(k, "models", &ms)) {
        size_t old = path_push(pc, ".models");
        size_t n = json_object_is_type(ms, json_type_array) ? json_object_array_length(ms) : 0;
        const char **v = own(c, calloc(n ? n : 1, sizeof *v));
        for (size_t i = 0; i < n; i++) {
            json_object *m = json_object_array_get_idx(ms, i);
            const char *name =
                json_object_is_type(m, json_type_string) ? json_object_get_string(m) : NULL;
            if (!name || (!config_find_model(c, name) && !config_find_route(c, name) &&
                          strcmp(name, "auto") != 0)) {
                fail(pc, "expected a list of model or route names in $.models or $.routes (got %s)",
                     json_object_to_json_string(m));
                break;
            }
            v[kc->n_models++] = own(c, strdup(name));
        }
        if (!json_object_is_type(ms, json_type_array) || !n)
            fail(pc, "expected a non-empty list of model or route names (leave it out for any)");
        kc->models = v;
        path_pop(pc, old);
    }
    const char *exp = get_str(pc, k, "expires_at", false);
    if (exp) {
        struct tm tm = {0};
        const char *end = strptime(exp, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (!end || *end) {
            size_t old = path_push(pc, ".expires_at");
            fail(pc, "expected a UTC time like \"2027-01-31T00:00:00Z\" (got \"%s\")", exp);
            path_pop(pc, old);
        } else
            kc->expires_ms = (int64_t)timegm(&tm) * 1000;
    }
}

static void parse_keys(parse_ctx *pc, json_object *root)
{
    json_object *ks;
    if (!json_object_object_get_ex(root, "keys", &ks)) return;
    if (!json_object_is_type(ks, json_type_array)) {
        size_t old = path_push(pc, ".keys");
        fail(pc, "expected a list of {\"id\", \"sha256\", \"team\"}");
        path_pop(pc, old);
        return;
    }
    size_t n = json_object_array_length(ks);
    if (n > MAX_KEYS) {
        fail(pc, "too many keys (at most %d in the file)", MAX_KEYS);
        return;
    }
    bridle_config *c = pc->cfg;
    c->keys = own(c, calloc(n ? n : 1, sizeof *c->keys));
    static const char *const known[] = {
        "id",         "sha256",           "team", "name", "kind", "agent", "feature", "models",
        "expires_at", SPEND_LIMIT_FIELDS, NULL};
    for (size_t i = 0; i < n && !pc->failed; i++) {
        json_object *k = json_object_array_get_idx(ks, i);
        size_t old = path_push(pc, ".keys[%zu]", i);
        if (!json_object_is_type(k, json_type_object)) {
            fail(pc, "expected an object");
            path_pop(pc, old);
            break;
        }
        check_keys(pc, k, known);
        key_conf *kc = &c->keys[c->n_keys];
        kc->id = get_str(pc, k, "id", true);
        kc->team = get_str(pc, k, "team", false);
        kc->team_cfg = kc->team ? config_find_team(c, kc->team) : NULL;
        parse_spend_limits(pc, k, &kc->lim);
        parse_key_extras(pc, k, kc);
        pc->missing_env = false;
        pc->env_lenient = true;
        const char *h = get_str(pc, k, "sha256", true);
        pc->env_lenient = false;
        if (h && pc->missing_env) {
            path_pop(pc, old); /* a key from an unset variable is simply absent */
            continue;
        }
        if (h && !is_hex64(h)) {
            size_t o2 = path_push(pc, ".sha256");
            fail(pc, "expected 64 lower-case hex characters (the SHA-256 of the key; `bridle "
                     "new-key` prints one)");
            path_pop(pc, o2);
        } else if (h) {
            memcpy(kc->sha256, h, 65);
            c->n_keys++;
        }
        path_pop(pc, old);
    }
}

/* ------------------------------------------------------------ database */

static void parse_database(parse_ctx *pc, json_object *root)
{
    static const char *const known[] = {"url",
                                        "spool_dir",
                                        "spool_max_bytes",
                                        "migrate",
                                        "retention_days",
                                        "partitions_ahead_days",
                                        "flush_interval_ms",
                                        "spool_flush_ms",
                                        "batch_max",
                                        "spend_refresh_ms",
                                        "keys_refresh_ms",
                                        "heartbeat_ms",
                                        "rollup_interval_ms",
                                        "rollup_batch",
                                        "rollup_retention_days_5m",
                                        "rollup_retention_days_1h",
                                        "rollup_retention_days_1d",
                                        NULL};
    database_conf *d = &pc->cfg->database;
    json_object *o = get_obj(pc, root, "database", false);
    size_t old = path_push(pc, ".database");
    if (o) check_keys(pc, o, known);
    const char *url = o ? get_str(pc, o, "url", false) : NULL;
    if (!url || !*url) /* the environment's DATABASE_URL is the default */
        url = getenv("DATABASE_URL");
    d->url = own(pc->cfg, strdup(url ? url : ""));
    const char *dir = o ? get_str(pc, o, "spool_dir", false) : NULL;
    d->spool_dir = own(pc->cfg, strdup(dir && *dir ? dir : "var/spool"));
    d->spool_max_bytes = get_int(pc, o, "spool_max_bytes", 1LL << 30, 1 << 20, 1LL << 40);
    const char *mig = o ? get_str(pc, o, "migrate", false) : NULL;
    d->migrate = MIGRATE_APPLY;
    if (mig && strcmp(mig, "check") == 0)
        d->migrate = MIGRATE_CHECK;
    else if (mig && strcmp(mig, "off") == 0)
        d->migrate = MIGRATE_OFF;
    else if (mig && strcmp(mig, "apply") != 0) {
        size_t o2 = path_push(pc, ".migrate");
        fail(pc,
             "expected \"apply\", \"check\" (refuse to start when migrations are pending) or "
             "\"off\" (got \"%s\")",
             mig);
        path_pop(pc, o2);
    }
    d->retention_days = get_int(pc, o, "retention_days", 0, 0, 36500);
    d->partitions_ahead_days = get_int(pc, o, "partitions_ahead_days", 7, 1, 366);
    d->flush_interval_ms = get_int(pc, o, "flush_interval_ms", 100, 1, 60000);
    d->batch_max = get_int(pc, o, "batch_max", 5000, 1, 20000);
    d->spool_flush_ms = get_int(pc, o, "spool_flush_ms", 10, 0, 1000);
    d->spend_refresh_ms = get_int(pc, o, "spend_refresh_ms", 30000, 100, 3600000);
    d->keys_refresh_ms = get_int(pc, o, "keys_refresh_ms", 1000, 50, 2000);
    d->heartbeat_ms = get_int(pc, o, "heartbeat_ms", 1000, 50, 60000);
    /* the rollup step (db/rollup.h); 0 = this gateway does not run it */
    d->rollup_interval_ms = get_int(pc, o, "rollup_interval_ms", 2000, 0, 3600000);
    if (d->rollup_interval_ms > 0 && d->rollup_interval_ms < 100) {
        size_t o2 = path_push(pc, ".rollup_interval_ms");
        fail(pc, "expected 0 (off: run `bridle ledger rollup` instead) or 100..3600000 (got %lld)",
             (long long)d->rollup_interval_ms);
        path_pop(pc, o2);
    }
    d->rollup_batch = get_int(pc, o, "rollup_batch", 100000, 100, 10000000);
    d->rollup_retention_days_5m = get_int(pc, o, "rollup_retention_days_5m", 90, 0, 36500);
    d->rollup_retention_days_1h = get_int(pc, o, "rollup_retention_days_1h", 730, 0, 36500);
    d->rollup_retention_days_1d = get_int(pc, o, "rollup_retention_days_1d", 0, 0, 36500);
    path_pop(pc, old);
}

/* $.budgets: {"total": {"daily_usd", "weekly_usd", "monthly_usd"}, lease settings}. */
static void parse_budgets(parse_ctx *pc, json_object *root)
{
    static const char *const known[] = {"total",     "lease_ttl_ms",  "sync_ms", "lease_max_usd",
                                        "fail_open", "orphan_ttl_ms", NULL};
    static const char *const total_known[] = {"daily_usd", "weekly_usd", "monthly_usd", NULL};
    budgets_conf *b = &pc->cfg->budgets;
    json_object *o = get_obj(pc, root, "budgets", false);
    size_t old = path_push(pc, ".budgets");
    if (o) check_keys(pc, o, known);
    json_object *t = o ? get_obj(pc, o, "total", false) : NULL;
    if (t) {
        size_t o2 = path_push(pc, ".total");
        check_keys(pc, t, total_known);
        b->total.budget_pusd[PERIOD_DAY] = parse_dollars(pc, t, "daily_usd");
        b->total.budget_pusd[PERIOD_WEEK] = parse_dollars(pc, t, "weekly_usd");
        b->total.budget_pusd[PERIOD_MONTH] = parse_dollars(pc, t, "monthly_usd");
        path_pop(pc, o2);
    }
    b->lease_ttl_ms = get_int(pc, o, "lease_ttl_ms", 30000, 1000, 3600000);
    b->sync_ms = get_int(pc, o, "sync_ms", 1000, 50, 60000);
    b->lease_max_pusd = parse_dollars(pc, o, "lease_max_usd");
    if (!b->lease_max_pusd) b->lease_max_pusd = 5000000000000LL; /* $5 */
    b->fail_open = get_bool(pc, o, "fail_open", false);
    b->orphan_ttl_ms = get_int(pc, o, "orphan_ttl_ms", 86400000, 1000, 2592000000LL);
    path_pop(pc, old);
}

/* $.alerts: {"webhook_url", "thresholds": [0.75, 0.95], "poll_ms"}. */
static void parse_alerts(parse_ctx *pc, json_object *root)
{
    static const char *const known[] = {"webhook_url", "thresholds", "poll_ms", "claim_timeout_ms",
                                        NULL};
    alerts_conf *a = &pc->cfg->alerts;
    json_object *o = get_obj(pc, root, "alerts", false);
    size_t old = path_push(pc, ".alerts");
    if (o) check_keys(pc, o, known);
    const char *url = o ? get_str(pc, o, "webhook_url", false) : NULL;
    a->webhook_url = own(pc->cfg, strdup(url ? url : ""));
    if (*a->webhook_url && strncmp(a->webhook_url, "http://", 7) != 0 &&
        strncmp(a->webhook_url, "https://", 8) != 0) {
        size_t o2 = path_push(pc, ".webhook_url");
        fail(pc, "expected an http:// or https:// URL (got \"%s\")", a->webhook_url);
        path_pop(pc, o2);
    }
    a->poll_ms = get_int(pc, o, "poll_ms", 1000, 50, 60000);
    a->claim_timeout_ms = get_int(pc, o, "claim_timeout_ms", 60000, 1000, 3600000);
    json_object *th;
    if (!o || !json_object_object_get_ex(o, "thresholds", &th)) {
        a->thresholds_bp[0] = 7500;
        a->thresholds_bp[1] = 9500;
        a->n_thresholds = 2;
    } else {
        size_t o2 = path_push(pc, ".thresholds");
        size_t n = json_object_is_type(th, json_type_array) ? json_object_array_length(th) : 0;
        if (!json_object_is_type(th, json_type_array) || n > 8)
            fail(pc, "expected a list of at most 8 shares between 0 and 1, like [0.75, 0.95]");
        for (size_t i = 0; i < n && !pc->failed; i++) {
            json_object *v = json_object_array_get_idx(th, i);
            double d = json_object_get_double(v);
            int bp = (int)(d * 10000 + 0.5);
            if ((!json_object_is_type(v, json_type_double) &&
                 !json_object_is_type(v, json_type_int)) ||
                bp <= 0 || bp > 10000 || (i && bp <= a->thresholds_bp[i - 1]))
                fail(
                    pc,
                    "expected ascending shares above 0 and at most 1, like [0.75, 0.95] (item %zu)",
                    i);
            else
                a->thresholds_bp[a->n_thresholds++] = bp;
        }
        path_pop(pc, o2);
    }
    path_pop(pc, old);
}

static void parse_resilience(parse_ctx *pc, json_object *root)
{
    static const char *const known[] = {
        "retries", "max_attempts",     "max_wait_ms",     "backoff_base_ms",     "backoff_cap_ms",
        "breaker", "breaker_failures", "breaker_open_ms", "breaker_open_max_ms", "coalesce",
        NULL};
    resilience_conf *r = &pc->cfg->resilience;
    json_object *o = get_obj(pc, root, "resilience", false);
    size_t old = path_push(pc, ".resilience");
    if (o) check_keys(pc, o, known);
    r->retries = get_bool(pc, o, "retries", true);
    r->max_attempts = get_int(pc, o, "max_attempts", 3, 1, 10);
    r->max_wait_ms = get_int(pc, o, "max_wait_ms", 60000, 0, 3600000);
    r->backoff_base_ms = get_int(pc, o, "backoff_base_ms", 250, 1, 60000);
    r->backoff_cap_ms = get_int(pc, o, "backoff_cap_ms", 8000, 1, 600000);
    r->breaker = get_bool(pc, o, "breaker", true);
    r->breaker_failures = get_int(pc, o, "breaker_failures", 5, 1, 1000);
    r->breaker_open_ms = get_int(pc, o, "breaker_open_ms", 5000, 100, 600000);
    r->breaker_open_max_ms = get_int(pc, o, "breaker_open_max_ms", 60000, 100, 3600000);
    if (r->breaker_open_max_ms < r->breaker_open_ms) {
        size_t o2 = path_push(pc, ".breaker_open_max_ms");
        fail(pc, "expected at least breaker_open_ms (%lld), got %lld",
             (long long)r->breaker_open_ms, (long long)r->breaker_open_max_ms);
        path_pop(pc, o2);
    }
    r->coalesce = get_bool(pc, o, "coalesce", false);
    path_pop(pc, old);
}

static void parse_idempotency(parse_ctx *pc, json_object *root)
{
    static const char *const known[] = {"concurrent", "retention_hours", "connections", NULL};
    idempotency_conf *d = &pc->cfg->idempotency;
    json_object *o = get_obj(pc, root, "idempotency", false);
    size_t old = path_push(pc, ".idempotency");
    if (o) check_keys(pc, o, known);
    const char *mode = o ? get_str(pc, o, "concurrent", false) : NULL;
    d->wait = !mode || strcmp(mode, "wait") == 0;
    if (mode && !d->wait && strcmp(mode, "conflict") != 0) {
        size_t o2 = path_push(pc, ".concurrent");
        fail(pc,
             "expected \"wait\" (a duplicate waits for the first request's answer) or "
             "\"conflict\" (it gets 409 at once) (got \"%s\")",
             mode);
        path_pop(pc, o2);
    }
    d->retention_hours = get_int(pc, o, "retention_hours", 24, 1, 24 * 366);
    d->connections = get_int(pc, o, "connections", 2, 1, 8);
    path_pop(pc, old);
}

/* ------------------------------------------------------------ cache */

static bool is_route_name(const bridle_config *c, const char *name)
{
    return config_find_route(c, name) || strcmp(name, "auto") == 0 ||
           strncmp(name, "tier:", 5) == 0;
}

/* A name in a per-task or per-route map (timeouts, cache): a route is one
 * of $.routes or a virtual model of the routing policy ("auto",
 * "tier:NAME"). False, with the error, when it is not one. */
static bool map_name_ok(parse_ctx *pc, bool routes, const char *name)
{
    if (routes && !is_route_name(pc->cfg, name))
        fail(pc, "expected the name of a route in $.routes, \"auto\" or \"tier:NAME\" (got \"%s\")",
             name);
    else if (!*name)
        fail(pc, "expected a non-empty task name");
    else
        return true;
    return false;
}

/* cache.tasks / cache.routes: NAME -> seconds (0: never cached). */
static cache_ttl *parse_cache_ttls(parse_ctx *pc, json_object *o, const char *key, int *n)
{
    json_object *m = get_obj(pc, o, key, false);
    if (!m) return NULL;
    bool routes = strcmp(key, "routes") == 0;
    int cap = json_object_object_length(m);
    cache_ttl *t = own(pc->cfg, calloc(cap ? (size_t)cap : 1, sizeof *t));
    json_object_object_foreach(m, name, val)
    {
        size_t old = path_push(pc, ".%s.%s", key, name);
        int64_t secs = json_object_get_int64(val);
        if (!json_object_is_type(val, json_type_int) || secs < 0 || secs > 31 * 86400)
            fail(pc, "expected a TTL in seconds from 0 (never cached) to 2678400 (31 days)");
        else if (map_name_ok(pc, routes, name)) {
            t[*n].name = own(pc->cfg, strdup(name));
            t[*n].ttl_s = secs;
            (*n)++;
        }
        path_pop(pc, old);
    }
    return t;
}

static void parse_cache_deterministic(parse_ctx *pc, json_object *o)
{
    json_object *list;
    if (!o || !json_object_object_get_ex(o, "deterministic_models", &list)) return;
    size_t old = path_push(pc, ".deterministic_models");
    if (!json_object_is_type(list, json_type_array))
        fail(pc, "expected a list of model names from $.models, got %s", type_name(list));
    for (size_t i = 0; !pc->failed && i < json_object_array_length(list); i++) {
        json_object *v = json_object_array_get_idx(list, i);
        const char *name = json_object_get_string(v);
        int m = -1;
        for (int k = 0; json_object_is_type(v, json_type_string) && k < pc->cfg->n_models; k++)
            if (strcmp(pc->cfg->models[k].name, name) == 0) m = k;
        if (m < 0)
            fail(pc, "item %zu: expected the name of a model in $.models (got %s)", i,
                 json_object_to_json_string(v));
        else
            pc->cfg->cache_deterministic[m] = true;
    }
    path_pop(pc, old);
}

static void parse_cache(parse_ctx *pc, json_object *root)
{
    static const char *const known[] = {"enabled",
                                        "max_mb",
                                        "ttl_s",
                                        "scope",
                                        "tasks",
                                        "routes",
                                        "deterministic_models",
                                        "shared",
                                        "shared_max_mb",
                                        "shared_timeout_ms",
                                        "shared_logged",
                                        NULL};
    bridle_config *c = pc->cfg;
    cache_conf *k = &c->cache;
    json_object *o = get_obj(pc, root, "cache", false);
    size_t old = path_push(pc, ".cache");
    if (o) check_keys(pc, o, known);
    k->enabled = get_bool(pc, o, "enabled", false);
    k->max_bytes = get_int(pc, o, "max_mb", 64, 1, 65536) << 20;
    k->ttl_s = get_int(pc, o, "ttl_s", 3600, 0, 31 * 86400);
    const char *scope = o ? get_str(pc, o, "scope", false) : NULL;
    k->team_scope = scope && strcmp(scope, "team") == 0;
    if (scope && !k->team_scope && strcmp(scope, "key") != 0) {
        size_t o2 = path_push(pc, ".scope");
        fail(pc,
             "expected \"key\" (each client key has its own answers) or \"team\" (the keys "
             "of a team share theirs) (got \"%s\")",
             scope);
        path_pop(pc, o2);
    }
    if (o) {
        c->cache_tasks = parse_cache_ttls(pc, o, "tasks", &c->n_cache_tasks);
        c->cache_routes = parse_cache_ttls(pc, o, "routes", &c->n_cache_routes);
    }
    parse_cache_deterministic(pc, o);
    k->shared = get_bool(pc, o, "shared", false);
    k->shared_max_bytes = get_int(pc, o, "shared_max_mb", 1024, 1, 1048576) << 20;
    k->shared_timeout_ms = get_int(pc, o, "shared_timeout_ms", 50, 1, 10000);
    k->shared_logged = get_bool(pc, o, "shared_logged", false);
    if (k->shared && (!c->database.url || !*c->database.url)) {
        size_t o2 = path_push(pc, ".shared");
        fail(pc, "the shared level lives in PostgreSQL: set database.url (or DATABASE_URL), or "
                 "\"shared\": false");
        path_pop(pc, o2);
    }
    path_pop(pc, old);
}

/* ------------------------------------------------------------ batches */

/* batches: the local queue that runs batch lines (server/batches.h). */
static void parse_batches(parse_ctx *pc, json_object *root)
{
    json_object *o = get_obj(pc, root, "batches", false);
    size_t old = path_push(pc, ".batches");
    static const char *const known[] = {
        "concurrency", "busy_concurrency", "yield_above", "submit_after_ms",
        "max_lines",   "poll_min_ms",      "poll_max_ms", NULL};
    if (o) check_keys(pc, o, known);
    batches_conf *b = &pc->cfg->batches;
    b->concurrency = (int)get_int(pc, o, "concurrency", 8, 1, 1024);
    b->busy_concurrency = (int)get_int(pc, o, "busy_concurrency", 2, 0, 1024);
    b->yield_above = (int)get_int(pc, o, "yield_above", 256, 0, 1000000);
    b->submit_after_ms = get_int(pc, o, "submit_after_ms", 5000, 0, 86400000);
    b->max_lines = (int)get_int(pc, o, "max_lines", 50000, 1, 50000);
    b->poll_min_ms = get_int(pc, o, "poll_min_ms", 5000, 10, 3600000);
    b->poll_max_ms = get_int(pc, o, "poll_max_ms", 300000, 10, 86400000);
    if (b->poll_max_ms < b->poll_min_ms) {
        size_t at = path_push(pc, ".poll_max_ms");
        fail(pc, "must be at least poll_min_ms (%lld)", (long long)b->poll_min_ms);
        path_pop(pc, at);
    }
    path_pop(pc, old);
}

const batches_conf *config_batches(const bridle_config *c)
{
    return &c->batches;
}

/* ------------------------------------------------------------ metrics */

/* metrics.allow: the address blocks GET /metrics answers; loopback only by
 * default (the figures name models, providers and spend). */
static void parse_metrics(parse_ctx *pc, json_object *root)
{
    static const char *const known[] = {"allow", NULL};
    static const char *const loopback[] = {"127.0.0.0/8", "::1/128"};
    bridle_config *c = pc->cfg;
    json_object *o = get_obj(pc, root, "metrics", false), *list = NULL;
    size_t old = path_push(pc, ".metrics");
    if (o) check_keys(pc, o, known);
    if (o && json_object_object_get_ex(o, "allow", &list) &&
        !json_object_is_type(list, json_type_array)) {
        size_t o2 = path_push(pc, ".allow");
        fail(pc, "expected a list of address blocks like [\"127.0.0.0/8\", \"10.0.0.0/8\"]");
        path_pop(pc, o2);
        list = NULL;
    }
    size_t n = list ? json_object_array_length(list) : 2;
    c->metrics_allow = own(c, calloc(n ? n : 1, sizeof *c->metrics_allow));
    for (size_t i = 0; i < n && !pc->failed; i++) {
        json_object *v = list ? json_object_array_get_idx(list, i) : NULL;
        const char *cidr = !list ? loopback[i]
                           : json_object_is_type(v, json_type_string)
                               ? expand_env(pc, json_object_get_string(v))
                               : NULL;
        if (list && (!cidr || util_cidr_parse(cidr, &c->metrics_allow[i]) != 0)) {
            size_t o2 = path_push(pc, ".allow[%zu]", i);
            fail(pc, "expected an address block like \"10.0.0.0/8\" or \"::1/128\" (got %s%s%s)",
                 cidr ? "\"" : "", cidr ? cidr : json_object_to_json_string(v), cidr ? "\"" : "");
            path_pop(pc, o2);
        } else if (!list) {
            util_cidr_parse(cidr, &c->metrics_allow[i]);
        }
        c->n_metrics_allow++;
    }
    path_pop(pc, old);
}

/* ------------------------------------------------------------ timeouts */

static void parse_timeout_level(parse_ctx *pc, json_object *o, timeout_level *lv)
{
    static const char *const known[] = {"connect_ms", "first_byte_ms", "total_ms", NULL};
    static const char *const field[] = {"connect_ms", "first_byte_ms", "total_ms"};
    check_keys(pc, o, known);
    lv->t.connect_ms = get_int(pc, o, "connect_ms", 0, 1, 600000);
    lv->t.first_byte_ms = get_int(pc, o, "first_byte_ms", 0, 1, 3600000);
    lv->t.total_ms = get_int(pc, o, "total_ms", 0, 100, 86400000);
    if (lv->t.first_byte_ms && lv->t.total_ms && lv->t.first_byte_ms >= lv->t.total_ms) {
        size_t old = path_push(pc, ".first_byte_ms");
        fail(pc,
             "expected less than total_ms (%lld): the first byte must be able to come in time "
             "(got %lld)",
             (long long)lv->t.total_ms, (long long)lv->t.first_byte_ms);
        path_pop(pc, old);
    }
    for (int i = 0; i < 3; i++) { /* "$.timeouts.tasks.x" -> "timeouts.tasks.x.total_ms" */
        buf b = BUF_INIT;
        buf_printf(&b, "%s.%s", pc->path + 2, field[i]);
        lv->from[i] = own(pc->cfg, buf_steal(&b));
    }
}

/* timeouts.tasks / timeouts.routes: NAME -> level. A route is one of $.routes or a
 * virtual model of the routing policy ("auto", "tier:NAME"). */
static timeout_level *parse_timeout_map(parse_ctx *pc, json_object *o, const char *key, int *n)
{
    json_object *m = get_obj(pc, o, key, false);
    if (!m) return NULL;
    bool routes = strcmp(key, "routes") == 0;
    int cap = json_object_object_length(m);
    timeout_level *lv = own(pc->cfg, calloc(cap ? (size_t)cap : 1, sizeof *lv));
    json_object_object_foreach(m, name, val)
    {
        size_t old = path_push(pc, ".%s.%s", key, name);
        if (!json_object_is_type(val, json_type_object))
            fail(pc, "expected an object of connect_ms, first_byte_ms, total_ms, got %s",
                 type_name(val));
        else if (map_name_ok(pc, routes, name)) {
            lv[*n].name = own(pc->cfg, strdup(name));
            parse_timeout_level(pc, val, &lv[*n]);
            (*n)++;
        }
        path_pop(pc, old);
    }
    return lv;
}

static void parse_timeouts(parse_ctx *pc, json_object *root)
{
    static const char *const known[] = {"default", "tasks", "routes", NULL};
    bridle_config *c = pc->cfg;
    json_object *o = get_obj(pc, root, "timeouts", false);
    if (!o) return;
    size_t old = path_push(pc, ".timeouts");
    check_keys(pc, o, known);
    json_object *d = get_obj(pc, o, "default", false);
    if (d) {
        size_t o2 = path_push(pc, ".default");
        parse_timeout_level(pc, d, &c->tmo_default);
        path_pop(pc, o2);
    }
    c->tmo_tasks = parse_timeout_map(pc, o, "tasks", &c->n_tmo_tasks);
    c->tmo_routes = parse_timeout_map(pc, o, "routes", &c->n_tmo_routes);
    path_pop(pc, old);
}

/* The routing policy is data: built and checked here, so check-config and
 * serve report its errors with the file and the JSON path. */
static void parse_routing(parse_ctx *pc, json_object *root)
{
    bridle_config *c = pc->cfg;
    if (pc->failed) return;
    json_object *r = NULL;
    if (json_object_object_get_ex(root, "routing", &r)) c->routing = json_object_get(r);
    policy_model models[MAX_MODELS];
    int n = policy_models_from_config(c, models, MAX_MODELS);
    char err[512];
    c->policy = policy_new(c->routing, models, n, err, sizeof err);
    /* Without a "routing" section the defaults need every tier a default
     * task names; a config that has no such models simply has no policy,
     * and "auto" / "tier:NAME" answer 503 saying so. */
    if (!c->policy && c->routing) {
        snprintf(pc->err, pc->errlen, "%s: %s", c->path, err);
        pc->failed = true;
    }
}

/* ------------------------------------------------------------ load */

static json_object *read_json_file(parse_ctx *pc, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(pc->err, pc->errlen, "%s: cannot open: %s", path, strerror(errno));
        pc->failed = true;
        return NULL;
    }
    buf b = BUF_INIT;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&b, tmp, n);
    fclose(f);
    json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *root = json_tokener_parse_ex(tok, b.data ? b.data : "", (int)b.len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (!root || jerr != json_tokener_success) {
        size_t off = json_tokener_get_parse_end(tok), line = 1;
        for (size_t i = 0; i < off && i < b.len; i++)
            line += b.data[i] == '\n';
        bool eof = jerr == json_tokener_success || jerr == json_tokener_continue;
        snprintf(pc->err, pc->errlen, "%s: line %zu: invalid JSON: %s", path, line,
                 eof ? "unexpected end of file" : json_tokener_error_desc(jerr));
        pc->failed = true;
        json_object_put(root);
        root = NULL;
    } else if (!json_object_is_type(root, json_type_object)) {
        snprintf(pc->err, pc->errlen, "%s: $: expected a JSON object at the top", path);
        pc->failed = true;
        json_object_put(root);
        root = NULL;
    }
    json_tokener_free(tok);
    buf_free(&b);
    return root;
}

/* "workers": an integer 1-1024, or "auto" (stored as 0). */
static void parse_workers(parse_ctx *pc, json_object *root)
{
    json_object *v;
    pc->cfg->workers = 1;
    if (!json_object_object_get_ex(root, "workers", &v)) return;
    if (json_object_is_type(v, json_type_string)) {
        if (strcmp(json_object_get_string(v), "auto") == 0) {
            pc->cfg->workers = 0;
            return;
        }
        size_t old = path_push(pc, ".workers");
        fail(pc, "expected an integer from 1 to 1024 or \"auto\" (one per core), got \"%s\"",
             json_object_get_string(v));
        path_pop(pc, old);
        return;
    }
    pc->cfg->workers = (int)get_int(pc, root, "workers", 1, 1, 1024);
}

bridle_config *config_load(const char *path, char *err, size_t errlen)
{
    bridle_config *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->path = own(c, strdup(path));
    parse_ctx pc = {.cfg = c, .path = "$", .err = err, .errlen = errlen};
    json_object *root = read_json_file(&pc, path);
    if (root) {
        static const char *const known[] = {
            "listen",     "log_level",  "limits",  "providers", "models",      "routes",
            "keys",       "database",   "routing", "$schema",   "idempotency", "resilience",
            "teams",      "timeouts",   "budgets", "alerts",    "cache",       "metrics",
            "log_format", "access_log", "batches", "workers",   NULL};
        check_keys(&pc, root, known);
        const char *listen = get_str(&pc, root, "listen", false);
        c->listen = own(c, strdup(listen ? listen : "127.0.0.1:8080"));
        const char *lvl = get_str(&pc, root, "log_level", false);
        c->log_level = own(c, strdup(lvl ? lvl : "info"));
        if (strcmp(c->log_level, "debug") && strcmp(c->log_level, "info") &&
            strcmp(c->log_level, "warn") && strcmp(c->log_level, "error")) {
            size_t old = path_push(&pc, ".log_level");
            fail(&pc, "expected debug, info, warn or error (got \"%s\")", c->log_level);
            path_pop(&pc, old);
        }
        const char *fmt = get_str(&pc, root, "log_format", false);
        c->log_json = fmt && strcmp(fmt, "json") == 0;
        if (fmt && !c->log_json && strcmp(fmt, "text") != 0) {
            size_t old = path_push(&pc, ".log_format");
            fail(&pc, "expected \"text\" or \"json\" (JSON lines) (got \"%s\")", fmt);
            path_pop(&pc, old);
        }
        c->access_log = get_bool(&pc, root, "access_log", false);
        parse_workers(&pc, root);
        parse_limits(&pc, root);
        parse_database(&pc, root);
        parse_resilience(&pc, root);
        parse_budgets(&pc, root);
        parse_alerts(&pc, root);
        parse_idempotency(&pc, root);
        parse_providers(&pc, root);
        parse_models(&pc, root);
        parse_routes(&pc, root);
        parse_teams(&pc, root);
        parse_timeouts(&pc, root);
        parse_cache(&pc, root);
        parse_metrics(&pc, root);
        parse_batches(&pc, root);
        parse_keys(&pc, root);
        parse_routing(&pc, root);
        json_object_put(root);
    }
    if (!pc.failed && c->n_models)
        name_index_build(&c->model_ix, &c->models[0].name, sizeof c->models[0], c->n_models);
    if (!pc.failed && c->n_routes)
        name_index_build(&c->route_ix, &c->routes[0].name, sizeof c->routes[0], c->n_routes);
    if (pc.failed) {
        config_free(c);
        return NULL;
    }
    return c;
}

void config_free(bridle_config *c)
{
    if (!c) return;
    policy_free(c->policy);
    json_object_put(c->routing);
    free(c->model_ix.slot);
    free(c->route_ix.slot);
    for (int i = 0; i < c->n_owned; i++)
        free(c->owned[i]);
    free(c->owned);
    free(c);
}

const char *config_listen(const bridle_config *c)
{
    return c->listen;
}

const char *config_path(const bridle_config *c)
{
    return c->path;
}

/* ------------------------------------------------------------ reload */

/* One restart-only setting: logged when it changed, then set back. */
typedef struct keep_ctx {
    bridle_config *nw;
    bool log;
    int changed;
} keep_ctx;

static bool keep_note(keep_ctx *k, bool differs, const char *path)
{
    if (!differs) return false;
    k->changed++;
    if (k->log)
        log_warn("config reload: %s changed in %s; it takes effect only at a restart, so the "
                 "running value is kept",
                 path, k->nw->path);
    return true;
}

static void keep_i64(keep_ctx *k, int64_t *nw, int64_t old, const char *path)
{
    if (keep_note(k, *nw != old, path)) *nw = old;
}

static void keep_bool(keep_ctx *k, bool *nw, bool old, const char *path)
{
    if (keep_note(k, *nw != old, path)) *nw = old;
}

static void keep_str(keep_ctx *k, const char **nw, const char *old, const char *path)
{
    if (keep_note(k, strcmp(*nw ? *nw : "", old ? old : "") != 0, path))
        *nw = own(k->nw, strdup(old ? old : ""));
}

int config_keep_restart_settings(bridle_config *nw, const bridle_config *old, bool log)
{
    keep_ctx k = {.nw = nw, .log = log};
    const char *listen = nw->listen;
    keep_str(&k, &listen, old->listen, "listen");
    nw->listen = (char *)listen;
    if (keep_note(&k, nw->workers != old->workers, "workers")) nw->workers = old->workers;
    /* the HTTP server's limits are copied into it at start */
    limits_conf *l = &nw->limits;
    const limits_conf *ol = &old->limits;
    keep_i64(&k, &l->max_body_bytes, ol->max_body_bytes, "limits.max_body_bytes");
    keep_i64(&k, &l->max_header_bytes, ol->max_header_bytes, "limits.max_header_bytes");
    keep_i64(&k, &l->max_headers, ol->max_headers, "limits.max_headers");
    keep_i64(&k, &l->read_timeout_ms, ol->read_timeout_ms, "limits.read_timeout_ms");
    keep_i64(&k, &l->request_timeout_ms, ol->request_timeout_ms, "limits.request_timeout_ms");
    keep_i64(&k, &l->max_connections, ol->max_connections, "limits.max_connections");
    /* the ledger, spool, connections and timers of the database are made at start */
    database_conf *d = &nw->database;
    const database_conf *od = &old->database;
    keep_str(&k, &d->url, od->url, "database.url");
    keep_str(&k, &d->spool_dir, od->spool_dir, "database.spool_dir");
    keep_i64(&k, &d->spool_max_bytes, od->spool_max_bytes, "database.spool_max_bytes");
    if (keep_note(&k, d->migrate != od->migrate, "database.migrate")) d->migrate = od->migrate;
    keep_i64(&k, &d->retention_days, od->retention_days, "database.retention_days");
    keep_i64(&k, &d->partitions_ahead_days, od->partitions_ahead_days,
             "database.partitions_ahead_days");
    keep_i64(&k, &d->flush_interval_ms, od->flush_interval_ms, "database.flush_interval_ms");
    keep_i64(&k, &d->spool_flush_ms, od->spool_flush_ms, "database.spool_flush_ms");
    keep_i64(&k, &d->batch_max, od->batch_max, "database.batch_max");
    keep_i64(&k, &d->keys_refresh_ms, od->keys_refresh_ms, "database.keys_refresh_ms");
    keep_i64(&k, &d->heartbeat_ms, od->heartbeat_ms, "database.heartbeat_ms");
    keep_i64(&k, &d->rollup_interval_ms, od->rollup_interval_ms, "database.rollup_interval_ms");
    keep_i64(&k, &d->rollup_batch, od->rollup_batch, "database.rollup_batch");
    keep_i64(&k, &d->rollup_retention_days_5m, od->rollup_retention_days_5m,
             "database.rollup_retention_days_5m");
    keep_i64(&k, &d->rollup_retention_days_1h, od->rollup_retention_days_1h,
             "database.rollup_retention_days_1h");
    keep_i64(&k, &d->rollup_retention_days_1d, od->rollup_retention_days_1d,
             "database.rollup_retention_days_1d");
    idempotency_conf *ic = &nw->idempotency;
    keep_i64(&k, &ic->retention_hours, old->idempotency.retention_hours,
             "idempotency.retention_hours");
    keep_i64(&k, &ic->connections, old->idempotency.connections, "idempotency.connections");
    /* the lease protocol's settings; the limits themselves are read per request */
    budgets_conf *b = &nw->budgets;
    const budgets_conf *ob = &old->budgets;
    keep_i64(&k, &b->lease_ttl_ms, ob->lease_ttl_ms, "budgets.lease_ttl_ms");
    keep_i64(&k, &b->sync_ms, ob->sync_ms, "budgets.sync_ms");
    keep_i64(&k, &b->lease_max_pusd, ob->lease_max_pusd, "budgets.lease_max_usd");
    keep_bool(&k, &b->fail_open, ob->fail_open, "budgets.fail_open");
    keep_i64(&k, &b->orphan_ttl_ms, ob->orphan_ttl_ms, "budgets.orphan_ttl_ms");
    alerts_conf *a = &nw->alerts;
    const alerts_conf *oa = &old->alerts;
    keep_str(&k, &a->webhook_url, oa->webhook_url, "alerts.webhook_url"); /* never logged */
    if (keep_note(&k,
                  a->n_thresholds != oa->n_thresholds ||
                      memcmp(a->thresholds_bp, oa->thresholds_bp, sizeof a->thresholds_bp) != 0,
                  "alerts.thresholds")) {
        memcpy(a->thresholds_bp, oa->thresholds_bp, sizeof a->thresholds_bp);
        a->n_thresholds = oa->n_thresholds;
    }
    keep_i64(&k, &a->poll_ms, oa->poll_ms, "alerts.poll_ms");
    keep_i64(&k, &a->claim_timeout_ms, oa->claim_timeout_ms, "alerts.claim_timeout_ms");
    /* the shared cache level's connection is made at start */
    cache_conf *cc = &nw->cache;
    const cache_conf *oc = &old->cache;
    keep_bool(&k, &cc->shared, oc->shared, "cache.shared");
    keep_bool(&k, &cc->shared_logged, oc->shared_logged, "cache.shared_logged");
    keep_i64(&k, &cc->shared_max_bytes, oc->shared_max_bytes, "cache.shared_max_mb");
    keep_i64(&k, &cc->shared_timeout_ms, oc->shared_timeout_ms, "cache.shared_timeout_ms");
    return k.changed;
}

int config_workers(const bridle_config *c)
{
    return c->workers;
}

void config_set_spool_dir(bridle_config *c, const char *dir)
{
    char *d = strdup(dir);
    if (d) c->database.spool_dir = own(c, d);
}

const char *config_log_level(const bridle_config *c)
{
    return c->log_level;
}

const limits_conf *config_limits(const bridle_config *c)
{
    return &c->limits;
}

const database_conf *config_database(const bridle_config *c)
{
    return &c->database;
}

const budgets_conf *config_budgets(const bridle_config *c)
{
    return &c->budgets;
}

const alerts_conf *config_alerts(const bridle_config *c)
{
    return &c->alerts;
}

const idempotency_conf *config_idempotency(const bridle_config *c)
{
    return &c->idempotency;
}

const resilience_conf *config_resilience(const bridle_config *c)
{
    return &c->resilience;
}

static const timeout_level *find_timeout_level(const timeout_level *lv, int n, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (strcmp(lv[i].name, name) == 0) return &lv[i];
    return NULL;
}

void config_request_timeouts(const bridle_config *c, const char *task, const char *route,
                             request_timeouts *out)
{
    *out = (request_timeouts){.total_ms = c->limits.request_timeout_ms,
                              .total_from = "limits.request_timeout_ms"};
    /* least specific first: each level overwrites what it sets */
    const timeout_level *chain[] = {&c->tmo_default,
                                    find_timeout_level(c->tmo_routes, c->n_tmo_routes, route),
                                    find_timeout_level(c->tmo_tasks, c->n_tmo_tasks, task)};
    for (size_t i = 0; i < sizeof chain / sizeof chain[0]; i++) {
        const timeout_level *lv = chain[i];
        if (!lv) continue;
        if (lv->t.connect_ms) {
            out->connect_ms = lv->t.connect_ms;
            out->connect_from = lv->from[0];
        }
        if (lv->t.first_byte_ms) {
            out->first_byte_ms = lv->t.first_byte_ms;
            out->first_byte_from = lv->from[1];
        }
        if (lv->t.total_ms) {
            out->total_ms = lv->t.total_ms;
            out->total_from = lv->from[2];
        }
    }
}

bool config_metrics_allowed(const bridle_config *c, const struct sockaddr *peer)
{
    for (int i = 0; i < c->n_metrics_allow; i++)
        if (util_cidr_match(&c->metrics_allow[i], peer)) return true;
    return false;
}

bool config_log_json(const bridle_config *c)
{
    return c->log_json;
}

bool config_access_log(const bridle_config *c)
{
    return c->access_log;
}

const cache_conf *config_cache(const bridle_config *c)
{
    return &c->cache;
}

static const cache_ttl *find_cache_ttl(const cache_ttl *t, int n, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (strcmp(t[i].name, name) == 0) return &t[i];
    return NULL;
}

int64_t config_cache_ttl_s(const bridle_config *c, const char *task, const char *route)
{
    const cache_ttl *t = find_cache_ttl(c->cache_tasks, c->n_cache_tasks, task);
    if (!t) t = find_cache_ttl(c->cache_routes, c->n_cache_routes, route);
    return t ? t->ttl_s : c->cache.ttl_s;
}

bool config_cache_deterministic_model(const bridle_config *c, int i)
{
    return i >= 0 && i < c->n_models && c->cache_deterministic[i];
}

const struct policy *config_policy(const bridle_config *c)
{
    return c->policy; /* NULL: no "routing" section and the defaults do not fit the models */
}

json_object *config_routing_json(const bridle_config *c)
{
    return c->routing;
}

int config_n_providers(const bridle_config *c)
{
    return c->n_providers;
}

const provider_conf *config_provider(const bridle_config *c, int i)
{
    return &c->providers[i];
}

bool config_provider_enabled(const bridle_config *c, int i)
{
    return c->provider_enabled[i];
}

int config_n_models(const bridle_config *c)
{
    return c->n_models;
}

const model_conf *config_model(const bridle_config *c, int i)
{
    return &c->models[i];
}

const model_conf *config_find_model(const bridle_config *c, const char *name)
{
    int i = c->n_models ? name_index_find(&c->model_ix, &c->models[0].name, sizeof c->models[0],
                                          c->n_models, name)
                        : -1;
    return i >= 0 ? &c->models[i] : NULL;
}

int config_n_routes(const bridle_config *c)
{
    return c->n_routes;
}

const route_conf *config_route(const bridle_config *c, int i)
{
    return &c->routes[i];
}

const route_conf *config_find_route(const bridle_config *c, const char *name)
{
    int i = c->n_routes ? name_index_find(&c->route_ix, &c->routes[0].name, sizeof c->routes[0],
                                          c->n_routes, name)
                        : -1;
    return i >= 0 ? &c->routes[i] : NULL;
}

int config_n_teams(const bridle_config *c)
{
    return c->n_teams;
}

const team_conf *config_team(const bridle_config *c, int i)
{
    return &c->teams[i];
}

const team_conf *config_find_team(const bridle_config *c, const char *name)
{
    for (int i = 0; i < c->n_teams; i++)
        if (strcmp(c->teams[i].name, name) == 0) return &c->teams[i];
    return NULL;
}

const key_conf *config_find_key(const bridle_config *c, const char *sha256_hex)
{
    for (int i = 0; i < c->n_keys; i++)
        if (strcmp(c->keys[i].sha256, sha256_hex) == 0) return &c->keys[i];
    return NULL;
}

int config_n_keys(const bridle_config *c)
{
    return c->n_keys;
}

const key_conf *config_key(const bridle_config *c, int i)
{
    return &c->keys[i];
}

int policy_models_from_config(const struct bridle_config *c, policy_model *out, int max)
{
    int n = config_n_models(c);
    if (n > max) n = max;
    for (int i = 0; i < n; i++) {
        const model_conf *m = config_model(c, i);
        const provider_conf *pv = m->target.provider;
        bool ollama = pv && pv->ops && pv->ops->kind && strcmp(pv->ops->kind, "ollama") == 0;
        out[i] = (policy_model){.name = m->name,
                                .price = &m->price,
                                .context_window = m->price.context_window,
                                .tier = m->price.tier,
                                /* "auto" and tiers answer chat only */
                                .enabled = m->enabled && !m->price.embedding,
                                .healthy = true,
                                .busy = false,
                                .local = ollama || m->price.tier == TIER_LOCAL,
                                .caps = m->target.caps,
                                .dialect = params_dialect_index(pv ? pv->ops : NULL)};
    }
    return n;
}

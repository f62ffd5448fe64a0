/* The configuration: one JSON file, validated whole at load, with errors
 * that name the file, the JSON path and what was expected (docs/config.md).
 * `${VAR}` / `${VAR:-default}` in any string are taken from the
 * environment; secrets never leave this module except as provider_conf
 * api_key, and are never logged. */
#ifndef BRIDLE_CONFIG_H
#define BRIDLE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "providers/provider.h"

typedef struct bridle_config bridle_config;

typedef struct limits_conf {
    int64_t max_body_bytes;
    int64_t max_upload_bytes; /* POST /v1/files */
    int64_t max_header_bytes;
    int64_t max_headers;
    int64_t read_timeout_ms;
    int64_t request_timeout_ms;
    int64_t max_connections;
} limits_conf;

/* A client-facing model: where it is served and what it costs. */
typedef struct model_conf {
    const char *name;
    bool enabled;      /* false when none of its providers is enabled */
    target target;     /* the first enabled provider */
    model_price price; /* copied from the price table or given in the file */
} model_conf;

/* A virtual model: an ordered list of candidate models. */
typedef struct route_conf {
    const char *name;
    const model_conf **candidates;
    int n_candidates;
    const model_conf *baseline; /* what savings are measured against; default: first candidate */
    bool cap_default;           /* "cap": "default": output caps only fill in a missing max_tokens
                                   (policy_output_cap); "bound" (the default): they bound it */
} route_conf;

/* Budget periods, UTC: a day from 00:00, a week from Monday 00:00, a
 * calendar month from the 1st. */
typedef enum { PERIOD_DAY, PERIOD_WEEK, PERIOD_MONTH, N_PERIODS } budget_period;

/* What a key, a team or the whole gateway may spend and how fast. 0 = no
 * limit. Money in pico-dollars. */
typedef struct spend_limits {
    int64_t budget_pusd[N_PERIODS]; /* hard budget per period (router/budget.h) */
    int64_t rpm;                    /* requests per minute (router/ratelimit.h) */
    int64_t tokens_per_hour;        /* input + output tokens per hour */
    int64_t pusd_per_hour;          /* cost per hour */
} spend_limits;

/* A team of keys ($.teams.NAME, or a row of bridle_teams). */
typedef struct team_conf {
    const char *name; /* at most 64 bytes, as recorded in the ledger */
    spend_limits lim; /* of all its keys together */
} team_conf;

/* A client or admin key ($.keys[], or a row of bridle_keys loaded by
 * router/keyring.h). Only the SHA-256 of the key is ever held. */
typedef struct key_conf {
    const char *id;
    char sha256[65];
    bool admin;                /* admin keys work on /v1/bridle/admin/ only, client keys never */
    const char *team;          /* may be NULL */
    const team_conf *team_cfg; /* the key's team (config or database), or NULL */
    spend_limits lim;
    const char *agent, *feature; /* recorded with its usage when the request names none */
    const char *const *models;   /* models or routes it may ask for; n_models 0 = any */
    int n_models;
    int64_t expires_ms; /* wall clock, ms since the epoch; 0 = never */
    bool revoked;       /* kept so that the 401 can say so */
    struct keyset *set; /* the database snapshot that owns it; NULL in the file */
} key_conf;

typedef enum { MIGRATE_APPLY, MIGRATE_CHECK, MIGRATE_OFF } migrate_mode;

/* The usage ledger's database and local spool (db/ledger.h). */
typedef struct database_conf {
    const char *url; /* "" = no database: usage is not recorded (a warning at start) */
    const char *spool_dir;
    int64_t spool_max_bytes;
    migrate_mode migrate;   /* at serve start: apply pending migrations, refuse to start, or skip */
    int64_t retention_days; /* 0 = keep */
    int64_t partitions_ahead_days;
    int64_t flush_interval_ms;
    int64_t spool_flush_ms; /* the spool's fdatasync within N ms of an append; 0 = at once */
    int64_t batch_max;
    int64_t spend_refresh_ms;   /* unused: replaced by budgets.sync_ms (accepted in old configs) */
    int64_t keys_refresh_ms;    /* how often bridle_keys changes are looked for (<= 2 s) */
    int64_t heartbeat_ms;       /* instance heartbeat in bridle_instances (rate-limit shares) */
    int64_t rollup_interval_ms; /* the rollup step (db/rollup.h); 0 = not in this gateway */
    int64_t rollup_batch;       /* bridle_rollup's limit per call */
    int64_t rollup_retention_days_5m, rollup_retention_days_1h,
        rollup_retention_days_1d; /* 0 = keep */
} database_conf;

/* $.budgets: the gateway-wide budget and how budget leases behave
 * (router/budget.h). */
typedef struct budgets_conf {
    spend_limits total;     /* only budget_pusd is used: the whole gateway's budgets */
    int64_t lease_ttl_ms;   /* a dead instance's held budget comes back after this */
    int64_t sync_ms;        /* leases are synced (renewed, returned, read back) this often */
    int64_t lease_max_pusd; /* the largest slice taken at once */
    bool fail_open;         /* budgets cannot be leased (database down): admit instead of 503 */
    int64_t orphan_ttl_ms;  /* an expired lease's unshipped part stays held this long */
} budgets_conf;

/* $.alerts: budget alerts (router/alerts.h). */
typedef struct alerts_conf {
    const char *webhook_url; /* "" = none */
    int thresholds_bp[8];    /* shares in basis points (7500 = 75 %), ascending */
    int n_thresholds;
    int64_t poll_ms;          /* how often undelivered alerts are claimed */
    int64_t claim_timeout_ms; /* a claim not delivered within this is taken over */
} alerts_conf;

/* How failures are retried and failing targets rested (router/retry.h,
 * router/breaker.h). */
typedef struct resilience_conf {
    bool retries;         /* retry the same target after a backoff / Retry-After */
    int64_t max_attempts; /* attempts per target */
    int64_t max_wait_ms;  /* a longer Retry-After fails over (or fails) instead of waiting */
    int64_t backoff_base_ms, backoff_cap_ms;
    bool breaker;                /* circuit breaker per provider endpoint and model */
    int64_t breaker_failures;    /* consecutive failures that open it */
    int64_t breaker_open_ms;     /* first open period (doubles on repeated trips) */
    int64_t breaker_open_max_ms; /* the cap of that doubling */
    bool coalesce; /* identical deterministic requests in flight share one upstream call */
} resilience_conf;

/* Idempotency-Key handling (db/idem.h); on when a database is configured. */
typedef struct idempotency_conf {
    bool wait;               /* concurrent duplicates wait for the first (else 409 at once) */
    int64_t retention_hours; /* a stored answer is replayed this long */
    int64_t connections;     /* PostgreSQL connections for the claims */
} idempotency_conf;

/* The response cache (router/cache.h, docs/config.md "cache"). */
typedef struct cache_conf {
    bool enabled;
    int64_t max_bytes; /* memory per process, for answers and their keys */
    int64_t ttl_s;     /* how long an answer is replayed (per task or route below) */
    bool team_scope;   /* "scope": "team": a team's keys share answers; else each key its own */
    bool shared;       /* a second level in PostgreSQL that the gateways share (db/cache_store.h) */
    bool shared_logged; /* its table LOGGED (survives a crash of PostgreSQL); UNLOGGED by default */
    int64_t shared_max_bytes;
    int64_t shared_timeout_ms; /* a lookup there answers within this, or is a miss */
} cache_conf;

/* Deadlines for one level of the "timeouts" section; 0 = not set here. */
typedef struct timeout_conf {
    int64_t connect_ms, first_byte_ms, total_ms;
} timeout_conf;

/* The deadlines one client request gets: each field from the most specific
 * level that sets it (timeouts.tasks.TASK, then timeouts.routes.ROUTE, then
 * timeouts.default). The total covers every attempt and falls back to
 * limits.request_timeout_ms; connect and first byte apply per attempt and
 * fall back to the provider's own (0 here). The *_from strings name the
 * setting that decided, for error messages ("timeouts.tasks.x.total_ms"). */
typedef struct request_timeouts {
    int64_t total_ms, connect_ms, first_byte_ms;
    const char *total_from, *connect_from, *first_byte_from; /* NULL when 0 above */
} request_timeouts;

/* Loads and validates FILE. On error returns NULL with a message like
 * "FILE: $.providers.x.kind: expected one of openai, anthropic, gemini,
 * ollama (got \"opnai\")" in err. */
bridle_config *config_load(const char *path, char *err, size_t errlen);
void config_free(bridle_config *c);

const char *config_listen(const bridle_config *c);
const char *config_log_level(const bridle_config *c);
/* The file the config was loaded from. */
const char *config_path(const bridle_config *c);
/* A reload (SIGHUP, server/serve.c): the settings of nw that take effect
 * only at a restart (listen, workers, limits, database, idempotency's
 * store, the budget leases' settings, alerts, the shared cache level) are
 * set back to old's, and each one that differed is logged (with `log`) as
 * needing a restart, by its JSON path (never its value). Returns how many
 * differed. Everything else in nw applies to the requests that start
 * after the reload. */
int config_keep_restart_settings(bridle_config *nw, const bridle_config *old, bool log);
/* "workers": how many worker processes serve (1 by default; 0 = "auto",
 * one per core the process may run on). */
int config_workers(const bridle_config *c);
/* A worker's own spool directory (server/serve.c): no two processes ever
 * share a spool. */
void config_set_spool_dir(bridle_config *c, const char *dir);
/* log_format "json": every log line a JSON object (lib/log.h). */
bool config_log_json(const bridle_config *c);
/* access_log: one line per request (router/run.c), never a secret. */
bool config_access_log(const bridle_config *c);
const limits_conf *config_limits(const bridle_config *c);
const database_conf *config_database(const bridle_config *c);
const resilience_conf *config_resilience(const bridle_config *c);
const idempotency_conf *config_idempotency(const bridle_config *c);
const budgets_conf *config_budgets(const bridle_config *c);
const cache_conf *config_cache(const bridle_config *c);
/* batches: the local queue that runs batch lines (server/batches.h). */
typedef struct batches_conf {
    int concurrency;      /* lines in flight per process */
    int busy_concurrency; /* ... while live requests are in flight */
    int yield_above;      /* no new line while more live requests than this are in flight */
    /* the provider batch path (router/pbatch.h): */
    int64_t submit_after_ms; /* a line routed to a batch provider waits at most this long for
                                others of its batch to go with it */
    int max_lines;           /* lines per provider batch, at most (OpenAI's limit: 50,000) */
    int64_t poll_min_ms, poll_max_ms; /* a provider batch is polled after poll_min_ms, then
                                         twice as late each time up to poll_max_ms */
} batches_conf;
const batches_conf *config_batches(const bridle_config *c);

/* Whether GET /metrics answers a client at peer (metrics.allow). */
struct sockaddr;
bool config_metrics_allowed(const bridle_config *c, const struct sockaddr *peer);
/* How long an answer to a request of `task` (may be NULL) to `route` (a
 * name in $.routes, "auto", "tier:NAME", or NULL) is cached, in seconds:
 * cache.tasks.TASK, else cache.routes.ROUTE, else cache.ttl_s. 0: never. */
int64_t config_cache_ttl_s(const bridle_config *c, const char *task, const char *route);
/* Whether the model at index i (target.index) answers deterministically
 * when a request sets no temperature (cache.deterministic_models). */
bool config_cache_deterministic_model(const bridle_config *c, int i);
const alerts_conf *config_alerts(const bridle_config *c);
/* The deadlines for a request of `task` (may be NULL) to `route` (a name in
 * $.routes, or NULL). */
void config_request_timeouts(const bridle_config *c, const char *task, const char *route,
                             request_timeouts *out);
/* The routing policy built from $.routing (router/policy.h); its model
 * table is config_model() order. NULL when the file has no "routing"
 * section and the default tiers do not fit its models. */
const struct policy *config_policy(const bridle_config *c);
/* The raw "routing" object of the file (NULL when absent). */
json_object *config_routing_json(const bridle_config *c);

int config_n_providers(const bridle_config *c);
const provider_conf *config_provider(const bridle_config *c, int i);
bool config_provider_enabled(const bridle_config *c, int i);

int config_n_models(const bridle_config *c);
const model_conf *config_model(const bridle_config *c, int i);
const model_conf *config_find_model(const bridle_config *c, const char *name);

int config_n_routes(const bridle_config *c);
const route_conf *config_route(const bridle_config *c, int i);
const route_conf *config_find_route(const bridle_config *c, const char *name);

int config_n_teams(const bridle_config *c);
const team_conf *config_team(const bridle_config *c, int i);
const team_conf *config_find_team(const bridle_config *c, const char *name);

/* The key whose SHA-256 hex equals sha256_hex, or NULL. */
const key_conf *config_find_key(const bridle_config *c, const char *sha256_hex);
int config_n_keys(const bridle_config *c);
/* The file's key i (0 <= i < config_n_keys). */
const key_conf *config_key(const bridle_config *c, int i);

struct policy_model;
/* Fills out[0..max) from a loaded config: name, price, context window and
 * tier from the price card; enabled from the config; healthy, not busy;
 * local when the provider is of kind "ollama" or the tier is local.
 * Returns the count. */
int policy_models_from_config(const bridle_config *c, struct policy_model *out, int max);

#endif

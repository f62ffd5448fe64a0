/* Rate limits: requests per minute, tokens per hour and cost per hour, per
 * client key and per team (a team's limit covers all its keys together).
 *
 * Each limit is a sliding window of 61 buckets: one-second buckets for
 * requests (the last 60 s plus the current second), one-minute buckets for
 * tokens and cost (the last 60 min plus the current minute). Counting the
 * whole oldest bucket is conservative: whatever happened in any 60 s (60
 * min) window ending now is inside the 61 buckets, so no sliding window
 * ever holds more than the limit.
 *
 * Across gateways sharing a database each instance enforces its share,
 * floor(limit / N), N the live instances (db/instances.h); shares sum to at
 * most the limit. Without a database N = 1.
 *
 * Tokens and cost are unknown until the answer: admission reserves an upper
 * bound (ratelimit_admit) and settlement corrects it to the actual
 * (ratelimit_settle); a request that fails gives back what it reserved.
 * Only admitted requests count toward requests per minute.
 *
 * State per key and team is created on first use, in a hash table, and
 * freed once idle for over an hour (its windows then are empty). Pure:
 * every call takes the time, so tests drive it with a fake clock. */
#ifndef BRIDLE_RATELIMIT_H
#define BRIDLE_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/buf.h"
#include "router/config.h"

typedef enum { RL_REQUESTS, RL_TOKENS, RL_COST, RL_N_KINDS } rl_kind;

/* The most key and team states held at once (about 1.5 KB each). Past it
 * a new key or team goes unlimited until idle ones are freed (logged). */
#define RL_MAX_ENTRIES 65536

typedef struct ratelimiter ratelimiter;
struct rl_entry;

/* What an admitted request holds: its reservation in its key's and team's
 * windows. Zeroed memory is "nothing held". */
typedef struct rl_hold {
    struct rl_entry *e[2]; /* the key's, the team's (NULL: no limit there) */
    int64_t tokens, pusd;  /* reserved */
    int64_t minute;        /* the bucket they were reserved in */
    bool held;
} rl_hold;

/* Why a request was refused. */
typedef struct rl_refusal {
    rl_kind kind;
    bool team;        /* the team's limit (else the key's) */
    bool too_large;   /* the request alone exceeds this instance's share: retrying is useless */
    const char *name; /* the key's id or the team's name */
    int64_t limit;    /* the configured (whole) limit */
    int64_t used;     /* in the window, scaled to the whole gateway (used here × N) */
    int64_t asked;    /* what this request needs (1, estimated tokens or pico-dollars) */
    int64_t retry_ms; /* until the window frees enough room */
    int n;            /* instances sharing the limit */
} rl_refusal;

/* The x-ratelimit-* figures for one kind (requests, tokens). */
typedef struct rl_status {
    bool has[RL_N_KINDS];
    int64_t limit[RL_N_KINDS];     /* the configured whole limit (the tighter of key and team) */
    int64_t remaining[RL_N_KINDS]; /* this instance's room × N */
    int64_t reset_ms[RL_N_KINDS];  /* until the oldest counted bucket leaves the window */
} rl_status;

ratelimiter *ratelimit_new(void);
void ratelimit_free(ratelimiter *rl);

/* N: the live gateways sharing the limits (>= 1). */
void ratelimit_set_instances(ratelimiter *rl, int n);
int ratelimit_instances(const ratelimiter *rl);

static inline bool rl_limits_any(const spend_limits *l)
{
    return l->rpm > 0 || l->tokens_per_hour > 0 || l->pusd_per_hour > 0;
}
/* Whether any rate limit applies to key k (its own or its team's): the only
 * cost for a key without limits. */
static inline bool ratelimit_applies(const key_conf *k)
{
    return k && (rl_limits_any(&k->lim) || (k->team_cfg && rl_limits_any(&k->team_cfg->lim)));
}

/* Admits one request of key k at now_ms that may use up to est_tokens
 * tokens and cost up to est_pusd: returns true and fills h (reserved in
 * every window of the key and its team), or false and fills *why (nothing
 * reserved). Among several limits exceeded, *why names the one that frees
 * last. A state that cannot be allocated admits (logged once). */
bool ratelimit_admit(ratelimiter *rl, const key_conf *k, int64_t now_ms, int64_t est_tokens,
                     int64_t est_pusd, rl_hold *h, rl_refusal *why);

/* Replaces h's reservation by what the request used (0, 0 gives it all
 * back) and lets go of h. A no-op when nothing is held. */
void ratelimit_settle(ratelimiter *rl, rl_hold *h, int64_t now_ms, int64_t tokens, int64_t pusd);

/* The figures for the x-ratelimit-* headers of key k (h may be NULL or not
 * held: the states are looked up). Kinds without a limit have has[] false. */
void ratelimit_status(ratelimiter *rl, const key_conf *k, const rl_hold *h, int64_t now_ms,
                      rl_status *st);

/* Appends the x-ratelimit-* header lines for st (requests and tokens). */
void ratelimit_add_headers(const rl_status *st, buf *head);

/* A duration as OpenAI's headers write it (Go's format, to the ms): "0s",
 * "120ms", "1.2s", "6m0s", "1h0m0s". */
void ratelimit_format_duration(int64_t ms, char *out, size_t n);

/* Frees the states idle for over an hour that nothing holds. Admission
 * calls it once a minute. */
void ratelimit_sweep(ratelimiter *rl, int64_t now_ms);
/* States held. */
int ratelimit_entries(const ratelimiter *rl);

/* For /v1/bridle/health: {"instances":N,"entries":E,"windows":[{"scope":
 * "key"|"team","id":..,"requests":{"limit","share","used"},"tokens":{..},
 * "cost_pusd":{..}}, ...]} (at most `max` windows). */
void ratelimit_health_json(ratelimiter *rl, int64_t now_ms, int max, buf *out);

#endif

/* The response cache's shared level in PostgreSQL (migration 0010): the
 * gateways sharing a database find each other's answers. router/cache.h is
 * the first level, in memory; a miss there asks here, within a short
 * timeout, and a stored answer is written to both.
 *
 * Queries run on one non-blocking libpq connection (db/pgconn) on the event
 * loop, one at a time, from a bounded queue. A lookup that does not come
 * back within its timeout, or finds the database away, is a miss: the cache
 * never fails a request. Writes are fire and forget. Callbacks always run
 * from the loop, never inside the call that started the lookup. */
#ifndef BRIDLE_CACHE_STORE_H
#define BRIDLE_CACHE_STORE_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cache_store cache_store;
typedef struct cache_store_op cache_store_op;

/* What an answer used (providers/pricing.h's usage_record, which this
 * layer does not see). */
typedef struct cache_store_usage {
    int64_t input_uncached, cache_read, cache_write_5m, cache_write_1h, output, reasoning;
    bool exact, estimated;
} cache_store_usage;

/* A stored answer; valid during the callback. */
typedef struct cache_store_row {
    const char *body;
    size_t len;
    const char *model; /* the client-facing model that answered */
    cache_store_usage usage;
    int64_t ttl_left_ms; /* until it expires */
} cache_store_row;

/* row NULL: not there, expired, or not known in time. */
typedef void (*cache_store_fn)(void *ctx, const cache_store_row *row);

typedef struct cache_store_options {
    const char *database_url;
    int timeout_ms;    /* a lookup's answer must come within this; default 50 */
    int64_t max_bytes; /* the table is trimmed to this (keys and bodies), oldest first */
    bool logged;       /* the table is made LOGGED (kept through a crash of PostgreSQL, and on
                          replicas) at each connection; else UNLOGGED, the default */
} cache_store_options;

cache_store *cache_store_new(struct event_base *base, const cache_store_options *opt);
void cache_store_free(cache_store *s);

/* Looks key (NUL-terminated text) up. fn runs once, from the loop, unless
 * cancelled first. NULL only on OOM. */
cache_store_op *cache_store_get(cache_store *s, const char *key, cache_store_fn fn, void *ctx);
/* The caller no longer wants op's callback. */
void cache_store_cancel(cache_store_op *op);
/* Stores (or replaces) the answer under key for ttl_ms. Fire and forget:
 * dropped when the queue is full or the database away. */
void cache_store_put(cache_store *s, const char *key, const char *body, size_t len,
                     const char *model, const cache_store_usage *u, int64_t ttl_ms);

typedef struct cache_store_stats {
    int64_t lookups, hits, misses, timeouts, stores, dropped, errors;
} cache_store_stats;
cache_store_stats cache_store_get_stats(const cache_store *s);

#endif

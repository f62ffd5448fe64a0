/* The outbound HTTP engine: the only code that touches libcurl. One curl
 * multi handle driven by the process's event_base (socket + timer
 * callbacks, curl's docs/examples/multi-event.c shape), a pool of reused
 * easy handles, a cache of parsed URLs, connection reuse and HTTP/2
 * multiplexing where the upstream offers it. TLS is verified; redirects are
 * not followed.
 *
 * Callbacks run on the loop. on_headers and on_data run inside curl's own
 * callbacks: they may call engine_call_cancel() (the transfer is then
 * aborted safely) but must not start new calls; start retries from on_done.
 * After on_done, or after engine_call_cancel() returns, the call is gone and
 * no callback fires again. */
#ifndef BRIDLE_ENGINE_H
#define BRIDLE_ENGINE_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "providers/provider.h"

typedef struct engine engine;
typedef struct engine_call engine_call;

typedef struct engine_result {
    bool ok;               /* the transfer completed (any HTTP status) */
    bool timed_out;        /* a connect / first-byte / idle / total limit fired */
    bool first_byte_late;  /* the one that fired was the first-byte limit */
    const char *what;      /* when !ok: what failed, in words */
    int status;            /* HTTP status, 0 if none was received */
    int64_t first_byte_us; /* from start to the first response byte, -1 if none */
} engine_result;

typedef struct engine_callbacks {
    /* The status line and all headers have arrived. */
    void (*on_headers)(void *ctx, int status, const upstream_headers *hs);
    /* A piece of the body. */
    void (*on_data)(void *ctx, const char *data, size_t len);
    /* The call ended; the call object is freed right after this returns. */
    void (*on_done)(void *ctx, const engine_result *r);
} engine_callbacks;

typedef struct engine_stats {
    int64_t started, completed, failed, in_flight;
} engine_stats;

/* max_connects: idle upstream connections kept per shard (a curl multi
 * handle of at most 128 calls), at most 128; <= 0: 128. */
engine *engine_new(struct event_base *base, long max_connects);
void engine_free(engine *e);

/* The client request's own limits for one call; 0 = the provider's. */
typedef struct engine_limits {
    int64_t deadline_ms;   /* caps the total further: the time the client request has left */
    int64_t connect_ms;    /* replaces the provider's connect timeout */
    int64_t first_byte_ms; /* replaces the provider's first-byte timeout */
} engine_limits;

/* Starts a call. `req` is copied as needed (the caller may free it after
 * this returns). Timeouts come from the provider, overridden by `lim` (may
 * be NULL). Returns NULL if curl refused the handle (then nothing fires). */
engine_call *engine_call_start(engine *e, const upstream_request *req, const provider_conf *p,
                               const engine_limits *lim, const engine_callbacks *cb, void *ctx);

/* Aborts the call; no callback fires after this returns. */
void engine_call_cancel(engine_call *c);

engine_stats engine_get_stats(const engine *e);

#endif

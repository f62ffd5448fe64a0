/* One request's life, whichever way it came in (/v1/chat/completions,
 * /v1/messages and /v1/embeddings today; batch lines next): the run.
 *
 *   NEW -> PLANNING -> ADMITTING -> CALLING <-> WAITING
 *                                  CALLING -> RELAYING (a stream is read)
 *          any of these -> SETTLING -> DONE | FAILED
 *          any of these -> DONE | FAILED (the client left, or nothing to settle)
 *
 * PLANNING parses the body into the canonical request (router/canon.h) and
 * makes the plan: the candidates in order (a named model, a route's list,
 * or the routing policy's choice for "auto" / "tier:NAME"), the output cap
 * and the request's deadlines.
 * ADMITTING walks the admission steps in order (run.c: admit_steps[]); a
 * step lets the run go on, waits (and resumes it later), or answers it.
 * CALLING makes one attempt on the current candidate through the engine;
 * WAITING sits out a backoff or a Retry-After; after a failure the run
 * retries, fails over along the plan, or gives up; a cheaper tier's answer
 * that fails the cascade's checks escalates to the tier above.
 * SETTLING walks the settlement steps (run.c: settle_steps[]: the usage
 * event, the idempotency store, ...) before the answer's last byte goes to
 * the sink, so a client never holds an answer whose record could be lost:
 * the usage event step waits for the ledger's spool write at the end of
 * the loop pass (one pwrite for the pass's events).
 *
 * Every transition goes through one setter, which asserts that it is in the
 * table above. Every exit goes through run_finish(), which gives back
 * everything the run holds: its provider call slot, its breaker ticket (a
 * probe), a granted retry not yet made, its idempotency claim, its
 * coalescing entry and followers.
 *
 * The run is the only caller of the provider engine. It answers through a
 * sink, the way in's three functions: head (status and header lines), chunk
 * (bytes) and done (the outcome). */
#ifndef BRIDLE_RUN_H
#define BRIDLE_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "router/config.h"
#include "router/router.h"

typedef struct run run;

typedef enum {
    RUN_NEW,
    RUN_PLANNING,
    RUN_ADMITTING,
    RUN_CALLING,
    RUN_WAITING,
    RUN_RELAYING,
    RUN_SETTLING,
    RUN_DONE,
    RUN_FAILED,
} run_state;

/* How a run ended, for the sink's done. */
typedef struct run_outcome {
    run_state final; /* RUN_DONE or RUN_FAILED */
    int status;      /* the HTTP status the client got (499: it left first) */
    const char *why; /* in words, for logs */
} run_outcome;

struct run_deferral;
struct usage_event;

/* The way in. Called on the loop, never after done. head comes once, before
 * any chunk; with stream false exactly one chunk (the whole body) follows,
 * with stream true any number. done comes exactly once: after the last
 * chunk, or without head when the client left (run_cancel) -- possibly
 * inside run_start() or run_cancel(). */
typedef struct run_sink {
    /* `lines` are header lines ("name: value\r\n"); the sink may take them
     * (buf_reset after use). content_type is for the whole answer. */
    void (*head)(void *ctx, int status, const char *content_type, buf *lines, bool stream);
    void (*chunk)(void *ctx, const char *data, size_t len);
    void (*done)(void *ctx, const run_outcome *o);
    /* Optional: writes an error body in the way in's own shape; NULL means
     * OpenAI's error JSON (provider_openai_error_json). */
    void (*error_body)(void *ctx, buf *out, const char *type, const char *code, const char *param,
                       const char *message);
    /* Optional, for run_input.batch_defer: the run hands the request back
     * for a provider's batch API (then done follows with status 202). */
    void (*defer)(void *ctx, const struct run_deferral *d);
} run_sink;

/* A batch line handed back for its provider's batch API. Valid during
 * the defer call. */
typedef struct run_deferral {
    const target *t;  /* where it goes */
    const char *body; /* the provider's request body for it (never streamed) */
    size_t len;
    const struct usage_event *ev; /* its usage event so far: who, what, how it was routed;
                                     usage, cost and status come with its answer */
    const char *baseline;         /* the model its savings are measured against, or NULL */
} run_deferral;

/* What the way in knows of the request. Strings must stay valid until done. */
typedef struct run_input {
    const char *body; /* the request body as received */
    size_t body_len;
    const char *what; /* method and path, for the idempotency fingerprint */
    const key_conf *key;
    const char *request_id;             /* "req_" + 24 hex digits */
    const char *task, *agent, *feature; /* x-bridle-* headers, or NULL */
    const char *tier;                   /* x-bridle-tier, or NULL */
    const char *idempotency_key;        /* the Idempotency-Key header, or NULL */
    int idempotency_keys;               /* how many were sent */
    const char *cache_control;          /* the Cache-Control header, or NULL */
    const char *cache_opt;              /* x-bridle-cache: "on" / "off", or NULL */
    bool messages_api; /* body is the canonical form of a Messages request (router/messages.h) */
    const char *anthropic_beta; /* ... and its anthropic-beta header, or NULL */
    const char *batch_id;       /* a batch line: its batch (on the usage event), or NULL */
    bool budget_held;           /* a batch line whose batch holds its budget (migrations/0014): the
                                   run reserves nothing; its usage event settles against the batch's */
    bool batch_defer; /* a batch line that may go to its provider's batch API (sink.defer) */
    bool embeddings;  /* POST /v1/embeddings (embedding models, never streamed), else chat */
} run_input;

/* Starts a run. The sink hears from it until done. Returns the run (valid
 * until done has been called; for run_cancel), or NULL when done has already
 * been called (a bad body, no plan, an answer without waiting, or no memory:
 * then with a 503 and no head). */
run *run_start(router *rt, const run_input *in, const run_sink *sink, void *ctx);

/* Plans in's body as run_start would (parse, the key's plan: candidates,
 * output cap, thinking budget) without starting anything, and sets *pusd
 * to the most it can cost: the budget reservation's rule for the whole
 * plan (the dearest candidate, or with the cascade their sum), what a
 * batch reserves for the line. -1 with err: the request would be refused
 * before any call (a bad body, an unknown model, ...). */
int run_estimate_pusd(router *rt, const run_input *in, int64_t *pusd, char *err, size_t errlen);
/* A batch line's worst case under key, what its batch reserves for it
 * (run_estimate_pusd of a POST /v1/chat/completions; messages_api: a
 * translated Messages request): 0 for a line the run would refuse before
 * any call (an unknown model, ...), which costs nothing. */
int64_t run_batch_line_pusd(router *rt, const key_conf *key, const char *body, size_t len,
                            bool messages_api);

/* The client left: the provider call is cancelled, the usage event says so
 * (a provider may still bill what it did), everything held is given back,
 * and done is called before this returns. A no-op once done was called. */
void run_cancel(run *r);

run_state run_get_state(const run *r);
const char *run_state_name(run_state s);
/* Whether the table above allows from -> to. */
bool run_transition_ok(run_state from, run_state to);

/* The ledger's spool write is done (ledger_set_on_written, set by
 * router_new; ctx is the router): the runs whose answers waited for it go on. */
void run_spool_written(void *ctx);

/* An event's token counts from a usage record (the run's and the provider
 * batch path's events alike). */
void run_event_usage(struct usage_event *ev, const usage_record *u);

/* Frees the router's pool of finished runs (router_free calls it). */
void run_pool_free(router *rt);

#endif

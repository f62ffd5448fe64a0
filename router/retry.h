/* Retries: backoff with full jitter, the retry-or-fail-over decision, and the
 * retry budget. Pure: time and randomness are passed in by the caller.
 * Sources: reliability.md §2 (AWS "Exponential Backoff and Jitter", Envoy
 * router and retry_budget, gRPC A6, SRE ch. 21, §2.5 gateway policy).
 * Not thread-safe: a retry_budget lives in one event loop. */
#ifndef BRIDLE_RETRY_H
#define BRIDLE_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "providers/provider.h"

/* ------------------------------------------------------------ backoff */

/* Full jitter: uniform in [0, min(cap_ms, base_ms × 2^attempt)), drawn from
 * `rnd` (a uniform 64-bit value) by a 128-bit multiply, so it is unbiased to
 * within 2^-64 per value. `attempt` 0 is the first retry. Overflow-safe for any
 * attempt (large ones saturate at cap_ms); a negative attempt counts as 0.
 * Returns 0 when the bound is <= 0 (base or cap <= 0). */
int64_t retry_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t rnd);

/* ------------------------------------------------------------ decision */

typedef enum {
    RETRY_GIVE_UP = 0, /* return the error to the client */
    RETRY_SAME_AFTER,  /* try the same target again after wait_ms */
    RETRY_FAIL_OVER,   /* try the next candidate now */
} retry_action;

/* What is known after one failed attempt. Zero-initialise, then set at least
 * cls, attempt, retry_after_ms, deadline_left_ms and has_alternative; the
 * other fields' zeros mean the defaults named. */
typedef struct retry_input {
    error_class cls;          /* from the provider's classify_error */
    bool quota_exhausted;     /* insufficient_quota / billing: waiting won't help */
    int attempt;              /* attempts made on this target so far, this one included (>= 1) */
    int max_attempts;         /* per-target cap on attempts; <= 0 means 3 (SRE ch. 21) */
    int ambiguous_retries;    /* retries this request already made after an AMBIGUOUS error */
    int64_t retry_after_ms;   /* advised by the upstream (Retry-After etc.); -1 none */
    int64_t deadline_left_ms; /* time left before the client's deadline; INT64_MAX none */
    int64_t min_attempt_ms;   /* an attempt needs at least this much time; 0 = any */
    int64_t max_wait_ms;      /* longest wait worth sitting out; <= 0 means 60000 */
    int64_t backoff_base_ms;  /* full jitter base; <= 0 means 250 */
    int64_t backoff_cap_ms;   /* full jitter cap; <= 0 means 8000 */
    bool streamed;            /* a byte already reached the client: committed */
    bool has_alternative;     /* another candidate may be tried */
    bool budget_exhausted;    /* !retry_budget_would_allow() for this target */
    uint64_t rnd;             /* uniform random value for the backoff */
} retry_input;

typedef struct retry_decision {
    retry_action action;
    int64_t wait_ms;    /* RETRY_SAME_AFTER: how long to wait; else 0 */
    const char *reason; /* static text for logs, never NULL */
} retry_decision;

/* The rules, first match wins:
 *  1. no error (ERRCLASS_NONE)                        -> GIVE_UP
 *  2. streamed (a byte reached the client)            -> GIVE_UP, never retry
 *  3. deadline_left_ms <= min_attempt_ms (no time)    -> GIVE_UP
 *  4. quota_exhausted (whatever its class)           -> FAIL_OVER, else GIVE_UP
 *  5. FATAL (400/401/403/404, policy, too long)       -> GIVE_UP
 *  6. AMBIGUOUS with ambiguous_retries >= 1           -> GIVE_UP (at most one
 *     retry, same target or another, per request)
 *  Then, for RETRYABLE and a first AMBIGUOUS, retrying the same target is
 *  considered; it is refused — and the answer is FAIL_OVER when
 *  has_alternative, else GIVE_UP — when:
 *  7. attempt >= max_attempts (AMBIGUOUS: attempt >= min(max_attempts, 2))
 *  8. retry_after_ms > max_wait_ms (pass the upstream's 429/503 through
 *     rather than sleep)
 *  9. budget_exhausted
 * 10. wait + min_attempt_ms >= deadline_left_ms (the attempt would start
 *     too late: never schedule one past the deadline), where
 *     wait = retry_after_ms when >= 0, else
 *            retry_backoff_ms(attempt - 1, base, cap, rnd), clamped to max_wait_ms.
 * 11. otherwise                                      -> RETRY_SAME_AFTER(wait)
 * `in` and `out` must not be NULL. */
void retry_decide(const retry_input *in, retry_decision *out);

/* "give_up", "retry_same", "fail_over"; "unknown" otherwise. */
const char *retry_action_name(retry_action a);

/* ------------------------------------------------------------ budget */

/* Retries stay under a ratio of client requests over a sliding window, with a
 * floor so a quiet target can still retry (SRE ch. 21's 10%, Envoy's
 * retry_budget and min_retry_concurrency). With R client requests and T
 * retries counted in the window, a retry is allowed when
 *     (T + 1) × 100 <= max(R × ratio_pct, min_per_s × window_ms / 10)
 * i.e. T + 1 <= max(ratio·R, floor), floor = min_per_s × window seconds.
 * The window is `buckets` buckets of window_ms / buckets ms; bucket i holds
 * the events at t with floor(t / bucket_ms) == i; the window at t is the
 * current bucket plus the buckets - 1 before it. O(1) memory.
 * Over an outage where every attempt fails and every failure wants a retry,
 * upstream attempts ÷ client requests over a window is at most
 * 1 + max(ratio, floor ÷ requests) (plus up to one bucket's share at bucket
 * edges): 1.10 once R × ratio passes the floor (300 requests per 10 s with
 * the defaults). Keep one budget per target (provider endpoint). */
typedef struct retry_budget retry_budget;

#define RETRY_BUDGET_MAX_BUCKETS 64

typedef struct retry_budget_config {
    int ratio_pct;     /* 10; 0..1000 */
    int64_t window_ms; /* 10000; >= buckets */
    int buckets;       /* 10; 1..RETRY_BUDGET_MAX_BUCKETS */
    int min_per_s;     /* floor, retries per second of window; 3; >= 0 */
} retry_budget_config;

typedef struct retry_budget_snapshot {
    int64_t requests; /* client requests in the window */
    int64_t retries;  /* retries granted in the window */
    int64_t denied;   /* retries refused since retry_budget_new() */
} retry_budget_snapshot;

/* The defaults above. */
retry_budget_config retry_budget_config_default(void);

/* A new, empty budget. `cfg` NULL means the defaults; the config is copied.
 * Returns NULL when a field is out of bounds, or on OOM. */
retry_budget *retry_budget_new(const retry_budget_config *cfg);

/* Frees the budget. NULL is a no-op. */
void retry_budget_free(retry_budget *rb);

/* Counts one client request (its first attempt on this target). */
void retry_budget_note_request(retry_budget *rb, int64_t now_ms);

/* Would a retry be allowed now? Changes nothing. */
bool retry_budget_would_allow(const retry_budget *rb, int64_t now_ms);

/* If a retry is allowed now, counts it and returns true; else counts a denial
 * and returns false. */
bool retry_budget_allow(retry_budget *rb, int64_t now_ms);

/* Gives back a retry granted by retry_budget_allow() that was never made
 * (its request ended while it waited); the grant's bucket may have passed,
 * then the current one gives it back, never below zero. */
void retry_budget_refund(retry_budget *rb, int64_t now_ms);

/* Fills `*out` as of now_ms. */
void retry_budget_get_snapshot(const retry_budget *rb, int64_t now_ms, retry_budget_snapshot *out);

#endif

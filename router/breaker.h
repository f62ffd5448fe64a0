/* Circuit breaker for one upstream target: a (provider endpoint, model) pair.
 * A pure state machine: no clock, no randomness, no I/O of its own. Every
 * call takes the current time (`now_ms`, a monotonic clock that never goes
 * backwards), and the one random draw (the jitter of an open period) is passed
 * in by the caller, so a test replays any history exactly.
 * Sources: reliability.md §1.6 (Envoy outlier detection, resilience4j,
 * Hystrix); this module follows the numbers of issue 6.
 *
 * States and transitions
 *
 *   CLOSED     every request is allowed (unless paused, below). The breaker
 *              counts "breaker failures" (5xx, timeouts, connect/TLS errors,
 *              resets, a stream cut before completion) and successes. It trips
 *              to OPEN when, on recording a failure, either
 *                - `consecutive_failures` failures in a row have been recorded
 *                  (a success resets the run; default 5), or
 *                - the sliding window holds >= `window_min_calls` calls
 *                  (successes + failures) of which >= `failure_rate_pct` percent
 *                  are failures (defaults 20 calls, 50%).
 *              The window is `window_buckets` buckets of
 *              window_ms / window_buckets ms each (default 10 × 1 s); bucket
 *              i holds the calls recorded at times t with
 *              floor(t / bucket_ms) == i, and the window at time t is the
 *              current bucket plus the window_buckets - 1 before it. O(1) memory.
 *   OPEN       no request is allowed. The open period is
 *                w = min(open_max_ms, open_base_ms × 2^(consecutive_opens - 1))
 *              then jittered uniformly within ±jitter_pct percent of w (so at
 *              the cap, breakers that tripped together still spread out):
 *                wait = w - j + (rnd mod (2j + 1)),  j = w × jitter_pct / 100.
 *              Defaults: 5 s base, ×2 per consecutive open, 60 s cap, ±20%.
 *              When now >= the end of the open period, the breaker is HALF_OPEN
 *              (lazily: nothing needs to be called at that instant).
 *   HALF_OPEN  at most `half_open_probes` (default 1) probe requests are
 *              allowed at a time; others are refused. A probe SUCCESS closes
 *              the breaker (consecutive run and window cleared); a probe
 *              FAILURE opens it again with consecutive_opens + 1 (a longer
 *              wait); a probe NEUTRAL or ABANDONED frees its slot and decides
 *              nothing.
 *
 * consecutive_opens counts trips since the breaker was last stable: when it
 * trips from CLOSED after having been CLOSED for >= `stable_ms` (default 60 s)
 * since its last close, the count restarts, so the wait is the base again.
 * opens_total counts every trip, forever.
 *
 * Outcomes. SUCCESS: a 2xx (or a stream that completed). FAILURE: a breaker
 * failure as above. NEUTRAL: 4xx and 429: the endpoint answered, so it is
 * neither healthy nor sick; NEUTRAL never trips, never resets the consecutive
 * run and is not a call in the window. ABANDONED: the result is unknown (the
 * client went away, the gateway cancelled): counts for nothing, frees a probe
 * slot.
 *
 * Tickets. breaker_allow() hands out a ticket; the outcome of that request is
 * recorded with it. A ticket belongs to one period: the CLOSED period it was
 * issued in, or (for a probe) the OPEN/HALF_OPEN period. An outcome whose
 * ticket is from an earlier period is ignored: a request admitted before a
 * trip cannot close a breaker, re-open it, or free a probe slot that a later
 * probe holds. So "at most half_open_probes probes at a time" holds whatever
 * the order in which responses come back. Every ticket must be recorded
 * exactly once (ABANDONED if nothing else applies) — otherwise a probe slot
 * stays taken until the breaker next changes period (resilience4j #903).
 * Probes also need a hard per-try timeout in the caller.
 *
 * Pause. breaker_pause(until) — a 429 with Retry-After — refuses every request
 * until `until_ms`, for everyone, without changing the state, the counts or
 * consecutive_opens. Pauses extend, never shorten.
 *
 * Not thread-safe: one breaker lives in one event loop. */
#ifndef BRIDLE_BREAKER_H
#define BRIDLE_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct breaker breaker;

typedef enum { BREAKER_CLOSED = 0, BREAKER_OPEN, BREAKER_HALF_OPEN } breaker_state;

typedef enum {
    BREAKER_SUCCESS = 0, /* 2xx / completed stream */
    BREAKER_FAILURE,     /* 5xx, timeout, connect/TLS error, reset, cut stream */
    BREAKER_NEUTRAL,     /* 4xx, 429: never trips, never resets */
    BREAKER_ABANDONED,   /* result unknown: frees a probe slot, counts nothing */
} breaker_outcome;

#define BREAKER_MAX_BUCKETS 64

typedef struct breaker_config {
    int consecutive_failures; /* trip after this many failures in a row; 5; >= 1 */
    int64_t window_ms;        /* sliding window length; 10000; >= window_buckets */
    int window_buckets;       /* 10; 1..BREAKER_MAX_BUCKETS */
    int window_min_calls;     /* volume floor for the rate rule; 20; >= 1 */
    int failure_rate_pct;     /* trip at >= this % failures; 50; 1..100 */
    int64_t open_base_ms;     /* first open period; 5000; >= 1 */
    int64_t open_max_ms;      /* cap before jitter; 60000; >= open_base_ms */
    int jitter_pct;           /* ± this % of the open period; 20; 0..100 */
    int half_open_probes;     /* concurrent probes in HALF_OPEN; 1; >= 1 */
    int64_t stable_ms;        /* closed this long => consecutive_opens restarts; 60000; >= 0 */
} breaker_config;

/* What breaker_allow() hands out; pass it back to breaker_record(). Plain
 * data: copy it into the attempt's state. */
typedef struct breaker_ticket {
    uint64_t period; /* internal: the period it was issued in */
    bool probe;      /* issued in HALF_OPEN */
} breaker_ticket;

/* For /v1/bridle/health. Times are absolute, in the caller's clock. */
typedef struct breaker_snapshot {
    breaker_state state;      /* as breaker_get_state() */
    int consecutive_failures; /* current run of failures (CLOSED) */
    int window_calls;         /* successes + failures in the window now */
    int window_failures;
    int consecutive_opens;   /* the multiplier of the next/current open period */
    uint64_t opens_total;    /* trips since breaker_new() */
    int probes_in_flight;    /* HALF_OPEN only, else 0 */
    int64_t open_until_ms;   /* end of the current open period; -1 unless OPEN */
    int64_t paused_until_ms; /* -1 unless paused now */
    int64_t next_allow_ms;   /* as breaker_retry_at_ms() */
} breaker_snapshot;

/* The defaults above. */
breaker_config breaker_config_default(void);

/* A new CLOSED breaker. `cfg` NULL means the defaults; the config is copied.
 * Returns NULL when a field is out of the bounds listed above, or on OOM. */
breaker *breaker_new(const breaker_config *cfg);

/* A config reload (router_reload): the trip threshold and open periods of
 * cfg, keeping the breaker's state and window (whose shape is not
 * configurable). False, and nothing changed, when cfg is out of bounds. */
bool breaker_set_config(breaker *b, const breaker_config *cfg);

/* Frees the breaker. NULL is a no-op. Outstanding tickets become meaningless. */
void breaker_free(breaker *b);

/* May a request go to this target now? True in CLOSED; in HALF_OPEN, true
 * while fewer than half_open_probes probes are in flight, and then it takes a
 * probe slot; false in OPEN and while paused. On true, fills `*ticket` (which
 * must not be NULL); the caller must later breaker_record() it exactly once. */
bool breaker_allow(breaker *b, int64_t now_ms, breaker_ticket *ticket);

/* Records the outcome of a request that breaker_allow() admitted, following
 * the rules in the header comment. `rnd` is a uniform 64-bit random value,
 * used only when this outcome opens the breaker (the jitter). A NULL ticket,
 * or one from an earlier period, is ignored. */
void breaker_record(breaker *b, int64_t now_ms, const breaker_ticket *ticket,
                    breaker_outcome outcome, uint64_t rnd);

/* Refuse every request until `until_ms` (a 429's Retry-After), without
 * changing the state or counts. A time earlier than a pause already in force
 * is ignored. */
void breaker_pause(breaker *b, int64_t until_ms);

/* The state at `now_ms`: OPEN reads as HALF_OPEN once its period has ended.
 * Pausing does not show here (see the snapshot). */
breaker_state breaker_get_state(const breaker *b, int64_t now_ms);

/* The earliest time at which breaker_allow() could return true if nothing
 * else happened: now_ms when it would now; the end of the open period or of
 * the pause; -1 when it waits on a HALF_OPEN probe in flight (unknown). For
 * diagnostics and a refused client's Retry-After. */
int64_t breaker_retry_at_ms(const breaker *b, int64_t now_ms);

/* Fills `*out` as of `now_ms`. Does not change the breaker. */
void breaker_get_snapshot(const breaker *b, int64_t now_ms, breaker_snapshot *out);

/* "closed", "open", "half_open"; "unknown" for anything else. Static storage. */
const char *breaker_state_name(breaker_state s);

/* "success", "failure", "neutral", "abandoned"; "unknown" otherwise. */
const char *breaker_outcome_name(breaker_outcome o);

#endif

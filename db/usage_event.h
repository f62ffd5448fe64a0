/* One client request's usage event: a fixed struct filled once when the
 * request ends. db/ledger appends it to the local log (db/spool), batches
 * it to PostgreSQL, and nothing else writes usage_events.
 *
 * Strings are fixed-size and NUL-terminated (truncated if longer); an empty
 * string means "none" (NULL in the database). Money is pico-dollars. */
#ifndef BRIDLE_USAGE_EVENT_H
#define BRIDLE_USAGE_EVENT_H

#include <stdbool.h>
#include <stdint.h>

#define USAGE_EVENT_VERSION 1

typedef struct usage_event {
    char event_id[33]; /* 32 lower-case hex: unique per client request */
    int64_t ts_us;     /* wall-clock microseconds since the epoch, request start */
    char key_id[65];
    char team[65];
    char end_user[129]; /* the request's "user" */
    char agent[65];
    char task[65];
    char feature[65];
    char requested_model[129];
    char provider[65];      /* provider of the final attempt */
    char model[129];        /* model actually used (bridle's name) */
    char tier[16];          /* budget / mid / heavy / local, or "" */
    char route_reason[129]; /* which rule chose, in words */
    bool streamed;
    int32_t status;       /* HTTP status the client got */
    char error_class[32]; /* "" on success; else e.g. "upstream_timeout", "invalid_request" */
    int32_t attempts;     /* upstream attempts made */
    int64_t input_tokens; /* uncached input */
    int64_t cache_read_tokens;
    int64_t cache_write_tokens; /* 5-minute and 1-hour writes together */
    int64_t output_tokens;      /* reasoning included */
    int64_t reasoning_tokens;
    bool usage_exact; /* false: estimated (cut stream, no usage block) */
    int64_t cost_pusd;
    int64_t baseline_cost_pusd; /* the same usage on the requested/baseline model */
    int64_t latency_us;         /* request received -> last byte sent */
    int64_t ttft_us;            /* -1 when not streamed or no token */
    int64_t upstream_us;        /* time spent in upstream calls */
    bool cache_hit;
    char batch_id[65];
} usage_event;

#endif

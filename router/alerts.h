/* Budget alert delivery. PostgreSQL fires the alerts (migration 0004: the
 * trigger on usage_events inserts one bridle_budget_alerts row per budget,
 * period and threshold reached, exactly once by its key); this module
 * delivers them. Every alerts.poll_ms each gateway claims undelivered rows
 * atomically (FOR UPDATE SKIP LOCKED: one gateway per alert), logs each at
 * warn level, POSTs it as JSON to alerts.webhook_url when one is set (via
 * the engine: no redirects, http/https only, short timeouts), retries a
 * failed or non-2xx POST with exponential backoff and jitter (at most
 * ALERTS_MAX_ATTEMPTS attempts across claims, each recorded in `attempts`
 * and `last_error`), and sets delivered_at. A claim older than
 * alerts.claim_timeout_ms without delivery (its gateway died) is taken over.
 *
 * All on the event loop, on its own PostgreSQL connection (db/pgconn.h);
 * never on a request's path. */
#ifndef BRIDLE_ALERTS_H
#define BRIDLE_ALERTS_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

struct router;
typedef struct alerts alerts;

#define ALERTS_MAX_ATTEMPTS 10

/* Starts the poller when the config has a database (NULL otherwise, with a
 * warning when a webhook is configured: nothing can be delivered). */
alerts *alerts_start(struct router *rt);
/* Stops it: POSTs in flight are abandoned (their claims are taken over
 * later, by this process's successor or another gateway). */
void alerts_free(alerts *a);

/* One claimed alert, as read back from the database. */
typedef struct alert_row {
    char scope[8];         /* key | team | total */
    char scope_id[72];     /* the key id or team name; "" for the total */
    char period[8];        /* day | week | month */
    char period_start[40]; /* ISO 8601 UTC, seconds */
    char period_end[40];
    char start_key[48]; /* period_start to the microsecond, to find the row again */
    char fired_at[40];  /* ISO 8601 UTC, milliseconds */
    int share_bp;       /* the threshold in basis points */
    int64_t limit_pusd, spent_pusd;
} alert_row;

/* `key "k1" daily budget 75% reached: $0.7512 of $1.00 (period from ...,
 * resets ...)` */
void alerts_format_text(const alert_row *r, char *out, size_t outlen);
/* The webhook's JSON body (appended to out). Money is printed exactly from
 * the pico-dollars; share is spent / limit to 6 decimals. */
void alerts_format_body(const alert_row *r, buf *out);
/* pico-dollars as dollars, trailing zeros trimmed to at least min_decimals. */
void alerts_format_usd(int64_t pusd, int min_decimals, char *out, size_t outlen);

#endif

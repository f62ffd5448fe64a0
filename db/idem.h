/* Idempotency keys (IETF draft-ietf-httpapi-idempotency-key-header;
 * reliability.md §3.4), kept in PostgreSQL so that gateways sharing a
 * database make exactly one upstream call per key.
 *
 * A request with a key first claims it (idem_claim). One request wins and
 * runs; it then stores its outcome (idem_store_result) or, when a retry
 * could do better (429, 5xx, timeouts, the client gone), releases the key
 * (idem_release) so the next request with it runs anew. Every other request
 * with the key gets the stored outcome to replay, or waits while the winner
 * runs (or is told 409 at once, by configuration), or 422 when its body
 * differs from the winner's.
 *
 * Queries run on a few dedicated non-blocking libpq connections (db/pgconn)
 * on the event loop; callbacks always run from the loop, never from inside
 * the call that started the operation. */
#ifndef BRIDLE_IDEM_H
#define BRIDLE_IDEM_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct idem_store idem_store;
typedef struct idem_op idem_op;

typedef struct idem_options {
    const char *database_url; /* required */
    int connections;          /* default 2 */
    int64_t retention_s;      /* a stored outcome is replayed this long; default 86400 */
    int64_t lease_ms;         /* a claim not settled by then may be taken over; default 600000 */
    int poll_ms;              /* a waiting request re-reads the key this often; default 20 */
    int query_timeout_ms;     /* default 5000 */
} idem_options;

typedef enum {
    IDEM_CLAIMED,     /* this request runs; settle it with store_result or release */
    IDEM_REPLAY,      /* the key's stored outcome: status, content_type, body */
    IDEM_MISMATCH,    /* the key was used with a different body: 422 */
    IDEM_IN_PROGRESS, /* another request holds the key (and waiting was off or ran out) */
    IDEM_UNAVAILABLE, /* the database cannot be asked: error says why */
    IDEM_STORED,      /* idem_store_result's acknowledgement */
} idem_outcome;

typedef struct idem_result {
    idem_outcome outcome;
    int status;               /* IDEM_REPLAY */
    const char *content_type; /* IDEM_REPLAY; valid during the callback */
    const char *body;         /* IDEM_REPLAY; valid during the callback */
    size_t body_len;
    const char *error; /* IDEM_UNAVAILABLE, or a failed IDEM_STORED */
    const char *owner; /* IDEM_CLAIMED: the claim's token, for store_result and release */
} idem_result;

typedef void (*idem_fn)(void *ctx, const idem_result *r);

idem_store *idem_new(struct event_base *base, const idem_options *opt);
void idem_free(idem_store *s);

/* The key from an Idempotency-Key header value: a structured-field string
 * ("...", with \" and \\ escapes) or, leniently, a bare token; 1 to 255
 * printable ASCII characters. Returns 0, or -1 when the value is not a
 * valid key. */
int idem_parse_key(const char *header, char *out, size_t outlen);

/* Claims (scope, key) for the request whose fingerprint is given. With wait, a key held by another
 * request with the same fingerprint is re-read every poll_ms until its outcome is stored
 * (IDEM_REPLAY), it is released (this request claims it), or deadline_ms (util_now_ms clock) passes
 * (IDEM_IN_PROGRESS). */
idem_op *idem_claim(idem_store *s, const char *scope, const char *key, const char *fingerprint,
                    bool wait, int64_t deadline_ms, idem_fn fn, void *ctx);

/* Stores the claimed request's outcome for replay (owner: from CLAIMED); fn (may be NULL) gets
 * IDEM_STORED, with error set when it could not be stored. */
idem_op *idem_store_result(idem_store *s, const char *scope, const char *key, const char *owner,
                           int status, const char *content_type, const char *body, size_t len,
                           idem_fn fn, void *ctx);

/* Gives the key up: the next request with it runs. Fire and forget. */
void idem_release(idem_store *s, const char *scope, const char *key, const char *owner);

/* The caller no longer wants op's callback (the client left); the query,
 * if sent, still completes. */
void idem_cancel(idem_op *op);

#endif

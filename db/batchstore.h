/* Batches in PostgreSQL (migration 0012): the batch rows, one row per
 * line, and the queries that move them (docs/design.md "Batches"). The
 * callbacks read the PGresult themselves (db/pgqueue.h); the JSON answers
 * are built by the queries in OpenAI's Batch shapes. */
#ifndef BRIDLE_BATCHSTORE_H
#define BRIDLE_BATCHSTORE_H

#include <stdint.h>

#include "db/pgqueue.h"

/* The API a batch came in by: it decides the shape of its answers. */
typedef enum { BATCH_API_OPENAI, BATCH_API_ANTHROPIC } batch_api;

typedef struct batch_new {
    const char *id; /* "batch_" + 24 hex digits */
    const char *key_id, *key_sha256, *team;
    const char *input_file_id, *endpoint, *completion_window;
    const char *metadata; /* JSON object text, or NULL */
    /* The budgets it reserves its worst case on (migrations/0014,
     * bridle_batch_reserve): PostgreSQL array literals of their scopes,
     * ids, periods and limits (router/budget.h budget_request_arrays). The
     * worst case is the input file's (bridle_files.worst_pusd), or
     * worst_pusd for an Anthropic batch. */
    const char *budget_arrays[4];
    int64_t worst_pusd;
} batch_new;

/* The SQLSTATE of a creation refused because a budget cannot hold the
 * batch's worst case; the error's DETAIL is scope, id, period, limit,
 * spent, held and the worst case, tab-separated. */
#define BATCHSTORE_BUDGET_REFUSED "BR429"

/* Each returns 0, or -1 (database down, queue full: fn not called). */

/* Row 0: the input file's endpoint, or no row (no such batch file of this key). */
int batchstore_file_endpoint(pgqueue *q, const char *file_id, const char *key_id, pgqueue_fn fn,
                             void *ctx);
/* Creates the batch and its lines from the file and reserves the file's
 * worst case, in one statement; row 0: the batch JSON. A budget that
 * cannot hold it fails the statement (BATCHSTORE_BUDGET_REFUSED): nothing
 * is created. */
int batchstore_create(pgqueue *q, const batch_new *b, pgqueue_fn fn, void *ctx);
/* An Anthropic batch from its requests, already translated to canonical
 * JSONL lines (jsonl: not copied, valid until fn runs; file_id names the
 * file they are kept in); row 0: the MessageBatch JSON. */
int batchstore_create_messages(pgqueue *q, const batch_new *b, const char *file_id,
                               const char *jsonl, int lines, pgqueue_fn fn, void *ctx);
/* Row 0: the batch JSON in api's shape, or no row (none of this key and API). */
int batchstore_get(pgqueue *q, batch_api api, const char *id, const char *key_id, pgqueue_fn fn,
                   void *ctx);
/* Row 0: the list in api's shape ({"object":"list"} for OpenAI), newest
 * first, after: the id the previous page ended with (or NULL). */
int batchstore_list(pgqueue *q, batch_api api, const char *key_id, const char *after, int limit,
                    pgqueue_fn fn, void *ctx);
/* Cancels (its pending lines are never sent); row 0: the batch JSON, or no row. */
int batchstore_cancel(pgqueue *q, batch_api api, const char *id, const char *key_id, pgqueue_fn fn,
                      void *ctx);
/* An Anthropic batch's lines in order; rows: the batch's status, then each
 * line's custom_id, state, status and response. No row: no such batch. */
int batchstore_results(pgqueue *q, const char *id, const char *key_id, pgqueue_fn fn, void *ctx);

/* Claims up to n pending lines of running batches for `instance`; rows:
 * batch_id, line_no, custom_id, body, key_sha256, api, live ("t": a provider
 * refused its batch, so it runs live here, never deferred again). */
int batchstore_claim(pgqueue *q, const char *instance, int n, pgqueue_fn fn, void *ctx);
/* A claimed line's end: state "done" or "failed", the answer's status
 * ("" when there was none), its request id, and the body (or, without a
 * status, what went wrong). */
int batchstore_finish(pgqueue *q, const char *batch_id, const char *line_no, const char *instance,
                      const char *state, const char *status, const char *request_id,
                      const char *response, pgqueue_fn fn, void *ctx);
/* Ends one batch with no line left to run (its output and error files);
 * row 0: its id, or no row when there is none. */
int batchstore_finalize(pgqueue *q, pgqueue_fn fn, void *ctx);
/* Pending lines of batches whose window (24 h) has passed expire: never
 * sent, reported as batch_expired. */
int batchstore_expire(pgqueue *q, pgqueue_fn fn, void *ctx);
/* Lines left running by an instance that stopped (`previous`, the one
 * this process replaced on its spool, at once; any other after 30 s
 * without a heartbeat) fail as interrupted: they are never sent again. */
int batchstore_recover(pgqueue *q, const char *instance, const char *previous, pgqueue_fn fn,
                       void *ctx);

#endif

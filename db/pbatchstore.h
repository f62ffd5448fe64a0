/* Provider batches in PostgreSQL (migration 0013): the lines a run handed
 * back for a provider's batch API, the provider batches they went up in,
 * and the queries that move them (router/pbatch.h drives them). Every
 * change of state is one statement. Each returns 0, or -1 (database down,
 * queue full: fn not called); the callbacks read the PGresult. */
#ifndef BRIDLE_PBATCHSTORE_H
#define BRIDLE_PBATCHSTORE_H

#include <stdbool.h>

#include "db/pgqueue.h"

/* A line claimed by `instance` was routed to a batch provider: it waits,
 * queued, with the provider's request body and its usage event so far. */
int pbatchstore_defer(pgqueue *q, const char *batch_id, const char *line_no, const char *instance,
                      const char *provider, const char *model, const char *upstream,
                      const char *event_json, pgqueue_fn fn, void *ctx);

/* Takes the lines of one group ready to go (bridle_pbatch_take) into the
 * new provider batch `id`: providers is a PostgreSQL array literal of the
 * providers this gateway may send to. Rows: provider, model, batch_id,
 * line_no, upstream; none: nothing is ready. */
int pbatchstore_take(pgqueue *q, const char *instance, const char *providers, long after_ms,
                     int max, const char *id, pgqueue_fn fn, void *ctx);
/* The provider accepted it as remote_id: polled after poll_ms. */
int pbatchstore_submitted(pgqueue *q, const char *id, const char *remote_id, long poll_ms,
                          pgqueue_fn fn, void *ctx);
/* The provider refused it (nothing of it ran): its lines go back to the
 * local queue to run live, and why is kept on the provider batch. */
int pbatchstore_refused(pgqueue *q, const char *id, const char *why, pgqueue_fn fn, void *ctx);
/* It may or may not have reached the provider (the answer was lost): its
 * lines fail with why, never sent again. */
int pbatchstore_lost(pgqueue *q, const char *id, const char *why, pgqueue_fn fn, void *ctx);

/* Claims one provider batch due for a poll (or left by a gateway that
 * stopped polling it) for `instance`, for a minute. Row: id, provider,
 * remote_id, poll_ms, cancel (its batch is being cancelled and the
 * provider not told yet: "t"/"f"). */
int pbatchstore_poll_claim(pgqueue *q, const char *instance, pgqueue_fn fn, void *ctx);
/* Not ended yet: polled again after poll_ms. */
int pbatchstore_poll_later(pgqueue *q, const char *id, long poll_ms, pgqueue_fn fn, void *ctx);
/* The provider was asked to cancel it. */
int pbatchstore_cancel_sent(pgqueue *q, const char *id, pgqueue_fn fn, void *ctx);

/* Its lines still waiting for their answers; rows: line_no, body (the
 * canonical request), model, event (JSON), api, batch_id. */
int pbatchstore_lines(pgqueue *q, const char *id, pgqueue_fn fn, void *ctx);
/* Ends lines of it: rows_json is a JSON array of {"n": line_no, "s": state,
 * "c": status or null, "r": response, "q": request_id} (borrowed until fn
 * runs). last: the results are all in: its lines without one fail (or are
 * cancelled, when their batch is), and it ends. */
int pbatchstore_settle(pgqueue *q, const char *id, const char *rows_json, bool last, pgqueue_fn fn,
                       void *ctx);

/* Provider batches left "submitting" by a gateway that stopped (`previous`,
 * the one this process replaced on its spool, at once; any other after 30
 * s without a heartbeat): their lines fail as interrupted. */
int pbatchstore_recover(pgqueue *q, const char *instance, const char *previous, pgqueue_fn fn,
                        void *ctx);

#endif

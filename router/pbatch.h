/* The provider batch path: batch lines at the providers' batch price.
 *
 * A batch line's run (server/batches.c) plans and admits it like a live
 * request; when its candidate's provider takes batches
 * (providers.NAME.batch) the run does not call it but hands the line back
 * (run_sink.defer): pbatch_defer keeps it queued in PostgreSQL with the
 * provider's request body and its usage event so far. pbatch_tick, from
 * the batch queue's timer:
 *   - submits: the queued lines of one batch, provider and model go up
 *     together as one provider batch (db/pbatchstore.h) when there are
 *     batches.max_lines of them, the oldest waited batches.submit_after_ms,
 *     or nothing of their batch is left to route. They are marked
 *     submitted before the call; a provider that refuses the batch (an
 *     HTTP answer) gets its lines run live from the local queue instead; an
 *     answer that never came fails them, so that none runs twice;
 *   - polls: every provider batch in progress, on any gateway, after
 *     batches.poll_min_ms and then twice as late each time up to
 *     batches.poll_max_ms; a cancelled batch's provider batches are
 *     cancelled at the provider;
 *   - settles: an ended provider batch's results are joined to their
 *     lines on custom_id, decoded by the provider's own adapter, priced at
 *     the model's batch discount, recorded as one usage event per line
 *     (with the batch id; the event id is the line's own, so a settlement
 *     repeated after a crash is not charged twice), then written to the
 *     lines once the events are in the spool.
 * Only router/ calls providers: this module makes those calls through the
 * engine, on the loop. */
#ifndef BRIDLE_PBATCH_H
#define BRIDLE_PBATCH_H

#include <stdbool.h>

#include "db/pgqueue.h"
#include "router/router.h"
#include "router/run.h"

typedef struct pbatch pbatch;

/* q: the connection the batch tables are used on. NULL on OOM. */
pbatch *pbatch_new(pgqueue *q);
/* Cancels the calls in flight: their provider batches are picked up again
 * (polls) or failed as interrupted (submissions) by the next gateway. */
void pbatch_free(pbatch *pb);

/* Keeps a deferred line (claimed by this process) queued for its
 * provider's batch. messages_api: the line came in by Anthropic's Message
 * Batches. fn gets the statement's result. -1: the database is away. */
int pbatch_defer(pbatch *pb, router *rt, const char *batch_id, const char *line_no,
                 const run_deferral *d, pgqueue_fn fn, void *ctx);

/* Submits what is ready, polls what is due, settles what ended, with the
 * router of the current config (a call in flight keeps its own). */
void pbatch_tick(pbatch *pb, router *rt);

typedef struct pbatch_stats {
    long submitted, refused, lost; /* provider batches */
    long polls, settled_lines;
    int in_flight; /* operations under way here */
} pbatch_stats;
pbatch_stats pbatch_get_stats(const pbatch *pb);

#endif

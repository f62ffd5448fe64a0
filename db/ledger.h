/* The usage ledger: every client request's usage event, written to the
 * local spool before the response leaves (so a process kill loses
 * nothing), batched to PostgreSQL asynchronously on the event loop, and
 * trimmed from the spool once PostgreSQL has it. When PostgreSQL is away
 * the events wait in the spool and are replayed in order, idempotently (by
 * event id), when it returns. The serving path never waits on the
 * database. */
#ifndef BRIDLE_LEDGER_H
#define BRIDLE_LEDGER_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "db/usage_event.h"

typedef struct ledger ledger;

typedef struct ledger_options {
    const char *database_url; /* required */
    const char *spool_dir;    /* required; created if missing */
    int64_t spool_max_bytes;  /* past it, ledger_can_accept() is false; default 1 GiB */
    int flush_interval_ms;    /* default 100 */
    int batch_max;            /* events per INSERT; default 5000 */
    int queue_max; /* events held in memory; the rest wait in the spool; default 4 batches */
    int partitions_ahead_days; /* default 7 */
    int retention_days;        /* 0: keep everything */
    int query_timeout_ms;      /* a slower INSERT drops the connection; default 10000 */
    /* The spool's fdatasync: at most this many ms after an append (0: 10);
     * -1: as soon as a record is unsynced and no sync is in flight. The
     * reply never waits for it (the record is in the page cache). */
    int spool_sync_ms;
    /* Optional: called for each event once the batch holding it has committed
     * (the COPY and the dedup path alike, replayed events too), in order. */
    void (*on_shipped)(void *ctx, const usage_event *ev);
    void *shipped_ctx;
} ledger_options;

typedef struct ledger_stats {
    int64_t recorded; /* events accepted by ledger_record */
    int64_t inserted; /* rows PostgreSQL acknowledged (duplicates included) */
    int64_t replayed; /* events read back from the spool */
    int64_t queued;   /* events in memory waiting for PostgreSQL */
    int64_t spool_bytes;
    int64_t oldest_unshipped_ms; /* age of the oldest event not yet in PostgreSQL; 0: none */
    int64_t last_insert_ms_ago;  /* since the last batch committed; -1: none yet */
    bool database_up;
} ledger_stats;

/* Opens the spool, replays what it holds, and starts connecting. Returns
 * NULL with a reason in err. */
ledger *ledger_new(struct event_base *base, const ledger_options *opt, char *err, size_t errlen);

/* Records one event: it is staged, and the loop pass's staged events go
 * to the spool in one pwrite at the end of the pass (an event made active
 * now runs after the callbacks already active, before the loop waits for
 * I/O again, so before a reply handed to evhttp in this pass can reach its
 * socket). Once written the event is in the page cache (it survives a kill
 * of this process) and queued for PostgreSQL; then the ledger_set_on_written
 * callback runs. An event the spool refuses (full, cannot be written) is
 * logged whole at error level so it is still not lost silently. -1: out of
 * memory to stage it (logged the same way). */
int ledger_record(ledger *l, const usage_event *ev);

/* Called after each spool write of staged events (ledger_record), for
 * whoever holds answers until their events are written. */
void ledger_set_on_written(ledger *l, void (*fn)(void *ctx), void *ctx);

/* False when the spool is at its cap: billable requests must be refused
 * (503) rather than served without a place to record them. */
bool ledger_can_accept(const ledger *l);

/* For shutdown: keeps flushing until PostgreSQL has every event or
 * limit_ms passes, then makes the spool durable and calls done(ctx). */
void ledger_drain(ledger *l, int limit_ms, void (*done)(void *ctx), void *ctx);

/* Sets ledger_options.on_shipped after ledger_new (the budget module is
 * made after the ledger). */
void ledger_set_on_shipped(ledger *l, void (*fn)(void *ctx, const usage_event *ev), void *ctx);

/* Calls fn(ctx) once every event that was in the spool when this ledger
 * opened it (an earlier run's, replayed) is committed to PostgreSQL: at
 * once when that is already so. NULL fn: no call. */
void ledger_set_on_replayed(ledger *l, void (*fn)(void *ctx), void *ctx);

void ledger_free(ledger *l);
ledger_stats ledger_get_stats(const ledger *l);

#endif

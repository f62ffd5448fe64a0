/* db/spool — the local append-only log of usage events.
 *
 * The rule it serves: a client that received its answer never loses its
 * usage event, even if bridle is killed right after. The ledger appends the
 * event here before the response leaves; the log is trimmed once PostgreSQL
 * has the rows; while PostgreSQL is away the events stay here and are
 * replayed in order when it returns (inserts are idempotent by event id).
 *
 * ---------------------------------------------------------------- layout
 *
 *   DIR/lock                   flock()ed while open: one process per spool
 *   DIR/seg-%016llu.log        segments; the number is the sequence number
 *                              the segment's first record was given
 *   DIR/acked                  the ack checkpoint (see below)
 *
 * A segment is a run of records, nothing else (no file header, so a
 * damaged start never costs the rest of the file):
 *
 *   "BRL1" | payload length u32 LE | CRC-32C(payload) u32 LE | payload
 *
 * payload = one msgpack array [version = 1, seq, event fields in the order
 * of struct usage_event ...] (32 elements in version 1). The sequence
 * number lives inside the CRC-covered payload, so a record names its own
 * position: skipping a corrupt record never renumbers the ones after it.
 * Growing the format: a later version appends elements (readers take the
 * first 32 and skip the rest, which must be well-formed msgpack); an
 * incompatible change takes a new magic.
 *
 * A reader accepts a record only if the magic matches, 32 <= length <= 64
 * KiB, the CRC matches and the payload decodes with every field in range
 * (strings fit their struct field and hold no NUL, int32 fields fit, the
 * array holds nothing but what the schema says). Anything else is skipped
 * by scanning for the next magic, so records after a corrupt or torn one
 * are still recovered. Within one pass the sequence numbers must increase;
 * a record that does not is skipped.
 *
 * Residual risk, written down: strings come from clients, so a string can
 * hold bytes that look like a whole record. A sequential read never looks
 * inside a payload; only the resynchronisation after damage (a torn tail,
 * a bad disk block) could meet such bytes, and then they must carry a CRC
 * the client computed and a sequence number above the last good record.
 *
 * ---------------------------------------------------------------- durability
 *
 * spool_append encodes the record and hands it to the kernel in one
 * pwrite(2) (spool_append_many: a run of records in one pwrite): when it
 * returns 0 the record is in the page cache, which survives a kill of the
 * process. Nothing is buffered in user space between calls.
 *
 * Power loss is bounded by grouped fdatasync on a helper thread owned by
 * the spool (an fdatasync takes up to 5.4 ms here, which would stall the
 * loop: reliability.md §0 item 6). The thread syncs when one of these
 * holds: sync_interval_ms (10) passed since the first unsynced append,
 * sync_every (1024) records are unsynced, or spool_request_sync /
 * spool_sync_now asked; with SPOOL_SYNC_AT_ONCE, as soon as a record is
 * unsynced and no sync is in flight. After each successful round it writes 1 to an
 * eventfd (spool_sync_fd): register it with the loop for EV_READ and call
 * spool_on_sync_ready, which reports the sequence number now durable.
 * New segments are preallocated (fallocate) so a sync does not also have to
 * journal a growing file size, and the directory is fsynced before a
 * record in a new segment is reported durable.
 *
 * What the loop and the thread share, all under one mutex: the numbers
 * `appended` (last seq written) and `durable` (last seq synced), the sync
 * request, the list of retired segment fds (the loop hands an fd over at
 * rotation and never touches it again; the thread syncs and closes it), the
 * list of segments to unlink, the ack position to checkpoint, a
 * "directory changed" flag and the sticky sync error. The thread reads the
 * current segment's fd number under the mutex and only fdatasyncs it; the
 * loop closes that fd only after the thread has been joined.
 *
 * A failed fdatasync is not retried (the page cache state is unknown after
 * a write-back error): the error is sticky, `durable` stops, and every later
 * spool_append fails with EIO so the caller refuses billable requests.
 *
 * ---------------------------------------------------------------- acks
 *
 * spool_ack(seq) says records up to seq are in PostgreSQL. Segments that
 * hold only acked records (and are not the one being appended) are
 * unlinked, and the position is written to DIR/acked (tmp file, fsync,
 * rename, fsync of the directory: old or new, never torn) by the thread, at
 * most every checkpoint_interval_ms (100) or at once when a segment goes.
 * The checkpoint is written before the unlinks. A restart replays from the
 * checkpoint, so a few acked records may come again: allowed.
 *
 * Sequence numbers never go backwards across restarts: the next number is
 * above the last intact record, the newest segment's name and the
 * checkpoint, so a record lost to power loss after it was acked can never
 * lend its number to a new, unacked one.
 *
 * ---------------------------------------------------------------- cap
 *
 * spool_bytes counts the bytes of every segment file still present
 * (records, plus for segments from an earlier run any torn tail). When an
 * append would take it past cap_bytes, spool_append first rotates away a
 * fully acked current segment, and if that does not free enough returns
 * SPOOL_FULL: the caller answers 503. An event is never silently dropped.
 *
 * ---------------------------------------------------------------- threads
 *
 * Every function here is for the loop thread only (one spool per process
 * and directory); the helper thread is internal. Blocking calls, for start,
 * shutdown and tests only: spool_open (reads the newest segment and
 * truncates its torn tail), spool_sync_now, spool_close. Replay reads one
 * segment file at a time (at most segment_bytes), so call it in slices
 * (spool_cursor) when the backlog is large.
 *
 * Return convention: 0 on success, -1 with errno set (and `err` filled
 * where there is one); spool_append adds SPOOL_FULL. Secrets never enter
 * the spool: usage_event holds none. */
#ifndef BRIDLE_SPOOL_H
#define BRIDLE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/usage_event.h"

typedef struct spool spool;

/* spool_append's results. */
enum {
    SPOOL_OK = 0,
    SPOOL_ERROR = -1, /* errno says why (EIO after a failed sync, ENOSPC, ...) */
    SPOOL_FULL = -2,  /* the cap would be exceeded: refuse the billable request */
};

/* sync_interval_ms: start an fdatasync as soon as a record is unsynced and
 * none is in flight; what is appended meanwhile is the next group. */
#define SPOOL_SYNC_AT_ONCE (-1)

typedef struct spool_options {
    uint64_t segment_bytes;     /* rotate at; 0 = 8 MiB */
    uint64_t cap_bytes;         /* refuse appends beyond; 0 = 1 GiB */
    int sync_interval_ms;       /* max wait before a group sync; 0 = 10; or SPOOL_SYNC_AT_ONCE */
    int sync_every;             /* sync at once when this many are unsynced; 0 = 1024 */
    int checkpoint_interval_ms; /* min gap between ack checkpoints; 0 = 100 */
    bool no_preallocate;        /* do not fallocate new segments */
    /* Called by spool_on_sync_ready on the loop thread with the newest
     * durable sequence number, when it advanced. May be NULL. */
    void (*on_durable)(void *ctx, uint64_t durable_seq);
    void *ctx;
} spool_options;

typedef struct spool_stats {
    uint64_t bytes;         /* spool_bytes */
    uint64_t segments;      /* segment files present */
    uint64_t appended;      /* last sequence number written (0: none yet) */
    uint64_t durable;       /* last sequence number synced */
    uint64_t acked;         /* last sequence number acked */
    uint64_t syncs;         /* fdatasync rounds done */
    uint64_t sync_max_us;   /* slowest round */
    uint64_t corrupt_skips; /* damaged spans skipped by readers */
    int sync_error;         /* errno of the failed sync, 0 if none */
} spool_stats;

/** Opens (creating if needed) the spool in dir. opts may be NULL for the
 * defaults. Recovers: reads the checkpoint, deletes segments that are all
 * acked, truncates the torn tail of the newest segment, starts a new
 * segment for appends, starts the sync thread. Blocking; call before the
 * loop serves. NULL with errno and err filled on failure (EWOULDBLOCK: the
 * directory is open in another process). */
spool *spool_open(const char *dir, const spool_options *opts, char *err, size_t errlen);

/** Syncs everything, writes the checkpoint, stops the thread, frees.
 * Returns 0, or -1 with errno when the final sync failed (the spool is
 * freed either way). spool_close(NULL) is a no-op returning 0. */
int spool_close(spool *sp);

/** Appends ev; on SPOOL_OK the record is in the page cache and *seq (may be
 * NULL) holds its sequence number, one above the previous. SPOOL_FULL when
 * the cap would be exceeded; SPOOL_ERROR with errno otherwise (nothing is
 * appended then). Never blocks on a sync. */
int spool_append(spool *sp, const usage_event *ev, uint64_t *seq);

/** Appends evs[0..n) in order with one pwrite per segment they land in (a
 * loop pass's events at once: one syscall instead of one per event).
 * *appended says how many were appended, always a prefix (numbered
 * *first_seq on); SPOOL_OK when all were, otherwise the error that
 * stopped the rest, as spool_append's. Never blocks on a sync. */
int spool_append_many(spool *sp, const usage_event *evs, size_t n, size_t *appended,
                      uint64_t *first_seq);

/** Asks the thread to sync everything appended so far now (not waiting
 * for the interval). Returns at once. */
void spool_request_sync(spool *sp);

/** Blocks until everything appended so far is durable. 0, or -1 with errno
 * (EIO) after a failed sync. For shutdown and tests, not the loop. */
int spool_sync_now(spool *sp);

/** An eventfd that becomes readable when the durable position advanced. */
int spool_sync_fd(const spool *sp);

/** Drains the eventfd, calls opts->on_durable if the position advanced,
 * returns the durable sequence number. */
uint64_t spool_on_sync_ready(spool *sp);

/** Last durable sequence number (0 when none). */
uint64_t spool_durable_seq(spool *sp);

/** Records up to seq (inclusive) are in PostgreSQL. A seq at or below the
 * current ack position, or above the last appended, is clamped / ignored.
 * Unlinks segments that became all-acked (on the thread) and schedules the
 * checkpoint. */
void spool_ack(spool *sp, uint64_t seq);

/** Bytes of segment files present (what the cap is compared with). */
uint64_t spool_bytes(const spool *sp);
/** The last acked sequence number (from the checkpoint after a restart). */
uint64_t spool_acked_seq(const spool *sp);
void spool_get_stats(spool *sp, spool_stats *out);

/* ---------------------------------------------------------------- replay */

/* Reads records in order. A cursor belongs to its spool and must be freed
 * before it; it sees the records present when it reaches each segment (a
 * record appended to a segment the cursor has already read is not seen:
 * open a new cursor). Segments unlinked under it by acks are skipped. */
typedef struct spool_cursor spool_cursor;

/** A cursor yielding intact records with seq > after_seq. NULL on ENOMEM. */
spool_cursor *spool_cursor_new(spool *sp, uint64_t after_seq);
/** 1 and the next record into *ev / *seq; 0 at the end; -1 with errno on a
 * read error (the cursor may be retried). */
int spool_cursor_next(spool_cursor *c, usage_event *ev, uint64_t *seq);
void spool_cursor_free(spool_cursor *c);

/* Return nonzero to stop the replay early (spool_replay returns it). */
typedef int (*spool_replay_cb)(void *ctx, uint64_t seq, const usage_event *ev);

/** Calls cb, in order, for every intact record not yet acked. 0 at the
 * end, cb's nonzero value if it stopped, -1 with errno on a read error. */
int spool_replay(spool *sp, spool_replay_cb cb, void *ctx);

/* ---------------------------------------------------------------- codec
 * The record format, exposed for the tests and the fuzzer. */

#define SPOOL_MAGIC "BRL1"
#define SPOOL_HEADER_LEN 12
#define SPOOL_MIN_PAYLOAD 32
#define SPOOL_MAX_PAYLOAD (64 * 1024)
#define SPOOL_MAX_RECORD (SPOOL_HEADER_LEN + 2048) /* what the encoder can produce */

/** CRC-32C (Castagnoli), table-driven; crc is 0 for a fresh computation. */
uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len);

/** Encodes one record (header + payload) into out (cap >= SPOOL_MAX_RECORD
 * always suffices). Returns its length, or 0 if it does not fit. Strings
 * are taken up to their first NUL or field size - 1. */
size_t spool_encode_record(const usage_event *ev, uint64_t seq, uint8_t *out, size_t cap);

/** Decodes the payload of a record (without the header). 0 on success. */
int spool_decode_payload(const uint8_t *p, size_t len, usage_event *ev, uint64_t *seq);

/** Scans buf from *pos for the next intact record. Returns 1 with the
 * record at [*rec_off, *rec_off + *rec_len), *pos moved past it and ev/seq
 * filled; 0 when there is none (then *pos == len). *skipped (may be NULL)
 * gets how many damaged spans were jumped over. Never reads outside buf. */
int spool_scan_next(const uint8_t *buf, size_t len, size_t *pos, usage_event *ev, uint64_t *seq,
                    size_t *rec_off, size_t *rec_len, uint64_t *skipped);

#endif

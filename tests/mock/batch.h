/*
 * The providers' batch APIs in the mock: the core (batch.c) that keeps
 * batches, runs their lines on the event loop and counts them, and one file
 * per dialect for the HTTP side (batch_openai.c, batch_anthropic.c,
 * batch_gemini.c).
 *
 * A batch's lines run in reverse input order, a share of them per tick in
 * proportion to the time elapsed, so that results come unordered, a cancel
 * midway leaves some lines run and some not, and a batch of 50,000 lines
 * never holds the loop for long. Each line is answered by
 * mock_answer_line: exactly what the same body gets live.
 */
#ifndef BRIDLE_MOCK_BATCH_H
#define BRIDLE_MOCK_BATCH_H

#include "tests/mock/mock.h"

/* One state per batch; batch_set_state is the only writer. Anthropic shows
 * in_progress, canceling (BS_CANCELLING) and ended (the last four); Gemini
 * BATCH_STATE_PENDING (validating), RUNNING, SUCCEEDED, CANCELLED, EXPIRED. */
enum bstate {
    BS_VALIDATING,
    BS_FAILED,
    BS_IN_PROGRESS,
    BS_FINALIZING,
    BS_CANCELLING,
    BS_COMPLETED,
    BS_CANCELLED,
    BS_EXPIRED,
};

/* A growable byte buffer; offsets into it stay valid when it grows. */
struct gbuf {
    char *p;
    size_t len, cap;
};
/** Appends len bytes and a NUL; returns their offset, or -1 (out of memory). */
long gbuf_add(struct gbuf *g, const char *s, size_t len);

struct bline {
    size_t off; /* the line's request in b->text (OpenAI: the whole line; Anthropic: params) */
    size_t len;
    size_t cid; /* its custom_id in b->cids, NUL-terminated */
    size_t cid_len;
};

struct batch;

/* What a dialect does with its batches (batch_openai.c, batch_anthropic.c). */
struct batch_ops {
    enum dialect d;
    /** Checks every line (state validating); false fails the batch. NULL:
     *  the lines were checked at creation. */
    bool (*validate)(struct batch *b);
    /** Records line i's answer: a->status and the body (len bytes, no newline). */
    void (*record)(struct batch *b, uint32_t i, const struct mock_answer *a, const char *body,
                   size_t len);
    /** Line i never ran: the batch was cancelled (expired false) or expired. */
    void (*unrun)(struct batch *b, uint32_t i, bool expired);
    /** The results are complete (write the output files). */
    void (*finish)(struct batch *b);
    /** The request body of line i as JSON (NULL: the line is not JSON). */
    json_object *(*body)(struct batch *b, uint32_t i, json_tokener *tok, json_object **root);
};

struct batch {
    struct batch *next; /* newest first */
    const struct batch_ops *ops;
    enum bstate state;
    char id[48];
    /* unix seconds; 0 = not yet */
    long created_at, in_progress_at, finalizing_at, ended_at, cancelling_at, failed_at;
    int64_t start_ms;  /* monotonic, when in_progress began */
    int processing_ms; /* taken from the knob at creation */
    bool expire;       /* ends expired at its deadline with half its lines run */
    struct event *timer;
    struct gbuf text, cids;
    struct bline *lines;
    uint32_t n;
    uint32_t done;              /* lines run, from the last one backwards */
    struct evbuffer *out, *err; /* result lines (Anthropic: all in out) */
    long succeeded, errored, canceled, expired;
    long in_tokens, cached_tokens, out_tokens, reasoning_tokens; /* of succeeded lines */
    /* OpenAI */
    char endpoint[32], completion_window[8], input_file_id[48], output_file_id[48],
        error_file_id[48];
    char *metadata; /* OpenAI: metadata as compact JSON; Gemini: display_name; or NULL */
    char model[MOCK_MODEL_MAX];
    struct evbuffer *errors; /* validation errors, JSON objects joined by commas */
    int nerrors;
    /* Gemini: each line's result item, kept per line to answer in input order */
    struct gbuf res;
    size_t *res_off; /* offset in res + 1; 0 = none */
};

/** A new batch of that dialect, in state validating (OpenAI) or in_progress
 *  (lines already checked); its lines are added with batch_add_line, then
 *  batch_start. Returns NULL when out of memory. */
struct batch *batch_new(const struct batch_ops *ops, const char *id_prefix, bool validating);
/** Adds a line: its request text and its custom_id (copied). */
int batch_add_line(struct batch *b, const char *text, size_t len, const char *cid, size_t cid_len);
/** Counts the batch (created, custom_ids submitted) and starts its clock. */
void batch_start(struct batch *b);
/** Drops a batch that was never started. */
void batch_discard(struct batch *b);
/** Removes an ended batch from the store and frees it. */
void batch_delete(struct batch *b);
void batch_set_state(struct batch *b, enum bstate s);
/** Cancels an active batch; false when it is not active (then nothing changed). */
bool batch_cancel(struct batch *b);
struct batch *batch_find(enum dialect d, const char *id, size_t len);
/** The newest batch of any dialect (walk ->next, filter on ops->d). */
struct batch *batch_newest(void);
/** For each line that repeats an earlier line's custom_id (lines without
 *  one are skipped), calls cb with
 *  both indexes (in line order); returns how many there were, -1 when out
 *  of memory. */
long batch_each_duplicate(struct batch *b,
                          void (*cb)(struct batch *, uint32_t dup, uint32_t first));
/** The status the next batch creation must answer (fail_create), consumed; 0 = none. */
int batch_take_fail_create(void);
/** Appends t (unix seconds) as a quoted RFC 3339 UTC time. */
void batch_rfc3339(struct evbuffer *out, long t);
/** Lines not yet run and not cancelled or expired. */
uint32_t batch_pending(const struct batch *b);

/* Provided by the dialect files. */
extern const struct batch_ops batch_openai_ops, batch_anthropic_ops, batch_gemini_ops;

#endif

/* The providers' batch APIs, without the network (router/pbatch.h makes
 * the calls): what to send and how to read the answers.
 *
 * OpenAI (and OpenAI-compatible hosts that have it): the lines go up as a
 * JSONL file (POST /files, multipart, purpose "batch"), then POST /batches
 * names it; GET /batches/{id} until it has ended; the results are its
 * output and error files (GET /files/{id}/content), one line per request.
 * Anthropic: POST /messages/batches with the requests; GET
 * /messages/batches/{id} until processing_status is "ended"; GET
 * .../{id}/results. Gemini (batch mode, inlined requests): POST
 * /models/{model}:batchGenerateContent; GET /batches/{id} until done, its
 * answer holding the responses, each with the key it was sent with.
 * Results come in any order: they are joined on custom_id. wire-formats.md
 * §2 and §3.6; Gemini's from its API reference (ai.google.dev/api/batch-api). */
#ifndef BRIDLE_PROVIDER_BATCH_H
#define BRIDLE_PROVIDER_BATCH_H

#include <stdbool.h>

#include "lib/buf.h"
#include "providers/provider.h"

/* Whether the provider's dialect has a batch API bridle speaks. */
bool provider_batch_supported(const provider_conf *p);
/* Whether creating a batch takes two calls (upload the file, then create). */
bool provider_batch_uploads(const provider_conf *p);
/* Whether its results come in its status answer (Gemini's inlined
 * responses: provider_batch_inline_results), not from another call. */
bool provider_batch_inline(const provider_conf *p);

/* The submission's payload: begin, one add per line (custom_id: letters,
 * digits, '-' and '_'; body: the line's request as the provider's live
 * endpoint takes it), end. */
void provider_batch_begin(const provider_conf *p, buf *payload);
void provider_batch_add(const provider_conf *p, buf *payload, const char *custom_id,
                        const char *body, size_t len);
void provider_batch_end(const provider_conf *p, buf *payload);

/* The calls. Each fills an empty `out`. */
/* OpenAI: the payload uploaded as a file (multipart/form-data). */
void provider_batch_upload(const provider_conf *p, const buf *payload, upstream_request *out);
/* Creates the batch: OpenAI from the uploaded file (file_id), Anthropic
 * and Gemini from the payload (Gemini's names the model it is for: model,
 * the provider's name for it); tag goes in OpenAI's metadata (bridle's own
 * id). */
void provider_batch_create(const provider_conf *p, const char *file_id, const buf *payload,
                           const char *tag, const char *model, upstream_request *out);
void provider_batch_status(const provider_conf *p, const char *batch_id, upstream_request *out);
/* Asks the provider to cancel it (a POST without a body). */
void provider_batch_cancel(const provider_conf *p, const char *batch_id, upstream_request *out);
/* The results: OpenAI a file's content (its id), Anthropic the batch's. */
void provider_batch_fetch(const provider_conf *p, const char *id, upstream_request *out);

/* The id in a creation's (or upload's) 2xx answer; -1 with err. */
int provider_batch_id(const char *body, size_t len, char *id, size_t idlen, char *err,
                      size_t errlen);

typedef struct provider_batch_state {
    bool ended;           /* no request of it will run any more */
    bool refused;         /* it ended without running any (OpenAI "failed": the file
                             was refused): its lines may run another way */
    char status[32];      /* the provider's word for it */
    char output_file[96]; /* OpenAI: where the results are ("" none) */
    char error_file[96];  /* OpenAI: where the failed requests are ("" none) */
    char why[256];        /* refused: the provider's reason */
} provider_batch_state;

/* Reads a status answer; -1 with err when it is not one. */
int provider_batch_read_state(const provider_conf *p, const char *body, size_t len,
                              provider_batch_state *st, char *err, size_t errlen);

/* Gemini: the results in an ended batch's status answer, appended to
 * jsonl as result lines in OpenAI's output shape (provider_batch_read_result
 * reads them); a response without its metadata.key gets custom_id "#I/N"
 * (the I-th of N: the order is the input's). -1 with err: not JSON. */
int provider_batch_inline_results(const provider_conf *p, const char *body, size_t len, buf *jsonl,
                                  char *err, size_t errlen);

/* One result line. */
typedef struct provider_batch_result {
    char custom_id[80];
    int status; /* the request's HTTP status, 0: it did not run (cancelled, expired) */
    buf body;   /* its answer (2xx: what the live endpoint answers; else the error body),
                   or why it did not run */
} provider_batch_result;

/* Reads one line of a results file into r (r->body reset first); -1 with
 * err when the line is not a result. */
int provider_batch_read_result(const provider_conf *p, const char *line, size_t len,
                               provider_batch_result *r, char *err, size_t errlen);

#endif

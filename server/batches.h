/* The Batch API in OpenAI's shapes (what the openai SDK's `batches` calls
 * send): POST /v1/batches, GET /v1/batches (paged), GET /v1/batches/{id},
 * POST /v1/batches/{id}/cancel; and the local queue that runs the lines:
 * every process claims pending lines from PostgreSQL (db/batchstore.h) and
 * runs each as a request of the batch's key through the run (a batch line
 * is a run with its own sink), at most batches.concurrency at a time and
 * none while more than batches.yield_above live requests are in flight. A
 * batch whose lines have all ended gets its output and error files. */
#ifndef BRIDLE_BATCHES_H
#define BRIDLE_BATCHES_H

#include "router/config.h"
#include "server/app.h"
#include "server/h1.h"

typedef struct batches batches;

batches *batches_new(app *a); /* NULL without a database (or memory) */
void batches_free(batches *bs);
/* ,"batches":{...} for /v1/bridle/health: the lines running here and the
 * provider batch path's counters (router/pbatch.h). */
void batches_health_json(const batches *bs, buf *out);
struct request_headers;
/* path starts with /v1/batches; hdr: its Idempotency-Key. */
void batches_handle(app *a, h1_req *req, const key_conf *key, const struct request_headers *hdr,
                    const char *path, h1_method cmd);

/* Anthropic's Message Batches on the same machinery (path starts with
 * /v1/messages/batches): each request's params are translated to the
 * canonical chat request at creation (router/messages.h), run with the
 * Anthropic way in's answers, and the results come back as Anthropic's
 * {custom_id, result} lines. */
void messages_batches_handle(app *a, h1_req *req, const key_conf *key, const char *path,
                             h1_method cmd);

#endif

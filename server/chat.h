/* POST /v1/chat/completions: authenticate, validate, plan, call the
 * provider (failing over along the plan), reply or relay the stream. */
#ifndef BRIDLE_CHAT_H
#define BRIDLE_CHAT_H

#include "server/h1.h"

#include "server/app.h"
#include "router/config.h"

/* Frees the pool of recycled requests (at exit). */
void chat_pool_free(app *a);

struct request_headers;
void chat_handle(app *a, h1_req *req, const key_conf *key, const struct request_headers *hdr,
                 const char *request_id);
/* POST /v1/embeddings: the same, for embedding models (never streamed). */
void embeddings_handle(app *a, h1_req *req, const key_conf *key, const struct request_headers *hdr,
                       const char *request_id);

#endif

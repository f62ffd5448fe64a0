/* The chat-shaped ways in: POST /v1/chat/completions and POST /v1/messages
 * (Anthropic's shape, translated both ways). Each is a sink of a run. */
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

/* POST /v1/messages: the Anthropic way in, on the same run (router/messages.h). */
void messages_handle(app *a, h1_req *req, const key_conf *key, const struct request_headers *hdr,
                     const char *request_id);
/* POST /v1/messages/count_tokens: an estimate of the prompt's tokens. */
void messages_count_tokens(app *a, h1_req *req);

#endif

/* Embeddings (POST /v1/embeddings) in each dialect that has them: a small
 * table per dialect beside provider_ops (provider_ops.embed), because an
 * embedding call shares nothing with a chat call but the provider, its
 * error classification and the run around it: no stream, no messages, no
 * output tokens.
 *
 * Every encoder reads the request's one parse (canon_request.doc and
 * .embed); the OpenAI dialect forwards the client's body key by key, the
 * others copy the client's strings as raw bytes into their own shapes.
 * Every decoder answers in OpenAI's shape:
 *   {"object":"list","data":[{"object":"embedding","index":i,"embedding":V}],
 *    "model":M,"usage":{"prompt_tokens":N,"total_tokens":N}}
 * with V the provider's numbers as it wrote them, or, when the client asked
 * for encoding_format "base64", the base64 of their float32 values
 * (little-endian), which is what OpenAI sends and its SDKs decode. */
#ifndef BRIDLE_EMBEDDINGS_H
#define BRIDLE_EMBEDDINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/jtok.h"
#include "providers/provider.h"

typedef struct embed_ops {
    /* Inputs given as token ids can be sent (only OpenAI-compatible hosts:
     * the ids are a tokenizer's, and only they share OpenAI's). */
    bool token_ids;
    /* Builds the upstream call for the embeddings request `req` to `t`.
     * Returns 0, or -1 with err set. */
    int (*encode)(const canon_request *req, const target *t, upstream_request *out, char *err,
                  size_t errlen);
    /* Decodes a 2xx body into the OpenAI list in `out` (left empty: relay
     * the upstream body as it came) and its usage: exact when the provider
     * reported it, else req->embed.est_tokens with exact false. Returns 0,
     * or -1 with err set when the body is not what the dialect promises
     * (not JSON, no vectors, fewer vectors than inputs). */
    int (*decode)(const canon_request *req, const target *t, const char *body, size_t len, buf *out,
                  usage_record *usage, char *err, size_t errlen);
} embed_ops;

extern const embed_ops openai_embed_ops, gemini_embed_ops, ollama_embed_ops;

/* The inputs of req one by one: a string token, or an array of token ids.
 * for (uint32_t i = embed_input_first(req); i != JT_NONE;
 *      i = embed_input_next(req, i)) */
uint32_t embed_input_first(const canon_request *req);
uint32_t embed_input_next(const canon_request *req, uint32_t cur);

/* Writes OpenAI's list piece by piece: begin, one vector per input, end. */
void embed_list_begin(buf *out);
/* Appends the embedding object for the array of numbers `arr` of d, at
 * `index`: the numbers as written, or base64 of their float32 values.
 * Returns -1 (appending nothing) when arr is not an array of numbers. */
int embed_list_vector(buf *out, const jdoc *d, uint32_t arr, int64_t index, bool base64);
/* Closes the list with "model" and "usage". */
void embed_list_end(buf *out, const char *model, int64_t prompt_tokens);

/* Appends the standard base64 (with padding) of data[0..len). */
void embed_base64(buf *out, const unsigned char *data, size_t len);

#endif

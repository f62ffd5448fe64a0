/* The response cache: an answer to a deterministic request, kept in memory
 * and replayed for free to the same request (docs/design.md "The response
 * cache", docs/config.md "cache").
 *
 * An entry is a whole chat.completion body, as the client got it or as
 * assembled from the stream it got, with the target that answered and its
 * usage. The key is the SHA-256 of the canonical request after routing
 * (resp_cache_key). Memory is bounded by bytes, evicting the least recently
 * used entry; each entry has its own expiry. One per process, on the loop's
 * thread; the clock is the caller's (monotonic milliseconds), so tests can
 * move it. */
#ifndef BRIDLE_CACHE_H
#define BRIDLE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "providers/provider.h"

typedef struct resp_cache resp_cache;

/* An answer, to store or as found. */
typedef struct cache_answer {
    const char *body; /* chat.completion JSON */
    size_t len;
    const target *served_by; /* the target that answered; lives as long as the config */
    usage_record usage;      /* what that answer used */
    bool usage_estimated;
} cache_answer;

typedef struct cache_stats {
    int64_t entries, bytes, max_bytes;
    int64_t hits, misses, stores, evictions, expired, refused;
} cache_stats;

/* NULL on OOM. */
resp_cache *resp_cache_new(int64_t max_bytes);
void resp_cache_free(resp_cache *c);

/* The live entry for key (resp_cache_key's bytes, compared whole), made
 * the most recently used: *out points into it, valid until the next
 * resp_cache_put or resp_cache_free. An expired entry is dropped and not
 * found. Counts a hit or a miss. */
bool resp_cache_get(resp_cache *c, const buf *key, int64_t now_ms, cache_answer *out);
/* Stores a copy of a and key (replacing an entry with that key) until
 * expires_ms, evicting the least recently used entries to stay within
 * max_bytes. An entry larger than an eighth of max_bytes is refused (one
 * answer must not empty the cache): false. */
bool resp_cache_put(resp_cache *c, const buf *key, const cache_answer *a, int64_t expires_ms);
cache_stats resp_cache_get_stats(const resp_cache *c);

/* The key of a request, written to out (reset first): the scope (a key id,
 * or a team when `team`), the model the router chose, the output cap it gets, the
 * thinking budget, and every field of the body that can change the
 * answer, in compact JSON with the top-level fields sorted. Left out:
 * "model" (the chosen model stands for it), "max_tokens" /
 * "max_completion_tokens" (the cap does), and the fields that change only
 * the answer's form or bookkeeping: "stream", "stream_options", "user",
 * "metadata", "store". The whole key is kept and compared, so two
 * requests never share an entry by a hash collision. */
void resp_cache_key(const canon_request *req, bool team, const char *scope, const char *model,
                    int64_t output_cap, buf *out);

/* A chat.completion (n = 1) replayed as the stream a streaming client
 * expects: the message in one chunk, the finish reason, the usage chunk
 * when include_usage, then [DONE]. -1 when json is not such a body. */
int resp_cache_stream_of(const char *json, size_t len, bool include_usage, buf *out);
/* The chat.completion a client would have got had it not streamed, from
 * the SSE bytes it did get (OpenAI chunks): content, refusal and tool
 * calls joined, the finish reason, and `usage` when the stream carried
 * none. -1 when the stream is not one whole n = 1 answer. */
int resp_cache_completion_of(const char *sse, size_t len, const usage_record *usage, buf *out);

#endif

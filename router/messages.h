/* The Anthropic Messages API (POST /v1/messages) on top of the run: an
 * Anthropic-shaped request becomes the canonical chat request (OpenAI's
 * shape, router/canon.h) and the chat answer becomes Anthropic's message,
 * stream events or error. The request is routed like any other, so it may
 * land on any dialect; what only Anthropic carries rides in a few
 * extension members of the canonical request that the Anthropic dialect
 * reads and the others leave out (docs/design.md, "The Anthropic way in"):
 *
 *   assistant message  "thinking_blocks": [thinking | redacted_thinking blocks]
 *   tool message       "is_error": true, "cache_control": {...}
 *   content part/tool  "cache_control": {...}
 *   top level          "top_k", "cache_control"
 *
 * The answer carries thinking back the same way: message.thinking_blocks,
 * and in a stream delta.reasoning_content, delta.thinking_signature and
 * delta.redacted_thinking (providers/anthropic.c emits them when
 * canon_request.keep_thinking is set). */
#ifndef BRIDLE_MESSAGES_H
#define BRIDLE_MESSAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/jtok.h"

/* Translates a Messages request body into the canonical chat body (out is
 * appended to). count_tokens: the body of /v1/messages/count_tokens
 * (max_tokens not required, stream refused). `doc` is scratch for the
 * parse. Returns 0, or -1 with a message that names the field as the
 * Messages API does ("messages.1.content.0.source: ..."). */
int messages_to_chat(const char *body, size_t len, bool count_tokens, jdoc *doc, buf *out,
                     char *err, size_t errlen);

/* A whole chat.completion (JSON) → an Anthropic message with id `msg_id`,
 * appended to out. Returns 0, or -1 when json is not a chat.completion
 * (out then holds nothing new). */
int messages_from_completion(const char *json, size_t len, const char *msg_id, jdoc *doc, buf *out);

/* The status Anthropic's clients expect for a bridle status (503 is 529
 * overloaded), and the error type that goes with it. */
int messages_status(int status);
const char *messages_error_type(int status);
/* {"type":"error","error":{"type":...,"message":...}} for `status`. */
void messages_error_json(buf *out, int status, const char *message, size_t len);
/* An error body in OpenAI's shape (or already in Anthropic's) → Anthropic's
 * error JSON for `status`, appended to out. */
void messages_error_from(const char *body, size_t len, int status, jdoc *doc, buf *out);

/* A chat completion stream (SSE bytes, any split) → Anthropic's named
 * events: message_start, ping, content_block_start/delta/stop,
 * message_delta, message_stop, or error. */
typedef struct messages_stream messages_stream;
messages_stream *messages_stream_new(const char *msg_id); /* aborts without memory */
void messages_stream_free(messages_stream *s);
/* Translates what data completes; the rest waits for the next call. */
void messages_stream_feed(messages_stream *s, const char *data, size_t len, buf *out);

#endif

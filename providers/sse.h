/* Incremental framing of streamed upstream bodies into events: SSE
 * (text/event-stream: "event:" and "data:" fields, messages ended by a blank
 * line, \n, \r\n or \r line endings, ":" comments ignored, several data lines
 * joined with \n) or NDJSON (one JSON value per line, blank lines ignored).
 * Bytes arrive in arbitrary pieces; events are delivered whole. Input is
 * untrusted: a line longer than the configured cap is an error, never a
 * crash or an unbounded allocation. */
#ifndef BRIDLE_SSE_H
#define BRIDLE_SSE_H

#include <stddef.h>

#include "providers/provider.h"

typedef struct sse_parser sse_parser;

/* Called once per complete event. Returning non-zero stops feeding; the
 * value is returned by sse_parser_feed. */
typedef int (*sse_event_fn)(void *ctx, const stream_event *ev);

/* max_event_bytes caps one event (all its data lines); 0 = 8 MiB. */
sse_parser *sse_parser_new(stream_framing framing, size_t max_event_bytes);
void sse_parser_free(sse_parser *p);

/* Feeds bytes; calls fn for each event completed by them. Returns 0, the
 * first non-zero value fn returned, or -1 if an event exceeded the cap
 * (the parser is then unusable). */
int sse_parser_feed(sse_parser *p, const char *data, size_t len, sse_event_fn fn, void *ctx);

/* At end of stream: delivers a final event not followed by a blank line /
 * newline (NDJSON last line without \n; SSE data without the blank line).
 * Returns as sse_parser_feed. */
int sse_parser_finish(sse_parser *p, sse_event_fn fn, void *ctx);

#endif

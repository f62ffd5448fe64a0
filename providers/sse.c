/* Incremental SSE / NDJSON framing (see providers/sse.h).
 *
 * O(n) in total: a feed is split at line terminators (memchr, no rescans), whole
 * lines are handled straight from the caller's bytes, and only the
 * unfinished tail of a feed is copied into `line` to wait for the rest.
 *
 * Deliberate choices:
 * - SSE follows the WHATWG "event stream" rules for the fields we use:
 *   "field: value" with one optional space stripped, a line without a colon
 *   is a field with an empty value, ':' starts a comment, unknown fields
 *   (id, retry, ...) are ignored, a blank line dispatches, and a message
 *   without data lines is dropped. Unlike WHATWG, sse_parser_finish delivers
 *   a message cut off before its blank line (the header asks for it).
 * - A \r ends a line in SSE; a \n right after it (possibly in the next
 *   feed) is swallowed. In NDJSON only \n ends a line (JSON allows a bare
 *   \r as whitespace), a trailing \r is stripped, and lines holding only
 *   whitespace are skipped.
 * - A UTF-8 byte-order mark at the very start of the stream is skipped.
 * - The cap: an event's data longer than max_event_bytes is an error. Any
 *   line longer than the cap plus a little room for the field name is one
 *   too, even a comment, so that no input makes us buffer without bound.
 *   The checks depend only on the line, never on how it was split into
 *   feeds, so the outcome is the same for any split.
 * - Event pointers are valid only during the callback. When the callback
 *   returns non-zero, the rest of that feed is dropped; the parser stays
 *   consistent and may be fed again. */
#include "providers/sse.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SSE_DEFAULT_CAP ((size_t)8 << 20)
#define SSE_FIELD_ROOM 64       /* "event: " / "data: " and friends */
#define SSE_KEEP_CAPACITY 65536 /* larger buffers are released between events */

struct sse_parser {
    stream_framing framing;
    size_t cap;      /* max data bytes of one event */
    size_t line_cap; /* max raw bytes of one line */
    buf line;        /* the unfinished line carried between feeds */
    buf data;        /* SSE: data lines joined so far; NDJSON: the line */
    buf event;       /* SSE: the event name so far */
    bool has_data;   /* SSE: a data line was seen in this message */
    bool skip_lf;    /* the previous line ended in \r: a leading \n is its tail */
    bool first_line; /* nothing processed yet: a BOM may lead */
    bool failed;     /* an event broke the cap; every later call fails */
};

sse_parser *sse_parser_new(stream_framing framing, size_t max_event_bytes)
{
    sse_parser *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->framing = framing;
    p->cap = max_event_bytes ? max_event_bytes : SSE_DEFAULT_CAP;
    if (p->cap > SIZE_MAX - SSE_FIELD_ROOM) /* keep line_cap from wrapping */
        p->cap = SIZE_MAX - SSE_FIELD_ROOM;
    /* NDJSON: room for the \r that is stripped; SSE: for the field name. */
    p->line_cap = p->cap + (framing == FRAMING_NDJSON ? 1 : SSE_FIELD_ROOM);
    p->first_line = true;
    return p;
}

void sse_parser_free(sse_parser *p)
{
    if (!p) return;
    buf_free(&p->line);
    buf_free(&p->data);
    buf_free(&p->event);
    free(p);
}

/* Empties b, giving back its memory if one big event made it large. */
static void sse_buf_clear(buf *b)
{
    if (b->cap > SSE_KEEP_CAPACITY)
        buf_free(b);
    else
        buf_reset(b);
}

static int sse_fail(sse_parser *p)
{
    p->failed = true;
    sse_buf_clear(&p->line);
    sse_buf_clear(&p->data);
    sse_buf_clear(&p->event);
    return -1;
}

/* An event name is a C string: one that is empty as such (including a
 * name starting with a NUL byte) is no name. */
static int sse_deliver(const buf *data, const buf *event, sse_event_fn fn, void *ctx)
{
    stream_event ev = {
        .event = event && event->len && event->data[0] ? event->data : NULL,
        .data = data->data ? data->data : "",
        .data_len = data->len,
    };
    return fn(ctx, &ev);
}

/* ------------------------------------------------------------ SSE */

/* A blank line: deliver the message if it had data, then start afresh. */
static int sse_dispatch(sse_parser *p, sse_event_fn fn, void *ctx)
{
    int rc = 0;
    if (p->has_data) rc = sse_deliver(&p->data, &p->event, fn, ctx);
    p->has_data = false;
    sse_buf_clear(&p->data);
    sse_buf_clear(&p->event);
    return rc;
}

static bool sse_field_is(const char *field, size_t len, const char *name)
{
    return len == strlen(name) && memcmp(field, name, len) == 0;
}

static int sse_take_field(sse_parser *p, const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len);
    size_t flen = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    size_t vlen = len - (size_t)(value - line);
    if (vlen && value[0] == ' ') value++, vlen--;

    if (sse_field_is(line, flen, "data")) {
        size_t need = p->data.len + (p->has_data ? 1 : 0) + vlen;
        if (need > p->cap) return -1;
        if (p->has_data) buf_append_char(&p->data, '\n');
        buf_append(&p->data, value, vlen);
        p->has_data = true;
    } else if (sse_field_is(line, flen, "event")) {
        buf_reset(&p->event);
        buf_append(&p->event, value, vlen);
    }
    /* id, retry and unknown fields: nothing we use. */
    return 0;
}

static int sse_take_line(sse_parser *p, const char *line, size_t len, sse_event_fn fn, void *ctx)
{
    if (len == 0) return sse_dispatch(p, fn, ctx);
    if (line[0] == ':') return 0;
    return sse_take_field(p, line, len) < 0 ? sse_fail(p) : 0;
}

/* ------------------------------------------------------------ NDJSON */

static bool sse_is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

static int ndjson_take_line(sse_parser *p, const char *line, size_t len, sse_event_fn fn, void *ctx)
{
    if (len && line[len - 1] == '\r') len--;
    if (len > p->cap) return sse_fail(p);
    if (sse_is_blank(line, len)) return 0;
    buf_reset(&p->data);
    buf_append(&p->data, line, len);
    int rc = sse_deliver(&p->data, NULL, fn, ctx);
    sse_buf_clear(&p->data);
    return rc;
}

/* ------------------------------------------------------------ lines */

/* One complete line, without its terminator. */
static int sse_take_any_line(sse_parser *p, const char *line, size_t len, sse_event_fn fn,
                             void *ctx)
{
    if (len > p->line_cap) return sse_fail(p);
    if (p->first_line) {
        p->first_line = false;
        if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) line += 3, len -= 3;
    }
    if (p->framing == FRAMING_NDJSON) return ndjson_take_line(p, line, len, fn, ctx);
    return sse_take_line(p, line, len, fn, ctx);
}

/* Offset in data[0..len) of the first line terminator at or after i, or len
 * if none. *nl caches where the next \n is (SIZE_MAX: not searched yet) so
 * that a run of \r-ended lines does not rescan the rest of the feed for a
 * \n once per line: the whole feed is scanned once. */
static size_t sse_find_eol(const sse_parser *p, const char *data, size_t len, size_t i, size_t *nl)
{
    if (*nl == SIZE_MAX || *nl < i) {
        const char *q = memchr(data + i, '\n', len - i);
        *nl = q ? (size_t)(q - data) : len;
    }
    if (p->framing == FRAMING_SSE) {
        const char *cr = memchr(data + i, '\r', *nl - i);
        if (cr) return (size_t)(cr - data);
    }
    return *nl;
}

/* Keeps an unfinished line for the next feed. */
static int sse_keep_tail(sse_parser *p, const char *s, size_t len)
{
    if (p->line.len + len > p->line_cap) return sse_fail(p);
    buf_append(&p->line, s, len);
    return 0;
}

int sse_parser_feed(sse_parser *p, const char *data, size_t len, sse_event_fn fn, void *ctx)
{
    if (p->failed) return -1;
    size_t i = 0;
    if (p->skip_lf && len > 0) {
        p->skip_lf = false;
        if (data[0] == '\n') i = 1;
    }
    size_t nl = SIZE_MAX;
    while (i < len) {
        size_t end = sse_find_eol(p, data, len, i, &nl);
        if (end == len) return sse_keep_tail(p, data + i, len - i);

        const char *line = data + i;
        size_t line_len = end - i;
        if (p->line.len) {
            if (sse_keep_tail(p, line, line_len) < 0) return -1;
            line = p->line.data;
            line_len = p->line.len;
        }
        i = end + 1;
        if (data[i - 1] == '\r') {
            if (i == len)
                p->skip_lf = true;
            else if (data[i] == '\n')
                i++;
        }
        int rc = sse_take_any_line(p, line, line_len, fn, ctx);
        if (p->failed) return -1;
        sse_buf_clear(&p->line);
        if (rc) return rc;
    }
    return 0;
}

int sse_parser_finish(sse_parser *p, sse_event_fn fn, void *ctx)
{
    if (p->failed) return -1;
    p->skip_lf = false;
    int rc = 0;
    if (p->line.len) {
        rc = sse_take_any_line(p, p->line.data, p->line.len, fn, ctx);
        if (p->failed) return -1;
        sse_buf_clear(&p->line);
        if (rc) return rc;
    }
    if (p->framing == FRAMING_SSE) rc = sse_dispatch(p, fn, ctx);
    return rc;
}

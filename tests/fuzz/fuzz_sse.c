/* libFuzzer target for providers/sse.c.
 *
 * Input: byte 0 picks the cap (bit 0 set: 1 + byte 1 bytes, else the
 * default), bytes 2..5 give a cycle of piece sizes (1..17), the rest is the
 * stream. Both framings are run on it, once fed whole and once fed in
 * pieces; the events (and whether the cap was hit) must be identical, and
 * every event must satisfy the framing's invariants. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "providers/sse.h"

#define HEADER_LEN 6

typedef struct record {
    stream_framing framing;
    size_t cap;
    buf log; /* every event, serialised, to compare runs */
} record;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_sse: invariant broken: %s\n", what);
        abort();
    }
}

static void check_event(const record *r, const stream_event *ev)
{
    check(ev->data != NULL, "data is NULL");
    check(ev->data[ev->data_len] == '\0', "data not NUL-terminated");
    check(ev->data_len <= r->cap, "event above the cap");
    check(memchr(ev->data, '\r', ev->data_len) == NULL || r->framing == FRAMING_NDJSON,
          "SSE data holds a \\r");
    if (r->framing == FRAMING_NDJSON) {
        check(ev->event == NULL, "NDJSON event has a name");
        check(memchr(ev->data, '\n', ev->data_len) == NULL, "NDJSON data holds a \\n");
        check(ev->data_len > 0, "empty NDJSON event");
    }
    if (ev->event) {
        size_t n = strlen(ev->event);
        check(n > 0, "empty event name instead of NULL");
        check(strpbrk(ev->event, "\r\n") == NULL, "event name holds a line end");
    }
}

static int on_event(void *ctx, const stream_event *ev)
{
    record *r = ctx;
    check_event(r, ev);
    size_t elen = ev->event ? strlen(ev->event) : 0;
    buf_printf(&r->log, "%c%zu:", ev->event ? 'E' : 'N', elen);
    buf_append(&r->log, ev->event ? ev->event : "", elen);
    buf_printf(&r->log, "%zu:", ev->data_len);
    buf_append(&r->log, ev->data, ev->data_len);
    return 0;
}

/* Feeds s in pieces cycling through sizes[] (or whole when n_sizes is 0)
 * and finishes; returns 0 or -1. */
static int run(record *r, size_t cap_arg, const uint8_t *s, size_t len, const size_t *sizes,
               size_t n_sizes)
{
    sse_parser *p = sse_parser_new(r->framing, cap_arg);
    check(p != NULL, "sse_parser_new failed");
    int rc = 0;
    size_t off = 0, k = 0;
    while (off < len && rc == 0) {
        size_t n = n_sizes ? sizes[k++ % n_sizes] : len;
        if (n > len - off) n = len - off;
        rc = sse_parser_feed(p, (const char *)s + off, n, on_event, r);
        off += n;
    }
    if (rc == 0) rc = sse_parser_finish(p, on_event, r);
    check(rc == 0 || rc == -1, "unexpected return value");
    if (rc == -1) check(sse_parser_feed(p, "x\n\n", 3, on_event, r) == -1, "usable after failing");
    sse_parser_free(p);
    return rc;
}

static void fuzz_framing(stream_framing f, size_t cap_arg, const uint8_t *s, size_t len,
                         const size_t *sizes)
{
    record whole = {.framing = f, .cap = cap_arg ? cap_arg : (size_t)8 << 20};
    record parts = whole;
    whole.log = (buf)BUF_INIT;
    parts.log = (buf)BUF_INIT;
    int rc_whole = run(&whole, cap_arg, s, len, NULL, 0);
    int rc_parts = run(&parts, cap_arg, s, len, sizes, 4);
    check(rc_whole == rc_parts, "result depends on the split");
    check(whole.log.len == parts.log.len &&
              (whole.log.len == 0 || memcmp(whole.log.data, parts.log.data, whole.log.len) == 0),
          "events depend on the split");
    buf_free(&whole.log);
    buf_free(&parts.log);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER_LEN) return 0;
    size_t cap = (data[0] & 1) ? (size_t)data[1] + 1 : 0;
    size_t sizes[4];
    for (int i = 0; i < 4; i++)
        sizes[i] = (size_t)(data[2 + i] % 17) + 1;
    fuzz_framing(FRAMING_SSE, cap, data + HEADER_LEN, size - HEADER_LEN, sizes);
    fuzz_framing(FRAMING_NDJSON, cap, data + HEADER_LEN, size - HEADER_LEN, sizes);
    return 0;
}

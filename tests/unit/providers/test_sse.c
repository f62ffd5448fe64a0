/* Unit tests for providers/sse.c: SSE and NDJSON framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "providers/sse.h"

/* ------------------------------------------------------------ collector */

#define MAX_EVENTS 64

typedef struct collected {
    int n;
    struct {
        char *event; /* NULL when the event had no name */
        char *data;
        size_t len;
    } ev[MAX_EVENTS];
    int stop_after; /* return 7 from the callback after this many; 0 = never */
} collected;

static int collect(void *ctx, const stream_event *ev)
{
    collected *c = ctx;
    assert_true(c->n < MAX_EVENTS);
    assert_non_null(ev->data);
    assert_int_equal(ev->data[ev->data_len], '\0'); /* json-c can take it as is */
    c->ev[c->n].event = ev->event ? strdup(ev->event) : NULL;
    c->ev[c->n].data = malloc(ev->data_len + 1);
    memcpy(c->ev[c->n].data, ev->data, ev->data_len + 1);
    c->ev[c->n].len = ev->data_len;
    c->n++;
    return c->stop_after && c->n >= c->stop_after ? 7 : 0;
}

static void collected_free(collected *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->ev[i].event);
        free(c->ev[i].data);
    }
    c->n = 0;
}

/* Feeds s in pieces of `piece` bytes (0 = whole), then finishes. Returns the
 * first non-zero result. */
static int run(stream_framing f, size_t cap, const char *s, size_t len, size_t piece, collected *c)
{
    sse_parser *p = sse_parser_new(f, cap);
    assert_non_null(p);
    int rc = 0;
    size_t step = piece ? piece : (len ? len : 1);
    for (size_t off = 0; off < len && rc == 0; off += step) {
        size_t n = len - off < step ? len - off : step;
        rc = sse_parser_feed(p, s + off, n, collect, c);
    }
    if (rc == 0) rc = sse_parser_finish(p, collect, c);
    sse_parser_free(p);
    return rc;
}

static int run_str(stream_framing f, const char *s, collected *c)
{
    return run(f, 0, s, strlen(s), 0, c);
}

static void expect_event(const collected *c, int i, const char *event, const char *data)
{
    assert_true(i < c->n);
    if (event)
        assert_string_equal(c->ev[i].event, event);
    else
        assert_null(c->ev[i].event);
    assert_int_equal(c->ev[i].len, strlen(data));
    assert_memory_equal(c->ev[i].data, data, strlen(data) + 1);
}

/* ------------------------------------------------------------ SSE rules */

static void test_sse_openai_stream(void **state)
{
    collected c = {0};
    assert_int_equal(run_str(FRAMING_SSE, "data: {\"a\":1}\n\ndata: [DONE]\n\n", &c), 0);
    assert_int_equal(c.n, 2);
    expect_event(&c, 0, NULL, "{\"a\":1}");
    expect_event(&c, 1, NULL, "[DONE]");
    collected_free(&c);
}

static void test_sse_named_events(void **state)
{
    collected c = {0};
    const char *s = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
                    "event: ping\ndata: {}\n\n"
                    "event:error\ndata:{\"type\":\"error\"}\n\n";
    assert_int_equal(run_str(FRAMING_SSE, s, &c), 0);
    assert_int_equal(c.n, 3);
    expect_event(&c, 0, "message_start", "{\"type\":\"message_start\"}");
    expect_event(&c, 1, "ping", "{}");
    expect_event(&c, 2, "error", "{\"type\":\"error\"}");
    collected_free(&c);
}

static void test_sse_one_space_stripped(void **state)
{
    collected c = {0};
    const char *s = "data:x\n\ndata:  y\n\ndata: \n\ndata\n\ndata:\n\nevent:  e\ndata: z\n\n";
    assert_int_equal(run_str(FRAMING_SSE, s, &c), 0);
    assert_int_equal(c.n, 6);
    expect_event(&c, 0, NULL, "x");
    expect_event(&c, 1, NULL, " y");
    expect_event(&c, 2, NULL, ""); /* a data line, even empty, makes a message */
    expect_event(&c, 3, NULL, ""); /* "data" without a colon: empty value */
    expect_event(&c, 4, NULL, "");
    expect_event(&c, 5, " e", "z");
    collected_free(&c);
}

static void test_sse_data_lines_joined(void **state)
{
    collected c = {0};
    assert_int_equal(run_str(FRAMING_SSE, "data: a\ndata: b\ndata:c\n\ndata:\ndata:\n\n", &c), 0);
    assert_int_equal(c.n, 2);
    expect_event(&c, 0, NULL, "a\nb\nc");
    expect_event(&c, 1, NULL, "\n");
    collected_free(&c);
}

static void test_sse_comments_and_unknown_fields(void **state)
{
    collected c = {0};
    const char *s = ": keep-alive\n\n"
                    ":\n"
                    "id: 5\nretry: 100\nfoo: bar\nDATA: no\ndata : no\n"
                    "data: x\n: comment inside\ndata: y\n\n";
    assert_int_equal(run_str(FRAMING_SSE, s, &c), 0);
    assert_int_equal(c.n, 1);
    expect_event(&c, 0, NULL, "x\ny");
    collected_free(&c);
}

static void test_sse_message_without_data_dropped(void **state)
{
    collected c = {0};
    /* The event name is forgotten with the empty message. */
    assert_int_equal(run_str(FRAMING_SSE, "event: ping\n\nid: 1\n\n\n\ndata: x\n\n", &c), 0);
    assert_int_equal(c.n, 1);
    expect_event(&c, 0, NULL, "x");
    collected_free(&c);
}

static void test_sse_line_endings(void **state)
{
    collected c = {0};
    const char *s = "data: crlf\r\n\r\n"
                    "data: cr\r\r"
                    "event: mixed\r\ndata: a\rdata: b\n\r\n";
    assert_int_equal(run_str(FRAMING_SSE, s, &c), 0);
    assert_int_equal(c.n, 3);
    expect_event(&c, 0, NULL, "crlf");
    expect_event(&c, 1, NULL, "cr");
    expect_event(&c, 2, "mixed", "a\nb");
    collected_free(&c);
}

static void test_sse_crlf_split_across_feeds(void **state)
{
    collected c = {0};
    sse_parser *p = sse_parser_new(FRAMING_SSE, 0);
    /* If the \n after "a\r" were a line of its own it would dispatch "a". */
    assert_int_equal(sse_parser_feed(p, "data: a\r", 8, collect, &c), 0);
    assert_int_equal(sse_parser_feed(p, "", 0, collect, &c), 0);
    assert_int_equal(sse_parser_feed(p, "\n", 1, collect, &c), 0);
    assert_int_equal(sse_parser_feed(p, "data: b\r", 8, collect, &c), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(sse_parser_feed(p, "\n\r", 2, collect, &c), 0);
    assert_int_equal(c.n, 1); /* the \r is a blank line: dispatched without waiting */
    assert_int_equal(sse_parser_feed(p, "\ndata: c\n\n", 10, collect, &c), 0);
    assert_int_equal(sse_parser_finish(p, collect, &c), 0);
    assert_int_equal(c.n, 2);
    expect_event(&c, 0, NULL, "a\nb");
    expect_event(&c, 1, NULL, "c");
    sse_parser_free(p);
    collected_free(&c);
}

static void test_sse_bom_skipped(void **state)
{
    collected c = {0};
    assert_int_equal(run_str(FRAMING_SSE,
                             "\xEF\xBB\xBF"
                             "data: x\n\n",
                             &c),
                     0);
    assert_int_equal(c.n, 1);
    expect_event(&c, 0, NULL, "x");
    collected_free(&c);
}

static void test_sse_nul_event_name_is_no_name(void **state)
{
    collected c = {0};
    static const char s[] = "event: \0x\ndata: y\n\nevent: a\0b\ndata: z\n\n";
    assert_int_equal(run(FRAMING_SSE, 0, s, sizeof s - 1, 0, &c), 0);
    assert_int_equal(c.n, 2);
    expect_event(&c, 0, NULL, "y");
    expect_event(&c, 1, "a", "z"); /* a C string ends at the NUL */
    collected_free(&c);
}

static void test_sse_binary_data_kept(void **state)
{
    collected c = {0};
    static const char s[] = "data: a\0b\n\n";
    assert_int_equal(run(FRAMING_SSE, 0, s, sizeof s - 1, 0, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.ev[0].len, 3);
    assert_memory_equal(c.ev[0].data, "a\0b", 4);
    collected_free(&c);
}

/* ------------------------------------------------------------ splitting */

static void assert_same(const collected *a, const collected *b)
{
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        assert_int_equal(a->ev[i].len, b->ev[i].len);
        assert_memory_equal(a->ev[i].data, b->ev[i].data, a->ev[i].len);
        assert_int_equal(a->ev[i].event == NULL, b->ev[i].event == NULL);
        if (a->ev[i].event) assert_string_equal(a->ev[i].event, b->ev[i].event);
    }
}

static void check_splits(stream_framing f, const char *s, int want_events)
{
    static const size_t pieces[] = {1, 2, 3, 7, 64};
    collected whole = {0};
    assert_int_equal(run(f, 0, s, strlen(s), 0, &whole), 0);
    assert_int_equal(whole.n, want_events);
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        collected part = {0};
        assert_int_equal(run(f, 0, s, strlen(s), pieces[i], &part), 0);
        assert_same(&whole, &part);
        collected_free(&part);
    }
    collected_free(&whole);
}

static void test_sse_any_split_same_events(void **state)
{
    const char *s = "\xEF\xBB\xBF: hello\r\n"
                    "event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n"
                    "event: content_block_delta\rdata: {\"t\":\"a\"}\r\r"
                    "data: line1\ndata: line2\n\n"
                    "id: 9\nretry: 5\n: ping\n\n"
                    "event: e\ndata\r\n\r\n"
                    "data: [DONE]\n\n"
                    "data: tail without blank line";
    check_splits(FRAMING_SSE, s, 6);
}

/* ------------------------------------------------------------ NDJSON */

static void test_ndjson_lines(void **state)
{
    collected c = {0};
    const char *s = "{\"a\":1}\n\n{\"b\":2}\r\n   \n\t\r\n{\"c\":\r3}\n{\"done\":true}";
    assert_int_equal(run_str(FRAMING_NDJSON, s, &c), 0);
    assert_int_equal(c.n, 4);
    expect_event(&c, 0, NULL, "{\"a\":1}");
    expect_event(&c, 1, NULL, "{\"b\":2}");
    expect_event(&c, 2, NULL, "{\"c\":\r3}"); /* a bare \r is JSON whitespace, not a line end */
    expect_event(&c, 3, NULL, "{\"done\":true}");
    collected_free(&c);
}

static void test_ndjson_any_split_same_events(void **state)
{
    const char *s = "{\"message\":{\"content\":\"Hel\"},\"done\":false}\r\n"
                    "\n"
                    "{\"message\":{\"content\":\"lo\"},\"done\":false}\n"
                    "data: not special\n"
                    "{\"done\":true,\"eval_count\":2}";
    check_splits(FRAMING_NDJSON, s, 4);
}

/* ------------------------------------------------------------ finish */

static void test_finish_delivers_tail(void **state)
{
    collected c = {0};
    sse_parser *p = sse_parser_new(FRAMING_NDJSON, 0);
    assert_int_equal(sse_parser_feed(p, "{\"a\":1}\n{\"done\":", 16, collect, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(sse_parser_feed(p, "true}", 5, collect, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(sse_parser_finish(p, collect, &c), 0);
    assert_int_equal(c.n, 2);
    expect_event(&c, 1, NULL, "{\"done\":true}");
    assert_int_equal(sse_parser_finish(p, collect, &c), 0); /* nothing twice */
    assert_int_equal(c.n, 2);
    sse_parser_free(p);
    collected_free(&c);

    /* SSE: complete data line, no blank line. */
    p = sse_parser_new(FRAMING_SSE, 0);
    assert_int_equal(sse_parser_feed(p, "event: x\ndata: a\n", 17, collect, &c), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(sse_parser_finish(p, collect, &c), 0);
    assert_int_equal(c.n, 1);
    expect_event(&c, 0, "x", "a");
    assert_int_equal(sse_parser_finish(p, collect, &c), 0);
    assert_int_equal(c.n, 1);
    sse_parser_free(p);
    collected_free(&c);

    /* SSE: data line cut before its newline; a lone event name is dropped. */
    assert_int_equal(run_str(FRAMING_SSE, "data: a\ndata: b", &c), 0);
    assert_int_equal(c.n, 1);
    expect_event(&c, 0, NULL, "a\nb");
    collected_free(&c);
    assert_int_equal(run_str(FRAMING_SSE, "data: a\n\nevent: x\n", &c), 0);
    assert_int_equal(c.n, 1);
    collected_free(&c);
    assert_int_equal(run_str(FRAMING_SSE, "", &c), 0);
    assert_int_equal(run_str(FRAMING_NDJSON, "", &c), 0);
    assert_int_equal(run_str(FRAMING_NDJSON, "  \r", &c), 0);
    assert_int_equal(c.n, 0);
}

/* ------------------------------------------------------------ cap */

static void test_cap_sse(void **state)
{
    collected c = {0};
    /* 8 data bytes: at the cap of 8 it passes, over a cap of 7 it fails. */
    const char *s = "data: 1234\ndata: 567\n\n";
    assert_int_equal(run(FRAMING_SSE, 8, s, strlen(s), 0, &c), 0);
    assert_int_equal(c.n, 1);
    expect_event(&c, 0, NULL, "1234\n567");
    collected_free(&c);
    for (size_t piece = 0; piece <= 3; piece++) {
        assert_int_equal(run(FRAMING_SSE, 7, s, strlen(s), piece, &c), -1);
        assert_int_equal(c.n, 0);
    }

    /* Events before the oversized one are delivered; the parser then stays failed. */
    sse_parser *p = sse_parser_new(FRAMING_SSE, 4);
    const char *t = "data: ok\n\ndata: toolong\n\ndata: ok\n\n";
    assert_int_equal(sse_parser_feed(p, t, strlen(t), collect, &c), -1);
    assert_int_equal(c.n, 1);
    assert_int_equal(sse_parser_feed(p, "data: a\n\n", 9, collect, &c), -1);
    assert_int_equal(sse_parser_finish(p, collect, &c), -1);
    assert_int_equal(c.n, 1);
    sse_parser_free(p);
    collected_free(&c);

    /* A line with no end is refused once it outgrows the cap, even a comment. */
    p = sse_parser_new(FRAMING_SSE, 16);
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++)
        rc = sse_parser_feed(p, ":xxxxxxxxx", 10, collect, &c);
    assert_int_equal(rc, -1);
    sse_parser_free(p);
}

static void test_cap_ndjson(void **state)
{
    collected c = {0};
    const char *s = "12345\r\n";
    assert_int_equal(run(FRAMING_NDJSON, 5, s, strlen(s), 0, &c), 0);
    assert_int_equal(c.n, 1);
    collected_free(&c);
    assert_int_equal(run(FRAMING_NDJSON, 5, s, strlen(s), 1, &c), 0);
    assert_int_equal(c.n, 1);
    collected_free(&c);
    assert_int_equal(run(FRAMING_NDJSON, 4, s, strlen(s), 0, &c), -1);
    assert_int_equal(run(FRAMING_NDJSON, 4, s, strlen(s), 1, &c), -1);
    assert_int_equal(run(FRAMING_NDJSON, 4, "12345", 5, 0, &c), -1); /* at finish */
    assert_int_equal(c.n, 0);
}

static void test_cap_default(void **state)
{
    /* cap 0 means 8 MiB: a 1 MiB event passes. */
    size_t n = (size_t)1 << 20;
    char *s = malloc(n + 9);
    memcpy(s, "data: ", 6);
    memset(s + 6, 'x', n);
    memcpy(s + 6 + n, "\n\n", 3);
    collected c = {0};
    assert_int_equal(run(FRAMING_SSE, 0, s, n + 8, 4096, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.ev[0].len, n);
    collected_free(&c);
    free(s);
}

/* ------------------------------------------------------------ callback */

static void test_callback_stops_feed(void **state)
{
    collected c = {.stop_after = 1};
    sse_parser *p = sse_parser_new(FRAMING_SSE, 0);
    const char *s = "data: 1\n\ndata: 2\n\n";
    assert_int_equal(sse_parser_feed(p, s, strlen(s), collect, &c), 7);
    assert_int_equal(c.n, 1);
    c.stop_after = 0;
    /* Still usable afterwards. */
    assert_int_equal(sse_parser_feed(p, "data: 3\n\n", 9, collect, &c), 0);
    assert_int_equal(c.n, 2);
    expect_event(&c, 1, NULL, "3");
    sse_parser_free(p);
    collected_free(&c);

    c.stop_after = 1;
    assert_int_equal(run_str(FRAMING_NDJSON, "{}", &c), 7); /* from finish */
    collected_free(&c);
    sse_parser_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_openai_stream),
        cmocka_unit_test(test_sse_named_events),
        cmocka_unit_test(test_sse_one_space_stripped),
        cmocka_unit_test(test_sse_data_lines_joined),
        cmocka_unit_test(test_sse_comments_and_unknown_fields),
        cmocka_unit_test(test_sse_message_without_data_dropped),
        cmocka_unit_test(test_sse_line_endings),
        cmocka_unit_test(test_sse_crlf_split_across_feeds),
        cmocka_unit_test(test_sse_bom_skipped),
        cmocka_unit_test(test_sse_nul_event_name_is_no_name),
        cmocka_unit_test(test_sse_binary_data_kept),
        cmocka_unit_test(test_sse_any_split_same_events),
        cmocka_unit_test(test_ndjson_lines),
        cmocka_unit_test(test_ndjson_any_split_same_events),
        cmocka_unit_test(test_finish_delivers_tail),
        cmocka_unit_test(test_cap_sse),
        cmocka_unit_test(test_cap_ndjson),
        cmocka_unit_test(test_cap_default),
        cmocka_unit_test(test_callback_stops_feed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

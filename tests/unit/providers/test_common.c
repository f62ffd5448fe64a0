/* providers/common.c (shared adapter helpers) and providers/registry.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "providers/provider.h"

/* ------------------------------------------------------------ upstream_request */

static void test_request_headers(void **state)
{
    upstream_request r;
    upstream_request_init(&r);
    upstream_request_add_header(&r, "Authorization", "Bearer k");
    upstream_request_add_header(&r, "Expect", "");
    upstream_request_add_header(&r, "X-Evil", "a\r\nHost: evil");
    upstream_request_add_header(&r, "Bad:Name", "v");
    const char *lines[] = {"X-A:  1", "nocolon", "X-B:2", NULL};
    upstream_request_add_header_lines(&r, lines);
    upstream_request_add_header_lines(&r, NULL);
    upstream_request_finish_headers(&r);
    assert_int_equal(r.n_headers, 4);
    assert_string_equal(r.headers[0], "Authorization: Bearer k");
    /* Exactly "Expect:" so curl drops its own Expect header. */
    assert_string_equal(r.headers[1], "Expect:");
    assert_string_equal(r.headers[2], "X-A: 1");
    assert_string_equal(r.headers[3], "X-B: 2");
    assert_null(r.headers[4]);
    upstream_request_free(&r);
    upstream_request_free(&r); /* twice is harmless */
    upstream_request_free(NULL);
}

static void test_request_header_cap(void **state)
{
    upstream_request r;
    upstream_request_init(&r);
    char name[16];
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "X-H%d", i);
        upstream_request_add_header(&r, name, "v");
    }
    upstream_request_finish_headers(&r);
    assert_int_equal(r.n_headers, 15);
    assert_string_equal(r.headers[14], "X-H14: v");
    assert_null(r.headers[15]);
    upstream_request_free(&r);
}

static void test_header_get(void **state)
{
    upstream_headers hs = {.n = 2};
    hs.h[0].name = "content-type";
    hs.h[0].value = "application/json";
    hs.h[1].name = "retry-after";
    hs.h[1].value = "2";
    assert_string_equal(upstream_header_get(&hs, "retry-after"), "2");
    assert_string_equal(upstream_header_get(&hs, "Content-Type"), "application/json");
    assert_null(upstream_header_get(&hs, "x-none"));
    assert_null(upstream_header_get(NULL, "retry-after"));
}

/* ------------------------------------------------------------ retry-after */

static int64_t retry_after(const char *ms, const char *ra)
{
    upstream_headers hs = {.n = 0};
    if (ms) {
        hs.h[hs.n].name = "retry-after-ms";
        hs.h[hs.n++].value = (char *)ms;
    }
    if (ra) {
        hs.h[hs.n].name = "retry-after";
        hs.h[hs.n++].value = (char *)ra;
    }
    return provider_retry_after_ms(&hs);
}

static void http_date(char *out, size_t cap, time_t when, const char *fmt)
{
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(out, cap, fmt, &tm);
}

static void test_retry_after(void **state)
{
    assert_int_equal(retry_after(NULL, NULL), -1);
    assert_int_equal(retry_after("250", NULL), 250);
    assert_int_equal(retry_after("250", "9"), 250);
    assert_int_equal(retry_after("12.7", NULL), 12);
    assert_int_equal(retry_after(NULL, "9"), 9000);
    assert_int_equal(retry_after(NULL, " 1.5 "), 1500);
    assert_int_equal(retry_after(NULL, "0"), 0);
    assert_int_equal(retry_after("-5", "2"), 2000);
    assert_int_equal(retry_after("abc", NULL), -1);
    assert_int_equal(retry_after(NULL, "-3"), -1);
    assert_int_equal(retry_after(NULL, "3s"), -1);
    assert_int_equal(retry_after(NULL, ""), -1);
    assert_int_equal(retry_after(NULL, "99999999999999999999"), -1);

    char d[64];
    time_t now = time(NULL);
    http_date(d, sizeof d, now + 60, "%a, %d %b %Y %H:%M:%S GMT");
    assert_in_range(retry_after(NULL, d), 58000, 61000);
    http_date(d, sizeof d, now + 60, "%A, %d-%b-%y %H:%M:%S GMT");
    assert_in_range(retry_after(NULL, d), 58000, 61000);
    http_date(d, sizeof d, now + 60, "%a %b %e %H:%M:%S %Y");
    assert_in_range(retry_after(NULL, d), 58000, 61000);
    /* A date in the past means "now". */
    assert_int_equal(retry_after(NULL, "Sun, 06 Nov 1994 08:49:37 GMT"), 0);
    assert_int_equal(retry_after(NULL, "Sun, 06 Nov 1994 08:49:37 GMT junk"), -1);
}

/* ------------------------------------------------------------ classification */

static void test_classify_status_table(void **state)
{
    static const struct {
        int status;
        error_class cls;
        int client;
        const char *type;
    } rows[] = {
        {429, ERRCLASS_RETRYABLE, 429, "rate_limit_error"},
        {503, ERRCLASS_RETRYABLE, 503, "server_error"},
        {529, ERRCLASS_RETRYABLE, 503, "server_error"},
        {408, ERRCLASS_RETRYABLE, 504, "server_error"},
        {500, ERRCLASS_AMBIGUOUS, 502, "server_error"},
        {502, ERRCLASS_AMBIGUOUS, 502, "server_error"},
        {504, ERRCLASS_AMBIGUOUS, 504, "server_error"},
        {520, ERRCLASS_AMBIGUOUS, 502, "server_error"},
        {400, ERRCLASS_FATAL, 400, "invalid_request_error"},
        {413, ERRCLASS_FATAL, 413, "invalid_request_error"},
        {422, ERRCLASS_FATAL, 422, "invalid_request_error"},
        {401, ERRCLASS_FATAL, 502, "upstream_auth_error"},
        {403, ERRCLASS_FATAL, 502, "upstream_auth_error"},
        {404, ERRCLASS_FATAL, 502, "upstream_model_not_found"},
        {409, ERRCLASS_FATAL, 502, "upstream_error"},
        {302, ERRCLASS_FATAL, 502, "upstream_error"},
        {0, ERRCLASS_FATAL, 502, "upstream_error"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        upstream_error e;
        memset(&e, 0x5a, sizeof e);
        provider_classify_status(rows[i].status, &e);
        assert_int_equal(e.cls, rows[i].cls);
        assert_int_equal(e.client_status, rows[i].client);
        assert_string_equal(e.type, rows[i].type);
        assert_int_equal(e.retry_after_ms, -1);
        assert_false(e.quota_exhausted);
        assert_true(strlen(e.message) > 10);
    }
    upstream_error e;
    provider_classify_status(404, &e);
    assert_non_null(strstr(e.message, "upstream model name"));
}

static void test_classify_code(void **state)
{
    upstream_error e;
    provider_classify_status(429, &e);
    assert_true(provider_classify_code("insufficient_quota", &e));
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_int_equal(e.client_status, 429);
    assert_true(e.quota_exhausted);

    provider_classify_status(400, &e);
    assert_true(provider_classify_code("context_length_exceeded", &e));
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_int_equal(e.client_status, 400);
    assert_string_equal(e.code, "context_length_exceeded");

    provider_classify_status(400, &e);
    assert_true(provider_classify_code("model_not_found", &e));
    assert_int_equal(e.client_status, 502);

    provider_classify_status(400, &e);
    assert_false(provider_classify_code("invalid_value", &e));
    assert_false(provider_classify_code(NULL, &e));
    assert_int_equal(e.client_status, 400);
}

static void test_error_detail(void **state)
{
    upstream_error e;
    provider_classify_status(400, &e);
    provider_error_add_detail(&e, "line1\nline2\ttab", 15);
    assert_non_null(strstr(e.message, ": line1 line2 tab"));

    /* Long UTF-8 text is cut on a character boundary. */
    char big[2000];
    size_t n = 0;
    while (n + 2 < sizeof big)
        big[n++] = '\xc3', big[n++] = '\xa9';
    provider_classify_status(400, &e);
    provider_error_add_detail(&e, big, n);
    size_t len = strlen(e.message);
    assert_true(len < sizeof e.message);
    const unsigned char *m = (const unsigned char *)e.message;
    assert_true(m[len - 1] == 0xa9);

    provider_classify_status(401, &e);
    char before[sizeof e.message];
    memcpy(before, e.message, sizeof before);
    provider_error_add_detail(&e, "key sk-123", 10);
    assert_string_equal(e.message, before);
}

static void test_transport_and_bad_response(void **state)
{
    upstream_error e;
    provider_transport_error("connect to api.example.com:443 refused", false, &e);
    assert_int_equal(e.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(e.client_status, 502);
    assert_non_null(strstr(e.message, "refused"));
    provider_transport_error("first byte after 30 s", true, &e);
    assert_int_equal(e.client_status, 504);
    assert_int_equal(e.retry_after_ms, -1);

    provider_bad_response_error("not JSON", "<html>\n", 7, &e);
    assert_int_equal(e.cls, ERRCLASS_AMBIGUOUS);
    assert_int_equal(e.client_status, 502);
    assert_null(strchr(e.message, '\n'));
}

/* ------------------------------------------------------------ JSON helpers */

static void test_parse_object(void **state)
{
    char err[128];
    const char *ok = "  {\"a\":1}\r\n";
    json_object *o = provider_parse_object(NULL, ok, strlen(ok), err, sizeof err);
    assert_non_null(o);
    int64_t v = 0;
    assert_true(provider_get_int(o, "a", &v));
    assert_int_equal(v, 1);
    json_object_put(o);

    json_tokener *tok = json_tokener_new();
    const char *bad[] = {"", "   ", "[1]", "{\"a\":", "{\"a\":1}x", "{\"a\":1}{}", "nul"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_null(provider_parse_object(tok, bad[i], strlen(bad[i]), err, sizeof err));
        assert_true(err[0] != '\0');
    }
    /* The tokener is reusable after a failure. */
    o = provider_parse_object(tok, "{}", 2, err, sizeof err);
    assert_non_null(o);
    json_object_put(o);
    json_tokener_free(tok);
}

static void test_get_int_and_count(void **state)
{
    json_object *o = json_tokener_parse("{\"i\":5,\"d\":2.9,\"s\":\"3\",\"n\":-4,\"big\":1e30,"
                                        "\"huge\":9000000000000000000}");
    int64_t v = 0;
    assert_true(provider_get_int(o, "i", &v) && v == 5);
    assert_true(provider_get_int(o, "d", &v) && v == 2);
    assert_false(provider_get_int(o, "s", &v));
    assert_false(provider_get_int(o, "big", &v));
    assert_false(provider_get_int(o, "missing", &v));
    assert_false(provider_get_int(NULL, "i", &v));
    assert_true(provider_get_count(o, "n", &v) && v == 0);
    assert_true(provider_get_count(o, "huge", &v) && v == 1000000000000LL);
    json_object_put(o);
}

static void test_append_json(void **state)
{
    /* Escapes on both sides of 8-byte boundaries, UTF-8, DEL and slashes. */
    const char *src = "{\"k\\\"ey\":[\"0123456\\\"89abcdef\\\\x\",\"\\u0001\\u001f\\n\\r\\t"
                      "\",\"caf\u00e9 \xe2\x82\xac a/b \x7f\",1.50,-0,true,null,{},[],"
                      "\"0123456789abcdefghij\\\"\"],\"n\":12345678901234}";
    json_object *v = json_tokener_parse(src);
    assert_non_null(v);
    buf b = BUF_INIT;
    provider_append_json(&b, v);
    const char *jc =
        json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    assert_string_equal(b.data, jc);
    json_object *back = json_tokener_parse(b.data);
    assert_true(json_object_equal(back, v));
    json_object_put(back);
    buf_free(&b);
    json_object_put(v);
}

static void test_content_text(void **state)
{
    json_object *c = json_tokener_parse(
        "[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
        "\"x\"}},{\"type\":\"refusal\",\"refusal\":\"b\"},{\"type\":null},5,{\"type\":\"text\"}]");
    buf b = BUF_INIT;
    provider_content_text(c, &b);
    assert_string_equal(b.data, "ab");
    json_object_put(c);
    buf_reset(&b);
    c = json_object_new_string("plain");
    provider_content_text(c, &b);
    assert_string_equal(b.data, "plain");
    json_object_put(c);
    buf_reset(&b);
    provider_content_text(NULL, &b);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

/* The same text from the client's tokens, escapes undone. */
static void test_doc_content_text(void **state)
{
    static const char *json =
        "[[{\"type\":\"text\",\"text\":\"a\\u00e9\"},{\"type\":\"image_url\",\"image_url\":"
        "{\"url\":\"x\"}},{\"type\":\"refusal\",\"refusal\":\"b\"},{\"type\":null},5,"
        "{\"type\":\"text\"}],\"pl\\nain\",null,7]";
    jdoc d = JDOC_INIT;
    assert_int_equal(jdoc_parse(&d, json, strlen(json), NULL, 0, NULL), 0);
    buf b = BUF_INIT;
    provider_doc_content_text(&d, jdoc_index(&d, 0, 0), &b);
    assert_string_equal(b.data, "a\xc3\xa9"
                                "b");
    buf_reset(&b);
    provider_doc_content_text(&d, jdoc_index(&d, 0, 1), &b);
    assert_string_equal(b.data, "pl\nain");
    buf_reset(&b);
    provider_doc_content_text(&d, jdoc_index(&d, 0, 2), &b);
    provider_doc_content_text(&d, jdoc_index(&d, 0, 3), &b);
    provider_doc_content_text(&d, JT_NONE, &b);
    assert_int_equal(b.len, 0);
    buf_free(&b);
    jdoc_free(&d);
}

/* ------------------------------------------------------------ registry */

static void test_registry(void **state)
{
    const char *kinds[] = {"openai", "anthropic", "gemini", "ollama"};
    for (size_t i = 0; i < 4; i++) {
        const provider_ops *ops = provider_find(kinds[i]);
        assert_non_null(ops);
        assert_string_equal(ops->kind, kinds[i]);
        assert_non_null(ops->encode);
        assert_non_null(ops->decode);
        assert_non_null(ops->stream_event);
        assert_non_null(ops->classify);
        assert_non_null(ops->usage_map);
    }
    assert_null(provider_find("azure"));
    assert_null(provider_find(NULL));
    int n = 0;
    for (const provider_ops *const *p = provider_all(); *p; p++)
        n++;
    assert_int_equal(n, 4);
    assert_int_equal(provider_find("ollama")->framing, FRAMING_NDJSON);
    assert_int_equal(provider_find("openai")->framing, FRAMING_SSE);
}

/* One table: the client's effort → a budget, and a cap → an effort. */
static void test_effort_table(void **state)
{
    static const struct {
        const char *name;
        int64_t budget;
    } cases[] = {{"none", 0},     {"minimal", 0},   {"low", 1024}, {"medium", 4096},
                 {"high", 16384}, {"xhigh", 16384}, {"max", 16384}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t b = -1;
        assert_true(provider_effort_budget(cases[i].name, &b));
        assert_int_equal(b, cases[i].budget);
    }
    int64_t b = 7;
    assert_false(provider_effort_budget("HIGH", &b));
    assert_false(provider_effort_budget("", &b));
    assert_false(provider_effort_budget(NULL, &b));
    assert_int_equal(b, 7);
    assert_string_equal(provider_effort_names(), "none, minimal, low, medium, high, xhigh or max");
    /* a cap becomes the highest of low/medium/high that fits under it */
    assert_string_equal(provider_reasoning_effort(1), "low");
    assert_string_equal(provider_reasoning_effort(4095), "low");
    assert_string_equal(provider_reasoning_effort(4096), "medium");
    assert_string_equal(provider_reasoning_effort(16383), "medium");
    assert_string_equal(provider_reasoning_effort(16384), "high");
    assert_string_equal(provider_reasoning_effort(1000000), "high");
}

/* The budget for the token dialects: the client's control, else the cap,
 * only for a model that reasons. */
static void test_reasoning_budget(void **state)
{
    model_price yes = {.name = "r", .reasoning = true}, no = {.name = "n"};
    target tr = {.model = "r", .price = &yes}, tn = {.model = "n", .price = &no};
    static const struct {
        const char *json;
        bool client;
        int64_t want;
    } cases[] = {
        {"{}", false, 3000}, /* the cap */
        {"{\"reasoning_effort\":\"medium\"}", true, 4096},
        {"{\"reasoning\":{\"effort\":\"high\"}}", true, 16384},
        {"{\"reasoning_effort\":\"none\"}", true, 0},
        {"{\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2500}}", true, 2500},
        {"{\"thinking\":{\"type\":\"disabled\"}}", true, 0},
        {"{\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":-5}}", true, -1},
        {"{\"reasoning\":{\"summary\":\"auto\"}}", true, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        jdoc doc = JDOC_INIT;
        assert_int_equal(jdoc_parse(&doc, cases[i].json, strlen(cases[i].json), NULL, 0, NULL), 0);
        canon_request req = {
            .doc = &doc, .reasoning_set = cases[i].client, .thinking_budget = 3000};
        if (provider_reasoning_budget(&req, &tr) != cases[i].want)
            fail_msg("%s: got %lld", cases[i].json,
                     (long long)provider_reasoning_budget(&req, &tr));
        assert_int_equal(provider_reasoning_budget(&req, &tn), -1);
        jdoc_free(&doc);
    }
    canon_request none = {.doc = NULL, .reasoning_set = true};
    assert_int_equal(provider_reasoning_budget(&none, &tr), -1);
    assert_int_equal(provider_reasoning_budget(NULL, &tr), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_headers),
        cmocka_unit_test(test_request_header_cap),
        cmocka_unit_test(test_header_get),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_classify_status_table),
        cmocka_unit_test(test_classify_code),
        cmocka_unit_test(test_error_detail),
        cmocka_unit_test(test_transport_and_bad_response),
        cmocka_unit_test(test_parse_object),
        cmocka_unit_test(test_get_int_and_count),
        cmocka_unit_test(test_append_json),
        cmocka_unit_test(test_content_text),
        cmocka_unit_test(test_doc_content_text),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_effort_table),
        cmocka_unit_test(test_reasoning_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

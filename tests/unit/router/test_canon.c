/* router/canon: validation of the client's chat request into a
 * canon_request, OpenAI-style errors (param, code, a message that says
 * what to fix), and the prompt text read from the kept tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "router/canon.h"

/* One parse with its own storage; the body is copied so that reading past
 * it would be caught by ASan. */
typedef struct parsed {
    char *body;
    size_t len;
    jdoc doc;
    buf strings;
    canon_request req;
    canon_error err;
    int rc;
} parsed;

static parsed *parse_n(const char *body, size_t len)
{
    parsed *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->body = malloc(len ? len : 1);
    memcpy(p->body, body, len);
    p->len = len;
    p->doc = (jdoc)JDOC_INIT;
    p->strings = (buf)BUF_INIT;
    p->rc = canon_parse_chat(p->body, len, &p->doc, &p->strings, &p->req, &p->err);
    return p;
}

static parsed *parse(const char *body)
{
    return parse_n(body, strlen(body));
}

static void parsed_free(parsed *p)
{
    jdoc_free(&p->doc);
    buf_free(&p->strings);
    free(p->body);
    free(p);
}

static parsed *accept_ok(const char *body)
{
    parsed *p = parse(body);
    if (p->rc != 0)
        fail_msg("rejected: %s (param \"%s\", code \"%s\")\nbody: %s", p->err.message, p->err.param,
                 p->err.code, body);
    return p;
}

/* The body must be rejected with this param and code, and a message that
 * contains every fragment (NULL-terminated). */
static void expect_reject_v(const char *body, size_t len, const char *param, const char *code, ...)
{
    parsed *p = parse_n(body, len);
    if (p->rc == 0) {
        fail_msg("accepted, expected a rejection on \"%s\": %.*s", param, (int)len, body);
    }
    assert_int_equal(p->rc, -1);
    if (strcmp(p->err.param, param) != 0 || strcmp(p->err.code, code) != 0) {
        print_error("body: %.*s\nmessage: %s\n", (int)len, body, p->err.message);
        assert_string_equal(p->err.param, param);
        assert_string_equal(p->err.code, code);
    }
    assert_true(strlen(p->err.message) > 10);
    va_list ap;
    va_start(ap, code);
    for (const char *frag = va_arg(ap, const char *); frag; frag = va_arg(ap, const char *)) {
        if (!strstr(p->err.message, frag)) {
            print_error("message lacks \"%s\": %s\nbody: %.*s\n", frag, p->err.message, (int)len,
                        body);
            va_end(ap);
            fail();
        }
    }
    va_end(ap);
    parsed_free(p);
}
#define expect_reject(body, param, code, ...)                                                      \
    expect_reject_v(body, strlen(body), param, code, __VA_ARGS__, (const char *)NULL)

#define MSGS "\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]"
/* {"model": "gpt-4o", MSGS, <extra>} */
static const char *with(const char *extra)
{
    static char out[2048];
    snprintf(out, sizeof out, "{\"model\": \"gpt-4o\", " MSGS "%s%s}", *extra ? ", " : "", extra);
    return out;
}
/* {"model": "gpt-4o", "messages": [<msgs>]} */
static const char *msgs(const char *m)
{
    static char out[2048];
    snprintf(out, sizeof out, "{\"model\": \"gpt-4o\", \"messages\": [%s]}", m);
    return out;
}

/* ------------------------------------------------------------ accepted */

static const char full_request[] =
    "{\n"
    "  \"model\": \"gpt-4o-mini\",\n"
    "  \"messages\": [\n"
    "    {\"role\": \"system\", \"content\": \"You are terse.\"},\n"
    "    {\"role\": \"developer\", \"content\": \"Answer in JSON.\"},\n"
    "    {\"role\": \"user\", \"content\": [\n"
    "      {\"type\": \"text\", \"text\": \"What is in this image?\"},\n"
    "      {\"type\": \"image_url\", \"image_url\": {\"url\": \"data:image/png;base64,AAAA\"}}\n"
    "    ]},\n"
    "    {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call_1\", "
    "\"type\": \"function\", \"function\": {\"name\": \"look\", \"arguments\": \"{}\"}}]},\n"
    "    {\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"a cat\"},\n"
    "    {\"role\": \"assistant\", \"content\": \"A cat.\"},\n"
    "    {\"role\": \"user\", \"content\": \"And the colour?\", \"name\": \"ann\"}\n"
    "  ],\n"
    "  \"stream\": true,\n"
    "  \"stream_options\": {\"include_usage\": true},\n"
    "  \"max_tokens\": 100,\n"
    "  \"max_completion_tokens\": 256,\n"
    "  \"temperature\": 0.2,\n"
    "  \"top_p\": 1,\n"
    "  \"n\": 1,\n"
    "  \"presence_penalty\": -0.5,\n"
    "  \"frequency_penalty\": 2,\n"
    "  \"response_format\": {\"type\": \"json_object\"},\n"
    "  \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"look\", \"parameters\": "
    "{\"type\": \"object\"}}}],\n"
    "  \"user\": \"user-42\",\n"
    "  \"seed\": 7,\n"
    "  \"metadata\": {\"task\": \"caption\", \"agent\": \"vision-bot\", \"feature\": \"alt-text\", "
    "\"team\": \"media\", \"other\": \"kept\"}\n"
    "}\n";

static void test_full_request(void **state)
{
    parsed *p = accept_ok(full_request);
    canon_request *r = &p->req;
    assert_string_equal(r->model, "gpt-4o-mini");
    assert_true(r->stream);
    assert_true(r->include_usage);
    assert_int_equal(r->max_tokens, 256); /* max_completion_tokens wins */
    assert_true(r->json_mode);
    assert_string_equal(r->user, "user-42");
    assert_string_equal(r->task, "caption");
    assert_string_equal(r->agent, "vision-bot");
    assert_string_equal(r->feature, "alt-text");
    assert_string_equal(r->team, "media");
    assert_ptr_equal(r->body, p->body);
    assert_int_equal(r->body_len, strlen(full_request));
    assert_ptr_equal(r->doc, &p->doc);
    assert_int_equal(jdoc_type(&p->doc, 0), JT_OBJECT);
    uint32_t m = jdoc_get(&p->doc, 0, "messages");
    assert_int_equal(jdoc_type(&p->doc, m), JT_ARRAY);
    assert_int_equal(p->doc.t[m].size, 7);
    parsed_free(p);
}

static void test_minimal_request_defaults(void **state)
{
    parsed *p = accept_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    canon_request *r = &p->req;
    assert_string_equal(r->model, "m");
    assert_false(r->stream);
    assert_false(r->include_usage);
    assert_int_equal(r->max_tokens, -1);
    assert_false(r->json_mode);
    assert_null(r->user);
    assert_null(r->task);
    assert_null(r->agent);
    assert_null(r->feature);
    assert_null(r->team);
    parsed_free(p);

    /* nulls count as absent */
    p = accept_ok(with("\"stream\": null, \"stream_options\": null, \"max_tokens\": null, "
                       "\"temperature\": null, \"user\": null, \"metadata\": null, "
                       "\"response_format\": null, \"n\": null"));
    assert_false(p->req.stream);
    assert_int_equal(p->req.max_tokens, -1);
    assert_null(p->req.user);
    parsed_free(p);
}

static void test_max_tokens_choice(void **state)
{
    parsed *p = accept_ok(with("\"max_tokens\": 77"));
    assert_int_equal(p->req.max_tokens, 77);
    parsed_free(p);
    p = accept_ok(with("\"max_completion_tokens\": 5"));
    assert_int_equal(p->req.max_tokens, 5);
    parsed_free(p);
    p = accept_ok(with("\"max_completion_tokens\": 9, \"max_tokens\": 1000"));
    assert_int_equal(p->req.max_tokens, 9);
    parsed_free(p);
    p = accept_ok(with("\"max_tokens\": 100000000"));
    assert_int_equal(p->req.max_tokens, 100000000);
    parsed_free(p);
}

/* A reasoning control of the client's own wins over the policy's thinking
 * budget; null counts as not set. */
static void test_reasoning_set(void **state)
{
    static const struct {
        const char *extra;
        bool set;
    } cases[] = {
        {"", false},
        {"\"reasoning_effort\": \"low\"", true},
        {"\"reasoning\": {\"effort\": \"high\"}", true},
        {"\"thinking\": {\"type\": \"enabled\", \"budget_tokens\": 2048}", true},
        {"\"reasoning_effort\": null", false},
        {"\"reasoning_tokens\": 5", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parsed *p = accept_ok(with(cases[i].extra));
        if (p->req.reasoning_set != cases[i].set)
            fail_msg("%s: wrong reasoning_set", cases[i].extra);
        assert_int_equal(p->req.thinking_budget, 0);
        parsed_free(p);
    }
}

/* Every effort of wire-formats §1.2 is accepted (each has a budget for the
 * dialects that take tokens); anything else is a 400 naming them all. */
static void test_reasoning_effort_values(void **state)
{
    static const char *const ok[] = {"none", "minimal", "low", "medium", "high", "xhigh", "max"};
    char extra[128];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        snprintf(extra, sizeof extra, "\"reasoning_effort\": \"%s\"", ok[i]);
        parsed_free(accept_ok(with(extra)));
        snprintf(extra, sizeof extra, "\"reasoning\": {\"effort\": \"%s\", \"summary\": \"auto\"}",
                 ok[i]);
        parsed_free(accept_ok(with(extra)));
    }
    parsed_free(accept_ok(with("\"reasoning\": {\"summary\": \"auto\"}")));
    parsed_free(accept_ok(with("\"reasoning\": {\"effort\": null}")));
    expect_reject(with("\"reasoning_effort\": \"extreme\""), "reasoning_effort", "invalid_value",
                  "\"reasoning_effort\" must be one of none, minimal, low, medium, high, xhigh or "
                  "max",
                  "got \"extreme\"");
    expect_reject(with("\"reasoning_effort\": \"High\""), "reasoning_effort", "invalid_value",
                  "must be one of");
    expect_reject(with("\"reasoning_effort\": 3"), "reasoning_effort", "invalid_type",
                  "must be a string");
    expect_reject(with("\"reasoning\": {\"effort\": \"lots\"}"), "reasoning.effort",
                  "invalid_value", "\"reasoning.effort\" must be one of none, minimal", "lots");
    expect_reject(with("\"reasoning\": \"high\""), "reasoning", "invalid_type",
                  "must be an object like {\"effort\": \"low\"}");
    expect_reject(with("\"reasoning\": {\"effort\": \"low\", \"effort\": \"high\"}"),
                  "reasoning.effort", "duplicate_key", "twice");
}

static void test_json_mode(void **state)
{
    parsed *p = accept_ok(with("\"response_format\": {\"type\": \"text\"}"));
    assert_false(p->req.json_mode);
    parsed_free(p);
    p = accept_ok(with("\"response_format\": {\"type\": \"json_schema\", \"json_schema\": "
                       "{\"name\": \"x\", \"schema\": {\"type\": \"object\"}}}"));
    assert_true(p->req.json_mode);
    parsed_free(p);
    p = accept_ok(with("\"response_format\": {\"type\": \"json_\\u006fbject\"}"));
    assert_true(p->req.json_mode);
    parsed_free(p);
}

static void test_stream_variants(void **state)
{
    parsed *p = accept_ok(with("\"stream\": true"));
    assert_true(p->req.stream);
    assert_false(p->req.include_usage);
    parsed_free(p);
    p = accept_ok(with("\"stream\": true, \"stream_options\": {\"include_usage\": false}"));
    assert_true(p->req.stream);
    assert_false(p->req.include_usage);
    parsed_free(p);
    p = accept_ok(with("\"stream\": false"));
    assert_false(p->req.stream);
    parsed_free(p);
}

static void test_unescaped_strings(void **state)
{
    parsed *p = accept_ok("{\"model\": \"gpt\\u002d4o\", " MSGS ", \"user\": \"a\\\"b\\\\c\\/d\", "
                          "\"metadata\": {\"t\\u0061sk\": \"caf\\u00e9 \\ud83d\\ude00\", "
                          "\"team\": \"line1\\nline2\"}}");
    assert_string_equal(p->req.model, "gpt-4o");
    assert_string_equal(p->req.user, "a\"b\\c/d");
    /* escaped key found too */
    assert_string_equal(p->req.task, "caf\xc3\xa9 \xf0\x9f\x98\x80");
    assert_string_equal(p->req.team, "line1\nline2");
    /* the body itself is kept as sent */
    assert_non_null(strstr(p->req.body, "gpt\\u002d4o"));
    parsed_free(p);

    /* escaped field names and roles are recognised */
    p = accept_ok("{\"m\\u006fdel\": \"x\", \"messages\": [{\"r\\u006fle\": \"\\u0075ser\", "
                  "\"content\": \"hi\"}], \"str\\u0065am\": true}");
    assert_string_equal(p->req.model, "x");
    assert_true(p->req.stream);
    parsed_free(p);
}

static void test_strings_stay_valid(void **state)
{
    /* many long strings: the pointers into `strings` must not move */
    char body[16384];
    char big[1500];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    snprintf(body, sizeof body,
             "{\"model\": \"%s\", " MSGS ", \"user\": \"%s\", \"metadata\": {\"task\": \"%s\", "
             "\"agent\": \"%s\", \"feature\": \"%s\", \"team\": \"%s\"}}",
             big, big, big, big, big, big);
    parsed *p = accept_ok(body);
    assert_string_equal(p->req.model, big);
    assert_string_equal(p->req.user, big);
    assert_string_equal(p->req.task, big);
    assert_string_equal(p->req.team, big);
    parsed_free(p);
}

static void test_reuse_storage(void **state)
{
    /* doc and strings reused across requests, as the server does */
    jdoc d = JDOC_INIT;
    buf s = BUF_INIT;
    canon_request r;
    canon_error e;
    const char *a = "{\"model\": \"first-model\", " MSGS ", \"user\": \"u1\"}";
    const char *b = "{\"model\": \"second\", " MSGS "}";
    assert_int_equal(canon_parse_chat(a, strlen(a), &d, &s, &r, &e), 0);
    assert_string_equal(r.model, "first-model");
    assert_int_equal(canon_parse_chat("[]", 2, &d, &s, &r, &e), -1);
    assert_int_equal(canon_parse_chat(b, strlen(b), &d, &s, &r, &e), 0);
    assert_string_equal(r.model, "second");
    assert_null(r.user);
    assert_int_equal(r.max_tokens, -1);
    jdoc_free(&d);
    buf_free(&s);
}

static void test_accepted_shapes(void **state)
{
    static const char *const ok[] = {
        /* every role */
        "{\"role\": \"system\", \"content\": \"s\"}",
        "{\"role\": \"developer\", \"content\": \"d\"}",
        "{\"role\": \"tool\", \"content\": \"t\", \"tool_call_id\": \"c\"}",
        "{\"role\": \"function\", \"content\": \"f\", \"name\": \"fn\"}",
        /* an empty list of parts */
        "{\"role\": \"user\", \"content\": []}",
        /* assistant tool call, content absent */
        "{\"role\": \"assistant\", \"tool_calls\": []}",
        "{\"role\": \"user\", \"content\": \"\"}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        parsed *p = accept_ok(msgs(ok[i]));
        parsed_free(p);
    }
    /* boundaries of the numeric ranges */
    static const char *const extra[] = {
        "\"temperature\": 0",
        "\"temperature\": 2",
        "\"temperature\": 2.0",
        "\"top_p\": 0",
        "\"top_p\": 1e0",
        "\"n\": 1",
        "\"n\": 128",
        "\"presence_penalty\": -2",
        "\"frequency_penalty\": 2",
        "\"max_tokens\": 1",
        "\"max_completion_tokens\": 1",
        "\"metadata\": {}",
        "\"temperature\": 1.5e-1",
        "\"user\": \"\"",
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        parsed *p = accept_ok(with(extra[i]));
        parsed_free(p);
    }
}

/* ------------------------------------------------------------ rejected */

static void test_reject_body(void **state)
{
    expect_reject_v("", 0, "", "invalid_json", "empty", (const char *)NULL);
    expect_reject("{\"model\": \"x\", \"messages\": [}", "", "invalid_json", "not valid JSON",
                  "at byte 28");
    expect_reject("{\"model\": \"x\",}", "", "invalid_json", "not valid JSON", "at byte 14");
    expect_reject("{\"model\": \"x\"} garbage", "", "invalid_json", "not valid JSON",
                  "unexpected data after the JSON value", "at byte 15");
    expect_reject("{} {}", "", "invalid_json", "at byte 3");
    expect_reject("{\"model\": \"\xff\"}", "", "invalid_json", "UTF-8");
    expect_reject("{\"model\": ", "", "invalid_json", "not valid JSON");
    expect_reject("[{\"model\": \"x\"}]", "", "invalid_type", "must be a JSON object");
    expect_reject("\"hello\"", "", "invalid_type", "JSON object");
    expect_reject("null", "", "invalid_type", "JSON object");
    expect_reject("  42  ", "", "invalid_type", "JSON object");
    /* a NUL byte inside the body */
    expect_reject_v("{\"model\": \"a\0b\", " MSGS "}",
                    sizeof("{\"model\": \"a\0b\", " MSGS "}") - 1, "", "invalid_json",
                    "not valid JSON", (const char *)NULL);
}

static void test_reject_model(void **state)
{
    expect_reject("{" MSGS "}", "model", "missing_required_parameter", "\"model\" is missing");
    expect_reject("{\"model\": \"\", " MSGS "}", "model", "invalid_type", "non-empty string",
                  "an empty string");
    expect_reject("{\"model\": 4, " MSGS "}", "model", "invalid_type", "non-empty string",
                  "got number");
    expect_reject("{\"model\": null, " MSGS "}", "model", "invalid_type", "got null");
    expect_reject("{\"model\": [\"gpt-4o\"], " MSGS "}", "model", "invalid_type", "got array");
}

static void test_reject_messages(void **state)
{
    expect_reject("{\"model\": \"gpt-4o\"}", "messages", "missing_required_parameter",
                  "\"messages\" is missing", "[{\"role\": \"user\"");
    expect_reject("{\"model\": \"gpt-4o\", \"messages\": []}", "messages", "empty_array",
                  "\"messages\" is empty");
    expect_reject("{\"model\": \"gpt-4o\", \"messages\": \"hi\"}", "messages", "invalid_type",
                  "must be a list", "got string");
    expect_reject("{\"model\": \"gpt-4o\", \"messages\": {\"role\": \"user\"}}", "messages",
                  "invalid_type", "got object");
    expect_reject("{\"model\": \"gpt-4o\", \"messages\": null}", "messages", "invalid_type",
                  "got null");
    expect_reject(msgs("\"hi\""), "messages[0]", "invalid_type", "messages[0] must be an object",
                  "got string");
    expect_reject(msgs("{\"role\": \"user\", \"content\": \"a\"}, [1]"), "messages[1]",
                  "invalid_type", "messages[1] must be an object", "got array");
    expect_reject(msgs("{\"content\": \"a\"}"), "messages[0].role", "missing_required_parameter",
                  "messages[0].role is missing", "system, developer, user, assistant or tool");
    expect_reject(msgs("{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"robot\", "
                       "\"content\": \"b\"}"),
                  "messages[1].role", "invalid_value", "messages[1].role must be one of",
                  "got \"robot\"");
    expect_reject(msgs("{\"role\": \"User\", \"content\": \"a\"}"), "messages[0].role",
                  "invalid_value", "got \"User\"");
    expect_reject(msgs("{\"role\": 1, \"content\": \"a\"}"), "messages[0].role", "invalid_value",
                  "got 1");
    expect_reject(msgs("{\"role\": null, \"content\": \"a\"}"), "messages[0].role", "invalid_value",
                  "got null");
    /* content */
    expect_reject(msgs("{\"role\": \"user\"}"), "messages[0].content", "missing_required_parameter",
                  "messages[0].content is missing", "a string or a list of parts");
    expect_reject(msgs("{\"role\": \"user\", \"content\": null}"), "messages[0].content",
                  "missing_required_parameter", "is missing");
    /* null content is only for an assistant that calls tools */
    expect_reject(msgs("{\"role\": \"assistant\", \"content\": null}"), "messages[0].content",
                  "missing_required_parameter", "is missing");
    expect_reject(msgs("{\"role\": \"user\", \"content\": null, \"tool_calls\": []}"),
                  "messages[0].content", "missing_required_parameter", "is missing");
    expect_reject(msgs("{\"role\": \"tool\"}"), "messages[0].content", "missing_required_parameter",
                  "is missing");
    expect_reject(msgs("{\"role\": \"user\", \"content\": 5}"), "messages[0].content",
                  "invalid_type", "must be a string or a list of content parts", "got number");
    expect_reject(msgs("{\"role\": \"user\", \"content\": {\"type\": \"text\"}}"),
                  "messages[0].content", "invalid_type", "got object");
    expect_reject(msgs("{\"role\": \"user\", \"content\": true}"), "messages[0].content",
                  "invalid_type", "got boolean");
    /* content parts */
    expect_reject(msgs("{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}, "
                       "{\"text\": \"b\"}]}"),
                  "messages[0].content[1]", "invalid_type",
                  "messages[0].content[1] must be an object with a string \"type\"");
    expect_reject(msgs("{\"role\": \"user\", \"content\": [\"plain\"]}"), "messages[0].content[0]",
                  "invalid_type", "{\"type\": \"text\"");
    expect_reject(msgs("{\"role\": \"user\", \"content\": [{\"type\": 1}]}"),
                  "messages[0].content[0]", "invalid_type", "string \"type\"");
    /* the index counts from 0 and reaches later messages */
    expect_reject(msgs("{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", "
                       "\"content\": \"b\"}, {\"role\": \"user\", \"content\": [{}]}"),
                  "messages[2].content[0]", "invalid_type", "messages[2].content[0]");
}

static void test_reject_stream(void **state)
{
    expect_reject(with("\"stream\": \"true\""), "stream", "invalid_type",
                  "\"stream\" must be true or false", "got string");
    expect_reject(with("\"stream\": 1"), "stream", "invalid_type", "got number");
    expect_reject(with("\"stream_options\": {\"include_usage\": true}"), "stream_options",
                  "invalid_value", "only allowed when \"stream\" is true");
    expect_reject(with("\"stream\": false, \"stream_options\": {\"include_usage\": true}"),
                  "stream_options", "invalid_value", "only allowed when");
    expect_reject(with("\"stream\": true, \"stream_options\": true"), "stream_options",
                  "invalid_type", "must be an object");
    expect_reject(with("\"stream\": true, \"stream_options\": {\"include_usage\": \"yes\"}"),
                  "stream_options.include_usage", "invalid_type",
                  "\"stream_options.include_usage\" must be true or false", "got string");
    expect_reject(with("\"stream\": true, \"stream_options\": {\"include_usage\": 1}"),
                  "stream_options.include_usage", "invalid_type", "got number");
}

static void test_reject_numbers(void **state)
{
    expect_reject(with("\"max_tokens\": 0"), "max_tokens", "invalid_value",
                  "\"max_tokens\" must be between 1 and 100000000, got 0");
    expect_reject(with("\"max_tokens\": -5"), "max_tokens", "invalid_value", "got -5");
    expect_reject(with("\"max_tokens\": 100000001"), "max_tokens", "invalid_value",
                  "got 100000001");
    expect_reject(with("\"max_tokens\": 1.5"), "max_tokens", "invalid_type",
                  "\"max_tokens\" must be an integer", "fraction");
    expect_reject(with("\"max_tokens\": 1e3"), "max_tokens", "invalid_type", "must be an integer");
    expect_reject(with("\"max_tokens\": 99999999999999999999999"), "max_tokens", "invalid_type",
                  "too large");
    expect_reject(with("\"max_tokens\": \"100\""), "max_tokens", "invalid_type",
                  "must be an integer, got string");
    expect_reject(with("\"max_tokens\": true"), "max_tokens", "invalid_type", "got boolean");
    expect_reject(with("\"max_completion_tokens\": 0"), "max_completion_tokens", "invalid_value",
                  "\"max_completion_tokens\" must be between 1 and");
    expect_reject(with("\"max_completion_tokens\": 2.5, \"max_tokens\": 10"),
                  "max_completion_tokens", "invalid_type", "must be an integer");
    expect_reject(with("\"n\": 0"), "n", "invalid_value", "\"n\" must be between 1 and 128, got 0");
    expect_reject(with("\"n\": 129"), "n", "invalid_value", "got 129");
    expect_reject(with("\"n\": \"2\""), "n", "invalid_type", "must be an integer");
    expect_reject(with("\"temperature\": 3"), "temperature", "invalid_value",
                  "\"temperature\" must be between 0 and 2, got 3");
    expect_reject(with("\"temperature\": -0.01"), "temperature", "invalid_value", "got -0.01");
    expect_reject(with("\"temperature\": 2.0001"), "temperature", "invalid_value",
                  "between 0 and 2");
    expect_reject(with("\"temperature\": 1e400"), "temperature", "invalid_value",
                  "between 0 and 2");
    expect_reject(with("\"temperature\": \"0.5\""), "temperature", "invalid_type",
                  "\"temperature\" must be a number, got string");
    expect_reject(with("\"top_p\": -0.1"), "top_p", "invalid_value",
                  "\"top_p\" must be between 0 and 1, got -0.1");
    expect_reject(with("\"top_p\": 1.1"), "top_p", "invalid_value", "got 1.1");
    expect_reject(with("\"top_p\": [1]"), "top_p", "invalid_type", "got array");
    expect_reject(with("\"presence_penalty\": 2.5"), "presence_penalty", "invalid_value",
                  "between -2 and 2");
    expect_reject(with("\"frequency_penalty\": -3"), "frequency_penalty", "invalid_value",
                  "got -3");
}

static void test_reject_metadata_user_format(void **state)
{
    expect_reject(with("\"metadata\": \"task=x\""), "metadata", "invalid_type",
                  "\"metadata\" must be an object of string values", "got string");
    expect_reject(with("\"metadata\": [\"x\"]"), "metadata", "invalid_type", "got array");
    expect_reject(with("\"metadata\": {\"task\": \"a\", \"priority\": 3}"), "metadata.priority",
                  "invalid_type", "metadata.priority must be a string", "got number");
    expect_reject(with("\"metadata\": {\"team\": null}"), "metadata.team", "invalid_type",
                  "got null");
    expect_reject(with("\"metadata\": {\"t\\u0065am\": {}}"), "metadata.team", "invalid_type",
                  "got object");
    expect_reject(with("\"user\": 42"), "user", "invalid_type", "\"user\" must be a string",
                  "got number");
    expect_reject(with("\"response_format\": {\"type\": \"yaml\"}"), "response_format.type",
                  "invalid_value", "must be text, json_object or json_schema");
    expect_reject(with("\"response_format\": {\"type\": 1}"), "response_format", "invalid_type",
                  "{\"type\": \"json_object\"}");
    expect_reject(with("\"response_format\": {}"), "response_format", "invalid_type",
                  "must be an object like");
    expect_reject(with("\"response_format\": \"json_object\""), "response_format", "invalid_type",
                  "must be an object like");
}

static void test_first_error_wins(void **state)
{
    /* model is checked before messages, messages before the options */
    expect_reject("{\"model\": 1, \"messages\": [], \"stream\": 3}", "model", "invalid_type",
                  "model");
    expect_reject("{\"model\": \"m\", \"messages\": [], \"stream\": 3}", "messages", "empty_array",
                  "empty");
}

/* ------------------------------------------------------------ prompt text */

/* The prompt estimate reads the tokens canon kept: every message's text,
 * parts' text, no images; the length adds the tools and the tool calls. */
static void test_prompt_text(void **state)
{
    parsed *p = accept_ok(full_request);
    buf text = BUF_INIT;
    canon_prompt_text(&p->req, &text);
    assert_string_equal(text.data, "You are terse.Answer in JSON.What is in this image?a catA cat."
                                   "And the colour?");
    /* + the tools' JSON as sent, + the call's name and arguments ("look", "{}") */
    size_t tools = strlen("[{\"type\": \"function\", \"function\": {\"name\": \"look\", "
                          "\"parameters\": {\"type\": \"object\"}}}]");
    assert_int_equal(canon_prompt_chars(&p->req), (int64_t)(text.len + tools + 4 + 2));
    buf_free(&text);
    parsed_free(p);
}

static void test_prompt_text_escapes(void **state)
{
    parsed *p =
        accept_ok("{\"model\": \"gpt\\u002d4o\", \"messages\": [{\"role\": \"user\", "
                  "\"content\": \"caf\\u00e9 \\ud83d\\ude00\\n\"}, {\"role\": \"assistant\", "
                  "\"content\": [{\"type\": \"refusal\", \"refusal\": \"no\"}]}]}");
    buf text = BUF_INIT;
    canon_prompt_text(&p->req, &text);
    assert_string_equal(text.data, "caf\xc3\xa9 \xf0\x9f\x98\x80\nno");
    assert_int_equal(canon_prompt_chars(&p->req), 13);
    buf_free(&text);
    parsed_free(p);
    /* nothing to count: no tokens */
    canon_request none = {.doc = NULL};
    assert_int_equal(canon_prompt_chars(&none), 0);
}

/* Bodies that would make bridle check one thing and forward another:
 * duplicate keys, NUL characters, numbers longer than a small buffer. */
static void test_ambiguous_bodies_refused(void **state)
{
    /* a duplicate key: canon validates the first, upstream hosts may read
     * the last; the body must be refused */
    parsed *p = parse("{\"model\": \"gpt-4o-mini\", " MSGS ", \"model\": \"gpt-5.5\"}");
    assert_int_equal(p->rc, -1);
    assert_string_equal(p->err.param, "model");
    parsed_free(p);
    p = parse("{\"model\": \"m\", " MSGS ", \"messages\": 5}");
    assert_int_equal(p->rc, -1);
    assert_string_equal(p->err.param, "messages");
    parsed_free(p);
    p = parse(msgs("{\"role\": \"user\", \"content\": \"a\", \"role\": \"robot\"}"));
    assert_int_equal(p->rc, -1);
    assert_string_equal(p->err.param, "messages[0].role");
    parsed_free(p);
    /* a NUL in the model makes an empty or truncated C string */
    p = parse("{\"model\": \"\\u0000\", " MSGS "}");
    assert_int_equal(p->rc, -1);
    assert_string_equal(p->err.param, "model");
    parsed_free(p);
    p = parse("{\"model\": \"gpt-4o\\u0000x\", " MSGS "}");
    assert_int_equal(p->rc, -1);
    assert_string_equal(p->err.param, "model");
    parsed_free(p);
    /* jdoc_double reads only the first 63 characters of a number: this is
     * 100000, read as 1 */
    p = parse(with("\"temperature\": "
                   "1.000000000000000000000000000000000000000000000000000000000000000000e5"));
    assert_int_equal(p->rc, -1);
    assert_string_equal(p->err.param, "temperature");
    parsed_free(p);
}

/* ------------------------------------------------------------ embeddings */

static parsed *embed_parse(const char *body)
{
    parsed *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->len = strlen(body);
    p->body = malloc(p->len ? p->len : 1);
    memcpy(p->body, body, p->len);
    p->doc = (jdoc)JDOC_INIT;
    p->strings = (buf)BUF_INIT;
    p->rc = canon_parse_embeddings(p->body, p->len, &p->doc, &p->strings, &p->req, &p->err);
    return p;
}

static void test_embeddings_accepted(void **state)
{
    parsed *p = embed_parse("{\"model\":\"emb\",\"input\":\"hello world\",\"user\":\"u\","
                            "\"metadata\":{\"task\":\"index\"}}");
    assert_int_equal(p->rc, 0);
    const canon_embed *e = &p->req.embed;
    assert_true(e->on);
    assert_true(e->single);
    assert_false(e->token_ids);
    assert_int_equal(e->n, 1);
    assert_int_equal(e->est_tokens, 3); /* 11 bytes */
    assert_false(e->base64);
    assert_int_equal(e->dimensions, -1);
    assert_string_equal(p->req.model, "emb");
    assert_string_equal(p->req.user, "u");
    assert_string_equal(p->req.task, "index");
    assert_false(p->req.stream);
    assert_true(p->req.deterministic); /* the same input, the same vectors */
    assert_int_equal(jdoc_type(&p->doc, e->input), JT_STRING);
    parsed_free(p);

    p = embed_parse("{\"model\":\"emb\",\"input\":[\"a\",\"bcdef\"],\"encoding_format\":"
                    "\"base64\",\"dimensions\":256}");
    assert_int_equal(p->rc, 0);
    assert_false(p->req.embed.single);
    assert_int_equal(p->req.embed.n, 2);
    assert_int_equal(p->req.embed.est_tokens, 3); /* 1 + 2 */
    assert_true(p->req.embed.base64);
    assert_int_equal(p->req.embed.dimensions, 256);
    parsed_free(p);

    p = embed_parse("{\"model\":\"emb\",\"input\":[1,2,3]}"); /* one list of token ids */
    assert_int_equal(p->rc, 0);
    assert_true(p->req.embed.single && p->req.embed.token_ids);
    assert_int_equal(p->req.embed.n, 1);
    assert_int_equal(p->req.embed.est_tokens, 3);
    parsed_free(p);

    p = embed_parse("{\"model\":\"emb\",\"input\":[[1,2],[3]],\"encoding_format\":\"float\"}");
    assert_int_equal(p->rc, 0);
    assert_true(!p->req.embed.single && p->req.embed.token_ids);
    assert_int_equal(p->req.embed.n, 2);
    assert_int_equal(p->req.embed.est_tokens, 3);
    parsed_free(p);
}

static void expect_embed_reject(const char *body, const char *param, const char *code,
                                const char *frag)
{
    parsed *p = embed_parse(body);
    if (p->rc == 0) fail_msg("accepted, expected a rejection on \"%s\": %s", param, body);
    if (strcmp(p->err.param, param) != 0 || strcmp(p->err.code, code) != 0 ||
        !strstr(p->err.message, frag))
        fail_msg("%s: param \"%s\" code \"%s\" message \"%s\"", body, p->err.param, p->err.code,
                 p->err.message);
    parsed_free(p);
}

static void test_embeddings_rejected(void **state)
{
    expect_embed_reject("", "", "invalid_json", "empty");
    expect_embed_reject("[1]", "", "invalid_type", "JSON object");
    expect_embed_reject("{\"input\":\"x\"}", "model", "missing_required_parameter",
                        "embedding model");
    expect_embed_reject("{\"model\":\"\",\"input\":\"x\"}", "model", "invalid_type", "embedding");
    expect_embed_reject("{\"model\":\"e\"}", "input", "missing_required_parameter", "missing");
    expect_embed_reject("{\"model\":\"e\",\"input\":null}", "input", "missing_required_parameter",
                        "missing");
    expect_embed_reject("{\"model\":\"e\",\"input\":\"\"}", "input", "invalid_value",
                        "empty string");
    expect_embed_reject("{\"model\":\"e\",\"input\":7}", "input", "invalid_type", "got number");
    expect_embed_reject("{\"model\":\"e\",\"input\":[]}", "input", "invalid_value", "empty list");
    expect_embed_reject("{\"model\":\"e\",\"input\":[\"a\",[1]]}", "input[1]", "invalid_type",
                        "a string like the first input");
    expect_embed_reject("{\"model\":\"e\",\"input\":[[1],\"a\"]}", "input[1]", "invalid_type",
                        "a list of token ids");
    expect_embed_reject("{\"model\":\"e\",\"input\":[[1],[]]}", "input[1]", "invalid_value",
                        "empty list of token ids");
    expect_embed_reject("{\"model\":\"e\",\"input\":[1,2.5]}", "input", "invalid_type",
                        "token ids");
    expect_embed_reject("{\"model\":\"e\",\"input\":[1,-1]}", "input", "invalid_type", "token ids");
    expect_embed_reject("{\"model\":\"e\",\"input\":[1,2147483648]}", "input", "invalid_type",
                        "token ids");
    expect_embed_reject("{\"model\":\"e\",\"input\":\"a\",\"encoding_format\":\"int8\"}",
                        "encoding_format", "invalid_value", "\"float\" or \"base64\"");
    expect_embed_reject("{\"model\":\"e\",\"input\":\"a\",\"dimensions\":0}", "dimensions",
                        "invalid_value", "from 1 to 65536");
    expect_embed_reject("{\"model\":\"e\",\"input\":\"a\",\"dimensions\":\"8\"}", "dimensions",
                        "invalid_value", "integer");
    expect_embed_reject("{\"model\":\"e\",\"input\":\"a\",\"input\":\"b\"}", "input",
                        "duplicate_key", "twice");
    expect_embed_reject("{\"model\":\"e\",\"model\":\"f\",\"input\":\"b\"}", "model",
                        "duplicate_key", "twice");
    expect_embed_reject("{\"model\":\"e\",\"input\":\"a\",\"stream\":true}", "stream",
                        "invalid_value", "never streamed");
    expect_embed_reject("{\"model\":\"e\",\"input\":\"a\",\"user\":1}", "user", "invalid_type",
                        "string");
    expect_embed_reject("{\"model\":\"e\",\"input\":\"a\",\"metadata\":{\"task\":1}}",
                        "metadata.task", "invalid_type", "string");
    /* 2,049 inputs */
    buf b = BUF_INIT;
    buf_append_str(&b, "{\"model\":\"e\",\"input\":[");
    for (int i = 0; i < 2049; i++)
        buf_append_str(&b, i ? ",\"a\"" : "\"a\"");
    buf_append_str(&b, "]}");
    expect_embed_reject(b.data, "input", "invalid_value", "at most 2048");
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_request),
        cmocka_unit_test(test_minimal_request_defaults),
        cmocka_unit_test(test_max_tokens_choice),
        cmocka_unit_test(test_json_mode),
        cmocka_unit_test(test_reasoning_set),
        cmocka_unit_test(test_reasoning_effort_values),
        cmocka_unit_test(test_stream_variants),
        cmocka_unit_test(test_unescaped_strings),
        cmocka_unit_test(test_strings_stay_valid),
        cmocka_unit_test(test_reuse_storage),
        cmocka_unit_test(test_accepted_shapes),
        cmocka_unit_test(test_reject_body),
        cmocka_unit_test(test_reject_model),
        cmocka_unit_test(test_reject_messages),
        cmocka_unit_test(test_reject_stream),
        cmocka_unit_test(test_reject_numbers),
        cmocka_unit_test(test_reject_metadata_user_format),
        cmocka_unit_test(test_first_error_wins),
        cmocka_unit_test(test_prompt_text),
        cmocka_unit_test(test_prompt_text_escapes),
        cmocka_unit_test(test_ambiguous_bodies_refused),
        cmocka_unit_test(test_embeddings_accepted),
        cmocka_unit_test(test_embeddings_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

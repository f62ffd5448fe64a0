/* providers/ollama.c: native /api/chat encode, decode, NDJSON streams,
 * classify and usage_map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/providers/canon_fixture.h"

extern const provider_ops ollama_ops;

static provider_conf conf_ollama = {
    .name = "local",
    .ops = &ollama_ops,
    .base_url = "http://127.0.0.1:11434",
};
static target tgt = {
    .provider = &conf_ollama, .model = "local-llama", .upstream_model = "llama3.2"};

static json_object *encode_ok(const char *json, upstream_request *out)
{
    canon_request req = fixture_canon_parse(json);
    char err[256] = "";
    upstream_request_init(out);
    int rc = ollama_ops.encode(&req, &tgt, out, err, sizeof err);
    if (rc != 0) fail_msg("encode failed: %s", err);
    fixture_canon_release(&req);
    json_object *body = json_tokener_parse(out->body.data);
    assert_non_null(body);
    return body;
}

static json_object *member(json_object *obj, const char *key)
{
    json_object *v = NULL;
    assert_true(json_object_object_get_ex(obj, key, &v));
    return v;
}

/* ------------------------------------------------------------ encode */

static void test_encode_full(void **state)
{
    upstream_request out;
    json_object *body = encode_ok(
        "{\"model\":\"local-llama\",\"max_tokens\":64,\"temperature\":0.5,\"seed\":7,"
        "\"stop\":\"END\",\"response_format\":{\"type\":\"json_object\"},\"messages\":["
        "{\"role\":\"developer\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what is\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0K\"}},"
        "{\"type\":\"text\",\"text\":\"this?\"}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
        "\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":"
        "\"{\\\"q\\\":\\\"cat\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"a cat\"}]}",
        &out);
    assert_string_equal(out.url.data, "http://127.0.0.1:11434/api/chat");
    assert_string_equal(fixture_get_string(body, "model"), "llama3.2");
    assert_false(json_object_get_boolean(member(body, "stream")));
    assert_string_equal(fixture_get_string(body, "format"), "json");

    json_object *opts = member(body, "options");
    assert_int_equal(fixture_get_int(opts, "num_predict"), 64);
    assert_int_equal(fixture_get_int(opts, "seed"), 7);
    assert_true(json_object_get_double(member(opts, "temperature")) == 0.5);
    json_object *stop = member(opts, "stop");
    assert_true(json_object_is_type(stop, json_type_array));
    assert_string_equal(json_object_get_string(json_object_array_get_idx(stop, 0)), "END");

    json_object *msgs = member(body, "messages");
    assert_int_equal(json_object_array_length(msgs), 4);
    json_object *m0 = json_object_array_get_idx(msgs, 0);
    assert_string_equal(fixture_get_string(m0, "role"), "system");
    json_object *m1 = json_object_array_get_idx(msgs, 1);
    assert_string_equal(fixture_get_string(m1, "content"), "what is\nthis?");
    json_object *images = member(m1, "images");
    assert_int_equal(json_object_array_length(images), 1);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(images, 0)), "iVBORw0K");
    json_object *m2 = json_object_array_get_idx(msgs, 2);
    assert_string_equal(fixture_get_string(m2, "content"), "");
    json_object *call = json_object_array_get_idx(member(m2, "tool_calls"), 0);
    json_object *args = member(member(call, "function"), "arguments");
    assert_true(json_object_is_type(args, json_type_object));
    assert_string_equal(fixture_get_string(args, "q"), "cat");
    json_object *m3 = json_object_array_get_idx(msgs, 3);
    assert_string_equal(fixture_get_string(m3, "role"), "tool");
    assert_string_equal(fixture_get_string(m3, "tool_name"), "lookup");

    bool has_auth = false;
    for (int i = 0; out.headers[i]; i++)
        has_auth |= strncmp(out.headers[i], "Authorization", 13) == 0;
    assert_false(has_auth);
    json_object_put(body);
    upstream_request_free(&out);
}

static void test_encode_stream_and_schema(void **state)
{
    upstream_request out;
    json_object *body = encode_ok(
        "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
        "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}}},"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
        &out);
    assert_true(json_object_get_boolean(member(body, "stream")));
    json_object *format = member(body, "format");
    assert_true(json_object_is_type(format, json_type_object));
    assert_string_equal(fixture_get_string(format, "type"), "object");
    assert_int_equal(json_object_array_length(member(body, "tools")), 1);
    /* No sampling parameters: no options object at all. */
    assert_false(json_object_object_get_ex(body, "options", NULL));
    json_object_put(body);
    upstream_request_free(&out);
}

/* Ollama has no tool_choice: none → no tools, a named function → only it. */
static void test_encode_tool_choice(void **state)
{
    static const char tools[] = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
                                "{\"type\":\"function\",\"function\":{\"name\":\"g\","
                                "\"parameters\":{\"type\":\"object\"}}}]";
    char json[768];
    upstream_request out;

    snprintf(json, sizeof json,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],%s,"
             "\"tool_choice\":\"none\"}",
             tools);
    json_object *body = encode_ok(json, &out);
    assert_false(json_object_object_get_ex(body, "tools", NULL));
    assert_false(json_object_object_get_ex(body, "tool_choice", NULL));
    json_object_put(body);
    upstream_request_free(&out);

    snprintf(json, sizeof json,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],%s,"
             "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}",
             tools);
    body = encode_ok(json, &out);
    json_object *list = member(body, "tools");
    assert_int_equal(json_object_array_length(list), 1);
    json_object *fn = member(json_object_array_get_idx(list, 0), "function");
    assert_string_equal(fixture_get_string(fn, "name"), "g");
    assert_non_null(member(fn, "parameters"));
    assert_false(json_object_object_get_ex(body, "tool_choice", NULL));
    json_object_put(body);
    upstream_request_free(&out);

    for (int i = 0; i < 2; i++) { /* auto and required: every tool */
        snprintf(json, sizeof json,
                 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],%s,"
                 "\"tool_choice\":\"%s\"}",
                 tools, i ? "required" : "auto");
        body = encode_ok(json, &out);
        assert_int_equal(json_object_array_length(member(body, "tools")), 2);
        json_object_put(body);
        upstream_request_free(&out);
    }

    /* allowed_tools: its subset */
    snprintf(json, sizeof json,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],%s,"
             "\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":\"auto\","
             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}}}",
             tools);
    body = encode_ok(json, &out);
    list = member(body, "tools");
    assert_int_equal(json_object_array_length(list), 1);
    assert_string_equal(
        fixture_get_string(member(json_object_array_get_idx(list, 0), "function"), "name"), "f");
    json_object_put(body);
    upstream_request_free(&out);

    /* a named function that is not among the tools: refused, saying so */
    snprintf(json, sizeof json,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],%s,"
             "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"h\"}}}",
             tools);
    canon_request req = fixture_canon_parse(json);
    upstream_request_init(&out);
    char err[256] = "";
    assert_int_equal(ollama_ops.encode(&req, &tgt, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "\"h\", which is not among the request's tools"));
    upstream_request_free(&out);
    fixture_canon_release(&req);
}

/* arguments sent as an object (not OpenAI's string) are that object */
static void test_encode_object_arguments(void **state)
{
    upstream_request out;
    json_object *body = encode_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"f\",\"arguments\":{\"a\":[1,\"b\"]}}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r\"}]}",
        &out);
    json_object *asst = json_object_array_get_idx(member(body, "messages"), 1);
    json_object *fn = member(json_object_array_get_idx(member(asst, "tool_calls"), 0), "function");
    assert_string_equal(
        json_object_to_json_string_ext(member(fn, "arguments"), JSON_C_TO_STRING_PLAIN),
        "{\"a\":[1,\"b\"]}");
    json_object_put(body);
    upstream_request_free(&out);
}

static void test_encode_rejects_what_ollama_cannot_take(void **state)
{
    const char *bad[] = {
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
        "\"image_url\":{\"url\":\"https://example.com/cat.png\"}}]}]}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
        "[{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
        "\"{not json\"}}]}]}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
        "[{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
        "[1]}}]}]}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\","
        "\"input_audio\":{\"data\":\"x\",\"format\":\"wav\"}}]}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        canon_request req = fixture_canon_parse(bad[i]);
        upstream_request out;
        upstream_request_init(&out);
        char err[256] = "";
        assert_int_equal(ollama_ops.encode(&req, &tgt, &out, err, sizeof err), -1);
        assert_true(err[0] != '\0');
        upstream_request_free(&out);
        fixture_canon_release(&req);
    }
}

/* ------------------------------------------------------------ decode */

static void test_decode(void **state)
{
    const char *body =
        "{\"model\":\"llama3.2\",\"created_at\":\"2026-11-22T10:00:00Z\",\"message\":{"
        "\"role\":\"assistant\",\"content\":\"Hi there\"},\"done\":true,\"done_reason\":\"length\","
        "\"total_duration\":5000000,\"prompt_eval_count\":26,\"eval_count\":12}";
    decoded_response out;
    char err[256] = "";
    assert_int_equal(ollama_ops.decode(NULL, &tgt, body, strlen(body), &out, err, sizeof err), 0);
    assert_true(strncmp(fixture_get_string(out.body, "id"), "chatcmpl-", 9) == 0);
    assert_string_equal(fixture_get_string(out.body, "object"), "chat.completion");
    assert_string_equal(fixture_get_string(out.body, "model"), "llama3.2");
    json_object *c0 = json_object_array_get_idx(member(out.body, "choices"), 0);
    assert_string_equal(fixture_get_string(c0, "finish_reason"), "length");
    assert_string_equal(fixture_get_string(member(c0, "message"), "content"), "Hi there");
    json_object *u = member(out.body, "usage");
    assert_int_equal(fixture_get_int(u, "prompt_tokens"), 26);
    assert_int_equal(fixture_get_int(u, "completion_tokens"), 12);
    assert_int_equal(fixture_get_int(u, "total_tokens"), 38);
    assert_true(out.usage.exact);
    assert_int_equal(out.usage.input_uncached, 26);
    assert_int_equal(out.usage.output, 12);
    assert_string_equal(out.finish_reason, "length");
    json_object_put(out.body);
}

static void test_decode_tool_calls(void **state)
{
    const char *body = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\","
                       "\"tool_calls\":[{\"function\":{\"name\":\"lookup\",\"arguments\":"
                       "{\"q\":\"cat\"}}}]},\"done\":true,\"done_reason\":\"stop\"}";
    decoded_response out;
    char err[256] = "";
    assert_int_equal(ollama_ops.decode(NULL, &tgt, body, strlen(body), &out, err, sizeof err), 0);
    json_object *c0 = json_object_array_get_idx(member(out.body, "choices"), 0);
    assert_string_equal(fixture_get_string(c0, "finish_reason"), "tool_calls");
    json_object *call = json_object_array_get_idx(member(member(c0, "message"), "tool_calls"), 0);
    assert_true(strncmp(fixture_get_string(call, "id"), "call_", 5) == 0);
    /* content "" next to tool calls is OpenAI's null */
    assert_true(json_object_is_type(member(member(c0, "message"), "content"), json_type_null));
    json_object *fn = member(call, "function");
    assert_string_equal(fixture_get_string(fn, "name"), "lookup");
    assert_string_equal(fixture_get_string(fn, "arguments"), "{\"q\":\"cat\"}");
    /* No metrics at all: usage unknown, and no usage block invented. */
    assert_false(out.usage.exact);
    assert_false(json_object_object_get_ex(out.body, "usage", NULL));
    json_object_put(out.body);
}

/* parallel_tool_calls false cannot be said to Ollama: the first call only,
 * plain and across streamed lines. */
static void test_one_tool_call(void **state)
{
    canon_request req = fixture_canon_parse("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                                            "\"content\":\"x\"}],\"parallel_tool_calls\":false}");
    const char *body = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\","
                       "\"tool_calls\":[{\"function\":{\"name\":\"a\",\"arguments\":{}}},"
                       "{\"function\":{\"name\":\"b\",\"arguments\":{}}}]},\"done\":true,"
                       "\"done_reason\":\"stop\"}";
    decoded_response out;
    char err[256] = "";
    assert_int_equal(ollama_ops.decode(&req, &tgt, body, strlen(body), &out, err, sizeof err), 0);
    json_object *c0 = json_object_array_get_idx(member(out.body, "choices"), 0);
    json_object *calls = member(member(c0, "message"), "tool_calls");
    assert_int_equal(json_object_array_length(calls), 1);
    assert_string_equal(
        fixture_get_string(member(json_object_array_get_idx(calls, 0), "function"), "name"), "a");
    json_object_put(out.body);

    void *st = ollama_ops.stream_new(&req, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    fixture_chunks c = {0};
    const char *lines[] = {
        "{\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":"
        "{\"name\":\"a\",\"arguments\":{}}}]},\"done\":false}",
        "{\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":"
        "{\"name\":\"b\",\"arguments\":{}}}]},\"done\":false}",
        "{\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,"
        "\"done_reason\":\"stop\",\"total_duration\":9,\"eval_count\":4}",
    };
    for (int i = 0; i < 3; i++)
        assert_int_equal(fixture_feed(&ollama_ops, st, lines[i], &res, &c), 0);
    assert_int_equal(c.n, 2); /* call a, the finish: b is dropped */
    assert_non_null(strstr(c.chunk[0], "\"name\":\"a\""));
    assert_null(strstr(c.chunk[1], "\"name\""));
    assert_string_equal(res.finish_reason, "tool_calls");
    fixture_chunks_free(&c);
    buf_free(&res.text);
    ollama_ops.stream_free(st);
    fixture_canon_release(&req);
}

static void test_decode_bad(void **state)
{
    const char *bad[] = {"{\"error\":\"model 'x' not found\"}", "{\"done\":true}", "nope", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        decoded_response out;
        char err[256] = "";
        assert_int_equal(
            ollama_ops.decode(NULL, &tgt, bad[i], strlen(bad[i]), &out, err, sizeof err), -1);
        assert_null(out.body);
        assert_non_null(strstr(err, "not an Ollama chat reply"));
    }
}

/* ------------------------------------------------------------ stream */

static void test_stream_to_chunks(void **state)
{
    void *st = ollama_ops.stream_new(NULL, &tgt);
    assert_non_null(st);
    stream_result res;
    memset(&res, 0, sizeof res);
    fixture_chunks c = {0};
    const char *lines[] = {
        "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},"
        "\"done\":false}",
        "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"done\":false}",
        "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"lo\"},"
        "\"done\":false}",
        "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"done\":true,\"done_reason\":\"stop\",\"total_duration\":1,\"prompt_eval_count\":8,"
        "\"eval_count\":2}",
    };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(fixture_feed(&ollama_ops, st, lines[i], &res, &c), 0);
    assert_true(res.done);
    assert_false(res.failed);
    assert_int_equal(c.n, 3); /* "Hel", "lo", finish; the empty line adds nothing */

    const char *want_content[] = {"Hel", "lo", NULL};
    const char *first_id = NULL;
    json_object *parsed[3];
    for (int i = 0; i < 3; i++) {
        parsed[i] = json_tokener_parse(c.chunk[i]);
        assert_non_null(parsed[i]);
        assert_string_equal(fixture_get_string(parsed[i], "object"), "chat.completion.chunk");
        const char *id = fixture_get_string(parsed[i], "id");
        if (!first_id) first_id = id;
        assert_string_equal(id, first_id);
        json_object *ch = json_object_array_get_idx(member(parsed[i], "choices"), 0);
        json_object *delta = member(ch, "delta");
        const char *role = fixture_get_string(delta, "role");
        if (i == 0)
            assert_string_equal(role, "assistant");
        else
            assert_null(role);
        if (want_content[i])
            assert_string_equal(fixture_get_string(delta, "content"), want_content[i]);
        json_object *fr = member(ch, "finish_reason");
        if (i == 2)
            assert_string_equal(json_object_get_string(fr), "stop");
        else
            assert_null(fr);
        assert_false(json_object_object_get_ex(parsed[i], "usage", NULL));
    }
    for (int i = 0; i < 3; i++)
        json_object_put(parsed[i]);
    assert_string_equal(res.text.data, "Hello");
    assert_string_equal(res.finish_reason, "stop");
    assert_true(res.usage.exact);
    assert_int_equal(res.prompt_tokens, 8);
    assert_int_equal(res.completion_tokens, 2);
    fixture_chunks_free(&c);
    buf_free(&res.text);
    ollama_ops.stream_free(st);
}

static void test_stream_tool_call_and_cached_prompt(void **state)
{
    void *st = ollama_ops.stream_new(NULL, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    fixture_chunks c = {0};
    assert_int_equal(fixture_feed(&ollama_ops, st,
                                  "{\"message\":{\"role\":\"assistant\",\"content\":\"\","
                                  "\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":"
                                  "{\"x\":1}}}]},\"done\":false}",
                                  &res, &c),
                     0);
    /* prompt_eval_count is omitted when the prompt came from the KV cache. */
    assert_int_equal(fixture_feed(&ollama_ops, st,
                                  "{\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
                                  "\"done\":true,\"done_reason\":\"stop\",\"total_duration\":9,"
                                  "\"eval_count\":4}",
                                  &res, &c),
                     0);
    assert_int_equal(c.n, 2);
    json_object *ch0 = json_tokener_parse(c.chunk[0]);
    json_object *delta = member(json_object_array_get_idx(member(ch0, "choices"), 0), "delta");
    json_object *tc = json_object_array_get_idx(member(delta, "tool_calls"), 0);
    assert_int_equal(fixture_get_int(tc, "index"), 0);
    assert_string_equal(fixture_get_string(member(tc, "function"), "arguments"), "{\"x\":1}");
    assert_int_equal(res.tool_bytes, strlen("f") + strlen("{\"x\":1}"));
    json_object_put(ch0);
    assert_string_equal(res.finish_reason, "tool_calls");
    assert_true(res.usage.exact);
    assert_int_equal(res.usage.input_uncached, 0);
    assert_int_equal(res.usage.output, 4);
    fixture_chunks_free(&c);
    buf_free(&res.text);
    ollama_ops.stream_free(st);
}

static void test_stream_error_and_garbage(void **state)
{
    void *st = ollama_ops.stream_new(NULL, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    fixture_chunks c = {0};
    assert_int_equal(fixture_feed(&ollama_ops, st,
                                  "{\"error\":\"model runner has unexpectedly stopped\"}", &res,
                                  &c),
                     0);
    assert_true(res.failed);
    assert_non_null(strstr(res.error.message, "unexpectedly stopped"));
    assert_int_equal(c.n, 0);
    ollama_ops.stream_free(st);

    st = ollama_ops.stream_new(NULL, &tgt);
    memset(&res, 0, sizeof res);
    assert_int_equal(fixture_feed(&ollama_ops, st, "data: {\"x\":1}", &res, &c), -1);
    assert_true(res.failed);
    assert_int_equal(res.error.client_status, 502);
    assert_int_equal(fixture_feed(&ollama_ops, st, "   ", &res, &c), 0);
    ollama_ops.stream_free(st);
}

/* ------------------------------------------------------------ classify, usage */

static void test_classify(void **state)
{
    upstream_error e;
    const char *nf = "{\"error\":\"model \\\"llama9\\\" not found, try pulling it first\"}";
    ollama_ops.classify(404, NULL, nf, strlen(nf), &e);
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_int_equal(e.client_status, 502);
    assert_non_null(strstr(e.message, "try pulling it first"));

    upstream_headers hs = {.n = 1};
    hs.h[0].name = "retry-after";
    hs.h[0].value = "3";
    const char *busy = "{\"error\":\"server busy, please try again\"}";
    ollama_ops.classify(503, &hs, busy, strlen(busy), &e);
    assert_int_equal(e.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(e.retry_after_ms, 3000);

    ollama_ops.classify(500, NULL, "oops", 4, &e);
    assert_int_equal(e.cls, ERRCLASS_AMBIGUOUS);
    assert_non_null(strstr(e.message, "non-JSON"));

    const char *key = "{\"error\":\"unauthorized: key sk-ollama-123\"}";
    ollama_ops.classify(401, NULL, key, strlen(key), &e);
    assert_string_equal(e.type, "upstream_auth_error");
    assert_null(strstr(e.message, "sk-ollama"));
}

static void test_usage_map(void **state)
{
    json_object *o = json_tokener_parse("{\"prompt_eval_count\":5,\"eval_count\":6}");
    usage_record u = ollama_ops.usage_map(o);
    assert_true(u.exact);
    assert_int_equal(u.input_uncached, 5);
    assert_int_equal(u.output, 6);
    json_object_put(o);

    o = json_tokener_parse("{\"eval_count\":6,\"done\":false}");
    u = ollama_ops.usage_map(o);
    assert_false(u.exact);
    json_object_put(o);

    u = ollama_ops.usage_map(NULL);
    assert_false(u.exact);
}

/* top_k goes to options; tool_choice "none" is honoured by sending no
 * tools (Ollama has no tool_choice). */
static void test_encode_fidelity_params(void **state)
{
    upstream_request out;
    const char *tools = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]";
    char json[512];
    snprintf(json, sizeof json,
             "{\"model\":\"local-llama\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"top_k\":12,%s,\"tool_choice\":\"none\"}",
             tools);
    json_object *body = encode_ok(json, &out);
    assert_int_equal(json_object_get_int64(member(member(body, "options"), "top_k")), 12);
    assert_false(json_object_object_get_ex(body, "tools", NULL));
    assert_false(json_object_object_get_ex(body, "tool_choice", NULL));
    json_object_put(body);
    upstream_request_free(&out);
    snprintf(json, sizeof json,
             "{\"model\":\"local-llama\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "%s,\"tool_choice\":\"auto\"}",
             tools);
    body = encode_ok(json, &out);
    assert_int_equal(json_object_array_length(member(body, "tools")), 1);
    json_object_put(body);
    upstream_request_free(&out);
}

/* logprobs (Ollama 0.12.11+): asked as OpenAI names them, and the answer's
 * list, already in OpenAI's entry shape, becomes choices[].logprobs.content,
 * whole or chunk by chunk. */
static void test_logprobs(void **state)
{
    upstream_request out;
    json_object *body = encode_ok(
        "{\"model\":\"local-llama\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"logprobs\":true,\"top_logprobs\":2}",
        &out);
    assert_true(json_object_get_boolean(member(body, "logprobs")));
    assert_int_equal(json_object_get_int64(member(body, "top_logprobs")), 2);
    json_object_put(body);
    upstream_request_free(&out);
    body = encode_ok("{\"model\":\"local-llama\",\"messages\":[{\"role\":\"user\",\"content\":"
                     "\"hi\"}],\"logprobs\":false}",
                     &out);
    assert_false(json_object_object_get_ex(body, "logprobs", NULL));
    json_object_put(body);
    upstream_request_free(&out);

    const char *lp = "[{\"token\":\"Hi\",\"logprob\":-0.5,\"bytes\":[72,105],"
                     "\"top_logprobs\":[{\"token\":\"Hi\",\"logprob\":-0.5},{\"token\":\"Yo\","
                     "\"logprob\":-1.5}]}]";
    char whole[512];
    snprintf(whole, sizeof whole,
             "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},"
             "\"logprobs\":%s,\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":3,"
             "\"eval_count\":1}",
             lp);
    decoded_response d;
    char err[256] = "";
    assert_int_equal(ollama_ops.decode(NULL, &tgt, whole, strlen(whole), &d, err, sizeof err), 0);
    json_object *c0 = json_object_array_get_idx(member(d.body, "choices"), 0);
    json_object *content = member(member(c0, "logprobs"), "content");
    assert_int_equal(json_object_array_length(content), 1);
    json_object *e = json_object_array_get_idx(content, 0);
    assert_string_equal(fixture_get_string(e, "token"), "Hi");
    assert_int_equal(json_object_array_length(member(e, "top_logprobs")), 2);
    json_object_put(d.body);

    void *st = ollama_ops.stream_new(NULL, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    fixture_chunks c = {0};
    char line[512];
    snprintf(line, sizeof line,
             "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},"
             "\"logprobs\":%s,\"done\":false}",
             lp);
    assert_int_equal(fixture_feed(&ollama_ops, st, line, &res, &c), 0);
    assert_int_equal(c.n, 1);
    json_object *chunk = json_tokener_parse(c.chunk[0]);
    assert_non_null(chunk);
    json_object *ch0 = json_object_array_get_idx(member(chunk, "choices"), 0);
    content = member(member(ch0, "logprobs"), "content");
    assert_string_equal(fixture_get_string(json_object_array_get_idx(content, 0), "token"), "Hi");
    json_object_put(chunk);
    fixture_chunks_free(&c);
    buf_free(&res.text);
    ollama_ops.stream_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_full),
        cmocka_unit_test(test_encode_fidelity_params),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_encode_stream_and_schema),
        cmocka_unit_test(test_encode_tool_choice),
        cmocka_unit_test(test_encode_object_arguments),
        cmocka_unit_test(test_encode_rejects_what_ollama_cannot_take),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_decode_tool_calls),
        cmocka_unit_test(test_one_tool_call),
        cmocka_unit_test(test_decode_bad),
        cmocka_unit_test(test_stream_to_chunks),
        cmocka_unit_test(test_stream_tool_call_and_cached_prompt),
        cmocka_unit_test(test_stream_error_and_garbage),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_usage_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* router/messages.c: the Messages API translated to the canonical chat
 * request and the chat answer translated back, checked with json-c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "router/messages.h"

static json_object *get(json_object *o, const char *k)
{
    json_object *v = NULL;
    json_object_object_get_ex(o, k, &v);
    return v;
}
static const char *str(json_object *o, const char *k)
{
    return json_object_get_string(get(o, k));
}
static json_object *idx(json_object *a, size_t i)
{
    return json_object_array_get_idx(a, i);
}

/* Translates body; returns the canonical object (caller puts it). */
static json_object *to_chat(const char *body)
{
    jdoc d = JDOC_INIT;
    buf out = BUF_INIT;
    char err[400] = "";
    if (messages_to_chat(body, strlen(body), false, &d, &out, err, sizeof err) != 0)
        fail_msg("translation failed: %s", err);
    json_object *o = json_tokener_parse(out.data);
    if (!o) fail_msg("not JSON: %s", out.data);
    jdoc_free(&d);
    buf_free(&out);
    return o;
}

static void refused(const char *body, const char *needle)
{
    jdoc d = JDOC_INIT;
    buf out = BUF_INIT;
    char err[400] = "";
    assert_int_equal(messages_to_chat(body, strlen(body), false, &d, &out, err, sizeof err), -1);
    if (!strstr(err, needle)) fail_msg("\"%s\" does not mention \"%s\"", err, needle);
    jdoc_free(&d);
    buf_free(&out);
}

static void test_request_translation(void **state)
{
    json_object *o = to_chat(
        "{\"model\":\"auto\",\"max_tokens\":99,\"system\":\"be brief\",\"stream\":true,"
        "\"metadata\":{\"user_id\":\"u1\"},\"stop_sequences\":[\"X\"],\"messages\":["
        "{\"role\":\"user\",\"content\":\"hi\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\","
        "\"input\":{\"a\": [1, 2]}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"after\"},"
        "{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":\"ok\"}]}],"
        "\"tool_choice\":{\"type\":\"any\"},\"tools\":[{\"name\":\"f\",\"input_schema\":{"
        "\"type\":\"object\"}}]}");
    assert_string_equal(str(o, "model"), "auto");
    assert_int_equal(json_object_get_int(get(o, "max_tokens")), 99);
    assert_true(json_object_get_boolean(get(get(o, "stream_options"), "include_usage")));
    assert_string_equal(str(o, "user"), "u1");
    assert_string_equal(json_object_get_string(idx(get(o, "stop"), 0)), "X");
    assert_string_equal(str(o, "tool_choice"), "required");
    json_object *m = get(o, "messages");
    assert_int_equal(json_object_array_length(m), 5);
    assert_string_equal(str(idx(m, 0), "role"), "system");
    assert_string_equal(str(idx(m, 0), "content"), "be brief");
    json_object *call = idx(get(idx(m, 2), "tool_calls"), 0);
    assert_string_equal(str(get(call, "function"), "arguments"), "{\"a\": [1, 2]}");
    /* the tool result comes first, as OpenAI wants it right after the call */
    assert_string_equal(str(idx(m, 3), "role"), "tool");
    assert_string_equal(str(idx(m, 3), "tool_call_id"), "t1");
    assert_string_equal(str(idx(get(idx(m, 4), "content"), 0), "text"), "after");
    assert_string_equal(str(get(idx(get(o, "tools"), 0), "function"), "name"), "f");
    json_object_put(o);
}

static void test_request_refusals(void **state)
{
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
            "max_tokens: Field required");
    refused(
        "{\"model\":\"m\",\"max_tokens\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "max_tokens: must be at least 1");
    refused("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[]}", "at least one message");
    refused("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{"
            "\"type\":\"document\",\"source\":{}}]}]}",
            "messages.0.content.0.type: a \"document\" block is not supported");
    refused(
        "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
        "\"tools\":[{\"type\":\"web_search_20250305\",\"name\":\"w\"}]}",
        "tools.0.type");
    refused(
        "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
        "\"frequency_penalty\":1}",
        "frequency_penalty: Extra inputs are not permitted");
    refused("[1]", "must be a JSON object");
    refused("{\"model\":", "not valid JSON");
}

static json_object *from_completion(const char *json)
{
    jdoc d = JDOC_INIT;
    buf out = BUF_INIT;
    assert_int_equal(messages_from_completion(json, strlen(json), "msg_1", &d, &out), 0);
    json_object *o = json_tokener_parse(out.data);
    assert_non_null(o);
    jdoc_free(&d);
    buf_free(&out);
    return o;
}

static void test_answer_translation(void **state)
{
    json_object *o = from_completion(
        "{\"id\":\"c\",\"model\":\"gpt\",\"choices\":[{\"message\":{\"role\":\"assistant\","
        "\"content\":\"hi\",\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{"
        "\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}],"
        "\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":7,\"prompt_tokens_details\":{"
        "\"cached_tokens\":30,\"cache_write_tokens\":20}}}");
    assert_string_equal(str(o, "id"), "msg_1");
    assert_string_equal(str(o, "stop_reason"), "tool_use");
    json_object *c = get(o, "content");
    assert_string_equal(str(idx(c, 0), "text"), "hi");
    assert_string_equal(str(idx(c, 1), "type"), "tool_use");
    assert_int_equal(json_object_get_int(get(get(idx(c, 1), "input"), "x")), 1);
    json_object *u = get(o, "usage");
    assert_int_equal(json_object_get_int(get(u, "input_tokens")), 50);
    assert_int_equal(json_object_get_int(get(u, "cache_read_input_tokens")), 30);
    assert_int_equal(json_object_get_int(get(u, "cache_creation_input_tokens")), 20);
    assert_int_equal(json_object_get_int(get(u, "output_tokens")), 7);
    json_object_put(o);
    o = from_completion("{\"choices\":[{\"message\":{\"content\":\"x\"},\"finish_reason\":"
                        "\"length\"}]}");
    assert_string_equal(str(o, "stop_reason"), "max_tokens");
    json_object_put(o);
}

static void test_stream_translation(void **state)
{
    static const char *const in[] = {
        "data: "
        "{\"model\":\"g\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"He\"}}]}\n\ndata: {\"choices\":[{\"delta\":{"
        "\"content\":\"llo\"}}]}\n",
        "\ndata: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{"
        "\"name\":\"f\",\"arguments\":\"{\\\"x\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
        "\"\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\n",
        "data: [DONE]\n\n",
    };
    messages_stream *s = messages_stream_new("msg_s");
    buf out = BUF_INIT;
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        messages_stream_feed(s, in[i], strlen(in[i]), &out);
    const char *want[] = {"message_start",       "ping",
                          "content_block_start", "content_block_delta",
                          "content_block_delta", "content_block_stop",
                          "content_block_start", "content_block_delta",
                          "content_block_delta", "content_block_stop",
                          "message_delta",       "message_stop"};
    const char *p = out.data;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "event: %s\n", want[i]);
        if (strncmp(p, name, strlen(name)) != 0)
            fail_msg("event %zu: want %s at: %.80s", i, want[i], p);
        p = strstr(p, "\n\n") + 2;
    }
    assert_int_equal(*p, '\0');
    assert_non_null(strstr(out.data, "\"stop_reason\":\"tool_use\""));
    assert_non_null(strstr(out.data, "\"input_tokens\":9"));
    assert_non_null(strstr(out.data, "\"partial_json\":\"{\\\"x\""));
    assert_non_null(strstr(out.data, "\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\""));
    messages_stream_free(s);
    buf_free(&out);

    /* a stream that fails: an error event, and nothing after it */
    s = messages_stream_new("msg_e");
    const char *bad = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{"
                      "\"type\":\"timeout_error\",\"message\":\"too slow\"}}\n\ndata: [DONE]\n\n";
    messages_stream_feed(s, bad, strlen(bad), &out);
    assert_non_null(strstr(out.data, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                                     "\"timeout_error\",\"message\":\"too slow\"}}\n\n"));
    assert_null(strstr(out.data, "message_stop"));
    messages_stream_free(s);
    buf_free(&out);
}

static void test_errors(void **state)
{
    assert_int_equal(messages_status(503), 529);
    assert_int_equal(messages_status(429), 429);
    assert_string_equal(messages_error_type(401), "authentication_error");
    assert_string_equal(messages_error_type(529), "overloaded_error");
    assert_string_equal(messages_error_type(502), "api_error");
    jdoc d = JDOC_INIT;
    buf out = BUF_INIT;
    const char *openai = "{\"error\":{\"message\":\"Budget exceeded\",\"type\":\"x\"}}";
    messages_error_from(openai, strlen(openai), 429, &d, &out);
    assert_string_equal(out.data, "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
                                  "\"message\":\"Budget exceeded\"}}");
    jdoc_free(&d);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_translation),
        cmocka_unit_test(test_request_refusals),
        cmocka_unit_test(test_answer_translation),
        cmocka_unit_test(test_stream_translation),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

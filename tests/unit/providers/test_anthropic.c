/* Unit tests for providers/anthropic.c: encode (parsed back and checked),
 * decode, streams fed event by event in the order of wire-formats §3.4,
 * classify, usage_map and the cost of a decoded usage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "providers/provider.h"
#include "providers/pricing.h"
#include "tests/unit/providers/canon_fixture.h"

extern const provider_ops anthropic_ops;

/* ------------------------------------------------------------ helpers */

static json_object *jget(json_object *o, const char *key)
{
    json_object *v = NULL;
    json_object_object_get_ex(o, key, &v);
    return v;
}

static const char *jstr(json_object *o, const char *key)
{
    return json_object_get_string(jget(o, key));
}

static json_object *jidx(json_object *a, size_t i)
{
    return json_object_array_get_idx(a, i);
}

/* A canonical request as router/canon.c builds it from a client body: the
 * adapter reads only its tokens, never a second parse. */
static canon_request canon_from_json(const char *json)
{
    return fixture_canon_parse(json);
}

static provider_conf conf = {
    .name = "anthropic",
    .ops = &anthropic_ops,
    .base_url = "https://api.anthropic.com/v1",
    .api_key = "sk-ant-test",
};

static target tgt = {
    .provider = &conf,
    .model = "sonnet",
    .upstream_model = "claude-sonnet-4-5",
};

/* Encodes `json`; returns the parsed body (caller puts) and leaves the
 * request in *out (caller frees). */
static json_object *encode_ok(const char *json, const target *t, upstream_request *out)
{
    canon_request req = canon_from_json(json);
    char err[256] = "";
    upstream_request_init(out);
    int rc = anthropic_ops.encode(&req, t, out, err, sizeof err);
    if (rc != 0) fail_msg("encode failed: %s", err);
    json_object *body = json_tokener_parse(out->body.data);
    assert_non_null(body);
    fixture_canon_release(&req);
    return body;
}

static void encode_fails(const char *json, const char *needle)
{
    canon_request req = canon_from_json(json);
    upstream_request out;
    char err[256] = "";
    upstream_request_init(&out);
    assert_int_equal(anthropic_ops.encode(&req, &tgt, &out, err, sizeof err), -1);
    if (!strstr(err, needle)) fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
    upstream_request_free(&out);
    fixture_canon_release(&req);
}

static bool has_header(const upstream_request *r, const char *line)
{
    for (int i = 0; r->headers[i]; i++)
        if (strcmp(r->headers[i], line) == 0) return true;
    return false;
}

static bool has_header_named(const upstream_request *r, const char *prefix)
{
    for (int i = 0; r->headers[i]; i++)
        if (strncmp(r->headers[i], prefix, strlen(prefix)) == 0) return true;
    return false;
}

/* ------------------------------------------------------------ encode */

static void test_encode_basic_and_system_hoisting(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"sonnet\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"Long context\","
        "\"cache_control\":{\"type\":\"ephemeral\",\"ttl\":\"1h\"}}]},"
        "{\"role\":\"user\",\"content\":\"Hi\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"there\"}]}],"
        "\"temperature\":0.5,\"top_p\":0.9,\"stop\":\"END\",\"user\":\"u-42\","
        "\"cache_control\":{\"type\":\"ephemeral\"}}",
        &tgt, &out);
    assert_string_equal(out.url.data, "https://api.anthropic.com/v1/messages");
    assert_true(has_header(&out, "x-api-key: sk-ant-test"));
    assert_true(has_header(&out, "anthropic-version: 2023-06-01"));
    assert_true(has_header(&out, "content-type: application/json"));
    assert_true(has_header(&out, "Expect:"));

    assert_string_equal(jstr(b, "model"), "claude-sonnet-4-5");
    assert_int_equal(json_object_get_int64(jget(b, "max_tokens")), 4096);
    json_object *sys = jget(b, "system");
    assert_int_equal(json_object_array_length(sys), 2);
    assert_string_equal(jstr(jidx(sys, 0), "type"), "text");
    assert_string_equal(jstr(jidx(sys, 0), "text"), "Be brief.");
    assert_null(jget(jidx(sys, 0), "cache_control"));
    assert_string_equal(jstr(jidx(sys, 1), "text"), "Long context");
    assert_string_equal(jstr(jget(jidx(sys, 1), "cache_control"), "ttl"), "1h");

    /* The two user messages become one turn with two blocks. */
    json_object *msgs = jget(b, "messages");
    assert_int_equal(json_object_array_length(msgs), 1);
    assert_string_equal(jstr(jidx(msgs, 0), "role"), "user");
    json_object *content = jget(jidx(msgs, 0), "content");
    assert_int_equal(json_object_array_length(content), 2);
    assert_string_equal(jstr(jidx(content, 0), "text"), "Hi");
    assert_string_equal(jstr(jidx(content, 1), "text"), "there");

    assert_true(json_object_get_double(jget(b, "temperature")) == 0.5);
    assert_true(json_object_get_double(jget(b, "top_p")) == 0.9);
    assert_string_equal(json_object_get_string(jidx(jget(b, "stop_sequences"), 0)), "END");
    assert_string_equal(jstr(jget(b, "metadata"), "user_id"), "u-42");
    assert_string_equal(jstr(jget(b, "cache_control"), "type"), "ephemeral");
    assert_null(jget(b, "stream"));
    json_object_put(b);
    upstream_request_free(&out);
}

static void test_encode_max_tokens_sources(void **state)
{
    upstream_request out;
    const char *no_cap = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    json_object *b = encode_ok(
        "{\"model\":\"m\",\"max_completion_tokens\":300,\"max_tokens\":100,\"stream\":true,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        &tgt, &out);
    assert_int_equal(json_object_get_int64(jget(b, "max_tokens")), 300);
    assert_true(json_object_get_boolean(jget(b, "stream")));
    json_object_put(b);
    upstream_request_free(&out);

    provider_conf c = conf;
    c.default_max_tokens = 1024;
    target t = tgt;
    t.provider = &c;
    b = encode_ok(no_cap, &t, &out);
    assert_int_equal(json_object_get_int64(jget(b, "max_tokens")), 1024);
    json_object_put(b);
    upstream_request_free(&out);

    b = encode_ok(no_cap, &tgt, &out);
    assert_int_equal(json_object_get_int64(jget(b, "max_tokens")), 4096);
    json_object_put(b);
    upstream_request_free(&out);
}

/* Encodes `json` to a reasoning model with a thinking budget; returns the
 * body (caller puts). */
static json_object *encode_thinking(const char *json, int64_t budget, bool client_set,
                                    bool reasoning)
{
    static model_price price;
    price = (model_price){.name = "claude-sonnet-4-5", .reasoning = reasoning};
    target t = tgt;
    t.price = &price;
    canon_request req = canon_from_json(json);
    req.thinking_budget = budget;
    req.reasoning_set = client_set;
    upstream_request out;
    char err[256] = "";
    upstream_request_init(&out);
    if (anthropic_ops.encode(&req, &t, &out, err, sizeof err) != 0)
        fail_msg("encode failed: %s", err);
    json_object *body = json_tokener_parse(out.body.data);
    assert_non_null(body);
    upstream_request_free(&out);
    fixture_canon_release(&req);
    return body;
}

/* Asserts thinking {type: enabled, budget_tokens} (0: no thinking at all)
 * and max_tokens. */
static void assert_thinking(json_object *b, int64_t budget, int64_t max_tokens)
{
    json_object *th = jget(b, "thinking");
    if (budget == 0)
        assert_null(th);
    else {
        assert_string_equal(jstr(th, "type"), "enabled");
        assert_int_equal(json_object_get_int64(jget(th, "budget_tokens")), budget);
        assert_int_equal(json_object_object_length(th), 2);
    }
    assert_int_equal(json_object_get_int64(jget(b, "max_tokens")), max_tokens);
    json_object_put(b);
}

static void test_encode_thinking_budget(void **state)
{
#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
    /* no cap of its own: max_tokens raised to the default + the budget */
    assert_thinking(encode_thinking("{\"model\":\"m\"," MSGS "}", 8000, false, true), 8000, 12096);
    /* a cap of its own bounds thinking + answer: the budget is clamped under it */
    assert_thinking(
        encode_thinking("{\"model\":\"m\",\"max_tokens\":3000," MSGS "}", 8000, false, true), 2999,
        3000);
    assert_thinking(
        encode_thinking("{\"model\":\"m\",\"max_tokens\":9000," MSGS "}", 8000, false, true), 8000,
        9000);
    /* under Anthropic's minimum of 1024, clamped or configured: no thinking */
    assert_thinking(
        encode_thinking("{\"model\":\"m\",\"max_tokens\":1024," MSGS "}", 8000, false, true), 0,
        1024);
    assert_thinking(encode_thinking("{\"model\":\"m\"," MSGS "}", 500, false, true), 0, 4096);
    assert_thinking(encode_thinking("{\"model\":\"m\"," MSGS "}", 1024, false, true), 1024, 5120);
    /* no budget, a model that does not reason, the client's own setting */
    assert_thinking(encode_thinking("{\"model\":\"m\"," MSGS "}", 0, false, true), 0, 4096);
    assert_thinking(encode_thinking("{\"model\":\"m\"," MSGS "}", 8000, false, false), 0, 4096);
    /* the client's own effort replaces the cap (test_encode_client_effort) */
    assert_thinking(encode_thinking("{\"model\":\"m\",\"reasoning_effort\":\"low\"," MSGS "}", 8000,
                                    true, true),
                    1024, 5120);
    /* sampling Anthropic refuses next to thinking: the client's choice wins */
    assert_thinking(
        encode_thinking("{\"model\":\"m\",\"temperature\":0.2," MSGS "}", 8000, false, true), 0,
        4096);
    assert_thinking(
        encode_thinking("{\"model\":\"m\",\"temperature\":1," MSGS "}", 8000, false, true), 8000,
        12096);
    assert_thinking(encode_thinking("{\"model\":\"m\",\"top_p\":0.5," MSGS "}", 8000, false, true),
                    0, 4096);
    assert_thinking(
        encode_thinking("{\"model\":\"m\",\"tool_choice\":\"required\",\"tools\":[{\"type\":"
                        "\"function\",\"function\":{\"name\":\"f\"}}]," MSGS "}",
                        8000, false, true),
        0, 4096);
    assert_thinking(
        encode_thinking("{\"model\":\"m\",\"tool_choice\":\"auto\",\"tools\":[{\"type\":"
                        "\"function\",\"function\":{\"name\":\"f\"}}]," MSGS "}",
                        8000, false, true),
        8000, 12096);
#undef MSGS
}

/* The client's reasoning_effort (or reasoning.effort) becomes a budget on
 * the thinking caps' scale, within the same rules as a cap. */
static void test_encode_client_effort(void **state)
{
#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
#define OWN(extra) encode_thinking("{\"model\":\"m\"," extra "," MSGS "}", 0, true, true)
    assert_thinking(OWN("\"reasoning_effort\":\"low\""), 1024, 4096 + 1024);
    assert_thinking(OWN("\"reasoning_effort\":\"medium\""), 4096, 4096 + 4096);
    assert_thinking(OWN("\"reasoning_effort\":\"high\""), 16384, 4096 + 16384);
    assert_thinking(OWN("\"reasoning_effort\":\"max\""), 16384, 4096 + 16384);
    assert_thinking(OWN("\"reasoning\":{\"effort\":\"medium\"}"), 4096, 4096 + 4096);
    /* reasoning_effort first when both are there */
    assert_thinking(OWN("\"reasoning_effort\":\"low\",\"reasoning\":{\"effort\":\"high\"}"), 1024,
                    4096 + 1024);
    /* none and minimal: no thinking */
    assert_thinking(OWN("\"reasoning_effort\":\"none\""), 0, 4096);
    assert_thinking(OWN("\"reasoning_effort\":\"minimal\""), 0, 4096);
    /* a reasoning object without an effort names no budget */
    assert_thinking(OWN("\"reasoning\":{\"summary\":\"auto\"}"), 0, 4096);
    /* the client's max_tokens bounds it; under 1024 left, none */
    assert_thinking(OWN("\"max_tokens\":3000,\"reasoning_effort\":\"high\""), 2999, 3000);
    assert_thinking(OWN("\"max_tokens\":1000,\"reasoning_effort\":\"low\""), 0, 1000);
    /* sampling Anthropic refuses next to thinking */
    assert_thinking(OWN("\"temperature\":0.2,\"reasoning_effort\":\"high\""), 0, 4096);
    /* a model that does not reason gets nothing */
    assert_thinking(
        encode_thinking("{\"model\":\"m\",\"reasoning_effort\":\"high\"," MSGS "}", 0, true, false),
        0, 4096);
    /* a tool loop going on: its thinking blocks did not come back, which
     * Anthropic refuses with thinking on; the results go without */
#define LOOP(calls)                                                                                \
    "\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":"     \
    "null,"                                                                                        \
    "\"tool_calls\":" calls "},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r\"}]"
#define CALL                                                                                       \
    "[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]"
    assert_thinking(
        encode_thinking("{\"model\":\"m\",\"reasoning_effort\":\"high\"," LOOP(CALL) "}", 0, true,
                        true),
        0, 4096);
    /* an empty tool_calls list is no loop */
    assert_thinking(
        encode_thinking("{\"model\":\"m\",\"reasoning_effort\":\"low\",\"messages\":[{\"role\":"
                        "\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":\"y\","
                        "\"tool_calls\":[]},{\"role\":\"user\",\"content\":\"z\"}]}",
                        0, true, true),
        1024, 4096 + 1024);
#undef CALL
#undef LOOP
#undef OWN
#undef MSGS
}

/* The client's own thinking object is Anthropic's: it goes as it came. */
static void test_encode_client_thinking_object(void **state)
{
#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
    /* max_tokens picked by bridle: raised past its budget */
    json_object *b = encode_thinking("{\"model\":\"m\",\"thinking\":{\"type\":\"enabled\","
                                     "\"budget_tokens\":2048,\"display\":\"summarized\"}," MSGS "}",
                                     8000, true, true);
    json_object *th = jget(b, "thinking");
    assert_string_equal(json_object_to_json_string_ext(th, JSON_C_TO_STRING_PLAIN),
                        "{\"type\":\"enabled\",\"budget_tokens\":2048,\"display\":\"summarized\"}");
    assert_int_equal(json_object_get_int64(jget(b, "max_tokens")), 4096 + 2048);
    json_object_put(b);
    /* the client's max_tokens stays; the object wins over an effort */
    b = encode_thinking("{\"model\":\"m\",\"max_tokens\":9000,\"reasoning_effort\":\"low\","
                        "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":5000}," MSGS "}",
                        0, true, true);
    assert_thinking(b, 5000, 9000);
    b = encode_thinking("{\"model\":\"m\",\"thinking\":{\"type\":\"adaptive\"}," MSGS "}", 0, true,
                        true);
    assert_string_equal(jstr(jget(b, "thinking"), "type"), "adaptive");
    assert_int_equal(json_object_get_int64(jget(b, "max_tokens")), 4096);
    json_object_put(b);
    /* not to a model that does not reason */
    assert_thinking(encode_thinking("{\"model\":\"m\",\"thinking\":{\"type\":\"enabled\","
                                    "\"budget_tokens\":2048}," MSGS "}",
                                    0, true, false),
                    0, 4096);
#undef MSGS
}

static void test_encode_headers_without_key_and_extras(void **state)
{
    const char *extras[] = {"anthropic-beta: prompt-caching-2024-07-31", NULL};
    provider_conf c = conf;
    c.api_key = "";
    c.extra_headers = extras;
    target t = tgt;
    t.provider = &c;
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &t, &out);
    assert_false(has_header_named(&out, "x-api-key"));
    assert_true(has_header(&out, "anthropic-beta: prompt-caching-2024-07-31"));
    json_object_put(b);
    upstream_request_free(&out);

    c.api_key = NULL;
    b = encode_ok("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &t,
                  &out);
    assert_false(has_header_named(&out, "x-api-key"));
    json_object_put(b);
    upstream_request_free(&out);
}

static void test_encode_images(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"text\",\"text\":\"What is this?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0K\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.jpg\","
        "\"detail\":\"high\"},\"cache_control\":{\"type\":\"ephemeral\"}}]}]}",
        &tgt, &out);
    json_object *content = jget(jidx(jget(b, "messages"), 0), "content");
    assert_int_equal(json_object_array_length(content), 3);
    json_object *img = jidx(content, 1);
    assert_string_equal(jstr(img, "type"), "image");
    assert_string_equal(jstr(jget(img, "source"), "type"), "base64");
    assert_string_equal(jstr(jget(img, "source"), "media_type"), "image/png");
    assert_string_equal(jstr(jget(img, "source"), "data"), "iVBORw0K");
    img = jidx(content, 2);
    assert_string_equal(jstr(jget(img, "source"), "type"), "url");
    assert_string_equal(jstr(jget(img, "source"), "url"), "https://example.com/cat.jpg");
    assert_non_null(jget(img, "cache_control"));
    json_object_put(b);
    upstream_request_free(&out);

    encode_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
                 "{\"type\":\"image_url\",\"image_url\":{\"url\":\"ftp://x/y.png\"}}]}]}",
                 "image URL");
    encode_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
                 "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png,abc\"}}]}]}",
                 "base64");
}

static void test_encode_tool_round_trip(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"m\",\"messages\":["
        "{\"role\":\"user\",\"content\":\"Weather in Paris and Rome?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
        "{\"id\":\"toolu_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
        "{\"id\":\"toolu_2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"city\\\":\\\"Rome\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"toolu_1\",\"content\":\"18C\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"toolu_2\",\"content\":[{\"type\":\"text\","
        "\"text\":\"25C\"}]},"
        "{\"role\":\"user\",\"content\":\"Thanks\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"description\":\"Current weather\",\"parameters\":{\"type\":\"object\","
        "\"properties\":{\"city\":{\"type\":\"string\"}}}}}],"
        "\"tool_choice\":\"required\",\"parallel_tool_calls\":false}",
        &tgt, &out);
    json_object *msgs = jget(b, "messages");
    assert_int_equal(json_object_array_length(msgs), 3);
    json_object *asst = jget(jidx(msgs, 1), "content");
    assert_string_equal(jstr(jidx(msgs, 1), "role"), "assistant");
    assert_int_equal(json_object_array_length(asst), 2);
    assert_string_equal(jstr(jidx(asst, 0), "type"), "tool_use");
    assert_string_equal(jstr(jidx(asst, 0), "id"), "toolu_1");
    assert_string_equal(jstr(jidx(asst, 0), "name"), "get_weather");
    assert_string_equal(jstr(jget(jidx(asst, 1), "input"), "city"), "Rome");

    /* Both tool results and the following user text are one user turn. */
    json_object *user = jget(jidx(msgs, 2), "content");
    assert_string_equal(jstr(jidx(msgs, 2), "role"), "user");
    assert_int_equal(json_object_array_length(user), 3);
    assert_string_equal(jstr(jidx(user, 0), "type"), "tool_result");
    assert_string_equal(jstr(jidx(user, 0), "tool_use_id"), "toolu_1");
    assert_string_equal(jstr(jidx(user, 0), "content"), "18C");
    assert_string_equal(jstr(jidx(user, 1), "tool_use_id"), "toolu_2");
    /* parts stay blocks (text and images), as Anthropic takes them */
    json_object *parts = jget(jidx(user, 1), "content");
    assert_int_equal(json_object_array_length(parts), 1);
    assert_string_equal(jstr(jidx(parts, 0), "type"), "text");
    assert_string_equal(jstr(jidx(parts, 0), "text"), "25C");
    assert_string_equal(jstr(jidx(user, 2), "text"), "Thanks");

    json_object *tool = jidx(jget(b, "tools"), 0);
    assert_string_equal(jstr(tool, "name"), "get_weather");
    assert_string_equal(jstr(tool, "description"), "Current weather");
    assert_string_equal(jstr(jget(tool, "input_schema"), "type"), "object");
    json_object *tc = jget(b, "tool_choice");
    assert_string_equal(jstr(tc, "type"), "any");
    assert_true(json_object_get_boolean(jget(tc, "disable_parallel_tool_use")));
    json_object_put(b);
    upstream_request_free(&out);
}

/* Ids from other providers are made to fit ^[a-zA-Z0-9_-]+$ the same way in
 * tool_use and tool_result, so they still match; a Gemini thought signature
 * riding in an id is dropped. */
static void test_encode_foreign_tool_ids(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"m\",\"messages\":["
        "{\"role\":\"user\",\"content\":\"hi\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
        "{\"id\":\"functions.get_weather:0\",\"type\":\"function\",\"function\":"
        "{\"name\":\"get_weather\",\"arguments\":\"{}\"}},"
        "{\"id\":\"call_ab12__thought__c2ln+/A=\",\"type\":\"function\",\"function\":"
        "{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"functions.get_weather:0\",\"content\":\"18C\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_ab12__thought__c2ln+/A=\",\"content\":"
        "\"noon\"}]}",
        &tgt, &out);
    json_object *msgs = jget(b, "messages");
    json_object *asst = jget(jidx(msgs, 1), "content");
    json_object *user = jget(jidx(msgs, 2), "content");
    assert_string_equal(jstr(jidx(asst, 0), "id"), "functions_get_weather_0");
    assert_string_equal(jstr(jidx(user, 0), "tool_use_id"), "functions_get_weather_0");
    assert_string_equal(jstr(jidx(asst, 1), "id"), "call_ab12");
    assert_string_equal(jstr(jidx(user, 1), "tool_use_id"), "call_ab12");
    json_object_put(b);
    upstream_request_free(&out);
}

/* tools f and g, tool_choice allowed_tools with mode %s naming %s */
#define ALLOWED_FMT                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"  \
    "\"function\",\"function\":{\"name\":\"f\"}},{\"type\":\"function\",\"function\":{\"name\":"   \
    "\"g\"}}],\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":\"%s\","     \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"%s\"}}]}}}"

/* allowed_tools: only the subset is sent, tool_choice by its mode; a
 * subset that names no tool is refused. */
static void test_encode_allowed_tools(void **state)
{
    char json[640];
    for (int req = 0; req < 2; req++) {
        upstream_request out;
        snprintf(json, sizeof json, ALLOWED_FMT, req ? "required" : "auto", "g");
        json_object *b = encode_ok(json, &tgt, &out);
        assert_int_equal(json_object_array_length(jget(b, "tools")), 1);
        assert_string_equal(jstr(jidx(jget(b, "tools"), 0), "name"), "g");
        assert_string_equal(jstr(jget(b, "tool_choice"), "type"), req ? "any" : "auto");
        json_object_put(b);
        upstream_request_free(&out);
    }
    snprintf(json, sizeof json, ALLOWED_FMT, "auto", "h");
    encode_fails(json, "allowed_tools names none of the request's tools");
}

/* arguments sent as an object (not OpenAI's string) mean the same object;
 * a number or an array is refused, saying what is wrong. */
static void test_encode_object_arguments(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"f\",\"arguments\":{\"a\":[1,\"b\"]}}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r\"}]}",
        &tgt, &out);
    json_object *input = jget(jidx(jget(jidx(jget(b, "messages"), 1), "content"), 0), "input");
    assert_string_equal(json_object_to_json_string_ext(input, JSON_C_TO_STRING_PLAIN),
                        "{\"a\":[1,\"b\"]}");
    json_object_put(b);
    upstream_request_free(&out);
    encode_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                 "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
                 "\"function\",\"function\":{\"name\":\"f\",\"arguments\":7}}]},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r\"}]}",
                 "arguments must be a string holding a JSON object");
}

static void test_encode_tool_choice_named_and_none(void **state)
{
    upstream_request out;
    const char *tools = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]";
    char json[512];
    snprintf(json, sizeof json,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],%s,"
             "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}",
             tools);
    json_object *b = encode_ok(json, &tgt, &out);
    assert_string_equal(jstr(jget(b, "tool_choice"), "type"), "tool");
    assert_string_equal(jstr(jget(b, "tool_choice"), "name"), "f");
    /* A tool without parameters still gets the schema Anthropic requires. */
    assert_string_equal(jstr(jget(jidx(jget(b, "tools"), 0), "input_schema"), "type"), "object");
    json_object_put(b);
    upstream_request_free(&out);

    snprintf(json, sizeof json,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],%s,"
             "\"tool_choice\":\"none\"}",
             tools);
    b = encode_ok(json, &tgt, &out);
    assert_string_equal(jstr(jget(b, "tool_choice"), "type"), "none");
    json_object_put(b);
    upstream_request_free(&out);
}

/* What the client's tokens say is what json-c read: a repeated key bridle
 * does not validate counts by its last value, and a lone surrogate escape
 * arrives as U+FFFD, not as an escape a strict upstream parser refuses. */
static void test_encode_reads_like_json_c(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"first\",\"text\":\"x\\ud83d y\"}]}],\"stop\":\"a\",\"stop\":[\"b\"]}",
        &tgt, &out);
    json_object *text = jget(jidx(jget(jidx(jget(b, "messages"), 0), "content"), 0), "text");
    assert_string_equal(json_object_get_string(text), "x\xef\xbf\xbd y");
    assert_null(strstr(out.body.data, "\\ud83d"));
    json_object *stop = jget(b, "stop_sequences");
    assert_int_equal(json_object_array_length(stop), 1);
    assert_string_equal(json_object_get_string(jidx(stop, 0)), "b");
    json_object_put(b);
    upstream_request_free(&out);
}

static void test_encode_errors(void **state)
{
    encode_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"only\"}]}",
                 "no user or assistant messages");
    encode_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                 "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"t\","
                 "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{oops\"}}]}]}",
                 "arguments");
    encode_fails(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
        "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"x\",\"format\":\"wav\"}}]}]}",
        "input_audio");
    encode_fails("{\"model\":\"m\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                 "n must be 1");
}

/* ------------------------------------------------------------ decode */

/* ------------------------------------------------------------ prompt caching */

static model_price cache_price = {.name = "sonnet", .input = 3000000, .min_cache_tokens = 1024};

/* "x" repeated n times: a text of about n / 4 tokens. */
static char *text_of(size_t n)
{
    char *t = malloc(n + 1);
    memset(t, 'x', n);
    t[n] = '\0';
    return t;
}

/* How many cache_control marks the body has. */
static int marks(const char *body)
{
    int n = 0;
    for (const char *p = body; (p = strstr(p, "\"cache_control\"")); p++)
        n++;
    return n;
}

static json_object *encode_cached(const char *json, bool one_hour, upstream_request *out)
{
    static provider_conf c;
    static target t;
    c = conf;
    c.prompt_cache_auto = true;
    c.prompt_cache_1h = one_hour;
    t = tgt;
    t.provider = &c;
    t.price = &cache_price;
    return encode_ok(json, &t, out);
}

static void test_encode_prompt_cache_threshold(void **state)
{
    /* a system prompt of 1,023 tokens (4,092 bytes) is below Sonnet's minimum of 1,024 */
    for (int over = 0; over < 2; over++) {
        char *sys = text_of(over ? 4096 : 4092), json[8192];
        snprintf(json, sizeof json,
                 "{\"model\":\"sonnet\",\"messages\":[{\"role\":\"system\",\"content\":\"%s\"},"
                 "{\"role\":\"user\",\"content\":\"Hi\"}]}",
                 sys);
        upstream_request out;
        json_object *b = encode_cached(json, false, &out);
        assert_int_equal(marks(out.body.data), over);
        if (over) {
            json_object *cc = jget(jidx(jget(b, "system"), 0), "cache_control");
            assert_string_equal(json_object_to_json_string_ext(cc, JSON_C_TO_STRING_PLAIN),
                                "{\"type\":\"ephemeral\"}");
        }
        json_object_put(b);
        upstream_request_free(&out);
        free(sys);
    }
}

static void test_encode_prompt_cache_placement(void **state)
{
    /* tools of ~1,100 tokens, a system prompt, a long pasted document, then
     * a conversation: tools, system, the document and the conversation so
     * far are marked (4, Anthropic's limit); the last message never is */
    char *desc = text_of(4400), *doc = text_of(8000), *json = malloc(20000);
    snprintf(
        json, 20000,
        "{\"model\":\"sonnet\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"description\":\"%s\",\"parameters\":{\"type\":\"object\"}}}],"
        "\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"content\":\"%s\"},{\"role\":\"assistant\",\"content\":\"Read.\"},"
        "{\"role\":\"user\",\"content\":\"Summarise\"},{\"role\":\"assistant\",\"content\":"
        "\"Done.\"},{\"role\":\"user\",\"content\":\"Shorter\"}]}",
        desc, doc);
    upstream_request out;
    json_object *b = encode_cached(json, true, &out);
    assert_int_equal(marks(out.body.data), 4);
    const char *one_h = "{\"type\":\"ephemeral\",\"ttl\":\"1h\"}";
    json_object *tools = jget(b, "tools");
    assert_string_equal(json_object_to_json_string_ext(jget(jidx(tools, 0), "cache_control"),
                                                       JSON_C_TO_STRING_PLAIN),
                        one_h);
    assert_non_null(jget(jidx(jget(b, "system"), 0), "cache_control"));
    json_object *msgs = jget(b, "messages"); /* user, assistant, user, assistant, user */
    assert_int_equal(json_object_array_length(msgs), 5);
    assert_non_null(jget(jidx(jget(jidx(msgs, 0), "content"), 0), "cache_control")); /* document */
    assert_null(jget(jidx(jget(jidx(msgs, 1), "content"), 0), "cache_control"));
    assert_null(jget(jidx(jget(jidx(msgs, 2), "content"), 0), "cache_control"));
    assert_non_null(jget(jidx(jget(jidx(msgs, 3), "content"), 0), "cache_control")); /* so far */
    assert_null(jget(jidx(jget(jidx(msgs, 4), "content"), 0), "cache_control"));
    json_object_put(b);
    upstream_request_free(&out);
    free(desc);
    free(doc);
    free(json);
}

static void test_encode_prompt_cache_client_marks_win(void **state)
{
    /* one cache_control of the client's own: bridle adds none */
    char *sys = text_of(9000), json[10000];
    snprintf(json, sizeof json,
             "{\"model\":\"sonnet\",\"messages\":[{\"role\":\"system\",\"content\":\"%s\"},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\","
             "\"cache_control\":{\"type\":\"ephemeral\"}}]}]}",
             sys);
    upstream_request out;
    json_object *b = encode_cached(json, false, &out);
    assert_int_equal(marks(out.body.data), 1);
    assert_null(jget(jidx(jget(b, "system"), 0), "cache_control"));
    json_object_put(b);
    upstream_request_free(&out);
    /* and with options.prompt_cache off (this file's provider): none */
    b = encode_ok("{\"model\":\"sonnet\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
                  &tgt, &out);
    assert_int_equal(marks(out.body.data), 0);
    json_object_put(b);
    upstream_request_free(&out);
    free(sys);
}

static void test_decode_text_with_cache_and_thinking(void **state)
{
    const char *body =
        "{\"id\":\"msg_01ABC\",\"type\":\"message\",\"role\":\"assistant\","
        "\"model\":\"claude-sonnet-4-5-20250929\",\"content\":["
        "{\"type\":\"thinking\",\"thinking\":\"Let me think\",\"signature\":\"EqQB\"},"
        "{\"type\":\"text\",\"text\":\"Hello\"},{\"type\":\"text\",\"text\":\" world\"}],"
        "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,"
        "\"cache_creation_input_tokens\":300,\"cache_read_input_tokens\":2000,"
        "\"cache_creation\":{\"ephemeral_5m_input_tokens\":100,\"ephemeral_1h_input_tokens\":200},"
        "\"output_tokens\":50,\"output_tokens_details\":{\"thinking_tokens\":20},"
        "\"service_tier\":\"standard\"}}";
    decoded_response d;
    char err[256];
    assert_int_equal(anthropic_ops.decode(NULL, &tgt, body, strlen(body), &d, err, sizeof err), 0);
    json_object *o = d.body;
    assert_string_equal(jstr(o, "id"), "msg_01ABC");
    assert_string_equal(jstr(o, "object"), "chat.completion");
    assert_string_equal(jstr(o, "model"), "claude-sonnet-4-5-20250929");
    assert_true(json_object_get_int64(jget(o, "created")) > 1700000000);
    json_object *ch = jidx(jget(o, "choices"), 0);
    assert_int_equal(json_object_get_int(jget(ch, "index")), 0);
    assert_string_equal(jstr(ch, "finish_reason"), "stop");
    assert_string_equal(jstr(jget(ch, "message"), "role"), "assistant");
    assert_string_equal(jstr(jget(ch, "message"), "content"), "Hello world");
    assert_null(jget(jget(ch, "message"), "tool_calls"));

    json_object *u = jget(o, "usage");
    assert_int_equal(json_object_get_int64(jget(u, "prompt_tokens")), 2310);
    assert_int_equal(json_object_get_int64(jget(u, "completion_tokens")), 50);
    assert_int_equal(json_object_get_int64(jget(u, "total_tokens")), 2360);
    assert_int_equal(json_object_get_int64(jget(jget(u, "prompt_tokens_details"), "cached_tokens")),
                     2000);
    assert_int_equal(
        json_object_get_int64(jget(jget(u, "prompt_tokens_details"), "cache_write_tokens")), 300);
    assert_int_equal(
        json_object_get_int64(jget(jget(u, "completion_tokens_details"), "reasoning_tokens")), 20);

    assert_true(d.usage.exact);
    assert_int_equal(d.usage.input_uncached, 10);
    assert_int_equal(d.usage.cache_read, 2000);
    assert_int_equal(d.usage.cache_write_5m, 100);
    assert_int_equal(d.usage.cache_write_1h, 200);
    assert_int_equal(d.usage.output, 50);
    assert_int_equal(d.usage.reasoning, 20);
    assert_int_equal(d.prompt_tokens, 2310);
    assert_int_equal(d.completion_tokens, 50);
    assert_string_equal(d.finish_reason, "stop");
    json_object_put(d.body);
}

static void test_decode_tool_use(void **state)
{
    const char *body =
        "{\"id\":\"msg_02\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\","
        "\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_01A\",\"name\":\"get_weather\","
        "\"input\":{\"city\":\"Paris\",\"days\":2}}],\"stop_reason\":\"tool_use\","
        "\"usage\":{\"input_tokens\":400,\"output_tokens\":60}}";
    decoded_response d;
    char err[256];
    assert_int_equal(anthropic_ops.decode(NULL, &tgt, body, strlen(body), &d, err, sizeof err), 0);
    json_object *msg = jget(jidx(jget(d.body, "choices"), 0), "message");
    /* content is present and null when the answer is only tool calls. */
    assert_true(json_object_object_get_ex(msg, "content", NULL));
    assert_null(jget(msg, "content"));
    json_object *call = jidx(jget(msg, "tool_calls"), 0);
    assert_string_equal(jstr(call, "id"), "toolu_01A");
    assert_string_equal(jstr(call, "type"), "function");
    assert_string_equal(jstr(jget(call, "function"), "name"), "get_weather");
    assert_string_equal(jstr(jget(call, "function"), "arguments"),
                        "{\"city\":\"Paris\",\"days\":2}");
    assert_string_equal(d.finish_reason, "tool_calls");
    assert_int_equal(d.usage.cache_write_5m, 0);
    json_object_put(d.body);
}

static void test_decode_finish_reasons(void **state)
{
    static const char *const pairs[][2] = {
        {"max_tokens", "length"},      {"model_context_window_exceeded", "length"},
        {"stop_sequence", "stop"},     {"pause_turn", "stop"},
        {"refusal", "content_filter"}, {"end_turn", "stop"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"id\":\"m\",\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":"
                 "\"x\"}],\"stop_reason\":\"%s\",\"usage\":{\"input_tokens\":1,"
                 "\"output_tokens\":1}}",
                 pairs[i][0]);
        decoded_response d;
        char err[256];
        assert_int_equal(anthropic_ops.decode(NULL, &tgt, body, strlen(body), &d, err, sizeof err),
                         0);
        assert_string_equal(d.finish_reason, pairs[i][1]);
        assert_string_equal(jstr(jidx(jget(d.body, "choices"), 0), "finish_reason"), pairs[i][1]);
        json_object_put(d.body);
    }
}

static void test_decode_rejects_non_messages(void **state)
{
    static const char *const bodies[] = {
        "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"x\"}}",
        "not json",
        "[1,2]",
        "{\"id\":\"m\"}",
        "",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        decoded_response d;
        char err[256] = "";
        assert_int_equal(
            anthropic_ops.decode(NULL, &tgt, bodies[i], strlen(bodies[i]), &d, err, sizeof err),
            -1);
        assert_non_null(strstr(err, "not a message"));
        assert_null(d.body);
    }
}

/* ------------------------------------------------------------ stream */

typedef struct chunks {
    json_object *list[64];
    int n;
} chunks;

static void sink_collect(void *ctx, const char *json, size_t len)
{
    chunks *c = ctx;
    assert_int_equal(strlen(json), len);
    json_object *o = json_tokener_parse(json);
    if (!o) fail_msg("chunk is not JSON: %s", json);
    assert_true(c->n < 64);
    c->list[c->n++] = o;
}

static void chunks_free(chunks *c)
{
    for (int i = 0; i < c->n; i++)
        json_object_put(c->list[i]);
    c->n = 0;
}

static json_object *chunk_delta(chunks *c, int i)
{
    return jget(jidx(jget(c->list[i], "choices"), 0), "delta");
}

static const char *chunk_finish(chunks *c, int i)
{
    return jstr(jidx(jget(c->list[i], "choices"), 0), "finish_reason");
}

static int feed(void *st, const char *event, const char *data, stream_result *res,
                const stream_sink *sink)
{
    stream_event ev = {.event = event, .data = data, .data_len = strlen(data)};
    return anthropic_ops.stream_event(st, &ev, res, sink);
}

static void test_stream_text_and_tool_call_in_fragments(void **state)
{
    static const char *const events[][2] = {
        {"message_start",
         "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01X\",\"type\":\"message\","
         "\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],"
         "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,"
         "\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":1000,"
         "\"output_tokens\":1}}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
                                "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"},
        {"ping", "{\"type\": \"ping\"}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
                                "\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check\"}}"},
        {"content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":0,"
         "\"delta\":{\"type\":\"text_delta\",\"text\":\" the \\\"weather\\\".\"}}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}"},
        {"content_block_start",
         "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
         "\"id\":\"toolu_01T\",\"name\":\"get_weather\",\"input\":{}}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{"
                                "\"type\":\"input_json_delta\",\"partial_json\":\"\"}}"},
        {"content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{"
         "\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Pa\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{"
                                "\"type\":\"input_json_delta\",\"partial_json\":\"ris\\\"}\"}}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
                          "\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}"},
        {"message_stop", "{\"type\":\"message_stop\"}"},
    };
    canon_request req = canon_from_json(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":true}");
    void *st = anthropic_ops.stream_new(&req, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        assert_int_equal(feed(st, events[i][0], events[i][1], &res, &sink), 0);
        assert_false(res.failed);
        if (i == 0) {
            /* Input and cache counts are known from message_start on. */
            assert_int_equal(res.prompt_tokens, 1125);
            assert_false(res.done);
        }
    }
    /* role, 2 texts, tool start, 2 argument fragments, finish. */
    assert_int_equal(c.n, 7);
    for (int i = 0; i < c.n; i++) {
        assert_string_equal(jstr(c.list[i], "id"), "msg_01X");
        assert_string_equal(jstr(c.list[i], "object"), "chat.completion.chunk");
        assert_string_equal(jstr(c.list[i], "model"), "claude-sonnet-4-5-20250929");
        assert_null(jget(c.list[i], "usage"));
    }
    assert_string_equal(jstr(chunk_delta(&c, 0), "role"), "assistant");
    assert_null(chunk_finish(&c, 0));
    assert_string_equal(jstr(chunk_delta(&c, 1), "content"), "Let me check");
    assert_string_equal(jstr(chunk_delta(&c, 2), "content"), " the \"weather\".");
    json_object *tc = jidx(jget(chunk_delta(&c, 3), "tool_calls"), 0);
    assert_int_equal(json_object_get_int(jget(tc, "index")), 0);
    assert_string_equal(jstr(tc, "id"), "toolu_01T");
    assert_string_equal(jstr(tc, "type"), "function");
    assert_string_equal(jstr(jget(tc, "function"), "name"), "get_weather");
    assert_string_equal(jstr(jget(tc, "function"), "arguments"), "");
    char args[64] = "";
    for (int i = 4; i <= 5; i++) {
        json_object *frag = jidx(jget(chunk_delta(&c, i), "tool_calls"), 0);
        assert_int_equal(json_object_get_int(jget(frag, "index")), 0);
        assert_null(jget(frag, "id"));
        strcat(args, jstr(jget(frag, "function"), "arguments"));
    }
    assert_string_equal(args, "{\"city\": \"Paris\"}");
    /* the call's name and arguments, for a usage estimate */
    assert_int_equal(res.tool_bytes, strlen("get_weather") + strlen(args));
    assert_int_equal(json_object_object_length(chunk_delta(&c, 6)), 0);
    assert_string_equal(chunk_finish(&c, 6), "tool_calls");

    assert_true(res.done);
    assert_string_equal(res.finish_reason, "tool_calls");
    assert_string_equal(res.text.data, "Let me check the \"weather\".");
    assert_true(res.usage.exact);
    assert_int_equal(res.usage.input_uncached, 25);
    assert_int_equal(res.usage.cache_read, 1000);
    assert_int_equal(res.usage.cache_write_5m, 100);
    assert_int_equal(res.usage.output, 89);
    assert_int_equal(res.prompt_tokens, 1125);
    assert_int_equal(res.completion_tokens, 89);

    chunks_free(&c);
    buf_free(&res.text);
    anthropic_ops.stream_free(st);
    fixture_canon_release(&req);
}

static void test_stream_message_delta_overwrites_and_usage_null(void **state)
{
    canon_request req = canon_from_json("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                                        "\"content\":\"x\"}],\"stream\":true,\"stream_"
                                        "options\":{\"include_usage\":true}}");
    void *st = anthropic_ops.stream_new(&req, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    feed(st, "message_start",
         "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_9\",\"model\":\"claude\","
         "\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}",
         &res, &sink);
    feed(st, "content_block_start",
         "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\","
         "\"thinking\":\"\"}}",
         &res, &sink);
    feed(st, "content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\","
         "\"thinking\":\"hmm\"}}",
         &res, &sink);
    feed(st, "content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\","
         "\"signature\":\"EqQ\"}}",
         &res, &sink);
    assert_int_equal(c.n, 1); /* only the role chunk: thinking is not output */
    feed(st, "message_delta",
         "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{"
         "\"input_tokens\":7,\"cache_read_input_tokens\":null,\"cache_creation_input_tokens\":40,"
         "\"output_tokens\":64,\"output_tokens_details\":{\"thinking_tokens\":60}}}",
         &res, &sink);
    assert_int_equal(res.usage.input_uncached, 7);
    assert_int_equal(res.usage.cache_read, 0);
    assert_int_equal(res.usage.cache_write_5m, 40);
    assert_int_equal(res.usage.output, 64);
    assert_int_equal(res.usage.reasoning, 60);
    assert_string_equal(res.finish_reason, "length");
    assert_false(res.done);
    feed(st, "message_stop", "{\"type\":\"message_stop\"}", &res, &sink);
    assert_true(res.done);
    assert_int_equal(c.n, 2);
    /* include_usage: every content chunk says usage:null, like OpenAI. */
    assert_true(json_object_object_get_ex(c.list[0], "usage", NULL));
    assert_null(jget(c.list[0], "usage"));
    assert_string_equal(chunk_finish(&c, 1), "length");
    chunks_free(&c);
    buf_free(&res.text);
    anthropic_ops.stream_free(st);
    fixture_canon_release(&req);
}

static void test_stream_error_event(void **state)
{
    void *st = anthropic_ops.stream_new(NULL, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    feed(st, "message_start",
         "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_e\",\"model\":\"claude\","
         "\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}",
         &res, &sink);
    assert_int_equal(feed(st, "error",
                          "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                          "\"message\":\"Overloaded\"}}",
                          &res, &sink),
                     0);
    assert_true(res.failed);
    assert_false(res.done);
    assert_int_equal(res.error.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(res.error.client_status, 503);
    assert_string_equal(res.error.type, "server_error");
    assert_non_null(strstr(res.error.message, "Overloaded"));
    chunks_free(&c);
    anthropic_ops.stream_free(st);

    st = anthropic_ops.stream_new(NULL, &tgt);
    memset(&res, 0, sizeof res);
    assert_int_equal(feed(st, "content_block_delta", "{\"type\":\"content_blo", &res, &sink), -1);
    assert_true(res.failed);
    assert_int_equal(res.error.client_status, 502);
    assert_int_equal(c.n, 0);
    anthropic_ops.stream_free(st);
}

static void test_stream_without_message_start(void **state)
{
    /* A lost message_start still yields well-formed chunks. */
    void *st = anthropic_ops.stream_new(NULL, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    feed(st, "content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\","
         "\"partial_json\":\"{}\"}}",
         &res, &sink);
    assert_int_equal(c.n, 0); /* no tool block started: nothing to attach it to */
    feed(st, "content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
         "\"text\":\"hi\"}}",
         &res, &sink);
    feed(st, "message_stop", "{\"type\":\"message_stop\"}", &res, &sink);
    assert_int_equal(c.n, 3); /* role, text, finish */
    assert_string_equal(jstr(c.list[1], "model"), "claude-sonnet-4-5");
    assert_string_equal(jstr(c.list[0], "id"), jstr(c.list[2], "id"));
    assert_string_equal(chunk_finish(&c, 2), "stop");
    assert_true(res.done);
    assert_false(res.usage.exact);
    chunks_free(&c);
    buf_free(&res.text);
    anthropic_ops.stream_free(st);
}

/* ------------------------------------------------------------ classify */

static upstream_error classify(int status, const upstream_headers *hs, const char *body)
{
    upstream_error e;
    anthropic_ops.classify(status, hs, body, body ? strlen(body) : 0, &e);
    return e;
}

/* ------------------------------------------------------------ structured output */

static void test_structured_output_encode(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"sonnet\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"r\","
        "\"schema\":{\"type\":\"object\",\"properties\":{\"ok\":{\"type\":\"boolean\"}}}}},"
        "\"reasoning_effort\":\"high\"}",
        &tgt, &out);
    json_object *tool = jidx(jget(b, "tools"), 0);
    assert_string_equal(jstr(tool, "name"), "json_answer");
    assert_string_equal(jstr(jget(jget(jget(tool, "input_schema"), "properties"), "ok"), "type"),
                        "boolean");
    assert_string_equal(jstr(jget(b, "tool_choice"), "type"), "tool");
    assert_string_equal(jstr(jget(b, "tool_choice"), "name"), "json_answer");
    assert_null(jget(b, "thinking")); /* not with a forced tool */
    json_object_put(b);
    upstream_request_free(&out);
    b = encode_ok("{\"model\":\"sonnet\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                  "\"response_format\":{\"type\":\"json_object\"}}",
                  &tgt, &out);
    assert_string_equal(jstr(jget(jidx(jget(b, "tools"), 0), "input_schema"), "type"), "object");
    json_object_put(b);
    upstream_request_free(&out);
    encode_fails("{\"model\":\"sonnet\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                 "\"response_format\":{\"type\":\"json_object\"},\"tools\":[{\"type\":\"function\","
                 "\"function\":{\"name\":\"f\"}}]}",
                 "response_format and tools together");
}

static void test_structured_output_decode_and_stream(void **state)
{
    canon_request req =
        canon_from_json("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                        "\"response_format\":{\"type\":\"json_object\"},\"stream\":true}");
    const char *body =
        "{\"id\":\"msg_03\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\","
        "\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"json_answer\","
        "\"input\":{\"ok\":true,\"n\":2}}],\"stop_reason\":\"tool_use\","
        "\"usage\":{\"input_tokens\":10,\"output_tokens\":6}}";
    decoded_response d;
    char err[256];
    assert_int_equal(anthropic_ops.decode(&req, &tgt, body, strlen(body), &d, err, sizeof err), 0);
    json_object *msg = jget(jidx(jget(d.body, "choices"), 0), "message");
    assert_string_equal(jstr(msg, "content"), "{\"ok\":true,\"n\":2}");
    assert_null(jget(msg, "tool_calls"));
    assert_string_equal(d.finish_reason, "stop");
    json_object_put(d.body);
    static const char *const events[][2] = {
        {"message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_04\",\"model\":"
                          "\"claude\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}"},
        {"content_block_start",
         "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\","
         "\"id\":\"toolu_2\",\"name\":\"json_answer\",\"input\":{}}}"},
        {"content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
         "\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"ok\\\":\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
                                "\"type\":\"input_json_delta\",\"partial_json\":\"true}\"}}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},"
                          "\"usage\":{\"output_tokens\":5}}"},
        {"message_stop", "{\"type\":\"message_stop\"}"},
    };
    void *st = anthropic_ops.stream_new(&req, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
        assert_int_equal(feed(st, events[i][0], events[i][1], &res, &sink), 0);
    /* role, two pieces of the JSON as content, the finish */
    assert_int_equal(c.n, 4);
    assert_string_equal(jstr(chunk_delta(&c, 1), "content"), "{\"ok\":");
    assert_string_equal(jstr(chunk_delta(&c, 2), "content"), "true}");
    assert_null(jget(chunk_delta(&c, 1), "tool_calls"));
    assert_string_equal(chunk_finish(&c, 3), "stop");
    assert_true(res.text.len == 11 && memcmp(res.text.data, "{\"ok\":true}", 11) == 0);
    anthropic_ops.stream_free(st);
    buf_free(&res.text);
    chunks_free(&c);
    fixture_canon_release(&req);
}

/* What the Messages way in carries (router/messages.h): thinking blocks go
 * back first in their turn, a tool result keeps is_error and its
 * cache_control, top_k goes through; and the answer's thinking comes back
 * only to that way in. */
static void test_messages_api_extensions(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"m\",\"top_k\":5,\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}],"
        "\"tool_calls\":[{\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"arguments\":\"{}\"}}],\"thinking_blocks\":[{\"type\":\"thinking\",\"thinking\":\"hm\","
        "\"signature\":\"sig\"}]},{\"role\":\"tool\",\"tool_call_id\":\"t1\",\"content\":\"bad\","
        "\"is_error\":true,\"cache_control\":{\"type\":\"ephemeral\"}}]}",
        &tgt, &out);
    assert_int_equal(fixture_get_int(b, "top_k"), 5);
    json_object *asst = jget(jidx(jget(b, "messages"), 1), "content");
    assert_string_equal(jstr(jidx(asst, 0), "type"), "thinking");
    assert_string_equal(jstr(jidx(asst, 0), "signature"), "sig");
    assert_string_equal(jstr(jidx(asst, 1), "type"), "text");
    assert_string_equal(jstr(jidx(asst, 2), "type"), "tool_use");
    json_object *res = jidx(jget(jidx(jget(b, "messages"), 2), "content"), 0);
    assert_string_equal(jstr(res, "type"), "tool_result");
    assert_true(json_object_get_boolean(jget(res, "is_error")));
    assert_string_equal(jstr(jget(res, "cache_control"), "type"), "ephemeral");
    json_object_put(b);
    upstream_request_free(&out);

    const char *body =
        "{\"id\":\"msg_t\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\","
        "\"content\":[{\"type\":\"thinking\",\"thinking\":\"hm\",\"signature\":\"sig\"},"
        "{\"type\":\"redacted_thinking\",\"data\":\"xx\"},{\"type\":\"text\",\"text\":\"hi\"}],"
        "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}";
    canon_request req = canon_from_json("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                                        "\"content\":\"q\"}],\"stream\":true}");
    decoded_response d;
    char err[256];
    for (int api = 0; api < 2; api++) {
        req.messages_api = api;
        assert_int_equal(anthropic_ops.decode(&req, &tgt, body, strlen(body), &d, err, sizeof err),
                         0);
        json_object *msg = jget(jidx(jget(d.body, "choices"), 0), "message");
        assert_string_equal(jstr(msg, "content"), "hi");
        json_object *tb = jget(msg, "thinking_blocks");
        if (!api) assert_null(tb);
        if (api) {
            assert_int_equal(json_object_array_length(tb), 2);
            assert_string_equal(jstr(jidx(tb, 0), "signature"), "sig");
            assert_string_equal(jstr(jidx(tb, 1), "data"), "xx");
        }
        json_object_put(d.body);
    }
    static const char *const events[][2] = {
        {"message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_5\",\"model\":"
                          "\"claude\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                                "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
                                "\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
                                "\"type\":\"signature_delta\",\"signature\":\"sig\"}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":"
                                "{\"type\":\"redacted_thinking\",\"data\":\"xx\"}}"},
    };
    for (int api = 0; api < 2; api++) {
        req.messages_api = api;
        void *st = anthropic_ops.stream_new(&req, &tgt);
        stream_result sres;
        memset(&sres, 0, sizeof sres);
        chunks c = {.n = 0};
        stream_sink sink = {.ctx = &c, .chunk = sink_collect};
        for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
            assert_int_equal(feed(st, events[i][0], events[i][1], &sres, &sink), 0);
        /* the role chunk, then for the Messages way in only: the thinking,
         * its signature and the redacted block */
        assert_int_equal(c.n, api ? 4 : 1);
        if (api) {
            assert_string_equal(jstr(chunk_delta(&c, 1), "reasoning_content"), "hm");
            assert_string_equal(jstr(chunk_delta(&c, 2), "thinking_signature"), "sig");
            assert_string_equal(jstr(chunk_delta(&c, 3), "redacted_thinking"), "xx");
        }
        assert_int_equal(sres.text.len, 0); /* thinking is not the answer's text */
        anthropic_ops.stream_free(st);
        buf_free(&sres.text);
        chunks_free(&c);
    }
    fixture_canon_release(&req);
}

static void test_classify_overloaded_and_rate_limit(void **state)
{
    upstream_headers hs = {.n = 1};
    hs.h[0].name = "retry-after";
    hs.h[0].value = "7";
    upstream_error e =
        classify(529, &hs,
                 "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
                 "\"Overloaded\"},\"request_id\":\"req_1\"}");
    assert_int_equal(e.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(e.client_status, 503);
    assert_string_equal(e.type, "server_error");
    assert_int_equal(e.retry_after_ms, 7000);

    e = classify(429, &hs,
                 "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":"
                 "\"Number of request tokens has exceeded your per-minute rate limit\"}}");
    assert_int_equal(e.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(e.client_status, 429);
    assert_int_equal(e.retry_after_ms, 7000);
    assert_non_null(strstr(e.message, "per-minute"));

    e = classify(529, NULL, "");
    assert_int_equal(e.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(e.client_status, 503);
    assert_int_equal(e.retry_after_ms, -1);
}

static void test_classify_auth_never_echoes(void **state)
{
    static const char *const bodies[] = {
        "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":"
        "\"invalid x-api-key sk-ant-SECRET\"}}",
        "{\"type\":\"error\",\"error\":{\"type\":\"permission_error\",\"message\":"
        "\"key sk-ant-SECRET lacks permission\"}}",
    };
    int statuses[] = {401, 403};
    for (int i = 0; i < 2; i++) {
        upstream_error e = classify(statuses[i], NULL, bodies[i]);
        assert_int_equal(e.cls, ERRCLASS_FATAL);
        assert_int_equal(e.client_status, 502);
        assert_string_equal(e.type, "upstream_auth_error");
        assert_null(strstr(e.message, "SECRET"));
    }
}

static void test_classify_request_errors(void **state)
{
    upstream_error e =
        classify(400, NULL,
                 "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
                 "\"prompt is too long: 210000 tokens > 200000 maximum\"}}");
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_int_equal(e.client_status, 400);
    assert_string_equal(e.type, "invalid_request_error");
    assert_string_equal(e.code, "context_length_exceeded");
    assert_non_null(strstr(e.message, "210000 tokens"));

    e = classify(400, NULL,
                 "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
                 "\"messages.0.content: Field required\"}}");
    assert_int_equal(e.client_status, 400);
    assert_string_equal(e.code, "");
    assert_non_null(strstr(e.message, "Field required"));

    e = classify(413, NULL,
                 "{\"type\":\"error\",\"error\":{\"type\":\"request_too_large\",\"message\":"
                 "\"Request exceeds the maximum allowed number of bytes.\"}}");
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_int_equal(e.client_status, 413);

    e = classify(400, NULL,
                 "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
                 "\"Your credit balance is too low to access the Anthropic API.\"}}");
    assert_true(e.quota_exhausted);
    assert_int_equal(e.client_status, 502);
}

static void test_classify_server_errors(void **state)
{
    upstream_error e = classify(500, NULL,
                                "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
                                "\"Internal server error\"}}");
    assert_int_equal(e.cls, ERRCLASS_AMBIGUOUS);
    assert_int_equal(e.client_status, 502);

    e = classify(502, NULL, "<html>Bad Gateway</html>");
    assert_int_equal(e.cls, ERRCLASS_AMBIGUOUS);
    assert_true(e.message[0] != '\0');

    e = classify(404, NULL,
                 "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":"
                 "\"model: claude-nope\"}}");
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_non_null(strstr(e.message, "claude-nope"));
}

/* ------------------------------------------------------------ usage */

static usage_record map(const char *json)
{
    json_object *o = json_tokener_parse(json);
    usage_record r = anthropic_ops.usage_map(o);
    json_object_put(o);
    return r;
}

static void test_usage_map_edges(void **state)
{
    usage_record r = map("{\"input_tokens\":10,\"cache_creation_input_tokens\":500,"
                         "\"cache_read_input_tokens\":null,\"output_tokens\":3}");
    assert_true(r.exact);
    assert_int_equal(r.cache_write_5m, 500); /* no TTL split: all 5m */
    assert_int_equal(r.cache_write_1h, 0);
    assert_int_equal(r.cache_read, 0);

    r = map("{\"input_tokens\":10,\"cache_creation_input_tokens\":500,\"cache_creation\":"
            "{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":500},"
            "\"output_tokens\":3}");
    assert_int_equal(r.cache_write_5m, 0);
    assert_int_equal(r.cache_write_1h, 500);

    r = map("{\"output_tokens\":3}");
    assert_false(r.exact);

    r = map("{\"input_tokens\":-5,\"output_tokens\":\"7\"}");
    assert_int_equal(r.input_uncached, 0);
    assert_false(r.exact);

    r = anthropic_ops.usage_map(NULL);
    assert_false(r.exact);
    assert_int_equal(r.output, 0);
}

static void test_cost_of_decoded_usage(void **state)
{
    const char *body = "{\"id\":\"msg_c\",\"type\":\"message\",\"model\":\"claude-sonnet-4-5\","
                       "\"content\":[{\"type\":\"text\",\"text\":\"ok\"}],"
                       "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":1500,"
                       "\"output_tokens\":500}}";
    decoded_response d;
    char err[256];
    assert_int_equal(anthropic_ops.decode(NULL, &tgt, body, strlen(body), &d, err, sizeof err), 0);
    model_price sonnet = {
        .name = "claude-sonnet-4-5", .input = 3000000, .cached_input = 300000, .output = 15000000};
    assert_int_equal(pricing_cost_pusd(&sonnet, &d.usage, false), 12000000000LL);
    json_object_put(d.body);
}

/* safety_identifier (user's successor) names the end user when there is no
 * user; top_k goes as it came; seed and the penalties cannot go. */
static void test_encode_fidelity_params(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"sonnet\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"safety_identifier\":\"hashed-7\",\"top_k\":5,\"seed\":3,\"presence_penalty\":1}",
        &tgt, &out);
    assert_string_equal(jstr(jget(b, "metadata"), "user_id"), "hashed-7");
    assert_int_equal(json_object_get_int64(jget(b, "top_k")), 5);
    assert_null(jget(b, "seed"));
    assert_null(jget(b, "presence_penalty"));
    assert_null(jget(b, "safety_identifier"));
    json_object_put(b);
    upstream_request_free(&out);
    b = encode_ok("{\"model\":\"sonnet\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                  "\"safety_identifier\":\"hashed-7\",\"user\":\"u-1\"}",
                  &tgt, &out);
    assert_string_equal(jstr(jget(b, "metadata"), "user_id"), "u-1"); /* user wins */
    json_object_put(b);
    upstream_request_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_basic_and_system_hoisting),
        cmocka_unit_test(test_messages_api_extensions),
        cmocka_unit_test(test_encode_fidelity_params),
        cmocka_unit_test(test_encode_max_tokens_sources),
        cmocka_unit_test(test_encode_thinking_budget),
        cmocka_unit_test(test_encode_client_effort),
        cmocka_unit_test(test_encode_client_thinking_object),
        cmocka_unit_test(test_encode_headers_without_key_and_extras),
        cmocka_unit_test(test_encode_images),
        cmocka_unit_test(test_encode_tool_round_trip),
        cmocka_unit_test(test_encode_foreign_tool_ids),
        cmocka_unit_test(test_encode_allowed_tools),
        cmocka_unit_test(test_encode_object_arguments),
        cmocka_unit_test(test_encode_tool_choice_named_and_none),
        cmocka_unit_test(test_encode_reads_like_json_c),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_encode_prompt_cache_threshold),
        cmocka_unit_test(test_encode_prompt_cache_placement),
        cmocka_unit_test(test_encode_prompt_cache_client_marks_win),
        cmocka_unit_test(test_structured_output_encode),
        cmocka_unit_test(test_structured_output_decode_and_stream),
        cmocka_unit_test(test_decode_text_with_cache_and_thinking),
        cmocka_unit_test(test_decode_tool_use),
        cmocka_unit_test(test_decode_finish_reasons),
        cmocka_unit_test(test_decode_rejects_non_messages),
        cmocka_unit_test(test_stream_text_and_tool_call_in_fragments),
        cmocka_unit_test(test_stream_message_delta_overwrites_and_usage_null),
        cmocka_unit_test(test_stream_error_event),
        cmocka_unit_test(test_stream_without_message_start),
        cmocka_unit_test(test_classify_overloaded_and_rate_limit),
        cmocka_unit_test(test_classify_auth_never_echoes),
        cmocka_unit_test(test_classify_request_errors),
        cmocka_unit_test(test_classify_server_errors),
        cmocka_unit_test(test_usage_map_edges),
        cmocka_unit_test(test_cost_of_decoded_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

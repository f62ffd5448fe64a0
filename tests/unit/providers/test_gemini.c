/* Unit tests for providers/gemini.c: encode (parsed back and checked),
 * decode, streams fed event by event as wire-formats §4 describes them
 * (running-total usage, no [DONE]), classify and usage_map. */
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

extern const provider_ops gemini_ops;

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
    .name = "gemini",
    .ops = &gemini_ops,
    .base_url = "https://generativelanguage.googleapis.com/v1beta",
    .api_key = "AIza-test",
};

static target tgt = {
    .provider = &conf,
    .model = "flash",
    .upstream_model = "gemini-2.5-flash",
};

static json_object *encode_ok(const char *json, const target *t, upstream_request *out)
{
    canon_request req = canon_from_json(json);
    char err[256] = "";
    upstream_request_init(out);
    if (gemini_ops.encode(&req, t, out, err, sizeof err) != 0) fail_msg("encode failed: %s", err);
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
    assert_int_equal(gemini_ops.encode(&req, &tgt, &out, err, sizeof err), -1);
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

static void test_encode_basic(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"flash\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"Use metric.\"}]},"
        "{\"role\":\"user\",\"content\":\"Hi\"},"
        "{\"role\":\"assistant\",\"content\":\"Hello!\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is this?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/4AAQ\"}}]},"
        "{\"role\":\"user\",\"content\":\"Quickly.\"}],"
        "\"max_tokens\":256,\"temperature\":0.2,\"top_p\":1,\"stop\":[\"END\",\"STOP\"],"
        "\"n\":1,\"seed\":7}",
        &tgt, &out);
    assert_string_equal(
        out.url.data,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent");
    assert_true(has_header(&out, "x-goog-api-key: AIza-test"));
    assert_true(has_header(&out, "content-type: application/json"));
    assert_true(has_header(&out, "Expect:"));

    json_object *si = jget(jget(b, "systemInstruction"), "parts");
    assert_int_equal(json_object_array_length(si), 2);
    assert_string_equal(jstr(jidx(si, 0), "text"), "Be brief.");
    assert_string_equal(jstr(jidx(si, 1), "text"), "Use metric.");

    json_object *contents = jget(b, "contents");
    assert_int_equal(json_object_array_length(contents), 3);
    assert_string_equal(jstr(jidx(contents, 0), "role"), "user");
    assert_string_equal(jstr(jidx(contents, 1), "role"), "model");
    assert_string_equal(jstr(jidx(jget(jidx(contents, 1), "parts"), 0), "text"), "Hello!");
    /* The last two user messages merge into one turn. */
    json_object *parts = jget(jidx(contents, 2), "parts");
    assert_int_equal(json_object_array_length(parts), 3);
    json_object *inl = jget(jidx(parts, 1), "inlineData");
    assert_string_equal(jstr(inl, "mimeType"), "image/jpeg");
    assert_string_equal(jstr(inl, "data"), "/9j/4AAQ");
    assert_string_equal(jstr(jidx(parts, 2), "text"), "Quickly.");

    json_object *gc = jget(b, "generationConfig");
    assert_int_equal(json_object_get_int64(jget(gc, "maxOutputTokens")), 256);
    assert_true(json_object_get_double(jget(gc, "temperature")) == 0.2);
    assert_int_equal(json_object_get_int(jget(gc, "topP")), 1);
    assert_int_equal(json_object_array_length(jget(gc, "stopSequences")), 2);
    assert_int_equal(json_object_get_int(jget(gc, "candidateCount")), 1);
    assert_int_equal(json_object_get_int(jget(gc, "seed")), 7);
    assert_null(jget(gc, "responseMimeType"));
    json_object_put(b);
    upstream_request_free(&out);
}

static void test_encode_stream_url_no_key_json_schema(void **state)
{
    const char *extras[] = {"x-goog-user-project: proj-1", NULL};
    provider_conf c = conf;
    c.api_key = NULL;
    c.extra_headers = extras;
    target t = tgt;
    t.provider = &c;
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"flash\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"r\","
        "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}}}}",
        &t, &out);
    assert_string_equal(out.url.data, "https://generativelanguage.googleapis.com/v1beta/models/"
                                      "gemini-2.5-flash:streamGenerateContent?alt=sse");
    assert_false(has_header_named(&out, "x-goog-api-key"));
    assert_true(has_header(&out, "x-goog-user-project: proj-1"));
    json_object *gc = jget(b, "generationConfig");
    assert_string_equal(jstr(gc, "responseMimeType"), "application/json");
    assert_string_equal(jstr(jget(gc, "responseJsonSchema"), "type"), "object");
    assert_null(jget(gc, "maxOutputTokens"));
    assert_null(jget(b, "systemInstruction"));
    json_object_put(b);
    upstream_request_free(&out);

    b = encode_ok("{\"model\":\"flash\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                  "\"response_format\":{\"type\":\"json_object\"}}",
                  &tgt, &out);
    gc = jget(b, "generationConfig");
    assert_string_equal(jstr(gc, "responseMimeType"), "application/json");
    assert_null(jget(gc, "responseJsonSchema"));
    json_object_put(b);
    upstream_request_free(&out);
}

static void test_encode_tool_round_trip(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"flash\",\"messages\":["
        "{\"role\":\"user\",\"content\":\"Weather in Paris and Rome?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
        "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
        "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
        "\"arguments\":\"\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"18C\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":\"noon\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"description\":\"Current weather\",\"parameters\":{\"type\":\"object\","
        "\"properties\":{\"city\":{\"type\":\"string\"}},\"additionalProperties\":false}}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}],"
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}}",
        &tgt, &out);
    json_object *contents = jget(b, "contents");
    assert_int_equal(json_object_array_length(contents), 3);
    json_object *model = jget(jidx(contents, 1), "parts");
    assert_string_equal(jstr(jidx(contents, 1), "role"), "model");
    assert_int_equal(json_object_array_length(model), 2);
    json_object *fc = jget(jidx(model, 0), "functionCall");
    assert_string_equal(jstr(fc, "name"), "get_weather");
    assert_string_equal(jstr(jget(fc, "args"), "city"), "Paris");
    assert_int_equal(json_object_object_length(jget(jget(jidx(model, 1), "functionCall"), "args")),
                     0);

    json_object *answers = jget(jidx(contents, 2), "parts");
    assert_string_equal(jstr(jidx(contents, 2), "role"), "user");
    assert_int_equal(json_object_array_length(answers), 2);
    json_object *fr = jget(jidx(answers, 0), "functionResponse");
    assert_string_equal(jstr(fr, "name"), "get_weather");
    assert_string_equal(jstr(jget(fr, "response"), "content"), "18C");
    fr = jget(jidx(answers, 1), "functionResponse");
    assert_string_equal(jstr(fr, "name"), "get_time");

    json_object *decls = jget(jidx(jget(b, "tools"), 0), "functionDeclarations");
    assert_int_equal(json_object_array_length(decls), 2);
    assert_string_equal(jstr(jidx(decls, 0), "name"), "get_weather");
    assert_string_equal(jstr(jidx(decls, 0), "description"), "Current weather");
    assert_non_null(jget(jget(jidx(decls, 0), "parametersJsonSchema"), "additionalProperties"));
    assert_null(jget(jidx(decls, 1), "parametersJsonSchema"));

    json_object *fcc = jget(jget(b, "toolConfig"), "functionCallingConfig");
    assert_string_equal(jstr(fcc, "mode"), "ANY");
    assert_string_equal(json_object_get_string(jidx(jget(fcc, "allowedFunctionNames"), 0)),
                        "get_weather");
    json_object_put(b);
    upstream_request_free(&out);
}

/* generationConfig.thinkingConfig.thinkingBudget of `json` encoded with a
 * thinking budget; -1 when there is no thinkingConfig. */
static int64_t encoded_thinking_to(const char *upstream_model, const char *json, int64_t budget,
                                   bool client_set, bool reasoning)
{
    model_price price = {.name = upstream_model, .reasoning = reasoning};
    target t = tgt;
    t.price = &price;
    t.upstream_model = upstream_model;
    canon_request req = canon_from_json(json);
    req.thinking_budget = budget;
    req.reasoning_set = client_set;
    upstream_request out;
    char err[256] = "";
    upstream_request_init(&out);
    if (gemini_ops.encode(&req, &t, &out, err, sizeof err) != 0) fail_msg("encode failed: %s", err);
    json_object *body = json_tokener_parse(out.body.data);
    json_object *tc = jget(jget(body, "generationConfig"), "thinkingConfig");
    int64_t v = tc ? json_object_get_int64(jget(tc, "thinkingBudget")) : -1;
    if (tc) assert_int_equal(json_object_object_length(tc), 1);
    json_object_put(body);
    upstream_request_free(&out);
    fixture_canon_release(&req);
    return v;
}

static int64_t encoded_thinking(const char *json, int64_t budget, bool client_set, bool reasoning)
{
    return encoded_thinking_to("gemini-2.5-flash", json, budget, client_set, reasoning);
}

/* tools f and g, tool_choice allowed_tools with mode %s naming %s */
#define ALLOWED_FMT                                                                                \
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"  \
    "\"function\",\"function\":{\"name\":\"f\"}},{\"type\":\"function\",\"function\":{\"name\":"   \
    "\"g\"}}],\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":\"%s\","     \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"%s\"}}]}}}"

/* allowed_tools: only the subset is declared, the mode by its mode; a
 * subset that names no tool is refused. */
static void test_encode_allowed_tools(void **state)
{
    char json[640];
    for (int req = 0; req < 2; req++) {
        upstream_request out;
        snprintf(json, sizeof json, ALLOWED_FMT, req ? "required" : "auto", "g");
        json_object *b = encode_ok(json, &tgt, &out);
        json_object *decls = jget(jidx(jget(b, "tools"), 0), "functionDeclarations");
        assert_int_equal(json_object_array_length(decls), 1);
        assert_string_equal(jstr(jidx(decls, 0), "name"), "g");
        assert_string_equal(jstr(jget(jget(b, "toolConfig"), "functionCallingConfig"), "mode"),
                            req ? "ANY" : "AUTO");
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
    json_object *args =
        jget(jget(jidx(jget(jidx(jget(b, "contents"), 1), "parts"), 0), "functionCall"), "args");
    assert_string_equal(json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN),
                        "{\"a\":[1,\"b\"]}");
    json_object_put(b);
    upstream_request_free(&out);
    encode_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                 "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
                 "\"function\",\"function\":{\"name\":\"f\",\"arguments\":7}}]},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r\"}]}",
                 "arguments must be a string holding a JSON object");
}

static void test_encode_thinking_budget(void **state)
{
    const char *plain = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    const char *capped = "{\"model\":\"m\",\"max_tokens\":3000,\"messages\":[{\"role\":\"user\","
                         "\"content\":\"x\"}]}";
    assert_int_equal(encoded_thinking(plain, 8000, false, true), 8000);
    /* thoughts count against maxOutputTokens: a smaller cap bounds the budget */
    assert_int_equal(encoded_thinking(capped, 8000, false, true), 3000);
    assert_int_equal(encoded_thinking(capped, 2000, false, true), 2000);
    assert_int_equal(encoded_thinking(plain, 0, false, true), -1);
    assert_int_equal(encoded_thinking(plain, 8000, false, false), -1);
    /* the client's own control: a reasoning object without an effort names none */
    assert_int_equal(encoded_thinking(plain, 8000, true, true), -1);
}

/* The client's effort, or its Anthropic-style thinking object, becomes the
 * budget: the thinking caps' scale, the same clamp. */
static void test_encode_client_effort(void **state)
{
#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
#define OWN(extra) encoded_thinking("{\"model\":\"m\"," extra "," MSGS "}", 0, true, true)
    assert_int_equal(OWN("\"reasoning_effort\":\"low\""), 1024);
    assert_int_equal(OWN("\"reasoning_effort\":\"medium\""), 4096);
    assert_int_equal(OWN("\"reasoning_effort\":\"high\""), 16384);
    assert_int_equal(OWN("\"reasoning_effort\":\"xhigh\""), 16384);
    assert_int_equal(OWN("\"reasoning\":{\"effort\":\"medium\"}"), 4096);
    /* none and minimal turn thinking off where the model can */
    assert_int_equal(OWN("\"reasoning_effort\":\"none\""), 0);
    assert_int_equal(OWN("\"reasoning_effort\":\"minimal\""), 0);
    /* the request's cap bounds it */
    assert_int_equal(OWN("\"max_tokens\":3000,\"reasoning_effort\":\"high\""), 3000);
    /* the thinking object's budget, or off */
    assert_int_equal(OWN("\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2048}"), 2048);
    assert_int_equal(OWN("\"thinking\":{\"type\":\"disabled\"}"), 0);
    assert_int_equal(OWN("\"thinking\":{\"type\":\"adaptive\"}"), -1);
    /* the Pro models cannot turn thinking off: their smallest budget */
    assert_int_equal(encoded_thinking_to("gemini-2.5-pro",
                                         "{\"model\":\"m\",\"reasoning_effort\":\"none\"," MSGS "}",
                                         0, true, true),
                     128);
    assert_int_equal(encoded_thinking_to("gemini-2.5-pro",
                                         "{\"model\":\"m\",\"reasoning_effort\":\"low\"," MSGS "}",
                                         0, true, true),
                     1024);
    /* a model that does not reason gets nothing */
    assert_int_equal(encoded_thinking("{\"model\":\"m\",\"reasoning_effort\":\"high\"," MSGS "}", 0,
                                      true, false),
                     -1);
#undef OWN
#undef MSGS
}

static void test_encode_errors(void **state)
{
    encode_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"x\"}]}",
                 "no user or assistant messages");
    encode_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"nope\","
                 "\"content\":\"x\"}]}",
                 "nope");
    encode_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
                 "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/cat.png\"}}]}]}",
                 "data:");
    encode_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":null,"
                 "\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":"
                 "\"f\",\"arguments\":\"[1]\"}}]}]}",
                 "arguments");
}

/* ------------------------------------------------------------ decode */

static void test_decode_text_thoughts_and_usage(void **state)
{
    const char *body =
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":["
        "{\"text\":\"**Thinking about it**\",\"thought\":true},"
        "{\"text\":\"The answer\"},{\"text\":\" is 42.\",\"thoughtSignature\":\"CiQB\"}]},"
        "\"finishReason\":\"STOP\",\"index\":0,\"safetyRatings\":[]}],"
        "\"usageMetadata\":{\"promptTokenCount\":55021,\"cachedContentTokenCount\":50000,"
        "\"candidatesTokenCount\":923,\"thoughtsTokenCount\":785,\"totalTokenCount\":56729,"
        "\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":55021}]},"
        "\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"mVkcaMSHK7vz\"}";
    decoded_response d;
    char err[256];
    assert_int_equal(gemini_ops.decode(NULL, &tgt, body, strlen(body), &d, err, sizeof err), 0);
    assert_string_equal(jstr(d.body, "id"), "chatcmpl-mVkcaMSHK7vz");
    assert_string_equal(jstr(d.body, "object"), "chat.completion");
    assert_string_equal(jstr(d.body, "model"), "gemini-2.5-flash");
    json_object *ch = jidx(jget(d.body, "choices"), 0);
    assert_string_equal(jstr(jget(ch, "message"), "content"), "The answer is 42.");
    assert_string_equal(jstr(ch, "finish_reason"), "stop");
    json_object *u = jget(d.body, "usage");
    assert_int_equal(json_object_get_int64(jget(u, "prompt_tokens")), 55021);
    assert_int_equal(json_object_get_int64(jget(u, "completion_tokens")), 1708);
    assert_int_equal(json_object_get_int64(jget(u, "total_tokens")), 56729);
    assert_int_equal(json_object_get_int64(jget(jget(u, "prompt_tokens_details"), "cached_tokens")),
                     50000);
    assert_int_equal(
        json_object_get_int64(jget(jget(u, "completion_tokens_details"), "reasoning_tokens")), 785);
    assert_true(d.usage.exact);
    assert_int_equal(d.usage.input_uncached, 5021);
    assert_int_equal(d.usage.cache_read, 50000);
    assert_int_equal(d.usage.output, 1708);
    assert_int_equal(d.usage.reasoning, 785);
    assert_int_equal(d.prompt_tokens, 55021);
    assert_int_equal(d.completion_tokens, 1708);
    json_object_put(d.body);
}

static void test_decode_function_call(void **state)
{
    const char *body =
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":"
        "{\"name\":\"get_weather\",\"args\":{\"city\":\"Paris\"}}}]},\"finishReason\":\"STOP\"}],"
        "\"usageMetadata\":{\"promptTokenCount\":50,\"candidatesTokenCount\":10}}";
    decoded_response d;
    char err[256];
    assert_int_equal(gemini_ops.decode(NULL, &tgt, body, strlen(body), &d, err, sizeof err), 0);
    json_object *msg = jget(jidx(jget(d.body, "choices"), 0), "message");
    assert_true(json_object_object_get_ex(msg, "content", NULL));
    assert_null(jget(msg, "content"));
    json_object *call = jidx(jget(msg, "tool_calls"), 0);
    assert_int_equal(strncmp(jstr(call, "id"), "call_", 5), 0);
    assert_string_equal(jstr(jget(call, "function"), "name"), "get_weather");
    assert_string_equal(jstr(jget(call, "function"), "arguments"), "{\"city\":\"Paris\"}");
    assert_string_equal(d.finish_reason, "tool_calls");
    /* No responseId: a random id, still prefixed. */
    assert_int_equal(strncmp(jstr(d.body, "id"), "chatcmpl-", 9), 0);
    assert_true(strlen(jstr(d.body, "id")) > 9);
    assert_string_equal(jstr(d.body, "model"), "gemini-2.5-flash");
    json_object_put(d.body);
}

static void test_decode_finish_reasons_and_block(void **state)
{
    static const char *const pairs[][2] = {
        {"MAX_TOKENS", "length"},
        {"SAFETY", "content_filter"},
        {"RECITATION", "content_filter"},
        {"IMAGE_SAFETY", "content_filter"},
        {"SPII", "content_filter"},
        {"MALFORMED_FUNCTION_CALL", "stop"},
        {"OTHER", "stop"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]},"
                 "\"finishReason\":\"%s\"}]}",
                 pairs[i][0]);
        decoded_response d;
        char err[256];
        assert_int_equal(gemini_ops.decode(NULL, &tgt, body, strlen(body), &d, err, sizeof err), 0);
        assert_string_equal(d.finish_reason, pairs[i][1]);
        assert_false(d.usage.exact);
        json_object_put(d.body);
    }

    const char *blocked = "{\"promptFeedback\":{\"blockReason\":\"SAFETY\",\"safetyRatings\":[]},"
                          "\"usageMetadata\":{\"promptTokenCount\":12,\"totalTokenCount\":12}}";
    decoded_response d;
    char err[256];
    assert_int_equal(gemini_ops.decode(NULL, &tgt, blocked, strlen(blocked), &d, err, sizeof err),
                     0);
    assert_string_equal(d.finish_reason, "content_filter");
    json_object *msg = jget(jidx(jget(d.body, "choices"), 0), "message");
    assert_string_equal(jstr(msg, "content"), "");
    assert_int_equal(d.usage.input_uncached, 12);
    json_object_put(d.body);

    const char *empty = "{\"candidates\":[]}";
    assert_int_equal(gemini_ops.decode(NULL, &tgt, empty, strlen(empty), &d, err, sizeof err), -1);
    assert_non_null(strstr(err, "no candidates"));
    assert_int_equal(gemini_ops.decode(NULL, &tgt, "nope", 4, &d, err, sizeof err), -1);
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

static int feed(void *st, const char *data, stream_result *res, const stream_sink *sink)
{
    stream_event ev = {.event = NULL, .data = data, .data_len = strlen(data)};
    return gemini_ops.stream_event(st, &ev, res, sink);
}

static void test_stream_running_total_usage(void **state)
{
    static const char *const events[] = {
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Thinking...\",\"thought\":true}],"
        "\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":10,"
        "\"totalTokenCount\":30,\"thoughtsTokenCount\":20},\"modelVersion\":\"gemini-2.5-flash\","
        "\"responseId\":\"abc123\"}",
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hello\"}],\"role\":\"model\"},"
        "\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":1,"
        "\"thoughtsTokenCount\":20,\"totalTokenCount\":31},\"modelVersion\":\"gemini-2.5-flash\","
        "\"responseId\":\"abc123\"}",
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" world\"}],\"role\":\"model\"},"
        "\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":3,"
        "\"thoughtsTokenCount\":20,\"totalTokenCount\":33},\"modelVersion\":\"gemini-2.5-flash\","
        "\"responseId\":\"abc123\"}",
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}],\"role\":\"model\"},"
        "\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":10,"
        "\"cachedContentTokenCount\":4,\"candidatesTokenCount\":5,\"thoughtsTokenCount\":20,"
        "\"totalTokenCount\":35},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"abc123\"}",
    };
    canon_request req = canon_from_json("{\"model\":\"flash\",\"messages\":[{\"role\":\"user\","
                                        "\"content\":\"x\"}],\"stream\":true}");
    void *st = gemini_ops.stream_new(&req, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        assert_int_equal(feed(st, events[i], &res, &sink), 0);
        assert_false(res.failed);
        assert_int_equal(res.done, i == 3);
    }
    /* "Hello" (with the role), " world", "!", then the finish chunk. */
    assert_int_equal(c.n, 4);
    for (int i = 0; i < c.n; i++) {
        assert_string_equal(jstr(c.list[i], "id"), "chatcmpl-abc123");
        assert_string_equal(jstr(c.list[i], "object"), "chat.completion.chunk");
        assert_string_equal(jstr(c.list[i], "model"), "gemini-2.5-flash");
    }
    assert_string_equal(jstr(chunk_delta(&c, 0), "role"), "assistant");
    assert_string_equal(jstr(chunk_delta(&c, 0), "content"), "Hello");
    assert_null(jget(chunk_delta(&c, 1), "role"));
    assert_string_equal(jstr(chunk_delta(&c, 1), "content"), " world");
    assert_string_equal(jstr(chunk_delta(&c, 2), "content"), "!");
    assert_null(chunk_finish(&c, 2));
    assert_int_equal(json_object_object_length(chunk_delta(&c, 3)), 0);
    assert_string_equal(chunk_finish(&c, 3), "stop");

    /* The last running total, not a sum. */
    assert_true(res.usage.exact);
    assert_int_equal(res.usage.input_uncached, 6);
    assert_int_equal(res.usage.cache_read, 4);
    assert_int_equal(res.usage.output, 25);
    assert_int_equal(res.usage.reasoning, 20);
    assert_int_equal(res.prompt_tokens, 10);
    assert_int_equal(res.completion_tokens, 25);
    assert_string_equal(res.finish_reason, "stop");
    assert_string_equal(res.text.data, "Hello world!");
    chunks_free(&c);
    buf_free(&res.text);
    gemini_ops.stream_free(st);
    fixture_canon_release(&req);
}

static void test_stream_function_call(void **state)
{
    void *st = gemini_ops.stream_new(NULL, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    assert_int_equal(
        feed(
            st,
            "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"get_weather\","
            "\"args\":{\"city\":\"Rome\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],"
            "\"usageMetadata\":{\"promptTokenCount\":30,\"candidatesTokenCount\":8}}",
            &res, &sink),
        0);
    assert_int_equal(c.n, 2);
    json_object *d = chunk_delta(&c, 0);
    assert_string_equal(jstr(d, "role"), "assistant");
    json_object *tc = jidx(jget(d, "tool_calls"), 0);
    assert_int_equal(json_object_get_int(jget(tc, "index")), 0);
    assert_int_equal(strncmp(jstr(tc, "id"), "call_", 5), 0);
    assert_string_equal(jstr(tc, "type"), "function");
    assert_string_equal(jstr(jget(tc, "function"), "name"), "get_weather");
    assert_string_equal(jstr(jget(tc, "function"), "arguments"), "{\"city\":\"Rome\"}");
    assert_int_equal(res.tool_bytes, strlen("get_weather") + strlen("{\"city\":\"Rome\"}"));
    assert_string_equal(chunk_finish(&c, 1), "tool_calls");
    assert_string_equal(res.finish_reason, "tool_calls");
    assert_true(res.done);
    /* Chunks built before a responseId was seen still share one id. */
    assert_string_equal(jstr(c.list[0], "id"), jstr(c.list[1], "id"));
    chunks_free(&c);
    gemini_ops.stream_free(st);
}

/* Gemini 3 refuses a function call turn sent back without its thought
 * signature: it rides in the call id (decode, stream) and comes back out of
 * it onto the functionCall part (encode). */
static void test_thought_signature_round_trip(void **state)
{
    const char *body = "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":["
                       "{\"functionCall\":{\"name\":\"get_weather\",\"args\":{}},"
                       "\"thoughtSignature\":\"c2ln+/A=\"},"
                       "{\"functionCall\":{\"name\":\"get_time\",\"args\":{}}}]},"
                       "\"finishReason\":\"STOP\"}]}";
    decoded_response d;
    char err[256];
    assert_int_equal(gemini_ops.decode(NULL, &tgt, body, strlen(body), &d, err, sizeof err), 0);
    json_object *calls = jget(jget(jidx(jget(d.body, "choices"), 0), "message"), "tool_calls");
    const char *id0 = jstr(jidx(calls, 0), "id"), *id1 = jstr(jidx(calls, 1), "id");
    assert_int_equal(strncmp(id0, "call_", 5), 0);
    const char *sep = strstr(id0, PROVIDER_THOUGHT_SEP);
    assert_non_null(sep);
    assert_string_equal(sep + strlen(PROVIDER_THOUGHT_SEP), "c2ln+/A=");
    assert_null(strstr(id1, PROVIDER_THOUGHT_SEP)); /* only the first call carries one */

    void *st = gemini_ops.stream_new(NULL, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    assert_int_equal(feed(st, body, &res, &sink), 0);
    const char *sid = jstr(jidx(jget(chunk_delta(&c, 0), "tool_calls"), 0), "id");
    assert_non_null(strstr(sid, PROVIDER_THOUGHT_SEP "c2ln+/A="));

    char json[1024];
    snprintf(json, sizeof json,
             "{\"model\":\"flash\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
             "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
             "{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
             "\"arguments\":\"{}\"}},"
             "{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
             "\"arguments\":\"{}\"}}]},"
             "{\"role\":\"tool\",\"tool_call_id\":\"%s\",\"content\":\"18C\"},"
             "{\"role\":\"tool\",\"tool_call_id\":\"%s\",\"content\":\"noon\"}]}",
             id0, id1, id0, id1);
    upstream_request out;
    json_object *b = encode_ok(json, &tgt, &out);
    json_object *parts = jget(jidx(jget(b, "contents"), 1), "parts");
    assert_string_equal(jstr(jidx(parts, 0), "thoughtSignature"), "c2ln+/A=");
    assert_false(json_object_object_get_ex(jidx(parts, 1), "thoughtSignature", NULL));
    /* the results still find their calls' names */
    json_object *results = jget(jidx(jget(b, "contents"), 2), "parts");
    assert_string_equal(jstr(jget(jidx(results, 0), "functionResponse"), "name"), "get_weather");
    assert_string_equal(jstr(jget(jidx(results, 1), "functionResponse"), "name"), "get_time");
    json_object_put(b);
    upstream_request_free(&out);
    json_object_put(d.body);
    chunks_free(&c);
    gemini_ops.stream_free(st);
}

/* parallel_tool_calls false cannot be said to Gemini: the answer keeps its
 * first call, plain and streamed. */
static void test_one_tool_call(void **state)
{
    const char *body = "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":["
                       "{\"functionCall\":{\"name\":\"a\",\"args\":{}}},"
                       "{\"functionCall\":{\"name\":\"b\",\"args\":{}}}]},"
                       "\"finishReason\":\"STOP\"}]}";
    canon_request req = canon_from_json("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                                        "\"content\":\"x\"}],\"parallel_tool_calls\":false}");
    decoded_response d;
    char err[256];
    assert_int_equal(gemini_ops.decode(&req, &tgt, body, strlen(body), &d, err, sizeof err), 0);
    json_object *calls = jget(jget(jidx(jget(d.body, "choices"), 0), "message"), "tool_calls");
    assert_int_equal(json_object_array_length(calls), 1);
    assert_string_equal(jstr(jget(jidx(calls, 0), "function"), "name"), "a");
    assert_string_equal(d.finish_reason, "tool_calls");
    json_object_put(d.body);

    void *st = gemini_ops.stream_new(&req, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    assert_int_equal(feed(st, body, &res, &sink), 0);
    assert_int_equal(c.n, 2); /* the call, the finish */
    assert_string_equal(
        jstr(jget(jidx(jget(chunk_delta(&c, 0), "tool_calls"), 0), "function"), "name"), "a");
    assert_string_equal(chunk_finish(&c, 1), "tool_calls");
    chunks_free(&c);
    buf_free(&res.text);
    gemini_ops.stream_free(st);
    fixture_canon_release(&req);

    /* without the flag both calls stay */
    assert_int_equal(gemini_ops.decode(NULL, &tgt, body, strlen(body), &d, err, sizeof err), 0);
    calls = jget(jget(jidx(jget(d.body, "choices"), 0), "message"), "tool_calls");
    assert_int_equal(json_object_array_length(calls), 2);
    json_object_put(d.body);
}

static void test_stream_block_error_and_garbage(void **state)
{
    void *st = gemini_ops.stream_new(NULL, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    feed(st,
         "{\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"},\"usageMetadata\":"
         "{\"promptTokenCount\":9}}",
         &res, &sink);
    assert_true(res.done);
    assert_string_equal(res.finish_reason, "content_filter");
    assert_int_equal(c.n, 1);
    assert_string_equal(chunk_finish(&c, 0), "content_filter");
    chunks_free(&c);
    gemini_ops.stream_free(st);

    st = gemini_ops.stream_new(NULL, &tgt);
    memset(&res, 0, sizeof res);
    assert_int_equal(feed(st,
                          "{\"error\":{\"code\":503,\"message\":\"The model is overloaded.\","
                          "\"status\":\"UNAVAILABLE\"}}",
                          &res, &sink),
                     0);
    assert_true(res.failed);
    assert_int_equal(res.error.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(res.error.client_status, 503);
    assert_non_null(strstr(res.error.message, "overloaded"));
    gemini_ops.stream_free(st);

    st = gemini_ops.stream_new(NULL, &tgt);
    memset(&res, 0, sizeof res);
    assert_int_equal(feed(st, "[DONE]", &res, &sink), -1);
    assert_true(res.failed);
    assert_int_equal(res.error.client_status, 502);
    assert_int_equal(c.n, 0);
    gemini_ops.stream_free(st);
}

/* ------------------------------------------------------------ classify */

static upstream_error classify(int status, const upstream_headers *hs, const char *body)
{
    upstream_error e;
    gemini_ops.classify(status, hs, body, body ? strlen(body) : 0, &e);
    return e;
}

static void test_classify_resource_exhausted_retry_delay(void **state)
{
    upstream_error e = classify(
        429, NULL,
        "{\"error\":{\"code\":429,\"message\":\"You exceeded your current quota.\","
        "\"status\":\"RESOURCE_EXHAUSTED\",\"details\":["
        "{\"@type\":\"type.googleapis.com/google.rpc.QuotaFailure\",\"violations\":[]},"
        "{\"@type\":\"type.googleapis.com/google.rpc.Help\",\"links\":[]},"
        "{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"38s\"}]}}");
    assert_int_equal(e.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(e.client_status, 429);
    assert_int_equal(e.retry_after_ms, 38000);
    assert_non_null(strstr(e.message, "current quota"));

    e = classify(
        429, NULL,
        "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{"
        "\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"1.5s\"}]}}");
    assert_int_equal(e.retry_after_ms, 1500);

    /* Without RetryInfo the headers still count. */
    upstream_headers hs = {.n = 1};
    hs.h[0].name = "retry-after";
    hs.h[0].value = "3";
    e = classify(429, &hs, "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\"}}");
    assert_int_equal(e.retry_after_ms, 3000);

    e = classify(
        429, NULL,
        "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{"
        "\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"soon\"}]}}");
    assert_int_equal(e.retry_after_ms, -1);
}

static void test_classify_statuses(void **state)
{
    upstream_error e = classify(503, NULL,
                                "{\"error\":{\"code\":503,\"message\":\"The model is overloaded.\","
                                "\"status\":\"UNAVAILABLE\"}}");
    assert_int_equal(e.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(e.client_status, 503);

    e = classify(400, NULL,
                 "{\"error\":{\"code\":400,\"message\":\"Invalid value at 'contents[0]'\","
                 "\"status\":\"INVALID_ARGUMENT\"}}");
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_int_equal(e.client_status, 400);
    assert_string_equal(e.type, "invalid_request_error");
    assert_non_null(strstr(e.message, "contents[0]"));

    e = classify(
        400, NULL,
        "{\"error\":{\"code\":400,\"message\":\"The input token count (1200000) exceeds "
        "the maximum number of tokens allowed (1048576).\",\"status\":\"INVALID_ARGUMENT\"}}");
    assert_string_equal(e.code, "context_length_exceeded");

    e = classify(403, NULL,
                 "{\"error\":{\"code\":403,\"message\":\"Key AIza-SECRET denied\","
                 "\"status\":\"PERMISSION_DENIED\"}}");
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_int_equal(e.client_status, 502);
    assert_string_equal(e.type, "upstream_auth_error");
    assert_null(strstr(e.message, "SECRET"));

    /* Gemini's bad-key answer is a 400, but the fault is bridle's key. */
    e = classify(400, NULL,
                 "{\"error\":{\"code\":400,\"message\":\"API key not valid. Please pass a valid "
                 "API key.\",\"status\":\"INVALID_ARGUMENT\",\"details\":[{\"@type\":"
                 "\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":\"API_KEY_INVALID\"}]}}");
    assert_int_equal(e.client_status, 502);
    assert_string_equal(e.type, "upstream_auth_error");

    e = classify(500, NULL,
                 "{\"error\":{\"code\":500,\"message\":\"An internal error has occurred.\","
                 "\"status\":\"INTERNAL\"}}");
    assert_int_equal(e.cls, ERRCLASS_AMBIGUOUS);

    e = classify(502, NULL, "<html>bad gateway</html>");
    assert_int_equal(e.cls, ERRCLASS_AMBIGUOUS);
    assert_true(e.message[0] != '\0');
}

/* ------------------------------------------------------------ usage */

static usage_record map(const char *json)
{
    json_object *o = json_tokener_parse(json);
    usage_record r = gemini_ops.usage_map(o);
    json_object_put(o);
    return r;
}

static void test_usage_map_edges(void **state)
{
    usage_record r = map("{\"promptTokenCount\":100,\"cachedContentTokenCount\":60,"
                         "\"toolUsePromptTokenCount\":15,\"candidatesTokenCount\":10,"
                         "\"thoughtsTokenCount\":5}");
    assert_true(r.exact);
    assert_int_equal(r.input_uncached, 55);
    assert_int_equal(r.cache_read, 60);
    assert_int_equal(r.output, 15);
    assert_int_equal(r.reasoning, 5);
    assert_int_equal(r.cache_write_5m + r.cache_write_1h, 0);

    r = map("{\"candidatesTokenCount\":10}");
    assert_false(r.exact);
    assert_int_equal(r.output, 10);

    /* cached ⊂ prompt: more cached than prompt is clamped, never negative. */
    r = map("{\"promptTokenCount\":10,\"cachedContentTokenCount\":50}");
    assert_int_equal(r.input_uncached, 0);
    assert_int_equal(r.cache_read, 10);

    r = gemini_ops.usage_map(NULL);
    assert_false(r.exact);
}

/* OpenAI sampling parameters that Gemini has: presence and frequency
 * penalties, top_k, seed, n, logprobs / top_logprobs. */
static void test_encode_fidelity_params(void **state)
{
    upstream_request out;
    json_object *b = encode_ok(
        "{\"model\":\"flash\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"presence_penalty\":0.5,\"frequency_penalty\":-0.25,\"top_k\":40,\"seed\":7,\"n\":3,"
        "\"logprobs\":true,\"top_logprobs\":4}",
        &tgt, &out);
    json_object *gc = jget(b, "generationConfig");
    assert_true(json_object_get_double(jget(gc, "presencePenalty")) == 0.5);
    assert_true(json_object_get_double(jget(gc, "frequencyPenalty")) == -0.25);
    assert_int_equal(json_object_get_int64(jget(gc, "topK")), 40);
    assert_int_equal(json_object_get_int64(jget(gc, "seed")), 7);
    assert_int_equal(json_object_get_int64(jget(gc, "candidateCount")), 3);
    assert_true(json_object_get_boolean(jget(gc, "responseLogprobs")));
    assert_int_equal(json_object_get_int64(jget(gc, "logprobs")), 4);
    json_object_put(b);
    upstream_request_free(&out);

    /* logprobs alone: no count of alternatives; false: nothing */
    b = encode_ok("{\"model\":\"flash\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                  "\"logprobs\":true}",
                  &tgt, &out);
    gc = jget(b, "generationConfig");
    assert_true(json_object_get_boolean(jget(gc, "responseLogprobs")));
    assert_null(jget(gc, "logprobs"));
    json_object_put(b);
    upstream_request_free(&out);
    b = encode_ok("{\"model\":\"flash\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                  "\"logprobs\":false,\"top_logprobs\":0}",
                  &tgt, &out);
    assert_null(jget(jget(b, "generationConfig"), "responseLogprobs"));
    json_object_put(b);
    upstream_request_free(&out);
}

/* candidateCount answers: every candidate a choice, each with its
 * logprobsResult as OpenAI's logprobs.content. */
static void test_decode_candidates_and_logprobs(void **state)
{
    const char *body = "{\"candidates\":["
                       "{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi there\"}]},"
                       "\"finishReason\":\"STOP\",\"index\":0,"
                       "\"logprobsResult\":{\"topCandidates\":[{\"candidates\":[{\"token\":\"Hi\","
                       "\"logProbability\":-0.1},{\"token\":\"Hey\",\"logProbability\":-2.5}]},"
                       "{\"candidates\":[{\"token\":\" there\",\"logProbability\":-0.2}]}],"
                       "\"chosenCandidates\":[{\"token\":\"Hi\",\"logProbability\":-0.1},"
                       "{\"token\":\" there\",\"logProbability\":-0.2}]}},"
                       "{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hello\"}]},"
                       "\"finishReason\":\"MAX_TOKENS\",\"index\":1}],"
                       "\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":4,"
                       "\"totalTokenCount\":9},\"modelVersion\":\"gemini-2.5-flash\"}";
    decoded_response d;
    char err[256];
    assert_int_equal(gemini_ops.decode(NULL, &tgt, body, strlen(body), &d, err, sizeof err), 0);
    json_object *choices = jget(d.body, "choices");
    assert_int_equal(json_object_array_length(choices), 2);
    json_object *c0 = jidx(choices, 0), *c1 = jidx(choices, 1);
    assert_int_equal(json_object_get_int64(jget(c0, "index")), 0);
    assert_int_equal(json_object_get_int64(jget(c1, "index")), 1);
    assert_string_equal(jstr(jget(c0, "message"), "content"), "Hi there");
    assert_string_equal(jstr(jget(c1, "message"), "content"), "Hello");
    assert_string_equal(jstr(c0, "finish_reason"), "stop");
    assert_string_equal(jstr(c1, "finish_reason"), "length");
    assert_string_equal(d.finish_reason, "stop"); /* the first choice's */
    json_object *content = jget(jget(c0, "logprobs"), "content");
    assert_int_equal(json_object_array_length(content), 2);
    json_object *t0 = jidx(content, 0);
    assert_string_equal(jstr(t0, "token"), "Hi");
    assert_true(json_object_get_double(jget(t0, "logprob")) == -0.1);
    assert_int_equal(json_object_array_length(jget(t0, "bytes")), 2);
    assert_int_equal(json_object_get_int(jidx(jget(t0, "bytes"), 0)), 'H');
    json_object *alts = jget(t0, "top_logprobs");
    assert_int_equal(json_object_array_length(alts), 2);
    assert_string_equal(jstr(jidx(alts, 1), "token"), "Hey");
    assert_true(json_object_get_double(jget(jidx(alts, 1), "logprob")) == -2.5);
    assert_string_equal(jstr(jidx(content, 1), "token"), " there");
    /* a candidate without logprobsResult: logprobs null */
    assert_true(json_object_object_get_ex(c1, "logprobs", NULL));
    assert_null(jget(c1, "logprobs"));
    json_object_put(d.body);
}

/* n = 2 streamed: each candidate is its own choice (index, role, finish),
 * with its logprobsResult as the chunk's logprobs; done when both ended. */
static void test_stream_candidates_and_logprobs(void **state)
{
    static const char *const events[] = {
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"},"
        "\"index\":0,\"logprobsResult\":{\"chosenCandidates\":[{\"token\":\"Hi\","
        "\"logProbability\":-0.5}],\"topCandidates\":[{\"candidates\":[{\"token\":\"Hi\","
        "\"logProbability\":-0.5}]}]}},{\"content\":{\"parts\":[{\"text\":\"Yo\"}],"
        "\"role\":\"model\"},\"index\":1}],\"responseId\":\"r2\"}",
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}],\"role\":\"model\"},"
        "\"index\":1,\"finishReason\":\"STOP\"}],\"responseId\":\"r2\"}",
        "{\"candidates\":[{\"content\":{\"parts\":[]},\"index\":0,\"finishReason\":"
        "\"MAX_TOKENS\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":4,"
        "\"totalTokenCount\":7},\"responseId\":\"r2\"}",
    };
    canon_request req = canon_from_json("{\"model\":\"flash\",\"messages\":[{\"role\":\"user\","
                                        "\"content\":\"x\"}],\"stream\":true,\"n\":2,"
                                        "\"logprobs\":true}");
    void *st = gemini_ops.stream_new(&req, &tgt);
    stream_result res;
    memset(&res, 0, sizeof res);
    chunks c = {.n = 0};
    stream_sink sink = {.ctx = &c, .chunk = sink_collect};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        assert_int_equal(feed(st, events[i], &res, &sink), 0);
        assert_int_equal(res.done, i == 2); /* not when choice 1 alone has ended */
    }
    /* 0 "Hi", 1 "Yo", 1 "!", 1 finish, 0 finish */
    assert_int_equal(c.n, 5);
    int idx[] = {0, 1, 1, 1, 0};
    for (int i = 0; i < 5; i++)
        assert_int_equal(json_object_get_int(jget(jidx(jget(c.list[i], "choices"), 0), "index")),
                         idx[i]);
    assert_string_equal(jstr(chunk_delta(&c, 0), "role"), "assistant");
    assert_string_equal(jstr(chunk_delta(&c, 1), "role"), "assistant"); /* choice 1's first */
    assert_null(jget(chunk_delta(&c, 2), "role"));
    json_object *lp = jget(jidx(jget(c.list[0], "choices"), 0), "logprobs");
    assert_string_equal(jstr(jidx(jget(lp, "content"), 0), "token"), "Hi");
    assert_null(jget(jidx(jget(c.list[1], "choices"), 0), "logprobs"));
    assert_string_equal(chunk_finish(&c, 3), "stop");
    assert_string_equal(chunk_finish(&c, 4), "length");
    assert_string_equal(res.finish_reason, "length"); /* choice 0's */
    assert_int_equal(res.text.len, 2);                /* choice 0's text only */
    chunks_free(&c);
    buf_free(&res.text);
    gemini_ops.stream_free(st);
    fixture_canon_release(&req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_basic),
        cmocka_unit_test(test_encode_stream_url_no_key_json_schema),
        cmocka_unit_test(test_encode_tool_round_trip),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_encode_thinking_budget),
        cmocka_unit_test(test_encode_client_effort),
        cmocka_unit_test(test_decode_text_thoughts_and_usage),
        cmocka_unit_test(test_decode_function_call),
        cmocka_unit_test(test_decode_finish_reasons_and_block),
        cmocka_unit_test(test_stream_running_total_usage),
        cmocka_unit_test(test_stream_function_call),
        cmocka_unit_test(test_thought_signature_round_trip),
        cmocka_unit_test(test_encode_allowed_tools),
        cmocka_unit_test(test_encode_object_arguments),
        cmocka_unit_test(test_one_tool_call),
        cmocka_unit_test(test_stream_block_error_and_garbage),
        cmocka_unit_test(test_classify_resource_exhausted_retry_delay),
        cmocka_unit_test(test_classify_statuses),
        cmocka_unit_test(test_usage_map_edges),
        cmocka_unit_test(test_encode_fidelity_params),
        cmocka_unit_test(test_decode_candidates_and_logprobs),
        cmocka_unit_test(test_stream_candidates_and_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* providers/openai.c: encode, decode, streams, classify, usage_map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tests/unit/providers/canon_fixture.h"

extern const provider_ops openai_ops;

static provider_conf conf_compat = {
    .name = "compat",
    .ops = &openai_ops,
    .base_url = "https://api.example.com/v1",
    .api_key = "sk-test",
    .stream_usage = true,
};
static provider_conf conf_openai = {
    .name = "openai",
    .ops = &openai_ops,
    .base_url = "https://api.openai.com/v1",
    .api_key = "sk-real",
    .use_max_completion_tokens = true,
    .stream_usage = true,
};

static const char *REQ =
    "{\"model\":\"fast\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
    "{\"role\":\"user\",\"content\":\"a/b \\u00e9 hi\"}],\"temperature\":0.2,"
    "\"max_tokens\":100,\"metadata\":{\"task\":\"summarise\"},\"user\":\"u-1\","
    "\"bridle\":{\"tier\":\"budget\"},\"x-bridle-agent\":\"a1\","
    "\"stream_options\":{\"include_usage\":false}}";

/* Encodes req for conf; returns the parsed body (caller puts it). */
static json_object *encode_ok(const canon_request *req, provider_conf *pc, upstream_request *out)
{
    target t = {.provider = pc, .model = "fast", .upstream_model = "gpt-4o-mini"};
    char err[256] = "";
    upstream_request_init(out);
    assert_int_equal(openai_ops.encode(req, &t, out, err, sizeof err), 0);
    json_object *body = json_tokener_parse(out->body.data);
    assert_non_null(body);
    return body;
}

static bool has_header(const upstream_request *r, const char *line)
{
    for (int i = 0; r->headers[i]; i++)
        if (strcmp(r->headers[i], line) == 0) return true;
    return false;
}

static bool has_header_prefix(const upstream_request *r, const char *prefix)
{
    for (int i = 0; r->headers[i]; i++)
        if (strncmp(r->headers[i], prefix, strlen(prefix)) == 0) return true;
    return false;
}

/* ------------------------------------------------------------ encode */

static void test_encode_compat_host(void **state)
{
    canon_request req = fixture_canon_parse(REQ);
    json_object *sent = json_tokener_parse(REQ);
    upstream_request out;
    json_object *body = encode_ok(&req, &conf_compat, &out), *v;

    assert_string_equal(out.url.data, "https://api.example.com/v1/chat/completions");
    assert_true(has_header(&out, "Authorization: Bearer sk-test"));
    assert_true(has_header(&out, "Content-Type: application/json"));
    assert_true(has_header(&out, "Expect:"));

    assert_string_equal(fixture_get_string(body, "model"), "gpt-4o-mini");
    assert_int_equal(fixture_get_int(body, "max_tokens"), 100);
    assert_false(json_object_object_get_ex(body, "max_completion_tokens", NULL));
    assert_false(json_object_object_get_ex(body, "metadata", NULL));
    assert_false(json_object_object_get_ex(body, "stream_options", NULL));
    assert_false(json_object_object_get_ex(body, "bridle", NULL));
    assert_false(json_object_object_get_ex(body, "x-bridle-agent", NULL));
    assert_string_equal(fixture_get_string(body, "user"), "u-1");
    assert_true(json_object_object_get_ex(body, "temperature", &v));
    assert_true(json_object_get_double(v) > 0.19 && json_object_get_double(v) < 0.21);
    json_object *msgs;
    assert_true(json_object_object_get_ex(body, "messages", &msgs));
    assert_true(json_object_equal(msgs, json_object_object_get(sent, "messages")));
    /* Values go out byte for byte as the client sent them, escapes included. */
    assert_non_null(strstr(out.body.data, "\"content\":\"a/b \\u00e9 hi\""));

    /* The client's body is untouched, so a fallback can encode again. */
    assert_string_equal(req.body, REQ);
    upstream_request again;
    json_object *body2 = encode_ok(&req, &conf_compat, &again);
    assert_string_equal(out.body.data, again.body.data);

    json_object_put(body2);
    upstream_request_free(&again);
    json_object_put(body);
    upstream_request_free(&out);
    json_object_put(sent);
    fixture_canon_release(&req);
}

/* A key too long for the stack buffer still goes out whole. */
static void test_encode_long_key(void **state)
{
    char key[700], want[740];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    snprintf(want, sizeof want, "Authorization: Bearer %s", key);
    provider_conf long_key = conf_openai;
    long_key.api_key = key;
    canon_request req = fixture_canon_parse(REQ);
    upstream_request out;
    json_object *body = encode_ok(&req, &long_key, &out);
    assert_true(has_header(&out, want));
    json_object_put(body);
    upstream_request_free(&out);
    fixture_canon_release(&req);
}

/* Ids that carry a Gemini thought signature are cut before it (OpenAI
 * takes 40 characters); everything else in the messages is copied as is,
 * and a body without one is the client's bytes. */
static void test_encode_drops_gemini_signatures(void **state)
{
    static const char *json =
        "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"id: x__thought__y\"}]},{\"role\":\"assistant\",\"content\":null,"
        "\"tool_calls\":[{\"id\":\"call_ab__thought__c2ln+/A=\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\": [1, 2]}\"}},"
        "{\"id\":\"call_cd\",\"type\":\"function\",\"function\":{\"name\":\"g\","
        "\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_ab__thought__c2ln+/A=\",\"content\":\"r\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_cd\",\"content\":\"s\"}]}";
    canon_request req = fixture_canon_parse(json);
    upstream_request out;
    json_object *body = encode_ok(&req, &conf_openai, &out);
    json_object *msgs = NULL, *calls = NULL, *v = NULL;
    assert_true(json_object_object_get_ex(body, "messages", &msgs));
    json_object *asst = json_object_array_get_idx(msgs, 1);
    assert_true(json_object_object_get_ex(asst, "tool_calls", &calls));
    assert_string_equal(fixture_get_string(json_object_array_get_idx(calls, 0), "id"), "call_ab");
    assert_string_equal(fixture_get_string(json_object_array_get_idx(calls, 1), "id"), "call_cd");
    assert_true(json_object_object_get_ex(json_object_array_get_idx(calls, 0), "function", &v));
    assert_string_equal(fixture_get_string(v, "arguments"), "{\"a\": [1, 2]}");
    assert_string_equal(fixture_get_string(json_object_array_get_idx(msgs, 2), "tool_call_id"),
                        "call_ab");
    assert_string_equal(fixture_get_string(json_object_array_get_idx(msgs, 3), "tool_call_id"),
                        "call_cd");
    /* text that merely mentions the separator is left alone */
    assert_non_null(strstr(out.body.data, "\"text\":\"id: x__thought__y\""));
    json_object_put(body);
    upstream_request_free(&out);
    fixture_canon_release(&req);

    /* no signature: the messages are the client's bytes */
    req = fixture_canon_parse(REQ);
    body = encode_ok(&req, &conf_openai, &out);
    assert_non_null(strstr(out.body.data,
                           "\"messages\":[{\"role\":\"system\",\"content\":\"be "
                           "brief\"},{\"role\":\"user\",\"content\":\"a/b \\u00e9 hi\"}]"));
    json_object_put(body);
    upstream_request_free(&out);
    fixture_canon_release(&req);
}

static void test_encode_openai_host(void **state)
{
    canon_request req = fixture_canon_parse(REQ);
    upstream_request out;
    json_object *body = encode_ok(&req, &conf_openai, &out), *md;
    assert_int_equal(fixture_get_int(body, "max_completion_tokens"), 100);
    assert_false(json_object_object_get_ex(body, "max_tokens", NULL));
    assert_true(json_object_object_get_ex(body, "metadata", &md));
    assert_string_equal(fixture_get_string(md, "task"), "summarise");
    assert_true(has_header(&out, "Authorization: Bearer sk-real"));
    json_object_put(body);
    upstream_request_free(&out);
    fixture_canon_release(&req);
}

static void test_encode_max_completion_tokens_renamed(void **state)
{
    canon_request req =
        fixture_canon_parse("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                            "\"max_completion_tokens\":7,\"max_tokens\":9}");
    upstream_request out;
    json_object *body = encode_ok(&req, &conf_compat, &out);
    /* The canonical value (max_completion_tokens wins) under the host's name, once. */
    assert_int_equal(fixture_get_int(body, "max_tokens"), 7);
    assert_false(json_object_object_get_ex(body, "max_completion_tokens", NULL));
    assert_int_equal(json_object_object_length(body), 3);
    json_object_put(body);
    upstream_request_free(&out);
    fixture_canon_release(&req);
}

static void test_encode_stream_forces_usage(void **state)
{
    canon_request req = fixture_canon_parse(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":true,"
        "\"stream_options\":{\"include_usage\":false}}");
    upstream_request out;
    json_object *body = encode_ok(&req, &conf_compat, &out), *so, *v;
    assert_true(json_object_object_get_ex(body, "stream", &v) && json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(body, "stream_options", &so));
    assert_true(json_object_object_get_ex(so, "include_usage", &v) && json_object_get_boolean(v));
    assert_int_equal(json_object_object_length(so), 1);
    json_object_put(body);
    upstream_request_free(&out);

    /* A host that does not honour stream_options gets none at all. */
    provider_conf no_usage = conf_compat;
    no_usage.stream_usage = false;
    body = encode_ok(&req, &no_usage, &out);
    assert_false(json_object_object_get_ex(body, "stream_options", NULL));
    json_object_put(body);
    upstream_request_free(&out);
    fixture_canon_release(&req);
}

static void test_encode_no_key_extra_headers(void **state)
{
    canon_request req = fixture_canon_parse(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    const char *extra[] = {"HTTP-Referer: https://bridle.dev", "X-Title:bridle", "broken", NULL};
    provider_conf local = conf_compat;
    local.api_key = "";
    local.extra_headers = extra;
    upstream_request out;
    json_object *body = encode_ok(&req, &local, &out);
    assert_false(has_header_prefix(&out, "Authorization"));
    assert_true(has_header(&out, "HTTP-Referer: https://bridle.dev"));
    assert_true(has_header(&out, "X-Title: bridle"));
    assert_int_equal(out.n_headers, 4);
    assert_null(out.headers[4]);
    json_object_put(body);
    upstream_request_free(&out);

    local.api_key = NULL;
    body = encode_ok(&req, &local, &out);
    assert_false(has_header_prefix(&out, "Authorization"));
    /* No max tokens from the client: none sent. */
    assert_false(json_object_object_get_ex(body, "max_tokens", NULL));
    json_object_put(body);
    upstream_request_free(&out);
    fixture_canon_release(&req);
}

/* The body sent to a model (reasoning or not) for `json` with a thinking
 * budget; the client's own control is read from the body as canon does. */
static char *encode_chosen(const char *json, int64_t budget, bool reasoning, bool chosen)
{
    canon_request req = fixture_canon_parse(json);
    req.model_chosen = chosen;
    req.thinking_budget = budget;
    req.reasoning_set = jdoc_get(req.doc, 0, "reasoning_effort") != JT_NONE;
    model_price price = {.name = "gpt-5.5", .reasoning = reasoning};
    target t = {
        .provider = &conf_openai, .model = "x", .upstream_model = "gpt-5.5", .price = &price};
    upstream_request out;
    char err[256] = "";
    upstream_request_init(&out);
    assert_int_equal(openai_ops.encode(&req, &t, &out, err, sizeof err), 0);
    char *body = strdup(out.body.data);
    upstream_request_free(&out);
    fixture_canon_release(&req);
    return body;
}

static char *encode_thinking(const char *json, int64_t budget, bool reasoning)
{
    return encode_chosen(json, budget, reasoning, false);
}

/* The client's reasoning control reaches a model it named as it is, and a
 * model routing chose only if that one reasons (a model that does not
 * would refuse the whole request). */
static void test_encode_client_reasoning_by_who_chose(void **state)
{
    static const char *req = "{\"model\":\"auto\",\"reasoning_effort\":\"high\","
                             "\"reasoning\":{\"effort\":\"high\"},"
                             "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    char *kept[] = {encode_chosen(req, 0, false, false), encode_chosen(req, 0, true, true)};
    for (int i = 0; i < 2; i++) {
        assert_non_null(strstr(kept[i], "\"reasoning_effort\":\"high\""));
        assert_non_null(strstr(kept[i], "\"reasoning\":{\"effort\":\"high\"}"));
        free(kept[i]);
    }
    char *dropped = encode_chosen(req, 0, false, true);
    assert_null(strstr(dropped, "reasoning"));
    assert_non_null(strstr(dropped, "\"messages\":[")); /* the rest is intact */
    free(dropped);
}

/* The budget becomes reasoning_effort (the effort whose nominal budget fits
 * under it), appended once; nothing for other models or when the client
 * set its own. */
static void test_encode_thinking_budget_as_effort(void **state)
{
    static const char *req = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\","
                             "\"content\":\"x\"}],\"max_completion_tokens\":9000}";
    static const struct {
        int64_t budget;
        const char *tail;
    } cases[] = {
        {1, ",\"reasoning_effort\":\"low\"}"},       {4095, ",\"reasoning_effort\":\"low\"}"},
        {4096, ",\"reasoning_effort\":\"medium\"}"}, {8000, ",\"reasoning_effort\":\"medium\"}"},
        {16384, ",\"reasoning_effort\":\"high\"}"},  {100000, ",\"reasoning_effort\":\"high\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body = encode_thinking(req, cases[i].budget, true);
        size_t n = strlen(body), tn = strlen(cases[i].tail);
        assert_true(n > tn);
        assert_string_equal(body + n - tn, cases[i].tail);
        assert_non_null(strstr(body, "\"max_completion_tokens\":9000"));
        free(body);
    }
    /* no budget, a model that does not reason: the body is the same as without */
    char *plain = encode_thinking(req, 0, true), *other = encode_thinking(req, 8000, false);
    assert_null(strstr(plain, "reasoning_effort"));
    assert_string_equal(plain, other);
    free(plain);
    free(other);
    /* the client's own effort is forwarded as it is, and only once */
    char *own = encode_thinking("{\"model\":\"auto\",\"reasoning_effort\":\"minimal\","
                                "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                                8000, true);
    assert_non_null(strstr(own, "\"reasoning_effort\":\"minimal\""));
    assert_null(strstr(strstr(own, "reasoning_effort") + 1, "reasoning_effort"));
    free(own);
}

static void test_encode_rejects_missing_base_url(void **state)
{
    canon_request req = fixture_canon_parse(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    provider_conf broken = conf_compat;
    broken.base_url = NULL;
    target t = {.provider = &broken, .model = "m", .upstream_model = "m"};
    upstream_request out;
    upstream_request_init(&out);
    char err[128] = "";
    assert_int_equal(openai_ops.encode(&req, &t, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "base_url"));
    upstream_request_free(&out);
    fixture_canon_release(&req);
}

/* ------------------------------------------------------------ decode */

static const char *RESP =
    "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":1760000000,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
    "\"assistant\",\"content\":\"Hello!\",\"refusal\":null},\"logprobs\":null,"
    "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":300,"
    "\"total_tokens\":1500,\"prompt_tokens_details\":{\"cached_tokens\":1024,"
    "\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":256,"
    "\"audio_tokens\":0}},\"service_tier\":\"default\",\"system_fingerprint\":\"fp_1\"}";

static void test_decode_full(void **state)
{
    decoded_response out;
    char err[256] = "";
    assert_int_equal(openai_ops.decode(NULL, NULL, RESP, strlen(RESP), &out, err, sizeof err), 0);
    /* The answer is relayed as received, not rebuilt. */
    assert_null(out.body);
    assert_ptr_equal(out.raw, RESP);
    assert_int_equal(out.raw_len, strlen(RESP));
    assert_string_equal(out.finish_reason, "length");
    assert_int_equal(out.prompt_tokens, 1200);
    assert_int_equal(out.completion_tokens, 300);
    assert_true(out.usage.exact);
    assert_int_equal(out.usage.input_uncached, 176);
    assert_int_equal(out.usage.cache_read, 1024);
    assert_int_equal(out.usage.cache_write_5m, 0);
    assert_int_equal(out.usage.output, 300);
    assert_int_equal(out.usage.reasoning, 256);
    json_object_put(out.body);
}

static void test_decode_without_usage(void **state)
{
    const char *body = "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                       "\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}";
    decoded_response out;
    char err[256] = "";
    assert_int_equal(openai_ops.decode(NULL, NULL, body, strlen(body), &out, err, sizeof err), 0);
    assert_false(out.usage.exact);
    assert_int_equal(out.prompt_tokens, 0);
    assert_string_equal(out.finish_reason, "stop");
    json_object_put(out.body);
}

static void test_decode_malformed(void **state)
{
    const char *bad[] = {
        "not json at all",
        "{\"id\":\"x\",\"object\":\"chat.completion\"}",
        "{\"choices\":[{\"index\":0",
        "{\"choices\":{}}",
        "[1,2,3]",
        "",
        "{\"choices\":[]} trailing",
        "{\"error\":{\"message\":\"upstream\\nbroke\",\"type\":\"server_error\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        decoded_response out;
        char err[256] = "";
        assert_int_equal(
            openai_ops.decode(NULL, NULL, bad[i], strlen(bad[i]), &out, err, sizeof err), -1);
        assert_null(out.body);
        assert_non_null(strstr(err, "not a chat.completion"));
        assert_null(strchr(err, '\n'));
    }
    decoded_response out;
    char err[256] = "";
    const char *e = bad[7];
    assert_int_equal(openai_ops.decode(NULL, NULL, e, strlen(e), &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "upstream broke"));
}

/* ------------------------------------------------------------ stream */

typedef struct stream_fixture {
    void *st;
    stream_result res;
    fixture_chunks chunks;
} stream_fixture;

static void stream_open(stream_fixture *f)
{
    memset(f, 0, sizeof *f);
    f->st = openai_ops.stream_new(NULL, NULL);
    assert_non_null(f->st);
}

static void stream_close(stream_fixture *f)
{
    openai_ops.stream_free(f->st);
    buf_free(&f->res.text);
    fixture_chunks_free(&f->chunks);
}

static int feed(stream_fixture *f, const char *data)
{
    return fixture_feed(&openai_ops, f->st, data, &f->res, &f->chunks);
}

#define CHUNK(delta, finish)                                                                       \
    "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","           \
    "\"choices\":[{\"index\":0,\"delta\":" delta ",\"logprobs\":null,\"finish_reason\":" finish    \
    "}],\"usage\":null}"

static const char *USAGE_CHUNK =
    "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":5,\"total_tokens\":55,"
    "\"prompt_tokens_details\":{\"cached_tokens\":20}}}";

static void test_stream_with_usage_chunk(void **state)
{
    stream_fixture f;
    stream_open(&f);
    const char *events[] = {
        CHUNK("{\"role\":\"assistant\",\"content\":\"\"}", "null"),
        CHUNK("{\"content\":\"Hel\"}", "null"),
        CHUNK("{\"content\":\"lo\"}", "null"),
        CHUNK("{}", "\"stop\""),
    };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(feed(&f, events[i]), 0);
    assert_int_equal(feed(&f, USAGE_CHUNK), 0);
    assert_false(f.res.done);
    assert_int_equal(feed(&f, "[DONE]"), 0);
    assert_true(f.res.done);
    assert_false(f.res.failed);
    /* Content chunks relayed byte for byte; the usage chunk is not relayed. */
    assert_int_equal(f.chunks.n, 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(f.chunks.chunk[i], events[i]);
    assert_string_equal(f.res.text.data, "Hello");
    assert_string_equal(f.res.finish_reason, "stop");
    assert_true(f.res.usage.exact);
    assert_int_equal(f.res.usage.input_uncached, 30);
    assert_int_equal(f.res.usage.cache_read, 20);
    assert_int_equal(f.res.prompt_tokens, 50);
    assert_int_equal(f.res.completion_tokens, 5);
    stream_close(&f);
}

static void test_stream_without_usage(void **state)
{
    stream_fixture f;
    stream_open(&f);
    assert_int_equal(feed(&f, CHUNK("{\"content\":\"x\"}", "null")), 0);
    assert_int_equal(feed(&f, ""), 0); /* keep-alive */
    assert_int_equal(feed(&f, CHUNK("{}", "\"length\"")), 0);
    assert_int_equal(feed(&f, "  [DONE]\n"), 0);
    assert_true(f.res.done);
    assert_false(f.res.usage.exact);
    assert_string_equal(f.res.finish_reason, "length");
    assert_int_equal(f.chunks.n, 2);
    stream_close(&f);
}

/* Tool calls are relayed as they come; their names and arguments (escapes
 * undone) are counted for a usage estimate. */
static void test_stream_tool_call_bytes(void **state)
{
    stream_fixture f;
    stream_open(&f);
    const char *events[] = {
        CHUNK("{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":"
              "\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
              "\"arguments\":\"\"}}]}",
              "null"),
        CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}",
              "null"),
        CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Rome\\\"}\"}}]}",
              "null"),
        CHUNK("{}", "\"tool_calls\""),
    };
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(feed(&f, events[i]), 0);
        assert_string_equal(f.chunks.chunk[i], events[i]);
    }
    assert_int_equal(f.res.tool_bytes, strlen("get_weather") + strlen("{\"city\":\"Rome\"}"));
    assert_int_equal(f.res.text.len, 0);
    assert_string_equal(f.res.finish_reason, "tool_calls");
    stream_close(&f);
}

static void test_stream_usage_on_last_content_chunk(void **state)
{
    stream_fixture f;
    stream_open(&f);
    const char *last = "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{"
                       "\"index\":0,\"delta\":{\"content\":\"end\"},\"finish_reason\":\"stop\"}],"
                       "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,"
                       "\"total_tokens\":12}}";
    assert_int_equal(feed(&f, last), 0);
    assert_int_equal(f.chunks.n, 1);
    json_object *c = json_tokener_parse(f.chunks.chunk[0]), *choices;
    assert_non_null(c);
    assert_false(json_object_object_get_ex(c, "usage", NULL));
    assert_true(json_object_object_get_ex(c, "choices", &choices));
    assert_int_equal(json_object_array_length(choices), 1);
    json_object_put(c);
    assert_true(f.res.usage.exact);
    assert_int_equal(f.res.usage.input_uncached, 9);
    assert_int_equal(f.res.usage.output, 3);
    assert_string_equal(f.res.text.data, "end");
    stream_close(&f);
}

static void test_stream_error_event(void **state)
{
    stream_fixture f;
    stream_open(&f);
    assert_int_equal(feed(&f, CHUNK("{\"content\":\"x\"}", "null")), 0);
    assert_int_equal(feed(&f, "{\"error\":{\"message\":\"The server had an error\","
                              "\"type\":\"server_error\",\"code\":null}}"),
                     0);
    assert_true(f.res.failed);
    assert_int_equal(f.res.error.cls, ERRCLASS_AMBIGUOUS);
    assert_int_equal(f.res.error.client_status, 502);
    assert_non_null(strstr(f.res.error.message, "The server had an error"));
    assert_int_equal(f.chunks.n, 1);
    stream_close(&f);

    /* OpenRouter puts the status in error.code. */
    stream_open(&f);
    assert_int_equal(feed(&f, "{\"error\":{\"code\":429,\"message\":\"slow down\"}}"), 0);
    assert_true(f.res.failed);
    assert_int_equal(f.res.error.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(f.res.error.client_status, 429);
    stream_close(&f);
}

static void test_stream_garbage(void **state)
{
    const char *bad[] = {"hello", "{\"choices\":[", "{\"a\":1} {\"b\":2}", "[1]", "{\"a\":tru}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        stream_fixture f;
        stream_open(&f);
        assert_int_equal(feed(&f, bad[i]), -1);
        assert_true(f.res.failed);
        assert_int_equal(f.res.error.client_status, 502);
        assert_string_equal(f.res.error.code, "upstream_bad_response");
        assert_int_equal(f.chunks.n, 0);
        stream_close(&f);
    }
}

static void test_stream_multiline_data_reserialised(void **state)
{
    stream_fixture f;
    stream_open(&f);
    assert_int_equal(feed(&f, "{\"choices\":[{\"index\":0,\n\"delta\":{\"content\":\"a\"},"
                              "\"finish_reason\":null}]}"),
                     0);
    assert_int_equal(f.chunks.n, 1);
    assert_null(strchr(f.chunks.chunk[0], '\n'));
    assert_string_equal(f.res.text.data, "a");
    stream_close(&f);
}

/* ------------------------------------------------------------ classify */

static upstream_error classify(int status, const char *body, upstream_headers *hs)
{
    upstream_error e;
    openai_ops.classify(status, hs, body, body ? strlen(body) : 0, &e);
    return e;
}

static void test_classify_context_length(void **state)
{
    upstream_error e =
        classify(400,
                 "{\"error\":{\"message\":\"This model's maximum context length is 128000 "
                 "tokens.\",\"type\":\"invalid_request_error\",\"param\":\"messages\","
                 "\"code\":\"context_length_exceeded\"}}",
                 NULL);
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_int_equal(e.client_status, 400);
    assert_string_equal(e.code, "context_length_exceeded");
    assert_non_null(strstr(e.message, "400"));
    assert_non_null(strstr(e.message, "maximum context length"));
    assert_int_equal(e.retry_after_ms, -1);
}

static void test_classify_auth_never_echoes(void **state)
{
    const char *body = "{\"error\":{\"message\":\"Incorrect API key provided: sk-abc123***"
                       "wxyz.\",\"type\":\"invalid_request_error\",\"code\":"
                       "\"insufficient_quota\"}}";
    int statuses[] = {401, 403};
    for (int i = 0; i < 2; i++) {
        upstream_error e = classify(statuses[i], body, NULL);
        assert_int_equal(e.cls, ERRCLASS_FATAL);
        assert_int_equal(e.client_status, 502);
        assert_string_equal(e.type, "upstream_auth_error");
        assert_false(e.quota_exhausted);
        assert_null(strstr(e.message, "sk-"));
        assert_null(strstr(e.message, "wxyz"));
    }
    /* Not even from a non-JSON body. */
    upstream_error e = classify(401, "bad key sk-secret", NULL);
    assert_null(strstr(e.message, "sk-secret"));
}

static void test_classify_model_not_found(void **state)
{
    upstream_error e = classify(404,
                                "{\"error\":{\"message\":\"The model `gpt-9` does not exist\","
                                "\"type\":\"invalid_request_error\",\"code\":\"model_not_found\"}}",
                                NULL);
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_int_equal(e.client_status, 502);
    assert_string_equal(e.type, "upstream_model_not_found");
    assert_non_null(strstr(e.message, "upstream model name"));
    assert_non_null(strstr(e.message, "gpt-9"));
}

static void test_classify_rate_limit_retry_after(void **state)
{
    const char *body = "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\","
                       "\"code\":\"rate_limit_exceeded\"}}";
    upstream_headers hs = {.n = 2};
    hs.h[0].name = "retry-after-ms";
    hs.h[0].value = "1500";
    hs.h[1].name = "retry-after";
    hs.h[1].value = "7";
    upstream_error e = classify(429, body, &hs);
    assert_int_equal(e.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(e.client_status, 429);
    assert_int_equal(e.retry_after_ms, 1500);
    assert_false(e.quota_exhausted);
    assert_non_null(strstr(e.message, "Rate limit reached"));

    hs.h[0].value = "soon";
    e = classify(429, body, &hs);
    assert_int_equal(e.retry_after_ms, 7000);

    char date[64];
    time_t when = time(NULL) + 30;
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    hs.n = 1;
    hs.h[0].name = "retry-after";
    hs.h[0].value = date;
    e = classify(429, body, &hs);
    assert_in_range(e.retry_after_ms, 28000, 31000);

    hs.h[0].value = "tomorrow-ish";
    e = classify(429, body, &hs);
    assert_int_equal(e.retry_after_ms, -1);
}

static void test_classify_insufficient_quota(void **state)
{
    upstream_error e = classify(429,
                                "{\"error\":{\"message\":\"You exceeded your current quota\","
                                "\"type\":\"insufficient_quota\",\"code\":\"insufficient_quota\"}}",
                                NULL);
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_int_equal(e.client_status, 429);
    assert_true(e.quota_exhausted);
    assert_string_equal(e.code, "insufficient_quota");
    assert_non_null(strstr(e.message, "exceeded your current quota"));
}

static void test_classify_server_errors(void **state)
{
    upstream_error e =
        classify(500, "{\"error\":{\"message\":\"oops\",\"type\":\"server_error\"}}", NULL);
    assert_int_equal(e.cls, ERRCLASS_AMBIGUOUS);
    assert_int_equal(e.client_status, 502);
    assert_non_null(strstr(e.message, "500"));
    assert_non_null(strstr(e.message, "oops"));

    e = classify(503, "{\"error\":{\"message\":\"overloaded\"}}", NULL);
    assert_int_equal(e.cls, ERRCLASS_RETRYABLE);
    assert_int_equal(e.client_status, 503);

    e = classify(529, "", NULL);
    assert_int_equal(e.cls, ERRCLASS_RETRYABLE);

    /* x-should-retry: false turns a retry into a stop. */
    upstream_headers hs = {.n = 1};
    hs.h[0].name = "x-should-retry";
    hs.h[0].value = "false";
    e = classify(503, NULL, &hs);
    assert_int_equal(e.cls, ERRCLASS_FATAL);
}

static void test_classify_non_json_body(void **state)
{
    upstream_error e = classify(502, "<html>\r\n<h1>502 Bad Gateway</h1></html>", NULL);
    assert_int_equal(e.cls, ERRCLASS_AMBIGUOUS);
    assert_int_equal(e.client_status, 502);
    assert_non_null(strstr(e.message, "non-JSON"));
    assert_non_null(strstr(e.message, "Bad Gateway"));
    assert_null(strchr(e.message, '\n'));

    /* A bare string error, as some compat hosts send. */
    e = classify(400, "{\"error\":\"bad field\"}", NULL);
    assert_int_equal(e.cls, ERRCLASS_FATAL);
    assert_non_null(strstr(e.message, "bad field"));
}

/* ------------------------------------------------------------ usage_map */

static usage_record map(const char *json)
{
    json_object *u = json_tokener_parse(json);
    usage_record r = openai_ops.usage_map(u);
    json_object_put(u);
    return r;
}

static void test_usage_deepseek(void **state)
{
    usage_record r = map("{\"prompt_tokens\":100,\"completion_tokens\":40,\"total_tokens\":140,"
                         "\"prompt_cache_hit_tokens\":64,\"prompt_cache_miss_tokens\":36,"
                         "\"completion_tokens_details\":{\"reasoning_tokens\":30}}");
    assert_true(r.exact);
    assert_int_equal(r.input_uncached, 36);
    assert_int_equal(r.cache_read, 64);
    assert_int_equal(r.output, 40);
    assert_int_equal(r.reasoning, 30);

    /* Hit only: the miss is what is left. */
    r = map("{\"prompt_tokens\":100,\"completion_tokens\":1,\"prompt_cache_hit_tokens\":70}");
    assert_int_equal(r.input_uncached, 30);
    assert_int_equal(r.cache_read, 70);
}

static void test_usage_edge_cases(void **state)
{
    usage_record r = map("{\"prompt_tokens\":10,\"completion_tokens\":2,"
                         "\"prompt_tokens_details\":{\"cached_tokens\":50}}");
    assert_true(r.exact);
    assert_int_equal(r.input_uncached, 0);
    assert_int_equal(r.cache_read, 50);

    r = map("{\"prompt_tokens\":1000,\"completion_tokens\":2,\"prompt_tokens_details\":"
            "{\"cached_tokens\":600,\"cache_write_tokens\":300}}");
    assert_int_equal(r.input_uncached, 100);
    assert_int_equal(r.cache_write_5m, 300);

    r = map("{\"prompt_tokens\":-5,\"completion_tokens\":\"7\"}");
    assert_false(r.exact);
    assert_int_equal(r.input_uncached, 0);
    assert_int_equal(r.output, 0);

    r = map("{\"completion_tokens\":3}");
    assert_false(r.exact);

    r = openai_ops.usage_map(NULL);
    assert_false(r.exact);
    assert_int_equal(r.output, 0);

    r = map("{\"prompt_tokens\":1e300,\"completion_tokens\":9223372036854775807}");
    assert_false(r.exact); /* 1e300 is not a count */
    assert_int_equal(r.output, 1000000000000LL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_compat_host),
        cmocka_unit_test(test_encode_openai_host),
        cmocka_unit_test(test_encode_long_key),
        cmocka_unit_test(test_encode_drops_gemini_signatures),
        cmocka_unit_test(test_encode_max_completion_tokens_renamed),
        cmocka_unit_test(test_encode_stream_forces_usage),
        cmocka_unit_test(test_encode_no_key_extra_headers),
        cmocka_unit_test(test_encode_rejects_missing_base_url),
        cmocka_unit_test(test_encode_thinking_budget_as_effort),
        cmocka_unit_test(test_encode_client_reasoning_by_who_chose),
        cmocka_unit_test(test_decode_full),
        cmocka_unit_test(test_decode_without_usage),
        cmocka_unit_test(test_decode_malformed),
        cmocka_unit_test(test_stream_with_usage_chunk),
        cmocka_unit_test(test_stream_without_usage),
        cmocka_unit_test(test_stream_tool_call_bytes),
        cmocka_unit_test(test_stream_usage_on_last_content_chunk),
        cmocka_unit_test(test_stream_error_event),
        cmocka_unit_test(test_stream_garbage),
        cmocka_unit_test(test_stream_multiline_data_reserialised),
        cmocka_unit_test(test_classify_context_length),
        cmocka_unit_test(test_classify_auth_never_echoes),
        cmocka_unit_test(test_classify_model_not_found),
        cmocka_unit_test(test_classify_rate_limit_retry_after),
        cmocka_unit_test(test_classify_insufficient_quota),
        cmocka_unit_test(test_classify_server_errors),
        cmocka_unit_test(test_classify_non_json_body),
        cmocka_unit_test(test_usage_deepseek),
        cmocka_unit_test(test_usage_edge_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

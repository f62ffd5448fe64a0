/* Every dialect in providers/registry.c encodes from the canonical request
 * alone: canon_parse_chat tokenizes the client's body once, and no adapter
 * parses it again. json-c's parse entry points are wrapped here (this
 * binary's definitions win over the shared library's for every caller
 * linked into it, libbridle.a included) and must not be called between
 * canon and the encoded body; the body pointer is taken away too, so only
 * the tokens are left to read. The encoded bodies are then checked. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <json-c/json_pointer.h>

#include "providers/provider.h"
#include "router/canon.h"

/* ------------------------------------------------------------ json-c, counted */

static int json_parses;

json_object *json_tokener_parse_ex(json_tokener *tok, const char *str, int len)
{
    static json_object *(*real)(json_tokener *, const char *, int);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "json_tokener_parse_ex");
    json_parses++;
    return real(tok, str, len);
}

json_object *json_tokener_parse_verbose(const char *str, enum json_tokener_error *error)
{
    static json_object *(*real)(const char *, enum json_tokener_error *);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "json_tokener_parse_verbose");
    json_parses++;
    return real(str, error);
}

json_object *json_tokener_parse(const char *str)
{
    static json_object *(*real)(const char *);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "json_tokener_parse");
    json_parses++;
    return real(str);
}

/* ------------------------------------------------------------ helpers */

/* A conversation with every shape the translating dialects rewrite: a
 * system message, escaped text, a tool call with JSON arguments, its answer,
 * a tool schema, stop, temperature and a cap. */
static const char *const REQUEST =
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":\"caf\\u00e9?\"},"
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
    "\"function\",\"function\":{\"name\":\"look\",\"arguments\":\"{\\\"q\\\": \\\"x\\\"}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"a cat\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"look\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"}}}}}],"
    "\"stop\":\"END\",\"temperature\":0.5,\"max_tokens\":64}";

/* Encodes REQUEST for `kind` from canon's tokens; returns the parsed body. */
static json_object *encode_once(const char *kind)
{
    const provider_ops *ops = provider_find(kind);
    assert_non_null(ops);
    provider_conf pc = {.name = kind, .ops = ops, .base_url = "http://127.0.0.1:1/v1"};
    target t = {.provider = &pc, .model = "m", .upstream_model = "m-up"};
    jdoc doc = JDOC_INIT;
    buf strings = BUF_INIT;
    canon_request req;
    canon_error cerr;
    assert_int_equal(canon_parse_chat(REQUEST, strlen(REQUEST), &doc, &strings, &req, &cerr), 0);
    req.body = NULL; /* the tokens are all there is to read */
    req.body_len = 0;
    upstream_request out;
    upstream_request_init(&out);
    char err[256] = "";
    json_parses = 0;
    if (ops->encode(&req, &t, &out, err, sizeof err) != 0) fail_msg("%s: %s", kind, err);
    if (json_parses != 0)
        fail_msg("%s: encode parsed JSON with json-c %d times", kind, json_parses);
    json_object *body = json_tokener_parse(out.body.data);
    assert_int_equal(json_parses, 1); /* the wrapper is the one called */
    if (!body) fail_msg("%s: not JSON: %s", kind, out.body.data);
    upstream_request_free(&out);
    jdoc_free(&doc);
    buf_free(&strings);
    return body;
}

static void expect_str(json_object *body, const char *ptr, const char *want)
{
    json_object *v = NULL;
    if (json_pointer_get(body, ptr, &v) != 0 || !json_object_is_type(v, json_type_string))
        fail_msg("%s missing in %s", ptr, json_object_to_json_string(body));
    assert_string_equal(json_object_get_string(v), want);
}

static void expect_int(json_object *body, const char *ptr, int64_t want)
{
    json_object *v = NULL;
    if (json_pointer_get(body, ptr, &v) != 0 || !json_object_is_type(v, json_type_int))
        fail_msg("%s missing in %s", ptr, json_object_to_json_string(body));
    assert_int_equal(json_object_get_int64(v), want);
}

/* ------------------------------------------------------------ tests */

static void test_anthropic_one_parse(void **state)
{
    json_object *b = encode_once("anthropic");
    expect_str(b, "/model", "m-up");
    expect_str(b, "/system/0/text", "Be brief.");
    expect_str(b, "/messages/0/content/0/text", "caf\xc3\xa9?");
    expect_str(b, "/messages/1/role", "assistant");
    expect_str(b, "/messages/1/content/0/input/q", "x");
    expect_str(b, "/messages/2/content/0/tool_use_id", "c1");
    expect_str(b, "/messages/2/content/0/content", "a cat");
    expect_str(b, "/tools/0/input_schema/properties/q/type", "string");
    expect_str(b, "/stop_sequences/0", "END");
    expect_int(b, "/max_tokens", 64);
    json_object_put(b);
}

static void test_gemini_one_parse(void **state)
{
    json_object *b = encode_once("gemini");
    expect_str(b, "/systemInstruction/parts/0/text", "Be brief.");
    expect_str(b, "/contents/0/parts/0/text", "caf\xc3\xa9?");
    expect_str(b, "/contents/1/role", "model");
    expect_str(b, "/contents/1/parts/0/functionCall/args/q", "x");
    expect_str(b, "/contents/2/parts/0/functionResponse/name", "look");
    expect_str(b, "/contents/2/parts/0/functionResponse/response/content", "a cat");
    expect_str(b, "/tools/0/functionDeclarations/0/parametersJsonSchema/properties/q/type",
               "string");
    expect_str(b, "/generationConfig/stopSequences/0", "END");
    expect_int(b, "/generationConfig/maxOutputTokens", 64);
    json_object_put(b);
}

static void test_ollama_one_parse(void **state)
{
    json_object *b = encode_once("ollama");
    expect_str(b, "/messages/0/content", "Be brief.");
    expect_str(b, "/messages/1/content", "caf\xc3\xa9?");
    expect_str(b, "/messages/2/tool_calls/0/function/arguments/q", "x");
    expect_str(b, "/messages/3/tool_name", "look");
    expect_str(b, "/options/stop/0", "END");
    expect_int(b, "/options/num_predict", 64);
    expect_str(b, "/tools/0/function/parameters/properties/q/type", "string");
    json_object_put(b);
}

static void test_openai_one_parse(void **state)
{
    json_object *b = encode_once("openai");
    expect_str(b, "/model", "m-up");
    expect_str(b, "/messages/1/content", "caf\xc3\xa9?");
    expect_str(b, "/messages/2/tool_calls/0/function/arguments", "{\"q\": \"x\"}");
    expect_int(b, "/max_tokens", 64);
    json_object_put(b);
}

/* The wrappers see libbridle's calls too: a decode-side parse counts. */
static void test_counter_sees_library_calls(void **state)
{
    char err[64];
    json_parses = 0;
    json_object *o = provider_parse_object(NULL, "{\"a\":1}", 7, err, sizeof err);
    assert_non_null(o);
    assert_int_equal(json_parses, 1);
    json_object_put(o);
}

/* Every registered dialect is one of the above. */
static void test_every_dialect_covered(void **state)
{
    static const char *const tested[] = {"openai", "anthropic", "gemini", "ollama"};
    int n = 0;
    for (const provider_ops *const *p = provider_all(); *p; p++, n++) {
        bool found = false;
        for (size_t i = 0; i < sizeof tested / sizeof tested[0]; i++)
            found = found || strcmp((*p)->kind, tested[i]) == 0;
        if (!found) fail_msg("dialect %s has no one-parse test here", (*p)->kind);
    }
    assert_int_equal(n, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anthropic_one_parse),
        cmocka_unit_test(test_gemini_one_parse),
        cmocka_unit_test(test_ollama_one_parse),
        cmocka_unit_test(test_openai_one_parse),
        cmocka_unit_test(test_counter_sees_library_calls),
        cmocka_unit_test(test_every_dialect_covered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* providers/embeddings.c: each dialect's embeddings encoder and decoder
 * (OpenAI /embeddings, Gemini embedContent / batchEmbedContents, Ollama
 * /api/embed), the OpenAI list writer and its base64 of float32 values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "providers/embeddings.h"
#include "tests/unit/providers/canon_fixture.h"

extern const provider_ops openai_ops, gemini_ops, ollama_ops, anthropic_ops;

static provider_conf conf_openai = {
    .name = "oa", .ops = &openai_ops, .base_url = "https://api.example/v1", .api_key = "sk-test"};
static provider_conf conf_gemini = {
    .name = "gm", .ops = &gemini_ops, .base_url = "https://gen.example/v1beta", .api_key = "g-key"};
static provider_conf conf_ollama = {
    .name = "ol", .ops = &ollama_ops, .base_url = "http://127.0.0.1:11434"};
static target t_openai = {.provider = &conf_openai, .model = "emb", .upstream_model = "up-emb"};
static target t_gemini = {
    .provider = &conf_gemini, .model = "gem", .upstream_model = "gemini-embedding-001"};
static target t_ollama = {
    .provider = &conf_ollama, .model = "nomic", .upstream_model = "nomic-embed-text"};

/* An embeddings request as the server parses it (canon_parse_embeddings). */
static canon_request embed_req(const char *json)
{
    fixture_canon *h = calloc(1, sizeof *h);
    h->body = strdup(json);
    canon_request r;
    canon_error err;
    if (canon_parse_embeddings(h->body, strlen(json), &h->doc, &h->strings, &r, &err) != 0)
        fail_msg("refused: %s (%s)", err.message, err.param);
    return r;
}

static json_object *encode(const embed_ops *ops, const char *json, const target *t,
                           upstream_request *out)
{
    canon_request req = embed_req(json);
    char err[256] = "";
    upstream_request_init(out);
    if (ops->encode(&req, t, out, err, sizeof err) != 0) fail_msg("encode: %s", err);
    fixture_canon_release(&req);
    json_object *body = json_tokener_parse(out->body.data);
    assert_non_null(body);
    return body;
}

static bool has_header(const upstream_request *u, const char *line)
{
    for (int i = 0; i < u->n_headers; i++)
        if (strcmp(u->headers[i], line) == 0) return true;
    return false;
}

typedef struct decoded {
    int rc;
    buf out;
    usage_record u;
    char err[256];
} decoded;

static decoded decode(const embed_ops *ops, const char *req_json, const target *t, const char *body)
{
    canon_request req = embed_req(req_json);
    decoded d = {.out = BUF_INIT};
    d.rc = ops->decode(&req, t, body, strlen(body), &d.out, &d.u, d.err, sizeof d.err);
    fixture_canon_release(&req);
    return d;
}

static const char *out_str(const decoded *d)
{
    return d->out.data ? d->out.data : "";
}

/* ------------------------------------------------------------ shared */

static void test_base64(void **state)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++) {
        buf b = BUF_INIT;
        embed_base64(&b, (const unsigned char *)plain[i], strlen(plain[i]));
        assert_string_equal(b.data ? b.data : "", enc[i]);
        buf_free(&b);
    }
}

/* 1.0f is 00 00 80 3f, -2.0f 00 00 00 c0, 0.5f 00 00 00 3f (little-endian). */
static void test_vector_base64_is_float32_le(void **state)
{
    jdoc d = JDOC_INIT;
    const char *arr = "[1.0,-2,0.5]";
    assert_int_equal(jdoc_parse(&d, arr, strlen(arr), NULL, 0, NULL), 0);
    buf b = BUF_INIT;
    assert_int_equal(embed_list_vector(&b, &d, 0, 0, true), 0);
    const unsigned char raw[] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0, 0x3f};
    buf want = BUF_INIT;
    buf_append_str(&want, "{\"object\":\"embedding\",\"index\":0,\"embedding\":\"");
    embed_base64(&want, raw, sizeof raw);
    buf_append_str(&want, "\"}");
    assert_string_equal(b.data, want.data);
    buf_reset(&b);
    assert_int_equal(embed_list_vector(&b, &d, 0, 3, false), 0); /* numbers as written */
    assert_string_equal(b.data,
                        ",{\"object\":\"embedding\",\"index\":3,\"embedding\":[1.0,-2,0.5]}");
    jdoc_free(&d);
    const char *bad = "[1,\"x\"]";
    assert_int_equal(jdoc_parse(&d, bad, strlen(bad), NULL, 0, NULL), 0);
    buf_reset(&b);
    assert_int_equal(embed_list_vector(&b, &d, 0, 0, true), -1);
    assert_int_equal(b.len, 0);
    jdoc_free(&d);
    buf_free(&b);
    buf_free(&want);
}

static int b64_value(char c)
{
    const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = strchr(tab, c);
    return p && c ? (int)(p - tab) : -1;
}

/* Decodes standard base64 (with padding) into out; returns the byte count. */
static size_t b64_decode(const char *s, size_t n, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) {
        int a = b64_value(s[i]), b = b64_value(s[i + 1]), c = b64_value(s[i + 2]),
            d = b64_value(s[i + 3]);
        out[o++] = (unsigned char)(a << 2 | b >> 4);
        if (s[i + 2] != '=') out[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
        if (s[i + 3] != '=') out[o++] = (unsigned char)((c & 3) << 6 | d);
    }
    return o;
}

/* The float32 values written in base64 are (float)strtod of each number,
 * bit for bit, whatever its shape: the fast path and strtod agree. */
static void test_base64_values_match_strtod(void **state)
{
    static const char *const fixed[] = {"0",
                                        "-0",
                                        "1",
                                        "-1",
                                        "0.5",
                                        "1e-3",
                                        "1E+2",
                                        "-2.5e-05",
                                        "123456789012345678",
                                        "0.1234567890123456789012",
                                        "9007199254740993",
                                        "1e-30",
                                        "3.4028235e38",
                                        "1e39",
                                        "-0.0455776826",
                                        "0.746527612",
                                        "1.17549435e-38",
                                        "100",
                                        "1.50",
                                        "0.000123"};
    srand(7);
    buf arr = BUF_INIT, out = BUF_INIT;
    buf_append_char(&arr, '[');
    const int n_random = 5000;
    char num[64];
    int n = 0;
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++, n++)
        buf_printf(&arr, "%s%s", n ? "," : "", fixed[i]);
    for (int i = 0; i < n_random; i++, n++) {
        double x = ((double)rand() / RAND_MAX - 0.5) * pow(10, rand() % 40 - 30);
        static const char *const fmts[] = {"%.9g", "%.17g", "%g", "%.3f", "%.12e"};
        snprintf(num, sizeof num, fmts[i % 5], x);
        buf_printf(&arr, ",%s", num);
    }
    buf_append_char(&arr, ']');
    jdoc d = JDOC_INIT;
    assert_int_equal(jdoc_parse(&d, arr.data, arr.len, NULL, 0, NULL), 0);
    assert_int_equal(embed_list_vector(&out, &d, 0, 0, true), 0);
    const char *b64 = strstr(out.data, "\"embedding\":\"") + 13;
    size_t len = (size_t)(strchr(b64, '"') - b64);
    unsigned char *raw = malloc(len);
    assert_int_equal(b64_decode(b64, len, raw), (size_t)n * 4);
    int k = 0;
    for (uint32_t v = jdoc_first(&d, 0); v != JT_NONE; v = jdoc_next(&d, 0, v), k++) {
        size_t rl;
        const char *r = jdoc_raw(&d, v, &rl);
        snprintf(num, sizeof num, "%.*s", (int)rl, r);
        float want = (float)strtod(num, NULL);
        uint32_t w, got = 0;
        memcpy(&w, &want, 4);
        for (int b = 0; b < 4; b++)
            got |= (uint32_t)raw[k * 4 + b] << (8 * b);
        if (got != w) fail_msg("%s: got %08x, strtod gives %08x", num, got, w);
    }
    assert_int_equal(k, n);
    free(raw);
    jdoc_free(&d);
    buf_free(&arr);
    buf_free(&out);
}

static void test_dialect_tables(void **state)
{
    assert_ptr_equal(openai_ops.embed, &openai_embed_ops);
    assert_ptr_equal(gemini_ops.embed, &gemini_embed_ops);
    assert_ptr_equal(ollama_ops.embed, &ollama_embed_ops);
    assert_null(anthropic_ops.embed); /* Anthropic has no embeddings endpoint */
    assert_true(openai_embed_ops.token_ids);
    assert_false(gemini_embed_ops.token_ids);
    assert_false(ollama_embed_ops.token_ids);
}

/* ------------------------------------------------------------ OpenAI */

static void test_openai_encode_forwards_the_body(void **state)
{
    upstream_request u;
    json_object *b = encode(&openai_embed_ops,
                            "{\"model\":\"emb\",\"input\":[\"a\",\"b\\n\"],\"dimensions\":8,"
                            "\"encoding_format\":\"base64\",\"user\":\"u1\",\"metadata\":{\"task\":"
                            "\"t\"},\"bridle_hint\":1,\"x-bridle-tag\":2,\"extra\":true}",
                            &t_openai, &u);
    assert_string_equal(u.url.data, "https://api.example/v1/embeddings");
    assert_true(has_header(&u, "Authorization: Bearer sk-test"));
    assert_string_equal(fixture_get_string(b, "model"), "up-emb");
    assert_string_equal(fixture_get_string(b, "encoding_format"), "base64");
    assert_string_equal(fixture_get_string(b, "user"), "u1");
    assert_int_equal(fixture_get_int(b, "dimensions"), 8);
    json_object *v;
    assert_true(json_object_object_get_ex(b, "extra", &v)); /* unknown keys go as they came */
    assert_false(json_object_object_get_ex(b, "metadata", &v));
    assert_false(json_object_object_get_ex(b, "bridle_hint", &v));
    assert_false(json_object_object_get_ex(b, "x-bridle-tag", &v));
    assert_true(json_object_object_get_ex(b, "input", &v));
    assert_string_equal(json_object_get_string(json_object_array_get_idx(v, 1)), "b\n");
    json_object_put(b);
    upstream_request_free(&u);
}

static const char *OA_ANSWER =
    "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[1.0,"
    "-2,0.5]},{\"object\":\"embedding\",\"index\":1,\"embedding\":[0,0,1]}],\"model\":\"up-emb\","
    "\"usage\":{\"prompt_tokens\":9,\"total_tokens\":9}}";

static void test_openai_decode_relays_as_received(void **state)
{
    decoded d = decode(&openai_embed_ops, "{\"model\":\"emb\",\"input\":[\"a\",\"b\"]}", &t_openai,
                       OA_ANSWER);
    assert_int_equal(d.rc, 0);
    assert_int_equal(d.out.len, 0); /* relayed */
    assert_true(d.u.exact);
    assert_int_equal(d.u.input_uncached, 9);
    assert_int_equal(d.u.output, 0);
    buf_free(&d.out);
}

/* A host that ignores encoding_format: the floats become base64, since the
 * client (the openai SDK by default) decodes what it asked for. */
static void test_openai_decode_floats_to_base64(void **state)
{
    decoded d = decode(&openai_embed_ops,
                       "{\"model\":\"emb\",\"input\":[\"a\",\"b\"],\"encoding_format\":\"base64\"}",
                       &t_openai, OA_ANSWER);
    assert_int_equal(d.rc, 0);
    json_object *o = json_tokener_parse(out_str(&d));
    assert_non_null(o);
    json_object *data, *usage;
    assert_true(json_object_object_get_ex(o, "data", &data));
    assert_string_equal(fixture_get_string(json_object_array_get_idx(data, 0), "embedding"),
                        "AACAPwAAAMAAAAA/");
    assert_string_equal(fixture_get_string(json_object_array_get_idx(data, 1), "embedding"),
                        "AAAAAAAAAAAAAIA/");
    assert_string_equal(fixture_get_string(o, "model"), "up-emb");
    assert_true(json_object_object_get_ex(o, "usage", &usage));
    assert_int_equal(fixture_get_int(usage, "prompt_tokens"), 9);
    json_object_put(o);
    buf_free(&d.out);
}

/* No usage block: bridle's estimate (ceil(bytes / 4) per input), said to
 * the client in the usage it expects, and not exact. */
static void test_openai_decode_without_usage(void **state)
{
    decoded d =
        decode(&openai_embed_ops, "{\"model\":\"emb\",\"input\":[\"abcdefghi\",\"b\"]}", &t_openai,
               "{\"object\":\"list\",\"data\":[{\"embedding\":[1]},{\"embedding\":[2]}]}");
    assert_int_equal(d.rc, 0);
    assert_false(d.u.exact);
    assert_int_equal(d.u.input_uncached, 4);
    assert_non_null(strstr(out_str(&d), "\"usage\":{\"prompt_tokens\":4,\"total_tokens\":4}"));
    assert_non_null(strstr(out_str(&d), "\"index\":1,\"embedding\":[2]"));
    buf_free(&d.out);
}

static void test_openai_decode_refuses(void **state)
{
    const char *req = "{\"model\":\"emb\",\"input\":[\"a\",\"b\"]}";
    decoded d = decode(&openai_embed_ops, req, &t_openai, "not json");
    assert_int_equal(d.rc, -1);
    assert_non_null(strstr(d.err, "invalid JSON"));
    d = decode(&openai_embed_ops, req, &t_openai, "{\"error\":{\"message\":\"quota gone\"}}");
    assert_int_equal(d.rc, -1);
    assert_non_null(strstr(d.err, "quota gone"));
    d = decode(&openai_embed_ops, req, &t_openai, "{\"data\":[{\"embedding\":[1]}]}");
    assert_int_equal(d.rc, -1);
    assert_non_null(strstr(d.err, "1 vector for 2 inputs"));
    d = decode(&openai_embed_ops, req, &t_openai,
               "{\"data\":[{\"embedding\":[1]},{\"embedding\":{}}]}");
    assert_int_equal(d.rc, -1);
    assert_non_null(strstr(d.err, "vector 1"));
}

/* ------------------------------------------------------------ Gemini */

static void test_gemini_encode_single(void **state)
{
    upstream_request u;
    json_object *b =
        encode(&gemini_embed_ops,
               "{\"model\":\"gem\",\"input\":\"say \\\"hi\\\" \\u00e9\",\"dimensions\":256}",
               &t_gemini, &u);
    assert_string_equal(u.url.data,
                        "https://gen.example/v1beta/models/gemini-embedding-001:embedContent");
    assert_true(has_header(&u, "x-goog-api-key: g-key"));
    assert_string_equal(fixture_get_string(b, "model"), "models/gemini-embedding-001");
    assert_int_equal(fixture_get_int(b, "outputDimensionality"), 256);
    json_object *content, *parts;
    assert_true(json_object_object_get_ex(b, "content", &content));
    assert_true(json_object_object_get_ex(content, "parts", &parts));
    assert_string_equal(fixture_get_string(json_object_array_get_idx(parts, 0), "text"),
                        "say \"hi\" \xc3\xa9");
    json_object_put(b);
    upstream_request_free(&u);
}

static void test_gemini_encode_batch(void **state)
{
    upstream_request u;
    json_object *b = encode(&gemini_embed_ops, "{\"model\":\"gem\",\"input\":[\"a\",\"b\",\"c\"]}",
                            &t_gemini, &u);
    assert_string_equal(
        u.url.data, "https://gen.example/v1beta/models/gemini-embedding-001:batchEmbedContents");
    json_object *reqs, *v;
    assert_true(json_object_object_get_ex(b, "requests", &reqs));
    assert_int_equal(json_object_array_length(reqs), 3);
    for (size_t i = 0; i < 3; i++) {
        json_object *r = json_object_array_get_idx(reqs, i);
        assert_string_equal(fixture_get_string(r, "model"), "models/gemini-embedding-001");
        assert_false(json_object_object_get_ex(r, "outputDimensionality", &v));
        json_object *content, *parts;
        assert_true(json_object_object_get_ex(r, "content", &content));
        assert_true(json_object_object_get_ex(content, "parts", &parts));
        char want[2] = {(char)('a' + i), 0};
        assert_string_equal(fixture_get_string(json_object_array_get_idx(parts, 0), "text"), want);
    }
    json_object_put(b);
    upstream_request_free(&u);
}

static void test_gemini_encode_refuses_token_ids(void **state)
{
    canon_request req = embed_req("{\"model\":\"gem\",\"input\":[[1,2]]}");
    upstream_request u;
    upstream_request_init(&u);
    char err[256] = "";
    assert_int_equal(gemini_embed_ops.encode(&req, &t_gemini, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "not token ids"));
    fixture_canon_release(&req);
    upstream_request_free(&u);
}

static void test_gemini_decode(void **state)
{
    decoded d = decode(&gemini_embed_ops, "{\"model\":\"gem\",\"input\":\"abcde\"}", &t_gemini,
                       "{\"embedding\":{\"values\":[0.25,-0.125]}}");
    assert_int_equal(d.rc, 0);
    assert_false(d.u.exact); /* no usageMetadata: estimated */
    assert_int_equal(d.u.input_uncached, 2);
    assert_string_equal(out_str(&d),
                        "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                        "\"embedding\":[0.25,-0.125]}],\"model\":\"gemini-embedding-001\","
                        "\"usage\":{\"prompt_tokens\":2,\"total_tokens\":2}}");
    buf_free(&d.out);
    d = decode(&gemini_embed_ops,
               "{\"model\":\"gem\",\"input\":[\"a\",\"b\"],\"encoding_format\":\"base64\"}",
               &t_gemini,
               "{\"embeddings\":[{\"values\":[1.0]},{\"values\":[-2]}],\"usageMetadata\":{"
               "\"promptTokenCount\":7}}");
    assert_int_equal(d.rc, 0);
    assert_true(d.u.exact);
    assert_int_equal(d.u.input_uncached, 7);
    assert_non_null(strstr(out_str(&d), "\"index\":0,\"embedding\":\"AACAPw==\""));
    assert_non_null(strstr(out_str(&d), "\"index\":1,\"embedding\":\"AAAAwA==\""));
    buf_free(&d.out);
}

static void test_gemini_decode_refuses(void **state)
{
    decoded d = decode(&gemini_embed_ops, "{\"model\":\"gem\",\"input\":[\"a\",\"b\"]}", &t_gemini,
                       "{\"embeddings\":[{\"values\":[1]}]}");
    assert_int_equal(d.rc, -1);
    assert_non_null(strstr(d.err, "1 vector for 2 inputs"));
    d = decode(&gemini_embed_ops, "{\"model\":\"gem\",\"input\":\"a\"}", &t_gemini,
               "{\"embeddings\":[{\"values\":[1]}]}"); /* batch shape for embedContent */
    assert_int_equal(d.rc, -1);
    d = decode(&gemini_embed_ops, "{\"model\":\"gem\",\"input\":[\"a\",\"b\"]}", &t_gemini,
               "{\"embeddings\":[{\"values\":[1]},{\"values\":[\"x\"]}]}");
    assert_int_equal(d.rc, -1);
    assert_non_null(strstr(d.err, "vector 1"));
    assert_int_equal(d.out.len, 0);
    buf_free(&d.out);
}

/* ------------------------------------------------------------ Ollama */

static void test_ollama_encode(void **state)
{
    upstream_request u;
    json_object *b =
        encode(&ollama_embed_ops,
               "{\"model\":\"nomic\",\"input\":[\"a\",\"b\"],\"dimensions\":3,\"user\":\"x\"}",
               &t_ollama, &u);
    assert_string_equal(u.url.data, "http://127.0.0.1:11434/api/embed");
    assert_string_equal(
        json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN),
        "{\"model\":\"nomic-embed-text\",\"input\":[\"a\",\"b\"],\"dimensions\":3}");
    json_object_put(b);
    upstream_request_free(&u);
}

static void test_ollama_decode(void **state)
{
    decoded d =
        decode(&ollama_embed_ops, "{\"model\":\"nomic\",\"input\":[\"a\",\"b\"]}", &t_ollama,
               "{\"model\":\"nomic-embed-text\",\"embeddings\":[[0.1,0.2],[0.3,0.4]],"
               "\"prompt_eval_count\":5}");
    assert_int_equal(d.rc, 0);
    assert_true(d.u.exact);
    assert_int_equal(d.u.input_uncached, 5);
    assert_non_null(strstr(out_str(&d), "\"index\":1,\"embedding\":[0.3,0.4]"));
    assert_non_null(strstr(out_str(&d), "\"usage\":{\"prompt_tokens\":5,\"total_tokens\":5}"));
    buf_free(&d.out);
    d = decode(&ollama_embed_ops, "{\"model\":\"nomic\",\"input\":\"a\"}", &t_ollama,
               "{\"error\":\"model not found\"}");
    assert_int_equal(d.rc, -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_vector_base64_is_float32_le),
        cmocka_unit_test(test_base64_values_match_strtod),
        cmocka_unit_test(test_dialect_tables),
        cmocka_unit_test(test_openai_encode_forwards_the_body),
        cmocka_unit_test(test_openai_decode_relays_as_received),
        cmocka_unit_test(test_openai_decode_floats_to_base64),
        cmocka_unit_test(test_openai_decode_without_usage),
        cmocka_unit_test(test_openai_decode_refuses),
        cmocka_unit_test(test_gemini_encode_single),
        cmocka_unit_test(test_gemini_encode_batch),
        cmocka_unit_test(test_gemini_encode_refuses_token_ids),
        cmocka_unit_test(test_gemini_decode),
        cmocka_unit_test(test_gemini_decode_refuses),
        cmocka_unit_test(test_ollama_encode),
        cmocka_unit_test(test_ollama_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

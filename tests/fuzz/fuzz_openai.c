/* libFuzzer target for the OpenAI-compatible and Ollama adapters: every
 * input goes through encode (as a client body), decode (as a 2xx body),
 * classify (as an error body, its first line doubling as a Retry-After
 * value) and the stream decoder (split into events at '\n'). Nothing may
 * crash or leak, and every chunk sent to the sink must be a JSON object. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "providers/provider.h"
#include "router/canon.h"

extern const provider_ops openai_ops;
extern const provider_ops ollama_ops;

static provider_conf conf = {
    .name = "fuzz",
    .base_url = "http://127.0.0.1:1",
    .api_key = "k",
    .stream_usage = true,
};

static void sink_check(void *ctx, const char *json, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, json, (int)len);
    if (!json_object_is_type(o, json_type_object) || json_tokener_get_parse_end(tok) != len)
        abort();
    json_object_put(o);
    json_tokener_free(tok);
}

/* Copies into an exact-size buffer so ASan sees any read past the end. */
static char *dup_exact(const uint8_t *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (n) memcpy(c, p, n);
    return c;
}

/* As the server does: encode only what canon accepted, from its tokens. */
static void run_encode(const provider_ops *ops, const uint8_t *data, size_t size)
{
    char *s = dup_exact(data, size);
    jdoc doc = JDOC_INIT;
    buf strings = BUF_INIT;
    canon_request req;
    canon_error cerr;
    if (canon_parse_chat(s, size, &doc, &strings, &req, &cerr) == 0) {
        target t = {.provider = &conf, .model = "m", .upstream_model = "up"};
        for (int max_completion = 0; max_completion < 2; max_completion++) {
            conf.use_max_completion_tokens = max_completion;
            upstream_request out;
            upstream_request_init(&out);
            char err[256];
            if (ops->encode(&req, &t, &out, err, sizeof err) == 0) {
                json_object *body = json_tokener_parse(out.body.data);
                if (!json_object_is_type(body, json_type_object)) abort();
                json_object_put(body);
            }
            upstream_request_free(&out);
        }
    }
    jdoc_free(&doc);
    buf_free(&strings);
    free(s);
}

static void run_decode(const provider_ops *ops, const uint8_t *data, size_t size)
{
    char *body = dup_exact(data, size);
    decoded_response out;
    char err[256];
    target t = {.provider = &conf, .model = "m", .upstream_model = "up"};
    if (ops->decode(NULL, &t, body, size, &out, err, sizeof err) == 0) {
        /* a translated answer, or the upstream bytes relayed as they are */
        if (out.body ? !json_object_is_type(out.body, json_type_object)
                     : out.raw != body || out.raw_len != size)
            abort();
        json_object_put(out.body);
    }
    free(body);
}

static void run_classify(const provider_ops *ops, const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t first = nl ? (size_t)(nl - data) : size;
    char *value = strndup((const char *)data, first);
    upstream_headers hs = {.n = 2};
    hs.h[0].name = (size && (data[0] & 1)) ? "retry-after-ms" : "retry-after";
    hs.h[0].value = value;
    hs.h[1].name = "x-should-retry";
    hs.h[1].value = "false";
    static const int statuses[] = {400, 401, 404, 429, 500, 503, 529, 302};
    int status = statuses[size ? data[size - 1] % 8 : 0];
    char *body = dup_exact(data, size);
    upstream_error e;
    ops->classify(status, &hs, body, size, &e);
    if (strnlen(e.message, sizeof e.message) == sizeof e.message) abort();
    free(body);
    free(value);
}

static void run_stream(const provider_ops *ops, const uint8_t *data, size_t size)
{
    target t = {.provider = &conf, .model = "m", .upstream_model = "up"};
    void *st = ops->stream_new(NULL, &t);
    stream_result res;
    memset(&res, 0, sizeof res);
    stream_sink sink = {NULL, sink_check};
    size_t start = 0;
    while (start <= size) {
        const uint8_t *nl = memchr(data + start, '\n', size - start);
        size_t end = nl ? (size_t)(nl - data) : size;
        char *ev_data = dup_exact(data + start, end - start);
        stream_event ev = {NULL, ev_data, end - start};
        ops->stream_event(st, &ev, &res, &sink);
        free(ev_data);
        start = end + 1;
    }
    ops->stream_free(st);
    buf_free(&res.text);
}

/* provider_append_json must say what json-c says: both outputs parse back
 * to values that json-c serialises identically. */
static void run_append_json(const uint8_t *data, size_t size)
{
    char *s = strndup((const char *)data, size);
    json_object *v = json_tokener_parse(s);
    if (v) {
        buf ours = BUF_INIT;
        provider_append_json(&ours, v);
        json_object *a = json_tokener_parse(ours.data);
        json_object *b =
            json_tokener_parse(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
        if (!a || !b ||
            strcmp(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN),
                   json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN)) != 0)
            abort();
        json_object_put(a);
        json_object_put(b);
        buf_free(&ours);
        json_object_put(v);
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_append_json(data, size);
    const provider_ops *ops[] = {&openai_ops, &ollama_ops};
    for (int i = 0; i < 2; i++) {
        run_encode(ops[i], data, size);
        run_decode(ops[i], data, size);
        run_classify(ops[i], data, size);
        run_stream(ops[i], data, size);
    }
    return 0;
}

/* libFuzzer target for the Anthropic and Gemini adapters: every byte an
 * upstream (or a client) sends them goes through decode, stream_event,
 * classify and encode here (encode for Ollama too: the three translating
 * dialects read the client's body from canon's tokens). Any chunk handed
 * to the sink, and any upstream body encode builds, must be valid JSON,
 * whatever the input.
 *
 *   FUZZ_SECONDS=60 scripts/fuzz.sh anthropic_gemini */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "providers/provider.h"
#include "router/canon.h"

extern const provider_ops anthropic_ops;
extern const provider_ops gemini_ops;
extern const provider_ops ollama_ops;

static const provider_conf conf = {
    .name = "fuzz",
    .base_url = "https://example.invalid/v1",
    .api_key = "k",
};
static const target tgt = {.provider = &conf, .model = "m", .upstream_model = "m-up"};
/* a reasoning model, for the thinking paths */
static const model_price reasoning_price = {.name = "m-pro", .reasoning = true};
static const target tgt_reasons = {
    .provider = &conf, .model = "m", .upstream_model = "m-pro", .price = &reasoning_price};

static void sink_check(void *ctx, const char *json, size_t len)
{
    json_tokener *tok = ctx;
    json_tokener_reset(tok);
    json_object *o = json_tokener_parse_ex(tok, json, (int)len);
    if (!o || json_tokener_get_parse_end(tok) != len)
        abort(); /* a chunk the client could not parse */
    json_object_put(o);
}

static void run_decode(const provider_ops *ops, const char *s, size_t len)
{
    decoded_response d;
    char err[256];
    if (ops->decode(NULL, &tgt, s, len, &d, err, sizeof err) == 0) {
        if (!d.body) abort();
        json_object_put(d.body);
    }
}

static void run_classify(const provider_ops *ops, const char *s, size_t len)
{
    static const int statuses[] = {0,   200, 400, 401, 402, 403, 404, 408,
                                   413, 429, 500, 502, 503, 504, 529, 999};
    upstream_headers hs = {.n = 1};
    hs.h[0].name = "retry-after";
    hs.h[0].value = "2";
    upstream_error e;
    int status = statuses[(len ? (unsigned char)s[0] : 0) % 16];
    ops->classify(status, len % 2 ? &hs : NULL, s, len, &e);
    if (memchr(e.message, '\0', sizeof e.message) == NULL) abort();
}

/* Events end at a blank line (SSE) or, with `lines`, at every newline.
 * A leading "event: NAME\n" names the event; "data: " is stripped. */
static void run_stream(const provider_ops *ops, const char *s, size_t len, bool lines,
                       json_tokener *tok)
{
    stream_result res;
    memset(&res, 0, sizeof res);
    stream_sink sink = {.ctx = tok, .chunk = sink_check};
    void *st = ops->stream_new(NULL, &tgt);
    const char *sep = lines ? "\n" : "\n\n";
    size_t seplen = strlen(sep), pos = 0;
    while (pos < len) {
        const char *end = memmem(s + pos, len - pos, sep, seplen);
        size_t n = end ? (size_t)(end - (s + pos)) : len - pos;
        char name[64] = "";
        const char *data = s + pos;
        size_t dlen = n;
        if (dlen > 7 && memcmp(data, "event: ", 7) == 0) {
            const char *nl = memchr(data, '\n', dlen);
            size_t nlen = nl ? (size_t)(nl - data - 7) : 0;
            if (nl && nlen < sizeof name) {
                memcpy(name, data + 7, nlen);
                dlen -= (size_t)(nl + 1 - data);
                data = nl + 1;
            }
        }
        if (dlen >= 6 && memcmp(data, "data: ", 6) == 0) data += 6, dlen -= 6;
        /* The SSE framer hands over NUL-terminated data; so does this. */
        char *copy = malloc(dlen + 1);
        memcpy(copy, data, dlen);
        copy[dlen] = '\0';
        stream_event ev = {.event = name[0] ? name : NULL, .data = copy, .data_len = dlen};
        ops->stream_event(st, &ev, &res, &sink);
        free(copy);
        pos += n + seplen;
    }
    ops->stream_free(st);
    buf_free(&res.text);
}

/* Encodes req to every translating dialect. Whatever the body, a body
 * encode produces must be strict JSON: the encoders copy the client's
 * values as raw bytes, so a token boundary off by one would show here. */
static void run_encode(const canon_request *req, const target *t)
{
    static jdoc out_doc = JDOC_INIT;
    const provider_ops *ops[] = {&anthropic_ops, &gemini_ops, &ollama_ops};
    for (int i = 0; i < 3; i++) {
        upstream_request out;
        upstream_request_init(&out);
        char err[256] = "";
        if (ops[i]->encode(req, t, &out, err, sizeof err) == 0 &&
            (jdoc_parse(&out_doc, out.body.data, out.body.len, NULL, 0, NULL) != 0 ||
             jdoc_type(&out_doc, 0) != JT_OBJECT))
            abort(); /* an upstream body that is not a JSON object */
        if (memchr(err, '\0', sizeof err) == NULL) abort();
        upstream_request_free(&out);
    }
}

/* The input as a client body, as the server handles it: one parse by canon
 * (its tokens are all an encoder reads). A body canon refuses but jtok
 * reads as an object is encoded too, with the flags canon would not let
 * through together: encode must not crash on more than canon allows. */
static void run_client_body(const char *s, size_t len)
{
    static jdoc doc = JDOC_INIT;
    static buf strings = BUF_INIT;
    canon_request req;
    canon_error cerr;
    if (canon_parse_chat(s, len, &doc, &strings, &req, &cerr) == 0) {
        run_encode(&req, &tgt);
        req.json_mode = !req.json_mode;
        req.thinking_budget = 5000;
        run_encode(&req, &tgt_reasons);
        return;
    }
    if (jdoc_parse(&doc, s, len, NULL, 0, NULL) != 0 || jdoc_type(&doc, 0) != JT_OBJECT) return;
    memset(&req, 0, sizeof req);
    req.body = s;
    req.body_len = len;
    req.doc = &doc;
    req.max_tokens = -1;
    req.stream = true;
    req.json_mode = true;
    req.reasoning_set = true;
    run_encode(&req, &tgt_reasons);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_tokener *tok;
    if (!tok) tok = json_tokener_new();
    const char *s = (const char *)data;
    const provider_ops *ops[] = {&anthropic_ops, &gemini_ops};
    for (int i = 0; i < 2; i++) {
        run_decode(ops[i], s, size);
        run_classify(ops[i], s, size);
        run_stream(ops[i], s, size, i == 1, tok);
    }
    run_client_body(s, size);
    return 0;
}

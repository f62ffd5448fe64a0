/* libFuzzer target for the Anthropic and Gemini adapters: every byte an
 * upstream (or a client) sends them goes through decode, stream_event,
 * classify and encode here. Any chunk handed to the sink must be valid
 * JSON, whatever the input.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. \
 *     tests/fuzz/fuzz_anthropic_gemini.c providers/anthropic.c providers/gemini.c \
 *     providers/common.c lib/buf.c lib/log.c lib/util.c router/pricing.c router/price_table.c \
 *     $(pkg-config --cflags --libs json-c openssl) -o /tmp/fz
 *   /tmp/fz -max_total_time=60 tests/fuzz/corpus/anthropic_gemini */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "providers/provider.h"

extern const provider_ops anthropic_ops;
extern const provider_ops gemini_ops;

static const provider_conf conf = {
    .name = "fuzz",
    .base_url = "https://example.invalid/v1",
    .api_key = "k",
};
static const target tgt = {.provider = &conf, .model = "m", .upstream_model = "m-up"};

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

/* The input as a client body: encode must never crash on what canon lets
 * through (and here, on much more). */
static void run_encode(const provider_ops *ops, json_object *root)
{
    canon_request req;
    memset(&req, 0, sizeof req);
    req.root = root;
    json_object_object_get_ex(root, "messages", &req.messages);
    req.max_tokens = -1;
    req.stream = true;
    req.json_mode = true;
    upstream_request out;
    upstream_request_init(&out);
    char err[256];
    ops->encode(&req, &tgt, &out, err, sizeof err);
    upstream_request_free(&out);
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
    char err[128];
    json_object *root = provider_parse_object(NULL, s, size, err, sizeof err);
    if (root) {
        for (int i = 0; i < 2; i++)
            run_encode(ops[i], root);
        json_object_put(root);
    }
    return 0;
}

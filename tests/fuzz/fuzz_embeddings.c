/* libFuzzer target for embeddings: every input is read both ways.
 *  - As a client's POST /v1/embeddings body: canon_parse_embeddings either
 *    refuses it with a terminated message, param and code, or accepts it
 *    with 1 to 2,048 inputs that embed_input_first/next visit exactly, an
 *    estimate of at least one token each, and then every dialect that takes
 *    such inputs encodes it into a JSON object.
 *  - As a provider's 2xx answer, in each dialect, to a fixed request of
 *    two text inputs (floats and base64): the decoder refuses it, or
 *    answers an OpenAI list that is a JSON object, with a usage that is not
 *    negative.
 * Nothing may crash or leak. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "providers/embeddings.h"
#include "router/canon.h"

extern const provider_ops openai_ops, gemini_ops, ollama_ops;

static provider_conf conf = {.name = "fuzz", .base_url = "http://127.0.0.1:1", .api_key = "k"};

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_embeddings: contract broken: %s\n", what);
        abort();
    }
}

static char *dup_exact(const uint8_t *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (n) memcpy(c, p, n);
    return c;
}

static bool is_json_object(const char *s, size_t len)
{
    jdoc d = JDOC_INIT;
    d.max_tokens = 1u << 25;
    bool ok = jdoc_parse(&d, s, len, NULL, 0, NULL) == 0 && jdoc_type(&d, 0) == JT_OBJECT;
    jdoc_free(&d);
    return ok;
}

static void as_request(const uint8_t *data, size_t size)
{
    static jdoc doc = JDOC_INIT;
    static buf strings = BUF_INIT;
    char *body = dup_exact(data, size);
    canon_request req;
    canon_error err;
    memset(&err, 0x5a, sizeof err);
    int rc = canon_parse_embeddings(body, size, &doc, &strings, &req, &err);
    if (rc != 0) {
        check(rc == -1, "return value neither 0 nor -1");
        check(memchr(err.message, '\0', sizeof err.message) && err.message[0], "bad message");
        check(memchr(err.param, '\0', sizeof err.param) != NULL, "param not terminated");
        check(memchr(err.code, '\0', sizeof err.code) && err.code[0], "bad code");
        free(body);
        return;
    }
    const canon_embed *e = &req.embed;
    check(e->on && e->n >= 1 && e->n <= 2048, "input count out of range");
    check(e->est_tokens >= e->n, "an input estimated at no token");
    check(e->dimensions == -1 || (e->dimensions >= 1 && e->dimensions <= 65536), "dimensions");
    check(req.model && req.model[0], "no model");
    int64_t n = 0;
    for (uint32_t i = embed_input_first(&req); i != JT_NONE; i = embed_input_next(&req, i), n++)
        check(jdoc_type(req.doc, i) == (e->token_ids ? JT_ARRAY : JT_STRING) ||
                  (e->single && e->token_ids && i == e->input),
              "an input of the wrong type");
    check(n == e->n, "the inputs visited differ from their count");
    const provider_ops *const dialects[] = {&openai_ops, &gemini_ops, &ollama_ops};
    for (size_t k = 0; k < 3; k++) {
        const embed_ops *ops = dialects[k]->embed;
        if (e->token_ids && !ops->token_ids) continue; /* the plan never sends them */
        target t = {.provider = &conf, .model = "m", .upstream_model = "up\"/model"};
        upstream_request out;
        upstream_request_init(&out);
        char why[256];
        check(ops->encode(&req, &t, &out, why, sizeof why) == 0, "encode refused a valid request");
        check(is_json_object(out.body.data, out.body.len), "encoded body is not a JSON object");
        upstream_request_free(&out);
    }
    free(body);
}

static void as_answer(const uint8_t *data, size_t size)
{
    static const char *const reqs[] = {
        "{\"model\":\"m\",\"input\":[\"ab\",\"cdefg\"]}",
        "{\"model\":\"m\",\"input\":[\"ab\",\"cdefg\"],\"encoding_format\":\"base64\"}",
        "{\"model\":\"m\",\"input\":\"one\",\"encoding_format\":\"base64\"}",
    };
    const provider_ops *const dialects[] = {&openai_ops, &gemini_ops, &ollama_ops};
    char *body = dup_exact(data, size);
    for (size_t r = 0; r < sizeof reqs / sizeof *reqs; r++) {
        jdoc doc = JDOC_INIT;
        buf strings = BUF_INIT;
        canon_request req;
        canon_error err;
        check(canon_parse_embeddings(reqs[r], strlen(reqs[r]), &doc, &strings, &req, &err) == 0,
              "fixed request refused");
        for (size_t k = 0; k < 3; k++) {
            target t = {.provider = &conf, .model = "m", .upstream_model = "up"};
            buf out = BUF_INIT;
            usage_record u;
            char why[300];
            if (dialects[k]->embed->decode(&req, &t, body, size, &out, &u, why, sizeof why) == 0) {
                check(u.input_uncached >= 0 && u.output == 0, "usage out of range");
                check(out.len == 0 || is_json_object(out.data, out.len),
                      "decoded answer is not a JSON object");
            } else {
                check(memchr(why, '\0', sizeof why) && why[0], "no reason for a refusal");
                check(out.len == 0, "a refused answer left output behind");
            }
            buf_free(&out);
        }
        jdoc_free(&doc);
        buf_free(&strings);
    }
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    as_request(data, size);
    as_answer(data, size);
    return 0;
}

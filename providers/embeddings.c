/* Embeddings in the OpenAI, Gemini and Ollama dialects (providers/embeddings.h). */
#include "providers/embeddings.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A vector is up to a few thousand numbers and a batch up to 2,048 of them:
 * more tokens than a chat answer has (jtok's default limit is 1,000,000);
 * 8 M covers 2,048 vectors of 3,072. */
#define EMBED_MAX_TOKENS (1u << 23)
#define EMBED_KEEP_TOKENS (1u << 16) /* a scratch document larger than this is freed */

/* ------------------------------------------------------------ shared */

uint32_t embed_input_first(const canon_request *req)
{
    const canon_embed *e = &req->embed;
    if (!e->on || e->input == JT_NONE) return JT_NONE;
    return e->single ? e->input : jdoc_first(req->doc, e->input);
}

uint32_t embed_input_next(const canon_request *req, uint32_t cur)
{
    const canon_embed *e = &req->embed;
    return e->single ? JT_NONE : jdoc_next(req->doc, e->input, cur);
}

void embed_base64(buf *out, const unsigned char *data, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (len == 0) return; /* a bare reserve would leave a new buf unterminated */
    buf_reserve(out, (len + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63], tab[v & 63]};
        buf_append(out, q, 4);
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], i + 1 < len ? tab[(v >> 6) & 63] : '=',
                     '='};
        buf_append(out, q, 4);
    }
}

void embed_list_begin(buf *out)
{
    buf_append_str(out, "{\"object\":\"list\",\"data\":[");
}

/* The number token i of d as a double, without strtod for the usual
 * shapes: Clinger's fast path. A decimal of at most 19 significant digits
 * whose digits m fit in 53 bits, scaled by 10^k with |k| <= 22, is m * 10^k
 * or m / 10^-k in one correctly rounded operation on exact operands: the
 * same double strtod gives. Anything else goes to strtod (jdoc_double). A
 * provider's vector is thousands of such numbers; strtod was most of the
 * cost of turning them into base64. */
static bool number_of(const jdoc *d, uint32_t i, double *out)
{
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const char *p = d->src + d->t[i].start, *end = d->src + d->t[i].end;
    bool neg = p < end && *p == '-';
    p += neg;
    uint64_t m = 0;
    int digits = 0, k = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++)
        if (digits || *p != '0') {
            if (++digits > 19) return jdoc_double(d, i, out);
            m = m * 10 + (uint64_t)(*p - '0');
        }
    if (p < end && *p == '.')
        for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
            if (digits || *p != '0') {
                if (++digits > 19) return jdoc_double(d, i, out);
                m = m * 10 + (uint64_t)(*p - '0');
            }
            k--;
        }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        bool eneg = p < end && *p == '-';
        p += p < end && (*p == '-' || *p == '+');
        int e = 0;
        for (; p < end && *p >= '0' && *p <= '9' && e < 10000; p++)
            e = e * 10 + (*p - '0');
        k += eneg ? -e : e;
    }
    if (p != end || m > (1ull << 53) || k < -22 || k > 22) return jdoc_double(d, i, out);
    double v = k < 0 ? (double)m / pow10[-k] : (double)m * pow10[k];
    *out = neg ? -v : v;
    return true;
}

/* The float32 values of the numbers of arr, little-endian, base64. */
static int append_base64_vector(buf *out, const jdoc *d, uint32_t arr)
{
    unsigned char b[3 * 256]; /* whole triples of bytes, so no padding mid-vector */
    size_t n = 0;
    for (uint32_t v = jdoc_first(d, arr); v != JT_NONE; v = jdoc_next(d, arr, v)) {
        double x;
        if (jdoc_type(d, v) != JT_NUMBER || !number_of(d, v, &x)) return -1;
        float f = (float)x;
        uint32_t u;
        memcpy(&u, &f, 4);
        for (int k = 0; k < 4; k++)
            b[n++] = (unsigned char)(u >> (8 * k));
        if (n == sizeof b) {
            embed_base64(out, b, n);
            n = 0;
        }
    }
    embed_base64(out, b, n);
    return 0;
}

int embed_list_vector(buf *out, const jdoc *d, uint32_t arr, int64_t index, bool base64)
{
    if (jdoc_type(d, arr) != JT_ARRAY) return -1;
    for (uint32_t v = jdoc_first(d, arr); v != JT_NONE; v = jdoc_next(d, arr, v))
        if (jdoc_type(d, v) != JT_NUMBER) return -1;
    size_t at = out->len;
    if (index > 0) buf_append_char(out, ',');
    buf_append_str(out, "{\"object\":\"embedding\",\"index\":");
    buf_append_u64(out, (uint64_t)index);
    buf_append_str(out, ",\"embedding\":");
    if (!base64) {
        jdoc_raw_append(d, arr, out);
    } else {
        buf_append_char(out, '"');
        if (append_base64_vector(out, d, arr) != 0) {
            out->len = at;
            return -1;
        }
        buf_append_char(out, '"');
    }
    buf_append_char(out, '}');
    return 0;
}

void embed_list_end(buf *out, const char *model, int64_t prompt_tokens)
{
    buf_append_str(out, "],\"model\":");
    buf_append_json_str(out, model, strlen(model));
    buf_append_str(out, ",\"usage\":{\"prompt_tokens\":");
    buf_append_u64(out, (uint64_t)prompt_tokens);
    buf_append_str(out, ",\"total_tokens\":");
    buf_append_u64(out, (uint64_t)prompt_tokens);
    buf_append_str(out, "}}");
}

/* A dialect's decoder over the answer's tokens. */
typedef int (*doc_decoder)(const jdoc *d, const canon_request *req, const target *t, buf *out,
                           usage_record *usage, char *err, size_t errlen);

/* Tokenizes the upstream body into a scratch document reused across calls
 * (one thread per process), then decodes it with fn. A batch's tokens (up
 * to EMBED_MAX_TOKENS, 20 bytes each) are given back afterwards rather
 * than kept for the process's life. */
static int decode_with(const char *dialect, doc_decoder fn, const canon_request *req,
                       const target *t, const char *body, size_t len, buf *out, usage_record *usage,
                       char *err, size_t errlen)
{
    static jdoc d = JDOC_INIT;
    d.max_tokens = EMBED_MAX_TOKENS;
    char why[96] = "";
    size_t pos = 0;
    int rc = -1;
    if (jdoc_parse(&d, body, len, why, sizeof why, &pos) != 0)
        snprintf(err, errlen,
                 "%s answered 200 with a body that is not an embeddings answer: invalid JSON (%s "
                 "at byte %zu)",
                 dialect, why, pos);
    else if (jdoc_type(&d, 0) != JT_OBJECT)
        snprintf(err, errlen, "%s answered 200 with a body that is not a JSON object", dialect);
    else
        rc = fn(&d, req, t, out, usage, err, errlen);
    if (d.cap > EMBED_KEEP_TOKENS) jdoc_free(&d);
    return rc;
}

/* What the provider reported, or the request's estimate (not exact). */
static void set_usage(const canon_request *req, bool reported, int64_t prompt, usage_record *u)
{
    memset(u, 0, sizeof *u);
    u->exact = reported;
    u->input_uncached = reported ? prompt : req->embed.est_tokens;
}

static int64_t clamp_count(int64_t v)
{
    return v < 0 ? 0 : v > 1000000000000LL ? 1000000000000LL : v;
}

static int count_mismatch(const char *dialect, int64_t got, int64_t want, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s answered %lld vector%s for %lld input%s", dialect, (long long)got,
             got == 1 ? "" : "s", (long long)want, want == 1 ? "" : "s");
    return -1;
}

static int bad_vector(const char *dialect, int64_t i, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s answered a vector %lld that is not a list of numbers", dialect,
             (long long)i);
    return -1;
}

static void json_headers(upstream_request *out, const provider_conf *p)
{
    provider_auth_headers(p, out);
    upstream_request_add_header(out, "Content-Type", "application/json");
    upstream_request_add_header(out, "Expect", ""); /* no 100-continue round trip */
    upstream_request_add_header_lines(out, p->extra_headers);
    upstream_request_finish_headers(out);
}

static const char *upstream_model(const target *t)
{
    return t->upstream_model ? t->upstream_model : t->model;
}

static int check_target(const char *dialect, const canon_request *req, const target *t, char *err,
                        size_t errlen)
{
    if (!t || !t->provider || !t->provider->base_url || !upstream_model(t))
        return provider_fail(err, errlen, "%s: target has no base_url or upstream model", dialect);
    if (!req || !req->doc || !req->embed.on || req->embed.input == JT_NONE)
        return provider_fail(err, errlen, "%s: not an embeddings request", dialect);
    return 0;
}

/* ------------------------------------------------------------ OpenAI */

/* bridle's own keys and metadata (read for attribution; OpenAI's
 * embeddings endpoint takes no metadata) are not forwarded. */
static bool openai_drops(const char *k)
{
    return strcmp(k, "metadata") == 0 || strncmp(k, "bridle", 6) == 0 ||
           strncasecmp(k, "x-bridle", 8) == 0 || strncasecmp(k, "x_bridle", 8) == 0;
}

static int openai_embed_encode(const canon_request *req, const target *t, upstream_request *out,
                               char *err, size_t errlen)
{
    if (check_target("openai", req, t, err, errlen)) return -1;
    const jdoc *d = req->doc;
    buf *b = &out->body;
    buf_reserve(b, req->body_len + 64);
    buf_append_str(b, "{\"model\":");
    const char *model = upstream_model(t);
    provider_append_json_str(b, model, strlen(model));
    buf key = BUF_INIT;
    for (uint32_t k = jdoc_first(d, 0); k != JT_NONE; k = jdoc_next(d, 0, k)) {
        buf_reset(&key);
        jdoc_str_append(d, k, &key);
        if (strcmp(key.data, "model") == 0 || openai_drops(key.data)) continue;
        buf_append_char(b, ',');
        jdoc_raw_append(d, k, b);
        buf_append_char(b, ':');
        jdoc_raw_append(d, k + 1, b);
    }
    buf_free(&key);
    buf_append_char(b, '}');
    buf_printf(&out->url, "%s/embeddings", t->provider->base_url);
    json_headers(out, t->provider);
    return 0;
}

/* The list written anew, when what the host sent is not what the client
 * gets: floats to a client that asked for base64 (a host that ignores
 * encoding_format; base64 is the openai SDK's default), or no usage (the
 * SDK expects one: bridle's estimate, which it bills). Vectors already in
 * base64 are copied. */
static int openai_rewrite(const canon_request *req, const jdoc *d, uint32_t data, const char *model,
                          int64_t prompt, buf *out, char *err, size_t errlen)
{
    embed_list_begin(out);
    int64_t i = 0;
    for (uint32_t it = jdoc_first(d, data); it != JT_NONE; it = jdoc_next(d, data, it), i++) {
        uint32_t v = jdoc_get(d, it, "embedding");
        if (jdoc_type(d, v) == JT_STRING) {
            buf_printf(out,
                       "%s{\"object\":\"embedding\",\"index\":%lld,\"embedding\":", i ? "," : "",
                       (long long)i);
            jdoc_raw_append(d, v, out);
            buf_append_char(out, '}');
        } else if (embed_list_vector(out, d, v, i, req->embed.base64) != 0) {
            return bad_vector("openai", i, err, errlen);
        }
    }
    embed_list_end(out, model, prompt);
    return 0;
}

static int openai_decode_doc(const jdoc *d, const canon_request *req, const target *t, buf *out,
                             usage_record *usage, char *err, size_t errlen)
{
    uint32_t data = jdoc_get(d, 0, "data");
    if (jdoc_type(d, data) != JT_ARRAY) {
        uint32_t msg = jdoc_get(d, jdoc_get(d, 0, "error"), "message");
        buf m = BUF_INIT;
        if (jdoc_type(d, msg) == JT_STRING) jdoc_str_append(d, msg, &m);
        snprintf(err, errlen, "openai answered 200 without a \"data\" list%s%.80s",
                 m.len ? ": it carries an error: " : "", m.len ? m.data : "");
        buf_free(&m);
        return -1;
    }
    if ((int64_t)d->t[data].size != req->embed.n)
        return count_mismatch("openai", d->t[data].size, req->embed.n, err, errlen);
    bool floats = false;
    int64_t i = 0;
    for (uint32_t it = jdoc_first(d, data); it != JT_NONE; it = jdoc_next(d, data, it), i++) {
        jt_type ty = jdoc_type(d, jdoc_get(d, it, "embedding"));
        if (ty != JT_ARRAY && ty != JT_STRING) return bad_vector("openai", i, err, errlen);
        floats = floats || ty == JT_ARRAY;
    }
    int64_t prompt = 0;
    bool reported = jdoc_int64(d, jdoc_get(d, jdoc_get(d, 0, "usage"), "prompt_tokens"), &prompt);
    set_usage(req, reported, clamp_count(prompt), usage);
    if (reported && !(req->embed.base64 && floats)) return 0; /* relayed as it came */
    const char *model = upstream_model(t);
    buf name = BUF_INIT;
    uint32_t m = jdoc_get(d, 0, "model");
    if (jdoc_type(d, m) == JT_STRING) {
        jdoc_str_append(d, m, &name);
        buf_append_char(&name, '\0');
        model = name.data;
    }
    int rc = openai_rewrite(req, d, data, model, usage->input_uncached, out, err, errlen);
    buf_free(&name);
    if (rc != 0) buf_reset(out);
    return rc;
}

static int openai_embed_decode(const canon_request *req, const target *t, const char *body,
                               size_t len, buf *out, usage_record *usage, char *err, size_t errlen)
{
    return decode_with("openai", openai_decode_doc, req, t, body, len, out, usage, err, errlen);
}

const embed_ops openai_embed_ops = {
    .token_ids = true,
    .encode = openai_embed_encode,
    .decode = openai_embed_decode,
};

/* ------------------------------------------------------------ Gemini */

/* One request of Gemini's: {"model":"models/X","content":{"parts":[{"text":T}]}}
 * with "outputDimensionality" when asked (embedContent takes the same
 * members at the top level). */
static void gemini_request(const canon_request *req, const char *model, uint32_t text, buf *b)
{
    const jdoc *d = req->doc;
    buf_append_str(b, "{\"model\":\"models/");
    size_t at = b->len;
    buf_append_json_str(b, model, strlen(model)); /* "model", escaped: drop its opening quote */
    memmove(b->data + at, b->data + at + 1, b->len - at - 1);
    b->data[--b->len] = '\0';
    buf_append_str(b, ",\"content\":{\"parts\":[{\"text\":");
    jdoc_str_append_json(d, text, b);
    buf_append_str(b, "}]}");
    if (req->embed.dimensions > 0) {
        buf_append_str(b, ",\"outputDimensionality\":");
        buf_append_u64(b, (uint64_t)req->embed.dimensions);
    }
    buf_append_char(b, '}');
}

static int gemini_embed_encode(const canon_request *req, const target *t, upstream_request *out,
                               char *err, size_t errlen)
{
    if (check_target("gemini", req, t, err, errlen)) return -1;
    if (req->embed.token_ids)
        return provider_fail(err, errlen,
                             "gemini embedding models take text, not token ids: send \"input\" "
                             "as a string or a list of strings");
    const char *model = upstream_model(t);
    buf *b = &out->body;
    if (req->embed.single) {
        gemini_request(req, model, req->embed.input, b);
        buf_printf(&out->url, "%s/models/%s:embedContent", t->provider->base_url, model);
    } else {
        buf_append_str(b, "{\"requests\":[");
        for (uint32_t i = embed_input_first(req); i != JT_NONE; i = embed_input_next(req, i)) {
            if (i != embed_input_first(req)) buf_append_char(b, ',');
            gemini_request(req, model, i, b);
        }
        buf_append_str(b, "]}");
        buf_printf(&out->url, "%s/models/%s:batchEmbedContents", t->provider->base_url, model);
    }
    json_headers(out, t->provider);
    return 0;
}

static int gemini_decode_doc(const jdoc *d, const canon_request *req, const target *t, buf *out,
                             usage_record *usage, char *err, size_t errlen)
{
    /* embedContent: {"embedding":{"values":[...]}}; batch: {"embeddings":[{"values":[...]}]} */
    uint32_t one = jdoc_get(d, 0, "embedding"), list = jdoc_get(d, 0, "embeddings");
    if (req->embed.single ? jdoc_type(d, one) != JT_OBJECT : jdoc_type(d, list) != JT_ARRAY)
        return provider_fail(err, errlen, "gemini answered 200 without %s",
                             req->embed.single ? "\"embedding\"" : "an \"embeddings\" list");
    int64_t got = req->embed.single ? 1 : (int64_t)d->t[list].size;
    if (got != req->embed.n) return count_mismatch("gemini", got, req->embed.n, err, errlen);
    /* Gemini's embedding answers may carry no usage at all: then estimated. */
    int64_t prompt = 0;
    bool reported =
        jdoc_int64(d, jdoc_get(d, jdoc_get(d, 0, "usageMetadata"), "promptTokenCount"), &prompt);
    set_usage(req, reported, clamp_count(prompt), usage);
    embed_list_begin(out);
    int64_t i = 0;
    uint32_t e = req->embed.single ? one : jdoc_first(d, list);
    for (; e != JT_NONE; e = req->embed.single ? JT_NONE : jdoc_next(d, list, e), i++)
        if (embed_list_vector(out, d, jdoc_get(d, e, "values"), i, req->embed.base64) != 0) {
            buf_reset(out);
            return bad_vector("gemini", i, err, errlen);
        }
    embed_list_end(out, upstream_model(t), usage->input_uncached);
    return 0;
}

static int gemini_embed_decode(const canon_request *req, const target *t, const char *body,
                               size_t len, buf *out, usage_record *usage, char *err, size_t errlen)
{
    return decode_with("gemini", gemini_decode_doc, req, t, body, len, out, usage, err, errlen);
}

const embed_ops gemini_embed_ops = {
    .token_ids = false,
    .encode = gemini_embed_encode,
    .decode = gemini_embed_decode,
};

/* ------------------------------------------------------------ Ollama */

static int ollama_embed_encode(const canon_request *req, const target *t, upstream_request *out,
                               char *err, size_t errlen)
{
    if (check_target("ollama", req, t, err, errlen)) return -1;
    if (req->embed.token_ids)
        return provider_fail(err, errlen,
                             "ollama embedding models take text, not token ids: send \"input\" "
                             "as a string or a list of strings");
    const char *model = upstream_model(t);
    buf *b = &out->body;
    buf_append_str(b, "{\"model\":");
    provider_append_json_str(b, model, strlen(model));
    buf_append_str(b, ",\"input\":"); /* a string or a list of strings, as Ollama takes them */
    jdoc_json_append(req->doc, req->embed.input, b);
    if (req->embed.dimensions > 0) {
        buf_append_str(b, ",\"dimensions\":");
        buf_append_u64(b, (uint64_t)req->embed.dimensions);
    }
    buf_append_char(b, '}');
    buf_printf(&out->url, "%s/api/embed", t->provider->base_url);
    json_headers(out, t->provider);
    return 0;
}

static int ollama_decode_doc(const jdoc *d, const canon_request *req, const target *t, buf *out,
                             usage_record *usage, char *err, size_t errlen)
{
    uint32_t list = jdoc_get(d, 0, "embeddings");
    if (jdoc_type(d, list) != JT_ARRAY)
        return provider_fail(err, errlen, "ollama answered 200 without an \"embeddings\" list");
    if ((int64_t)d->t[list].size != req->embed.n)
        return count_mismatch("ollama", d->t[list].size, req->embed.n, err, errlen);
    int64_t prompt = 0;
    bool reported = jdoc_int64(d, jdoc_get(d, 0, "prompt_eval_count"), &prompt);
    set_usage(req, reported, clamp_count(prompt), usage);
    embed_list_begin(out);
    int64_t i = 0;
    for (uint32_t e = jdoc_first(d, list); e != JT_NONE; e = jdoc_next(d, list, e), i++)
        if (embed_list_vector(out, d, e, i, req->embed.base64) != 0) {
            buf_reset(out);
            return bad_vector("ollama", i, err, errlen);
        }
    embed_list_end(out, upstream_model(t), usage->input_uncached);
    return 0;
}

static int ollama_embed_decode(const canon_request *req, const target *t, const char *body,
                               size_t len, buf *out, usage_record *usage, char *err, size_t errlen)
{
    return decode_with("ollama", ollama_decode_doc, req, t, body, len, out, usage, err, errlen);
}

const embed_ops ollama_embed_ops = {
    .token_ids = false,
    .encode = ollama_embed_encode,
    .decode = ollama_embed_decode,
};

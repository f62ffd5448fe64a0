/* Embeddings in the three dialects that have them: OpenAI POST
 * /v1/embeddings, Gemini :embedContent / :batchEmbedContents, Ollama POST
 * /api/embed. Vectors are deterministic: each input's bytes seed a
 * PRNG (FNV-1a 64, then splitmix64), whose draws, mapped to [-1, 1) and
 * scaled to unit length, are the vector, printed as float32 values. The
 * same text gives the same vector in every dialect and for every model, so
 * a test can compute it (README.md, "Embeddings"). */
#include "tests/mock/mock.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMBED_DIMS_DEFAULT 1536
#define EMBED_DIMS_MAX 65536
#define EMBED_INPUTS_MAX 4096

struct mock_embed {
    int n;
    uint64_t *seed; /* one per input */
    long dims;
    bool base64;  /* OpenAI encoding_format "base64" */
    bool batch;   /* Gemini batchEmbedContents (else embedContent) */
    bool many;    /* Ollama: "input" was a list */
    long *tokens; /* per input */
};

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

#define FNV_BASIS 14695981039346656037ULL

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Adds one input: a string (its bytes, markers applied) or a list of
 * token ids (their decimal digits joined by commas). Returns an error. */
static const char *add_input(struct mock_req *m, json_object *v)
{
    struct mock_embed *e = m->embed;
    if (e->n == EMBED_INPUTS_MAX) return "too many inputs";
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        size_t len = (size_t)json_object_get_string_len(v);
        if (len == 0) return "an input is an empty string";
        directives_apply_markers(&m->dir, s, len);
        e->seed[e->n] = fnv1a(FNV_BASIS, s, len);
        long t = (long)((len + 3) / 4);
        e->tokens[e->n++] = t > 1 ? t : 1;
        return NULL;
    }
    if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0)
        return "an input must be a string or a non-empty list of token ids";
    uint64_t h = FNV_BASIS;
    size_t n = json_object_array_length(v);
    for (size_t i = 0; i < n; i++) {
        json_object *id = json_object_array_get_idx(v, i);
        if (!json_object_is_type(id, json_type_int)) return "a token id is not an integer";
        char num[32];
        int k =
            snprintf(num, sizeof num, "%s%lld", i ? "," : "", (long long)json_object_get_int64(id));
        h = fnv1a(h, num, (size_t)k);
    }
    e->seed[e->n] = h;
    e->tokens[e->n++] = (long)n;
    return NULL;
}

static const char *add_inputs(struct mock_req *m, json_object *in)
{
    if (!in) return "input: field required";
    if (json_object_is_type(in, json_type_string)) return add_input(m, in);
    if (!json_object_is_type(in, json_type_array) || json_object_array_length(in) == 0)
        return "input must be a string or a non-empty list";
    json_object *first = json_object_array_get_idx(in, 0);
    if (json_object_is_type(first, json_type_int)) return add_input(m, in); /* one list of ids */
    m->embed->many = true;
    for (size_t i = 0; i < json_object_array_length(in); i++) {
        const char *err = add_input(m, json_object_array_get_idx(in, i));
        if (err) return err;
    }
    return NULL;
}

static const char *read_dims(struct mock_embed *e, json_object *v)
{
    if (!v) return NULL;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1 ||
        json_object_get_int64(v) > EMBED_DIMS_MAX)
        return "dimensions must be an integer from 1 to 65536";
    e->dims = (long)json_object_get_int64(v);
    return NULL;
}

/* Gemini: one request {"model":"models/M","content":{"parts":[{"text":T}]},
 * "outputDimensionality":N}; its model must be the path's. */
static const char *gemini_request(struct mock_req *m, json_object *r)
{
    json_object *model = get(r, "model");
    char want[MOCK_MODEL_MAX + 8];
    snprintf(want, sizeof want, "models/%s", m->model);
    if (m->embed->batch && (!json_object_is_type(model, json_type_string) ||
                            strcmp(json_object_get_string(model), want)))
        return "each request's model must be \"models/\" + the model in the path";
    json_object *parts = get(get(r, "content"), "parts");
    if (!json_object_is_type(parts, json_type_array) || json_object_array_length(parts) != 1)
        return "content.parts must hold one part";
    json_object *text = get(json_object_array_get_idx(parts, 0), "text");
    if (!json_object_is_type(text, json_type_string)) return "content.parts[0].text is required";
    const char *err = read_dims(m->embed, get(r, "outputDimensionality"));
    return err ? err : add_input(m, text);
}

const char *embed_prepare(struct mock_req *m, enum dialect d, json_object *root, bool batch)
{
    struct mock_embed *e = calloc(1, sizeof *e);
    if (!e) return "out of memory";
    m->embed = e;
    e->seed = calloc(EMBED_INPUTS_MAX, sizeof *e->seed);
    e->tokens = calloc(EMBED_INPUTS_MAX, sizeof *e->tokens);
    if (!e->seed || !e->tokens) return "out of memory";
    e->dims = EMBED_DIMS_DEFAULT;
    e->batch = batch;
    if (d != D_GEMINI) {
        json_object *model = get(root, "model");
        if (!json_object_is_type(model, json_type_string)) return "model: field required";
        snprintf(m->model, sizeof m->model, "%s", json_object_get_string(model));
    }
    stats_record_model(m->model);
    faults_take(m->model, &m->dir);
    const char *err = NULL;
    if (d == D_OPENAI) {
        json_object *fmt = get(root, "encoding_format");
        e->base64 = fmt && strcmp(json_object_get_string(fmt), "base64") == 0;
        if (fmt && !e->base64 && strcmp(json_object_get_string(fmt), "float"))
            return "encoding_format must be float or base64";
        err = read_dims(e, get(root, "dimensions"));
        if (!err) err = add_inputs(m, get(root, "input"));
    } else if (d == D_OLLAMA) {
        err = read_dims(e, get(root, "dimensions"));
        if (!err) err = add_inputs(m, get(root, "input"));
    } else if (!batch) {
        err = gemini_request(m, root);
    } else {
        json_object *reqs = get(root, "requests");
        if (!json_object_is_type(reqs, json_type_array) || json_object_array_length(reqs) == 0)
            return "requests must be a non-empty list";
        for (size_t i = 0; !err && i < json_object_array_length(reqs); i++)
            err = gemini_request(m, json_object_array_get_idx(reqs, i));
    }
    if (err) return err;
    long p = 0;
    for (int i = 0; i < e->n; i++)
        p += e->tokens[i];
    m->use.prompt = m->dir.prompt_tokens >= 0 ? m->dir.prompt_tokens : p;
    return NULL;
}

void embed_free(struct mock_req *m)
{
    if (!m->embed) return;
    free(m->embed->seed);
    free(m->embed->tokens);
    free(m->embed);
    m->embed = NULL;
}

/* Vector i as float32 values. */
static void vector_of(const struct mock_embed *e, int i, float *out)
{
    uint64_t x = e->seed[i];
    double *c = malloc(sizeof *c * (size_t)e->dims), norm = 0;
    if (!c) {
        memset(out, 0, sizeof *out * (size_t)e->dims);
        return;
    }
    for (long j = 0; j < e->dims; j++) {
        c[j] = (double)(splitmix64(&x) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
        norm += c[j] * c[j];
    }
    norm = sqrt(norm);
    for (long j = 0; j < e->dims; j++)
        out[j] = (float)(c[j] / norm);
    free(c);
}

static void add_base64(struct evbuffer *out, const float *v, long n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = (size_t)n * 4;
    unsigned char *b = malloc(len ? len : 1);
    if (!b) return;
    for (long j = 0; j < n; j++) {
        uint32_t u;
        memcpy(&u, &v[j], 4);
        for (int k = 0; k < 4; k++)
            b[j * 4 + k] = (unsigned char)(u >> (8 * k));
    }
    ADD_LIT(out, "\"");
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)b[i] << 16 | (i + 1 < len ? (uint32_t)b[i + 1] << 8 : 0) |
                     (i + 2 < len ? b[i + 2] : 0);
        char q[4] = {tab[w >> 18], tab[(w >> 12) & 63], i + 1 < len ? tab[(w >> 6) & 63] : '=',
                     i + 2 < len ? tab[w & 63] : '='};
        evbuffer_add(out, q, 4);
    }
    ADD_LIT(out, "\"");
    free(b);
}

static void add_vector(const struct mock_embed *e, int i, bool base64, struct evbuffer *out)
{
    float *v = malloc(sizeof *v * (size_t)e->dims);
    if (!v) return;
    vector_of(e, i, v);
    if (base64) {
        add_base64(out, v, e->dims);
    } else {
        ADD_LIT(out, "[");
        for (long j = 0; j < e->dims; j++)
            evbuffer_add_printf(out, "%s%.9g", j ? "," : "", (double)v[j]);
        ADD_LIT(out, "]");
    }
    free(v);
}

void embed_body(struct mock_req *m, struct evbuffer *out)
{
    const struct mock_embed *e = m->embed;
    bool usage = m->dir.no_usage != 1;
    long p = m->use.prompt;
    if (m->ops == &openai_ops) {
        ADD_LIT(out, "{\"object\":\"list\",\"data\":[");
        for (int i = 0; i < e->n; i++) {
            ADD_NUM(out, "{\"object\":\"embedding\",\"index\":", i);
            ADD_LIT(out, ",\"embedding\":");
            add_vector(e, i, e->base64, out);
            ADD_LIT(out, "}");
            if (i + 1 < e->n) ADD_LIT(out, ",");
        }
        ADD_LIT(out, "],\"model\":");
        json_cstr(out, m->model);
        if (usage) {
            ADD_NUM(out, ",\"usage\":{\"prompt_tokens\":", p);
            ADD_NUM(out, ",\"total_tokens\":", p);
            ADD_LIT(out, "}");
        }
        ADD_LIT(out, "}");
    } else if (m->ops == &gemini_ops) {
        if (e->batch)
            ADD_LIT(out, "{\"embeddings\":[");
        else
            ADD_LIT(out, "{\"embedding\":");
        for (int i = 0; i < e->n; i++) {
            ADD_LIT(out, "{\"values\":");
            add_vector(e, i, false, out);
            ADD_LIT(out, "}");
            if (i + 1 < e->n) ADD_LIT(out, ",");
        }
        if (e->batch) ADD_LIT(out, "]");
        if (usage) {
            ADD_NUM(out, ",\"usageMetadata\":{\"promptTokenCount\":", p);
            ADD_NUM(out, ",\"totalTokenCount\":", p);
            ADD_LIT(out, "}");
        }
        ADD_LIT(out, "}");
    } else {
        ADD_LIT(out, "{\"model\":");
        json_cstr(out, m->model);
        ADD_LIT(out, ",\"embeddings\":[");
        for (int i = 0; i < e->n; i++) {
            add_vector(e, i, false, out);
            if (i + 1 < e->n) ADD_LIT(out, ",");
        }
        ADD_LIT(out, "]");
        if (usage) {
            ADD_NUM(out, ",\"total_duration\":", 1000000 + p * 100000);
            ADD_NUM(out, ",\"load_duration\":", 1000000);
            ADD_NUM(out, ",\"prompt_eval_count\":", p);
        }
        ADD_LIT(out, "}");
    }
}

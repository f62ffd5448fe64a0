/* The response cache (router/cache.h). */
#include "router/cache.h"

#include <stdlib.h>
#include <string.h>

#include "lib/jtok.h"
#include "lib/util.h"

/* An entry's bytes beyond its body, for the memory bound. */
#define ENTRY_OVERHEAD 160
#define MAX_TOOL_CALLS 128

typedef struct entry {
    struct entry *chain;         /* next in its bucket */
    struct entry *newer, *older; /* the LRU list */
    uint64_t hash;
    size_t key_len; /* the key's bytes follow the body's NUL */
    int64_t expires_ms;
    size_t cost; /* bytes charged against max_bytes */
    const target *served_by;
    usage_record usage;
    bool usage_estimated;
    size_t len;
    char body[]; /* len bytes, a NUL, then the key's key_len bytes */
} entry;

struct resp_cache {
    entry **buckets;
    size_t mask; /* buckets - 1, a power of two minus one */
    entry *newest, *oldest;
    cache_stats st;
};

resp_cache *resp_cache_new(int64_t max_bytes)
{
    resp_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->mask = 255;
    c->buckets = calloc(c->mask + 1, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    c->st.max_bytes = max_bytes;
    return c;
}

void resp_cache_free(resp_cache *c)
{
    if (!c) return;
    for (entry *e = c->newest, *next; e; e = next) {
        next = e->older;
        free(e);
    }
    free(c->buckets);
    free(c);
}

cache_stats resp_cache_get_stats(const resp_cache *c)
{
    return c->st;
}

/* For the buckets only (the key is compared whole): 8 bytes a step,
 * multiply and fold. */
static uint64_t key_hash(const buf *key)
{
    const unsigned char *p = (const unsigned char *)key->data;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ key->len;
    size_t n = key->len;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    return h ^ h >> 29;
}

static const char *entry_key(const entry *e)
{
    return e->body + e->len + 1;
}

static entry **slot_of(resp_cache *c, uint64_t hash, const char *key, size_t len)
{
    entry **p = &c->buckets[hash & c->mask];
    while (*p &&
           ((*p)->hash != hash || (*p)->key_len != len || memcmp(entry_key(*p), key, len) != 0))
        p = &(*p)->chain;
    return p;
}

static void lru_unlink(resp_cache *c, entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push(resp_cache *c, entry *e)
{
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest) c->newest->newer = e;
    c->newest = e;
    if (!c->oldest) c->oldest = e;
}

static void drop(resp_cache *c, entry *e)
{
    entry **p = slot_of(c, e->hash, entry_key(e), e->key_len);
    if (*p == e) *p = e->chain;
    lru_unlink(c, e);
    c->st.entries--;
    c->st.bytes -= (int64_t)e->cost;
    free(e);
}

/* Doubles the buckets when entries outnumber them; on OOM keeps the old. */
static void maybe_grow(resp_cache *c)
{
    if ((size_t)c->st.entries <= c->mask + 1) return;
    size_t n = (c->mask + 1) * 2;
    entry **b = calloc(n, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i <= c->mask; i++)
        for (entry *e = c->buckets[i], *next; e; e = next) {
            next = e->chain;
            e->chain = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(c->buckets);
    c->buckets = b;
    c->mask = n - 1;
}

bool resp_cache_get(resp_cache *c, const buf *key, int64_t now_ms, cache_answer *out)
{
    entry *e = *slot_of(c, key_hash(key), key->data, key->len);
    if (e && e->expires_ms <= now_ms) {
        drop(c, e);
        c->st.expired++;
        e = NULL;
    }
    if (!e) {
        c->st.misses++;
        return false;
    }
    lru_unlink(c, e);
    lru_push(c, e);
    c->st.hits++;
    *out = (cache_answer){e->body, e->len, e->served_by, e->usage, e->usage_estimated};
    return true;
}

bool resp_cache_put(resp_cache *c, const buf *key, const cache_answer *a, int64_t expires_ms)
{
    size_t size = sizeof(entry) + a->len + 1 + key->len;
    size_t cost = size + ENTRY_OVERHEAD;
    if ((int64_t)cost > c->st.max_bytes / 8) {
        c->st.refused++;
        return false;
    }
    entry *e = malloc(size);
    if (!e) return false;
    uint64_t hash = key_hash(key);
    entry *old = *slot_of(c, hash, key->data, key->len);
    if (old) drop(c, old);
    while (c->oldest && c->st.bytes + (int64_t)cost > c->st.max_bytes) {
        drop(c, c->oldest);
        c->st.evictions++;
    }
    *e = (entry){.hash = hash,
                 .key_len = key->len,
                 .expires_ms = expires_ms,
                 .cost = cost,
                 .served_by = a->served_by,
                 .usage = a->usage,
                 .usage_estimated = a->usage_estimated,
                 .len = a->len};
    memcpy(e->body, a->body, a->len);
    e->body[a->len] = '\0';
    memcpy(e->body + a->len + 1, key->data, key->len);
    entry **p = slot_of(c, hash, key->data, key->len); /* the chain may have changed above */
    e->chain = *p;
    *p = e;
    lru_push(c, e);
    c->st.entries++;
    c->st.bytes += (int64_t)cost;
    c->st.stores++;
    maybe_grow(c);
    return true;
}

/* ------------------------------------------------------------ the key */

/* Top-level fields that cannot change the answer's content, or that the
 * key carries in another form; `name` as sent, quotes included (a name
 * spelled with escapes stays in the key: a more specific key, never a
 * wrong hit). */
static bool key_ignores(const char *name, size_t len)
{
#define SKIP(s)                                                                                    \
    {                                                                                              \
        "\"" s "\"", sizeof s + 1                                                                  \
    }
    static const struct {
        const char *name;
        size_t len;
    } skip[] = {SKIP("model"),    SKIP("max_tokens"),     SKIP("max_completion_tokens"),
                SKIP("stream"),   SKIP("stream_options"), SKIP("user"),
                SKIP("metadata"), SKIP("store")};
#undef SKIP
    for (size_t i = 0; i < sizeof skip / sizeof *skip; i++)
        if (len == skip[i].len && memcmp(name, skip[i].name, len) == 0) return true;
    return false;
}

/* Writes a validated JSON value's raw bytes without the whitespace
 * between its tokens to o (room for len bytes), returning the end: two
 * values that differ only in whitespace come out the same. */
static char *put_compact(char *o, const char *raw, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char ch = raw[i];
        if (in_string) {
            *o++ = ch;
            if (ch == '\\')
                *o++ = raw[++i]; /* valid JSON: an escape is never the last byte */
            else if (ch == '"')
                in_string = false;
        } else if (ch != ' ' && ch != '\n' && ch != '\r' && ch != '\t') {
            *o++ = ch;
            in_string = ch == '"';
        }
    }
    return o;
}

static char *put_str(char *o, const char *s, size_t n, char end)
{
    memcpy(o, s, n);
    o[n] = end;
    return o + n + 1;
}

static char *put_u64(char *o, uint64_t v, char end)
{
    char tmp[24], *d = util_u64_digits(v, tmp + sizeof tmp);
    return put_str(o, d, (size_t)(tmp + sizeof tmp - d), end);
}

typedef struct field {
    const char *name; /* the key as sent, quotes included */
    size_t len;
    uint32_t value;
} field;

static int field_cmp(const void *a, const void *b)
{
    const field *x = a, *y = b;
    int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->value < y->value ? -1 : x->value > y->value; /* duplicates: in order */
}

void resp_cache_key(const canon_request *req, bool team, const char *scope, const char *model,
                    int64_t output_cap, buf *out)
{
    const jdoc *d = req->doc;
    scope = scope ? scope : "";
    model = model ? model : "";
    size_t ns = strlen(scope), nm = strlen(model);
    buf_reset(out);
    buf_reserve(out, ns + nm + 64);
    char *o = put_str(out->data, team ? "team" : "key", team ? 4 : 3, '\t');
    o = put_str(o, scope, ns, '\n');
    o = put_str(o, model, nm, '\n');
    o = put_u64(o, (uint64_t)output_cap, '\n');
    o = put_u64(o, (uint64_t)req->thinking_budget, '\n');
    out->len = (size_t)(o - out->data);
    field few[32], *f = few;
    uint32_t n = d->t[0].size, k = 0;
    if (n > 32 && !(f = calloc(n, sizeof *f))) {
        buf_append(out, req->body, req->body_len); /* out of memory: the body as sent */
        return;
    }
    for (uint32_t c = jdoc_first(d, 0); c != JT_NONE; c = jdoc_next(d, 0, c)) {
        f[k].name = jdoc_raw(d, c, &f[k].len);
        f[k].value = c + 1;
        if (!key_ignores(f[k].name, f[k].len)) k++;
    }
    qsort(f, k, sizeof *f, field_cmp);
    for (uint32_t i = 0; i < k; i++) { /* name:value\n */
        size_t len;
        const char *raw = jdoc_raw(d, f[i].value, &len);
        buf_reserve(out, f[i].len + len + 2);
        o = put_str(out->data + out->len, f[i].name, f[i].len, ':');
        o = put_compact(o, raw, len);
        *o++ = '\n';
        out->len = (size_t)(o - out->data);
    }
    out->data[out->len] = '\0'; /* buf's promise, kept by hand after the direct writes */
    if (f != few) free(f);
}

/* ------------------------------------------------------------ plain to stream */

/* The head every chunk of the replayed stream shares: {"id":..,"object":
 * "chat.completion.chunk","created":..,"model":..[,"system_fingerprint":..] */
/* The members an answer and its chunks share, from object d, each followed
 * by a comma: "id" (then "object": object), "created", "model",
 * "system_fingerprint". Both replay forms write them. */
static void head_members(const jdoc *d, const char *object, buf *out)
{
    static const char *const copied[] = {"id", "created", "model", "system_fingerprint"};
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++) {
        uint32_t v = jdoc_get(d, 0, copied[i]);
        if (v == JT_NONE) continue;
        buf_printf(out, "\"%s\":", copied[i]);
        jdoc_json_append(d, v, out);
        if (i == 0) buf_printf(out, ",\"object\":\"%s\"", object);
        buf_append_char(out, ',');
    }
}

static void chunk_head(const jdoc *d, buf *out)
{
    buf_append_str(out, "data: {");
    head_members(d, "chat.completion.chunk", out);
}

/* The message's tool calls, each with the "index" a delta carries. */
static void delta_tool_calls(const jdoc *d, uint32_t calls, buf *out)
{
    buf_append_str(out, ",\"tool_calls\":[");
    uint32_t i = 0;
    for (uint32_t c = jdoc_first(d, calls); c != JT_NONE; c = jdoc_next(d, calls, c), i++) {
        buf_printf(out, "%s{\"index\":%u", i ? "," : "", i);
        for (uint32_t k = jdoc_first(d, c); k != JT_NONE; k = jdoc_next(d, c, k)) {
            if (jdoc_str_eq(d, k, "index")) continue;
            buf_append_char(out, ',');
            jdoc_json_append(d, k, out);
            buf_append_char(out, ':');
            jdoc_json_append(d, k + 1, out);
        }
        buf_append_char(out, '}');
    }
    buf_append_char(out, ']');
}

int resp_cache_stream_of(const char *json, size_t len, bool include_usage, buf *out)
{
    jdoc d = JDOC_INIT;
    int rc = -1;
    if (jdoc_parse(&d, json, len, NULL, 0, NULL) != 0 || jdoc_type(&d, 0) != JT_OBJECT) goto end;
    uint32_t choices = jdoc_get(&d, 0, "choices");
    uint32_t ch = jdoc_index(&d, choices, 0);
    uint32_t msg = jdoc_get(&d, ch, "message");
    if (jdoc_type(&d, choices) != JT_ARRAY || d.t[choices].size != 1 ||
        jdoc_type(&d, msg) != JT_OBJECT)
        goto end;
    /* the message */
    chunk_head(&d, out);
    buf_append_str(out, "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"");
    static const char *const parts[] = {"content", "refusal"};
    for (size_t i = 0; i < 2; i++) {
        uint32_t v = jdoc_get(&d, msg, parts[i]);
        if (v == JT_NONE) continue;
        buf_printf(out, ",\"%s\":", parts[i]);
        jdoc_json_append(&d, v, out);
    }
    uint32_t calls = jdoc_get(&d, msg, "tool_calls");
    if (jdoc_type(&d, calls) == JT_ARRAY && d.t[calls].size) delta_tool_calls(&d, calls, out);
    buf_append_str(out, "},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    /* the finish reason */
    chunk_head(&d, out);
    buf_append_str(out,
                   "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":");
    uint32_t fr = jdoc_get(&d, ch, "finish_reason");
    if (fr != JT_NONE)
        jdoc_json_append(&d, fr, out);
    else
        buf_append_str(out, "\"stop\"");
    buf_append_str(out, "}]}\n\n");
    uint32_t usage = jdoc_get(&d, 0, "usage");
    if (include_usage && jdoc_type(&d, usage) == JT_OBJECT) {
        chunk_head(&d, out);
        buf_append_str(out, "\"choices\":[],\"usage\":");
        jdoc_json_append(&d, usage, out);
        buf_append_str(out, "}\n\n");
    }
    buf_append_str(out, "data: [DONE]\n\n");
    rc = 0;
end:
    jdoc_free(&d);
    return rc;
}

/* ------------------------------------------------------------ stream to plain */

typedef struct tool_call {
    buf id, name, args;
} tool_call;

/* What the chunks of one answer add up to. */
typedef struct assembly {
    buf head; /* "id", "created", "model" (and "system_fingerprint") as JSON members */
    bool have_head;
    buf content, refusal;
    bool have_content, have_refusal;
    tool_call calls[MAX_TOOL_CALLS];
    int n_calls;
    buf finish; /* the finish reason as JSON */
    buf usage;  /* the usage object, if a chunk carried one */
} assembly;

static void str_into(const jdoc *d, uint32_t v, buf *to, bool *have)
{
    if (jdoc_type(d, v) != JT_STRING) return;
    jdoc_str_append(d, v, to);
    if (have) *have = true;
}

static int add_tool_call(assembly *a, const jdoc *d, uint32_t tc)
{
    int64_t i;
    if (!jdoc_int64(d, jdoc_get(d, tc, "index"), &i) || i < 0 || i >= MAX_TOOL_CALLS) return -1;
    if (a->n_calls <= i) a->n_calls = (int)i + 1;
    tool_call *t = &a->calls[i];
    uint32_t fn = jdoc_get(d, tc, "function");
    str_into(d, jdoc_get(d, tc, "id"), &t->id, NULL);
    str_into(d, jdoc_get(d, fn, "name"), &t->name, NULL);
    str_into(d, jdoc_get(d, fn, "arguments"), &t->args, NULL);
    return 0;
}

static int add_chunk(assembly *a, const char *json, size_t len)
{
    jdoc d = JDOC_INIT;
    int rc = -1;
    if (jdoc_parse(&d, json, len, NULL, 0, NULL) != 0 || jdoc_type(&d, 0) != JT_OBJECT) goto end;
    if (jdoc_get(&d, 0, "error") != JT_NONE) goto end;
    if (!a->have_head) {
        head_members(&d, "chat.completion", &a->head);
        a->have_head = true;
    }
    uint32_t usage = jdoc_get(&d, 0, "usage");
    if (jdoc_type(&d, usage) == JT_OBJECT) {
        buf_reset(&a->usage);
        jdoc_json_append(&d, usage, &a->usage);
    }
    uint32_t choices = jdoc_get(&d, 0, "choices");
    for (uint32_t ch = jdoc_first(&d, choices); ch != JT_NONE; ch = jdoc_next(&d, choices, ch)) {
        int64_t idx = 0;
        if (jdoc_int64(&d, jdoc_get(&d, ch, "index"), &idx) && idx != 0) goto end; /* n > 1 */
        uint32_t delta = jdoc_get(&d, ch, "delta");
        str_into(&d, jdoc_get(&d, delta, "content"), &a->content, &a->have_content);
        str_into(&d, jdoc_get(&d, delta, "refusal"), &a->refusal, &a->have_refusal);
        uint32_t calls = jdoc_get(&d, delta, "tool_calls");
        for (uint32_t tc = jdoc_first(&d, calls); tc != JT_NONE; tc = jdoc_next(&d, calls, tc))
            if (add_tool_call(a, &d, tc) != 0) goto end;
        uint32_t fr = jdoc_get(&d, ch, "finish_reason");
        if (jdoc_type(&d, fr) == JT_STRING) {
            buf_reset(&a->finish);
            jdoc_json_append(&d, fr, &a->finish);
        }
    }
    rc = 0;
end:
    jdoc_free(&d);
    return rc;
}

static void json_str_or_null(buf *out, const buf *s, bool have)
{
    if (have)
        buf_append_json_str(out, s->data ? s->data : "", s->len);
    else
        buf_append_str(out, "null");
}

static void write_completion(const assembly *a, const usage_record *u, buf *out)
{
    buf_append_char(out, '{');
    buf_append(out, a->head.data, a->head.len);
    buf_append_str(out,
                   "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    json_str_or_null(out, &a->content, a->have_content);
    if (a->have_refusal) {
        buf_append_str(out, ",\"refusal\":");
        json_str_or_null(out, &a->refusal, true);
    }
    if (a->n_calls) buf_append_str(out, ",\"tool_calls\":[");
    for (int i = 0; i < a->n_calls; i++) {
        const tool_call *t = &a->calls[i];
        buf_append_str(out, i ? ",{\"id\":" : "{\"id\":");
        json_str_or_null(out, &t->id, true);
        buf_append_str(out, ",\"type\":\"function\",\"function\":{\"name\":");
        json_str_or_null(out, &t->name, true);
        buf_append_str(out, ",\"arguments\":");
        json_str_or_null(out, &t->args, true);
        buf_append_str(out, "}}");
    }
    if (a->n_calls) buf_append_char(out, ']');
    buf_append_str(out, "},\"logprobs\":null,\"finish_reason\":");
    buf_append(out, a->finish.data, a->finish.len);
    buf_append_str(out, "}],\"usage\":");
    if (a->usage.len) {
        buf_append(out, a->usage.data, a->usage.len);
    } else {
        int64_t in = u->input_uncached + u->cache_read + u->cache_write_5m + u->cache_write_1h;
        buf_printf(out,
                   "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":%lld},"
                   "\"completion_tokens_details\":{\"reasoning_tokens\":%lld}}",
                   (long long)in, (long long)u->output, (long long)(in + u->output),
                   (long long)u->cache_read, (long long)u->reasoning);
    }
    buf_append_char(out, '}');
}

static void assembly_free(assembly *a)
{
    buf *bufs[] = {&a->head, &a->content, &a->refusal, &a->finish, &a->usage};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        buf_free(bufs[i]);
    for (int i = 0; i < a->n_calls; i++) {
        buf_free(&a->calls[i].id);
        buf_free(&a->calls[i].name);
        buf_free(&a->calls[i].args);
    }
}

int resp_cache_completion_of(const char *sse, size_t len, const usage_record *usage, buf *out)
{
    assembly *a = calloc(1, sizeof *a);
    if (!a) return -1;
    int rc = 0;
    bool done = false;
    const char *p = sse, *end = sse + len;
    while (rc == 0 && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        size_t n = (size_t)(line_end - p);
        if (n >= 6 && memcmp(p, "data: ", 6) == 0) {
            if (n == 12 && memcmp(p + 6, "[DONE]", 6) == 0)
                done = true;
            else
                rc = add_chunk(a, p + 6, n - 6);
        }
        p = line_end + 1;
    }
    if (rc == 0 && (!done || !a->have_head || !a->finish.len)) rc = -1;
    if (rc == 0) write_completion(a, usage, out);
    assembly_free(a);
    free(a);
    return rc;
}

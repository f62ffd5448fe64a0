/* Counters and the ring of the last requests, for tests to assert on.
 * The hot path only bumps integers and copies raw bytes into reused buffers;
 * JSON is built when /_mock/stats or /_mock/last asks for it. */
#include "tests/mock/mock.h"

#include <stdlib.h>
#include <string.h>

#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#define RING_SIZE 64
#define BUCKETS 64

struct counter {
    struct counter *next;
    long n;
    char key[];
};

struct counter_map {
    struct counter *b[BUCKETS];
};

/* Raw bytes of one received request. Buffers grow and are reused. */
struct grow {
    char *p;
    size_t len, cap;
};

struct ring_entry {
    enum evhttp_cmd_type method;
    struct grow uri;
    struct grow headers; /* "name\0value\0" pairs */
    struct grow body;
};

static struct {
    long requests;
    struct counter_map by_path, by_model;
    long by_status[1000];
    struct ring_entry ring[RING_SIZE];
    long ring_count; /* total ever recorded; ring index = count % size */
} st;

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static void counter_bump(struct counter_map *m, const char *key)
{
    unsigned i = hash(key) % BUCKETS;
    for (struct counter *c = m->b[i]; c; c = c->next)
        if (!strcmp(c->key, key)) {
            c->n++;
            return;
        }
    size_t len = strlen(key);
    struct counter *c = malloc(sizeof(*c) + len + 1);
    if (!c) return;
    memcpy(c->key, key, len + 1);
    c->n = 1;
    c->next = m->b[i];
    m->b[i] = c;
}

static void counter_clear(struct counter_map *m)
{
    for (int i = 0; i < BUCKETS; i++)
        while (m->b[i]) {
            struct counter *c = m->b[i];
            m->b[i] = c->next;
            free(c);
        }
}

static void counter_render(struct counter_map *m, struct evbuffer *out)
{
    const char *sep = "";
    evbuffer_add(out, "{", 1);
    for (int i = 0; i < BUCKETS; i++)
        for (struct counter *c = m->b[i]; c; c = c->next) {
            evbuffer_add_printf(out, "%s", sep);
            json_cstr(out, c->key);
            evbuffer_add_printf(out, ":%ld", c->n);
            sep = ",";
        }
    evbuffer_add(out, "}", 1);
}

/* Makes room for `more` bytes; returns false (and keeps the old bytes) when
 * memory runs out. */
static bool grow_reserve(struct grow *g, size_t more)
{
    if (g->len + more <= g->cap) return true;
    size_t cap = g->cap ? g->cap : 256;
    while (cap < g->len + more)
        cap *= 2;
    char *np = realloc(g->p, cap);
    if (!np) return false;
    g->p = np;
    g->cap = cap;
    return true;
}

static void grow_add(struct grow *g, const void *p, size_t len)
{
    if (!grow_reserve(g, len)) return;
    memcpy(g->p + g->len, p, len);
    g->len += len;
}

static void ring_record(struct evhttp_request *req)
{
    struct ring_entry *e = &st.ring[st.ring_count++ % RING_SIZE];
    e->method = evhttp_request_get_command(req);
    e->uri.len = e->headers.len = e->body.len = 0;
    const char *uri = evhttp_request_get_uri(req);
    grow_add(&e->uri, uri, strlen(uri));
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, evhttp_request_get_input_headers(req), next)
    {
        grow_add(&e->headers, kv->key, strlen(kv->key) + 1);
        grow_add(&e->headers, kv->value, strlen(kv->value) + 1);
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t blen = evbuffer_get_length(in);
    /* a batch input upload can be 200 MB: its body is not kept */
    if (!strncmp(uri, "/v1/files", 9)) blen = 0;
    if (blen && grow_reserve(&e->body, blen))
        e->body.len = evbuffer_copyout(in, e->body.p, blen) < 0 ? 0 : blen;
}

void stats_record_request(struct evhttp_request *req, const char *path)
{
    st.requests++;
    counter_bump(&st.by_path, path);
    ring_record(req);
}

void stats_record_model(const char *model)
{
    counter_bump(&st.by_model, model);
}

void stats_record_status(int status)
{
    if (status >= 0 && status < 1000) st.by_status[status]++;
}

void stats_reset(void)
{
    st.requests = 0;
    counter_clear(&st.by_path);
    counter_clear(&st.by_model);
    memset(st.by_status, 0, sizeof(st.by_status));
    st.ring_count = 0;
}

void stats_free(void)
{
    stats_reset();
    for (int i = 0; i < RING_SIZE; i++) {
        free(st.ring[i].uri.p);
        free(st.ring[i].headers.p);
        free(st.ring[i].body.p);
    }
    memset(st.ring, 0, sizeof(st.ring));
}

void stats_render(struct evbuffer *out, int in_flight)
{
    evbuffer_add_printf(out, "{\"requests\":%ld,\"by_path\":", st.requests);
    counter_render(&st.by_path, out);
    ADD_LIT(out, ",\"by_model\":");
    counter_render(&st.by_model, out);
    ADD_LIT(out, ",\"by_status\":{");
    const char *sep = "";
    for (int i = 0; i < 1000; i++)
        if (st.by_status[i]) {
            evbuffer_add_printf(out, "%s\"%d\":%ld", sep, i, st.by_status[i]);
            sep = ",";
        }
    evbuffer_add_printf(out, "},\"in_flight\":%d", in_flight);
    batch_stats_render(out);
    ADD_LIT(out, "}\n");
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    default:
        return "OTHER";
    }
}

/* The body as parsed JSON when it is JSON, else as a string. */
static void render_body(const struct grow *b, struct evbuffer *out)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = b->len ? json_tokener_parse_ex(tok, b->p, (int)b->len) : NULL;
    bool whole = o && json_tokener_get_parse_end(tok) == b->len;
    if (whole)
        evbuffer_add_printf(out, "%s",
                            json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
    else
        json_str(out, b->len ? b->p : "", b->len);
    json_object_put(o);
    json_tokener_free(tok);
}

static void render_headers(const struct grow *h, struct evbuffer *out)
{
    const char *sep = "";
    evbuffer_add(out, "{", 1);
    for (size_t i = 0; i < h->len;) {
        const char *name = h->p + i;
        const char *value = name + strlen(name) + 1;
        char lower[256];
        size_t n = 0;
        for (; name[n] && n < sizeof(lower) - 1; n++)
            lower[n] = (char)(name[n] >= 'A' && name[n] <= 'Z' ? name[n] + 32 : name[n]);
        evbuffer_add_printf(out, "%s", sep);
        json_str(out, lower, n);
        evbuffer_add(out, ":", 1);
        json_cstr(out, value);
        sep = ",";
        i = (size_t)(value - h->p) + strlen(value) + 1;
    }
    evbuffer_add(out, "}", 1);
}

/* The last `n` requests, oldest first. */
void stats_render_last(struct evbuffer *out, int n)
{
    long have = st.ring_count < RING_SIZE ? st.ring_count : RING_SIZE;
    if (n > have) n = (int)have;
    evbuffer_add(out, "[", 1);
    for (long i = st.ring_count - n; i < st.ring_count; i++) {
        const struct ring_entry *e = &st.ring[i % RING_SIZE];
        evbuffer_add_printf(out,
                            "%s{\"method\":\"%s\",\"path\":", i == st.ring_count - n ? "" : ",",
                            method_name(e->method));
        json_str(out, e->uri.p ? e->uri.p : "", e->uri.len);
        ADD_LIT(out, ",\"headers\":");
        render_headers(&e->headers, out);
        ADD_LIT(out, ",\"body\":");
        render_body(&e->body, out);
        evbuffer_add(out, "}", 1);
    }
    evbuffer_add(out, "]\n", 2);
}

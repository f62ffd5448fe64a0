/* Test helpers: a canon_request built from a JSON string by the server's
 * own validator (router/canon.c), json-c getters for checking what an
 * adapter produced, and a stream sink. Header-only so each provider test
 * can include it. */
#ifndef BRIDLE_TEST_CANON_FIXTURE_H
#define BRIDLE_TEST_CANON_FIXTURE_H

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jtok.h"
#include "providers/provider.h"
#include "router/canon.h"

static inline const char *fixture_get_string(json_object *obj, const char *key)
{
    json_object *v = NULL;
    if (json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

static inline int64_t fixture_get_int(json_object *obj, const char *key)
{
    json_object *v = NULL;
    if (json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_int))
        return json_object_get_int64(v);
    return -1;
}

/* What fixture_canon_parse allocates; doc first, so the request's doc
 * pointer finds it again. */
typedef struct fixture_canon {
    jdoc doc;
    buf strings;
    char *body;
} fixture_canon;

/* A NUL-terminated copy of string member key of obj, kept in h, or NULL. */
static inline const char *fixture_keep(fixture_canon *h, uint32_t obj, const char *key)
{
    uint32_t v = jdoc_get(&h->doc, obj, key);
    if (jdoc_type(&h->doc, v) != JT_STRING) return NULL;
    size_t at = h->strings.len;
    jdoc_str_append(&h->doc, v, &h->strings);
    buf_append_char(&h->strings, '\0');
    return h->strings.data + at;
}

/* The fields canon would read, for a body canon refuses (a test of what an
 * adapter does with stream_options without stream, or empty messages). */
static inline void fixture_canon_lenient(fixture_canon *h, size_t len, canon_request *r)
{
    const jdoc *d = &h->doc;
    memset(r, 0, sizeof *r);
    jdoc_parse(&h->doc, h->body, len, NULL, 0, NULL);
    buf_reserve(&h->strings, len + 16); /* never moves: kept strings stay valid */
    r->body = h->body;
    r->body_len = len;
    r->doc = d;
    r->model = fixture_keep(h, 0, "model");
    r->stream = jdoc_type(d, jdoc_get(d, 0, "stream")) == JT_TRUE;
    r->include_usage =
        jdoc_type(d, jdoc_get(d, jdoc_get(d, 0, "stream_options"), "include_usage")) == JT_TRUE;
    if (!jdoc_int64(d, jdoc_get(d, 0, "max_completion_tokens"), &r->max_tokens) &&
        !jdoc_int64(d, jdoc_get(d, 0, "max_tokens"), &r->max_tokens))
        r->max_tokens = -1;
    uint32_t type = jdoc_get(d, jdoc_get(d, 0, "response_format"), "type");
    r->json_mode = jdoc_str_eq(d, type, "json_object") || jdoc_str_eq(d, type, "json_schema");
    r->user = fixture_keep(h, 0, "user");
    uint32_t md = jdoc_get(d, 0, "metadata");
    r->task = fixture_keep(h, md, "task");
    r->agent = fixture_keep(h, md, "agent");
    r->feature = fixture_keep(h, md, "feature");
    r->team = fixture_keep(h, md, "team");
}

/* A canonical request exactly as the server builds it: canon_parse_chat
 * over json (the one parse; adapters read only its tokens). A body canon
 * refuses still gets its tokens and the fields canon would read
 * (fixture_canon_lenient). Free with fixture_canon_release(). */
static inline canon_request fixture_canon_parse(const char *json)
{
    fixture_canon *h = calloc(1, sizeof *h);
    size_t len = strlen(json);
    h->body = strdup(json);
    canon_request r;
    canon_error err;
    if (canon_parse_chat(h->body, len, &h->doc, &h->strings, &r, &err) != 0)
        fixture_canon_lenient(h, len, &r);
    return r;
}

static inline void fixture_canon_release(canon_request *r)
{
    fixture_canon *h = (fixture_canon *)r->doc;
    if (!h) return;
    jdoc_free(&h->doc);
    buf_free(&h->strings);
    free(h->body);
    free(h);
    memset(r, 0, sizeof *r);
}

/* Collects what a stream decoder sends to its sink. */
typedef struct fixture_chunks {
    int n;
    char *chunk[64];
} fixture_chunks;

static inline void fixture_chunk_collect(void *ctx, const char *json, size_t len)
{
    fixture_chunks *c = ctx;
    if (c->n < 64) c->chunk[c->n++] = strndup(json, len);
}

static inline void fixture_chunks_free(fixture_chunks *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->chunk[i]);
    c->n = 0;
}

/* Feeds one event (data only) to a decoder. */
static inline int fixture_feed(const provider_ops *ops, void *st, const char *data,
                               stream_result *res, fixture_chunks *c)
{
    stream_event ev = {NULL, data, strlen(data)};
    stream_sink sink = {c, fixture_chunk_collect};
    return ops->stream_event(st, &ev, res, &sink);
}

#endif

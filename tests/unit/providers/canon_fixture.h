/* Test helper: builds a canon_request from a JSON string the way the
 * server's validator fills it (model, messages, stream, include_usage,
 * max_tokens, json_mode, user, and the metadata tags). Header-only so each
 * provider test can include it. */
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

/* Returns 0, or -1 when json is not an object (nothing to free then). The
 * caller frees with fixture_canon_free(). */
static inline int fixture_canon_from_json(const char *json, canon_request *out)
{
    memset(out, 0, sizeof *out);
    json_object *root = json_tokener_parse(json), *v = NULL;
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return -1;
    }
    out->root = root;
    /* the raw body and its tokens, as the server's validator keeps them */
    out->body = strdup(json);
    out->body_len = strlen(json);
    jdoc *doc = calloc(1, sizeof *doc);
    jdoc_parse(doc, out->body, out->body_len, NULL, 0, NULL);
    out->doc = doc;
    out->model = fixture_get_string(root, "model");
    json_object_object_get_ex(root, "messages", &out->messages);
    out->stream = json_object_object_get_ex(root, "stream", &v) && json_object_get_boolean(v);
    json_object *so = NULL;
    if (json_object_object_get_ex(root, "stream_options", &so) &&
        json_object_object_get_ex(so, "include_usage", &v))
        out->include_usage = json_object_get_boolean(v);
    out->max_tokens = fixture_get_int(root, "max_completion_tokens");
    if (out->max_tokens < 0) out->max_tokens = fixture_get_int(root, "max_tokens");
    json_object *rf = NULL;
    if (json_object_object_get_ex(root, "response_format", &rf)) {
        const char *type = fixture_get_string(rf, "type");
        out->json_mode =
            type && (strcmp(type, "json_object") == 0 || strcmp(type, "json_schema") == 0);
    }
    out->user = fixture_get_string(root, "user");
    json_object *md = NULL;
    if (json_object_object_get_ex(root, "metadata", &md)) {
        out->task = fixture_get_string(md, "task");
        out->agent = fixture_get_string(md, "agent");
        out->feature = fixture_get_string(md, "feature");
        out->team = fixture_get_string(md, "team");
    }
    return 0;
}

static inline void fixture_canon_free(canon_request *r)
{
    json_object_put(r->root);
    free((char *)r->body);
    if (r->doc) {
        jdoc_free((jdoc *)r->doc);
        free((jdoc *)r->doc);
    }
    memset(r, 0, sizeof *r);
}

/* What fixture_canon_parse allocates; doc first, so the request's doc
 * pointer finds it again. */
typedef struct fixture_canon {
    jdoc doc;
    buf strings;
    char *body;
} fixture_canon;

/* A canonical request exactly as the server builds it: canon_parse_chat
 * over json (the one parse; adapters read only its tokens). A body canon
 * refuses (a stream test's empty messages) still gets its tokens, model,
 * stream flag and max_tokens -1. Free with fixture_canon_release(). */
static inline canon_request fixture_canon_parse(const char *json)
{
    fixture_canon *h = calloc(1, sizeof *h);
    size_t len = strlen(json);
    h->body = strdup(json);
    canon_request r;
    canon_error err;
    if (canon_parse_chat(h->body, len, &h->doc, &h->strings, &r, &err) != 0) {
        memset(&r, 0, sizeof r);
        r.max_tokens = -1;
        jdoc_parse(&h->doc, h->body, len, NULL, 0, NULL);
        r.body = h->body;
        r.body_len = len;
        r.doc = &h->doc;
        r.stream = jdoc_type(&h->doc, jdoc_get(&h->doc, 0, "stream")) == JT_TRUE;
    }
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

/* Anthropic's Message Batches API (wire-formats.md section 3.6): create with
 * the requests inline, retrieve, list, cancel, delete, results as JSONL. */
#include "tests/mock/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_REQUESTS 100000 /* Anthropic's limit per batch */
#define WINDOW_S (24 * 3600)

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static void send_error(struct evhttp_request *req, int status, const char *msg)
{
    char rid[48];
    api_new_id(rid, sizeof(rid), "req_");
    struct evbuffer *b = evbuffer_new();
    ADD_LIT(b, "{\"type\":\"error\",\"error\":{\"type\":");
    json_cstr(b, error_type(status));
    ADD_LIT(b, ",\"message\":");
    json_cstr(b, msg);
    ADD_LIT(b, "},\"request_id\":");
    json_cstr(b, rid);
    ADD_LIT(b, "}\n");
    evhttp_add_header(evhttp_request_get_output_headers(req), "request-id", rid);
    api_send(req, status, "application/json", b);
    evbuffer_free(b);
}

/* ---- results ------------------------------------------------------------- */

static void result_head(struct batch *b, uint32_t i)
{
    ADD_LIT(b->out, "{\"custom_id\":");
    json_str(b->out, b->cids.p + b->lines[i].cid, b->lines[i].cid_len);
    ADD_LIT(b->out, ",\"result\":{\"type\":");
}

static void anthropic_record(struct batch *b, uint32_t i, const struct mock_answer *a,
                             const char *body, size_t len)
{
    result_head(b, i);
    if (a->status == 200) {
        ADD_LIT(b->out, "\"succeeded\",\"message\":");
        b->succeeded++;
        if (a->has_usage) {
            b->in_tokens += a->use.prompt;
            b->cached_tokens += a->use.cached;
            b->out_tokens += a->use.completion;
        }
    } else {
        ADD_LIT(b->out, "\"errored\",\"error\":");
        b->errored++;
    }
    evbuffer_add(b->out, body, len);
    ADD_LIT(b->out, "}}\n");
}

static void anthropic_unrun(struct batch *b, uint32_t i, bool expired)
{
    result_head(b, i);
    if (expired)
        ADD_LIT(b->out, "\"expired\"}}\n");
    else
        ADD_LIT(b->out, "\"canceled\"}}\n");
}

static void anthropic_finish(struct batch *b)
{
    /* the results are b->out already */
}

static json_object *anthropic_body(struct batch *b, uint32_t i, json_tokener *tok,
                                   json_object **root)
{
    json_tokener_reset(tok);
    *root = json_tokener_parse_ex(tok, b->text.p + b->lines[i].off, (int)b->lines[i].len);
    return *root;
}

const struct batch_ops batch_anthropic_ops = {
    .d = D_ANTHROPIC,
    .validate = NULL, /* the requests were checked at creation */
    .record = anthropic_record,
    .unrun = anthropic_unrun,
    .finish = anthropic_finish,
    .body = anthropic_body,
};

/* ---- the MessageBatch object --------------------------------------------- */

static void rfc3339(struct evbuffer *out, const char *name, long t)
{
    evbuffer_add_printf(out, ",\"%s\":", name);
    if (!t) {
        ADD_LIT(out, "null");
        return;
    }
    char buf[40];
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, sizeof(buf), "\"%Y-%m-%dT%H:%M:%SZ\"", &tm);
    evbuffer_add(out, buf, strlen(buf));
}

static bool ended(const struct batch *b)
{
    return b->state == BS_COMPLETED || b->state == BS_CANCELLED || b->state == BS_EXPIRED;
}

static void results_url(struct evhttp_request *req, const struct batch *b, struct evbuffer *out)
{
    const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    char url[512];
    snprintf(url, sizeof(url), "http://%s/v1/messages/batches/%s/results",
             host && *host ? host : "127.0.0.1", b->id);
    json_cstr(out, url);
}

static void batch_object(struct evhttp_request *req, const struct batch *b, struct evbuffer *out)
{
    ADD_LIT(out, "{\"id\":");
    json_cstr(out, b->id);
    evbuffer_add_printf(out, ",\"type\":\"message_batch\",\"processing_status\":\"%s\"",
                        ended(b)                    ? "ended"
                        : b->state == BS_CANCELLING ? "canceling"
                                                    : "in_progress");
    ADD_NUM(out, ",\"request_counts\":{\"processing\":", (long)batch_pending(b));
    ADD_NUM(out, ",\"succeeded\":", b->succeeded);
    ADD_NUM(out, ",\"errored\":", b->errored);
    ADD_NUM(out, ",\"canceled\":", b->canceled);
    ADD_NUM(out, ",\"expired\":", b->expired);
    ADD_LIT(out, "}");
    rfc3339(out, "ended_at", ended(b) ? b->ended_at : 0);
    rfc3339(out, "created_at", b->created_at);
    rfc3339(out, "expires_at", b->created_at + WINDOW_S);
    rfc3339(out, "archived_at", 0);
    rfc3339(out, "cancel_initiated_at", b->cancelling_at);
    ADD_LIT(out, ",\"results_url\":");
    if (ended(b))
        results_url(req, b, out);
    else
        ADD_LIT(out, "null");
    ADD_LIT(out, "}");
}

static void send_batch(struct evhttp_request *req, const struct batch *b)
{
    struct evbuffer *out = evbuffer_new();
    batch_object(req, b, out);
    ADD_LIT(out, "\n");
    api_send(req, 200, "application/json", out);
    evbuffer_free(out);
}

/* ---- endpoints ----------------------------------------------------------- */

static bool custom_id_ok(const char *s, size_t len)
{
    if (len < 1 || len > 64) return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* Adds every request as a line; returns an error message (in msg) or NULL. */
static const char *add_requests(struct batch *b, json_object *reqs, char *msg, size_t size)
{
    size_t n = json_object_array_length(reqs);
    if (n < 1 || n > MAX_REQUESTS) {
        snprintf(msg, size, "requests: need 1 to %d requests, got %zu", MAX_REQUESTS, n);
        return msg;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *r = json_object_array_get_idx(reqs, i), *cid = get(r, "custom_id"),
                    *params = get(r, "params");
        if (!cid || !json_object_is_type(cid, json_type_string) ||
            !custom_id_ok(json_object_get_string(cid), (size_t)json_object_get_string_len(cid))) {
            snprintf(msg, size,
                     "requests.%zu.custom_id: need a string of 1 to 64 characters from "
                     "[a-zA-Z0-9_-]",
                     i);
            return msg;
        }
        if (!params || !json_object_is_type(params, json_type_object)) {
            snprintf(msg, size, "requests.%zu.params: Field required (the Messages request body)",
                     i);
            return msg;
        }
        size_t len;
        const char *text = json_object_to_json_string_length(params, JSON_C_TO_STRING_PLAIN, &len);
        if (batch_add_line(b, text, len, json_object_get_string(cid),
                           (size_t)json_object_get_string_len(cid)) < 0)
            return "mock: out of memory";
    }
    return NULL;
}

static char dup_msg[256];

static void on_duplicate(struct batch *b, uint32_t dup, uint32_t first)
{
    if (dup_msg[0]) return; /* the first one is enough */
    snprintf(dup_msg, sizeof(dup_msg),
             "requests.%u.custom_id: '%s' is already the custom_id of requests.%u; each request "
             "in a batch needs its own custom_id",
             dup, b->cids.p + b->lines[dup].cid, first);
}

static void create(struct evhttp_request *req)
{
    int refuse = batch_take_fail_create();
    if (refuse) return send_error(req, refuse, "mock: batch creation refused (fail_create knob)");
    json_object *root = api_parse_json(req), *reqs = get(root, "requests");
    char msg[256];
    const char *err = !root ? "The body must be a JSON object: {\"requests\": [...]}"
                      : !reqs || !json_object_is_type(reqs, json_type_array)
                          ? "requests: Field required (an array of {custom_id, params})"
                          : NULL;
    struct batch *b = err ? NULL : batch_new(&batch_anthropic_ops, "msgbatch_", false);
    if (!err && !b) err = "mock: out of memory";
    if (!err) err = add_requests(b, reqs, msg, sizeof(msg));
    dup_msg[0] = '\0';
    if (!err && batch_each_duplicate(b, on_duplicate) != 0)
        err = dup_msg[0] ? dup_msg : "mock: out of memory";
    json_object_put(root);
    if (err) {
        if (b) batch_discard(b);
        return send_error(req, strncmp(err, "mock: out", 9) ? 400 : 500, err);
    }
    batch_start(b);
    send_batch(req, b);
}

/* Newest first; after_id pages to older batches, before_id to newer ones. */
static void list(struct evhttp_request *req)
{
    char v[64] = "", after[64] = "", before[64] = "";
    int limit = api_query(req, "limit", v, sizeof(v)) ? atoi(v) : 20;
    if (limit < 1 || limit > 1000) limit = limit < 1 ? 1 : 1000;
    api_query(req, "after_id", after, sizeof(after));
    api_query(req, "before_id", before, sizeof(before));
    /* the candidates, newest first: after after_id, before before_id */
    const struct batch *page[1000];
    int n = 0;
    bool more = false, in = !after[0];
    for (const struct batch *b = batch_newest(); b; b = b->next) {
        if (b->ops->d != D_ANTHROPIC) continue;
        if (!in) {
            in = !strcmp(b->id, after);
            continue;
        }
        if (before[0] && !strcmp(b->id, before)) break;
        if (n == limit) {
            if (!before[0]) {
                more = true;
                break;
            }
            memmove(page, page + 1, sizeof(page[0]) * (size_t)(n - 1)); /* keep the nearest */
            n--;
            more = true;
        }
        page[n++] = b;
    }
    struct evbuffer *out = evbuffer_new();
    ADD_LIT(out, "{\"data\":[");
    for (int i = 0; i < n; i++) {
        if (i) ADD_LIT(out, ",");
        batch_object(req, page[i], out);
    }
    evbuffer_add_printf(out, "],\"has_more\":%s,\"first_id\":", more ? "true" : "false");
    if (n)
        json_cstr(out, page[0]->id);
    else
        ADD_LIT(out, "null");
    ADD_LIT(out, ",\"last_id\":");
    if (n)
        json_cstr(out, page[n - 1]->id);
    else
        ADD_LIT(out, "null");
    ADD_LIT(out, "}\n");
    api_send(req, 200, "application/json", out);
    evbuffer_free(out);
}

static void results(struct evhttp_request *req, struct batch *b)
{
    if (!ended(b)) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "Batch %s is still processing; its results are available once "
                 "processing_status is 'ended' (results_url is set then).",
                 b->id);
        return send_error(req, 400, msg);
    }
    struct evbuffer *out = evbuffer_new();
    size_t len = evbuffer_get_length(b->out);
    evbuffer_add(out, len ? evbuffer_pullup(b->out, -1) : (const unsigned char *)"", len);
    api_send(req, 200, "application/x-jsonl", out);
    evbuffer_free(out);
}

static void cancel(struct evhttp_request *req, struct batch *b)
{
    if (!batch_cancel(b) && b->state != BS_CANCELLING) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "Batch %s has already ended; only a batch in_progress can be "
                 "canceled.",
                 b->id);
        return send_error(req, 400, msg);
    }
    send_batch(req, b);
}

static void delete_batch(struct evhttp_request *req, struct batch *b)
{
    if (!ended(b)) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "Batch %s is still processing; cancel it and wait for it to "
                 "end before deleting it.",
                 b->id);
        return send_error(req, 400, msg);
    }
    struct evbuffer *out = evbuffer_new();
    ADD_LIT(out, "{\"id\":");
    json_cstr(out, b->id);
    ADD_LIT(out, ",\"type\":\"message_batch_deleted\"}\n");
    batch_delete(b);
    api_send(req, 200, "application/json", out);
    evbuffer_free(out);
}

bool batch_anthropic_route(struct evhttp_request *req, const char *path)
{
    static const char prefix[] = "/v1/messages/batches";
    if (strncmp(path, prefix, sizeof(prefix) - 1)) return false;
    const char *rest = path + sizeof(prefix) - 1;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (!*rest) {
        if (cmd == EVHTTP_REQ_POST) return create(req), true;
        if (cmd == EVHTTP_REQ_GET) return list(req), true;
        return false;
    }
    if (*rest != '/' || !rest[1]) return false;
    const char *id = rest + 1, *slash = strchr(id, '/');
    size_t id_len = slash ? (size_t)(slash - id) : strlen(id);
    const char *tail = slash ? slash : "";
    bool ok = (cmd == EVHTTP_REQ_GET && (!*tail || !strcmp(tail, "/results"))) ||
              (cmd == EVHTTP_REQ_POST && !strcmp(tail, "/cancel")) ||
              (cmd == EVHTTP_REQ_DELETE && !*tail);
    if (!ok) return false;
    struct batch *b = batch_find(D_ANTHROPIC, id, id_len);
    if (!b) {
        char msg[120];
        snprintf(msg, sizeof(msg), "No message batch with id '%.*s'.",
                 (int)(id_len > 64 ? 64 : id_len), id);
        send_error(req, 404, msg);
    } else if (!strcmp(tail, "/results")) {
        results(req, b);
    } else if (!strcmp(tail, "/cancel")) {
        cancel(req, b);
    } else if (cmd == EVHTTP_REQ_DELETE) {
        delete_batch(req, b);
    } else {
        send_batch(req, b);
    }
    return true;
}

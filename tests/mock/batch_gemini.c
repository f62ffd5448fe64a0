/* Gemini's batch mode with inlined requests: create at
 * models/{model}:batchGenerateContent, an Operation named batches/{id} that
 * GET batches/{id} answers (with the inlined responses once done), and
 * batches/{id}:cancel. Results keep the input's order, as Gemini's do, and
 * carry each request's metadata back. */
#include "tests/mock/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REQUESTS 100000

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *status_word(int status)
{
    switch (status) {
    case 400:
        return "INVALID_ARGUMENT";
    case 401:
        return "UNAUTHENTICATED";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 503:
        return "UNAVAILABLE";
    case 504:
        return "DEADLINE_EXCEEDED";
    default:
        return status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION";
    }
}

static void send_error(struct evhttp_request *req, int status, const char *msg)
{
    struct evbuffer *b = evbuffer_new();
    ADD_NUM(b, "{\"error\":{\"code\":", status);
    ADD_LIT(b, ",\"message\":");
    json_cstr(b, msg);
    evbuffer_add_printf(b, ",\"status\":\"%s\"}}\n", status_word(status));
    api_send(req, status, "application/json", b);
    evbuffer_free(b);
}

/* ---- results ------------------------------------------------------------- */

/* The item ends with the request's metadata, when it had one. */
static void item_tail(struct batch *b, uint32_t i, struct evbuffer *item)
{
    if (b->lines[i].cid_len) {
        ADD_LIT(item, ",\"metadata\":{\"key\":");
        json_str(item, b->cids.p + b->lines[i].cid, b->lines[i].cid_len);
        ADD_LIT(item, "}");
    }
    ADD_LIT(item, "}");
}

static void keep_item(struct batch *b, uint32_t i, struct evbuffer *item)
{
    size_t len = evbuffer_get_length(item);
    long off = gbuf_add(&b->res, (const char *)evbuffer_pullup(item, -1), len);
    if (off >= 0 && b->res_off) b->res_off[i] = (size_t)off + 1;
}

/* A failed line's item holds the live error body's "error" object. */
static void gemini_record(struct batch *b, uint32_t i, const struct mock_answer *a,
                          const char *body, size_t len)
{
    struct evbuffer *item = evbuffer_new();
    if (a->status == 200) {
        ADD_LIT(item, "{\"response\":");
        evbuffer_add(item, body, len);
        b->succeeded++;
        if (a->has_usage) {
            b->in_tokens += a->use.prompt;
            b->out_tokens += a->use.completion;
        }
    } else {
        json_object *e = json_tokener_parse(body), *inner = get(e, "error");
        ADD_LIT(item, "{\"error\":");
        if (inner)
            evbuffer_add_printf(item, "%s",
                                json_object_to_json_string_ext(inner, JSON_C_TO_STRING_PLAIN));
        else
            evbuffer_add(item, body, len);
        json_object_put(e);
        b->errored++;
    }
    item_tail(b, i, item);
    keep_item(b, i, item);
    evbuffer_free(item);
}

static void gemini_unrun(struct batch *b, uint32_t i, bool expired)
{
    /* cancelled or expired lines have no item */
}

static void gemini_finish(struct batch *b)
{
    /* the items are kept per line; rendered in order by batch_object */
}

static json_object *gemini_body(struct batch *b, uint32_t i, json_tokener *tok, json_object **root)
{
    json_tokener_reset(tok);
    *root = json_tokener_parse_ex(tok, b->text.p + b->lines[i].off, (int)b->lines[i].len);
    return *root;
}

const struct batch_ops batch_gemini_ops = {
    .d = D_GEMINI,
    .validate = NULL, /* checked at creation; PENDING until the next loop turn */
    .record = gemini_record,
    .unrun = gemini_unrun,
    .finish = gemini_finish,
    .body = gemini_body,
};

/* ---- the Operation ------------------------------------------------------- */

static const char *state_name(enum bstate s)
{
    switch (s) {
    case BS_VALIDATING:
        return "BATCH_STATE_PENDING";
    case BS_COMPLETED:
        return "BATCH_STATE_SUCCEEDED";
    case BS_CANCELLED:
        return "BATCH_STATE_CANCELLED";
    case BS_EXPIRED:
        return "BATCH_STATE_EXPIRED";
    case BS_FAILED:
        return "BATCH_STATE_FAILED";
    default: /* in progress, and cancelling until it has stopped */
        return "BATCH_STATE_RUNNING";
    }
}

static bool done(const struct batch *b)
{
    return b->state == BS_COMPLETED || b->state == BS_CANCELLED || b->state == BS_EXPIRED;
}

static void count_field(struct evbuffer *out, const char *name, long v)
{
    evbuffer_add_printf(out, "\"%s\":\"%ld\"", name, v); /* int64 as a string (proto JSON) */
}

static void batch_meta(const struct batch *b, struct evbuffer *out)
{
    ADD_LIT(out, "{\"@type\":\"type.googleapis.com/"
                 "google.ai.generativelanguage.v1main.GenerateContentBatch\",\"model\":");
    char model[MOCK_MODEL_MAX + 8];
    snprintf(model, sizeof(model), "models/%s", b->model);
    json_cstr(out, model);
    ADD_LIT(out, ",\"displayName\":");
    json_cstr(out, b->metadata ? b->metadata : "");
    ADD_LIT(out, ",\"createTime\":");
    batch_rfc3339(out, b->created_at);
    if (done(b)) {
        ADD_LIT(out, ",\"endTime\":");
        batch_rfc3339(out, b->ended_at);
    }
    ADD_LIT(out, ",\"batchStats\":{");
    count_field(out, "requestCount", (long)b->n);
    ADD_LIT(out, ",");
    count_field(out, "successfulRequestCount", b->succeeded);
    ADD_LIT(out, ",");
    count_field(out, "failedRequestCount", b->errored);
    ADD_LIT(out, ",");
    count_field(out, "pendingRequestCount", (long)batch_pending(b));
    evbuffer_add_printf(out, "},\"state\":\"%s\",\"name\":\"batches/%s\"}", state_name(b->state),
                        b->id);
}

static void batch_object(const struct batch *b, struct evbuffer *out)
{
    evbuffer_add_printf(out, "{\"name\":\"batches/%s\",\"metadata\":", b->id);
    batch_meta(b, out);
    if (done(b)) {
        ADD_LIT(out, ",\"done\":true,\"response\":{\"@type\":\"type.googleapis.com/"
                     "google.ai.generativelanguage.v1main.GenerateContentBatchOutput\","
                     "\"inlinedResponses\":{\"inlinedResponses\":[");
        bool first = true;
        for (uint32_t i = 0; i < b->n; i++) {
            if (!b->res_off || !b->res_off[i]) continue;
            if (!first) ADD_LIT(out, ",");
            first = false;
            const char *item = b->res.p + b->res_off[i] - 1;
            evbuffer_add(out, item, strlen(item));
        }
        ADD_LIT(out, "]}}");
    }
    ADD_LIT(out, "}");
}

static void send_batch(struct evhttp_request *req, const struct batch *b)
{
    struct evbuffer *out = evbuffer_new();
    batch_object(b, out);
    ADD_LIT(out, "\n");
    api_send(req, 200, "application/json", out);
    evbuffer_free(out);
}

/* ---- endpoints ----------------------------------------------------------- */

/* Adds every inlined request; returns an error message (in msg) or NULL. */
static const char *add_requests(struct batch *b, json_object *reqs, char *msg, size_t size)
{
    size_t n = json_object_array_length(reqs);
    if (n < 1 || n > MAX_REQUESTS) {
        snprintf(msg, size, "batch.input_config.requests.requests: need 1 to %d, got %zu",
                 MAX_REQUESTS, n);
        return msg;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *r = json_object_array_get_idx(reqs, i), *rq = get(r, "request"),
                    *key = get(get(r, "metadata"), "key");
        if (!rq || !json_object_is_type(rq, json_type_object)) {
            snprintf(msg, size,
                     "batch.input_config.requests.requests[%zu].request: a GenerateContentRequest "
                     "object is required",
                     i);
            return msg;
        }
        const char *k =
            key && json_object_is_type(key, json_type_string) ? json_object_get_string(key) : "";
        size_t len;
        const char *text = json_object_to_json_string_length(rq, JSON_C_TO_STRING_PLAIN, &len);
        if (batch_add_line(b, text, len, k, strlen(k)) < 0) return "mock: out of memory";
    }
    return NULL;
}

void batch_gemini_create(struct evhttp_request *req, const char *model)
{
    int refuse = batch_take_fail_create();
    if (refuse) return send_error(req, refuse, "mock: batch creation refused (fail_create knob)");
    json_object *root = api_parse_json(req), *batch = get(root, "batch");
    json_object *reqs = get(get(get(batch, "input_config"), "requests"), "requests");
    char msg[256];
    const char *err = !batch || !json_object_is_type(batch, json_type_object)
                          ? "batch: required (an object with input_config)"
                      : !reqs || !json_object_is_type(reqs, json_type_array)
                          ? "batch.input_config.requests.requests: required (the inlined "
                            "requests; the mock does not read input files)"
                          : NULL;
    struct batch *b = err ? NULL : batch_new(&batch_gemini_ops, "", true);
    if (!err && !b) err = "mock: out of memory";
    if (!err) err = add_requests(b, reqs, msg, sizeof(msg));
    if (!err && !(b->res_off = calloc(b->n, sizeof(*b->res_off)))) err = "mock: out of memory";
    if (err) {
        if (b) batch_discard(b);
        json_object_put(root);
        return send_error(req, strncmp(err, "mock: out", 9) ? 400 : 500, err);
    }
    snprintf(b->model, sizeof(b->model), "%s", model);
    json_object *dn = get(batch, "display_name");
    if (!dn) dn = get(batch, "displayName");
    if (dn && json_object_is_type(dn, json_type_string))
        b->metadata = strdup(json_object_get_string(dn));
    json_object_put(root);
    batch_start(b);
    send_batch(req, b);
}

static void cancel(struct evhttp_request *req, struct batch *b)
{
    if (!batch_cancel(b) && b->state != BS_CANCELLING)
        return send_error(req, 400,
                          "The batch has already ended; only a pending or running "
                          "batch can be cancelled.");
    struct evbuffer *out = evbuffer_new();
    ADD_LIT(out, "{}\n");
    api_send(req, 200, "application/json", out);
    evbuffer_free(out);
}

bool batch_gemini_route(struct evhttp_request *req, const char *path)
{
    static const char prefix[] = "/v1beta/batches/";
    if (strncmp(path, prefix, sizeof(prefix) - 1) || !path[sizeof(prefix) - 1]) return false;
    const char *id = path + sizeof(prefix) - 1, *colon = strchr(id, ':');
    size_t id_len = colon ? (size_t)(colon - id) : strlen(id);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool is_cancel = colon && !strcmp(colon, ":cancel");
    if ((colon && !is_cancel) || (is_cancel && cmd != EVHTTP_REQ_POST) ||
        (!colon && cmd != EVHTTP_REQ_GET))
        return false;
    struct batch *b = batch_find(D_GEMINI, id, id_len);
    if (!b) {
        char msg[120];
        snprintf(msg, sizeof(msg), "Batch batches/%.*s not found.",
                 (int)(id_len > 64 ? 64 : id_len), id);
        send_error(req, 404, msg);
    } else if (is_cancel) {
        cancel(req, b);
    } else {
        send_batch(req, b);
    }
    return true;
}

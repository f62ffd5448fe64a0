/* The OpenAI Batch API (wire-formats.md section 2): create from an uploaded
 * file, retrieve, list, cancel; output and error files of result lines. */
#include "tests/mock/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINES 50000      /* OpenAI's limit per batch */
#define MAX_ERRORS 50        /* validation errors reported */
#define WINDOW_S (24 * 3600) /* completion_window "24h" */

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *get_str(json_object *o, const char *key)
{
    json_object *v = get(o, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* ---- validation (state validating) --------------------------------------- */

static void add_error(struct batch *b, const char *code, const char *msg, const char *param,
                      long line)
{
    if (b->nerrors++ >= MAX_ERRORS) return;
    if (b->nerrors > 1) ADD_LIT(b->errors, ",");
    ADD_LIT(b->errors, "{\"code\":");
    json_cstr(b->errors, code);
    ADD_LIT(b->errors, ",\"message\":");
    json_cstr(b->errors, msg);
    ADD_LIT(b->errors, ",\"param\":");
    if (param)
        json_cstr(b->errors, param);
    else
        ADD_LIT(b->errors, "null");
    if (line > 0)
        ADD_NUM(b->errors, ",\"line\":", line);
    else
        ADD_LIT(b->errors, ",\"line\":null");
    ADD_LIT(b->errors, "}");
}

/* One line's envelope; sets its custom_id. Returns false when it is bad. */
static bool check_line(struct batch *b, uint32_t i, json_tokener *tok)
{
    const struct bline *l = &b->lines[i];
    long no = (long)i + 1;
    json_tokener_reset(tok);
    json_object *root = json_tokener_parse_ex(tok, b->text.p + l->off, (int)l->len);
    bool ok = false;
    const char *cid, *method, *url, *model;
    json_object *body;
    if (!root || json_tokener_get_parse_end(tok) != l->len ||
        !json_object_is_type(root, json_type_object)) {
        add_error(b, "invalid_json_line",
                  "This line is not parseable as valid JSON (each line must be one JSON object).",
                  NULL, no);
    } else if (!(cid = get_str(root, "custom_id")) || !*cid) {
        add_error(b, "missing_required_parameter", "Missing required parameter: 'custom_id'.",
                  "custom_id", no);
    } else if (!(method = get_str(root, "method"))) {
        add_error(b, "missing_required_parameter", "Missing required parameter: 'method'.",
                  "method", no);
    } else if (strcmp(method, "POST")) {
        add_error(b, "invalid_value", "Invalid value for 'method': only 'POST' is supported.",
                  "method", no);
    } else if (!(url = get_str(root, "url")) || strcmp(url, b->endpoint)) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "The URL of this request must be the batch's endpoint '%s' (field 'url').",
                 b->endpoint);
        add_error(b, "invalid_url", msg, "url", no);
    } else if (!(body = get(root, "body")) || !json_object_is_type(body, json_type_object)) {
        add_error(b, "missing_required_parameter",
                  "Missing required parameter: 'body' (the request body, a JSON object).", "body",
                  no);
    } else if (!(model = get_str(body, "model"))) {
        add_error(b, "missing_required_parameter", "Missing required parameter: 'body.model'.",
                  "body.model", no);
    } else if (b->model[0] && strcmp(model, b->model)) {
        add_error(b, "mismatched_model",
                  "The provided model does not match the model of the other requests in this "
                  "batch: every line must name the same model.",
                  "body.model", no);
    } else {
        long off = gbuf_add(&b->cids, cid, strlen(cid));
        if (off >= 0) {
            b->lines[i].cid = (size_t)off;
            b->lines[i].cid_len = strlen(cid);
            if (!b->model[0]) snprintf(b->model, sizeof(b->model), "%s", model);
            ok = true;
        }
    }
    json_object_put(root);
    return ok;
}

static void on_duplicate(struct batch *b, uint32_t dup, uint32_t first)
{
    char msg[200];
    snprintf(msg, sizeof(msg),
             "The custom_id of this request repeats the one on line %u; each request in a "
             "batch needs its own custom_id.",
             first + 1);
    add_error(b, "duplicate_custom_id", msg, "custom_id", (long)dup + 1);
}

static bool openai_validate(struct batch *b)
{
    if (b->n == 0) {
        add_error(b, "empty_file", "The input file has no requests.", NULL, 0);
        return false;
    }
    if (b->n > MAX_LINES) {
        add_error(b, "too_many_requests",
                  "The input file has more than the 50,000 requests a batch may hold; split it.",
                  NULL, 0);
        return false;
    }
    json_tokener *tok = json_tokener_new();
    if (!tok) return false;
    bool ok = true;
    for (uint32_t i = 0; i < b->n; i++)
        ok &= check_line(b, i, tok);
    json_tokener_free(tok);
    return batch_each_duplicate(b, on_duplicate) == 0 && ok;
}

/* ---- results ------------------------------------------------------------- */

static void line_head(struct batch *b, struct evbuffer *out, uint32_t i)
{
    char id[48];
    api_new_id(id, sizeof(id), "batch_req_");
    ADD_LIT(out, "{\"id\":");
    json_cstr(out, id);
    ADD_LIT(out, ",\"custom_id\":");
    json_str(out, b->cids.p + b->lines[i].cid, b->lines[i].cid_len);
}

static void openai_record(struct batch *b, uint32_t i, const struct mock_answer *a,
                          const char *body, size_t len)
{
    struct evbuffer *out = a->status == 200 ? b->out : b->err;
    line_head(b, out, i);
    ADD_NUM(out, ",\"response\":{\"status_code\":", a->status);
    ADD_LIT(out, ",\"request_id\":\"req_");
    evbuffer_add(out, a->id, strlen(a->id));
    ADD_LIT(out, "\",\"body\":");
    evbuffer_add(out, body, len);
    ADD_LIT(out, "},\"error\":null}\n");
    if (a->status != 200) {
        b->errored++;
        return;
    }
    b->succeeded++;
    if (!a->has_usage) return;
    b->in_tokens += a->use.prompt;
    b->cached_tokens += a->use.cached;
    b->out_tokens += a->use.completion;
    b->reasoning_tokens += a->use.reasoning;
}

/* A cancelled line appears nowhere; an expired one in the error file. */
static void openai_unrun(struct batch *b, uint32_t i, bool expired)
{
    if (!expired) return;
    line_head(b, b->err, i);
    ADD_LIT(b->err, ",\"response\":null,\"error\":{\"code\":\"batch_expired\",\"message\":"
                    "\"This request could not be executed before the completion window "
                    "expired.\"}}\n");
}

/* The lines as a file of purpose batch_output, or "" when there are none. */
static void to_file(struct batch *b, struct evbuffer *lines, const char *kind, char *id_out,
                    size_t size)
{
    size_t len = evbuffer_get_length(lines);
    char *data = len ? malloc(len) : NULL;
    id_out[0] = '\0';
    if (!data) return;
    evbuffer_remove(lines, data, len);
    char name[96];
    snprintf(name, sizeof(name), "%s_%s.jsonl", b->id, kind);
    const char *id = files_add("batch_output", name, data, len);
    if (id) snprintf(id_out, size, "%s", id);
}

static void openai_finish(struct batch *b)
{
    to_file(b, b->out, "output", b->output_file_id, sizeof(b->output_file_id));
    to_file(b, b->err, "error", b->error_file_id, sizeof(b->error_file_id));
}

static json_object *openai_body(struct batch *b, uint32_t i, json_tokener *tok, json_object **root)
{
    json_tokener_reset(tok);
    *root = json_tokener_parse_ex(tok, b->text.p + b->lines[i].off, (int)b->lines[i].len);
    return get(*root, "body");
}

const struct batch_ops batch_openai_ops = {
    .d = D_OPENAI,
    .validate = openai_validate,
    .record = openai_record,
    .unrun = openai_unrun,
    .finish = openai_finish,
    .body = openai_body,
};

/* ---- the Batch object ---------------------------------------------------- */

static const char *status_name(enum bstate s)
{
    static const char *const names[] = {
        [BS_VALIDATING] = "validating",   [BS_FAILED] = "failed",
        [BS_IN_PROGRESS] = "in_progress", [BS_FINALIZING] = "finalizing",
        [BS_CANCELLING] = "cancelling",   [BS_COMPLETED] = "completed",
        [BS_CANCELLED] = "cancelled",     [BS_EXPIRED] = "expired",
    };
    return names[s];
}

static void time_field(struct evbuffer *out, const char *name, long t)
{
    evbuffer_add_printf(out, ",\"%s\":", name);
    if (t)
        json_long(out, t);
    else
        ADD_LIT(out, "null");
}

static void id_field(struct evbuffer *out, const char *name, const char *id)
{
    evbuffer_add_printf(out, ",\"%s\":", name);
    if (*id)
        json_cstr(out, id);
    else
        ADD_LIT(out, "null");
}

static void batch_object(const struct batch *b, struct evbuffer *out)
{
    ADD_LIT(out, "{\"id\":");
    json_cstr(out, b->id);
    ADD_LIT(out, ",\"object\":\"batch\",\"endpoint\":");
    json_cstr(out, b->endpoint);
    ADD_LIT(out, ",\"errors\":");
    if (b->nerrors) {
        ADD_LIT(out, "{\"object\":\"list\",\"data\":[");
        size_t n = evbuffer_get_length(b->errors);
        evbuffer_add(out, evbuffer_pullup(b->errors, -1), n);
        ADD_LIT(out, "]}");
    } else {
        ADD_LIT(out, "null");
    }
    ADD_LIT(out, ",\"input_file_id\":");
    json_cstr(out, b->input_file_id);
    ADD_LIT(out, ",\"completion_window\":");
    json_cstr(out, b->completion_window);
    evbuffer_add_printf(out, ",\"status\":\"%s\"", status_name(b->state));
    id_field(out, "output_file_id", b->output_file_id);
    id_field(out, "error_file_id", b->error_file_id);
    ADD_NUM(out, ",\"created_at\":", b->created_at);
    time_field(out, "in_progress_at", b->in_progress_at);
    ADD_NUM(out, ",\"expires_at\":", b->created_at + WINDOW_S);
    time_field(out, "finalizing_at", b->finalizing_at);
    time_field(out, "completed_at", b->state == BS_COMPLETED ? b->ended_at : 0);
    time_field(out, "failed_at", b->failed_at);
    time_field(out, "expired_at", b->state == BS_EXPIRED ? b->ended_at : 0);
    time_field(out, "cancelling_at", b->cancelling_at);
    time_field(out, "cancelled_at", b->state == BS_CANCELLED ? b->ended_at : 0);
    bool counted = b->state != BS_VALIDATING && b->state != BS_FAILED;
    ADD_NUM(out, ",\"request_counts\":{\"total\":", counted ? (long)b->n : 0);
    ADD_NUM(out, ",\"completed\":", b->succeeded);
    ADD_NUM(out, ",\"failed\":", b->errored + b->expired);
    ADD_LIT(out, "},\"metadata\":");
    if (b->metadata)
        evbuffer_add(out, b->metadata, strlen(b->metadata));
    else
        ADD_LIT(out, "null");
    ADD_LIT(out, ",\"model\":");
    if (b->model[0])
        json_cstr(out, b->model);
    else
        ADD_LIT(out, "null");
    ADD_NUM(out, ",\"usage\":{\"input_tokens\":", b->in_tokens);
    ADD_NUM(out, ",\"input_tokens_details\":{\"cached_tokens\":", b->cached_tokens);
    ADD_NUM(out, "},\"output_tokens\":", b->out_tokens);
    ADD_NUM(out, ",\"output_tokens_details\":{\"reasoning_tokens\":", b->reasoning_tokens);
    ADD_NUM(out, "},\"total_tokens\":", b->in_tokens + b->out_tokens);
    ADD_LIT(out, "}}");
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

/* Splits the file into lines (a final newline ends the last one; CRLF and
 * trailing blanks are allowed); each is validated later, in state
 * validating. */
static int split_lines(struct batch *b, const char *data, size_t len)
{
    size_t start = 0;
    while (start < len) {
        const char *nl = memchr(data + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - data) : len, stop = end;
        while (stop > start &&
               (data[stop - 1] == '\r' || data[stop - 1] == ' ' || data[stop - 1] == '\t'))
            stop--; /* CRLF and trailing blanks are fine after the JSON */
        if (batch_add_line(b, data + start, stop - start, "", 0) < 0) return -1;
        start = end + 1;
    }
    return 0;
}

static const char *check_create(json_object *root, const char **param)
{
    const char *v;
    json_object *md = get(root, "metadata");
    *param = "input_file_id";
    if (!get_str(root, "input_file_id")) return "Missing required parameter: 'input_file_id'.";
    *param = "endpoint";
    if (!(v = get_str(root, "endpoint"))) return "Missing required parameter: 'endpoint'.";
    if (strcmp(v, "/v1/chat/completions"))
        return "Invalid value for 'endpoint': the mock runs batches for '/v1/chat/completions' "
               "only.";
    *param = "completion_window";
    if (!(v = get_str(root, "completion_window")))
        return "Missing required parameter: 'completion_window'.";
    if (strcmp(v, "24h")) return "Invalid value for 'completion_window': only '24h' is supported.";
    *param = "metadata";
    if (md && !json_object_is_type(md, json_type_null) &&
        (!json_object_is_type(md, json_type_object) || json_object_object_length(md) > 16))
        return "Invalid 'metadata': an object of at most 16 string pairs.";
    return NULL;
}

static void create(struct evhttp_request *req)
{
    int refuse = batch_take_fail_create();
    if (refuse)
        return api_openai_error(req, refuse, "mock: batch creation refused (fail_create knob)",
                                NULL, refuse == 429 ? "rate_limit_exceeded" : NULL);
    json_object *root = api_parse_json(req);
    const char *param = NULL, *purpose = NULL;
    const char *err = root ? check_create(root, &param) : "The body must be a JSON object.";
    size_t len = 0;
    const char *data = err ? NULL : files_get(get_str(root, "input_file_id"), &len, &purpose);
    char msg[200];
    if (!err && (!data || strcmp(purpose, "batch"))) {
        snprintf(msg, sizeof(msg),
                 "Invalid 'input_file_id': '%.60s' is %s; upload the input with POST /v1/files "
                 "(purpose batch) first.",
                 get_str(root, "input_file_id"), data ? "not a batch input file" : "no file");
        err = msg;
        param = "input_file_id";
    }
    struct batch *b = err ? NULL : batch_new(&batch_openai_ops, "batch_", true);
    int status = 400;
    if (!err && (!b || split_lines(b, data, len) < 0)) {
        err = "mock: out of memory";
        status = 500;
        param = NULL;
    }
    if (err) {
        if (b) batch_discard(b);
        json_object_put(root);
        return api_openai_error(req, status, err, param, NULL);
    }
    snprintf(b->endpoint, sizeof(b->endpoint), "%s", get_str(root, "endpoint"));
    snprintf(b->completion_window, sizeof(b->completion_window), "24h");
    snprintf(b->input_file_id, sizeof(b->input_file_id), "%s", get_str(root, "input_file_id"));
    json_object *md = get(root, "metadata");
    if (md && json_object_is_type(md, json_type_object))
        b->metadata = strdup(json_object_to_json_string_ext(md, JSON_C_TO_STRING_PLAIN));
    json_object_put(root);
    batch_start(b);
    send_batch(req, b);
}

/* GET /v1/batches?limit=&after=: newest first, cursor after an id. */
static void list(struct evhttp_request *req)
{
    char v[64] = "";
    int limit = api_query(req, "limit", v, sizeof(v)) ? atoi(v) : 20;
    if (limit < 1 || limit > 100) limit = limit < 1 ? 1 : 100;
    bool skipping = api_query(req, "after", v, sizeof(v));
    struct evbuffer *out = evbuffer_new();
    const struct batch *first = NULL, *last = NULL;
    bool more = false;
    int n = 0;
    ADD_LIT(out, "{\"object\":\"list\",\"data\":[");
    for (const struct batch *b = batch_newest(); b; b = b->next) {
        if (b->ops->d != D_OPENAI) continue;
        if (skipping) {
            skipping = strcmp(b->id, v) != 0;
            continue;
        }
        if (n == limit) {
            more = true;
            break;
        }
        if (n++) ADD_LIT(out, ",");
        batch_object(b, out);
        if (!first) first = b;
        last = b;
    }
    ADD_LIT(out, "]");
    id_field(out, "first_id", first ? first->id : "");
    id_field(out, "last_id", last ? last->id : "");
    evbuffer_add_printf(out, ",\"has_more\":%s}\n", more ? "true" : "false");
    api_send(req, 200, "application/json", out);
    evbuffer_free(out);
}

static void cancel(struct evhttp_request *req, struct batch *b)
{
    if (!batch_cancel(b) && b->state != BS_CANCELLING) { /* a second cancel is answered */
        char msg[120];
        snprintf(msg, sizeof(msg), "Cannot cancel a batch with status '%s'.",
                 status_name(b->state));
        return api_openai_error(req, 400, msg, NULL, NULL);
    }
    send_batch(req, b);
}

bool batch_openai_route(struct evhttp_request *req, const char *path)
{
    static const char prefix[] = "/v1/batches";
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
    bool is_cancel = slash && !strcmp(slash, "/cancel");
    if ((slash && !is_cancel) || (is_cancel && cmd != EVHTTP_REQ_POST) ||
        (!slash && cmd != EVHTTP_REQ_GET))
        return false;
    struct batch *b = batch_find(D_OPENAI, id, id_len);
    if (!b) {
        char msg[120];
        snprintf(msg, sizeof(msg), "No batch found with id '%.*s'.",
                 (int)(id_len > 64 ? 64 : id_len), id);
        api_openai_error(req, 404, msg, NULL, NULL);
    } else if (is_cancel) {
        cancel(req, b);
    } else {
        send_batch(req, b);
    }
    return true;
}

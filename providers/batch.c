/* The providers' batch APIs, without the network (providers/batch.h). */
#include "providers/batch.h"

#include <stdio.h>
#include <string.h>

#define BOUNDARY "bridle-batch-8f0c2d4e6a1b3c5d"

static bool is_kind(const provider_conf *p, const char *kind)
{
    return p->ops && strcmp(p->ops->kind, kind) == 0;
}

static bool is_anthropic(const provider_conf *p)
{
    return is_kind(p, "anthropic");
}

static bool is_gemini(const provider_conf *p)
{
    return is_kind(p, "gemini");
}

bool provider_batch_supported(const provider_conf *p)
{
    return is_anthropic(p) || is_gemini(p) || is_kind(p, "openai");
}

bool provider_batch_uploads(const provider_conf *p)
{
    return is_kind(p, "openai");
}

bool provider_batch_inline(const provider_conf *p)
{
    return is_gemini(p);
}

void provider_batch_begin(const provider_conf *p, buf *payload)
{
    if (is_anthropic(p)) buf_append_str(payload, "{\"requests\":[");
    if (is_gemini(p))
        buf_append_str(payload, "{\"batch\":{\"display_name\":\"bridle\",\"input_config\":{"
                                "\"requests\":{\"requests\":[");
}

void provider_batch_add(const provider_conf *p, buf *payload, const char *custom_id,
                        const char *body, size_t len)
{
    if (is_gemini(p)) { /* the key comes back with its answer (and the order is kept) */
        if (payload->data[payload->len - 1] != '[') buf_append_str(payload, ",");
        buf_printf(payload, "{\"metadata\":{\"key\":\"%s\"},\"request\":", custom_id);
        buf_append(payload, body, len);
        buf_append_str(payload, "}");
        return;
    }
    if (is_anthropic(p)) {
        if (payload->data[payload->len - 1] != '[') buf_append_str(payload, ",");
        buf_printf(payload, "{\"custom_id\":\"%s\",\"params\":", custom_id);
    } else
        buf_printf(payload,
                   "{\"custom_id\":\"%s\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\","
                   "\"body\":",
                   custom_id);
    buf_append(payload, body, len);
    buf_append_str(payload, is_anthropic(p) ? "}" : "}\n");
}

void provider_batch_end(const provider_conf *p, buf *payload)
{
    if (is_anthropic(p)) buf_append_str(payload, "]}");
    if (is_gemini(p)) buf_append_str(payload, "]}}}}");
}

/* The provider's URL for path, its key and configured headers. */
static void request_to(const provider_conf *p, upstream_request *out, const char *content_type,
                       const char *fmt, const char *arg)
{
    buf_append_str(&out->url, p->base_url);
    buf_printf(&out->url, fmt, arg);
    provider_auth_headers(p, out);
    if (content_type) upstream_request_add_header(out, "Content-Type", content_type);
    upstream_request_add_header(out, "Expect", ""); /* no 100-continue round trip */
    upstream_request_add_header_lines(out, p->extra_headers);
    upstream_request_finish_headers(out);
}

void provider_batch_upload(const provider_conf *p, const buf *payload, upstream_request *out)
{
    request_to(p, out, "multipart/form-data; boundary=" BOUNDARY, "%s", "/files");
    buf_append_str(&out->body, "--" BOUNDARY "\r\nContent-Disposition: form-data; "
                               "name=\"purpose\"\r\n\r\nbatch\r\n--" BOUNDARY
                               "\r\nContent-Disposition: form-data; name=\"file\"; "
                               "filename=\"batch.jsonl\"\r\nContent-Type: "
                               "application/jsonl\r\n\r\n");
    buf_append(&out->body, payload->data ? payload->data : "", payload->len);
    buf_append_str(&out->body, "\r\n--" BOUNDARY "--\r\n");
}

void provider_batch_create(const provider_conf *p, const char *file_id, const buf *payload,
                           const char *tag, const char *model, upstream_request *out)
{
    if (is_anthropic(p) || is_gemini(p)) {
        if (is_gemini(p))
            request_to(p, out, "application/json", "/models/%s:batchGenerateContent", model);
        else
            request_to(p, out, "application/json", "%s", "/messages/batches");
        buf_append(&out->body, payload->data ? payload->data : "", payload->len);
        return;
    }
    request_to(p, out, "application/json", "%s", "/batches");
    buf_append_str(&out->body, "{\"input_file_id\":");
    buf_append_json_str(&out->body, file_id, strlen(file_id));
    buf_append_str(&out->body, ",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":"
                               "\"24h\",\"metadata\":{\"bridle_batch\":");
    buf_append_json_str(&out->body, tag, strlen(tag));
    buf_append_str(&out->body, "}}");
}

void provider_batch_status(const provider_conf *p, const char *batch_id, upstream_request *out)
{
    request_to(p, out, NULL, is_anthropic(p) ? "/messages/batches/%s" : "/batches/%s", batch_id);
    /* Gemini's answer has the results too, once it has ended */
    out->get = true;
}

void provider_batch_cancel(const provider_conf *p, const char *batch_id, upstream_request *out)
{
    request_to(p, out, "application/json",
               is_anthropic(p) ? "/messages/batches/%s/cancel"
               : is_gemini(p)  ? "/batches/%s:cancel"
                               : "/batches/%s/cancel",
               batch_id);
    buf_append_str(&out->body, "{}"); /* never an empty POST: curl would read stdin for it */
}

void provider_batch_fetch(const provider_conf *p, const char *id, upstream_request *out)
{
    request_to(p, out, NULL, is_anthropic(p) ? "/messages/batches/%s/results" : "/files/%s/content",
               id);
    out->get = true;
}

static json_object *parse_object(const char *body, size_t len, char *err, size_t errlen)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = tok ? json_tokener_parse_ex(tok, body, (int)len) : NULL;
    if (tok) json_tokener_free(tok);
    if (o && json_object_is_type(o, json_type_object)) return o;
    json_object_put(o);
    snprintf(err, errlen, "the provider's answer is not a JSON object");
    return NULL;
}

/* Only what can go in a URL path unescaped: the provider's own ids are so. */
static bool id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= 96) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("-_.", s[i])))
            return false;
    return true;
}

int provider_batch_id(const char *body, size_t len, char *id, size_t idlen, char *err,
                      size_t errlen)
{
    json_object *o = parse_object(body, len, err, errlen);
    if (!o) return -1;
    const char *v = provider_json_str(o, "id");
    const char *name = provider_json_str(o, "name"); /* Gemini: "batches/ID" */
    if (!v && name && strncmp(name, "batches/", 8) == 0) v = name + 8;
    int rc = id_ok(v) && strlen(v) < idlen ? 0 : -1;
    if (rc == 0)
        snprintf(id, idlen, "%s", v);
    else
        snprintf(err, errlen, "the provider's answer has no usable \"id\"");
    json_object_put(o);
    return rc;
}

static void copy_id(char *dst, size_t n, const char *v)
{
    snprintf(dst, n, "%s", id_ok(v) ? v : "");
}

int provider_batch_read_state(const provider_conf *p, const char *body, size_t len,
                              provider_batch_state *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    json_object *o = parse_object(body, len, err, errlen);
    if (!o) return -1;
    json_object *md = provider_json_typed(o, "metadata", json_type_object);
    const char *s = is_gemini(p)      ? provider_json_str(md, "state")
                    : is_anthropic(p) ? provider_json_str(o, "processing_status")
                                      : provider_json_str(o, "status");
    int rc = 0;
    if (!s) {
        snprintf(err, errlen, "the provider's batch has no status");
        rc = -1;
    } else if (is_anthropic(p)) {
        st->ended = strcmp(s, "ended") == 0;
    } else if (is_gemini(p)) {
        json_object *done = provider_json_get(o, "done");
        st->ended = (done && json_object_get_boolean(done)) ||
                    !strcmp(s, "BATCH_STATE_SUCCEEDED") || !strcmp(s, "BATCH_STATE_FAILED") ||
                    !strcmp(s, "BATCH_STATE_CANCELLED") || !strcmp(s, "BATCH_STATE_EXPIRED");
    } else {
        st->ended = !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "expired") ||
                    !strcmp(s, "cancelled");
        st->refused = !strcmp(s, "failed");
        copy_id(st->output_file, sizeof st->output_file, provider_json_str(o, "output_file_id"));
        copy_id(st->error_file, sizeof st->error_file, provider_json_str(o, "error_file_id"));
        json_object *errs = provider_json_typed(o, "errors", json_type_object);
        json_object *data = provider_json_typed(errs, "data", json_type_array);
        json_object *first =
            data && json_object_array_length(data) ? json_object_array_get_idx(data, 0) : NULL;
        const char *why = provider_json_str(first, "message");
        snprintf(st->why, sizeof st->why, "%s", why ? why : "the provider refused the batch");
    }
    if (s) snprintf(st->status, sizeof st->status, "%s", s);
    json_object_put(o);
    return rc;
}

/* Anthropic's error types and their statuses (wire-formats.md §3). */
static int anthropic_error_status(const char *type)
{
    static const struct {
        const char *type;
        int status;
    } map[] = {{"invalid_request_error", 400}, {"authentication_error", 401},
               {"billing_error", 402},         {"permission_error", 403},
               {"not_found_error", 404},       {"request_too_large", 413},
               {"rate_limit_error", 429},      {"api_error", 500},
               {"timeout_error", 504},         {"overloaded_error", 529}};
    for (size_t i = 0; type && i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].type, type) == 0) return map[i].status;
    return 500;
}

static void append_json(buf *b, json_object *o)
{
    size_t n;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    buf_append(b, s, n);
}

static int read_anthropic(json_object *o, provider_batch_result *r, char *err, size_t errlen)
{
    json_object *res = provider_json_typed(o, "result", json_type_object);
    const char *type = provider_json_str(res, "type");
    if (!type) {
        snprintf(err, errlen, "a result line has no result.type");
        return -1;
    }
    json_object *v;
    if (!strcmp(type, "succeeded") && (v = provider_json_typed(res, "message", json_type_object))) {
        r->status = 200;
        append_json(&r->body, v);
    } else if (!strcmp(type, "errored") &&
               (v = provider_json_typed(res, "error", json_type_object))) {
        json_object *inner = provider_json_typed(v, "error", json_type_object);
        r->status = anthropic_error_status(provider_json_str(inner, "type"));
        append_json(&r->body, v);
    } else
        buf_printf(&r->body, "the provider's batch ended with this request %s",
                   !strcmp(type, "canceled") ? "cancelled" : "expired");
    return 0;
}

static int read_openai(json_object *o, provider_batch_result *r, char *err, size_t errlen)
{
    json_object *resp = provider_json_typed(o, "response", json_type_object);
    json_object *code = provider_json_get(resp, "status_code");
    json_object *body = provider_json_get(resp, "body");
    if (resp && code && json_object_is_type(code, json_type_int) && body) {
        r->status = json_object_get_int(code);
        if (r->status < 100 || r->status > 599) {
            snprintf(err, errlen, "a result line has status_code %d", r->status);
            return -1;
        }
        append_json(&r->body, body);
        return 0;
    }
    json_object *e = provider_json_typed(o, "error", json_type_object);
    const char *msg = provider_json_str(e, "message"), *c = provider_json_str(e, "code");
    buf_printf(&r->body, "the provider's batch did not run this request: %s%s%s%s", c ? c : "",
               c && msg ? " (" : "", msg ? msg : (c ? "" : "no reason given"), c && msg ? ")" : "");
    return 0;
}

/* Gemini's inlined responses (in its status answer once ended): at
 * operation.response, or at metadata.output. */
static json_object *inlined_responses(json_object *o)
{
    json_object *out = provider_json_typed(o, "response", json_type_object);
    if (!provider_json_get(out, "inlinedResponses")) {
        json_object *md = provider_json_typed(o, "metadata", json_type_object);
        out = provider_json_typed(md, "output", json_type_object);
    }
    json_object *ir = provider_json_typed(out, "inlinedResponses", json_type_object);
    return provider_json_typed(ir, "inlinedResponses", json_type_array);
}

int provider_batch_inline_results(const provider_conf *p, const char *body, size_t len, buf *jsonl,
                                  char *err, size_t errlen)
{
    json_object *o = parse_object(body, len, err, errlen);
    if (!o) return -1;
    json_object *list = inlined_responses(o);
    size_t n = list ? json_object_array_length(list) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *r = json_object_array_get_idx(list, i);
        const char *key =
            provider_json_str(provider_json_typed(r, "metadata", json_type_object), "key");
        json_object *resp = provider_json_typed(r, "response", json_type_object);
        json_object *e = provider_json_typed(r, "error", json_type_object);
        if (!resp && !e) continue;
        buf_append_str(jsonl, "{\"custom_id\":");
        if (key)
            buf_append_json_str(jsonl, key, strlen(key));
        else /* by order, which holds only while every line is there (i of n) */
            buf_printf(jsonl, "\"#%zu/%zu\"", i, n);
        int code = 200;
        if (!resp) {
            json_object *c = provider_json_get(e, "code");
            code = c && json_object_is_type(c, json_type_int) ? json_object_get_int(c) : 500;
            if (code < 400 || code > 599) code = 500;
        }
        buf_printf(jsonl, ",\"response\":{\"status_code\":%d,\"body\":", code);
        if (resp)
            append_json(jsonl, resp);
        else {
            buf_append_str(jsonl, "{\"error\":");
            append_json(jsonl, e);
            buf_append_str(jsonl, "}");
        }
        buf_append_str(jsonl, "}}\n");
    }
    json_object_put(o);
    return 0;
}

int provider_batch_read_result(const provider_conf *p, const char *line, size_t len,
                               provider_batch_result *r, char *err, size_t errlen)
{
    buf_reset(&r->body);
    r->status = 0;
    r->custom_id[0] = '\0';
    json_object *o = parse_object(line, len, err, errlen);
    if (!o) return -1;
    const char *id = provider_json_str(o, "custom_id");
    int rc = -1;
    if (!id || !*id || strlen(id) >= sizeof r->custom_id)
        snprintf(err, errlen, "a result line has no usable custom_id");
    else {
        snprintf(r->custom_id, sizeof r->custom_id, "%s", id);
        /* Gemini's come as OpenAI's shape (provider_batch_inline_results) */
        rc = is_anthropic(p) ? read_anthropic(o, r, err, errlen) : read_openai(o, r, err, errlen);
    }
    json_object_put(o);
    return rc;
}

/* Ollama's native API: POST {base_url}/api/chat (wire-formats §5.1).
 * Requests are rewritten into Ollama's shape (options, images, tool calls
 * with object arguments); answers and NDJSON streams are rebuilt into
 * OpenAI chat.completion objects and chunks. Ollama's /v1 endpoint is
 * served by the openai dialect instead. */
#include "providers/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"

#define OLLAMA_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* ------------------------------------------------------------ encode */

static void append_json_cstr(buf *b, const char *s)
{
    buf_append_json_str(b, s, strlen(s));
}

static const char *get_string(json_object *obj, const char *key)
{
    json_object *v = NULL;
    if (json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

static bool is_true(json_object *obj, const char *key)
{
    json_object *v = NULL;
    return json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_boolean) &&
           json_object_get_boolean(v);
}

/* Ollama has no developer role and no function role. */
static const char *ollama_role(const char *role)
{
    if (strcmp(role, "developer") == 0) return "system";
    if (strcmp(role, "function") == 0) return "tool";
    return role;
}

/* Adds the base64 payload of a data: URI to the images list. Ollama takes
 * images only inline, so a remote URL cannot be expressed. */
static int encode_image(json_object *part, buf *images, char *err, size_t errlen)
{
    json_object *iu = NULL;
    json_object_object_get_ex(part, "image_url", &iu);
    const char *url = json_object_is_type(iu, json_type_string) ? json_object_get_string(iu)
                                                                : get_string(iu, "url");
    const char *b64 = url && strncmp(url, "data:", 5) == 0 ? strstr(url, ";base64,") : NULL;
    if (!b64) {
        snprintf(err, errlen, "ollama accepts images only as base64 data: URIs");
        return -1;
    }
    b64 += strlen(";base64,");
    if (images->len) buf_append_char(images, ',');
    append_json_cstr(images, b64);
    return 0;
}

/* Content (string, parts or null) → one text plus an images list. */
static int encode_content(json_object *content, buf *text, buf *images, char *err, size_t errlen)
{
    if (!json_object_is_type(content, json_type_array)) {
        provider_content_text(content, text);
        return 0;
    }
    size_t n = json_object_array_length(content);
    for (size_t i = 0; i < n; i++) {
        json_object *part = json_object_array_get_idx(content, i);
        const char *type = get_string(part, "type");
        if (!type) {
            snprintf(err, errlen, "content part %zu has no type", i);
            return -1;
        }
        if (strcmp(type, "image_url") == 0) {
            if (encode_image(part, images, err, errlen) < 0) return -1;
        } else if (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0) {
            const char *s = get_string(part, type);
            if (s) {
                /* Parts are separate paragraphs; keep them apart. */
                if (text->len) buf_append_char(text, '\n');
                buf_append_str(text, s);
            }
        } else {
            snprintf(err, errlen, "ollama cannot take content parts of type \"%.32s\"", type);
            return -1;
        }
    }
    return 0;
}

/* OpenAI tool calls carry arguments as a JSON string; Ollama wants the
 * object itself. */
static int encode_tool_calls(json_object *calls, buf *b, char *err, size_t errlen)
{
    buf_append_str(b, ",\"tool_calls\":[");
    size_t n = json_object_array_length(calls);
    for (size_t i = 0; i < n; i++) {
        json_object *fn = NULL, *call = json_object_array_get_idx(calls, i);
        json_object_object_get_ex(call, "function", &fn);
        const char *name = get_string(fn, "name");
        const char *args = get_string(fn, "arguments");
        if (!name) {
            snprintf(err, errlen, "tool call %zu has no function name", i);
            return -1;
        }
        json_object *parsed = args && *args ? json_tokener_parse(args) : json_object_new_object();
        if (!json_object_is_type(parsed, json_type_object)) {
            json_object_put(parsed);
            snprintf(err, errlen, "tool call %zu arguments are not a JSON object", i);
            return -1;
        }
        buf_append_str(b, i ? ",{\"function\":{\"name\":" : "{\"function\":{\"name\":");
        append_json_cstr(b, name);
        buf_append_str(b, ",\"arguments\":");
        provider_append_json(b, parsed);
        buf_append_str(b, "}}");
        json_object_put(parsed);
    }
    buf_append_char(b, ']');
    return 0;
}

/* A tool result names its tool in Ollama; OpenAI names only the call id,
 * so look the id up in the earlier assistant messages. */
static const char *find_tool_name(json_object *msgs, size_t before, const char *call_id)
{
    for (size_t i = before; call_id && i-- > 0;) {
        json_object *calls = NULL, *m = json_object_array_get_idx(msgs, i);
        if (!json_object_object_get_ex(m, "tool_calls", &calls) ||
            !json_object_is_type(calls, json_type_array))
            continue;
        for (size_t j = 0; j < json_object_array_length(calls); j++) {
            json_object *c = json_object_array_get_idx(calls, j), *fn = NULL;
            const char *id = get_string(c, "id");
            if (id && strcmp(id, call_id) == 0 && json_object_object_get_ex(c, "function", &fn))
                return get_string(fn, "name");
        }
    }
    return NULL;
}

static int encode_message(json_object *msgs, size_t idx, buf *b, char *err, size_t errlen)
{
    json_object *m = json_object_array_get_idx(msgs, idx), *content = NULL, *calls = NULL;
    const char *role = get_string(m, "role");
    if (!role) {
        snprintf(err, errlen, "message %zu has no role", idx);
        return -1;
    }
    role = ollama_role(role);
    json_object_object_get_ex(m, "content", &content);
    buf text = BUF_INIT, images = BUF_INIT;
    int rc = encode_content(content, &text, &images, err, errlen);
    if (rc == 0) {
        buf_append_str(b, idx ? ",{\"role\":" : "{\"role\":");
        append_json_cstr(b, role);
        buf_append_str(b, ",\"content\":");
        buf_append_json_str(b, text.data ? text.data : "", text.len);
        if (images.len) {
            buf_append_str(b, ",\"images\":[");
            buf_append(b, images.data, images.len);
            buf_append_char(b, ']');
        }
        if (json_object_object_get_ex(m, "tool_calls", &calls) &&
            json_object_is_type(calls, json_type_array))
            rc = encode_tool_calls(calls, b, err, errlen);
        if (rc == 0 && strcmp(role, "tool") == 0) {
            const char *name = get_string(m, "name");
            if (!name) name = find_tool_name(msgs, idx, get_string(m, "tool_call_id"));
            if (name) {
                buf_append_str(b, ",\"tool_name\":");
                append_json_cstr(b, name);
            }
        }
        buf_append_char(b, '}');
    }
    buf_free(&text);
    buf_free(&images);
    return rc;
}

static void options_member(buf *b, bool *first, const char *name)
{
    buf_append_str(b, *first ? ",\"options\":{" : ",");
    *first = false;
    append_json_cstr(b, name);
    buf_append_char(b, ':');
}

/* Sampling parameters live under "options" in Ollama's API. */
static void encode_options(const canon_request *req, buf *b)
{
    static const char *const passed[] = {"temperature", "top_p", "seed", "frequency_penalty",
                                         "presence_penalty"};
    bool first = true;
    if (req->max_tokens >= 0) {
        options_member(b, &first, "num_predict");
        buf_printf(b, "%lld", (long long)req->max_tokens);
    }
    for (size_t i = 0; i < sizeof passed / sizeof passed[0]; i++) {
        json_object *v = NULL;
        if (json_object_object_get_ex(req->root, passed[i], &v) && v) {
            options_member(b, &first, passed[i]);
            provider_append_json(b, v);
        }
    }
    json_object *stop = NULL;
    if (json_object_object_get_ex(req->root, "stop", &stop) && stop) {
        /* Ollama's stop is always a list; OpenAI allows a bare string. */
        options_member(b, &first, "stop");
        bool one = json_object_is_type(stop, json_type_string);
        if (one) buf_append_char(b, '[');
        provider_append_json(b, stop);
        if (one) buf_append_char(b, ']');
    }
    if (!first) buf_append_char(b, '}');
}

/* "json" for json_object mode, the schema itself for json_schema. */
static void encode_format(const canon_request *req, buf *b)
{
    if (!req->json_mode) return;
    json_object *rf = NULL, *js = NULL, *schema = NULL;
    json_object_object_get_ex(req->root, "response_format", &rf);
    const char *type = get_string(rf, "type");
    if (type && strcmp(type, "json_schema") == 0 &&
        json_object_object_get_ex(rf, "json_schema", &js) &&
        json_object_object_get_ex(js, "schema", &schema) &&
        json_object_is_type(schema, json_type_object)) {
        buf_append_str(b, ",\"format\":");
        provider_append_json(b, schema);
    } else {
        buf_append_str(b, ",\"format\":\"json\"");
    }
}

static int ollama_encode_body(const canon_request *req, const char *model, buf *b, char *err,
                              size_t errlen)
{
    buf_append_str(b, "{\"model\":");
    append_json_cstr(b, model);
    buf_append_str(b, ",\"messages\":[");
    size_t n = json_object_is_type(req->messages, json_type_array)
                   ? json_object_array_length(req->messages)
                   : 0;
    for (size_t i = 0; i < n; i++)
        if (encode_message(req->messages, i, b, err, errlen) < 0) return -1;
    buf_append_char(b, ']');
    /* Always explicit: Ollama streams unless told otherwise. */
    buf_append_str(b, req->stream ? ",\"stream\":true" : ",\"stream\":false");
    encode_options(req, b);
    encode_format(req, b);
    json_object *tools = NULL;
    if (json_object_object_get_ex(req->root, "tools", &tools) &&
        json_object_is_type(tools, json_type_array)) {
        /* Ollama takes OpenAI's {type:"function", function:{…}} as is. */
        buf_append_str(b, ",\"tools\":");
        provider_append_json(b, tools);
    }
    buf_append_char(b, '}');
    return 0;
}

static int ollama_encode(const canon_request *req, const target *t, upstream_request *out,
                         char *err, size_t errlen)
{
    if (!t || !t->provider || !t->provider->base_url) {
        snprintf(err, errlen, "ollama: target has no provider base_url");
        return -1;
    }
    const char *model = t->upstream_model ? t->upstream_model : t->model;
    if (!model || !req || !json_object_is_type(req->root, json_type_object)) {
        snprintf(err, errlen, "ollama: no upstream model or no request object");
        return -1;
    }
    const provider_conf *pc = t->provider;
    if (ollama_encode_body(req, model, &out->body, err, errlen) < 0) {
        buf_reset(&out->body);
        return -1;
    }
    buf_append_str(&out->url, pc->base_url);
    buf_append_str(&out->url, "/api/chat");
    if (pc->api_key && pc->api_key[0]) {
        /* Plain Ollama has no auth; a reverse proxy or ollama.com may. */
        buf auth = BUF_INIT;
        buf_printf(&auth, "Bearer %s", pc->api_key);
        upstream_request_add_header(out, "Authorization", auth.data);
        buf_free(&auth);
    }
    upstream_request_add_header(out, "Content-Type", "application/json");
    upstream_request_add_header(out, "Expect", "");
    upstream_request_add_header_lines(out, pc->extra_headers);
    upstream_request_finish_headers(out);
    return 0;
}

/* ------------------------------------------------------------ usage */

/* Over a final (done:true) line. Ollama's metrics are `omitempty`, so on a
 * final line that carries metrics at all (total_duration), an absent count
 * is a zero (prompt_eval_count is absent when the whole prompt came from
 * the KV cache), and the record is still exact. */
static usage_record ollama_usage_map(json_object *obj)
{
    usage_record u;
    memset(&u, 0, sizeof u);
    if (!json_object_is_type(obj, json_type_object)) return u;
    bool has_in = provider_get_count(obj, "prompt_eval_count", &u.input_uncached);
    bool has_out = provider_get_count(obj, "eval_count", &u.output);
    json_object *dur = NULL;
    bool final_metrics =
        is_true(obj, "done") && json_object_object_get_ex(obj, "total_duration", &dur);
    u.exact = (has_in && has_out) || final_metrics;
    return u;
}

/* ------------------------------------------------------------ errors */

static void ollama_apply_error(json_object *e, upstream_error *out)
{
    const char *msg = json_object_is_type(e, json_type_string) ? json_object_get_string(e)
                                                               : get_string(e, "message");
    if (msg) provider_error_add_detail(out, msg, strlen(msg));
}

static void ollama_classify(int status, const upstream_headers *hs, const char *body, size_t len,
                            upstream_error *out)
{
    provider_classify_status(status, out);
    out->retry_after_ms = provider_retry_after_ms(hs);
    char why[96];
    json_object *obj = body && len ? provider_parse_object(NULL, body, len, why, sizeof why) : NULL;
    json_object *e = NULL;
    if (obj && json_object_object_get_ex(obj, "error", &e)) {
        ollama_apply_error(e, out);
    } else if (body && len) {
        char snippet[160];
        snprintf(snippet, sizeof snippet, "non-JSON body: %.*s", len > 120 ? 120 : (int)len, body);
        provider_error_add_detail(out, snippet, strlen(snippet));
    }
    json_object_put(obj);
}

/* ------------------------------------------------------------ decode */

static void new_id(char *out, size_t cap, const char *prefix)
{
    char hex[25];
    if (!util_random_hex(hex, 12))
        snprintf(hex, sizeof hex, "%llx", (unsigned long long)util_now_us());
    snprintf(out, cap, "%s%s", prefix, hex);
}

/* Ollama tool calls (object arguments) → OpenAI ones (string arguments).
 * Returns a new array, or NULL when there are none. */
static json_object *openai_tool_calls(json_object *msg)
{
    json_object *calls = NULL;
    if (!json_object_object_get_ex(msg, "tool_calls", &calls) ||
        !json_object_is_type(calls, json_type_array) || json_object_array_length(calls) == 0)
        return NULL;
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < json_object_array_length(calls); i++) {
        json_object *c = json_object_array_get_idx(calls, i), *fn = NULL, *args = NULL;
        json_object_object_get_ex(c, "function", &fn);
        json_object_object_get_ex(fn, "arguments", &args);
        const char *name = get_string(fn, "name"), *id = get_string(c, "id");
        char idbuf[40];
        if (!id) new_id(idbuf, sizeof idbuf, "call_"), id = idbuf;
        json_object *f = json_object_new_object(), *oc = json_object_new_object();
        json_object_object_add(f, "name", json_object_new_string(name ? name : ""));
        json_object_object_add(
            f, "arguments",
            json_object_new_string(args ? json_object_to_json_string_ext(args, OLLAMA_JSON_FLAGS)
                                        : "{}"));
        json_object_object_add(oc, "id", json_object_new_string(id));
        json_object_object_add(oc, "type", json_object_new_string("function"));
        json_object_object_add(oc, "function", f);
        json_object_array_add(arr, oc);
    }
    return arr;
}

static const char *ollama_finish_reason(json_object *line, bool tool_calls)
{
    if (tool_calls) return "tool_calls";
    const char *r = get_string(line, "done_reason");
    return r && strcmp(r, "length") == 0 ? "length" : "stop";
}

static json_object *usage_block(int64_t prompt, int64_t completion)
{
    json_object *u = json_object_new_object();
    json_object_object_add(u, "prompt_tokens", json_object_new_int64(prompt));
    json_object_object_add(u, "completion_tokens", json_object_new_int64(completion));
    json_object_object_add(u, "total_tokens", json_object_new_int64(prompt + completion));
    return u;
}

static int ollama_decode(const canon_request *req, const target *t, const char *body, size_t len,
                         decoded_response *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char why[96];
    json_object *obj = provider_parse_object(NULL, body, len, why, sizeof why), *msg = NULL, *e;
    if (obj && json_object_object_get_ex(obj, "error", &e) && e) {
        const char *m = json_object_is_type(e, json_type_string) ? json_object_get_string(e)
                                                                 : get_string(e, "message");
        snprintf(why, sizeof why, "it carries an error: %.60s", m ? m : "(no message)");
        json_object_put(obj), obj = NULL;
    } else if (obj && !(json_object_object_get_ex(obj, "message", &msg) &&
                        json_object_is_type(msg, json_type_object))) {
        snprintf(why, sizeof why, "no message object");
        json_object_put(obj), obj = NULL;
    }
    if (!obj) {
        snprintf(err, errlen,
                 "upstream answered 200 with a body that is not an Ollama chat reply: %s", why);
        for (char *p = err; *p; p++)
            if ((unsigned char)*p < 0x20) *p = ' ';
        return -1;
    }
    char id[40];
    new_id(id, sizeof id, "chatcmpl-");
    const char *model = get_string(obj, "model");
    const char *content = get_string(msg, "content");
    json_object *calls = openai_tool_calls(msg);

    json_object *m = json_object_new_object();
    json_object_object_add(m, "role", json_object_new_string("assistant"));
    json_object_object_add(m, "content", json_object_new_string(content ? content : ""));
    if (calls) json_object_object_add(m, "tool_calls", calls);
    const char *fr = ollama_finish_reason(obj, calls != NULL);
    json_object *choice = json_object_new_object();
    json_object_object_add(choice, "index", json_object_new_int(0));
    json_object_object_add(choice, "message", m);
    json_object_object_add(choice, "finish_reason", json_object_new_string(fr));
    json_object *choices = json_object_new_array();
    json_object_array_add(choices, choice);

    json_object *res = json_object_new_object();
    json_object_object_add(res, "id", json_object_new_string(id));
    json_object_object_add(res, "object", json_object_new_string("chat.completion"));
    json_object_object_add(res, "created", json_object_new_int64((int64_t)time(NULL)));
    json_object_object_add(res, "model",
                           json_object_new_string(model           ? model
                                                  : t && t->model ? t->model
                                                                  : "ollama"));
    json_object_object_add(res, "choices", choices);

    out->usage = ollama_usage_map(obj);
    out->prompt_tokens = out->usage.input_uncached;
    out->completion_tokens = out->usage.output;
    if (out->usage.exact)
        json_object_object_add(res, "usage",
                               usage_block(out->prompt_tokens, out->completion_tokens));
    snprintf(out->finish_reason, sizeof out->finish_reason, "%s", fr);
    out->body = res;
    json_object_put(obj);
    return 0;
}

/* ------------------------------------------------------------ stream */

typedef struct ollama_stream {
    json_tokener *tok;
    char id[40]; /* one id for every chunk, as OpenAI does */
    char *model;
    int64_t created;
    bool sent_role; /* the first chunk carries delta.role */
    bool saw_tool_calls;
    bool include_usage; /* the client asked for a usage chunk */
    int tool_index;     /* OpenAI numbers streamed tool calls */
    buf chunk;          /* scratch for the chunk being written */
} ollama_stream;

static void *ollama_stream_new(const canon_request *req, const target *t)
{
    ollama_stream *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->tok = json_tokener_new();
    const char *model = t && t->upstream_model ? t->upstream_model : t ? t->model : NULL;
    st->model = strdup(model ? model : "ollama");
    if (!st->tok || !st->model) {
        json_tokener_free(st->tok);
        free(st->model);
        free(st);
        return NULL;
    }
    new_id(st->id, sizeof st->id, "chatcmpl-");
    st->created = (int64_t)time(NULL);
    st->include_usage = req && req->include_usage;
    return st;
}

static void ollama_stream_free(void *state)
{
    ollama_stream *st = state;
    if (!st) return;
    json_tokener_free(st->tok);
    free(st->model);
    buf_free(&st->chunk);
    free(st);
}

static void chunk_begin(ollama_stream *st)
{
    buf *b = &st->chunk;
    buf_reset(b);
    buf_append_str(b, "{\"id\":");
    append_json_cstr(b, st->id);
    buf_printf(b, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
               (long long)st->created);
    append_json_cstr(b, st->model);
    buf_append_str(b, ",\"choices\":[{\"index\":0,\"delta\":{");
    if (!st->sent_role) {
        buf_append_str(b, "\"role\":\"assistant\"");
        st->sent_role = true;
    }
}

static void chunk_delta_member(buf *b, const char *key_json)
{
    if (b->data[b->len - 1] != '{') buf_append_char(b, ',');
    buf_append_str(b, key_json);
}

static void chunk_end_emit(ollama_stream *st, const char *finish, const stream_sink *sink)
{
    buf *b = &st->chunk;
    buf_append_str(b, "},\"logprobs\":null,\"finish_reason\":");
    if (finish)
        append_json_cstr(b, finish);
    else
        buf_append_str(b, "null");
    /* as OpenAI does: with include_usage every chunk before the usage one says "usage":null */
    buf_append_str(b, st->include_usage ? "}],\"usage\":null}" : "}]}");
    if (sink && sink->chunk) sink->chunk(sink->ctx, b->data, b->len);
}

/* Ollama sends each tool call whole in one line; OpenAI streams them as
 * indexed fragments, of which a whole call is the simplest case. */
static void chunk_tool_calls(ollama_stream *st, json_object *calls)
{
    size_t n = json_object_array_length(calls);
    for (size_t i = 0; i < n; i++)
        json_object_object_add(json_object_array_get_idx(calls, i), "index",
                               json_object_new_int(st->tool_index++));
    chunk_delta_member(&st->chunk, "\"tool_calls\":");
    provider_append_json(&st->chunk, calls);
    st->saw_tool_calls = true;
}

static int stream_fail_garbage(stream_result *res, const char *why, const char *d, size_t n)
{
    provider_bad_response_error(why, d, n, &res->error);
    res->failed = true;
    return -1;
}

/* Relays one line's message (content and tool calls). The first chunk is
 * sent even when empty so that the role arrives first, as from OpenAI. */
static void stream_relay_message(ollama_stream *st, json_object *line, stream_result *res,
                                 const stream_sink *sink)
{
    json_object *msg = NULL, *content = NULL;
    json_object_object_get_ex(line, "message", &msg);
    json_object *calls = openai_tool_calls(msg);
    size_t clen = 0;
    if (json_object_object_get_ex(msg, "content", &content) &&
        json_object_is_type(content, json_type_string))
        clen = (size_t)json_object_get_string_len(content);
    if (clen == 0 && !calls && st->sent_role) return;
    chunk_begin(st);
    if (clen || !calls) {
        chunk_delta_member(&st->chunk, "\"content\":");
        buf_append_json_str(&st->chunk, clen ? json_object_get_string(content) : "", clen);
        if (clen) buf_append(&res->text, json_object_get_string(content), clen);
    }
    if (calls) chunk_tool_calls(st, calls);
    chunk_end_emit(st, NULL, sink);
    json_object_put(calls);
}

/* The done:true line: its last words, then a finish chunk, then usage. */
static void stream_finish(ollama_stream *st, json_object *line, stream_result *res,
                          const stream_sink *sink)
{
    stream_relay_message(st, line, res, sink);
    const char *fr = ollama_finish_reason(line, st->saw_tool_calls);
    chunk_begin(st);
    chunk_end_emit(st, fr, sink);
    snprintf(res->finish_reason, sizeof res->finish_reason, "%s", fr);
    res->usage = ollama_usage_map(line);
    res->prompt_tokens = res->usage.input_uncached;
    res->completion_tokens = res->usage.output;
    res->done = true;
}

static int ollama_stream_event(void *state, const stream_event *ev, stream_result *res,
                               const stream_sink *sink)
{
    ollama_stream *st = state;
    const char *d = ev->data ? ev->data : "";
    size_t n = ev->data ? ev->data_len : 0;
    while (n && (d[0] == ' ' || d[0] == '\t' || d[0] == '\r' || d[0] == '\n'))
        d++, n--;
    if (n == 0) return 0;
    if (!st) return stream_fail_garbage(res, "bridle: no stream state", NULL, 0);
    char why[96];
    json_object *line = provider_parse_object(st->tok, d, n, why, sizeof why), *e = NULL;
    if (!line) return stream_fail_garbage(res, why, d, n);
    if (json_object_object_get_ex(line, "error", &e) && e) {
        /* An error after the 200: no status, so an upstream server error. */
        provider_classify_status(500, &res->error);
        ollama_apply_error(e, &res->error);
        res->failed = true;
    } else if (is_true(line, "done")) {
        stream_finish(st, line, res, sink);
    } else {
        stream_relay_message(st, line, res, sink);
    }
    json_object_put(line);
    return 0;
}

const provider_ops ollama_ops = {
    .kind = "ollama",
    .framing = FRAMING_NDJSON,
    .needs_tree = true,
    .encode = ollama_encode,
    .decode = ollama_decode,
    .stream_new = ollama_stream_new,
    .stream_free = ollama_stream_free,
    .stream_event = ollama_stream_event,
    .classify = ollama_classify,
    .usage_map = ollama_usage_map,
};

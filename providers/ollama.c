/* Ollama's native API: POST {base_url}/api/chat (wire-formats §5.1).
 * Requests are rewritten into Ollama's shape (options, images, tool calls
 * with object arguments); answers and NDJSON streams are rebuilt into
 * OpenAI chat.completion objects and chunks. Ollama's /v1 endpoint is
 * served by the openai dialect instead. */
#include "providers/provider.h"
#include "providers/embeddings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"

#define OLLAMA_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* ------------------------------------------------------------ encode */

/* The encoder reads the client's tokens (canon_request.doc) and writes
 * Ollama's body straight into the upstream buffer, copying what Ollama
 * takes as OpenAI sent it (strings, options, schemas, tools) as the
 * client's bytes (jdoc_json_append). */
typedef struct oll_enc {
    const jdoc *d;
    uint32_t msgs; /* the messages array, for tool names */
    buf *b;        /* the body */
    buf text;      /* a message's text, unescaped */
    buf images;    /* a message's images, comma-separated JSON strings */
    buf scratch;   /* unescaped strings */
    jdoc args;     /* a tool call's arguments, validated */
    char *err;
    size_t errlen;
} oll_enc;

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

/* A line's logprobs (Ollama 0.12.11+, asked with logprobs): a list of
 * {token, logprob, bytes, top_logprobs}, OpenAI's logprobs.content entries
 * already; NULL when absent or empty. */
static json_object *line_logprobs(json_object *line)
{
    json_object *lp = NULL;
    if (!json_object_object_get_ex(line, "logprobs", &lp) ||
        !json_object_is_type(lp, json_type_array) || json_object_array_length(lp) == 0)
        return NULL;
    return lp;
}

/* Ollama has no developer role and no function role. */
static const char *ollama_role(const jdoc *d, uint32_t role)
{
    static const char *const same[] = {"system", "user", "assistant", "tool", NULL};
    if (jdoc_str_eq(d, role, "developer")) return "system";
    if (jdoc_str_eq(d, role, "function")) return "tool";
    for (const char *const *r = same; *r; r++)
        if (jdoc_str_eq(d, role, *r)) return *r;
    return NULL; /* canon lets no other role through */
}

/* Adds the base64 payload of a data: URI to the images list. Ollama takes
 * images only inline, so a remote URL cannot be expressed. */
static int encode_image(oll_enc *e, uint32_t part)
{
    const char *url, *b64 = NULL;
    size_t len;
    if (provider_image_url(e->d, part, &e->scratch, &url, &len) && len >= 5 &&
        memcmp(url, "data:", 5) == 0)
        b64 = memmem(url, len, ";base64,", 8);
    if (!b64) {
        snprintf(e->err, e->errlen, "ollama accepts images only as base64 data: URIs");
        return -1;
    }
    b64 += strlen(";base64,");
    if (e->images.len) buf_append_char(&e->images, ',');
    provider_append_json_str(&e->images, b64, (size_t)(url + len - b64));
    return 0;
}

/* Content parts → one text (parts are separate paragraphs) plus images. */
static int encode_parts(oll_enc *e, uint32_t content)
{
    const jdoc *d = e->d;
    size_t i = 0;
    for (uint32_t p = jdoc_first(d, content); p != JT_NONE; p = jdoc_next(d, content, p), i++) {
        uint32_t type = provider_doc_typed(d, p, "type", JT_STRING);
        const char *field = jdoc_str_eq(d, type, "text")      ? "text"
                            : jdoc_str_eq(d, type, "refusal") ? "refusal"
                                                              : NULL;
        if (type == JT_NONE) {
            snprintf(e->err, e->errlen, "content part %zu has no type", i);
            return -1;
        }
        if (jdoc_str_eq(d, type, "image_url")) {
            if (encode_image(e, p) < 0) return -1;
        } else if (field) {
            uint32_t s = provider_doc_typed(d, p, field, JT_STRING);
            if (s == JT_NONE) continue;
            if (e->text.len) buf_append_char(&e->text, '\n');
            jdoc_str_append(d, s, &e->text);
        } else {
            size_t len;
            const char *s = jdoc_str_view(d, type, &e->scratch, &len);
            snprintf(e->err, e->errlen, "ollama cannot take content parts of type \"%.*s\"",
                     len > 32 ? 32 : (int)len, s);
            return -1;
        }
    }
    return 0;
}

/* OpenAI tool calls carry arguments as a JSON string; Ollama wants the
 * object itself. */
static int encode_arguments(oll_enc *e, uint32_t args, size_t i)
{
    return provider_tool_args_append(e->d, args, i, &e->args, &e->scratch, e->b, e->err, e->errlen);
}

static int encode_tool_calls(oll_enc *e, uint32_t calls)
{
    const jdoc *d = e->d;
    size_t i = 0;
    buf_append_str(e->b, ",\"tool_calls\":[");
    for (uint32_t c = jdoc_first(d, calls); c != JT_NONE; c = jdoc_next(d, calls, c), i++) {
        uint32_t fn = provider_doc_get(d, c, "function");
        uint32_t name = provider_doc_typed(d, fn, "name", JT_STRING);
        if (name == JT_NONE) {
            snprintf(e->err, e->errlen, "tool call %zu has no function name", i);
            return -1;
        }
        buf_append_str(e->b, i ? ",{\"function\":{\"name\":" : "{\"function\":{\"name\":");
        jdoc_str_append_json(d, name, e->b);
        buf_append_str(e->b, ",\"arguments\":");
        if (encode_arguments(e, provider_doc_get(d, fn, "arguments"), i) < 0) return -1;
        buf_append_str(e->b, "}}");
    }
    buf_append_char(e->b, ']');
    return 0;
}

/* A tool result names its tool in Ollama; OpenAI names only the call id,
 * so look the id up in the earlier messages. */
static void encode_tool_name(oll_enc *e, uint32_t m)
{
    const jdoc *d = e->d;
    uint32_t name = provider_doc_typed(d, m, "name", JT_STRING);
    if (name == JT_NONE)
        name = provider_doc_call_name(d, e->msgs, m,
                                      provider_doc_typed(d, m, "tool_call_id", JT_STRING), false);
    if (jdoc_type(d, name) != JT_STRING) return;
    buf_append_str(e->b, ",\"tool_name\":");
    jdoc_str_append_json(d, name, e->b);
}

/* The content as one JSON string: a string content as it came, parts
 * joined (their images collected in e->images). */
static int encode_content(oll_enc *e, uint32_t content)
{
    buf_reset(&e->text);
    buf_reset(&e->images);
    if (jdoc_type(e->d, content) == JT_ARRAY && encode_parts(e, content) < 0) return -1;
    buf_append_str(e->b, ",\"content\":");
    if (jdoc_type(e->d, content) == JT_STRING)
        jdoc_str_append_json(e->d, content, e->b);
    else
        buf_append_json_str(e->b, e->text.data ? e->text.data : "", e->text.len);
    return 0;
}

static int encode_message(oll_enc *e, uint32_t m, size_t idx)
{
    const jdoc *d = e->d;
    const char *role = ollama_role(d, provider_doc_typed(d, m, "role", JT_STRING));
    if (!role) {
        snprintf(e->err, e->errlen, "message %zu has no role", idx);
        return -1;
    }
    buf_append_str(e->b, idx ? ",{\"role\":" : "{\"role\":");
    append_json_cstr(e->b, role);
    if (encode_content(e, provider_doc_get(d, m, "content")) < 0) return -1;
    if (e->images.len) {
        buf_append_str(e->b, ",\"images\":[");
        buf_append(e->b, e->images.data, e->images.len);
        buf_append_char(e->b, ']');
    }
    uint32_t calls = provider_doc_typed(d, m, "tool_calls", JT_ARRAY);
    if (calls != JT_NONE && encode_tool_calls(e, calls) < 0) return -1;
    if (strcmp(role, "tool") == 0) encode_tool_name(e, m);
    buf_append_char(e->b, '}');
    return 0;
}

static void options_member(buf *b, bool *first, const char *name)
{
    buf_append_str(b, *first ? ",\"options\":{" : ",");
    *first = false;
    append_json_cstr(b, name);
    buf_append_char(b, ':');
}

/* Sampling parameters live under "options" in Ollama's API, as the client
 * wrote them. */
static void encode_options(const canon_request *req, buf *b)
{
    static const char *const passed[] = {"temperature",       "top_p",           "top_k", "seed",
                                         "frequency_penalty", "presence_penalty"};
    const jdoc *d = req->doc;
    bool first = true;
    if (req->max_tokens >= 0) {
        options_member(b, &first, "num_predict");
        buf_printf(b, "%lld", (long long)req->max_tokens);
    }
    for (size_t i = 0; i < sizeof passed / sizeof passed[0]; i++) {
        uint32_t v = provider_doc_get(d, 0, passed[i]);
        if (v == JT_NONE) continue;
        options_member(b, &first, passed[i]);
        jdoc_json_append(d, v, b);
    }
    uint32_t stop = provider_doc_get(d, 0, "stop");
    if (stop != JT_NONE) {
        /* Ollama's stop is always a list; OpenAI allows a bare string. */
        options_member(b, &first, "stop");
        bool one = jdoc_type(d, stop) == JT_STRING;
        if (one) buf_append_char(b, '[');
        jdoc_json_append(d, stop, b);
        if (one) buf_append_char(b, ']');
    }
    if (!first) buf_append_char(b, '}');
}

/* "json" for json_object mode, the schema itself for json_schema. */
static void encode_format(const canon_request *req, buf *b)
{
    const jdoc *d = req->doc;
    if (!req->json_mode) return;
    uint32_t rf = provider_doc_get(d, 0, "response_format");
    uint32_t schema =
        provider_doc_typed(d, provider_doc_get(d, rf, "json_schema"), "schema", JT_OBJECT);
    if (jdoc_str_eq(d, provider_doc_get(d, rf, "type"), "json_schema") && schema != JT_NONE) {
        buf_append_str(b, ",\"format\":");
        jdoc_json_append(d, schema, b);
    } else {
        buf_append_str(b, ",\"format\":\"json\"");
    }
}

/* Ollama takes OpenAI's {type:"function", function:{…}} tools as is, but
 * has no tool_choice: "none" is kept by sending no tools, a named function
 * by sending only that tool, allowed_tools by sending its subset
 * ("required" cannot be expressed: the model may answer in text). */
static int encode_tools(oll_enc *e)
{
    const jdoc *d = e->d;
    uint32_t tools = provider_doc_typed(d, 0, "tools", JT_ARRAY);
    uint32_t tc = provider_doc_get(d, 0, "tool_choice");
    uint32_t named = provider_doc_typed(d, provider_doc_get(d, tc, "function"), "name", JT_STRING);
    uint32_t allowed = provider_doc_allowed_tools(d);
    if (tools == JT_NONE || jdoc_str_eq(d, tc, "none")) return 0;
    buf_append_str(e->b, ",\"tools\":");
    if (named == JT_NONE && allowed == JT_NONE) {
        jdoc_json_append(d, tools, e->b);
        return 0;
    }
    if (allowed != JT_NONE) { /* the subset, as the request wrote each */
        size_t sent = 0;
        buf_append_char(e->b, '[');
        for (uint32_t t = jdoc_first(d, tools); t != JT_NONE; t = jdoc_next(d, tools, t)) {
            if (!provider_doc_tool_offered(d, allowed, t)) continue;
            if (sent++) buf_append_char(e->b, ',');
            jdoc_json_append(d, t, e->b);
        }
        buf_append_char(e->b, ']');
        if (sent) return 0;
        snprintf(e->err, e->errlen,
                 "tool_choice.allowed_tools names none of the request's tools; name some of them");
        return -1;
    }
    for (uint32_t t = jdoc_first(d, tools); t != JT_NONE; t = jdoc_next(d, tools, t)) {
        uint32_t name =
            provider_doc_typed(d, provider_doc_get(d, t, "function"), "name", JT_STRING);
        if (name == JT_NONE || !jdoc_str_same(d, name, named)) continue;
        buf_append_char(e->b, '[');
        jdoc_json_append(d, t, e->b);
        buf_append_char(e->b, ']');
        return 0;
    }
    size_t len;
    const char *s = jdoc_str_view(d, named, &e->scratch, &len);
    snprintf(e->err, e->errlen,
             "tool_choice names the function \"%.*s\", which is not among the request's tools; "
             "add it to tools or name one of them",
             len > 64 ? 64 : (int)len, s);
    return -1;
}

/* logprobs / top_logprobs go as OpenAI names them (Ollama 0.12.11+). */
static void encode_logprobs(const jdoc *d, buf *b)
{
    int64_t top = 0;
    bool on = jdoc_type(d, provider_doc_get(d, 0, "logprobs")) == JT_TRUE;
    bool alts = jdoc_int64(d, provider_doc_get(d, 0, "top_logprobs"), &top) && top > 0;
    if (!on && !alts) return;
    buf_append_str(b, ",\"logprobs\":true");
    if (alts) buf_printf(b, ",\"top_logprobs\":%lld", (long long)top);
}

static int ollama_encode_body(const canon_request *req, const char *model, oll_enc *e)
{
    const jdoc *d = req->doc;
    buf *b = e->b;
    buf_append_str(b, "{\"model\":");
    append_json_cstr(b, model);
    buf_append_str(b, ",\"messages\":[");
    e->msgs = provider_doc_typed(d, 0, "messages", JT_ARRAY);
    size_t i = 0;
    for (uint32_t m = jdoc_first(d, e->msgs); m != JT_NONE; m = jdoc_next(d, e->msgs, m), i++)
        if (encode_message(e, m, i) < 0) return -1;
    buf_append_char(b, ']');
    /* Always explicit: Ollama streams unless told otherwise. */
    buf_append_str(b, req->stream ? ",\"stream\":true" : ",\"stream\":false");
    encode_options(req, b);
    encode_format(req, b);
    encode_logprobs(d, b);
    if (encode_tools(e) < 0) return -1;
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
    if (!model || !req || !req->doc || jdoc_type(req->doc, 0) != JT_OBJECT) {
        snprintf(err, errlen, "ollama: no upstream model or no request object");
        return -1;
    }
    const provider_conf *pc = t->provider;
    oll_enc e = {.d = req->doc, .b = &out->body, .err = err, .errlen = errlen};
    int rc = ollama_encode_body(req, model, &e);
    buf_free(&e.text);
    buf_free(&e.images);
    buf_free(&e.scratch);
    jdoc_free(&e.args);
    if (rc < 0) {
        buf_reset(&out->body);
        return -1;
    }
    buf_append_str(&out->url, pc->base_url);
    buf_append_str(&out->url, "/api/chat");
    if (pc->api_key && pc->api_key[0]) {
        /* Plain Ollama has no auth; a reverse proxy or ollama.com may. */
        upstream_request_add_bearer(out, pc->api_key);
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

/* Keeps the first `keep` calls (parallel_tool_calls false: Ollama cannot
 * be told); NULL when none is left. */
static json_object *calls_keep(json_object *calls, size_t keep)
{
    size_t n = calls ? json_object_array_length(calls) : 0;
    if (n > keep) json_object_array_del_idx(calls, keep, n - keep);
    if (calls && keep == 0) {
        json_object_put(calls);
        return NULL;
    }
    return calls;
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
    if (provider_one_tool_call(req)) calls = calls_keep(calls, 1);

    json_object *m = json_object_new_object();
    json_object_object_add(m, "role", json_object_new_string("assistant"));
    /* OpenAI says null, not "", next to tool calls; clients test for it */
    bool no_text = !content || !*content;
    json_object_object_add(
        m, "content", calls && no_text ? NULL : json_object_new_string(content ? content : ""));
    if (calls) json_object_object_add(m, "tool_calls", calls);
    const char *fr = ollama_finish_reason(obj, calls != NULL);
    json_object *choice = json_object_new_object();
    json_object_object_add(choice, "index", json_object_new_int(0));
    json_object_object_add(choice, "message", m);
    json_object *lp = line_logprobs(obj), *lpo = NULL;
    if (lp) {
        lpo = json_object_new_object();
        json_object_object_add(lpo, "content", json_object_get(lp));
        json_object_object_add(lpo, "refusal", NULL);
    }
    json_object_object_add(choice, "logprobs", lpo);
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
    bool one_call;      /* parallel_tool_calls false: the first call only */
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
    st->one_call = provider_one_tool_call(req);
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

/* Ends the chunk: `lp` is the line's logprobs list (or NULL), OpenAI's
 * logprobs.content as it is. */
static void chunk_end_emit(ollama_stream *st, json_object *lp, const char *finish,
                           const stream_sink *sink)
{
    buf *b = &st->chunk;
    if (lp) {
        buf_append_str(b, "},\"logprobs\":{\"content\":");
        provider_append_json(b, lp);
        buf_append_str(b, ",\"refusal\":null},\"finish_reason\":");
    } else {
        buf_append_str(b, "},\"logprobs\":null,\"finish_reason\":");
    }
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
static void chunk_tool_calls(ollama_stream *st, json_object *calls, stream_result *res)
{
    size_t n = json_object_array_length(calls);
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(calls, i), *fn = NULL;
        json_object_object_add(c, "index", json_object_new_int(st->tool_index++));
        json_object_object_get_ex(c, "function", &fn);
        const char *name = get_string(fn, "name"), *args = get_string(fn, "arguments");
        res->tool_bytes += (name ? strlen(name) : 0) + (args ? strlen(args) : 0);
    }
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
    if (st->one_call) calls = calls_keep(calls, st->tool_index > 0 ? 0 : 1);
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
    if (calls) chunk_tool_calls(st, calls, res);
    chunk_end_emit(st, line_logprobs(line), NULL, sink);
    json_object_put(calls);
}

/* The done:true line: its last words, then a finish chunk, then usage. */
static void stream_finish(ollama_stream *st, json_object *line, stream_result *res,
                          const stream_sink *sink)
{
    stream_relay_message(st, line, res, sink);
    const char *fr = ollama_finish_reason(line, st->saw_tool_calls);
    chunk_begin(st);
    chunk_end_emit(st, NULL, fr, sink);
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
    .encode = ollama_encode,
    .decode = ollama_decode,
    .stream_new = ollama_stream_new,
    .stream_free = ollama_stream_free,
    .stream_event = ollama_stream_event,
    .classify = ollama_classify,
    .usage_map = ollama_usage_map,
    .embed = &ollama_embed_ops,
};

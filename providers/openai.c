/* The OpenAI-compatible dialect: OpenAI itself, OpenRouter, DeepSeek,
 * Mistral, vLLM, LM Studio, Ollama's /v1. The client already speaks it, so
 * this adapter mostly passes bytes through: the request body is the
 * client's object with a few keys substituted, the answer is the upstream
 * object itself, and stream chunks are relayed as received. */
#include "providers/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/log.h"

#define OPENAI_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* ------------------------------------------------------------ encode */

/* What encode does with each top-level key of the client's body. */
typedef enum {
    KEY_PASS,           /* copied as is */
    KEY_MODEL,          /* replaced by the target's upstream model */
    KEY_STREAM,         /* rewritten from the canonical flag */
    KEY_STREAM_OPTIONS, /* replaced: bridle always asks for usage */
    KEY_MAX_TOKENS,     /* renamed to what the host wants */
    KEY_METADATA,       /* OpenAI only */
    KEY_DROP,           /* bridle's own keys, never forwarded */
} openai_key;

/* Keys under "bridle…" / "x-bridle…" / "x_bridle…" are bridle's own
 * (routing hints, tags) and mean nothing upstream; OpenAI would even
 * reject them as unknown parameters. Dispatch on the first byte keeps this
 * cheap for the common keys. */
static openai_key openai_classify_key(const char *k)
{
    switch (k[0]) {
    case 'm':
        if (strcmp(k, "model") == 0) return KEY_MODEL;
        if (strcmp(k, "max_tokens") == 0 || strcmp(k, "max_completion_tokens") == 0)
            return KEY_MAX_TOKENS;
        if (strcmp(k, "metadata") == 0) return KEY_METADATA;
        break;
    case 's':
        if (strcmp(k, "stream") == 0) return KEY_STREAM;
        if (strcmp(k, "stream_options") == 0) return KEY_STREAM_OPTIONS;
        break;
    case 'b':
        if (strncmp(k, "bridle", 6) == 0) return KEY_DROP;
        break;
    case 'x':
    case 'X':
        if (strncasecmp(k, "x-bridle", 8) == 0 || strncasecmp(k, "x_bridle", 8) == 0)
            return KEY_DROP;
        break;
    }
    return KEY_PASS;
}

/* Starts the member `key` (raw JSON text including quotes and colon). */
static void body_begin_member(buf *b, bool *first, const char *key_json, size_t len)
{
    if (!*first) buf_append_char(b, ',');
    *first = false;
    buf_append(b, key_json, len);
}
#define BODY_MEMBER(b, first, lit) body_begin_member((b), (first), lit, sizeof(lit) - 1)

static void body_append_max_tokens(buf *b, bool *first, const canon_request *req,
                                   const provider_conf *pc)
{
    if (pc->use_max_completion_tokens)
        BODY_MEMBER(b, first, "\"max_completion_tokens\":");
    else
        BODY_MEMBER(b, first, "\"max_tokens\":");
    /* By hand: vsnprintf twice (buf_printf) costs more than the rest. */
    char digits[24], *p = digits + sizeof digits;
    uint64_t v = (uint64_t)req->max_tokens;
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    buf_append(b, p, (size_t)(digits + sizeof digits - p));
}

/* Writes the client's object key by key with the substitutions above. It
 * never copies or mutates `root`: encode runs once per fallback target, on
 * the hot path. */
static void openai_encode_body(const canon_request *req, const target *t, const char *model, buf *b)
{
    const provider_conf *pc = t->provider;
    bool first = true, model_done = false, max_done = false, stream_done = false;
    buf_reserve(b, 1024);
    buf_append_char(b, '{');
    json_object_object_foreach(req->root, key, val)
    {
        switch (openai_classify_key(key)) {
        case KEY_PASS:
            if (!first) buf_append_char(b, ',');
            first = false;
            provider_append_json_str(b, key, strlen(key));
            buf_append_char(b, ':');
            provider_append_json(b, val);
            break;
        case KEY_MODEL:
            if (model_done) break;
            BODY_MEMBER(b, &first, "\"model\":");
            provider_append_json_str(b, model, strlen(model));
            model_done = true;
            break;
        case KEY_STREAM:
            BODY_MEMBER(b, &first, "\"stream\":");
            buf_append_str(b, req->stream ? "true" : "false");
            stream_done = true;
            break;
        case KEY_MAX_TOKENS:
            if (max_done || req->max_tokens < 0) break;
            body_append_max_tokens(b, &first, req, pc);
            max_done = true;
            break;
        case KEY_METADATA:
            /* Only OpenAI documents `metadata`; other hosts reject or
             * ignore it (wire-formats §1.2). use_max_completion_tokens is
             * the configuration's mark of OpenAI itself, so it gates this
             * too. */
            if (!pc->use_max_completion_tokens) break;
            BODY_MEMBER(b, &first, "\"metadata\":");
            provider_append_json(b, val);
            break;
        case KEY_STREAM_OPTIONS: /* written below from our own rule */
        case KEY_DROP:
            break;
        }
    }
    if (!model_done) {
        BODY_MEMBER(b, &first, "\"model\":");
        provider_append_json_str(b, model, strlen(model));
    }
    if (!stream_done && req->stream) BODY_MEMBER(b, &first, "\"stream\":true");
    if (!max_done && req->max_tokens >= 0) body_append_max_tokens(b, &first, req, pc);
    /* Billing needs the usage chunk whatever the client asked for
     * (wire-formats §1.6); the engine drops it if the client did not. */
    if (req->stream && pc->stream_usage)
        BODY_MEMBER(b, &first, "\"stream_options\":{\"include_usage\":true}");
    buf_append_char(b, '}');
}

static int openai_encode(const canon_request *req, const target *t, upstream_request *out,
                         char *err, size_t errlen)
{
    if (!t || !t->provider || !t->provider->base_url) {
        snprintf(err, errlen, "openai: target has no provider base_url");
        return -1;
    }
    const char *model = t->upstream_model ? t->upstream_model : t->model;
    if (!model) {
        snprintf(err, errlen, "openai: target has no upstream model");
        return -1;
    }
    if (!req || !json_object_is_type(req->root, json_type_object)) {
        snprintf(err, errlen, "openai: the request body is not a JSON object");
        return -1;
    }
    const provider_conf *pc = t->provider;
    buf_append_str(&out->url, pc->base_url);
    buf_append_str(&out->url, "/chat/completions");

    if (pc->api_key && pc->api_key[0]) {
        /* Local hosts (vLLM, LM Studio, Ollama) run without a key. */
        buf auth = BUF_INIT;
        buf_append_str(&auth, "Bearer ");
        buf_append_str(&auth, pc->api_key);
        upstream_request_add_header(out, "Authorization", auth.data);
        buf_free(&auth);
    }
    upstream_request_add_header(out, "Content-Type", "application/json");
    /* Empty: stops curl waiting for 100-continue on large prompts. */
    upstream_request_add_header(out, "Expect", "");
    upstream_request_add_header_lines(out, pc->extra_headers);
    upstream_request_finish_headers(out);

    openai_encode_body(req, t, model, &out->body);
    return 0;
}

/* ------------------------------------------------------------ usage */

static usage_record openai_usage_map(json_object *usage)
{
    usage_record u;
    memset(&u, 0, sizeof u);
    if (!json_object_is_type(usage, json_type_object)) return u;
    int64_t prompt = 0, completion = 0, cached = 0, cache_write = 0, reasoning = 0;
    bool has_prompt = provider_get_count(usage, "prompt_tokens", &prompt);
    bool has_completion = provider_get_count(usage, "completion_tokens", &completion);
    json_object *details = NULL;
    if (json_object_object_get_ex(usage, "prompt_tokens_details", &details)) {
        provider_get_count(details, "cached_tokens", &cached);
        provider_get_count(details, "cache_write_tokens", &cache_write);
    }
    if (json_object_object_get_ex(usage, "completion_tokens_details", &details))
        provider_get_count(details, "reasoning_tokens", &reasoning);

    u.cache_read = cached;
    u.cache_write_5m = cache_write;
    /* cached and written tokens are both part of prompt_tokens. A host that
     * reports more than the total must not make the bill negative. */
    u.input_uncached = prompt - cached - cache_write;
    if (u.input_uncached < 0) u.input_uncached = 0;

    /* DeepSeek reports the split itself; it wins over the derivation. */
    int64_t hit = 0, miss = 0;
    bool has_hit = provider_get_count(usage, "prompt_cache_hit_tokens", &hit);
    bool has_miss = provider_get_count(usage, "prompt_cache_miss_tokens", &miss);
    if (has_hit || has_miss) {
        u.cache_read = has_hit ? hit : (prompt > miss ? prompt - miss : 0);
        u.input_uncached = has_miss ? miss : (prompt > hit ? prompt - hit : 0);
    }
    u.output = completion;
    u.reasoning = reasoning;
    u.exact = has_prompt && has_completion;
    return u;
}

/* ------------------------------------------------------------ errors */

/* Blanks control characters so a message is one clean log line. */
static void text_blank_controls(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20) *s = ' ';
}

/* Refines `out` (already classified by status) with an OpenAI error value:
 * {"message","type","code"} or, from some hosts, a bare string. */
static void openai_apply_error(json_object *e, upstream_error *out)
{
    /* 401/403 text may quote bridle's key back ("Incorrect API key
     * provided: sk-…"); keep the generic message and ignore codes. */
    if (strcmp(out->type, "upstream_auth_error") == 0) return;
    if (json_object_is_type(e, json_type_string)) {
        provider_error_add_detail(out, json_object_get_string(e),
                                  (size_t)json_object_get_string_len(e));
        return;
    }
    if (!json_object_is_type(e, json_type_object)) return;
    json_object *code = NULL, *type = NULL, *msg = NULL;
    json_object_object_get_ex(e, "code", &code);
    json_object_object_get_ex(e, "type", &type);
    if (!(json_object_is_type(code, json_type_string) &&
          provider_classify_code(json_object_get_string(code), out)) &&
        json_object_is_type(type, json_type_string))
        provider_classify_code(json_object_get_string(type), out);
    if (json_object_object_get_ex(e, "message", &msg) && json_object_is_type(msg, json_type_string))
        provider_error_add_detail(out, json_object_get_string(msg),
                                  (size_t)json_object_get_string_len(msg));
}

static void openai_classify(int status, const upstream_headers *hs, const char *body, size_t len,
                            upstream_error *out)
{
    provider_classify_status(status, out);
    out->retry_after_ms = provider_retry_after_ms(hs);
    char why[96];
    json_object *obj = body && len ? provider_parse_object(NULL, body, len, why, sizeof why) : NULL;
    json_object *e = NULL;
    if (obj && json_object_object_get_ex(obj, "error", &e)) {
        openai_apply_error(e, out);
    } else if (body && len && strcmp(out->type, "upstream_auth_error") != 0) {
        /* A proxy's HTML page or plain text: a short piece helps. */
        char snippet[160];
        snprintf(snippet, sizeof snippet, "non-JSON body: %.*s", len > 120 ? 120 : (int)len, body);
        provider_error_add_detail(out, snippet, strlen(snippet));
    }
    json_object_put(obj);
    /* OpenAI marks errors that a retry cannot fix (wire-formats §1.8). */
    const char *should = upstream_header_get(hs, "x-should-retry");
    if (should && strcmp(should, "false") == 0 && out->cls != ERRCLASS_FATAL)
        out->cls = ERRCLASS_FATAL;
}

/* ------------------------------------------------------------ decode */

static void copy_finish_reason(char *dst, size_t cap, json_object *fr)
{
    if (json_object_is_type(fr, json_type_string))
        snprintf(dst, cap, "%s", json_object_get_string(fr));
}

static int openai_decode(const canon_request *req, const target *t, const char *body, size_t len,
                         decoded_response *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char why[96];
    json_object *obj = provider_parse_object(NULL, body, len, why, sizeof why);
    json_object *choices = NULL, *e = NULL;
    if (obj && !(json_object_object_get_ex(obj, "choices", &choices) &&
                 json_object_is_type(choices, json_type_array))) {
        /* Some hosts answer 200 with an error object inside. */
        json_object *msg = NULL;
        if (json_object_object_get_ex(obj, "error", &e) &&
            json_object_object_get_ex(e, "message", &msg) &&
            json_object_is_type(msg, json_type_string))
            snprintf(why, sizeof why, "it carries an error: %.60s", json_object_get_string(msg));
        else
            snprintf(why, sizeof why, "no choices array");
        json_object_put(obj);
        obj = NULL;
    }
    if (!obj) {
        snprintf(err, errlen, "upstream answered 200 with a body that is not a chat.completion: %s",
                 why);
        text_blank_controls(err);
        return -1;
    }
    out->body = obj;
    json_object *usage = NULL;
    json_object_object_get_ex(obj, "usage", &usage);
    out->usage = openai_usage_map(usage);
    provider_get_count(usage, "prompt_tokens", &out->prompt_tokens);
    provider_get_count(usage, "completion_tokens", &out->completion_tokens);
    json_object *fr = NULL;
    if (json_object_array_length(choices) > 0)
        json_object_object_get_ex(json_object_array_get_idx(choices, 0), "finish_reason", &fr);
    copy_finish_reason(out->finish_reason, sizeof out->finish_reason, fr);
    return 0;
}

/* ------------------------------------------------------------ stream */

typedef struct openai_stream {
    json_tokener *tok; /* reused for every chunk: no allocation per event */
} openai_stream;

static void *openai_stream_new(const canon_request *req, const target *t)
{
    openai_stream *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->tok = json_tokener_new();
    if (!st->tok) {
        free(st);
        return NULL;
    }
    return st;
}

static void openai_stream_free(void *state)
{
    openai_stream *st = state;
    if (!st) return;
    json_tokener_free(st->tok);
    free(st);
}

static int stream_fail_garbage(stream_result *res, const char *d, size_t n, const char *why)
{
    provider_bad_response_error(why, d, n, &res->error);
    res->failed = true;
    return -1;
}

/* A mid-stream error has no HTTP status; some hosts (OpenRouter) put one in
 * error.code, otherwise it counts as an upstream server error. */
static void stream_fail_error(stream_result *res, json_object *e)
{
    int64_t status = 500;
    if (!provider_get_int(e, "code", &status) || status < 400 || status > 599) status = 500;
    provider_classify_status((int)status, &res->error);
    openai_apply_error(e, &res->error);
    res->failed = true;
}

static void stream_record_usage(stream_result *res, json_object *usage)
{
    res->usage = openai_usage_map(usage);
    provider_get_count(usage, "prompt_tokens", &res->prompt_tokens);
    provider_get_count(usage, "completion_tokens", &res->completion_tokens);
}

/* Finish reason from any choice; the text of choice 0 only, since the
 * cascade checks read one answer. */
static void stream_note_choices(stream_result *res, json_object *choices)
{
    size_t n = json_object_array_length(choices);
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(choices, i), *v = NULL, *delta = NULL;
        if (json_object_object_get_ex(c, "finish_reason", &v))
            copy_finish_reason(res->finish_reason, sizeof res->finish_reason, v);
        int64_t index = (int64_t)i;
        provider_get_int(c, "index", &index);
        if (index == 0 && json_object_object_get_ex(c, "delta", &delta) &&
            json_object_object_get_ex(delta, "content", &v) &&
            json_object_is_type(v, json_type_string))
            buf_append(&res->text, json_object_get_string(v),
                       (size_t)json_object_get_string_len(v));
    }
}

static void sink_emit(const stream_sink *sink, const char *json, size_t len)
{
    if (sink && sink->chunk) sink->chunk(sink->ctx, json, len);
}

static void sink_emit_object(const stream_sink *sink, json_object *obj)
{
    size_t len;
    const char *s = json_object_to_json_string_length(obj, OPENAI_JSON_FLAGS, &len);
    sink_emit(sink, s, len);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int openai_stream_event(void *state, const stream_event *ev, stream_result *res,
                               const stream_sink *sink)
{
    openai_stream *st = state;
    const char *d = ev->data ? ev->data : "";
    size_t n = ev->data ? ev->data_len : 0;
    while (n && is_space(d[0]))
        d++, n--;
    while (n && is_space(d[n - 1]))
        n--;
    if (n == 0) /* an empty data field: a keep-alive */
        return 0;
    if (n == 6 && memcmp(d, "[DONE]", 6) == 0) {
        res->done = true;
        return 0;
    }
    /* Cheap pre-check before the parser sees it. */
    if (d[0] != '{') return stream_fail_garbage(res, d, n, "not JSON");
    char why[96];
    json_object *obj = provider_parse_object(st ? st->tok : NULL, d, n, why, sizeof why);
    if (!obj) return stream_fail_garbage(res, d, n, why);

    json_object *e = NULL, *choices = NULL, *usage = NULL;
    if (json_object_object_get_ex(obj, "error", &e) && e) {
        stream_fail_error(res, e);
        json_object_put(obj);
        return 0;
    }
    json_object_object_get_ex(obj, "usage", &usage);
    bool has_usage = json_object_is_type(usage, json_type_object);
    if (has_usage) stream_record_usage(res, usage);
    if (!json_object_object_get_ex(obj, "choices", &choices) ||
        !json_object_is_type(choices, json_type_array) ||
        (has_usage && json_object_array_length(choices) == 0)) {
        /* The usage chunk (the caller makes its own) or nothing to relay. */
        json_object_put(obj);
        return 0;
    }
    stream_note_choices(res, choices);
    if (has_usage) {
        /* Usage on a content chunk (some hosts do this): relay the content,
         * keep the usage for the caller's own usage chunk. */
        json_object_object_del(obj, "usage");
        sink_emit_object(sink, obj);
    } else if (memchr(d, '\n', n) || memchr(d, '\r', n)) {
        /* JSON spread over several data: lines would break the client's
         * SSE framing if relayed as one line. */
        sink_emit_object(sink, obj);
    } else {
        sink_emit(sink, d, n);
    }
    json_object_put(obj);
    return 0;
}

const provider_ops openai_ops = {
    .kind = "openai",
    .framing = FRAMING_SSE,
    .encode = openai_encode,
    .decode = openai_decode,
    .stream_new = openai_stream_new,
    .stream_free = openai_stream_free,
    .stream_event = openai_stream_event,
    .classify = openai_classify,
    .usage_map = openai_usage_map,
};

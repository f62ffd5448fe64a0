/* The OpenAI-compatible dialect: OpenAI itself, OpenRouter, DeepSeek,
 * Mistral, vLLM, LM Studio, Ollama's /v1. The client already speaks it, so
 * this adapter mostly passes bytes through: the request body is the
 * client's object with a few keys substituted, the answer is the upstream
 * object itself, and stream chunks are relayed as received. */
#include "providers/provider.h"
#include "providers/embeddings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/jtok.h"
#include "lib/log.h"
#include "lib/util.h"

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
    KEY_REASONING,      /* reasoning_effort / reasoning: not to a model bridle chose that can't */
    KEY_DROP,           /* bridle's own keys, never forwarded */
    KEY_MESSAGES_API,   /* carries the Messages way in's extensions (router/messages.h) */
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
        if (strcmp(k, "messages") == 0) return KEY_MESSAGES_API;
        if (strcmp(k, "max_tokens") == 0 || strcmp(k, "max_completion_tokens") == 0)
            return KEY_MAX_TOKENS;
        if (strcmp(k, "metadata") == 0) return KEY_METADATA;
        break;
    case 'r':
        if (strcmp(k, "reasoning_effort") == 0 || strcmp(k, "reasoning") == 0) return KEY_REASONING;
        break;
    case 'c':
        if (strcmp(k, "cache_control") == 0) return KEY_MESSAGES_API;
        break;
    case 't':
        if (strcmp(k, "top_k") == 0 || strcmp(k, "thinking") == 0 || strcmp(k, "tools") == 0)
            return KEY_MESSAGES_API;
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

/* A member of the client's object, its key and value as they were sent. */
static void body_copy_member(buf *b, bool *first, const char *raw_key, size_t rlen,
                             const char *raw_val, size_t vlen)
{
    if (!*first) buf_append_char(b, ',');
    *first = false;
    buf_append(b, raw_key, rlen);
    buf_append_char(b, ':');
    buf_append(b, raw_val, vlen);
}

static void body_append_max_tokens(buf *b, bool *first, const canon_request *req,
                                   const provider_conf *pc)
{
    if (pc->use_max_completion_tokens)
        BODY_MEMBER(b, first, "\"max_completion_tokens\":");
    else
        BODY_MEMBER(b, first, "\"max_tokens\":");
    /* By hand: vsnprintf twice (buf_printf) costs more than the rest. */
    buf_append_u64(b, (uint64_t)req->max_tokens);
}

/* ------------------------------------------------------------ encode: Messages extensions */

/* Appends object o without its members named in drop; the value of a
 * member named `inner` goes through inner_fn instead of as it came. */
static void object_copy_without(const jdoc *d, uint32_t o, const char *const *drop,
                                const char *inner, void (*inner_fn)(const jdoc *, uint32_t, buf *),
                                buf *b)
{
    buf_append_char(b, '{');
    bool first = true;
    for (uint32_t k = jdoc_first(d, o); k != JT_NONE; k = jdoc_next(d, o, k)) {
        bool dropped = false;
        for (int i = 0; drop[i] && !dropped; i++)
            dropped = jdoc_str_eq(d, k, drop[i]);
        if (dropped) continue;
        if (!first) buf_append_char(b, ',');
        first = false;
        jdoc_raw_append(d, k, b);
        buf_append_char(b, ':');
        if (inner && jdoc_str_eq(d, k, inner))
            inner_fn(d, k + 1, b);
        else
            jdoc_raw_append(d, k + 1, b);
    }
    buf_append_char(b, '}');
}

static const char *const no_cache_control[] = {"cache_control", NULL};

/* An array whose object items lose their cache_control (content parts,
 * tools); anything else is copied as it came. */
static void items_copy(const jdoc *d, uint32_t arr, buf *b)
{
    if (jdoc_type(d, arr) != JT_ARRAY) {
        jdoc_raw_append(d, arr, b);
        return;
    }
    buf_append_char(b, '[');
    for (uint32_t v = jdoc_first(d, arr); v != JT_NONE; v = jdoc_next(d, arr, v)) {
        if (v != jdoc_first(d, arr)) buf_append_char(b, ',');
        if (jdoc_type(d, v) == JT_OBJECT)
            object_copy_without(d, v, no_cache_control, NULL, NULL, b);
        else
            jdoc_raw_append(d, v, b);
    }
    buf_append_char(b, ']');
}

static void messages_copy(const jdoc *d, uint32_t msgs, buf *b)
{
    static const char *const drop[] = {"cache_control", "thinking_blocks", "is_error", NULL};
    if (jdoc_type(d, msgs) != JT_ARRAY) {
        jdoc_raw_append(d, msgs, b);
        return;
    }
    buf_append_char(b, '[');
    for (uint32_t m = jdoc_first(d, msgs); m != JT_NONE; m = jdoc_next(d, msgs, m)) {
        if (m != jdoc_first(d, msgs)) buf_append_char(b, ',');
        if (jdoc_type(d, m) == JT_OBJECT)
            object_copy_without(d, m, drop, "content", items_copy, b);
        else
            jdoc_raw_append(d, m, b);
    }
    buf_append_char(b, ']');
}

/* A request that came in through /v1/messages carries members Anthropic
 * reads and OpenAI refuses: messages and tools lose them, top_k and
 * cache_control are left out, and a thinking budget becomes the effort
 * that fits under it (for a model that reasons). Anything else, and any
 * chat request, is copied as it came. */
static void copy_without_signatures(const jdoc *d, uint32_t v, buf *b);

static void messages_api_member(const canon_request *req, const target *t, const char *key,
                                uint32_t k, bool signed_ids, bool *first, buf *b)
{
    const jdoc *d = req->doc;
    size_t rlen, vlen;
    const char *raw_key = jdoc_raw(d, k, &rlen), *raw_val = jdoc_raw(d, k + 1, &vlen);
    if (!req->messages_api && signed_ids && strcmp(key, "messages") == 0) {
        body_copy_member(b, first, raw_key, rlen, "", 0);
        copy_without_signatures(d, k + 1, b);
        return;
    }
    if (!req->messages_api) {
        body_copy_member(b, first, raw_key, rlen, raw_val, vlen);
        return;
    }
    if (strcmp(key, "messages") == 0 || strcmp(key, "tools") == 0) {
        body_copy_member(b, first, raw_key, rlen, "", 0);
        (key[0] == 'm' ? messages_copy : items_copy)(d, k + 1, b);
        return;
    }
    int64_t budget = 0;
    if (strcmp(key, "thinking") == 0 && provider_reasons(t) &&
        provider_doc_int(d, provider_doc_get(d, k + 1, "budget_tokens"), &budget) && budget > 0) {
        BODY_MEMBER(b, first, "\"reasoning_effort\":\"");
        buf_append_str(b, provider_reasoning_effort(budget));
        buf_append_char(b, '"');
    }
}

/* Copies the JSON value v, every "id" / "tool_call_id" string in it that
 * carries a Gemini thought signature (PROVIDER_THOUGHT_SEP, gemini.c) cut
 * before it: OpenAI refuses tool call ids over 40 characters, and a
 * conversation begun on Gemini 3 may go on here (failover, auto). */
static void copy_without_signatures(const jdoc *d, uint32_t v, buf *b)
{
    size_t len;
    const char *raw = jdoc_raw(d, v, &len);
    jt_type type = jdoc_type(d, v);
    if (type != JT_OBJECT && type != JT_ARRAY) {
        buf_append(b, raw, len);
        return;
    }
    buf_append_char(b, type == JT_OBJECT ? '{' : '[');
    bool first = true;
    for (uint32_t k = jdoc_first(d, v); k != JT_NONE; k = jdoc_next(d, v, k)) {
        if (!first) buf_append_char(b, ',');
        first = false;
        if (type == JT_ARRAY) {
            copy_without_signatures(d, k, b);
            continue;
        }
        size_t kl, vl;
        const char *kr = jdoc_raw(d, k, &kl), *vr = jdoc_raw(d, k + 1, &vl);
        buf_append(b, kr, kl);
        buf_append_char(b, ':');
        const char *sep =
            jdoc_type(d, k + 1) == JT_STRING &&
                    (jdoc_str_eq(d, k, "id") || jdoc_str_eq(d, k, "tool_call_id"))
                ? memmem(vr, vl, PROVIDER_THOUGHT_SEP, sizeof PROVIDER_THOUGHT_SEP - 1)
                : NULL;
        if (sep && sep > vr + 1) { /* the raw string up to the separator, closed */
            buf_append(b, vr, (size_t)(sep - vr));
            buf_append_char(b, '"');
        } else {
            copy_without_signatures(d, k + 1, b);
        }
    }
    buf_append_char(b, type == JT_OBJECT ? '}' : ']');
}

/* Copies the client's object key by key from its original bytes with the
 * substitutions above: nothing is re-serialised, only the few keys that
 * change are written anew. Runs once per fallback target, on the hot path. */
static void openai_encode_body(const canon_request *req, const target *t, const char *model, buf *b)
{
    const provider_conf *pc = t->provider;
    const jdoc *d = req->doc;
    bool first = true, model_done = false, max_done = false, stream_done = false;
    /* cheap: a body that carries no Gemini signature is copied as it is */
    bool signed_ids = req->body && memmem(req->body, req->body_len, PROVIDER_THOUGHT_SEP,
                                          sizeof PROVIDER_THOUGHT_SEP - 1) != NULL;
    buf_reserve(b, req->body_len + 64);
    buf_append_char(b, '{');
    buf key = BUF_INIT;
    for (uint32_t k = jdoc_first(d, 0); k != JT_NONE; k = jdoc_next(d, 0, k)) {
        size_t rlen, vlen;
        const char *raw_key = jdoc_raw(d, k, &rlen);
        const char *raw_val = jdoc_raw(d, k + 1, &vlen);
        buf_reset(&key);
        jdoc_str_append(d, k, &key);
        switch (openai_classify_key(key.data)) {
        case KEY_PASS:
            body_copy_member(b, &first, raw_key, rlen, raw_val, vlen);
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
            buf_append(b, raw_val, vlen);
            break;
        case KEY_REASONING:
            /* A model the client named gets what the client sent. One that
             * routing chose and that does not reason would refuse the
             * request (OpenAI: 400 unsupported parameter) for a control the
             * client meant for whichever model answers: dropped. */
            if (!req->model_chosen || provider_reasons(t))
                body_copy_member(b, &first, raw_key, rlen, raw_val, vlen);
            break;
        case KEY_MESSAGES_API:
            messages_api_member(req, t, key.data, k, signed_ids, &first, b);
            break;
        case KEY_STREAM_OPTIONS: /* written below from our own rule */
        case KEY_DROP:
            break;
        }
    }
    buf_free(&key);
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
    /* Chat Completions has no reasoning-token budget, only an effort
     * (max_completion_tokens bounds the answer too): the cap becomes the
     * effort whose nominal budget fits under it. One test when no cap. */
    int64_t thinking = provider_thinking_budget(req, t);
    if (thinking > 0) {
        BODY_MEMBER(b, &first, "\"reasoning_effort\":\"");
        buf_append_str(b, provider_reasoning_effort(thinking));
        buf_append_char(b, '"');
    }
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
    if (!req || !req->doc || jdoc_type(req->doc, 0) != JT_OBJECT) {
        snprintf(err, errlen, "openai: the request body is not a JSON object");
        return -1;
    }
    const provider_conf *pc = t->provider;
    buf_append_str(&out->url, pc->base_url);
    buf_append_str(&out->url, "/chat/completions");

    if (pc->api_key && pc->api_key[0]) {
        /* Local hosts (vLLM, LM Studio, Ollama) run without a key. */
        upstream_request_add_bearer(out, pc->api_key);
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

/* A non-negative count at obj.key (clamped like provider_get_count). */
static bool doc_count(const jdoc *d, uint32_t obj, const char *key, int64_t *out)
{
    int64_t v;
    if (!jdoc_int64(d, jdoc_get(d, obj, key), &v)) return false;
    *out = v < 0 ? 0 : v > 1000000000000LL ? 1000000000000LL : v;
    return true;
}

/* The OpenAI usage object at index `usage` → a usage record, plus the
 * client-facing prompt/completion counts. */
static usage_record usage_from_doc(const jdoc *d, uint32_t usage, int64_t *prompt_out,
                                   int64_t *completion_out)
{
    usage_record u;
    memset(&u, 0, sizeof u);
    if (jdoc_type(d, usage) != JT_OBJECT) return u;
    int64_t prompt = 0, completion = 0, cached = 0, cache_write = 0, reasoning = 0;
    bool has_prompt = doc_count(d, usage, "prompt_tokens", &prompt);
    bool has_completion = doc_count(d, usage, "completion_tokens", &completion);
    uint32_t details = jdoc_get(d, usage, "prompt_tokens_details");
    doc_count(d, details, "cached_tokens", &cached);
    doc_count(d, details, "cache_write_tokens", &cache_write);
    doc_count(d, jdoc_get(d, usage, "completion_tokens_details"), "reasoning_tokens", &reasoning);

    u.cache_read = cached;
    u.cache_write_5m = cache_write;
    /* cached and written tokens are both part of prompt_tokens. A host that
     * reports more than the total must not make the bill negative. */
    u.input_uncached = prompt - cached - cache_write;
    if (u.input_uncached < 0) u.input_uncached = 0;

    /* DeepSeek reports the split itself; it wins over the derivation. */
    int64_t hit = 0, miss = 0;
    bool has_hit = doc_count(d, usage, "prompt_cache_hit_tokens", &hit);
    bool has_miss = doc_count(d, usage, "prompt_cache_miss_tokens", &miss);
    if (has_hit || has_miss) {
        u.cache_read = has_hit ? hit : (prompt > miss ? prompt - miss : 0);
        u.input_uncached = has_miss ? miss : (prompt > hit ? prompt - hit : 0);
    }
    u.output = completion;
    u.reasoning = reasoning;
    u.exact = has_prompt && has_completion;
    if (prompt_out) *prompt_out = prompt;
    if (completion_out) *completion_out = completion;
    return u;
}

/* The table's entry point; the hot paths read usage straight from tokens. */
static usage_record openai_usage_map(json_object *usage)
{
    usage_record u;
    memset(&u, 0, sizeof u);
    if (!json_object_is_type(usage, json_type_object)) return u;
    size_t len;
    const char *s = json_object_to_json_string_length(usage, OPENAI_JSON_FLAGS, &len);
    jdoc d = JDOC_INIT;
    if (jdoc_parse(&d, s, len, NULL, 0, NULL) == 0) u = usage_from_doc(&d, 0, NULL, NULL);
    jdoc_free(&d);
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

static void copy_finish_reason(const jdoc *d, uint32_t fr, char *dst, size_t cap)
{
    if (jdoc_type(d, fr) != JT_STRING) return;
    const jtok *t = &d->t[fr];
    if (!t->escaped && cap) { /* the usual case: the bytes as they are, no snprintf */
        size_t n = t->end - t->start < cap ? t->end - t->start : cap - 1;
        memcpy(dst, d->src + t->start, n);
        dst[n] = '\0';
        return;
    }
    buf tmp = BUF_INIT;
    jdoc_str_append(d, fr, &tmp);
    snprintf(dst, cap, "%s", tmp.data);
    buf_free(&tmp);
}

/* Decoding only validates the answer and reads its usage and finish reason:
 * the client gets the upstream bytes as they are. */
static int openai_decode(const canon_request *req, const target *t, const char *body, size_t len,
                         decoded_response *out, char *err, size_t errlen)
{
    static jdoc d = JDOC_INIT; /* one thread per process: reused scratch */
    memset(out, 0, sizeof *out);
    char why[96] = "";
    size_t pos = 0;
    if (jdoc_parse(&d, body, len, why, sizeof why, &pos) != 0) {
        snprintf(err, errlen,
                 "upstream answered 200 with a body that is not a chat.completion: invalid JSON "
                 "(%s at byte %zu)",
                 why, pos);
        return -1;
    }
    uint32_t choices = jdoc_get(&d, 0, "choices");
    if (jdoc_type(&d, choices) != JT_ARRAY) {
        /* Some hosts answer 200 with an error object inside. */
        uint32_t msg = jdoc_get(&d, jdoc_get(&d, 0, "error"), "message");
        buf m = BUF_INIT;
        if (jdoc_type(&d, msg) == JT_STRING) jdoc_str_append(&d, msg, &m);
        snprintf(err, errlen,
                 "upstream answered 200 with a body that is not a chat.completion: %s%.60s",
                 m.len ? "it carries an error: " : "no choices array", m.len ? m.data : "");
        buf_free(&m);
        text_blank_controls(err);
        return -1;
    }
    out->raw = body;
    out->raw_len = len;
    out->usage =
        usage_from_doc(&d, jdoc_get(&d, 0, "usage"), &out->prompt_tokens, &out->completion_tokens);
    copy_finish_reason(&d, jdoc_get(&d, jdoc_index(&d, choices, 0), "finish_reason"),
                       out->finish_reason, sizeof out->finish_reason);
    return 0;
}

/* ------------------------------------------------------------ stream */

typedef struct openai_stream {
    jdoc doc; /* token array reused for every chunk */
    buf tmp;  /* a re-framed chunk */
} openai_stream;

static void *openai_stream_new(const canon_request *req, const target *t)
{
    return calloc(1, sizeof(openai_stream));
}

static void openai_stream_free(void *state)
{
    openai_stream *st = state;
    if (!st) return;
    jdoc_free(&st->doc);
    buf_free(&st->tmp);
    free(st);
}

static int stream_fail_garbage(stream_result *res, const char *d, size_t n, const char *why)
{
    provider_bad_response_error(why, d, n, &res->error);
    res->failed = true;
    return -1;
}

/* A mid-stream error has no HTTP status; some hosts (OpenRouter) put one in
 * error.code, otherwise it counts as an upstream server error. The error
 * value is small and rare: json-c reads it like a non-2xx body. */
static void stream_fail_error(stream_result *res, const jdoc *d, uint32_t e)
{
    size_t len;
    const char *raw = jdoc_raw(d, e, &len);
    char why[64];
    json_object *obj = provider_parse_object(NULL, raw, len, why, sizeof why);
    int64_t status = 500;
    if (!provider_get_int(obj, "code", &status) || status < 400 || status > 599) status = 500;
    provider_classify_status((int)status, &res->error);
    openai_apply_error(obj, &res->error);
    json_object_put(obj);
    res->failed = true;
}

/* A string token's length unescaped, as the other dialects count it; 0
 * for anything else. */
static size_t str_token_len(const jdoc *d, uint32_t v)
{
    static buf scratch; /* one thread per process */
    if (jdoc_type(d, v) != JT_STRING) return 0;
    if (!d->t[v].escaped) return d->t[v].end - d->t[v].start;
    buf_reset(&scratch);
    jdoc_str_append(d, v, &scratch);
    return scratch.len;
}

/* Finish reason from any choice; the text of choice 0 only, since the
 * cascade checks read one answer; the bytes of every tool call. */
static void stream_note_choices(stream_result *res, const jdoc *d, uint32_t choices)
{
    for (uint32_t c = jdoc_first(d, choices); c != JT_NONE; c = jdoc_next(d, choices, c)) {
        copy_finish_reason(d, jdoc_get(d, c, "finish_reason"), res->finish_reason,
                           sizeof res->finish_reason);
        int64_t index = 0;
        jdoc_int64(d, jdoc_get(d, c, "index"), &index);
        uint32_t delta = jdoc_get(d, c, "delta");
        uint32_t content = jdoc_get(d, delta, "content");
        if (index == 0 && jdoc_type(d, content) == JT_STRING)
            jdoc_str_append(d, content, &res->text);
        uint32_t calls = jdoc_get(d, delta, "tool_calls");
        for (uint32_t tc = jdoc_first(d, calls); tc != JT_NONE; tc = jdoc_next(d, calls, tc)) {
            uint32_t fn = jdoc_get(d, tc, "function");
            res->tool_bytes += str_token_len(d, jdoc_get(d, fn, "name")) +
                               str_token_len(d, jdoc_get(d, fn, "arguments"));
        }
    }
}

static void sink_emit(const stream_sink *sink, const char *json, size_t len)
{
    if (sink && sink->chunk) sink->chunk(sink->ctx, json, len);
}

/* The chunk's members but `usage`, as one line: for usage riding on a
 * content chunk, and for JSON spread over several data: lines (relayed as
 * is it would break the client's SSE framing). */
static void emit_reframed(openai_stream *st, const stream_sink *sink, bool drop_usage)
{
    const jdoc *d = &st->doc;
    buf *b = &st->tmp;
    buf_reset(b);
    buf_append_char(b, '{');
    for (uint32_t k = jdoc_first(d, 0); k != JT_NONE; k = jdoc_next(d, 0, k)) {
        if (drop_usage && jdoc_str_eq(d, k, "usage")) continue;
        size_t kl, vl;
        const char *kr = jdoc_raw(d, k, &kl), *vr = jdoc_raw(d, k + 1, &vl);
        if (b->len > 1) buf_append_char(b, ',');
        buf_append(b, kr, kl);
        buf_append_char(b, ':');
        /* values keep their bytes; a raw newline can only sit between tokens */
        for (size_t i = 0; i < vl; i++)
            buf_append_char(b, vr[i] == '\n' || vr[i] == '\r' ? ' ' : vr[i]);
    }
    buf_append_char(b, '}');
    sink_emit(sink, b->data, b->len);
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
    if (!st || d[0] != '{') return stream_fail_garbage(res, d, n, "not JSON");
    char why[96];
    if (jdoc_parse(&st->doc, d, n, why, sizeof why, NULL) != 0)
        return stream_fail_garbage(res, d, n, why);
    const jdoc *doc = &st->doc;
    uint32_t e = jdoc_get(doc, 0, "error");
    if (e != JT_NONE && jdoc_type(doc, e) != JT_NULL) {
        stream_fail_error(res, doc, e);
        return 0;
    }
    uint32_t usage = jdoc_get(doc, 0, "usage"), choices = jdoc_get(doc, 0, "choices");
    bool has_usage = jdoc_type(doc, usage) == JT_OBJECT;
    if (has_usage)
        res->usage = usage_from_doc(doc, usage, &res->prompt_tokens, &res->completion_tokens);
    if (jdoc_type(doc, choices) != JT_ARRAY || (has_usage && doc->t[choices].size == 0))
        return 0; /* the usage chunk (the caller makes its own) or nothing to relay */
    stream_note_choices(res, doc, choices);
    if (has_usage || memchr(d, '\n', n) || memchr(d, '\r', n))
        emit_reframed(st, sink, has_usage);
    else
        sink_emit(sink, d, n);
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
    .embed = &openai_embed_ops,
};

/* The Anthropic Messages API over the chat run (router/messages.h). Both
 * directions read with lib/jtok and write JSON by hand: the client's
 * values (texts, schemas, tool inputs) are copied as the raw bytes they
 * came in, never re-serialised. */
#include "router/messages.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ request */

/* The top-level members a Messages request may have, in top_keys order. */
enum {
    T_MODEL,
    T_MAX_TOKENS,
    T_MESSAGES,
    T_SYSTEM,
    T_STREAM,
    T_TEMPERATURE,
    T_TOP_P,
    T_TOP_K,
    T_STOP_SEQUENCES,
    T_METADATA,
    T_TOOLS,
    T_TOOL_CHOICE,
    T_THINKING,
    T_CACHE_CONTROL,
    T_SERVICE_TIER,
    T_OUTPUT_CONFIG,
    T_INFERENCE_GEO,
    T_COUNT
};

typedef struct tx {
    const jdoc *d;
    buf *o;
    char *err;
    size_t errlen;
    buf scratch;
    uint32_t top[T_COUNT]; /* each top-level value (the last of a repeated key), or JT_NONE */
} tx;

static int fail(tx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(tx *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, x->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static uint32_t get(const tx *x, uint32_t obj, const char *key)
{
    uint32_t v = jdoc_get_last(x->d, obj, key);
    return jdoc_type(x->d, v) == JT_NULL ? JT_NONE : v;
}

static void raw(tx *x, uint32_t v)
{
    jdoc_json_append(x->d, v, x->o);
}

/* ,"as":<v as sent> when v is present. */
static void copy_value(tx *x, uint32_t v, const char *as)
{
    if (v == JT_NONE) return;
    buf_append_str(x->o, ",\"");
    buf_append_str(x->o, as);
    buf_append_str(x->o, "\":");
    raw(x, v);
}

/* ,"as":<obj[key] as sent> when it is present. */
static void copy_member(tx *x, uint32_t obj, const char *key, const char *as)
{
    copy_value(x, get(x, obj, key), as);
}

static const char *const top_keys[] = {
    "model",    "max_tokens",    "messages",       "system",        "stream",        "temperature",
    "top_p",    "top_k",         "stop_sequences", "metadata",      "tools",         "tool_choice",
    "thinking", "cache_control", "service_tier",   "output_config", "inference_geo", NULL,
};

/* One pass over the top-level members: each known one into x->top, an
 * unknown one refused. */
static int check_top_keys(tx *x)
{
    for (int i = 0; i < T_COUNT; i++)
        x->top[i] = JT_NONE;
    for (uint32_t k = jdoc_first(x->d, 0); k != JT_NONE; k = jdoc_next(x->d, 0, k)) {
        int known = -1;
        for (int i = 0; top_keys[i] && known < 0; i++)
            if (jdoc_str_eq(x->d, k, top_keys[i])) known = i;
        if (known >= 0) {
            x->top[known] = jdoc_type(x->d, k + 1) == JT_NULL ? JT_NONE : k + 1;
            continue;
        }
        size_t len;
        const char *s = jdoc_str_view(x->d, k, &x->scratch, &len);
        return fail(x,
                    "%.*s: Extra inputs are not permitted (bridle's /v1/messages takes model, "
                    "max_tokens, messages, system, stream, temperature, top_p, top_k, "
                    "stop_sequences, metadata, tools, tool_choice, thinking, cache_control, "
                    "output_config, service_tier)",
                    len > 60 ? 60 : (int)len, s);
    }
    return 0;
}

/* Refuses v unless it is of type t; the message names path + suffix
 * (joined only then: most requests never fail). */
static int need_type(tx *x, uint32_t v, jt_type t, const char *what, const char *path,
                     const char *suffix)
{
    if (jdoc_type(x->d, v) == t) return 0;
    return fail(x, "%s%s: %s, got %s", path, suffix, v == JT_NONE ? "Field required" : what,
                v == JT_NONE ? "nothing" : jdoc_type_name(x->d, v));
}

/* out = base + mid + i (e.g. "messages.1" + ".content." + 2), by hand:
 * snprintf costs more than a whole block's translation. */
static void path_index(char *out, size_t n, const char *base, const char *mid, int i)
{
    char digits[16], *d = digits + sizeof digits;
    *--d = '\0';
    do
        *--d = (char)('0' + i % 10);
    while ((i /= 10) > 0 && d > digits);
    size_t lb = strlen(base), lm = strlen(mid), ld = strlen(d);
    if (lb + lm + ld >= n) lb = n > lm + ld + 1 ? n - lm - ld - 1 : 0;
    if (lb + lm + ld >= n) { /* cannot happen with the sizes used here */
        out[0] = '\0';
        return;
    }
    memcpy(out, base, lb);
    memcpy(out + lb, mid, lm);
    memcpy(out + lb + lm, d, ld + 1);
}

/* source {type: base64, media_type, data} | {type: url, url} → image_url. */
static int image_part(tx *x, uint32_t block, const char *path)
{
    uint32_t src = get(x, block, "source");
    if (need_type(x, src, JT_OBJECT, "must be an object", path, ".source")) return -1;
    uint32_t type = get(x, src, "type");
    buf_reset(&x->scratch);
    if (jdoc_str_eq(x->d, type, "base64")) {
        uint32_t mt = get(x, src, "media_type"), data = get(x, src, "data");
        if (need_type(x, mt, JT_STRING, "must be a string", path, ".source.media_type")) return -1;
        if (need_type(x, data, JT_STRING, "must be a string", path, ".source.data")) return -1;
        buf_append_str(&x->scratch, "data:");
        jdoc_str_append(x->d, mt, &x->scratch);
        buf_append_str(&x->scratch, ";base64,");
        jdoc_str_append(x->d, data, &x->scratch);
    } else if (jdoc_str_eq(x->d, type, "url")) {
        uint32_t url = get(x, src, "url");
        if (need_type(x, url, JT_STRING, "must be a string", path, ".source.url")) return -1;
        jdoc_str_append(x->d, url, &x->scratch);
    } else {
        return fail(x, "%s.source.type: must be \"base64\" or \"url\"", path);
    }
    buf_append_str(x->o, "{\"type\":\"image_url\",\"image_url\":{\"url\":");
    buf_append_json_str(x->o, x->scratch.data, x->scratch.len);
    buf_append_char(x->o, '}');
    copy_member(x, block, "cache_control", "cache_control");
    buf_append_char(x->o, '}');
    return 0;
}

static int text_part(tx *x, uint32_t block, const char *path)
{
    uint32_t text = get(x, block, "text");
    if (need_type(x, text, JT_STRING, "must be a string", path, ".text")) return -1;
    buf_append_str(x->o, "{\"type\":\"text\",\"text\":");
    raw(x, text);
    copy_member(x, block, "cache_control", "cache_control");
    buf_append_char(x->o, '}');
    return 0;
}

static bool block_is(tx *x, uint32_t block, const char *type)
{
    return jdoc_str_eq(x->d, get(x, block, "type"), type);
}

static int unsupported_block(tx *x, uint32_t block, const char *path, const char *where)
{
    size_t len = 0;
    uint32_t type = get(x, block, "type");
    const char *s =
        jdoc_type(x->d, type) == JT_STRING ? jdoc_str_view(x->d, type, &x->scratch, &len) : "";
    if (!len) return fail(x, "%s.type: Field required (a content block names its type)", path);
    return fail(x, "%s.type: a \"%.*s\" block is not supported %s through bridle", path,
                len > 40 ? 40 : (int)len, s, where);
}

/* A tool_result block → a tool message. */
static int tool_result(tx *x, uint32_t block, const char *path)
{
    char p[160];
    uint32_t id = get(x, block, "tool_use_id"), content = get(x, block, "content");
    if (need_type(x, id, JT_STRING, "must be a string", path, ".tool_use_id")) return -1;
    buf_append_str(x->o, "{\"role\":\"tool\",\"tool_call_id\":");
    raw(x, id);
    buf_append_str(x->o, ",\"content\":");
    if (content == JT_NONE) {
        buf_append_str(x->o, "\"\"");
    } else if (jdoc_type(x->d, content) == JT_STRING) {
        raw(x, content);
    } else if (jdoc_type(x->d, content) == JT_ARRAY) {
        buf_append_char(x->o, '[');
        int i = 0;
        for (uint32_t b = jdoc_first(x->d, content); b != JT_NONE;
             b = jdoc_next(x->d, content, b), i++) {
            path_index(p, sizeof p, path, ".content.", i);
            if (i) buf_append_char(x->o, ',');
            if (block_is(x, b, "text")    ? text_part(x, b, p)
                : block_is(x, b, "image") ? image_part(x, b, p)
                                          : unsupported_block(x, b, p, "in a tool_result"))
                return -1;
        }
        buf_append_char(x->o, ']');
    } else {
        return fail(x, "%s.content: must be a string or a list of blocks", path);
    }
    if (jdoc_type(x->d, get(x, block, "is_error")) == JT_TRUE)
        buf_append_str(x->o, ",\"is_error\":true");
    copy_member(x, block, "cache_control", "cache_control");
    buf_append_char(x->o, '}');
    return 0;
}

/* A user turn: its tool_result blocks first, as tool messages, then the
 * rest as one user message. */
static int user_message(tx *x, uint32_t content, const char *path, bool *first)
{
    char p[160];
    int i = 0, others = 0;
    for (uint32_t b = jdoc_first(x->d, content); b != JT_NONE;
         b = jdoc_next(x->d, content, b), i++) {
        path_index(p, sizeof p, path, ".content.", i);
        if (jdoc_type(x->d, b) != JT_OBJECT) return fail(x, "%s: must be an object", p);
        if (!block_is(x, b, "tool_result")) {
            others++;
            continue;
        }
        if (!*first) buf_append_char(x->o, ',');
        *first = false;
        if (tool_result(x, b, p)) return -1;
    }
    if (!others) return 0;
    if (!*first) buf_append_char(x->o, ',');
    *first = false;
    buf_append_str(x->o, "{\"role\":\"user\",\"content\":[");
    bool sep = false;
    i = 0;
    for (uint32_t b = jdoc_first(x->d, content); b != JT_NONE;
         b = jdoc_next(x->d, content, b), i++) {
        if (block_is(x, b, "tool_result")) continue;
        path_index(p, sizeof p, path, ".content.", i);
        if (sep) buf_append_char(x->o, ',');
        sep = true;
        if (block_is(x, b, "text")    ? text_part(x, b, p)
            : block_is(x, b, "image") ? image_part(x, b, p)
                                      : unsupported_block(x, b, p, "in a user message"))
            return -1;
    }
    buf_append_str(x->o, "]}");
    return 0;
}

static int tool_use(tx *x, uint32_t block, const char *path, bool first)
{
    uint32_t id = get(x, block, "id"), name = get(x, block, "name"), input = get(x, block, "input");
    if (need_type(x, id, JT_STRING, "must be a string", path, ".id")) return -1;
    if (need_type(x, name, JT_STRING, "must be a string", path, ".name")) return -1;
    if (need_type(x, input, JT_OBJECT, "must be an object", path, ".input")) return -1;
    buf_append_str(x->o, first ? "{\"id\":" : ",{\"id\":");
    raw(x, id);
    buf_append_str(x->o, ",\"type\":\"function\",\"function\":{\"name\":");
    raw(x, name);
    buf_append_str(x->o, ",\"arguments\":");
    size_t len;
    const char *s = jdoc_raw(x->d, input, &len);
    buf_append_json_str(x->o, s, len);
    buf_append_str(x->o, "}}");
    return 0;
}

/* An assistant turn: text blocks as content parts, tool_use blocks as
 * tool_calls, thinking blocks kept whole in thinking_blocks. */
static int assistant_message(tx *x, uint32_t content, const char *path)
{
    char p[160];
    const jdoc *d = x->d;
    int i = 0, calls = 0, thinking = 0;
    buf_append_str(x->o, "{\"role\":\"assistant\",\"content\":[");
    bool sep = false;
    for (uint32_t b = jdoc_first(d, content); b != JT_NONE; b = jdoc_next(d, content, b), i++) {
        path_index(p, sizeof p, path, ".content.", i);
        if (jdoc_type(d, b) != JT_OBJECT) return fail(x, "%s: must be an object", p);
        if (block_is(x, b, "tool_use")) {
            calls++;
        } else if (block_is(x, b, "thinking") || block_is(x, b, "redacted_thinking")) {
            thinking++;
        } else if (block_is(x, b, "text")) {
            if (sep) buf_append_char(x->o, ',');
            sep = true;
            if (text_part(x, b, p)) return -1;
        } else {
            return unsupported_block(x, b, p, "in an assistant message");
        }
    }
    buf_append_char(x->o, ']');
    if (calls) {
        buf_append_str(x->o, ",\"tool_calls\":[");
        i = 0;
        bool first = true;
        for (uint32_t b = jdoc_first(d, content); b != JT_NONE; b = jdoc_next(d, content, b), i++) {
            if (!block_is(x, b, "tool_use")) continue;
            path_index(p, sizeof p, path, ".content.", i);
            if (tool_use(x, b, p, first)) return -1;
            first = false;
        }
        buf_append_char(x->o, ']');
    }
    if (thinking) {
        buf_append_str(x->o, ",\"thinking_blocks\":[");
        bool first = true;
        for (uint32_t b = jdoc_first(d, content); b != JT_NONE; b = jdoc_next(d, content, b)) {
            if (!block_is(x, b, "thinking") && !block_is(x, b, "redacted_thinking")) continue;
            if (!first) buf_append_char(x->o, ',');
            first = false;
            raw(x, b);
        }
        buf_append_char(x->o, ']');
    }
    buf_append_char(x->o, '}');
    return 0;
}

static int one_message(tx *x, uint32_t m, int i, bool *first)
{
    char path[64];
    path_index(path, sizeof path, "messages", ".", i);
    if (jdoc_type(x->d, m) != JT_OBJECT) return fail(x, "%s: must be an object", path);
    uint32_t role = get(x, m, "role"), content = get(x, m, "content");
    if (need_type(x, role, JT_STRING, "must be \"user\" or \"assistant\"", path, ".role"))
        return -1;
    bool user = jdoc_str_eq(x->d, role, "user"), asst = jdoc_str_eq(x->d, role, "assistant"),
         sys = jdoc_str_eq(x->d, role, "system");
    if (!user && !asst && !sys) return fail(x, "%s.role: must be \"user\" or \"assistant\"", path);
    if (jdoc_type(x->d, content) == JT_STRING) {
        if (!*first) buf_append_char(x->o, ',');
        *first = false;
        buf_append_str(x->o, user   ? "{\"role\":\"user\",\"content\":"
                             : asst ? "{\"role\":\"assistant\",\"content\":"
                                    : "{\"role\":\"system\",\"content\":");
        raw(x, content);
        buf_append_char(x->o, '}');
        return 0;
    }
    if (need_type(x, content, JT_ARRAY, "must be a string or a list of content blocks", path,
                  ".content"))
        return -1;
    if (user) return user_message(x, content, path, first);
    if (!*first) buf_append_char(x->o, ',');
    *first = false;
    if (asst) return assistant_message(x, content, path);
    buf_append_str(x->o, "{\"role\":\"system\",\"content\":[");
    int j = 0;
    for (uint32_t b = jdoc_first(x->d, content); b != JT_NONE;
         b = jdoc_next(x->d, content, b), j++) {
        char bp[120];
        path_index(bp, sizeof bp, path, ".content.", j);
        if (j) buf_append_char(x->o, ',');
        if (block_is(x, b, "text") ? text_part(x, b, bp)
                                   : unsupported_block(x, b, bp, "in a system message"))
            return -1;
    }
    buf_append_str(x->o, "]}");
    return 0;
}

static int system_prompt(tx *x, bool *first)
{
    uint32_t sys = x->top[T_SYSTEM];
    if (sys == JT_NONE) return 0;
    if (jdoc_type(x->d, sys) == JT_STRING) {
        buf_append_str(x->o, "{\"role\":\"system\",\"content\":");
        raw(x, sys);
        buf_append_char(x->o, '}');
        *first = false;
        return 0;
    }
    if (need_type(x, sys, JT_ARRAY, "must be a string or a list of text blocks", "system", ""))
        return -1;
    buf_append_str(x->o, "{\"role\":\"system\",\"content\":[");
    int i = 0;
    for (uint32_t b = jdoc_first(x->d, sys); b != JT_NONE; b = jdoc_next(x->d, sys, b), i++) {
        char p[48];
        path_index(p, sizeof p, "system", ".", i);
        if (i) buf_append_char(x->o, ',');
        if (jdoc_type(x->d, b) != JT_OBJECT || !block_is(x, b, "text"))
            return fail(x, "%s: must be a text block {\"type\": \"text\", \"text\": ...}", p);
        if (text_part(x, b, p)) return -1;
    }
    buf_append_str(x->o, "]}");
    *first = false;
    return 0;
}

static int messages_part(tx *x)
{
    uint32_t msgs = x->top[T_MESSAGES];
    if (need_type(x, msgs, JT_ARRAY, "must be a list of messages", "messages", "")) return -1;
    if (x->d->t[msgs].size == 0) return fail(x, "messages: at least one message is required");
    buf_append_str(x->o, ",\"messages\":[");
    bool first = true;
    if (system_prompt(x, &first)) return -1;
    int i = 0;
    for (uint32_t m = jdoc_first(x->d, msgs); m != JT_NONE; m = jdoc_next(x->d, msgs, m), i++)
        if (one_message(x, m, i, &first)) return -1;
    buf_append_char(x->o, ']');
    return 0;
}

static int tools_part(tx *x)
{
    uint32_t tools = x->top[T_TOOLS];
    if (tools == JT_NONE) return 0;
    if (need_type(x, tools, JT_ARRAY, "must be a list of tools", "tools", "")) return -1;
    buf_append_str(x->o, ",\"tools\":[");
    int i = 0;
    for (uint32_t t = jdoc_first(x->d, tools); t != JT_NONE; t = jdoc_next(x->d, tools, t), i++) {
        char p[64];
        path_index(p, sizeof p, "tools", ".", i);
        if (jdoc_type(x->d, t) != JT_OBJECT) return fail(x, "%s: must be an object", p);
        uint32_t type = get(x, t, "type");
        if (type != JT_NONE && !jdoc_str_eq(x->d, type, "custom"))
            return unsupported_block(x, t, p, "as a tool (server tools run at Anthropic only)");
        uint32_t name = get(x, t, "name"), schema = get(x, t, "input_schema");
        if (need_type(x, name, JT_STRING, "must be a string", p, ".name")) return -1;
        if (need_type(x, schema, JT_OBJECT, "must be a JSON schema object", p, ".input_schema"))
            return -1;
        buf_append_str(x->o, i ? ",{" : "{");
        buf_append_str(x->o, "\"type\":\"function\",\"function\":{\"name\":");
        raw(x, name);
        copy_member(x, t, "description", "description");
        buf_append_str(x->o, ",\"parameters\":");
        raw(x, schema);
        copy_member(x, t, "strict", "strict");
        buf_append_char(x->o, '}');
        copy_member(x, t, "cache_control", "cache_control");
        buf_append_char(x->o, '}');
    }
    buf_append_char(x->o, ']');
    return 0;
}

static int tool_choice_part(tx *x)
{
    uint32_t tc = x->top[T_TOOL_CHOICE];
    if (tc == JT_NONE) return 0;
    if (need_type(x, tc, JT_OBJECT, "must be an object like {\"type\": \"auto\"}", "tool_choice",
                  ""))
        return -1;
    uint32_t type = get(x, tc, "type");
    if (jdoc_str_eq(x->d, type, "auto"))
        buf_append_str(x->o, ",\"tool_choice\":\"auto\"");
    else if (jdoc_str_eq(x->d, type, "any"))
        buf_append_str(x->o, ",\"tool_choice\":\"required\"");
    else if (jdoc_str_eq(x->d, type, "none"))
        buf_append_str(x->o, ",\"tool_choice\":\"none\"");
    else if (jdoc_str_eq(x->d, type, "tool")) {
        uint32_t name = get(x, tc, "name");
        if (need_type(x, name, JT_STRING, "must be a string", "tool_choice.name", "")) return -1;
        buf_append_str(x->o, ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":");
        raw(x, name);
        buf_append_str(x->o, "}}");
    } else
        return fail(x, "tool_choice.type: must be \"auto\", \"any\", \"tool\" or \"none\"");
    if (jdoc_type(x->d, get(x, tc, "disable_parallel_tool_use")) == JT_TRUE)
        buf_append_str(x->o, ",\"parallel_tool_calls\":false");
    return 0;
}

/* output_config: effort → reasoning_effort, format → response_format. */
static int output_config_part(tx *x)
{
    uint32_t oc = x->top[T_OUTPUT_CONFIG];
    if (oc == JT_NONE) return 0;
    if (need_type(x, oc, JT_OBJECT, "must be an object", "output_config", "")) return -1;
    copy_member(x, oc, "effort", "reasoning_effort");
    uint32_t fmt = get(x, oc, "format");
    if (fmt == JT_NONE) return 0;
    uint32_t schema = get(x, fmt, "schema");
    if (!jdoc_str_eq(x->d, get(x, fmt, "type"), "json_schema") ||
        jdoc_type(x->d, schema) != JT_OBJECT)
        return fail(x, "output_config.format: must be {\"type\": \"json_schema\", \"schema\": "
                       "{...}}");
    buf_append_str(x->o, ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{"
                         "\"name\":\"output\",\"schema\":");
    raw(x, schema);
    buf_append_str(x->o, "}}");
    return 0;
}

static int params_part(tx *x, bool count)
{
    const jdoc *d = x->d;
    for (int i = T_TEMPERATURE; i <= T_TOP_K; i++) {
        uint32_t v = x->top[i];
        if (v != JT_NONE && need_type(x, v, JT_NUMBER, "must be a number", top_keys[i], ""))
            return -1;
        copy_value(x, v, top_keys[i]);
    }
    uint32_t stop = x->top[T_STOP_SEQUENCES];
    if (stop != JT_NONE) {
        if (need_type(x, stop, JT_ARRAY, "must be a list of strings", "stop_sequences", ""))
            return -1;
        for (uint32_t s = jdoc_first(d, stop); s != JT_NONE; s = jdoc_next(d, stop, s))
            if (jdoc_type(d, s) != JT_STRING)
                return fail(x, "stop_sequences: must be a list of strings");
        if (d->t[stop].size) copy_value(x, stop, "stop");
    }
    uint32_t md = x->top[T_METADATA];
    if (md != JT_NONE) {
        if (need_type(x, md, JT_OBJECT, "must be an object like {\"user_id\": ...}", "metadata",
                      ""))
            return -1;
        uint32_t uid = get(x, md, "user_id");
        if (uid != JT_NONE &&
            need_type(x, uid, JT_STRING, "must be a string", "metadata.user_id", ""))
            return -1;
        copy_member(x, md, "user_id", "user");
    }
    uint32_t th = x->top[T_THINKING];
    if (th != JT_NONE && need_type(x, th, JT_OBJECT, "must be an object", "thinking", ""))
        return -1;
    copy_value(x, th, "thinking");
    copy_value(x, x->top[T_CACHE_CONTROL], "cache_control");
    uint32_t stream = x->top[T_STREAM];
    if (stream != JT_NONE && jdoc_type(d, stream) != JT_TRUE && jdoc_type(d, stream) != JT_FALSE)
        return fail(x, "stream: must be true or false");
    if (jdoc_type(d, stream) == JT_TRUE && !count)
        buf_append_str(x->o, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    return tools_part(x) || tool_choice_part(x) || output_config_part(x);
}

int messages_to_chat(const char *body, size_t len, bool count, jdoc *doc, buf *out, char *err,
                     size_t errlen)
{
    tx x = {.d = doc, .o = out, .err = err, .errlen = errlen, .scratch = BUF_INIT};
    char why[128];
    size_t pos = 0;
    int rc = -1;
    if (jdoc_parse(doc, body, len, why, sizeof why, &pos) != 0) {
        fail(&x, "the body is not valid JSON: %s (at byte %zu)", why, pos);
        goto done;
    }
    if (jdoc_type(doc, 0) != JT_OBJECT) {
        fail(&x, "the body must be a JSON object with model, max_tokens and messages");
        goto done;
    }
    if (check_top_keys(&x)) goto done;
    uint32_t model = x.top[T_MODEL], max = x.top[T_MAX_TOKENS];
    int64_t n = 0;
    if (need_type(&x, model, JT_STRING, "must be a string", "model", "")) goto done;
    if (!count && (need_type(&x, max, JT_NUMBER, "must be an integer", "max_tokens", "") ||
                   (!jdoc_int64(doc, max, &n) && fail(&x, "max_tokens: must be an integer")) ||
                   (n < 1 && fail(&x, "max_tokens: must be at least 1, got %lld", (long long)n))))
        goto done;
    buf_append_str(out, "{\"model\":");
    raw(&x, model);
    if (!count) {
        buf_append_str(out, ",\"max_tokens\":");
        buf_append_u64(out, (uint64_t)n);
    }
    if (messages_part(&x) || params_part(&x, count)) goto done;
    buf_append_char(out, '}');
    rc = 0;
done:
    buf_free(&x.scratch);
    return rc;
}

/* ------------------------------------------------------------ answer */

static const char *stop_reason(const jdoc *d, uint32_t fr)
{
    if (jdoc_str_eq(d, fr, "length")) return "max_tokens";
    if (jdoc_str_eq(d, fr, "tool_calls") || jdoc_str_eq(d, fr, "function_call")) return "tool_use";
    if (jdoc_str_eq(d, fr, "content_filter")) return "refusal";
    return "end_turn";
}

static int64_t count_of(const jdoc *d, uint32_t obj, const char *key)
{
    int64_t v = 0;
    uint32_t t = jdoc_get_last(d, obj, key);
    if (!jdoc_int64(d, t, &v) || v < 0) return 0;
    return v;
}

/* OpenAI usage → Anthropic's: input_tokens excludes what the cache read
 * and wrote (wire-formats §3.3). */
static void usage_append(const jdoc *d, uint32_t u, buf *out)
{
    uint32_t pd = jdoc_get_last(d, u, "prompt_tokens_details");
    int64_t prompt = count_of(d, u, "prompt_tokens"), read = count_of(d, pd, "cached_tokens"),
            write = count_of(d, pd, "cache_write_tokens"),
            output = count_of(d, u, "completion_tokens");
    int64_t input = prompt - read - write;
    buf_append_str(out, "{\"input_tokens\":");
    buf_append_u64(out, (uint64_t)(input > 0 ? input : 0));
    buf_append_str(out, ",\"cache_creation_input_tokens\":");
    buf_append_u64(out, (uint64_t)write);
    buf_append_str(out, ",\"cache_read_input_tokens\":");
    buf_append_u64(out, (uint64_t)read);
    buf_append_str(out, ",\"output_tokens\":");
    buf_append_u64(out, (uint64_t)output);
    buf_append_char(out, '}');
}

/* Tool call arguments (a JSON string holding an object) → the object;
 * anything else becomes {}. */
static void input_append(const jdoc *d, uint32_t args, buf *out)
{
    buf s = BUF_INIT;
    jdoc a = JDOC_INIT;
    char why[8];
    if (jdoc_type(d, args) == JT_STRING) jdoc_str_append(d, args, &s);
    if (s.len && jdoc_parse(&a, s.data, s.len, why, sizeof why, NULL) == 0 &&
        jdoc_type(&a, 0) == JT_OBJECT)
        jdoc_json_append(&a, 0, out);
    else
        buf_append_str(out, "{}");
    jdoc_free(&a);
    buf_free(&s);
}

static void content_append(const jdoc *d, uint32_t msg, buf *out)
{
    bool first = true;
    uint32_t tb = jdoc_get_last(d, msg, "thinking_blocks");
    if (jdoc_type(d, tb) == JT_ARRAY)
        for (uint32_t b = jdoc_first(d, tb); b != JT_NONE; b = jdoc_next(d, tb, b)) {
            if (!first) buf_append_char(out, ',');
            first = false;
            jdoc_json_append(d, b, out);
        }
    uint32_t text = jdoc_get_last(d, msg, "content");
    if (jdoc_type(d, text) != JT_STRING || d->t[text].end == d->t[text].start)
        text = jdoc_get_last(d, msg, "refusal");
    if (jdoc_type(d, text) == JT_STRING && d->t[text].end > d->t[text].start) {
        buf_append_str(out,
                       first ? "{\"type\":\"text\",\"text\":" : ",{\"type\":\"text\",\"text\":");
        jdoc_str_append_json(d, text, out);
        buf_append_char(out, '}');
        first = false;
    }
    uint32_t calls = jdoc_get_last(d, msg, "tool_calls");
    if (jdoc_type(d, calls) != JT_ARRAY) return;
    for (uint32_t c = jdoc_first(d, calls); c != JT_NONE; c = jdoc_next(d, calls, c)) {
        uint32_t fn = jdoc_get_last(d, c, "function");
        buf_append_str(out, first ? "{\"type\":\"tool_use\",\"id\":"
                                  : ",{\"type\":\"tool_use\",\"id\":");
        first = false;
        uint32_t id = jdoc_get_last(d, c, "id"), name = jdoc_get_last(d, fn, "name");
        if (jdoc_type(d, id) == JT_STRING)
            jdoc_str_append_json(d, id, out);
        else
            buf_append_str(out, "\"toolu_bridle\"");
        buf_append_str(out, ",\"name\":");
        if (jdoc_type(d, name) == JT_STRING)
            jdoc_str_append_json(d, name, out);
        else
            buf_append_str(out, "\"\"");
        buf_append_str(out, ",\"input\":");
        input_append(d, jdoc_get_last(d, fn, "arguments"), out);
        buf_append_char(out, '}');
    }
}

int messages_from_completion(const char *json, size_t len, const char *msg_id, jdoc *d, buf *out)
{
    char why[64];
    if (jdoc_parse(d, json, len, why, sizeof why, NULL) != 0 || jdoc_type(d, 0) != JT_OBJECT)
        return -1;
    uint32_t choice = jdoc_index(d, jdoc_get_last(d, 0, "choices"), 0);
    uint32_t msg = jdoc_get_last(d, choice, "message");
    if (jdoc_type(d, msg) != JT_OBJECT) return -1;
    buf_append_str(out, "{\"id\":");
    buf_append_json_str(out, msg_id, strlen(msg_id));
    buf_append_str(out, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    uint32_t model = jdoc_get_last(d, 0, "model");
    if (jdoc_type(d, model) == JT_STRING)
        jdoc_str_append_json(d, model, out);
    else
        buf_append_str(out, "\"\"");
    buf_append_str(out, ",\"content\":[");
    content_append(d, msg, out);
    buf_append_str(out, "],\"stop_reason\":\"");
    buf_append_str(out, stop_reason(d, jdoc_get_last(d, choice, "finish_reason")));
    buf_append_str(out, "\",\"stop_sequence\":null,\"usage\":");
    usage_append(d, jdoc_get_last(d, 0, "usage"), out);
    buf_append_char(out, '}');
    return 0;
}

/* ------------------------------------------------------------ errors */

int messages_status(int status)
{
    return status == 503 ? 529 : status;
}

const char *messages_error_type(int status)
{
    switch (status) {
    case 400:
    case 405:
    case 409:
    case 422:
        return "invalid_request_error";
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
    case 503:
    case 529:
        return "overloaded_error";
    case 504:
        return "timeout_error";
    default:
        return status < 500 ? "invalid_request_error" : "api_error";
    }
}

void messages_error_json(buf *out, int status, const char *message, size_t len)
{
    buf_printf(out, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":",
               messages_error_type(status));
    buf_append_json_str(out, message, len);
    buf_append_str(out, "}}");
}

void messages_error_from(const char *body, size_t len, int status, jdoc *d, buf *out)
{
    char why[8];
    if (jdoc_parse(d, body, len, why, sizeof why, NULL) == 0) {
        if (jdoc_str_eq(d, jdoc_get_last(d, 0, "type"), "error")) {
            buf_append(out, body, len); /* already Anthropic's */
            return;
        }
        uint32_t msg = jdoc_get_last(d, jdoc_get_last(d, 0, "error"), "message");
        if (jdoc_type(d, msg) == JT_STRING) {
            buf text = BUF_INIT;
            jdoc_str_append(d, msg, &text);
            messages_error_json(out, status, text.data ? text.data : "", text.len);
            buf_free(&text);
            return;
        }
    }
    char msg[80]; /* not the body itself: it may not even be UTF-8 */
    int n = snprintf(msg, sizeof msg, "the request failed with HTTP status %d", status);
    messages_error_json(out, status, msg, (size_t)n);
}

/* ------------------------------------------------------------ stream */

typedef enum { BLOCK_NONE, BLOCK_TEXT, BLOCK_THINKING, BLOCK_TOOL } block_kind;

struct messages_stream {
    char id[64];
    buf pending; /* bytes of an SSE message not yet complete */
    buf usage;   /* the last usage chunk, in Anthropic's shape */
    buf data;    /* the current message's data */
    jdoc doc;
    bool started, ended;
    block_kind open;
    int index;     /* the open block's index; the next block's is index + 1 */
    int64_t tool;  /* the OpenAI tool_calls index of the open tool block */
    char stop[24]; /* the stop reason, once known */
};

messages_stream *messages_stream_new(const char *msg_id)
{
    messages_stream *s = calloc(1, sizeof *s);
    if (!s) abort();
    snprintf(s->id, sizeof s->id, "%s", msg_id);
    s->index = -1;
    return s;
}

void messages_stream_free(messages_stream *s)
{
    if (!s) return;
    buf_free(&s->pending);
    buf_free(&s->usage);
    buf_free(&s->data);
    jdoc_free(&s->doc);
    free(s);
}

static void event_begin(buf *out, const char *name)
{
    buf_append_str(out, "event: ");
    buf_append_str(out, name);
    buf_append_str(out, "\ndata: ");
}

static void event_end(buf *out)
{
    buf_append_str(out, "\n\n");
}

static void block_close(messages_stream *s, buf *out)
{
    if (s->open == BLOCK_NONE) return;
    event_begin(out, "content_block_stop");
    buf_append_str(out, "{\"type\":\"content_block_stop\",\"index\":");
    buf_append_u64(out, (uint64_t)s->index);
    buf_append_char(out, '}');
    event_end(out);
    s->open = BLOCK_NONE;
}

/* Starts block `kind` unless it is the one open; `start` is the
 * content_block JSON. */
static void block_open(messages_stream *s, buf *out, block_kind kind, const char *start)
{
    if (s->open == kind && kind != BLOCK_TOOL) return;
    block_close(s, out);
    s->index++;
    s->open = kind;
    event_begin(out, "content_block_start");
    buf_append_str(out, "{\"type\":\"content_block_start\",\"index\":");
    buf_append_u64(out, (uint64_t)s->index);
    buf_append_str(out, ",\"content_block\":");
    buf_append_str(out, start);
    buf_append_char(out, '}');
    event_end(out);
}

/* A delta of the open block: {"type":TYPE,FIELD:<string token v>}. */
static void block_delta(messages_stream *s, buf *out, const char *type, const char *field,
                        uint32_t v)
{
    event_begin(out, "content_block_delta");
    buf_append_str(out, "{\"type\":\"content_block_delta\",\"index\":");
    buf_append_u64(out, (uint64_t)s->index);
    buf_append_str(out, ",\"delta\":{\"type\":\"");
    buf_append_str(out, type);
    buf_append_str(out, "\",\"");
    buf_append_str(out, field);
    buf_append_str(out, "\":");
    jdoc_str_append_json(&s->doc, v, out);
    buf_append_str(out, "}}");
    event_end(out);
}

static void stream_start(messages_stream *s, buf *out)
{
    const jdoc *d = &s->doc;
    s->started = true;
    event_begin(out, "message_start");
    buf_append_str(out, "{\"type\":\"message_start\",\"message\":{\"id\":");
    buf_append_json_str(out, s->id, strlen(s->id));
    buf_append_str(out, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    uint32_t model = jdoc_get_last(d, 0, "model");
    if (jdoc_type(d, model) == JT_STRING)
        jdoc_str_append_json(d, model, out);
    else
        buf_append_str(out, "\"\"");
    buf_append_str(out, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                        "\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}");
    event_end(out);
    event_begin(out, "ping");
    buf_append_str(out, "{\"type\":\"ping\"}");
    event_end(out);
}

static bool nonempty_string(const jdoc *d, uint32_t v)
{
    return jdoc_type(d, v) == JT_STRING && d->t[v].end > d->t[v].start;
}

static void tool_delta(messages_stream *s, buf *out, uint32_t call)
{
    const jdoc *d = &s->doc;
    int64_t idx = 0;
    jdoc_int64(d, jdoc_get_last(d, call, "index"), &idx);
    uint32_t fn = jdoc_get_last(d, call, "function");
    uint32_t id = jdoc_get_last(d, call, "id"), name = jdoc_get_last(d, fn, "name");
    if (s->open != BLOCK_TOOL || idx != s->tool || nonempty_string(d, id)) {
        buf start = BUF_INIT;
        buf_append_str(&start, "{\"type\":\"tool_use\",\"id\":");
        if (jdoc_type(d, id) == JT_STRING)
            jdoc_str_append_json(d, id, &start);
        else
            buf_printf(&start, "\"toolu_%s_%lld\"", s->id, (long long)idx);
        buf_append_str(&start, ",\"name\":");
        if (jdoc_type(d, name) == JT_STRING)
            jdoc_str_append_json(d, name, &start);
        else
            buf_append_str(&start, "\"\"");
        buf_append_str(&start, ",\"input\":{}}");
        block_open(s, out, BLOCK_TOOL, start.data);
        buf_free(&start);
        s->tool = idx;
    }
    uint32_t args = jdoc_get_last(d, fn, "arguments");
    if (nonempty_string(d, args)) block_delta(s, out, "input_json_delta", "partial_json", args);
}

static void delta_translate(messages_stream *s, buf *out, uint32_t delta)
{
    const jdoc *d = &s->doc;
    uint32_t v = jdoc_get_last(d, delta, "reasoning_content");
    if (nonempty_string(d, v)) {
        block_open(s, out, BLOCK_THINKING,
                   "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}");
        block_delta(s, out, "thinking_delta", "thinking", v);
    }
    v = jdoc_get_last(d, delta, "thinking_signature");
    if (nonempty_string(d, v)) {
        block_open(s, out, BLOCK_THINKING,
                   "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}");
        block_delta(s, out, "signature_delta", "signature", v);
    }
    v = jdoc_get_last(d, delta, "redacted_thinking");
    if (nonempty_string(d, v)) {
        buf start = BUF_INIT;
        buf_append_str(&start, "{\"type\":\"redacted_thinking\",\"data\":");
        jdoc_str_append_json(d, v, &start);
        buf_append_char(&start, '}');
        s->open = BLOCK_NONE; /* a redacted block is whole at its start */
        block_open(s, out, BLOCK_THINKING, start.data);
        block_close(s, out);
        buf_free(&start);
    }
    v = jdoc_get_last(d, delta, "content");
    if (nonempty_string(d, v)) {
        block_open(s, out, BLOCK_TEXT, "{\"type\":\"text\",\"text\":\"\"}");
        block_delta(s, out, "text_delta", "text", v);
    }
    uint32_t calls = jdoc_get_last(d, delta, "tool_calls");
    if (jdoc_type(d, calls) == JT_ARRAY)
        for (uint32_t c = jdoc_first(d, calls); c != JT_NONE; c = jdoc_next(d, calls, c))
            tool_delta(s, out, c);
}

static void stream_error(messages_stream *s, buf *out, uint32_t err)
{
    const jdoc *d = &s->doc;
    uint32_t type = jdoc_get_last(d, err, "type"), msg = jdoc_get_last(d, err, "message");
    static const char *const kept[] = {"overloaded_error", "timeout_error", "rate_limit_error",
                                       "invalid_request_error", NULL};
    const char *t = "api_error";
    for (int i = 0; kept[i]; i++)
        if (jdoc_str_eq(d, type, kept[i])) t = kept[i];
    if (jdoc_str_eq(d, type, "rate_limit_exceeded")) t = "rate_limit_error";
    event_begin(out, "error");
    buf_printf(out, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":", t);
    if (jdoc_type(d, msg) == JT_STRING)
        jdoc_str_append_json(d, msg, out);
    else
        buf_append_str(out, "\"the upstream stream failed\"");
    buf_append_str(out, "}}");
    event_end(out);
    s->ended = true;
}

static void stream_finish(messages_stream *s, buf *out)
{
    if (s->ended || !s->started) return;
    s->ended = true;
    block_close(s, out);
    event_begin(out, "message_delta");
    buf_printf(out,
               "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\","
               "\"stop_sequence\":null},\"usage\":",
               s->stop[0] ? s->stop : "end_turn");
    if (s->usage.len)
        buf_append(out, s->usage.data, s->usage.len);
    else
        buf_append_str(out, "{\"output_tokens\":0}");
    buf_append_char(out, '}');
    event_end(out);
    event_begin(out, "message_stop");
    buf_append_str(out, "{\"type\":\"message_stop\"}");
    event_end(out);
}

/* One chat chunk (the data of one SSE message). */
static void chunk_translate(messages_stream *s, const char *data, size_t len, buf *out)
{
    if (s->ended) return;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        stream_finish(s, out);
        return;
    }
    jdoc *d = &s->doc;
    char why[8];
    if (jdoc_parse(d, data, len, why, sizeof why, NULL) != 0 || jdoc_type(d, 0) != JT_OBJECT)
        return;
    uint32_t err = jdoc_get_last(d, 0, "error");
    if (jdoc_type(d, err) == JT_OBJECT) {
        block_close(s, out);
        stream_error(s, out, err);
        return;
    }
    if (!s->started) stream_start(s, out);
    uint32_t usage = jdoc_get_last(d, 0, "usage");
    if (jdoc_type(d, usage) == JT_OBJECT) {
        buf_reset(&s->usage);
        usage_append(d, usage, &s->usage);
    }
    uint32_t choice = jdoc_index(d, jdoc_get_last(d, 0, "choices"), 0);
    if (choice == JT_NONE) return;
    uint32_t delta = jdoc_get_last(d, choice, "delta");
    if (jdoc_type(d, delta) == JT_OBJECT) delta_translate(s, out, delta);
    uint32_t fr = jdoc_get_last(d, choice, "finish_reason");
    if (jdoc_type(d, fr) == JT_STRING) snprintf(s->stop, sizeof s->stop, "%s", stop_reason(d, fr));
}

/* The data lines of one SSE message, joined; comments and other fields
 * are skipped. */
static void message_translate(messages_stream *s, const char *m, size_t len, buf *out)
{
    buf_reset(&s->data);
    const char *end = m + len;
    while (m < end) {
        const char *nl = memchr(m, '\n', (size_t)(end - m));
        const char *le = nl ? nl : end;
        size_t ll = (size_t)(le - m);
        if (ll && m[ll - 1] == '\r') ll--;
        if (ll >= 5 && memcmp(m, "data:", 5) == 0) {
            const char *v = m + 5;
            size_t vl = ll - 5;
            if (vl && *v == ' ') v++, vl--;
            if (s->data.len) buf_append_char(&s->data, '\n');
            buf_append(&s->data, v, vl);
        }
        m = nl ? nl + 1 : end;
    }
    if (s->data.len) chunk_translate(s, s->data.data, s->data.len, out);
}

void messages_stream_feed(messages_stream *s, const char *data, size_t len, buf *out)
{
    buf_append(&s->pending, data, len);
    size_t at = 0;
    for (;;) {
        const char *p = s->pending.data + at;
        size_t left = s->pending.len - at;
        const char *sep = left >= 2 ? memmem(p, left, "\n\n", 2) : NULL;
        if (!sep) break;
        message_translate(s, p, (size_t)(sep - p), out);
        at += (size_t)(sep - p) + 2;
    }
    buf_consume(&s->pending, at);
}

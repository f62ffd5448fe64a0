#include "router/canon.h"
#include "providers/params.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The top-level keys bridle reads, found in one pass over the object. */
enum top_key {
    K_MODEL,
    K_MESSAGES,
    K_STREAM,
    K_STREAM_OPTIONS,
    K_METADATA,
    K_RESPONSE_FORMAT,
    K_MAX_TOKENS,
    K_MAX_COMPLETION_TOKENS,
    K_N,
    K_TEMPERATURE,
    K_TOP_P,
    K_PRESENCE_PENALTY,
    K_FREQUENCY_PENALTY,
    K_USER,
    K_REASONING_EFFORT,
    K_REASONING,
    K_THINKING,
    K_COUNT
};

static const struct {
    const char *name;
    size_t len;
} top_names[K_COUNT] = {
#define K(s)                                                                                       \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
    K("model"),
    K("messages"),
    K("stream"),
    K("stream_options"),
    K("metadata"),
    K("response_format"),
    K("max_tokens"),
    K("max_completion_tokens"),
    K("n"),
    K("temperature"),
    K("top_p"),
    K("presence_penalty"),
    K("frequency_penalty"),
    K("user"),
    K("reasoning_effort"),
    K("reasoning"),
    K("thinking"),
#undef K
};

/* Parsing context: the tokens, the top-level keys, where strings go. */
typedef struct cctx {
    const jdoc *d;
    buf *strings;
    canon_error *err;
    uint32_t top[K_COUNT]; /* value token of each key, or JT_NONE */
} cctx;

static int invalid(cctx *c, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int invalid(cctx *c, const char *param, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err->message, sizeof c->err->message, fmt, ap);
    va_end(ap);
    snprintf(c->err->param, sizeof c->err->param, "%s", param ? param : "");
    snprintf(c->err->code, sizeof c->err->code, "%s", code ? code : "");
    return -1;
}

/* Fails on a key bridle reads that appears twice: bridle would check one
 * copy while a provider (or json-c, last wins) used the other. */
static int index_top_keys(cctx *c)
{
    const jdoc *d = c->d;
    for (int i = 0; i < K_COUNT; i++)
        c->top[i] = JT_NONE;
    for (uint32_t k = jdoc_first(d, 0); k != JT_NONE; k = jdoc_next(d, 0, k)) {
        const jtok *t = &d->t[k];
        size_t len = t->end - t->start;
        for (int i = 0; i < K_COUNT; i++) {
            bool eq = t->escaped ? jdoc_str_eq(d, k, top_names[i].name)
                                 : len == top_names[i].len &&
                                       memcmp(d->src + t->start, top_names[i].name, len) == 0;
            if (!eq) continue;
            if (c->top[i] != JT_NONE)
                return invalid(c, top_names[i].name, "duplicate_key",
                               "\"%s\" appears twice in the request body: send it once",
                               top_names[i].name);
            c->top[i] = k + 1;
            break;
        }
    }
    return 0;
}

/* A NUL-terminated copy of a string token. `strings` was reserved for the
 * whole body up front, so it never moves and the pointers stay valid. */
static const char *keep_string(cctx *c, uint32_t i)
{
    size_t at = c->strings->len;
    jdoc_str_append(c->d, i, c->strings);
    buf_append_char(c->strings, '\0');
    return c->strings->data + at;
}

/* A kept string with an escaped NUL (\u0000) would be cut short in C. */
static bool kept_has_nul(cctx *c, const char *kept)
{
    return strlen(kept) + 1 != (size_t)(c->strings->data + c->strings->len - kept);
}

static bool is_role(const jdoc *d, uint32_t r)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant",
                                        "tool",   "function",  NULL};
    for (const char *const *p = roles; *p; p++)
        if (jdoc_str_eq(d, r, *p)) return true;
    return false;
}

static int check_parts(cctx *c, uint32_t content, uint32_t i)
{
    const jdoc *d = c->d;
    uint32_t j = 0;
    for (uint32_t part = jdoc_first(d, content); part != JT_NONE;
         part = jdoc_next(d, content, part), j++) {
        if (jdoc_type(d, part) == JT_OBJECT && jdoc_type(d, jdoc_get(d, part, "type")) == JT_STRING)
            continue;
        char param[96];
        snprintf(param, sizeof param, "messages[%u].content[%u]", i, j);
        return invalid(c, param, "invalid_type",
                       "%s must be an object with a string \"type\", like {\"type\": \"text\", "
                       "\"text\": \"...\"}",
                       param);
    }
    return 0;
}

static bool has_duplicate_member(const jdoc *d, uint32_t obj, const char *key)
{
    int seen = 0;
    for (uint32_t k = jdoc_first(d, obj); k != JT_NONE; k = jdoc_next(d, obj, k))
        seen += jdoc_str_eq(d, k, key);
    return seen > 1;
}

/* The field path for an error message, built only when there is one. */
static const char *msg_param(char *out, size_t n, uint32_t i, const char *field)
{
    snprintf(out, n, "messages[%u]%s", i, field);
    return out;
}

static int check_message(cctx *c, uint32_t m, uint32_t i)
{
    const jdoc *d = c->d;
    char p[96];
    if (jdoc_type(d, m) != JT_OBJECT)
        return invalid(
            c, msg_param(p, sizeof p, i, ""), "invalid_type",
            "%s must be an object like {\"role\": \"user\", \"content\": \"Hello\"}, got %s", p,
            jdoc_type_name(d, m));
    static const char *const once[] = {".role", ".content", ".tool_calls", ".tool_call_id", NULL};
    for (const char *const *k = once; *k; k++)
        if (has_duplicate_member(d, m, *k + 1))
            return invalid(c, msg_param(p, sizeof p, i, *k), "duplicate_key",
                           "%s appears twice in the message: send it once", p);
    uint32_t role = jdoc_get(d, m, "role");
    if (role == JT_NONE)
        return invalid(c, msg_param(p, sizeof p, i, ".role"), "missing_required_parameter",
                       "%s is missing: say who speaks (system, developer, user, assistant or tool)",
                       p);
    if (!is_role(d, role)) {
        size_t len;
        const char *raw = jdoc_raw(d, role, &len);
        return invalid(c, msg_param(p, sizeof p, i, ".role"), "invalid_value",
                       "%s must be one of system, developer, user, assistant, tool; got %.*s", p,
                       len > 60 ? 60 : (int)len, raw);
    }
    uint32_t content = jdoc_get(d, m, "content");
    switch (jdoc_type(d, content)) {
    case JT_STRING:
        return 0;
    case JT_ARRAY:
        return check_parts(c, content, i);
    case JT_ABSENT:
    case JT_NULL:
        if (jdoc_str_eq(d, role, "assistant") && jdoc_get(d, m, "tool_calls") != JT_NONE) return 0;
        return invalid(c, msg_param(p, sizeof p, i, ".content"), "missing_required_parameter",
                       "%s is missing: a message needs content (a string or a list of parts)", p);
    default:
        return invalid(c, msg_param(p, sizeof p, i, ".content"), "invalid_type",
                       "%s must be a string or a list of content parts, got %s", p,
                       jdoc_type_name(d, content));
    }
}

static int check_messages(cctx *c)
{
    const jdoc *d = c->d;
    uint32_t msgs = c->top[K_MESSAGES];
    if (msgs == JT_NONE)
        return invalid(c, "messages", "missing_required_parameter",
                       "\"messages\" is missing: send the conversation as a list, like "
                       "[{\"role\": \"user\", \"content\": \"Hello\"}]");
    if (jdoc_type(d, msgs) != JT_ARRAY)
        return invalid(c, "messages", "invalid_type",
                       "\"messages\" must be a list of messages, got %s", jdoc_type_name(d, msgs));
    if (d->t[msgs].size == 0)
        return invalid(c, "messages", "empty_array",
                       "\"messages\" is empty: send at least one message");
    uint32_t i = 0;
    for (uint32_t m = jdoc_first(d, msgs); m != JT_NONE; m = jdoc_next(d, msgs, m), i++)
        if (check_message(c, m, i)) return -1;
    return 0;
}

/* An optional integer field in [lo, hi]; *out untouched when absent or null. */
static int opt_int(cctx *c, enum top_key k, int64_t lo, int64_t hi, int64_t *out)
{
    const char *key = top_names[k].name;
    uint32_t v = c->top[k];
    if (v == JT_NONE || jdoc_type(c->d, v) == JT_NULL) return 0;
    int64_t x;
    if (!jdoc_int64(c->d, v, &x))
        return invalid(c, key, "invalid_type", "\"%s\" must be an integer, got %s", key,
                       jdoc_type(c->d, v) == JT_NUMBER ? "a fraction or a number too large"
                                                       : jdoc_type_name(c->d, v));
    if (x < lo || x > hi)
        return invalid(c, key, "invalid_value", "\"%s\" must be between %lld and %lld, got %lld",
                       key, (long long)lo, (long long)hi, (long long)x);
    *out = x;
    return 0;
}

static int opt_number(cctx *c, enum top_key k, double lo, double hi)
{
    const char *key = top_names[k].name;
    uint32_t v = c->top[k];
    if (v == JT_NONE || jdoc_type(c->d, v) == JT_NULL) return 0;
    double x;
    if (!jdoc_double(c->d, v, &x))
        return invalid(c, key, "invalid_type", "\"%s\" must be a number, got %s", key,
                       jdoc_type_name(c->d, v));
    if (x < lo || x > hi)
        return invalid(c, key, "invalid_value", "\"%s\" must be between %g and %g, got %g", key, lo,
                       hi, x);
    return 0;
}

/* obj.key, or when obj is the top level (0) the indexed key */
static uint32_t value_of(cctx *c, uint32_t obj, const char *key)
{
    if (obj == 0)
        for (int i = 0; i < K_COUNT; i++)
            if (strcmp(top_names[i].name, key) == 0) return c->top[i];
    return jdoc_get(c->d, obj, key);
}

static int opt_string(cctx *c, uint32_t obj, const char *key, const char *param, const char **out)
{
    uint32_t v = value_of(c, obj, key);
    if (v == JT_NONE || jdoc_type(c->d, v) == JT_NULL) return 0;
    if (jdoc_type(c->d, v) != JT_STRING)
        return invalid(c, param, "invalid_type", "\"%s\" must be a string, got %s", param,
                       jdoc_type_name(c->d, v));
    *out = keep_string(c, v);
    if (kept_has_nul(c, *out))
        return invalid(c, param, "invalid_value",
                       "\"%s\" must not contain a NUL character (\\u0000)", param);
    return 0;
}

static int opt_bool(cctx *c, uint32_t obj, const char *key, const char *param, bool *out)
{
    uint32_t v = value_of(c, obj, key);
    jt_type t = jdoc_type(c->d, v);
    if (v == JT_NONE || t == JT_NULL) return 0;
    if (t != JT_TRUE && t != JT_FALSE)
        return invalid(c, param, "invalid_type", "\"%s\" must be true or false, got %s", param,
                       jdoc_type_name(c->d, v));
    *out = t == JT_TRUE;
    return 0;
}

static int check_stream(cctx *c, canon_request *out)
{
    if (opt_bool(c, 0, "stream", "stream", &out->stream)) return -1;
    uint32_t so = c->top[K_STREAM_OPTIONS];
    if (so == JT_NONE || jdoc_type(c->d, so) == JT_NULL) return 0;
    if (!out->stream)
        return invalid(c, "stream_options", "invalid_value",
                       "\"stream_options\" is only allowed when \"stream\" is true");
    if (jdoc_type(c->d, so) != JT_OBJECT)
        return invalid(c, "stream_options", "invalid_type", "\"stream_options\" must be an object");
    return opt_bool(c, so, "include_usage", "stream_options.include_usage", &out->include_usage);
}

static int check_metadata(cctx *c, canon_request *out)
{
    const jdoc *d = c->d;
    uint32_t md = c->top[K_METADATA];
    if (md == JT_NONE || jdoc_type(d, md) == JT_NULL) return 0;
    if (jdoc_type(d, md) != JT_OBJECT)
        return invalid(c, "metadata", "invalid_type",
                       "\"metadata\" must be an object of string values, got %s",
                       jdoc_type_name(d, md));
    for (uint32_t k = jdoc_first(d, md); k != JT_NONE; k = jdoc_next(d, md, k)) {
        if (jdoc_type(d, k + 1) == JT_STRING) continue;
        char param[96];
        buf key = BUF_INIT;
        jdoc_str_append(d, k, &key);
        snprintf(param, sizeof param, "metadata.%.60s", key.data);
        buf_free(&key);
        return invalid(c, param, "invalid_type", "%s must be a string, got %s", param,
                       jdoc_type_name(d, k + 1));
    }
    return opt_string(c, md, "task", "metadata.task", &out->task) ||
           opt_string(c, md, "agent", "metadata.agent", &out->agent) ||
           opt_string(c, md, "feature", "metadata.feature", &out->feature) ||
           opt_string(c, md, "team", "metadata.team", &out->team);
}

static int check_response_format(cctx *c, canon_request *out)
{
    const jdoc *d = c->d;
    uint32_t rf = c->top[K_RESPONSE_FORMAT];
    if (rf == JT_NONE || jdoc_type(d, rf) == JT_NULL) return 0;
    uint32_t type = jdoc_get(d, rf, "type");
    if (jdoc_type(d, type) != JT_STRING)
        return invalid(c, "response_format", "invalid_type",
                       "\"response_format\" must be an object like {\"type\": \"json_object\"}");
    if (!jdoc_str_eq(d, type, "text") && !jdoc_str_eq(d, type, "json_object") &&
        !jdoc_str_eq(d, type, "json_schema"))
        return invalid(c, "response_format.type", "invalid_value",
                       "\"response_format.type\" must be text, json_object or json_schema");
    out->json_mode = !jdoc_str_eq(d, type, "text");
    return 0;
}

/* An effort the budget dialects can translate (provider_effort_budget):
 * an unknown one would reach OpenAI as it came but nowhere else. */
static int check_effort(cctx *c, uint32_t obj, const char *key, const char *param)
{
    const char *effort = NULL;
    int64_t budget;
    if (opt_string(c, obj, key, param, &effort)) return -1;
    if (effort && !provider_effort_budget(effort, &budget))
        return invalid(c, param, "invalid_value", "\"%s\" must be one of %s; got \"%.40s\"", param,
                       provider_effort_names(), effort);
    return 0;
}

/* OpenAI's reasoning_effort, the reasoning object of OpenAI-compatible
 * hosts, or an Anthropic-style thinking object: the client decides. */
static int check_reasoning(cctx *c, canon_request *out)
{
    const jdoc *d = c->d;
    uint32_t r = c->top[K_REASONING];
    if (check_effort(c, 0, "reasoning_effort", "reasoning_effort")) return -1;
    if (r != JT_NONE && jdoc_type(d, r) != JT_NULL) {
        if (jdoc_type(d, r) != JT_OBJECT)
            return invalid(c, "reasoning", "invalid_type",
                           "\"reasoning\" must be an object like {\"effort\": \"low\"}, got %s",
                           jdoc_type_name(d, r));
        if (has_duplicate_member(d, r, "effort"))
            return invalid(c, "reasoning.effort", "duplicate_key",
                           "\"reasoning.effort\" appears twice: send it once");
        if (check_effort(c, r, "effort", "reasoning.effort")) return -1;
    }
    for (int k = K_REASONING_EFFORT; k <= K_THINKING; k++)
        out->reasoning_set =
            out->reasoning_set || (c->top[k] != JT_NONE && jdoc_type(d, c->top[k]) != JT_NULL);
    return 0;
}

static int check_fields(cctx *c, canon_request *out)
{
    const jdoc *d = c->d;
    uint32_t model = c->top[K_MODEL];
    if (model == JT_NONE)
        return invalid(c, "model", "missing_required_parameter",
                       "\"model\" is missing: name a model (GET /v1/models lists them) or a route "
                       "such as \"auto\"");
    if (jdoc_type(d, model) != JT_STRING || d->t[model].end == d->t[model].start)
        return invalid(c, "model", "invalid_type", "\"model\" must be a non-empty string, got %s",
                       jdoc_type(d, model) == JT_STRING ? "an empty string"
                                                        : jdoc_type_name(d, model));
    out->model = keep_string(c, model);
    if (kept_has_nul(c, out->model))
        return invalid(c, "model", "invalid_value",
                       "\"model\" must not contain a NUL character (\\u0000)");
    if (check_messages(c) || check_stream(c, out) || check_metadata(c, out) ||
        check_response_format(c, out))
        return -1;
    int64_t mt = -1, mct = -1, n = 1;
    if (opt_int(c, K_MAX_TOKENS, 1, 100000000, &mt) ||
        opt_int(c, K_MAX_COMPLETION_TOKENS, 1, 100000000, &mct) || opt_int(c, K_N, 1, 128, &n) ||
        opt_number(c, K_TEMPERATURE, 0, 2) || opt_number(c, K_TOP_P, 0, 1) ||
        opt_number(c, K_PRESENCE_PENALTY, -2, 2) || opt_number(c, K_FREQUENCY_PENALTY, -2, 2) ||
        opt_string(c, 0, "user", "user", &out->user))
        return -1;
    out->max_tokens = mct >= 0 ? mct : mt;
    double temp;
    uint32_t tv = c->top[K_TEMPERATURE];
    out->n = n;
    out->temperature_set = tv != JT_NONE;
    out->temperature_zero = out->temperature_set && jdoc_double(c->d, tv, &temp) && temp == 0;
    out->deterministic = n == 1 && out->temperature_zero && !out->stream;
    out->needs = params_request_needs(d);
    return check_reasoning(c, out);
}

/* What both parses start with: a JSON object, tokenized once into doc,
 * out pointing at it; `main` names the field the body must carry besides
 * "model", for the messages. */
static int parse_begin(cctx *c, jdoc *doc, const char *body, size_t len, const char *main,
                       canon_request *out)
{
    memset(out, 0, sizeof *out);
    out->max_tokens = -1;
    if (len == 0)
        return invalid(c, NULL, "invalid_json",
                       "the request body is empty: send a JSON object with \"model\" and \"%s\"",
                       main);
    char why[96];
    size_t pos = 0;
    if (jdoc_parse(doc, body, len, why, sizeof why, &pos) != 0)
        return invalid(c, NULL, "invalid_json",
                       "the request body is not valid JSON: %s at byte %zu", why, pos);
    if (jdoc_type(c->d, 0) != JT_OBJECT)
        return invalid(c, NULL, "invalid_type",
                       "the request body must be a JSON object with \"model\" and \"%s\"", main);
    buf_reset(c->strings);
    buf_reserve(c->strings, len + 16);
    out->body = body;
    out->body_len = len;
    out->doc = doc;
    return 0;
}

int canon_parse_chat(const char *body, size_t len, jdoc *doc, buf *strings, canon_request *out,
                     canon_error *err)
{
    cctx c = {.d = doc, .strings = strings, .err = err};
    if (parse_begin(&c, doc, body, len, "messages", out)) return -1;
    if (index_top_keys(&c)) return -1;
    return check_fields(&c, out);
}

void canon_prompt_text(const canon_request *req, buf *out)
{
    const jdoc *d = req->doc;
    uint32_t msgs = d ? jdoc_get(d, 0, "messages") : JT_NONE;
    if (jdoc_type(d, msgs) != JT_ARRAY) return;
    for (uint32_t m = jdoc_first(d, msgs); m != JT_NONE; m = jdoc_next(d, msgs, m))
        provider_doc_content_text(d, jdoc_get(d, m, "content"), out);
}

/* The tool definitions (as sent) and the earlier tool calls' names and
 * arguments: an agent's prompt is often more of these than text. */
static int64_t prompt_tool_chars(const jdoc *d)
{
    size_t len = 0;
    uint32_t tools = jdoc_get(d, 0, "tools"), msgs = jdoc_get(d, 0, "messages");
    if (jdoc_type(d, tools) == JT_ARRAY) jdoc_raw(d, tools, &len);
    int64_t n = (int64_t)len;
    buf s = BUF_INIT;
    for (uint32_t m = jdoc_first(d, msgs); jdoc_type(d, msgs) == JT_ARRAY && m != JT_NONE;
         m = jdoc_next(d, msgs, m)) {
        uint32_t calls = jdoc_get(d, m, "tool_calls");
        for (uint32_t c = jdoc_first(d, calls); jdoc_type(d, calls) == JT_ARRAY && c != JT_NONE;
             c = jdoc_next(d, calls, c)) {
            uint32_t fn = jdoc_get(d, c, "function");
            uint32_t name = jdoc_get(d, fn, "name"), args = jdoc_get(d, fn, "arguments");
            buf_reset(&s);
            if (jdoc_type(d, name) == JT_STRING) jdoc_str_append(d, name, &s);
            if (jdoc_type(d, args) == JT_STRING) jdoc_str_append(d, args, &s);
            n += (int64_t)s.len;
        }
    }
    buf_free(&s);
    return n;
}

int64_t canon_prompt_chars(const canon_request *req)
{
    buf text = BUF_INIT;
    canon_prompt_text(req, &text);
    int64_t n = (int64_t)text.len + (req->doc ? prompt_tool_chars(req->doc) : 0);
    buf_free(&text);
    return n;
}

/* ------------------------------------------------------------ embeddings */

#define EMBED_MAX_INPUTS 2048 /* OpenAI's limit per request */

/* One list of token ids: integers from 0 to 2^31 - 1, at least one. */
static int check_token_ids(cctx *c, uint32_t arr, const char *param, int64_t *count)
{
    const jdoc *d = c->d;
    if (d->t[arr].size == 0)
        return invalid(c, param, "invalid_value",
                       "%s is an empty list of token ids: send at least one", param);
    for (uint32_t v = jdoc_first(d, arr); v != JT_NONE; v = jdoc_next(d, arr, v)) {
        int64_t id;
        if (!jdoc_int64(d, v, &id) || id < 0 || id > 2147483647)
            return invalid(c, param, "invalid_type",
                           "%s must hold token ids (integers from 0), got %s", param,
                           jdoc_type(d, v) == JT_NUMBER ? "a fraction or a negative number"
                                                        : jdoc_type_name(d, v));
    }
    *count += d->t[arr].size;
    return 0;
}

static int embed_text(cctx *c, uint32_t s, const char *param, int64_t *est)
{
    size_t n = c->d->t[s].end - c->d->t[s].start; /* escaped bytes: close enough for an estimate */
    if (n == 0)
        return invalid(c, param, "invalid_value",
                       "%s is an empty string: every input needs some text", param);
    *est += (int64_t)(n + 3) / 4;
    return 0;
}

/* "input": a string, a list of strings, a list of token ids, or a list of
 * lists of token ids; at most EMBED_MAX_INPUTS inputs. */
static int check_embed_input(cctx *c, canon_embed *e)
{
    const jdoc *d = c->d;
    static const char shapes[] =
        "a string, a list of strings, a list of token ids or a list of lists of token ids";
    uint32_t in = jdoc_get(d, 0, "input");
    e->input = in;
    if (in == JT_NONE || jdoc_type(d, in) == JT_NULL)
        return invalid(c, "input", "missing_required_parameter",
                       "\"input\" is missing: send the text to embed as %s", shapes);
    if (jdoc_type(d, in) == JT_STRING) {
        e->single = true;
        e->n = 1;
        return embed_text(c, in, "input", &e->est_tokens);
    }
    if (jdoc_type(d, in) != JT_ARRAY)
        return invalid(c, "input", "invalid_type", "\"input\" must be %s, got %s", shapes,
                       jdoc_type_name(d, in));
    if (d->t[in].size == 0)
        return invalid(c, "input", "invalid_value",
                       "\"input\" is an empty list: send at least one input");
    jt_type first = jdoc_type(d, jdoc_first(d, in));
    if (first == JT_NUMBER) { /* one list of token ids */
        e->single = e->token_ids = true;
        e->n = 1;
        return check_token_ids(c, in, "input", &e->est_tokens);
    }
    if (d->t[in].size > EMBED_MAX_INPUTS)
        return invalid(c, "input", "invalid_value",
                       "\"input\" has %u inputs; at most %d go in one request: split it",
                       d->t[in].size, EMBED_MAX_INPUTS);
    e->token_ids = first == JT_ARRAY;
    e->n = d->t[in].size;
    uint32_t i = 0;
    for (uint32_t v = jdoc_first(d, in); v != JT_NONE; v = jdoc_next(d, in, v), i++) {
        char param[32];
        snprintf(param, sizeof param, "input[%u]", i);
        jt_type t = jdoc_type(d, v);
        if (t != (e->token_ids ? JT_ARRAY : JT_STRING))
            return invalid(c, param, "invalid_type",
                           "%s must be %s like the first input, got %s: \"input\" is %s", param,
                           e->token_ids ? "a list of token ids" : "a string", jdoc_type_name(d, v),
                           shapes);
        if (e->token_ids ? check_token_ids(c, v, param, &e->est_tokens)
                         : embed_text(c, v, param, &e->est_tokens))
            return -1;
    }
    return 0;
}

static int check_embed_options(cctx *c, canon_embed *e)
{
    const jdoc *d = c->d;
    static const char *const once[] = {"input", "encoding_format", "dimensions", NULL};
    for (const char *const *k = once; *k; k++)
        if (has_duplicate_member(d, 0, *k))
            return invalid(c, *k, "duplicate_key",
                           "\"%s\" appears twice in the request body: send it once", *k);
    uint32_t f = jdoc_get(d, 0, "encoding_format");
    if (f != JT_NONE && jdoc_type(d, f) != JT_NULL) {
        if (jdoc_type(d, f) != JT_STRING ||
            !(jdoc_str_eq(d, f, "float") || jdoc_str_eq(d, f, "base64")))
            return invalid(c, "encoding_format", "invalid_value",
                           "\"encoding_format\" must be \"float\" or \"base64\"");
        e->base64 = jdoc_str_eq(d, f, "base64");
    }
    uint32_t st = jdoc_get(d, 0, "stream");
    if (jdoc_type(d, st) == JT_TRUE)
        return invalid(c, "stream", "invalid_value",
                       "embeddings are never streamed: leave \"stream\" out (or false)");
    e->dimensions = -1;
    uint32_t dim = jdoc_get(d, 0, "dimensions");
    if (dim == JT_NONE || jdoc_type(d, dim) == JT_NULL) return 0;
    if (!jdoc_int64(d, dim, &e->dimensions) || e->dimensions < 1 || e->dimensions > 65536)
        return invalid(c, "dimensions", "invalid_value",
                       "\"dimensions\" must be an integer from 1 to 65536 (the length of each "
                       "vector; the model's own when absent)");
    return 0;
}

int canon_parse_embeddings(const char *body, size_t len, jdoc *doc, buf *strings,
                           canon_request *out, canon_error *err)
{
    cctx c = {.d = doc, .strings = strings, .err = err};
    int rc = parse_begin(&c, doc, body, len, "input", out);
    out->n = 1;
    if (rc) return -1;
    out->embed.on = true;
    if (index_top_keys(&c)) return -1;
    uint32_t model = c.top[K_MODEL];
    if (model == JT_NONE || jdoc_type(doc, model) != JT_STRING ||
        doc->t[model].end == doc->t[model].start)
        return invalid(&c, "model",
                       model == JT_NONE ? "missing_required_parameter" : "invalid_type",
                       "\"model\" must name an embedding model (GET /v1/models lists them)");
    out->model = keep_string(&c, model);
    if (kept_has_nul(&c, out->model))
        return invalid(&c, "model", "invalid_value",
                       "\"model\" must not contain a NUL character (\\u0000)");
    if (check_embed_input(&c, &out->embed) || check_embed_options(&c, &out->embed) ||
        check_metadata(&c, out) || opt_string(&c, 0, "user", "user", &out->user))
        return -1;
    out->deterministic = true; /* the same input, the same vectors: cacheable, coalescable */
    return 0;
}

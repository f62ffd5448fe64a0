/* Parameter fidelity (providers/params.h): one table of OpenAI's
 * chat-completions parameters with what each translating dialect does with
 * them. docs/config.md ("OpenAI parameters on other dialects") is this
 * table in prose; tests/integration/fidelity.test.mjs drives every row
 * against every dialect. */
#include "providers/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------ capabilities */

static const struct {
    unsigned bit;
    const char *name;
} cap_names[] = {
    {CAP_TOOLS, "tools"},       {CAP_VISION, "vision"}, {CAP_JSON_SCHEMA, "json_schema"},
    {CAP_LOGPROBS, "logprobs"}, {CAP_AUDIO, "audio"},
};
#define N_CAPS (sizeof cap_names / sizeof cap_names[0])

const char *params_cap_name(unsigned cap)
{
    for (size_t i = 0; i < N_CAPS; i++)
        if (cap_names[i].bit == cap) return cap_names[i].name;
    return "?";
}

bool params_cap_parse(const char *name, unsigned *cap)
{
    for (size_t i = 0; name && i < N_CAPS; i++)
        if (strcmp(cap_names[i].name, name) == 0) {
            *cap = cap_names[i].bit;
            return true;
        }
    return false;
}

const char *params_cap_names(void)
{
    return "tools, vision, json_schema, logprobs or audio";
}

unsigned params_default_caps(const provider_ops *ops, const char *model)
{
    const char *kind = ops ? ops->kind : "";
    const char *m = model ? model : "";
    if (strcmp(kind, "anthropic") == 0) return CAP_TOOLS | CAP_VISION | CAP_JSON_SCHEMA;
    if (strcmp(kind, "gemini") == 0) return CAP_TOOLS | CAP_VISION | CAP_JSON_SCHEMA | CAP_LOGPROBS;
    if (strcmp(kind, "ollama") == 0) /* most local models read no images */
        return CAP_TOOLS | CAP_JSON_SCHEMA | CAP_LOGPROBS |
               (strstr(m, "vision") || strstr(m, "llava") ? CAP_VISION : 0);
    /* OpenAI and compatible hosts: audio only on the audio models */
    return CAP_TOOLS | CAP_VISION | CAP_JSON_SCHEMA | CAP_LOGPROBS |
           (strstr(m, "audio") ? CAP_AUDIO : 0);
}

/* ------------------------------------------------------------ what a request needs */

static bool is_true(const jdoc *d, uint32_t v)
{
    return jdoc_type(d, v) == JT_TRUE;
}

static bool positive(const jdoc *d, uint32_t v)
{
    int64_t n;
    return jdoc_int64(d, v, &n) && n > 0;
}

/* A list holding the string "audio". */
static bool lists_audio(const jdoc *d, uint32_t v)
{
    if (jdoc_type(d, v) != JT_ARRAY) return false;
    for (uint32_t i = jdoc_first(d, v); i != JT_NONE; i = jdoc_next(d, v, i))
        if (jdoc_str_eq(d, i, "audio")) return true;
    return false;
}

/* The content parts of the messages (token msgs) that need a capability:
 * image_url (vision), input_audio (audio). Sets *msg and *part of the
 * first part of kind `want` (0: any) and returns the needs found. */
static unsigned parts_needs(const jdoc *d, uint32_t msgs, unsigned want, int *msg, int *part)
{
    unsigned needs = 0;
    if (jdoc_type(d, msgs) != JT_ARRAY) return 0;
    int mi = 0;
    for (uint32_t m = jdoc_first(d, msgs); m != JT_NONE; m = jdoc_next(d, msgs, m), mi++) {
        uint32_t content = provider_doc_typed(d, m, "content", JT_ARRAY);
        int pi = 0;
        for (uint32_t p = jdoc_first(d, content); p != JT_NONE;
             p = jdoc_next(d, content, p), pi++) {
            uint32_t type = provider_doc_typed(d, p, "type", JT_STRING);
            unsigned need = jdoc_str_eq(d, type, "image_url")     ? CAP_VISION
                            : jdoc_str_eq(d, type, "input_audio") ? CAP_AUDIO
                                                                  : 0;
            if (need && want && (need & want) && msg && *msg < 0) {
                *msg = mi;
                *part = pi;
            }
            needs |= need;
        }
    }
    return needs;
}

/* The keys that say what a request needs. */
typedef enum {
    NK_OTHER,
    NK_MESSAGES,
    NK_TOOLS,
    NK_FORMAT,
    NK_LOGPROBS,
    NK_TOP,
    NK_MODAL,
    NK_AUDIO
} need_key;

/* Which of them key token k is: its length picks the one name to compare
 * (most keys are compared once or not at all: the hot path pays this on
 * every request). */
static need_key need_key_of(const jdoc *d, uint32_t k)
{
    static const struct {
        const char *name;
        need_key key;
    } by_len[16] = {
        [5] = {"tools", NK_TOOLS},
        [8] = {"messages", NK_MESSAGES},
        [10] = {"modalities", NK_MODAL},
        [12] = {"top_logprobs", NK_TOP},
        [15] = {"response_format", NK_FORMAT},
    };
    const jtok *t = &d->t[k];
    size_t len = t->end - t->start;
    const char *s = d->src + t->start;
    if (t->escaped) { /* rare: compare unescaped */
        static const char *const all[] = {"messages", "tools",        "response_format",
                                          "logprobs", "top_logprobs", "modalities",
                                          "audio"};
        for (int i = 0; i < 7; i++)
            if (jdoc_str_eq(d, k, all[i])) return (need_key)(i + 1);
        return NK_OTHER;
    }
    if (len == 5 && memcmp(s, "audio", 5) == 0) return NK_AUDIO;
    if (len == 8 && memcmp(s, "logprobs", 8) == 0) return NK_LOGPROBS;
    if (len >= 16 || !by_len[len].name) return NK_OTHER;
    return memcmp(s, by_len[len].name, len) == 0 ? by_len[len].key : NK_OTHER;
}

/* One walk over the top-level keys (every request pays it: no lookup per
 * member); a repeated key's last value counts, as for the encoders. */
unsigned params_request_needs(const jdoc *d)
{
    unsigned needs = 0;
    uint32_t msgs = JT_NONE;
    for (uint32_t k = jdoc_first(d, 0); k != JT_NONE; k = jdoc_next(d, 0, k)) {
        uint32_t v = k + 1;
        switch (need_key_of(d, k)) {
        case NK_MESSAGES:
            msgs = v;
            break;
        case NK_TOOLS:
            needs = (needs & ~CAP_TOOLS) |
                    (jdoc_type(d, v) == JT_ARRAY && d->t[v].size > 0 ? CAP_TOOLS : 0);
            break;
        case NK_FORMAT:
            needs = (needs & ~CAP_JSON_SCHEMA) |
                    (jdoc_str_eq(d, provider_doc_get(d, v, "type"), "json_schema") ? CAP_JSON_SCHEMA
                                                                                   : 0);
            break;
        case NK_LOGPROBS:
            if (is_true(d, v)) needs |= CAP_LOGPROBS;
            break;
        case NK_TOP:
            if (positive(d, v)) needs |= CAP_LOGPROBS;
            break;
        case NK_MODAL:
            if (lists_audio(d, v)) needs |= CAP_AUDIO;
            break;
        case NK_AUDIO:
            if (jdoc_type(d, v) != JT_NULL) needs |= CAP_AUDIO;
            break;
        case NK_OTHER:
            break;
        }
    }
    return msgs != JT_NONE ? needs | parts_needs(d, msgs, 0, NULL, NULL) : needs;
}

/* The parameter that needs `cap`, for a message. */
static void need_param(const jdoc *d, unsigned cap, char *out, size_t len)
{
    const char *top = NULL;
    switch (cap) {
    case CAP_TOOLS:
        top = "tools";
        break;
    case CAP_JSON_SCHEMA:
        top = "response_format";
        break;
    case CAP_LOGPROBS:
        top = is_true(d, provider_doc_get(d, 0, "logprobs")) ? "logprobs" : "top_logprobs";
        break;
    case CAP_AUDIO:
        if (lists_audio(d, provider_doc_get(d, 0, "modalities")))
            top = "modalities";
        else if (provider_doc_get(d, 0, "audio") != JT_NONE)
            top = "audio";
        break;
    }
    if (top) {
        snprintf(out, len, "%s", top);
        return;
    }
    int msg = -1, part = -1;
    parts_needs(d, provider_doc_get(d, 0, "messages"), cap, &msg, &part);
    snprintf(out, len, "messages[%d].content[%d]", msg, part);
}

/* ------------------------------------------------------------ the table */

/* The translating dialects, the table's columns. */
enum { D_ANTHROPIC, D_GEMINI, D_OLLAMA, N_DIALECTS };

typedef enum {
    F_TRANSLATED, /* sent in the dialect's own form */
    F_IGNORED,    /* cannot change the answer's shape: not sent, listed in docs/config.md */
    F_REFUSED,    /* 400 when the value asks for something (the row's `asks`) */
} fate;

typedef bool (*asks_fn)(const jdoc *d, uint32_t v, int col); /* col: the dialect asking */

typedef struct param_row {
    const char *name;
    asks_fn asks;       /* whether the value asks for something; NULL: any non-null value */
    fate f[N_DIALECTS]; /* anthropic, gemini, ollama */
    const char *why;    /* what the dialects that refuse it cannot do */
} param_row;

static bool asks_above_one(const jdoc *d, uint32_t v, int col)
{
    double x;
    /* a JSON number that starts with 0 or - is at most 1: no strtod */
    if (jdoc_type(d, v) == JT_NUMBER &&
        (d->src[d->t[v].start] == '0' || d->src[d->t[v].start] == '-'))
        return false;
    return jdoc_double(d, v, &x) && x > 1.0;
}

static bool asks_many(const jdoc *d, uint32_t v, int col)
{
    int64_t n;
    return jdoc_int64(d, v, &n) && n > 1;
}

static bool asks_true(const jdoc *d, uint32_t v, int col)
{
    return is_true(d, v);
}

static bool asks_positive(const jdoc *d, uint32_t v, int col)
{
    return positive(d, v);
}

static bool asks_audio(const jdoc *d, uint32_t v, int col)
{
    return lists_audio(d, v);
}

static bool has_tools(const jdoc *d)
{
    uint32_t tools = provider_doc_typed(d, 0, "tools", JT_ARRAY);
    return tools != JT_NONE && d->t[tools].size > 0;
}

/* parallel_tool_calls: false with tools: at most one call. */
static bool asks_one_call(const jdoc *d, uint32_t v, int col)
{
    return jdoc_type(d, v) == JT_FALSE && has_tools(d);
}

/* tool_choice: Anthropic and Gemini take "none", "auto", "required", a
 * named function and allowed_tools (the subset is what is sent), not
 * OpenAI's other objects (a custom tool). Ollama has no tool_choice: it
 * cannot force a call ("required", a named function, allowed_tools in
 * mode "required"); "none" sends no tools and allowed_tools in mode "auto"
 * only the subset. */
static bool asks_tool_choice(const jdoc *d, uint32_t v, int col)
{
    if (!has_tools(d)) return false;
    bool object = jdoc_type(d, v) == JT_OBJECT;
    bool named = object && provider_doc_typed(d, provider_doc_get(d, v, "function"), "name",
                                              JT_STRING) != JT_NONE;
    bool subset = object && jdoc_str_eq(d, provider_doc_get(d, v, "type"), "allowed_tools");
    if (col != D_OLLAMA) return object && !named && !subset;
    if (jdoc_str_eq(d, v, "required") || named) return true;
    return object &&
           (!subset ||
            !jdoc_str_eq(d, provider_doc_get(d, provider_doc_get(d, v, "allowed_tools"), "mode"),
                         "auto"));
}

/* response_format JSON next to the request's own tools. */
static bool asks_json_with_tools(const jdoc *d, uint32_t v, int col)
{
    uint32_t type = provider_doc_get(d, v, "type");
    return has_tools(d) &&
           (jdoc_str_eq(d, type, "json_object") || jdoc_str_eq(d, type, "json_schema"));
}

static bool asks_nonempty(const jdoc *d, uint32_t v, int col)
{
    jt_type t = jdoc_type(d, v);
    return (t == JT_OBJECT || t == JT_ARRAY) ? d->t[v].size > 0 : t != JT_NULL;
}

#define T F_TRANSLATED
#define I F_IGNORED
#define R F_REFUSED

/* Sorted by name (bsearch). */
static const param_row rows[] = {
    {"audio", NULL, {R, R, R}, "answers only in text"},
    {"cache_control", NULL, {T, I, I}, NULL},
    {"frequency_penalty", NULL, {I, T, T}, NULL},
    {"function_call", NULL, {R, R, R}, "takes the newer tools and tool_choice instead"},
    {"functions", NULL, {R, R, R}, "takes the newer tools and tool_choice instead"},
    {"logit_bias", asks_nonempty, {R, R, R}, "has no token biases"},
    {"logprobs", asks_true, {R, T, T}, "returns no token log probabilities"},
    {"max_completion_tokens", NULL, {T, T, T}, NULL},
    {"max_tokens", NULL, {T, T, T}, NULL},
    {"messages", NULL, {T, T, T}, NULL},
    {"metadata", NULL, {I, I, I}, NULL},
    {"modalities", asks_audio, {R, R, R}, "answers only in text"},
    {"model", NULL, {T, T, T}, NULL},
    {"moderation", NULL, {R, R, R}, "has no OpenAI moderation"},
    {"n", asks_many, {R, T, R}, "answers with one choice only"},
    /* Gemini and Ollama cannot be told: their answer keeps its first call */
    {"parallel_tool_calls", asks_one_call, {T, T, T}, NULL},
    {"prediction", NULL, {I, I, I}, NULL},
    {"presence_penalty", NULL, {I, T, T}, NULL},
    {"prompt_cache_key", NULL, {I, I, I}, NULL},
    {"prompt_cache_options", NULL, {I, I, I}, NULL},
    {"prompt_cache_retention", NULL, {I, I, I}, NULL},
    {"reasoning", NULL, {T, T, I}, NULL},
    {"reasoning_effort", NULL, {T, T, I}, NULL},
    {"response_format",
     asks_json_with_tools,
     {R, T, T},
     "answers in JSON through a forced tool, which leaves no choice among the request's own "
     "tools: send one of them"},
    {"safety_identifier", NULL, {T, I, I}, NULL},
    {"seed", NULL, {I, T, T}, NULL},
    {"service_tier", NULL, {I, I, I}, NULL},
    {"stop", NULL, {T, T, T}, NULL},
    {"store", NULL, {I, I, I}, NULL},
    {"stream", NULL, {T, T, T}, NULL},
    {"stream_options", NULL, {T, T, T}, NULL},
    {"temperature", asks_above_one, {R, T, T}, "takes a temperature of at most 1"},
    {"thinking", NULL, {T, T, I}, NULL},
    {"tool_choice",
     asks_tool_choice,
     {R, R, R},
     "takes a tool_choice of \"none\", \"auto\", \"required\", a named function or "
     "allowed_tools only (Ollama: \"none\", \"auto\" or allowed_tools in mode \"auto\": it "
     "cannot force a call)"},
    {"tools", NULL, {T, T, T}, NULL},
    {"top_k", NULL, {T, T, T}, NULL},
    {"top_logprobs", asks_positive, {R, T, T}, "returns no token log probabilities"},
    {"top_p", NULL, {T, T, T}, NULL},
    {"user", NULL, {T, I, I}, NULL},
    {"verbosity", NULL, {I, I, I}, NULL},
    {"web_search_options", NULL, {R, R, R}, "has no OpenAI web search"},
};

#undef T
#undef I
#undef R

static int row_cmp(const void *key, const void *row)
{
    return strcmp(key, ((const param_row *)row)->name);
}

static const param_row *row_find(const char *name)
{
    return bsearch(name, rows, sizeof rows / sizeof rows[0], sizeof rows[0], row_cmp);
}

/* The column of a dialect, or -1 (OpenAI-compatible: forwarded as sent). */
static int column_of(const provider_ops *ops)
{
    if (!ops) return -1;
    if (strcmp(ops->kind, "anthropic") == 0) return D_ANTHROPIC;
    if (strcmp(ops->kind, "gemini") == 0) return D_GEMINI;
    if (strcmp(ops->kind, "ollama") == 0) return D_OLLAMA;
    return -1;
}

/* bridle's own keys mean nothing upstream (openai.c drops them too). */
static bool bridle_key(const char *k)
{
    return strncmp(k, "bridle", 6) == 0 || strncasecmp(k, "x-bridle", 8) == 0 ||
           strncasecmp(k, "x_bridle", 8) == 0;
}

/* Names the parameter; the caller writes why->message. */
static void refusal_fill(params_refusal *why, const char *param, const char *code,
                         const char *brief)
{
    snprintf(why->param, sizeof why->param, "%s", param);
    snprintf(why->code, sizeof why->code, "%s", code);
    snprintf(why->brief, sizeof why->brief, "%s", brief);
}

/* Whether row r refuses value v in column col. */
static bool row_refuses(const param_row *r, int col, const canon_request *req, uint32_t v)
{
    if (r->f[col] != F_REFUSED) return false;
    if (jdoc_type(req->doc, v) == JT_NULL) return false;
    return r->asks ? r->asks(req->doc, v, col) : true;
}

/* ------------------------------------------------------------ shapes in the lists
 *
 * What the translating encoders cannot carry inside the lists, checked
 * before planning so that a route and auto skip the model instead of
 * failing at the call: a tool that is not a named function, a content
 * part other than text, refusal or image_url, an image URL that is not a
 * data: URI for the dialects that cannot fetch one (Gemini, Ollama). */

static bool shape_refused(const jdoc *d, int col, char *param, size_t plen, const char **what)
{
    uint32_t tools = provider_doc_typed(d, 0, "tools", JT_ARRAY);
    int i = 0;
    for (uint32_t t = jdoc_first(d, tools); t != JT_NONE; t = jdoc_next(d, tools, t), i++) {
        uint32_t fn = provider_doc_get(d, t, "function");
        if (provider_doc_typed(d, fn, "name", JT_STRING) == JT_NONE) {
            snprintf(param, plen, "tools[%d]", i);
            *what = "takes only function tools, each with a function.name";
            return true;
        }
    }
    uint32_t msgs = provider_doc_typed(d, 0, "messages", JT_ARRAY);
    int mi = 0;
    for (uint32_t m = jdoc_first(d, msgs); m != JT_NONE; m = jdoc_next(d, msgs, m), mi++) {
        uint32_t content = provider_doc_typed(d, m, "content", JT_ARRAY);
        int pi = 0;
        for (uint32_t p = jdoc_first(d, content); p != JT_NONE;
             p = jdoc_next(d, content, p), pi++) {
            uint32_t type = provider_doc_typed(d, p, "type", JT_STRING);
            if (jdoc_str_eq(d, type, "text") || jdoc_str_eq(d, type, "refusal")) continue;
            snprintf(param, plen, "messages[%d].content[%d]", mi, pi);
            if (!jdoc_str_eq(d, type, "image_url")) {
                *what = "carries only text, refusal and image_url content parts";
                return true;
            }
            if (col == D_ANTHROPIC) continue; /* fetches http(s) URLs itself */
            buf scratch = BUF_INIT;
            const char *url;
            size_t len = 0;
            bool data = provider_image_url(d, p, &scratch, &url, &len) && len >= 5 &&
                        memcmp(url, "data:", 5) == 0;
            buf_free(&scratch);
            if (!data) {
                *what = "takes images only as data:<media type>;base64,<data> URIs";
                return true;
            }
        }
    }
    return false;
}

/* The name of key token k, NUL-terminated: in `small` when it fits and
 * has no escapes (the common case, no copy to the heap), else in `esc`. */
static const char *key_name(const jdoc *d, uint32_t k, char *small, size_t n, buf *esc)
{
    const jtok *t = &d->t[k];
    size_t len = t->end - t->start;
    if (!t->escaped && len < n) {
        memcpy(small, d->src + t->start, len);
        small[len] = '\0';
        return small;
    }
    buf_reset(esc);
    jdoc_str_append(d, k, esc);
    return esc->data ? esc->data : "";
}

/* One walk over the top-level keys for the columns in `cols` (a bit per
 * column): *at[col] gets the first key a column refuses. Returns the
 * columns that refuse one. Routing asks for every dialect at once, so a
 * key is looked up once, not once per dialect. */
static unsigned keys_scan(const canon_request *req, unsigned cols, uint32_t at[N_DIALECTS])
{
    const jdoc *d = req->doc;
    unsigned refused = 0;
    char small[48];
    buf esc = BUF_INIT;
    for (uint32_t k = jdoc_first(d, 0); k != JT_NONE && refused != cols; k = jdoc_next(d, 0, k)) {
        const char *name = key_name(d, k, small, sizeof small, &esc);
        const param_row *r = row_find(name);
        if (!r && bridle_key(name)) continue;
        for (int col = 0; col < N_DIALECTS; col++) {
            unsigned bit = 1u << col;
            if (!(cols & bit) || (refused & bit)) continue;
            if (r && !row_refuses(r, col, req, k + 1)) continue;
            refused |= bit;
            at[col] = k;
        }
    }
    buf_free(&esc);
    return refused;
}

/* The refusal's words for key k in column col of dialect ops. */
static void key_refusal(const canon_request *req, uint32_t k, int col, const provider_ops *ops,
                        const char *m, params_refusal *why)
{
    char small[48], brief[96];
    buf esc = BUF_INIT;
    const char *name = key_name(req->doc, k, small, sizeof small, &esc);
    const param_row *r = row_find(name);
    if (!r) {
        snprintf(brief, sizeof brief, "%s cannot take \"%.40s\"", ops->kind, name);
        refusal_fill(why, name, "unsupported_parameter", brief);
        snprintf(why->message, sizeof why->message,
                 "\"%.60s\" is not a parameter bridle can translate for %.100s, which speaks the "
                 "%s dialect: remove it, or name an OpenAI-compatible model, which gets it as sent "
                 "(model \"auto\" and routes skip the models that cannot take it)",
                 name, m, ops->kind);
    } else {
        snprintf(brief, sizeof brief, "%s cannot take %s", ops->kind, name);
        refusal_fill(why, name, "unsupported_parameter", brief);
        snprintf(why->message, sizeof why->message,
                 "\"%s\" cannot be honoured by %.100s: the %s dialect %s. Remove it, or name a "
                 "model that takes it (model \"auto\" and routes skip the models that cannot)",
                 name, m, ops->kind, r->why);
    }
    (void)col;
    buf_free(&esc);
}

bool params_dialect_refuses(const canon_request *req, const provider_ops *ops, const char *model,
                            params_refusal *why)
{
    int col = column_of(ops);
    if (col < 0 || !req || !req->doc) return false;
    const char *m = model ? model : "this model";
    uint32_t at[N_DIALECTS];
    if (keys_scan(req, 1u << col, at)) {
        if (why) key_refusal(req, at[col], col, ops, m, why);
        return true;
    }
    char param[96];
    const char *what;
    if (!shape_refused(req->doc, col, param, sizeof param, &what)) return false;
    if (why) {
        char brief[96];
        snprintf(brief, sizeof brief, "%s cannot take %.60s", ops->kind, param);
        refusal_fill(why, param, "unsupported_parameter", brief);
        snprintf(why->message, sizeof why->message,
                 "%s cannot be honoured by %.100s: the %s dialect %s. Remove it, or name a model "
                 "that takes it (model \"auto\" and routes skip the models that cannot)",
                 param, m, ops->kind, what);
    }
    return true;
}

bool params_target_refuses(const canon_request *req, const target *t, params_refusal *why)
{
    if (req->embed.on) return false; /* the chat table: embeddings are checked by their own canon */
    unsigned missing = req->needs & ~t->caps;
    if (missing) {
        if (!why) return true;
        unsigned cap = missing & -missing; /* the lowest: one parameter to name */
        char param[96], brief[96];
        need_param(req->doc, cap, param, sizeof param);
        snprintf(brief, sizeof brief, "lacks %s", params_cap_name(cap));
        refusal_fill(why, param, "model_lacks_capability", brief);
        snprintf(why->message, sizeof why->message,
                 "%.60s needs the %s capability, which the model %.100s does not have (its "
                 "models.NAME.capabilities in the gateway's config): remove it, or name a model "
                 "that has it (model \"auto\" and routes skip the models without it)",
                 param, params_cap_name(cap), t->model ? t->model : "?");
        return true;
    }
    return params_dialect_refuses(req, t->provider ? t->provider->ops : NULL, t->model, why);
}

int params_dialect_index(const provider_ops *ops)
{
    const provider_ops *const *all = provider_all();
    for (int i = 0; all[i]; i++)
        if (all[i] == ops) return i;
    return -1;
}

unsigned params_refused_dialects(const canon_request *req)
{
    if (!req || !req->doc || req->embed.on) return 0;
    uint32_t at[N_DIALECTS];
    unsigned all_cols = (1u << N_DIALECTS) - 1, cols = keys_scan(req, all_cols, at);
    /* the lists: Gemini and Ollama take the same shapes, Anthropic more
     * (http images), so one walk settles all three unless Gemini refuses */
    char param[96];
    const char *what;
    if (cols != all_cols && shape_refused(req->doc, D_GEMINI, param, sizeof param, &what)) {
        cols |= (1u << D_GEMINI) | (1u << D_OLLAMA);
        if (shape_refused(req->doc, D_ANTHROPIC, param, sizeof param, &what))
            cols |= 1u << D_ANTHROPIC;
    }
    unsigned mask = 0;
    const provider_ops *const *all = provider_all();
    for (int i = 0; all[i] && i < 32; i++) {
        int col = column_of(all[i]);
        if (col >= 0 && (cols >> col & 1u)) mask |= 1u << i;
    }
    return mask;
}

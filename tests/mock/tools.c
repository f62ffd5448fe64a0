/* Tool calls in answers: which calls a request gets (the tool_calls= and
 * tool_call= directives, read against the request's own tools and
 * tool_choice in its dialect), their arguments, and how streams split them.
 *
 * The mock behaves like a model that follows the request: a conversation
 * whose last turn carries tool results gets a text answer, and so does a
 * request without tools or whose tool_choice says none; a forced tool is
 * the one called; disabled parallel calls mean one call. */
#include "tests/mock/mock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TOOLS_MAX 64   /* tools read from one request */
#define FRAG_BYTES 8   /* streamed argument fragments: about a token each */
#define SAMPLE_DEPTH 8 /* nested schemas followed this deep */

struct tool_decl {
    const char *name;
    json_object *schema; /* may be NULL */
};

/* What the request offers and allows, in any dialect. */
struct tool_menu {
    struct tool_decl tool[TOOLS_MAX];
    int n;
    const char *forced[TOOLS_MAX]; /* the names a forced choice allows */
    int nforced;
    bool none;        /* tool_choice none */
    bool one_at_most; /* parallel calls disabled */
};

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

static bool str_is(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

static size_t arr_len(json_object *a)
{
    return a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
}

static json_object *arr_last(json_object *a)
{
    size_t n = arr_len(a);
    return n ? json_object_array_get_idx(a, n - 1) : NULL;
}

/* ---- reading the request ------------------------------------------------ */

static void menu_add(struct tool_menu *tm, const char *name, json_object *schema)
{
    if (name && tm->n < TOOLS_MAX) tm->tool[tm->n++] = (struct tool_decl){name, schema};
}

/* OpenAI and Ollama: tools[].function, tool_choice, parallel_tool_calls. */
static void menu_openai(struct tool_menu *tm, json_object *root)
{
    json_object *tools = get(root, "tools");
    for (size_t i = 0; i < arr_len(tools); i++) {
        json_object *fn = get(json_object_array_get_idx(tools, i), "function");
        menu_add(tm, get_str(fn, "name"), get(fn, "parameters"));
    }
    json_object *tc = get(root, "tool_choice");
    if (json_object_is_type(tc, json_type_string))
        tm->none = str_is(json_object_get_string(tc), "none");
    const char *forced = get_str(get(tc, "function"), "name");
    if (forced) tm->forced[tm->nforced++] = forced;
    json_object *list = get(get(tc, "allowed_tools"), "tools"); /* OpenAI's subset */
    for (size_t i = 0; i < arr_len(list) && tm->nforced < TOOLS_MAX; i++) {
        const char *name = get_str(get(json_object_array_get_idx(list, i), "function"), "name");
        if (name) tm->forced[tm->nforced++] = name;
    }
    json_object *par = get(root, "parallel_tool_calls");
    tm->one_at_most =
        par && json_object_is_type(par, json_type_boolean) && !json_object_get_boolean(par);
}

/* Anthropic: tools[] (client tools have input_schema), tool_choice
 * {type: auto|any|none|tool, name?, disable_parallel_tool_use?}. */
static void menu_anthropic(struct tool_menu *tm, json_object *root)
{
    json_object *tools = get(root, "tools");
    for (size_t i = 0; i < arr_len(tools); i++) {
        json_object *t = json_object_array_get_idx(tools, i);
        menu_add(tm, get_str(t, "name"), get(t, "input_schema"));
    }
    json_object *tc = get(root, "tool_choice");
    const char *type = get_str(tc, "type");
    tm->none = str_is(type, "none");
    if (str_is(type, "tool") && get_str(tc, "name"))
        tm->forced[tm->nforced++] = get_str(tc, "name");
    json_object *dis = get(tc, "disable_parallel_tool_use");
    tm->one_at_most = dis && json_object_get_boolean(dis);
}

/* Gemini: tools[].functionDeclarations[], toolConfig.functionCallingConfig
 * {mode, allowedFunctionNames}. */
static void menu_gemini(struct tool_menu *tm, json_object *root)
{
    json_object *tools = get(root, "tools");
    for (size_t i = 0; i < arr_len(tools); i++) {
        json_object *decls = get(json_object_array_get_idx(tools, i), "functionDeclarations");
        for (size_t k = 0; k < arr_len(decls); k++) {
            json_object *fd = json_object_array_get_idx(decls, k);
            json_object *schema = get(fd, "parametersJsonSchema");
            menu_add(tm, get_str(fd, "name"), schema ? schema : get(fd, "parameters"));
        }
    }
    json_object *fcc = get(get(root, "toolConfig"), "functionCallingConfig");
    const char *mode = get_str(fcc, "mode");
    tm->none = str_is(mode, "NONE");
    json_object *allowed = get(fcc, "allowedFunctionNames");
    if (str_is(mode, "ANY"))
        for (size_t i = 0; i < arr_len(allowed) && tm->nforced < TOOLS_MAX; i++)
            if (json_object_is_type(json_object_array_get_idx(allowed, i), json_type_string))
                tm->forced[tm->nforced++] =
                    json_object_get_string(json_object_array_get_idx(allowed, i));
}

/* Whether the conversation's last turn hands tool results back. */
static bool answers_tool_results(enum dialect d, json_object *root)
{
    if (d == D_OPENAI || d == D_OLLAMA)
        return str_is(get_str(arr_last(get(root, "messages")), "role"), "tool");
    json_object *blocks = d == D_ANTHROPIC ? get(arr_last(get(root, "messages")), "content")
                                           : get(arr_last(get(root, "contents")), "parts");
    for (size_t i = 0; i < arr_len(blocks); i++) {
        json_object *b = json_object_array_get_idx(blocks, i);
        if (d == D_ANTHROPIC ? str_is(get_str(b, "type"), "tool_result")
                             : get(b, "functionResponse") != NULL)
            return true;
    }
    return false;
}

/* ---- the provider's own checks of a conversation with tool calls ---------- */

static char check_err[512];

static bool id_ok(const char *id) /* Anthropic: ^[a-zA-Z0-9_-]+$ */
{
    if (!id || !*id) return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return false;
    return true;
}

/* Whether `blocks` (Anthropic content, or OpenAI messages from `from`) has
 * an item whose `key` is `id`. */
static bool has_id(json_object *arr, size_t from, const char *type_key, const char *type,
                   const char *key, const char *id)
{
    for (size_t i = from; i < arr_len(arr); i++) {
        json_object *b = json_object_array_get_idx(arr, i);
        if (type && !str_is(get_str(b, type_key), type)) continue;
        if (str_is(get_str(b, key), id)) return true;
    }
    return false;
}

/* OpenAI: every tool_call_id of an assistant message is answered by the
 * tool messages right after it, and every tool message answers one. */
static const char *check_openai(json_object *root)
{
    json_object *msgs = get(root, "messages");
    json_object *open_calls = NULL; /* the last assistant's tool_calls */
    size_t n = arr_len(msgs);
    for (size_t i = 0; i <= n; i++) { /* i == n: the end answers nothing */
        json_object *m = i < n ? json_object_array_get_idx(msgs, i) : NULL;
        const char *role = get_str(m, "role");
        if (str_is(role, "tool")) {
            const char *id = get_str(m, "tool_call_id");
            if (!open_calls || !has_id(open_calls, 0, NULL, NULL, "id", id))
                return "Invalid parameter: messages with role 'tool' must be a response to a "
                       "preceeding message with 'tool_calls'.";
            continue;
        }
        for (size_t k = 0; k < arr_len(open_calls); k++) { /* the turn before is complete? */
            const char *id = get_str(json_object_array_get_idx(open_calls, k), "id");
            bool answered = false; /* by the tool messages right before i */
            for (size_t j = i; j > 0 && !answered; j--) {
                json_object *t = json_object_array_get_idx(msgs, j - 1);
                if (!str_is(get_str(t, "role"), "tool")) break;
                answered = str_is(get_str(t, "tool_call_id"), id);
            }
            if (!answered) {
                snprintf(check_err, sizeof check_err,
                         "An assistant message with 'tool_calls' must be followed by tool "
                         "messages responding to each 'tool_call_id'. The following "
                         "tool_call_ids did not have response messages: %s",
                         id ? id : "(none)");
                return check_err;
            }
        }
        open_calls = str_is(role, "assistant") ? get(m, "tool_calls") : NULL;
        for (size_t k = 0; k < arr_len(open_calls); k++) {
            const char *id = get_str(json_object_array_get_idx(open_calls, k), "id");
            if (id && strlen(id) > 40) {
                snprintf(check_err, sizeof check_err,
                         "Invalid 'messages[%zu].tool_calls[%zu].id': string too long. Expected a "
                         "string with maximum length 40, but got a string with length %zu "
                         "instead.",
                         i, k, strlen(id));
                return check_err;
            }
        }
    }
    return NULL;
}

/* Anthropic with thinking enabled: the final assistant message, when it
 * holds tool_use blocks, must start with a thinking block. */
static const char *check_anthropic_thinking(json_object *root)
{
    json_object *msgs = get(root, "messages");
    if (!str_is(get_str(get(root, "thinking"), "type"), "enabled")) return NULL;
    for (size_t i = arr_len(msgs); i-- > 0;) {
        json_object *m = json_object_array_get_idx(msgs, i);
        if (!str_is(get_str(m, "role"), "assistant")) continue;
        json_object *content = get(m, "content");
        if (!has_id(content, 0, NULL, NULL, "type", "tool_use")) return NULL;
        const char *first = get_str(json_object_array_get_idx(content, 0), "type");
        if (str_is(first, "thinking") || str_is(first, "redacted_thinking")) return NULL;
        snprintf(check_err, sizeof check_err,
                 "messages.%zu.content.0.type: Expected `thinking` or `redacted_thinking`, but "
                 "found `%s`. When `thinking` is enabled, a final `assistant` message must start "
                 "with a thinking block (preceeding the lastmost set of `tool_use` and "
                 "`tool_result` blocks). We recommend you include thinking blocks from previous "
                 "turns. To avoid this requirement, disable `thinking`.",
                 i, first ? first : "(none)");
        return check_err;
    }
    return NULL;
}

/* Anthropic: tool_use ids are ^[a-zA-Z0-9_-]+$; each is answered by a
 * tool_result in the next message, and each tool_result answers one of the
 * message before. */
static const char *check_anthropic(json_object *root)
{
    json_object *msgs = get(root, "messages");
    const char *err = check_anthropic_thinking(root);
    if (err) return err;
    for (size_t i = 0; i < arr_len(msgs); i++) {
        json_object *content = get(json_object_array_get_idx(msgs, i), "content");
        json_object *next =
            i + 1 < arr_len(msgs) ? get(json_object_array_get_idx(msgs, i + 1), "content") : NULL;
        json_object *prev = i ? get(json_object_array_get_idx(msgs, i - 1), "content") : NULL;
        for (size_t k = 0; k < arr_len(content); k++) {
            json_object *b = json_object_array_get_idx(content, k);
            const char *type = get_str(b, "type");
            if (str_is(type, "tool_use")) {
                const char *id = get_str(b, "id");
                if (!id_ok(id)) {
                    snprintf(check_err, sizeof check_err,
                             "messages.%zu.content.%zu.tool_use.id: String should match pattern "
                             "'^[a-zA-Z0-9_-]+$'",
                             i, k);
                    return check_err;
                }
                if (i + 1 < arr_len(msgs) &&
                    !has_id(next, 0, "type", "tool_result", "tool_use_id", id)) {
                    snprintf(check_err, sizeof check_err,
                             "messages.%zu: `tool_use` ids were found without `tool_result` "
                             "blocks immediately after: %s. Each `tool_use` block must have a "
                             "corresponding `tool_result` block in the next message.",
                             i + 1, id);
                    return check_err;
                }
            } else if (str_is(type, "tool_result")) {
                const char *id = get_str(b, "tool_use_id");
                if (!has_id(prev, 0, "type", "tool_use", "id", id)) {
                    snprintf(check_err, sizeof check_err,
                             "messages.%zu.content.%zu: unexpected `tool_use_id` found in "
                             "`tool_result` blocks: %s. Each `tool_result` block must have a "
                             "corresponding `tool_use` block in the previous message.",
                             i, k, id ? id : "(none)");
                    return check_err;
                }
            }
        }
    }
    return NULL;
}

static size_t count_parts(json_object *content, const char *key)
{
    size_t n = 0;
    json_object *parts = get(content, "parts");
    for (size_t i = 0; i < arr_len(parts); i++)
        n += get(json_object_array_get_idx(parts, i), key) != NULL;
    return n;
}

/* Gemini: a function call turn is answered by as many functionResponse
 * parts; Gemini 3 wants back the thoughtSignature its first functionCall
 * part carried (the mock's carry "/NAME/"). */
static const char *check_gemini(struct mock_req *m, json_object *root)
{
    json_object *contents = get(root, "contents");
    bool signed_model = strncmp(m->model, "gemini-3", 8) == 0;
    for (size_t i = 0; i < arr_len(contents); i++) {
        json_object *c = json_object_array_get_idx(contents, i);
        size_t calls = count_parts(c, "functionCall");
        if (!calls) continue;
        json_object *next =
            i + 1 < arr_len(contents) ? json_object_array_get_idx(contents, i + 1) : NULL;
        if (next && count_parts(next, "functionResponse") != calls)
            return "Please ensure that the number of function response parts is equal to the "
                   "number of function call parts of the function call turn.";
        json_object *parts = get(c, "parts");
        for (size_t k = 0; signed_model && k < arr_len(parts); k++) {
            json_object *p = json_object_array_get_idx(parts, k);
            json_object *fc = get(p, "functionCall");
            if (!fc) continue;
            const char *sig = get_str(p, "thoughtSignature");
            char want[160];
            snprintf(want, sizeof want, "/%s/", get_str(fc, "name") ? get_str(fc, "name") : "");
            if (!sig || !strstr(sig, want)) {
                snprintf(check_err, sizeof check_err,
                         "Function call is missing a thought_signature in functionCall parts. "
                         "This is required for tools to work correctly, and missing "
                         "thought_signature may lead to degraded model performance. Additional "
                         "data, function call `default_api:%s` , position %zu.",
                         get_str(fc, "name") ? get_str(fc, "name") : "", i + 1);
                return check_err;
            }
            break; /* only the first call of a turn carries one */
        }
    }
    return NULL;
}

const char *tools_check(struct mock_req *m, enum dialect d, json_object *root)
{
    return d == D_OPENAI      ? check_openai(root)
           : d == D_ANTHROPIC ? check_anthropic(root)
           : d == D_GEMINI    ? check_gemini(m, root)
                              : NULL;
}

/* ---- arguments ----------------------------------------------------------- */

/* The JSON Schema (or Gemini OpenAPI) type, lower case; a list of types
 * gives its first that is not "null". */
static const char *schema_type(json_object *schema, char *buf, size_t len)
{
    json_object *t = get(schema, "type");
    const char *s = NULL;
    if (json_object_is_type(t, json_type_string)) s = json_object_get_string(t);
    for (size_t i = 0; !s && i < arr_len(t); i++) {
        const char *x = json_object_get_string(json_object_array_get_idx(t, i));
        if (x && strcasecmp(x, "null")) s = x;
    }
    if (!s) s = get(schema, "properties") ? "object" : "string";
    snprintf(buf, len, "%s", s);
    for (char *p = buf; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    return buf;
}

/* A value that fits `schema`: its first enum value, its minimum, or a fixed
 * one per type ("mock-<property>", 1, 1.5, true); objects get every
 * property, arrays one item. */
static json_object *sample(json_object *schema, const char *prop, int depth)
{
    json_object *en = get(schema, "enum");
    if (arr_len(en)) return json_object_get(json_object_array_get_idx(en, 0));
    char tb[32];
    const char *type = schema_type(schema, tb, sizeof tb);
    json_object *min = get(schema, "minimum");
    if (!strcmp(type, "object")) {
        json_object *o = json_object_new_object();
        json_object *props = get(schema, "properties");
        if (depth < SAMPLE_DEPTH && json_object_is_type(props, json_type_object)) {
            json_object_object_foreach(props, k, v)
            {
                json_object_object_add(o, k, sample(v, k, depth + 1));
            }
        }
        return o;
    }
    if (!strcmp(type, "array")) {
        json_object *a = json_object_new_array();
        if (depth < SAMPLE_DEPTH)
            json_object_array_add(a, sample(get(schema, "items"), prop, depth + 1));
        return a;
    }
    if (!strcmp(type, "integer")) return min ? json_object_get(min) : json_object_new_int(1);
    if (!strcmp(type, "number")) return min ? json_object_get(min) : json_object_new_double(1.5);
    if (!strcmp(type, "boolean")) return json_object_new_boolean(1);
    if (!strcmp(type, "null")) return NULL;
    char s[160];
    snprintf(s, sizeof s, "mock-%s", prop ? prop : "value");
    return json_object_new_string(s);
}

static json_object *schema_of(const struct tool_menu *tm, const char *name)
{
    for (int i = 0; i < tm->n; i++)
        if (!strcmp(tm->tool[i].name, name)) return tm->tool[i].schema;
    return NULL;
}

static void call_set(struct mock_call *c, const char *name, json_object *args)
{
    size_t len;
    const char *s = json_object_to_json_string_length(
        args, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    c->name = strdup(name);
    c->args = strdup(s);
    c->args_len = len;
}

/* tool_call=NAME or NAME:ARGS (a JSON object, %XX-encoded commas). */
static const char *call_from_spec(struct mock_call *c, const char *spec, const struct tool_menu *tm)
{
    static char err[256];
    const char *colon = strchr(spec, ':');
    char name[128];
    snprintf(name, sizeof name, "%.*s", colon ? (int)(colon - spec) : (int)strlen(spec), spec);
    json_object *args =
        colon ? json_tokener_parse(colon + 1) : sample(schema_of(tm, name), NULL, 0);
    if (!colon && !json_object_is_type(args, json_type_object)) { /* no schema, or no object */
        json_object_put(args);
        args = json_object_new_object();
    }
    if (!json_object_is_type(args, json_type_object)) {
        json_object_put(args);
        snprintf(err, sizeof err,
                 "mock: tool_call=%s: the arguments after ':' must be a JSON object "
                 "(%%2C-encode its commas)",
                 name);
        return err;
    }
    call_set(c, name, args);
    json_object_put(args);
    return NULL;
}

/* ---- choosing the calls -------------------------------------------------- */

static void set_ids(struct mock_req *m, enum dialect d)
{
    const char *prefix = d == D_OPENAI ? "call_" : d == D_ANTHROPIC ? "toolu_" : NULL;
    for (int k = 0; prefix && k < m->ncalls; k++)
        snprintf(m->calls[k].id, sizeof m->calls[k].id, "%s%s_%d", prefix, m->id, k);
    for (int k = 0; k < m->ncalls; k++)
        m->call_tokens += (long)(strlen(m->calls[k].name) + m->calls[k].args_len + 3) / 4;
}

const char *tools_prepare(struct mock_req *m, enum dialect d, json_object *root)
{
    const struct directives *dir = &m->dir;
    int want = dir->n_tool_call ? dir->n_tool_call : dir->tool_calls;
    if (want <= 0 || answers_tool_results(d, root)) return NULL;
    struct tool_menu tm = {0};
    if (d == D_ANTHROPIC)
        menu_anthropic(&tm, root);
    else if (d == D_GEMINI)
        menu_gemini(&tm, root);
    else
        menu_openai(&tm, root);
    if (tm.none || (tm.n == 0 && !dir->n_tool_call)) return NULL; /* a text answer */
    if (want > MOCK_CALLS_MAX) want = MOCK_CALLS_MAX;
    if (tm.one_at_most) want = 1;
    m->calls = calloc((size_t)want, sizeof *m->calls);
    if (!m->calls) return "mock: out of memory";
    for (int k = 0; k < want; k++, m->ncalls++) {
        if (dir->n_tool_call) {
            const char *err = call_from_spec(&m->calls[k], dir->tool_call[k], &tm);
            if (err) return err;
            continue;
        }
        const char *name = tm.nforced ? tm.forced[k % tm.nforced] : tm.tool[k % tm.n].name;
        call_from_spec(&m->calls[k], name, &tm); /* a bare name cannot fail */
    }
    set_ids(m, d);
    return NULL;
}

void tools_free(struct mock_req *m)
{
    for (int k = 0; k < m->ncalls; k++) {
        free(m->calls[k].name);
        free(m->calls[k].args);
    }
    free(m->calls);
    m->calls = NULL;
    m->ncalls = 0;
}

/* ---- streaming ----------------------------------------------------------- */

/* A fragment boundary: i * FRAG_BYTES, moved past UTF-8 continuation bytes
 * so that every fragment is valid UTF-8 on its own. */
static size_t frag_at(const struct mock_call *c, size_t i)
{
    size_t p = i * FRAG_BYTES;
    while (p < c->args_len && ((unsigned char)c->args[p] & 0xC0) == 0x80)
        p++;
    return p < c->args_len ? p : c->args_len;
}

int tools_frags(const struct mock_call *c)
{
    return (int)((c->args_len + FRAG_BYTES - 1) / FRAG_BYTES);
}

void tools_frag(const struct mock_call *c, int i, size_t *start, size_t *end)
{
    *start = frag_at(c, (size_t)i);
    *end = frag_at(c, (size_t)i + 1);
}

int tools_locate(struct mock_req *m, int j, int (*per_call)(const struct mock_call *), int *part)
{
    for (int k = 0; k < m->ncalls; k++) {
        int n = per_call(&m->calls[k]);
        if (j < n) {
            *part = j;
            return k;
        }
        j -= n;
    }
    *part = 0;
    return m->ncalls - 1;
}

/* The Anthropic Messages dialect (wire-formats.md §3): OpenAI chat requests
 * out, Messages answers, SSE streams and errors back in OpenAI shape.
 *
 * Upstream calls pin the classic, documented wire: `x-api-key` and
 * `anthropic-version: 2023-06-01` (§3.1). Usage buckets are disjoint on this
 * wire (input_tokens excludes cache reads and writes), unlike OpenAI's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/util.h"
#include "providers/provider.h"

#define ANTHROPIC_VERSION "2023-06-01"
#define ANTHROPIC_DEFAULT_MAX_TOKENS 4096
#define ANTHROPIC_MIN_THINKING 1024 /* the smallest budget_tokens (§3.2) */
/* Content block indexes we map to OpenAI tool-call indexes; beyond this a
 * stream is not something Anthropic sends. */
#define MAX_BLOCKS 4096

/* ------------------------------------------------------------ JSON helpers */

/* A deep copy of member `key` of `from` into `to` when present. */
static void json_copy_member(json_object *from, const char *key, json_object *to)
{
    json_object *v = provider_json_get(from, key);
    json_object *copy = NULL;
    if (v && json_object_deep_copy(v, &copy, NULL) == 0) json_object_object_add(to, key, copy);
}

/* ------------------------------------------------------------ encode: content */

/* Adds a text block unless the text is empty: Anthropic rejects empty text
 * blocks, and they carry nothing. */
static void blocks_add_text(json_object *blocks, const char *text, size_t len,
                            json_object *cache_control)
{
    if (len == 0) return;
    json_object *b = json_object_new_object();
    json_object_object_add(b, "type", json_object_new_string("text"));
    json_object_object_add(b, "text", json_object_new_string_len(text, (int)len));
    if (cache_control)
        json_object_object_add(b, "cache_control", provider_json_copy(cache_control));
    json_object_array_add(blocks, b);
}

/* image_url → image block: data: URIs become base64 sources, http(s) URLs
 * url sources. */
static int blocks_add_image(json_object *blocks, json_object *part, char *err, size_t errlen)
{
    json_object *iu = provider_json_get(part, "image_url");
    const char *url = json_object_is_type(iu, json_type_string) ? json_object_get_string(iu)
                                                                : provider_json_str(iu, "url");
    if (!url) {
        snprintf(err, errlen, "image_url part without a url");
        return -1;
    }
    json_object *source = json_object_new_object();
    if (strncmp(url, "data:", 5) == 0) {
        const char *semi = strstr(url, ";base64,");
        const char *comma = strchr(url, ',');
        if (!semi || semi != comma - 7 || semi == url + 5) {
            json_object_put(source);
            snprintf(err, errlen, "image data URI must be data:<media type>;base64,<data>");
            return -1;
        }
        json_object_object_add(source, "type", json_object_new_string("base64"));
        json_object_object_add(source, "media_type",
                               json_object_new_string_len(url + 5, (int)(semi - url - 5)));
        json_object_object_add(source, "data", json_object_new_string(semi + 8));
    } else if (util_starts_with_ci(url, "https://") || util_starts_with_ci(url, "http://")) {
        json_object_object_add(source, "type", json_object_new_string("url"));
        json_object_object_add(source, "url", json_object_new_string(url));
    } else {
        json_object_put(source);
        snprintf(err, errlen, "image URL must be a data: URI or an http(s) URL");
        return -1;
    }
    json_object *b = json_object_new_object();
    json_object_object_add(b, "type", json_object_new_string("image"));
    json_object_object_add(b, "source", source);
    json_copy_member(part, "cache_control", b);
    json_object_array_add(blocks, b);
    return 0;
}

/* One OpenAI content part → Anthropic blocks. `images` says whether the
 * role may carry images (user only). */
static int blocks_add_part(json_object *blocks, json_object *part, bool images, char *err,
                           size_t errlen)
{
    const char *type = provider_json_str(part, "type");
    if (!type) {
        snprintf(err, errlen, "content part without a type");
        return -1;
    }
    if (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0) {
        json_object *text = provider_json_typed(part, type, json_type_string);
        if (!text) {
            snprintf(err, errlen, "%s part without a string %s", type, type);
            return -1;
        }
        blocks_add_text(blocks, json_object_get_string(text),
                        (size_t)json_object_get_string_len(text),
                        provider_json_get(part, "cache_control"));
        return 0;
    }
    if (images && strcmp(type, "image_url") == 0)
        return blocks_add_image(blocks, part, err, errlen);
    snprintf(err, errlen, "content part type \"%.40s\" is not supported by anthropic", type);
    return -1;
}

/* An OpenAI message content (string, parts or null) → blocks appended. */
static int blocks_add_content(json_object *blocks, json_object *content, bool images, char *err,
                              size_t errlen)
{
    if (json_object_is_type(content, json_type_string)) {
        blocks_add_text(blocks, json_object_get_string(content),
                        (size_t)json_object_get_string_len(content), NULL);
        return 0;
    }
    if (!json_object_is_type(content, json_type_array))
        return 0; /* null: an assistant turn with only tool calls */
    size_t n = json_object_array_length(content);
    for (size_t i = 0; i < n; i++)
        if (blocks_add_part(blocks, json_object_array_get_idx(content, i), images, err, errlen))
            return -1;
    return 0;
}

/* assistant tool_calls → tool_use blocks; arguments must be a JSON object
 * (an empty string means no arguments). */
static int blocks_add_tool_calls(json_object *blocks, json_object *calls, char *err, size_t errlen)
{
    size_t n = json_object_is_type(calls, json_type_array) ? json_object_array_length(calls) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *call = json_object_array_get_idx(calls, i);
        json_object *fn = provider_json_get(call, "function");
        const char *id = provider_json_str(call, "id");
        const char *name = provider_json_str(fn, "name");
        const char *args = provider_json_str(fn, "arguments");
        if (!id || !name) {
            snprintf(err, errlen, "tool_calls[%zu] needs an id and function.name", i);
            return -1;
        }
        char why[96];
        json_object *input = (args && *args)
                                 ? provider_parse_object(NULL, args, strlen(args), why, sizeof why)
                                 : json_object_new_object();
        if (!input) {
            snprintf(err, errlen, "tool_calls[%zu].function.arguments is not a JSON object (%s)", i,
                     why);
            return -1;
        }
        json_object *b = json_object_new_object();
        json_object_object_add(b, "type", json_object_new_string("tool_use"));
        json_object_object_add(b, "id", json_object_new_string(id));
        json_object_object_add(b, "name", json_object_new_string(name));
        json_object_object_add(b, "input", input);
        json_object_array_add(blocks, b);
    }
    return 0;
}

/* role:"tool" → one tool_result block (its turn is a user turn). */
static int blocks_add_tool_result(json_object *blocks, json_object *msg, char *err, size_t errlen)
{
    const char *id = provider_json_str(msg, "tool_call_id");
    if (!id) {
        snprintf(err, errlen, "tool message without a tool_call_id");
        return -1;
    }
    buf text = BUF_INIT;
    provider_content_text(provider_json_get(msg, "content"), &text);
    json_object *b = json_object_new_object();
    json_object_object_add(b, "type", json_object_new_string("tool_result"));
    json_object_object_add(b, "tool_use_id", json_object_new_string(id));
    json_object_object_add(b, "content",
                           json_object_new_string_len(text.data ? text.data : "", (int)text.len));
    json_object_array_add(blocks, b);
    buf_free(&text);
    return 0;
}

/* ------------------------------------------------------------ encode: messages */

/* system/developer content → text blocks of the top-level system array,
 * keeping any cache_control the client put on a part. */
static int system_add_content(json_object *system, json_object *content, char *err, size_t errlen)
{
    return blocks_add_content(system, content, false, err, errlen);
}

/* Appends blocks as a turn of `role`, merged into the previous turn when
 * that has the same role: Anthropic requires user/assistant alternation. */
static void turns_append(json_object *turns, const char *role, json_object *blocks)
{
    size_t n = json_object_array_length(turns);
    json_object *last = n ? json_object_array_get_idx(turns, n - 1) : NULL;
    if (json_object_array_length(blocks) == 0) {
        json_object_put(blocks);
        return;
    }
    if (last && strcmp(provider_json_str(last, "role"), role) == 0) {
        json_object *content = provider_json_get(last, "content");
        size_t m = json_object_array_length(blocks);
        for (size_t i = 0; i < m; i++)
            json_object_array_add(content, json_object_get(json_object_array_get_idx(blocks, i)));
        json_object_put(blocks);
        return;
    }
    json_object *turn = json_object_new_object();
    json_object_object_add(turn, "role", json_object_new_string(role));
    json_object_object_add(turn, "content", blocks);
    json_object_array_add(turns, turn);
}

/* One OpenAI message → blocks for its Anthropic role (system messages go
 * to `system` instead). */
static int message_encode(json_object *msg, json_object *turns, json_object *system, char *err,
                          size_t errlen)
{
    const char *role = provider_json_str(msg, "role");
    json_object *content = provider_json_get(msg, "content");
    if (!role) {
        snprintf(err, errlen, "message without a role");
        return -1;
    }
    if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
        return system_add_content(system, content, err, errlen);

    json_object *blocks = json_object_new_array();
    int rc;
    const char *to = "user";
    if (strcmp(role, "user") == 0) {
        rc = blocks_add_content(blocks, content, true, err, errlen);
    } else if (strcmp(role, "assistant") == 0) {
        to = "assistant";
        rc = blocks_add_content(blocks, content, false, err, errlen);
        if (rc == 0)
            rc = blocks_add_tool_calls(blocks, provider_json_get(msg, "tool_calls"), err, errlen);
    } else if (strcmp(role, "tool") == 0) {
        rc = blocks_add_tool_result(blocks, msg, err, errlen);
    } else {
        snprintf(err, errlen, "message role \"%.40s\" is not supported by anthropic", role);
        rc = -1;
    }
    if (rc) {
        json_object_put(blocks);
        return -1;
    }
    turns_append(turns, to, blocks);
    return 0;
}

static int messages_encode(const canon_request *req, json_object *body, char *err, size_t errlen)
{
    json_object *turns = json_object_new_array();
    json_object *system = json_object_new_array();
    size_t n = json_object_is_type(req->messages, json_type_array)
                   ? json_object_array_length(req->messages)
                   : 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc =
            message_encode(json_object_array_get_idx(req->messages, i), turns, system, err, errlen);
    if (rc == 0 && json_object_array_length(turns) == 0) {
        snprintf(err, errlen,
                 "no user or assistant messages left after hoisting system messages; "
                 "anthropic needs at least one");
        rc = -1;
    }
    if (rc == 0 && json_object_array_length(system) > 0) {
        json_object_object_add(body, "system", system);
        system = NULL;
    }
    if (rc == 0) {
        json_object_object_add(body, "messages", turns);
        turns = NULL;
    }
    json_object_put(system);
    json_object_put(turns);
    return rc;
}

/* ------------------------------------------------------------ encode: parameters */

static int tools_encode(json_object *root, json_object *body, char *err, size_t errlen)
{
    json_object *tools = provider_json_typed(root, "tools", json_type_array);
    size_t n = tools ? json_object_array_length(tools) : 0;
    if (n == 0) return 0;
    json_object *out = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *tool = json_object_array_get_idx(tools, i);
        json_object *fn = provider_json_get(tool, "function");
        const char *name = provider_json_str(fn, "name");
        if (!name) {
            json_object_put(out);
            snprintf(err, errlen, "tools[%zu] is not a function tool with a name", i);
            return -1;
        }
        json_object *t = json_object_new_object();
        json_object_object_add(t, "name", json_object_new_string(name));
        json_copy_member(fn, "description", t);
        json_object *params = provider_json_typed(fn, "parameters", json_type_object);
        json_object_object_add(t, "input_schema",
                               params
                                   ? provider_json_copy(params)
                                   : json_tokener_parse("{\"type\":\"object\",\"properties\":{}}"));
        json_copy_member(tool, "cache_control", t);
        json_object_array_add(out, t);
    }
    json_object_object_add(body, "tools", out);
    return 0;
}

/* tool_choice: auto/none/required(→any)/named(→tool); parallel_tool_calls
 * false → disable_parallel_tool_use. Only sent with tools. */
static void tool_choice_encode(json_object *root, json_object *body)
{
    if (!provider_json_get(body, "tools")) return;
    json_object *tc = provider_json_get(root, "tool_choice");
    json_object *parallel = provider_json_typed(root, "parallel_tool_calls", json_type_boolean);
    json_object *out = json_object_new_object();
    const char *s = json_object_is_type(tc, json_type_string) ? json_object_get_string(tc) : NULL;
    const char *named = provider_json_str(provider_json_get(tc, "function"), "name");
    if (named) {
        json_object_object_add(out, "type", json_object_new_string("tool"));
        json_object_object_add(out, "name", json_object_new_string(named));
    } else if (s && strcmp(s, "required") == 0) {
        json_object_object_add(out, "type", json_object_new_string("any"));
    } else if (s && strcmp(s, "none") == 0) {
        json_object_object_add(out, "type", json_object_new_string("none"));
    } else if (s || parallel) {
        json_object_object_add(out, "type", json_object_new_string("auto"));
    } else {
        json_object_put(out);
        return;
    }
    if (parallel && !json_object_get_boolean(parallel) && !(s && strcmp(s, "none") == 0))
        json_object_object_add(out, "disable_parallel_tool_use", json_object_new_boolean(1));
    json_object_object_add(body, "tool_choice", out);
}

static void stop_encode(json_object *root, json_object *body)
{
    json_object *stop = provider_json_get(root, "stop");
    json_object *seqs = json_object_new_array();
    if (json_object_is_type(stop, json_type_string)) {
        json_object_array_add(seqs, provider_json_copy(stop));
    } else if (json_object_is_type(stop, json_type_array)) {
        size_t n = json_object_array_length(stop);
        for (size_t i = 0; i < n; i++) {
            json_object *s = json_object_array_get_idx(stop, i);
            if (json_object_is_type(s, json_type_string))
                json_object_array_add(seqs, provider_json_copy(s));
        }
    }
    if (json_object_array_length(seqs) > 0)
        json_object_object_add(body, "stop_sequences", seqs);
    else
        json_object_put(seqs);
}

/* Anthropic requires max_tokens: without the client's cap, the provider's
 * configured default, else 4096. */
static int64_t default_max_tokens(const provider_conf *p)
{
    return p && p->default_max_tokens > 0 ? p->default_max_tokens : ANTHROPIC_DEFAULT_MAX_TOKENS;
}

/* Anthropic rejects thinking next to a changed temperature, top_p under
 * 0.95 or a forced tool (its extended-thinking docs; not in wire-formats):
 * the client's own sampling choice wins and the request goes without. */
static bool thinking_allowed(json_object *root)
{
    json_object *temp = provider_json_get(root, "temperature");
    json_object *top_p = provider_json_get(root, "top_p");
    json_object *tc = provider_json_get(root, "tool_choice");
    json_object *tools_arr = provider_json_typed(root, "tools", json_type_array);
    bool tools = tools_arr && json_object_array_length(tools_arr) > 0;
    const char *tcs = json_object_is_type(tc, json_type_string) ? json_object_get_string(tc) : "";
    bool forced = tools && (strcmp(tcs, "required") == 0 || provider_json_get(tc, "function"));
    bool temp_set =
        (json_object_is_type(temp, json_type_double) || json_object_is_type(temp, json_type_int)) &&
        json_object_get_double(temp) != 1.0;
    bool top_p_low = (json_object_is_type(top_p, json_type_double) ||
                      json_object_is_type(top_p, json_type_int)) &&
                     json_object_get_double(top_p) < 0.95;
    return !forced && !temp_set && !top_p_low;
}

/* The thinking budget within Anthropic's rules: budget_tokens >= 1024 and
 * < max_tokens, thinking counted in max_tokens. A max_tokens the request
 * carries (the client's, or the policy's output cap) bounds the cost, so it
 * stays and the budget is CLAMPED under it; when bridle picks max_tokens
 * itself (the provider default), it is RAISED to default + budget so the
 * answer keeps its usual room. Never above the cap: a budget that would
 * fall under 1024 means no thinking. Returns the budget, 0 for none, and
 * the max_tokens to send in *max_tokens. */
static int64_t thinking_plan(int64_t budget, int64_t req_max_tokens, int64_t default_max,
                             int64_t *max_tokens)
{
    *max_tokens = req_max_tokens >= 0 ? req_max_tokens : default_max;
    if (req_max_tokens >= 0 && budget >= req_max_tokens) budget = req_max_tokens - 1;
    if (budget < ANTHROPIC_MIN_THINKING) return 0;
    if (req_max_tokens < 0) *max_tokens = default_max + budget;
    return budget;
}

/* Adds thinking and max_tokens. The client's own thinking object is this
 * dialect's: it goes as it came (max_tokens raised past its budget only
 * when bridle picks max_tokens). Otherwise the client's effort or the
 * policy's cap, as a budget within thinking_plan's rules. */
static void thinking_encode(const canon_request *req, const target *t, json_object *body)
{
    int64_t def = default_max_tokens(t->provider), max_tokens, budget = 0;
    json_object *own = provider_json_typed(req->root, "thinking", json_type_object);
    if (own && provider_reasons(t)) {
        provider_get_int(own, "budget_tokens", &budget);
        max_tokens = req->max_tokens >= 0 ? req->max_tokens : def + (budget > 0 ? budget : 0);
        json_object_object_add(body, "thinking", provider_json_copy(own));
        json_object_object_add(body, "max_tokens", json_object_new_int64(max_tokens));
        return;
    }
    if (thinking_allowed(req->root)) budget = provider_reasoning_budget(req, t);
    budget = thinking_plan(budget, req->max_tokens, def, &max_tokens);
    json_object_object_add(body, "max_tokens", json_object_new_int64(max_tokens));
    if (budget > 0) {
        json_object *th = json_object_new_object();
        json_object_object_add(th, "type", json_object_new_string("enabled"));
        json_object_object_add(th, "budget_tokens", json_object_new_int64(budget));
        json_object_object_add(body, "thinking", th);
    }
}

static void params_encode(const canon_request *req, const target *t, json_object *body)
{
    json_object *root = req->root;
    thinking_encode(req, t, body);
    stop_encode(root, body);
    json_object *temp = provider_json_get(root, "temperature");
    if (json_object_is_type(temp, json_type_double) || json_object_is_type(temp, json_type_int))
        json_object_object_add(body, "temperature", provider_json_copy(temp));
    json_object *top_p = provider_json_get(root, "top_p");
    if (json_object_is_type(top_p, json_type_double) || json_object_is_type(top_p, json_type_int))
        json_object_object_add(body, "top_p", provider_json_copy(top_p));
    if (req->stream) json_object_object_add(body, "stream", json_object_new_boolean(1));
    if (req->user) {
        json_object *meta = json_object_new_object();
        json_object_object_add(meta, "user_id", json_object_new_string(req->user));
        json_object_object_add(body, "metadata", meta);
    }
    json_copy_member(root, "cache_control", body);
}

static void headers_encode(const provider_conf *p, upstream_request *out)
{
    if (p && p->api_key && *p->api_key) upstream_request_add_header(out, "x-api-key", p->api_key);
    upstream_request_add_header(out, "anthropic-version", ANTHROPIC_VERSION);
    upstream_request_add_header(out, "content-type", "application/json");
    /* curl would otherwise send Expect: 100-continue for large bodies and
     * wait a round trip before sending them. */
    upstream_request_add_header(out, "Expect", "");
    if (p) upstream_request_add_header_lines(out, p->extra_headers);
    upstream_request_finish_headers(out);
}

/* `out` comes initialised (upstream_request_init) from the caller, who
 * frees it whether or not this succeeds. */
static int anthropic_encode(const canon_request *req, const target *t, upstream_request *out,
                            char *err, size_t errlen)
{
    if (!t || !t->provider || !t->provider->base_url || !t->upstream_model) {
        snprintf(err, errlen, "anthropic: target has no base_url or upstream model");
        return -1;
    }
    json_object *n = provider_json_typed(req->root, "n", json_type_int);
    if (n && json_object_get_int64(n) > 1) {
        snprintf(err, errlen, "anthropic answers with one choice only; n must be 1");
        return -1;
    }
    json_object *body = json_object_new_object();
    json_object_object_add(body, "model", json_object_new_string(t->upstream_model));
    int rc = messages_encode(req, body, err, errlen);
    if (rc == 0) rc = tools_encode(req->root, body, err, errlen);
    if (rc == 0) {
        tool_choice_encode(req->root, body);
        params_encode(req, t, body);
        buf_printf(&out->url, "%s/messages", t->provider->base_url);
        headers_encode(t->provider, out);
        buf_append_str(&out->body,
                       json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE));
    }
    json_object_put(body);
    return rc;
}

/* ------------------------------------------------------------ usage */

/* The raw counters of an Anthropic usage object, kept apart so a stream can
 * overwrite them field by field (§3.4). */
typedef struct anth_usage {
    int64_t input, output, cache_read, cache_creation, cw_5m, cw_1h, thinking;
    bool has_input, has_output, has_split;
} anth_usage;

/* Overwrites the counters that `usage` reports (non-null members only). */
static void anth_usage_merge(anth_usage *u, json_object *usage)
{
    if (provider_get_count(usage, "input_tokens", &u->input)) u->has_input = true;
    if (provider_get_count(usage, "output_tokens", &u->output)) u->has_output = true;
    provider_get_count(usage, "cache_read_input_tokens", &u->cache_read);
    provider_get_count(usage, "cache_creation_input_tokens", &u->cache_creation);
    json_object *cc = provider_json_typed(usage, "cache_creation", json_type_object);
    if (cc) {
        bool a = provider_get_count(cc, "ephemeral_5m_input_tokens", &u->cw_5m);
        bool b = provider_get_count(cc, "ephemeral_1h_input_tokens", &u->cw_1h);
        if (a || b) u->has_split = true;
    }
    provider_get_count(provider_json_get(usage, "output_tokens_details"), "thinking_tokens",
                       &u->thinking);
}

static usage_record anth_usage_record(const anth_usage *u)
{
    usage_record r = {0};
    r.input_uncached = u->input;
    r.cache_read = u->cache_read;
    /* The TTL split prices 5m writes at 1.25× and 1h at 2× input (§6.1);
     * without it every write is taken as 5m. */
    if (u->has_split) {
        r.cache_write_5m = u->cw_5m;
        r.cache_write_1h = u->cw_1h;
    } else {
        r.cache_write_5m = u->cache_creation;
    }
    r.output = u->output;
    r.reasoning = u->thinking > u->output ? u->output : u->thinking;
    r.exact = u->has_input && u->has_output;
    return r;
}

static usage_record anthropic_usage_map(json_object *usage)
{
    anth_usage u = {0};
    anth_usage_merge(&u, usage);
    return anth_usage_record(&u);
}

/* OpenAI's prompt_tokens counts every input token, cached or not. */
static int64_t usage_prompt_tokens(const usage_record *r)
{
    return r->input_uncached + r->cache_read + r->cache_write_5m + r->cache_write_1h;
}

/* The client-facing usage block. */
static json_object *usage_to_openai(const usage_record *r)
{
    return provider_usage_json(r, usage_prompt_tokens(r));
}

/* ------------------------------------------------------------ decode */

/* stop_reason → OpenAI finish_reason (§9); unknown reasons end normally. */
static const char *finish_reason_map(const char *stop_reason)
{
    if (!stop_reason) return "stop";
    if (strcmp(stop_reason, "max_tokens") == 0 ||
        strcmp(stop_reason, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(stop_reason, "tool_use") == 0) return "tool_calls";
    if (strcmp(stop_reason, "refusal") == 0) return "content_filter";
    return "stop";
}

static json_object *tool_call_from_block(json_object *block)
{
    json_object *input = provider_json_get(block, "input");
    const char *id = provider_json_str(block, "id");
    const char *name = provider_json_str(block, "name");
    json_object *fn = json_object_new_object();
    json_object_object_add(fn, "name", json_object_new_string(name ? name : ""));
    json_object_object_add(
        fn, "arguments",
        json_object_new_string(
            input ? json_object_to_json_string_ext(input, JSON_C_TO_STRING_PLAIN |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE)
                  : "{}"));
    json_object *call = json_object_new_object();
    json_object_object_add(call, "id", json_object_new_string(id ? id : ""));
    json_object_object_add(call, "type", json_object_new_string("function"));
    json_object_object_add(call, "function", fn);
    return call;
}

/* content blocks → OpenAI assistant message: text concatenated, tool_use
 * blocks as tool_calls; thinking blocks stay out of the answer. */
static json_object *message_from_content(json_object *content)
{
    buf text = BUF_INIT;
    json_object *calls = json_object_new_array();
    size_t n =
        json_object_is_type(content, json_type_array) ? json_object_array_length(content) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *block = json_object_array_get_idx(content, i);
        const char *type = provider_json_str(block, "type");
        json_object *t = provider_json_typed(block, "text", json_type_string);
        if (type && strcmp(type, "text") == 0 && t)
            buf_append(&text, json_object_get_string(t), (size_t)json_object_get_string_len(t));
        else if (type && strcmp(type, "tool_use") == 0)
            json_object_array_add(calls, tool_call_from_block(block));
    }
    json_object *msg = json_object_new_object();
    json_object_object_add(msg, "role", json_object_new_string("assistant"));
    bool has_calls = json_object_array_length(calls) > 0;
    json_object_object_add(
        msg, "content",
        (text.len == 0 && has_calls)
            ? NULL
            : json_object_new_string_len(text.data ? text.data : "", (int)text.len));
    json_object_object_add(msg, "refusal", NULL);
    if (has_calls)
        json_object_object_add(msg, "tool_calls", calls);
    else
        json_object_put(calls);
    buf_free(&text);
    return msg;
}

static int anthropic_decode(const canon_request *req, const target *t, const char *body, size_t len,
                            decoded_response *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char why[96];
    json_object *root = provider_parse_object(NULL, body, len, why, sizeof why);
    const char *type = provider_json_str(root, "type");
    if (!type || strcmp(type, "message") != 0) {
        snprintf(err, errlen, "anthropic answer is not a message object (%.60s)",
                 !root  ? why
                 : type ? type
                        : "no type");
        json_object_put(root);
        return -1;
    }
    const char *id = provider_json_str(root, "id");
    const char *model = provider_json_str(root, "model");
    const char *finish = finish_reason_map(provider_json_str(root, "stop_reason"));
    out->usage = anthropic_usage_map(provider_json_get(root, "usage"));
    out->prompt_tokens = usage_prompt_tokens(&out->usage);
    out->completion_tokens = out->usage.output;
    snprintf(out->finish_reason, sizeof out->finish_reason, "%s", finish);

    json_object *choice = json_object_new_object();
    json_object_object_add(choice, "index", json_object_new_int(0));
    json_object_object_add(choice, "message",
                           message_from_content(provider_json_get(root, "content")));
    json_object_object_add(choice, "logprobs", NULL);
    json_object_object_add(choice, "finish_reason", json_object_new_string(finish));
    json_object *choices = json_object_new_array();
    json_object_array_add(choices, choice);

    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(id ? id : "msg_unknown"));
    json_object_object_add(o, "object", json_object_new_string("chat.completion"));
    json_object_object_add(o, "created", json_object_new_int64((int64_t)time(NULL)));
    json_object_object_add(o, "model",
                           json_object_new_string(model                    ? model
                                                  : t && t->upstream_model ? t->upstream_model
                                                                           : ""));
    json_object_object_add(o, "choices", choices);
    json_object_object_add(o, "usage", usage_to_openai(&out->usage));
    out->body = o;
    json_object_put(root);
    return 0;
}

/* ------------------------------------------------------------ classify */

static bool str_is(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

/* Applies the Anthropic error type (or, without one, the status) on top of
 * the status-based defaults already in out. `msg` is the upstream text or
 * NULL; it is appended to what the client reads, except for auth errors. */
static void error_apply_type(upstream_error *out, int status, const char *etype, const char *msg)
{
    const char *what = NULL;
    if (str_is(etype, "overloaded_error") || status == 529) {
        provider_error_set(out, ERRCLASS_RETRYABLE, 503, "server_error", "upstream_overloaded");
        what = "anthropic is overloaded";
    } else if (str_is(etype, "rate_limit_error") || status == 429) {
        provider_error_set(out, ERRCLASS_RETRYABLE, 429, "rate_limit_error", "rate_limit_exceeded");
        what = "anthropic rate limit reached";
    } else if (str_is(etype, "authentication_error") || str_is(etype, "permission_error") ||
               status == 401 || status == 403) {
        /* Our key, not the client's: never echo what upstream said about it. */
        provider_error_set(out, ERRCLASS_FATAL, 502, "upstream_auth_error", "upstream_auth_error");
        snprintf(out->message, sizeof out->message,
                 "anthropic rejected bridle's credentials; check the provider's api_key in "
                 "bridle's configuration");
        return;
    } else if (str_is(etype, "billing_error") || status == 402 ||
               (msg && strcasestr(msg, "credit balance"))) {
        /* Out of credit looks like a client error but is ours, and waiting
         * does not help. */
        provider_error_set(out, ERRCLASS_FATAL, 502, "insufficient_quota", "insufficient_quota");
        out->quota_exhausted = true;
        what = "bridle's anthropic account has run out of credit";
    } else if (str_is(etype, "request_too_large") || status == 413) {
        provider_error_set(out, ERRCLASS_FATAL, 413, "invalid_request_error", "request_too_large");
        what = "request too large for anthropic";
    } else if (str_is(etype, "invalid_request_error") || status == 400) {
        bool too_long = msg && strcasestr(msg, "prompt is too long");
        provider_error_set(out, ERRCLASS_FATAL, 400, "invalid_request_error",
                           too_long ? "context_length_exceeded" : "");
        what = "anthropic rejected the request";
    } else if (status == 503 || status == 502 || status == 504) {
        /* The status says more than a generic api_error type: keep the
         * status rules (503 retryable, 502/504 ambiguous) but name anthropic. */
        what = status == 503 ? "anthropic is unavailable" : "anthropic had a gateway error";
    } else if (str_is(etype, "api_error") || status == 500) {
        provider_error_set(out, ERRCLASS_AMBIGUOUS, 502, "server_error", "upstream_error");
        what = "anthropic had an internal error";
    }
    if (what) snprintf(out->message, sizeof out->message, "%s", what);
    if (msg) provider_error_add_detail(out, msg, strlen(msg));
}

/* The error type and message of an Anthropic error object
 * ({"type":"error","error":{type,message}}), or NULLs. */
static void error_body_fields(json_object *root, const char **etype, const char **msg)
{
    json_object *e = provider_json_typed(root, "error", json_type_object);
    *etype = provider_json_str(e, "type");
    *msg = provider_json_str(e, "message");
}

static void anthropic_classify(int status, const upstream_headers *hs, const char *body, size_t len,
                               upstream_error *out)
{
    memset(out, 0, sizeof *out);
    provider_classify_status(status, out);
    out->retry_after_ms = hs ? provider_retry_after_ms(hs) : -1;
    char why[96];
    json_object *root =
        body && len ? provider_parse_object(NULL, body, len, why, sizeof why) : NULL;
    const char *etype, *msg;
    error_body_fields(root, &etype, &msg);
    error_apply_type(out, status, etype, msg);
    json_object_put(root);
}

/* ------------------------------------------------------------ stream */

typedef struct anth_stream {
    bool include_usage;
    const char *fallback_model; /* t->upstream_model; outlives the stream */
    buf prefix;                 /* `{"id":…,"model":…,"choices":[{"index":0,"delta":` */
    buf chunk;                  /* scratch for the chunk being built */
    bool role_sent, finish_sent;
    int n_tools;     /* OpenAI tool-call indexes handed out */
    int *block_tool; /* Anthropic block index → OpenAI tool index, -1 none */
    int n_blocks;
    anth_usage usage;
} anth_stream;

static void *anthropic_stream_new(const canon_request *req, const target *t)
{
    anth_stream *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->include_usage = req && req->include_usage;
    s->fallback_model = t ? t->upstream_model : NULL;
    return s;
}

static void anthropic_stream_free(void *state)
{
    anth_stream *s = state;
    if (!s) return;
    buf_free(&s->prefix);
    buf_free(&s->chunk);
    free(s->block_tool);
    free(s);
}

/* Every chunk of a stream shares id, created and model; they are
 * serialised once, at message_start (or the first event, if that is lost). */
static void stream_set_prefix(anth_stream *s, const char *id, const char *model)
{
    char gen[40] = "msg_";
    if (!id) {
        if (!util_random_hex(gen + 4, 12))
            snprintf(gen + 4, sizeof gen - 4, "%lld", (long long)util_now_us());
        id = gen;
    }
    if (!model) model = s->fallback_model ? s->fallback_model : "";
    buf_reset(&s->prefix);
    buf_append_str(&s->prefix, "{\"id\":");
    buf_append_json_str(&s->prefix, id, strlen(id));
    buf_printf(&s->prefix, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
               (long long)time(NULL));
    buf_append_json_str(&s->prefix, model, strlen(model));
    buf_append_str(&s->prefix, ",\"choices\":[{\"index\":0,\"delta\":");
}

/* Starts a chunk in s->chunk; the caller appends the delta object. */
static void chunk_begin(anth_stream *s)
{
    if (s->prefix.len == 0) stream_set_prefix(s, NULL, NULL);
    buf_reset(&s->chunk);
    buf_append(&s->chunk, s->prefix.data, s->prefix.len);
}

/* Closes the chunk started by chunk_begin and hands it to the sink. */
static void chunk_emit(anth_stream *s, const char *finish, const stream_sink *sink)
{
    buf_append_str(&s->chunk, ",\"logprobs\":null,\"finish_reason\":");
    if (finish)
        buf_printf(&s->chunk, "\"%s\"}]", finish);
    else
        buf_append_str(&s->chunk, "null}]");
    if (s->include_usage) buf_append_str(&s->chunk, ",\"usage\":null");
    buf_append_char(&s->chunk, '}');
    if (sink && sink->chunk) sink->chunk(sink->ctx, s->chunk.data, s->chunk.len);
}

static void stream_emit_role(anth_stream *s, const stream_sink *sink)
{
    if (s->role_sent) return;
    s->role_sent = true;
    chunk_begin(s);
    buf_append_str(&s->chunk, "{\"role\":\"assistant\",\"content\":\"\"}");
    chunk_emit(s, NULL, sink);
}

static void stream_emit_text(anth_stream *s, json_object *text, stream_result *res,
                             const stream_sink *sink)
{
    size_t len = (size_t)json_object_get_string_len(text);
    const char *str = json_object_get_string(text);
    if (len == 0) return;
    stream_emit_role(s, sink);
    buf_append(&res->text, str, len);
    chunk_begin(s);
    buf_append_str(&s->chunk, "{\"content\":");
    buf_append_json_str(&s->chunk, str, len);
    buf_append_char(&s->chunk, '}');
    chunk_emit(s, NULL, sink);
}

static void stream_emit_finish(anth_stream *s, const char *finish, const stream_sink *sink)
{
    if (s->finish_sent) return;
    s->finish_sent = true;
    stream_emit_role(s, sink);
    chunk_begin(s);
    buf_append_str(&s->chunk, "{}");
    chunk_emit(s, finish, sink);
}

static void stream_update_usage(anth_stream *s, stream_result *res)
{
    res->usage = anth_usage_record(&s->usage);
    res->prompt_tokens = usage_prompt_tokens(&res->usage);
    res->completion_tokens = res->usage.output;
}

/* Remembers that content block `index` is OpenAI tool call `tool`. */
static void stream_map_block(anth_stream *s, int64_t index, int tool)
{
    if (index < 0 || index >= MAX_BLOCKS) return;
    if (index >= s->n_blocks) {
        int n = (int)index + 8;
        int *m = realloc(s->block_tool, (size_t)n * sizeof *m);
        if (!m) abort();
        for (int i = s->n_blocks; i < n; i++)
            m[i] = -1;
        s->block_tool = m;
        s->n_blocks = n;
    }
    s->block_tool[index] = tool;
}

static int stream_block_tool(const anth_stream *s, json_object *ev)
{
    json_object *idx = provider_json_typed(ev, "index", json_type_int);
    int64_t i = idx ? json_object_get_int64(idx) : -1;
    return (i >= 0 && i < s->n_blocks) ? s->block_tool[i] : -1;
}

static void on_message_start(anth_stream *s, json_object *ev, stream_result *res,
                             const stream_sink *sink)
{
    json_object *msg = provider_json_get(ev, "message");
    if (s->prefix.len == 0)
        stream_set_prefix(s, provider_json_str(msg, "id"), provider_json_str(msg, "model"));
    anth_usage_merge(&s->usage, provider_json_get(msg, "usage"));
    stream_update_usage(s, res);
    stream_emit_role(s, sink);
}

/* A tool_use block opens a tool call: id and name now, arguments later. */
static void on_block_start(anth_stream *s, json_object *ev, stream_result *res,
                           const stream_sink *sink)
{
    json_object *block = provider_json_get(ev, "content_block");
    const char *type = provider_json_str(block, "type");
    if (type && strcmp(type, "text") == 0) {
        json_object *text = provider_json_typed(block, "text", json_type_string);
        if (text) stream_emit_text(s, text, res, sink);
        return;
    }
    if (!type || strcmp(type, "tool_use") != 0)
        return; /* thinking, server tools: not part of an OpenAI answer */
    json_object *idx = provider_json_typed(ev, "index", json_type_int);
    int tool = s->n_tools++;
    stream_map_block(s, idx ? json_object_get_int64(idx) : -1, tool);
    const char *id = provider_json_str(block, "id");
    const char *name = provider_json_str(block, "name");
    stream_emit_role(s, sink);
    chunk_begin(s);
    buf_printf(&s->chunk, "{\"tool_calls\":[{\"index\":%d,\"id\":", tool);
    buf_append_json_str(&s->chunk, id ? id : "", id ? strlen(id) : 0);
    buf_append_str(&s->chunk, ",\"type\":\"function\",\"function\":{\"name\":");
    buf_append_json_str(&s->chunk, name ? name : "", name ? strlen(name) : 0);
    buf_append_str(&s->chunk, ",\"arguments\":\"\"}}]}");
    chunk_emit(s, NULL, sink);
}

static void on_block_delta(anth_stream *s, json_object *ev, stream_result *res,
                           const stream_sink *sink)
{
    json_object *delta = provider_json_get(ev, "delta");
    const char *type = provider_json_str(delta, "type");
    if (!type) return;
    if (strcmp(type, "text_delta") == 0) {
        json_object *text = provider_json_typed(delta, "text", json_type_string);
        if (text) stream_emit_text(s, text, res, sink);
        return;
    }
    if (strcmp(type, "input_json_delta") != 0)
        return; /* thinking_delta, signature_delta, citations_delta */
    json_object *pj = provider_json_typed(delta, "partial_json", json_type_string);
    int tool = stream_block_tool(s, ev);
    if (!pj || tool < 0 || json_object_get_string_len(pj) == 0) return;
    chunk_begin(s);
    buf_printf(&s->chunk, "{\"tool_calls\":[{\"index\":%d,\"function\":{\"arguments\":", tool);
    buf_append_json_str(&s->chunk, json_object_get_string(pj),
                        (size_t)json_object_get_string_len(pj));
    buf_append_str(&s->chunk, "}}]}");
    chunk_emit(s, NULL, sink);
}

/* message_delta: the stop reason and the final (cumulative) usage. */
static void on_message_delta(anth_stream *s, json_object *ev, stream_result *res,
                             const stream_sink *sink)
{
    anth_usage_merge(&s->usage, provider_json_get(ev, "usage"));
    stream_update_usage(s, res);
    const char *stop = provider_json_str(provider_json_get(ev, "delta"), "stop_reason");
    if (!stop) return;
    const char *finish = finish_reason_map(stop);
    snprintf(res->finish_reason, sizeof res->finish_reason, "%s", finish);
    stream_emit_finish(s, finish, sink);
}

static void on_message_stop(anth_stream *s, stream_result *res, const stream_sink *sink)
{
    /* A stream that never said why it stopped still ended normally. */
    if (!s->finish_sent) {
        snprintf(res->finish_reason, sizeof res->finish_reason, "stop");
        stream_emit_finish(s, "stop", sink);
    }
    res->done = true;
}

/* event: error. The status is implied by the error type. */
static void on_error(json_object *ev, stream_result *res)
{
    const char *etype, *msg;
    error_body_fields(ev, &etype, &msg);
    int status = 500;
    if (etype && strcmp(etype, "overloaded_error") == 0)
        status = 529;
    else if (etype && strcmp(etype, "rate_limit_error") == 0)
        status = 429;
    else if (etype && strcmp(etype, "invalid_request_error") == 0)
        status = 400;
    else if (etype && strcmp(etype, "request_too_large") == 0)
        status = 413;
    else if (etype && strcmp(etype, "timeout_error") == 0)
        status = 504;
    memset(&res->error, 0, sizeof res->error);
    provider_classify_status(status, &res->error);
    res->error.retry_after_ms = -1;
    error_apply_type(&res->error, status, etype, msg);
    res->failed = true;
}

static void stream_fail_garbage(stream_result *res, const char *why)
{
    memset(&res->error, 0, sizeof res->error);
    res->error.cls = ERRCLASS_AMBIGUOUS;
    res->error.retry_after_ms = -1;
    res->error.client_status = 502;
    snprintf(res->error.type, sizeof res->error.type, "server_error");
    snprintf(res->error.code, sizeof res->error.code, "bad_upstream_response");
    snprintf(res->error.message, sizeof res->error.message, "anthropic stream: %s", why);
    res->failed = true;
}

static int anthropic_stream_event(void *state, const stream_event *ev, stream_result *res,
                                  const stream_sink *sink)
{
    anth_stream *s = state;
    char why[96];
    json_object *data = provider_parse_object(NULL, ev->data, ev->data_len, why, sizeof why);
    const char *type = provider_json_str(data, "type");
    if (!type) type = ev->event;
    if (!data || !type) {
        json_object_put(data);
        stream_fail_garbage(res, data ? "event without a type" : why);
        return -1;
    }
    if (strcmp(type, "message_start") == 0)
        on_message_start(s, data, res, sink);
    else if (strcmp(type, "content_block_start") == 0)
        on_block_start(s, data, res, sink);
    else if (strcmp(type, "content_block_delta") == 0)
        on_block_delta(s, data, res, sink);
    else if (strcmp(type, "message_delta") == 0)
        on_message_delta(s, data, res, sink);
    else if (strcmp(type, "message_stop") == 0)
        on_message_stop(s, res, sink);
    else if (strcmp(type, "error") == 0)
        on_error(data, res);
    /* ping, content_block_stop and types newer than this file: nothing. */
    json_object_put(data);
    return 0;
}

const provider_ops anthropic_ops = {
    .kind = "anthropic",
    .framing = FRAMING_SSE,
    .needs_tree = true,
    .encode = anthropic_encode,
    .decode = anthropic_decode,
    .stream_new = anthropic_stream_new,
    .stream_free = anthropic_stream_free,
    .stream_event = anthropic_stream_event,
    .classify = anthropic_classify,
    .usage_map = anthropic_usage_map,
};

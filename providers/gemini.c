/* The Gemini generateContent dialect (wire-formats.md §4): OpenAI chat
 * requests out, GenerateContentResponse answers, SSE streams and
 * google.rpc errors back in OpenAI shape.
 *
 * Gemini counts cached tokens inside promptTokenCount (like OpenAI) but keeps
 * thinking tokens OUT of candidatesTokenCount (unlike OpenAI), so output is
 * candidates + thoughts. In streams usageMetadata is a running total. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/util.h"
#include "providers/provider.h"

/* Retry delays are capped here; the router applies its own, lower, cap. */
#define RETRY_DELAY_MAX_MS ((int64_t)24 * 3600 * 1000)

/* ------------------------------------------------------------ JSON helpers */

/* Copies member `from_key` of `from` to `to` as `to_key` when it has type
 * `type`. */
static void json_copy_typed(json_object *from, const char *from_key, json_type type,
                            json_object *to, const char *to_key)
{
    json_object *v = provider_json_typed(from, from_key, type);
    if (v) json_object_object_add(to, to_key, provider_json_copy(v));
}

static bool json_is_number(json_object *v)
{
    return json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double);
}

/* ------------------------------------------------------------ encode: parts */

/* Appends {text} unless empty (an empty part is rejected and says nothing). */
static void parts_add_text(json_object *parts, const char *text, size_t len)
{
    if (len == 0) return;
    json_object *p = json_object_new_object();
    json_object_object_add(p, "text", json_object_new_string_len(text, (int)len));
    json_object_array_add(parts, p);
}

/* image_url (data: URI only) → inlineData. Gemini cannot fetch arbitrary
 * URLs through fileData, so an http(s) image is an encode error. */
static int parts_add_image(json_object *parts, json_object *part, char *err, size_t errlen)
{
    json_object *iu = provider_json_get(part, "image_url");
    const char *url = json_object_is_type(iu, json_type_string) ? json_object_get_string(iu)
                                                                : provider_json_str(iu, "url");
    const char *semi = url ? strstr(url, ";base64,") : NULL;
    const char *comma = url ? strchr(url, ',') : NULL;
    if (!url || strncmp(url, "data:", 5) != 0 || !semi || semi != comma - 7 || semi == url + 5) {
        snprintf(err, errlen, "gemini accepts images only as data:<media type>;base64,<data> URIs");
        return -1;
    }
    json_object *inl = json_object_new_object();
    json_object_object_add(inl, "mimeType",
                           json_object_new_string_len(url + 5, (int)(semi - url - 5)));
    json_object_object_add(inl, "data", json_object_new_string(semi + 8));
    json_object *p = json_object_new_object();
    json_object_object_add(p, "inlineData", inl);
    json_object_array_add(parts, p);
    return 0;
}

static int parts_add_part(json_object *parts, json_object *part, bool images, char *err,
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
        parts_add_text(parts, json_object_get_string(text),
                       (size_t)json_object_get_string_len(text));
        return 0;
    }
    if (images && strcmp(type, "image_url") == 0) return parts_add_image(parts, part, err, errlen);
    snprintf(err, errlen, "content part type \"%.40s\" is not supported by gemini", type);
    return -1;
}

static int parts_add_content(json_object *parts, json_object *content, bool images, char *err,
                             size_t errlen)
{
    if (json_object_is_type(content, json_type_string)) {
        parts_add_text(parts, json_object_get_string(content),
                       (size_t)json_object_get_string_len(content));
        return 0;
    }
    if (!json_object_is_type(content, json_type_array)) return 0;
    size_t n = json_object_array_length(content);
    for (size_t i = 0; i < n; i++)
        if (parts_add_part(parts, json_object_array_get_idx(content, i), images, err, errlen))
            return -1;
    return 0;
}

/* assistant tool_calls → functionCall parts; remembers id → name in
 * `names` for the functionResponse parts that answer them. */
static int parts_add_tool_calls(json_object *parts, json_object *calls, json_object *names,
                                char *err, size_t errlen)
{
    size_t n = json_object_is_type(calls, json_type_array) ? json_object_array_length(calls) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *call = json_object_array_get_idx(calls, i);
        json_object *fn = provider_json_get(call, "function");
        const char *id = provider_json_str(call, "id");
        const char *name = provider_json_str(fn, "name");
        const char *args = provider_json_str(fn, "arguments");
        if (!name) {
            snprintf(err, errlen, "tool_calls[%zu] needs a function.name", i);
            return -1;
        }
        char why[96];
        json_object *a = (args && *args)
                             ? provider_parse_object(NULL, args, strlen(args), why, sizeof why)
                             : json_object_new_object();
        if (!a) {
            snprintf(err, errlen, "tool_calls[%zu].function.arguments is not a JSON object (%s)", i,
                     why);
            return -1;
        }
        if (id) json_object_object_add(names, id, json_object_new_string(name));
        json_object *fc = json_object_new_object();
        json_object_object_add(fc, "name", json_object_new_string(name));
        json_object_object_add(fc, "args", a);
        json_object *p = json_object_new_object();
        json_object_object_add(p, "functionCall", fc);
        json_object_array_add(parts, p);
    }
    return 0;
}

/* role:"tool" → a functionResponse part named after the call it answers
 * (Gemini matches responses by name, OpenAI by id). */
static int parts_add_tool_result(json_object *parts, json_object *msg, json_object *names,
                                 char *err, size_t errlen)
{
    const char *id = provider_json_str(msg, "tool_call_id");
    const char *name = id ? provider_json_str(names, id) : NULL;
    if (!name) name = provider_json_str(msg, "name");
    if (!name) {
        snprintf(err, errlen,
                 "tool message answers tool_call_id \"%.64s\", which no earlier "
                 "assistant tool call has",
                 id ? id : "");
        return -1;
    }
    buf text = BUF_INIT;
    provider_content_text(provider_json_get(msg, "content"), &text);
    json_object *resp = json_object_new_object();
    json_object_object_add(resp, "content",
                           json_object_new_string_len(text.data ? text.data : "", (int)text.len));
    buf_free(&text);
    json_object *fr = json_object_new_object();
    json_object_object_add(fr, "name", json_object_new_string(name));
    json_object_object_add(fr, "response", resp);
    json_object *p = json_object_new_object();
    json_object_object_add(p, "functionResponse", fr);
    json_object_array_add(parts, p);
    return 0;
}

/* ------------------------------------------------------------ encode: contents */

/* Appends parts as a turn of `role`, merged into the previous turn when it
 * has the same role (several tool answers become one user turn). */
static void contents_append(json_object *contents, const char *role, json_object *parts)
{
    size_t n = json_object_array_length(contents);
    json_object *last = n ? json_object_array_get_idx(contents, n - 1) : NULL;
    if (json_object_array_length(parts) == 0) {
        json_object_put(parts);
        return;
    }
    if (last && strcmp(provider_json_str(last, "role"), role) == 0) {
        json_object *lp = provider_json_get(last, "parts");
        size_t m = json_object_array_length(parts);
        for (size_t i = 0; i < m; i++)
            json_object_array_add(lp, json_object_get(json_object_array_get_idx(parts, i)));
        json_object_put(parts);
        return;
    }
    json_object *turn = json_object_new_object();
    json_object_object_add(turn, "role", json_object_new_string(role));
    json_object_object_add(turn, "parts", parts);
    json_object_array_add(contents, turn);
}

static int message_encode(json_object *msg, json_object *contents, json_object *system,
                          json_object *names, char *err, size_t errlen)
{
    const char *role = provider_json_str(msg, "role");
    json_object *content = provider_json_get(msg, "content");
    if (!role) {
        snprintf(err, errlen, "message without a role");
        return -1;
    }
    if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
        return parts_add_content(system, content, false, err, errlen);

    json_object *parts = json_object_new_array();
    int rc;
    const char *to = "user";
    if (strcmp(role, "user") == 0) {
        rc = parts_add_content(parts, content, true, err, errlen);
    } else if (strcmp(role, "assistant") == 0) {
        to = "model";
        rc = parts_add_content(parts, content, false, err, errlen);
        if (rc == 0)
            rc = parts_add_tool_calls(parts, provider_json_get(msg, "tool_calls"), names, err,
                                      errlen);
    } else if (strcmp(role, "tool") == 0) {
        rc = parts_add_tool_result(parts, msg, names, err, errlen);
    } else {
        snprintf(err, errlen, "message role \"%.40s\" is not supported by gemini", role);
        rc = -1;
    }
    if (rc) {
        json_object_put(parts);
        return -1;
    }
    contents_append(contents, to, parts);
    return 0;
}

static int contents_encode(const canon_request *req, json_object *body, char *err, size_t errlen)
{
    json_object *contents = json_object_new_array();
    json_object *system = json_object_new_array();
    json_object *names = json_object_new_object();
    size_t n = json_object_is_type(req->messages, json_type_array)
                   ? json_object_array_length(req->messages)
                   : 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = message_encode(json_object_array_get_idx(req->messages, i), contents, system, names,
                            err, errlen);
    json_object_put(names);
    if (rc == 0 && json_object_array_length(contents) == 0) {
        snprintf(err, errlen,
                 "no user or assistant messages left after taking out system "
                 "messages; gemini needs at least one");
        rc = -1;
    }
    if (rc == 0 && json_object_array_length(system) > 0) {
        json_object *si = json_object_new_object();
        json_object_object_add(si, "parts", system);
        json_object_object_add(body, "systemInstruction", si);
        system = NULL;
    }
    if (rc == 0) {
        json_object_object_add(body, "contents", contents);
        contents = NULL;
    }
    json_object_put(system);
    json_object_put(contents);
    return rc;
}

/* ------------------------------------------------------------ encode: parameters */

static void stop_encode(json_object *root, json_object *gc)
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
        json_object_object_add(gc, "stopSequences", seqs);
    else
        json_object_put(seqs);
}

/* response_format → responseMimeType (+ responseJsonSchema for a
 * json_schema format that carries a schema). */
static void json_mode_encode(const canon_request *req, json_object *gc)
{
    if (!req->json_mode) return;
    json_object_object_add(gc, "responseMimeType", json_object_new_string("application/json"));
    json_object *rf = provider_json_get(req->root, "response_format");
    const char *type = provider_json_str(rf, "type");
    if (type && strcmp(type, "json_schema") == 0)
        json_copy_typed(provider_json_get(rf, "json_schema"), "schema", json_type_object, gc,
                        "responseJsonSchema");
}

/* The smallest thinkingBudget of the Pro models, which cannot turn thinking
 * off (§4: 2.5 Pro, min 128): what they get for a client's "none". */
#define GEMINI_PRO_MIN_THINKING 128

static bool thinking_can_be_off(const target *t)
{
    return !strstr(t->upstream_model, "-pro");
}

/* generationConfig.thinkingConfig.thinkingBudget (§4): the client's effort
 * or the policy's cap (0 turns thinking off). Thoughts count against
 * maxOutputTokens, so a cap the request carries bounds the budget too
 * (clamped, never raised). */
static void thinking_encode(const canon_request *req, const target *t, json_object *gc)
{
    int64_t budget = provider_reasoning_budget(req, t);
    if (budget < 0) return;
    if (budget == 0 && !thinking_can_be_off(t)) budget = GEMINI_PRO_MIN_THINKING;
    if (req->max_tokens > 0 && budget > req->max_tokens) budget = req->max_tokens;
    json_object *tc = json_object_new_object();
    json_object_object_add(tc, "thinkingBudget", json_object_new_int64(budget));
    json_object_object_add(gc, "thinkingConfig", tc);
}

static void generation_config_encode(const canon_request *req, const target *t, json_object *body)
{
    json_object *root = req->root;
    json_object *gc = json_object_new_object();
    if (req->max_tokens >= 0)
        json_object_object_add(gc, "maxOutputTokens", json_object_new_int64(req->max_tokens));
    if (json_is_number(provider_json_get(root, "temperature")))
        json_object_object_add(gc, "temperature",
                               provider_json_copy(provider_json_get(root, "temperature")));
    if (json_is_number(provider_json_get(root, "top_p")))
        json_object_object_add(gc, "topP", provider_json_copy(provider_json_get(root, "top_p")));
    stop_encode(root, gc);
    json_copy_typed(root, "n", json_type_int, gc, "candidateCount");
    json_copy_typed(root, "seed", json_type_int, gc, "seed");
    json_mode_encode(req, gc);
    thinking_encode(req, t, gc);
    if (json_object_object_length(gc) > 0)
        json_object_object_add(body, "generationConfig", gc);
    else
        json_object_put(gc);
}

/* tools → one functionDeclarations list. OpenAI parameters are full JSON
 * Schema, which `parameters` (an OpenAPI subset) rejects in places
 * (additionalProperties, $ref…); parametersJsonSchema takes it as is. */
static int tools_encode(json_object *root, json_object *body, char *err, size_t errlen)
{
    json_object *tools = provider_json_typed(root, "tools", json_type_array);
    size_t n = tools ? json_object_array_length(tools) : 0;
    if (n == 0) return 0;
    json_object *decls = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *fn = provider_json_get(json_object_array_get_idx(tools, i), "function");
        const char *name = provider_json_str(fn, "name");
        if (!name) {
            json_object_put(decls);
            snprintf(err, errlen, "tools[%zu] is not a function tool with a name", i);
            return -1;
        }
        json_object *d = json_object_new_object();
        json_object_object_add(d, "name", json_object_new_string(name));
        json_copy_typed(fn, "description", json_type_string, d, "description");
        json_copy_typed(fn, "parameters", json_type_object, d, "parametersJsonSchema");
        json_object_array_add(decls, d);
    }
    json_object *tool = json_object_new_object();
    json_object_object_add(tool, "functionDeclarations", decls);
    json_object *arr = json_object_new_array();
    json_object_array_add(arr, tool);
    json_object_object_add(body, "tools", arr);
    return 0;
}

/* tool_choice → toolConfig.functionCallingConfig: auto/none/required(ANY),
 * a named function → ANY restricted to that name. */
static void tool_choice_encode(json_object *root, json_object *body)
{
    json_object *tc = provider_json_get(root, "tool_choice");
    const char *s = json_object_is_type(tc, json_type_string) ? json_object_get_string(tc) : NULL;
    const char *named = provider_json_str(provider_json_get(tc, "function"), "name");
    const char *mode = named                             ? "ANY"
                       : s && strcmp(s, "required") == 0 ? "ANY"
                       : s && strcmp(s, "none") == 0     ? "NONE"
                       : s && strcmp(s, "auto") == 0     ? "AUTO"
                                                         : NULL;
    if (!mode || !provider_json_get(body, "tools")) return;
    json_object *fcc = json_object_new_object();
    json_object_object_add(fcc, "mode", json_object_new_string(mode));
    if (named) {
        json_object *names = json_object_new_array();
        json_object_array_add(names, json_object_new_string(named));
        json_object_object_add(fcc, "allowedFunctionNames", names);
    }
    json_object *cfg = json_object_new_object();
    json_object_object_add(cfg, "functionCallingConfig", fcc);
    json_object_object_add(body, "toolConfig", cfg);
}

static void headers_encode(const provider_conf *p, upstream_request *out)
{
    if (p && p->api_key && *p->api_key)
        upstream_request_add_header(out, "x-goog-api-key", p->api_key);
    upstream_request_add_header(out, "content-type", "application/json");
    /* No Expect: 100-continue round trip before large bodies. */
    upstream_request_add_header(out, "Expect", "");
    if (p) upstream_request_add_header_lines(out, p->extra_headers);
    upstream_request_finish_headers(out);
}

/* `out` comes initialised (upstream_request_init) from the caller, who
 * frees it whether or not this succeeds. */
static int gemini_encode(const canon_request *req, const target *t, upstream_request *out,
                         char *err, size_t errlen)
{
    if (!t || !t->provider || !t->provider->base_url || !t->upstream_model) {
        snprintf(err, errlen, "gemini: target has no base_url or upstream model");
        return -1;
    }
    json_object *body = json_object_new_object();
    int rc = contents_encode(req, body, err, errlen);
    if (rc == 0) rc = tools_encode(req->root, body, err, errlen);
    if (rc == 0) {
        tool_choice_encode(req->root, body);
        generation_config_encode(req, t, body);
        /* Without alt=sse the stream is one long JSON array, not SSE. */
        buf_printf(&out->url, "%s/models/%s:%s", t->provider->base_url, t->upstream_model,
                   req->stream ? "streamGenerateContent?alt=sse" : "generateContent");
        headers_encode(t->provider, out);
        buf_append_str(&out->body,
                       json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE));
    }
    json_object_put(body);
    return rc;
}

/* ------------------------------------------------------------ usage */

static usage_record gemini_usage_map(json_object *usage)
{
    usage_record r = {0};
    int64_t prompt = 0, cached = 0, tool = 0, cand = 0, thoughts = 0;
    r.exact = provider_get_count(usage, "promptTokenCount", &prompt);
    provider_get_count(usage, "cachedContentTokenCount", &cached);
    provider_get_count(usage, "toolUsePromptTokenCount", &tool);
    provider_get_count(usage, "candidatesTokenCount", &cand);
    provider_get_count(usage, "thoughtsTokenCount", &thoughts);
    if (cached > prompt) cached = prompt; /* cached ⊂ prompt; more is garbage */
    r.input_uncached = prompt - cached + tool;
    r.cache_read = cached;
    r.output = cand + thoughts;
    r.reasoning = thoughts;
    return r;
}

/* prompt_tokens for the client: every input token, tool-use prompt tokens
 * included, so that it matches what is billed. */
static int64_t usage_prompt_tokens(const usage_record *r)
{
    return r->input_uncached + r->cache_read;
}

static json_object *usage_to_openai(const usage_record *r)
{
    return provider_usage_json(r, usage_prompt_tokens(r));
}

/* ------------------------------------------------------------ decode */

/* finishReason → OpenAI finish_reason (§9). */
static const char *finish_reason_map(const char *reason, bool tool_calls)
{
    static const char *const filtered[] = {
        "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE"};
    if (!reason || strcmp(reason, "STOP") == 0) return tool_calls ? "tool_calls" : "stop";
    if (strcmp(reason, "MAX_TOKENS") == 0) return "length";
    if (strncmp(reason, "IMAGE_", 6) == 0) return "content_filter";
    for (size_t i = 0; i < sizeof filtered / sizeof filtered[0]; i++)
        if (strcmp(reason, filtered[i]) == 0) return "content_filter";
    return "stop";
}

/* A tool call id: Gemini's own when it sent one, else a fresh one. */
static void tool_call_id(json_object *fc, char *out, size_t outlen)
{
    const char *id = provider_json_str(fc, "id");
    if (id && *id) {
        snprintf(out, outlen, "%s", id);
        return;
    }
    char hex[25];
    if (!util_random_hex(hex, 12)) snprintf(hex, sizeof hex, "%llx", (long long)util_now_us());
    snprintf(out, outlen, "call_%s", hex);
}

/* The arguments of a functionCall as the JSON string OpenAI carries. */
static const char *tool_call_args(json_object *fc)
{
    json_object *args = provider_json_get(fc, "args");
    return args ? json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE)
                : "{}";
}

static json_object *tool_call_from_part(json_object *fc)
{
    char id[80];
    tool_call_id(fc, id, sizeof id);
    const char *name = provider_json_str(fc, "name");
    json_object *fn = json_object_new_object();
    json_object_object_add(fn, "name", json_object_new_string(name ? name : ""));
    json_object_object_add(fn, "arguments", json_object_new_string(tool_call_args(fc)));
    json_object *call = json_object_new_object();
    json_object_object_add(call, "id", json_object_new_string(id));
    json_object_object_add(call, "type", json_object_new_string("function"));
    json_object_object_add(call, "function", fn);
    return call;
}

/* Thought parts are the model's reasoning summary, not its answer. */
static bool part_is_thought(json_object *part)
{
    json_object *t = provider_json_typed(part, "thought", json_type_boolean);
    return t && json_object_get_boolean(t);
}

/* candidate.content.parts → text and tool_calls. */
static json_object *message_from_parts(json_object *parts, bool *has_calls)
{
    buf text = BUF_INIT;
    json_object *calls = json_object_new_array();
    size_t n = json_object_is_type(parts, json_type_array) ? json_object_array_length(parts) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *part = json_object_array_get_idx(parts, i);
        json_object *t = provider_json_typed(part, "text", json_type_string);
        json_object *fc = provider_json_typed(part, "functionCall", json_type_object);
        if (t && !part_is_thought(part))
            buf_append(&text, json_object_get_string(t), (size_t)json_object_get_string_len(t));
        else if (fc)
            json_object_array_add(calls, tool_call_from_part(fc));
    }
    *has_calls = json_object_array_length(calls) > 0;
    json_object *msg = json_object_new_object();
    json_object_object_add(msg, "role", json_object_new_string("assistant"));
    json_object_object_add(
        msg, "content",
        (text.len == 0 && *has_calls)
            ? NULL
            : json_object_new_string_len(text.data ? text.data : "", (int)text.len));
    json_object_object_add(msg, "refusal", NULL);
    if (*has_calls)
        json_object_object_add(msg, "tool_calls", calls);
    else
        json_object_put(calls);
    buf_free(&text);
    return msg;
}

/* "chatcmpl-" + responseId, or random hex when Gemini sent none. */
static void response_id(json_object *root, char *out, size_t outlen)
{
    const char *rid = provider_json_str(root, "responseId");
    char hex[25];
    if (!rid || !*rid) {
        if (!util_random_hex(hex, 12)) snprintf(hex, sizeof hex, "%llx", (long long)util_now_us());
        rid = hex;
    }
    snprintf(out, outlen, "chatcmpl-%s", rid);
}

static int gemini_decode(const canon_request *req, const target *t, const char *body, size_t len,
                         decoded_response *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char why[96];
    json_object *root = provider_parse_object(NULL, body, len, why, sizeof why);
    if (!root) {
        snprintf(err, errlen, "gemini answer: %s", why);
        return -1;
    }
    json_object *cands = provider_json_typed(root, "candidates", json_type_array);
    json_object *cand = cands ? json_object_array_get_idx(cands, 0) : NULL;
    const char *blocked =
        provider_json_str(provider_json_get(root, "promptFeedback"), "blockReason");
    if (!json_object_is_type(cand, json_type_object) && !blocked) {
        snprintf(err, errlen, "gemini answer has no candidates and no block reason");
        json_object_put(root);
        return -1;
    }
    bool has_calls = false;
    json_object *msg = message_from_parts(
        provider_json_get(provider_json_get(cand, "content"), "parts"), &has_calls);
    /* A prompt blocked before generation has no candidate at all. */
    const char *finish = cand
                             ? finish_reason_map(provider_json_str(cand, "finishReason"), has_calls)
                             : "content_filter";
    out->usage = gemini_usage_map(provider_json_get(root, "usageMetadata"));
    out->prompt_tokens = usage_prompt_tokens(&out->usage);
    out->completion_tokens = out->usage.output;
    snprintf(out->finish_reason, sizeof out->finish_reason, "%s", finish);

    json_object *choice = json_object_new_object();
    json_object_object_add(choice, "index", json_object_new_int(0));
    json_object_object_add(choice, "message", msg);
    json_object_object_add(choice, "logprobs", NULL);
    json_object_object_add(choice, "finish_reason", json_object_new_string(finish));
    json_object *choices = json_object_new_array();
    json_object_array_add(choices, choice);

    char id[160];
    response_id(root, id, sizeof id);
    const char *model = provider_json_str(root, "modelVersion");
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(id));
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

/* Parses a protobuf Duration ("38s", "1.5s", "0.250s") into ms; -1 when
 * it is not one. */
static int64_t retry_delay_parse_ms(const char *s)
{
    int64_t sec = 0, ms = 0, scale = 100;
    const char *p = s;
    if (!s || *p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((sec = sec * 10 + (*p - '0')) > RETRY_DELAY_MAX_MS / 1000) return RETRY_DELAY_MAX_MS;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            ms += (*p - '0') * scale;
    if (p[0] != 's' || p[1] != '\0') return -1;
    return sec * 1000 + ms;
}

/* The retryDelay of a google.rpc.RetryInfo detail, in ms; -1 if none. */
static int64_t error_retry_delay_ms(json_object *err)
{
    json_object *details = provider_json_typed(err, "details", json_type_array);
    size_t n = details ? json_object_array_length(details) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *d = json_object_array_get_idx(details, i);
        const char *type = provider_json_str(d, "@type");
        if (type && strstr(type, "google.rpc.RetryInfo"))
            return retry_delay_parse_ms(provider_json_str(d, "retryDelay"));
    }
    return -1;
}

/* Gemini reports a bad API key as 400 INVALID_ARGUMENT with an ErrorInfo
 * reason API_KEY_INVALID; that is our credential, not the client's request. */
static bool error_is_bad_key(json_object *err)
{
    json_object *details = provider_json_typed(err, "details", json_type_array);
    size_t n = details ? json_object_array_length(details) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *reason = provider_json_str(json_object_array_get_idx(details, i), "reason");
        if (reason && strcmp(reason, "API_KEY_INVALID") == 0) return true;
    }
    const char *msg = provider_json_str(err, "message");
    return msg && strcasestr(msg, "API key not valid");
}

static bool str_eq(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

/* Applies a google.rpc error object (or, without one, the status) on top of
 * the status-based defaults already in out; the upstream message is
 * appended to what the client reads, except for auth errors. */
static void error_apply(upstream_error *out, int status, json_object *err)
{
    const char *st = provider_json_str(err, "status");
    const char *msg = provider_json_str(err, "message");
    const char *what = NULL;
    if (error_is_bad_key(err) || str_eq(st, "PERMISSION_DENIED") || str_eq(st, "UNAUTHENTICATED") ||
        status == 401 || status == 403) {
        /* Our key, not the client's: never echo what upstream said about it. */
        provider_error_set(out, ERRCLASS_FATAL, 502, "upstream_auth_error", "upstream_auth_error");
        snprintf(out->message, sizeof out->message,
                 "gemini rejected bridle's credentials; check the provider's api_key in "
                 "bridle's configuration");
        return;
    } else if (str_eq(st, "RESOURCE_EXHAUSTED") || status == 429) {
        provider_error_set(out, ERRCLASS_RETRYABLE, 429, "rate_limit_error", "rate_limit_exceeded");
        int64_t delay = error_retry_delay_ms(err);
        if (delay >= 0) out->retry_after_ms = delay;
        what = "gemini rate limit reached";
    } else if (str_eq(st, "UNAVAILABLE") || status == 503) {
        provider_error_set(out, ERRCLASS_RETRYABLE, 503, "server_error", "upstream_overloaded");
        what = "gemini is unavailable";
    } else if (str_eq(st, "INVALID_ARGUMENT") || str_eq(st, "FAILED_PRECONDITION") ||
               status == 400) {
        bool too_long = msg && strcasestr(msg, "exceeds the maximum number of tokens");
        provider_error_set(out, ERRCLASS_FATAL, 400, "invalid_request_error",
                           too_long ? "context_length_exceeded" : "");
        what = "gemini rejected the request";
    } else if (str_eq(st, "INTERNAL") || status == 500) {
        provider_error_set(out, ERRCLASS_AMBIGUOUS, 502, "server_error", "upstream_error");
        what = "gemini had an internal error";
    }
    if (what) snprintf(out->message, sizeof out->message, "%s", what);
    if (msg) provider_error_add_detail(out, msg, strlen(msg));
}

static void gemini_classify(int status, const upstream_headers *hs, const char *body, size_t len,
                            upstream_error *out)
{
    memset(out, 0, sizeof *out);
    provider_classify_status(status, out);
    out->retry_after_ms = hs ? provider_retry_after_ms(hs) : -1;
    char why[96];
    json_object *root =
        body && len ? provider_parse_object(NULL, body, len, why, sizeof why) : NULL;
    error_apply(out, status, provider_json_typed(root, "error", json_type_object));
    json_object_put(root);
}

/* ------------------------------------------------------------ stream */

typedef struct gem_stream {
    bool include_usage;
    const char *fallback_model; /* t->upstream_model; outlives the stream */
    buf prefix;                 /* `{"id":…,"model":…,"choices":[{"index":0,"delta":` */
    buf chunk;
    bool role_sent, finish_sent;
    int n_tools;
} gem_stream;

static void *gemini_stream_new(const canon_request *req, const target *t)
{
    gem_stream *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->include_usage = req && req->include_usage;
    s->fallback_model = t ? t->upstream_model : NULL;
    return s;
}

static void gemini_stream_free(void *state)
{
    gem_stream *s = state;
    if (!s) return;
    buf_free(&s->prefix);
    buf_free(&s->chunk);
    free(s);
}

/* id, created and model are the same in every chunk: serialised once, from
 * the first response of the stream. */
static void stream_set_prefix(gem_stream *s, json_object *resp)
{
    char id[160];
    response_id(resp, id, sizeof id);
    const char *model = provider_json_str(resp, "modelVersion");
    if (!model) model = s->fallback_model ? s->fallback_model : "";
    buf_append_str(&s->prefix, "{\"id\":");
    buf_append_json_str(&s->prefix, id, strlen(id));
    buf_printf(&s->prefix, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
               (long long)time(NULL));
    buf_append_json_str(&s->prefix, model, strlen(model));
    buf_append_str(&s->prefix, ",\"choices\":[{\"index\":0,\"delta\":{");
}

/* Starts a chunk whose delta object is open; the first delta of the stream
 * carries the role. */
static void chunk_begin(gem_stream *s)
{
    buf_reset(&s->chunk);
    buf_append(&s->chunk, s->prefix.data, s->prefix.len);
    if (!s->role_sent) {
        buf_append_str(&s->chunk, "\"role\":\"assistant\"");
        s->role_sent = true;
    }
}

/* Separates a delta member from the one before it. */
static void chunk_member(gem_stream *s)
{
    if (s->chunk.data[s->chunk.len - 1] != '{') buf_append_char(&s->chunk, ',');
}

static void chunk_emit(gem_stream *s, const char *finish, const stream_sink *sink)
{
    buf_append_str(&s->chunk, "},\"logprobs\":null,\"finish_reason\":");
    if (finish)
        buf_printf(&s->chunk, "\"%s\"}]", finish);
    else
        buf_append_str(&s->chunk, "null}]");
    if (s->include_usage) buf_append_str(&s->chunk, ",\"usage\":null");
    buf_append_char(&s->chunk, '}');
    if (sink && sink->chunk) sink->chunk(sink->ctx, s->chunk.data, s->chunk.len);
}

static void stream_emit_text(gem_stream *s, json_object *text, stream_result *res,
                             const stream_sink *sink)
{
    size_t len = (size_t)json_object_get_string_len(text);
    const char *str = json_object_get_string(text);
    if (len == 0) return;
    buf_append(&res->text, str, len);
    chunk_begin(s);
    chunk_member(s);
    buf_append_str(&s->chunk, "\"content\":");
    buf_append_json_str(&s->chunk, str, len);
    chunk_emit(s, NULL, sink);
}

/* A functionCall arrives whole in one part: id, name and all arguments. */
static void stream_emit_tool_call(gem_stream *s, json_object *fc, const stream_sink *sink)
{
    char id[80];
    tool_call_id(fc, id, sizeof id);
    const char *name = provider_json_str(fc, "name");
    const char *args = tool_call_args(fc);
    chunk_begin(s);
    chunk_member(s);
    buf_printf(&s->chunk, "\"tool_calls\":[{\"index\":%d,\"id\":", s->n_tools++);
    buf_append_json_str(&s->chunk, id, strlen(id));
    buf_append_str(&s->chunk, ",\"type\":\"function\",\"function\":{\"name\":");
    buf_append_json_str(&s->chunk, name ? name : "", name ? strlen(name) : 0);
    buf_append_str(&s->chunk, ",\"arguments\":");
    buf_append_json_str(&s->chunk, args, strlen(args));
    buf_append_str(&s->chunk, "}}]");
    chunk_emit(s, NULL, sink);
}

/* A finish reason ends a Gemini stream: there is no [DONE]. */
static void stream_finish(gem_stream *s, const char *finish, stream_result *res,
                          const stream_sink *sink)
{
    snprintf(res->finish_reason, sizeof res->finish_reason, "%s", finish);
    res->done = true;
    if (s->finish_sent) return;
    s->finish_sent = true;
    chunk_begin(s);
    chunk_emit(s, finish, sink);
}

static void stream_candidate(gem_stream *s, json_object *cand, stream_result *res,
                             const stream_sink *sink)
{
    json_object *parts =
        provider_json_typed(provider_json_get(cand, "content"), "parts", json_type_array);
    size_t n = parts ? json_object_array_length(parts) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *part = json_object_array_get_idx(parts, i);
        json_object *t = provider_json_typed(part, "text", json_type_string);
        json_object *fc = provider_json_typed(part, "functionCall", json_type_object);
        if (t && !part_is_thought(part))
            stream_emit_text(s, t, res, sink);
        else if (fc)
            stream_emit_tool_call(s, fc, sink);
    }
    const char *reason = provider_json_str(cand, "finishReason");
    if (reason) stream_finish(s, finish_reason_map(reason, s->n_tools > 0), res, sink);
}

static void stream_fail_error(json_object *err, stream_result *res)
{
    json_object *code = provider_json_typed(err, "code", json_type_int);
    int status = code ? (int)json_object_get_int(code) : 500;
    memset(&res->error, 0, sizeof res->error);
    provider_classify_status(status, &res->error);
    res->error.retry_after_ms = -1;
    error_apply(&res->error, status, err);
    if (res->error.cls == ERRCLASS_NONE)
        provider_error_set(&res->error, ERRCLASS_AMBIGUOUS, 502, "server_error", "");
    res->failed = true;
}

static void stream_fail_garbage(stream_result *res, const char *why)
{
    memset(&res->error, 0, sizeof res->error);
    res->error.retry_after_ms = -1;
    provider_error_set(&res->error, ERRCLASS_AMBIGUOUS, 502, "server_error",
                       "bad_upstream_response");
    snprintf(res->error.message, sizeof res->error.message, "gemini stream: %s", why);
    res->failed = true;
}

static int gemini_stream_event(void *state, const stream_event *ev, stream_result *res,
                               const stream_sink *sink)
{
    gem_stream *s = state;
    char why[96];
    json_object *resp = provider_parse_object(NULL, ev->data, ev->data_len, why, sizeof why);
    if (!resp) {
        stream_fail_garbage(res, why);
        return -1;
    }
    json_object *err = provider_json_typed(resp, "error", json_type_object);
    if (err) {
        stream_fail_error(err, res);
        json_object_put(resp);
        return 0;
    }
    if (s->prefix.len == 0) stream_set_prefix(s, resp);
    json_object *usage = provider_json_typed(resp, "usageMetadata", json_type_object);
    if (usage) {
        /* A running total: the latest replaces, never adds. */
        res->usage = gemini_usage_map(usage);
        res->prompt_tokens = usage_prompt_tokens(&res->usage);
        res->completion_tokens = res->usage.output;
    }
    json_object *cands = provider_json_typed(resp, "candidates", json_type_array);
    json_object *cand = cands ? json_object_array_get_idx(cands, 0) : NULL;
    if (json_object_is_type(cand, json_type_object))
        stream_candidate(s, cand, res, sink);
    else if (provider_json_str(provider_json_get(resp, "promptFeedback"), "blockReason"))
        stream_finish(s, "content_filter", res, sink);
    json_object_put(resp);
    return 0;
}

const provider_ops gemini_ops = {
    .kind = "gemini",
    .framing = FRAMING_SSE,
    .needs_tree = true,
    .encode = gemini_encode,
    .decode = gemini_decode,
    .stream_new = gemini_stream_new,
    .stream_free = gemini_stream_free,
    .stream_event = gemini_stream_event,
    .classify = gemini_classify,
    .usage_map = gemini_usage_map,
};

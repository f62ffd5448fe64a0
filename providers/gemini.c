/* The Gemini generateContent dialect (wire-formats.md §4): OpenAI chat
 * requests out, GenerateContentResponse answers, SSE streams and
 * google.rpc errors back in OpenAI shape.
 *
 * Gemini counts cached tokens inside promptTokenCount (like OpenAI) but keeps
 * thinking tokens OUT of candidatesTokenCount (unlike OpenAI), so output is
 * candidates + thoughts. In streams usageMetadata is a running total. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/util.h"
#include "providers/embeddings.h"
#include "providers/provider.h"

/* Retry delays are capped here; the router applies its own, lower, cap. */
#define RETRY_DELAY_MAX_MS ((int64_t)24 * 3600 * 1000)

/* ------------------------------------------------------------ encode: writer */

/* The encoder reads the client's tokens (canon_request.doc) and writes the
 * generateContent body straight into the upstream buffer, copying what
 * Gemini takes as OpenAI sent it (strings, numbers, schemas) as the
 * client's bytes (jdoc_json_append). System parts go to their own list,
 * added after the contents (key order does not matter in JSON). */
typedef struct gem_enc {
    const jdoc *d;
    uint32_t msgs;    /* the messages array, for tool call names */
    buf *b;           /* the body */
    provider_turns t; /* the turns and the system items */
    buf scratch;      /* unescaped strings */
    jdoc args;        /* a tool call's arguments, validated */
    char *err;
    size_t errlen;
} gem_enc;

#define enc_fail(e, ...) provider_fail((e)->err, (e)->errlen, __VA_ARGS__)

/* ------------------------------------------------------------ encode: parts */

/* Appends {text} unless empty (an empty part is rejected and says nothing).
 * `text` is a string token. */
static void parts_add_text(gem_enc *e, uint32_t text)
{
    if (e->d->t[text].end == e->d->t[text].start) return;
    buf *b = provider_turn_item(&e->t);
    buf_append_str(b, "{\"text\":");
    jdoc_str_append_json(e->d, text, b);
    buf_append_char(b, '}');
}

/* image_url (data: URI only) → inlineData. Gemini cannot fetch arbitrary
 * URLs through fileData, so an http(s) image is an encode error. */
static int parts_add_image(gem_enc *e, uint32_t part)
{
    const char *url, *data;
    size_t len, type_len;
    if (!provider_image_url(e->d, part, &e->scratch, &url, &len) ||
        !provider_data_uri(url, len, &type_len, &data))
        return enc_fail(e, "gemini accepts images only as data:<media type>;base64,<data> URIs");
    buf *b = provider_turn_item(&e->t);
    buf_append_str(b, "{\"inlineData\":{\"mimeType\":");
    provider_append_json_str(b, url + 5, type_len);
    buf_append_str(b, ",\"data\":");
    provider_append_json_str(b, data, (size_t)(url + len - data));
    buf_append_str(b, "}}");
    return 0;
}

static int parts_add_part(gem_enc *e, uint32_t part, bool images)
{
    const jdoc *d = e->d;
    uint32_t type = provider_doc_typed(d, part, "type", JT_STRING);
    if (type == JT_NONE) return enc_fail(e, "content part without a type");
    const char *field = jdoc_str_eq(d, type, "text")      ? "text"
                        : jdoc_str_eq(d, type, "refusal") ? "refusal"
                                                          : NULL;
    if (field) {
        uint32_t text = provider_doc_typed(d, part, field, JT_STRING);
        if (text == JT_NONE) return enc_fail(e, "%s part without a string %s", field, field);
        parts_add_text(e, text);
        return 0;
    }
    if (images && jdoc_str_eq(d, type, "image_url")) return parts_add_image(e, part);
    size_t len;
    const char *s = jdoc_str_view(d, type, &e->scratch, &len);
    return enc_fail(e, "content part type \"%.*s\" is not supported by gemini",
                    len > 40 ? 40 : (int)len, s);
}

static int parts_add_content(gem_enc *e, uint32_t content, bool images)
{
    const jdoc *d = e->d;
    if (jdoc_type(d, content) == JT_STRING) {
        parts_add_text(e, content);
        return 0;
    }
    if (jdoc_type(d, content) != JT_ARRAY) return 0;
    for (uint32_t p = jdoc_first(d, content); p != JT_NONE; p = jdoc_next(d, content, p))
        if (parts_add_part(e, p, images)) return -1;
    return 0;
}

static int args_append(gem_enc *e, uint32_t args, size_t i, buf *b)
{
    return provider_tool_args_append(e->d, args, i, &e->args, &e->scratch, b, e->err, e->errlen);
}

/* The thoughtSignature a call's id carries (tool_call_id, below) goes back
 * on its functionCall part. */
static void signature_append(gem_enc *e, uint32_t id, buf *b)
{
    size_t len;
    if (id == JT_NONE) return;
    const char *s = jdoc_str_view(e->d, id, &e->scratch, &len);
    const char *sig = memmem(s, len, PROVIDER_THOUGHT_SEP, strlen(PROVIDER_THOUGHT_SEP));
    if (!sig) return;
    sig += strlen(PROVIDER_THOUGHT_SEP);
    if (sig == s + len) return;
    buf_append_str(b, ",\"thoughtSignature\":");
    provider_append_json_str(b, sig, (size_t)(s + len - sig));
}

/* assistant tool_calls → functionCall parts (the tool messages that answer
 * them find their names again with provider_doc_call_name). */
static int parts_add_tool_calls(gem_enc *e, uint32_t calls)
{
    const jdoc *d = e->d;
    size_t i = 0;
    if (jdoc_type(d, calls) != JT_ARRAY) return 0;
    for (uint32_t c = jdoc_first(d, calls); c != JT_NONE; c = jdoc_next(d, calls, c), i++) {
        uint32_t fn = provider_doc_get(d, c, "function");
        uint32_t name = provider_doc_typed(d, fn, "name", JT_STRING);
        if (name == JT_NONE) return enc_fail(e, "tool_calls[%zu] needs a function.name", i);
        buf *b = provider_turn_item(&e->t);
        buf_append_str(b, "{\"functionCall\":{\"name\":");
        jdoc_str_append_json(d, name, b);
        buf_append_str(b, ",\"args\":");
        if (args_append(e, provider_doc_get(d, fn, "arguments"), i, b)) return -1;
        buf_append_char(b, '}');
        signature_append(e, provider_doc_typed(d, c, "id", JT_STRING), b);
        buf_append_char(b, '}');
    }
    return 0;
}

/* role:"tool" → a functionResponse part named after the call it answers
 * (Gemini matches responses by name, OpenAI by id). */
static int parts_add_tool_result(gem_enc *e, uint32_t msg)
{
    const jdoc *d = e->d;
    uint32_t id = provider_doc_typed(d, msg, "tool_call_id", JT_STRING);
    uint32_t name = provider_doc_call_name(d, e->msgs, msg, id, true);
    if (name == JT_NONE) name = provider_doc_typed(d, msg, "name", JT_STRING);
    if (name == JT_NONE) {
        size_t len = 0;
        const char *s = id != JT_NONE ? jdoc_str_view(d, id, &e->scratch, &len) : "";
        return enc_fail(e,
                        "tool message answers tool_call_id \"%.*s\", which no earlier "
                        "assistant tool call has",
                        len > 64 ? 64 : (int)len, s);
    }
    uint32_t content = provider_doc_get(d, msg, "content");
    buf *b = provider_turn_item(&e->t);
    buf_append_str(b, "{\"functionResponse\":{\"name\":");
    jdoc_str_append_json(d, name, b);
    buf_append_str(b, ",\"response\":{\"content\":");
    if (jdoc_type(d, content) == JT_STRING) {
        jdoc_str_append_json(d, content, b);
    } else {
        buf_reset(&e->scratch);
        provider_doc_content_text(d, content, &e->scratch);
        provider_append_json_str(b, e->scratch.data ? e->scratch.data : "", e->scratch.len);
    }
    buf_append_str(b, "}}}");
    return 0;
}

/* ------------------------------------------------------------ encode: contents */

static int message_encode(gem_enc *e, uint32_t msg)
{
    const jdoc *d = e->d;
    uint32_t role = provider_doc_typed(d, msg, "role", JT_STRING);
    uint32_t content = provider_doc_get(d, msg, "content");
    if (role == JT_NONE) return enc_fail(e, "message without a role");
    e->t.system = jdoc_str_eq(d, role, "system") || jdoc_str_eq(d, role, "developer");
    if (e->t.system) return parts_add_content(e, content, false);
    if (jdoc_str_eq(d, role, "user")) {
        e->t.role = "user";
        return parts_add_content(e, content, true);
    }
    if (jdoc_str_eq(d, role, "assistant")) {
        e->t.role = "model";
        if (parts_add_content(e, content, false)) return -1;
        return parts_add_tool_calls(e, provider_doc_get(d, msg, "tool_calls"));
    }
    if (jdoc_str_eq(d, role, "tool")) {
        e->t.role = "user";
        return parts_add_tool_result(e, msg);
    }
    size_t len;
    const char *s = jdoc_str_view(d, role, &e->scratch, &len);
    return enc_fail(e, "message role \"%.*s\" is not supported by gemini", len > 40 ? 40 : (int)len,
                    s);
}

static int contents_encode(gem_enc *e)
{
    const jdoc *d = e->d;
    e->msgs = provider_doc_typed(d, 0, "messages", JT_ARRAY);
    buf_append_str(e->b, "{\"contents\":[");
    for (uint32_t m = jdoc_first(d, e->msgs); m != JT_NONE; m = jdoc_next(d, e->msgs, m))
        if (message_encode(e, m)) return -1;
    if (e->t.n_turns == 0)
        return enc_fail(e, "no user or assistant messages left after taking out system "
                           "messages; gemini needs at least one");
    buf_append_str(e->b, "]}]");
    if (e->t.sys.len) {
        buf_append_str(e->b, ",\"systemInstruction\":{\"parts\":[");
        buf_append(e->b, e->t.sys.data, e->t.sys.len);
        buf_append_str(e->b, "]}");
    }
    return 0;
}

/* ------------------------------------------------------------ encode: parameters */

/* Opens generationConfig before its first member, then separates them. */
static void gc_key(buf *b, bool *open, const char *key)
{
    buf_append_str(b, *open ? ",\"" : ",\"generationConfig\":{\"");
    *open = true;
    buf_append_str(b, key);
    buf_append_str(b, "\":");
}

/* Copies obj[key] as generationConfig.`as` when it is a `type` token
 * (JT_NUMBER: any number; JT_ABSENT: an integer). */
static void gc_copy(const jdoc *d, uint32_t v, jt_type type, const char *as, buf *b, bool *open)
{
    int64_t x;
    bool ok = type == JT_ABSENT ? jdoc_int64(d, v, &x) : jdoc_type(d, v) == type;
    if (!ok) return;
    gc_key(b, open, as);
    jdoc_json_append(d, v, b);
}

/* response_format → responseMimeType (+ responseJsonSchema for a
 * json_schema format that carries a schema, as the client wrote it). */
static void json_mode_encode(const canon_request *req, buf *b, bool *open)
{
    const jdoc *d = req->doc;
    if (!req->json_mode) return;
    gc_key(b, open, "responseMimeType");
    buf_append_str(b, "\"application/json\"");
    uint32_t rf = provider_doc_get(d, 0, "response_format");
    if (!jdoc_str_eq(d, provider_doc_get(d, rf, "type"), "json_schema")) return;
    uint32_t schema =
        provider_doc_typed(d, provider_doc_get(d, rf, "json_schema"), "schema", JT_OBJECT);
    gc_copy(d, schema, JT_OBJECT, "responseJsonSchema", b, open);
}

/* logprobs → responseLogprobs, top_logprobs → logprobs (the alternatives
 * per step, which Gemini gives only with responseLogprobs). */
static void logprobs_encode(const jdoc *d, buf *b, bool *open)
{
    int64_t top = 0;
    bool on = jdoc_type(d, provider_doc_get(d, 0, "logprobs")) == JT_TRUE;
    bool alts = jdoc_int64(d, provider_doc_get(d, 0, "top_logprobs"), &top) && top > 0;
    if (!on && !alts) return;
    gc_key(b, open, "responseLogprobs");
    buf_append_str(b, "true");
    if (!alts) return;
    gc_key(b, open, "logprobs");
    buf_printf(b, "%lld", (long long)top);
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
static void thinking_encode(const canon_request *req, const target *t, buf *b, bool *open)
{
    int64_t budget = provider_reasoning_budget(req, t);
    if (budget < 0) return;
    if (budget == 0 && !thinking_can_be_off(t)) budget = GEMINI_PRO_MIN_THINKING;
    if (req->max_tokens > 0 && budget > req->max_tokens) budget = req->max_tokens;
    gc_key(b, open, "thinkingConfig");
    buf_printf(b, "{\"thinkingBudget\":%lld}", (long long)budget);
}

static void generation_config_encode(const canon_request *req, const target *t, buf *b)
{
    const jdoc *d = req->doc;
    bool open = false;
    if (req->max_tokens >= 0) {
        gc_key(b, &open, "maxOutputTokens");
        buf_printf(b, "%lld", (long long)req->max_tokens);
    }
    gc_copy(d, provider_doc_get(d, 0, "temperature"), JT_NUMBER, "temperature", b, &open);
    gc_copy(d, provider_doc_get(d, 0, "top_p"), JT_NUMBER, "topP", b, &open);
    size_t at = b->len;
    bool was_open = open;
    gc_key(b, &open, "stopSequences");
    if (!provider_doc_stop_list(d, b)) {
        b->data[b->len = at] = '\0';
        open = was_open;
    }
    gc_copy(d, provider_doc_get(d, 0, "top_k"), JT_ABSENT, "topK", b, &open);
    gc_copy(d, provider_doc_get(d, 0, "n"), JT_ABSENT, "candidateCount", b, &open);
    gc_copy(d, provider_doc_get(d, 0, "seed"), JT_ABSENT, "seed", b, &open);
    gc_copy(d, provider_doc_get(d, 0, "presence_penalty"), JT_NUMBER, "presencePenalty", b, &open);
    gc_copy(d, provider_doc_get(d, 0, "frequency_penalty"), JT_NUMBER, "frequencyPenalty", b,
            &open);
    logprobs_encode(d, b, &open);
    json_mode_encode(req, b, &open);
    thinking_encode(req, t, b, &open);
    if (open) buf_append_char(b, '}');
}

/* tools → one functionDeclarations list. OpenAI parameters are full JSON
 * Schema, which `parameters` (an OpenAPI subset) rejects in places
 * (additionalProperties, $ref…); parametersJsonSchema takes it as is.
 * Sets *any when there were tools. */
static int tools_encode(gem_enc *e, bool *any)
{
    const jdoc *d = e->d;
    uint32_t tools = provider_doc_typed(d, 0, "tools", JT_ARRAY);
    uint32_t allowed = provider_doc_allowed_tools(d);
    size_t i = 0, sent = 0;
    *any = tools != JT_NONE && d->t[tools].size > 0;
    if (!*any) return 0;
    buf_append_str(e->b, ",\"tools\":[{\"functionDeclarations\":[");
    for (uint32_t t = jdoc_first(d, tools); t != JT_NONE; t = jdoc_next(d, tools, t), i++) {
        uint32_t fn = provider_doc_get(d, t, "function");
        uint32_t name = provider_doc_typed(d, fn, "name", JT_STRING);
        if (name == JT_NONE) return enc_fail(e, "tools[%zu] is not a function tool with a name", i);
        if (!provider_doc_tool_offered(d, allowed, t)) continue;
        buf_append_str(e->b, sent++ ? ",{\"name\":" : "{\"name\":");
        jdoc_str_append_json(d, name, e->b);
        uint32_t desc = provider_doc_typed(d, fn, "description", JT_STRING);
        if (desc != JT_NONE) provider_doc_member_copy(d, fn, "description", "description", e->b);
        uint32_t params = provider_doc_typed(d, fn, "parameters", JT_OBJECT);
        if (params != JT_NONE)
            provider_doc_member_copy(d, fn, "parameters", "parametersJsonSchema", e->b);
        buf_append_char(e->b, '}');
    }
    if (!sent)
        return enc_fail(e, "tool_choice.allowed_tools names none of the request's tools; name "
                           "some of them");
    buf_append_str(e->b, "]}]");
    return 0;
}

/* tool_choice → toolConfig.functionCallingConfig: auto/none/required(ANY),
 * a named function → ANY restricted to that name, allowed_tools by its
 * mode (its subset is what tools_encode sent). Only sent with tools. */
static void tool_choice_encode(const jdoc *d, buf *b)
{
    uint32_t tc = provider_doc_get(d, 0, "tool_choice");
    uint32_t named = provider_doc_typed(d, provider_doc_get(d, tc, "function"), "name", JT_STRING);
    uint32_t allowed = provider_doc_allowed_tools(d);
    if (allowed != JT_NONE) tc = provider_doc_typed(d, allowed, "mode", JT_STRING);
    const char *mode = named != JT_NONE                 ? "ANY"
                       : jdoc_str_eq(d, tc, "required") ? "ANY"
                       : jdoc_str_eq(d, tc, "none")     ? "NONE"
                       : jdoc_str_eq(d, tc, "auto")     ? "AUTO"
                                                        : NULL;
    if (!mode) return;
    buf_printf(b, ",\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"%s\"", mode);
    if (named != JT_NONE) {
        buf_append_str(b, ",\"allowedFunctionNames\":[");
        jdoc_str_append_json(d, named, b);
        buf_append_char(b, ']');
    }
    buf_append_str(b, "}}");
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

static int body_encode(const canon_request *req, const target *t, gem_enc *e)
{
    bool tools;
    if (contents_encode(e) || tools_encode(e, &tools)) return -1;
    if (tools) tool_choice_encode(req->doc, e->b);
    generation_config_encode(req, t, e->b);
    buf_append_char(e->b, '}');
    return 0;
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
    if (!req || !req->doc || jdoc_type(req->doc, 0) != JT_OBJECT) {
        snprintf(err, errlen, "gemini: no request object");
        return -1;
    }
    gem_enc e = {.d = req->doc, .b = &out->body, .err = err, .errlen = errlen};
    e.t = (provider_turns){.b = &out->body, .items = "parts"};
    int rc = body_encode(req, t, &e);
    if (rc == 0) {
        /* Without alt=sse the stream is one long JSON array, not SSE. */
        buf_printf(&out->url, "%s/models/%s:%s", t->provider->base_url, t->upstream_model,
                   req->stream ? "streamGenerateContent?alt=sse" : "generateContent");
        headers_encode(t->provider, out);
    } else {
        buf_reset(&out->body);
    }
    buf_free(&e.t.sys);
    buf_free(&e.scratch);
    jdoc_free(&e.args);
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

/* A tool call id: Gemini's own when it sent one, else a fresh one; then,
 * when the part carries a thoughtSignature, THOUGHT_SEP and the signature.
 * Gemini 3 refuses a function call turn sent back without the signature
 * its first call came with, and OpenAI's wire has no place for it but the
 * id, which every client sends back as it got it (LiteLLM does the same,
 * with the same separator). The other dialects strip it again. */
static void tool_call_id(json_object *part, json_object *fc, buf *out)
{
    const char *id = provider_json_str(fc, "id");
    const char *sig = provider_json_str(part, "thoughtSignature");
    buf_reset(out);
    if (id && *id) {
        buf_append_str(out, id);
    } else {
        char hex[25];
        if (!util_random_hex(hex, 12)) snprintf(hex, sizeof hex, "%llx", (long long)util_now_us());
        buf_append_str(out, "call_");
        buf_append_str(out, hex);
    }
    if (sig && *sig) {
        buf_append_str(out, PROVIDER_THOUGHT_SEP);
        buf_append_str(out, sig);
    }
}

/* The arguments of a functionCall as the JSON string OpenAI carries. */
static const char *tool_call_args(json_object *fc)
{
    json_object *args = provider_json_get(fc, "args");
    return args ? json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE)
                : "{}";
}

static json_object *tool_call_from_part(json_object *part, json_object *fc)
{
    buf idb = BUF_INIT;
    tool_call_id(part, fc, &idb);
    const char *id = idb.data;
    const char *name = provider_json_str(fc, "name");
    json_object *fn = json_object_new_object();
    json_object_object_add(fn, "name", json_object_new_string(name ? name : ""));
    json_object_object_add(fn, "arguments", json_object_new_string(tool_call_args(fc)));
    json_object *call = json_object_new_object();
    json_object_object_add(call, "id", json_object_new_string(id));
    buf_free(&idb);
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

/* candidate.content.parts → text and tool_calls (the first only when
 * one_call: parallel_tool_calls false, which Gemini cannot be told). */
static json_object *message_from_parts(json_object *parts, bool one_call, bool *has_calls)
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
        else if (fc && !(one_call && json_object_array_length(calls) > 0))
            json_object_array_add(calls, tool_call_from_part(part, fc));
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

/* ------------------------------------------------------------ decode: logprobs
 *
 * logprobsResult (asked with responseLogprobs) → OpenAI's choice.logprobs:
 * chosenCandidates[i] is the token at step i, topCandidates[i].candidates
 * the alternatives at that step. */

/* {token, logprob, bytes} of one Gemini candidate token. */
static json_object *logprob_entry(json_object *c)
{
    const char *tok = provider_json_str(c, "token");
    json_object *lp = provider_json_get(c, "logProbability");
    json_object *e = json_object_new_object();
    json_object_object_add(e, "token", json_object_new_string(tok ? tok : ""));
    json_object_object_add(e, "logprob",
                           json_object_new_double(lp ? json_object_get_double(lp) : 0.0));
    json_object *bytes = json_object_new_array();
    for (const unsigned char *p = (const unsigned char *)(tok ? tok : ""); *p; p++)
        json_object_array_add(bytes, json_object_new_int(*p));
    json_object_object_add(e, "bytes", bytes);
    return e;
}

/* choice.logprobs for a candidate: {"content": [...], "refusal": null}, or
 * NULL (JSON null) when the candidate carries none. */
static json_object *logprobs_from_candidate(json_object *cand)
{
    json_object *res = provider_json_typed(cand, "logprobsResult", json_type_object);
    json_object *chosen = provider_json_typed(res, "chosenCandidates", json_type_array);
    if (!chosen) return NULL;
    json_object *top = provider_json_typed(res, "topCandidates", json_type_array);
    json_object *content = json_object_new_array();
    size_t n = json_object_array_length(chosen);
    for (size_t i = 0; i < n; i++) {
        json_object *e = logprob_entry(json_object_array_get_idx(chosen, i));
        json_object *alts = json_object_new_array();
        json_object *step = top && i < json_object_array_length(top)
                                ? provider_json_typed(json_object_array_get_idx(top, i),
                                                      "candidates", json_type_array)
                                : NULL;
        for (size_t j = 0; step && j < json_object_array_length(step); j++)
            json_object_array_add(alts, logprob_entry(json_object_array_get_idx(step, j)));
        json_object_object_add(e, "top_logprobs", alts);
        json_object_array_add(content, e);
    }
    json_object *lp = json_object_new_object();
    json_object_object_add(lp, "content", content);
    json_object_object_add(lp, "refusal", NULL);
    return lp;
}

/* ------------------------------------------------------------ decode */

/* One candidate → one OpenAI choice (index: the candidate's own, else its
 * place). Returns the finish reason. */
static json_object *choice_from_candidate(json_object *cand, size_t place, bool one_call,
                                          const char **finish)
{
    bool has_calls = false;
    json_object *msg = message_from_parts(
        provider_json_get(provider_json_get(cand, "content"), "parts"), one_call, &has_calls);
    *finish = finish_reason_map(provider_json_str(cand, "finishReason"), has_calls);
    int64_t index = (int64_t)place;
    provider_get_int(cand, "index", &index);
    json_object *choice = json_object_new_object();
    json_object_object_add(choice, "index", json_object_new_int64(index));
    json_object_object_add(choice, "message", msg);
    json_object_object_add(choice, "logprobs", logprobs_from_candidate(cand));
    json_object_object_add(choice, "finish_reason", json_object_new_string(*finish));
    return choice;
}

/* Every candidate (candidateCount from n) becomes a choice; a prompt
 * blocked before generation has none: one empty choice, content_filter. */
static json_object *choices_from(json_object *cands, bool one_call, const char **finish)
{
    json_object *choices = json_object_new_array();
    size_t n = cands ? json_object_array_length(cands) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *cand = json_object_array_get_idx(cands, i);
        const char *f;
        if (!json_object_is_type(cand, json_type_object)) continue;
        json_object_array_add(choices, choice_from_candidate(cand, i, one_call, &f));
        if (json_object_array_length(choices) == 1) *finish = f;
    }
    if (json_object_array_length(choices) == 0) {
        bool none;
        json_object *choice = json_object_new_object();
        json_object_object_add(choice, "index", json_object_new_int(0));
        json_object_object_add(choice, "message", message_from_parts(NULL, false, &none));
        json_object_object_add(choice, "logprobs", NULL);
        json_object_object_add(choice, "finish_reason", json_object_new_string("content_filter"));
        json_object_array_add(choices, choice);
        *finish = "content_filter";
    }
    return choices;
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
    const char *finish = "stop";
    json_object *choices =
        choices_from(blocked && !cand ? NULL : cands, provider_one_tool_call(req), &finish);
    out->usage = gemini_usage_map(provider_json_get(root, "usageMetadata"));
    out->prompt_tokens = usage_prompt_tokens(&out->usage);
    out->completion_tokens = out->usage.output;
    snprintf(out->finish_reason, sizeof out->finish_reason, "%s", finish);

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

/* Per candidate (candidateCount from n): each is an OpenAI choice with
 * its own role, tool-call numbering and finish. */
typedef struct gem_choice {
    bool role_sent, finish_sent;
    int n_tools;
} gem_choice;

#define GEMINI_MAX_CANDIDATES 8 /* Gemini's own limit on candidateCount */

typedef struct gem_stream {
    bool include_usage;
    const char *fallback_model; /* t->upstream_model; outlives the stream */
    buf prefix;                 /* `{"id":…,"model":…,"choices":[{"index":` */
    buf chunk;
    buf id;        /* a tool call's id */
    bool one_call; /* parallel_tool_calls false: the first call of a candidate only */
    int n_choices; /* the candidates asked for; the stream is done when all finished */
    int n_finished;
    gem_choice choice[GEMINI_MAX_CANDIDATES];
} gem_stream;

static void *gemini_stream_new(const canon_request *req, const target *t)
{
    gem_stream *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->include_usage = req && req->include_usage;
    s->fallback_model = t ? t->upstream_model : NULL;
    s->one_call = provider_one_tool_call(req);
    s->n_choices = req && req->n > 1
                       ? (int)(req->n < GEMINI_MAX_CANDIDATES ? req->n : GEMINI_MAX_CANDIDATES)
                       : 1;
    return s;
}

static void gemini_stream_free(void *state)
{
    gem_stream *s = state;
    if (!s) return;
    buf_free(&s->prefix);
    buf_free(&s->chunk);
    buf_free(&s->id);
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
    buf_append_str(&s->prefix, ",\"choices\":[{\"index\":");
}

/* Starts a chunk of choice i whose delta object is open; the choice's
 * first delta carries the role. */
static void chunk_begin(gem_stream *s, int i)
{
    buf_reset(&s->chunk);
    buf_append(&s->chunk, s->prefix.data, s->prefix.len);
    buf_printf(&s->chunk, "%d,\"delta\":{", i);
    if (!s->choice[i].role_sent) {
        buf_append_str(&s->chunk, "\"role\":\"assistant\"");
        s->choice[i].role_sent = true;
    }
}

/* Separates a delta member from the one before it. */
static void chunk_member(gem_stream *s)
{
    if (s->chunk.data[s->chunk.len - 1] != '{') buf_append_char(&s->chunk, ',');
}

/* Ends the chunk; `cand` (may be NULL) gives its logprobs. */
static void chunk_emit(gem_stream *s, json_object *cand, const char *finish,
                       const stream_sink *sink)
{
    json_object *lp = cand ? logprobs_from_candidate(cand) : NULL;
    buf_append_str(&s->chunk, "},\"logprobs\":");
    if (lp) {
        provider_append_json(&s->chunk, lp);
        json_object_put(lp);
    } else {
        buf_append_str(&s->chunk, "null");
    }
    buf_append_str(&s->chunk, ",\"finish_reason\":");
    if (finish)
        buf_printf(&s->chunk, "\"%s\"}]", finish);
    else
        buf_append_str(&s->chunk, "null}]");
    if (s->include_usage) buf_append_str(&s->chunk, ",\"usage\":null");
    buf_append_char(&s->chunk, '}');
    if (sink && sink->chunk) sink->chunk(sink->ctx, s->chunk.data, s->chunk.len);
}

/* The text of a candidate's parts (thoughts aside), joined. */
static void candidate_text(json_object *parts, buf *out)
{
    size_t n = parts ? json_object_array_length(parts) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *part = json_object_array_get_idx(parts, i);
        json_object *t = provider_json_typed(part, "text", json_type_string);
        if (t && !part_is_thought(part))
            buf_append(out, json_object_get_string(t), (size_t)json_object_get_string_len(t));
    }
}

/* One text delta for the candidate's text in this event, with its
 * logprobs; only choice 0's text counts for the cascade's checks. */
static void stream_emit_text(gem_stream *s, int i, json_object *cand, json_object *parts,
                             stream_result *res, const stream_sink *sink)
{
    buf text = BUF_INIT;
    candidate_text(parts, &text);
    if (text.len) {
        if (i == 0) buf_append(&res->text, text.data, text.len);
        chunk_begin(s, i);
        chunk_member(s);
        buf_append_str(&s->chunk, "\"content\":");
        buf_append_json_str(&s->chunk, text.data, text.len);
        chunk_emit(s, cand, NULL, sink);
    }
    buf_free(&text);
}

/* A functionCall arrives whole in one part: id, name and all arguments. */
static void stream_emit_tool_call(gem_stream *s, int i, json_object *part, json_object *fc,
                                  stream_result *res, const stream_sink *sink)
{
    tool_call_id(part, fc, &s->id);
    const char *id = s->id.data;
    const char *name = provider_json_str(fc, "name");
    const char *args = tool_call_args(fc);
    res->tool_bytes += (name ? strlen(name) : 0) + strlen(args);
    chunk_begin(s, i);
    chunk_member(s);
    buf_printf(&s->chunk, "\"tool_calls\":[{\"index\":%d,\"id\":", s->choice[i].n_tools++);
    buf_append_json_str(&s->chunk, id, strlen(id));
    buf_append_str(&s->chunk, ",\"type\":\"function\",\"function\":{\"name\":");
    buf_append_json_str(&s->chunk, name ? name : "", name ? strlen(name) : 0);
    buf_append_str(&s->chunk, ",\"arguments\":");
    buf_append_json_str(&s->chunk, args, strlen(args));
    buf_append_str(&s->chunk, "}}]");
    chunk_emit(s, NULL, NULL, sink);
}

/* A finish reason ends a candidate; the stream is done when every
 * candidate asked for has ended (there is no [DONE]). The first choice's
 * reason is the answer's. */
static void stream_finish(gem_stream *s, int i, const char *finish, stream_result *res,
                          const stream_sink *sink)
{
    if (i == 0 || !res->finish_reason[0])
        snprintf(res->finish_reason, sizeof res->finish_reason, "%s", finish);
    if (s->choice[i].finish_sent) return;
    s->choice[i].finish_sent = true;
    if (++s->n_finished >= s->n_choices) res->done = true;
    chunk_begin(s, i);
    chunk_emit(s, NULL, finish, sink);
}

static void stream_candidate(gem_stream *s, json_object *cand, size_t place, stream_result *res,
                             const stream_sink *sink)
{
    int64_t idx = (int64_t)place;
    provider_get_int(cand, "index", &idx);
    if (idx < 0 || idx >= s->n_choices) return; /* not a candidate asked for */
    int i = (int)idx;
    json_object *parts =
        provider_json_typed(provider_json_get(cand, "content"), "parts", json_type_array);
    stream_emit_text(s, i, cand, parts, res, sink);
    size_t n = parts ? json_object_array_length(parts) : 0;
    for (size_t k = 0; k < n; k++) {
        json_object *part = json_object_array_get_idx(parts, k);
        json_object *fc = provider_json_typed(part, "functionCall", json_type_object);
        if (fc && !(s->one_call && s->choice[i].n_tools > 0))
            stream_emit_tool_call(s, i, part, fc, res, sink);
    }
    const char *reason = provider_json_str(cand, "finishReason");
    if (reason) stream_finish(s, i, finish_reason_map(reason, s->choice[i].n_tools > 0), res, sink);
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
    size_t n = cands ? json_object_array_length(cands) : 0, seen = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *cand = json_object_array_get_idx(cands, i);
        if (!json_object_is_type(cand, json_type_object)) continue;
        stream_candidate(s, cand, i, res, sink);
        seen++;
    }
    if (!seen && provider_json_str(provider_json_get(resp, "promptFeedback"), "blockReason"))
        for (int i = 0; i < s->n_choices; i++) /* blocked: no candidate will come */
            stream_finish(s, i, "content_filter", res, sink);
    json_object_put(resp);
    return 0;
}

const provider_ops gemini_ops = {
    .kind = "gemini",
    .framing = FRAMING_SSE,
    .encode = gemini_encode,
    .decode = gemini_decode,
    .stream_new = gemini_stream_new,
    .stream_free = gemini_stream_free,
    .stream_event = gemini_stream_event,
    .classify = gemini_classify,
    .usage_map = gemini_usage_map,
    .embed = &gemini_embed_ops,
};

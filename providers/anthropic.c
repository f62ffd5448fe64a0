/* The Anthropic Messages dialect (wire-formats.md §3): OpenAI chat requests
 * out, Messages answers, SSE streams and errors back in OpenAI shape.
 *
 * Upstream calls pin the classic, documented wire: `x-api-key` and
 * `anthropic-version: 2023-06-01` (§3.1). Usage buckets are disjoint on this
 * wire (input_tokens excludes cache reads and writes), unlike OpenAI's. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/util.h"
#include "providers/provider.h"

#define ANTHROPIC_DEFAULT_MAX_TOKENS 4096
#define ANTHROPIC_MIN_THINKING 1024 /* the smallest budget_tokens (§3.2) */
/* Content block indexes we map to OpenAI tool-call indexes; beyond this a
 * stream is not something Anthropic sends. */
#define MAX_BLOCKS 4096

/* ------------------------------------------------------------ encode: writer */

/* The encoder reads the client's tokens (canon_request.doc) and writes the
 * Messages body straight into the upstream buffer: values Anthropic takes
 * as OpenAI sent them (strings, schemas, cache_control) are copied as the
 * client's bytes (jdoc_json_append: the tree json-c read before, without
 * building it). System blocks go to their own list, added after the turns
 * (key order does not matter in JSON). */
/* Where bridle marks the prompt for Anthropic's prompt cache (options
 * prompt_cache "auto"), decided before encoding (cache_plan_make). */
typedef struct cache_plan {
    bool tools, system; /* after the last tool; after the last system block */
    uint32_t msgs[4];   /* after these messages' last block */
    int n_msgs;
    const char *mark; /* the cache_control value */
} cache_plan;

typedef struct anth_enc {
    const jdoc *d;
    buf *b; /* the body */
    cache_plan cp;
    provider_turns t; /* the turns and the system items */
    buf scratch;      /* unescaped strings */
    jdoc args;        /* a tool call's arguments, validated */
    char *err;
    size_t errlen;
} anth_enc;

#define enc_fail(e, ...) provider_fail((e)->err, (e)->errlen, __VA_ARGS__)

/* ------------------------------------------------------------ encode: content */

/* Adds a text block unless the text is empty: Anthropic rejects empty text
 * blocks, and they carry nothing. `text` is a string token. */
static void blocks_add_text(anth_enc *e, uint32_t text, uint32_t cache_control)
{
    if (e->d->t[text].end == e->d->t[text].start) return;
    buf *b = provider_turn_item(&e->t);
    buf_append_str(b, "{\"type\":\"text\",\"text\":");
    jdoc_str_append_json(e->d, text, b);
    if (cache_control != JT_NONE) {
        buf_append_str(b, ",\"cache_control\":");
        jdoc_json_append(e->d, cache_control, b);
    }
    buf_append_char(b, '}');
}

/* image_url → image block: data: URIs become base64 sources, http(s) URLs
 * url sources. */
static int image_block_append(anth_enc *e, uint32_t part, buf *b)
{
    const char *url, *data;
    size_t len, type_len;
    if (!provider_image_url(e->d, part, &e->scratch, &url, &len))
        return enc_fail(e, "image_url part without a url");
    buf src = BUF_INIT;
    if (len >= 5 && memcmp(url, "data:", 5) == 0) {
        if (!provider_data_uri(url, len, &type_len, &data))
            return enc_fail(e, "image data URI must be data:<media type>;base64,<data>");
        buf_append_str(&src, "{\"type\":\"base64\",\"media_type\":");
        provider_append_json_str(&src, url + 5, type_len);
        buf_append_str(&src, ",\"data\":");
        provider_append_json_str(&src, data, (size_t)(url + len - data));
    } else if (util_starts_with_ci(url, "https://") || util_starts_with_ci(url, "http://")) {
        buf_append_str(&src, "{\"type\":\"url\",\"url\":");
        provider_append_json_str(&src, url, len);
    } else {
        return enc_fail(e, "image URL must be a data: URI or an http(s) URL");
    }
    buf_append_str(b, "{\"type\":\"image\",\"source\":");
    buf_append(b, src.data, src.len);
    buf_append_char(b, '}');
    buf_free(&src);
    provider_doc_member_copy(e->d, part, "cache_control", "cache_control", b);
    buf_append_char(b, '}');
    return 0;
}

static int blocks_add_image(anth_enc *e, uint32_t part)
{
    return image_block_append(e, part, provider_turn_item(&e->t));
}

/* One OpenAI content part → Anthropic blocks. `images` says whether the
 * role may carry images (user only). */
static int blocks_add_part(anth_enc *e, uint32_t part, bool images)
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
        blocks_add_text(e, text, provider_doc_get(d, part, "cache_control"));
        return 0;
    }
    if (images && jdoc_str_eq(d, type, "image_url")) return blocks_add_image(e, part);
    size_t len;
    const char *s = jdoc_str_view(d, type, &e->scratch, &len);
    return enc_fail(e, "content part type \"%.*s\" is not supported by anthropic",
                    len > 40 ? 40 : (int)len, s);
}

/* An OpenAI message content (string, parts or null) → blocks appended. */
static int blocks_add_content(anth_enc *e, uint32_t content, bool images)
{
    const jdoc *d = e->d;
    if (jdoc_type(d, content) == JT_STRING) {
        blocks_add_text(e, content, JT_NONE);
        return 0;
    }
    if (jdoc_type(d, content) != JT_ARRAY)
        return 0; /* null: an assistant turn with only tool calls */
    for (uint32_t p = jdoc_first(d, content); p != JT_NONE; p = jdoc_next(d, content, p))
        if (blocks_add_part(e, p, images)) return -1;
    return 0;
}

static int args_append(anth_enc *e, uint32_t args, size_t i, buf *b)
{
    return provider_tool_args_append(e->d, args, i, &e->args, &e->scratch, b, e->err, e->errlen);
}

/* assistant tool_calls → tool_use blocks; arguments must be a JSON object
 * (an empty string means no arguments). Ids are made to fit Anthropic's
 * ^[a-zA-Z0-9_-]+$: a conversation begun on another provider (Gemini ids
 * carry a thought signature, some hosts use '.' or ':') goes on here. */
static int blocks_add_tool_calls(anth_enc *e, uint32_t calls)
{
    const jdoc *d = e->d;
    size_t i = 0;
    if (jdoc_type(d, calls) != JT_ARRAY) return 0;
    for (uint32_t c = jdoc_first(d, calls); c != JT_NONE; c = jdoc_next(d, calls, c), i++) {
        uint32_t fn = provider_doc_get(d, c, "function");
        uint32_t id = provider_doc_typed(d, c, "id", JT_STRING);
        uint32_t name = provider_doc_typed(d, fn, "name", JT_STRING);
        if (id == JT_NONE || name == JT_NONE)
            return enc_fail(e, "tool_calls[%zu] needs an id and function.name", i);
        buf *b = provider_turn_item(&e->t);
        buf_append_str(b, "{\"type\":\"tool_use\",\"id\":");
        provider_doc_tool_id_append(d, id, &e->scratch, b);
        buf_append_str(b, ",\"name\":");
        jdoc_str_append_json(d, name, b);
        buf_append_str(b, ",\"input\":");
        if (args_append(e, provider_doc_get(d, fn, "arguments"), i, b)) return -1;
        buf_append_char(b, '}');
    }
    return 0;
}

/* A tool message's parts → a tool_result's content blocks (text and
 * images), written to b; the turn's own item list is left alone. */
static int tool_result_blocks(anth_enc *e, uint32_t content, buf *b)
{
    const jdoc *d = e->d;
    buf_append_char(b, '[');
    bool first = true;
    for (uint32_t p = jdoc_first(d, content); p != JT_NONE; p = jdoc_next(d, content, p)) {
        uint32_t type = provider_doc_typed(d, p, "type", JT_STRING);
        uint32_t text = provider_doc_typed(d, p, "text", JT_STRING);
        if (jdoc_str_eq(d, type, "text") && text != JT_NONE) {
            buf_append_str(b, first ? "{\"type\":\"text\",\"text\":"
                                    : ",{\"type\":\"text\",\"text\":");
            jdoc_str_append_json(d, text, b);
            provider_doc_member_copy(d, p, "cache_control", "cache_control", b);
            buf_append_char(b, '}');
            first = false;
        } else if (jdoc_str_eq(d, type, "image_url")) {
            if (!first) buf_append_char(b, ',');
            first = false;
            if (image_block_append(e, p, b)) return -1;
        }
    }
    buf_append_char(b, ']');
    return 0;
}

/* role:"tool" → one tool_result block (its turn is a user turn). */
static int blocks_add_tool_result(anth_enc *e, uint32_t msg)
{
    const jdoc *d = e->d;
    uint32_t id = provider_doc_typed(d, msg, "tool_call_id", JT_STRING);
    if (id == JT_NONE) return enc_fail(e, "tool message without a tool_call_id");
    uint32_t content = provider_doc_get(d, msg, "content");
    buf *b = provider_turn_item(&e->t);
    buf_append_str(b, "{\"type\":\"tool_result\",\"tool_use_id\":");
    provider_doc_tool_id_append(d, id, &e->scratch, b);
    buf_append_str(b, ",\"content\":");
    if (jdoc_type(d, content) == JT_STRING) {
        jdoc_str_append_json(d, content, b);
    } else if (tool_result_blocks(e, content, b)) {
        return -1;
    }
    if (jdoc_type(d, provider_doc_get(d, msg, "is_error")) == JT_TRUE)
        buf_append_str(b, ",\"is_error\":true");
    provider_doc_member_copy(d, msg, "cache_control", "cache_control", b);
    buf_append_char(b, '}');
    return 0;
}

/* ------------------------------------------------------------ encode: prompt caching
 *
 * Anthropic caches a prompt's prefix up to a block marked with
 * cache_control, in the order tools, system, messages; a cached read costs
 * 0.1x input, a write 1.25x (5 minutes) or 2x (1 hour). Clients rarely mark
 * anything, so with options.prompt_cache "auto" bridle marks the long
 * stable prefix itself: after the tools, after the system prompt, after the
 * earliest messages that are long on their own (a pasted document), and
 * after the conversation so far (the message before the last), each only
 * where the prefix has reached the model's minimum cacheable length
 * (model_price.min_cache_tokens; about 4 bytes of text a token), at most
 * Anthropic's 4. A request that carries any cache_control of its own is
 * left as the client wrote it. */

#define CACHE_BREAKPOINTS_MAX 4

/* About how many tokens a message's text and tool calls take. */
static int64_t message_tokens(anth_enc *e, uint32_t msg)
{
    buf_reset(&e->scratch);
    provider_doc_content_text(e->d, provider_doc_get(e->d, msg, "content"), &e->scratch);
    size_t bytes = e->scratch.len, calls_len = 0;
    uint32_t calls = provider_doc_get(e->d, msg, "tool_calls");
    if (calls != JT_NONE) jdoc_raw(e->d, calls, &calls_len);
    return (int64_t)(bytes + calls_len + 3) / 4;
}

static bool is_system(const jdoc *d, uint32_t msg)
{
    uint32_t role = provider_doc_typed(d, msg, "role", JT_STRING);
    return jdoc_str_eq(d, role, "system") || jdoc_str_eq(d, role, "developer");
}

static void cache_plan_make(const canon_request *req, const target *t, anth_enc *e)
{
    cache_plan *cp = &e->cp;
    int64_t min = t->price ? t->price->min_cache_tokens : 0, at = 0, sys = 0, last = -1;
    if (!t->provider->prompt_cache_auto || min <= 0 ||
        memmem(req->body, req->body_len, "\"cache_control\"", 15))
        return;
    cp->mark = t->provider->prompt_cache_1h ? "{\"type\":\"ephemeral\",\"ttl\":\"1h\"}"
                                            : "{\"type\":\"ephemeral\"}";
    const jdoc *d = e->d;
    uint32_t tools = provider_doc_typed(d, 0, "tools", JT_ARRAY),
             msgs = provider_doc_get(d, 0, "messages");
    size_t len = 0;
    if (tools != JT_NONE && d->t[tools].size) jdoc_raw(d, tools, &len);
    at = (int64_t)(len + 3) / 4;
    cp->tools = len && at >= min;
    for (uint32_t m = jdoc_first(d, msgs); m != JT_NONE; m = jdoc_next(d, msgs, m))
        if (is_system(d, m)) sys += message_tokens(e, m);
    at += sys;
    cp->system = sys && at >= min;
    int n = cp->tools + cp->system;
    uint32_t prev = JT_NONE; /* the conversation so far ends here */
    for (uint32_t m = jdoc_first(d, msgs); m != JT_NONE; m = jdoc_next(d, msgs, m)) {
        if (is_system(d, m)) continue;
        if (prev != JT_NONE) { /* every message but the last may end a cached prefix */
            int64_t own = message_tokens(e, prev);
            at += own;
            if (own >= min && n < CACHE_BREAKPOINTS_MAX - 1) {
                cp->msgs[cp->n_msgs++] = prev;
                n++;
            }
            last = at >= min ? (int64_t)prev : -1;
        }
        prev = m;
    }
    if (last >= 0 && n < CACHE_BREAKPOINTS_MAX &&
        (cp->n_msgs == 0 || cp->msgs[cp->n_msgs - 1] != (uint32_t)last))
        cp->msgs[cp->n_msgs++] = (uint32_t)last;
}

/* Marks the item that ends b (a JSON object) with the plan's cache_control. */
static void cache_mark(const cache_plan *cp, buf *b)
{
    if (!b->len || b->data[b->len - 1] != '}') return;
    b->len--;
    buf_append_str(b, ",\"cache_control\":");
    buf_append_str(b, cp->mark);
    buf_append_char(b, '}');
}

static bool cache_marks_message(const cache_plan *cp, uint32_t msg)
{
    for (int i = 0; i < cp->n_msgs; i++)
        if (cp->msgs[i] == msg) return true;
    return false;
}

/* ------------------------------------------------------------ encode: messages */

/* An assistant message's thinking_blocks (the Messages way in keeps
 * them, router/messages.h) go back first in the turn, as they came:
 * Anthropic checks their signatures. */
static void blocks_add_thinking(anth_enc *e, uint32_t blocks)
{
    for (uint32_t b = jdoc_first(e->d, blocks); b != JT_NONE; b = jdoc_next(e->d, blocks, b))
        if (jdoc_type(e->d, b) == JT_OBJECT) jdoc_json_append(e->d, b, provider_turn_item(&e->t));
}

/* One OpenAI message → blocks for its Anthropic role (system and developer
 * messages go to `system`, keeping any cache_control on a part). */
static int message_encode(anth_enc *e, uint32_t msg)
{
    const jdoc *d = e->d;
    uint32_t role = provider_doc_typed(d, msg, "role", JT_STRING);
    uint32_t content = provider_doc_get(d, msg, "content");
    if (role == JT_NONE) return enc_fail(e, "message without a role");
    e->t.system = jdoc_str_eq(d, role, "system") || jdoc_str_eq(d, role, "developer");
    if (e->t.system) return blocks_add_content(e, content, false);
    if (jdoc_str_eq(d, role, "user")) {
        e->t.role = "user";
        return blocks_add_content(e, content, true);
    }
    if (jdoc_str_eq(d, role, "assistant")) {
        e->t.role = "assistant";
        blocks_add_thinking(e, provider_doc_typed(d, msg, "thinking_blocks", JT_ARRAY));
        if (blocks_add_content(e, content, false)) return -1;
        return blocks_add_tool_calls(e, provider_doc_get(d, msg, "tool_calls"));
    }
    if (jdoc_str_eq(d, role, "tool")) {
        e->t.role = "user";
        return blocks_add_tool_result(e, msg);
    }
    size_t len;
    const char *s = jdoc_str_view(d, role, &e->scratch, &len);
    return enc_fail(e, "message role \"%.*s\" is not supported by anthropic",
                    len > 40 ? 40 : (int)len, s);
}

static int messages_encode(anth_enc *e)
{
    const jdoc *d = e->d;
    uint32_t msgs = provider_doc_typed(d, 0, "messages", JT_ARRAY);
    buf_append_str(e->b, ",\"messages\":[");
    for (uint32_t m = jdoc_first(d, msgs); m != JT_NONE; m = jdoc_next(d, msgs, m)) {
        size_t before = e->b->len;
        if (message_encode(e, m)) return -1;
        if (e->b->len > before && !e->t.system && cache_marks_message(&e->cp, m))
            cache_mark(&e->cp, e->b);
    }
    if (e->t.n_turns == 0)
        return enc_fail(e, "no user or assistant messages left after hoisting system messages; "
                           "anthropic needs at least one");
    buf_append_str(e->b, "]}]");
    if (e->t.sys.len) {
        if (e->cp.system) cache_mark(&e->cp, &e->t.sys);
        buf_append_str(e->b, ",\"system\":[");
        buf_append(e->b, e->t.sys.data, e->t.sys.len);
        buf_append_char(e->b, ']');
    }
    return 0;
}

/* ------------------------------------------------------------ encode: parameters */

static void tool_append(const jdoc *d, uint32_t tool, uint32_t fn, uint32_t name, buf *b)
{
    buf_append_str(b, "{\"name\":");
    jdoc_str_append_json(d, name, b);
    provider_doc_member_copy(d, fn, "description", "description", b);
    uint32_t params = provider_doc_typed(d, fn, "parameters", JT_OBJECT);
    buf_append_str(b, ",\"input_schema\":");
    if (params != JT_NONE)
        jdoc_json_append(d, params, b);
    else
        buf_append_str(b, "{\"type\":\"object\",\"properties\":{}}");
    provider_doc_member_copy(d, tool, "cache_control", "cache_control", b);
    buf_append_char(b, '}');
}

/* tools → Anthropic tools, the parameters schema as the client wrote it.
 * Sets *any when there were tools. */
static int tools_encode(anth_enc *e, bool *any)
{
    const jdoc *d = e->d;
    uint32_t tools = provider_doc_typed(d, 0, "tools", JT_ARRAY);
    uint32_t allowed = provider_doc_allowed_tools(d);
    size_t i = 0, sent = 0;
    *any = tools != JT_NONE && d->t[tools].size > 0;
    if (!*any) return 0;
    buf_append_str(e->b, ",\"tools\":[");
    for (uint32_t t = jdoc_first(d, tools); t != JT_NONE; t = jdoc_next(d, tools, t), i++) {
        uint32_t fn = provider_doc_get(d, t, "function");
        uint32_t name = provider_doc_typed(d, fn, "name", JT_STRING);
        if (name == JT_NONE) return enc_fail(e, "tools[%zu] is not a function tool with a name", i);
        if (!provider_doc_tool_offered(d, allowed, t)) continue;
        if (sent++) buf_append_char(e->b, ',');
        tool_append(d, t, fn, name, e->b);
    }
    if (!sent)
        return enc_fail(e, "tool_choice.allowed_tools names none of the request's tools; name "
                           "some of them");
    if (e->cp.tools) cache_mark(&e->cp, e->b);
    buf_append_char(e->b, ']');
    return 0;
}

/* tool_choice: auto/none/required(→any)/named(→tool), allowed_tools by its
 * mode (its subset is what tools_encode sent); parallel_tool_calls false →
 * disable_parallel_tool_use. Only sent with tools. */
static void tool_choice_encode(const jdoc *d, buf *b)
{
    uint32_t tc = provider_doc_get(d, 0, "tool_choice");
    uint32_t parallel = provider_doc_get(d, 0, "parallel_tool_calls");
    bool has_parallel = jdoc_type(d, parallel) == JT_TRUE || jdoc_type(d, parallel) == JT_FALSE;
    uint32_t s = jdoc_type(d, tc) == JT_STRING ? tc : JT_NONE;
    uint32_t named = provider_doc_typed(d, provider_doc_get(d, tc, "function"), "name", JT_STRING);
    uint32_t allowed = provider_doc_allowed_tools(d);
    if (allowed != JT_NONE) s = provider_doc_typed(d, allowed, "mode", JT_STRING);
    bool none = jdoc_str_eq(d, s, "none");
    if (named != JT_NONE) {
        buf_append_str(b, ",\"tool_choice\":{\"type\":\"tool\",\"name\":");
        jdoc_str_append_json(d, named, b);
    } else if (jdoc_str_eq(d, s, "required")) {
        buf_append_str(b, ",\"tool_choice\":{\"type\":\"any\"");
    } else if (none) {
        buf_append_str(b, ",\"tool_choice\":{\"type\":\"none\"");
    } else if (s != JT_NONE || has_parallel) {
        buf_append_str(b, ",\"tool_choice\":{\"type\":\"auto\"");
    } else {
        return;
    }
    if (jdoc_type(d, parallel) == JT_FALSE && !none)
        buf_append_str(b, ",\"disable_parallel_tool_use\":true");
    buf_append_char(b, '}');
}

/* Anthropic requires max_tokens: without the client's cap, the provider's
 * configured default, else 4096. */
static int64_t default_max_tokens(const provider_conf *p)
{
    return p && p->default_max_tokens > 0 ? p->default_max_tokens : ANTHROPIC_DEFAULT_MAX_TOKENS;
}

/* Anthropic rejects thinking next to a changed temperature, top_p under
 * 0.95 or a forced tool (its extended-thinking docs; not in wire-formats),
 * and in a tool loop whose thinking blocks are gone (in_tool_loop): the
 * request goes without. */
/* ------------------------------------------------------------ structured output
 *
 * response_format json_object / json_schema has no Messages equivalent, so
 * it becomes a tool the model is forced to call, whose input is the answer
 * (input_schema: the client's schema, or any object); the tool_use that
 * comes back is turned into the message's content, as JSON text, and its
 * stop reason into "stop". Extended thinking cannot run with a forced
 * tool: it is not sent then. Tools of the client's own and response_format
 * together are refused: one forced tool leaves no choice among others. */

#define STRUCTURED_TOOL "json_answer"

/* Whether the request asks for a JSON answer; *schema gets its schema
 * (JT_NONE for json_object). */
static bool structured_output(const jdoc *d, uint32_t *schema)
{
    uint32_t rf = provider_doc_get(d, 0, "response_format");
    uint32_t type = provider_doc_get(d, rf, "type");
    *schema = provider_doc_typed(d, provider_doc_get(d, rf, "json_schema"), "schema", JT_OBJECT);
    return jdoc_str_eq(d, type, "json_object") || jdoc_str_eq(d, type, "json_schema");
}

static void structured_encode(const jdoc *d, uint32_t schema, buf *b)
{
    buf_append_str(b, ",\"tools\":[{\"name\":\"" STRUCTURED_TOOL "\",\"description\":\"Give "
                      "the answer as this tool's input.\",\"input_schema\":");
    if (schema != JT_NONE)
        jdoc_json_append(d, schema, b);
    else
        buf_append_str(b, "{\"type\":\"object\"}");
    buf_append_str(b, "}],\"tool_choice\":{\"type\":\"tool\",\"name\":\"" STRUCTURED_TOOL "\"}");
}

/* Whether the conversation's last assistant message made tool calls: the
 * turn is a tool loop that goes on. With thinking enabled Anthropic wants
 * that message to start with the thinking block it came with ("To avoid
 * this requirement, disable thinking"), and OpenAI's wire has no place
 * to carry it back. */
static bool in_tool_loop(const jdoc *d)
{
    uint32_t msgs = provider_doc_typed(d, 0, "messages", JT_ARRAY), last = JT_NONE;
    for (uint32_t m = jdoc_first(d, msgs); m != JT_NONE; m = jdoc_next(d, msgs, m))
        if (jdoc_str_eq(d, provider_doc_get(d, m, "role"), "assistant")) last = m;
    uint32_t calls = provider_doc_typed(d, last, "tool_calls", JT_ARRAY);
    return calls != JT_NONE && d->t[calls].size > 0;
}

static bool thinking_allowed(const jdoc *d)
{
    uint32_t schema;
    if (structured_output(d, &schema)) return false; /* a forced tool */
    if (in_tool_loop(d)) return false;
    uint32_t tc = provider_doc_get(d, 0, "tool_choice");
    uint32_t tools = provider_doc_typed(d, 0, "tools", JT_ARRAY);
    uint32_t allowed = provider_doc_allowed_tools(d);
    bool forced =
        tools != JT_NONE && d->t[tools].size > 0 &&
        (jdoc_str_eq(d, tc, "required") || provider_doc_get(d, tc, "function") != JT_NONE ||
         jdoc_str_eq(d, provider_doc_get(d, allowed, "mode"), "required"));
    double temp, top_p;
    bool temp_set = jdoc_double(d, provider_doc_get(d, 0, "temperature"), &temp) && temp != 1.0;
    bool top_p_low = jdoc_double(d, provider_doc_get(d, 0, "top_p"), &top_p) && top_p < 0.95;
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
static void thinking_encode(const canon_request *req, const target *t, buf *b)
{
    const jdoc *d = req->doc;
    int64_t def = default_max_tokens(t->provider), max_tokens, budget = 0;
    uint32_t own = provider_doc_typed(d, 0, "thinking", JT_OBJECT);
    if (own != JT_NONE && provider_reasons(t)) {
        provider_doc_int(d, provider_doc_get(d, own, "budget_tokens"), &budget);
        max_tokens = req->max_tokens >= 0 ? req->max_tokens : def + (budget > 0 ? budget : 0);
        buf_append_str(b, ",\"thinking\":");
        jdoc_json_append(d, own, b);
        buf_printf(b, ",\"max_tokens\":%lld", (long long)max_tokens);
        return;
    }
    if (thinking_allowed(d)) budget = provider_reasoning_budget(req, t);
    budget = thinking_plan(budget, req->max_tokens, def, &max_tokens);
    buf_printf(b, ",\"max_tokens\":%lld", (long long)max_tokens);
    if (budget > 0)
        buf_printf(b, ",\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":%lld}",
                   (long long)budget);
}

static void params_encode(const canon_request *req, const target *t, buf *b)
{
    const jdoc *d = req->doc;
    thinking_encode(req, t, b);
    size_t at = b->len;
    buf_append_str(b, ",\"stop_sequences\":");
    if (!provider_doc_stop_list(d, b)) b->data[b->len = at] = '\0';
    if (jdoc_type(d, provider_doc_get(d, 0, "temperature")) == JT_NUMBER)
        provider_doc_member_copy(d, 0, "temperature", "temperature", b);
    if (jdoc_type(d, provider_doc_get(d, 0, "top_p")) == JT_NUMBER)
        provider_doc_member_copy(d, 0, "top_p", "top_p", b);
    if (jdoc_type(d, provider_doc_get(d, 0, "top_k")) == JT_NUMBER)
        provider_doc_member_copy(d, 0, "top_k", "top_k", b);
    if (req->stream) buf_append_str(b, ",\"stream\":true");
    /* user, else its successor safety_identifier: who the end user is */
    uint32_t sid = provider_doc_typed(d, 0, "safety_identifier", JT_STRING);
    if (req->user) {
        buf_append_str(b, ",\"metadata\":{\"user_id\":");
        provider_append_json_str(b, req->user, strlen(req->user));
        buf_append_char(b, '}');
    } else if (sid != JT_NONE) {
        buf_append_str(b, ",\"metadata\":{\"user_id\":");
        jdoc_str_append_json(d, sid, b);
        buf_append_char(b, '}');
    }
    provider_doc_member_copy(d, 0, "cache_control", "cache_control", b);
}

/* A client's anthropic-beta list is forwarded when it is only feature
 * names (letters, digits, '-', '_', '.', ',' and spaces): nothing that
 * could end the header line or smuggle another. */
static bool beta_header_ok(const char *v)
{
    if (!v || !*v || strlen(v) > 512) return false;
    for (const char *c = v; *c; c++)
        if (!(*c >= 'a' && *c <= 'z') && !(*c >= 'A' && *c <= 'Z') && !(*c >= '0' && *c <= '9') &&
            !strchr("-_., ", *c))
            return false;
    return true;
}

static void headers_encode(const canon_request *req, const provider_conf *p, upstream_request *out)
{
    if (p && p->api_key && *p->api_key) upstream_request_add_header(out, "x-api-key", p->api_key);
    upstream_request_add_header(out, "anthropic-version", PROVIDER_ANTHROPIC_VERSION);
    if (beta_header_ok(req->anthropic_beta))
        upstream_request_add_header(out, "anthropic-beta", req->anthropic_beta);
    upstream_request_add_header(out, "content-type", "application/json");
    /* curl would otherwise send Expect: 100-continue for large bodies and
     * wait a round trip before sending them. */
    upstream_request_add_header(out, "Expect", "");
    if (p) upstream_request_add_header_lines(out, p->extra_headers);
    upstream_request_finish_headers(out);
}

static int body_encode(const canon_request *req, const target *t, anth_enc *e)
{
    int64_t n;
    bool tools;
    if (jdoc_int64(req->doc, provider_doc_get(req->doc, 0, "n"), &n) && n > 1)
        return enc_fail(e, "anthropic answers with one choice only; n must be 1");
    buf_append_str(e->b, "{\"model\":");
    provider_append_json_str(e->b, t->upstream_model, strlen(t->upstream_model));
    cache_plan_make(req, t, e);
    if (messages_encode(e) || tools_encode(e, &tools)) return -1;
    uint32_t schema;
    bool structured = structured_output(req->doc, &schema);
    if (structured && tools)
        return enc_fail(e, "response_format and tools together: anthropic answers in JSON through "
                           "a forced tool, which leaves no choice among other tools; send one of "
                           "them");
    if (tools) tool_choice_encode(req->doc, e->b);
    if (structured) structured_encode(req->doc, schema, e->b);
    params_encode(req, t, e->b);
    buf_append_char(e->b, '}');
    return 0;
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
    if (!req || !req->doc || jdoc_type(req->doc, 0) != JT_OBJECT) {
        snprintf(err, errlen, "anthropic: no request object");
        return -1;
    }
    anth_enc e = {.d = req->doc, .b = &out->body, .err = err, .errlen = errlen};
    e.t = (provider_turns){.b = &out->body, .items = "content"};
    int rc = body_encode(req, t, &e);
    if (rc == 0) {
        buf_printf(&out->url, "%s/messages", t->provider->base_url);
        headers_encode(req, t->provider, out);
    } else {
        buf_reset(&out->body);
    }
    buf_free(&e.t.sys);
    buf_free(&e.scratch);
    jdoc_free(&e.args);
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
/* The forced tool's input as the message's content (JSON text), or NULL
 * when the answer has no such tool_use. */
static json_object *structured_message(json_object *content)
{
    size_t n =
        json_object_is_type(content, json_type_array) ? json_object_array_length(content) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *block = json_object_array_get_idx(content, i);
        const char *type = provider_json_str(block, "type");
        const char *name = provider_json_str(block, "name");
        if (!type || strcmp(type, "tool_use") || !name || strcmp(name, STRUCTURED_TOOL)) continue;
        json_object *msg = json_object_new_object();
        json_object_object_add(msg, "role", json_object_new_string("assistant"));
        json_object_object_add(msg, "content",
                               json_object_new_string(json_object_to_json_string_ext(
                                   provider_json_get(block, "input"),
                                   JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)));
        json_object_object_add(msg, "refusal", NULL);
        return msg;
    }
    return NULL;
}

/* The thinking and redacted_thinking blocks as they came (signatures
 * included), for a client of the Messages way in; NULL when none. */
static json_object *thinking_blocks(json_object *content)
{
    json_object *list = NULL;
    size_t n =
        json_object_is_type(content, json_type_array) ? json_object_array_length(content) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *block = json_object_array_get_idx(content, i);
        const char *type = provider_json_str(block, "type");
        if (!type || (strcmp(type, "thinking") && strcmp(type, "redacted_thinking"))) continue;
        if (!list) list = json_object_new_array();
        json_object_array_add(list, json_object_get(block));
    }
    return list;
}

static json_object *message_from_content(json_object *content, bool keep_thinking)
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
    json_object *thinking = keep_thinking ? thinking_blocks(content) : NULL;
    if (thinking) json_object_object_add(msg, "thinking_blocks", thinking);
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
    uint32_t schema;
    json_object *structured = req && req->doc && structured_output(req->doc, &schema)
                                  ? structured_message(provider_json_get(root, "content"))
                                  : NULL;
    if (structured && strcmp(finish, "tool_calls") == 0) finish = "stop";
    out->usage = anthropic_usage_map(provider_json_get(root, "usage"));
    out->prompt_tokens = usage_prompt_tokens(&out->usage);
    out->completion_tokens = out->usage.output;
    snprintf(out->finish_reason, sizeof out->finish_reason, "%s", finish);

    json_object *choice = json_object_new_object();
    json_object_object_add(choice, "index", json_object_new_int(0));
    json_object_object_add(choice, "message",
                           structured ? structured
                                      : message_from_content(provider_json_get(root, "content"),
                                                             req && req->messages_api));
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
    bool structured; /* response_format: the forced tool's input is the content */
    bool thinking;   /* pass thinking on (canon_request.messages_api) */
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
    uint32_t schema;
    s->structured = req && req->doc && structured_output(req->doc, &schema);
    s->thinking = req && req->messages_api;
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

/* Thinking for a Messages client: a delta member of the chunk that
 * router/messages.c turns back into thinking_delta / signature_delta /
 * a redacted_thinking block. */
static void stream_emit_thinking(anth_stream *s, const char *member, json_object *v,
                                 const stream_sink *sink)
{
    if (!s->thinking || !v || json_object_get_string_len(v) == 0) return;
    stream_emit_role(s, sink);
    chunk_begin(s);
    buf_printf(&s->chunk, "{\"%s\":", member);
    buf_append_json_str(&s->chunk, json_object_get_string(v),
                        (size_t)json_object_get_string_len(v));
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

/* The block of the forced tool of structured output (not a tool call). */
#define STRUCTURED_BLOCK (-2)

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
    if (type && strcmp(type, "thinking") == 0)
        stream_emit_thinking(s, "reasoning_content",
                             provider_json_typed(block, "thinking", json_type_string), sink);
    if (type && strcmp(type, "redacted_thinking") == 0)
        stream_emit_thinking(s, "redacted_thinking",
                             provider_json_typed(block, "data", json_type_string), sink);
    if (!type || strcmp(type, "tool_use") != 0)
        return; /* thinking, server tools: not part of an OpenAI answer */
    json_object *idx = provider_json_typed(ev, "index", json_type_int);
    const char *id = provider_json_str(block, "id");
    const char *name = provider_json_str(block, "name");
    if (s->structured && name && strcmp(name, STRUCTURED_TOOL) == 0) {
        stream_map_block(s, idx ? json_object_get_int64(idx) : -1, STRUCTURED_BLOCK);
        return; /* its input arrives as the answer's text */
    }
    int tool = s->n_tools++;
    stream_map_block(s, idx ? json_object_get_int64(idx) : -1, tool);
    res->tool_bytes += name ? strlen(name) : 0;
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
    if (strcmp(type, "thinking_delta") == 0)
        stream_emit_thinking(s, "reasoning_content",
                             provider_json_typed(delta, "thinking", json_type_string), sink);
    if (strcmp(type, "signature_delta") == 0)
        stream_emit_thinking(s, "thinking_signature",
                             provider_json_typed(delta, "signature", json_type_string), sink);
    if (strcmp(type, "input_json_delta") != 0)
        return; /* thinking_delta, signature_delta, citations_delta */
    json_object *pj = provider_json_typed(delta, "partial_json", json_type_string);
    int tool = stream_block_tool(s, ev);
    if (pj && tool == STRUCTURED_BLOCK) {
        stream_emit_text(s, pj, res, sink);
        return;
    }
    if (!pj || tool < 0 || json_object_get_string_len(pj) == 0) return;
    res->tool_bytes += (size_t)json_object_get_string_len(pj);
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
    if (s->structured && s->n_tools == 0 && strcmp(finish, "tool_calls") == 0) finish = "stop";
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
    .encode = anthropic_encode,
    .decode = anthropic_decode,
    .stream_new = anthropic_stream_new,
    .stream_free = anthropic_stream_free,
    .stream_event = anthropic_stream_event,
    .classify = anthropic_classify,
    .usage_map = anthropic_usage_map,
};

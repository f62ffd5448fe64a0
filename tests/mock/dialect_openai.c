/* OpenAI Chat Completions output (wire-formats.md section 1). */
#include "tests/mock/mock.h"

#include <string.h>

static void openai_error(struct mock_req *m, int status, const char *msg, struct evbuffer *out)
{
    const char *type = status == 429   ? "requests"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    const char *code = status == 401   ? "invalid_api_key"
                       : status == 404 ? "model_not_found"
                       : status == 429 ? "rate_limit_exceeded"
                                       : NULL;
    if (m->dir.code[0]) code = m->dir.code;
    /* OpenAI reports quota exhaustion with the same string as type and code. */
    if (code && !strcmp(code, "insufficient_quota")) type = code;
    ADD_LIT(out, "{\"error\":{\"message\":");
    json_cstr(out, msg);
    evbuffer_add_printf(out, ",\"type\":\"%s\",\"param\":null,\"code\":", type);
    if (code)
        json_cstr(out, code);
    else
        ADD_LIT(out, "null");
    ADD_LIT(out, "}}\n");
}

static void openai_usage(struct mock_req *m, struct evbuffer *out)
{
    const struct usage *u = &m->use;
    ADD_NUM(out, "\"usage\":{\"prompt_tokens\":", u->prompt);
    ADD_NUM(out, ",\"completion_tokens\":", u->completion);
    ADD_NUM(out, ",\"total_tokens\":", u->prompt + u->completion);
    ADD_NUM(out, ",\"prompt_tokens_details\":{\"cached_tokens\":", u->cached);
    if (u->cache_w5m + u->cache_w1h > 0)
        ADD_NUM(out, ",\"cache_write_tokens\":", u->cache_w5m + u->cache_w1h);
    ADD_NUM(out, "},\"completion_tokens_details\":{\"reasoning_tokens\":", u->reasoning);
    ADD_LIT(out, "}}");
}

static const char *finish_reason(struct mock_req *m)
{
    return m->ncalls ? "tool_calls" : m->length ? "length" : "stop";
}

/* message.tool_calls: arguments are a JSON string holding the object. */
static void tool_calls(struct mock_req *m, struct evbuffer *out)
{
    ADD_LIT(out, ",\"tool_calls\":[");
    for (int k = 0; k < m->ncalls; k++) {
        const struct mock_call *c = &m->calls[k];
        if (k) ADD_LIT(out, ",");
        ADD_LIT(out, "{\"id\":");
        json_cstr(out, c->id);
        ADD_LIT(out, ",\"type\":\"function\",\"function\":{\"name\":");
        json_cstr(out, c->name);
        ADD_LIT(out, ",\"arguments\":");
        json_str(out, c->args, c->args_len);
        ADD_LIT(out, "}}");
    }
    ADD_LIT(out, "]");
}

static void openai_body(struct mock_req *m, struct evbuffer *out)
{
    ADD_LIT(out, "{\"id\":\"chatcmpl-");
    evbuffer_add(out, m->id, strlen(m->id));
    ADD_NUM(out, "\",\"object\":\"chat.completion\",\"created\":", m->created);
    ADD_LIT(out, ",\"model\":");
    json_cstr(out, m->model);
    ADD_LIT(out, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    if (m->ncalls && m->answer_len == 0) /* OpenAI: null next to tool calls */
        ADD_LIT(out, "null");
    else
        json_str(out, m->answer, m->answer_len);
    if (m->ncalls) tool_calls(m, out);
    ADD_LIT(out, ",\"refusal\":null},\"logprobs\":null,\"finish_reason\":");
    json_cstr(out, finish_reason(m));
    ADD_LIT(out, "}]");
    if (m->dir.no_usage != 1) {
        ADD_LIT(out, ",");
        openai_usage(m, out);
    }
    ADD_LIT(out, ",\"system_fingerprint\":\"fp_mock\"}\n");
}

/* Every chunk starts the same way; `choices` is left open for the caller. */
static void chunk_head(struct mock_req *m, struct evbuffer *out)
{
    evbuffer_add_printf(out,
                        "data: {\"id\":\"chatcmpl-%s\",\"object\":\"chat.completion.chunk\","
                        "\"created\":%ld,\"model\":",
                        m->id, m->created);
    json_cstr(out, m->model);
    ADD_LIT(out, ",\"choices\":[");
}

/* With include_usage, every chunk but the usage chunk carries usage:null. */
static bool usage_chunk_wanted(struct mock_req *m)
{
    return m->include_usage && m->dir.no_usage != 1;
}

static void chunk_tail(struct mock_req *m, struct evbuffer *out)
{
    evbuffer_add_printf(out, "]%s}\n\n", usage_chunk_wanted(m) ? ",\"usage\":null" : "");
}

static void openai_open(struct mock_req *m, struct evbuffer *out)
{
    chunk_head(m, out);
    evbuffer_add_printf(out,
                        "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":%s,"
                        "\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}",
                        m->ncalls && m->answer_len == 0 ? "null" : "\"\"");
    chunk_tail(m, out);
}

static void openai_piece(struct mock_req *m, int k, struct evbuffer *out)
{
    size_t s, e;
    piece_bounds(m, k, &s, &e);
    chunk_head(m, out);
    ADD_LIT(out, "{\"index\":0,\"delta\":{\"content\":");
    json_str(out, m->answer + s, e - s);
    ADD_LIT(out, "},\"logprobs\":null,\"finish_reason\":null}");
    chunk_tail(m, out);
}

/* Per call: a delta with its index, id, name and empty arguments, then
 * the arguments in fragments. */
static int openai_call_pieces(const struct mock_call *c)
{
    return 1 + tools_frags(c);
}

static int openai_tool_npieces(struct mock_req *m)
{
    int n = 0;
    for (int k = 0; k < m->ncalls; k++)
        n += openai_call_pieces(&m->calls[k]);
    return n;
}

static void openai_tool_piece(struct mock_req *m, int j, struct evbuffer *out)
{
    int part, k = tools_locate(m, j, openai_call_pieces, &part);
    const struct mock_call *c = &m->calls[k];
    chunk_head(m, out);
    ADD_NUM(out, "{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":", k);
    if (part == 0) {
        ADD_LIT(out, ",\"id\":");
        json_cstr(out, c->id);
        ADD_LIT(out, ",\"type\":\"function\",\"function\":{\"name\":");
        json_cstr(out, c->name);
        ADD_LIT(out, ",\"arguments\":\"\"}");
    } else {
        size_t s, e;
        tools_frag(c, part - 1, &s, &e);
        ADD_LIT(out, ",\"function\":{\"arguments\":");
        json_str(out, c->args + s, e - s);
        ADD_LIT(out, "}");
    }
    ADD_LIT(out, "}]},\"logprobs\":null,\"finish_reason\":null}");
    chunk_tail(m, out);
}

static void openai_close(struct mock_req *m, struct evbuffer *out)
{
    chunk_head(m, out);
    evbuffer_add_printf(out,
                        "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"%s\"}",
                        finish_reason(m));
    chunk_tail(m, out);
    if (usage_chunk_wanted(m)) {
        chunk_head(m, out);
        ADD_LIT(out, "],");
        openai_usage(m, out);
        ADD_LIT(out, "}\n\n");
    }
    ADD_LIT(out, "data: [DONE]\n\n");
}

const struct dialect_ops openai_ops = {
    .name = "openai",
    .stream_type = "text/event-stream",
    .error = openai_error,
    .body = openai_body,
    .open = openai_open,
    .piece = openai_piece,
    .close = openai_close,
    .tool_npieces = openai_tool_npieces,
    .tool_piece = openai_tool_piece,
};

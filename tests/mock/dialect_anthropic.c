/* Anthropic Messages output (wire-formats.md section 3). */
#include "tests/mock/mock.h"

static const char *anthropic_error_type(int status)
{
    switch (status) {
    case 400:
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
    case 504:
        return "timeout_error";
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static void anthropic_error(struct mock_req *m, int status, const char *msg, struct evbuffer *out)
{
    const char *type = m->dir.code[0] ? m->dir.code : anthropic_error_type(status);
    ADD_LIT(out, "{\"type\":\"error\",\"error\":{\"type\":");
    json_cstr(out, type);
    ADD_LIT(out, ",\"message\":");
    json_cstr(out, msg);
    evbuffer_add_printf(out, "},\"request_id\":\"req_%s\"}\n", m->id);
}

/* input_tokens is the uncached part only: prompt - cache reads - cache writes. */
static void anthropic_usage(struct mock_req *m, long output, struct evbuffer *out)
{
    const struct usage *u = &m->use;
    long input = u->prompt - u->cached - u->cache_w5m - u->cache_w1h;
    evbuffer_add_printf(out,
                        "\"usage\":{\"input_tokens\":%ld,\"cache_creation_input_tokens\":%ld,"
                        "\"cache_read_input_tokens\":%ld,\"cache_creation\":{"
                        "\"ephemeral_5m_input_tokens\":%ld,\"ephemeral_1h_input_tokens\":%ld},"
                        "\"output_tokens\":%ld,\"service_tier\":\"%s\"}",
                        input > 0 ? input : 0, u->cache_w5m + u->cache_w1h, u->cached, u->cache_w5m,
                        u->cache_w1h, output, m->batch ? "batch" : "standard");
}

static const char *stop_reason(struct mock_req *m)
{
    return m->ncalls ? "tool_use" : m->length ? "max_tokens" : "end_turn";
}

/* An answer of tool calls alone has no text block; any other has one. */
static bool has_text_block(struct mock_req *m)
{
    return !m->ncalls || m->answer_len > 0;
}

/* thinking=1: a thinking block comes first (index 0), with a signature
 * naming the request, as extended thinking answers. */
static long thinking_blocks(struct mock_req *m)
{
    return m->dir.thinking == 1;
}

#define MOCK_THINKING "Let me think this through."

static void thinking_block(struct mock_req *m, bool streaming, struct evbuffer *out)
{
    if (streaming)
        ADD_LIT(out, "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}");
    else
        evbuffer_add_printf(out,
                            "{\"type\":\"thinking\",\"thinking\":\"" MOCK_THINKING
                            "\",\"signature\":\"sig_%s\"},",
                            m->id);
}

static void tool_use_block(const struct mock_call *c, bool streaming, struct evbuffer *out)
{
    ADD_LIT(out, "{\"type\":\"tool_use\",\"id\":");
    json_cstr(out, c->id);
    ADD_LIT(out, ",\"name\":");
    json_cstr(out, c->name);
    ADD_LIT(out, ",\"input\":");
    if (streaming) /* the input arrives in input_json_delta events */
        ADD_LIT(out, "{}");
    else
        evbuffer_add(out, c->args, c->args_len);
    ADD_LIT(out, "}");
}

/* The message object; `streaming` leaves content empty and output small. */
static void message(struct mock_req *m, bool streaming, struct evbuffer *out)
{
    evbuffer_add_printf(
        out, "{\"id\":\"msg_%s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":", m->id);
    json_cstr(out, m->model);
    if (streaming) {
        ADD_LIT(out, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null");
    } else {
        ADD_LIT(out, ",\"content\":[");
        if (thinking_blocks(m)) thinking_block(m, false, out);
        if (has_text_block(m)) {
            ADD_LIT(out, "{\"type\":\"text\",\"text\":");
            json_str(out, m->answer, m->answer_len);
            ADD_LIT(out, "}");
        }
        for (int k = 0; k < m->ncalls; k++) {
            if (k || has_text_block(m)) ADD_LIT(out, ",");
            tool_use_block(&m->calls[k], false, out);
        }
        evbuffer_add_printf(out, "],\"stop_reason\":\"%s\",\"stop_sequence\":null", stop_reason(m));
    }
    if (m->dir.no_usage != 1) {
        evbuffer_add(out, ",", 1);
        long small = m->use.completion < 1 ? m->use.completion : 1;
        anthropic_usage(m, streaming ? small : m->use.completion, out);
    }
    evbuffer_add(out, "}", 1);
}

static void anthropic_body(struct mock_req *m, struct evbuffer *out)
{
    message(m, false, out);
    evbuffer_add(out, "\n", 1);
}

static void event_head(const char *name, struct evbuffer *out)
{
    evbuffer_add_printf(out, "event: %s\ndata: {\"type\":\"%s\"", name, name);
}

static void block_stop(long index, struct evbuffer *out)
{
    event_head("content_block_stop", out);
    ADD_NUM(out, ",\"index\":", index);
    ADD_LIT(out, "}\n\n");
}

static void anthropic_open(struct mock_req *m, struct evbuffer *out)
{
    event_head("message_start", out);
    ADD_LIT(out, ",\"message\":");
    message(m, true, out);
    ADD_LIT(out, "}\n\n");
    event_head("ping", out);
    ADD_LIT(out, "}\n\n");
    if (thinking_blocks(m)) { /* the whole thinking block: start, text, signature, stop */
        event_head("content_block_start", out);
        ADD_LIT(out, ",\"index\":0,\"content_block\":");
        thinking_block(m, true, out);
        ADD_LIT(out, "}\n\n");
        event_head("content_block_delta", out);
        ADD_LIT(out,
                ",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"" MOCK_THINKING
                "\"}}\n\n");
        event_head("content_block_delta", out);
        evbuffer_add_printf(out,
                            ",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":"
                            "\"sig_%s\"}}\n\n",
                            m->id);
        block_stop(0, out);
    }
    if (!has_text_block(m)) return;
    event_head("content_block_start", out);
    ADD_NUM(out, ",\"index\":", thinking_blocks(m));
    ADD_LIT(out, ",\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
}

/* Per call, as Anthropic streams it: content_block_start (tool_use, input
 * {}), an input_json_delta with "" and one per fragment, content_block_stop. */
static int anthropic_call_pieces(const struct mock_call *c)
{
    return 3 + tools_frags(c);
}

static int anthropic_tool_npieces(struct mock_req *m)
{
    int n = 0;
    for (int k = 0; k < m->ncalls; k++)
        n += anthropic_call_pieces(&m->calls[k]);
    return n;
}

static void anthropic_tool_piece(struct mock_req *m, int j, struct evbuffer *out)
{
    int part, k = tools_locate(m, j, anthropic_call_pieces, &part);
    const struct mock_call *c = &m->calls[k];
    long index = k + has_text_block(m) + thinking_blocks(m);
    if (part == 0) {
        if (k == 0 && has_text_block(m)) block_stop(thinking_blocks(m), out);
        event_head("content_block_start", out);
        ADD_NUM(out, ",\"index\":", index);
        ADD_LIT(out, ",\"content_block\":");
        tool_use_block(c, true, out);
        ADD_LIT(out, "}\n\n");
    } else if (part == anthropic_call_pieces(c) - 1) {
        block_stop(index, out);
    } else {
        size_t s = 0, e = 0;
        if (part > 1) tools_frag(c, part - 2, &s, &e);
        event_head("content_block_delta", out);
        ADD_NUM(out, ",\"index\":", index);
        ADD_LIT(out, ",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":");
        json_str(out, c->args + s, e - s);
        ADD_LIT(out, "}}\n\n");
    }
}

static void anthropic_piece(struct mock_req *m, int k, struct evbuffer *out)
{
    size_t s, e;
    piece_bounds(m, k, &s, &e);
    event_head("content_block_delta", out);
    ADD_NUM(out, ",\"index\":", thinking_blocks(m));
    ADD_LIT(out, ",\"delta\":{\"type\":\"text_delta\",\"text\":");
    json_str(out, m->answer + s, e - s);
    ADD_LIT(out, "}}\n\n");
}

static void anthropic_close(struct mock_req *m, struct evbuffer *out)
{
    if (!m->ncalls) block_stop(thinking_blocks(m), out); /* each call's block stopped itself */
    event_head("message_delta", out);
    evbuffer_add_printf(out, ",\"delta\":{\"stop_reason\":\"%s\",\"stop_sequence\":null}",
                        stop_reason(m));
    if (m->dir.no_usage != 1)
        evbuffer_add_printf(out, ",\"usage\":{\"output_tokens\":%ld}", m->use.completion);
    ADD_LIT(out, "}\n\n");
    event_head("message_stop", out);
    ADD_LIT(out, "}\n\n");
}

const struct dialect_ops anthropic_ops = {
    .name = "anthropic",
    .stream_type = "text/event-stream",
    .error = anthropic_error,
    .body = anthropic_body,
    .open = anthropic_open,
    .piece = anthropic_piece,
    .close = anthropic_close,
    .tool_npieces = anthropic_tool_npieces,
    .tool_piece = anthropic_tool_piece,
};

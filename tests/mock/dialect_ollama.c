/* Ollama native /api/chat output (wire-formats.md section 5.1). */
#include "tests/mock/mock.h"

static void ollama_error(struct mock_req *m, int status, const char *msg, struct evbuffer *out)
{
    ADD_LIT(out, "{\"error\":");
    json_cstr(out, msg);
    ADD_LIT(out, "}\n");
}

/* message.tool_calls of calls [from, to): arguments are objects, each
 * function carries its index, as Ollama sends them. */
static void tool_calls(struct mock_req *m, int from, int to, struct evbuffer *out)
{
    ADD_LIT(out, ",\"tool_calls\":[");
    for (int k = from; k < to; k++) {
        if (k > from) ADD_LIT(out, ",");
        ADD_NUM(out, "{\"function\":{\"index\":", k);
        ADD_LIT(out, ",\"name\":");
        json_cstr(out, m->calls[k].name);
        ADD_LIT(out, ",\"arguments\":");
        evbuffer_add(out, m->calls[k].args, m->calls[k].args_len);
        ADD_LIT(out, "}}");
    }
    ADD_LIT(out, "]");
}

/* Asked with logprobs (Ollama 0.12.11+): each word of the line's text
 * (with the space before it) one token of logprob -0.25, its bytes, and
 * top_logprobs: the token itself then alt1.. of -1, -2, ... */
static void logprobs(struct mock_req *m, const char *text, size_t len, struct evbuffer *out)
{
    ADD_LIT(out, ",\"logprobs\":[");
    for (size_t s = 0, n = 0; s < len; n++) {
        size_t e = s + 1;
        while (e < len && text[e] != ' ')
            e++;
        if (n) ADD_LIT(out, ",");
        ADD_LIT(out, "{\"token\":");
        json_str(out, text + s, e - s);
        ADD_LIT(out, ",\"logprob\":-0.25,\"bytes\":[");
        for (size_t i = s; i < e; i++)
            evbuffer_add_printf(out, "%s%u", i > s ? "," : "", (unsigned char)text[i]);
        ADD_LIT(out, "],\"top_logprobs\":[");
        for (int j = 0; j < m->logprobs; j++) {
            if (j) ADD_LIT(out, ",");
            if (j == 0) {
                ADD_LIT(out, "{\"token\":");
                json_str(out, text + s, e - s);
                ADD_LIT(out, ",\"logprob\":-0.25}");
            } else {
                evbuffer_add_printf(out, "{\"token\":\"alt%d\",\"logprob\":-%d}", j, j);
            }
        }
        ADD_LIT(out, "]}");
        s = e;
    }
    ADD_LIT(out, "]");
}

/* The start of every line: model, created_at and the message content (and
 * the tool calls [from, to), if any). */
static void line_head_calls(struct mock_req *m, const char *text, size_t len, int from, int to,
                            struct evbuffer *out)
{
    char ts[48];
    iso8601_now(ts, sizeof(ts));
    ADD_LIT(out, "{\"model\":");
    json_cstr(out, m->model);
    evbuffer_add_printf(
        out, ",\"created_at\":\"%s\",\"message\":{\"role\":\"assistant\",\"content\":", ts);
    json_str(out, text, len);
    if (to > from) tool_calls(m, from, to, out);
    evbuffer_add(out, "}", 1);
    if (m->logprobs >= 0 && len) logprobs(m, text, len, out);
}

static void line_head(struct mock_req *m, const char *text, size_t len, struct evbuffer *out)
{
    line_head_calls(m, text, len, 0, 0, out);
}

/* Durations are made up but deterministic: load 1 ms, prompt 0.1 ms per
 * token, output 10 ms per token (all in ns, as Ollama reports them). */
static void final_fields(struct mock_req *m, struct evbuffer *out)
{
    const struct usage *u = &m->use;
    evbuffer_add_printf(out, ",\"done\":true,\"done_reason\":\"%s\"",
                        m->length ? "length" : "stop");
    if (m->dir.no_usage != 1) {
        long load = 1000000, prompt_ns = u->prompt * 100000, eval_ns = u->completion * 10000000;
        evbuffer_add_printf(
            out,
            ",\"total_duration\":%ld,\"load_duration\":%ld,\"prompt_eval_count\":%ld,"
            "\"prompt_eval_duration\":%ld,\"eval_count\":%ld,\"eval_duration\":%ld",
            load + prompt_ns + eval_ns, load, u->prompt, prompt_ns, u->completion, eval_ns);
    }
    ADD_LIT(out, "}\n");
}

static void ollama_body(struct mock_req *m, struct evbuffer *out)
{
    line_head_calls(m, m->answer, m->answer_len, 0, m->ncalls, out);
    final_fields(m, out);
}

static void ollama_open(struct mock_req *m, struct evbuffer *out) {}

static void ollama_piece(struct mock_req *m, int k, struct evbuffer *out)
{
    size_t s, e;
    piece_bounds(m, k, &s, &e);
    line_head(m, m->answer + s, e - s, out);
    ADD_LIT(out, ",\"done\":false}\n");
}

/* One done:false line per call (Ollama's done_reason stays "stop"). */
static int ollama_tool_npieces(struct mock_req *m)
{
    return m->ncalls;
}

static void ollama_tool_piece(struct mock_req *m, int j, struct evbuffer *out)
{
    line_head_calls(m, "", 0, j, j + 1, out);
    ADD_LIT(out, ",\"done\":false}\n");
}

static void ollama_close(struct mock_req *m, struct evbuffer *out)
{
    line_head(m, "", 0, out);
    final_fields(m, out);
}

const struct dialect_ops ollama_ops = {
    .name = "ollama",
    .stream_type = "application/x-ndjson",
    .error = ollama_error,
    .body = ollama_body,
    .open = ollama_open,
    .piece = ollama_piece,
    .close = ollama_close,
    .tool_npieces = ollama_tool_npieces,
    .tool_piece = ollama_tool_piece,
};

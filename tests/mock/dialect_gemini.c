/* Gemini generateContent output (wire-formats.md section 4). */
#include "tests/mock/mock.h"

static const char *gemini_status(int status)
{
    switch (status) {
    case 400:
        return "INVALID_ARGUMENT";
    case 401:
        return "UNAUTHENTICATED";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 409:
        return "ABORTED";
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 499:
        return "CANCELLED";
    case 501:
        return "UNIMPLEMENTED";
    case 503:
        return "UNAVAILABLE";
    case 504:
        return "DEADLINE_EXCEEDED";
    default:
        return status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION";
    }
}

/* Gemini sends no Retry-After header of its own; clients read RetryInfo. */
static void retry_info(struct mock_req *m, struct evbuffer *out)
{
    const struct directives *d = &m->dir;
    if (d->retry_after_ms >= 0)
        evbuffer_add_printf(out,
                            "{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
                            "\"retryDelay\":\"%d.%03ds\"}",
                            d->retry_after_ms / 1000, d->retry_after_ms % 1000);
    else if (d->retry_after >= 0 || d->retry_after_date == 1)
        evbuffer_add_printf(out,
                            "{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
                            "\"retryDelay\":\"%ds\"}",
                            d->retry_after >= 0 ? d->retry_after : 1);
}

static void gemini_error(struct mock_req *m, int status, const char *msg, struct evbuffer *out)
{
    evbuffer_add_printf(out, "{\"error\":{\"code\":%d,\"message\":", status);
    json_cstr(out, msg);
    evbuffer_add_printf(out, ",\"status\":\"%s\",\"details\":[", gemini_status(status));
    retry_info(m, out);
    ADD_LIT(out, "]}}\n");
}

/* candidatesTokenCount excludes thoughts; completion includes them. */
static long final_candidates(struct mock_req *m)
{
    long c = m->use.completion - m->use.reasoning;
    return c > 0 ? c : 0;
}

static void usage_metadata(struct mock_req *m, long candidates, struct evbuffer *out)
{
    const struct usage *u = &m->use;
    if (m->dir.no_usage == 1) return;
    evbuffer_add_printf(
        out,
        ",\"usageMetadata\":{\"promptTokenCount\":%ld,\"cachedContentTokenCount\":%ld,"
        "\"candidatesTokenCount\":%ld,\"thoughtsTokenCount\":%ld,"
        "\"totalTokenCount\":%ld}",
        u->prompt, u->cached, candidates, u->reasoning, u->prompt + candidates + u->reasoning);
}

/* functionCall parts: the whole call at once, args an object, no id. */
static void function_calls(struct mock_req *m, bool comma, struct evbuffer *out)
{
    for (int k = 0; k < m->ncalls; k++) {
        if (k || comma) ADD_LIT(out, ",");
        ADD_LIT(out, "{\"functionCall\":{\"name\":");
        json_cstr(out, m->calls[k].name);
        ADD_LIT(out, ",\"args\":");
        evbuffer_add(out, m->calls[k].args, m->calls[k].args_len);
        ADD_LIT(out, "}");
        if (k == 0) { /* opaque base64 in real life; "/NAME/" lets the mock check it */
            ADD_LIT(out, ",\"thoughtSignature\":\"c2lnbmF0dXJl+/");
            evbuffer_add_printf(out, "%s/%s=\"", m->calls[k].name, m->id);
        }
        ADD_LIT(out, "}");
    }
}

/* logprobsResult for `text`: each word (with the space before it) one
 * token of log probability -0.25, and at each step the token itself then
 * alternatives "alt1".. of -1, -2, ... (m->logprobs of them in all). */
static void logprobs_result(struct mock_req *m, const char *text, size_t len, struct evbuffer *out)
{
    struct evbuffer *chosen = evbuffer_new(), *top = evbuffer_new();
    size_t s = 0;
    for (int n = 0; s < len; n++) {
        size_t e = s + 1;
        while (e < len && text[e] != ' ')
            e++;
        evbuffer_add_printf(chosen, "%s{\"token\":", n ? "," : "");
        json_str(chosen, text + s, e - s);
        ADD_LIT(chosen, ",\"logProbability\":-0.25}");
        evbuffer_add_printf(top, "%s{\"candidates\":[", n ? "," : "");
        for (int j = 0; j < m->logprobs; j++) {
            if (j) ADD_LIT(top, ",");
            if (j == 0) {
                ADD_LIT(top, "{\"token\":");
                json_str(top, text + s, e - s);
                ADD_LIT(top, ",\"logProbability\":-0.25}");
            } else {
                evbuffer_add_printf(top, "{\"token\":\"alt%d\",\"logProbability\":-%d}", j, j);
            }
        }
        ADD_LIT(top, "]}");
        s = e;
    }
    ADD_LIT(out, ",\"logprobsResult\":{\"chosenCandidates\":[");
    evbuffer_add_buffer(out, chosen);
    ADD_LIT(out, "],\"topCandidates\":[");
    evbuffer_add_buffer(out, top);
    ADD_LIT(out, "]}");
    evbuffer_free(chosen);
    evbuffer_free(top);
}

/* One GenerateContentResponse holding `text` (and the tool calls when
 * `calls`) in each of the candidates asked for (candidateCount; usage
 * counts one); `last` adds finishReason. */
static void response(struct mock_req *m, const char *text, size_t len, bool calls, bool last,
                     long candidates, struct evbuffer *out)
{
    bool text_part = len > 0 || !calls;
    ADD_LIT(out, "{\"candidates\":[");
    for (int i = 0; i < (m->candidates > 1 ? m->candidates : 1); i++) {
        if (i) ADD_LIT(out, ",");
        ADD_LIT(out, "{\"content\":{\"role\":\"model\",\"parts\":[");
        if (text_part) {
            ADD_LIT(out, "{\"text\":");
            json_str(out, text, len);
            ADD_LIT(out, "}");
        }
        if (calls) function_calls(m, text_part, out);
        ADD_LIT(out, "]}");
        if (last)
            evbuffer_add_printf(out, ",\"finishReason\":\"%s\"", m->length ? "MAX_TOKENS" : "STOP");
        if (m->logprobs >= 0 && len) logprobs_result(m, text, len, out);
        evbuffer_add_printf(out, ",\"index\":%d}", i);
    }
    ADD_LIT(out, "]");
    usage_metadata(m, candidates, out);
    ADD_LIT(out, ",\"modelVersion\":");
    json_cstr(out, m->model);
    evbuffer_add_printf(out, ",\"responseId\":\"%s\"}", m->id);
}

static void gemini_body(struct mock_req *m, struct evbuffer *out)
{
    response(m, m->answer, m->answer_len, m->ncalls > 0, true, final_candidates(m), out);
    evbuffer_add(out, "\n", 1);
}

static void gemini_open(struct mock_req *m, struct evbuffer *out) {}

/* usageMetadata is a running total: candidates so far, the final count last. */
static void gemini_piece(struct mock_req *m, int k, struct evbuffer *out)
{
    size_t s, e;
    bool last = k == m->npieces - 1 && !m->ncalls; /* else the calls come last */
    long fin = final_candidates(m);
    long running = last ? fin : (k + 1 < fin ? k + 1 : fin);
    piece_bounds(m, k, &s, &e);
    ADD_LIT(out, "data: ");
    response(m, m->answer + s, e - s, false, last, running, out);
    ADD_LIT(out, "\n\n");
}

/* Gemini sends function calls whole: every call in one last message. */
static int gemini_tool_npieces(struct mock_req *m)
{
    return 1;
}

static void gemini_tool_piece(struct mock_req *m, int j, struct evbuffer *out)
{
    ADD_LIT(out, "data: ");
    response(m, "", 0, true, true, final_candidates(m), out);
    ADD_LIT(out, "\n\n");
}

/* The last piece already carried finishReason; only an empty answer needs a
 * frame of its own. */
static void gemini_close(struct mock_req *m, struct evbuffer *out)
{
    if (m->npieces > 0 || m->ncalls) return;
    ADD_LIT(out, "data: ");
    response(m, "", 0, false, true, final_candidates(m), out);
    ADD_LIT(out, "\n\n");
}

const struct dialect_ops gemini_ops = {
    .name = "gemini",
    .stream_type = "text/event-stream",
    .error = gemini_error,
    .body = gemini_body,
    .open = gemini_open,
    .piece = gemini_piece,
    .close = gemini_close,
    .tool_npieces = gemini_tool_npieces,
    .tool_piece = gemini_tool_piece,
};

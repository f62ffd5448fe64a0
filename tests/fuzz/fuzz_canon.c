/* router/canon on arbitrary bodies: never crash, and keep the contract of
 * canon_parse_chat / canon_prompt_text. On success the model is a
 * non-empty string, the request points at the whole body, messages is an
 * array and the prompt text (unescaped, so never longer than the body) is
 * part of what canon_prompt_chars counts (with the tools and the tool
 * calls, no longer than the body either); on failure the message is a non-empty,
 * NUL-terminated string and param and code are NUL-terminated too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "providers/params.h"
#include "router/canon.h"

/* Build with -DFUZZ_CANON_LENIENT to look past a known bug (reported, not
 * yet fixed) and find others: a "\u0000" escape in "model" passes
 * validation as an empty or truncated C string. */
#ifdef FUZZ_CANON_LENIENT
#define STRICT 0
#else
#define STRICT 1
#endif

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_canon: contract broken: %s\n", what);
        abort();
    }
}

static void check_error(const canon_error *e)
{
    check(memchr(e->message, '\0', sizeof e->message) != NULL, "message not NUL-terminated");
    check(memchr(e->param, '\0', sizeof e->param) != NULL, "param not NUL-terminated");
    check(memchr(e->code, '\0', sizeof e->code) != NULL, "code not NUL-terminated");
    check(e->message[0] != '\0', "empty error message");
    check(e->code[0] != '\0', "empty error code");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* reused across inputs, as the server reuses them per connection */
    static jdoc doc = JDOC_INIT;
    static buf strings = BUF_INIT;

    /* an exact-size copy, so ASan sees any read past the body */
    char *body = malloc(size ? size : 1);
    if (size) memcpy(body, data, size);
    canon_request req;
    canon_error err;
    memset(&err, 0x5a, sizeof err); /* garbage, to catch an unterminated field */
    int rc = canon_parse_chat(body, size, &doc, &strings, &req, &err);
    if (rc != 0) {
        check(rc == -1, "return value neither 0 nor -1");
        check_error(&err);
        free(body);
        return 0;
    }
    check(req.model != NULL, "model is NULL");
    check(req.model[0] != '\0' || (!STRICT && memmem(body, size, "\\u0000", 6)), "model is empty");
    check(req.body == body, "body does not point at the input");
    check(req.body_len == size, "body_len differs from the input size");
    check(req.doc == &doc, "doc not set");
    check(req.max_tokens == -1 || req.max_tokens >= 1, "max_tokens out of range");
    check(!req.include_usage || req.stream, "include_usage without stream");
    uint32_t msgs = jdoc_get(&doc, 0, "messages");
    check(jdoc_type(&doc, msgs) == JT_ARRAY, "messages is not an array");
    check(doc.t[msgs].size > 0, "messages is empty");
    /* every string the request points to is readable to its end */
    const char *strs[] = {req.model, req.user, req.task, req.agent, req.feature, req.team};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strs[i]) (void)strlen(strs[i]);

    /* parameter fidelity reads the same tokens: its refusals name a
     * parameter, and the mask agrees with each dialect's own answer */
    check(req.needs == params_request_needs(&doc), "needs differ on a second read");
    unsigned mask = params_refused_dialects(&req);
    const provider_ops *const *all = provider_all();
    for (int i = 0; all[i]; i++) {
        params_refusal why;
        memset(&why, 0x5a, sizeof why);
        bool no = params_dialect_refuses(&req, all[i], "m", &why);
        check(no == ((mask >> i & 1u) != 0), "refused_dialects disagrees with the dialect");
        if (!no) continue;
        check(memchr(why.param, '\0', sizeof why.param) != NULL, "refusal param not terminated");
        check(memchr(why.message, '\0', sizeof why.message) != NULL, "refusal not terminated");
        check(why.message[0] != '\0', "empty refusal");
        target t = {.provider = NULL, .model = "m", .caps = 0};
        params_refusal w2;
        check(params_target_refuses(&req, &t, &w2) == (req.needs != 0), "caps check");
    }

    buf text = BUF_INIT;
    canon_prompt_text(&req, &text);
    check(text.len <= size, "prompt text longer than the body");
    /* the text, plus the tools and tool calls, each unescaped: within the body again */
    int64_t chars = canon_prompt_chars(&req);
    check(chars >= (int64_t)text.len && chars <= (int64_t)(text.len + size),
          "prompt chars not the text plus tools and calls");
    buf_free(&text);
    free(body);
    return 0;
}

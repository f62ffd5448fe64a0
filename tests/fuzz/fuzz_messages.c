/* router/messages on arbitrary input, the three ways it reads untrusted
 * bytes: a Messages request body (from a client), a chat answer (from a
 * provider, through a dialect) and a chat stream in any split. Never crash;
 * a translated request is one valid JSON object; every translated answer
 * and stream event is valid JSON. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/messages.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_messages: contract broken: %s\n", what);
        abort();
    }
}

static void check_json(const char *s, size_t len, const char *what)
{
    jdoc d = JDOC_INIT;
    char why[64];
    check(jdoc_parse(&d, s, len, why, sizeof why, NULL) == 0, what);
    jdoc_free(&d);
}

/* Every "data: " line of the events in out is valid JSON. */
static void check_events(const buf *out)
{
    if (!out->len) return;
    const char *p = out->data, *end = out->data + out->len;
    while (p && p < end) {
        check(strncmp(p, "event: ", 7) == 0, "an event without its name");
        const char *data = strstr(p, "\ndata: ");
        check(data != NULL, "an event without data");
        data += 7;
        const char *nl = strstr(data, "\n\n");
        check(nl != NULL, "an unterminated event");
        check_json(data, (size_t)(nl - data), "event data is not JSON");
        p = nl + 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    jdoc d = JDOC_INIT;
    buf out = BUF_INIT;
    char err[400];
    switch (data[0] % 3) {
    case 0:
        if (messages_to_chat(s, n, data[0] & 4, &d, &out, err, sizeof err) == 0)
            check_json(out.data, out.len, "the canonical body is not JSON");
        else
            check(err[0] != '\0', "an empty error message");
        break;
    case 1:
        if (messages_from_completion(s, n, "msg_fuzz", &d, &out) == 0)
            check_json(out.data, out.len, "the message is not JSON");
        buf_reset(&out);
        messages_error_from(s, n, 400 + data[0] % 200, &d, &out);
        check_json(out.data, out.len, "the error is not JSON");
        break;
    default: {
        messages_stream *ms = messages_stream_new("msg_fuzz");
        size_t step = 1 + data[0] / 3 % 17;
        for (size_t at = 0; at < n; at += step)
            messages_stream_feed(ms, s + at, n - at < step ? n - at : step, &out);
        messages_stream_feed(ms, "data: [DONE]\n\n", 14, &out);
        check_events(&out);
        messages_stream_free(ms);
    }
    }
    jdoc_free(&d);
    buf_free(&out);
    return 0;
}

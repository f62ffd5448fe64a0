/* libFuzzer target for router/cache.c's two replay forms.
 *
 * Input: the bytes of a stream as a client got it (what a streamed answer
 * is stored from), or of a chat.completion (what a stream is replayed
 * from): both are tried. Properties: no crash or sanitizer report; a
 * stream that adds up to an answer gives valid JSON, and that answer
 * replayed as a stream adds up to the same answer again (the round trip
 * settles after one step). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jtok.h"
#include "router/cache.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_cache: invariant broken: %s\n", what);
        abort();
    }
}

static int valid_json(const buf *b)
{
    jdoc d = JDOC_INIT;
    int ok = jdoc_parse(&d, b->data ? b->data : "", b->len, NULL, 0, NULL) == 0 &&
             jdoc_type(&d, 0) == JT_OBJECT;
    jdoc_free(&d);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    usage_record u = {.input_uncached = 3, .cache_read = 1, .output = 8, .exact = true};
    buf whole = BUF_INIT, sse = BUF_INIT, again = BUF_INIT, sse2 = BUF_INIT;
    if (resp_cache_completion_of(s, size, &u, &whole) == 0) {
        check(valid_json(&whole), "the assembled answer is not a JSON object");
        check(resp_cache_stream_of(whole.data, whole.len, true, &sse) == 0,
              "an assembled answer does not replay as a stream");
        check(resp_cache_completion_of(sse.data, sse.len, &u, &again) == 0,
              "a replayed stream does not add up to an answer");
        check(resp_cache_stream_of(again.data, again.len, true, &sse2) == 0, "second replay");
        buf third = BUF_INIT;
        check(resp_cache_completion_of(sse2.data, sse2.len, &u, &third) == 0, "third assembly");
        check(third.len == again.len && memcmp(third.data, again.data, again.len) == 0,
              "the round trip does not settle");
        buf_free(&third);
    }
    buf_reset(&sse);
    if (resp_cache_stream_of(s, size, size & 1, &sse) == 0)
        check(sse.len >= 14 && memcmp(sse.data + sse.len - 14, "data: [DONE]\n\n", 14) == 0,
              "a replayed stream does not end with [DONE]");
    buf_free(&whole);
    buf_free(&sse);
    buf_free(&again);
    buf_free(&sse2);
    return 0;
}

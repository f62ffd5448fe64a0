/* providers/batch on arbitrary provider answers (a status, a creation, a
 * results line), in both dialects: never crash; a result read has a
 * custom_id that fits and a status of 0 or an HTTP status. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "providers/batch.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_pbatch: contract broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const kinds[] = {"openai", "anthropic"};
    const char *s = (const char *)data;
    for (int k = 0; k < 2; k++) {
        provider_conf p = {.name = "p", .ops = provider_find(kinds[k]), .base_url = "http://x/v1"};
        char err[200], id[96];
        if (provider_batch_id(s, size, id, sizeof id, err, sizeof err) == 0)
            check(strlen(id) > 0 && strlen(id) < sizeof id, "an id");
        provider_batch_state st;
        if (provider_batch_read_state(&p, s, size, &st, err, sizeof err) == 0)
            check(!st.refused || st.ended, "refused but not ended");
        provider_batch_result r = {.body = BUF_INIT};
        if (provider_batch_read_result(&p, s, size, &r, err, sizeof err) == 0) {
            check(strlen(r.custom_id) > 0, "a custom_id");
            check(r.status == 0 || (r.status >= 100 && r.status <= 599), "a status");
            check(r.body.len == 0 || r.body.data[r.body.len] == '\0', "a terminated body");
        }
        buf_free(&r.body);
    }
    return 0;
}

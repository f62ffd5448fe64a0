/* router/batch_input on arbitrary files: never crash; an accepted file has
 * between 1 and BATCH_MAX_LINES requests and names a known endpoint; a
 * refused one says which line ("line N: ..."). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/batch_input.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_batch_input: contract broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    batch_input_info info;
    char err[400] = "";
    if (batch_input_check((const char *)data, size, &info, err, sizeof err) == 0) {
        check(info.lines >= 1 && info.lines <= BATCH_MAX_LINES, "line count");
        check(strcmp(info.endpoint, "/v1/chat/completions") == 0, "endpoint");
    } else {
        check(strncmp(err, "line ", 5) == 0, "the error names no line");
    }
    return 0;
}

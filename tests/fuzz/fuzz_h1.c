/* server/h1's request framing on arbitrary bytes (untrusted input: every
 * client's request line, headers and body framing): never crash; a request
 * it takes lies inside what it was given, with its body inside the
 * request; and framing the bytes as they arrive, in pieces, with the state
 * kept between calls, ends as framing them at once (a whole request
 * and a body over the limit exactly; a malformed head or one with too many
 * lines may be refused with the other status, or wait for more bytes:
 * picohttpparser checks line ends differently when told how much it saw). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/h1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const h1_options o = {.max_body_bytes = 4096,
                                 .max_header_bytes = 1024,
                                 .read_timeout_ms = 1000,
                                 .max_connections = 1};
    char *b = malloc(size + 1);
    if (!b) return 0;
    memcpy(b, data, size);
    b[size] = '\0';
    h1_frame f;
    int rc = h1_frame_request(b, size, &o, NULL, &f);
    if (rc == H1_FRAME_DONE) {
        if (f.consumed > size || f.head_len > f.consumed || f.body_off < f.head_len ||
            f.body_off + f.body_len > f.consumed || f.body_len > o.max_body_bytes)
            abort();
    } else if (rc != H1_FRAME_MORE && rc != 400 && rc != 413 && rc != 431) {
        abort();
    }
    /* the same bytes arriving in pieces of 1 to 16 bytes (sizes from the data) */
    h1_frame_state st = {0};
    h1_frame g;
    int inc = H1_FRAME_MORE;
    size_t have = 0;
    for (size_t step = 0; inc == H1_FRAME_MORE && have < size; step++) {
        have += 1 + (size_t)(data[step % size] & 15);
        if (have > size) have = size;
        memcpy(b, data, have); /* a fresh copy: a whole chunked body is decoded in place */
        inc = h1_frame_request(b, have, &o, &st, &g);
    }
    /* a whole request, or a body over the limit, is found the same way */
    bool sure = rc == H1_FRAME_DONE || rc == 413, inc_sure = inc == H1_FRAME_DONE || inc == 413;
    if ((sure || inc_sure) && inc != rc) abort();
    if (rc == H1_FRAME_DONE && (g.consumed != f.consumed || g.body_len != f.body_len ||
                                g.head_len != f.head_len || g.keep_alive != f.keep_alive))
        abort();
    free(b);
    return 0;
}

/* server/h1's request framing on arbitrary bytes (untrusted input: every
 * client's request line, headers and body framing): never crash, and a
 * request it takes lies inside what it was given, with its body inside the
 * request. Then the path decoder on the same bytes. */
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
    int rc = h1_frame_request(b, size, &o, &f);
    if (rc == H1_FRAME_DONE) {
        if (f.consumed > size || f.head_len > f.consumed || f.body_off < f.head_len ||
            f.body_off + f.body_len > f.consumed || f.body_len > o.max_body_bytes)
            abort();
    } else if (rc != H1_FRAME_MORE && rc != 400 && rc != 413 && rc != 431) {
        abort();
    }
    char *d = h1_uri_decode((const char *)data, size);
    if (d && strlen(d) > size) abort();
    free(d);
    free(b);
    return 0;
}

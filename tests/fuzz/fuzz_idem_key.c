/* db/idem's Idempotency-Key parser on arbitrary header values (untrusted
 * input, reliability.md T2): never crash, and a key it accepts is 1 to 255
 * printable ASCII characters, NUL-terminated inside the buffer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/idem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *h = malloc(size + 1);
    if (!h) return 0;
    memcpy(h, data, size);
    h[size] = '\0'; /* evhttp hands headers over as C strings */
    char key[256];
    if (idem_parse_key(h, key, sizeof key) == 0) {
        size_t n = strnlen(key, sizeof key);
        if (n == 0 || n > 255) abort();
        for (size_t i = 0; i < n; i++)
            if (key[i] < 0x20 || key[i] > 0x7e) abort();
    }
    free(h);
    return 0;
}

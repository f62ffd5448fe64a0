/* lib/multipart on arbitrary bodies (and Content-Type values): never
 * crash; every part found lies inside the body, in order, with a name. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/multipart.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_multipart: contract broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the first line is the Content-Type value, the rest the body */
    const char *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    size_t cl = (size_t)(nl - (const char *)data);
    char ct[256];
    if (cl >= sizeof ct) return 0;
    memcpy(ct, data, cl);
    ct[cl] = '\0';
    char boundary[72];
    if (!multipart_boundary(ct, boundary)) return 0;
    check(strlen(boundary) >= 1 && strlen(boundary) <= 70, "boundary length");
    const char *body = nl + 1;
    size_t len = size - cl - 1;
    static multipart m;
    char err[128];
    if (multipart_parse(body, len, boundary, &m, err, sizeof err) != 0) {
        check(err[0] != '\0', "empty error");
        return 0;
    }
    const char *prev = body;
    for (int i = 0; i < m.n; i++) {
        const multipart_part *p = &m.parts[i];
        check(p->name != NULL, "a part without a name");
        check(p->data >= prev && p->data + p->len <= body + len, "a part outside the body");
        prev = p->data + p->len;
        check(multipart_get(&m, p->name) != NULL, "multipart_get misses a part");
    }
    return 0;
}

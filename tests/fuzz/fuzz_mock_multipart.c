/* bridle-mock's multipart parser (tests/mock/multipart.c, the mock's
 * POST /v1/files) on arbitrary bodies and Content-Type values: never crash;
 * every part found lies inside the body, in order, with a name inside it.
 * The mock links nothing of bridle's and fuzz.sh archives only bridle's
 * library, so the parser's one file is compiled in here. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/mock/multipart.c"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_mock_multipart: contract broken: %s\n", what);
        abort();
    }
}

static int inside(const char *p, size_t len, const char *body, size_t size)
{
    return p >= body && p + len <= body + size;
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
    size_t blen = size - cl - 1;
    char *body = malloc(blen ? blen : 1); /* its own allocation: ASan sees overreads */
    if (!body) return 0;
    memcpy(body, nl + 1, blen);
    struct mp_part parts[4];
    int n = -1;
    const char *err = mp_parse(ct, body, blen, parts, 4, &n);
    check(n >= 0 && n <= 4, "part count");
    const char *prev = body;
    for (int i = 0; i < n && !err; i++) {
        const struct mp_part *p = &parts[i];
        check(p->name && inside(p->name, p->name_len, body, blen), "name inside the body");
        check(!p->filename || inside(p->filename, p->filename_len, body, blen),
              "filename inside the body");
        check(inside(p->data, p->len, body, blen), "data inside the body");
        check(p->data >= prev, "parts in order");
        prev = p->data + p->len;
    }
    free(body);
    return 0;
}

/* multipart/form-data bodies (RFC 7578), as the OpenAI SDKs upload files.
 * Depends on nothing but libc and the struct in mock.h, so that
 * tests/fuzz/fuzz_mock_multipart.c can compile it on its own. */
#include "tests/mock/mock.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *find_ci(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (!strncasecmp(s + i, needle, n)) return s + i;
    return NULL;
}

/* The boundary of a Content-Type value, quoted or not (1-70 characters). */
static bool mp_boundary(const char *ctype, char out[72])
{
    if (!ctype || strncasecmp(ctype, "multipart/form-data", 19)) return false;
    const char *b = find_ci(ctype, strlen(ctype), "boundary=");
    if (!b) return false;
    b += 9;
    size_t n = 0;
    if (*b == '"') {
        for (b++; b[n] && b[n] != '"'; n++)
            ;
    } else {
        while (b[n] && b[n] != ';' && !isspace((unsigned char)b[n]))
            n++;
    }
    if (n < 1 || n > 70) return false;
    memcpy(out, b, n);
    out[n] = '\0';
    return true;
}

/* A parameter (name="..." or filename="...") of a Content-Disposition value
 * that ends at `end`; the value stays in place. */
static bool mp_param(const char *s, const char *end, const char *key, const char **v, size_t *vlen)
{
    size_t klen = strlen(key);
    for (const char *p = s; p + klen + 2 <= end; p++) {
        if ((p == s || p[-1] == ';' || p[-1] == ' ') && !strncasecmp(p, key, klen) &&
            p[klen] == '=' && p[klen + 1] == '"') {
            const char *q = memchr(p + klen + 2, '"', (size_t)(end - p - klen - 2));
            if (!q) return false;
            *v = p + klen + 2;
            *vlen = (size_t)(q - *v);
            return true;
        }
    }
    return false;
}

/* One part's headers [h, hend): its form-data name and filename. */
static const char *mp_headers(const char *h, const char *hend, struct mp_part *part)
{
    while (h < hend) {
        const char *eol = memmem(h, (size_t)(hend - h), "\r\n", 2);
        if (!eol) eol = hend;
        if ((size_t)(eol - h) > 20 && !strncasecmp(h, "content-disposition:", 20)) {
            const char *v = h + 20;
            while (v < eol && *v == ' ')
                v++;
            if ((size_t)(eol - v) < 9 || strncasecmp(v, "form-data", 9))
                return "a part's Content-Disposition is not form-data";
            if (!mp_param(v, eol, "name", &part->name, &part->name_len))
                return "a part's Content-Disposition has no name";
            mp_param(v, eol, "filename", &part->filename, &part->filename_len);
        }
        h = eol + 2;
    }
    return part->name ? NULL : "a part has no Content-Disposition header";
}

const char *mp_parse(const char *ctype, const char *body, size_t len, struct mp_part *parts,
                     int max, int *n)
{
    char bnd[72], delim[76];
    *n = 0;
    if (!mp_boundary(ctype, bnd))
        return "the body must be multipart/form-data with a boundary (Content-Type)";
    int dlen = snprintf(delim, sizeof(delim), "--%s", bnd);
    const char *end = body + len;
    const char *p = memmem(body, len, delim, (size_t)dlen);
    if (!p) return "the multipart body has no boundary line";
    for (;;) {
        p += dlen;
        if (end - p >= 2 && !memcmp(p, "--", 2)) return NULL; /* the closing boundary */
        if (end - p < 2 || memcmp(p, "\r\n", 2)) return "a boundary line does not end in CRLF";
        p += 2;
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) return "a part's headers do not end";
        if (*n == max) return "too many parts";
        struct mp_part *part = &parts[*n];
        memset(part, 0, sizeof(*part));
        const char *err = mp_headers(p, hend, part);
        if (err) return err;
        part->data = hend + 4;
        /* the part ends at CRLF + the delimiter */
        const char *q = part->data;
        const char *next = NULL;
        while ((q = memmem(q, (size_t)(end - q), delim, (size_t)dlen)) != NULL) {
            if (q - part->data >= 2 && q[-2] == '\r' && q[-1] == '\n') {
                next = q;
                break;
            }
            q++;
        }
        if (!next) return "the multipart body does not end with its closing boundary";
        part->len = (size_t)(next - 2 - part->data);
        (*n)++;
        p = next;
    }
}

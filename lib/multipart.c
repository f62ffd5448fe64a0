/* multipart/form-data (lib/multipart.h). */
#include "lib/multipart.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

bool multipart_boundary(const char *ct, char out[72])
{
    if (!ct || strncasecmp(ct, "multipart/form-data", 19) != 0) return false;
    const char *p = ct + 19;
    for (;;) {
        p = strchr(p, ';');
        if (!p) return false;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, "boundary=", 9) != 0) continue;
        p += 9;
        bool quoted = *p == '"';
        if (quoted) p++;
        size_t n = 0;
        while (p[n] && (quoted ? p[n] != '"' : (p[n] != ';' && p[n] != ' ' && p[n] != '\t')))
            n++;
        if (n == 0 || n > 70 || (quoted && p[n] != '"')) return false;
        memcpy(out, p, n);
        out[n] = '\0';
        return true;
    }
}

static int fail(char *err, size_t errlen, const char *why)
{
    snprintf(err, errlen, "%s", why);
    return -1;
}

/* A copy of s[0..n) in m's storage, or NULL when full. */
static const char *keep(multipart *m, const char *s, size_t n)
{
    if (m->used + n + 1 > sizeof m->strings) return NULL;
    char *d = m->strings + m->used;
    memcpy(d, s, n);
    d[n] = '\0';
    m->used += n + 1;
    return d;
}

/* The value of parameter `key` (name, filename) in a Content-Disposition
 * value line[0..len): quoted (backslash escapes are not undone: the SDKs
 * percent-encode) or a token. */
static bool disposition_param(const char *line, size_t len, const char *key, const char **v,
                              size_t *vlen)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl + 1 < len; i++) {
        if ((i == 0 || line[i - 1] == ';' || line[i - 1] == ' ') &&
            strncasecmp(line + i, key, kl) == 0 && line[i + kl] == '=') {
            const char *p = line + i + kl + 1, *end = line + len;
            if (p < end && *p == '"') {
                const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
                if (!q) return false;
                *v = p + 1;
                *vlen = (size_t)(q - p - 1);
            } else {
                const char *q = p;
                while (q < end && *q != ';' && *q != ' ')
                    q++;
                *v = p;
                *vlen = (size_t)(q - p);
            }
            return true;
        }
    }
    return false;
}

/* The headers of a part, head[0..len) (lines ending in CRLF). */
static int part_headers(multipart *m, multipart_part *part, const char *head, size_t len, char *err,
                        size_t errlen)
{
    const char *p = head, *end = head + len;
    bool form_data = false;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        size_t ll = eol ? (size_t)(eol - p) : (size_t)(end - p);
        const char *colon = memchr(p, ':', ll);
        if (!colon) return fail(err, errlen, "a part's header line has no colon");
        size_t nl = (size_t)(colon - p);
        const char *v = colon + 1;
        while (v < p + ll && (*v == ' ' || *v == '\t'))
            v++;
        size_t vl = (size_t)(p + ll - v);
        if (nl == 19 && strncasecmp(p, "content-disposition", 19) == 0) {
            if (vl < 9 || strncasecmp(v, "form-data", 9) != 0)
                return fail(err, errlen, "a part's Content-Disposition is not form-data");
            const char *s;
            size_t sl;
            if (!disposition_param(v, vl, "name", &s, &sl) || !(part->name = keep(m, s, sl)))
                return fail(err, errlen, "a part has no name (or too long a one)");
            if (disposition_param(v, vl, "filename", &s, &sl) && !(part->filename = keep(m, s, sl)))
                return fail(err, errlen, "a part's filename is too long");
            form_data = true;
        } else if (nl == 12 && strncasecmp(p, "content-type", 12) == 0) {
            if (!(part->content_type = keep(m, v, vl)))
                return fail(err, errlen, "a part's Content-Type is too long");
        }
        p = eol ? eol + 2 : end;
    }
    return form_data ? 0 : fail(err, errlen, "a part has no Content-Disposition: form-data");
}

int multipart_parse(const char *body, size_t len, const char *boundary, multipart *out, char *err,
                    size_t errlen)
{
    memset(out, 0, sizeof *out);
    char delim[76]; /* CRLF "--" boundary */
    size_t bl = strlen(boundary), dl = bl + 4;
    if (bl == 0 || bl > 70) return fail(err, errlen, "the boundary must be 1 to 70 characters");
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, boundary, bl);
    /* the first delimiter may open the body without its CRLF */
    const char *p, *end = body + len;
    if (len >= dl - 2 && memcmp(body, delim + 2, dl - 2) == 0)
        p = body + dl - 2;
    else {
        const char *first = memmem(body, len, delim, dl);
        if (!first) return fail(err, errlen, "the body has no multipart boundary");
        p = first + dl;
    }
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            return out->n ? 0 : fail(err, errlen, "the body has no parts");
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return fail(err, errlen, "a boundary line does not end with CRLF");
        p += 2;
        if (out->n == MULTIPART_MAX_PARTS) return fail(err, errlen, "too many parts");
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) return fail(err, errlen, "a part's headers do not end");
        multipart_part *part = &out->parts[out->n];
        if (part_headers(out, part, p, (size_t)(hend - p), err, errlen)) return -1;
        const char *data = hend + 4;
        const char *next = memmem(data, (size_t)(end - data), delim, dl);
        if (!next) return fail(err, errlen, "the body does not end with its closing boundary");
        part->data = data;
        part->len = (size_t)(next - data);
        out->n++;
        p = next + dl;
    }
}

const multipart_part *multipart_get(const multipart *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->parts[i].name, name) == 0) return &m->parts[i];
    return NULL;
}

/* multipart/form-data (RFC 7578) bodies, as the OpenAI SDKs upload files:
 * the boundary from the Content-Type header, then each part's name,
 * filename, content type and bytes, pointing into the body (nothing is
 * copied). Strict: a body that does not end with the closing boundary, a
 * part without a Content-Disposition form-data name, or more than
 * MULTIPART_MAX_PARTS parts is refused with a reason. */
#ifndef BRIDLE_MULTIPART_H
#define BRIDLE_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#define MULTIPART_MAX_PARTS 16

typedef struct multipart_part {
    const char *name, *filename, *content_type; /* NUL-terminated copies in the parser's
                                                   storage; filename and content_type may be
                                                   NULL */
    const char *data;                           /* into the body */
    size_t len;
} multipart_part;

typedef struct multipart {
    multipart_part parts[MULTIPART_MAX_PARTS];
    int n;
    char strings[1024]; /* the names, filenames and types, NUL-separated */
    size_t used;
} multipart;

/* The boundary of a Content-Type value ("multipart/form-data;
 * boundary=..."), quoted or not, into out (at most 70 characters + NUL, RFC
 * 2046). False when content_type is not multipart/form-data or has none. */
bool multipart_boundary(const char *content_type, char out[72]);

/* Parses body[0..len) with `boundary`. Returns 0, or -1 with a reason in
 * err. */
int multipart_parse(const char *body, size_t len, const char *boundary, multipart *out, char *err,
                    size_t errlen);

/* The part named `name`, or NULL. */
const multipart_part *multipart_get(const multipart *m, const char *name);

#endif

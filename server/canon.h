/* Turns a client's chat request body into a canonical_request, or says
 * precisely what is wrong with it. The body is parsed once (json-c, UTF-8
 * validated) and kept whole for pass-through. */
#ifndef BRIDLE_CANON_H
#define BRIDLE_CANON_H

#include <stddef.h>

#include "providers/provider.h"

typedef struct canon_error {
    char message[384]; /* what is wrong and how to fix it */
    char param[96];    /* the offending field, e.g. "messages[2].role", or "" */
    char code[48];     /* OpenAI-style error code, or "" */
} canon_error;

/* Parses and validates `body`. On success returns 0 and fills out (out->root
 * owned by the caller: json_object_put it). On failure returns -1, fills
 * err, and nothing needs freeing. The tokener is reused across calls. */
int canon_parse_chat(json_tokener *tok, const char *body, size_t len, canon_request *out,
                     canon_error *err);

#endif

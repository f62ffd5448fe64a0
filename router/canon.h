/* Turns a client's chat request body into a canon_request, or says
 * precisely what is wrong with it. The body is validated once with
 * lib/jtok (strict JSON, UTF-8) and kept as it came, tokenized, so the
 * OpenAI dialect forwards it byte for byte; the json-c tree the other
 * dialects translate from is built only when one of them is called. */
#ifndef BRIDLE_CANON_H
#define BRIDLE_CANON_H

#include <stddef.h>

#include "lib/jtok.h"
#include "providers/provider.h"

typedef struct canon_error {
    char message[384]; /* what is wrong and how to fix it */
    char param[96];    /* the offending field, e.g. "messages[2].role", or "" */
    char code[48];     /* OpenAI-style error code, or "" */
} canon_error;

/* Validates body[0..len) into out. `doc` receives the tokens and `strings`
 * the unescaped field values out points to; both must outlive out (the
 * request owns them), and body too. Returns 0, or -1 with err filled. */
int canon_parse_chat(const char *body, size_t len, jdoc *doc, buf *strings, canon_request *out,
                     canon_error *err);

/* Builds out->root and out->messages (json-c) from the body, for dialects
 * whose encode needs the tree. Idempotent. Returns 0 or -1 (out of memory
 * or a body json-c rejects, which jtok accepted: reported as a 400). */
int canon_build_tree(canon_request *req, json_tokener *tok, canon_error *err);
/* tok may be NULL: a process-wide tokener is used. */

/* Appends the text of every message's content (strings, and the text of
 * content parts), read from the tokens: what a usage estimate counts when
 * a provider reported none. */
void canon_prompt_text(const canon_request *req, buf *out);

#endif

/* Turns a client's chat request body into a canon_request, or says
 * precisely what is wrong with it. The body is validated once with
 * lib/jtok (strict JSON, UTF-8) and kept as it came, tokenized: that is
 * the request's one parse. The OpenAI dialect forwards it byte for byte,
 * the translating dialects encode from its tokens, and nothing parses the
 * body again. */
#ifndef BRIDLE_CANON_H
#define BRIDLE_CANON_H

#include <stddef.h>
#include <stdint.h>

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

/* The same for a POST /v1/embeddings body: "model", "input" (a string, a
 * list of strings, a list of token ids or a list of lists of them, at most
 * 2,048 inputs, none empty), "encoding_format" (float or base64),
 * "dimensions", "user" and "metadata" (attribution, as for chat; "stream":
 * true is refused) into
 * out->embed and the common fields. Returns 0, or -1 with err filled. */
int canon_parse_embeddings(const char *body, size_t len, jdoc *doc, buf *strings,
                           canon_request *out, canon_error *err);

/* Appends the text of every message's content (strings, and the text and
 * refusal parts of lists, unescaped) to out, read from req->doc: what a
 * prompt-size estimate counts. */
void canon_prompt_text(const canon_request *req, buf *out);
/* The length in bytes of that text, plus the tools (their JSON) and the
 * earlier tool calls (names and arguments): about 4 per token. */
int64_t canon_prompt_chars(const canon_request *req);

#endif

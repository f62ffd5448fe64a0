/* server/canon on arbitrary bodies: never crash, and keep the contract of
 * canon_parse_chat / canon_build_tree. On success the model is a non-empty
 * string, the request points at the whole body and messages is an array;
 * on failure the message is a non-empty, NUL-terminated string and param
 * and code are NUL-terminated too. */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/canon.h"

/* Build with -DFUZZ_CANON_LENIENT to look past two known bugs (reported,
 * not yet fixed) and find others: a "\u0000" escape in "model" passes
 * validation as an empty or truncated C string, and duplicate keys are
 * validated first-wins by canon but read last-wins by json-c (the tree)
 * and by upstream hosts. */
#ifdef FUZZ_CANON_LENIENT
#define STRICT 0
#else
#define STRICT 1
#endif

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_canon: contract broken: %s\n", what);
        abort();
    }
}

static void check_error(const canon_error *e)
{
    check(memchr(e->message, '\0', sizeof e->message) != NULL, "message not NUL-terminated");
    check(memchr(e->param, '\0', sizeof e->param) != NULL, "param not NUL-terminated");
    check(memchr(e->code, '\0', sizeof e->code) != NULL, "code not NUL-terminated");
    check(e->message[0] != '\0', "empty error message");
    check(e->code[0] != '\0', "empty error code");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* reused across inputs, as the server reuses them per connection */
    static jdoc doc = JDOC_INIT;
    static buf strings = BUF_INIT;
    static json_tokener *tok;
    if (!tok) tok = json_tokener_new();

    /* an exact-size copy, so ASan sees any read past the body */
    char *body = malloc(size ? size : 1);
    if (size) memcpy(body, data, size);
    canon_request req;
    canon_error err;
    memset(&err, 0x5a, sizeof err); /* garbage, to catch an unterminated field */
    int rc = canon_parse_chat(body, size, &doc, &strings, &req, &err);
    if (rc != 0) {
        check(rc == -1, "return value neither 0 nor -1");
        check_error(&err);
        free(body);
        return 0;
    }
    check(req.model != NULL, "model is NULL");
    check(req.model[0] != '\0' || (!STRICT && memmem(body, size, "\\u0000", 6)), "model is empty");
    check(req.body == body, "body does not point at the input");
    check(req.body_len == size, "body_len differs from the input size");
    check(req.doc == &doc, "doc not set");
    check(req.max_tokens == -1 || req.max_tokens >= 1, "max_tokens out of range");
    check(!req.include_usage || req.stream, "include_usage without stream");
    uint32_t msgs = jdoc_get(&doc, 0, "messages");
    check(jdoc_type(&doc, msgs) == JT_ARRAY, "messages is not an array");
    check(doc.t[msgs].size > 0, "messages is empty");
    /* every string the request points to is readable to its end */
    const char *strs[] = {req.model, req.user, req.task, req.agent, req.feature, req.team};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strs[i]) (void)strlen(strs[i]);

    memset(&err, 0x5a, sizeof err);
    if (canon_build_tree(&req, tok, &err) == 0) {
        check(req.root != NULL, "root is NULL after build_tree");
        check(req.messages != NULL, "messages is NULL after build_tree");
        if (STRICT) {
            /* the tree must say what canon validated */
            check(json_object_is_type(req.messages, json_type_array) &&
                      json_object_array_length(req.messages) == doc.t[msgs].size,
                  "tree and tokens disagree on messages (duplicate key?)");
            json_object *m;
            check(json_object_object_get_ex(req.root, "model", &m) &&
                      json_object_is_type(m, json_type_string) &&
                      strcmp(json_object_get_string(m), req.model) == 0,
                  "tree and canon disagree on model (duplicate key or \\u0000?)");
        }
        json_object *root = req.root;
        check(canon_build_tree(&req, tok, &err) == 0 && req.root == root,
              "build_tree is not idempotent");
        json_object_put(req.root);
    } else {
        check_error(&err);
    }
    free(body);
    return 0;
}

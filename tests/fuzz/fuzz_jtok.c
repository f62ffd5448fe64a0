/* lib/jtok against json-c: never crash, tokens stay inside the input and
 * nest properly, every document jtok accepts json-c (strict) accepts, and
 * a document copied out with jdoc_json_append (what the translating
 * dialects send upstream) reads in json-c as the original did. Except
 * with surrogate escapes: json-c 0.16 turns some valid pairs (\ud836\udc00
 * and 31 other high halves) into U+FFFD, so there the copy must instead
 * be valid, escape no surrogate, and copy to itself. */
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jtok.h"

/* A \uDxxx escape in s[0..n), escaped backslashes skipped. */
static bool escapes_surrogate(const char *s, size_t n)
{
    for (size_t i = 0; i + 2 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && (s[i + 2] == 'd' || s[i + 2] == 'D')) return true;
        i++; /* the escaped character */
    }
    return false;
}

/* The copy of a document with surrogate escapes: valid, none left, stable. */
static void check_surrogate_copy(const buf *out)
{
    static jdoc again = JDOC_INIT;
    if (jdoc_parse(&again, out->data, out->len, NULL, 0, NULL) != 0) abort();
    if (escapes_surrogate(out->data, out->len)) abort();
    buf twice = BUF_INIT;
    jdoc_json_append(&again, 0, &twice);
    if (twice.len != out->len || memcmp(twice.data, out->data, out->len) != 0) abort();
    buf_free(&twice);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static jdoc d = JDOC_INIT;
    char err[128];
    size_t pos;
    if (jdoc_parse(&d, (const char *)data, size, err, sizeof err, &pos) != 0) return 0;
    for (uint32_t i = 0; i < d.n; i++) {
        const jtok *t = &d.t[i];
        if (t->end > size || t->start > t->end || t->next <= i || t->next > d.n) abort();
        if (t->type == JT_STRING) {
            buf b = BUF_INIT;
            jdoc_str_append(&d, i, &b);
            buf_free(&b);
        }
    }
    if (d.t[0].next != d.n) abort();
    json_tokener *tok = json_tokener_new_ex(200);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    /* json-c waits for more input after a bare top-level scalar: end it with a space */
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = ' ';
    json_object *o = json_tokener_parse_ex(tok, copy, (int)size + 1);
    enum json_tokener_error e = json_tokener_get_error(tok);
    free(copy);
    if (e != json_tokener_success) abort();
    buf out = BUF_INIT;
    jdoc_json_append(&d, 0, &out);
    if (escapes_surrogate((const char *)data, size)) {
        check_surrogate_copy(&out);
    } else {
        buf_append_char(&out, ' ');
        json_tokener_reset(tok);
        json_object *again = json_tokener_parse_ex(tok, out.data, (int)out.len);
        if (json_tokener_get_error(tok) != json_tokener_success || !json_object_equal(o, again))
            abort(); /* the copy says something else than the original */
        json_object_put(again);
    }
    buf_free(&out);
    json_object_put(o);
    json_tokener_free(tok);
    return 0;
}

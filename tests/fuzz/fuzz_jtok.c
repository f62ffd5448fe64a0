/* lib/jtok against json-c: never crash, tokens stay inside the input and
 * nest properly, and every document jtok accepts json-c (strict) accepts. */
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jtok.h"

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
    json_object_put(o);
    json_tokener_free(tok);
    return 0;
}

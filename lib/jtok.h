/* A strict, allocation-light JSON tokenizer for the hot path.
 *
 * json-c builds a tree of heap objects: for a 1 KB chat request that is
 * most of a request's CPU. Here one pass validates the document (RFC 8259:
 * strings, escapes, UTF-8, numbers, literals, nesting up to 128 levels) and
 * records a flat array of tokens pointing into the original bytes, so the
 * gateway can read the few fields it needs and forward everything else
 * byte for byte. Input is untrusted; it is fuzzed (tests/fuzz/fuzz_jtok.c).
 *
 * Tokens are stored in document order. An object's children alternate key,
 * value; an array's children are its values. `next` is the index just past
 * a token's subtree, so skipping a value is O(1). */
#ifndef BRIDLE_JTOK_H
#define BRIDLE_JTOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

typedef enum {
    JT_ABSENT = 0, /* what jdoc_type says of JT_NONE */
    JT_OBJECT = 1,
    JT_ARRAY,
    JT_STRING,
    JT_NUMBER,
    JT_TRUE,
    JT_FALSE,
    JT_NULL
} jt_type;

typedef struct jtok {
    uint8_t type;    /* jt_type */
    uint8_t escaped; /* string contains backslash escapes */
    uint32_t start;  /* byte offset; for strings, just after the opening quote */
    uint32_t end;    /* byte offset just past the value (strings: at the closing quote) */
    uint32_t next;   /* index of the token after this subtree */
    uint32_t size;   /* objects: number of keys; arrays: number of values */
} jtok;

#define JT_NONE UINT32_MAX /* "no such token" */
#define JTOK_MAX_DEPTH 128 /* nesting deeper than this is refused */

typedef struct jdoc {
    const char *src;
    size_t len;
    jtok *t;
    uint32_t n, cap;
    uint32_t max_tokens; /* 0 = 1,000,000 */
} jdoc;

#define JDOC_INIT                                                                                  \
    {                                                                                              \
        NULL, 0, NULL, 0, 0, 0                                                                     \
    }

/* Tokenizes s[0..len). Returns 0, or -1 with a message (and the byte
 * offset of the problem in *err_pos) for invalid JSON. Leading and
 * trailing whitespace is allowed; anything else after the value is not.
 * The token array is reused across calls; jdoc_free releases it. */
int jdoc_parse(jdoc *d, const char *s, size_t len, char *err, size_t errlen, size_t *err_pos);
void jdoc_free(jdoc *d);

/* The value of `key` in the object at index obj, or JT_NONE. Keys with
 * escapes are compared after unescaping. */
uint32_t jdoc_get(const jdoc *d, uint32_t obj, const char *key);
/* The same, but the last of a repeated key: what json-c and most parsers
 * read, for values bridle translates rather than validates. */
uint32_t jdoc_get_last(const jdoc *d, uint32_t obj, const char *key);
/* The i-th value of the array at index arr, or JT_NONE. */
uint32_t jdoc_index(const jdoc *d, uint32_t arr, uint32_t i);

/* Iteration: for (uint32_t k = jdoc_first(d, obj); k != JT_NONE; k = jdoc_next(d, obj, k))
 * visits an object's keys (its value is k + 1) or an array's values. */
uint32_t jdoc_first(const jdoc *d, uint32_t container);
uint32_t jdoc_next(const jdoc *d, uint32_t container, uint32_t child);

static inline jt_type jdoc_type(const jdoc *d, uint32_t i)
{
    return i == JT_NONE ? JT_ABSENT : (jt_type)d->t[i].type;
}

/* String token equals lit (unescaping if needed). */
bool jdoc_str_eq(const jdoc *d, uint32_t i, const char *lit);
/* Appends the unescaped string value to out (UTF-8). */
void jdoc_str_append(const jdoc *d, uint32_t i, buf *out);
/* Integer value of a number token without fraction or exponent. */
bool jdoc_int64(const jdoc *d, uint32_t i, int64_t *out);
/* Any number token as a double. */
bool jdoc_double(const jdoc *d, uint32_t i, double *out);
/* The raw bytes of a token as they appear in the source (strings include
 * their quotes), for forwarding untouched. */
const char *jdoc_raw(const jdoc *d, uint32_t i, size_t *len);
/* "object", "array", "string", "number", "boolean", "null". */
const char *jdoc_type_name(const jdoc *d, uint32_t i);

/* Appends the raw bytes of a value (jdoc_raw) to out: a client's value
 * passed through untouched, with no re-serialising. */
void jdoc_raw_append(const jdoc *d, uint32_t i, buf *out);
/* The unescaped bytes of a string token and their length: a pointer into
 * the source when the string has no escapes, else into scratch (reset and
 * refilled, so valid until scratch changes). May contain NUL (\u0000). */
const char *jdoc_str_view(const jdoc *d, uint32_t i, buf *scratch, size_t *len);
/* Two string tokens hold the same text (after unescaping). */
bool jdoc_str_same(const jdoc *d, uint32_t a, uint32_t b);
/* Appends a string token as a JSON string literal: its raw bytes, which
 * jdoc_parse validated, except when it escapes a surrogate: then written
 * from its unescaped text, so a lone one becomes U+FFFD (as json-c reads
 * it) rather than reach a parser that refuses it. */
void jdoc_str_append_json(const jdoc *d, uint32_t i, buf *out);
/* Appends value i as JSON: its raw bytes, a client's value passed through
 * untouched, with no re-serialising; token by token, strings as by
 * jdoc_str_append_json, only when it escapes a surrogate. */
void jdoc_json_append(const jdoc *d, uint32_t i, buf *out);

#endif

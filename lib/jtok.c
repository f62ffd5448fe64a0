#include "lib/jtok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH JTOK_MAX_DEPTH

typedef struct parser {
    jdoc *d;
    const unsigned char *s;
    size_t pos, len;
    const char *err;
} parser;

static bool fail(parser *p, const char *msg)
{
    if (!p->err) p->err = msg;
    return false;
}

static inline void skip_ws(parser *p)
{
    if (p->pos < p->len && p->s[p->pos] > ' ') return; /* the usual case: compact JSON */
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') return;
        p->pos++;
    }
}

static uint32_t push(parser *p, jt_type type, size_t start)
{
    jdoc *d = p->d;
    uint32_t limit = d->max_tokens ? d->max_tokens : 1000000;
    if (d->n >= limit) {
        fail(p, "too many JSON values");
        return JT_NONE;
    }
    if (d->n == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 64;
        jtok *t = realloc(d->t, sizeof *t * cap);
        if (!t) abort();
        d->t = t;
        d->cap = cap;
    }
    jtok *t = &d->t[d->n];
    t->type = (uint8_t)type;
    t->escaped = 0;
    t->start = (uint32_t)start;
    t->end = (uint32_t)start;
    t->next = d->n + 1;
    t->size = 0;
    return d->n++;
}

/* Length of a valid UTF-8 sequence at s (up to n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (n < need || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return need;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Bytes a string scan must stop at: '"', '\\', controls, non-ASCII. */
static const unsigned char stop_byte[256] = {
    [0 ... 0x1F] = 1,
    ['"'] = 1,
    ['\\'] = 1,
    [0x80 ... 0xFF] = 1,
};

/* The stop bytes among the 8 at q (SWAR: per byte, the high bit of the
 * result is set for bytes < 0x20, == '"', == '\\' or >= 0x80). The first
 * one flagged is exact: the borrows that can flag others only run from it
 * towards the more significant bytes. */
static inline uint64_t stop_mask(const unsigned char *q)
{
    uint64_t v;
    memcpy(&v, q, 8);
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = v ^ (ones * '"'), bslash = v ^ (ones * '\\');
    uint64_t below_space = (v - ones * 0x20) & ~v;
    uint64_t is_quote = (quote - ones) & ~quote;
    uint64_t is_bslash = (bslash - ones) & ~bslash;
    return (below_space | is_quote | is_bslash | v) & highs;
}

static bool parse_string(parser *p)
{
    uint32_t i = push(p, JT_STRING, p->pos + 1);
    if (i == JT_NONE) return false;
    p->pos++; /* opening quote */
    bool esc = false;
    while (p->pos < p->len) {
        /* the common case: a run of plain ASCII, eight bytes at a time */
        const unsigned char *s = p->s, *q = s + p->pos, *end = s + p->len;
        for (uint64_t m; q + 8 <= end; q += 8)
            if ((m = stop_mask(q))) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                q += __builtin_ctzll(m) >> 3; /* straight to it, no byte loop */
#endif
                break;
            }
        while (q < end && !stop_byte[*q])
            q++;
        p->pos = (size_t)(q - s);
        if (p->pos >= p->len) break;
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->d->t[i].end = (uint32_t)p->pos;
            p->d->t[i].escaped = esc;
            p->pos++;
            return true;
        }
        if (c < 0x20) return fail(p, "control character in a string (escape it)");
        if (c == '\\') {
            esc = true;
            if (p->pos + 1 >= p->len) break;
            unsigned char e = p->s[p->pos + 1];
            if (e == 'u') {
                if (p->pos + 6 > p->len) break;
                for (int k = 2; k < 6; k++)
                    if (hexval(p->s[p->pos + (size_t)k]) < 0)
                        return fail(p, "bad \\u escape in a string");
                p->pos += 6;
            } else if (strchr("\"\\/bfnrt", e) && e) {
                p->pos += 2;
            } else {
                return fail(p, "bad escape in a string");
            }
            continue;
        }
        if (c < 0x80) {
            p->pos++;
            continue;
        }
        size_t n = utf8_len(p->s + p->pos, p->len - p->pos);
        if (!n) return fail(p, "invalid UTF-8 in a string");
        p->pos += n;
    }
    return fail(p, "unterminated string");
}

static bool digits(parser *p)
{
    size_t start = p->pos;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
        p->pos++;
    return p->pos > start;
}

static bool parse_number(parser *p)
{
    uint32_t i = push(p, JT_NUMBER, p->pos);
    if (i == JT_NONE) return false;
    if (p->s[p->pos] == '-') p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '0')
        p->pos++;
    else if (!digits(p))
        return fail(p, "bad number");
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        if (!digits(p)) return fail(p, "bad number: digits expected after '.'");
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (!digits(p)) return fail(p, "bad number: digits expected in the exponent");
    }
    p->d->t[i].end = (uint32_t)p->pos;
    return true;
}

static bool parse_literal(parser *p, const char *lit, jt_type type)
{
    size_t n = strlen(lit);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, lit, n) != 0)
        return fail(p, "unexpected character");
    uint32_t i = push(p, type, p->pos);
    if (i == JT_NONE) return false;
    p->pos += n;
    p->d->t[i].end = (uint32_t)p->pos;
    return true;
}

static bool parse_value(parser *p, int depth);

static bool parse_container(parser *p, int depth, bool object)
{
    if (depth >= MAX_DEPTH) return fail(p, "nested too deeply");
    uint32_t i = push(p, object ? JT_OBJECT : JT_ARRAY, p->pos);
    if (i == JT_NONE) return false;
    p->pos++;
    skip_ws(p);
    char close = object ? '}' : ']';
    uint32_t size = 0;
    if (p->pos < p->len && p->s[p->pos] == (unsigned char)close) {
        p->pos++;
    } else {
        for (;;) {
            skip_ws(p);
            if (object) {
                if (p->pos >= p->len || p->s[p->pos] != '"')
                    return fail(p, "expected a string key");
                if (!parse_string(p)) return false;
                skip_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':')
                    return fail(p, "expected ':' after a key");
                p->pos++;
                skip_ws(p);
            }
            if (!parse_value(p, depth + 1)) return false;
            size++;
            skip_ws(p);
            if (p->pos >= p->len)
                return fail(p, object ? "unterminated object" : "unterminated array");
            if (p->s[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->s[p->pos] == (unsigned char)close) {
                p->pos++;
                break;
            }
            return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    jtok *t = &p->d->t[i];
    t->end = (uint32_t)p->pos;
    t->size = size;
    t->next = p->d->n;
    return true;
}

static bool parse_value(parser *p, int depth)
{
    skip_ws(p);
    if (p->pos >= p->len) return fail(p, "unexpected end of input");
    unsigned char c = p->s[p->pos];
    switch (c) {
    case '{':
        return parse_container(p, depth, true);
    case '[':
        return parse_container(p, depth, false);
    case '"':
        return parse_string(p);
    case 't':
        return parse_literal(p, "true", JT_TRUE);
    case 'f':
        return parse_literal(p, "false", JT_FALSE);
    case 'n':
        return parse_literal(p, "null", JT_NULL);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p);
        return fail(p, "unexpected character");
    }
}

int jdoc_parse(jdoc *d, const char *s, size_t len, char *err, size_t errlen, size_t *err_pos)
{
    d->src = s;
    d->len = len;
    d->n = 0;
    parser p = {d, (const unsigned char *)s, 0, len, NULL};
    if (len >= UINT32_MAX)
        p.err = "document too large";
    else if (parse_value(&p, 0)) {
        skip_ws(&p);
        if (p.pos != len) p.err = "unexpected data after the JSON value";
    }
    if (!p.err) return 0;
    if (err && errlen) snprintf(err, errlen, "%s", p.err);
    if (err_pos) *err_pos = p.pos;
    d->n = 0;
    return -1;
}

void jdoc_free(jdoc *d)
{
    free(d->t);
    d->t = NULL;
    d->n = d->cap = 0;
}

uint32_t jdoc_first(const jdoc *d, uint32_t c)
{
    if (c == JT_NONE || c >= d->n || d->t[c].size == 0) return JT_NONE;
    return c + 1;
}

uint32_t jdoc_next(const jdoc *d, uint32_t c, uint32_t child)
{
    uint32_t n = d->t[child].next;
    if (d->t[c].type == JT_OBJECT) n = d->t[child + 1].next; /* skip the key's value */
    return n < d->t[c].next ? n : JT_NONE;
}

/* Decodes the escape at s (after the backslash) into out; returns bytes consumed. */
static size_t unescape_one(const char *s, size_t n, buf *out)
{
    switch (s[0]) {
    case 'b':
        buf_append_char(out, '\b');
        return 1;
    case 'f':
        buf_append_char(out, '\f');
        return 1;
    case 'n':
        buf_append_char(out, '\n');
        return 1;
    case 'r':
        buf_append_char(out, '\r');
        return 1;
    case 't':
        buf_append_char(out, '\t');
        return 1;
    case 'u':
        break;
    default:
        buf_append_char(out, s[0]);
        return 1;
    }
    if (n < 5) return n;
    unsigned cp = 0;
    for (int k = 1; k < 5; k++)
        cp = cp * 16 + (unsigned)hexval((unsigned char)s[k]);
    size_t used = 5;
    if (cp >= 0xD800 && cp <= 0xDBFF && n >= 11 && s[5] == '\\' && s[6] == 'u') {
        unsigned lo = 0;
        for (int k = 7; k < 11; k++)
            lo = lo * 16 + (unsigned)hexval((unsigned char)s[k]);
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            used = 11;
        }
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* a lone surrogate */
    char u[4];
    size_t k;
    if (cp < 0x80) {
        u[0] = (char)cp;
        k = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        k = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        k = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        k = 4;
    }
    buf_append(out, u, k);
    return used;
}

void jdoc_str_append(const jdoc *d, uint32_t i, buf *out)
{
    const jtok *t = &d->t[i];
    const char *s = d->src + t->start;
    size_t n = t->end - t->start;
    if (!t->escaped) {
        buf_append(out, s, n);
        return;
    }
    size_t run = 0;
    for (size_t k = 0; k < n;) {
        if (s[k] != '\\') {
            k++;
            run++;
            continue;
        }
        buf_append(out, s + k - run, run);
        run = 0;
        k += 1 + unescape_one(s + k + 1, n - k - 1, out);
    }
    buf_append(out, s + n - run, run);
}

bool jdoc_str_eq(const jdoc *d, uint32_t i, const char *lit)
{
    if (i == JT_NONE || d->t[i].type != JT_STRING) return false;
    const jtok *t = &d->t[i];
    size_t n = t->end - t->start, ln = strlen(lit);
    if (!t->escaped) return n == ln && memcmp(d->src + t->start, lit, n) == 0;
    buf tmp = BUF_INIT;
    jdoc_str_append(d, i, &tmp);
    bool eq = tmp.len == ln && memcmp(tmp.data, lit, ln) == 0;
    buf_free(&tmp);
    return eq;
}

static bool key_is(const jdoc *d, uint32_t k, const char *key, size_t ln)
{
    const jtok *t = &d->t[k];
    return t->escaped ? jdoc_str_eq(d, k, key)
                      : t->end - t->start == ln && memcmp(d->src + t->start, key, ln) == 0;
}

uint32_t jdoc_get(const jdoc *d, uint32_t obj, const char *key)
{
    if (obj == JT_NONE || obj >= d->n || d->t[obj].type != JT_OBJECT) return JT_NONE;
    size_t ln = strlen(key); /* once, not once per key compared */
    for (uint32_t k = jdoc_first(d, obj); k != JT_NONE; k = jdoc_next(d, obj, k))
        if (key_is(d, k, key, ln)) return k + 1;
    return JT_NONE;
}

uint32_t jdoc_get_last(const jdoc *d, uint32_t obj, const char *key)
{
    if (obj == JT_NONE || obj >= d->n || d->t[obj].type != JT_OBJECT) return JT_NONE;
    size_t ln = strlen(key);
    uint32_t found = JT_NONE;
    for (uint32_t k = jdoc_first(d, obj); k != JT_NONE; k = jdoc_next(d, obj, k))
        if (key_is(d, k, key, ln)) found = k + 1;
    return found;
}

uint32_t jdoc_index(const jdoc *d, uint32_t arr, uint32_t i)
{
    if (arr == JT_NONE || arr >= d->n || d->t[arr].type != JT_ARRAY || i >= d->t[arr].size)
        return JT_NONE;
    uint32_t v = jdoc_first(d, arr);
    while (i-- > 0 && v != JT_NONE)
        v = jdoc_next(d, arr, v);
    return v;
}

bool jdoc_int64(const jdoc *d, uint32_t i, int64_t *out)
{
    if (i == JT_NONE || d->t[i].type != JT_NUMBER) return false;
    const char *s = d->src + d->t[i].start, *e = d->src + d->t[i].end;
    bool neg = *s == '-';
    if (neg) s++;
    uint64_t v = 0;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9') return false; /* a fraction or exponent */
        if (v > (UINT64_MAX - 9) / 10) return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (v > (uint64_t)INT64_MAX + (neg ? 1 : 0)) return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

bool jdoc_double(const jdoc *d, uint32_t i, double *out)
{
    if (i == JT_NONE || d->t[i].type != JT_NUMBER) return false;
    char small[64];
    size_t n = d->t[i].end - d->t[i].start;
    char *tmp = n < sizeof small ? small : malloc(n + 1); /* long numbers are legal JSON */
    if (!tmp) return false;
    memcpy(tmp, d->src + d->t[i].start, n);
    tmp[n] = '\0';
    *out = strtod(tmp, NULL);
    if (tmp != small) free(tmp);
    return true;
}

const char *jdoc_raw(const jdoc *d, uint32_t i, size_t *len)
{
    const jtok *t = &d->t[i];
    if (t->type == JT_STRING) {
        *len = (size_t)(t->end - t->start) + 2;
        return d->src + t->start - 1;
    }
    *len = t->end - t->start;
    return d->src + t->start;
}

const char *jdoc_type_name(const jdoc *d, uint32_t i)
{
    switch (jdoc_type(d, i)) {
    case JT_OBJECT:
        return "object";
    case JT_ARRAY:
        return "array";
    case JT_STRING:
        return "string";
    case JT_NUMBER:
        return "number";
    case JT_TRUE:
    case JT_FALSE:
        return "boolean";
    case JT_NULL:
        return "null";
    case JT_ABSENT:
        return "nothing";
    default:
        return "nothing";
    }
}

void jdoc_raw_append(const jdoc *d, uint32_t i, buf *out)
{
    size_t len;
    const char *raw = jdoc_raw(d, i, &len);
    buf_append(out, raw, len);
}

const char *jdoc_str_view(const jdoc *d, uint32_t i, buf *scratch, size_t *len)
{
    const jtok *t = &d->t[i];
    if (!t->escaped) {
        *len = t->end - t->start;
        return d->src + t->start;
    }
    buf_reset(scratch);
    jdoc_str_append(d, i, scratch);
    *len = scratch->len;
    return scratch->data;
}

bool jdoc_str_same(const jdoc *d, uint32_t a, uint32_t b)
{
    if (jdoc_type(d, a) != JT_STRING || jdoc_type(d, b) != JT_STRING) return false;
    const jtok *ta = &d->t[a], *tb = &d->t[b];
    if (!ta->escaped && !tb->escaped)
        return ta->end - ta->start == tb->end - tb->start &&
               memcmp(d->src + ta->start, d->src + tb->start, ta->end - ta->start) == 0;
    buf x = BUF_INIT, y = BUF_INIT;
    jdoc_str_append(d, a, &x);
    jdoc_str_append(d, b, &y);
    bool same = x.len == y.len && (x.len == 0 || memcmp(x.data, y.data, x.len) == 0);
    buf_free(&x);
    buf_free(&y);
    return same;
}

/* A \uD800-\uDFFF escape somewhere in s[0..n): a surrogate, maybe lone. */
static bool has_surrogate_escape(const char *s, size_t n)
{
    for (const char *p = s; (p = memmem(p, (size_t)(s + n - p), "\\u", 2)) != NULL; p += 2)
        if (p + 2 < s + n && (p[2] == 'd' || p[2] == 'D')) return true;
    return false;
}

void jdoc_str_append_json(const jdoc *d, uint32_t i, buf *out)
{
    const jtok *t = &d->t[i];
    if (!t->escaped || !has_surrogate_escape(d->src + t->start, t->end - t->start)) {
        jdoc_raw_append(d, i, out);
        return;
    }
    buf text = BUF_INIT;
    jdoc_str_append(d, i, &text);
    buf_append_json_str(out, text.data ? text.data : "", text.len);
    buf_free(&text);
}

/* Writes value i token by token (jdoc_json_append's slow path). */
static void json_append_tokens(const jdoc *d, uint32_t i, buf *out)
{
    jt_type type = jdoc_type(d, i);
    if (type == JT_STRING) {
        jdoc_str_append_json(d, i, out);
        return;
    }
    if (type != JT_OBJECT && type != JT_ARRAY) {
        jdoc_raw_append(d, i, out);
        return;
    }
    buf_append_char(out, type == JT_OBJECT ? '{' : '[');
    for (uint32_t c = jdoc_first(d, i); c != JT_NONE; c = jdoc_next(d, i, c)) {
        if (c != i + 1) buf_append_char(out, ',');
        json_append_tokens(d, c, out);
        if (type != JT_OBJECT) continue;
        buf_append_char(out, ':');
        json_append_tokens(d, c + 1, out);
    }
    buf_append_char(out, type == JT_OBJECT ? '}' : ']');
}

void jdoc_json_append(const jdoc *d, uint32_t i, buf *out)
{
    size_t len;
    const char *raw = jdoc_raw(d, i, &len);
    if (has_surrogate_escape(raw, len))
        json_append_tokens(d, i, out);
    else
        buf_append(out, raw, len);
}

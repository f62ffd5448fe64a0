#include "lib/buf.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "bridle: out of memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}

void buf_reserve(buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void buf_append(buf *b, const void *data, size_t len)
{
    buf_reserve(b, len);
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void buf_append_str(buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_append_char(buf *b, char c)
{
    buf_append(b, &c, 1);
}

void buf_append_u64(buf *b, uint64_t v)
{
    char digits[24], *p = util_u64_digits(v, digits + sizeof digits);
    buf_append(b, p, (size_t)(digits + sizeof digits - p));
}

void buf_vprintf(buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) return;
    buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

/* True when one of the 8 bytes in w is below 0x20, '"' or '\\': the
 * bytes a JSON string must escape (SWAR "has zero byte" tests). */
static inline bool word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = w ^ (ones * '"'), bslash = w ^ (ones * '\\');
    uint64_t ctl = (w - ones * 0x20) & ~w;
    uint64_t q = (quote - ones) & ~quote;
    uint64_t bs = (bslash - ones) & ~bslash;
    return ((ctl | q | bs) & highs) != 0;
}

static void append_escape(buf *b, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    switch (c) {
    case '"':
        buf_append(b, "\\\"", 2);
        break;
    case '\\':
        buf_append(b, "\\\\", 2);
        break;
    case '\n':
        buf_append(b, "\\n", 2);
        break;
    case '\r':
        buf_append(b, "\\r", 2);
        break;
    case '\t':
        buf_append(b, "\\t", 2);
        break;
    default: {
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        buf_append(b, esc, 6);
    }
    }
}

/* Clean stretches are found 8 bytes at a time and copied straight into
 * reserved space: prompts are long and rarely need escaping. */
void buf_append_json_str(buf *b, const char *s, size_t len)
{
    buf_reserve(b, len + 2);
    char *out = b->data + b->len;
    *out++ = '"';
    size_t i = 0, start = 0;
    while (i < len) {
        if (len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!word_needs_escape(w)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        memcpy(out, s + start, i - start);
        b->len = (size_t)(out + (i - start) - b->data);
        append_escape(b, c);
        start = ++i;
        buf_reserve(b, len - start + 2);
        out = b->data + b->len;
    }
    memcpy(out, s + start, len - start);
    out += len - start;
    *out++ = '"';
    *out = '\0';
    b->len = (size_t)(out - b->data);
}

void buf_consume(buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data) b->data[b->len] = '\0';
}

void buf_reset(buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void buf_free(buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *buf_steal(buf *b)
{
    if (!b->data) buf_reserve(b, 0), b->data[0] = '\0';
    char *s = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

void buf_add_header(buf *head, const char *name, const char *value)
{
    size_t n = strcspn(name, "\r\n: \t"), v = strcspn(value, "\r\n");
    if (!n || name[n] || value[v]) return; /* the spans are the lengths when clean */
    buf_reserve(head, n + v + 4);
    char *p = head->data + head->len;
    memcpy(p, name, n);
    memcpy(p + n, ": ", 2);
    memcpy(p + n + 2, value, v);
    memcpy(p + n + 2 + v, "\r\n", 2);
    head->len += n + v + 4;
    head->data[head->len] = '\0';
}

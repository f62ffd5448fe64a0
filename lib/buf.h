/* A growable byte buffer. Always NUL-terminated so it can be read as a C
 * string; len never counts the terminator. Allocation failure aborts (the
 * process cannot serve anyone without memory). */
#ifndef BRIDLE_BUF_H
#define BRIDLE_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
} buf;

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void buf_reserve(buf *b, size_t extra);
void buf_append(buf *b, const void *data, size_t len);
void buf_append_str(buf *b, const char *s);
void buf_append_char(buf *b, char c);
/* Appends the decimal digits of v (no printf: hot paths). */
void buf_append_u64(buf *b, uint64_t v);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(buf *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal, quotes included. */
void buf_append_json_str(buf *b, const char *s, size_t len);
/* Drops the first n bytes. */
void buf_consume(buf *b, size_t n);
void buf_reset(buf *b);
void buf_free(buf *b);
/* Returns the contents as a malloc'd string and empties b. */
char *buf_steal(buf *b);

/* Appends the header line "name: value\r\n". Nothing may break a line: a
 * name must be a token (no CR, LF, colon, space or tab; not empty) and a
 * value holds no CR or LF at all, else the line is dropped whole.
 * (evhttp_add_header() lets a value through with CRLF + space, obsolete
 * folding, and even "\r\n\r\n <body>": response splitting.) */
void buf_add_header(buf *head, const char *name, const char *value);

#endif

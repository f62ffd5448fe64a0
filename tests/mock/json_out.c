/* Writing JSON by hand: json-c objects cost an allocation per node, and the
 * replies here are small and fixed in shape, so the hot path prints them. */
#include "tests/mock/mock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Appends `s` as a quoted JSON string, escaping what RFC 8259 requires. */
void json_str(struct evbuffer *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char buf[512];
    size_t n = 0;
    buf[n++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (n > sizeof(buf) - 8) {
            evbuffer_add(out, buf, n);
            n = 0;
        }
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
        } else if (c < 0x20) {
            memcpy(buf + n, "\\u00", 4);
            buf[n + 4] = hex[c >> 4];
            buf[n + 5] = hex[c & 15];
            n += 6;
        } else {
            buf[n++] = (char)c;
        }
    }
    buf[n++] = '"';
    evbuffer_add(out, buf, n);
}

void json_long(struct evbuffer *out, long v)
{
    char buf[24], *p = buf + sizeof(buf);
    unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0) *--p = '-';
    evbuffer_add(out, p, (size_t)(buf + sizeof(buf) - p));
}

void json_cstr(struct evbuffer *out, const char *s)
{
    json_str(out, s, strlen(s));
}

/* RFC 3339 UTC time with nanoseconds, the way Ollama prints created_at. */
void iso8601_now(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%09ldZ", ts.tv_nsec);
}

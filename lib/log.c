#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static log_level current_level = LOG_INFO;
static bool json_lines;
static char worker_tag[24];  /* text: "w1 "; "" in a single process or the supervisor */
static char worker_json[24]; /* JSON: "\"worker\":1" */

void log_set_worker(int index)
{
    worker_tag[0] = worker_json[0] = '\0';
    if (index < 0) return;
    snprintf(worker_tag, sizeof worker_tag, "w%d ", index);
    snprintf(worker_json, sizeof worker_json, "\"worker\":%d", index);
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_json(bool on)
{
    json_lines = on;
}

/* "2026-12-07T05:18:59.974Z" */
static void stamp_now(char out[32])
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
}

/* s as a JSON string literal into out (room for n bytes), cut to fit;
 * returns the length written. Standalone: the lowest module needs no buf. */
static size_t json_quote(char *out, size_t n, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len && o + 8 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    return o;
}

/* Writes one JSON line: ts, level, msg, then the extra members. */
static void json_line(log_level level, const char *msg, size_t len, const char *extra,
                      size_t extra_len)
{
    char stamp[32], quoted[4200];
    stamp_now(stamp);
    size_t q = json_quote(quoted, sizeof quoted, msg, len);
    fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":%.*s%s%.*s}\n", stamp,
            level_names[level], (int)q, quoted, extra_len ? "," : "", (int)extra_len,
            extra ? extra : "");
}

void log_access(const char *fields, size_t len)
{
    if (LOG_INFO < current_level) return;
    if (json_lines) {
        json_line(LOG_INFO, "access", 6, fields, len);
        return;
    }
    char stamp[32];
    stamp_now(stamp);
    fprintf(stderr, "%s info access {%.*s}\n", stamp, (int)len, fields);
}

void log_set_level(log_level level)
{
    current_level = level;
}

log_level log_get_level(void)
{
    return current_level;
}

void log_msg(log_level level, const char *fmt, ...)
{
    if (level < current_level) return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (json_lines) {
        json_line(level, line, len, worker_json, strlen(worker_json));
        return;
    }
    char stamp[32];
    stamp_now(stamp);
    fprintf(stderr, "%s %s %s%s\n", stamp, level_names[level], worker_tag, line);
}

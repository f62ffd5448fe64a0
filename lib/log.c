#include "lib/log.h"

#include "lib/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

static log_level current_level = LOG_INFO;
static bool json_lines;

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

/* Writes one JSON line: ts, level, msg, then the extra members. */
static void json_line(log_level level, const char *msg, size_t len, const char *extra,
                      size_t extra_len)
{
    char stamp[32];
    stamp_now(stamp);
    buf b = BUF_INIT;
    buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", stamp, level_names[level]);
    buf_append_json_str(&b, msg, len);
    if (extra_len) {
        buf_append_char(&b, ',');
        buf_append(&b, extra, extra_len);
    }
    buf_append_str(&b, "}\n");
    fwrite(b.data, 1, b.len, stderr);
    buf_free(&b);
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
        json_line(level, line, len, NULL, 0);
        return;
    }
    char stamp[32];
    stamp_now(stamp);
    fprintf(stderr, "%s %s %s\n", stamp, level_names[level], line);
}

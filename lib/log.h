/* Logging to stderr, one line per event, with a level and a monotonic-free
 * wall-clock stamp. Never pass a secret (API key, client key) to these. */
#ifndef BRIDLE_LOG_H
#define BRIDLE_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_set_level(log_level level);
log_level log_get_level(void);
/* JSON lines instead of text: {"ts":..,"level":..,"msg":..}. */
void log_set_json(bool on);
/* Under a supervisor (server/workers.h): every line names worker `index`
 * ("w1 " before the message; "worker": 1 in JSON). -1: none. */
void log_set_worker(int index);
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One access line at info level: `fields` are JSON object members
 * ("\"k\":v,...", no braces). Text: `ts info access {fields}`; JSON: the
 * fields beside ts, level and "msg":"access". */
void log_access(const char *fields, size_t len);

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() <= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__);                         \
    } while (0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif

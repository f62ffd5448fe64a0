/* A batch input file (JSONL, OpenAI's Batch API shape), checked whole at
 * upload: every line a JSON object {"custom_id", "method", "url", "body"},
 * custom_id a unique non-empty string, method POST, url one endpoint bridle
 * batches (the same on every line), and a body that passes the validation
 * of a live request to that endpoint (router/canon.h). The first bad line
 * is named by its number ("line 2: ..."). */
#ifndef BRIDLE_BATCH_INPUT_H
#define BRIDLE_BATCH_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BATCH_MAX_LINES 50000
#define BATCH_MAX_BYTES (200 * 1024 * 1024)

typedef struct batch_input_info {
    int lines;          /* requests in the file */
    char endpoint[40];  /* the url they name, e.g. "/v1/chat/completions" */
    int64_t worst_pusd; /* the sum of cost(line) (batch_input_check_cost), else 0 */
} batch_input_info;

/* What one line's body (a valid request) may cost at most, in pico-dollars. */
typedef int64_t (*batch_line_cost)(void *ctx, const char *body, size_t len);

/* A set of custom_ids: a batch's must be unique (an Anthropic batch's
 * too, server/batches.c). Aborts when out of memory, as the check does. */
typedef struct batch_ids batch_ids;
batch_ids *batch_ids_new(void);
/* Adds id[0..n); false when it was there already. */
bool batch_ids_add(batch_ids *s, const char *id, size_t n);
void batch_ids_free(batch_ids *s);

/* Checks data[0..len). Returns 0 with info filled, or -1 with a message
 * (naming the line) in err. */
int batch_input_check(const char *data, size_t len, batch_input_info *info, char *err,
                      size_t errlen);
/* batch_input_check, and info->worst_pusd the sum of cost(ctx, body) over
 * the lines (a batch reserves it at creation). */
int batch_input_check_cost(const char *data, size_t len, batch_input_info *info,
                           batch_line_cost cost, void *ctx, char *err, size_t errlen);

#endif

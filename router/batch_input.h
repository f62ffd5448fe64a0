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

#define BATCH_MAX_LINES 50000
#define BATCH_MAX_BYTES (200 * 1024 * 1024)

typedef struct batch_input_info {
    int lines;         /* requests in the file */
    char endpoint[40]; /* the url they name, e.g. "/v1/chat/completions" */
} batch_input_info;

/* Checks data[0..len). Returns 0 with info filled, or -1 with a message
 * (naming the line) in err. */
int batch_input_check(const char *data, size_t len, batch_input_info *info, char *err,
                      size_t errlen);

#endif

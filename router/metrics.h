/* What the runs did, for GET /metrics (server/metrics.c): per series of
 * (operation, requested model, model that answered, provider, status) the
 * requests,
 * their cost, and histograms of duration, time to first token and tokens,
 * named after the OpenTelemetry GenAI semantic conventions in their
 * Prometheus form (gen_ai_server_request_duration_seconds, ...). One per
 * process, on the loop's thread. The series are bounded: labels come from
 * the config (a model the gateway does not serve is ""), and past
 * METRICS_MAX_SERIES new ones are counted under "(other)". */
#ifndef BRIDLE_METRICS_H
#define BRIDLE_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/buf.h"

typedef struct metrics metrics;

/* One finished request. Strings may be "" (none); they are copied. */
typedef struct metrics_sample {
    const char *request_model;  /* the model or route the client asked for, once planned */
    const char *response_model; /* the model that answered (or was tried last) */
    const char *provider;
    int status;          /* the HTTP status the client got (499: it left) */
    bool upstream_usage; /* tokens below were used by a provider call (not a copy) */
    bool embeddings;     /* POST /v1/embeddings: gen_ai_operation_name "embeddings", else "chat" */
    int64_t input_tokens, output_tokens;
    int64_t cost_pusd;
    int64_t duration_us, ttft_us; /* ttft_us < 0: no first token (not streamed) */
} metrics_sample;

metrics *metrics_new(void);
void metrics_free(metrics *m);
void metrics_record(metrics *m, const metrics_sample *s);
/* Appends the families in Prometheus text format (HELP, TYPE, samples):
 * gen_ai_client_token_usage, gen_ai_server_request_duration_seconds,
 * gen_ai_server_time_to_first_token_seconds, bridle_requests_total and
 * bridle_cost_usd_total. */
void metrics_render(const metrics *m, buf *out);
/* Appends a label value with Prometheus's escapes (\\, \", \n). */
void metrics_label_value(buf *out, const char *v);

#endif

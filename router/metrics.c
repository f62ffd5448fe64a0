/* Request metrics (router/metrics.h). */
#include "router/metrics.h"

#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

#define METRICS_MAX_SERIES 1024
#define LABEL_MAX 96

/* Bucket bounds: the semantic conventions' advisory ones. */
static const double duration_bounds[] = {0.01, 0.02, 0.04, 0.08,  0.16,  0.32,  0.64,
                                         1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92};
static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                     0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0};
static const double token_bounds[] = {1,     4,     16,     64,      256,     1024,     4096,
                                      16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864};
#define N_DURATION (sizeof duration_bounds / sizeof *duration_bounds)
#define N_TTFT (sizeof ttft_bounds / sizeof *ttft_bounds)
#define N_TOKENS (sizeof token_bounds / sizeof *token_bounds)

typedef struct hist {
    int64_t n[N_TTFT + 1]; /* per bucket (not cumulative), the last past every bound */
    int64_t count;
    double sum;
} hist;

typedef struct series {
    char request_model[LABEL_MAX], response_model[LABEL_MAX], provider[LABEL_MAX];
    int status;
    bool embeddings; /* gen_ai_operation_name "embeddings" (input tokens only), else "chat" */
    int64_t requests, cost_pusd;
    hist duration, ttft, input, output;
} series;

struct metrics {
    series *s;
    int n, cap;
};

metrics *metrics_new(void)
{
    return calloc(1, sizeof(metrics));
}

void metrics_free(metrics *m)
{
    if (!m) return;
    free(m->s);
    free(m);
}

static void hist_add(hist *h, const double *bounds, size_t nb, double v)
{
    size_t i = 0;
    while (i < nb && v > bounds[i])
        i++;
    h->n[i]++;
    h->count++;
    h->sum += v;
}

static void label_copy(char *dst, const char *src)
{
    size_t n = src ? strnlen(src, LABEL_MAX - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

static series *series_of(metrics *m, const metrics_sample *x)
{
    for (int i = 0; i < m->n; i++) {
        series *s = &m->s[i];
        if (s->status == x->status && s->embeddings == x->embeddings &&
            strcmp(s->response_model, x->response_model) == 0 &&
            strcmp(s->request_model, x->request_model) == 0 &&
            strcmp(s->provider, x->provider) == 0)
            return s;
    }
    bool full = m->n >= METRICS_MAX_SERIES;
    if (full) { /* one more series would be unbounded: count it with the others */
        for (int i = 0; i < m->n; i++)
            if (m->s[i].status == 0) return &m->s[i];
    }
    if (m->n == m->cap) {
        int cap = m->cap ? m->cap * 2 : 16;
        series *grown = realloc(m->s, sizeof *grown * (size_t)cap);
        if (!grown) return NULL;
        m->s = grown;
        m->cap = cap;
    }
    series *s = &m->s[m->n++];
    memset(s, 0, sizeof *s);
    label_copy(s->request_model, full ? "(other)" : x->request_model);
    label_copy(s->response_model, full ? "(other)" : x->response_model);
    label_copy(s->provider, full ? "(other)" : x->provider);
    s->status = full ? 0 : x->status;
    s->embeddings = !full && x->embeddings;
    return s;
}

void metrics_record(metrics *m, const metrics_sample *x)
{
    series *s = m ? series_of(m, x) : NULL;
    if (!s) return;
    s->requests++;
    s->cost_pusd += x->cost_pusd;
    hist_add(&s->duration, duration_bounds, N_DURATION, (double)x->duration_us / 1e6);
    if (x->ttft_us >= 0) hist_add(&s->ttft, ttft_bounds, N_TTFT, (double)x->ttft_us / 1e6);
    if (x->upstream_usage) {
        hist_add(&s->input, token_bounds, N_TOKENS, (double)x->input_tokens);
        if (!x->embeddings) /* an embedding has no output tokens */
            hist_add(&s->output, token_bounds, N_TOKENS, (double)x->output_tokens);
    }
}

/* ------------------------------------------------------------ rendering */

void metrics_label_value(buf *out, const char *v)
{
    buf_append_char(out, '"');
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_append_char(out, '\\');
        else if (*v == '\n') {
            buf_append_str(out, "\\n");
            continue;
        }
        buf_append_char(out, *v);
    }
    buf_append_char(out, '"');
}

static void gen_ai_labels(buf *out, const series *s, const char *token_type)
{
    buf_append_str(out, s->embeddings ? "{gen_ai_operation_name=\"embeddings\""
                                      : "{gen_ai_operation_name=\"chat\"");
    buf_append_str(out, ",gen_ai_provider_name=");
    metrics_label_value(out, s->provider);
    buf_append_str(out, ",gen_ai_request_model=");
    metrics_label_value(out, s->request_model);
    buf_append_str(out, ",gen_ai_response_model=");
    metrics_label_value(out, s->response_model);
    if (token_type) buf_printf(out, ",gen_ai_token_type=\"%s\"", token_type);
}

/* The same three models and provider: one GenAI series (status aside). */
static bool same_gen_ai(const series *a, const series *b)
{
    return a->embeddings == b->embeddings && strcmp(a->request_model, b->request_model) == 0 &&
           strcmp(a->response_model, b->response_model) == 0 &&
           strcmp(a->provider, b->provider) == 0;
}

static void hist_merge(hist *to, const hist *h)
{
    for (size_t i = 0; i <= N_TTFT; i++)
        to->n[i] += h->n[i];
    to->count += h->count;
    to->sum += h->sum;
}

static void hist_render(buf *out, const char *name, const series *s, const char *token_type,
                        const hist *h, const double *bounds, size_t nb)
{
    int64_t cum = 0;
    for (size_t i = 0; i <= nb; i++) {
        cum += h->n[i];
        buf_printf(out, "%s_bucket", name);
        gen_ai_labels(out, s, token_type);
        if (i < nb && bounds[i] == (double)(int64_t)bounds[i]) /* no 1.04858e+06 */
            buf_printf(out, ",le=\"%lld\"} %lld\n", (long long)bounds[i], (long long)cum);
        else if (i < nb)
            buf_printf(out, ",le=\"%g\"} %lld\n", bounds[i], (long long)cum);
        else
            buf_printf(out, ",le=\"+Inf\"} %lld\n", (long long)cum);
    }
    buf_printf(out, "%s_sum", name);
    gen_ai_labels(out, s, token_type);
    buf_printf(out, "} %.6f\n%s_count", h->sum, name);
    gen_ai_labels(out, s, token_type);
    buf_printf(out, "} %lld\n", (long long)h->count);
}

/* Which histogram of a series a family shows. */
typedef enum { H_DURATION, H_TTFT, H_INPUT, H_OUTPUT } hist_kind;

static const hist *hist_of(const series *s, hist_kind k)
{
    return k == H_DURATION ? &s->duration
           : k == H_TTFT   ? &s->ttft
           : k == H_INPUT  ? &s->input
                           : &s->output;
}

/* One histogram family, the series merged over status. */
static void family_render(const metrics *m, buf *out, const char *name, hist_kind k,
                          const char *token_type, const double *bounds, size_t nb)
{
    for (int i = 0; i < m->n; i++) {
        bool first = true;
        for (int j = 0; j < i && first; j++)
            first = !same_gen_ai(&m->s[j], &m->s[i]);
        if (!first) continue; /* rendered with an earlier one */
        hist h;
        memset(&h, 0, sizeof h);
        for (int j = i; j < m->n; j++)
            if (same_gen_ai(&m->s[j], &m->s[i])) hist_merge(&h, hist_of(&m->s[j], k));
        if (h.count) hist_render(out, name, &m->s[i], token_type, &h, bounds, nb);
    }
}

static void cost_render(const metrics *m, buf *out)
{
    buf_append_str(out, "# HELP bridle_cost_usd_total What the requests cost, in USD (exact to "
                        "the pico-dollar), by provider and the model that answered.\n"
                        "# TYPE bridle_cost_usd_total counter\n");
    for (int i = 0; i < m->n; i++) {
        const series *s = &m->s[i];
        bool first = true;
        for (int j = 0; j < i && first; j++)
            first = strcmp(m->s[j].provider, s->provider) != 0 ||
                    strcmp(m->s[j].response_model, s->response_model) != 0;
        if (!first) continue;
        int64_t pusd = 0;
        for (int j = i; j < m->n; j++)
            if (strcmp(m->s[j].provider, s->provider) == 0 &&
                strcmp(m->s[j].response_model, s->response_model) == 0)
                pusd += m->s[j].cost_pusd;
        char usd[48];
        util_format_pusd(pusd, 12, usd, sizeof usd);
        buf_append_str(out, "bridle_cost_usd_total{gen_ai_provider_name=");
        metrics_label_value(out, s->provider);
        buf_append_str(out, ",gen_ai_response_model=");
        metrics_label_value(out, s->response_model);
        buf_printf(out, "} %s\n", usd);
    }
}

void metrics_render(const metrics *m, buf *out)
{
    buf_append_str(out, "# HELP gen_ai_client_token_usage Tokens used by the provider calls, "
                        "by token type (input: every prompt token, cached or not).\n"
                        "# TYPE gen_ai_client_token_usage histogram\n");
    family_render(m, out, "gen_ai_client_token_usage", H_INPUT, "input", token_bounds, N_TOKENS);
    family_render(m, out, "gen_ai_client_token_usage", H_OUTPUT, "output", token_bounds, N_TOKENS);
    buf_append_str(out, "# HELP gen_ai_server_request_duration_seconds How long a request took, "
                        "from its body to its last byte.\n"
                        "# TYPE gen_ai_server_request_duration_seconds histogram\n");
    family_render(m, out, "gen_ai_server_request_duration_seconds", H_DURATION, NULL,
                  duration_bounds, N_DURATION);
    buf_append_str(out, "# HELP gen_ai_server_time_to_first_token_seconds How long a streamed "
                        "request waited for its first token.\n"
                        "# TYPE gen_ai_server_time_to_first_token_seconds histogram\n");
    family_render(m, out, "gen_ai_server_time_to_first_token_seconds", H_TTFT, NULL, ttft_bounds,
                  N_TTFT);
    buf_append_str(out, "# HELP bridle_requests_total Requests answered, by the model asked for, "
                        "the model and provider that answered, and the HTTP status.\n"
                        "# TYPE bridle_requests_total counter\n");
    for (int i = 0; i < m->n; i++) {
        const series *s = &m->s[i];
        buf_append_str(out, "bridle_requests_total");
        gen_ai_labels(out, s, NULL);
        buf_printf(out, ",http_response_status_code=\"%d\"} %lld\n", s->status,
                   (long long)s->requests);
    }
    cost_render(m, out);
}

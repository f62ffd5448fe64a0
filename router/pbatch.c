/* The provider batch path (router/pbatch.h). */
#include "router/pbatch.h"

#include <event2/event.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/ledger.h"
#include "db/pbatchstore.h"
#include "db/usage_event.h"
#include "lib/log.h"
#include "lib/util.h"
#include "providers/batch.h"
#include "providers/engine.h"
#include "router/budget.h"
#include "router/canon.h"

#define MAX_POLLS 4            /* provider batches polled or settled at once, per process */
#define SETTLE_CHUNK 500       /* result lines settled per loop pass */
#define MAX_RESULTS (1L << 30) /* bytes of results read for one provider batch */

struct pbatch {
    pgqueue *q;
    bool submitting;
    int polling;
    struct pb_op *ops; /* every operation under way, for pbatch_free */
    long ticks;
    pbatch_stats stats;
};

/* A line of a provider batch being settled, copied from its row. */
typedef struct pb_line {
    int no;
    char *body, *model, *event;
    bool messages_api, settled;
} pb_line;

typedef struct pb_op pb_op;
typedef void (*pb_next)(pb_op *op, const engine_result *res);

/* One submission, or one poll and what follows it (a cancel, the results,
 * the settlement). */
struct pb_op {
    pbatch *pb;
    router *rt; /* held (router_count_run) until the end: its config stays */
    pb_op *next_op, **prev_op;
    bool submit;
    char id[40];     /* bridle's id for the provider batch */
    char remote[96]; /* the provider's */
    const provider_conf *p;
    long poll_ms;
    bool cancel;
    upstream_request up;
    engine_call *call;
    int status;
    bool too_big;      /* the answer passed MAX_RESULTS */
    buf resp;          /* the call's answer */
    char batch_id[40]; /* the batch its lines belong to (one per provider batch) */
    pb_next next;
    provider_batch_state st;
    buf results; /* result lines, all files */
    pb_line *lines;
    int n_lines;
    size_t pos;          /* into results: the next line to settle */
    buf rows;            /* the settled lines for the next statement (JSON array) */
    struct event *timer; /* the next settlement step, after the spool write */
};

/* ------------------------------------------------------------ operations */

static pb_op *op_new(pbatch *pb, router *rt, bool submit)
{
    pb_op *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->pb = pb;
    op->rt = rt;
    op->submit = submit;
    router_count_run(rt, 1);
    upstream_request_init(&op->up);
    op->next_op = pb->ops;
    if (pb->ops) pb->ops->prev_op = &op->next_op;
    op->prev_op = &pb->ops;
    pb->ops = op;
    if (submit)
        pb->submitting = true;
    else
        pb->polling++;
    return op;
}

static void op_end(pb_op *op)
{
    pbatch *pb = op->pb;
    if (op->call) engine_call_cancel(op->call);
    if (op->timer) event_free(op->timer);
    *op->prev_op = op->next_op;
    if (op->next_op) op->next_op->prev_op = op->prev_op;
    if (op->submit)
        pb->submitting = false;
    else
        pb->polling--;
    for (int i = 0; i < op->n_lines; i++) {
        free(op->lines[i].body);
        free(op->lines[i].model);
        free(op->lines[i].event);
    }
    free(op->lines);
    upstream_request_free(&op->up);
    buf_free(&op->resp);
    buf_free(&op->results);
    buf_free(&op->rows);
    router_count_run(op->rt, -1);
    free(op);
}

static bool query_ok(PGresult *res, ExecStatusType want, const char *what, const char *error)
{
    if (res && PQresultStatus(res) == want) return true;
    log_warn("provider batches: %s failed: %s", what, res ? PQresultErrorMessage(res) : error);
    return false;
}

/* The end of a statement nothing waits for but the operation. */
static void on_stored(void *ctx, PGresult *res, const char *error)
{
    query_ok(res, PGRES_COMMAND_OK, "recording a provider batch", error);
    op_end(ctx);
}

static void on_headers(void *ctx, int status, const upstream_headers *hs)
{
    ((pb_op *)ctx)->status = status;
}

static void on_data(void *ctx, const char *data, size_t len)
{
    pb_op *op = ctx;
    if (op->resp.len + len > MAX_RESULTS) { /* read on, keep nothing more: a failed call */
        op->too_big = true;
        return;
    }
    buf_append(&op->resp, data, len);
}

static void on_done(void *ctx, const engine_result *res)
{
    pb_op *op = ctx;
    op->call = NULL;
    op->next(op, res);
}

static bool answered_2xx(const pb_op *op, const engine_result *res)
{
    return res->ok && !op->too_big && op->status >= 200 && op->status < 300;
}

/* Sends op->up (filled by the caller) to op->p; next hears how it went. */
static void call(pb_op *op, pb_next next)
{
    static const engine_callbacks cb = {on_headers, on_data, on_done};
    op->next = next;
    op->status = 0;
    op->too_big = false;
    buf_reset(&op->resp);
    op->call = engine_call_start(router_engine(op->rt), &op->up, op->p, NULL, &cb, op);
    if (!op->call) {
        engine_result r = {.ok = false, .what = "the call could not be started"};
        next(op, &r);
    }
}

/* What a failed call said, in words, for logs and the lines it failed. */
static void call_error(const pb_op *op, const engine_result *res, const char *step, char *out,
                       size_t n)
{
    if (res->ok && op->status > 0) {
        upstream_error e;
        op->p->ops->classify(op->status, NULL, op->resp.data ? op->resp.data : "", op->resp.len,
                             &e);
        snprintf(out, n, "provider %s refused the batch's %s (HTTP %d): %s", op->p->name, step,
                 op->status, e.message);
    } else
        snprintf(out, n, "provider %s: the batch's %s got no answer (%s)", op->p->name, step,
                 res->what ? res->what : "transfer failed");
}

static const provider_conf *find_provider(router *rt, const char *name)
{
    const bridle_config *c = router_config(rt);
    for (int i = 0; i < config_n_providers(c); i++)
        if (config_provider_enabled(c, i) && strcmp(config_provider(c, i)->name, name) == 0)
            return config_provider(c, i);
    return NULL;
}

/* ------------------------------------------------------------ deferral */

static void event_member(buf *b, const char *name, const char *v)
{
    buf_printf(b, ",\"%s\":", name);
    buf_append_json_str(b, v, strlen(v));
}

int pbatch_defer(pbatch *pb, router *rt, const char *batch_id, const char *line_no,
                 const run_deferral *d, pgqueue_fn fn, void *ctx)
{
    const usage_event *ev = d->ev;
    buf e = BUF_INIT;
    buf_printf(&e, "{\"ts\":%lld", (long long)ev->ts_us);
    event_member(&e, "id", ev->event_id);
    event_member(&e, "key", ev->key_id);
    event_member(&e, "team", ev->team);
    event_member(&e, "user", ev->end_user);
    event_member(&e, "agent", ev->agent);
    event_member(&e, "task", ev->task);
    event_member(&e, "feature", ev->feature);
    event_member(&e, "requested", ev->requested_model);
    event_member(&e, "tier", ev->tier);
    event_member(&e, "reason", ev->route_reason);
    event_member(&e, "baseline", d->baseline ? d->baseline : "");
    buf_append_str(&e, "}");
    buf up = BUF_INIT;
    buf_append(&up, d->body, d->len);
    int rc = pbatchstore_defer(pb->q, batch_id, line_no, router_instance_id(rt),
                               d->t->provider->name, d->t->model, up.data, e.data, fn, ctx);
    buf_free(&up);
    buf_free(&e);
    return rc;
}

/* ------------------------------------------------------------ submission */

static void on_refused_or_lost(void *ctx, PGresult *res, const char *error)
{
    query_ok(res, PGRES_COMMAND_OK, "giving back a provider batch's lines", error);
    op_end(ctx);
}

/* The provider answered no: nothing of it runs there; its lines run live. */
static void refuse(pb_op *op, const char *why)
{
    log_warn("provider batches: %s: its lines run live from the local queue instead", why);
    op->pb->stats.refused++;
    if (pbatchstore_refused(op->pb->q, op->id, why, on_refused_or_lost, op) != 0) op_end(op);
}

/* No answer: it may have been made; its lines fail rather than run twice. */
static void lose(pb_op *op, const char *why)
{
    char msg[700];
    snprintf(msg, sizeof msg,
             "interrupted: %s; the provider may have its batch, so these requests are not "
             "sent again",
             why);
    log_error("provider batches: %s", msg);
    op->pb->stats.lost++;
    if (pbatchstore_lost(op->pb->q, op->id, msg, on_refused_or_lost, op) != 0) op_end(op);
}

static void on_created(pb_op *op, const engine_result *res)
{
    char why[600], err[200];
    if (!answered_2xx(op, res)) {
        call_error(op, res, "creation", why, sizeof why);
        if (res->ok && op->status > 0)
            refuse(op, why);
        else
            lose(op, why);
        return;
    }
    if (provider_batch_id(op->resp.data, op->resp.len, op->remote, sizeof op->remote, err,
                          sizeof err) != 0) {
        snprintf(why, sizeof why, "provider %s answered the batch's creation with %s", op->p->name,
                 err);
        lose(op, why);
        return;
    }
    const batches_conf *bc = config_batches(router_config(op->rt));
    op->pb->stats.submitted++;
    log_info("provider batches: %s went to %s as %s", op->id, op->p->name, op->remote);
    if (pbatchstore_submitted(op->pb->q, op->id, op->remote, (long)bc->poll_min_ms, on_stored,
                              op) != 0) {
        /* stays "submitting": the next start fails its lines as interrupted */
        log_error("provider batches: %s (%s at %s) could not be recorded: the database is away",
                  op->id, op->remote, op->p->name);
        op_end(op);
    }
}

static void on_uploaded(pb_op *op, const engine_result *res)
{
    char why[600], err[200], file[96];
    if (!answered_2xx(op, res) ||
        provider_batch_id(op->resp.data, op->resp.len, file, sizeof file, err, sizeof err) != 0) {
        /* no batch without its file: nothing of it can run there */
        if (answered_2xx(op, res))
            snprintf(why, sizeof why, "provider %s answered the batch file's upload with %s",
                     op->p->name, err);
        else
            call_error(op, res, "file upload", why, sizeof why);
        refuse(op, why);
        return;
    }
    upstream_request_reset(&op->up);
    provider_batch_create(op->p, file, NULL, op->id, NULL, &op->up);
    call(op, on_created);
}

static void on_taken(void *ctx, PGresult *res, const char *error)
{
    pb_op *op = ctx;
    if (!query_ok(res, PGRES_TUPLES_OK, "taking queued lines", error) || PQntuples(res) == 0) {
        op_end(op);
        return;
    }
    op->p = find_provider(op->rt, PQgetvalue(res, 0, 0));
    if (!op->p || !op->p->batch) {
        char why[300];
        snprintf(why, sizeof why, "provider %.64s no longer takes batches (config)",
                 PQgetvalue(res, 0, 0));
        refuse(op, why);
        return;
    }
    buf payload = BUF_INIT;
    provider_batch_begin(op->p, &payload);
    for (int i = 0; i < PQntuples(res); i++) {
        char custom_id[80];
        snprintf(custom_id, sizeof custom_id, "%.60s-%s", PQgetvalue(res, i, 2),
                 PQgetvalue(res, i, 3));
        provider_batch_add(op->p, &payload, custom_id, PQgetvalue(res, i, 4),
                           (size_t)PQgetlength(res, i, 4));
    }
    provider_batch_end(op->p, &payload);
    log_info("provider batches: %s: %d lines of %s for %s (%s)", op->id, PQntuples(res),
             PQgetvalue(res, 0, 2), op->p->name, PQgetvalue(res, 0, 1));
    if (provider_batch_uploads(op->p)) {
        provider_batch_upload(op->p, &payload, &op->up);
        buf_free(&payload);
        call(op, on_uploaded);
    } else {
        const model_conf *m = config_find_model(router_config(op->rt), PQgetvalue(res, 0, 1));
        const char *upstream =
            m && m->target.upstream_model ? m->target.upstream_model : PQgetvalue(res, 0, 1);
        provider_batch_create(op->p, NULL, &payload, op->id, upstream, &op->up);
        buf_free(&payload);
        call(op, on_created);
    }
}

/* A PostgreSQL array literal of the providers this gateway sends batches
 * to; false when none. */
static bool batch_providers(router *rt, buf *out)
{
    const bridle_config *c = router_config(rt);
    buf_append_str(out, "{");
    bool any = false;
    for (int i = 0; i < config_n_providers(c); i++) {
        const provider_conf *p = config_provider(c, i);
        if (!config_provider_enabled(c, i) || !p->batch) continue;
        buf_append_str(out, any ? ",\"" : "\"");
        for (const char *s = p->name; *s; s++) {
            if (*s == '"' || *s == '\\') buf_append_str(out, "\\");
            buf_append(out, s, 1);
        }
        buf_append_str(out, "\"");
        any = true;
    }
    buf_append_str(out, "}");
    return any;
}

static void submit_next(pbatch *pb, router *rt)
{
    buf names = BUF_INIT;
    if (pb->submitting || !batch_providers(rt, &names)) {
        buf_free(&names);
        return;
    }
    pb_op *op = op_new(pb, rt, true);
    if (!op) {
        buf_free(&names);
        return;
    }
    memcpy(op->id, "pb_", 3);
    const batches_conf *bc = config_batches(router_config(rt));
    if (!util_random_hex(op->id + 3, 12) ||
        pbatchstore_take(pb->q, router_instance_id(rt), names.data, (long)bc->submit_after_ms,
                         bc->max_lines, op->id, on_taken, op) != 0)
        op_end(op);
    buf_free(&names);
}

/* ------------------------------------------------------------ polling */

static void on_later(void *ctx, PGresult *res, const char *error)
{
    query_ok(res, PGRES_COMMAND_OK, "scheduling a provider batch's next poll", error);
    op_end(ctx);
}

/* Not ended (or not reachable): polled again twice as late, jittered. */
static void poll_later(pb_op *op)
{
    const batches_conf *bc = config_batches(router_config(op->rt));
    long ms = op->poll_ms * 2;
    if (ms < bc->poll_min_ms) ms = (long)bc->poll_min_ms;
    if (ms > bc->poll_max_ms) ms = (long)bc->poll_max_ms;
    ms += (long)(router_random(op->rt) % (uint64_t)(ms / 10 + 1)); /* spread the gateways */
    if (pbatchstore_poll_later(op->pb->q, op->id, ms, on_later, op) != 0) op_end(op);
}

static void settle_step(pb_op *op);

static void on_lines(void *ctx, PGresult *res, const char *error)
{
    pb_op *op = ctx;
    if (!query_ok(res, PGRES_TUPLES_OK, "reading a provider batch's lines", error)) {
        op_end(op); /* polled again once its claim lapses */
        return;
    }
    int n = PQntuples(res);
    op->lines = calloc(n ? (size_t)n : 1, sizeof *op->lines);
    if (!op->lines) {
        op_end(op);
        return;
    }
    for (int i = 0; i < n; i++, op->n_lines++) {
        pb_line *l = &op->lines[i];
        l->no = atoi(PQgetvalue(res, i, 0));
        l->body = strdup(PQgetvalue(res, i, 1));
        l->model = strdup(PQgetvalue(res, i, 2));
        l->event = strdup(PQgetvalue(res, i, 3));
        l->messages_api = strcmp(PQgetvalue(res, i, 4), "anthropic") == 0;
        snprintf(op->batch_id, sizeof op->batch_id, "%s", PQgetvalue(res, i, 5));
        if (!l->body || !l->model || !l->event) {
            op->n_lines++;
            op_end(op);
            return;
        }
    }
    settle_step(op);
}

static void read_lines(pb_op *op)
{
    if (pbatchstore_lines(op->pb->q, op->id, on_lines, op) != 0) op_end(op);
}

static void fetch_file(pb_op *op, const char *id, pb_next next)
{
    upstream_request_reset(&op->up);
    provider_batch_fetch(op->p, id, &op->up);
    call(op, next);
}

static bool keep_results(pb_op *op, const engine_result *res)
{
    if (!answered_2xx(op, res)) {
        char why[600];
        call_error(op, res, "results", why, sizeof why);
        log_warn("provider batches: %s: %s; retried at the next poll", op->id, why);
        poll_later(op);
        return false;
    }
    buf_append(&op->results, op->resp.data ? op->resp.data : "", op->resp.len);
    buf_append_str(&op->results, "\n");
    return true;
}

static void on_error_file(pb_op *op, const engine_result *res)
{
    if (keep_results(op, res)) read_lines(op);
}

static void on_results(pb_op *op, const engine_result *res)
{
    if (!keep_results(op, res)) return;
    if (op->st.error_file[0] && strcmp(op->st.error_file, op->st.output_file) != 0)
        fetch_file(op, op->st.error_file, on_error_file);
    else
        read_lines(op);
}

static void on_status(pb_op *op, const engine_result *res)
{
    char err[200];
    op->pb->stats.polls++;
    if (!answered_2xx(op, res) || provider_batch_read_state(op->p, op->resp.data, op->resp.len,
                                                            &op->st, err, sizeof err) != 0) {
        char why[600];
        call_error(op, res, "status", why, sizeof why);
        log_warn("provider batches: %s: %s", op->id, answered_2xx(op, res) ? err : why);
        poll_later(op);
        return;
    }
    if (!op->st.ended) {
        poll_later(op);
        return;
    }
    if (op->st.refused) {
        char why[400];
        snprintf(why, sizeof why, "provider %s refused batch %s: %s", op->p->name, op->remote,
                 op->st.why);
        refuse(op, why);
        return;
    }
    log_info("provider batches: %s (%s at %s) ended: %s", op->id, op->remote, op->p->name,
             op->st.status);
    if (provider_batch_inline(op->p)) { /* the results are in this answer */
        if (provider_batch_inline_results(op->p, op->resp.data, op->resp.len, &op->results, err,
                                          sizeof err) != 0) {
            log_warn("provider batches: %s: %s; retried at the next poll", op->id, err);
            poll_later(op);
        } else
            read_lines(op);
    } else if (!provider_batch_uploads(op->p))
        fetch_file(op, op->remote, on_results);
    else if (op->st.output_file[0])
        fetch_file(op, op->st.output_file, on_results);
    else if (op->st.error_file[0])
        fetch_file(op, op->st.error_file, on_error_file);
    else
        read_lines(op);
}

static void ask_status(pb_op *op)
{
    upstream_request_reset(&op->up);
    provider_batch_status(op->p, op->remote, &op->up);
    call(op, on_status);
}

static void on_cancel_sent(void *ctx, PGresult *res, const char *error)
{
    query_ok(res, PGRES_COMMAND_OK, "recording a provider batch's cancel", error);
}

static void on_cancelled(pb_op *op, const engine_result *res)
{
    if (answered_2xx(op, res))
        pbatchstore_cancel_sent(op->pb->q, op->id, on_cancel_sent, NULL);
    else {
        char why[600];
        call_error(op, res, "cancel", why, sizeof why);
        log_warn("provider batches: %s: %s; asked again at the next poll", op->id, why);
    }
    ask_status(op);
}

static void on_poll_claimed(void *ctx, PGresult *res, const char *error)
{
    pb_op *op = ctx;
    if (!query_ok(res, PGRES_TUPLES_OK, "claiming a provider batch to poll", error) ||
        PQntuples(res) == 0) {
        op_end(op);
        return;
    }
    snprintf(op->id, sizeof op->id, "%s", PQgetvalue(res, 0, 0));
    snprintf(op->remote, sizeof op->remote, "%s", PQgetvalue(res, 0, 2));
    op->poll_ms = atol(PQgetvalue(res, 0, 3));
    op->cancel = PQgetvalue(res, 0, 4)[0] == 't';
    op->p = find_provider(op->rt, PQgetvalue(res, 0, 1));
    if (!op->p) { /* its provider left the config: asked again later, not lost */
        log_warn("provider batches: %s is at provider %.64s, which is not configured here", op->id,
                 PQgetvalue(res, 0, 1));
        poll_later(op);
        return;
    }
    if (op->cancel) {
        provider_batch_cancel(op->p, op->remote, &op->up);
        call(op, on_cancelled);
    } else
        ask_status(op);
}

static void poll_next(pbatch *pb, router *rt)
{
    if (pb->polling >= MAX_POLLS) return;
    pb_op *op = op_new(pb, rt, false);
    if (op && pbatchstore_poll_claim(pb->q, router_instance_id(rt), on_poll_claimed, op) != 0)
        op_end(op);
}

/* ------------------------------------------------------------ settlement */

static void copy_member(json_object *o, const char *key, char *dst, size_t n)
{
    const char *v = provider_json_str(o, key);
    snprintf(dst, n, "%s", v ? v : "");
}

/* The line's usage event as it was deferred (who, what, how routed). */
static void event_of(const pb_line *l, const pb_op *op, usage_event *ev, const char **baseline,
                     json_object **holder)
{
    memset(ev, 0, sizeof *ev);
    json_object *o = json_tokener_parse(l->event);
    *holder = o;
    json_object *ts = provider_json_get(o, "ts");
    ev->ts_us = ts ? json_object_get_int64(ts) : util_wall_ms() * 1000;
    copy_member(o, "id", ev->event_id, sizeof ev->event_id);
    copy_member(o, "key", ev->key_id, sizeof ev->key_id);
    copy_member(o, "team", ev->team, sizeof ev->team);
    copy_member(o, "user", ev->end_user, sizeof ev->end_user);
    copy_member(o, "agent", ev->agent, sizeof ev->agent);
    copy_member(o, "task", ev->task, sizeof ev->task);
    copy_member(o, "feature", ev->feature, sizeof ev->feature);
    copy_member(o, "requested", ev->requested_model, sizeof ev->requested_model);
    copy_member(o, "tier", ev->tier, sizeof ev->tier);
    copy_member(o, "reason", ev->route_reason, sizeof ev->route_reason);
    size_t r = strlen(ev->route_reason);
    snprintf(ev->route_reason + r, sizeof ev->route_reason - r, "%s", "; provider batch");
    *baseline = provider_json_str(o, "baseline");
    snprintf(ev->provider, sizeof ev->provider, "%s", op->p->name);
    snprintf(ev->model, sizeof ev->model, "%s", l->model);
    ev->attempts = 1;
    ev->ttft_us = -1;
    /* its wait is the batch's (minutes to hours), not a call's: the latency
     * panels and rollups are for calls, so it records none */
    ev->latency_us = ev->upstream_us = 0;
}

/* The model's target at this provider, from the current config. */
static target target_of(const pb_op *op, const pb_line *l)
{
    const model_conf *m = config_find_model(router_config(op->rt), l->model);
    target t = m ? m->target
                 : (target){.model = l->model,
                            .upstream_model = l->model,
                            .price = pricing_default_lookup(l->model)};
    t.provider = op->p;
    return t;
}

/* One settled line: its row for the statement. */
static void row_append(pb_op *op, int no, const char *state, int status, const char *response,
                       size_t len, const char *request_id)
{
    buf_append_str(&op->rows, op->rows.len > 1 ? ",{\"n\":" : "{\"n\":");
    buf_printf(&op->rows, "%d,\"s\":\"%s\",\"c\":", no, state);
    if (status)
        buf_printf(&op->rows, "%d", status);
    else
        buf_append_str(&op->rows, "null");
    buf_append_str(&op->rows, ",\"r\":");
    buf_append_json_str(&op->rows, response, len);
    buf_append_str(&op->rows, ",\"q\":");
    buf_append_json_str(&op->rows, request_id, strlen(request_id));
    buf_append_str(&op->rows, "}");
}

/* A 2xx answer: decoded by the provider's adapter, priced at the batch
 * discount. -1 with err when it cannot be read. */
static int settle_answer(pb_op *op, const pb_line *l, const target *t,
                         const provider_batch_result *res, usage_event *ev, buf *answer, char *err,
                         size_t errlen)
{
    jdoc doc = JDOC_INIT;
    buf strings = BUF_INIT;
    canon_request canon;
    canon_error cerr;
    decoded_response d;
    memset(&d, 0, sizeof d);
    int rc = canon_parse_chat(l->body, strlen(l->body), &doc, &strings, &canon, &cerr);
    if (rc != 0)
        snprintf(err, errlen, "the line's request no longer parses: %.200s", cerr.message);
    else {
        canon.messages_api = l->messages_api;
        rc = t->provider->ops->decode(&canon, t, res->body.data, res->body.len, &d, err, errlen);
    }
    if (rc == 0) {
        if (d.body) {
            size_t n;
            const char *s = json_object_to_json_string_length(
                d.body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
            buf_append(answer, s, n);
        } else
            buf_append(answer, d.raw, d.raw_len);
        const usage_record *u = &d.usage;
        ev->input_tokens = u->input_uncached;
        ev->cache_read_tokens = u->cache_read;
        ev->cache_write_tokens = u->cache_write_5m + u->cache_write_1h;
        ev->output_tokens = u->output;
        ev->reasoning_tokens = u->reasoning;
        ev->usage_exact = u->exact;
        ev->cost_pusd = pricing_cost_pusd(t->price, u, true);
    }
    if (d.body) json_object_put(d.body);
    jdoc_free(&doc);
    buf_free(&strings);
    return rc;
}

static pb_line *line_of(pb_op *op, const char *custom_id)
{
    if (custom_id[0] == '#') { /* "#I/N": by order, while every line of it is here */
        int i = atoi(custom_id + 1),
            n = atoi(strchr(custom_id, '/') ? strchr(custom_id, '/') + 1 : "-1");
        return n == op->n_lines && i >= 0 && i < n ? &op->lines[i] : NULL;
    }
    const char *dash = strrchr(custom_id, '-');
    int no = dash ? atoi(dash + 1) : 0, lo = 0, hi = op->n_lines - 1;
    while (lo <= hi) { /* the lines are in line order */
        int mid = (lo + hi) / 2;
        if (op->lines[mid].no == no) return &op->lines[mid];
        if (op->lines[mid].no < no)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* One result: its usage event to the ledger, its row for the statement. */
static void settle_result(pb_op *op, pb_line *l, const provider_batch_result *res)
{
    l->settled = true;
    if (res->status == 0) return; /* did not run: ends with the provider batch (last) */
    usage_event ev;
    const char *baseline;
    json_object *holder;
    event_of(l, op, &ev, &baseline, &holder);
    snprintf(ev.batch_id, sizeof ev.batch_id, "%s", op->batch_id);
    target t = target_of(op, l);
    buf answer = BUF_INIT;
    char err[300], request_id[32];
    snprintf(request_id, sizeof request_id, "req_%.24s", ev.event_id);
    int status = res->status;
    if (status >= 200 && status < 300 &&
        settle_answer(op, l, &t, res, &ev, &answer, err, sizeof err) != 0) {
        buf_reset(&answer);
        provider_openai_error_json(&answer, "api_error", "upstream_malformed_response", NULL, err);
        status = 502;
        snprintf(ev.error_class, sizeof ev.error_class, "upstream_malformed_response");
    } else if (status < 200 || status >= 300) {
        upstream_error e;
        t.provider->ops->classify(status, NULL, res->body.data, res->body.len, &e);
        provider_openai_error_json(&answer, e.type, e.code, NULL, e.message);
        status = e.client_status;
        snprintf(ev.error_class, sizeof ev.error_class, "%.31s", e.code[0] ? e.code : e.type);
    }
    ev.status = status;
    usage_record u = {.input_uncached = ev.input_tokens,
                      .cache_read = ev.cache_read_tokens,
                      .cache_write_5m = ev.cache_write_tokens,
                      .output = ev.output_tokens};
    const model_conf *b =
        baseline && *baseline ? config_find_model(router_config(op->rt), baseline) : NULL;
    ev.baseline_cost_pusd = pricing_cost_pusd(b ? &b->price : t.price, &u, false);
    ledger *lg = router_ledger(op->rt);
    if (lg && ledger_record(lg, &ev) != 0)
        log_error("provider batches: line %d of %s: its usage event could not be spooled", l->no,
                  ev.batch_id);
    row_append(op, l->no, status < 400 ? "done" : "failed", status, answer.data ? answer.data : "",
               answer.len, request_id);
    op->pb->stats.settled_lines++;
    json_object_put(holder);
    buf_free(&answer);
}

static void on_settled(void *ctx, PGresult *res, const char *error)
{
    pb_op *op = ctx;
    if (!query_ok(res, PGRES_COMMAND_OK, "recording a provider batch's results", error)) {
        op_end(op); /* settled again once its claim lapses; the events are not charged twice */
        return;
    }
    if (op->pos >= op->results.len) {
        log_info("provider batches: %s settled", op->id);
        op_end(op);
        return;
    }
    settle_step(op);
}

/* The spool has this step's events (written at the end of the pass that
 * recorded them): their lines may say so now. */
static void on_spooled(evutil_socket_t fd, short what, void *arg)
{
    pb_op *op = arg;
    buf_append_str(&op->rows, "]");
    bool last = op->pos >= op->results.len;
    if (pbatchstore_settle(op->pb->q, op->id, op->rows.data, last, on_settled, op) != 0) op_end(op);
}

/* Settles up to SETTLE_CHUNK result lines, then waits for the spool. */
static void settle_step(pb_op *op)
{
    provider_batch_result r = {.body = BUF_INIT};
    buf_reset(&op->rows);
    buf_append_str(&op->rows, "[");
    for (int n = 0; n < SETTLE_CHUNK && op->pos < op->results.len;) {
        const char *s = op->results.data + op->pos;
        size_t len = strcspn(s, "\n");
        op->pos += len + 1;
        if (len == 0) continue;
        char err[200];
        pb_line *l = NULL;
        if (provider_batch_read_result(op->p, s, len, &r, err, sizeof err) != 0)
            log_warn("provider batches: %s: a result line was skipped: %s", op->id, err);
        else if (!(l = line_of(op, r.custom_id)) || l->settled)
            continue; /* not one of its lines still waiting */
        else {
            settle_result(op, l, &r);
            n++;
        }
    }
    buf_free(&r.body);
    if (!op->timer) op->timer = evtimer_new(router_base(op->rt), on_spooled, op);
    struct timeval zero = {0, 0};
    if (!op->timer || evtimer_add(op->timer, &zero) != 0) op_end(op);
}

/* ------------------------------------------------------------ the module */

pbatch *pbatch_new(pgqueue *q)
{
    pbatch *pb = calloc(1, sizeof *pb);
    if (pb) pb->q = q;
    return pb;
}

void pbatch_free(pbatch *pb)
{
    if (!pb) return;
    while (pb->ops)
        op_end(pb->ops);
    free(pb);
}

static void on_recovered(void *ctx, PGresult *res, const char *error)
{
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK && atoi(PQcmdTuples(res)) > 0)
        log_warn("provider batches: %s lines of provider batches left submitting by a stopped "
                 "gateway failed as interrupted",
                 PQcmdTuples(res));
}

void pbatch_tick(pbatch *pb, router *rt)
{
    if (!pgqueue_up(pb->q)) return;
    if (pb->ticks++ % 5 == 0) {
        const budget *b = router_budgets(rt);
        const char *prev = b ? budget_previous_instance(b) : NULL;
        pbatchstore_recover(pb->q, router_instance_id(rt), prev && *prev ? prev : NULL,
                            on_recovered, NULL);
    }
    submit_next(pb, rt);
    poll_next(pb, rt);
}

pbatch_stats pbatch_get_stats(const pbatch *pb)
{
    pbatch_stats s = pb->stats;
    s.in_flight = pb->polling + (pb->submitting ? 1 : 0);
    return s;
}

/* The Batch API and its local queue (server/batches.h). */
#include "server/batches.h"

#include <event2/event.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/batchstore.h"
#include "db/idem.h"
#include "lib/log.h"
#include "lib/util.h"
#include "router/batch_input.h"
#include "router/budget.h"
#include "router/keyring.h"
#include "router/messages.h"
#include "router/pbatch.h"
#include "router/router.h"
#include "router/run.h"
#include "server/http.h"

#define TICK_MS 200
#define FINALIZE_EVERY_TICKS 5  /* 1 s */
#define RECOVER_EVERY_TICKS 25  /* 5 s */
#define PROVIDER_EVERY_TICKS 5  /* 1 s: submit, poll (router/pbatch.h) */
#define CLAIM_WAIT_MAX_TICKS 25 /* 5 s: how late an idle gateway sees another's new batch */

struct batches {
    app *a;
    pgqueue *q;
    pbatch *pb; /* the provider batch path */
    struct event *tick;
    int running; /* lines in flight here */
    bool claiming, finalizing, recovering;
    long ticks;
    /* Claims that found nothing make the next ones wait longer, up to
     * CLAIM_WAIT_MAX_TICKS: an idle gateway otherwise asks 5 times a second.
     * Any call of the batch API here asks again at the next tick. */
    int claim_wait, claim_skip; /* ticks */
    long claims;                /* claim queries sent (health) */
};

/* ------------------------------------------------------------ the API */

typedef struct bcall {
    http_held h; /* the request, held until the answer */
    const key_conf *key;
    char id[40];
    char file_id[64];
    char *metadata;
    batch_api api;
    bool binary;         /* the answer is JSONL (results), not JSON */
    buf lines;           /* an Anthropic batch's canonical lines, while it is created */
    char idem_key[256];  /* the Idempotency-Key, or "" */
    char idem_owner[64]; /* the claim's token, while it is held */
} bcall;

static bcall *call_new(app *a, h1_req *req, const key_conf *key)
{
    bcall *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->key = key;
    keyring_hold(key);
    http_hold(&c->h, a, req);
    return c;
}

static void idem_settle(bcall *c, int status, const char *json, size_t len);

/* The call is over: answered now (status and body), or its client left. */
static void call_end(bcall *c, int status, const char *json, size_t len, const char *code,
                     const char *param, const char *msg)
{
    app *a = c->h.a;
    h1_req *req = c->h.req;
    idem_settle(c, status, json, len);
    if (http_unhold(&c->h)) {
        if (status == 200 && c->binary)
            http_reply(a, req, 200, "application/x-jsonlines", json, len);
        else if (status == 200)
            http_reply_json(a, req, 200, json, len);
        else {
            if (status == 503) h1_add_header(req, "Retry-After", "1");
            http_reply_error(a, req, status,
                             status == 503   ? "server_error"
                             : status == 429 ? "budget_exceeded"
                                             : "invalid_request_error",
                             code, param, msg, status == 503);
        }
    }
    keyring_release(c->key);
    free(c->metadata);
    buf_free(&c->lines);
    free(c);
}

/* The creation's outcome under its Idempotency-Key: a batch made (or a
 * request refused for good) is kept for replay; a failure of the database
 * gives the key up, so a retry runs anew. */
static void idem_settle(bcall *c, int status, const char *json, size_t len)
{
    idem_store *st = router_idem(c->h.a->router);
    if (!c->idem_owner[0] || !st) return;
    if (status == 200)
        idem_store_result(st, c->key->id, c->idem_key, c->idem_owner, 200, "application/json", json,
                          len, NULL, NULL);
    else
        idem_release(st, c->key->id, c->idem_key, c->idem_owner);
    c->idem_owner[0] = '\0';
}

static void db_failed(bcall *c, const char *why)
{
    char msg[400];
    snprintf(msg, sizeof msg, "The Batch API needs the database, which failed: %.300s",
             why ? why : "unknown error");
    call_end(c, 503, NULL, 0, "database_unavailable", NULL, msg);
}

static bool result_ok(PGresult *res)
{
    return res && PQresultStatus(res) == PGRES_TUPLES_OK;
}

/* A creation refused because a budget cannot hold the batch's worst case
 * (migrations/0014): true, answered with 429. */
static bool budget_refused(bcall *c, PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *p = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    if (!state || strcmp(state, BATCHSTORE_BUDGET_REFUSED) != 0 || !p) return false;
    /* DETAIL: scope, id, period, limit, spent, held, need; tab-separated */
    char f[7][72];
    for (int i = 0; i < 7; i++) {
        size_t n = strcspn(p, "\t");
        snprintf(f[i], sizeof f[i], "%.*s", (int)n, p);
        if (i < 6 && p[n] != '\t') return false;
        p += n + 1;
    }
    char msg[600];
    budget_say_batch_refused(f[0], f[1], f[2], atoll(f[3]), atoll(f[4]), atoll(f[5]), atoll(f[6]),
                             msg, sizeof msg);
    call_end(c, 429, NULL, 0, "budget_exceeded", NULL, msg);
    return true;
}

/* Row 0 as the answer, or 404 naming the batch. */
static void on_batch(void *ctx, PGresult *res, const char *error)
{
    bcall *c = ctx;
    batches *bs = c->h.a->batches;
    bs->claim_wait = bs->claim_skip = 0; /* a batch in use: its lines are claimed at once */
    if (!result_ok(res) && budget_refused(c, res)) return;
    if (!result_ok(res)) {
        db_failed(c, res ? PQresultErrorMessage(res) : error);
        return;
    }
    if (PQntuples(res) == 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "No batch found with id '%.64s'", c->id);
        call_end(c, 404, NULL, 0, "batch_not_found", "batch_id", msg);
        return;
    }
    call_end(c, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0), NULL, NULL, NULL);
}

/* The budgets the batch's key is charged to, for its reservation at
 * creation (db/batchstore.h batch_new.budget_arrays; the query copies them). */
static void budget_arrays(const bcall *c, batch_new *b, buf arrays[4])
{
    budget_request req;
    budget_request_for_key(&req, c->key, c->h.a->cfg);
    budget_request_arrays(&req, arrays);
    for (int i = 0; i < 4; i++)
        b->budget_arrays[i] = arrays[i].data;
}

static void on_file_endpoint(void *ctx, PGresult *res, const char *error)
{
    bcall *c = ctx;
    if (!result_ok(res)) {
        db_failed(c, res ? PQresultErrorMessage(res) : error);
        return;
    }
    char msg[300];
    if (PQntuples(res) == 0) {
        snprintf(msg, sizeof msg,
                 "No batch input file '%.64s' for this key: upload it first (POST /v1/files, "
                 "purpose \"batch\")",
                 c->file_id);
        call_end(c, 400, NULL, 0, "invalid_request", "input_file_id", msg);
        return;
    }
    batches *bs = c->h.a->batches;
    batch_new b = {.id = c->id,
                   .key_id = c->key->id,
                   .key_sha256 = c->key->sha256,
                   .team = c->key->team,
                   .input_file_id = c->file_id,
                   .endpoint = PQgetvalue(res, 0, 0),
                   .completion_window = "24h",
                   .metadata = c->metadata};
    buf arrays[4] = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT};
    budget_arrays(c, &b, arrays);
    if (batchstore_create(bs->q, &b, on_batch, c) != 0) db_failed(c, "it is busy or away");
    for (int i = 0; i < 4; i++)
        buf_free(&arrays[i]);
}

static void bad(app *a, h1_req *req, const char *param, const char *msg)
{
    http_reply_error(a, req, 400, "invalid_request_error", "invalid_request", param, msg, false);
}

static void create_start(bcall *c)
{
    if (batchstore_file_endpoint(c->h.a->batches->q, c->file_id, c->key->id, on_file_endpoint, c) !=
        0)
        db_failed(c, "it is busy or away");
}

static void on_idem_claim(void *ctx, const idem_result *res)
{
    bcall *c = ctx;
    switch (res->outcome) {
    case IDEM_CLAIMED:
        snprintf(c->idem_owner, sizeof c->idem_owner, "%s", res->owner);
        create_start(c);
        return;
    case IDEM_REPLAY:
        if (!c->h.gone) h1_add_header(c->h.req, "Idempotent-Replayed", "true");
        call_end(c, res->status, res->body, res->body_len, NULL, NULL, NULL);
        return;
    case IDEM_MISMATCH:
        call_end(c, 422, NULL, 0, "idempotency_key_reused", NULL,
                 "This Idempotency-Key was already used with a different request body; a key "
                 "names one request: send a new key with a new request");
        return;
    case IDEM_IN_PROGRESS:
        call_end(c, 409, NULL, 0, "idempotency_key_in_use", NULL,
                 "A request with this Idempotency-Key is still being processed; retry after it "
                 "finishes to get its answer");
        return;
    default:
        db_failed(c, res->error ? res->error : "did not answer the Idempotency-Key claim");
    }
}

/* The same rules as chat completions (db/idem.h): one creation per key and
 * body, replayed after. */
static void idem_begin(bcall *c, const char *header, const char *body, size_t len)
{
    idem_store *st = router_idem(c->h.a->router);
    if (!st) {
        create_start(c);
        return;
    }
    if (idem_parse_key(header, c->idem_key, sizeof c->idem_key) != 0) {
        call_end(c, 400, NULL, 0, "invalid_idempotency_key", NULL,
                 "The Idempotency-Key header must be 1 to 255 printable ASCII characters, as a "
                 "quoted string (\"...\") or a bare token without spaces");
        return;
    }
    buf b = BUF_INIT;
    buf_append_str(&b, "POST /v1/batches\n");
    buf_append(&b, body, len);
    char fp[65];
    util_sha256_hex(b.data, b.len, fp);
    buf_free(&b);
    bool wait = config_idempotency(c->h.a->cfg)->wait;
    if (!idem_claim(st, c->key->id, c->idem_key, fp, wait, util_now_ms() + 30000, on_idem_claim, c))
        db_failed(c, "could not be asked (no memory)");
}

static void create(app *a, h1_req *req, const key_conf *key, const char *idem_key)
{
    size_t len;
    const char *body = h1_req_body(req, &len);
    json_tokener *tok = json_tokener_new();
    json_object *o = tok ? json_tokener_parse_ex(tok, body, (int)len) : NULL;
    if (tok) json_tokener_free(tok);
    json_object *v;
    const char *file = NULL, *endpoint = NULL, *window = NULL;
    if (json_object_object_get_ex(o, "input_file_id", &v)) file = json_object_get_string(v);
    if (json_object_object_get_ex(o, "endpoint", &v)) endpoint = json_object_get_string(v);
    if (json_object_object_get_ex(o, "completion_window", &v)) window = json_object_get_string(v);
    json_object *md = NULL;
    json_object_object_get_ex(o, "metadata", &md);
    if (!o || !json_object_is_type(o, json_type_object))
        bad(a, req, NULL,
            "The body must be a JSON object with input_file_id, endpoint and "
            "completion_window");
    else if (!file || !*file || strlen(file) >= 64)
        bad(a, req, "input_file_id", "input_file_id must name an uploaded batch file");
    else if (!endpoint || strcmp(endpoint, "/v1/chat/completions") != 0)
        bad(a, req, "endpoint", "endpoint must be \"/v1/chat/completions\"");
    else if (!window || strcmp(window, "24h") != 0)
        bad(a, req, "completion_window", "completion_window must be \"24h\"");
    else if (md && !json_object_is_type(md, json_type_null) &&
             !json_object_is_type(md, json_type_object))
        bad(a, req, "metadata", "metadata must be an object of strings");
    else {
        bcall *c = call_new(a, req, key);
        if (!c) {
            json_object_put(o);
            return;
        }
        snprintf(c->file_id, sizeof c->file_id, "%s", file);
        memcpy(c->id, "batch_", 6);
        if (md && json_object_is_type(md, json_type_object))
            c->metadata = strdup(json_object_to_json_string_ext(md, JSON_C_TO_STRING_PLAIN));
        if (!util_random_hex(c->id + 6, 12))
            db_failed(c, "gave no random id");
        else if (idem_key)
            idem_begin(c, idem_key, body, len);
        else
            create_start(c);
    }
    json_object_put(o);
}

/* /v1/batches/{id}[/cancel] */
static bool batch_id(const char *path, char out[40], bool *cancel)
{
    const char *p = path + 12; /* past "/v1/batches/" */
    size_t n = strcspn(p, "/?");
    if (n == 0 || n >= 40) return false;
    memcpy(out, p, n);
    out[n] = '\0';
    const char *rest = p + n;
    *cancel = strncmp(rest, "/cancel", 7) == 0 && (rest[7] == '\0' || rest[7] == '?');
    return *cancel || *rest == '\0' || *rest == '?';
}

/* ?limit=N&after=ID */
static void list_query(const char *path, int *limit, char after[40])
{
    const char *q = strchr(path, '?');
    *limit = 20;
    after[0] = '\0';
    for (const char *p = q; p && *p; p = strchr(p + 1, '&')) {
        const char *kv = p + 1;
        if (strncmp(kv, "limit=", 6) == 0) *limit = atoi(kv + 6);
        size_t skip = strncmp(kv, "after=", 6) == 0      ? 6
                      : strncmp(kv, "after_id=", 9) == 0 ? 9 /* Anthropic's */
                                                         : 0;
        if (skip) {
            size_t n = strcspn(kv + skip, "&");
            if (n < 40) {
                memcpy(after, kv + skip, n);
                after[n] = '\0';
            }
        }
    }
    if (*limit < 1) *limit = 1;
    if (*limit > 100) *limit = 100;
}

void batches_handle(app *a, h1_req *req, const key_conf *key, const request_headers *hdr,
                    const char *path, h1_method cmd)
{
    batches *bs = a->batches;
    if (!bs) {
        h1_add_header(req, "Retry-After", "1");
        http_reply_error(a, req, 503, "server_error", "database_unavailable", NULL,
                         "The Batch API needs the database (database.url), which is not "
                         "configured",
                         true);
        return;
    }
    bool list = strcmp(path, "/v1/batches") == 0 || strncmp(path, "/v1/batches?", 12) == 0;
    char id[40];
    bool cancel = false;
    if (!list && !batch_id(path, id, &cancel)) {
        http_reply_error(a, req, 404, "invalid_request_error", "unknown_url", NULL,
                         "Unknown batch path: use /v1/batches, /v1/batches/{id} or "
                         "/v1/batches/{id}/cancel",
                         false);
        return;
    }
    if (list && cmd == H1_POST) {
        if (hdr->idempotency_keys > 1)
            http_reply_error(a, req, 400, "invalid_request_error", "invalid_idempotency_key", NULL,
                             "Send at most one Idempotency-Key header", false);
        else
            create(a, req, key, hdr->idempotency_key);
        return;
    }
    if (!(list ? cmd == H1_GET : (cancel ? cmd == H1_POST : cmd == H1_GET))) {
        http_reply_error(a, req, 405, "invalid_request_error", "method_not_allowed", NULL,
                         "The Batch API takes POST /v1/batches, GET /v1/batches, GET "
                         "/v1/batches/{id} and POST /v1/batches/{id}/cancel",
                         false);
        return;
    }
    bcall *c = call_new(a, req, key);
    if (!c) return;
    int rc;
    if (list) {
        int limit;
        char after[40];
        list_query(path, &limit, after);
        rc = batchstore_list(bs->q, BATCH_API_OPENAI, key->id, after[0] ? after : NULL, limit,
                             on_batch, c);
    } else {
        snprintf(c->id, sizeof c->id, "%s", id);
        rc = cancel ? batchstore_cancel(bs->q, BATCH_API_OPENAI, id, key->id, on_batch, c)
                    : batchstore_get(bs->q, BATCH_API_OPENAI, id, key->id, on_batch, c);
    }
    if (rc != 0) db_failed(c, "it is busy or away");
}

/* ------------------------------------------------------------ the local queue */

static void try_claim(batches *bs);

/* One line being run: the run's sink. */
typedef struct bline {
    batches *bs;
    char batch_id[40], line_no[16], request_id[32];
    int status;
    bool deferred; /* handed to a provider batch: the deferral records its end */
    buf request;   /* the line's body: the run reads it until done */
    buf body;      /* the answer */
} bline;

static void on_finished(void *ctx, PGresult *res, const char *error)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_warn("batches: a line's result was not recorded: %s",
                 res ? PQresultErrorMessage(res) : error);
}

/* The line is no longer run here: the next one may start. */
static void line_free(bline *l)
{
    batches *bs = l->bs;
    bs->running--;
    bs->a->in_flight--;
    try_claim(bs); /* the next line at once, not at the next tick */
    buf_free(&l->request);
    buf_free(&l->body);
    free(l);
}

/* Records the line's end (it stays running in the database if this fails:
 * the next start's recovery fails it, never sends it again). */
static void line_end(bline *l, const char *state, const char *status, const char *response)
{
    batches *bs = l->bs;
    const char *instance = router_instance_id(bs->a->router);
    if (batchstore_finish(bs->q, l->batch_id, l->line_no, instance, state, status, l->request_id,
                          response, on_finished, NULL) != 0)
        log_warn("batches: line %s of %s: the database is away; its result is lost and it will "
                 "be failed as interrupted",
                 l->line_no, l->batch_id);
    line_free(l);
}

static void sink_head(void *ctx, int status, const char *content_type, buf *lines, bool stream)
{
    bline *l = ctx;
    l->status = status;
    buf_reset(lines);
}

static void sink_chunk(void *ctx, const char *data, size_t len)
{
    buf_append(&((bline *)ctx)->body, data, len);
}

static void on_deferred(void *ctx, PGresult *res, const char *error)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_warn("batches: a line for a provider batch was not queued: %s",
                 res ? PQresultErrorMessage(res) : error);
}

/* Its provider takes batches: the line waits for one (router/pbatch.h). */
static void sink_defer(void *ctx, const run_deferral *d)
{
    bline *l = ctx;
    l->deferred = true;
    if (pbatch_defer(l->bs->pb, l->bs->a->router, l->batch_id, l->line_no, d, on_deferred, NULL) !=
        0)
        log_warn("batches: line %s of %s: the database is away; it will be failed as "
                 "interrupted",
                 l->line_no, l->batch_id);
}

static void sink_done(void *ctx, const run_outcome *o)
{
    bline *l = ctx;
    if (l->deferred) {
        line_free(l);
        return;
    }
    char status[16];
    snprintf(status, sizeof status, "%d", l->status ? l->status : o->status);
    bool answered = l->status && l->body.len;
    line_end(l, answered && l->status < 400 ? "done" : "failed", answered ? status : "",
             answered ? l->body.data : (o->why ? o->why : "the request failed"));
}

static const run_sink line_sink = {sink_head, sink_chunk, sink_done, NULL, sink_defer};

static void line_start(batches *bs, PGresult *res, int row)
{
    app *a = bs->a;
    bline *l = calloc(1, sizeof *l);
    if (!l) return; /* stays running: the next start fails it as interrupted */
    l->bs = bs;
    snprintf(l->batch_id, sizeof l->batch_id, "%s", PQgetvalue(res, row, 0));
    snprintf(l->line_no, sizeof l->line_no, "%s", PQgetvalue(res, row, 1));
    http_new_request_id(l->request_id);
    bs->running++;
    a->in_flight++;
    const key_conf *k = keyring_find(a->keys, PQgetvalue(res, row, 4));
    if (!k || k->revoked || (k->expires_ms && util_wall_ms() >= k->expires_ms)) {
        line_end(l, "failed", "",
                 "the key that created this batch is no longer valid (revoked, expired or gone)");
        return;
    }
    run_input in = {
        .body = PQgetvalue(res, row, 3),
        .body_len = (size_t)PQgetlength(res, row, 3),
        .what = "POST /v1/chat/completions (batch)",
        .key = k,
        .request_id = l->request_id,
        .messages_api = strcmp(PQgetvalue(res, row, 5), "anthropic") == 0,
        .batch_id = l->batch_id,
        .budget_held = true, /* reserved at creation (migrations/0014) */
        .batch_defer = PQgetvalue(res, row, 6)[0] != 't',
    };
    /* the run reads the body until done; the claim's result goes now */
    buf_append(&l->request, in.body, in.body_len);
    in.body = l->request.data;
    run_start(a->router, &in, &line_sink, l);
}

static void on_claimed(void *ctx, PGresult *res, const char *error)
{
    batches *bs = ctx;
    bs->claiming = false;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("batches: claiming lines failed: %s", res ? PQresultErrorMessage(res) : error);
        return;
    }
    int n = PQntuples(res);
    if (n > 0) {
        bs->claim_wait = 0;
    } else if (bs->running == 0) {
        bs->claim_wait = bs->claim_wait ? bs->claim_wait * 2 : 1;
        if (bs->claim_wait > CLAIM_WAIT_MAX_TICKS) bs->claim_wait = CLAIM_WAIT_MAX_TICKS;
    }
    bs->claim_skip = bs->claim_wait;
    for (int i = 0; i < n; i++)
        line_start(bs, res, i);
}

static void on_finalized(void *ctx, PGresult *res, const char *error)
{
    batches *bs = ctx;
    bs->finalizing = false;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("batches: finalizing failed: %s", res ? PQresultErrorMessage(res) : error);
        return;
    }
    if (PQntuples(res) == 0) return;
    log_info("batches: batch %s ended", PQgetvalue(res, 0, 0));
    if (batchstore_finalize(bs->q, on_finalized, bs) == 0) bs->finalizing = true; /* another? */
}

static void on_expired(void *ctx, PGresult *res, const char *error)
{
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK && atoi(PQcmdTuples(res)) > 0)
        log_warn("batches: %s lines expired: their batch's 24 h window ended", PQcmdTuples(res));
}

static void on_recovered(void *ctx, PGresult *res, const char *error)
{
    batches *bs = ctx;
    bs->recovering = false;
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK && atoi(PQcmdTuples(res)) > 0)
        log_warn("batches: %s lines left running by a stopped gateway failed as interrupted",
                 PQcmdTuples(res));
}

/* Claims lines for the room left, unless live traffic is busy (it comes
 * first) or a claim is on its way. */
static void try_claim(batches *bs)
{
    app *a = bs->a;
    if (bs->claiming || a->draining || !pgqueue_up(bs->q)) return;
    const batches_conf *bc = config_batches(a->cfg);
    int64_t live = a->in_flight - bs->running;
    if (live > bc->yield_above) return;
    int room = (live > 0 && bc->busy_concurrency < bc->concurrency ? bc->busy_concurrency
                                                                   : bc->concurrency) -
               bs->running;
    if (room > 0 &&
        batchstore_claim(bs->q, router_instance_id(a->router), room, on_claimed, bs) == 0) {
        bs->claiming = true;
        bs->claims++;
    }
}

/* The process this one replaced on its spool: its running lines are
 * interrupted for sure. NULL when none. */
static const char *previous_instance(app *a)
{
    const struct budget *b = router_budgets(a->router);
    const char *p = b ? budget_previous_instance(b) : NULL;
    return p && *p ? p : NULL;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    batches *bs = arg;
    app *a = bs->a;
    if (a->draining || !pgqueue_up(bs->q)) return;
    const char *instance = router_instance_id(a->router);
    bs->ticks++;
    if (!bs->recovering && bs->ticks % RECOVER_EVERY_TICKS == 1 &&
        batchstore_recover(bs->q, instance, previous_instance(a), on_recovered, bs) == 0)
        bs->recovering = true;
    if (bs->ticks % FINALIZE_EVERY_TICKS == 2) batchstore_expire(bs->q, on_expired, bs);
    if (!bs->finalizing && bs->ticks % FINALIZE_EVERY_TICKS == 0 &&
        batchstore_finalize(bs->q, on_finalized, bs) == 0)
        bs->finalizing = true;
    if (bs->ticks % PROVIDER_EVERY_TICKS == 3) pbatch_tick(bs->pb, a->router);
    if (bs->claim_skip > 0)
        bs->claim_skip--;
    else
        try_claim(bs);
}

batches *batches_new(app *a)
{
    if (!a->db_queue) return NULL;
    batches *bs = calloc(1, sizeof *bs);
    if (!bs) return NULL;
    bs->a = a;
    bs->q = a->db_queue;
    bs->pb = pbatch_new(a->db_queue);
    bs->tick = event_new(a->base, -1, EV_PERSIST, on_tick, bs);
    struct timeval tv = {0, TICK_MS * 1000};
    if (!bs->q || !bs->pb || !bs->tick || event_add(bs->tick, &tv) != 0) {
        batches_free(bs);
        return NULL;
    }
    return bs;
}

void batches_health_json(const batches *bs, buf *out)
{
    pbatch_stats ps = pbatch_get_stats(bs->pb);
    buf_printf(out,
               ",\"batches\":{\"lines_running\":%d,\"claims\":%ld,\"provider_batches\":{"
               "\"submitted\":%ld,"
               "\"refused\":%ld,\"lost\":%ld,\"polls\":%ld,\"settled_lines\":%ld,"
               "\"in_flight\":%d}}",
               bs->running, bs->claims, ps.submitted, ps.refused, ps.lost, ps.polls,
               ps.settled_lines, ps.in_flight);
}

void batches_free(batches *bs)
{
    if (!bs) return;
    if (bs->tick) event_free(bs->tick);
    pbatch_free(bs->pb);
    free(bs);
}

/* ------------------------------------------------------------ Anthropic's Message Batches */

#define MESSAGES_BATCH_MAX 100000

static bool custom_id_ok(const jdoc *d, uint32_t v)
{
    if (jdoc_type(d, v) != JT_STRING) return false;
    size_t n = d->t[v].end - d->t[v].start;
    if (n < 1 || n > 64 || d->t[v].escaped) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = d->src[d->t[v].start + i];
        if (!(ch >= 'a' && ch <= 'z') && !(ch >= 'A' && ch <= 'Z') && !(ch >= '0' && ch <= '9') &&
            ch != '_' && ch != '-')
            return false;
    }
    return true;
}

/* requests[i] → one canonical JSONL line in out, its worst case added to
 * *worst; -1 with err. ids: the custom_ids so far. */
static int messages_request_line(app *a, const key_conf *key, const jdoc *d, uint32_t r, int i,
                                 batch_ids *ids, buf *out, int64_t *worst, char *err, size_t errlen)
{
    uint32_t id = jdoc_get(d, r, "custom_id"), params = jdoc_get(d, r, "params");
    if (!custom_id_ok(d, id)) {
        snprintf(err, errlen, "requests.%d.custom_id: must be 1 to 64 letters, digits, '_' or '-'",
                 i);
        return -1;
    }
    size_t idl;
    const char *ids_raw = jdoc_raw(d, id, &idl); /* with its quotes */
    if (!batch_ids_add(ids, ids_raw, idl)) {     /* a hash set: 100,000 ids are not scanned */
        snprintf(err, errlen,
                 "requests.%d.custom_id: %.*s is used twice: each request needs its own", i,
                 (int)idl, ids_raw);
        return -1;
    }
    if (jdoc_type(d, params) != JT_OBJECT) {
        snprintf(err, errlen, "requests.%d.params: Field required (the Messages API request)", i);
        return -1;
    }
    if (jdoc_type(d, jdoc_get(d, params, "stream")) == JT_TRUE) {
        snprintf(err, errlen, "requests.%d.params.stream: a batch request cannot stream", i);
        return -1;
    }
    size_t plen;
    const char *praw = jdoc_raw(d, params, &plen);
    buf body = BUF_INIT;
    jdoc pd = JDOC_INIT;
    char why[400];
    int rc = messages_to_chat(praw, plen, false, &pd, &body, why, sizeof why);
    if (rc != 0)
        snprintf(err, errlen, "requests.%d.params.%s", i, why);
    else {
        buf_append_str(out, "{\"custom_id\":");
        buf_append(out, ids_raw, idl);
        buf_append_str(out, ",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":");
        buf_append(out, body.data, body.len);
        buf_append_str(out, "}\n");
        *worst += run_batch_line_pusd(a->router, key, body.data, body.len, true);
    }
    jdoc_free(&pd);
    buf_free(&body);
    return rc;
}

static void create_messages(app *a, h1_req *req, const key_conf *key)
{
    size_t len;
    const char *body = h1_req_body(req, &len);
    jdoc d = JDOC_INIT;
    buf lines = BUF_INIT;
    batch_ids *ids = batch_ids_new();
    char err[500] = "";
    uint32_t reqs = JT_NONE;
    int n = 0;
    int64_t worst = 0;
    if (jdoc_parse(&d, body, len, err, sizeof err, NULL) != 0 || jdoc_type(&d, 0) != JT_OBJECT)
        snprintf(err, sizeof err, "the body must be a JSON object {\"requests\": [...]}");
    else if (jdoc_type(&d, reqs = jdoc_get(&d, 0, "requests")) != JT_ARRAY || !d.t[reqs].size)
        snprintf(err, sizeof err, "requests: a list of at least one {custom_id, params}");
    else if (d.t[reqs].size > MESSAGES_BATCH_MAX)
        snprintf(err, sizeof err, "requests: at most %d in a batch", MESSAGES_BATCH_MAX);
    else {
        err[0] = '\0';
        for (uint32_t r = jdoc_first(&d, reqs); r != JT_NONE && !err[0]; r = jdoc_next(&d, reqs, r))
            messages_request_line(a, key, &d, r, n++, ids, &lines, &worst, err, sizeof err);
    }
    jdoc_free(&d);
    batch_ids_free(ids);
    if (err[0]) {
        bad(a, req, NULL, err);
        buf_free(&lines);
        return;
    }
    bcall *c = call_new(a, req, key);
    if (!c) {
        buf_free(&lines);
        return;
    }
    c->api = BATCH_API_ANTHROPIC;
    c->lines = lines; /* kept until the query ends (borrowed by it) */
    char file_id[40] = "file-";
    memcpy(c->id, "msgbatch_", 9);
    if (!util_random_hex(c->id + 9, 12) || !util_random_hex(file_id + 5, 12)) {
        db_failed(c, "gave no random id");
        return;
    }
    batch_new b = {.id = c->id,
                   .key_id = key->id,
                   .key_sha256 = key->sha256,
                   .team = key->team,
                   .worst_pusd = worst};
    buf arrays[4] = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT};
    budget_arrays(c, &b, arrays);
    if (batchstore_create_messages(a->batches->q, &b, file_id, c->lines.data, n, on_batch, c) != 0)
        db_failed(c, "it is busy or away");
    for (int i = 0; i < 4; i++)
        buf_free(&arrays[i]);
}

/* One line of the results file, Anthropic's shape. */
static void result_line(bcall *c, PGresult *res, int row, jdoc *d, buf *out)
{
    const char *state = PQgetvalue(res, row, 2), *response = PQgetvalue(res, row, 4);
    int status = PQgetisnull(res, row, 3) ? 0 : atoi(PQgetvalue(res, row, 3));
    buf_append_str(out, "{\"custom_id\":");
    const char *id = PQgetvalue(res, row, 1);
    buf_append_json_str(out, id, strlen(id));
    buf_append_str(out, ",\"result\":");
    size_t at = out->len;
    if (strcmp(state, "done") == 0) {
        buf_append_str(out, "{\"type\":\"succeeded\",\"message\":");
        char msg_id[40];
        snprintf(msg_id, sizeof msg_id, "msg_%.24s", c->id + 9);
        if (messages_from_completion(response, strlen(response), msg_id, d, out) == 0) {
            buf_append_str(out, "}}\n");
            return;
        }
        out->len = at; /* unreadable: an error below */
        status = 502;
    }
    if (strcmp(state, "cancelled") == 0 || strcmp(state, "expired") == 0) {
        buf_append_str(out, state[0] == 'c' ? "{\"type\":\"canceled\"}}\n"
                                            : "{\"type\":\"expired\"}}\n");
        return;
    }
    buf_append_str(out, "{\"type\":\"errored\",\"error\":");
    if (status)
        messages_error_from(response, strlen(response), status, d, out);
    else
        messages_error_json(out, 500, response, strlen(response));
    buf_append_str(out, "}}\n");
}

static void on_results(void *ctx, PGresult *res, const char *error)
{
    bcall *c = ctx;
    if (!result_ok(res)) {
        db_failed(c, res ? PQresultErrorMessage(res) : error);
        return;
    }
    char msg[200];
    if (PQntuples(res) == 0) {
        snprintf(msg, sizeof msg, "No batch found with id '%.64s'", c->id);
        call_end(c, 404, NULL, 0, "batch_not_found", NULL, msg);
        return;
    }
    const char *st = PQgetvalue(res, 0, 0);
    if (strcmp(st, "completed") && strcmp(st, "cancelled") && strcmp(st, "expired")) {
        snprintf(msg, sizeof msg, "Batch %.64s has not ended yet: its results come once it has",
                 c->id);
        call_end(c, 400, NULL, 0, "batch_not_ended", NULL, msg);
        return;
    }
    buf out = BUF_INIT;
    jdoc d = JDOC_INIT;
    for (int i = 0; i < PQntuples(res); i++)
        if (!PQgetisnull(res, i, 1)) result_line(c, res, i, &d, &out);
    c->binary = true;
    call_end(c, 200, out.data ? out.data : "", out.len, NULL, NULL, NULL);
    jdoc_free(&d);
    buf_free(&out);
}

void messages_batches_handle(app *a, h1_req *req, const key_conf *key, const char *path,
                             h1_method cmd)
{
    batches *bs = a->batches;
    if (!bs) {
        http_reply_error(a, req, 503, "server_error", "database_unavailable", NULL,
                         "Message Batches need the database (database.url), which is not "
                         "configured",
                         true);
        return;
    }
    const char *rest = path + 20; /* past "/v1/messages/batches" */
    bool list = *rest == '\0' || *rest == '?';
    char id[40] = "";
    const char *tail = "";
    if (!list) {
        size_t n = strcspn(rest + 1, "/?");
        if (*rest != '/' || n == 0 || n >= sizeof id) {
            http_reply_error(a, req, 404, "invalid_request_error", "unknown_url", NULL,
                             "Unknown path under /v1/messages/batches", false);
            return;
        }
        memcpy(id, rest + 1, n);
        id[n] = '\0';
        tail = rest + 1 + n;
    }
    bool cancel = strncmp(tail, "/cancel", 7) == 0, results = strncmp(tail, "/results", 8) == 0;
    if (list && cmd == H1_POST) {
        create_messages(a, req, key);
        return;
    }
    bool ok = list     ? cmd == H1_GET
              : cancel ? cmd == H1_POST
                       : (results || !*tail || *tail == '?') && cmd == H1_GET;
    if (!ok) {
        http_reply_error(a, req, 405, "invalid_request_error", "method_not_allowed", NULL,
                         "Message Batches take POST and GET /v1/messages/batches, GET "
                         "/v1/messages/batches/{id}, POST .../{id}/cancel and GET .../{id}/results",
                         false);
        return;
    }
    bcall *c = call_new(a, req, key);
    if (!c) return;
    c->api = BATCH_API_ANTHROPIC;
    snprintf(c->id, sizeof c->id, "%s", id);
    int rc;
    if (list) {
        int limit;
        char after[40];
        list_query(path, &limit, after);
        rc = batchstore_list(bs->q, BATCH_API_ANTHROPIC, key->id, after[0] ? after : NULL, limit,
                             on_batch, c);
    } else if (results)
        rc = batchstore_results(bs->q, id, key->id, on_results, c);
    else if (cancel)
        rc = batchstore_cancel(bs->q, BATCH_API_ANTHROPIC, id, key->id, on_batch, c);
    else
        rc = batchstore_get(bs->q, BATCH_API_ANTHROPIC, id, key->id, on_batch, c);
    if (rc != 0) db_failed(c, "it is busy or away");
}

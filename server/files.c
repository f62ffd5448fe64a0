/* The Files API (server/files.h). */
#include "server/files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "db/filestore.h"
#include "lib/log.h"
#include "lib/multipart.h"
#include "lib/util.h"
#include "router/batch_input.h"
#include "router/run.h"
#include "server/http.h"

/* One request waiting for the database. */
typedef struct fcall {
    http_held h; /* first: the request, held until the answer */
    bool binary; /* the answer is a file's content, not JSON */
} fcall;

filestore *files_store_new(app *a)
{
    return a->db_queue ? filestore_new(a->db_queue) : NULL;
}

static void not_found(app *a, h1_req *req, const char *id)
{
    char msg[200];
    snprintf(msg, sizeof msg, "No such File object: %.64s", id ? id : "");
    http_reply_error(a, req, 404, "invalid_request_error", "file_not_found", "id", msg, false);
}

static void unavailable(app *a, h1_req *req, const char *why)
{
    char msg[300];
    snprintf(msg, sizeof msg, "The Files API needs the database, which %s; retry shortly", why);
    h1_add_header(req, "Retry-After", "1");
    http_reply_error(a, req, 503, "server_error", "database_unavailable", NULL, msg, true);
}

static void on_done(void *ctx, int status, const char *json, size_t len, const char *error)
{
    fcall *c = ctx;
    app *a = c->h.a;
    h1_req *req = c->h.req;
    if (http_unhold(&c->h)) {
        if (status == 200 && c->binary)
            http_reply(a, req, 200, "application/octet-stream", json, len);
        else if (status == 200)
            http_reply_json(a, req, 200, json, len);
        else if (status == 404)
            not_found(a, req, NULL);
        else
            unavailable(a, req, "failed");
    }
    free(c);
}

static fcall *call_new(app *a, h1_req *req, bool binary)
{
    fcall *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->binary = binary;
    http_hold(&c->h, a, req);
    return c;
}

/* A call the store did not take (down, or too busy). */
static void call_refused(fcall *c)
{
    app *a = c->h.a;
    h1_req *req = c->h.req;
    if (http_unhold(&c->h)) unavailable(a, req, "cannot be reached or is busy");
    free(c);
}

static const char *content_type(const h1_req *req)
{
    for (int i = 0; i < h1_req_header_count(req); i++) {
        const char *k, *v;
        h1_req_header(req, i, &k, &v);
        if (strcasecmp(k, "content-type") == 0) return v;
    }
    return NULL;
}

static void bad(app *a, h1_req *req, const char *param, const char *msg)
{
    http_reply_error(a, req, 400, "invalid_request_error", "invalid_request", param, msg, false);
}

/* A line's worst case under the uploading key, the only one that can
 * make a batch of the file. */
typedef struct line_cost_ctx {
    router *rt;
    const key_conf *key;
} line_cost_ctx;

static int64_t line_cost(void *ctx, const char *body, size_t len)
{
    const line_cost_ctx *lc = ctx;
    return run_batch_line_pusd(lc->rt, lc->key, body, len, false);
}

static void upload(app *a, h1_req *req, const key_conf *key)
{
    char boundary[72], err[400];
    static multipart m; /* one loop per process */
    if (!multipart_boundary(content_type(req), boundary)) {
        bad(a, req, NULL,
            "Upload a file as multipart/form-data with the fields \"purpose\" and \"file\"");
        return;
    }
    size_t len;
    const char *body = h1_req_body(req, &len);
    if (multipart_parse(body, len, boundary, &m, err, sizeof err) != 0) {
        char msg[460];
        snprintf(msg, sizeof msg, "The multipart body could not be read: %s", err);
        bad(a, req, NULL, msg);
        return;
    }
    const multipart_part *purpose = multipart_get(&m, "purpose"), *file = multipart_get(&m, "file");
    if (!purpose || purpose->len != 5 || memcmp(purpose->data, "batch", 5) != 0) {
        bad(a, req, "purpose",
            "purpose must be \"batch\": this gateway stores the input files of batches");
        return;
    }
    if (!file) {
        bad(a, req, "file", "The \"file\" field is missing: attach the JSONL file as \"file\"");
        return;
    }
    batch_input_info info;
    line_cost_ctx lc = {a->router, key};
    int64_t t0 = util_now_us();
    if (batch_input_check_cost(file->data, file->len, &info, line_cost, &lc, err, sizeof err) !=
        0) {
        bad(a, req, "file", err);
        return;
    }
    log_debug("files: %d lines checked and priced in %lld us", info.lines,
              (long long)(util_now_us() - t0));
    /* the content goes to the database as a C string: terminate it in place
     * (the closing boundary's CR, which nothing reads again) */
    ((char *)file->data)[file->len] = '\0';
    char id[40] = "file-";
    if (!util_random_hex(id + 5, 12)) {
        unavailable(a, req, "is not reached: no random id");
        return;
    }
    fcall *c = call_new(a, req, false);
    if (!c) {
        http_reply_error(a, req, 503, "server_error", "out_of_memory", NULL,
                         "The gateway is out of memory; retry shortly", true);
        return;
    }
    file_new f = {.id = id,
                  .key_id = key->id,
                  .team = key->team,
                  .purpose = "batch",
                  .filename = file->filename ? file->filename : "upload.jsonl",
                  .endpoint = info.endpoint,
                  .content = file->data,
                  .len = file->len,
                  .lines = info.lines,
                  .worst_pusd = info.worst_pusd};
    if (filestore_put(a->files, &f, on_done, c) != 0) call_refused(c);
}

/* /v1/files/{id}[/content] → id into out; *content says which. */
static bool file_id(const char *path, char out[64], bool *content)
{
    const char *p = path + 10; /* past "/v1/files/" */
    size_t n = strcspn(p, "/?");
    if (n == 0 || n >= 64) return false;
    memcpy(out, p, n);
    out[n] = '\0';
    const char *rest = p + n;
    *content = strncmp(rest, "/content", 8) == 0 && (rest[8] == '\0' || rest[8] == '?');
    return *content || *rest == '\0' || *rest == '?';
}

void files_handle(app *a, h1_req *req, const key_conf *key, const char *path, h1_method cmd)
{
    if (!a->files) {
        unavailable(a, req, "is not configured (database.url)");
        return;
    }
    bool list = strcmp(path, "/v1/files") == 0 || strncmp(path, "/v1/files?", 10) == 0;
    char id[64];
    bool content = false;
    if (!list && !file_id(path, id, &content)) {
        not_found(a, req, path);
        return;
    }
    if (list && cmd == H1_POST) {
        upload(a, req, key);
        return;
    }
    int rc = -2;
    fcall *c = NULL;
    if (list && cmd == H1_GET) {
        if (!(c = call_new(a, req, false))) goto oom;
        rc = filestore_list(a->files, key->id, NULL, 10000, on_done, c);
    } else if (!list && cmd == H1_GET) {
        if (!(c = call_new(a, req, content))) goto oom;
        rc = content ? filestore_content(a->files, id, key->id, on_done, c)
                     : filestore_get(a->files, id, key->id, on_done, c);
    } else if (!list && !content && cmd == H1_DELETE) {
        if (!(c = call_new(a, req, false))) goto oom;
        rc = filestore_delete(a->files, id, key->id, on_done, c);
    }
    if (rc == -2) {
        http_reply_error(a, req, 405, "invalid_request_error", "method_not_allowed", NULL,
                         "The Files API takes POST /v1/files, GET /v1/files, GET and DELETE "
                         "/v1/files/{id}, GET /v1/files/{id}/content",
                         false);
        return;
    }
    if (rc != 0) call_refused(c);
    return;
oom:
    http_reply_error(a, req, 503, "server_error", "out_of_memory", NULL,
                     "The gateway is out of memory; retry shortly", true);
}

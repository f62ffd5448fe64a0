/* Files in PostgreSQL (db/filestore.h). */
#include "db/filestore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/pgconn.h"
#include "lib/log.h"

#define MAX_PARAMS 8
#define MAX_QUEUE 256

typedef struct fjob {
    const char *sql;
    const char *values[MAX_PARAMS]; /* the parameters: owned[i], or borrowed */
    char *owned[MAX_PARAMS];
    int n_params;
    filestore_fn fn;
    void *ctx;
    struct fjob *next;
} fjob;

struct filestore {
    pgconn *pg;
    fjob *head, *tail, *running;
    int queued;
};

/* A file's object as OpenAI answers it. */
#define FILE_JSON                                                                                  \
    "json_build_object('id', id, 'object', 'file', 'bytes', bytes, 'created_at', "                 \
    "extract(epoch FROM created_at)::bigint, 'expires_at', NULL, 'filename', filename, "           \
    "'purpose', purpose, 'status', 'processed', 'status_details', NULL)"

static const char SQL_PUT[] =
    "INSERT INTO bridle_files (id, key_id, team, purpose, filename, endpoint, content, bytes, "
    "lines) VALUES ($1, $2, $3, $4, $5, $6, $7, octet_length($7), $8::integer) "
    "RETURNING " FILE_JSON;
static const char SQL_GET[] =
    "SELECT " FILE_JSON " FROM bridle_files WHERE id = $1 AND key_id = $2 "
    "AND deleted_at IS NULL";
static const char SQL_CONTENT[] = "SELECT content FROM bridle_files WHERE id = $1 AND key_id = $2 "
                                  "AND deleted_at IS NULL";
static const char SQL_DELETE[] =
    "UPDATE bridle_files SET deleted_at = now() WHERE id = $1 AND key_id = $2 AND deleted_at IS "
    "NULL RETURNING json_build_object('id', id, 'object', 'file', 'deleted', true)";
static const char SQL_LIST[] =
    "SELECT json_build_object('object', 'list', 'data', coalesce(json_agg(f.j ORDER BY f.t DESC), "
    "'[]'), 'has_more', false) FROM (SELECT " FILE_JSON " AS j, created_at AS t FROM bridle_files "
    "WHERE key_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR purpose = $2) ORDER BY "
    "created_at DESC LIMIT $3::integer) f";

static void pump(filestore *fs);

static void job_free(fjob *j)
{
    for (int i = 0; i < j->n_params; i++)
        free(j->owned[i]);
    free(j);
}

static void on_result(void *ctx, PGresult *res, const char *error)
{
    filestore *fs = ctx;
    fjob *j = fs->running;
    fs->running = NULL;
    if (!res ||
        (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)) {
        const char *why = res ? PQresultErrorMessage(res) : error;
        log_warn("files: query failed: %s", why ? why : "unknown error");
        j->fn(j->ctx, 503, NULL, 0, why ? why : "the database failed");
    } else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        j->fn(j->ctx, 404, NULL, 0, NULL);
    } else {
        j->fn(j->ctx, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0), NULL);
    }
    job_free(j);
    pump(fs);
}

static void pump(filestore *fs)
{
    while (fs->head && !fs->running && pgconn_idle(fs->pg)) {
        fjob *j = fs->head;
        if (pgconn_send(fs->pg, j->sql, j->n_params, j->values, on_result, fs) != 0) return;
        fs->head = j->next;
        if (!fs->head) fs->tail = NULL;
        fs->queued--;
        fs->running = j;
    }
}

/* The database went away: every queued query fails now (the one running
 * fails through its own result). */
static void on_state(void *ctx, bool up)
{
    filestore *fs = ctx;
    if (up) {
        pump(fs);
        return;
    }
    while (fs->head) {
        fjob *j = fs->head;
        fs->head = j->next;
        fs->queued--;
        j->fn(j->ctx, 503, NULL, 0, "the database cannot be reached");
        job_free(j);
    }
    fs->tail = NULL;
}

filestore *filestore_new(struct event_base *base, const char *database_url)
{
    filestore *fs = calloc(1, sizeof *fs);
    if (!fs) return NULL;
    pgconn_options po = {.connect_timeout_ms = 5000, .query_timeout_ms = 60000};
    fs->pg = pgconn_new(base, database_url, &po, on_state, fs);
    if (!fs->pg) {
        free(fs);
        return NULL;
    }
    return fs;
}

void filestore_free(filestore *fs)
{
    if (!fs) return;
    pgconn_free(fs->pg);
    while (fs->head) {
        fjob *j = fs->head;
        fs->head = j->next;
        job_free(j);
    }
    if (fs->running) job_free(fs->running);
    free(fs);
}

/* Queues sql with params (NULL allowed): copied, but for param `borrow`
 * (-1: none), which must outlive the query. */
static int submit(filestore *fs, const char *sql, const char *const *params, int n, int borrow,
                  filestore_fn fn, void *ctx)
{
    if (!pgconn_up(fs->pg) || fs->queued >= MAX_QUEUE) return -1;
    fjob *j = calloc(1, sizeof *j);
    if (!j) return -1;
    j->sql = sql;
    j->fn = fn;
    j->ctx = ctx;
    j->n_params = n;
    for (int i = 0; i < n; i++) {
        if (i == borrow || !params[i]) {
            j->values[i] = params[i];
            continue;
        }
        if (!(j->owned[i] = strdup(params[i]))) {
            job_free(j);
            return -1;
        }
        j->values[i] = j->owned[i];
    }
    if (fs->tail)
        fs->tail->next = j;
    else
        fs->head = j;
    fs->tail = j;
    fs->queued++;
    pump(fs);
    return 0;
}

int filestore_put(filestore *fs, const file_new *f, filestore_fn fn, void *ctx)
{
    char lines[16];
    snprintf(lines, sizeof lines, "%d", f->lines);
    const char *p[] = {f->id,       f->key_id,   f->team,    f->purpose,
                       f->filename, f->endpoint, f->content, lines};
    return submit(fs, SQL_PUT, p, 8, 6, fn, ctx); /* the content is the caller's */
}

int filestore_get(filestore *fs, const char *id, const char *key_id, filestore_fn fn, void *ctx)
{
    const char *p[] = {id, key_id};
    return submit(fs, SQL_GET, p, 2, -1, fn, ctx);
}

int filestore_content(filestore *fs, const char *id, const char *key_id, filestore_fn fn, void *ctx)
{
    const char *p[] = {id, key_id};
    return submit(fs, SQL_CONTENT, p, 2, -1, fn, ctx);
}

int filestore_delete(filestore *fs, const char *id, const char *key_id, filestore_fn fn, void *ctx)
{
    const char *p[] = {id, key_id};
    return submit(fs, SQL_DELETE, p, 2, -1, fn, ctx);
}

int filestore_list(filestore *fs, const char *key_id, const char *purpose, int limit,
                   filestore_fn fn, void *ctx)
{
    char n[16];
    snprintf(n, sizeof n, "%d", limit);
    const char *p[] = {key_id, purpose, n};
    return submit(fs, SQL_LIST, p, 3, -1, fn, ctx);
}

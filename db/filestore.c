/* Files in PostgreSQL (db/filestore.h). */
#include "db/filestore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/pgqueue.h"
#include "lib/log.h"

struct filestore {
    pgqueue *q;
};

/* One call: its callback. */
typedef struct fcall {
    filestore_fn fn;
    void *ctx;
} fcall;

/* A file's object as OpenAI answers it. */
#define FILE_JSON                                                                                  \
    "json_build_object('id', id, 'object', 'file', 'bytes', bytes, 'created_at', "                 \
    "extract(epoch FROM created_at)::bigint, 'expires_at', NULL, 'filename', filename, "           \
    "'purpose', purpose, 'status', 'processed', 'status_details', NULL)"

static const char SQL_PUT[] =
    "INSERT INTO bridle_files (id, key_id, team, purpose, filename, endpoint, content, bytes, "
    "lines, worst_pusd) VALUES ($1, $2, $3, $4, $5, $6, $7, octet_length($7), $8::integer, "
    "$9::bigint) "
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
    "WHERE key_id = $1 AND deleted_at IS NULL AND purpose <> 'messages_batch' AND ($2::text IS "
    "NULL OR purpose = $2) ORDER BY "
    "created_at DESC LIMIT $3::integer) f";

static void on_result(void *ctx, PGresult *res, const char *error)
{
    fcall c = *(fcall *)ctx;
    free(ctx);
    if (!res ||
        (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)) {
        const char *why = res ? PQresultErrorMessage(res) : error;
        log_warn("files: query failed: %s", why ? why : "unknown error");
        c.fn(c.ctx, 503, NULL, 0, why ? why : "the database failed");
    } else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        c.fn(c.ctx, 404, NULL, 0, NULL);
    } else {
        c.fn(c.ctx, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0), NULL);
    }
}

filestore *filestore_new(pgqueue *q)
{
    filestore *fs = calloc(1, sizeof *fs);
    if (fs) fs->q = q;
    return fs;
}

void filestore_free(filestore *fs)
{
    free(fs);
}

static int submit(filestore *fs, const char *sql, const char *const *params, int n, int borrow,
                  filestore_fn fn, void *ctx)
{
    fcall *c = malloc(sizeof *c);
    if (!c) return -1;
    *c = (fcall){fn, ctx};
    if (pgqueue_send(fs->q, sql, params, n, borrow, on_result, c) == 0) return 0;
    free(c);
    return -1;
}

int filestore_put(filestore *fs, const file_new *f, filestore_fn fn, void *ctx)
{
    char lines[16], worst[24];
    snprintf(lines, sizeof lines, "%d", f->lines);
    snprintf(worst, sizeof worst, "%lld", (long long)f->worst_pusd);
    const char *p[] = {f->id,       f->key_id,  f->team, f->purpose, f->filename,
                       f->endpoint, f->content, lines,   worst};
    return submit(fs, SQL_PUT, p, 9, 6, fn, ctx); /* the content is the caller's */
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

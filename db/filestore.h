/* Files (migration 0011, bridle_files): what the Files API stores, in
 * PostgreSQL so that every gateway on the database serves every file.
 * Each call answers JSON in OpenAI's shapes, built by the query itself, or
 * the file's content. Queries run in order on a db/pgqueue (one
 * non-blocking connection); callbacks run on the loop, never inside the
 * call that queued them. A file belongs to the key that
 * stored it: another key gets 404, as for a file that does not exist. */
#ifndef BRIDLE_FILESTORE_H
#define BRIDLE_FILESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pgqueue;
typedef struct filestore filestore;

/* status: 200 (json holds the answer), 404 (no such file for this key),
 * 503 (the database is away or failed: error says why). json is valid
 * during the callback only. */
typedef void (*filestore_fn)(void *ctx, int status, const char *json, size_t len,
                             const char *error);

/* On q (not owned: the batches' queries share its connection). */
filestore *filestore_new(struct pgqueue *q);
void filestore_free(filestore *fs);

/* What a new file is. */
typedef struct file_new {
    const char *id;                            /* "file-" + 24 hex digits */
    const char *key_id, *team;                 /* team may be NULL */
    const char *purpose, *filename, *endpoint; /* endpoint may be NULL */
    const char *content; /* NUL-terminated, len bytes; not copied: valid until fn runs */
    size_t len;
    int lines;
    int64_t worst_pusd; /* what its lines may cost at most, together (a batch reserves it) */
} file_new;

/* Each returns 0, or -1 when the queue is full or the database is down
 * (then fn is not called). The strings are copied (but a new file's
 * content). */
int filestore_put(filestore *fs, const file_new *f, filestore_fn fn, void *ctx);
int filestore_get(filestore *fs, const char *id, const char *key_id, filestore_fn fn, void *ctx);
/* fn gets the content itself as json/len. */
int filestore_content(filestore *fs, const char *id, const char *key_id, filestore_fn fn,
                      void *ctx);
int filestore_delete(filestore *fs, const char *id, const char *key_id, filestore_fn fn, void *ctx);
/* {"object":"list","data":[...],"has_more":false}, newest first; purpose NULL = any. */
int filestore_list(filestore *fs, const char *key_id, const char *purpose, int limit,
                   filestore_fn fn, void *ctx);

#endif

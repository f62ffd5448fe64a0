/* The Files API, OpenAI's shapes (what the openai SDK's `files` calls
 * send): POST /v1/files (multipart: purpose "batch" and a JSONL file,
 * checked line by line, router/batch_input.h), GET /v1/files,
 * GET /v1/files/{id}, GET /v1/files/{id}/content, DELETE /v1/files/{id}.
 * Files live in PostgreSQL (db/filestore.h); without a database the API
 * answers 503. */
#ifndef BRIDLE_FILES_H
#define BRIDLE_FILES_H

#include "router/config.h"
#include "server/app.h"
#include "server/h1.h"

struct filestore *files_store_new(app *a); /* NULL without a database */
/* path starts with /v1/files. */
void files_handle(app *a, h1_req *req, const key_conf *key, const char *path, h1_method cmd);

#endif

/* Batches in PostgreSQL (db/batchstore.h). */
#include "db/batchstore.h"

#include <stdio.h>

/* clang-format off */
#define EPOCH(x) "extract(epoch FROM " x ")::bigint"
#define RFC3339(x) "to_char(" x " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
#define COUNT_LINES(expr) \
    "(SELECT " expr " FROM bridle_batch_lines l WHERE l.batch_id = b.id)"
/* An ended batch has its counts on its row (migrations/0015); a running one
 * is counted from its lines. */
#define COUNTS(ended, running) \
    "CASE WHEN b.n_done IS NOT NULL THEN " ended " ELSE " COUNT_LINES(running) " END"

/* A batch row `b` as OpenAI's Batch object. */
#define OPENAI_JSON \
    "json_build_object('id', b.id, 'object', 'batch', 'endpoint', b.endpoint, 'errors', NULL, " \
    "'input_file_id', b.input_file_id, 'completion_window', b.completion_window, " \
    "'status', b.status, 'output_file_id', b.output_file_id, 'error_file_id', b.error_file_id, " \
    "'created_at', " EPOCH("b.created_at") ", 'in_progress_at', " EPOCH("b.in_progress_at") ", " \
    "'expires_at', " EPOCH("b.expires_at") ", 'finalizing_at', " EPOCH("b.finalizing_at") ", " \
    "'completed_at', " EPOCH("b.completed_at") ", 'failed_at', NULL, " \
    "'expired_at', " EPOCH("b.expired_at") ", " \
    "'cancelling_at', " EPOCH("b.cancelling_at") ", 'cancelled_at', " EPOCH("b.cancelled_at") ", " \
    "'request_counts', " COUNTS("json_build_object('total', b.total, 'completed', b.n_done, " \
    "'failed', b.n_failed + b.n_cancelled + b.n_expired)", \
    "json_build_object('total', b.total, " \
    "'completed', count(*) FILTER (WHERE l.state = 'done'), " \
    "'failed', count(*) FILTER (WHERE l.state IN ('failed', 'cancelled', 'expired')))") ", " \
    "'metadata', b.metadata)"

/* A batch row `b` as Anthropic's MessageBatch (times in RFC 3339). */
#define ANTHROPIC_JSON \
    "json_build_object('id', b.id, 'type', 'message_batch', 'processing_status', " \
    "CASE b.status WHEN 'in_progress' THEN 'in_progress' WHEN 'cancelling' THEN 'canceling' " \
    "ELSE 'ended' END, 'request_counts', " COUNTS("json_build_object('processing', 0, " \
    "'succeeded', b.n_done, 'errored', b.n_failed, 'canceled', b.n_cancelled, " \
    "'expired', b.n_expired)", "json_build_object(" \
    "'processing', count(*) FILTER (WHERE l.state IN ('pending', 'running', 'queued', " \
    "'submitted')), " \
    "'succeeded', count(*) FILTER (WHERE l.state = 'done'), " \
    "'errored', count(*) FILTER (WHERE l.state = 'failed'), " \
    "'canceled', count(*) FILTER (WHERE l.state = 'cancelled'), " \
    "'expired', count(*) FILTER (WHERE l.state = 'expired'))") ", " \
    "'ended_at', " RFC3339("coalesce(b.completed_at, b.cancelled_at, b.expired_at)") ", " \
    "'created_at', " RFC3339("b.created_at") ", 'expires_at', " RFC3339("b.expires_at") ", " \
    "'archived_at', NULL, 'cancel_initiated_at', " RFC3339("b.cancelling_at") ", " \
    "'results_url', CASE WHEN b.status IN ('completed', 'cancelled', 'expired') THEN " \
    "'/v1/messages/batches/' || b.id || '/results' END)"
/* clang-format on */

static const char SQL_FILE_ENDPOINT[] =
    "SELECT endpoint FROM bridle_files WHERE id = $1 AND key_id = $2 AND purpose = 'batch' AND "
    "deleted_at IS NULL";

/* The batch `b` reserves its worst case on the budgets $N..$N+3 (arrays)
 * until its window ends, plus an hour (migrations/0014): in the creation's
 * statement, so that a refusal (it raises) creates nothing. */
#define RESERVE(S, I, P, L)                                                                        \
    "bridle_batch_reserve(b.id, b.reserved_pusd, b.expires_at + interval '1 hour', $" S            \
    "::text[], $" I "::text[], $" P "::text[], $" L "::bigint[])"

/* The lines come from the file's content, split in the database: the file
 * was checked line by line at upload (router/batch_input.h). */
static const char SQL_CREATE[] =
    "WITH f AS (SELECT id, endpoint, content, lines, worst_pusd FROM bridle_files WHERE id = $5 "
    "AND key_id = $2 AND purpose = 'batch' AND deleted_at IS NULL), "
    "b AS (INSERT INTO bridle_batches (id, key_id, key_sha256, team, input_file_id, endpoint, "
    "completion_window, status, metadata, total, in_progress_at, expires_at, reserved_pusd) "
    "SELECT $1, $2, $3, $4, f.id, f.endpoint, $6, 'in_progress', $7::json, f.lines, now(), now() "
    "+ interval '24 hours', f.worst_pusd FROM f RETURNING *), "
    "l AS (INSERT INTO bridle_batch_lines (batch_id, line_no, custom_id, body) SELECT b.id, "
    "t.n, (t.line::json)->>'custom_id', ((t.line::json)->'body')::text FROM b, f, "
    "regexp_split_to_table(f.content, E'\\n') WITH ORDINALITY AS t(line, n) WHERE "
    "btrim(t.line, E' \\r\\t') <> '') "
    "SELECT " OPENAI_JSON " FROM b WHERE " RESERVE("8", "9", "10", "11") " >= 0";

/* clang-format off */
#define GET_AS(J, API) \
    "SELECT " J " FROM bridle_batches b WHERE b.id = $1 AND b.key_id = $2 AND b.api = '" API "'"

#define LIST_AS(J, API, HEAD) \
    "WITH page AS (SELECT b.*, " J " AS j FROM bridle_batches b WHERE b.key_id = $1 AND " \
    "b.api = '" API "' AND ($2::text IS NULL OR b.created_at < (SELECT created_at FROM " \
    "bridle_batches WHERE id = $2) OR (b.created_at = (SELECT created_at FROM bridle_batches " \
    "WHERE id = $2) AND b.id < $2)) ORDER BY b.created_at DESC, b.id DESC LIMIT $3::integer + 1), " \
    "shown AS (SELECT * FROM page ORDER BY created_at DESC, id DESC LIMIT $3::integer) " \
    "SELECT json_build_object(" HEAD "'data', coalesce((SELECT json_agg(j ORDER BY created_at " \
    "DESC, id DESC) FROM shown), '[]'), 'first_id', (SELECT id FROM shown ORDER BY created_at " \
    "DESC, id DESC LIMIT 1), 'last_id', (SELECT id FROM shown ORDER BY created_at, id LIMIT 1), " \
    "'has_more', (SELECT count(*) FROM page) > $3::integer)"

#define CANCEL_AS(J, API) \
    "WITH c AS (UPDATE bridle_batches SET status = 'cancelling', cancelling_at = now() WHERE " \
    "id = $1 AND key_id = $2 AND api = '" API "' AND status = 'in_progress' RETURNING *), " \
    "l AS (UPDATE bridle_batch_lines SET state = 'cancelled' WHERE batch_id IN (SELECT id FROM " \
    "c) AND state IN ('pending', 'queued')) " \
    "SELECT " J " FROM c b UNION ALL SELECT " J " FROM bridle_batches b WHERE b.id = $1 AND " \
    "b.key_id = $2 AND b.api = '" API "' AND NOT EXISTS (SELECT 1 FROM c)"
/* clang-format on */

static const char *const SQL_GET[] = {GET_AS(OPENAI_JSON, "openai"),
                                      GET_AS(ANTHROPIC_JSON, "anthropic")};
static const char *const SQL_LIST[] = {LIST_AS(OPENAI_JSON, "openai", "'object', 'list', "),
                                       LIST_AS(ANTHROPIC_JSON, "anthropic", "")};
static const char *const SQL_CANCEL[] = {CANCEL_AS(OPENAI_JSON, "openai"),
                                         CANCEL_AS(ANTHROPIC_JSON, "anthropic")};

/* An Anthropic batch: its requests, translated at creation, are a file of
 * its own (never listed), and then lines as for OpenAI's. */
static const char SQL_CREATE_MESSAGES[] =
    "WITH f AS (INSERT INTO bridle_files (id, key_id, team, purpose, filename, endpoint, content, "
    "bytes, lines) VALUES ($5, $2, $4, 'messages_batch', $1 || '_input.jsonl', "
    "'/v1/chat/completions', $6, octet_length($6), $7::integer) RETURNING id, content, lines), "
    "b AS (INSERT INTO bridle_batches (id, key_id, key_sha256, team, api, input_file_id, endpoint, "
    "completion_window, status, total, in_progress_at, expires_at, reserved_pusd) SELECT $1, $2, "
    "$3, $4, 'anthropic', f.id, '/v1/chat/completions', '24h', 'in_progress', f.lines, now(), "
    "now() + interval '24 hours', $8::bigint FROM f RETURNING *), "
    "l AS (INSERT INTO bridle_batch_lines (batch_id, line_no, custom_id, body) SELECT b.id, t.n, "
    "(t.line::json)->>'custom_id', ((t.line::json)->'body')::text FROM b, f, "
    "regexp_split_to_table(f.content, E'\\n') WITH ORDINALITY AS t(line, n) WHERE "
    "btrim(t.line, E' \\r\\t') <> '') "
    "SELECT " ANTHROPIC_JSON " FROM b WHERE " RESERVE("9", "10", "11", "12") " >= 0";

static const char SQL_RESULTS[] =
    "SELECT b.status, l.custom_id, l.state, l.status, l.response FROM bridle_batches b LEFT JOIN "
    "bridle_batch_lines l ON l.batch_id = b.id WHERE b.id = $1 AND b.key_id = $2 AND b.api = "
    "'anthropic' ORDER BY l.line_no";

static const char SQL_CLAIM[] =
    "UPDATE bridle_batch_lines l SET state = 'running', claimed_by = $1, claimed_at = now() FROM "
    "(SELECT x.batch_id, x.line_no, b.key_sha256, b.api FROM bridle_batch_lines x JOIN "
    "bridle_batches b "
    "ON b.id = x.batch_id WHERE x.state = 'pending' AND b.status = 'in_progress' ORDER BY "
    "b.created_at, x.batch_id, x.line_no LIMIT $2::integer FOR UPDATE OF x SKIP LOCKED) c WHERE "
    "l.batch_id = c.batch_id AND l.line_no = c.line_no RETURNING l.batch_id, l.line_no, "
    "l.custom_id, l.body, c.key_sha256, c.api, l.live";

static const char SQL_FINISH[] =
    "UPDATE bridle_batch_lines SET state = $4, status = nullif($5, '')::integer, request_id = $6, "
    "response = $7 WHERE batch_id = $1 AND line_no = $2::integer AND claimed_by = $3 AND state = "
    "'running'";

/* One line of an output or error file (OpenAI's shape). */
#define RESULT_LINE                                                                                \
    "json_build_object('id', 'batch_req_' || coalesce(l.request_id, md5(l.batch_id || "            \
    "l.line_no)), "                                                                                \
    "'custom_id', l.custom_id, 'response', CASE WHEN l.status IS NULL THEN NULL ELSE "             \
    "json_build_object('status_code', l.status, 'request_id', l.request_id, 'body', "              \
    "l.response::jsonb) END, 'error', CASE WHEN l.status IS NOT NULL THEN NULL WHEN l.state = "    \
    "'cancelled' THEN json_build_object('code', 'batch_cancelled', 'message', 'the batch was "     \
    "cancelled before this request was sent') WHEN l.state = 'expired' THEN "                      \
    "json_build_object('code', 'batch_expired', 'message', 'the batch''s completion window "       \
    "ended before this request was sent') ELSE json_build_object('code', "                         \
    "'batch_request_failed', 'message', l.response) END)::text"

#define NEW_FILE_ID "'file-' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24)"

static const char SQL_FINALIZE[] =
    "WITH b AS (SELECT bb.id, bb.key_id, bb.team, bb.status FROM bridle_batches bb WHERE "
    "bb.status IN ('in_progress', 'cancelling') AND NOT EXISTS (SELECT 1 FROM "
    "bridle_batch_lines x WHERE x.batch_id = bb.id AND x.state IN ('pending', 'running', "
    "'queued', 'submitted')) ORDER "
    "BY bb.created_at LIMIT 1 FOR UPDATE SKIP LOCKED), "
    "r AS (SELECT string_agg(" RESULT_LINE ", E'\\n' ORDER BY l.line_no) FILTER (WHERE l.state = "
    "'done') AS ok, count(*) FILTER (WHERE l.state = 'done') AS n_ok, string_agg(" RESULT_LINE
    ", E'\\n' ORDER BY l.line_no) FILTER (WHERE l.state <> 'done') AS bad, count(*) FILTER "
    "(WHERE l.state <> 'done') AS n_bad, count(*) FILTER (WHERE l.state = 'failed') AS n_failed, "
    "count(*) FILTER (WHERE l.state = 'cancelled') AS n_cancelled, count(*) FILTER (WHERE "
    "l.state = 'expired') AS n_expired FROM b JOIN bridle_batch_lines l ON l.batch_id = b.id), "
    "fo AS (INSERT INTO bridle_files (id, key_id, team, purpose, filename, bytes, lines, content) "
    "SELECT " NEW_FILE_ID ", b.key_id, b.team, 'batch_output', b.id || '_output.jsonl', "
    "octet_length(r.ok) + 1, r.n_ok, r.ok || E'\\n' FROM b, r WHERE r.n_ok > 0 RETURNING id), "
    "fe AS (INSERT INTO bridle_files (id, key_id, team, purpose, filename, bytes, lines, content) "
    "SELECT " NEW_FILE_ID ", b.key_id, b.team, 'batch_output', b.id || '_error.jsonl', "
    "octet_length(r.bad) + 1, r.n_bad, r.bad || E'\\n' FROM b, r WHERE r.n_bad > 0 RETURNING id) "
    "UPDATE bridle_batches u SET status = CASE WHEN b.status = 'cancelling' THEN 'cancelled' WHEN "
    "r.n_expired > 0 THEN 'expired' ELSE 'completed' END, finalizing_at = now(), "
    "completed_at = CASE WHEN b.status = 'cancelling' OR r.n_expired > 0 THEN NULL ELSE "
    "now() END, expired_at = CASE WHEN b.status <> 'cancelling' AND r.n_expired > 0 THEN "
    "now() END, cancelled_at = CASE WHEN b.status = 'cancelling' THEN now() END, "
    "output_file_id = (SELECT id FROM fo), error_file_id = (SELECT id FROM fe), n_done = r.n_ok, "
    "n_failed = r.n_failed, n_cancelled = r.n_cancelled, n_expired = r.n_expired FROM b, r WHERE "
    "u.id = b.id RETURNING u.id";

/* Pending lines of batches past their window never run. */
static const char SQL_EXPIRE[] =
    "UPDATE bridle_batch_lines l SET state = 'expired' FROM bridle_batches b WHERE b.id = "
    "l.batch_id AND b.status = 'in_progress' AND b.expires_at <= now() AND l.state IN "
    "('pending', 'queued')";

static const char SQL_RECOVER[] =
    "UPDATE bridle_batch_lines l SET state = 'failed', response = 'interrupted: the gateway "
    "sending this request stopped before its answer was recorded; it is not sent again, so that "
    "no request runs twice' WHERE l.state = 'running' AND l.claimed_by <> $1 AND (l.claimed_by "
    "= $2 OR NOT EXISTS (SELECT 1 FROM bridle_instances i WHERE i.instance = l.claimed_by AND "
    "i.seen_at > now() - interval '30 seconds'))";

int batchstore_file_endpoint(pgqueue *q, const char *file_id, const char *key_id, pgqueue_fn fn,
                             void *ctx)
{
    const char *p[] = {file_id, key_id};
    return pgqueue_send(q, SQL_FILE_ENDPOINT, p, 2, -1, fn, ctx);
}

int batchstore_create(pgqueue *q, const batch_new *b, pgqueue_fn fn, void *ctx)
{
    const char *p[] = {b->id,
                       b->key_id,
                       b->key_sha256,
                       b->team,
                       b->input_file_id,
                       b->completion_window,
                       b->metadata,
                       b->budget_arrays[0] ? b->budget_arrays[0] : "{}",
                       b->budget_arrays[1] ? b->budget_arrays[1] : "{}",
                       b->budget_arrays[2] ? b->budget_arrays[2] : "{}",
                       b->budget_arrays[3] ? b->budget_arrays[3] : "{}"};
    return pgqueue_send(q, SQL_CREATE, p, 11, -1, fn, ctx);
}

int batchstore_get(pgqueue *q, batch_api api, const char *id, const char *key_id, pgqueue_fn fn,
                   void *ctx)
{
    const char *p[] = {id, key_id};
    return pgqueue_send(q, SQL_GET[api], p, 2, -1, fn, ctx);
}

int batchstore_list(pgqueue *q, batch_api api, const char *key_id, const char *after, int limit,
                    pgqueue_fn fn, void *ctx)
{
    char n[16];
    snprintf(n, sizeof n, "%d", limit);
    const char *p[] = {key_id, after, n};
    return pgqueue_send(q, SQL_LIST[api], p, 3, -1, fn, ctx);
}

int batchstore_cancel(pgqueue *q, batch_api api, const char *id, const char *key_id, pgqueue_fn fn,
                      void *ctx)
{
    const char *p[] = {id, key_id};
    return pgqueue_send(q, SQL_CANCEL[api], p, 2, -1, fn, ctx);
}

int batchstore_create_messages(pgqueue *q, const batch_new *b, const char *file_id,
                               const char *jsonl, int lines, pgqueue_fn fn, void *ctx)
{
    char n[16], worst[24];
    snprintf(n, sizeof n, "%d", lines);
    snprintf(worst, sizeof worst, "%lld", (long long)b->worst_pusd);
    const char *p[] = {b->id,
                       b->key_id,
                       b->key_sha256,
                       b->team,
                       file_id,
                       jsonl,
                       n,
                       worst,
                       b->budget_arrays[0] ? b->budget_arrays[0] : "{}",
                       b->budget_arrays[1] ? b->budget_arrays[1] : "{}",
                       b->budget_arrays[2] ? b->budget_arrays[2] : "{}",
                       b->budget_arrays[3] ? b->budget_arrays[3] : "{}"};
    return pgqueue_send(q, SQL_CREATE_MESSAGES, p, 12, 5, fn, ctx);
}

int batchstore_results(pgqueue *q, const char *id, const char *key_id, pgqueue_fn fn, void *ctx)
{
    const char *p[] = {id, key_id};
    return pgqueue_send(q, SQL_RESULTS, p, 2, -1, fn, ctx);
}

int batchstore_claim(pgqueue *q, const char *instance, int n, pgqueue_fn fn, void *ctx)
{
    char num[16];
    snprintf(num, sizeof num, "%d", n);
    const char *p[] = {instance, num};
    return pgqueue_send(q, SQL_CLAIM, p, 2, -1, fn, ctx);
}

int batchstore_finish(pgqueue *q, const char *batch_id, const char *line_no, const char *instance,
                      const char *state, const char *status, const char *request_id,
                      const char *response, pgqueue_fn fn, void *ctx)
{
    const char *p[] = {batch_id, line_no, instance, state, status, request_id, response};
    return pgqueue_send(q, SQL_FINISH, p, 7, -1, fn, ctx);
}

int batchstore_finalize(pgqueue *q, pgqueue_fn fn, void *ctx)
{
    return pgqueue_send(q, SQL_FINALIZE, NULL, 0, -1, fn, ctx);
}

int batchstore_recover(pgqueue *q, const char *instance, const char *previous, pgqueue_fn fn,
                       void *ctx)
{
    const char *p[] = {instance, previous};
    return pgqueue_send(q, SQL_RECOVER, p, 2, -1, fn, ctx);
}

int batchstore_expire(pgqueue *q, pgqueue_fn fn, void *ctx)
{
    return pgqueue_send(q, SQL_EXPIRE, NULL, 0, -1, fn, ctx);
}

/* Provider batches in PostgreSQL (db/pbatchstore.h). */
#include "db/pbatchstore.h"

#include <stdio.h>

static const char SQL_DEFER[] =
    "UPDATE bridle_batch_lines SET state = 'queued', provider = $4, model = $5, upstream = $6, "
    "event = $7::json, queued_at = now() WHERE batch_id = $1 AND line_no = $2::integer AND "
    "claimed_by = $3 AND state = 'running'";

static const char SQL_TAKE[] =
    "SELECT * FROM bridle_pbatch_take($1, $2::text[], $3::integer, $4::integer, $5)";

static const char SQL_SUBMITTED[] =
    "UPDATE bridle_provider_batches SET status = 'in_progress', remote_id = $2, submitted_at = "
    "now(), poll_ms = $3::integer, next_poll_at = now() + $3::integer * interval '1 millisecond' "
    "WHERE id = $1 AND status = 'submitting'";

static const char SQL_REFUSED[] =
    "WITH p AS (UPDATE bridle_provider_batches SET status = 'failed', error = $2, ended_at = "
    "now() WHERE id = $1 AND status = 'submitting' RETURNING id) "
    "UPDATE bridle_batch_lines SET state = 'pending', live = true, claimed_by = NULL, pbatch_id "
    "= NULL WHERE pbatch_id IN (SELECT id FROM p) AND state = 'submitted'";

/* clang-format off */
#define FAIL_LINES(WHERE_P) \
    "WITH p AS (UPDATE bridle_provider_batches SET status = 'failed', error = $2, ended_at = " \
    "now() WHERE " WHERE_P " RETURNING id) " \
    "UPDATE bridle_batch_lines SET state = 'failed', status = NULL, response = $2 WHERE " \
    "pbatch_id IN (SELECT " \
    "id FROM p) AND state = 'submitted'"
/* clang-format on */

static const char SQL_LOST[] = FAIL_LINES("id = $1 AND status = 'submitting'");

static const char SQL_RECOVER[] = FAIL_LINES(
    "status = 'submitting' AND instance <> $1 AND (instance = $3 OR NOT EXISTS (SELECT 1 FROM "
    "bridle_instances i WHERE i.instance = bridle_provider_batches.instance AND i.seen_at > now() "
    "- interval '30 seconds'))");

static const char SQL_POLL_CLAIM[] =
    "UPDATE bridle_provider_batches p SET polled_by = $1, poll_until = now() + interval '1 "
    "minute' FROM (SELECT x.id, b.status = 'cancelling' AND NOT x.cancel_sent AS cancel FROM "
    "bridle_provider_batches x JOIN bridle_batches b ON b.id = x.batch_id WHERE x.status = "
    "'in_progress' AND (x.next_poll_at <= now() OR (b.status = 'cancelling' AND NOT "
    "x.cancel_sent)) AND (x.poll_until IS NULL OR x.poll_until < now()) ORDER BY x.next_poll_at "
    "LIMIT 1 FOR UPDATE OF x SKIP LOCKED) c WHERE p.id = c.id RETURNING p.id, p.provider, "
    "p.remote_id, p.poll_ms, c.cancel";

static const char SQL_POLL_LATER[] =
    "UPDATE bridle_provider_batches SET poll_ms = $2::integer, next_poll_at = now() + "
    "$2::integer * interval '1 millisecond', polled_by = NULL, poll_until = NULL WHERE id = $1";

static const char SQL_CANCEL_SENT[] =
    "UPDATE bridle_provider_batches SET cancel_sent = true WHERE id = $1";

static const char SQL_LINES[] =
    "SELECT l.line_no, l.body, l.model, l.event, b.api, l.batch_id FROM bridle_batch_lines l "
    "JOIN "
    "bridle_batches b ON b.id = l.batch_id WHERE l.pbatch_id = $1 AND l.state = 'submitted' "
    "ORDER BY l.line_no";

/* One statement: the answered lines, then (last) the rest and the end. */
static const char SQL_SETTLE[] =
    "WITH u AS (SELECT * FROM json_to_recordset($2::json) AS u(n integer, s text, c integer, r "
    "text, q text)), "
    "f AS (UPDATE bridle_batch_lines l SET state = u.s, status = u.c, response = u.r, request_id "
    "= u.q FROM u WHERE l.pbatch_id = $1 AND l.line_no = u.n AND l.state = 'submitted' "
    "RETURNING 1), "
    "rest AS (UPDATE bridle_batch_lines l SET state = CASE WHEN b.status = 'cancelling' THEN "
    "'cancelled' ELSE 'failed' END, status = NULL, response = 'the provider''s batch ended "
    "without an answer "
    "for this request' FROM bridle_batches b WHERE $3::boolean AND l.pbatch_id = $1 AND l.state "
    "= 'submitted' AND b.id = l.batch_id AND NOT EXISTS (SELECT 1 FROM u WHERE u.n = l.line_no) "
    "RETURNING 1) "
    "UPDATE bridle_provider_batches SET status = 'ended', ended_at = now(), polled_by = NULL, "
    "poll_until = NULL WHERE id = $1 AND $3::boolean";

int pbatchstore_defer(pgqueue *q, const char *batch_id, const char *line_no, const char *instance,
                      const char *provider, const char *model, const char *upstream,
                      const char *event_json, pgqueue_fn fn, void *ctx)
{
    const char *p[] = {batch_id, line_no, instance, provider, model, upstream, event_json};
    return pgqueue_send(q, SQL_DEFER, p, 7, -1, fn, ctx);
}

int pbatchstore_take(pgqueue *q, const char *instance, const char *providers, long after_ms,
                     int max, const char *id, pgqueue_fn fn, void *ctx)
{
    char after[24], n[16];
    snprintf(after, sizeof after, "%ld", after_ms);
    snprintf(n, sizeof n, "%d", max);
    const char *p[] = {instance, providers, after, n, id};
    return pgqueue_send(q, SQL_TAKE, p, 5, -1, fn, ctx);
}

int pbatchstore_submitted(pgqueue *q, const char *id, const char *remote_id, long poll_ms,
                          pgqueue_fn fn, void *ctx)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%ld", poll_ms);
    const char *p[] = {id, remote_id, ms};
    return pgqueue_send(q, SQL_SUBMITTED, p, 3, -1, fn, ctx);
}

int pbatchstore_refused(pgqueue *q, const char *id, const char *why, pgqueue_fn fn, void *ctx)
{
    const char *p[] = {id, why};
    return pgqueue_send(q, SQL_REFUSED, p, 2, -1, fn, ctx);
}

int pbatchstore_lost(pgqueue *q, const char *id, const char *why, pgqueue_fn fn, void *ctx)
{
    const char *p[] = {id, why};
    return pgqueue_send(q, SQL_LOST, p, 2, -1, fn, ctx);
}

int pbatchstore_poll_claim(pgqueue *q, const char *instance, pgqueue_fn fn, void *ctx)
{
    const char *p[] = {instance};
    return pgqueue_send(q, SQL_POLL_CLAIM, p, 1, -1, fn, ctx);
}

int pbatchstore_poll_later(pgqueue *q, const char *id, long poll_ms, pgqueue_fn fn, void *ctx)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%ld", poll_ms);
    const char *p[] = {id, ms};
    return pgqueue_send(q, SQL_POLL_LATER, p, 2, -1, fn, ctx);
}

int pbatchstore_cancel_sent(pgqueue *q, const char *id, pgqueue_fn fn, void *ctx)
{
    const char *p[] = {id};
    return pgqueue_send(q, SQL_CANCEL_SENT, p, 1, -1, fn, ctx);
}

int pbatchstore_lines(pgqueue *q, const char *id, pgqueue_fn fn, void *ctx)
{
    const char *p[] = {id};
    return pgqueue_send(q, SQL_LINES, p, 1, -1, fn, ctx);
}

int pbatchstore_settle(pgqueue *q, const char *id, const char *rows_json, bool last, pgqueue_fn fn,
                       void *ctx)
{
    const char *p[] = {id, rows_json, last ? "true" : "false"};
    return pgqueue_send(q, SQL_SETTLE, p, 3, 1, fn, ctx);
}

int pbatchstore_recover(pgqueue *q, const char *instance, const char *previous, pgqueue_fn fn,
                        void *ctx)
{
    const char *p[] = {instance,
                       "interrupted: the gateway submitting this request's provider "
                       "batch stopped before the provider answered; it is not sent "
                       "again, so that no request runs twice",
                       previous};
    return pgqueue_send(q, SQL_RECOVER, p, 3, -1, fn, ctx);
}

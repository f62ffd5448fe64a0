/* Idempotency keys in PostgreSQL: see idem.h and migrations/0003.
 *
 * Requests of this gateway that carry the same key and body share one
 * local entry: only its first request asks the database, the others wait on
 * the entry and get what it gets (the stored answer, straight from memory
 * when this gateway produced it). So 32 concurrent duplicates cost one
 * claim, not 32, and while another gateway holds the key one poll per
 * entry re-reads it. Entries live only while requests wait on them. */
#include "db/idem.h"

#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/pgconn.h"
#include "lib/log.h"
#include "lib/util.h"

#define MAX_CONNECTIONS 8
#define EMPTY_RETRIES 5 /* a claim that saw the row change under it is asked again */
#define EXPIRE_INTERVAL_MS (3600 * 1000)

typedef enum { OP_CLAIM, OP_STORE, OP_RELEASE, OP_EXPIRE } op_kind;
typedef enum { E_IDLE, E_CLAIMING, E_OWNED, E_POLLING } entry_state;

typedef struct entry entry;

struct idem_op {
    idem_store *s;
    op_kind kind;
    entry *e;    /* OP_CLAIM: the entry it waits on */
    char *scope; /* OP_STORE, OP_RELEASE */
    char *key;   /* OP_STORE, OP_RELEASE */
    char *owner; /* OP_STORE, OP_RELEASE */
    char *ctype; /* OP_STORE */
    char *body;  /* OP_STORE */
    size_t body_len;
    int status;
    bool wait;
    int64_t deadline_ms;
    idem_fn fn;
    void *ctx;
    idem_result pending; /* delivered by the timer when immediate */
    bool immediate;
    struct event timer; /* immediate delivery, or a waiter's deadline */
    bool timer_armed;
    idem_op *next; /* in the entry's waiters, or the store's queue */
};

struct entry {
    idem_store *s;
    char *scope, *key, *fp;
    char owner[48]; /* this gateway's token for the claim in the database */
    entry_state st;
    idem_op *waiters; /* FIFO; the first gets CLAIMED when the claim is won */
    int empty_retries;
    bool no_memory; /* the poll timer answers the waiters instead of asking again */
    struct event poll_timer;
    entry *next;
};

typedef struct slot {
    idem_store *s;
    pgconn *pg;
    idem_op *job; /* the query in flight */
} slot;

struct idem_store {
    struct event_base *base;
    idem_options opt;
    slot slots[MAX_CONNECTIONS];
    int n_slots;
    idem_op *queue_head, *queue_tail; /* queries waiting for a connection */
    entry *entries;
    char instance[17];
    uint64_t counter;
    struct event expire_timer;
    struct event fail_timer; /* answers queued work soon when no connection is up */
    bool connecting;         /* the first connections are still being made */
};

static void pump(idem_store *s);
static void entry_claim(entry *e);

/* ------------------------------------------------------------ SQL */

/* Claims the key, or takes over a row that expired or whose lease passed
 * (same body only), or, failing both, reads the row that holds it. The
 * SELECT can miss a row committed after this statement's snapshot: no row
 * at all means "ask again". */
static const char claim_sql[] =
    "WITH claim AS ("
    " INSERT INTO bridle_idempotency AS k (key_id, idem_key, fingerprint, owner, locked_until,"
    " expires_at) VALUES ($1, $2, $3, $4, now() + $5::bigint * interval '1 millisecond',"
    " now() + $6::bigint * interval '1 second')"
    " ON CONFLICT (key_id, idem_key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
    " owner = EXCLUDED.owner, state = 'pending', status = NULL, content_type = NULL,"
    " body = NULL, created_at = now(), locked_until = EXCLUDED.locked_until,"
    " expires_at = EXCLUDED.expires_at"
    " WHERE k.expires_at < now() OR (k.state = 'pending' AND k.locked_until < now()"
    " AND k.fingerprint = EXCLUDED.fingerprint)"
    " RETURNING 'claimed'::text AS state)"
    " SELECT state, NULL::text, NULL::integer, NULL::text, NULL::text FROM claim"
    " UNION ALL"
    " SELECT state, fingerprint, status, content_type, body FROM bridle_idempotency"
    " WHERE key_id = $1 AND idem_key = $2 AND NOT EXISTS (SELECT 1 FROM claim)";

static const char store_sql[] =
    "UPDATE bridle_idempotency SET state = 'done', status = $4::integer, content_type = $5,"
    " body = $6 WHERE key_id = $1 AND idem_key = $2 AND owner = $3";

static const char release_sql[] = "DELETE FROM bridle_idempotency WHERE key_id = $1 AND "
                                  "idem_key = $2 AND owner = $3 AND state = 'pending'";

static const char expire_sql[] = "DELETE FROM bridle_idempotency WHERE expires_at < now()";

/* ------------------------------------------------------------ ops */

static void op_free(idem_op *op)
{
    if (op->timer_armed) evtimer_del(&op->timer);
    free(op->scope);
    free(op->key);
    free(op->owner);
    free(op->ctype);
    free(op->body);
    free(op);
}

/* Runs the callback (unless cancelled) and frees the op. */
static void op_finish(idem_op *op, const idem_result *r)
{
    if (op->fn) op->fn(op->ctx, r);
    op_free(op);
}

static void on_op_timer(evutil_socket_t fd, short what, void *arg);

static idem_op *op_new(idem_store *s, op_kind kind, idem_fn fn, void *ctx)
{
    idem_op *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->s = s;
    op->kind = kind;
    op->fn = fn;
    op->ctx = ctx;
    evtimer_assign(&op->timer, s->base, on_op_timer, op);
    return op;
}

/* Delivers r from the loop, not from inside the caller's call. */
static void op_finish_soon(idem_op *op, const idem_result *r)
{
    op->pending = *r;
    op->immediate = true;
    struct timeval zero = {0, 0};
    evtimer_add(&op->timer, &zero);
    op->timer_armed = true;
}

static void enqueue(idem_store *s, idem_op *op)
{
    op->next = NULL;
    if (s->queue_tail)
        s->queue_tail->next = op;
    else
        s->queue_head = op;
    s->queue_tail = op;
    pump(s);
}

/* ------------------------------------------------------------ entries */

static entry *entry_find(idem_store *s, const char *scope, const char *key, const char *fp)
{
    for (entry *e = s->entries; e; e = e->next)
        if (strcmp(e->key, key) == 0 && strcmp(e->scope, scope) == 0 && strcmp(e->fp, fp) == 0)
            return e;
    return NULL;
}

static void entry_finish_all(entry *e, const idem_result *r);

static void on_poll_timer(evutil_socket_t fd, short what, void *arg)
{
    entry *e = arg;
    if (!e->no_memory) {
        entry_claim(e);
        return;
    }
    idem_result r = {.outcome = IDEM_UNAVAILABLE, .error = "out of memory"};
    entry_finish_all(e, &r);
}

static entry *entry_new(idem_store *s, const char *scope, const char *key, const char *fp)
{
    entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->s = s;
    e->scope = strdup(scope);
    e->key = strdup(key);
    e->fp = strdup(fp);
    if (!e->scope || !e->key || !e->fp) {
        free(e->scope);
        free(e->key);
        free(e->fp);
        free(e);
        return NULL;
    }
    snprintf(e->owner, sizeof e->owner, "%s-%llu", s->instance, (unsigned long long)++s->counter);
    evtimer_assign(&e->poll_timer, s->base, on_poll_timer, e);
    e->next = s->entries;
    s->entries = e;
    return e;
}

static void entry_free(entry *e)
{
    idem_store *s = e->s;
    for (entry **p = &s->entries; *p; p = &(*p)->next)
        if (*p == e) {
            *p = e->next;
            break;
        }
    evtimer_del(&e->poll_timer);
    free(e->scope);
    free(e->key);
    free(e->fp);
    free(e);
}

static idem_op *waiter_pop(entry *e)
{
    idem_op *op = e->waiters;
    if (op) e->waiters = op->next;
    return op;
}

static void waiter_remove(entry *e, idem_op *op)
{
    for (idem_op **p = &e->waiters; *p; p = &(*p)->next)
        if (*p == op) {
            *p = op->next;
            return;
        }
}

/* Every waiter gets r; the entry ends unless something is in flight for it. */
static void entry_finish_all(entry *e, const idem_result *r)
{
    idem_op *op;
    while ((op = waiter_pop(e)))
        op_finish(op, r);
    if (e->st != E_CLAIMING) entry_free(e);
}

/* Waiters that would rather be told 409 than wait are told now. */
static void entry_refuse_impatient(entry *e)
{
    idem_result busy = {.outcome = IDEM_IN_PROGRESS};
    for (idem_op **p = &e->waiters; *p;) {
        idem_op *op = *p;
        if (op->wait) {
            p = &op->next;
            continue;
        }
        *p = op->next;
        op_finish(op, &busy);
    }
}

/* The key is free again here (released, or never ours): the first waiter
 * claims it, or the entry ends. */
static void entry_next_claim(entry *e)
{
    if (!e->waiters) {
        entry_free(e);
        return;
    }
    e->st = E_IDLE;
    entry_claim(e);
}

static bool any_up(const idem_store *s)
{
    for (int i = 0; i < s->n_slots; i++)
        if (pgconn_up(s->slots[i].pg)) return true;
    return false;
}

/* With no connection up, what is queued fails on the next loop pass (a
 * client is waiting), never inside the call that queued it. */
/* While the first connections are still being made (just after start),
 * work waits for them: their outcome, up or down, answers it. */
static void enqueue_or_fail_soon(idem_store *s, idem_op *op)
{
    enqueue(s, op);
    if (!any_up(s) && !s->connecting) {
        struct timeval zero = {0, 0};
        evtimer_add(&s->fail_timer, &zero);
    }
}

/* Asks the database for the key on behalf of the entry's first waiter. */
static void entry_claim(entry *e)
{
    if (e->st == E_CLAIMING) return;
    idem_op *job = op_new(e->s, OP_CLAIM, NULL, NULL);
    if (!job) { /* answered on the next loop pass: idem_claim may be the caller */
        e->st = E_IDLE;
        e->no_memory = true;
        struct timeval zero = {0, 0};
        evtimer_add(&e->poll_timer, &zero);
        return;
    }
    e->st = E_CLAIMING;
    job->e = e;
    enqueue_or_fail_soon(e->s, job);
}

/* ------------------------------------------------------------ results */

static void on_claim_result(entry *e, PGresult *res, const char *error)
{
    e->st = E_IDLE;
    if (error) {
        idem_result r = {.outcome = IDEM_UNAVAILABLE, .error = error};
        entry_finish_all(e, &r);
        return;
    }
    bool claimed = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 0), "claimed") == 0;
    if (!e->waiters) { /* everyone left meanwhile */
        if (claimed) idem_release(e->s, e->scope, e->key, e->owner);
        entry_free(e);
        return;
    }
    if (PQntuples(res) == 0) { /* the row changed under the statement: ask again */
        if (++e->empty_retries <= EMPTY_RETRIES) {
            entry_claim(e);
            return;
        }
        idem_result r = {.outcome = IDEM_UNAVAILABLE, .error = "the key kept changing"};
        entry_finish_all(e, &r);
        return;
    }
    e->empty_retries = 0;
    if (claimed) {
        e->st = E_OWNED;
        idem_op *winner = waiter_pop(e);
        entry_refuse_impatient(e);
        idem_result r = {.outcome = IDEM_CLAIMED, .owner = e->owner};
        op_finish(winner, &r); /* last: the winner may settle the key at once */
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 1), e->fp) != 0) {
        idem_result r = {.outcome = IDEM_MISMATCH};
        entry_finish_all(e, &r);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "done") == 0) {
        idem_result r = {.outcome = IDEM_REPLAY,
                         .status = atoi(PQgetvalue(res, 0, 2)),
                         .content_type = PQgetvalue(res, 0, 3),
                         .body = PQgetvalue(res, 0, 4),
                         .body_len = (size_t)PQgetlength(res, 0, 4)};
        entry_finish_all(e, &r);
        return;
    }
    /* held by a request elsewhere: re-read it until it settles */
    entry_refuse_impatient(e);
    if (!e->waiters) {
        entry_free(e);
        return;
    }
    e->st = E_POLLING;
    struct timeval tv = util_ms_timeval(e->s->opt.poll_ms);
    evtimer_add(&e->poll_timer, &tv);
}

static entry *entry_owned_by(idem_store *s, const char *owner)
{
    for (entry *e = s->entries; e; e = e->next)
        if (e->st == E_OWNED && strcmp(e->owner, owner) == 0) return e;
    return NULL;
}

static void on_store_result(idem_op *op, PGresult *res, const char *error)
{
    idem_store *s = op->s;
    if (!error && strtol(PQcmdTuples(res), NULL, 10) != 1)
        error = "the key was no longer held by this request (its lease passed)";
    entry *e = entry_owned_by(s, op->owner);
    if (e && !error) {
        idem_result r = {.outcome = IDEM_REPLAY,
                         .status = op->status,
                         .content_type = op->ctype,
                         .body = op->body,
                         .body_len = op->body_len};
        e->st = E_IDLE;
        entry_finish_all(e, &r);
    } else if (error) { /* not stored: free the key for the next request rather than pin it */
        idem_release(s, op->scope, op->key, op->owner);
    }
    if (error) log_warn("idempotency: storing the outcome of key %s failed: %s", op->key, error);
    idem_result r = {.outcome = IDEM_STORED, .error = error};
    op_finish(op, &r);
}

static void on_release_result(idem_op *op, PGresult *res, const char *error)
{
    if (error) log_warn("idempotency: releasing key %s failed: %s", op->key, error);
    entry *e = entry_owned_by(op->s, op->owner);
    if (e) entry_next_claim(e);
    op_free(op);
}

static void on_query_result(void *ctx, PGresult *res, const char *error)
{
    slot *sl = ctx;
    idem_op *op = sl->job;
    sl->job = NULL;
    switch (op->kind) {
    case OP_CLAIM: {
        entry *e = op->e;
        op_free(op);
        on_claim_result(e, res, error);
        break;
    }
    case OP_STORE:
        on_store_result(op, res, error);
        break;
    case OP_RELEASE:
        on_release_result(op, res, error);
        break;
    case OP_EXPIRE:
        if (error) log_warn("idempotency: deleting expired keys failed: %s", error);
        op_free(op);
        break;
    }
    pump(sl->s);
}

/* ------------------------------------------------------------ connections */

static int send_job(slot *sl, idem_op *op)
{
    idem_store *s = sl->s;
    char lease[24], retention[24], status[16];
    switch (op->kind) {
    case OP_CLAIM: {
        entry *e = op->e;
        snprintf(lease, sizeof lease, "%lld", (long long)s->opt.lease_ms);
        snprintf(retention, sizeof retention, "%lld", (long long)s->opt.retention_s);
        const char *v[] = {e->scope, e->key, e->fp, e->owner, lease, retention};
        return pgconn_send(sl->pg, claim_sql, 6, v, on_query_result, sl);
    }
    case OP_STORE: {
        snprintf(status, sizeof status, "%d", op->status);
        const char *v[] = {op->scope, op->key, op->owner, status, op->ctype, op->body};
        return pgconn_send(sl->pg, store_sql, 6, v, on_query_result, sl);
    }
    case OP_RELEASE: {
        const char *v[] = {op->scope, op->key, op->owner};
        return pgconn_send(sl->pg, release_sql, 3, v, on_query_result, sl);
    }
    case OP_EXPIRE:
        return pgconn_send(sl->pg, expire_sql, 0, NULL, on_query_result, sl);
    }
    return -1;
}

static void pump(idem_store *s)
{
    for (int i = 0; i < s->n_slots && s->queue_head; i++) {
        slot *sl = &s->slots[i];
        if (sl->job || !pgconn_idle(sl->pg)) continue;
        idem_op *op = s->queue_head;
        s->queue_head = op->next;
        if (!s->queue_head) s->queue_tail = NULL;
        op->next = NULL;
        sl->job = op;
        if (send_job(sl, op) != 0) { /* the connection just went: back to the front */
            sl->job = NULL;
            op->next = s->queue_head;
            s->queue_head = op;
            if (!s->queue_tail) s->queue_tail = op;
        }
    }
}

/* No connection is up: what waits for one is answered now rather than at
 * some later reconnect (a claim's request has a client waiting). */
static void fail_queued(idem_store *s, const char *why)
{
    idem_op *op;
    while ((op = s->queue_head)) {
        s->queue_head = op->next;
        if (!s->queue_head) s->queue_tail = NULL;
        if (op->kind == OP_CLAIM) {
            entry *e = op->e;
            op_free(op);
            e->st = E_IDLE;
            idem_result r = {.outcome = IDEM_UNAVAILABLE, .error = why};
            entry_finish_all(e, &r);
        } else if (op->kind == OP_STORE) {
            idem_result r = {.outcome = IDEM_STORED, .error = why};
            entry *e = entry_owned_by(s, op->owner);
            if (e) {
                idem_result u = {.outcome = IDEM_UNAVAILABLE, .error = why};
                e->st = E_IDLE;
                entry_finish_all(e, &u);
            }
            op_finish(op, &r);
        } else {
            op_free(op);
        }
    }
}

static void on_conn_state(void *ctx, bool up)
{
    slot *sl = ctx;
    idem_store *s = sl->s;
    s->connecting = false;
    if (up)
        pump(s);
    else if (!any_up(s))
        fail_queued(s, "the idempotency database is unreachable");
}

static void on_fail_timer(evutil_socket_t fd, short what, void *arg)
{
    idem_store *s = arg;
    if (!any_up(s)) fail_queued(s, "the idempotency database is unreachable");
}

static void on_op_timer(evutil_socket_t fd, short what, void *arg)
{
    idem_op *op = arg;
    op->timer_armed = false;
    if (op->immediate) {
        idem_result r = op->pending;
        op_finish(op, &r);
        return;
    }
    entry *e = op->e; /* a waiter's deadline */
    waiter_remove(e, op);
    idem_result busy = {.outcome = IDEM_IN_PROGRESS};
    op_finish(op, &busy);
    if (!e->waiters && (e->st == E_POLLING || e->st == E_IDLE)) entry_free(e);
}

static void on_expire_timer(evutil_socket_t fd, short what, void *arg)
{
    idem_store *s = arg;
    idem_op *op = op_new(s, OP_EXPIRE, NULL, NULL);
    if (op) enqueue(s, op);
}

/* ------------------------------------------------------------ public */

int idem_parse_key(const char *h, char *out, size_t outlen)
{
    size_t n = 0;
    if (!h || outlen < 2) return -1;
    if (*h == '"') { /* RFC 8941 sf-string */
        const char *p = h + 1;
        for (; *p && *p != '"'; p++) {
            if (*p == '\\') {
                p++;
                if (*p != '"' && *p != '\\') return -1;
            } else if (*p < 0x20 || *p > 0x7e) {
                return -1;
            }
            if (n + 1 >= outlen) return -1;
            out[n++] = *p;
        }
        if (*p != '"' || p[1] != '\0') return -1;
    } else {
        for (const char *p = h; *p; p++) {
            if (*p <= 0x20 || *p > 0x7e || *p == '"' || *p == '\\' || n + 1 >= outlen) return -1;
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return n >= 1 && n <= 255 ? 0 : -1;
}

idem_op *idem_claim(idem_store *s, const char *scope, const char *key, const char *fingerprint,
                    bool wait, int64_t deadline_ms, idem_fn fn, void *ctx)
{
    idem_op *op = op_new(s, OP_CLAIM, fn, ctx);
    if (!op) return NULL;
    op->wait = wait;
    op->deadline_ms = deadline_ms;
    entry *e = entry_find(s, scope, key, fingerprint);
    bool fresh = !e;
    if (fresh && !(e = entry_new(s, scope, key, fingerprint))) {
        op_free(op);
        return NULL;
    }
    op->e = e;
    if (!fresh && !wait && e->st != E_CLAIMING) { /* held here: 409 at once */
        idem_result busy = {.outcome = IDEM_IN_PROGRESS};
        op_finish_soon(op, &busy);
        return op;
    }
    idem_op **tail = &e->waiters;
    while (*tail)
        tail = &(*tail)->next;
    *tail = op;
    if (wait) {
        int64_t left = deadline_ms - util_now_ms();
        if (left < 0) left = 0;
        struct timeval tv = util_ms_timeval(left);
        evtimer_add(&op->timer, &tv);
        op->timer_armed = true;
    }
    if (fresh) entry_claim(e);
    return op;
}

static idem_op *owner_op(idem_store *s, op_kind kind, const char *scope, const char *key,
                         const char *owner, idem_fn fn, void *ctx)
{
    idem_op *op = op_new(s, kind, fn, ctx);
    if (!op) return NULL;
    op->scope = strdup(scope);
    op->key = strdup(key);
    op->owner = strdup(owner);
    if (!op->scope || !op->key || !op->owner) {
        op_free(op);
        return NULL;
    }
    return op;
}

idem_op *idem_store_result(idem_store *s, const char *scope, const char *key, const char *owner,
                           int status, const char *content_type, const char *body, size_t len,
                           idem_fn fn, void *ctx)
{
    idem_op *op = owner_op(s, OP_STORE, scope, key, owner, fn, ctx);
    if (!op) return NULL;
    op->status = status;
    op->ctype = strdup(content_type ? content_type : "application/json");
    op->body = malloc(len + 1);
    if (!op->ctype || !op->body) {
        op_free(op);
        return NULL;
    }
    memcpy(op->body, body, len);
    op->body[len] = '\0';
    op->body_len = len;
    bool any_up = false;
    for (int i = 0; i < s->n_slots; i++)
        any_up |= pgconn_up(s->slots[i].pg);
    if (!any_up) {
        entry *e = entry_owned_by(s, owner);
        if (e) {
            idem_result u = {.outcome = IDEM_UNAVAILABLE,
                             .error = "the idempotency database is unreachable"};
            e->st = E_IDLE;
            entry_finish_all(e, &u);
        }
        idem_result r = {.outcome = IDEM_STORED,
                         .error = "the idempotency database is unreachable"};
        op_finish_soon(op, &r);
        return op;
    }
    enqueue(s, op);
    return op;
}

void idem_release(idem_store *s, const char *scope, const char *key, const char *owner)
{
    idem_op *op = owner_op(s, OP_RELEASE, scope, key, owner, NULL, NULL);
    if (op) enqueue(s, op);
}

void idem_cancel(idem_op *op)
{
    if (!op) return;
    op->fn = NULL;
    if (op->kind != OP_CLAIM || op->immediate) return; /* runs to its end, silently */
    entry *e = op->e;
    /* a waiter: leave the entry now (the first one's claim may be in flight:
     * the entry gives a won claim to the next waiter, or releases it) */
    waiter_remove(e, op);
    op_free(op);
    if (!e->waiters && (e->st == E_POLLING || e->st == E_IDLE)) entry_free(e);
}

idem_store *idem_new(struct event_base *base, const idem_options *opt)
{
    idem_store *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base = base;
    s->opt = *opt;
    if (s->opt.connections <= 0) s->opt.connections = 2;
    if (s->opt.connections > MAX_CONNECTIONS) s->opt.connections = MAX_CONNECTIONS;
    if (s->opt.retention_s <= 0) s->opt.retention_s = 86400;
    if (s->opt.lease_ms <= 0) s->opt.lease_ms = 600000;
    if (s->opt.poll_ms <= 0) s->opt.poll_ms = 20;
    if (s->opt.query_timeout_ms <= 0) s->opt.query_timeout_ms = 5000;
    if (!util_random_hex(s->instance, 8)) snprintf(s->instance, sizeof s->instance, "%d", 0);
    evtimer_assign(&s->fail_timer, base, on_fail_timer, s);
    s->connecting = true;
    event_assign(&s->expire_timer, base, -1, EV_PERSIST, on_expire_timer, s);
    pgconn_options po = {.query_timeout_ms = s->opt.query_timeout_ms};
    for (int i = 0; i < s->opt.connections; i++) {
        s->slots[i].s = s;
        s->slots[i].pg = pgconn_new(base, opt->database_url, &po, on_conn_state, &s->slots[i]);
        if (!s->slots[i].pg) {
            idem_free(s);
            return NULL;
        }
        s->n_slots++;
    }
    struct timeval tv = {EXPIRE_INTERVAL_MS / 1000, 0};
    evtimer_add(&s->expire_timer, &tv);
    return s;
}

void idem_free(idem_store *s)
{
    if (!s) return;
    evtimer_del(&s->expire_timer);
    evtimer_del(&s->fail_timer);
    for (int i = 0; i < s->n_slots; i++) {
        pgconn_free(s->slots[i].pg);
        if (s->slots[i].job) op_free(s->slots[i].job);
    }
    idem_op *op;
    while ((op = s->queue_head)) {
        s->queue_head = op->next;
        op_free(op);
    }
    while (s->entries) {
        entry *e = s->entries;
        idem_op *w;
        while ((w = waiter_pop(e)))
            op_free(w);
        entry_free(e);
    }
    free(s);
}

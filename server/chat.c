/* POST /v1/chat/completions: the way in for OpenAI chat requests (and POST
 * /v1/embeddings, whose answers are whole bodies through the same sink). The body
 * goes to a run (router/run.h), which plans, admits, calls and settles; this
 * file is the run's sink: the answer's head, bytes and end go to the
 * client (server/h1.h). A client that hangs up cancels its run. */
#include "server/chat.h"

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdlib.h>
#include <string.h>

#include "router/run.h"
#include "server/http.h"

typedef struct chat {
    app *a;
    h1_req *req;
    run *run;      /* until done */
    bool finished; /* the run called done */
    bool gone;     /* the client left: the request is ours to release */
    bool stream;   /* the answer is being streamed */
    bool replied;  /* the answer's head went out */
    int status;    /* a whole answer's status and type, from head */
    const char *ctype;
    struct event reap;
    struct chat *next_free; /* in the app's pool */
} chat;

/* Finished requests are kept for reuse, so a request in the steady state
 * allocates nothing here. */
#define CHAT_POOL_MAX 512

static chat *chat_alloc(app *a)
{
    chat *c = a->chat_pool;
    if (!c) return calloc(1, sizeof(chat));
    a->chat_pool = c->next_free;
    a->chat_pool_n--;
    return c;
}

void chat_pool_free(app *a)
{
    while (a->chat_pool) {
        chat *c = a->chat_pool;
        a->chat_pool = c->next_free;
        free(c);
    }
    a->chat_pool_n = 0;
}

/* Back to the pool (or freed). A request whose client left is ours: it is
 * released here, on a loop pass of its own. */
static void chat_release(chat *c)
{
    app *a = c->a;
    if (c->gone) h1_req_release(c->req);
    a->in_flight--;
    if (a->chat_pool_n >= CHAT_POOL_MAX || a->draining) {
        free(c);
        return;
    }
    memset(c, 0, sizeof *c);
    c->next_free = a->chat_pool;
    a->chat_pool = c;
    a->chat_pool_n++;
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    chat_release(arg);
}

/* ------------------------------------------------------------ the sink */

static void sink_head(void *ctx, int status, const char *content_type, buf *lines, bool stream)
{
    chat *c = ctx;
    c->replied = true;
    http_head_flush(c->req, lines);
    if (!stream) {
        c->status = status;
        c->ctype = content_type;
        return;
    }
    c->stream = true;
    http_count_reply(c->a, status);
    h1_reply_start(c->req, status, content_type);
}

static void sink_chunk(void *ctx, const char *data, size_t len)
{
    chat *c = ctx;
    if (!c->stream) { /* the whole answer: the request is not ours after the reply */
        h1_watch_gone(c->req, NULL, NULL);
        http_reply(c->a, c->req, c->status, c->ctype, data, len);
        return;
    }
    h1_reply_chunk(c->req, data, len);
}

static void sink_done(void *ctx, const run_outcome *o)
{
    chat *c = ctx;
    c->run = NULL;
    if (c->gone) { /* perhaps inside h1's callback: release the request later */
        evtimer_assign(&c->reap, c->a->base, on_reap, c);
        struct timeval zero = {0, 0};
        evtimer_add(&c->reap, &zero);
        return;
    }
    if (c->stream || !c->replied) h1_watch_gone(c->req, NULL, NULL);
    if (c->stream)
        h1_reply_end(c->req);
    else if (!c->replied) /* the run could not start */
        http_reply_error(c->a, c->req, 503, "server_error", "out_of_memory", NULL,
                         "The gateway is out of memory; retry shortly", true);
    chat_release(c);
}

static const run_sink chat_sink = {sink_head, sink_chunk, sink_done, NULL};

static void on_client_gone(void *arg)
{
    chat *c = arg;
    c->gone = true;
    run_cancel(c->run);
}

/* ------------------------------------------------------------ entry */

/* One run for the request; `what` names it for the idempotency fingerprint. */
static void start(app *a, h1_req *req, const key_conf *key, const request_headers *hdr,
                  const char *request_id, const char *what, bool embeddings)
{
    chat *c = chat_alloc(a);
    if (!c) {
        http_reply_error(a, req, 503, "server_error", "out_of_memory", NULL,
                         "The gateway is out of memory; retry shortly", true);
        return;
    }
    a->in_flight++;
    c->a = a;
    c->req = req;
    size_t len;
    const char *body = h1_req_body(req, &len);
    run_input ri = {
        .body = body,
        .body_len = len,
        .what = what,
        .key = key,
        .request_id = request_id,
        .task = hdr->task,
        .agent = hdr->agent,
        .feature = hdr->feature,
        .tier = hdr->tier,
        .idempotency_key = hdr->idempotency_key,
        .idempotency_keys = hdr->idempotency_keys,
        .cache_control = hdr->cache_control,
        .cache_opt = hdr->cache,
        .embeddings = embeddings,
    };
    h1_watch_gone(req, on_client_gone, c);
    run *r = run_start(a->router, &ri, &chat_sink, c);
    if (r) c->run = r; /* NULL: done came already, and c is back in the pool */
}

void chat_handle(app *a, h1_req *req, const key_conf *key, const request_headers *hdr,
                 const char *request_id)
{
    start(a, req, key, hdr, request_id, "POST /v1/chat/completions", false);
}

/* The same sink: an embeddings answer is one whole JSON body. */
void embeddings_handle(app *a, h1_req *req, const key_conf *key, const request_headers *hdr,
                       const char *request_id)
{
    start(a, req, key, hdr, request_id, "POST /v1/embeddings", true);
}

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

#include "router/canon.h"
#include "router/messages.h"
#include "router/run.h"
#include "server/http.h"

typedef struct chat {
    app *a;
    h1_req *req;
    bool messages_api; /* POST /v1/messages: the answer goes out in Anthropic's shape */
    bool embeddings;   /* POST /v1/embeddings: one whole body in OpenAI's shape */
    char msg_id[40];   /* its message id: "msg_" + the request id's digits */
    char req_id[32];
    buf body; /* its canonical body (router/messages.h) */
    buf out;  /* its translated answer */
    jdoc doc; /* scratch for the translations */
    messages_stream *ms;
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

static void chat_free(chat *c)
{
    buf_free(&c->body);
    buf_free(&c->out);
    jdoc_free(&c->doc);
    messages_stream_free(c->ms);
    free(c);
}

void chat_pool_free(app *a)
{
    while (a->chat_pool) {
        chat *c = a->chat_pool;
        a->chat_pool = c->next_free;
        chat_free(c);
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
        chat_free(c);
        return;
    }
    messages_stream_free(c->ms);
    buf body = c->body, out = c->out; /* their memory is kept for the next request */
    jdoc doc = c->doc;
    memset(c, 0, sizeof *c);
    buf_reset(&body);
    buf_reset(&out);
    c->body = body;
    c->out = out;
    c->doc = doc;
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
    if (c->messages_api) { /* the Anthropic SDK reads its request id from request-id */
        buf_add_header(lines, "request-id", c->req_id);
        if (stream) c->ms = messages_stream_new(c->msg_id);
    }
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

/* A whole chat answer or error → Anthropic's message or error. */
static void messages_whole(chat *c, const char **data, size_t *len)
{
    buf_reset(&c->out);
    if (c->status != 200 ||
        messages_from_completion(*data, *len, c->msg_id, &c->doc, &c->out) != 0) {
        buf_reset(&c->out);
        messages_error_from(*data, *len, c->status == 200 ? 502 : c->status, &c->doc, &c->out);
        c->status = messages_status(c->status == 200 ? 502 : c->status);
    }
    *data = c->out.data;
    *len = c->out.len;
}

static void sink_chunk(void *ctx, const char *data, size_t len)
{
    chat *c = ctx;
    if (!c->stream) { /* the whole answer: the request is not ours after the reply */
        h1_watch_gone(c->req, NULL, NULL);
        if (c->messages_api) messages_whole(c, &data, &len);
        http_reply(c->a, c->req, c->status, c->ctype, data, len);
        return;
    }
    if (c->messages_api) {
        buf_reset(&c->out);
        messages_stream_feed(c->ms, data, len, &c->out);
        if (c->out.len) h1_reply_chunk(c->req, c->out.data, c->out.len);
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

static const run_sink chat_sink = {sink_head, sink_chunk, sink_done, NULL, NULL};

static void on_client_gone(void *arg)
{
    chat *c = arg;
    c->gone = true;
    run_cancel(c->run);
}

/* ------------------------------------------------------------ entry */

static chat *chat_begin(app *a, h1_req *req)
{
    chat *c = chat_alloc(a);
    if (!c) {
        http_reply_error(a, req, 503, "server_error", "out_of_memory", NULL,
                         "The gateway is out of memory; retry shortly", true);
        return NULL;
    }
    a->in_flight++;
    c->a = a;
    c->req = req;
    return c;
}

static void chat_run(chat *c, const char *body, size_t len, const key_conf *key,
                     const request_headers *hdr, const char *request_id)
{
    app *a = c->a;
    h1_req *req = c->req;
    run_input ri = {
        .body = body,
        .body_len = len,
        .what = c->messages_api ? "POST /v1/messages"
                : c->embeddings ? "POST /v1/embeddings"
                                : "POST /v1/chat/completions",
        .embeddings = c->embeddings,
        .messages_api = c->messages_api,
        .anthropic_beta = hdr->anthropic_beta,
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
    };
    h1_watch_gone(req, on_client_gone, c);
    run *r = run_start(a->router, &ri, &chat_sink, c);
    if (r) c->run = r; /* NULL: done came already, and c is back in the pool */
}

void chat_handle(app *a, h1_req *req, const key_conf *key, const request_headers *hdr,
                 const char *request_id)
{
    chat *c = chat_begin(a, req);
    if (!c) return;
    size_t len;
    const char *body = h1_req_body(req, &len);
    chat_run(c, body, len, key, hdr, request_id);
}

/* POST /v1/embeddings: the same sink, an embeddings answer being one whole
 * JSON body. */
void embeddings_handle(app *a, h1_req *req, const key_conf *key, const request_headers *hdr,
                       const char *request_id)
{
    chat *c = chat_begin(a, req);
    if (!c) return;
    c->embeddings = true;
    size_t len;
    const char *body = h1_req_body(req, &len);
    chat_run(c, body, len, key, hdr, request_id);
}

/* ------------------------------------------------------------ /v1/messages */

void messages_handle(app *a, h1_req *req, const key_conf *key, const request_headers *hdr,
                     const char *request_id)
{
    size_t len;
    const char *body = h1_req_body(req, &len);
    chat *c = chat_begin(a, req);
    if (!c) return;
    c->messages_api = true;
    size_t idl = strnlen(request_id, sizeof c->req_id - 1); /* "req_" + 24 hex */
    memcpy(c->req_id, request_id, idl);
    c->req_id[idl] = '\0';
    memcpy(c->msg_id, "msg_", 4);
    memcpy(c->msg_id + 4, c->req_id + 4, idl - 4 + 1); /* the digits past "req_" */
    char err[400];
    if (messages_to_chat(body, len, false, &c->doc, &c->body, err, sizeof err) != 0) {
        http_reply_error(a, req, 400, "invalid_request_error", "invalid_request", NULL, err, false);
        chat_release(c);
        return;
    }
    chat_run(c, c->body.data, c->body.len, key, hdr, request_id);
}

/* POST /v1/messages/count_tokens: the request checked as /v1/messages
 * checks it, and its prompt counted the way budgets estimate one (about 4
 * bytes of text a token, tool definitions included): an estimate, which
 * the answer says in a header, not the provider's own count. */
void messages_count_tokens(app *a, h1_req *req)
{
    size_t len;
    const char *body = h1_req_body(req, &len);
    buf chat_body = BUF_INIT, strings = BUF_INIT;
    jdoc doc = JDOC_INIT, cdoc = JDOC_INIT;
    canon_request cr;
    canon_error cerr;
    char err[400];
    if (messages_to_chat(body, len, true, &doc, &chat_body, err, sizeof err) != 0) {
        http_reply_error(a, req, 400, "invalid_request_error", "invalid_request", NULL, err, false);
    } else if (canon_parse_chat(chat_body.data, chat_body.len, &cdoc, &strings, &cr, &cerr) != 0) {
        http_reply_error(a, req, 400, "invalid_request_error", cerr.code, cerr.param, cerr.message,
                         false);
    } else {
        size_t tools_len = 0;
        uint32_t tools = jdoc_get(&cdoc, 0, "tools");
        if (tools != JT_NONE) jdoc_raw(&cdoc, tools, &tools_len);
        int64_t chars = canon_prompt_chars(&cr) + (int64_t)tools_len;
        char out[64];
        int n = snprintf(out, sizeof out, "{\"input_tokens\":%lld}", (long long)((chars + 3) / 4));
        h1_add_header(req, "x-bridle-estimate", "true");
        http_reply_json(a, req, 200, out, (size_t)n);
    }
    buf_free(&chat_body);
    buf_free(&strings);
    jdoc_free(&doc);
    jdoc_free(&cdoc);
}

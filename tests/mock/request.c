/* The life of one generation request: parse, choose directives, compute the
 * answer and usage, then reply now, after a timer, piece by piece, or never. */
#include "tests/mock/mock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/bufferevent.h>

static struct mock_req *live_head;
static int live_count;
static unsigned long id_seq;
static json_tokener *tok; /* reused: a new tokener costs a calloc'd stack */

static const struct dialect_ops *const ops_by_dialect[] = {
    [D_OPENAI] = &openai_ops,
    [D_ANTHROPIC] = &anthropic_ops,
    [D_GEMINI] = &gemini_ops,
    [D_OLLAMA] = &ollama_ops,
};

int mock_in_flight(void)
{
    return live_count;
}

const char *http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 529:
        return "Overloaded";
    default:
        return "Status";
    }
}

void piece_bounds(const struct mock_req *m, int k, size_t *start, size_t *end)
{
    *start = k == 0 ? 0 : m->piece_end[k - 1];
    *end = m->piece_end[k];
}

/* ---- life cycle ---------------------------------------------------------- */

static struct mock_req *mock_new(struct evhttp_request *req, enum dialect d)
{
    struct mock_req *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->req = req;
    m->ops = ops_by_dialect[d];
    m->created = (long)time(NULL);
    directives_init(&m->dir);
    snprintf(m->id, sizeof(m->id), "mock%lu", ++id_seq);
    m->next = live_head;
    if (live_head) live_head->prev = m;
    live_head = m;
    live_count++;
    return m;
}

/* Frees what prepare() allocated inside m (not m itself). */
static void mock_clear(struct mock_req *m)
{
    if (m->piece_end != m->piece_inline) free(m->piece_end);
    free(m->answer_heap);
    tools_free(m);
    embed_free(m);
    directives_free(&m->dir);
}

/* Frees our side of a request; the evhttp_request is never touched here. */
static void mock_release(struct mock_req *m)
{
    if (m->waiting_close) {
        struct evhttp_connection *evcon = evhttp_request_get_connection(m->req);
        if (evcon) evhttp_connection_set_closecb(evcon, NULL, NULL);
    }
    if (m->timer) event_free(m->timer);
    if (m->peer_watch) event_free(m->peer_watch);
    if (m->prev)
        m->prev->next = m->next;
    else
        live_head = m->next;
    if (m->next) m->next->prev = m->prev;
    live_count--;
    mock_clear(m);
    free(m);
}

/* The client went away while we were waiting (hang, latency, trickle). */
static void on_client_close(struct evhttp_connection *evcon, void *arg)
{
    struct mock_req *m = arg;
    struct evhttp_request *req = m->req;
    m->waiting_close = false;
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    mock_release(m);
    /* On EOF libevent detaches an unfinished request from its connection and
     * leaves it to us; ending the reply of a detached request frees it. */
    if (evhttp_request_get_connection(req) == NULL) evhttp_send_reply_end(req);
}

static void watch_close(struct mock_req *m)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(m->req);
    if (!evcon || m->waiting_close) return;
    evhttp_connection_set_closecb(evcon, on_client_close, m);
    m->waiting_close = true;
}

/* Readable before we replied: EOF means the client left; data means it
 * pipelined the next request, which evhttp will read once we reply. */
static void on_peer_readable(evutil_socket_t fd, short what, void *arg)
{
    struct mock_req *m = arg;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    event_free(m->peer_watch);
    m->peer_watch = NULL;
    if (n > 0) return;
    struct evhttp_connection *evcon = evhttp_request_get_connection(m->req);
    mock_release(m);
    if (evcon) evhttp_connection_free(evcon); /* frees the request too */
}

/* evhttp stops reading while the application holds a request, so it would
 * never see a client that gives up on a hang= or latency_ms= request. */
static void watch_peer(struct mock_req *m)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(m->req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    if (!bev) return;
    m->peer_watch =
        event_new(mock_base, bufferevent_getfd(bev), EV_READ | EV_PERSIST, on_peer_readable, m);
    if (m->peer_watch) event_add(m->peer_watch, NULL);
}

void mock_free_all(void)
{
    while (live_head)
        mock_release(live_head);
    if (tok) json_tokener_free(tok);
    tok = NULL;
}

/* Called from the dispatcher when libevent hands back a request it failed on. */
void mock_forget_req(struct evhttp_request *req)
{
    for (struct mock_req *m = live_head; m; m = m->next)
        if (m->req == req) {
            mock_release(m);
            return;
        }
}

/* ---- headers and one-shot replies --------------------------------------- */

static void add_retry_headers(struct mock_req *m, struct evkeyvalq *h)
{
    char v[64];
    const struct directives *d = &m->dir;
    if (d->retry_after_date == 1) {
        time_t t = time(NULL) + (d->retry_after >= 0 ? d->retry_after : 1);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(v, sizeof(v), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        evhttp_add_header(h, "Retry-After", v);
    } else if (d->retry_after >= 0) {
        snprintf(v, sizeof(v), "%d", d->retry_after);
        evhttp_add_header(h, "Retry-After", v);
    }
    if (d->retry_after_ms >= 0) {
        snprintf(v, sizeof(v), "%d", d->retry_after_ms);
        evhttp_add_header(h, "retry-after-ms", v);
    }
    if (d->should_retry >= 0)
        evhttp_add_header(h, "x-should-retry", d->should_retry ? "true" : "false");
}

static void add_headers(struct mock_req *m, const char *content_type)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(m->req);
    evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, m->ops == &anthropic_ops ? "request-id" : "x-request-id", m->id);
    add_retry_headers(m, h);
}

/* Sends a whole reply and ends the request. */
static void reply_once(struct mock_req *m, int status, struct evbuffer *body)
{
    stats_record_status(status);
    struct evhttp_request *req = m->req;
    mock_release(m);
    evhttp_send_reply(req, status, http_reason(status), body);
}

/* ---- abrupt close (cut_after) -------------------------------------------- */

/* Runs once the partial reply has reached the kernel: close the socket
 * without finishing the body so the client sees a truncated response. */
static void on_partial_written(struct evhttp_connection *evcon, void *arg)
{
    struct mock_req *m = arg;
    mock_release(m);
    evhttp_connection_free(evcon); /* also frees the request */
}

static void send_then_cut(struct mock_req *m, struct evbuffer *b)
{
    if (m->waiting_close) {
        evhttp_connection_set_closecb(evhttp_request_get_connection(m->req), NULL, NULL);
        m->waiting_close = false;
    }
    evhttp_send_reply_chunk_with_cb(m->req, b, on_partial_written, m);
}

static void reply_cut_body(struct mock_req *m, struct evbuffer *b)
{
    char len[32];
    size_t n = evbuffer_get_length(b);
    struct evbuffer *half = evbuffer_new();
    snprintf(len, sizeof(len), "%zu", n);
    evhttp_add_header(evhttp_request_get_output_headers(m->req), "Content-Length", len);
    evbuffer_remove_buffer(b, half, n / 2);
    stats_record_status(200);
    evhttp_send_reply_start(m->req, 200, "OK");
    send_then_cut(m, half);
    evbuffer_free(half);
}

/* ---- streaming ----------------------------------------------------------- */

/* How many pieces to send (text, then tool calls): all, or cut_after. */
static int stream_limit(const struct mock_req *m)
{
    int cut = m->dir.cut_after, all = m->npieces + m->tool_pieces;
    return cut >= 0 && cut < all ? cut : all;
}

static void send_piece(struct mock_req *m, int k, struct evbuffer *b)
{
    if (k < m->npieces)
        m->ops->piece(m, k, b);
    else
        m->ops->tool_piece(m, k - m->npieces, b);
}

static void stream_finish(struct mock_req *m, struct evbuffer *b)
{
    if (m->dir.cut_after >= 0) {
        send_then_cut(m, b);
        return;
    }
    m->ops->close(m, b);
    struct evhttp_request *req = m->req;
    evhttp_send_reply_chunk(req, b);
    mock_release(m);
    evhttp_send_reply_end(req);
}

static void on_trickle(evutil_socket_t fd, short what, void *arg)
{
    struct mock_req *m = arg;
    struct evbuffer *b = evbuffer_new();
    if (m->next_piece < stream_limit(m)) {
        send_piece(m, m->next_piece++, b);
        evhttp_send_reply_chunk(m->req, b);
        struct timeval tv = {m->dir.trickle_ms / 1000, (m->dir.trickle_ms % 1000) * 1000};
        evtimer_add(m->timer, &tv);
    } else {
        stream_finish(m, b);
    }
    evbuffer_free(b);
}

static void stream_start(struct mock_req *m)
{
    struct evbuffer *b = evbuffer_new();
    add_headers(m, m->ops->stream_type);
    stats_record_status(200);
    evhttp_send_reply_start(m->req, 200, "OK");
    m->ops->open(m, b);
    if (m->dir.trickle_ms > 0) {
        evhttp_send_reply_chunk(m->req, b);
        watch_close(m);
        if (m->timer) event_free(m->timer); /* the latency timer, if any */
        m->timer = evtimer_new(mock_base, on_trickle, m);
        struct timeval tv = {m->dir.trickle_ms / 1000, (m->dir.trickle_ms % 1000) * 1000};
        evtimer_add(m->timer, &tv);
    } else {
        for (int lim = stream_limit(m); m->next_piece < lim;)
            send_piece(m, m->next_piece++, b);
        stream_finish(m, b);
    }
    evbuffer_free(b);
}

/* ---- replying ------------------------------------------------------------ */

/* malformed=1, not streamed: a 200 body that is not JSON. */
static void malformed_body(struct mock_req *m, struct evbuffer *b)
{
    evbuffer_add_printf(b, "{\"id\":\"%s\",\"oops\": [1, 2, {not json", m->id);
}

static void reply_malformed(struct mock_req *m)
{
    struct evbuffer *b = evbuffer_new();
    if (!m->stream) {
        add_headers(m, "application/json");
        malformed_body(m, b);
        reply_once(m, 200, b);
    } else {
        add_headers(m, m->ops->stream_type);
        if (m->ops == &anthropic_ops) ADD_LIT(b, "event: message_start\n");
        evbuffer_add_printf(b, "%s{this is not json\n\n", m->ops == &ollama_ops ? "" : "data: ");
        reply_once(m, 200, b);
    }
    evbuffer_free(b);
}

/* The whole non-streamed answer of a prepared request (err: what prepare
 * refused): writes the body and returns the status. Live requests and batch
 * lines both answer through here, so a batch line gets what the same body
 * would get live. */
static int answer_whole(struct mock_req *m, const char *err, struct evbuffer *b)
{
    if (err) {
        m->ops->error(m, 400, err, b);
        return 400;
    }
    if (m->dir.status >= 400) {
        m->ops->error(m, m->dir.status, "mock: injected failure", b);
        return m->dir.status;
    }
    if (m->embed)
        embed_body(m, b);
    else
        m->ops->body(m, b);
    return 200;
}

/* Replies with the whole answer (or prepare's refusal, err). */
static void reply_whole(struct mock_req *m, const char *err)
{
    struct evbuffer *b = evbuffer_new();
    add_headers(m, "application/json");
    int status = answer_whole(m, err, b);
    if (status == 200 && m->dir.cut_after >= 0)
        reply_cut_body(m, b);
    else
        reply_once(m, status, b);
    evbuffer_free(b);
}

static void respond(struct mock_req *m)
{
    if (m->peer_watch) {
        event_free(m->peer_watch);
        m->peer_watch = NULL;
    }
    if (m->dir.status < 400 && m->dir.malformed == 1)
        reply_malformed(m);
    else if (m->dir.status < 400 && m->stream)
        stream_start(m);
    else
        reply_whole(m, NULL);
}

static void on_latency(evutil_socket_t fd, short what, void *arg)
{
    respond(arg);
}

/* ---- parsing the request ------------------------------------------------- */

struct scan {
    struct directives *dir;
    size_t bytes;
};

/* Counts and scans every text in a content value: a string, an array of
 * strings or parts, or parts whose "text"/"content" hold more of the same. */
static void scan_content(struct scan *sc, json_object *v, int depth)
{
    if (!v || depth > 8) return;
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        size_t len = (size_t)json_object_get_string_len(v);
        sc->bytes += len;
        directives_apply_markers(sc->dir, s, len);
    } else if (json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);
        for (size_t i = 0; i < n; i++)
            scan_content(sc, json_object_array_get_idx(v, i), depth + 1);
    } else if (json_object_is_type(v, json_type_object)) {
        json_object *t;
        if (json_object_object_get_ex(v, "text", &t)) scan_content(sc, t, depth + 1);
        if (json_object_object_get_ex(v, "content", &t)) scan_content(sc, t, depth + 1);
        if (json_object_object_get_ex(v, "parts", &t)) scan_content(sc, t, depth + 1);
    }
}

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static long get_cap(json_object *o, const char *key)
{
    json_object *v = o ? get(o, key) : NULL;
    return v && json_object_is_type(v, json_type_int) ? (long)json_object_get_int64(v) : -1;
}

static bool get_bool(json_object *o, const char *key, bool dflt)
{
    json_object *v = o ? get(o, key) : NULL;
    return v && json_object_is_type(v, json_type_boolean) ? json_object_get_boolean(v) : dflt;
}

/* Fills model, stream flags and the cap; returns an error message or NULL. */
static const char *read_fields(struct mock_req *m, enum dialect d, json_object *root, long *cap)
{
    json_object *model = get(root, "model");
    if (d != D_GEMINI) {
        if (!model || !json_object_is_type(model, json_type_string)) return "model: field required";
        snprintf(m->model, sizeof(m->model), "%s", json_object_get_string(model));
        m->stream = get_bool(root, "stream", d == D_OLLAMA);
    }
    switch (d) {
    case D_OPENAI:
        *cap = get_cap(root, "max_completion_tokens");
        if (*cap < 0) *cap = get_cap(root, "max_tokens");
        m->include_usage =
            m->stream && get_bool(get(root, "stream_options"), "include_usage", false);
        return get(root, "messages") ? NULL : "messages: field required";
    case D_ANTHROPIC:
        *cap = get_cap(root, "max_tokens");
        return *cap < 0 ? "max_tokens: Field required" : NULL;
    case D_GEMINI: {
        json_object *gc = get(root, "generationConfig");
        long n = get_cap(gc, "candidateCount"), top = get_cap(gc, "logprobs");
        *cap = get_cap(gc, "maxOutputTokens");
        m->candidates = n < 1 ? 1 : n > 8 ? 8 : (int)n;
        m->logprobs = !get_bool(gc, "responseLogprobs", false) ? -1
                      : top < 0                                ? 0
                      : top > 20                               ? 20
                                                               : (int)top;
        return get(root, "contents") ? NULL : "contents is required";
    }
    case D_OLLAMA: {
        long top = get_cap(root, "top_logprobs");
        *cap = get_cap(get(root, "options"), "num_predict");
        m->logprobs = !get_bool(root, "logprobs", false) ? -1
                      : top < 0                          ? 0
                      : top > 20                         ? 20
                                                         : (int)top;
        return NULL;
    }
    }
    return NULL;
}

/* ---- Anthropic's prompt cache, simulated ---------------------------------
 *
 * A block with cache_control ends a cacheable prefix: the system blocks,
 * then the messages' blocks, in order (tools carry no prompt text here). A
 * prefix is the hash of its blocks' JSON and the model; its tokens are its
 * text bytes / 4, rounded up, as P is. A request reads the longest of its
 * marked prefixes that an earlier request wrote (within its TTL, which a
 * read renews), and writes from there to its last mark: 5 minutes, or 1
 * hour for cache_control.ttl "1h". A top-level cache_control marks the
 * last block. Directives (cached_tokens=, cache_write_tokens=, ...) win. */

#define PCACHE_SLOTS 4096
#define PCACHE_MARKS 8

static struct {
    uint64_t h;
    int64_t expires_ms;
} pcache[PCACHE_SLOTS];

struct pc_walk {
    uint64_t h;   /* the prefix so far */
    size_t bytes; /* its text */
    int n;
    struct {
        uint64_t h;
        size_t bytes;
        bool one_hour;
    } mark[PCACHE_MARKS];
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* The slot of h (found, or where it goes: an empty or expired one). */
static int pcache_slot(uint64_t h, int64_t now, bool *found)
{
    int free_slot = -1;
    for (int i = 0; i < PCACHE_SLOTS; i++) {
        int k = (int)((h + (uint64_t)i) % PCACHE_SLOTS);
        if (pcache[k].h == h && pcache[k].expires_ms > now) {
            *found = true;
            return k;
        }
        if (free_slot < 0 && pcache[k].expires_ms <= now) free_slot = k;
        if (pcache[k].h == 0) break;
    }
    *found = false;
    return free_slot >= 0 ? free_slot : (int)(h % PCACHE_SLOTS);
}

static void pc_mark(struct pc_walk *w, json_object *cc)
{
    if (w->n == PCACHE_MARKS) return;
    json_object *ttl = get(cc, "ttl");
    w->mark[w->n].h = w->h;
    w->mark[w->n].bytes = w->bytes;
    w->mark[w->n].one_hour = ttl && strcmp(json_object_get_string(ttl), "1h") == 0;
    w->n++;
}

static void pc_block(struct pc_walk *w, json_object *block)
{
    struct directives tmp; /* the bytes only: markers were read already */
    directives_init(&tmp);
    struct scan sc = {&tmp, 0};
    scan_content(&sc, block, 0);
    directives_free(&tmp);
    w->bytes += sc.bytes;
    w->h = fnv(w->h, json_object_to_json_string_ext(block, JSON_C_TO_STRING_PLAIN));
    json_object *cc =
        json_object_is_type(block, json_type_object) ? get(block, "cache_control") : NULL;
    if (cc) pc_mark(w, cc);
}

static void pc_blocks(struct pc_walk *w, json_object *content)
{
    if (json_object_is_type(content, json_type_array))
        for (size_t i = 0; i < json_object_array_length(content); i++)
            pc_block(w, json_object_array_get_idx(content, i));
    else if (content)
        pc_block(w, content);
}

static void prompt_cache(struct mock_req *m, json_object *root)
{
    struct pc_walk w = {.h = fnv(1469598103934665603ULL, m->model)};
    pc_blocks(&w, get(root, "system"));
    json_object *msgs = get(root, "messages");
    for (size_t i = 0;
         json_object_is_type(msgs, json_type_array) && i < json_object_array_length(msgs); i++)
        pc_blocks(&w, get(json_object_array_get_idx(msgs, i), "content"));
    json_object *top = get(root, "cache_control");
    if (top) pc_mark(&w, top);
    m->pc_read = m->pc_w5m = m->pc_w1h = -1;
    if (!w.n) return;
    int64_t now = mono_ms();
    size_t read = 0;
    for (int i = w.n - 1; i >= 0 && !read; i--) { /* the longest prefix written before */
        bool found;
        pcache_slot(w.mark[i].h, now, &found);
        if (found) read = w.mark[i].bytes;
    }
    for (int i = 0; i < w.n; i++) { /* write (or renew) every mark */
        bool found;
        int k = pcache_slot(w.mark[i].h, now, &found);
        pcache[k].h = w.mark[i].h;
        pcache[k].expires_ms = now + (w.mark[i].one_hour ? 3600000 : 300000);
    }
    long last = (long)((w.mark[w.n - 1].bytes + 3) / 4), cached = (long)((read + 3) / 4);
    m->pc_read = cached;
    m->pc_w5m = w.mark[w.n - 1].one_hour ? 0 : last - cached;
    m->pc_w1h = w.mark[w.n - 1].one_hour ? last - cached : 0;
}

/* Every text that counts toward prompt bytes (and may carry markers). */
static size_t scan_prompt(struct mock_req *m, enum dialect d, json_object *root)
{
    struct scan sc = {&m->dir, 0};
    if (d == D_ANTHROPIC) scan_content(&sc, get(root, "system"), 0);
    if (d == D_GEMINI) {
        scan_content(&sc, get(root, "systemInstruction"), 0);
        scan_content(&sc, get(root, "system_instruction"), 0);
        scan_content(&sc, get(root, "contents"), 0);
    } else {
        json_object *msgs = get(root, "messages");
        size_t n =
            msgs && json_object_is_type(msgs, json_type_array) ? json_object_array_length(msgs) : 0;
        for (size_t i = 0; i < n; i++)
            scan_content(&sc, get(json_object_array_get_idx(msgs, i), "content"), 0);
    }
    return sc.bytes;
}

/* Splits the answer into word pieces (each piece keeps the spaces before its
 * word, so the pieces concatenate to the answer) and applies the cap. */
static void split_answer(struct mock_req *m, long cap)
{
    const char *s = m->answer;
    size_t len = strlen(s), words = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && (i == 0 || s[i - 1] == ' ')) words++;
    m->piece_end = words <= 16 ? m->piece_inline : malloc(words * sizeof(size_t));
    if (!m->piece_end) { /* out of memory: answer nothing rather than crash */
        m->piece_end = m->piece_inline;
        len = 0;
    }
    int k = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && (i + 1 == len || s[i + 1] == ' ')) m->piece_end[k++] = i + 1;
    m->npieces = k;
    m->answer_len = len;
    if (cap >= 0 && cap < k) {
        m->npieces = (int)cap;
        m->answer_len = cap ? m->piece_end[cap - 1] : 0;
        m->length = true;
    } else if (k > 0) {
        m->piece_end[k - 1] = len; /* trailing spaces ride on the last piece */
    }
    if (m->dir.finish_length == 1) m->length = true;
}

static long pick(long override, long dflt)
{
    return override >= 0 ? override : dflt;
}

static void compute_usage(struct mock_req *m, size_t prompt_bytes)
{
    struct usage *u = &m->use;
    const struct directives *d = &m->dir;
    long est = (long)((prompt_bytes + 3) / 4);
    u->prompt = pick(d->prompt_tokens, est > 1 ? est : 1);
    u->reasoning = pick(d->reasoning_tokens, 0);
    u->words = m->npieces;
    u->completion = pick(d->completion_tokens, u->words + u->reasoning + m->call_tokens);
    bool directed =
        d->cached_tokens >= 0 || d->cache_write_tokens >= 0 || d->cache_write_1h_tokens >= 0;
    bool simulated = m->pc_read >= 0 && !directed;
    u->cached = pick(d->cached_tokens, simulated ? m->pc_read : 0);
    u->cache_w5m = pick(d->cache_write_tokens, simulated ? m->pc_w5m : 0);
    u->cache_w1h = pick(d->cache_write_1h_tokens, simulated ? m->pc_w1h : 0);
}

static void choose_answer(struct mock_req *m, long cap)
{
    if (m->dir.content) {
        m->answer = m->dir.content;
    } else if (m->ncalls) { /* tool calls alone, as models mostly answer */
        m->answer = "";
    } else {
        snprintf(m->answer_buf, sizeof(m->answer_buf), "Hello from %s. This is a mock reply.",
                 m->model);
        m->answer = m->answer_buf;
    }
    if (m->dir.repeat > 1) { /* one answer N times, joined by a space: megabytes on demand */
        int n = m->dir.repeat < MOCK_REPEAT_MAX ? m->dir.repeat : MOCK_REPEAT_MAX;
        size_t one = strlen(m->answer);
        char *big = malloc((one + 1) * (size_t)n);
        if (big) {
            char *p = big;
            for (int i = 0; i < n; i++) {
                if (i) *p++ = ' ';
                memcpy(p, m->answer, one);
                p += one;
            }
            *p = '\0';
            m->answer_heap = big;
            m->answer = big;
        }
    }
    split_answer(m, cap);
}

/* Parses the body; returns the parsed root or NULL for bad JSON. */
static json_object *parse_body(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0) return NULL;
    const char *p = (const char *)evbuffer_pullup(in, -1);
    if (!tok && !(tok = json_tokener_new())) return NULL;
    json_tokener_reset(tok);
    json_object *root = json_tokener_parse_ex(tok, p, (int)len);
    if (root && json_tokener_get_parse_end(tok) != len) {
        /* Trailing bytes: only whitespace is allowed after the value. */
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
            if (p[i] != ' ' && p[i] != '\n' && p[i] != '\r' && p[i] != '\t') {
                json_object_put(root);
                root = NULL;
                break;
            }
    }
    if (root && !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        root = NULL;
    }
    return root;
}

static void apply_header_directives(struct mock_req *m)
{
    if (!m->req) return; /* a batch line */
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(m->req), "x-mock");
    if (h) directives_apply(&m->dir, h, strlen(h));
}

/* Sets everything up from the body; returns an error message or NULL. */
static const char *prepare(struct mock_req *m, enum dialect d, json_object *root,
                           const char *path_model)
{
    long cap = -1;
    if (path_model) snprintf(m->model, sizeof(m->model), "%s", path_model);
    const char *err = read_fields(m, d, root, &cap);
    if (err) return err;
    /* Precedence, lowest first: queue rule, prompt markers, x-mock header.
     * A batch line has only its markers, and is not a live request. */
    if (!m->batch) {
        stats_record_model(m->model);
        faults_take(m->model, &m->dir);
    }
    size_t bytes = scan_prompt(m, d, root);
    m->pc_read = m->pc_w5m = m->pc_w1h = -1;
    if (d == D_ANTHROPIC) prompt_cache(m, root);
    apply_header_directives(m);
    if ((err = tools_check(m, d, root)) != NULL) return err;
    if ((err = tools_prepare(m, d, root)) != NULL) return err;
    choose_answer(m, cap);
    if (m->ncalls) {
        m->length = false; /* the calls are why the answer ends */
        m->tool_pieces = m->ops->tool_npieces(m);
    }
    compute_usage(m, bytes);
    return NULL;
}

/* Embeddings: the inputs instead of a prompt, then the same directives. */
static const char *prepare_embed(struct mock_req *m, enum dialect d, json_object *root,
                                 const char *path_model, bool batch)
{
    if (path_model) snprintf(m->model, sizeof(m->model), "%s", path_model);
    const char *err = embed_prepare(m, d, root, batch);
    if (err) return err;
    apply_header_directives(m);
    if (m->dir.prompt_tokens >= 0) m->use.prompt = m->dir.prompt_tokens;
    return NULL;
}

static void handle(struct evhttp_request *req, enum dialect d, const char *path_model,
                   bool stream_by_path, int embed)
{
    struct mock_req *m = mock_new(req, d);
    if (!m) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    m->stream = stream_by_path;
    json_object *root = parse_body(req);
    const char *err = !root       ? "mock: request body is not valid JSON"
                      : embed < 0 ? prepare(m, d, root, path_model)
                                  : prepare_embed(m, d, root, path_model, embed == 1);
    json_object_put(root);
    if (err) {
        reply_whole(m, err);
    } else if (m->dir.hang == 1) {
        watch_close(m);
        watch_peer(m);
    } else if (m->dir.latency_ms > 0) {
        struct timeval tv = {m->dir.latency_ms / 1000, (m->dir.latency_ms % 1000) * 1000};
        m->timer = evtimer_new(mock_base, on_latency, m);
        watch_close(m);
        watch_peer(m);
        evtimer_add(m->timer, &tv);
    } else {
        respond(m);
    }
}

void mock_handle_generation(struct evhttp_request *req, enum dialect d, const char *path_model,
                            bool stream_by_path)
{
    handle(req, d, path_model, stream_by_path, -1);
}

void mock_handle_embeddings(struct evhttp_request *req, enum dialect d, const char *path_model,
                            bool batch)
{
    handle(req, d, path_model, false, batch ? 1 : 0);
}

int mock_answer_line(enum dialect d, json_object *body, const char *path_model,
                     struct evbuffer *out, struct mock_answer *a)
{
    struct mock_req m = {.ops = ops_by_dialect[d], .batch = true, .created = (long)time(NULL)};
    directives_init(&m.dir);
    snprintf(m.id, sizeof(m.id), "mock%lu", ++id_seq);
    const char *err = json_object_is_type(body, json_type_object)
                          ? prepare(&m, d, body, path_model)
                          : "mock: request body is not a JSON object";
    bool malformed = !err && m.dir.status < 400 && m.dir.malformed == 1;
    if (malformed) {
        malformed_body(&m, out);
        a->status = 200;
    } else {
        a->status = answer_whole(&m, err, out);
    }
    a->malformed = malformed;
    a->has_usage = a->status == 200 && !malformed && m.dir.no_usage != 1;
    a->use = m.use;
    snprintf(a->id, sizeof(a->id), "%s", m.id);
    mock_clear(&m);
    return a->status;
}

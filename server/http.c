#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event_struct.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/ptrmap.h"
#include "lib/util.h"
#include "db/instances.h"
#include "db/rollup.h"
#include "db/ledger.h"
#include "router/keyring.h"
#include "router/budget.h"
#include "router/router.h"
#include "server/admin.h"
#include "server/chat.h"

/* ------------------------------------------------------------ connections
 *
 * Each client connection has a guard that holds it to an absolute deadline
 * for receiving a whole request (headers and body): evhttp's own timeout is
 * per read, so a client trickling a byte at a time would never be cut off.
 * The same deadline bounds an idle keep-alive connection. The guard also
 * tells the request being served when its client goes away, and counts
 * connections for limits.max_connections.
 *
 * evhttp gives no hook at accept time but the bufferevent callback, which
 * runs before the connection is set up; the guard attaches to the
 * connection on the next loop pass, holding a reference on the bufferevent
 * meanwhile so it can tell whether evhttp dropped the connection already. */

typedef enum { GUARD_RECEIVING, GUARD_BUSY } guard_state;

typedef struct conn_guard {
    app *a;
    struct bufferevent *bev;
    struct evhttp_connection *evcon;
    guard_state state;
    struct event deadline;
    struct event peer_closed; /* EV_CLOSED while a request is being served */
    bool watching_close;
    struct evbuffer_cb_entry *out_cb; /* on_output, enabled while receiving */
    bool evhttp_error_page;           /* the response being written is evhttp's own HTML error */
    int error_status;
    void (*on_gone)(void *arg); /* the request being served, told if the client leaves */
    void *gone_arg;
} conn_guard;

static void guard_count_close(app *a)
{
    a->open_connections--;
    if (a->listener_paused && !a->draining &&
        a->open_connections < config_limits(a->cfg)->max_connections) {
        evconnlistener_enable(a->listener);
        a->listener_paused = false;
    }
}

static void guard_arm(conn_guard *g)
{
    int64_t ms = config_limits(g->a->cfg)->read_timeout_ms;
    struct timeval tv = util_ms_timeval(ms);
    g->state = GUARD_RECEIVING;
    evtimer_add(&g->deadline, &tv);
    /* evhttp writes its own error pages only while a request is arriving */
    if (g->out_cb)
        evbuffer_cb_set_flags(bufferevent_get_output(g->bev), g->out_cb, EVBUFFER_CB_ENABLED);
}

static void on_guard_deadline(evutil_socket_t fd, short what, void *arg)
{
    conn_guard *g = arg;
    if (g->state != GUARD_RECEIVING) return;
    log_debug("closing a client connection: no whole request within %lld ms",
              (long long)config_limits(g->a->cfg)->read_timeout_ms);
    evhttp_connection_free(g->evcon); /* runs on_conn_close, which frees g */
}

static void guard_unwatch_close(conn_guard *g)
{
    if (g->watching_close) event_del(&g->peer_closed);
    g->watching_close = false;
}

/* evhttp does not read while a request is being served, so it would not
 * notice a client that hung up until it writes the reply; we watch for the
 * hang-up (EPOLLRDHUP) for the connection's whole life (one registration,
 * merged with evhttp's own) and hand it to evhttp as the EOF it would have
 * read, which detaches the request and closes the connection as usual. */
static void on_peer_closed(evutil_socket_t fd, short what, void *arg)
{
    conn_guard *g = arg;
    guard_unwatch_close(g);
    bufferevent_event_cb eventcb = NULL;
    void *cbarg = NULL;
    bufferevent_getcb(g->bev, NULL, NULL, &eventcb, &cbarg);
    if (eventcb) eventcb(g->bev, BEV_EVENT_EOF | BEV_EVENT_READING, cbarg);
}

static void guard_watch_close(conn_guard *g)
{
    evutil_socket_t fd = bufferevent_getfd(g->bev);
    if (g->watching_close || fd < 0) return;
    event_assign(&g->peer_closed, g->a->base, fd, EV_CLOSED | EV_PERSIST, on_peer_closed, g);
    g->watching_close = event_add(&g->peer_closed, NULL) == 0;
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    conn_guard *g = arg;
    ptrmap_del(g->a->guards, evcon);
    evtimer_del(&g->deadline);
    guard_unwatch_close(g);
    if (g->on_gone) g->on_gone(g->gone_arg);
    guard_count_close(g->a);
    free(g);
}

static void rewrite_protocol_error(conn_guard *g, struct evbuffer *out, int status);

/* evhttp answers a few protocol errors itself (oversized body or headers,
 * unparseable request) with an HTML page and closes; we replace that page
 * with an OpenAI error JSON so that every error has the same shape. */
static void on_output(struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
    conn_guard *g = arg;
    if (info->n_added == 0) return;
    /* A socket bufferevent keeps its output's start frozen between writes
     * (only its own write unfreezes it); we do the same, briefly. */
    char head[16];
    bool frozen = false;
    if (info->orig_size == 0) { /* a response starts: only its status line matters */
        frozen = evbuffer_copyout(out, head, 13) < 0;
        if (frozen) evbuffer_unfreeze(out, 1);
        g->evhttp_error_page =
            evbuffer_copyout(out, head, 13) == 13 && memcmp(head, "HTTP/1.", 7) == 0 &&
            (memcmp(head + 8, " 413 ", 5) == 0 || memcmp(head + 8, " 400 ", 5) == 0);
        g->error_status = head[10] == '1' ? 413 : 400;
    } else if (g->evhttp_error_page && (frozen = evbuffer_copyout(out, head, 1) < 0)) {
        evbuffer_unfreeze(out, 1);
    }
    if (g->evhttp_error_page && evbuffer_search(out, "</BODY></HTML>", 14, NULL).pos >= 0) {
        g->evhttp_error_page = false; /* evhttp's page is whole */
        rewrite_protocol_error(g, out, g->error_status);
    }
    if (frozen) evbuffer_freeze(out, 1);
}

static void on_guard_attach(evutil_socket_t fd, short what, void *arg)
{
    conn_guard *g = arg;
    bufferevent_event_cb eventcb = NULL;
    void *cbarg = NULL;
    bufferevent_getcb(g->bev, NULL, NULL, &eventcb, &cbarg);
    bufferevent_decref(g->bev);
    if (!eventcb || !cbarg) { /* evhttp already dropped the connection */
        guard_count_close(g->a);
        free(g);
        return;
    }
    g->evcon = cbarg; /* evhttp's bufferevent callbacks carry the connection */
    /* Streams are written a chunk at a time: without TCP_NODELAY, Nagle and
     * the client's delayed ACK hold chunks back by up to 40 ms. */
    int one = 1, sock = bufferevent_getfd(g->bev);
    if (sock >= 0) setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    evhttp_connection_set_closecb(g->evcon, on_conn_close, g);
    g->out_cb = evbuffer_add_cb(bufferevent_get_output(g->bev), on_output, g);
    ptrmap_put(g->a->guards, g->evcon, g);
    evtimer_assign(&g->deadline, g->a->base, on_guard_deadline, g);
    guard_arm(g);
    guard_watch_close(g);
}

static struct bufferevent *make_conn_bev(struct event_base *base, void *arg)
{
    app *a = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    conn_guard *g = bev ? calloc(1, sizeof *g) : NULL;
    if (!g) return bev;
    g->a = a;
    g->bev = bev;
    bufferevent_incref(bev);
    struct timeval zero = {0, 0};
    event_base_once(base, -1, EV_TIMEOUT, on_guard_attach, g, &zero);
    a->open_connections++;
    a->stats.connections++;
    if (a->open_connections >= config_limits(a->cfg)->max_connections && !a->listener_paused) {
        log_warn("%lld client connections open (limits.max_connections): pausing accept",
                 (long long)a->open_connections);
        evconnlistener_disable(a->listener);
        a->listener_paused = true;
    }
    return bev;
}

static conn_guard *guard_of(app *a, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    return evcon ? ptrmap_get(a->guards, evcon) : NULL;
}

static void on_reply_complete(struct evhttp_request *req, void *arg)
{
    conn_guard *g = arg;
    g->on_gone = NULL;
    guard_arm(g); /* the next request on this connection gets its own deadline */
}

/* The request has been received whole: its deadline no longer applies
 * until the reply is complete. */
static void guard_request_received(app *a, struct evhttp_request *req)
{
    conn_guard *g = guard_of(a, req);
    if (!g) return;
    g->state = GUARD_BUSY;
    evtimer_del(&g->deadline);
    if (g->out_cb) /* our own replies need no rewriting: skip the callback */
        evbuffer_cb_clear_flags(bufferevent_get_output(g->bev), g->out_cb, EVBUFFER_CB_ENABLED);
    evhttp_request_set_on_complete_cb(req, on_reply_complete, g);
}

void http_watch_client(app *a, struct evhttp_request *req, void (*on_gone)(void *), void *arg)
{
    conn_guard *g = guard_of(a, req);
    if (g) {
        g->on_gone = on_gone;
        g->gone_arg = arg;
    }
}

void http_unwatch_client(app *a, struct evhttp_request *req)
{
    conn_guard *g = guard_of(a, req);
    if (g) g->on_gone = NULL;
}

/* ------------------------------------------------------------ replies */

static const char *reason_phrase(int status);

/* What a request evhttp rejected itself gets told: 413 for a body over
 * the limit, 400 for a request line or headers it could not read. Returns
 * the error code and fills msg. */
static const char *protocol_error_text(app *a, int status, char *msg, size_t n)
{
    const limits_conf *lim = config_limits(a->cfg);
    if (status == 413) {
        snprintf(msg, n,
                 "The request body is too large: this gateway accepts at most %lld bytes "
                 "(limits.max_body_bytes); send a smaller request",
                 (long long)lim->max_body_bytes);
        return "request_too_large";
    }
    snprintf(msg, n,
             "The HTTP request could not be read: the request line or headers are malformed, "
             "or the headers are larger than %lld bytes (limits.max_header_bytes)",
             (long long)lim->max_header_bytes);
    return "bad_request";
}

static void rewrite_protocol_error(conn_guard *g, struct evbuffer *out, int status)
{
    char msg[300];
    buf body = BUF_INIT, resp = BUF_INIT;
    const char *code = protocol_error_text(g->a, status, msg, sizeof msg);
    provider_openai_error_json(&body, "invalid_request_error", code, NULL, msg);
    buf_printf(&resp,
               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nx-should-retry: false\r\n"
               "Connection: close\r\nContent-Length: %zu\r\n\r\n",
               status, reason_phrase(status), body.len);
    buf_append(&resp, body.data, body.len);
    g->a->stats.replies_4xx++;
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_add(out, resp.data, resp.len);
    buf_free(&body);
    buf_free(&resp);
}

/* Request ids need to be unique, not secret: a 64-bit counter mixed by
 * splitmix64 from a random start costs no system call per request. */
void http_new_request_id(char out[32])
{
    static uint64_t state;
    static bool seeded;
    if (!seeded) {
        char hex[17];
        if (util_random_hex(hex, 8)) state = strtoull(hex, NULL, 16);
        state ^= (uint64_t)util_now_us() << 16 ^ (uint64_t)getpid();
        seeded = true;
    }
    static const char digits[] = "0123456789abcdef";
    memcpy(out, "req_", 4);
    for (int half = 0; half < 2; half++) {
        uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        for (int i = 0; i < 12; i++, z >>= 4)
            out[4 + half * 12 + i] = digits[z & 15];
    }
    out[28] = '\0';
}

void http_count_reply(app *a, int status)
{
    if (status < 300)
        a->stats.replies_2xx++;
    else if (status < 500)
        a->stats.replies_4xx++;
    else
        a->stats.replies_5xx++;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 400 ? "OK" : "Error";
    }
}

void http_reply_json(app *a, struct evhttp_request *req, int status, const char *body, size_t len)
{
    http_reply(a, req, status, "application/json", body, len);
}

/* evhttp copies each header's name and value (three allocations) and
 * prints each line with its own printf: lines collected here reach it as
 * one entry, printed as they are: buf_add_header (lib/buf.h) lets no line
 * break through. */
void http_head_flush(struct evhttp_request *req, buf *head)
{
    if (!head->len) return;
    /* "name: value\r\nname2: value2\r\n" -> name = "name", value = the rest
     * without the last line break; evhttp prints "%s: %s\r\n". It frees the
     * entry with free() (bridle sets no libevent allocator). */
    const char *colon = memchr(head->data, ':', head->len);
    struct evkeyval *kv = calloc(1, sizeof *kv);
    if (!colon || !kv) abort();
    size_t nlen = (size_t)(colon - head->data);
    kv->key = strndup(head->data, nlen);
    kv->value = strndup(colon + 2, head->len - nlen - 4);
    if (!kv->key || !kv->value) abort();
    struct evkeyvalq *q = evhttp_request_get_output_headers(req);
    kv->next.tqe_next = NULL; /* TAILQ_INSERT_TAIL */
    kv->next.tqe_prev = q->tqh_last;
    *q->tqh_last = kv;
    q->tqh_last = &kv->next.tqe_next;
    buf_reset(head);
}

/* evhttp formats a Date (gmtime_r, snprintf) for every HTTP/1.1 reply that
 * has none; the text changes once a second, so it is made once a second. */
static void add_date(struct evhttp_request *req, struct evkeyvalq *out)
{
    static time_t last = -1;
    static char date[50];
    if (req->major != 1 || req->minor < 1) return; /* where evhttp adds none */
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        evutil_date_rfc1123(date, sizeof date, &tm);
        last = now;
    }
    evhttp_add_header(out, "Date", date);
}

void http_reply(app *a, struct evhttp_request *req, int status, const char *content_type,
                const char *body, size_t len)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Content-Type", content_type);
    add_date(req, out);
    /* straight into the request's own buffer: no evbuffer to make and free */
    evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
    http_count_reply(a, status);
    evhttp_send_reply(req, status, reason_phrase(status), NULL);
}

void http_reply_error(app *a, struct evhttp_request *req, int status, const char *type,
                      const char *code, const char *param, const char *message, bool should_retry)
{
    buf b = BUF_INIT;
    provider_openai_error_json(&b, type, code, param, message);
    /* said both ways: the OpenAI SDKs obey it over their own status rules */
    evhttp_add_header(evhttp_request_get_output_headers(req), "x-should-retry",
                      should_retry ? "true" : "false");
    http_reply_json(a, req, status, b.data, b.len);
    buf_free(&b);
}

/* ------------------------------------------------------------ routes */

static void reply_models(app *a, struct evhttp_request *req)
{
    buf b = BUF_INIT;
    buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    long created = 1735689600; /* fixed: models have no creation time here */
    bool first = true;
    for (int i = 0; i < config_n_models(a->cfg); i++) {
        const model_conf *m = config_model(a->cfg, i);
        if (!m->enabled) continue;
        buf_printf(&b, "%s{\"id\":", first ? "" : ",");
        buf_append_json_str(&b, m->name, strlen(m->name));
        buf_printf(&b, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":", created);
        buf_append_json_str(&b, m->target.provider->name, strlen(m->target.provider->name));
        buf_printf(&b, ",\"bridle\":{\"provider\":");
        buf_append_json_str(&b, m->target.provider->name, strlen(m->target.provider->name));
        buf_printf(&b, ",\"tier\":\"%s\",\"context_window\":%lld}}",
                   pricing_tier_name(m->price.tier), (long long)m->price.context_window);
        first = false;
    }
    for (int i = 0; i < config_n_routes(a->cfg); i++) {
        const route_conf *r = config_route(a->cfg, i);
        buf_printf(&b, "%s{\"id\":", first ? "" : ",");
        buf_append_json_str(&b, r->name, strlen(r->name));
        buf_printf(&b,
                   ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"bridle\","
                   "\"bridle\":{\"route\":true,\"candidates\":[",
                   created);
        for (int j = 0; j < r->n_candidates; j++) {
            if (j) buf_append_char(&b, ',');
            buf_append_json_str(&b, r->candidates[j]->name, strlen(r->candidates[j]->name));
        }
        buf_append_str(&b, "]}}");
        first = false;
    }
    buf_append_str(&b, "]}");
    http_reply_json(a, req, 200, b.data, b.len);
    buf_free(&b);
}

/* GET /v1/bridle/health: what the gateway knows about its upstreams (circuit
 * breakers, calls in flight) and its usage ledger. */
static void health_limits(buf *b, const spend_limits *l)
{
    char d[40], w[40], m[40], h[40];
    util_format_pusd(l->budget_pusd[PERIOD_DAY], 6, d, sizeof d);
    util_format_pusd(l->budget_pusd[PERIOD_WEEK], 6, w, sizeof w);
    util_format_pusd(l->budget_pusd[PERIOD_MONTH], 6, m, sizeof m);
    util_format_pusd(l->pusd_per_hour, 6, h, sizeof h);
    buf_printf(b,
               "{\"budget_daily_usd\":\"%s\",\"budget_weekly_usd\":\"%s\","
               "\"budget_monthly_usd\":\"%s\",\"rpm\":%lld,\"tokens_per_hour\":%lld,"
               "\"usd_per_hour\":\"%s\"}",
               d, w, m, (long long)l->rpm, (long long)l->tokens_per_hour, h);
}

/* The caller's key as this gateway holds it (after the last reload): its
 * team and the limits that apply; never the key or its hash. */
static void health_key(app *a, buf *b, const key_conf *k)
{
    buf_append_str(b, ",\"key\":{\"id\":");
    buf_append_json_str(b, k->id, strlen(k->id));
    buf_printf(b, ",\"kind\":\"%s\",\"source\":\"%s\",\"team\":", k->admin ? "admin" : "client",
               k->set ? "database" : "config");
    if (k->team)
        buf_append_json_str(b, k->team, strlen(k->team));
    else
        buf_append_str(b, "null");
    buf_append_str(b, ",\"limits\":");
    health_limits(b, &k->lim);
    buf_append_str(b, ",\"team_limits\":");
    if (k->team_cfg)
        health_limits(b, &k->team_cfg->lim);
    else
        buf_append_str(b, "null");
    buf_append_char(b, '}');
    if (a->keys)
        buf_printf(b, ",\"keys\":{\"loaded\":%s,\"generation\":%llu,\"database_keys\":%d}",
                   keyring_loaded(a->keys) ? "true" : "false",
                   (unsigned long long)keyring_generation(a->keys), keyring_n_db_keys(a->keys));
}

static void reply_health(app *a, struct evhttp_request *req, const key_conf *k)
{
    int64_t now = util_now_ms();
    buf b = BUF_INIT;
    buf_append_str(&b, "{\"providers\":[");
    for (int i = 0; i < config_n_providers(a->cfg); i++) {
        const provider_conf *p = config_provider(a->cfg, i);
        buf_printf(&b, "%s{\"name\":", i ? "," : "");
        buf_append_json_str(&b, p->name, strlen(p->name));
        buf_printf(&b, ",\"enabled\":%s,\"in_flight\":%d,\"max_concurrency\":%d}",
                   config_provider_enabled(a->cfg, i) ? "true" : "false",
                   router_inflight(a->router, i), p->max_concurrency);
    }
    buf_append_str(&b, "],\"targets\":[");
    for (int i = 0; i < config_n_models(a->cfg); i++) {
        const model_conf *m = config_model(a->cfg, i);
        buf_printf(&b, "%s{\"model\":", i ? "," : "");
        buf_append_json_str(&b, m->name, strlen(m->name));
        buf_append_str(&b, ",\"provider\":");
        buf_append_json_str(&b, m->target.provider->name, strlen(m->target.provider->name));
        const breaker *br = router_breaker(a->router, &m->target);
        if (br) {
            breaker_snapshot sn;
            breaker_get_snapshot(br, now, &sn);
            buf_printf(&b,
                       ",\"breaker\":{\"state\":\"%s\",\"consecutive_failures\":%d,"
                       "\"window_calls\":%d,\"window_failures\":%d,\"opens_total\":%llu,"
                       "\"retry_in_ms\":%lld}",
                       breaker_state_name(sn.state), sn.consecutive_failures, sn.window_calls,
                       sn.window_failures, (unsigned long long)sn.opens_total,
                       (long long)(sn.next_allow_ms > now ? sn.next_allow_ms - now : 0));
        }
        buf_append_char(&b, '}');
    }
    buf_append_char(&b, ']');
    if (a->ledger) {
        ledger_stats ls = ledger_get_stats(a->ledger);
        buf_printf(&b,
                   ",\"ledger\":{\"database_up\":%s,\"recorded\":%lld,\"inserted\":%lld,"
                   "\"queued\":%lld,\"spool_bytes\":%lld,\"oldest_unshipped_ms\":%lld,"
                   "\"last_insert_ms_ago\":%lld,\"accepting\":%s}",
                   ls.database_up ? "true" : "false", (long long)ls.recorded,
                   (long long)ls.inserted, (long long)ls.queued, (long long)ls.spool_bytes,
                   (long long)ls.oldest_unshipped_ms, (long long)ls.last_insert_ms_ago,
                   ledger_can_accept(a->ledger) ? "true" : "false");
    }
    if (a->rollup) { /* db/rollup.h */
        rollup_stats rs = rollup_get_stats(a->rollup);
        buf_printf(&b,
                   ",\"rollup\":{\"runs\":%lld,\"moved\":%lld,\"last_moved\":%lld,"
                   "\"last_ms\":%lld,\"last_run_ms_ago\":%lld,\"failures\":%lld,"
                   "\"catching_up\":%s,\"retention_runs\":%lld}",
                   (long long)rs.runs, (long long)rs.moved, (long long)rs.last_moved,
                   (long long)rs.last_ms, (long long)rs.last_run_ms_ago, (long long)rs.failures,
                   rs.catching_up ? "true" : "false", (long long)rs.retention_runs);
    }
    health_key(a, &b, k);
    /* rate limits: N (the gateways sharing them) and the windows here */
    buf_append_str(&b, ",\"rate_limits\":");
    ratelimit_health_json(router_ratelimit(a->router), now, 200, &b);
    const struct instances *in = router_instances(a->router);
    buf_printf(&b, ",\"heartbeat\":{\"database\":%s,\"ok\":%s,\"beats\":%lld}",
               in ? "true" : "false", instances_ok(in) ? "true" : "false",
               (long long)instances_beats(in));
    if (router_budgets(a->router)) { /* router/budget.h */
        budget_stats bs = budget_get_stats(router_budgets(a->router));
        buf_printf(&b,
                   ",\"budgets\":{\"tracked\":%lld,\"held_pusd\":%lld,\"waiting\":%lld,"
                   "\"local_admits\":%lld,\"lease_admits\":%lld,\"lease_calls\":%lld,"
                   "\"sync_calls\":%lld,"
                   "\"refused\":%lld,\"unavailable\":%lld,\"queries\":%lld}",
                   (long long)bs.tracked, (long long)bs.held_pusd, (long long)bs.waiting,
                   (long long)bs.local_admits, (long long)bs.lease_admits,
                   (long long)bs.lease_calls, (long long)bs.sync_calls, (long long)bs.refused,
                   (long long)bs.unavailable, (long long)bs.store_queries);
    }
    buf_append_char(&b, '}');
    http_reply_json(a, req, 200, b.data, b.len);
    buf_free(&b);
}

/* The client key from `Authorization: Bearer KEY` or `x-api-key: KEY`. */
static const char *client_key(const request_headers *h)
{
    const char *auth = h->authorization;
    if (auth && util_starts_with_ci(auth, "Bearer ")) {
        auth += 7;
        while (*auth == ' ')
            auth++;
        return *auth ? auth : NULL;
    }
    return h->x_api_key && *h->x_api_key ? h->x_api_key : NULL;
}

/* Hashing every presented key with SHA-256 costs as much as the rest of
 * the request parsing; a small direct-mapped cache of keys already verified
 * skips it. A hit needs the exact key (compared in constant time); a miss
 * only costs the hash it would have cost anyway. Entries die with the
 * keyring's generation: a reload (a revoked key, a changed budget) makes
 * every key be looked up again. */
#define KEY_CACHE_SLOTS 256
static struct {
    char key[128];
    size_t len;
    const key_conf *conf;
    const bridle_config *cfg;
    uint64_t generation;
} key_cache[KEY_CACHE_SLOTS];

static size_t key_slot(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    return (size_t)(h % KEY_CACHE_SLOTS);
}

static const key_conf *find_key(app *a, const char *key)
{
    size_t len = strlen(key), slot = key_slot(key, len);
    uint64_t gen = a->keys ? keyring_generation(a->keys) : 0;
    if (key_cache[slot].cfg == a->cfg && key_cache[slot].generation == gen &&
        key_cache[slot].len == len && util_consttime_eq(key_cache[slot].key, key, len))
        return key_cache[slot].conf;
    char hex[65];
    util_sha256_hex(key, len, hex);
    const key_conf *k = a->keys ? keyring_find(a->keys, hex) : config_find_key(a->cfg, hex);
    if (k && len < sizeof key_cache[slot].key) {
        memcpy(key_cache[slot].key, key, len);
        key_cache[slot].len = len;
        key_cache[slot].conf = k;
        key_cache[slot].cfg = a->cfg;
        key_cache[slot].generation = gen;
    }
    return k;
}

/* Which keys a route takes. */
typedef enum { KEYS_CLIENT, KEYS_ADMIN, KEYS_ANY } key_kind;

static void format_utc(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const key_conf *authenticate(app *a, struct evhttp_request *req, const request_headers *h,
                                    key_kind want)
{
    const char *key = client_key(h);
    if (!key) {
        http_reply_error(a, req, 401, "invalid_request_error", "missing_api_key", NULL,
                         "No API key: send your bridle key as \"Authorization: Bearer KEY\" (keys "
                         "are listed in the gateway's config)",
                         false);
        return NULL;
    }
    const key_conf *k = find_key(a, key);
    char msg[300], when[40];
    if (!k && a->keys && !keyring_loaded(a->keys)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        http_reply_error(a, req, 503, "server_error", "key_store_loading", NULL,
                         "The key store is loading: this gateway has not read its keys from the "
                         "database yet; retry in a second",
                         true);
        return NULL;
    }
    if (!k) {
        http_reply_error(a, req, 401, "invalid_request_error", "invalid_api_key", NULL,
                         "Incorrect API key: this key is not known to the gateway; check the key "
                         "you pass in \"Authorization: Bearer ...\"",
                         false);
        return NULL;
    }
    if (k->revoked) {
        format_utc(keyring_revoked_ms(k), when, sizeof when);
        snprintf(msg, sizeof msg,
                 "Incorrect API key: this key was revoked (at %s); ask for a new one (`bridle keys "
                 "create`)",
                 when);
        http_reply_error(a, req, 401, "invalid_request_error", "invalid_api_key", NULL, msg, false);
        return NULL;
    }
    if (k->expires_ms && util_wall_ms() >= k->expires_ms) {
        format_utc(k->expires_ms, when, sizeof when);
        snprintf(msg, sizeof msg,
                 "Incorrect API key: this key expired at %s; create a new one with `bridle keys "
                 "create`",
                 when);
        http_reply_error(a, req, 401, "invalid_request_error", "invalid_api_key", NULL, msg, false);
        return NULL;
    }
    if (want == KEYS_CLIENT && k->admin) {
        http_reply_error(a, req, 403, "permission_error", "admin_key", NULL,
                         "This is an admin key: admin keys only work on /v1/bridle/admin/; use a "
                         "client key for this route",
                         false);
        return NULL;
    }
    if (want == KEYS_ADMIN && !k->admin) {
        http_reply_error(
            a, req, 403, "permission_error", "admin_key_required", NULL,
            "The admin API (/v1/bridle/admin/) takes admin keys only: this is a client "
            "key; create an admin key with `bridle keys create --admin`",
            false);
        return NULL;
    }
    return k;
}

/* One pass over the request headers: their count and size for the limits,
 * and the few bridle reads. */
static void scan_headers(struct evkeyvalq *in, request_headers *h)
{
    memset(h, 0, sizeof *h);
    for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next) {
        size_t klen = strlen(kv->key);
        h->count++;
        h->bytes += (int64_t)(klen + strlen(kv->value) + 4);
        if (klen == 13 && strcasecmp(kv->key, "authorization") == 0)
            h->authorization = kv->value;
        else if (klen == 9 && strcasecmp(kv->key, "x-api-key") == 0)
            h->x_api_key = kv->value;
        else if (klen == 15 && strcasecmp(kv->key, "idempotency-key") == 0) {
            h->idempotency_key = kv->value;
            h->idempotency_keys++;
        } else if (klen > 9 && strncasecmp(kv->key, "x-bridle-", 9) == 0) {
            const char *name = kv->key + 9;
            if (strcasecmp(name, "task") == 0)
                h->task = kv->value;
            else if (strcasecmp(name, "agent") == 0)
                h->agent = kv->value;
            else if (strcasecmp(name, "feature") == 0)
                h->feature = kv->value;
            else if (strcasecmp(name, "tier") == 0)
                h->tier = kv->value;
        }
    }
}

/* evhttp calls us with no URI when it rejected the request itself. */
static void reply_protocol_error(app *a, struct evhttp_request *req)
{
    int status = evhttp_request_get_response_code(req) == 413 ? 413 : 400;
    char msg[300];
    const char *code = protocol_error_text(a, status, msg, sizeof msg);
    http_reply_error(a, req, status, "invalid_request_error", code, NULL, msg, false);
}

static bool path_is(const char *path, const char *want)
{
    size_t n = strlen(want);
    return strncmp(path, want, n) == 0 && (path[n] == '\0' || path[n] == '?');
}

static void route_v1(app *a, struct evhttp_request *req, const request_headers *h, const char *path,
                     enum evhttp_cmd_type cmd)
{
    if (path_is(path, "/v1/chat/completions")) {
        if (cmd != EVHTTP_REQ_POST) {
            http_reply_error(a, req, 405, "invalid_request_error", "method_not_allowed", NULL,
                             "Use POST for /v1/chat/completions", false);
            return;
        }
        const key_conf *k = authenticate(a, req, h, KEYS_CLIENT);
        if (!k) return;
        char id[32];
        http_new_request_id(id);
        chat_handle(a, req, k, h, id);
        return;
    }
    if (path_is(path, "/v1/models")) {
        if (authenticate(a, req, h, KEYS_CLIENT)) reply_models(a, req);
        return;
    }
    if (path_is(path, "/v1/bridle/health")) {
        const key_conf *k = authenticate(a, req, h, KEYS_ANY);
        if (k) reply_health(a, req, k);
        return;
    }
    if (strncmp(path, "/v1/bridle/admin/", 17) == 0 || path_is(path, "/v1/bridle/admin")) {
        if (authenticate(a, req, h, KEYS_ADMIN)) admin_handle(a, req, path, cmd);
        return;
    }
    char msg[300];
    snprintf(
        msg, sizeof msg,
        "Unknown path %.120s: this gateway serves POST /v1/chat/completions and GET /v1/models",
        path);
    http_reply_error(a, req, 404, "invalid_request_error", "unknown_url", NULL, msg, false);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    app *a = arg;
    a->stats.requests++;
    const char *uri = evhttp_request_get_uri(req);
    if (!uri) {
        reply_protocol_error(a, req);
        return;
    }
    guard_request_received(a, req);
    request_headers h;
    scan_headers(evhttp_request_get_input_headers(req), &h);
    const limits_conf *lim = config_limits(a->cfg);
    if (h.count > lim->max_headers || h.bytes > lim->max_header_bytes) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "The request headers are too large: at most %lld header lines and %lld bytes "
                 "are accepted (limits.max_headers, limits.max_header_bytes)",
                 (long long)lim->max_headers, (long long)lim->max_header_bytes);
        http_reply_error(a, req, 431, "invalid_request_error", "request_header_fields_too_large",
                         NULL, msg, false);
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (path_is(uri, "/healthz")) {
        http_reply_json(a, req, 200, "{\"status\":\"ok\"}", 15);
        return;
    }
    if (path_is(uri, "/readyz")) {
        if (a->draining)
            http_reply_error(a, req, 503, "server_error", "draining", NULL,
                             "The gateway is shutting down", true);
        else
            http_reply_json(a, req, 200, "{\"status\":\"ready\"}", 18);
        return;
    }
    if (a->draining) {
        http_reply_error(a, req, 503, "server_error", "draining", NULL,
                         "The gateway is shutting down; retry on another instance", true);
        return;
    }
    route_v1(a, req, &h, uri, cmd);
}

/* The listening socket for sa, or -1 with a reason in err. SO_REUSEADDR
 * only, so that a restart does not wait for old connections in TIME_WAIT.
 * Never SO_REUSEPORT: with it the kernel lets any process of the same user
 * bind the same address and splits the connections between them, so a
 * second gateway started by mistake (another config, other keys) would
 * silently take half of the traffic. Without it that bind fails with
 * EADDRINUSE, and it fails too against a process that does use
 * SO_REUSEPORT. A future multi-worker mode must keep that guarantee: bind
 * here once, in the parent, and let the workers inherit this socket (or
 * create their SO_REUSEPORT sockets only after this bind succeeded). */
static evutil_socket_t listen_socket(const struct sockaddr *sa, socklen_t sl, const char *addr,
                                     char *err, size_t errlen)
{
    evutil_socket_t fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: socket: %s", addr, strerror(errno));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 || bind(fd, sa, sl) != 0 ||
        listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE)
            snprintf(err, errlen,
                     "cannot listen on %s: address already in use: another process (perhaps "
                     "another bridle) is serving it; stop it or choose another --listen address",
                     addr);
        else
            snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(e));
        return -1;
    }
    return fd;
}

int http_start(app *a, const char *host, int port, char *err, size_t errlen)
{
    const limits_conf *lim = config_limits(a->cfg);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    char addr[300];
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof *s4;
        snprintf(addr, sizeof addr, "%s:%d", host, port);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof *s6;
        snprintf(addr, sizeof addr, "[%s]:%d", host, port);
    } else {
        snprintf(err, errlen, "listen address %s is not a numeric IPv4/IPv6 address", host);
        return -1;
    }
    evutil_socket_t fd = listen_socket((struct sockaddr *)&ss, sl, addr, err, errlen);
    if (fd < 0) return -1;
    /* backlog 0: the socket listens already (with 4096, not evhttp's 128);
     * CLOSE_ON_EXEC applies to the accepted connections too */
    a->listener = evconnlistener_new(a->base, NULL, NULL,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (!a->listener) {
        close(fd);
        snprintf(err, errlen, "cannot listen on %s: out of memory", addr);
        return -1;
    }
    a->http = evhttp_new(a->base);
    evhttp_set_bevcb(a->http, make_conn_bev, a);
    evhttp_set_max_body_size(a->http, lim->max_body_bytes);
    /* evhttp's own cap is a hard stop well above ours (4x, at least 64 KiB),
     * so that oversized headers get our 431 rather than evhttp's generic 400. */
    evhttp_set_max_headers_size(
        a->http, lim->max_header_bytes * 4 > 65536 ? lim->max_header_bytes * 4 : 65536);
    struct timeval idle = util_ms_timeval(lim->read_timeout_ms);
    evhttp_set_timeout_tv(a->http, &idle);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_PUT);
    evhttp_set_default_content_type(a->http, "application/json");
    evhttp_set_gencb(a->http, on_request, a);
    if (!evhttp_bind_listener(a->http, a->listener)) {
        snprintf(err, errlen, "cannot attach the HTTP server to the listener");
        return -1;
    }
    return 0;
}

void http_stop_accepting(app *a)
{
    if (a->listener && !a->listener_paused) evconnlistener_disable(a->listener);
    a->listener_paused = true;
}

void http_free(app *a)
{
    if (a->http) evhttp_free(a->http); /* frees the bound listener too */
    a->http = NULL;
    a->listener = NULL;
}

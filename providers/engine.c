/* curl multi on libevent. The shape follows curl's docs/examples
 * multi-event.c / hiperfifo.c: curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION) and when to wake it (CURLMOPT_TIMERFUNCTION);
 * we call curl_multi_socket_action from libevent callbacks only, never from
 * inside curl's callbacks, and drain curl_multi_info_read after each. */
#include "providers/engine.h"

#include <ctype.h>
#include <curl/curl.h>
#include <event2/event_struct.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"

#define URL_CACHE_MAX 256
#define CALL_POOL_MAX 4096
/* curl 7.88 looks for a reusable connection by walking every connection
 * to the host in its multi handle's cache, in use or not, so the cost of
 * starting a call grew with the calls in flight (issue 13). Calls are
 * spread over shards, each a multi handle with its own cache, holding at
 * most SHARD_CALLS calls: the walk stays short at any concurrency. */
#define SHARD_CALLS 32 /* 128 cost 5-25 % more per request at 256 connections */
#define SHARDS_MAX 1024

typedef struct sock_watch sock_watch;

typedef struct shard {
    engine *e;
    CURLM *multi;
    struct event timer;
    int in_flight;
} shard;

struct engine {
    struct event_base *base;
    shard *shards[SHARDS_MAX];
    int n_shards;
    long max_connects; /* per shard */
    int in_curl;       /* > 0 while curl_multi_socket_action runs */
    engine_call *pool; /* free calls with their easy handles, singly linked */
    int pool_n;
    sock_watch **watch; /* by fd: curl's sockets, watched or parked */
    int n_watch;
    bool closing; /* engine_free: the multi handles are going */
    struct {
        char *url;
        CURLU *u;
        bool can_multiplex; /* https: HTTP/2 may be offered by ALPN */
    } urls[URL_CACHE_MAX];
    int n_urls;
    engine_stats stats;
    bool use_env_proxy; /* a proxy variable was set at start: let curl read them */
};

struct engine_call {
    engine *e;
    shard *sh; /* while added to its multi handle */
    CURL *easy;
    engine_call *next_free;
    struct curl_slist *headers;
    buf body;
    buf hbuf;           /* header names and values, NUL-separated */
    size_t hoff[48][2]; /* offsets into hbuf while headers arrive */
    upstream_headers hs;
    engine_callbacks cb;
    void *ctx;
    struct event fb_timer; /* first-byte limit */
    struct event reap;     /* deferred removal after a cancel inside curl */
    bool fb_armed, reap_armed;
    bool headers_done, cancelled, fb_timed_out;
    bool pipewait; /* CURLOPT_PIPEWAIT as last set on this pooled handle */
    int64_t start_us, first_byte_us;
    char errbuf[CURL_ERROR_SIZE];
};

/* A socket curl watches. When curl stops watching a connection it keeps
 * (CURL_POLL_REMOVE after a transfer), the watch stays registered for
 * reading, "parked": the next transfer on that connection asks for
 * CURL_POLL_IN again and no epoll_ctl is needed (two fewer per request).
 * The engine finds a parked watch by fd; curl's open and close socket
 * callbacks drop it whenever its fd number is closed or handed out anew, so
 * a parked watch never outlives its socket. */
struct sock_watch {
    struct event ev;
    shard *sh;
    curl_socket_t s;
    int what;    /* CURL_POLL_* registered */
    bool parked; /* curl does not watch it now */
};

static sock_watch *watch_at(engine *e, curl_socket_t s)
{
    return s >= 0 && s < e->n_watch ? e->watch[s] : NULL;
}

static bool watch_store(engine *e, curl_socket_t s, sock_watch *w)
{
    if (s >= e->n_watch) {
        int n = e->n_watch ? e->n_watch : 1024;
        while (n <= s)
            n *= 2;
        sock_watch **nv = realloc(e->watch, (size_t)n * sizeof *nv);
        if (!nv) return false;
        memset(nv + e->n_watch, 0, (size_t)(n - e->n_watch) * sizeof *nv);
        e->watch = nv;
        e->n_watch = n;
    }
    e->watch[s] = w;
    return true;
}

static void watch_drop(engine *e, sock_watch *w)
{
    event_del(&w->ev);
    if (watch_at(e, w->s) == w) e->watch[w->s] = NULL;
    free(w);
}

/* Drops a watch found by fd rather than handed over by curl: one curl
 * still uses (not parked) is first taken back from curl's socket entry. */
static void watch_forget(engine *e, sock_watch *w)
{
    if (!w->parked && !e->closing) curl_multi_assign(w->sh->multi, w->s, NULL);
    watch_drop(e, w);
}

/* ------------------------------------------------------------ curl -> loop */

static void check_multi_info(shard *sh);

static void on_socket_event(evutil_socket_t fd, short kind, void *arg)
{
    sock_watch *w = arg;
    shard *sh = w->sh;
    if (w->parked) { /* an idle connection spoke (closed, most likely): curl
                      * finds out when it next tries it; stop listening */
        watch_drop(sh->e, w);
        return;
    }
    int action =
        ((kind & EV_READ) ? CURL_CSELECT_IN : 0) | ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    sh->e->in_curl++;
    curl_multi_socket_action(sh->multi, fd, action, &running);
    sh->e->in_curl--;
    check_multi_info(sh);
}

static void on_curl_timer(evutil_socket_t fd, short kind, void *arg)
{
    shard *sh = arg;
    int running;
    sh->e->in_curl++;
    curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    sh->e->in_curl--;
    check_multi_info(sh);
}

static int socket_fn(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    shard *sh = userp;
    engine *e = sh->e;
    sock_watch *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (!w) return 0;
        if (w->what == CURL_POLL_IN) /* kept for the connection's next transfer */
            w->parked = true;
        else
            watch_drop(e, w);
        return 0;
    }
    if (!w) {
        w = watch_at(e, s);
        if (w && (!w->parked || w->sh != sh)) { /* not this connection's: stale */
            watch_forget(e, w);
            w = NULL;
        }
        if (!w) {
            if (!(w = calloc(1, sizeof *w))) return -1;
            w->sh = sh;
            w->s = s;
            if (!watch_store(e, s, w)) {
                free(w);
                return -1;
            }
        }
        w->parked = false;
        curl_multi_assign(sh->multi, s, w);
    }
    if (w->what == what) return 0; /* interest unchanged: no epoll_ctl */
    if (w->what) event_del(&w->ev);
    w->what = what;
    short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
    event_assign(&w->ev, e->base, s, kind, on_socket_event, w);
    event_add(&w->ev, NULL);
    return 0;
}

/* curl opens a socket: a watch still filed under its number belonged to a
 * socket closed behind our back, so it goes. */
static curl_socket_t open_fn(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    engine *e = clientp;
    curl_socket_t s = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    sock_watch *w = watch_at(e, s);
    if (w) watch_forget(e, w);
    return s;
}

/* curl closes a socket (it told socket_fn to remove it first, if it was
 * watching): its watch goes before the number can be reused. */
static int close_fn(void *clientp, curl_socket_t s)
{
    engine *e = clientp;
    sock_watch *w = watch_at(e, s);
    if (w) watch_forget(e, w);
    return close(s);
}

static int timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
    shard *sh = userp;
    if (timeout_ms < 0) {
        evtimer_del(&sh->timer);
        return 0;
    }
    /* "At once" (a transfer just added): run on this loop pass, after the
     * callbacks already due, rather than after another epoll_wait. */
    if (timeout_ms == 0) {
        event_active(&sh->timer, EV_TIMEOUT, 1);
        return 0;
    }
    struct timeval tv = util_ms_timeval(timeout_ms);
    evtimer_add(&sh->timer, &tv);
    return 0;
}

/* ------------------------------------------------------------ calls */

static void call_release(engine_call *c)
{
    engine *e = c->e;
    if (c->fb_armed) evtimer_del(&c->fb_timer);
    if (c->reap_armed) evtimer_del(&c->reap);
    c->fb_armed = c->reap_armed = false;
    e->stats.in_flight--;
    if (c->sh) c->sh->in_flight--;
    c->sh = NULL;
    if (e->pool_n >= CALL_POOL_MAX) {
        curl_slist_free_all(c->headers);
        curl_easy_cleanup(c->easy);
        buf_free(&c->body);
        buf_free(&c->hbuf);
        free(c);
        return;
    }
    buf_reset(&c->body);
    c->next_free = e->pool;
    e->pool = c;
    e->pool_n++;
}

static void call_finish(engine_call *c, CURLcode res)
{
    engine *e = c->e;
    curl_multi_remove_handle(c->sh->multi, c->easy);
    if (c->cancelled) {
        call_release(c);
        return;
    }
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    if (!c->headers_done && status >= 200 && res == CURLE_OK && c->cb.on_headers) {
        c->headers_done = true;
        c->cb.on_headers(c->ctx, (int)status, &c->hs);
    }
    engine_result r = {0};
    r.status = (int)status;
    r.first_byte_us = c->first_byte_us;
    r.ok = res == CURLE_OK && !c->fb_timed_out;
    r.timed_out = c->fb_timed_out || res == CURLE_OPERATION_TIMEDOUT;
    r.first_byte_late = c->fb_timed_out;
    if (c->fb_timed_out)
        r.what = "no response from the provider within the first-byte timeout";
    else if (res != CURLE_OK)
        r.what = c->errbuf[0] ? c->errbuf : curl_easy_strerror(res);
    if (r.ok)
        e->stats.completed++;
    else
        e->stats.failed++;
    c->cb.on_done(c->ctx, &r);
    call_release(c);
}

static void check_multi_info(shard *sh)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(sh->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        engine_call *c = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        if (c) call_finish(c, msg->data.result);
    }
}

static void mark_first_byte(engine_call *c)
{
    if (c->first_byte_us >= 0) return;
    c->first_byte_us = util_now_us() - c->start_us;
    if (c->fb_armed) {
        evtimer_del(&c->fb_timer);
        c->fb_armed = false;
    }
}

static void headers_publish(engine_call *c)
{
    for (int i = 0; i < c->hs.n; i++) {
        c->hs.h[i].name = c->hbuf.data + c->hoff[i][0];
        c->hs.h[i].value = c->hbuf.data + c->hoff[i][1];
    }
}

static size_t header_fn(char *data, size_t size, size_t nmemb, void *userp)
{
    engine_call *c = userp;
    size_t len = size * nmemb;
    mark_first_byte(c);
    if (c->cancelled) return 0;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) { /* a new response (after 1xx) */
        c->hs.n = 0;
        buf_reset(&c->hbuf);
        return len;
    }
    if (len <= 2 && (data[0] == '\r' || data[0] == '\n')) { /* end of this header block */
        long status = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && !c->headers_done) {
            headers_publish(c);
            c->headers_done = true;
            if (c->cb.on_headers) c->cb.on_headers(c->ctx, (int)status, &c->hs);
        }
        return c->cancelled ? 0 : len;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon || c->hs.n >= 48) return len;
    size_t nlen = (size_t)(colon - data);
    const char *v = colon + 1, *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t at = c->hbuf.len;
    buf_reserve(&c->hbuf, nlen + (size_t)(end - v) + 2);
    c->hoff[c->hs.n][0] = at;
    buf_append(&c->hbuf, data, nlen);
    for (size_t i = at; i < at + nlen; i++)
        c->hbuf.data[i] = (char)tolower((unsigned char)c->hbuf.data[i]);
    buf_append(&c->hbuf, "", 1);
    c->hoff[c->hs.n][1] = c->hbuf.len;
    buf_append(&c->hbuf, v, (size_t)(end - v));
    buf_append(&c->hbuf, "", 1);
    c->hs.n++;
    return len;
}

static size_t write_fn(char *data, size_t size, size_t nmemb, void *userp)
{
    engine_call *c = userp;
    size_t len = size * nmemb;
    if (c->cancelled) return 0;
    mark_first_byte(c);
    if (c->cb.on_data) c->cb.on_data(c->ctx, data, len);
    return c->cancelled ? 0 : len;
}

static void on_first_byte_timeout(evutil_socket_t fd, short kind, void *arg)
{
    engine_call *c = arg;
    c->fb_armed = false;
    c->fb_timed_out = true;
    call_finish(c, CURLE_OPERATION_TIMEDOUT);
}

static void on_reap(evutil_socket_t fd, short kind, void *arg)
{
    engine_call *c = arg;
    c->reap_armed = false;
    call_finish(c, CURLE_ABORTED_BY_CALLBACK);
}

/* Only https can multiplex: curl offers HTTP/2 by ALPN during the TLS
 * handshake (its default CURL_HTTP_VERSION_2TLS); plain http stays
 * HTTP/1.1 (bridle never asks for h2c or prior knowledge). */
static bool url_can_multiplex(CURLU *u)
{
    char *scheme = NULL;
    bool yes = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK && scheme &&
               strcasecmp(scheme, "https") == 0;
    curl_free(scheme);
    return yes;
}

/* The parsed URL for `url` (cached), and whether calls to it can be
 * multiplexed; NULL if curl cannot parse it. */
static CURLU *url_handle(engine *e, const char *url, bool *can_multiplex)
{
    for (int i = 0; i < e->n_urls; i++)
        if (strcmp(e->urls[i].url, url) == 0) {
            *can_multiplex = e->urls[i].can_multiplex;
            return e->urls[i].u;
        }
    CURLU *u = curl_url();
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        curl_url_cleanup(u);
        return NULL;
    }
    if (e->n_urls == URL_CACHE_MAX) { /* evict the oldest; URLs are few in practice */
        free(e->urls[0].url);
        curl_url_cleanup(e->urls[0].u);
        memmove(&e->urls[0], &e->urls[1], sizeof e->urls[0] * (URL_CACHE_MAX - 1));
        e->n_urls--;
    }
    e->urls[e->n_urls].url = strdup(url);
    e->urls[e->n_urls].u = u;
    e->urls[e->n_urls].can_multiplex = *can_multiplex = url_can_multiplex(u);
    e->n_urls++;
    return u;
}

static void call_set_fixed_options(engine_call *c, bool use_env_proxy);

static shard *shard_new(engine *e)
{
    shard *sh = calloc(1, sizeof *sh);
    if (!sh) return NULL;
    sh->e = e;
    sh->multi = curl_multi_init();
    if (!sh->multi) {
        free(sh);
        return NULL;
    }
    evtimer_assign(&sh->timer, e->base, on_curl_timer, sh);
    curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
    curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
    curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
    curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
    /* Keep as many idle upstream connections as the shard's peak
     * concurrency, or curl churns them (performance.md). Never cap per
     * host in curl: its pending queue is expensive; providers queue in our
     * code instead. */
    curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, e->max_connects);
    curl_multi_setopt(sh->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    e->shards[e->n_shards++] = sh;
    return sh;
}

/* The first shard with room, so that calls reuse the warm connections of
 * the low shards and the high ones stay idle once a peak is over; a new
 * shard when all are full; past SHARDS_MAX, the least loaded. Counts the
 * call in the shard's in_flight. */
static shard *pick_shard(engine *e)
{
    shard *best = NULL;
    for (int i = 0; i < e->n_shards; i++) {
        shard *sh = e->shards[i];
        if (sh->in_flight < SHARD_CALLS) {
            best = sh;
            break;
        }
        if (!best || sh->in_flight < best->in_flight) best = sh;
    }
    if (best && best->in_flight >= SHARD_CALLS && e->n_shards < SHARDS_MAX) {
        shard *sh = shard_new(e);
        if (sh) best = sh;
    }
    if (best) best->in_flight++;
    return best;
}

static engine_call *call_acquire(engine *e)
{
    engine_call *c = e->pool;
    if (c) {
        e->pool = c->next_free;
        e->pool_n--;
    } else {
        c = calloc(1, sizeof *c);
        if (!c) return NULL;
        c->easy = curl_easy_init();
        if (!c->easy) {
            free(c);
            return NULL;
        }
        c->e = e; /* the pool is this engine's: pooled calls have it already */
        call_set_fixed_options(c, e->use_env_proxy);
    }
    c->hs.n = 0;
    buf_reset(&c->hbuf);
    c->headers_done = c->cancelled = c->fb_timed_out = false;
    c->fb_armed = c->reap_armed = false;
    c->first_byte_us = -1;
    c->errbuf[0] = '\0';
    e->stats.in_flight++;
    return c;
}

/* Options that never change for a pooled call: set once when its easy
 * handle is made. Reusing the handle without curl_easy_reset keeps curl
 * from freeing and rebuilding its option state on every request. */
static void call_set_fixed_options(engine_call *c, bool use_env_proxy)
{
    CURL *h = c->easy;
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_fn);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_fn);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_PRIVATE, c);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_fn);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, c->e);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, close_fn);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, c->e);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    /* Without proxy variables in the environment, tell curl so: it would
     * otherwise look them up on every transfer. */
    if (!use_env_proxy) {
        curl_easy_setopt(h, CURLOPT_PROXY, "");
        /* no proxy to bypass: spares curl two getenv calls per transfer */
        curl_easy_setopt(h, CURLOPT_NOPROXY, "");
    }
}

static void call_set_options(engine_call *c, CURLU *u, bool can_multiplex, bool get,
                             const provider_conf *p, const engine_limits *lim)
{
    static const engine_limits none;
    if (!lim) lim = &none;
    CURL *h = c->easy;
    curl_easy_setopt(h, CURLOPT_CURLU, u);
    /* PIPEWAIT makes curl hold a new transfer until a connection to the
     * host shows whether it multiplexes. Over https that is known at the
     * TLS handshake (ALPN), and waiting then saves a connection per call.
     * Over plain http curl learns it only from the first response's
     * headers, which for an LLM is the time to first token: every call
     * started meanwhile would wait that long (a fresh burst took 2x the
     * latency). A pooled handle may serve either scheme: set it per call. */
    if (c->pipewait != can_multiplex) {
        curl_easy_setopt(h, CURLOPT_PIPEWAIT, can_multiplex ? 1L : 0L);
        c->pipewait = can_multiplex;
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body.data);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body.len);
    if (get)
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L); /* the next POSTFIELDS makes it a POST again */
    long total = p->total_timeout_ms > 0 ? p->total_timeout_ms : 600000;
    if (lim->deadline_ms > 0 && lim->deadline_ms < total) total = (long)lim->deadline_ms;
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, total);
    int64_t connect = lim->connect_ms > 0 ? lim->connect_ms : p->connect_timeout_ms;
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect > 0 ? connect : 0));
    /* no byte for this long = stalled (0 = no limit) */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
                     (long)(p->idle_timeout_ms > 0 ? (p->idle_timeout_ms + 999) / 1000 : 0));
    int64_t fb = lim->first_byte_ms > 0 ? lim->first_byte_ms : p->first_byte_timeout_ms;
    if (fb > 0 && fb < total) {
        evtimer_assign(&c->fb_timer, c->e->base, on_first_byte_timeout, c);
        struct timeval tv = util_ms_timeval(fb);
        evtimer_add(&c->fb_timer, &tv);
        c->fb_armed = true;
    }
}

/* Calls to one provider send the same header lines every time: a pooled
 * call keeps its curl list and rebuilds it only when the lines differ. */
static void set_headers(engine_call *c, const upstream_request *req)
{
    const struct curl_slist *l = c->headers;
    int i = 0;
    for (; i < req->n_headers && l; i++, l = l->next)
        if (strcmp(l->data, req->headers[i]) != 0) break;
    if (i == req->n_headers && !l) return;
    curl_slist_free_all(c->headers);
    c->headers = NULL;
    for (i = 0; i < req->n_headers; i++)
        c->headers = curl_slist_append(c->headers, req->headers[i]);
}

engine_call *engine_call_start(engine *e, const upstream_request *req, const provider_conf *p,
                               const engine_limits *lim, const engine_callbacks *cb, void *ctx)
{
    bool can_multiplex = false;
    CURLU *u = url_handle(e, req->url.data, &can_multiplex);
    if (!u) {
        log_warn("engine: cannot parse upstream URL for provider %s", p->name);
        return NULL;
    }
    engine_call *c = call_acquire(e);
    if (!c) return NULL;
    c->cb = *cb;
    c->ctx = ctx;
    buf_append(&c->body, req->body.data ? req->body.data : "", req->body.len);
    set_headers(c, req);
    c->start_us = util_now_us();
    call_set_options(c, u, can_multiplex, req->get, p, lim);
    c->sh = pick_shard(e);
    if (!c->sh || curl_multi_add_handle(c->sh->multi, c->easy) != CURLM_OK) {
        c->cancelled = true;
        call_release(c);
        return NULL;
    }
    e->stats.started++;
    return c;
}

void engine_call_cancel(engine_call *c)
{
    if (!c || c->cancelled) return;
    c->cancelled = true;
    if (c->e->in_curl > 0) {
        /* Inside curl: the write/header callback returns 0 and curl ends
         * the transfer; if no byte comes, reap it on the next loop pass. */
        evtimer_assign(&c->reap, c->e->base, on_reap, c);
        struct timeval zero = {0, 0};
        evtimer_add(&c->reap, &zero);
        c->reap_armed = true;
        return;
    }
    call_finish(c, CURLE_ABORTED_BY_CALLBACK);
}

engine *engine_new(struct event_base *base, long max_connects)
{
    static bool curl_ready;
    if (!curl_ready) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        curl_ready = true;
    }
    engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->base = base;
    static const char *const proxy_vars[] = {
        "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy", NULL};
    for (const char *const *v = proxy_vars; *v; v++)
        e->use_env_proxy = e->use_env_proxy || (getenv(*v) && *getenv(*v));
    e->max_connects = max_connects > 0 && max_connects < SHARD_CALLS ? max_connects : SHARD_CALLS;
    if (!shard_new(e)) { /* fail now rather than on the first call */
        free(e);
        return NULL;
    }
    return e;
}

void engine_free(engine *e)
{
    if (!e) return;
    while (e->pool) {
        engine_call *c = e->pool;
        e->pool = c->next_free;
        curl_slist_free_all(c->headers);
        curl_easy_cleanup(c->easy);
        buf_free(&c->body);
        buf_free(&c->hbuf);
        free(c);
    }
    e->closing = true;
    for (int i = 0; i < e->n_shards; i++) {
        curl_multi_cleanup(e->shards[i]->multi);
        evtimer_del(&e->shards[i]->timer);
        free(e->shards[i]);
    }
    for (int i = 0; i < e->n_urls; i++) {
        free(e->urls[i].url);
        curl_url_cleanup(e->urls[i].u);
    }
    for (int i = 0; i < e->n_watch; i++) /* sockets curl left open at cleanup */
        if (e->watch[i]) watch_drop(e, e->watch[i]);
    free(e->watch);
    free(e);
}

engine_stats engine_get_stats(const engine *e)
{
    return e->stats;
}

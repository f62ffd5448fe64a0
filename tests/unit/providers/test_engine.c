/* Unit tests for providers/engine.c: real calls over loopback to a small
 * evhttp server on the same event_base. A call completes with its status,
 * headers and body; a cancel (outside curl, or from inside on_headers)
 * releases the call with no callback after it; the first-byte limit fires;
 * a refused connection fails cleanly; and a burst of calls to a fresh
 * plain-http upstream is not serialized behind the first response
 * (CURLOPT_PIPEWAIT made curl hold them until the first connection's
 * response headers arrived). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/util.h"
#include "providers/engine.h"
#include "providers/provider.h"

/* ------------------------------------------------------------ the upstream */

typedef struct upstream {
    struct event_base *base;
    struct evhttp *http;
    int port;
    int requests;          /* received */
    int in_flight, max_in; /* requests received and not yet answered */
    int delay_ms;          /* for /slow */
    char last_body[256];
    char last_header[128];          /* the X-Test-Req header of the last request */
    struct evhttp_request *held[8]; /* never answered (/hang, /headers-then-hang) */
    int n_held;
    uint16_t ports[1024]; /* the client ports seen, one per connection */
    int n_ports;
} upstream;

typedef struct pending_reply {
    upstream *u;
    struct evhttp_request *req;
} pending_reply;

static void reply_hello(upstream *u, struct evhttp_request *req, int status)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Test", "yes");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evbuffer_add(evhttp_request_get_output_buffer(req), "hello", 5);
    evhttp_send_reply(req, status, status == 200 ? "OK" : "Too Many Requests", NULL);
    u->in_flight--;
}

static void on_slow_reply(evutil_socket_t fd, short what, void *arg)
{
    pending_reply *p = arg;
    reply_hello(p->u, p->req, 200);
    free(p);
}

static void on_upstream_request(struct evhttp_request *req, void *arg)
{
    upstream *u = arg;
    const char *uri = evhttp_request_get_uri(req);
    if (!uri) { /* evhttp could not parse it (a TLS handshake, say): it answers */
        evhttp_send_reply(req, 400, "Bad Request", NULL);
        return;
    }
    u->requests++;
    if (++u->in_flight > u->max_in) u->max_in = u->in_flight;
    char *peer = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &port);
    int k = 0;
    while (k < u->n_ports && u->ports[k] != port)
        k++;
    if (k == u->n_ports && u->n_ports < 1024) u->ports[u->n_ports++] = port;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n >= sizeof u->last_body) n = sizeof u->last_body - 1;
    evbuffer_copyout(in, u->last_body, n);
    u->last_body[n] = '\0';
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Test-Req");
    snprintf(u->last_header, sizeof u->last_header, "%s", h ? h : "");
    if (strcmp(uri, "/ok") == 0) {
        reply_hello(u, req, 200);
    } else if (strcmp(uri, "/429") == 0) {
        reply_hello(u, req, 429);
    } else if (strcmp(uri, "/slow") == 0) {
        pending_reply *p = calloc(1, sizeof *p);
        p->u = u;
        p->req = req;
        struct timeval tv = util_ms_timeval(u->delay_ms);
        event_base_once(u->base, -1, EV_TIMEOUT, on_slow_reply, p, &tv);
    } else if (strcmp(uri, "/headers-then-hang") == 0) {
        /* the status line and headers, one body piece, then nothing */
        evhttp_send_reply_start(req, 200, "OK");
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, "part", 4);
        evhttp_send_reply_chunk(req, b);
        evbuffer_free(b);
        u->held[u->n_held++] = req;
    } else if (strcmp(uri, "/hang") == 0) {
        u->held[u->n_held++] = req; /* never answered */
    }
}

/* A request whose client went away is detached from its connection and
 * left to its handler (libevent 2.1), which must end it; the others go
 * with their connections in evhttp_free. */
static void upstream_free(upstream *u)
{
    for (int i = 0; i < u->n_held; i++)
        if (!evhttp_request_get_connection(u->held[i])) evhttp_send_reply_end(u->held[i]);
    evhttp_free(u->http);
}

static void upstream_start(upstream *u, struct event_base *base)
{
    memset(u, 0, sizeof *u);
    u->base = base;
    u->http = evhttp_new(base);
    assert_non_null(u->http);
    evhttp_set_gencb(u->http, on_upstream_request, u);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(u->http, "127.0.0.1", 0);
    assert_non_null(s);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&sin, &sl), 0);
    u->port = ntohs(sin.sin_port);
}

/* ------------------------------------------------------------ a call's view */

typedef struct call_log {
    int headers, data_calls, done;
    int status;
    char x_test[32];
    char body[256];
    size_t body_len;
    engine_result r;
    char what[256];
    int64_t done_at_ms;
    engine_call *call; /* for cancelling from a callback */
    bool cancel_in_headers;
} call_log;

static void on_headers(void *ctx, int status, const upstream_headers *hs)
{
    call_log *l = ctx;
    l->headers++;
    l->status = status;
    const char *v = upstream_header_get(hs, "x-test");
    snprintf(l->x_test, sizeof l->x_test, "%s", v ? v : "");
    if (l->cancel_in_headers) engine_call_cancel(l->call);
}

static void on_data(void *ctx, const char *data, size_t len)
{
    call_log *l = ctx;
    l->data_calls++;
    if (l->body_len + len < sizeof l->body) {
        memcpy(l->body + l->body_len, data, len);
        l->body_len += len;
    }
}

static void on_done(void *ctx, const engine_result *r)
{
    call_log *l = ctx;
    l->done++;
    l->r = *r;
    snprintf(l->what, sizeof l->what, "%s", r->what ? r->what : "");
    l->r.what = l->what;
    l->done_at_ms = util_now_ms();
}

static const engine_callbacks callbacks = {on_headers, on_data, on_done};

/* ------------------------------------------------------------ fixture */

typedef struct fixture {
    struct event_base *base;
    engine *eng;
    upstream up;
    provider_conf prov;
    upstream_request req;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->base = event_base_new();
    f->eng = engine_new(f->base, 64);
    upstream_start(&f->up, f->base);
    f->prov.name = "test";
    upstream_request_init(&f->req);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    upstream_request_free(&f->req);
    engine_free(f->eng);
    upstream_free(&f->up);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* A POST to path on the test upstream (or to url when not NULL). */
static void make_request(fixture *f, const char *path, const char *url)
{
    upstream_request_free(&f->req);
    upstream_request_init(&f->req);
    if (url)
        buf_append_str(&f->req.url, url);
    else
        buf_printf(&f->req.url, "http://127.0.0.1:%d%s", f->up.port, path);
    buf_append_str(&f->req.body, "{\"q\":1}");
    upstream_request_add_header(&f->req, "Content-Type", "application/json");
    upstream_request_add_header(&f->req, "X-Test-Req", "from-engine");
    upstream_request_finish_headers(&f->req);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/* Runs the loop until *until >= want or ms passed. */
static void run_until(fixture *f, const int *until, int want, int ms)
{
    bool late = false;
    struct event *t = evtimer_new(f->base, on_deadline, &late);
    struct timeval tv = util_ms_timeval(ms);
    evtimer_add(t, &tv);
    while (!late && (!until || *until < want))
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(t);
}

static void run_for(fixture *f, int ms)
{
    run_until(f, NULL, 0, ms);
}

/* ------------------------------------------------------------ tests */

/* Another call of the fixture's request completes; it is the upstream's
 * second request. */
static void second_call_succeeds(fixture *f)
{
    call_log l2 = {0};
    assert_non_null(engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l2));
    run_until(f, &l2.done, 1, 5000);
    assert_true(l2.r.ok);
    assert_int_equal(l2.body_len, 5);
    assert_int_equal(f->up.requests, 2);
}

static void test_call_completes(void **state)
{
    fixture *f = *state;
    call_log l = {0};
    make_request(f, "/ok", NULL);
    engine_call *c = engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l);
    assert_non_null(c);
    assert_int_equal(engine_get_stats(f->eng).in_flight, 1);
    run_until(f, &l.done, 1, 5000);
    assert_int_equal(l.done, 1);
    assert_int_equal(l.headers, 1);
    assert_int_equal(l.status, 200);
    assert_string_equal(l.x_test, "yes");
    assert_int_equal(l.body_len, 5);
    assert_memory_equal(l.body, "hello", 5);
    assert_true(l.r.ok);
    assert_false(l.r.timed_out);
    assert_int_equal(l.r.status, 200);
    assert_true(l.r.first_byte_us >= 0);
    /* what the upstream received */
    assert_string_equal(f->up.last_body, "{\"q\":1}");
    assert_string_equal(f->up.last_header, "from-engine");
    engine_stats st = engine_get_stats(f->eng);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.started, 1);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.failed, 0);

    /* the pooled handle serves the next call the same way */
    second_call_succeeds(f);
}

static void test_error_status_is_a_completed_transfer(void **state)
{
    fixture *f = *state;
    call_log l = {0};
    make_request(f, "/429", NULL);
    assert_non_null(engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l));
    run_until(f, &l.done, 1, 5000);
    assert_int_equal(l.done, 1);
    assert_int_equal(l.headers, 1);
    assert_int_equal(l.status, 429);
    assert_true(l.r.ok);
    assert_int_equal(l.r.status, 429);
    assert_memory_equal(l.body, "hello", 5);
}

static void test_cancel_releases_the_call(void **state)
{
    fixture *f = *state;
    call_log l = {0};
    make_request(f, "/hang", NULL);
    engine_call *c = engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l);
    assert_non_null(c);
    run_until(f, &f->up.requests, 1, 5000); /* the upstream has it */
    assert_int_equal(f->up.requests, 1);
    engine_call_cancel(c);
    assert_int_equal(engine_get_stats(f->eng).in_flight, 0);
    run_for(f, 200);
    assert_int_equal(l.headers + l.data_calls + l.done, 0);
    assert_int_equal(engine_get_stats(f->eng).in_flight, 0);

    /* the engine still works afterwards */
    call_log l2 = {0};
    make_request(f, "/ok", NULL);
    assert_non_null(engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l2));
    run_until(f, &l2.done, 1, 5000);
    assert_true(l2.r.ok);
}

static void test_cancel_inside_a_callback(void **state)
{
    fixture *f = *state;
    call_log l = {0};
    l.cancel_in_headers = true;
    make_request(f, "/headers-then-hang", NULL);
    l.call = engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l);
    assert_non_null(l.call);
    run_until(f, &l.headers, 1, 5000);
    assert_int_equal(l.headers, 1);
    run_for(f, 200);
    /* no body piece, no on_done after the cancel */
    assert_int_equal(l.data_calls, 0);
    assert_int_equal(l.done, 0);
    assert_int_equal(engine_get_stats(f->eng).in_flight, 0);
}

static void test_first_byte_timeout(void **state)
{
    fixture *f = *state;
    call_log l = {0};
    f->prov.first_byte_timeout_ms = 200;
    make_request(f, "/hang", NULL);
    int64_t t0 = util_now_ms();
    assert_non_null(engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l));
    run_until(f, &l.done, 1, 5000);
    assert_int_equal(l.done, 1);
    assert_int_equal(l.headers, 0);
    assert_false(l.r.ok);
    assert_true(l.r.timed_out);
    assert_true(l.r.first_byte_late);
    assert_int_equal(l.r.status, 0);
    assert_true(l.r.first_byte_us < 0);
    assert_non_null(strstr(l.what, "first-byte"));
    int64_t took = l.done_at_ms - t0;
    assert_true(took >= 190);
    assert_true(took < 2000);
    engine_stats st = engine_get_stats(f->eng);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.failed, 1);

    /* the client's own limit overrides the provider's */
    call_log l2 = {0};
    engine_limits lim = {.first_byte_ms = 100};
    t0 = util_now_ms();
    assert_non_null(engine_call_start(f->eng, &f->req, &f->prov, &lim, &callbacks, &l2));
    run_until(f, &l2.done, 1, 5000);
    assert_true(l2.r.first_byte_late);
    assert_true(l2.done_at_ms - t0 < 190);
}

static void test_connection_refused(void **state)
{
    fixture *f = *state;
    /* a port nobody listens on: bind one, never listen, keep it reserved */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &sl), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", ntohs(sin.sin_port));
    call_log l = {0};
    make_request(f, NULL, url);
    assert_non_null(engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l));
    run_until(f, &l.done, 1, 5000);
    close(s);
    assert_int_equal(l.done, 1);
    assert_int_equal(l.headers, 0);
    assert_false(l.r.ok);
    assert_false(l.r.timed_out);
    assert_int_equal(l.r.status, 0);
    assert_true(l.what[0] != '\0');
    assert_int_equal(engine_get_stats(f->eng).in_flight, 0);
}

/* A burst of calls to a fresh plain-http upstream that answers each after
 * DELAY ms: each call gets its own connection at once. With
 * CURLOPT_PIPEWAIT, curl held all but the first until the first response's
 * headers showed the server speaks HTTP/1.1: the upstream saw one request
 * at a time at first, and the burst took 2 x DELAY. */
static void test_plain_http_burst_is_not_serialized(void **state)
{
    enum { N = 8, DELAY = 400 };
    fixture *f = *state;
    call_log l[N];
    memset(l, 0, sizeof l);
    /* First N https calls (to the same plain server: the TLS handshake
     * fails), so that the pooled handles the burst will reuse were last
     * set up for a scheme that may multiplex: PIPEWAIT is per call. */
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/slow", f->up.port);
    make_request(f, NULL, url);
    for (int i = 0; i < N; i++)
        assert_non_null(engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l[i]));
    for (int i = 0; i < N; i++) {
        run_until(f, &l[i].done, 1, 10000);
        assert_int_equal(l[i].done, 1);
        assert_false(l[i].r.ok);
    }
    assert_int_equal(f->up.requests, 0);
    assert_int_equal(engine_get_stats(f->eng).in_flight, 0);

    memset(l, 0, sizeof l);
    f->up.delay_ms = DELAY;
    make_request(f, "/slow", NULL);
    int64_t t0 = util_now_ms();
    for (int i = 0; i < N; i++)
        assert_non_null(engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l[i]));
    /* wait for every call */
    for (int i = 0; i < N; i++)
        run_until(f, &l[i].done, 1, 10000);
    int64_t slowest = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(l[i].done, 1);
        assert_true(l[i].r.ok);
        if (l[i].done_at_ms - t0 > slowest) slowest = l[i].done_at_ms - t0;
    }
    if (f->up.max_in != N || slowest >= DELAY * 17 / 10)
        print_error("upstream saw at most %d of %d calls at once; slowest call %lld ms "
                    "(upstream answers after %d ms)\n",
                    f->up.max_in, N, (long long)slowest, DELAY);
    assert_int_equal(f->up.max_in, N);
    assert_true(slowest < DELAY * 17 / 10);
}

/* More calls at once than one shard (multi handle) holds: all run at
 * once and succeed, and a second wave reuses the first wave's connections
 * (each shard keeps its own). */
/* After a call the engine keeps the connection's read watch ("parked") for
 * the next call. When the upstream closes the idle connection, the parked
 * watch fires once and goes: the loop does not spin on the closed socket
 * (CPU while idle stays low), and the next call gets a new connection. */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void test_idle_connection_closed_by_upstream(void **state)
{
    fixture *f = *state;
    evhttp_set_timeout(f->up.http, 1); /* the upstream drops idle connections after 1 s */
    call_log l = {0};
    make_request(f, "/ok", NULL);
    assert_non_null(engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l));
    run_until(f, &l.done, 1, 5000);
    assert_true(l.r.ok);
    double cpu0 = cpu_seconds();
    run_for(f, 2500); /* the upstream closes it meanwhile */
    double idle_cpu = cpu_seconds() - cpu0;
    if (idle_cpu >= 0.5) print_error("%.2f s of CPU in 2.5 s idle\n", idle_cpu);
    assert_true(idle_cpu < 0.5);
    second_call_succeeds(f);
    assert_int_equal(f->up.n_ports, 2); /* a new connection for the second call */
}

static void test_many_calls_at_once_reuse_connections(void **state)
{
    enum { N = 300, DELAY = 1500 }; /* > the 1 s SYN retry: the test listener's backlog is 128 */
    fixture *f = *state;
    engine_free(f->eng);
    f->eng = engine_new(f->base, 4096);
    static call_log l[N];
    f->up.delay_ms = DELAY;
    make_request(f, "/slow", NULL);
    for (int wave = 0; wave < 2; wave++) {
        memset(l, 0, sizeof l);
        f->up.max_in = 0;
        for (int i = 0; i < N; i++)
            assert_non_null(engine_call_start(f->eng, &f->req, &f->prov, NULL, &callbacks, &l[i]));
        assert_int_equal(engine_get_stats(f->eng).in_flight, N);
        for (int i = 0; i < N; i++)
            run_until(f, &l[i].done, 1, 10000);
        for (int i = 0; i < N; i++) {
            assert_int_equal(l[i].done, 1);
            assert_true(l[i].r.ok);
        }
        assert_int_equal(f->up.max_in, N);
        assert_int_equal(engine_get_stats(f->eng).in_flight, 0);
    }
    assert_int_equal(f->up.requests, 2 * N);
    if (f->up.n_ports != N)
        print_error("%d connections for 2 waves of %d calls\n", f->up.n_ports, N);
    assert_int_equal(f->up.n_ports, N);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_call_completes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_status_is_a_completed_transfer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_releases_the_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_inside_a_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_byte_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_http_burst_is_not_serialized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_connection_closed_by_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_calls_at_once_reuse_connections, setup, teardown),
    };
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}

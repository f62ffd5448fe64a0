/* router/run: the state table, and every exit giving back what the run
 * holds (call slot, breaker probe, granted retry, coalescing entry). Runs
 * go through the real engine to an OpenAI-dialect upstream served by evhttp
 * on the same event loop; the assertions read the router's own state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/util.h"
#include "providers/engine.h"
#include "router/config.h"
#include "router/router.h"
#include "router/run.h"

/* ------------------------------------------------------------ the upstream */

static struct {
    int calls;
    int status;         /* answer with this status (200: a chat completion) */
    int delay_ms;       /* answer this late */
    int retry_after_ms; /* a retry-after-ms header on errors */
    int fail_first;     /* the first N calls get `status`, later ones 200 */
} up;

typedef struct pending {
    struct evhttp_request *req;
    int status;
    bool stream, dead; /* dead: the caller hung up (the request is gone) */
} pending;

static const char CHUNK1[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
    "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
    "\"assistant\",\"content\":\"hel\"},\"finish_reason\":null}]}\n\n";
static const char CHUNK2[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
    "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
    "\"lo\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

static void send_chunk(struct evhttp_request *req, const char *s)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, s, strlen(s));
    evhttp_send_reply_chunk(req, b);
    evbuffer_free(b);
}

static void send_answer(struct evhttp_request *req, int status)
{
    struct evbuffer *b = evbuffer_new();
    if (status == 200)
        evbuffer_add_printf(b, "{\"id\":\"c1\",\"object\":\"chat.completion\",\"created\":1,"
                               "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":"
                               "{\"role\":\"assistant\",\"content\":\"hello\"},\"finish_reason\":"
                               "\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,"
                               "\"total_tokens\":6}}");
    else
        evbuffer_add_printf(b, "{\"error\":{\"message\":\"no\",\"type\":\"server_error\"}}");
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    if (status != 200 && up.retry_after_ms) {
        char v[24];
        snprintf(v, sizeof v, "%d", up.retry_after_ms);
        evhttp_add_header(h, "retry-after-ms", v);
    }
    evhttp_send_reply(req, status, "X", b);
    evbuffer_free(b);
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
    pending *p = arg;
    if (p->dead) /* libevent left the request to us when its caller hung up */
        evhttp_request_free(p->req);
    else {
        evhttp_connection_set_closecb(evhttp_request_get_connection(p->req), NULL, NULL);
        if (p->stream) {
            send_chunk(p->req, CHUNK2);
            evhttp_send_reply_end(p->req);
        } else
            send_answer(p->req, p->status);
    }
    free(p);
}

static void on_caller_gone(struct evhttp_connection *conn, void *arg)
{
    ((pending *)arg)->dead = true;
}

static struct event_base *base;

static bool wants_stream(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    return evbuffer_search(in, "\"stream\":true", 13, NULL).pos >= 0;
}

/* A stream: the first chunk at once, the rest after up.delay_ms. */
static void on_upstream(struct evhttp_request *req, void *arg)
{
    up.calls++;
    int status = up.fail_first && up.calls > up.fail_first ? 200 : up.status;
    bool stream = status == 200 && wants_stream(req);
    if (stream) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/event-stream");
        evhttp_send_reply_start(req, 200, "OK");
        send_chunk(req, CHUNK1);
    } else if (!up.delay_ms) {
        send_answer(req, status);
        return;
    }
    pending *p = malloc(sizeof *p);
    *p = (pending){req, status, stream, false};
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_caller_gone, p);
    struct timeval tv = {up.delay_ms / 1000, (up.delay_ms % 1000) * 1000};
    event_base_once(base, -1, EV_TIMEOUT, on_later, p, &tv);
}

/* ------------------------------------------------------------ the sink */

static struct {
    int heads, chunks, dones, status;
    run_outcome out;
    buf body;
} sk;

static void s_head(void *ctx, int status, const char *ct, buf *lines, bool stream)
{
    sk.heads++;
    sk.status = status;
    buf_reset(lines);
}
static void s_chunk(void *ctx, const char *d, size_t n)
{
    sk.chunks++;
    buf_append(&sk.body, d, n);
}
static void s_done(void *ctx, const run_outcome *o)
{
    sk.dones++;
    sk.out = *o;
}
static const run_sink sink = {s_head, s_chunk, s_done, NULL, NULL};

/* ------------------------------------------------------------ fixture */

static struct evhttp *upstream_http;
static int upstream_port;
static engine *eng;
static bridle_config *cfg;
static router *rt;

static void write_config(const char *resilience)
{
    char path[] = "/tmp/bridle-test-run-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char text[2048];
    int n = snprintf(text, sizeof text,
                     "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": "
                     "\"http://127.0.0.1:%d/v1\", \"api_key\": \"k\", \"max_concurrency\": 8}},"
                     " \"models\": {\"gpt-4o-mini\": {\"provider\": \"p\"}},"
                     " \"resilience\": %s}",
                     upstream_port, resilience);
    assert_int_equal(write(fd, text, (size_t)n), n);
    close(fd);
    char err[512];
    cfg = config_load(path, err, sizeof err);
    unlink(path);
    if (!cfg) fail_msg("%s", err);
}

static int setup_with(void **state, const char *resilience)
{
    memset(&up, 0, sizeof up);
    up.status = 200;
    memset(&sk, 0, sizeof sk);
    base = event_base_new();
    upstream_http = evhttp_new(base);
    evhttp_set_gencb(upstream_http, on_upstream, NULL);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(upstream_http, "127.0.0.1", 0);
    assert_non_null(bs);
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sa, &len);
    upstream_port = ntohs(sa.sin_port);
    write_config(resilience);
    eng = engine_new(base, 64);
    rt = router_new(base, cfg, eng, NULL, NULL);
    assert_non_null(rt);
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, "{\"breaker_failures\": 1, \"breaker_open_ms\": 200, "
                             "\"breaker_open_max_ms\": 200, \"coalesce\": true}");
}

static int teardown(void **state)
{
    router_free(rt);
    engine_free(eng);
    evhttp_free(upstream_http);
    config_free(cfg);
    event_base_free(base);
    buf_free(&sk.body);
    return 0;
}

/* Runs the loop for about ms milliseconds. */
static void spin(int ms)
{
    int64_t end = util_now_ms() + ms;
    while (util_now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

/* Runs the loop until the sink has seen n dones, then a little more (the
 * runs are recycled on the next pass). */
static void spin_until_done(int n)
{
    int64_t end = util_now_ms() + 5000;
    while (sk.dones < n && util_now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(sk.dones, n);
    spin(20);
}

/* Runs the loop until r is in state s (the first chunk has come). */
static void spin_until_state(run *r, run_state s)
{
    int64_t end = util_now_ms() + 2000;
    while (run_get_state(r) != s && util_now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(run_get_state(r), s);
}

static const char *REQ = "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\","
                         "\"content\":\"hi\"}]}";
static const char *REQ_T0 = "{\"model\":\"gpt-4o-mini\",\"temperature\":0,\"messages\":[{\"role\":"
                            "\"user\",\"content\":\"same\"}]}";

static run *start(const char *body)
{
    run_input in = {.body = body,
                    .body_len = strlen(body),
                    .what = "POST /v1/chat/completions",
                    .request_id = "req_0123456789abcdef01234567"};
    return run_start(rt, &in, &sink, NULL);
}

static const breaker *model_breaker(void)
{
    return router_breaker(rt, &config_model(cfg, 0)->target);
}

/* Nothing held: no call slot, no run, no coalescing entry, no breaker probe. */
static void assert_nothing_held(void)
{
    assert_int_equal(router_inflight(rt, 0), 0);
    assert_int_equal(router_get_stats(rt).runs, 0);
    assert_int_equal(router_coalesce_count(rt), 0);
    breaker_snapshot sn;
    breaker_get_snapshot(model_breaker(), util_now_ms(), &sn);
    assert_int_equal(sn.probes_in_flight, 0);
}

/* ------------------------------------------------------------ tests */

/* run_estimate_pusd plans without starting anything: the bound of the
 * whole plan (gpt-4o-mini: 150,000 pico-dollars an input token, each body
 * byte a token; 600,000 an output token), no sink, no call, no run held. */
static void test_estimate(void **state)
{
    static const char capped[] = "{\"model\":\"gpt-4o-mini\",\"max_tokens\":100,\"messages\":"
                                 "[{\"role\":\"user\",\"content\":\"hi\"}]}";
    run_input in = {
        .body = capped, .body_len = strlen(capped), .what = "POST /v1/chat/completions"};
    int64_t pusd = -1;
    char err[300] = "";
    assert_int_equal(run_estimate_pusd(rt, &in, &pusd, err, sizeof err), 0);
    assert_int_equal(pusd, (int64_t)strlen(capped) * 150000 + 100 * 600000);
    /* without max_tokens: the output bound a budgeted request is sent with */
    in.body = REQ;
    in.body_len = strlen(REQ);
    assert_int_equal(run_estimate_pusd(rt, &in, &pusd, err, sizeof err), 0);
    assert_int_equal(pusd, (int64_t)strlen(REQ) * 150000 + 4096 * INT64_C(600000));
    /* what the run would refuse before any call: -1, and why */
    static const char unknown[] = "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\","
                                  "\"content\":\"hi\"}]}";
    in.body = unknown;
    in.body_len = strlen(unknown);
    assert_int_equal(run_estimate_pusd(rt, &in, &pusd, err, sizeof err), -1);
    assert_int_equal(pusd, 0);
    assert_non_null(strstr(err, "The model 'nope' does not exist"));
    in.body = "{";
    in.body_len = 1;
    assert_int_equal(run_estimate_pusd(rt, &in, &pusd, err, sizeof err), -1);
    assert_true(err[0] != '\0');
    spin(20);
    assert_int_equal(sk.dones, 0);
    assert_int_equal(up.calls, 0);
    assert_nothing_held();
}

static void test_transition_table(void **state)
{
    static const run_state all[] = {RUN_NEW,      RUN_PLANNING, RUN_ADMITTING,
                                    RUN_CALLING,  RUN_WAITING,  RUN_RELAYING,
                                    RUN_SETTLING, RUN_DONE,     RUN_FAILED};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        bool over = all[i] == RUN_DONE || all[i] == RUN_FAILED;
        for (size_t j = 0; j < sizeof all / sizeof *all; j++) {
            bool ok = run_transition_ok(all[i], all[j]);
            if (over) assert_false(ok); /* nothing leaves DONE or FAILED */
            if (!over && (all[j] == RUN_DONE || all[j] == RUN_FAILED)) assert_true(ok);
            if (all[j] == RUN_NEW) assert_false(ok); /* nothing goes back to NEW */
        }
    }
    assert_true(run_transition_ok(RUN_PLANNING, RUN_ADMITTING));
    assert_true(run_transition_ok(RUN_ADMITTING, RUN_CALLING));
    assert_true(run_transition_ok(RUN_CALLING, RUN_WAITING));
    assert_true(run_transition_ok(RUN_WAITING, RUN_CALLING));
    assert_true(run_transition_ok(RUN_CALLING, RUN_RELAYING));
    assert_true(run_transition_ok(RUN_RELAYING, RUN_SETTLING));
    assert_false(run_transition_ok(RUN_NEW, RUN_CALLING));      /* no call without a plan */
    assert_false(run_transition_ok(RUN_PLANNING, RUN_CALLING)); /* nor without admission */
    assert_false(run_transition_ok(RUN_RELAYING, RUN_CALLING)); /* no retry after a byte */
    assert_false(run_transition_ok(RUN_SETTLING, RUN_CALLING));
    assert_string_equal(run_state_name(RUN_WAITING), "WAITING");
}

static void test_answered(void **state)
{
    run *r = start(REQ);
    assert_non_null(r);
    assert_int_equal(run_get_state(r), RUN_CALLING);
    assert_int_equal(router_inflight(rt, 0), 1);
    spin_until_done(1);
    assert_int_equal(sk.out.final, RUN_DONE);
    assert_int_equal(sk.status, 200);
    assert_int_equal(sk.heads, 1);
    assert_int_equal(sk.chunks, 1);
    assert_non_null(strstr(sk.body.data, "hello"));
    assert_int_equal(up.calls, 1);
    assert_int_equal(router_get_stats(rt).upstream_attempts, 1);
    assert_nothing_held();
}

static void test_bad_body_answers_at_once(void **state)
{
    start("{\"model\":");
    assert_int_equal(sk.dones, 1); /* inside run_start */
    assert_int_equal(sk.out.final, RUN_FAILED);
    assert_int_equal(sk.status, 400);
    spin(20);
    assert_int_equal(up.calls, 0);
    assert_nothing_held();
}

static void test_cancel_during_call(void **state)
{
    up.delay_ms = 300;
    run *r = start(REQ);
    spin(50);
    assert_int_equal(router_inflight(rt, 0), 1);
    run_cancel(r);
    assert_int_equal(sk.dones, 1); /* done comes inside run_cancel */
    assert_int_equal(sk.out.status, 499);
    assert_int_equal(sk.heads, 0);
    assert_int_equal(router_inflight(rt, 0), 0); /* the slot, at once */
    spin(400);
    assert_int_equal(sk.dones, 1); /* nothing fires after done */
    breaker_snapshot sn;
    breaker_get_snapshot(model_breaker(), util_now_ms(), &sn);
    assert_int_equal(sn.window_calls, 0); /* abandoned: neither success nor failure */
    assert_nothing_held();
}

static void test_cancel_while_waiting_gives_the_retry_back(void **state)
{
    /* the upstream says 503 with retry-after-ms 300: the run waits, holding
     * a retry its provider's budget granted */
    teardown(state);
    setup_with(state, "{\"breaker\": false}");
    up.status = 503;
    up.retry_after_ms = 300;
    run *r = start(REQ);
    spin_until_state(r, RUN_WAITING);
    retry_budget_snapshot rs;
    retry_budget_get_snapshot(router_budget(rt, config_provider(cfg, 0)), util_now_ms(), &rs);
    assert_int_equal(rs.retries, 1);
    run_cancel(r);
    retry_budget_get_snapshot(router_budget(rt, config_provider(cfg, 0)), util_now_ms(), &rs);
    assert_int_equal(rs.retries, 0); /* given back */
    spin(500);
    assert_int_equal(up.calls, 1); /* the timer was disarmed */
    assert_int_equal(sk.dones, 1);
    assert_int_equal(router_inflight(rt, 0), 0);
    assert_int_equal(router_get_stats(rt).runs, 0);
}

static void test_retry_after_a_503(void **state)
{
    teardown(state);
    setup_with(state, "{\"breaker_failures\": 3}");
    up.status = 503;
    up.retry_after_ms = 50;
    up.fail_first = 1;
    start(REQ);
    spin_until_done(1);
    assert_int_equal(sk.status, 200);
    assert_int_equal(up.calls, 2);
    assert_int_equal(router_get_stats(rt).upstream_attempts, 2);
    assert_nothing_held();
}

static void test_cancelled_probe_frees_the_breaker(void **state)
{
    /* one failure opens the breaker (breaker_failures 1) for 200 ms; after
     * that the next run is its probe; cancelling it frees the probe slot */
    teardown(state);
    setup_with(state, "{\"retries\": false, \"breaker_failures\": 1, \"breaker_open_ms\": 200, "
                      "\"breaker_open_max_ms\": 200}");
    up.status = 500;
    start(REQ);
    spin_until_done(1);
    breaker_snapshot sn;
    breaker_get_snapshot(model_breaker(), util_now_ms(), &sn);
    assert_int_equal(sn.state, BREAKER_OPEN);
    spin(300); /* past the open period (200 ms ± 20 %) */
    up.status = 200;
    up.delay_ms = 300;
    run *r = start(REQ);
    breaker_get_snapshot(model_breaker(), util_now_ms(), &sn);
    assert_int_equal(sn.probes_in_flight, 1);
    spin(50);
    run_cancel(r);
    spin(20);
    breaker_get_snapshot(model_breaker(), util_now_ms(), &sn);
    assert_int_equal(sn.probes_in_flight, 0);
    assert_int_equal(sn.state, BREAKER_HALF_OPEN); /* abandoned: decides nothing */
    spin(400);
    assert_nothing_held();
}

static const char *REQ_STREAM =
    "{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":"
    "\"user\",\"content\":\"hi\"}]}";

static void test_streamed(void **state)
{
    up.delay_ms = 100;
    run *r = start(REQ_STREAM);
    spin_until_state(r, RUN_RELAYING);
    spin_until_done(1);
    assert_int_equal(sk.out.final, RUN_DONE);
    assert_int_equal(sk.heads, 1);
    assert_true(sk.chunks >= 2); /* relayed as it came */
    assert_non_null(strstr(sk.body.data, "\"hel\""));
    assert_non_null(strstr(sk.body.data, "data: [DONE]"));
    assert_nothing_held();
}

static void test_cancel_while_relaying(void **state)
{
    up.delay_ms = 300;
    run *r = start(REQ_STREAM);
    spin_until_state(r, RUN_RELAYING);
    assert_int_equal(router_inflight(rt, 0), 1);
    run_cancel(r);
    assert_int_equal(sk.dones, 1);
    assert_int_equal(sk.out.status, 499);
    assert_int_equal(router_inflight(rt, 0), 0);
    spin(400);
    assert_int_equal(sk.dones, 1);
    breaker_snapshot sn;
    breaker_get_snapshot(model_breaker(), util_now_ms(), &sn);
    assert_int_equal(sn.window_calls, 0); /* abandoned */
    assert_nothing_held();
}

static void test_coalesced_followers(void **state)
{
    up.delay_ms = 100;
    start(REQ_T0);
    start(REQ_T0);
    start(REQ_T0);
    assert_int_equal(router_coalesce_count(rt), 1);
    spin_until_done(3);
    assert_int_equal(up.calls, 1);
    assert_nothing_held();
}

static void test_leader_cancelled_followers_go_on(void **state)
{
    up.delay_ms = 200;
    run *leader = start(REQ_T0);
    start(REQ_T0);
    spin(50);
    run_cancel(leader);
    assert_int_equal(router_coalesce_count(rt), 0); /* the entry goes with its leader */
    spin_until_done(2);
    assert_int_equal(sk.out.final, RUN_DONE); /* the follower ran on its own */
    assert_int_equal(up.calls, 2);
    assert_nothing_held();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transition_table),
        cmocka_unit_test_setup_teardown(test_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_body_answers_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_during_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_while_waiting_gives_the_retry_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_a_503, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_probe_frees_the_breaker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_while_relaying, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coalesced_followers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leader_cancelled_followers_go_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_estimate, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

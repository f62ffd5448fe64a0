/* Unit tests for server/http.c: the error JSON it replies with
 * (provider_openai_error_json), response header lines
 * (no line break may reach the wire from a name or value), request ids,
 * reply counters, request framing (server/h1.c: lengths, chunks, limits,
 * keep-alive); then the listener with a real config on a loopback port:
 * requests that cannot be read answered with OpenAI error JSON (400, 413),
 * the 431 for too many headers, /healthz, and a second listener on the same
 * address refused ("address already in use"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/util.h"
#include "router/config.h"
#include "server/app.h"
#include "server/http.h"

/* ------------------------------------------------------------ error JSON */

static json_object *parse(const buf *b)
{
    json_object *o = json_tokener_parse(b->data);
    if (!o) print_error("not JSON: %.*s\n", (int)b->len, b->data);
    assert_non_null(o);
    return o;
}

static const char *field(json_object *o, const char *k1, const char *k2)
{
    json_object *a = NULL, *b = NULL;
    assert_true(json_object_object_get_ex(o, k1, &a));
    assert_true(json_object_object_get_ex(a, k2, &b));
    return b ? json_object_get_string(b) : NULL; /* NULL for JSON null */
}

static void test_error_json_shape(void **state)
{
    buf b = BUF_INIT;
    provider_openai_error_json(&b, "invalid_request_error", "bad_model", "model", "No such model");
    assert_string_equal(b.data, "{\"error\":{\"message\":\"No such model\",\"type\":"
                                "\"invalid_request_error\",\"param\":\"model\",\"code\":"
                                "\"bad_model\"}}");
    buf_reset(&b);
    /* no code, no param: JSON null (not "" and not missing) */
    provider_openai_error_json(&b, "server_error", NULL, "", "x");
    assert_string_equal(
        b.data,
        "{\"error\":{\"message\":\"x\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
    buf_free(&b);
}

static void test_error_json_escapes(void **state)
{
    buf b = BUF_INIT;
    const char *msg = "a \"quoted\" \\ line\nbreak\ttab \x01 caf\xc3\xa9";
    provider_openai_error_json(&b, "t", "c", "p\"q", msg);
    json_object *o = parse(&b);
    assert_string_equal(field(o, "error", "message"), msg);
    assert_string_equal(field(o, "error", "param"), "p\"q");
    assert_string_equal(field(o, "error", "type"), "t");
    assert_null(strchr(b.data, '\n')); /* one line */
    json_object_put(o);
    buf_free(&b);
}

/* ------------------------------------------------------------ header lines */

static void test_head_add_lines(void **state)
{
    buf h = BUF_INIT;
    buf_add_header(&h, "x-request-id", "req_1");
    buf_add_header(&h, "x-bridle-route", "cheapest; escalated: the cheaper answer failed");
    buf_add_header(&h, "x-empty", "");
    assert_int_equal(h.len, strlen(h.data));
    assert_string_equal(h.data, "x-request-id: req_1\r\n"
                                "x-bridle-route: cheapest; escalated: the cheaper answer failed\r\n"
                                "x-empty: \r\n");
    buf_free(&h);
}

/* Any CR or LF in a value would end the header line on the wire: a value
 * could then add headers of its own, or end the head and start the body
 * (response splitting). Folding (CRLF + space) is obsolete and must not be
 * generated either (RFC 9112 5.2). Such lines are dropped whole. */
static void test_head_add_refuses_line_breaks_in_values(void **state)
{
    static const char *const bad[] = {
        "a\rb",         "a\nb",       "a\r\nb",   "a\r\nx-injected: 1", "a\r b",
        "a\n b",        "a\r\n b",    "a\r\n\tb", "a\r\n\r\n <html>",   "\r\n",
        "trailing\r\n", "trailing\n",
    };
    buf h = BUF_INIT;
    buf_add_header(&h, "x-before", "1");
    size_t len = h.len;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_add_header(&h, "x-test", bad[i]);
        if (h.len != len) print_error("value %zu was kept: %s\n", i, h.data + len);
        assert_int_equal(h.len, len);
    }
    buf_add_header(&h, "x-after", "2");
    assert_string_equal(h.data, "x-before: 1\r\nx-after: 2\r\n");
    buf_free(&h);
}

static void test_head_add_refuses_bad_names(void **state)
{
    static const char *const bad[] = {"x\r\ny", "x\ny", "x\ry", "", "x:y", "x y", "x\ty"};
    buf h = BUF_INIT;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_add_header(&h, bad[i], "v");
        if (h.len) print_error("name %zu was kept: %s\n", i, h.data);
        assert_int_equal(h.len, 0);
    }
    buf_free(&h);
}

/* ------------------------------------------------------------ framing */

static const h1_options frame_opts = {
    .max_body_bytes = 64, .max_header_bytes = 1024, .read_timeout_ms = 1000, .max_connections = 10};

static int frame(const char *text, h1_frame *f, char *copy)
{
    size_t n = strlen(text);
    memcpy(copy, text, n + 1);
    return h1_frame_request(copy, n, &frame_opts, NULL, f);
}

static void test_frame_lengths(void **state)
{
    char b[512];
    h1_frame f;
    const char *req = "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET";
    assert_int_equal(frame(req, &f, b), H1_FRAME_DONE);
    assert_int_equal(f.consumed, strlen(req) - 3); /* the pipelined GET is not taken */
    assert_memory_equal(b + f.body_off, "hello", 5);
    assert_int_equal(f.body_len, 5);
    assert_true(f.keep_alive);
    /* incomplete head, incomplete body */
    assert_int_equal(frame("POST /x HTTP/1.1\r\nContent-Le", &f, b), H1_FRAME_MORE);
    assert_int_equal(frame("POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel", &f, b),
                     H1_FRAME_MORE);
    /* no body at all */
    assert_int_equal(frame("GET / HTTP/1.1\r\n\r\n", &f, b), H1_FRAME_DONE);
    assert_int_equal(f.body_len, 0);
    /* over the body limit: 413 before the body arrives */
    assert_int_equal(frame("POST /x HTTP/1.1\r\nContent-Length: 65\r\n\r\n", &f, b), 413);
    /* malformed or ambiguous lengths: 400 */
    assert_int_equal(frame("POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &f, b), 400);
    assert_int_equal(frame("POST /x HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", &f, b), 400);
    assert_int_equal(
        frame("POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", &f, b), 400);
    assert_int_equal(frame("POST /x HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: "
                           "chunked\r\n\r\n0\r\n\r\n",
                           &f, b),
                     400);
    assert_int_equal(frame("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &f, b), 400);
    assert_int_equal(frame("NOT HTTP\r\n\r\n", &f, b), 400);
}

static void test_frame_chunked(void **state)
{
    char b[512];
    h1_frame f;
    const char *req = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: t\r\n\r\nNEXT";
    assert_int_equal(frame(req, &f, b), H1_FRAME_DONE);
    assert_true(f.chunked);
    assert_int_equal(f.body_len, 11);
    assert_memory_equal(b + f.body_off, "hello world", 11);
    assert_int_equal(f.consumed, strlen(req) - 4);
    /* cut anywhere: more is needed */
    for (size_t cut = strlen("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
         cut < strlen(req) - 4; cut++) {
        char part[512];
        memcpy(part, req, cut);
        part[cut] = '\0';
        assert_int_equal(frame(part, &f, b), H1_FRAME_MORE);
    }
    /* decoded length over the limit; a bad size line; a chunk without its CRLF */
    assert_int_equal(frame("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n", &f, b),
                     413);
    assert_int_equal(frame("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", &f, b),
                     400);
    assert_int_equal(
        frame("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", &f, b),
        400);
}

/* The same request a byte at a time, the state kept between calls: the
 * same end as at once, and the body is scanned once (not checked here: the
 * fuzzer checks the equivalence on arbitrary bytes). */
static void test_frame_incremental(void **state)
{
    static const char *const reqs[] = {
        "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
    };
    static const int want[] = {H1_FRAME_DONE, H1_FRAME_DONE, 400};
    for (size_t r = 0; r < sizeof reqs / sizeof reqs[0]; r++) {
        size_t n = strlen(reqs[r]);
        char b[512];
        h1_frame_state st = {0};
        h1_frame f;
        int rc = H1_FRAME_MORE;
        size_t have = 0;
        while (rc == H1_FRAME_MORE && have < n) {
            memcpy(b, reqs[r], ++have);
            rc = h1_frame_request(b, have, &frame_opts, &st, &f);
        }
        assert_int_equal(rc, want[r]);
        if (rc == H1_FRAME_DONE) assert_int_equal(f.consumed, n);
    }
}

static void test_frame_connection(void **state)
{
    char b[2048];
    h1_frame f;
    assert_int_equal(frame("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &f, b), H1_FRAME_DONE);
    assert_false(f.keep_alive);
    assert_int_equal(frame("GET / HTTP/1.0\r\n\r\n", &f, b), H1_FRAME_DONE);
    assert_false(f.keep_alive);
    assert_int_equal(f.minor_version, 0);
    assert_int_equal(frame("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &f, b),
                     H1_FRAME_DONE);
    assert_true(f.keep_alive);
    /* Expect: 100-continue is reported while the body is missing */
    assert_int_equal(
        frame("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", &f, b),
        H1_FRAME_MORE);
    assert_true(f.expect_100);
    assert_int_equal(frame("POST / HTTP/1.1\r\nExpect: something\r\n\r\n", &f, b), 400);
    /* more header lines than the parser holds: 431 */
    buf many = BUF_INIT;
    buf_append_str(&many, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 300; i++)
        buf_printf(&many, "h%d: v\r\n", i);
    buf_append_str(&many, "\r\n");
    char *big = malloc(many.len + 1);
    memcpy(big, many.data, many.len + 1);
    assert_int_equal(h1_frame_request(big, many.len, &frame_opts, NULL, &f), 431);
    free(big);
    buf_free(&many);
}

/* ------------------------------------------------------------ small ones */

static void test_request_id(void **state)
{
    char prev[32] = "", id[32];
    for (int i = 0; i < 1000; i++) {
        http_new_request_id(id);
        assert_int_equal(strlen(id), 28);
        assert_memory_equal(id, "req_", 4);
        for (int j = 4; j < 28; j++)
            assert_non_null(strchr("0123456789abcdef", id[j]));
        assert_string_not_equal(id, prev);
        memcpy(prev, id, sizeof id);
    }
}

static void test_count_reply(void **state)
{
    app a;
    memset(&a, 0, sizeof a);
    int statuses[] = {200, 201, 400, 401, 429, 499, 500, 502, 504};
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        http_count_reply(&a, statuses[i]);
    assert_int_equal(a.stats.replies_2xx, 2);
    assert_int_equal(a.stats.replies_4xx, 4);
    assert_int_equal(a.stats.replies_5xx, 3);
}

/* ------------------------------------------------------------ the listener */

#define MAX_BODY 2048

typedef struct server {
    app a;
    int port;
    char path[64];
} server;

static int server_setup(void **state)
{
    server *s = calloc(1, sizeof *s);
    snprintf(s->path, sizeof s->path, "/tmp/bridle-test-http-XXXXXX");
    int fd = mkstemp(s->path);
    assert_true(fd >= 0);
    char text[512];
    int n =
        snprintf(text, sizeof text,
                 "{\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": "
                 "\"http://127.0.0.1:1/v1\"}}, \"models\": {\"gpt-4o\": {\"provider\": \"p\"}}, "
                 "\"limits\": {\"max_body_bytes\": %d, \"max_headers\": 8}}",
                 MAX_BODY);
    assert_int_equal(write(fd, text, (size_t)n), n);
    close(fd);
    char err[512];
    s->a.cfg = config_load(s->path, err, sizeof err);
    if (!s->a.cfg) print_error("%s\n", err);
    assert_non_null(s->a.cfg);
    s->a.base = event_base_new();
    int lfd = -1;
    assert_int_equal(http_listen("127.0.0.1", 0, 1, &lfd, err, sizeof err), 0);
    s->a.worker = -1;
    assert_int_equal(http_start(&s->a, lfd, err, sizeof err), 0);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    assert_int_equal(getsockname(h1_server_fd(s->a.h1), (struct sockaddr *)&sin, &sl), 0);
    s->port = ntohs(sin.sin_port);
    *state = s;
    return 0;
}

static int server_teardown(void **state)
{
    server *s = *state;
    http_free(&s->a);
    event_base_free(s->a.base);
    config_free(s->a.cfg);
    unlink(s->path);
    free(s);
    return 0;
}

typedef struct client {
    int fd;
    buf in;
    bool closed, late;
} client;

static void on_client_read(evutil_socket_t fd, short what, void *arg)
{
    client *c = arg;
    char tmp[4096];
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n > 0)
        buf_append(&c->in, tmp, (size_t)n);
    else if (n == 0 || (errno != EAGAIN && errno != EINTR))
        c->closed = true;
}

static void on_client_late(evutil_socket_t fd, short what, void *arg)
{
    ((client *)arg)->late = true;
}

/* Sends raw bytes, runs the loop until the server closed the connection,
 * `until` appears in the answer, or 3 s passed; returns the answer
 * (caller frees). */
static char *exchange(server *s, const char *raw, size_t len, const char *until)
{
    client c = {.in = BUF_INIT};
    c.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)s->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c.fd, (struct sockaddr *)&sin, sizeof sin), 0);
    size_t off = 0;
    while (off < len) { /* small: fits in the socket buffer */
        ssize_t n = write(c.fd, raw + off, len - off);
        assert_true(n > 0);
        off += (size_t)n;
    }
    evutil_make_socket_nonblocking(c.fd);
    struct event *rd = event_new(s->a.base, c.fd, EV_READ | EV_PERSIST, on_client_read, &c);
    struct event *t = evtimer_new(s->a.base, on_client_late, &c);
    struct timeval tv = {3, 0};
    event_add(rd, NULL);
    evtimer_add(t, &tv);
    while (!c.closed && !c.late && !(until && c.in.data && strstr(c.in.data, until)))
        event_base_loop(s->a.base, EVLOOP_ONCE);
    event_free(rd);
    event_free(t);
    close(c.fd);
    /* let the server see the close */
    event_base_loop(s->a.base, EVLOOP_NONBLOCK);
    buf_append(&c.in, "", 1);
    return buf_steal(&c.in);
}

static const char *body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    assert_non_null(p);
    return p + 4;
}

static void expect_json_error(const char *resp, const char *status_line, const char *code,
                              const char *in_message)
{
    if (strncmp(resp, status_line, strlen(status_line)) != 0)
        print_error("want %s, got:\n%s\n", status_line, resp);
    assert_memory_equal(resp, status_line, strlen(status_line));
    assert_non_null(strcasestr(resp, "\r\nContent-Type: application/json\r\n"));
    assert_null(strcasestr(resp, "<html"));
    json_object *o = json_tokener_parse(body_of(resp));
    if (!o) print_error("body is not JSON:\n%s\n", resp);
    assert_non_null(o);
    assert_string_equal(field(o, "error", "type"), "invalid_request_error");
    assert_string_equal(field(o, "error", "code"), code);
    const char *m = field(o, "error", "message");
    if (!strstr(m, in_message)) print_error("message lacks \"%s\": %s\n", in_message, m);
    assert_non_null(strstr(m, in_message));
    json_object_put(o);
}

static void test_malformed_request_gets_json_400(void **state)
{
    server *s = *state;
    const char raw[] = "THIS IS NOT HTTP\r\n\r\n";
    char *r = exchange(s, raw, sizeof raw - 1, NULL);
    expect_json_error(r, "HTTP/1.1 400 ", "bad_request", "limits.max_header_bytes");
    free(r);
}

static void test_oversized_body_gets_json_413(void **state)
{
    server *s = *state;
    char raw[256];
    int n = snprintf(raw, sizeof raw,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     "application/json\r\nContent-Length: %d\r\n\r\n{",
                     MAX_BODY * 4);
    char *r = exchange(s, raw, (size_t)n, NULL);
    char want[64];
    snprintf(want, sizeof want, "at most %d bytes", MAX_BODY);
    expect_json_error(r, "HTTP/1.1 413 ", "request_too_large", want);
    free(r);
}

static void test_too_many_headers_get_431(void **state)
{
    server *s = *state;
    buf raw = BUF_INIT;
    buf_append_str(&raw, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 12; i++)
        buf_printf(&raw, "X-H%d: %d\r\n", i, i);
    buf_append_str(&raw, "Connection: close\r\n\r\n");
    char *r = exchange(s, raw.data, raw.len, NULL);
    expect_json_error(r, "HTTP/1.1 431 ", "request_header_fields_too_large", "limits.max_headers");
    free(r);
    buf_free(&raw);
}

static void test_healthz(void **state)
{
    server *s = *state;
    const char raw[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *r = exchange(s, raw, sizeof raw - 1, NULL);
    assert_memory_equal(r, "HTTP/1.1 200 ", 13);
    assert_string_equal(body_of(r), "{\"status\":\"ok\"}");
    free(r);
    assert_int_equal(s->a.stats.replies_2xx, 1);
}

/* A second listener on the address of the first is refused, with the
 * address in the reason, and the first one keeps serving. */
static void test_address_in_use_is_refused(void **state)
{
    server *s = *state;
    app b;
    memset(&b, 0, sizeof b);
    b.cfg = s->a.cfg;
    b.base = s->a.base;
    char err[512] = "", want[64];
    int fds[2] = {-1, -1};
    snprintf(want, sizeof want, "127.0.0.1:%d", s->port);
    for (int n = 1; n <= 2; n++) { /* one worker, or a group of two: refused alike */
        assert_int_equal(http_listen("127.0.0.1", s->port, n, fds, err, sizeof err), -1);
        if (!strstr(err, "address already in use") || !strstr(err, want))
            print_error("reason: %s\n", err);
        assert_non_null(strstr(err, "address already in use"));
        assert_non_null(strstr(err, want));
    }
    assert_null(b.h1);
    http_free(&b);
    const char raw[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *r = exchange(s, raw, sizeof raw - 1, NULL);
    assert_memory_equal(r, "HTTP/1.1 200 ", 13);
    free(r);
}

static void test_listen_address_must_be_numeric(void **state)
{
    server *s = *state;
    app b;
    memset(&b, 0, sizeof b);
    b.cfg = s->a.cfg;
    b.base = s->a.base;
    char err[512] = "";
    int fd = -1;
    assert_int_equal(http_listen("localhost", 1, 1, &fd, err, sizeof err), -1);
    assert_non_null(strstr(err, "localhost"));
    assert_null(b.h1);
}

static int bound_port(int fd)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    return ntohs(sin.sin_port);
}

/* Workers: n sockets of one SO_REUSEPORT group on one port; nobody else
 * joins it afterwards, neither a single gateway nor another group. */
static void test_worker_group_is_closed(void **state)
{
    (void)state;
    char err[512] = "";
    int fds[3] = {-1, -1, -1}, other[2] = {-1, -1};
    assert_int_equal(http_listen("127.0.0.1", 0, 3, fds, err, sizeof err), 0);
    int port = bound_port(fds[0]);
    assert_int_equal(bound_port(fds[1]), port);
    assert_int_equal(bound_port(fds[2]), port);
    assert_int_equal(http_listen("127.0.0.1", port, 1, other, err, sizeof err), -1);
    assert_non_null(strstr(err, "address already in use"));
    assert_int_equal(http_listen("127.0.0.1", port, 2, other, err, sizeof err), -1);
    assert_non_null(strstr(err, "address already in use"));
    for (int i = 0; i < 3; i++)
        close(fds[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_json_shape),
        cmocka_unit_test(test_error_json_escapes),
        cmocka_unit_test(test_head_add_lines),
        cmocka_unit_test(test_head_add_refuses_line_breaks_in_values),
        cmocka_unit_test(test_head_add_refuses_bad_names),
        cmocka_unit_test(test_frame_lengths),
        cmocka_unit_test(test_frame_chunked),
        cmocka_unit_test(test_frame_incremental),
        cmocka_unit_test(test_frame_connection),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_count_reply),
        cmocka_unit_test_setup_teardown(test_malformed_request_gets_json_400, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_oversized_body_gets_json_413, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_too_many_headers_get_431, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_healthz, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_address_in_use_is_refused, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_listen_address_must_be_numeric, server_setup,
                                        server_teardown),
        cmocka_unit_test(test_worker_group_is_closed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

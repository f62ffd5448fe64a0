/* db/pgqueue: what it takes while its connection is being made. Against a
 * socket the test owns, not a PostgreSQL (the queries themselves are tested
 * against PostgreSQL by the integration suite). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "db/pgqueue.h"

typedef struct {
    int calls;
    const char *error;
} outcome;

static void on_result(void *ctx, PGresult *res, const char *error)
{
    outcome *o = ctx;
    o->calls++;
    o->error = error;
    assert_null(res);
}

/* A listening socket on 127.0.0.1 that never answers; its port in *port. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void run_loop_for(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* Sent before the first connection is made, a query waits for it; when that
 * attempt fails, the query fails with it, and later ones are refused at once
 * (a gateway answers 503 then rather than holding the request). */
static void test_query_waits_for_the_first_connection(void **state)
{
    int port;
    int lfd = silent_listener(&port);
    char url[128];
    snprintf(url, sizeof url, "postgresql://nobody@127.0.0.1:%d/none?sslmode=disable", port);
    struct event_base *base = event_base_new();
    pgqueue *q = pgqueue_new(base, url, 5000, 8);
    assert_non_null(q);
    assert_false(pgqueue_up(q));

    outcome first = {0};
    assert_int_equal(pgqueue_send(q, "SELECT 1", NULL, 0, -1, on_result, &first), 0);
    run_loop_for(base, 100);
    assert_int_equal(first.calls, 0); /* still waiting: nothing answered yet */

    int cfd = accept(lfd, NULL, NULL); /* the server hangs up: the attempt fails */
    assert_true(cfd >= 0);
    close(cfd);
    for (int i = 0; i < 50 && first.calls == 0; i++)
        run_loop_for(base, 20);
    assert_int_equal(first.calls, 1);
    assert_non_null(first.error);

    outcome later = {0};
    assert_int_equal(pgqueue_send(q, "SELECT 1", NULL, 0, -1, on_result, &later), -1);
    assert_int_equal(later.calls, 0);

    pgqueue_free(q);
    event_base_free(base);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_waits_for_the_first_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
